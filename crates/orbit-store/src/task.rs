//! Scheduled tasks and the records of their runs.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{AgentName, Result, RunId, SessionId, TaskId};

/// How a task's schedule is written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ScheduleType {
    Cron,
    Interval,
    Once,
}

/// Which session a run uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ContextMode {
    /// A fresh session for every run.
    #[default]
    Isolated,
    /// The agent's main session, continued.
    Main,
}

/// Whether a task fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TaskStatus {
    #[default]
    Active,
    Paused,
    /// A `once` task that has run.
    Completed,
}

/// A scheduled task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Task {
    pub id: TaskId,
    pub agent_name: AgentName,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub prompt: String,
    pub schedule_type: ScheduleType,
    pub schedule_value: String,
    pub context_mode: ContextMode,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timezone: Option<String>,
    pub status: TaskStatus,
    #[serde(with = "crate::timestamp::rfc3339::option")]
    pub next_run: Option<OffsetDateTime>,
    #[serde(with = "crate::timestamp::rfc3339::option")]
    pub last_run: Option<OffsetDateTime>,
    #[serde(with = "crate::timestamp::rfc3339")]
    pub created_at: OffsetDateTime,
    /// Whether runs work in the task's own git worktree (named after the task).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub worktree: bool,
    /// The branch of that worktree, made at the first run (detached at HEAD without one).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub branch: Option<String>,
}

/// What a caller gives to make a task. The schedule is checked by the scheduler, not here.
#[derive(Debug, Clone)]
pub struct NewTask {
    pub name: Option<String>,
    pub prompt: String,
    pub schedule_type: ScheduleType,
    pub schedule_value: String,
    pub context_mode: ContextMode,
    pub timezone: Option<String>,
    pub next_run: Option<OffsetDateTime>,
    pub worktree: bool,
    pub branch: Option<String>,
}

/// A partial update of a task; `None` leaves a field as it is.
#[derive(Debug, Clone, Default)]
pub struct TaskPatch {
    pub name: Option<String>,
    pub prompt: Option<String>,
    pub schedule_value: Option<String>,
    pub timezone: Option<String>,
    pub status: Option<TaskStatus>,
    /// `Some(None)` clears the next run.
    pub next_run: Option<Option<OffsetDateTime>>,
    pub last_run: Option<OffsetDateTime>,
}

/// How a run ended, or that it is still going.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RunStatus {
    Running,
    Success,
    Error,
    /// The slot came while the previous run was still going.
    Skipped,
}

/// The record of one run of a task.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Run {
    pub id: RunId,
    pub task_id: TaskId,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub session_id: Option<SessionId>,
    pub status: RunStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(with = "crate::timestamp::rfc3339")]
    pub started_at: OffsetDateTime,
    #[serde(
        default,
        with = "crate::timestamp::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub completed_at: Option<OffsetDateTime>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cost_usd: Option<f64>,
    /// The process running it, to tell a run interrupted by a crash from one that another
    /// server on the same data directory is still running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner_pid: Option<u32>,
}

/// How a run ended.
#[derive(Debug, Clone)]
pub struct RunOutcome {
    pub status: RunStatus,
    pub result: Option<String>,
    pub error: Option<String>,
    pub cost_usd: Option<f64>,
}

/// Storage of tasks and runs.
#[async_trait]
pub trait TaskStore: Send + Sync {
    /// Makes a task of an existing agent.
    async fn create(&self, agent: &AgentName, new: NewTask) -> Result<Task>;
    /// `NotFound` when missing.
    async fn get(&self, agent: &AgentName, id: &TaskId) -> Result<Task>;
    /// The agent's tasks, oldest first.
    async fn list_by_agent(&self, agent: &AgentName) -> Result<Vec<Task>>;
    /// Every agent's tasks.
    async fn list_all(&self) -> Result<Vec<Task>>;
    /// Applies a partial update atomically with respect to other updates.
    async fn update(&self, agent: &AgentName, id: &TaskId, patch: TaskPatch) -> Result<Task>;
    /// Removes the task and its runs.
    async fn delete(&self, agent: &AgentName, id: &TaskId) -> Result<()>;
    /// Records a run that starts now, status `running`, or `skipped` when `skipped` is set.
    async fn create_run(
        &self,
        agent: &AgentName,
        task: &TaskId,
        session: Option<SessionId>,
        status: RunStatus,
    ) -> Result<Run>;
    /// Finishes a running run with its outcome, stamping its end and duration.
    async fn finish_run(
        &self,
        agent: &AgentName,
        task: &TaskId,
        run: &RunId,
        outcome: RunOutcome,
    ) -> Result<Run>;
    /// The task's runs, newest first.
    async fn list_runs(&self, agent: &AgentName, task: &TaskId) -> Result<Vec<Run>>;
    /// The task's newest run, without reading the others.
    async fn latest_run(&self, agent: &AgentName, task: &TaskId) -> Result<Option<Run>>;
    /// Every run still marked `running`, of every agent, with its agent (read at start-up to
    /// find runs a crash interrupted; only tasks that ever ran are looked at).
    async fn running_runs(&self) -> Result<Vec<(AgentName, Run)>>;
    /// Claims a slot (a scheduled fire time) of a task: `true` for exactly one caller per
    /// slot, across processes and restarts.
    async fn claim_slot(
        &self,
        agent: &AgentName,
        task: &TaskId,
        slot: OffsetDateTime,
    ) -> Result<bool>;
}
