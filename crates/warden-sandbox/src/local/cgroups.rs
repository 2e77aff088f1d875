//! A running sandbox's cgroups, seen from outside: freeze and thaw (cgroup v2
//! `cgroup.freeze`, or the v1 `freezer` controller), kill everything, remove the
//! directories. The paths come from the supervisor's state file and are accepted only if
//! they are that supervisor's own (`warden-<pid>-<n>`), so a damaged record can never make
//! the driver touch another cgroup.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Whether `name` is a cgroup that `warden run` with pid `pid` creates: `warden-<pid>-<n>`.
pub fn owned_by(name: &str, pid: u32) -> bool {
    name.strip_prefix(&format!("warden-{pid}-"))
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()))
}

/// The cgroups of one sandbox.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SandboxCgroups {
    paths: Vec<PathBuf>,
}

/// A v2 directory has `cgroup.freeze` (every non-root cgroup); a v1 freezer directory has
/// `freezer.state`.
fn is_v2(p: &Path) -> bool {
    p.join("cgroup.freeze").exists()
}
fn is_v1_freezer(p: &Path) -> bool {
    p.join("freezer.state").exists()
}

fn wait_until(wait: Duration, mut done: impl FnMut() -> bool) -> bool {
    let deadline = Instant::now() + wait;
    let mut pause = Duration::from_micros(200);
    loop {
        if done() {
            return true;
        }
        if Instant::now() >= deadline {
            return false;
        }
        std::thread::sleep(pause);
        pause = (pause * 2).min(Duration::from_millis(10));
    }
}

impl SandboxCgroups {
    /// Accepts the paths that supervisor `pid` reported; refuses any it does not own.
    pub fn new(paths: Vec<PathBuf>, pid: u32) -> Result<SandboxCgroups, String> {
        for p in &paths {
            let name = p.file_name().and_then(|n| n.to_str()).unwrap_or("");
            if !p.is_absolute() || !owned_by(name, pid) {
                return Err(format!(
                    "{} is not a cgroup of supervisor {pid} (warden-{pid}-N)",
                    p.display()
                ));
            }
        }
        Ok(SandboxCgroups { paths })
    }

    pub fn paths(&self) -> &[PathBuf] {
        &self.paths
    }

    fn v2(&self) -> Option<&PathBuf> {
        self.paths.iter().find(|p| is_v2(p))
    }

    fn v1_freezer(&self) -> Option<&PathBuf> {
        self.paths.iter().find(|p| is_v1_freezer(p))
    }

    /// Freezes every process of the sandbox and waits until the kernel reports it frozen.
    pub fn freeze(&self, wait: Duration) -> Result<(), String> {
        self.set_frozen(true, wait)
    }

    /// Thaws the sandbox and waits until it runs again.
    pub fn thaw(&self, wait: Duration) -> Result<(), String> {
        self.set_frozen(false, wait)
    }

    /// Whether the kernel reports the sandbox frozen.
    pub fn is_frozen(&self) -> bool {
        if let Some(d) = self.v2() {
            return fs::read_to_string(d.join("cgroup.events"))
                .is_ok_and(|s| s.lines().any(|l| l == "frozen 1"));
        }
        if let Some(d) = self.v1_freezer() {
            return fs::read_to_string(d.join("freezer.state")).is_ok_and(|s| s.trim() == "FROZEN");
        }
        false
    }

    fn set_frozen(&self, frozen: bool, wait: Duration) -> Result<(), String> {
        let (dir, file, value) = if let Some(d) = self.v2() {
            (d, "cgroup.freeze", if frozen { "1" } else { "0" })
        } else if let Some(d) = self.v1_freezer() {
            (d, "freezer.state", if frozen { "FROZEN" } else { "THAWED" })
        } else {
            return Err(format!(
                "the sandbox has no cgroup that can freeze (no cgroup v2 directory and no v1 freezer among {})",
                self.describe()
            ));
        };
        fs::write(dir.join(file), value)
            .map_err(|e| format!("cannot write {value} to {}: {e}", dir.join(file).display()))?;
        if wait_until(wait, || self.is_frozen() == frozen) {
            Ok(())
        } else {
            Err(format!(
                "{} did not become {} within {wait:?}",
                dir.display(),
                if frozen { "frozen" } else { "thawed" }
            ))
        }
    }

    fn describe(&self) -> String {
        if self.paths.is_empty() {
            return "none".into();
        }
        self.paths
            .iter()
            .map(|p| p.display().to_string())
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// The pids in the sandbox's cgroups.
    pub fn pids(&self) -> Vec<i32> {
        let mut out: Vec<i32> = self
            .paths
            .iter()
            .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|s| {
                s.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        out.sort_unstable();
        out.dedup();
        out
    }

    /// Kills every process of the sandbox (`warden_jail::cgroup::kill_cgroups`).
    pub fn kill_all(&self) {
        warden_jail::cgroup::kill_cgroups(&self.paths);
    }

    /// Removes the directories, waiting up to `wait` for the kernel to let go of the last
    /// processes. Directories already gone are fine.
    pub fn remove(&self, wait: Duration) -> Result<(), String> {
        let mut failed = Vec::new();
        for d in &self.paths {
            let mut last = None;
            let done = wait_until(wait, || match fs::remove_dir(d) {
                Ok(()) => true,
                Err(e) if e.kind() == io::ErrorKind::NotFound => true,
                Err(e) => {
                    last = Some(e);
                    false
                }
            });
            if !done {
                failed.push(format!(
                    "{}: {}",
                    d.display(),
                    last.map(|e| e.to_string()).unwrap_or_default()
                ));
            }
        }
        if failed.is_empty() {
            Ok(())
        } else {
            Err(format!("cannot remove cgroups: {}", failed.join("; ")))
        }
    }

    /// Whether any directory still exists.
    pub fn any_exists(&self) -> bool {
        self.paths.iter().any(|p| p.exists())
    }
}

/// The cgroups a supervisor `pid` made under `parents` (used when its state file is
/// missing: it died before writing it, or the record was lost).
pub fn find_owned(parents: &[PathBuf], pid: u32) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for parent in parents {
        let Ok(entries) = fs::read_dir(parent) else {
            continue;
        };
        for e in entries.flatten() {
            if e.file_name().to_str().is_some_and(|n| owned_by(n, pid)) {
                out.push(e.path());
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ownership() {
        let cases = [
            ("warden-12-0", 12, true),
            ("warden-12-345", 12, true),
            ("warden-12-", 12, false),
            ("warden-123-0", 12, false),
            ("warden-12-0x", 12, false),
            ("other-12-0", 12, false),
            ("..", 12, false),
        ];
        for (name, pid, want) in cases {
            assert_eq!(owned_by(name, pid), want, "{name} {pid}");
        }
        assert!(SandboxCgroups::new(vec!["/sys/fs/cgroup/x/warden-7-1".into()], 7).is_ok());
        assert!(SandboxCgroups::new(vec!["/sys/fs/cgroup/x/warden-8-1".into()], 7).is_err());
        assert!(SandboxCgroups::new(vec!["/sys/fs/cgroup/x".into()], 7).is_err());
        assert!(SandboxCgroups::new(vec!["warden-7-1".into()], 7).is_err());
    }

    #[test]
    fn freezing_without_a_freezer_is_an_error() {
        let dir = std::env::temp_dir().join(format!("warden-cg-test-{}", std::process::id()));
        let cg = dir.join(format!("warden-{}-0", std::process::id()));
        fs::create_dir_all(&cg).unwrap();
        let c = SandboxCgroups::new(vec![cg.clone()], std::process::id()).unwrap();
        let e = c.freeze(Duration::from_millis(10)).unwrap_err();
        assert!(e.contains("no cgroup that can freeze"), "{e}");
        // A fake v1 freezer: the state is what was last written.
        fs::write(cg.join("freezer.state"), "THAWED").unwrap();
        c.freeze(Duration::from_millis(10)).unwrap();
        assert!(c.is_frozen());
        c.thaw(Duration::from_millis(10)).unwrap();
        assert!(!c.is_frozen());
        fs::remove_dir_all(&dir).unwrap();
    }
}
