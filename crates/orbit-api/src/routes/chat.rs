//! `POST /api/chat`: a turn streamed as server-sent events.
//!
//! The turn runs on a task of its own, so a client that disconnects loses nothing: the turn
//! finishes and records itself; only the forwarding stops. A client that reads too slowly is
//! dropped the same way (`client_stream`). Failures known before the first
//! event (a running turn: 409, no process slot: 429) are answered as JSON, not as a stream.

use std::time::Duration;

use actix_web::web::{Data, Payload};
use actix_web::{HttpRequest, Responder, web};
use orbit_agent::{ChatOptions, Error as AgentError, TurnOutcome};
use orbit_store::{NewSession, limits};
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::client_stream::ClientStream;
use crate::endpoint::{Endpoint, object};
use crate::error::{ApiError, ApiResult};
use crate::{AppState, body, extract};

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
    let session = match session_id {
        Some(id) => state.stores.sessions.get(&name, &id).await?,
        None => state.stores.sessions.create(&name, NewSession::default()).await?,
    };
    let agent = state.pool.get(&name, &session.id);
    if agent.is_running() {
        return Err(AgentError::TurnInProgress(session.id.to_string()).into());
    }

    let (events_tx, mut events) = mpsc::unbounded_channel::<Value>();
    let (done_tx, done) = oneshot::channel::<orbit_agent::Result<TurnOutcome>>();
    let options = ChatOptions { model: body.model, ..ChatOptions::default() };
    let message = body.message;
    tokio::spawn(async move {
        let outcome = agent.chat(&message, options, events_tx).await;
        let _ = done_tx.send(outcome);
    });

    // Wait for the turn to start (or to fail before starting) to choose the answer.
    // The first event means the turn started. No event at all means it ended before it
    // started, and its outcome decides the answer: a refusal is JSON with its status.
    let first = events.recv().await;
    let session_id = session.id;
    let (mut client, response) = ClientStream::new(state.slow_client_timeout);
    if first.is_none() {
        client.send(&json!({"type": "system", "sessionId": session_id}), &session_id).await;
        match done.await {
            Ok(Err(err @ (AgentError::Busy(_) | AgentError::TurnInProgress(_)))) => {
                return Err(err.into());
            }
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "chat turn failed before it started");
                let failure = json!({"type": "error", "message": err.to_string()});
                client.send(&failure, &session_id).await;
            }
            // A turn that ended without a single event: nothing more to tell.
            Ok(Ok(_)) | Err(_) => {}
        }
        return Ok(response);
    }

    tokio::spawn(async move {
        client.send(&json!({"type": "system", "sessionId": session_id}), &session_id).await;
        let mut next = first;
        while let Some(message) = next {
            if client.is_connected() {
                client.send(&message, &session_id).await;
            }
            // The turn's events are read to its end whatever the client does, so the turn
            // never waits on a client.
            next = events.recv().await;
        }
        if let Ok(Err(err)) = done.await {
            client.send(&json!({"type": "error", "message": err.to_string()}), &session_id).await;
        }
    });
    Ok(response.with_keep_alive(Duration::from_secs(15)))
}
