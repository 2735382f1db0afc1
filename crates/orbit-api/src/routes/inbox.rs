//! `/api/agents/:name/inbox...`.

use actix_web::web::{Data, Path, Payload};
use actix_web::{HttpRequest, HttpResponse, web};
use orbit_store::{MessageType, NewMessage, limits};
use serde::Deserialize;
use serde_json::json;

use crate::endpoint::{Endpoint, object};
use crate::error::ApiResult;
use crate::{AppState, body, extract};

pub fn endpoints() -> Vec<Endpoint> {
    let send_body = object(
        &[
            ("fromAgent", "string"),
            ("message", "string"),
            ("messageType", "string"),
            ("requestId", "string"),
        ],
        &["fromAgent", "message"],
    );
    vec![
        Endpoint::new(
            "GET",
            "/api/agents/{name}/inbox",
            "List pending inbox messages, claimed or not",
            || web::get().to(list),
        ),
        Endpoint::new(
            "POST",
            "/api/agents/{name}/inbox",
            "Send a message to the agent's inbox",
            || web::post().to(send),
        )
        .status(201)
        .body(send_body),
        Endpoint::new("GET", "/api/agents/{name}/inbox/{msg}", "Get an inbox message", || {
            web::get().to(get)
        }),
        Endpoint::new(
            "DELETE",
            "/api/agents/{name}/inbox/{msg}",
            "Archive an inbox message",
            || web::delete().to(archive),
        ),
    ]
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct SendMessage {
    from_agent: String,
    message: String,
    message_type: Option<MessageType>,
    request_id: Option<String>,
}

async fn list(state: Data<AppState>, path: Path<String>) -> ApiResult<HttpResponse> {
    let name = extract::agent(&path)?;
    Ok(HttpResponse::Ok()
        .json(body::Envelope("messages", &state.stores.inbox.get_pending(&name).await?)))
}

async fn send(
    state: Data<AppState>,
    path: Path<String>,
    req: HttpRequest,
    payload: Payload,
) -> ApiResult<HttpResponse> {
    let name = extract::agent(&path)?;
    let body: SendMessage = body::json(&req, payload, false).await?;
    limits::check_len("message", &body.message, limits::INBOX_MESSAGE)?;
    let new = NewMessage {
        from_agent: extract::agent(&body.from_agent)?,
        to_agent: name,
        message: body.message,
        message_type: body.message_type.unwrap_or_default(),
        request_id: body.request_id.as_deref().map(extract::message).transpose()?,
    };
    Ok(HttpResponse::Created()
        .json(body::Envelope("message", &state.stores.inbox.send(new).await?)))
}

async fn get(state: Data<AppState>, path: Path<(String, String)>) -> ApiResult<HttpResponse> {
    let (name, id) = (extract::agent(&path.0)?, extract::message(&path.1)?);
    Ok(HttpResponse::Ok()
        .json(body::Envelope("message", &state.stores.inbox.get(&name, &id).await?)))
}

async fn archive(state: Data<AppState>, path: Path<(String, String)>) -> ApiResult<HttpResponse> {
    let (name, id) = (extract::agent(&path.0)?, extract::message(&path.1)?);
    state.stores.inbox.archive(&name, &id).await?;
    Ok(HttpResponse::Ok().json(json!({ "success": true })))
}
