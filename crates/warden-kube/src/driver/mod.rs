//! `warden serve --driver kubernetes`: a [`Driver`] that keeps warden's templates, pools and
//! sandboxes as agent-sandbox v1beta1 objects in one namespace, and reaches each sandbox's
//! `warden sandboxd` through the cluster's router (`warden router` or upstream's).
//!
//! Owns: the mapping of the driver API onto SandboxTemplate, SandboxWarmPool, SandboxClaim
//! and Sandbox ([`mapping`]), waiting for claims and sandboxes to become Ready, the calls to
//! sandboxd through the router, and the events from watching what it manages ([`watch`]).
//! Must never: touch an object it did not make (everything it makes carries
//! `app.kubernetes.io/managed-by=warden`), or let a caller name the router's target other
//! than by the id of a sandbox it manages.
//!
//! The objects:
//! - `put_template` → a SandboxTemplate (see [`mapping`] for what of a policy maps);
//! - `put_pool` → a SandboxWarmPool; `pools()` reads its status;
//! - `claim` → a SandboxClaim named `sbx-<random>` with `warmPoolRef`, `lifecycle.shutdownTime`
//!   and `shutdownPolicy: Delete`; the sandbox is the one in its `status.sandbox.name` (a warm
//!   member, or a cold Sandbox named after the claim). Once Ready the Sandbox is labelled
//!   [`mapping::MANAGED_BY`] and [`mapping::LABEL_CLAIM`];
//! - `create` → a Sandbox `sbx-<random>` made from the SandboxTemplate, with `shutdownTime` and
//!   `shutdownPolicy: Delete`;
//! - `delete` deletes the claim (garbage collection takes its Sandbox) or the Sandbox;
//!   `suspend`/`resume` set `operatingMode` and wait for the controller; `set_shutdown` sets
//!   the claim's `lifecycle.shutdownTime` or the Sandbox's `shutdownTime`.
//!
//! Exec and files go over TCP to the router with `X-Sandbox-ID`, `X-Sandbox-Namespace`,
//! `X-Sandbox-Port` (sandboxd's REST port, 8080) and the router's token; the router contract
//! of `warden serve` (`connect_runtime`) connects to the router too, and
//! [`Driver::runtime_route`] gives the headers to add.

pub mod mapping;
mod watch;

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use futures_util::{StreamExt, TryStreamExt};
use http_body_util::BodyExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::WatchStreamExt;
use kube::{Api, Client};
use serde_json::json;
use tokio::sync::broadcast;
use warden_sandbox::{
    ByteStream, ClaimRequest, CreateRequest, Driver, DriverError, ExecSession, PoolSpec,
    PoolStatus, RuntimeConn, RuntimeRoute, SandboxEvent, SandboxInfo, Template, names,
};
use warden_sandboxd::client::{Client as SandboxdClient, ClientError, RouterRoute};
use warden_sandboxd::proto::{DirListing, ErrorCode, ExecRequest, ExecResult};

use crate::crd::labels::{LAUNCH_TYPE, LAUNCH_TYPE_COLD, SANDBOX_TEMPLATE_REF_ANNOTATION};
use crate::crd::{
    ClaimLifecycle, ClaimShutdownPolicy, OperatingMode, Sandbox, SandboxClaim, SandboxClaimSpec,
    SandboxTemplate, SandboxWarmPool, ShutdownPolicy, WarmPoolRef,
};
use crate::harden::template_pod_selector;
use mapping::{
    ANNOTATION_LABELS, ANNOTATION_POOL, ClaimState, Holder, LABEL_CLAIM, MANAGED_BY,
    MANAGED_SELECTOR, TemplateDefaults, WARDEN, is_managed,
};

/// The router's Service as the Helm chart and `deploy/manifests` install it.
pub const DEFAULT_ROUTER_URL: &str = "http://sandbox-router-svc.warden-system.svc:8080";
/// sandboxd's REST port in a warden pod.
pub const DEFAULT_SANDBOXD_PORT: u16 = 8080;
/// How long `claim`, `create`, `suspend` and `resume` wait for the controller.
pub const DEFAULT_READY_TIMEOUT: Duration = Duration::from_secs(120);
/// A sandbox's life when neither the request nor its template says (as the local driver).
pub const DEFAULT_SHUTDOWN_AFTER: Duration = Duration::from_secs(3600);

/// How the driver reaches the cluster and its router.
#[derive(Clone)]
pub struct KubeDriverConfig {
    /// The namespace of every object the driver makes.
    pub namespace: String,
    /// The router, `http://host:port` (in-cluster: its Service).
    pub router_url: String,
    /// The router's bearer token, if it wants one.
    pub router_token: Option<String>,
    /// warden's image, for the sandbox container and the proxy sidecar of every template.
    pub image: String,
    /// sandboxd's REST port in the pods (what `X-Sandbox-Port` names).
    pub sandboxd_port: u16,
    /// How long to wait for a claim or sandbox to become Ready (and to suspend or resume).
    pub ready_timeout: Duration,
}

impl std::fmt::Debug for KubeDriverConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeDriverConfig")
            .field("namespace", &self.namespace)
            .field("router_url", &self.router_url)
            .field(
                "router_token",
                &self.router_token.as_ref().map(|_| "<redacted>"),
            )
            .field("image", &self.image)
            .field("sandboxd_port", &self.sandboxd_port)
            .field("ready_timeout", &self.ready_timeout)
            .finish()
    }
}

impl KubeDriverConfig {
    /// The defaults, with warden's `image`, in `namespace`.
    pub fn new(namespace: impl Into<String>, image: impl Into<String>) -> KubeDriverConfig {
        KubeDriverConfig {
            namespace: namespace.into(),
            router_url: DEFAULT_ROUTER_URL.into(),
            router_token: None,
            image: image.into(),
            sandboxd_port: DEFAULT_SANDBOXD_PORT,
            ready_timeout: DEFAULT_READY_TIMEOUT,
        }
    }
}

/// A bad [`KubeDriverConfig`] field.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ConfigError {
    /// `namespace`, `router_url`, `router_token`, `image`, `sandboxd_port` or `ready_timeout`.
    pub field: &'static str,
    pub message: String,
}

fn config_error(field: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        field,
        message: message.into(),
    }
}

/// The router's `host:port` and, when its host is a Service name `<svc>.<namespace>[.svc…]`,
/// its namespace (admitted by the templates' NetworkPolicy).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouterAddr {
    pub authority: String,
    pub namespace: Option<String>,
}

/// Checks a router URL: `http://host[:port]` (port 80 when absent), nothing after the
/// authority but `/`.
pub fn parse_router_url(url: &str) -> Result<RouterAddr, ConfigError> {
    let bad = |why: &str| {
        config_error(
            "router_url",
            format!("`{url}` {why}; give http://HOST:PORT, such as {DEFAULT_ROUTER_URL}"),
        )
    };
    let uri: http::Uri = url.parse().map_err(|_| bad("is not a URL"))?;
    match uri.scheme_str() {
        Some("http") => {}
        Some(_) => return Err(bad("is not plain http (the router serves HTTP and h2c)")),
        None => return Err(bad("has no scheme")),
    }
    if uri.path_and_query().is_some_and(|p| p.as_str() != "/") {
        return Err(bad("has a path"));
    }
    let authority = uri.authority().ok_or_else(|| bad("has no host"))?;
    if authority.as_str().contains('@') {
        return Err(bad("holds credentials (use the router token instead)"));
    }
    let host = authority.host();
    let port = authority.port_u16().unwrap_or(80);
    let labels: Vec<&str> = host.split('.').collect();
    let namespace = (labels.len() >= 2
        && !host.starts_with('[')
        && host.parse::<std::net::IpAddr>().is_err()
        && (labels.len() == 2 || labels[2] == "svc")
        && warden_policy::is_dns_label(labels[1]))
    .then(|| labels[1].to_string());
    Ok(RouterAddr {
        authority: format!("{host}:{port}"),
        namespace,
    })
}

impl KubeDriverConfig {
    /// Checks every field; the error names the first bad one.
    pub fn validate(&self) -> Result<RouterAddr, ConfigError> {
        if !warden_policy::is_dns_label(&self.namespace) {
            return Err(config_error(
                "namespace",
                format!(
                    "`{}` is not a namespace name: 1 to 63 lowercase letters, digits and `-`",
                    self.namespace
                ),
            ));
        }
        let addr = parse_router_url(&self.router_url)?;
        if let Some(t) = &self.router_token
            && (t.is_empty()
                || t.bytes()
                    .any(|b| b.is_ascii_whitespace() || b.is_ascii_control()))
        {
            return Err(config_error(
                "router_token",
                "must be one line of visible characters (the file's trailing newline is removed)",
            ));
        }
        if self.image.trim().is_empty() || self.image.chars().any(char::is_whitespace) {
            return Err(config_error(
                "image",
                format!(
                    "`{}` is not an image reference, such as ghcr.io/warden-sandbox/warden:0.1.0",
                    self.image
                ),
            ));
        }
        if self.sandboxd_port == 0 {
            return Err(config_error(
                "sandboxd_port",
                "must be a port from 1 to 65535",
            ));
        }
        if self.ready_timeout.is_zero() {
            return Err(config_error("ready_timeout", "must be longer than zero"));
        }
        Ok(addr)
    }
}

/// The Kubernetes driver. Cheap to clone.
#[derive(Clone)]
pub struct KubeDriver {
    inner: Arc<Inner>,
}

struct Inner {
    client: Client,
    cfg: KubeDriverConfig,
    router: RouterAddr,
    defaults: TemplateDefaults,
    events: broadcast::Sender<SandboxEvent>,
    watches: Mutex<Vec<tokio::task::JoinHandle<()>>>,
}

impl Drop for Inner {
    fn drop(&mut self) {
        for w in self
            .watches
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .drain(..)
        {
            w.abort();
        }
    }
}

impl std::fmt::Debug for KubeDriver {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KubeDriver")
            .field("config", &self.inner.cfg)
            .finish_non_exhaustive()
    }
}

fn not_found(kind: &'static str, name: &str) -> DriverError {
    DriverError::NotFound {
        kind,
        name: name.to_string(),
    }
}

/// A kube client error as a driver error; `what` names the object.
fn kube_error(what: &str, e: kube::Error) -> DriverError {
    match e {
        kube::Error::Api(s) => match s.code {
            409 => DriverError::Conflict(format!("{what}: {}", s.message)),
            400 | 422 => DriverError::InvalidArgument {
                field: what.to_string(),
                message: s.message,
            },
            401 | 403 => DriverError::Internal(format!(
                "{what}: the Kubernetes API refused warden serve ({}); grant its service account \
                 the agents.x-k8s.io and extensions.agents.x-k8s.io resources in the namespace",
                s.message
            )),
            code if code >= 500 || code == 429 => {
                DriverError::Unavailable(format!("{what}: Kubernetes API: {}", s.message))
            }
            _ => DriverError::Internal(format!("{what}: Kubernetes API: {}", s.message)),
        },
        other => DriverError::Unavailable(format!("{what}: Kubernetes API unreachable: {other}")),
    }
}

fn is_not_found(e: &kube::Error) -> bool {
    matches!(e, kube::Error::Api(s) if s.code == 404)
}

impl KubeDriver {
    /// A driver over `client`. Starts the watches behind [`Driver::events`], so it must be
    /// called inside a tokio runtime.
    pub fn new(client: Client, cfg: KubeDriverConfig) -> Result<KubeDriver, ConfigError> {
        let router = cfg.validate()?;
        let defaults = TemplateDefaults {
            image: cfg.image.clone(),
            sandboxd_port: cfg.sandboxd_port,
            router_namespace: router.namespace.clone().filter(|ns| *ns != cfg.namespace),
            namespace: cfg.namespace.clone(),
        };
        let (events, _) = broadcast::channel(1024);
        let driver = KubeDriver {
            inner: Arc::new(Inner {
                client,
                cfg,
                router,
                defaults,
                events,
                watches: Mutex::new(Vec::new()),
            }),
        };
        let tasks = watch::spawn(
            driver.sandboxes(),
            driver.claims(),
            driver.inner.events.clone(),
        );
        *driver
            .inner
            .watches
            .lock()
            .unwrap_or_else(|e| e.into_inner()) = tasks;
        Ok(driver)
    }

    /// The configuration in use.
    pub fn config(&self) -> &KubeDriverConfig {
        &self.inner.cfg
    }

    fn ns(&self) -> &str {
        &self.inner.cfg.namespace
    }

    fn sandboxes(&self) -> Api<Sandbox> {
        Api::namespaced(self.inner.client.clone(), self.ns())
    }

    fn claims(&self) -> Api<SandboxClaim> {
        Api::namespaced(self.inner.client.clone(), self.ns())
    }

    fn sandbox_templates(&self) -> Api<SandboxTemplate> {
        Api::namespaced(self.inner.client.clone(), self.ns())
    }

    fn warm_pools(&self) -> Api<SandboxWarmPool> {
        Api::namespaced(self.inner.client.clone(), self.ns())
    }

    fn emit(&self, sandbox: &str, kind: &str, message: impl Into<String>) {
        let _ = self
            .inner
            .events
            .send(SandboxEvent::now(sandbox, kind, message));
    }

    /// Creates `object` or, when one of that name exists and the driver made it, replaces it.
    async fn upsert<K>(&self, api: &Api<K>, kind: &str, object: K) -> Result<(), DriverError>
    where
        K: kube::Resource
            + Clone
            + serde::Serialize
            + serde::de::DeserializeOwned
            + std::fmt::Debug,
    {
        let name = object.meta().name.clone().unwrap_or_default();
        let what = format!("{kind} `{name}`");
        for _ in 0..5 {
            match api.get_opt(&name).await.map_err(|e| kube_error(&what, e))? {
                None => match api.create(&PostParams::default(), &object).await {
                    Ok(_) => return Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 409 => continue,
                    Err(e) => return Err(kube_error(&what, e)),
                },
                Some(existing) => {
                    if !is_managed(existing.meta()) {
                        return Err(DriverError::Conflict(format!(
                            "{what} exists and was not made by warden (it lacks the label \
                             {MANAGED_SELECTOR}); delete or rename it"
                        )));
                    }
                    let mut next = object.clone();
                    next.meta_mut().resource_version = existing.meta().resource_version.clone();
                    match api.replace(&name, &PostParams::default(), &next).await {
                        Ok(_) => return Ok(()),
                        Err(kube::Error::Api(s)) if s.code == 409 => continue,
                        Err(e) => return Err(kube_error(&what, e)),
                    }
                }
            }
        }
        Err(DriverError::Conflict(format!(
            "{what} kept changing while warden wrote it; try again"
        )))
    }

    /// The warden template `name`, from its SandboxTemplate.
    async fn template(&self, name: &str) -> Result<Template, DriverError> {
        let what = format!("template `{name}`");
        let st = self
            .sandbox_templates()
            .get_opt(name)
            .await
            .map_err(|e| kube_error(&what, e))?
            .ok_or_else(|| not_found("template", name))?;
        mapping::template_of(&st).ok_or_else(|| not_found("template", name))
    }

    /// The Sandbox `id`, if the driver manages it (made it, claimed it, or it is a member of
    /// one of its pools).
    async fn managed_sandbox(&self, id: &str) -> Result<Sandbox, DriverError> {
        let what = format!("sandbox `{id}`");
        let sandbox = self
            .sandboxes()
            .get_opt(id)
            .await
            .map_err(|e| kube_error(&what, e))?
            .ok_or_else(|| not_found("sandbox", id))?;
        if is_managed(&sandbox.metadata) {
            return Ok(sandbox);
        }
        match mapping::holder(&sandbox) {
            Holder::Pool(pool) => {
                let ours = self
                    .warm_pools()
                    .get_opt(&pool)
                    .await
                    .map_err(|e| kube_error(&what, e))?
                    .is_some_and(|p| is_managed(&p.metadata));
                if ours {
                    return Ok(sandbox);
                }
            }
            Holder::Claim(claim) => {
                let ours = self
                    .claims()
                    .get_opt(&claim)
                    .await
                    .map_err(|e| kube_error(&what, e))?
                    .is_some_and(|c| is_managed(&c.metadata));
                if ours {
                    return Ok(sandbox);
                }
            }
            Holder::None => {}
        }
        Err(not_found("sandbox", id))
    }

    async fn claim_of(&self, sandbox: &Sandbox) -> Result<Option<SandboxClaim>, DriverError> {
        let Holder::Claim(name) = mapping::holder(sandbox) else {
            return Ok(None);
        };
        self.claims()
            .get_opt(&name)
            .await
            .map_err(|e| kube_error(&format!("claim `{name}`"), e))
    }

    async fn info(&self, sandbox: &Sandbox) -> Result<SandboxInfo, DriverError> {
        let claim = self.claim_of(sandbox).await?;
        Ok(mapping::sandbox_info(sandbox, claim.as_ref()))
    }

    /// Waits until `done` says the Sandbox `id` is where it should be, for at most the ready
    /// timeout. `doing` names the wait in the error.
    async fn wait_sandbox(
        &self,
        id: &str,
        doing: &str,
        done: impl Fn(&Sandbox) -> Result<bool, DriverError>,
    ) -> Result<Sandbox, DriverError> {
        let stream = kube::runtime::watcher::watch_object(self.sandboxes(), id).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut last: Option<String> = None;
        let wait = async {
            while let Some(item) = stream.next().await {
                match item {
                    Ok(Some(s)) => {
                        if done(&s)? {
                            return Ok(s);
                        }
                        last = mapping::phase(&s).1;
                    }
                    Ok(None) => return Err(not_found("sandbox", id)),
                    Err(e) => {
                        tracing::debug!(sandbox = id, error = %e, "watching the sandbox");
                        last = Some(format!("cannot watch it: {e}"));
                    }
                }
            }
            Err(DriverError::Unavailable(format!(
                "the watch of sandbox `{id}` ended"
            )))
        };
        match tokio::time::timeout(self.inner.cfg.ready_timeout, wait).await {
            Ok(r) => r,
            Err(_) => Err(DriverError::Unavailable(format!(
                "sandbox `{id}` did not finish {doing} within {}s{}; is the agent-sandbox \
                 controller (`warden controller`) running in the cluster?",
                self.inner.cfg.ready_timeout.as_secs(),
                last.map(|m| format!(" (last: {m})")).unwrap_or_default()
            ))),
        }
    }

    async fn wait_ready(&self, id: &str) -> Result<Sandbox, DriverError> {
        self.wait_sandbox(id, "starting", |s| match mapping::phase(s) {
            (warden_sandbox::Phase::Ready, _) => Ok(true),
            (warden_sandbox::Phase::Failed | warden_sandbox::Phase::Stopped, m) => {
                Err(DriverError::Unavailable(format!(
                    "sandbox `{id}` ended before it was ready: {}",
                    m.unwrap_or_default()
                )))
            }
            _ => Ok(false),
        })
        .await
    }

    /// Waits for the claim `name` from `pool` to be Ready: the Sandbox bound to it.
    async fn wait_claim(&self, name: &str, pool: &str) -> Result<String, DriverError> {
        let stream = kube::runtime::watcher::watch_object(self.claims(), name).default_backoff();
        let mut stream = std::pin::pin!(stream);
        let mut last: Option<(String, String)> = None;
        let mut seen_status = false;
        let wait = async {
            while let Some(item) = stream.next().await {
                match item {
                    Ok(Some(c)) => match mapping::claim_state(&c, pool) {
                        ClaimState::Ready(sandbox) => return Ok(sandbox),
                        ClaimState::Failed(e) => return Err(e),
                        ClaimState::Pending(reason) => {
                            seen_status |= reason.is_some();
                            if reason.is_some() && reason != last {
                                if let Some((r, m)) = &reason {
                                    self.emit(
                                        name,
                                        "pending",
                                        format!("claim from pool {pool}: {r} {m}"),
                                    );
                                }
                                last = reason;
                            }
                        }
                    },
                    Ok(None) => {
                        return Err(DriverError::Conflict(format!(
                            "claim `{name}` from pool `{pool}` was deleted before it was ready"
                        )));
                    }
                    Err(e) => tracing::debug!(claim = name, error = %e, "watching the claim"),
                }
            }
            Err(DriverError::Unavailable(format!(
                "the watch of claim `{name}` ended"
            )))
        };
        match tokio::time::timeout(self.inner.cfg.ready_timeout, wait).await {
            Ok(r) => r,
            Err(_) => {
                let why = match (&last, seen_status) {
                    (Some((r, m)), _) => format!("last: {r} {m}"),
                    (None, _) => "no controller wrote its status; is the agent-sandbox \
                                  controller (`warden controller`) running in the cluster?"
                        .to_string(),
                };
                Err(DriverError::Unavailable(format!(
                    "claim `{name}` from pool `{pool}` was not ready within {}s ({why})",
                    self.inner.cfg.ready_timeout.as_secs()
                )))
            }
        }
    }

    async fn delete_claim_quietly(&self, name: &str) {
        if let Err(e) = self
            .claims()
            .delete(name, &DeleteParams::background())
            .await
            && !is_not_found(&e)
        {
            tracing::warn!(claim = name, error = %e, "could not delete a failed claim");
        }
    }

    /// A sandboxd client for the sandbox `id` through the router, once the driver knows it
    /// manages `id`.
    async fn runtime(&self, id: &str) -> Result<SandboxdClient, DriverError> {
        let sandbox = self.managed_sandbox(id).await?;
        match mapping::phase(&sandbox) {
            (warden_sandbox::Phase::Suspended, _) => {
                return Err(DriverError::Conflict(format!(
                    "sandbox `{id}` is suspended; resume it first"
                )));
            }
            (warden_sandbox::Phase::Stopped | warden_sandbox::Phase::Failed, m) => {
                return Err(DriverError::Conflict(format!(
                    "sandbox `{id}` has ended{}",
                    m.map(|m| format!(": {m}")).unwrap_or_default()
                )));
            }
            _ => {}
        }
        SandboxdClient::via_router(&self.route(id, self.inner.cfg.sandboxd_port))
            .map_err(|e| DriverError::Internal(e.to_string()))
    }

    fn route(&self, id: &str, port: u16) -> RouterRoute {
        RouterRoute {
            router: self.inner.router.authority.clone(),
            sandbox: id.to_string(),
            namespace: self.ns().to_string(),
            port,
            token: self.inner.cfg.router_token.clone(),
        }
    }

    fn client_error(&self, id: &str, e: ClientError) -> DriverError {
        match e {
            // The router answered, not sandboxd: its token or its reach.
            ClientError::Api(body) if body.message.starts_with("router: ") => match body.code {
                ErrorCode::PermissionDenied => DriverError::Internal(format!(
                    "the router at {} refused warden serve ({}); check the router token \
                     (--router-token-file)",
                    self.inner.cfg.router_url, body.message
                )),
                ErrorCode::Unavailable => {
                    DriverError::Unavailable(format!("sandbox `{id}`: {}", body.message))
                }
                _ => DriverError::Sandbox(body),
            },
            ClientError::Api(body) => DriverError::Sandbox(body),
            ClientError::Transport(m) => DriverError::Unavailable(format!(
                "sandbox `{id}`: the router at {} is unreachable: {m}",
                self.inner.cfg.router_url
            )),
        }
    }

    async fn list_all(&self) -> Result<Vec<SandboxInfo>, DriverError> {
        let lp = ListParams::default();
        let sandboxes = self
            .sandboxes()
            .list(&lp)
            .await
            .map_err(|e| kube_error("sandboxes", e))?;
        let claims: BTreeMap<String, SandboxClaim> = self
            .claims()
            .list(&ListParams::default().labels(MANAGED_SELECTOR))
            .await
            .map_err(|e| kube_error("claims", e))?
            .into_iter()
            .filter_map(|c| Some((c.metadata.name.clone()?, c)))
            .collect();
        let pools: Vec<String> = self
            .warm_pools()
            .list(&ListParams::default().labels(MANAGED_SELECTOR))
            .await
            .map_err(|e| kube_error("pools", e))?
            .into_iter()
            .filter_map(|p| p.metadata.name)
            .collect();
        let mut out = Vec::new();
        for s in sandboxes {
            let holder = mapping::holder(&s);
            let claim = match &holder {
                Holder::Claim(c) => claims.get(c),
                _ => None,
            };
            let ours = is_managed(&s.metadata)
                || claim.is_some()
                || matches!(&holder, Holder::Pool(p) if pools.contains(p));
            if ours {
                out.push(mapping::sandbox_info(&s, claim));
            }
        }
        out.sort_by(|a, b| a.id.cmp(&b.id));
        Ok(out)
    }

    fn shutdown_at(&self, request: Option<Duration>, template: Option<&Template>) -> SystemTime {
        SystemTime::now()
            + request
                .or(template.and_then(|t| t.shutdown_after))
                .unwrap_or(DEFAULT_SHUTDOWN_AFTER)
    }

    async fn patch_sandbox(
        &self,
        id: &str,
        patch: serde_json::Value,
    ) -> Result<Sandbox, DriverError> {
        self.sandboxes()
            .patch(id, &PatchParams::default(), &Patch::Merge(&patch))
            .await
            .map_err(|e| kube_error(&format!("sandbox `{id}`"), e))
    }
}

fn labels_json(labels: &BTreeMap<String, String>) -> String {
    serde_json::to_string(labels).unwrap_or_else(|_| "{}".into())
}

#[async_trait::async_trait]
impl Driver for KubeDriver {
    fn name(&self) -> &'static str {
        "kubernetes"
    }

    async fn recover(&self) -> Result<Vec<SandboxInfo>, DriverError> {
        // The cluster is the store: everything the driver made is still there.
        self.list_all().await
    }

    async fn put_template(&self, template: Template) -> Result<(), DriverError> {
        let st = mapping::sandbox_template(&template, &self.inner.defaults)?;
        self.upsert(&self.sandbox_templates(), "SandboxTemplate", st)
            .await
    }

    async fn delete_template(&self, name: &str) -> Result<(), DriverError> {
        let pools = self
            .warm_pools()
            .list(&ListParams::default())
            .await
            .map_err(|e| kube_error("pools", e))?;
        if let Some(p) = pools
            .iter()
            .find(|p| p.spec.sandbox_template_ref.name == name)
        {
            return Err(DriverError::Conflict(format!(
                "template `{name}` is used by pool `{}`; delete the pool first",
                p.metadata.name.as_deref().unwrap_or_default()
            )));
        }
        self.template(name).await?;
        match self
            .sandbox_templates()
            .delete(name, &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Err(not_found("template", name)),
            Err(e) => Err(kube_error(&format!("template `{name}`"), e)),
        }
    }

    async fn templates(&self) -> Vec<Template> {
        match self
            .sandbox_templates()
            .list(&ListParams::default().labels(MANAGED_SELECTOR))
            .await
        {
            Ok(list) => {
                let mut out: Vec<Template> = list.iter().filter_map(mapping::template_of).collect();
                out.sort_by(|a, b| a.name.cmp(&b.name));
                out
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list SandboxTemplates");
                Vec::new()
            }
        }
    }

    async fn put_pool(&self, pool: PoolSpec) -> Result<(), DriverError> {
        warden_sandbox::template::check_pool(&pool)?;
        self.template(&pool.template).await?;
        let object = mapping::warm_pool(&pool, self.ns());
        self.upsert(&self.warm_pools(), "SandboxWarmPool", object)
            .await
    }

    async fn delete_pool(&self, name: &str) -> Result<(), DriverError> {
        let what = format!("pool `{name}`");
        // Only a pool warden made; its unclaimed members go with it (garbage collection).
        let ours = self
            .warm_pools()
            .get_opt(name)
            .await
            .map_err(|e| kube_error(&what, e))?
            .is_some_and(|p| is_managed(&p.metadata));
        if !ours {
            return Err(not_found("pool", name));
        }
        match self
            .warm_pools()
            .delete(name, &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Err(not_found("pool", name)),
            Err(e) => Err(kube_error(&what, e)),
        }
    }

    async fn pools(&self) -> Vec<PoolStatus> {
        match self
            .warm_pools()
            .list(&ListParams::default().labels(MANAGED_SELECTOR))
            .await
        {
            Ok(list) => {
                let mut out: Vec<PoolStatus> = list.iter().map(mapping::pool_status).collect();
                out.sort_by(|a, b| a.name.cmp(&b.name));
                out
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot list SandboxWarmPools");
                Vec::new()
            }
        }
    }

    async fn create(&self, request: CreateRequest) -> Result<SandboxInfo, DriverError> {
        warden_sandbox::template::check_positive("shutdown_after", request.shutdown_after)?;
        warden_sandbox::template::check_positive("idle_timeout", request.idle_timeout)?;
        if request.workspace.is_some() {
            return Err(DriverError::InvalidArgument {
                field: "workspace".into(),
                message: "a host directory cannot be a pod's workspace".into(),
            });
        }
        let template = self.template(&request.template).await?;
        let st = self
            .sandbox_templates()
            .get(&request.template)
            .await
            .map_err(|e| kube_error(&format!("template `{}`", request.template), e))?;
        let mut spec = crate::reconcile::template::sandbox_spec(&st.spec);
        if !request.env.is_empty() {
            // The request's variables join the policy's; hardening again keeps warden's own.
            let pod = mapping::pod_spec(&template, &request.env, &self.inner.defaults)?;
            spec.pod_template.spec = pod;
            crate::reconcile::template::apply_secure_defaults(
                &st.spec,
                &mut spec.pod_template.spec,
            );
        }
        let id = names::sandbox_id()?;
        let selector = template_pod_selector(&request.template);
        spec.pod_template.metadata.labels.extend(selector.clone());
        spec.shutdown_time = Some(mapping::to_time(
            self.shutdown_at(request.shutdown_after, Some(&template)),
        ));
        spec.shutdown_policy = ShutdownPolicy::Delete;
        let mut labels: BTreeMap<String, String> = selector;
        labels.insert(MANAGED_BY.into(), WARDEN.into());
        labels.insert(LAUNCH_TYPE.into(), LAUNCH_TYPE_COLD.into());
        let mut sandbox = Sandbox::new(&id, spec);
        sandbox.metadata.namespace = Some(self.ns().to_string());
        sandbox.metadata.labels = Some(labels);
        sandbox.metadata.annotations = Some(BTreeMap::from([
            (
                SANDBOX_TEMPLATE_REF_ANNOTATION.to_string(),
                request.template.clone(),
            ),
            (ANNOTATION_LABELS.to_string(), labels_json(&request.labels)),
        ]));
        self.sandboxes()
            .create(&PostParams::default(), &sandbox)
            .await
            .map_err(|e| kube_error(&format!("sandbox `{id}`"), e))?;
        self.emit(
            &id,
            "created",
            format!("cold, from template {}", request.template),
        );
        match self.wait_ready(&id).await {
            Ok(s) => self.info(&s).await,
            Err(e) => {
                let _ = self
                    .sandboxes()
                    .delete(&id, &DeleteParams::background())
                    .await;
                self.emit(&id, "failed", e.to_string());
                Err(e)
            }
        }
    }

    async fn claim(&self, request: ClaimRequest) -> Result<SandboxInfo, DriverError> {
        warden_sandbox::template::check_positive("shutdown_after", request.shutdown_after)?;
        warden_sandbox::template::check_positive("idle_timeout", request.idle_timeout)?;
        names::check_label("pool", &request.pool)?;
        // The template's shutdown_after, when the pool and template are there to say it.
        let template = match self.warm_pools().get_opt(&request.pool).await {
            Ok(Some(p)) => self.template(&p.spec.sandbox_template_ref.name).await.ok(),
            _ => None,
        };
        let name = names::sandbox_id()?;
        let shutdown = self.shutdown_at(request.shutdown_after, template.as_ref());
        let mut claim = SandboxClaim::new(
            &name,
            SandboxClaimSpec {
                warm_pool_ref: WarmPoolRef {
                    name: request.pool.clone(),
                },
                lifecycle: Some(ClaimLifecycle {
                    shutdown_time: Some(mapping::to_time(shutdown)),
                    ttl_seconds_after_finished: None,
                    shutdown_policy: ClaimShutdownPolicy::Delete,
                }),
                additional_pod_metadata: Default::default(),
                env: Vec::new(),
                volume_claim_templates: Vec::new(),
            },
        );
        claim.metadata.namespace = Some(self.ns().to_string());
        claim.metadata.labels = Some(BTreeMap::from([(MANAGED_BY.into(), WARDEN.into())]));
        claim.metadata.annotations = Some(BTreeMap::from([(
            ANNOTATION_LABELS.to_string(),
            labels_json(&request.labels),
        )]));
        self.claims()
            .create(&PostParams::default(), &claim)
            .await
            .map_err(|e| kube_error(&format!("claim `{name}`"), e))?;
        let sandbox = match self.wait_claim(&name, &request.pool).await {
            Ok(s) => s,
            Err(e) => {
                self.delete_claim_quietly(&name).await;
                return Err(e);
            }
        };
        // Mark the Sandbox as warden's, with the caller's labels, so that it is found and
        // watched like the ones the driver creates.
        let patch = json!({
            "metadata": {
                "labels": {MANAGED_BY: WARDEN, LABEL_CLAIM: name},
                "annotations": {
                    ANNOTATION_POOL: request.pool,
                    ANNOTATION_LABELS: labels_json(&request.labels),
                },
            }
        });
        let s = match self.patch_sandbox(&sandbox, patch).await {
            Ok(s) => s,
            Err(e) => {
                self.delete_claim_quietly(&name).await;
                return Err(e);
            }
        };
        let info = self.info(&s).await?;
        let how = match info.launch {
            warden_sandbox::Launch::Warm => "warm",
            warden_sandbox::Launch::Cold => "cold",
        };
        self.emit(
            &info.id,
            "claimed",
            format!("{how}, from pool {} (claim {name})", request.pool),
        );
        Ok(info)
    }

    async fn get(&self, id: &str) -> Result<SandboxInfo, DriverError> {
        let s = self.managed_sandbox(id).await?;
        self.info(&s).await
    }

    async fn list(&self) -> Vec<SandboxInfo> {
        match self.list_all().await {
            Ok(l) => l,
            Err(e) => {
                tracing::warn!(error = %e, "cannot list sandboxes");
                Vec::new()
            }
        }
    }

    async fn delete(&self, id: &str) -> Result<(), DriverError> {
        let s = self.managed_sandbox(id).await?;
        let result = match mapping::holder(&s) {
            Holder::Claim(claim) => self
                .claims()
                .delete(&claim, &DeleteParams::background())
                .await
                .map(drop)
                .or_else(|e| {
                    if is_not_found(&e) {
                        Ok(())
                    } else {
                        Err(kube_error(&format!("claim `{claim}`"), e))
                    }
                }),
            _ => Ok(()),
        };
        result?;
        match self
            .sandboxes()
            .delete(id, &DeleteParams::background())
            .await
        {
            Ok(_) => Ok(()),
            Err(e) if is_not_found(&e) => Ok(()),
            Err(e) => Err(kube_error(&format!("sandbox `{id}`"), e)),
        }
    }

    async fn suspend(&self, id: &str) -> Result<SandboxInfo, DriverError> {
        let s = self.managed_sandbox(id).await?;
        if let Holder::Pool(p) = mapping::holder(&s) {
            return Err(DriverError::Conflict(format!(
                "sandbox `{id}` is an unclaimed member of pool `{p}`; claim it first"
            )));
        }
        self.patch_sandbox(
            id,
            json!({"spec": {"operatingMode": OperatingMode::Suspended}}),
        )
        .await?;
        let s = self
            .wait_sandbox(id, "suspending", |s| {
                Ok(mapping::phase(s).0 == warden_sandbox::Phase::Suspended)
            })
            .await?;
        self.info(&s).await
    }

    async fn resume(&self, id: &str) -> Result<SandboxInfo, DriverError> {
        let s = self.managed_sandbox(id).await?;
        if s.spec.operating_mode != OperatingMode::Suspended {
            return Err(DriverError::Conflict(format!(
                "sandbox `{id}` is not suspended"
            )));
        }
        self.patch_sandbox(
            id,
            json!({"spec": {"operatingMode": OperatingMode::Running}}),
        )
        .await?;
        let s = self.wait_ready(id).await?;
        self.info(&s).await
    }

    async fn set_shutdown(
        &self,
        id: &str,
        at: Option<SystemTime>,
    ) -> Result<SandboxInfo, DriverError> {
        let s = self.managed_sandbox(id).await?;
        let time = at.map(mapping::to_time);
        match mapping::holder(&s) {
            Holder::Pool(p) => {
                return Err(DriverError::Conflict(format!(
                    "sandbox `{id}` is an unclaimed member of pool `{p}`; claim it first"
                )));
            }
            Holder::Claim(claim) => {
                let patch = json!({"spec": {"lifecycle": {"shutdownTime": time}}});
                self.claims()
                    .patch(&claim, &PatchParams::default(), &Patch::Merge(&patch))
                    .await
                    .map_err(|e| kube_error(&format!("claim `{claim}`"), e))?;
            }
            Holder::None => {
                self.patch_sandbox(id, json!({"spec": {"shutdownTime": time}}))
                    .await?;
            }
        }
        let message = match at {
            Some(t) => format!("deleted at {}", humantime_rfc3339(t)),
            None => "no shutdown time".to_string(),
        };
        self.emit(id, "timeout_set", message);
        self.get(id).await
    }

    async fn exec(&self, id: &str, request: ExecRequest) -> Result<ExecResult, DriverError> {
        let c = self.runtime(id).await?;
        c.exec(&request).await.map_err(|e| self.client_error(id, e))
    }

    async fn exec_stream(
        &self,
        id: &str,
        request: ExecRequest,
    ) -> Result<ExecSession, DriverError> {
        let c = self.runtime(id).await?;
        let s = c
            .exec_stream(request)
            .await
            .map_err(|e| self.client_error(id, e))?;
        Ok(warden_sandbox::relay_exec_stream(s, Box::new(())))
    }

    async fn read_file(&self, id: &str, path: &str) -> Result<ByteStream, DriverError> {
        let c = self.runtime(id).await?;
        let body = c
            .read_file(path)
            .await
            .map_err(|e| self.client_error(id, e))?;
        Ok(Box::pin(
            body.into_data_stream()
                .map_err(|e| std::io::Error::other(e.to_string())),
        ))
    }

    async fn write_file(
        &self,
        id: &str,
        path: &str,
        mode: Option<u32>,
        body: ByteStream,
    ) -> Result<(), DriverError> {
        let c = self.runtime(id).await?;
        let body = axum_body(body);
        c.write_file(path, mode, body)
            .await
            .map_err(|e| self.client_error(id, e))
    }

    async fn list_dir(&self, id: &str, path: &str) -> Result<DirListing, DriverError> {
        let c = self.runtime(id).await?;
        c.list_dir(path).await.map_err(|e| self.client_error(id, e))
    }

    async fn exists(&self, id: &str, path: &str) -> Result<bool, DriverError> {
        let c = self.runtime(id).await?;
        c.exists(path).await.map_err(|e| self.client_error(id, e))
    }

    async fn remove(&self, id: &str, path: &str, recursive: bool) -> Result<(), DriverError> {
        let c = self.runtime(id).await?;
        c.remove(path, recursive)
            .await
            .map_err(|e| self.client_error(id, e))
    }

    async fn mkdir(&self, id: &str, path: &str) -> Result<(), DriverError> {
        let c = self.runtime(id).await?;
        c.mkdir(path).await.map_err(|e| self.client_error(id, e))
    }

    async fn connect_runtime(&self, id: &str, port: u16) -> Result<RuntimeConn, DriverError> {
        let _ = port;
        self.managed_sandbox(id).await?;
        let addr = &self.inner.router.authority;
        let stream = tokio::net::TcpStream::connect(addr.as_str())
            .await
            .map_err(|e| {
                DriverError::Unavailable(format!(
                    "sandbox `{id}`: the router at {} is unreachable: {e}",
                    self.inner.cfg.router_url
                ))
            })?;
        let _ = stream.set_nodelay(true);
        Ok(RuntimeConn::Tcp(stream))
    }

    fn runtime_route(&self, id: &str, port: u16) -> RuntimeRoute {
        let headers = self
            .route(id, port)
            .headers()
            .map(|h| {
                h.iter()
                    .filter_map(|(k, v)| Some((k.to_string(), v.to_str().ok()?.to_string())))
                    .collect()
            })
            .unwrap_or_default();
        RuntimeRoute {
            namespace: self.ns().to_string(),
            headers,
        }
    }

    fn events(&self) -> broadcast::Receiver<SandboxEvent> {
        self.inner.events.subscribe()
    }
}

fn humantime_rfc3339(t: SystemTime) -> String {
    mapping::to_time(t).0.to_string()
}

/// A body for sandboxd from the driver's byte stream.
fn axum_body(body: ByteStream) -> axum::body::Body {
    axum::body::Body::from_stream(body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn router_urls() {
        let ok = |url: &str, authority: &str, ns: Option<&str>| {
            assert_eq!(
                parse_router_url(url).unwrap(),
                RouterAddr {
                    authority: authority.into(),
                    namespace: ns.map(Into::into)
                },
                "{url}"
            );
        };
        ok(
            DEFAULT_ROUTER_URL,
            "sandbox-router-svc.warden-system.svc:8080",
            Some("warden-system"),
        );
        ok("http://router.team:8080/", "router.team:8080", Some("team"));
        ok(
            "http://r.ns.svc.cluster.local:80",
            "r.ns.svc.cluster.local:80",
            Some("ns"),
        );
        ok("http://127.0.0.1:9000", "127.0.0.1:9000", None);
        ok("http://localhost", "localhost:80", None);
        ok("http://[::1]:8080", "[::1]:8080", None);
        ok(
            "http://router.example.com:8080",
            "router.example.com:8080",
            None,
        );
        for bad in [
            "router:8080",
            "https://router:8080",
            "http://router:8080/api",
            "http://user:pw@router:8080",
            "not a url",
            "http://",
        ] {
            let e = parse_router_url(bad).unwrap_err();
            assert_eq!(e.field, "router_url", "{bad}");
            assert!(e.message.contains(bad), "{bad}: {e}");
        }
    }

    #[test]
    fn config_errors_name_the_field() {
        let good = KubeDriverConfig::new("team", "ghcr.io/warden-sandbox/warden:0.1.0");
        good.validate().unwrap();
        type Change = fn(&mut KubeDriverConfig);
        let cases: [(&str, Change); 7] = [
            ("namespace", |c| c.namespace = "Team".into()),
            ("router_url", |c| c.router_url = "ftp://x".into()),
            ("router_token", |c| c.router_token = Some("a b".into())),
            ("router_token", |c| c.router_token = Some(String::new())),
            ("image", |c| c.image = " ".into()),
            ("sandboxd_port", |c| c.sandboxd_port = 0),
            ("ready_timeout", |c| c.ready_timeout = Duration::ZERO),
        ];
        for (field, change) in cases {
            let mut c = good.clone();
            change(&mut c);
            assert_eq!(c.validate().unwrap_err().field, field);
        }
        let mut c = good;
        c.router_token = Some("secret-token".into());
        assert!(!format!("{c:?}").contains("secret-token"));
    }
}
