//! The queue's workers: claim a task, run it in its own sandbox, record every step.
//!
//! [`Tasks`] is what the API and the runner share: submissions go into the store as QUEUED
//! and wake the dispatcher; the dispatcher claims tasks while fewer than `concurrency` run
//! (`TaskStore::claim_next` is atomic, so replicas sharing a database never run one task
//! twice); each task gets one sandbox from its template, the git workflow and the agent,
//! under its timeout; the sandbox is deleted afterwards, whatever happened.
//!
//! A running task holds a lease in the store, renewed every third of [`RunnerConfig::lease`].
//! The renewal also carries cancellation from other replicas (`cancel_requested`). At start a
//! replica fails the tasks it held before it stopped (its id is kept in the data directory),
//! and every replica fails tasks whose lease ran out: none is left RUNNING forever, none is
//! run a second time behind a client's back.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Value, json};
use tokio::sync::{Notify, Semaphore, broadcast, mpsc};
use warden_agent::run::{AgentEvent, Cancel, CancelHandle, RunOutcome, RunStatus, cancellation};
use warden_sandbox::{CreateRequest, Driver};
use warden_sandboxd::proto::{Command, ExecRequest};

use super::git::{self, GitConfig, GitLog, PushResult};
use super::model::{
    FieldError, Task, TaskDefaults, TaskEvent, TaskStatus, TaskSubmission, Timestamp,
    check_idempotency_key, new_task_id,
};
use super::store::{CancelOutcome, Inserted, TaskPage, TaskQuery, TaskStore, TaskStoreError};

/// How the runner works.
#[derive(Debug, Clone)]
pub struct RunnerConfig {
    /// This replica's name in the store (`owner` of the tasks it runs).
    pub owner: String,
    /// Tasks run at once (default 10).
    pub concurrency: usize,
    /// How long a claim holds without renewal (default 30 s).
    pub lease: Duration,
    /// How often an idle dispatcher looks for work another replica queued (default 1 s).
    pub poll: Duration,
    /// Where agent runs keep their transcripts and approvals (`<data>/agent-runs`).
    pub agent_runs: PathBuf,
    pub git: GitConfig,
    pub defaults: TaskDefaults,
    /// OpenTelemetry traces of tasks (off unless configured).
    pub telemetry: super::telemetry::Telemetry,
}

impl RunnerConfig {
    pub fn new(owner: impl Into<String>, agent_runs: impl Into<PathBuf>) -> RunnerConfig {
        RunnerConfig {
            owner: owner.into(),
            concurrency: 10,
            lease: Duration::from_secs(30),
            poll: Duration::from_secs(1),
            agent_runs: agent_runs.into(),
            git: GitConfig::default(),
            defaults: TaskDefaults::default(),
            telemetry: super::telemetry::Telemetry::disabled(),
        }
    }
}

/// What the agent of a task gets.
pub struct AgentRun {
    pub task: Task,
    pub driver: Arc<dyn Driver>,
    pub sandbox: String,
    /// The checkout, as an absolute path inside the sandbox.
    pub checkout: String,
    /// `<agent_runs>/<task id>`: transcript and approvals.
    pub run_dir: PathBuf,
    /// Every event the agent reports goes here (the task log, status, telemetry).
    pub events: Arc<dyn Fn(AgentEvent) + Send + Sync>,
    pub cancel: Cancel,
    /// W3C trace context for agents that honour `TRACEPARENT`.
    pub traceparent: Option<String>,
}

impl std::fmt::Debug for AgentRun {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AgentRun")
            .field("task", &self.task.id)
            .field("sandbox", &self.sandbox)
            .field("checkout", &self.checkout)
            .finish_non_exhaustive()
    }
}

/// Runs the agent of a task in its sandbox.
#[async_trait]
pub trait TaskAgent: Send + Sync {
    async fn run(&self, run: AgentRun) -> RunOutcome;
}

/// Why a submission was refused.
#[derive(Debug)]
pub enum SubmitError {
    Invalid(Vec<FieldError>),
    Store(TaskStoreError),
}

/// One event of one task, as live watchers get it.
#[derive(Debug, Clone)]
pub struct LiveEvent {
    pub task_id: String,
    pub event: TaskEvent,
}

/// The tasks of a server: submissions, queries, cancellation, and the workers.
#[derive(Clone)]
pub struct Tasks {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Tasks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tasks")
            .field("owner", &self.inner.cfg.owner)
            .finish_non_exhaustive()
    }
}

struct Inner {
    store: Arc<dyn TaskStore>,
    driver: Arc<dyn Driver>,
    agent: Arc<dyn TaskAgent>,
    cfg: RunnerConfig,
    wake: Notify,
    live: broadcast::Sender<LiveEvent>,
    /// Tasks running here: their cancel handles.
    running: Mutex<HashMap<String, CancelHandle>>,
    slots: Arc<Semaphore>,
    metrics: std::sync::OnceLock<crate::metrics::TaskMetrics>,
}

impl Tasks {
    pub fn new(
        store: Arc<dyn TaskStore>,
        driver: Arc<dyn Driver>,
        agent: Arc<dyn TaskAgent>,
        cfg: RunnerConfig,
    ) -> Tasks {
        let (live, _) = broadcast::channel(4096);
        let slots = Arc::new(Semaphore::new(cfg.concurrency.max(1)));
        Tasks {
            inner: Arc::new(Inner {
                store,
                driver,
                agent,
                cfg,
                wake: Notify::new(),
                live,
                running: Mutex::new(HashMap::new()),
                slots,
                metrics: std::sync::OnceLock::new(),
            }),
        }
    }

    /// Where finished tasks are counted (the server's registry); set once.
    pub fn set_metrics(&self, metrics: crate::metrics::TaskMetrics) {
        let _ = self.inner.metrics.set(metrics);
    }

    pub fn store(&self) -> &Arc<dyn TaskStore> {
        &self.inner.store
    }

    pub fn config(&self) -> &RunnerConfig {
        &self.inner.cfg
    }

    /// Tasks running on this replica now.
    pub fn running_here(&self) -> usize {
        self.inner.running.lock().map(|m| m.len()).unwrap_or(0)
    }

    /// Validates and queues a submission. `header_key` is the `Idempotency-Key` header; a
    /// key already used returns the first task, with `false`.
    pub async fn submit(
        &self,
        mut submission: TaskSubmission,
        header_key: Option<String>,
    ) -> Result<(Task, bool), SubmitError> {
        if let Some(k) = header_key {
            if let Err(m) = check_idempotency_key(&k) {
                return Err(SubmitError::Invalid(vec![FieldError {
                    field: "Idempotency-Key".into(),
                    message: m,
                }]));
            }
            match &submission.idempotency_key {
                Some(body) if *body != k => {
                    return Err(SubmitError::Invalid(vec![FieldError {
                        field: "idempotency_key".into(),
                        message: "differs from the Idempotency-Key header; send one or the same"
                            .into(),
                    }]));
                }
                _ => submission.idempotency_key = Some(k),
            }
        }
        let id = new_task_id();
        let spec = self.check(submission, &id).await?;
        let task = Task::new(id, spec, Timestamp::now());
        match self
            .inner
            .store
            .insert(&task)
            .await
            .map_err(SubmitError::Store)?
        {
            Inserted::Created(t) => {
                // The store wrote the first event with the task; watchers hear of it here.
                let _ = self.inner.live.send(LiveEvent {
                    task_id: t.id.clone(),
                    event: TaskEvent {
                        seq: 1,
                        time: t.created_at,
                        kind: "status".into(),
                        data: json!({"status": "QUEUED"}),
                    },
                });
                self.inner.wake.notify_one();
                Ok((t, true))
            }
            Inserted::Existing(t) => Ok((t, false)),
        }
    }

    /// Checks a submission as [`Tasks::submit`] does, without queuing it: its fields, its
    /// template, and that the template's policy lets the sandbox reach its repository. `id`
    /// is the task's id (the default branch is named after it).
    pub async fn check(
        &self,
        submission: TaskSubmission,
        id: &str,
    ) -> Result<super::model::TaskSpec, SubmitError> {
        let spec = submission
            .validate(id, &self.inner.cfg.defaults)
            .map_err(SubmitError::Invalid)?;
        let mut errors = Vec::new();
        let templates = self.inner.driver.templates().await;
        if let Some(t) = templates.iter().find(|t| t.name == spec.template) {
            if let Err(m) = repo_reachable(t, &spec.repo) {
                errors.push(FieldError {
                    field: "repo".into(),
                    message: m,
                });
            }
        } else {
            let mut names: Vec<&str> = templates.iter().map(|t| t.name.as_str()).collect();
            names.sort();
            errors.push(FieldError {
                field: "template".into(),
                message: format!(
                    "no template `{}`; this server has: {}",
                    spec.template,
                    if names.is_empty() {
                        "none (create one with PUT /v1/templates/{name})".to_string()
                    } else {
                        names.join(", ")
                    }
                ),
            });
        }
        if !errors.is_empty() {
            return Err(SubmitError::Invalid(errors));
        }
        Ok(spec)
    }

    pub async fn get(&self, id: &str) -> Result<Option<Task>, TaskStoreError> {
        self.inner.store.get(id).await
    }

    pub async fn list(&self, q: &TaskQuery) -> Result<TaskPage, TaskStoreError> {
        self.inner.store.list(q).await
    }

    pub async fn events(
        &self,
        id: &str,
        after: i64,
        limit: u32,
    ) -> Result<Vec<TaskEvent>, TaskStoreError> {
        self.inner.store.events(id, after, limit).await
    }

    /// Live events of every task (for SSE followers; they read the store first, then this).
    pub fn subscribe(&self) -> broadcast::Receiver<LiveEvent> {
        self.inner.live.subscribe()
    }

    /// Cancels a task: a queued one at once, a running one through its runner (here at
    /// once, on another replica at its next lease renewal).
    pub async fn cancel(&self, id: &str) -> Result<Option<CancelOutcome>, TaskStoreError> {
        let out = self
            .inner
            .store
            .cancel(id, Timestamp::now(), "canceled by a client")
            .await?;
        match &out {
            Some(CancelOutcome::Canceled(_)) => {
                self.record(
                    id,
                    "status",
                    json!({"status": "CANCELED", "reason": "canceled by a client"}),
                )
                .await;
            }
            Some(CancelOutcome::Requested(_)) => {
                if let Some(h) = self
                    .inner
                    .running
                    .lock()
                    .ok()
                    .and_then(|m| m.get(id).cloned())
                {
                    h.cancel();
                }
            }
            _ => {}
        }
        Ok(out)
    }

    /// Appends to a task's log and tells live watchers.
    async fn record(&self, task_id: &str, kind: &str, data: Value) {
        match self
            .inner
            .store
            .append_event(task_id, Timestamp::now(), kind, &data)
            .await
        {
            Ok(event) => {
                let _ = self.inner.live.send(LiveEvent {
                    task_id: task_id.to_string(),
                    event,
                });
            }
            Err(e) => tracing::warn!(task = task_id, error = %e, "could not keep a task event"),
        }
    }

    /// Starts the dispatcher: first fails what this replica held before it stopped, then
    /// claims and runs tasks until the process ends.
    pub fn start(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move { this.dispatch().await })
    }

    /// Fails active tasks that lost their runner: this replica's (at start) or any whose
    /// lease ran out. Returns how many.
    pub async fn reap(&self, restarting: bool) -> usize {
        let owner = &self.inner.cfg.owner;
        let (who, reason) = if restarting {
            (
                Some(owner.as_str()),
                format!(
                    "warden serve ({owner}) stopped while the task ran; it was not resumed (submit it again)"
                ),
            )
        } else {
            (
                None,
                "its runner stopped renewing its lease (its warden serve replica stopped or lost the database)"
                    .to_string(),
            )
        };
        match self
            .inner
            .store
            .fail_abandoned(Timestamp::now(), who, &reason)
            .await
        {
            Ok(tasks) => {
                for t in &tasks {
                    tracing::warn!(task = %t.id, %reason, "task failed: abandoned");
                    self.record(
                        &t.id,
                        "status",
                        json!({"status": "FAILED", "reason": reason}),
                    )
                    .await;
                    if let Some(sb) = &t.sandbox {
                        // Its sandbox, if this server's driver still has it.
                        let _ = self.inner.driver.delete(sb).await;
                    }
                }
                tasks.len()
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not look for abandoned tasks");
                0
            }
        }
    }

    async fn dispatch(self) {
        self.reap(true).await;
        // Reaping runs on its own clock: a replica whose slots are all busy still fails the
        // tasks other replicas abandoned.
        let reaper = {
            let this = self.clone();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(this.inner.cfg.lease).await;
                    this.reap(false).await;
                }
            })
        };
        let _stop_reaper = AbortOnDrop(reaper);
        loop {
            let Ok(permit) = self.inner.slots.clone().acquire_owned().await else {
                return;
            };
            let now = Timestamp::now();
            let lease_until = Timestamp(now.0 + self.inner.cfg.lease.as_millis() as i64);
            match self
                .inner
                .store
                .claim_next(&self.inner.cfg.owner, now, lease_until)
                .await
            {
                Ok(Some(task)) => {
                    let this = self.clone();
                    tokio::spawn(async move {
                        this.run(task).await;
                        drop(permit);
                    });
                }
                Ok(None) => {
                    drop(permit);
                    let _ =
                        tokio::time::timeout(self.inner.cfg.poll, self.inner.wake.notified()).await;
                }
                Err(e) => {
                    drop(permit);
                    tracing::warn!(error = %e, "could not claim a task; retrying");
                    tokio::time::sleep(self.inner.cfg.poll).await;
                }
            }
        }
    }

    /// Runs one claimed task to its end.
    async fn run(&self, task: Task) {
        let id = task.id.clone();
        let (handle, cancel) = cancellation();
        if let Ok(mut m) = self.inner.running.lock() {
            m.insert(id.clone(), handle.clone());
        }
        let trace = Arc::new(Mutex::new(Some(self.inner.cfg.telemetry.task_trace(&task))));
        let shared = Arc::new(Mutex::new(task));
        self.record(
            &id,
            "status",
            json!({"status": "RUNNING", "owner": self.inner.cfg.owner}),
        )
        .await;

        // The lease: renewed, and the way cancellation from anywhere arrives.
        let lost = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let heartbeat = {
            let this = self.clone();
            let shared = shared.clone();
            let handle = handle.clone();
            let lost = lost.clone();
            tokio::spawn(async move {
                let every = this.inner.cfg.lease / 3;
                loop {
                    tokio::time::sleep(every).await;
                    match this.save(&shared).await {
                        Ok(Some(true)) => handle.cancel(),
                        Ok(Some(false)) => {}
                        Ok(None) => {
                            lost.store(true, std::sync::atomic::Ordering::SeqCst);
                            handle.cancel();
                            return;
                        }
                        Err(e) => tracing::warn!(error = %e, "could not renew a task's lease"),
                    }
                }
            })
        };

        let timeout = Duration::from_secs(snapshot(&shared).spec.timeout_secs);
        let creation: Creation = Arc::default();
        let work = self.work(
            shared.clone(),
            cancel.clone(),
            trace.clone(),
            creation.clone(),
        );
        let ending = tokio::select! {
            r = work => r,
            _ = tokio::time::sleep(timeout) => Ending::TimedOut,
            _ = cancel.cancelled() => Ending::Canceled,
        };
        heartbeat.abort();

        // Whatever happened: the sandbox goes. A start the select cut short runs to its end
        // first (its task was spawned), so a sandbox it made is known and deleted too.
        let pending = creation.lock().ok().and_then(|mut c| c.handle.take());
        if let Some(h) = pending {
            let _ = h.await;
        }
        let made = creation.lock().ok().and_then(|c| c.id.clone());
        let sandbox = snapshot(&shared).sandbox.clone().or(made);
        if let Some(sb) = &sandbox {
            match self.inner.driver.delete(sb).await {
                Ok(()) => {
                    self.record(&id, "step", json!({"step": "release", "sandbox": sb}))
                        .await
                }
                Err(e) => {
                    self.record(
                        &id,
                        "log",
                        json!({"stream": "warden", "text": format!("could not delete sandbox {sb}: {e}")}),
                    )
                    .await
                }
            }
        }
        if let Ok(mut m) = self.inner.running.lock() {
            m.remove(&id);
        }
        if lost.load(std::sync::atomic::Ordering::SeqCst) {
            // Another replica failed it (its lease lapsed): its record stands.
            return;
        }
        let (status, reason, summary) = match ending {
            Ending::Done { summary } => (TaskStatus::Succeeded, None, Some(summary)),
            Ending::Failed(r) => (TaskStatus::Failed, Some(r), None),
            Ending::Canceled => (
                TaskStatus::Canceled,
                Some("canceled by a client".to_string()),
                None,
            ),
            Ending::TimedOut => (
                TaskStatus::TimedOut,
                Some(format!(
                    "ran past its timeout of {}",
                    humantime::format_duration(timeout)
                )),
                None,
            ),
        };
        {
            let Ok(mut t) = shared.lock() else { return };
            t.status = status;
            t.reason = reason.clone();
            if summary.is_some() {
                t.summary = summary;
            }
            t.finished_at = Some(Timestamp::now());
            t.sandbox = None;
        }
        let mut data = json!({"status": status.as_str()});
        if let Some(r) = &reason {
            data["reason"] = Value::String(r.clone());
        }
        if let Err(e) = self.save_logged(&shared, &id, data).await {
            tracing::warn!(task = %id, error = %e, "could not record a task's end");
        }
        if let Some(m) = self.inner.metrics.get() {
            let t = snapshot(&shared);
            let secs = (Timestamp::now().0 - t.created_at.0).max(0) as f64 / 1000.0;
            m.finished(
                status.as_str(),
                secs,
                t.usage.input_tokens,
                t.usage.output_tokens,
            );
        }
        tracing::info!(task = %id, status = status.as_str(), "task finished");
        let done = snapshot(&shared);
        if let Some(t) = trace.lock().ok().and_then(|mut t| t.take()) {
            t.finish(&done);
        }
    }

    /// Writes the task (renewing its lease); `Some(cancel_requested)`, or `None` when this
    /// runner no longer holds it.
    async fn save(&self, shared: &Arc<Mutex<Task>>) -> Result<Option<bool>, TaskStoreError> {
        let mut t = snapshot(shared);
        t.updated_at = Timestamp::now();
        let lease_until = Timestamp(t.updated_at.0 + self.inner.cfg.lease.as_millis() as i64);
        self.inner.store.update_owned(&t, lease_until).await
    }

    /// [`Tasks::save`] with a `status` event in the same change; watchers hear of it.
    async fn save_logged(
        &self,
        shared: &Arc<Mutex<Task>>,
        id: &str,
        data: Value,
    ) -> Result<Option<bool>, TaskStoreError> {
        let mut t = snapshot(shared);
        t.updated_at = Timestamp::now();
        let lease_until = Timestamp(t.updated_at.0 + self.inner.cfg.lease.as_millis() as i64);
        match self
            .inner
            .store
            .update_owned_logged(&t, lease_until, "status", &data)
            .await?
        {
            Some((cancel, event)) => {
                let _ = self.inner.live.send(LiveEvent {
                    task_id: id.to_string(),
                    event,
                });
                Ok(Some(cancel))
            }
            None => Ok(None),
        }
    }

    async fn set_status(&self, shared: &Arc<Mutex<Task>>, status: TaskStatus) {
        let id = {
            let Ok(mut t) = shared.lock() else { return };
            // An end, once set, stays.
            if t.status == status || t.status.is_terminal() {
                return;
            }
            t.status = status;
            t.id.clone()
        };
        // Only while this runner still holds the task (not after its end was written).
        let _ = self
            .save_logged(shared, &id, json!({"status": status.as_str()}))
            .await;
    }

    /// Sandbox, clone and branch, agent, commit and push.
    async fn work(
        &self,
        shared: Arc<Mutex<Task>>,
        cancel: Cancel,
        trace: Trace,
        creation: Creation,
    ) -> Ending {
        let task = snapshot(&shared);
        let id = task.id.clone();

        // Log lines (from synchronous callbacks) reach the store in order through one
        // writer.
        let (log_tx, mut log_rx) = mpsc::unbounded_channel::<(String, Value)>();
        // Status changes the agent's events cause go the same way, so they keep their order.
        let writer = {
            let this = self.clone();
            let id = id.clone();
            let shared = shared.clone();
            tokio::spawn(async move {
                while let Some((kind, data)) = log_rx.recv().await {
                    if kind == SET_STATUS {
                        if let Some(s) = data.as_str().and_then(|s| TaskStatus::parse(s).ok()) {
                            this.set_status(&shared, s).await;
                        }
                    } else {
                        this.record(&id, &kind, data).await;
                    }
                }
            })
        };
        let result = self
            .work_steps(&shared, &task, cancel, log_tx, &trace, &creation)
            .await;
        // Every log line is stored before the task's end is.
        let _ = writer.await;
        result
    }

    async fn work_steps(
        &self,
        shared: &Arc<Mutex<Task>>,
        task: &Task,
        cancel: Cancel,
        log_tx: mpsc::UnboundedSender<(String, Value)>,
        trace: &Trace,
        creation: &Creation,
    ) -> Ending {
        let driver = &self.inner.driver;
        let id = task.id.clone();
        // One span per phase; each ends with the phase's outcome.
        let span = |name: &str| {
            trace
                .lock()
                .ok()
                .and_then(|t| t.as_ref().map(|t| t.step(name)))
        };
        let end = |s: Option<super::telemetry::StepSpan>, r: Result<(), &str>| {
            if let Some(s) = s {
                s.end(r);
            }
        };
        let step = |name: &str, extra: Value| {
            let mut data = json!({"step": name});
            if let (Value::Object(d), Value::Object(e)) = (&mut data, extra) {
                d.extend(e);
            }
            let _ = log_tx.send(("step".into(), data));
        };

        // 1. The sandbox.
        step("sandbox", json!({"template": task.spec.template}));
        let mut labels = std::collections::BTreeMap::new();
        labels.insert("warden.task".to_string(), id.clone());
        // The trace context reaches every command of the sandbox (agents and tools that
        // honour TRACEPARENT join the task's trace).
        let mut env = task.spec.env.clone();
        if let Some(tp) = trace
            .lock()
            .ok()
            .and_then(|t| t.as_ref().and_then(|t| t.traceparent()))
        {
            env.insert("TRACEPARENT".into(), tp);
        }
        let request = CreateRequest {
            template: task.spec.template.clone(),
            // The sandbox outlives a lost runner by at most the task's timeout and a minute.
            shutdown_after: Some(Duration::from_secs(task.spec.timeout_secs + 60)),
            idle_timeout: None,
            env,
            labels,
            workspace: None,
        };
        let s = span("sandbox");
        // The start runs in its own task: if the task is cancelled or times out meanwhile,
        // the start still finishes and records its sandbox, which `run` then deletes.
        let (done_tx, done_rx) = tokio::sync::oneshot::channel();
        let handle = {
            let driver = driver.clone();
            let creation = creation.clone();
            tokio::spawn(async move {
                let r = driver.create(request).await;
                if let (Ok(info), Ok(mut c)) = (&r, creation.lock()) {
                    c.id = Some(info.id.clone());
                }
                let _ = done_tx.send(r);
            })
        };
        if let Ok(mut c) = creation.lock() {
            c.handle = Some(handle);
        }
        let created = match done_rx.await {
            Ok(r) => r,
            Err(_) => {
                end(s, Err("the sandbox's start was lost"));
                return Ending::Failed("the sandbox's start was lost".into());
            }
        };
        let sandbox = match created {
            Ok(info) => {
                end(s, Ok(()));
                info.id
            }
            Err(e) => {
                let why = format!("could not start a sandbox: {e}");
                end(s, Err(&why));
                return Ending::Failed(why);
            }
        };
        if let Ok(mut t) = shared.lock() {
            t.sandbox = Some(sandbox.clone());
        }
        let _ = self.save(shared).await;
        step("sandbox_ready", json!({"sandbox": sandbox}));

        // 2. Clone and branch.
        let git_log = {
            let tx = log_tx.clone();
            move |l: GitLog| {
                let _ = tx.send((
                    "log".into(),
                    json!({"stream": format!("git:{}", l.stream), "text": l.text}),
                ));
            }
        };
        step("clone", json!({"repo": task.spec.repo}));
        let s = span("clone");
        let checkout = match git::clone_and_branch(
            driver.as_ref(),
            &sandbox,
            &task.spec,
            &self.inner.cfg.git,
            &git_log,
        )
        .await
        {
            Ok(c) => {
                end(s, Ok(()));
                c
            }
            Err(e) => {
                let why = e.reason();
                end(s, Err(&why));
                return Ending::Failed(why);
            }
        };
        let checkout_path = match workspace_dir(driver.as_ref(), &sandbox).await {
            Ok(ws) => format!("{}/{}", ws.trim_end_matches('/'), checkout.dir),
            Err(e) => return Ending::Failed(e),
        };
        step(
            "branch",
            json!({"branch": task.spec.new_branch, "base": checkout.base_branch}),
        );
        if cancel.is_cancelled() {
            return Ending::Canceled;
        }

        // 3. The agent.
        step(
            "agent",
            json!({"agent": task.spec.agent.as_str(), "model": task.spec.model}),
        );
        let events = {
            let tx = log_tx.clone();
            let shared = shared.clone();
            let trace = trace.clone();
            Arc::new(move |e: AgentEvent| {
                if let Ok(mut t) = trace.lock()
                    && let Some(t) = t.as_mut()
                {
                    t.agent_event(&e);
                }
                match &e {
                    AgentEvent::ApprovalRequested { .. } => {
                        let _ = tx.send((
                            SET_STATUS.into(),
                            Value::from(TaskStatus::WaitingApproval.as_str()),
                        ));
                    }
                    AgentEvent::ApprovalAnswered { .. } => {
                        let _ =
                            tx.send((SET_STATUS.into(), Value::from(TaskStatus::Running.as_str())));
                    }
                    AgentEvent::Assistant { usage, .. } => {
                        if let Ok(mut t) = shared.lock() {
                            t.usage.input_tokens += usage.input_tokens;
                            t.usage.output_tokens += usage.output_tokens;
                        }
                    }
                    AgentEvent::TextDelta { .. } => return,
                    _ => {}
                }
                if let Ok(v) = serde_json::to_value(&e) {
                    let _ = tx.send(("agent".into(), v));
                }
            }) as Arc<dyn Fn(AgentEvent) + Send + Sync>
        };
        let outcome = self
            .inner
            .agent
            .run(AgentRun {
                task: snapshot(shared),
                driver: driver.clone(),
                sandbox: sandbox.clone(),
                checkout: checkout_path,
                run_dir: self.inner.cfg.agent_runs.join(&id),
                events,
                cancel: cancel.clone(),
                traceparent: trace
                    .lock()
                    .ok()
                    .and_then(|t| t.as_ref().and_then(|t| t.traceparent())),
            })
            .await;
        if let Ok(mut t) = shared.lock() {
            // The run's own totals win over the sum of its turns.
            if outcome.usage.input_tokens + outcome.usage.output_tokens > 0 {
                t.usage.input_tokens = outcome.usage.input_tokens;
                t.usage.output_tokens = outcome.usage.output_tokens;
            }
            t.cost_usd = outcome.cost_usd;
            if t.status == TaskStatus::WaitingApproval {
                t.status = TaskStatus::Running;
            }
        }
        match outcome.status {
            RunStatus::Succeeded => {}
            RunStatus::Canceled => return Ending::Canceled,
            other => {
                return Ending::Failed(format!(
                    "the agent stopped ({}): {}",
                    other.as_str(),
                    outcome
                        .error
                        .clone()
                        .unwrap_or_else(|| "no reason given".into())
                ));
            }
        }
        if cancel.is_cancelled() {
            return Ending::Canceled;
        }

        // 4. Commit and push.
        let summary = summary_of(&outcome, &task.spec.task);
        step("commit", json!({}));
        let message = commit_message(task, &summary);
        let s = span("push");
        let pushed = git::commit_and_push(
            driver.as_ref(),
            &sandbox,
            &task.spec,
            &self.inner.cfg.git,
            &message,
            &git_log,
        )
        .await;
        match &pushed {
            Ok(_) => end(s, Ok(())),
            Err(e) => end(s, Err(&e.reason())),
        }
        match pushed {
            Ok(PushResult::NoChanges) => {
                step("push", json!({"pushed": false, "reason": "no changes"}));
                Ending::Done {
                    summary: if summary.is_empty() {
                        "no changes".into()
                    } else {
                        format!("no changes: {summary}")
                    },
                }
            }
            Ok(PushResult::Pushed { commit }) => {
                step(
                    "push",
                    json!({"pushed": true, "branch": task.spec.new_branch, "commit": commit}),
                );
                if let Ok(mut t) = shared.lock() {
                    t.commit = Some(commit);
                }
                Ending::Done { summary }
            }
            Err(e) => Ending::Failed(e.reason()),
        }
    }
}

/// The writer's message that changes the task's status rather than logging.
const SET_STATUS: &str = "\0set_status";

/// A task's trace while it runs (taken out to finish it).
type Trace = Arc<Mutex<Option<super::telemetry::TaskTrace>>>;

/// A task's sandbox start: the spawned start and the sandbox it made.
type Creation = Arc<Mutex<CreationState>>;

#[derive(Default)]
struct CreationState {
    handle: Option<tokio::task::JoinHandle<()>>,
    id: Option<String>,
}

/// Aborts a task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How a task's work ended.
enum Ending {
    Done { summary: String },
    Failed(String),
    Canceled,
    TimedOut,
}

fn snapshot(shared: &Arc<Mutex<Task>>) -> Task {
    match shared.lock() {
        Ok(t) => t.clone(),
        Err(p) => p.into_inner().clone(),
    }
}

/// Whether a sandbox of `template` may reach `repo`: through a credential route of the
/// template that serves it, or through the egress proxy to an allowed domain and port (or
/// with network mode `host`). A clone the policy would refuse is refused at submission.
pub fn repo_reachable(template: &warden_sandbox::Template, repo: &str) -> Result<(), String> {
    use warden_policy::{NetworkMode, PolicyFile, Profile};
    if let Ok(routes) = git::git_routes(&template.policy)
        && git::matching_route(repo, &routes).is_some()
    {
        return Ok(());
    }
    let name = &template.name;
    let text = toml::to_string(&template.policy)
        .map_err(|e| format!("template `{name}`'s policy cannot be read: {e}"))?;
    let policy = PolicyFile::from_toml(&text)
        .and_then(|f| {
            f.apply(
                Profile::Default,
                std::path::Path::new("/"),
                std::path::Path::new("/"),
            )
        })
        .map_err(|e| format!("template `{name}`'s policy cannot be read: {e}"))?;
    let Some(authority) = super::model::repo_host(repo) else {
        return Err(format!("`{repo}` has no host"));
    };
    let (host, port) = split_authority(authority, repo.starts_with("https://"));
    match policy.network.mode {
        NetworkMode::Host => Ok(()),
        NetworkMode::None => Err(format!(
            "template `{name}` gives its sandboxes no network (network.mode \"none\"), so {host} cannot be cloned; use a template whose policy allows it"
        )),
        NetworkMode::Proxy => {
            // As the proxy decides: an address needs an allowed network, a name an allowed
            // domain, and deny wins.
            let allowed = match host.parse::<std::net::IpAddr>() {
                Ok(ip) => policy
                    .network
                    .allow_cidrs
                    .iter()
                    .any(|c| c.parse::<ipnet::IpNet>().is_ok_and(|net| net.contains(&ip))),
                Err(_) => {
                    policy.network.allow_domains.iter().any(|d| d.matches(host))
                        && !policy.network.deny_domains.iter().any(|d| d.matches(host))
                }
            };
            if !allowed {
                return Err(format!(
                    "{host} is not allowed by template `{name}`'s egress policy (network.allow_domains, or network.allow_cidrs for an address); add it there, or a credential route whose upstream serves the repository"
                ));
            }
            if port != 80 && port != 443 && !policy.network.allow_ports.contains(&port) {
                return Err(format!(
                    "port {port} of {host} is not allowed by template `{name}`'s egress policy (80, 443 and network.allow_ports)"
                ));
            }
            Ok(())
        }
    }
}

/// Host and port of a URL's authority (`[v6]:port` included).
fn split_authority(authority: &str, https: bool) -> (&str, u16) {
    let default = if https { 443 } else { 80 };
    if let Some(rest) = authority.strip_prefix('[') {
        let (h, tail) = rest.split_once(']').unwrap_or((rest, ""));
        let port = tail.strip_prefix(':').and_then(|p| p.parse().ok());
        return (h, port.unwrap_or(default));
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if p.chars().all(|c| c.is_ascii_digit()) && !p.is_empty() => {
            (h, p.parse().unwrap_or(default))
        }
        _ => (authority, default),
    }
}

/// The sandbox's workspace as its commands see it (sandboxd's root: where a command without
/// `cwd` starts).
async fn workspace_dir(driver: &dyn Driver, sandbox: &str) -> Result<String, String> {
    let r = driver
        .exec(sandbox, ExecRequest::new(Command::Argv(vec!["pwd".into()])))
        .await
        .map_err(|e| format!("could not read the sandbox's workspace path: {e}"))?;
    let pwd = r.stdout.trim();
    if r.exit_code != 0 || !pwd.starts_with('/') {
        return Err(format!(
            "could not read the sandbox's workspace path: pwd exited {} ({})",
            r.exit_code,
            r.stderr.trim()
        ));
    }
    Ok(pwd.to_string())
}

/// The agent's last answer, first 500 characters, or nothing.
fn summary_of(outcome: &RunOutcome, _task: &str) -> String {
    let s = outcome.result.trim();
    let mut out: String = s.chars().take(500).collect();
    if out.len() < s.len() {
        out.push('…');
    }
    out
}

/// The commit message: the task's first line, then the agent's summary and the task id.
pub fn commit_message(task: &Task, summary: &str) -> String {
    let first = task
        .spec
        .task
        .lines()
        .find(|l| !l.trim().is_empty())
        .unwrap_or("warden task")
        .trim();
    let mut subject: String = first.chars().take(72).collect();
    if subject.len() < first.len() {
        subject.push('…');
    }
    let mut msg = subject;
    msg.push_str("\n\n");
    if !summary.is_empty() {
        msg.push_str(summary);
        msg.push_str("\n\n");
    }
    msg.push_str(&format!("Warden-Task: {}\n", task.id));
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    fn template(policy: &str) -> warden_sandbox::Template {
        warden_sandbox::Template {
            name: "t".into(),
            policy: toml::from_str(policy).unwrap(),
            shutdown_after: None,
            idle_timeout: None,
            workspace_quota: None,
        }
    }

    #[test]
    fn a_repository_must_be_reachable_under_the_template_policy() {
        let none = template("profile = \"default\"\n[network]\nmode = \"none\"\n");
        let e = repo_reachable(&none, "https://github.com/o/r.git").unwrap_err();
        assert!(e.contains("no network"), "{e}");

        let proxy = template(
            "[network]\nmode = \"proxy\"\nallow_domains = [\"github.com\", \"*.example.com\"]\n\
             deny_domains = [\"bad.example.com\"]\nallow_ports = [8443]\n",
        );
        for ok in [
            "https://github.com/o/r.git",
            "http://git.example.com/r",
            "https://git.example.com:8443/r",
        ] {
            assert_eq!(repo_reachable(&proxy, ok), Ok(()), "{ok}");
        }
        for (bad, want) in [
            ("https://gitlab.com/o/r", "gitlab.com is not allowed"),
            (
                "https://bad.example.com/r",
                "bad.example.com is not allowed",
            ),
            ("https://github.com:9418/o/r", "port 9418 of github.com"),
            ("http://10.0.0.5/r", "10.0.0.5 is not allowed"),
        ] {
            let e = repo_reachable(&proxy, bad).unwrap_err();
            assert!(e.contains(want), "{bad}: {e}");
        }

        // A credential route serving the repository is enough.
        let routed = template(
            "[network]\nmode = \"proxy\"\n[routes.gh]\nkind = \"git\"\n\
             upstream = \"https://git.internal.example\"\ncredential = { env = \"GH_TOKEN\" }\n",
        );
        assert_eq!(
            repo_reachable(&routed, "https://git.internal.example/o/r.git"),
            Ok(())
        );
        let cidr = template(
            "[network]\nmode = \"proxy\"\nallow_cidrs = [\"10.0.0.0/8\"]\nallow_ports = [3000]\n",
        );
        assert_eq!(repo_reachable(&cidr, "http://10.0.0.5:3000/r"), Ok(()));
        assert!(repo_reachable(&cidr, "http://11.0.0.5:3000/r").is_err());
        let host = template("[network]\nmode = \"host\"\n");
        assert_eq!(repo_reachable(&host, "https://anywhere.dev/r"), Ok(()));
    }
}
