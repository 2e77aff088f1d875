//! Reaching an admitted upstream: resolve the name once, screen every address, connect to an
//! address that passed. Owns the rule that the proxy connects to exactly the address it
//! checked (a `SocketAddr`, never the name again), which is what defeats DNS rebinding. The
//! resolver is a small seam ([`Resolve`]) so tests and a future DNS stub can stand in for it.
//!
//! Also owns the pool of kept-alive upstream HTTP/1.1 connections ([`ConnectionPool`]). A
//! pooled connection is still one to an address that was screened when it was dialled: the
//! pool only ever hands a connection back for the same host and port it was dialled for
//! (the policy has judged that request target again by then), never opens one itself, and
//! closes a connection that stays unused for the idle timeout.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use hyper::client::conn::http1::SendRequest;
use tokio::net::TcpStream;
use tokio::time::{Instant, timeout_at};

use crate::host::TargetHost;
use crate::policy::EgressPolicy;
use crate::screen::{AddressClass, Screening};

/// The future a [`Resolve`] implementation returns.
pub type ResolveFuture<'a> = Pin<Box<dyn Future<Output = io::Result<Vec<SocketAddr>>> + Send + 'a>>;

/// Turns a host name into socket addresses. The proxy asks for every upstream connection it
/// opens (a request on a kept-alive connection needs no resolution); in front of the system
/// resolver it keeps answers for [`dns_cache_ttl`](crate::ProxyOptions::dns_cache_ttl).
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

/// Names a proxy's resolution cache holds at most; when full it starts afresh.
const MAX_CACHED_NAMES: usize = 1024;

/// Remembers what another resolver answered for a short time, as squid's ipcache does, so
/// that a client opening many connections to one host does not pay a lookup for each. Only
/// answers with addresses are kept, and nothing about screening: every use of a cached answer
/// is screened again by [`connect_upstream`], and the address dialled is the one screened.
pub(crate) struct CachingResolver<R> {
    inner: R,
    ttl: Duration,
    answers: Mutex<HashMap<String, (Instant, Vec<IpAddr>)>>,
}

impl<R: Resolve> CachingResolver<R> {
    /// Keeps each answer of `inner` for `ttl`; a zero `ttl` keeps nothing.
    pub(crate) fn new(inner: R, ttl: Duration) -> Self {
        CachingResolver {
            inner,
            ttl,
            answers: Mutex::new(HashMap::new()),
        }
    }

    fn cached(&self, name: &str) -> Option<Vec<IpAddr>> {
        let answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        let (at, ips) = answers.get(name)?;
        (at.elapsed() < self.ttl).then(|| ips.clone())
    }

    fn remember(&self, name: &str, resolved: &[SocketAddr]) {
        let mut answers = self.answers.lock().unwrap_or_else(PoisonError::into_inner);
        if answers.len() >= MAX_CACHED_NAMES && !answers.contains_key(name) {
            answers.retain(|_, (at, _)| at.elapsed() < self.ttl);
            if answers.len() >= MAX_CACHED_NAMES {
                answers.clear();
            }
        }
        let ips = resolved.iter().map(SocketAddr::ip).collect();
        answers.insert(name.to_string(), (Instant::now(), ips));
    }
}

impl<R: Resolve> Resolve for CachingResolver<R> {
    fn resolve<'a>(&'a self, name: &'a str, port: u16) -> ResolveFuture<'a> {
        if let Some(ips) = self.cached(name) {
            let addrs = ips
                .into_iter()
                .map(|ip| SocketAddr::new(ip, port))
                .collect();
            return Box::pin(std::future::ready(Ok(addrs)));
        }
        Box::pin(async move {
            let resolved = self.inner.resolve(name, port).await?;
            if !resolved.is_empty() && !self.ttl.is_zero() {
                self.remember(name, &resolved);
            }
            Ok(resolved)
        })
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

/// Kept-alive connections a proxy holds per target, at most this many.
const MAX_IDLE_PER_TARGET: usize = 32;
/// Kept-alive connections a proxy holds in all, at most this many.
const MAX_IDLE: usize = 256;

/// What a kept-alive upstream connection may be reused for: requests to the same host (name
/// or IP literal, as the client wrote it after normalisation) and port it was dialled for.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) struct PoolKey {
    host: TargetHost,
    port: u16,
}

impl PoolKey {
    pub(crate) fn new(host: TargetHost, port: u16) -> Self {
        PoolKey { host, port }
    }

    pub(crate) fn host(&self) -> &TargetHost {
        &self.host
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }
}

/// An HTTP/1.1 connection to an upstream, and the screened address it is connected to.
pub(crate) struct UpstreamConnection<B> {
    pub(crate) sender: SendRequest<B>,
    pub(crate) addr: SocketAddr,
    /// Whether it served a request before (taken from the pool) or was just dialled.
    pub(crate) reused: bool,
}

/// Idle kept-alive upstream connections of one proxy, most recently used first. Cheap to
/// clone: clones share the connections.
pub(crate) struct ConnectionPool<B> {
    inner: Arc<PoolInner<B>>,
}

impl<B> Clone for ConnectionPool<B> {
    fn clone(&self) -> Self {
        ConnectionPool {
            inner: Arc::clone(&self.inner),
        }
    }
}

struct PoolInner<B> {
    idle_timeout: Duration,
    state: Mutex<PoolState<B>>,
}

struct PoolState<B> {
    idle: HashMap<PoolKey, Vec<Idle<B>>>,
    count: usize,
    /// Whether a task is running that closes connections once their idle time is up.
    reaper: bool,
}

struct Idle<B> {
    sender: SendRequest<B>,
    addr: SocketAddr,
    since: Instant,
}

impl<B: Send + 'static> ConnectionPool<B> {
    /// A pool that closes a connection unused for `idle_timeout`.
    pub(crate) fn new(idle_timeout: Duration) -> Self {
        ConnectionPool {
            inner: Arc::new(PoolInner {
                idle_timeout,
                state: Mutex::new(PoolState {
                    idle: HashMap::new(),
                    count: 0,
                    reaper: false,
                }),
            }),
        }
    }

    /// A kept-alive connection for `key` that is ready for a request, if there is one.
    /// Connections found closed, expired or not (yet) ready are dropped on the way.
    pub(crate) fn checkout(&self, key: &PoolKey) -> Option<UpstreamConnection<B>> {
        let mut dropped = Vec::new();
        let found = {
            let mut guard = self.inner.lock();
            let state = &mut *guard;
            let list = state.idle.get_mut(key)?;
            let now = Instant::now();
            let mut found = None;
            while let Some(idle) = list.pop() {
                state.count -= 1;
                if idle.sender.is_ready() && now < idle.since + self.inner.idle_timeout {
                    found = Some(idle);
                    break;
                }
                dropped.push(idle);
            }
            if list.is_empty() {
                state.idle.remove(key);
            }
            found
        };
        // Closing happens outside the lock.
        drop(dropped);
        found.map(|idle| UpstreamConnection {
            sender: idle.sender,
            addr: idle.addr,
            reused: true,
        })
    }

    /// Keeps a connection whose exchange completed for the next request to `key`, unless it
    /// is closed or the pool is full (then it is dropped, which closes it).
    pub(crate) fn put(&self, key: PoolKey, sender: SendRequest<B>, addr: SocketAddr) {
        if sender.is_closed() || self.inner.idle_timeout.is_zero() {
            return;
        }
        let mut guard = self.inner.lock();
        let state = &mut *guard;
        if state.count >= MAX_IDLE {
            return;
        }
        let list = state.idle.entry(key).or_default();
        if list.len() >= MAX_IDLE_PER_TARGET {
            return;
        }
        list.push(Idle {
            sender,
            addr,
            since: Instant::now(),
        });
        state.count += 1;
        if !state.reaper {
            state.reaper = true;
            tokio::spawn(reap(Arc::downgrade(&self.inner)));
        }
    }

    /// How many idle connections the pool holds.
    #[cfg(test)]
    fn idle_count(&self) -> usize {
        self.inner.lock().count
    }
}

impl<B> PoolInner<B> {
    fn lock(&self) -> std::sync::MutexGuard<'_, PoolState<B>> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Drops the connections that are closed or idle for too long, and says when the next
    /// one expires; `None` (and the reaper flag cleared) when the pool is empty.
    fn expire(&self) -> Option<Instant> {
        let mut dropped = Vec::new();
        let mut guard = self.lock();
        let state = &mut *guard;
        let now = Instant::now();
        let mut next: Option<Instant> = None;
        state.idle.retain(|_, list| {
            let (keep, gone): (Vec<_>, Vec<_>) = std::mem::take(list)
                .into_iter()
                .partition(|idle| !idle.sender.is_closed() && now < idle.since + self.idle_timeout);
            dropped.extend(gone);
            for idle in &keep {
                let at = idle.since + self.idle_timeout;
                next = Some(next.map_or(at, |n| n.min(at)));
            }
            *list = keep;
            !list.is_empty()
        });
        state.count -= dropped.len();
        if next.is_none() {
            state.reaper = false;
        }
        drop(guard);
        drop(dropped);
        next
    }
}

/// Closes pooled connections as their idle time runs out; ends when the pool is empty or the
/// proxy is gone.
async fn reap<B>(pool: Weak<PoolInner<B>>) {
    loop {
        let next = match pool.upgrade() {
            Some(inner) => inner.expire(),
            None => return,
        };
        match next {
            Some(at) => tokio::time::sleep_until(at).await,
            None => return,
        }
    }
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

    /// A sender on an HTTP/1.1 connection to nowhere (an in-memory pipe), ready for a
    /// request once its connection task has run; dropping the far end closes it.
    async fn sender() -> (
        SendRequest<http_body_util::Empty<bytes::Bytes>>,
        tokio::io::DuplexStream,
    ) {
        let (near, far) = tokio::io::duplex(1024);
        let (sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(near))
                .await
                .unwrap();
        tokio::spawn(connection);
        tokio::task::yield_now().await;
        (sender, far)
    }

    fn key(host: &str, port: u16) -> PoolKey {
        PoolKey::new(TargetHost::parse(host).unwrap(), port)
    }

    #[tokio::test]
    async fn pool_hands_a_connection_back_for_its_own_target_only() {
        let pool = ConnectionPool::new(Duration::from_secs(60));
        let addr: SocketAddr = "93.184.215.14:80".parse().unwrap();
        let (ready, _far) = sender().await;
        assert!(ready.is_ready());
        pool.put(key("example.com", 80), ready, addr);
        assert_eq!(pool.idle_count(), 1);

        assert!(pool.checkout(&key("example.com", 8080)).is_none());
        assert!(pool.checkout(&key("www.example.com", 80)).is_none());
        assert!(pool.checkout(&key("93.184.215.14", 80)).is_none());
        let found = pool.checkout(&key("example.com", 80)).expect("pooled");
        assert_eq!((found.addr, found.reused), (addr, true));
        assert_eq!(pool.idle_count(), 0);
        assert!(pool.checkout(&key("example.com", 80)).is_none());
    }

    #[tokio::test]
    async fn pool_drops_closed_and_expired_connections() {
        let pool = ConnectionPool::new(Duration::from_millis(50));
        let addr: SocketAddr = "93.184.215.14:80".parse().unwrap();

        // Closed by the far end while idle: not handed out.
        let (closing, far) = sender().await;
        pool.put(key("example.com", 80), closing, addr);
        drop(far);
        for _ in 0..100 {
            tokio::task::yield_now().await;
        }
        assert!(pool.checkout(&key("example.com", 80)).is_none());

        // Idle for longer than the limit: closed by the reaper, with nobody asking.
        let (idle, _far) = sender().await;
        pool.put(key("example.com", 80), idle, addr);
        assert_eq!(pool.idle_count(), 1);
        tokio::time::timeout(Duration::from_secs(30), async {
            while pool.idle_count() > 0 {
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        })
        .await
        .expect("the reaper closes the idle connection");

        // A zero limit keeps nothing.
        let keep_none = ConnectionPool::new(Duration::ZERO);
        let (ready, _far) = sender().await;
        keep_none.put(key("example.com", 80), ready, addr);
        assert_eq!(keep_none.idle_count(), 0);
    }

    /// Answers with the next address of its list on every call and counts the calls.
    struct Counting {
        answers: Vec<SocketAddr>,
        calls: AtomicUsize,
    }

    impl Resolve for Counting {
        fn resolve<'a>(&'a self, name: &'a str, port: u16) -> ResolveFuture<'a> {
            let call = self.calls.fetch_add(1, Ordering::SeqCst);
            let answer = match name {
                "nowhere.example" => Vec::new(),
                _ => vec![SocketAddr::new(
                    self.answers[call.min(self.answers.len() - 1)].ip(),
                    port,
                )],
            };
            Box::pin(async move { Ok(answer) })
        }
    }

    #[tokio::test]
    async fn the_cache_keeps_answers_for_its_ttl_and_screening_still_applies() {
        let counting = Counting {
            answers: addrs(&["169.254.169.254:0", "93.184.215.14:0"]),
            calls: AtomicUsize::new(0),
        };
        let cache = CachingResolver::new(counting, Duration::from_secs(60));
        let first = cache.resolve("a.example", 443).await.unwrap();
        assert_eq!(first, addrs(&["169.254.169.254:443"]));
        // Cached, with the port of the new question.
        assert_eq!(
            cache.resolve("a.example", 80).await.unwrap(),
            addrs(&["169.254.169.254:80"])
        );
        assert_eq!(cache.inner.calls.load(Ordering::SeqCst), 1);
        // A cached answer is screened like a fresh one: the metadata address stays refused.
        let policy = EgressPolicy::new();
        let host = TargetHost::parse("a.example").unwrap();
        let err = connect_upstream(&policy, &cache, &host, 80, Duration::from_secs(5))
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
        assert_eq!(cache.inner.calls.load(Ordering::SeqCst), 1);
        // Another name is asked for; an empty answer is not kept.
        cache.resolve("b.example", 80).await.unwrap();
        cache.resolve("nowhere.example", 80).await.unwrap();
        cache.resolve("nowhere.example", 80).await.unwrap();
        assert_eq!(cache.inner.calls.load(Ordering::SeqCst), 4);
    }

    #[tokio::test]
    async fn a_zero_ttl_cache_asks_every_time() {
        let counting = Counting {
            answers: addrs(&["93.184.215.14:0"]),
            calls: AtomicUsize::new(0),
        };
        let cache = CachingResolver::new(counting, Duration::ZERO);
        for _ in 0..3 {
            cache.resolve("a.example", 80).await.unwrap();
        }
        assert_eq!(cache.inner.calls.load(Ordering::SeqCst), 3);
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
