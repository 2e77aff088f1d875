//! The embedded store: one SQLite file (`<data>/warden.db`, WAL) with templates, pools,
//! sandbox records (the driver's `SandboxStore`) and events.
//!
//! Migrations live in `crates/warden-server/migrations/` and are embedded with `include_str!`
//! and run through sqlx's `Migrator` (sqlx's `migrate!` macro needs its `macros` feature,
//! which would build sqlx's proc-macro crate and its database drivers at compile time).

use std::borrow::Cow;
use std::path::Path;
use std::str::FromStr;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use sqlx::Row;
use sqlx::migrate::{Migration, MigrationType, Migrator};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use warden_sandbox::{PoolSpec, SandboxEvent, SandboxRecord, SandboxStore, Template};

/// The migrations, in order. Add a file under `migrations/` and a line here.
const MIGRATIONS: &[(i64, &str, &str)] =
    &[(1, "init", include_str!("../migrations/0001_init.sql"))];

/// A migrator over migrations embedded as (version, description, SQL).
pub(crate) fn embedded_migrator(list: &'static [(i64, &'static str, &'static str)]) -> Migrator {
    let migrations = list
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*description),
                MigrationType::Simple,
                sqlx::SqlSafeStr::into_sql_str(*sql),
                false,
            )
        })
        .collect();
    Migrator::with_migrations(migrations)
}

/// Events kept in the store; older ones are pruned.
const EVENTS_KEPT: i64 = 100_000;

/// Why the store failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("store {path}: {source}")]
    Open { path: String, source: sqlx::Error },
    #[error("store migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("store: {0}")]
    Sql(#[from] sqlx::Error),
    #[error(
        "store: a stored {what} is not valid JSON ({source}); was the file written by a newer warden?"
    )]
    Decode {
        what: &'static str,
        source: serde_json::Error,
    },
}

/// The SQLite store. Cheap to clone (a pool handle).
#[derive(Debug, Clone)]
pub struct Store {
    pool: SqlitePool,
}

fn now_ms() -> i64 {
    millis(SystemTime::now())
}

fn millis(t: SystemTime) -> i64 {
    t.duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

fn encode<T: serde::Serialize>(v: &T) -> String {
    // The types are plain data; serialising them cannot fail.
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn decode<T: serde::de::DeserializeOwned>(what: &'static str, s: &str) -> Result<T, StoreError> {
    serde_json::from_str(s).map_err(|source| StoreError::Decode { what, source })
}

impl Store {
    /// Opens (creating it if needed) `<data_dir>/warden.db` and runs the migrations.
    pub async fn open(data_dir: &Path) -> Result<Store, StoreError> {
        let path = data_dir.join("warden.db");
        let opts = SqliteConnectOptions::from_str("sqlite:")
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?
            .filename(&path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(Duration::from_secs(5));
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .connect_with(opts)
            .await
            .map_err(|source| StoreError::Open {
                path: path.display().to_string(),
                source,
            })?;
        let store = Store { pool };
        store.migrate().await?;
        Ok(store)
    }

    /// An in-memory store (tests).
    pub async fn in_memory() -> Result<Store, StoreError> {
        let opts = SqliteConnectOptions::from_str("sqlite::memory:")?;
        // One connection: every connection to :memory: is its own database.
        let pool = SqlitePoolOptions::new()
            .max_connections(1)
            .connect_with(opts)
            .await?;
        let store = Store { pool };
        store.migrate().await?;
        Ok(store)
    }

    async fn migrate(&self) -> Result<(), StoreError> {
        embedded_migrator(MIGRATIONS).run(&self.pool).await?;
        Ok(())
    }

    /// The journal mode SQLite reports ("wal").
    pub async fn journal_mode(&self) -> Result<String, StoreError> {
        let row = sqlx::query("PRAGMA journal_mode")
            .fetch_one(&self.pool)
            .await?;
        Ok(row.try_get::<String, _>(0)?)
    }

    pub async fn put_template(&self, t: &Template) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO templates (name, spec, updated_ms) VALUES (?, ?, ?) \
             ON CONFLICT(name) DO UPDATE SET spec = excluded.spec, updated_ms = excluded.updated_ms",
        )
        .bind(&t.name)
        .bind(encode(t))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn delete_template(&self, name: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM templates WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn templates(&self) -> Result<Vec<Template>, StoreError> {
        let rows = sqlx::query("SELECT spec FROM templates ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| decode("template", &r.try_get::<String, _>(0)?))
            .collect()
    }

    pub async fn put_pool(&self, p: &PoolSpec) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO pools (name, spec, updated_ms) VALUES (?, ?, ?) \
             ON CONFLICT(name) DO UPDATE SET spec = excluded.spec, updated_ms = excluded.updated_ms",
        )
        .bind(&p.name)
        .bind(encode(p))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn delete_pool(&self, name: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM pools WHERE name = ?")
            .bind(name)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn pools(&self) -> Result<Vec<PoolSpec>, StoreError> {
        let rows = sqlx::query("SELECT spec FROM pools ORDER BY name")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| decode("pool", &r.try_get::<String, _>(0)?))
            .collect()
    }

    pub async fn put_sandbox(&self, record: &SandboxRecord) -> Result<(), StoreError> {
        let info = &record.info;
        let phase = serde_json::to_value(info.phase)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        sqlx::query(
            "INSERT INTO sandboxes (id, template, pool, phase, record, updated_ms) \
             VALUES (?, ?, ?, ?, ?, ?) \
             ON CONFLICT(id) DO UPDATE SET template = excluded.template, pool = excluded.pool, \
             phase = excluded.phase, record = excluded.record, updated_ms = excluded.updated_ms",
        )
        .bind(&info.id)
        .bind(&info.template)
        .bind(&info.pool)
        .bind(phase)
        .bind(encode(record))
        .bind(now_ms())
        .execute(&self.pool)
        .await?;
        Ok(())
    }

    pub async fn remove_sandbox(&self, id: &str) -> Result<(), StoreError> {
        sqlx::query("DELETE FROM sandboxes WHERE id = ?")
            .bind(id)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    pub async fn sandboxes(&self) -> Result<Vec<SandboxRecord>, StoreError> {
        let rows = sqlx::query("SELECT record FROM sandboxes ORDER BY id")
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|r| decode("sandbox record", &r.try_get::<String, _>(0)?))
            .collect()
    }

    /// Keeps an event; prunes the oldest past `EVENTS_KEPT` now and then.
    pub async fn put_event(&self, e: &SandboxEvent) -> Result<(), StoreError> {
        let seq =
            sqlx::query("INSERT INTO events (time_ms, sandbox, kind, message) VALUES (?, ?, ?, ?)")
                .bind(millis(e.time))
                .bind(&e.sandbox)
                .bind(&e.kind)
                .bind(&e.message)
                .execute(&self.pool)
                .await?
                .last_insert_rowid();
        if seq % 1000 == 0 {
            sqlx::query("DELETE FROM events WHERE seq <= ?")
                .bind(seq - EVENTS_KEPT)
                .execute(&self.pool)
                .await?;
        }
        Ok(())
    }

    /// Stored events after `since` (all when `None`), oldest first, of one sandbox or all,
    /// at most `limit`.
    pub async fn events(
        &self,
        since: Option<SystemTime>,
        sandbox: Option<&str>,
        limit: u32,
    ) -> Result<Vec<SandboxEvent>, StoreError> {
        let rows = sqlx::query(
            "SELECT time_ms, sandbox, kind, message FROM events \
             WHERE time_ms > ? AND (? IS NULL OR sandbox = ?) ORDER BY seq LIMIT ?",
        )
        .bind(since.map(millis).unwrap_or(-1))
        .bind(sandbox)
        .bind(sandbox)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter()
            .map(|r| {
                let ms: i64 = r.try_get(0)?;
                Ok(SandboxEvent {
                    time: UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64),
                    sandbox: r.try_get(1)?,
                    kind: r.try_get(2)?,
                    message: r.try_get(3)?,
                })
            })
            .collect()
    }

    /// Closes the pool, checkpointing the WAL.
    pub async fn close(&self) {
        self.pool.close().await;
    }
}

#[async_trait::async_trait]
impl SandboxStore for Store {
    async fn put(&self, record: &SandboxRecord) -> Result<(), String> {
        self.put_sandbox(record).await.map_err(|e| e.to_string())
    }

    async fn remove(&self, id: &str) -> Result<(), String> {
        self.remove_sandbox(id).await.map_err(|e| e.to_string())
    }

    async fn load_all(&self) -> Result<Vec<SandboxRecord>, String> {
        self.sandboxes().await.map_err(|e| e.to_string())
    }
}
