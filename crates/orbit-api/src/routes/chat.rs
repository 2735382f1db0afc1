//! `POST /api/chat`: a turn streamed as server-sent events.
//!
//! Starting the turn is a step of its own: a refusal (a running turn: 409, no process slot:
//! 429, an unknown session: 404) is answered as JSON before any stream begins, and a session
//! made for a refused turn is removed again. An accepted turn runs on a task the agent pool
//! owns, so a client that disconnects loses nothing: the turn finishes and records itself;
//! only the forwarding stops. A client that reads too slowly is dropped the same way
//! (`client_stream`).

use std::time::Duration;

use actix_web::web::Data;
use actix_web::{Responder, web};
use orbit_agent::ChatOptions;
use orbit_agent::workflow::SessionRequest;
use orbit_store::{AgentName, SessionId, limits};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};

use crate::client_stream::ClientStream;
use crate::endpoint::Endpoint;
use crate::error::{ApiError, ApiResult, Code};
use crate::extract::Json;
use crate::{AppState, wire};

pub fn endpoints() -> Vec<Endpoint> {
    vec![
        Endpoint::new::<ChatEvent>(
            "POST",
            "/api/chat",
            "chat",
            "Run a chat turn, streamed as server-sent events",
            || web::post().to(chat),
        )
        .events::<ChatEvent>()
        .body::<ChatRequest>()
        // 404: the session is unknown; 409: the session's turn is running; 429: no process
        // slot freed in time. All are answered as JSON before any stream begins.
        .errors(&[Code::NotFound, Code::Conflict, Code::Busy]),
    ]
}

/// `POST /api/chat`.
#[derive(Debug, Deserialize, JsonSchema)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
#[schemars(example = chat_example())]
pub struct ChatRequest {
    /// The agent, made if missing.
    #[schemars(with = "wire::AgentName")]
    agent_name: AgentName,
    /// The user's message: not blank.
    #[schemars(length(min = 1, max = limits::CHAT_MESSAGE), pattern(wire::NOT_BLANK_PATTERN))]
    message: String,
    /// The session to continue; a new one is made without it.
    #[serde(default)]
    #[schemars(with = "wire::Ulid")]
    session_id: Option<SessionId>,
    /// The model of this turn.
    #[serde(default)]
    #[schemars(with = "wire::Model")]
    model: Option<String>,
}

fn chat_example() -> Value {
    json!({"agentName": "researcher", "message": "Summarise README.md", "sessionId": "01JD2Y7W3Q5ZK8X9M4N6P0R1ST", "model": "sonnet"})
}

/// One event of the chat stream (one `data:` line).
#[derive(Debug, Serialize, JsonSchema)]
#[serde(untagged)]
// The events are built as JSON from the turn's typed events (`TurnEvent::to_json`); these types
// are the stream's documentation, and the tests check every event against them.
#[allow(dead_code)]
pub enum ChatEvent {
    /// Always first: the Orbit session the turn runs in.
    Session(SessionEvent),
    /// The turn failed after it started; the stream ends.
    Error(ErrorEvent),
    /// In `ask` mode, a tool waits for a person's answer
    /// (`POST /api/agents/{name}/sessions/{id}/permissions/{requestId}`).
    PermissionRequest(PermissionRequestEvent),
    /// The CLI could not resume the session's previous conversation; the turn goes on in a
    /// fresh one.
    ResumeFailed(ResumeFailedEvent),
    /// A piece of the assistant's text as the model generates it; the whole `assistant`
    /// message follows all the same.
    TextDelta(TextDeltaEvent),
    /// Only on `GET .../stream`: events of the turn that could not be shown (they left the
    /// turn's replay buffer before this watcher read them) were left out here.
    EventsDropped(EventsDroppedEvent),
    /// Every other message of the Claude Code CLI's stream-json output, unchanged (`system`,
    /// `assistant`, `user`, `result`, ...). The CLI's partial messages (`stream_event`) are
    /// not passed on: their text arrives as `text_delta` events.
    Runtime(RuntimeEvent),
}

/// `{"type": "text_delta", "text"}`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct TextDeltaEvent {
    #[schemars(extend("const" = "text_delta"))]
    r#type: String,
    text: String,
}

/// `{"type": "system", "subtype": "orbit_events_dropped", "dropped"}`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct EventsDroppedEvent {
    #[schemars(extend("const" = "system"))]
    r#type: String,
    #[schemars(extend("const" = "orbit_events_dropped"))]
    subtype: String,
    /// How many events were left out at this point.
    dropped: u64,
}

/// `{"type": "system", "subtype": "orbit_session", "sessionId"}`, the stream's first event.
/// Its subtype tells it from the CLI's own `system` messages (`init`, ...).
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionEvent {
    #[schemars(extend("const" = "system"))]
    r#type: &'static str,
    #[schemars(extend("const" = "orbit_session"))]
    subtype: &'static str,
    #[schemars(with = "wire::Ulid")]
    session_id: SessionId,
}

/// `{"type": "error", "message"}`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct ErrorEvent {
    #[schemars(extend("const" = "error"))]
    r#type: &'static str,
    message: String,
}

/// Sent by the agent runtime (`orbit_agent::policy`); documented here.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PermissionRequestEvent {
    #[schemars(extend("const" = "permission_request"))]
    r#type: String,
    #[schemars(with = "wire::Ulid")]
    request_id: String,
    tool_name: String,
    /// The tool's input, as the model gave it.
    input: Value,
    tool_use_id: String,
}

/// Sent by the agent runtime; documented here.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ResumeFailedEvent {
    #[schemars(extend("const" = "system"))]
    r#type: String,
    #[schemars(extend("const" = "orbit_resume_failed"))]
    subtype: String,
    previous_sdk_session_id: String,
    message: String,
}

/// A Claude Code stream-json message: an object with a `type` and whatever that type carries.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(extend("additionalProperties" = true))]
pub struct RuntimeEvent {
    r#type: String,
}

async fn chat(state: Data<AppState>, Json(body): Json<ChatRequest>) -> ApiResult<impl Responder> {
    let name = body.agent_name;
    if body.message.trim().is_empty() {
        return Err(ApiError::invalid("message must not be empty"));
    }
    limits::check_len("message", &body.message, limits::CHAT_MESSAGE)?;
    super::agents::check_model(body.model.as_deref())?;
    let session_id = body.session_id;
    let agent = state.stores.agents.ensure(&name).await?;
    super::agents::check_active(&agent)?;
    let (session, made_here) = match session_id {
        Some(id) => (state.stores.sessions.get(&name, &id).await?, false),
        None => (state.pool.create_session(&name, SessionRequest::default()).await?, true),
    };
    let agent = state.pool.get(&name, &session.id);
    let options = ChatOptions { model: body.model, ..ChatOptions::default() };
    let turn = match agent.start_turn(&body.message, options).await {
        Ok(turn) => turn,
        Err(err) => {
            if made_here && let Err(cleanup) = state.pool.delete_session(&name, &session.id).await {
                tracing::warn!(error = %cleanup, "could not remove the session of a refused chat");
            }
            return Err(err.into());
        }
    };
    // The outcome is told by the turn's last event; nobody needs to wait for it here.
    let (mut events, _outcome) = turn.into_parts();
    let session_id = session.id;
    let (mut client, response) = ClientStream::new(state.slow_client_timeout);

    tokio::spawn(async move {
        // The turn's events are read to its end whatever the client does, so the turn never
        // waits on a client.
        while let Some(event) = events.recv().await {
            if client.is_connected()
                && let Some(message) = event.to_json(session_id)
            {
                client.send(&message, &session_id).await;
            }
        }
    });
    Ok(response.with_keep_alive(Duration::from_secs(15)))
}
