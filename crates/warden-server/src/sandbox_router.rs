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
//!
//! Over the Kubernetes driver (`warden serve --driver kubernetes`) the same contract holds
//! with the driver's namespace in place of `default`: `connect_runtime` connects to the
//! cluster's router, and [`Driver::runtime_route`](warden_sandbox::Driver::runtime_route)
//! gives the headers that name the sandbox there (the caller's `X-Sandbox-*` are replaced).

use std::net::SocketAddr;

use axum::body::Body;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use warden_policy::sandbox_router as contract;
use warden_sandbox::RuntimeConn;

use crate::AppState;

pub use contract::{
    DEFAULT_PORT, HEADER_ID, HEADER_NAMESPACE, HEADER_POD_IP, HEADER_PORT, HOP_BY_HOP, Target,
    is_upgrade, outbound_headers,
};

/// The namespace a local sandbox lives in.
pub const NAMESPACE: &str = contract::DEFAULT_NAMESPACE;

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

impl From<contract::RouterError> for RouterError {
    fn from(e: contract::RouterError) -> RouterError {
        RouterError {
            status: e.status,
            detail: e.detail,
        }
    }
}

impl RouterError {
    /// 502 `Could not connect to the backend sandbox: <id>`.
    pub fn unreachable(id: &str) -> RouterError {
        contract::RouterError::unreachable(id).into()
    }

    fn timeout(id: &str) -> RouterError {
        contract::RouterError::timeout(id).into()
    }

    pub fn unauthenticated() -> RouterError {
        contract::RouterError::unauthenticated().into()
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

/// Validates the routing headers exactly like the upstream router, in its order.
pub fn parse_target(h: &HeaderMap) -> Result<Target, RouterError> {
    contract::parse_target(h).map_err(RouterError::from)
}

/// Forwards a request that carries `X-Sandbox-ID` (auth already checked).
pub async fn forward(state: AppState, mut req: Request) -> Response {
    let target = match parse_target(req.headers()) {
        Ok(t) => t,
        Err(e) => return e.into_response(),
    };
    // Locally the `default` namespace and no headers; through the Kubernetes driver, its
    // namespace and the headers that name the sandbox to the cluster's router.
    let route = state.driver().runtime_route(&target.id, target.port);
    if target.namespace != route.namespace {
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
        add_route_headers(h, &route.headers);
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

/// Puts the driver's routing headers on a request, after dropping the caller's own
/// `X-Sandbox-*` ones: only the driver names the target behind its router.
fn add_route_headers(h: &mut HeaderMap, route: &[(String, String)]) {
    if route.is_empty() {
        return;
    }
    let callers: Vec<header::HeaderName> = h
        .keys()
        .filter(|k| k.as_str().starts_with("x-sandbox-"))
        .cloned()
        .collect();
    for k in callers {
        h.remove(k);
    }
    for (k, v) in route {
        match (
            header::HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            (Ok(k), Ok(mut v)) => {
                if k == header::AUTHORIZATION {
                    v.set_sensitive(true);
                }
                h.insert(k, v);
            }
            _ => tracing::warn!(header = %k, "router: the driver's header is not valid; left out"),
        }
    }
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
    use axum::http::HeaderName;

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
    fn route_headers_replace_the_callers_sandbox_headers() {
        let mut h = headers(&[
            ("x-sandbox-id", "s"),
            ("x-sandbox-pod-ip", "10.9.9.9"),
            ("x-sandbox-timeout", "5"),
            ("content-type", "application/json"),
        ]);
        let untouched = h.clone();
        add_route_headers(&mut h, &[]);
        assert_eq!(h, untouched, "no route headers: nothing changes");
        add_route_headers(
            &mut h,
            &[
                ("x-sandbox-id".into(), "s".into()),
                ("x-sandbox-namespace".into(), "team".into()),
                ("authorization".into(), "Bearer t".into()),
            ],
        );
        assert!(h.get("x-sandbox-pod-ip").is_none());
        assert!(h.get("x-sandbox-timeout").is_none());
        assert_eq!(h["x-sandbox-id"], "s");
        assert_eq!(h["x-sandbox-namespace"], "team");
        assert_eq!(h["authorization"], "Bearer t");
        assert_eq!(h["content-type"], "application/json");
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
