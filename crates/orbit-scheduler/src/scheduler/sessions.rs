//! Which session a run uses, and the task's worktree.
//!
//! An isolated run gets a fresh session, made only after its run record started (so a
//! skipped slot makes none), in the task's worktree when it has one. Main-mode runs continue
//! the agent's one main session: it is made once, even when two runs (in one process or
//! two) find none at the same moment, and its turns are taken one at a time.

use std::sync::{Arc, PoisonError};

use orbit_store::{NewSession, SessionId, Task, TaskPatch};

use super::Scheduler;

impl Scheduler {
    /// Makes an isolated run's session under the id its run record names.
    pub(super) async fn isolated_session(
        &self,
        task: &Task,
        session: SessionId,
    ) -> orbit_store::Result<()> {
        let title = format!(
            "task: {}",
            task.name.as_deref().unwrap_or(&task.prompt).chars().take(60).collect::<String>()
        );
        let node = if task.worktree { Some(self.pin_here(task).await?) } else { None };
        let worktree_id =
            if task.worktree { Some(self.ensure_worktree(task).await?) } else { None };
        // Its worktree is the task's, on the node the task is pinned to (this one).
        let new = NewSession { title: Some(title), worktree_id, node, ..NewSession::default() };
        self.inner.stores.sessions.create_with_id(&task.agent_name, session, new).await?;
        self.announce(orbit_agent::Activity::SessionCreated {
            agent: task.agent_name.clone(),
            session,
        });
        Ok(())
    }

    /// The agent's main session, made and chosen once: of two runs that both find none, the
    /// store's claim picks one candidate and the other is deleted.
    pub(super) async fn main_session(&self, task: &Task) -> orbit_store::Result<SessionId> {
        let stores = &self.inner.stores;
        let agent = stores.agents.get(&task.agent_name).await?;
        if let Some(main) = agent.main_session_id
            && stores.sessions.get(&task.agent_name, &main).await.is_ok()
        {
            return Ok(main);
        }
        let candidate = stores
            .sessions
            .create(
                &task.agent_name,
                NewSession { title: Some("main".into()), ..NewSession::default() },
            )
            .await?;
        let chosen = stores
            .agents
            .claim_main_session(&task.agent_name, candidate.id, agent.main_session_id)
            .await?;
        if chosen != candidate.id {
            if let Err(err) = stores.sessions.delete(&task.agent_name, &candidate.id).await {
                tracing::warn!(agent = %task.agent_name, session = %candidate.id, error = %err, "could not delete a main session that lost the race");
            }
        } else {
            self.announce(orbit_agent::Activity::SessionCreated {
                agent: task.agent_name.clone(),
                session: chosen,
            });
        }
        Ok(chosen)
    }

    /// This process's queue for the agent's main session.
    pub(super) fn main_queue(&self, agent: &orbit_store::AgentName) -> Arc<tokio::sync::Mutex<()>> {
        let mut queues = self.inner.main_sessions.lock().unwrap_or_else(PoisonError::into_inner);
        queues.entry(agent.clone()).or_default().clone()
    }

    /// The task's worktree, made at its first run.
    /// Pins a task with a worktree to this node, whose disk is about to hold the worktree,
    /// when it has no node: one made before nodes were named, or one whose node was released
    /// as gone for good. Pinned under the task's lock, so two nodes never both take it; a
    /// task pinned to another node meanwhile is refused here.
    async fn pin_here(&self, task: &Task) -> orbit_store::Result<String> {
        let here = &self.inner.options.node;
        let pinned = match &task.node {
            Some(node) => node.clone(),
            None => {
                let patch = TaskPatch { pin_to: Some(here.clone()), ..TaskPatch::default() };
                let task =
                    self.inner.stores.tasks.update(&task.agent_name, &task.id, patch).await?;
                if task.node.as_ref() == Some(here) {
                    tracing::info!(task = %task.id, node = %here, "pinned a task with a worktree to this node");
                }
                task.node.unwrap_or_default()
            }
        };
        if pinned != *here {
            return Err(orbit_store::Error::Conflict(format!(
                "task {} works in a git worktree on node '{pinned}'",
                task.id
            )));
        }
        Ok(pinned)
    }

    async fn ensure_worktree(&self, task: &Task) -> orbit_store::Result<String> {
        let working_dir = self.inner.stores.agents.working_dir(&task.agent_name).await?;
        let id = task.id.to_string();
        let cannot = |err: orbit_agent::Error| {
            orbit_store::Error::Invalid(format!("cannot make the task's worktree: {err}"))
        };
        if !orbit_agent::worktree::exists(&working_dir, &id).await.map_err(cannot)? {
            orbit_agent::worktree::create(&working_dir, &id, task.branch.as_deref())
                .await
                .map_err(cannot)?;
        }
        Ok(id)
    }
}
