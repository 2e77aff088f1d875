//! The policy file format (TOML). Every table and key is optional; what is given replaces the
//! value of the base profile (lists included). Unknown keys are errors.
//!
//! ```toml
//! profile = "default"            # the base: default, offline, read-anywhere, pod
//! isolation = "full"             # full | pod
//!
//! [filesystem]
//! workspace = "."                # relative paths are relative to this file
//! read_scope = "system"          # system | host
//! home = "private"               # private | read-only | hidden
//! read_only = ["~/.cargo/registry"]
//! read_write = []
//! hidden = ["secrets.env"]
//! tmp_size = "1G"
//!
//! [network]
//! mode = "none"                  # none | proxy | host
//! allow_domains = []             # with mode = "proxy": "example.com", "*.example.com"
//! deny_domains = []              # refused even when allowed (deny wins)
//! allow_ports = []               # besides 80 and 443
//! allow_cidrs = []               # private ranges the proxy may reach, e.g. "10.1.0.0/16"
//!
//! [routes.anthropic]             # credential routes; a route turns mode "proxy" on
//! upstream = "https://api.anthropic.com"        # default for the built-in kind
//! credential = { env = "ANTHROPIC_API_KEY" }    # or { file = "..." } or { token_exchange = {...} }
//!
//! [resources]                    # each also accepts "unlimited"
//! memory = "4G"
//! pids = 1024
//! cpus = 1.5
//! timeout = "30m"
//! file_size = "16G"
//! open_files = 8192
//!
//! [environment]
//! pass = ["PATH", "TERM", "LANG", "LC_*"]
//! set = { RUST_BACKTRACE = "1" }
//! ```

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use crate::domain::DomainPattern;
use crate::env::EnvPattern;
use crate::error::{Errors, PolicyError};
use crate::policy::{HomeMode, Isolation, NetworkMode, ReadScope, SandboxPolicy, resolve_path};
use crate::profile::Profile;
use crate::route::RouteFile;
use crate::size::ByteSize;

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyFile {
    pub profile: Option<Profile>,
    pub isolation: Option<Isolation>,
    #[serde(default)]
    pub filesystem: FilesystemFile,
    #[serde(default)]
    pub network: NetworkFile,
    #[serde(default)]
    pub resources: ResourcesFile,
    #[serde(default)]
    pub environment: EnvironmentFile,
    #[serde(default)]
    pub routes: BTreeMap<String, RouteFile>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FilesystemFile {
    pub workspace: Option<PathBuf>,
    pub read_scope: Option<ReadScope>,
    pub home: Option<HomeMode>,
    pub read_only: Option<Vec<PathBuf>>,
    pub read_write: Option<Vec<PathBuf>>,
    pub hidden: Option<Vec<PathBuf>>,
    pub rootfs: Option<PathBuf>,
    pub tmp_size: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NetworkFile {
    pub mode: Option<NetworkMode>,
    pub allow_domains: Option<Vec<String>>,
    pub deny_domains: Option<Vec<String>>,
    pub allow_ports: Option<Vec<u16>>,
    pub allow_cidrs: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ResourcesFile {
    pub memory: Option<Scalar>,
    pub pids: Option<Scalar>,
    pub cpus: Option<Scalar>,
    pub timeout: Option<Scalar>,
    pub file_size: Option<Scalar>,
    pub open_files: Option<Scalar>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnvironmentFile {
    pub pass: Option<Vec<String>>,
    pub set: Option<BTreeMap<String, String>>,
}

/// A number or a string, converted per field so that errors can name the field.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
pub enum Scalar {
    Int(i64),
    Float(f64),
    Str(String),
}

const UNLIMITED: &str = "unlimited";

impl PolicyFile {
    /// Parses TOML. Syntax errors and unknown keys are reported with their line and the
    /// keys that are allowed.
    pub fn from_toml(text: &str) -> Result<PolicyFile, PolicyError> {
        toml::from_str(text).map_err(|e| {
            let mut msg = e.message().to_string();
            if let Some(span) = e.span() {
                let line = text[..span.start.min(text.len())].matches('\n').count() + 1;
                msg = format!("line {line}: {msg}");
            }
            PolicyError::new("policy file", msg)
        })
    }

    /// Applies this file on top of its base profile (or `fallback` when it names none).
    /// Relative paths are resolved against `base_dir` and `~` against `home`.
    pub fn apply(
        self,
        fallback: Profile,
        base_dir: &Path,
        home: &Path,
    ) -> Result<SandboxPolicy, PolicyError> {
        let profile = self.profile.unwrap_or(fallback);
        let mut p = profile.policy();
        let mut e = Errors::default();
        let resolve = |v: Vec<PathBuf>| {
            v.into_iter()
                .map(|x| resolve_path(&x, base_dir, home))
                .collect::<Vec<_>>()
        };

        if let Some(i) = self.isolation {
            p.isolation = i;
        }
        let f = self.filesystem;
        if let Some(ws) = f.workspace {
            p.filesystem.workspace = Some(resolve_path(&ws, base_dir, home));
        }
        if let Some(v) = f.read_scope {
            p.filesystem.read_scope = v;
        }
        if let Some(v) = f.home {
            p.filesystem.home = v;
        }
        if let Some(v) = f.read_only {
            p.filesystem.read_only = resolve(v);
        }
        if let Some(v) = f.read_write {
            p.filesystem.read_write = resolve(v);
        }
        if let Some(v) = f.hidden {
            p.filesystem.hidden = resolve(v);
        }
        if let Some(v) = f.rootfs {
            p.filesystem.rootfs = Some(resolve_path(&v, base_dir, home));
        }
        if let Some(v) = f.tmp_size {
            match v.size("filesystem.tmp_size", &mut e) {
                Some(Some(s)) => p.filesystem.tmp_size = s,
                Some(None) => e.push(
                    "filesystem.tmp_size",
                    "cannot be \"unlimited\"; give a size such as 1G",
                ),
                None => {}
            }
        }

        if let Some(mode) = self.network.mode {
            p.network.mode = mode;
        }
        let mut domains = |list: Vec<String>, field: &str| -> Vec<DomainPattern> {
            list.iter()
                .filter_map(|d| {
                    d.parse::<DomainPattern>()
                        .map_err(|err| e.push(field, err.to_string()))
                        .ok()
                })
                .collect()
        };
        if let Some(list) = self.network.allow_domains {
            p.network.allow_domains = domains(list, "network.allow_domains");
        }
        if let Some(list) = self.network.deny_domains {
            p.network.deny_domains = domains(list, "network.deny_domains");
        }
        if let Some(ports) = self.network.allow_ports {
            if ports.contains(&0) {
                e.push("network.allow_ports", "0 is not a port; give 1 to 65535");
            }
            p.network.allow_ports = ports;
        }
        if let Some(cidrs) = self.network.allow_cidrs {
            p.network.allow_cidrs = cidrs;
        }
        for (name, route) in self.routes {
            match route.resolve(&name, &format!("routes.{name}")) {
                Ok(mut spec) => {
                    spec.map_paths(|path| resolve_path(path, base_dir, home));
                    p.network.routes.push(spec);
                }
                Err(err) => {
                    for f in err.errors {
                        e.push(f.field, f.message);
                    }
                }
            }
        }
        if !p.network.routes.is_empty() {
            if p.network.mode == NetworkMode::Host {
                e.push(
                    "routes",
                    "credential routes need network mode \"proxy\"; mode \"host\" has no proxy",
                );
            }
            if profile == Profile::Offline {
                e.push(
                    "routes",
                    "profile \"offline\" never has network; use profile \"default\" for credential routes",
                );
            }
            if p.network.mode == NetworkMode::None {
                p.network.mode = NetworkMode::Proxy;
            }
        }

        let r = self.resources;
        if let Some(v) = r.memory
            && let Some(s) = v.size("resources.memory", &mut e)
        {
            p.resources.memory = s;
        }
        if let Some(v) = r.file_size
            && let Some(s) = v.size("resources.file_size", &mut e)
        {
            p.resources.file_size = s;
        }
        if let Some(v) = r.pids
            && let Some(n) = v.count("resources.pids", &mut e)
        {
            p.resources.pids = n.map(|n| u32::try_from(n).unwrap_or(u32::MAX));
        }
        if let Some(v) = r.open_files
            && let Some(n) = v.count("resources.open_files", &mut e)
        {
            p.resources.open_files = n;
        }
        if let Some(v) = r.cpus
            && let Some(c) = v.cpus("resources.cpus", &mut e)
        {
            p.resources.cpus = c;
        }
        if let Some(v) = r.timeout
            && let Some(t) = v.duration("resources.timeout", &mut e)
        {
            p.resources.timeout = t;
        }

        if let Some(pass) = self.environment.pass {
            p.environment.pass = pass
                .iter()
                .filter_map(|s| {
                    s.parse::<EnvPattern>()
                        .map_err(|err| e.push("environment.pass", err.to_string()))
                        .ok()
                })
                .collect();
        }
        if let Some(set) = self.environment.set {
            p.environment.set = set;
        }
        e.finish()?;
        Ok(p)
    }
}

/// `Some(None)` is "unlimited", `None` is an error already recorded.
type Parsed<T> = Option<Option<T>>;

impl Scalar {
    fn unlimited(&self) -> bool {
        matches!(self, Scalar::Str(s) if s == UNLIMITED)
    }

    fn size(&self, field: &str, e: &mut Errors) -> Parsed<ByteSize> {
        match self {
            _ if self.unlimited() => Some(None),
            Scalar::Int(n) if *n >= 0 => Some(Some(ByteSize(*n as u64))),
            Scalar::Str(s) => match s.parse() {
                Ok(v) => Some(Some(v)),
                Err(err) => {
                    e.push(field, format!("{err}, or \"{UNLIMITED}\""));
                    None
                }
            },
            _ => {
                e.push(field, "must be a size such as \"512M\" or \"2G\", a number of bytes, or \"unlimited\"");
                None
            }
        }
    }

    fn count(&self, field: &str, e: &mut Errors) -> Parsed<u64> {
        match self {
            _ if self.unlimited() => Some(None),
            Scalar::Int(n) if *n >= 0 => Some(Some(*n as u64)),
            _ => {
                e.push(
                    field,
                    "must be a whole number of at least 0, or \"unlimited\"",
                );
                None
            }
        }
    }

    fn cpus(&self, field: &str, e: &mut Errors) -> Parsed<f64> {
        match self {
            _ if self.unlimited() => Some(None),
            Scalar::Int(n) => Some(Some(*n as f64)),
            Scalar::Float(f) => Some(Some(*f)),
            Scalar::Str(s) => match s.parse::<f64>() {
                Ok(f) => Some(Some(f)),
                Err(_) => {
                    e.push(
                        field,
                        format!("`{s}` must be a number of cores such as 1.5, or \"unlimited\""),
                    );
                    None
                }
            },
        }
    }

    fn duration(&self, field: &str, e: &mut Errors) -> Parsed<Duration> {
        match self {
            _ if self.unlimited() => Some(None),
            Scalar::Int(n) if *n >= 0 => Some(Some(Duration::from_secs(*n as u64))),
            Scalar::Str(s) => match humantime::parse_duration(s) {
                Ok(d) => Some(Some(d)),
                Err(err) => {
                    e.push(field, format!("`{s}` is not a duration ({err}); write e.g. 30s, 10m, 1h30m, or \"unlimited\""));
                    None
                }
            },
            _ => {
                e.push(field, "must be a duration such as \"30s\" or \"10m\", a number of seconds, or \"unlimited\"");
                None
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(text: &str) -> Result<SandboxPolicy, PolicyError> {
        PolicyFile::from_toml(text)?.apply(
            Profile::Default,
            Path::new("/srv/app"),
            Path::new("/home/u"),
        )
    }

    #[test]
    fn an_empty_file_is_the_default_profile() {
        assert_eq!(apply("").unwrap(), Profile::Default.policy());
    }

    #[test]
    fn a_full_file_sets_every_field() {
        let p = apply(
            r#"
            profile = "read-anywhere"
            isolation = "pod"
            [filesystem]
            workspace = "."
            read_scope = "system"
            home = "hidden"
            read_only = ["~/.cargo/registry", "/opt/sdk"]
            read_write = ["cache"]
            hidden = ["secrets.env"]
            tmp_size = "256M"
            [network]
            mode = "proxy"
            allow_domains = ["Example.com.", "*.github.com"]
            [resources]
            memory = "512M"
            pids = 64
            cpus = 1.5
            timeout = "1m 30s"
            file_size = 1048576
            open_files = "unlimited"
            [environment]
            pass = ["PATH", "LC_*"]
            set = { RUST_BACKTRACE = "1" }
            "#,
        )
        .unwrap();
        assert_eq!(p.isolation, Isolation::Pod);
        assert_eq!(
            p.filesystem.workspace.as_deref(),
            Some(Path::new("/srv/app"))
        );
        assert_eq!(p.filesystem.read_scope, ReadScope::System);
        assert_eq!(p.filesystem.home, HomeMode::Hidden);
        assert_eq!(
            p.filesystem.read_only,
            [
                PathBuf::from("/home/u/.cargo/registry"),
                PathBuf::from("/opt/sdk")
            ]
        );
        assert_eq!(p.filesystem.read_write, [PathBuf::from("/srv/app/cache")]);
        assert_eq!(p.filesystem.hidden, [PathBuf::from("/srv/app/secrets.env")]);
        assert_eq!(p.filesystem.tmp_size, ByteSize::mib(256));
        assert_eq!(p.network.mode, NetworkMode::Proxy);
        assert_eq!(p.network.allow_domains.len(), 2);
        assert_eq!(p.network.allow_domains[0].to_string(), "example.com");
        assert_eq!(p.resources.memory, Some(ByteSize::mib(512)));
        assert_eq!(p.resources.pids, Some(64));
        assert_eq!(p.resources.cpus, Some(1.5));
        assert_eq!(p.resources.timeout, Some(Duration::from_secs(90)));
        assert_eq!(p.resources.file_size, Some(ByteSize::mib(1)));
        assert_eq!(p.resources.open_files, None);
        assert_eq!(p.environment.pass.len(), 2);
        assert_eq!(p.environment.set["RUST_BACKTRACE"], "1");
        p.validate().unwrap();
    }

    #[test]
    fn unknown_keys_are_refused_with_the_allowed_ones() {
        let err = apply("[filesystem]\nwritable = [\"/x\"]\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field `writable`"), "{err}");
        assert!(err.contains("read_write"), "{err}");
        assert!(err.contains("line 2"), "{err}");
        let err = apply("colour = 1").unwrap_err().to_string();
        assert!(err.contains("unknown field `colour`"), "{err}");
    }

    #[test]
    fn bad_values_name_field_and_allowed_values() {
        let cases = [
            ("profile = \"paranoid\"", "read-anywhere"),
            ("isolation = \"vm\"", "full, pod"),
            ("[network]\nmode = \"open\"", "none, proxy, host"),
            (
                "[filesystem]\nhome = \"shared\"",
                "private, read-only, hidden",
            ),
            ("[resources]\nmemory = \"lots\"", "resources.memory"),
            ("[resources]\nmemory = -1", "resources.memory"),
            ("[resources]\npids = 1.5", "resources.pids"),
            ("[resources]\ntimeout = \"soon\"", "resources.timeout"),
            ("[resources]\ncpus = \"many\"", "resources.cpus"),
            (
                "[filesystem]\ntmp_size = \"unlimited\"",
                "filesystem.tmp_size",
            ),
            (
                "[network]\nallow_domains = [\"exa mple.com\"]",
                "network.allow_domains",
            ),
            ("[environment]\npass = [\"A-B\"]", "environment.pass"),
            ("[resources\nmemory = 1", "line 1"),
        ];
        for (text, want) in cases {
            let err = apply(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn several_problems_are_reported_together() {
        let err = apply("[resources]\nmemory = \"x\"\npids = \"y\"\ntimeout = \"z\"").unwrap_err();
        assert_eq!(err.errors.len(), 3, "{err}");
    }
}
