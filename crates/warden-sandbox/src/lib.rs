//! Sandbox lifecycle for `warden serve`.
//!
//! Owns: the [`Driver`] trait and the local driver: persistent jails, templates, warm pools,
//! shutdown times and idle timeouts, suspend and resume.
//! Must never: hand out a sandbox that another owner holds, or leave a sandbox's processes,
//! cgroups or directories behind when it ends.

pub mod driver;
pub mod local;
pub mod names;
pub mod plan;
pub mod store;
pub mod template;

pub use driver::{
    ByteStream, ClaimRequest, CreateRequest, Driver, DriverError, Endpoint, ExecSession, Launch,
    Phase, PoolSpec, PoolStatus, RuntimeConn, RuntimeRoute, SandboxEvent, SandboxInfo,
    SandboxRecord, SandboxStore, StdinMsg, StreamItem, Template,
};
pub use local::runtime::relay_exec_stream;
pub use local::{LocalConfig, LocalDriver, LocalRuntime};
pub use store::MemoryStore;
