//! Tool calls waiting for a person's answer, as every node of a cluster lists them.
//!
//! An `ask`-mode tool call waits inside the turn that made it, on the server process that
//! runs the turn, and only that process can take the answer (other nodes pass it on by a
//! signal). A store that several nodes share also keeps a copy of each waiting call
//! (`InstanceStore::share_approval`), naming the instance whose turn waits, so that any node
//! can list it; the copy is withdrawn when the wait ends, and the copies of an instance whose
//! heartbeat lapsed (a node that died without withdrawing them) are not listed, nor is a
//! copy past its expiry; a copy whose withdrawal failed goes with its instance's next
//! heartbeat (`InstanceStore::keep_approvals`).

use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{AgentName, InstanceId, RunId, SessionId};

/// A tool call of a running turn that waits for a person's answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PendingApproval {
    /// The permission request's id, which an answer names (a ULID).
    pub request_id: String,
    pub agent: AgentName,
    pub session: SessionId,
    /// The task run whose turn asks, if a scheduled run's.
    pub run: Option<RunId>,
    pub tool_name: String,
    /// The tool's input, as the model gave it.
    pub input: serde_json::Value,
    /// The CLI's id of the tool call.
    pub tool_use_id: String,
    #[serde(with = "crate::timestamp::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Denied at this moment unless answered before.
    #[serde(with = "crate::timestamp::rfc3339")]
    pub expires_at: OffsetDateTime,
    /// The server process whose turn waits, the only one that can take the answer.
    pub instance: InstanceId,
}
