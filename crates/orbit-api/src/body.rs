//! Reading request bodies under the size and time limits of the app state.

use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::dev::Payload;
use actix_web::web::{Bytes, BytesMut, Data};
use futures_util::StreamExt;

use crate::AppState;
use crate::error::{ApiError, ApiResult, Code};

/// Reads the whole body, refusing it with 413 past the size limit and 408 past the time
/// limit: the HTTP layer bounds only the time to the end of the headers, and a client that
/// sends its body a byte at a time would otherwise hold its connection for ever.
///
/// The limits are the app state's; a server without one is misbuilt, and says so with a 500
/// rather than reading bodies under limits nobody chose.
pub async fn read(req: &HttpRequest, payload: Payload) -> ApiResult<Bytes> {
    let Some(state) = req.app_data::<Data<AppState>>() else {
        tracing::error!("no AppState is registered, so bodies have no limits; refusing them");
        return Err(ApiError::new(Code::Internal, "the server has no body limit configured"));
    };
    let (limit, timeout) = (state.body_limit, state.body_read_timeout);
    tokio::time::timeout(timeout, read_within(req, payload, limit))
        .await
        .unwrap_or_else(|_| Err(timed_out(timeout)))
}

fn timed_out(timeout: Duration) -> ApiError {
    ApiError::new(
        Code::RequestTimeout,
        format!("the request body did not arrive within {} s", timeout.as_secs_f64()),
    )
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        Code::PayloadTooLarge,
        format!("the request body is over the limit of {limit} bytes"),
    )
}

async fn read_within(req: &HttpRequest, mut payload: Payload, limit: usize) -> ApiResult<Bytes> {
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok());
    if declared.is_some_and(|len| len > limit) {
        return Err(too_large(limit));
    }
    let mut body = BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk
            .map_err(|err| ApiError::invalid(format!("cannot read the request body: {err}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}
