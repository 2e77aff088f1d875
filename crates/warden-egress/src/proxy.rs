//! The proxy server: accepts client connections, speaks HTTP/1.1 to them through hyper, and
//! sends each request down one of two paths, absolute-form forwarding ([`crate::forward`]) or
//! CONNECT tunnels ([`crate::tunnel`]), after the policy has judged it. Owns the listener, the
//! per-connection limits (header size, header read timeout), the answers the proxy itself
//! gives (400, 403, 502, 504), and the audit record each request produces.

use std::convert::Infallible;
use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Empty, Full};
use hyper::body::Incoming;
use hyper::header::{CONNECTION, CONTENT_TYPE, HeaderValue};
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};
use tracing::Instrument;

use crate::audit::{AuditEvent, AuditSink, rfc3339};
use crate::forward::UpstreamPool;
use crate::host::TargetHost;
use crate::policy::{Decision, EgressPolicy, Verdict};
use crate::route::Routes;
use crate::screen::AddressClass;
use crate::tunnel::TunnelJob;
use crate::upstream::{CachingResolver, Resolve, SystemResolver, UpstreamError};

/// The body type of every response the proxy sends.
pub(crate) type ProxyBody = BoxBody<Bytes, hyper::Error>;

/// hyper refuses a smaller read buffer; it is also the floor for `max_header_bytes`.
const MIN_HEADER_BYTES: usize = 8 * 1024;

/// Per-proxy settings other than the policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyOptions {
    /// Written into every audit event.
    pub sandbox_id: String,
    /// A client must finish sending a request head within this time, counted from when the
    /// proxy starts waiting for it (connection start, or the end of the previous response);
    /// otherwise the connection is closed. This is also how long a kept-alive client
    /// connection may sit idle between requests. Default 10 s.
    pub header_read_timeout: Duration,
    /// The longest a client may pause while sending a request body; then the request is
    /// abandoned with 408 and the connection closed. Default 60 s.
    pub body_read_timeout: Duration,
    /// The largest request head accepted; a bigger one gets 431. It also bounds an upstream's
    /// response head (a bigger one gets 502) and so the read buffer of every connection. At
    /// least 8 KiB. Default 64 KiB.
    pub max_header_bytes: usize,
    /// Limit for resolving and connecting to an upstream. Default 10 s.
    pub connect_timeout: Duration,
    /// How long the proxy keeps the system resolver's answer for a name, so that a client
    /// opening many connections to one host does not wait for a lookup each time. Every
    /// connection still screens the address it dials. Zero asks every time. A resolver given
    /// with [`Proxy::with_resolver`] is used as it is. Default 30 s.
    pub dns_cache_ttl: Duration,
    /// A kept-alive upstream connection unused for this long is closed; zero keeps none.
    /// Default 60 s.
    pub upstream_idle_timeout: Duration,
    /// A CONNECT tunnel that carries no byte either way for this long is closed. Default
    /// 10 min.
    pub tunnel_idle_timeout: Duration,
    /// The most client connections (tunnels included) served at once. One more is answered
    /// 503 and closed straight away. At least 1. Default 1024.
    pub max_connections: usize,
}

impl ProxyOptions {
    pub fn new(sandbox_id: impl Into<String>) -> Self {
        ProxyOptions {
            sandbox_id: sandbox_id.into(),
            header_read_timeout: Duration::from_secs(10),
            body_read_timeout: Duration::from_secs(60),
            max_header_bytes: 64 * 1024,
            connect_timeout: Duration::from_secs(10),
            dns_cache_ttl: Duration::from_secs(30),
            upstream_idle_timeout: Duration::from_secs(60),
            tunnel_idle_timeout: Duration::from_secs(600),
            max_connections: 1024,
        }
    }

    pub fn header_read_timeout(mut self, limit: Duration) -> Self {
        self.header_read_timeout = limit;
        self
    }

    pub fn max_header_bytes(mut self, bytes: usize) -> Self {
        self.max_header_bytes = bytes;
        self
    }

    pub fn connect_timeout(mut self, limit: Duration) -> Self {
        self.connect_timeout = limit;
        self
    }

    pub fn dns_cache_ttl(mut self, ttl: Duration) -> Self {
        self.dns_cache_ttl = ttl;
        self
    }

    pub fn body_read_timeout(mut self, limit: Duration) -> Self {
        self.body_read_timeout = limit;
        self
    }

    pub fn upstream_idle_timeout(mut self, limit: Duration) -> Self {
        self.upstream_idle_timeout = limit;
        self
    }

    pub fn tunnel_idle_timeout(mut self, limit: Duration) -> Self {
        self.tunnel_idle_timeout = limit;
        self
    }

    pub fn max_connections(mut self, connections: usize) -> Self {
        self.max_connections = connections;
        self
    }
}

/// What every connection task shares.
pub(crate) struct Shared {
    pub(crate) policy: EgressPolicy,
    pub(crate) options: ProxyOptions,
    pub(crate) audit: Arc<dyn AuditSink>,
    pub(crate) resolver: Arc<dyn Resolve>,
    pub(crate) routes: Routes,
    /// Kept-alive upstream connections for forwarded requests.
    pub(crate) pool: UpstreamPool,
}

/// A bound, not yet serving, egress proxy.
pub struct Proxy {
    listener: TcpListener,
    local_addr: SocketAddr,
    shared: Shared,
}

impl fmt::Debug for Proxy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Proxy")
            .field("local_addr", &self.local_addr)
            .field("policy", &self.shared.policy)
            .field("options", &self.shared.options)
            .finish_non_exhaustive()
    }
}

impl Proxy {
    /// Binds the listening socket (`127.0.0.1:0` picks a free port; see
    /// [`local_addr`](Self::local_addr)). Nothing is served until [`serve`](Self::serve) or
    /// [`spawn`](Self::spawn).
    pub async fn bind(
        addr: SocketAddr,
        policy: EgressPolicy,
        audit: Arc<dyn AuditSink>,
        options: ProxyOptions,
    ) -> io::Result<Proxy> {
        Proxy::serving(TcpListener::bind(addr).await?, policy, audit, options)
    }

    /// Serves an already listening socket, such as the one a sandbox's init opens on the
    /// sandbox's own loopback and hands over (warden-jail's egress bridge). Must be called
    /// inside a tokio runtime.
    pub fn from_listener(
        listener: std::net::TcpListener,
        policy: EgressPolicy,
        audit: Arc<dyn AuditSink>,
        options: ProxyOptions,
    ) -> io::Result<Proxy> {
        listener.set_nonblocking(true)?;
        Proxy::serving(TcpListener::from_std(listener)?, policy, audit, options)
    }

    fn serving(
        listener: TcpListener,
        policy: EgressPolicy,
        audit: Arc<dyn AuditSink>,
        options: ProxyOptions,
    ) -> io::Result<Proxy> {
        let local_addr = listener.local_addr()?;
        let pool = UpstreamPool::new(options.upstream_idle_timeout);
        let resolver = Arc::new(CachingResolver::new(SystemResolver, options.dns_cache_ttl));
        Ok(Proxy {
            listener,
            local_addr,
            shared: Shared {
                pool,
                policy,
                options,
                audit,
                resolver,
                routes: Routes::default(),
            },
        })
    }

    /// Replaces the system resolver (for tests, or a resolver that answers only some names).
    /// It is asked for every upstream connection: the proxy's cache is not put in front of it.
    pub fn with_resolver(mut self, resolver: Arc<dyn Resolve>) -> Self {
        self.shared.resolver = resolver;
        self
    }

    /// Serves credential routes besides forwarding (see [`Routes`]).
    pub fn with_routes(mut self, routes: Routes) -> Self {
        self.shared.routes = routes;
        self
    }

    /// The address the proxy listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Accepts and serves connections until this future is dropped; dropping it closes every
    /// open connection and tunnel.
    pub async fn serve(self) {
        let Proxy {
            listener, shared, ..
        } = self;
        let shared = Arc::new(shared);
        let limit = shared
            .options
            .max_connections
            .clamp(1, Semaphore::MAX_PERMITS);
        let slots = Arc::new(Semaphore::new(limit));
        let mut last_refusal_logged: Option<Instant> = None;
        let mut connections = JoinSet::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok((stream, peer)) => {
                        let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                            refuse_busy(stream, limit);
                            // Sandboxed code can trigger this: log it at most every 10 s.
                            let quiet = Duration::from_secs(10);
                            if last_refusal_logged.is_none_or(|at| at.elapsed() >= quiet) {
                                last_refusal_logged = Some(Instant::now());
                                tracing::warn!(
                                    limit,
                                    "egress proxy at its connection limit; answering 503"
                                );
                            }
                            continue;
                        };
                        let _ = stream.set_nodelay(true);
                        let shared = Arc::clone(&shared);
                        let span = tracing::debug_span!("egress_connection", %peer);
                        connections.spawn(
                            async move {
                                serve_connection(shared, stream).await;
                                drop(slot);
                            }
                            .instrument(span),
                        );
                    }
                    Err(e) => {
                        // Out of descriptors and the like: back off instead of spinning.
                        tracing::warn!(error = %e, "egress proxy could not accept a connection");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                    }
                },
                Some(_) = connections.join_next(), if !connections.is_empty() => {}
            }
        }
    }

    /// Serves on a new tokio task. The proxy stops when the handle is shut down or dropped.
    pub fn spawn(self) -> ProxyHandle {
        let local_addr = self.local_addr;
        ProxyHandle {
            local_addr,
            task: tokio::spawn(self.serve()),
        }
    }
}

/// A running proxy. Dropping it stops the proxy and closes its connections.
#[derive(Debug)]
pub struct ProxyHandle {
    local_addr: SocketAddr,
    task: JoinHandle<()>,
}

impl ProxyHandle {
    /// The address the proxy listens on.
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Stops accepting, closes every open connection and tunnel, and waits until they are.
    pub async fn shutdown(mut self) {
        self.task.abort();
        let _ = (&mut self.task).await;
    }
}

impl Drop for ProxyHandle {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Answers a connection over the limit with 503 and closes it, without waiting for anything:
/// whatever the client already sent is read and dropped first, so that closing does not
/// reset the connection under the answer.
fn refuse_busy(stream: TcpStream, limit: usize) {
    let body = format!(
        "warden: the egress proxy is serving its limit of {limit} connections; close one and \
         retry\n"
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    let mut scratch = [0u8; 4096];
    for _ in 0..16 {
        match stream.try_read(&mut scratch) {
            Ok(n) if n > 0 => {}
            _ => break,
        }
    }
    let _ = stream.try_write(response.as_bytes());
    if let Ok(stream) = stream.into_std() {
        let _ = stream.shutdown(std::net::Shutdown::Write);
    }
}

/// Serves one client connection: HTTP/1.1 requests, then the tunnel if one was opened.
async fn serve_connection<I>(shared: Arc<Shared>, io: I)
where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let tunnel_slot: Arc<Mutex<Option<TunnelJob>>> = Arc::default();
    let service = {
        let shared = Arc::clone(&shared);
        let tunnel_slot = Arc::clone(&tunnel_slot);
        service_fn(move |req| handle(Arc::clone(&shared), Arc::clone(&tunnel_slot), req))
    };
    let options = &shared.options;
    let result = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(options.header_read_timeout)
        .max_buf_size(options.max_header_bytes.max(MIN_HEADER_BYTES))
        .serve_connection(TokioIo::new(io), service)
        .with_upgrades()
        .await;
    if let Err(e) = result {
        tracing::debug!(error = %e, "client connection ended with an error");
    }
    // A CONNECT that was answered 200 left its tunnel here: run it on this task, so that
    // stopping the proxy stops the tunnel too.
    let job = tunnel_slot.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(job) = job {
        shared.audit.tunnel_opened();
        let _closed = TunnelClosed(&*shared.audit);
        job.run().await;
    }
}

async fn handle(
    shared: Arc<Shared>,
    tunnel_slot: Arc<Mutex<Option<TunnelJob>>>,
    req: Request<Incoming>,
) -> Result<Response<ProxyBody>, Infallible> {
    let exchange = Exchange::start(&shared, req.method());
    let span = tracing::info_span!(
        "egress_request",
        sandbox = %shared.options.sandbox_id,
        method = %req.method(),
        target = %req.uri(),
    );
    let response = if req.method() == Method::CONNECT {
        crate::tunnel::open(shared, tunnel_slot, req, exchange)
            .instrument(span)
            .await
    } else if shared.routes.claims(req.uri()) {
        crate::route::serve(&shared.routes, req, exchange)
            .instrument(span)
            .await
    } else {
        crate::forward::forward(shared, req, exchange)
            .instrument(span)
            .await
    };
    Ok(response)
}

/// Reports a tunnel closed when dropped, so a tunnel cut short by the proxy stopping counts too.
struct TunnelClosed<'a>(&'a dyn AuditSink);

impl Drop for TunnelClosed<'_> {
    fn drop(&mut self) {
        self.0.tunnel_closed();
    }
}

/// A plain-text response from the proxy itself.
pub(crate) fn text_response(status: StatusCode, text: String, close: bool) -> Response<ProxyBody> {
    let mut response = Response::new(
        Full::new(Bytes::from(text))
            .map_err(|never| match never {})
            .boxed(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    if close {
        response
            .headers_mut()
            .insert(CONNECTION, HeaderValue::from_static("close"));
    }
    response
}

pub(crate) fn empty_body() -> ProxyBody {
    Empty::new().map_err(|never| match never {}).boxed()
}

/// The audit record of one request, filled in as the request goes, recorded exactly once:
/// by [`finish`](Self::finish), or when dropped unfinished (the client went away mid-way, or
/// the proxy stopped), with an error saying so.
pub(crate) struct Exchange {
    audit: Arc<dyn AuditSink>,
    started: Instant,
    recorded: bool,
    pub(crate) event: AuditEvent,
}

impl Exchange {
    fn start(shared: &Shared, method: &Method) -> Self {
        Exchange {
            audit: Arc::clone(&shared.audit),
            started: Instant::now(),
            recorded: false,
            event: AuditEvent {
                time: rfc3339(SystemTime::now()),
                sandbox_id: shared.options.sandbox_id.clone(),
                method: method.to_string(),
                host: String::new(),
                port: 0,
                verdict: Decision::Denied,
                rule: "invalid-request".into(),
                status: 0,
                address: None,
                bytes_up: 0,
                bytes_down: 0,
                duration_ms: 0,
                error: None,
            },
        }
    }

    pub(crate) fn target(&mut self, host: &TargetHost, port: u16) {
        self.event.host = host.to_string();
        self.event.port = port;
    }

    pub(crate) fn verdict(&mut self, verdict: &Verdict) {
        self.event.verdict = verdict.decision;
        self.event.rule.clone_from(&verdict.rule);
    }

    /// Records the event with the status it carries.
    pub(crate) fn finish(mut self) {
        self.record();
    }

    fn record(&mut self) {
        if std::mem::replace(&mut self.recorded, true) {
            return;
        }
        self.event.duration_ms =
            u64::try_from(self.started.elapsed().as_millis()).unwrap_or(u64::MAX);
        tracing::debug!(
            verdict = ?self.event.verdict,
            rule = %self.event.rule,
            status = self.event.status,
            "egress decision"
        );
        self.audit.record(self.event.clone());
    }

    /// Answers with a response of the proxy's own, and records the event.
    pub(crate) fn respond(
        mut self,
        status: StatusCode,
        text: String,
        close: bool,
    ) -> Response<ProxyBody> {
        self.event.status = status.as_u16();
        self.finish();
        text_response(status, text, close)
    }

    /// 400 for a request the proxy cannot act on.
    pub(crate) fn bad_request(mut self, why: String, close: bool) -> Response<ProxyBody> {
        self.event.error = Some(why.clone());
        self.respond(StatusCode::BAD_REQUEST, format!("warden: {why}\n"), close)
    }

    /// 403 for a request the policy denied.
    pub(crate) fn denied(
        self,
        host: &TargetHost,
        port: u16,
        explanation: &str,
        close: bool,
    ) -> Response<ProxyBody> {
        self.respond(
            StatusCode::FORBIDDEN,
            format!("warden: egress to {host}:{port} is not allowed: {explanation}\n"),
            close,
        )
    }

    /// The answer when no upstream connection could be made: 403 if screening refused every
    /// address (the event becomes a denial), else 502 or 504.
    pub(crate) fn upstream_failed(
        mut self,
        host: &TargetHost,
        port: u16,
        error: UpstreamError,
        close: bool,
    ) -> Response<ProxyBody> {
        match error {
            UpstreamError::Refused { ip, class } => {
                self.event.verdict = Decision::Denied;
                self.event.rule = format!("screen:{class}");
                self.event.address = Some(SocketAddr::new(ip, port).to_string());
                let unlock = if class == AddressClass::Metadata {
                    format!("only a CIDR naming exactly {ip} unlocks it")
                } else {
                    format!("allow a CIDR containing {ip} in the policy if this is intended")
                };
                let what = match host {
                    TargetHost::Ip(_) => format!("{ip} is {}", class.describe()),
                    TargetHost::Name(name) => {
                        format!("{name} resolves to {ip}, {}", class.describe())
                    }
                };
                self.denied(host, port, &format!("{what}; {unlock}"), close)
            }
            UpstreamError::Timeout(_) => {
                self.event.error = Some(error.to_string());
                self.respond(
                    StatusCode::GATEWAY_TIMEOUT,
                    format!("warden: {host}:{port}: {error}\n"),
                    close,
                )
            }
            other => {
                self.event.error = Some(other.to_string());
                self.respond(
                    StatusCode::BAD_GATEWAY,
                    format!("warden: {host}:{port}: {other}\n"),
                    close,
                )
            }
        }
    }
}

impl Drop for Exchange {
    fn drop(&mut self) {
        if !self.recorded {
            self.event.error.get_or_insert_with(|| {
                "unfinished: the client left or the proxy stopped before the request completed"
                    .to_string()
            });
            self.record();
        }
    }
}
