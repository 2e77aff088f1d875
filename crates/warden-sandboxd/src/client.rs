//! A client for one sandboxd over its unix socket (HTTP/1.1), for warden's local driver and
//! `warden serve`'s router.

use std::path::{Path, PathBuf};

use axum::body::Body;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::Message;

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

/// A sandboxd reached over a unix socket.
#[derive(Debug, Clone)]
pub struct Client {
    socket: PathBuf,
}

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
    pub fn new(socket: impl AsRef<Path>) -> Client {
        Client {
            socket: socket.as_ref().to_path_buf(),
        }
    }

    /// Sends one request on a fresh connection and returns the response as is.
    pub async fn forward(&self, req: Request<Body>) -> Result<Response<Incoming>, ClientError> {
        let stream = UnixStream::connect(&self.socket).await.map_err(transport)?;
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
        Err(ClientError::Api(
            serde_json::from_slice(&bytes).unwrap_or_else(|_| ErrorBody {
                code: code_of(status),
                message: String::from_utf8_lossy(&bytes).into_owned(),
            }),
        ))
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
        let stream = UnixStream::connect(&self.socket).await.map_err(transport)?;
        let (mut ws, _) = tokio_tungstenite::client_async("ws://sandboxd/v1/exec/ws", stream)
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

fn code_of(status: StatusCode) -> ErrorCode {
    match status.as_u16() {
        400 => ErrorCode::InvalidArgument,
        403 => ErrorCode::PermissionDenied,
        404 => ErrorCode::NotFound,
        409 => ErrorCode::Conflict,
        413 => ErrorCode::ResourceExhausted,
        503 => ErrorCode::Unavailable,
        _ => ErrorCode::Internal,
    }
}
