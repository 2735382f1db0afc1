//! Agents as `agents/<name>/agent.json`.

use std::path::PathBuf;

use async_trait::async_trait;

use super::{FsStore, Inner, io};
use crate::{
    Agent, AgentName, AgentPatch, AgentStore, Error, NewAgent, Result, SessionId, WorkingDir,
    WorktreeOwner, timestamp,
};

impl Inner {
    fn agent_path(&self, name: &AgentName) -> PathBuf {
        self.agent_dir(name).join("agent.json")
    }

    fn create_agent(&self, name: &AgentName, new: NewAgent) -> Result<(Agent, bool)> {
        self.with_agent_exclusive(name, || self.create_agent_locked(name, new))
    }

    fn create_agent_locked(&self, name: &AgentName, new: NewAgent) -> Result<(Agent, bool)> {
        if let Some(agent) = io::read_json::<Agent>(&self.agent_path(name))? {
            return Ok((agent, false));
        }
        // A directory without its agent.json is what an older, interrupted deletion left:
        // nothing in it may reach the new agent.
        if self.trash_agent_dir(name)? {
            tracing::warn!(agent = %name, "cleared the remains of an earlier agent of this name");
        }
        let dir = self.agent_dir(name);
        io::ensure_dir(&dir)?;
        let agent = Agent::new(name, new);
        if io::create_json(&self.agent_path(name), &agent)? {
            return Ok((agent, true));
        }
        Ok((self.get_agent(name)?, false))
    }

    pub(crate) fn get_agent(&self, name: &AgentName) -> Result<Agent> {
        io::read_json(&self.agent_path(name))?.ok_or_else(|| Error::not_found("agent", name))
    }

    fn update_agent<T>(
        &self,
        name: &AgentName,
        change: impl FnOnce(&mut Agent) -> T,
    ) -> Result<(Agent, T)> {
        self.with_agent(name, || {
            io::with_lock(&self.agent_dir(name).join("agent.lock"), || {
                let mut agent = self.get_agent(name)?;
                let result = change(&mut agent);
                io::write_json(&self.agent_path(name), &agent)?;
                Ok((agent, result))
            })
        })
    }
}

#[async_trait]
impl AgentStore for FsStore {
    async fn create(&self, name: &AgentName, new: NewAgent) -> Result<Agent> {
        let name = name.clone();
        let (agent, created) = self.blocking(move |s| s.create_agent(&name, new)).await?;
        if created {
            Ok(agent)
        } else {
            Err(Error::AlreadyExists { what: "agent", id: agent.name.to_string() })
        }
    }

    async fn ensure(&self, name: &AgentName) -> Result<Agent> {
        let name = name.clone();
        self.blocking(move |s| match s.get_agent(&name) {
            Err(Error::NotFound { .. }) => Ok(s.create_agent(&name, NewAgent::default())?.0),
            other => other,
        })
        .await
    }

    async fn get(&self, name: &AgentName) -> Result<Agent> {
        let name = name.clone();
        self.blocking(move |s| s.get_agent(&name)).await
    }

    async fn list(&self) -> Result<Vec<Agent>> {
        self.blocking(|s| {
            let dir = s.root.join("agents");
            let mut agents = Vec::new();
            for name in io::list_names(&dir, "")? {
                let Ok(name) = AgentName::parse(&name) else { continue };
                if let Some(agent) = io::read_json_lenient(&s.agent_path(&name)) {
                    agents.push(agent);
                }
            }
            Ok(agents)
        })
        .await
    }

    async fn update(&self, name: &AgentName, patch: AgentPatch) -> Result<Agent> {
        let name = name.clone();
        self.blocking(move |s| {
            s.update_agent(&name, |agent| {
                patch.apply(agent);
            })
            .map(|(agent, ())| agent)
        })
        .await
    }

    async fn claim_main_session(
        &self,
        name: &AgentName,
        candidate: SessionId,
        stale: Option<SessionId>,
    ) -> Result<SessionId> {
        let name = name.clone();
        self.blocking(move |s| {
            s.update_agent(&name, |agent| match agent.main_session_id {
                Some(current) if Some(current) != stale => current,
                _ => {
                    agent.main_session_id = Some(candidate);
                    candidate
                }
            })
            .map(|(_, main)| main)
        })
        .await
    }

    async fn delete(&self, name: &AgentName) -> Result<()> {
        let name = name.clone();
        self.blocking(move |s| {
            s.with_agent_exclusive(&name, || {
                s.require_agent(&name)?;
                let tasks = s.task_ids(&name)?;
                // One rename makes the agent and everything of it unknown at once.
                s.trash_agent_dir(&name)?;
                s.inbox_index.forget(&name);
                s.quiet_arrivals.forget(&s.agent_dir(&name).join("inbox"));
                s.quiet_arrivals.forget(&s.agent_dir(&name).join("tasks"));
                s.task_index.forget(&name);
                s.sessions.forget(&name);
                // The agent is gone for every reader from the rename on, so its tasks' changes
                // are told even when the directory's fsync fails (the error is still answered).
                let synced = io::sync_dir(&s.root.join("agents"));
                // Its tasks went with it: every scheduler is told of each, as of a task
                // deleted alone, rather than planning them until it next re-reads every task.
                // Still under the agent's lock, right after the rename: a deletion and its
                // announcement are one step to whoever takes the lock next, and a process
                // killed between them leaves the smallest window (a scheduler that missed
                // the changes still drops the tasks at its next re-read of every task). The
                // feed's lock is a leaf: nothing is locked inside it.
                for task in &tasks {
                    s.publish_change(&name, task);
                }
                synced
            })?;
            s.empty_trash();
            Ok(())
        })
        .await
    }

    async fn update_last_active(&self, name: &AgentName) -> Result<()> {
        let name = name.clone();
        self.blocking(move |s| {
            s.update_agent(&name, |agent| agent.last_active_at = timestamp::now()).map(drop)
        })
        .await
    }

    async fn working_dir(&self, name: &AgentName) -> Result<WorkingDir> {
        let name = name.clone();
        self.blocking(move |s| {
            let agent = s.get_agent(&name)?;
            let owner = WorktreeOwner {
                agent: name.clone(),
                records: s.agent_dir(&name).join("worktree-branches"),
                data_dir: s.root.clone(),
            };
            WorkingDir::of(&agent, owner, || {
                let dir = s.root.join("workspaces").join(name.as_str());
                io::ensure_dir(&dir)?;
                Ok(dir)
            })
        })
        .await
    }
}
