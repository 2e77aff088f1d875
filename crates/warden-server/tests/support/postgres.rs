//! A throwaway PostgreSQL for tests, from the distribution's packages (Debian:
//! `apt-get install postgresql`): `initdb` into a temporary directory, `pg_ctl start`
//! listening on a unix socket in that directory and on a free port of 127.0.0.1, run as the
//! unprivileged `postgres` user when the tests run as root (initdb refuses root).
//!
//! The tests running at one time share one cluster, each with databases of its own
//! ([`PgCluster::database`]); the last to finish stops it and removes its directory (on drop,
//! so also when a test panics), and a later test starts a new one.

use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError, Weak};

use sqlx::{AssertSqlSafe, Connection};

/// What to tell someone whose machine has no PostgreSQL.
const INSTALL_HINT: &str = "the Postgres tests need PostgreSQL's server programs (initdb, pg_ctl): \
     apt-get install postgresql (Debian puts them in /usr/lib/postgresql/<version>/bin), or \
     set WARDEN_TEST_PG_BIN to the directory that holds them";

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
    let cluster = Arc::new(PgCluster::start());
    *current = Arc::downgrade(&cluster);
    cluster
}

/// A running PostgreSQL cluster; stopped and deleted on drop.
pub struct PgCluster {
    /// Holds `data/`, the server's `log` and its unix socket; owned by the server's user.
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The `postgres` user's uid and gid when the tests run as root.
    run_as: Option<(u32, u32)>,
    port: u16,
    password: String,
}

impl PgCluster {
    fn start() -> PgCluster {
        let bin = server_bin_dir()
            .unwrap_or_else(|| panic!("PostgreSQL is not installed: {INSTALL_HINT}"));
        let run_as = if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .unwrap_or_else(|| {
                    panic!("no `postgres` user to run PostgreSQL as (initdb refuses root): {INSTALL_HINT}")
                });
            Some((user.uid.as_raw(), user.gid.as_raw()))
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("warden-pg-")
            .tempdir()
            .expect("a temporary directory for PostgreSQL");
        let password = random_hex(16);
        let pwfile = dir.path().join("pwfile");
        fs::write(&pwfile, &password).expect("write the password file");
        if let Some((uid, gid)) = run_as {
            for path in [dir.path(), pwfile.as_path()] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .expect("give the cluster's directory to the postgres user");
            }
        }
        let mut cluster = PgCluster {
            dir,
            bin,
            run_as,
            port: 0,
            password,
        };
        let data = cluster.data_dir();
        cluster.run(
            "initdb",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-U".as_ref(),
                "postgres".as_ref(),
                format!("--pwfile={}", pwfile.display()).as_ref(),
                // Over the socket, trust; over TCP, where the store connects, a password.
                "--auth-local=trust".as_ref(),
                "--auth-host=scram-sha-256".as_ref(),
                "--encoding=UTF8".as_ref(),
                "--locale=C".as_ref(),
                "--no-sync".as_ref(),
            ],
        );
        // A free port can be taken between finding it and the server binding it: try again.
        let mut last = String::new();
        for _ in 0..5 {
            cluster.port = free_port();
            let options = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1 -c fsync=off \
                 -c synchronous_commit=off -c full_page_writes=off",
                cluster.port,
                cluster.dir.path().display()
            );
            let log = cluster.dir.path().join("log");
            let out = cluster.command(
                "pg_ctl",
                &[
                    "-D".as_ref(),
                    data.as_os_str(),
                    "-l".as_ref(),
                    log.as_os_str(),
                    "-o".as_ref(),
                    options.as_ref(),
                    "-w".as_ref(),
                    "-t".as_ref(),
                    "60".as_ref(),
                    "start".as_ref(),
                ],
            );
            if out.status.success() {
                return cluster;
            }
            last = format!(
                "{}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        panic!("pg_ctl start failed:\n{last}");
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A program of the server's, as its user, in the cluster's directory.
    fn command(&self, program: &str, args: &[&std::ffi::OsStr]) -> Output {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.args(args).current_dir(self.dir.path());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd.output()
            .unwrap_or_else(|e| panic!("cannot run {program}: {e}; {INSTALL_HINT}"))
    }

    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) {
        let out = self.command(program, args);
        assert!(
            out.status.success(),
            "{program} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The URL of database `name` as the superuser, over TCP with the password.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{name}",
            self.password, self.port
        )
    }

    /// The superuser's password (to check that errors never show it).
    pub fn password(&self) -> &str {
        &self.password
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
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .expect("connect to the test cluster");
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .expect("create a test database");
        conn.close().await.ok();
        self.url(&name)
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        let data = self.data_dir();
        let out = self.command(
            "pg_ctl",
            &[
                "-D".as_ref(),
                data.as_os_str(),
                "-m".as_ref(),
                "immediate".as_ref(),
                "-w".as_ref(),
                "stop".as_ref(),
            ],
        );
        if !out.status.success() {
            eprintln!(
                "pg_ctl stop failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        // The TempDir removes the directory next.
    }
}

/// The directory with `initdb` and `pg_ctl`: `WARDEN_TEST_PG_BIN`, else `PATH`, else the
/// newest of Debian's `/usr/lib/postgresql/<version>/bin`.
fn server_bin_dir() -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("WARDEN_TEST_PG_BIN") {
        return Some(PathBuf::from(dir)).filter(|d| has_both(d));
    }
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|d| has_both(d))
    {
        return Some(dir);
    }
    let mut versions: Vec<(u32, PathBuf)> = fs::read_dir("/usr/lib/postgresql")
        .ok()?
        .filter_map(|entry| {
            let entry = entry.ok()?;
            let version = entry.file_name().to_str()?.parse().ok()?;
            Some((version, entry.path().join("bin")))
        })
        .filter(|(_, bin)| has_both(bin))
        .collect();
    versions.sort();
    versions.pop().map(|(_, bin)| bin)
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("a free port on 127.0.0.1")
}

fn random_hex(bytes: usize) -> String {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).expect("random bytes");
    buf.iter().map(|b| format!("{b:02x}")).collect()
}
