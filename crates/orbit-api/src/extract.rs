//! Request extractors: path parameters parsed into the store's newtypes, and JSON bodies read
//! under the app state's limits, both refusing bad input with a 400 in Orbit's shape before a
//! handler runs.
//!
//! A body must be a JSON object, and none of its members may be `null`: an optional field is
//! left out, never `null` (which would read as "leave it" to one client and "clear it" to
//! another). Request types refuse unknown fields. The OpenAPI document says the same.

use std::future::{Ready, ready};

use actix_web::dev::Payload;
use actix_web::web::Bytes;
use actix_web::{FromRequest, HttpRequest};
use futures_util::future::LocalBoxFuture;
use orbit_store::{AgentName, MessageId, SessionId, TaskId};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult, Code};

/// `{name}`: an agent.
pub struct AgentPath {
    pub name: AgentName,
}

/// `{name}/sessions/{id}`.
pub struct SessionPath {
    pub name: AgentName,
    pub id: SessionId,
}

/// `{name}/inbox/{msg}`.
pub struct MessagePath {
    pub name: AgentName,
    pub id: MessageId,
}

/// `{name}/tasks/{id}`.
pub struct TaskPath {
    pub name: AgentName,
    pub id: TaskId,
}

/// `{name}/sessions/{id}/permissions/{requestId}`.
pub struct PermissionPath {
    pub name: AgentName,
    pub id: SessionId,
    /// The request's ULID, in its canonical (upper case) spelling.
    pub request_id: String,
}

/// `{name}/worktrees/{id}`.
pub struct WorktreePath {
    pub name: AgentName,
    /// The id of the session or task the worktree was made for, canonically spelt.
    pub id: String,
}

/// `nodes/{node}`: a node's name, as `--node-name` takes it.
pub struct NodePath {
    pub node: String,
}

/// The text of path parameter `key`; a route without it is a bug in the endpoint table.
fn param<'a>(req: &'a HttpRequest, key: &str) -> ApiResult<&'a str> {
    req.match_info().get(key).ok_or_else(|| {
        tracing::error!(key, path = req.path(), "a route lacks a path parameter its handler reads");
        ApiError::new(Code::Internal, "the route is misconfigured")
    })
}

fn agent(req: &HttpRequest) -> ApiResult<AgentName> {
    Ok(AgentName::parse(param(req, "name")?)?)
}

/// A ULID that is not one of the store's typed ids, canonically spelt.
fn ulid(req: &HttpRequest, key: &str, what: &str) -> ApiResult<String> {
    let raw = param(req, key)?;
    // Past 7 the first character would overflow 128 bits, which the ulid crate wraps.
    let first_ok = raw.starts_with(|c: char| ('0'..='7').contains(&c));
    match ulid::Ulid::from_string(raw) {
        Ok(id) if first_ok => Ok(id.to_string()),
        _ => Err(ApiError::invalid(format!(
            "invalid {what} '{}': not a ULID",
            raw.chars().take(80).collect::<String>()
        ))),
    }
}

/// Implements `FromRequest` for a path type from a function that parses it.
macro_rules! from_path {
    ($name:ident, $parse:expr) => {
        impl FromRequest for $name {
            type Error = ApiError;
            type Future = Ready<ApiResult<Self>>;

            fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
                let parse: fn(&HttpRequest) -> ApiResult<Self> = $parse;
                ready(parse(req))
            }
        }
    };
}

from_path!(AgentPath, |req| Ok(AgentPath { name: agent(req)? }));
from_path!(SessionPath, |req| {
    Ok(SessionPath { name: agent(req)?, id: SessionId::parse(param(req, "id")?)? })
});
from_path!(MessagePath, |req| {
    Ok(MessagePath { name: agent(req)?, id: MessageId::parse(param(req, "msg")?)? })
});
from_path!(TaskPath, |req| Ok(TaskPath {
    name: agent(req)?,
    id: TaskId::parse(param(req, "id")?)?
}));
from_path!(PermissionPath, |req| {
    Ok(PermissionPath {
        name: agent(req)?,
        id: SessionId::parse(param(req, "id")?)?,
        request_id: ulid(req, "requestId", "permission request id")?,
    })
});
from_path!(WorktreePath, |req| {
    Ok(WorktreePath { name: agent(req)?, id: ulid(req, "id", "worktree id")? })
});

from_path!(NodePath, |req| {
    let node = param(req, "node")?;
    orbit_store::limits::check_node_name(node)?;
    Ok(NodePath { node: node.to_owned() })
});

/// A required JSON body (400 when it is empty).
pub struct Json<T>(pub T);

/// A JSON body that may be left out entirely (an empty body is `None`).
pub struct MaybeJson<T>(pub Option<T>);

impl<T: DeserializeOwned + 'static> FromRequest for Json<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, ApiResult<Self>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let (req, payload) = (req.clone(), payload.take());
        Box::pin(async move {
            let body = crate::body::read(&req, payload).await?;
            parse(&body)?.map(Json).ok_or_else(|| ApiError::invalid_json("a JSON body is required"))
        })
    }
}

impl<T: DeserializeOwned + 'static> FromRequest for MaybeJson<T> {
    type Error = ApiError;
    type Future = LocalBoxFuture<'static, ApiResult<Self>>;

    fn from_request(req: &HttpRequest, payload: &mut Payload) -> Self::Future {
        let (req, payload) = (req.clone(), payload.take());
        Box::pin(async move { parse(&crate::body::read(&req, payload).await?).map(MaybeJson) })
    }
}

/// Parses a body: `None` when it is empty (or white space), else a JSON object without
/// `null` members that `T` accepts.
pub fn parse<T: DeserializeOwned>(body: &Bytes) -> ApiResult<Option<T>> {
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(None);
    }
    let value: serde_json::Value = serde_json::from_slice(body)
        .map_err(|err| ApiError::invalid_json(format!("the body is not valid JSON: {err}")))?;
    // Serde would also take an array for a struct, field by field in order.
    let Some(object) = value.as_object() else {
        return Err(ApiError::invalid_json("the JSON body must be an object"));
    };
    if let Some((key, _)) = object.iter().find(|(_, value)| value.is_null()) {
        return Err(ApiError::invalid(format!(
            "'{key}' is null; leave an optional field out instead"
        )));
    }
    serde_json::from_value(value)
        .map(Some)
        .map_err(|err| ApiError::invalid(format!("invalid JSON body: {err}")))
}

#[cfg(test)]
mod tests {
    use serde::Deserialize;

    use super::*;

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    // The fields are only parsed, never read.
    #[allow(dead_code)]
    struct Body {
        name: String,
        note: Option<String>,
    }

    fn refusal(text: &'static str) -> String {
        parse::<Body>(&Bytes::from_static(text.as_bytes())).unwrap_err().message
    }

    #[test]
    fn bodies_are_objects_without_nulls_or_unknown_fields() {
        assert!(parse::<Body>(&Bytes::from_static(b" \n")).unwrap().is_none());
        assert!(parse::<Body>(&Bytes::from_static(b"{\"name\":\"a\"}")).unwrap().is_some());
        assert!(refusal("[\"a\"]").contains("must be an object"));
        assert!(refusal("{\"name\":\"a\",\"note\":null}").contains("'note' is null"));
        assert!(refusal("{\"name\":\"a\",\"other\":1}").contains("unknown field"));
        assert!(refusal("{oops").contains("not valid JSON"));
    }
}
