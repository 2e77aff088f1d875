//! The control plane behind `warden serve`.
//!
//! Owns: the HTTP API (sandboxes, templates, pools, exec, files, events, the router
//! contract, answers to `warden agent` runs' approvals), bearer-token auth, the embedded
//! store, metrics, the web console (`console`).
//! Must never: answer an unauthenticated request on a non-loopback address, or lose track of
//! a sandbox across a restart.
//!
//! Wiring: open the [`Store`] over the data directory, build the driver with the store as
//! its `SandboxStore`, then [`bootstrap`] (templates from the store and the config file into
//! the driver, `Driver::recover`, then the pools), then [`serve`] an [`app`] over an
//! [`AppState`].

pub mod a2a;
pub mod api;
pub mod api_tasks;
pub mod auth;
pub mod client;
pub mod config;
pub mod console;
pub mod error;
pub mod metrics;
pub mod openapi;
pub mod sandbox_router;
pub mod schedules;
pub mod store;
pub mod tasks;
pub mod testing;
pub mod testing_git;
pub mod testing_pg;
pub mod webhooks;

use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{MatchedPath, Request, State};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use warden_sandbox::{Driver, DriverError};

pub use auth::Auth;
pub use config::ServeConfig;
pub use error::ApiError;
pub use metrics::Metrics;
pub use store::{Store, StoreError};

/// The default router timeout: how long a backend may take to send its response head.
pub const ROUTER_TIMEOUT: Duration = Duration::from_secs(180);

/// What every handler shares. Cheap to clone.
#[derive(Debug, Clone)]
pub struct AppState {
    inner: Arc<Inner>,
    /// `<data>/agent-runs`, where `warden agent` runs publish the approvals they wait on.
    agent_runs: Option<Arc<Path>>,
    /// The task queue and its runner, when this server runs tasks.
    tasks: Option<tasks::runner::Tasks>,
    /// The A2A server (agent card, JSON-RPC), when enabled.
    a2a: Option<Arc<a2a::A2aServer>>,
    /// Cron schedules filing tasks, when this server runs them.
    schedules: Option<schedules::Schedules>,
    /// Webhook deliveries filing tasks, when configured.
    webhooks: Option<webhooks::Webhooks>,
}

#[derive(Debug)]
struct Inner {
    driver: Arc<dyn Driver>,
    store: Store,
    auth: Auth,
    metrics: Metrics,
    router_timeout: Duration,
}

impl AppState {
    pub fn new(driver: Arc<dyn Driver>, store: Store, auth: Auth) -> AppState {
        AppState::with_router_timeout(driver, store, auth, ROUTER_TIMEOUT)
    }

    pub fn with_router_timeout(
        driver: Arc<dyn Driver>,
        store: Store,
        auth: Auth,
        router_timeout: Duration,
    ) -> AppState {
        AppState {
            inner: Arc::new(Inner {
                driver,
                store,
                auth,
                metrics: Metrics::new(),
                router_timeout,
            }),
            agent_runs: None,
            tasks: None,
            a2a: None,
            schedules: None,
            webhooks: None,
        }
    }

    /// Serves the approvals of the `warden agent` runs under `dir` (`<data>/agent-runs`).
    /// Without it, `GET /v1/approvals` lists nothing and every answer is a 404.
    pub fn with_agent_runs(mut self, dir: impl Into<PathBuf>) -> AppState {
        self.agent_runs = Some(Arc::from(dir.into()));
        self
    }

    /// Serves the task API over `tasks` (whose runner the caller starts).
    pub fn with_tasks(mut self, tasks: tasks::runner::Tasks) -> AppState {
        tasks.set_metrics(self.metrics().tasks().clone());
        self.tasks = Some(tasks);
        self
    }

    pub fn tasks(&self) -> Option<&tasks::runner::Tasks> {
        self.tasks.as_ref()
    }

    /// Serves A2A (`/.well-known/agent-card.json`, `POST /a2a`) through `server`.
    pub fn with_a2a(mut self, server: a2a::A2aServer) -> AppState {
        server.set_metrics(self.metrics().tasks().clone());
        self.a2a = Some(Arc::new(server));
        self
    }

    pub fn a2a(&self) -> Option<&Arc<a2a::A2aServer>> {
        self.a2a.as_ref()
    }

    /// Serves the schedule API over `schedules` (whose loop the caller starts).
    pub fn with_schedules(mut self, schedules: schedules::Schedules) -> AppState {
        schedules.set_metrics(self.metrics().schedules().clone());
        self.schedules = Some(schedules);
        self
    }

    pub fn schedules(&self) -> Option<&schedules::Schedules> {
        self.schedules.as_ref()
    }

    /// Serves the webhook endpoints (`/webhooks/...`) and their API through `webhooks`.
    pub fn with_webhooks(mut self, webhooks: webhooks::Webhooks) -> AppState {
        self.webhooks = Some(webhooks);
        self
    }

    pub fn webhooks(&self) -> Option<&webhooks::Webhooks> {
        self.webhooks.as_ref()
    }

    pub fn driver(&self) -> &Arc<dyn Driver> {
        &self.inner.driver
    }

    pub fn store(&self) -> &Store {
        &self.inner.store
    }

    pub fn auth(&self) -> &Auth {
        &self.inner.auth
    }

    pub fn metrics(&self) -> &Metrics {
        &self.inner.metrics
    }

    pub fn router_timeout(&self) -> Duration {
        self.inner.router_timeout
    }

    /// The directory of `warden agent` runs whose approvals the API answers, if any.
    pub fn agent_runs(&self) -> Option<&Path> {
        self.agent_runs.as_deref()
    }

    /// Keeps every driver event in the store (for `GET /v1/events?since=`), until the
    /// driver's event channel closes.
    pub fn spawn_event_recorder(&self) -> tokio::task::JoinHandle<()> {
        let mut rx = self.driver().events();
        let store = self.store().clone();
        tokio::spawn(async move {
            loop {
                match rx.recv().await {
                    Ok(e) => {
                        if let Err(err) = store.put_event(&e).await {
                            tracing::warn!(error = %err, "could not keep an event");
                        }
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                        tracing::warn!(missed = n, "event recorder lagged; events lost");
                    }
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                }
            }
        })
    }
}

/// The whole HTTP surface: the API under `/v1`, `/healthz`, `/metrics`, and the router
/// contract for any request carrying `X-Sandbox-ID`.
pub fn app(state: AppState) -> Router {
    let mut authed = Router::new();
    let mut open = Router::new();
    for route in api::routes() {
        if route.auth {
            authed = authed.route(route.path, route.handler);
        } else {
            open = open.route(route.path, route.handler);
        }
    }
    let authed = authed.route_layer(middleware::from_fn_with_state(state.clone(), require_token));
    authed
        .merge(open)
        .merge(console::routes())
        .route_layer(middleware::from_fn_with_state(
            state.clone(),
            record_metrics,
        ))
        .fallback(unmatched)
        .layer(middleware::from_fn_with_state(
            state.clone(),
            route_by_header,
        ))
        .with_state(state)
}

async fn require_token(State(state): State<AppState>, req: Request, next: Next) -> Response {
    if auth::is_cross_origin_websocket(req.method(), req.headers()) {
        return ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "PERMISSION_DENIED",
            "a WebSocket from a page of another origin is refused",
        )
        .into_response();
    }
    if state.auth().allows_request(req.method(), req.headers()) {
        next.run(req).await
    } else {
        ApiError::unauthenticated().into_response()
    }
}

async fn record_metrics(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|m| m.as_str().to_string())
        .unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    let start = Instant::now();
    let resp = next.run(req).await;
    state
        .metrics()
        .record_request(&route, &method, resp.status().as_u16(), start.elapsed());
    resp
}

/// Requests with `X-Sandbox-ID` go to the router contract, whatever their path (except
/// `/healthz` and `/metrics`, which are the server's own).
async fn route_by_header(State(state): State<AppState>, req: Request, next: Next) -> Response {
    let path = req.uri().path();
    if !req.headers().contains_key(sandbox_router::HEADER_ID)
        || path == "/healthz"
        || path == "/metrics"
    {
        return next.run(req).await;
    }
    let start = Instant::now();
    let method = req.method().as_str().to_string();
    let resp = if state.auth().allows(req.headers()) {
        sandbox_router::forward(state.clone(), req).await
    } else {
        sandbox_router::RouterError::unauthenticated().into_response()
    };
    state.metrics().record_request(
        "sandbox-router",
        &method,
        resp.status().as_u16(),
        start.elapsed(),
    );
    resp
}

/// No route: under `/v1` a 404 of ours; elsewhere the router contract's answer to a request
/// without `X-Sandbox-ID`. Both after auth, so nothing is revealed without the token.
async fn unmatched(State(state): State<AppState>, req: Request) -> Response {
    let start = Instant::now();
    let method = req.method().as_str().to_string();
    let resp = if !state.auth().allows(req.headers()) {
        ApiError::unauthenticated().into_response()
    } else if req.uri().path() == "/v1" || req.uri().path().starts_with("/v1/") {
        ApiError::not_found(format!(
            "no route {} {}; see docs/openapi.json",
            req.method(),
            req.uri().path()
        ))
        .into_response()
    } else {
        // Validation says why: the header is missing.
        match sandbox_router::parse_target(req.headers()) {
            Err(e) => e.into_response(),
            Ok(_) => sandbox_router::forward(state.clone(), req).await,
        }
    };
    state.metrics().record_request(
        "unmatched",
        &method,
        resp.status().as_u16(),
        start.elapsed(),
    );
    resp
}

/// Why `warden serve` could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// A bad flag, config file or data directory: exit 64.
    #[error("{0}")]
    Usage(String),
    /// Anything else: exit 70.
    #[error("{0}")]
    Host(String),
}

impl StartError {
    pub fn exit_code(&self) -> u8 {
        match self {
            StartError::Usage(_) => 64,
            StartError::Host(_) => 70,
        }
    }
}

/// Refuses `--no-auth` on an address other machines can reach.
pub fn check_listen(listen: SocketAddr, no_auth: bool) -> Result<(), StartError> {
    if no_auth && !listen.ip().is_loopback() {
        return Err(StartError::Usage(format!(
            "--no-auth with --listen {listen} would let anyone who can reach this address run \
             code in your sandboxes; --no-auth is only allowed on a loopback address \
             (127.0.0.1, ::1). Drop --no-auth and use the token in the data directory."
        )));
    }
    Ok(())
}

/// The default data directory: `/var/lib/warden` for root (whose home, `/root`, is on the
/// sensitive-path blocklist, so no sandbox workspace may lie under it), else
/// `$XDG_DATA_HOME/warden`, else `~/.local/share/warden`.
pub fn default_data_dir() -> Option<PathBuf> {
    if nix::unistd::geteuid().is_root() {
        return Some(PathBuf::from("/var/lib/warden"));
    }
    if let Some(x) = std::env::var_os("XDG_DATA_HOME").filter(|x| !x.is_empty()) {
        let x = PathBuf::from(x);
        if x.is_absolute() {
            return Some(x.join("warden"));
        }
    }
    std::env::var_os("HOME")
        .filter(|h| !h.is_empty())
        .map(|h| PathBuf::from(h).join(".local/share/warden"))
}

/// Creates the data directory (mode 0700) if needed.
pub fn prepare_data_dir(dir: &Path) -> Result<(), StartError> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| StartError::Usage(format!("--data {}: {e}", dir.display())))?;
    if !dir.is_dir() {
        return Err(StartError::Usage(format!(
            "--data {}: not a directory",
            dir.display()
        )));
    }
    Ok(())
}

/// At start: the config file's templates and pools are upserted into the store; then the
/// store's templates go into the driver, `Driver::recover` adopts the sandboxes of the
/// previous run, and the pools go in last (their surviving members rejoin them).
pub async fn bootstrap(
    driver: &dyn Driver,
    store: &Store,
    config: Option<&ServeConfig>,
) -> Result<(), StartError> {
    let host = |e: StoreError| StartError::Host(e.to_string());
    if let Some(config) = config {
        for t in &config.templates {
            store.put_template(t).await.map_err(host)?;
        }
        for p in &config.pools {
            store.put_pool(p).await.map_err(host)?;
        }
    }
    let driver_err = |what: String, e: DriverError| match e {
        DriverError::InvalidArgument { .. } | DriverError::NotFound { .. } => {
            StartError::Usage(format!("{what}: {e}"))
        }
        other => StartError::Host(format!("{what}: {other}")),
    };
    for t in store.templates().await.map_err(host)? {
        let name = t.name.clone();
        driver
            .put_template(t)
            .await
            .map_err(|e| driver_err(format!("template `{name}`"), e))?;
    }
    // Recover before the pools, so that members of a previous run rejoin their pool
    // instead of being created again.
    let recovered = driver
        .recover()
        .await
        .map_err(|e| StartError::Host(format!("recovering sandboxes: {e}")))?;
    for p in store.pools().await.map_err(host)? {
        let name = p.name.clone();
        driver
            .put_pool(p)
            .await
            .map_err(|e| driver_err(format!("pool `{name}`"), e))?;
    }
    tracing::info!(sandboxes = recovered.len(), "recovered");
    Ok(())
}

/// Turns Nagle's algorithm off on an accepted connection. A response goes out in several
/// small writes (the head, then body frames, SSE events, WebSocket messages); with Nagle on,
/// a write waits for the ACK of the previous one, which a client's delayed ACK holds back for
/// up to 40 ms.
pub fn no_delay(tcp: &mut tokio::net::TcpStream) {
    if let Err(e) = tcp.set_nodelay(true) {
        tracing::debug!(error = %e, "cannot set TCP_NODELAY on a connection");
    }
}

/// How long requests in flight (exec streams, event streams, WebSockets) may take to finish
/// after the shutdown signal before the server stops anyway.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// Serves `app(state)` on `listener` until `shutdown` resolves, then lets requests in flight
/// finish (at most `SHUTDOWN_GRACE`) and closes the store.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let recorder = state.spawn_event_recorder();
    let store = state.store().clone();
    let service = app(state).into_make_service_with_connect_info::<SocketAddr>();
    let (stopping_tx, stopping_rx) = tokio::sync::oneshot::channel::<()>();
    let listener = axum::serve::ListenerExt::tap_io(listener, no_delay);
    let server = axum::serve(listener, service).with_graceful_shutdown(async move {
        shutdown.await;
        let _ = stopping_tx.send(());
    });
    let result = tokio::select! {
        r = server => r,
        _ = async {
            if stopping_rx.await.is_ok() {
                tokio::time::sleep(SHUTDOWN_GRACE).await;
            } else {
                std::future::pending::<()>().await;
            }
        } => Ok(()),
    };
    recorder.abort();
    store.close().await;
    result
}

#[cfg(test)]
mod tests {
    #[tokio::test]
    async fn accepted_connections_do_not_wait_for_acks() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let _client = tokio::net::TcpStream::connect(addr).await.unwrap();
        let (mut accepted, _) = listener.accept().await.unwrap();
        assert!(!accepted.nodelay().unwrap(), "Nagle is on by default");
        super::no_delay(&mut accepted);
        assert!(accepted.nodelay().unwrap());
    }
}
