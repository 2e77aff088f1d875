//! Credential routes end to end: a client talks to the proxy on loopback, the proxy talks
//! TLS to a local upstream whose certificate comes from a test CA, and the upstream reports
//! what it received. The secret is configured on the proxy only; the client sends a
//! placeholder.

mod support;

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt, Full};
use hyper::body::{Body, Frame, Incoming};
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, oneshot};
use warden_egress::{AuditEvent, ChannelSink, Decision, EgressPolicy, Proxy, ProxyOptions, Routes};
use warden_policy::{AuthScheme, CredentialSpec, RouteKind, RouteSpec, TokenExchangeSpec};

use support::tls::TestCa;

const SECRET: &str = "sk-ant-very-secret-0123456789";
const PLACEHOLDER: &str = "warden-placeholder";
/// Guards against a hang only; no test asserts how long anything takes.
const HANG_GUARD: Duration = Duration::from_secs(60);

// ---------------------------------------------------------------------------------------------
// A body fed from a channel, for streaming both ways.

struct ChannelBody(mpsc::Receiver<Bytes>);

impl Body for ChannelBody {
    type Data = Bytes;
    type Error = Infallible;
    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        self.0
            .poll_recv(cx)
            .map(|chunk| chunk.map(|b| Ok(Frame::data(b))))
    }
}

type TestBody = BoxBody<Bytes, Infallible>;

fn full(data: impl Into<Bytes>) -> TestBody {
    Full::new(data.into()).boxed()
}

/// A deterministic byte pattern and its sum, to check large bodies without keeping them.
fn pattern(offset: u64, len: usize) -> Bytes {
    (0..len as u64)
        .map(|i| ((offset + i) % 251) as u8)
        .collect::<Vec<u8>>()
        .into()
}

fn streamed(total: u64, chunk: usize) -> TestBody {
    let (tx, rx) = mpsc::channel(4);
    tokio::spawn(async move {
        let mut sent = 0u64;
        while sent < total {
            let n = chunk.min((total - sent) as usize);
            if tx.send(pattern(sent, n)).await.is_err() {
                return;
            }
            sent += n as u64;
        }
    });
    ChannelBody(rx).boxed()
}

/// Reads a body to the end, checking it is the pattern; returns its length.
async fn drain_pattern(mut body: Incoming) -> u64 {
    let mut seen = 0u64;
    while let Some(frame) = body.frame().await {
        if let Ok(data) = frame.unwrap().into_data() {
            assert_eq!(data, pattern(seen, data.len()), "body corrupted at {seen}");
            seen += data.len() as u64;
        }
    }
    seen
}

// ---------------------------------------------------------------------------------------------
// The upstream: HTTPS on loopback.

struct Upstream {
    addr: SocketAddr,
    hits: Arc<AtomicUsize>,
    /// Opened by the test to let `/sse` send its second event.
    sse_gate: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
    ca: TestCa,
}

async fn start_upstream() -> (Upstream, oneshot::Sender<()>) {
    let ca = TestCa::new();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let (gate_tx, gate_rx) = oneshot::channel();
    let sse_gate = Arc::new(Mutex::new(Some(gate_rx)));
    let acceptor = ca.acceptor.clone();
    let (counter, gate) = (Arc::clone(&hits), Arc::clone(&sse_gate));
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let (acceptor, counter, gate) =
                (acceptor.clone(), Arc::clone(&counter), Arc::clone(&gate));
            tokio::spawn(async move {
                let Ok(tls) = acceptor.accept(stream).await else {
                    return;
                };
                let service = service_fn(move |req| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    upstream_answer(req, Arc::clone(&gate))
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(tls), service)
                    .await;
            });
        }
    });
    (
        Upstream {
            addr,
            hits,
            sse_gate,
            ca,
        },
        gate_tx,
    )
}

async fn upstream_answer(
    req: Request<Incoming>,
    gate: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_string();
    if path == "/v1/sse" {
        let (tx, rx) = mpsc::channel(1);
        let gate = gate.lock().unwrap().take();
        tokio::spawn(async move {
            let _ = tx
                .send(Bytes::from_static(b"event: one\ndata: {}\n\n"))
                .await;
            if let Some(gate) = gate {
                let _ = gate.await;
            }
            let _ = tx
                .send(Bytes::from_static(b"event: two\ndata: {}\n\n"))
                .await;
        });
        let mut response = Response::new(ChannelBody(rx).boxed());
        response
            .headers_mut()
            .insert("content-type", "text/event-stream".parse().unwrap());
        return Ok(response);
    }
    if let Some(n) = path.strip_prefix("/v1/download/") {
        return Ok(Response::new(streamed(n.parse().unwrap(), 64 * 1024)));
    }
    let mut headers = BTreeMap::new();
    for (name, value) in req.headers() {
        headers.insert(
            name.as_str().to_string(),
            value.to_str().unwrap_or("<binary>").to_string(),
        );
    }
    let method = req.method().to_string();
    let target = req.uri().to_string();
    let length = drain_pattern(req.into_body()).await;
    let description = serde_json::json!({
        "method": method,
        "target": target,
        "headers": headers,
        "body_length": length,
    });
    let mut response = Response::new(full(description.to_string()));
    response
        .headers_mut()
        .insert("x-upstream", "yes".parse().unwrap());
    Ok(response)
}

// ---------------------------------------------------------------------------------------------
// The proxy and its client.

fn spec(name: &str, kind: RouteKind, upstream: &str, ca: &TestCa) -> RouteSpec {
    let (header, scheme) = match kind {
        RouteKind::Anthropic => ("x-api-key", AuthScheme::Raw),
        RouteKind::Git => ("authorization", AuthScheme::Basic),
        _ => ("authorization", AuthScheme::Bearer),
    };
    RouteSpec {
        name: name.into(),
        kind,
        upstream: upstream.into(),
        header: header.into(),
        scheme,
        username: "x-access-token".into(),
        credential: CredentialSpec::Env("TEST_SECRET".into()),
        ca_file: Some(ca.ca_file.clone()),
    }
}

fn env(name: &str) -> Option<String> {
    (name == "TEST_SECRET").then(|| SECRET.to_string())
}

async fn start_proxy(
    specs: &[RouteSpec],
) -> (
    warden_egress::ProxyHandle,
    mpsc::UnboundedReceiver<AuditEvent>,
) {
    let routes = Routes::load(specs, &env, Duration::from_secs(5)).unwrap();
    let (sink, events) = ChannelSink::new();
    let proxy = Proxy::bind(
        "127.0.0.1:0".parse().unwrap(),
        // Forwarding admits nothing: routes must not depend on the allowlist.
        EgressPolicy::new(),
        Arc::new(sink),
        ProxyOptions::new("sb-routes"),
    )
    .await
    .unwrap();
    let own = proxy.local_addr().to_string();
    let proxy = proxy.with_routes(routes.answer_as(own));
    (proxy.spawn(), events)
}

async fn send(proxy: SocketAddr, req: Request<TestBody>) -> Response<Incoming> {
    let stream = TcpStream::connect(proxy).await.unwrap();
    let (mut sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(connection);
    tokio::time::timeout(HANG_GUARD, sender.send_request(req))
        .await
        .expect("hang guard")
        .unwrap()
}

async fn text(response: Response<Incoming>) -> String {
    let body = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(body.to_vec()).unwrap()
}

async fn json(response: Response<Incoming>) -> Value {
    let body = text(response).await;
    serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn request(method: &str, uri: &str) -> hyper::http::request::Builder {
    Request::builder().method(method).uri(uri)
}

// ---------------------------------------------------------------------------------------------

#[tokio::test]
async fn anthropic_route_replaces_the_placeholder_key_and_keeps_the_path() {
    let (upstream, _gate) = start_upstream().await;
    let base = format!("https://localhost:{}", upstream.addr.port());
    let (proxy, mut events) =
        start_proxy(&[spec("anthropic", RouteKind::Anthropic, &base, &upstream.ca)]).await;

    let response = send(
        proxy.local_addr(),
        request("POST", "/anthropic/v1/messages?beta=true")
            .header("host", proxy.local_addr().to_string())
            .header("x-api-key", PLACEHOLDER)
            .header("anthropic-version", "2023-06-01")
            .header("proxy-authorization", "Basic Zm9vOmJhcg==")
            .body(streamed(100_000, 7_000))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    assert_eq!(response.headers()["x-upstream"], "yes");
    let seen = json(response).await;
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["target"], "/v1/messages?beta=true");
    assert_eq!(seen["body_length"], 100_000);
    let headers = &seen["headers"];
    assert_eq!(headers["x-api-key"], SECRET);
    assert_eq!(headers["anthropic-version"], "2023-06-01");
    assert_eq!(
        headers["host"],
        format!("localhost:{}", upstream.addr.port())
    );
    assert!(headers.get("proxy-authorization").is_none());

    let event = events.recv().await.unwrap();
    assert_eq!(event.verdict, Decision::Allowed);
    assert_eq!(event.rule, "route:anthropic");
    assert_eq!(event.host, "localhost");
    assert_eq!(event.port, upstream.addr.port());
    assert_eq!(event.status, 200);
    assert_eq!(event.bytes_up, 100_000);
    assert!(event.bytes_down > 0);
    assert!(!serde_json::to_string(&event).unwrap().contains(SECRET));
}

#[tokio::test]
async fn absolute_form_requests_to_the_proxy_itself_are_routes_too() {
    // What a client with HTTP_PROXY set sends for http://127.0.0.1:3128/openai/v1/...
    let (upstream, _gate) = start_upstream().await;
    let base = format!("https://127.0.0.1:{}/gateway/", upstream.addr.port());
    let (proxy, _events) =
        start_proxy(&[spec("openai", RouteKind::Openai, &base, &upstream.ca)]).await;
    let uri = format!("http://{}/openai/v1/responses", proxy.local_addr());
    let response = send(
        proxy.local_addr(),
        request("POST", &uri)
            .header("authorization", format!("Bearer {PLACEHOLDER}"))
            .body(full(pattern(0, 100)))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::OK);
    let seen = json(response).await;
    assert_eq!(seen["target"], "/gateway/v1/responses");
    assert_eq!(seen["headers"]["authorization"], format!("Bearer {SECRET}"));
}

#[tokio::test]
async fn git_route_sends_basic_credentials() {
    let (upstream, _gate) = start_upstream().await;
    let base = format!("https://localhost:{}", upstream.addr.port());
    let (proxy, _events) = start_proxy(&[spec("git", RouteKind::Git, &base, &upstream.ca)]).await;
    let response = send(
        proxy.local_addr(),
        request("GET", "/git/acme/app.git/info/refs?service=git-upload-pack")
            .body(full(""))
            .unwrap(),
    )
    .await;
    let seen = json(response).await;
    assert_eq!(
        seen["target"],
        "/acme/app.git/info/refs?service=git-upload-pack"
    );
    let expected = format!(
        "Basic {}",
        base64_encode(format!("x-access-token:{SECRET}").as_bytes())
    );
    assert_eq!(seen["headers"]["authorization"], expected);
}

fn base64_encode(data: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(data)
}

#[tokio::test]
async fn a_route_reaches_only_its_own_upstream() {
    let (upstream, _gate) = start_upstream().await;
    let base = format!("https://localhost:{}/team-a", upstream.addr.port());
    let (proxy, mut events) =
        start_proxy(&[spec("api", RouteKind::Generic, &base, &upstream.ca)]).await;

    // Paths that would climb out of the base, or smuggle a slash, are refused before any
    // upstream request is made.
    for path in [
        "/api/../team-b/x",
        "/api/%2e%2e/team-b/x",
        "/api/.%2E/team-b",
        "/api/x%2F..%2Fteam-b",
        "/api/x/./y",
        "/apix/y",
    ] {
        let response = send(
            proxy.local_addr(),
            request("GET", path).body(full("")).unwrap(),
        )
        .await;
        assert!(
            response.status() == StatusCode::BAD_REQUEST
                || response.status() == StatusCode::NOT_FOUND,
            "{path}: {}",
            response.status()
        );
        let _ = text(response).await;
        let event = events.recv().await.unwrap();
        assert_eq!(event.verdict, Decision::Denied, "{path}");
    }
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 0);

    // A forged Host header changes nothing: the upstream is the configured one.
    let response = send(
        proxy.local_addr(),
        request("GET", "/api/ok")
            .header("host", "evil.example")
            .body(full(""))
            .unwrap(),
    )
    .await;
    let seen = json(response).await;
    assert_eq!(seen["target"], "/team-a/ok");
    assert_eq!(
        seen["headers"]["host"],
        format!("localhost:{}", upstream.addr.port())
    );

    // Absolute-form requests for other hosts are forwarding, judged by the (empty) allowlist,
    // and the secret is not added to them.
    let response = send(
        proxy.local_addr(),
        request(
            "GET",
            &format!("http://localhost:{}/api/x", upstream.addr.port()),
        )
        .body(full(""))
        .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::FORBIDDEN);
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn unknown_routes_get_404_listing_the_routes() {
    let (upstream, _gate) = start_upstream().await;
    let base = format!("https://localhost:{}", upstream.addr.port());
    let (proxy, mut events) = start_proxy(&[
        spec("anthropic", RouteKind::Anthropic, &base, &upstream.ca),
        spec("git", RouteKind::Git, &base, &upstream.ca),
    ])
    .await;
    let response = send(
        proxy.local_addr(),
        request("GET", "/openai/v1/models").body(full("")).unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::NOT_FOUND);
    let body = text(response).await;
    assert!(body.contains("no route `openai`"), "{body}");
    assert!(body.contains("/anthropic, /git"), "{body}");
    assert_eq!(events.recv().await.unwrap().rule, "route:unknown");
}

#[tokio::test]
async fn server_sent_events_arrive_one_by_one() {
    let (upstream, gate) = start_upstream().await;
    let base = format!("https://localhost:{}", upstream.addr.port());
    let (proxy, _events) =
        start_proxy(&[spec("anthropic", RouteKind::Anthropic, &base, &upstream.ca)]).await;
    let response = send(
        proxy.local_addr(),
        request("GET", "/anthropic/v1/sse").body(full("")).unwrap(),
    )
    .await;
    assert_eq!(response.headers()["content-type"], "text/event-stream");
    let mut body = response.into_body();
    // The upstream holds the second event back until the first has reached the client:
    // a proxy that buffered the stream would never deliver the first.
    let mut received = Vec::new();
    while !received.ends_with(b"\n\n") {
        let frame = tokio::time::timeout(HANG_GUARD, body.frame())
            .await
            .expect("the first event was held back")
            .unwrap()
            .unwrap();
        received.extend_from_slice(&frame.into_data().unwrap());
    }
    assert_eq!(received, b"event: one\ndata: {}\n\n");
    gate.send(()).unwrap();
    let rest = body.collect().await.unwrap().to_bytes();
    assert_eq!(&rest[..], b"event: two\ndata: {}\n\n");
    drop(upstream.sse_gate);
}

#[tokio::test]
async fn large_bodies_stream_both_ways() {
    let (upstream, _gate) = start_upstream().await;
    let base = format!("https://localhost:{}", upstream.addr.port());
    let (proxy, _events) =
        start_proxy(&[spec("anthropic", RouteKind::Anthropic, &base, &upstream.ca)]).await;
    const SIZE: u64 = 64 * 1024 * 1024;
    let response = send(
        proxy.local_addr(),
        request("PUT", "/anthropic/v1/upload")
            .body(streamed(SIZE, 1024 * 1024))
            .unwrap(),
    )
    .await;
    assert_eq!(json(response).await["body_length"], SIZE);

    let response = send(
        proxy.local_addr(),
        request("GET", &format!("/anthropic/v1/download/{SIZE}"))
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(drain_pattern(response.into_body()).await, SIZE);
}

#[tokio::test]
async fn an_upstream_with_an_untrusted_certificate_gets_502() {
    let (upstream, _gate) = start_upstream().await;
    let base = format!("https://localhost:{}", upstream.addr.port());
    let mut untrusted = spec("anthropic", RouteKind::Anthropic, &base, &upstream.ca);
    untrusted.ca_file = None;
    let (proxy, mut events) = start_proxy(&[untrusted]).await;
    let response = send(
        proxy.local_addr(),
        request("GET", "/anthropic/v1/models")
            .body(full(""))
            .unwrap(),
    )
    .await;
    assert_eq!(response.status(), StatusCode::BAD_GATEWAY);
    let body = text(response).await;
    assert!(body.contains("route anthropic"), "{body}");
    assert!(body.to_lowercase().contains("certificate"), "{body}");
    let event = events.recv().await.unwrap();
    assert_eq!(event.status, 502);
    assert_eq!(upstream.hits.load(Ordering::SeqCst), 0);
}

#[test]
fn routes_that_cannot_be_served_fail_to_load_naming_the_field() {
    let ca = TestCa::new();
    let mut missing = spec("anthropic", RouteKind::Anthropic, "https://x", &ca);
    missing.credential = CredentialSpec::Env("NOT_SET_ANYWHERE".into());
    let err = Routes::load(&[missing], &env, Duration::from_secs(1)).unwrap_err();
    assert_eq!(err.field, "credential");
    assert!(
        err.to_string().contains("routes.anthropic.credential"),
        "{err}"
    );
    assert!(err.to_string().contains("NOT_SET_ANYWHERE"), "{err}");

    let mut cleartext = spec("internal", RouteKind::Generic, "https://x", &ca);
    cleartext.credential = CredentialSpec::TokenExchange(Box::new(TokenExchangeSpec::new(
        "http://sts.example.com/token",
        ca.ca_file.clone(),
    )));
    let err = Routes::load(&[cleartext], &env, Duration::from_secs(1)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("routes.internal.credential.token_exchange.endpoint: "),
        "{err}"
    );

    let mut bad_ca = spec("anthropic", RouteKind::Anthropic, "https://x", &ca);
    bad_ca.ca_file = Some("/nonexistent/ca.pem".into());
    let err = Routes::load(&[bad_ca], &env, Duration::from_secs(1)).unwrap_err();
    assert!(
        err.to_string().contains("routes.anthropic.ca_file"),
        "{err}"
    );
}

/// A token endpoint that answers every exchange with the same access token, counting calls.
async fn start_token_endpoint() -> (SocketAddr, Arc<AtomicUsize>) {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let calls = Arc::new(AtomicUsize::new(0));
    let counter = Arc::clone(&calls);
    tokio::spawn(async move {
        loop {
            let (stream, _) = listener.accept().await.unwrap();
            let counter = Arc::clone(&counter);
            tokio::spawn(async move {
                let service = service_fn(move |req: Request<Incoming>| {
                    counter.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let form = req.into_body().collect().await.unwrap().to_bytes();
                        let form = String::from_utf8(form.to_vec()).unwrap();
                        assert!(form.contains("subject_token=workload-jwt"), "{form}");
                        let answer = r#"{"access_token":"exchanged-1","issued_token_type":"urn:ietf:params:oauth:token-type:access_token","token_type":"Bearer","expires_in":3600}"#;
                        let mut response = Response::new(full(answer));
                        response
                            .headers_mut()
                            .insert("content-type", "application/json".parse().unwrap());
                        Ok::<_, Infallible>(response)
                    }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    (addr, calls)
}

#[tokio::test]
async fn a_route_can_take_its_credential_from_a_token_exchange() {
    let (upstream, _gate) = start_upstream().await;
    let (sts, calls) = start_token_endpoint().await;
    let dir = tempfile::tempdir().unwrap();
    let subject = dir.path().join("token");
    std::fs::write(&subject, "workload-jwt\n").unwrap();
    let mut route = spec(
        "internal",
        RouteKind::Generic,
        &format!("https://localhost:{}", upstream.addr.port()),
        &upstream.ca,
    );
    route.credential = CredentialSpec::TokenExchange(Box::new(TokenExchangeSpec {
        audience: Some("internal-api".into()),
        ..TokenExchangeSpec::new(format!("http://{sts}/token"), subject)
    }));
    let (proxy, _events) = start_proxy(&[route]).await;
    for _ in 0..3 {
        let response = send(
            proxy.local_addr(),
            request("GET", "/internal/v1/items").body(full("")).unwrap(),
        )
        .await;
        let seen = json(response).await;
        assert_eq!(seen["headers"]["authorization"], "Bearer exchanged-1");
    }
    assert_eq!(calls.load(Ordering::SeqCst), 1, "the token is cached");
}
