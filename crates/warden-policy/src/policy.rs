//! `SandboxPolicy`: what a sandboxed command may see, reach and consume.

use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use crate::blocklist;
use crate::domain::DomainPattern;
use crate::env::{EnvironmentPolicy, is_injection_variable, is_valid_name};
use crate::error::{Errors, PolicyError};
use crate::names::named_enum;
use crate::size::ByteSize;

named_enum! {
    /// How a sandbox is isolated.
    pub enum Isolation {
        /// Namespaces (user, pid, mount, network, ipc, uts), cgroups, Landlock and seccomp.
        Full = "full",
        /// What works inside an unprivileged container (a Kubernetes pod): Landlock, seccomp,
        /// no_new_privs and rlimits, without namespaces.
        Pod = "pod",
    }
}

named_enum! {
    /// Which host files a sandbox may read.
    pub enum ReadScope {
        /// The operating system (/usr, /bin, /lib*, /etc, /opt, ...), the workspace and listed paths.
        System = "system",
        /// The whole host root, except the blocklist and hidden paths.
        Host = "host",
    }
}

named_enum! {
    /// What a sandbox sees at the invoking user's home directory.
    pub enum HomeMode {
        /// A fresh, empty, writable home that disappears with the sandbox.
        Private = "private",
        /// The real home, read-only, minus the blocklist (needs `read_scope = "host"` to be read).
        ReadOnly = "read-only",
        /// An empty, read-only directory.
        Hidden = "hidden",
    }
}

named_enum! {
    /// Where a sandbox's network traffic may go.
    pub enum NetworkMode {
        /// Nothing: loopback inside the sandbox only.
        None = "none",
        /// Only through warden's egress proxy, to the allowed domains.
        Proxy = "proxy",
        /// The host's network, unfiltered. An explicit, loud opt-out of network isolation.
        Host = "host",
    }
}

/// The complete policy for one sandbox. Built from a profile, a policy file and flags, then
/// validated once with [`SandboxPolicy::validate`].
#[derive(Debug, Clone, PartialEq)]
pub struct SandboxPolicy {
    pub isolation: Isolation,
    pub filesystem: FilesystemPolicy,
    pub network: NetworkPolicy,
    pub resources: ResourceLimits,
    pub environment: EnvironmentPolicy,
}

#[derive(Debug, Clone, PartialEq)]
pub struct FilesystemPolicy {
    /// The read-write working tree. `None` means the directory warden is started in.
    pub workspace: Option<PathBuf>,
    pub read_scope: ReadScope,
    pub home: HomeMode,
    /// Extra paths visible read-only.
    pub read_only: Vec<PathBuf>,
    /// Extra paths visible read-write.
    pub read_write: Vec<PathBuf>,
    /// Extra paths never visible, on top of the built-in blocklist.
    pub hidden: Vec<PathBuf>,
    /// A directory to use as the root instead of the host's `/`.
    pub rootfs: Option<PathBuf>,
    /// Size of the sandbox's private /tmp (and private home).
    pub tmp_size: ByteSize,
}

#[derive(Debug, Clone, PartialEq)]
pub struct NetworkPolicy {
    pub mode: NetworkMode,
    /// Domains the egress proxy admits in `proxy` mode.
    pub allow_domains: Vec<DomainPattern>,
    /// Domains the proxy refuses even when an allow rule matches (deny wins).
    pub deny_domains: Vec<DomainPattern>,
    /// Ports the proxy connects to besides 80 and 443.
    pub allow_ports: Vec<u16>,
    /// Address ranges (CIDR) the proxy may reach although they are loopback, private,
    /// link-local, ... (checked by the proxy, which names the field on error).
    pub allow_cidrs: Vec<String>,
    /// Credential routes the proxy serves; any route turns `proxy` mode on.
    pub routes: Vec<crate::route::RouteSpec>,
}

/// Limits on what a sandbox may consume. `None` is unlimited.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct ResourceLimits {
    /// Memory, including the sandbox's tmpfs files (cgroup).
    pub memory: Option<ByteSize>,
    /// Processes and threads (cgroup).
    pub pids: Option<u32>,
    /// CPU time as a number of cores, e.g. 1.5 (cgroup).
    pub cpus: Option<f64>,
    /// Wall-clock time before the whole process tree is killed.
    pub timeout: Option<Duration>,
    /// Largest file a process may write (RLIMIT_FSIZE).
    pub file_size: Option<ByteSize>,
    /// Open file descriptors per process (RLIMIT_NOFILE).
    pub open_files: Option<u64>,
}

/// Bounds that make a limit possible to meet.
pub mod bounds {
    use crate::size::ByteSize;
    pub const MIN_MEMORY: ByteSize = ByteSize::mib(8);
    pub const MIN_PIDS: u32 = 2;
    pub const MAX_PIDS: u32 = 4_194_304;
    pub const MAX_CPUS: f64 = 4096.0;
    pub const MIN_CPUS: f64 = 0.01;
    pub const MIN_FILE_SIZE: ByteSize = ByteSize(1024);
    pub const MIN_OPEN_FILES: u64 = 8;
    pub const MAX_OPEN_FILES: u64 = 1 << 20;
    pub const MIN_TMP_SIZE: ByteSize = ByteSize::mib(1);
}

impl SandboxPolicy {
    /// Checks every field and reports all problems at once, each naming its field and what
    /// is allowed. Paths must already be absolute.
    pub fn validate(&self) -> Result<(), PolicyError> {
        let mut e = Errors::default();
        let fs = &self.filesystem;
        if let Some(ws) = &fs.workspace {
            check_path(&mut e, "filesystem.workspace", ws);
            if ws == Path::new("/") {
                e.push(
                    "filesystem.workspace",
                    "must not be `/`: the workspace is writable; choose a project directory",
                );
            }
        }
        for (field, list) in [
            ("filesystem.read_only", &fs.read_only),
            ("filesystem.read_write", &fs.read_write),
            ("filesystem.hidden", &fs.hidden),
        ] {
            for p in list {
                check_path(&mut e, field, p);
                if p == Path::new("/") && field != "filesystem.read_only" {
                    e.push(field, "must not contain `/`; name the directories you mean");
                }
            }
        }
        if let Some(root) = &fs.rootfs {
            check_path(&mut e, "filesystem.rootfs", root);
            if root == Path::new("/") {
                e.push(
                    "filesystem.rootfs",
                    "is `/`, which is the default; leave it unset",
                );
            }
            if self.isolation == Isolation::Pod {
                e.push(
                    "filesystem.rootfs",
                    "needs isolation = \"full\" (a pod has no mount namespace to change its root)",
                );
            }
        }
        if fs.tmp_size < bounds::MIN_TMP_SIZE {
            e.push(
                "filesystem.tmp_size",
                format!(
                    "must be at least {} (got {})",
                    bounds::MIN_TMP_SIZE,
                    fs.tmp_size
                ),
            );
        }

        let n = &self.network;
        for (field, unused) in [
            ("network.allow_domains", n.allow_domains.is_empty()),
            ("network.deny_domains", n.deny_domains.is_empty()),
            ("network.allow_ports", n.allow_ports.is_empty()),
            ("network.allow_cidrs", n.allow_cidrs.is_empty()),
            ("routes", n.routes.is_empty()),
        ] {
            if n.mode != NetworkMode::Proxy && !unused {
                e.push(
                    field,
                    format!(
                        "is only used with network mode \"proxy\" (the mode is \"{}\")",
                        n.mode
                    ),
                );
            }
        }
        let mut names: Vec<&str> = n.routes.iter().map(|r| r.name.as_str()).collect();
        names.sort_unstable();
        if let Some(w) = names.windows(2).find(|w| w[0] == w[1]) {
            e.push("routes", format!("route `{}` is defined twice", w[0]));
        }

        let r = &self.resources;
        if let Some(m) = r.memory
            && m < bounds::MIN_MEMORY
        {
            e.push(
                "resources.memory",
                format!(
                    "must be at least {} or \"unlimited\" (got {m})",
                    bounds::MIN_MEMORY
                ),
            );
        }
        if let Some(p) = r.pids
            && !(bounds::MIN_PIDS..=bounds::MAX_PIDS).contains(&p)
        {
            e.push(
                "resources.pids",
                format!(
                    "must be between {} and {} or \"unlimited\" (got {p})",
                    bounds::MIN_PIDS,
                    bounds::MAX_PIDS
                ),
            );
        }
        if let Some(c) = r.cpus
            && !(c.is_finite() && (bounds::MIN_CPUS..=bounds::MAX_CPUS).contains(&c))
        {
            e.push(
                "resources.cpus",
                format!(
                    "must be a number of cores between {} and {} or \"unlimited\" (got {c})",
                    bounds::MIN_CPUS,
                    bounds::MAX_CPUS
                ),
            );
        }
        if let Some(t) = r.timeout
            && t.is_zero()
        {
            e.push(
                "resources.timeout",
                "must be longer than zero, e.g. 30s or 10m, or \"unlimited\"",
            );
        }
        if let Some(f) = r.file_size
            && f < bounds::MIN_FILE_SIZE
        {
            e.push(
                "resources.file_size",
                format!(
                    "must be at least {} or \"unlimited\" (got {f})",
                    bounds::MIN_FILE_SIZE
                ),
            );
        }
        if let Some(n) = r.open_files
            && !(bounds::MIN_OPEN_FILES..=bounds::MAX_OPEN_FILES).contains(&n)
        {
            e.push(
                "resources.open_files",
                format!(
                    "must be between {} and {} or \"unlimited\" (got {n})",
                    bounds::MIN_OPEN_FILES,
                    bounds::MAX_OPEN_FILES
                ),
            );
        }

        for p in &self.environment.pass {
            let shown = p.to_string();
            if is_injection_variable(&shown) {
                e.push(
                    "environment.pass",
                    format!("`{shown}` changes how programs start (loader, shell or interpreter injection) and is never passed"),
                );
            }
        }
        for (name, value) in &self.environment.set {
            if !is_valid_name(name) {
                e.push("environment.set", format!("`{name}` is not a variable name (letters, digits and `_`, not starting with a digit)"));
            } else if is_injection_variable(name) {
                e.push(
                    "environment.set",
                    format!("`{name}` changes how programs start (loader, shell or interpreter injection); set it inside the command instead"),
                );
            }
            if value.contains('\0') {
                e.push(
                    "environment.set",
                    format!("the value of `{name}` contains a NUL byte"),
                );
            }
        }
        e.finish()
    }

    /// Checks the paths against the host's sensitive-path blocklist and home directory:
    /// nothing on the blocklist may be made visible, and the home directory (or `/`) may not be
    /// the workspace. `workspace` is the resolved workspace.
    pub fn validate_against_host(
        &self,
        workspace: &Path,
        home: &Path,
        blocklist: &[PathBuf],
    ) -> Result<(), PolicyError> {
        let mut e = Errors::default();
        let fs = &self.filesystem;
        if home != Path::new("/") && home.starts_with(workspace) {
            e.push(
                "filesystem.workspace",
                format!(
                    "`{}` contains the home directory `{}`; a writable home lets sandboxed code plant start-up files (~/.bashrc); use a project directory",
                    workspace.display(),
                    home.display()
                ),
            );
        }
        let workspace = [workspace.to_path_buf()];
        for (field, list) in [
            ("filesystem.workspace", &workspace[..]),
            ("filesystem.read_only", &fs.read_only),
            ("filesystem.read_write", &fs.read_write),
        ] {
            for p in list {
                if let Some(blocked) = blocklist::covering(blocklist, p) {
                    e.push(
                        field,
                        format!(
                            "`{}` is inside `{}`, which is on the sensitive-path blocklist and is never visible in a sandbox",
                            p.display(),
                            blocked.display()
                        ),
                    );
                }
            }
        }
        e.finish()
    }
}

fn check_path(e: &mut Errors, field: &str, path: &Path) {
    if !path.is_absolute() {
        e.push(
            field,
            format!("`{}` must be an absolute path", path.display()),
        );
    } else if path
        .components()
        .any(|c| matches!(c, Component::ParentDir | Component::CurDir))
    {
        e.push(
            field,
            format!("`{}` must be normalised (no `.` or `..`)", path.display()),
        );
    }
}

/// Joins `path` onto `base` (if relative) and expands a leading `~`, then removes `.` and
/// `..` lexically. Pure: symlinks are resolved later, by whoever touches the filesystem.
pub fn resolve_path(path: &Path, base: &Path, home: &Path) -> PathBuf {
    let joined = match path.strip_prefix("~") {
        Ok(rest) => home.join(rest),
        Err(_) => base.join(path),
    };
    let mut out = PathBuf::from("/");
    for c in joined.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::Normal(n) => out.push(n),
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Profile;

    fn fields(err: PolicyError) -> Vec<String> {
        err.errors.into_iter().map(|e| e.field).collect()
    }

    #[test]
    fn every_built_in_profile_is_valid() {
        for p in Profile::ALL {
            p.policy().validate().unwrap_or_else(|e| panic!("{p}: {e}"));
        }
    }

    #[test]
    fn impossible_limits_name_their_field() {
        type Case = (fn(&mut ResourceLimits), &'static str);
        let cases: Vec<Case> = vec![
            (|r| r.memory = Some(ByteSize(1024)), "resources.memory"),
            (|r| r.pids = Some(0), "resources.pids"),
            (|r| r.pids = Some(1), "resources.pids"),
            (|r| r.cpus = Some(0.0), "resources.cpus"),
            (|r| r.cpus = Some(f64::NAN), "resources.cpus"),
            (|r| r.cpus = Some(1e9), "resources.cpus"),
            (|r| r.timeout = Some(Duration::ZERO), "resources.timeout"),
            (|r| r.file_size = Some(ByteSize(10)), "resources.file_size"),
            (|r| r.open_files = Some(2), "resources.open_files"),
            (|r| r.open_files = Some(u64::MAX), "resources.open_files"),
        ];
        for (mutate, field) in cases {
            let mut p = Profile::Default.policy();
            mutate(&mut p.resources);
            let err = p.validate().unwrap_err();
            assert_eq!(fields(err.clone()), [field], "{err}");
            assert!(err.to_string().contains("unlimited"), "{err}");
        }
    }

    #[test]
    fn paths_must_be_absolute_and_normal() {
        let mut p = Profile::Default.policy();
        p.filesystem.workspace = Some("rel/dir".into());
        p.filesystem.read_only = vec!["/a/../b".into()];
        p.filesystem.read_write = vec!["/".into()];
        p.filesystem.hidden = vec!["/".into()];
        let err = p.validate().unwrap_err();
        assert_eq!(
            fields(err),
            [
                "filesystem.workspace",
                "filesystem.read_only",
                "filesystem.read_write",
                "filesystem.hidden"
            ]
        );
        p = Profile::Default.policy();
        p.filesystem.workspace = Some("/".into());
        assert_eq!(fields(p.validate().unwrap_err()), ["filesystem.workspace"]);
    }

    #[test]
    fn domains_need_proxy_mode_and_env_injection_is_refused() {
        let mut p = Profile::Default.policy();
        p.network.allow_domains = vec!["example.com".parse().unwrap()];
        p.environment.pass.push("LD_PRELOAD".parse().unwrap());
        p.environment.set.insert("BASH_ENV".into(), "/x".into());
        p.environment.set.insert("9X".into(), "1".into());
        assert_eq!(
            fields(p.validate().unwrap_err()),
            [
                "network.allow_domains",
                "environment.pass",
                "environment.set",
                "environment.set"
            ]
        );
    }

    #[test]
    fn host_checks_refuse_blocklisted_and_home_workspaces() {
        let home = Path::new("/home/u");
        let list = blocklist::expand(&[home.to_path_buf()]);
        let mut p = Profile::Default.policy();
        p.filesystem.read_only = vec!["/home/u/.ssh".into(), "/opt/tools".into()];
        p.filesystem.read_write = vec!["/home/u/.aws/cli".into()];
        let err = p
            .validate_against_host(Path::new("/home/u/src"), home, &list)
            .unwrap_err();
        assert_eq!(
            fields(err),
            ["filesystem.read_only", "filesystem.read_write"]
        );
        for ws in ["/home/u", "/home", "/root/project"] {
            let err = Profile::Default
                .policy()
                .validate_against_host(Path::new(ws), home, &list)
                .unwrap_err();
            assert_eq!(fields(err), ["filesystem.workspace"], "{ws}");
        }
        Profile::Default
            .policy()
            .validate_against_host(Path::new("/home/u/src/app"), home, &list)
            .unwrap();
    }

    #[test]
    fn resolves_paths_lexically() {
        let base = Path::new("/srv/app");
        let home = Path::new("/home/u");
        for (input, want) in [
            (".", "/srv/app"),
            ("data", "/srv/app/data"),
            ("../x", "/srv/x"),
            ("/abs/./y", "/abs/y"),
            ("~/cache", "/home/u/cache"),
            ("~", "/home/u"),
            ("/../..", "/"),
        ] {
            assert_eq!(
                resolve_path(Path::new(input), base, home),
                PathBuf::from(want),
                "{input}"
            );
        }
    }
}
