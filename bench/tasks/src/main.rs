//! Tasks through `warden serve` (issue 7): tasks per second through the API, the queue and
//! real sandboxes with a trivial scripted agent, the API's latency under that load, and the
//! task store on SQLite against PostgreSQL. See `--help` for what is measured.

mod cleanup;
mod e2e;
mod http;
mod micro;
mod pg;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use serde_json::{Value, json};

const HELP: &str = "\
warden-bench-tasks: tasks through warden serve, on SQLite and on PostgreSQL

USAGE: warden-bench-tasks [OPTIONS]

End to end (each round, once per store): the real server runs in this process
(warden_server::app over AppState::with_tasks, served on 127.0.0.1 by warden_server::serve,
the real runner and a real LocalDriver whose sandboxes are `warden run` jails with
sandboxd), with a git server of git's own http-backend on the host and a scripted agent
that writes one file through the driver and succeeds with a small usage. Each task goes API -> store -> queue -> new sandbox ->
shallow clone through the sandbox's egress proxy -> agent -> commit -> push -> sandbox
deleted. C client threads (one kept-alive HTTP/1.1 connection each) submit N tasks, each
keeping up to W of its tasks queued or running, and poll each of them every P ms.
Measured:
  tasks/s        N / (last finished_at - first created_at), the server's timestamps;
                 pooled over the rounds (all tasks / the sum of the rounds' times)
  POST p50/p99   POST /v1/tasks, counted while the queue was busy (at least R tasks queued
                 or running); all requests are in the JSON too
  GET p50/p99    GET /v1/tasks/{id} polls, likewise
  task latency   created_at to finished_at
  CPU per task   the machine's busy CPU time during the run / N (every process: the
                 server, clients, git server, sandboxes, PostgreSQL; anything else running
                 too, so run it on a quiet machine)
  CPUs busy      the share of the machine's CPUs busy during the run
  phases         medians from each task's timestamps and step events (queue wait, sandbox
                 create, clone, agent, commit + push, release), next to the floor of the
                 git work: the same clone, commit and push by the host's git straight
                 against the git server (10 of each before the run)

Store alone (each round, once per store): the task store's calls for one task as the API
and runner make them (insert with the QUEUED event; claim_next, the RUNNING event,
update_owned; E step and log events; update_owned to SUCCEEDED and its event), with S
submitters and K claimers at once on one store, no sandboxes. Measured: tasks/s, store calls/s, p50/p99 of
each call. Every task must be claimed exactly once and end SUCCEEDED.

Stores: SQLite as warden serve opens it (<data>/tasks.db, WAL, synchronous=NORMAL) and a
throwaway PostgreSQL cluster (initdb into /tmp, run as the postgres user, stopped at the
end) with its default durability (synchronous_commit=on); the store-alone run is repeated
on PostgreSQL with synchronous_commit=off, the durability SQLite's settings give.

OPTIONS:
  --tasks N                tasks per end-to-end run [200; 30 with --quick]
  --concurrency C          client threads [8]
  --runner-concurrency R   the runner's slots (warden serve --task-concurrency) [10]
  --window W               tasks each client keeps queued or running [ceil(2R/C)]
  --poll-ms P              each client polls its tasks every P ms [50]
  --warmup N               tasks run before each measured run [R; 2 with --quick]
  --store-tasks N          tasks of each store-alone run [2000; 300 with --quick]
  --submitters S           store-alone submitters [2]
  --claimers K             store-alone claimers [4]
  --events E               store-alone step and log events per task [27: with the three
                           status events, the 30 events a task of the end-to-end run logs]
  --warden PATH            the warden binary the sandboxes run [next to this one]
  --no-postgres            SQLite only
  --no-e2e                 the store-alone runs only
  --rounds N               rounds; each runs every store once, in rotating order, and
                           samples are pooled over the rounds [3; 1 with --quick]
  --quick                  a short run (fewer tasks, one round)
  --show-log               print one task's log with times (on stderr)
  -h, --help               this text

Before each measurement it waits (up to a minute) for a second in which the machine's CPUs
are at most 15% busy, and flags the run when one did not come.

Needs root (or unprivileged user namespaces and a delegated cgroup), git with http-backend,
and PostgreSQL's server programs (apt-get install postgresql) unless --no-postgres.
Prints Markdown tables, then a JSON summary on the last line.";

#[derive(Debug)]
struct Options {
    tasks: Option<usize>,
    clients: usize,
    runner: usize,
    window: Option<usize>,
    poll_ms: u64,
    warmup: Option<usize>,
    store_tasks: Option<usize>,
    submitters: usize,
    claimers: usize,
    events: usize,
    warden: Option<PathBuf>,
    postgres: bool,
    e2e: bool,
    quick: bool,
    show_log: bool,
    rounds: Option<usize>,
}

fn usage_error(message: String) -> ! {
    eprintln!("warden-bench-tasks: {message}; see --help");
    std::process::exit(64);
}

fn parse_args() -> Options {
    let mut o = Options {
        tasks: None,
        clients: 8,
        runner: 10,
        window: None,
        poll_ms: 50,
        warmup: None,
        store_tasks: None,
        submitters: 2,
        claimers: 4,
        events: 27,
        warden: None,
        postgres: true,
        e2e: true,
        quick: false,
        show_log: false,
        rounds: None,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut number = |name: &str| -> usize {
            match args.next().map(|v| v.parse::<usize>()) {
                Some(Ok(n)) if n > 0 || name == "--warmup" => n,
                _ => usage_error(format!("{name} needs a positive number")),
            }
        };
        match flag.as_str() {
            "--tasks" => o.tasks = Some(number("--tasks")),
            "--concurrency" => o.clients = number("--concurrency"),
            "--runner-concurrency" => o.runner = number("--runner-concurrency"),
            "--window" => o.window = Some(number("--window")),
            "--poll-ms" => o.poll_ms = number("--poll-ms") as u64,
            "--warmup" => o.warmup = Some(number("--warmup")),
            "--store-tasks" => o.store_tasks = Some(number("--store-tasks")),
            "--submitters" => o.submitters = number("--submitters"),
            "--claimers" => o.claimers = number("--claimers"),
            "--events" => o.events = number("--events"),
            "--warden" => match args.next() {
                Some(p) => o.warden = Some(PathBuf::from(p)),
                None => usage_error("--warden needs a path".into()),
            },
            "--no-postgres" => o.postgres = false,
            "--no-e2e" => o.e2e = false,
            "--quick" => o.quick = true,
            "--rounds" => o.rounds = Some(number("--rounds")),
            "--show-log" => o.show_log = true,
            "-h" | "--help" => {
                println!("{HELP}");
                std::process::exit(0);
            }
            other => usage_error(format!("unknown argument `{other}`")),
        }
    }
    o
}

fn percentile(samples: &[Duration], p: f64) -> Duration {
    let mut v = samples.to_vec();
    v.sort();
    if v.is_empty() {
        return Duration::ZERO;
    }
    v[((p / 100.0) * (v.len() - 1) as f64).round() as usize]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

fn median(values: &[f64]) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    if v.is_empty() {
        return 0.0;
    }
    let mid = v.len() / 2;
    if v.len() % 2 == 1 {
        v[mid]
    } else {
        (v[mid - 1] + v[mid]) / 2.0
    }
}

/// p50 and p99 in milliseconds, and the count, as JSON.
fn latency_json(samples: &[Duration]) -> Value {
    json!({
        "count": samples.len(),
        "p50_ms": round3(ms(percentile(samples, 50.0))),
        "p99_ms": round3(ms(percentile(samples, 99.0))),
        "max_ms": round3(ms(percentile(samples, 100.0))),
    })
}

fn round3(x: f64) -> f64 {
    (x * 1000.0).round() / 1000.0
}

fn busy(samples: &[e2e::Sample]) -> Vec<Duration> {
    samples.iter().filter(|s| s.busy).map(|s| s.took).collect()
}

fn all(samples: &[e2e::Sample]) -> Vec<Duration> {
    samples.iter().map(|s| s.took).collect()
}

fn e2e_json(r: &e2e::E2eResult) -> Value {
    let phases: serde_json::Map<String, Value> = r
        .phases
        .iter()
        .map(|(name, v)| (name.to_string(), json!(round3(median(v)))))
        .collect();
    json!({
        "tasks": r.tasks,
        "succeeded": r.succeeded,
        "pushed": r.pushed,
        "failures": r.failures,
        "seconds": round3(r.wall.as_secs_f64()),
        "seconds_client": round3(r.wall_client.as_secs_f64()),
        "tasks_per_second": round3(r.rate()),
        "rounds_tasks_per_second": r.round_rates.iter().map(|x| round3(*x)).collect::<Vec<_>>(),
        "post_busy": latency_json(&busy(&r.posts)),
        "post_all": latency_json(&all(&r.posts)),
        "get_busy": latency_json(&busy(&r.gets)),
        "get_all": latency_json(&all(&r.gets)),
        "task_latency": latency_json(&r.latency),
        "phase_median_ms": phases,
        "events_per_task": round3(r.events_per_task),
        "sandboxes_left": r.sandboxes_left,
        "cpu_ms_per_task_process_tree": round3(ms(r.cpu_per_task)),
        "cpu_ms_per_task_machine": round3(ms(r.machine_cpu_per_task)),
        "machine_busy": round3(r.machine_busy),
        "host_git_cpu_ms_per_task": round3(ms(r.host_git_cpu)),
        "host_git_median_ms": {
            "clone_and_branch": round3(median(&r.host_clone)),
            "commit_and_push": round3(median(&r.host_push)),
        },
    })
}

fn micro_json(r: &micro::MicroResult) -> Value {
    json!({
        "tasks": r.tasks,
        "seconds": round3(r.took.as_secs_f64()),
        "tasks_per_second": round3(r.rate()),
        "rounds_tasks_per_second": r.round_rates.iter().map(|x| round3(*x)).collect::<Vec<_>>(),
        "store_calls_per_second": round3(r.rate() * r.statements_per_task as f64),
        "store_calls_per_task": r.statements_per_task,
        "insert_writes_queued_event": r.insert_writes_event,
        "insert": latency_json(&r.ops.insert),
        "claim_next": latency_json(&r.ops.claim),
        "update_owned": latency_json(&r.ops.update),
        "append_event": latency_json(&r.ops.append),
        "empty_claims": r.empty_claims,
    })
}

/// The rounds' figures, `a, b, c`.
fn rates(v: &[f64], decimals: usize) -> String {
    v.iter()
        .map(|r| format!("{r:.decimals$}"))
        .collect::<Vec<_>>()
        .join(", ")
}

fn p50_p99(samples: &[Duration]) -> String {
    if samples.is_empty() {
        return "-".into();
    }
    format!(
        "{:.2} / {:.2}",
        ms(percentile(samples, 50.0)),
        ms(percentile(samples, 99.0))
    )
}

/// Waits, up to a minute, for a second in which the machine's CPUs are at most 15% busy
/// (other builds and tests share this machine). Returns the busy share of the last second
/// looked at; a run started on a busy machine is flagged in the output.
fn wait_for_quiet() -> f64 {
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    loop {
        let before = e2e::machine_cpu();
        std::thread::sleep(Duration::from_secs(1));
        let after = e2e::machine_cpu();
        let busy = after.0.saturating_sub(before.0) as f64
            / after.1.saturating_sub(before.1).max(1) as f64;
        if busy <= 0.15 || std::time::Instant::now() > deadline {
            if busy > 0.15 {
                eprintln!(
                    "  the machine is busy ({:.0}% of its CPUs) and did not quieten in a minute; measuring anyway",
                    busy * 100.0
                );
            }
            return busy;
        }
    }
}

fn micro_runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?)
}

fn main() {
    let o = parse_args();
    cleanup::install();
    if let Err(e) = run(o) {
        eprintln!("warden-bench-tasks: {e:#}");
        std::process::exit(1);
    }
}

fn run(o: Options) -> anyhow::Result<()> {
    let warden = match &o.warden {
        Some(p) => p.clone(),
        None => std::env::current_exe()?
            .parent()
            .context("this program's directory")?
            .join("warden"),
    };
    if o.e2e && !warden.is_file() {
        anyhow::bail!(
            "no warden binary at {} (build it with cargo build --release -p warden, or pass --warden)",
            warden.display()
        );
    }
    let tasks = o.tasks.unwrap_or(if o.quick { 30 } else { 200 });
    let rounds = o.rounds.unwrap_or(if o.quick { 1 } else { 3 });
    let window = o
        .window
        .unwrap_or((2 * o.runner).div_ceil(o.clients).max(1));
    let cfg = e2e::E2eConfig {
        tasks,
        clients: o.clients,
        runner: o.runner,
        window,
        poll: Duration::from_millis(o.poll_ms),
        warmup: o.warmup.unwrap_or(if o.quick { 2 } else { o.runner }),
        warden: warden.clone(),
        show_log: o.show_log,
    };
    let mcfg = micro::MicroConfig {
        tasks: o.store_tasks.unwrap_or(if o.quick { 300 } else { 2000 }),
        submitters: o.submitters,
        claimers: o.claimers,
        events: o.events,
    };

    let cluster = if o.postgres {
        eprintln!("starting a throwaway PostgreSQL cluster");
        Some(pg::PgCluster::start()?)
    } else {
        None
    };
    let setup = micro_runtime()?;

    // Each round runs every store once, in an order that rotates from round to round, so
    // that drift on the machine spreads over the stores.
    // A store: SQLite (None: a fresh file in the run's data directory), or a fresh
    // PostgreSQL database of this name prefix and `synchronous_commit`.
    type Backend = (&'static str, Option<(&'static str, bool)>);
    let mut e2e_backends: Vec<Backend> = Vec::new();
    let mut micro_backends: Vec<Backend> = vec![("sqlite", None)];
    if o.e2e {
        e2e_backends.push(("sqlite", None));
    }
    if cluster.is_some() {
        if o.e2e {
            e2e_backends.push(("postgres", Some(("e2e", true))));
        }
        micro_backends.push(("postgres", Some(("store_sync", true))));
        micro_backends.push((
            "postgres, synchronous_commit=off",
            Some(("store_async", false)),
        ));
    }
    let url_of = |backend: &Backend, round: usize| -> anyhow::Result<Option<String>> {
        match (&backend.1, &cluster) {
            (Some((prefix, sync)), Some(c)) => Ok(Some(
                setup.block_on(c.database(&format!("{prefix}_{round}"), *sync))?,
            )),
            _ => Ok(None),
        }
    };
    let mut e2e_rounds: Vec<Vec<e2e::E2eResult>> =
        e2e_backends.iter().map(|_| Vec::new()).collect();
    let mut micro_rounds: Vec<Vec<micro::MicroResult>> =
        micro_backends.iter().map(|_| Vec::new()).collect();
    // How busy the machine was just before each measurement.
    let mut busy_before: Vec<f64> = Vec::new();
    for round in 0..rounds {
        for k in 0..e2e_backends.len() {
            let i = (k + round) % e2e_backends.len();
            let name = e2e_backends[i].0;
            let url = url_of(&e2e_backends[i], round)?;
            eprintln!(
                "round {}: end to end on {name}: {} warm-up and {tasks} tasks, {} clients, {} runner slots",
                round + 1,
                cfg.warmup,
                cfg.clients,
                cfg.runner
            );
            busy_before.push(wait_for_quiet());
            let r = e2e::run(&cfg, url.as_deref(), name)
                .with_context(|| format!("end to end on {name}"))?;
            eprintln!(
                "  {} of {} succeeded in {:.2} s: {:.2} tasks/s",
                r.succeeded,
                r.tasks,
                r.wall.as_secs_f64(),
                r.rate()
            );
            e2e_rounds[i].push(r);
        }
        for k in 0..micro_backends.len() {
            let i = (k + round) % micro_backends.len();
            let name = micro_backends[i].0;
            let url = url_of(&micro_backends[i], round)?;
            eprintln!(
                "round {}: store alone on {name}: {} tasks, {} submitters, {} claimers",
                round + 1,
                mcfg.tasks,
                mcfg.submitters,
                mcfg.claimers
            );
            let dir = e2e::DataDir::new("wbt-store-")?;
            let rt = micro_runtime()?;
            busy_before.push(wait_for_quiet());
            let r = rt
                .block_on(async {
                    let store = warden_server::tasks::store_sql::open_task_store(
                        url.as_deref(),
                        dir.path(),
                    )
                    .await?;
                    micro::run(Arc::clone(&store), &mcfg).await
                })
                .with_context(|| format!("store alone on {name}"))?;
            rt.shutdown_timeout(Duration::from_secs(5));
            eprintln!("  {:.0} tasks/s", r.rate());
            micro_rounds[i].push(r);
        }
    }
    let e2e_runs: Vec<(&str, e2e::E2eResult)> = e2e_backends
        .iter()
        .zip(e2e_rounds)
        .filter_map(|((name, _), rs)| e2e::E2eResult::pool(rs).map(|r| (*name, r)))
        .collect();
    let micro_runs: Vec<(&str, micro::MicroResult)> = micro_backends
        .iter()
        .zip(micro_rounds)
        .filter_map(|((name, _), rs)| micro::MicroResult::pool(rs).map(|r| (*name, r)))
        .collect();
    drop(setup);
    let pg_version = cluster.as_ref().map(|c| c.version.clone());
    // Stops the cluster.
    drop(cluster);

    let noisy = busy_before.iter().filter(|b| **b > 0.15).count();
    if noisy > 0 {
        println!(
            "\nWARNING: {noisy} of {} measurements started while other work kept the machine's CPUs more than 15% busy; the figures are disturbed.",
            busy_before.len()
        );
    }
    let quiet = noisy == 0;
    report(&o, &cfg, &mcfg, &e2e_runs, &micro_runs, pg_version, quiet)
}

fn report(
    o: &Options,
    cfg: &e2e::E2eConfig,
    mcfg: &micro::MicroConfig,
    e2e_runs: &[(&str, e2e::E2eResult)],
    micro_runs: &[(&str, micro::MicroResult)],
    pg_version: Option<String>,
    quiet: bool,
) -> anyhow::Result<()> {
    if !e2e_runs.is_empty() {
        println!(
            "\n### End to end: {} rounds of {} tasks, {} clients, {} runner slots, up to {} tasks per client, polls every {} ms\n",
            e2e_runs[0].1.round_rates.len(),
            cfg.tasks,
            cfg.clients,
            cfg.runner,
            cfg.window,
            cfg.poll.as_millis()
        );
        println!(
            "| store | tasks | succeeded | tasks/s | rounds' tasks/s | POST p50 / p99 ms (busy) | GET p50 / p99 ms (busy) | polls (busy) | task latency p50 / p99 s | CPU ms per task | CPUs busy |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (name, r) in e2e_runs {
            let gets_busy = busy(&r.gets);
            println!(
                "| {name} | {} | {} | {:.2} | {} | {} | {} | {} | {:.2} / {:.2} | {:.0} | {:.0}% |",
                r.tasks,
                r.succeeded,
                r.rate(),
                rates(&r.round_rates, 2),
                p50_p99(&busy(&r.posts)),
                p50_p99(&gets_busy),
                gets_busy.len(),
                percentile(&r.latency, 50.0).as_secs_f64(),
                percentile(&r.latency, 99.0).as_secs_f64(),
                ms(r.machine_cpu_per_task),
                r.machine_busy * 100.0,
            );
        }
        println!("\nPhases of a task, median ms (from the task's timestamps and step events):\n");
        let header: Vec<&str> = e2e_runs.iter().map(|(n, _)| *n).collect();
        println!("| phase | {} |", header.join(" | "));
        println!("|---|{}", "---:|".repeat(header.len()));
        for (i, (phase, _)) in e2e_runs[0].1.phases.iter().enumerate() {
            let cells: Vec<String> = e2e_runs
                .iter()
                .map(|(_, r)| format!("{:.0}", median(&r.phases[i].1)))
                .collect();
            println!("| {phase} | {} |", cells.join(" | "));
        }
        let floor = |f: fn(&e2e::E2eResult) -> &Vec<f64>| -> String {
            e2e_runs
                .iter()
                .map(|(_, r)| format!("{:.0}", median(f(r))))
                .collect::<Vec<_>>()
                .join(" | ")
        };
        println!(
            "| floor: clone + branch by the host's git, no sandbox or proxy | {} |",
            floor(|r| &r.host_clone)
        );
        println!(
            "| floor: commit + push by the host's git, no sandbox or proxy | {} |",
            floor(|r| &r.host_push)
        );
        println!(
            "\nCPU of the host's git for one clone, commit and push (client and server \
             processes, no sandbox): {} ms; the machine's CPU per task of the run: {} ms.",
            e2e_runs
                .iter()
                .map(|(n, r)| format!("{:.0} ({n})", ms(r.host_git_cpu)))
                .collect::<Vec<_>>()
                .join(", "),
            e2e_runs
                .iter()
                .map(|(n, r)| format!("{:.0} ({n})", ms(r.machine_cpu_per_task)))
                .collect::<Vec<_>>()
                .join(", ")
        );
        for (name, r) in e2e_runs {
            if !r.failures.is_empty() {
                println!("\n{name}: tasks that did not succeed, first few:");
                for f in &r.failures {
                    println!("- {f}");
                }
            }
            if r.pushed != r.succeeded {
                println!(
                    "\n{name}: {} tasks succeeded but the git server holds {} of their branches",
                    r.succeeded, r.pushed
                );
            }
            if r.sandboxes_left > 0 {
                println!(
                    "\n{name}: {} sandboxes were left after the run",
                    r.sandboxes_left
                );
            }
        }
    }
    if !micro_runs.is_empty() {
        println!(
            "\n### Store alone: {} rounds of {} tasks, {} submitters, {} claimers, {} store calls per task ({} step/log events)\n",
            micro_runs[0].1.round_rates.len(),
            mcfg.tasks,
            mcfg.submitters,
            mcfg.claimers,
            micro_runs[0].1.statements_per_task,
            mcfg.events
        );
        println!(
            "| store | tasks/s | rounds' tasks/s | store calls/s | insert p50 / p99 ms | claim_next | update_owned | append_event | empty claims |"
        );
        println!("|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        for (name, r) in micro_runs {
            println!(
                "| {name} | {:.0} | {} | {:.0} | {} | {} | {} | {} | {} |",
                r.rate(),
                rates(&r.round_rates, 0),
                r.rate() * r.statements_per_task as f64,
                p50_p99(&r.ops.insert),
                p50_p99(&r.ops.claim),
                p50_p99(&r.ops.update),
                p50_p99(&r.ops.append),
                r.empty_claims
            );
        }
    }

    // Ratios: PostgreSQL's figure over SQLite's.
    let mut ratios = serde_json::Map::new();
    let e2e_of = |n: &str| e2e_runs.iter().find(|(m, _)| *m == n).map(|(_, r)| r);
    if let (Some(s), Some(p)) = (e2e_of("sqlite"), e2e_of("postgres")) {
        let p99 = |v: Vec<Duration>| ms(percentile(&v, 99.0));
        ratios.insert(
            "e2e_tasks_per_second".into(),
            json!(round3(p.rate() / s.rate())),
        );
        ratios.insert(
            "e2e_post_p99_busy".into(),
            json!(round3(p99(busy(&p.posts)) / p99(busy(&s.posts)))),
        );
        ratios.insert(
            "e2e_get_p99_busy".into(),
            json!(round3(p99(busy(&p.gets)) / p99(busy(&s.gets)))),
        );
    }
    let micro_of = |n: &str| micro_runs.iter().find(|(m, _)| *m == n).map(|(_, r)| r);
    if let Some(s) = micro_of("sqlite") {
        if let Some(p) = micro_of("postgres") {
            ratios.insert(
                "store_tasks_per_second".into(),
                json!(round3(p.rate() / s.rate())),
            );
        }
        if let Some(p) = micro_of("postgres, synchronous_commit=off") {
            ratios.insert(
                "store_tasks_per_second_async".into(),
                json!(round3(p.rate() / s.rate())),
            );
        }
    }
    if !ratios.is_empty() {
        println!("\n### PostgreSQL / SQLite\n");
        println!("| figure | ratio |");
        println!("|---|---:|");
        let label = |k: &str| match k {
            "e2e_tasks_per_second" => "end to end tasks/s (higher is better)",
            "e2e_post_p99_busy" => "end to end POST p99 (lower is better)",
            "e2e_get_p99_busy" => "end to end GET p99 (lower is better)",
            "store_tasks_per_second" => "store alone tasks/s (higher is better)",
            "store_tasks_per_second_async" => {
                "store alone tasks/s, synchronous_commit=off (higher is better)"
            }
            _ => "?",
        };
        for (k, v) in &ratios {
            println!("| {} | {:.2}x |", label(k), v.as_f64().unwrap_or(0.0));
        }
    }

    let summary = json!({
        "config": {
            "tasks": cfg.tasks,
            "clients": cfg.clients,
            "runner_concurrency": cfg.runner,
            "window": cfg.window,
            "poll_ms": cfg.poll.as_millis() as u64,
            "warmup": cfg.warmup,
            "store_tasks": mcfg.tasks,
            "submitters": mcfg.submitters,
            "claimers": mcfg.claimers,
            "events": mcfg.events,
            "quick": o.quick,
            "rounds": o.rounds.unwrap_or(if o.quick { 1 } else { 3 }),
            "postgres": pg_version,
        },
        "machine_quiet_before_each_measurement": quiet,
        "e2e": e2e_runs.iter().map(|(n, r)| (n.to_string(), e2e_json(r))).collect::<serde_json::Map<_, _>>(),
        "store": micro_runs.iter().map(|(n, r)| (n.to_string(), micro_json(r))).collect::<serde_json::Map<_, _>>(),
        "ratios_postgres_over_sqlite": ratios,
    });
    println!("\n{summary}");
    Ok(())
}
