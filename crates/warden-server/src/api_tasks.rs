//! The task API: submit, get, list, events and logs (JSON or SSE), cancel, approvals.

use std::convert::Infallible;
use std::future::Future;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures_util::Stream;
use serde::{Deserialize, Serialize};
use warden_agent::run::PendingApproval;
use warden_agent::run::approval::all_pending;

use crate::AppState;
use crate::error::{ApiError, JsonBody, QueryParams};
use crate::tasks::model::{Task, TaskEvent, TaskStatus, TaskSubmission, Timestamp, is_task_id};
use crate::tasks::runner::{SubmitError, Tasks};
use crate::tasks::store::{CancelOutcome, TaskQuery, TaskStoreError};

type ApiResult<T> = Result<T, ApiError>;

fn tasks(state: &AppState) -> ApiResult<&Tasks> {
    state.tasks().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "tasks are not enabled on this server",
        )
    })
}

fn store_error(e: TaskStoreError) -> ApiError {
    ApiError::internal(e)
}

fn check_id(id: &str) -> ApiResult<()> {
    if is_task_id(id) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "id: `{id}` is not a task id (task- and lower-case letters and digits)"
        )))
    }
}

async fn task_or_404(t: &Tasks, id: &str) -> ApiResult<Task> {
    check_id(id)?;
    t.get(id)
        .await
        .map_err(store_error)?
        .ok_or_else(|| ApiError::not_found(format!("task `{id}` not found")))
}

/// What `POST /v1/tasks` answers.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskCreated {
    pub id: String,
    pub status: TaskStatus,
    /// false when the idempotency key had been used: this is the first task.
    pub created: bool,
}

/// Queues a task and answers at once; the runner picks it up when a slot is free.
#[utoipa::path(post, path = "/v1/tasks", tag = "tasks",
    params(("Idempotency-Key" = Option<String>, Header,
        description = "A retried submission with the same key returns the first task")),
    request_body = TaskSubmission,
    responses((status = 202, description = "Queued", body = TaskCreated),
        (status = 200, description = "Already submitted with this idempotency key", body = TaskCreated),
        (status = 400, description = "A field is invalid; the message names it", body = crate::openapi::ErrorDoc)))]
pub async fn submit_task(
    State(state): State<AppState>,
    headers: HeaderMap,
    JsonBody(submission): JsonBody<TaskSubmission>,
) -> ApiResult<Response> {
    let t = tasks(&state)?;
    let key = match headers.get("idempotency-key") {
        None => None,
        Some(v) => Some(
            v.to_str()
                .map_err(|_| {
                    ApiError::invalid("Idempotency-Key: must be printable ASCII".to_string())
                })?
                .to_string(),
        ),
    };
    match t.submit(submission, key).await {
        Ok((task, created)) => {
            let status = if created {
                StatusCode::ACCEPTED
            } else {
                StatusCode::OK
            };
            if created {
                state.metrics().task_submitted();
            }
            Ok((
                status,
                Json(TaskCreated {
                    id: task.id,
                    status: task.status,
                    created,
                }),
            )
                .into_response())
        }
        Err(SubmitError::Invalid(errors)) => Err(ApiError::invalid(
            errors
                .iter()
                .map(|e| e.to_string())
                .collect::<Vec<_>>()
                .join("; "),
        )),
        Err(SubmitError::Store(e)) => Err(store_error(e)),
    }
}

/// A task with its status, times, branch, commit, summary, usage and cost.
#[utoipa::path(get, path = "/v1/tasks/{id}", tag = "tasks",
    params(("id" = String, Path, description = "The task's id (`task-...`)")),
    responses((status = 200, body = Task), (status = 404, body = crate::openapi::ErrorDoc)))]
pub async fn get_task(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Task>> {
    Ok(Json(task_or_404(tasks(&state)?, &id).await?))
}

/// Filters and page of `GET /v1/tasks`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListParams {
    /// Comma-separated statuses, e.g. `RUNNING,WAITING_APPROVAL`.
    status: Option<String>,
    /// Only this repository URL.
    repo: Option<String>,
    /// Only tasks created at or after this RFC 3339 time.
    since: Option<String>,
    /// Page size, 1 to 500 [50].
    limit: Option<u32>,
    /// `next_cursor` of the previous page.
    cursor: Option<String>,
}

/// A page of tasks, newest first.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct TaskList {
    pub tasks: Vec<Task>,
    /// Pass as `cursor` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next_cursor: Option<String>,
}

/// Tasks, newest first, filtered and paged.
#[utoipa::path(get, path = "/v1/tasks", tag = "tasks", params(ListParams),
    responses((status = 200, body = TaskList), (status = 400, body = crate::openapi::ErrorDoc)))]
pub async fn list_tasks(
    State(state): State<AppState>,
    QueryParams(p): QueryParams<ListParams>,
) -> ApiResult<Json<TaskList>> {
    let t = tasks(&state)?;
    let mut q = TaskQuery::default();
    if let Some(s) = &p.status {
        for part in s.split(',').filter(|s| !s.trim().is_empty()) {
            q.status.push(
                TaskStatus::parse(part.trim())
                    .map_err(|m| ApiError::invalid(format!("status: {m}")))?,
            );
        }
    }
    q.repo = p.repo;
    if let Some(s) = &p.since {
        q.since = Some(Timestamp::parse(s).map_err(|m| ApiError::invalid(format!("since: {m}")))?);
    }
    if let Some(l) = p.limit {
        if !(1..=500).contains(&l) {
            return Err(ApiError::invalid(format!(
                "limit: {l} is out of range; use 1 to 500"
            )));
        }
        q.limit = l;
    }
    q.cursor = p.cursor;
    let page = t.list(&q).await.map_err(store_error)?;
    Ok(Json(TaskList {
        tasks: page.tasks,
        next_cursor: page.next_cursor,
    }))
}

/// Cancels a task: a queued one at once, a running one within moments (its sandbox is
/// deleted). A finished task cannot be cancelled (409).
#[utoipa::path(post, path = "/v1/tasks/{id}/cancel", tag = "tasks",
    params(("id" = String, Path, description = "The task's id")),
    responses((status = 200, description = "Cancelled, or cancelling", body = Task),
        (status = 404, body = crate::openapi::ErrorDoc),
        (status = 409, description = "The task has finished", body = crate::openapi::ErrorDoc)))]
pub async fn cancel_task(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Task>> {
    let t = tasks(&state)?;
    check_id(&id)?;
    match t.cancel(&id).await.map_err(store_error)? {
        None => Err(ApiError::not_found(format!("task `{id}` not found"))),
        Some(CancelOutcome::Canceled(task)) | Some(CancelOutcome::Requested(task)) => {
            Ok(Json(task))
        }
        Some(CancelOutcome::Finished(task)) => Err(ApiError::new(
            StatusCode::CONFLICT,
            "FAILED_PRECONDITION",
            format!(
                "task `{id}` has finished ({}); only a QUEUED, RUNNING or WAITING_APPROVAL task can be cancelled",
                task.status
            ),
        )),
    }
}

/// `GET /v1/tasks/{id}/events`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventParams {
    /// Only events after this `seq` [0]. With SSE, `Last-Event-ID` does the same.
    after: Option<i64>,
    /// Comma-separated kinds: `status`, `step`, `log`, `agent` [all].
    kinds: Option<String>,
    /// Keep the stream open (SSE) until the task finishes [false; true when the request
    /// accepts `text/event-stream`].
    follow: Option<bool>,
    /// At most this many events in a JSON answer, 1 to 1000 [1000].
    limit: Option<u32>,
}

const KINDS: [&str; 4] = ["status", "step", "log", "agent"];

/// A task's log: status changes, steps, git's and the agent's output, the agent's events.
/// JSON, or Server-Sent Events (`follow=true` or `Accept: text/event-stream`): each event's
/// `event:` is its kind, `id:` its seq, `data:` the event as JSON; the stream ends after the
/// task's final status.
#[utoipa::path(get, path = "/v1/tasks/{id}/events", tag = "tasks",
    params(("id" = String, Path, description = "The task's id"), EventParams),
    responses((status = 200, description = "A JSON array; with follow=true or Accept: text/event-stream, an SSE stream of the same events",
            body = Vec<TaskEvent>),
        (status = 404, body = crate::openapi::ErrorDoc)))]
pub async fn task_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    QueryParams(p): QueryParams<EventParams>,
) -> ApiResult<Response> {
    let t = tasks(&state)?.clone();
    let task = task_or_404(&t, &id).await?;
    let kinds: Option<Vec<String>> = match &p.kinds {
        None => None,
        Some(k) => {
            let mut v = Vec::new();
            for part in k.split(',').map(str::trim).filter(|s| !s.is_empty()) {
                if !KINDS.contains(&part) {
                    return Err(ApiError::invalid(format!(
                        "kinds: `{part}` is not an event kind; use any of {}",
                        KINDS.join(", ")
                    )));
                }
                v.push(part.to_string());
            }
            Some(v)
        }
    };
    let wants_sse = headers
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|a| a.contains("text/event-stream"));
    let follow = p.follow.unwrap_or(wants_sse);
    let last_id = headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().parse::<i64>().ok());
    let after = p.after.or(last_id).unwrap_or(0).max(0);
    let keep = move |e: &TaskEvent| kinds.as_ref().is_none_or(|k| k.contains(&e.kind));
    if !follow {
        let limit = p.limit.unwrap_or(1000);
        if !(1..=1000).contains(&limit) {
            return Err(ApiError::invalid(format!(
                "limit: {limit} is out of range; use 1 to 1000"
            )));
        }
        let events = t.events(&id, after, limit).await.map_err(store_error)?;
        let events: Vec<TaskEvent> = events.into_iter().filter(|e| keep(e)).collect();
        return Ok(Json(events).into_response());
    }
    let stream = follow_events(t, task, after, keep);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::default())
        .into_response())
}

/// Stored events after `after`, then live ones, until the task's final status.
fn follow_events(
    t: Tasks,
    task: Task,
    after: i64,
    keep: impl Fn(&TaskEvent) -> bool + Send + 'static,
) -> impl Stream<Item = Result<Event, Infallible>> + Send + 'static {
    async_stream_events(move |tx| async move {
        // Subscribe first, so nothing falls between the stored page and the live feed.
        let mut live = t.subscribe();
        let mut seq = after;
        let id = task.id.clone();
        let mut done = task.status.is_terminal();
        loop {
            let page = match t.events(&id, seq, 500).await {
                Ok(p) => p,
                Err(e) => {
                    tracing::warn!(task = %id, error = %e, "could not read task events");
                    return;
                }
            };
            let n = page.len();
            for e in page {
                seq = e.seq;
                if is_final(&e) {
                    done = true;
                }
                if keep(&e) && tx.send(sse(&e)).await.is_err() {
                    return;
                }
            }
            if n < 500 {
                break;
            }
        }
        if done {
            return;
        }
        loop {
            match live.recv().await {
                Ok(le) if le.task_id == id => {
                    let e = le.event;
                    if e.seq <= seq {
                        continue;
                    }
                    seq = e.seq;
                    let fin = is_final(&e);
                    if keep(&e) && tx.send(sse(&e)).await.is_err() {
                        return;
                    }
                    if fin {
                        return;
                    }
                }
                Ok(_) => {}
                Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => {
                    // Catch up from the store.
                    match t.events(&id, seq, 1000).await {
                        Ok(page) => {
                            for e in page {
                                seq = e.seq;
                                let fin = is_final(&e);
                                if keep(&e) && tx.send(sse(&e)).await.is_err() {
                                    return;
                                }
                                if fin {
                                    return;
                                }
                            }
                        }
                        Err(_) => return,
                    }
                }
                Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
            }
        }
    })
}

fn is_final(e: &TaskEvent) -> bool {
    e.kind == "status"
        && e.data["status"]
            .as_str()
            .and_then(|s| TaskStatus::parse(s).ok())
            .is_some_and(TaskStatus::is_terminal)
}

fn sse(e: &TaskEvent) -> Result<Event, Infallible> {
    Ok(Event::default()
        .event(e.kind.clone())
        .id(e.seq.to_string())
        .data(serde_json::to_string(e).unwrap_or_else(|_| "{}".into())))
}

/// A stream fed by a task that sends into a channel.
fn async_stream_events<F, Fut>(f: F) -> impl Stream<Item = Result<Event, Infallible>>
where
    F: FnOnce(tokio::sync::mpsc::Sender<Result<Event, Infallible>>) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(64);
    tokio::spawn(f(tx));
    futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (e, rx)) })
}

/// The tool calls a task's agent waits on a person for.
#[utoipa::path(get, path = "/v1/tasks/{id}/approvals", tag = "tasks",
    params(("id" = String, Path, description = "The task's id")),
    responses((status = 200, body = Vec<crate::openapi::PendingApprovalDoc>), (status = 404, body = crate::openapi::ErrorDoc)))]
pub async fn task_approvals(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> ApiResult<Json<Vec<PendingApproval>>> {
    let t = tasks(&state)?;
    task_or_404(t, &id).await?;
    let dir = t.config().agent_runs.clone();
    let pending = tokio::task::spawn_blocking(move || all_pending(&dir))
        .await
        .map_err(ApiError::internal)?;
    Ok(Json(
        pending.into_iter().filter(|p| p.run_id == id).collect(),
    ))
}
