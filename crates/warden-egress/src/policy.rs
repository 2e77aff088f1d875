//! The egress policy and its pure decision. Owns [`EgressPolicy`] (allow and deny lists of
//! domain rules, allowed ports, CIDRs that unlock addresses), [`EgressPolicy::decide`] from
//! (host, port) to a [`Verdict`], and the screening of resolved addresses against the policy.
//! No I/O: the proxy resolves and connects; this module only judges.

use std::collections::BTreeSet;
use std::fmt;
use std::net::IpAddr;
use std::str::FromStr;

use ipnet::{IpNet, Ipv4Net};
use serde::{Deserialize, Serialize};
use warden_policy::{DomainError, DomainPattern};

use crate::host::TargetHost;
use crate::screen::{Screening, screen_address};

/// One entry of an allow or deny list.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum DomainRule {
    /// `*`: every destination. In an allow list it admits any name and any IP literal, but
    /// address screening still refuses loopback, private, link-local and metadata addresses.
    Any,
    /// `example.com` or `*.example.com`.
    Pattern(DomainPattern),
}

impl DomainRule {
    /// Whether this rule covers `host`.
    pub fn matches(&self, host: &TargetHost) -> bool {
        match (self, host) {
            (DomainRule::Any, _) => true,
            (DomainRule::Pattern(pattern), TargetHost::Name(name)) => pattern.matches(name),
            (DomainRule::Pattern(_), TargetHost::Ip(_)) => false,
        }
    }

    /// Exact names before suffixes before `*`: the most specific rule is the one reported.
    fn specificity(&self) -> u8 {
        match self {
            DomainRule::Pattern(DomainPattern::Exact(_)) => 0,
            DomainRule::Pattern(DomainPattern::Suffix(_)) => 1,
            DomainRule::Any => 2,
        }
    }
}

impl FromStr for DomainRule {
    type Err = DomainError;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.trim() == "*" {
            Ok(DomainRule::Any)
        } else {
            s.parse().map(DomainRule::Pattern)
        }
    }
}

impl From<DomainPattern> for DomainRule {
    fn from(pattern: DomainPattern) -> Self {
        DomainRule::Pattern(pattern)
    }
}

impl fmt::Display for DomainRule {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DomainRule::Any => f.write_str("*"),
            DomainRule::Pattern(pattern) => pattern.fmt(f),
        }
    }
}

/// An invalid entry in an egress policy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PolicyError {
    #[error("{0}; or `*` to allow every domain")]
    Domain(#[from] DomainError),
    #[error("`{input}` is not a CIDR: {reason}; write a network like `10.0.0.0/8` or `fd00::/8`")]
    Cidr { input: String, reason: String },
    #[error("port 0 cannot be allowed; use a port from 1 to 65535")]
    PortZero,
}

/// Whether a request may go out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Decision {
    Allowed,
    Denied,
}

/// The outcome of a policy check, with the rule that decided it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub decision: Decision,
    /// A short stable name for the deciding rule: `allow:*.example.com`, `cidr:127.0.0.0/8`,
    /// `deny:evil.example`, `port:8080`, `default-deny`, `ip-literal`, `invalid-host`,
    /// `screen:metadata`.
    pub rule: String,
    /// One sentence for a person: why, and for a denial, how to allow it.
    pub explanation: String,
}

impl Verdict {
    pub fn is_allowed(&self) -> bool {
        self.decision == Decision::Allowed
    }

    fn allowed(rule: String, explanation: String) -> Self {
        Verdict {
            decision: Decision::Allowed,
            rule,
            explanation,
        }
    }

    fn denied(rule: String, explanation: String) -> Self {
        Verdict {
            decision: Decision::Denied,
            rule,
            explanation,
        }
    }
}

/// What the egress proxy admits. Nothing is allowed until a rule says so.
///
/// Evaluation of [`decide`](Self::decide): an unparsable host is denied; then the deny list
/// (deny wins over allow); then an IP literal needs a covering CIDR or an allow-all `*`, and a
/// name needs a matching allow rule; last, the port must be allowed. After resolution every
/// address is screened with [`screen`](Self::screen).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EgressPolicy {
    allow: Vec<DomainRule>,
    deny: Vec<DomainRule>,
    ports: BTreeSet<u16>,
    cidrs: Vec<IpNet>,
}

/// Ports allowed unless the policy sets its own: HTTP and HTTPS.
pub const DEFAULT_PORTS: [u16; 2] = [80, 443];

impl Default for EgressPolicy {
    fn default() -> Self {
        Self::new()
    }
}

impl EgressPolicy {
    /// A policy that allows nothing, with the default ports (80, 443).
    pub fn new() -> Self {
        EgressPolicy {
            allow: Vec::new(),
            deny: Vec::new(),
            ports: DEFAULT_PORTS.into_iter().collect(),
            cidrs: Vec::new(),
        }
    }

    /// Adds an allow rule: `example.com`, `*.example.com` or `*`.
    pub fn allow_domain(mut self, rule: &str) -> Result<Self, PolicyError> {
        self.allow.push(rule.parse()?);
        Ok(self)
    }

    /// Adds a deny rule; deny rules win over allow rules.
    pub fn deny_domain(mut self, rule: &str) -> Result<Self, PolicyError> {
        self.deny.push(rule.parse()?);
        Ok(self)
    }

    /// Adds an already parsed allow rule.
    pub fn allow(mut self, rule: impl Into<DomainRule>) -> Self {
        self.allow.push(rule.into());
        self
    }

    /// Adds an already parsed deny rule.
    pub fn deny(mut self, rule: impl Into<DomainRule>) -> Self {
        self.deny.push(rule.into());
        self
    }

    /// Replaces the allowed ports (the defaults are 80 and 443).
    pub fn with_ports(mut self, ports: impl IntoIterator<Item = u16>) -> Result<Self, PolicyError> {
        let ports: BTreeSet<u16> = ports.into_iter().collect();
        if ports.contains(&0) {
            return Err(PolicyError::PortZero);
        }
        self.ports = ports;
        Ok(self)
    }

    /// Adds one allowed port to those already allowed.
    pub fn allow_port(mut self, port: u16) -> Result<Self, PolicyError> {
        if port == 0 {
            return Err(PolicyError::PortZero);
        }
        self.ports.insert(port);
        Ok(self)
    }

    /// Allows a network explicitly: IP literals inside it pass [`decide`](Self::decide), and
    /// resolved addresses inside it pass [`screen`](Self::screen) even when they are loopback,
    /// private or link-local (a metadata address needs a CIDR naming exactly that address).
    /// `/0` networks are refused: `*` is the way to allow every public destination.
    pub fn allow_cidr(mut self, cidr: &str) -> Result<Self, PolicyError> {
        let err = |reason: &str| PolicyError::Cidr {
            input: cidr.to_string(),
            reason: reason.to_string(),
        };
        let net: IpNet = cidr
            .trim()
            .parse()
            .map_err(|_| err("expected an address, `/` and a prefix length"))?;
        if net.prefix_len() == 0 {
            return Err(err(
                "a /0 network would unlock every special-purpose address; use `*` to allow every public destination",
            ));
        }
        self.cidrs.push(canonical_net(net.trunc()));
        Ok(self)
    }

    /// The allowed ports, ascending.
    pub fn ports(&self) -> impl Iterator<Item = u16> + '_ {
        self.ports.iter().copied()
    }

    /// The explicitly allowed networks.
    pub fn cidrs(&self) -> &[IpNet] {
        &self.cidrs
    }

    /// Decides whether a request to `host:port` may go out, before any resolution.
    /// `host` is a request host as sent (`Example.COM.`, `10.0.0.1`, `[::1]`).
    pub fn decide(&self, host: &str, port: u16) -> Verdict {
        match TargetHost::parse(host) {
            Ok(target) => self.decide_target(&target, port),
            Err(e) => Verdict::denied("invalid-host".into(), e.to_string()),
        }
    }

    /// [`decide`](Self::decide) for an already parsed host.
    pub fn decide_target(&self, host: &TargetHost, port: u16) -> Verdict {
        if let Some(rule) = most_specific(&self.deny, host) {
            return Verdict::denied(
                format!("deny:{rule}"),
                format!("{host} matches the deny rule `{rule}`; remove that rule to allow it"),
            );
        }
        let allowed = match host {
            TargetHost::Ip(ip) => {
                if let Some(net) = self.cidrs.iter().find(|net| net.contains(ip)) {
                    Verdict::allowed(
                        format!("cidr:{net}"),
                        format!("{ip} is inside the allowed network {net}"),
                    )
                } else if self.allow.contains(&DomainRule::Any) {
                    Verdict::allowed(
                        "allow:*".into(),
                        "every destination is allowed (`*`)".into(),
                    )
                } else {
                    return Verdict::denied(
                        "ip-literal".into(),
                        format!(
                            "IP addresses are reached only inside a CIDR the policy allows; use a domain name, or allow a network containing {ip}"
                        ),
                    );
                }
            }
            TargetHost::Name(name) => match most_specific(&self.allow, host) {
                Some(rule) => Verdict::allowed(
                    format!("allow:{rule}"),
                    format!("{name} matches the allow rule `{rule}`"),
                ),
                None => {
                    return Verdict::denied(
                        "default-deny".into(),
                        format!("no allow rule matches it; add --allow-domain {name}"),
                    );
                }
            },
        };
        if !self.ports.contains(&port) {
            let ports: Vec<String> = self.ports.iter().map(u16::to_string).collect();
            let ports = if ports.is_empty() {
                "none".to_string()
            } else {
                ports.join(", ")
            };
            return Verdict::denied(
                format!("port:{port}"),
                format!(
                    "port {port} is not an allowed port (allowed: {ports}); allow the port in the policy"
                ),
            );
        }
        allowed
    }

    /// Screens one resolved address (see [`screen_address`]) against this policy's CIDRs.
    pub fn screen(&self, ip: IpAddr) -> Screening {
        screen_address(ip, &self.cidrs)
    }
}

fn most_specific<'a>(rules: &'a [DomainRule], host: &TargetHost) -> Option<&'a DomainRule> {
    rules
        .iter()
        .filter(|rule| rule.matches(host))
        .min_by_key(|rule| rule.specificity())
}

/// Writes an IPv4-mapped IPv6 network (`::ffff:10.0.0.0/104`) as the IPv4 network it means,
/// since addresses are compared in canonical form.
fn canonical_net(net: IpNet) -> IpNet {
    if let IpNet::V6(v6) = net
        && let Some(v4) = v6.addr().to_ipv4_mapped()
        && v6.prefix_len() >= 96
        && let Ok(v4net) = Ipv4Net::new(v4, v6.prefix_len() - 96)
    {
        return IpNet::V4(v4net);
    }
    net
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::screen::AddressClass;

    fn policy() -> EgressPolicy {
        EgressPolicy::new()
            .allow_domain("example.com")
            .unwrap()
            .allow_domain("*.github.com")
            .unwrap()
            .allow_domain("API.Example.org.")
            .unwrap()
            .allow_domain("*.corp.example")
            .unwrap()
            .deny_domain("evil.github.com")
            .unwrap()
            .deny_domain("*.secret.corp.example")
            .unwrap()
            .allow_cidr("10.20.0.0/16")
            .unwrap()
            .allow_cidr("fd00:1::/32")
            .unwrap()
    }

    #[test]
    fn decide_table() {
        use Decision::{Allowed, Denied};
        let p = policy();
        let all = EgressPolicy::new()
            .allow_domain("*")
            .unwrap()
            .deny_domain("*.tracker.example")
            .unwrap();
        let wide_ports = policy().with_ports([443, 8443]).unwrap();
        let table: &[(&EgressPolicy, &str, u16, Decision, &str)] = &[
            // exact names: case, trailing dot
            (&p, "example.com", 443, Allowed, "allow:example.com"),
            (&p, "EXAMPLE.COM", 80, Allowed, "allow:example.com"),
            (&p, "example.com.", 443, Allowed, "allow:example.com"),
            (&p, "www.example.com", 443, Denied, "default-deny"),
            (&p, "example.com.evil.net", 443, Denied, "default-deny"),
            (&p, "notexample.com", 443, Denied, "default-deny"),
            (&p, "api.example.org", 443, Allowed, "allow:api.example.org"),
            (&p, "example.org", 443, Denied, "default-deny"),
            // suffixes: strict subdomains only
            (&p, "api.github.com", 443, Allowed, "allow:*.github.com"),
            (&p, "a.b.GitHub.com", 443, Allowed, "allow:*.github.com"),
            (&p, "github.com", 443, Denied, "default-deny"),
            (&p, "evilgithub.com", 443, Denied, "default-deny"),
            // deny wins
            (&p, "evil.github.com", 443, Denied, "deny:evil.github.com"),
            (&p, "EVIL.github.com.", 443, Denied, "deny:evil.github.com"),
            (&p, "x.evil.github.com", 443, Allowed, "allow:*.github.com"),
            (&p, "db.corp.example", 443, Allowed, "allow:*.corp.example"),
            (
                &p,
                "a.secret.corp.example",
                443,
                Denied,
                "deny:*.secret.corp.example",
            ),
            (
                &p,
                "secret.corp.example",
                443,
                Allowed,
                "allow:*.corp.example",
            ),
            // ports
            (&p, "example.com", 8080, Denied, "port:8080"),
            (&p, "example.com", 22, Denied, "port:22"),
            (
                &wide_ports,
                "example.com",
                8443,
                Allowed,
                "allow:example.com",
            ),
            (&wide_ports, "example.com", 80, Denied, "port:80"),
            // a denied domain is reported as such whatever the port
            (&p, "evil.github.com", 22, Denied, "deny:evil.github.com"),
            (&p, "unknown.test", 22, Denied, "default-deny"),
            // IP literals need a CIDR or `*`
            (&p, "10.20.1.2", 443, Allowed, "cidr:10.20.0.0/16"),
            (&p, "[::ffff:10.20.1.2]", 443, Allowed, "cidr:10.20.0.0/16"),
            (&p, "[fd00:1::5]", 80, Allowed, "cidr:fd00:1::/32"),
            (&p, "10.21.0.1", 443, Denied, "ip-literal"),
            (&p, "1.1.1.1", 443, Denied, "ip-literal"),
            (&p, "10.20.1.2", 8080, Denied, "port:8080"),
            // invalid hosts
            (&p, "", 443, Denied, "invalid-host"),
            (&p, "bücher.example.com", 443, Denied, "invalid-host"),
            (&p, "127.1", 443, Denied, "invalid-host"),
            (&p, "a..example.com", 443, Denied, "invalid-host"),
            // allow-all
            (&all, "anything.example", 443, Allowed, "allow:*"),
            (&all, "169.254.169.254", 80, Allowed, "allow:*"),
            (
                &all,
                "x.tracker.example",
                443,
                Denied,
                "deny:*.tracker.example",
            ),
            (&all, "anything.example", 8080, Denied, "port:8080"),
            // an empty policy allows nothing
            (
                &EgressPolicy::new(),
                "example.com",
                443,
                Denied,
                "default-deny",
            ),
            (&EgressPolicy::new(), "127.0.0.1", 80, Denied, "ip-literal"),
        ];
        for (policy, host, port, decision, rule) in table {
            let v = policy.decide(host, *port);
            assert_eq!(
                (v.decision, v.rule.as_str()),
                (*decision, *rule),
                "{host}:{port}: {v:?}"
            );
        }
    }

    #[test]
    fn most_specific_allow_rule_is_reported() {
        let p = EgressPolicy::new()
            .allow_domain("*")
            .unwrap()
            .allow_domain("*.example.com")
            .unwrap()
            .allow_domain("www.example.com")
            .unwrap();
        assert_eq!(
            p.decide("www.example.com", 443).rule,
            "allow:www.example.com"
        );
        assert_eq!(p.decide("api.example.com", 443).rule, "allow:*.example.com");
        assert_eq!(p.decide("other.example", 443).rule, "allow:*");
    }

    #[test]
    fn explanations_say_how_to_allow() {
        let p = policy();
        let v = p.decide("evil.example", 443);
        assert!(
            v.explanation.contains("--allow-domain evil.example"),
            "{v:?}"
        );
        let v = p.decide("example.com", 8080);
        assert!(
            v.explanation.contains("port 8080") && v.explanation.contains("80, 443"),
            "{v:?}"
        );
        let v = p.decide("evil.github.com", 443);
        assert!(
            v.explanation.contains("deny rule `evil.github.com`"),
            "{v:?}"
        );
    }

    #[test]
    fn rejects_bad_entries_with_clear_errors() {
        // Internationalised names are normalised to their xn-- form, not refused.
        let p = EgressPolicy::new().allow_domain("bücher.de").unwrap();
        assert!(p.decide("xn--bcher-kva.de", 443).is_allowed());
        let e = EgressPolicy::new().allow_domain("bü cher.de").unwrap_err();
        assert!(e.to_string().contains("not a domain pattern"), "{e}");
        let e = EgressPolicy::new().deny_domain("a.*.com").unwrap_err();
        assert!(e.to_string().contains("`*` to allow every domain"), "{e}");
        let e = EgressPolicy::new().allow_cidr("10.0.0.0/33").unwrap_err();
        assert!(e.to_string().contains("`10.0.0.0/8`"), "{e}");
        let e = EgressPolicy::new().allow_cidr("localhost").unwrap_err();
        assert!(matches!(e, PolicyError::Cidr { .. }), "{e}");
        let e = EgressPolicy::new().allow_cidr("0.0.0.0/0").unwrap_err();
        assert!(e.to_string().contains("use `*`"), "{e}");
        assert_eq!(
            EgressPolicy::new().with_ports([0, 80]),
            Err(PolicyError::PortZero)
        );
        assert_eq!(
            EgressPolicy::new().allow_port(0),
            Err(PolicyError::PortZero)
        );
    }

    #[test]
    fn cidrs_are_canonical() {
        let p = EgressPolicy::new()
            .allow_cidr("::ffff:10.9.0.0/112")
            .unwrap()
            .allow_cidr("192.168.7.9/24")
            .unwrap();
        let shown: Vec<String> = p.cidrs().iter().map(ToString::to_string).collect();
        assert_eq!(shown, ["10.9.0.0/16", "192.168.7.0/24"]);
        assert_eq!(
            p.screen("10.9.3.4".parse().unwrap()),
            Screening::Unlocked {
                class: AddressClass::Private,
                cidr: "10.9.0.0/16".parse().unwrap()
            }
        );
        assert_eq!(
            p.screen("10.8.3.4".parse().unwrap()),
            Screening::Refused {
                class: AddressClass::Private
            }
        );
    }
}
