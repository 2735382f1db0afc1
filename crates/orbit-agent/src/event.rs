//! The typed protocol between a turn and whoever watches it (the API's event stream, the
//! scheduler, a library user), in the manner of codex-rs's `Event`/`EventMsg`: the agent core
//! says what happened in these terms, and each front end decides how to show it.
//!
//! [`TurnEvent::to_json`] is the one place where a turn's events become the JSON of the
//! contract: the API's event streams send it, and the session's transcript keeps it, so what
//! a transcript holds is exactly what a watcher saw.

use serde_json::{Value, json};

use orbit_store::{ErrorKind, SessionId};

/// Something that happened in a turn, in order. A turn's events start with [`Started`] and end
/// with [`Finished`] or [`Failed`].
///
/// [`Started`]: TurnEvent::Started
/// [`Finished`]: TurnEvent::Finished
/// [`Failed`]: TurnEvent::Failed
#[derive(Debug, Clone)]
pub enum TurnEvent {
    /// The turn was accepted and runs.
    Started,
    /// A message of the CLI's stream, as the CLI wrote it.
    Cli(CliMessage),
    /// A piece of the assistant's text as the model generates it (the CLI's partial
    /// messages); the whole message follows as a [`CliMessage`] all the same.
    TextDelta { text: String },
    /// A tool call waits for a person's answer (`ask` mode).
    PermissionRequest(PermissionRequest),
    /// The session's CLI conversation could not be resumed; the turn runs in a fresh one.
    ResumeFailed {
        /// The CLI session id that was lost.
        previous_cli_session: Option<String>,
        /// Why, in a sentence for a person.
        message: String,
    },
    /// The turn ended well.
    Finished {
        /// The assistant's final text.
        result: String,
        cost_usd: Option<f64>,
    },
    /// The turn ended without a result.
    Failed {
        /// What went wrong, in a sentence for a person.
        message: String,
        kind: ErrorKind,
    },
}

/// A tool call that waits for a person.
#[derive(Debug, Clone)]
pub struct PermissionRequest {
    /// What an answer names (`SessionAgent::answer_permission`).
    pub request_id: String,
    pub tool_name: String,
    pub input: Value,
    pub tool_use_id: String,
}

/// One message of the CLI's stream-json output: its raw form, passed on unchanged, and what
/// Orbit reads of it (parsed once, in `claude::protocol`).
#[derive(Debug, Clone)]
pub struct CliMessage {
    pub raw: Value,
    pub kind: CliMessageKind,
}

/// What Orbit reads of a CLI message.
#[derive(Debug, Clone)]
pub enum CliMessageKind {
    /// `system/init`: the CLI session this process runs.
    Init { session_id: String },
    /// The turn's `result`.
    Result(CliResult),
    /// A piece of assistant text from a partial message (`stream_event` with a `text_delta`).
    TextDelta(String),
    /// Any other partial message (`stream_event`): block starts and stops, tool input
    /// pieces. Orbit passes none of them on; the whole message follows.
    Partial,
    /// Anything else (assistant and user messages, partial messages, tool progress ...).
    Other,
}

/// A turn's `result` message as Orbit reads it.
#[derive(Debug, Clone, Default)]
pub struct CliResult {
    /// The assistant's final text.
    pub text: String,
    pub is_error: bool,
    /// `success`, `error_during_execution`, `error_max_turns`, ...
    pub subtype: String,
    /// The CLI session's running cost total.
    pub total_cost_usd: Option<f64>,
    pub usage: Option<orbit_store::Usage>,
    /// The errors the CLI listed, if any.
    pub errors: Vec<String>,
    /// Why the model could not answer, when the CLI says it was the model service's refusal.
    pub failure: Option<ModelFailure>,
}

/// A refusal of the model service that a person can act on, read from the CLI's result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ModelFailure {
    /// The CLI found no credentials at all.
    NoCredentials,
    /// The service refused the credentials (401, 403).
    CredentialsRefused { status: Option<u16> },
    /// Too many requests or tokens for the account (429).
    RateLimited,
    /// The service is overloaded or failing (529, 5xx): usually temporary.
    Overloaded { status: u16 },
}

impl TurnEvent {
    /// The event's JSON on the event streams and in the transcript; `None` for events that are
    /// not shown (the CLI's own `result` message already carries a finished turn's outcome).
    pub fn to_json(&self, session: SessionId) -> Option<Value> {
        match self {
            TurnEvent::Started => {
                Some(json!({"type": "system", "subtype": "orbit_session", "sessionId": session}))
            }
            TurnEvent::Cli(message) => Some(message.raw.clone()),
            TurnEvent::TextDelta { text } => Some(json!({"type": "text_delta", "text": text})),
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
}

/// The event a watcher of a running turn gets in place of events it can no longer be shown:
/// they were dropped from the turn's replay buffer before it attached, or before it read them.
pub fn events_dropped_json(dropped: u64) -> Value {
    json!({"type": "system", "subtype": "orbit_events_dropped", "dropped": dropped})
}
