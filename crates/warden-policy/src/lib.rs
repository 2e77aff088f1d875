//! warden's sandbox policy: what a sandboxed command may see, reach and consume.
//!
//! Owns: [`SandboxPolicy`] and its parts, the built-in [`Profile`]s, the policy file format
//! ([`PolicyFile`], TOML), validation with errors that name the field and the allowed values,
//! the sensitive-path [`blocklist`], environment sanitising ([`EnvironmentPolicy`]) and the
//! description of credential [`route`]s, and the header contract of the agent-sandbox router
//! ([`sandbox_router`]) that `warden serve` and `warden router` both serve.
//! Must never: touch the filesystem, the network or processes. Enforcement is `warden-jail`'s.

pub mod blocklist;
mod domain;
mod env;
mod error;
mod file;
mod names;
mod policy;
mod profile;
pub mod route;
pub mod sandbox_router;
mod size;

pub use domain::{DomainError, DomainPattern};
pub use env::{DEFAULT_PASS, EnvPattern, EnvironmentPolicy, is_injection_variable};
pub use error::{FieldError, PolicyError};
pub use file::PolicyFile;
pub use names::{UnknownName, is_dns_label};
pub use policy::{
    FilesystemPolicy, HomeMode, Isolation, NetworkMode, NetworkPolicy, ReadScope, ResourceLimits,
    SandboxPolicy, bounds, resolve_path,
};
pub use profile::Profile;
pub use route::{
    AuthScheme, CREDENTIAL_PLACEHOLDER, CredentialSpec, RouteKind, RouteSpec, RouteView,
    TokenExchangeSpec, proxy_environment,
};
pub use size::{ByteSize, SizeError};
