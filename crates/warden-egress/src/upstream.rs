//! Reaching an admitted upstream: resolve the name once, screen every address, connect to an
//! address that passed. Owns the rule that the proxy connects to exactly the address it
//! checked (a `SocketAddr`, never the name again), which is what defeats DNS rebinding. The
//! resolver is a small seam ([`Resolve`]) so tests and a future DNS stub can stand in for it.

use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::time::Duration;

use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::host::TargetHost;
use crate::policy::EgressPolicy;
use crate::screen::{AddressClass, Screening};

/// The future a [`Resolve`] implementation returns.
pub type ResolveFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>>;

/// Turns a host name into socket addresses. The proxy calls it once per request.
pub trait Resolve: Send + Sync + 'static {
    fn resolve<'a>(&'a self, name: &'a str, port: u16) -> ResolveFuture<'a>;
}

/// The system resolver (`getaddrinfo`, through `tokio::net::lookup_host`).
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemResolver;

impl Resolve for SystemResolver {
    fn resolve<'a>(&'a self, name: &'a str, port: u16) -> ResolveFuture<'a> {
        Box::pin(async move { Ok(tokio::net::lookup_host((name, port)).await?.collect()) })
    }
}

impl fmt::Debug for dyn Resolve {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("dyn Resolve")
    }
}

/// Why no upstream connection was made.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// Every address the name resolved to is special-purpose and not unlocked by the policy.
    #[error("{ip} is {}", .class.describe())]
    Refused { ip: IpAddr, class: AddressClass },
    #[error("could not resolve the name: {0}")]
    Resolve(#[source] io::Error),
    #[error("the name resolved to no address")]
    NoAddresses,
    #[error("resolving and connecting took longer than {0:?}")]
    Timeout(Duration),
    #[error("could not connect to {addr}: {source}")]
    Connect {
        addr: SocketAddr,
        #[source]
        source: io::Error,
    },
}

/// The resolved addresses the policy lets the proxy connect to, in resolver order, without
/// duplicates. If none is permitted, the refusal of the first one.
pub fn permitted_addresses(
    policy: &EgressPolicy,
    resolved: impl IntoIterator<Item = SocketAddr>,
) -> Result<Vec<SocketAddr>, UpstreamError> {
    let mut permitted = Vec::new();
    let mut first_refusal = None;
    for addr in resolved {
        match policy.screen(addr.ip()) {
            Screening::Refused { class } => {
                first_refusal.get_or_insert(UpstreamError::Refused {
                    ip: addr.ip(),
                    class,
                });
            }
            Screening::Public | Screening::Unlocked { .. } => {
                if !permitted.contains(&addr) {
                    permitted.push(addr);
                }
            }
        }
    }
    if permitted.is_empty() {
        return Err(first_refusal.unwrap_or(UpstreamError::NoAddresses));
    }
    Ok(permitted)
}

/// Resolves `host` once with `resolver` (an IP literal is not resolved), screens the
/// addresses, and connects to the first permitted one that answers, all within `limit`.
/// Returns the stream and the address it is connected to.
pub async fn connect_upstream(
    policy: &EgressPolicy,
    resolver: &dyn Resolve,
    host: &TargetHost,
    port: u16,
    limit: Duration,
) -> Result<(TcpStream, SocketAddr), UpstreamError> {
    let deadline = Instant::now() + limit;
    let resolved: Vec<SocketAddr> = match host {
        TargetHost::Ip(ip) => vec![SocketAddr::new(*ip, port)],
        TargetHost::Name(name) => timeout_at(deadline, resolver.resolve(name, port))
            .await
            .map_err(|_| UpstreamError::Timeout(limit))?
            .map_err(UpstreamError::Resolve)?,
    };
    let candidates = permitted_addresses(policy, resolved)?;
    let mut last_error = UpstreamError::NoAddresses;
    for addr in candidates {
        match timeout_at(deadline, TcpStream::connect(addr)).await {
            Ok(Ok(stream)) => {
                // Latency matters more than packet count for a proxy; failure is harmless.
                let _ = stream.set_nodelay(true);
                return Ok((stream, addr));
            }
            Ok(Err(source)) => last_error = UpstreamError::Connect { addr, source },
            Err(_) => return Err(UpstreamError::Timeout(limit)),
        }
    }
    Err(last_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};

    fn addrs(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn keeps_only_screened_addresses_in_order() {
        let policy = EgressPolicy::new().allow_cidr("10.5.0.0/16").unwrap();
        let got = permitted_addresses(
            &policy,
            addrs(&[
                "127.0.0.1:443",
                "93.184.215.14:443",
                "10.5.0.1:443",
                "10.6.0.1:443",
                "93.184.215.14:443",
                "[2606:4700::1]:443",
            ]),
        )
        .unwrap();
        assert_eq!(
            got,
            addrs(&["93.184.215.14:443", "10.5.0.1:443", "[2606:4700::1]:443"])
        );
    }

    #[test]
    fn all_refused_reports_the_first_refusal() {
        let policy = EgressPolicy::new();
        let err = permitted_addresses(
            &policy,
            addrs(&["[::ffff:169.254.169.254]:80", "127.0.0.1:80"]),
        )
        .unwrap_err();
        match err {
            UpstreamError::Refused { ip, class } => {
                assert_eq!(ip, "::ffff:169.254.169.254".parse::<IpAddr>().unwrap());
                assert_eq!(class, AddressClass::Metadata);
            }
            other => panic!("unexpected {other:?}"),
        }
        assert!(matches!(
            permitted_addresses(&policy, []),
            Err(UpstreamError::NoAddresses)
        ));
    }

    #[tokio::test]
    async fn refuses_before_connecting() {
        // Nothing listens on 127.0.0.1:9; a refusal proves no connection was attempted.
        let policy = EgressPolicy::new();
        let host = TargetHost::parse("127.0.0.1").unwrap();
        let err = connect_upstream(&policy, &SystemResolver, &host, 9, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                UpstreamError::Refused {
                    class: AddressClass::Loopback,
                    ..
                }
            ),
            "{err:?}"
        );
    }

    /// Answers with a different address on every call, as a rebinding DNS server would.
    struct Rebinding {
        answers: Vec<SocketAddr>,
        calls: AtomicUsize,
    }

    impl Resolve for Rebinding {
        fn resolve<'a>(&'a self, _name: &'a str, _port: u16) -> ResolveFuture<'a> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            let answer = self.answers[call.min(self.answers.len() - 1)];
            Box::pin(async move { Ok(vec![answer]) })
        }
    }

    #[tokio::test]
    async fn resolves_once_and_dials_the_address_it_screened() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let checked = listener.local_addr().unwrap();
        let resolver = Rebinding {
            answers: vec![checked, "169.254.169.254:80".parse().unwrap()],
            calls: AtomicUsize::new(0),
        };
        let policy = EgressPolicy::new().allow_cidr("127.0.0.0/8").unwrap();
        let host = TargetHost::parse("rebind.example").unwrap();

        let (stream, addr) = connect_upstream(
            &policy,
            &resolver,
            &host,
            checked.port(),
            Duration::from_secs(5),
        )
        .await
        .unwrap();

        assert_eq!(addr, checked);
        assert_eq!(stream.peer_addr().unwrap(), checked);
        assert_eq!(resolver.calls.load(Ordering::SeqCst), 1);
        // The next request resolves afresh and is screened afresh.
        let err = connect_upstream(&policy, &resolver, &host, 80, Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(
            matches!(
                err,
                UpstreamError::Refused {
                    class: AddressClass::Metadata,
                    ..
                }
            ),
            "{err:?}"
        );
        assert_eq!(resolver.calls.load(Ordering::SeqCst), 2);
    }
}
