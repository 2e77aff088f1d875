//! `warden router`: the cluster router of the kubernetes-sigs/agent-sandbox contract. A
//! request carrying `X-Sandbox-ID` (any path, any method) is proxied to that sandbox's pod:
//! the `X-Sandbox-Pod-IP` header first, else the watch-fed [`SandboxIndex`] of ready sandbox
//! pods, else the DNS name of the sandbox's Service. Headers are validated and errors worded
//! as upstream's (`warden_policy::sandbox_router`, shared with `warden serve`).
//!
//! Owns: the proxying (HTTP/1.1 and h2c, upgrades, streamed bodies, pooled backend
//! connections, a timeout for the response head), bearer tokens with sandbox scopes, the pod
//! index, `/healthz` and `/metrics`. Must never: dial loopback, link-local, multicast or
//! unspecified addresses named by a client, forward the client's `Authorization` or `Host`,
//! or buffer a body.

mod auth;
mod body;
mod index;
mod metrics;
mod resolve;

use std::convert::Infallible;
use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use http::header::{self, HeaderName, HeaderValue};
use http::uri::{Authority, PathAndQuery, Scheme};
use http::{HeaderMap, Method, Request, Response, StatusCode, Uri, Version};
use http_body_util::BodyExt;
use hyper::body::{Body as _, Incoming};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use hyper_util::server::graceful::GracefulShutdown;
use tokio::net::TcpListener;
use tracing::Instrument;
use warden_policy::sandbox_router::{
    HEADER_ID, HOP_BY_HOP, RouterError, Target, is_upgrade, outbound_headers, parse_target,
};

pub use auth::{Grant, MIN_TOKEN_LEN, Scope, TokenFileError, TokenTable};
pub use body::RouterBody;
pub use index::{IndexFeeder, SandboxIndex, ready_pod_ip, watch_pods};
pub use metrics::RouterMetrics;
pub use resolve::{Resolve, Route, SystemResolver, service_host};

/// Upstream's default timeout for the backend's response.
pub const DEFAULT_BACKEND_TIMEOUT: Duration = Duration::from_secs(180);
/// How long a TCP connect to a backend may take before the answer is 502.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// How long connections may finish their requests after a stop signal.
pub const DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

/// How the router behaves, validated by the caller (`warden router`'s flags).
#[derive(Debug)]
pub struct RouterConfig {
    /// The cluster's DNS domain, for `<id>.<ns>.svc.<domain>`.
    pub cluster_domain: String,
    /// The longest wait for a backend's response head (504 after).
    pub backend_timeout: Duration,
    /// Bearer tokens; `None` serves without auth.
    pub tokens: Option<TokenTable>,
}

impl Default for RouterConfig {
    fn default() -> RouterConfig {
        RouterConfig {
            cluster_domain: "cluster.local".into(),
            backend_timeout: DEFAULT_BACKEND_TIMEOUT,
            tokens: None,
        }
    }
}

/// The router: cheap to clone, shared by every connection.
#[derive(Clone)]
pub struct SandboxRouter {
    inner: Arc<Inner>,
}

struct Inner {
    config: RouterConfig,
    index: SandboxIndex,
    resolver: Arc<dyn Resolve>,
    http1: Client<HttpConnector, Incoming>,
    http2: Client<HttpConnector, Incoming>,
    metrics: RouterMetrics,
}

impl std::fmt::Debug for SandboxRouter {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxRouter")
            .field("config", &self.inner.config)
            .field("index_pods", &self.inner.index.len())
            .finish_non_exhaustive()
    }
}

fn connector() -> HttpConnector {
    let mut c = HttpConnector::new();
    c.set_nodelay(true);
    c.set_connect_timeout(Some(CONNECT_TIMEOUT));
    c.enforce_http(true);
    c
}

impl SandboxRouter {
    /// A router over `index` that resolves Service names with the system resolver.
    pub fn new(config: RouterConfig, index: SandboxIndex) -> SandboxRouter {
        SandboxRouter::with_resolver(config, index, Arc::new(SystemResolver))
    }

    /// A router whose DNS fallback asks `resolver`.
    pub fn with_resolver(
        config: RouterConfig,
        index: SandboxIndex,
        resolver: Arc<dyn Resolve>,
    ) -> SandboxRouter {
        let http1 = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector());
        let http2 = Client::builder(TokioExecutor::new())
            .pool_timer(TokioTimer::new())
            .pool_idle_timeout(Duration::from_secs(60))
            .http2_only(true)
            .timer(TokioTimer::new())
            .build(connector());
        SandboxRouter {
            inner: Arc::new(Inner {
                config,
                index,
                resolver,
                http1,
                http2,
                metrics: RouterMetrics::new(),
            }),
        }
    }

    pub fn index(&self) -> &SandboxIndex {
        &self.inner.index
    }

    pub fn metrics(&self) -> &RouterMetrics {
        &self.inner.metrics
    }

    /// Answers one request from `peer`.
    pub async fn handle(&self, req: Request<Incoming>, peer: SocketAddr) -> Response<RouterBody> {
        let start = Instant::now();
        let (resp, route) = self.route(req, peer).await;
        let route = route.map_or("local", Route::as_str);
        self.inner
            .metrics
            .record(resp.status().as_u16(), route, start.elapsed());
        resp
    }

    async fn route(
        &self,
        req: Request<Incoming>,
        peer: SocketAddr,
    ) -> (Response<RouterBody>, Option<Route>) {
        let tokens = self.inner.config.tokens.as_ref();
        if !req.headers().contains_key(HEADER_ID) {
            return (self.local(&req), None);
        }
        let grant = match tokens {
            None => Grant::ALL,
            Some(t) => match t.check(req.headers()) {
                Some(g) => g,
                None => return (error(RouterError::unauthenticated()), None),
            },
        };
        let target = match parse_target(req.headers()) {
            Ok(t) => t,
            Err(e) => return (error(e), None),
        };
        if !grant.allows(&target.namespace, &target.id) {
            return (
                error(RouterError::forbidden(format!(
                    "This token may not reach sandbox {}/{}.",
                    target.namespace, target.id
                ))),
                None,
            );
        }
        let (addr, route) = match resolve::without_dns(&target, &self.inner.index) {
            Some(found) => found,
            None => {
                let host = service_host(&target, &self.inner.config.cluster_domain);
                match self.inner.resolver.resolve(&host, target.port).await {
                    Ok(addr) => (addr, Route::Dns),
                    Err(e) => {
                        tracing::debug!(sandbox = %target.id, namespace = %target.namespace, %host, error = %e, "router: no address");
                        return (
                            error(RouterError::unreachable(&target.id)),
                            Some(Route::Dns),
                        );
                    }
                }
            }
        };
        // A scoped token may only reach its sandboxes' own pods: the pod IP it names must be
        // the one the index holds for that sandbox.
        if route == Route::PodIpHeader
            && grant.is_scoped()
            && self.inner.index.get(&target.namespace, &target.id) != Some(addr.ip())
        {
            return (
                error(RouterError::forbidden(format!(
                    "X-Sandbox-Pod-IP is not the pod of sandbox {}/{}; this token may not name other addresses.",
                    target.namespace, target.id
                ))),
                Some(route),
            );
        }
        let span = tracing::debug_span!("route", sandbox = %target.id, namespace = %target.namespace, backend = %addr, via = route.as_str());
        let resp = match self
            .forward(req, peer, &target, addr)
            .instrument(span)
            .await
        {
            Ok(r) => r,
            Err(e) => error(e),
        };
        (resp, Some(route))
    }

    /// `/healthz`, `/metrics`, and upstream's 400 for anything else without `X-Sandbox-ID`.
    fn local(&self, req: &Request<Incoming>) -> Response<RouterBody> {
        let path = req.uri().path();
        let get = req.method() == Method::GET || req.method() == Method::HEAD;
        if get && path == "/healthz" {
            return json(StatusCode::OK, br#"{"status":"ok"}"#.to_vec());
        }
        if let Some(t) = &self.inner.config.tokens
            && t.check(req.headers()).is_none()
        {
            return error(RouterError::unauthenticated());
        }
        if get && path == "/metrics" {
            let text = self.inner.metrics.encode(&self.inner.index);
            let mut resp = Response::new(RouterBody::local(text));
            resp.headers_mut().insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static(
                    "application/openmetrics-text; version=1.0.0; charset=utf-8",
                ),
            );
            return resp;
        }
        error(RouterError::bad_request("X-Sandbox-ID header is required."))
    }

    async fn forward(
        &self,
        mut req: Request<Incoming>,
        peer: SocketAddr,
        target: &Target,
        addr: SocketAddr,
    ) -> Result<Response<RouterBody>, RouterError> {
        let h2 = req.version() == Version::HTTP_2;
        let upgrade = !h2 && is_upgrade(req.headers());
        let client_upgrade = upgrade.then(|| hyper::upgrade::on(&mut req));
        let (parts, body) = req.into_parts();

        let mut headers = outbound_headers(&parts.headers, Some(peer), upgrade);
        if !parts.headers.contains_key(header::HOST)
            && let Some(authority) = parts.uri.authority()
            && let Ok(v) = HeaderValue::from_str(authority.as_str())
        {
            // HTTP/2 carries the host in :authority.
            headers.insert(HeaderName::from_static("x-forwarded-host"), v);
        }
        if wants_trailers(&parts.headers) {
            // gRPC's `te: trailers`, the one TE value HTTP/2 allows.
            headers.insert(header::TE, HeaderValue::from_static("trailers"));
        }
        let authority = Authority::try_from(addr.to_string())
            .map_err(|_| RouterError::unreachable(&target.id))?;
        let mut uri = http::uri::Parts::default();
        uri.scheme = Some(Scheme::HTTP);
        uri.authority = Some(authority);
        uri.path_and_query = Some(
            parts
                .uri
                .path_and_query()
                .cloned()
                .unwrap_or_else(|| PathAndQuery::from_static("/")),
        );
        let uri = Uri::from_parts(uri).map_err(|_| RouterError::unreachable(&target.id))?;

        let mut out = Request::new(body);
        *out.method_mut() = parts.method;
        *out.uri_mut() = uri;
        *out.version_mut() = if h2 {
            Version::HTTP_2
        } else {
            Version::HTTP_11
        };
        *out.headers_mut() = headers;

        let client = if h2 {
            &self.inner.http2
        } else {
            &self.inner.http1
        };
        let deadline = tokio::time::Instant::now() + self.inner.config.backend_timeout;
        let mut resp = match tokio::time::timeout_at(deadline, client.request(out)).await {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                tracing::debug!(error = %e, source = ?std::error::Error::source(&e), "router: backend failed");
                return Err(RouterError::unreachable(&target.id));
            }
            Err(_) => {
                tracing::debug!("router: backend timed out");
                return Err(RouterError::timeout(&target.id));
            }
        };

        if resp.status() == StatusCode::SWITCHING_PROTOCOLS {
            let Some(client_upgrade) = client_upgrade else {
                return Err(RouterError::unreachable(&target.id));
            };
            let backend_upgrade = hyper::upgrade::on(&mut resp);
            tokio::spawn(
                async move {
                    let (Ok(client), Ok(backend)) = (client_upgrade.await, backend_upgrade.await)
                    else {
                        tracing::debug!("router: upgrade did not complete");
                        return;
                    };
                    let mut client = TokioIo::new(client);
                    let mut backend = TokioIo::new(backend);
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
                }
                .in_current_span(),
            );
            let (parts, _) = resp.into_parts();
            return Ok(Response::from_parts(parts, RouterBody::empty()));
        }
        strip_hop_by_hop(resp.headers_mut());
        let (parts, mut body) = resp.into_parts();
        // A body of known length: its first chunk is read with the head so that both go to
        // the client in one write (a small response in one packet, as nginx sends it). A
        // body of unknown length (chunked, SSE, gRPC) streams from the head on.
        let mut first = None;
        if !body.is_end_stream() && body.size_hint().exact().is_some_and(|n| n > 0) {
            match tokio::time::timeout_at(deadline, body.frame()).await {
                Ok(Some(Ok(frame))) => first = Some(frame),
                Ok(Some(Err(e))) => {
                    tracing::debug!(error = %e, "router: backend body failed");
                    return Err(RouterError::unreachable(&target.id));
                }
                Ok(None) => {}
                Err(_) => return Err(RouterError::timeout(&target.id)),
            }
        }
        Ok(Response::from_parts(
            parts,
            RouterBody::backend(first, body),
        ))
    }

    /// Serves `listener` until `shutdown` completes, then lets open connections finish their
    /// requests for up to [`DRAIN_TIMEOUT`].
    pub async fn serve(
        self,
        listener: TcpListener,
        shutdown: impl Future<Output = ()>,
    ) -> io::Result<()> {
        let mut builder = auto::Builder::new(TokioExecutor::new());
        builder
            .http1()
            .timer(TokioTimer::new())
            .header_read_timeout(Duration::from_secs(30));
        builder.http2().timer(TokioTimer::new());
        let graceful = GracefulShutdown::new();
        let mut shutdown = std::pin::pin!(shutdown);
        loop {
            let (stream, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(a) => a,
                    Err(e) => {
                        // Out of file descriptors, most likely: wait rather than spin.
                        tracing::warn!(error = %e, "router: accept failed");
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        continue;
                    }
                },
                () = &mut shutdown => break,
            };
            let _ = stream.set_nodelay(true);
            let router = self.clone();
            let service = hyper::service::service_fn(move |req| {
                let router = router.clone();
                async move { Ok::<_, Infallible>(router.handle(req, peer).await) }
            });
            let conn = builder
                .serve_connection_with_upgrades(TokioIo::new(stream), service)
                .into_owned();
            let conn = graceful.watch(conn);
            tokio::spawn(async move {
                if let Err(e) = conn.await {
                    tracing::debug!(%peer, error = %e, "router: connection ended");
                }
            });
        }
        drop(listener);
        if tokio::time::timeout(DRAIN_TIMEOUT, graceful.shutdown())
            .await
            .is_err()
        {
            tracing::info!("router: stopped with connections still open");
        }
        Ok(())
    }
}

fn wants_trailers(h: &HeaderMap) -> bool {
    h.get_all(header::TE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|t| t.trim().eq_ignore_ascii_case("trailers"))
}

fn strip_hop_by_hop(h: &mut HeaderMap) {
    let named: Vec<HeaderName> = h
        .get_all(header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|t| HeaderName::from_bytes(t.trim().as_bytes()).ok())
        .collect();
    for n in named {
        h.remove(n);
    }
    for n in HOP_BY_HOP {
        h.remove(n);
    }
}

fn json(status: StatusCode, body: Vec<u8>) -> Response<RouterBody> {
    let mut resp = Response::new(RouterBody::local(body));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// `{"detail": "..."}` with the error's status (and `WWW-Authenticate: Bearer` on 401).
pub fn error(e: RouterError) -> Response<RouterBody> {
    let body = serde_json::to_vec(&serde_json::json!({ "detail": e.detail }))
        .unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = json(e.status, body);
    if e.status == StatusCode::UNAUTHORIZED {
        resp.headers_mut()
            .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    }
    resp
}

/// A kube client from the usual places (`KUBECONFIG`, `~/.kube/config`, the in-cluster
/// service account).
pub async fn kube_client() -> Result<kube::Client, kube::Error> {
    kube::Client::try_default().await
}
