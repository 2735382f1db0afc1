//! Agents as `agents/<name>/agent.json`.

use std::path::PathBuf;

use async_trait::async_trait;

use super::{FsStore, Inner, io};
use crate::{
    Agent, AgentName, AgentPatch, AgentStatus, AgentStore, Error, NewAgent, Result, timestamp,
};

impl Inner {
    fn agent_path(&self, name: &AgentName) -> PathBuf {
        self.agent_dir(name).join("agent.json")
    }

    fn create_agent(&self, name: &AgentName, new: NewAgent) -> Result<(Agent, bool)> {
        let dir = self.agent_dir(name);
        io::ensure_dir(&dir)?;
        let now = timestamp::now();
        let agent = Agent {
            name: name.clone(),
            model: new.model,
            permission_mode: new.permission_mode.unwrap_or_default(),
            status: AgentStatus::Active,
            created_at: now,
            last_active_at: now,
            main_session_id: None,
        };
        if io::create_json(&self.agent_path(name), &agent)? {
            return Ok((agent, true));
        }
        Ok((self.get_agent(name)?, false))
    }

    pub(crate) fn get_agent(&self, name: &AgentName) -> Result<Agent> {
        io::read_json(&self.agent_path(name))?.ok_or_else(|| Error::not_found("agent", name))
    }

    fn update_agent(&self, name: &AgentName, change: impl FnOnce(&mut Agent)) -> Result<Agent> {
        self.require_agent(name)?;
        io::with_lock(&self.agent_dir(name).join("agent.lock"), || {
            let mut agent = self.get_agent(name)?;
            change(&mut agent);
            io::write_json(&self.agent_path(name), &agent)?;
            Ok(agent)
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
                if let Some(model) = patch.model {
                    agent.model = Some(model);
                }
                if let Some(mode) = patch.permission_mode {
                    agent.permission_mode = mode;
                }
                if let Some(status) = patch.status {
                    agent.status = status;
                }
                if let Some(session) = patch.main_session_id {
                    agent.main_session_id = Some(session);
                }
            })
        })
        .await
    }

    async fn delete(&self, name: &AgentName) -> Result<()> {
        let name = name.clone();
        self.blocking(move |s| {
            s.require_agent(&name)?;
            // Removing agent.json first makes the agent unknown at once, even if removing
            // the rest of its tree is interrupted.
            io::remove_file(&s.agent_path(&name))?;
            io::remove_dir_all(&s.agent_dir(&name))?;
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

    async fn working_dir(&self, name: &AgentName) -> Result<PathBuf> {
        let name = name.clone();
        self.blocking(move |s| {
            s.require_agent(&name)?;
            let dir = s.root.join("workspaces").join(name.as_str());
            io::ensure_dir(&dir)?;
            Ok(dir)
        })
        .await
    }
}
