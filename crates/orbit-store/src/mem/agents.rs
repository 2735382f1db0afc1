//! Agents in memory; an agent's record holds everything of it.

use std::collections::BTreeMap;

use async_trait::async_trait;

use super::{AgentRecord, MemStore};
use crate::{
    Agent, AgentName, AgentPatch, AgentStore, Error, NewAgent, Result, SessionId, WorkingDir,
    WorktreeOwner, timestamp,
};

impl MemStore {
    /// Makes the agent; `None` when the name is taken.
    fn create_agent(&self, name: &AgentName, new: NewAgent) -> Option<Agent> {
        let mut state = self.state();
        if state.agents.contains_key(name) {
            return None;
        }
        let agent = Agent::new(name, new);
        state.agents.insert(
            name.clone(),
            AgentRecord {
                agent: agent.clone(),
                sessions: BTreeMap::new(),
                inbox: BTreeMap::new(),
                tasks: BTreeMap::new(),
                memory: BTreeMap::new(),
            },
        );
        Some(agent)
    }

    fn update_agent<T>(&self, name: &AgentName, change: impl FnOnce(&mut Agent) -> T) -> Result<T> {
        let mut state = self.state();
        Ok(change(&mut state.agent_mut(name)?.agent))
    }
}

#[async_trait]
impl AgentStore for MemStore {
    async fn create(&self, name: &AgentName, new: NewAgent) -> Result<Agent> {
        self.create_agent(name, new)
            .ok_or_else(|| Error::AlreadyExists { what: "agent", id: name.to_string() })
    }

    async fn ensure(&self, name: &AgentName) -> Result<Agent> {
        match self.create_agent(name, NewAgent::default()) {
            Some(agent) => Ok(agent),
            None => self.get(name).await,
        }
    }

    async fn get(&self, name: &AgentName) -> Result<Agent> {
        Ok(self.state().agent(name)?.agent.clone())
    }

    async fn list(&self) -> Result<Vec<Agent>> {
        Ok(self.state().agents.values().map(|record| record.agent.clone()).collect())
    }

    async fn update(&self, name: &AgentName, patch: AgentPatch) -> Result<Agent> {
        self.update_agent(name, |agent| {
            patch.apply(agent);
            agent.clone()
        })
    }

    async fn delete(&self, name: &AgentName) -> Result<()> {
        // One removal drops the agent with its sessions, inbox, tasks, runs and memory.
        let mut state = self.state();
        let Some(removed) = state.agents.remove(name) else {
            return Err(Error::not_found("agent", name));
        };
        // Its tasks are deleted with it, and the feed says so of each.
        for task in removed.tasks.keys() {
            state.feed.publish(name, task);
        }
        drop(state);
        if !removed.tasks.is_empty() {
            self.inner.task_changes.send_modify(|ticks| *ticks = ticks.wrapping_add(1));
        }
        Ok(())
    }

    async fn claim_main_session(
        &self,
        name: &AgentName,
        candidate: SessionId,
        stale: Option<SessionId>,
    ) -> Result<SessionId> {
        self.update_agent(name, |agent| match agent.main_session_id {
            Some(current) if Some(current) != stale => current,
            _ => {
                agent.main_session_id = Some(candidate);
                candidate
            }
        })
    }

    async fn update_last_active(&self, name: &AgentName) -> Result<()> {
        self.update_agent(name, |agent| agent.last_active_at = timestamp::now())
    }

    async fn working_dir(&self, name: &AgentName) -> Result<WorkingDir> {
        let agent = self.state().agent(name)?.agent.clone();
        // The memory store's only directory stands for the data directory.
        let owner = WorktreeOwner {
            agent: name.clone(),
            records: self.inner.workspaces.join(".worktree-branches").join(name.as_str()),
            data_dir: self.inner.workspaces.clone(),
        };
        WorkingDir::of(&agent, owner, || {
            let dir = self.inner.workspaces.join(name.as_str());
            // Made as the filesystem store makes every directory: private to the owner.
            crate::fs::io::ensure_dir(&dir)?;
            Ok(dir)
        })
    }
}
