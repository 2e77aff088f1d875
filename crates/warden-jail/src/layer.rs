//! The isolation layers a sandbox is built from, and what happened to each.

use std::collections::BTreeSet;
use std::fmt;
use std::str::FromStr;

use serde::Serialize;

macro_rules! layers {
    ($($variant:ident = $name:literal: $what:literal,)+) => {
        /// One isolation mechanism. Names are what `--allow-degraded` accepts.
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
        pub enum Layer { $($variant,)+ }

        impl Layer {
            pub const ALL: &'static [Layer] = &[$(Layer::$variant,)+];
            pub const fn name(self) -> &'static str {
                match self { $(Layer::$variant => $name,)+ }
            }
            /// What the layer stops, in a few words.
            pub const fn purpose(self) -> &'static str {
                match self { $(Layer::$variant => $what,)+ }
            }
        }
    };
}

layers! {
    UserNamespace = "user-namespace": "no host privileges; ids mapped to the invoking user",
    PidNamespace = "pid-namespace": "host processes invisible and unreachable; own /proc",
    MountNamespace = "mount-namespace": "read-only root, private /tmp and /dev, blocklist masked",
    NetworkNamespace = "network-namespace": "no host network: loopback only",
    IpcNamespace = "ipc-namespace": "no host System V IPC or POSIX queues",
    UtsNamespace = "uts-namespace": "own hostname",
    Capabilities = "capabilities": "every capability dropped, bounding set emptied",
    NoNewPrivs = "no-new-privs": "setuid and file capabilities cannot raise privileges",
    LandlockFs = "landlock-fs": "filesystem allowlist enforced by the kernel",
    LandlockNet = "landlock-net": "TCP bind and connect denied",
    LandlockScope = "landlock-scope": "no signals or abstract unix sockets outside the sandbox",
    Seccomp = "seccomp": "dangerous system calls denied (mount, ptrace, bpf, io_uring, ...)",
    CgroupMemory = "cgroup-memory": "memory limit",
    CgroupPids = "cgroup-pids": "process limit (fork bombs)",
    CgroupCpu = "cgroup-cpu": "CPU limit",
    Rlimits = "rlimits": "file size, open files, no core dumps",
    DieWithParent = "die-with-parent": "the sandbox dies when warden dies",
}

/// Layer groups accepted by `--allow-degraded` besides single layer names.
const GROUPS: &[(&str, &[Layer])] = &[
    (
        "namespaces",
        &[
            Layer::UserNamespace,
            Layer::PidNamespace,
            Layer::MountNamespace,
            Layer::NetworkNamespace,
            Layer::IpcNamespace,
            Layer::UtsNamespace,
        ],
    ),
    (
        "landlock",
        &[Layer::LandlockFs, Layer::LandlockNet, Layer::LandlockScope],
    ),
    (
        "cgroups",
        &[Layer::CgroupMemory, Layer::CgroupPids, Layer::CgroupCpu],
    ),
];

impl Layer {
    pub const NAMESPACES: &'static [Layer] = GROUPS[0].1;
    /// Landlock's layers (the `landlock` group): all that pod isolation can run without.
    pub const LANDLOCK: &'static [Layer] = GROUPS[1].1;

    /// Parses a layer or group name into the layers it covers.
    pub fn parse_set(name: &str) -> Result<Vec<Layer>, UnknownLayer> {
        if let Some((_, layers)) = GROUPS.iter().find(|(g, _)| *g == name) {
            return Ok(layers.to_vec());
        }
        name.parse().map(|l| vec![l])
    }

    /// Every name `--allow-degraded` accepts.
    pub fn accepted_names() -> Vec<&'static str> {
        GROUPS
            .iter()
            .map(|(g, _)| *g)
            .chain(Layer::ALL.iter().map(|l| l.name()))
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown layer `{0}`; allowed values: {list}", list = Layer::accepted_names().join(", "))]
pub struct UnknownLayer(pub String);

impl FromStr for Layer {
    type Err = UnknownLayer;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Layer::ALL
            .iter()
            .copied()
            .find(|l| l.name() == s)
            .ok_or_else(|| UnknownLayer(s.to_string()))
    }
}

impl fmt::Display for Layer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl Serialize for Layer {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.name())
    }
}

/// What happened to one layer in one sandbox (or what a host can do, for `doctor`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "status", rename_all = "kebab-case")]
pub enum LayerStatus {
    /// Applied. `detail` says how (e.g. the Landlock ABI, the cgroup version).
    Enforced { detail: String },
    /// The policy does not ask for it (e.g. no memory limit set).
    NotRequested { detail: String },
    /// Wanted but not possible here; the sandbox runs without it only if allowed.
    Unavailable { reason: String },
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct LayerReport {
    pub layer: Layer,
    #[serde(flatten)]
    pub status: LayerStatus,
}

impl LayerReport {
    pub fn enforced(layer: Layer, detail: impl Into<String>) -> Self {
        LayerReport {
            layer,
            status: LayerStatus::Enforced {
                detail: detail.into(),
            },
        }
    }
    pub fn not_requested(layer: Layer, detail: impl Into<String>) -> Self {
        LayerReport {
            layer,
            status: LayerStatus::NotRequested {
                detail: detail.into(),
            },
        }
    }
    pub fn unavailable(layer: Layer, reason: impl Into<String>) -> Self {
        LayerReport {
            layer,
            status: LayerStatus::Unavailable {
                reason: reason.into(),
            },
        }
    }
    pub fn is_enforced(&self) -> bool {
        matches!(self.status, LayerStatus::Enforced { .. })
    }
}

/// The layers that may be missing without refusing to run.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Degraded(BTreeSet<Layer>);

impl Degraded {
    pub fn none() -> Self {
        Degraded::default()
    }
    pub fn allow(&mut self, layers: impl IntoIterator<Item = Layer>) {
        self.0.extend(layers);
    }
    pub fn allows(&self, layer: Layer) -> bool {
        self.0.contains(&layer)
    }
    pub fn all() -> Self {
        Degraded(Layer::ALL.iter().copied().collect())
    }
}

/// Renders reports as an aligned table, one layer a line.
pub fn render_table(reports: &[LayerReport]) -> String {
    let mut out = String::new();
    for r in reports {
        let (mark, text) = match &r.status {
            LayerStatus::Enforced { detail } => ("enforced", detail.as_str()),
            LayerStatus::NotRequested { detail } => ("not requested", detail.as_str()),
            LayerStatus::Unavailable { reason } => ("UNAVAILABLE", reason.as_str()),
        };
        out.push_str(&format!("  {:<18} {:<13} {}\n", r.layer.name(), mark, text));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip_and_groups_expand() {
        for l in Layer::ALL {
            assert_eq!(l.name().parse::<Layer>(), Ok(*l));
        }
        assert_eq!(Layer::parse_set("namespaces").unwrap().len(), 6);
        assert_eq!(Layer::parse_set("landlock").unwrap(), Layer::LANDLOCK);
        assert_eq!(Layer::parse_set("seccomp").unwrap(), [Layer::Seccomp]);
        let err = Layer::parse_set("selinux").unwrap_err().to_string();
        assert!(
            err.contains("landlock-fs") && err.contains("namespaces"),
            "{err}"
        );
    }
}
