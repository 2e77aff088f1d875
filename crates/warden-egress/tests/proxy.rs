//! The proxy end to end, over real sockets on loopback: a local upstream HTTP server, a local
//! TCP echo server, and raw HTTP/1.1 written by hand so that malformed and slow clients can be
//! played exactly.
//!
//! Loopback is refused by default, so tests that must reach the local servers allow
//! 127.0.0.0/8 explicitly (which is also the proof that a CIDR unlocks an address); the tests
//! without it prove the refusal.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc::UnboundedReceiver;
use warden_egress::{
    AuditEvent, ChannelSink, Decision, EgressPolicy, Proxy, ProxyHandle, ProxyOptions,
};

/// Guards against a hang only; no test asserts how long anything takes.
const HANG_GUARD: Duration = Duration::from_secs(30);

// ---------------------------------------------------------------------------------------------
// Local servers

/// An HTTP server on 127.0.0.1 that answers with a JSON description of the request it got.
/// `/status/N` answers with status N. Counts the requests it served, the connections it
/// accepted and those that have closed since.
struct Upstream {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    connections: Arc<AtomicUsize>,
    closed: Arc<AtomicUsize>,
}

async fn start_upstream() -> Upstream {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let connections = Arc::new(AtomicUsize::new(0));
    let closed = Arc::new(AtomicUsize::new(0));
    let (counter, accepted, ended) = (
        Arc::clone(&hits),
        Arc::clone(&connections),
        Arc::clone(&closed),
    );
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            accepted.fetch_add(1, Ordering::SeqCst);
            let counter = Arc::clone(&counter);
            let ended = Arc::clone(&ended);
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    describe_request(req)
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
                ended.fetch_add(1, Ordering::SeqCst);
            });
        }
    });
    Upstream {
        addr,
        hits,
        connections,
        closed,
    }
}

/// A raw TCP server on 127.0.0.1 that reads one request head per connection, writes
/// `response` and closes the connection (without announcing it). Counts the connections.
async fn start_raw_upstream(response: Vec<u8>) -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let connections = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::clone(&connections);
    let response: Arc<[u8]> = response.into();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            accepted.fetch_add(1, Ordering::SeqCst);
            let response = Arc::clone(&response);
            tokio::spawn(async move {
                let mut head = Vec::new();
                let mut byte = [0u8; 1];
                while !head.ends_with(b"\r\n\r\n") {
                    match stream.read(&mut byte).await {
                        Ok(1) => head.push(byte[0]),
                        _ => return,
                    }
                }
                let _ = stream.write_all(&response).await;
            });
        }
    });
    (addr, connections)
}

/// Waits until `counter` reaches `want`; only a hang guard bounds the wait.
async fn wait_for(counter: &AtomicUsize, want: usize) {
    tokio::time::timeout(HANG_GUARD, async {
        while counter.load(Ordering::SeqCst) < want {
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("the count stayed at {}", counter.load(Ordering::SeqCst)));
}

async fn describe_request(req: Request<Incoming>) -> Result<Response<Full<Bytes>>, Infallible> {
    let status: u16 = req
        .uri()
        .path()
        .strip_prefix("/status/")
        .and_then(|s| s.parse().ok())
        .unwrap_or(200);
    let mut headers = BTreeMap::new();
    for (name, value) in req.headers() {
        headers.insert(name.to_string(), value.to_str().unwrap_or("?").to_string());
    }
    let method = req.method().to_string();
    let uri = req.uri().to_string();
    let body = req
        .into_body()
        .collect()
        .await
        .map(|b| b.to_bytes())
        .unwrap_or_default();
    let description = serde_json::json!({
        "method": method,
        "uri": uri,
        "headers": headers,
        "body": String::from_utf8_lossy(&body),
    });
    let response = Response::builder()
        .status(status)
        .header("x-upstream", "yes")
        .header("connection", "x-response-hop")
        .header("x-response-hop", "1")
        .body(Full::new(Bytes::from(description.to_string())))
        .unwrap();
    Ok(response)
}

/// A TCP server on 127.0.0.1 that echoes every byte back until the client closes.
async fn start_echo() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let (mut stream, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                let (mut read, mut write) = stream.split();
                let _ = tokio::io::copy(&mut read, &mut write).await;
                let _ = write.shutdown().await;
            });
        }
    });
    addr
}

// ---------------------------------------------------------------------------------------------
// The proxy and a hand-written client

struct Harness {
    proxy: ProxyHandle,
    events: UnboundedReceiver<AuditEvent>,
}

impl Harness {
    async fn start(policy: EgressPolicy) -> Harness {
        Self::start_with(policy, ProxyOptions::new("sandbox-test")).await
    }

    async fn start_with(policy: EgressPolicy, options: ProxyOptions) -> Harness {
        let (sink, events) = ChannelSink::new();
        let proxy = Proxy::bind(
            "127.0.0.1:0".parse().unwrap(),
            policy,
            Arc::new(sink),
            options,
        )
        .await
        .unwrap();
        Harness {
            proxy: proxy.spawn(),
            events,
        }
    }

    async fn connect(&self) -> TcpStream {
        TcpStream::connect(self.proxy.local_addr()).await.unwrap()
    }

    /// Sends `request` on a new connection and reads one response.
    async fn exchange(&self, request: &str) -> HttpResponse {
        let mut stream = self.connect().await;
        stream.write_all(request.as_bytes()).await.unwrap();
        read_response(&mut stream).await
    }

    async fn next_event(&mut self) -> AuditEvent {
        tokio::time::timeout(HANG_GUARD, self.events.recv())
            .await
            .expect("an audit event")
            .expect("the proxy is running")
    }

    fn no_more_events(&mut self) {
        assert!(self.events.try_recv().is_err(), "an unexpected audit event");
    }
}

#[derive(Debug)]
struct HttpResponse {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

impl HttpResponse {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }
}

/// Reads up to the end of a response head, byte by byte so nothing after it is consumed.
async fn read_head(stream: &mut TcpStream) -> String {
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        let n = tokio::time::timeout(HANG_GUARD, stream.read(&mut byte))
            .await
            .expect("a response head")
            .unwrap();
        assert!(
            n == 1,
            "connection closed after {:?}",
            String::from_utf8_lossy(&head)
        );
        head.push(byte[0]);
    }
    String::from_utf8(head).unwrap()
}

/// Reads one response whose body is framed by Content-Length.
async fn read_response(stream: &mut TcpStream) -> HttpResponse {
    let head = read_head(stream).await;
    let mut lines = head.split("\r\n");
    let status_line = lines.next().unwrap();
    let status = status_line
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line {status_line:?}"));
    let mut headers = BTreeMap::new();
    for line in lines.filter(|l| !l.is_empty()) {
        let (name, value) = line.split_once(':').unwrap();
        headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
    }
    let length: usize = headers
        .get("content-length")
        .map(|l| l.parse().unwrap())
        .unwrap_or(0);
    let mut body = vec![0u8; length];
    tokio::time::timeout(HANG_GUARD, stream.read_exact(&mut body))
        .await
        .expect("a response body")
        .unwrap();
    HttpResponse {
        status,
        headers,
        body: String::from_utf8(body).unwrap(),
    }
}

/// Reads until the proxy closes the connection; a reset counts as closed.
async fn read_until_closed(stream: &mut TcpStream) -> Vec<u8> {
    let mut rest = Vec::new();
    let read = tokio::time::timeout(HANG_GUARD, stream.read_to_end(&mut rest))
        .await
        .expect("the proxy closes the connection");
    match read {
        Ok(_) => rest,
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => rest,
        Err(e) => panic!("reading: {e}"),
    }
}

/// A policy that reaches the local servers: `localhost` by name, loopback unlocked by CIDR.
fn loopback_policy(ports: &[u16]) -> EgressPolicy {
    let mut policy = EgressPolicy::new()
        .allow_domain("localhost")
        .unwrap()
        .allow_cidr("127.0.0.0/8")
        .unwrap();
    for port in ports {
        policy = policy.allow_port(*port).unwrap();
    }
    policy
}

// ---------------------------------------------------------------------------------------------
// Forwarding

#[tokio::test]
async fn allowed_get_is_forwarded_in_origin_form_with_status_and_body() {
    let upstream = start_upstream().await;
    let port = upstream.addr.port();
    let mut h = Harness::start(loopback_policy(&[port])).await;

    let response = h
        .exchange(&format!(
            "GET http://LocalHost:{port}/status/418?q=1 HTTP/1.1\r\n\
             Host: somewhere-else.example\r\n\
             Proxy-Authorization: Basic c2VjcmV0OnNlY3JldA==\r\n\
             Proxy-Connection: keep-alive\r\n\
             Connection: close, X-Hop\r\n\
             X-Hop: drop me\r\n\
             X-End-To-End: keep me\r\n\r\n"
        ))
        .await;

    assert_eq!(response.status, 418, "{response:?}");
    assert_eq!(
        response.headers.get("x-upstream").map(String::as_str),
        Some("yes")
    );
    assert!(
        !response.headers.contains_key("x-response-hop"),
        "{response:?}"
    );
    let seen = response.json();
    assert_eq!(seen["method"], "GET");
    assert_eq!(
        seen["uri"], "/status/418?q=1",
        "upstream must get origin form"
    );
    let headers = seen["headers"].as_object().unwrap();
    assert_eq!(headers["host"], format!("localhost:{port}"));
    assert_eq!(headers["x-end-to-end"], "keep me");
    for gone in ["proxy-authorization", "proxy-connection", "x-hop"] {
        assert!(
            !headers.contains_key(gone),
            "{gone} was forwarded: {headers:?}"
        );
    }

    let event = h.next_event().await;
    assert_eq!(event.sandbox_id, "sandbox-test");
    assert_eq!(event.method, "GET");
    assert_eq!((event.host.as_str(), event.port), ("localhost", port));
    assert_eq!(event.verdict, Decision::Allowed);
    assert_eq!(event.rule, "allow:localhost");
    assert_eq!(event.status, 418);
    assert_eq!(event.address, Some(upstream.addr.to_string()));
    assert_eq!(event.bytes_up, 0);
    assert_eq!(event.bytes_down, response.body.len() as u64);
    assert!(
        event.time.ends_with('Z') && event.time.contains('T'),
        "{}",
        event.time
    );
    assert!(
        humantime::parse_rfc3339(&event.time).is_ok(),
        "{}",
        event.time
    );
    h.no_more_events();
}

#[tokio::test]
async fn request_body_streams_upstream_and_is_counted() {
    let upstream = start_upstream().await;
    let port = upstream.addr.port();
    let mut h = Harness::start(loopback_policy(&[port])).await;
    let body = "x".repeat(100_000);

    let response = h
        .exchange(&format!(
            "POST http://127.0.0.1:{port}/upload HTTP/1.1\r\nHost: 127.0.0.1\r\n\
             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ))
        .await;

    assert_eq!(response.status, 200);
    let seen = response.json();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["body"].as_str().map(str::len), Some(body.len()));
    let event = h.next_event().await;
    assert_eq!(
        event.rule, "cidr:127.0.0.0/8",
        "an IP literal is allowed by the CIDR"
    );
    assert_eq!(event.bytes_up, body.len() as u64);
    assert_eq!(event.bytes_down, response.body.len() as u64);
}

#[tokio::test]
async fn each_request_on_a_kept_alive_connection_is_judged_on_its_own() {
    let upstream = start_upstream().await;
    let port = upstream.addr.port();
    let mut h = Harness::start(loopback_policy(&[port])).await;
    let mut stream = h.connect().await;

    stream
        .write_all(format!("GET http://localhost:{port}/ HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream).await.status, 200);
    stream
        .write_all(b"GET http://evil.example/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let second = read_response(&mut stream).await;
    assert_eq!(second.status, 403, "{second:?}");

    assert_eq!(h.next_event().await.verdict, Decision::Allowed);
    let denied = h.next_event().await;
    assert_eq!(
        (denied.host.as_str(), denied.verdict),
        ("evil.example", Decision::Denied)
    );
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 1);
}

// ---------------------------------------------------------------------------------------------
// Denials

#[tokio::test]
async fn denied_domain_gets_403_naming_it_and_how_to_allow_it() {
    let mut h = Harness::start(loopback_policy(&[])).await;

    let response = h
        .exchange("GET http://Evil.Example/steal HTTP/1.1\r\nHost: evil.example\r\nConnection: close\r\n\r\n")
        .await;

    assert_eq!(response.status, 403);
    assert_eq!(
        response.body,
        "warden: egress to evil.example:80 is not allowed: no allow rule matches it; \
         add --allow-domain evil.example\n"
    );
    assert_eq!(
        response.headers.get("content-type").map(String::as_str),
        Some("text/plain; charset=utf-8")
    );
    let event = h.next_event().await;
    assert_eq!(
        (
            event.host.as_str(),
            event.port,
            event.verdict,
            event.rule.as_str(),
            event.status
        ),
        ("evil.example", 80, Decision::Denied, "default-deny", 403)
    );
    assert_eq!(
        (event.bytes_up, event.bytes_down, event.address),
        (0, 0, None)
    );
}

#[tokio::test]
async fn deny_list_beats_allow_list() {
    let upstream = start_upstream().await;
    let port = upstream.addr.port();
    let policy = loopback_policy(&[port])
        .allow_domain("*")
        .unwrap()
        .deny_domain("localhost")
        .unwrap();
    let mut h = Harness::start(policy).await;

    let response = h
        .exchange(&format!(
            "GET http://localhost:{port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ))
        .await;

    assert_eq!(response.status, 403);
    assert!(
        response.body.contains("deny rule `localhost`"),
        "{}",
        response.body
    );
    let event = h.next_event().await;
    assert_eq!(
        (event.verdict, event.rule.as_str()),
        (Decision::Denied, "deny:localhost")
    );
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn disallowed_port_gets_403() {
    let upstream = start_upstream().await;
    let port = upstream.addr.port();
    let mut h = Harness::start(loopback_policy(&[])).await;

    let response = h
        .exchange(&format!(
            "GET http://localhost:{port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ))
        .await;

    assert_eq!(response.status, 403);
    assert!(
        response
            .body
            .contains(&format!("localhost:{port} is not allowed")),
        "{}",
        response.body
    );
    assert!(
        response.body.contains("allowed: 80, 443"),
        "{}",
        response.body
    );
    let event = h.next_event().await;
    assert_eq!(event.rule, format!("port:{port}"));
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn loopback_is_refused_after_resolution_without_a_cidr() {
    let upstream = start_upstream().await;
    let port = upstream.addr.port();
    let policy = EgressPolicy::new()
        .allow_domain("localhost")
        .unwrap()
        .allow_port(port)
        .unwrap();
    let mut h = Harness::start(policy).await;

    let response = h
        .exchange(&format!(
            "GET http://localhost:{port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ))
        .await;

    assert_eq!(response.status, 403, "{response:?}");
    assert!(
        response.body.contains("localhost resolves to"),
        "{}",
        response.body
    );
    assert!(
        response.body.contains("a loopback address"),
        "{}",
        response.body
    );
    let event = h.next_event().await;
    assert_eq!(
        (event.verdict, event.rule.as_str()),
        (Decision::Denied, "screen:loopback")
    );
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn allow_all_still_refuses_metadata_and_loopback_addresses() {
    let mut h = Harness::start(EgressPolicy::new().allow_domain("*").unwrap()).await;

    for (request, class) in [
        (
            "GET http://169.254.169.254/latest/meta-data/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "metadata",
        ),
        (
            "GET http://[::ffff:169.254.169.254]/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "metadata",
        ),
        (
            "GET http://[fd00:ec2::254]/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "metadata",
        ),
        (
            "GET http://100.100.100.200/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "metadata",
        ),
        (
            "CONNECT 169.254.169.254:443 HTTP/1.1\r\nHost: x\r\n\r\n",
            "metadata",
        ),
        (
            "GET http://127.0.0.1/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "loopback",
        ),
        (
            "GET http://localhost/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "loopback",
        ),
        (
            "GET http://10.0.0.1/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "private",
        ),
    ] {
        let response = h.exchange(request).await;
        assert_eq!(response.status, 403, "{request}: {response:?}");
        let event = h.next_event().await;
        assert_eq!(event.verdict, Decision::Denied, "{request}");
        assert_eq!(event.rule, format!("screen:{class}"), "{request}");
        if class == "metadata" {
            assert!(
                response.body.contains("a cloud metadata address"),
                "{}",
                response.body
            );
        }
    }
}

// ---------------------------------------------------------------------------------------------
// CONNECT tunnels

#[tokio::test]
async fn connect_tunnels_raw_bytes_both_ways_and_audits_the_counts() {
    let echo = start_echo().await;
    let mut h = Harness::start(loopback_policy(&[echo.port()])).await;
    let mut stream = h.connect().await;

    stream
        .write_all(
            format!(
                "CONNECT localhost:{0} HTTP/1.1\r\nHost: localhost:{0}\r\n\r\n",
                echo.port()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let head = read_head(&mut stream).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");

    // Not HTTP: a TLS-looking record and every byte value, twice.
    let mut payload = b"\x16\x03\x01\x02\x00 not http\r\n\r\n".to_vec();
    payload.extend((0..=255u8).chain(0..=255u8));
    stream.write_all(&payload).await.unwrap();
    let mut echoed = vec![0u8; payload.len()];
    tokio::time::timeout(HANG_GUARD, stream.read_exact(&mut echoed))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(echoed, payload);

    stream.shutdown().await.unwrap();
    assert!(read_until_closed(&mut stream).await.is_empty());

    let event = h.next_event().await;
    assert_eq!(event.method, "CONNECT");
    assert_eq!(
        (event.host.as_str(), event.port),
        ("localhost", echo.port())
    );
    assert_eq!(
        (event.verdict, event.rule.as_str()),
        (Decision::Allowed, "allow:localhost")
    );
    assert_eq!(event.status, 200);
    assert_eq!(event.address, Some(echo.to_string()));
    assert_eq!(event.bytes_up, payload.len() as u64);
    assert_eq!(event.bytes_down, payload.len() as u64);
    assert_eq!(event.error, None);
}

#[tokio::test]
async fn stopping_the_proxy_closes_tunnels_and_still_audits_them() {
    let echo = start_echo().await;
    let Harness { proxy, mut events } = Harness::start(loopback_policy(&[echo.port()])).await;
    let mut stream = TcpStream::connect(proxy.local_addr()).await.unwrap();
    stream
        .write_all(
            format!(
                "CONNECT 127.0.0.1:{} HTTP/1.1\r\nHost: x\r\n\r\n",
                echo.port()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    assert!(read_head(&mut stream).await.starts_with("HTTP/1.1 200"));

    proxy.shutdown().await;

    assert!(read_until_closed(&mut stream).await.is_empty());
    let event = events.recv().await.expect("an event for the open tunnel");
    assert_eq!(
        (event.verdict, event.rule.as_str()),
        (Decision::Allowed, "cidr:127.0.0.0/8")
    );
    assert!(event.error.is_some_and(|e| e.starts_with("unfinished")));
}

#[tokio::test]
async fn connect_to_a_denied_host_gets_403_and_the_connection_closes() {
    let mut h = Harness::start(loopback_policy(&[])).await;
    let mut stream = h.connect().await;

    stream
        .write_all(b"CONNECT evil.example:443 HTTP/1.1\r\nHost: evil.example:443\r\n\r\n")
        .await
        .unwrap();
    let response = read_response(&mut stream).await;

    assert_eq!(response.status, 403);
    assert_eq!(
        response.body,
        "warden: egress to evil.example:443 is not allowed: no allow rule matches it; \
         add --allow-domain evil.example\n"
    );
    assert!(read_until_closed(&mut stream).await.is_empty());
    let event = h.next_event().await;
    assert_eq!(
        (
            event.method.as_str(),
            event.host.as_str(),
            event.port,
            event.verdict
        ),
        ("CONNECT", "evil.example", 443, Decision::Denied)
    );
}

// ---------------------------------------------------------------------------------------------
// Bad input

#[tokio::test]
async fn malformed_requests_get_400() {
    let mut h = Harness::start(loopback_policy(&[])).await;
    for request in [
        "THIS IS NOT HTTP\r\n\r\n",
        "GET http://localhost/ HTTP/1.1\r\nBroken header line\r\n\r\n",
        "GET http://localhost/ HTTP/9.9\r\n\r\n",
    ] {
        let mut stream = h.connect().await;
        stream.write_all(request.as_bytes()).await.unwrap();
        let head = read_head(&mut stream).await;
        assert!(head.starts_with("HTTP/1.1 400"), "{request:?}: {head}");
    }
    // hyper answers these before the proxy sees a request: no decision, no event.
    h.no_more_events();
}

#[tokio::test]
async fn invalid_targets_get_400_with_an_explanation() {
    let mut h = Harness::start(loopback_policy(&[])).await;
    for (request, expected) in [
        (
            "GET /index.html HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
            "not a proxy request",
        ),
        (
            "GET https://example.com/ HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
            "CONNECT host:port",
        ),
        (
            "GET http://127.1/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
            "numeric address",
        ),
        (
            "CONNECT example.com HTTP/1.1\r\nHost: example.com\r\n\r\n",
            "CONNECT needs a port",
        ),
    ] {
        let response = h.exchange(request).await;
        assert_eq!(response.status, 400, "{request:?}: {response:?}");
        assert!(response.body.starts_with("warden: "), "{}", response.body);
        assert!(
            response.body.contains(expected),
            "{request:?}: {}",
            response.body
        );
        let event = h.next_event().await;
        assert_eq!(
            (event.verdict, event.rule.as_str()),
            (Decision::Denied, "invalid-request")
        );
        assert_eq!(event.status, 400);
    }
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let options = ProxyOptions::new("sandbox-test").max_header_bytes(16 * 1024);
    let mut h = Harness::start_with(loopback_policy(&[]), options).await;
    let mut stream = h.connect().await;

    // One write, just over the limit and without the blank line that ends a head, so the
    // proxy reads all of it before refusing.
    let request = format!(
        "GET http://localhost/ HTTP/1.1\r\nX-Big: {}\r\n",
        "a".repeat(17 * 1024)
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let head = read_head(&mut stream).await;

    assert!(head.starts_with("HTTP/1.1 431"), "{head}");
    h.no_more_events();
}

#[tokio::test]
async fn a_client_that_never_finishes_its_request_is_disconnected() {
    let options = ProxyOptions::new("sandbox-test").header_read_timeout(Duration::from_millis(200));
    let mut h = Harness::start_with(loopback_policy(&[]), options).await;
    let mut stream = h.connect().await;

    stream
        .write_all(b"GET http://localhost/ HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .unwrap();
    let rest = read_until_closed(&mut stream).await;

    assert!(
        rest.is_empty() || rest.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
    h.no_more_events();
}

#[tokio::test]
async fn unreachable_upstream_gets_502_and_an_allowed_event_with_the_error() {
    let closed = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let mut h = Harness::start(loopback_policy(&[port])).await;

    let response = h
        .exchange(&format!(
            "GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ))
        .await;

    assert_eq!(response.status, 502, "{response:?}");
    assert!(
        response.body.contains("could not connect"),
        "{}",
        response.body
    );
    let event = h.next_event().await;
    assert_eq!((event.verdict, event.status), (Decision::Allowed, 502));
    assert!(event.error.is_some_and(|e| e.contains("could not connect")));
}

// ---------------------------------------------------------------------------------------------
// Kept-alive upstream connections

#[tokio::test]
async fn kept_alive_upstream_connections_are_reused_for_the_same_target_only() {
    let upstream = start_upstream().await;
    let port = upstream.addr.port();
    let mut h = Harness::start(loopback_policy(&[port])).await;

    // Two clients, one after the other, on their own connections: one upstream connection.
    for _ in 0..2 {
        let response = h
            .exchange(&format!(
                "GET http://localhost:{port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            ))
            .await;
        assert_eq!(response.status, 200, "{response:?}");
        let event = h.next_event().await;
        assert_eq!(event.address, Some(upstream.addr.to_string()));
        assert_eq!(event.bytes_down, response.body.len() as u64);
    }
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 2);
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 1);

    // The same address under another name is another target: a connection of its own.
    let response = h
        .exchange(&format!(
            "GET http://127.0.0.1:{port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ))
        .await;
    assert_eq!(response.status, 200);
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 2);

    // A denied request on a kept-alive client connection never reaches a pooled connection.
    let mut stream = h.connect().await;
    stream
        .write_all(b"GET http://evil.example/ HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream).await.status, 403);
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 3);
}

#[tokio::test]
async fn an_upstream_connection_idle_for_the_limit_is_closed() {
    let upstream = start_upstream().await;
    let port = upstream.addr.port();
    let options =
        ProxyOptions::new("sandbox-test").upstream_idle_timeout(Duration::from_millis(200));
    let h = Harness::start_with(loopback_policy(&[port]), options).await;
    let request =
        format!("GET http://localhost:{port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");

    assert_eq!(h.exchange(&request).await.status, 200);
    // The proxy closes the kept-alive connection once it has been idle for the limit ...
    wait_for(&upstream.closed, 1).await;
    // ... and the next request dials a fresh one.
    assert_eq!(h.exchange(&request).await.status, 200);
    assert_eq!(upstream.connections.load(Ordering::SeqCst), 2);
}

#[tokio::test]
async fn an_upstream_that_drops_kept_alive_connections_does_not_fail_requests() {
    // Each connection answers once and then closes without a `Connection: close`.
    let (addr, connections) =
        start_raw_upstream(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok".to_vec()).await;
    let port = addr.port();
    let h = Harness::start(loopback_policy(&[port])).await;
    let mut stream = h.connect().await;

    for _ in 0..5 {
        stream
            .write_all(
                format!("GET http://localhost:{port}/ HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes(),
            )
            .await
            .unwrap();
        let response = read_response(&mut stream).await;
        assert_eq!((response.status, response.body.as_str()), (200, "ok"));
    }
    assert_eq!(connections.load(Ordering::SeqCst), 5);
}

// ---------------------------------------------------------------------------------------------
// Limits and timeouts

#[tokio::test]
async fn an_oversized_response_head_gets_502() {
    let mut response = b"HTTP/1.1 200 OK\r\nX-Big: ".to_vec();
    response.extend(std::iter::repeat_n(b'a', 20 * 1024));
    response.extend(b"\r\nContent-Length: 0\r\n\r\n");
    let (addr, _) = start_raw_upstream(response).await;
    let port = addr.port();
    let options = ProxyOptions::new("sandbox-test").max_header_bytes(16 * 1024);
    let mut h = Harness::start_with(loopback_policy(&[port]), options).await;

    let response = h
        .exchange(&format!(
            "GET http://localhost:{port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        ))
        .await;

    assert_eq!(response.status, 502, "{response:?}");
    assert!(
        response.body.contains("the upstream failed"),
        "{}",
        response.body
    );
    let event = h.next_event().await;
    assert_eq!((event.verdict, event.status), (Decision::Allowed, 502));
}

#[tokio::test]
async fn a_stalled_request_body_gets_408_and_the_connection_closes() {
    let upstream = start_upstream().await;
    let port = upstream.addr.port();
    let options = ProxyOptions::new("sandbox-test").body_read_timeout(Duration::from_millis(200));
    let mut h = Harness::start_with(loopback_policy(&[port]), options).await;
    let mut stream = h.connect().await;

    // 10 bytes of the 100 announced, then nothing.
    stream
        .write_all(
            format!(
                "POST http://localhost:{port}/upload HTTP/1.1\r\nHost: x\r\n\
                 Content-Length: 100\r\n\r\n0123456789"
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let response = read_response(&mut stream).await;

    assert_eq!(response.status, 408, "{response:?}");
    assert!(
        response
            .body
            .starts_with("warden: the client sent no more of the request body"),
        "{}",
        response.body
    );
    assert!(read_until_closed(&mut stream).await.is_empty());
    let event = h.next_event().await;
    assert_eq!((event.verdict, event.status), (Decision::Allowed, 408));
    assert_eq!(event.bytes_up, 10);
    assert!(
        event
            .error
            .as_deref()
            .is_some_and(|e| e.contains("request body")),
        "{:?}",
        event.error
    );
}

#[tokio::test]
async fn a_kept_alive_client_connection_left_idle_is_closed() {
    let upstream = start_upstream().await;
    let port = upstream.addr.port();
    let options = ProxyOptions::new("sandbox-test").header_read_timeout(Duration::from_millis(200));
    let h = Harness::start_with(loopback_policy(&[port]), options).await;
    let mut stream = h.connect().await;

    stream
        .write_all(format!("GET http://localhost:{port}/ HTTP/1.1\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    assert_eq!(read_response(&mut stream).await.status, 200);
    // No next request: the proxy closes the connection.
    let rest = read_until_closed(&mut stream).await;
    assert!(
        rest.is_empty() || rest.starts_with(b"HTTP/1.1 408"),
        "{}",
        String::from_utf8_lossy(&rest)
    );
}

#[tokio::test]
async fn a_tunnel_idle_for_the_limit_is_closed_and_audited() {
    let echo = start_echo().await;
    let options = ProxyOptions::new("sandbox-test").tunnel_idle_timeout(Duration::from_millis(200));
    let mut h = Harness::start_with(loopback_policy(&[echo.port()]), options).await;
    let mut stream = h.connect().await;
    stream
        .write_all(
            format!(
                "CONNECT localhost:{} HTTP/1.1\r\nHost: x\r\n\r\n",
                echo.port()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    assert!(read_head(&mut stream).await.starts_with("HTTP/1.1 200"));
    stream.write_all(b"ping").await.unwrap();
    let mut back = [0u8; 4];
    stream.read_exact(&mut back).await.unwrap();
    assert_eq!(&back, b"ping");

    // Then silence both ways: the proxy closes the tunnel.
    assert!(read_until_closed(&mut stream).await.is_empty());
    let event = h.next_event().await;
    assert_eq!(
        (event.status, event.bytes_up, event.bytes_down),
        (200, 4, 4)
    );
    assert!(
        event
            .error
            .as_deref()
            .is_some_and(|e| e.contains("no byte either way")),
        "{:?}",
        event.error
    );
}

#[tokio::test]
async fn a_tunnel_carries_megabytes_intact_both_ways() {
    let echo = start_echo().await;
    let mut h = Harness::start(loopback_policy(&[echo.port()])).await;
    let stream = h.connect().await;
    let (mut read, mut write) = stream.into_split();
    write
        .write_all(
            format!(
                "CONNECT localhost:{} HTTP/1.1\r\nHost: x\r\n\r\n",
                echo.port()
            )
            .as_bytes(),
        )
        .await
        .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        read.read_exact(&mut byte).await.unwrap();
        head.push(byte[0]);
    }
    assert!(head.starts_with(b"HTTP/1.1 200"));

    let payload: Vec<u8> = (0..4 * 1024 * 1024u32).map(|i| (i % 251) as u8).collect();
    let sending = async {
        write.write_all(&payload).await.unwrap();
        write.shutdown().await.unwrap();
    };
    let receiving = async {
        let mut echoed = Vec::new();
        tokio::time::timeout(HANG_GUARD, read.read_to_end(&mut echoed))
            .await
            .expect("the echo")
            .unwrap();
        echoed
    };
    let ((), echoed) = tokio::join!(sending, receiving);
    assert!(echoed == payload, "the echo differs from what was sent");
    let event = h.next_event().await;
    assert_eq!(
        (event.bytes_up, event.bytes_down, event.error),
        (payload.len() as u64, payload.len() as u64, None)
    );
}

#[tokio::test]
async fn connections_over_the_limit_get_503_and_a_freed_slot_is_reused() {
    let upstream = start_upstream().await;
    let port = upstream.addr.port();
    let options = ProxyOptions::new("sandbox-test").max_connections(2);
    let h = Harness::start_with(loopback_policy(&[port]), options).await;
    let request = format!("GET http://localhost:{port}/ HTTP/1.1\r\nHost: x\r\n\r\n");

    // Two kept-alive connections, each proven served.
    let mut held = Vec::new();
    for _ in 0..2 {
        let mut stream = h.connect().await;
        stream.write_all(request.as_bytes()).await.unwrap();
        assert_eq!(read_response(&mut stream).await.status, 200);
        held.push(stream);
    }

    // A third is answered 503 without being read, and closed.
    let mut third = h.connect().await;
    let refused = read_response(&mut third).await;
    assert_eq!(refused.status, 503, "{refused:?}");
    assert_eq!(
        refused.headers.get("connection").map(String::as_str),
        Some("close")
    );
    assert!(
        refused.body.contains("limit of 2 connections"),
        "{}",
        refused.body
    );
    assert!(read_until_closed(&mut third).await.is_empty());

    // The held connections are still served.
    held[0].write_all(request.as_bytes()).await.unwrap();
    assert_eq!(read_response(&mut held[0]).await.status, 200);

    // Once one closes, its slot serves a new connection (as soon as the proxy has noticed).
    drop(held.pop());
    let closing =
        format!("GET http://localhost:{port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    let status = tokio::time::timeout(HANG_GUARD, async {
        loop {
            let mut stream = h.connect().await;
            // A refused connection may be closed before the request is written.
            let _ = stream.write_all(closing.as_bytes()).await;
            let answer = read_until_closed(&mut stream).await;
            let text = String::from_utf8_lossy(&answer).into_owned();
            if !text.starts_with("HTTP/1.1 503") {
                return text;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    })
    .await
    .expect("a freed slot");
    assert!(status.starts_with("HTTP/1.1 200"), "{status}");
}

#[tokio::test]
async fn slow_and_stalled_clients_do_not_hold_up_others() {
    let upstream = start_upstream().await;
    let port = upstream.addr.port();
    let h = Harness::start(loopback_policy(&[port])).await;

    // One client stops halfway through its request head, another halfway through its body.
    let mut slow_head = h.connect().await;
    slow_head
        .write_all(b"GET http://localhost/ HTTP/1.1\r\nHost: localhost\r\nX-Slow: ")
        .await
        .unwrap();
    let mut slow_body = h.connect().await;
    slow_body
        .write_all(
            format!(
                "POST http://localhost:{port}/ HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\nabc"
            )
            .as_bytes(),
        )
        .await
        .unwrap();

    // Meanwhile everyone else is served as usual.
    for _ in 0..3 {
        let response = h
            .exchange(&format!(
                "GET http://localhost:{port}/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
            ))
            .await;
        assert_eq!(response.status, 200);
    }
    drop((slow_head, slow_body));
}
