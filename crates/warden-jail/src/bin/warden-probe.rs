//! `warden-probe`: a program that tries to break out of the sandbox it runs in.
//!
//! The escape tests copy it into a sandbox's workspace and run it there. Each attempt prints
//! one JSON line on stdout:
//!
//! ```text
//! {"check":"read","target":"/etc/shadow","outcome":"blocked","detail":"EACCES ..."}
//! ```
//!
//! `outcome` is `blocked` when the attempt failed (what the sandbox must make happen) and
//! `escaped` when it worked. A few commands report facts instead (`whoami`, `env`, `procs`),
//! with `outcome` `info`; the tests judge those. The probe never decides for itself that an
//! escape is acceptable: it only tries, and says what happened.
//!
//! Usage: `warden-probe COMMAND [ARGS...]`; `warden-probe help` lists the commands.

use std::ffi::CString;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::time::Duration;

const HELP: &str = "\
warden-probe: tries to escape the sandbox it runs in; one JSON line per attempt.

commands:
  read PATH...            read each file (or list each directory)
  write PATH...           create a file at each path (inside it, for a directory)
  tcp ADDR:PORT...        connect to each address
  tcp-listen PORT         bind and listen on 0.0.0.0:PORT and [::]:PORT
  udp ADDR:PORT           send a datagram and wait for an answer
  sockets                 open raw, packet, netlink and other-family sockets
  ptrace [PID]            attach to a child of ours, PTRACE_TRACEME, and PID if given
  mount                   mount, umount, pivot_root, open_tree, fsopen, chroot
  namespaces              unshare and clone into new namespaces, setns
  syscalls                io_uring, bpf, keyctl, perf, userfaultfd, kexec, modules,
                          reboot, swapon, personality, process_vm_readv, TIOCSTI
  kill PID                see and signal a process by host pid
  links WORKSPACE         symlink and hard-link escapes, /proc/*/root
  whoami                  uids, capabilities, no_new_privs, seccomp (info)
  env                     the environment (info)
  procs                   the processes this sandbox can see (info)
  forkbomb                fork until the kernel refuses
  memhog MIB              allocate and touch MIB mebibytes
  spawn-tree TOKEN        start daemons (setsid, double fork) that sleep, then sleep
  kill-init TOKEN         start daemons, then kill our parent (the sandbox's init) to orphan them
  sleep TOKEN             sleep forever
  exit CODE               exit with CODE
  signal SIG              kill ourselves with signal number SIG";

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let Some((cmd, rest)) = args.split_first() else {
        eprintln!("{HELP}");
        std::process::exit(2);
    };
    match cmd.as_str() {
        "read" => rest.iter().for_each(|p| read(p)),
        "write" => rest.iter().for_each(|p| write(p)),
        "tcp" => rest.iter().for_each(|a| tcp(a)),
        "tcp-listen" => tcp_listen(rest.first().map(String::as_str).unwrap_or("8080")),
        "udp" => rest.iter().for_each(|a| udp(a)),
        "sockets" => sockets(),
        "ptrace" => ptrace(rest.first().and_then(|p| p.parse().ok())),
        "mount" => mount(),
        "namespaces" => namespaces(),
        "syscalls" => syscalls(),
        "kill" => kill(rest.first().and_then(|p| p.parse().ok()).expect("kill PID")),
        "links" => links(Path::new(rest.first().expect("links WORKSPACE"))),
        "whoami" => whoami(),
        "env" => env(),
        "procs" => procs(),
        "forkbomb" => forkbomb(),
        "memhog" => memhog(
            rest.first()
                .and_then(|m| m.parse().ok())
                .expect("memhog MIB"),
        ),
        "spawn-tree" => spawn_tree(rest.first().expect("spawn-tree TOKEN")),
        "kill-init" => kill_init(rest.first().expect("kill-init TOKEN")),
        "sleep" => loop {
            std::thread::sleep(Duration::from_secs(3600));
        },
        "exit" => std::process::exit(rest.first().and_then(|c| c.parse().ok()).unwrap_or(0)),
        "signal" => {
            let sig = rest
                .first()
                .and_then(|s| s.parse().ok())
                .unwrap_or(libc::SIGTERM);
            // SAFETY: signalling ourselves.
            unsafe { libc::raise(sig) };
            std::process::exit(0);
        }
        "help" | "--help" | "-h" => println!("{HELP}"),
        other => {
            eprintln!("unknown command {other:?}\n{HELP}");
            std::process::exit(2);
        }
    }
}

// --- output ---------------------------------------------------------------------------------

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn report(check: &str, target: &str, escaped: bool, detail: &str) {
    let outcome = if escaped { "escaped" } else { "blocked" };
    let line = format!(
        "{{\"check\":{},\"target\":{},\"outcome\":\"{outcome}\",\"detail\":{}}}\n",
        json_str(check),
        json_str(target),
        json_str(detail)
    );
    let _ = io::stdout().write_all(line.as_bytes());
    let _ = io::stdout().flush();
}

fn info(check: &str, fields: &[(&str, String)]) {
    let mut line = format!("{{\"check\":{},\"outcome\":\"info\"", json_str(check));
    for (k, v) in fields {
        line.push_str(&format!(",{}:{}", json_str(k), v));
    }
    line.push_str("}\n");
    let _ = io::stdout().write_all(line.as_bytes());
    let _ = io::stdout().flush();
}

/// Reports a raw system call's result: a non-negative return is an escape.
fn syscall_result(check: &str, target: &str, ret: libc::c_long) {
    if ret >= 0 {
        report(check, target, true, &format!("returned {ret}"));
    } else {
        report(
            check,
            target,
            false,
            &io::Error::last_os_error().to_string(),
        );
    }
}

fn cstr(s: &str) -> CString {
    CString::new(s).expect("no NUL")
}

// --- filesystem -----------------------------------------------------------------------------

fn read(path: &str) {
    let p = Path::new(path);
    match fs::metadata(p) {
        Ok(m) if m.is_dir() => match fs::read_dir(p) {
            Ok(entries) => {
                let names: Vec<String> = entries
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                let escaped = !names.is_empty();
                report(
                    "read",
                    path,
                    escaped,
                    &format!(
                        "listed {} entries {:?}",
                        names.len(),
                        names.iter().take(5).collect::<Vec<_>>()
                    ),
                );
            }
            Err(e) => report("read", path, false, &e.to_string()),
        },
        Ok(_) => match fs::File::open(p) {
            Ok(mut f) => {
                let mut buf = [0u8; 64];
                match f.read(&mut buf) {
                    Ok(0) => report("read", path, false, "opened, but empty"),
                    Ok(n) => report(
                        "read",
                        path,
                        true,
                        &format!("read {n} bytes: {}", String::from_utf8_lossy(&buf[..n])),
                    ),
                    Err(e) => report("read", path, false, &format!("opened, read failed: {e}")),
                }
            }
            Err(e) => report("read", path, false, &e.to_string()),
        },
        Err(e) => report("read", path, false, &e.to_string()),
    }
}

fn write(path: &str) {
    let p = Path::new(path);
    let target = if p.is_dir() {
        p.join(format!("warden-probe-{}", std::process::id()))
    } else {
        p.to_path_buf()
    };
    match fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(&target)
    {
        Ok(mut f) => {
            let wrote = f.write_all(b"escaped\n");
            report(
                "write",
                &target.to_string_lossy(),
                wrote.is_ok(),
                &format!("created; write: {wrote:?}"),
            );
        }
        Err(e) => report("write", &target.to_string_lossy(), false, &e.to_string()),
    }
    // Directories and renames are writes too.
    let dir = if p.is_dir() {
        p.join("warden-probe-dir")
    } else {
        p.with_extension("warden-probe-dir")
    };
    match fs::create_dir(&dir) {
        Ok(()) => report("mkdir", &dir.to_string_lossy(), true, "created"),
        Err(e) => report("mkdir", &dir.to_string_lossy(), false, &e.to_string()),
    }
}

fn links(ws: &Path) {
    // A symlink we make to a secret, then read through.
    let sl = ws.join("probe-symlink");
    let _ = fs::remove_file(&sl);
    match std::os::unix::fs::symlink("/etc/shadow", &sl) {
        Ok(()) => read(&sl.to_string_lossy()),
        Err(e) => report("symlink", &sl.to_string_lossy(), false, &e.to_string()),
    }
    // Symlinks the host (or an earlier run) left in the workspace.
    for name in [
        "host-symlink-to-root",
        "host-symlink-to-shadow",
        "host-symlink-to-ssh",
    ] {
        let p = ws.join(name);
        if p.symlink_metadata().is_ok() {
            read(&p.to_string_lossy());
        }
    }
    // Writing through a symlink that points out of the workspace.
    let out = ws.join("probe-symlink-out");
    let _ = fs::remove_file(&out);
    if std::os::unix::fs::symlink("/etc/warden-probe-escape", &out).is_ok() {
        match fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&out)
        {
            Ok(_) => report(
                "write-through-symlink",
                "/etc/warden-probe-escape",
                true,
                "created",
            ),
            Err(e) => report(
                "write-through-symlink",
                "/etc/warden-probe-escape",
                false,
                &e.to_string(),
            ),
        }
    }
    // Hard links to files outside the workspace: to read a secret, or to write a system file.
    for src in ["/etc/shadow", "/etc/passwd", "/etc/hostname"] {
        let dst = ws.join(format!(
            "probe-hardlink-{}",
            src.rsplit('/').next().unwrap_or("x")
        ));
        let _ = fs::remove_file(&dst);
        match fs::hard_link(src, &dst) {
            Ok(()) => {
                let writable = fs::OpenOptions::new().append(true).open(&dst).is_ok();
                report(
                    "hardlink",
                    src,
                    true,
                    &format!("linked into the workspace; writable: {writable}"),
                );
            }
            Err(e) => report("hardlink", src, false, &e.to_string()),
        }
    }
    // The roots of other processes.
    for p in [
        "/proc/self/root/etc/shadow",
        "/proc/1/root/etc/shadow",
        "/proc/1/root/root",
        "/proc/self/cwd/../../../../etc/shadow",
    ] {
        read(p);
    }
    for p in [
        "/proc/self/root/etc/warden-probe-escape",
        "/proc/1/root/etc/warden-probe-escape",
    ] {
        match fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(p)
        {
            Ok(_) => report("write", p, true, "created"),
            Err(e) => report("write", p, false, &e.to_string()),
        }
    }
}

// --- network --------------------------------------------------------------------------------

fn tcp(addr: &str) {
    let Ok(sa) = addr.parse::<SocketAddr>() else {
        report("tcp", addr, false, "not an address");
        return;
    };
    match TcpStream::connect_timeout(&sa, Duration::from_secs(2)) {
        Ok(mut s) => {
            let _ = s.write_all(b"escaped\n");
            report("tcp", addr, true, "connected");
        }
        Err(e) => report("tcp", addr, false, &e.to_string()),
    }
}

fn tcp_listen(port: &str) {
    for host in ["0.0.0.0", "[::]", "127.0.0.1"] {
        let a = format!("{host}:{port}");
        match TcpListener::bind(&a) {
            Ok(_) => report("tcp-listen", &a, true, "bound"),
            Err(e) => report("tcp-listen", &a, false, &e.to_string()),
        }
    }
}

fn udp(addr: &str) {
    // Sending can succeed on a private loopback; an escape is an answer from the server.
    let r = UdpSocket::bind("0.0.0.0:0").and_then(|s| {
        s.set_read_timeout(Some(Duration::from_secs(1)))?;
        s.send_to(b"escaped\n", addr)?;
        let mut buf = [0u8; 64];
        s.recv_from(&mut buf)
    });
    match r {
        Ok((n, from)) => report(
            "udp",
            addr,
            true,
            &format!("{n} bytes answered from {from}"),
        ),
        Err(e) => report("udp", addr, false, &e.to_string()),
    }
}

fn sockets() {
    let tries: &[(&str, libc::c_int, libc::c_int, libc::c_int)] = &[
        (
            "inet raw icmp",
            libc::AF_INET,
            libc::SOCK_RAW,
            libc::IPPROTO_ICMP,
        ),
        (
            "inet raw tcp",
            libc::AF_INET,
            libc::SOCK_RAW,
            libc::IPPROTO_TCP,
        ),
        (
            "inet6 raw",
            libc::AF_INET6,
            libc::SOCK_RAW,
            libc::IPPROTO_ICMPV6,
        ),
        ("inet packet (SOCK_PACKET)", libc::AF_INET, 10, 0x0300),
        ("packet raw", libc::AF_PACKET, libc::SOCK_RAW, 0x0300),
        ("packet dgram", libc::AF_PACKET, libc::SOCK_DGRAM, 0x0300),
        (
            "netlink route",
            libc::AF_NETLINK,
            libc::SOCK_RAW,
            libc::NETLINK_ROUTE,
        ),
        (
            "netlink audit",
            libc::AF_NETLINK,
            libc::SOCK_RAW,
            libc::NETLINK_AUDIT,
        ),
        ("alg", libc::AF_ALG, libc::SOCK_SEQPACKET, 0),
        ("vsock", libc::AF_VSOCK, libc::SOCK_STREAM, 0),
        ("bluetooth", libc::AF_BLUETOOTH, libc::SOCK_RAW, 0),
        ("key", libc::AF_KEY, libc::SOCK_RAW, 2),
    ];
    for (name, family, ty, proto) in tries {
        // SAFETY: socket(2) takes plain integers.
        let fd = unsafe { libc::socket(*family, *ty, *proto) };
        syscall_result("socket", name, fd as libc::c_long);
        if fd >= 0 {
            // SAFETY: closing the descriptor we just got.
            unsafe { libc::close(fd) };
        }
    }
    let mut pair = [0; 2];
    // SAFETY: `pair` has room for two descriptors.
    let r = unsafe { libc::socketpair(libc::AF_NETLINK, libc::SOCK_RAW, 0, pair.as_mut_ptr()) };
    syscall_result("socketpair", "netlink", r as libc::c_long);
}

// --- processes ------------------------------------------------------------------------------

fn fork_sleeper() -> libc::pid_t {
    // SAFETY: the child only sleeps and exits.
    let pid = unsafe { libc::fork() };
    if pid == 0 {
        // SAFETY: async-signal-safe calls only.
        unsafe {
            libc::sleep(30);
            libc::_exit(0)
        }
    }
    pid
}

fn ptrace(pid: Option<libc::pid_t>) {
    let child = fork_sleeper();
    if child > 0 {
        // SAFETY: plain integers; the result is checked.
        let r = unsafe { libc::ptrace(libc::PTRACE_ATTACH, child, 0, 0) };
        syscall_result("ptrace", "attach to our own child", r);
        // SAFETY: PTRACE_SEIZE with integers.
        let r = unsafe { libc::ptrace(libc::PTRACE_SEIZE, child, 0, 0) };
        syscall_result("ptrace", "seize our own child", r);
        let mut local = [0u8; 8];
        let liov = libc::iovec {
            iov_base: local.as_mut_ptr().cast(),
            iov_len: 8,
        };
        let riov = libc::iovec {
            iov_base: std::ptr::null_mut::<u8>().wrapping_add(0x400000).cast(),
            iov_len: 8,
        };
        // SAFETY: the iovecs describe valid local memory; the remote one is only read by the kernel.
        let r = unsafe { libc::process_vm_readv(child, &liov, 1, &riov, 1, 0) };
        syscall_result("process_vm_readv", "our own child", r as libc::c_long);
        // SAFETY: killing and reaping our own child.
        unsafe {
            libc::kill(child, libc::SIGKILL);
            libc::waitpid(child, std::ptr::null_mut(), 0);
        }
    }
    // SAFETY: fork, then PTRACE_TRACEME in the child, which reports through its exit code.
    let pid2 = unsafe { libc::fork() };
    if pid2 == 0 {
        // SAFETY: integers only.
        let r = unsafe { libc::ptrace(libc::PTRACE_TRACEME, 0, 0, 0) };
        // SAFETY: exiting the child.
        unsafe { libc::_exit(if r == 0 { 0 } else { 1 }) };
    }
    let mut status = 0;
    // SAFETY: reaping our child.
    unsafe { libc::waitpid(pid2, &mut status, 0) };
    let traced = libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0;
    report(
        "ptrace",
        "PTRACE_TRACEME",
        traced,
        if traced { "allowed" } else { "refused" },
    );
    if let Some(p) = pid {
        // SAFETY: integers only.
        let r = unsafe { libc::ptrace(libc::PTRACE_ATTACH, p, 0, 0) };
        syscall_result("ptrace", &format!("attach to pid {p}"), r);
    }
}

fn kill(pid: libc::pid_t) {
    let visible = Path::new(&format!("/proc/{pid}")).exists();
    report(
        "see-process",
        &pid.to_string(),
        visible,
        if visible {
            "listed in /proc"
        } else {
            "not in /proc"
        },
    );
    // SAFETY: kill(2) with integers.
    let r = unsafe { libc::kill(pid, 0) };
    syscall_result("kill", &format!("signal 0 to {pid}"), r as libc::c_long);
    // SAFETY: as above.
    let r = unsafe { libc::kill(pid, libc::SIGKILL) };
    syscall_result("kill", &format!("SIGKILL to {pid}"), r as libc::c_long);
    // Also every process in reach, as an over-eager cleanup script would.
    for sig in [libc::SIGTERM, libc::SIGKILL] {
        // SAFETY: pidfd_open with integers.
        let fd = unsafe { libc::syscall(libc::SYS_pidfd_open, pid, 0) };
        if fd >= 0 {
            // SAFETY: pidfd_send_signal on the descriptor we own.
            let r = unsafe { libc::syscall(libc::SYS_pidfd_send_signal, fd, sig, 0, 0) };
            syscall_result("pidfd_send_signal", &format!("signal {sig} to {pid}"), r);
            // SAFETY: closing our descriptor.
            unsafe { libc::close(fd as i32) };
        } else {
            report(
                "pidfd_open",
                &pid.to_string(),
                false,
                &io::Error::last_os_error().to_string(),
            );
        }
    }
}

fn procs() {
    let mut pids: Vec<i32> = fs::read_dir("/proc")
        .map(|d| {
            d.flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .collect()
        })
        .unwrap_or_default();
    pids.sort();
    let list = pids
        .iter()
        .map(|p| p.to_string())
        .collect::<Vec<_>>()
        .join(",");
    // SAFETY: getpid and getppid cannot fail.
    let (me, parent) = unsafe { (libc::getpid(), libc::getppid()) };
    info(
        "procs",
        &[
            ("pids", format!("[{list}]")),
            ("self", me.to_string()),
            ("parent", parent.to_string()),
        ],
    );
}

fn whoami() {
    let status = fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name).and_then(|r| r.strip_prefix(':')))
            .map(|v| json_str(v.trim()))
            .unwrap_or_else(|| "null".into())
    };
    // SAFETY: these calls cannot fail.
    let (uid, euid, gid, egid) = unsafe {
        (
            libc::getuid(),
            libc::geteuid(),
            libc::getgid(),
            libc::getegid(),
        )
    };
    let hostname = fs::read_to_string("/proc/sys/kernel/hostname").unwrap_or_default();
    info(
        "whoami",
        &[
            ("uid", uid.to_string()),
            ("euid", euid.to_string()),
            ("gid", gid.to_string()),
            ("egid", egid.to_string()),
            ("cap_eff", field("CapEff")),
            ("cap_prm", field("CapPrm")),
            ("cap_bnd", field("CapBnd")),
            ("cap_amb", field("CapAmb")),
            ("no_new_privs", field("NoNewPrivs")),
            ("seccomp", field("Seccomp")),
            ("seccomp_filters", field("Seccomp_filters")),
            ("hostname", json_str(hostname.trim())),
        ],
    );
}

fn env() {
    let vars: Vec<String> = std::env::vars_os()
        .map(|(k, v)| {
            format!(
                "{}:{}",
                json_str(&k.to_string_lossy()),
                json_str(&v.to_string_lossy())
            )
        })
        .collect();
    info("env", &[("vars", format!("{{{}}}", vars.join(",")))]);
}

fn forkbomb() {
    let mut children = 0u32;
    let mut last_error = String::new();
    for _ in 0..100_000 {
        let pid = fork_sleeper();
        if pid < 0 {
            last_error = io::Error::last_os_error().to_string();
            break;
        }
        children += 1;
    }
    let stopped = !last_error.is_empty();
    report(
        "forkbomb",
        "fork until refused",
        !stopped,
        &format!("{children} children; then {last_error}"),
    );
    // SAFETY: killing our own process group's children and reaping them.
    unsafe {
        libc::signal(libc::SIGTERM, libc::SIG_IGN);
        libc::kill(0, libc::SIGTERM);
        while libc::waitpid(-1, std::ptr::null_mut(), 0) > 0 {}
    }
}

fn memhog(mib: usize) {
    let mut blocks: Vec<Vec<u8>> = Vec::new();
    for i in 0..mib {
        let mut b = vec![0u8; 1 << 20];
        for j in (0..b.len()).step_by(4096) {
            b[j] = (i + j) as u8;
        }
        blocks.push(b);
    }
    report(
        "memhog",
        &format!("{mib} MiB"),
        true,
        "allocated and touched everything",
    );
}

fn kill_init(token: &str) {
    start_daemons(token);
    // SAFETY: getppid and kill with integers.
    let parent = unsafe { libc::getppid() };
    // SAFETY: as above.
    let r = unsafe { libc::kill(parent, libc::SIGKILL) };
    let err = io::Error::last_os_error();
    std::thread::sleep(Duration::from_millis(200));
    // Pid 1 of a pid namespace ignores SIGKILL from inside it, so kill() "succeeding" proves
    // nothing: the escape is init being gone (we were re-parented).
    // SAFETY: getppid cannot fail.
    let now = unsafe { libc::getppid() };
    let gone = now != parent;
    report(
        "kill-init",
        &parent.to_string(),
        gone,
        &format!("kill returned {r} ({err}); parent was {parent}, is {now}"),
    );
}

/// `warden-probe sleep TOKEN`, ready to exec after a fork (nothing left to allocate).
struct Sleeper {
    exe: CString,
    _args: [CString; 3],
    argv: [*const libc::c_char; 4],
}

impl Sleeper {
    fn new(token: &str) -> Sleeper {
        let me = std::env::current_exe().expect("own path");
        let args = [cstr("warden-probe"), cstr("sleep"), cstr(token)];
        let argv = [
            args[0].as_ptr(),
            args[1].as_ptr(),
            args[2].as_ptr(),
            std::ptr::null(),
        ];
        Sleeper {
            exe: cstr(&me.to_string_lossy()),
            _args: args,
            argv,
        }
    }

    /// Replaces this process with the sleeper (returns only if execv failed).
    fn exec(&self) {
        // SAFETY: exe and argv point at C strings owned by self; argv ends with null.
        unsafe { libc::execv(self.exe.as_ptr(), self.argv.as_ptr()) };
    }
}

/// Starts daemons (fork, setsid, fork again; the middle process exits) that sleep: orphans,
/// re-parented to the sandbox's init or to whatever reaps orphans.
fn start_daemons(token: &str) {
    let sleeper = Sleeper::new(token);
    for _ in 0..2 {
        // SAFETY: the children only call async-signal-safe functions and exec or exit.
        unsafe {
            let pid = libc::fork();
            if pid == 0 {
                libc::setsid();
                if libc::fork() == 0 {
                    sleeper.exec();
                    libc::_exit(127);
                }
                libc::_exit(0);
            }
            if pid > 0 {
                libc::waitpid(pid, std::ptr::null_mut(), 0);
            }
        }
    }
}

fn spawn_tree(token: &str) {
    start_daemons(token);
    let sleeper = Sleeper::new(token);
    // And a plain child.
    // SAFETY: the child only execs or exits.
    unsafe {
        if libc::fork() == 0 {
            sleeper.exec();
            libc::_exit(127);
        }
    }
    info("spawn-tree", &[("token", json_str(token))]);
    loop {
        std::thread::sleep(Duration::from_secs(3600));
    }
}

// --- privileged system calls ----------------------------------------------------------------

fn mount() {
    let _ = fs::create_dir_all("/tmp/probe-mnt");
    // SAFETY: mount(2) with valid C strings.
    let r = unsafe {
        libc::mount(
            c"none".as_ptr(),
            c"/tmp/probe-mnt".as_ptr(),
            c"tmpfs".as_ptr(),
            0,
            std::ptr::null(),
        )
    };
    syscall_result("mount", "tmpfs on /tmp/probe-mnt", r as libc::c_long);
    // SAFETY: as above.
    let r = unsafe {
        libc::mount(
            c"/".as_ptr(),
            c"/tmp/probe-mnt".as_ptr(),
            std::ptr::null(),
            libc::MS_BIND | libc::MS_REC,
            std::ptr::null(),
        )
    };
    syscall_result("mount", "bind / on /tmp/probe-mnt", r as libc::c_long);
    // SAFETY: as above.
    let r = unsafe {
        libc::mount(
            std::ptr::null(),
            c"/".as_ptr(),
            std::ptr::null(),
            libc::MS_REMOUNT | libc::MS_BIND,
            std::ptr::null(),
        )
    };
    syscall_result("mount", "remount / read-write", r as libc::c_long);
    // SAFETY: umount2 with a valid C string.
    let r = unsafe { libc::umount2(c"/proc".as_ptr(), libc::MNT_DETACH) };
    syscall_result("umount2", "/proc", r as libc::c_long);
    // SAFETY: as above.
    let r = unsafe { libc::umount2(c"/tmp".as_ptr(), libc::MNT_DETACH) };
    syscall_result("umount2", "/tmp", r as libc::c_long);
    // SAFETY: raw system calls with valid C strings.
    unsafe {
        let r = libc::syscall(
            libc::SYS_pivot_root,
            c"/tmp".as_ptr(),
            c"/tmp/probe-mnt".as_ptr(),
        );
        syscall_result("pivot_root", "/tmp", r);
        let r = libc::syscall(
            libc::SYS_open_tree,
            libc::AT_FDCWD,
            c"/".as_ptr(),
            1 | libc::O_CLOEXEC as libc::c_long,
        );
        syscall_result("open_tree", "/ (clone)", r);
        let r = libc::syscall(libc::SYS_fsopen, c"tmpfs".as_ptr(), 0);
        syscall_result("fsopen", "tmpfs", r);
        let r = libc::syscall(libc::SYS_fsmount, 3, 0, 0);
        syscall_result("fsmount", "fd 3", r);
        let r = libc::syscall(
            libc::SYS_move_mount,
            libc::AT_FDCWD,
            c"/proc".as_ptr(),
            libc::AT_FDCWD,
            c"/tmp/probe-mnt".as_ptr(),
            0,
        );
        syscall_result("move_mount", "/proc", r);
        let r = libc::syscall(
            libc::SYS_mount_setattr,
            libc::AT_FDCWD,
            c"/".as_ptr(),
            0,
            std::ptr::null::<u8>(),
            0,
        );
        syscall_result("mount_setattr", "/", r);
        let r = libc::chroot(c"/tmp".as_ptr());
        syscall_result("chroot", "/tmp", r as libc::c_long);
    }
}

fn namespaces() {
    let flags: &[(&str, libc::c_int)] = &[
        ("user", libc::CLONE_NEWUSER),
        ("mount", libc::CLONE_NEWNS),
        ("net", libc::CLONE_NEWNET),
        ("pid", libc::CLONE_NEWPID),
        ("uts", libc::CLONE_NEWUTS),
        ("ipc", libc::CLONE_NEWIPC),
        ("cgroup", libc::CLONE_NEWCGROUP),
        ("time", libc::CLONE_NEWTIME),
    ];
    for (name, flag) in flags {
        // SAFETY: unshare with an integer flag.
        let r = unsafe { libc::unshare(*flag) };
        syscall_result("unshare", name, r as libc::c_long);
    }
    // clone() straight into a new user namespace; the child exits at once.
    // SAFETY: a raw clone without a new stack behaves like fork; the child only exits.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone,
            (libc::CLONE_NEWUSER | libc::SIGCHLD) as libc::c_long,
            0,
            0,
            0,
            0,
        )
    };
    if r == 0 {
        // SAFETY: leaving the child.
        unsafe { libc::_exit(0) };
    }
    syscall_result("clone", "CLONE_NEWUSER", r);
    if r > 0 {
        // SAFETY: reaping the child.
        unsafe { libc::waitpid(r as i32, std::ptr::null_mut(), 0) };
    }
    // clone3: its flags are out of seccomp's sight, so it must be refused as a whole.
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
    let args = CloneArgs {
        flags: libc::CLONE_NEWUSER as u64,
        pidfd: 0,
        child_tid: 0,
        parent_tid: 0,
        exit_signal: libc::SIGCHLD as u64,
        stack: 0,
        stack_size: 0,
        tls: 0,
        set_tid: 0,
        set_tid_size: 0,
        cgroup: 0,
    };
    // SAFETY: clone3 with a valid argument struct; a child (if any) exits at once.
    let r = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            &args as *const CloneArgs,
            size_of::<CloneArgs>(),
        )
    };
    if r == 0 {
        // SAFETY: leaving the child.
        unsafe { libc::_exit(0) };
    }
    syscall_result("clone3", "CLONE_NEWUSER", r);
    for ns in ["mnt", "user", "net", "pid"] {
        let path = cstr(&format!("/proc/1/ns/{ns}"));
        // SAFETY: open and setns with valid arguments; the descriptor is closed after.
        unsafe {
            let fd = libc::open(path.as_ptr(), libc::O_RDONLY | libc::O_CLOEXEC);
            if fd < 0 {
                report(
                    "setns",
                    ns,
                    false,
                    &format!("open: {}", io::Error::last_os_error()),
                );
                continue;
            }
            let r = libc::setns(fd, 0);
            syscall_result("setns", ns, r as libc::c_long);
            libc::close(fd);
        }
    }
    // The knob that turns user namespaces off inside.
    match fs::write("/proc/sys/user/max_user_namespaces", "1000") {
        Ok(()) => report(
            "write",
            "/proc/sys/user/max_user_namespaces",
            true,
            "written",
        ),
        Err(e) => report(
            "write",
            "/proc/sys/user/max_user_namespaces",
            false,
            &e.to_string(),
        ),
    }
}

fn syscalls() {
    let mut buf = [0u64; 32];
    // SAFETY: each call gets integers or a pointer to `buf`, a zeroed buffer larger than any
    // argument structure these calls read; none of them can succeed in a sandbox, and where
    // one did, it would act on nothing of ours.
    unsafe {
        syscall_result(
            "io_uring_setup",
            "8 entries",
            libc::syscall(libc::SYS_io_uring_setup, 8, buf.as_mut_ptr()),
        );
        syscall_result(
            "io_uring_enter",
            "fd 0",
            libc::syscall(libc::SYS_io_uring_enter, 0, 0, 0, 0, 0, 0),
        );
        syscall_result(
            "io_uring_register",
            "fd 0",
            libc::syscall(libc::SYS_io_uring_register, 0, 0, 0, 0),
        );
        // bpf(BPF_MAP_CREATE) with an array map of one u32.
        buf[0] = 2 | (4 << 32);
        buf[1] = 4 | (1 << 32);
        syscall_result(
            "bpf",
            "BPF_MAP_CREATE",
            libc::syscall(libc::SYS_bpf, 0, buf.as_mut_ptr(), 72),
        );
        buf = [0; 32];
        syscall_result(
            "bpf",
            "BPF_PROG_LOAD",
            libc::syscall(libc::SYS_bpf, 5, buf.as_mut_ptr(), 128),
        );
        let p = buf.as_mut_ptr();
        syscall_result(
            "add_key",
            "user key in the process keyring",
            libc::syscall(
                libc::SYS_add_key,
                c"user".as_ptr(),
                c"warden-probe".as_ptr(),
                c"x".as_ptr(),
                1,
                -2i64,
            ),
        );
        syscall_result(
            "keyctl",
            "KEYCTL_GET_KEYRING_ID session",
            libc::syscall(libc::SYS_keyctl, 0, -3i64, 1),
        );
        syscall_result(
            "request_key",
            "user key",
            libc::syscall(
                libc::SYS_request_key,
                c"user".as_ptr(),
                c"warden-probe".as_ptr(),
                std::ptr::null::<u8>(),
                0,
            ),
        );
        // perf_event_open: a software clock counter on ourselves.
        let mut attr = [0u32; 32];
        attr[0] = 1; // PERF_TYPE_SOFTWARE
        attr[1] = 128; // size
        syscall_result(
            "perf_event_open",
            "software clock",
            libc::syscall(libc::SYS_perf_event_open, attr.as_mut_ptr(), 0, -1, -1, 0),
        );
        syscall_result(
            "userfaultfd",
            "",
            libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC),
        );
        syscall_result(
            "kexec_load",
            "",
            libc::syscall(libc::SYS_kexec_load, 0, 0, 0, 0),
        );
        syscall_result(
            "kexec_file_load",
            "",
            libc::syscall(libc::SYS_kexec_file_load, -1, -1, 0, c"".as_ptr(), 0),
        );
        syscall_result(
            "init_module",
            "",
            libc::syscall(libc::SYS_init_module, p, 0, c"".as_ptr()),
        );
        syscall_result(
            "finit_module",
            "fd 0",
            libc::syscall(libc::SYS_finit_module, 0, c"".as_ptr(), 0),
        );
        syscall_result(
            "delete_module",
            "loop",
            libc::syscall(libc::SYS_delete_module, c"loop".as_ptr(), libc::O_NONBLOCK),
        );
        // reboot with a wrong magic would fail anyway; use the real magic and CAD_OFF (harmless).
        syscall_result(
            "reboot",
            "CAD_OFF",
            libc::syscall(libc::SYS_reboot, 0xfee1deadu32 as i64, 672274793, 0, 0),
        );
        syscall_result(
            "swapon",
            "/tmp/swap",
            libc::syscall(libc::SYS_swapon, c"/tmp/swap".as_ptr(), 0),
        );
        syscall_result(
            "swapoff",
            "/tmp/swap",
            libc::syscall(libc::SYS_swapoff, c"/tmp/swap".as_ptr()),
        );
        syscall_result(
            "personality",
            "ADDR_NO_RANDOMIZE",
            libc::syscall(libc::SYS_personality, 0x0040000),
        );
        syscall_result(
            "personality",
            "READ_IMPLIES_EXEC",
            libc::syscall(libc::SYS_personality, 0x0400000),
        );
        // The x32 ABI: the same calls under other numbers.
        syscall_result(
            "x32 ABI",
            "getpid | 0x40000000",
            libc::syscall(libc::SYS_getpid | 0x4000_0000),
        );
        // TIOCSTI: typing into the controlling terminal.
        let c: u8 = b'x';
        for fd in [0, 1, 2] {
            syscall_result(
                "ioctl",
                &format!("TIOCSTI on fd {fd}"),
                libc::ioctl(fd, libc::TIOCSTI, &c) as libc::c_long,
            );
        }
        syscall_result(
            "acct",
            "/tmp/acct",
            libc::syscall(libc::SYS_acct, c"/tmp/acct".as_ptr()),
        );
        syscall_result(
            "settimeofday",
            "",
            libc::syscall(libc::SYS_settimeofday, p, 0),
        );
        syscall_result(
            "sethostname",
            "evil",
            libc::syscall(libc::SYS_sethostname, c"evil".as_ptr(), 4),
        );
        syscall_result(
            "mknod",
            "/tmp/probe-disk (block 8:0)",
            libc::mknod(
                c"/tmp/probe-disk".as_ptr(),
                libc::S_IFBLK | 0o600,
                libc::makedev(8, 0),
            ) as libc::c_long,
        );
    }
}
