//! `warden sandboxd`: the runtime server inside a sandbox or pod.
//!
//! Owns: the protocols a sandbox answers (legacy REST, sandboxd REST and gRPC, warden's exec
//! extension), file access confined to the workspace, and the processes it starts.
//! Must never: start a child that is not jailed (inherited from a warden jail, or jailed in
//! pod mode by itself), or touch a path outside its root.

pub mod client;
pub mod error;
pub mod exec;
pub mod fs;
pub mod grpc;
pub mod http;
#[allow(missing_debug_implementations, unused_qualifications, clippy::all)]
pub mod process_v1;
pub mod proto;
pub mod server;
pub mod state;

use std::sync::Arc;

pub use state::{Sandboxd, State};

/// The whole server: every HTTP protocol and the gRPC process service, in one router, so a
/// single listener (a unix socket, say) carries everything.
pub fn app(state: Arc<Sandboxd>) -> axum::Router {
    let grpc = tonic::service::Routes::new(grpc::service(state.clone())).into_axum_router();
    http::routes(state).merge(grpc)
}
