//! Agents: named configurations that sessions run under.

use std::path::{Path, PathBuf};

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
    /// The user's directory the agent works in, as the client gave it; `None` for the
    /// default, Orbit's own workspace in the data directory.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub workdir: Option<Workdir>,
}

/// A directory of the user's that an agent works in, checked when it was set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Workdir {
    /// The path as the client gave it (absolute, an existing directory when set).
    pub path: PathBuf,
    /// The canonical workdir root it was accepted under, if the server had roots: git does
    /// not look for the workdir's repository above it, so a root inside someone else's
    /// repository does not open that repository to Orbit's worktrees.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root: Option<PathBuf>,
}

/// Where an agent works: the one answer to "the agent's working directory".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkingDir {
    /// `<data-dir>/workspaces/<name>`: Orbit's own, with a repository Orbit makes and owns.
    Workspace(PathBuf),
    /// The user's own directory (the agent's `workdir`): Orbit never changes it, but for
    /// the worktrees it makes in its repository under the ignored `.orbit/` folder.
    User(Workdir, WorktreeOwner),
}

/// Whose worktrees those in a user's repository are, and where Orbit keeps its own notes of
/// them: several agents may work in one repository, and the repository is reachable from
/// every agent's tools, so nothing Orbit trusts about a worktree is kept there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorktreeOwner {
    /// The agent: its worktrees are `.orbit/worktrees/<agent>/`, apart from other agents'.
    pub agent: AgentName,
    /// A folder of Orbit's data directory, one file per worktree, naming the branch Orbit
    /// made for it and the commit it was made at.
    pub records: PathBuf,
    /// The server's data directory: no worktree is ever made in it.
    pub data_dir: PathBuf,
}

impl WorkingDir {
    /// An agent's working directory: its workdir when it has one and it is still a
    /// directory, else `workspace()`, the data directory's.
    pub fn of(
        agent: &Agent,
        owner: WorktreeOwner,
        workspace: impl FnOnce() -> Result<PathBuf>,
    ) -> Result<WorkingDir> {
        match &agent.workdir {
            Some(workdir) if workdir.path.is_dir() => {
                // Orbit's records are never an agent's project, whatever has moved since
                // the workdir was set.
                let data_dir = std::fs::canonicalize(&owner.data_dir);
                let in_data_dir = std::fs::canonicalize(&workdir.path)
                    .is_ok_and(|real| data_dir.is_ok_and(|data| real.starts_with(data)));
                if in_data_dir {
                    return Err(crate::Error::Invalid(format!(
                        "agent '{}' works in '{}', which is now inside the server's data directory; give the agent another workdir (PUT /api/agents/{})",
                        agent.name,
                        workdir.path.display(),
                        agent.name
                    )));
                }
                // Checked again at every use: a directory inside the root may have been
                // replaced since by a symlink that leads outside it.
                let inside = workdir.root.as_ref().is_none_or(|root| {
                    std::fs::canonicalize(&workdir.path).is_ok_and(|real| real.starts_with(root))
                });
                if !inside {
                    return Err(crate::Error::Invalid(format!(
                        "agent '{}' works in '{}', which now leads outside the workdir root it was accepted under; give the agent another workdir (PUT /api/agents/{})",
                        agent.name,
                        workdir.path.display(),
                        agent.name
                    )));
                }
                Ok(WorkingDir::User(workdir.clone(), owner))
            }
            Some(workdir) => Err(crate::Error::Invalid(format!(
                "agent '{}' works in '{}', which is no longer a directory; make it again or give the agent another workdir (PUT /api/agents/{})",
                agent.name,
                workdir.path.display(),
                agent.name
            ))),
            None => workspace().map(WorkingDir::Workspace),
        }
    }

    /// The directory the agent's CLI runs in (unless a session has a worktree).
    pub fn path(&self) -> &Path {
        match self {
            WorkingDir::Workspace(path) => path,
            WorkingDir::User(workdir, _) => &workdir.path,
        }
    }
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
            workdir: new.workdir,
        }
    }
}

/// What a caller gives to make an agent.
#[derive(Debug, Clone, Default)]
pub struct NewAgent {
    pub model: Option<String>,
    pub permission_mode: Option<PermissionMode>,
    /// A checked directory of the user's; `None` for the data directory's workspace.
    pub workdir: Option<Workdir>,
}

/// A partial update of an agent; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct AgentPatch {
    pub model: Option<String>,
    pub permission_mode: Option<PermissionMode>,
    pub status: Option<AgentStatus>,
    pub main_session_id: Option<crate::SessionId>,
    /// `Some(None)` goes back to the data directory's workspace.
    pub workdir: Option<Option<Workdir>>,
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
        if let Some(workdir) = self.workdir {
            agent.workdir = workdir;
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
    /// directory (its workspace or its workdir) is the user's work and is kept.
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
    /// Where the agent works: its `workdir` when it has one (`Invalid` when that is no
    /// longer a directory; it is the user's, so it is never made), else its workspace in
    /// the data directory, made if missing.
    async fn working_dir(&self, name: &AgentName) -> Result<WorkingDir>;
}
