//! Reading request bodies under the size limit.

use std::time::Duration;

use actix_web::HttpRequest;
use actix_web::http::StatusCode;
use actix_web::web::{Bytes, BytesMut, Payload};
use futures_util::StreamExt;
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult};

/// The body limits in force, registered as app data.
#[derive(Debug, Clone, Copy)]
pub struct BodyLimit {
    /// The largest body, in bytes (413 past it).
    pub bytes: usize,
    /// How long the whole body may take to arrive (408 past it).
    pub read_timeout: Duration,
}

impl Default for BodyLimit {
    fn default() -> Self {
        Self { bytes: 1024 * 1024, read_timeout: Duration::from_secs(30) }
    }
}

fn too_large(limit: usize) -> ApiError {
    ApiError::new(
        StatusCode::PAYLOAD_TOO_LARGE,
        "payload_too_large",
        format!("the request body is over the limit of {limit} bytes"),
    )
}

/// Reads the whole body, refusing it with 413 past the size limit and 408 past the time
/// limit: the HTTP layer bounds only the time to the end of the headers, and a client that
/// sends its body a byte at a time would otherwise hold its connection for ever.
pub async fn read(req: &HttpRequest, payload: Payload) -> ApiResult<Bytes> {
    let limits = req.app_data::<BodyLimit>().copied().unwrap_or_default();
    tokio::time::timeout(limits.read_timeout, read_within(req, payload, limits.bytes))
        .await
        .unwrap_or_else(|_| {
            Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "request_timeout",
                format!(
                    "the request body did not arrive within {} s",
                    limits.read_timeout.as_secs_f64()
                ),
            ))
        })
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
            .map_err(|err| ApiError::bad_request(format!("cannot read the request body: {err}")))?;
        if body.len() + chunk.len() > limit {
            return Err(too_large(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// Reads and parses a JSON body; an empty body is `T::default()` when `empty_ok`.
pub async fn json<T: DeserializeOwned + Default>(
    req: &HttpRequest,
    payload: Payload,
    empty_ok: bool,
) -> ApiResult<T> {
    let body = read(req, payload).await?;
    crate::extract::json_body(&body, empty_ok)
}

/// A one-key JSON object (`{"sessions": [...]}`) that serializes its value in place, without
/// building a `serde_json::Value` tree first (which dominated the cost of large listings).
pub struct Envelope<'a, T: serde::Serialize>(pub &'static str, pub &'a T);

impl<T: serde::Serialize> serde::Serialize for Envelope<'_, T> {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = serializer.serialize_map(Some(1))?;
        map.serialize_entry(self.0, self.1)?;
        map.end()
    }
}
