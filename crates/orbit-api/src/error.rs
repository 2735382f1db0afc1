//! The one place where failure kinds become HTTP statuses and the `{error, code}` body.
//!
//! [`Code`] is the table of every error code the API answers with, each with its one status;
//! the OpenAPI document lists the same table.

use actix_web::http::StatusCode;
use actix_web::{HttpResponse, ResponseError};
use orbit_store::ErrorKind;
use schemars::JsonSchema;
use serde::Serialize;

/// Every error code, with its status. A status may have several codes (403 says which check
/// refused), but a code has exactly one status.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
#[schemars(rename = "ErrorCode")]
pub enum Code {
    /// 400: a field, name or id that does not parse or is not allowed (a missing, mistyped,
    /// unknown or overlong field, a name or id of the path).
    InvalidInput,
    /// 400: the body is not a JSON object (it does not parse, it is an array, it is missing).
    InvalidJson,
    /// 400: a task's schedule does not parse, or never fires.
    InvalidSchedule,
    /// 400: the request is not well-formed HTTP/1.1 (answered by the connection itself, before
    /// any route is chosen).
    MalformedRequest,
    /// 401: a token is configured and the request has none or a wrong one.
    Unauthorized,
    /// 403: the `Host` is not one of the server's names.
    ForbiddenHost,
    /// 403: the `Origin` is not the server's own.
    CrossOrigin,
    /// 404: the agent, session, message, task, worktree, pending request or route is unknown.
    NotFound,
    /// 405: the path exists, but not with this method (`Allow` lists the methods it has).
    MethodNotAllowed,
    /// 408: the request's head or its body did not arrive in time.
    RequestTimeout,
    /// 409: it exists already, or it is running, or it holds uncommitted work.
    Conflict,
    /// 413: the body is over the limit.
    PayloadTooLarge,
    /// 415: a body that is not `application/json`.
    UnsupportedMediaType,
    /// 431: the request's head is over the size the server reads.
    HeadersTooLarge,
    /// 429: no agent process slot freed in time.
    Busy,
    /// 500: an internal fault, logged with its cause.
    Internal,
    /// 502: the node that runs what was asked for cannot be reached from this one, or refused
    /// this node's forwarded request.
    NodeUnreachable,
    /// 503: the store's database cannot be reached or did not answer in time; the request may
    /// succeed once it is back.
    StoreUnavailable,
}

impl Code {
    /// Every code, in the order of their statuses.
    pub const ALL: [Code; 18] = [
        Code::InvalidInput,
        Code::InvalidJson,
        Code::InvalidSchedule,
        Code::MalformedRequest,
        Code::Unauthorized,
        Code::ForbiddenHost,
        Code::CrossOrigin,
        Code::NotFound,
        Code::MethodNotAllowed,
        Code::RequestTimeout,
        Code::Conflict,
        Code::PayloadTooLarge,
        Code::UnsupportedMediaType,
        Code::Busy,
        Code::HeadersTooLarge,
        Code::Internal,
        Code::NodeUnreachable,
        Code::StoreUnavailable,
    ];

    /// The table: each code's status and its text on the wire.
    pub fn describe(self) -> (StatusCode, &'static str) {
        match self {
            Code::InvalidInput => (StatusCode::BAD_REQUEST, "invalid_input"),
            Code::InvalidJson => (StatusCode::BAD_REQUEST, "invalid_json"),
            Code::InvalidSchedule => (StatusCode::BAD_REQUEST, "invalid_schedule"),
            Code::MalformedRequest => (StatusCode::BAD_REQUEST, "malformed_request"),
            Code::Unauthorized => (StatusCode::UNAUTHORIZED, "unauthorized"),
            Code::ForbiddenHost => (StatusCode::FORBIDDEN, "forbidden_host"),
            Code::CrossOrigin => (StatusCode::FORBIDDEN, "cross_origin"),
            Code::NotFound => (StatusCode::NOT_FOUND, "not_found"),
            Code::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
            Code::RequestTimeout => (StatusCode::REQUEST_TIMEOUT, "request_timeout"),
            Code::Conflict => (StatusCode::CONFLICT, "conflict"),
            Code::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            Code::UnsupportedMediaType => {
                (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type")
            }
            Code::Busy => (StatusCode::TOO_MANY_REQUESTS, "busy"),
            Code::HeadersTooLarge => {
                (StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "headers_too_large")
            }
            Code::Internal => (StatusCode::INTERNAL_SERVER_ERROR, "internal"),
            Code::NodeUnreachable => (StatusCode::BAD_GATEWAY, "node_unreachable"),
            Code::StoreUnavailable => (StatusCode::SERVICE_UNAVAILABLE, "store_unavailable"),
        }
    }

    pub fn status(self) -> StatusCode {
        self.describe().0
    }

    pub fn as_str(self) -> &'static str {
        self.describe().1
    }

    /// The code of an error that carries only a status (actix's own errors); `None` for a
    /// status Orbit never answers with.
    pub fn for_status(status: StatusCode) -> Option<Code> {
        Self::ALL.into_iter().find(|code| code.status() == status)
    }
}

/// The answer to a request the HTTP connection refuses before routing it (a head that does
/// not parse, is too large or is too slow), as `(code, body)`; `None` for other statuses.
///
/// actix-http writes these answers itself with an empty body and offers no hook for them; the
/// server's listener puts this body in their place, so they too are `{error, code}`.
pub fn connection_error_body(status: u16) -> Option<(Code, Vec<u8>)> {
    let (code, message) = match status {
        400 => (Code::MalformedRequest, "the request is not well-formed HTTP/1.1"),
        408 => (Code::RequestTimeout, "the request's head did not arrive in time"),
        431 => (Code::HeadersTooLarge, "the request's head is too large"),
        _ => return None,
    };
    let view = ErrorView { error: message.to_owned(), code };
    serde_json::to_vec(&view).ok().map(|body| (code, body))
}

/// An error answered as `{"error": "...", "code": "..."}`.
#[derive(Debug)]
pub struct ApiError {
    pub code: Code,
    pub message: String,
}

/// The body of every error answer.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorView {
    /// A sentence for a person.
    pub error: String,
    pub code: Code,
}

impl ApiError {
    pub fn new(code: Code, message: impl Into<String>) -> Self {
        Self { code, message: message.into() }
    }

    /// A 400 `invalid_json`: the body is not a JSON object.
    pub fn invalid_json(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidJson, message)
    }

    /// A 400 `invalid_schedule`.
    pub fn invalid_schedule(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidSchedule, message)
    }

    /// A 400 `invalid_input`.
    pub fn invalid(message: impl Into<String>) -> Self {
        Self::new(Code::InvalidInput, message)
    }

    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(Code::NotFound, message)
    }

    fn from_kind(kind: ErrorKind, message: String) -> Self {
        let code = match kind {
            ErrorKind::Invalid => Code::InvalidInput,
            ErrorKind::NotFound => Code::NotFound,
            ErrorKind::Conflict => Code::Conflict,
            ErrorKind::Busy => Code::Busy,
            ErrorKind::Internal => Code::Internal,
            ErrorKind::Unavailable => Code::StoreUnavailable,
        };
        if code == Code::Internal {
            // The cause goes to the log only: it may name paths of the data directory, which
            // are nobody's business over HTTP.
            tracing::error!(error = %message, "internal error");
            return Self::new(code, "an internal error occurred; the server log has its cause");
        }
        Self::new(code, message)
    }
}

impl std::fmt::Display for ApiError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        self.code.status()
    }

    fn error_response(&self) -> HttpResponse {
        HttpResponse::build(self.code.status())
            .json(ErrorView { error: self.message.clone(), code: self.code })
    }
}

impl From<orbit_store::Error> for ApiError {
    fn from(err: orbit_store::Error) -> Self {
        Self::from_kind(err.kind(), err.to_string())
    }
}

impl From<orbit_agent::Error> for ApiError {
    fn from(err: orbit_agent::Error) -> Self {
        match err {
            orbit_agent::Error::InvalidSchedule(message) => Self::invalid_schedule(message),
            err => Self::from_kind(err.kind(), err.to_string()),
        }
    }
}

impl From<orbit_scheduler::Error> for ApiError {
    fn from(err: orbit_scheduler::Error) -> Self {
        Self::from_kind(err.kind(), err.to_string())
    }
}

impl From<orbit_store::ScheduleError> for ApiError {
    fn from(err: orbit_store::ScheduleError) -> Self {
        Self::invalid_schedule(err.to_string())
    }
}

/// The result of a handler.
pub type ApiResult<T> = Result<T, ApiError>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_code_serializes_as_its_table_text() {
        for code in Code::ALL {
            assert_eq!(serde_json::to_value(code).unwrap(), code.as_str());
        }
    }
}
