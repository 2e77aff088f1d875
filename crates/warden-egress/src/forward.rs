//! Forwarding absolute-form HTTP/1.1 requests (`GET http://host:port/path`): the proxy checks
//! the target, takes a kept-alive connection to it from the pool or connects to the screened
//! address, and sends the request on in origin form with hop-by-hop headers and proxy
//! credentials removed. Bodies stream both ways, counted for the audit record, which is
//! written when both bodies are done. A connection goes back to the pool only after its
//! response has been read to the end; a request body that stalls for longer than
//! [`body_read_timeout`](crate::ProxyOptions::body_read_timeout) abandons the request.

use std::error::Error as _;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::BodyExt;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::header::{self, HeaderMap, HeaderName, HeaderValue};
use hyper::http::uri::{PathAndQuery, Scheme};
use hyper::{Request, Response, StatusCode, Uri, Version};
use hyper_util::rt::TokioIo;
use tokio::time::{Instant, Sleep};

use crate::host::TargetHost;
use crate::proxy::{Exchange, ProxyBody, Shared};
use crate::upstream::{
    ConnectionPool, PoolKey, UpstreamConnection, UpstreamError, connect_upstream,
};

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

/// hyper refuses a smaller read buffer limit.
const MIN_BUF_BYTES: usize = 8 * 1024;

/// The pool of kept-alive upstream connections forwarding uses.
pub(crate) type UpstreamPool = ConnectionPool<RequestBody>;

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
    let key = PoolKey::new(host, port);
    let mut upstream = match shared.pool.checkout(&key) {
        Some(pooled) => pooled,
        None => match dial(&shared, &key).await {
            Ok(dialled) => dialled,
            Err(e) => return exchange.upstream_failed(key.host(), port, e, false),
        },
    };
    exchange.event.address = Some(upstream.addr.to_string());

    let (mut parts, body) = req.into_parts();
    let host_header = host_header(key.host(), port, parts.uri.port().is_some());
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
    let body = RequestBody {
        inner: body,
        completion: Arc::clone(&completion),
        limit: shared.options.body_read_timeout,
        stall: None,
        armed: false,
    };
    let mut request = Request::from_parts(parts, body);
    let response = loop {
        match upstream.sender.try_send_request(request).await {
            Ok(response) => break response,
            Err(mut failed) => match failed.take_message() {
                // A kept-alive connection that closed before it took the request (the
                // upstream's own idle close crossed it): the request was not sent, so it
                // goes out once more on a fresh connection.
                Some(unsent) if upstream.reused => {
                    request = unsent;
                    upstream = match dial(&shared, &key).await {
                        Ok(dialled) => dialled,
                        Err(e) => return completion.upstream_failed(key.host(), port, e),
                    };
                    let addr = upstream.addr;
                    completion.update(|exchange| exchange.event.address = Some(addr.to_string()));
                }
                _ => return completion.send_failed(key.host(), port, &failed.into_error()),
            },
        }
    };
    let (mut parts, body) = response.into_parts();
    strip_hop_by_hop(&mut parts.headers);
    parts.version = Version::HTTP_11;
    completion.update(|exchange| exchange.event.status = parts.status.as_u16());
    let mut body = ResponseBody {
        inner: body,
        completion,
        release: Some(Release {
            pool: shared.pool.clone(),
            key,
            upstream,
        }),
    };
    if body.inner.is_end_stream() {
        // hyper may never poll an empty body: the exchange is complete now.
        body.release();
    }
    Response::from_parts(parts, body.boxed())
}

/// Resolves, screens and connects to `key`'s target, and starts HTTP/1.1 on the connection.
async fn dial(
    shared: &Shared,
    key: &PoolKey,
) -> Result<UpstreamConnection<RequestBody>, UpstreamError> {
    let options = &shared.options;
    let (stream, addr) = connect_upstream(
        &shared.policy,
        &*shared.resolver,
        key.host(),
        key.port(),
        options.connect_timeout,
    )
    .await?;
    let (sender, connection) = hyper::client::conn::http1::Builder::new()
        // The same bound on a response head as on a request head.
        .max_buf_size(options.max_header_bytes.max(MIN_BUF_BYTES))
        .handshake(TokioIo::new(stream))
        .await
        .map_err(|e| UpstreamError::Connect {
            addr,
            source: std::io::Error::other(e),
        })?;
    tokio::spawn(async move {
        if let Err(e) = connection.await {
            tracing::debug!(error = %e, "upstream connection ended with an error");
        }
    });
    Ok(UpstreamConnection {
        sender,
        addr,
        reused: false,
    })
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
pub(crate) fn strip_hop_by_hop(headers: &mut HeaderMap) {
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

/// Why a request body stopped before its end.
#[derive(Debug, thiserror::Error)]
pub(crate) enum RequestBodyError {
    #[error("reading the request body from the client failed: {0}")]
    Client(#[source] hyper::Error),
    #[error("the client sent no more of the request body for {0:?}")]
    Stalled(Duration),
}

/// The client's request body on its way upstream: counted, and abandoned if the client stops
/// sending it for longer than the limit.
pub(crate) struct RequestBody {
    inner: Incoming,
    completion: Arc<Completion>,
    limit: Duration,
    /// Created the first time the client makes the proxy wait.
    stall: Option<Pin<Box<Sleep>>>,
    /// Whether `stall` counts from the current wait.
    armed: bool,
}

impl Body for RequestBody {
    type Data = Bytes;
    type Error = RequestBodyError;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, RequestBodyError>>> {
        let this = self.get_mut();
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                this.armed = false;
                if let Some(data) = frame.data_ref() {
                    this.completion
                        .up
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(RequestBodyError::Client(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => {
                let deadline = Instant::now() + this.limit;
                let stall = this
                    .stall
                    .get_or_insert_with(|| Box::pin(tokio::time::sleep_until(deadline)));
                if !this.armed {
                    stall.as_mut().reset(deadline);
                    this.armed = true;
                }
                match stall.as_mut().poll(cx) {
                    Poll::Ready(()) => {
                        Poll::Ready(Some(Err(RequestBodyError::Stalled(this.limit))))
                    }
                    Poll::Pending => Poll::Pending,
                }
            }
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The upstream's response body on its way to the client: counted, and when it has been read
/// to the end, its connection goes back to the pool.
struct ResponseBody {
    inner: Incoming,
    completion: Arc<Completion>,
    release: Option<Release>,
}

struct Release {
    pool: UpstreamPool,
    key: PoolKey,
    upstream: UpstreamConnection<RequestBody>,
}

impl ResponseBody {
    fn release(&mut self) {
        if let Some(Release {
            pool,
            key,
            upstream,
        }) = self.release.take()
        {
            pool.put(key, upstream.sender, upstream.addr);
        }
    }
}

impl Body for ResponseBody {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_frame(cx);
        match &polled {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.completion
                        .down
                        .fetch_add(data.len() as u64, Ordering::Relaxed);
                }
                if this.inner.is_end_stream() {
                    this.release();
                }
            }
            Poll::Ready(None) => this.release(),
            // A broken response leaves its connection unusable: dropping it closes it.
            Poll::Ready(Some(Err(_))) => this.release = None,
            Poll::Pending => {}
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// The audit record of a forwarded request, written when its last holder (the proxy, the
/// request body, the response body) lets go, so that the byte counts are final.
pub(crate) struct Completion {
    exchange: Mutex<Option<Exchange>>,
    pub(crate) up: AtomicU64,
    pub(crate) down: AtomicU64,
}

impl Completion {
    pub(crate) fn new(exchange: Exchange) -> Self {
        Completion {
            exchange: Mutex::new(Some(exchange)),
            up: AtomicU64::new(0),
            down: AtomicU64::new(0),
        }
    }

    pub(crate) fn update(&self, change: impl FnOnce(&mut Exchange)) {
        let mut guard = self.exchange.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(exchange) = guard.as_mut() {
            change(exchange);
        }
    }

    pub(crate) fn bad_gateway(
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

    /// The answer when sending the request failed: 408 if the client's body stalled, else 502.
    fn send_failed(
        &self,
        host: &TargetHost,
        port: u16,
        error: &hyper::Error,
    ) -> Response<ProxyBody> {
        let Some(limit) = stalled_body(error) else {
            return self.bad_gateway(host, port, error);
        };
        let status = StatusCode::REQUEST_TIMEOUT;
        let why = RequestBodyError::Stalled(limit).to_string();
        let text = format!("warden: {why}; the request to {host}:{port} was abandoned\n");
        self.update(|exchange| {
            exchange.event.status = status.as_u16();
            exchange.event.error = Some(why);
        });
        // hyper closes the connection anyway: the rest of the body was never read.
        crate::proxy::text_response(status, text, true)
    }

    /// The answer when no (second) upstream connection could be made; the exchange is
    /// recorded with it.
    fn upstream_failed(
        &self,
        host: &TargetHost,
        port: u16,
        error: UpstreamError,
    ) -> Response<ProxyBody> {
        let taken = self
            .exchange
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        match taken {
            Some(exchange) => exchange.upstream_failed(host, port, error, false),
            None => crate::proxy::text_response(
                StatusCode::BAD_GATEWAY,
                format!("warden: {host}:{port}: {error}\n"),
                false,
            ),
        }
    }
}

/// The limit a stalled request body exceeded, if that is why `error` happened.
fn stalled_body(error: &hyper::Error) -> Option<Duration> {
    let mut source = error.source();
    while let Some(cause) = source {
        if let Some(RequestBodyError::Stalled(limit)) = cause.downcast_ref::<RequestBodyError>() {
            return Some(*limit);
        }
        source = cause.source();
    }
    None
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
