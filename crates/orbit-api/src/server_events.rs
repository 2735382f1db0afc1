//! The server-wide event stream's wire format: each [`Activity`] as the JSON event
//! `GET /api/events` sends. This is the one place where announcements become JSON, and these
//! types are also the stream's schema in the OpenAPI document.

use orbit_agent::activity::{Announced, ApprovalSettlement, TurnEnding};
use orbit_agent::{Activity, TurnKind};
use orbit_store::timestamp::rfc3339;
use orbit_store::{AgentName, MessageId, RunId, SessionId, TaskId};
use schemars::JsonSchema;
use serde::Serialize;
use time::OffsetDateTime;

use crate::wire;

/// One event of `GET /api/events` (one `data:` line; its `id:` line is the position to
/// resume from).
#[derive(Debug, Serialize, JsonSchema)]
#[serde(tag = "type", rename_all = "snake_case", rename_all_fields = "camelCase")]
pub enum ServerEvent {
    /// Always first: the stream is live from here. Its id is the newest event's.
    Ready {},
    /// Events were missed (the stream resumed from an id the server no longer holds, the
    /// client read too slowly, or on a cluster this node missed other nodes' events): reload
    /// what you show. After a slow client's resync the stream ends; reconnect.
    Resync { reason: String },
    /// An agent was made, changed or deleted: read it again (404: it is gone).
    AgentChanged {
        #[serde(with = "rfc3339")]
        #[schemars(with = "wire::Timestamp")]
        at: OffsetDateTime,
        #[schemars(with = "wire::AgentName")]
        agent_name: AgentName,
    },
    SessionCreated {
        #[serde(with = "rfc3339")]
        #[schemars(with = "wire::Timestamp")]
        at: OffsetDateTime,
        #[schemars(with = "wire::AgentName")]
        agent_name: AgentName,
        #[schemars(with = "wire::Ulid")]
        session_id: SessionId,
    },
    SessionDeleted {
        #[serde(with = "rfc3339")]
        #[schemars(with = "wire::Timestamp")]
        at: OffsetDateTime,
        #[schemars(with = "wire::AgentName")]
        agent_name: AgentName,
        #[schemars(with = "wire::Ulid")]
        session_id: SessionId,
    },
    TurnStarted {
        #[serde(with = "rfc3339")]
        #[schemars(with = "wire::Timestamp")]
        at: OffsetDateTime,
        #[schemars(with = "wire::AgentName")]
        agent_name: AgentName,
        #[schemars(with = "wire::Ulid")]
        session_id: SessionId,
        /// `chat` (a person's) or `task` (a scheduled run's).
        kind: TurnKindView,
    },
    TurnEnded {
        #[serde(with = "rfc3339")]
        #[schemars(with = "wire::Timestamp")]
        at: OffsetDateTime,
        #[schemars(with = "wire::AgentName")]
        agent_name: AgentName,
        #[schemars(with = "wire::Ulid")]
        session_id: SessionId,
        success: bool,
        /// What the turn cost, when the model service said.
        #[serde(skip_serializing_if = "Option::is_none")]
        cost_usd: Option<f64>,
        /// Why it failed, in Orbit's words.
        #[serde(skip_serializing_if = "Option::is_none")]
        error: Option<String>,
    },
    /// An `ask`-mode tool call waits for a person (`GET /api/approvals` has its input).
    ApprovalPending {
        #[serde(with = "rfc3339")]
        #[schemars(with = "wire::Timestamp")]
        at: OffsetDateTime,
        #[schemars(with = "wire::AgentName")]
        agent_name: AgentName,
        #[schemars(with = "wire::Ulid")]
        session_id: SessionId,
        #[schemars(with = "wire::Ulid")]
        request_id: String,
        tool_name: String,
    },
    /// It waits no more: allowed, denied, or expired (no answer in time, or its turn ended).
    ApprovalSettled {
        #[serde(with = "rfc3339")]
        #[schemars(with = "wire::Timestamp")]
        at: OffsetDateTime,
        #[schemars(with = "wire::AgentName")]
        agent_name: AgentName,
        #[schemars(with = "wire::Ulid")]
        session_id: SessionId,
        #[schemars(with = "wire::Ulid")]
        request_id: String,
        settlement: SettlementView,
    },
    InboxArrived {
        #[serde(with = "rfc3339")]
        #[schemars(with = "wire::Timestamp")]
        at: OffsetDateTime,
        #[schemars(with = "wire::AgentName")]
        agent_name: AgentName,
        #[schemars(with = "wire::Ulid")]
        message_id: MessageId,
        /// The sender's name.
        from: String,
    },
    InboxClaimed {
        #[serde(with = "rfc3339")]
        #[schemars(with = "wire::Timestamp")]
        at: OffsetDateTime,
        #[schemars(with = "wire::AgentName")]
        agent_name: AgentName,
        #[schemars(with = "wire::Ulid")]
        message_id: MessageId,
        /// The session whose turn took it.
        #[schemars(with = "wire::Ulid")]
        session_id: SessionId,
    },
    /// Handled by the turn that claimed it.
    InboxRead {
        #[serde(with = "rfc3339")]
        #[schemars(with = "wire::Timestamp")]
        at: OffsetDateTime,
        #[schemars(with = "wire::AgentName")]
        agent_name: AgentName,
        #[schemars(with = "wire::Ulid")]
        message_id: MessageId,
    },
    /// Given back by a turn that failed; it will be claimed again.
    InboxReleased {
        #[serde(with = "rfc3339")]
        #[schemars(with = "wire::Timestamp")]
        at: OffsetDateTime,
        #[schemars(with = "wire::AgentName")]
        agent_name: AgentName,
        #[schemars(with = "wire::Ulid")]
        message_id: MessageId,
    },
    /// Set aside after reaching the model three times without being handled.
    InboxDead {
        #[serde(with = "rfc3339")]
        #[schemars(with = "wire::Timestamp")]
        at: OffsetDateTime,
        #[schemars(with = "wire::AgentName")]
        agent_name: AgentName,
        #[schemars(with = "wire::Ulid")]
        message_id: MessageId,
    },
    InboxArchived {
        #[serde(with = "rfc3339")]
        #[schemars(with = "wire::Timestamp")]
        at: OffsetDateTime,
        #[schemars(with = "wire::AgentName")]
        agent_name: AgentName,
        #[schemars(with = "wire::Ulid")]
        message_id: MessageId,
    },
    /// A task was made, changed or deleted, by anyone: read it again (404: it is gone).
    TaskChanged {
        #[serde(with = "rfc3339")]
        #[schemars(with = "wire::Timestamp")]
        at: OffsetDateTime,
        #[schemars(with = "wire::AgentName")]
        agent_name: AgentName,
        #[schemars(with = "wire::Ulid")]
        task_id: TaskId,
    },
    RunStarted {
        #[serde(with = "rfc3339")]
        #[schemars(with = "wire::Timestamp")]
        at: OffsetDateTime,
        #[schemars(with = "wire::AgentName")]
        agent_name: AgentName,
        #[schemars(with = "wire::Ulid")]
        task_id: TaskId,
        #[schemars(with = "wire::Ulid")]
        run_id: RunId,
        /// The session the run's turn works in.
        #[serde(skip_serializing_if = "Option::is_none")]
        #[schemars(with = "Option<wire::Ulid>")]
        session_id: Option<SessionId>,
    },
    /// A run ended (`success`, `error`), or a slot was skipped (`skipped`).
    RunFinished {
        #[serde(with = "rfc3339")]
        #[schemars(with = "wire::Timestamp")]
        at: OffsetDateTime,
        #[schemars(with = "wire::AgentName")]
        agent_name: AgentName,
        #[schemars(with = "wire::Ulid")]
        task_id: TaskId,
        #[schemars(with = "wire::Ulid")]
        run_id: RunId,
        status: wire::RunStatus,
    },
}

/// Who a turn is for.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum TurnKindView {
    Chat,
    Task,
}

/// How a tool call stopped waiting.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum SettlementView {
    Allowed,
    Denied,
    Expired,
}

impl From<&Announced> for ServerEvent {
    fn from(announced: &Announced) -> Self {
        let at = announced.at;
        match announced.activity.clone() {
            Activity::AgentChanged { agent } => Self::AgentChanged { at, agent_name: agent },
            Activity::SessionCreated { agent, session } => {
                Self::SessionCreated { at, agent_name: agent, session_id: session }
            }
            Activity::SessionDeleted { agent, session } => {
                Self::SessionDeleted { at, agent_name: agent, session_id: session }
            }
            Activity::TurnStarted { agent, session, kind } => Self::TurnStarted {
                at,
                agent_name: agent,
                session_id: session,
                kind: match kind {
                    TurnKind::Chat => TurnKindView::Chat,
                    TurnKind::ScheduledTask => TurnKindView::Task,
                },
            },
            Activity::TurnEnded {
                agent,
                session,
                ending: TurnEnding { success, cost_usd, error },
            } => Self::TurnEnded {
                at,
                agent_name: agent,
                session_id: session,
                success,
                cost_usd,
                error,
            },
            Activity::ApprovalPending { agent, session, request_id, tool_name } => {
                Self::ApprovalPending {
                    at,
                    agent_name: agent,
                    session_id: session,
                    request_id,
                    tool_name,
                }
            }
            Activity::ApprovalSettled { agent, session, request_id, settlement } => {
                Self::ApprovalSettled {
                    at,
                    agent_name: agent,
                    session_id: session,
                    request_id,
                    settlement: match settlement {
                        ApprovalSettlement::Allowed => SettlementView::Allowed,
                        ApprovalSettlement::Denied => SettlementView::Denied,
                        ApprovalSettlement::Expired => SettlementView::Expired,
                    },
                }
            }
            Activity::InboxArrived { agent, message, from } => {
                Self::InboxArrived { at, agent_name: agent, message_id: message, from }
            }
            Activity::InboxClaimed { agent, message, session } => Self::InboxClaimed {
                at,
                agent_name: agent,
                message_id: message,
                session_id: session,
            },
            Activity::InboxRead { agent, message } => {
                Self::InboxRead { at, agent_name: agent, message_id: message }
            }
            Activity::InboxReleased { agent, message } => {
                Self::InboxReleased { at, agent_name: agent, message_id: message }
            }
            Activity::InboxDead { agent, message } => {
                Self::InboxDead { at, agent_name: agent, message_id: message }
            }
            Activity::InboxArchived { agent, message } => {
                Self::InboxArchived { at, agent_name: agent, message_id: message }
            }
            Activity::TaskChanged { agent, task } => {
                Self::TaskChanged { at, agent_name: agent, task_id: task }
            }
            Activity::RunStarted { agent, task, run, session } => Self::RunStarted {
                at,
                agent_name: agent,
                task_id: task,
                run_id: run,
                session_id: session,
            },
            Activity::RunFinished { agent, task, run, status } => Self::RunFinished {
                at,
                agent_name: agent,
                task_id: task,
                run_id: run,
                status: status.into(),
            },
        }
    }
}
