//! A throwaway PostgreSQL for tests: [`warden_server::testing_pg`]'s cluster (initdb and
//! pg_ctl from the distribution's packages, `apt-get install postgresql`), with PostgreSQL's
//! durability settings off for speed.
//!
//! The tests running at one time share one cluster, each with databases of its own
//! ([`PgCluster::database`]); the last to finish stops it and removes its directory (on drop,
//! so also when a test panics), and a later test starts a new one.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use warden_server::testing_pg::{self, PgOptions};

/// The cluster the running tests share, while one of them holds it.
static CURRENT: Mutex<Weak<PgCluster>> = Mutex::new(Weak::new());

/// Numbers the databases of one test binary.
static DATABASES: AtomicU32 = AtomicU32::new(0);

/// The shared cluster, started if no running test holds one. Panics, saying how to install
/// PostgreSQL, when it is not installed.
pub fn cluster() -> Arc<PgCluster> {
    let mut current = CURRENT.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(cluster) = current.upgrade() {
        return cluster;
    }
    let cluster = testing_pg::PgCluster::start(&PgOptions::default())
        .unwrap_or_else(|e| panic!("cannot start the test PostgreSQL: {e}"));
    let cluster = Arc::new(PgCluster(cluster));
    *current = Arc::downgrade(&cluster);
    cluster
}

/// The shared test cluster.
pub struct PgCluster(testing_pg::PgCluster);

impl PgCluster {
    /// The superuser's password (to check that errors never show it).
    #[allow(dead_code)] // Not every test binary that includes this module asks.
    pub fn password(&self) -> &str {
        self.0.password()
    }

    /// Creates a new, empty database for one test, and returns its URL.
    pub async fn database(&self, test: &str) -> String {
        // A name within PostgreSQL's 63 bytes, unique in this test binary's run.
        let prefix: String = test
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(48)
            .collect();
        let name = format!("{prefix}_{}", DATABASES.fetch_add(1, Ordering::Relaxed));
        self.0
            .create_database(&name, true)
            .await
            .unwrap_or_else(|e| panic!("cannot create a test database: {e}"))
    }
}
