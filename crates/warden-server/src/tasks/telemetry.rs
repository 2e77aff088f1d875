//! OpenTelemetry traces of a task, after the GenAI semantic conventions, exported over
//! OTLP/HTTP with protobuf. Off unless an endpoint is configured; when off, every call is a
//! no-op that allocates nothing.
//!
//! One trace per task, from the submission to the push:
//!
//! ```text
//! invoke_agent {agent}          INTERNAL  created_at .. finish; warden.task.*, usage totals
//! ├── queue                     INTERNAL  created_at .. started_at (first attempt only)
//! ├── sandbox, clone, branch, agent, commit, push
//! │                             INTERNAL  one per TaskTrace::step
//! ├── chat {model}              CLIENT    one per model turn (AgentEvent::Assistant)
//! ├── execute_tool {tool}       INTERNAL  ToolCall .. ToolResult
//! │   └── invoke_agent {name}   INTERNAL  SubagentStarted .. SubagentFinished (the Task tool)
//! │       └── execute_tool ...  INTERNAL  calls the sub-agent made (ToolCall.subagent)
//! └── ...
//! ```
//!
//! The agent's events carry no timestamps, so spans take the time an event arrives. A model
//! call reports only its end (`Assistant`), so its `chat` span is taken to start when the
//! previous event that was not streamed text arrived: the run's start, what it loaded, the
//! previous turn or the last tool result. That is when the loop was free to call the model
//! again; the span may therefore include a little of the loop's own work. Events carry no
//! served model name either: `gen_ai.response.model` repeats the requested model. A sub-agent's
//! model turns cannot be told from its parent's, so every `chat` span sits under the root.
//!
//! `error.type` values: the task's status (`failed`, `timed_out`, `canceled`) on the root;
//! `_OTHER` on a failed step; `tool_error` on a tool call that returned an error and `denied`
//! on one the permission rules or a person refused; a sub-agent's run status (`failed`,
//! `max_turns`, ...) on its span; `incomplete` on a tool call or sub-agent still open when the
//! run or the task ended.
//!
//! The gen_ai.* names are our own constants ([`attr`]): the conventions are still in
//! development and change between releases. Tool inputs and outputs and prompts are never
//! recorded.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use opentelemetry::trace::{
    Span as _, SpanKind, Status, TraceContextExt as _, Tracer as _, TracerProvider as _,
};
use opentelemetry::{Array, Context, InstrumentationScope, KeyValue, StringValue, Value};
use opentelemetry_http::{Bytes, HttpError, Request, Response};
use opentelemetry_otlp::{Protocol, WithExportConfig as _, WithHttpConfig as _};
use opentelemetry_sdk::Resource;
use opentelemetry_sdk::trace::{SdkTracer, SdkTracerProvider, Span};
use warden_agent::model::Usage;
use warden_agent::run::{AgentEvent, RunStatus};

use super::model::{AgentKind, Task, TaskStatus, Timestamp};

/// Attribute names and values: the GenAI conventions' and warden's own.
pub mod attr {
    pub const GEN_AI_OPERATION_NAME: &str = "gen_ai.operation.name";
    pub const GEN_AI_PROVIDER_NAME: &str = "gen_ai.provider.name";
    pub const GEN_AI_AGENT_NAME: &str = "gen_ai.agent.name";
    pub const GEN_AI_CONVERSATION_ID: &str = "gen_ai.conversation.id";
    pub const GEN_AI_REQUEST_MODEL: &str = "gen_ai.request.model";
    pub const GEN_AI_RESPONSE_MODEL: &str = "gen_ai.response.model";
    pub const GEN_AI_RESPONSE_FINISH_REASONS: &str = "gen_ai.response.finish_reasons";
    pub const GEN_AI_USAGE_INPUT_TOKENS: &str = "gen_ai.usage.input_tokens";
    pub const GEN_AI_USAGE_OUTPUT_TOKENS: &str = "gen_ai.usage.output_tokens";
    pub const GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS: &str = "gen_ai.usage.cache_read.input_tokens";
    pub const GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS: &str =
        "gen_ai.usage.cache_creation.input_tokens";
    pub const GEN_AI_TOOL_NAME: &str = "gen_ai.tool.name";
    pub const GEN_AI_TOOL_CALL_ID: &str = "gen_ai.tool.call.id";
    pub const GEN_AI_TOOL_TYPE: &str = "gen_ai.tool.type";
    pub const ERROR_TYPE: &str = "error.type";

    /// `gen_ai.operation.name` values.
    pub const OP_INVOKE_AGENT: &str = "invoke_agent";
    pub const OP_CHAT: &str = "chat";
    pub const OP_EXECUTE_TOOL: &str = "execute_tool";
    /// `error.type` when nothing more specific is known.
    pub const ERROR_OTHER: &str = "_OTHER";

    pub const WARDEN_TASK_ID: &str = "warden.task.id";
    pub const WARDEN_TASK_REPO: &str = "warden.task.repo";
    pub const WARDEN_TASK_BRANCH: &str = "warden.task.branch";
    pub const WARDEN_TASK_BASE_BRANCH: &str = "warden.task.base_branch";
    pub const WARDEN_TASK_TEMPLATE: &str = "warden.task.template";
    pub const WARDEN_TASK_ATTEMPT: &str = "warden.task.attempt";
    pub const WARDEN_TASK_STATUS: &str = "warden.task.status";
    pub const WARDEN_TASK_COMMIT: &str = "warden.task.commit";
    pub const WARDEN_TASK_COST_USD: &str = "warden.task.cost_usd";
    pub const WARDEN_TASK_SANDBOX: &str = "warden.task.sandbox";
    pub const WARDEN_STEP: &str = "warden.step";
    pub const WARDEN_AGENT_TURN: &str = "warden.agent.turn";
    pub const WARDEN_AGENT_TOOL_CALLS: &str = "warden.agent.tool_calls";
    pub const WARDEN_AGENT_STATUS: &str = "warden.agent.status";
    pub const WARDEN_AGENT_TURNS: &str = "warden.agent.turns";
    pub const WARDEN_TOOL_DECISION: &str = "warden.tool.decision";
    pub const WARDEN_SUBAGENT: &str = "warden.subagent";
}

/// The service name when neither `OTEL_SERVICE_NAME` nor `service.name` in
/// `OTEL_RESOURCE_ATTRIBUTES` says otherwise.
pub const DEFAULT_SERVICE_NAME: &str = "warden";
/// How long one export may take, unless `OTEL_EXPORTER_OTLP_TIMEOUT` says otherwise.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(10);
/// The longest collector response read (they are a few bytes).
const MAX_RESPONSE_BYTES: usize = 64 * 1024;
/// The longest status description written (a task's `reason` can be long).
const MAX_DESCRIPTION: usize = 1024;

/// What went wrong configuring or starting the exporter.
#[derive(Debug, thiserror::Error)]
pub enum TelemetryError {
    /// A setting (an environment variable or a field) is not usable.
    #[error("{setting}: {message}")]
    Config { setting: String, message: String },
    /// The exporter or its HTTP client could not be built.
    #[error("cannot start the OTLP trace exporter: {0}")]
    Start(String),
}

fn config_error(setting: &str, message: impl Into<String>) -> TelemetryError {
    TelemetryError::Config {
        setting: setting.into(),
        message: message.into(),
    }
}

/// Where and how traces are exported. Off (`is_enabled() == false`) unless an endpoint is set.
#[derive(Clone, PartialEq, Eq)]
pub struct TelemetryConfig {
    /// The OTLP/HTTP base URL, such as `http://collector:4318`; `/v1/traces` is appended.
    pub endpoint: Option<String>,
    /// The whole URL traces are posted to, used as given; wins over `endpoint`.
    pub traces_endpoint: Option<String>,
    /// `service.name` of the exported resource.
    pub service_name: String,
    /// Headers sent with every export (an API key, a tenant). Never logged.
    pub headers: Vec<(String, String)>,
    /// How long one export may take.
    pub timeout: Duration,
}

impl Default for TelemetryConfig {
    fn default() -> TelemetryConfig {
        TelemetryConfig {
            endpoint: None,
            traces_endpoint: None,
            service_name: DEFAULT_SERVICE_NAME.into(),
            headers: Vec::new(),
            timeout: DEFAULT_TIMEOUT,
        }
    }
}

impl fmt::Debug for TelemetryConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let headers: Vec<String> = self
            .headers
            .iter()
            .map(|(k, _)| format!("{k}: <redacted>"))
            .collect();
        f.debug_struct("TelemetryConfig")
            .field("endpoint", &self.endpoint)
            .field("traces_endpoint", &self.traces_endpoint)
            .field("service_name", &self.service_name)
            .field("headers", &headers)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl TelemetryConfig {
    /// Export to the OTLP/HTTP collector at `endpoint` (a base URL such as
    /// `http://collector:4318`).
    pub fn otlp_http(endpoint: impl Into<String>) -> TelemetryConfig {
        TelemetryConfig {
            endpoint: Some(endpoint.into()),
            ..TelemetryConfig::default()
        }
    }

    /// The standard `OTEL_*` variables of this process; see [`TelemetryConfig::from_lookup`].
    pub fn from_env() -> Result<TelemetryConfig, TelemetryError> {
        TelemetryConfig::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads the standard variables through `var` (an empty value counts as unset):
    ///
    /// * `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT` (the whole URL) or `OTEL_EXPORTER_OTLP_ENDPOINT`
    ///   (a base, `/v1/traces` appended). Neither: off.
    /// * `OTEL_SDK_DISABLED=true` or `OTEL_TRACES_EXPORTER=none`: off.
    /// * `OTEL_SERVICE_NAME`, else `service.name` in `OTEL_RESOURCE_ATTRIBUTES`.
    /// * `OTEL_EXPORTER_OTLP_HEADERS` and `OTEL_EXPORTER_OTLP_TRACES_HEADERS` (`k=v,k2=v2`,
    ///   values percent-decoded; the traces variable wins for a name in both).
    /// * `OTEL_EXPORTER_OTLP_TRACES_TIMEOUT` or `OTEL_EXPORTER_OTLP_TIMEOUT`, in milliseconds.
    /// * `OTEL_EXPORTER_OTLP_TRACES_PROTOCOL` or `OTEL_EXPORTER_OTLP_PROTOCOL`: only
    ///   `http/protobuf` is spoken; `grpc` or `http/json` is an error rather than a silent
    ///   mismatch with the collector's port.
    pub fn from_lookup(
        var: impl Fn(&str) -> Option<String>,
    ) -> Result<TelemetryConfig, TelemetryError> {
        let get = |name: &str| var(name).filter(|v| !v.trim().is_empty());
        let first = |a: &str, b: &str| {
            get(a)
                .map(|v| (a.to_string(), v))
                .or_else(|| get(b).map(|v| (b.to_string(), v)))
        };
        let mut cfg = TelemetryConfig::default();

        if let Some(name) = get("OTEL_SERVICE_NAME") {
            cfg.service_name = name.trim().to_string();
        } else if let Some(attrs) = get("OTEL_RESOURCE_ATTRIBUTES")
            && let Some(name) = parse_key_values(&attrs)
                .ok()
                .and_then(|kv| kv.into_iter().find(|(k, _)| k == "service.name"))
                .map(|(_, v)| v)
                .filter(|v| !v.is_empty())
        {
            cfg.service_name = name;
        }

        if let Some((setting, value)) = first(
            "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
            "OTEL_EXPORTER_OTLP_PROTOCOL",
        ) && value.trim() != "http/protobuf"
        {
            return Err(config_error(
                &setting,
                format!(
                    "`{}` is not supported; warden exports traces as `http/protobuf` (OTLP/HTTP, the collector's port 4318)",
                    value.trim()
                ),
            ));
        }

        for (setting, default_header) in [
            ("OTEL_EXPORTER_OTLP_HEADERS", true),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", false),
        ] {
            let Some(value) = get(setting) else { continue };
            let parsed = parse_key_values(&value).map_err(|m| config_error(setting, m))?;
            for (k, v) in parsed {
                check_header(&k, &v).map_err(|m| config_error(setting, m))?;
                let k = k.to_ascii_lowercase();
                cfg.headers.retain(|(old, _)| *old != k || default_header);
                cfg.headers.push((k, v));
            }
        }

        if let Some((setting, value)) = first(
            "OTEL_EXPORTER_OTLP_TRACES_TIMEOUT",
            "OTEL_EXPORTER_OTLP_TIMEOUT",
        ) {
            let ms: u64 = value.trim().parse().map_err(|_| {
                config_error(
                    &setting,
                    format!("`{value}` is not a number of milliseconds, such as 10000"),
                )
            })?;
            if ms == 0 {
                return Err(config_error(&setting, "must be more than 0 milliseconds"));
            }
            cfg.timeout = Duration::from_millis(ms);
        }

        if get("OTEL_SDK_DISABLED").is_some_and(|v| v.trim().eq_ignore_ascii_case("true")) {
            return Ok(cfg);
        }
        if let Some(exporters) = get("OTEL_TRACES_EXPORTER") {
            let mut off = false;
            for e in exporters
                .split(',')
                .map(str::trim)
                .filter(|e| !e.is_empty())
            {
                match e {
                    "none" => off = true,
                    "otlp" => {}
                    other => {
                        return Err(config_error(
                            "OTEL_TRACES_EXPORTER",
                            format!("`{other}` is not supported; use `otlp` (OTLP/HTTP) or `none`"),
                        ));
                    }
                }
            }
            if off {
                return Ok(cfg);
            }
        }
        for (setting, slot) in [
            (
                "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
                &mut cfg.traces_endpoint,
            ),
            ("OTEL_EXPORTER_OTLP_ENDPOINT", &mut cfg.endpoint),
        ] {
            if let Some(url) = get(setting) {
                let url = url.trim().to_string();
                check_url(&url).map_err(|m| config_error(setting, m))?;
                *slot = Some(url);
            }
        }
        Ok(cfg)
    }

    /// The URL spans are posted to, when export is on.
    pub fn traces_url(&self) -> Option<String> {
        if let Some(url) = &self.traces_endpoint {
            return Some(url.clone());
        }
        let base = self.endpoint.as_deref()?;
        Some(format!("{}/v1/traces", base.trim_end_matches('/')))
    }

    pub fn is_enabled(&self) -> bool {
        self.traces_url().is_some()
    }
}

/// `http://` or `https://`, a host, no credentials.
fn check_url(url: &str) -> Result<(), String> {
    let hint = "give an http:// or https:// URL such as http://collector:4318";
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(format!("`{url}` is not a URL; {hint}"));
    };
    if scheme != "http" && scheme != "https" {
        return Err(format!(
            "scheme `{scheme}` is not supported (OTLP/HTTP only); {hint}"
        ));
    }
    let authority = rest.split(['/', '?', '#']).next().unwrap_or("");
    if authority.is_empty() {
        return Err(format!("`{url}` has no host; {hint}"));
    }
    if authority.contains('@') {
        return Err("holds credentials; send them as a header (OTEL_EXPORTER_OTLP_HEADERS)".into());
    }
    if url.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err("contains whitespace or control characters".into());
    }
    Ok(())
}

fn check_header(name: &str, value: &str) -> Result<(), String> {
    if reqwest::header::HeaderName::from_bytes(name.as_bytes()).is_err() {
        return Err(format!("`{name}` is not an HTTP header name"));
    }
    if reqwest::header::HeaderValue::from_str(value).is_err() {
        return Err(format!(
            "the value of header `{name}` holds characters a header cannot carry"
        ));
    }
    Ok(())
}

/// `k=v,k2=v2` as the OTEL_* list variables write them: entries trimmed, empty entries
/// skipped, values percent-decoded.
fn parse_key_values(s: &str) -> Result<Vec<(String, String)>, String> {
    let mut out = Vec::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let Some((k, v)) = entry.split_once('=') else {
            return Err(format!(
                "`{entry}` is not `name=value`; write entries as name=value,name2=value2"
            ));
        };
        let k = k.trim();
        if k.is_empty() {
            return Err(format!("`{entry}` has no name before `=`"));
        }
        out.push((k.to_string(), percent_decode(v.trim())?));
    }
    Ok(out)
}

fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| "a `%` is not followed by two hex digits".to_string())?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a percent-encoded value is not UTF-8".to_string())
}

/// The exporter, or nothing. Cheap to clone; every clone shares one exporter.
#[derive(Clone, Debug)]
pub struct Telemetry {
    inner: Option<Arc<Exporting>>,
}

#[derive(Debug)]
struct Exporting {
    provider: SdkTracerProvider,
    tracer: SdkTracer,
}

impl Telemetry {
    /// No export: every trace is a no-op.
    pub fn disabled() -> Telemetry {
        Telemetry { inner: None }
    }

    /// Starts exporting as `cfg` says, or returns [`Telemetry::disabled`] when it names no
    /// endpoint. Spans are batched and posted from a thread of the exporter's own (with its
    /// own small runtime), so this needs no runtime and exports never wait on the server's.
    pub fn start(cfg: &TelemetryConfig) -> Result<Telemetry, TelemetryError> {
        let Some(url) = cfg.traces_url() else {
            return Ok(Telemetry::disabled());
        };
        check_url(&url).map_err(|m| config_error("endpoint", m))?;
        for (k, v) in &cfg.headers {
            check_header(k, v).map_err(|m| config_error("headers", m))?;
        }
        let client = ExportClient::new(&url, cfg.timeout)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(url.clone())
            .with_protocol(Protocol::HttpBinary)
            .with_timeout(cfg.timeout)
            .with_headers(cfg.headers.iter().cloned().collect::<HashMap<_, _>>())
            .build()
            .map_err(|e| TelemetryError::Start(e.to_string()))?;
        let resource = Resource::builder()
            .with_service_name(cfg.service_name.clone())
            .with_attribute(KeyValue::new("service.version", env!("CARGO_PKG_VERSION")))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_batch_exporter(exporter)
            .with_resource(resource)
            .build();
        let tracer = provider.tracer_with_scope(
            InstrumentationScope::builder("warden-server")
                .with_version(env!("CARGO_PKG_VERSION"))
                .build(),
        );
        tracing::info!(endpoint = %url, service = %cfg.service_name, "exporting task traces over OTLP/HTTP");
        Ok(Telemetry {
            inner: Some(Arc::new(Exporting { provider, tracer })),
        })
    }

    pub fn is_enabled(&self) -> bool {
        self.inner.is_some()
    }

    /// The trace of one task: its root span starts at `task.created_at`.
    pub fn task_trace(&self, task: &Task) -> TaskTrace {
        let Some(inner) = &self.inner else {
            return TaskTrace { active: None };
        };
        TaskTrace {
            active: Some(Box::new(ActiveTrace::start(inner.tracer.clone(), task))),
        }
    }

    /// Exports every span ended so far.
    pub async fn flush(&self) {
        let Some(inner) = &self.inner else { return };
        let provider = inner.provider.clone();
        if let Some(Err(e)) = off_thread(move || provider.force_flush()).await {
            tracing::warn!(error = %e, "flushing task traces failed");
        }
    }

    /// Exports what is left and stops the exporter; spans ended afterwards are dropped. Call
    /// it before the process exits: the batch is otherwise lost.
    pub async fn shutdown(&self) {
        let Some(inner) = &self.inner else { return };
        let provider = inner.provider.clone();
        match off_thread(move || provider.shutdown()).await {
            Some(Ok(())) | Some(Err(opentelemetry_sdk::error::OTelSdkError::AlreadyShutdown)) => {}
            Some(Err(e)) => tracing::warn!(error = %e, "exporting the last task traces failed"),
            None => tracing::warn!("could not stop the trace exporter"),
        }
    }
}

/// Runs a blocking SDK call (it waits for the export thread) on a thread of its own, so no
/// runtime thread is held while the last batch is posted.
async fn off_thread<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> Option<R> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("warden-otlp-stop".into())
        .spawn(move || {
            let _ = tx.send(f());
        })
        .ok()?;
    rx.await.ok()
}

/// The exporter's HTTP client: reqwest (rustls on ring, as the rest of the workspace) driven
/// by a current-thread runtime on a thread of its own. The SDK's batch processor calls it from
/// its own thread with a plain executor; each post is spawned onto that runtime.
#[derive(Debug)]
struct ExportClient {
    http: reqwest::Client,
    runtime: Arc<ExportRuntime>,
}

/// Stops its thread (and the runtime) when the last client holding it is dropped.
#[derive(Debug)]
struct ExportRuntime {
    handle: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl ExportClient {
    fn new(url: &str, timeout: Duration) -> Result<ExportClient, TelemetryError> {
        let mut roots = rustls::RootCertStore::empty();
        if url.starts_with("https://") {
            let _ = roots.add_parsable_certificates(rustls_native_certs::load_native_certs().certs);
        }
        let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .map_err(|e| TelemetryError::Start(format!("TLS: {e}")))?
        .with_root_certificates(roots)
        .with_no_client_auth();
        tls.alpn_protocols = vec![b"http/1.1".to_vec()];
        // The collector is reached directly: proxy variables of the server's environment are
        // for other traffic.
        let http = reqwest::Client::builder()
            .tls_backend_preconfigured(tls)
            .no_proxy()
            .connect_timeout(timeout)
            .timeout(timeout)
            .build()
            .map_err(|e| TelemetryError::Start(format!("HTTP client: {e}")))?;

        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| TelemetryError::Start(format!("exporter runtime: {e}")))?;
        let handle = runtime.handle().clone();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        std::thread::Builder::new()
            .name("warden-otlp".into())
            .spawn(move || {
                runtime.block_on(async {
                    let _ = stopped.await;
                });
            })
            .map_err(|e| TelemetryError::Start(format!("exporter thread: {e}")))?;
        Ok(ExportClient {
            http,
            runtime: Arc::new(ExportRuntime {
                handle,
                _stop: stop,
            }),
        })
    }
}

#[async_trait::async_trait]
impl opentelemetry_http::HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let request = reqwest::Request::try_from(request)?;
        let http = self.http.clone();
        self.runtime
            .handle
            .spawn(async move { post(&http, request).await })
            .await?
    }
}

async fn post(
    http: &reqwest::Client,
    request: reqwest::Request,
) -> Result<Response<Bytes>, HttpError> {
    let mut response = http.execute(request).await?;
    let status = response.status();
    let headers = std::mem::take(response.headers_mut());
    let mut body = Vec::new();
    while let Some(chunk) = response.chunk().await? {
        if body.len() + chunk.len() > MAX_RESPONSE_BYTES {
            return Err(Box::new(opentelemetry_http::ResponseBodyTooLarge::new()));
        }
        body.extend_from_slice(&chunk);
    }
    let mut out = Response::builder().status(status).body(Bytes::from(body))?;
    *out.headers_mut() = headers;
    Ok(out)
}

/// The provider and model of a model string, as the GenAI conventions name them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModelIdent {
    /// `gen_ai.provider.name`: `anthropic`, `openai`, `gcp.gemini`, `ollama`.
    pub provider: Option<&'static str>,
    /// `gen_ai.request.model`: the name without warden's provider prefix.
    pub model: Option<String>,
}

impl ModelIdent {
    /// Reads `provider/model` as `warden agent --model` takes it; an external agent's bare
    /// model name (`claude-sonnet-4-5`, `gpt-5`, `sonnet`) is attributed by its name, else by
    /// the agent (Claude Code: anthropic, Codex: openai). `default` or empty: no model.
    pub fn parse(model: &str, agent: AgentKind) -> ModelIdent {
        let model = model.trim();
        let (provider, name) = match model.split_once('/') {
            Some((prefix, rest)) => match provider_of_prefix(prefix) {
                Some(p) => {
                    // openai-compatible/<model>@<base URL>: the URL is not part of the name.
                    let rest = match rest.find("@http://").or_else(|| rest.find("@https://")) {
                        Some(i) => &rest[..i],
                        None => rest,
                    };
                    (Some(p), rest)
                }
                None => (None, model),
            },
            None => (None, model),
        };
        let name = (!name.is_empty() && name != "default").then(|| name.to_string());
        let provider = provider
            .or_else(|| name.as_deref().and_then(provider_of_name))
            .or(match agent {
                AgentKind::ClaudeCode => Some("anthropic"),
                AgentKind::Codex => Some("openai"),
                AgentKind::Warden => None,
            });
        ModelIdent {
            provider,
            model: name,
        }
    }
}

/// warden's provider prefixes (`warden_agent::model::Provider`) as `gen_ai.provider.name`.
fn provider_of_prefix(prefix: &str) -> Option<&'static str> {
    Some(match prefix {
        "anthropic" => "anthropic",
        // OpenAI-compatible servers are reached through OpenAI's API: the conventions name
        // the client's provider when the server's is unknown.
        "openai" | "openai-chat" | "openai-compatible" => "openai",
        "gemini" => "gcp.gemini",
        "ollama" => "ollama",
        _ => return None,
    })
}

fn provider_of_name(name: &str) -> Option<&'static str> {
    let n = name.to_ascii_lowercase();
    if n.starts_with("claude") {
        Some("anthropic")
    } else if n.starts_with("gemini") {
        Some("gcp.gemini")
    } else if ["gpt-", "chatgpt", "codex", "o1", "o3", "o4"]
        .iter()
        .any(|p| n.starts_with(p))
    {
        Some("openai")
    } else {
        None
    }
}

/// The spans of one task. A no-op when export is off. Call [`TaskTrace::finish`] at the end:
/// dropped unfinished, its spans end when dropped, without the task's outcome.
#[derive(Debug)]
pub struct TaskTrace {
    active: Option<Box<ActiveTrace>>,
}

#[derive(Debug)]
struct ActiveTrace {
    tracer: SdkTracer,
    root: Span,
    /// A context whose span is the root: the parent of steps, turns and tool calls.
    root_cx: Context,
    task_id: String,
    agent: AgentKind,
    ident: ModelIdent,
    conversation_id: Option<String>,
    /// When the last event that was not streamed text arrived: where the next `chat` span
    /// starts.
    mark: SystemTime,
    /// The latest end of a span made from the agent's events.
    latest_end: SystemTime,
    /// Open tool calls, by call id.
    tools: HashMap<String, ToolSpan>,
    /// Open sub-agents, oldest first.
    subagents: Vec<SubagentSpan>,
}

#[derive(Debug)]
struct ToolSpan {
    span: Span,
    denied: bool,
}

#[derive(Debug)]
struct SubagentSpan {
    call_id: String,
    name: String,
    span: Span,
}

fn system_time(ts: Timestamp) -> SystemTime {
    UNIX_EPOCH + Duration::from_millis(ts.millis().max(0) as u64)
}

fn int(n: u64) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

fn clip(s: &str) -> String {
    if s.len() <= MAX_DESCRIPTION {
        return s.to_string();
    }
    let mut end = MAX_DESCRIPTION;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

fn context_of(span: &Span) -> Context {
    Context::new().with_remote_span_context(span.span_context().clone())
}

fn fail(span: &mut Span, error_type: &str, description: &str) {
    span.set_attribute(KeyValue::new(attr::ERROR_TYPE, error_type.to_string()));
    span.set_status(Status::error(clip(description)));
}

fn usage_attributes(usage: &Usage) -> Vec<KeyValue> {
    let mut kv = vec![
        KeyValue::new(attr::GEN_AI_USAGE_INPUT_TOKENS, int(usage.input_tokens)),
        KeyValue::new(attr::GEN_AI_USAGE_OUTPUT_TOKENS, int(usage.output_tokens)),
    ];
    if let Some(n) = usage.cache_read_tokens {
        kv.push(KeyValue::new(
            attr::GEN_AI_USAGE_CACHE_READ_INPUT_TOKENS,
            int(n),
        ));
    }
    if let Some(n) = usage.cache_write_tokens {
        kv.push(KeyValue::new(
            attr::GEN_AI_USAGE_CACHE_CREATION_INPUT_TOKENS,
            int(n),
        ));
    }
    kv
}

impl ActiveTrace {
    fn start(tracer: SdkTracer, task: &Task) -> ActiveTrace {
        let spec = &task.spec;
        let agent = spec.agent.as_str();
        let ident = ModelIdent::parse(spec.model.as_deref().unwrap_or(""), spec.agent);
        let created = system_time(task.created_at);
        let mut attrs = vec![
            KeyValue::new(attr::GEN_AI_OPERATION_NAME, attr::OP_INVOKE_AGENT),
            KeyValue::new(attr::GEN_AI_AGENT_NAME, agent),
            KeyValue::new(attr::WARDEN_TASK_ID, task.id.clone()),
            KeyValue::new(attr::WARDEN_TASK_REPO, spec.repo.clone()),
            KeyValue::new(attr::WARDEN_TASK_BRANCH, spec.new_branch.clone()),
            KeyValue::new(attr::WARDEN_TASK_TEMPLATE, spec.template.clone()),
            KeyValue::new(attr::WARDEN_TASK_ATTEMPT, i64::from(task.attempts)),
        ];
        if let Some(b) = &spec.base_branch {
            attrs.push(KeyValue::new(attr::WARDEN_TASK_BASE_BRANCH, b.clone()));
        }
        if let Some(p) = ident.provider {
            attrs.push(KeyValue::new(attr::GEN_AI_PROVIDER_NAME, p));
        }
        if let Some(m) = &ident.model {
            attrs.push(KeyValue::new(attr::GEN_AI_REQUEST_MODEL, m.clone()));
        }
        let root = tracer
            .span_builder(format!("{} {agent}", attr::OP_INVOKE_AGENT))
            .with_kind(SpanKind::Internal)
            .with_start_time(created)
            .with_attributes(attrs)
            .start_with_context(&tracer, &Context::new());
        let root_cx = context_of(&root);
        let now = SystemTime::now();
        let trace = ActiveTrace {
            tracer,
            root,
            root_cx,
            task_id: task.id.clone(),
            agent: spec.agent,
            ident,
            conversation_id: None,
            mark: now,
            latest_end: now,
            tools: HashMap::new(),
            subagents: Vec::new(),
        };
        // The wait for a runner. A later attempt's start also covers the earlier attempts,
        // so the span is made for the first one only.
        if let Some(started) = task.started_at
            && task.attempts <= 1
            && started >= task.created_at
        {
            let mut queue = trace.step_span("queue", created);
            queue.end_with_timestamp(system_time(started));
        }
        trace
    }

    fn step_span(&self, name: &str, start: SystemTime) -> Span {
        self.tracer
            .span_builder(name.to_string())
            .with_kind(SpanKind::Internal)
            .with_start_time(start)
            .with_attributes([
                KeyValue::new(attr::WARDEN_STEP, name.to_string()),
                KeyValue::new(attr::WARDEN_TASK_ID, self.task_id.clone()),
            ])
            .start_with_context(&self.tracer, &self.root_cx)
    }

    fn event(&mut self, ev: &AgentEvent) {
        let now = SystemTime::now();
        match ev {
            AgentEvent::TextDelta { .. } => return,
            AgentEvent::RunStarted { run_id, model, .. } => {
                self.conversation_id = Some(run_id.clone());
                self.root
                    .set_attribute(KeyValue::new(attr::GEN_AI_CONVERSATION_ID, run_id.clone()));
                let ident = ModelIdent::parse(model, self.agent);
                if let Some(m) = &ident.model {
                    self.root
                        .set_attribute(KeyValue::new(attr::GEN_AI_REQUEST_MODEL, m.clone()));
                    self.ident.model = ident.model;
                }
                if let Some(p) = ident.provider {
                    self.root
                        .set_attribute(KeyValue::new(attr::GEN_AI_PROVIDER_NAME, p));
                    self.ident.provider = Some(p);
                }
            }
            AgentEvent::Warning { message } => {
                self.root.add_event_with_timestamp(
                    "warden.agent.warning",
                    now,
                    vec![KeyValue::new("message", clip(message))],
                );
            }
            AgentEvent::Assistant {
                turn,
                tool_calls,
                stop_reason,
                usage,
                ..
            } => self.chat(now, *turn, *tool_calls, stop_reason, usage),
            AgentEvent::ToolCall {
                call_id,
                tool,
                subagent,
                ..
            } => self.tool_call(now, call_id, tool, subagent.as_deref()),
            AgentEvent::Decision {
                call_id, decision, ..
            } => {
                if let Some(t) = self.tools.get_mut(call_id) {
                    t.span
                        .set_attribute(KeyValue::new(attr::WARDEN_TOOL_DECISION, decision.clone()));
                    t.denied |= decision == "deny";
                }
            }
            AgentEvent::ApprovalRequested {
                call_id, deadline, ..
            } => {
                if let Some(t) = self.tools.get_mut(call_id) {
                    t.span.add_event_with_timestamp(
                        "warden.approval.requested",
                        now,
                        vec![KeyValue::new("deadline", deadline.clone())],
                    );
                }
            }
            AgentEvent::ApprovalAnswered {
                call_id,
                approved,
                by,
                ..
            } => {
                if let Some(t) = self.tools.get_mut(call_id) {
                    t.span.add_event_with_timestamp(
                        "warden.approval.answered",
                        now,
                        vec![
                            KeyValue::new("approved", *approved),
                            KeyValue::new("by", by.clone()),
                        ],
                    );
                    t.denied |= !approved;
                }
            }
            AgentEvent::ToolResult {
                call_id,
                tool,
                is_error,
                ..
            } => self.tool_result(now, call_id, tool, *is_error),
            AgentEvent::SubagentStarted { call_id, name, .. } => {
                self.subagent_started(now, call_id, name)
            }
            AgentEvent::SubagentFinished {
                call_id, status, ..
            } => {
                if let Some(i) = self.subagents.iter().rposition(|s| s.call_id == *call_id) {
                    let mut s = self.subagents.remove(i);
                    if *status != RunStatus::Succeeded {
                        fail(
                            &mut s.span,
                            status.as_str(),
                            &format!("sub-agent {}: {}", s.name, status.as_str()),
                        );
                    }
                    s.span.end_with_timestamp(now);
                    self.latest_end = now;
                }
            }
            AgentEvent::RunFinished {
                status,
                turns,
                error,
                ..
            } => {
                self.root.set_attributes([
                    KeyValue::new(attr::WARDEN_AGENT_STATUS, status.as_str()),
                    KeyValue::new(attr::WARDEN_AGENT_TURNS, i64::from(*turns)),
                ]);
                if let Some(e) = error {
                    self.root.add_event_with_timestamp(
                        "warden.agent.error",
                        now,
                        vec![KeyValue::new("message", clip(e))],
                    );
                }
                self.close_open(now, "the run ended before it finished");
            }
            AgentEvent::Loaded { .. } | AgentEvent::Todos { .. } => {}
        }
        self.mark = now;
    }

    fn chat(
        &mut self,
        now: SystemTime,
        turn: u32,
        tool_calls: usize,
        stop_reason: &str,
        usage: &Usage,
    ) {
        let name = match &self.ident.model {
            Some(m) => format!("{} {m}", attr::OP_CHAT),
            None => attr::OP_CHAT.to_string(),
        };
        let mut attrs = vec![
            KeyValue::new(attr::GEN_AI_OPERATION_NAME, attr::OP_CHAT),
            KeyValue::new(attr::WARDEN_AGENT_TURN, i64::from(turn)),
            KeyValue::new(
                attr::WARDEN_AGENT_TOOL_CALLS,
                int(u64::try_from(tool_calls).unwrap_or(u64::MAX)),
            ),
        ];
        if let Some(p) = self.ident.provider {
            attrs.push(KeyValue::new(attr::GEN_AI_PROVIDER_NAME, p));
        }
        if let Some(m) = &self.ident.model {
            attrs.push(KeyValue::new(attr::GEN_AI_REQUEST_MODEL, m.clone()));
            attrs.push(KeyValue::new(attr::GEN_AI_RESPONSE_MODEL, m.clone()));
        }
        if let Some(c) = &self.conversation_id {
            attrs.push(KeyValue::new(attr::GEN_AI_CONVERSATION_ID, c.clone()));
        }
        if !stop_reason.is_empty() {
            attrs.push(KeyValue::new(
                attr::GEN_AI_RESPONSE_FINISH_REASONS,
                Value::Array(Array::String(vec![StringValue::from(
                    stop_reason.to_string(),
                )])),
            ));
        }
        attrs.extend(usage_attributes(usage));
        let mut span = self
            .tracer
            .span_builder(name)
            .with_kind(SpanKind::Client)
            .with_start_time(self.mark.min(now))
            .with_attributes(attrs)
            .start_with_context(&self.tracer, &self.root_cx);
        span.end_with_timestamp(now);
        self.latest_end = now;
    }

    fn tool_call(&mut self, now: SystemTime, call_id: &str, tool: &str, subagent: Option<&str>) {
        let parent = subagent
            .and_then(|name| self.subagents.iter().rev().find(|s| s.name == name))
            .map(|s| context_of(&s.span))
            .unwrap_or_else(|| self.root_cx.clone());
        let span = self.tool_span(now, call_id, tool, subagent, &parent);
        // A repeated call id: the earlier call never reported its result.
        if let Some(mut old) = self.tools.insert(
            call_id.to_string(),
            ToolSpan {
                span,
                denied: false,
            },
        ) {
            fail(&mut old.span, "incomplete", "no result was reported");
            old.span.end_with_timestamp(now);
        }
    }

    fn tool_span(
        &self,
        now: SystemTime,
        call_id: &str,
        tool: &str,
        subagent: Option<&str>,
        parent: &Context,
    ) -> Span {
        let mut attrs = vec![
            KeyValue::new(attr::GEN_AI_OPERATION_NAME, attr::OP_EXECUTE_TOOL),
            KeyValue::new(attr::GEN_AI_TOOL_NAME, tool.to_string()),
            KeyValue::new(attr::GEN_AI_TOOL_CALL_ID, call_id.to_string()),
            KeyValue::new(attr::GEN_AI_TOOL_TYPE, "function"),
        ];
        if let Some(s) = subagent {
            attrs.push(KeyValue::new(attr::WARDEN_SUBAGENT, s.to_string()));
        }
        self.tracer
            .span_builder(format!("{} {tool}", attr::OP_EXECUTE_TOOL))
            .with_kind(SpanKind::Internal)
            .with_start_time(now)
            .with_attributes(attrs)
            .start_with_context(&self.tracer, parent)
    }

    fn tool_result(&mut self, now: SystemTime, call_id: &str, tool: &str, is_error: bool) {
        let mut t = match self.tools.remove(call_id) {
            Some(t) => t,
            // A result without its call: a span of no length, so the error is still seen.
            None => ToolSpan {
                span: self.tool_span(now, call_id, tool, None, &self.root_cx),
                denied: false,
            },
        };
        if is_error {
            if t.denied {
                fail(&mut t.span, "denied", "the tool call was denied");
            } else {
                fail(&mut t.span, "tool_error", "the tool returned an error");
            }
        }
        t.span.end_with_timestamp(now);
        self.latest_end = now;
    }

    fn subagent_started(&mut self, now: SystemTime, call_id: &str, name: &str) {
        let parent = self
            .tools
            .get(call_id)
            .map(|t| context_of(&t.span))
            .unwrap_or_else(|| self.root_cx.clone());
        let mut attrs = vec![
            KeyValue::new(attr::GEN_AI_OPERATION_NAME, attr::OP_INVOKE_AGENT),
            KeyValue::new(attr::GEN_AI_AGENT_NAME, name.to_string()),
            KeyValue::new(attr::GEN_AI_TOOL_CALL_ID, call_id.to_string()),
        ];
        if let Some(p) = self.ident.provider {
            attrs.push(KeyValue::new(attr::GEN_AI_PROVIDER_NAME, p));
        }
        if let Some(c) = &self.conversation_id {
            attrs.push(KeyValue::new(attr::GEN_AI_CONVERSATION_ID, c.clone()));
        }
        let span = self
            .tracer
            .span_builder(format!("{} {name}", attr::OP_INVOKE_AGENT))
            .with_kind(SpanKind::Internal)
            .with_start_time(now)
            .with_attributes(attrs)
            .start_with_context(&self.tracer, &parent);
        self.subagents.push(SubagentSpan {
            call_id: call_id.to_string(),
            name: name.to_string(),
            span,
        });
    }

    /// Ends the sub-agents and tool calls still open, innermost first, as incomplete.
    fn close_open(&mut self, now: SystemTime, why: &str) {
        if self.tools.is_empty() && self.subagents.is_empty() {
            return;
        }
        for mut s in self.subagents.drain(..).rev() {
            fail(&mut s.span, "incomplete", why);
            s.span.end_with_timestamp(now);
        }
        for (_, mut t) in self.tools.drain() {
            fail(&mut t.span, "incomplete", why);
            t.span.end_with_timestamp(now);
        }
        self.latest_end = now;
    }

    fn finish(mut self, task: &Task) {
        let now = SystemTime::now();
        self.close_open(now, "the task ended before it finished");
        let mut attrs = vec![
            KeyValue::new(attr::WARDEN_TASK_STATUS, task.status.as_str()),
            KeyValue::new(attr::WARDEN_TASK_ATTEMPT, i64::from(task.attempts)),
            KeyValue::new(
                attr::GEN_AI_USAGE_INPUT_TOKENS,
                int(task.usage.input_tokens),
            ),
            KeyValue::new(
                attr::GEN_AI_USAGE_OUTPUT_TOKENS,
                int(task.usage.output_tokens),
            ),
        ];
        if let Some(c) = task.cost_usd {
            attrs.push(KeyValue::new(attr::WARDEN_TASK_COST_USD, c));
        }
        if let Some(c) = &task.commit {
            attrs.push(KeyValue::new(attr::WARDEN_TASK_COMMIT, c.clone()));
        }
        if let Some(s) = &task.sandbox {
            attrs.push(KeyValue::new(attr::WARDEN_TASK_SANDBOX, s.clone()));
        }
        self.root.set_attributes(attrs);
        let error_type = match task.status {
            TaskStatus::Failed => Some("failed"),
            TaskStatus::TimedOut => Some("timed_out"),
            TaskStatus::Canceled => Some("canceled"),
            _ => None,
        };
        if let Some(error_type) = error_type {
            let description = task.reason.as_deref().unwrap_or(task.status.as_str());
            fail(&mut self.root, error_type, description);
        } else if task.status == TaskStatus::Succeeded {
            self.root.set_status(Status::Ok);
        }
        // `finished_at` is in whole milliseconds: taken as the end of that millisecond, so
        // the root does not end before the steps that ended within it.
        let end = task
            .finished_at
            .map(|f| (system_time(f) + Duration::from_millis(1)).min(now))
            .unwrap_or(now)
            .max(self.latest_end);
        self.root.end_with_timestamp(end);
    }
}

impl TaskTrace {
    /// Whether spans are recorded (export is on).
    pub fn is_enabled(&self) -> bool {
        self.active.is_some()
    }

    /// The W3C `traceparent` of the root span, for the sandbox's `TRACEPARENT`, so that an
    /// agent that traces itself joins this trace. `None` when export is off.
    pub fn traceparent(&self) -> Option<String> {
        let sc = self.active.as_ref()?.root.span_context().clone();
        sc.is_valid().then(|| {
            format!(
                "00-{}-{}-{:02x}",
                sc.trace_id(),
                sc.span_id(),
                sc.trace_flags().to_u8()
            )
        })
    }

    /// The trace id in hex, for logs and the task's events. `None` when export is off.
    pub fn trace_id(&self) -> Option<String> {
        let sc = self.active.as_ref()?.root.span_context().clone();
        sc.is_valid().then(|| sc.trace_id().to_string())
    }

    /// Starts a step of the runner (`sandbox`, `clone`, `branch`, `agent`, `commit`, `push`)
    /// under the root. The step does not borrow the trace: agent events may be fed while it
    /// is open.
    pub fn step(&self, name: &str) -> StepSpan {
        StepSpan {
            span: self
                .active
                .as_ref()
                .map(|t| t.step_span(name, SystemTime::now())),
        }
    }

    /// Maps one event of the agent to spans (see the module's documentation).
    pub fn agent_event(&mut self, ev: &AgentEvent) {
        if let Some(t) = self.active.as_deref_mut() {
            t.event(ev);
        }
    }

    /// Sets the task's outcome on the root (status, usage, cost, commit) and ends it, with an
    /// error status for FAILED, TIMED_OUT and CANCELED. Tool calls and sub-agents still open
    /// end as incomplete.
    pub fn finish(self, task: &Task) {
        if let Some(t) = self.active {
            t.finish(task);
        }
    }
}

/// One step's span; [`StepSpan::end`] it with the step's result.
#[derive(Debug)]
pub struct StepSpan {
    span: Option<Span>,
}

impl StepSpan {
    /// Ends the step: `Err(message)` sets an error status with the message and `error.type`.
    pub fn end(self, result: Result<(), &str>) {
        let Some(mut span) = self.span else { return };
        if let Err(message) = result {
            fail(&mut span, attr::ERROR_OTHER, message);
        }
        span.end();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Environment variables of a case.
    type Env<'a> = &'a [(&'a str, &'a str)];

    fn vars<'a>(pairs: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |name| {
            pairs
                .iter()
                .find(|(k, _)| *k == name)
                .map(|(_, v)| v.to_string())
        }
    }

    #[test]
    fn off_unless_an_endpoint_is_set() {
        let cfg = TelemetryConfig::from_lookup(vars(&[])).unwrap();
        assert!(!cfg.is_enabled());
        assert_eq!(cfg.service_name, DEFAULT_SERVICE_NAME);
        assert_eq!(cfg.timeout, DEFAULT_TIMEOUT);
        let empty = TelemetryConfig::from_lookup(vars(&[("OTEL_EXPORTER_OTLP_ENDPOINT", " ")]));
        assert!(!empty.unwrap().is_enabled());
        for off in [
            [
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_SDK_DISABLED", "TRUE"),
            ],
            [
                ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                ("OTEL_TRACES_EXPORTER", "none"),
            ],
        ] {
            let cfg = TelemetryConfig::from_lookup(vars(&off)).unwrap();
            assert!(!cfg.is_enabled(), "{off:?}");
        }
    }

    #[test]
    fn endpoints() {
        let table: &[(Env, &str)] = &[
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")],
                "http://c:4318/v1/traces",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "https://c.example/otlp/")],
                "https://c.example/otlp/v1/traces",
            ),
            (
                &[
                    ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
                    ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:9/x"),
                ],
                "http://t:9/x",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "http://t:9/x")],
                "http://t:9/x",
            ),
        ];
        for (env, url) in table {
            let cfg = TelemetryConfig::from_lookup(vars(env)).unwrap();
            assert_eq!(cfg.traces_url().as_deref(), Some(*url), "{env:?}");
        }
        assert_eq!(
            TelemetryConfig::otlp_http("http://c:4318/").traces_url(),
            Some("http://c:4318/v1/traces".into())
        );
    }

    #[test]
    fn settings_and_errors() {
        let cfg = TelemetryConfig::from_lookup(vars(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=prod,service.name=from-attrs",
            ),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "Authorization=Bearer%20abc, x-tenant = t1",
            ),
            ("OTEL_EXPORTER_OTLP_TRACES_HEADERS", "x-tenant=t2"),
            ("OTEL_EXPORTER_OTLP_TIMEOUT", "2500"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"),
        ]))
        .unwrap();
        assert_eq!(cfg.service_name, "from-attrs");
        assert_eq!(
            cfg.headers,
            [
                ("authorization".to_string(), "Bearer abc".to_string()),
                ("x-tenant".to_string(), "t2".to_string())
            ]
        );
        assert_eq!(cfg.timeout, Duration::from_millis(2500));
        let shown = format!("{cfg:?}");
        assert!(!shown.contains("abc"), "{shown}");
        let named = TelemetryConfig::from_lookup(vars(&[
            ("OTEL_SERVICE_NAME", "warden-prod"),
            ("OTEL_RESOURCE_ATTRIBUTES", "service.name=other"),
        ]))
        .unwrap();
        assert_eq!(named.service_name, "warden-prod");

        let bad: &[(Env, &str, &str)] = &[
            (
                &[("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")],
                "OTEL_EXPORTER_OTLP_PROTOCOL",
                "http/protobuf",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "http/json")],
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
                "http/protobuf",
            ),
            (
                &[("OTEL_TRACES_EXPORTER", "zipkin")],
                "OTEL_TRACES_EXPORTER",
                "otlp",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "http://",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://u:p@c:4318")],
                "OTEL_EXPORTER_OTLP_ENDPOINT",
                "header",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_HEADERS", "novalue")],
                "OTEL_EXPORTER_OTLP_HEADERS",
                "name=value",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_HEADERS", "bad header=x")],
                "OTEL_EXPORTER_OTLP_HEADERS",
                "header name",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_HEADERS", "a=%zz")],
                "OTEL_EXPORTER_OTLP_HEADERS",
                "hex",
            ),
            (
                &[("OTEL_EXPORTER_OTLP_TIMEOUT", "10s")],
                "OTEL_EXPORTER_OTLP_TIMEOUT",
                "milliseconds",
            ),
        ];
        for (env, setting, hint) in bad {
            let e = TelemetryConfig::from_lookup(vars(env)).unwrap_err();
            let shown = e.to_string();
            assert!(shown.starts_with(setting), "{env:?}: {shown}");
            assert!(shown.contains(hint), "{env:?}: {shown}");
        }
    }

    #[test]
    fn providers_and_models() {
        let table: &[(&str, AgentKind, Option<&str>, Option<&str>)] = &[
            (
                "anthropic/claude-sonnet-4-5",
                AgentKind::Warden,
                Some("anthropic"),
                Some("claude-sonnet-4-5"),
            ),
            (
                "openai/gpt-4.1",
                AgentKind::Warden,
                Some("openai"),
                Some("gpt-4.1"),
            ),
            (
                "openai-chat/gpt-4.1-mini",
                AgentKind::Warden,
                Some("openai"),
                Some("gpt-4.1-mini"),
            ),
            (
                "gemini/gemini-2.5-pro",
                AgentKind::Warden,
                Some("gcp.gemini"),
                Some("gemini-2.5-pro"),
            ),
            (
                "ollama/qwen3:8b",
                AgentKind::Warden,
                Some("ollama"),
                Some("qwen3:8b"),
            ),
            (
                "openai-compatible/meta-llama/Llama-3.3-70B@http://127.0.0.1:4000/v1",
                AgentKind::Warden,
                Some("openai"),
                Some("meta-llama/Llama-3.3-70B"),
            ),
            (
                "claude-opus-4-1",
                AgentKind::ClaudeCode,
                Some("anthropic"),
                Some("claude-opus-4-1"),
            ),
            (
                "sonnet",
                AgentKind::ClaudeCode,
                Some("anthropic"),
                Some("sonnet"),
            ),
            (
                "gpt-5-codex",
                AgentKind::Codex,
                Some("openai"),
                Some("gpt-5-codex"),
            ),
            ("default", AgentKind::Codex, Some("openai"), None),
            ("default", AgentKind::Warden, None, None),
            ("", AgentKind::Warden, None, None),
            (
                "meta-llama/Llama-3",
                AgentKind::Warden,
                None,
                Some("meta-llama/Llama-3"),
            ),
        ];
        for (model, agent, provider, name) in table {
            let id = ModelIdent::parse(model, *agent);
            assert_eq!(id.provider, *provider, "{model}");
            assert_eq!(id.model.as_deref(), *name, "{model}");
        }
    }

    #[test]
    fn descriptions_are_clipped_on_char_boundaries() {
        let long = "é".repeat(MAX_DESCRIPTION);
        let c = clip(&long);
        assert!(c.len() <= MAX_DESCRIPTION + '…'.len_utf8());
        assert!(c.ends_with('…'));
        assert_eq!(clip("short"), "short");
    }

    #[test]
    fn handles_cross_threads() {
        fn send<T: Send>() {}
        fn shared<T: Send + Sync>() {}
        shared::<Telemetry>();
        send::<TaskTrace>();
        send::<StepSpan>();
    }

    #[test]
    fn disabled_is_a_no_op() {
        let t = Telemetry::start(&TelemetryConfig::default()).unwrap();
        assert!(!t.is_enabled());
    }
}
