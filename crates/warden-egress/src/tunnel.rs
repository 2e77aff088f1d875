//! CONNECT tunnels: the proxy checks `host:port`, connects to the screened address, answers
//! 200, and then copies bytes both ways without looking at them (TLS, HTTP/2 or anything else
//! passes untouched). Owns the tunnel's byte counts for the audit record and its idle limit.
//!
//! Copy buffers are lent per read from a small per-thread stock instead of being owned by
//! each tunnel: a read borrows one, and it goes back as soon as its bytes are written on. An
//! idle tunnel (most of them, most of the time) holds no buffer, and a busy one at most one
//! per direction, so the buffers can be large.

use std::cell::RefCell;
use std::future::{Future, poll_fn};
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll, ready};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::Instant;

use crate::host::TargetHost;
use crate::proxy::{Exchange, ProxyBody, Shared, empty_body};
use crate::upstream::connect_upstream;

/// The size of one copy buffer: one read takes at most this much.
const CHUNK_BYTES: usize = 256 * 1024;
/// Buffers each thread keeps for reuse; more are allocated when needed and freed after.
const STOCK_BUFFERS: usize = 16;

thread_local! {
    static STOCK: RefCell<Vec<Vec<u8>>> = const { RefCell::new(Vec::new()) };
}

/// A copy buffer from this thread's stock, or a new one.
fn borrow_buffer() -> Vec<u8> {
    STOCK
        .with(|stock| stock.borrow_mut().pop())
        .unwrap_or_else(|| vec![0; CHUNK_BYTES])
}

/// Gives a copy buffer back to this thread's stock (or frees it when the stock is full).
fn return_buffer(buffer: Vec<u8>) {
    if buffer.len() != CHUNK_BYTES {
        return;
    }
    STOCK.with(|stock| {
        let mut stock = stock.borrow_mut();
        if stock.len() < STOCK_BUFFERS {
            stock.push(buffer);
        }
    });
}

/// An admitted tunnel, waiting for hyper to hand over the client connection.
pub(crate) struct TunnelJob {
    on_upgrade: OnUpgrade,
    upstream: TcpStream,
    exchange: Exchange,
    idle_timeout: Duration,
}

/// Judges a CONNECT request and, if admitted, connects upstream and leaves the tunnel in
/// `slot` for the connection task to run once the 200 has been sent.
pub(crate) async fn open(
    shared: Arc<Shared>,
    slot: Arc<Mutex<Option<TunnelJob>>>,
    mut req: Request<Incoming>,
    mut exchange: Exchange,
) -> Response<ProxyBody> {
    // A refused CONNECT closes the connection: a client may already be sending its TLS
    // handshake, which must not be read as the next HTTP request.
    let (host, port) = match connect_target(req.uri()) {
        Ok(target) => target,
        Err(why) => return exchange.bad_request(why, true),
    };
    exchange.target(&host, port);
    let verdict = shared.policy.decide_target(&host, port);
    exchange.verdict(&verdict);
    if !verdict.is_allowed() {
        return exchange.denied(&host, port, &verdict.explanation, true);
    }
    let limit = shared.options.connect_timeout;
    let (upstream, addr) =
        match connect_upstream(&shared.policy, &*shared.resolver, &host, port, limit).await {
            Ok(connected) => connected,
            Err(e) => return exchange.upstream_failed(&host, port, e, true),
        };
    exchange.event.address = Some(addr.to_string());
    exchange.event.status = StatusCode::OK.as_u16();
    let on_upgrade = hyper::upgrade::on(&mut req);
    *slot.lock().unwrap_or_else(PoisonError::into_inner) = Some(TunnelJob {
        on_upgrade,
        upstream,
        exchange,
        idle_timeout: shared.options.tunnel_idle_timeout,
    });
    Response::new(empty_body())
}

impl TunnelJob {
    /// Copies bytes both ways until both sides are done (or the tunnel stays idle for the
    /// limit), then records the event.
    pub(crate) async fn run(self) {
        let TunnelJob {
            on_upgrade,
            upstream,
            mut exchange,
            idle_timeout,
        } = self;
        match on_upgrade.await {
            Ok(upgraded) => {
                let mut pump = Pump::new(TokioIo::new(upgraded), upstream);
                let result = pump.run(idle_timeout).await;
                exchange.event.bytes_up = pump.up.moved;
                exchange.event.bytes_down = pump.down.moved;
                match result {
                    Ok(()) => {}
                    Err(Ended::Idle) => {
                        exchange.event.error = Some(format!(
                            "tunnel closed: no byte either way for {idle_timeout:?}"
                        ));
                    }
                    Err(Ended::Io(e)) => {
                        exchange.event.error = Some(format!("tunnel ended: {e}"));
                    }
                }
            }
            Err(e) => {
                exchange.event.error =
                    Some(format!("the client left before the tunnel opened: {e}"));
            }
        }
        exchange.finish();
    }
}

/// Why a tunnel ended before both sides closed.
#[derive(Debug)]
enum Ended {
    Idle,
    Io(io::Error),
}

/// One direction of a tunnel: bytes read from one side and not yet written to the other.
#[derive(Debug, Default)]
struct Flow {
    /// A borrowed buffer and the range in it still to be written.
    pending: Option<(Vec<u8>, usize, usize)>,
    /// The written bytes need a flush before the next wait for input.
    unflushed: bool,
    /// The source ended and the destination's write side was shut down.
    done: bool,
    /// The source ended; the destination is still to be shut down.
    eof: bool,
    /// Bytes counted for the audit record.
    moved: u64,
}

impl Flow {
    /// Moves bytes from `from` to `to` until one of them has to wait (`Pending`) or the source
    /// has ended and the destination is shut down (`Ready(Ok)`). Sets `*active` when a byte
    /// moved. `count_reads` picks what `moved` counts: bytes read (true) or written.
    fn poll_copy<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        from: &mut R,
        to: &mut W,
        count_reads: bool,
        active: &mut bool,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + Unpin,
        W: AsyncWrite + Unpin,
    {
        loop {
            if let Some((buffer, start, end)) = &mut self.pending {
                while *start < *end {
                    let n = ready!(Pin::new(&mut *to).poll_write(cx, &buffer[*start..*end]))?;
                    if n == 0 {
                        return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                    }
                    *start += n;
                    if !count_reads {
                        self.moved += n as u64;
                    }
                    self.unflushed = true;
                    *active = true;
                }
                if let Some((buffer, _, _)) = self.pending.take() {
                    return_buffer(buffer);
                }
            }
            if self.done {
                return Poll::Ready(Ok(()));
            }
            if self.eof {
                ready!(Pin::new(&mut *to).poll_shutdown(cx))?;
                self.done = true;
                return Poll::Ready(Ok(()));
            }
            let mut buffer = borrow_buffer();
            let mut read = ReadBuf::new(&mut buffer);
            match Pin::new(&mut *from).poll_read(cx, &mut read) {
                Poll::Ready(Ok(())) => {
                    let n = read.filled().len();
                    if n == 0 {
                        return_buffer(buffer);
                        self.eof = true;
                    } else {
                        if count_reads {
                            self.moved += n as u64;
                        }
                        *active = true;
                        self.pending = Some((buffer, 0, n));
                    }
                }
                Poll::Ready(Err(e)) => {
                    return_buffer(buffer);
                    return Poll::Ready(Err(e));
                }
                Poll::Pending => {
                    // Nothing to read: the buffer goes back while this direction waits.
                    return_buffer(buffer);
                    if self.unflushed {
                        ready!(Pin::new(&mut *to).poll_flush(cx))?;
                        self.unflushed = false;
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        if let Some((buffer, _, _)) = self.pending.take() {
            return_buffer(buffer);
        }
    }
}

/// Both directions of a tunnel: `up` from the client to the upstream, `down` back.
struct Pump<C, U> {
    client: C,
    upstream: U,
    up: Flow,
    down: Flow,
}

impl<C, U> Pump<C, U>
where
    C: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    fn new(client: C, upstream: U) -> Self {
        Pump {
            client,
            upstream,
            up: Flow::default(),
            down: Flow::default(),
        }
    }

    /// Runs until both directions are done, an error, or `idle` passes without a byte moving.
    async fn run(&mut self, idle: Duration) -> Result<(), Ended> {
        let mut last_active = Instant::now();
        let timer = tokio::time::sleep_until(last_active + idle);
        tokio::pin!(timer);
        poll_fn(|cx| {
            loop {
                let mut active = false;
                let up =
                    self.up
                        .poll_copy(cx, &mut self.client, &mut self.upstream, false, &mut active);
                let down = self.down.poll_copy(
                    cx,
                    &mut self.upstream,
                    &mut self.client,
                    true,
                    &mut active,
                );
                match (up, down) {
                    (Poll::Ready(Err(e)), _) | (_, Poll::Ready(Err(e))) => {
                        return Poll::Ready(Err(Ended::Io(e)));
                    }
                    (Poll::Ready(Ok(())), Poll::Ready(Ok(()))) => return Poll::Ready(Ok(())),
                    _ => {}
                }
                if active {
                    last_active = Instant::now();
                }
                // The timer is moved only when it fires: activity is noted above, cheaply.
                if timer.as_mut().poll(cx).is_pending() {
                    return Poll::Pending;
                }
                let deadline = last_active + idle;
                if deadline <= Instant::now() {
                    return Poll::Ready(Err(Ended::Idle));
                }
                timer.as_mut().reset(deadline);
            }
        })
        .await
    }
}

/// The `host:port` of a CONNECT request, or why there is none.
fn connect_target(uri: &Uri) -> Result<(TargetHost, u16), String> {
    let authority = match (uri.scheme(), uri.authority()) {
        (None, Some(authority)) => authority,
        _ => {
            return Err(format!(
                "CONNECT needs a target of the form host:port, not `{uri}`"
            ));
        }
    };
    let port = authority
        .port_u16()
        .ok_or_else(|| format!("CONNECT needs a port: write {}:443", authority.host()))?;
    let host = TargetHost::parse(authority.host()).map_err(|e| e.to_string())?;
    Ok((host, port))
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[test]
    fn connect_targets() {
        let parse = |s: &str| connect_target(&s.parse().unwrap());
        assert_eq!(
            parse("Example.com:443").unwrap(),
            (TargetHost::parse("example.com").unwrap(), 443)
        );
        assert_eq!(
            parse("[::1]:22").unwrap(),
            (TargetHost::parse("::1").unwrap(), 22)
        );
        assert!(parse("example.com").unwrap_err().contains("needs a port"));
        assert!(
            parse("http://example.com:443/")
                .unwrap_err()
                .contains("host:port")
        );
        assert!(parse("/path").unwrap_err().contains("host:port"));
    }

    #[tokio::test]
    async fn pump_copies_both_ways_counts_and_passes_on_each_end() {
        let (client, client_far) = tokio::io::duplex(64);
        let (upstream, upstream_far) = tokio::io::duplex(64);
        let mut pump = Pump::new(client, upstream);
        let copying = async {
            let result = pump.run(Duration::from_secs(60)).await;
            (result.is_ok(), pump.up.moved, pump.down.moved)
        };
        // More than the duplex pipes hold, so the pump must wait for the far ends.
        let up: Vec<u8> = (0..10_000u32).map(|i| i as u8).collect();
        let (mut client_read, mut client_write) = tokio::io::split(client_far);
        let (mut upstream_read, mut upstream_write) = tokio::io::split(upstream_far);
        let talking = async {
            let sending = async {
                client_write.write_all(&up).await.unwrap();
                client_write.shutdown().await.unwrap();
            };
            let receiving = async {
                let mut got = Vec::new();
                upstream_read.read_to_end(&mut got).await.unwrap();
                assert_eq!(got, up);
                upstream_write.write_all(b"reply").await.unwrap();
                upstream_write.shutdown().await.unwrap();
                let mut back = Vec::new();
                client_read.read_to_end(&mut back).await.unwrap();
                assert_eq!(back, b"reply");
            };
            tokio::join!(sending, receiving);
        };
        let ((ok, up, down), ()) = tokio::join!(copying, talking);
        assert!(ok);
        assert_eq!((up, down), (10_000, 5));
    }

    #[tokio::test]
    async fn an_idle_pump_ends_and_keeps_no_buffer() {
        let (client, _client_far) = tokio::io::duplex(64);
        let (upstream, _upstream_far) = tokio::io::duplex(64);
        let mut pump = Pump::new(client, upstream);
        let result = pump.run(Duration::from_millis(50)).await;
        assert!(matches!(result, Err(Ended::Idle)), "{result:?}");
        assert!(pump.up.pending.is_none() && pump.down.pending.is_none());
    }

    #[test]
    fn the_buffer_stock_is_bounded() {
        let borrowed: Vec<Vec<u8>> = (0..STOCK_BUFFERS + 5).map(|_| borrow_buffer()).collect();
        assert!(borrowed.iter().all(|b| b.len() == CHUNK_BYTES));
        borrowed.into_iter().for_each(return_buffer);
        return_buffer(vec![0; 10]);
        assert_eq!(STOCK.with(|stock| stock.borrow().len()), STOCK_BUFFERS);
    }
}
