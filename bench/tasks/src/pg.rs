//! A throwaway PostgreSQL cluster for the run, as warden-server's Postgres tests start one
//! (`crates/warden-server/tests/support/postgres.rs`): the distribution's `initdb` into a
//! temporary directory, `pg_ctl start` on a unix socket there and a free port of 127.0.0.1,
//! as the `postgres` user when the bench runs as root (initdb refuses root). Unlike the
//! tests' cluster it keeps PostgreSQL's durability defaults (`fsync`, `full_page_writes`,
//! `synchronous_commit` on): the benchmark measures a store as it would be deployed. A
//! database can turn `synchronous_commit` off for itself ([`PgCluster::database`]).
//!
//! Stopped (`pg_ctl stop -m fast`) and removed on drop, and (`-m immediate`) by
//! [`crate::cleanup`] when the run panics or is interrupted; `bench/run-tasks.sh` also stops
//! any cluster a killed run left.

use std::fs;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, bail};
use sqlx::{AssertSqlSafe, Connection};

const INSTALL_HINT: &str = "the PostgreSQL runs need PostgreSQL's server programs (initdb, pg_ctl): \
     apt-get install postgresql (Debian puts them in /usr/lib/postgresql/<version>/bin), or set \
     WARDEN_TEST_PG_BIN to the directory that holds them, or pass --no-postgres";

/// A running cluster; stopped and deleted on drop.
#[derive(Debug)]
pub struct PgCluster {
    /// Holds `data/`, the server's `log` and its unix socket; owned by the server's user.
    dir: tempfile::TempDir,
    bin: PathBuf,
    /// The `postgres` user's uid and gid when the bench runs as root.
    run_as: Option<(u32, u32)>,
    port: u16,
    password: String,
    /// `postgres --version`.
    pub version: String,
    /// Stops the cluster and removes its directory if the run is cut short.
    _abort: crate::cleanup::Registered,
}

impl PgCluster {
    pub fn start() -> anyhow::Result<PgCluster> {
        let bin = server_bin_dir()
            .with_context(|| format!("PostgreSQL is not installed: {INSTALL_HINT}"))?;
        let run_as = if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .with_context(|| {
                    format!("no `postgres` user to run PostgreSQL as (initdb refuses root): {INSTALL_HINT}")
                })?;
            Some((user.uid.as_raw(), user.gid.as_raw()))
        } else {
            None
        };
        let dir = tempfile::Builder::new()
            .prefix("wbt-pg-")
            .tempdir_in("/tmp")
            .context("a temporary directory for PostgreSQL")?;
        let password = random_hex(16)?;
        let pwfile = dir.path().join("pwfile");
        fs::write(&pwfile, &password).context("write the password file")?;
        if let Some((uid, gid)) = run_as {
            for path in [dir.path(), pwfile.as_path()] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid))
                    .context("give the cluster's directory to the postgres user")?;
            }
        }
        let version = Command::new(bin.join("postgres"))
            .arg("--version")
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let abort = {
            let (bin, dir) = (bin.clone(), dir.path().to_path_buf());
            crate::cleanup::on_abort(move || {
                let _ = pg_ctl_stop(&bin, &dir, run_as, "immediate");
                let _ = fs::remove_dir_all(&dir);
            })
        };
        let mut cluster = PgCluster {
            dir,
            bin,
            run_as,
            port: 0,
            password,
            version,
            _abort: abort,
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
            ],
        )?;
        // A free port can be taken between finding it and the server binding it: try again.
        let mut last = String::new();
        for _ in 0..5 {
            cluster.port = free_port()?;
            let options = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1",
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
            )?;
            if out.status.success() {
                return Ok(cluster);
            }
            last = format!(
                "{}{}\n{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr),
                fs::read_to_string(&log).unwrap_or_default()
            );
        }
        bail!("pg_ctl start failed:\n{last}")
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    /// A program of the server's, as its user, in the cluster's directory.
    fn command(&self, program: &str, args: &[&std::ffi::OsStr]) -> anyhow::Result<Output> {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.args(args).current_dir(self.dir.path());
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd.output()
            .with_context(|| format!("cannot run {program}; {INSTALL_HINT}"))
    }

    fn run(&self, program: &str, args: &[&std::ffi::OsStr]) -> anyhow::Result<()> {
        let out = self.command(program, args)?;
        if !out.status.success() {
            bail!(
                "{program} failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
        Ok(())
    }

    /// The URL of database `name` as the superuser, over TCP with the password.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://postgres:{}@127.0.0.1:{}/{name}",
            self.password, self.port
        )
    }

    /// Creates an empty database `name` (a plain identifier) and returns its URL. With
    /// `synchronous_commit` false, its sessions commit without waiting for the WAL flush
    /// (the durability of SQLite in WAL mode with `synchronous=NORMAL`: nothing is
    /// corrupted by a crash, the last commits may be lost).
    pub async fn database(&self, name: &str, synchronous_commit: bool) -> anyhow::Result<String> {
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .context("connect to the cluster")?;
        sqlx::raw_sql(AssertSqlSafe(format!("CREATE DATABASE \"{name}\"")))
            .execute(&mut conn)
            .await
            .with_context(|| format!("create database {name}"))?;
        if !synchronous_commit {
            sqlx::raw_sql(AssertSqlSafe(format!(
                "ALTER DATABASE \"{name}\" SET synchronous_commit = off"
            )))
            .execute(&mut conn)
            .await
            .with_context(|| format!("set synchronous_commit of {name}"))?;
        }
        conn.close().await.ok();
        Ok(self.url(name))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        match pg_ctl_stop(&self.bin, self.dir.path(), self.run_as, "fast") {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "pg_ctl stop failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("pg_ctl stop failed: {e}"),
        }
        // The TempDir removes the directory next.
    }
}

/// `pg_ctl stop` of the cluster in `dir` (its data in `dir/data`), as its user, waiting.
fn pg_ctl_stop(
    bin: &Path,
    dir: &Path,
    run_as: Option<(u32, u32)>,
    mode: &str,
) -> std::io::Result<Output> {
    let mut cmd = Command::new(bin.join("pg_ctl"));
    cmd.args(["-D".as_ref(), dir.join("data").as_os_str()])
        .args(["-m", mode, "-w", "stop"])
        .current_dir(dir);
    if let Some((uid, gid)) = run_as {
        cmd.uid(uid).gid(gid);
    }
    cmd.output()
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
        // A symlink into the distribution's directory (as /usr/local/bin/initdb may be):
        // the directory the program really is in, where `postgres` is too.
        let real = fs::canonicalize(dir.join("initdb"))
            .ok()
            .and_then(|p| p.parent().map(Path::to_path_buf));
        return Some(real.filter(|d| has_both(d)).unwrap_or(dir));
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

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn random_hex(bytes: usize) -> anyhow::Result<String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| anyhow::anyhow!("random bytes: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
