//! The task store alone, without sandboxes: the queue's statements as the API and the
//! runner issue them for one task, with several submitters and claimers at once on one
//! store (one `warden serve`: its API handlers insert while its running tasks write).
//!
//! Per task: `insert` with the QUEUED event (what `Tasks::submit` does; appended apart when
//! the store's `insert` does not write it); `claim_next`, the
//! RUNNING event, `update_owned` with the sandbox set (the runner's save after creating the
//! sandbox), `events` step and log events (the runner's log of clone, agent and push), then
//! `update_owned` to SUCCEEDED and the final status event. Every task must be claimed
//! exactly once and end SUCCEEDED, or the run is an error.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::json;
use warden_server::tasks::TaskStore;
use warden_server::tasks::model::{
    Task, TaskDefaults, TaskStatus, TaskSubmission, Timestamp, new_task_id,
};
use warden_server::tasks::store::Inserted;

/// How the store is loaded.
#[derive(Debug, Clone)]
pub struct MicroConfig {
    pub tasks: usize,
    pub submitters: usize,
    pub claimers: usize,
    /// Step and log events per task, besides the three status events.
    pub events: usize,
}

/// Latencies of one kind of statement.
#[derive(Debug, Default)]
pub struct OpSamples {
    pub insert: Vec<Duration>,
    pub claim: Vec<Duration>,
    pub update: Vec<Duration>,
    pub append: Vec<Duration>,
}

impl OpSamples {
    fn merge(&mut self, other: OpSamples) {
        self.insert.extend(other.insert);
        self.claim.extend(other.claim);
        self.update.extend(other.update);
        self.append.extend(other.append);
    }
}

#[derive(Debug)]
pub struct MicroResult {
    pub tasks: usize,
    pub took: Duration,
    pub ops: OpSamples,
    /// `claim_next` calls that found nothing (the claimers ran ahead of the submitters).
    pub empty_claims: usize,
    /// Store calls per task (insert, claim, updates, appends).
    pub statements_per_task: usize,
    /// `insert` wrote the QUEUED event in its own transaction.
    pub insert_writes_event: bool,
    /// Tasks per second of each round (one for a single run).
    pub round_rates: Vec<f64>,
}

impl MicroResult {
    /// Tasks per second over every round pooled.
    pub fn rate(&self) -> f64 {
        self.tasks as f64 / self.took.as_secs_f64().max(f64::MIN_POSITIVE)
    }

    /// The rounds of one store as one result: samples pooled, times and counts summed.
    pub fn pool(rounds: Vec<MicroResult>) -> Option<MicroResult> {
        let mut it = rounds.into_iter();
        let mut all = it.next()?;
        for r in it {
            all.tasks += r.tasks;
            all.took += r.took;
            all.ops.merge(r.ops);
            all.empty_claims += r.empty_claims;
            all.round_rates.extend(r.round_rates);
        }
        Some(all)
    }
}

const LEASE: Duration = Duration::from_secs(30);

fn lease_from(now: Timestamp) -> Timestamp {
    Timestamp(now.0 + LEASE.as_millis() as i64)
}

fn new_task(i: usize) -> anyhow::Result<Task> {
    let id = new_task_id();
    let spec = TaskSubmission {
        repo: "https://git.example.com/org/app.git".into(),
        task: format!("Add BENCH.md (store benchmark task {i})"),
        base_branch: Some("main".into()),
        ..TaskSubmission::default()
    }
    .validate(&id, &TaskDefaults::default())
    .map_err(|e| anyhow::anyhow!("a bad benchmark task: {e:?}"))?;
    Ok(Task::new(id, spec, Timestamp::now()))
}

fn timed<T>(samples: &mut Vec<Duration>, start: Instant, value: T) -> T {
    samples.push(start.elapsed());
    value
}

/// Loads `store` as [`MicroConfig`] says; the store must be empty.
pub async fn run(store: Arc<dyn TaskStore>, cfg: &MicroConfig) -> anyhow::Result<MicroResult> {
    // Whether `insert` writes the task's QUEUED event itself (the store does since the event
    // went into the insert's transaction); if not, the submitters append it, as
    // `Tasks::submit` did. The first task tells.
    let first = new_task(0)?;
    if !matches!(store.insert(&first).await?, Inserted::Created(_)) {
        bail!("task {} was not created", first.id);
    }
    let append_queued = store.events(&first.id, 0, 10).await?.is_empty();
    if append_queued {
        store
            .append_event(
                &first.id,
                Timestamp::now(),
                "status",
                &json!({"status": "QUEUED"}),
            )
            .await?;
    }
    let to_insert = Arc::new(AtomicUsize::new(1));
    let finished = Arc::new(AtomicUsize::new(0));
    let empty = Arc::new(AtomicUsize::new(0));
    let claimed_by: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let start = Instant::now();
    let mut workers = tokio::task::JoinSet::new();
    for _ in 0..cfg.submitters.max(1) {
        let store = store.clone();
        let to_insert = to_insert.clone();
        let total = cfg.tasks;
        workers.spawn(async move {
            let mut ops = OpSamples::default();
            loop {
                let i = to_insert.fetch_add(1, Ordering::SeqCst);
                if i >= total {
                    return Ok::<_, anyhow::Error>(ops);
                }
                let task = new_task(i)?;
                let t = Instant::now();
                let inserted = timed(&mut ops.insert, t, store.insert(&task).await)?;
                if !matches!(inserted, Inserted::Created(_)) {
                    bail!("task {} was not created", task.id);
                }
                if append_queued {
                    let t = Instant::now();
                    timed(
                        &mut ops.append,
                        t,
                        store
                            .append_event(
                                &task.id,
                                Timestamp::now(),
                                "status",
                                &json!({"status": "QUEUED"}),
                            )
                            .await,
                    )?;
                }
            }
        });
    }
    for k in 0..cfg.claimers.max(1) {
        let store = store.clone();
        let finished = finished.clone();
        let empty = empty.clone();
        let claimed_by = claimed_by.clone();
        let total = cfg.tasks;
        let events = cfg.events;
        let owner = format!("bench-claimer-{k}");
        workers.spawn(async move {
            let mut ops = OpSamples::default();
            while finished.load(Ordering::SeqCst) < total {
                let now = Timestamp::now();
                let t = Instant::now();
                let claimed = store.claim_next(&owner, now, lease_from(now)).await?;
                let Some(mut task) = claimed else {
                    empty.fetch_add(1, Ordering::Relaxed);
                    tokio::time::sleep(Duration::from_millis(1)).await;
                    continue;
                };
                ops.claim.push(t.elapsed());
                if let Ok(mut m) = claimed_by.lock() {
                    *m.entry(task.id.clone()).or_insert(0) += 1;
                }
                let id = task.id.clone();
                let append = |kind: &'static str, data: serde_json::Value| {
                    let store = store.clone();
                    let id = id.clone();
                    async move {
                        let t = Instant::now();
                        store
                            .append_event(&id, Timestamp::now(), kind, &data)
                            .await
                            .map(|_| t.elapsed())
                    }
                };
                ops.append
                    .push(append("status", json!({"status": "RUNNING", "owner": owner})).await?);
                task.sandbox = Some(format!("sbx-{}", &id["task-".len()..]));
                task.updated_at = Timestamp::now();
                let t = Instant::now();
                let held = timed(
                    &mut ops.update,
                    t,
                    store.update_owned(&task, lease_from(task.updated_at)).await,
                )?;
                if held.is_none() {
                    bail!("task {id}: update_owned found it not held by {owner}");
                }
                for e in 0..events {
                    let (kind, data) = if e % 3 == 0 {
                        ("step", json!({"step": format!("step-{e}")}))
                    } else {
                        (
                            "log",
                            json!({"stream": "git:stderr", "text": format!("line {e} of git's output")}),
                        )
                    };
                    ops.append.push(append(kind, data).await?);
                }
                task.status = TaskStatus::Succeeded;
                task.summary = Some("wrote BENCH.md".into());
                task.commit = Some("0123456789abcdef0123456789abcdef01234567".into());
                task.sandbox = None;
                task.finished_at = Some(Timestamp::now());
                task.updated_at = Timestamp::now();
                let t = Instant::now();
                let held = timed(
                    &mut ops.update,
                    t,
                    store.update_owned(&task, lease_from(task.updated_at)).await,
                )?;
                if held.is_none() {
                    bail!("task {id}: update_owned (finish) found it not held by {owner}");
                }
                ops.append
                    .push(append("status", json!({"status": "SUCCEEDED"})).await?);
                finished.fetch_add(1, Ordering::SeqCst);
            }
            Ok(ops)
        });
    }
    let mut ops = OpSamples::default();
    let mut first_error = None;
    while let Some(joined) = workers.join_next().await {
        match joined.context("a store worker stopped") {
            Ok(Ok(o)) => ops.merge(o),
            Ok(Err(e)) | Err(e) => {
                if first_error.is_none() {
                    first_error = Some(e);
                    // The others would wait for tasks that never finish.
                    workers.abort_all();
                }
            }
        }
    }
    if let Some(e) = first_error {
        return Err(e);
    }
    let took = start.elapsed();

    let claimed = claimed_by.lock().map(|m| m.clone()).unwrap_or_default();
    let twice = claimed.values().filter(|&&n| n != 1).count();
    if claimed.len() != cfg.tasks || twice > 0 {
        bail!(
            "{} tasks claimed ({} more than once), {} submitted",
            claimed.len(),
            twice,
            cfg.tasks
        );
    }
    let counts = store.count_by_status().await?;
    let succeeded = counts
        .iter()
        .find(|(s, _)| *s == TaskStatus::Succeeded)
        .map(|(_, n)| *n as usize)
        .unwrap_or(0);
    if succeeded != cfg.tasks {
        bail!("{succeeded} of {} tasks SUCCEEDED: {counts:?}", cfg.tasks);
    }
    Ok(MicroResult {
        tasks: cfg.tasks,
        took,
        ops,
        empty_claims: empty.load(Ordering::Relaxed),
        statements_per_task: 1 + 1 + 2 + cfg.events + 2 + usize::from(append_queued),
        insert_writes_event: !append_queued,
        round_rates: vec![cfg.tasks as f64 / took.as_secs_f64().max(f64::MIN_POSITIVE)],
    })
}
