//! The local driver: each sandbox is a persistent jail on this machine.
//!
//! A sandbox lives in `<data>/sandboxes/<id>/`. Its supervisor is a detached `warden run`
//! (a session of its own, so it outlives `warden serve` like a container shim) whose jailed
//! command is `warden sandboxd`, listening on a unix socket in the sandbox's `run`
//! directory; sandboxd starts commands on request, inside the jail. Suspend freezes the
//! sandbox's cgroup; delete kills the cgroup, waits for the supervisor and removes the
//! cgroups and the directory. A reaper ends sandboxes at their shutdown time or after their
//! idle timeout, and each warm pool has a refiller that keeps `replicas` members ready.

mod cgroups;
mod health;
mod process;
pub(crate) mod runtime;

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use tokio::sync::{Notify, broadcast};
use warden_sandboxd::proto::{DirListing, ExecRequest, ExecResult};

pub use cgroups::SandboxCgroups;
use health::SocketId;
use process::{JailState, Layout, ProcessId};

use crate::driver::{
    ByteStream, ClaimRequest, CreateRequest, Driver, DriverError, ExecSession, Launch, Phase,
    PoolSpec, PoolStatus, RuntimeConn, SandboxEvent, SandboxInfo, SandboxRecord, SandboxStore,
    Template,
};
use crate::{names, plan, template};

/// How the local driver runs.
#[derive(Debug, Clone)]
pub struct LocalConfig {
    /// Holds `sandboxes/<id>/`. Must not be under a home directory or `/root` (the
    /// workspace may not lie on the sensitive-path blocklist).
    pub data_dir: PathBuf,
    /// The `warden` binary that runs the supervisor and sandboxd [default: this process's
    /// executable].
    pub warden_exe: PathBuf,
    /// Extra `warden run` flags for every sandbox, e.g. `--allow-degraded cgroups` on a host
    /// without delegated cgroups.
    pub run_args: Vec<OsString>,
    /// Replaces `warden sandboxd ...` as the jailed command (a stand-in for development);
    /// `{socket}`, `{workspace}` and `{quota}` are substituted.
    pub runtime_command: Option<Vec<String>>,
    /// How long a sandbox may take to answer `/v1/health` after its supervisor starts.
    pub ready_timeout: Duration,
    /// How often the reaper looks at shutdown times, idle timeouts and adopted supervisors.
    pub reaper_interval: Duration,
    /// How long the record of a stopped or failed sandbox is kept.
    pub retain_finished: Duration,
    pub default_shutdown_after: Duration,
    pub default_idle_timeout: Duration,
    pub default_quota: u64,
}

impl LocalConfig {
    /// Defaults, with the warden binary being this process's executable.
    pub fn new(data_dir: impl Into<PathBuf>) -> std::io::Result<LocalConfig> {
        Ok(LocalConfig::with_exe(data_dir, std::env::current_exe()?))
    }

    /// Defaults with the given warden binary (tests pass `env!("CARGO_BIN_EXE_warden")`).
    pub fn with_exe(data_dir: impl Into<PathBuf>, warden_exe: impl Into<PathBuf>) -> LocalConfig {
        LocalConfig {
            data_dir: data_dir.into(),
            warden_exe: warden_exe.into(),
            run_args: Vec::new(),
            runtime_command: None,
            ready_timeout: Duration::from_secs(20),
            reaper_interval: Duration::from_secs(1),
            retain_finished: Duration::from_secs(3600),
            default_shutdown_after: Duration::from_secs(3600),
            default_idle_timeout: Duration::from_secs(15 * 60),
            default_quota: 1 << 30,
        }
    }
}

/// The local driver's handle on one sandbox, persisted as `SandboxRecord::runtime`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LocalRuntime {
    pub dir: PathBuf,
    pub supervisor: Option<ProcessId>,
    pub jail: Option<JailState>,
    pub socket: Option<SocketId>,
    pub quota: u64,
    /// A host directory given as the workspace (never removed with the sandbox).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workspace: Option<PathBuf>,
}

#[derive(Debug)]
struct Entry {
    info: SandboxInfo,
    rt: LocalRuntime,
    /// Exec and file calls in progress.
    active: u32,
    /// A delete or stop is under way: no new calls.
    deleting: bool,
    /// When it became Stopped or Failed.
    finished_at: Option<SystemTime>,
    /// Its supervisor is not our child (adopted by `recover`): the reaper checks it.
    adopted: bool,
}

#[derive(Debug)]
struct PoolState {
    spec: PoolSpec,
    /// Ready members, oldest first: a claim pops the front.
    ready: VecDeque<String>,
    wake: Arc<Notify>,
}

#[derive(Debug, Default)]
struct State {
    templates: BTreeMap<String, Template>,
    pools: BTreeMap<String, PoolState>,
    sandboxes: HashMap<String, Entry>,
}

#[derive(Debug)]
struct Inner {
    cfg: LocalConfig,
    store: Arc<dyn SandboxStore>,
    events: broadcast::Sender<SandboxEvent>,
    state: Mutex<State>,
}

/// The local driver. Create it inside a tokio runtime: it starts its reaper at once.
#[derive(Debug)]
pub struct LocalDriver {
    inner: Arc<Inner>,
    reaper: tokio::task::JoinHandle<()>,
}

impl Drop for LocalDriver {
    fn drop(&mut self) {
        // Sandboxes outlive the driver on purpose (a restarted server adopts them); only
        // the background work stops.
        self.reaper.abort();
    }
}

fn not_found(kind: &'static str, name: &str) -> DriverError {
    DriverError::NotFound {
        kind,
        name: name.to_string(),
    }
}

fn phase_name(p: Phase) -> &'static str {
    match p {
        Phase::Starting => "starting",
        Phase::Ready => "ready",
        Phase::Suspended => "suspended",
        Phase::Failed => "failed",
        Phase::Stopped => "stopped",
    }
}

fn after(now: SystemTime, d: Duration) -> Option<SystemTime> {
    now.checked_add(d)
}

impl LocalDriver {
    pub fn new(cfg: LocalConfig, store: Arc<dyn SandboxStore>) -> Result<LocalDriver, DriverError> {
        if !cfg.data_dir.is_absolute() {
            return Err(DriverError::InvalidArgument {
                field: "data_dir".into(),
                message: format!("`{}` must be an absolute path", cfg.data_dir.display()),
            });
        }
        std::fs::create_dir_all(cfg.data_dir.join("sandboxes")).map_err(|e| {
            DriverError::Internal(format!("cannot create {}: {e}", cfg.data_dir.display()))
        })?;
        let (events, _) = broadcast::channel(1024);
        let inner = Arc::new(Inner {
            cfg,
            store,
            events,
            state: Mutex::new(State::default()),
        });
        let reaper = tokio::spawn(reaper(Arc::downgrade(&inner)));
        Ok(LocalDriver { inner, reaper })
    }

    /// Where sandbox `id` keeps its files.
    pub fn sandbox_dir(&self, id: &str) -> PathBuf {
        Layout::new(&self.inner.cfg.data_dir, id).dir
    }

    /// The driver's handle on sandbox `id` (supervisor, cgroups, socket).
    pub fn runtime(&self, id: &str) -> Option<LocalRuntime> {
        self.inner.lock().sandboxes.get(id).map(|e| e.rt.clone())
    }
}

impl Inner {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves plain data behind; carry on with it.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn emit(&self, sandbox: &str, kind: &str, message: impl Into<String>) {
        let _ = self.events.send(SandboxEvent::now(sandbox, kind, message));
    }

    async fn persist(&self, id: &str) {
        let record = {
            let st = self.lock();
            st.sandboxes.get(id).map(|e| SandboxRecord {
                info: e.info.clone(),
                runtime: serde_json::to_value(&e.rt).unwrap_or_default(),
            })
        };
        if let Some(r) = record
            && let Err(e) = self.store.put(&r).await
        {
            tracing::error!(sandbox = id, error = %e, "cannot store the sandbox record");
        }
    }

    async fn unpersist(&self, id: &str) {
        if let Err(e) = self.store.remove(id).await {
            tracing::error!(sandbox = id, error = %e, "cannot remove the sandbox record");
        }
    }

    fn runtime_argv(&self, layout: &Layout, quota: u64) -> Option<Vec<OsString>> {
        let cmd = self.cfg.runtime_command.as_ref()?;
        Some(
            cmd.iter()
                .map(|a| {
                    a.replace("{socket}", &layout.socket().to_string_lossy())
                        .replace("{workspace}", &layout.workspace().to_string_lossy())
                        .replace("{quota}", &quota.to_string())
                        .into()
                })
                .collect(),
        )
    }
}

/// What a new sandbox is made of.
struct Spec {
    template: Template,
    env: BTreeMap<String, String>,
    pool: Option<String>,
    pool_member: bool,
    launch: Launch,
    shutdown_after: Option<Duration>,
    idle_timeout: Option<Duration>,
    labels: BTreeMap<String, String>,
    /// A host directory to use as the workspace instead of a fresh one.
    workspace: Option<PathBuf>,
}

/// Creates a sandbox and waits until it answers. On failure nothing of it remains.
async fn start(inner: &Arc<Inner>, id: String, spec: Spec) -> Result<SandboxInfo, DriverError> {
    let policy = template::policy_text(&spec.template, &spec.env)?;
    template::check_policy(&policy)?;
    let mut layout = Layout::new(&inner.cfg.data_dir, &id);
    if let Some(ws) = &spec.workspace {
        let real = ws
            .canonicalize()
            .map_err(|e| DriverError::InvalidArgument {
                field: "workspace".into(),
                message: format!("{}: {e}", ws.display()),
            })?;
        if !real.is_dir() {
            return Err(DriverError::InvalidArgument {
                field: "workspace".into(),
                message: format!("{} is not a directory", ws.display()),
            });
        }
        layout.external_workspace = Some(real);
    }
    let socket_len = layout.socket().as_os_str().len();
    if socket_len > process::MAX_SOCKET_PATH {
        return Err(DriverError::InvalidArgument {
            field: "data_dir".into(),
            message: format!(
                "`{}` is too long: the sandbox's socket path would be {socket_len} bytes, and unix sockets allow {}",
                inner.cfg.data_dir.display(),
                process::MAX_SOCKET_PATH
            ),
        });
    }
    let quota = spec
        .template
        .workspace_quota
        .unwrap_or(inner.cfg.default_quota);
    let now = SystemTime::now();
    let info = SandboxInfo {
        id: id.clone(),
        template: spec.template.name.clone(),
        pool: spec.pool.clone(),
        pool_member: spec.pool_member,
        phase: Phase::Starting,
        launch: spec.launch,
        created_at: now,
        shutdown_at: None,
        idle_timeout: None,
        last_activity: now,
        labels: spec.labels.clone(),
        message: None,
    };
    {
        let mut st = inner.lock();
        if st.sandboxes.contains_key(&id) {
            return Err(DriverError::Conflict(format!(
                "sandbox `{id}` exists already"
            )));
        }
        st.sandboxes.insert(
            id.clone(),
            Entry {
                info,
                rt: LocalRuntime {
                    dir: layout.dir.clone(),
                    workspace: layout.external_workspace.clone(),
                    quota,
                    ..LocalRuntime::default()
                },
                active: 0,
                deleting: false,
                finished_at: None,
                adopted: false,
            },
        );
    }
    inner.persist(&id).await;
    inner.emit(
        &id,
        "created",
        format!("from template {}", spec.template.name),
    );

    match launch(inner, &id, &layout, &policy, quota).await {
        Ok(()) => {}
        Err(e) => {
            let rt = inner.lock().sandboxes.get(&id).map(|e| e.rt.clone());
            if let Some(rt) = rt {
                let _ = teardown(rt).await;
            }
            inner.lock().sandboxes.remove(&id);
            inner.unpersist(&id).await;
            inner.emit(&id, "failed", e.to_string());
            return Err(e);
        }
    }
    // Ready, unless a delete came in meanwhile.
    let now = SystemTime::now();
    let deleting = {
        let mut st = inner.lock();
        let Some(e) = st.sandboxes.get_mut(&id) else {
            return Err(not_found("sandbox", &id));
        };
        if !e.deleting {
            e.info.phase = Phase::Ready;
            e.info.last_activity = now;
            if !e.info.pool_member {
                arm_timers(
                    &mut e.info,
                    &spec.template,
                    &inner.cfg,
                    spec.shutdown_after,
                    spec.idle_timeout,
                    now,
                );
            }
        }
        e.deleting
    };
    if deleting {
        return Err(DriverError::Conflict(format!(
            "sandbox `{id}` was deleted while it was starting"
        )));
    }
    inner.persist(&id).await;
    inner.emit(&id, "ready", "answering");
    let info = inner.lock().sandboxes.get(&id).map(|e| e.info.clone());
    info.ok_or_else(|| not_found("sandbox", &id))
}

fn arm_timers(
    info: &mut SandboxInfo,
    t: &Template,
    cfg: &LocalConfig,
    shutdown_after: Option<Duration>,
    idle_timeout: Option<Duration>,
    now: SystemTime,
) {
    let shutdown = shutdown_after
        .or(t.shutdown_after)
        .unwrap_or(cfg.default_shutdown_after);
    info.shutdown_at = after(now, shutdown);
    info.idle_timeout = Some(
        idle_timeout
            .or(t.idle_timeout)
            .unwrap_or(cfg.default_idle_timeout),
    );
}

/// Prepares the directory, starts the supervisor and waits for sandboxd's health answer.
async fn launch(
    inner: &Arc<Inner>,
    id: &str,
    layout: &Layout,
    policy: &str,
    quota: u64,
) -> Result<(), DriverError> {
    let internal = |what: &str, e: std::io::Error| DriverError::Internal(format!("{what}: {e}"));
    {
        use std::os::unix::fs::DirBuilderExt;
        let mut b = std::fs::DirBuilder::new();
        b.mode(0o700);
        b.create(&layout.dir)
            .map_err(|e| internal(&layout.dir.display().to_string(), e))?;
        if layout.external_workspace.is_none() {
            b.create(layout.workspace())
                .map_err(|e| internal("workspace", e))?;
        }
        b.create(layout.run()).map_err(|e| internal("run", e))?;
        std::fs::write(layout.policy(), policy).map_err(|e| internal("policy", e))?;
    }
    let runtime_argv = inner.runtime_argv(layout, quota);
    let l = process::Launch {
        exe: &inner.cfg.warden_exe,
        layout,
        quota,
        run_args: &inner.cfg.run_args,
    };
    let mut argv = l.argv();
    if let Some(cmd) = runtime_argv {
        let sep = argv.iter().position(|a| a == "--").expect("argv has --");
        argv.truncate(sep + 1);
        argv.extend(cmd);
    }
    let log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(layout.log())
        .map_err(|e| internal("log", e))?;
    let err = log.try_clone().map_err(|e| internal("log", e))?;
    let mut child = tokio::process::Command::new(&inner.cfg.warden_exe)
        .args(&argv)
        .current_dir(&layout.dir)
        .stdin(std::process::Stdio::null())
        .stdout(log)
        .stderr(err)
        .kill_on_drop(false)
        .spawn()
        .map_err(|e| {
            DriverError::Internal(format!(
                "cannot start {}: {e}",
                inner.cfg.warden_exe.display()
            ))
        })?;
    let pid = child.id().unwrap_or(0);
    let supervisor = ProcessId::of(pid);
    if let Some(e) = inner.lock().sandboxes.get_mut(id) {
        e.rt.supervisor = supervisor;
    }
    inner.persist(id).await;
    // Reap the supervisor when it ends, and notice if that was not our doing.
    let (exited_tx, mut exited) = tokio::sync::watch::channel(false);
    {
        let weak = Arc::downgrade(inner);
        let id = id.to_string();
        tokio::spawn(async move {
            let status = child.wait().await;
            let _ = exited_tx.send(true);
            if let Some(inner) = weak.upgrade() {
                supervisor_exited(&inner, &id, status.ok()).await;
            }
        });
    }
    // Wait for the socket, then for a health answer.
    let deadline = Instant::now() + inner.cfg.ready_timeout;
    let mut pause = Duration::from_millis(1);
    let mut last = String::from("no socket yet");
    loop {
        if *exited.borrow() {
            return Err(DriverError::Unavailable(format!(
                "sandbox `{id}` did not start: {}",
                process::log_tail(layout, 2000)
            )));
        }
        if inner.lock().sandboxes.get(id).is_none_or(|e| e.deleting) {
            return Ok(());
        }
        if let Ok(pinned) = health::pin(&layout.socket(), None) {
            match health::probe(&pinned, Duration::from_secs(2)).await {
                Ok(()) => {
                    let state = JailState::read(&layout.state()).map_err(|e| {
                        DriverError::Internal(format!(
                            "sandbox `{id}` answers but its state file {} is unreadable: {e}",
                            layout.state().display()
                        ))
                    })?;
                    let cg = SandboxCgroups::new(state.cgroups.clone(), state.pid)
                        .map_err(DriverError::Internal)?;
                    drop(cg);
                    if let Some(e) = inner.lock().sandboxes.get_mut(id) {
                        e.rt.jail = Some(state);
                        e.rt.socket = Some(pinned.id);
                    }
                    return Ok(());
                }
                Err(e) => last = e,
            }
        }
        if Instant::now() >= deadline {
            return Err(DriverError::Unavailable(format!(
                "sandbox `{id}` did not answer within {:?} ({last}); log: {}",
                inner.cfg.ready_timeout,
                process::log_tail(layout, 2000)
            )));
        }
        tokio::select! {
            _ = tokio::time::sleep(pause) => {}
            _ = exited.changed() => {}
        }
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}

/// A supervisor ended. If nobody asked for it, the sandbox has failed: mark it so and
/// remove what is left.
async fn supervisor_exited(inner: &Arc<Inner>, id: &str, status: Option<std::process::ExitStatus>) {
    let rt = {
        let mut st = inner.lock();
        let Some(e) = st.sandboxes.get_mut(id) else {
            return;
        };
        if e.deleting || !matches!(e.info.phase, Phase::Ready | Phase::Suspended) {
            return;
        }
        e.deleting = true;
        e.rt.clone()
    };
    let layout = Layout::at(rt.dir.clone());
    let message = format!(
        "its supervisor exited ({}): {}",
        status
            .map(|s| s.to_string())
            .unwrap_or_else(|| "status unknown".into()),
        process::log_tail(&layout, 500)
    );
    finish(inner, id, rt, Phase::Failed, "failed", message).await;
}

/// Ends a live sandbox and keeps its record as Stopped or Failed with `message`.
async fn finish(
    inner: &Arc<Inner>,
    id: &str,
    rt: LocalRuntime,
    phase: Phase,
    kind: &str,
    message: String,
) {
    let cleanup = teardown(rt).await;
    let message = match cleanup {
        Ok(()) => message,
        Err(e) => format!("{message}; cleanup: {e}"),
    };
    {
        let mut st = inner.lock();
        if let Some(e) = st.sandboxes.get_mut(id) {
            e.info.phase = phase;
            e.info.message = Some(message.clone());
            e.finished_at = Some(SystemTime::now());
            e.deleting = false;
            if let Some(pool) = e.info.pool.clone().filter(|_| e.info.pool_member)
                && let Some(p) = st.pools.get(&pool)
            {
                p.wake.notify_one();
            }
        }
    }
    inner.persist(id).await;
    inner.emit(id, kind, message);
}

/// Kills everything of a sandbox and removes its cgroups and directory. Idempotent.
async fn teardown(rt: LocalRuntime) -> Result<(), String> {
    tokio::task::spawn_blocking(move || teardown_blocking(&rt))
        .await
        .map_err(|e| format!("cleanup task: {e}"))?
}

fn teardown_blocking(rt: &LocalRuntime) -> Result<(), String> {
    let mut errors = Vec::new();
    // The cgroups: from the state file, or else those the supervisor made next to ours.
    let state = rt
        .jail
        .clone()
        .or_else(|| JailState::read(&Layout::at(rt.dir.clone()).state()).ok());
    let cgroups = match (&state, &rt.supervisor) {
        (Some(s), _) => SandboxCgroups::new(s.cgroups.clone(), s.pid).ok(),
        (None, Some(sup)) => {
            let parents = own_cgroup_dirs();
            SandboxCgroups::new(cgroups::find_owned(&parents, sup.pid), sup.pid).ok()
        }
        (None, None) => None,
    };
    if let Some(cg) = &cgroups {
        cg.kill_all();
    }
    // The supervisor ends once its init is gone; make sure of it.
    if let Some(sup) = rt.supervisor {
        let deadline = Instant::now() + Duration::from_secs(3);
        while sup.alive() && Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(2));
        }
        if sup.alive() {
            sup.kill();
            let deadline = Instant::now() + Duration::from_secs(2);
            while sup.alive() && Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(2));
            }
            if sup.alive() {
                errors.push(format!("supervisor {} does not die", sup.pid));
            }
        }
    }
    if let Some(cg) = &cgroups {
        cg.kill_all();
        if let Err(e) = cg.remove(Duration::from_secs(3)) {
            errors.push(e);
        }
    }
    match std::fs::remove_dir_all(&rt.dir) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => errors.push(format!("cannot remove {}: {e}", rt.dir.display())),
    }
    if errors.is_empty() {
        Ok(())
    } else {
        Err(errors.join("; "))
    }
}

/// This process's cgroup directories: where `warden run` children make theirs.
fn own_cgroup_dirs() -> Vec<PathBuf> {
    match warden_jail::cgroup::CgroupHost::discover() {
        Ok(h) => h
            .v2_dir
            .into_iter()
            .chain(h.v1_dirs.into_iter().map(|(_, d)| d))
            .collect(),
        Err(_) => Vec::new(),
    }
}

/// Deletes a sandbox entirely: processes, cgroups, directory, record.
async fn delete_sandbox(inner: &Arc<Inner>, id: &str, kind: &str) -> Result<(), DriverError> {
    let live = {
        let mut st = inner.lock();
        let Some(e) = st.sandboxes.get_mut(id) else {
            return Err(not_found("sandbox", id));
        };
        if e.deleting {
            return Err(DriverError::Conflict(format!(
                "sandbox `{id}` is being deleted already"
            )));
        }
        if matches!(e.info.phase, Phase::Stopped | Phase::Failed) {
            // Nothing of it runs any more; only the record goes.
            st.sandboxes.remove(id);
            None
        } else {
            e.deleting = true;
            Some((e.rt.clone(), e.info.phase == Phase::Starting))
        }
    };
    let Some((rt, starting)) = live else {
        inner.unpersist(id).await;
        return Ok(());
    };
    if starting {
        // The starter notices `deleting` and gives up; its supervisor goes now.
        if let Some(sup) = rt.supervisor {
            sup.kill();
        }
        let deadline = Instant::now() + inner.cfg.ready_timeout + Duration::from_secs(5);
        while inner
            .lock()
            .sandboxes
            .get(id)
            .is_some_and(|e| e.info.phase == Phase::Starting)
            && Instant::now() < deadline
        {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    let rt = inner
        .lock()
        .sandboxes
        .get(id)
        .map(|e| e.rt.clone())
        .unwrap_or(rt);
    let result = teardown(rt).await;
    inner.lock().sandboxes.remove(id);
    inner.unpersist(id).await;
    match result {
        Ok(()) => {
            inner.emit(id, kind, "deleted; nothing of it remains");
            Ok(())
        }
        Err(e) => {
            inner.emit(id, kind, format!("deleted, but {e}"));
            Err(DriverError::Internal(format!(
                "sandbox `{id}` deleted, but {e}"
            )))
        }
    }
}

/// An exec or file call in progress: counted as activity from start to end.
struct Call {
    inner: Arc<Inner>,
    id: String,
    socket: health::PinnedSocket,
}

impl Drop for Call {
    fn drop(&mut self) {
        let mut st = self.inner.lock();
        if let Some(e) = st.sandboxes.get_mut(&self.id) {
            e.active = e.active.saturating_sub(1);
            e.info.last_activity = SystemTime::now();
        }
    }
}

fn begin_call(inner: &Arc<Inner>, id: &str) -> Result<Call, DriverError> {
    let (dir, socket) = {
        let mut st = inner.lock();
        let Some(e) = st.sandboxes.get_mut(id) else {
            return Err(not_found("sandbox", id));
        };
        check_callable(e)?;
        e.active += 1;
        e.info.last_activity = SystemTime::now();
        (e.rt.dir.clone(), e.rt.socket)
    };
    let layout = Layout::at(dir);
    let call_guard = |socket| Call {
        inner: inner.clone(),
        id: id.to_string(),
        socket,
    };
    match health::pin(&layout.socket(), socket) {
        Ok(s) if socket.is_some() => Ok(call_guard(s)),
        Ok(_) => {
            let mut st = inner.lock();
            if let Some(e) = st.sandboxes.get_mut(id) {
                e.active = e.active.saturating_sub(1);
            }
            Err(DriverError::Unavailable(format!(
                "sandbox `{id}` has no socket recorded"
            )))
        }
        Err(why) => {
            let mut st = inner.lock();
            if let Some(e) = st.sandboxes.get_mut(id) {
                e.active = e.active.saturating_sub(1);
            }
            Err(DriverError::Unavailable(format!(
                "sandbox `{id}`'s runtime server cannot be reached: {why}"
            )))
        }
    }
}

fn check_callable(e: &Entry) -> Result<(), DriverError> {
    let id = &e.info.id;
    if e.deleting {
        return Err(DriverError::Conflict(format!(
            "sandbox `{id}` is being deleted"
        )));
    }
    if e.info.pool_member {
        return Err(DriverError::Conflict(format!(
            "sandbox `{id}` is an unclaimed member of pool `{}`; claim it from the pool first",
            e.info.pool.as_deref().unwrap_or("?")
        )));
    }
    match e.info.phase {
        Phase::Ready => Ok(()),
        p => Err(DriverError::Conflict(format!(
            "sandbox `{id}` is {}{}; exec and file calls need it ready{}",
            phase_name(p),
            e.info
                .message
                .as_deref()
                .map(|m| format!(" ({m})"))
                .unwrap_or_default(),
            if p == Phase::Suspended {
                " (resume it first)"
            } else {
                ""
            }
        ))),
    }
}

/// The background reaper: shutdown times, idle timeouts, adopted supervisors that died,
/// and records of finished sandboxes past their retention.
async fn reaper(inner: std::sync::Weak<Inner>) {
    loop {
        let Some(strong) = inner.upgrade() else {
            return;
        };
        let interval = strong.cfg.reaper_interval;
        reap_once(&strong).await;
        drop(strong);
        tokio::time::sleep(interval).await;
    }
}

async fn reap_once(inner: &Arc<Inner>) {
    let now = SystemTime::now();
    let mut expire = Vec::new();
    let mut dead = Vec::new();
    let mut forget = Vec::new();
    {
        let mut st = inner.lock();
        for e in st.sandboxes.values_mut() {
            if e.deleting {
                continue;
            }
            if let Some(at) = e.finished_at {
                if !plan::keep_finished(now, at, inner.cfg.retain_finished) {
                    forget.push(e.info.id.clone());
                }
                continue;
            }
            if e.adopted
                && matches!(e.info.phase, Phase::Ready | Phase::Suspended)
                && !e.rt.supervisor.is_some_and(|s| s.alive())
            {
                e.deleting = true;
                dead.push((e.info.id.clone(), e.rt.clone()));
                continue;
            }
            let clock = plan::Clock {
                phase: e.info.phase,
                pool_member: e.info.pool_member,
                shutdown_at: e.info.shutdown_at,
                idle_timeout: e.info.idle_timeout,
                last_activity: e.info.last_activity,
                active_calls: e.active,
            };
            if let Some(why) = plan::expiry(now, &clock) {
                e.deleting = true;
                expire.push((e.info.id.clone(), e.rt.clone(), why, e.info.idle_timeout));
            }
        }
        for id in &forget {
            st.sandboxes.remove(id);
        }
    }
    for id in forget {
        inner.unpersist(&id).await;
    }
    let mut work = Vec::new();
    for (id, rt) in dead {
        let pid = rt.supervisor.map(|s| s.pid).unwrap_or(0);
        let inner = inner.clone();
        work.push(tokio::spawn(async move {
            let msg = format!("its supervisor (pid {pid}) died");
            finish(&inner, &id, rt, Phase::Failed, "failed", msg).await;
        }));
    }
    for (id, rt, why, idle) in expire {
        let inner = inner.clone();
        let msg = match why {
            plan::Expiry::Shutdown => "its shutdown time passed".to_string(),
            plan::Expiry::Idle => format!(
                "no exec or file call for {}",
                humantime::format_duration(idle.unwrap_or_default())
            ),
        };
        work.push(tokio::spawn(async move {
            finish(&inner, &id, rt, Phase::Stopped, why.kind(), msg).await;
        }));
    }
    for w in work {
        let _ = w.await;
    }
}

/// Keeps pool `name` at its replicas until the pool is deleted.
async fn refiller(inner: std::sync::Weak<Inner>, name: String, wake: Arc<Notify>) {
    let mut batch = 1u32;
    let mut backoff = Duration::from_millis(500);
    loop {
        let Some(inner) = inner.upgrade() else { return };
        let snapshot = {
            let st = inner.lock();
            st.pools.get(&name).map(|p| {
                let members: Vec<plan::Member> = st
                    .sandboxes
                    .values()
                    .filter(|e| {
                        e.info.pool_member
                            && e.info.pool.as_deref() == Some(name.as_str())
                            && !e.deleting
                            && matches!(e.info.phase, Phase::Starting | Phase::Ready)
                    })
                    .map(|e| plan::Member {
                        id: e.info.id.clone(),
                        ready: e.info.phase == Phase::Ready,
                        created_at: e.info.created_at,
                    })
                    .collect();
                (
                    p.spec.clone(),
                    st.templates.get(&p.spec.template).cloned(),
                    members,
                )
            })
        };
        let Some((spec, tmpl, members)) = snapshot else {
            return;
        };
        for id in plan::select_excess(&members, spec.replicas) {
            let inner = inner.clone();
            tokio::spawn(async move {
                let _ = delete_sandbox(&inner, &id, "deleted").await;
            });
        }
        let n = plan::to_create(spec.replicas, members.len() as u32, batch);
        if n > 0
            && let Some(tmpl) = tmpl
        {
            let mut starts = Vec::new();
            for _ in 0..n {
                let inner = inner.clone();
                let tmpl = tmpl.clone();
                let pool = name.clone();
                starts.push(tokio::spawn(async move {
                    let id = names::member_id(&pool)?;
                    let info = start(
                        &inner,
                        id.clone(),
                        Spec {
                            template: tmpl,
                            env: BTreeMap::new(),
                            pool: Some(pool.clone()),
                            pool_member: true,
                            launch: Launch::Warm,
                            shutdown_after: None,
                            idle_timeout: None,
                            labels: BTreeMap::new(),
                            workspace: None,
                        },
                    )
                    .await?;
                    let mut st = inner.lock();
                    if let Some(p) = st.pools.get_mut(&pool) {
                        p.ready.push_back(info.id.clone());
                    }
                    Ok::<_, DriverError>(info.id)
                }));
            }
            let mut all_ok = true;
            for s in starts {
                match s.await {
                    Ok(Ok(_)) => {}
                    Ok(Err(e)) => {
                        all_ok = false;
                        tracing::warn!(pool = %name, error = %e, "a pool member did not start");
                    }
                    Err(_) => all_ok = false,
                }
            }
            batch = plan::next_batch(batch, all_ok);
            if all_ok {
                backoff = Duration::from_millis(500);
                inner.emit(&name, "pool_refilled", format!("started {n} member(s)"));
                continue;
            }
            let pause = backoff;
            backoff = (backoff * 2).min(Duration::from_secs(30));
            drop(inner);
            tokio::time::sleep(pause).await;
            continue;
        }
        drop(inner);
        let _ = tokio::time::timeout(Duration::from_secs(5), wake.notified()).await;
    }
}

impl LocalDriver {
    fn spawn_refiller(&self, name: &str, wake: Arc<Notify>) {
        tokio::spawn(refiller(
            Arc::downgrade(&self.inner),
            name.to_string(),
            wake,
        ));
    }
}

#[async_trait::async_trait]
impl Driver for LocalDriver {
    fn name(&self) -> &'static str {
        "local"
    }

    async fn recover(&self) -> Result<Vec<SandboxInfo>, DriverError> {
        let inner = &self.inner;
        let records =
            inner.store.load_all().await.map_err(|e| {
                DriverError::Internal(format!("cannot read the sandbox store: {e}"))
            })?;
        let mut known = std::collections::HashSet::new();
        let mut out = Vec::new();
        for r in records {
            let id = r.info.id.clone();
            known.insert(id.clone());
            let rt: LocalRuntime =
                serde_json::from_value(r.runtime.clone()).unwrap_or_else(|_| LocalRuntime {
                    dir: Layout::new(&inner.cfg.data_dir, &id).dir,
                    ..LocalRuntime::default()
                });
            let mut info = r.info.clone();
            let live = match info.phase {
                Phase::Ready => {
                    rt.supervisor.is_some_and(|s| s.alive())
                        && match health::pin(&Layout::at(rt.dir.clone()).socket(), rt.socket) {
                            Ok(p) => {
                                rt.socket.is_some()
                                    && health::probe(&p, Duration::from_secs(2)).await.is_ok()
                            }
                            Err(_) => false,
                        }
                }
                Phase::Suspended => rt.supervisor.is_some_and(|s| s.alive()),
                _ => false,
            };
            let mut finished_at = None;
            if !live {
                if matches!(
                    info.phase,
                    Phase::Ready | Phase::Suspended | Phase::Starting
                ) {
                    let why = if info.phase == Phase::Starting {
                        "the server stopped while it was starting".to_string()
                    } else {
                        format!(
                            "its supervisor{} died while the server was down",
                            rt.supervisor
                                .map(|s| format!(" (pid {})", s.pid))
                                .unwrap_or_default()
                        )
                    };
                    let cleanup = teardown(rt.clone()).await;
                    info.phase = Phase::Failed;
                    info.message = Some(match cleanup {
                        Ok(()) => why,
                        Err(e) => format!("{why}; cleanup: {e}"),
                    });
                    inner.emit(&id, "failed", info.message.clone().unwrap_or_default());
                } else {
                    // Stopped or Failed already: make sure nothing remains.
                    let _ = teardown(rt.clone()).await;
                }
                finished_at = Some(SystemTime::now());
            }
            {
                let mut st = inner.lock();
                st.sandboxes.insert(
                    id.clone(),
                    Entry {
                        info: info.clone(),
                        rt,
                        active: 0,
                        deleting: false,
                        finished_at,
                        adopted: live,
                    },
                );
            }
            inner.persist(&id).await;
            out.push(info);
        }
        // Directories without a record: a start cut short before the record was written.
        if let Ok(dirs) = std::fs::read_dir(inner.cfg.data_dir.join("sandboxes")) {
            for d in dirs.flatten() {
                let name = d.file_name().to_string_lossy().into_owned();
                if known.contains(&name) {
                    continue;
                }
                let layout = Layout::at(d.path());
                let state = JailState::read(&layout.state()).ok();
                let supervisor = state.as_ref().and_then(|s| {
                    ProcessId::of(s.pid).filter(|p| {
                        std::fs::read(format!("/proc/{}/cmdline", p.pid)).is_ok_and(|c| {
                            String::from_utf8_lossy(&c).contains(&*layout.dir.to_string_lossy())
                        })
                    })
                });
                let _ = teardown(LocalRuntime {
                    dir: layout.dir.clone(),
                    supervisor,
                    jail: state,
                    socket: None,
                    quota: 0,
                    workspace: None,
                })
                .await;
            }
        }
        // Adopted pool members go back to their pools' ready queues (when the pools are
        // declared again, `put_pool` picks them up).
        Ok(out)
    }

    async fn put_template(&self, t: Template) -> Result<(), DriverError> {
        template::check_template(&t)?;
        let mut st = self.inner.lock();
        let name = t.name.clone();
        st.templates.insert(name.clone(), t);
        for p in st.pools.values().filter(|p| p.spec.template == name) {
            p.wake.notify_one();
        }
        Ok(())
    }

    async fn delete_template(&self, name: &str) -> Result<(), DriverError> {
        let mut st = self.inner.lock();
        if !st.templates.contains_key(name) {
            return Err(not_found("template", name));
        }
        let users: Vec<&str> = st
            .pools
            .values()
            .filter(|p| p.spec.template == name)
            .map(|p| p.spec.name.as_str())
            .collect();
        if !users.is_empty() {
            return Err(DriverError::Conflict(format!(
                "template `{name}` is used by pool(s) {}; delete or change them first",
                users.join(", ")
            )));
        }
        st.templates.remove(name);
        Ok(())
    }

    async fn templates(&self) -> Vec<Template> {
        self.inner.lock().templates.values().cloned().collect()
    }

    async fn put_pool(&self, pool: PoolSpec) -> Result<(), DriverError> {
        template::check_pool(&pool)?;
        let mut st = self.inner.lock();
        if !st.templates.contains_key(&pool.template) {
            return Err(not_found("template", &pool.template));
        }
        if let Some(p) = st.pools.get_mut(&pool.name) {
            p.spec = pool;
            p.wake.notify_one();
            return Ok(());
        }
        let wake = Arc::new(Notify::new());
        // Members adopted by `recover` rejoin the queue, oldest first.
        let mut adopted: Vec<(SystemTime, String)> = st
            .sandboxes
            .values()
            .filter(|e| {
                e.info.pool_member
                    && e.info.pool.as_deref() == Some(pool.name.as_str())
                    && e.info.phase == Phase::Ready
                    && !e.deleting
            })
            .map(|e| (e.info.created_at, e.info.id.clone()))
            .collect();
        adopted.sort();
        let name = pool.name.clone();
        st.pools.insert(
            name.clone(),
            PoolState {
                spec: pool,
                ready: adopted.into_iter().map(|(_, id)| id).collect(),
                wake: wake.clone(),
            },
        );
        drop(st);
        self.spawn_refiller(&name, wake);
        Ok(())
    }

    async fn delete_pool(&self, name: &str) -> Result<(), DriverError> {
        let members: Vec<String> = {
            let mut st = self.inner.lock();
            let Some(p) = st.pools.remove(name) else {
                return Err(not_found("pool", name));
            };
            p.wake.notify_one();
            st.sandboxes
                .values()
                .filter(|e| e.info.pool_member && e.info.pool.as_deref() == Some(name))
                .map(|e| e.info.id.clone())
                .collect()
        };
        let mut errors = Vec::new();
        for id in members {
            match delete_sandbox(&self.inner, &id, "deleted").await {
                Ok(()) | Err(DriverError::NotFound { .. }) | Err(DriverError::Conflict(_)) => {}
                Err(e) => errors.push(e.to_string()),
            }
        }
        if errors.is_empty() {
            Ok(())
        } else {
            Err(DriverError::Internal(errors.join("; ")))
        }
    }

    async fn pools(&self) -> Vec<PoolStatus> {
        let st = self.inner.lock();
        st.pools
            .values()
            .map(|p| {
                let members = st.sandboxes.values().filter(|e| {
                    e.info.pool_member
                        && e.info.pool.as_deref() == Some(p.spec.name.as_str())
                        && !e.deleting
                });
                // Ready means claimable: in the pool's queue. A member that has started but
                // is not queued yet still counts as starting.
                let (mut ready, mut starting) = (0, 0);
                for e in members {
                    match e.info.phase {
                        Phase::Ready if p.ready.contains(&e.info.id) => ready += 1,
                        Phase::Ready | Phase::Starting => starting += 1,
                        _ => {}
                    }
                }
                PoolStatus {
                    name: p.spec.name.clone(),
                    template: p.spec.template.clone(),
                    replicas: p.spec.replicas,
                    ready,
                    starting,
                }
            })
            .collect()
    }

    async fn create(&self, request: CreateRequest) -> Result<SandboxInfo, DriverError> {
        template::check_positive("shutdown_after", request.shutdown_after)?;
        template::check_positive("idle_timeout", request.idle_timeout)?;
        let template = self
            .inner
            .lock()
            .templates
            .get(&request.template)
            .cloned()
            .ok_or_else(|| not_found("template", &request.template))?;
        let id = names::sandbox_id()?;
        start(
            &self.inner,
            id,
            Spec {
                template,
                env: request.env,
                pool: None,
                pool_member: false,
                launch: Launch::Cold,
                shutdown_after: request.shutdown_after,
                idle_timeout: request.idle_timeout,
                labels: request.labels,
                workspace: request.workspace,
            },
        )
        .await
        .map_err(|e| match e {
            DriverError::InvalidArgument { field, message }
                if field.starts_with("policy.environment") =>
            {
                DriverError::InvalidArgument {
                    field: "env".into(),
                    message: format!("{field}: {message}"),
                }
            }
            e => e,
        })
    }

    async fn claim(&self, request: ClaimRequest) -> Result<SandboxInfo, DriverError> {
        template::check_positive("shutdown_after", request.shutdown_after)?;
        template::check_positive("idle_timeout", request.idle_timeout)?;
        let now = SystemTime::now();
        let claimed = {
            let mut guard = self.inner.lock();
            let st = &mut *guard;
            let Some(pool) = st.pools.get_mut(&request.pool) else {
                return Err(not_found("pool", &request.pool));
            };
            let tmpl = st.templates.get(&pool.spec.template).cloned();
            let mut found = None;
            while let Some(id) = pool.ready.pop_front() {
                if let Some(e) = st.sandboxes.get_mut(&id)
                    && e.info.pool_member
                    && e.info.phase == Phase::Ready
                    && !e.deleting
                {
                    e.info.pool_member = false;
                    e.info.launch = Launch::Warm;
                    e.info.labels = request.labels.clone();
                    e.info.last_activity = now;
                    if let Some(t) = &tmpl {
                        arm_timers(
                            &mut e.info,
                            t,
                            &self.inner.cfg,
                            request.shutdown_after,
                            request.idle_timeout,
                            now,
                        );
                    }
                    found = Some(e.info.clone());
                    break;
                }
            }
            pool.wake.notify_one();
            match found {
                Some(info) => Ok(info),
                None => Err(tmpl.ok_or_else(|| not_found("template", &pool.spec.template))?),
            }
        };
        match claimed {
            Ok(info) => {
                self.inner.persist(&info.id).await;
                self.inner.emit(
                    &info.id,
                    "claimed",
                    format!("warm, from pool {}", request.pool),
                );
                Ok(info)
            }
            Err(template) => {
                let id = names::sandbox_id()?;
                let info = start(
                    &self.inner,
                    id,
                    Spec {
                        template,
                        env: BTreeMap::new(),
                        pool: Some(request.pool.clone()),
                        pool_member: false,
                        launch: Launch::Cold,
                        shutdown_after: request.shutdown_after,
                        idle_timeout: request.idle_timeout,
                        labels: request.labels,
                        workspace: None,
                    },
                )
                .await?;
                self.inner.emit(
                    &info.id,
                    "claimed",
                    format!("cold: pool {} was empty", request.pool),
                );
                Ok(info)
            }
        }
    }

    async fn get(&self, id: &str) -> Result<SandboxInfo, DriverError> {
        self.inner
            .lock()
            .sandboxes
            .get(id)
            .map(|e| e.info.clone())
            .ok_or_else(|| not_found("sandbox", id))
    }

    async fn list(&self) -> Vec<SandboxInfo> {
        let mut v: Vec<SandboxInfo> = self
            .inner
            .lock()
            .sandboxes
            .values()
            .map(|e| e.info.clone())
            .collect();
        v.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
        v
    }

    async fn delete(&self, id: &str) -> Result<(), DriverError> {
        delete_sandbox(&self.inner, id, "deleted").await
    }

    async fn suspend(&self, id: &str) -> Result<SandboxInfo, DriverError> {
        self.freeze(id, true).await
    }

    async fn resume(&self, id: &str) -> Result<SandboxInfo, DriverError> {
        self.freeze(id, false).await
    }

    async fn set_shutdown(
        &self,
        id: &str,
        at: Option<SystemTime>,
    ) -> Result<SandboxInfo, DriverError> {
        let info = {
            let mut st = self.inner.lock();
            let Some(e) = st.sandboxes.get_mut(id) else {
                return Err(not_found("sandbox", id));
            };
            if e.deleting || !matches!(e.info.phase, Phase::Ready | Phase::Suspended) {
                return Err(DriverError::Conflict(format!(
                    "sandbox `{id}` is {}; only a ready or suspended sandbox takes a shutdown time",
                    if e.deleting {
                        "being deleted"
                    } else {
                        phase_name(e.info.phase)
                    }
                )));
            }
            if e.info.pool_member {
                return Err(DriverError::Conflict(format!(
                    "sandbox `{id}` is an unclaimed pool member; claim it first"
                )));
            }
            e.info.shutdown_at = at;
            e.info.clone()
        };
        self.inner.persist(id).await;
        self.inner.emit(
            id,
            "timeout_set",
            match at {
                Some(t) => format!("shutdown at {}", humantime::format_rfc3339_seconds(t)),
                None => "no shutdown time".into(),
            },
        );
        Ok(info)
    }

    async fn exec(&self, id: &str, request: ExecRequest) -> Result<ExecResult, DriverError> {
        let call = begin_call(&self.inner, id)?;
        runtime::exec(&call.socket.path, request).await
    }

    async fn exec_stream(
        &self,
        id: &str,
        request: ExecRequest,
    ) -> Result<ExecSession, DriverError> {
        let call = begin_call(&self.inner, id)?;
        let socket = call.socket.path.clone();
        runtime::exec_stream(&socket, request, Box::new(call)).await
    }

    async fn read_file(&self, id: &str, path: &str) -> Result<ByteStream, DriverError> {
        let call = begin_call(&self.inner, id)?;
        runtime::read_file(&call.socket.path, path).await
    }

    async fn write_file(
        &self,
        id: &str,
        path: &str,
        mode: Option<u32>,
        body: ByteStream,
    ) -> Result<(), DriverError> {
        let call = begin_call(&self.inner, id)?;
        runtime::write_file(&call.socket.path, path, mode, body).await
    }

    async fn list_dir(&self, id: &str, path: &str) -> Result<DirListing, DriverError> {
        let call = begin_call(&self.inner, id)?;
        runtime::list_dir(&call.socket.path, path).await
    }

    async fn exists(&self, id: &str, path: &str) -> Result<bool, DriverError> {
        let call = begin_call(&self.inner, id)?;
        runtime::exists(&call.socket.path, path).await
    }

    async fn remove(&self, id: &str, path: &str, recursive: bool) -> Result<(), DriverError> {
        let call = begin_call(&self.inner, id)?;
        runtime::remove(&call.socket.path, path, recursive).await
    }

    async fn mkdir(&self, id: &str, path: &str) -> Result<(), DriverError> {
        let call = begin_call(&self.inner, id)?;
        runtime::mkdir(&call.socket.path, path).await
    }

    async fn connect_runtime(&self, id: &str, port: u16) -> Result<RuntimeConn, DriverError> {
        if !matches!(port, 8888 | 8080 | 9090) {
            return Err(DriverError::InvalidArgument {
                field: "port".into(),
                message: format!(
                    "{port} is not a sandbox port; use 8888 (legacy REST), 8080 (sandboxd REST) or 9090 (gRPC)"
                ),
            });
        }
        // Through the pinned socket: a socket or symlink that a command put in its place is
        // refused, so router traffic cannot be steered to another sandbox or host socket.
        let call = begin_call(&self.inner, id)?;
        tokio::net::UnixStream::connect(&call.socket.path)
            .await
            .map(RuntimeConn::Unix)
            .map_err(|e| {
                DriverError::Unavailable(format!(
                    "sandbox `{id}`'s runtime server cannot be reached: {e}"
                ))
            })
    }

    fn events(&self) -> broadcast::Receiver<SandboxEvent> {
        self.inner.events.subscribe()
    }
}

impl LocalDriver {
    async fn freeze(&self, id: &str, frozen: bool) -> Result<SandboxInfo, DriverError> {
        let (from, to, verb) = if frozen {
            (Phase::Ready, Phase::Suspended, "suspend")
        } else {
            (Phase::Suspended, Phase::Ready, "resume")
        };
        let cg = {
            let mut st = self.inner.lock();
            let Some(e) = st.sandboxes.get_mut(id) else {
                return Err(not_found("sandbox", id));
            };
            if e.info.phase == to && !e.deleting {
                return Ok(e.info.clone());
            }
            if e.deleting || e.info.phase != from || e.info.pool_member {
                return Err(DriverError::Conflict(format!(
                    "cannot {verb} sandbox `{id}`: it is {}",
                    if e.deleting {
                        "being deleted"
                    } else if e.info.pool_member {
                        "an unclaimed pool member"
                    } else {
                        phase_name(e.info.phase)
                    }
                )));
            }
            let jail = e.rt.jail.clone().ok_or_else(|| {
                DriverError::Internal(format!("sandbox `{id}` has no cgroups recorded"))
            })?;
            // Calls in progress when it freezes stay blocked until it thaws.
            e.deleting = true;
            SandboxCgroups::new(jail.cgroups, jail.pid).map_err(DriverError::Internal)
        };
        let result = match cg {
            Ok(cg) => tokio::task::spawn_blocking(move || {
                if frozen {
                    cg.freeze(Duration::from_secs(5))
                } else {
                    cg.thaw(Duration::from_secs(5))
                }
            })
            .await
            .map_err(|e| e.to_string())
            .and_then(|r| r),
            Err(e) => Err(e.to_string()),
        };
        let info = {
            let mut st = self.inner.lock();
            let Some(e) = st.sandboxes.get_mut(id) else {
                return Err(not_found("sandbox", id));
            };
            e.deleting = false;
            if let Err(why) = result {
                return Err(DriverError::Unavailable(format!(
                    "cannot {verb} sandbox `{id}`: {why}"
                )));
            }
            e.info.phase = to;
            e.info.last_activity = SystemTime::now();
            e.info.clone()
        };
        self.inner.persist(id).await;
        self.inner.emit(
            id,
            if frozen { "suspended" } else { "resumed" },
            if frozen { "frozen" } else { "thawed" },
        );
        Ok(info)
    }
}
