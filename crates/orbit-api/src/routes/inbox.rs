//! `/api/agents/:name/inbox...`.

use actix_web::web::Data;
use actix_web::{HttpResponse, web};
use orbit_agent::Activity;
use orbit_store::{AgentName, MessageId, NewMessage, Sender, limits};
use schemars::JsonSchema;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::endpoint::Endpoint;
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::{AgentPath, Json, MessagePath};
use crate::page::{self, PageQuery};
use crate::views::{self, MessageBody, MessagesBody, SuccessView};
use crate::{AppState, listing, wire};

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new::<MessagesBody>(
            "GET",
            "/api/agents/{name}/inbox",
            "listInbox",
            "List pending inbox messages, claimed or not, oldest first (a page of them with `limit`)",
            || web::get().to(list),
        )
        .query::<PageQuery>(),
        Endpoint::new::<MessagesBody>(
            "GET",
            "/api/agents/{name}/inbox/dead",
            "listDeadMessages",
            "List the messages set aside as dead, oldest first",
            || web::get().to(list_dead),
        ),
        Endpoint::new::<MessagesBody>(
            "GET",
            "/api/agents/{name}/inbox/archive",
            "listFiledMessages",
            "List the messages filed away, read or archived, newest first (a page of them with `limit`)",
            || web::get().to(list_filed),
        )
        .query::<PageQuery>(),
        Endpoint::new::<MessageBody>(
            "POST",
            "/api/agents/{name}/inbox",
            "sendMessage",
            "Send a message to the agent's inbox",
            || web::post().to(send),
        )
        .status(201)
        .body::<SendMessage>(),
        Endpoint::new::<MessageBody>(
            "GET",
            "/api/agents/{name}/inbox/{msg}",
            "getMessage",
            "Get an inbox message, pending or not",
            || web::get().to(get),
        ),
        Endpoint::new::<SuccessView>(
            "DELETE",
            "/api/agents/{name}/inbox/{msg}",
            "archiveMessage",
            "Archive an inbox message (409 when it was read or set aside as dead)",
            || web::delete().to(archive),
        )
        .errors(&[Code::Conflict]),
    ]
}

/// `POST /api/agents/{name}/inbox`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(example = send_example())]
// An agent sender is named by an agent's name; a person's name is free text.
#[schemars(extend("dependentSchemas" = {
    "fromKind": {"anyOf": [
        {"properties": {"fromKind": {"const": "person"}}},
        {"properties": {"fromAgent": {"pattern": wire::AGENT_NAME_PATTERN}}},
    ]},
}))]
pub struct SendMessage {
    /// Who writes: an agent's name, or a person's (or a system's) name.
    #[schemars(with = "wire::SenderName")]
    from_agent: String,
    /// Which of the two `fromAgent` is. Left out, a valid agent name is an agent and
    /// anything else a person.
    #[serde(default)]
    #[schemars(with = "wire::SenderKind")]
    from_kind: Option<wire::SenderKind>,
    #[schemars(length(max = limits::INBOX_MESSAGE))]
    message: String,
    #[serde(default)]
    #[schemars(with = "wire::MessageType")]
    message_type: Option<wire::MessageType>,
    /// For a response, the id of the request it answers.
    #[serde(default)]
    #[schemars(with = "wire::Ulid")]
    request_id: Option<MessageId>,
}

fn send_example() -> Value {
    json!({"fromAgent": "alice", "message": "Status of the report?", "messageType": "response", "requestId": "01JD2Y7W3Q5ZK8X9M4N6P0R1ST"})
}

async fn list(
    state: Data<AppState>,
    path: AgentPath,
    query: web::Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let Some(limit) = query.limit()? else {
        let messages = state.stores.inbox.pending_rendered(&path.name, listing::MESSAGES).await?;
        return Ok(listing::answer(messages));
    };
    let after = query.cursor(|cursor| MessageId::parse(cursor).ok())?;
    let messages = state.stores.inbox.pending_page(&path.name, after, limit + 1).await?;
    let (messages, next_cursor) = page::cut(messages, limit, |message| message.id.to_string());
    Ok(HttpResponse::Ok().json(MessagesBody { messages: views::all(messages), next_cursor }))
}

/// Messages that reached the model three times without being handled: kept, for a person
/// to read.
async fn list_dead(state: Data<AppState>, path: AgentPath) -> ApiResult<HttpResponse> {
    state.stores.agents.get(&path.name).await?;
    let messages = views::all(state.stores.inbox.list_dead(&path.name).await?);
    Ok(HttpResponse::Ok().json(MessagesBody { messages, next_cursor: None }))
}

/// Read and archived messages, newest first: they only grow, so a person pages back from
/// the latest.
async fn list_filed(
    state: Data<AppState>,
    path: AgentPath,
    query: web::Query<PageQuery>,
) -> ApiResult<HttpResponse> {
    let limit = query.limit()?;
    let before = query.cursor(|cursor| MessageId::parse(cursor).ok())?;
    let Some(limit) = limit else {
        let messages = state.stores.inbox.filed_page(&path.name, None, usize::MAX).await?;
        return Ok(HttpResponse::Ok()
            .json(MessagesBody { messages: views::all(messages), next_cursor: None }));
    };
    let messages = state.stores.inbox.filed_page(&path.name, before, limit + 1).await?;
    let (messages, next_cursor) = page::cut(messages, limit, |message| message.id.to_string());
    Ok(HttpResponse::Ok().json(MessagesBody { messages: views::all(messages), next_cursor }))
}

async fn send(
    state: Data<AppState>,
    path: AgentPath,
    Json(body): Json<SendMessage>,
) -> ApiResult<HttpResponse> {
    limits::check_len("message", &body.message, limits::INBOX_MESSAGE)?;
    let new = NewMessage {
        from_agent: sender(body.from_agent, body.from_kind)?,
        to_agent: path.name,
        message: body.message,
        message_type: body.message_type.map(Into::into).unwrap_or_default(),
        request_id: body.request_id,
    };
    let message = state.stores.inbox.send(new).await?;
    state.pool.activity().announce(Activity::InboxArrived {
        agent: message.to_agent.clone(),
        message: message.id,
        from: message.from_agent.clone(),
    });
    Ok(HttpResponse::Created().json(MessageBody { message: message.into() }))
}

/// The sender a body names. Older clients send only `fromAgent`, always an agent's name, and
/// keep working; a name that is not an agent's is a person's.
fn sender(name: String, kind: Option<wire::SenderKind>) -> ApiResult<Sender> {
    match (kind, AgentName::parse(&name)) {
        (Some(wire::SenderKind::Agent) | None, Ok(agent)) => Ok(Sender::Agent(agent)),
        (Some(wire::SenderKind::Agent), Err(_)) => Err(ApiError::invalid(format!(
            "'fromAgent' {name:?} is not an agent name ({}); a person writing says \"fromKind\": \"person\"",
            wire::AGENT_NAME_PATTERN
        ))),
        (Some(wire::SenderKind::Person), _) | (None, Err(_)) => {
            limits::check_sender(&name)?;
            Ok(Sender::Person(name))
        }
    }
}

async fn get(state: Data<AppState>, path: MessagePath) -> ApiResult<HttpResponse> {
    let message = state.stores.inbox.get(&path.name, &path.id).await?;
    Ok(HttpResponse::Ok().json(MessageBody { message: message.into() }))
}

async fn archive(state: Data<AppState>, path: MessagePath) -> ApiResult<HttpResponse> {
    state.stores.inbox.archive(&path.name, &path.id).await?;
    state.pool.activity().announce(Activity::InboxArchived { agent: path.name, message: path.id });
    Ok(HttpResponse::Ok().json(SuccessView::DONE))
}
