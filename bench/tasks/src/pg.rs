//! A throwaway PostgreSQL cluster for the run: [`warden_server::testing_pg`]'s cluster, as
//! warden-server's Postgres tests start one, but with PostgreSQL's durability defaults
//! (`fsync`, `full_page_writes`, `synchronous_commit` on): the benchmark measures a store as
//! it would be deployed. A database can turn `synchronous_commit` off for itself
//! ([`PgCluster::database`]).
//!
//! Stopped (`pg_ctl stop -m fast`) and removed on drop, and (`-m immediate`) by
//! [`crate::cleanup`] when the run panics or is interrupted; `bench/run-tasks.sh` also stops
//! any cluster a killed run left.

use anyhow::anyhow;
use warden_server::testing_pg::{self, PgOptions};

/// A running cluster; stopped and deleted on drop.
#[derive(Debug)]
pub struct PgCluster {
    cluster: testing_pg::PgCluster,
    /// `postgres --version`.
    pub version: String,
    /// Stops the cluster and removes its directory if the run is cut short.
    _abort: crate::cleanup::Registered,
}

impl PgCluster {
    pub fn start() -> anyhow::Result<PgCluster> {
        let cluster = testing_pg::PgCluster::start(&PgOptions {
            dir_prefix: "wbt-pg-".into(),
            durable: true,
        })
        .map_err(|e| anyhow!("{e}; or pass --no-postgres"))?;
        let stopper = cluster.stopper();
        Ok(PgCluster {
            version: cluster.version().to_string(),
            cluster,
            _abort: crate::cleanup::on_abort(move || stopper.abort()),
        })
    }

    /// Creates an empty database `name` (a plain identifier) and returns its URL. With
    /// `synchronous_commit` false, its sessions commit without waiting for the WAL flush
    /// (the durability of SQLite in WAL mode with `synchronous=NORMAL`: nothing is
    /// corrupted by a crash, the last commits may be lost).
    pub async fn database(&self, name: &str, synchronous_commit: bool) -> anyhow::Result<String> {
        self.cluster
            .create_database(name, synchronous_commit)
            .await
            .map_err(|e| anyhow!(e))
    }
}
