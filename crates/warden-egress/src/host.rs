//! The host a client asked for, as the proxy will judge it: a normalised DNS name or an IP
//! literal. Owns parsing and normalising request hosts (case, one trailing dot, IPv6 brackets,
//! IPv4-mapped IPv6), and refuses names a resolver could read as an address (`127.1`, `0x7f.1`).

use std::fmt;
use std::net::{IpAddr, Ipv6Addr};

/// A request's target host, ready for policy and resolution.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum TargetHost {
    /// A DNS name: ASCII, lowercase, without a trailing dot.
    Name(String),
    /// An IP literal; IPv4-mapped IPv6 (`::ffff:a.b.c.d`) is stored as the IPv4 address.
    Ip(IpAddr),
}

/// Why a request's host was not accepted.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("`{input}` is not a host name or IP address: {reason}")]
pub struct HostError {
    input: String,
    reason: &'static str,
}

impl TargetHost {
    /// Parses the host part of a request target (`example.com`, `EXAMPLE.com.`, `10.0.0.1`,
    /// `[::1]`).
    pub fn parse(raw: &str) -> Result<Self, HostError> {
        let err = |reason| HostError {
            input: raw.to_string(),
            reason,
        };
        if let Some(inner) = raw.strip_prefix('[') {
            let inner = inner
                .strip_suffix(']')
                .ok_or_else(|| err("an opening `[` has no closing `]`"))?;
            let v6: Ipv6Addr = inner
                .parse()
                .map_err(|_| err("the text in brackets is not an IPv6 address"))?;
            return Ok(TargetHost::Ip(IpAddr::V6(v6).to_canonical()));
        }
        if let Ok(ip) = raw.parse::<IpAddr>() {
            return Ok(TargetHost::Ip(ip.to_canonical()));
        }
        if !raw.is_ascii() {
            return Err(err(
                "internationalised names must be sent in their ASCII form (xn--...)",
            ));
        }
        let name = raw.strip_suffix('.').unwrap_or(raw).to_ascii_lowercase();
        if name.is_empty() {
            return Err(err("it is empty"));
        }
        if name.len() > 253 {
            return Err(err("it is longer than 253 characters"));
        }
        for label in name.split('.') {
            if label.is_empty() {
                return Err(err("it has an empty label"));
            }
            if label.len() > 63 {
                return Err(err("a label is longer than 63 characters"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(err("labels may hold only letters, digits, `-` and `_`"));
            }
        }
        let last = name.rsplit('.').next().unwrap_or_default();
        if looks_numeric(last) {
            // No top-level domain is numeric; resolvers read `127.1` or `0x7f.1` as addresses.
            return Err(err(
                "it reads as a numeric address; write IP addresses in dotted or bracketed form",
            ));
        }
        Ok(TargetHost::Name(name))
    }

    /// The IP literal, if this host is one.
    pub fn ip(&self) -> Option<IpAddr> {
        match self {
            TargetHost::Ip(ip) => Some(*ip),
            TargetHost::Name(_) => None,
        }
    }
}

/// Whether a label is all digits or a `0x` hexadecimal number (as `inet_aton` reads them).
fn looks_numeric(label: &str) -> bool {
    match label.strip_prefix("0x") {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !label.is_empty() && label.bytes().all(|b| b.is_ascii_digit()),
    }
}

impl fmt::Display for TargetHost {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            TargetHost::Name(name) => f.write_str(name),
            TargetHost::Ip(IpAddr::V4(v4)) => write!(f, "{v4}"),
            TargetHost::Ip(IpAddr::V6(v6)) => write!(f, "[{v6}]"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn name(s: &str) -> TargetHost {
        TargetHost::Name(s.to_string())
    }

    #[test]
    fn normalises_names_and_literals() {
        for (raw, expected) in [
            ("Example.COM", name("example.com")),
            ("example.com.", name("example.com")),
            ("xn--bcher-kva.de", name("xn--bcher-kva.de")),
            ("_srv.example.com", name("_srv.example.com")),
            ("localhost", name("localhost")),
            ("a1.b2", name("a1.b2")),
            (
                "10.0.0.1",
                TargetHost::Ip(Ipv4Addr::new(10, 0, 0, 1).into()),
            ),
            ("[::1]", TargetHost::Ip(Ipv6Addr::LOCALHOST.into())),
            ("::1", TargetHost::Ip(Ipv6Addr::LOCALHOST.into())),
            (
                "[::ffff:169.254.169.254]",
                TargetHost::Ip(Ipv4Addr::new(169, 254, 169, 254).into()),
            ),
        ] {
            assert_eq!(TargetHost::parse(raw), Ok(expected), "{raw}");
        }
    }

    #[test]
    fn rejects_hosts_that_are_not_names() {
        for raw in [
            "",
            ".",
            "a..b",
            "ex ample.com",
            "bücher.de",
            "127.1",
            "2130706433",
            "0x7f.1",
            "0x7f000001",
            "0x",
            "1.2.3.4.",
            "[::1",
            "[example.com]",
            "host%00.example.com",
            "user@example.com",
        ] {
            assert!(TargetHost::parse(raw).is_err(), "{raw:?} was accepted");
        }
        let long = format!("{}.com", "a".repeat(64));
        assert!(TargetHost::parse(&long).is_err());
    }

    #[test]
    fn displays_ipv6_in_brackets() {
        assert_eq!(TargetHost::parse("[::1]").unwrap().to_string(), "[::1]");
        assert_eq!(
            TargetHost::parse("Example.com").unwrap().to_string(),
            "example.com"
        );
    }
}
