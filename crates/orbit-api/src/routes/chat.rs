//! `POST /api/chat`: a turn streamed as server-sent events.
//!
//! Starting the turn is a step of its own: a refusal (a running turn: 409, no process slot:
//! 429, an unknown session: 404) is answered as JSON before any stream begins, and a session
//! made for a refused turn is removed again. An accepted turn runs on a task the agent pool
//! owns, so a client that disconnects loses nothing: the turn finishes and records itself;
//! only the forwarding stops. A client that reads too slowly is dropped the same way
//! (`client_stream`).

use std::time::Duration;

use actix_web::web::{Data, Payload};
use actix_web::{HttpRequest, Responder, web};
use orbit_agent::ChatOptions;
use orbit_store::{NewSession, limits};
use serde::Deserialize;

use crate::client_stream::ClientStream;
use crate::endpoint::{Endpoint, object};
use crate::error::{ApiError, ApiResult};
use crate::{AppState, body, extract, stream_events};

pub fn endpoints() -> Vec<Endpoint> {
    let body = object(
        &[
            ("agentName", "string"),
            ("message", "string"),
            ("sessionId", "string"),
            ("model", "string"),
        ],
        &["agentName", "message"],
    );
    vec![
        Endpoint::new(
            "POST",
            "/api/chat",
            "Run a chat turn, streamed as server-sent events",
            || web::post().to(chat),
        )
        .body(body),
    ]
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields)]
struct ChatRequest {
    agent_name: String,
    message: String,
    session_id: Option<String>,
    model: Option<String>,
}

async fn chat(
    state: Data<AppState>,
    req: HttpRequest,
    payload: Payload,
) -> ApiResult<impl Responder> {
    let body: ChatRequest = body::json(&req, payload, false).await?;
    let name = extract::agent(&body.agent_name)?;
    if body.message.trim().is_empty() {
        return Err(ApiError::bad_request("message must not be empty"));
    }
    limits::check_len("message", &body.message, limits::CHAT_MESSAGE)?;
    super::agents::check_model(body.model.as_deref())?;
    let session_id = body.session_id.as_deref().map(extract::session).transpose()?;
    state.stores.agents.ensure(&name).await?;
    let (session, made_here) = match session_id {
        Some(id) => (state.stores.sessions.get(&name, &id).await?, false),
        None => (state.stores.sessions.create(&name, NewSession::default()).await?, true),
    };
    let agent = state.pool.get(&name, &session.id);
    let options = ChatOptions { model: body.model, ..ChatOptions::default() };
    let turn = match agent.start_turn(&body.message, options).await {
        Ok(turn) => turn,
        Err(err) => {
            if made_here {
                state.pool.forget_session(&name, &session.id).await;
                if let Err(cleanup) = state.stores.sessions.delete(&name, &session.id).await {
                    tracing::warn!(error = %cleanup, "could not remove the session of a refused chat");
                }
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
                && let Some(message) = stream_events::to_json(&event, session_id)
            {
                client.send(&message, &session_id).await;
            }
        }
    });
    Ok(response.with_keep_alive(Duration::from_secs(15)))
}
