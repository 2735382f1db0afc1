//! The one place where failure kinds become HTTP statuses and the `{error, code}` body.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use orbit_store::ErrorKind;
use serde_json::json;

/// An error answered as `{"error": "...", "code": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into() }
    }

    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    fn from_kind(kind: ErrorKind, message: String) -> Self {
        let (status, code) = match kind {
            ErrorKind::Invalid => (StatusCode::BAD_REQUEST, "invalid_input"),
            ErrorKind::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            ErrorKind::Conflict => (StatusCode::CONFLICT, "conflict"),
            ErrorKind::Busy => (StatusCode::TOO_MANY_REQUESTS, "busy"),
            ErrorKind::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
        };
        if status == StatusCode::INTERNAL_SERVER_ERROR {
            // The cause goes to the log only: it may name paths of the data directory, which
            // are nobody's business over HTTP.
            tracing::error!(error = %message, "internal error");
            return Self::new(
                status,
                code,
                "an internal error occurred; the server log has its cause",
            );
        }
        Self::new(status, code, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.status
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.status).json(json!({"error": self.message, "code": self.code}))
    }
}

impl From<orbit_store::Error> for ApiError {
    fn from(err: orbit_store::Error) -> Self {
        Self::from_kind(err.kind(), err.to_string())
    }
}

impl From<orbit_agent::Error> for ApiError {
    fn from(err: orbit_agent::Error) -> Self {
        Self::from_kind(err.kind(), err.to_string())
    }
}

impl From<orbit_scheduler::RunNowError> for ApiError {
    fn from(err: orbit_scheduler::RunNowError) -> Self {
        Self::from_kind(err.kind(), err.to_string())
    }
}

impl From<orbit_store::ScheduleError> for ApiError {
    fn from(err: orbit_store::ScheduleError) -> Self {
        Self::from_kind(ErrorKind::Invalid, err.to_string())
    }
}

/// The result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;
