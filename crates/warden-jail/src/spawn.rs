//! Per-child confinement for servers that start many commands: `warden sandboxd`.
//!
//! [`Jail`](crate::Jail) supervises one sandbox from a blocking thread, which does not fit a
//! server that starts commands from an async runtime, relays their pipes itself and must be
//! able to signal and kill each one. [`PodJail`] builds the pod-isolation layers once
//! (Landlock ruleset, seccomp filters, rlimits), and [`confine`] installs them into a
//! `std::process::Command` (or tokio's, via `as_std_mut`), to be applied in the child between
//! `fork` and `execve`, in the order each layer requires:
//!
//! 1. a new session, so the command leads its own process group (the caller kills the group);
//!    with a terminal, the terminal on stdin becomes the controlling terminal;
//! 2. death with the server (`PR_SET_PDEATHSIG`);
//! 3. every inherited descriptor above 2 marked close-on-exec;
//! 4. in pod isolation: rlimits, `no_new_privs`, Landlock, then seccomp.
//!
//! Preparing fails closed: a layer the host cannot enforce is an error, never a warning.

use std::ffi::OsStr;
use std::fs;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use warden_policy::{NetworkMode, SandboxPolicy, blocklist};

use crate::host::HostUser;
use crate::jail::{JailError, pod_base_grants, scope_read_grants};
use crate::landlock::{self as ll, FsRule, LandlockSupport, NetRules};
use crate::layer::{Degraded, Layer, LayerReport, LayerStatus};
use crate::seccomp::{self, SeccompOptions};
use crate::sys;

/// What pod isolation may reach beyond the policy's own terms, and which layers it may run
/// without.
#[derive(Debug, Clone, Default)]
pub struct PodOptions {
    /// For network mode `proxy`: the TCP port of the egress proxy the pod already runs (the
    /// `warden proxy` sidecar on the pod's loopback). Landlock then allows TCP connect to
    /// this port only (and no bind), and seccomp allows inet sockets for TCP only. Landlock
    /// rules name ports, not addresses: the same port on another host is reachable too,
    /// which the pod's NetworkPolicy has to close.
    pub egress_port: Option<u16>,
    /// Layers that may be unavailable without refusing. `landlock-net` alone (a kernel
    /// without Landlock's network rules), or every Landlock layer for a sandboxed runtime that
    /// implements no Landlock at all (gVisor, whose own kernel is then the boundary; see
    /// google/gvisor#13439). Seccomp, `no_new_privs` and rlimits are never optional. Landlock
    /// is applied whenever the kernel has it, whatever this says.
    pub degraded: Degraded,
}

/// The pod-isolation layers, built once and applied to every child.
#[derive(Debug)]
pub struct PodJail {
    /// `None` only when Landlock is unavailable and `degraded` allowed `landlock-fs`.
    landlock: Option<OwnedFd>,
    seccomp: Vec<Vec<libc::sock_filter>>,
    rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
    layers: Vec<LayerReport>,
}

impl PodJail {
    /// Builds the layers of `policy` (pod isolation: Landlock, seccomp, `no_new_privs`,
    /// rlimits) for children that may write `workspace` and the `writable` directories, and
    /// read the system directories (or the whole host with `read_scope = "host"`), minus
    /// the blocklist. Fails if Landlock or seccomp is unavailable. Network mode `proxy`
    /// needs [`PodJail::prepare_with`] and the proxy's port.
    pub fn prepare(
        policy: &SandboxPolicy,
        workspace: &Path,
        writable: &[PathBuf],
    ) -> Result<PodJail, JailError> {
        PodJail::prepare_with(policy, workspace, writable, &PodOptions::default())
    }

    /// [`PodJail::prepare`] with [`PodOptions`]: the egress proxy's port for network mode
    /// `proxy`, and the layers that may be missing.
    pub fn prepare_with(
        policy: &SandboxPolicy,
        workspace: &Path,
        writable: &[PathBuf],
        options: &PodOptions,
    ) -> Result<PodJail, JailError> {
        PodJail::prepare_on(
            policy,
            workspace,
            writable,
            options,
            LandlockSupport::probe(),
        )
    }

    /// [`PodJail::prepare_with`] on a given Landlock probe result (the seam for tests of a
    /// kernel without Landlock).
    fn prepare_on(
        policy: &SandboxPolicy,
        workspace: &Path,
        writable: &[PathBuf],
        options: &PodOptions,
        landlock_support: Result<LandlockSupport, String>,
    ) -> Result<PodJail, JailError> {
        let policy_err = |field: &str, msg: String| {
            JailError::Policy(warden_policy::PolicyError::new(field, msg))
        };
        let mode = policy.network.mode;
        let egress_port = match (mode, options.egress_port) {
            (NetworkMode::Proxy, Some(0)) => {
                return Err(policy_err(
                    "network",
                    "the egress proxy needs a port, not 0".into(),
                ));
            }
            (NetworkMode::Proxy, Some(port)) => Some(port),
            (NetworkMode::Proxy, None) => {
                return Err(JailError::Unsupported(
                    "network mode \"proxy\" in pod isolation needs the port of the egress proxy the pod runs (warden sandboxd --egress-proxy 127.0.0.1:3128)".into(),
                ));
            }
            (_, Some(_)) => {
                return Err(policy_err(
                    "network.mode",
                    format!(
                        "an egress proxy port was given, but the network mode is \"{mode}\", not \"proxy\""
                    ),
                ));
            }
            (_, None) => None,
        };
        let workspace = fs::canonicalize(workspace)
            .map_err(|e| policy_err("workspace", format!("`{}`: {e}", workspace.display())))?;
        let mut write_grants = vec![(workspace.clone(), ll::read_write())];
        for w in writable {
            let c = fs::canonicalize(w)
                .map_err(|e| policy_err("writable", format!("`{}`: {e}", w.display())))?;
            write_grants.push((c, ll::read_write()));
        }
        for p in &policy.filesystem.read_write {
            if let Ok(c) = fs::canonicalize(p) {
                write_grants.push((c, ll::read_write()));
            }
        }

        // The blocklist as it exists on this host, plus the policy's hidden paths.
        let user = HostUser::current(std::env::var_os("HOME"));
        let mut exists = |dir: &Path, name: &str| dir.join(OsStr::new(name)).exists();
        let blocked = blocklist::expand_existing(&user.homes, &mut exists);
        let mut denied: Vec<PathBuf> = blocked
            .iter()
            .chain(policy.filesystem.hidden.iter())
            .filter_map(|p| fs::canonicalize(p).ok())
            .collect();
        denied.sort();
        denied.dedup();
        for (w, _) in &write_grants {
            if let Some(d) = blocklist::covering(&denied, w) {
                return Err(policy_err(
                    "workspace",
                    format!(
                        "`{}` lies inside the hidden path `{}`; pick a directory outside the blocklist",
                        w.display(),
                        d.display()
                    ),
                ));
            }
            if let Some(inner) = denied.iter().find(|d| d.starts_with(w) && *d != w) {
                return Err(policy_err(
                    "workspace",
                    format!(
                        "pod isolation cannot keep `{}` hidden inside the writable `{}` (Landlock grants whole trees); use a narrower directory",
                        inner.display(),
                        w.display()
                    ),
                ));
            }
        }

        let mut read_grants = scope_read_grants(policy.filesystem.read_scope, |p| PathBuf::from(p));
        for p in &policy.filesystem.read_only {
            if let Ok(c) = fs::canonicalize(p) {
                read_grants.push((c, ll::read()));
            }
        }
        read_grants.extend(pod_base_grants());
        let mut list = |p: &Path| ll::list_dir(p);
        let mut rules: Vec<FsRule> = ll::carve(&read_grants, &denied, &mut list).map_err(|e| {
            JailError::Host(format!(
                "cannot list a directory for the Landlock rules: {e}"
            ))
        })?;
        rules.extend(write_grants.iter().map(|(p, a)| FsRule {
            path: p.clone(),
            access: *a,
            carved: false,
        }));
        let net = NetRules {
            restrict: mode != NetworkMode::Host,
            connect_ports: egress_port.into_iter().collect(),
        };
        let built = ll::build(landlock_support, &rules, &[], &net).map_err(JailError::Host)?;
        let mut layers = Vec::new();
        let mut unavailable = Vec::new();
        for r in built.reports {
            // Landlock's signal scope and network rules need newer kernels; the filesystem
            // rules are the layer this confinement cannot run without.
            // Without the network rules, proxy mode would let every TCP connection out:
            // only an explicit `landlock-net` in `degraded` accepts that.
            // A runtime without any Landlock (gVisor) needs `landlock-fs` in `degraded`.
            let essential = (r.layer == Layer::LandlockFs
                && !options.degraded.allows(Layer::LandlockFs))
                || (r.layer == Layer::LandlockNet
                    && mode != NetworkMode::Host
                    && !options.degraded.allows(Layer::LandlockNet));
            if matches!(r.status, LayerStatus::Unavailable { .. }) && essential {
                unavailable.push(r.clone());
            }
            layers.push(r);
        }
        let seccomp = seccomp::build(SeccompOptions {
            deny_inet: mode == NetworkMode::None,
            inet_tcp_only: mode == NetworkMode::Proxy,
        })
        .map_err(|e| JailError::Host(format!("cannot build the seccomp filter: {e}")))?;
        match seccomp::available() {
            Ok(()) => layers.push(LayerReport::enforced(
                Layer::Seccomp,
                format!("{} system calls denied", seccomp.denied.len()),
            )),
            Err(why) => unavailable.push(LayerReport::unavailable(Layer::Seccomp, why)),
        }
        if !unavailable.is_empty() {
            return Err(JailError::Unavailable(unavailable));
        }
        let landlock = match built.fd {
            Some(fd) => Some(fd),
            None if options.degraded.allows(Layer::LandlockFs) => None,
            None => {
                return Err(JailError::Unavailable(vec![LayerReport::unavailable(
                    Layer::LandlockFs,
                    "no Landlock ruleset could be built",
                )]));
            }
        };
        layers.push(LayerReport::enforced(Layer::NoNewPrivs, "set before exec"));
        let r = &policy.resources;
        let mut rlimits = vec![(libc::RLIMIT_CORE, 0u64)];
        if let Some(f) = r.file_size {
            rlimits.push((libc::RLIMIT_FSIZE, f.bytes()));
        }
        if let Some(n) = r.open_files {
            let hard = nix::sys::resource::getrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE)
                .map(|(_, h)| h)
                .unwrap_or(n);
            rlimits.push((libc::RLIMIT_NOFILE, n.min(hard)));
        }
        layers.push(LayerReport::enforced(
            Layer::Rlimits,
            "core 0, fsize, nofile",
        ));
        Ok(PodJail {
            landlock,
            seccomp: seccomp.filters,
            rlimits,
            layers,
        })
    }

    /// What each layer enforces.
    pub fn layers(&self) -> &[LayerReport] {
        &self.layers
    }
}

/// How a child is confined.
#[derive(Debug, Clone)]
pub enum Confinement {
    /// Jailed by the server itself in pod isolation.
    Pod(Arc<PodJail>),
    /// The server already runs inside a warden jail (checked by [`inherited_jail`]); the
    /// child inherits its layers, which it cannot shed.
    Inherited,
}

/// Checks that this process runs under `no_new_privs` and a seccomp filter, as every
/// process in a warden jail does: the condition for [`Confinement::Inherited`].
pub fn inherited_jail() -> Result<(), String> {
    let status = fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    check_inherited(&status)
}

/// [`inherited_jail`] on the text of `/proc/self/status`.
pub fn check_inherited(status: &str) -> Result<(), String> {
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
            .map(str::trim)
    };
    let nnp = field("NoNewPrivs");
    let seccomp = field("Seccomp");
    if nnp == Some("1") && seccomp == Some("2") {
        Ok(())
    } else {
        Err(format!(
            "this process is not inside a warden jail (NoNewPrivs: {}, Seccomp: {}; a jail has 1 and 2)",
            nnp.unwrap_or("missing"),
            seccomp.unwrap_or("missing")
        ))
    }
}

/// Installs the confinement into `cmd`: applied in the child after `fork` (and after the
/// standard streams are in place), before `execve`. With `tty`, stdin must be the terminal's
/// slave side: it becomes the command's controlling terminal.
pub fn confine(cmd: &mut std::process::Command, confinement: &Confinement, tty: bool) {
    let jail = match confinement {
        Confinement::Pod(j) => Some(j.clone()),
        Confinement::Inherited => None,
    };
    let hook = move || -> io::Result<()> { child_setup(jail.as_deref(), tty) };
    // SAFETY: the hook runs in the forked child of a possibly multi-threaded process, so it
    // may only make async-signal-safe calls: it makes system calls on data prepared by the
    // parent (the ruleset descriptor, the compiled filters, the rlimit list), and neither
    // allocates nor takes locks. Errors travel back through std's exec-error pipe.
    unsafe {
        cmd.pre_exec(hook);
    }
}

fn os(errno: i32) -> io::Error {
    io::Error::from_raw_os_error(errno)
}

fn child_setup(jail: Option<&PodJail>, tty: bool) -> io::Result<()> {
    sys::setsid().map_err(os)?;
    if tty {
        sys::ioctl_int(0, libc::TIOCSCTTY, 0).map_err(os)?;
    }
    sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong).map_err(os)?;
    cloexec_from(3).map_err(os)?;
    if let Some(j) = jail {
        for &(resource, value) in &j.rlimits {
            sys::setrlimit(resource, value).map_err(os)?;
        }
        sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map_err(os)?;
        if let Some(landlock) = &j.landlock {
            sys::landlock_restrict_self(landlock.as_raw_fd()).map_err(os)?;
        }
        for filter in &j.seccomp {
            sys::seccomp_filter(filter).map_err(os)?;
        }
    }
    Ok(())
}

/// Marks every descriptor from `first` on close-on-exec, so nothing the server holds
/// (other commands' pipes and terminals, its sockets) reaches the command.
fn cloexec_from(first: RawFd) -> Result<(), i32> {
    const CLOSE_RANGE_CLOEXEC: libc::c_uint = 1 << 2;
    // SAFETY: close_range with CLOSE_RANGE_CLOEXEC only sets a flag on descriptors.
    let r = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first as libc::c_uint,
            libc::c_uint::MAX,
            CLOSE_RANGE_CLOEXEC,
        )
    };
    if r >= 0 {
        return Ok(());
    }
    let errno = io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO);
    if errno != libc::EINVAL && errno != libc::ENOSYS {
        return Err(errno);
    }
    // Kernels before 5.11 and gVisor have no CLOSE_RANGE_CLOEXEC: set the flag descriptor
    // by descriptor, up to the open-files limit (no descriptor can lie above it).
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct passed.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } < 0 {
        return Err(libc::EIO);
    }
    let last = lim.rlim_cur.min(1 << 20) as RawFd;
    for fd in first..last {
        // SAFETY: F_GETFD and F_SETFD only read and set descriptor flags.
        let flags = unsafe { libc::fcntl(fd, libc::F_GETFD) };
        if flags >= 0 && flags & libc::FD_CLOEXEC == 0 {
            // SAFETY: as above.
            if unsafe { libc::fcntl(fd, libc::F_SETFD, flags | libc::FD_CLOEXEC) } < 0 {
                return Err(libc::EIO);
            }
        }
    }
    Ok(())
}

/// Sends `signal` to the process group `pgid` (a confined command is its group's leader).
pub fn kill_group(pgid: u32, signal: i32) -> io::Result<()> {
    if pgid == 0 || pgid > i32::MAX as u32 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "bad process group",
        ));
    }
    sys::kill(-(pgid as i32), signal).map_err(os)
}

/// Sets the window size of the terminal whose descriptor is `fd` (either side of a pty).
pub fn set_winsize(fd: std::os::fd::BorrowedFd<'_>, cols: u16, rows: u16) -> io::Result<()> {
    let mut ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    sys::ioctl_ptr(fd.as_raw_fd(), libc::TIOCSWINSZ, &mut ws).map_err(os)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_proxy_mode_needs_exactly_a_port() {
        let dir = std::env::temp_dir();
        let pod = warden_policy::Profile::Pod.policy();
        let mut proxy = pod.clone();
        proxy.network.mode = NetworkMode::Proxy;
        let with = |port| PodOptions {
            egress_port: port,
            degraded: Degraded::none(),
        };
        let cases: [(&SandboxPolicy, Option<u16>, i32, &str); 4] = [
            (&proxy, None, 69, "needs the port of the egress proxy"),
            (&proxy, Some(0), 64, "not 0"),
            (&pod, Some(3128), 64, "not \"proxy\""),
            (
                &warden_policy::Profile::Pod.policy(),
                Some(1),
                64,
                "network mode is \"none\"",
            ),
        ];
        for (policy, port, code, msg) in cases {
            let e = PodJail::prepare_with(policy, &dir, &[], &with(port)).unwrap_err();
            assert_eq!(e.exit_code(), code, "{e}");
            assert!(e.to_string().contains(msg), "{port:?}: {e}");
        }
    }

    fn gvisor_like() -> Result<LandlockSupport, String> {
        Err("Landlock is not implemented by this kernel (ENOSYS)".into())
    }

    #[test]
    fn without_landlock_the_pod_jail_refuses_unless_every_landlock_layer_is_allowed() {
        let dir = std::env::temp_dir();
        let pod = warden_policy::Profile::Pod.policy();
        let refuse = |degraded: Degraded| {
            let options = PodOptions {
                egress_port: None,
                degraded,
            };
            PodJail::prepare_on(&pod, &dir, &[], &options, gvisor_like())
        };
        let e = refuse(Degraded::none()).unwrap_err();
        assert!(e.to_string().contains("landlock-fs"), "{e}");
        let mut net_only = Degraded::none();
        net_only.allow(vec![Layer::LandlockNet]);
        let e = refuse(net_only).unwrap_err();
        assert!(e.to_string().contains("landlock-fs"), "{e}");

        let mut all = Degraded::none();
        all.allow(Layer::LANDLOCK.iter().copied());
        let jail = refuse(all).expect("allowed without Landlock");
        assert!(jail.landlock.is_none());
        let status = |layer| {
            jail.layers()
                .iter()
                .find(|r| r.layer == layer)
                .map(|r| r.status.clone())
        };
        assert!(matches!(
            status(Layer::LandlockFs),
            Some(LayerStatus::Unavailable { .. })
        ));
        assert!(matches!(
            status(Layer::Seccomp),
            Some(LayerStatus::Enforced { .. })
        ));
    }

    #[test]
    fn without_landlock_children_still_get_seccomp_and_no_new_privs() {
        let dir = tempfile::tempdir().unwrap();
        let mut all = Degraded::none();
        all.allow(Layer::LANDLOCK.iter().copied());
        let options = PodOptions {
            egress_port: None,
            degraded: all,
        };
        let jail = PodJail::prepare_on(
            &warden_policy::Profile::Pod.policy(),
            dir.path(),
            &[],
            &options,
            gvisor_like(),
        )
        .unwrap();
        let mut cmd = std::process::Command::new("/bin/sh");
        cmd.args(["-c", "grep -E '^(NoNewPrivs|Seccomp):' /proc/self/status"]);
        confine(&mut cmd, &Confinement::Pod(Arc::new(jail)), false);
        let out = cmd.output().unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("NoNewPrivs:\t1"), "{text}");
        assert!(text.contains("Seccomp:\t2"), "{text}");
    }

    #[test]
    fn inherited_needs_both_flags() {
        let ok = "Name:\tx\nNoNewPrivs:\t1\nSeccomp:\t2\nSeccomp_filters:\t3\n";
        assert!(check_inherited(ok).is_ok());
        for bad in [
            "NoNewPrivs:\t0\nSeccomp:\t2\n",
            "NoNewPrivs:\t1\nSeccomp:\t0\n",
            "NoNewPrivs:\t1\nSeccomp:\t1\n",
            "Name:\tx\n",
        ] {
            let e = check_inherited(bad).unwrap_err();
            assert!(e.contains("not inside a warden jail"), "{e}");
        }
    }
}
