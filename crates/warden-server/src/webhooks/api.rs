//! The HTTP side of webhooks: the delivery endpoints under `/webhooks` (no API token: each
//! source checks its own secret) and, with the token, `GET /v1/webhooks` and
//! `GET /v1/webhooks/deliveries`.

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::config::{Rule, SecretRef, Source};
use super::store::{DeliveryRecord, MAX_LIST, Outcome};
use super::{Answer, MAX_BODY, Webhooks};
use crate::AppState;
use crate::error::{ApiError, QueryParams};

/// What a sender gets for a delivery that was authenticated and read (200 or 202).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryAnswer {
    /// Our record of it (`whd-...`), as `GET /v1/webhooks/deliveries` lists it.
    pub delivery: Option<String>,
    pub outcome: Outcome,
    pub reason: Option<String>,
    /// The tasks it filed.
    pub task_ids: Vec<String>,
}

fn code_of(status: StatusCode) -> &'static str {
    match status {
        StatusCode::UNAUTHORIZED => "UNAUTHENTICATED",
        StatusCode::NOT_FOUND => "NOT_FOUND",
        StatusCode::CONFLICT => "CONFLICT",
        StatusCode::PAYLOAD_TOO_LARGE => "RESOURCE_EXHAUSTED",
        StatusCode::INTERNAL_SERVER_ERROR => "INTERNAL",
        _ => "INVALID_ARGUMENT",
    }
}

impl IntoResponse for Answer {
    fn into_response(self) -> Response {
        if self.status.is_success() {
            (
                self.status,
                Json(DeliveryAnswer {
                    delivery: self.record_id,
                    outcome: self.outcome,
                    reason: self.reason,
                    task_ids: self.task_ids,
                }),
            )
                .into_response()
        } else {
            let message = self.reason.unwrap_or_default();
            let mut resp =
                ApiError::new(self.status, code_of(self.status), message).into_response();
            // A signature is not a bearer token: no Bearer challenge for HMAC sources.
            resp.headers_mut()
                .remove(axum::http::header::WWW_AUTHENTICATE);
            resp
        }
    }
}

/// Reads the body, at most [`MAX_BODY`] bytes.
async fn read_body(headers: &HeaderMap, body: Body) -> Result<bytes::Bytes, String> {
    let too_large = || format!("the body is over {} MiB", MAX_BODY >> 20);
    if headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
        .is_some_and(|n| n > MAX_BODY as u64)
    {
        return Err(too_large());
    }
    axum::body::to_bytes(body, MAX_BODY)
        .await
        .map_err(|_| too_large())
}

async fn deliver(state: AppState, source: Source, headers: HeaderMap, body: Body) -> Response {
    let Some(webhooks) = state.webhooks().filter(|w| w.serves(&source)) else {
        return ApiError::not_found(format!(
            "webhook source `{source}` is not configured on this server ([webhooks] in the config file)"
        ))
        .into_response();
    };
    let body = read_body(&headers, body).await;
    let answer = webhooks.receive(&source, &headers, body).await;
    state
        .metrics()
        .webhook_delivery(&source.to_string(), answer.outcome.as_str());
    for _ in 0..answer.created {
        state.metrics().task_submitted();
    }
    answer.into_response()
}

/// A GitHub delivery: `X-Hub-Signature-256` (HMAC-SHA256 of the body under the hook's
/// secret), `X-GitHub-Event` (push, issues, issue_comment, pull_request,
/// pull_request_review_comment; ping is answered 200) and `X-GitHub-Delivery` (accepted
/// once).
#[utoipa::path(post, path = "/webhooks/github", tag = "webhooks", security(),
    params(
        ("X-Hub-Signature-256" = String, Header, description = "sha256=<hex HMAC-SHA256 of the body>"),
        ("X-GitHub-Event" = String, Header, description = "The event"),
        ("X-GitHub-Delivery" = String, Header, description = "The delivery's id")),
    request_body(content = Object, description = "GitHub's JSON payload", content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted (tasks filed) or ignored (no rule applied)", body = DeliveryAnswer),
        (status = 200, description = "A ping", body = DeliveryAnswer),
        (status = 400, description = "Not JSON, or a header is missing", body = crate::openapi::ErrorDoc),
        (status = 401, description = "Missing or wrong signature; nothing started", body = crate::openapi::ErrorDoc),
        (status = 404, description = "GitHub webhooks are not configured", body = crate::openapi::ErrorDoc),
        (status = 409, description = "This delivery id was accepted already; nothing started", body = crate::openapi::ErrorDoc),
        (status = 413, description = "The body is over 5 MiB", body = crate::openapi::ErrorDoc),
        (status = 422, description = "A rule's template names a field the payload lacks, or the task is not valid; nothing started", body = crate::openapi::ErrorDoc)))]
pub async fn github(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    deliver(state, Source::Github, headers, body).await
}

/// A Prometheus Alertmanager notification (webhook payload version 4), with
/// `Authorization: Bearer <secret>` (`http_config.authorization` of the receiver). A
/// notification Alertmanager repeats (same group, status, alerts and starts) files no second
/// task and is answered 200 `duplicate`.
#[utoipa::path(post, path = "/webhooks/alertmanager", tag = "webhooks", security(),
    request_body(content = Object, description = "Alertmanager's webhook payload, version 4", content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted (tasks filed) or ignored", body = DeliveryAnswer),
        (status = 200, description = "A repeated notification: nothing started", body = DeliveryAnswer),
        (status = 400, description = "Not a version 4 payload", body = crate::openapi::ErrorDoc),
        (status = 401, description = "Missing or wrong bearer secret; nothing started", body = crate::openapi::ErrorDoc),
        (status = 404, description = "Alertmanager webhooks are not configured", body = crate::openapi::ErrorDoc),
        (status = 413, description = "The body is over 5 MiB", body = crate::openapi::ErrorDoc),
        (status = 422, description = "A rule could not be applied; nothing started", body = crate::openapi::ErrorDoc)))]
pub async fn alertmanager(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    deliver(state, Source::Alertmanager, headers, body).await
}

/// A PagerDuty v3 webhook: `X-PagerDuty-Signature: v1=<hex>[,v1=<hex>...]` (HMAC-SHA256 of
/// the body; several during a secret's rotation); `event.id` is accepted once.
#[utoipa::path(post, path = "/webhooks/pagerduty", tag = "webhooks", security(),
    params(("X-PagerDuty-Signature" = String, Header, description = "v1=<hex HMAC-SHA256 of the body>, comma-separated")),
    request_body(content = Object, description = "PagerDuty's v3 webhook payload", content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted (tasks filed) or ignored", body = DeliveryAnswer),
        (status = 400, description = "Not a v3 payload", body = crate::openapi::ErrorDoc),
        (status = 401, description = "Missing or wrong signature; nothing started", body = crate::openapi::ErrorDoc),
        (status = 404, description = "PagerDuty webhooks are not configured", body = crate::openapi::ErrorDoc),
        (status = 409, description = "This event id was accepted already; nothing started", body = crate::openapi::ErrorDoc),
        (status = 413, description = "The body is over 5 MiB", body = crate::openapi::ErrorDoc),
        (status = 422, description = "A rule could not be applied; nothing started", body = crate::openapi::ErrorDoc)))]
pub async fn pagerduty(State(state): State<AppState>, headers: HeaderMap, body: Body) -> Response {
    deliver(state, Source::Pagerduty, headers, body).await
}

/// A generic hook's JSON body, with `Authorization: Bearer <the hook's secret>` and a
/// delivery id in `X-Webhook-Delivery` or `Idempotency-Key` (required, accepted once).
#[utoipa::path(post, path = "/webhooks/generic/{name}", tag = "webhooks", security(),
    params(
        ("name" = String, Path, description = "The hook's name ([webhooks.generic.NAME])"),
        ("X-Webhook-Delivery" = Option<String>, Header, description = "The delivery's id (or Idempotency-Key)"),
        ("X-Webhook-Event" = Option<String>, Header, description = "An event name, shown in the deliveries")),
    request_body(content = Object, description = "Any JSON", content_type = "application/json"),
    responses(
        (status = 202, description = "Accepted (tasks filed) or ignored", body = DeliveryAnswer),
        (status = 400, description = "Not JSON, or no delivery id", body = crate::openapi::ErrorDoc),
        (status = 401, description = "Missing or wrong bearer secret; nothing started", body = crate::openapi::ErrorDoc),
        (status = 404, description = "No such hook", body = crate::openapi::ErrorDoc),
        (status = 409, description = "This delivery id was accepted already; nothing started", body = crate::openapi::ErrorDoc),
        (status = 413, description = "The body is over 5 MiB", body = crate::openapi::ErrorDoc),
        (status = 422, description = "A rule could not be applied; nothing started", body = crate::openapi::ErrorDoc)))]
pub async fn generic(
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    match Source::parse(&format!("generic:{name}")) {
        Some(source) => deliver(state, source, headers, body).await,
        None => ApiError::not_found(format!("no generic webhook `{name}`")).into_response(),
    }
}

/// A configured source: where it posts and where its secret comes from (never the secret).
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SourceView {
    pub source: String,
    /// The path deliveries are posted to.
    pub path: String,
    #[serde(flatten)]
    pub secret: SecretRef,
}

/// `GET /v1/webhooks`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhooksView {
    pub sources: Vec<SourceView>,
    pub rules: Vec<Rule>,
}

/// The configured sources and rules; secrets are never shown, only where they are read from.
#[utoipa::path(get, path = "/v1/webhooks", tag = "webhooks",
    responses((status = 200, body = WebhooksView)))]
pub async fn list_webhooks(State(state): State<AppState>) -> Json<WebhooksView> {
    let Some(w) = state.webhooks() else {
        return Json(WebhooksView {
            sources: Vec::new(),
            rules: Vec::new(),
        });
    };
    Json(view(w))
}

fn view(w: &Webhooks) -> WebhooksView {
    WebhooksView {
        sources: w
            .config()
            .sources()
            .into_iter()
            .map(|(s, r)| SourceView {
                source: s.to_string(),
                path: s.path(),
                secret: r.clone(),
            })
            .collect(),
        rules: w.config().rules.clone(),
    }
}

/// Filters of `GET /v1/webhooks/deliveries`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveryParams {
    /// github, alertmanager, pagerduty or generic:NAME.
    source: Option<String>,
    /// accepted, ignored, rejected or duplicate.
    outcome: Option<String>,
    /// At most this many, newest first [100; at most 1000].
    limit: Option<u32>,
}

/// `GET /v1/webhooks/deliveries`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct DeliveryList {
    pub deliveries: Vec<DeliveryRecord>,
}

/// The deliveries received, newest first: accepted with their tasks, ignored, rejected (with
/// the reason; the newest 1000 are kept) and duplicates.
#[utoipa::path(get, path = "/v1/webhooks/deliveries", tag = "webhooks",
    params(DeliveryParams),
    responses((status = 200, body = DeliveryList),
        (status = 400, description = "A bad filter; the message names it", body = crate::openapi::ErrorDoc)))]
pub async fn list_deliveries(
    State(state): State<AppState>,
    QueryParams(p): QueryParams<DeliveryParams>,
) -> Result<Json<DeliveryList>, ApiError> {
    let outcome = match p.outcome.as_deref() {
        None | Some("") => None,
        Some(o) => Some(Outcome::parse(o).ok_or_else(|| {
            ApiError::invalid(format!(
                "outcome: `{o}` is not an outcome; use one of {}",
                Outcome::NAMES
            ))
        })?),
    };
    let source = match p.source.as_deref() {
        None | Some("") => None,
        Some(s) => Some(
            Source::parse(s)
                .ok_or_else(|| {
                    ApiError::invalid(format!(
                        "source: `{s}` is not a source; use {}",
                        Source::FORMS
                    ))
                })?
                .to_string(),
        ),
    };
    let limit = p.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_LIST {
        return Err(ApiError::invalid(format!(
            "limit: {limit} is out of range; use 1 to {MAX_LIST}"
        )));
    }
    let Some(w) = state.webhooks() else {
        return Ok(Json(DeliveryList {
            deliveries: Vec::new(),
        }));
    };
    let deliveries = w
        .store()
        .list(source.as_deref(), outcome, limit)
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(DeliveryList { deliveries }))
}
