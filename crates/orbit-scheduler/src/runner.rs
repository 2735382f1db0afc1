//! What runs a task's turn: a seam, so the scheduler's timing is tested without a model, and
//! [`AgentRunner`], the real one on the agent pool.

use std::time::Duration;

use async_trait::async_trait;
use orbit_agent::{AgentPool, ChatOptions, TurnKind};
use orbit_store::{AgentName, RunId, SessionId, Task};
use tokio_util::sync::CancellationToken;

/// How a run's turn ended well.
#[derive(Debug, Clone, Default)]
pub struct RunReport {
    pub result: String,
    pub cost_usd: Option<f64>,
    /// The tool calls the turn was refused, each as `tool: reason`.
    pub denied_tools: Vec<String>,
}

impl RunReport {
    /// The run's result as its record keeps it: the turn's text, and a note of the tool calls
    /// it was refused, so a run whose tools were denied never reads as a plain success.
    pub fn recorded_result(&self) -> String {
        if self.denied_tools.is_empty() {
            return self.result.clone();
        }
        let count = self.denied_tools.len();
        let calls = if count == 1 { "tool call was" } else { "tool calls were" };
        format!(
            "{}\n\n[Orbit: {count} {calls} denied: {}]",
            self.result,
            self.denied_tools.join("; ")
        )
    }
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
    /// Runs the task's prompt as one turn of `session` for the run `run`, within `timeout`.
    /// `SessionBusy` when the session has a turn going. When `cancel` fires, this run's own
    /// turn (never another turn of the session) is aborted, and the call returns once it has
    /// settled.
    async fn run(
        &self,
        task: &Task,
        run: RunId,
        session: SessionId,
        timeout: Duration,
        cancel: CancellationToken,
    ) -> Result<RunReport, RunError>;
    /// Lets go of a session that will not be used again (an isolated run's).
    async fn release(&self, agent: &AgentName, session: &SessionId);
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
        run: RunId,
        session: SessionId,
        timeout: Duration,
        cancel: CancellationToken,
    ) -> Result<RunReport, RunError> {
        let agent = self.pool.get(&task.agent_name, &session);
        let options = ChatOptions {
            kind: TurnKind::ScheduledTask,
            timeout: Some(timeout),
            run: Some(run),
            ..ChatOptions::default()
        };
        let failed = |err: orbit_agent::Error| match err {
            orbit_agent::Error::TurnInProgress(_) => RunError::SessionBusy,
            err => RunError::Failed(err.to_string()),
        };
        if cancel.is_cancelled() {
            return Err(RunError::Failed("cancelled before it started".into()));
        }
        let turn = agent.start_turn(&task.prompt, options).await.map_err(failed)?;
        let id = turn.id();
        // A scheduled turn's events are in its transcript, and a person may watch it through
        // the session's stream; the run record keeps its outcome. Nobody reads the caller's
        // channel here, so it is closed at once rather than left to fill for the whole turn.
        let (events, outcome) = turn.into_parts();
        drop(events);
        tokio::pin!(outcome);
        let outcome = tokio::select! {
            outcome = &mut outcome => outcome,
            () = cancel.cancelled() => {
                agent.abort_turn(id);
                outcome.await
            }
        };
        let outcome = outcome.map_err(failed)?;
        let denied_tools = outcome
            .denied_tools
            .iter()
            .map(|denied| format!("{}: {}", denied.tool, denied.reason))
            .collect();
        Ok(RunReport { result: outcome.result, cost_usd: outcome.cost_usd, denied_tools })
    }

    async fn release(&self, agent: &AgentName, session: &SessionId) {
        self.pool.release(agent, session).await;
    }
}
