//! `ModelClient`: one model, called through genai with warden's retries and timeouts.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use futures_util::{Stream, StreamExt};
use genai::adapter::AdapterKind;
use genai::chat::{
    ChatMessage, ChatOptions, ChatRequest, ChatResponse, ChatStreamEvent, ContentPart,
    MessageContent, StopReason as GenaiStop, Tool, ToolResponse, Usage as GenaiUsage,
};
use genai::resolver::{AuthData, Endpoint};
use genai::{ModelIden, ServiceTarget};
use serde_json::Value;
use tokio::sync::mpsc;

use super::error::{ModelError, excerpt};
use super::retry::{jitter, retry_after};
use super::spec::{ModelConfig, Provider};
use super::types::{
    Message, ModelRequest, ModelResponse, StopReason, StreamEvent, ToolCall, Usage,
};

/// Calls one model. Cheap to clone; clones share the HTTP connection pool.
#[derive(Debug, Clone)]
pub struct ModelClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    config: ModelConfig,
    genai: genai::Client,
    target: ServiceTarget,
    /// The URL calls go to, for messages.
    url: String,
    /// The number of the next tool call that came without an id (see
    /// [`Inner::own_call_id`]).
    next_call: AtomicU64,
}

/// A failed attempt: the error, and the wait the server asked for.
struct Failure {
    error: ModelError,
    retry_after: Option<Duration>,
}

impl ModelClient {
    /// Builds the HTTP client (rustls on ring, the system's roots) and the genai target.
    pub fn new(config: ModelConfig) -> Result<Self, ModelError> {
        let mut roots = rustls::RootCertStore::empty();
        let _ = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| ModelError::Setup(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
        let mut http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .connect_timeout(Duration::from_secs(30));
        if !config.use_env_proxy {
            http = http.no_proxy();
        }
        let http = http
            .build()
            .map_err(|e| ModelError::Setup(error_chain(&e)))?;
        let genai = genai::Client::builder()
            .with_reqwest(http)
            .build()
            .map_err(|e| ModelError::Setup(e.to_string()))?;

        let provider = config.spec.provider;
        let base = &config.base_url;
        let (kind, endpoint, url) = match provider {
            Provider::Anthropic => (
                AdapterKind::Anthropic,
                format!("{base}/v1/"),
                format!("{base}/v1/messages"),
            ),
            Provider::OpenAi => (
                AdapterKind::OpenAIResp,
                format!("{base}/"),
                format!("{base}/responses"),
            ),
            Provider::OpenAiChat | Provider::OpenAiCompatible => (
                AdapterKind::OpenAI,
                format!("{base}/"),
                format!("{base}/chat/completions"),
            ),
            // Ollama's OpenAI-compatible endpoint: tools and SSE streaming like the rest.
            Provider::Ollama => (
                AdapterKind::OpenAI,
                format!("{base}/v1/"),
                format!("{base}/v1/chat/completions"),
            ),
            Provider::Gemini => (
                AdapterKind::Gemini,
                format!("{base}/"),
                format!("{base}/models/{}:generateContent", config.spec.model),
            ),
        };
        // Servers that need no key ignore a bearer token; genai's OpenAI adapters want one.
        let key = config
            .api_key
            .as_ref()
            .map_or("warden-no-key", |k| k.expose())
            .to_string();
        let target = ServiceTarget {
            endpoint: Endpoint::from_owned(endpoint),
            auth: AuthData::Key(key),
            model: ModelIden::new(kind, config.spec.model.clone()),
        };
        Ok(Self {
            inner: Arc::new(Inner {
                config,
                genai,
                target,
                url,
                // Random, so a resumed run's new client does not repeat an earlier one's ids.
                next_call: AtomicU64::new((jitter() * f64::from(u32::MAX)) as u64),
            }),
        })
    }

    pub fn config(&self) -> &ModelConfig {
        &self.inner.config
    }

    /// The URL model calls go to.
    pub fn url(&self) -> &str {
        &self.inner.url
    }

    /// One call, the whole answer at once, retried as the config says.
    pub async fn complete(&self, request: &ModelRequest) -> Result<ModelResponse, ModelError> {
        let inner = &self.inner;
        let chat = to_chat_request(request);
        let options = chat_options(request);
        let mut attempt = 1;
        loop {
            let call = inner
                .genai
                .exec_chat(inner.target.clone(), chat.clone(), Some(&options));
            let failure = match tokio::time::timeout(inner.config.timeout, call).await {
                Ok(Ok(response))
                    if response.stop_reason.is_none() && response.content.is_empty() =>
                {
                    inner.invalid("the answer holds no content and no stop reason".into())
                }
                Ok(Ok(response)) => {
                    let mut response = from_chat_response(response);
                    inner.own_call_ids(&mut response.tool_calls, &[]);
                    return Ok(response);
                }
                Ok(Err(e)) => inner.classify(&e),
                Err(_) => inner.timed_out(),
            };
            attempt = inner.retry_or_fail(attempt, failure).await?;
        }
    }

    /// One streamed call: `on_event` gets the text and tool-call deltas as they come, and
    /// the whole response is returned. An attempt that fails before any delta is retried;
    /// once a delta was delivered, a failure ends the call.
    pub async fn stream(
        &self,
        request: &ModelRequest,
        mut on_event: impl FnMut(StreamEvent) + Send,
    ) -> Result<ModelResponse, ModelError> {
        let inner = &self.inner;
        let chat = to_chat_request(request);
        let options = chat_options(request);
        let mut attempt = 1;
        loop {
            let mut delivered = false;
            let failure = match inner
                .stream_attempt(&chat, &options, &mut on_event, &mut delivered)
                .await
            {
                Ok(response) => return Ok(response),
                Err(failure) if delivered => {
                    let mut error = failure.error;
                    error.set_attempts(attempt);
                    return Err(error);
                }
                Err(failure) => failure,
            };
            attempt = inner.retry_or_fail(attempt, failure).await?;
        }
    }

    /// [`stream`](Self::stream) as a `Stream` of events: deltas, then `Done` with the whole
    /// response, or an error. Runs on a tokio task; dropping the stream cancels the call.
    pub fn stream_events(&self, request: ModelRequest) -> ModelStream {
        let (tx, rx) = mpsc::unbounded_channel();
        let client = self.clone();
        let task = tokio::spawn(async move {
            let deltas = tx.clone();
            let result = client
                .stream(&request, move |event| {
                    let _ = deltas.send(Ok(event));
                })
                .await;
            let _ = tx.send(result.map(|response| StreamEvent::Done { response }));
        });
        ModelStream { rx, task }
    }
}

impl Inner {
    async fn stream_attempt(
        &self,
        chat: &ChatRequest,
        options: &ChatOptions,
        on_event: &mut (impl FnMut(StreamEvent) + Send),
        delivered: &mut bool,
    ) -> Result<ModelResponse, Failure> {
        let timeout = self.config.timeout;
        let start = self
            .genai
            .exec_chat_stream(self.target.clone(), chat.clone(), Some(options));
        let mut stream = match tokio::time::timeout(timeout, start).await {
            Ok(Ok(response)) => response.stream,
            Ok(Err(e)) => return Err(self.classify(&e)),
            Err(_) => return Err(self.timed_out()),
        };
        // The ids given to calls that came without one, in order (see `own_call_id`).
        let mut own_ids = Vec::new();
        loop {
            let event = match tokio::time::timeout(timeout, stream.next()).await {
                Err(_) => return Err(self.timed_out()),
                Ok(None) => {
                    return Err(self.invalid("the stream ended before its final event".into()));
                }
                Ok(Some(Err(e))) => return Err(self.classify(&e)),
                Ok(Some(Ok(event))) => event,
            };
            match event {
                ChatStreamEvent::Chunk(chunk) => {
                    *delivered = true;
                    on_event(StreamEvent::Text {
                        text: chunk.content,
                    });
                }
                ChatStreamEvent::ToolCallChunk(chunk) => {
                    *delivered = true;
                    let call = chunk.tool_call;
                    // Such a call comes whole, in one chunk.
                    let id = match self.own_call_id(&call.call_id, &call.fn_name) {
                        Some(id) => {
                            own_ids.push(id.clone());
                            id
                        }
                        None => call.call_id,
                    };
                    on_event(StreamEvent::ToolCall {
                        id,
                        name: call.fn_name,
                        arguments_so_far: match call.fn_arguments {
                            Value::String(s) => s,
                            other => other.to_string(),
                        },
                    });
                }
                ChatStreamEvent::End(end) => {
                    // genai ends a stream when the connection closes, whatever it carried;
                    // every complete answer of these APIs has a stop reason.
                    if end.captured_stop_reason.is_none() {
                        return Err(self.invalid(
                            "the stream ended without a stop reason: it was cut short or \
                             its events are not in the API's format"
                                .into(),
                        ));
                    }
                    let content = end.captured_content.unwrap_or_default();
                    let mut response = build_response(
                        content,
                        end.captured_stop_reason,
                        end.captured_usage.unwrap_or_default(),
                    );
                    self.own_call_ids(&mut response.tool_calls, &own_ids);
                    return Ok(response);
                }
                ChatStreamEvent::Start
                | ChatStreamEvent::ReasoningChunk(_)
                | ChatStreamEvent::ThoughtSignatureChunk(_)
                | ChatStreamEvent::Heartbeat => {}
            }
        }
    }

    /// After failed attempt `attempt`: waits and returns the next attempt's number, or
    /// returns the error when it is not retryable or the attempts are used up.
    async fn retry_or_fail(&self, attempt: u32, failure: Failure) -> Result<u32, ModelError> {
        let Failure {
            mut error,
            retry_after,
        } = failure;
        error.set_attempts(attempt);
        let policy = &self.config.retry;
        if !error.is_retryable() || attempt >= policy.max_attempts.max(1) {
            return Err(error);
        }
        let delay = policy.delay(attempt, retry_after, jitter());
        tracing::warn!(
            provider = %self.config.spec.provider,
            model = %self.config.spec.model,
            attempt,
            delay_ms = delay.as_millis() as u64,
            "model call failed, retrying: {error}"
        );
        tokio::time::sleep(delay).await;
        Ok(attempt + 1)
    }

    /// A call id of our own for a call that came without one. Gemini's calls carry no id
    /// (some models' do); genai then makes one up, `call#{name}#{n}`, with `n` counting
    /// from 0 in each answer, and in a stream in each chunk: the same ids in every turn, and
    /// in one streamed answer whose calls come in separate chunks. The agent keys events
    /// and approvals by call id, so such a call gets a number unique to this client, in the
    /// same form: genai still sends its result back without an id, under the tool's name,
    /// which is how Gemini matches it. `None` for an id the provider gave.
    fn own_call_id(&self, id: &str, name: &str) -> Option<String> {
        self.made_up(id).then(|| {
            let n = self.next_call.fetch_add(1, Ordering::Relaxed);
            format!("call#{name}#{n}")
        })
    }

    /// Whether genai made up this call id (see [`own_call_id`](Self::own_call_id)).
    fn made_up(&self, id: &str) -> bool {
        self.config.spec.provider == Provider::Gemini
            && id
                .strip_prefix("call#")
                .and_then(|rest| rest.rsplit_once('#'))
                .is_some_and(|(name, n)| {
                    !name.is_empty() && !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit())
                })
    }

    /// Gives the calls that came without an id ours: the ones already given to them while
    /// streaming (`streamed`, in order), else new ones.
    fn own_call_ids(&self, calls: &mut [ToolCall], streamed: &[String]) {
        let mut streamed = streamed.iter();
        for call in calls.iter_mut().filter(|c| self.made_up(&c.id)) {
            call.id = match streamed.next() {
                Some(id) => id.clone(),
                None => self.own_call_id(&call.id, &call.name).unwrap_or_default(),
            };
        }
    }

    fn secret(&self) -> Option<&str> {
        self.config.api_key.as_ref().map(|k| k.expose())
    }

    fn timed_out(&self) -> Failure {
        Failure {
            error: ModelError::Timeout {
                provider: self.config.spec.provider,
                model: self.config.spec.model.clone(),
                url: self.url.clone(),
                timeout: self.config.timeout,
                attempts: 1,
            },
            retry_after: None,
        }
    }

    fn invalid(&self, detail: String) -> Failure {
        Failure {
            error: ModelError::InvalidResponse {
                provider: self.config.spec.provider,
                model: self.config.spec.model.clone(),
                url: self.url.clone(),
                detail: excerpt(&detail, self.secret()),
            },
            retry_after: None,
        }
    }

    fn status(&self, status: u16, body: &str, headers: &reqwest::header::HeaderMap) -> Failure {
        Failure {
            error: ModelError::Status {
                provider: self.config.spec.provider,
                model: self.config.spec.model.clone(),
                url: self.url.clone(),
                status,
                body: excerpt(body, self.secret()),
                attempts: 1,
            },
            retry_after: retry_after(headers).or_else(|| google_retry_delay(body)),
        }
    }

    fn transport(&self, e: &reqwest::Error) -> Failure {
        if e.is_timeout() {
            return self.timed_out();
        }
        let message = excerpt(&error_chain(e), self.secret());
        let (provider, model) = (self.config.spec.provider, self.config.spec.model.clone());
        let error = if e.is_builder() {
            ModelError::Request {
                provider,
                model,
                message,
            }
        } else {
            ModelError::Connect {
                provider,
                model,
                url: self.url.clone(),
                message,
                attempts: 1,
            }
        };
        Failure {
            error,
            retry_after: None,
        }
    }

    /// Turns a genai error into ours, keeping the status, `retry-after` and a body excerpt.
    fn classify(&self, e: &genai::Error) -> Failure {
        use genai::webc::Error as Web;
        match e {
            genai::Error::WebModelCall { webc_error, .. }
            | genai::Error::WebAdapterCall { webc_error, .. } => match webc_error {
                Web::ResponseFailedStatus {
                    status,
                    body,
                    headers,
                } => self.status(status.as_u16(), body, headers),
                Web::ResponseFailedNotJson { content_type, body } => {
                    self.invalid(format!("content type `{content_type}`, body: {body}"))
                }
                Web::ResponseFailedInvalidJson { body, cause } => {
                    self.invalid(format!("not JSON ({cause}): {body}"))
                }
                Web::Reqwest(e) => self.transport(e),
                other => self.invalid(other.to_string()),
            },
            genai::Error::HttpError {
                status,
                body,
                headers,
                ..
            } => self.status(status.as_u16(), body, headers),
            genai::Error::WebStream { error, cause, .. } => {
                if let Some(inner) = error.downcast_ref::<genai::Error>() {
                    self.classify(inner)
                } else if let Some(inner) = error.downcast_ref::<reqwest::Error>() {
                    self.transport(inner)
                } else {
                    self.invalid(cause.clone())
                }
            }
            genai::Error::StreamParse { serde_error, .. } => {
                self.invalid(format!("a stream event is not valid JSON: {serde_error}"))
            }
            genai::Error::ChatResponseGeneration {
                response_body,
                cause,
                ..
            } => self.invalid(format!("{cause}; body: {response_body}")),
            genai::Error::ChatResponse { body, .. } => Failure {
                error: ModelError::StreamError {
                    provider: self.config.spec.provider,
                    model: self.config.spec.model.clone(),
                    body: excerpt(&body.to_string(), self.secret()),
                },
                retry_after: None,
            },
            genai::Error::NoChatResponse { .. }
            | genai::Error::InvalidJsonResponseElement { .. }
            | genai::Error::JsonValueExt(_)
            | genai::Error::SerdeJson(_) => self.invalid(e.to_string()),
            other => Failure {
                error: ModelError::Request {
                    provider: self.config.spec.provider,
                    model: self.config.spec.model.clone(),
                    message: excerpt(&other.to_string(), self.secret()),
                },
                retry_after: None,
            },
        }
    }
}

/// A streamed call as a `Stream` (see [`ModelClient::stream_events`]).
#[derive(Debug)]
pub struct ModelStream {
    rx: mpsc::UnboundedReceiver<Result<StreamEvent, ModelError>>,
    task: tokio::task::JoinHandle<()>,
}

impl Stream for ModelStream {
    type Item = Result<StreamEvent, ModelError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        self.rx.poll_recv(cx)
    }
}

impl Drop for ModelStream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The wait a Google error asks for: a `google.rpc.RetryInfo` in `error.details` with
/// `retryDelay` in the JSON form of a protobuf Duration (`"22s"`, `"1.5s"`). Gemini sends it
/// there on 429 (`RESOURCE_EXHAUSTED`), with no `retry-after` header.
fn google_retry_delay(body: &str) -> Option<Duration> {
    let body: Value = serde_json::from_str(body).ok()?;
    // Google's OpenAI-compatible endpoint wraps the error in an array.
    let error = body.get(0).unwrap_or(&body).get("error")?;
    error
        .get("details")?
        .as_array()?
        .iter()
        .filter(|d| {
            d["@type"]
                .as_str()
                .is_some_and(|t| t.ends_with("/google.rpc.RetryInfo"))
        })
        .find_map(|d| {
            d["retryDelay"]
                .as_str()?
                .strip_suffix('s')?
                .parse::<f64>()
                .ok()
        })
        .filter(|n| n.is_finite() && *n >= 0.0)
        .map(Duration::from_secs_f64)
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut text = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let part = s.to_string();
        if !text.contains(&part) {
            text.push_str(": ");
            text.push_str(&part);
        }
        source = s.source();
    }
    text
}

fn chat_options(request: &ModelRequest) -> ChatOptions {
    ChatOptions::default()
        .with_max_tokens(request.max_tokens)
        .with_capture_usage(true)
        .with_capture_content(true)
        .with_capture_tool_calls(true)
}

fn to_chat_request(request: &ModelRequest) -> ChatRequest {
    let mut messages = Vec::with_capacity(request.messages.len());
    for message in &request.messages {
        messages.push(match message {
            Message::User { text } => ChatMessage::user(text.as_str()),
            Message::Assistant { text, tool_calls } if tool_calls.is_empty() => {
                ChatMessage::assistant(text.as_str())
            }
            Message::Assistant { text, tool_calls } => {
                let mut parts = Vec::with_capacity(tool_calls.len() + 1);
                if !text.is_empty() {
                    parts.push(ContentPart::Text(text.clone()));
                }
                for call in tool_calls {
                    parts.push(ContentPart::ToolCall(genai::chat::ToolCall {
                        call_id: call.id.clone(),
                        fn_name: call.name.clone(),
                        fn_arguments: call.arguments.clone(),
                        thought_signatures: None,
                    }));
                }
                ChatMessage::assistant(MessageContent::from_parts(parts))
            }
            Message::ToolResults { results } => ChatMessage::tool(
                results
                    .iter()
                    .map(|r| ToolResponse::new(&r.call_id, &r.content).with_fn_name(&r.name))
                    .collect::<Vec<_>>(),
            ),
        });
    }
    let mut chat = ChatRequest::new(messages);
    if let Some(system) = &request.system {
        chat = chat.with_system(system.as_str());
    }
    if !request.tools.is_empty() {
        chat = chat.with_tools(request.tools.iter().map(|t| {
            Tool::new(t.name.as_str())
                .with_description(t.description.as_str())
                .with_schema(t.input_schema.clone())
        }));
    }
    chat
}

fn from_chat_response(response: ChatResponse) -> ModelResponse {
    build_response(response.content, response.stop_reason, response.usage)
}

fn build_response(
    content: MessageContent,
    stop: Option<GenaiStop>,
    usage: GenaiUsage,
) -> ModelResponse {
    let text = content.texts().concat();
    let tool_calls: Vec<ToolCall> = content
        .into_tool_calls()
        .into_iter()
        .map(|call| ToolCall {
            id: call.call_id,
            name: call.fn_name,
            arguments: match call.fn_arguments {
                // Some adapters keep unparsed arguments as a string; parse when it is JSON.
                Value::String(s) => serde_json::from_str(&s).unwrap_or(Value::String(s)),
                other => other,
            },
        })
        .collect();
    let stop_reason = match stop {
        Some(GenaiStop::Completed(_)) => StopReason::EndTurn,
        Some(GenaiStop::ToolCall(_)) => StopReason::ToolUse,
        Some(GenaiStop::MaxTokens(_)) => StopReason::MaxTokens,
        Some(GenaiStop::StopSequence(_)) => StopReason::StopSequence,
        Some(GenaiStop::ContentFilter(_)) => StopReason::ContentFilter,
        Some(GenaiStop::Other(raw)) => StopReason::Other(raw),
        // The Responses API says `completed` even when it calls tools.
        None if !tool_calls.is_empty() => StopReason::ToolUse,
        None => StopReason::Other("unknown".into()),
    };
    let stop_reason = if stop_reason == StopReason::EndTurn && !tool_calls.is_empty() {
        StopReason::ToolUse
    } else {
        stop_reason
    };
    let details = usage.prompt_tokens_details.as_ref();
    let count = |n: Option<i32>| n.map(|n| n.max(0) as u64);
    ModelResponse {
        text,
        tool_calls,
        stop_reason,
        usage: Usage {
            input_tokens: count(usage.prompt_tokens).unwrap_or(0),
            output_tokens: count(usage.completion_tokens).unwrap_or(0),
            cache_read_tokens: count(details.and_then(|d| d.cached_tokens)),
            cache_write_tokens: count(details.and_then(|d| d.cache_creation_tokens)),
        },
    }
}
