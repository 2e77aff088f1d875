//! The handlers of the HTTP API and the route table `app` builds the router from.

use std::convert::Infallible;
use std::time::{Duration, SystemTime};

use axum::Json;
use axum::body::Body;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Path, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, delete, get, head, post, put};
use futures_util::{SinkExt, Stream, StreamExt};
use serde::Deserialize;
use warden_agent::run::approval::{AnswerError, all_pending, answer_in};
use warden_agent::run::{Answer, PendingApproval};
use warden_sandbox::{
    ClaimRequest, CreateRequest, Phase, PoolSpec, PoolStatus, SandboxEvent, SandboxInfo, StdinMsg,
    StreamItem, Template,
};
use warden_sandboxd::proto::{
    ErrorCode, ExecControl, ExecEvent, ExecRequest, WS_STDERR, WS_STDOUT,
};

use crate::AppState;
use crate::error::{ApiError, JsonBody, QueryParams, from_value};
use crate::sandbox_router::is_dns_label;

type ApiResult<T> = Result<T, ApiError>;

/// One route: its path (axum syntax), methods, whether it needs the token, and handlers.
pub(crate) struct Route {
    pub path: &'static str,
    pub methods: &'static [&'static str],
    pub auth: bool,
    pub handler: MethodRouter<AppState>,
}

/// Every route of the API. `app` builds the router from this list, and a test checks each
/// appears in the OpenAPI document.
pub(crate) fn routes() -> Vec<Route> {
    let r = |path, methods, auth, handler| Route {
        path,
        methods,
        auth,
        handler,
    };
    vec![
        r("/healthz", &["get"], false, get(healthz)),
        r(
            "/.well-known/agent-card.json",
            &["get"],
            false,
            get(crate::a2a::agent_card),
        ),
        r("/a2a", &["post"], true, post(crate::a2a::jsonrpc)),
        r("/metrics", &["get"], true, get(metrics)),
        r("/v1/templates", &["get"], true, get(list_templates)),
        r(
            "/v1/templates/{name}",
            &["get", "put", "delete"],
            true,
            get(get_template).put(put_template).delete(delete_template),
        ),
        r("/v1/pools", &["get"], true, get(list_pools)),
        r(
            "/v1/pools/{name}",
            &["get", "put", "delete"],
            true,
            get(get_pool).put(put_pool).delete(delete_pool),
        ),
        r(
            "/v1/sandboxes",
            &["get", "post"],
            true,
            get(list_sandboxes).post(new_sandbox),
        ),
        r(
            "/v1/sandboxes/{id}",
            &["get", "delete"],
            true,
            get(get_sandbox).delete(delete_sandbox),
        ),
        r(
            "/v1/sandboxes/{id}/suspend",
            &["post"],
            true,
            post(suspend_sandbox),
        ),
        r(
            "/v1/sandboxes/{id}/resume",
            &["post"],
            true,
            post(resume_sandbox),
        ),
        r(
            "/v1/sandboxes/{id}/timeout",
            &["put"],
            true,
            put(set_timeout),
        ),
        r("/v1/sandboxes/{id}/exec", &["post"], true, post(exec)),
        r("/v1/sandboxes/{id}/exec/ws", &["get"], true, get(exec_ws)),
        r(
            "/v1/sandboxes/{id}/files/{*path}",
            &["get", "head", "put", "delete"],
            true,
            get(get_file)
                .merge(head(head_file))
                .merge(put(put_file))
                .merge(delete(delete_file)),
        ),
        r("/v1/events", &["get"], true, get(events)),
        r(
            "/v1/tasks",
            &["get", "post"],
            true,
            get(crate::api_tasks::list_tasks).post(crate::api_tasks::submit_task),
        ),
        r(
            "/v1/tasks/{id}",
            &["get"],
            true,
            get(crate::api_tasks::get_task),
        ),
        r(
            "/v1/tasks/{id}/cancel",
            &["post"],
            true,
            post(crate::api_tasks::cancel_task),
        ),
        r(
            "/v1/tasks/{id}/events",
            &["get"],
            true,
            get(crate::api_tasks::task_events),
        ),
        r(
            "/v1/tasks/{id}/approvals",
            &["get"],
            true,
            get(crate::api_tasks::task_approvals),
        ),
        r(
            "/v1/schedules",
            &["get"],
            true,
            get(crate::schedules::api::list_schedules),
        ),
        r(
            "/v1/schedules/{name}",
            &["get", "put", "delete"],
            true,
            get(crate::schedules::api::get_schedule)
                .put(crate::schedules::api::put_schedule)
                .delete(crate::schedules::api::delete_schedule),
        ),
        r(
            "/v1/schedules/{name}/pause",
            &["post"],
            true,
            post(crate::schedules::api::pause_schedule),
        ),
        r(
            "/v1/schedules/{name}/resume",
            &["post"],
            true,
            post(crate::schedules::api::resume_schedule),
        ),
        r(
            "/v1/schedules/{name}/run",
            &["post"],
            true,
            post(crate::schedules::api::run_schedule),
        ),
        r("/v1/approvals", &["get"], true, get(list_approvals)),
        r(
            "/v1/approvals/{run}/{call}",
            &["post"],
            true,
            post(answer_approval),
        ),
        r(
            "/v1/webhooks",
            &["get"],
            true,
            get(crate::webhooks::api::list_webhooks),
        ),
        r(
            "/v1/webhooks/deliveries",
            &["get"],
            true,
            get(crate::webhooks::api::list_deliveries),
        ),
        r(
            "/webhooks/github",
            &["post"],
            false,
            post(crate::webhooks::api::github),
        ),
        r(
            "/webhooks/alertmanager",
            &["post"],
            false,
            post(crate::webhooks::api::alertmanager),
        ),
        r(
            "/webhooks/pagerduty",
            &["post"],
            false,
            post(crate::webhooks::api::pagerduty),
        ),
        r(
            "/webhooks/generic/{name}",
            &["post"],
            false,
            post(crate::webhooks::api::generic),
        ),
    ]
}

/// Every route as (path in axum syntax, methods): what `app` serves.
pub fn route_table() -> Vec<(&'static str, &'static [&'static str])> {
    routes().into_iter().map(|r| (r.path, r.methods)).collect()
}

fn validate_name(what: &str, name: &str) -> ApiResult<()> {
    if is_dns_label(name) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "{what} name `{name}`: use 1 to 63 lowercase letters, digits and `-`, starting and ending with a letter or digit"
        )))
    }
}

/// Puts the path's name into a body that left it out; refuses a different one.
fn with_name(mut body: serde_json::Value, name: &str) -> ApiResult<serde_json::Value> {
    let Some(obj) = body.as_object_mut() else {
        return Err(ApiError::invalid("request body: expected a JSON object"));
    };
    match obj.get("name") {
        None => {
            obj.insert("name".into(), serde_json::Value::String(name.into()));
        }
        Some(serde_json::Value::String(n)) if n == name => {}
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "request body: `name`: {other} differs from the name in the path, `{name}`"
            )));
        }
    }
    Ok(body)
}

/// `{"status": "ok"}`: no auth, no driver call.
#[utoipa::path(get, path = "/healthz", tag = "server", security(),
    responses((status = 200, description = "The server is up", body = crate::openapi::HealthDoc)))]
pub async fn healthz() -> impl IntoResponse {
    Json(serde_json::json!({"status": "ok"}))
}

/// Prometheus text: requests by route and status, latency, sandboxes by phase, pools, claims.
#[utoipa::path(get, path = "/metrics", tag = "server",
    responses((status = 200, description = "Prometheus text exposition", body = String, content_type = "text/plain")))]
pub async fn metrics(State(state): State<AppState>) -> impl IntoResponse {
    let sandboxes = state.driver().list().await;
    let pools = state.driver().pools().await;
    if let Some(tasks) = state.tasks() {
        match tasks.store().count_by_status().await {
            Ok(counts) => {
                let counts: Vec<(&'static str, u64)> =
                    counts.into_iter().map(|(s, n)| (s.as_str(), n)).collect();
                state
                    .metrics()
                    .tasks()
                    .set_counts(&counts, tasks.running_here());
            }
            Err(e) => tracing::warn!(error = %e, "could not count tasks for /metrics"),
        }
    }
    let text = state.metrics().encode(&sandboxes, &pools);
    (
        [(
            header::CONTENT_TYPE,
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        text,
    )
}

#[utoipa::path(get, path = "/v1/templates", tag = "templates",
    responses((status = 200, body = Vec<crate::openapi::TemplateDoc>)))]
pub async fn list_templates(State(state): State<AppState>) -> Json<Vec<Template>> {
    let mut t = state.driver().templates().await;
    t.sort_by(|a, b| a.name.cmp(&b.name));
    Json(t)
}

#[utoipa::path(get, path = "/v1/templates/{name}", tag = "templates",
    params(("name" = String, Path, description = "Template name")),
    responses((status = 200, body = crate::openapi::TemplateDoc),
        (status = 404, body = crate::openapi::ErrorDoc)))]
pub async fn get_template(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Template>> {
    state
        .driver()
        .templates()
        .await
        .into_iter()
        .find(|t| t.name == name)
        .map(Json)
        .ok_or_else(|| ApiError::not_found(format!("template `{name}` not found")))
}

/// Creates or replaces a template (kept in the store across restarts).
#[utoipa::path(put, path = "/v1/templates/{name}", tag = "templates",
    params(("name" = String, Path, description = "Template name (DNS-1123 label)")),
    request_body = crate::openapi::TemplateDoc,
    responses((status = 200, body = crate::openapi::TemplateDoc),
        (status = 400, body = crate::openapi::ErrorDoc)))]
pub async fn put_template(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<Json<Template>> {
    validate_name("template", &name)?;
    let template: Template = from_value(with_name(body, &name)?)?;
    state.driver().put_template(template.clone()).await?;
    state
        .store()
        .put_template(&template)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(template))
}

/// Deletes a template; refused (409) while a pool uses it.
#[utoipa::path(delete, path = "/v1/templates/{name}", tag = "templates",
    params(("name" = String, Path, description = "Template name")),
    responses((status = 204, description = "Deleted"),
        (status = 404, body = crate::openapi::ErrorDoc),
        (status = 409, body = crate::openapi::ErrorDoc)))]
pub async fn delete_template(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    state.driver().delete_template(&name).await?;
    state
        .store()
        .delete_template(&name)
        .await
        .map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

#[utoipa::path(get, path = "/v1/pools", tag = "pools",
    responses((status = 200, body = Vec<crate::openapi::PoolStatusDoc>)))]
pub async fn list_pools(State(state): State<AppState>) -> Json<Vec<PoolStatus>> {
    let mut p = state.driver().pools().await;
    p.sort_by(|a, b| a.name.cmp(&b.name));
    Json(p)
}

#[utoipa::path(get, path = "/v1/pools/{name}", tag = "pools",
    params(("name" = String, Path, description = "Pool name")),
    responses((status = 200, body = crate::openapi::PoolStatusDoc),
        (status = 404, body = crate::openapi::ErrorDoc)))]
pub async fn get_pool(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<PoolStatus>> {
    find_pool(&state, &name).await.map(Json)
}

async fn find_pool(state: &AppState, name: &str) -> ApiResult<PoolStatus> {
    state
        .driver()
        .pools()
        .await
        .into_iter()
        .find(|p| p.name == name)
        .ok_or_else(|| ApiError::not_found(format!("pool `{name}` not found")))
}

/// Creates or resizes a warm pool; it fills in the background.
#[utoipa::path(put, path = "/v1/pools/{name}", tag = "pools",
    params(("name" = String, Path, description = "Pool name (DNS-1123 label)")),
    request_body = crate::openapi::PoolSpecDoc,
    responses((status = 200, body = crate::openapi::PoolStatusDoc),
        (status = 400, body = crate::openapi::ErrorDoc),
        (status = 404, description = "Unknown template", body = crate::openapi::ErrorDoc)))]
pub async fn put_pool(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<Json<PoolStatus>> {
    validate_name("pool", &name)?;
    let pool: PoolSpec = from_value(with_name(body, &name)?)?;
    state.driver().put_pool(pool.clone()).await?;
    state
        .store()
        .put_pool(&pool)
        .await
        .map_err(ApiError::internal)?;
    let status = find_pool(&state, &name).await.unwrap_or(PoolStatus {
        name: pool.name,
        template: pool.template,
        replicas: pool.replicas,
        ready: 0,
        starting: 0,
    });
    Ok(Json(status))
}

/// Deletes a pool and its unclaimed members.
#[utoipa::path(delete, path = "/v1/pools/{name}", tag = "pools",
    params(("name" = String, Path, description = "Pool name")),
    responses((status = 204, description = "Deleted"),
        (status = 404, body = crate::openapi::ErrorDoc)))]
pub async fn delete_pool(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    state.driver().delete_pool(&name).await?;
    state
        .store()
        .delete_pool(&name)
        .await
        .map_err(ApiError::internal)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Creates a sandbox from a template (`{"template": ...}`) or claims one from a warm pool
/// (`{"pool": ...}`).
#[utoipa::path(post, path = "/v1/sandboxes", tag = "sandboxes",
    request_body = crate::openapi::NewSandboxDoc,
    responses((status = 201, body = crate::openapi::SandboxDoc),
        (status = 400, body = crate::openapi::ErrorDoc),
        (status = 404, description = "Unknown template or pool", body = crate::openapi::ErrorDoc)))]
pub async fn new_sandbox(
    State(state): State<AppState>,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<(StatusCode, Json<SandboxInfo>)> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::invalid("request body: expected a JSON object"))?;
    let info = match (obj.contains_key("template"), obj.contains_key("pool")) {
        (true, false) => {
            let req: CreateRequest = from_value(body)?;
            state.driver().create(req).await?
        }
        (false, true) => {
            let req: ClaimRequest = from_value(body)?;
            let info = state.driver().claim(req).await?;
            state.metrics().record_claim(info.launch);
            info
        }
        _ => {
            return Err(ApiError::invalid(
                "request body: give exactly one of `template` (create a sandbox) or `pool` (claim one from a warm pool)",
            ));
        }
    };
    Ok((StatusCode::CREATED, Json(info)))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    template: Option<String>,
    pool: Option<String>,
    phase: Option<String>,
    #[serde(default)]
    all: bool,
}

fn parse_phase(s: &str) -> ApiResult<Phase> {
    serde_json::from_value(serde_json::Value::String(s.into())).map_err(|_| {
        ApiError::invalid(format!(
            "query string: `phase`: `{s}` is not a phase; use starting, ready, suspended, failed or stopped"
        ))
    })
}

/// Lists sandboxes; unclaimed pool members only with `all=true`.
#[utoipa::path(get, path = "/v1/sandboxes", tag = "sandboxes",
    params(("template" = Option<String>, Query, description = "Only this template's"),
        ("pool" = Option<String>, Query, description = "Only those from this pool"),
        ("phase" = Option<String>, Query, description = "starting, ready, suspended, failed or stopped"),
        ("all" = Option<bool>, Query, description = "Include unclaimed warm-pool members")),
    responses((status = 200, body = Vec<crate::openapi::SandboxDoc>),
        (status = 400, body = crate::openapi::ErrorDoc)))]
pub async fn list_sandboxes(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<ListQuery>,
) -> ApiResult<Json<Vec<SandboxInfo>>> {
    let phase = q.phase.as_deref().map(parse_phase).transpose()?;
    let mut list: Vec<SandboxInfo> = state
        .driver()
        .list()
        .await
        .into_iter()
        .filter(|s| q.all || !s.pool_member)
        .filter(|s| q.template.as_ref().is_none_or(|t| &s.template == t))
        .filter(|s| q.pool.as_ref().is_none_or(|p| s.pool.as_ref() == Some(p)))
        .filter(|s| phase.is_none_or(|p| s.phase == p))
        .collect();
    list.sort_by(|a, b| a.created_at.cmp(&b.created_at).then(a.id.cmp(&b.id)));
    Ok(Json(list))
}

#[utoipa::path(get, path = "/v1/sandboxes/{id}", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses((status = 200, body = crate::openapi::SandboxDoc),
        (status = 404, body = crate::openapi::ErrorDoc)))]
pub async fn get_sandbox(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<SandboxInfo>> {
    Ok(Json(state.driver().get(&id).await?))
}

/// Deletes a sandbox and everything in it.
#[utoipa::path(delete, path = "/v1/sandboxes/{id}", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses((status = 204, description = "Deleted"),
        (status = 404, body = crate::openapi::ErrorDoc)))]
pub async fn delete_sandbox(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<StatusCode> {
    state.driver().delete(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Freezes every process of the sandbox; exec and files refuse (409) until resumed.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/suspend", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses((status = 200, body = crate::openapi::SandboxDoc),
        (status = 404, body = crate::openapi::ErrorDoc),
        (status = 409, body = crate::openapi::ErrorDoc)))]
pub async fn suspend_sandbox(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<SandboxInfo>> {
    Ok(Json(state.driver().suspend(&id).await?))
}

#[utoipa::path(post, path = "/v1/sandboxes/{id}/resume", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    responses((status = 200, body = crate::openapi::SandboxDoc),
        (status = 404, body = crate::openapi::ErrorDoc),
        (status = 409, body = crate::openapi::ErrorDoc)))]
pub async fn resume_sandbox(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<SandboxInfo>> {
    Ok(Json(state.driver().resume(&id).await?))
}

/// Parses `{"shutdown_at": rfc3339|null}` or `{"shutdown_after": "30m"}`.
pub(crate) fn parse_timeout(
    body: &serde_json::Value,
    now: SystemTime,
) -> ApiResult<Option<SystemTime>> {
    let obj = body
        .as_object()
        .ok_or_else(|| ApiError::invalid("request body: expected a JSON object"))?;
    if let Some(k) = obj
        .keys()
        .find(|k| *k != "shutdown_at" && *k != "shutdown_after")
    {
        return Err(ApiError::invalid(format!(
            "request body: unknown field `{k}`, expected `shutdown_at` or `shutdown_after`"
        )));
    }
    match (obj.get("shutdown_at"), obj.get("shutdown_after")) {
        (Some(serde_json::Value::Null), None) => Ok(None),
        (Some(serde_json::Value::String(t)), None) => humantime::parse_rfc3339_weak(t)
            .map(Some)
            .map_err(|e| {
                ApiError::invalid(format!(
                    "request body: `shutdown_at`: `{t}` is not an RFC 3339 time ({e}); write e.g. 2030-01-02T03:04:05Z, or null for no deadline"
                ))
            }),
        (None, Some(serde_json::Value::String(d))) => humantime::parse_duration(d)
            .map(|d| Some(now + d))
            .map_err(|e| {
                ApiError::invalid(format!(
                    "request body: `shutdown_after`: `{d}` is not a duration ({e}); write e.g. 30s, 15m, 1h30m"
                ))
            }),
        (Some(_), None) => Err(ApiError::invalid(
            "request body: `shutdown_at`: expected an RFC 3339 string or null",
        )),
        (None, Some(_)) => Err(ApiError::invalid(
            "request body: `shutdown_after`: expected a duration string such as \"30m\"",
        )),
        _ => Err(ApiError::invalid(
            "request body: give exactly one of `shutdown_at` or `shutdown_after`",
        )),
    }
}

/// Sets (or clears, with `"shutdown_at": null`) the time the sandbox is deleted.
#[utoipa::path(put, path = "/v1/sandboxes/{id}/timeout", tag = "sandboxes",
    params(("id" = String, Path, description = "Sandbox id")),
    request_body = crate::openapi::SetTimeoutDoc,
    responses((status = 200, body = crate::openapi::SandboxDoc),
        (status = 400, body = crate::openapi::ErrorDoc),
        (status = 404, body = crate::openapi::ErrorDoc)))]
pub async fn set_timeout(
    State(state): State<AppState>,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<Json<SandboxInfo>> {
    let at = parse_timeout(&body, SystemTime::now())?;
    Ok(Json(state.driver().set_shutdown(&id, at).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ExecQuery {
    stream: Option<String>,
}

/// Runs a command and returns its result, or with `?stream=sse` streams ExecEvents.
#[utoipa::path(post, path = "/v1/sandboxes/{id}/exec", tag = "exec",
    params(("id" = String, Path, description = "Sandbox id"),
        ("stream" = Option<String>, Query, description = "`sse`: a text/event-stream of ExecEvent")),
    request_body = crate::openapi::ExecRequestDoc,
    responses((status = 200, body = crate::openapi::ExecResultDoc),
        (status = 400, body = crate::openapi::ErrorDoc),
        (status = 404, body = crate::openapi::ErrorDoc),
        (status = 409, description = "Suspended or stopped", body = crate::openapi::ErrorDoc)))]
pub async fn exec(
    State(state): State<AppState>,
    Path(id): Path<String>,
    QueryParams(q): QueryParams<ExecQuery>,
    JsonBody(req): JsonBody<ExecRequest>,
) -> ApiResult<Response> {
    if req.tty {
        return Err(ApiError::invalid(
            "request body: `tty`: a terminal needs the WebSocket (GET /v1/sandboxes/{id}/exec/ws)",
        ));
    }
    match q.stream.as_deref() {
        None => Ok(Json(state.driver().exec(&id, req).await?).into_response()),
        Some("sse") => {
            let stdin = req.stdin.clone();
            let session = state.driver().exec_stream(&id, req).await?;
            if let Some(data) = stdin {
                // The channel is fresh: the first message always fits.
                let _ = session
                    .stdin
                    .send(StdinMsg::Data(bytes::Bytes::from(data)))
                    .await;
            }
            let warden_sandbox::ExecSession { stdin, output } = session;
            drop(stdin); // closes the command's stdin
            Ok(Sse::new(exec_events(output))
                .keep_alive(KeepAlive::default())
                .into_response())
        }
        Some(other) => Err(ApiError::invalid(format!(
            "query string: `stream`: `{other}` is not a stream kind; use `sse` (or the WebSocket at /exec/ws)"
        ))),
    }
}

fn sse_event(e: &ExecEvent) -> Event {
    let name = match e {
        ExecEvent::Started { .. } => "started",
        ExecEvent::Stdout { .. } => "stdout",
        ExecEvent::Stderr { .. } => "stderr",
        ExecEvent::Exit { .. } => "exit",
        ExecEvent::Error { .. } => "error",
    };
    Event::default()
        .event(name)
        .data(serde_json::to_string(e).unwrap_or_default())
}

/// The output of a streaming exec as SSE events; ends after `exit` or `error`. Output bytes
/// are sent as UTF-8 text (invalid sequences replaced); use the WebSocket for raw bytes.
fn exec_events(
    output: tokio::sync::mpsc::Receiver<StreamItem>,
) -> impl Stream<Item = Result<Event, Infallible>> {
    futures_util::stream::unfold((output, false), |(mut rx, done)| async move {
        if done {
            return None;
        }
        let item = rx.recv().await?;
        let event = match item {
            StreamItem::Stdout(b) => ExecEvent::Stdout {
                data: String::from_utf8_lossy(&b).into_owned(),
            },
            StreamItem::Stderr(b) => ExecEvent::Stderr {
                data: String::from_utf8_lossy(&b).into_owned(),
            },
            StreamItem::Event(e) => e,
        };
        let last = matches!(event, ExecEvent::Exit { .. } | ExecEvent::Error { .. });
        Some((Ok(sse_event(&event)), (rx, last)))
    })
}

/// A WebSocket exec, with the message scheme of sandboxd's `/v1/exec/ws`: the client's first
/// text message is an ExecRequest; then stdin as binary messages and control (resize,
/// signal, eof) as text; the server sends `started` and `exit` (or `error`) as text and
/// output as binary messages whose first byte is 1 (stdout) or 2 (stderr).
#[utoipa::path(get, path = "/v1/sandboxes/{id}/exec/ws", tag = "exec",
    params(("id" = String, Path, description = "Sandbox id")),
    responses((status = 101, description = "WebSocket; messages as described"),
        (status = 400, body = crate::openapi::ErrorDoc)))]
pub async fn exec_ws(
    State(state): State<AppState>,
    Path(id): Path<String>,
    ws: WebSocketUpgrade,
) -> Response {
    // Answers `warden.v1` when offered (the console offers it with its token, see auth.rs).
    ws.protocols([crate::auth::WS_PROTOCOL])
        .on_upgrade(move |socket| ws_session(state, id, socket))
}

async fn ws_send_event(socket: &mut WebSocket, e: &ExecEvent) -> bool {
    let text = serde_json::to_string(e).unwrap_or_default();
    socket.send(Message::Text(text.into())).await.is_ok()
}

/// Sends a last error event and closes, reading what the client already sent (for a
/// second, at most) so that the close does not turn into a reset that loses the event.
async fn ws_fail(mut socket: WebSocket, e: ExecEvent) {
    ws_send_event(&mut socket, &e).await;
    let _ = socket.send(Message::Close(None)).await;
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(m)) = socket.recv().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
}

async fn ws_session(state: AppState, id: String, mut socket: WebSocket) {
    let error = |code, message: String| ExecEvent::Error { code, message };
    let first = match tokio::time::timeout(Duration::from_secs(30), socket.recv()).await {
        Ok(Some(Ok(Message::Text(t)))) => t,
        Ok(Some(Ok(_))) => {
            let e = error(
                ErrorCode::InvalidArgument,
                "the first message must be an ExecRequest as JSON text".into(),
            );
            ws_fail(socket, e).await;
            return;
        }
        _ => return,
    };
    let req: ExecRequest = match crate::error::parse_json(first.as_bytes()) {
        Ok(r) => r,
        Err(e) => {
            ws_fail(socket, error(ErrorCode::InvalidArgument, e.message)).await;
            return;
        }
    };
    let session = match state.driver().exec_stream(&id, req).await {
        Ok(s) => s,
        Err(e) => {
            let api = ApiError::from(e.clone());
            ws_fail(socket, error(e.code(), api.message)).await;
            return;
        }
    };
    let warden_sandbox::ExecSession { stdin, mut output } = session;
    let (mut sink, mut stream) = socket.split();
    let mut stdin = Some(stdin);
    loop {
        tokio::select! {
            item = output.recv() => {
                let Some(item) = item else { break };
                let (msg, last) = match item {
                    StreamItem::Stdout(b) => (binary(WS_STDOUT, &b), false),
                    StreamItem::Stderr(b) => (binary(WS_STDERR, &b), false),
                    StreamItem::Event(ExecEvent::Stdout { data }) => (binary(WS_STDOUT, data.as_bytes()), false),
                    StreamItem::Event(ExecEvent::Stderr { data }) => (binary(WS_STDERR, data.as_bytes()), false),
                    StreamItem::Event(e) => {
                        let last = matches!(e, ExecEvent::Exit { .. } | ExecEvent::Error { .. });
                        (Message::Text(serde_json::to_string(&e).unwrap_or_default().into()), last)
                    }
                };
                if sink.send(msg).await.is_err() {
                    break;
                }
                if last {
                    break;
                }
            }
            msg = stream.next() => {
                match msg {
                    Some(Ok(Message::Binary(b))) => {
                        if let Some(tx) = &stdin && tx.send(StdinMsg::Data(b)).await.is_err() {
                            stdin = None;
                        }
                    }
                    Some(Ok(Message::Text(t))) => {
                        match serde_json::from_str::<ExecControl>(&t) {
                            Ok(c) => {
                                if let Some(tx) = &stdin {
                                    let eof = c == ExecControl::Eof;
                                    if tx.send(StdinMsg::Control(c)).await.is_err() || eof {
                                        // After eof nothing more is read; dropping the
                                        // sender closes stdin for drivers that wait on it.
                                        if eof { stdin = None; }
                                    }
                                }
                            }
                            Err(e) => {
                                let ev = error(ErrorCode::InvalidArgument, format!(
                                    "control message: {e}; expected {{\"type\":\"resize\",\"cols\":N,\"rows\":N}}, {{\"type\":\"signal\",\"signal\":N}} or {{\"type\":\"eof\"}}"));
                                let _ = sink.send(Message::Text(serde_json::to_string(&ev).unwrap_or_default().into())).await;
                            }
                        }
                    }
                    Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                    Some(Ok(_)) => {}
                }
            }
        }
    }
    let _ = sink.send(Message::Close(None)).await;
    // Read what the client still sends (stdin, eof, its close) before dropping the
    // connection: closing with unread data makes the kernel send a reset, and the client
    // could lose the exit message it has not read yet.
    let _ = tokio::time::timeout(Duration::from_secs(1), async {
        while let Some(Ok(m)) = stream.next().await {
            if matches!(m, Message::Close(_)) {
                break;
            }
        }
    })
    .await;
    // Dropping `output` and the stdin sender ends the session (the driver kills the command
    // if it is still running, e.g. when the client went away).
}

fn binary(channel: u8, data: &[u8]) -> Message {
    let mut v = Vec::with_capacity(data.len() + 1);
    v.push(channel);
    v.extend_from_slice(data);
    Message::Binary(v.into())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileQuery {
    #[serde(default)]
    recursive: bool,
    mode: Option<String>,
    r#type: Option<String>,
}

/// Downloads a file, or lists a directory (`{path, entries}`).
#[utoipa::path(get, path = "/v1/sandboxes/{id}/files/{path}", tag = "files",
    params(("id" = String, Path, description = "Sandbox id"),
        ("path" = String, Path, description = "Relative to the workspace (`.` is the workspace)")),
    responses((status = 200, description = "The file's bytes, or a directory listing",
            content((Vec<u8> = "application/octet-stream"), (crate::openapi::DirListingDoc = "application/json"))),
        (status = 403, body = crate::openapi::ErrorDoc),
        (status = 404, body = crate::openapi::ErrorDoc)))]
pub async fn get_file(
    State(state): State<AppState>,
    Path((id, path)): Path<(String, String)>,
    QueryParams(_q): QueryParams<FileQuery>,
) -> ApiResult<Response> {
    let driver = state.driver();
    match driver.list_dir(&id, &path).await {
        Ok(listing) => return Ok(Json(listing).into_response()),
        Err(e) if e.http_status() == 404 || e.http_status() == 403 => return Err(e.into()),
        Err(_) => {}
    }
    let stream = driver.read_file(&id, &path).await?;
    let mut resp = Response::new(Body::from_stream(stream));
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    Ok(resp)
}

/// 200 when the path exists, 404 when not (no body).
#[utoipa::path(head, path = "/v1/sandboxes/{id}/files/{path}", tag = "files",
    params(("id" = String, Path, description = "Sandbox id"),
        ("path" = String, Path, description = "Relative to the workspace")),
    responses((status = 200, description = "Exists"), (status = 404, description = "Does not exist")))]
pub async fn head_file(
    State(state): State<AppState>,
    Path((id, path)): Path<(String, String)>,
) -> ApiResult<StatusCode> {
    if state.driver().exists(&id, &path).await? {
        Ok(StatusCode::OK)
    } else {
        Ok(StatusCode::NOT_FOUND)
    }
}

fn parse_mode(m: &str) -> ApiResult<u32> {
    u32::from_str_radix(m, 8)
        .ok()
        .filter(|m| *m <= 0o7777)
        .ok_or_else(|| {
            ApiError::invalid(format!(
                "query string: `mode`: `{m}` is not an octal mode; write e.g. 0644 or 755"
            ))
        })
}

/// Uploads a file (the body, streamed; 413 over the template's quota), or with
/// `?type=directory` makes a directory.
#[utoipa::path(put, path = "/v1/sandboxes/{id}/files/{path}", tag = "files",
    params(("id" = String, Path, description = "Sandbox id"),
        ("path" = String, Path, description = "Relative to the workspace"),
        ("mode" = Option<String>, Query, description = "Octal permission bits, e.g. 0644"),
        ("type" = Option<String>, Query, description = "`directory` to make a directory (no body)")),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses((status = 204, description = "Written"),
        (status = 403, body = crate::openapi::ErrorDoc),
        (status = 404, body = crate::openapi::ErrorDoc),
        (status = 413, description = "Over the workspace quota", body = crate::openapi::ErrorDoc)))]
pub async fn put_file(
    State(state): State<AppState>,
    Path((id, path)): Path<(String, String)>,
    QueryParams(q): QueryParams<FileQuery>,
    req: Request,
) -> ApiResult<StatusCode> {
    match q.r#type.as_deref() {
        Some("directory") => {
            state.driver().mkdir(&id, &path).await?;
            return Ok(StatusCode::NO_CONTENT);
        }
        Some("file") | None => {}
        Some(other) => {
            return Err(ApiError::invalid(format!(
                "query string: `type`: `{other}` is not a type; use `file` (the default) or `directory`"
            )));
        }
    }
    let mode = q.mode.as_deref().map(parse_mode).transpose()?;
    let body = req
        .into_body()
        .into_data_stream()
        .map(|r| r.map_err(std::io::Error::other));
    state
        .driver()
        .write_file(&id, &path, mode, Box::pin(body))
        .await?;
    Ok(StatusCode::NO_CONTENT)
}

/// Deletes a file, or a directory (`?recursive=true` when it is not empty; 409 otherwise).
#[utoipa::path(delete, path = "/v1/sandboxes/{id}/files/{path}", tag = "files",
    params(("id" = String, Path, description = "Sandbox id"),
        ("path" = String, Path, description = "Relative to the workspace"),
        ("recursive" = Option<bool>, Query, description = "Delete a non-empty directory")),
    responses((status = 204, description = "Deleted"),
        (status = 404, body = crate::openapi::ErrorDoc),
        (status = 409, body = crate::openapi::ErrorDoc)))]
pub async fn delete_file(
    State(state): State<AppState>,
    Path((id, path)): Path<(String, String)>,
    QueryParams(q): QueryParams<FileQuery>,
) -> ApiResult<StatusCode> {
    state.driver().remove(&id, &path, q.recursive).await?;
    Ok(StatusCode::NO_CONTENT)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EventsQuery {
    sandbox: Option<String>,
    since: Option<String>,
    follow: Option<bool>,
    limit: Option<u32>,
}

/// Sandbox events as SSE (`event: <kind>`, data: the event as JSON): those kept since
/// `since` first, then live ones. `follow=false` answers the kept ones as a JSON array.
#[utoipa::path(get, path = "/v1/events", tag = "events",
    params(("sandbox" = Option<String>, Query, description = "Only this sandbox's events"),
        ("since" = Option<String>, Query, description = "RFC 3339: replay kept events after this time"),
        ("follow" = Option<bool>, Query, description = "false: answer the kept events as JSON and stop [true]"),
        ("limit" = Option<u32>, Query, description = "At most this many kept events [1000]")),
    responses((status = 200, description = "text/event-stream of SandboxEvent, or a JSON array with follow=false",
            content((crate::openapi::SandboxEventDoc = "text/event-stream"), (Vec<crate::openapi::SandboxEventDoc> = "application/json"))),
        (status = 400, body = crate::openapi::ErrorDoc)))]
pub async fn events(
    State(state): State<AppState>,
    QueryParams(q): QueryParams<EventsQuery>,
) -> ApiResult<Response> {
    let since = q
        .since
        .as_deref()
        .map(|s| {
            humantime::parse_rfc3339_weak(s).map_err(|e| {
                ApiError::invalid(format!(
                    "query string: `since`: `{s}` is not an RFC 3339 time ({e})"
                ))
            })
        })
        .transpose()?;
    let limit = q.limit.unwrap_or(1000).min(100_000);
    let follow = q.follow.unwrap_or(true);
    // Subscribe before reading the store, so nothing falls between the two.
    let live = state.driver().events();
    let kept = if since.is_some() || !follow {
        state
            .store()
            .events(since, q.sandbox.as_deref(), limit)
            .await
            .map_err(ApiError::internal)?
    } else {
        Vec::new()
    };
    if !follow {
        return Ok(Json(kept).into_response());
    }
    let filter = q.sandbox.clone();
    let last_kept = kept.last().map(|e| e.time);
    let replay = futures_util::stream::iter(kept.into_iter().map(|e| Ok(event_sse(&e))));
    let live = futures_util::stream::unfold(live, |mut rx| async move {
        loop {
            match rx.recv().await {
                Ok(e) => return Some((e, rx)),
                Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "events stream lagged");
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return None,
            }
        }
    })
    .filter(move |e| {
        let keep =
            filter.as_ref().is_none_or(|s| &e.sandbox == s) && last_kept.is_none_or(|t| e.time > t);
        std::future::ready(keep)
    })
    .map(|e| Ok::<_, Infallible>(event_sse(&e)));
    Ok(Sse::new(replay.chain(live))
        .keep_alive(KeepAlive::default())
        .into_response())
}

fn event_sse(e: &SandboxEvent) -> Event {
    Event::default()
        .event(e.kind.clone())
        .data(serde_json::to_string(e).unwrap_or_default())
}

/// The tool calls `warden agent` runs wait on (an `ask` rule matched), oldest first.
#[utoipa::path(get, path = "/v1/approvals", tag = "approvals",
    responses((status = 200, body = Vec<crate::openapi::PendingApprovalDoc>)))]
pub async fn list_approvals(
    State(state): State<AppState>,
) -> ApiResult<Json<Vec<PendingApproval>>> {
    let Some(runs) = state.agent_runs().map(|d| d.to_path_buf()) else {
        return Ok(Json(Vec::new()));
    };
    let pending = tokio::task::spawn_blocking(move || all_pending(&runs))
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(pending))
}

/// `POST /v1/approvals/{run}/{call}`: a person's answer. The server records it as given by
/// `api`.
#[derive(Debug, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ApprovalDecision {
    /// true lets the call run; false refuses it.
    approved: bool,
    /// Why; passed to the model with the result.
    #[serde(default)]
    reason: Option<String>,
}

/// Answers a pending approval; the waiting run picks the answer up within a moment.
#[utoipa::path(post, path = "/v1/approvals/{run}/{call}", tag = "approvals",
    params(("run" = String, Path, description = "The run's id (`run-...`)"),
        ("call" = String, Path, description = "The call's id, as `GET /v1/approvals` lists it")),
    request_body = ApprovalDecision,
    responses((status = 204, description = "Answered"),
        (status = 400, body = crate::openapi::ErrorDoc),
        (status = 404, description = "Not pending: answered already, timed out, or never asked",
            body = crate::openapi::ErrorDoc)))]
pub async fn answer_approval(
    State(state): State<AppState>,
    Path((run, call)): Path<(String, String)>,
    JsonBody(decision): JsonBody<ApprovalDecision>,
) -> ApiResult<StatusCode> {
    let Some(runs) = state.agent_runs().map(|d| d.to_path_buf()) else {
        return Err(AnswerError::NotPending { run, call }.into());
    };
    let answer = Answer {
        approved: decision.approved,
        reason: decision.reason,
        by: "api".into(),
    };
    // `answer_in` refuses run ids that are not plain names and keeps call ids to file-safe
    // characters, so neither can reach outside the runs directory.
    let (r, c) = (run.clone(), call.clone());
    tokio::task::spawn_blocking(move || answer_in(&runs, &r, &c, &answer))
        .await
        .map_err(ApiError::internal)??;
    tracing::info!(run = %run, call = %call, approved = decision.approved, "approval answered");
    Ok(StatusCode::NO_CONTENT)
}
