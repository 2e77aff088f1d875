//! The seccomp deny-list: system calls a sandbox never needs and that widen the kernel's
//! attack surface or undo the other layers (mounts, namespaces, ptrace, BPF, io_uring, keys,
//! modules, ...), with argument checks where a call is only dangerous with some arguments
//! (`clone` with namespace flags, raw sockets, TIOCSTI). `clone3` fails with ENOSYS, so that
//! libc falls back to `clone`, whose flags the filter can read; on x86_64 the x32 numbers
//! are refused. One filter, compiled by [`crate::bpf`] as a search over call numbers.

use std::collections::BTreeMap;

use crate::bpf::{self, Cmp, Cond, Entry, Spec, Width};

/// The compiled filters, in the order they are installed (one, today).
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

/// The errno action, without its value, as SECCOMP_GET_ACTION_AVAIL takes it.
const SECCOMP_RET_ERRNO: u32 = 0x0005_0000;

/// `MSG_FASTOPEN`: connect and send in one call, outside `connect()`.
const MSG_FASTOPEN: u64 = 0x2000_0000;

/// AUDIT_ARCH_X86_64 and AUDIT_ARCH_AARCH64: the only architecture a filter lets through.
#[cfg(target_arch = "x86_64")]
const AUDIT_ARCH: u32 = 0xc000_003e;
#[cfg(target_arch = "aarch64")]
const AUDIT_ARCH: u32 = 0xc000_00b7;

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

fn cond(arg: u8, width: Width, cmp: Cmp) -> Cond {
    Cond { arg, width, cmp }
}

fn masked(mask: u64, value: u64) -> Cmp {
    Cmp::MaskedEq { mask, value }
}

/// The deny-list as a filter specification, and the names of what it denies.
pub(crate) fn spec(options: SeccompOptions) -> (Spec, Vec<&'static str>) {
    let eperm = bpf::ret_errno(libc::EPERM);
    let deny = |rules: Vec<Vec<Cond>>| Entry {
        action: eperm,
        rules,
    };
    let mut entries: BTreeMap<u32, Entry> = BTreeMap::new();
    let mut denied = Vec::new();
    let nr = |n: i64| u32::try_from(n).expect("system call numbers are small");
    for (name, n) in unconditional() {
        entries.insert(nr(n), deny(Vec::new()));
        denied.push(name);
    }

    // clone(): no new namespaces (flags are the first argument on x86_64 and aarch64).
    entries.insert(
        nr(libc::SYS_clone),
        deny(
            NAMESPACE_FLAGS
                .iter()
                .map(|f| vec![cond(0, Width::Qword, masked(*f, *f))])
                .collect(),
        ),
    );
    // clone3's flags live in memory the filter cannot read: make it look absent, so that
    // libc falls back to clone, whose flags are checked above.
    entries.insert(
        nr(libc::SYS_clone3),
        Entry {
            action: bpf::ret_errno(libc::ENOSYS),
            rules: Vec::new(),
        },
    );

    // personality(): nothing that weakens ASLR or changes the ABI.
    entries.insert(
        nr(libc::SYS_personality),
        deny(vec![
            SAFE_PERSONALITIES
                .iter()
                .map(|p| cond(0, Width::Dword, Cmp::Ne(*p)))
                .collect(),
        ]),
    );

    // socket() and socketpair(): only unix, inet and inet6; no raw or packet sockets.
    let mut families = vec![libc::AF_UNIX as u64];
    if !options.deny_inet {
        families.extend([libc::AF_INET as u64, libc::AF_INET6 as u64]);
    }
    for n in [libc::SYS_socket, libc::SYS_socketpair] {
        let mut r = vec![
            families
                .iter()
                .map(|f| cond(0, Width::Dword, Cmp::Ne(*f)))
                .collect(),
        ];
        for ty in [libc::SOCK_RAW as u64, SOCK_PACKET] {
            r.push(vec![cond(1, Width::Dword, masked(0xf, ty))]);
        }
        if options.inet_tcp_only && !options.deny_inet {
            for family in [libc::AF_INET as u64, libc::AF_INET6 as u64] {
                let fam = || cond(0, Width::Dword, Cmp::Eq(family));
                // Every type but SOCK_STREAM (the type's low 4 bits; the rest are flags).
                for ty in (0..16u64).filter(|t| *t != libc::SOCK_STREAM as u64) {
                    r.push(vec![fam(), cond(1, Width::Dword, masked(0xf, ty))]);
                }
                // Protocol 0 (TCP for a stream socket) or IPPROTO_TCP: no SCTP, no MPTCP.
                r.push(vec![
                    fam(),
                    cond(2, Width::Dword, Cmp::Ne(0)),
                    cond(2, Width::Dword, Cmp::Ne(libc::IPPROTO_TCP as u64)),
                ]);
            }
        }
        entries.insert(nr(n), deny(r));
    }
    if options.inet_tcp_only && !options.deny_inet {
        // The flags are a register argument: sendto's fourth, sendmsg's third, sendmmsg's
        // fourth.
        for (n, arg) in [
            (libc::SYS_sendto, 3),
            (libc::SYS_sendmsg, 2),
            (libc::SYS_sendmmsg, 3),
        ] {
            entries.insert(
                nr(n),
                deny(vec![vec![cond(
                    arg,
                    Width::Dword,
                    masked(MSG_FASTOPEN, MSG_FASTOPEN),
                )]]),
            );
        }
    }

    // ioctl(): no pushing input into a terminal (TIOCSTI) or console tricks (TIOCLINUX).
    // The request is an unsigned int to the kernel, so compare only the low 32 bits.
    // (The request constants' type differs between architectures, hence the casts.)
    #[allow(clippy::unnecessary_cast)]
    entries.insert(
        nr(libc::SYS_ioctl),
        deny(
            [libc::TIOCSTI as u64, libc::TIOCLINUX as u64]
                .iter()
                .map(|r| vec![cond(1, Width::Dword, Cmp::Eq(*r))])
                .collect(),
        ),
    );

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
    let spec = Spec {
        arch: AUDIT_ARCH,
        entries,
        // On x86_64, numbers with bit 30 set are the x32 ABI: the same calls under other
        // numbers, behind the same architecture value. A deny-list must refuse them.
        x32_action: cfg!(target_arch = "x86_64").then_some(eperm),
    };
    (spec, denied)
}

/// Builds the deny-list filter.
pub fn build(options: SeccompOptions) -> Result<SeccompProgram, String> {
    let (spec, denied) = spec(options);
    let filter = bpf::compile(&spec)?;
    Ok(SeccompProgram {
        filters: vec![filter],
        denied,
    })
}

/// Whether the kernel can install seccomp filters at all.
pub fn available() -> Result<(), String> {
    // One system call answers for kernels since 4.14; /proc/self/status for older ones.
    if crate::sys::seccomp_action_available(SECCOMP_RET_ERRNO).is_ok() {
        return Ok(());
    }
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
    use crate::bpf::{RET_ALLOW, RET_KILL_PROCESS, run};

    const OPTIONS: [SeccompOptions; 4] = [
        SeccompOptions {
            deny_inet: false,
            inet_tcp_only: false,
        },
        SeccompOptions {
            deny_inet: true,
            inet_tcp_only: false,
        },
        SeccompOptions {
            deny_inet: false,
            inet_tcp_only: true,
        },
        SeccompOptions {
            deny_inet: true,
            inet_tcp_only: true,
        },
    ];

    #[test]
    fn builds_one_filter_with_the_issue_list() {
        let p = build(SeccompOptions::default()).unwrap();
        assert_eq!(p.filters.len(), 1);
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
        let f = &build(SeccompOptions::default()).unwrap().filters[0];
        assert_eq!(f[3].k, 0, "loads the syscall number");
        assert_eq!(f[4].k, 0x4000_0000);
        assert_eq!(f[5].k, 0x0005_0000 | libc::EPERM as u32);
        let (action, _) = run(f, 0x4000_0000 | libc::SYS_getpid as u32, AUDIT_ARCH, [0; 6]);
        assert_eq!(action, bpf::ret_errno(libc::EPERM));
    }

    /// The same specification compiled by seccompiler, as warden compiled it before: one
    /// linear filter per action, the x32 guard spliced in after the architecture check.
    fn reference(spec: &Spec) -> Vec<Vec<libc::sock_filter>> {
        use seccompiler::{
            BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition,
            SeccompFilter, SeccompRule, TargetArch,
        };
        let arch = if cfg!(target_arch = "x86_64") {
            TargetArch::x86_64
        } else {
            TargetArch::aarch64
        };
        let mut by_action: BTreeMap<u32, BTreeMap<i64, Vec<SeccompRule>>> = BTreeMap::new();
        for (nr, e) in &spec.entries {
            let rules = e
                .rules
                .iter()
                .map(|r| {
                    SeccompRule::new(
                        r.iter()
                            .map(|c| {
                                let len = match c.width {
                                    Width::Dword => SeccompCmpArgLen::Dword,
                                    Width::Qword => SeccompCmpArgLen::Qword,
                                };
                                let (op, v) = match c.cmp {
                                    Cmp::Eq(v) => (SeccompCmpOp::Eq, v),
                                    Cmp::Ne(v) => (SeccompCmpOp::Ne, v),
                                    Cmp::MaskedEq { mask, value } => {
                                        (SeccompCmpOp::MaskedEq(mask), value)
                                    }
                                };
                                SeccompCondition::new(c.arg, len, op, v).unwrap()
                            })
                            .collect(),
                    )
                    .unwrap()
                })
                .collect();
            by_action
                .entry(e.action)
                .or_default()
                .insert(i64::from(*nr), rules);
        }
        by_action
            .into_iter()
            .map(|(action, rules)| {
                let filter = SeccompFilter::new(
                    rules,
                    SeccompAction::Allow,
                    SeccompAction::Errno(action & 0xffff),
                    arch,
                )
                .unwrap();
                let prog: BpfProgram = filter.try_into().unwrap();
                let mut prog: Vec<libc::sock_filter> = prog
                    .into_iter()
                    .map(|i| bpf_stmt(u32::from(i.code), i.jt, i.jf, i.k))
                    .collect();
                if let Some(x32) = spec.x32_action {
                    let guard = [
                        bpf_stmt(libc::BPF_LD | libc::BPF_W | libc::BPF_ABS, 0, 0, 0),
                        bpf_stmt(
                            libc::BPF_JMP | libc::BPF_JGE | libc::BPF_K,
                            0,
                            1,
                            0x4000_0000,
                        ),
                        bpf_stmt(libc::BPF_RET | libc::BPF_K, 0, 0, x32),
                    ];
                    prog.splice(3..3, guard);
                }
                prog
            })
            .collect()
    }

    fn bpf_stmt(code: u32, jt: u8, jf: u8, k: u32) -> libc::sock_filter {
        libc::sock_filter {
            code: code as u16,
            jt,
            jf,
            k,
        }
    }

    /// What the kernel does with several filters: the most restrictive action wins.
    fn combined(filters: &[Vec<libc::sock_filter>], nr: u32, arch: u32, args: [u64; 6]) -> u32 {
        filters
            .iter()
            .map(|f| run(f, nr, arch, args).0)
            .min_by_key(|a| ((a & 0xffff_0000) as i32, *a))
            .unwrap()
    }

    /// A small deterministic generator for argument vectors.
    struct XorShift(u64);
    impl XorShift {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn decides_like_seccompiler_on_every_call_and_many_arguments() {
        for options in OPTIONS {
            let (spec, _) = spec(options);
            let ours = bpf::compile(&spec).unwrap();
            let theirs = reference(&spec);
            // Values worth trying for any argument: each condition's values, masks and
            // neighbours, with and without high bits.
            let mut interesting = vec![0u64, 1, u64::MAX, 0xffff_ffff, 1 << 32];
            for e in spec.entries.values() {
                for c in e.rules.iter().flatten() {
                    let vs = match c.cmp {
                        Cmp::Eq(v) | Cmp::Ne(v) => vec![v],
                        Cmp::MaskedEq { mask, value } => vec![mask, value, value | !mask],
                    };
                    for v in vs {
                        interesting.extend([v, v ^ 1, v | (1 << 32), v | (0xdead << 40)]);
                    }
                }
            }
            interesting.sort();
            interesting.dedup();
            let mut rng = XorShift(0x9e37_79b9_7f4a_7c15);
            let pick = |rng: &mut XorShift| {
                let r = rng.next();
                if r.is_multiple_of(4) {
                    rng.next()
                } else {
                    interesting[(r >> 8) as usize % interesting.len()]
                }
            };
            let mut nrs: Vec<u32> = (0..1024).collect();
            nrs.extend([
                0x4000_0000,
                0x4000_0001,
                0x4000_0000 | libc::SYS_ioctl as u32,
            ]);
            nrs.extend([u32::MAX, 0x8000_0000]);
            for nr in nrs {
                let listed = spec.entries.get(&nr).is_some_and(|e| !e.rules.is_empty());
                let tries = if listed { 4000 } else { 3 };
                for t in 0..tries {
                    let args = if t == 0 {
                        [0; 6]
                    } else {
                        std::array::from_fn(|_| pick(&mut rng))
                    };
                    for arch in [AUDIT_ARCH, 0x4000_0003, 0] {
                        let a = combined(std::slice::from_ref(&ours), nr, arch, args);
                        let b = combined(&theirs, nr, arch, args);
                        assert_eq!(
                            a, b,
                            "options {options:?}, call {nr}, arch {arch:#x}, args {args:x?}: ours {a:#x}, seccompiler {b:#x}"
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn every_listed_rule_is_reachable_and_denies() {
        // For each conditional entry and each of its rules, arguments that satisfy exactly
        // that rule get the entry's action.
        for options in OPTIONS {
            let (spec, _) = spec(options);
            let prog = bpf::compile(&spec).unwrap();
            for (nr, e) in &spec.entries {
                for rule in &e.rules {
                    let mut args = [0u64; 6];
                    let mut fixed = [false; 6];
                    let mut satisfiable = true;
                    for c in rule {
                        let i = usize::from(c.arg);
                        let want = match c.cmp {
                            Cmp::Eq(v) => v,
                            Cmp::MaskedEq { value, .. } => value,
                            Cmp::Ne(_) => continue,
                        };
                        if fixed[i] && args[i] != want {
                            satisfiable = false;
                        }
                        args[i] = want;
                        fixed[i] = true;
                    }
                    // Ne conditions: pick a value that differs from all of them.
                    for c in rule {
                        let i = usize::from(c.arg);
                        if let Cmp::Ne(_) = c.cmp
                            && !fixed[i]
                        {
                            args[i] = 0x7777;
                        }
                    }
                    if satisfiable {
                        let (a, _) = run(&prog, *nr, AUDIT_ARCH, args);
                        assert_eq!(a, e.action, "call {nr}, rule {rule:?}, args {args:x?}");
                    }
                }
            }
            let (a, _) = run(&prog, libc::SYS_getpid as u32, AUDIT_ARCH, [0; 6]);
            assert_eq!(a, RET_ALLOW);
            let (a, _) = run(&prog, libc::SYS_getpid as u32, 0x4000_0003, [0; 6]);
            assert_eq!(a, RET_KILL_PROCESS, "another architecture is killed");
        }
    }

    #[test]
    fn every_call_number_is_decided_in_a_few_instructions() {
        // What makes the filter cheap to install: the kernel runs it over every call number
        // to build its cache, and a search tree answers each in a handful of steps where a
        // linear list walks the whole list.
        for options in OPTIONS {
            let (spec, _) = spec(options);
            let prog = bpf::compile(&spec).unwrap();
            let linear = &reference(&spec)[0];
            let mut worst = 0;
            let mut worst_linear = 0;
            for nr in 0..1024u32 {
                if spec.entries.get(&nr).is_some_and(|e| !e.rules.is_empty()) {
                    continue;
                }
                worst = worst.max(run(&prog, nr, AUDIT_ARCH, [0; 6]).1);
                worst_linear = worst_linear.max(run(linear, nr, AUDIT_ARCH, [0; 6]).1);
            }
            assert!(
                worst <= 24,
                "{options:?}: {worst} instructions for one call number"
            );
            assert!(worst * 5 < worst_linear, "{worst} vs {worst_linear}");
        }
    }

    #[test]
    fn the_kernel_accepts_the_filter_and_it_denies() {
        // Installed for real in a child process: a denied call fails with EPERM, clone3 with
        // ENOSYS, and an ordinary call works.
        let prog = build(SeccompOptions::default()).unwrap().filters.remove(0);
        // SAFETY: the child only makes system calls and exits.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            let code = (|| {
                crate::sys::prctl(libc::PR_SET_NO_NEW_PRIVS, 1).map_err(|_| 10)?;
                crate::sys::seccomp_filter(&prog).map_err(|_| 11)?;
                // SAFETY: plain system calls with no pointers.
                let r = unsafe { libc::syscall(libc::SYS_unshare, libc::CLONE_NEWUSER) };
                if r != -1 || std::io::Error::last_os_error().raw_os_error() != Some(libc::EPERM) {
                    return Err(12);
                }
                // SAFETY: as above; clone3 with a null argument would fault, but the filter
                // answers before the kernel reads it.
                let r = unsafe { libc::syscall(libc::SYS_clone3, 0usize, 0usize) };
                if r != -1 || std::io::Error::last_os_error().raw_os_error() != Some(libc::ENOSYS) {
                    return Err(13);
                }
                // SAFETY: no arguments.
                if unsafe { libc::getppid() } <= 0 {
                    return Err(14);
                }
                Ok::<(), i32>(())
            })();
            // SAFETY: leaving the forked child without running the parent's destructors.
            unsafe { libc::_exit(code.err().unwrap_or(0)) };
        }
        let mut status = 0;
        // SAFETY: waiting for our own child.
        unsafe { libc::waitpid(pid, &mut status, 0) };
        assert!(libc::WIFEXITED(status), "status {status:#x}");
        assert_eq!(libc::WEXITSTATUS(status), 0);
    }
}
