//! An in-memory `Driver` for tests of the API: no processes, no files on disk. It keeps the
//! driver's contract (errors, phases, pools, claims warm or cold, quotas, records in the
//! `SandboxStore`) so the server can be tested without the local driver.
//!
//! Commands it "runs": `echo ARGS...` (prints them), `true`, `false`, `exit N`, `cat` (echoes
//! stdin), `sleep` (waits for stdin to close or a signal), `sh -c TEXT` (prints TEXT); any
//! other program exits 127. A resize control prints `resize COLSxROWS`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use bytes::Bytes;
use futures_util::StreamExt;
use tokio::sync::{broadcast, mpsc};
use warden_sandbox::{
    ByteStream, ClaimRequest, CreateRequest, Driver, DriverError, Endpoint, ExecSession, Launch,
    Phase, PoolSpec, PoolStatus, RuntimeConn, SandboxEvent, SandboxInfo, SandboxRecord,
    SandboxStore, StdinMsg, StreamItem, Template,
};
use warden_sandboxd::proto::{
    DirListing, EntryType, ExecControl, ExecEvent, ExecRequest, ExecResult, FileEntry,
};

#[derive(Debug, Default)]
struct Sandbox {
    info: Option<SandboxInfo>,
    files: BTreeMap<String, Bytes>,
    dirs: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct State {
    templates: BTreeMap<String, Template>,
    pools: BTreeMap<String, PoolSpec>,
    sandboxes: BTreeMap<String, Sandbox>,
    endpoints: HashMap<(String, u16), Endpoint>,
    next: u64,
}

/// The in-memory driver.
#[derive(Debug)]
pub struct FakeDriver {
    state: Mutex<State>,
    events: broadcast::Sender<SandboxEvent>,
    store: Option<Arc<dyn SandboxStore>>,
}

impl Default for FakeDriver {
    fn default() -> Self {
        FakeDriver::new(None)
    }
}

fn not_found(kind: &'static str, name: &str) -> DriverError {
    DriverError::NotFound {
        kind,
        name: name.to_string(),
    }
}

impl FakeDriver {
    /// A driver that persists its sandbox records in `store` (when given), like a real one.
    pub fn new(store: Option<Arc<dyn SandboxStore>>) -> FakeDriver {
        let (events, _) = broadcast::channel(1024);
        FakeDriver {
            state: Mutex::new(State::default()),
            events,
            store,
        }
    }

    /// Makes the router contract reach `endpoint` for sandbox `id` on `port`.
    pub fn set_endpoint(&self, id: &str, port: u16, endpoint: Endpoint) {
        self.lock()
            .endpoints
            .insert((id.to_string(), port), endpoint);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn emit(&self, sandbox: &str, kind: &str, message: &str) {
        let _ = self.events.send(SandboxEvent::now(sandbox, kind, message));
    }

    async fn persist(&self, info: &SandboxInfo) {
        if let Some(store) = &self.store {
            let record = SandboxRecord {
                info: info.clone(),
                runtime: serde_json::json!({"fake": true}),
            };
            if let Err(e) = store.put(&record).await {
                tracing::warn!(error = %e, "fake driver: store");
            }
        }
    }

    fn new_info(
        state: &mut State,
        template: &Template,
        pool: Option<&str>,
        shutdown_after: Option<Duration>,
        idle_timeout: Option<Duration>,
        labels: BTreeMap<String, String>,
    ) -> SandboxInfo {
        state.next += 1;
        let now = SystemTime::now();
        // Random, so that ids never collide with those of a previous run.
        let mut r = [0u8; 4];
        let _ = getrandom::fill(&mut r);
        let suffix = u32::from_le_bytes(r);
        let id = match pool {
            Some(p) => format!("{p}-{suffix:08x}"),
            None => format!("sbx-{suffix:08x}"),
        };
        SandboxInfo {
            id,
            template: template.name.clone(),
            pool: pool.map(str::to_owned),
            pool_member: pool.is_some(),
            phase: Phase::Ready,
            launch: if pool.is_some() {
                Launch::Warm
            } else {
                Launch::Cold
            },
            created_at: now,
            shutdown_at: Some(
                now + shutdown_after
                    .or(template.shutdown_after)
                    .unwrap_or(Duration::from_secs(3600)),
            ),
            idle_timeout: idle_timeout.or(template.idle_timeout),
            last_activity: now,
            labels,
            message: None,
        }
    }

    /// Tops a pool up to its replicas; returns the new members.
    fn fill(state: &mut State, pool: &str) -> Vec<SandboxInfo> {
        let Some(spec) = state.pools.get(pool).cloned() else {
            return Vec::new();
        };
        let Some(template) = state.templates.get(&spec.template).cloned() else {
            return Vec::new();
        };
        let have = state
            .sandboxes
            .values()
            .filter_map(|s| s.info.as_ref())
            .filter(|i| i.pool_member && i.pool.as_deref() == Some(pool))
            .count();
        let mut added = Vec::new();
        for _ in have..spec.replicas as usize {
            let info =
                FakeDriver::new_info(state, &template, Some(pool), None, None, BTreeMap::new());
            state.sandboxes.insert(
                info.id.clone(),
                Sandbox {
                    info: Some(info.clone()),
                    ..Sandbox::default()
                },
            );
            added.push(info);
        }
        added
    }

    /// A sandbox that accepts exec and file calls now.
    fn usable(state: &mut State, id: &str) -> Result<(), DriverError> {
        let sb = state
            .sandboxes
            .get_mut(id)
            .and_then(|s| s.info.as_mut())
            .ok_or_else(|| not_found("sandbox", id))?;
        match sb.phase {
            Phase::Ready => {
                sb.last_activity = SystemTime::now();
                Ok(())
            }
            other => Err(DriverError::Conflict(format!(
                "sandbox `{id}` is {other:?}; it must be ready (resume it first if it is suspended)"
            ))),
        }
    }

    fn check_path(path: &str) -> Result<String, DriverError> {
        let p = path.trim_start_matches("./");
        if p.starts_with('/') || p.split('/').any(|c| c == "..") {
            return Err(DriverError::Sandbox(warden_sandboxd::proto::ErrorBody {
                code: warden_sandboxd::proto::ErrorCode::PermissionDenied,
                message: format!("path `{path}` is outside the workspace"),
            }));
        }
        Ok(p.trim_end_matches('/').to_string())
    }

    fn run(argv: &[String], stdin: &str) -> (String, i32) {
        match argv.first().map(String::as_str) {
            Some("echo") => (format!("{}\n", argv[1..].join(" ")), 0),
            Some("true") => (String::new(), 0),
            Some("false") => (String::new(), 1),
            Some("exit") => (
                String::new(),
                argv.get(1).and_then(|c| c.parse().ok()).unwrap_or(0),
            ),
            Some("cat") => (stdin.to_string(), 0),
            Some("/bin/sh") | Some("sh") if argv.get(1).map(String::as_str) == Some("-c") => {
                (format!("{}\n", argv.get(2).cloned().unwrap_or_default()), 0)
            }
            _ => (String::new(), 127),
        }
    }
}

#[async_trait::async_trait]
impl Driver for FakeDriver {
    fn name(&self) -> &'static str {
        "fake"
    }

    async fn recover(&self) -> Result<Vec<SandboxInfo>, DriverError> {
        let Some(store) = &self.store else {
            return Ok(Vec::new());
        };
        let records = store.load_all().await.map_err(DriverError::Internal)?;
        let mut state = self.lock();
        let mut out = Vec::new();
        for r in records {
            out.push(r.info.clone());
            state.sandboxes.insert(
                r.info.id.clone(),
                Sandbox {
                    info: Some(r.info),
                    ..Sandbox::default()
                },
            );
        }
        Ok(out)
    }

    async fn put_template(&self, template: Template) -> Result<(), DriverError> {
        if template
            .policy
            .get("filesystem")
            .and_then(|f| f.get("workspace"))
            .is_some()
        {
            return Err(DriverError::InvalidArgument {
                field: "policy.filesystem.workspace".into(),
                message: "must be unset: every sandbox gets a workspace of its own".into(),
            });
        }
        self.lock()
            .templates
            .insert(template.name.clone(), template);
        Ok(())
    }

    async fn delete_template(&self, name: &str) -> Result<(), DriverError> {
        let mut state = self.lock();
        if let Some(p) = state.pools.values().find(|p| p.template == name) {
            return Err(DriverError::Conflict(format!(
                "template `{name}` is used by pool `{}`; delete the pool first",
                p.name
            )));
        }
        state
            .templates
            .remove(name)
            .map(|_| ())
            .ok_or_else(|| not_found("template", name))
    }

    async fn templates(&self) -> Vec<Template> {
        self.lock().templates.values().cloned().collect()
    }

    async fn put_pool(&self, pool: PoolSpec) -> Result<(), DriverError> {
        let added = {
            let mut state = self.lock();
            if !state.templates.contains_key(&pool.template) {
                return Err(not_found("template", &pool.template));
            }
            let name = pool.name.clone();
            state.pools.insert(name.clone(), pool);
            FakeDriver::fill(&mut state, &name)
        };
        for info in &added {
            self.persist(info).await;
        }
        Ok(())
    }

    async fn delete_pool(&self, name: &str) -> Result<(), DriverError> {
        let removed: Vec<String> = {
            let mut state = self.lock();
            if state.pools.remove(name).is_none() {
                return Err(not_found("pool", name));
            }
            let ids: Vec<String> = state
                .sandboxes
                .iter()
                .filter(|(_, s)| {
                    s.info
                        .as_ref()
                        .is_some_and(|i| i.pool_member && i.pool.as_deref() == Some(name))
                })
                .map(|(id, _)| id.clone())
                .collect();
            for id in &ids {
                state.sandboxes.remove(id);
            }
            ids
        };
        if let Some(store) = &self.store {
            for id in removed {
                let _ = store.remove(&id).await;
            }
        }
        Ok(())
    }

    async fn pools(&self) -> Vec<PoolStatus> {
        let state = self.lock();
        state
            .pools
            .values()
            .map(|p| PoolStatus {
                name: p.name.clone(),
                template: p.template.clone(),
                replicas: p.replicas,
                ready: state
                    .sandboxes
                    .values()
                    .filter_map(|s| s.info.as_ref())
                    .filter(|i| i.pool_member && i.pool.as_deref() == Some(p.name.as_str()))
                    .count() as u32,
                starting: 0,
            })
            .collect()
    }

    async fn create(&self, request: CreateRequest) -> Result<SandboxInfo, DriverError> {
        let info = {
            let mut state = self.lock();
            let template = state
                .templates
                .get(&request.template)
                .cloned()
                .ok_or_else(|| not_found("template", &request.template))?;
            let info = FakeDriver::new_info(
                &mut state,
                &template,
                None,
                request.shutdown_after,
                request.idle_timeout,
                request.labels,
            );
            state.sandboxes.insert(
                info.id.clone(),
                Sandbox {
                    info: Some(info.clone()),
                    ..Sandbox::default()
                },
            );
            info
        };
        self.persist(&info).await;
        self.emit(&info.id, "created", "cold");
        Ok(info)
    }

    async fn claim(&self, request: ClaimRequest) -> Result<SandboxInfo, DriverError> {
        let (info, added) = {
            let mut state = self.lock();
            let pool = state
                .pools
                .get(&request.pool)
                .cloned()
                .ok_or_else(|| not_found("pool", &request.pool))?;
            let member = state
                .sandboxes
                .values()
                .filter_map(|s| s.info.as_ref())
                .find(|i| i.pool_member && i.pool.as_deref() == Some(pool.name.as_str()))
                .map(|i| i.id.clone());
            let now = SystemTime::now();
            let info = match member {
                Some(id) => {
                    let template = state.templates.get(&pool.template).cloned();
                    let sb = state.sandboxes.get_mut(&id).and_then(|s| s.info.as_mut());
                    let Some(sb) = sb else {
                        return Err(DriverError::Internal("member vanished".into()));
                    };
                    sb.pool_member = false;
                    sb.labels = request.labels;
                    sb.shutdown_at = Some(
                        now + request
                            .shutdown_after
                            .or(template.and_then(|t| t.shutdown_after))
                            .unwrap_or(Duration::from_secs(3600)),
                    );
                    if request.idle_timeout.is_some() {
                        sb.idle_timeout = request.idle_timeout;
                    }
                    sb.clone()
                }
                None => {
                    let template = state
                        .templates
                        .get(&pool.template)
                        .cloned()
                        .ok_or_else(|| not_found("template", &pool.template))?;
                    let mut info = FakeDriver::new_info(
                        &mut state,
                        &template,
                        None,
                        request.shutdown_after,
                        request.idle_timeout,
                        request.labels,
                    );
                    info.pool = Some(pool.name.clone());
                    info.pool_member = false;
                    state.sandboxes.insert(
                        info.id.clone(),
                        Sandbox {
                            info: Some(info.clone()),
                            ..Sandbox::default()
                        },
                    );
                    info
                }
            };
            let added = FakeDriver::fill(&mut state, &pool.name);
            (info, added)
        };
        self.persist(&info).await;
        for a in &added {
            self.persist(a).await;
        }
        self.emit(&info.id, "claimed", &request.pool);
        Ok(info)
    }

    async fn get(&self, id: &str) -> Result<SandboxInfo, DriverError> {
        self.lock()
            .sandboxes
            .get(id)
            .and_then(|s| s.info.clone())
            .ok_or_else(|| not_found("sandbox", id))
    }

    async fn list(&self) -> Vec<SandboxInfo> {
        self.lock()
            .sandboxes
            .values()
            .filter_map(|s| s.info.clone())
            .collect()
    }

    async fn delete(&self, id: &str) -> Result<(), DriverError> {
        if self.lock().sandboxes.remove(id).is_none() {
            return Err(not_found("sandbox", id));
        }
        if let Some(store) = &self.store {
            store.remove(id).await.map_err(DriverError::Internal)?;
        }
        self.emit(id, "deleted", "");
        Ok(())
    }

    async fn suspend(&self, id: &str) -> Result<SandboxInfo, DriverError> {
        let info = {
            let mut state = self.lock();
            FakeDriver::usable(&mut state, id)?;
            let info = state
                .sandboxes
                .get_mut(id)
                .and_then(|s| s.info.as_mut())
                .ok_or_else(|| not_found("sandbox", id))?;
            info.phase = Phase::Suspended;
            info.clone()
        };
        self.persist(&info).await;
        self.emit(id, "suspended", "");
        Ok(info)
    }

    async fn resume(&self, id: &str) -> Result<SandboxInfo, DriverError> {
        let info = {
            let mut state = self.lock();
            let info = state
                .sandboxes
                .get_mut(id)
                .and_then(|s| s.info.as_mut())
                .ok_or_else(|| not_found("sandbox", id))?;
            if info.phase != Phase::Suspended {
                return Err(DriverError::Conflict(format!(
                    "sandbox `{id}` is not suspended"
                )));
            }
            info.phase = Phase::Ready;
            info.clone()
        };
        self.persist(&info).await;
        self.emit(id, "resumed", "");
        Ok(info)
    }

    async fn set_shutdown(
        &self,
        id: &str,
        at: Option<SystemTime>,
    ) -> Result<SandboxInfo, DriverError> {
        let info = {
            let mut state = self.lock();
            let info = state
                .sandboxes
                .get_mut(id)
                .and_then(|s| s.info.as_mut())
                .ok_or_else(|| not_found("sandbox", id))?;
            info.shutdown_at = at;
            info.clone()
        };
        self.persist(&info).await;
        self.emit(id, "timeout_set", "");
        Ok(info)
    }

    async fn exec(&self, id: &str, request: ExecRequest) -> Result<ExecResult, DriverError> {
        FakeDriver::usable(&mut self.lock(), id)?;
        let (stdout, exit_code) = FakeDriver::run(
            &request.command.argv(),
            request.stdin.as_deref().unwrap_or(""),
        );
        Ok(ExecResult {
            stdout,
            stderr: String::new(),
            exit_code,
            timed_out: false,
            signal: None,
            duration_ms: 0.1,
            truncated: false,
        })
    }

    async fn exec_stream(
        &self,
        id: &str,
        request: ExecRequest,
    ) -> Result<ExecSession, DriverError> {
        FakeDriver::usable(&mut self.lock(), id)?;
        let (stdin_tx, mut stdin_rx) = mpsc::channel::<StdinMsg>(16);
        let (out_tx, out_rx) = mpsc::channel::<StreamItem>(16);
        let argv = request.command.argv();
        tokio::spawn(async move {
            let _ = out_tx
                .send(StreamItem::Event(ExecEvent::Started { pid: 42 }))
                .await;
            let interactive = matches!(argv.first().map(String::as_str), Some("cat" | "sleep"));
            let mut exit_code = 0;
            if interactive {
                let echo = argv[0] == "cat";
                loop {
                    match stdin_rx.recv().await {
                        Some(StdinMsg::Data(b)) if echo => {
                            if out_tx.send(StreamItem::Stdout(b)).await.is_err() {
                                return;
                            }
                        }
                        Some(StdinMsg::Data(_)) => {}
                        Some(StdinMsg::Control(ExecControl::Resize { cols, rows })) => {
                            let text = format!("resize {cols}x{rows}\n");
                            let _ = out_tx.send(StreamItem::Stdout(Bytes::from(text))).await;
                        }
                        Some(StdinMsg::Control(ExecControl::Signal { signal })) => {
                            exit_code = 128 + signal;
                            break;
                        }
                        Some(StdinMsg::Control(ExecControl::Eof)) | None => break,
                    }
                }
            } else {
                let (stdout, code) = FakeDriver::run(&argv, "");
                exit_code = code;
                if !stdout.is_empty() {
                    let _ = out_tx.send(StreamItem::Stdout(Bytes::from(stdout))).await;
                }
                if code == 127 {
                    let _ = out_tx
                        .send(StreamItem::Stderr(Bytes::from_static(b"not found\n")))
                        .await;
                }
            }
            let _ = out_tx
                .send(StreamItem::Event(ExecEvent::Exit {
                    exit_code,
                    timed_out: false,
                    signal: None,
                    duration_ms: 0.1,
                }))
                .await;
        });
        Ok(ExecSession {
            stdin: stdin_tx,
            output: out_rx,
        })
    }

    async fn read_file(&self, id: &str, path: &str) -> Result<ByteStream, DriverError> {
        let p = FakeDriver::check_path(path)?;
        let mut state = self.lock();
        FakeDriver::usable(&mut state, id)?;
        let data = state
            .sandboxes
            .get(id)
            .and_then(|s| s.files.get(&p).cloned())
            .ok_or_else(|| not_found("path", path))?;
        Ok(Box::pin(futures_util::stream::iter([Ok(data)])))
    }

    async fn write_file(
        &self,
        id: &str,
        path: &str,
        _mode: Option<u32>,
        mut body: ByteStream,
    ) -> Result<(), DriverError> {
        let p = FakeDriver::check_path(path)?;
        let quota = {
            let mut state = self.lock();
            FakeDriver::usable(&mut state, id)?;
            let template = state
                .sandboxes
                .get(id)
                .and_then(|s| s.info.as_ref())
                .map(|i| i.template.clone())
                .unwrap_or_default();
            let used: u64 = state
                .sandboxes
                .get(id)
                .map(|s| {
                    s.files
                        .iter()
                        .filter(|(k, _)| **k != p)
                        .map(|(_, v)| v.len() as u64)
                        .sum()
                })
                .unwrap_or(0);
            state
                .templates
                .get(&template)
                .and_then(|t| t.workspace_quota)
                .unwrap_or(1 << 30)
                .saturating_sub(used)
        };
        let mut data = Vec::new();
        while let Some(chunk) = body.next().await {
            let chunk = chunk.map_err(|e| DriverError::Unavailable(e.to_string()))?;
            data.extend_from_slice(&chunk);
            if data.len() as u64 > quota {
                return Err(DriverError::QuotaExceeded(format!(
                    "upload to `{path}` goes over the workspace quota"
                )));
            }
        }
        let mut state = self.lock();
        let sb = state
            .sandboxes
            .get_mut(id)
            .ok_or_else(|| not_found("sandbox", id))?;
        sb.files.insert(p, Bytes::from(data));
        Ok(())
    }

    async fn list_dir(&self, id: &str, path: &str) -> Result<DirListing, DriverError> {
        let p = FakeDriver::check_path(path)?;
        let p = if p == "." { String::new() } else { p };
        let mut state = self.lock();
        FakeDriver::usable(&mut state, id)?;
        let sb = state
            .sandboxes
            .get(id)
            .ok_or_else(|| not_found("sandbox", id))?;
        if sb.files.contains_key(&p) {
            return Err(DriverError::InvalidArgument {
                field: "path".into(),
                message: format!("`{path}` is not a directory"),
            });
        }
        if !p.is_empty() && !sb.dirs.contains(&p) {
            return Err(not_found("path", path));
        }
        let prefix = if p.is_empty() {
            String::new()
        } else {
            format!("{p}/")
        };
        let mut entries = Vec::new();
        for (name, data) in &sb.files {
            if let Some(rest) = name.strip_prefix(&prefix)
                && !rest.contains('/')
            {
                entries.push(entry(rest, data.len() as u64, EntryType::File));
            }
        }
        for d in &sb.dirs {
            if let Some(rest) = d.strip_prefix(&prefix)
                && !rest.contains('/')
            {
                entries.push(entry(rest, 0, EntryType::Directory));
            }
        }
        Ok(DirListing {
            path: path.to_string(),
            entries,
        })
    }

    async fn exists(&self, id: &str, path: &str) -> Result<bool, DriverError> {
        let p = FakeDriver::check_path(path)?;
        let mut state = self.lock();
        FakeDriver::usable(&mut state, id)?;
        let sb = state
            .sandboxes
            .get(id)
            .ok_or_else(|| not_found("sandbox", id))?;
        Ok(p == "." || sb.files.contains_key(&p) || sb.dirs.contains(&p))
    }

    async fn remove(&self, id: &str, path: &str, recursive: bool) -> Result<(), DriverError> {
        let p = FakeDriver::check_path(path)?;
        let mut state = self.lock();
        FakeDriver::usable(&mut state, id)?;
        let sb = state
            .sandboxes
            .get_mut(id)
            .ok_or_else(|| not_found("sandbox", id))?;
        if sb.files.remove(&p).is_some() {
            return Ok(());
        }
        if !sb.dirs.contains(&p) {
            return Err(not_found("path", path));
        }
        let prefix = format!("{p}/");
        let non_empty = sb
            .files
            .keys()
            .chain(sb.dirs.iter())
            .any(|k| k.starts_with(&prefix));
        if non_empty && !recursive {
            return Err(DriverError::Conflict(format!(
                "directory `{path}` is not empty; pass recursive=true"
            )));
        }
        sb.files.retain(|k, _| !k.starts_with(&prefix));
        sb.dirs.retain(|k| !k.starts_with(&prefix) && *k != p);
        Ok(())
    }

    async fn mkdir(&self, id: &str, path: &str) -> Result<(), DriverError> {
        let p = FakeDriver::check_path(path)?;
        let mut state = self.lock();
        FakeDriver::usable(&mut state, id)?;
        let sb = state
            .sandboxes
            .get_mut(id)
            .ok_or_else(|| not_found("sandbox", id))?;
        let mut acc = String::new();
        for part in p.split('/') {
            if !acc.is_empty() {
                acc.push('/');
            }
            acc.push_str(part);
            sb.dirs.insert(acc.clone());
        }
        Ok(())
    }

    async fn connect_runtime(&self, id: &str, port: u16) -> Result<RuntimeConn, DriverError> {
        let endpoint = {
            let state = self.lock();
            if !state.sandboxes.contains_key(id) {
                return Err(not_found("sandbox", id));
            }
            state
                .endpoints
                .get(&(id.to_string(), port))
                .cloned()
                .ok_or_else(|| {
                    DriverError::Unavailable(format!(
                        "sandbox `{id}` answers nothing on port {port}"
                    ))
                })?
        };
        endpoint
            .connect()
            .await
            .map_err(|e| DriverError::Unavailable(format!("sandbox `{id}`: {e}")))
    }

    fn events(&self) -> broadcast::Receiver<SandboxEvent> {
        self.events.subscribe()
    }
}

fn entry(name: &str, size: u64, kind: EntryType) -> FileEntry {
    FileEntry {
        name: name.to_string(),
        size,
        kind,
        modified_at: "2026-01-01T00:00:00Z".into(),
        mode: if kind == EntryType::Directory {
            "0755".into()
        } else {
            "0644".into()
        },
    }
}
