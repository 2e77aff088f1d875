//! The `Driver` trait: what `warden serve` asks of a sandbox back end (the local driver here,
//! the Kubernetes driver later), and the types it speaks.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use tokio::sync::{broadcast, mpsc};
use warden_sandboxd::proto::{
    DirListing, ErrorBody, ErrorCode, ExecControl, ExecEvent, ExecRequest, ExecResult,
};

/// A stream of file bytes, in or out.
pub type ByteStream = Pin<Box<dyn Stream<Item = std::io::Result<Bytes>> + Send + 'static>>;

/// A sandbox template, shaped like agent-sandbox's SandboxTemplate: everything a sandbox is
/// made from.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    /// DNS-1123 label: lowercase letters, digits and `-`, at most 63 characters.
    pub name: String,
    /// The sandbox policy in the policy-file format (see `warden_policy::PolicyFile`): the
    /// profile, root view, resources, environment, allowed domains and credential routes.
    /// Its `filesystem.workspace` must be unset: every sandbox gets a workspace of its own.
    #[serde(default)]
    pub policy: toml::Table,
    /// How long a sandbox lives after it is created or claimed, unless its owner changes
    /// it [default: 1h]. Humantime in JSON and TOML ("30m").
    #[serde(default, with = "opt_duration")]
    pub shutdown_after: Option<Duration>,
    /// Stop a sandbox after this long without an exec or file call [default: 15m].
    #[serde(default, with = "opt_duration")]
    pub idle_timeout: Option<Duration>,
    /// Largest total size of the workspace that uploads may reach [default: 1G].
    #[serde(default)]
    pub workspace_quota: Option<u64>,
}

/// A warm pool, shaped like SandboxWarmPool: `replicas` ready members of `template`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolSpec {
    pub name: String,
    pub template: String,
    #[serde(default = "one")]
    pub replicas: u32,
}

fn one() -> u32 {
    1
}

/// A pool as it is now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolStatus {
    pub name: String,
    pub template: String,
    pub replicas: u32,
    /// Members ready to be claimed.
    pub ready: u32,
    /// Members being created.
    pub starting: u32,
}

/// `create`: a cold sandbox from a template.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRequest {
    pub template: String,
    /// Overrides the template's `shutdown_after`.
    #[serde(default, with = "opt_duration")]
    pub shutdown_after: Option<Duration>,
    /// Overrides the template's `idle_timeout`.
    #[serde(default, with = "opt_duration")]
    pub idle_timeout: Option<Duration>,
    /// Variables for every command in the sandbox (on top of the policy's).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// A host directory to use as the workspace instead of a fresh one (`warden agent` on
    /// a local repository). Only in-process callers can set it: it is never read from the
    /// API, whose clients must not choose host paths. The directory is left in place when
    /// the sandbox ends.
    #[serde(skip)]
    pub workspace: Option<PathBuf>,
}

/// `claim`: a ready member of a warm pool, or a cold create of the pool's template when the
/// pool is empty.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ClaimRequest {
    pub pool: String,
    #[serde(default, with = "opt_duration")]
    pub shutdown_after: Option<Duration>,
    #[serde(default, with = "opt_duration")]
    pub idle_timeout: Option<Duration>,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// Where a sandbox is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Phase {
    /// Being created; not answering yet.
    Starting,
    /// Running and answering.
    Ready,
    /// Frozen (cgroup freezer): no process runs; exec and files refuse until resumed.
    Suspended,
    /// Its processes died or never started; `message` says why. Nothing of it remains.
    Failed,
    /// Deleted, expired or stopped for idleness; nothing of it remains.
    Stopped,
}

/// How a sandbox came to its owner.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Launch {
    Cold,
    Warm,
}

/// A sandbox as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxInfo {
    /// DNS-1123 label (the router's `X-Sandbox-ID`).
    pub id: String,
    pub template: String,
    /// The pool it came from (or is waiting in, while `pool_member`).
    pub pool: Option<String>,
    /// Still an unclaimed member of `pool`: not handed to anyone yet.
    pub pool_member: bool,
    pub phase: Phase,
    pub launch: Launch,
    #[serde(with = "time_rfc3339")]
    pub created_at: SystemTime,
    #[serde(with = "opt_time_rfc3339")]
    pub shutdown_at: Option<SystemTime>,
    #[serde(with = "opt_duration")]
    pub idle_timeout: Option<Duration>,
    #[serde(with = "time_rfc3339")]
    pub last_activity: SystemTime,
    pub labels: BTreeMap<String, String>,
    /// Why it failed or stopped.
    pub message: Option<String>,
}

/// What the driver persists about a sandbox so that a restarted server can find it again.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SandboxRecord {
    pub info: SandboxInfo,
    /// The driver's own handle (local: supervisor pid, socket, cgroups, directory).
    pub runtime: serde_json::Value,
}

/// An address a runtime server answers on (what a test double connects to).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    Unix(PathBuf),
    Tcp(std::net::SocketAddr),
}

impl Endpoint {
    /// Connects to the address.
    pub async fn connect(&self) -> std::io::Result<RuntimeConn> {
        match self {
            Endpoint::Unix(path) => tokio::net::UnixStream::connect(path)
                .await
                .map(RuntimeConn::Unix),
            Endpoint::Tcp(addr) => tokio::net::TcpStream::connect(addr)
                .await
                .map(RuntimeConn::Tcp),
        }
    }
}

/// A connection to a sandbox's runtime server, opened by the driver for the router
/// contract. The driver opens it, not the caller, because the address alone cannot be
/// trusted: a local sandbox's socket sits in a directory its commands can write, so only the
/// driver, which pinned the socket sandboxd bound, can tell it from an impostor.
#[derive(Debug)]
pub enum RuntimeConn {
    Unix(tokio::net::UnixStream),
    Tcp(tokio::net::TcpStream),
}

/// How requests sent over a [`Driver::connect_runtime`] connection are addressed, for the
/// router contract. A local connection reaches sandboxd itself; a driver whose runtimes sit
/// behind a router (Kubernetes) connects to that router, and the request must name the
/// sandbox there.
#[derive(Clone, PartialEq, Eq)]
pub struct RuntimeRoute {
    /// The `X-Sandbox-Namespace` the driver's sandboxes answer to; a request naming another
    /// gets the router's answer for an unknown sandbox.
    pub namespace: String,
    /// Headers the request must carry (`X-Sandbox-ID`, `X-Sandbox-Namespace`,
    /// `X-Sandbox-Port`, the router's `Authorization`). When there are any, the caller's own
    /// `X-Sandbox-*` headers are dropped first, so that only the driver names the target
    /// (never, say, a caller's `X-Sandbox-Pod-IP`).
    pub headers: Vec<(String, String)>,
}

impl Default for RuntimeRoute {
    /// Local: the `default` namespace, and the connection is sandboxd itself.
    fn default() -> RuntimeRoute {
        RuntimeRoute {
            namespace: "default".into(),
            headers: Vec::new(),
        }
    }
}

impl std::fmt::Debug for RuntimeRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Header names only: one may carry the router's token.
        let names: Vec<&str> = self.headers.iter().map(|(k, _)| k.as_str()).collect();
        f.debug_struct("RuntimeRoute")
            .field("namespace", &self.namespace)
            .field("headers", &names)
            .finish()
    }
}

/// Something that happened to a sandbox, for `/events` and the console.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SandboxEvent {
    #[serde(with = "time_rfc3339")]
    pub time: SystemTime,
    pub sandbox: String,
    /// created, claimed, ready, suspended, resumed, timeout_set, deleted, expired, idle,
    /// failed, pool_refilled.
    pub kind: String,
    pub message: String,
}

impl SandboxEvent {
    /// An event happening now.
    pub fn now(sandbox: &str, kind: &str, message: impl Into<String>) -> SandboxEvent {
        SandboxEvent {
            time: SystemTime::now(),
            sandbox: sandbox.to_string(),
            kind: kind.to_string(),
            message: message.into(),
        }
    }
}

/// Input to a streaming exec.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StdinMsg {
    Data(Bytes),
    Control(ExecControl),
}

/// Output of a streaming exec: bytes on stdout or stderr, or an event (`Started`, then
/// `Exit` or `Error` last).
#[derive(Debug, Clone, PartialEq)]
pub enum StreamItem {
    Stdout(Bytes),
    Stderr(Bytes),
    Event(ExecEvent),
}

/// A running streaming exec. Dropping `stdin` closes the command's stdin; dropping the
/// whole session kills the command.
#[derive(Debug)]
pub struct ExecSession {
    pub stdin: mpsc::Sender<StdinMsg>,
    pub output: mpsc::Receiver<StreamItem>,
}

/// Why a driver call failed. Each maps to one HTTP status and a JSON body naming the problem.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum DriverError {
    /// `kind` is "template", "pool", "sandbox" or "path".
    #[error("{kind} `{name}` not found")]
    NotFound { kind: &'static str, name: String },
    #[error("{field}: {message}")]
    InvalidArgument { field: String, message: String },
    /// The sandbox is in a phase that does not allow the call (suspended, stopped, ...), or
    /// the object exists already.
    #[error("{0}")]
    Conflict(String),
    /// A quota or limit: upload over the workspace quota, too many sandboxes.
    #[error("{0}")]
    QuotaExceeded(String),
    /// The sandbox or its runtime server did not answer.
    #[error("{0}")]
    Unavailable(String),
    /// An error reported by the sandbox's runtime server, passed through.
    #[error("{0}")]
    Sandbox(ErrorBody),
    #[error("{0}")]
    Internal(String),
}

impl DriverError {
    /// The HTTP status for this error.
    pub fn http_status(&self) -> u16 {
        match self {
            DriverError::NotFound { .. } => 404,
            DriverError::InvalidArgument { .. } => 400,
            DriverError::Conflict(_) => 409,
            DriverError::QuotaExceeded(_) => 413,
            DriverError::Unavailable(_) => 503,
            DriverError::Sandbox(b) => b.code.http_status(),
            DriverError::Internal(_) => 500,
        }
    }

    /// The sandboxd-style error code for this error.
    pub fn code(&self) -> ErrorCode {
        match self {
            DriverError::NotFound { .. } => ErrorCode::NotFound,
            DriverError::InvalidArgument { .. } => ErrorCode::InvalidArgument,
            DriverError::Conflict(_) => ErrorCode::Conflict,
            DriverError::QuotaExceeded(_) => ErrorCode::ResourceExhausted,
            DriverError::Unavailable(_) => ErrorCode::Unavailable,
            DriverError::Sandbox(b) => b.code,
            DriverError::Internal(_) => ErrorCode::Internal,
        }
    }
}

/// Persistence for sandbox records (SQLite in `warden serve`, memory in tests).
#[async_trait::async_trait]
pub trait SandboxStore: Send + Sync + std::fmt::Debug {
    async fn put(&self, record: &SandboxRecord) -> Result<(), String>;
    async fn remove(&self, id: &str) -> Result<(), String>;
    async fn load_all(&self) -> Result<Vec<SandboxRecord>, String>;
}

/// A sandbox back end.
#[async_trait::async_trait]
pub trait Driver: Send + Sync + std::fmt::Debug {
    /// "local" or "kubernetes".
    fn name(&self) -> &'static str;

    /// Finds the sandboxes of a previous run in the store: live ones are adopted, dead ones
    /// marked `Failed` and their remains removed. Call once, before anything else.
    async fn recover(&self) -> Result<Vec<SandboxInfo>, DriverError>;

    async fn put_template(&self, template: Template) -> Result<(), DriverError>;
    /// Refused (Conflict) while a pool uses the template.
    async fn delete_template(&self, name: &str) -> Result<(), DriverError>;
    async fn templates(&self) -> Vec<Template>;

    /// Creates or resizes a pool; the driver fills it in the background.
    async fn put_pool(&self, pool: PoolSpec) -> Result<(), DriverError>;
    /// Deletes the pool and its unclaimed members.
    async fn delete_pool(&self, name: &str) -> Result<(), DriverError>;
    async fn pools(&self) -> Vec<PoolStatus>;

    async fn create(&self, request: CreateRequest) -> Result<SandboxInfo, DriverError>;
    async fn claim(&self, request: ClaimRequest) -> Result<SandboxInfo, DriverError>;
    async fn get(&self, id: &str) -> Result<SandboxInfo, DriverError>;
    /// Every sandbox, unclaimed pool members included.
    async fn list(&self) -> Vec<SandboxInfo>;
    async fn delete(&self, id: &str) -> Result<(), DriverError>;
    async fn suspend(&self, id: &str) -> Result<SandboxInfo, DriverError>;
    async fn resume(&self, id: &str) -> Result<SandboxInfo, DriverError>;
    /// Sets (or with `None`, clears) the time the sandbox is deleted.
    async fn set_shutdown(
        &self,
        id: &str,
        at: Option<SystemTime>,
    ) -> Result<SandboxInfo, DriverError>;

    async fn exec(&self, id: &str, request: ExecRequest) -> Result<ExecResult, DriverError>;
    async fn exec_stream(&self, id: &str, request: ExecRequest)
    -> Result<ExecSession, DriverError>;

    /// Paths are relative to the workspace (or absolute inside the sandbox, under it).
    async fn read_file(&self, id: &str, path: &str) -> Result<ByteStream, DriverError>;
    async fn write_file(
        &self,
        id: &str,
        path: &str,
        mode: Option<u32>,
        body: ByteStream,
    ) -> Result<(), DriverError>;
    async fn list_dir(&self, id: &str, path: &str) -> Result<DirListing, DriverError>;
    async fn exists(&self, id: &str, path: &str) -> Result<bool, DriverError>;
    async fn remove(&self, id: &str, path: &str, recursive: bool) -> Result<(), DriverError>;
    async fn mkdir(&self, id: &str, path: &str) -> Result<(), DriverError>;

    /// Connects to the sandbox's runtime server on `port` (8888 legacy REST, 8080 sandboxd
    /// REST, 9090 gRPC), for the router contract. Counts as activity for the idle timeout.
    async fn connect_runtime(&self, id: &str, port: u16) -> Result<RuntimeConn, DriverError>;

    /// How a request sent over [`Driver::connect_runtime`]'s connection to sandbox `id`'s
    /// `port` is addressed. The default suits a driver whose connection reaches the runtime
    /// itself, in the `default` namespace.
    fn runtime_route(&self, id: &str, port: u16) -> RuntimeRoute {
        let _ = (id, port);
        RuntimeRoute::default()
    }

    fn events(&self) -> broadcast::Receiver<SandboxEvent>;
}

/// serde for `Option<Duration>` as humantime text ("30m", "1h 30m").
pub mod opt_duration {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
        match d {
            Some(d) => s.serialize_str(&humantime::format_duration(*d).to_string()),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| {
            humantime::parse_duration(&t).map_err(|e| {
                serde::de::Error::custom(format!(
                    "`{t}` is not a duration ({e}); write e.g. 30s, 15m, 1h30m"
                ))
            })
        })
        .transpose()
    }
}

/// serde for `SystemTime` as RFC 3339 (UTC).
pub mod time_rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &SystemTime, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&humantime::format_rfc3339_millis(*t).to_string())
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<SystemTime, D::Error> {
        let text = String::deserialize(d)?;
        humantime::parse_rfc3339_weak(&text).map_err(serde::de::Error::custom)
    }
}

/// serde for `Option<SystemTime>` as RFC 3339 (UTC).
pub mod opt_time_rfc3339 {
    use std::time::SystemTime;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(t: &Option<SystemTime>, s: S) -> Result<S::Ok, S::Error> {
        match t {
            Some(t) => super::time_rfc3339::serialize(t, s),
            None => s.serialize_none(),
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<SystemTime>, D::Error> {
        let text: Option<String> = Option::deserialize(d)?;
        text.map(|t| humantime::parse_rfc3339_weak(&t).map_err(serde::de::Error::custom))
            .transpose()
    }
}
