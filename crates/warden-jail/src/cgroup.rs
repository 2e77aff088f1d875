//! Cgroup limits for one sandbox: memory, pids and cpu, on cgroup v2 where the controller is
//! available and on v1 otherwise (hybrid hosts mix both). Each sandbox gets its own cgroup,
//! nested under the cgroup warden was started in, removed when the sandbox ends.
//!
//! Discovery parses `/proc/self/mountinfo` and `/proc/self/cgroup` (pure functions); all file
//! access goes through [`CgroupHost::fs_root`], so tests can point it at a fake tree.

use std::fs;
use std::io;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use crate::layer::{Layer, LayerReport};

/// A controller warden limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Controller {
    Memory,
    Pids,
    Cpu,
}

impl Controller {
    pub const ALL: [Controller; 3] = [Controller::Memory, Controller::Pids, Controller::Cpu];
    pub fn name(self) -> &'static str {
        match self {
            Controller::Memory => "memory",
            Controller::Pids => "pids",
            Controller::Cpu => "cpu",
        }
    }
    pub fn layer(self) -> Layer {
        match self {
            Controller::Memory => Layer::CgroupMemory,
            Controller::Pids => Layer::CgroupPids,
            Controller::Cpu => Layer::CgroupCpu,
        }
    }
}

/// One mounted cgroup hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CgroupMount {
    /// `None` for the v2 (unified) hierarchy; the controllers for v1.
    pub v1_controllers: Option<Vec<String>>,
    pub mount_point: PathBuf,
    /// The cgroup path that the mount's root corresponds to (the mountinfo "root" field).
    pub root: PathBuf,
}

/// Parses the cgroup mounts out of `/proc/self/mountinfo`.
pub fn parse_mountinfo(text: &str) -> Vec<CgroupMount> {
    let mut out = Vec::new();
    for line in text.lines() {
        let Some((pre, post)) = line.split_once(" - ") else {
            continue;
        };
        let pre: Vec<&str> = pre.split(' ').collect();
        let post: Vec<&str> = post.split(' ').collect();
        if pre.len() < 5 || post.len() < 3 {
            continue;
        }
        let root = PathBuf::from(unescape(pre[3]));
        let mount_point = PathBuf::from(unescape(pre[4]));
        match post[0] {
            "cgroup2" => out.push(CgroupMount {
                v1_controllers: None,
                mount_point,
                root,
            }),
            "cgroup" => {
                let controllers = post[2]
                    .split(',')
                    .filter(|o| !matches!(*o, "rw" | "ro") && !o.contains('='))
                    .map(str::to_string)
                    .collect();
                out.push(CgroupMount {
                    v1_controllers: Some(controllers),
                    mount_point,
                    root,
                });
            }
            _ => {}
        }
    }
    out
}

/// mountinfo escapes space, tab, newline and backslash as octal.
fn unescape(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'\\'
            && i + 3 < b.len()
            && b[i + 1..i + 4].iter().all(|c| (b'0'..=b'7').contains(c))
        {
            out.push((b[i + 1] - b'0') * 64 + (b[i + 2] - b'0') * 8 + (b[i + 3] - b'0'));
            i += 4;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Parses `/proc/self/cgroup` into (controllers, path); v2 has an empty controller list.
pub fn parse_proc_cgroup(text: &str) -> Vec<(Vec<String>, PathBuf)> {
    text.lines()
        .filter_map(|line| {
            let mut parts = line.splitn(3, ':');
            let _id = parts.next()?;
            let controllers = parts.next()?;
            let path = parts.next()?;
            let list = controllers
                .split(',')
                .filter(|c| !c.is_empty())
                .map(str::to_string)
                .collect();
            Some((list, PathBuf::from(path)))
        })
        .collect()
}

/// Where this process's cgroups are, per hierarchy.
#[derive(Debug, Clone)]
pub struct CgroupHost {
    /// Prefix for every path (`/` on a real host).
    pub fs_root: PathBuf,
    /// Our cgroup directory in the v2 hierarchy, if mounted.
    pub v2_dir: Option<PathBuf>,
    /// Our cgroup directory per v1 controller we care about.
    pub v1_dirs: Vec<(Controller, PathBuf)>,
    /// Our cgroup directory in the v1 `freezer` hierarchy, if mounted: where there is no v2
    /// hierarchy (whose every cgroup has `cgroup.freeze`), sandboxes get a freezer cgroup so
    /// that they can be suspended, and killed without a race against forks.
    pub v1_freezer: Option<PathBuf>,
}

impl CgroupHost {
    /// Reads this process's cgroup placement from `/proc`.
    pub fn discover() -> io::Result<CgroupHost> {
        let mountinfo = crate::host::read_kernel_file("/proc/self/mountinfo")?;
        let cgroup = crate::host::read_kernel_file("/proc/self/cgroup")?;
        Ok(CgroupHost::from_texts(Path::new("/"), &mountinfo, &cgroup))
    }

    pub fn from_texts(fs_root: &Path, mountinfo: &str, proc_cgroup: &str) -> CgroupHost {
        let mounts = parse_mountinfo(mountinfo);
        let ours = parse_proc_cgroup(proc_cgroup);
        let dir_in = |m: &CgroupMount, path: &Path| {
            let rel = path.strip_prefix(&m.root).unwrap_or(path);
            let rel = rel.strip_prefix("/").unwrap_or(rel);
            fs_root
                .join(m.mount_point.strip_prefix("/").unwrap_or(&m.mount_point))
                .join(rel)
        };
        let v2_dir = mounts
            .iter()
            .find(|m| m.v1_controllers.is_none())
            .and_then(|m| {
                let (_, path) = ours.iter().find(|(c, _)| c.is_empty())?;
                Some(dir_in(m, path))
            });
        let mut v1_dirs = Vec::new();
        for c in Controller::ALL {
            let mount = mounts.iter().find(|m| {
                m.v1_controllers
                    .as_ref()
                    .is_some_and(|l| l.iter().any(|x| x == c.name()))
            });
            let place = ours.iter().find(|(l, _)| l.iter().any(|x| x == c.name()));
            if let (Some(m), Some((_, path))) = (mount, place) {
                v1_dirs.push((c, dir_in(m, path)));
            }
        }
        let v1_freezer = mounts
            .iter()
            .find(|m| {
                m.v1_controllers
                    .as_ref()
                    .is_some_and(|l| l.iter().any(|x| x == "freezer"))
            })
            .and_then(|m| {
                let (_, path) = ours
                    .iter()
                    .find(|(l, _)| l.iter().any(|x| x == "freezer"))?;
                Some(dir_in(m, path))
            });
        CgroupHost {
            fs_root: fs_root.to_path_buf(),
            v2_dir,
            v1_dirs,
            v1_freezer,
        }
    }

    /// Controllers the v2 hierarchy offers to our children (from `cgroup.controllers`).
    fn v2_controllers(&self) -> Vec<String> {
        self.v2_dir
            .as_ref()
            .and_then(|d| crate::host::read_kernel_file(d.join("cgroup.controllers")).ok())
            .map(|s| s.split_whitespace().map(str::to_string).collect())
            .unwrap_or_default()
    }

    /// A short description for `doctor`.
    pub fn describe(&self) -> String {
        let v2 = match &self.v2_dir {
            Some(d) => format!(
                "v2 at {} (controllers: {})",
                d.display(),
                self.v2_controllers().join(" ")
            ),
            None => "no v2 hierarchy".to_string(),
        };
        let v1: Vec<String> = self
            .v1_dirs
            .iter()
            .map(|(c, d)| format!("{} at {}", c.name(), d.display()))
            .collect();
        if v1.is_empty() {
            v2
        } else {
            format!("{v2}; v1: {}", v1.join(", "))
        }
    }
}

/// Kills every process in the cgroups at `paths` (one sandbox's, one per hierarchy): the v2
/// `cgroup.kill` where there is one (atomic; it reaches frozen processes too). Otherwise
/// SIGKILL to every listed pid, with the group frozen first (v2 `cgroup.freeze` or the v1
/// `freezer`) so that nothing forks between reading the list and killing it, and thawed so
/// that the signals land.
pub fn kill_cgroups(paths: &[PathBuf]) {
    if let Some(d) = paths.iter().find(|d| d.join("cgroup.kill").exists())
        && fs::write(d.join("cgroup.kill"), "1").is_ok()
    {
        return;
    }
    let freezer = paths.iter().find_map(|d| {
        if d.join("cgroup.freeze").exists() {
            Some((d.join("cgroup.freeze"), "1", "0"))
        } else if d.join("freezer.state").exists() {
            Some((d.join("freezer.state"), "FROZEN", "THAWED"))
        } else {
            None
        }
    });
    if let Some((file, frozen, _)) = &freezer {
        let _ = fs::write(file, frozen);
        // Freezing is asynchronous: wait (briefly) until the kernel reports it done.
        let dir = file.parent().unwrap_or(Path::new("/"));
        for _ in 0..100 {
            let done = fs::read_to_string(dir.join("freezer.state"))
                .map(|s| s.trim() == "FROZEN")
                .or_else(|_| {
                    fs::read_to_string(dir.join("cgroup.events"))
                        .map(|s| s.lines().any(|l| l == "frozen 1"))
                })
                .unwrap_or(true);
            if done {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        }
    }
    for _ in 0..16 {
        let mut pids: Vec<i32> = paths
            .iter()
            .filter_map(|d| fs::read_to_string(d.join("cgroup.procs")).ok())
            .flat_map(|s| {
                s.split_whitespace()
                    .filter_map(|p| p.parse().ok())
                    .collect::<Vec<i32>>()
            })
            .collect();
        pids.sort_unstable();
        pids.dedup();
        if pids.is_empty() {
            break;
        }
        for pid in pids {
            let _ = nix::sys::signal::kill(
                nix::unistd::Pid::from_raw(pid),
                nix::sys::signal::Signal::SIGKILL,
            );
        }
        if let Some((file, _, thawed)) = &freezer {
            let _ = fs::write(file, thawed);
        }
        std::thread::sleep(std::time::Duration::from_millis(1));
    }
}

/// Limits to apply; `None` leaves a controller alone.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct CgroupLimits {
    pub memory: Option<u64>,
    pub pids: Option<u32>,
    pub cpus: Option<f64>,
}

impl CgroupLimits {
    fn wants(&self, c: Controller) -> bool {
        match c {
            Controller::Memory => self.memory.is_some(),
            Controller::Pids => self.pids.is_some(),
            Controller::Cpu => self.cpus.is_some(),
        }
    }
}

const CPU_PERIOD_US: u64 = 100_000;

#[derive(Debug)]
struct Dir {
    path: PathBuf,
    v2: bool,
}

/// The cgroups of one sandbox. Removed on drop (the sandbox must be dead by then).
///
/// The v1 cgroups are only planned by [`SandboxCgroup::create`] and made by
/// [`SandboxCgroup::make_pending`], which the supervisor calls while the sandbox's init sets
/// up its mounts: making a v1 memory cgroup is the slowest step of a sandbox's start on the
/// supervisor's side, and nothing needs it before init moves into it.
#[derive(Debug)]
pub struct SandboxCgroup {
    dirs: Vec<Dir>,
    memory_dir: Option<Dir>,
    /// v1 cgroups to make, with the controller whose limit they carry.
    pending: Vec<(Controller, PathBuf)>,
    limits: CgroupLimits,
    /// The memory cgroup's OOM counter file, opened ahead (opening a cgroup file is the
    /// slow part of reading it, and the count is read when the command ends).
    oom_file: Option<fs::File>,
}

impl SandboxCgroup {
    /// Hands the directories over to whoever removes them instead (children after parents
    /// would be wrong; these are siblings in separate hierarchies, so any order works).
    pub fn into_paths(mut self) -> Vec<PathBuf> {
        self.memory_dir = None;
        let mut paths: Vec<PathBuf> = std::mem::take(&mut self.dirs)
            .into_iter()
            .map(|d| d.path)
            .collect();
        // Planned but never made (the sandbox failed first): removing them finds nothing.
        paths.extend(self.pending.drain(..).map(|(_, p)| p));
        paths
    }
}

static COUNTER: AtomicU32 = AtomicU32::new(0);

/// A name unique among this host's sandboxes: `warden-<pid>-<n>`.
pub fn unique_name() -> String {
    format!(
        "warden-{}-{}",
        std::process::id(),
        COUNTER.fetch_add(1, Ordering::Relaxed)
    )
}

impl SandboxCgroup {
    /// Creates the sandbox's cgroups and sets the limits it can. Returns the cgroup (if any
    /// directory could be made) and one report per controller.
    pub fn create(
        host: &CgroupHost,
        name: &str,
        limits: &CgroupLimits,
    ) -> (SandboxCgroup, Vec<LayerReport>) {
        let mut cg = SandboxCgroup {
            dirs: Vec::new(),
            memory_dir: None,
            pending: Vec::new(),
            limits: *limits,
            oom_file: None,
        };
        let mut reports = Vec::new();
        let v2_available = host.v2_controllers();

        // A v2 cgroup is made whenever the hierarchy exists: even without controllers it
        // gives cgroup.kill (the whole tree, atomically) and cgroup.freeze.
        let mut v2_dir = None;
        let mut v2_error = None;
        if let Some(base) = &host.v2_dir {
            let path = base.join(name);
            match fs::create_dir(&path) {
                Ok(()) => {
                    cg.dirs.push(Dir {
                        path: path.clone(),
                        v2: true,
                    });
                    v2_dir = Some(path);
                }
                Err(e) => v2_error = Some(format!("cannot create {}: {e}", path.display())),
            }
        }

        // No v2 cgroup: a v1 freezer cgroup gives suspend and resume instead.
        if v2_dir.is_none()
            && let Some(base) = &host.v1_freezer
        {
            let path = base.join(name);
            if fs::create_dir(&path).is_ok() {
                cg.dirs.push(Dir { path, v2: false });
            }
        }

        for c in Controller::ALL {
            if !limits.wants(c) {
                reports.push(LayerReport::not_requested(c.layer(), "no limit set"));
                continue;
            }
            let mut why = Vec::new();
            // v2 first.
            if let (Some(dir), Some(base)) = (&v2_dir, &host.v2_dir) {
                if v2_available.iter().any(|x| x == c.name()) {
                    match enable_v2(base, c).and_then(|()| write_limit(dir, c, limits, true)) {
                        Ok(detail) => {
                            if c == Controller::Memory {
                                cg.memory_dir = Some(Dir {
                                    path: dir.clone(),
                                    v2: true,
                                });
                            }
                            reports.push(LayerReport::enforced(
                                c.layer(),
                                format!("{detail} (cgroup v2)"),
                            ));
                            continue;
                        }
                        Err(e) => why.push(format!("v2: {e}")),
                    }
                } else {
                    why.push(format!(
                        "v2: controller not available in {}",
                        base.display()
                    ));
                }
            } else if let Some(e) = &v2_error {
                why.push(format!("v2: {e}"));
            } else if host.v2_dir.is_none() {
                why.push("v2: not mounted".to_string());
            }
            // then v1: planned now, made by make_pending. What can fail there is checked
            // here, so that the report holds; a failure there still stops the sandbox.
            match host.v1_dirs.iter().find(|(x, _)| *x == c) {
                Some((_, base)) => {
                    let path = base.join(name);
                    match v1_writable(base) {
                        Ok(()) => {
                            if c == Controller::Memory {
                                cg.memory_dir = Some(Dir {
                                    path: path.clone(),
                                    v2: false,
                                });
                            }
                            cg.pending.push((c, path));
                            reports.push(LayerReport::enforced(
                                c.layer(),
                                format!("{} (cgroup v1)", limit_detail(c, limits)),
                            ));
                            continue;
                        }
                        Err(e) => why.push(format!("v1: cannot create {}: {e}", path.display())),
                    }
                }
                None => why.push("v1: not mounted".to_string()),
            }
            reports.push(LayerReport::unavailable(c.layer(), why.join("; ")));
        }
        (cg, reports)
    }

    /// A descriptor of the sandbox's v2 cgroup, for `clone3(CLONE_INTO_CGROUP)`: the child
    /// starts inside it, with no migration.
    pub fn v2_fd(&self) -> io::Result<Option<OwnedFd>> {
        match self.dirs.iter().find(|d| d.v2) {
            Some(d) => fs::File::open(&d.path).map(|f| Some(f.into())),
            None => Ok(None),
        }
    }

    /// Makes the planned v1 cgroups and writes their limits. Call before init joins them
    /// (see [`SandboxCgroup::v1_task_files`]); an error means the sandbox must not run.
    pub fn make_pending(&mut self) -> Result<(), String> {
        for (c, path) in std::mem::take(&mut self.pending) {
            // Controllers mounted together share a directory: make it once. It is listed as
            // soon as it exists, so that a failed limit write below still removes it.
            if !self.dirs.iter().any(|d| d.path == path) {
                match fs::create_dir(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
                    Err(e) => return Err(format!("cannot create {}: {e}", path.display())),
                }
                self.dirs.push(Dir {
                    path: path.clone(),
                    v2: false,
                });
            }
            write_limit(&path, c, &self.limits, false)?;
        }
        self.oom_file = self
            .memory_dir
            .as_ref()
            .and_then(|d| fs::File::open(d.path.join(oom_file_name(d.v2))).ok());
        Ok(())
    }

    /// The `tasks` files of the sandbox's v1 cgroups, opened for writing. The single-threaded
    /// child writes `0` to each to move itself: moving one thread skips the global lock that
    /// moving a whole process (cgroup.procs) takes, which costs an RCU grace period.
    pub fn v1_task_files(&self) -> io::Result<Vec<OwnedFd>> {
        self.dirs
            .iter()
            .filter(|d| !d.v2)
            .map(|d| {
                fs::OpenOptions::new()
                    .write(true)
                    .open(d.path.join("tasks"))
                    .map(OwnedFd::from)
                    .map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!("cannot open {}: {e}", d.path.join("tasks").display()),
                        )
                    })
            })
            .collect()
    }

    /// Kills every process in the sandbox's cgroups (see [`kill_cgroups`]).
    pub fn kill_all(&self) {
        kill_cgroups(&self.paths());
    }

    /// How many times the kernel's OOM killer killed a process of this sandbox.
    pub fn oom_kills(&self) -> u64 {
        let Some(d) = &self.memory_dir else { return 0 };
        let text = match &self.oom_file {
            Some(f) => {
                use std::os::unix::fs::FileExt;
                let mut buf = [0u8; 1024];
                f.read_at(&mut buf, 0)
                    .ok()
                    .map(|n| String::from_utf8_lossy(&buf[..n]).into_owned())
            }
            None => fs::read_to_string(d.path.join(oom_file_name(d.v2))).ok(),
        };
        text.and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("oom_kill ")
                    .and_then(|n| n.trim().parse().ok())
            })
        })
        .unwrap_or(0)
    }

    /// Whether no cgroup directory was created or planned.
    pub fn is_empty(&self) -> bool {
        self.dirs.is_empty() && self.pending.is_empty()
    }

    /// Paths of the sandbox's cgroup directories, made or planned.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut paths: Vec<PathBuf> = self.dirs.iter().map(|d| d.path.clone()).collect();
        paths.extend(self.pending.iter().map(|(_, p)| p.clone()));
        paths
    }
}

impl Drop for SandboxCgroup {
    fn drop(&mut self) {
        for d in &self.dirs {
            // A cgroup can be removed once its last process has been reaped; the kernel may
            // take a moment to notice, so retry briefly.
            for attempt in 0..200 {
                match fs::remove_dir(&d.path) {
                    Ok(()) => break,
                    Err(e) if e.kind() == io::ErrorKind::NotFound => break,
                    Err(e) if e.raw_os_error() == Some(libc::EBUSY) && attempt < 199 => {
                        std::thread::sleep(std::time::Duration::from_millis(1));
                    }
                    Err(e) => {
                        tracing::warn!(path = %d.path.display(), error = %e, "could not remove the sandbox's cgroup");
                        break;
                    }
                }
            }
        }
    }
}

/// Where a memory cgroup counts its OOM kills.
fn oom_file_name(v2: bool) -> &'static str {
    if v2 {
        "memory.events"
    } else {
        "memory.oom_control"
    }
}

fn enable_v2(base: &Path, c: Controller) -> Result<(), String> {
    let control = base.join("cgroup.subtree_control");
    let enabled = fs::read_to_string(&control).unwrap_or_default();
    if enabled.split_whitespace().any(|x| x == c.name()) {
        return Ok(());
    }
    // Appending keeps a fake tree (tests) faithful; cgroupfs ignores the offset.
    let write = fs::OpenOptions::new()
        .append(true)
        .open(&control)
        .and_then(|mut f| io::Write::write_all(&mut f, format!("+{}\n", c.name()).as_bytes()));
    write.map_err(|e| {
        format!(
            "cannot enable {} in {}: {e} (a cgroup with processes cannot delegate controllers; start warden in its own cgroup, e.g. `systemd-run --user --scope -p Delegate=yes warden ...`)",
            c.name(),
            control.display()
        )
    })
}

fn write(dir: &Path, file: &str, value: &str) -> Result<(), String> {
    fs::write(dir.join(file), value)
        .map_err(|e| format!("cannot write {value} to {}: {e}", dir.join(file).display()))
}

/// The CPU quota per period for `cpus`.
fn cpu_quota(cpus: f64) -> u64 {
    ((cpus * CPU_PERIOD_US as f64).round() as u64).max(1000)
}

/// What a controller's limit is, for the layer report.
fn limit_detail(c: Controller, limits: &CgroupLimits) -> String {
    match c {
        Controller::Memory => format!("{} bytes, no swap", limits.memory.unwrap_or(u64::MAX)),
        Controller::Pids => format!("{} processes", limits.pids.unwrap_or(u32::MAX)),
        Controller::Cpu => {
            let cpus = limits.cpus.unwrap_or(1.0);
            format!("{cpus} CPUs ({}us per {CPU_PERIOD_US}us)", cpu_quota(cpus))
        }
    }
}

/// Whether a v1 cgroup can be made under `base`: the directory is writable to us. (The
/// hierarchy has the controller: that is where it was found mounted.)
fn v1_writable(base: &Path) -> Result<(), String> {
    nix::unistd::access(base, nix::unistd::AccessFlags::W_OK)
        .map_err(|e| io::Error::from(e).to_string())
}

fn write_limit(
    dir: &Path,
    c: Controller,
    limits: &CgroupLimits,
    v2: bool,
) -> Result<String, String> {
    match c {
        Controller::Memory => {
            let bytes = limits.memory.unwrap_or(u64::MAX);
            if v2 {
                write(dir, "memory.max", &bytes.to_string())?;
                if dir.join("memory.swap.max").exists() {
                    write(dir, "memory.swap.max", "0")?;
                }
            } else {
                write(dir, "memory.limit_in_bytes", &bytes.to_string())?;
                if dir.join("memory.memsw.limit_in_bytes").exists() {
                    write(dir, "memory.memsw.limit_in_bytes", &bytes.to_string())?;
                }
            }
        }
        Controller::Pids => {
            let n = limits.pids.unwrap_or(u32::MAX);
            write(dir, "pids.max", &n.to_string())?;
        }
        Controller::Cpu => {
            let quota = cpu_quota(limits.cpus.unwrap_or(1.0));
            if v2 {
                write(dir, "cpu.max", &format!("{quota} {CPU_PERIOD_US}"))?;
            } else {
                write(dir, "cpu.cfs_period_us", &CPU_PERIOD_US.to_string())?;
                write(dir, "cpu.cfs_quota_us", &quota.to_string())?;
            }
        }
    }
    Ok(limit_detail(c, limits))
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID_MOUNTINFO: &str = "\
25 30 0:22 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
26 25 0:23 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
27 25 0:24 / /sys/fs/cgroup/memory rw,relatime - cgroup cgroup rw,memory
28 25 0:25 / /sys/fs/cgroup/pids rw,relatime - cgroup cgroup rw,pids
29 25 0:26 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
30 25 0:27 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
";
    const HYBRID_CGROUP: &str = "\
9:name=systemd:/
8:pids:/
4:memory:/process_api/abc
1:cpu:/
0::/
";

    #[test]
    fn parses_a_hybrid_host() {
        let host = CgroupHost::from_texts(Path::new("/"), HYBRID_MOUNTINFO, HYBRID_CGROUP);
        assert_eq!(host.v2_dir, Some(PathBuf::from("/sys/fs/cgroup/unified/")));
        assert_eq!(
            host.v1_dirs,
            [
                (
                    Controller::Memory,
                    PathBuf::from("/sys/fs/cgroup/memory/process_api/abc")
                ),
                (Controller::Pids, PathBuf::from("/sys/fs/cgroup/pids/")),
                (Controller::Cpu, PathBuf::from("/sys/fs/cgroup/cpu/")),
            ]
        );
    }

    #[test]
    fn parses_a_v2_host_with_a_namespaced_root() {
        let mi =
            "35 24 0:30 /user.slice /sys/fs/cgroup rw,nosuid - cgroup2 cgroup2 rw,nsdelegate\n";
        let host = CgroupHost::from_texts(Path::new("/"), mi, "0::/user.slice/session-3.scope\n");
        assert_eq!(
            host.v2_dir,
            Some(PathBuf::from("/sys/fs/cgroup/session-3.scope"))
        );
        assert!(host.v1_dirs.is_empty());
        let comounted =
            "26 25 0:23 / /sys/fs/cgroup/cpu,cpuacct rw - cgroup cgroup rw,cpu,cpuacct\n";
        let host = CgroupHost::from_texts(Path::new("/"), comounted, "3:cpu,cpuacct:/a\n");
        assert_eq!(
            host.v1_dirs,
            [(
                Controller::Cpu,
                PathBuf::from("/sys/fs/cgroup/cpu,cpuacct/a")
            )]
        );
    }

    #[test]
    fn a_v1_only_host_gets_a_freezer_cgroup() {
        let tmp = tempfile::tempdir().unwrap();
        fs::create_dir_all(tmp.path().join("sys/fs/cgroup/freezer/app")).unwrap();
        fs::create_dir_all(tmp.path().join("sys/fs/cgroup/pids/app")).unwrap();
        let mi = "\
26 25 0:23 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer
27 25 0:24 / /sys/fs/cgroup/pids rw - cgroup cgroup rw,pids
";
        let host = CgroupHost::from_texts(tmp.path(), mi, "6:freezer:/app\n8:pids:/app\n");
        assert_eq!(host.v2_dir, None);
        let freezer = tmp.path().join("sys/fs/cgroup/freezer/app");
        assert_eq!(host.v1_freezer.as_deref(), Some(freezer.as_path()));
        let limits = CgroupLimits {
            pids: Some(8),
            ..CgroupLimits::default()
        };
        let (mut cg, _) = SandboxCgroup::create(&host, "warden-f", &limits);
        let paths = cg.paths();
        let pids = tmp.path().join("sys/fs/cgroup/pids/app/warden-f");
        assert!(paths.contains(&freezer.join("warden-f")), "{paths:?}");
        assert!(paths.contains(&pids), "{paths:?}");
        assert!(freezer.join("warden-f").is_dir());
        // The v1 limit cgroup is planned, and made while the sandbox's init sets up.
        assert!(!pids.exists());
        cg.make_pending().unwrap();
        assert_eq!(fs::read_to_string(pids.join("pids.max")).unwrap(), "8");
        // The child joins it like any v1 cgroup (through its `tasks` file).
        fs::write(freezer.join("warden-f/tasks"), "").unwrap();
        fs::write(pids.join("tasks"), "").unwrap();
        assert_eq!(cg.v1_task_files().unwrap().len(), 2);
    }

    #[test]
    fn a_planned_cgroup_that_cannot_be_made_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().join("sys/fs/cgroup/memory/app");
        fs::create_dir_all(&base).unwrap();
        let host = CgroupHost::from_texts(
            tmp.path(),
            "27 25 0:24 / /sys/fs/cgroup/memory rw - cgroup cgroup rw,memory\n",
            "4:memory:/app\n",
        );
        let limits = CgroupLimits {
            memory: Some(1 << 20),
            ..CgroupLimits::default()
        };
        let (mut cg, reports) = SandboxCgroup::create(&host, "warden-m", &limits);
        assert!(
            reports
                .iter()
                .any(|r| r.layer == Layer::CgroupMemory && r.is_enforced())
        );
        // The hierarchy goes away between planning and making.
        fs::remove_dir(&base).unwrap();
        let err = cg.make_pending().unwrap_err();
        assert!(err.contains("cannot create"), "{err}");
    }

    #[test]
    fn a_host_with_v2_gets_no_v1_freezer_cgroup() {
        let tmp = tempfile::tempdir().unwrap();
        fake_v2(tmp.path(), "");
        fs::create_dir_all(tmp.path().join("sys/fs/cgroup/freezer")).unwrap();
        let mi = "\
1 1 0:1 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw
26 25 0:23 / /sys/fs/cgroup/freezer rw - cgroup cgroup rw,freezer
";
        let host = CgroupHost::from_texts(tmp.path(), mi, "6:freezer:/\n0::/app\n");
        let (cg, _) = SandboxCgroup::create(&host, "warden-g", &CgroupLimits::default());
        assert!(!tmp.path().join("sys/fs/cgroup/freezer/warden-g").exists());
        assert_eq!(cg.paths().len(), 1);
    }

    #[test]
    fn unescapes_mountinfo_paths() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }

    fn fake_v2(root: &Path, controllers: &str) {
        let base = root.join("sys/fs/cgroup/app");
        fs::create_dir_all(&base).unwrap();
        fs::write(base.join("cgroup.controllers"), controllers).unwrap();
        fs::write(base.join("cgroup.subtree_control"), "").unwrap();
    }

    #[test]
    fn writes_v2_limits_in_a_fake_tree() {
        let tmp = tempfile::tempdir().unwrap();
        fake_v2(tmp.path(), "cpu memory pids");
        let host = CgroupHost::from_texts(
            tmp.path(),
            "1 1 0:1 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "0::/app\n",
        );
        let limits = CgroupLimits {
            memory: Some(64 << 20),
            pids: Some(32),
            cpus: Some(1.5),
        };
        let (cg, reports) = SandboxCgroup::create(&host, "warden-test", &limits);
        let dir = tmp.path().join("sys/fs/cgroup/app/warden-test");
        assert!(reports.iter().all(LayerReport::is_enforced), "{reports:?}");
        assert_eq!(
            fs::read_to_string(dir.join("memory.max")).unwrap(),
            (64u64 << 20).to_string()
        );
        assert_eq!(fs::read_to_string(dir.join("pids.max")).unwrap(), "32");
        assert_eq!(
            fs::read_to_string(dir.join("cpu.max")).unwrap(),
            "150000 100000"
        );
        let enabled =
            fs::read_to_string(tmp.path().join("sys/fs/cgroup/app/cgroup.subtree_control"))
                .unwrap();
        for c in ["+memory", "+pids", "+cpu"] {
            assert!(
                enabled.lines().any(|l| l == c),
                "{c} not enabled: {enabled:?}"
            );
        }
        // a plain directory with files in it cannot be rmdir'ed; clean it for the drop
        for f in ["memory.max", "pids.max", "cpu.max"] {
            fs::remove_file(dir.join(f)).unwrap();
        }
        drop(cg);
        assert!(!dir.exists());
    }

    #[test]
    fn reports_why_a_limit_cannot_be_set() {
        let tmp = tempfile::tempdir().unwrap();
        fake_v2(tmp.path(), "cpu");
        let host = CgroupHost::from_texts(
            tmp.path(),
            "1 1 0:1 / /sys/fs/cgroup rw - cgroup2 cgroup2 rw\n",
            "0::/app\n",
        );
        let limits = CgroupLimits {
            memory: Some(64 << 20),
            pids: None,
            cpus: None,
        };
        let (_cg, reports) = SandboxCgroup::create(&host, "warden-x", &limits);
        let mem = reports
            .iter()
            .find(|r| r.layer == Layer::CgroupMemory)
            .unwrap();
        let text = format!("{mem:?}");
        assert!(
            text.contains("controller not available") && text.contains("v1: not mounted"),
            "{text}"
        );
        let pids = reports
            .iter()
            .find(|r| r.layer == Layer::CgroupPids)
            .unwrap();
        assert!(matches!(
            pids.status,
            crate::layer::LayerStatus::NotRequested { .. }
        ));
    }
}
