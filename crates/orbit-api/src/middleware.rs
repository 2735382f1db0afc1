//! Request middleware: a request id on every log line, and bearer-token authentication.

use actix_web::body::{EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::StatusCode;
use actix_web::middleware::Next;
use actix_web::web::Data;
use actix_web::{Error, ResponseError};
use tracing::Instrument;

use crate::{ApiError, AppState};

/// Runs the request inside a span carrying a fresh request id, and logs its outcome.
pub async fn request_span(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, Error> {
    let span = tracing::info_span!("request", id = %ulid::Ulid::new(), method = %req.method(), path = %req.path());
    let response = next.call(req).instrument(span.clone()).await;
    span.in_scope(|| match &response {
        Ok(response) => tracing::info!(status = response.status().as_u16(), "answered"),
        Err(err) => tracing::info!(error = %err, "failed"),
    });
    response
}

/// With a token configured, `/api` routes need `Authorization: Bearer <token>`. The token is
/// compared in constant time, never read from the query string, never logged.
pub async fn authenticate(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody + 'static>>, Error> {
    let expected = req.app_data::<Data<AppState>>().and_then(|state| state.api_token.clone());
    if let Some(expected) = expected
        && req.path().starts_with("/api")
    {
        let given = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "));
        if !given.is_some_and(|given| constant_time_eq(given.as_bytes(), expected.as_bytes())) {
            let refusal = ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required",
            );
            return Ok(req.into_response(refusal.error_response()).map_into_right_body());
        }
    }
    next.call(req).await.map(ServiceResponse::map_into_left_body)
}

/// Compares without stopping at the first difference, so timing tells nothing of the token.
fn constant_time_eq(given: &[u8], expected: &[u8]) -> bool {
    let mut difference = given.len() ^ expected.len();
    for (index, byte) in expected.iter().enumerate() {
        difference |= usize::from(byte ^ given.get(index).copied().unwrap_or(0));
    }
    difference == 0
}
