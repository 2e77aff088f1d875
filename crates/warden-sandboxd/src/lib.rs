//! `warden sandboxd`: the runtime server inside a sandbox or pod.
//!
//! Owns: the protocols a sandbox answers (legacy REST, sandboxd REST and gRPC, warden's exec
//! extension), file access confined to the workspace, and the processes it starts.
//! Must never: start a child that is not jailed (inherited from a warden jail, or jailed in
//! pod mode by itself), or touch a path outside its root.

pub mod proto;
