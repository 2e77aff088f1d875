//! The seccomp deny-list: system calls a sandbox never needs and that widen the kernel's
//! attack surface or undo the other layers (mounts, namespaces, ptrace, BPF, io_uring, keys,
//! modules, ...). Built with `seccompiler`; this module adds what seccompiler leaves out:
//! the x32 guard on x86_64 and a second filter so `clone3` fails with ENOSYS (so libc falls
//! back to `clone`, whose flags the first filter can inspect).

use std::collections::BTreeMap;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen as Len, SeccompCmpOp as Op,
    SeccompCondition as Cond, SeccompFilter, SeccompRule, TargetArch,
};

/// The compiled filters, in the order they are installed.
#[derive(Debug, Clone)]
pub struct SeccompProgram {
    pub filters: Vec<Vec<libc::sock_filter>>,
    /// Names of the system calls denied outright, for reports and tests.
    pub denied: Vec<&'static str>,
}

/// Options that change the deny-list.
#[derive(Debug, Clone, Copy, Default)]
pub struct SeccompOptions {
    /// Deny AF_INET and AF_INET6 sockets too (pod isolation without network: there is no
    /// network namespace to keep UDP in).
    pub deny_inet: bool,
    /// Allow AF_INET and AF_INET6 sockets for TCP only (pod isolation in network mode
    /// `proxy`, where Landlock's TCP rules are the only filter and nothing keeps UDP, SCTP
    /// or MPTCP in): every other socket type and protocol is refused, and so is TCP Fast
    /// Open's `MSG_FASTOPEN`, which connects from `sendto`/`sendmsg` without the connect
    /// hook Landlock checks.
    pub inet_tcp_only: bool,
}

/// `MSG_FASTOPEN`: connect and send in one call, outside `connect()`.
const MSG_FASTOPEN: u64 = 0x2000_0000;

#[cfg(target_arch = "x86_64")]
const ARCH: TargetArch = TargetArch::x86_64;
#[cfg(target_arch = "aarch64")]
const ARCH: TargetArch = TargetArch::aarch64;

/// System calls denied whatever their arguments.
fn unconditional() -> Vec<(&'static str, i64)> {
    let mut v: Vec<(&'static str, i64)> = vec![
        // mounts and root changes
        ("mount", libc::SYS_mount),
        ("umount2", libc::SYS_umount2),
        ("pivot_root", libc::SYS_pivot_root),
        ("chroot", libc::SYS_chroot),
        ("open_tree", libc::SYS_open_tree),
        ("move_mount", libc::SYS_move_mount),
        ("fsopen", libc::SYS_fsopen),
        ("fsconfig", libc::SYS_fsconfig),
        ("fsmount", libc::SYS_fsmount),
        ("fspick", libc::SYS_fspick),
        ("mount_setattr", libc::SYS_mount_setattr),
        ("open_tree_attr", 467),
        // namespaces
        ("unshare", libc::SYS_unshare),
        ("setns", libc::SYS_setns),
        // other processes' memory
        ("ptrace", libc::SYS_ptrace),
        ("process_vm_readv", libc::SYS_process_vm_readv),
        ("process_vm_writev", libc::SYS_process_vm_writev),
        ("pidfd_getfd", libc::SYS_pidfd_getfd),
        ("kcmp", libc::SYS_kcmp),
        // kernel attack surface
        ("bpf", libc::SYS_bpf),
        ("perf_event_open", libc::SYS_perf_event_open),
        ("userfaultfd", libc::SYS_userfaultfd),
        ("io_uring_setup", libc::SYS_io_uring_setup),
        ("io_uring_enter", libc::SYS_io_uring_enter),
        ("io_uring_register", libc::SYS_io_uring_register),
        ("keyctl", libc::SYS_keyctl),
        ("add_key", libc::SYS_add_key),
        ("request_key", libc::SYS_request_key),
        ("fanotify_init", libc::SYS_fanotify_init),
        ("open_by_handle_at", libc::SYS_open_by_handle_at),
        ("name_to_handle_at", libc::SYS_name_to_handle_at),
        ("lookup_dcookie", libc::SYS_lookup_dcookie),
        // host administration
        ("kexec_load", libc::SYS_kexec_load),
        ("kexec_file_load", libc::SYS_kexec_file_load),
        ("init_module", libc::SYS_init_module),
        ("finit_module", libc::SYS_finit_module),
        ("delete_module", libc::SYS_delete_module),
        ("reboot", libc::SYS_reboot),
        ("swapon", libc::SYS_swapon),
        ("swapoff", libc::SYS_swapoff),
        ("acct", libc::SYS_acct),
        ("syslog", libc::SYS_syslog),
        ("quotactl", libc::SYS_quotactl),
        ("quotactl_fd", libc::SYS_quotactl_fd),
        ("settimeofday", libc::SYS_settimeofday),
        ("clock_settime", libc::SYS_clock_settime),
        ("clock_adjtime", libc::SYS_clock_adjtime),
        ("adjtimex", libc::SYS_adjtimex),
        ("vhangup", libc::SYS_vhangup),
    ];
    #[cfg(target_arch = "x86_64")]
    v.extend([
        ("iopl", libc::SYS_iopl),
        ("ioperm", libc::SYS_ioperm),
        ("uselib", libc::SYS_uselib),
        ("ustat", libc::SYS_ustat),
        ("sysfs", libc::SYS_sysfs),
    ]);
    v
}

/// The obsolete packet socket type (libc deprecates the constant; the kernel still has it).
const SOCK_PACKET: u64 = 10;

const NAMESPACE_FLAGS: [u64; 7] = [
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWCGROUP as u64,
];

/// personality() values that change nothing security-relevant (Linux, 32-bit, query).
const SAFE_PERSONALITIES: [u64; 5] = [0x0, 0x8, 0x20000, 0x20008, 0xffff_ffff];

fn cond(arg: u8, len: Len, op: Op, value: u64) -> Cond {
    Cond::new(arg, len, op, value).expect("valid seccomp condition")
}

fn rule(conds: Vec<Cond>) -> SeccompRule {
    SeccompRule::new(conds).expect("non-empty seccomp rule")
}

/// Builds the deny-list filters.
pub fn build(options: SeccompOptions) -> Result<SeccompProgram, String> {
    let eperm = SeccompAction::Errno(libc::EPERM as u32);
    let mut rules: BTreeMap<i64, Vec<SeccompRule>> = BTreeMap::new();
    let mut denied = Vec::new();
    for (name, nr) in unconditional() {
        rules.insert(nr, Vec::new());
        denied.push(name);
    }

    // clone(): no new namespaces (flags are the first argument on x86_64 and aarch64).
    rules.insert(
        libc::SYS_clone,
        NAMESPACE_FLAGS
            .iter()
            .map(|f| rule(vec![cond(0, Len::Qword, Op::MaskedEq(*f), *f)]))
            .collect(),
    );

    // personality(): nothing that weakens ASLR or changes the ABI.
    rules.insert(
        libc::SYS_personality,
        vec![rule(
            SAFE_PERSONALITIES
                .iter()
                .map(|p| cond(0, Len::Dword, Op::Ne, *p))
                .collect(),
        )],
    );

    // socket() and socketpair(): only unix, inet and inet6; no raw or packet sockets.
    let mut families = vec![libc::AF_UNIX as u64];
    if !options.deny_inet {
        families.extend([libc::AF_INET as u64, libc::AF_INET6 as u64]);
    }
    for nr in [libc::SYS_socket, libc::SYS_socketpair] {
        let mut r = vec![rule(
            families
                .iter()
                .map(|f| cond(0, Len::Dword, Op::Ne, *f))
                .collect(),
        )];
        for ty in [libc::SOCK_RAW as u64, SOCK_PACKET] {
            r.push(rule(vec![cond(1, Len::Dword, Op::MaskedEq(0xf), ty)]));
        }
        if options.inet_tcp_only && !options.deny_inet {
            for family in [libc::AF_INET as u64, libc::AF_INET6 as u64] {
                let fam = || cond(0, Len::Dword, Op::Eq, family);
                // Every type but SOCK_STREAM (the type's low 4 bits; the rest are flags).
                for ty in (0..16u64).filter(|t| *t != libc::SOCK_STREAM as u64) {
                    r.push(rule(vec![
                        fam(),
                        cond(1, Len::Dword, Op::MaskedEq(0xf), ty),
                    ]));
                }
                // Protocol 0 (TCP for a stream socket) or IPPROTO_TCP: no SCTP, no MPTCP.
                r.push(rule(vec![
                    fam(),
                    cond(2, Len::Dword, Op::Ne, 0),
                    cond(2, Len::Dword, Op::Ne, libc::IPPROTO_TCP as u64),
                ]));
            }
        }
        rules.insert(nr, r);
    }
    if options.inet_tcp_only && !options.deny_inet {
        // The flags are a register argument: sendto's fourth, sendmsg's third, sendmmsg's
        // fourth.
        for (nr, arg) in [
            (libc::SYS_sendto, 3),
            (libc::SYS_sendmsg, 2),
            (libc::SYS_sendmmsg, 3),
        ] {
            rules.insert(
                nr,
                vec![rule(vec![cond(
                    arg,
                    Len::Dword,
                    Op::MaskedEq(MSG_FASTOPEN),
                    MSG_FASTOPEN,
                )])],
            );
        }
    }

    // ioctl(): no pushing input into a terminal (TIOCSTI) or console tricks (TIOCLINUX).
    // The request is an unsigned int to the kernel, so compare only the low 32 bits.
    // (The request constants' type differs between architectures, hence the casts.)
    #[allow(clippy::unnecessary_cast)]
    rules.insert(
        libc::SYS_ioctl,
        [libc::TIOCSTI as u64, libc::TIOCLINUX as u64]
            .iter()
            .map(|r| rule(vec![cond(1, Len::Dword, Op::Eq, *r)]))
            .collect(),
    );

    let main =
        SeccompFilter::new(rules, SeccompAction::Allow, eperm, ARCH).map_err(|e| e.to_string())?;
    let mut main: BpfProgram = main
        .try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())?;
    add_x32_guard(&mut main);

    // clone3's flags live in memory the filter cannot read: make it look absent.
    let mut clone3 = BTreeMap::new();
    clone3.insert(libc::SYS_clone3, Vec::new());
    let clone3 = SeccompFilter::new(
        clone3,
        SeccompAction::Allow,
        SeccompAction::Errno(libc::ENOSYS as u32),
        ARCH,
    )
    .map_err(|e| e.to_string())?;
    let mut clone3: BpfProgram = clone3
        .try_into()
        .map_err(|e: seccompiler::BackendError| e.to_string())?;
    add_x32_guard(&mut clone3);
    denied.extend([
        "clone(CLONE_NEW*)",
        "clone3",
        "unsafe personality",
        "raw/packet/other-family sockets",
        "ioctl(TIOCSTI)",
    ]);
    if options.deny_inet {
        denied.push("inet sockets");
    } else if options.inet_tcp_only {
        denied.push("inet sockets other than TCP");
        denied.push("TCP Fast Open (MSG_FASTOPEN)");
    }
    let to_libc = |p: BpfProgram| {
        p.into_iter()
            .map(|i| libc::sock_filter {
                code: i.code,
                jt: i.jt,
                jf: i.jf,
                k: i.k,
            })
            .collect()
    };
    Ok(SeccompProgram {
        filters: vec![to_libc(clone3), to_libc(main)],
        denied,
    })
}

/// On x86_64, system call numbers with bit 30 set are the x32 ABI: the same calls under other
/// numbers. seccompiler's architecture check passes them (x32 shares AUDIT_ARCH_X86_64), so
/// a deny-list must refuse them explicitly. Inserted right after the architecture check.
fn add_x32_guard(prog: &mut BpfProgram) {
    #[cfg(target_arch = "x86_64")]
    {
        use libc::{BPF_ABS, BPF_JGE, BPF_JMP, BPF_K, BPF_LD, BPF_RET, BPF_W};
        use seccompiler::sock_filter;
        const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;
        let load_nr = sock_filter {
            code: (BPF_LD | BPF_W | BPF_ABS) as u16,
            jt: 0,
            jf: 0,
            k: 0,
        };
        let is_x32 = sock_filter {
            code: (BPF_JMP | BPF_JGE | BPF_K) as u16,
            jt: 0,
            jf: 1,
            k: 0x4000_0000,
        };
        let deny = sock_filter {
            code: (BPF_RET | BPF_K) as u16,
            jt: 0,
            jf: 0,
            k: SECCOMP_RET_ERRNO | libc::EPERM as u32,
        };
        // seccompiler's program starts with 3 instructions of architecture check; jumps after
        // them are relative and unaffected by inserting before them.
        let at = 3.min(prog.len());
        prog.splice(at..at, [load_nr, is_x32, deny]);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = prog;
}

/// Whether the kernel can install seccomp filters at all.
pub fn available() -> Result<(), String> {
    let status = std::fs::read_to_string("/proc/self/status")
        .map_err(|e| format!("cannot read /proc/self/status: {e}"))?;
    if status
        .lines()
        .any(|l| l.starts_with("Seccomp_filters:") || l.starts_with("Seccomp:"))
    {
        Ok(())
    } else {
        Err("the kernel was built without CONFIG_SECCOMP_FILTER".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builds_both_filters_with_the_issue_list() {
        let p = build(SeccompOptions::default()).unwrap();
        assert_eq!(p.filters.len(), 2);
        for name in [
            "mount",
            "umount2",
            "pivot_root",
            "open_tree",
            "move_mount",
            "fsopen",
            "fsmount",
            "ptrace",
            "process_vm_readv",
            "process_vm_writev",
            "bpf",
            "perf_event_open",
            "keyctl",
            "add_key",
            "request_key",
            "kexec_load",
            "kexec_file_load",
            "init_module",
            "finit_module",
            "delete_module",
            "unshare",
            "setns",
            "io_uring_setup",
            "io_uring_enter",
            "io_uring_register",
            "userfaultfd",
            "reboot",
            "swapon",
            "swapoff",
        ] {
            assert!(p.denied.contains(&name), "{name} is not denied");
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[test]
    fn the_x32_guard_follows_the_architecture_check() {
        let p = build(SeccompOptions::default()).unwrap();
        for f in &p.filters {
            assert_eq!(f[3].k, 0, "loads the syscall number");
            assert_eq!(f[4].k, 0x4000_0000);
            assert_eq!(f[5].k, 0x0005_0000 | libc::EPERM as u32);
        }
    }
}
