//! What the API answers: views of the stored records, built from them, and the bodies that
//! carry them. A view names every field it shows, so what a record keeps for the server's
//! own use (leases, a task's anchor and slot bookkeeping) never reaches the wire.
//!
//! Optional fields are left out when empty (`skip_serializing_if`); the few that the contract
//! always sends, `null` when empty (`lastMessageAt`, `readAt`, `nextRun`, `lastRun`), say so
//! in their schema.

use orbit_store::timestamp::rfc3339;
use orbit_store::{
    Agent, AgentName, InboxMessage, MessageId, Run, RunId, Session, SessionId, SessionMessage,
    Task, TaskId,
};
use schemars::JsonSchema;
use serde::Serialize;
use time::OffsetDateTime;

use crate::wire;

/// An agent.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AgentView {
    #[schemars(with = "wire::AgentName")]
    pub name: AgentName,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "wire::Model")]
    pub model: Option<String>,
    pub permission_mode: wire::PermissionMode,
    pub status: wire::AgentStatus,
    #[serde(with = "rfc3339")]
    #[schemars(with = "wire::Timestamp")]
    pub created_at: OffsetDateTime,
    #[serde(with = "rfc3339")]
    #[schemars(with = "wire::Timestamp")]
    pub last_active_at: OffsetDateTime,
    /// The session that `main`-mode task runs continue (made by the first such run).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "wire::Ulid")]
    pub main_session_id: Option<SessionId>,
    /// The directory of the user's the agent works in, as it was given; `null` for the
    /// default, the agent's workspace in the server's data directory.
    pub workdir: Option<String>,
}

impl From<Agent> for AgentView {
    fn from(agent: Agent) -> Self {
        Self {
            name: agent.name,
            model: agent.model,
            permission_mode: agent.permission_mode.into(),
            status: agent.status.into(),
            created_at: agent.created_at,
            last_active_at: agent.last_active_at,
            main_session_id: agent.main_session_id,
            workdir: agent.workdir.map(|workdir| workdir.path.display().to_string()),
        }
    }
}

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

/// An inbox message.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    #[schemars(with = "wire::Ulid")]
    pub id: MessageId,
    /// The sender's name: an agent's, or a person's when `fromKind` is `person`.
    #[schemars(with = "wire::SenderName")]
    pub from_agent: String,
    pub from_kind: wire::SenderKind,
    #[schemars(with = "wire::AgentName")]
    pub to_agent: AgentName,
    #[schemars(length(max = orbit_store::limits::INBOX_MESSAGE))]
    pub message: String,
    pub message_type: wire::MessageType,
    /// For a response, the id of the request it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "wire::Ulid")]
    pub request_id: Option<MessageId>,
    pub status: wire::MessageStatus,
    /// The session holding the message while a turn works on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "wire::Ulid")]
    pub claimed_by: Option<SessionId>,
    #[serde(skip_serializing_if = "Option::is_none", with = "rfc3339::option")]
    #[schemars(with = "wire::Timestamp")]
    pub claimed_at: Option<OffsetDateTime>,
    /// How many turns the message reached the model in without being handled.
    pub deliveries: u32,
    #[serde(with = "rfc3339")]
    #[schemars(with = "wire::Timestamp")]
    pub created_at: OffsetDateTime,
    #[serde(with = "rfc3339::option")]
    #[schemars(with = "Option<wire::Timestamp>")]
    pub read_at: Option<OffsetDateTime>,
}

impl From<InboxMessage> for MessageView {
    fn from(message: InboxMessage) -> Self {
        Self {
            id: message.id,
            from_agent: message.from_agent,
            from_kind: message.from_kind.into(),
            to_agent: message.to_agent,
            message: message.message,
            message_type: message.message_type.into(),
            request_id: message.request_id,
            status: message.status.into(),
            claimed_by: message.claimed_by,
            claimed_at: message.claimed_at,
            deliveries: message.deliveries,
            created_at: message.created_at,
            read_at: message.read_at,
        }
    }
}

/// A scheduled task.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    #[schemars(with = "wire::Ulid")]
    pub id: TaskId,
    #[schemars(with = "wire::AgentName")]
    pub agent_name: AgentName,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(max = orbit_store::limits::TITLE))]
    pub name: Option<String>,
    #[schemars(length(max = orbit_store::limits::PROMPT))]
    pub prompt: String,
    pub schedule_type: wire::ScheduleType,
    #[schemars(length(max = orbit_store::limits::SCHEDULE_VALUE))]
    pub schedule_value: String,
    pub context_mode: wire::ContextMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(max = orbit_store::limits::TIMEZONE))]
    pub timezone: Option<String>,
    pub status: wire::TaskStatus,
    #[serde(with = "rfc3339::option")]
    #[schemars(with = "Option<wire::Timestamp>")]
    pub next_run: Option<OffsetDateTime>,
    #[serde(with = "rfc3339::option")]
    #[schemars(with = "Option<wire::Timestamp>")]
    pub last_run: Option<OffsetDateTime>,
    #[serde(with = "rfc3339")]
    #[schemars(with = "wire::Timestamp")]
    pub created_at: OffsetDateTime,
    /// Present (`true`) when runs work in the task's own git worktree.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub worktree: bool,
    /// The branch of that worktree.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub branch: Option<String>,
    /// The node that holds that worktree: only its scheduler runs the task, and only it
    /// deletes the task (any other node answers 409 naming it).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "wire::NodeName")]
    pub node: Option<String>,
}

impl From<Task> for TaskView {
    fn from(task: Task) -> Self {
        Self {
            id: task.id,
            agent_name: task.agent_name,
            name: task.name,
            prompt: task.prompt,
            schedule_type: task.schedule_type.into(),
            schedule_value: task.schedule_value,
            context_mode: task.context_mode.into(),
            timezone: task.timezone,
            status: task.status.into(),
            next_run: task.next_run,
            last_run: task.last_run,
            created_at: task.created_at,
            worktree: task.worktree,
            branch: task.branch,
            node: task.node,
        }
    }
}

/// One run of a task (or, `skipped`, slots that did not run).
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    #[schemars(with = "wire::Ulid")]
    pub id: RunId,
    #[schemars(with = "wire::Ulid")]
    pub task_id: TaskId,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "wire::Ulid")]
    pub session_id: Option<SessionId>,
    pub status: wire::RunStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub result: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub error: Option<String>,
    #[serde(with = "rfc3339")]
    #[schemars(with = "wire::Timestamp")]
    pub started_at: OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none", with = "rfc3339::option")]
    #[schemars(with = "wire::Timestamp")]
    pub completed_at: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u64")]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "f64")]
    pub cost_usd: Option<f64>,
    /// For a skipped run: how many slots in a row were skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32", range(min = 1))]
    pub skipped_slots: Option<u32>,
}

impl From<Run> for RunView {
    fn from(run: Run) -> Self {
        Self {
            id: run.id,
            task_id: run.task_id,
            session_id: run.session_id,
            status: run.status.into(),
            result: run.result,
            error: run.error,
            started_at: run.started_at,
            completed_at: run.completed_at,
            duration_ms: run.duration_ms,
            cost_usd: run.cost_usd,
            skipped_slots: run.skipped_slots,
        }
    }
}

/// A git worktree of an agent's working directory.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct WorktreeView {
    /// The id of the session or task it was made for (its directory's name).
    pub id: String,
    /// Where it is on the server's disk.
    pub path: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub branch: Option<String>,
    /// The session it belongs to, while that session exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "wire::Ulid")]
    pub session_id: Option<SessionId>,
    /// The task it belongs to, while that task exists.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "wire::Ulid")]
    pub task_id: Option<TaskId>,
}

/// A worktree kept because it holds uncommitted work.
#[derive(Debug, Serialize, JsonSchema)]
pub struct WorktreeKeptView {
    #[schemars(with = "wire::Ulid")]
    pub id: String,
    pub reason: String,
}

impl From<orbit_agent::workflow::KeptWorktree> for WorktreeKeptView {
    fn from(kept: orbit_agent::workflow::KeptWorktree) -> Self {
        Self { id: kept.id, reason: "it has uncommitted changes".to_owned() }
    }
}

/// The answer of an action that returns nothing else.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SuccessView {
    #[schemars(extend("const" = true))]
    pub success: bool,
    /// Deleting a session or task: its worktree, kept because it has uncommitted changes.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "WorktreeKeptView")]
    pub worktree_kept: Option<WorktreeKeptView>,
}

impl SuccessView {
    pub const DONE: Self = Self { success: true, worktree_kept: None };
}

/// A session or a task, by its agent and id.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RecordRefView {
    #[schemars(with = "wire::AgentName")]
    pub agent_name: AgentName,
    #[schemars(with = "wire::Ulid")]
    pub id: String,
}

/// `POST /api/nodes/{node}/release`: what was pinned to the node and is no longer.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReleasedNodeView {
    #[schemars(with = "wire::NodeName")]
    pub node: String,
    /// Sessions that lost their pin and their worktree (each now says `releasedFrom`).
    pub sessions: Vec<RecordRefView>,
    /// Tasks that lost their pin; one with a worktree gets a new one at its next run, on
    /// the node that runs it, and is pinned there.
    pub tasks: Vec<RecordRefView>,
}

/// `GET /health`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct HealthView {
    #[schemars(extend("const" = "ok"))]
    pub status: &'static str,
    #[serde(with = "rfc3339")]
    #[schemars(with = "wire::Timestamp")]
    pub timestamp: OffsetDateTime,
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

/// Declares the one-key bodies the API answers with (`{"agent": {...}}`).
macro_rules! body {
    ($(#[$doc:meta])* $name:ident { $field:ident: $ty:ty }) => {
        $(#[$doc])*
        #[derive(Debug, Serialize, JsonSchema)]
        pub struct $name {
            pub $field: $ty,
        }
    };
}

body!(AgentBody { agent: AgentView });
body!(AgentsBody { agents: Vec<AgentView> });
body!(SessionBody { session: SessionView });
body!(MessageBody { message: MessageView });
body!(TaskBody { task: TaskView });
body!(RunBody { run: RunView });

/// A schedule's next fire times, soonest first.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulePreviewBody {
    /// When a task made now with this schedule would run: `count` times, fewer for a
    /// schedule that stops firing (a `once` fires one time).
    #[serde(serialize_with = "timestamps")]
    #[schemars(with = "Vec<wire::Timestamp>", length(min = 1, max = 20))]
    pub next_runs: Vec<OffsetDateTime>,
}

fn timestamps<S: serde::Serializer>(times: &[OffsetDateTime], to: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = to.serialize_seq(Some(times.len()))?;
    /// One time, spelt as every other time of the API.
    #[derive(Serialize)]
    struct At(#[serde(with = "rfc3339")] OffsetDateTime);
    for at in times {
        seq.serialize_element(&At(*at))?;
    }
    seq.end()
}

/// Declares the bodies of paged listings (`page`): one key, and `nextCursor` when a page was
/// asked for and more records follow.
macro_rules! listing {
    ($name:ident { $field:ident: $ty:ty }) => {
        #[derive(Debug, Serialize, JsonSchema)]
        #[serde(rename_all = "camelCase")]
        pub struct $name {
            pub $field: $ty,
            /// Present when the request gave a `limit` and more records follow: the `cursor`
            /// of the next page.
            #[serde(skip_serializing_if = "Option::is_none")]
            pub next_cursor: Option<String>,
        }
    };
}

listing!(SessionsBody { sessions: Vec<SessionView> });
listing!(MessagesBody { messages: Vec<MessageView> });
listing!(TasksBody { tasks: Vec<TaskView> });
listing!(RunsBody { runs: Vec<RunView> });
body!(WorktreesBody { worktrees: Vec<WorktreeView> });
body!(ApprovalsBody { approvals: Vec<ApprovalView> });

/// A session with its whole history, oldest first.
#[derive(Debug, Serialize, JsonSchema)]
pub struct SessionDetailBody {
    pub session: SessionView,
    pub messages: Vec<SessionMessageView>,
}

/// Views of every record of a listing, in order.
pub fn all<R, V: From<R>>(records: Vec<R>) -> Vec<V> {
    records.into_iter().map(V::from).collect()
}
