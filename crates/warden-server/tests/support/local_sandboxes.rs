//! Real sandboxes for tests: the `warden` binary the local driver starts, a data directory
//! that kills whatever sandbox is left in it when dropped, and a local driver with one
//! template that may reach a port of the host's loopback (where a test's git server listens).
//!
//! Needs root or unprivileged user namespaces, Landlock and seccomp (like every sandbox test)
//! and the `warden` binary: `WARDEN_EXE`, else the one next to the test's target directory,
//! built with `cargo build -p warden` when missing.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use warden_sandbox::{Driver, LocalConfig, LocalDriver, MemoryStore, Template};

/// The `warden` binary the sandboxes run: `WARDEN_EXE`, else `<target>/<profile>/warden`
/// (built once with cargo when it is not there).
pub fn warden_exe() -> PathBuf {
    static EXE: OnceLock<PathBuf> = OnceLock::new();
    EXE.get_or_init(|| {
        if let Some(p) = std::env::var_os("WARDEN_EXE") {
            return PathBuf::from(p);
        }
        // A test runs as <target>/<profile>/deps/<test>-<hash>.
        let exe = std::env::current_exe().expect("the test's own path");
        let profile_dir = exe
            .parent()
            .and_then(Path::parent)
            .expect("the test runs from <target>/<profile>/deps")
            .to_path_buf();
        let warden = profile_dir.join("warden");
        if !warden.is_file() {
            let mut cargo = std::process::Command::new(env!("CARGO"));
            cargo
                .args(["build", "-p", "warden", "--bin", "warden"])
                .current_dir(env!("CARGO_MANIFEST_DIR"))
                .env(
                    "CARGO_TARGET_DIR",
                    profile_dir.parent().expect("the target directory"),
                );
            match profile_dir.file_name().and_then(|n| n.to_str()) {
                Some("debug") | None => {}
                Some("release") => {
                    cargo.arg("--release");
                }
                Some(other) => {
                    cargo.args(["--profile", other]);
                }
            }
            let status = cargo.status().expect("run cargo");
            assert!(
                status.success() && warden.is_file(),
                "these tests need the warden binary; `cargo build -p warden` failed ({status}); \
                 or set WARDEN_EXE"
            );
        }
        warden
    })
    .clone()
}

/// A directory under /tmp (never under /root, which is on the sensitive-path blocklist)
/// holding the data directories of one or more drivers. Sandboxes outlive their driver on
/// purpose, so dropping this kills every sandbox left under it (its cgroups and processes)
/// before the directory goes, also when a test failed.
#[derive(Debug)]
pub struct DataDir(tempfile::TempDir);

impl DataDir {
    pub fn new(prefix: &str) -> DataDir {
        DataDir(
            tempfile::Builder::new()
                .prefix(prefix)
                .tempdir_in("/tmp")
                .expect("a data directory in /tmp"),
        )
    }

    pub fn path(&self) -> &Path {
        self.0.path()
    }

    /// `<this>/<name>`, created.
    pub fn sub(&self, name: &str) -> PathBuf {
        let dir = self.path().join(name);
        std::fs::create_dir_all(&dir).expect("create a data directory");
        dir
    }
}

impl Drop for DataDir {
    fn drop(&mut self) {
        // `sandboxes/` of this directory and of its subdirectories (one per driver).
        let mut roots = vec![self.path().join("sandboxes")];
        if let Ok(subs) = std::fs::read_dir(self.path()) {
            roots.extend(subs.flatten().map(|d| d.path().join("sandboxes")));
        }
        for root in roots {
            for state in sandbox_states(&root) {
                kill_sandbox(&state);
            }
        }
    }
}

/// The `state.json` of every sandbox under a driver's `sandboxes/`.
fn sandbox_states(sandboxes: &Path) -> Vec<serde_json::Value> {
    let Ok(dirs) = std::fs::read_dir(sandboxes) else {
        return Vec::new();
    };
    dirs.flatten()
        .filter_map(|d| std::fs::read_to_string(d.path().join("state.json")).ok())
        .filter_map(|text| serde_json::from_str(&text).ok())
        .collect()
}

fn kill_sandbox(state: &serde_json::Value) {
    for cg in state["cgroups"].as_array().into_iter().flatten() {
        if let Some(cg) = cg.as_str() {
            let _ = std::fs::write(Path::new(cg).join("cgroup.kill"), "1");
            if let Ok(procs) = std::fs::read_to_string(Path::new(cg).join("cgroup.procs")) {
                for pid in procs.split_whitespace() {
                    kill9(pid);
                }
            }
        }
    }
    if let Some(pid) = state["pid"].as_u64() {
        kill9(&pid.to_string());
    }
}

fn kill9(pid: &str) {
    let _ = std::process::Command::new("kill")
        .args(["-9", pid])
        .stderr(std::process::Stdio::null())
        .status();
}

/// The egress policy of a template whose sandboxes reach the host's loopback through their
/// proxy, by the name `localhost`, on `port` only.
pub fn loopback_policy(port: u16) -> String {
    format!(
        "[network]\nmode = \"proxy\"\nallow_domains = [\"localhost\"]\n\
         allow_cidrs = [\"127.0.0.0/8\"]\nallow_ports = [{port}]\n"
    )
}

/// A local driver over `data` with the template `template` made from `policy` (TOML).
pub async fn local_driver(data: &Path, template: &str, policy: &str) -> Arc<LocalDriver> {
    let cfg = LocalConfig::with_exe(data, warden_exe());
    let driver = Arc::new(
        LocalDriver::new(cfg, Arc::new(MemoryStore::new())).expect("start the local driver"),
    );
    driver
        .put_template(Template {
            name: template.into(),
            policy: toml::from_str(policy).expect("a valid policy"),
            shutdown_after: Some(Duration::from_secs(600)),
            idle_timeout: None,
            workspace_quota: None,
        })
        .await
        .expect("put the template");
    driver
}

/// The sandboxes under `data` that still have a directory (a deleted sandbox has none).
pub fn sandbox_dirs(data: &Path) -> Vec<String> {
    let Ok(dirs) = std::fs::read_dir(data.join("sandboxes")) else {
        return Vec::new();
    };
    dirs.flatten()
        .map(|d| d.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Waits until `driver` (over `data`) holds no sandbox and none has a directory left;
/// panics naming what remains after `timeout`.
pub async fn assert_no_sandboxes(driver: &LocalDriver, data: &Path, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    loop {
        let listed: Vec<String> = driver
            .list()
            .await
            .into_iter()
            .map(|s| {
                format!(
                    "{} ({:?}, labels {:?}, shutdown at {:?})",
                    s.id, s.phase, s.labels, s.shutdown_at
                )
            })
            .collect();
        let dirs = sandbox_dirs(data);
        if listed.is_empty() && dirs.is_empty() {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "sandboxes remain under {}: listed {listed:?}, directories {dirs:?}",
            data.display()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
