//! Schedules in the task database (`schedules` table of `0002_schedules.sql`), on SQLite or
//! PostgreSQL through the task store's pool.
//!
//! A run is claimed by moving `next_run_ms` from the value the scheduler read to the next one
//! in one `UPDATE ... WHERE next_run_ms = <read value>`: of two replicas reading the same due
//! run, one statement changes the row and the other changes nothing (SQLite serialises
//! writers; Postgres re-checks the condition after the first commit), so one replica fires it.

use crate::tasks::model::{TaskSubmission, Timestamp};
use crate::tasks::store::TaskStoreError;
use crate::tasks::store_sql::{SqlTaskStore, with_pool};

use super::model::MissedPolicy;

/// A schedule as stored: its spec and its state.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRow {
    pub name: String,
    pub cron: String,
    pub timezone: String,
    pub missed: MissedPolicy,
    pub enabled: bool,
    pub task: TaskSubmission,
    pub next_run: Option<Timestamp>,
    pub last_run: Option<Timestamp>,
    pub last_task: Option<String>,
    pub last_error: Option<String>,
    pub created_at: Timestamp,
    pub updated_at: Timestamp,
}

macro_rules! columns {
    () => {
        "name, cron, timezone, missed, enabled, task, next_run_ms, last_run_ms, last_task, \
         last_error, created_ms, updated_ms"
    };
}

type Row = (
    String,
    String,
    String,
    String,
    bool,
    String,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    i64,
    i64,
);

fn sql_error(e: sqlx::Error) -> TaskStoreError {
    TaskStoreError::Sql(e.to_string())
}

fn from_row(row: Row) -> Result<ScheduleRow, TaskStoreError> {
    let (
        name,
        cron,
        timezone,
        missed,
        enabled,
        task,
        next_run_ms,
        last_run_ms,
        last_task,
        last_error,
        created_ms,
        updated_ms,
    ) = row;
    Ok(ScheduleRow {
        missed: MissedPolicy::parse(&missed).map_err(TaskStoreError::Decode)?,
        task: serde_json::from_str(&task).map_err(|e| TaskStoreError::Decode(e.to_string()))?,
        name,
        cron,
        timezone,
        enabled,
        next_run: next_run_ms.map(Timestamp),
        last_run: last_run_ms.map(Timestamp),
        last_task,
        last_error,
        created_at: Timestamp(created_ms),
        updated_at: Timestamp(updated_ms),
    })
}

/// The schedules of the task database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct ScheduleStore {
    db: SqlTaskStore,
}

impl ScheduleStore {
    pub fn new(db: SqlTaskStore) -> ScheduleStore {
        ScheduleStore { db }
    }

    /// Creates or replaces a schedule's spec (cron, zone, policy, enabled, task, next run),
    /// keeping its history (last run, task and error) and creation time. True when created.
    pub async fn put(&self, s: &ScheduleRow) -> Result<bool, TaskStoreError> {
        const INSERT: &str = "INSERT INTO schedules (name, cron, timezone, missed, enabled, task, \
             next_run_ms, created_ms, updated_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8) \
             ON CONFLICT (name) DO NOTHING";
        const UPDATE: &str = "UPDATE schedules SET cron = $2, timezone = $3, missed = $4, \
             enabled = $5, task = $6, next_run_ms = $7, updated_ms = $8 WHERE name = $1";
        let task =
            serde_json::to_string(&s.task).map_err(|e| TaskStoreError::Decode(e.to_string()))?;
        let next = s.next_run.map(Timestamp::millis);
        let now = s.updated_at.millis();
        let run = |sql: &'static str| {
            let task = task.clone();
            async move {
                with_pool!(self.db, pool => {
                    sqlx::query(sql)
                        .bind(&s.name)
                        .bind(&s.cron)
                        .bind(&s.timezone)
                        .bind(s.missed.as_str())
                        .bind(s.enabled)
                        .bind(&task)
                        .bind(next)
                        .bind(now)
                        .execute(pool)
                        .await
                        .map(|r| r.rows_affected())
                })
                .map_err(sql_error)
            }
        };
        if run(INSERT).await? == 1 {
            return Ok(true);
        }
        run(UPDATE).await?;
        Ok(false)
    }

    pub async fn get(&self, name: &str) -> Result<Option<ScheduleRow>, TaskStoreError> {
        const SQL: &str = concat!("SELECT ", columns!(), " FROM schedules WHERE name = $1");
        let row: Option<Row> = with_pool!(self.db, pool => {
            sqlx::query_as(SQL).bind(name).fetch_optional(pool).await
        })
        .map_err(sql_error)?;
        row.map(from_row).transpose()
    }

    /// Every schedule, by name.
    pub async fn list(&self) -> Result<Vec<ScheduleRow>, TaskStoreError> {
        const SQL: &str = concat!("SELECT ", columns!(), " FROM schedules ORDER BY name");
        let rows: Vec<Row> = with_pool!(self.db, pool => {
            sqlx::query_as(SQL).fetch_all(pool).await
        })
        .map_err(sql_error)?;
        rows.into_iter().map(from_row).collect()
    }

    /// True when it existed.
    pub async fn delete(&self, name: &str) -> Result<bool, TaskStoreError> {
        const SQL: &str = "DELETE FROM schedules WHERE name = $1";
        let n = with_pool!(self.db, pool => {
            sqlx::query(SQL).bind(name).execute(pool).await.map(|r| r.rows_affected())
        })
        .map_err(sql_error)?;
        Ok(n > 0)
    }

    /// Pauses (`next_run` null) or resumes (`next_run` given) a schedule. False when there is
    /// no such schedule.
    pub async fn set_enabled(
        &self,
        name: &str,
        enabled: bool,
        next_run: Option<Timestamp>,
        now: Timestamp,
    ) -> Result<bool, TaskStoreError> {
        const SQL: &str = "UPDATE schedules SET enabled = $2, next_run_ms = $3, updated_ms = $4 \
             WHERE name = $1";
        let n = with_pool!(self.db, pool => {
            sqlx::query(SQL)
                .bind(name)
                .bind(enabled)
                .bind(next_run.map(Timestamp::millis))
                .bind(now.millis())
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })
        .map_err(sql_error)?;
        Ok(n > 0)
    }

    /// Enabled schedules whose next run is at or before `now`, earliest first (at most 100).
    pub async fn due(&self, now: Timestamp) -> Result<Vec<ScheduleRow>, TaskStoreError> {
        const SQL: &str = concat!(
            "SELECT ",
            columns!(),
            " FROM schedules WHERE enabled AND next_run_ms IS NOT NULL AND next_run_ms <= $1 \
             ORDER BY next_run_ms, name LIMIT 100"
        );
        let rows: Vec<Row> = with_pool!(self.db, pool => {
            sqlx::query_as(SQL).bind(now.millis()).fetch_all(pool).await
        })
        .map_err(sql_error)?;
        rows.into_iter().map(from_row).collect()
    }

    /// The earliest next run of the enabled schedules.
    pub async fn earliest(&self) -> Result<Option<Timestamp>, TaskStoreError> {
        const SQL: &str = "SELECT MIN(next_run_ms) FROM schedules WHERE enabled";
        let min: Option<i64> = with_pool!(self.db, pool => {
            sqlx::query_scalar(SQL).fetch_one(pool).await
        })
        .map_err(sql_error)?;
        Ok(min.map(Timestamp))
    }

    /// Claims the run due at `due`: moves the next run to `next` (and the last run to `fired`
    /// when it files a task) if the next run is still `due`. True for the one claimer that
    /// changed it; false when another replica did, or the schedule was paused, replaced or
    /// deleted meanwhile.
    pub async fn claim(
        &self,
        name: &str,
        due: Timestamp,
        next: Option<Timestamp>,
        fired: Option<Timestamp>,
    ) -> Result<bool, TaskStoreError> {
        const SQL: &str = "UPDATE schedules SET next_run_ms = $3, \
             last_run_ms = COALESCE($4, last_run_ms) \
             WHERE name = $1 AND enabled AND next_run_ms = $2";
        let n = with_pool!(self.db, pool => {
            sqlx::query(SQL)
                .bind(name)
                .bind(due.millis())
                .bind(next.map(Timestamp::millis))
                .bind(fired.map(Timestamp::millis))
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })
        .map_err(sql_error)?;
        Ok(n == 1)
    }

    /// Records what the run of `fired` did: the task it filed, or why it filed none.
    pub async fn record(
        &self,
        name: &str,
        fired: Timestamp,
        task: Option<&str>,
        error: Option<&str>,
    ) -> Result<(), TaskStoreError> {
        const SQL: &str = "UPDATE schedules SET last_run_ms = $2, last_task = $3, last_error = $4 \
             WHERE name = $1 AND (last_run_ms IS NULL OR last_run_ms <= $2)";
        with_pool!(self.db, pool => {
            sqlx::query(SQL)
                .bind(name)
                .bind(fired.millis())
                .bind(task)
                .bind(error)
                .execute(pool)
                .await
                .map(|_| ())
        })
        .map_err(sql_error)
    }
}
