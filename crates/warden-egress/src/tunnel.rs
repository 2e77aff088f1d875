//! CONNECT tunnels: the proxy checks `host:port`, connects to the screened address, answers
//! 200, and then copies bytes both ways without looking at them (TLS, HTTP/2 or anything else
//! passes untouched). Owns the tunnel's byte counts for the audit record.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

use hyper::body::Incoming;
use hyper::upgrade::OnUpgrade;
use hyper::{Request, Response, StatusCode, Uri};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf, copy_bidirectional};
use tokio::net::TcpStream;

use crate::host::TargetHost;
use crate::proxy::{Exchange, ProxyBody, Shared, empty_body};
use crate::upstream::connect_upstream;

/// An admitted tunnel, waiting for hyper to hand over the client connection.
pub(crate) struct TunnelJob {
    on_upgrade: OnUpgrade,
    upstream: TcpStream,
    exchange: Exchange,
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
    });
    Response::new(empty_body())
}

impl TunnelJob {
    /// Copies bytes both ways until both sides are done, then records the event.
    pub(crate) async fn run(self) {
        let TunnelJob {
            on_upgrade,
            upstream,
            mut exchange,
        } = self;
        match on_upgrade.await {
            Ok(upgraded) => {
                let mut client = TokioIo::new(upgraded);
                let mut upstream = Counted::new(upstream);
                let result = copy_bidirectional(&mut client, &mut upstream).await;
                exchange.event.bytes_up = upstream.written;
                exchange.event.bytes_down = upstream.read;
                if let Err(e) = result {
                    exchange.event.error = Some(format!("tunnel ended: {e}"));
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

/// A stream that counts the bytes read from and written to it, so the counts survive a tunnel
/// that ends in an error.
struct Counted<S> {
    inner: S,
    read: u64,
    written: u64,
}

impl<S> Counted<S> {
    fn new(inner: S) -> Self {
        Counted {
            inner,
            read: 0,
            written: 0,
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Counted<S> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let polled = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = polled {
            this.read += (buf.filled().len() - before) as u64;
        }
        polled
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Counted<S> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = polled {
            this.written += n as u64;
        }
        polled
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let polled = Pin::new(&mut this.inner).poll_write_vectored(cx, bufs);
        if let Poll::Ready(Ok(n)) = polled {
            this.written += n as u64;
        }
        polled
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
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
    async fn counted_counts_both_directions() {
        let (a, mut b) = tokio::io::duplex(64);
        let mut counted = Counted::new(a);
        counted.write_all(b"hello").await.unwrap();
        b.write_all(b"abc").await.unwrap();
        let mut buf = [0u8; 3];
        counted.read_exact(&mut buf).await.unwrap();
        assert_eq!((counted.written, counted.read), (5, 3));
    }
}
