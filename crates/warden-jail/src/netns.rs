//! The sandbox's network namespace, made beside init instead of by init's `clone3`.
//!
//! Creating a network namespace is the slowest step of starting a sandbox: every network
//! subsystem sets up its state for the new namespace (about 0.25 ms on the benchmark
//! machine, more than all the mounts). When `clone3` creates it, the supervisor waits for it
//! before init even starts. Instead, right after the clone, the supervisor starts a helper
//! task that
//!
//! 1. enters init's user namespace (the supervisor's user owns it, so this needs no
//!    privilege), so that the new network namespace belongs to the sandbox's user namespace,
//!    exactly as if `clone3` had made it;
//! 2. creates the network namespace and brings its loopback interface up;
//! 3. passes the namespace to init over the control socket ([`kind::NETNS`]), or, if a step
//!    failed, which step and why, and ends.
//!
//! Meanwhile init builds its mounts. It joins the namespace at [`MountOp::EnterNetns`], just
//! before it mounts sysfs (which needs it), and long before anything of the command runs: it
//! cannot go on without it, and fails the start if the helper failed. The supervisor reaps
//! the helper before it supervises the command, and fails the start if it died.
//!
//! The helper shares the supervisor's memory (no page tables copied, like `posix_spawn`), so
//! it runs only allocation-free code on its own stack, and makes its system calls through
//! rustix, which never writes the C library's `errno`: that per-thread variable belongs to
//! the supervisor's thread, which keeps running.
//!
//! [`kind::NETNS`]: crate::child::kind::NETNS
//! [`MountOp::EnterNetns`]: crate::mounts::MountOp::EnterNetns

use std::io::IoSlice;
use std::mem::MaybeUninit;
use std::os::fd::{AsFd, BorrowedFd, IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};

use libc::{c_int, c_void, pid_t};
use rustix::io::Errno;
use rustix::net::{SendAncillaryBuffer, SendAncillaryMessage, SendFlags};

use crate::child::{Msg, kind, stage};
use crate::sys;

/// What the helper needs; it lives in the [`Helper`] until the helper has been reaped.
#[derive(Debug)]
struct Args {
    /// init's pidfd: the helper enters init's user namespace through it.
    pidfd: RawFd,
    /// The supervisor's end of the control socket: what the helper sends reaches init.
    ctrl: RawFd,
    /// The helper's failure, for the supervisor too: `stage << 32 | errno`, 0 if none.
    failure: AtomicU64,
}

/// A running helper. Dropping it waits for the helper to end (its stack and arguments are
/// freed then).
#[derive(Debug)]
pub struct Helper {
    pid: pid_t,
    /// What the task reads, kept alive until it has ended.
    args: Box<Args>,
    /// The task's stack, until the task has been reaped.
    stack: Option<sys::TaskStack>,
}

impl Helper {
    /// Starts the helper for the sandbox whose init `pidfd` refers to, talking to init over
    /// `ctrl` (the supervisor's end of the control socket).
    pub fn spawn(pidfd: RawFd, ctrl: RawFd) -> std::io::Result<Helper> {
        let stack = sys::TaskStack::new()?;
        let args = Box::new(Args {
            pidfd,
            ctrl,
            failure: AtomicU64::new(0),
        });
        let arg = (&*args as *const Args).cast_mut().cast::<c_void>();
        // SAFETY: helper_main makes raw system calls only (rustix: no errno, no allocation,
        // no locks), on the stack we pass; the stack and the arguments are owned by the
        // returned Helper, which waits for the task to end before freeing them.
        let pid = unsafe { sys::spawn_shared_memory_task(helper_main, arg, stack.top()) }
            .map_err(std::io::Error::from_raw_os_error)?;
        Ok(Helper {
            pid,
            args,
            stack: Some(stack),
        })
    }

    /// Waits for the helper to end. `Ok(None)`: init has the namespace. `Ok(Some((stage,
    /// errno)))`: the helper could not make it, and told init (which fails at that stage).
    /// An error means it did not end as it should: it neither passed the namespace nor
    /// reported a failure to init, which is then left waiting.
    pub fn wait(mut self) -> Result<Option<(u32, i32)>, String> {
        match self.reap() {
            Ok(status) => judge(status).map(|()| {
                let failure = self.args.failure.load(Ordering::Acquire);
                (failure != 0).then_some(((failure >> 32) as u32, failure as u32 as i32))
            }),
            Err(e) => Err(format!(
                "cannot wait for the task making the sandbox's network namespace: {}",
                std::io::Error::from_raw_os_error(e)
            )),
        }
    }

    fn reap(&mut self) -> sys::SysResult<c_int> {
        // Any error (ECHILD) also means the task is gone: it is our child, reaped elsewhere.
        let status = sys::wait_task(self.pid);
        // Its stack is ours again only now.
        drop(self.stack.take());
        status
    }
}

impl Drop for Helper {
    fn drop(&mut self) {
        // The arguments are freed after this, once the task has ended.
        if self.stack.is_some() {
            let _ = self.reap();
        }
    }
}

/// Whether the helper's wait status is a normal end: 0 (the namespace went to init) or 1 (a
/// failure went to init, which reports it).
fn judge(status: c_int) -> Result<(), String> {
    if libc::WIFEXITED(status) && matches!(libc::WEXITSTATUS(status), 0 | 1) {
        Ok(())
    } else if libc::WIFSIGNALED(status) {
        Err(format!(
            "the task making the sandbox's network namespace was killed by signal {}",
            libc::WTERMSIG(status)
        ))
    } else {
        Err(format!(
            "the task making the sandbox's network namespace ended with wait status {status}"
        ))
    }
}

/// The helper's body. Exit status 0: the namespace went to init; 1: a failure went to init.
extern "C" fn helper_main(arg: *mut c_void) -> c_int {
    // SAFETY: `arg` is the Args that Helper::spawn passed, alive until we are reaped.
    let args = unsafe { &*(arg as *const Args) };
    match run(args) {
        Ok(()) => 0,
        Err((st, errno)) => {
            args.failure.store(
                (u64::from(st) << 32) | u64::from(errno as u32),
                Ordering::Release,
            );
            let msg = Msg {
                kind: kind::NETNS,
                stage: st,
                value: errno,
                extra: 0,
            };
            // If init is gone, there is nobody to tell.
            let _ = send(args.ctrl, msg, None);
            1
        }
    }
}

/// Creates the namespace and sends it to init. On failure: the stage and the errno.
fn run(args: &Args) -> Result<(), (u32, i32)> {
    let code = |st: u32| move |e: Errno| (st, e.raw_os_error());
    // SAFETY: the descriptors are the supervisor's and stay open until we are reaped.
    let pidfd = unsafe { BorrowedFd::borrow_raw(args.pidfd) };
    rustix::thread::move_into_thread_name_spaces(pidfd, rustix::thread::ThreadNameSpaceType::USER)
        .map_err(code(stage::NETNS_USER))?;
    // SAFETY: only CLONE_NEWNET: no descriptor table is unshared.
    unsafe { rustix::thread::unshare_unsafe(rustix::thread::UnshareFlags::NEWNET) }
        .map_err(code(stage::NETNS))?;
    // A loopback that stays down is reported by init as a warning, as it always was.
    let loopback = match loopback_up() {
        Ok(()) => 0,
        Err(e) => e.raw_os_error(),
    };
    let ns = rustix::fs::open(
        c"/proc/thread-self/ns/net",
        rustix::fs::OFlags::RDONLY | rustix::fs::OFlags::CLOEXEC,
        rustix::fs::Mode::empty(),
    )
    .map_err(code(stage::NETNS))?;
    let msg = Msg {
        kind: kind::NETNS,
        stage: 0,
        value: 0,
        extra: loopback,
    };
    let sent = send(args.ctrl, msg, Some(ns.as_fd()));
    close(ns);
    sent.map_err(code(stage::NETNS))
}

/// Brings the loopback interface up (SIOCSIFFLAGS) in the current network namespace.
fn loopback_up() -> rustix::io::Result<()> {
    let sock = rustix::net::socket_with(
        rustix::net::AddressFamily::INET,
        rustix::net::SocketType::DGRAM,
        rustix::net::SocketFlags::CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    req.ifr_ifru.ifru_flags = (libc::IFF_UP | libc::IFF_RUNNING) as libc::c_short;
    // SAFETY: SIOCSIFFLAGS reads an ifreq, which the Setter passes by pointer.
    let set = unsafe {
        rustix::ioctl::ioctl(
            &sock,
            rustix::ioctl::Setter::<{ libc::SIOCSIFFLAGS as rustix::ioctl::Opcode }, _>::new(req),
        )
    };
    close(sock);
    set
}

/// Sends one control message, with a descriptor if given.
fn send(ctrl: RawFd, msg: Msg, fd: Option<BorrowedFd<'_>>) -> rustix::io::Result<()> {
    // SAFETY: the supervisor's end of the control socket, open until we are reaped.
    let ctrl = unsafe { BorrowedFd::borrow_raw(ctrl) };
    let bytes = msg.to_bytes();
    let mut space = [MaybeUninit::<u8>::uninit(); rustix::cmsg_space!(ScmRights(1))];
    let mut ancillary = SendAncillaryBuffer::new(&mut space);
    let fds: [BorrowedFd<'_>; 1];
    if let Some(fd) = fd {
        fds = [fd];
        ancillary.push(SendAncillaryMessage::ScmRights(&fds));
    }
    rustix::net::sendmsg(
        ctrl,
        &[IoSlice::new(&bytes)],
        &mut ancillary,
        SendFlags::NOSIGNAL,
    )
    .map(|_| ())
}

/// Closes without the standard library's `close`, which may set errno.
fn close(fd: OwnedFd) {
    // SAFETY: we own the descriptor, and forget it here.
    unsafe { rustix::io::close(fd.into_raw_fd()) };
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::fd::{AsRawFd, FromRawFd};
    use std::os::unix::fs::MetadataExt;

    /// NS_GET_USERNS: the user namespace owning a namespace.
    const NS_GET_USERNS: libc::c_ulong = 0xb701;

    fn socketpair() -> (OwnedFd, OwnedFd) {
        let mut sv = [0; 2];
        // SAFETY: a valid array for the two descriptors.
        let r = unsafe {
            libc::socketpair(
                libc::AF_UNIX,
                libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC,
                0,
                sv.as_mut_ptr(),
            )
        };
        assert_eq!(r, 0);
        // SAFETY: fresh descriptors, owned from here.
        unsafe { (OwnedFd::from_raw_fd(sv[0]), OwnedFd::from_raw_fd(sv[1])) }
    }

    fn receive(fd: &OwnedFd) -> (Msg, Option<OwnedFd>) {
        let mut buf = [0u8; Msg::SIZE];
        let (n, passed) = sys::recv_msg(fd.as_raw_fd(), &mut buf).expect("a message");
        let msg = Msg::from_bytes(&buf[..n]).expect("a whole message");
        // SAFETY: the descriptor arrived with SCM_RIGHTS and is ours alone.
        (msg, passed.map(|f| unsafe { OwnedFd::from_raw_fd(f) }))
    }

    /// A process in a new user namespace, standing in for init: it waits until `hold`
    /// closes. Returns its pid, a pidfd for it, and the write end of `hold`.
    fn stand_in_init() -> (pid_t, OwnedFd, OwnedFd) {
        let mut hold = [0; 2];
        // SAFETY: a valid array for the two descriptors.
        let piped = unsafe { libc::pipe2(hold.as_mut_ptr(), libc::O_CLOEXEC) };
        assert_eq!(piped, 0);
        // SAFETY: the child makes async-signal-safe calls only, then _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: plain system calls on our own descriptors, then _exit.
            unsafe {
                libc::close(hold[1]);
                if libc::unshare(libc::CLONE_NEWUSER) != 0 {
                    libc::_exit(2);
                }
                let mut b = 0u8;
                libc::read(hold[0], (&mut b as *mut u8).cast(), 1);
                libc::_exit(0);
            }
        }
        // SAFETY: our own descriptors from pipe2.
        let (r, w) = unsafe { (OwnedFd::from_raw_fd(hold[0]), OwnedFd::from_raw_fd(hold[1])) };
        drop(r);
        // SAFETY: pidfd_open on our own child.
        let pidfd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        assert!(
            pidfd >= 0,
            "pidfd_open: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a fresh descriptor, owned from here.
        (pid, unsafe { OwnedFd::from_raw_fd(pidfd as RawFd) }, w)
    }

    fn reap(pid: pid_t) -> c_int {
        let mut status = 0;
        // SAFETY: waitpid on our own child with a valid status pointer.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        status
    }

    #[test]
    fn the_helper_makes_a_network_namespace_owned_by_the_sandbox_user_namespace() {
        let (init, pidfd, hold) = stand_in_init();
        // Wait until the stand-in is in its own user namespace.
        let host_userns = std::fs::metadata("/proc/self/ns/user").unwrap().ino();
        let init_userns = loop {
            let ino = std::fs::metadata(format!("/proc/{init}/ns/user"))
                .unwrap()
                .ino();
            if ino != host_userns {
                break ino;
            }
            std::thread::sleep(std::time::Duration::from_millis(1));
        };
        let (supervisor_end, init_end) = socketpair();
        let helper = Helper::spawn(pidfd.as_raw_fd(), supervisor_end.as_raw_fd()).unwrap();
        assert_eq!(helper.wait(), Ok(None), "the helper ends normally");
        let (msg, ns) = receive(&init_end);
        assert_eq!((msg.kind, msg.stage, msg.value), (kind::NETNS, 0, 0));
        assert_eq!(msg.extra, 0, "the loopback came up");
        let ns = ns.expect("the namespace came with the message");

        // A network namespace, not this process's own...
        let host_netns = std::fs::metadata("/proc/self/ns/net").unwrap().ino();
        let ns_ino = std::fs::File::from(ns.try_clone().unwrap())
            .metadata()
            .unwrap()
            .ino();
        assert_ne!(ns_ino, host_netns);
        // SAFETY: NS_GET_USERNS on a namespace descriptor returns a new descriptor.
        let owner = unsafe { libc::ioctl(ns.as_raw_fd(), NS_GET_USERNS) };
        assert!(
            owner >= 0,
            "NS_GET_USERNS: {}",
            std::io::Error::last_os_error()
        );
        // SAFETY: a fresh descriptor, owned from here.
        let owner = std::fs::File::from(unsafe { OwnedFd::from_raw_fd(owner) });
        // ...owned by the stand-in's user namespace, as a clone3 of init would have made it.
        assert_eq!(owner.metadata().unwrap().ino(), init_userns);

        // Its loopback is up: seen from a child that joins it.
        // SAFETY: the child makes plain system calls, then _exit.
        let child = unsafe { libc::fork() };
        if child == 0 {
            // SAFETY: setns, socket and ioctl with valid arguments, then _exit.
            unsafe {
                if libc::setns(ns.as_raw_fd(), libc::CLONE_NEWNET) != 0 {
                    libc::_exit(2);
                }
                let s = libc::socket(libc::AF_INET, libc::SOCK_DGRAM, 0);
                let mut req: libc::ifreq = std::mem::zeroed();
                req.ifr_name[0] = b'l' as libc::c_char;
                req.ifr_name[1] = b'o' as libc::c_char;
                if libc::ioctl(s, libc::SIOCGIFFLAGS, &mut req) != 0 {
                    libc::_exit(3);
                }
                let up = req.ifr_ifru.ifru_flags as c_int & libc::IFF_UP != 0;
                libc::_exit(if up { 0 } else { 4 });
            }
        }
        let status = reap(child);
        assert!(
            libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0,
            "loopback check in the new namespace: status {status}"
        );
        drop(hold);
        assert_eq!(reap(init), 0);
    }

    #[test]
    fn a_helper_that_cannot_enter_the_user_namespace_tells_init_why() {
        let (supervisor_end, init_end) = socketpair();
        // Not a pidfd: entering "its" user namespace fails.
        let not_a_pidfd = std::fs::File::open("/dev/null").unwrap();
        let helper = Helper::spawn(not_a_pidfd.as_raw_fd(), supervisor_end.as_raw_fd()).unwrap();
        let failure = helper.wait().expect("a reported failure is a normal end");
        let (msg, fd) = receive(&init_end);
        assert!(fd.is_none(), "no namespace with a failure");
        assert_eq!((msg.kind, msg.stage), (kind::NETNS, stage::NETNS_USER));
        assert!(
            msg.value == libc::EINVAL || msg.value == libc::EBADF,
            "errno {}",
            msg.value
        );
        // The supervisor learns the same.
        assert_eq!(failure, Some((stage::NETNS_USER, msg.value)));
    }

    #[test]
    fn only_a_reported_end_counts_as_normal() {
        // Wait statuses: exit code in the second byte, a terminating signal in the low bits.
        assert_eq!(judge(0), Ok(()));
        assert_eq!(judge(1 << 8), Ok(()));
        let killed = judge(libc::SIGKILL).unwrap_err();
        assert!(killed.contains("killed by signal 9"), "{killed}");
        assert!(judge(2 << 8).is_err(), "an unexpected exit code");
        assert!(judge(libc::SIGSEGV | 0x80).is_err(), "a core dump");
    }
}
