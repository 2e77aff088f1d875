//! A throwaway PostgreSQL cluster from the distribution's packages (Debian: `apt-get install
//! postgresql`), for the Postgres tests and the task benchmark. A test helper compiled in every
//! build (like [`crate::testing_git`]); nothing in `warden serve` uses it.
//!
//! [`PgCluster::start`] runs `initdb` into a new directory under the temporary directory and
//! `pg_ctl start` with the server listening on a unix socket in that directory and on a free
//! port of 127.0.0.1 (the store connects over TCP with a password). When this process runs as
//! root the server's programs run as the unprivileged `postgres` user, since initdb refuses
//! root. Dropping the cluster stops it (`pg_ctl stop`) and removes the directory; a
//! [`PgStopper`] does the same from elsewhere (an interrupt handler).

use std::ffi::OsStr;
use std::fs;
use std::net::TcpListener;
use std::os::unix::fs::DirBuilderExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use sqlx::{AssertSqlSafe, Connection};

/// How to get PostgreSQL, for error messages.
pub const INSTALL_HINT: &str = "PostgreSQL's server programs (initdb, pg_ctl) are needed: \
     apt-get install postgresql (Debian puts them in /usr/lib/postgresql/<version>/bin), or \
     set WARDEN_TEST_PG_BIN to the directory that holds them";

/// How a cluster runs.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// The start of the cluster directory's name.
    pub dir_prefix: String,
    /// PostgreSQL's durability defaults (`fsync`, `full_page_writes`, `synchronous_commit`
    /// on), as deployed; `false` turns them off, for fast tests.
    pub durable: bool,
}

impl Default for PgOptions {
    fn default() -> PgOptions {
        PgOptions {
            dir_prefix: "warden-pg-".into(),
            durable: false,
        }
    }
}

/// Stops a cluster and removes its directory; cheap to clone.
#[derive(Debug, Clone)]
pub struct PgStopper {
    bin: PathBuf,
    dir: PathBuf,
    /// The `postgres` user's uid and gid when this process runs as root.
    run_as: Option<(u32, u32)>,
}

impl PgStopper {
    /// `pg_ctl stop -m MODE` (`fast` or `immediate`), waiting; the output of pg_ctl.
    pub fn pg_ctl_stop(&self, mode: &str) -> std::io::Result<Output> {
        let data = self.dir.join("data");
        let args: [&OsStr; 6] = [
            "-D".as_ref(),
            data.as_os_str(),
            "-m".as_ref(),
            mode.as_ref(),
            "-w".as_ref(),
            "stop".as_ref(),
        ];
        self.command("pg_ctl", &args).output()
    }

    /// Stops the server (`immediate`) and removes the directory, ignoring failures: for
    /// interrupt handlers.
    pub fn abort(&self) {
        let _ = self.pg_ctl_stop("immediate");
        let _ = fs::remove_dir_all(&self.dir);
    }

    /// A program of the server's, as its user, in the cluster's directory.
    fn command(&self, program: &str, args: &[&OsStr]) -> Command {
        let mut cmd = Command::new(self.bin.join(program));
        cmd.args(args).current_dir(&self.dir);
        if let Some((uid, gid)) = self.run_as {
            cmd.uid(uid).gid(gid);
        }
        cmd
    }
}

/// A running cluster; stopped and deleted on drop.
#[derive(Debug)]
pub struct PgCluster {
    stopper: PgStopper,
    port: u16,
    password: String,
    version: String,
}

impl PgCluster {
    /// Starts a new cluster. The error says what failed, with pg_ctl's log, or how to install
    /// PostgreSQL.
    pub fn start(options: &PgOptions) -> Result<PgCluster, String> {
        let bin = server_bin_dir()
            .ok_or_else(|| format!("PostgreSQL is not installed: {INSTALL_HINT}"))?;
        let run_as = if nix::unistd::geteuid().is_root() {
            let user = nix::unistd::User::from_name("postgres")
                .ok()
                .flatten()
                .ok_or_else(|| {
                    format!(
                        "no `postgres` user to run PostgreSQL as (initdb refuses root): {INSTALL_HINT}"
                    )
                })?;
            Some((user.uid.as_raw(), user.gid.as_raw()))
        } else {
            None
        };
        let dir = std::env::temp_dir().join(format!("{}{}", options.dir_prefix, random_hex(6)?));
        fs::DirBuilder::new()
            .mode(0o700)
            .create(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        // From here on, a failure stops and removes what was started (the drop below).
        let mut cluster = PgCluster {
            stopper: PgStopper { bin, dir, run_as },
            port: 0,
            password: random_hex(16)?,
            version: String::new(),
        };
        cluster.version = cluster
            .stopper
            .command("postgres", &["--version".as_ref()])
            .output()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
            .unwrap_or_default();
        let dir = cluster.stopper.dir.clone();
        let pwfile = dir.join("pwfile");
        fs::write(&pwfile, &cluster.password)
            .map_err(|e| format!("cannot write {}: {e}", pwfile.display()))?;
        if let Some((uid, gid)) = run_as {
            for path in [dir.as_path(), pwfile.as_path()] {
                std::os::unix::fs::chown(path, Some(uid), Some(gid)).map_err(|e| {
                    format!("cannot give {} to the postgres user: {e}", path.display())
                })?;
            }
        }
        let data = dir.join("data");
        let pwfile_arg = format!("--pwfile={}", pwfile.display());
        let mut initdb: Vec<&OsStr> = vec![
            "-D".as_ref(),
            data.as_os_str(),
            "-U".as_ref(),
            "postgres".as_ref(),
            pwfile_arg.as_ref(),
            // Over the socket, trust; over TCP, where the store connects, a password.
            "--auth-local=trust".as_ref(),
            "--auth-host=scram-sha-256".as_ref(),
            "--encoding=UTF8".as_ref(),
            "--locale=C".as_ref(),
        ];
        if !options.durable {
            initdb.push("--no-sync".as_ref());
        }
        cluster.run("initdb", &initdb)?;
        // A free port can be taken between finding it and the server binding it: try again.
        let mut last = String::new();
        for _ in 0..5 {
            cluster.port = free_port()?;
            let mut server_options = format!(
                "-p {} -k {} -c listen_addresses=127.0.0.1",
                cluster.port,
                dir.display()
            );
            if !options.durable {
                server_options
                    .push_str(" -c fsync=off -c synchronous_commit=off -c full_page_writes=off");
            }
            let log = dir.join("log");
            let out = cluster.output(
                "pg_ctl",
                &[
                    "-D".as_ref(),
                    data.as_os_str(),
                    "-l".as_ref(),
                    log.as_os_str(),
                    "-o".as_ref(),
                    server_options.as_ref(),
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
        Err(format!("pg_ctl start failed:\n{last}"))
    }

    fn output(&self, program: &str, args: &[&OsStr]) -> Result<Output, String> {
        self.stopper
            .command(program, args)
            .output()
            .map_err(|e| format!("cannot run {program}: {e}; {INSTALL_HINT}"))
    }

    fn run(&self, program: &str, args: &[&OsStr]) -> Result<(), String> {
        let out = self.output(program, args)?;
        if !out.status.success() {
            return Err(format!(
                "{program} failed ({}):\n{}{}",
                out.status,
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            ));
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

    /// The superuser's password (to check that errors never show it).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// `postgres --version`.
    pub fn version(&self) -> &str {
        &self.version
    }

    /// What stops this cluster from an interrupt handler.
    pub fn stopper(&self) -> PgStopper {
        self.stopper.clone()
    }

    /// Creates an empty database `name` (a plain identifier) and returns its URL. With
    /// `synchronous_commit` false, its sessions commit without waiting for the WAL flush.
    pub async fn create_database(
        &self,
        name: &str,
        synchronous_commit: bool,
    ) -> Result<String, String> {
        if name.is_empty()
            || name.len() > 63
            || !name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
        {
            return Err(format!(
                "database name `{name}`: use 1 to 63 lowercase letters, digits and `_`"
            ));
        }
        let mut conn = sqlx::PgConnection::connect(&self.url("postgres"))
            .await
            .map_err(|e| format!("cannot connect to the cluster: {e}"))?;
        let mut statements = vec![format!("CREATE DATABASE \"{name}\"")];
        if !synchronous_commit {
            statements.push(format!(
                "ALTER DATABASE \"{name}\" SET synchronous_commit = off"
            ));
        }
        for sql in statements {
            sqlx::raw_sql(AssertSqlSafe(sql.clone()))
                .execute(&mut conn)
                .await
                .map_err(|e| format!("{sql}: {e}"))?;
        }
        conn.close().await.ok();
        Ok(self.url(name))
    }
}

impl Drop for PgCluster {
    fn drop(&mut self) {
        if self.stopper.dir.join("data/postmaster.pid").exists() {
            match self.stopper.pg_ctl_stop("fast") {
                Ok(out) if out.status.success() => {}
                Ok(out) => eprintln!(
                    "pg_ctl stop failed: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                ),
                Err(e) => eprintln!("pg_ctl stop failed: {e}"),
            }
        }
        let _ = fs::remove_dir_all(&self.stopper.dir);
    }
}

/// The directory with `initdb` and `pg_ctl`: `WARDEN_TEST_PG_BIN`, else `PATH` (following a
/// symlink into the distribution's directory, where `postgres` is too), else the newest of
/// Debian's `/usr/lib/postgresql/<version>/bin`.
pub fn server_bin_dir() -> Option<PathBuf> {
    let has_both = |dir: &Path| dir.join("initdb").is_file() && dir.join("pg_ctl").is_file();
    if let Some(dir) = std::env::var_os("WARDEN_TEST_PG_BIN") {
        return Some(PathBuf::from(dir)).filter(|d| has_both(d));
    }
    if let Some(path) = std::env::var_os("PATH")
        && let Some(dir) = std::env::split_paths(&path).find(|d| has_both(d))
    {
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

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("no free port on 127.0.0.1: {e}"))
}

fn random_hex(bytes: usize) -> Result<String, String> {
    let mut buf = vec![0u8; bytes];
    getrandom::fill(&mut buf).map_err(|e| format!("no random bytes: {e}"))?;
    Ok(buf.iter().map(|b| format!("{b:02x}")).collect())
}
