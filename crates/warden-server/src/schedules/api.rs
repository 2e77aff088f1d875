//! The schedule API: list, create or replace, get (with the next fire times), delete, pause,
//! resume, and run now.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde::{Deserialize, Serialize};

use super::model::{Schedule, ScheduleSpec};
use super::scheduler::{MAX_UPCOMING, ScheduleError, Schedules};
use crate::AppState;
use crate::api_tasks::TaskCreated;
use crate::error::{ApiError, JsonBody, QueryParams, from_value};

type ApiResult<T> = Result<T, ApiError>;

fn schedules(state: &AppState) -> ApiResult<&Schedules> {
    state.schedules().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "UNAVAILABLE",
            "schedules are not enabled on this server (they need its task runner)",
        )
    })
}

fn schedule_error(e: ScheduleError) -> ApiError {
    match e {
        ScheduleError::Invalid(errors) => ApiError::invalid(
            errors
                .iter()
                .map(ToString::to_string)
                .collect::<Vec<_>>()
                .join("; "),
        ),
        ScheduleError::Store(e) => ApiError::internal(e),
    }
}

fn check_name(name: &str) -> ApiResult<()> {
    if warden_policy::is_dns_label(name) {
        Ok(())
    } else {
        Err(ApiError::invalid(format!(
            "name: `{name}` is not a schedule name; use 1 to 63 lower-case letters, digits and `-`, starting and ending with a letter or digit"
        )))
    }
}

fn not_found(name: &str) -> ApiError {
    ApiError::not_found(format!("schedule `{name}` not found"))
}

/// `GET /v1/schedules`.
#[derive(Debug, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ScheduleList {
    /// Every schedule, by name.
    pub schedules: Vec<Schedule>,
}

/// Every schedule with its next run.
#[utoipa::path(get, path = "/v1/schedules", tag = "schedules",
    responses((status = 200, body = ScheduleList)))]
pub async fn list_schedules(State(state): State<AppState>) -> ApiResult<Json<ScheduleList>> {
    let s = schedules(&state)?;
    Ok(Json(ScheduleList {
        schedules: s.list().await.map_err(schedule_error)?,
    }))
}

/// Creates or replaces a schedule. The expression must fire (`0 0 30 2 *` never does: 400),
/// the time zone must exist, and the task is checked as `POST /v1/tasks` would check it. A
/// replaced schedule keeps its history and goes on from its next fire time after now.
#[utoipa::path(put, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name (a DNS label)")),
    request_body = ScheduleSpec,
    responses((status = 201, description = "Created", body = Schedule),
        (status = 200, description = "Replaced", body = Schedule),
        (status = 400, description = "A field is invalid; the message names it (`cron`, `timezone`, `task.repo`...)",
            body = crate::openapi::ErrorDoc)))]
pub async fn put_schedule(
    State(state): State<AppState>,
    Path(name): Path<String>,
    JsonBody(body): JsonBody<serde_json::Value>,
) -> ApiResult<Response> {
    let s = schedules(&state)?;
    check_name(&name)?;
    let spec: ScheduleSpec = from_value(body)?;
    let (schedule, created) = s.put(&name, spec).await.map_err(schedule_error)?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(schedule)).into_response())
}

/// `GET /v1/schedules/{name}`.
#[derive(Debug, Default, Deserialize, utoipa::IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct GetParams {
    /// List the next N fire times (1 to 100) as `upcoming`, in the schedule's zone.
    next: Option<usize>,
}

/// A schedule, its next run and last run; with `?next=N`, its next N fire times.
#[utoipa::path(get, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name"), GetParams),
    responses((status = 200, body = Schedule), (status = 404, body = crate::openapi::ErrorDoc)))]
pub async fn get_schedule(
    State(state): State<AppState>,
    Path(name): Path<String>,
    QueryParams(p): QueryParams<GetParams>,
) -> ApiResult<Json<Schedule>> {
    let s = schedules(&state)?;
    check_name(&name)?;
    if let Some(n) = p.next
        && !(1..=MAX_UPCOMING).contains(&n)
    {
        return Err(ApiError::invalid(format!(
            "next: {n} is out of range; use 1 to {MAX_UPCOMING}"
        )));
    }
    s.get(&name, p.next)
        .await
        .map_err(schedule_error)?
        .map(Json)
        .ok_or_else(|| not_found(&name))
}

/// Deletes a schedule; the tasks it filed stay.
#[utoipa::path(delete, path = "/v1/schedules/{name}", tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses((status = 204, description = "Deleted"), (status = 404, body = crate::openapi::ErrorDoc)))]
pub async fn delete_schedule(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<StatusCode> {
    let s = schedules(&state)?;
    check_name(&name)?;
    if s.delete(&name).await.map_err(schedule_error)? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(not_found(&name))
    }
}

/// Pauses a schedule: no runs until it is resumed (`next_run` is null meanwhile).
#[utoipa::path(post, path = "/v1/schedules/{name}/pause", tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses((status = 200, body = Schedule), (status = 404, body = crate::openapi::ErrorDoc)))]
pub async fn pause_schedule(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Schedule>> {
    set_enabled(&state, &name, false).await
}

/// Resumes a paused schedule from its next fire time after now (paused runs are not run).
#[utoipa::path(post, path = "/v1/schedules/{name}/resume", tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses((status = 200, body = Schedule), (status = 404, body = crate::openapi::ErrorDoc)))]
pub async fn resume_schedule(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Json<Schedule>> {
    set_enabled(&state, &name, true).await
}

async fn set_enabled(state: &AppState, name: &str, enabled: bool) -> ApiResult<Json<Schedule>> {
    let s = schedules(state)?;
    check_name(name)?;
    s.set_enabled(name, enabled)
        .await
        .map_err(schedule_error)?
        .map(Json)
        .ok_or_else(|| not_found(name))
}

/// Files the schedule's task now, outside its times (paused or not); its times do not change.
#[utoipa::path(post, path = "/v1/schedules/{name}/run", tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses((status = 202, description = "Queued", body = TaskCreated),
        (status = 400, description = "The task cannot be filed (such as a deleted template); the message names the field",
            body = crate::openapi::ErrorDoc),
        (status = 404, body = crate::openapi::ErrorDoc)))]
pub async fn run_schedule(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> ApiResult<Response> {
    let s = schedules(&state)?;
    check_name(&name)?;
    let (task, created) = s
        .run_now(&name)
        .await
        .map_err(schedule_error)?
        .ok_or_else(|| not_found(&name))?;
    if created {
        state.metrics().task_submitted();
    }
    Ok((
        StatusCode::ACCEPTED,
        Json(TaskCreated {
            id: task.id,
            status: task.status,
            created,
        }),
    )
        .into_response())
}
