//! warden's Linux isolation: everything between a validated [`SandboxPolicy`] and a command
//! running inside a sandbox.
//!
//! Owns: namespaces, the mount view, Landlock, seccomp, capabilities, cgroups, rlimits, the
//! spawn that applies them in order, and the supervision of the sandboxed process tree.
//! Must never: weaken a layer silently. A layer the policy needs either holds, or the sandbox
//! refuses to start unless the caller named that layer in [`Degraded`]; every sandbox reports
//! what it enforced. This is the one crate with `unsafe` (system calls, in `sys`).
//!
//! [`SandboxPolicy`]: warden_policy::SandboxPolicy

mod bpf;
pub mod cgroup;
pub mod child;
pub mod host;
mod jail;
pub mod landlock;
mod layer;
pub mod mounts;
mod netns;
pub mod seccomp;
pub mod spawn;
pub mod sys;

pub use jail::{
    Cleanup, EgressBridge, Jail, JailConfig, JailError, Outcome, SYSTEM_DIRS, Termination,
};
pub use layer::{Degraded, Layer, LayerReport, LayerStatus, UnknownLayer, render_table};
