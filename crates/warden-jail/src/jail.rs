//! Preparing and running one sandbox: the supervisor side of a spawn.
//!
//! [`Jail::prepare`] resolves the policy against the host (paths, homes, blocklist), builds
//! every artefact the child needs (mount plan, Landlock ruleset, seccomp filters, cgroup,
//! environment, argv), and decides what each layer will be. Where a layer the policy needs
//! is unavailable, it refuses unless that layer was allowed to degrade. [`Jail::run`] clones
//! the sandbox's init, completes its setup from outside (id maps, cgroups), and supervises
//! it to the end: signals, terminal, timeout, exit status.

use std::ffi::{CString, OsStr, OsString};
use std::fs;
use std::io::{self, Read, Write};
use std::os::fd::{AsFd, AsRawFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use nix::poll::{PollFd, PollFlags, PollTimeout, poll};
use nix::sys::signal::{SigSet, Signal};
use nix::sys::signalfd::SignalFd;
use nix::sys::socket::{AddressFamily, SockFlag, SockType, socketpair};
use serde::Serialize;
use warden_policy::{
    HomeMode, Isolation, NetworkMode, PolicyError, ReadScope, SandboxPolicy, blocklist,
};

use crate::cgroup::{CgroupHost, CgroupLimits, SandboxCgroup};
use crate::child::{self, ChildPlan, ExecArrays, Msg, kind, stage};
use crate::host::{self, HostUser};
use crate::landlock::{self as ll, FsRule, LandlockSupport, NetRules};
use crate::layer::{Degraded, Layer, LayerReport, LayerStatus};
use crate::mounts::{self, Bind, Kind, MountInputs, MountOp};
use crate::netns;
use crate::seccomp::{self, SeccompOptions};
use crate::sys;

/// System directories readable with `read_scope = "system"`, where they exist.
pub const SYSTEM_DIRS: &[&str] = &[
    "/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc", "/opt", "/nix",
];

/// What to run, and how.
#[derive(Debug)]
pub struct JailConfig {
    /// A validated policy (see [`SandboxPolicy::validate`]).
    pub policy: SandboxPolicy,
    /// The program and its arguments.
    pub command: Vec<OsString>,
    /// The directory warden was started in (host path).
    pub cwd: PathBuf,
    /// The host environment, filtered through the policy.
    pub host_env: Vec<(OsString, OsString)>,
    /// Layers that may be missing without refusing to run.
    pub degraded: Degraded,
    /// Give the command a pseudo-terminal of its own, relayed to warden's terminal.
    pub tty: bool,
    /// Descriptors for the command's stdin, stdout and stderr; `None` inherits warden's.
    pub stdio: [Option<OwnedFd>; 3],
    /// Pass SIGINT, SIGTERM, SIGHUP, ... received by this process on to the command.
    /// Needs a single-threaded caller (the signals are blocked and read from a signalfd).
    pub forward_signals: bool,
    /// The way out for network mode `proxy` (full isolation): see [`EgressBridge`].
    pub egress: Option<EgressBridge>,
}

/// A loopback port inside the sandbox bridged to the supervisor's side. The sandbox's init
/// listens on 127.0.0.1:`port` in the sandbox's own network namespace and hands the
/// listening socket over; it arrives on `listener` once the sandbox is set up. Whoever
/// receives it (the egress proxy) accepts the sandbox's connections from it directly: no
/// veth, no host routing. Landlock lets the sandbox connect to this port and nowhere else.
#[derive(Debug, Clone)]
pub struct EgressBridge {
    pub port: u16,
    pub listener: std::sync::mpsc::Sender<OwnedFd>,
    /// Variables that point the sandbox's clients at the proxy (`HTTPS_PROXY`, route URLs,
    /// git's `GIT_CONFIG_*` rewrites). Set by warden, not the user, so the injection rule of
    /// `environment.set` does not apply; they win over any value the policy sets.
    pub env: Vec<(String, String)>,
}

/// Why a sandbox could not run.
#[derive(Debug, thiserror::Error)]
pub enum JailError {
    /// The policy or a path it names is wrong (exit 64).
    #[error("{0}")]
    Policy(#[from] PolicyError),
    /// Layers the policy needs cannot be enforced on this host (exit 69).
    #[error("{}", unavailable_message(.0))]
    Unavailable(Vec<LayerReport>),
    /// Setting up the sandbox failed (exit 125).
    #[error("cannot {step}: {errno}")]
    Setup {
        step: String,
        errno: nix::errno::Errno,
    },
    /// The policy asks for something this build cannot do yet (exit 69).
    #[error("{0}")]
    Unsupported(String),
    /// Something else went wrong on the host side (exit 70).
    #[error("{0}")]
    Host(String),
}

fn unavailable_message(reports: &[LayerReport]) -> String {
    let mut s = String::from(
        "refusing to run: the policy needs isolation layers this host cannot enforce:\n",
    );
    for r in reports {
        if let LayerStatus::Unavailable { reason } = &r.status {
            s.push_str(&format!("  {}: {}\n", r.layer, reason));
        }
    }
    let names: Vec<&str> = reports.iter().map(|r| r.layer.name()).collect();
    s.push_str(&format!(
        "run `warden doctor` for details; to run with a weaker sandbox anyway, add {}",
        names
            .iter()
            .map(|n| format!("--allow-degraded {n}"))
            .collect::<Vec<_>>()
            .join(" ")
    ));
    s
}

impl JailError {
    /// The process exit code warden uses for this error.
    pub fn exit_code(&self) -> i32 {
        match self {
            JailError::Policy(_) => 64,
            JailError::Unavailable(_) | JailError::Unsupported(_) => 69,
            JailError::Setup { .. } => 125,
            JailError::Host(_) => 70,
        }
    }
}

/// How the command ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Termination {
    Exited {
        code: i32,
    },
    Signaled {
        signal: i32,
    },
    /// The wall-clock timeout fired and the whole process tree was killed.
    TimedOut {
        after_ms: u64,
    },
    /// The program was not found inside the sandbox.
    NotFound,
    /// The program was found but could not be executed.
    NotExecutable {
        error: String,
    },
}

/// The result of running a sandbox.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    pub id: String,
    pub termination: Termination,
    /// The kernel's OOM killer acted inside the sandbox's memory limit.
    pub memory_limit_hit: bool,
    pub layers: Vec<LayerReport>,
    pub warnings: Vec<String>,
    pub duration_ms: f64,
}

/// A sandbox ready to start.
#[derive(Debug)]
pub struct Jail {
    id: String,
    plan: ChildPlan,
    exec: ExecArrays,
    slots: Vec<RawFd>,
    _landlock: Option<OwnedFd>,
    /// Where the egress bridge's listening socket goes when init hands it over.
    egress: Option<std::sync::mpsc::Sender<OwnedFd>>,
    /// The stack init starts the command on (see `ChildPlan::command_stack_top`).
    _command_stack: sys::TaskStack,
    cgroup: Option<SandboxCgroup>,
    layers: Vec<LayerReport>,
    warnings: Vec<String>,
    timeout: Option<Duration>,
    stdio: [Option<OwnedFd>; 3],
    forward_signals: bool,
    scratch: Option<PathBuf>,
    /// Kept to retry in pod isolation when the kernel refuses namespaces at clone time.
    retry: Option<Box<JailConfig>>,
}

/// The read grants of a read scope: the system directories that exist (canonical), or the
/// whole root. `in_root` maps a host path into the sandbox's root directory.
pub(crate) fn scope_read_grants(
    scope: ReadScope,
    in_root: impl Fn(&str) -> PathBuf,
) -> Vec<(PathBuf, ll::Access_)> {
    match scope {
        ReadScope::System => SYSTEM_DIRS
            .iter()
            .filter_map(|d| fs::canonicalize(in_root(d)).ok())
            .map(|c| (c, ll::read()))
            .collect(),
        ReadScope::Host => vec![(in_root("/"), ll::read())],
    }
}

/// What pod isolation (no mounts of its own) grants besides the policy's paths: the host's
/// `/proc` and `/sys` read-only, and the device nodes of a minimal `/dev`.
pub(crate) fn pod_base_grants() -> Vec<(PathBuf, ll::Access_)> {
    let mut grants = vec![("/proc".into(), ll::read()), ("/sys".into(), ll::read())];
    for dev in mounts::DEVICES {
        let p = PathBuf::from(format!("/dev/{dev}"));
        if ll::is_char_device(&p) {
            grants.push((p, ll::device()));
        }
    }
    grants
}

fn policy_err(field: &str, msg: String) -> JailError {
    JailError::Policy(PolicyError::new(field, msg))
}

fn canonical_existing(field: &str, path: &Path) -> Result<PathBuf, JailError> {
    fs::canonicalize(path).map_err(|e| {
        let why = if e.kind() == io::ErrorKind::NotFound {
            "does not exist".to_string()
        } else {
            e.to_string()
        };
        policy_err(field, format!("`{}` {why}", path.display()))
    })
}

/// The canonical path and kind of an existing path, symlinks followed (a dangling one is
/// not there). A path with no symlink, `.` or `..` takes one `openat2` and one stat; any
/// other, one open, one stat and one readlink, instead of a readlink per component.
fn resolve_existing(path: &Path) -> Option<(PathBuf, Kind)> {
    use std::os::unix::fs::OpenOptionsExt;
    use std::path::Component;
    // Most blocklist paths hold no symlink, `.` or `..`: then the path is its own canonical
    // form, which an open that refuses symlinks proves without asking /proc.
    if path.is_absolute()
        && path
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)))
    {
        use nix::fcntl::{OFlag, OpenHow, ResolveFlag, openat2};
        let how = OpenHow::new()
            .flags(OFlag::O_PATH | OFlag::O_CLOEXEC)
            .resolve(ResolveFlag::RESOLVE_NO_SYMLINKS);
        match openat2(nix::fcntl::AT_FDCWD, path, how) {
            Ok(fd) => {
                let kind = match nix::sys::stat::fstat(&fd) {
                    Ok(st) if st.st_mode & libc::S_IFMT == libc::S_IFDIR => Kind::Dir,
                    Ok(_) => Kind::File,
                    Err(_) => return None,
                };
                return Some((path.components().collect(), kind));
            }
            Err(nix::errno::Errno::ENOENT | nix::errno::Errno::ENOTDIR) => return None,
            // A symlink on the way (ELOOP), or a kernel without openat2: the general way.
            Err(_) => {}
        }
    }
    let f = fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(path)
        .ok()?;
    let kind = if f.metadata().ok()?.is_dir() {
        Kind::Dir
    } else {
        Kind::File
    };
    // The kernel's name for the open file is absolute, unless the file is gone (" (deleted)")
    // or not in this root: then the slow path decides.
    let canonical = fs::read_link(format!("/proc/self/fd/{}", f.as_raw_fd()))
        .ok()
        .filter(|c| c.is_absolute() && !c.as_os_str().as_bytes().ends_with(b" (deleted)"))
        .or_else(|| fs::canonicalize(path).ok())?;
    Some((canonical, kind))
}

fn kind_of(path: &Path) -> Option<Kind> {
    let meta = fs::metadata(path).ok()?;
    Some(if meta.is_dir() { Kind::Dir } else { Kind::File })
}

fn cstring(s: &OsStr) -> Result<CString, JailError> {
    CString::new(s.as_bytes())
        .map_err(|_| policy_err("command", format!("{s:?} contains a NUL byte")))
}

impl Jail {
    /// Builds everything a sandbox needs and decides its layers. Nothing runs yet; on error
    /// nothing is left behind.
    pub fn prepare(config: JailConfig) -> Result<Jail, JailError> {
        let t_prep = Instant::now();
        let policy = &config.policy;
        policy.validate()?;
        if config.command.is_empty() {
            return Err(policy_err(
                "command",
                "is missing: give the program to run after `--`".into(),
            ));
        }
        let full = policy.isolation == Isolation::Full;
        let mut layers: Vec<LayerReport> = Vec::new();
        let mut warnings: Vec<String> = Vec::new();
        let mut unavailable: Vec<LayerReport> = Vec::new();
        let mut require = |report: LayerReport, layers: &mut Vec<LayerReport>| {
            if matches!(report.status, LayerStatus::Unavailable { .. })
                && !config.degraded.allows(report.layer)
            {
                unavailable.push(report.clone());
            }
            layers.push(report);
        };

        let egress_port = match (&config.egress, policy.network.mode) {
            (Some(bridge), NetworkMode::Proxy) if full => {
                if bridge.port == 0 {
                    return Err(policy_err(
                        "network",
                        "the egress bridge needs a port, not 0".into(),
                    ));
                }
                bridge.port
            }
            (Some(_), NetworkMode::Proxy) => {
                return Err(JailError::Unsupported(
                    "network mode \"proxy\" in pod isolation is not supported yet: the egress bridge needs the sandbox's own network namespace".into(),
                ));
            }
            (Some(_), _) => {
                return Err(policy_err(
                    "network.mode",
                    "an egress bridge was given, but the network mode is not \"proxy\"".into(),
                ));
            }
            (None, _) => 0,
        };
        if policy.network.mode == NetworkMode::Proxy && egress_port == 0 {
            return Err(JailError::Unsupported(
                "network mode \"proxy\" (and --allow-domain) needs warden's egress proxy, which this build does not include yet; use --network none (the default) or, knowingly, --network host".to_string(),
            ));
        }

        let id = crate::cgroup::unique_name();
        let limits = CgroupLimits {
            memory: policy.resources.memory.map(|m| m.bytes()),
            pids: policy.resources.pids,
            cpus: policy.resources.cpus,
        };
        let wants_limits = limits != CgroupLimits::default();
        tracing::trace!(
            us = t_prep.elapsed().as_micros() as u64,
            "prepare: before start"
        );
        // --- who and where ---------------------------------------------------------------
        let env_home = config
            .host_env
            .iter()
            .find(|(k, _)| k == "HOME")
            .map(|(_, v)| v.clone());
        let user = HostUser::current(env_home);
        let fsp = &policy.filesystem;
        let workspace = canonical_existing(
            "filesystem.workspace",
            fsp.workspace.as_deref().unwrap_or(&config.cwd),
        )?;
        if !workspace.is_dir() {
            return Err(policy_err(
                "filesystem.workspace",
                format!("`{}` is not a directory", workspace.display()),
            ));
        }
        let read_only = fsp
            .read_only
            .iter()
            .map(|p| canonical_existing("filesystem.read_only", p))
            .collect::<Result<Vec<_>, _>>()?;
        let read_write = fsp
            .read_write
            .iter()
            .map(|p| canonical_existing("filesystem.read_write", p))
            .collect::<Result<Vec<_>, _>>()?;
        let rootfs = match &fsp.rootfs {
            Some(r) => {
                let r = canonical_existing("filesystem.rootfs", r)?;
                if !r.join("usr").is_dir() && !r.join("bin").exists() {
                    return Err(policy_err(
                        "filesystem.rootfs",
                        format!(
                            "`{}` has no /usr or /bin: not a root filesystem",
                            r.display()
                        ),
                    ));
                }
                Some(r)
            }
            None => None,
        };

        tracing::trace!(
            us = t_prep.elapsed().as_micros() as u64,
            "prepare: before paths"
        );
        // The blocklist, resolved on this host: what exists gets masked and carved out.
        let mut hidden: Vec<(PathBuf, Kind)> = Vec::new();
        let mut listings: std::collections::HashMap<PathBuf, std::collections::HashSet<OsString>> =
            Default::default();
        let mut exists = |dir: &Path, name: &str| {
            listings
                .entry(dir.to_path_buf())
                .or_insert_with(|| {
                    fs::read_dir(dir)
                        .map(|d| d.flatten().map(|e| e.file_name()).collect())
                        .unwrap_or_default()
                })
                .contains(OsStr::new(name))
        };
        let blocked = blocklist::expand_existing(&user.homes, &mut exists);
        for p in blocked.iter().chain(fsp.hidden.iter()) {
            if let Some(found) = resolve_existing(p) {
                hidden.push(found);
            }
        }
        hidden.sort();
        hidden.dedup();
        let denied: Vec<PathBuf> = hidden.iter().map(|(p, _)| p.clone()).collect();
        let home_canonical = fs::canonicalize(&user.home).unwrap_or_else(|_| user.home.clone());
        let mut literal_blocklist = blocklist::expand(&user.homes);
        literal_blocklist.extend(denied.iter().cloned());
        let mut checked = policy.clone();
        checked.filesystem.read_only = read_only.clone();
        checked.filesystem.read_write = read_write.clone();
        checked.validate_against_host(&workspace, &home_canonical, &literal_blocklist)?;

        tracing::trace!(
            us = t_prep.elapsed().as_micros() as u64,
            "prepare: before blocklist"
        );
        let cwd_in_view = fs::canonicalize(&config.cwd).ok().filter(|c| {
            c.starts_with(&workspace)
                || read_write.iter().any(|p| c.starts_with(p))
                || read_only.iter().any(|p| c.starts_with(p))
        });
        let sandbox_cwd = cwd_in_view.unwrap_or_else(|| workspace.clone());

        // --- home, tmp and the environment --------------------------------------------------
        let home_exists = home_canonical.is_dir() && home_canonical != Path::new("/");
        let mut scratch = None;
        let (home_env, tmp_env) = if full {
            let home_env = match fsp.home {
                HomeMode::Private if home_exists => home_canonical.clone(),
                HomeMode::Private => PathBuf::from("/tmp"),
                _ => user.home.clone(),
            };
            (home_env, PathBuf::from("/tmp"))
        } else {
            // Pod isolation has no private filesystems: a scratch directory stands in for
            // /tmp and the home, and is removed afterwards.
            let base = std::env::temp_dir().join(&id);
            fs::create_dir(&base)
                .and_then(|()| fs::create_dir(base.join("home")))
                .and_then(|()| fs::create_dir(base.join("tmp")))
                .map_err(|e| {
                    JailError::Host(format!(
                        "cannot create the scratch directory {}: {e}",
                        base.display()
                    ))
                })?;
            scratch = Some(base.clone());
            let home_env = if fsp.home == HomeMode::Private {
                base.join("home")
            } else {
                user.home.clone()
            };
            (home_env, base.join("tmp"))
        };
        let cleanup_scratch = |s: &Option<PathBuf>| {
            if let Some(s) = s {
                let _ = fs::remove_dir_all(s);
            }
        };
        let bridge_env = config.egress.iter().flat_map(|b| {
            b.env
                .iter()
                .map(|(k, v)| (k.as_str(), OsStr::new(v.as_str())))
        });
        let sandbox_env = policy.environment.build(
            config.host_env.iter().cloned(),
            bridge_env.chain([
                ("HOME", home_env.as_os_str()),
                ("TMPDIR", tmp_env.as_os_str()),
                ("PWD", sandbox_cwd.as_os_str()),
                ("WARDEN_SANDBOX", OsStr::new(&id)),
            ]),
        );
        let mut envp = Vec::new();
        let mut path_var = OsString::from("/usr/local/bin:/usr/bin:/bin");
        let mut has_term = false;
        for (k, v) in &sandbox_env {
            if k == "PATH" {
                path_var = v.clone();
            }
            has_term |= k == "TERM";
            let mut kv = k.clone();
            kv.push("=");
            kv.push(v);
            envp.push(cstring(&kv)?);
        }
        if config.tty && !has_term {
            envp.push(CString::new("TERM=xterm-256color").expect("static"));
        }
        let argv = config
            .command
            .iter()
            .map(|a| cstring(a))
            .collect::<Result<Vec<_>, _>>()?;
        let program = Path::new(&config.command[0]);
        let exec_candidates = if config.command[0].as_bytes().contains(&b'/') {
            let p = if program.is_absolute() {
                program.to_path_buf()
            } else {
                sandbox_cwd.join(program)
            };
            vec![cstring(p.as_os_str())?]
        } else {
            std::env::split_paths(&path_var)
                .filter(|d| d.is_absolute())
                .map(|d| cstring(d.join(program).as_os_str()))
                .collect::<Result<Vec<_>, _>>()?
        };

        tracing::trace!(
            us = t_prep.elapsed().as_micros() as u64,
            "prepare: before env"
        );
        // --- namespaces ------------------------------------------------------------------------
        let host_net = policy.network.mode == NetworkMode::Host;
        if host_net {
            warnings.push(
                "network mode \"host\": the sandbox shares this host's network with no filtering; nothing stops it from reaching the network or exfiltrating data".into(),
            );
        }
        if full {
            if let Err(why) = host::user_namespaces() {
                for l in Layer::NAMESPACES {
                    require(LayerReport::unavailable(*l, why.clone()), &mut layers);
                }
            } else {
                layers.push(LayerReport::enforced(
                    Layer::UserNamespace,
                    format!(
                        "uid {} and gid {} mapped to themselves, nothing else",
                        user.uid, user.gid
                    ),
                ));
                layers.push(LayerReport::enforced(
                    Layer::PidNamespace,
                    "own pid namespace and /proc",
                ));
                layers.push(LayerReport::enforced(
                    Layer::MountNamespace,
                    format!(
                        "read-only root, private /tmp /dev /run{}, {} paths masked",
                        if fsp.home == HomeMode::Private && home_exists {
                            " and home"
                        } else {
                            ""
                        },
                        hidden.len()
                    ),
                ));
                if host_net {
                    layers.push(LayerReport::not_requested(
                        Layer::NetworkNamespace,
                        "network mode host",
                    ));
                } else {
                    layers.push(LayerReport::enforced(
                        Layer::NetworkNamespace,
                        "loopback only",
                    ));
                }
                layers.push(LayerReport::enforced(
                    Layer::IpcNamespace,
                    "own System V IPC and POSIX queues",
                ));
                layers.push(LayerReport::enforced(
                    Layer::UtsNamespace,
                    "hostname `warden`",
                ));
            }
        } else {
            for l in Layer::NAMESPACES {
                layers.push(LayerReport::not_requested(
                    *l,
                    "pod isolation (Landlock and seccomp without namespaces)",
                ));
            }
        }

        // --- Landlock ---------------------------------------------------------------------------
        let in_root = |p: &str| match &rootfs {
            Some(r) => r.join(p.trim_start_matches('/')),
            None => PathBuf::from(p),
        };
        let mut read_grants: Vec<(PathBuf, ll::Access_)> = Vec::new();
        let mut write_grants: Vec<(PathBuf, ll::Access_)> = Vec::new();
        // Rules on the sandbox's fresh filesystems, added by the child after mounting.
        let mut after_mount: Vec<(PathBuf, ll::Access_)> = Vec::new();
        read_grants.extend(scope_read_grants(fsp.read_scope, in_root));
        if fsp.home == HomeMode::ReadOnly && home_exists {
            read_grants.push((home_canonical.clone(), ll::read()));
        }
        for p in &read_only {
            read_grants.push((p.clone(), ll::read()));
        }
        write_grants.push((workspace.clone(), ll::read_write()));
        for p in &read_write {
            write_grants.push((p.clone(), ll::read_write()));
        }
        let var_run_is_dir = fs::symlink_metadata(in_root("/var/run"))
            .map(|m| m.is_dir())
            .unwrap_or(false);
        let private_home = full && fsp.home == HomeMode::Private && home_exists;
        if full {
            after_mount.push(("/proc".into(), ll::read()));
            after_mount.push(("/sys".into(), ll::read()));
            after_mount.push(("/tmp".into(), ll::read_write()));
            after_mount.push(("/dev".into(), ll::read_write()));
            after_mount.push(("/run".into(), ll::read_write()));
            if var_run_is_dir {
                after_mount.push(("/var/run".into(), ll::read_write()));
            }
            if private_home {
                after_mount.push((home_canonical.clone(), ll::read_write()));
            }
        } else {
            read_grants.extend(pod_base_grants());
            if let Some(s) = &scratch {
                write_grants.push((s.clone(), ll::read_write()));
            }
            // Without mounts, Landlock alone must keep hidden and read-only paths out of
            // writable directories, and Landlock cannot take back what a parent grants.
            for (w, _) in &write_grants {
                let inner = denied
                    .iter()
                    .chain(read_only.iter())
                    .find(|d| d.starts_with(w) && *d != w);
                if let Some(inner) = inner {
                    cleanup_scratch(&scratch);
                    return Err(policy_err(
                        "isolation",
                        format!(
                            "pod isolation cannot keep `{}` hidden or read-only inside the writable `{}` (Landlock grants whole trees); use isolation = \"full\" or a narrower writable path",
                            inner.display(),
                            w.display()
                        ),
                    ));
                }
            }
        }
        tracing::trace!(
            us = t_prep.elapsed().as_micros() as u64,
            "prepare: before grants"
        );
        // In full isolation the mount masks hide the blocklist (fail-closed, and the sandbox
        // can neither mount nor unmount); in pod isolation Landlock is the only filesystem
        // layer, so the read grants are carved around every hidden path.
        let carve_around: &[PathBuf] = if full { &[] } else { &denied };
        let mut list = |p: &Path| ll::list_dir(p);
        let mut rules: Vec<FsRule> =
            ll::carve(&read_grants, carve_around, &mut list).map_err(|e| {
                cleanup_scratch(&scratch);
                JailError::Host(format!(
                    "cannot list a directory for the Landlock rules: {e}"
                ))
            })?;
        rules.extend(write_grants.iter().map(|(p, a)| FsRule {
            path: p.clone(),
            access: *a,
            carved: false,
        }));
        tracing::trace!(
            us = t_prep.elapsed().as_micros() as u64,
            "prepare: before carved"
        );
        let net = NetRules {
            restrict: !host_net,
            connect_ports: if egress_port != 0 {
                vec![egress_port]
            } else {
                Vec::new()
            },
        };
        let built =
            ll::build(LandlockSupport::probe(), &rules, &after_mount, &net).map_err(|e| {
                cleanup_scratch(&scratch);
                JailError::Host(e)
            })?;
        let landlock_fd = built.fd;
        let landlock_mount_rules = built.mount_rules;
        for r in built.reports {
            require(r, &mut layers);
        }

        tracing::trace!(
            us = t_prep.elapsed().as_micros() as u64,
            "prepare: before landlock"
        );
        // --- seccomp, capabilities, no_new_privs, rlimits ---------------------------------
        let seccomp = seccomp::build(SeccompOptions {
            deny_inet: !full && policy.network.mode == NetworkMode::None,
            inet_tcp_only: false,
        })
        .map_err(|e| JailError::Host(format!("cannot build the seccomp filter: {e}")))?;
        match seccomp::available() {
            Ok(()) => layers.push(LayerReport::enforced(
                Layer::Seccomp,
                format!(
                    "{} system calls and argument patterns denied",
                    seccomp.denied.len()
                ),
            )),
            Err(why) => require(LayerReport::unavailable(Layer::Seccomp, why), &mut layers),
        }
        layers.push(LayerReport::enforced(
            Layer::Capabilities,
            if full {
                "all dropped, bounding set empty, securebits locked"
            } else {
                "none held; bounding set emptied where permitted"
            },
        ));
        layers.push(LayerReport::enforced(Layer::NoNewPrivs, "set before exec"));
        let r = &policy.resources;
        let mut rlimits = vec![(libc::RLIMIT_CORE, 0u64)];
        let mut rl_detail = vec!["no core dumps".to_string()];
        if let Some(f) = r.file_size {
            rlimits.push((libc::RLIMIT_FSIZE, f.bytes()));
            rl_detail.push(format!("files up to {f}"));
        }
        if let Some(n) = r.open_files {
            let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map(|(_, h)| h)
                .unwrap_or(n);
            let n = n.min(hard);
            rlimits.push((libc::RLIMIT_NOFILE, n));
            rl_detail.push(format!("{n} open files"));
        }
        layers.push(LayerReport::enforced(Layer::Rlimits, rl_detail.join(", ")));
        layers.push(LayerReport::enforced(
            Layer::DieWithParent,
            "killed when warden exits",
        ));

        tracing::trace!(
            us = t_prep.elapsed().as_micros() as u64,
            "prepare: before seccomp"
        );
        // --- cgroups ----------------------------------------------------------------------------
        let cgroup = if wants_limits || full {
            match CgroupHost::discover().map(|host| SandboxCgroup::create(&host, &id, &limits)) {
                Ok((cg, reports)) => {
                    for r in reports {
                        require(r, &mut layers);
                    }
                    (!cg.is_empty()).then_some(cg)
                }
                Err(e) => {
                    for c in crate::cgroup::Controller::ALL {
                        let report = if wants_limits {
                            LayerReport::unavailable(
                                c.layer(),
                                format!("cannot read this process's cgroups: {e}"),
                            )
                        } else {
                            LayerReport::not_requested(c.layer(), "no limit set")
                        };
                        require(report, &mut layers);
                    }
                    None
                }
            }
        } else {
            for c in crate::cgroup::Controller::ALL {
                layers.push(LayerReport::not_requested(c.layer(), "no limit set"));
            }
            None
        };
        tracing::trace!(
            us = t_prep.elapsed().as_micros() as u64,
            "prepare: before cgroups"
        );
        layers.sort_by_key(|l| l.layer);

        if !unavailable.is_empty() {
            drop(cgroup);
            cleanup_scratch(&scratch);
            // Namespaces refused by the host: fall back to pod isolation if allowed, else
            // this error says which flag allows it.
            return Err(JailError::Unavailable(unavailable));
        }
        let namespaces_missing = full
            && layers
                .iter()
                .any(|l| l.layer == Layer::UserNamespace && !l.is_enforced());
        if namespaces_missing {
            // Allowed to degrade: run in pod isolation instead.
            drop(cgroup);
            cleanup_scratch(&scratch);
            let mut config = config;
            let why = layers
                .iter()
                .find(|l| l.layer == Layer::UserNamespace)
                .cloned();
            config.policy.isolation = Isolation::Pod;
            let mut jail = Jail::prepare(config)?;
            if let Some(LayerReport {
                status: LayerStatus::Unavailable { reason },
                ..
            }) = why
            {
                jail.namespaces_unavailable(&reason);
            }
            return Ok(jail);
        }

        // --- the mount plan ----------------------------------------------------------------------
        let (mount_ops, slots) = if full {
            let mut binds = vec![Bind {
                path: workspace.clone(),
                kind: Kind::Dir,
                writable: true,
            }];
            for p in &read_write {
                binds.push(Bind {
                    path: p.clone(),
                    kind: kind_of(p).unwrap_or(Kind::Dir),
                    writable: true,
                });
            }
            for p in &read_only {
                binds.push(Bind {
                    path: p.clone(),
                    kind: kind_of(p).unwrap_or(Kind::Dir),
                    writable: false,
                });
            }
            // A read-only home under a filesystem the sandbox replaces (/tmp, /run, ...) would
            // vanish with it: bind it back, read-only (its blocklist masks come after).
            if fsp.home == HomeMode::ReadOnly
                && home_exists
                && mounts::REPLACED
                    .iter()
                    .any(|r| home_canonical.starts_with(r))
            {
                binds.push(Bind {
                    path: home_canonical.clone(),
                    kind: Kind::Dir,
                    writable: false,
                });
            }
            let staging = if Path::new("/tmp").is_dir() {
                PathBuf::from("/tmp")
            } else {
                PathBuf::from("/mnt")
            };
            let plan = mounts::plan(&MountInputs {
                root: rootfs.clone().unwrap_or_else(|| PathBuf::from("/")),
                staging,
                binds,
                home: home_exists.then(|| (home_canonical.clone(), fsp.home)),
                // A private or hidden home already hides the host's home (and /root when it is
                // the home); masking it again would cover the private one.
                masks: hidden
                    .iter()
                    .filter(|(p, _)| {
                        !(fsp.home != HomeMode::ReadOnly && home_exists && *p == home_canonical)
                    })
                    .cloned()
                    .collect(),
                tmp_size: fsp.tmp_size.bytes(),
                var_run_is_dir,
                own_netns: !host_net,
            });
            (plan.ops, plan.slots)
        } else {
            (Vec::new(), 0)
        };
        tracing::trace!(
            us = t_prep.elapsed().as_micros() as u64,
            "prepare: before mounts"
        );

        let stdio_raw = [0, 1, 2].map(|i| config.stdio[i].as_ref().map(|f| f.as_raw_fd()));
        let plan = ChildPlan {
            full,
            mounts: mount_ops,
            cwd: cstring(sandbox_cwd.as_os_str())?,
            rlimits,
            landlock: landlock_fd.as_ref().map(|f| f.as_raw_fd()),
            landlock_mount_rules,
            seccomp: if layers
                .iter()
                .any(|l| l.layer == Layer::Seccomp && l.is_enforced())
            {
                seccomp.filters
            } else {
                Vec::new()
            },
            cap_last: host::cap_last_cap(),
            tty: config.tty,
            stdio: stdio_raw,
            argv,
            envp,
            exec_candidates,
            // Seen from inside a new pid namespace, the parent's pid is 0.
            parent_pid: if full {
                0
            } else {
                nix::unistd::getpid().as_raw()
            },
            own_netns: full && !host_net,
            egress_port,
            uid_map: CString::new(format!("{0} {0} 1\n", user.uid)).expect("digits"),
            gid_map: CString::new(format!("{0} {0} 1\n", user.gid)).expect("digits"),
            await_cgroups: false,
            winsize: None,
            command_stack_top: 0,
        };
        let exec = ExecArrays::new(&plan);
        let retry = full.then(|| Box::new(config.clone_without_stdio()));
        let command_stack = sys::TaskStack::new()
            .map_err(|e| JailError::Host(format!("cannot map a stack for the command: {e}")))?;
        let mut plan = plan;
        plan.command_stack_top = command_stack.top();
        Ok(Jail {
            egress: config.egress.as_ref().map(|b| b.listener.clone()),
            _command_stack: command_stack,
            id,
            exec,
            slots: vec![-1; slots],
            plan,
            _landlock: landlock_fd,
            cgroup,
            layers,
            warnings,
            timeout: policy.resources.timeout,
            stdio: config.stdio,
            forward_signals: config.forward_signals,
            scratch,
            retry,
        })
    }

    /// The sandbox's identifier (also its cgroup name).
    pub fn id(&self) -> &str {
        &self.id
    }

    /// The sandbox's cgroup directories (v2 and v1), created by `prepare`; empty when it
    /// has none. For callers that freeze, kill or account for the sandbox from outside.
    pub fn cgroup_paths(&self) -> Vec<PathBuf> {
        self.cgroup.as_ref().map(|c| c.paths()).unwrap_or_default()
    }

    /// What each layer will be.
    pub fn layers(&self) -> &[LayerReport] {
        &self.layers
    }

    /// Warnings to show the user before the command runs.
    pub fn warnings(&self) -> &[String] {
        &self.warnings
    }

    /// Runs the command to the end, cleanup included: when this returns, nothing of the
    /// sandbox exists any more.
    pub fn run(self) -> Result<Outcome, JailError> {
        let (result, cleanup) = self.run_until_exit();
        cleanup.wait();
        result
    }

    /// Runs the command and returns as soon as it has ended and every other process of the
    /// sandbox has been killed and reaped. What remains is the sandbox's init finishing its
    /// own exit (the kernel tearing its namespaces down, which waits for an RCU grace
    /// period) and removing the cgroups and scratch directory: the returned [`Cleanup`]
    /// does that, now ([`Cleanup::wait`], or on drop) or in the background
    /// ([`Cleanup::detach`]). bubblewrap likewise reports its command's exit without
    /// waiting for its pid 1 to be torn down.
    pub fn run_until_exit(mut self) -> (Result<Outcome, JailError>, Cleanup) {
        let mut cleanup = Cleanup::default();
        let result = self.run_inner(&mut cleanup);
        cleanup.cgroup = self.cgroup.take();
        cleanup.scratch = self.scratch.take();
        (result, cleanup)
    }

    fn run_inner(&mut self, cleanup: &mut Cleanup) -> Result<Outcome, JailError> {
        let start = Instant::now();
        let signals = if self.forward_signals {
            Some(SignalForwarder::new()?)
        } else {
            None
        };
        let tty = if self.plan.tty {
            Some(TerminalGuard::raw_stdin())
        } else {
            None
        };
        self.plan.winsize = tty.as_ref().and_then(|t| t.size);
        // The child joins its cgroups itself: v2 at clone time; v1 by moving its one thread,
        // once the supervisor has made them (Supervisor::release_init).
        let v2_cgroup = match &self.cgroup {
            Some(cg) => cg
                .v2_fd()
                .map_err(|e| JailError::Host(format!("cannot open the sandbox's cgroup: {e}")))?,
            None => None,
        };
        self.plan.await_cgroups = self.cgroup.is_some();

        let (parent_end, child_end) = socketpair(
            AddressFamily::Unix,
            SockType::SeqPacket,
            None,
            SockFlag::SOCK_CLOEXEC,
        )
        .map_err(|e| JailError::Host(format!("cannot create the control socket: {e}")))?;
        // The network namespace is not made here but beside init, by a helper (netns.rs):
        // making it is the slowest part of the clone.
        let flags = if self.plan.full {
            (libc::CLONE_NEWUSER
                | libc::CLONE_NEWPID
                | libc::CLONE_NEWNS
                | libc::CLONE_NEWIPC
                | libc::CLONE_NEWUTS) as u64
        } else {
            0
        };
        // SAFETY: in the child, init_main runs only async-signal-safe code on data prepared
        // before the clone, and never returns (it ends in execve or _exit).
        let cloned = unsafe { sys::clone3(flags, v2_cgroup.as_ref().map(|f| f.as_raw_fd())) };
        let pidfd = match cloned {
            Ok((0, _)) => {
                sys::close(parent_end.as_raw_fd());
                child::init_main(
                    &self.plan,
                    &self.exec,
                    &mut self.slots,
                    child_end.as_raw_fd(),
                );
            }
            Ok((_, pidfd)) => {
                // SAFETY: clone3 returned a fresh pidfd that we now own.
                unsafe { OwnedFd::from_raw_fd(pidfd) }
            }
            Err(e) if self.plan.full && refused(e) => {
                drop(signals);
                drop(tty);
                return self.namespaces_refused(format!(
                    "the kernel refused to create namespaces: {}",
                    nix::errno::Errno::from_raw(e)
                ));
            }
            Err(e) => {
                return Err(JailError::Host(format!(
                    "cannot start the sandbox: {}",
                    nix::errno::Errno::from_raw(e)
                )));
            }
        };
        tracing::debug!(elapsed_us = start.elapsed().as_micros() as u64, "cloned");
        drop(child_end);
        drop(v2_cgroup);
        let own_netns = self.plan.own_netns;
        let mut sup = Supervisor {
            jail: self,
            pidfd,
            ctrl: parent_end,
            start,
            signals,
            tty,
            init_exiting: false,
        };
        // The network namespace is made beside init's mounts and our cgroups.
        let helper = if own_netns {
            match netns::Helper::spawn(sup.pidfd.as_raw_fd(), sup.ctrl.as_raw_fd()) {
                Ok(h) => Some(h),
                Err(e) => {
                    // Dropping the supervisor kills init and waits for it.
                    drop(sup);
                    return Err(JailError::Host(format!(
                        "cannot start the task that makes the sandbox's network namespace: {e}"
                    )));
                }
            }
        } else {
            None
        };
        if let Err(e) = sup.release_init() {
            drop(helper);
            drop(sup);
            return Err(JailError::Host(format!(
                "cannot set up the sandbox's cgroups: {e}"
            )));
        }
        // It either passed the namespace to init or told init why not (init then fails and
        // reports it); anything else leaves init waiting, so the start fails here. A kernel
        // that refuses the namespace is what a refused clone3 is: the same choice follows.
        match helper.map(netns::Helper::wait) {
            None | Some(Ok(None)) => {}
            Some(Ok(Some((st, errno)))) if refused(errno) => {
                // Dropping the supervisor kills init and waits for it.
                drop(sup);
                return self.namespaces_refused(format!(
                    "the kernel refused to {}: {}",
                    stage::describe(st),
                    nix::errno::Errno::from_raw(errno)
                ));
            }
            // init fails at that stage, and supervise() reports it.
            Some(Ok(Some(_))) => {}
            Some(Err(e)) => {
                drop(sup);
                return Err(JailError::Host(e));
            }
        }
        // The child has its copies of the command's stdio now (kept until here for a retry).
        for s in &mut sup.jail.stdio {
            s.take();
        }
        let result = sup.supervise();
        tracing::debug!(
            elapsed_us = start.elapsed().as_micros() as u64,
            "command ended"
        );
        if sup.init_exiting {
            // init reported the command's end after killing and reaping everything else,
            // and is exiting now: the cleanup waits for it.
            cleanup.init = sup.pidfd.try_clone().ok();
        }
        drop(sup);
        let mut outcome = result?;
        outcome.duration_ms = start.elapsed().as_secs_f64() * 1000.0;
        Ok(outcome)
    }

    /// The kernel refused the sandbox's namespaces (`reason` says which and why): refuse to
    /// run, unless every namespace layer may degrade, in which case run again in pod
    /// isolation and say so in the namespace layers' reports.
    fn namespaces_refused(&mut self, reason: String) -> Result<Outcome, JailError> {
        let allowed = self
            .retry
            .as_ref()
            .is_some_and(|r| Layer::NAMESPACES.iter().all(|l| r.degraded.allows(*l)));
        if !allowed {
            return Err(JailError::Unavailable(
                Layer::NAMESPACES
                    .iter()
                    .map(|l| LayerReport::unavailable(*l, reason.clone()))
                    .collect(),
            ));
        }
        let mut retry = *self.retry.take().expect("checked above");
        retry.policy.isolation = Isolation::Pod;
        retry.stdio = std::mem::take(&mut self.stdio);
        let mut jail = Jail::prepare(retry)?;
        jail.namespaces_unavailable(&reason);
        let names: Vec<&str> = Layer::NAMESPACES.iter().map(|l| l.name()).collect();
        jail.warnings.push(format!(
            "{reason}: running in pod isolation instead, WITHOUT {} (allowed by --allow-degraded)",
            names.join(", ")
        ));
        jail.run()
    }

    /// Reports every namespace layer as unavailable, for `reason` (after a fallback to pod
    /// isolation).
    fn namespaces_unavailable(&mut self, reason: &str) {
        for l in self
            .layers
            .iter_mut()
            .filter(|l| Layer::NAMESPACES.contains(&l.layer))
        {
            l.status = LayerStatus::Unavailable {
                reason: reason.to_string(),
            };
        }
    }

    /// Describes a child setup stage for an error message.
    fn describe_stage(&self, st: u32) -> String {
        if st >= stage::MOUNT_BASE {
            let i = (st - stage::MOUNT_BASE) as usize;
            return self
                .plan
                .mounts
                .get(i)
                .map(MountOp::describe)
                .unwrap_or_else(|| "set up the filesystem".into());
        }
        stage::describe(st).to_string()
    }
}

/// Whether `errno` from making namespaces means the kernel will not (rather than a fault).
fn refused(errno: i32) -> bool {
    matches!(
        errno,
        libc::EPERM | libc::ENOSPC | libc::EINVAL | libc::EUSERS | libc::EACCES
    )
}

impl JailConfig {
    fn clone_without_stdio(&self) -> JailConfig {
        JailConfig {
            policy: self.policy.clone(),
            command: self.command.clone(),
            cwd: self.cwd.clone(),
            host_env: self.host_env.clone(),
            degraded: self.degraded.clone(),
            tty: self.tty,
            stdio: [None, None, None],
            forward_signals: self.forward_signals,
            egress: self.egress.clone(),
        }
    }
}

/// What remains of a sandbox after its command ended: init finishing its exit, the cgroups
/// and the scratch directory. Waits and removes them on [`Cleanup::wait`] or on drop.
#[derive(Debug, Default)]
pub struct Cleanup {
    init: Option<OwnedFd>,
    cgroup: Option<SandboxCgroup>,
    scratch: Option<PathBuf>,
}

impl Cleanup {
    /// Waits for init to be gone, then removes the cgroups and the scratch directory.
    pub fn wait(mut self) {
        self.finish();
    }

    fn finish(&mut self) {
        if let Some(pidfd) = self.init.take() {
            let mut attempts = 0;
            loop {
                let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
                match poll(&mut fds, PollTimeout::from(2000u16)) {
                    Ok(n) if n > 0 => break,
                    Err(nix::errno::Errno::EINTR) => continue,
                    _ => {}
                }
                // init should be gone in microseconds; make sure of it.
                let _ = sys::pidfd_send_signal(pidfd.as_raw_fd(), libc::SIGKILL);
                attempts += 1;
                if attempts > 5 {
                    break;
                }
            }
            // Reap it when it is our child (ECHILD otherwise: someone else reaps it).
            let _ = sys::pidfd_try_wait(pidfd.as_raw_fd());
        }
        drop(self.cgroup.take());
        if let Some(s) = self.scratch.take() {
            let _ = fs::remove_dir_all(s);
        }
    }

    /// Finishes the cleanup after this process has exited, so that the caller can exit at
    /// once (what `warden run` does): a task sharing this process's memory waits for init
    /// and removes the cgroups. Call it only right before exiting: init's zombie is left to
    /// the host's reaper, which adopts it when this process exits.
    pub fn detach(mut self) {
        // The scratch directory (pod isolation) is removed now: nothing uses it any more.
        if let Some(s) = self.scratch.take() {
            let _ = fs::remove_dir_all(s);
        }
        let Some(cgroup) = self.cgroup.take() else {
            // Nothing outlives init but its zombie, which the host's reaper takes.
            self.init = None;
            return;
        };
        let paths = cgroup.into_paths();
        let to_c = |p: &Path| CString::new(p.as_os_str().as_bytes()).ok();
        let dirs: Vec<CString> = paths.iter().filter_map(|p| to_c(p)).collect();
        let parents: Vec<CString> = paths
            .iter()
            .filter_map(|p| p.parent().and_then(to_c))
            .collect();
        let pidfd = self.init.take().map(IntoRawFd::into_raw_fd).unwrap_or(-1);
        let task: &'static mut DetachedCleanup = Box::leak(Box::new(DetachedCleanup {
            pidfd,
            dirs,
            parents,
        }));
        let arg = (task as *mut DetachedCleanup).cast();
        // The task starts with the hangup and interrupt signals blocked (it inherits the mask)
        // and ignores them before unblocking, so that a terminal closing as warden exits
        // cannot stop it before its handlers are set.
        let old_mask = sys::block_signals(&sys::sigset(&DETACHED_IGNORED)).ok();
        let spawned = sys::TaskStack::new()
            .map_err(|e| e.raw_os_error().unwrap_or(libc::ENOMEM))
            .and_then(|stack| {
                // SAFETY: detached_cleanup only makes system calls, and runs while this
                // process exits (errno is nobody else's by then); its argument and stack are
                // leaked, so they stay valid for as long as the task runs.
                unsafe { sys::spawn_shared_memory_task(detached_cleanup, arg, stack.leak()) }
            });
        if let Some(old) = old_mask {
            let _ = sys::set_signal_mask(&old);
        }
        if spawned.is_err() {
            // Could not start the task: do the work here (we are the only user of `arg`).
            detached_cleanup(arg);
        }
    }
}

/// Cgroups of killed wardens younger than this are left alone (see
/// [`sys::remove_stale_cgroups`]).
const STALE_CGROUP_AGE_SECS: i64 = 60;

/// What the detached cleanup task needs, prepared before it starts.
struct DetachedCleanup {
    pidfd: RawFd,
    dirs: Vec<CString>,
    /// The directories holding `dirs`, swept for cgroups of wardens that were killed.
    parents: Vec<CString>,
}

/// Signals the detached cleanup task ignores.
const DETACHED_IGNORED: [libc::c_int; 5] = [
    libc::SIGHUP,
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGQUIT,
    libc::SIGPIPE,
];

extern "C" fn detached_cleanup(arg: *mut libc::c_void) -> libc::c_int {
    // SAFETY: `arg` is the leaked DetachedCleanup that detach() passed, never freed.
    let task = unsafe { &*(arg as *const DetachedCleanup) };
    // Our own copy of the descriptor table: drop everything but the pidfd, so that whoever
    // reads warden's stdout or stderr sees them end when warden exits, not when we do.
    let _ = sys::close_all_except(&mut [task.pidfd]);
    // warden is exiting, and with it perhaps the session of a terminal: the hangup (or a
    // Ctrl-C to the process group) must not stop the cleanup half-way, leaving cgroups behind.
    // The handlers are this task's own (no CLONE_SIGHAND); the signals stay blocked (detach
    // blocked them before the clone) until they are ignored.
    let _ = sys::setsid();
    for sig in DETACHED_IGNORED {
        sys::ignore_signal(sig);
    }
    let _ = sys::set_signal_mask(&sys::sigset(&[]));
    if task.pidfd >= 0 {
        for _ in 0..5 {
            let mut pfd = libc::pollfd {
                fd: task.pidfd,
                events: libc::POLLIN,
                revents: 0,
            };
            // SAFETY: one valid pollfd.
            if unsafe { libc::poll(&mut pfd, 1, 2000) } > 0 {
                break;
            }
            let _ = sys::pidfd_send_signal(task.pidfd, libc::SIGKILL);
        }
    }
    for dir in &task.dirs {
        for _ in 0..5000 {
            match sys::rmdir(dir) {
                Err(libc::EBUSY) => sys::sleep_ms(1),
                _ => break,
            }
        }
    }
    for parent in &task.parents {
        sys::remove_stale_cgroups(parent, STALE_CGROUP_AGE_SECS);
    }
    0
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        self.finish();
    }
}

/// Blocks the signals warden passes on and reads them from a signalfd.
#[derive(Debug)]
struct SignalForwarder {
    fd: SignalFd,
    old: SigSet,
}

impl SignalForwarder {
    fn new() -> Result<SignalForwarder, JailError> {
        let mut set = SigSet::empty();
        for s in child::FORWARDED {
            set.add(Signal::try_from(*s).expect("valid signal"));
        }
        let mut old = SigSet::empty();
        nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_BLOCK,
            Some(&set),
            Some(&mut old),
        )
        .map_err(|e| JailError::Host(format!("cannot block signals: {e}")))?;
        let fd = SignalFd::with_flags(
            &set,
            nix::sys::signalfd::SfdFlags::SFD_CLOEXEC | nix::sys::signalfd::SfdFlags::SFD_NONBLOCK,
        )
        .map_err(|e| JailError::Host(format!("cannot create a signalfd: {e}")))?;
        Ok(SignalForwarder { fd, old })
    }
}

impl Drop for SignalForwarder {
    fn drop(&mut self) {
        let _ = nix::sys::signal::pthread_sigmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&self.old),
            None,
        );
    }
}

/// Puts warden's terminal in raw mode while a sandbox owns it, and restores it.
#[derive(Debug)]
struct TerminalGuard {
    saved: Option<nix::sys::termios::Termios>,
    size: Option<(u16, u16)>,
}

impl TerminalGuard {
    fn raw_stdin() -> TerminalGuard {
        let stdin = io::stdin();
        let saved = nix::sys::termios::tcgetattr(stdin.as_fd()).ok();
        if let Some(t) = &saved {
            let mut raw = t.clone();
            nix::sys::termios::cfmakeraw(&mut raw);
            let _ = nix::sys::termios::tcsetattr(
                stdin.as_fd(),
                nix::sys::termios::SetArg::TCSANOW,
                &raw,
            );
        }
        TerminalGuard {
            saved,
            size: terminal_size(),
        }
    }
}

impl Drop for TerminalGuard {
    fn drop(&mut self) {
        if let Some(t) = &self.saved {
            let _ = nix::sys::termios::tcsetattr(
                io::stdin().as_fd(),
                nix::sys::termios::SetArg::TCSADRAIN,
                t,
            );
        }
    }
}

fn terminal_size() -> Option<(u16, u16)> {
    for fd in [1, 0, 2] {
        let mut ws = libc::winsize {
            ws_row: 0,
            ws_col: 0,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        if sys::ioctl_ptr(fd, libc::TIOCGWINSZ, &mut ws).is_ok() && ws.ws_row > 0 {
            return Some((ws.ws_row, ws.ws_col));
        }
    }
    None
}

struct Supervisor<'a> {
    jail: &'a mut Jail,
    pidfd: OwnedFd,
    ctrl: OwnedFd,
    start: Instant,
    signals: Option<SignalForwarder>,
    tty: Option<TerminalGuard>,
    /// init reported the command's end (the rest of the tree is gone) and is exiting.
    init_exiting: bool,
}

#[derive(Default)]
struct Reports {
    command_status: Option<i32>,
    exec_errno: Option<i32>,
    failure: Option<(u32, i32)>,
    warnings: Vec<(u32, i32)>,
}

impl Supervisor<'_> {
    /// Makes the sandbox's v1 cgroups while init sets up its mounts, hands init their
    /// `tasks` files to join, and lets it go on. An error means init must not go on.
    fn release_init(&mut self) -> Result<(), String> {
        // init awaits the cgroups exactly when there are some (`plan.await_cgroups`).
        let Some(cg) = self.jail.cgroup.as_mut() else {
            return Ok(());
        };
        cg.make_pending()?;
        let tasks = cg.v1_task_files().map_err(|e| e.to_string())?;
        let send = |kind: u32, fd: Option<RawFd>| {
            let msg = Msg {
                kind,
                ..Msg::default()
            };
            sys::send_msg(self.ctrl.as_raw_fd(), &msg.to_bytes(), fd)
        };
        for f in &tasks {
            match send(kind::CGROUP_TASKS, Some(f.as_raw_fd())) {
                Ok(()) => {}
                // init has already failed and exited: supervise() reads why.
                Err(libc::EPIPE | libc::ECONNRESET) => return Ok(()),
                Err(e) => {
                    return Err(format!(
                        "cannot pass a cgroup to the sandbox: {}",
                        nix::errno::Errno::from_raw(e)
                    ));
                }
            }
        }
        match send(kind::GO, None) {
            Ok(()) | Err(libc::EPIPE | libc::ECONNRESET) => Ok(()),
            Err(e) => Err(format!(
                "cannot signal the sandbox: {}",
                nix::errno::Errno::from_raw(e)
            )),
        }
    }

    /// Kills the whole sandbox.
    fn kill(&self) {
        if let Some(cg) = &self.jail.cgroup {
            cg.kill_all();
        }
        if self.jail.plan.full {
            let _ = sys::pidfd_send_signal(self.pidfd.as_raw_fd(), libc::SIGKILL);
        } else {
            let _ = sys::pidfd_send_signal(self.pidfd.as_raw_fd(), child::teardown_signal());
        }
    }

    fn wait_exit(&self) -> Option<i32> {
        let fd = self.pidfd.as_fd();
        loop {
            let mut fds = [PollFd::new(fd, PollFlags::POLLIN)];
            let _ = poll(&mut fds, PollTimeout::from(2000u16));
            match sys::pidfd_try_wait(self.pidfd.as_raw_fd()) {
                Ok(Some(status)) => return Some(status),
                Ok(None) => {
                    // init did not react in time: take it down hard.
                    let _ = sys::pidfd_send_signal(self.pidfd.as_raw_fd(), libc::SIGKILL);
                }
                Err(_) => return None,
            }
        }
    }

    fn read_ctrl(&mut self, r: &mut Reports, master: &mut Option<OwnedFd>) {
        let mut buf = [0u8; Msg::SIZE];
        loop {
            match poll(
                &mut [PollFd::new(self.ctrl.as_fd(), PollFlags::POLLIN)],
                PollTimeout::ZERO,
            ) {
                Ok(n) if n > 0 => {}
                _ => return,
            }
            let (n, fd) = match sys::recv_msg(self.ctrl.as_raw_fd(), &mut buf) {
                Ok(x) => x,
                Err(_) => return,
            };
            if n == 0 {
                return;
            }
            let Some(m) = Msg::from_bytes(&buf[..n]) else {
                continue;
            };
            match m.kind {
                kind::FAIL => r.failure = Some((m.stage, m.value)),
                kind::READY => tracing::debug!(
                    elapsed_us = self.start.elapsed().as_micros() as u64,
                    "sandbox ready"
                ),
                kind::WARN => r.warnings.push((m.stage, m.value)),
                kind::EXEC_FAIL => r.exec_errno = Some(m.value),
                kind::EXIT => {
                    tracing::debug!(
                        elapsed_us = self.start.elapsed().as_micros() as u64,
                        "exit reported"
                    );
                    r.command_status = Some(m.value)
                }
                kind::LISTENER => {
                    if let Some(fd) = fd {
                        // SAFETY: the descriptor arrived with SCM_RIGHTS and is ours alone.
                        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                        if let Some(tx) = &self.jail.egress {
                            // Nobody listening any more: the socket closes, connections fail.
                            let _ = tx.send(fd);
                        }
                    }
                }
                kind::PTY => {
                    if let Some(fd) = fd {
                        // SAFETY: the descriptor arrived with SCM_RIGHTS and is ours alone.
                        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                        let _ = nix::fcntl::fcntl(
                            &fd,
                            nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::O_NONBLOCK),
                        );
                        *master = Some(fd);
                    }
                }
                _ => {}
            }
        }
    }

    fn supervise(&mut self) -> Result<Outcome, JailError> {
        let mut r = Reports::default();
        let mut master: Option<OwnedFd> = None;
        let mut to_master: Vec<u8> = Vec::new();
        let mut stdin_open = self.tty.is_some();
        let deadline = self.jail.timeout.map(|t| self.start + t);
        let mut timed_out = false;
        let init_status;
        loop {
            let timeout = match deadline {
                Some(d) if !timed_out => {
                    let left = d.saturating_duration_since(Instant::now());
                    PollTimeout::try_from(left.as_millis().min(i32::MAX as u128) as i32 + 1)
                        .unwrap_or(PollTimeout::MAX)
                }
                _ => PollTimeout::NONE,
            };
            let stdin = io::stdin();
            let stdin_fd = stdin.as_fd();
            let mut fds: Vec<PollFd> = vec![
                PollFd::new(self.ctrl.as_fd(), PollFlags::POLLIN),
                PollFd::new(self.pidfd.as_fd(), PollFlags::POLLIN),
            ];
            let sig_index = self.signals.as_ref().map(|s| {
                fds.push(PollFd::new(s.fd.as_fd(), PollFlags::POLLIN));
                fds.len() - 1
            });
            let master_index = master.as_ref().map(|m| {
                let mut ev = PollFlags::POLLIN;
                if !to_master.is_empty() {
                    ev |= PollFlags::POLLOUT;
                }
                fds.push(PollFd::new(m.as_fd(), ev));
                fds.len() - 1
            });
            let stdin_index =
                (master.is_some() && stdin_open && to_master.len() < 65536).then(|| {
                    fds.push(PollFd::new(stdin_fd, PollFlags::POLLIN));
                    fds.len() - 1
                });
            match poll(&mut fds, timeout) {
                Ok(0) => {
                    if deadline.is_some_and(|d| Instant::now() >= d) && !timed_out {
                        timed_out = true;
                        self.kill();
                    }
                    continue;
                }
                Ok(_) => {}
                Err(nix::errno::Errno::EINTR) => continue,
                Err(e) => return Err(JailError::Host(format!("poll failed: {e}"))),
            }
            let ready = |i: Option<usize>, flags: PollFlags| {
                i.and_then(|i| fds[i].revents())
                    .is_some_and(|r| r.intersects(flags | PollFlags::POLLHUP | PollFlags::POLLERR))
            };
            let ctrl_ready = ready(Some(0), PollFlags::POLLIN);
            let exited = ready(Some(1), PollFlags::POLLIN);
            let sig_ready = ready(sig_index, PollFlags::POLLIN);
            let master_ready = ready(master_index, PollFlags::POLLIN | PollFlags::POLLOUT);
            let stdin_ready = ready(stdin_index, PollFlags::POLLIN);
            drop(fds);

            if ctrl_ready {
                self.read_ctrl(&mut r, &mut master);
                if r.command_status.is_some() {
                    if let Some(m) = &master {
                        drain_master(m);
                    }
                    self.init_exiting = true;
                    init_status = None;
                    break;
                }
            }
            if sig_ready {
                self.forward_signals(master.as_ref());
            }
            if stdin_ready {
                let mut buf = [0u8; 4096];
                match io::stdin().lock().read(&mut buf) {
                    Ok(0) | Err(_) => stdin_open = false,
                    Ok(n) => to_master.extend_from_slice(&buf[..n]),
                }
            }
            if master_ready
                && let Some(m) = &master
                && !relay_master(m, &mut to_master)
            {
                master = None;
            }
            if exited {
                self.read_ctrl(&mut r, &mut master);
                if let Some(m) = &master {
                    drain_master(m);
                }
                init_status = sys::pidfd_try_wait(self.pidfd.as_raw_fd()).ok().flatten();
                break;
            }
        }
        drop(master);
        self.tty.take();

        if let Some((st, errno)) = r.failure {
            return Err(JailError::Setup {
                step: self.jail.describe_stage(st),
                errno: nix::errno::Errno::from_raw(errno),
            });
        }
        let mut warnings = self.jail.warnings.clone();
        for (st, errno) in &r.warnings {
            warnings.push(format!(
                "could not {}: {}",
                self.jail.describe_stage(*st),
                nix::errno::Errno::from_raw(*errno)
            ));
        }
        let memory_limit_hit = self.jail.cgroup.as_ref().is_some_and(|c| c.oom_kills() > 0);
        let termination = if timed_out {
            Termination::TimedOut {
                after_ms: self.jail.timeout.map(|t| t.as_millis() as u64).unwrap_or(0),
            }
        } else if let Some(errno) = r.exec_errno {
            if errno == libc::ENOENT {
                Termination::NotFound
            } else {
                Termination::NotExecutable {
                    error: nix::errno::Errno::from_raw(errno).desc().to_string(),
                }
            }
        } else {
            let status = r.command_status.or(init_status).unwrap_or(libc::SIGKILL);
            if libc::WIFEXITED(status) {
                Termination::Exited {
                    code: libc::WEXITSTATUS(status),
                }
            } else {
                Termination::Signaled {
                    signal: libc::WTERMSIG(status),
                }
            }
        };
        Ok(Outcome {
            id: self.jail.id.clone(),
            termination,
            memory_limit_hit,
            layers: self.jail.layers.clone(),
            warnings,
            duration_ms: 0.0,
        })
    }

    fn forward_signals(&self, master: Option<&OwnedFd>) {
        let Some(s) = &self.signals else { return };
        while let Ok(Some(info)) = s.fd.read_signal() {
            let sig = info.ssi_signo as i32;
            if sig == libc::SIGWINCH
                && let (Some(m), Some((rows, cols))) = (master, terminal_size())
            {
                let mut ws = libc::winsize {
                    ws_row: rows,
                    ws_col: cols,
                    ws_xpixel: 0,
                    ws_ypixel: 0,
                };
                let _ = sys::ioctl_ptr(m.as_raw_fd(), libc::TIOCSWINSZ, &mut ws);
                continue;
            }
            let _ = sys::pidfd_send_signal(self.pidfd.as_raw_fd(), sig);
        }
    }
}

impl Drop for Supervisor<'_> {
    fn drop(&mut self) {
        if self.init_exiting {
            return;
        }
        // Whatever happened, nothing of the sandbox outlives its supervisor.
        if sys::pidfd_try_wait(self.pidfd.as_raw_fd())
            .ok()
            .flatten()
            .is_none()
        {
            self.kill();
            let _ = self.wait_exit();
        }
    }
}

/// Moves bytes between the pseudo-terminal and warden's stdout; false once the terminal is
/// closed on the sandbox side.
fn relay_master(master: &OwnedFd, to_master: &mut Vec<u8>) -> bool {
    let fd = master.as_fd();
    if !to_master.is_empty() {
        match nix::unistd::write(fd, to_master) {
            Ok(n) => {
                to_master.drain(..n);
            }
            Err(nix::errno::Errno::EAGAIN) => {}
            Err(_) => to_master.clear(),
        }
    }
    let mut buf = [0u8; 8192];
    loop {
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => return false,
            Ok(n) => {
                let mut out = io::stdout().lock();
                let _ = out.write_all(&buf[..n]);
                let _ = out.flush();
            }
            Err(nix::errno::Errno::EAGAIN) => return true,
            Err(nix::errno::Errno::EINTR) => {}
            // EIO: every slave descriptor is closed.
            Err(_) => return false,
        }
    }
}

fn drain_master(master: &OwnedFd) {
    let mut none = Vec::new();
    relay_master(master, &mut none);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolve_existing_gives_the_canonical_path_and_kind() {
        let tmp = tempfile::tempdir().unwrap();
        let root = fs::canonicalize(tmp.path()).unwrap();
        fs::create_dir(root.join("dir")).unwrap();
        fs::write(root.join("dir/file"), "x").unwrap();
        std::os::unix::fs::symlink(root.join("dir"), root.join("link-dir")).unwrap();
        std::os::unix::fs::symlink("dir/file", root.join("link-file")).unwrap();
        std::os::unix::fs::symlink(root.join("nowhere"), root.join("dangling")).unwrap();
        let file = root.join("dir/file");
        let dir = root.join("dir");
        for (asked, want) in [
            (root.join("dir/file"), Some((file.clone(), Kind::File))),
            (root.join("dir"), Some((dir.clone(), Kind::Dir))),
            (root.join("dir/./file"), Some((file.clone(), Kind::File))),
            (
                root.join("dir/../dir/file"),
                Some((file.clone(), Kind::File)),
            ),
            (root.join("link-dir/file"), Some((file.clone(), Kind::File))),
            (root.join("link-file"), Some((file.clone(), Kind::File))),
            (root.join("link-dir"), Some((dir.clone(), Kind::Dir))),
            (root.join("dangling"), None),
            (root.join("missing"), None),
            (root.join("dir/file/below"), None),
        ] {
            assert_eq!(resolve_existing(&asked), want, "{}", asked.display());
        }
    }
}
