//! Views of a session and what it holds: its history, the tool calls its turns wait on a
//! person for, and its transcript.

use orbit_store::timestamp::rfc3339;
use orbit_store::{AgentName, Session, SessionId, SessionMessage};
use schemars::JsonSchema;
use serde::Serialize;
use time::OffsetDateTime;

use crate::wire;

/// Token counts, summed over a session's turns.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct UsageView {
    pub input_tokens: u64,
    pub output_tokens: u64,
    pub cache_creation_input_tokens: u64,
    pub cache_read_input_tokens: u64,
}

/// A session: one conversation.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionView {
    #[schemars(with = "wire::Ulid")]
    pub id: SessionId,
    #[schemars(with = "wire::AgentName")]
    pub agent_name: AgentName,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(max = orbit_store::limits::TITLE))]
    pub title: Option<String>,
    /// The Claude Code CLI's own session id, resumed by later turns.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub sdk_session_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "wire::Model")]
    pub model: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "wire::PermissionMode")]
    pub permission_mode: Option<wire::PermissionMode>,
    /// The git worktree this session's turns run in, if it asked for one.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "wire::Ulid")]
    pub worktree_id: Option<String>,
    /// The node that holds that worktree (with `--database-url`, several nodes): its turns
    /// run there alone, and any other node answers 409 naming it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "wire::NodeName")]
    pub node: Option<String>,
    /// The node this session was pinned to until that node was released as gone for good
    /// (`POST /api/nodes/{node}/release`): its worktree was lost with that node's disk, and
    /// its turns run in the agent's working directory since, on any node.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "wire::NodeName")]
    pub released_from: Option<String>,
    #[serde(with = "rfc3339")]
    #[schemars(with = "wire::Timestamp")]
    pub created_at: OffsetDateTime,
    #[serde(with = "rfc3339::option")]
    #[schemars(with = "Option<wire::Timestamp>")]
    pub last_message_at: Option<OffsetDateTime>,
    pub message_count: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "f64")]
    pub total_cost_usd: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "UsageView")]
    pub usage: Option<UsageView>,
    /// The start of the latest message, on one line.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "MessagePreviewView")]
    pub last_message: Option<MessagePreviewView>,
    /// What the turns that ended on `day` (UTC, the latest day a turn with a cost ended)
    /// cost: an agent's cost today is the sum over its sessions whose `day` is today.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "DayCostView")]
    pub day_cost: Option<DayCostView>,
}

/// The start of a session message: at most 160 characters, whitespace made single spaces, a
/// cut one ending with `…`.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessagePreviewView {
    pub role: wire::Role,
    #[schemars(length(max = orbit_store::MessagePreview::CHARS))]
    pub text: String,
}

/// The cost of a session's turns that ended on one UTC day.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct DayCostView {
    /// The UTC date, `YYYY-MM-DD`.
    #[schemars(regex(pattern = r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"))]
    pub day: String,
    pub cost_usd: f64,
}

impl From<Session> for SessionView {
    fn from(session: Session) -> Self {
        Self {
            id: session.id,
            agent_name: session.agent_name,
            title: session.title,
            sdk_session_id: session.sdk_session_id,
            model: session.model,
            permission_mode: session.permission_mode.map(Into::into),
            worktree_id: session.worktree_id,
            node: session.node,
            released_from: session.released_from,
            created_at: session.created_at,
            last_message_at: session.last_message_at,
            message_count: session.message_count,
            total_cost_usd: session.total_cost_usd,
            usage: session.usage.map(|usage| UsageView {
                input_tokens: usage.input_tokens,
                output_tokens: usage.output_tokens,
                cache_creation_input_tokens: usage.cache_creation_input_tokens,
                cache_read_input_tokens: usage.cache_read_input_tokens,
            }),
            last_message: session.last_message.map(|preview| MessagePreviewView {
                role: preview.role.into(),
                text: preview.text,
            }),
            day_cost: session
                .day_cost
                .map(|day| DayCostView { day: day.day, cost_usd: day.cost_usd }),
        }
    }
}

/// One message of a session's history.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SessionMessageView {
    pub role: wire::Role,
    pub content: String,
    #[serde(with = "rfc3339")]
    #[schemars(with = "wire::Timestamp")]
    pub created_at: OffsetDateTime,
}

impl From<SessionMessage> for SessionMessageView {
    fn from(message: SessionMessage) -> Self {
        Self { role: message.role.into(), content: message.content, created_at: message.created_at }
    }
}

/// A tool call of an `ask`-mode turn waiting for a person's answer (`POST
/// /api/agents/{name}/sessions/{id}/permissions/{requestId}`, from any client).
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ApprovalView {
    #[schemars(with = "wire::Ulid")]
    pub request_id: String,
    #[schemars(with = "wire::AgentName")]
    pub agent_name: AgentName,
    #[schemars(with = "wire::Ulid")]
    pub session_id: SessionId,
    /// The task run whose turn asks; absent for a chat's.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "Option<wire::Ulid>")]
    pub run_id: Option<orbit_store::RunId>,
    pub tool_name: String,
    /// The tool's input, as the model gave it.
    pub input: serde_json::Value,
    #[serde(with = "rfc3339")]
    #[schemars(with = "wire::Timestamp")]
    pub created_at: OffsetDateTime,
    /// The tool is denied at this moment unless answered before.
    #[serde(with = "rfc3339")]
    #[schemars(with = "wire::Timestamp")]
    pub expires_at: OffsetDateTime,
}

impl From<orbit_store::PendingApproval> for ApprovalView {
    fn from(pending: orbit_store::PendingApproval) -> Self {
        Self {
            request_id: pending.request_id,
            agent_name: pending.agent,
            session_id: pending.session,
            run_id: pending.run,
            tool_name: pending.tool_name,
            input: pending.input,
            created_at: pending.created_at,
            expires_at: pending.expires_at,
        }
    }
}

/// What a transcript entry records.
#[derive(Debug, Clone, Copy, Serialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum TranscriptKindView {
    /// The message that started the turn (`data.text`), stamped when it was sent.
    User,
    /// An inbox message delivered to the model in the turn (`data`: `messageId`,
    /// `fromAgent`, `fromKind`, `messageType`, `requestId`, `message`).
    Inbox,
    /// One event of the turn's stream, exactly as the stream showed it (`data`: a chat event).
    Event,
    /// The turn's entries past its size limit were left out (`data.omitted`: how many).
    Omitted,
}

impl From<orbit_store::TranscriptKind> for TranscriptKindView {
    fn from(kind: orbit_store::TranscriptKind) -> Self {
        use orbit_store::TranscriptKind as Kind;
        match kind {
            Kind::User => Self::User,
            Kind::Inbox => Self::Inbox,
            Kind::Event => Self::Event,
            Kind::Omitted => Self::Omitted,
        }
    }
}

/// One entry of a session's transcript.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TranscriptEntryView {
    /// The turn the entry belongs to, fresh for every turn.
    #[schemars(with = "wire::Ulid")]
    pub turn: String,
    pub kind: TranscriptKindView,
    /// When it happened.
    #[serde(with = "rfc3339")]
    #[schemars(with = "wire::Timestamp")]
    pub at: OffsetDateTime,
    pub data: serde_json::Value,
}

impl From<orbit_store::TranscriptEntry> for TranscriptEntryView {
    fn from(entry: orbit_store::TranscriptEntry) -> Self {
        Self { turn: entry.turn, kind: entry.kind.into(), at: entry.at, data: entry.data }
    }
}

/// `GET /api/agents/{name}/sessions/{id}/transcript`: a page of entries, oldest first.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TranscriptBody {
    pub entries: Vec<TranscriptEntryView>,
    /// Pass as `cursor` for the next page; `null` when this page reaches the end.
    #[schemars(with = "Option<wire::TranscriptCursor>")]
    pub next_cursor: Option<String>,
    /// Where this page ends, on every page: on the last one, pass it as `cursor` later to read
    /// only the turns that ended since.
    #[schemars(with = "wire::TranscriptCursor")]
    pub end_cursor: String,
}
