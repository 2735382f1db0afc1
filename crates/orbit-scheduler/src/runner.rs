//! What runs a task's turn: a seam, so the scheduler's timing is tested without a model, and
//! [`AgentRunner`], the real one on the agent pool.

use std::time::Duration;

use async_trait::async_trait;
use orbit_agent::{AgentPool, ChatOptions, TurnKind};
use orbit_store::{AgentName, SessionId, Task};

/// How a run's turn ended well.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub result: String,
    pub cost_usd: Option<f64>,
}

/// Why a run's turn did not end well.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RunError {
    /// The session already runs a turn someone else started; the turn did not begin and may
    /// be tried again.
    #[error("the session is busy with another turn")]
    SessionBusy,
    /// The turn ran, or could not run, and failed.
    #[error("{0}")]
    Failed(String),
}

/// Runs tasks' turns.
#[async_trait]
pub trait TaskRunner: Send + Sync {
    /// Runs the task's prompt as one turn of `session`, within `timeout`. `SessionBusy` when
    /// the session has a turn going.
    async fn run(
        &self,
        task: &Task,
        session: SessionId,
        timeout: Duration,
    ) -> Result<RunReport, RunError>;
    /// Lets go of a session that will not be used again (an isolated run's).
    async fn release(&self, agent: &AgentName, session: &SessionId);
    /// Aborts the session's running turn.
    async fn abort(&self, agent: &AgentName, session: &SessionId);
}

/// Runs task turns on the agent pool, as scheduled-task turns.
pub struct AgentRunner {
    pub pool: AgentPool,
}

#[async_trait]
impl TaskRunner for AgentRunner {
    async fn run(
        &self,
        task: &Task,
        session: SessionId,
        timeout: Duration,
    ) -> Result<RunReport, RunError> {
        let agent = self.pool.get(&task.agent_name, &session);
        let options = ChatOptions {
            kind: TurnKind::ScheduledTask,
            timeout: Some(timeout),
            ..ChatOptions::default()
        };
        // Nobody watches a scheduled turn's events; the run record keeps its outcome.
        let (events, _) = tokio::sync::mpsc::unbounded_channel();
        let outcome = agent.chat(&task.prompt, options, events).await.map_err(|err| match err {
            orbit_agent::Error::TurnInProgress(_) => RunError::SessionBusy,
            err => RunError::Failed(err.to_string()),
        })?;
        Ok(RunReport { result: outcome.result, cost_usd: outcome.cost_usd })
    }

    async fn release(&self, agent: &AgentName, session: &SessionId) {
        self.pool.release(agent, session).await;
    }

    async fn abort(&self, agent: &AgentName, session: &SessionId) {
        if let Some(running) = self.pool.find(agent, session) {
            let _ = running.abort();
        }
    }
}
