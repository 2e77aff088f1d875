//! The header contract of the kubernetes-sigs/agent-sandbox router, shared by the router of
//! `warden serve` and the cluster router of `warden router`: which headers name the target
//! sandbox, how they are validated (upstream's order and messages), and which headers go on
//! to the sandbox. Pure: no sockets, no JSON; each server turns a [`RouterError`] into its
//! `{"detail": "..."}` response.

use std::net::{IpAddr, SocketAddr};

use http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};

use crate::is_dns_label;

pub const HEADER_ID: &str = "x-sandbox-id";
pub const HEADER_NAMESPACE: &str = "x-sandbox-namespace";
pub const HEADER_PORT: &str = "x-sandbox-port";
pub const HEADER_POD_IP: &str = "x-sandbox-pod-ip";

/// The namespace when `X-Sandbox-Namespace` is absent.
pub const DEFAULT_NAMESPACE: &str = "default";
/// The port when `X-Sandbox-Port` is absent (the legacy REST runtime).
pub const DEFAULT_PORT: u16 = 8888;

/// Where a request should go, once its headers are valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub id: String,
    pub namespace: String,
    pub port: u16,
    pub pod_ip: Option<IpAddr>,
}

/// An error in the upstream router's shape: a status and the text of `{"detail": "..."}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterError {
    pub status: StatusCode,
    pub detail: String,
}

impl RouterError {
    /// 400 with upstream's text.
    pub fn bad_request(detail: &str) -> RouterError {
        RouterError {
            status: StatusCode::BAD_REQUEST,
            detail: detail.to_string(),
        }
    }

    /// 502 `Could not connect to the backend sandbox: <id>`.
    pub fn unreachable(id: &str) -> RouterError {
        RouterError {
            status: StatusCode::BAD_GATEWAY,
            detail: format!("Could not connect to the backend sandbox: {id}"),
        }
    }

    /// 504: the backend did not send its response head in time.
    pub fn timeout(id: &str) -> RouterError {
        RouterError {
            status: StatusCode::GATEWAY_TIMEOUT,
            detail: format!("Timed out waiting for the backend sandbox: {id}"),
        }
    }

    /// 401: no bearer token, or not a known one. Servers add `WWW-Authenticate: Bearer`.
    pub fn unauthenticated() -> RouterError {
        RouterError {
            status: StatusCode::UNAUTHORIZED,
            detail: "Missing or wrong bearer token: send `Authorization: Bearer <token>`.".into(),
        }
    }

    /// 403: a valid token whose scope does not cover the target.
    pub fn forbidden(detail: impl Into<String>) -> RouterError {
        RouterError {
            status: StatusCode::FORBIDDEN,
            detail: detail.into(),
        }
    }
}

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    // A header that is not visible ASCII counts as present but invalid.
    h.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"))
}

/// Validates the routing headers exactly like the upstream router, in its order: id,
/// namespace, port, pod IP.
pub fn parse_target(h: &HeaderMap) -> Result<Target, RouterError> {
    let id = match header(h, HEADER_ID) {
        None | Some("") => {
            return Err(RouterError::bad_request("X-Sandbox-ID header is required."));
        }
        Some(id) => id,
    };
    if !is_dns_label(id) {
        return Err(RouterError::bad_request("Invalid sandbox ID format."));
    }
    let namespace = match header(h, HEADER_NAMESPACE) {
        None | Some("") => DEFAULT_NAMESPACE,
        Some(ns) => ns,
    };
    if !is_dns_label(namespace) {
        return Err(RouterError::bad_request("Invalid namespace format."));
    }
    let port = match header(h, HEADER_PORT) {
        None | Some("") => DEFAULT_PORT,
        Some(p) => match p.parse::<i64>() {
            Ok(n) if (1..=65535).contains(&n) => n as u16,
            _ => return Err(RouterError::bad_request("Invalid port format.")),
        },
    };
    let pod_ip = match header(h, HEADER_POD_IP) {
        None | Some("") => None,
        Some(ip) => match ip.parse::<IpAddr>() {
            Ok(ip) if is_routable_pod_ip(ip) => Some(ip),
            _ => return Err(RouterError::bad_request("Invalid target IP address.")),
        },
    };
    Ok(Target {
        id: id.to_string(),
        namespace: namespace.to_string(),
        port,
        pod_ip,
    })
}

/// An address `X-Sandbox-Pod-IP` may name: not loopback, link-local (which holds the cloud
/// metadata service), multicast or unspecified.
pub fn is_routable_pod_ip(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback() || v4.is_link_local() || v4.is_multicast() || v4.is_unspecified())
        }
        IpAddr::V6(v6) => {
            if let Some(v4) = v6.to_ipv4_mapped() {
                return is_routable_pod_ip(IpAddr::V4(v4));
            }
            let link_local = (v6.segments()[0] & 0xffc0) == 0xfe80;
            !(v6.is_loopback() || link_local || v6.is_multicast() || v6.is_unspecified())
        }
    }
}

/// Hop-by-hop headers, never forwarded (RFC 9110 7.6.1); `Connection`/`Upgrade` are put
/// back for upgrades.
pub const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

/// `Connection: upgrade` with a non-empty `Upgrade` (a WebSocket handshake, for one).
pub fn is_upgrade(h: &HeaderMap) -> bool {
    let connection_upgrade = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("upgrade"));
    connection_upgrade && h.get(header::UPGRADE).is_some_and(|v| !v.is_empty())
}

/// The headers sent to the sandbox: the client's, minus `Host`, `Authorization`, hop-by-hop
/// headers (and those `Connection` names) and any client-sent `X-Forwarded-*`; plus
/// `X-Forwarded-For/Host/Proto` set by us.
pub fn outbound_headers(inbound: &HeaderMap, peer: Option<SocketAddr>, upgrade: bool) -> HeaderMap {
    let connection = inbound.get_all(header::CONNECTION);
    let mut named_by_connection: Vec<String> = Vec::new();
    for token in connection
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
    {
        let t = token.trim().to_ascii_lowercase();
        if !t.is_empty() && t != "upgrade" {
            named_by_connection.push(t);
        }
    }
    let mut out = HeaderMap::with_capacity(inbound.len() + 3);
    for (name, value) in inbound {
        let n = name.as_str();
        if n == "host"
            || n == "authorization"
            || n.starts_with("x-forwarded-")
            || n == "forwarded"
            || HOP_BY_HOP.contains(&n)
            || named_by_connection.iter().any(|c| c == n)
        {
            continue;
        }
        out.append(name.clone(), value.clone());
    }
    if upgrade {
        out.insert(header::CONNECTION, HeaderValue::from_static("upgrade"));
        if let Some(u) = inbound.get(header::UPGRADE) {
            out.insert(header::UPGRADE, u.clone());
        }
        // A browser's Origin would not match the sandbox's host; upstream drops it too.
        out.remove(header::ORIGIN);
    }
    if let Some(peer) = peer
        && let Ok(v) = HeaderValue::from_str(&peer.ip().to_string())
    {
        out.insert(HeaderName::from_static("x-forwarded-for"), v);
    }
    if let Some(host) = inbound.get(header::HOST) {
        out.insert(HeaderName::from_static("x-forwarded-host"), host.clone());
    }
    out.insert(
        HeaderName::from_static("x-forwarded-proto"),
        HeaderValue::from_static("http"),
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn validation_order_and_messages() {
        // (headers, expected detail): the first failing header wins, in upstream's order.
        let cases: &[(&[(&str, &str)], &str)] = &[
            (&[], "X-Sandbox-ID header is required."),
            (
                &[("x-sandbox-namespace", "BAD")],
                "X-Sandbox-ID header is required.",
            ),
            (
                &[("x-sandbox-id", "BAD"), ("x-sandbox-port", "x")],
                "Invalid sandbox ID format.",
            ),
            (
                &[
                    ("x-sandbox-id", "s"),
                    ("x-sandbox-namespace", "N"),
                    ("x-sandbox-port", "x"),
                ],
                "Invalid namespace format.",
            ),
            (
                &[
                    ("x-sandbox-id", "s"),
                    ("x-sandbox-port", "x"),
                    ("x-sandbox-pod-ip", "::1"),
                ],
                "Invalid port format.",
            ),
            (
                &[
                    ("x-sandbox-id", "s"),
                    ("x-sandbox-pod-ip", "::ffff:127.0.0.1"),
                ],
                "Invalid target IP address.",
            ),
            (
                &[
                    ("x-sandbox-id", "s"),
                    ("x-sandbox-pod-ip", "::ffff:169.254.169.254"),
                ],
                "Invalid target IP address.",
            ),
            (
                &[("x-sandbox-id", "s"), ("x-sandbox-pod-ip", "10.0.0.1:80")],
                "Invalid target IP address.",
            ),
        ];
        for (pairs, want) in cases {
            let err = parse_target(&headers(pairs)).unwrap_err();
            assert_eq!(err.status, StatusCode::BAD_REQUEST, "{pairs:?}");
            assert_eq!(err.detail, *want, "{pairs:?}");
        }
        let ok = parse_target(&headers(&[
            ("x-sandbox-id", "s"),
            ("x-sandbox-namespace", "team-a"),
            ("x-sandbox-pod-ip", "fd00::5"),
        ]))
        .unwrap();
        assert_eq!(ok.namespace, "team-a");
        assert_eq!(ok.port, DEFAULT_PORT);
        assert_eq!(ok.pod_ip, Some("fd00::5".parse().unwrap()));
    }

    #[test]
    fn routable_pod_ips() {
        for (ip, ok) in [
            ("10.244.1.7", true),
            ("192.168.1.1", true),
            ("2001:db8::1", true),
            ("127.0.0.2", false),
            ("169.254.1.1", false),
            ("fe80::1", false),
            ("febf::1", false),
            ("fec0::1", true),
            ("239.1.1.1", false),
            ("ff05::1", false),
            ("0.0.0.0", false),
            ("::", false),
            ("::1", false),
            ("::ffff:10.0.0.1", true),
        ] {
            assert_eq!(is_routable_pod_ip(ip.parse().unwrap()), ok, "{ip}");
        }
    }

    #[test]
    fn upgrades_keep_connection_and_upgrade_only() {
        let h = headers(&[
            ("connection", "Upgrade, x-secret"),
            ("upgrade", "websocket"),
            ("x-secret", "1"),
            ("origin", "http://evil.example"),
            ("sec-websocket-key", "abc"),
        ]);
        assert!(is_upgrade(&h));
        let out = outbound_headers(&h, None, true);
        assert_eq!(out["connection"], "upgrade");
        assert_eq!(out["upgrade"], "websocket");
        assert_eq!(out["sec-websocket-key"], "abc");
        assert!(out.get("x-secret").is_none());
        assert!(out.get("origin").is_none());
        assert!(out.get("x-forwarded-for").is_none());
        assert!(!is_upgrade(&headers(&[("upgrade", "websocket")])));
        assert!(!is_upgrade(&headers(&[("connection", "upgrade")])));
    }
}
