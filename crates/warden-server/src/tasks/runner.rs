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
        let spec = submission
            .validate(&id, &self.inner.cfg.defaults)
            .map_err(SubmitError::Invalid)?;
        let mut errors = Vec::new();
        let templates = self.inner.driver.templates().await;
        if !templates.iter().any(|t| t.name == spec.template) {
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
        let task = Task::new(id, spec, Timestamp::now());
        match self
            .inner
            .store
            .insert(&task)
            .await
            .map_err(SubmitError::Store)?
        {
            Inserted::Created(t) => {
                self.record(&t.id, "status", json!({"status": "QUEUED"}))
                    .await;
                self.inner.wake.notify_one();
                Ok((t, true))
            }
            Inserted::Existing(t) => Ok((t, false)),
        }
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
        let mut last_reap = tokio::time::Instant::now();
        loop {
            if last_reap.elapsed() >= self.inner.cfg.lease {
                self.reap(false).await;
                last_reap = tokio::time::Instant::now();
            }
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
        let work = self.work(shared.clone(), cancel.clone(), trace.clone());
        let ending = tokio::select! {
            r = work => r,
            _ = tokio::time::sleep(timeout) => Ending::TimedOut,
            _ = cancel.cancelled() => Ending::Canceled,
        };
        heartbeat.abort();

        // Whatever happened: the sandbox goes.
        let sandbox = snapshot(&shared).sandbox.clone();
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
        if let Err(e) = self.save(&shared).await {
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
        let mut data = json!({"status": status.as_str()});
        if let Some(r) = reason {
            data["reason"] = Value::String(r);
        }
        self.record(&id, "status", data).await;
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
        if let Ok(Some(_)) = self.save(shared).await {
            self.record(&id, "status", json!({"status": status.as_str()}))
                .await;
        }
    }

    /// Sandbox, clone and branch, agent, commit and push.
    async fn work(&self, shared: Arc<Mutex<Task>>, cancel: Cancel, trace: Trace) -> Ending {
        let task = snapshot(&shared);
        let id = task.id.clone();
        let driver = self.inner.driver.clone();

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
            .work_steps(&shared, &task, &driver, cancel, log_tx, &trace)
            .await;
        // Every log line is stored before the task's end is.
        let _ = writer.await;
        result
    }

    async fn work_steps(
        &self,
        shared: &Arc<Mutex<Task>>,
        task: &Task,
        driver: &Arc<dyn Driver>,
        cancel: Cancel,
        log_tx: mpsc::UnboundedSender<(String, Value)>,
        trace: &Trace,
    ) -> Ending {
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
        let sandbox = match driver.create(request).await {
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
