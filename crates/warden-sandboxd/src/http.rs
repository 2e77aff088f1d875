//! The HTTP protocols: legacy REST, sandboxd REST, and warden's exec extension, in one
//! router (gRPC is merged in by [`crate::app`]).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Multipart, Path, Query, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event as SseEvent, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use futures_util::{Stream, StreamExt};
use serde::Deserialize;
use tokio::io::AsyncReadExt;

use crate::error::ApiError;
use crate::exec::{self, Event, Input, Spec};
use crate::proto::{
    DirListing, EntryType, ErrorCode, ExecControl, ExecEvent, ExecRequest, ExecResult, Health,
    WS_STDERR, WS_STDOUT,
};
use crate::state::Sandboxd;

type St = State<Arc<Sandboxd>>;

/// The HTTP routes.
pub fn routes(state: Arc<Sandboxd>) -> Router {
    Router::new()
        .route("/", get(legacy_root))
        .route("/execute", post(legacy_execute))
        .route("/upload", post(legacy_upload))
        .route("/download/{*path}", get(legacy_download))
        .route("/list/{*path}", get(legacy_list))
        .route("/list/", get(legacy_list_root))
        .route("/exists/{*path}", get(legacy_exists))
        .route("/v1/health", get(health))
        .route(
            "/v1/files/{*path}",
            get(files_get).put(files_put).delete(files_delete),
        )
        .route("/v1/files/", get(files_get_root))
        .route("/v1/files", get(files_get_root))
        .route("/v1/exec", post(exec_buffered))
        .route("/v1/exec/stream", post(exec_sse))
        .route("/v1/exec/ws", get(exec_ws))
        .with_state(state)
}

/// Parses a JSON body, naming the field at fault.
fn json<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, ApiError> {
    serde_json::from_slice(body).map_err(|e| ApiError::invalid(format!("request body: {e}")))
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| ApiError::internal(format!("worker failed: {e}")))?
}

// --- legacy REST (python-runtime, :8888) ------------------------------------------------------

async fn legacy_root() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct LegacyExecute {
    command: String,
    #[serde(default)]
    timeout_seconds: Option<f64>,
}

fn seconds(field: &str, s: f64) -> Result<Duration, ApiError> {
    if !s.is_finite() || s <= 0.0 || s > 1e9 {
        return Err(ApiError::invalid(format!(
            "{field}: must be a positive number of seconds, got {s}"
        )));
    }
    Ok(Duration::from_secs_f64(s))
}

async fn legacy_execute(State(st): St, body: Bytes) -> Result<Response, ApiError> {
    let req: LegacyExecute = json(&body)?;
    let timeout = req
        .timeout_seconds
        .map(|s| seconds("timeout_seconds", s))
        .transpose()?;
    let spec = Spec {
        argv: vec!["/bin/sh".into(), "-c".into(), req.command],
        timeout,
        ..Spec::default()
    };
    let cap = st.output_cap;
    let r = exec::run(&st, spec, None, cap).await?;
    Ok(axum::Json(serde_json::json!({
        "stdout": String::from_utf8_lossy(&r.stdout),
        "stderr": String::from_utf8_lossy(&r.stderr),
        "exit_code": r.exit.exit_code,
        "timed_out": r.exit.timed_out,
    }))
    .into_response())
}

async fn legacy_upload(State(st): St, mut form: Multipart) -> Result<Response, ApiError> {
    let result = upload_form(&st, &mut form).await;
    if result.is_err() {
        // As for `PUT /v1/files`: read the rest of the upload before answering.
        while let Ok(Some(mut field)) = form.next_field().await {
            while let Ok(Some(_)) = field.chunk().await {}
        }
    }
    result
}

async fn upload_form(st: &Arc<Sandboxd>, form: &mut Multipart) -> Result<Response, ApiError> {
    let mut done = None;
    while let Some(field) = form
        .next_field()
        .await
        .map_err(|e| ApiError::invalid(format!("multipart body: {e}")))?
    {
        if field.name() != Some("file") {
            continue;
        }
        let Some(dest) = field.file_name().map(str::to_string) else {
            return Err(ApiError::invalid(
                "file: the multipart field needs a filename (the destination path)",
            ));
        };
        let parts = st.root.parse(&dest)?;
        let stream = futures_util::stream::unfold(field, |mut f| async move {
            match f.chunk().await {
                Ok(Some(b)) => Some((Ok(b), f)),
                Ok(None) => None,
                Err(e) => Some((Err(ApiError::invalid(format!("file: {e}"))), f)),
            }
        });
        write_stream(st, parts, 0o644, stream).await?;
        done = Some(dest);
        break;
    }
    let Some(dest) = done else {
        return Err(ApiError::invalid(
            "file: missing; send a multipart field named `file` whose filename is the destination",
        ));
    };
    Ok(
        axum::Json(serde_json::json!({"message": format!("File '{dest}' uploaded successfully.")}))
            .into_response(),
    )
}

async fn legacy_download(State(st): St, Path(path): Path<String>) -> Result<Response, ApiError> {
    read_file(&st, &path).await
}

async fn legacy_list_root(st: St) -> Result<Response, ApiError> {
    legacy_list(st, Path(String::new())).await
}

async fn legacy_list(State(st): St, Path(path): Path<String>) -> Result<Response, ApiError> {
    let parts = st.root.parse(&path)?;
    let s = st.clone();
    let entries = blocking(move || s.root.list(&parts)).await?;
    let out: Vec<serde_json::Value> = entries
        .into_iter()
        .map(|(name, m)| {
            serde_json::json!({
                "name": name,
                "size": m.size,
                "type": if m.kind == EntryType::Directory { "directory" } else { "file" },
                "mod_time": m.mtime_f64(),
            })
        })
        .collect();
    Ok(axum::Json(out).into_response())
}

async fn legacy_exists(State(st): St, Path(path): Path<String>) -> Result<Response, ApiError> {
    let parts = st.root.parse(&path)?;
    let exists = st.root.exists(&parts)?;
    Ok(axum::Json(serde_json::json!({"path": path, "exists": exists})).into_response())
}

// --- sandboxd REST (:8080) -----------------------------------------------------------------

async fn health(State(st): St) -> Response {
    axum::Json(Health {
        status: "ok".into(),
        uptime_seconds: st.started.elapsed().as_secs_f64(),
    })
    .into_response()
}

async fn read_file(st: &Arc<Sandboxd>, path: &str) -> Result<Response, ApiError> {
    let parts = st.root.parse(path)?;
    let (file, meta) = st.root.open_read(&parts)?;
    let file = tokio::fs::File::from_std(file);
    let stream = futures_util::stream::unfold(Some(file), |f| async move {
        let mut f = f?;
        let mut buf = vec![0u8; 64 * 1024];
        match f.read(&mut buf).await {
            Ok(0) => None,
            Ok(n) => {
                buf.truncate(n);
                Some((Ok::<_, std::io::Error>(Bytes::from(buf)), Some(f)))
            }
            Err(e) => Some((Err(e), None)),
        }
    });
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    resp.headers_mut()
        .insert(header::CONTENT_LENGTH, HeaderValue::from(meta.size));
    Ok(resp)
}

async fn files_get_root(st: St) -> Result<Response, ApiError> {
    files_get(st, Path(String::new())).await
}

async fn files_get(State(st): St, Path(path): Path<String>) -> Result<Response, ApiError> {
    let parts = st.root.parse(&path)?;
    let meta = st.root.stat(&parts)?;
    if meta.kind == EntryType::Directory {
        let s = st.clone();
        let p = parts.clone();
        let entries = blocking(move || s.root.list_entries(&p)).await?;
        let shown = if parts.is_empty() {
            "/".to_string()
        } else {
            parts.join("/")
        };
        return Ok(axum::Json(DirListing {
            path: shown,
            entries,
        })
        .into_response());
    }
    read_file(&st, &path).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PutQuery {
    #[serde(default)]
    mode: Option<String>,
    #[serde(default, rename = "type")]
    kind: Option<String>,
}

/// An octal permission string such as `0644`: read, write and execute bits only.
pub fn parse_mode(s: &str) -> Result<u32, ApiError> {
    let bad = || {
        ApiError::invalid(format!(
            "mode: `{s}` is not an octal permission between 0000 and 0777, such as 0644"
        ))
    };
    if s.is_empty() || s.len() > 4 {
        return Err(bad());
    }
    let m = u32::from_str_radix(s, 8).map_err(|_| bad())?;
    if m > 0o777 {
        return Err(bad());
    }
    Ok(m)
}

fn query<T: serde::de::DeserializeOwned>(
    q: Result<Query<T>, axum::extract::rejection::QueryRejection>,
) -> Result<T, ApiError> {
    q.map(|Query(t)| t)
        .map_err(|e| ApiError::invalid(format!("query: {}", e.body_text())))
}

async fn files_put(
    State(st): St,
    Path(path): Path<String>,
    q: Result<Query<PutQuery>, axum::extract::rejection::QueryRejection>,
    body: Body,
) -> Result<Response, ApiError> {
    let mut body = body.into_data_stream();
    let result = put_file(&st, &path, q, &mut body).await;
    if result.is_err() {
        // Read the rest of the upload before answering: closing the connection with the
        // body unread makes the client's write fail, and it would report a broken
        // connection instead of this error (`warden serve` answered 503 instead of 403 or
        // 413). Whatever was written is removed by then.
        while let Some(Ok(_)) = body.next().await {}
    }
    result
}

async fn put_file(
    st: &Arc<Sandboxd>,
    path: &str,
    q: Result<Query<PutQuery>, axum::extract::rejection::QueryRejection>,
    body: &mut axum::body::BodyDataStream,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let parts = st.root.parse(path)?;
    match q.kind.as_deref() {
        None | Some("file") => {}
        Some("directory") => {
            if q.mode.is_some() {
                return Err(ApiError::invalid(
                    "mode: applies to files only, not with type=directory",
                ));
            }
            let s = st.clone();
            blocking(move || s.root.mkdir_p(&parts)).await?;
            return Ok(StatusCode::NO_CONTENT.into_response());
        }
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "type: `{other}` is not one of `file`, `directory`"
            )));
        }
    }
    let mode = q
        .mode
        .as_deref()
        .map(parse_mode)
        .transpose()?
        .unwrap_or(0o644);
    let stream = body.map(|r| r.map_err(|e| ApiError::invalid(format!("request body: {e}"))));
    write_stream(st, parts, mode, stream).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

/// Streams `body` into `parts`, within the quota; nothing is left behind on failure.
pub async fn write_stream(
    st: &Arc<Sandboxd>,
    parts: Vec<String>,
    mode: u32,
    body: impl Stream<Item = Result<Bytes, ApiError>>,
) -> Result<(), ApiError> {
    use tokio::io::AsyncWriteExt;
    let _serial = match st.quota {
        Some(_) => Some(st.write_lock.lock().await),
        None => None,
    };
    let room = match st.quota {
        Some(q) => {
            let s = st.clone();
            let p = parts.clone();
            let (used, existing) = blocking(move || {
                let used = s.root.usage()?;
                let existing = match s.root.stat(&p) {
                    Ok(m) if m.kind == EntryType::File => m.size,
                    _ => 0,
                };
                Ok((used, existing))
            })
            .await?;
            Some(q.saturating_sub(used.saturating_sub(existing)))
        }
        None => None,
    };
    let s = st.clone();
    let p = parts.clone();
    let mut pending = blocking(move || s.root.begin_write(&p, mode)).await?;
    let Some(std_file) = pending.file.take() else {
        return Err(ApiError::internal("write: no temporary file"));
    };
    let mut file = tokio::fs::File::from_std(std_file);
    let mut written: u64 = 0;
    let mut body = std::pin::pin!(body);
    while let Some(chunk) = body.next().await {
        let chunk = chunk?;
        written += chunk.len() as u64;
        if let Some(room) = room
            && written > room
        {
            // The partial file is removed (and other writes let in) as this returns; the
            // caller reads the rest of the upload before answering.
            return Err(ApiError::new(
                ErrorCode::ResourceExhausted,
                format!(
                    "quota: `{}` does not fit: the sandbox root may hold {} bytes in all",
                    parts.join("/"),
                    st.quota.unwrap_or(0)
                ),
            ));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| crate::fs::map_errno(errno(&e), &parts.join("/")))?;
    }
    file.flush()
        .await
        .map_err(|e| crate::fs::map_errno(errno(&e), &parts.join("/")))?;
    pending.file = Some(file.into_std().await);
    blocking(move || pending.commit()).await
}

fn errno(e: &std::io::Error) -> nix::errno::Errno {
    nix::errno::Errno::from_raw(e.raw_os_error().unwrap_or(libc::EIO))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct DeleteQuery {
    #[serde(default)]
    recursive: Option<String>,
}

async fn files_delete(
    State(st): St,
    Path(path): Path<String>,
    q: Result<Query<DeleteQuery>, axum::extract::rejection::QueryRejection>,
) -> Result<Response, ApiError> {
    let q = query(q)?;
    let recursive = match q.recursive.as_deref() {
        None | Some("false") | Some("0") => false,
        Some("true") | Some("1") => true,
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "recursive: `{other}` is not one of `true`, `false`"
            )));
        }
    };
    let parts = st.root.parse(&path)?;
    let s = st.clone();
    blocking(move || s.root.remove(&parts, recursive)).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// --- warden's exec extension ----------------------------------------------------------------

fn spec_of(req: ExecRequest) -> Result<(Spec, Option<Bytes>), ApiError> {
    if req.timeout_ms == Some(0) {
        return Err(ApiError::invalid(
            "timeout_ms: must be at least 1 (or absent for no limit)",
        ));
    }
    let tty = if req.tty {
        Some((req.cols.unwrap_or(80), req.rows.unwrap_or(24)))
    } else {
        if req.cols.is_some() || req.rows.is_some() {
            return Err(ApiError::invalid("cols, rows: only with `tty: true`"));
        }
        None
    };
    Ok((
        Spec {
            argv: req.command.argv(),
            env: req.env,
            cwd: req.cwd,
            tty,
            timeout: req.timeout_ms.map(Duration::from_millis),
        },
        req.stdin.map(Bytes::from),
    ))
}

async fn exec_buffered(State(st): St, body: Bytes) -> Result<Response, ApiError> {
    let req: ExecRequest = json(&body)?;
    if req.tty {
        return Err(ApiError::invalid(
            "tty: a terminal needs a stream; use GET /v1/exec/ws",
        ));
    }
    let (spec, stdin) = spec_of(req)?;
    let r = exec::run(&st, spec, stdin, st.output_cap).await?;
    Ok(axum::Json(ExecResult {
        stdout: String::from_utf8_lossy(&r.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&r.stderr).into_owned(),
        exit_code: r.exit.exit_code,
        timed_out: r.exit.timed_out,
        signal: r.exit.signal,
        duration_ms: r.exit.duration_ms,
        truncated: r.truncated,
    })
    .into_response())
}

/// Decodes UTF-8 across chunk boundaries: an incomplete trailing sequence waits for the
/// next chunk; invalid bytes become U+FFFD.
#[derive(Debug, Default)]
pub struct Utf8Carry {
    pending: Vec<u8>,
}

impl Utf8Carry {
    pub fn push(&mut self, chunk: &[u8]) -> String {
        self.pending.extend_from_slice(chunk);
        let mut out = String::new();
        loop {
            match std::str::from_utf8(&self.pending) {
                Ok(s) => {
                    out.push_str(s);
                    self.pending.clear();
                    return out;
                }
                Err(e) => {
                    let good = e.valid_up_to();
                    out.push_str(std::str::from_utf8(&self.pending[..good]).unwrap_or_default());
                    match e.error_len() {
                        None => {
                            self.pending.drain(..good);
                            return out;
                        }
                        Some(bad) => {
                            out.push('\u{FFFD}');
                            self.pending.drain(..good + bad);
                        }
                    }
                }
            }
        }
    }
    pub fn finish(&mut self) -> String {
        let rest = String::from_utf8_lossy(&self.pending).into_owned();
        self.pending.clear();
        rest
    }
}

fn exit_event(e: &exec::Exit) -> ExecEvent {
    ExecEvent::Exit {
        exit_code: e.exit_code,
        timed_out: e.timed_out,
        signal: e.signal,
        duration_ms: e.duration_ms,
    }
}

fn sse(ev: &ExecEvent) -> SseEvent {
    let name = match ev {
        ExecEvent::Started { .. } => "started",
        ExecEvent::Stdout { .. } => "stdout",
        ExecEvent::Stderr { .. } => "stderr",
        ExecEvent::Exit { .. } => "exit",
        ExecEvent::Error { .. } => "error",
    };
    SseEvent::default()
        .event(name)
        .data(serde_json::to_string(ev).unwrap_or_default())
}

async fn exec_sse(State(st): St, body: Bytes) -> Result<Response, ApiError> {
    let req: ExecRequest = json(&body)?;
    if req.tty {
        return Err(ApiError::invalid(
            "tty: a terminal needs two-way traffic; use GET /v1/exec/ws",
        ));
    }
    let (spec, stdin) = spec_of(req)?;
    let session = exec::start(&st, spec)?;
    let input = session.input.clone();
    tokio::spawn(async move {
        if let Some(b) = stdin {
            let _ = input.send(Input::Stdin(b)).await;
        }
        let _ = input.send(Input::Eof).await;
    });
    let first = ExecEvent::Started { pid: session.pid };
    struct S {
        session: exec::Session,
        out: Utf8Carry,
        err: Utf8Carry,
        started: Option<ExecEvent>,
        done: bool,
    }
    let stream = futures_util::stream::unfold(
        S {
            session,
            out: Utf8Carry::default(),
            err: Utf8Carry::default(),
            started: Some(first),
            done: false,
        },
        |mut s| async move {
            if let Some(ev) = s.started.take() {
                return Some((Ok::<_, std::convert::Infallible>(sse(&ev)), s));
            }
            if s.done {
                return None;
            }
            loop {
                let ev = match s.session.events.recv().await {
                    Some(Event::Stdout(b)) => ExecEvent::Stdout {
                        data: s.out.push(&b),
                    },
                    Some(Event::Stderr(b)) => ExecEvent::Stderr {
                        data: s.err.push(&b),
                    },
                    Some(Event::Exit(e)) => {
                        s.done = true;
                        exit_event(&e)
                    }
                    None => return None,
                };
                if matches!(&ev, ExecEvent::Stdout { data } | ExecEvent::Stderr { data } if data.is_empty())
                {
                    continue;
                }
                return Some((Ok(sse(&ev)), s));
            }
        },
    );
    Ok(Sse::new(stream).into_response())
}

async fn exec_ws(State(st): St, ws: WebSocketUpgrade) -> Response {
    ws.on_upgrade(move |socket| ws_session(st, socket))
}

async fn ws_text(socket: &mut WebSocket, ev: &ExecEvent) -> bool {
    let text = serde_json::to_string(ev).unwrap_or_default();
    socket.send(Message::Text(text.into())).await.is_ok()
}

async fn ws_fail(mut socket: WebSocket, e: ApiError) {
    let _ = ws_text(
        &mut socket,
        &ExecEvent::Error {
            code: e.code,
            message: e.message,
        },
    )
    .await;
    let _ = socket.send(Message::Close(None)).await;
}

async fn ws_session(st: Arc<Sandboxd>, mut socket: WebSocket) {
    let req = loop {
        match socket.recv().await {
            Some(Ok(Message::Text(t))) => match serde_json::from_str::<ExecRequest>(t.as_str()) {
                Ok(r) => break r,
                Err(e) => {
                    return ws_fail(socket, ApiError::invalid(format!("request: {e}"))).await;
                }
            },
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => continue,
            Some(Ok(_)) => {
                return ws_fail(
                    socket,
                    ApiError::invalid(
                        "request: the first message must be a JSON ExecRequest (text)",
                    ),
                )
                .await;
            }
            _ => return,
        }
    };
    let (spec, stdin) = match spec_of(req) {
        Ok(x) => x,
        Err(e) => return ws_fail(socket, e).await,
    };
    let mut session = match exec::start(&st, spec) {
        Ok(s) => s,
        Err(e) => return ws_fail(socket, e).await,
    };
    if !ws_text(&mut socket, &ExecEvent::Started { pid: session.pid }).await {
        return;
    }
    if let Some(b) = stdin {
        let _ = session.input.send(Input::Stdin(b)).await;
    }
    loop {
        tokio::select! {
            msg = socket.recv() => match msg {
                Some(Ok(Message::Binary(b))) => {
                    let _ = session.input.send(Input::Stdin(b)).await;
                }
                Some(Ok(Message::Text(t))) => match serde_json::from_str::<ExecControl>(t.as_str()) {
                    Ok(ExecControl::Resize { cols, rows }) => {
                        let _ = session.input.send(Input::Resize { cols, rows }).await;
                    }
                    Ok(ExecControl::Signal { signal }) => {
                        if !(1..=64).contains(&signal) {
                            return ws_fail(socket, ApiError::invalid(format!("signal: {signal} is not a signal number (1-64)"))).await;
                        }
                        let _ = session.input.send(Input::Signal(signal)).await;
                    }
                    Ok(ExecControl::Eof) => {
                        let _ = session.input.send(Input::Eof).await;
                    }
                    Err(e) => return ws_fail(socket, ApiError::invalid(format!("control message: {e}"))).await,
                },
                Some(Ok(Message::Ping(_) | Message::Pong(_))) => {}
                // Closed or broken: dropping the session kills the command.
                _ => return,
            },
            ev = session.events.recv() => match ev {
                Some(Event::Stdout(b)) | Some(Event::Stderr(b)) if b.is_empty() => {}
                Some(Event::Stdout(b)) => {
                    let mut m = Vec::with_capacity(b.len() + 1);
                    m.push(WS_STDOUT);
                    m.extend_from_slice(&b);
                    if socket.send(Message::Binary(m.into())).await.is_err() { return; }
                }
                Some(Event::Stderr(b)) => {
                    let mut m = Vec::with_capacity(b.len() + 1);
                    m.push(WS_STDERR);
                    m.extend_from_slice(&b);
                    if socket.send(Message::Binary(m.into())).await.is_err() { return; }
                }
                Some(Event::Exit(e)) => {
                    let _ = ws_text(&mut socket, &exit_event(&e)).await;
                    let _ = socket.send(Message::Close(None)).await;
                    return;
                }
                None => {
                    return ws_fail(socket, ApiError::internal("exec: the relay ended without an exit status")).await;
                }
            }
        }
    }
}
