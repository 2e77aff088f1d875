//! Landlock: the kernel-enforced allowlist of what a sandbox may do to files and TCP ports,
//! and which signals and abstract sockets it may reach.
//!
//! Landlock can only allow. To keep a blocklisted path out of a directory that is otherwise
//! allowed, [`carve`] replaces the rule on that directory with rules on each of its entries
//! except the blocked ones (recursing where a blocked path lies deeper), and leaves the
//! directory itself only its structural rights. The ruleset is built in the parent, from host
//! paths (a bind mount keeps its inode, so the rules hold inside the sandbox's mount
//! namespace too); the child only calls `landlock_restrict_self`.

use std::io;
use std::os::fd::OwnedFd;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};

use landlock::{
    ABI, Access, AccessFs, AccessNet, BitFlags, CompatLevel, Compatible, NetPort, PathBeneath,
    Ruleset, RulesetAttr, RulesetCreatedAttr, Scope, make_bitflags,
};
use nix::fcntl::{OFlag, open};
use nix::sys::stat::Mode;

use crate::layer::{Layer, LayerReport};

pub type Access_ = BitFlags<AccessFs>;

/// Read and execute.
pub fn read() -> Access_ {
    make_bitflags!(AccessFs::{Execute | ReadFile | ReadDir})
}

/// Everything but creating device nodes.
pub fn read_write() -> Access_ {
    AccessFs::from_all(ABI::V6) & !make_bitflags!(AccessFs::{MakeChar | MakeBlock})
}

/// Reading, writing and ioctl on an existing device or file, nothing structural.
pub fn device() -> Access_ {
    make_bitflags!(AccessFs::{ReadFile | WriteFile | IoctlDev})
}

/// The rights that make sense on a non-directory.
fn file_rights() -> Access_ {
    AccessFs::from_file(ABI::V6)
}

/// The rights a directory keeps when entries below it are carved out: listing and creating or
/// removing entries, but no reading, writing or executing of files.
/// Rights a carved directory keeps. Not ReadDir: Landlock rights apply to a whole tree, so
/// listing the carved directory would also list the hidden entries below it (the names in
/// ~/.ssh or ~/.password-store). A carved directory can still be traversed (walking a path
/// needs no right), just not listed.
fn structural_rights() -> Access_ {
    make_bitflags!(AccessFs::{
        RemoveDir | RemoveFile | MakeChar | MakeDir | MakeReg | MakeSock | MakeFifo | MakeBlock | MakeSym | Refer
    })
}

/// A directory entry as the carving sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub path: PathBuf,
    pub kind: EntryKind,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    Dir,
    File,
    Symlink,
}

/// One rule: `access` beneath `path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FsRule {
    pub path: PathBuf,
    pub access: Access_,
    /// A carved directory entry, opened without following symlinks.
    pub carved: bool,
}

/// Expands `grants` into rules that never cover a path in `denied`.
///
/// A grant equal to or inside a denied path is dropped. A grant containing denied paths is
/// carved: its directory keeps only structural rights, and each entry gets the grant's
/// rights (file rights for non-directories), except denied entries (dropped) and entries
/// containing denied paths (carved in turn). Symlinks get no rule: the kernel checks the
/// target's path. `list` lists a directory.
pub fn carve(
    grants: &[(PathBuf, Access_)],
    denied: &[PathBuf],
    list: &mut dyn FnMut(&Path) -> io::Result<Vec<Entry>>,
) -> io::Result<Vec<FsRule>> {
    let mut out = Vec::new();
    for (path, access) in grants {
        if denied.iter().any(|d| path.starts_with(d)) {
            continue;
        }
        carve_one(path, *access, false, denied, list, &mut out)?;
    }
    Ok(out)
}

fn carve_one(
    path: &Path,
    access: Access_,
    carved: bool,
    denied: &[PathBuf],
    list: &mut dyn FnMut(&Path) -> io::Result<Vec<Entry>>,
    out: &mut Vec<FsRule>,
) -> io::Result<()> {
    let inner: Vec<&PathBuf> = denied
        .iter()
        .filter(|d| d.starts_with(path) && d.as_path() != path)
        .collect();
    if inner.is_empty() {
        out.push(FsRule {
            path: path.to_path_buf(),
            access,
            carved,
        });
        return Ok(());
    }
    let structural = access & structural_rights();
    if !structural.is_empty() {
        out.push(FsRule {
            path: path.to_path_buf(),
            access: structural,
            carved,
        });
    }
    for entry in list(path)? {
        if denied.contains(&entry.path) {
            continue;
        }
        match entry.kind {
            EntryKind::Symlink => {}
            EntryKind::Dir if inner.iter().any(|d| d.starts_with(&entry.path)) => {
                carve_one(&entry.path, access, true, denied, list, out)?;
            }
            EntryKind::Dir => out.push(FsRule {
                path: entry.path,
                access,
                carved: true,
            }),
            EntryKind::File => {
                let a = access & file_rights();
                if !a.is_empty() {
                    out.push(FsRule {
                        path: entry.path,
                        access: a,
                        carved: true,
                    });
                }
            }
        }
    }
    Ok(())
}

/// Lists a real directory for [`carve`].
pub fn list_dir(dir: &Path) -> io::Result<Vec<Entry>> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir)? {
        let e = e?;
        let ft = e.file_type()?;
        let kind = if ft.is_symlink() {
            EntryKind::Symlink
        } else if ft.is_dir() {
            EntryKind::Dir
        } else {
            EntryKind::File
        };
        out.push(Entry {
            path: e.path(),
            kind,
        });
    }
    out.sort_by(|a, b| a.path.cmp(&b.path));
    Ok(out)
}

/// What the kernel supports, from the ABI version.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LandlockSupport {
    pub abi: i32,
}

impl LandlockSupport {
    pub fn probe() -> Result<LandlockSupport, String> {
        match crate::sys::landlock_abi() {
            Ok(abi) if abi >= 1 => Ok(LandlockSupport { abi }),
            Ok(abi) => Err(format!("the kernel reports Landlock ABI {abi}")),
            Err(libc::EOPNOTSUPP) => Err("Landlock is built into the kernel but disabled (add `landlock` to the lsm= boot parameter)".into()),
            Err(libc::ENOSYS) => Err("the kernel has no Landlock (needs Linux 5.13 or later built with CONFIG_SECURITY_LANDLOCK)".into()),
            Err(e) => Err(format!("landlock_create_ruleset failed: {}", nix::errno::Errno::from_raw(e))),
        }
    }
    /// The crate's ABI value for what we use (we know nothing newer than V7 needs handling).
    fn abi(self) -> ABI {
        ABI::from(self.abi.min(7))
    }
    pub fn net(self) -> bool {
        self.abi >= 4
    }
    pub fn scopes(self) -> bool {
        self.abi >= 6
    }
}

/// The network part of the ruleset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetRules {
    /// Restrict TCP at all (false only for network mode `host`).
    pub restrict: bool,
    /// TCP ports the sandbox may connect to (the egress proxy's, once it exists).
    pub connect_ports: Vec<u16>,
}

/// A rule the child adds after mounting: on a fresh filesystem (a tmpfs, procfs, ...), whose
/// root did not exist when the parent built the ruleset. Landlock ignores the directory a
/// filesystem is mounted on when it walks up a path, so a rule on the host's /tmp would not
/// reach the sandbox's own /tmp.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MountRule {
    pub path: std::ffi::CString,
    /// Landlock access bits, already limited to what the kernel handles.
    pub access: u64,
}

/// The built ruleset: its descriptor (None when Landlock is unavailable), the rules the child
/// must add after mounting, and the layer reports.
#[derive(Debug)]
pub struct Built {
    pub fd: Option<OwnedFd>,
    pub mount_rules: Vec<MountRule>,
    pub reports: Vec<LayerReport>,
}

/// Builds the ruleset and reports the three Landlock layers. `fd` is `None` when Landlock is
/// unavailable (the reports say why). `after_mount` are sandbox paths of fresh filesystems.
pub fn build(
    support: Result<LandlockSupport, String>,
    rules: &[FsRule],
    after_mount: &[(PathBuf, Access_)],
    net: &NetRules,
) -> Result<Built, String> {
    let support = match support {
        Ok(s) => s,
        Err(why) => {
            return Ok(Built {
                fd: None,
                mount_rules: Vec::new(),
                reports: vec![
                    LayerReport::unavailable(Layer::LandlockFs, why.clone()),
                    LayerReport::unavailable(Layer::LandlockNet, why.clone()),
                    LayerReport::unavailable(Layer::LandlockScope, why),
                ],
            });
        }
    };
    let abi = support.abi();
    let handled = AccessFs::from_all(abi);
    let mut reports = vec![LayerReport::enforced(
        Layer::LandlockFs,
        format!(
            "ABI {}, {} rules",
            support.abi,
            rules.len() + after_mount.len()
        ),
    )];
    let err = |e: landlock::RulesetError| e.to_string();
    let mut ruleset = Ruleset::default()
        .set_compatibility(CompatLevel::HardRequirement)
        .handle_access(handled)
        .map_err(err)?;
    if !net.restrict {
        reports.push(LayerReport::not_requested(
            Layer::LandlockNet,
            "network mode host",
        ));
    } else if support.net() {
        ruleset = ruleset
            .handle_access(AccessNet::BindTcp | AccessNet::ConnectTcp)
            .map_err(err)?;
        let detail = if net.connect_ports.is_empty() {
            "TCP bind and connect denied".to_string()
        } else {
            format!(
                "TCP bind denied, connect only to port {:?}",
                net.connect_ports
            )
        };
        reports.push(LayerReport::enforced(Layer::LandlockNet, detail));
    } else {
        reports.push(LayerReport::unavailable(
            Layer::LandlockNet,
            format!(
                "Landlock ABI {} has no network rules (needs ABI 4, Linux 6.7)",
                support.abi
            ),
        ));
    }
    if support.scopes() {
        ruleset = ruleset
            .scope(Scope::AbstractUnixSocket | Scope::Signal)
            .map_err(err)?;
        reports.push(LayerReport::enforced(
            Layer::LandlockScope,
            "signals and abstract unix sockets scoped to the sandbox",
        ));
    } else {
        reports.push(LayerReport::unavailable(
            Layer::LandlockScope,
            format!(
                "Landlock ABI {} has no scopes (needs ABI 6, Linux 6.12)",
                support.abi
            ),
        ));
    }
    let mut created = ruleset.create().map_err(err)?;
    for rule in rules {
        let mut flags = OFlag::O_PATH | OFlag::O_CLOEXEC;
        if rule.carved {
            flags |= OFlag::O_NOFOLLOW;
        }
        let fd = match open(&rule.path, flags, Mode::empty()) {
            Ok(fd) => fd,
            // An entry removed since it was listed, or a path that does not exist here:
            // nothing to allow.
            Err(nix::errno::Errno::ENOENT) => continue,
            Err(e) => {
                return Err(format!(
                    "cannot open {} for a Landlock rule: {e}",
                    rule.path.display()
                ));
            }
        };
        let meta = nix::sys::stat::fstat(&fd)
            .map_err(|e| format!("cannot stat {}: {e}", rule.path.display()))?;
        let is_dir = (meta.st_mode & libc::S_IFMT) == libc::S_IFDIR;
        let is_symlink = (meta.st_mode & libc::S_IFMT) == libc::S_IFLNK;
        if is_symlink {
            continue;
        }
        let mut access = rule.access & handled;
        if !is_dir {
            access &= AccessFs::from_file(abi);
        }
        if access.is_empty() {
            continue;
        }
        created = created
            .add_rule(PathBeneath::new(fd, access))
            .map_err(|e| format!("Landlock rule for {}: {e}", rule.path.display()))?;
    }
    if net.restrict && support.net() {
        for port in &net.connect_ports {
            created = created
                .add_rule(NetPort::new(*port, AccessNet::ConnectTcp))
                .map_err(err)?;
        }
    }
    let fd: Option<OwnedFd> = created.into();
    let mount_rules = after_mount
        .iter()
        .map(|(p, a)| MountRule {
            path: std::ffi::CString::new(std::os::unix::ffi::OsStrExt::as_bytes(p.as_os_str()))
                .expect("no NUL in paths"),
            access: (*a & handled).bits(),
        })
        .collect();
    match fd {
        Some(fd) => Ok(Built {
            fd: Some(fd),
            mount_rules,
            reports,
        }),
        None => Err("the Landlock ruleset was not created".into()),
    }
}

/// True when `path` is a character device (for rules on single device nodes).
pub fn is_char_device(path: &Path) -> bool {
    std::fs::metadata(path)
        .map(|m| m.file_type().is_char_device())
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// A fake tree: directory -> entries.
    fn tree(spec: &[(&str, &[(&str, EntryKind)])]) -> BTreeMap<PathBuf, Vec<Entry>> {
        spec.iter()
            .map(|(dir, entries)| {
                let dir = PathBuf::from(dir);
                let list = entries
                    .iter()
                    .map(|(n, k)| Entry {
                        path: dir.join(n),
                        kind: *k,
                    })
                    .collect();
                (dir, list)
            })
            .collect()
    }

    fn run(
        grants: &[(&str, Access_)],
        denied: &[&str],
        t: &BTreeMap<PathBuf, Vec<Entry>>,
    ) -> Vec<(String, Access_)> {
        let grants: Vec<_> = grants.iter().map(|(p, a)| (PathBuf::from(p), *a)).collect();
        let denied: Vec<_> = denied.iter().map(PathBuf::from).collect();
        let mut list = |p: &Path| {
            t.get(p)
                .cloned()
                .ok_or_else(|| io::Error::from(io::ErrorKind::NotFound))
        };
        carve(&grants, &denied, &mut list)
            .unwrap()
            .into_iter()
            .map(|r| (r.path.display().to_string(), r.access))
            .collect()
    }

    use EntryKind::{Dir, File, Symlink};

    #[test]
    fn grants_without_denied_paths_pass_unchanged() {
        let t = tree(&[]);
        assert_eq!(
            run(&[("/usr", read())], &["/etc/shadow"], &t),
            [("/usr".to_string(), read())]
        );
    }

    #[test]
    fn a_grant_inside_a_denied_path_is_dropped() {
        let t = tree(&[]);
        assert!(run(&[("/root/project", read_write())], &["/root"], &t).is_empty());
        assert!(run(&[("/root", read())], &["/root"], &t).is_empty());
    }

    #[test]
    fn carves_around_a_denied_file() {
        let t = tree(&[(
            "/etc",
            &[
                ("passwd", File),
                ("shadow", File),
                ("ssl", Dir),
                ("localtime", Symlink),
            ],
        )]);
        let rules = run(&[("/etc", read())], &["/etc/shadow"], &t);
        assert_eq!(
            rules,
            [
                (
                    "/etc/passwd".to_string(),
                    make_bitflags!(AccessFs::{Execute | ReadFile})
                ),
                ("/etc/ssl".to_string(), read()),
            ]
        );
    }

    #[test]
    fn carves_recursively_for_deep_denied_paths() {
        let t = tree(&[
            ("/", &[("home", Dir), ("root", Dir), ("usr", Dir)]),
            ("/home", &[("u", Dir), ("v", Dir)]),
            ("/home/u", &[(".ssh", Dir), (".bashrc", File), ("src", Dir)]),
        ]);
        let rules = run(&[("/", read())], &["/root", "/home/u/.ssh"], &t);
        let paths: Vec<&str> = rules.iter().map(|(p, _)| p.as_str()).collect();
        // Carved directories get no rule at all: a read-only grant has no structural rights
        // left once listing is excluded (listing would reveal the hidden names below).
        assert_eq!(paths, ["/home/u/.bashrc", "/home/u/src", "/home/v", "/usr"]);
    }

    #[test]
    fn a_carved_writable_directory_keeps_structure_but_not_content_rights() {
        let t = tree(&[("/ws", &[("secret.env", File), ("src", Dir)])]);
        let rules = run(&[("/ws", read_write())], &["/ws/secret.env"], &t);
        let ws = &rules[0];
        assert_eq!(ws.0, "/ws");
        assert!(
            ws.1.contains(AccessFs::MakeReg)
                && !ws.1.contains(AccessFs::ReadFile)
                && !ws.1.contains(AccessFs::WriteFile)
        );
        assert_eq!(rules[1], ("/ws/src".to_string(), read_write()));
        assert_eq!(rules.len(), 2);
    }

    #[test]
    fn a_prefix_of_a_name_is_not_containment() {
        let t = tree(&[]);
        assert_eq!(
            run(&[("/rootfs", read())], &["/root"], &t),
            [("/rootfs".to_string(), read())]
        );
    }
}
