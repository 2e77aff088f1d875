//! The supervisor of a local sandbox: a detached `warden run` holding `warden sandboxd` as
//! its jailed command. Its directory layout, how it is started, and how the driver tells
//! whether it still lives (pid and start time, so a reused pid is never mistaken for it).

use std::ffi::OsString;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The files of one sandbox under `<data>/sandboxes/<id>/`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Layout {
    pub dir: PathBuf,
    /// A host directory used as the workspace instead of `<dir>/workspace`.
    pub external_workspace: Option<PathBuf>,
}

impl Layout {
    pub fn new(data: &Path, id: &str) -> Layout {
        Layout::at(data.join("sandboxes").join(id))
    }
    /// The layout of the sandbox directory `dir`.
    pub fn at(dir: PathBuf) -> Layout {
        Layout {
            dir,
            external_workspace: None,
        }
    }
    /// The read-write tree commands work in.
    pub fn workspace(&self) -> PathBuf {
        self.external_workspace
            .clone()
            .unwrap_or_else(|| self.dir.join("workspace"))
    }
    /// Holds sandboxd's socket; bound read-write into the sandbox.
    pub fn run(&self) -> PathBuf {
        self.dir.join("run")
    }
    pub fn socket(&self) -> PathBuf {
        self.run().join("sandboxd.sock")
    }
    pub fn policy(&self) -> PathBuf {
        self.dir.join("policy.toml")
    }
    /// The supervisor's stdout and stderr.
    pub fn log(&self) -> PathBuf {
        self.dir.join("log")
    }
    /// Written by `warden run --state-file` once the cgroups exist.
    pub fn state(&self) -> PathBuf {
        self.dir.join("state.json")
    }
}

/// What `warden run --state-file` writes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JailState {
    /// The jail's id, also its cgroups' name (`warden-<pid>-<n>`).
    pub id: String,
    /// The supervisor's pid.
    pub pid: u32,
    pub cgroups: Vec<PathBuf>,
}

impl JailState {
    pub fn read(path: &Path) -> io::Result<JailState> {
        let text = std::fs::read_to_string(path)?;
        serde_json::from_str(&text).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))
    }
}

/// The longest path a unix socket can be bound at (`sun_path` holds 108 bytes with the NUL).
pub const MAX_SOCKET_PATH: usize = 107;

/// How to start one sandbox's supervisor.
#[derive(Debug, Clone)]
pub struct Launch<'a> {
    pub exe: &'a Path,
    pub layout: &'a Layout,
    pub quota: u64,
    /// Extra `warden run` flags from the driver's configuration (e.g. `--allow-degraded`).
    pub run_args: &'a [OsString],
}

impl Launch<'_> {
    /// `warden run ... -- warden sandboxd ...`.
    pub fn argv(&self) -> Vec<OsString> {
        let l = self.layout;
        let mut a: Vec<OsString> = vec!["run".into(), "--policy".into()];
        a.push(l.policy().into());
        a.push("--workspace".into());
        a.push(l.workspace().into());
        a.push("--ro".into());
        a.push(self.exe.into());
        a.push("--rw".into());
        a.push(l.run().into());
        a.push("--no-tty".into());
        a.push("--setsid".into());
        a.push("--state-file".into());
        a.push(l.state().into());
        a.extend(self.run_args.iter().cloned());
        a.push("--".into());
        a.push(self.exe.into());
        a.push("sandboxd".into());
        a.push("--listen".into());
        let mut listen = OsString::from("unix:");
        listen.push(l.socket());
        a.push(listen);
        a.push("--root".into());
        a.push(l.workspace().into());
        a.push("--jail".into());
        a.push("inherited".into());
        a.push("--quota".into());
        a.push(self.quota.to_string().into());
        a
    }
}

/// A process identified by pid and start time (clock ticks after boot, field 22 of
/// `/proc/PID/stat`), which a reused pid does not share.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProcessId {
    pub pid: u32,
    pub start_time: u64,
}

/// The state letter and start time of a process, from `/proc/PID/stat`.
pub fn parse_stat(text: &str) -> Option<(char, u64)> {
    // The command name (field 2) is in parentheses and may hold anything, `)` included.
    let rest = &text[text.rfind(')')? + 1..];
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let state = fields.first()?.chars().next()?;
    // Field 3 is the state; field 22 the start time.
    let start = fields.get(19)?.parse().ok()?;
    Some((state, start))
}

impl ProcessId {
    /// Identifies a live process by its pid.
    pub fn of(pid: u32) -> Option<ProcessId> {
        let text = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
        let (_, start_time) = parse_stat(&text)?;
        Some(ProcessId { pid, start_time })
    }

    /// Whether this very process is still running (not a zombie, not a newer process with
    /// the same pid).
    pub fn alive(&self) -> bool {
        match std::fs::read_to_string(format!("/proc/{}/stat", self.pid))
            .ok()
            .as_deref()
            .and_then(parse_stat)
        {
            Some((state, start)) => start == self.start_time && !matches!(state, 'Z' | 'X' | 'x'),
            None => false,
        }
    }

    /// Sends SIGKILL if it is still this process.
    pub fn kill(&self) {
        if self.alive() {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(self.pid as i32),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
    }
}

/// The end of the supervisor's log, for a failure message.
pub fn log_tail(layout: &Layout, max: usize) -> String {
    let text = std::fs::read(layout.log()).unwrap_or_default();
    let start = text.len().saturating_sub(max);
    String::from_utf8_lossy(&text[start..]).trim().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stat_parsing() {
        let line = "1234 (we(ir) d) S 1 1234 1234 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 987654 1000 10 18446744073709551615";
        assert_eq!(parse_stat(line), Some(('S', 987654)));
        assert_eq!(parse_stat("1 (x) Z 0"), None);
        assert_eq!(parse_stat("garbage"), None);
        let me = ProcessId::of(std::process::id()).unwrap();
        assert!(me.alive());
        let other = ProcessId {
            start_time: me.start_time + 1,
            ..me
        };
        assert!(
            !other.alive(),
            "a different start time is a different process"
        );
    }

    #[test]
    fn argv_jails_sandboxd() {
        let layout = Layout::new(Path::new("/data"), "sbx-1");
        let extra = [
            OsString::from("--allow-degraded"),
            OsString::from("cgroups"),
        ];
        let l = Launch {
            exe: Path::new("/bin/warden"),
            layout: &layout,
            quota: 5,
            run_args: &extra,
        };
        let argv: Vec<String> = l
            .argv()
            .into_iter()
            .map(|a| a.into_string().unwrap())
            .collect();
        let text = argv.join(" ");
        assert!(text.starts_with("run --policy /data/sandboxes/sbx-1/policy.toml --workspace /data/sandboxes/sbx-1/workspace --ro /bin/warden --rw /data/sandboxes/sbx-1/run --no-tty --setsid --state-file /data/sandboxes/sbx-1/state.json --allow-degraded cgroups -- /bin/warden sandboxd "), "{text}");
        assert!(text.ends_with("--listen unix:/data/sandboxes/sbx-1/run/sandboxd.sock --root /data/sandboxes/sbx-1/workspace --jail inherited --quota 5"), "{text}");
    }
}
