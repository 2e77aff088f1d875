//! The [`TaskStore`] on SQL: SQLite by default (`<data>/tasks.db`), PostgreSQL when several
//! `warden serve` replicas share one queue (`--database postgres://...`).
//!
//! One set of migrations (`crates/warden-server/migrations_tasks/`) and one text per
//! statement serve both databases: the SQL keeps to what both understand (`$1` placeholders,
//! which SQLite reads as numbered parameters; `ON CONFLICT ... DO NOTHING`; `RETURNING`),
//! and the only statement that differs is the claim, which takes `FOR UPDATE SKIP LOCKED` on
//! Postgres.
//!
//! Two typed pools behind an enum rather than sqlx's `any` driver: `any` would need its own
//! feature and driver registration at run time, maps values through its own narrower type
//! set, and hides which database a statement runs on, while the queue needs to know (the
//! claim). The [`with_pool!`] macro keeps each statement written once.
//!
//! A task is a row with a column for every field the SQL reads or changes (id, status, repo,
//! times, idempotency key, owner, lease, attempts, reason, cancel flag) and `record`, the
//! rest of the [`Task`] as JSON. A field lives in its column only, never in both, so claiming,
//! cancelling and reaping are single `UPDATE` statements on either database and the JSON
//! cannot disagree with the columns; a read merges the columns back into the JSON.
//!
//! Concurrency: a claim is one `UPDATE ... WHERE id = (SELECT ... LIMIT 1) AND status =
//! 'QUEUED' RETURNING`. SQLite runs a writing statement as one write transaction, holding the
//! database's write lock from its first read, so two claims are serialised; Postgres locks
//! the chosen row in the subquery and skips rows other claimers hold, so two claims choose
//! different tasks. An event's `seq` comes from the task row's `last_event_seq`, incremented
//! in the transaction that inserts the event (the row lock orders concurrent appends).

use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use serde_json::{Map, Value};
use sqlx::AssertSqlSafe;
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};

use super::model::{Task, TaskEvent, TaskStatus, Timestamp};
use super::store::{CancelOutcome, Inserted, TaskPage, TaskQuery, TaskStore, TaskStoreError};

/// The migrations, in order. Add a file under `migrations_tasks/` and a line here; the same
/// file runs on SQLite and Postgres, so write it in SQL both understand.
const MIGRATIONS: &[(i64, &str, &str)] = &[
    (
        1,
        "tasks",
        include_str!("../../migrations_tasks/0001_tasks.sql"),
    ),
    (
        2,
        "schedules",
        include_str!("../../migrations_tasks/0002_schedules.sql"),
    ),
    (
        3,
        "webhooks",
        include_str!("../../migrations_tasks/0003_webhooks.sql"),
    ),
    (
        4,
        "a2a",
        include_str!("../../migrations_tasks/0004_a2a.sql"),
    ),
];

/// Where sqlx records the applied task migrations. The default SQLite database is a file of
/// its own, `<data>/tasks.db`, apart from the sandbox store's `warden.db`: the queue's writes
/// (claims, lease renewals, every log line) then never wait on the sandbox store's lock, and
/// either file can be moved or deleted alone. The table has its own name as well (sqlx 0.9's
/// `Migrator::dangerous_set_table_name`) because a database can still be shared: a
/// Postgres database that holds other applications' tables, or `--database` pointed at
/// `warden.db`, whose `_sqlx_migrations` already holds the sandbox store's version 1.
const MIGRATIONS_TABLE: &str = "_warden_task_migrations";

/// The default SQLite file, under the data directory.
pub const DEFAULT_SQLITE_FILE: &str = "tasks.db";

/// The most tasks a page holds.
pub const MAX_PAGE: u32 = 500;

/// How long a SQLite statement waits for another writer's lock.
const SQLITE_BUSY_TIMEOUT: Duration = Duration::from_secs(5);

/// Connections per pool. SQLite has one writer at a time whatever the pool; a PostgreSQL
/// pool is sized from the runner's slots ([`postgres_connections`]).
const SQLITE_CONNECTIONS: u32 = 4;

/// The PostgreSQL pool for a runner of `slots` task slots: one connection per slot (each
/// running task's log writer commits every step and line) and 6 for the API, the dispatcher,
/// the reaper, the scheduler, webhooks and A2A, so that reads do not queue behind the
/// writers' flushes; at least 8, at most 64.
pub fn postgres_connections(slots: usize) -> u32 {
    (slots.min(1000) as u32 + 6).clamp(8, 64)
}

/// The runner's default slots (`warden serve --task-concurrency`), for [`SqlTaskStore::open`].
const DEFAULT_SLOTS: usize = 10;

/// How long opening a Postgres store waits for a connection.
const POSTGRES_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// The accepted forms of `--database`, for errors.
const ACCEPTED_FORMS: &str = "give a file path or sqlite://PATH (SQLite; the default is <data>/tasks.db), \
     sqlite::memory:, or postgres://USER:PASSWORD@HOST:PORT/DATABASE (postgresql:// too)";

/// A field of the task's JSON that lives in a column of its own; see the module comment.
const COLUMN_FIELDS: [&str; 12] = [
    "id",
    "status",
    "repo",
    "created_at",
    "updated_at",
    "started_at",
    "finished_at",
    "idempotency_key",
    "owner",
    "attempts",
    "reason",
    "cancel_requested",
];

/// The columns a task is read from, in the order of [`TaskRow`].
macro_rules! task_columns {
    () => {
        "id, status, repo, created_ms, updated_ms, started_ms, finished_ms, idempotency_key, \
         owner, attempts, reason, cancel_requested, record"
    };
}

/// A task as selected with [`task_columns!`].
type TaskRow = (
    String,
    String,
    String,
    i64,
    i64,
    Option<i64>,
    Option<i64>,
    Option<String>,
    Option<String>,
    i64,
    Option<String>,
    bool,
    String,
);

/// The claim, but for the lock clause of its subquery.
macro_rules! claim_sql {
    ($lock:literal) => {
        concat!(
            "UPDATE tasks SET status = 'RUNNING', owner = $1, ",
            "started_ms = COALESCE(started_ms, $2), updated_ms = $2, ",
            "attempts = attempts + 1, lease_until_ms = $3 ",
            "WHERE id = (SELECT id FROM tasks WHERE status = 'QUEUED' ",
            "ORDER BY created_ms, id LIMIT 1",
            $lock,
            ") AND status = 'QUEUED' RETURNING ",
            task_columns!()
        )
    };
}

const CLAIM_SQLITE: &str = claim_sql!("");
const CLAIM_POSTGRES: &str = claim_sql!(" FOR UPDATE SKIP LOCKED");

/// `status IN (...)` of the active statuses.
/// The write of a task its runner owns (`update_owned` and `update_owned_logged`): every
/// column but the cancel flag, while the task is active and still the owner's. Binds $1 id,
/// $2 status, $3 repo, $4..$7 times, $8 idempotency key, $9 attempts, $10 reason, $11
/// record, $12 lease, $13 owner.
macro_rules! owned_update {
    ($extra_set:literal, $returning:literal) => {
        concat!(
            "UPDATE tasks SET status = $2, repo = $3, created_ms = $4, updated_ms = $5, ",
            "started_ms = $6, finished_ms = $7, idempotency_key = $8, attempts = $9, ",
            "reason = $10, record = $11, lease_until_ms = $12",
            $extra_set,
            " WHERE id = $1 AND owner = $13 AND ",
            active!(),
            " RETURNING ",
            $returning
        )
    };
}

/// Binds the parameters of an [`owned_update!`] statement, `$1` to `$13`, in its order.
macro_rules! bind_owned {
    ($query:expr, $task:expr, $record:expr, $lease_until:expr, $owner:expr) => {
        $query
            .bind(&$task.id)
            .bind($task.status.as_str())
            .bind(&$task.spec.repo)
            .bind($task.created_at.millis())
            .bind($task.updated_at.millis())
            .bind($task.started_at.map(Timestamp::millis))
            .bind($task.finished_at.map(Timestamp::millis))
            .bind($task.spec.idempotency_key.as_deref())
            .bind(i64::from($task.attempts))
            .bind($task.reason.as_deref())
            .bind($record)
            .bind($lease_until.millis())
            .bind($owner)
    };
}

/// One event of a task's log, its seq given.
const INSERT_EVENT: &str = "INSERT INTO task_events (task_id, seq, time_ms, kind, data) \
     VALUES ($1, $2, $3, $4, $5)";

macro_rules! active {
    () => {
        "status IN ('RUNNING', 'WAITING_APPROVAL')"
    };
}

/// Runs `$body` once per backend with `$pool` bound to that backend's typed pool: the
/// statements are the same text for both, only the driver differs. `$store` is a
/// [`SqlTaskStore`]; other stores sharing its database (schedules, webhook deliveries, A2A)
/// use it too.
macro_rules! with_pool {
    ($store:expr, $pool:ident => $body:expr) => {
        match $store.pool() {
            $crate::tasks::store_sql::Pool::Sqlite($pool) => $body,
            $crate::tasks::store_sql::Pool::Postgres($pool) => $body,
        }
    };
}
pub(crate) use with_pool;

/// The database's connection pool, one variant per backend.
#[derive(Clone)]
pub(crate) enum Pool {
    Sqlite(SqlitePool),
    Postgres(PgPool),
}

/// The task store on SQLite or Postgres. Cheap to clone (a pool handle).
#[derive(Clone)]
pub struct SqlTaskStore {
    pool: Pool,
    /// The database, redacted: safe to log.
    url: String,
}

impl fmt::Debug for SqlTaskStore {
    // By hand: a pool's options are not for logs, the redacted URL is.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqlTaskStore")
            .field("backend", &self.backend())
            .field("url", &self.url)
            .finish()
    }
}

/// Opens the task store `--database` names (`None`: SQLite in `<data_dir>/tasks.db`) and
/// runs its migrations.
pub async fn open_task_store(
    database: Option<&str>,
    data_dir: &Path,
) -> Result<Arc<dyn TaskStore>, TaskStoreError> {
    Ok(Arc::new(SqlTaskStore::open(database, data_dir).await?))
}

/// Which database a `--database` value names.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Target {
    /// A file path (the default, or a value without a scheme).
    SqliteFile(PathBuf),
    /// A `sqlite:` URL, read by sqlx (which honours its `?mode=` and other parameters).
    SqliteUrl(String),
    /// `sqlite::memory:`.
    SqliteMemory,
    /// A `postgres://` or `postgresql://` URL.
    Postgres(String),
}

/// Reads a `--database` value; the error names the accepted forms. Pure.
fn target(database: Option<&str>, data_dir: &Path) -> Result<Target, String> {
    let Some(database) = database.map(str::trim).filter(|d| !d.is_empty()) else {
        return Ok(Target::SqliteFile(data_dir.join(DEFAULT_SQLITE_FILE)));
    };
    if let Some(rest) = database.strip_prefix("sqlite:") {
        if rest.trim_start_matches('/').is_empty() {
            return Err(format!("no file named; {ACCEPTED_FORMS}"));
        }
        if rest.trim_start_matches("//").starts_with(":memory:") {
            return Ok(Target::SqliteMemory);
        }
        return Ok(Target::SqliteUrl(database.to_owned()));
    }
    match scheme(database) {
        Some(s) if s.eq_ignore_ascii_case("postgres") || s.eq_ignore_ascii_case("postgresql") => {
            Ok(Target::Postgres(database.to_owned()))
        }
        Some(s) => Err(format!(
            "warden keeps no tasks in a `{s}` database; {ACCEPTED_FORMS}"
        )),
        None => Ok(Target::SqliteFile(PathBuf::from(database))),
    }
}

/// The scheme of a `scheme://...` URL.
fn scheme(url: &str) -> Option<&str> {
    let (scheme, _) = url.split_once("://")?;
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c));
    valid.then_some(scheme)
}

/// `url` with its password (in the user information, or a `password` query parameter)
/// replaced by `***`: the form to log or put in an error. A value that is not quite a URL
/// is redacted generously rather than not at all.
pub fn redacted_url(url: &str) -> String {
    let (head, rest) = match url.split_once("://") {
        Some((scheme, rest)) => (format!("{scheme}://"), rest),
        None => (String::new(), url),
    };
    // The user information ends at the last `@`: a password with an unescaped `/`, `?` or
    // `@` is still hidden whole.
    let (userinfo, rest) = match rest.rsplit_once('@') {
        Some((userinfo, rest)) => (Some(userinfo), rest),
        None => (None, rest),
    };
    let mut out = head;
    if let Some(userinfo) = userinfo {
        match userinfo.split_once(':') {
            Some((user, _)) => out.push_str(&format!("{user}:***@")),
            None => out.push_str(&format!("{userinfo}@")),
        }
    }
    let (base, query) = match rest.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (rest, None),
    };
    out.push_str(base);
    if let Some(query) = query {
        let params: Vec<String> = query
            .split('&')
            .map(|param| match param.split_once('=') {
                Some((key, _)) if key.to_ascii_lowercase().contains("password") => {
                    format!("{key}=***")
                }
                _ => param.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&params.join("&"));
    }
    out
}

impl SqlTaskStore {
    /// Opens the store `database` names (see [`open_task_store`]) and runs its migrations,
    /// sized for a runner of the default 10 slots.
    pub async fn open(
        database: Option<&str>,
        data_dir: &Path,
    ) -> Result<SqlTaskStore, TaskStoreError> {
        SqlTaskStore::open_for(database, data_dir, DEFAULT_SLOTS).await
    }

    /// [`SqlTaskStore::open`] for a runner of `slots` task slots (the PostgreSQL pool's size,
    /// [`postgres_connections`]).
    pub async fn open_for(
        database: Option<&str>,
        data_dir: &Path,
        slots: usize,
    ) -> Result<SqlTaskStore, TaskStoreError> {
        let target = target(database, data_dir).map_err(|message| TaskStoreError::Open {
            url: database.map(redacted_url).unwrap_or_default(),
            message,
        })?;
        let store = match target {
            Target::SqliteMemory => return SqlTaskStore::sqlite_in_memory().await,
            Target::SqliteFile(path) => {
                let url = format!("sqlite://{}", path.display());
                if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
                    tokio::fs::create_dir_all(parent)
                        .await
                        .map_err(|e| TaskStoreError::Open {
                            url: url.clone(),
                            message: format!("cannot create {}: {e}", parent.display()),
                        })?;
                }
                let opts = SqliteConnectOptions::new().filename(&path);
                SqlTaskStore::open_sqlite(opts, url).await?
            }
            Target::SqliteUrl(url) => {
                let opts =
                    SqliteConnectOptions::from_str(&url).map_err(|e| TaskStoreError::Open {
                        url: redacted_url(&url),
                        message: e.to_string(),
                    })?;
                SqlTaskStore::open_sqlite(opts, redacted_url(&url)).await?
            }
            Target::Postgres(url) => {
                SqlTaskStore::open_postgres(&url, postgres_connections(slots)).await?
            }
        };
        store.migrate().await?;
        tracing::info!(database = %store.url, "task store open");
        Ok(store)
    }

    async fn open_sqlite(
        opts: SqliteConnectOptions,
        url: String,
    ) -> Result<SqlTaskStore, TaskStoreError> {
        let opts = opts
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(SQLITE_BUSY_TIMEOUT);
        let pool = SqlitePoolOptions::new()
            .max_connections(SQLITE_CONNECTIONS)
            .connect_with(opts)
            .await
            .map_err(|e| TaskStoreError::Open {
                url: url.clone(),
                message: e.to_string(),
            })?;
        Ok(SqlTaskStore {
            pool: Pool::Sqlite(pool),
            url,
        })
    }

    async fn open_postgres(url: &str, connections: u32) -> Result<SqlTaskStore, TaskStoreError> {
        let redacted = redacted_url(url);
        let open_error = |e: sqlx::Error| TaskStoreError::Open {
            url: redacted.clone(),
            message: e.to_string(),
        };
        let opts = PgConnectOptions::from_str(url)
            .map_err(open_error)?
            .application_name("warden");
        let pool = PgPoolOptions::new()
            .max_connections(connections)
            .acquire_timeout(POSTGRES_CONNECT_TIMEOUT)
            .connect_with(opts)
            .await
            .map_err(open_error)?;
        Ok(SqlTaskStore {
            pool: Pool::Postgres(pool),
            url: redacted,
        })
    }

    /// An in-memory SQLite store, migrated (tests).
    pub async fn sqlite_in_memory() -> Result<SqlTaskStore, TaskStoreError> {
        let url = "sqlite::memory:".to_owned();
        let open_error = |e: sqlx::Error| TaskStoreError::Open {
            url: url.clone(),
            message: e.to_string(),
        };
        let opts = SqliteConnectOptions::from_str(&url)
            .map_err(open_error)?
            .foreign_keys(true);
        // One connection, kept for the pool's life: the database lives as long as it does.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .idle_timeout(None)
            .max_lifetime(None)
            .connect_with(opts)
            .await
            .map_err(open_error)?;
        let store = SqlTaskStore {
            pool: Pool::Sqlite(pool),
            url,
        };
        store.migrate().await?;
        Ok(store)
    }

    /// Applies the migrations not applied yet (none: nothing happens). [`SqlTaskStore::open`]
    /// runs it; on Postgres, sqlx holds an advisory lock meanwhile, so replicas starting
    /// together do not race.
    pub async fn migrate(&self) -> Result<(), TaskStoreError> {
        let mut migrator = crate::store::embedded_migrator(MIGRATIONS);
        migrator.dangerous_set_table_name(MIGRATIONS_TABLE);
        with_pool!(self, pool => migrator.run(pool).await)
            .map_err(|e| TaskStoreError::Migrate(e.to_string()))
    }

    /// The connection pool, for the stores that share this database (use [`with_pool!`]).
    pub(crate) fn pool(&self) -> &Pool {
        &self.pool
    }

    /// `sqlite` or `postgres`.
    pub fn backend(&self) -> &'static str {
        match self.pool {
            Pool::Sqlite(_) => "sqlite",
            Pool::Postgres(_) => "postgres",
        }
    }

    /// The database, with any password redacted.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// Closes the pool (checkpointing SQLite's WAL).
    pub async fn close(&self) {
        with_pool!(self, pool => pool.close().await)
    }

    async fn fetch_task(&self, id: &str) -> Result<Option<Task>, TaskStoreError> {
        const SQL: &str = concat!("SELECT ", task_columns!(), " FROM tasks WHERE id = $1");
        let row: Option<TaskRow> = with_pool!(self, pool => {
            sqlx::query_as(SQL).bind(id).fetch_optional(pool).await
        })
        .map_err(sql_error)?;
        row.map(task_from_row).transpose()
    }
}

fn sql_error(e: sqlx::Error) -> TaskStoreError {
    TaskStoreError::Sql(e.to_string())
}

fn decode_error(e: serde_json::Error) -> TaskStoreError {
    TaskStoreError::Decode(e.to_string())
}

fn timestamp(ms: i64) -> Value {
    Value::String(Timestamp(ms).rfc3339())
}

/// The task from its row: the JSON record with the columns merged back in.
fn task_from_row(row: TaskRow) -> Result<Task, TaskStoreError> {
    let (
        id,
        status,
        repo,
        created_ms,
        updated_ms,
        started_ms,
        finished_ms,
        idempotency_key,
        owner,
        attempts,
        reason,
        cancel_requested,
        record,
    ) = row;
    let mut fields: Map<String, Value> = serde_json::from_str(&record).map_err(decode_error)?;
    let columns = [
        ("id", Value::String(id)),
        ("status", Value::String(status)),
        ("repo", Value::String(repo)),
        ("created_at", timestamp(created_ms)),
        ("updated_at", timestamp(updated_ms)),
        ("started_at", started_ms.map_or(Value::Null, timestamp)),
        ("finished_at", finished_ms.map_or(Value::Null, timestamp)),
        (
            "idempotency_key",
            idempotency_key.map_or(Value::Null, Value::String),
        ),
        ("owner", owner.map_or(Value::Null, Value::String)),
        ("attempts", Value::from(attempts)),
        ("reason", reason.map_or(Value::Null, Value::String)),
        ("cancel_requested", Value::Bool(cancel_requested)),
    ];
    for (field, value) in columns {
        fields.insert(field.to_owned(), value);
    }
    serde_json::from_value(Value::Object(fields)).map_err(decode_error)
}

/// The JSON record of a task: its fields without those that have a column.
fn record_of(task: &Task) -> Result<String, TaskStoreError> {
    let mut value = serde_json::to_value(task).map_err(decode_error)?;
    if let Some(fields) = value.as_object_mut() {
        for field in COLUMN_FIELDS {
            fields.remove(field);
        }
    }
    Ok(value.to_string())
}

/// A page position: the last task of the previous page, as `<created_ms>:<id>`.
fn encode_cursor(task: &Task) -> String {
    format!("{}:{}", task.created_at.millis(), task.id)
}

fn decode_cursor(cursor: &str) -> Option<(i64, &str)> {
    let (ms, id) = cursor.split_once(':')?;
    let ms = ms.parse().ok()?;
    (!id.is_empty()).then_some((ms, id))
}

/// A value bound to a statement built at run time.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Arg {
    Text(String),
    Int(i64),
}

/// The page query of [`TaskStore::list`]: SQL with numbered placeholders, and their values.
/// Asks for one task more than a page to learn whether another page follows. Pure.
fn list_statement(query: &TaskQuery, after: Option<(i64, &str)>, limit: u32) -> (String, Vec<Arg>) {
    let mut args = Vec::new();
    let mut placeholder = |arg: Arg| {
        args.push(arg);
        format!("${}", args.len())
    };
    let mut conditions = Vec::new();
    let mut statuses = query.status.clone();
    statuses.sort();
    statuses.dedup();
    if !statuses.is_empty() {
        let list: Vec<String> = statuses
            .iter()
            .map(|s| placeholder(Arg::Text(s.as_str().to_owned())))
            .collect();
        conditions.push(format!("status IN ({})", list.join(", ")));
    }
    if let Some(repo) = &query.repo {
        conditions.push(format!("repo = {}", placeholder(Arg::Text(repo.clone()))));
    }
    if let Some(since) = query.since {
        conditions.push(format!(
            "created_ms >= {}",
            placeholder(Arg::Int(since.millis()))
        ));
    }
    if let Some((ms, id)) = after {
        let ms = placeholder(Arg::Int(ms));
        let id = placeholder(Arg::Text(id.to_owned()));
        conditions.push(format!(
            "(created_ms < {ms} OR (created_ms = {ms} AND id < {id}))"
        ));
    }
    let mut sql = concat!("SELECT ", task_columns!(), " FROM tasks").to_owned();
    if !conditions.is_empty() {
        sql.push_str(" WHERE ");
        sql.push_str(&conditions.join(" AND "));
    }
    let limit = placeholder(Arg::Int(i64::from(limit) + 1));
    sql.push_str(&format!(" ORDER BY created_ms DESC, id DESC LIMIT {limit}"));
    (sql, args)
}

#[async_trait]
impl TaskStore for SqlTaskStore {
    async fn insert(&self, task: &Task) -> Result<Inserted, TaskStoreError> {
        const SQL: &str = "INSERT INTO tasks (id, status, repo, created_ms, updated_ms, \
             started_ms, finished_ms, idempotency_key, owner, attempts, reason, \
             cancel_requested, record) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13) \
             ON CONFLICT (idempotency_key) DO NOTHING";
        const BY_KEY: &str = concat!(
            "SELECT ",
            task_columns!(),
            " FROM tasks WHERE idempotency_key = $1"
        );
        // The first event goes in with the task, so no runner's RUNNING can come before it.
        const FIRST_SEQ: &str = "UPDATE tasks SET last_event_seq = 1 WHERE id = $1";
        let record = record_of(task)?;
        let key = task.spec.idempotency_key.as_deref();
        let first = serde_json::json!({"status": task.status.as_str()}).to_string();
        let inserted = with_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            let n = sqlx::query(SQL)
                .bind(&task.id)
                .bind(task.status.as_str())
                .bind(&task.spec.repo)
                .bind(task.created_at.millis())
                .bind(task.updated_at.millis())
                .bind(task.started_at.map(Timestamp::millis))
                .bind(task.finished_at.map(Timestamp::millis))
                .bind(key)
                .bind(task.owner.as_deref())
                .bind(i64::from(task.attempts))
                .bind(task.reason.as_deref())
                .bind(task.cancel_requested)
                .bind(&record)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            if n == 1 {
                sqlx::query(FIRST_SEQ).bind(&task.id).execute(&mut *tx).await?;
                sqlx::query(INSERT_EVENT)
                    .bind(&task.id)
                    .bind(1i64)
                    .bind(task.created_at.millis())
                    .bind("status")
                    .bind(&first)
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await?;
            Ok::<_, sqlx::Error>(n)
        }
        .await)
        .map_err(sql_error)?;
        if inserted == 1 {
            return Ok(Inserted::Created(task.clone()));
        }
        // Only the idempotency key's conflict is let through, so it has one.
        let row: Option<TaskRow> = with_pool!(self, pool => {
            sqlx::query_as(BY_KEY).bind(key).fetch_optional(pool).await
        })
        .map_err(sql_error)?;
        match row {
            Some(row) => Ok(Inserted::Existing(task_from_row(row)?)),
            None => Err(TaskStoreError::Sql(format!(
                "task {} was neither inserted nor found by its idempotency key",
                task.id
            ))),
        }
    }

    async fn get(&self, id: &str) -> Result<Option<Task>, TaskStoreError> {
        self.fetch_task(id).await
    }

    async fn list(&self, query: &TaskQuery) -> Result<TaskPage, TaskStoreError> {
        let after = match query.cursor.as_deref() {
            None => None,
            Some(cursor) => match decode_cursor(cursor) {
                Some(after) => Some(after),
                None => {
                    return Ok(TaskPage {
                        tasks: Vec::new(),
                        next_cursor: None,
                    });
                }
            },
        };
        let limit = query.limit.clamp(1, MAX_PAGE);
        let (sql, args) = list_statement(query, after, limit);
        let rows: Vec<TaskRow> = with_pool!(self, pool => {
            let mut q = sqlx::query_as(AssertSqlSafe(sql));
            for arg in args {
                q = match arg {
                    Arg::Text(s) => q.bind(s),
                    Arg::Int(i) => q.bind(i),
                };
            }
            q.fetch_all(pool).await
        })
        .map_err(sql_error)?;
        let mut tasks = rows
            .into_iter()
            .map(task_from_row)
            .collect::<Result<Vec<Task>, _>>()?;
        let next_cursor = if tasks.len() > limit as usize {
            tasks.truncate(limit as usize);
            tasks.last().map(encode_cursor)
        } else {
            None
        };
        Ok(TaskPage { tasks, next_cursor })
    }

    async fn claim_next(
        &self,
        owner: &str,
        now: Timestamp,
        lease_until: Timestamp,
    ) -> Result<Option<Task>, TaskStoreError> {
        let row: Option<TaskRow> = with_pool!(self, pool => {
            let sql = match self.pool {
                Pool::Sqlite(_) => CLAIM_SQLITE,
                Pool::Postgres(_) => CLAIM_POSTGRES,
            };
            sqlx::query_as(sql)
                .bind(owner)
                .bind(now.millis())
                .bind(lease_until.millis())
                .fetch_optional(pool)
                .await
        })
        .map_err(sql_error)?;
        row.map(task_from_row).transpose()
    }

    async fn update_owned(
        &self,
        task: &Task,
        lease_until: Timestamp,
    ) -> Result<Option<bool>, TaskStoreError> {
        const SQL: &str = owned_update!("", "cancel_requested");
        let Some(owner) = task.owner.as_deref() else {
            return Ok(None);
        };
        let record = record_of(task)?;
        with_pool!(self, pool => {
            bind_owned!(sqlx::query_scalar(SQL), task, &record, lease_until, owner)
                .fetch_optional(pool)
                .await
        })
        .map_err(sql_error)
    }

    async fn update_owned_logged(
        &self,
        task: &Task,
        lease_until: Timestamp,
        kind: &str,
        data: &Value,
    ) -> Result<Option<(bool, TaskEvent)>, TaskStoreError> {
        const SQL: &str = owned_update!(
            ", last_event_seq = last_event_seq + 1",
            "cancel_requested, last_event_seq"
        );
        let Some(owner) = task.owner.as_deref() else {
            return Ok(None);
        };
        let record = record_of(task)?;
        let encoded = data.to_string();
        let time = task.updated_at;
        let done: Option<(bool, i64)> = with_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            let row: Option<(bool, i64)> =
                bind_owned!(sqlx::query_as(SQL), task, &record, lease_until, owner)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some((_, seq)) = row {
                sqlx::query(INSERT_EVENT)
                    .bind(&task.id)
                    .bind(seq)
                    .bind(time.millis())
                    .bind(kind)
                    .bind(&encoded)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(row)
        }
        .await)
        .map_err(sql_error)?;
        Ok(done.map(|(cancel, seq)| {
            (
                cancel,
                TaskEvent {
                    seq,
                    time,
                    kind: kind.to_owned(),
                    data: data.clone(),
                },
            )
        }))
    }

    async fn cancel(
        &self,
        id: &str,
        now: Timestamp,
        reason: &str,
    ) -> Result<Option<CancelOutcome>, TaskStoreError> {
        const CANCEL_QUEUED: &str = concat!(
            "UPDATE tasks SET status = 'CANCELED', reason = $2, finished_ms = $3, ",
            "updated_ms = $3 WHERE id = $1 AND status = 'QUEUED' RETURNING ",
            task_columns!()
        );
        const REQUEST_CANCEL: &str = concat!(
            "UPDATE tasks SET cancel_requested = TRUE, updated_ms = $2 WHERE id = $1 AND ",
            active!(),
            " RETURNING ",
            task_columns!()
        );
        // A task only moves forward (QUEUED, then active, then finished), so when neither
        // update matched, it has finished, or does not exist.
        let canceled: Option<TaskRow> = with_pool!(self, pool => {
            sqlx::query_as(CANCEL_QUEUED)
                .bind(id)
                .bind(reason)
                .bind(now.millis())
                .fetch_optional(pool)
                .await
        })
        .map_err(sql_error)?;
        if let Some(row) = canceled {
            return Ok(Some(CancelOutcome::Canceled(task_from_row(row)?)));
        }
        let requested: Option<TaskRow> = with_pool!(self, pool => {
            sqlx::query_as(REQUEST_CANCEL)
                .bind(id)
                .bind(now.millis())
                .fetch_optional(pool)
                .await
        })
        .map_err(sql_error)?;
        if let Some(row) = requested {
            return Ok(Some(CancelOutcome::Requested(task_from_row(row)?)));
        }
        Ok(self.fetch_task(id).await?.map(CancelOutcome::Finished))
    }

    async fn fail_abandoned(
        &self,
        now: Timestamp,
        owner: Option<&str>,
        reason: &str,
    ) -> Result<Vec<Task>, TaskStoreError> {
        const SQL: &str = concat!(
            "UPDATE tasks SET status = 'FAILED', reason = $2, finished_ms = $1, updated_ms = $1 ",
            "WHERE ",
            active!(),
            " AND (COALESCE(lease_until_ms, 0) < $1 OR owner = $3) RETURNING ",
            task_columns!()
        );
        let rows: Vec<TaskRow> = with_pool!(self, pool => {
            sqlx::query_as(SQL)
                .bind(now.millis())
                .bind(reason)
                .bind(owner)
                .fetch_all(pool)
                .await
        })
        .map_err(sql_error)?;
        let mut tasks = rows
            .into_iter()
            .map(task_from_row)
            .collect::<Result<Vec<Task>, _>>()?;
        tasks.sort_by(|a, b| (a.created_at, &a.id).cmp(&(b.created_at, &b.id)));
        Ok(tasks)
    }

    async fn append_event(
        &self,
        task_id: &str,
        time: Timestamp,
        kind: &str,
        data: &Value,
    ) -> Result<TaskEvent, TaskStoreError> {
        const NEXT_SEQ: &str = "UPDATE tasks SET last_event_seq = last_event_seq + 1 \
             WHERE id = $1 RETURNING last_event_seq";
        let encoded = data.to_string();
        // The first statement writes, so SQLite takes its write lock at once (no read to
        // upgrade from) and Postgres locks the task row until the insert commits.
        let seq: Option<i64> = with_pool!(self, pool => async {
            let mut tx = pool.begin().await?;
            let seq: Option<i64> = sqlx::query_scalar(NEXT_SEQ)
                .bind(task_id)
                .fetch_optional(&mut *tx)
                .await?;
            if let Some(seq) = seq {
                sqlx::query(INSERT_EVENT)
                    .bind(task_id)
                    .bind(seq)
                    .bind(time.millis())
                    .bind(kind)
                    .bind(&encoded)
                    .execute(&mut *tx)
                    .await?;
                tx.commit().await?;
            }
            Ok::<_, sqlx::Error>(seq)
        }
        .await)
        .map_err(sql_error)?;
        let seq = seq.ok_or_else(|| {
            TaskStoreError::Sql(format!("no task {task_id} to append an event to"))
        })?;
        Ok(TaskEvent {
            seq,
            time,
            kind: kind.to_owned(),
            data: data.clone(),
        })
    }

    async fn events(
        &self,
        task_id: &str,
        after_seq: i64,
        limit: u32,
    ) -> Result<Vec<TaskEvent>, TaskStoreError> {
        const SQL: &str = "SELECT seq, time_ms, kind, data FROM task_events \
             WHERE task_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";
        let rows: Vec<(i64, i64, String, String)> = with_pool!(self, pool => {
            sqlx::query_as(SQL)
                .bind(task_id)
                .bind(after_seq)
                .bind(i64::from(limit))
                .fetch_all(pool)
                .await
        })
        .map_err(sql_error)?;
        rows.into_iter()
            .map(|(seq, time_ms, kind, data)| {
                Ok(TaskEvent {
                    seq,
                    time: Timestamp(time_ms),
                    kind,
                    data: serde_json::from_str(&data).map_err(decode_error)?,
                })
            })
            .collect()
    }

    async fn count_by_status(&self) -> Result<Vec<(TaskStatus, u64)>, TaskStoreError> {
        const SQL: &str = "SELECT status, COUNT(*) FROM tasks GROUP BY status ORDER BY status";
        let rows: Vec<(String, i64)> = with_pool!(self, pool => {
            sqlx::query_as(SQL).fetch_all(pool).await
        })
        .map_err(sql_error)?;
        let mut counts = rows
            .into_iter()
            .map(|(status, n)| {
                let status = TaskStatus::parse(&status).map_err(TaskStoreError::Decode)?;
                Ok((status, u64::try_from(n).unwrap_or(0)))
            })
            .collect::<Result<Vec<_>, TaskStoreError>>()?;
        counts.sort();
        Ok(counts)
    }
}

#[cfg(test)]
mod tests {

    #[test]
    fn the_postgres_pool_grows_with_the_slots() {
        assert_eq!(postgres_connections(0), 8);
        assert_eq!(postgres_connections(2), 8);
        assert_eq!(postgres_connections(10), 16);
        assert_eq!(postgres_connections(40), 46);
        assert_eq!(postgres_connections(500), 64);
        assert_eq!(postgres_connections(usize::MAX), 64);
    }

    use super::*;

    #[test]
    fn database_values() {
        let data = Path::new("/var/lib/warden");
        let ok: [(Option<&str>, Target); 10] = [
            (None, Target::SqliteFile(data.join("tasks.db"))),
            (Some(" "), Target::SqliteFile(data.join("tasks.db"))),
            (Some("/srv/q.db"), Target::SqliteFile("/srv/q.db".into())),
            (Some("q.db"), Target::SqliteFile("q.db".into())),
            (
                Some("sqlite:///srv/q.db"),
                Target::SqliteUrl("sqlite:///srv/q.db".into()),
            ),
            (
                Some("sqlite://q.db?mode=rwc"),
                Target::SqliteUrl("sqlite://q.db?mode=rwc".into()),
            ),
            (Some("sqlite::memory:"), Target::SqliteMemory),
            (Some("sqlite://:memory:"), Target::SqliteMemory),
            (
                Some("postgres://u:p@db:5432/warden"),
                Target::Postgres("postgres://u:p@db:5432/warden".into()),
            ),
            (
                Some("postgresql://db/warden"),
                Target::Postgres("postgresql://db/warden".into()),
            ),
        ];
        for (value, want) in ok {
            assert_eq!(target(value, data), Ok(want), "{value:?}");
        }
        for bad in [
            "mysql://root:hunter2@db/warden",
            "redis://db",
            "http://db/x",
            "sqlite://",
        ] {
            let e = target(Some(bad), data).unwrap_err();
            assert!(e.contains("postgres://") && e.contains("sqlite://"), "{e}");
            assert!(!e.contains("hunter2"), "{e}");
        }
    }

    #[test]
    fn urls_are_redacted() {
        for (url, want) in [
            (
                "postgres://warden:s3cret@db:5432/tasks",
                "postgres://warden:***@db:5432/tasks",
            ),
            (
                "postgresql://warden@db/tasks?sslmode=require",
                "postgresql://warden@db/tasks?sslmode=require",
            ),
            (
                "postgres://db/tasks?user=w&password=s3cret&sslmode=disable",
                "postgres://db/tasks?user=w&password=***&sslmode=disable",
            ),
            (
                "postgres://w:pa/ss?w@rd@db/tasks",
                "postgres://w:***@db/tasks",
            ),
            ("postgres://w:@db/tasks", "postgres://w:***@db/tasks"),
            ("sqlite:///srv/tasks.db", "sqlite:///srv/tasks.db"),
            ("/srv/tasks.db", "/srv/tasks.db"),
        ] {
            assert_eq!(redacted_url(url), want, "{url}");
        }
    }

    #[test]
    fn cursors() {
        assert_eq!(
            decode_cursor("1700000000000:task-abc"),
            Some((1_700_000_000_000, "task-abc"))
        );
        for bad in ["", "x", "12", "12:", "x:task-a", ":task-a"] {
            assert_eq!(decode_cursor(bad), None, "{bad}");
        }
    }

    #[test]
    fn list_statements_number_their_placeholders() {
        let query = TaskQuery {
            status: vec![TaskStatus::Running, TaskStatus::Queued, TaskStatus::Running],
            repo: Some("https://example.com/r.git".into()),
            since: Some(Timestamp(5)),
            limit: 10,
            cursor: None,
        };
        let (sql, args) = list_statement(&query, Some((9, "task-b")), 10);
        assert_eq!(
            sql,
            concat!(
                "SELECT ",
                task_columns!(),
                " FROM tasks WHERE status IN ($1, $2) AND repo = $3 AND created_ms >= $4 ",
                "AND (created_ms < $5 OR (created_ms = $5 AND id < $6)) ",
                "ORDER BY created_ms DESC, id DESC LIMIT $7"
            )
        );
        assert_eq!(
            args,
            [
                Arg::Text("QUEUED".into()),
                Arg::Text("RUNNING".into()),
                Arg::Text("https://example.com/r.git".into()),
                Arg::Int(5),
                Arg::Int(9),
                Arg::Text("task-b".into()),
                Arg::Int(11),
            ]
        );
        let (sql, args) = list_statement(&TaskQuery::default(), None, 50);
        assert!(
            sql.ends_with("FROM tasks ORDER BY created_ms DESC, id DESC LIMIT $1"),
            "{sql}"
        );
        assert_eq!(args, [Arg::Int(51)]);
    }
}
