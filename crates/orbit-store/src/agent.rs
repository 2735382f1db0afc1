//! Agents: named configurations that sessions run under.

use std::path::PathBuf;

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{AgentName, Result};

/// How an agent's tool calls are gated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PermissionMode {
    /// Read-only tools run; every tool that writes or executes is denied.
    #[default]
    Safe,
    /// Each tool call that is not read-only waits for a person's answer.
    Ask,
    /// Every tool runs freely.
    AllowAll,
}

/// Whether an agent is in use.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AgentStatus {
    #[default]
    Active,
    Inactive,
}

/// An agent as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Agent {
    pub name: AgentName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub model: Option<String>,
    pub permission_mode: PermissionMode,
    pub status: AgentStatus,
    #[serde(with = "crate::timestamp::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "crate::timestamp::rfc3339")]
    pub last_active_at: OffsetDateTime,
    /// The session that `main`-mode task runs continue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub main_session_id: Option<crate::SessionId>,
}

impl Agent {
    /// A new active agent, made now.
    pub fn new(name: &AgentName, new: NewAgent) -> Self {
        let now = crate::timestamp::now();
        Self {
            name: name.clone(),
            model: new.model,
            permission_mode: new.permission_mode.unwrap_or_default(),
            status: AgentStatus::Active,
            created_at: now,
            last_active_at: now,
            main_session_id: None,
        }
    }
}

/// What a caller gives to make an agent.
#[derive(Debug, Clone, Default)]
pub struct NewAgent {
    pub model: Option<String>,
    pub permission_mode: Option<PermissionMode>,
}

/// A partial update of an agent; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct AgentPatch {
    pub model: Option<String>,
    pub permission_mode: Option<PermissionMode>,
    pub status: Option<AgentStatus>,
    pub main_session_id: Option<crate::SessionId>,
}

impl AgentPatch {
    /// Applies the patch to an agent: each field given replaces the agent's.
    pub fn apply(self, agent: &mut Agent) {
        if let Some(model) = self.model {
            agent.model = Some(model);
        }
        if let Some(mode) = self.permission_mode {
            agent.permission_mode = mode;
        }
        if let Some(status) = self.status {
            agent.status = status;
        }
        if let Some(session) = self.main_session_id {
            agent.main_session_id = Some(session);
        }
    }
}

/// Storage of agents.
#[async_trait]
pub trait AgentStore: Send + Sync {
    /// Makes an agent; `AlreadyExists` when the name is taken.
    async fn create(&self, name: &AgentName, new: NewAgent) -> Result<Agent>;
    /// Returns the agent, making it with defaults when missing.
    async fn ensure(&self, name: &AgentName) -> Result<Agent>;
    /// `NotFound` when missing.
    async fn get(&self, name: &AgentName) -> Result<Agent>;
    /// Every agent, by name.
    async fn list(&self) -> Result<Vec<Agent>>;
    /// Applies a partial update.
    async fn update(&self, name: &AgentName, patch: AgentPatch) -> Result<Agent>;
    /// Removes the agent with its sessions, inbox, tasks, runs and memory. Its working
    /// directory is the user's work and is kept.
    async fn delete(&self, name: &AgentName) -> Result<()>;
    /// Makes `candidate` the agent's main session unless it has one already (other than
    /// `stale`, a main session found deleted); returns the main session as it now is. Of two
    /// callers racing to make the first main session, both get the same answer.
    async fn claim_main_session(
        &self,
        name: &AgentName,
        candidate: crate::SessionId,
        stale: Option<crate::SessionId>,
    ) -> Result<crate::SessionId>;
    /// Sets `lastActiveAt` to now.
    async fn update_last_active(&self, name: &AgentName) -> Result<()>;
    /// The agent's working directory, made if missing.
    async fn working_dir(&self, name: &AgentName) -> Result<PathBuf>;
}
