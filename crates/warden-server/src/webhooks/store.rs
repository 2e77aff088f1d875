//! Webhook deliveries in the task database (`migrations_tasks/0003_webhooks.sql`), on SQLite
//! or PostgreSQL through [`with_pool!`].
//!
//! A delivery that passed its source's authentication first [`DeliveryStore::claim`]s its
//! id: one `INSERT ... ON CONFLICT DO NOTHING` against the unique (source, claimed_id), so of
//! two concurrent deliveries with one id exactly one goes on, on either database. When the
//! delivery ends accepted the claim stays (a later delivery of the id is a replay); when it
//! ends ignored or rejected the claim is released. Deliveries that never reach the claim
//! (bad signature, bad body) are [`DeliveryStore::record`]ed without one, and only the newest
//! [`KEEP_UNCLAIMED`] of each such outcome are kept, so a flood of unauthenticated requests
//! cannot fill the disk.

use serde::{Deserialize, Serialize};

use crate::tasks::model::Timestamp;
use crate::tasks::store::TaskStoreError;
use crate::tasks::store_sql::{SqlTaskStore, with_pool};

/// Rejected, ignored and duplicate deliveries kept, per outcome.
pub const KEEP_UNCLAIMED: i64 = 1000;

/// The most deliveries a listing returns.
pub const MAX_LIST: u32 = 1000;

/// What became of a delivery.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
pub enum Outcome {
    /// Authenticated, and at least one rule filed a task.
    Accepted,
    /// Authenticated, and no rule applied (or a GitHub ping).
    Ignored,
    /// Refused: bad signature or secret, bad body, a template naming a missing field...
    Rejected,
    /// Its delivery id had been accepted already: a replay.
    Duplicate,
}

impl Outcome {
    pub const NAMES: &'static str = "accepted, ignored, rejected, duplicate";

    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Accepted => "accepted",
            Outcome::Ignored => "ignored",
            Outcome::Rejected => "rejected",
            Outcome::Duplicate => "duplicate",
        }
    }

    pub fn parse(s: &str) -> Option<Outcome> {
        [
            Outcome::Accepted,
            Outcome::Ignored,
            Outcome::Rejected,
            Outcome::Duplicate,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }
}

/// One delivery as listed by `GET /v1/webhooks/deliveries`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryRecord {
    /// Ours: `whd-...`.
    pub id: String,
    /// github, alertmanager, pagerduty or generic:NAME.
    pub source: String,
    /// The sender's delivery id, when there was one.
    pub delivery_id: Option<String>,
    /// e.g. `issue_comment.created`, `firing`, `incident.triggered`.
    pub event: Option<String>,
    #[schema(value_type = String, format = DateTime)]
    pub received_at: Timestamp,
    pub outcome: Outcome,
    /// Why it was rejected or ignored.
    pub reason: Option<String>,
    /// The HTTP status the sender got.
    pub status_code: u16,
    /// The tasks it filed.
    pub task_ids: Vec<String>,
}

/// A new delivery record id: `whd-` and 16 lower-case hex digits.
pub fn new_delivery_id() -> String {
    let mut bytes = [0u8; 8];
    if getrandom::fill(&mut bytes).is_err() {
        bytes = (Timestamp::now().0 as u64).to_le_bytes();
    }
    format!("whd-{}", hex::encode(bytes))
}

/// The deliveries table, over the task database. Cheap to clone.
#[derive(Debug, Clone)]
pub struct DeliveryStore {
    db: SqlTaskStore,
}

fn sql_error(e: sqlx::Error) -> TaskStoreError {
    TaskStoreError::Sql(e.to_string())
}

/// Reasons are cut to this many bytes.
const MAX_REASON: usize = 2000;

fn cut(reason: Option<&str>) -> Option<String> {
    reason.map(|r| {
        if r.len() <= MAX_REASON {
            r.to_string()
        } else {
            let mut end = MAX_REASON;
            while !r.is_char_boundary(end) {
                end -= 1;
            }
            format!("{}…", &r[..end])
        }
    })
}

type Row = (
    String,
    String,
    Option<String>,
    Option<String>,
    i64,
    String,
    Option<String>,
    i64,
    String,
);

const COLUMNS: &str =
    "id, source, delivery_id, event, received_ms, outcome, reason, status_code, task_ids";

fn from_row(r: Row) -> Result<DeliveryRecord, TaskStoreError> {
    Ok(DeliveryRecord {
        id: r.0,
        source: r.1,
        delivery_id: r.2,
        event: r.3,
        received_at: Timestamp(r.4),
        outcome: Outcome::parse(&r.5)
            .ok_or_else(|| TaskStoreError::Decode(format!("delivery outcome `{}`", r.5)))?,
        reason: r.6,
        status_code: u16::try_from(r.7).unwrap_or(0),
        task_ids: serde_json::from_str(&r.8).map_err(|e| TaskStoreError::Decode(e.to_string()))?,
    })
}

/// How long a claim may stay "being handled" before it counts as left by a server that
/// stopped (handling a delivery takes well under a second).
pub const STALE_CLAIM_MS: i64 = 5 * 60 * 1000;

impl DeliveryStore {
    pub fn new(db: SqlTaskStore) -> DeliveryStore {
        DeliveryStore { db }
    }

    /// Claims `delivery_id` of `source` for a delivery received at `now`: the new record's id,
    /// or `None` when another delivery holds the id (accepted before, or being handled).
    /// A claim still "being handled" after [`STALE_CLAIM_MS`] was left by a server that
    /// stopped half-way (handling takes a moment): it is taken over, its record's id
    /// returned, so a redelivery is handled instead of refused as a replay. The tasks it may
    /// have filed come back from their idempotency keys; none is filed twice.
    pub async fn claim(
        &self,
        source: &str,
        delivery_id: &str,
        event: &str,
        now: Timestamp,
    ) -> Result<Option<String>, TaskStoreError> {
        const SQL: &str = "INSERT INTO webhook_deliveries \
             (id, source, delivery_id, claimed_id, event, received_ms, outcome, reason, status_code, task_ids) \
             VALUES ($1, $2, $3, $3, $4, $5, 'accepted', 'being handled', 202, '[]') \
             ON CONFLICT DO NOTHING";
        let id = new_delivery_id();
        let n = with_pool!(self.db, pool => {
            sqlx::query(SQL)
                .bind(&id)
                .bind(source)
                .bind(delivery_id)
                .bind(event)
                .bind(now.millis())
                .execute(pool)
                .await
                .map(|r| r.rows_affected())
        })
        .map_err(sql_error)?;
        if n == 1 {
            return Ok(Some(id));
        }
        // One statement: of two deliveries racing to take over, the second finds the row
        // fresh again.
        const TAKE_OVER: &str = "UPDATE webhook_deliveries SET received_ms = $3, event = $4 \
             WHERE source = $1 AND claimed_id = $2 AND outcome = 'accepted' \
             AND reason = 'being handled' AND received_ms < $5";
        const FIND: &str =
            "SELECT id FROM webhook_deliveries WHERE source = $1 AND claimed_id = $2";
        let stale_before = now.millis() - STALE_CLAIM_MS;
        let taken = with_pool!(self.db, pool => async {
            let n = sqlx::query(TAKE_OVER)
                .bind(source)
                .bind(delivery_id)
                .bind(now.millis())
                .bind(event)
                .bind(stale_before)
                .execute(pool)
                .await?
                .rows_affected();
            if n != 1 {
                return Ok(None);
            }
            sqlx::query_scalar::<_, String>(FIND)
                .bind(source)
                .bind(delivery_id)
                .fetch_optional(pool)
                .await
        }
        .await)
        .map_err(sql_error)?;
        if let Some(id) = &taken {
            tracing::warn!(source, delivery_id, record = %id,
                "took over a webhook delivery a stopped server left half-handled");
        }
        Ok(taken)
    }

    /// Ends a claimed delivery: its outcome, reason, status and tasks. The claim is kept for
    /// an accepted delivery and released otherwise.
    pub async fn finish(
        &self,
        id: &str,
        outcome: Outcome,
        reason: Option<&str>,
        status_code: u16,
        task_ids: &[String],
    ) -> Result<(), TaskStoreError> {
        const SQL: &str = "UPDATE webhook_deliveries SET outcome = $2, reason = $3, \
             status_code = $4, task_ids = $5, \
             claimed_id = CASE WHEN $2 = 'accepted' THEN claimed_id ELSE NULL END \
             WHERE id = $1";
        let tasks = serde_json::to_string(task_ids).unwrap_or_else(|_| "[]".into());
        with_pool!(self.db, pool => {
            sqlx::query(SQL)
                .bind(id)
                .bind(outcome.as_str())
                .bind(cut(reason))
                .bind(i64::from(status_code))
                .bind(&tasks)
                .execute(pool)
                .await
                .map(|_| ())
        })
        .map_err(sql_error)?;
        if outcome != Outcome::Accepted {
            self.prune(outcome).await?;
        }
        Ok(())
    }

    /// Keeps a delivery that never held a claim (rejected before it, or a duplicate), then
    /// drops the oldest of its outcome beyond [`KEEP_UNCLAIMED`].
    pub async fn record(&self, rec: &DeliveryRecord) -> Result<(), TaskStoreError> {
        const SQL: &str = "INSERT INTO webhook_deliveries \
             (id, source, delivery_id, claimed_id, event, received_ms, outcome, reason, status_code, task_ids) \
             VALUES ($1, $2, $3, NULL, $4, $5, $6, $7, $8, $9)";
        let tasks = serde_json::to_string(&rec.task_ids).unwrap_or_else(|_| "[]".into());
        with_pool!(self.db, pool => {
            sqlx::query(SQL)
                .bind(&rec.id)
                .bind(&rec.source)
                .bind(rec.delivery_id.as_deref())
                .bind(rec.event.as_deref())
                .bind(rec.received_at.millis())
                .bind(rec.outcome.as_str())
                .bind(cut(rec.reason.as_deref()))
                .bind(i64::from(rec.status_code))
                .bind(&tasks)
                .execute(pool)
                .await
                .map(|_| ())
        })
        .map_err(sql_error)?;
        self.prune(rec.outcome).await
    }

    /// Drops the oldest unclaimed deliveries of `outcome` beyond [`KEEP_UNCLAIMED`].
    async fn prune(&self, outcome: Outcome) -> Result<(), TaskStoreError> {
        const SQL: &str = "DELETE FROM webhook_deliveries WHERE outcome = $1 \
             AND claimed_id IS NULL AND id NOT IN (SELECT id FROM webhook_deliveries \
             WHERE outcome = $1 AND claimed_id IS NULL \
             ORDER BY received_ms DESC, id DESC LIMIT $2)";
        with_pool!(self.db, pool => {
            sqlx::query(SQL)
                .bind(outcome.as_str())
                .bind(KEEP_UNCLAIMED)
                .execute(pool)
                .await
                .map(|_| ())
        })
        .map_err(sql_error)?;
        Ok(())
    }

    /// The newest deliveries first, at most `limit`, of one source and outcome when given.
    pub async fn list(
        &self,
        source: Option<&str>,
        outcome: Option<Outcome>,
        limit: u32,
    ) -> Result<Vec<DeliveryRecord>, TaskStoreError> {
        let sql = format!(
            "SELECT {COLUMNS} FROM webhook_deliveries \
             WHERE ($1 IS NULL OR source = $1) AND ($2 IS NULL OR outcome = $2) \
             ORDER BY received_ms DESC, id DESC LIMIT $3"
        );
        let limit = i64::from(limit.clamp(1, MAX_LIST));
        let outcome = outcome.map(Outcome::as_str);
        let rows: Vec<Row> = with_pool!(self.db, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
                .bind(source)
                .bind(outcome)
                .bind(limit)
                .fetch_all(pool)
                .await
        })
        .map_err(sql_error)?;
        rows.into_iter().map(from_row).collect()
    }

    /// One delivery by our id.
    pub async fn get(&self, id: &str) -> Result<Option<DeliveryRecord>, TaskStoreError> {
        let sql = format!("SELECT {COLUMNS} FROM webhook_deliveries WHERE id = $1");
        let row: Option<Row> = with_pool!(self.db, pool => {
            sqlx::query_as(sqlx::AssertSqlSafe(sql.clone()))
                .bind(id)
                .fetch_optional(pool)
                .await
        })
        .map_err(sql_error)?;
        row.map(from_row).transpose()
    }
}
