//! Forwarding absolute-form HTTP/1.1 requests (`GET http://host:port/path`): the proxy checks
//! the target, connects to the screened address, and sends the request on in origin form with
//! hop-by-hop headers and proxy credentials removed. Bodies stream both ways, counted for the
//! audit record, which is written when both bodies are done.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::{PathAndQuery, Scheme};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;

use crate::host::TargetHost;
use crate::proxy::{Exchange, ProxyBody, Shared};
use crate::upstream::connect_upstream;

/// Headers that describe one connection, not the message: never forwarded (RFC 9110 §7.6.1),
/// with the proxy's own credentials and the legacy `Proxy-Connection`.
static HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("proxy-connection"),
    HeaderName::from_static("keep-alive"),
    header::PROXY_AUTHENTICATE,
    header::PROXY_AUTHORIZATION,
    header::TE,
    header::TRAILER,
    header::TRANSFER_ENCODING,
];

pub(crate) async fn forward(
    shared: Arc<Shared>,
    req: Request<Incoming>,
    mut exchange: Exchange,
) -> Response<ProxyBody> {
    let (host, port) = match absolute_target(req.uri()) {
        Ok(target) => target,
        Err(why) => return exchange.bad_request(why, false),
    };
    exchange.target(&host, port);
    let verdict = shared.policy.decide_target(&host, port);
    exchange.verdict(&verdict);
    if !verdict.is_allowed() {
        return exchange.denied(&host, port, &verdict.explanation, false);
    }
    let limit = shared.options.connect_timeout;
    let (stream, addr) =
        match connect_upstream(&shared.policy, &*shared.resolver, &host, port, limit).await {
            Ok(connected) => connected,
            Err(e) => return exchange.upstream_failed(&host, port, e, false),
        };
    exchange.event.address = Some(addr.to_string());

    let (mut parts, body) = req.into_parts();
    let host_header = host_header(&host, port, parts.uri.port().is_some());
    let origin = parts
        .uri
        .path_and_query()
        .cloned()
        .unwrap_or_else(|| PathAndQuery::from_static("/"));
    parts.uri = Uri::from(origin);
    parts.version = Version::HTTP_11;
    strip_hop_by_hop(&mut parts.headers);
    parts.headers.insert(header::HOST, host_header);

    let completion = Arc::new(Completion::new(exchange));
    let counter = Arc::clone(&completion);
    let body = body
        .map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                counter.up.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            frame
        })
        .boxed();
    let (mut sender, connection) =
        match hyper::client::conn::http1::handshake(TokioIo::new(stream)).await {
            Ok(pair) => pair,
            Err(e) => return completion.bad_gateway(&host, port, &e),
        };
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    let response = match sender.send_request(Request::from_parts(parts, body)).await {
        Ok(response) => response,
        Err(e) => return completion.bad_gateway(&host, port, &e),
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.version = Version::HTTP_11;
    completion.update(|exchange| exchange.event.status = parts.status.as_u16());
    let counter = completion;
    let body = body
        .map_frame(move |frame| {
            if let Some(data) = frame.data_ref() {
                counter.down.fetch_add(data.len() as u64, Ordering::Relaxed);
            }
            frame
        })
        .boxed();
    Response::from_parts(parts, body)
}

/// The host and port of an absolute-form request target, or why there is none.
fn absolute_target(uri: &Uri) -> Result<(TargetHost, u16), String> {
    let Some(scheme) = uri.scheme() else {
        return Err(format!(
            "`{uri}` is not a proxy request: this is an HTTP proxy, send the full URL \
             (GET http://host/path) or open a tunnel with CONNECT host:port; point HTTP_PROXY \
             and HTTPS_PROXY at this address"
        ));
    };
    if *scheme != Scheme::HTTP {
        return Err(format!(
            "only http:// URLs are forwarded; for {scheme}:// open a tunnel with CONNECT host:port \
             (set HTTPS_PROXY)"
        ));
    }
    let authority = uri
        .authority()
        .ok_or_else(|| format!("`{uri}` has no host"))?;
    let host = TargetHost::parse(authority.host()).map_err(|e| e.to_string())?;
    Ok((host, authority.port_u16().unwrap_or(80)))
}

/// `Host` for the upstream request: the target's authority without user information, the port
/// written only if the client wrote one.
fn host_header(host: &TargetHost, port: u16, explicit_port: bool) -> HeaderValue {
    let text = if explicit_port {
        format!("{host}:{port}")
    } else {
        host.to_string()
    };
    // A parsed TargetHost holds only letters, digits, `-`, `_`, `.`, `:` and brackets.
    HeaderValue::try_from(text).unwrap_or_else(|_| HeaderValue::from_static("invalid"))
}

/// Removes hop-by-hop headers, including those a `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .filter_map(|name| HeaderName::from_bytes(name.trim().as_bytes()).ok())
        .collect();
    for name in named.iter().chain(HOP_BY_HOP.iter()) {
        headers.remove(name);
    }
    headers.remove(header::UPGRADE);
}

/// The audit record of a forwarded request, written when its last holder (the proxy, the
/// request body, the response body) lets go, so that the byte counts are final.
struct Completion {
    exchange: Mutex<Option<Exchange>>,
    up: AtomicU64,
    down: AtomicU64,
}

impl Completion {
    fn new(exchange: Exchange) -> Self {
        Completion {
            exchange: Mutex::new(Some(exchange)),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
        }
    }

    fn update(&self, change: impl FnOnce(&mut Exchange)) {
        let mut guard = self.exchange.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(exchange) = guard.as_mut() {
            change(exchange);
        }
    }

    fn bad_gateway(
        &self,
        host: &TargetHost,
        port: u16,
        error: &hyper::Error,
    ) -> Response<ProxyBody> {
        let status = StatusCode::BAD_GATEWAY;
        self.update(|exchange| {
            exchange.event.status = status.as_u16();
            exchange.event.error = Some(format!("upstream: {error}"));
        });
        crate::proxy::text_response(
            status,
            format!("warden: {host}:{port}: the upstream failed: {error}\n"),
            false,
        )
    }
}

impl Drop for Completion {
    fn drop(&mut self) {
        let taken = self
            .exchange
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(mut exchange) = taken {
            exchange.event.bytes_up = *self.up.get_mut();
            exchange.event.bytes_down = *self.down.get_mut();
            if exchange.event.status == 0 {
                exchange.event.error.get_or_insert_with(|| {
                    "unfinished: the client left before the upstream answered".to_string()
                });
            }
            exchange.finish();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absolute_targets() {
        let ok = |uri: &str| absolute_target(&uri.parse().unwrap()).unwrap();
        assert_eq!(
            ok("http://Example.com/x"),
            (TargetHost::parse("example.com").unwrap(), 80)
        );
        assert_eq!(
            ok("http://example.com:8080/"),
            (TargetHost::parse("example.com").unwrap(), 8080)
        );
        assert_eq!(
            ok("http://user:pw@example.com"),
            (TargetHost::parse("example.com").unwrap(), 80)
        );
        assert_eq!(
            ok("http://[::1]:81/"),
            (TargetHost::parse("::1").unwrap(), 81)
        );

        let err = |uri: &str| absolute_target(&uri.parse().unwrap()).unwrap_err();
        assert!(err("/index.html").contains("not a proxy request"));
        assert!(err("*").contains("not a proxy request"));
        assert!(err("https://example.com/").contains("CONNECT"));
        assert!(err("http://127.1/").contains("numeric"));
    }

    #[test]
    fn host_header_keeps_an_explicit_port_only() {
        let host = TargetHost::parse("example.com").unwrap();
        assert_eq!(host_header(&host, 80, false), "example.com");
        assert_eq!(host_header(&host, 8080, true), "example.com:8080");
        let v6 = TargetHost::parse("[::1]").unwrap();
        assert_eq!(host_header(&v6, 81, true), "[::1]:81");
    }

    #[test]
    fn strips_hop_by_hop_and_connection_named_headers() {
        let mut headers = HeaderMap::new();
        for (name, value) in [
            ("connection", "keep-alive, X-Secret-Hop"),
            ("connection", "x-other-hop"),
            ("keep-alive", "timeout=5"),
            ("proxy-connection", "keep-alive"),
            ("proxy-authorization", "Basic Zm9vOmJhcg=="),
            ("proxy-authenticate", "Basic"),
            ("te", "trailers"),
            ("trailer", "x-checksum"),
            ("transfer-encoding", "chunked"),
            ("upgrade", "websocket"),
            ("x-secret-hop", "1"),
            ("x-other-hop", "1"),
            ("authorization", "Bearer end-to-end"),
            ("accept", "*/*"),
            ("content-length", "3"),
        ] {
            headers.append(name, HeaderValue::from_static(value));
        }
        strip_hop_by_hop(&mut headers);
        let mut left: Vec<&str> = headers.keys().map(HeaderName::as_str).collect();
        left.sort_unstable();
        assert_eq!(left, ["accept", "authorization", "content-length"]);
    }
}
