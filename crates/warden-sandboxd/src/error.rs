//! The one error type of the server: a [`proto::ErrorBody`] with its HTTP status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};

use crate::proto::{ErrorBody, ErrorCode};

/// An error a request ends with. Its message names the field and what is allowed; internal
/// details (host paths, errno names beyond the kind) stay in the log.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code:?}: {message}")]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> ApiError {
        ApiError {
            code,
            message: message.into(),
        }
    }
    pub fn invalid(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::InvalidArgument, message)
    }
    pub fn denied(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::PermissionDenied, message)
    }
    pub fn not_found(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::NotFound, message)
    }
    pub fn internal(message: impl Into<String>) -> ApiError {
        ApiError::new(ErrorCode::Internal, message)
    }
    pub fn status(&self) -> StatusCode {
        StatusCode::from_u16(self.code.http_status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR)
    }
    pub fn body(&self) -> ErrorBody {
        ErrorBody {
            code: self.code,
            message: self.message.clone(),
        }
    }
    /// The gRPC status for this error.
    pub fn to_status(&self) -> tonic::Status {
        let code = match self.code {
            ErrorCode::PermissionDenied => tonic::Code::PermissionDenied,
            ErrorCode::NotFound => tonic::Code::NotFound,
            ErrorCode::InvalidArgument => tonic::Code::InvalidArgument,
            ErrorCode::Conflict => tonic::Code::AlreadyExists,
            ErrorCode::ResourceExhausted => tonic::Code::ResourceExhausted,
            ErrorCode::Internal => tonic::Code::Internal,
            ErrorCode::Unavailable => tonic::Code::Unavailable,
        };
        tonic::Status::new(code, self.message.clone())
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.status(), axum::Json(self.body())).into_response()
    }
}
