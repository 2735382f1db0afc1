//! The chat stream's wire format: each [`TurnEvent`] as the JSON event the contract names.
//! This is the one place where a turn's typed events become JSON.

use orbit_agent::TurnEvent;
use orbit_store::SessionId;
use serde_json::{Value, json};

/// The JSON of a turn event on the chat stream; `None` for events the stream does not show
/// (the CLI's own `result` message already carries a finished turn's outcome).
pub fn to_json(event: &TurnEvent, session: SessionId) -> Option<Value> {
    match event {
        TurnEvent::Started => {
            Some(json!({"type": "system", "subtype": "orbit_session", "sessionId": session}))
        }
        TurnEvent::Cli(message) => Some(message.raw.clone()),
        TurnEvent::PermissionRequest(request) => Some(json!({
            "type": "permission_request",
            "requestId": request.request_id,
            "toolName": request.tool_name,
            "input": request.input,
            "toolUseId": request.tool_use_id,
        })),
        TurnEvent::ResumeFailed { previous_cli_session, message } => Some(json!({
            "type": "system",
            "subtype": "orbit_resume_failed",
            "previousSdkSessionId": previous_cli_session,
            "message": message,
        })),
        TurnEvent::Finished { .. } => None,
        TurnEvent::Failed { message, .. } => Some(json!({"type": "error", "message": message})),
    }
}
