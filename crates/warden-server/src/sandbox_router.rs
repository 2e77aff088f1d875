//! The router contract of kubernetes-sigs/agent-sandbox, served locally: a request carrying
//! `X-Sandbox-ID` goes to that sandbox's runtime server, with the upstream router's
//! validation, header handling and `{"detail": "..."}` errors.
//!
//! Routing is by header first: any request with `X-Sandbox-ID`, whatever its path (the
//! sandboxd REST protocol itself lives under `/v1/files/...`), is forwarded; requests without
//! it go to warden's own API. Differences from the cluster router, by design:
//! - `X-Sandbox-Namespace` other than `default` gets the answer the cluster router gives for
//!   a sandbox that does not exist in a namespace (its DNS lookup fails): 502
//!   `Could not connect to the backend sandbox: <id>`. So does an unknown sandbox id.
//! - `X-Sandbox-Pod-IP` is validated like upstream (400 `Invalid target IP address.`) but
//!   never dialled: locally a sandbox is found by its id only, so the header cannot turn the
//!   server into a way to reach other addresses.
//! - The bearer token is required as on every route; `Authorization` is stripped before
//!   forwarding, like upstream.
//! - A backend that does not send its response head within the router timeout (180 s, the
//!   upstream default) gets 504 `Timed out waiting for the backend sandbox: <id>`.

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use warden_sandbox::RuntimeConn;

use crate::AppState;

pub const HEADER_ID: &str = "x-sandbox-id";
pub const HEADER_NAMESPACE: &str = "x-sandbox-namespace";
pub const HEADER_PORT: &str = "x-sandbox-port";
pub const HEADER_POD_IP: &str = "x-sandbox-pod-ip";

/// The namespace a local sandbox lives in.
pub const NAMESPACE: &str = "default";
/// The port when `X-Sandbox-Port` is absent (legacy REST).
pub const DEFAULT_PORT: u16 = 8888;

/// Where a request should go, once its headers are valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub id: String,
    pub namespace: String,
    pub port: u16,
    pub pod_ip: Option<IpAddr>,
}

/// An error in the upstream router's shape.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterError {
    pub status: StatusCode,
    pub detail: String,
}

#[derive(Serialize)]
struct Detail<'a> {
    detail: &'a str,
}

impl RouterError {
    fn bad_request(detail: &str) -> RouterError {
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

    fn timeout(id: &str) -> RouterError {
        RouterError {
            status: StatusCode::GATEWAY_TIMEOUT,
            detail: format!("Timed out waiting for the backend sandbox: {id}"),
        }
    }

    pub fn unauthenticated() -> RouterError {
        RouterError {
            status: StatusCode::UNAUTHORIZED,
            detail: "Missing or wrong bearer token: send `Authorization: Bearer <token>`.".into(),
        }
    }
}

impl IntoResponse for RouterError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            axum::Json(Detail {
                detail: &self.detail,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

pub use warden_policy::is_dns_label;

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    // A header that is not visible ASCII counts as present but invalid.
    h.get(name).map(|v| v.to_str().unwrap_or("\u{fffd}"))
}

/// Validates the routing headers exactly like the upstream router, in its order.
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
        None | Some("") => NAMESPACE,
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
            Ok(ip) if routable(ip) => Some(ip),
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

/// Not loopback, link-local, multicast or unspecified.
fn routable(ip: IpAddr) -> bool {
    match ip {
        IpAddr::V4(v4) => {
            !(v4.is_loopback() || v4.is_link_local() || v4.is_multicast() || v4.is_unspecified())
        }
        IpAddr::V6(v6) => {
            let link_local = (v6.segments()[0] & 0xffc0) == 0xfe80;
            !(v6.is_loopback() || link_local || v6.is_multicast() || v6.is_unspecified())
        }
    }
}

/// Hop-by-hop headers, never forwarded (RFC 9110 7.6.1); `Connection`/`Upgrade` are put
/// back for upgrades.
const HOP_BY_HOP: [&str; 8] = [
    "connection",
    "keep-alive",
    "proxy-authenticate",
    "proxy-authorization",
    "te",
    "trailer",
    "transfer-encoding",
    "upgrade",
];

fn is_upgrade(h: &HeaderMap) -> bool {
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
    let named_by_connection: Vec<String> = inbound
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .map(|t| t.trim().to_ascii_lowercase())
        .filter(|t| !t.is_empty() && t != "upgrade")
        .collect();
    let mut out = HeaderMap::new();
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

/// Forwards a request that carries `X-Sandbox-ID` (auth already checked).
pub async fn forward(state: AppState, mut req: Request) -> Response {
    let target = match parse_target(req.headers()) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    if target.namespace != NAMESPACE {
        return RouterError::unreachable(&target.id).into_response();
    }
    let timeout = state.router_timeout();
    let upgrade = is_upgrade(req.headers());
    let peer = req
        .extensions()
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0);
    let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));

    let conn = match tokio::time::timeout(
        timeout,
        state.driver().connect_runtime(&target.id, target.port),
    )
    .await
    {
        Ok(Ok(c)) => c,
        Ok(Err(e)) => {
            tracing::debug!(sandbox = %target.id, error = %e, "router: connect failed");
            return RouterError::unreachable(&target.id).into_response();
        }
        Err(_) => return RouterError::timeout(&target.id).into_response(),
    };
    let (parts, body) = req.into_parts();
    let path = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str().to_string())
        .unwrap_or_else(|| "/".into());
    let mut out = axum::http::Request::builder()
        .method(parts.method.clone())
        .uri(path)
        .version(axum::http::Version::HTTP_11);
    if let Some(h) = out.headers_mut() {
        *h = outbound_headers(&parts.headers, peer, upgrade);
        h.insert(header::HOST, HeaderValue::from_static("localhost"));
    }
    let out = match out.body(body) {
        Ok(r) => r,
        Err(e) => return crate::error::ApiError::internal(e).into_response(),
    };
    let send = async {
        let mut sender = match conn {
            RuntimeConn::Unix(s) => handshake(s).await?,
            RuntimeConn::Tcp(s) => handshake(s).await?,
        };
        sender.send_request(out).await
    };
    let resp = match tokio::time::timeout(timeout, send).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::debug!(sandbox = %target.id, error = %e, "router: backend failed");
            return RouterError::unreachable(&target.id).into_response();
        }
        Err(_) => return RouterError::timeout(&target.id).into_response(),
    };
    if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
        let Some(client_upgrade) = client_upgrade else {
            return RouterError::unreachable(&target.id).into_response();
        };
        let mut resp = resp;
        let backend_upgrade = hyper::upgrade::on(&mut resp);
        let id = target.id.clone();
        tokio::spawn(async move {
            let (Ok(client), Ok(backend)) = (client_upgrade.await, backend_upgrade.await) else {
                tracing::debug!(sandbox = %id, "router: upgrade did not complete");
                return;
            };
            let mut client = TokioIo::new(client);
            let mut backend = TokioIo::new(backend);
            let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
        });
        let (parts, _) = resp.into_parts();
        return Response::from_parts(parts, Body::empty());
    }
    let (mut parts, body) = resp.into_parts();
    for h in HOP_BY_HOP {
        parts.headers.remove(h);
    }
    Response::from_parts(parts, Body::new(body))
}

async fn handshake<S>(
    stream: S,
) -> Result<hyper::client::conn::http1::SendRequest<Body>, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(async move {
        let _ = conn.with_upgrades().await;
    });
    Ok(sender)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    fn detail(pairs: &[(&str, &str)]) -> String {
        parse_target(&headers(pairs)).unwrap_err().detail
    }

    #[test]
    fn upstream_validation_messages() {
        assert_eq!(detail(&[]), "X-Sandbox-ID header is required.");
        assert_eq!(
            detail(&[("x-sandbox-id", "")]),
            "X-Sandbox-ID header is required."
        );
        for bad in [
            "Upper",
            "-a",
            "a-",
            "a.b",
            "a/b",
            "..",
            &"a".repeat(64),
            "a_b",
        ] {
            assert_eq!(
                detail(&[("x-sandbox-id", bad)]),
                "Invalid sandbox ID format.",
                "{bad}"
            );
        }
        for bad in ["NS", "-ns", "a.b", "x_y"] {
            assert_eq!(
                detail(&[("x-sandbox-id", "s"), ("x-sandbox-namespace", bad)]),
                "Invalid namespace format."
            );
        }
        for bad in ["0", "65536", "-1", "80a", "http", "1.5"] {
            assert_eq!(
                detail(&[("x-sandbox-id", "s"), ("x-sandbox-port", bad)]),
                "Invalid port format.",
                "{bad}"
            );
        }
        for bad in [
            "127.0.0.1",
            "::1",
            "169.254.169.254",
            "fe80::1",
            "224.0.0.1",
            "ff02::1",
            "0.0.0.0",
            "::",
            "not-an-ip",
        ] {
            assert_eq!(
                detail(&[("x-sandbox-id", "s"), ("x-sandbox-pod-ip", bad)]),
                "Invalid target IP address.",
                "{bad}"
            );
        }
        let t = parse_target(&headers(&[
            ("x-sandbox-id", "sbx-1"),
            ("x-sandbox-port", "8080"),
            ("x-sandbox-pod-ip", "10.1.2.3"),
        ]))
        .unwrap();
        assert_eq!(t.id, "sbx-1");
        assert_eq!(t.namespace, "default");
        assert_eq!(t.port, 8080);
        assert_eq!(t.pod_ip, Some("10.1.2.3".parse().unwrap()));
        let t = parse_target(&headers(&[("x-sandbox-id", "a".repeat(63).as_str())])).unwrap();
        assert_eq!(t.port, 8888);
    }

    #[test]
    fn outbound_headers_strip_credentials_and_set_forwarded() {
        let h = headers(&[
            ("host", "warden.local:7070"),
            ("authorization", "Bearer secret"),
            ("x-forwarded-for", "6.6.6.6"),
            ("connection", "keep-alive, x-private"),
            ("x-private", "1"),
            ("keep-alive", "timeout=5"),
            ("x-sandbox-id", "s"),
            ("content-type", "application/json"),
        ]);
        let out = outbound_headers(&h, Some("127.0.0.9:5555".parse().unwrap()), false);
        assert!(out.get("authorization").is_none());
        assert!(out.get("host").is_none());
        assert!(out.get("x-private").is_none());
        assert!(out.get("keep-alive").is_none());
        assert!(out.get("connection").is_none());
        assert_eq!(out["x-forwarded-for"], "127.0.0.9");
        assert_eq!(out["x-forwarded-host"], "warden.local:7070");
        assert_eq!(out["x-forwarded-proto"], "http");
        assert_eq!(out["x-sandbox-id"], "s");
        assert_eq!(out["content-type"], "application/json");
    }
}
