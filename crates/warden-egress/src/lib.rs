//! warden's L7 egress proxy: the only way out of a sandbox in proxy mode.
//!
//! Owns: the HTTP/1.1 forward proxy ([`Proxy`]: absolute-form requests and CONNECT tunnels),
//! the domain allowlist and its pure decision ([`EgressPolicy::decide`] → [`Verdict`]), the
//! screening of resolved addresses ([`screen_address`]: loopback, private, link-local, CGNAT,
//! metadata, ... refused unless a policy CIDR unlocks them), and one audit event per decision
//! ([`AuditEvent`], [`AuditSink`]).
//! Must never: connect to an address it has not screened (names are resolved once and the
//! checked address is the one dialled), look inside a tunnel, or let a request through when
//! the policy does not say so. No unsafe code.
//!
//! ```no_run
//! # async fn example() -> std::io::Result<()> {
//! use std::sync::Arc;
//! use warden_egress::{EgressPolicy, Proxy, ProxyOptions, WriterSink};
//!
//! let policy = EgressPolicy::new()
//!     .allow_domain("*.github.com")
//!     .and_then(|p| p.deny_domain("gist.github.com"))
//!     .expect("valid rules");
//! let audit = Arc::new(WriterSink::new(std::io::stderr()));
//! let proxy = Proxy::bind(
//!     "127.0.0.1:0".parse().unwrap(),
//!     policy,
//!     audit,
//!     ProxyOptions::new("sandbox-1"),
//! )
//! .await?;
//! println!("HTTPS_PROXY=http://{}", proxy.local_addr());
//! proxy.serve().await;
//! # Ok(())
//! # }
//! ```

#![forbid(unsafe_code)]

mod audit;
mod client;
mod credential;
mod forward;
mod host;
mod metrics;
mod policy;
mod proxy;
mod route;
mod screen;
mod token_exchange;
mod tunnel;
mod upstream;

pub use audit::{AuditEvent, AuditSink, ChannelSink, WriterSink, rfc3339};
pub use client::{ClientError, HttpClient};
pub use credential::{
    CredentialError, CredentialSource, EnvLookup, Secret, SecretFuture, StaticCredential,
    credential_source, read_secret,
};
pub use host::{HostError, TargetHost};
pub use metrics::{Metrics, MetricsSink, serve_admin};
pub use policy::{DEFAULT_PORTS, Decision, DomainRule, EgressPolicy, PolicyError, Verdict};
pub use proxy::{Proxy, ProxyHandle, ProxyOptions};
pub use route::{RouteError, Routes};
pub use screen::{AddressClass, Screening, classify, screen_address};
pub use token_exchange::TokenExchange;
pub use upstream::{
    Resolve, ResolveFuture, SystemResolver, UpstreamError, connect_upstream, permitted_addresses,
};
