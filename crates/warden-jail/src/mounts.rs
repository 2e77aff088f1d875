//! The sandbox's filesystem view, as an ordered list of mount operations.
//!
//! [`plan`] is pure: it turns resolved paths into [`MountOp`]s holding ready C strings. The
//! child walks the list between `clone` and `execve` without allocating. The order:
//!
//! 1. detach copies of every host tree the view needs (root, devices, workspace, extra
//!    paths) while they are still reachable, setting read-only, nosuid and nodev on them;
//! 2. attach the root copy at a staging directory and move it over `/` as the new root
//!    (the host tree stays covered underneath, unreachable by any path);
//! 3. mount a private /tmp (which also holds the mask source), /proc with its sensitive
//!    files read-only or masked, /dev with only safe device nodes, /sys, /run and the home;
//! 4. attach the workspace and extra paths, parents before children;
//! 5. mask the blocklist and hidden paths (parents before children), last, so they win.

use std::ffi::CString;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use libc::c_ulong;
use warden_policy::HomeMode;

use crate::sys::{MOUNT_ATTR_NODEV, MOUNT_ATTR_NOEXEC, MOUNT_ATTR_NOSUID, MOUNT_ATTR_RDONLY};

/// Device nodes bound into the sandbox's /dev.
pub const DEVICES: &[&str] = &["null", "zero", "full", "random", "urandom", "tty"];

/// Host directories the sandbox's view replaces with fresh filesystems: host paths under
/// them are invisible inside unless bound back.
pub const REPLACED: &[&str] = &["/tmp", "/run", "/var/run", "/dev", "/proc", "/sys"];

/// Where the empty file used to mask files lives until the masks are in place.
pub const MASK_SOURCE: &str = "/tmp/.warden-mask";

/// /proc entries masked (after Docker's defaults); all of /proc is read-only besides.
const PROC_MASKED_FILES: &[&str] = &[
    "/proc/kcore",
    "/proc/keys",
    "/proc/timer_list",
    "/proc/sched_debug",
    "/proc/latency_stats",
    "/proc/timer_stats",
];
const PROC_MASKED_DIRS: &[&str] = &["/proc/acpi", "/proc/scsi", "/sys/firmware"];

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Kind {
    Dir,
    File,
}

/// One step of building the view. Paths before `Pivot` are host paths; after it, sandbox paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MountOp {
    /// Detach a copy of `src` into fd slot `slot`, then set `set` (MOUNT_ATTR_*) on it.
    Grab {
        src: CString,
        slot: usize,
        recursive: bool,
        set: u64,
    },
    /// Attach the tree in `slot` at `target`.
    Attach {
        slot: usize,
        target: CString,
    },
    /// Make `dir` the root; the old root is detached.
    Pivot {
        dir: CString,
    },
    Tmpfs {
        target: CString,
        flags: c_ulong,
        data: CString,
    },
    Proc {
        target: CString,
    },
    /// sysfs, or an empty read-only tmpfs where sysfs cannot be mounted.
    Sysfs {
        target: CString,
    },
    Devpts {
        target: CString,
    },
    /// mkdir; an existing entry is fine.
    Mkdir {
        path: CString,
        mode: u32,
    },
    /// Create an empty file if nothing is there.
    Touch {
        path: CString,
        mode: u32,
    },
    Symlink {
        target: CString,
        link: CString,
    },
    /// Make an existing mount point read-only.
    RemountReadOnly {
        path: CString,
    },
    /// Cover a file with the empty mask file; a missing path is skipped.
    MaskFile {
        target: CString,
    },
    /// Cover a directory with an empty read-only tmpfs; a missing path is skipped.
    MaskDir {
        target: CString,
    },
    /// Write a value into a (proc) file; failure is reported as a warning.
    Sysctl {
        path: CString,
        value: CString,
    },
    Unlink {
        path: CString,
    },
    /// Not a mount: join the sandbox's network namespace, which the supervisor's helper
    /// makes meanwhile (see `crate::netns`). sysfs, mounted next, needs it.
    EnterNetns,
}

impl MountOp {
    /// A short description for error messages.
    pub fn describe(&self) -> String {
        let s = |c: &CString| c.to_string_lossy().into_owned();
        match self {
            MountOp::Grab { src, .. } => format!("take a copy of the host's {}", s(src)),
            MountOp::Attach { target, .. } => format!("attach {}", s(target)),
            MountOp::Pivot { dir } => format!("make {} the root", s(dir)),
            MountOp::Tmpfs { target, .. } => format!("mount a tmpfs at {}", s(target)),
            MountOp::Proc { target } => format!("mount procfs at {}", s(target)),
            MountOp::Sysfs { target } => format!("mount sysfs at {}", s(target)),
            MountOp::EnterNetns => "join the sandbox's network namespace".to_string(),
            MountOp::Devpts { target } => format!("mount devpts at {}", s(target)),
            MountOp::Mkdir { path, .. } => format!("create the directory {}", s(path)),
            MountOp::Touch { path, .. } => format!("create the file {}", s(path)),
            MountOp::Symlink { link, .. } => format!("create the symlink {}", s(link)),
            MountOp::RemountReadOnly { path } => format!("remount {} read-only", s(path)),
            MountOp::MaskFile { target } | MountOp::MaskDir { target } => {
                format!("mask {}", s(target))
            }
            MountOp::Sysctl { path, .. } => format!("write {}", s(path)),
            MountOp::Unlink { path } => format!("remove {}", s(path)),
        }
    }
}

/// A host path bound into the view at the same path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Bind {
    pub path: PathBuf,
    pub kind: Kind,
    pub writable: bool,
}

/// Everything [`plan`] needs, resolved by the caller (canonical, existing paths).
#[derive(Debug, Clone)]
pub struct MountInputs {
    /// The tree that becomes `/`: the host root or a rootfs directory.
    pub root: PathBuf,
    /// A host directory to attach the root copy on before pivoting (usually /tmp).
    pub staging: PathBuf,
    pub binds: Vec<Bind>,
    pub home: Option<(PathBuf, HomeMode)>,
    /// Paths to hide (blocklist and policy), with their kind on the host.
    pub masks: Vec<(PathBuf, Kind)>,
    pub tmp_size: u64,
    /// /var/run is a real directory (not the usual symlink to /run) and needs its own tmpfs.
    pub var_run_is_dir: bool,
    /// The sandbox gets its own network namespace, which init joins before sysfs.
    pub own_netns: bool,
}

fn c(path: &Path) -> CString {
    CString::new(path.as_os_str().as_bytes()).expect("paths never contain NUL")
}

fn cs(s: &str) -> CString {
    CString::new(s).expect("static strings contain no NUL")
}

const NOSUID_NODEV: c_ulong = libc::MS_NOSUID | libc::MS_NODEV;

/// Every ancestor of `path` below `/`, then `path`: the mountpoints to make sure of.
fn ancestors_inclusive(path: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = path
        .ancestors()
        .filter(|a| *a != Path::new("/"))
        .map(Path::to_path_buf)
        .collect();
    v.reverse();
    v
}

/// The result of [`plan`]: the operations and how many fd slots they use.
#[derive(Debug, Clone)]
pub struct MountPlan {
    pub ops: Vec<MountOp>,
    pub slots: usize,
}

pub fn plan(inputs: &MountInputs) -> MountPlan {
    let mut ops = Vec::new();
    let mut slot = 0;

    // 1. Copies of host trees, taken while the host view is still in place.
    ops.push(MountOp::Grab {
        src: c(&inputs.root),
        slot,
        recursive: true,
        set: MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV,
    });
    let root_slot = slot;
    slot += 1;
    let mut device_slots = Vec::new();
    for dev in DEVICES {
        ops.push(MountOp::Grab {
            src: cs(&format!("/dev/{dev}")),
            slot,
            recursive: false,
            set: MOUNT_ATTR_NOSUID | MOUNT_ATTR_NOEXEC,
        });
        device_slots.push((*dev, slot));
        slot += 1;
    }
    let mut binds = inputs.binds.clone();
    binds.sort_by_key(|b| b.path.components().count());
    let mut bind_slots = Vec::new();
    for b in &binds {
        let mut set = MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV;
        if !b.writable {
            set |= MOUNT_ATTR_RDONLY;
        }
        ops.push(MountOp::Grab {
            src: c(&b.path),
            slot,
            recursive: true,
            set,
        });
        bind_slots.push((b, slot));
        slot += 1;
    }

    // 2. The root copy becomes `/`.
    ops.push(MountOp::Attach {
        slot: root_slot,
        target: c(&inputs.staging),
    });
    ops.push(MountOp::Pivot {
        dir: c(&inputs.staging),
    });

    // 3. Private, fresh filesystems.
    ops.push(MountOp::Tmpfs {
        target: cs("/tmp"),
        flags: NOSUID_NODEV,
        data: cs(&format!("mode=1777,size={}", inputs.tmp_size)),
    });
    ops.push(MountOp::Touch {
        path: cs(MASK_SOURCE),
        mode: 0o000,
    });

    ops.push(MountOp::Proc {
        target: cs("/proc"),
    });
    // Nested user namespaces are the usual first step of a kernel exploit; forbid them in
    // the sandbox's own namespace (seccomp also refuses the calls).
    ops.push(MountOp::Sysctl {
        path: cs("/proc/sys/user/max_user_namespaces"),
        value: cs("0"),
    });
    // All of /proc read-only in one remount (sysctls, sysrq-trigger, /proc/self/* alike),
    // rather than Docker's handful of entries; Landlock also grants /proc read access only.
    ops.push(MountOp::RemountReadOnly { path: cs("/proc") });
    for p in PROC_MASKED_FILES {
        ops.push(MountOp::MaskFile { target: cs(p) });
    }

    ops.push(MountOp::Tmpfs {
        target: cs("/dev"),
        flags: libc::MS_NOSUID | libc::MS_NOEXEC,
        data: cs("mode=755,size=65536"),
    });
    for (dev, s) in &device_slots {
        let path = cs(&format!("/dev/{dev}"));
        ops.push(MountOp::Touch {
            path: path.clone(),
            mode: 0o666,
        });
        ops.push(MountOp::Attach {
            slot: *s,
            target: path,
        });
    }
    for (target, link) in [
        ("/proc/self/fd", "/dev/fd"),
        ("/proc/self/fd/0", "/dev/stdin"),
        ("/proc/self/fd/1", "/dev/stdout"),
        ("/proc/self/fd/2", "/dev/stderr"),
        ("pts/ptmx", "/dev/ptmx"),
    ] {
        ops.push(MountOp::Symlink {
            target: cs(target),
            link: cs(link),
        });
    }
    ops.push(MountOp::Mkdir {
        path: cs("/dev/pts"),
        mode: 0o755,
    });
    ops.push(MountOp::Devpts {
        target: cs("/dev/pts"),
    });
    ops.push(MountOp::Mkdir {
        path: cs("/dev/shm"),
        mode: 0o1777,
    });
    ops.push(MountOp::Tmpfs {
        target: cs("/dev/shm"),
        flags: NOSUID_NODEV,
        data: cs(&format!("mode=1777,size={}", inputs.tmp_size)),
    });

    ops.push(MountOp::Tmpfs {
        target: cs("/run"),
        flags: NOSUID_NODEV,
        data: cs("mode=755,size=16777216"),
    });
    if inputs.var_run_is_dir {
        ops.push(MountOp::Tmpfs {
            target: cs("/var/run"),
            flags: NOSUID_NODEV,
            data: cs("mode=755,size=16777216"),
        });
    }

    match &inputs.home {
        Some((home, HomeMode::Private)) => {
            // The home may live under a filesystem replaced above (/tmp, /run): make its path.
            for p in ancestors_inclusive(home) {
                ops.push(MountOp::Mkdir {
                    path: c(&p),
                    mode: 0o755,
                });
            }
            ops.push(MountOp::Tmpfs {
                target: c(home),
                flags: NOSUID_NODEV,
                data: cs(&format!("mode=700,size={}", inputs.tmp_size)),
            })
        }
        Some((home, HomeMode::Hidden)) => ops.push(MountOp::MaskDir { target: c(home) }),
        Some((_, HomeMode::ReadOnly)) | None => {}
    }

    // 4. The workspace and extra paths, parents first.
    for (b, s) in bind_slots {
        let chain = ancestors_inclusive(&b.path);
        let (last, parents) = chain.split_last().expect("absolute path below /");
        for p in parents {
            ops.push(MountOp::Mkdir {
                path: c(p),
                mode: 0o755,
            });
        }
        match b.kind {
            Kind::Dir => ops.push(MountOp::Mkdir {
                path: c(last),
                mode: 0o755,
            }),
            Kind::File => ops.push(MountOp::Touch {
                path: c(last),
                mode: 0o644,
            }),
        }
        ops.push(MountOp::Attach {
            slot: s,
            target: c(&b.path),
        });
    }

    // 5. Masks last, so that nothing mounted later can uncover them. sysfs comes as late as
    // it can, so that the network namespace it needs has been made meanwhile: after the
    // masks elsewhere, which it cannot cover, and before those at or under /sys.
    let mut masks = inputs.masks.clone();
    masks.sort_by_key(|(p, _)| p.components().count());
    masks.dedup();
    let (in_sys, elsewhere): (Vec<_>, Vec<_>) =
        masks.into_iter().partition(|(p, _)| p.starts_with("/sys"));
    let mask = |(path, kind): (PathBuf, Kind)| match kind {
        Kind::File => MountOp::MaskFile { target: c(&path) },
        Kind::Dir => MountOp::MaskDir { target: c(&path) },
    };
    ops.extend(elsewhere.into_iter().map(mask));
    if inputs.own_netns {
        ops.push(MountOp::EnterNetns);
    }
    ops.push(MountOp::Sysfs { target: cs("/sys") });
    for p in PROC_MASKED_DIRS {
        ops.push(MountOp::MaskDir { target: cs(p) });
    }
    ops.extend(in_sys.into_iter().map(mask));
    ops.push(MountOp::Unlink {
        path: cs(MASK_SOURCE),
    });

    MountPlan { ops, slots: slot }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn inputs() -> MountInputs {
        MountInputs {
            root: "/".into(),
            staging: "/tmp".into(),
            binds: vec![
                Bind {
                    path: "/srv/ws/vendor".into(),
                    kind: Kind::Dir,
                    writable: false,
                },
                Bind {
                    path: "/srv/ws".into(),
                    kind: Kind::Dir,
                    writable: true,
                },
                Bind {
                    path: "/tmp/tool.sh".into(),
                    kind: Kind::File,
                    writable: false,
                },
            ],
            home: Some(("/home/u".into(), HomeMode::Private)),
            masks: vec![
                ("/home/u/.ssh".into(), Kind::Dir),
                ("/etc/shadow".into(), Kind::File),
                ("/srv/ws/.env".into(), Kind::File),
            ],
            tmp_size: 1 << 30,
            var_run_is_dir: false,
            own_netns: true,
        }
    }

    fn position(ops: &[MountOp], pred: impl Fn(&MountOp) -> bool) -> usize {
        ops.iter().position(pred).expect("operation present")
    }

    fn target_is(op: &MountOp, path: &str) -> bool {
        let p = cs(path);
        match op {
            MountOp::Attach { target, .. }
            | MountOp::Tmpfs { target, .. }
            | MountOp::MaskFile { target }
            | MountOp::MaskDir { target } => *target == p,
            _ => false,
        }
    }

    #[test]
    fn grabs_everything_before_pivoting_and_mounts_after() {
        let p = plan(&inputs());
        let pivot = position(&p.ops, |o| matches!(o, MountOp::Pivot { .. }));
        let grabs: Vec<usize> = p
            .ops
            .iter()
            .enumerate()
            .filter(|(_, o)| matches!(o, MountOp::Grab { .. }))
            .map(|(i, _)| i)
            .collect();
        assert_eq!(grabs.len(), 1 + DEVICES.len() + 3);
        assert!(grabs.iter().all(|g| *g < pivot));
        assert_eq!(p.slots, grabs.len());
        // the root copy is read-only, nosuid, nodev; the workspace writable
        match &p.ops[0] {
            MountOp::Grab {
                src,
                set,
                recursive,
                ..
            } => {
                assert_eq!(src.to_str().unwrap(), "/");
                assert!(*recursive);
                assert_eq!(
                    *set,
                    MOUNT_ATTR_RDONLY | MOUNT_ATTR_NOSUID | MOUNT_ATTR_NODEV
                );
            }
            other => panic!("first op is {other:?}"),
        }
        let ws = p
            .ops
            .iter()
            .find(|o| matches!(o, MountOp::Grab { src, .. } if src.to_str() == Ok("/srv/ws")))
            .unwrap();
        assert!(matches!(ws, MountOp::Grab { set, .. } if set & MOUNT_ATTR_RDONLY == 0));
    }

    #[test]
    fn parents_are_attached_before_children_and_masks_come_last() {
        let p = plan(&inputs());
        let ws = position(&p.ops, |o| target_is(o, "/srv/ws"));
        let vendor = position(&p.ops, |o| target_is(o, "/srv/ws/vendor"));
        let env_mask = position(&p.ops, |o| target_is(o, "/srv/ws/.env"));
        let ssh_mask = position(&p.ops, |o| target_is(o, "/home/u/.ssh"));
        let home = position(&p.ops, |o| target_is(o, "/home/u"));
        assert!(ws < vendor && vendor < env_mask);
        assert!(home < ssh_mask);
        let last_attach = p
            .ops
            .iter()
            .rposition(|o| matches!(o, MountOp::Attach { .. }))
            .unwrap();
        let first_mask = position(
            &p.ops,
            |o| matches!(o, MountOp::MaskFile { target } | MountOp::MaskDir { target } if !target.to_bytes().starts_with(b"/proc") && !target.to_bytes().starts_with(b"/sys")),
        );
        assert!(last_attach < first_mask);
        assert!(matches!(p.ops.last(), Some(MountOp::Unlink { .. })));
    }

    #[test]
    fn mountpoints_are_made_for_binds_inside_fresh_filesystems() {
        let p = plan(&inputs());
        let tool = position(&p.ops, |o| target_is(o, "/tmp/tool.sh"));
        assert!(
            matches!(&p.ops[tool - 1], MountOp::Touch { path, .. } if path.to_str() == Ok("/tmp/tool.sh"))
        );
        assert!(
            matches!(&p.ops[tool - 2], MountOp::Mkdir { path, .. } if path.to_str() == Ok("/tmp"))
        );
    }

    #[test]
    fn home_modes_and_var_run() {
        let mut i = inputs();
        i.home = Some(("/home/u".into(), HomeMode::Hidden));
        i.var_run_is_dir = true;
        let p = plan(&i);
        assert!(
            p.ops.iter().any(
                |o| matches!(o, MountOp::MaskDir { target } if target.to_str() == Ok("/home/u"))
            )
        );
        assert!(p.ops.iter().any(|o| target_is(o, "/var/run")));
        i.home = Some(("/home/u".into(), HomeMode::ReadOnly));
        let p = plan(&i);
        assert!(!p.ops.iter().any(|o| target_is(o, "/home/u")));
    }

    #[test]
    fn the_network_namespace_is_joined_right_before_sysfs_which_the_masks_follow() {
        let mut i = inputs();
        i.masks.push(("/sys/kernel/secret".into(), Kind::Dir));
        let p = plan(&i);
        let enter = position(&p.ops, |o| *o == MountOp::EnterNetns);
        assert_eq!(
            p.ops.iter().filter(|o| **o == MountOp::EnterNetns).count(),
            1
        );
        assert!(
            matches!(&p.ops[enter + 1], MountOp::Sysfs { target } if target.to_str() == Ok("/sys"))
        );
        // As late as it can be, so that the namespace has been made meanwhile: after every
        // bind and every mask outside /sys...
        let last_attach = p
            .ops
            .iter()
            .rposition(|o| matches!(o, MountOp::Attach { .. }))
            .unwrap();
        assert!(last_attach < enter);
        assert!(position(&p.ops, |o| target_is(o, "/home/u/.ssh")) < enter);
        assert!(position(&p.ops, |o| target_is(o, "/srv/ws/.env")) < enter);
        // ...but before the masks in /sys, so that sysfs cannot cover one.
        assert!(enter < position(&p.ops, |o| target_is(o, "/sys/kernel/secret")));
        assert!(enter < position(&p.ops, |o| target_is(o, "/sys/firmware")));

        // With the host's network, nothing to join; sysfs is still mounted.
        i.own_netns = false;
        let p = plan(&i);
        assert!(!p.ops.contains(&MountOp::EnterNetns));
        assert!(p.ops.iter().any(|o| matches!(o, MountOp::Sysfs { .. })));
    }

    #[test]
    fn every_op_describes_itself() {
        for op in plan(&inputs()).ops {
            assert!(!op.describe().is_empty());
        }
    }
}
