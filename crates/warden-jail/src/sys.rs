//! Thin wrappers over the system calls the jail makes, one small function each.
//!
//! Everything here is safe to call between `fork` and `execve` in a multi-threaded process:
//! no allocation, no locks, no panics; arguments are borrowed C strings and raw descriptors
//! prepared by the parent. Each returns the raw `errno` on failure.

use std::ffi::CStr;
use std::io;
use std::os::fd::RawFd;
use std::ptr;

use libc::{c_int, c_long, c_uint, c_ulong, c_void, pid_t};

/// A failed system call's `errno`.
pub type SysResult<T> = Result<T, i32>;

fn errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

fn check(ret: c_long) -> SysResult<c_long> {
    if ret < 0 { Err(errno()) } else { Ok(ret) }
}

fn check_int(ret: c_int) -> SysResult<c_int> {
    if ret < 0 { Err(errno()) } else { Ok(ret) }
}

// Constants not (yet) exported by every libc release we build with.
pub const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;
pub const MOUNT_ATTR_RDONLY: u64 = 0x1;
pub const MOUNT_ATTR_NOSUID: u64 = 0x2;
pub const MOUNT_ATTR_NODEV: u64 = 0x4;
pub const MOUNT_ATTR_NOEXEC: u64 = 0x8;
pub const OPEN_TREE_CLONE: c_uint = 1;
pub const MOVE_MOUNT_F_EMPTY_PATH: c_uint = 4;
const LANDLOCK_CREATE_RULESET_VERSION: c_uint = 1;

#[repr(C)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

#[repr(C)]
struct MountAttr {
    attr_set: u64,
    attr_clr: u64,
    propagation: u64,
    userns_fd: u64,
}

/// `clone3` without a new stack: like `fork`, the child continues on a copy of the caller's
/// stack and this returns `Ok(0)` in it. Returns the child's pid and a pidfd in the parent.
///
/// # Safety
/// In the child, only async-signal-safe code may run until `execve` or `_exit`, and the
/// child must never return into the caller's frames beyond the function that called this.
pub unsafe fn clone3(flags: u64, cgroup: Option<RawFd>) -> SysResult<(pid_t, RawFd)> {
    let mut pidfd: c_int = -1;
    let into_cgroup = if cgroup.is_some() {
        CLONE_INTO_CGROUP
    } else {
        0
    };
    let args = CloneArgs {
        flags: flags | libc::CLONE_PIDFD as u64 | into_cgroup,
        pidfd: &mut pidfd as *mut c_int as u64,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: cgroup.unwrap_or(0) as u64,
    };
    // SAFETY: `args` is a valid, fully initialised clone_args of the size we pass; the
    // kernel writes the pidfd into `pidfd`, which outlives the call. The caller upholds the
    // fork-like contract documented above.
    let pid = check(unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            size_of::<CloneArgs>(),
        )
    })?;
    Ok((pid as pid_t, pidfd))
}

/// A fork by raw `clone(SIGCHLD)`, for the sandbox's init to start the command.
///
/// Not glibc's `fork()`: init itself was cloned from a possibly multi-threaded supervisor,
/// so locks that other threads held at that moment (malloc's arenas among them) stay locked
/// in init forever, and glibc's `fork()` takes them for its atfork handling.
pub fn fork() -> SysResult<pid_t> {
    // SAFETY: clone without CLONE_VM or a new stack behaves as fork; callers run only
    // async-signal-safe code in the child.
    let r = unsafe { libc::syscall(libc::SYS_clone, libc::SIGCHLD as c_long, 0, 0, 0, 0) };
    check(r).map(|pid| pid as pid_t)
}

pub fn open_tree(path: &CStr, recursive: bool) -> SysResult<RawFd> {
    let mut flags = OPEN_TREE_CLONE | libc::O_CLOEXEC as c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as c_uint;
    }
    // SAFETY: `path` is a valid NUL-terminated string for the duration of the call.
    let fd =
        check(unsafe { libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, path.as_ptr(), flags) })?;
    Ok(fd as RawFd)
}

/// Sets and clears mount attributes on the detached or attached tree `fd` refers to.
pub fn mount_setattr_fd(
    fd: RawFd,
    recursive: bool,
    set: u64,
    clear: u64,
    private: bool,
) -> SysResult<()> {
    let attr = MountAttr {
        attr_set: set,
        attr_clr: clear,
        propagation: if private { libc::MS_PRIVATE } else { 0 },
        userns_fd: 0,
    };
    let mut flags = libc::AT_EMPTY_PATH as c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as c_uint;
    }
    // SAFETY: the empty path is a static C string and `attr` a valid mount_attr whose size
    // we pass; both outlive the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            fd,
            c"".as_ptr(),
            flags,
            &attr as *const MountAttr,
            size_of::<MountAttr>(),
        )
    })?;
    Ok(())
}

/// Attaches the detached tree `fd` at `target`.
pub fn move_mount(fd: RawFd, target: &CStr) -> SysResult<()> {
    // SAFETY: both paths are valid C strings for the duration of the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            fd,
            c"".as_ptr(),
            libc::AT_FDCWD,
            target.as_ptr(),
            MOVE_MOUNT_F_EMPTY_PATH,
        )
    })?;
    Ok(())
}

pub fn mount(
    source: &CStr,
    target: &CStr,
    fstype: Option<&CStr>,
    flags: c_ulong,
    data: Option<&CStr>,
) -> SysResult<()> {
    let fstype = fstype.map_or(ptr::null(), CStr::as_ptr);
    let data = data.map_or(ptr::null(), |d| d.as_ptr() as *const c_void);
    // SAFETY: all pointers are valid C strings or null, as mount(2) accepts.
    check_int(unsafe { libc::mount(source.as_ptr(), target.as_ptr(), fstype, flags, data) })?;
    Ok(())
}

/// Moves the mount at the current directory over `/` and makes it this process's root,
/// the way `switch_root` does. The old root stays underneath, covered and unreachable by
/// any path; unlike `pivot_root` + `umount2`, nothing is unmounted, so the call does not
/// wait for an RCU grace period (about a millisecond on a small VM).
pub fn move_here_onto_root() -> SysResult<()> {
    // SAFETY: static C strings; no data argument.
    check_int(unsafe {
        libc::mount(
            c".".as_ptr(),
            c"/".as_ptr(),
            ptr::null(),
            libc::MS_MOVE,
            ptr::null(),
        )
    })?;
    // SAFETY: static C string.
    check_int(unsafe { libc::chroot(c".".as_ptr()) })?;
    Ok(())
}

pub fn chdir(path: &CStr) -> SysResult<()> {
    // SAFETY: valid C string.
    check_int(unsafe { libc::chdir(path.as_ptr()) })?;
    Ok(())
}

pub fn mkdir(path: &CStr, mode: libc::mode_t) -> SysResult<()> {
    // SAFETY: valid C string.
    check_int(unsafe { libc::mkdir(path.as_ptr(), mode) })?;
    Ok(())
}

pub fn open(path: &CStr, flags: c_int, mode: libc::mode_t) -> SysResult<RawFd> {
    // SAFETY: valid C string; the mode argument is read only with O_CREAT.
    check_int(unsafe { libc::open(path.as_ptr(), flags | libc::O_CLOEXEC, mode as c_uint) })
}

pub fn symlink(target: &CStr, link: &CStr) -> SysResult<()> {
    // SAFETY: valid C strings.
    check_int(unsafe { libc::symlink(target.as_ptr(), link.as_ptr()) })?;
    Ok(())
}

pub fn unlink(path: &CStr) -> SysResult<()> {
    // SAFETY: valid C string.
    check_int(unsafe { libc::unlink(path.as_ptr()) })?;
    Ok(())
}

pub fn close(fd: RawFd) {
    // SAFETY: closing a descriptor this process owns; errors are irrelevant here.
    unsafe { libc::close(fd) };
}

/// Closes every descriptor from `first` upwards, except `keep` (which may be -1).
/// Closes every descriptor except those in `keep` (sorted and deduplicated in place; negative
/// entries are ignored). Allocates nothing: safe between clone and exec.
pub fn close_all_except(keep: &mut [RawFd]) -> SysResult<()> {
    keep.sort_unstable();
    let mut next: c_uint = 0;
    for &fd in keep.iter() {
        if fd < 0 || (fd as c_uint) < next {
            continue;
        }
        if fd as c_uint > next {
            // SAFETY: close_range only closes descriptors; the range is well-formed.
            check(unsafe {
                libc::syscall(libc::SYS_close_range, next, fd as c_uint - 1, 0 as c_uint)
            })?;
        }
        next = fd as c_uint + 1;
    }
    // SAFETY: as above.
    check(unsafe { libc::syscall(libc::SYS_close_range, next, c_uint::MAX, 0 as c_uint) })?;
    Ok(())
}

pub fn close_from(first: c_uint, keep: RawFd) -> SysResult<()> {
    let close_range = |lo: c_uint, hi: c_uint| {
        // SAFETY: close_range only closes descriptors; the range is well-formed.
        check(unsafe { libc::syscall(libc::SYS_close_range, lo, hi, 0 as c_uint) })
    };
    if keep >= first as RawFd {
        if keep > first as RawFd {
            close_range(first, keep as c_uint - 1)?;
        }
        close_range(keep as c_uint + 1, c_uint::MAX)?;
    } else {
        close_range(first, c_uint::MAX)?;
    }
    Ok(())
}

pub fn dup2(from: RawFd, to: RawFd) -> SysResult<()> {
    // SAFETY: dup2 on descriptors; no memory is involved.
    check_int(unsafe { libc::dup2(from, to) })?;
    Ok(())
}

/// Duplicates `fd` to the lowest free descriptor at or above `min`, close-on-exec.
pub fn dup_above(fd: RawFd, min: RawFd) -> SysResult<RawFd> {
    // SAFETY: fcntl(F_DUPFD_CLOEXEC) takes an integer argument.
    check_int(unsafe { libc::fcntl(fd, libc::F_DUPFD_CLOEXEC, min) })
}

pub fn write_all(fd: RawFd, mut buf: &[u8]) -> SysResult<()> {
    while !buf.is_empty() {
        // SAFETY: `buf` is a valid readable slice of the length passed.
        let n = unsafe { libc::write(fd, buf.as_ptr() as *const c_void, buf.len()) };
        if n < 0 {
            let e = errno();
            if e == libc::EINTR {
                continue;
            }
            return Err(e);
        }
        buf = &buf[n as usize..];
    }
    Ok(())
}

/// Writes `data` to the file at `path` (which must exist).
pub fn write_file(path: &CStr, data: &[u8]) -> SysResult<()> {
    let fd = open(path, libc::O_WRONLY, 0)?;
    let r = write_all(fd, data);
    close(fd);
    r
}

pub fn sethostname(name: &[u8]) -> SysResult<()> {
    // SAFETY: `name` is a valid slice of the length passed.
    check_int(unsafe { libc::sethostname(name.as_ptr() as *const libc::c_char, name.len()) })?;
    Ok(())
}

pub fn unshare(flags: c_int) -> SysResult<()> {
    // SAFETY: unshare takes only flags.
    check_int(unsafe { libc::unshare(flags) })?;
    Ok(())
}

/// Joins the namespace `fd` refers to (`nstype`: which kind it must be).
pub fn setns(fd: RawFd, nstype: c_int) -> SysResult<()> {
    // SAFETY: setns takes a descriptor and flags.
    check_int(unsafe { libc::setns(fd, nstype) })?;
    Ok(())
}

pub fn prctl(option: c_int, arg2: c_ulong) -> SysResult<c_int> {
    // SAFETY: the prctl options used by the jail take integer arguments only.
    check_int(unsafe { libc::prctl(option, arg2, 0 as c_ulong, 0 as c_ulong, 0 as c_ulong) })
}

pub fn setrlimit(resource: libc::__rlimit_resource_t, value: u64) -> SysResult<()> {
    let lim = libc::rlimit {
        rlim_cur: value,
        rlim_max: value,
    };
    // SAFETY: `lim` is a valid rlimit.
    check_int(unsafe { libc::setrlimit(resource, &lim) })?;
    Ok(())
}

/// Empties the effective, permitted and inheritable capability sets.
pub fn capset_none() -> SysResult<()> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    const VERSION_3: u32 = 0x2008_0522;
    let header = Header {
        version: VERSION_3,
        pid: 0,
    };
    let data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: version-3 capset takes a header and two data structs, both valid here.
    check(unsafe { libc::syscall(libc::SYS_capset, &header as *const Header, data.as_ptr()) })?;
    Ok(())
}

/// Returns the effective capability set (both 32-bit words), to verify a drop.
pub fn capget_effective() -> SysResult<u64> {
    #[repr(C)]
    struct Header {
        version: u32,
        pid: c_int,
    }
    #[repr(C)]
    #[derive(Clone, Copy)]
    struct Data {
        effective: u32,
        permitted: u32,
        inheritable: u32,
    }
    let header = Header {
        version: 0x2008_0522,
        pid: 0,
    };
    let mut data = [Data {
        effective: 0,
        permitted: 0,
        inheritable: 0,
    }; 2];
    // SAFETY: capget writes two data structs into `data`, which is large enough.
    check(unsafe {
        libc::syscall(
            libc::SYS_capget,
            &header as *const Header,
            data.as_mut_ptr(),
        )
    })?;
    Ok((data[0].effective as u64)
        | ((data[1].effective as u64) << 32)
        | (data[0].permitted as u64)
        | ((data[1].permitted as u64) << 32))
}

/// The Landlock ABI version of the running kernel, or the errno (EOPNOTSUPP, ENOSYS).
pub fn landlock_abi() -> SysResult<i32> {
    // SAFETY: the version query takes a null attribute pointer and size 0.
    let v = check(unsafe {
        libc::syscall(
            libc::SYS_landlock_create_ruleset,
            ptr::null::<c_void>(),
            0usize,
            LANDLOCK_CREATE_RULESET_VERSION,
        )
    })?;
    Ok(v as i32)
}

pub fn landlock_restrict_self(ruleset: RawFd) -> SysResult<()> {
    // SAFETY: takes a descriptor and flags.
    check(unsafe { libc::syscall(libc::SYS_landlock_restrict_self, ruleset, 0 as c_uint) })?;
    Ok(())
}

/// Installs a seccomp filter (no_new_privs must already be set).
pub fn seccomp_filter(program: &[libc::sock_filter]) -> SysResult<()> {
    let prog = libc::sock_fprog {
        len: program.len() as u16,
        filter: program.as_ptr() as *mut libc::sock_filter,
    };
    // SAFETY: `prog` points at `program`, which outlives the call; the kernel copies it.
    check(unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_SET_MODE_FILTER,
            0 as c_uint,
            &prog as *const libc::sock_fprog,
        )
    })?;
    Ok(())
}

/// Whether the kernel's seccomp supports the filter return `action`
/// (SECCOMP_GET_ACTION_AVAIL; Linux 4.14).
pub fn seccomp_action_available(action: u32) -> SysResult<()> {
    // SAFETY: the kernel reads one u32 from `action`, which outlives the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            libc::SECCOMP_GET_ACTION_AVAIL,
            0 as c_uint,
            &action as *const u32,
        )
    })?;
    Ok(())
}

pub fn ioctl_int(fd: RawFd, request: c_ulong, arg: c_int) -> SysResult<()> {
    // SAFETY: the requests used with this helper take an integer argument.
    check_int(unsafe { libc::ioctl(fd, request, arg) })?;
    Ok(())
}

pub fn ioctl_ptr<T>(fd: RawFd, request: c_ulong, arg: &mut T) -> SysResult<()> {
    // SAFETY: the caller pairs each request with the type the kernel reads or writes.
    check_int(unsafe { libc::ioctl(fd, request, arg as *mut T) })?;
    Ok(())
}

pub fn setsid() -> SysResult<()> {
    // SAFETY: no arguments.
    check_int(unsafe { libc::setsid() })?;
    Ok(())
}

pub fn getppid() -> pid_t {
    // SAFETY: no arguments, cannot fail.
    unsafe { libc::getppid() }
}

pub fn kill(pid: pid_t, sig: c_int) -> SysResult<()> {
    // SAFETY: kill takes integers.
    check_int(unsafe { libc::kill(pid, sig) })?;
    Ok(())
}

/// Waits for any child; returns (pid, raw wait status).
pub fn wait_any(flags: c_int) -> SysResult<(pid_t, c_int)> {
    let mut status: c_int = 0;
    // SAFETY: `status` is a valid out-pointer.
    let pid = check_int(unsafe { libc::waitpid(-1, &mut status, flags) })?;
    Ok((pid, status))
}

/// Blocks every signal in `set` and returns the previous mask.
pub fn block_signals(set: &libc::sigset_t) -> SysResult<libc::sigset_t> {
    // SAFETY: sigset_t is plain data; zeroed is valid before the kernel fills it.
    let mut old: libc::sigset_t = unsafe { std::mem::zeroed() };
    // SAFETY: both pointers are valid sigset_t.
    let r = unsafe { libc::sigprocmask(libc::SIG_BLOCK, set, &mut old) };
    check_int(r)?;
    Ok(old)
}

pub fn set_signal_mask(set: &libc::sigset_t) -> SysResult<()> {
    // SAFETY: valid sigset_t; old mask not requested.
    check_int(unsafe { libc::sigprocmask(libc::SIG_SETMASK, set, ptr::null_mut()) })?;
    Ok(())
}

pub fn sigset(signals: &[c_int]) -> libc::sigset_t {
    // SAFETY: sigemptyset initialises the zeroed set; sigaddset adds valid signal numbers.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for &s in signals {
            libc::sigaddset(&mut set, s);
        }
        set
    }
}

/// Waits for one of the blocked signals in `set`.
pub fn sigwait(set: &libc::sigset_t) -> SysResult<c_int> {
    // SAFETY: valid set; siginfo is not requested.
    check_int(unsafe { libc::sigwaitinfo(set, ptr::null_mut()) })
}

/// Resets one signal to its default action.
pub fn default_signal(sig: c_int) {
    // SAFETY: setting SIG_DFL for a valid signal number has no memory effects.
    unsafe { libc::signal(sig, libc::SIG_DFL) };
}

pub fn ignore_signal(sig: c_int) {
    // SAFETY: setting SIG_IGN for a valid signal number has no memory effects.
    unsafe { libc::signal(sig, libc::SIG_IGN) };
}

/// Executes `path` with NUL-terminated argument and environment pointer arrays.
/// Returns only on failure.
pub fn execve(path: &CStr, argv: &[*const libc::c_char], envp: &[*const libc::c_char]) -> i32 {
    // SAFETY: argv and envp are null-terminated arrays of pointers to C strings that the
    // parent built and that stay alive until exec replaces the image.
    unsafe { libc::execve(path.as_ptr(), argv.as_ptr(), envp.as_ptr()) };
    errno()
}

pub fn exit_now(code: c_int) -> ! {
    // SAFETY: _exit never returns and runs no destructors or atexit handlers.
    unsafe { libc::_exit(code) }
}

/// Sends a fixed-size message on a SOCK_SEQPACKET socket, optionally carrying a descriptor.
pub fn send_msg(sock: RawFd, bytes: &[u8], pass_fd: Option<RawFd>) -> SysResult<()> {
    let mut iov = libc::iovec {
        iov_base: bytes.as_ptr() as *mut c_void,
        iov_len: bytes.len(),
    };
    // Room for one descriptor, aligned as cmsghdr requires.
    #[repr(C, align(8))]
    struct Cmsg([u8; 64]);
    let mut cbuf = Cmsg([0; 64]);
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    if let Some(fd) = pass_fd {
        // SAFETY: CMSG_SPACE/LEN are pure computations.
        let (space, len) = unsafe {
            (
                libc::CMSG_SPACE(size_of::<c_int>() as u32),
                libc::CMSG_LEN(size_of::<c_int>() as u32),
            )
        };
        msg.msg_control = cbuf.0.as_mut_ptr() as *mut c_void;
        msg.msg_controllen = space as usize;
        // SAFETY: the control buffer is large and aligned enough for one cmsghdr holding
        // one int, so CMSG_FIRSTHDR is non-null and CMSG_DATA points inside it.
        unsafe {
            let cmsg = libc::CMSG_FIRSTHDR(&msg);
            (*cmsg).cmsg_level = libc::SOL_SOCKET;
            (*cmsg).cmsg_type = libc::SCM_RIGHTS;
            (*cmsg).cmsg_len = len as usize;
            ptr::copy_nonoverlapping(
                &fd as *const c_int as *const u8,
                libc::CMSG_DATA(cmsg),
                size_of::<c_int>(),
            );
        }
    }
    loop {
        // SAFETY: `msg` and everything it points at are valid for the call.
        let n = unsafe { libc::sendmsg(sock, &msg, libc::MSG_NOSIGNAL) };
        if n >= 0 {
            return Ok(());
        }
        let e = errno();
        if e != libc::EINTR {
            return Err(e);
        }
    }
}

/// Receives one message; returns its length and a descriptor if one was passed.
pub fn recv_msg(sock: RawFd, buf: &mut [u8]) -> SysResult<(usize, Option<RawFd>)> {
    let mut iov = libc::iovec {
        iov_base: buf.as_mut_ptr() as *mut c_void,
        iov_len: buf.len(),
    };
    #[repr(C, align(8))]
    struct Cmsg([u8; 64]);
    let mut cbuf = Cmsg([0; 64]);
    // SAFETY: msghdr is plain data; all-zero is valid.
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    msg.msg_iov = &mut iov;
    msg.msg_iovlen = 1;
    msg.msg_control = cbuf.0.as_mut_ptr() as *mut c_void;
    msg.msg_controllen = cbuf.0.len();
    let n = loop {
        // SAFETY: `msg` points at valid buffers for the call.
        let n = unsafe { libc::recvmsg(sock, &mut msg, libc::MSG_CMSG_CLOEXEC) };
        if n >= 0 {
            break n as usize;
        }
        let e = errno();
        if e != libc::EINTR {
            return Err(e);
        }
    };
    let mut fd = None;
    // SAFETY: the kernel filled msg_control/msg_controllen; CMSG_FIRSTHDR/NXTHDR walk it
    // within bounds and CMSG_DATA of an SCM_RIGHTS header holds ints.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(&msg);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_SOCKET && (*cmsg).cmsg_type == libc::SCM_RIGHTS {
                let mut raw: c_int = -1;
                ptr::copy_nonoverlapping(
                    libc::CMSG_DATA(cmsg),
                    &mut raw as *mut c_int as *mut u8,
                    size_of::<c_int>(),
                );
                fd = Some(raw);
            }
            cmsg = libc::CMSG_NXTHDR(&msg, cmsg);
        }
    }
    Ok((n, fd))
}

pub fn pidfd_send_signal(pidfd: RawFd, sig: c_int) -> SysResult<()> {
    // SAFETY: takes a descriptor, a signal number, a null siginfo and flags.
    check(unsafe {
        libc::syscall(
            libc::SYS_pidfd_send_signal,
            pidfd,
            sig,
            ptr::null::<c_void>(),
            0 as c_uint,
        )
    })?;
    Ok(())
}

/// Reaps the child behind `pidfd` without blocking; `Some(raw status)` once it has exited.
pub fn pidfd_try_wait(pidfd: RawFd) -> SysResult<Option<c_int>> {
    // SAFETY: siginfo_t is plain data; zeroed is valid for waitid to fill.
    let mut info: libc::siginfo_t = unsafe { std::mem::zeroed() };
    // SAFETY: `info` is a valid out-pointer.
    check_int(unsafe {
        libc::waitid(
            libc::P_PIDFD,
            pidfd as libc::id_t,
            &mut info,
            libc::WEXITED | libc::WNOHANG,
        )
    })?;
    // SAFETY: waitid filled `info`; si_pid is zero when no child changed state.
    let (pid, code, status) = unsafe { (info.si_pid(), info.si_code, info.si_status()) };
    if pid == 0 {
        return Ok(None);
    }
    // Re-encode as a wait(2) status so callers can use the usual WIF* macros.
    Ok(Some(if code == libc::CLD_EXITED {
        (status & 0xff) << 8
    } else {
        status & 0x7f
    }))
}

/// Ends this process the way a child ended: by the same signal (without a core dump), so
/// that shells and supervisors see what really happened. Falls back to exit 128+signal.
pub fn die_by_signal(sig: c_int) -> ! {
    let _ = setrlimit(libc::RLIMIT_CORE, 0);
    // SAFETY: resetting a disposition to SIG_DFL and unblocking it has no memory effects.
    unsafe {
        libc::signal(sig, libc::SIG_DFL);
        let set = sigset(&[sig]);
        libc::sigprocmask(libc::SIG_UNBLOCK, &set, ptr::null_mut());
        libc::raise(sig);
    }
    exit_now(128 + sig)
}

/// Adds a path-beneath rule to a Landlock ruleset: `access` beneath the directory or file
/// that `parent` (an O_PATH descriptor) refers to.
pub fn landlock_add_path_rule(ruleset: RawFd, parent: RawFd, access: u64) -> SysResult<()> {
    #[repr(C, packed)]
    struct PathBeneathAttr {
        allowed_access: u64,
        parent_fd: i32,
    }
    const LANDLOCK_RULE_PATH_BENEATH: c_int = 1;
    let attr = PathBeneathAttr {
        allowed_access: access,
        parent_fd: parent,
    };
    // SAFETY: `attr` is a valid, packed landlock_path_beneath_attr that outlives the call.
    check(unsafe {
        libc::syscall(
            libc::SYS_landlock_add_rule,
            ruleset,
            LANDLOCK_RULE_PATH_BENEATH,
            &attr as *const PathBeneathAttr,
            0 as c_uint,
        )
    })?;
    Ok(())
}

/// A stack for a task started with `CLONE_VM`: an anonymous mapping, so that nothing is
/// written (or faulted in) before the task touches it, unlike a zeroed heap buffer.
#[derive(Debug)]
pub struct TaskStack {
    base: *mut c_void,
}

// SAFETY: the mapping is plain memory owned by this value; nothing in it is thread-bound.
unsafe impl Send for TaskStack {}

impl TaskStack {
    pub const SIZE: usize = 64 * 1024;

    pub fn new() -> io::Result<TaskStack> {
        // SAFETY: a fresh private anonymous mapping; no existing memory is affected.
        let base = unsafe {
            libc::mmap(
                ptr::null_mut(),
                Self::SIZE,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS | libc::MAP_STACK | libc::MAP_NORESERVE,
                -1,
                0,
            )
        };
        if base == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(TaskStack { base })
    }

    /// The 16-byte-aligned top (stacks grow down on every architecture warden supports).
    pub fn top(&self) -> usize {
        (self.base as usize + Self::SIZE) & !0xf
    }

    /// Keeps the mapping for the rest of the process's life (and of tasks sharing it).
    pub fn leak(self) -> usize {
        let top = self.top();
        std::mem::forget(self);
        top
    }
}

impl Drop for TaskStack {
    fn drop(&mut self) {
        // SAFETY: our own mapping, unmapped once; its owner outlives the task using it.
        unsafe { libc::munmap(self.base, Self::SIZE) };
    }
}

/// Starts `f(arg)` in a new process that shares this process's memory (`CLONE_VM`), on the
/// stack whose top is `stack_top`, without signalling its end to us (reap it with
/// [`wait_task`], or let it outlive this process, which is what the detached cleanup does:
/// finishing work after warden has exited, without the cost of a fork).
///
/// # Safety
/// `f` may use only async-signal-safe calls (the parent keeps running and may hold any
/// lock); while the parent runs on, `f` must not touch `errno` either (it is the parent's
/// thread's variable: use rustix's raw calls). `arg` and the stack must stay valid until
/// the task exits, and the stack must be large enough for `f`.
pub unsafe fn spawn_shared_memory_task(
    f: extern "C" fn(*mut c_void) -> c_int,
    arg: *mut c_void,
    stack_top: usize,
) -> SysResult<pid_t> {
    // SAFETY: the caller guarantees f, arg and the stack (see above).
    check_int(unsafe { libc::clone(f, stack_top as *mut c_void, libc::CLONE_VM, arg) })
}

/// Waits for a task started by [`spawn_shared_memory_task`] (which sends no signal at its
/// end, hence `__WALL`) and returns its wait status.
pub fn wait_task(pid: pid_t) -> SysResult<c_int> {
    let mut status = 0;
    loop {
        // SAFETY: waitpid with a valid status pointer.
        match check_int(unsafe { libc::waitpid(pid, &mut status, libc::__WALL) }) {
            Ok(_) => return Ok(status),
            Err(libc::EINTR) => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Sleeps for `ms` milliseconds (async-signal-safe).
pub fn sleep_ms(ms: u64) {
    let ts = libc::timespec {
        tv_sec: (ms / 1000) as libc::time_t,
        tv_nsec: ((ms % 1000) * 1_000_000) as c_long,
    };
    // SAFETY: a valid timespec; the remainder is not wanted.
    unsafe { libc::nanosleep(&ts, ptr::null_mut()) };
}

/// Removes a directory (async-signal-safe).
pub fn rmdir(path: &CStr) -> SysResult<()> {
    // SAFETY: valid C string.
    check_int(unsafe { libc::rmdir(path.as_ptr()) })?;
    Ok(())
}

/// Starts `f(arg)` in a child that borrows this process's memory until it calls `execve` or
/// `_exit` (`CLONE_VM | CLONE_VFORK`, as `posix_spawn` does): no page tables are copied, and
/// this process waits meanwhile. Returns the child's pid.
///
/// # Safety
/// `f` may use only async-signal-safe calls, must end in `execve` or `_exit`, and must not
/// write memory this process relies on (its stack is `stack_top`'s, separate from ours);
/// `arg` must stay valid until then (it does: we are suspended), and `stack_top` must be the
/// 16-byte-aligned top of a writable area large enough for `f`.
pub unsafe fn spawn_vfork(
    f: extern "C" fn(*mut c_void) -> c_int,
    arg: *mut c_void,
    stack_top: usize,
) -> SysResult<pid_t> {
    // SAFETY: as the caller guarantees.
    check_int(unsafe {
        libc::clone(
            f,
            stack_top as *mut c_void,
            libc::CLONE_VM | libc::CLONE_VFORK | libc::SIGCHLD,
            arg,
        )
    })
}

/// Removes the `warden-<pid>-<n>` directories in `parent` whose warden process no longer
/// exists and which are at least `min_age_secs` old: a warden killed with SIGKILL cannot
/// remove its cgroups itself. A cgroup that still holds processes cannot be removed (EBUSY)
/// and stays. The age guard keeps a warden in another pid namespace, which we cannot see,
/// from losing a cgroup it has just made. Allocation-free (runs in the detached cleanup).
pub fn remove_stale_cgroups(parent: &CStr, min_age_secs: i64) {
    // SAFETY: valid C string.
    let dir = unsafe {
        libc::open(
            parent.as_ptr(),
            libc::O_RDONLY | libc::O_DIRECTORY | libc::O_CLOEXEC,
        )
    };
    if dir < 0 {
        return;
    }
    let mut now = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: a valid out-pointer.
    unsafe { libc::clock_gettime(libc::CLOCK_REALTIME, &mut now) };
    let mut buf = [0u8; 8192];
    loop {
        // SAFETY: the buffer is valid for its length; getdents64 writes at most that much.
        let n = unsafe { libc::syscall(libc::SYS_getdents64, dir, buf.as_mut_ptr(), buf.len()) };
        if n <= 0 {
            break;
        }
        let mut off = 0usize;
        while off + 19 < n as usize {
            let reclen = u16::from_ne_bytes([buf[off + 16], buf[off + 17]]) as usize;
            if reclen == 0 {
                break;
            }
            let name_end = buf[off + 19..off + reclen]
                .iter()
                .position(|b| *b == 0)
                .map(|p| off + 19 + p);
            if let Some(end) = name_end
                && let Some(pid) = stale_name_pid(&buf[off + 19..end])
                // SAFETY: kill with signal 0 only checks for existence.
                && unsafe { libc::kill(pid, 0) } == -1
                && errno() == libc::ESRCH
            {
                // The name is NUL-terminated in the buffer.
                let name = buf[off + 19..=end].as_ptr().cast::<libc::c_char>();
                // SAFETY: an all-zero stat is a valid out-buffer.
                let mut st: libc::stat = unsafe { std::mem::zeroed() };
                // SAFETY: dir is open, name is NUL-terminated, st is a valid out-pointer.
                let ok =
                    unsafe { libc::fstatat(dir, name, &mut st, libc::AT_SYMLINK_NOFOLLOW) } == 0;
                if ok && now.tv_sec - st.st_mtime >= min_age_secs {
                    // SAFETY: as above; fails harmlessly if the directory is not empty.
                    unsafe { libc::unlinkat(dir, name, libc::AT_REMOVEDIR) };
                }
            }
            off += reclen;
        }
    }
    // SAFETY: closing the descriptor we opened.
    unsafe { libc::close(dir) };
}

/// The pid in a `warden-<pid>-<n>` name.
fn stale_name_pid(name: &[u8]) -> Option<pid_t> {
    let rest = name.strip_prefix(b"warden-")?;
    let dash = rest.iter().position(|b| *b == b'-')?;
    let (digits, tail) = rest.split_at(dash);
    if digits.is_empty()
        || digits.len() > 9
        || tail.len() < 2
        || !tail[1..].iter().all(u8::is_ascii_digit)
    {
        return None;
    }
    let mut pid: pid_t = 0;
    for d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        pid = pid * 10 + (d - b'0') as pid_t;
    }
    (pid > 0).then_some(pid)
}

/// A TCP socket listening on 127.0.0.1:`port` (in the calling process's network namespace).
pub fn tcp_listen_loopback(port: u16) -> SysResult<RawFd> {
    // SAFETY: socket(2) with integer arguments.
    let fd = check_int(unsafe {
        libc::socket(libc::AF_INET, libc::SOCK_STREAM | libc::SOCK_CLOEXEC, 0)
    })?;
    let addr = libc::sockaddr_in {
        sin_family: libc::AF_INET as libc::sa_family_t,
        sin_port: port.to_be(),
        sin_addr: libc::in_addr {
            s_addr: u32::from_be_bytes([127, 0, 0, 1]).to_be(),
        },
        sin_zero: [0; 8],
    };
    // SAFETY: `addr` is a valid sockaddr_in of the size passed.
    let bound = check_int(unsafe {
        libc::bind(
            fd,
            (&addr as *const libc::sockaddr_in).cast(),
            size_of::<libc::sockaddr_in>() as libc::socklen_t,
        )
    })
    // SAFETY: listen on the socket we own.
    .and_then(|_| check_int(unsafe { libc::listen(fd, 256) }));
    if let Err(e) = bound {
        close(fd);
        return Err(e);
    }
    Ok(fd)
}

#[cfg(test)]
mod stale_tests {
    use super::*;
    use std::ffi::CString;

    #[test]
    fn parses_sandbox_names() {
        assert_eq!(stale_name_pid(b"warden-123-0"), Some(123));
        assert_eq!(stale_name_pid(b"warden-123-45"), Some(123));
        assert_eq!(stale_name_pid(b"warden-123"), None);
        assert_eq!(stale_name_pid(b"warden--1"), None);
        assert_eq!(stale_name_pid(b"warden-12a-1"), None);
        assert_eq!(stale_name_pid(b"other-123-1"), None);
        assert_eq!(stale_name_pid(b"warden-123-x"), None);
    }

    #[test]
    fn removes_only_old_empty_directories_of_dead_wardens() {
        let tmp = tempfile::tempdir().unwrap();
        let dead_old = tmp.path().join("warden-999999999-0");
        let dead_young = tmp.path().join("warden-999999998-0");
        let dead_busy = tmp.path().join("warden-999999997-0");
        let alive = tmp.path().join(format!("warden-{}-0", std::process::id()));
        let unrelated = tmp.path().join("something-else");
        for d in [&dead_old, &dead_young, &dead_busy, &alive, &unrelated] {
            std::fs::create_dir(d).unwrap();
        }
        std::fs::write(dead_busy.join("member"), "x").unwrap();
        let old = std::time::SystemTime::now() - std::time::Duration::from_secs(3600);
        for d in [&dead_old, &dead_busy, &alive, &unrelated] {
            std::fs::File::open(d).unwrap().set_modified(old).unwrap();
        }
        let parent = CString::new(tmp.path().as_os_str().as_encoded_bytes()).unwrap();
        remove_stale_cgroups(&parent, 60);
        assert!(!dead_old.exists());
        assert!(dead_young.exists() && dead_busy.exists() && alive.exists() && unrelated.exists());
    }
}
