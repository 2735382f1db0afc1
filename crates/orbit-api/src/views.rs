//! What the API answers: views of the stored records, built from them, and the bodies that
//! carry them. A view names every field it shows, so what a record keeps for the server's
//! own use (leases, a task's anchor and slot bookkeeping) never reaches the wire.
//!
//! Optional fields are left out when empty (`skip_serializing_if`); the few that the contract
//! always sends, `null` when empty (`lastMessageAt`, `readAt`, `nextRun`, `lastRun`), say so
//! in their schema.
//!
//! The views live by what they show, as the routes do: `agents` (with their worktrees),
//! `sessions` (with their history, waiting tool calls and transcripts), `inbox`, `tasks` (with
//! their runs) and `nodes`, re-exported here. This module keeps what every route shares: the
//! plain answers (`SuccessView`, `HealthView`) and the bodies that carry the views.

mod agents;
mod inbox;
mod nodes;
mod sessions;
mod tasks;

pub use agents::{AgentView, WorktreeKeptView, WorktreeView};
pub use inbox::MessageView;
pub use nodes::{RecordRefView, ReleasedNodeView};
pub use sessions::{ApprovalView, SessionMessageView, SessionView, TranscriptBody};
pub use tasks::{RunView, SchedulePreviewBody, TaskView};

use orbit_store::timestamp::rfc3339;
use schemars::JsonSchema;
use serde::Serialize;
use time::OffsetDateTime;

use crate::wire;

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

/// `GET /health`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct HealthView {
    #[schemars(extend("const" = "ok"))]
    pub status: &'static str,
    #[serde(with = "rfc3339")]
    #[schemars(with = "wire::Timestamp")]
    pub timestamp: OffsetDateTime,
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
