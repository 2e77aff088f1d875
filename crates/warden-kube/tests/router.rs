//! `warden router` over real sockets, without a cluster: upstream's validation and error
//! bodies, the three ways to a pod (X-Sandbox-Pod-IP, the watch-fed index, DNS), header
//! rewriting, WebSocket, h2c with trailers, streaming both ways, 502/504, tokens, /healthz
//! and /metrics, and start-up with an API server that does not answer.
//!
//! Backends listen on 0.0.0.0 and are reached through this host's non-loopback IPv4 address,
//! because the router refuses loopback pod IPs as upstream does.

use std::collections::HashMap;
use std::convert::Infallible;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warden_kube::testing::host_ip;

use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::{Frame, Incoming};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use serde_json::{Value, json};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, mpsc};
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::handshake::derive_accept_key;
use tokio_tungstenite::tungstenite::protocol::Role;
use warden_kube::router::{
    Resolve, RouterConfig, SandboxIndex, SandboxRouter, TokenTable, watch_pods,
};

type TestBody = UnsyncBoxBody<Bytes, hyper::Error>;

fn full(b: impl Into<Bytes>) -> TestBody {
    Full::new(b.into()).map_err(|n| match n {}).boxed_unsync()
}

fn channel_body(rx: mpsc::Receiver<Frame<Bytes>>) -> TestBody {
    let frames = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|f| (Ok::<_, hyper::Error>(f), rx))
    });
    StreamBody::new(frames).boxed_unsync()
}

/// A backend on 0.0.0.0 that describes the requests it gets, and a few special paths.
struct Backend {
    port: u16,
    connections: Arc<AtomicUsize>,
    release: Arc<Notify>,
}

async fn backend() -> Backend {
    let listener = TcpListener::bind("0.0.0.0:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let connections = Arc::new(AtomicUsize::new(0));
    let release = Arc::new(Notify::new());
    let (count, rel) = (connections.clone(), release.clone());
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            count.fetch_add(1, Ordering::SeqCst);
            let rel = rel.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| backend_answer(req, rel.clone()));
                let _ = auto::Builder::new(TokioExecutor::new())
                    .serve_connection_with_upgrades(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Backend {
        port,
        connections,
        release,
    }
}

async fn backend_answer(
    mut req: Request<Incoming>,
    release: Arc<Notify>,
) -> Result<Response<TestBody>, Infallible> {
    let path = req.uri().path().to_string();
    match path.as_str() {
        "/slow" => {
            tokio::time::sleep(Duration::from_secs(5)).await;
            Ok(Response::new(full("late")))
        }
        "/drip" => {
            // The first chunk now, the second only when the test says so.
            let (tx, rx) = mpsc::channel(4);
            tokio::spawn(async move {
                let _ = tx.send(Frame::data(Bytes::from("first"))).await;
                release.notified().await;
                let _ = tx.send(Frame::data(Bytes::from("second"))).await;
            });
            Ok(Response::new(channel_body(rx)))
        }
        "/first-chunk" => {
            // Answers with the request body's first chunk, before the body has ended.
            let first = loop {
                match req.body_mut().frame().await {
                    Some(Ok(f)) => {
                        if let Ok(d) = f.into_data() {
                            break d;
                        }
                    }
                    _ => break Bytes::new(),
                }
            };
            let (tx, rx) = mpsc::channel(4);
            let mut body = req.into_body();
            tokio::spawn(async move {
                let _ = tx.send(Frame::data(first)).await;
                // Then the rest, as it comes.
                while let Some(Ok(f)) = body.frame().await {
                    if let Ok(d) = f.into_data() {
                        let _ = tx.send(Frame::data(d)).await;
                    }
                }
            });
            Ok(Response::new(channel_body(rx)))
        }
        "/grpc.Echo/Echo" => {
            // A bidirectional gRPC-style stream: every request message back, then trailers.
            let (tx, rx) = mpsc::channel(4);
            let te = req.headers().get("te").cloned();
            let mut body = req.into_body();
            tokio::spawn(async move {
                while let Some(Ok(f)) = body.frame().await {
                    if let Ok(d) = f.into_data() {
                        let _ = tx.send(Frame::data(d)).await;
                    }
                }
                let mut trailers = HeaderMap::new();
                trailers.insert("grpc-status", "0".parse().unwrap());
                trailers.insert("grpc-message", "echoed".parse().unwrap());
                let _ = tx.send(Frame::trailers(trailers)).await;
            });
            let mut resp = Response::new(channel_body(rx));
            resp.headers_mut()
                .insert("content-type", "application/grpc".parse().unwrap());
            if let Some(te) = te {
                resp.headers_mut().insert("x-seen-te", te);
            }
            Ok(resp)
        }
        "/ws" => {
            let key = req.headers()["sec-websocket-key"].as_bytes().to_vec();
            let upgrade = hyper::upgrade::on(&mut req);
            tokio::spawn(async move {
                let Ok(upgraded) = upgrade.await else { return };
                let mut ws = tokio_tungstenite::WebSocketStream::from_raw_socket(
                    TokioIo::new(upgraded),
                    Role::Server,
                    None,
                )
                .await;
                while let Some(Ok(msg)) = ws.next().await {
                    if msg.is_text() || msg.is_binary() {
                        let _ = ws.send(msg).await;
                    } else if msg.is_close() {
                        break;
                    }
                }
            });
            let resp = Response::builder()
                .status(StatusCode::SWITCHING_PROTOCOLS)
                .header("connection", "upgrade")
                .header("upgrade", "websocket")
                .header("sec-websocket-accept", derive_accept_key(&key))
                .body(full(Bytes::new()))
                .unwrap();
            Ok(resp)
        }
        _ => {
            let method = req.method().to_string();
            let uri = req.uri().to_string();
            let version = format!("{:?}", req.version());
            let headers: HashMap<String, String> = req
                .headers()
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("?").to_string()))
                .collect();
            let body = req.into_body().collect().await.unwrap().to_bytes();
            let doc = json!({
                "method": method,
                "uri": uri,
                "version": version,
                "headers": headers,
                "body": String::from_utf8_lossy(&body),
            });
            let mut resp = Response::new(full(doc.to_string()));
            resp.headers_mut()
                .insert("x-backend", "yes".parse().unwrap());
            resp.headers_mut()
                .insert("keep-alive", "timeout=5".parse().unwrap());
            Ok(resp)
        }
    }
}

/// Answers DNS from a table, and remembers the names asked.
#[derive(Default)]
struct TableResolver {
    hosts: HashMap<String, IpAddr>,
    asked: Mutex<Vec<String>>,
}

impl Resolve for TableResolver {
    fn resolve<'a>(
        &'a self,
        host: &'a str,
        port: u16,
    ) -> std::pin::Pin<Box<dyn Future<Output = std::io::Result<SocketAddr>> + Send + 'a>> {
        self.asked.lock().unwrap().push(host.to_string());
        let found = self.hosts.get(host).map(|ip| SocketAddr::new(*ip, port));
        Box::pin(async move {
            found.ok_or_else(|| std::io::Error::new(std::io::ErrorKind::NotFound, "no such host"))
        })
    }
}

async fn start(
    config: RouterConfig,
    index: SandboxIndex,
    resolver: Arc<dyn Resolve>,
) -> (SocketAddr, SandboxRouter) {
    let router = SandboxRouter::with_resolver(config, index, resolver);
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(router.clone().serve(listener, std::future::pending()));
    (addr, router)
}

async fn start_default() -> (SocketAddr, SandboxRouter) {
    start(
        RouterConfig::default(),
        SandboxIndex::new(),
        Arc::new(TableResolver::default()),
    )
    .await
}

struct Answer {
    status: StatusCode,
    headers: HeaderMap,
    body: String,
}

impl Answer {
    fn json(&self) -> Value {
        serde_json::from_str(&self.body).unwrap_or_else(|e| panic!("{e}: {}", self.body))
    }

    fn detail(&self) -> String {
        assert_eq!(self.headers["content-type"], "application/json");
        let v = self.json();
        assert_eq!(v.as_object().unwrap().len(), 1, "{v}");
        v["detail"].as_str().unwrap().to_string()
    }
}

/// One HTTP/1.1 request on its own connection.
async fn send(
    router: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &str,
) -> Answer {
    let stream = TcpStream::connect(router).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let mut req = Request::builder()
        .method(Method::from_bytes(method.as_bytes()).unwrap())
        .uri(path)
        .header("host", "router.example:8080");
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = sender
        .send_request(req.body(Full::new(Bytes::from(body.to_string()))).unwrap())
        .await
        .unwrap();
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    Answer {
        status,
        headers,
        body: String::from_utf8_lossy(&body).into_owned(),
    }
}

async fn get(router: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Answer {
    send(router, "GET", path, headers, "").await
}

async fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

#[tokio::test]
async fn bad_headers_get_upstream_errors() {
    let (router, _) = start_default().await;
    let long = "a".repeat(64);
    let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
        (vec![], "X-Sandbox-ID header is required."),
        (
            vec![("x-sandbox-id", "")],
            "X-Sandbox-ID header is required.",
        ),
        (
            vec![("x-sandbox-id", "Bad_ID")],
            "Invalid sandbox ID format.",
        ),
        (vec![("x-sandbox-id", &long)], "Invalid sandbox ID format."),
        (vec![("x-sandbox-id", "s.t")], "Invalid sandbox ID format."),
        (
            vec![("x-sandbox-id", "s"), ("x-sandbox-namespace", "Team")],
            "Invalid namespace format.",
        ),
        (
            vec![("x-sandbox-id", "s"), ("x-sandbox-port", "0")],
            "Invalid port format.",
        ),
        (
            vec![("x-sandbox-id", "s"), ("x-sandbox-port", "65536")],
            "Invalid port format.",
        ),
        (
            vec![("x-sandbox-id", "s"), ("x-sandbox-port", "http")],
            "Invalid port format.",
        ),
    ];
    let mut cases = cases;
    for ip in [
        "127.0.0.1",
        "::1",
        "169.254.169.254",
        "fe80::1",
        "224.0.0.1",
        "ff02::1",
        "0.0.0.0",
        "::",
        "::ffff:127.0.0.1",
        "not-an-ip",
    ] {
        cases.push((
            vec![("x-sandbox-id", "s"), ("x-sandbox-pod-ip", ip)],
            "Invalid target IP address.",
        ));
    }
    for (headers, want) in &cases {
        for path in ["/", "/execute", "/healthz"] {
            // /healthz is the router's only for requests without the header (the first case
            // has none: its answer is /healthz's, checked below).
            if headers.is_empty() && path == "/healthz" {
                continue;
            }
            let a = send(router, "POST", path, headers, "{}").await;
            assert_eq!(
                a.status,
                StatusCode::BAD_REQUEST,
                "{headers:?} {path}: {}",
                a.body
            );
            assert_eq!(a.detail(), *want, "{headers:?} {path}");
        }
    }
}

#[tokio::test]
async fn routes_by_pod_ip_header_to_a_non_loopback_backend() {
    let ip = host_ip().to_string();
    let b = backend().await;
    let port = b.port.to_string();
    let (router, _) = start_default().await;
    let a = send(
        router,
        "POST",
        "/execute?x=1&y=%20",
        &[
            ("x-sandbox-id", "sbx-1"),
            ("x-sandbox-namespace", "team-a"),
            ("x-sandbox-port", &port),
            ("x-sandbox-pod-ip", &ip),
            ("authorization", "Bearer client-secret"),
            ("x-forwarded-for", "6.6.6.6"),
            ("x-forwarded-host", "spoofed.example"),
            ("connection", "x-private"),
            ("x-private", "1"),
            ("content-type", "application/json"),
        ],
        r#"{"command":"echo hi"}"#,
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.headers["x-backend"], "yes");
    assert!(
        a.headers.get("keep-alive").is_none(),
        "hop-by-hop from the backend is dropped"
    );
    let seen = a.json();
    assert_eq!(seen["method"], "POST");
    assert_eq!(seen["uri"], "/execute?x=1&y=%20");
    assert_eq!(seen["body"], r#"{"command":"echo hi"}"#);
    let h = &seen["headers"];
    assert_eq!(
        h["host"],
        format!("{ip}:{port}"),
        "Host is the backend's, not the client's"
    );
    assert!(h.get("authorization").is_none(), "{h}");
    assert!(h.get("x-private").is_none(), "{h}");
    assert_eq!(h["x-forwarded-for"], "127.0.0.1");
    assert_eq!(h["x-forwarded-host"], "router.example:8080");
    assert_eq!(h["x-forwarded-proto"], "http");
    assert_eq!(h["x-sandbox-id"], "sbx-1");
    assert_eq!(h["content-type"], "application/json");

    // Backend connections are pooled: twenty more requests, no new connection.
    let before = b.connections.load(Ordering::SeqCst);
    for _ in 0..20 {
        let a = get(
            router,
            "/",
            &[
                ("x-sandbox-id", "sbx-1"),
                ("x-sandbox-port", &port),
                ("x-sandbox-pod-ip", &ip),
            ],
        )
        .await;
        assert_eq!(a.status, StatusCode::OK);
    }
    assert_eq!(b.connections.load(Ordering::SeqCst), before);
}

#[tokio::test]
async fn routes_through_the_index_then_falls_back_to_dns() {
    let ip = host_ip();
    let b = backend().await;
    let port = b.port.to_string();
    let index = SandboxIndex::new();
    let resolver = Arc::new(TableResolver::default());
    let (router, _) = start(RouterConfig::default(), index.clone(), resolver.clone()).await;
    let hdrs = [
        ("x-sandbox-id", "sbx-2"),
        ("x-sandbox-namespace", "team-a"),
        ("x-sandbox-port", port.as_str()),
    ];

    index.insert("team-a", "sbx-2", ip);
    let a = get(router, "/files", &hdrs).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.json()["uri"], "/files");
    assert!(
        resolver.asked.lock().unwrap().is_empty(),
        "the index answers without DNS"
    );

    // Another namespace's sandbox of the same name is not this one.
    let a = get(
        router,
        "/files",
        &[
            ("x-sandbox-id", "sbx-2"),
            ("x-sandbox-namespace", "team-b"),
            ("x-sandbox-port", port.as_str()),
        ],
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        a.detail(),
        "Could not connect to the backend sandbox: sbx-2"
    );

    index.remove("team-a", "sbx-2");
    let a = get(router, "/files", &hdrs).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        resolver.asked.lock().unwrap().as_slice(),
        [
            "sbx-2.team-b.svc.cluster.local.",
            "sbx-2.team-a.svc.cluster.local."
        ]
    );
}

#[tokio::test]
async fn dns_fallback_uses_the_cluster_domain() {
    let b = backend().await;
    let port = b.port.to_string();
    let mut resolver = TableResolver::default();
    resolver
        .hosts
        .insert("sbx-3.ml.svc.corp.example.".into(), host_ip());
    let resolver = Arc::new(resolver);
    let config = RouterConfig {
        cluster_domain: "corp.example".into(),
        ..RouterConfig::default()
    };
    let (router, _) = start(config, SandboxIndex::new(), resolver.clone()).await;
    let a = get(
        router,
        "/list/x",
        &[
            ("x-sandbox-id", "sbx-3"),
            ("x-sandbox-namespace", "ml"),
            ("x-sandbox-port", &port),
        ],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert_eq!(a.json()["uri"], "/list/x");
    // The default namespace, and the default port 8888 (nothing listens: 502).
    let a = get(router, "/", &[("x-sandbox-id", "sbx-3")]).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert_eq!(
        resolver.asked.lock().unwrap().as_slice(),
        [
            "sbx-3.ml.svc.corp.example.",
            "sbx-3.default.svc.corp.example."
        ]
    );
}

fn pod_json(ns: &str, name: &str, ip: &str, ready: bool, rv: u32) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": ns,
            "resourceVersion": rv.to_string(),
            "labels": {"agents.x-k8s.io/sandbox-name-hash": "0123abcd"}
        },
        "spec": {"containers": [{"name": "sandbox", "image": "runtime"}]},
        "status": {
            "podIP": ip,
            "conditions": [{"type": "Ready", "status": if ready { "True" } else { "False" }}]
        }
    })
}

type MockBody = UnsyncBoxBody<Bytes, Infallible>;

fn mock_json(v: &Value) -> Response<MockBody> {
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(v.to_string())).boxed_unsync())
        .unwrap()
}

#[tokio::test]
async fn index_follows_a_watch_on_a_mock_api_server() {
    use tower_test::mock;
    let ip = host_ip().to_string();
    let b = backend().await;
    let port = b.port.to_string();

    let (service, mut api) = mock::pair::<Request<kube::client::Body>, Response<MockBody>>();
    let client = kube::Client::new(service, "default");
    let index = SandboxIndex::new();
    tokio::spawn(watch_pods(client, None, index.clone()));
    let (router, _) = start(
        RouterConfig::default(),
        index.clone(),
        Arc::new(TableResolver::default()),
    )
    .await;
    let to = |id: &'static str| {
        let port = port.clone();
        move || {
            vec![
                ("x-sandbox-id", id.to_string()),
                ("x-sandbox-namespace", "team".to_string()),
                ("x-sandbox-port", port.clone()),
            ]
        }
    };
    let call = |hdrs: Vec<(&'static str, String)>| async move {
        let h: Vec<(&str, &str)> = hdrs.iter().map(|(k, v)| (*k, v.as_str())).collect();
        get(router, "/", &h).await.status
    };

    // The initial list: one ready sandbox pod, one not ready.
    let (req, reply) = api.next_request().await.unwrap();
    assert_eq!(req.uri().path(), "/api/v1/pods");
    let query = req.uri().query().unwrap_or("");
    assert!(
        query.contains("labelSelector=agents.x-k8s.io%2Fsandbox-name-hash"),
        "{query}"
    );
    assert!(!query.contains("watch=true"), "{query}");
    reply.send_response(mock_json(&json!({
        "apiVersion": "v1",
        "kind": "PodList",
        "metadata": {"resourceVersion": "10"},
        "items": [pod_json("team", "sbx-a", &ip, true, 5), pod_json("team", "sbx-b", &ip, false, 6)]
    })));
    eventually("the index to sync", || index.is_synced()).await;
    assert_eq!(index.len(), 1);
    assert_eq!(call(to("sbx-a")()).await, StatusCode::OK);
    assert_eq!(call(to("sbx-b")()).await, StatusCode::BAD_GATEWAY);

    // The watch, from the listed version; its events arrive one at a time.
    let (req, reply) = api.next_request().await.unwrap();
    let query = req.uri().query().unwrap_or("").to_string();
    assert!(
        query.contains("watch=true") && query.contains("resourceVersion=10"),
        "{query}"
    );
    let (events, rx) = mpsc::channel::<Value>(8);
    let lines = futures_util::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|v| {
            (
                Ok::<_, Infallible>(Frame::data(Bytes::from(format!("{v}\n")))),
                rx,
            )
        })
    });
    reply.send_response(
        Response::builder()
            .header("content-type", "application/json")
            .body(StreamBody::new(lines).boxed_unsync())
            .unwrap(),
    );
    events
        .send(json!({"type": "MODIFIED", "object": pod_json("team", "sbx-b", &ip, true, 11)}))
        .await
        .unwrap();
    eventually("sbx-b to become ready", || {
        index.get("team", "sbx-b").is_some()
    })
    .await;
    assert_eq!(call(to("sbx-b")()).await, StatusCode::OK);
    events
        .send(json!({"type": "MODIFIED", "object": pod_json("team", "sbx-a", &ip, false, 12)}))
        .await
        .unwrap();
    eventually("sbx-a to leave", || index.get("team", "sbx-a").is_none()).await;
    assert_eq!(call(to("sbx-a")()).await, StatusCode::BAD_GATEWAY);
    events
        .send(json!({"type": "ADDED", "object": pod_json("team", "sbx-c", &ip, true, 13)}))
        .await
        .unwrap();
    events
        .send(json!({"type": "DELETED", "object": pod_json("team", "sbx-b", &ip, true, 14)}))
        .await
        .unwrap();
    eventually("sbx-c in, sbx-b out", || {
        index.get("team", "sbx-c").is_some() && index.get("team", "sbx-b").is_none()
    })
    .await;
    assert_eq!(call(to("sbx-c")()).await, StatusCode::OK);
    assert_eq!(call(to("sbx-b")()).await, StatusCode::BAD_GATEWAY);
    assert_eq!(index.len(), 1);
    assert!(index.is_synced());
}

#[tokio::test]
async fn websocket_echo_through_the_router() {
    let ip = host_ip().to_string();
    let b = backend().await;
    let (router, _) = start_default().await;
    let mut req = format!("ws://{router}/ws").into_client_request().unwrap();
    for (k, v) in [
        ("x-sandbox-id", "sbx-ws"),
        ("x-sandbox-port", &b.port.to_string()),
        ("x-sandbox-pod-ip", &ip),
    ] {
        req.headers_mut().insert(k, v.parse().unwrap());
    }
    let stream = TcpStream::connect(router).await.unwrap();
    let (mut ws, resp) = tokio_tungstenite::client_async(req, stream).await.unwrap();
    assert_eq!(resp.status(), StatusCode::SWITCHING_PROTOCOLS);
    for text in ["hello", "sandbox", &"x".repeat(100_000)] {
        ws.send(Message::text(text)).await.unwrap();
        let back = ws.next().await.unwrap().unwrap();
        assert_eq!(back.into_text().unwrap().as_str(), text);
    }
    ws.send(Message::binary(vec![0u8, 1, 2, 255]))
        .await
        .unwrap();
    assert_eq!(
        ws.next().await.unwrap().unwrap().into_data().as_ref(),
        &[0u8, 1, 2, 255]
    );
    ws.close(None).await.unwrap();
}

/// A gRPC message frame: uncompressed flag, big-endian length, payload.
fn grpc_frame(payload: &[u8]) -> Bytes {
    let mut v = vec![0u8];
    v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    v.extend_from_slice(payload);
    Bytes::from(v)
}

#[tokio::test]
async fn grpc_style_h2c_stream_with_trailers() {
    let ip = host_ip().to_string();
    let b = backend().await;
    let (router, _) = start_default().await;
    let stream = TcpStream::connect(router).await.unwrap();
    let (mut sender, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = mpsc::channel(4);
    let req = Request::builder()
        .method("POST")
        .uri(format!("http://{router}/grpc.Echo/Echo"))
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .header("x-sandbox-id", "sbx-grpc")
        .header("x-sandbox-port", b.port.to_string())
        .header("x-sandbox-pod-ip", &ip)
        .body(channel_body(rx))
        .unwrap();
    let resp = sender.send_request(req).await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    assert_eq!(resp.version(), http::Version::HTTP_2);
    assert_eq!(resp.headers()["x-seen-te"], "trailers");
    let mut body = resp.into_body();
    // Full duplex: each message comes back while the request stream is still open.
    for msg in [&b"one"[..], b"two", b"three"] {
        tx.send(Frame::data(grpc_frame(msg))).await.unwrap();
        let frame = tokio::time::timeout(Duration::from_secs(5), body.frame())
            .await
            .expect("the echo arrives before the request ends")
            .unwrap()
            .unwrap();
        assert_eq!(frame.into_data().unwrap(), grpc_frame(msg));
    }
    drop(tx);
    let mut trailers = None;
    while let Some(f) = body.frame().await {
        let f = f.unwrap();
        if f.is_trailers() {
            trailers = Some(f.into_trailers().unwrap());
        }
    }
    let trailers = trailers.expect("trailers pass through");
    assert_eq!(trailers["grpc-status"], "0");
    assert_eq!(trailers["grpc-message"], "echoed");
}

#[tokio::test]
async fn http1_bodies_stream_both_ways() {
    let ip = host_ip().to_string();
    let b = backend().await;
    let port = b.port.to_string();
    let (router, _) = start_default().await;
    let hdrs = |req: http::request::Builder| {
        req.header("x-sandbox-id", "sbx-s")
            .header("x-sandbox-port", &port)
            .header("x-sandbox-pod-ip", &ip)
    };
    let stream = TcpStream::connect(router).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);

    // Response: the first chunk arrives while the backend holds the second.
    let req = hdrs(Request::builder().uri("/drip"))
        .body(channel_body(mpsc::channel(1).1))
        .unwrap();
    let mut body = sender.send_request(req).await.unwrap().into_body();
    let first = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("first chunk streamed");
    assert_eq!(first.unwrap().unwrap().into_data().unwrap(), "first");
    b.release.notify_one();
    let second = body.collect().await.unwrap().to_bytes();
    assert_eq!(second, "second");

    // Request: the backend answers with the first chunk while the client holds the rest.
    let stream = TcpStream::connect(router).await.unwrap();
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let (tx, rx) = mpsc::channel(4);
    let req = hdrs(Request::builder().method("PUT").uri("/first-chunk"))
        .body(channel_body(rx))
        .unwrap();
    tx.send(Frame::data(Bytes::from("chunk-1"))).await.unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(5), sender.send_request(req))
        .await
        .expect("response head before the request body ends")
        .unwrap();
    let mut body = resp.into_body();
    let got = tokio::time::timeout(Duration::from_secs(5), body.frame())
        .await
        .expect("first chunk echoed");
    assert_eq!(got.unwrap().unwrap().into_data().unwrap(), "chunk-1");
    tx.send(Frame::data(Bytes::from("chunk-2"))).await.unwrap();
    drop(tx);
    assert_eq!(body.collect().await.unwrap().to_bytes(), "chunk-2");
}

#[tokio::test]
async fn unreachable_is_502_and_slow_is_504() {
    let ip = host_ip().to_string();
    let closed = {
        let l = std::net::TcpListener::bind("0.0.0.0:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let b = backend().await;
    let config = RouterConfig {
        backend_timeout: Duration::from_millis(300),
        ..RouterConfig::default()
    };
    let (router, _) = start(
        config,
        SandboxIndex::new(),
        Arc::new(TableResolver::default()),
    )
    .await;
    let a = get(
        router,
        "/",
        &[
            ("x-sandbox-id", "gone"),
            ("x-sandbox-port", &closed.to_string()),
            ("x-sandbox-pod-ip", &ip),
        ],
    )
    .await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    assert_eq!(a.detail(), "Could not connect to the backend sandbox: gone");

    let started = Instant::now();
    let a = get(
        router,
        "/slow",
        &[
            ("x-sandbox-id", "sleepy"),
            ("x-sandbox-port", &b.port.to_string()),
            ("x-sandbox-pod-ip", &ip),
        ],
    )
    .await;
    assert_eq!(a.status, StatusCode::GATEWAY_TIMEOUT);
    assert_eq!(
        a.detail(),
        "Timed out waiting for the backend sandbox: sleepy"
    );
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "{:?}",
        started.elapsed()
    );
}

fn leak(s: String) -> &'static str {
    Box::leak(s.into_boxed_str())
}

const ADMIN: &str = "admin-token-0123456789abcdef";
const TEAM: &str = "team-token-0123456789abcdef";

#[tokio::test]
async fn bearer_tokens_and_scopes() {
    let ip = host_ip();
    let b = backend().await;
    let port = b.port.to_string();
    let index = SandboxIndex::new();
    index.insert("team-a", "mine", ip);
    let config = RouterConfig {
        tokens: Some(
            TokenTable::parse(&format!("# admins\n{ADMIN}\n{TEAM} team-a/* team-b/one\n")).unwrap(),
        ),
        ..RouterConfig::default()
    };
    let (router, _) = start(config, index, Arc::new(TableResolver::default())).await;
    let admin = leak(format!("Bearer {ADMIN}"));
    let team = leak(format!("Bearer {TEAM}"));
    let port_s = leak(port);
    let ip_s = leak(ip.to_string());
    let to = |ns: &'static str, id: &'static str| {
        vec![
            ("x-sandbox-id", id),
            ("x-sandbox-namespace", ns),
            ("x-sandbox-port", port_s),
        ]
    };
    let with = |mut h: Vec<(&'static str, &'static str)>, auth: &'static str| {
        h.push(("authorization", auth));
        h
    };

    for h in [
        to("team-a", "mine"),
        with(to("team-a", "mine"), "Bearer wrong-token-0123456789"),
        with(to("team-a", "mine"), "Basic YWRtaW4="),
    ] {
        let a = get(router, "/", &h).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{h:?}");
        assert_eq!(a.headers["www-authenticate"], "Bearer");
        assert!(a.detail().contains("bearer token"));
    }
    // Auth comes before validation: nothing is revealed without a token.
    let a = get(router, "/", &[("x-sandbox-id", "BAD")]).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);

    let a = get(router, "/", &with(to("team-a", "mine"), team)).await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(
        a.json()["headers"].get("authorization").is_none(),
        "the token is not forwarded"
    );
    let a = get(router, "/", &with(to("team-b", "other"), team)).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN);
    assert_eq!(a.detail(), "This token may not reach sandbox team-b/other.");
    // In scope (team-b/one) but unreachable.
    let a = get(router, "/", &with(to("team-b", "one"), team)).await;
    assert_eq!(a.status, StatusCode::BAD_GATEWAY);
    // A scoped token may not aim its sandbox at another address...
    let h = vec![
        ("x-sandbox-id", "other"),
        ("x-sandbox-namespace", "team-a"),
        ("x-sandbox-port", port_s),
        ("x-sandbox-pod-ip", ip_s),
        ("authorization", team),
    ];
    let a = get(router, "/", &h).await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{}", a.body);
    // ...but may name its own pod's; an unscoped token may name any.
    let h = vec![
        ("x-sandbox-id", "mine"),
        ("x-sandbox-namespace", "team-a"),
        ("x-sandbox-port", port_s),
        ("x-sandbox-pod-ip", ip_s),
        ("authorization", team),
    ];
    assert_eq!(get(router, "/", &h).await.status, StatusCode::OK);
    let h = vec![
        ("x-sandbox-id", "other"),
        ("x-sandbox-namespace", "team-x"),
        ("x-sandbox-port", port_s),
        ("x-sandbox-pod-ip", ip_s),
        ("authorization", admin),
    ];
    assert_eq!(get(router, "/", &h).await.status, StatusCode::OK);

    // /healthz is open; /metrics and the rest need a token.
    assert_eq!(get(router, "/healthz", &[]).await.status, StatusCode::OK);
    assert_eq!(
        get(router, "/metrics", &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    assert_eq!(
        get(router, "/metrics", &[("authorization", team)])
            .await
            .status,
        StatusCode::OK
    );
    assert_eq!(
        get(router, "/other", &[]).await.status,
        StatusCode::UNAUTHORIZED
    );
    let a = get(router, "/other", &[("authorization", admin)]).await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST);
    assert_eq!(a.detail(), "X-Sandbox-ID header is required.");
}

#[tokio::test]
async fn healthz_and_metrics() {
    let ip = host_ip().to_string();
    let b = backend().await;
    let port = b.port.to_string();
    let (router, r) = start_default().await;
    let a = get(router, "/healthz", &[]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.body, r#"{"status":"ok"}"#);
    assert_eq!(a.headers["content-type"], "application/json");
    // With X-Sandbox-ID, /healthz and /metrics are the sandbox's.
    let h = [
        ("x-sandbox-id", "sbx-m"),
        ("x-sandbox-port", port.as_str()),
        ("x-sandbox-pod-ip", ip.as_str()),
    ];
    let a = get(router, "/healthz", &h).await;
    assert_eq!(a.json()["uri"], "/healthz");
    let a = get(router, "/metrics", &h).await;
    assert_eq!(a.json()["uri"], "/metrics");
    get(router, "/", &[("x-sandbox-id", "Bad")]).await;
    r.index().insert("default", "x", ip.parse().unwrap());

    let a = get(router, "/metrics", &[]).await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(
        a.headers["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/openmetrics-text")
    );
    for line in [
        r#"warden_router_requests_total{code="200",route="pod_ip_header"} 2"#,
        r#"warden_router_requests_total{code="400",route="local"} 1"#,
        r#"warden_router_requests_total{code="200",route="local"} 1"#,
        "warden_router_request_duration_seconds_count 4",
        "warden_router_index_pods 1",
        "warden_router_index_synced 0",
    ] {
        assert!(
            a.body.lines().any(|l| l == line),
            "no `{line}` in\n{}",
            a.body
        );
    }
}

#[tokio::test]
async fn starts_while_the_api_server_is_unreachable() {
    use kube::config::{KubeConfigOptions, Kubeconfig};
    let ip = host_ip().to_string();
    let b = backend().await;
    let closed = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let kubeconfig = Kubeconfig::from_yaml(&format!(
        "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster:\n    server: http://127.0.0.1:{closed}\n\
         users:\n- name: u\n  user: {{}}\ncontexts:\n- name: x\n  context:\n    cluster: c\n    user: u\n\
         current-context: x\n"
    ))
    .unwrap();
    let config = kube::Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
        .await
        .unwrap();
    let client = kube::Client::try_from(config).unwrap();
    let index = SandboxIndex::new();
    let watch = tokio::spawn(watch_pods(client, Some("team".into()), index.clone()));
    let (router, _) = start(
        RouterConfig::default(),
        index.clone(),
        Arc::new(TableResolver::default()),
    )
    .await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let a = get(
        router,
        "/",
        &[
            ("x-sandbox-id", "s"),
            ("x-sandbox-port", &b.port.to_string()),
            ("x-sandbox-pod-ip", &ip),
        ],
    )
    .await;
    assert_eq!(a.status, StatusCode::OK, "{}", a.body);
    assert!(!index.is_synced());
    assert!(!watch.is_finished(), "the watch keeps retrying");
    let m = get(router, "/metrics", &[]).await;
    assert!(
        m.body.lines().any(|l| l == "warden_router_index_synced 0"),
        "{}",
        m.body
    );
    watch.abort();
}

#[tokio::test]
async fn empty_and_upgrade_bodies() {
    // HEAD and a 204 pass through without a body; an Upgrade the backend refuses is a
    // plain response.
    let ip = host_ip().to_string();
    let b = backend().await;
    let port = b.port.to_string();
    let (router, _) = start_default().await;
    let h = [
        ("x-sandbox-id", "s"),
        ("x-sandbox-port", port.as_str()),
        ("x-sandbox-pod-ip", ip.as_str()),
    ];
    let a = send(router, "HEAD", "/", &h, "").await;
    assert_eq!(a.status, StatusCode::OK);
    assert!(a.body.is_empty());
    let mut h2 = h.to_vec();
    h2.extend([("connection", "upgrade"), ("upgrade", "nothing")]);
    let a = get(router, "/plain", &h2).await;
    assert_eq!(a.status, StatusCode::OK);
    assert_eq!(a.json()["headers"]["upgrade"], "nothing");
}
