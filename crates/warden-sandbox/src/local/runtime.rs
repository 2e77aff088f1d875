//! Calls to a sandbox's runtime server (`warden sandboxd`) through
//! `warden_sandboxd::client::Client`, over the pinned socket path (`/proc/self/fd/N` of the
//! socket inode sandboxd bound; see `health::pin`).

use std::path::Path;

use futures_util::{StreamExt, TryStreamExt};
use http_body_util::BodyExt;
use tokio::sync::mpsc;
use warden_sandboxd::client::{Client, ClientError, StreamInput, StreamOutput};
use warden_sandboxd::proto::{DirListing, ExecEvent, ExecRequest, ExecResult};

use crate::driver::{ByteStream, DriverError, ExecSession, StdinMsg, StreamItem};

fn map(e: ClientError) -> DriverError {
    match e {
        ClientError::Api(body) => DriverError::Sandbox(body),
        ClientError::Transport(m) => DriverError::Unavailable(format!("sandboxd unreachable: {m}")),
    }
}

pub async fn exec(socket: &Path, req: ExecRequest) -> Result<ExecResult, DriverError> {
    Client::new(socket).exec(&req).await.map_err(map)
}

/// Starts a streaming exec. `guard` (the call's activity count) lives as long as the
/// session's relay tasks do.
pub async fn exec_stream(
    socket: &Path,
    req: ExecRequest,
    guard: Box<dyn Send + Sync>,
) -> Result<ExecSession, DriverError> {
    let s = Client::new(socket).exec_stream(req).await.map_err(map)?;
    Ok(relay_exec_stream(s, guard))
}

/// Turns sandboxd's exec stream into a driver's [`ExecSession`]: stdin and control messages
/// in, output and events out; `guard` lives as long as the relay tasks do. Dropping the
/// session drops the stream, which kills the command. For every driver that reaches a
/// sandboxd (locally over its socket, or through a router).
pub fn relay_exec_stream(
    s: warden_sandboxd::client::ExecStream,
    guard: Box<dyn Send + Sync>,
) -> ExecSession {
    let (stdin_tx, mut stdin_rx) = mpsc::channel::<StdinMsg>(16);
    let (out_tx, out_rx) = mpsc::channel::<StreamItem>(16);
    let input = s.input;
    let mut output = s.output;
    let pid = s.pid;
    tokio::spawn(async move {
        while let Some(m) = stdin_rx.recv().await {
            let m = match m {
                StdinMsg::Data(b) => StreamInput::Stdin(b),
                StdinMsg::Control(c) => StreamInput::Control(c),
            };
            if input.send(m).await.is_err() {
                break;
            }
        }
    });
    tokio::spawn(async move {
        let _guard = guard;
        if out_tx
            .send(StreamItem::Event(ExecEvent::Started { pid }))
            .await
            .is_err()
        {
            return;
        }
        loop {
            tokio::select! {
                // The caller dropped the session: drop ours, which kills the command.
                _ = out_tx.closed() => return,
                item = output.recv() => {
                    let Some(item) = item else { return };
                    let last = matches!(item, StreamOutput::Exit { .. } | StreamOutput::Error(_));
                    let item = match item {
                        StreamOutput::Stdout(b) => StreamItem::Stdout(b),
                        StreamOutput::Stderr(b) => StreamItem::Stderr(b),
                        StreamOutput::Exit { exit_code, timed_out, signal, duration_ms } => {
                            StreamItem::Event(ExecEvent::Exit { exit_code, timed_out, signal, duration_ms })
                        }
                        StreamOutput::Error(e) => StreamItem::Event(ExecEvent::Error {
                            code: e.code,
                            message: e.message,
                        }),
                    };
                    if out_tx.send(item).await.is_err() || last {
                        return;
                    }
                }
            }
        }
    });
    ExecSession {
        stdin: stdin_tx,
        output: out_rx,
    }
}

pub async fn read_file(socket: &Path, path: &str) -> Result<ByteStream, DriverError> {
    let body = Client::new(socket).read_file(path).await.map_err(map)?;
    Ok(Box::pin(
        body.into_data_stream()
            .map_err(|e| std::io::Error::other(e.to_string())),
    ))
}

pub async fn write_file(
    socket: &Path,
    path: &str,
    mode: Option<u32>,
    body: ByteStream,
) -> Result<(), DriverError> {
    let body = axum::body::Body::from_stream(body.map(|r| r.map_err(std::io::Error::other)));
    Client::new(socket)
        .write_file(path, mode, body)
        .await
        .map_err(map)
}

pub async fn list_dir(socket: &Path, path: &str) -> Result<DirListing, DriverError> {
    Client::new(socket).list_dir(path).await.map_err(map)
}

pub async fn exists(socket: &Path, path: &str) -> Result<bool, DriverError> {
    Client::new(socket).exists(path).await.map_err(map)
}

pub async fn remove(socket: &Path, path: &str, recursive: bool) -> Result<(), DriverError> {
    Client::new(socket)
        .remove(path, recursive)
        .await
        .map_err(map)
}

pub async fn mkdir(socket: &Path, path: &str) -> Result<(), DriverError> {
    Client::new(socket).mkdir(path).await.map_err(map)
}
