//! warden on Kubernetes.
//!
//! Owns: the kubernetes-sigs/agent-sandbox v1beta1 API as Rust types ([`crd`]): `Sandbox`
//! (`agents.x-k8s.io`) and `SandboxTemplate`, `SandboxClaim`, `SandboxWarmPool`
//! (`extensions.agents.x-k8s.io`), their condition types and reasons, labels and annotations,
//! the sandbox name hash, and the CRD manifests generated from the types (committed under
//! `deploy/crds/`).
//! Must never: drift from upstream's wire format. A manifest written for upstream v1.0 reads
//! into these types unchanged, and what they write upstream's controller reads.

pub mod controller;
pub mod crd;
pub mod driver;
pub mod harden;
pub mod reconcile;
pub mod router;
pub mod testing;
