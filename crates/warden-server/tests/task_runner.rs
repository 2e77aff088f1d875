//! The task runner (`tasks::runner::Tasks`) at the library level, with everything real but the
//! agent: sandboxes from the local driver (a detached `warden run` holding sandboxd), a git
//! smart-HTTP server on the host (`testing_git`), the task store on SQLite or a throwaway
//! PostgreSQL cluster (`support/postgres.rs`), and a fake OTLP collector. The agent is a
//! script ([`ScriptedAgent`]): it writes a file in the checkout through the driver, reports a
//! model turn and a tool call, and can be told to sleep, hold until released, or fail; a
//! [`Ledger`] shared by every replica counts its runs and how many run at once per replica.
//!
//! Covered: two replicas sharing one Postgres (every task once, each replica within its
//! limit), the concurrency limit and queue order on SQLite, a lease that runs out (the task
//! fails with the lease's reason, explicitly), one task as one trace, cancellation through
//! another replica, and a runner that lost its task; also three faults the runner once had:
//! a busy replica that never reaped, a sandbox left by a cancel during its start, and RUNNING
//! logged before QUEUED. Each test leaves no sandbox, process or database behind.
//!
//! Needs what `task_git.rs` needs (root or user namespaces, Landlock, seccomp, `git`, the
//! `warden` binary) and PostgreSQL's server programs for the Postgres tests.

#[allow(dead_code)] // each test binary uses its own part of the helpers
#[path = "support/local_sandboxes.rs"]
mod local_sandboxes;
#[allow(dead_code)]
#[path = "support/postgres.rs"]
mod postgres_cluster;

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use axum::Router;
use axum::body::Bytes;
use axum::extract::State;
use axum::http::header::CONTENT_TYPE;
use axum::response::IntoResponse;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as AnyValue;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message;
use serde_json::json;
use tokio::sync::watch;
use warden_agent::model::Usage;
use warden_agent::run::{AgentEvent, RunOutcome, RunStatus};
use warden_sandbox::{Driver, LocalDriver};
use warden_sandboxd::proto::{Command, ExecRequest};
use warden_server::tasks::git::GitConfig;
use warden_server::tasks::model::TaskEvent;
use warden_server::tasks::model::{TaskSubmission, Timestamp};
use warden_server::tasks::runner::{AgentRun, RunnerConfig, TaskAgent, Tasks};
use warden_server::tasks::store::{CancelOutcome, Inserted, TaskPage, TaskQuery, TaskStoreError};
use warden_server::tasks::store_sql::SqlTaskStore;
use warden_server::tasks::telemetry::{Telemetry, TelemetryConfig};
use warden_server::tasks::{Task, TaskStatus, TaskStore};
use warden_server::testing_git::{
    GitServer, GitServerOptions, branch_commit, create_bare_repo, host_git,
};

use local_sandboxes::{DataDir, assert_no_sandboxes, local_driver, loopback_policy};

/// The template every task names (the runner's default).
const TEMPLATE: &str = "default";

/// The model tasks name: the trace's chat spans are called after it.
const MODEL: &str = "anthropic/claude-sonnet-4-5";

/// The usage of the agent's two turns, and its total.
const TURN_1: (u64, u64) = (100, 20);
const TURN_2: (u64, u64) = (150, 30);

/// How long a task may take from submission to its end here.
const TASK_TIMEOUT: Duration = Duration::from_secs(90);

// ---------------------------------------------------------------------------------------
// The scripted agent and its ledger.
// ---------------------------------------------------------------------------------------

/// What every replica's agent saw, shared by the replicas of a test.
#[derive(Debug)]
struct Ledger {
    state: Mutex<LedgerState>,
    /// Agents told to `hold` wait until this is true (or they are cancelled).
    release: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct LedgerState {
    /// Agent runs per task.
    runs: HashMap<String, u32>,
    /// The replica whose agent ran each task.
    ran_on: HashMap<String, String>,
    /// Agents running now, per replica.
    now: HashMap<String, usize>,
    /// The most agents that ran at once, per replica.
    peak: HashMap<String, usize>,
    /// Tasks in the order their agents started.
    started: Vec<String>,
    /// When each task's agent ended: returned, or was dropped by the runner.
    ended: HashMap<String, Instant>,
    /// The `traceparent` each task's agent was handed.
    traceparents: HashMap<String, Option<String>>,
    /// The sandbox each task's agent ran in.
    sandboxes: HashMap<String, String>,
    /// What went wrong inside an agent (the test asserts there is nothing).
    errors: Vec<String>,
}

impl Ledger {
    fn new() -> Arc<Ledger> {
        Arc::new(Ledger {
            state: Mutex::new(LedgerState::default()),
            release: watch::channel(false).0,
        })
    }

    fn lock(&self) -> MutexGuard<'_, LedgerState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Lets every holding agent finish.
    fn release_all(&self) {
        self.release.send_replace(true);
    }

    fn runs(&self, id: &str) -> u32 {
        self.lock().runs.get(id).copied().unwrap_or(0)
    }

    fn started(&self, id: &str) -> bool {
        self.lock().started.iter().any(|s| s == id)
    }

    fn ended(&self, id: &str) -> Option<Instant> {
        self.lock().ended.get(id).copied()
    }

    fn peak(&self, replica: &str) -> usize {
        self.lock().peak.get(replica).copied().unwrap_or(0)
    }
}

/// One agent run in progress; leaving (returning or being dropped) is recorded.
struct InRun {
    ledger: Arc<Ledger>,
    replica: String,
    task: String,
}

impl InRun {
    fn enter(ledger: &Arc<Ledger>, replica: &str, run: &AgentRun) -> InRun {
        let id = run.task.id.clone();
        let mut st = ledger.lock();
        *st.runs.entry(id.clone()).or_default() += 1;
        st.ran_on.insert(id.clone(), replica.to_string());
        let now = {
            let n = st.now.entry(replica.to_string()).or_default();
            *n += 1;
            *n
        };
        let peak = st.peak.entry(replica.to_string()).or_default();
        *peak = (*peak).max(now);
        st.started.push(id.clone());
        st.traceparents.insert(id.clone(), run.traceparent.clone());
        st.sandboxes.insert(id.clone(), run.sandbox.clone());
        if run.task.owner.as_deref() != Some(replica) {
            st.errors.push(format!(
                "{id} runs on {replica} but the store says its owner is {:?}",
                run.task.owner
            ));
        }
        if run.task.status != TaskStatus::Running {
            st.errors
                .push(format!("{id} reached its agent as {:?}", run.task.status));
        }
        drop(st);
        InRun {
            ledger: ledger.clone(),
            replica: replica.to_string(),
            task: id,
        }
    }

    fn error(&self, message: String) {
        self.ledger.lock().errors.push(message);
    }
}

impl Drop for InRun {
    fn drop(&mut self) {
        let mut st = self.ledger.lock();
        if let Some(n) = st.now.get_mut(&self.replica) {
            *n = n.saturating_sub(1);
        }
        st.ended.insert(self.task.clone(), Instant::now());
    }
}

/// What the task's text tells the agent to do after its tool call: words `sleep=<ms>`,
/// `hold` (until [`Ledger::release_all`] or cancelled), `fail`.
#[derive(Debug, Default)]
struct Script {
    sleep: Option<Duration>,
    hold: bool,
    fail: bool,
}

impl Script {
    fn parse(task: &str) -> Script {
        let mut s = Script::default();
        for word in task.split_whitespace() {
            if let Some(ms) = word.strip_prefix("sleep=") {
                s.sleep = ms.parse().ok().map(Duration::from_millis);
            }
            s.hold |= word == "hold";
            s.fail |= word == "fail";
        }
        s
    }
}

/// The agent of one replica: one model turn asking for a Bash call that writes `<task id>.txt`
/// in the checkout (run in the sandbox through the driver), then what the task's [`Script`]
/// says, then a final turn.
#[derive(Debug)]
struct ScriptedAgent {
    replica: String,
    ledger: Arc<Ledger>,
}

fn usage((input, output): (u64, u64)) -> Usage {
    Usage {
        input_tokens: input,
        output_tokens: output,
        cache_read_tokens: None,
        cache_write_tokens: None,
    }
}

fn outcome(status: RunStatus, result: &str, error: Option<&str>) -> RunOutcome {
    RunOutcome {
        status,
        result: result.into(),
        error: error.map(Into::into),
        turns: 2,
        usage: usage((TURN_1.0 + TURN_2.0, TURN_1.1 + TURN_2.1)),
        cost_usd: None,
    }
}

#[async_trait]
impl TaskAgent for ScriptedAgent {
    async fn run(&self, run: AgentRun) -> RunOutcome {
        let me = InRun::enter(&self.ledger, &self.replica, &run);
        let id = run.task.id.clone();
        let script = Script::parse(&run.task.spec.task);
        let emit = |e: AgentEvent| (run.events)(e);
        emit(AgentEvent::RunStarted {
            run_id: format!("run-{id}"),
            agent: "warden".into(),
            model: run.task.spec.model.clone().unwrap_or_default(),
            repo: run.checkout.clone(),
            prompt: run.task.spec.task.clone(),
        });
        emit(AgentEvent::Assistant {
            turn: 1,
            text: "I will write the file.".into(),
            tool_calls: 1,
            stop_reason: "tool_use".into(),
            usage: usage(TURN_1),
        });
        let command = format!("printf '%s\\n' {id} > {id}.txt && ls");
        emit(AgentEvent::ToolCall {
            call_id: "call-1".into(),
            tool: "Bash".into(),
            input: json!({"command": command}),
            subagent: None,
        });
        let mut req = ExecRequest::new(Command::Shell(command));
        req.cwd = Some(run.checkout.clone());
        req.timeout_ms = Some(60_000);
        let (is_error, output) = match run.driver.exec(&run.sandbox, req).await {
            Ok(r) => (
                r.exit_code != 0 || !r.stdout.contains(&format!("{id}.txt")),
                format!("{}{}", r.stdout, r.stderr),
            ),
            Err(e) => (true, e.to_string()),
        };
        emit(AgentEvent::ToolResult {
            call_id: "call-1".into(),
            tool: "Bash".into(),
            is_error,
            output: output.clone(),
            truncated_for_model: false,
        });
        if is_error {
            me.error(format!(
                "{id}: the Bash call in {} failed: {output}",
                run.checkout
            ));
            return outcome(RunStatus::Failed, "", Some("the Bash call failed"));
        }
        if let Some(d) = script.sleep {
            tokio::select! {
                _ = tokio::time::sleep(d) => {}
                _ = run.cancel.cancelled() => return outcome(RunStatus::Canceled, "", None),
            }
        }
        if script.hold {
            let mut release = self.ledger.release.subscribe();
            tokio::select! {
                _ = release.wait_for(|r| *r) => {}
                _ = run.cancel.cancelled() => return outcome(RunStatus::Canceled, "", None),
            }
        }
        emit(AgentEvent::Assistant {
            turn: 2,
            text: format!("Wrote {id}.txt."),
            tool_calls: 0,
            stop_reason: "end_turn".into(),
            usage: usage(TURN_2),
        });
        let out = if script.fail {
            outcome(RunStatus::Failed, "", Some("the script says fail"))
        } else {
            outcome(RunStatus::Succeeded, &format!("Wrote {id}.txt."), None)
        };
        emit(out.event());
        drop(me);
        out
    }
}

// ---------------------------------------------------------------------------------------
// The world: a git server with one repository, and replicas.
// ---------------------------------------------------------------------------------------

/// The data directory (every replica's driver under it), the git server and its repository.
struct World {
    data: DataDir,
    _git: GitServer,
    /// The bare repository tasks push to.
    bare: PathBuf,
    repo: String,
    policy: String,
}

impl World {
    async fn new(prefix: &str) -> World {
        let data = DataDir::new(prefix);
        let repos = data.sub("repos");
        let bare = create_bare_repo(&repos, "app.git", "main", &[("README.md", "hello\n")])
            .expect("a bare repository");
        let git = GitServer::start(&repos, GitServerOptions::default())
            .await
            .expect("the git server");
        let repo = format!("http://localhost:{}/app.git", git.addr().port());
        let policy = loopback_policy(git.addr().port());
        World {
            data,
            _git: git,
            bare,
            repo,
            policy,
        }
    }

    fn submission(&self, task: &str) -> TaskSubmission {
        TaskSubmission {
            repo: self.repo.clone(),
            task: task.into(),
            model: Some(MODEL.into()),
            ..TaskSubmission::default()
        }
    }

    /// A SQLite store in `<data>/<dir>/tasks.db`.
    async fn sqlite(&self, dir: &str) -> Arc<dyn TaskStore> {
        Arc::new(
            SqlTaskStore::open(None, &self.data.sub(dir))
                .await
                .expect("open the SQLite task store"),
        )
    }
}

/// A new handle (a pool of its own) on Postgres database `url`, as a replica opens it.
async fn postgres_store(url: &str, world: &World, dir: &str) -> Arc<dyn TaskStore> {
    Arc::new(
        SqlTaskStore::open(Some(url), &world.data.sub(dir))
            .await
            .expect("open the Postgres task store"),
    )
}

/// One `warden serve` replica: its task runner, with its own local driver and data.
struct Replica {
    tasks: Tasks,
    driver: Arc<LocalDriver>,
    data: PathBuf,
    dispatcher: Option<tokio::task::JoinHandle<()>>,
}

impl Drop for Replica {
    fn drop(&mut self) {
        if let Some(d) = self.dispatcher.take() {
            d.abort();
        }
    }
}

impl Replica {
    async fn new(
        world: &World,
        name: &str,
        store: Arc<dyn TaskStore>,
        ledger: &Arc<Ledger>,
        tune: impl FnOnce(&mut RunnerConfig),
    ) -> Replica {
        let data = world.data.sub(name);
        let driver = local_driver(&data, TEMPLATE, &world.policy).await;
        let mut cfg = RunnerConfig::new(name, data.join("agent-runs"));
        cfg.poll = Duration::from_millis(100);
        cfg.git = GitConfig {
            author_name: "Task Bot".into(),
            author_email: "task-bot@example.com".into(),
            ..GitConfig::default()
        };
        tune(&mut cfg);
        let agent = Arc::new(ScriptedAgent {
            replica: name.into(),
            ledger: ledger.clone(),
        });
        let tasks = Tasks::new(store, driver.clone(), agent, cfg);
        Replica {
            tasks,
            driver,
            data,
            dispatcher: None,
        }
    }

    fn start(&mut self) {
        self.dispatcher = Some(self.tasks.start());
    }

    async fn submit(&self, submission: TaskSubmission) -> String {
        let (task, created) = self
            .tasks
            .submit(submission, None)
            .await
            .expect("a valid submission");
        assert!(created);
        assert_eq!(task.status, TaskStatus::Queued);
        task.id
    }

    /// Stops the dispatcher and checks that no sandbox of this replica remains.
    async fn stop(mut self) {
        if let Some(d) = self.dispatcher.take() {
            d.abort();
        }
        assert_no_sandboxes(&self.driver, &self.data, Duration::from_secs(15)).await;
    }
}

/// Samples how many tasks each replica runs, every few milliseconds, keeping the most.
struct Sampler {
    peaks: Vec<Arc<AtomicUsize>>,
    stop: Arc<AtomicBool>,
    handle: tokio::task::JoinHandle<()>,
}

impl Sampler {
    fn start(replicas: &[&Replica]) -> Sampler {
        let tasks: Vec<Tasks> = replicas.iter().map(|r| r.tasks.clone()).collect();
        let peaks: Vec<Arc<AtomicUsize>> = tasks.iter().map(|_| Arc::default()).collect();
        let stop = Arc::new(AtomicBool::new(false));
        let handle = {
            let peaks = peaks.clone();
            let stop = stop.clone();
            tokio::spawn(async move {
                while !stop.load(Ordering::SeqCst) {
                    for (t, p) in tasks.iter().zip(&peaks) {
                        p.fetch_max(t.running_here(), Ordering::SeqCst);
                    }
                    tokio::time::sleep(Duration::from_millis(3)).await;
                }
            })
        };
        Sampler {
            peaks,
            stop,
            handle,
        }
    }

    async fn finish(self) -> Vec<usize> {
        self.stop.store(true, Ordering::SeqCst);
        let _ = self.handle.await;
        self.peaks
            .iter()
            .map(|p| p.load(Ordering::SeqCst))
            .collect()
    }
}

// ---------------------------------------------------------------------------------------
// Reading tasks.
// ---------------------------------------------------------------------------------------

/// A task's log, one line per event, for failure messages.
async fn log_text(tasks: &Tasks, id: &str) -> String {
    tasks
        .events(id, 0, 1000)
        .await
        .unwrap_or_default()
        .iter()
        .map(|e| format!("  {} {}", e.kind, e.data))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Waits until task `id` satisfies `done`; panics with its log after `timeout`.
async fn wait_task(
    tasks: &Tasks,
    id: &str,
    what: &str,
    timeout: Duration,
    done: impl Fn(&Task) -> bool,
) -> Task {
    let deadline = Instant::now() + timeout;
    loop {
        let t = tasks
            .get(id)
            .await
            .expect("read the task")
            .expect("the task exists");
        if done(&t) {
            return t;
        }
        if Instant::now() >= deadline {
            panic!(
                "task {id} did not {what} within {timeout:?}: {t:#?}\nits log:\n{}",
                log_text(tasks, id).await
            );
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn wait_finished(tasks: &Tasks, id: &str) -> Task {
    wait_task(tasks, id, "finish", TASK_TIMEOUT, |t| {
        t.status.is_terminal()
    })
    .await
}

/// Waits until `check` holds; panics naming `what` after `timeout`.
async fn wait_until(what: &str, timeout: Duration, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check() {
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The statuses a task's log went through, with their reasons.
async fn statuses(tasks: &Tasks, id: &str) -> Vec<(String, Option<String>)> {
    tasks
        .events(id, 0, 1000)
        .await
        .expect("read the task's events")
        .into_iter()
        .filter(|e| e.kind == "status")
        .map(|e| {
            (
                e.data["status"].as_str().unwrap_or_default().to_string(),
                e.data["reason"].as_str().map(String::from),
            )
        })
        .collect()
}

async fn status_names(tasks: &Tasks, id: &str) -> Vec<String> {
    statuses(tasks, id).await.into_iter().map(|s| s.0).collect()
}

/// Checks a task's status log: QUEUED exactly once, and the other statuses in order as
/// `after_queued`. Where QUEUED falls is left to
/// `a_tasks_log_says_queued_before_running` (a runner can log RUNNING first).
async fn assert_statuses(tasks: &Tasks, id: &str, after_queued: &[&str]) {
    let all = status_names(tasks, id).await;
    assert_eq!(
        all.iter().filter(|s| *s == "QUEUED").count(),
        1,
        "{id}: {all:?}"
    );
    let rest: Vec<&str> = all
        .iter()
        .map(String::as_str)
        .filter(|s| *s != "QUEUED")
        .collect();
    assert_eq!(rest, after_queued, "{id}: {all:?}");
}

/// The steps a task's log records, in order.
async fn steps(tasks: &Tasks, id: &str) -> Vec<String> {
    tasks
        .events(id, 0, 1000)
        .await
        .expect("read the task's events")
        .into_iter()
        .filter(|e| e.kind == "step")
        .map(|e| e.data["step"].as_str().unwrap_or_default().to_string())
        .collect()
}

/// Checks that a SUCCEEDED task's branch is in the bare repository, at the task's commit, with
/// the file the agent wrote.
fn assert_pushed(world: &World, task: &Task) {
    let commit = task
        .commit
        .as_deref()
        .unwrap_or_else(|| panic!("{} has no commit: {task:#?}", task.id));
    assert_eq!(
        branch_commit(&world.bare, &task.spec.new_branch).as_deref(),
        Some(commit),
        "branch {} of {}",
        task.spec.new_branch,
        task.id
    );
    let file = host_git(&world.bare, &["show", &format!("{commit}:{}.txt", task.id)])
        .unwrap_or_else(|e| panic!("{}: {e}", task.id));
    assert_eq!(file.trim(), task.id);
    let message = host_git(&world.bare, &["log", "-1", "--format=%B", commit]).unwrap();
    assert!(
        message.contains(&format!("Warden-Task: {}", task.id)),
        "{message}"
    );
}

fn assert_no_agent_errors(ledger: &Ledger) {
    let errors = ledger.lock().errors.clone();
    assert!(errors.is_empty(), "the agents saw: {errors:#?}");
}

// ---------------------------------------------------------------------------------------
// 1. Two replicas sharing one Postgres.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_on_one_postgres_run_every_task_once_within_their_limits() {
    let world = World::new("wd-run-two-").await;
    let cluster = postgres_cluster::cluster();
    let url = cluster.database("two_replicas").await;
    let ledger = Ledger::new();
    let limits = [("replica-a", 2), ("replica-b", 3)];
    let mut replicas = Vec::new();
    for (name, limit) in limits {
        let store = postgres_store(&url, &world, name).await;
        replicas.push(
            Replica::new(&world, name, store, &ledger, |c| {
                c.concurrency = limit;
                c.lease = Duration::from_secs(6);
            })
            .await,
        );
    }
    for r in &mut replicas {
        r.start();
    }
    let sampler = Sampler::start(&replicas.iter().collect::<Vec<_>>());

    // Twelve tasks, submitted through either replica in turn.
    let mut ids = Vec::new();
    for i in 0..12 {
        let via = &replicas[i % 2];
        ids.push(
            via.submit(world.submission(&format!("task {i}: write a file sleep=300")))
                .await,
        );
    }

    let mut per_replica: BTreeMap<String, usize> = BTreeMap::new();
    for (i, id) in ids.iter().enumerate() {
        // Read through the replica that did not take the submission.
        let reader = &replicas[(i + 1) % 2].tasks;
        let t = wait_finished(reader, id).await;
        assert_eq!(
            t.status,
            TaskStatus::Succeeded,
            "{t:#?}\n{}",
            log_text(reader, id).await
        );
        assert_eq!(t.attempts, 1, "{id} was claimed more than once");
        assert_eq!(ledger.runs(id), 1, "{id}'s agent ran more than once");
        let owner = t.owner.clone().expect("a finished task names its runner");
        assert_eq!(
            ledger.lock().ran_on.get(id),
            Some(&owner),
            "{id} is owned by {owner} but ran elsewhere"
        );
        *per_replica.entry(owner).or_default() += 1;
        // One claim, one end: the log holds each status once.
        assert_statuses(reader, id, &["RUNNING", "SUCCEEDED"]).await;
        assert_eq!(
            steps(reader, id).await,
            [
                "sandbox",
                "sandbox_ready",
                "clone",
                "branch",
                "agent",
                "commit",
                "push",
                "release"
            ],
            "{id}"
        );
        assert_eq!(t.usage.input_tokens, TURN_1.0 + TURN_2.0);
        assert_eq!(t.usage.output_tokens, TURN_1.1 + TURN_2.1);
        assert!(t.sandbox.is_none(), "{id} still names its sandbox");
        assert_pushed(&world, &t);
    }
    let sampled = sampler.finish().await;
    eprintln!(
        "tasks per replica: {per_replica:?}; most at once: agents {:?}, runner {:?}",
        limits.map(|(n, _)| ledger.peak(n)),
        sampled
    );
    assert_eq!(per_replica.values().sum::<usize>(), 12);
    for ((name, limit), sampled) in limits.iter().zip(&sampled) {
        assert!(
            per_replica.get(*name).copied().unwrap_or(0) > 0,
            "{name} ran nothing: {per_replica:?}"
        );
        assert!(
            ledger.peak(name) <= *limit,
            "{name} ran {} agents at once; its limit is {limit}",
            ledger.peak(name)
        );
        assert!(
            *sampled <= *limit,
            "{name} ran {sampled} tasks at once; its limit is {limit}"
        );
    }
    assert_no_agent_errors(&ledger);
    // Nothing is left in the queue.
    let counts = replicas[0].tasks.store().count_by_status().await.unwrap();
    assert!(
        counts
            .iter()
            .all(|(s, n)| *s == TaskStatus::Succeeded || *n == 0),
        "{counts:?}"
    );
    for r in replicas {
        r.stop().await;
    }
}

// ---------------------------------------------------------------------------------------
// 2. The concurrency limit and the queue's order, on SQLite.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn on_sqlite_at_most_the_limit_runs_and_the_oldest_task_starts_first() {
    let world = World::new("wd-run-limit-").await;
    let ledger = Ledger::new();
    let store = world.sqlite("db").await;
    let mut replica = Replica::new(&world, "replica-1", store, &ledger, |c| {
        c.concurrency = 2;
    })
    .await;

    // Six tasks queued before the runner starts, each a little older than the next.
    let mut ids = Vec::new();
    for i in 0..6 {
        ids.push(
            replica
                .submit(world.submission(&format!("task {i} sleep=400")))
                .await,
        );
        tokio::time::sleep(Duration::from_millis(3)).await;
    }
    replica.start();
    let sampler = Sampler::start(&[&replica]);

    let mut done = Vec::new();
    for id in &ids {
        let t = wait_finished(&replica.tasks, id).await;
        assert_eq!(
            t.status,
            TaskStatus::Succeeded,
            "{t:#?}\n{}",
            log_text(&replica.tasks, id).await
        );
        assert_eq!(t.attempts, 1);
        assert_pushed(&world, &t);
        done.push(t);
    }
    let sampled = sampler.finish().await[0];
    // Never more than two at once, and two did run together.
    assert_eq!(ledger.peak("replica-1"), 2);
    assert!(sampled <= 2, "{sampled} tasks ran at once");

    // Claimed oldest first: each task was claimed no earlier than the one submitted before
    // it, and a task only started once a slot was free (when it started, at most one other
    // task had started and not finished).
    for pair in done.windows(2) {
        assert!(
            pair[0].started_at <= pair[1].started_at,
            "{} (submitted first) started at {:?}, after {} at {:?}",
            pair[0].id,
            pair[0].started_at,
            pair[1].id,
            pair[1].started_at
        );
    }
    for t in &done[2..] {
        let started = t.started_at.unwrap();
        let busy = done
            .iter()
            .filter(|o| o.id != t.id)
            .filter(|o| o.started_at.unwrap() <= started && o.finished_at.unwrap() > started)
            .count();
        assert!(
            busy <= 1,
            "{} started while {busy} others ran: {done:#?}",
            t.id
        );
    }
    // The agents, too, met the tasks in that order but for neighbours running together.
    let started = ledger.lock().started.clone();
    for (k, id) in started.iter().enumerate() {
        let submitted = ids.iter().position(|i| i == id).unwrap();
        assert!(
            submitted.abs_diff(k) <= 1,
            "agent {k} ran {id}, submitted {submitted}th: {started:?} vs {ids:?}"
        );
    }
    assert_no_agent_errors(&ledger);
    replica.stop().await;
}

// ---------------------------------------------------------------------------------------
// 3. A lease that runs out.
// ---------------------------------------------------------------------------------------

/// A replica that stopped: claims the oldest queued task as `owner` with a lease of `lease`
/// and never renews it. Returns the claimed task.
async fn claim_as_a_gone_replica(store: &dyn TaskStore, owner: &str, lease: Duration) -> Task {
    let now = Timestamp::now();
    store
        .claim_next(
            owner,
            now,
            Timestamp(now.millis() + lease.as_millis() as i64),
        )
        .await
        .expect("claim")
        .expect("a queued task to claim")
}

const LEASE_REASON: &str = "its runner stopped renewing its lease";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_whose_lease_runs_out_fails_with_the_reason_and_the_queue_moves_on() {
    let world = World::new("wd-run-lease-").await;
    let cluster = postgres_cluster::cluster();
    let url = cluster.database("lease_expiry").await;
    let ledger = Ledger::new();
    let lease = Duration::from_secs(2);
    let store = postgres_store(&url, &world, "replica-b").await;
    let mut b = Replica::new(&world, "replica-b", store, &ledger, |c| {
        c.concurrency = 2;
        c.lease = lease;
    })
    .await;

    let abandoned = b.submit(world.submission("abandoned")).await;
    tokio::time::sleep(Duration::from_millis(3)).await;
    let behind = b.submit(world.submission("behind it sleep=100")).await;
    // Another replica claims the oldest task, then stops without a word.
    let gone_store = postgres_store(&url, &world, "replica-gone").await;
    let claimed = claim_as_a_gone_replica(
        gone_store.as_ref(),
        "replica-gone",
        Duration::from_millis(1500),
    )
    .await;
    assert_eq!(claimed.id, abandoned);
    assert_eq!(claimed.status, TaskStatus::Running);
    let claimed_at = Instant::now();

    b.start();
    let t = wait_finished(&b.tasks, &behind).await;
    assert_eq!(
        t.status,
        TaskStatus::Succeeded,
        "{t:#?}\n{}",
        log_text(&b.tasks, &behind).await
    );
    assert_pushed(&world, &t);

    let t = wait_finished(&b.tasks, &abandoned).await;
    let failed_after = claimed_at.elapsed();
    assert_eq!(t.status, TaskStatus::Failed, "{t:#?}");
    let reason = t.reason.clone().unwrap_or_default();
    assert!(reason.contains(LEASE_REASON), "{reason}");
    assert_eq!(t.owner.as_deref(), Some("replica-gone"));
    assert_eq!(t.attempts, 1, "never run a second time");
    assert!(t.finished_at.is_some());
    assert!(
        failed_after >= Duration::from_millis(1500),
        "failed before its lease ran out ({failed_after:?})"
    );
    assert!(
        failed_after <= Duration::from_millis(1500) + 2 * lease + Duration::from_secs(2),
        "failed {failed_after:?} after the claim; the lease was 1.5 s, the reaper's period {lease:?}"
    );
    // Explicitly: the log says so, with the reason.
    assert_eq!(
        statuses(&b.tasks, &abandoned).await,
        [
            ("QUEUED".to_string(), None),
            ("FAILED".to_string(), Some(reason.clone())),
        ]
    );
    // Nobody ran it, and the gone replica cannot take it back.
    assert_eq!(ledger.runs(&abandoned), 0);
    assert_eq!(
        gone_store
            .update_owned(&claimed, Timestamp(Timestamp::now().millis() + 60_000))
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        b.tasks.get(&abandoned).await.unwrap().unwrap().status,
        TaskStatus::Failed
    );
    assert_no_agent_errors(&ledger);
    b.stop().await;
}

/// A replica busy up to its limit still fails the tasks whose lease ran out, within about a
/// lease: a queue deeper than the replicas' capacity is the normal case, and there the
/// dispatcher waits for a free slot most of the time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_replica_still_fails_tasks_whose_lease_ran_out() {
    let world = World::new("wd-run-busy-").await;
    let ledger = Ledger::new();
    let lease = Duration::from_millis(1500);
    let store = world.sqlite("db").await;
    let mut b = Replica::new(&world, "replica-b", store.clone(), &ledger, |c| {
        c.concurrency = 1;
        c.lease = lease;
    })
    .await;
    let abandoned = b.submit(world.submission("abandoned")).await;
    tokio::time::sleep(Duration::from_millis(3)).await;
    let busy = b
        .submit(world.submission("keeps the replica busy hold"))
        .await;
    claim_as_a_gone_replica(store.as_ref(), "replica-gone", Duration::from_secs(1)).await;
    b.start();
    wait_until("the busy task's agent to start", TASK_TIMEOUT, || {
        ledger.started(&busy)
    })
    .await;

    // The lease ended a second after the claim; the reaper runs every lease.
    let t = wait_task(
        &b.tasks,
        &abandoned,
        "fail while the replica is busy",
        3 * lease,
        |t| t.status.is_terminal(),
    )
    .await;
    ledger.release_all();
    assert_eq!(t.status, TaskStatus::Failed);
    assert!(t.reason.unwrap_or_default().contains(LEASE_REASON));
    let t = wait_finished(&b.tasks, &busy).await;
    assert_eq!(t.status, TaskStatus::Succeeded);
    b.stop().await;
}

// ---------------------------------------------------------------------------------------
// 4. One task, one trace.
// ---------------------------------------------------------------------------------------

/// A fake OTLP/HTTP collector: every span it was sent.
#[derive(Clone, Default)]
struct Collected(Arc<Mutex<Vec<Span>>>);

impl Collected {
    fn spans(&self) -> Vec<Span> {
        self.0.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

async fn collector() -> (SocketAddr, Collected, tokio::task::JoinHandle<()>) {
    let seen = Collected::default();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/v1/traces", post(receive))
        .with_state(seen.clone());
    let server = tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    (addr, seen, server)
}

async fn receive(State(seen): State<Collected>, body: Bytes) -> impl IntoResponse {
    let request = ExportTraceServiceRequest::decode(body).expect("an OTLP protobuf body");
    let mut spans = seen.0.lock().unwrap_or_else(|e| e.into_inner());
    for rs in request.resource_spans {
        for ss in rs.scope_spans {
            spans.extend(ss.spans);
        }
    }
    (
        [(CONTENT_TYPE, "application/x-protobuf")],
        ExportTraceServiceResponse::default().encode_to_vec(),
    )
}

fn attr<'a>(span: &'a Span, key: &str) -> Option<&'a AnyValue> {
    span.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.as_ref())
        .and_then(|v| v.value.as_ref())
}

fn text<'a>(span: &'a Span, key: &str) -> &'a str {
    match attr(span, key) {
        Some(AnyValue::StringValue(s)) => s,
        other => panic!("{}: {key} is {other:?}, not a string", span.name),
    }
}

fn int(span: &Span, key: &str) -> i64 {
    match attr(span, key) {
        Some(AnyValue::IntValue(n)) => *n,
        other => panic!("{}: {key} is {other:?}, not an integer", span.name),
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

const ROOT: &str = "invoke_agent warden";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_is_one_trace_with_its_steps_and_the_agents_spans() {
    let (addr, collected, server) = collector().await;
    let telemetry = Telemetry::start(&TelemetryConfig::otlp_http(format!("http://{addr}")))
        .expect("start exporting");
    assert!(telemetry.is_enabled());
    let world = World::new("wd-run-trace-").await;
    let ledger = Ledger::new();
    let store = world.sqlite("db").await;
    let mut replica = Replica::new(&world, "replica-1", store, &ledger, |c| {
        c.telemetry = telemetry.clone();
    })
    .await;
    replica.start();
    let id = replica.submit(world.submission("trace me sleep=20")).await;
    let task = wait_finished(&replica.tasks, &id).await;
    assert_eq!(
        task.status,
        TaskStatus::Succeeded,
        "{}",
        log_text(&replica.tasks, &id).await
    );

    // The root ends just after the task's end is stored: flush until it has arrived.
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        telemetry.flush().await;
        if collected.spans().iter().any(|s| s.name == ROOT) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no root span arrived: {:?}",
            collected
                .spans()
                .iter()
                .map(|s| &s.name)
                .collect::<Vec<_>>()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    telemetry.shutdown().await;
    server.abort();

    let spans = collected.spans();
    let names: Vec<&str> = spans.iter().map(|s| s.name.as_str()).collect();
    let named = |name: &str| -> Vec<&Span> { spans.iter().filter(|s| s.name == name).collect() };
    let one = |name: &str| -> &Span {
        let found = named(name);
        assert_eq!(found.len(), 1, "{name} in {names:?}");
        found[0]
    };

    // One trace: the task's, whose root is the agent's invocation.
    let root = one(ROOT);
    assert!(root.parent_span_id.is_empty(), "the root has a parent");
    assert!(
        spans.iter().all(|s| s.trace_id == root.trace_id),
        "more than one trace: {names:?}"
    );
    assert_eq!(text(root, "warden.task.id"), id);
    assert_eq!(text(root, "warden.task.status"), "SUCCEEDED");
    assert_eq!(text(root, "warden.task.repo"), world.repo);
    assert_eq!(
        text(root, "warden.task.commit"),
        task.commit.as_deref().unwrap()
    );
    assert_eq!(text(root, "gen_ai.conversation.id"), format!("run-{id}"));
    assert_eq!(
        int(root, "gen_ai.usage.input_tokens"),
        (TURN_1.0 + TURN_2.0) as i64
    );
    assert_ne!(
        root.status.as_ref().map(|s| s.code()),
        Some(StatusCode::Error)
    );

    // The agent joined it: its traceparent names this trace and the root.
    let traceparent = ledger
        .lock()
        .traceparents
        .get(&id)
        .cloned()
        .expect("the agent ran")
        .expect("a traceparent while exporting");
    assert_eq!(
        traceparent,
        format!("00-{}-{}-01", hex(&root.trace_id), hex(&root.span_id))
    );

    // The runner's steps under the root, in order.
    let mut step_starts = Vec::new();
    for step in ["queue", "sandbox", "clone", "push"] {
        let s = one(step);
        assert_eq!(s.parent_span_id, root.span_id, "{step}");
        assert_eq!(text(s, "warden.step"), step);
        assert_ne!(
            s.status.as_ref().map(|s| s.code()),
            Some(StatusCode::Error),
            "{step}"
        );
        step_starts.push(s.start_time_unix_nano);
    }
    assert!(step_starts.is_sorted(), "{step_starts:?}");

    // The agent's turns and its tool call, children of the root, between clone and push.
    let clone_end = one("clone").end_time_unix_nano;
    let push_start = one("push").start_time_unix_nano;
    let mut chats = named("chat claude-sonnet-4-5");
    chats.sort_by_key(|s| int(s, "warden.agent.turn"));
    assert_eq!(chats.len(), 2, "{names:?}");
    for (chat, (input, output)) in chats.iter().zip([TURN_1, TURN_2]) {
        assert_eq!(chat.parent_span_id, root.span_id);
        assert_eq!(text(chat, "gen_ai.operation.name"), "chat");
        assert_eq!(int(chat, "gen_ai.usage.input_tokens"), input as i64);
        assert_eq!(int(chat, "gen_ai.usage.output_tokens"), output as i64);
    }
    let bash = one("execute_tool Bash");
    assert_eq!(bash.parent_span_id, root.span_id);
    assert_eq!(text(bash, "gen_ai.tool.call.id"), "call-1");
    assert_ne!(
        bash.status.as_ref().map(|s| s.code()),
        Some(StatusCode::Error)
    );
    for s in chats.iter().copied().chain([bash]) {
        assert!(
            s.start_time_unix_nano >= clone_end && s.end_time_unix_nano <= push_start,
            "{} lies outside the agent's part of the task",
            s.name
        );
    }
    for s in &spans {
        assert!(
            s.start_time_unix_nano >= root.start_time_unix_nano
                && s.end_time_unix_nano <= root.end_time_unix_nano,
            "{} lies outside the root",
            s.name
        );
    }
    assert_no_agent_errors(&ledger);
    replica.stop().await;
}

// ---------------------------------------------------------------------------------------
// 5. Cancellation through another replica.
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_canceled_through_another_replica_stops_within_a_third_of_its_lease() {
    let world = World::new("wd-run-cancel-").await;
    let cluster = postgres_cluster::cluster();
    let url = cluster.database("cancel_across").await;
    let ledger = Ledger::new();
    let lease = Duration::from_secs(3);
    let tune = |c: &mut RunnerConfig| {
        c.concurrency = 1;
        c.lease = lease;
    };
    let store_a = postgres_store(&url, &world, "replica-a").await;
    let store_b = postgres_store(&url, &world, "replica-b").await;
    let mut a = Replica::new(&world, "replica-a", store_a, &ledger, tune).await;
    let mut b = Replica::new(&world, "replica-b", store_b, &ledger, tune).await;

    // The task runs on A (B starts once A holds it) and its agent holds.
    a.start();
    let id = a.submit(world.submission("wait for a person hold")).await;
    wait_until("the agent to start on A", TASK_TIMEOUT, || {
        ledger.started(&id)
    })
    .await;
    b.start();
    let sandbox = ledger.lock().sandboxes.get(&id).cloned().unwrap();
    assert!(a.driver.get(&sandbox).await.is_ok());

    let asked = Instant::now();
    match b.tasks.cancel(&id).await.unwrap() {
        Some(CancelOutcome::Requested(t)) => {
            assert!(t.cancel_requested);
            assert_eq!(t.owner.as_deref(), Some("replica-a"));
        }
        other => panic!("expected the cancel to be requested, got {other:?}"),
    }
    // Only the store carries it to A, at its next renewal.
    wait_until("A to stop the agent", lease, || ledger.ended(&id).is_some()).await;
    let stopped = ledger.ended(&id).unwrap() - asked;
    eprintln!("the agent stopped {stopped:?} after the cancel");
    assert!(
        stopped <= lease / 3 + Duration::from_millis(750),
        "A stopped the agent {stopped:?} after the cancel; it renews every {:?}",
        lease / 3
    );
    let t = wait_finished(&b.tasks, &id).await;
    assert_eq!(t.status, TaskStatus::Canceled, "{t:#?}");
    assert_eq!(t.reason.as_deref(), Some("canceled by a client"));
    assert_eq!(t.attempts, 1);
    assert!(t.finished_at.is_some());
    assert_eq!(t.commit, None);
    assert_statuses(&b.tasks, &id, &["RUNNING", "CANCELED"]).await;
    assert_eq!(
        steps(&a.tasks, &id).await.last().map(String::as_str),
        Some("release")
    );
    // Its sandbox is gone, and nothing was pushed.
    assert!(a.driver.get(&sandbox).await.is_err());
    assert_eq!(branch_commit(&world.bare, &t.spec.new_branch), None);
    assert_eq!(ledger.runs(&id), 1);
    assert_eq!(
        ledger.lock().ran_on.get(&id).map(String::as_str),
        Some("replica-a")
    );
    // B never ran it, and stays idle.
    assert_eq!(b.tasks.running_here(), 0);
    assert_no_agent_errors(&ledger);
    a.stop().await;
    b.stop().await;
}

/// A runner whose task was failed by someone else (its lease was taken as lapsed, or a
/// restart of its replica id reaped it) learns so at its next renewal: it stops the agent,
/// deletes the sandbox, pushes nothing, and leaves the other verdict standing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_runner_that_lost_its_task_stops_it_and_keeps_the_other_verdict() {
    let world = World::new("wd-run-lost-").await;
    let ledger = Ledger::new();
    let lease = Duration::from_secs(3);
    let store = world.sqlite("db").await;
    let mut a = Replica::new(&world, "replica-a", store.clone(), &ledger, |c| {
        c.lease = lease;
    })
    .await;
    a.start();
    let id = a.submit(world.submission("long work hold")).await;
    wait_until("the agent to start", TASK_TIMEOUT, || ledger.started(&id)).await;
    let sandbox = ledger.lock().sandboxes.get(&id).cloned().unwrap();

    let reason = "taken away by the test";
    let failed = store
        .fail_abandoned(Timestamp::now(), Some("replica-a"), reason)
        .await
        .unwrap();
    assert_eq!(
        failed.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        [id.as_str()]
    );
    let taken = Instant::now();
    wait_until("A to stop the agent", lease, || ledger.ended(&id).is_some()).await;
    let stopped = ledger.ended(&id).unwrap() - taken;
    assert!(
        stopped <= lease / 3 + Duration::from_millis(750),
        "A stopped the agent {stopped:?} after losing the task"
    );
    wait_until("A to let the task go", Duration::from_secs(15), || {
        a.tasks.running_here() == 0
    })
    .await;
    assert!(a.driver.get(&sandbox).await.is_err(), "the sandbox remains");
    let t = a.tasks.get(&id).await.unwrap().unwrap();
    assert_eq!(t.status, TaskStatus::Failed);
    assert_eq!(t.reason.as_deref(), Some(reason));
    assert_eq!(t.commit, None);
    assert_eq!(branch_commit(&world.bare, &t.spec.new_branch), None);
    // The runner wrote no end of its own over the verdict.
    assert_statuses(&a.tasks, &id, &["RUNNING"]).await;
    assert_no_agent_errors(&ledger);
    a.stop().await;
}

/// A cancel (or a timeout, or a lost lease) that arrives while the task's sandbox is starting
/// must not leave the sandbox behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_canceled_while_its_sandbox_starts_leaves_no_sandbox() {
    let world = World::new("wd-run-early-").await;
    let ledger = Ledger::new();
    let store = world.sqlite("db").await;
    let mut replica = Replica::new(&world, "replica-1", store, &ledger, |_| {}).await;
    let mut live = replica.tasks.subscribe();
    replica.start();
    let id = replica.submit(world.submission("never reached")).await;
    // The runner announces the sandbox step, then asks the driver; cancel once the
    // sandbox's directory exists (its supervisor is starting).
    loop {
        let e = tokio::time::timeout(TASK_TIMEOUT, live.recv())
            .await
            .expect("the sandbox step")
            .expect("live events");
        if e.task_id == id && e.event.kind == "step" && e.event.data["step"] == "sandbox" {
            break;
        }
    }
    wait_until("the sandbox to be created", Duration::from_secs(10), || {
        !local_sandboxes::sandbox_dirs(&replica.data).is_empty()
    })
    .await;
    replica.tasks.cancel(&id).await.unwrap();
    let t = wait_finished(&replica.tasks, &id).await;
    assert_eq!(t.status, TaskStatus::Canceled);
    let reached_ready = steps(&replica.tasks, &id)
        .await
        .contains(&"sandbox_ready".to_string());
    eprintln!("canceled; the sandbox became ready before the cancel: {reached_ready}");
    assert_eq!(ledger.runs(&id), 0);
    replica.stop().await;
}

// ---------------------------------------------------------------------------------------
// The order of a task's log.
// ---------------------------------------------------------------------------------------

/// A task store on a busy database: appending a task's QUEUED event takes a while, as any
/// write may. Everything else passes through.
#[derive(Debug)]
struct SlowQueuedEvent {
    inner: Arc<dyn TaskStore>,
    delay: Duration,
}

#[async_trait]
impl TaskStore for SlowQueuedEvent {
    async fn insert(&self, task: &Task) -> Result<Inserted, TaskStoreError> {
        self.inner.insert(task).await
    }
    async fn get(&self, id: &str) -> Result<Option<Task>, TaskStoreError> {
        self.inner.get(id).await
    }
    async fn list(&self, query: &TaskQuery) -> Result<TaskPage, TaskStoreError> {
        self.inner.list(query).await
    }
    async fn claim_next(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Task>, TaskStoreError> {
        self.inner.claim_next(owner, now, lease_until).await
    }
    async fn update_owned(
        &self,
        task: &Task,
        lease_until: Timestamp,
    ) -> Result<Option<bool>, TaskStoreError> {
        self.inner.update_owned(task, lease_until).await
    }
    async fn cancel(
        &self,
        id: &str,
        now: Timestamp,
        reason: &str,
    ) -> Result<Option<CancelOutcome>, TaskStoreError> {
        self.inner.cancel(id, now, reason).await
    }
    async fn fail_abandoned(
        &self,
        now: Timestamp,
        owner: Option<&str>,
        reason: &str,
    ) -> Result<Vec<Task>, TaskStoreError> {
        self.inner.fail_abandoned(now, owner, reason).await
    }
    async fn append_event(
        &self,
        task_id: &str,
        time: Timestamp,
        kind: &str,
        data: &serde_json::Value,
    ) -> Result<TaskEvent, TaskStoreError> {
        if kind == "status" && data["status"] == "QUEUED" {
            tokio::time::sleep(self.delay).await;
        }
        self.inner.append_event(task_id, time, kind, data).await
    }
    async fn events(
        &self,
        task_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<TaskEvent>, TaskStoreError> {
        self.inner.events(task_id, after_seq, limit).await
    }
    async fn count_by_status(&self) -> Result<Vec<(TaskStatus, u64)>, TaskStoreError> {
        self.inner.count_by_status().await
    }
}

/// A task's log is what `warden task logs` shows and SSE followers replay: it must not say
/// RUNNING before QUEUED. It did in `a_task_canceled_through_another_replica_...` without
/// any help; a slow append of the QUEUED event makes it happen every time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tasks_log_says_queued_before_running() {
    let world = World::new("wd-run-order-").await;
    let ledger = Ledger::new();
    let store = Arc::new(SlowQueuedEvent {
        inner: world.sqlite("db").await,
        delay: Duration::from_millis(500),
    });
    let mut replica = Replica::new(&world, "replica-1", store, &ledger, |_| {}).await;
    replica.start();
    let id = replica.submit(world.submission("in order")).await;
    let t = wait_finished(&replica.tasks, &id).await;
    assert_eq!(t.status, TaskStatus::Succeeded);
    assert_eq!(
        status_names(&replica.tasks, &id).await,
        ["QUEUED", "RUNNING", "SUCCEEDED"]
    );
    replica.stop().await;
}
