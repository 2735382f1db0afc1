//! Views of an agent and of the git worktrees of its working directory.

use orbit_store::timestamp::rfc3339;
use orbit_store::{Agent, AgentName, SessionId, TaskId};
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
