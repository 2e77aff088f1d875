//! A scripted LLM server for tests: it speaks the Anthropic Messages API
//! (`POST /v1/messages`), OpenAI Chat Completions (`POST /v1/chat/completions`), the
//! OpenAI Responses API (`POST /v1/responses`) and Google's Gemini API
//! (`POST /v1beta/models/{model}:generateContent` and `:streamGenerateContent`), streaming
//! (SSE) and not, and answers each request with the next [`Turn`] of its script. A turn can check the request (e.g. the last
//! tool result) and can be a failure instead: an error status with `retry-after`, a garbage
//! body, or a hang. Every request is recorded for assertions.
//!
//! ```no_run
//! # async fn demo() {
//! use warden_agent::model::testing::{ScriptedLlm, Turn};
//! let llm = ScriptedLlm::start(vec![
//!     Turn::tool_call("call_1", "Bash", serde_json::json!({"command": "ls"})),
//!     Turn::text("done").expect(|r| {
//!         let (_, output) = r.last_tool_result().ok_or("no tool result")?;
//!         if output.contains("README") { Ok(()) } else { Err(format!("got {output}")) }
//!     }),
//! ])
//! .await;
//! // Point ANTHROPIC_BASE_URL at llm.url(), OPENAI_BASE_URL at llm.openai_base_url(),
//! // GEMINI_BASE_URL at llm.gemini_base_url().
//! # }
//! ```

use std::collections::{BTreeMap, VecDeque};
use std::convert::Infallible;
use std::fmt;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::Router;
use axum::body::{Body, Bytes};
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use axum::routing::post;
use serde_json::{Value, json};

/// A check a turn runs on the request it answers; `Err` fails the turn.
pub type Expectation = Box<dyn Fn(&RecordedRequest) -> Result<(), String> + Send + Sync>;

/// Which API a request used.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WireApi {
    AnthropicMessages,
    ChatCompletions,
    Responses,
    /// Google's Gemini API: `generateContent`, and `streamGenerateContent` (SSE with
    /// `?alt=sse`, else a JSON array of chunks).
    Gemini,
}

/// A tool call a turn answers with. Gemini answers carry no call id (as the Gemini API
/// sends none): the client names the call and the result comes back by the tool's name.
#[derive(Debug, Clone, PartialEq)]
pub struct ScriptedToolCall {
    pub id: String,
    pub name: String,
    pub arguments: Value,
}

/// What a turn does.
#[derive(Debug, Clone, PartialEq)]
pub enum Reply {
    /// A model answer: text (may be empty) and tool calls, with token counts.
    Answer {
        text: String,
        tool_calls: Vec<ScriptedToolCall>,
        input_tokens: u64,
        output_tokens: u64,
        cache_read_tokens: u64,
    },
    /// An error status with a JSON error body in the API's shape. The wait goes in a
    /// `retry-after` header, except for Gemini, which puts it in the body as Google does
    /// (a `google.rpc.RetryInfo` detail with `retryDelay`).
    Status {
        status: u16,
        retry_after: Option<String>,
        message: String,
    },
    /// 200 with a body that is not the API's format (HTML for a call, bad JSON in a stream).
    Garbage,
    /// Never answers.
    Hang,
}

/// One step of the script.
pub struct Turn {
    pub reply: Reply,
    expect: Option<Expectation>,
}

impl fmt::Debug for Turn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Turn")
            .field("reply", &self.reply)
            .field("expect", &self.expect.is_some())
            .finish()
    }
}

impl Turn {
    fn answer(text: &str, tool_calls: Vec<ScriptedToolCall>) -> Self {
        Self {
            reply: Reply::Answer {
                text: text.to_string(),
                tool_calls,
                input_tokens: 0,
                output_tokens: 0,
                cache_read_tokens: 0,
            },
            expect: None,
        }
        .with_usage(11, 7)
    }

    /// Answers with text and ends the turn.
    pub fn text(text: &str) -> Self {
        Self::answer(text, Vec::new())
    }

    /// Answers with one tool call.
    pub fn tool_call(id: &str, name: &str, arguments: Value) -> Self {
        Self::answer(
            "",
            vec![ScriptedToolCall {
                id: id.into(),
                name: name.into(),
                arguments,
            }],
        )
    }

    /// Adds text before the tool calls (answers only).
    pub fn with_text(mut self, new_text: &str) -> Self {
        if let Reply::Answer { text, .. } = &mut self.reply {
            *text = new_text.into();
        }
        self
    }

    /// Adds another tool call (answers only).
    pub fn and_tool_call(mut self, id: &str, name: &str, arguments: Value) -> Self {
        if let Reply::Answer { tool_calls, .. } = &mut self.reply {
            tool_calls.push(ScriptedToolCall {
                id: id.into(),
                name: name.into(),
                arguments,
            });
        }
        self
    }

    /// Sets the token counts reported (answers only; default 11 in, 7 out).
    pub fn with_usage(mut self, input: u64, output: u64) -> Self {
        if let Reply::Answer {
            input_tokens,
            output_tokens,
            ..
        } = &mut self.reply
        {
            *input_tokens = input;
            *output_tokens = output;
        }
        self
    }

    /// Reports `n` of the input tokens as read from the cache (answers only).
    pub fn with_cache_read(mut self, n: u64) -> Self {
        if let Reply::Answer {
            cache_read_tokens, ..
        } = &mut self.reply
        {
            *cache_read_tokens = n;
        }
        self
    }

    /// An error status.
    pub fn status(status: u16, message: &str) -> Self {
        Self {
            reply: Reply::Status {
                status,
                retry_after: None,
                message: message.into(),
            },
            expect: None,
        }
    }

    /// 429 with `retry-after: <seconds>` (for Gemini: `RESOURCE_EXHAUSTED` with
    /// `retryDelay: "<seconds>s"`).
    pub fn rate_limited(retry_after: &str) -> Self {
        Self {
            reply: Reply::Status {
                status: 429,
                retry_after: Some(retry_after.into()),
                message: "rate limited by the scripted server".into(),
            },
            expect: None,
        }
    }

    pub fn garbage() -> Self {
        Self {
            reply: Reply::Garbage,
            expect: None,
        }
    }

    pub fn hang() -> Self {
        Self {
            reply: Reply::Hang,
            expect: None,
        }
    }

    /// Checks the request this turn answers; a failed check answers 400 with the message
    /// and is kept in [`ScriptedLlm::failures`].
    pub fn expect(
        mut self,
        check: impl Fn(&RecordedRequest) -> Result<(), String> + Send + Sync + 'static,
    ) -> Self {
        self.expect = Some(Box::new(check));
        self
    }
}

/// A request the server received.
#[derive(Debug, Clone)]
pub struct RecordedRequest {
    pub api: WireApi,
    /// The path without the query.
    pub path: String,
    /// The query string, if any (e.g. `alt=sse` on Gemini streams).
    pub query: Option<String>,
    /// Header names in lower case; values that are not UTF-8 are left out.
    pub headers: BTreeMap<String, String>,
    pub body: Value,
    pub stream: bool,
    pub received_at: Instant,
}

impl RecordedRequest {
    /// The model the request named (for Gemini, in the path: `models/{model}:<method>`).
    pub fn model(&self) -> Option<&str> {
        match self.api {
            WireApi::Gemini => gemini_model(&self.path),
            _ => self.body.get("model").and_then(Value::as_str),
        }
    }

    /// The system prompt (Anthropic `system`, a `system`/`developer` message, the
    /// Responses API's `instructions`, or Gemini's `systemInstruction`).
    pub fn system_prompt(&self) -> Option<String> {
        match self.api {
            WireApi::Gemini => self
                .gemini_field("systemInstruction", "system_instruction")
                .map(|s| text_of(&s["parts"])),
            WireApi::AnthropicMessages => self.body.get("system").map(text_of),
            WireApi::ChatCompletions => self.messages().iter().find_map(|m| {
                matches!(m["role"].as_str(), Some("system" | "developer"))
                    .then(|| text_of(&m["content"]))
            }),
            WireApi::Responses => self
                .body
                .get("instructions")
                .filter(|v| !v.is_null())
                .map(text_of)
                .or_else(|| {
                    self.input_items().iter().find_map(|m| {
                        matches!(m["role"].as_str(), Some("system" | "developer"))
                            .then(|| text_of(&m["content"]))
                    })
                }),
        }
    }

    /// The names of the tools offered.
    pub fn tool_names(&self) -> Vec<String> {
        let tools = self.body["tools"].as_array().cloned().unwrap_or_default();
        if self.api == WireApi::Gemini {
            return tools
                .iter()
                .filter_map(|t| {
                    t.get("functionDeclarations")
                        .or_else(|| t.get("function_declarations"))
                        .and_then(Value::as_array)
                })
                .flatten()
                .filter_map(|d| d["name"].as_str().map(str::to_string))
                .collect();
        }
        tools
            .iter()
            .filter_map(|t| {
                t.get("name")
                    .or_else(|| t.pointer("/function/name"))
                    .and_then(Value::as_str)
                    .map(str::to_string)
            })
            .collect()
    }

    /// Every tool result in the request, in order: `(call id, content)`. A Gemini
    /// `functionResponse` without an `id` (the usual case) gives the tool's name in place of
    /// the id; its content is `response.content` or `response.output` when a string, else
    /// the `response` object as JSON.
    pub fn tool_results(&self) -> Vec<(String, String)> {
        let mut results = Vec::new();
        match self.api {
            WireApi::Gemini => {
                for part in self.gemini_parts() {
                    let Some(response) = part
                        .get("functionResponse")
                        .or_else(|| part.get("function_response"))
                    else {
                        continue;
                    };
                    let id = response["id"]
                        .as_str()
                        .filter(|id| !id.is_empty())
                        .or_else(|| response["name"].as_str())
                        .unwrap_or_default();
                    let body = &response["response"];
                    let content = ["content", "output"]
                        .iter()
                        .find_map(|k| body[k].as_str().map(str::to_string))
                        .unwrap_or_else(|| text_of(body));
                    results.push((id.to_string(), content));
                }
            }
            WireApi::AnthropicMessages => {
                for message in self.messages() {
                    for block in message["content"].as_array().into_iter().flatten() {
                        if block["type"] == "tool_result" {
                            results.push((
                                block["tool_use_id"].as_str().unwrap_or_default().into(),
                                text_of(&block["content"]),
                            ));
                        }
                    }
                }
            }
            WireApi::ChatCompletions => {
                for message in self.messages() {
                    if message["role"] == "tool" {
                        results.push((
                            message["tool_call_id"].as_str().unwrap_or_default().into(),
                            text_of(&message["content"]),
                        ));
                    }
                }
            }
            WireApi::Responses => {
                for item in self.input_items() {
                    if item["type"] == "function_call_output" {
                        results.push((
                            item["call_id"].as_str().unwrap_or_default().into(),
                            text_of(&item["output"]),
                        ));
                    }
                }
            }
        }
        results
    }

    /// Whether the query asks for server-sent events (`alt=sse`), as Gemini streams do.
    pub fn sse(&self) -> bool {
        self.query
            .as_deref()
            .is_some_and(|q| q.split('&').any(|pair| pair == "alt=sse"))
    }

    /// The last tool result: `(call id, content)`.
    pub fn last_tool_result(&self) -> Option<(String, String)> {
        self.tool_results().pop()
    }

    /// The text of the last user message.
    pub fn last_user_text(&self) -> Option<String> {
        if self.api == WireApi::Gemini {
            // Tool results go in `user` contents too; the user's own have text parts.
            return self.gemini_contents().iter().rev().find_map(|c| {
                let parts = c["parts"].as_array()?;
                (c["role"].as_str().unwrap_or("user") == "user"
                    && parts.iter().any(|p| p["text"].is_string()))
                .then(|| text_of(&c["parts"]))
            });
        }
        let items = match self.api {
            WireApi::Responses => self.input_items(),
            _ => self.messages(),
        };
        items
            .iter()
            .rev()
            .find(|m| {
                m["role"] == "user"
                    && (m["content"].is_string()
                        || m["content"].as_array().is_some_and(|parts| {
                            parts
                                .iter()
                                .any(|p| matches!(p["type"].as_str(), Some("text" | "input_text")))
                        }))
            })
            .map(|m| text_of(&m["content"]))
    }

    fn messages(&self) -> Vec<Value> {
        self.body["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// A top-level field of a Gemini request, in camelCase or (as the API also accepts)
    /// snake_case.
    fn gemini_field(&self, camel: &str, snake: &str) -> Option<&Value> {
        self.body
            .get(camel)
            .or_else(|| self.body.get(snake))
            .filter(|v| !v.is_null())
    }

    fn gemini_contents(&self) -> Vec<Value> {
        self.body["contents"]
            .as_array()
            .cloned()
            .unwrap_or_default()
    }

    /// The parts of every content of a Gemini request, in order.
    fn gemini_parts(&self) -> Vec<Value> {
        self.gemini_contents()
            .iter()
            .filter_map(|c| c["parts"].as_array().cloned())
            .flatten()
            .collect()
    }

    fn input_items(&self) -> Vec<Value> {
        match &self.body["input"] {
            Value::Array(items) => items.clone(),
            Value::String(s) => vec![json!({"role": "user", "content": s})],
            _ => Vec::new(),
        }
    }
}

/// The model in a Gemini path: `/v1beta/models/{model}:{method}`.
fn gemini_model(path: &str) -> Option<&str> {
    let rest = path.split_once("/models/")?.1;
    Some(rest.rsplit_once(':').map_or(rest, |(model, _)| model)).filter(|m| !m.is_empty())
}

/// The text in a string, or in an array of text blocks.
fn text_of(value: &Value) -> String {
    match value {
        Value::String(s) => s.clone(),
        Value::Array(parts) => parts
            .iter()
            .filter_map(|p| p.get("text").and_then(Value::as_str))
            .collect::<Vec<_>>()
            .join(""),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

#[derive(Default)]
struct Script {
    turns: VecDeque<Turn>,
    requests: Vec<RecordedRequest>,
    failures: Vec<String>,
    served: usize,
}

/// The running server. It stops when dropped.
#[derive(Debug)]
pub struct ScriptedLlm {
    addr: SocketAddr,
    script: Arc<Mutex<Script>>,
    task: tokio::task::JoinHandle<()>,
}

impl fmt::Debug for Script {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Script")
            .field("turns_left", &self.turns.len())
            .field("requests", &self.requests.len())
            .finish()
    }
}

impl ScriptedLlm {
    /// Starts on a free loopback port with the given script.
    pub async fn start(turns: Vec<Turn>) -> Self {
        let script = Arc::new(Mutex::new(Script {
            turns: turns.into(),
            ..Script::default()
        }));
        let app = app(Arc::clone(&script));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind a loopback port");
        let addr = listener.local_addr().expect("the bound address");
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        Self { addr, script, task }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:PORT`: the base URL for Anthropic (and Ollama's host).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://127.0.0.1:PORT/v1`: the base URL for OpenAI clients.
    pub fn openai_base_url(&self) -> String {
        format!("{}/v1", self.url())
    }

    /// `http://127.0.0.1:PORT/v1beta`: the base URL for Gemini (as `GEMINI_BASE_URL`).
    pub fn gemini_base_url(&self) -> String {
        format!("{}/v1beta", self.url())
    }

    /// Adds turns at the end of the script.
    pub fn push(&self, turns: impl IntoIterator<Item = Turn>) {
        self.lock().turns.extend(turns);
    }

    /// Every request received so far, in order.
    pub fn requests(&self) -> Vec<RecordedRequest> {
        self.lock().requests.clone()
    }

    /// Failed expectations and requests that found no turn left.
    pub fn failures(&self) -> Vec<String> {
        self.lock().failures.clone()
    }

    /// How many turns are left.
    pub fn turns_left(&self) -> usize {
        self.lock().turns.len()
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Script> {
        self.script.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl Drop for ScriptedLlm {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The router: the four APIs on their usual paths.
pub fn app_for(turns: Vec<Turn>) -> Router {
    app(Arc::new(Mutex::new(Script {
        turns: turns.into(),
        ..Script::default()
    })))
}

fn app(script: Arc<Mutex<Script>>) -> Router {
    Router::new()
        .route("/v1/{*api}", post(handle))
        .route("/v1beta/models/{*method}", post(handle_gemini))
        .with_state(script)
}

async fn handle(
    State(script): State<Arc<Mutex<Script>>>,
    Path(api): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/v1/{api}");
    let api = match api.as_str() {
        "messages" => WireApi::AnthropicMessages,
        "chat/completions" => WireApi::ChatCompletions,
        "responses" => WireApi::Responses,
        other => {
            return plain(
                StatusCode::NOT_FOUND,
                &format!("the scripted server has no /v1/{other}"),
            );
        }
    };
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return plain(StatusCode::BAD_REQUEST, &format!("body is not JSON: {e}")),
    };
    let stream = body["stream"].as_bool().unwrap_or(false);
    serve(script, api, path, query, &headers, body, stream).await
}

/// Gemini: `models/{model}:generateContent` and `models/{model}:streamGenerateContent`.
async fn handle_gemini(
    State(script): State<Arc<Mutex<Script>>>,
    Path(method): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let path = format!("/v1beta/models/{method}");
    let stream = match method.rsplit_once(':') {
        Some((model, "generateContent")) if !model.is_empty() => false,
        Some((model, "streamGenerateContent")) if !model.is_empty() => true,
        _ => {
            return error_response(
                WireApi::Gemini,
                404,
                None,
                &format!("the scripted server has no {path}"),
            );
        }
    };
    let body: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            return error_response(
                WireApi::Gemini,
                400,
                None,
                &format!("body is not JSON: {e}"),
            );
        }
    };
    serve(script, WireApi::Gemini, path, query, &headers, body, stream).await
}

/// Records the request and answers it with the next turn.
async fn serve(
    script: Arc<Mutex<Script>>,
    api: WireApi,
    path: String,
    query: Option<String>,
    headers: &HeaderMap,
    body: Value,
    stream: bool,
) -> Response {
    let request = RecordedRequest {
        api,
        path,
        query,
        headers: headers
            .iter()
            .filter_map(|(k, v)| Some((k.as_str().to_string(), v.to_str().ok()?.to_string())))
            .collect(),
        stream,
        body,
        received_at: Instant::now(),
    };
    let (turn, number) = {
        let mut s = script.lock().unwrap_or_else(|e| e.into_inner());
        s.requests.push(request.clone());
        s.served += 1;
        (s.turns.pop_front(), s.served)
    };
    let Some(turn) = turn else {
        let message = format!("request {number} found no turn left in the script");
        script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .failures
            .push(message.clone());
        return error_response(api, 500, None, &message);
    };
    if let Some(check) = &turn.expect
        && let Err(problem) = check(&request)
    {
        let message = format!("turn {number}: expectation failed: {problem}");
        script
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .failures
            .push(message.clone());
        return error_response(api, 400, None, &message);
    }
    let model = request.model().unwrap_or("scripted-model").to_string();
    match turn.reply {
        Reply::Hang => std::future::pending().await,
        Reply::Status {
            status,
            retry_after,
            message,
        } => error_response(api, status, retry_after.as_deref(), &message),
        Reply::Garbage if request.stream && (api != WireApi::Gemini || request.sse()) => {
            sse(vec![(
                None,
                "{\"type\": \"message_start\", this is not json".to_string(),
            )])
        }
        Reply::Garbage => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Body::from("<html><body>502 upstream gone</body></html>"))
            .expect("a valid response"),
        Reply::Answer {
            text,
            tool_calls,
            input_tokens,
            output_tokens,
            cache_read_tokens,
        } => {
            let answer = Answer {
                id: number,
                model,
                text,
                tool_calls,
                input_tokens,
                output_tokens,
                cache_read_tokens,
            };
            match (api, request.stream) {
                (WireApi::AnthropicMessages, false) => json_response(answer.anthropic()),
                (WireApi::AnthropicMessages, true) => sse(answer.anthropic_events()),
                (WireApi::ChatCompletions, false) => json_response(answer.chat()),
                (WireApi::ChatCompletions, true) => {
                    let usage = request.body.pointer("/stream_options/include_usage")
                        == Some(&Value::Bool(true));
                    sse(answer.chat_chunks(usage))
                }
                (WireApi::Responses, false) => json_response(answer.response()),
                (WireApi::Responses, true) => sse(answer.response_events()),
                (WireApi::Gemini, false) => json_response(answer.gemini()),
                (WireApi::Gemini, true) if request.sse() => sse(answer
                    .gemini_chunks()
                    .into_iter()
                    .map(|c| (None, c))
                    .collect()),
                // Without `alt=sse`, Gemini streams one JSON array of the chunks.
                (WireApi::Gemini, true) => json_array_stream(answer.gemini_chunks()),
            }
        }
    }
}

fn plain(status: StatusCode, text: &str) -> Response {
    Response::builder()
        .status(status)
        .header(header::CONTENT_TYPE, "text/plain")
        .body(Body::from(text.to_string()))
        .expect("a valid response")
}

fn json_response(value: Value) -> Response {
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(value.to_string()))
        .expect("a valid response")
}

/// An error in the API's own shape.
fn error_response(api: WireApi, status: u16, retry_after: Option<&str>, message: &str) -> Response {
    let body = match api {
        WireApi::AnthropicMessages => {
            let kind = match status {
                429 => "rate_limit_error",
                529 => "overloaded_error",
                400 => "invalid_request_error",
                s if s >= 500 => "api_error",
                _ => "invalid_request_error",
            };
            json!({"type": "error", "error": {"type": kind, "message": message}})
        }
        WireApi::Gemini => {
            // Google's error shape: `google.rpc.Status` with the canonical code's name.
            let code = match status {
                400 => "INVALID_ARGUMENT",
                401 => "UNAUTHENTICATED",
                403 => "PERMISSION_DENIED",
                404 => "NOT_FOUND",
                409 => "ABORTED",
                429 => "RESOURCE_EXHAUSTED",
                499 => "CANCELLED",
                501 => "UNIMPLEMENTED",
                503 | 529 => "UNAVAILABLE",
                504 => "DEADLINE_EXCEEDED",
                s if s >= 500 => "INTERNAL",
                _ => "FAILED_PRECONDITION",
            };
            let mut details = Vec::new();
            if let Some(seconds) = retry_after
                .and_then(|w| w.trim().parse::<f64>().ok())
                .filter(|n| n.is_finite() && *n >= 0.0)
            {
                details.push(json!({
                    "@type": "type.googleapis.com/google.rpc.RetryInfo",
                    "retryDelay": format!("{seconds}s"),
                }));
            }
            let mut error = json!({"code": status, "message": message, "status": code});
            if !details.is_empty() {
                error["details"] = json!(details);
            }
            json!({ "error": error })
        }
        _ => json!({"error": {
            "message": message,
            "type": if status == 429 { "rate_limit_exceeded" } else { "server_error" },
            "param": null,
            "code": null,
        }}),
    };
    let mut builder = Response::builder()
        .status(StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR))
        .header(header::CONTENT_TYPE, "application/json");
    // Google sends the wait in the body (above), not in a header.
    if let Some(wait) = retry_after.filter(|_| api != WireApi::Gemini) {
        builder = builder.header(header::RETRY_AFTER, wait);
    }
    builder
        .body(Body::from(body.to_string()))
        .expect("a valid response")
}

/// Server-sent events, each `(event name, data)`, one chunk per event.
fn sse(events: Vec<(Option<&'static str>, String)>) -> Response {
    let chunks = events.into_iter().map(|(name, data)| {
        let mut text = String::new();
        if let Some(name) = name {
            text.push_str(&format!("event: {name}\n"));
        }
        text.push_str(&format!("data: {data}\n\n"));
        Ok::<_, Infallible>(Bytes::from(text))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "text/event-stream")
        .header(header::CACHE_CONTROL, "no-cache")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .expect("a valid response")
}

/// A 200 whose body is a JSON array sent one element per chunk, as Gemini streams without
/// `alt=sse`.
fn json_array_stream(elements: Vec<String>) -> Response {
    let last = elements.len().saturating_sub(1);
    let chunks = elements.into_iter().enumerate().map(move |(k, element)| {
        let open = if k == 0 { "[" } else { "" };
        let close = if k == last { "]" } else { ",\r\n" };
        Ok::<_, Infallible>(Bytes::from(format!("{open}{element}{close}")))
    });
    Response::builder()
        .status(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from_stream(futures_util::stream::iter(chunks)))
        .expect("a valid response")
}

/// Splits text into pieces of a few words, so streams carry several deltas.
fn pieces(text: &str, size: usize) -> Vec<String> {
    let chars: Vec<char> = text.chars().collect();
    chars
        .chunks(size.max(1))
        .map(|c| c.iter().collect())
        .collect()
}

struct Answer {
    id: usize,
    model: String,
    text: String,
    tool_calls: Vec<ScriptedToolCall>,
    input_tokens: u64,
    output_tokens: u64,
    cache_read_tokens: u64,
}

impl Answer {
    fn stop(&self, tool: &'static str, end: &'static str) -> &'static str {
        if self.tool_calls.is_empty() {
            end
        } else {
            tool
        }
    }

    // -- Anthropic Messages

    fn anthropic_usage(&self) -> Value {
        // Anthropic's input_tokens excludes the tokens read from the cache.
        json!({
            "input_tokens": self.input_tokens - self.cache_read_tokens.min(self.input_tokens),
            "output_tokens": self.output_tokens,
            "cache_read_input_tokens": self.cache_read_tokens,
            "cache_creation_input_tokens": 0,
        })
    }

    fn anthropic(&self) -> Value {
        let mut content = Vec::new();
        if !self.text.is_empty() {
            content.push(json!({"type": "text", "text": self.text}));
        }
        for call in &self.tool_calls {
            content.push(json!({
                "type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments,
            }));
        }
        json!({
            "id": format!("msg_{}", self.id),
            "type": "message",
            "role": "assistant",
            "model": self.model,
            "content": content,
            "stop_reason": self.stop("tool_use", "end_turn"),
            "stop_sequence": null,
            "usage": self.anthropic_usage(),
        })
    }

    fn anthropic_events(&self) -> Vec<(Option<&'static str>, String)> {
        let mut events = Vec::new();
        let mut push =
            |name: &'static str, data: Value| events.push((Some(name), data.to_string()));
        let mut start_usage = self.anthropic_usage();
        start_usage["output_tokens"] = json!(1);
        push(
            "message_start",
            json!({"type": "message_start", "message": {
                "id": format!("msg_{}", self.id), "type": "message", "role": "assistant",
                "model": self.model, "content": [], "stop_reason": null,
                "stop_sequence": null, "usage": start_usage,
            }}),
        );
        push("ping", json!({"type": "ping"}));
        let mut index = 0;
        if !self.text.is_empty() {
            push(
                "content_block_start",
                json!({"type": "content_block_start", "index": index,
                       "content_block": {"type": "text", "text": ""}}),
            );
            for piece in pieces(&self.text, 8) {
                push(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index,
                           "delta": {"type": "text_delta", "text": piece}}),
                );
            }
            push(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            );
            index += 1;
        }
        for call in &self.tool_calls {
            push(
                "content_block_start",
                json!({"type": "content_block_start", "index": index,
                       "content_block": {"type": "tool_use", "id": call.id,
                                         "name": call.name, "input": {}}}),
            );
            for piece in pieces(&call.arguments.to_string(), 10) {
                push(
                    "content_block_delta",
                    json!({"type": "content_block_delta", "index": index,
                           "delta": {"type": "input_json_delta", "partial_json": piece}}),
                );
            }
            push(
                "content_block_stop",
                json!({"type": "content_block_stop", "index": index}),
            );
            index += 1;
        }
        push(
            "message_delta",
            json!({"type": "message_delta",
                   "delta": {"stop_reason": self.stop("tool_use", "end_turn"), "stop_sequence": null},
                   "usage": {"output_tokens": self.output_tokens}}),
        );
        push("message_stop", json!({"type": "message_stop"}));
        events
    }

    // -- OpenAI Chat Completions

    fn chat_usage(&self) -> Value {
        json!({
            "prompt_tokens": self.input_tokens,
            "completion_tokens": self.output_tokens,
            "total_tokens": self.input_tokens + self.output_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cache_read_tokens},
        })
    }

    fn chat(&self) -> Value {
        let mut message = json!({
            "role": "assistant",
            "content": if self.text.is_empty() { Value::Null } else { json!(self.text) },
        });
        if !self.tool_calls.is_empty() {
            message["tool_calls"] = self
                .tool_calls
                .iter()
                .map(|c| {
                    json!({"id": c.id, "type": "function",
                           "function": {"name": c.name, "arguments": c.arguments.to_string()}})
                })
                .collect();
        }
        json!({
            "id": format!("chatcmpl-{}", self.id),
            "object": "chat.completion",
            "created": 1_700_000_000,
            "model": self.model,
            "choices": [{"index": 0, "message": message, "logprobs": null,
                         "finish_reason": self.stop("tool_calls", "stop")}],
            "usage": self.chat_usage(),
        })
    }

    fn chat_chunks(&self, include_usage: bool) -> Vec<(Option<&'static str>, String)> {
        let chunk = |delta: Value, finish: Value| {
            json!({
                "id": format!("chatcmpl-{}", self.id),
                "object": "chat.completion.chunk",
                "created": 1_700_000_000,
                "model": self.model,
                "choices": [{"index": 0, "delta": delta, "logprobs": null, "finish_reason": finish}],
            })
            .to_string()
        };
        let mut events = vec![(
            None,
            chunk(json!({"role": "assistant", "content": ""}), Value::Null),
        )];
        for piece in pieces(&self.text, 8) {
            events.push((None, chunk(json!({"content": piece}), Value::Null)));
        }
        for (k, call) in self.tool_calls.iter().enumerate() {
            events.push((
                None,
                chunk(
                    json!({"tool_calls": [{"index": k, "id": call.id, "type": "function",
                                           "function": {"name": call.name, "arguments": ""}}]}),
                    Value::Null,
                ),
            ));
            for piece in pieces(&call.arguments.to_string(), 10) {
                events.push((
                    None,
                    chunk(
                        json!({"tool_calls": [{"index": k, "function": {"arguments": piece}}]}),
                        Value::Null,
                    ),
                ));
            }
        }
        events.push((
            None,
            chunk(json!({}), json!(self.stop("tool_calls", "stop"))),
        ));
        if include_usage {
            events.push((
                None,
                json!({
                    "id": format!("chatcmpl-{}", self.id),
                    "object": "chat.completion.chunk",
                    "created": 1_700_000_000,
                    "model": self.model,
                    "choices": [],
                    "usage": self.chat_usage(),
                })
                .to_string(),
            ));
        }
        events.push((None, "[DONE]".to_string()));
        events
    }

    // -- OpenAI Responses

    fn response_items(&self) -> Vec<Value> {
        let mut output = Vec::new();
        if !self.text.is_empty() {
            output.push(json!({
                "type": "message", "id": format!("msg_{}", self.id), "status": "completed",
                "role": "assistant",
                "content": [{"type": "output_text", "text": self.text, "annotations": []}],
            }));
        }
        for (k, call) in self.tool_calls.iter().enumerate() {
            output.push(json!({
                "type": "function_call", "id": format!("fc_{}_{k}", self.id),
                "call_id": call.id, "name": call.name,
                "arguments": call.arguments.to_string(), "status": "completed",
            }));
        }
        output
    }

    fn response_with(&self, status: &str, output: Vec<Value>, usage: Value) -> Value {
        json!({
            "id": format!("resp_{}", self.id),
            "object": "response",
            "created_at": 1_700_000_000,
            "status": status,
            "model": self.model,
            "output": output,
            "usage": usage,
        })
    }

    fn response(&self) -> Value {
        self.response_with(
            "completed",
            self.response_items(),
            json!({
                "input_tokens": self.input_tokens,
                "input_tokens_details": {"cached_tokens": self.cache_read_tokens},
                "output_tokens": self.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": self.input_tokens + self.output_tokens,
            }),
        )
    }

    fn response_events(&self) -> Vec<(Option<&'static str>, String)> {
        let mut events = Vec::new();
        let mut sequence = 0;
        let mut push = |name: &'static str, mut data: Value| {
            data["type"] = json!(name);
            data["sequence_number"] = json!(sequence);
            sequence += 1;
            events.push((Some(name), data.to_string()));
        };
        let created = self.response_with("in_progress", Vec::new(), Value::Null);
        push("response.created", json!({"response": created}));
        push("response.in_progress", json!({"response": created}));
        for (output_index, item) in self.response_items().into_iter().enumerate() {
            let item_id = item["id"].clone();
            if item["type"] == "message" {
                let mut added = item.clone();
                added["status"] = json!("in_progress");
                added["content"] = json!([]);
                push(
                    "response.output_item.added",
                    json!({"output_index": output_index, "item": added}),
                );
                push(
                    "response.content_part.added",
                    json!({"item_id": item_id, "output_index": output_index, "content_index": 0,
                           "part": {"type": "output_text", "text": "", "annotations": []}}),
                );
                for piece in pieces(&self.text, 8) {
                    push(
                        "response.output_text.delta",
                        json!({"item_id": item_id, "output_index": output_index,
                               "content_index": 0, "delta": piece}),
                    );
                }
                push(
                    "response.output_text.done",
                    json!({"item_id": item_id, "output_index": output_index,
                           "content_index": 0, "text": self.text}),
                );
                push(
                    "response.content_part.done",
                    json!({"item_id": item_id, "output_index": output_index, "content_index": 0,
                           "part": {"type": "output_text", "text": self.text, "annotations": []}}),
                );
            } else {
                let mut added = item.clone();
                added["status"] = json!("in_progress");
                added["arguments"] = json!("");
                push(
                    "response.output_item.added",
                    json!({"output_index": output_index, "item": added}),
                );
                let arguments = item["arguments"].as_str().unwrap_or_default().to_string();
                for piece in pieces(&arguments, 10) {
                    push(
                        "response.function_call_arguments.delta",
                        json!({"item_id": item_id, "output_index": output_index, "delta": piece}),
                    );
                }
                push(
                    "response.function_call_arguments.done",
                    json!({"item_id": item_id, "output_index": output_index,
                           "arguments": arguments}),
                );
            }
            push(
                "response.output_item.done",
                json!({"output_index": output_index, "item": item}),
            );
        }
        push("response.completed", json!({"response": self.response()}));
        events
    }

    // -- Gemini

    /// `usageMetadata`: `promptTokenCount` includes the tokens read from the cache, which
    /// `cachedContentTokenCount` gives (left out when none, as Google does).
    fn gemini_usage(&self) -> Value {
        let mut usage = json!({
            "promptTokenCount": self.input_tokens,
            "candidatesTokenCount": self.output_tokens,
            "totalTokenCount": self.input_tokens + self.output_tokens,
        });
        if self.cache_read_tokens > 0 {
            usage["cachedContentTokenCount"] = json!(self.cache_read_tokens);
        }
        usage
    }

    /// A `GenerateContentResponse` with one candidate holding `parts`; the finish reason
    /// and the whole usage only when `last`. Gemini says `STOP` also after function calls.
    fn gemini_with(&self, parts: Vec<Value>, last: bool) -> Value {
        let mut candidate = json!({"content": {"role": "model", "parts": parts}, "index": 0});
        let usage = if last {
            candidate["finishReason"] = json!("STOP");
            self.gemini_usage()
        } else {
            json!({"promptTokenCount": self.input_tokens, "totalTokenCount": self.input_tokens})
        };
        json!({
            "candidates": [candidate],
            "usageMetadata": usage,
            "modelVersion": self.model,
            "responseId": format!("scripted-{}", self.id),
        })
    }

    fn gemini_call_parts(&self) -> Vec<Value> {
        self.tool_calls
            .iter()
            .map(|c| json!({"functionCall": {"name": c.name, "args": c.arguments}}))
            .collect()
    }

    fn gemini(&self) -> Value {
        let mut parts = Vec::new();
        if !self.text.is_empty() || self.tool_calls.is_empty() {
            parts.push(json!({"text": self.text}));
        }
        parts.extend(self.gemini_call_parts());
        self.gemini_with(parts, true)
    }

    /// The stream's chunks: the text in pieces, then each function call whole in a chunk of
    /// its own (Gemini does not stream arguments); the last chunk carries the finish reason
    /// and the usage.
    fn gemini_chunks(&self) -> Vec<String> {
        let mut parts: Vec<Value> = pieces(&self.text, 8)
            .into_iter()
            .map(|piece| json!({"text": piece}))
            .collect();
        parts.extend(self.gemini_call_parts());
        if parts.is_empty() {
            parts.push(json!({"text": ""}));
        }
        let last = parts.len() - 1;
        parts
            .into_iter()
            .enumerate()
            .map(|(k, part)| self.gemini_with(vec![part], k == last).to_string())
            .collect()
    }
}
