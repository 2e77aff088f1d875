//! [`Schedules`]: what the API and the scheduler loop share. The API creates, replaces,
//! pauses and deletes schedules and files a run on request; the loop, on every `warden serve`
//! replica, sleeps until the earliest next run (at most [`MAX_SLEEP`], and woken when a
//! schedule changes here), claims each due run in the database (one replica wins it, see
//! [`super::store`]), and files its task through [`Tasks::submit`] with the idempotency key
//! `schedule:<name>:<fire time in ms>`, so even a run claimed twice files one task.
//!
//! A run that cannot file its task (its template was deleted, its repository is no longer
//! reachable) is recorded as the schedule's `last_error` and logged; the schedule goes on with
//! its next run, never retrying in a loop.
//!
//! Time comes from a [`Clock`], so tests drive it without sleeping.

use std::fmt;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::sync::Notify;

use super::cron::{CronSchedule, rfc3339_local};
use super::model::{RUN_ALL_CAP, Schedule, ScheduleSpec, plan_due};
use super::store::{ScheduleRow, ScheduleStore};
use crate::metrics::ScheduleMetrics;
use crate::tasks::model::{FieldError, Task, Timestamp};
use crate::tasks::runner::{SubmitError, Tasks};
use crate::tasks::store::TaskStoreError;
use crate::tasks::store_sql::SqlTaskStore;

/// The longest the loop sleeps: schedules another replica created are seen within this.
pub const MAX_SLEEP: Duration = Duration::from_secs(10);

/// After the database failed, the loop tries again after this long.
const ERROR_BACKOFF: Duration = Duration::from_secs(5);

/// The most fire times `GET /v1/schedules/{name}?next=N` lists.
pub const MAX_UPCOMING: usize = 100;

/// Where the scheduler reads the time.
pub trait Clock: Send + Sync + fmt::Debug {
    fn now(&self) -> Timestamp;
}

/// The system's clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        Timestamp::now()
    }
}

/// Why a schedule operation failed.
#[derive(Debug)]
pub enum ScheduleError {
    /// Bad input; each error names its field.
    Invalid(Vec<FieldError>),
    Store(TaskStoreError),
}

impl From<TaskStoreError> for ScheduleError {
    fn from(e: TaskStoreError) -> ScheduleError {
        ScheduleError::Store(e)
    }
}

fn submit_error(e: SubmitError, prefix: &str) -> ScheduleError {
    match e {
        SubmitError::Invalid(errors) => ScheduleError::Invalid(
            errors
                .into_iter()
                .map(|e| FieldError {
                    field: format!("{prefix}{}", e.field),
                    message: e.message,
                })
                .collect(),
        ),
        SubmitError::Store(e) => ScheduleError::Store(e),
    }
}

/// What one pass of the scheduler did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TickReport {
    /// Tasks filed: (schedule, fire time, task id).
    pub filed: Vec<(String, Timestamp, String)>,
    /// Runs skipped as missed: (schedule, the latest missed fire time).
    pub skipped: Vec<(String, Timestamp)>,
    /// Runs that could not file their task: (schedule, why).
    pub failed: Vec<(String, String)>,
    /// The earliest next run after this pass.
    pub next_due: Option<Timestamp>,
}

/// The schedules of a server. Cheap to clone.
#[derive(Clone)]
pub struct Schedules {
    inner: Arc<Inner>,
}

struct Inner {
    store: ScheduleStore,
    tasks: Tasks,
    clock: Arc<dyn Clock>,
    wake: Notify,
    metrics: OnceLock<ScheduleMetrics>,
}

impl fmt::Debug for Schedules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Schedules")
            .field("clock", &self.inner.clock)
            .finish_non_exhaustive()
    }
}

impl Schedules {
    /// Schedules in `db` (the task database), filing their tasks into `tasks`.
    pub fn new(db: SqlTaskStore, tasks: Tasks, clock: Arc<dyn Clock>) -> Schedules {
        Schedules {
            inner: Arc::new(Inner {
                store: ScheduleStore::new(db),
                tasks,
                clock,
                wake: Notify::new(),
                metrics: OnceLock::new(),
            }),
        }
    }

    /// Where runs are counted (the server's registry); set once.
    pub fn set_metrics(&self, metrics: ScheduleMetrics) {
        let _ = self.inner.metrics.set(metrics);
    }

    pub fn store(&self) -> &ScheduleStore {
        &self.inner.store
    }

    fn now(&self) -> Timestamp {
        self.inner.clock.now()
    }

    /// The schedule as the API shows it; `upcoming`: list that many next fire times.
    pub fn view(&self, row: ScheduleRow, upcoming: Option<usize>) -> Schedule {
        let cron = CronSchedule::new(&row.cron, &row.timezone, self.now()).ok();
        let next_run_local = row
            .next_run
            .and_then(|t| cron.as_ref().and_then(|c| c.local(t)));
        let upcoming = upcoming.map(|n| {
            cron.as_ref()
                .map(|c| {
                    let from = row
                        .next_run
                        .map_or(self.now(), |t| Timestamp(t.millis() - 1));
                    c.upcoming(from, n.min(MAX_UPCOMING))
                        .iter()
                        .map(rfc3339_local)
                        .collect()
                })
                .unwrap_or_default()
        });
        Schedule {
            name: row.name,
            cron: row.cron,
            timezone: row.timezone,
            missed: row.missed,
            enabled: row.enabled,
            task: row.task,
            next_run: row.next_run,
            next_run_local,
            last_run: row.last_run,
            last_task: row.last_task,
            last_error: row.last_error,
            created_at: row.created_at,
            updated_at: row.updated_at,
            upcoming,
        }
    }

    /// Creates or replaces the schedule `name` after checking it as a run would file it (the
    /// task's fields, template and repository). True when created. A replaced schedule with a
    /// new expression or zone goes on from its next fire time after now; one with the same
    /// keeps its next run.
    pub async fn put(
        &self,
        name: &str,
        spec: ScheduleSpec,
    ) -> Result<(Schedule, bool), ScheduleError> {
        let now = self.now();
        let cron = spec.check(name, now).map_err(ScheduleError::Invalid)?;
        self.inner
            .tasks
            .check(spec.task.clone(), "task-schedule")
            .await
            .map_err(|e| submit_error(e, "task."))?;
        let expr = spec.cron.trim().to_string();
        let timezone = spec.timezone().to_string();
        // The same times as before (a restart re-reading the config file, a PUT repeated):
        // the next run stays, even when it is past, so a run due meanwhile is not lost and
        // the missed-run policy still applies to it.
        let kept = self.inner.store.get(name).await?.and_then(|old| {
            (old.enabled && spec.enabled && old.cron == expr && old.timezone == timezone)
                .then_some(old.next_run)
                .flatten()
        });
        let next_run = match (spec.enabled, kept) {
            (false, _) => None,
            (true, Some(kept)) => Some(kept),
            (true, None) => cron.next_after(now),
        };
        let row = ScheduleRow {
            name: name.to_string(),
            cron: expr,
            timezone,
            missed: spec.missed,
            enabled: spec.enabled,
            task: spec.task,
            next_run,
            last_run: None,
            last_task: None,
            last_error: None,
            created_at: now,
            updated_at: now,
        };
        let created = self.inner.store.put(&row).await?;
        self.inner.wake.notify_one();
        let stored = self.inner.store.get(name).await?.unwrap_or(row);
        Ok((self.view(stored, None), created))
    }

    pub async fn get(
        &self,
        name: &str,
        upcoming: Option<usize>,
    ) -> Result<Option<Schedule>, ScheduleError> {
        Ok(self
            .inner
            .store
            .get(name)
            .await?
            .map(|r| self.view(r, upcoming)))
    }

    pub async fn list(&self) -> Result<Vec<Schedule>, ScheduleError> {
        Ok(self
            .inner
            .store
            .list()
            .await?
            .into_iter()
            .map(|r| self.view(r, None))
            .collect())
    }

    /// True when it existed.
    pub async fn delete(&self, name: &str) -> Result<bool, ScheduleError> {
        let gone = self.inner.store.delete(name).await?;
        self.inner.wake.notify_one();
        Ok(gone)
    }

    /// Pauses or resumes. A resumed schedule goes on from its next fire time after now: the
    /// runs that fell while it was paused were not missed, they were paused.
    pub async fn set_enabled(
        &self,
        name: &str,
        enabled: bool,
    ) -> Result<Option<Schedule>, ScheduleError> {
        let Some(row) = self.inner.store.get(name).await? else {
            return Ok(None);
        };
        let now = self.now();
        let next = if enabled {
            CronSchedule::new(&row.cron, &row.timezone, now)
                .map_err(ScheduleError::Invalid)?
                .next_after(now)
        } else {
            None
        };
        if row.enabled != enabled || (enabled && row.next_run.is_none()) {
            self.inner
                .store
                .set_enabled(name, enabled, next, now)
                .await?;
            self.inner.wake.notify_one();
        }
        self.get(name, None).await
    }

    /// Files the schedule's task now, outside its times (key `schedule:<name>:run:<ms>`).
    pub async fn run_now(&self, name: &str) -> Result<Option<(Task, bool)>, ScheduleError> {
        let Some(row) = self.inner.store.get(name).await? else {
            return Ok(None);
        };
        let now = self.now();
        let mut submission = row.task.clone();
        submission.idempotency_key = Some(format!("schedule:{name}:run:{}", now.millis()));
        match self.inner.tasks.submit(submission, None).await {
            Ok((task, created)) => {
                self.inner
                    .store
                    .record(name, now, Some(&task.id), None)
                    .await?;
                self.count("filed");
                Ok(Some((task, created)))
            }
            Err(e) => {
                self.count("failed");
                Err(submit_error(e, "task."))
            }
        }
    }

    fn count(&self, outcome: &'static str) {
        if let Some(m) = self.inner.metrics.get() {
            m.run(outcome);
        }
    }

    /// One pass: claims and files every due run, as of the clock's now.
    pub async fn tick(&self) -> Result<TickReport, TaskStoreError> {
        let now = self.now();
        let mut report = TickReport::default();
        for row in self.inner.store.due(now).await? {
            let Some(due) = row.next_run else { continue };
            let name = row.name.clone();
            let cron = match CronSchedule::new(&row.cron, &row.timezone, now) {
                Ok(c) => Some(c),
                Err(errors) => {
                    // Stored before a change of rules or of the time zone database: it stops
                    // (no next run) with the reason, rather than failing at every pass.
                    let why = errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; ");
                    tracing::warn!(schedule = %name, reason = %why, "schedule cannot fire");
                    None
                }
            };
            let Some(cron) = cron else {
                if self.inner.store.claim(&name, due, None, None).await? {
                    self.inner
                        .store
                        .record(
                            &name,
                            due,
                            None,
                            Some("its cron expression or time zone no longer parses; replace it"),
                        )
                        .await?;
                    report.failed.push((name, "cannot parse".into()));
                }
                continue;
            };
            let recent = cron.recent(due, now, RUN_ALL_CAP);
            let plan = plan_due(row.missed, due, &recent, now);
            let next = cron.next_after(now);
            let newest = plan.fires.last().copied();
            // The tasks are filed before the run is claimed: a replica that stops between the
            // two leaves the run due, and the next pass files it again with the same
            // idempotency key, which gives back the task already filed instead of a second.
            // Replicas racing on one run file one task between them the same way, and only
            // the one whose claim wins records the outcome.
            let mut filed = Vec::with_capacity(plan.fires.len());
            for &fire in &plan.fires {
                filed.push((fire, self.file(&row, fire).await));
            }
            if !self.inner.store.claim(&name, due, next, newest).await? {
                continue; // another replica has it, or it changed meanwhile
            }
            if plan.fires.is_empty() {
                let latest = recent.first().copied().unwrap_or(due);
                tracing::info!(schedule = %name, due = %due.rfc3339(), latest = %latest.rfc3339(),
                    "runs missed while no replica was up: skipped (missed = skip)");
                self.count("skipped");
                report.skipped.push((name, latest));
                continue;
            }
            if plan.missed {
                tracing::info!(schedule = %name, due = %due.rfc3339(), runs = plan.fires.len(),
                    policy = %row.missed, "runs were missed; filing as the policy says");
            }
            for (fire, outcome) in filed {
                self.record(&row, fire, outcome, &mut report).await?;
            }
        }
        report.next_due = self.inner.store.earliest().await?;
        Ok(report)
    }

    /// Files the task of `row`'s run at `fire` (idempotent: the key names the run): its id,
    /// or why none was filed.
    async fn file(&self, row: &ScheduleRow, fire: Timestamp) -> Result<String, String> {
        let mut submission = row.task.clone();
        submission.idempotency_key = Some(format!("schedule:{}:{}", row.name, fire.millis()));
        match self.inner.tasks.submit(submission, None).await {
            Ok((task, _)) => Ok(task.id),
            Err(e) => {
                let why = match e {
                    SubmitError::Invalid(errors) => errors
                        .iter()
                        .map(ToString::to_string)
                        .collect::<Vec<_>>()
                        .join("; "),
                    SubmitError::Store(e) => e.to_string(),
                };
                Err(format!(
                    "the run of {} filed no task: {why}",
                    fire.rfc3339()
                ))
            }
        }
    }

    /// Records on the schedule what came of its run at `fire`.
    async fn record(
        &self,
        row: &ScheduleRow,
        fire: Timestamp,
        outcome: Result<String, String>,
        report: &mut TickReport,
    ) -> Result<(), TaskStoreError> {
        let name = row.name.clone();
        match outcome {
            Ok(task) => {
                tracing::info!(schedule = %name, fire = %fire.rfc3339(), task = %task,
                    "schedule filed a task");
                self.inner
                    .store
                    .record(&name, fire, Some(&task), None)
                    .await?;
                self.count("filed");
                report.filed.push((name, fire, task));
            }
            Err(why) => {
                tracing::warn!(schedule = %name, reason = %why, "schedule run failed");
                self.inner
                    .store
                    .record(&name, fire, row.last_task.as_deref(), Some(&why))
                    .await?;
                self.count("failed");
                report.failed.push((name, why));
            }
        }
        Ok(())
    }

    /// Starts the loop on this replica; it runs until the process ends.
    pub fn start(&self) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move { this.run().await })
    }

    async fn run(self) {
        loop {
            let wait = match self.tick().await {
                Ok(report) => {
                    let now = self.now();
                    report.next_due.map_or(MAX_SLEEP, |t| {
                        Duration::from_millis((t.millis() - now.millis()).max(0) as u64)
                            .min(MAX_SLEEP)
                    })
                }
                Err(e) => {
                    tracing::warn!(error = %e, "scheduler could not read the schedules");
                    ERROR_BACKOFF
                }
            };
            if wait.is_zero() {
                // Due already (another replica may hold the claim): yield, then look again.
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.inner.wake.notified() => {}
            }
        }
    }
}

/// The missed-run policy's words for `--help` and docs.
pub const MISSED_HELP: &str = "Runs missed while no warden serve replica was up (a run more \
than a minute late counts as missed): `skip` (the default) drops them and goes on with the next \
future run; `run-once` files one task for them all, as of the latest missed fire time; \
`run-all` files one for each, oldest first (the latest 10 at most). Then the schedule goes on. \
A paused schedule misses nothing: resumed, it goes on from its next fire time.";
