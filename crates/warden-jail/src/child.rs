//! The sandbox side of a spawn: what runs between `clone3` and `execve`.
//!
//! The first child ("init") builds the view, applies every restriction to itself, then forks
//! the command and stays as its reaper: in full isolation it is PID 1 of the sandbox's pid
//! namespace; in pod isolation it is a child subreaper. When the command exits, init kills
//! whatever is left and reports the command's status to the supervisor.
//!
//! Nothing here allocates, locks or panics: the parent prepared every string and buffer.

use std::ffi::CString;
use std::os::fd::RawFd;

use libc::c_int;

use crate::mounts::MountOp;
use crate::sys::{self, SysResult};

/// Messages on the control socket between supervisor and init. Fixed size, native endian.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Msg {
    pub kind: u32,
    pub stage: u32,
    pub value: i32,
    pub extra: i32,
}

impl Msg {
    pub const SIZE: usize = size_of::<Msg>();
    pub fn to_bytes(self) -> [u8; Msg::SIZE] {
        let mut b = [0u8; Msg::SIZE];
        b[0..4].copy_from_slice(&self.kind.to_ne_bytes());
        b[4..8].copy_from_slice(&self.stage.to_ne_bytes());
        b[8..12].copy_from_slice(&self.value.to_ne_bytes());
        b[12..16].copy_from_slice(&self.extra.to_ne_bytes());
        b
    }
    pub fn from_bytes(b: &[u8]) -> Option<Msg> {
        if b.len() != Msg::SIZE {
            return None;
        }
        let word = |i: usize| [b[i], b[i + 1], b[i + 2], b[i + 3]];
        Some(Msg {
            kind: u32::from_ne_bytes(word(0)),
            stage: u32::from_ne_bytes(word(4)),
            value: i32::from_ne_bytes(word(8)),
            extra: i32::from_ne_bytes(word(12)),
        })
    }
}

pub mod kind {
    /// init → supervisor: a required step failed (stage, errno); init exits.
    pub const FAIL: u32 = 2;
    /// init → supervisor: an optional step failed (stage, errno).
    pub const WARN: u32 = 3;
    /// init → supervisor: the pseudo-terminal's master side, passed as SCM_RIGHTS.
    pub const PTY: u32 = 4;
    /// init → supervisor: every restriction is applied; the command starts now.
    pub const READY: u32 = 5;
    /// command → supervisor: execve failed (value: errno).
    pub const EXEC_FAIL: u32 = 6;
    /// init → supervisor: the command ended (value: wait status).
    pub const EXIT: u32 = 7;
    /// init → supervisor: the egress bridge's listening socket, passed as SCM_RIGHTS.
    pub const LISTENER: u32 = 8;
    /// supervisor → init: a v1 cgroup's `tasks` file to join, passed as SCM_RIGHTS.
    pub const CGROUP_TASKS: u32 = 9;
    /// supervisor → init: the cgroups are ready; go on.
    pub const GO: u32 = 10;
    /// network-namespace helper → init: the sandbox's network namespace, passed as
    /// SCM_RIGHTS (extra: errno of bringing its loopback up, 0 if it is up); or, without a
    /// descriptor, the stage that failed and its errno (see `crate::netns`).
    pub const NETNS: u32 = 11;
}

/// Steps of the child's setup, for error messages. Mount operations are `MOUNT_BASE + index`.
pub mod stage {
    pub const DEATH_SIGNAL: u32 = 1;
    pub const STDIO: u32 = 3;
    pub const CGROUP_NS: u32 = 4;
    pub const ID_MAP: u32 = 19;
    pub const CGROUP: u32 = 20;
    pub const EGRESS: u32 = 21;
    pub const HOSTNAME: u32 = 5;
    pub const LOOPBACK: u32 = 6;
    pub const CHDIR: u32 = 7;
    pub const SESSION: u32 = 8;
    pub const PTY: u32 = 9;
    pub const RLIMIT: u32 = 10;
    pub const NO_NEW_PRIVS: u32 = 11;
    pub const LANDLOCK: u32 = 12;
    pub const CAPABILITIES: u32 = 13;
    pub const SECCOMP: u32 = 14;
    pub const SUBREAPER: u32 = 15;
    pub const FORK: u32 = 16;
    pub const SIGNALS: u32 = 17;
    pub const SYSFS_FALLBACK: u32 = 18;
    pub const NETNS: u32 = 22;
    pub const NETNS_USER: u32 = 23;
    pub const NETNS_JOIN: u32 = 24;
    pub const MOUNT_BASE: u32 = 1000;

    pub fn describe(stage: u32) -> &'static str {
        match stage {
            DEATH_SIGNAL => "arm the parent-death signal",
            STDIO => "set up standard input and output",
            CGROUP_NS => "enter a cgroup namespace",
            ID_MAP => "map the user and group ids",
            CGROUP => "join the sandbox's cgroups",
            HOSTNAME => "set the hostname",
            LOOPBACK => "bring up the loopback interface",
            EGRESS => "listen on the egress bridge port",
            CHDIR => "enter the working directory",
            SESSION => "start a new session",
            PTY => "create the pseudo-terminal",
            RLIMIT => "set resource limits",
            NO_NEW_PRIVS => "set no_new_privs",
            LANDLOCK => "apply the Landlock ruleset",
            CAPABILITIES => "drop capabilities",
            SECCOMP => "install the seccomp filter",
            SUBREAPER => "become the sandbox's reaper",
            FORK => "start the command",
            SIGNALS => "set up signal handling",
            SYSFS_FALLBACK => "mount sysfs (an empty /sys was mounted instead)",
            NETNS => "create the sandbox's network namespace",
            NETNS_USER => "enter the sandbox's user namespace to create its network namespace",
            NETNS_JOIN => "join the sandbox's network namespace",
            _ => "set up the sandbox",
        }
    }
}

/// The signal the supervisor sends init to have it kill the tree and exit (also init's
/// parent-death signal in pod isolation, where no pid namespace cleans up).
pub fn teardown_signal() -> c_int {
    libc::SIGRTMIN() + 1
}

/// Signals init passes on to the command.
pub const FORWARDED: &[c_int] = &[
    libc::SIGINT,
    libc::SIGTERM,
    libc::SIGHUP,
    libc::SIGQUIT,
    libc::SIGUSR1,
    libc::SIGUSR2,
    libc::SIGWINCH,
    libc::SIGCONT,
];

/// Everything the child needs, prepared by the parent.
#[derive(Debug)]
pub struct ChildPlan {
    /// Full isolation (namespaces and mounts) or pod isolation.
    pub full: bool,
    pub mounts: Vec<MountOp>,
    pub cwd: CString,
    pub rlimits: Vec<(libc::__rlimit_resource_t, u64)>,
    pub landlock: Option<RawFd>,
    /// Landlock rules on the fresh filesystems, added once they are mounted.
    pub landlock_mount_rules: Vec<crate::landlock::MountRule>,
    pub seccomp: Vec<Vec<libc::sock_filter>>,
    pub cap_last: u32,
    pub tty: bool,
    /// Descriptors to install as 0, 1, 2 (None: inherit).
    pub stdio: [Option<RawFd>; 3],
    pub argv: Vec<CString>,
    pub envp: Vec<CString>,
    /// Where to look for the program, in order.
    pub exec_candidates: Vec<CString>,
    pub parent_pid: libc::pid_t,
    /// The sandbox gets a network namespace of its own (false: the host's network). The
    /// supervisor's helper makes it and brings its loopback up (`crate::netns`); init joins
    /// it at `MountOp::EnterNetns`.
    pub own_netns: bool,
    /// A port on the sandbox's loopback to listen on and hand to the supervisor (0: none).
    pub egress_port: u16,
    /// `uid_map` and `gid_map` lines ("<id> <id> 1"), written by the child itself.
    pub uid_map: CString,
    pub gid_map: CString,
    /// Whether init waits for the supervisor to make the sandbox's cgroups, joins the v1
    /// ones (whose `tasks` files come over the control socket) and gets the go-ahead.
    pub await_cgroups: bool,
    /// The terminal size to give the pseudo-terminal (rows, cols).
    pub winsize: Option<(u16, u16)>,
    /// Top of a stack reserved for starting the command with `CLONE_VM | CLONE_VFORK` (0:
    /// fork instead). The memory is owned by the [`crate::Jail`] and outlives the child.
    pub command_stack_top: usize,
}

/// Null-terminated pointer arrays into a [`ChildPlan`]'s strings, built by the parent.
#[derive(Debug)]
pub struct ExecArrays {
    pub argv: Vec<*const libc::c_char>,
    pub envp: Vec<*const libc::c_char>,
}

impl ExecArrays {
    pub fn new(plan: &ChildPlan) -> ExecArrays {
        let mut argv: Vec<_> = plan.argv.iter().map(|a| a.as_ptr()).collect();
        argv.push(std::ptr::null());
        let mut envp: Vec<_> = plan.envp.iter().map(|a| a.as_ptr()).collect();
        envp.push(std::ptr::null());
        ExecArrays { argv, envp }
    }
}

fn send(ctrl: RawFd, kind: u32, stage: u32, value: i32) {
    let _ = sys::send_msg(
        ctrl,
        &Msg {
            kind,
            stage,
            value,
            extra: 0,
        }
        .to_bytes(),
        None,
    );
}

fn fail(ctrl: RawFd, stage: u32, errno: i32) -> ! {
    send(ctrl, kind::FAIL, stage, errno);
    sys::exit_now(125)
}

trait OrFail<T> {
    fn or_fail(self, ctrl: RawFd, stage: u32) -> T;
}

impl<T> OrFail<T> for SysResult<T> {
    fn or_fail(self, ctrl: RawFd, stage: u32) -> T {
        match self {
            Ok(v) => v,
            Err(e) => fail(ctrl, stage, e),
        }
    }
}

/// Entry point of init. Never returns.
pub fn init_main(plan: &ChildPlan, exec: &ExecArrays, slots: &mut [RawFd], ctrl: RawFd) -> ! {
    // Die with the supervisor. In pod isolation there is no pid namespace to take the
    // command's tree down with init, so init asks to be told instead, and cleans up.
    let death = if plan.full {
        libc::SIGKILL
    } else {
        teardown_signal()
    };
    sys::prctl(libc::PR_SET_PDEATHSIG, death as libc::c_ulong).or_fail(ctrl, stage::DEATH_SIGNAL);
    if sys::getppid() != plan.parent_pid {
        sys::exit_now(125);
    }
    // Everything else the supervisor had open (other sandboxes' pipes and files, when it
    // serves many) is none of this sandbox's business, and holding it would keep those
    // open: keep only what the setup needs.
    // 0, 1 and 2 are warden's own stdio, which the command inherits unless replaced.
    let mut keep = [-1; 16];
    keep[..3].copy_from_slice(&[0, 1, 2]);
    let mut n = 3;
    for fd in [Some(ctrl), plan.landlock]
        .into_iter()
        .chain(plan.stdio)
        .flatten()
    {
        if n < keep.len() {
            keep[n] = fd;
            n += 1;
        }
    }
    if n == keep.len() {
        fail(ctrl, stage::STDIO, libc::EMFILE);
    }
    sys::close_all_except(&mut keep).or_fail(ctrl, stage::STDIO);

    // The sandbox's identity inside its user namespace: the invoking user's own ids, nothing
    // else (a process may map its own effective ids without privileges).
    if plan.full {
        sys::write_file(c"/proc/self/setgroups", b"deny").or_fail(ctrl, stage::ID_MAP);
        sys::write_file(c"/proc/self/uid_map", plan.uid_map.to_bytes())
            .or_fail(ctrl, stage::ID_MAP);
        sys::write_file(c"/proc/self/gid_map", plan.gid_map.to_bytes())
            .or_fail(ctrl, stage::ID_MAP);
    }
    install_stdio(plan, ctrl);

    let mut setup = Setup::default();
    if plan.full {
        for (i, op) in plan.mounts.iter().enumerate() {
            if *op == MountOp::EnterNetns {
                // The helper may still be at work: first what needs neither the namespace
                // nor sysfs, then wait.
                drop_bounding_set(plan, ctrl, |cap| !STILL_NEEDED.contains(&cap));
                add_landlock_mount_rules(plan, ctrl, |path| !in_sys(path));
                await_setup(ctrl, &mut setup, |s| s.netns);
                continue;
            }
            if let Err((e, warn)) = apply_mount(op, slots) {
                let stage = stage::MOUNT_BASE + i as u32;
                if warn {
                    send(ctrl, kind::WARN, stage, e);
                } else {
                    fail(ctrl, stage, e);
                }
            }
        }
    }
    // The supervisor makes the cgroups while the mounts above are set up.
    if plan.await_cgroups {
        await_setup(ctrl, &mut setup, |s| s.go);
    }
    if plan.full {
        // A cgroup namespace rooted at the sandbox's own cgroup (joined above, or at clone).
        if let Err(e) = sys::unshare(libc::CLONE_NEWCGROUP) {
            send(ctrl, kind::WARN, stage::CGROUP_NS, e);
        }
        sys::sethostname(b"warden").or_fail(ctrl, stage::HOSTNAME);
        // The egress bridge: listen inside the sandbox's own network namespace and hand the
        // socket to the supervisor, whose proxy accepts the sandbox's connections from it.
        if plan.egress_port != 0 {
            let fd = sys::tcp_listen_loopback(plan.egress_port).or_fail(ctrl, stage::EGRESS);
            let msg = Msg {
                kind: kind::LISTENER,
                ..Msg::default()
            };
            if let Err(e) = sys::send_msg(ctrl, &msg.to_bytes(), Some(fd)) {
                fail(ctrl, stage::EGRESS, e);
            }
            sys::close(fd);
        }
    }
    sys::chdir(&plan.cwd).or_fail(ctrl, stage::CHDIR);

    // Terminal: a pseudo-terminal of the sandbox's own, or a new session without one so the
    // command cannot reach the caller's terminal (TIOCSTI is also refused by seccomp).
    let slave = if plan.tty {
        Some(open_pty(ctrl, plan.winsize))
    } else {
        sys::setsid().or_fail(ctrl, stage::SESSION);
        None
    };

    for &(resource, value) in &plan.rlimits {
        sys::setrlimit(resource, value).or_fail(ctrl, stage::RLIMIT);
    }
    if !plan.full {
        sys::prctl(libc::PR_SET_CHILD_SUBREAPER, 1).or_fail(ctrl, stage::SUBREAPER);
    }

    // Irreversible restrictions, in the order each requires.
    sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).or_fail(ctrl, stage::NO_NEW_PRIVS);
    // The Landlock domain is entered by the command alone (in exec_command), not by init:
    // Landlock's signal scope then keeps the command from signalling init, which matters in
    // pod isolation, where init is no pid 1 and killing it would orphan the command's tree
    // out of reach. (init runs only this code: no exec, no capabilities, seccomp below.)
    // What was not done while waiting for the network namespace (all of it, without one).
    if plan.own_netns {
        add_landlock_mount_rules(plan, ctrl, in_sys);
        drop_bounding_set(plan, ctrl, |cap| STILL_NEEDED.contains(&cap));
    } else {
        add_landlock_mount_rules(plan, ctrl, |_| true);
        drop_bounding_set(plan, ctrl, |_| true);
    }
    drop_capabilities(plan, ctrl);
    for filter in &plan.seccomp {
        sys::seccomp_filter(filter).or_fail(ctrl, stage::SECCOMP);
    }
    // Nothing in the sandbox may read init's memory or descriptors.
    let _ = sys::prctl(libc::PR_SET_DUMPABLE, 0);

    let mut watched = [0; 10];
    watched[..FORWARDED.len()].copy_from_slice(FORWARDED);
    watched[FORWARDED.len()] = libc::SIGCHLD;
    watched[FORWARDED.len() + 1] = teardown_signal();
    let set = sys::sigset(&watched[..FORWARDED.len() + 2]);
    let previous = sys::block_signals(&set).or_fail(ctrl, stage::SIGNALS);
    let unblocked = sys::sigset(&[]);

    send(ctrl, kind::READY, 0, 0);
    let _ = previous;
    let command = if plan.command_stack_top != 0 {
        let start = CommandStart {
            plan,
            exec,
            slave,
            mask: &unblocked,
            ctrl,
        };
        // SAFETY: command_main runs exec_command, which makes only async-signal-safe calls
        // and ends in execve or _exit; `start` lives on our stack, and we are suspended until
        // then; the stack was reserved for this by the supervisor.
        unsafe {
            sys::spawn_vfork(
                command_main,
                (&start as *const CommandStart).cast_mut().cast(),
                plan.command_stack_top,
            )
        }
        .or_fail(ctrl, stage::FORK)
    } else {
        let pid = sys::fork().or_fail(ctrl, stage::FORK);
        if pid == 0 {
            exec_command(plan, exec, slave, &unblocked, ctrl);
        }
        pid
    };
    if let Some(fd) = slave {
        sys::close(fd);
    }
    reap_loop(plan, command, &set, ctrl)
}

/// Capabilities init still uses once it has the network namespace: joining it and mounting
/// sysfs (`CAP_SYS_ADMIN`), and emptying the bounding set (`CAP_SETPCAP`). The bounding set
/// only limits what a later `execve` may gain, so the rest of it can go earlier.
const STILL_NEEDED: [u32; 2] = [CAP_SETPCAP, CAP_SYS_ADMIN];
const CAP_SETPCAP: u32 = 8;
const CAP_SYS_ADMIN: u32 = 21;

/// Whether a path is /sys or lies under it (mounted only once the namespace is joined).
fn in_sys(path: &[u8]) -> bool {
    path == b"/sys" || path.starts_with(b"/sys/")
}

/// Adds the Landlock rules on the fresh filesystems whose paths `which` selects.
fn add_landlock_mount_rules(plan: &ChildPlan, ctrl: RawFd, which: fn(&[u8]) -> bool) {
    let Some(fd) = plan.landlock else {
        return;
    };
    for rule in plan
        .landlock_mount_rules
        .iter()
        .filter(|r| which(r.path.to_bytes()))
    {
        let parent = sys::open(&rule.path, libc::O_PATH, 0).or_fail(ctrl, stage::LANDLOCK);
        sys::landlock_add_path_rule(fd, parent, rule.access).or_fail(ctrl, stage::LANDLOCK);
        sys::close(parent);
    }
}

/// Drops the capabilities that `which` selects from the bounding set.
fn drop_bounding_set(plan: &ChildPlan, ctrl: RawFd, which: fn(u32) -> bool) {
    for cap in (0..=plan.cap_last).filter(|c| which(*c)) {
        match sys::prctl(libc::PR_CAPBSET_DROP, cap as libc::c_ulong) {
            Ok(_) | Err(libc::EINVAL) => {}
            // Without CAP_SETPCAP (an unprivileged pod) the bounding set cannot shrink; with
            // no_new_privs set and no permitted capabilities, it can never be used either.
            Err(libc::EPERM) if !plan.full => break,
            Err(e) => fail(ctrl, stage::CAPABILITIES, e),
        }
    }
}

/// What init has received from the supervisor's side so far.
#[derive(Debug, Default)]
struct Setup {
    /// The supervisor's go-ahead: the cgroups are made (and joined).
    go: bool,
    /// The sandbox's network namespace is joined.
    netns: bool,
}

/// Handles the supervisor's side of the setup until `done`: joins each v1 cgroup whose
/// `tasks` file the supervisor sends (writing "0" moves the calling thread alone, which skips
/// the global lock moving a process takes), notes the go-ahead, and joins the network
/// namespace the helper sends, or fails with the helper's failure. The messages come in any
/// order. If the supervisor gives up instead, init exits.
fn await_setup(ctrl: RawFd, setup: &mut Setup, done: fn(&Setup) -> bool) {
    let mut buf = [0u8; Msg::SIZE];
    while !done(setup) {
        match sys::recv_msg(ctrl, &mut buf) {
            Ok((n, fd)) => {
                let msg = Msg::from_bytes(&buf[..n]);
                match (msg, fd) {
                    (Some(m), Some(fd)) if m.kind == kind::CGROUP_TASKS => {
                        sys::write_all(fd, b"0").or_fail(ctrl, stage::CGROUP);
                        sys::close(fd);
                    }
                    (Some(m), None) if m.kind == kind::GO => setup.go = true,
                    (Some(m), Some(fd)) if m.kind == kind::NETNS && !setup.netns => {
                        sys::setns(fd, libc::CLONE_NEWNET).or_fail(ctrl, stage::NETNS_JOIN);
                        sys::close(fd);
                        setup.netns = true;
                        if m.extra != 0 {
                            send(ctrl, kind::WARN, stage::LOOPBACK, m.extra);
                        }
                    }
                    // The helper could not make the namespace: a start without it is refused.
                    (Some(m), None) if m.kind == kind::NETNS => {
                        let st = match m.stage {
                            stage::NETNS | stage::NETNS_USER => m.stage,
                            _ => stage::NETNS,
                        };
                        fail(ctrl, st, if m.value > 0 { m.value } else { libc::EPROTO })
                    }
                    // End of file: the supervisor could not make the cgroups.
                    (None, None) if n == 0 => sys::exit_now(125),
                    (_, fd) => {
                        if let Some(fd) = fd {
                            sys::close(fd);
                        }
                        fail(ctrl, stage::CGROUP, libc::EPROTO);
                    }
                }
            }
            Err(libc::EINTR) => {}
            Err(e) => fail(ctrl, stage::CGROUP, e),
        }
    }
}

/// What [`command_main`] needs, on init's stack.
struct CommandStart<'a> {
    plan: &'a ChildPlan,
    exec: &'a ExecArrays,
    slave: Option<RawFd>,
    mask: &'a libc::sigset_t,
    ctrl: RawFd,
}

extern "C" fn command_main(arg: *mut libc::c_void) -> c_int {
    // SAFETY: `arg` is the CommandStart that init_main passed; init is suspended until we
    // exec or exit, so it stays valid.
    let s = unsafe { &*(arg as *const CommandStart<'_>) };
    exec_command(s.plan, s.exec, s.slave, s.mask, s.ctrl)
}

fn install_stdio(plan: &ChildPlan, ctrl: RawFd) {
    // Move the sources out of the way first, so that installing one cannot clobber another.
    let mut moved = [-1; 3];
    for (i, src) in plan.stdio.iter().enumerate() {
        if let Some(fd) = src {
            moved[i] = sys::dup_above(*fd, 10).or_fail(ctrl, stage::STDIO);
        }
    }
    for (i, fd) in moved.iter().enumerate() {
        if *fd >= 0 {
            sys::dup2(*fd, i as RawFd).or_fail(ctrl, stage::STDIO);
            sys::close(*fd);
        }
    }
}

/// Applies one mount operation. `Err((errno, is_warning))`.
fn apply_mount(op: &MountOp, slots: &mut [RawFd]) -> Result<(), (i32, bool)> {
    let hard = |e| (e, false);
    let missing_ok = |r: SysResult<()>| match r {
        Err(libc::ENOENT) => Ok(()),
        other => other.map_err(hard),
    };
    match op {
        MountOp::Grab {
            src,
            slot,
            recursive,
            set,
        } => {
            let fd = sys::open_tree(src, *recursive).map_err(hard)?;
            slots[*slot] = fd;
            sys::mount_setattr_fd(fd, *recursive, *set, 0, true).map_err(hard)
        }
        MountOp::Attach { slot, target } => {
            let r = sys::move_mount(slots[*slot], target).map_err(hard);
            sys::close(slots[*slot]);
            r
        }
        MountOp::Pivot { dir } => {
            sys::chdir(dir).map_err(hard)?;
            sys::move_here_onto_root().map_err(hard)?;
            sys::chdir(c"/").map_err(hard)
        }
        MountOp::Tmpfs {
            target,
            flags,
            data,
        } => sys::mount(c"tmpfs", target, Some(c"tmpfs"), *flags, Some(data)).map_err(hard),
        MountOp::Proc { target } => sys::mount(
            c"proc",
            target,
            Some(c"proc"),
            libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            None,
        )
        .map_err(hard),
        MountOp::Sysfs { target } => {
            let flags = libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC;
            match sys::mount(c"sysfs", target, Some(c"sysfs"), flags, None) {
                Ok(()) => Ok(()),
                Err(_) => {
                    sys::mount(
                        c"tmpfs",
                        target,
                        Some(c"tmpfs"),
                        flags,
                        Some(c"size=0,nr_inodes=1,mode=555"),
                    )
                    .map_err(hard)?;
                    // Reported as a warning so the supervisor can say /sys is empty.
                    Err((libc::EPERM, true))
                }
            }
        }
        MountOp::Devpts { target } => sys::mount(
            c"devpts",
            target,
            Some(c"devpts"),
            libc::MS_NOSUID | libc::MS_NOEXEC,
            Some(c"newinstance,ptmxmode=0666,mode=0620"),
        )
        .map_err(hard),
        MountOp::Mkdir { path, mode } => match sys::mkdir(path, *mode) {
            Ok(()) | Err(libc::EEXIST) => Ok(()),
            Err(e) => Err(hard(e)),
        },
        MountOp::Touch { path, mode } => {
            match sys::open(
                path,
                libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL | libc::O_NOFOLLOW,
                *mode,
            ) {
                Ok(fd) => {
                    sys::close(fd);
                    Ok(())
                }
                Err(libc::EEXIST) => Ok(()),
                Err(e) => Err(hard(e)),
            }
        }
        MountOp::Symlink { target, link } => match sys::symlink(target, link) {
            Ok(()) | Err(libc::EEXIST) => Ok(()),
            Err(e) => Err(hard(e)),
        },
        MountOp::RemountReadOnly { path } => {
            let flags = libc::MS_REMOUNT
                | libc::MS_BIND
                | libc::MS_RDONLY
                | libc::MS_NOSUID
                | libc::MS_NODEV
                | libc::MS_NOEXEC;
            sys::mount(c"none", path, None, flags, None).map_err(hard)
        }
        MountOp::MaskFile { target } => {
            let source = c_mask_source();
            match sys::mount(source, target, None, libc::MS_BIND, None) {
                Err(libc::ENOENT) => return Ok(()),
                other => other.map_err(hard)?,
            }
            let flags = libc::MS_REMOUNT
                | libc::MS_BIND
                | libc::MS_RDONLY
                | libc::MS_NOSUID
                | libc::MS_NODEV
                | libc::MS_NOEXEC;
            sys::mount(c"none", target, None, flags, None).map_err(hard)
        }
        MountOp::MaskDir { target } => missing_ok(sys::mount(
            c"tmpfs",
            target,
            Some(c"tmpfs"),
            libc::MS_RDONLY | libc::MS_NOSUID | libc::MS_NODEV | libc::MS_NOEXEC,
            Some(c"size=0,nr_inodes=1,mode=555"),
        )),
        MountOp::Sysctl { path, value } => {
            sys::write_file(path, value.to_bytes()).map_err(|e| (e, true))
        }
        MountOp::Unlink { path } => missing_ok(sys::unlink(path)),
        // Handled by init_main, which waits for the namespace there.
        MountOp::EnterNetns => Ok(()),
    }
}

fn c_mask_source() -> &'static std::ffi::CStr {
    // Kept in step with MASK_SOURCE by the test below.
    c"/tmp/.warden-mask"
}

fn open_pty(ctrl: RawFd, winsize: Option<(u16, u16)>) -> RawFd {
    let master =
        sys::open(c"/dev/ptmx", libc::O_RDWR | libc::O_NOCTTY, 0).or_fail(ctrl, stage::PTY);
    let mut unlock: c_int = 0;
    sys::ioctl_ptr(master, libc::TIOCSPTLCK as libc::c_ulong, &mut unlock)
        .or_fail(ctrl, stage::PTY);
    let mut n: c_int = 0;
    sys::ioctl_ptr(master, libc::TIOCGPTN as libc::c_ulong, &mut n).or_fail(ctrl, stage::PTY);
    // "/dev/pts/" + up to 10 digits + NUL, formatted without allocating.
    let mut path = [0u8; 24];
    let prefix = b"/dev/pts/";
    path[..prefix.len()].copy_from_slice(prefix);
    let mut digits = [0u8; 10];
    let mut len = 0;
    let mut v = n as u32;
    loop {
        digits[len] = b'0' + (v % 10) as u8;
        len += 1;
        v /= 10;
        if v == 0 {
            break;
        }
    }
    for i in 0..len {
        path[prefix.len() + i] = digits[len - 1 - i];
    }
    let cpath = std::ffi::CStr::from_bytes_until_nul(&path).unwrap_or(c"/dev/null");
    let slave = sys::open(cpath, libc::O_RDWR | libc::O_NOCTTY, 0).or_fail(ctrl, stage::PTY);
    if let Some((rows, cols)) = winsize {
        let mut ws = libc::winsize {
            ws_row: rows,
            ws_col: cols,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        let _ = sys::ioctl_ptr(slave, libc::TIOCSWINSZ, &mut ws);
    }
    if let Err(e) = sys::send_msg(
        ctrl,
        &Msg {
            kind: kind::PTY,
            ..Msg::default()
        }
        .to_bytes(),
        Some(master),
    ) {
        fail(ctrl, stage::PTY, e);
    }
    sys::close(master);
    slave
}

/// Clears the ambient set, locks the securebits and drops every capability, after
/// [`drop_bounding_set`] has emptied the bounding set.
fn drop_capabilities(plan: &ChildPlan, ctrl: RawFd) {
    let _ = sys::prctl(
        libc::PR_CAP_AMBIENT,
        libc::PR_CAP_AMBIENT_CLEAR_ALL as libc::c_ulong,
    );
    // Root inside the sandbox gets no capabilities back on execve, ever.
    const SECUREBITS: libc::c_ulong =
        (1 << 0) | (1 << 1) | (1 << 2) | (1 << 3) | (1 << 5) | (1 << 6) | (1 << 7);
    match sys::prctl(libc::PR_SET_SECUREBITS, SECUREBITS) {
        Ok(_) => {}
        Err(libc::EPERM) if !plan.full => {}
        Err(e) => fail(ctrl, stage::CAPABILITIES, e),
    }
    sys::capset_none().or_fail(ctrl, stage::CAPABILITIES);
    match sys::capget_effective() {
        Ok(0) => {}
        Ok(_) => fail(ctrl, stage::CAPABILITIES, libc::EPERM),
        Err(e) => fail(ctrl, stage::CAPABILITIES, e),
    }
}

fn exec_command(
    plan: &ChildPlan,
    exec: &ExecArrays,
    slave: Option<RawFd>,
    mask: &libc::sigset_t,
    ctrl: RawFd,
) -> ! {
    // Ignored signals stay ignored across execve; Rust ignores SIGPIPE for warden itself.
    sys::default_signal(libc::SIGPIPE);
    if sys::set_signal_mask(mask).is_err() {
        sys::exit_now(125);
    }
    if let Some(fd) = slave {
        if sys::setsid().is_err() || sys::ioctl_int(fd, libc::TIOCSCTTY, 0).is_err() {
            send(ctrl, kind::FAIL, stage::PTY, libc::EPERM);
            sys::exit_now(125);
        }
        for target in 0..3 {
            let _ = sys::dup2(fd, target);
        }
        if fd > 2 {
            sys::close(fd);
        }
    }
    // Die with init, so the tree goes down with it in pod isolation.
    let _ = sys::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
    if let Some(fd) = plan.landlock
        && let Err(e) = sys::landlock_restrict_self(fd)
    {
        send(ctrl, kind::FAIL, stage::LANDLOCK, e);
        sys::exit_now(125);
    }
    let _ = sys::close_from(3, ctrl);
    let mut denied = false;
    let mut last = libc::ENOENT;
    for candidate in &plan.exec_candidates {
        let e = sys::execve(candidate, &exec.argv, &exec.envp);
        match e {
            libc::ENOENT | libc::ENOTDIR => {}
            libc::EACCES => denied = true,
            other => {
                last = other;
                break;
            }
        }
    }
    let errno = if denied && last == libc::ENOENT {
        libc::EACCES
    } else {
        last
    };
    send(ctrl, kind::EXEC_FAIL, 0, errno);
    sys::exit_now(if errno == libc::ENOENT { 127 } else { 126 })
}

/// Init's life after starting the command: pass signals on, reap everything, and when the
/// command ends, kill what is left and report.
fn reap_loop(plan: &ChildPlan, command: libc::pid_t, set: &libc::sigset_t, ctrl: RawFd) -> ! {
    let mut status: Option<c_int> = None;
    loop {
        let sig = match sys::sigwait(set) {
            Ok(s) => s,
            Err(libc::EINTR) => continue,
            Err(_) => sys::exit_now(125),
        };
        if sig == libc::SIGCHLD {
            loop {
                match sys::wait_any(libc::WNOHANG) {
                    Ok((0, _)) | Err(_) => break,
                    Ok((pid, st)) if pid == command => status = Some(st),
                    Ok(_) => {}
                }
            }
        } else if sig == teardown_signal() {
            kill_tree(plan);
            sys::exit_now(137);
        } else {
            let _ = sys::kill(command, sig);
        }
        if let Some(st) = status {
            kill_tree(plan);
            send(ctrl, kind::EXIT, 0, st);
            sys::exit_now(0);
        }
    }
}

/// Kills and reaps every remaining process of the sandbox.
fn kill_tree(plan: &ChildPlan) {
    if plan.full {
        // PID 1 of the sandbox's pid namespace: every process of the sandbox is our
        // descendant (orphans are re-parented to us), so when we have no child left, living
        // or zombie, nothing else exists and the namespace-wide kill can be skipped.
        loop {
            match sys::wait_any(libc::WNOHANG) {
                Ok((0, _)) => break,
                Ok(_) => continue,
                Err(libc::ECHILD) => return,
                Err(_) => break,
            }
        }
        // Otherwise -1 is exactly the sandbox's processes.
        let _ = sys::kill(-1, libc::SIGKILL);
    } else {
        // A subreaper: every orphan of the tree is our child. Kill children until none is
        // left; killing a parent hands its children to us for the next round.
        for _ in 0..10_000 {
            let mut any = false;
            for_each_child(|pid| {
                any = true;
                let _ = sys::kill(pid, libc::SIGKILL);
            });
            while let Ok((pid, _)) = sys::wait_any(libc::WNOHANG) {
                if pid == 0 {
                    break;
                }
            }
            if !any {
                break;
            }
        }
    }
    while sys::wait_any(0).is_ok() {}
}

/// Calls `f` with each child pid listed in /proc/self/task/<tid>/children.
fn for_each_child(mut f: impl FnMut(libc::pid_t)) {
    let fd = match sys::open(c"/proc/thread-self/children", libc::O_RDONLY, 0) {
        Ok(fd) => fd,
        Err(_) => return,
    };
    let mut buf = [0u8; 4096];
    let mut pid: libc::pid_t = 0;
    let mut in_number = false;
    loop {
        // SAFETY: reading into a stack buffer of the length passed.
        let n = unsafe { libc::read(fd, buf.as_mut_ptr() as *mut libc::c_void, buf.len()) };
        if n <= 0 {
            break;
        }
        for &b in &buf[..n as usize] {
            if b.is_ascii_digit() {
                pid = pid * 10 + (b - b'0') as libc::pid_t;
                in_number = true;
            } else if in_number {
                f(pid);
                pid = 0;
                in_number = false;
            }
        }
    }
    if in_number {
        f(pid);
    }
    sys::close(fd);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_round_trip() {
        let m = Msg {
            kind: kind::EXIT,
            stage: 7,
            value: -3,
            extra: 99,
        };
        assert_eq!(Msg::from_bytes(&m.to_bytes()), Some(m));
        assert_eq!(Msg::from_bytes(&[0; 3]), None);
    }

    #[test]
    fn mask_source_constant_matches() {
        assert_eq!(
            c_mask_source().to_str().unwrap(),
            crate::mounts::MASK_SOURCE
        );
    }
}
