//! The control plane behind `warden serve`.
//!
//! Owns: the HTTP API (sandboxes, templates, pools, exec, files, events, the router
//! contract), bearer-token auth, the embedded store, metrics.
//! Must never: answer an unauthenticated request on a non-loopback address, or lose track of
//! a sandbox across a restart.
