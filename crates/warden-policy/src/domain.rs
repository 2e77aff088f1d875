//! Domain patterns for the egress allowlist: `example.com` or `*.example.com`; case, one
//! trailing dot and internationalised names (to their `xn--` form) are normalised.

use std::fmt;
use std::str::FromStr;

/// A domain the egress proxy may admit. Stored lowercase, without a trailing dot.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum DomainPattern {
    /// Exactly this name.
    Exact(String),
    /// Any name ending in `.suffix` (not the suffix itself).
    Suffix(String),
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "`{input}` is not a domain pattern: {reason}; write a name like `example.com` or `*.example.com`"
)]
pub struct DomainError {
    input: String,
    reason: String,
}

impl FromStr for DomainPattern {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let err = |reason: &str| DomainError {
            input: s.to_string(),
            reason: reason.to_string(),
        };
        let trimmed = s.trim();
        // Internationalised names become their ASCII (xn--) form, the one clients send; UTS 46
        // mapping also lowercases and folds full-width dots and letters.
        let lower = if trimmed.is_ascii() {
            trimmed.to_ascii_lowercase()
        } else {
            let (wild, rest) = match trimmed.strip_prefix("*.") {
                Some(rest) => ("*.", rest),
                None => ("", trimmed),
            };
            match idna::domain_to_ascii(rest) {
                Ok(ascii) => format!("{wild}{ascii}"),
                Err(_) => return Err(err("it is not a valid internationalised domain name")),
            }
        };
        let lower = lower.strip_suffix('.').unwrap_or(&lower);
        let (suffix, name) = match lower.strip_prefix("*.") {
            Some(rest) => (true, rest),
            None => (false, lower),
        };
        if name.is_empty() {
            return Err(err("it is empty"));
        }
        if !name.is_ascii() {
            return Err(err("it is not a valid internationalised domain name"));
        }
        if name.len() > 253 {
            return Err(err("it is longer than 253 characters"));
        }
        if name.contains('*') {
            return Err(err(
                "`*` is only allowed as the whole first label (`*.example.com`)",
            ));
        }
        for label in name.split('.') {
            if label.is_empty() {
                return Err(err("it has an empty label"));
            }
            if label.len() > 63 {
                return Err(err("a label is longer than 63 characters"));
            }
            if label.starts_with('-') || label.ends_with('-') {
                return Err(err("a label starts or ends with `-`"));
            }
            if !label
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
            {
                return Err(err("labels may hold only letters, digits, `-` and `_`"));
            }
        }
        if suffix && !name.contains('.') {
            return Err(err(
                "a wildcard must cover a registrable name, not a top-level domain",
            ));
        }
        Ok(if suffix {
            DomainPattern::Suffix(name.to_string())
        } else {
            DomainPattern::Exact(name.to_string())
        })
    }
}

impl DomainPattern {
    /// Whether this pattern admits `host`: an exact name equals it, a suffix pattern admits
    /// strictly longer names ending in `.suffix` (never the suffix itself). Case and one trailing
    /// dot of `host` are ignored. Patterns are ASCII, so a host that is not (an IDN not yet in
    /// its `xn--` form) matches nothing.
    pub fn matches(&self, host: &str) -> bool {
        if !host.is_ascii() {
            return false;
        }
        let host = host.strip_suffix('.').unwrap_or(host);
        match self {
            DomainPattern::Exact(name) => host.eq_ignore_ascii_case(name),
            DomainPattern::Suffix(suffix) => {
                let Some(split) = host.len().checked_sub(suffix.len() + 1) else {
                    return false;
                };
                split > 0
                    && host.as_bytes()[split] == b'.'
                    && host
                        .get(split + 1..)
                        .is_some_and(|tail| tail.eq_ignore_ascii_case(suffix))
            }
        }
    }
}

impl fmt::Display for DomainPattern {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainPattern::Exact(name) => f.write_str(name),
            DomainPattern::Suffix(name) => write!(f, "*.{name}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn normalises_case_and_trailing_dot() {
        assert_eq!(
            "Example.COM.".parse(),
            Ok(DomainPattern::Exact("example.com".into()))
        );
        assert_eq!(
            "*.GitHub.com".parse(),
            Ok(DomainPattern::Suffix("github.com".into()))
        );
        assert_eq!(
            "*.github.com".parse::<DomainPattern>().unwrap().to_string(),
            "*.github.com"
        );
    }

    #[test]
    fn matches_exact_names_and_strict_subdomains() {
        let exact: DomainPattern = "example.com".parse().unwrap();
        let suffix: DomainPattern = "*.example.com".parse().unwrap();
        for (pattern, host, expected) in [
            (&exact, "example.com", true),
            (&exact, "EXAMPLE.com.", true),
            (&exact, "www.example.com", false),
            (&exact, "notexample.com", false),
            (&exact, "example.co", false),
            (&suffix, "www.example.com", true),
            (&suffix, "a.b.Example.COM", true),
            (&suffix, "www.example.com.", true),
            (&suffix, "example.com", false),
            (&suffix, ".example.com", false),
            (&suffix, "wwwexample.com", false),
            (&suffix, "example.com.evil.net", false),
            (&suffix, "", false),
            (&suffix, "www.exampl\u{e9}.com", false),
            (&suffix, "\u{e9}.example.com", false),
        ] {
            assert_eq!(pattern.matches(host), expected, "{pattern} vs {host:?}");
        }
    }

    #[test]
    fn internationalised_names_become_their_ascii_form() {
        let p = |s: &str| s.parse::<DomainPattern>().unwrap();
        assert_eq!(
            p("bücher.de"),
            DomainPattern::Exact("xn--bcher-kva.de".into())
        );
        assert_eq!(p("BÜCHER.de."), p("xn--bcher-kva.de"));
        assert_eq!(
            p("*.münchen.de"),
            DomainPattern::Suffix("xn--mnchen-3ya.de".into())
        );
        // Full-width letters and the ideographic full stop fold to ASCII.
        assert_eq!(p("ｅｘａｍｐｌｅ。com"), p("example.com"));
        assert!(p("bücher.de").matches("XN--BCHER-KVA.DE"));
    }

    #[test]
    fn rejects_malformed_patterns() {
        for bad in [
            "",
            "*.",
            "*.com",
            "a..b",
            "-a.com",
            "a-.com",
            "ex ample.com",
            "a.*.com",
            "*example.com",
            "bü cher.de",
            "a\u{200d}b.de",
            &"a".repeat(64),
        ] {
            let e = bad.parse::<DomainPattern>().unwrap_err().to_string();
            assert!(e.contains("`*.example.com`"), "{bad}: {e}");
        }
    }
}
