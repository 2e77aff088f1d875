//! An A2A v1.0 client over JSON-RPC: reads a peer's agent card, sends it messages, follows
//! its tasks (polling or SSE). What `warden a2a` and delegation to a peer agent use.
//!
//! reqwest on rustls with ring, as the rest of warden; proxies from the environment are
//! ignored (peers are reached directly).

use std::sync::Arc;
use std::time::Duration;

use a2a::{
    AgentCard, JsonRpcResponse, Message, Part, PartContent, Role, SendMessageConfiguration,
    SendMessageRequest, SendMessageResponse, StreamResponse, Task, TaskState,
};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

/// Why a call to a peer failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("{0}")]
    Usage(String),
    #[error("{url}: {message}")]
    Http { url: String, message: String },
    #[error("{url}: HTTP {status}: {body}")]
    Status {
        url: String,
        status: u16,
        body: String,
    },
    #[error("JSON-RPC error {code}: {message}")]
    Rpc { code: i32, message: String },
    #[error("{url}: the answer is not what A2A says ({message})")]
    Decode { url: String, message: String },
}

/// A peer agent: its base URL and bearer token.
#[derive(Debug, Clone)]
pub struct A2aClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
}

/// The JSON-RPC URL of a card: its first JSONRPC interface of protocol 1.x.
pub fn rpc_url(card: &AgentCard) -> Result<String, ClientError> {
    card.supported_interfaces
        .iter()
        .find(|i| {
            i.protocol_binding.eq_ignore_ascii_case("JSONRPC")
                && (i.protocol_version == "1" || i.protocol_version.starts_with("1."))
        })
        .map(|i| i.url.clone())
        .ok_or_else(|| {
            ClientError::Usage(format!(
                "the agent card of {} lists no JSON-RPC interface of protocol 1.x (it has: {})",
                card.name,
                card.supported_interfaces
                    .iter()
                    .map(|i| format!("{} {}", i.protocol_binding, i.protocol_version))
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
}

/// The text an answer carries: a task's artifacts' text parts (else its status message), or
/// a message's text parts.
pub fn text_of_task(task: &Task) -> String {
    let mut out: Vec<&str> = Vec::new();
    for a in task.artifacts.iter().flatten() {
        out.extend(a.parts.iter().filter_map(Part::as_text));
    }
    if out.is_empty()
        && let Some(m) = &task.status.message
    {
        out.extend(m.parts.iter().filter_map(Part::as_text));
    }
    out.join("\n")
}

/// The name of a state as the wire has it (`TASK_STATE_COMPLETED`).
pub fn state_name(state: &TaskState) -> String {
    serde_json::to_value(state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_string))
        .unwrap_or_default()
}

/// A user message with one text part (and optional data part).
pub fn user_message(text: &str, data: Option<Value>, task_id: Option<String>) -> Message {
    let mut parts = vec![Part::text(text)];
    if let Some(d) = data {
        parts.push(Part {
            content: PartContent::Data(d),
            filename: None,
            media_type: None,
            metadata: None,
        });
    }
    let mut m = Message::new(Role::User, parts);
    m.task_id = task_id;
    m
}

impl A2aClient {
    /// `base` is where the card is (`<base>/.well-known/agent-card.json`).
    pub fn new(base: &str, token: Option<String>) -> Result<A2aClient, ClientError> {
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            return Err(ClientError::Usage(format!(
                "`{base}` is not an http:// or https:// URL"
            )));
        }
        let mut roots = rustls::RootCertStore::empty();
        let _ = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ClientError::Usage(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .no_proxy()
            .connect_timeout(Duration::from_secs(10))
            .build()
            .map_err(|e| ClientError::Usage(format!("HTTP client: {e}")))?;
        Ok(A2aClient {
            http,
            base: base.trim_end_matches('/').to_string(),
            token,
        })
    }

    fn authed(&self, r: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        let r = r.header("A2A-Version", "1.0");
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    /// The peer's agent card.
    pub async fn card(&self) -> Result<AgentCard, ClientError> {
        let url = format!("{}/.well-known/agent-card.json", self.base);
        let resp = self
            .http
            .get(&url)
            .timeout(Duration::from_secs(30))
            .send()
            .await
            .map_err(|e| http_error(&url, e))?;
        let status = resp.status().as_u16();
        let body = resp.bytes().await.map_err(|e| http_error(&url, e))?;
        if status != 200 {
            return Err(ClientError::Status {
                url,
                status,
                body: String::from_utf8_lossy(&body).chars().take(500).collect(),
            });
        }
        serde_json::from_slice(&body).map_err(|e| ClientError::Decode {
            url,
            message: e.to_string(),
        })
    }

    /// One JSON-RPC call; an error response becomes [`ClientError::Rpc`].
    pub async fn call<T: DeserializeOwned>(
        &self,
        url: &str,
        method: &str,
        params: Value,
        timeout: Duration,
    ) -> Result<T, ClientError> {
        let body = json!({"jsonrpc": "2.0", "id": a2a::new_message_id(), "method": method, "params": params});
        let resp = self
            .authed(self.http.post(url))
            .header("content-type", "application/json")
            .body(body.to_string())
            .timeout(timeout)
            .send()
            .await
            .map_err(|e| http_error(url, e))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| http_error(url, e))?;
        if status != 200 {
            return Err(ClientError::Status {
                url: url.to_string(),
                status,
                body: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
            });
        }
        decode_response(url, &bytes)
    }

    /// Sends a message; with `wait`, the peer answers when the task has finished or needs
    /// input (or its own wait ran out).
    pub async fn send_message(
        &self,
        url: &str,
        message: Message,
        wait: bool,
    ) -> Result<SendMessageResponse, ClientError> {
        let req = SendMessageRequest {
            message,
            configuration: Some(SendMessageConfiguration {
                accepted_output_modes: None,
                task_push_notification_config: None,
                history_length: None,
                return_immediately: Some(!wait),
            }),
            metadata: None,
            tenant: None,
        };
        let params = serde_json::to_value(&req).unwrap_or_default();
        self.call(url, "SendMessage", params, Duration::from_secs(600))
            .await
    }

    pub async fn get_task(&self, url: &str, id: &str) -> Result<Task, ClientError> {
        self.call(url, "GetTask", json!({"id": id}), Duration::from_secs(60))
            .await
    }

    /// A streaming call (`SendStreamingMessage`, `SubscribeToTask`): `on_event` gets each
    /// event and returns false to stop reading.
    pub async fn stream(
        &self,
        url: &str,
        method: &str,
        params: Value,
        mut on_event: impl FnMut(StreamResponse) -> bool,
    ) -> Result<(), ClientError> {
        let body = json!({"jsonrpc": "2.0", "id": a2a::new_message_id(), "method": method, "params": params});
        let mut resp = self
            .authed(self.http.post(url))
            .header("content-type", "application/json")
            .header("accept", "text/event-stream")
            .body(body.to_string())
            .send()
            .await
            .map_err(|e| http_error(url, e))?;
        let status = resp.status().as_u16();
        let is_sse = resp
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.starts_with("text/event-stream"));
        if status != 200 || !is_sse {
            let bytes = resp.bytes().await.map_err(|e| http_error(url, e))?;
            if status != 200 {
                return Err(ClientError::Status {
                    url: url.to_string(),
                    status,
                    body: String::from_utf8_lossy(&bytes).chars().take(500).collect(),
                });
            }
            // An error before the stream started comes as one JSON-RPC response.
            let event: StreamResponse = decode_response(url, &bytes)?;
            on_event(event);
            return Ok(());
        }
        let mut buf: Vec<u8> = Vec::new();
        loop {
            let chunk = resp.chunk().await.map_err(|e| http_error(url, e))?;
            let Some(chunk) = chunk else { return Ok(()) };
            buf.extend_from_slice(&chunk);
            while let Some(end) = find_event_end(&buf) {
                let raw: Vec<u8> = buf.drain(..end.1).collect();
                let text = String::from_utf8_lossy(&raw[..end.0]).to_string();
                let data: Vec<&str> = text
                    .lines()
                    .filter_map(|l| l.strip_prefix("data:"))
                    .map(|d| d.strip_prefix(' ').unwrap_or(d))
                    .collect();
                if data.is_empty() {
                    continue;
                }
                let event: StreamResponse = decode_response(url, data.join("\n").as_bytes())?;
                if !on_event(event) {
                    return Ok(());
                }
            }
        }
    }
}

/// The end of the first complete SSE event in `buf`: (end of its text, end with the blank
/// line).
fn find_event_end(buf: &[u8]) -> Option<(usize, usize)> {
    for i in 0..buf.len() {
        if buf[i..].starts_with(b"\n\n") {
            return Some((i, i + 2));
        }
        if buf[i..].starts_with(b"\r\n\r\n") {
            return Some((i, i + 4));
        }
    }
    None
}

fn http_error(url: &str, e: reqwest::Error) -> ClientError {
    let mut message = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        message.push_str(&format!(": {s}"));
        source = s.source();
    }
    ClientError::Http {
        url: url.to_string(),
        message,
    }
}

fn decode_response<T: DeserializeOwned>(url: &str, bytes: &[u8]) -> Result<T, ClientError> {
    let decode = |m: String| ClientError::Decode {
        url: url.to_string(),
        message: m,
    };
    let resp: JsonRpcResponse = serde_json::from_slice(bytes)
        .map_err(|e| decode(format!("not a JSON-RPC response: {e}")))?;
    if let Some(e) = resp.error {
        return Err(ClientError::Rpc {
            code: e.code,
            message: e.message,
        });
    }
    let result = resp
        .result
        .ok_or_else(|| decode("neither result nor error".into()))?;
    serde_json::from_value(result).map_err(|e| decode(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_events_split_at_blank_lines() {
        assert_eq!(find_event_end(b"data: a\n\ndata: b"), Some((7, 9)));
        assert_eq!(find_event_end(b"data: a\r\n\r\n"), Some((7, 11)));
        assert_eq!(find_event_end(b"data: a\n"), None);
    }

    #[test]
    fn errors_and_results_decode() {
        let e = decode_response::<Task>(
            "u",
            br#"{"jsonrpc":"2.0","id":1,"error":{"code":-32001,"message":"task not found: x"}}"#,
        )
        .unwrap_err();
        assert!(matches!(e, ClientError::Rpc { code: -32001, .. }), "{e}");
        let t: Task = decode_response(
            "u",
            br#"{"jsonrpc":"2.0","id":1,"result":{"id":"t","contextId":"c","status":{"state":"TASK_STATE_WORKING"}}}"#,
        )
        .unwrap();
        assert_eq!(t.status.state, TaskState::Working);
        assert_eq!(state_name(&t.status.state), "TASK_STATE_WORKING");
    }
}
