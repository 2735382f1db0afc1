//! Request parsing: path names and ids into the store's newtypes, and JSON bodies with
//! errors in Orbit's shape.

use actix_web::web::Bytes;
use orbit_store::{AgentName, MessageId, SessionId, TaskId};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult};

pub fn agent(raw: &str) -> ApiResult<AgentName> {
    Ok(AgentName::parse(raw)?)
}

pub fn session(raw: &str) -> ApiResult<SessionId> {
    Ok(SessionId::parse(raw)?)
}

pub fn message(raw: &str) -> ApiResult<MessageId> {
    Ok(MessageId::parse(raw)?)
}

pub fn task(raw: &str) -> ApiResult<TaskId> {
    Ok(TaskId::parse(raw)?)
}

/// Parses a JSON body; an empty body is `T::default()` when `empty_ok`.
pub fn json_body<T: DeserializeOwned + Default>(body: &Bytes, empty_ok: bool) -> ApiResult<T> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return if empty_ok {
            Ok(T::default())
        } else {
            Err(ApiError::bad_request("a JSON body is required"))
        };
    }
    serde_json::from_slice(body)
        .map_err(|err| ApiError::bad_request(format!("invalid JSON body: {err}")))
}
