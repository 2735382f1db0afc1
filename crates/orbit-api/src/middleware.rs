//! Request middleware: a request id on every log line, the browser checks, bearer-token
//! authentication, and the `{error, code}` body on every error answer, in one layer (`gate`).

use actix_web::body::{BodySize, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::http::header::{self, HeaderValue};
use actix_web::middleware::Next;
use actix_web::web::Data;
use actix_web::{Error, HttpResponse, ResponseError};
use tracing::Instrument;

use crate::{ApiError, AppState, Code};

/// The one route that never needs a token.
const HEALTH: &str = "/health";

/// Every request passes this one middleware, in this order: a span carrying a fresh request
/// id, so that every line logged while answering names the request; the browser checks of
/// `guard` (403, 415); the token (401); then the route, whose error answers get the
/// `{error, code}` body when actix made them without one (`json_errors`). Its outcome is logged
/// when access logging is on (`AppState::access_log`).
///
/// One middleware rather than four: each layer of actix's `from_fn` boxes a future and calls
/// the next through a boxed service, which together cost about as much per small answer as the
/// checks themselves (docs/benchmarks.md).
///
/// The access line is off by default: written synchronously for every request, it cost more
/// than the rest of a small answer. Health checks and refused requests (401, 403) are logged
/// at debug only even then: anyone who can connect can send them by the million. Failures are
/// always logged.
pub async fn gate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody + 'static>>, Error> {
    let span = tracing::info_span!("request", id = %ulid::Ulid::new(), method = %req.method(), path = %req.path());
    let health = req.path() == HEALTH;
    let access_log = req.app_data::<Data<AppState>>().is_some_and(|state| state.access_log);
    let mut response = checked(req, next).instrument(span.clone()).await;
    if let Ok(response) = &mut response {
        private_answer(response.headers_mut());
    }
    span.in_scope(|| match &response {
        Ok(response) => {
            let status = response.status();
            if !access_log
                || health
                || matches!(status, StatusCode::UNAUTHORIZED | StatusCode::FORBIDDEN)
            {
                tracing::debug!(status = status.as_u16(), "answered");
            } else {
                tracing::info!(status = status.as_u16(), "answered");
            }
        }
        Err(err) => tracing::info!(error = %err, "failed"),
    });
    response
}

/// The checks, then the route with its errors in Orbit's shape.
async fn checked(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody + 'static>>, Error> {
    let refusal = req.app_data::<Data<AppState>>().and_then(|state| {
        // Foreign hosts and origins are refused before the token is looked at.
        crate::guard::refusal(&state.allowed_hosts, req.headers())
            .or_else(|| token_refusal(state, &req))
    });
    if let Some(refusal) = refusal {
        return Ok(req.into_response(refusal.error_response()).map_into_right_body());
    }
    json_errors(next.call(req).await)
}

/// API answers hold conversations, prompts and tool output: no cache, the browser's included,
/// keeps them (`no-store`, unless the route chose its caching, as the console's files do),
/// and no browser reads them as anything but what they say they are (`nosniff`).
fn private_answer(headers: &mut actix_web::http::header::HeaderMap) {
    use actix_web::http::header::{CACHE_CONTROL, HeaderValue, X_CONTENT_TYPE_OPTIONS};
    if !headers.contains_key(CACHE_CONTROL) {
        headers.insert(CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    if !headers.contains_key(X_CONTENT_TYPE_OPTIONS) {
        headers.insert(X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    }
}

/// With a token configured, every request but `GET /health` and the web console's files
/// (which hold no data) needs `Authorization: Bearer <token>`, or, for a session's stream
/// only, another node's proof of the token (`node_proof`). The token is compared in constant time, never read from
/// the query string, never logged.
///
/// The exemption is one exact raw path rather than a prefix of the protected ones: actix
/// routes on the percent-decoded path, so a check of the raw path against `/api` could be
/// skipped by spelling it `/%61pi`. No spelling of a route but `/health` itself escapes this.
fn token_refusal(state: &AppState, req: &ServiceRequest) -> Option<ApiError> {
    let expected = state.api_token.as_deref()?;
    if req.path() == HEALTH || crate::console::is_console_file(req.path()) {
        return None;
    }
    if token_allows(expected, state.pool.instance(), req.method(), req.path(), req.headers()) {
        return None;
    }
    Some(ApiError::new(Code::Unauthorized, "a valid bearer token is required"))
}

/// Whether a request of `method` and `path` with `headers` shows the token `expected` to
/// this instance (`this`): the bearer token itself, or, on a session's stream alone, another
/// node's proof of it made for this instance and path (`node_proof`), which is how a watcher's
/// stream another node of the cluster forwards comes.
fn token_allows(
    expected: &str,
    this: orbit_store::InstanceId,
    method: &actix_web::http::Method,
    path: &str,
    headers: &header::HeaderMap,
) -> bool {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer.is_some_and(|given| constant_time_eq(given.as_bytes(), expected.as_bytes())) {
        return true;
    }
    let proof = headers.get(crate::node_proof::HEADER).and_then(|v| v.to_str().ok());
    proof.is_some_and(|proof| {
        method == actix_web::http::Method::GET
            && crate::node_proof::is_stream_path(path)
            && crate::node_proof::verifies(
                expected,
                this,
                path,
                proof,
                crate::node_proof::unix_now(),
            )
    })
}

/// Compares without stopping at the first difference, so timing tells nothing of the token.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut difference = given.len() ^ expected.len();
    for (index, byte) in expected.iter().enumerate() {
        difference |= usize::from(byte ^ given.get(index).copied().unwrap_or(0));
    }
    difference == 0
}

/// Gives every error answer the `{error, code}` body: actix's own (405 from a resource, the
/// errors of its extractors) come empty or as plain text.
fn json_errors<B: MessageBody + 'static>(
    response: Result<ServiceResponse<B>, Error>,
) -> Result<ServiceResponse<EitherBody<B>>, Error> {
    let response = match response {
        Ok(response) => response,
        // Rendered by actix from `ApiError`, so in Orbit's shape.
        Err(err) => {
            let status = err.as_response_error().status_code();
            return Err(ApiError::new(code_of(status), err.to_string()).into());
        }
    };
    let status = response.status();
    let is_json = response.headers().get(header::CONTENT_TYPE)
        == Some(&HeaderValue::from_static("application/json"));
    let is_empty = matches!(response.response().body().size(), BodySize::None | BodySize::Sized(0));
    if !(status.is_client_error() || status.is_server_error()) || (is_json && !is_empty) {
        return Ok(response.map_into_left_body());
    }
    let (request, old) = response.into_parts();
    let reason = status.canonical_reason().unwrap_or("error").to_lowercase();
    let mut answer: HttpResponse = ApiError::new(code_of(status), reason).error_response();
    // Headers that belong to the answer (Allow on a 405, say) are kept.
    for (name, value) in old.headers() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            answer.headers_mut().insert(name.clone(), value.clone());
        }
    }
    Ok(ServiceResponse::new(request, answer).map_into_right_body())
}

/// The code of an error that carries only a status: the table's for that status, else
/// `invalid_input` for another client error and `internal` for another server error (actix
/// answers none of those on Orbit's routes).
fn code_of(status: StatusCode) -> Code {
    Code::for_status(status).unwrap_or(if status.is_server_error() {
        Code::Internal
    } else {
        Code::InvalidInput
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use actix_web::http::Method;
    use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};
    use orbit_store::{InstanceId, SessionId};

    use super::*;

    fn with(name: &str, value: &str) -> HeaderMap {
        let mut headers = HeaderMap::new();
        headers.insert(HeaderName::try_from(name).unwrap(), HeaderValue::try_from(value).unwrap());
        headers
    }

    /// Another node's proof opens this instance's stream route, and nothing else: no other
    /// route, method, instance or token; the bearer token opens every route.
    #[test]
    fn a_nodes_proof_opens_the_stream_route_alone() {
        let this = InstanceId::new();
        let stream = format!("/api/agents/bot/sessions/{}/stream", SessionId::new());
        let now = crate::node_proof::unix_now();
        let proof = |path: &str, to: InstanceId| {
            with(
                crate::node_proof::HEADER,
                &crate::node_proof::sign("secret", to, path, now).unwrap(),
            )
        };
        assert!(token_allows("secret", this, &Method::GET, &stream, &proof(&stream, this)));
        assert!(!token_allows("other", this, &Method::GET, &stream, &proof(&stream, this)));
        let elsewhere = proof(&stream, InstanceId::new());
        assert!(!token_allows("secret", this, &Method::GET, &stream, &elsewhere));
        assert!(!token_allows("secret", this, &Method::DELETE, &stream, &proof(&stream, this)));
        let agents = "/api/agents";
        assert!(!token_allows("secret", this, &Method::GET, agents, &proof(agents, this)));
        assert!(!token_allows("secret", this, &Method::GET, &stream, &HeaderMap::new()));
        let bearer = with("authorization", "Bearer secret");
        assert!(token_allows("secret", this, &Method::GET, agents, &bearer));
        let wrong = with("authorization", "Bearer secrets");
        assert!(!token_allows("secret", this, &Method::GET, agents, &wrong));
    }
}
