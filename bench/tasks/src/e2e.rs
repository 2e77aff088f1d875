//! Tasks end to end: the real server in this process (`warden_server::app` over
//! `AppState::with_tasks`, served by `warden_server::serve` on a real listener of 127.0.0.1,
//! the real runner, a real `LocalDriver` starting `warden run` sandboxes), a git server of
//! git's own `http-backend` on the host, and a scripted agent that writes one file. Client
//! threads submit and poll over HTTP.
//!
//! A task's path: `POST /v1/tasks` → the task store → the dispatcher's claim → a new sandbox
//! → a shallow clone through the sandbox's egress proxy and a new branch → the agent writes
//! `BENCH.md` through the driver → commit and push through the proxy → the sandbox is
//! deleted → the task is SUCCEEDED.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{Value, json};
use warden_agent::model::Usage;
use warden_agent::run::{RunOutcome, RunStatus};
use warden_sandbox::{ByteStream, Driver, LocalConfig, LocalDriver, Phase, Template};
use warden_server::tasks::TaskStore;
use warden_server::tasks::model::Timestamp;
use warden_server::tasks::runner::{AgentRun, RunnerConfig, TaskAgent, Tasks};
use warden_server::tasks::store_sql::SqlTaskStore;
use warden_server::testing_git::{GitServer, GitServerOptions, branch_commit, create_bare_repo};
use warden_server::{AppState, Auth, Store};

use crate::http::Conn;

/// How the end-to-end run is loaded.
#[derive(Debug, Clone)]
pub struct E2eConfig {
    pub tasks: usize,
    pub clients: usize,
    pub runner: usize,
    /// Tasks each client keeps queued or running at once.
    pub window: usize,
    pub poll: Duration,
    pub warmup: usize,
    pub warden: PathBuf,
    /// Print the first measured task's log, with times from its creation, on stderr.
    pub show_log: bool,
}

/// One timed request, and whether the queue was busy when it was sent (at least as many
/// tasks queued or running as the runner has slots).
#[derive(Debug, Clone, Copy)]
pub struct Sample {
    pub took: Duration,
    pub busy: bool,
}

#[derive(Debug)]
pub struct E2eResult {
    pub tasks: usize,
    pub succeeded: usize,
    /// The first few reasons of tasks that did not succeed.
    pub failures: Vec<String>,
    /// From the first task's `created_at` to the last one's `finished_at` (the server's
    /// clock, milliseconds).
    pub wall: Duration,
    /// From the first submission to the last finished task a client saw.
    pub wall_client: Duration,
    pub posts: Vec<Sample>,
    pub gets: Vec<Sample>,
    /// Submission to `finished_at`, per task.
    pub latency: Vec<Duration>,
    /// Per phase (in order), milliseconds of each task.
    pub phases: Vec<(&'static str, Vec<f64>)>,
    /// Events in a task's log (every kind), on average.
    pub events_per_task: f64,
    /// Branches the git server holds for the measured tasks.
    pub pushed: usize,
    /// Sandboxes still there after the run (deleted then).
    pub sandboxes_left: usize,
    /// The same clone, and commit and push, run by the host's git straight against the git
    /// server (no sandbox, no proxy, no runner): milliseconds of each.
    pub host_clone: Vec<f64>,
    pub host_push: Vec<f64>,
    /// CPU time of one host clone, commit and push, git's client and server processes
    /// together (they are this process's children).
    pub host_git_cpu: Duration,
    /// CPU time of this process and the children it reaped (the server, the clients, the git
    /// server's http-backends, the sandboxes' supervisors and everything they reaped), per
    /// task of the measured run.
    pub cpu_per_task: Duration,
    /// How busy the machine's CPUs were during the measured run (every process on it:
    /// PostgreSQL's too, and anything else running), 0 to 1.
    pub machine_busy: f64,
    /// Busy CPU time of the whole machine during the measured run, per task: unlike
    /// `cpu_per_task` it counts the sandboxes' processes that are killed rather than reaped
    /// (sandboxd, git inside), and PostgreSQL's.
    pub machine_cpu_per_task: Duration,
    /// Tasks per second of each round (one for a single run).
    pub round_rates: Vec<f64>,
}

impl E2eResult {
    /// Tasks per second over every round pooled.
    pub fn rate(&self) -> f64 {
        self.tasks as f64 / self.wall.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// The rounds of one store as one result: samples pooled, times and counts summed,
    /// averages weighted by tasks (CPU) or time (busy share).
    pub fn pool(rounds: Vec<E2eResult>) -> Option<E2eResult> {
        let mut it = rounds.into_iter();
        let mut all = it.next()?;
        for r in it {
            let tasks_before = all.tasks as f64;
            let wall_before = all.wall.as_secs_f64();
            all.events_per_task = (all.events_per_task * tasks_before
                + r.events_per_task * r.tasks as f64)
                / (tasks_before + r.tasks as f64);
            all.machine_busy = (all.machine_busy * wall_before
                + r.machine_busy * r.wall.as_secs_f64())
                / (wall_before + r.wall.as_secs_f64());
            let total = (all.tasks + r.tasks).max(1) as u32;
            all.cpu_per_task =
                (all.cpu_per_task * all.tasks as u32 + r.cpu_per_task * r.tasks as u32) / total;
            all.machine_cpu_per_task = (all.machine_cpu_per_task * all.tasks as u32
                + r.machine_cpu_per_task * r.tasks as u32)
                / total;
            all.tasks += r.tasks;
            all.succeeded += r.succeeded;
            all.failures.extend(r.failures);
            all.failures.truncate(5);
            all.wall += r.wall;
            all.wall_client += r.wall_client;
            all.posts.extend(r.posts);
            all.gets.extend(r.gets);
            all.latency.extend(r.latency);
            for (mine, theirs) in all.phases.iter_mut().zip(r.phases) {
                mine.1.extend(theirs.1);
            }
            all.pushed += r.pushed;
            all.sandboxes_left += r.sandboxes_left;
            all.host_clone.extend(r.host_clone);
            all.host_push.extend(r.host_push);
            // The mean over the rounds so far (each round one figure).
            let k = all.round_rates.len() as u32;
            all.host_git_cpu = (all.host_git_cpu * k + r.host_git_cpu) / (k + 1);
            all.round_rates.extend(r.round_rates);
        }
        Some(all)
    }
}

/// User and system time of this process and its reaped children, from `/proc/self/stat`.
fn tree_cpu() -> Duration {
    let Ok(stat) = std::fs::read_to_string("/proc/self/stat") else {
        return Duration::ZERO;
    };
    let Some(close) = stat.rfind(')') else {
        return Duration::ZERO;
    };
    // After `pid (comm)`: state is field 3, utime 14, stime 15, cutime 16, cstime 17.
    let fields: Vec<&str> = stat[close + 1..].split_whitespace().collect();
    let ticks: u64 = fields
        .get(11..15)
        .map(|f| f.iter().filter_map(|v| v.parse::<u64>().ok()).sum())
        .unwrap_or(0);
    Duration::from_millis(ticks * 1000 / clock_ticks())
}

/// `sysconf(_SC_CLK_TCK)`, which is 100 on Linux for every architecture we build for.
fn clock_ticks() -> u64 {
    100
}

/// Busy and total time of every CPU, in clock ticks, from `/proc/stat`.
pub fn machine_cpu() -> (u64, u64) {
    let Ok(stat) = std::fs::read_to_string("/proc/stat") else {
        return (0, 0);
    };
    let Some(line) = stat.lines().next() else {
        return (0, 0);
    };
    // cpu user nice system idle iowait irq softirq steal guest guest_nice
    let v: Vec<u64> = line
        .split_whitespace()
        .skip(1)
        .filter_map(|x| x.parse().ok())
        .collect();
    if v.len() < 8 {
        return (0, 0);
    }
    let total: u64 = v[..8].iter().sum();
    let idle = v[3] + v[4];
    (total - idle, total)
}

/// The agent: writes `BENCH.md` in the checkout through the driver, and reports a small
/// usage, as a model's one turn would.
#[derive(Debug)]
struct ScriptedAgent;

#[async_trait]
impl TaskAgent for ScriptedAgent {
    async fn run(&self, run: AgentRun) -> RunOutcome {
        let path = format!("{}/BENCH.md", run.checkout.trim_end_matches('/'));
        let text = format!(
            "# {}\n\nWritten by warden-bench-tasks' scripted agent.\n",
            run.task.id
        );
        let body: ByteStream = Box::pin(futures_util::stream::once(async move {
            Ok::<_, std::io::Error>(Bytes::from(text))
        }));
        match run.driver.write_file(&run.sandbox, &path, None, body).await {
            Ok(()) => RunOutcome {
                status: RunStatus::Succeeded,
                result: "Wrote BENCH.md.".into(),
                error: None,
                turns: 1,
                usage: Usage {
                    input_tokens: 120,
                    output_tokens: 15,
                    ..Usage::default()
                },
                cost_usd: None,
            },
            Err(e) => RunOutcome {
                status: RunStatus::Failed,
                result: String::new(),
                error: Some(format!("could not write BENCH.md: {e}")),
                turns: 0,
                usage: Usage::default(),
                cost_usd: None,
            },
        }
    }
}

/// A data directory under /tmp (never under /root, which is on the sensitive-path
/// blocklist). Sandboxes outlive their driver on purpose, so dropping this kills whatever
/// sandbox is left under it (cgroups and processes) before the directory goes; so does an
/// interrupted or panicking run ([`crate::cleanup`]).
#[derive(Debug)]
pub struct DataDir {
    dir: tempfile::TempDir,
    _abort: crate::cleanup::Registered,
}

impl DataDir {
    pub fn new(prefix: &str) -> anyhow::Result<DataDir> {
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in("/tmp")
            .context("a data directory in /tmp")?;
        let path = dir.path().to_path_buf();
        let abort = crate::cleanup::on_abort(move || {
            kill_sandboxes(&path);
            let _ = std::fs::remove_dir_all(&path);
        });
        Ok(DataDir { dir, _abort: abort })
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        kill_sandboxes(self.path());
    }
}

/// Kills the processes and removes the cgroups of every sandbox left under `data`.
fn kill_sandboxes(data: &Path) {
    let Ok(dirs) = std::fs::read_dir(data.join("sandboxes")) else {
        return;
    };
    for d in dirs.flatten() {
        let Ok(text) = std::fs::read_to_string(d.path().join("state.json")) else {
            continue;
        };
        let Ok(state) = serde_json::from_str::<Value>(&text) else {
            continue;
        };
        for cg in state["cgroups"].as_array().into_iter().flatten() {
            if let Some(cg) = cg.as_str() {
                let _ = std::fs::write(Path::new(cg).join("cgroup.kill"), "1");
                if let Ok(procs) = std::fs::read_to_string(Path::new(cg).join("cgroup.procs")) {
                    for pid in procs.split_whitespace() {
                        kill9(pid);
                    }
                }
            }
        }
        if let Some(pid) = state["pid"].as_u64() {
            kill9(&pid.to_string());
        }
        // Empty now: the cgroups can go (a few tries while the kernel reaps the processes).
        for cg in state["cgroups"].as_array().into_iter().flatten() {
            if let Some(cg) = cg.as_str() {
                for _ in 0..50 {
                    if std::fs::remove_dir(cg).is_ok() || !Path::new(cg).exists() {
                        break;
                    }
                    std::thread::sleep(Duration::from_millis(10));
                }
            }
        }
    }
}

fn kill9(pid: &str) {
    let _ = std::process::Command::new("kill")
        .args(["-9", pid])
        .stderr(std::process::Stdio::null())
        .status();
}

/// Kills this process's children named `comm` (sandbox supervisors being started, which
/// have no state file yet).
fn kill_children(comm: &str) {
    let me = std::process::id().to_string();
    let Ok(procs) = std::fs::read_dir("/proc") else {
        return;
    };
    for p in procs.flatten() {
        let Ok(stat) = std::fs::read_to_string(p.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ppid ...
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let name = &stat[open + 1..close];
        let ppid = stat[close + 1..].split_whitespace().nth(1);
        if name == comm && ppid == Some(me.as_str()) {
            kill9(stat[..open].trim());
        }
    }
}

/// The server under test.
struct Server {
    addr: SocketAddr,
    token: String,
    repo_url: String,
    bare: PathBuf,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    serve: tokio::task::JoinHandle<std::io::Result<()>>,
    runner: tokio::task::JoinHandle<()>,
    driver: Arc<LocalDriver>,
    _git: GitServer,
    /// Stops new sandboxes if the run is cut short (see [`Server::start`]).
    _gate: crate::cleanup::Registered,
}

impl Server {
    async fn start(
        data: &Path,
        repos: &Path,
        database: Option<&str>,
        cfg: &E2eConfig,
    ) -> anyhow::Result<Server> {
        let bare = create_bare_repo(
            repos,
            "app.git",
            "main",
            &[
                ("README.md", "An application.\n"),
                ("src/main.rs", "fn main() {}\n"),
            ],
        )
        .context("create the bare repository (needs git)")?;
        let git = GitServer::start(repos, GitServerOptions::default())
            .await
            .context("start the git server")?;
        let port = git.addr().port();

        let store = Store::open(data).await.context("open the server's store")?;
        let driver = Arc::new(
            LocalDriver::new(
                LocalConfig::with_exe(data, &cfg.warden),
                Arc::new(store.clone()),
            )
            .context("the local driver")?,
        );
        // As tests/tasks.rs configures `warden serve`: the default profile, egress through
        // the sandbox's proxy to localhost on the git server's port only.
        let policy: toml::Table = toml::from_str(&format!(
            "profile = \"default\"\n[network]\nmode = \"proxy\"\n\
             allow_domains = [\"localhost\"]\nallow_cidrs = [\"127.0.0.0/8\"]\n\
             allow_ports = [{port}]\n"
        ))?;
        let template = Template {
            name: "bench".into(),
            policy,
            shutdown_after: Some(Duration::from_secs(3600)),
            idle_timeout: None,
            workspace_quota: None,
        };
        driver
            .put_template(template.clone())
            .await
            .context("the template")?;
        // If the run is cut short, the template goes first, so the runner starts no more
        // sandboxes; those it is starting get a moment to write their state, then the data
        // directory's own action kills every sandbox it finds, and this process's
        // supervisors that have none yet.
        let gate = {
            let driver = driver.clone();
            crate::cleanup::on_abort(move || {
                use futures_util::FutureExt;
                // Synchronous inside (a lock and a map): done in one poll.
                let _ = driver.delete_template("bench").now_or_never();
                std::thread::sleep(Duration::from_millis(500));
                kill_children("warden");
            })
        };
        store.put_template(&template).await?;

        // Sized as `warden serve --task-concurrency` sizes it.
        let task_store: Arc<dyn TaskStore> = Arc::new(
            SqlTaskStore::open_for(database, data, cfg.runner)
                .await
                .context("open the task store")?,
        );
        let mut rc = RunnerConfig::new("bench-replica", data.join("agent-runs"));
        rc.concurrency = cfg.runner;
        rc.defaults.template = "bench".into();
        rc.git.author_name = "Bench Bot".into();
        rc.git.author_email = "bench@example.com".into();
        let tasks = Tasks::new(
            task_store,
            driver.clone() as Arc<dyn Driver>,
            Arc::new(ScriptedAgent),
            rc,
        );
        let token = warden_server::auth::new_token().map_err(|e| anyhow::anyhow!("{e}"))?;
        let state = AppState::new(
            driver.clone() as Arc<dyn Driver>,
            store,
            Auth::Token(token.clone()),
        )
        .with_agent_runs(data.join("agent-runs"))
        .with_tasks(tasks.clone());
        let runner = tasks.start();
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let serve = tokio::spawn(warden_server::serve(listener, state, async move {
            let _ = stopped.await;
        }));
        Ok(Server {
            addr,
            token,
            repo_url: format!("http://localhost:{port}/app.git"),
            bare,
            stop: Some(stop),
            serve,
            runner,
            driver,
            _git: git,
            _gate: gate,
        })
    }

    /// Stops serving and the runner; deletes (and counts) sandboxes that are left.
    async fn stop(mut self) -> usize {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(15), &mut self.serve).await;
        self.serve.abort();
        self.runner.abort();
        let mut left = 0;
        for s in self.driver.list().await {
            if !matches!(s.phase, Phase::Stopped | Phase::Failed) {
                left += 1;
                let _ = self.driver.delete(&s.id).await;
            }
        }
        left
    }
}

/// What the client threads saw.
#[derive(Debug, Default)]
struct Load {
    posts: Vec<Sample>,
    gets: Vec<Sample>,
    /// The last answer of `GET /v1/tasks/{id}` for each task: a finished task.
    done: Vec<Value>,
    took: Duration,
}

fn is_terminal(status: &str) -> bool {
    matches!(status, "SUCCEEDED" | "FAILED" | "CANCELED" | "TIMED_OUT")
}

/// `total` tasks through `clients` threads, each with up to `window` of its tasks queued or
/// running; each client polls its tasks every `poll`.
fn load(server: &Server, total: usize, cfg: &E2eConfig, label: &str) -> anyhow::Result<Load> {
    let next = AtomicUsize::new(0);
    let outstanding = AtomicUsize::new(0);
    let start = Instant::now();
    let outs: Vec<anyhow::Result<Load>> = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..cfg.clients.max(1))
            .map(|_| {
                let (next, outstanding) = (&next, &outstanding);
                scope.spawn(move || -> anyhow::Result<Load> {
                    let mut conn = Conn::new(server.addr, &server.token);
                    let mut out = Load::default();
                    let mut mine: Vec<String> = Vec::new();
                    loop {
                        while mine.len() < cfg.window.max(1) {
                            let i = next.fetch_add(1, Ordering::SeqCst);
                            if i >= total {
                                break;
                            }
                            let body = json!({
                                "repo": server.repo_url,
                                "task": format!("Add BENCH.md ({label} task {i})"),
                                "base_branch": "main",
                                "template": "bench",
                            });
                            let busy = outstanding.load(Ordering::SeqCst) >= cfg.runner;
                            let t = Instant::now();
                            let r = conn.call("POST", "/v1/tasks", Some(&body))?;
                            let took = t.elapsed();
                            if r.status != 202 {
                                bail!(
                                    "POST /v1/tasks answered {}: {}",
                                    r.status,
                                    String::from_utf8_lossy(&r.body)
                                );
                            }
                            out.posts.push(Sample { took, busy });
                            outstanding.fetch_add(1, Ordering::SeqCst);
                            let id = r.json()?["id"]
                                .as_str()
                                .context("no id in the answer to POST /v1/tasks")?
                                .to_string();
                            mine.push(id);
                        }
                        if mine.is_empty() {
                            return Ok(out);
                        }
                        std::thread::sleep(cfg.poll);
                        let mut k = 0;
                        while k < mine.len() {
                            let busy = outstanding.load(Ordering::SeqCst) >= cfg.runner;
                            let path = format!("/v1/tasks/{}", mine[k]);
                            let t = Instant::now();
                            let r = conn.call("GET", &path, None)?;
                            let took = t.elapsed();
                            if r.status != 200 {
                                bail!(
                                    "GET {path} answered {}: {}",
                                    r.status,
                                    String::from_utf8_lossy(&r.body)
                                );
                            }
                            out.gets.push(Sample { took, busy });
                            let task = r.json()?;
                            if is_terminal(task["status"].as_str().unwrap_or("")) {
                                out.done.push(task);
                                mine.swap_remove(k);
                                outstanding.fetch_sub(1, Ordering::SeqCst);
                            } else {
                                k += 1;
                            }
                        }
                    }
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| {
                h.join()
                    .unwrap_or_else(|_| Err(anyhow::anyhow!("a client thread panicked")))
            })
            .collect()
    });
    let mut all = Load {
        took: start.elapsed(),
        ..Load::default()
    };
    for out in outs {
        let out = out?;
        all.posts.extend(out.posts);
        all.gets.extend(out.gets);
        all.done.extend(out.done);
    }
    if all.done.len() != total {
        bail!("{} of {total} tasks finished", all.done.len());
    }
    Ok(all)
}

fn time_of(task: &Value, field: &str) -> Option<i64> {
    task[field]
        .as_str()
        .and_then(|s| Timestamp::parse(s).ok())
        .map(Timestamp::millis)
}

/// One run: start the server on `database` (None: SQLite in the data directory), warm up,
/// load it, read every task's log, stop.
pub fn run(cfg: &E2eConfig, database: Option<&str>, label: &str) -> anyhow::Result<E2eResult> {
    let data = DataDir::new("wbt-data-")?;
    let repos = DataDir::new("wbt-repos-")?;
    // As `warden serve` runs: a 2-thread runtime.
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let server = runtime.block_on(Server::start(data.path(), repos.path(), database, cfg))?;
    let result = measure(&server, cfg, label);
    let left = runtime.block_on(server.stop());
    // The runtime's threads go; the git server and driver were dropped inside it.
    runtime.shutdown_timeout(Duration::from_secs(5));
    let mut result = result?;
    result.sandboxes_left = left;
    Ok(result)
}

/// The floor of the git work: `n` shallow clones, and commits and pushes of a new branch,
/// by the host's git straight against the git server, one at a time.
fn host_git_floor(server: &Server, n: usize) -> anyhow::Result<(Vec<f64>, Vec<f64>, Duration)> {
    let scratch = DataDir::new("wbt-git-")?;
    let git = |dir: &Path, args: &[&str]| -> anyhow::Result<()> {
        let out = std::process::Command::new("git")
            .args(args)
            .current_dir(dir)
            .env("GIT_AUTHOR_NAME", "Bench Bot")
            .env("GIT_AUTHOR_EMAIL", "bench@example.com")
            .env("GIT_COMMITTER_NAME", "Bench Bot")
            .env("GIT_COMMITTER_EMAIL", "bench@example.com")
            .output()
            .context("run git")?;
        if !out.status.success() {
            bail!(
                "git {}: {}",
                args.join(" "),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    };
    let (mut clones, mut pushes) = (Vec::new(), Vec::new());
    let cpu_before = tree_cpu();
    for i in 0..n {
        let dir = format!("c{i}");
        let t = Instant::now();
        git(
            scratch.path(),
            &[
                "clone",
                "--quiet",
                "--no-tags",
                "--single-branch",
                "--depth",
                "1",
                "--branch",
                "main",
                "--",
                &server.repo_url,
                &dir,
            ],
        )?;
        git(
            &scratch.path().join(&dir),
            &["switch", "--quiet", "-c", &format!("host/{i}")],
        )?;
        clones.push(ms(t.elapsed()));
        let checkout = scratch.path().join(&dir);
        std::fs::write(checkout.join("BENCH.md"), "written on the host\n")?;
        let t = Instant::now();
        git(&checkout, &["add", "-A"])?;
        git(
            &checkout,
            &["commit", "--quiet", "--no-verify", "-m", "host floor"],
        )?;
        git(
            &checkout,
            &[
                "push",
                "--quiet",
                "--porcelain",
                "--no-verify",
                "--",
                &server.repo_url,
                &format!("HEAD:refs/heads/host/{i}"),
            ],
        )?;
        pushes.push(ms(t.elapsed()));
    }
    // The git server's http-backends are reaped when their responses end, a moment after
    // the client saw them.
    std::thread::sleep(Duration::from_millis(100));
    let cpu = tree_cpu().saturating_sub(cpu_before) / n.max(1) as u32;
    Ok((clones, pushes, cpu))
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn measure(server: &Server, cfg: &E2eConfig, label: &str) -> anyhow::Result<E2eResult> {
    let (host_clone, host_push, host_git_cpu) = host_git_floor(server, 10)?;
    if cfg.warmup > 0 {
        let warm = load(server, cfg.warmup, cfg, &format!("{label} warm-up"))?;
        if let Some(bad) = warm.done.iter().find(|t| t["status"] != "SUCCEEDED") {
            bail!(
                "a warm-up task did not succeed: {} {}",
                bad["status"],
                bad["reason"]
            );
        }
    }
    let (cpu_before, machine_before) = (tree_cpu(), machine_cpu());
    let loaded = load(server, cfg.tasks, cfg, label)?;
    let (cpu_after, machine_after) = (tree_cpu(), machine_cpu());
    let cpu_per_task = cpu_after.saturating_sub(cpu_before) / cfg.tasks.max(1) as u32;
    let busy_ticks = machine_after.0.saturating_sub(machine_before.0);
    let machine_busy =
        busy_ticks as f64 / (machine_after.1.saturating_sub(machine_before.1)).max(1) as f64;
    let machine_cpu_per_task =
        Duration::from_millis(busy_ticks * 1000 / clock_ticks()) / cfg.tasks.max(1) as u32;

    let mut conn = Conn::new(server.addr, &server.token);
    let mut failures = Vec::new();
    let mut succeeded = 0;
    let mut first_created = i64::MAX;
    let mut last_finished = i64::MIN;
    let mut latency = Vec::new();
    let names = [
        "queue wait",
        "claim to sandbox step",
        "sandbox create",
        "clone + branch",
        "agent",
        "commit + push",
        "release sandbox",
        "record the end",
        "run (claim to end)",
    ];
    let mut phases: Vec<(&'static str, Vec<f64>)> =
        names.iter().map(|n| (*n, Vec::new())).collect();
    let mut events_total = 0usize;
    let mut pushed = 0;
    for task in &loaded.done {
        let id = task["id"].as_str().unwrap_or_default();
        if task["status"] == "SUCCEEDED" {
            succeeded += 1;
        } else if failures.len() < 5 {
            failures.push(format!("{id}: {} {}", task["status"], task["reason"]));
        }
        let (Some(created), Some(started), Some(finished)) = (
            time_of(task, "created_at"),
            time_of(task, "started_at"),
            time_of(task, "finished_at"),
        ) else {
            continue;
        };
        first_created = first_created.min(created);
        last_finished = last_finished.max(finished);
        latency.push(Duration::from_millis((finished - created).max(0) as u64));
        if let Some(branch) = task["new_branch"].as_str()
            && branch_commit(&server.bare, branch).is_some()
        {
            pushed += 1;
        }

        let r = conn.call("GET", &format!("/v1/tasks/{id}/events?limit=1000"), None)?;
        if r.status != 200 {
            bail!("GET /v1/tasks/{id}/events answered {}", r.status);
        }
        let events = r.json()?;
        let events = events.as_array().context("events are not an array")?;
        events_total += events.len();
        if cfg.show_log && events_total == events.len() {
            eprintln!("the log of {id} (ms from its creation):");
            for e in events {
                let at = time_of(e, "time").map_or(-1, |t| t - created);
                eprintln!(
                    "  {at:>6} {:<6} {}",
                    e["kind"].as_str().unwrap_or(""),
                    e["data"]
                );
            }
        }
        let mut steps: HashMap<&str, i64> = HashMap::new();
        for e in events {
            if e["kind"] == "step"
                && let (Some(step), Some(t)) = (e["data"]["step"].as_str(), time_of(e, "time"))
            {
                steps.entry(step).or_insert(t);
            }
        }
        let span = |from: Option<i64>, to: Option<i64>| match (from, to) {
            (Some(a), Some(b)) => Some((b - a).max(0) as f64),
            _ => None,
        };
        let s = |name: &str| steps.get(name).copied();
        let values = [
            span(Some(created), Some(started)),
            span(Some(started), s("sandbox")),
            span(s("sandbox"), s("sandbox_ready")),
            span(s("clone"), s("branch")),
            span(s("agent"), s("commit")),
            span(s("commit"), s("push")),
            span(s("push"), s("release")),
            span(s("release"), Some(finished)),
            span(Some(started), Some(finished)),
        ];
        for (i, v) in values.into_iter().enumerate() {
            if let Some(v) = v {
                phases[i].1.push(v);
            }
        }
    }
    let wall = if last_finished > first_created {
        Duration::from_millis((last_finished - first_created) as u64)
    } else {
        loaded.took
    };
    Ok(E2eResult {
        tasks: cfg.tasks,
        succeeded,
        failures,
        wall,
        wall_client: loaded.took,
        posts: loaded.posts,
        gets: loaded.gets,
        latency,
        phases,
        events_per_task: events_total as f64 / loaded.done.len().max(1) as f64,
        pushed,
        sandboxes_left: 0,
        host_clone,
        host_push,
        host_git_cpu,
        cpu_per_task,
        machine_busy,
        machine_cpu_per_task,
        round_rates: vec![cfg.tasks as f64 / wall.as_secs_f64().max(f64::MIN_POSITIVE)],
    })
}
