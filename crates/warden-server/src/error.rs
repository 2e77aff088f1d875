//! The one error type of the API, and the extractors that turn bad requests into it.
//!
//! Every error leaves as `{"code": "NOT_FOUND", "message": "sandbox `sbx-1` not found"}` with
//! the status the driver assigns (`DriverError::http_status`). Internal details (SQL errors,
//! paths on the host) are logged, never sent.

use axum::Json;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde::de::DeserializeOwned;
use warden_agent::run::approval::AnswerError;
use warden_sandbox::DriverError;

/// An API error: a status, a code and a message that names the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

#[derive(Serialize)]
struct ErrorJson<'a> {
    code: &'a str,
    message: &'a str,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    /// 400 INVALID_ARGUMENT.
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::BAD_REQUEST, "INVALID_ARGUMENT", message)
    }

    /// 404 NOT_FOUND.
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(StatusCode::NOT_FOUND, "NOT_FOUND", message)
    }

    /// 401 UNAUTHENTICATED.
    pub fn unauthenticated() -> ApiError {
        ApiError::new(
            StatusCode::UNAUTHORIZED,
            "UNAUTHENTICATED",
            "missing or wrong bearer token: send `Authorization: Bearer <token>` (the token is in \
             the data directory's `token` file)",
        )
    }

    /// 500 INTERNAL: the detail is logged, the client gets a generic message.
    pub fn internal(detail: impl std::fmt::Display) -> ApiError {
        tracing::error!(%detail, "internal error");
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "INTERNAL",
            "internal error; the server log has the details",
        )
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} {}: {}",
            self.status.as_u16(),
            self.code,
            self.message
        )
    }
}

impl From<DriverError> for ApiError {
    fn from(e: DriverError) -> ApiError {
        if let DriverError::Internal(detail) = &e {
            return ApiError::internal(detail);
        }
        let status =
            StatusCode::from_u16(e.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let code = match serde_json::to_value(e.code()) {
            Ok(serde_json::Value::String(s)) => code_str(&s),
            _ => "INTERNAL",
        };
        ApiError::new(status, code, e.to_string())
    }
}

impl From<AnswerError> for ApiError {
    fn from(e: AnswerError) -> ApiError {
        match e {
            AnswerError::NotPending { .. } => ApiError::not_found(e.to_string()),
            AnswerError::Io { .. } => ApiError::internal(e),
        }
    }
}

/// The static spelling of a sandboxd error code.
fn code_str(s: &str) -> &'static str {
    match s {
        "PERMISSION_DENIED" => "PERMISSION_DENIED",
        "NOT_FOUND" => "NOT_FOUND",
        "INVALID_ARGUMENT" => "INVALID_ARGUMENT",
        "CONFLICT" => "CONFLICT",
        "RESOURCE_EXHAUSTED" => "RESOURCE_EXHAUSTED",
        "UNAVAILABLE" => "UNAVAILABLE",
        _ => "INTERNAL",
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut resp = (
            self.status,
            Json(ErrorJson {
                code: self.code,
                message: &self.message,
            }),
        )
            .into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            resp.headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        resp
    }
}

/// Parses JSON into `T`, naming the field that is wrong: "`shutdown_after`: `x` is not a
/// duration", "unknown field `foo`, expected one of ...".
pub fn parse_json<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, ApiError> {
    let de = &mut serde_json::Deserializer::from_slice(bytes);
    serde_path_to_error::deserialize(de).map_err(naming_the_field)
}

/// Like `parse_json`, from a JSON value already read.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(value).map_err(naming_the_field)
}

/// A 400 that names the field of the request body a deserialisation error is about.
fn naming_the_field<E: std::fmt::Display>(e: serde_path_to_error::Error<E>) -> ApiError {
    let path = e.path().to_string();
    let inner = e.into_inner();
    if path.is_empty() || path == "." {
        ApiError::invalid(format!("request body: {inner}"))
    } else {
        ApiError::invalid(format!("request body: `{path}`: {inner}"))
    }
}

/// A JSON request body whose errors are `ApiError`s naming the field.
#[derive(Debug)]
pub struct JsonBody<T>(pub T);

/// Largest JSON request body (uploads are not JSON and stream without a limit of ours).
const JSON_LIMIT: usize = 1 << 20;

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, _state: &S) -> Result<Self, ApiError> {
        let bytes = axum::body::to_bytes(req.into_body(), JSON_LIMIT)
            .await
            .map_err(|e| ApiError::invalid(format!("request body: {e}")))?;
        if bytes.is_empty() {
            return Err(ApiError::invalid(
                "request body: expected a JSON object, got nothing",
            ));
        }
        parse_json(&bytes).map(JsonBody)
    }
}

/// Query parameters whose errors are `ApiError`s naming the parameter.
#[derive(Debug)]
pub struct QueryParams<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for QueryParams<T> {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let query = parts.uri.query().unwrap_or("");
        let de = serde_urlencoded_de(query);
        de.map(QueryParams)
    }
}

fn serde_urlencoded_de<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    // axum's Query does the decoding; its rejection text names the parameter.
    let uri: axum::http::Uri = format!("/?{query}")
        .parse()
        .map_err(|_| ApiError::invalid("query string: not valid"))?;
    axum::extract::Query::<T>::try_from_uri(&uri)
        .map(|q| q.0)
        .map_err(|e| ApiError::invalid(format!("query string: {}", e.body_text())))
}
