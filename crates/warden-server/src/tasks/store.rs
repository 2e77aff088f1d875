//! The task store: the persistent queue, the tasks and their logs. One trait, so the runner
//! and the API do not care which database holds them; SQLite by default, Postgres when
//! several `warden serve` replicas share one (`--database postgres://...`).
//!
//! Concurrency contract (what makes a queue restart-safe and never run a task twice):
//! * [`TaskStore::claim_next`] moves one QUEUED task to RUNNING for one owner, atomically: two
//!   replicas claiming at once never get the same task.
//! * A runner holds a task by its lease: [`TaskStore::update_owned`] renews it and only
//!   succeeds while the task is active and still owned by that runner.
//! * [`TaskStore::fail_abandoned`] fails, explicitly and with a reason, active tasks whose
//!   lease ran out (their replica died) or that a restarting replica owned.

use async_trait::async_trait;
use serde_json::Value;

use super::model::{Task, TaskEvent, TaskStatus, Timestamp};

/// Why the task store failed.
#[derive(Debug, thiserror::Error)]
pub enum TaskStoreError {
    #[error("task store {url}: {message}")]
    Open { url: String, message: String },
    #[error("task store migrations: {0}")]
    Migrate(String),
    #[error("task store: {0}")]
    Sql(String),
    #[error("task store: a stored task is not valid JSON ({0}); was it written by a newer warden?")]
    Decode(String),
}

/// What [`TaskStore::insert`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// The task is new and QUEUED.
    Created(Task),
    /// A task with the same idempotency key exists: this one, unchanged.
    Existing(Task),
}

/// What [`TaskStore::cancel`] did.
#[derive(Debug, Clone, PartialEq)]
pub enum CancelOutcome {
    /// It was QUEUED and is now CANCELED.
    Canceled(Task),
    /// It is RUNNING or WAITING_APPROVAL; `cancel_requested` is now set and its runner stops
    /// it.
    Requested(Task),
    /// It had already finished; nothing changed.
    Finished(Task),
}

/// A page query of `GET /v1/tasks`. Newest first.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TaskQuery {
    /// Only these statuses (empty: all).
    pub status: Vec<TaskStatus>,
    /// Only this repository URL (exact).
    pub repo: Option<String>,
    /// Only tasks created at or after this time.
    pub since: Option<Timestamp>,
    /// 1 to 500.
    pub limit: u32,
    /// From a previous page's `next_cursor`.
    pub cursor: Option<String>,
}

impl Default for TaskQuery {
    fn default() -> TaskQuery {
        TaskQuery {
            status: Vec::new(),
            repo: None,
            since: None,
            limit: 50,
            cursor: None,
        }
    }
}

/// One page of tasks.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskPage {
    pub tasks: Vec<Task>,
    /// Pass as `cursor` for the next page; `None` on the last.
    pub next_cursor: Option<String>,
}

#[async_trait]
pub trait TaskStore: Send + Sync + std::fmt::Debug {
    /// Inserts a new QUEUED task and, in the same transaction, its first event (`status`
    /// `{"status": "QUEUED"}`, seq 1, at `created_at`), unless a task with the same
    /// idempotency key exists.
    async fn insert(&self, task: &Task) -> Result<Inserted, TaskStoreError>;

    async fn get(&self, id: &str) -> Result<Option<Task>, TaskStoreError>;

    /// Newest first; an unknown cursor gives an empty page.
    async fn list(&self, query: &TaskQuery) -> Result<TaskPage, TaskStoreError>;

    /// Claims the oldest QUEUED task for `owner`: RUNNING, `owner` set, `started_at` =
    /// `now` (the first time), `attempts` + 1, leased until `lease_until`. Atomic across
    /// replicas sharing the database.
    async fn claim_next(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Task>, TaskStoreError>;

    /// Writes `task` (every field but `cancel_requested`, which only [`TaskStore::cancel`]
    /// sets) and renews its lease, if the stored task is still active and owned by
    /// `task.owner`. Returns `None` when it is not (reaped or finished elsewhere), else the
    /// stored `cancel_requested`.
    async fn update_owned(
        &self,
        task: &Task,
        lease_until: Timestamp,
    ) -> Result<Option<bool>, TaskStoreError>;

    /// [`TaskStore::update_owned`] and, only if that succeeds, [`TaskStore::append_event`],
    /// as one change: a status is never in the task without its event, nor the other way
    /// round. Returns the cancel flag and the event.
    async fn update_owned_logged(
        &self,
        task: &Task,
        lease_until: Timestamp,
        kind: &str,
        data: &Value,
    ) -> Result<Option<(bool, TaskEvent)>, TaskStoreError> {
        let Some(cancel) = self.update_owned(task, lease_until).await? else {
            return Ok(None);
        };
        let event = self
            .append_event(&task.id, task.updated_at, kind, data)
            .await?;
        Ok(Some((cancel, event)))
    }

    /// Cancels a task; `None` when there is no such task.
    async fn cancel(
        &self,
        id: &str,
        now: Timestamp,
        reason: &str,
    ) -> Result<Option<CancelOutcome>, TaskStoreError>;

    /// Fails every active task whose lease ended before `now`, and (when `owner` is given)
    /// every active task that owner held: FAILED, `reason` set, `finished_at` = `now`.
    /// Returns them.
    async fn fail_abandoned(
        &self,
        now: Timestamp,
        owner: Option<&str>,
        reason: &str,
    ) -> Result<Vec<Task>, TaskStoreError>;

    /// Appends to a task's log; returns the event (with its `seq`, 1 for the first).
    async fn append_event(
        &self,
        task_id: &str,
        time: Timestamp,
        kind: &str,
        data: &Value,
    ) -> Result<TaskEvent, TaskStoreError>;

    /// A task's log after `after_seq`, oldest first, at most `limit`.
    async fn events(
        &self,
        task_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<TaskEvent>, TaskStoreError>;

    /// How many tasks are in each status (statuses with none may be left out).
    async fn count_by_status(&self) -> Result<Vec<(TaskStatus, u64)>, TaskStoreError>;
}
