//! Address screening after DNS resolution: which resolved addresses the proxy refuses to
//! connect to. Owns the classification of special-purpose IPv4 and IPv6 ranges (loopback,
//! private, link-local, CGNAT, cloud metadata, ...), including IPv6 forms that embed an IPv4
//! address, and the rule by which a CIDR in the policy unlocks one. Pure: no I/O.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use ipnet::IpNet;

/// A special-purpose address range the proxy does not reach unless the policy says so.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum AddressClass {
    /// 127.0.0.0/8, ::1.
    Loopback,
    /// RFC 1918 (10/8, 172.16/12, 192.168/16), unique-local fc00::/7, site-local fec0::/10.
    Private,
    /// 169.254.0.0/16, fe80::/10.
    LinkLocal,
    /// Carrier-grade NAT shared space, 100.64.0.0/10.
    SharedCgnat,
    /// 0.0.0.0, ::.
    Unspecified,
    /// 224.0.0.0/4, ff00::/8.
    Multicast,
    /// 255.255.255.255.
    Broadcast,
    /// A cloud provider's instance metadata or host service (169.254.169.254, fd00:ec2::254,
    /// 100.100.100.200, 168.63.129.16, 192.0.0.192).
    Metadata,
    /// Other ranges that are not public unicast: 0/8, 240/4, 192.0.0/24, benchmarking,
    /// documentation, the IPv6 discard prefix, deprecated IPv4-compatible IPv6, Teredo.
    Reserved,
}

impl AddressClass {
    /// A short stable name, used in audit rules (`screen:link-local`).
    pub fn as_str(self) -> &'static str {
        match self {
            AddressClass::Loopback => "loopback",
            AddressClass::Private => "private",
            AddressClass::LinkLocal => "link-local",
            AddressClass::SharedCgnat => "cgnat",
            AddressClass::Unspecified => "unspecified",
            AddressClass::Multicast => "multicast",
            AddressClass::Broadcast => "broadcast",
            AddressClass::Metadata => "metadata",
            AddressClass::Reserved => "reserved",
        }
    }

    /// Words for a message: "a loopback address".
    pub fn describe(self) -> &'static str {
        match self {
            AddressClass::Loopback => "a loopback address",
            AddressClass::Private => "a private address",
            AddressClass::LinkLocal => "a link-local address",
            AddressClass::SharedCgnat => "a carrier-grade NAT address",
            AddressClass::Unspecified => "the unspecified address",
            AddressClass::Multicast => "a multicast address",
            AddressClass::Broadcast => "the broadcast address",
            AddressClass::Metadata => "a cloud metadata address",
            AddressClass::Reserved => "a reserved address",
        }
    }
}

impl fmt::Display for AddressClass {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The outcome of screening one resolved address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Screening {
    /// Public unicast: the proxy may connect.
    Public,
    /// Special-purpose, but a CIDR in the policy covers it explicitly: the proxy may connect.
    Unlocked { class: AddressClass, cidr: IpNet },
    /// Special-purpose and not covered: the proxy must not connect.
    Refused { class: AddressClass },
}

impl Screening {
    /// Whether the proxy may connect to the address.
    pub fn permits(&self) -> bool {
        !matches!(self, Screening::Refused { .. })
    }
}

/// Screens `ip` against the special-purpose ranges, letting `allowed` CIDRs unlock them.
///
/// A CIDR unlocks an address it contains. Metadata addresses are stricter: only a CIDR naming
/// that single address (`/32`, `/128`) unlocks one, so allowing `169.254.0.0/16` or
/// `100.64.0.0/10` for some other service never exposes instance credentials by accident.
pub fn screen_address(ip: IpAddr, allowed: &[IpNet]) -> Screening {
    let ip = ip.to_canonical();
    let Some(class) = classify(ip) else {
        return Screening::Public;
    };
    let unlocking = allowed.iter().find(|net| {
        net.contains(&ip)
            && (class != AddressClass::Metadata || net.prefix_len() == net.max_prefix_len())
    });
    match unlocking {
        Some(cidr) => Screening::Unlocked { class, cidr: *cidr },
        None => Screening::Refused { class },
    }
}

/// The special-purpose class of `ip`, or `None` for public unicast.
pub fn classify(ip: IpAddr) -> Option<AddressClass> {
    match ip.to_canonical() {
        IpAddr::V4(v4) => classify_v4(v4),
        IpAddr::V6(v6) => classify_v6(v6),
    }
}

const METADATA_V4: [Ipv4Addr; 4] = [
    Ipv4Addr::new(169, 254, 169, 254), // AWS, GCP, Azure, OpenStack, DigitalOcean, ...
    Ipv4Addr::new(100, 100, 100, 200), // Alibaba Cloud
    Ipv4Addr::new(168, 63, 129, 16),   // Azure WireServer (a public address, host-only)
    Ipv4Addr::new(192, 0, 0, 192),     // Oracle Cloud
];

const METADATA_V6: [Ipv6Addr; 1] = [
    Ipv6Addr::new(0xfd00, 0x0ec2, 0, 0, 0, 0, 0, 0x0254), // AWS over IPv6
];

fn in_v4(ip: Ipv4Addr, net: [u8; 4], prefix: u32) -> bool {
    let mask = u32::MAX.checked_shl(32 - prefix).unwrap_or(0);
    u32::from(ip) & mask == u32::from(Ipv4Addr::from(net)) & mask
}

fn classify_v4(ip: Ipv4Addr) -> Option<AddressClass> {
    use AddressClass::*;
    if METADATA_V4.contains(&ip) {
        return Some(Metadata);
    }
    let class = if ip.is_unspecified() {
        Unspecified
    } else if ip.is_broadcast() {
        Broadcast
    } else if ip.is_loopback() {
        Loopback
    } else if ip.is_private() {
        Private
    } else if ip.is_link_local() {
        LinkLocal
    } else if in_v4(ip, [100, 64, 0, 0], 10) {
        SharedCgnat
    } else if ip.is_multicast() {
        Multicast
    } else if [
        ([0, 0, 0, 0], 8),
        ([192, 0, 0, 0], 24),
        ([192, 0, 2, 0], 24),
        ([198, 18, 0, 0], 15),
        ([198, 51, 100, 0], 24),
        ([203, 0, 113, 0], 24),
        ([240, 0, 0, 0], 4),
    ]
    .into_iter()
    .any(|(net, prefix)| in_v4(ip, net, prefix))
    {
        Reserved
    } else {
        return None;
    };
    Some(class)
}

fn classify_v6(ip: Ipv6Addr) -> Option<AddressClass> {
    use AddressClass::*;
    if METADATA_V6.contains(&ip) {
        return Some(Metadata);
    }
    let s = ip.segments();
    let embedded_tail =
        || Ipv4Addr::new((s[6] >> 8) as u8, s[6] as u8, (s[7] >> 8) as u8, s[7] as u8);
    let class = if ip.is_unspecified() {
        Unspecified
    } else if ip.is_loopback() {
        Loopback
    } else if s[..6] == [0; 6] {
        // Deprecated IPv4-compatible form `::a.b.c.d`: never public unicast.
        classify_v4(embedded_tail()).unwrap_or(Reserved)
    } else if s[..6] == [0x64, 0xff9b, 0, 0, 0, 0] {
        // NAT64 well-known prefix: a gateway would translate to the embedded IPv4 address.
        return classify_v4(embedded_tail());
    } else if s[0] == 0x2002 {
        // 6to4: the IPv4 address of the relay endpoint sits in bits 16..48.
        let v4 = Ipv4Addr::new((s[1] >> 8) as u8, s[1] as u8, (s[2] >> 8) as u8, s[2] as u8);
        return classify_v4(v4);
    } else if s[0] & 0xfe00 == 0xfc00 || s[0] & 0xffc0 == 0xfec0 {
        Private
    } else if s[0] & 0xffc0 == 0xfe80 {
        LinkLocal
    } else if s[0] & 0xff00 == 0xff00 {
        Multicast
    } else if (s[0], s[1]) == (0x2001, 0x0db8)
        || (s[0], s[1]) == (0x2001, 0)
        || s[..4] == [0x0100, 0, 0, 0]
    {
        // Documentation, Teredo (its IPv4 part is obfuscated), discard-only.
        Reserved
    } else {
        return None;
    };
    Some(class)
}

#[cfg(test)]
mod tests {
    use super::*;
    use AddressClass::*;

    #[test]
    fn classifies_special_purpose_addresses() {
        let table: &[(&str, Option<AddressClass>)] = &[
            // IPv4
            ("8.8.8.8", None),
            ("1.1.1.1", None),
            ("93.184.215.14", None),
            ("100.63.255.255", None),
            ("100.128.0.0", None),
            ("172.32.0.1", None),
            ("169.253.255.255", None),
            ("223.255.255.255", None),
            ("127.0.0.1", Some(Loopback)),
            ("127.255.255.254", Some(Loopback)),
            ("10.0.0.1", Some(Private)),
            ("172.16.0.1", Some(Private)),
            ("172.31.255.255", Some(Private)),
            ("192.168.1.1", Some(Private)),
            ("169.254.0.1", Some(LinkLocal)),
            ("169.254.170.2", Some(LinkLocal)),
            ("100.64.0.1", Some(SharedCgnat)),
            ("100.127.255.255", Some(SharedCgnat)),
            ("0.0.0.0", Some(Unspecified)),
            ("0.1.2.3", Some(Reserved)),
            ("224.0.0.1", Some(Multicast)),
            ("239.255.255.250", Some(Multicast)),
            ("255.255.255.255", Some(Broadcast)),
            ("240.0.0.1", Some(Reserved)),
            ("192.0.2.10", Some(Reserved)),
            ("198.18.0.1", Some(Reserved)),
            ("169.254.169.254", Some(Metadata)),
            ("100.100.100.200", Some(Metadata)),
            ("168.63.129.16", Some(Metadata)),
            ("192.0.0.192", Some(Metadata)),
            // IPv6
            ("2606:4700:4700::1111", None),
            ("2a00:1450:4001:80b::200e", None),
            ("::1", Some(Loopback)),
            ("::", Some(Unspecified)),
            ("fc00::1", Some(Private)),
            ("fd12:3456::1", Some(Private)),
            ("fec0::1", Some(Private)),
            ("fe80::1", Some(LinkLocal)),
            ("febf::1", Some(LinkLocal)),
            ("ff02::1", Some(Multicast)),
            ("2001:db8::1", Some(Reserved)),
            ("2001:0:4136:e378::1", Some(Reserved)),
            ("100::1", Some(Reserved)),
            ("fd00:ec2::254", Some(Metadata)),
            // IPv4 embedded in IPv6
            ("::ffff:127.0.0.1", Some(Loopback)),
            ("::ffff:10.1.2.3", Some(Private)),
            ("::ffff:169.254.169.254", Some(Metadata)),
            ("::ffff:100.64.1.1", Some(SharedCgnat)),
            ("::ffff:0.0.0.0", Some(Unspecified)),
            ("::ffff:224.0.0.1", Some(Multicast)),
            ("::ffff:255.255.255.255", Some(Broadcast)),
            ("::ffff:8.8.8.8", None),
            ("::127.0.0.1", Some(Loopback)),
            ("::8.8.8.8", Some(Reserved)),
            ("64:ff9b::169.254.169.254", Some(Metadata)),
            ("64:ff9b::10.0.0.1", Some(Private)),
            ("64:ff9b::8.8.8.8", None),
            ("2002:7f00:1::", Some(Loopback)),
            ("2002:a9fe:a9fe::1", Some(Metadata)),
            ("2002:808:808::1", None),
        ];
        for (text, expected) in table {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(classify(ip), *expected, "{text}");
        }
    }

    #[test]
    fn screening_refuses_special_addresses_unless_a_cidr_covers_them() {
        let cidrs: Vec<IpNet> = ["127.0.0.0/8", "10.1.0.0/16", "169.254.0.0/16", "fd00::/8"]
            .iter()
            .map(|c| c.parse().unwrap())
            .collect();
        let net = |s: &str| s.parse::<IpNet>().unwrap();
        let table: &[(&str, &[IpNet], Screening)] = &[
            ("8.8.8.8", &[], Screening::Public),
            ("8.8.8.8", &cidrs, Screening::Public),
            ("127.0.0.1", &[], Screening::Refused { class: Loopback }),
            (
                "127.0.0.1",
                &cidrs,
                Screening::Unlocked {
                    class: Loopback,
                    cidr: net("127.0.0.0/8"),
                },
            ),
            (
                "::ffff:127.0.0.1",
                &cidrs,
                Screening::Unlocked {
                    class: Loopback,
                    cidr: net("127.0.0.0/8"),
                },
            ),
            ("::1", &cidrs, Screening::Refused { class: Loopback }),
            (
                "10.1.2.3",
                &cidrs,
                Screening::Unlocked {
                    class: Private,
                    cidr: net("10.1.0.0/16"),
                },
            ),
            ("10.2.0.1", &cidrs, Screening::Refused { class: Private }),
            (
                "169.254.1.1",
                &cidrs,
                Screening::Unlocked {
                    class: LinkLocal,
                    cidr: net("169.254.0.0/16"),
                },
            ),
            // A broad CIDR does not unlock a metadata address ...
            (
                "169.254.169.254",
                &cidrs,
                Screening::Refused { class: Metadata },
            ),
            (
                "fd00:ec2::254",
                &cidrs,
                Screening::Refused { class: Metadata },
            ),
            // ... a host route does.
            (
                "169.254.169.254",
                &[net("169.254.169.254/32")],
                Screening::Unlocked {
                    class: Metadata,
                    cidr: net("169.254.169.254/32"),
                },
            ),
            (
                "100.100.100.200",
                &[net("100.64.0.0/10")],
                Screening::Refused { class: Metadata },
            ),
        ];
        for (text, allowed, expected) in table {
            let ip: IpAddr = text.parse().unwrap();
            assert_eq!(screen_address(ip, allowed), *expected, "{text}");
            assert_eq!(
                expected.permits(),
                !matches!(expected, Screening::Refused { .. })
            );
        }
    }
}
