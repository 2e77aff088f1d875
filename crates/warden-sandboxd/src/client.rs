//! A client for one sandboxd (HTTP/1.1): over its unix socket, for warden's local driver and
//! `warden serve`'s router, or over TCP through an agent-sandbox router (`warden router` or
//! upstream's), for the Kubernetes driver.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::body::Body;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpStream, UnixStream};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;

use crate::proto::{
    DirListing, ErrorBody, ErrorCode, ExecControl, ExecEvent, ExecRequest, ExecResult, Health,
    WS_STDERR, WS_STDOUT,
};

/// Why a call failed: sandboxd answered with an error, or it could not be reached.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("sandboxd: {0}")]
    Api(ErrorBody),
    #[error("sandboxd unreachable: {0}")]
    Transport(String),
}

fn transport(e: impl std::fmt::Display) -> ClientError {
    ClientError::Transport(e.to_string())
}

/// What a caller sends a streaming exec.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamInput {
    Stdin(Bytes),
    Control(ExecControl),
}

/// What a streaming exec produces: output, then one `Exit` or `Error`.
#[derive(Debug, Clone, PartialEq)]
pub enum StreamOutput {
    Stdout(Bytes),
    Stderr(Bytes),
    Exit {
        exit_code: i32,
        timed_out: bool,
        signal: Option<i32>,
        duration_ms: f64,
    },
    Error(ErrorBody),
}

/// A streaming exec in progress. Dropping `input` and `output` closes the WebSocket, which
/// kills the command.
#[derive(Debug)]
pub struct ExecStream {
    pub pid: u32,
    pub input: mpsc::Sender<StreamInput>,
    pub output: mpsc::Receiver<StreamOutput>,
}

/// A sandboxd reached over a unix socket, or through a router.
#[derive(Debug, Clone)]
pub struct Client {
    transport: Transport,
}

#[derive(Debug, Clone)]
enum Transport {
    Unix(PathBuf),
    Router(Arc<RouterTransport>),
}

/// A sandbox behind an agent-sandbox router: where the router listens and how to name the
/// sandbox to it.
#[derive(Clone, PartialEq, Eq)]
pub struct RouterRoute {
    /// The router's `host:port` (resolved at every connect).
    pub router: String,
    /// `X-Sandbox-ID`: the Sandbox's name.
    pub sandbox: String,
    /// `X-Sandbox-Namespace`.
    pub namespace: String,
    /// `X-Sandbox-Port`: sandboxd's REST port in the pod (8080 by default).
    pub port: u16,
    /// The router's bearer token, if it wants one (`Authorization: Bearer ...`).
    pub token: Option<String>,
}

impl std::fmt::Debug for RouterRoute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RouterRoute")
            .field("router", &self.router)
            .field("sandbox", &self.sandbox)
            .field("namespace", &self.namespace)
            .field("port", &self.port)
            .field("token", &self.token.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl RouterRoute {
    /// The headers that name the sandbox (and carry the token) on every request.
    pub fn headers(&self) -> Result<HeaderMap, ClientError> {
        let mut h = HeaderMap::new();
        let value = |name: &str, v: &str| {
            HeaderValue::from_str(v)
                .map_err(|_| transport(format!("{name} `{v}` is not a valid header value")))
        };
        h.insert(
            HeaderName::from_static("x-sandbox-id"),
            value("X-Sandbox-ID", &self.sandbox)?,
        );
        h.insert(
            HeaderName::from_static("x-sandbox-namespace"),
            value("X-Sandbox-Namespace", &self.namespace)?,
        );
        h.insert(
            HeaderName::from_static("x-sandbox-port"),
            HeaderValue::from(self.port),
        );
        if let Some(token) = &self.token {
            let mut v = HeaderValue::from_str(&format!("Bearer {token}"))
                .map_err(|_| transport("the router token is not a valid header value"))?;
            v.set_sensitive(true);
            h.insert(hyper::header::AUTHORIZATION, v);
        }
        Ok(h)
    }
}

#[derive(Debug)]
struct RouterTransport {
    router: String,
    headers: HeaderMap,
}

/// A connection to sandboxd, or to the router in front of it.
trait Conn: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Conn for T {}

/// Encodes a path as one URL segment, `/` included (as the SDK does).
pub fn encode_path(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for b in path.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'~' => out.push(b as char),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

impl Client {
    /// A sandboxd listening on the unix socket `socket`.
    pub fn new(socket: impl AsRef<Path>) -> Client {
        Client {
            transport: Transport::Unix(socket.as_ref().to_path_buf()),
        }
    }

    /// A sandboxd reached through a router: every request goes over TCP to `route.router`
    /// with `X-Sandbox-ID`, `X-Sandbox-Namespace`, `X-Sandbox-Port` and, with a token,
    /// `Authorization: Bearer`. Fails only when a value cannot be a header.
    pub fn via_router(route: &RouterRoute) -> Result<Client, ClientError> {
        Ok(Client {
            transport: Transport::Router(Arc::new(RouterTransport {
                router: route.router.clone(),
                headers: route.headers()?,
            })),
        })
    }

    async fn connect(&self) -> Result<Box<dyn Conn>, ClientError> {
        match &self.transport {
            Transport::Unix(socket) => Ok(Box::new(
                UnixStream::connect(socket).await.map_err(transport)?,
            )),
            Transport::Router(r) => {
                let stream = TcpStream::connect(r.router.as_str())
                    .await
                    .map_err(|e| transport(format!("router {}: {e}", r.router)))?;
                let _ = stream.set_nodelay(true);
                Ok(Box::new(stream))
            }
        }
    }

    /// The routing headers (none over a unix socket).
    fn add_route_headers(&self, headers: &mut HeaderMap) {
        if let Transport::Router(r) = &self.transport {
            for (k, v) in &r.headers {
                headers.insert(k, v.clone());
            }
        }
    }

    /// Sends one request on a fresh connection and returns the response as is. Through a
    /// router, the routing headers are added (replacing any of the same name).
    pub async fn forward(&self, mut req: Request<Body>) -> Result<Response<Incoming>, ClientError> {
        self.add_route_headers(req.headers_mut());
        let stream = self.connect().await?;
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(transport)?;
        tokio::spawn(async move {
            let _ = conn.with_upgrades().await;
        });
        sender.send_request(req).await.map_err(transport)
    }

    async fn call(
        &self,
        method: Method,
        uri: &str,
        body: Body,
    ) -> Result<Response<Incoming>, ClientError> {
        let req = Request::builder()
            .method(method)
            .uri(uri)
            .header("host", "sandboxd")
            .body(body)
            .map_err(transport)?;
        let resp = self.forward(req).await?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(transport)?
            .to_bytes();
        Err(ClientError::Api(error_body(status, &bytes)))
    }

    async fn json<T: serde::de::DeserializeOwned>(
        &self,
        method: Method,
        uri: &str,
        body: Body,
    ) -> Result<T, ClientError> {
        let resp = self.call(method, uri, body).await?;
        let bytes = resp
            .into_body()
            .collect()
            .await
            .map_err(transport)?
            .to_bytes();
        serde_json::from_slice(&bytes).map_err(transport)
    }

    pub async fn health(&self) -> Result<Health, ClientError> {
        self.json(Method::GET, "/v1/health", Body::empty()).await
    }

    /// Runs a command to the end.
    pub async fn exec(&self, req: &ExecRequest) -> Result<ExecResult, ClientError> {
        let body = serde_json::to_vec(req).map_err(transport)?;
        self.json(Method::POST, "/v1/exec", Body::from(body)).await
    }

    /// Reads a file as a body stream.
    pub async fn read_file(&self, path: &str) -> Result<Incoming, ClientError> {
        let uri = format!("/v1/files/{}", encode_path(path));
        Ok(self
            .call(Method::GET, &uri, Body::empty())
            .await?
            .into_body())
    }

    /// Writes a file from `body` (streamed), with `mode` (default 0644).
    pub async fn write_file(
        &self,
        path: &str,
        mode: Option<u32>,
        body: Body,
    ) -> Result<(), ClientError> {
        let mut uri = format!("/v1/files/{}", encode_path(path));
        if let Some(m) = mode {
            uri.push_str(&format!("?mode={m:04o}"));
        }
        self.call(Method::PUT, &uri, body).await.map(drop)
    }

    pub async fn list_dir(&self, path: &str) -> Result<DirListing, ClientError> {
        let uri = format!("/v1/files/{}", encode_path(path));
        self.json(Method::GET, &uri, Body::empty()).await
    }

    pub async fn exists(&self, path: &str) -> Result<bool, ClientError> {
        let uri = format!("/v1/files/{}", encode_path(path));
        match self.call(Method::HEAD, &uri, Body::empty()).await {
            Ok(_) => Ok(true),
            Err(ClientError::Api(e)) if e.code == ErrorCode::NotFound => Ok(false),
            Err(e) => Err(e),
        }
    }

    pub async fn remove(&self, path: &str, recursive: bool) -> Result<(), ClientError> {
        let uri = format!("/v1/files/{}?recursive={recursive}", encode_path(path));
        self.call(Method::DELETE, &uri, Body::empty())
            .await
            .map(drop)
    }

    /// `mkdir -p`.
    pub async fn mkdir(&self, path: &str) -> Result<(), ClientError> {
        let uri = format!("/v1/files/{}?type=directory", encode_path(path));
        self.call(Method::PUT, &uri, Body::empty()).await.map(drop)
    }

    /// Starts a streaming exec over the WebSocket: returns once sandboxd reports the
    /// command started (or refuses it).
    pub async fn exec_stream(&self, req: ExecRequest) -> Result<ExecStream, ClientError> {
        let stream = self.connect().await?;
        let mut request = "ws://sandboxd/v1/exec/ws"
            .into_client_request()
            .map_err(transport)?;
        self.add_route_headers(request.headers_mut());
        let (mut ws, _) = tokio_tungstenite::client_async(request, stream)
            .await
            .map_err(transport)?;
        let first = serde_json::to_string(&req).map_err(transport)?;
        ws.send(Message::Text(first.into()))
            .await
            .map_err(transport)?;
        let pid = loop {
            match ws.next().await {
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<ExecEvent>(t.as_str()) {
                    Ok(ExecEvent::Started { pid }) => break pid,
                    Ok(ExecEvent::Error { code, message }) => {
                        return Err(ClientError::Api(ErrorBody { code, message }));
                    }
                    Ok(other) => {
                        return Err(transport(format!("unexpected first event {other:?}")));
                    }
                    Err(e) => return Err(transport(e)),
                },
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
                Some(Ok(other)) => return Err(transport(format!("unexpected message {other:?}"))),
                Some(Err(e)) => return Err(transport(e)),
                None => return Err(transport("closed before the command started")),
            }
        };
        let (in_tx, mut in_rx) = mpsc::channel::<StreamInput>(16);
        let (out_tx, out_rx) = mpsc::channel::<StreamOutput>(16);
        tokio::spawn(async move {
            let mut input_open = true;
            loop {
                tokio::select! {
                    // The caller dropped the output: close, which kills the command.
                    _ = out_tx.closed() => break,
                    // A send fails when sandboxd has finished and closed already: stop
                    // sending but read on, or the exit event still unread would be lost.
                    i = in_rx.recv(), if input_open => match i {
                        Some(StreamInput::Stdin(b)) => {
                            if ws.send(Message::Binary(b)).await.is_err() { input_open = false; }
                        }
                        Some(StreamInput::Control(c)) => {
                            let t = serde_json::to_string(&c).unwrap_or_default();
                            if ws.send(Message::Text(t.into())).await.is_err() { input_open = false; }
                        }
                        None => input_open = false,
                    },
                    m = ws.next() => {
                        let item = match m {
                            Some(Ok(Message::Binary(b))) if !b.is_empty() => match b[0] {
                                WS_STDOUT => StreamOutput::Stdout(b.slice(1..)),
                                WS_STDERR => StreamOutput::Stderr(b.slice(1..)),
                                _ => continue,
                            },
                            Some(Ok(Message::Text(t))) => match serde_json::from_str::<ExecEvent>(t.as_str()) {
                                Ok(ExecEvent::Exit { exit_code, timed_out, signal, duration_ms }) => {
                                    StreamOutput::Exit { exit_code, timed_out, signal, duration_ms }
                                }
                                Ok(ExecEvent::Error { code, message }) => StreamOutput::Error(ErrorBody { code, message }),
                                _ => continue,
                            },
                            Some(Ok(Message::Close(_))) | None => break,
                            Some(Ok(_)) => continue,
                            Some(Err(e)) => StreamOutput::Error(ErrorBody { code: ErrorCode::Unavailable, message: e.to_string() }),
                        };
                        let last = matches!(item, StreamOutput::Exit { .. } | StreamOutput::Error(_));
                        if out_tx.send(item).await.is_err() || last { break; }
                    }
                }
            }
            let _ = ws.close(None).await;
        });
        Ok(ExecStream {
            pid,
            input: in_tx,
            output: out_rx,
        })
    }
}

/// The router's error shape, `{"detail": "..."}`.
#[derive(serde::Deserialize)]
struct RouterDetail {
    detail: String,
}

/// An error response as an [`ErrorBody`]: sandboxd's own, or one a router answered
/// (`{"detail": ...}`, 401 for its token, 502/504 for an unreachable sandbox), whose message
/// then starts with `router: `.
fn error_body(status: StatusCode, bytes: &[u8]) -> ErrorBody {
    if let Ok(body) = serde_json::from_slice::<ErrorBody>(bytes) {
        return body;
    }
    if let Ok(r) = serde_json::from_slice::<RouterDetail>(bytes) {
        return ErrorBody {
            code: code_of(status),
            message: format!("router: {}", r.detail),
        };
    }
    ErrorBody {
        code: code_of(status),
        message: String::from_utf8_lossy(bytes).into_owned(),
    }
}

fn code_of(status: StatusCode) -> ErrorCode {
    match status.as_u16() {
        400 => ErrorCode::InvalidArgument,
        401 | 403 => ErrorCode::PermissionDenied,
        404 => ErrorCode::NotFound,
        409 => ErrorCode::Conflict,
        413 => ErrorCode::ResourceExhausted,
        502..=504 => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;

    /// A router stand-in on 127.0.0.1 that answers `/v1/health` and keeps each request's
    /// headers.
    async fn recording_router() -> (String, Arc<Mutex<Vec<HeaderMap>>>) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let keep = seen.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                let keep = keep.clone();
                let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                    keep.lock().unwrap().push(req.headers().clone());
                    async move {
                        Ok::<_, std::convert::Infallible>(Response::new(Body::from(
                            r#"{"status":"ok","uptime_seconds":1.0}"#,
                        )))
                    }
                });
                tokio::spawn(
                    hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service),
                );
            }
        });
        (addr, seen)
    }

    fn route(router: &str, token: Option<&str>) -> RouterRoute {
        RouterRoute {
            router: router.into(),
            sandbox: "pool-abcde".into(),
            namespace: "team-a".into(),
            port: 8080,
            token: token.map(Into::into),
        }
    }

    #[tokio::test]
    async fn through_a_router_every_request_names_the_sandbox() {
        let (addr, seen) = recording_router().await;
        let client = Client::via_router(&route(&addr, Some("router-token-0123456789"))).unwrap();
        client.health().await.unwrap();
        let h = seen.lock().unwrap().pop().unwrap();
        assert_eq!(h["x-sandbox-id"], "pool-abcde");
        assert_eq!(h["x-sandbox-namespace"], "team-a");
        assert_eq!(h["x-sandbox-port"], "8080");
        assert_eq!(h["authorization"], "Bearer router-token-0123456789");

        // No token, no Authorization; a caller's own routing headers are replaced.
        let client = Client::via_router(&route(&addr, None)).unwrap();
        let req = Request::builder()
            .uri("/v1/health")
            .header("host", "sandboxd")
            .header("x-sandbox-id", "someone-else")
            .body(Body::empty())
            .unwrap();
        client.forward(req).await.unwrap();
        let h = seen.lock().unwrap().pop().unwrap();
        assert_eq!(h["x-sandbox-id"], "pool-abcde");
        assert_eq!(h.get_all("x-sandbox-id").iter().count(), 1);
        assert!(h.get("authorization").is_none());
    }

    #[test]
    fn router_errors_keep_their_detail() {
        let cases = [
            (
                401,
                r#"{"detail":"Missing or wrong bearer token."}"#,
                ErrorCode::PermissionDenied,
                "router: Missing or wrong bearer token.",
            ),
            (
                502,
                r#"{"detail":"Could not connect to the backend sandbox: s"}"#,
                ErrorCode::Unavailable,
                "router: Could not connect to the backend sandbox: s",
            ),
            (
                504,
                r#"{"detail":"Timed out"}"#,
                ErrorCode::Unavailable,
                "router: Timed out",
            ),
            (
                404,
                r#"{"code":"NOT_FOUND","message":"no such file"}"#,
                ErrorCode::NotFound,
                "no such file",
            ),
            (500, "boom", ErrorCode::Internal, "boom"),
        ];
        for (status, body, code, message) in cases {
            let e = error_body(StatusCode::from_u16(status).unwrap(), body.as_bytes());
            assert_eq!(
                (e.code, e.message.as_str()),
                (code, message),
                "{status} {body}"
            );
        }
    }

    #[tokio::test]
    async fn an_unreachable_router_is_a_transport_error_naming_it() {
        // A port nothing listens on: bind, note, close.
        let addr = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().to_string()
        };
        let client = Client::via_router(&route(&addr, None)).unwrap();
        match client.health().await {
            Err(ClientError::Transport(m)) => assert!(m.contains(&addr), "{m}"),
            other => panic!("expected a transport error, got {other:?}"),
        }
        let e = Client::via_router(&route(&addr, Some("bad\ntoken"))).unwrap_err();
        assert!(e.to_string().contains("router token"), "{e}");
        // The token never shows in Debug output.
        let shown = format!("{:?}", route(&addr, Some("secret-token")));
        assert!(!shown.contains("secret-token"), "{shown}");
    }
}
