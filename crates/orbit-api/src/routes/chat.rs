//! `POST /api/chat`: a turn streamed as server-sent events.
//!
//! The turn runs on a task of its own, so a client that disconnects loses nothing: the turn
//! finishes and records itself; only the forwarding stops. Failures known before the first
//! event (a running turn: 409, no process slot: 429) are answered as JSON, not as a stream.

use std::time::Duration;

use actix_web::web::{Data, Payload};
use actix_web::{HttpRequest, Responder, web};
use actix_web_lab::sse;
use orbit_agent::{ChatOptions, Error as AgentError, TurnOutcome};
use orbit_store::NewSession;
use serde::Deserialize;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

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

fn event(value: &Value) -> sse::Event {
    sse::Data::new(value.to_string()).into()
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
    if first.is_none() {
        let (tx, rx) = mpsc::channel(4);
        let _ = tx.send(event(&json!({"type": "system", "sessionId": session.id}))).await;
        match done.await {
            Ok(Err(err @ (AgentError::Busy(_) | AgentError::TurnInProgress(_)))) => {
                return Err(err.into());
            }
            Ok(Err(err)) => {
                tracing::warn!(error = %err, "chat turn failed before it started");
                let _ = tx.send(event(&json!({"type": "error", "message": err.to_string()}))).await;
            }
            // A turn that ended without a single event: nothing more to tell.
            Ok(Ok(_)) | Err(_) => {}
        }
        return Ok(sse::Sse::from_infallible_receiver(rx));
    }

    let (tx, rx) = mpsc::channel(64);
    let session_id = session.id;
    tokio::spawn(async move {
        let mut connected =
            tx.send(event(&json!({"type": "system", "sessionId": session_id}))).await.is_ok();
        let mut next = first;
        while let Some(message) = next {
            if connected && tx.send(event(&message)).await.is_err() {
                tracing::info!(session = %session_id, "client disconnected; the turn goes on");
                connected = false;
            }
            next = events.recv().await;
        }
        if let Ok(Err(err)) = done.await
            && connected
        {
            let _ = tx.send(event(&json!({"type": "error", "message": err.to_string()}))).await;
        }
    });
    Ok(sse::Sse::from_infallible_receiver(rx).with_keep_alive(Duration::from_secs(15)))
}
