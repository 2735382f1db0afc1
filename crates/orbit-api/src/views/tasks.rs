//! Views of a scheduled task and its runs, and the preview of a schedule's next fire times.

use orbit_store::timestamp::rfc3339;
use orbit_store::{AgentName, Run, RunId, SessionId, Task, TaskId};
use schemars::JsonSchema;
use serde::Serialize;
use time::OffsetDateTime;

use crate::wire;

/// A scheduled task.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct TaskView {
    #[schemars(with = "wire::Ulid")]
    pub id: TaskId,
    #[schemars(with = "wire::AgentName")]
    pub agent_name: AgentName,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(max = orbit_store::limits::TITLE))]
    pub name: Option<String>,
    #[schemars(length(max = orbit_store::limits::PROMPT))]
    pub prompt: String,
    pub schedule_type: wire::ScheduleType,
    #[schemars(length(max = orbit_store::limits::SCHEDULE_VALUE))]
    pub schedule_value: String,
    pub context_mode: wire::ContextMode,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String", length(max = orbit_store::limits::TIMEZONE))]
    pub timezone: Option<String>,
    pub status: wire::TaskStatus,
    #[serde(with = "rfc3339::option")]
    #[schemars(with = "Option<wire::Timestamp>")]
    pub next_run: Option<OffsetDateTime>,
    #[serde(with = "rfc3339::option")]
    #[schemars(with = "Option<wire::Timestamp>")]
    pub last_run: Option<OffsetDateTime>,
    #[serde(with = "rfc3339")]
    #[schemars(with = "wire::Timestamp")]
    pub created_at: OffsetDateTime,
    /// Present (`true`) when runs work in the task's own git worktree.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub worktree: bool,
    /// The branch of that worktree.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub branch: Option<String>,
    /// The node that holds that worktree: only its scheduler runs the task, and only it
    /// deletes the task (any other node answers 409 naming it).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "wire::NodeName")]
    pub node: Option<String>,
}

impl From<Task> for TaskView {
    fn from(task: Task) -> Self {
        Self {
            id: task.id,
            agent_name: task.agent_name,
            name: task.name,
            prompt: task.prompt,
            schedule_type: task.schedule_type.into(),
            schedule_value: task.schedule_value,
            context_mode: task.context_mode.into(),
            timezone: task.timezone,
            status: task.status.into(),
            next_run: task.next_run,
            last_run: task.last_run,
            created_at: task.created_at,
            worktree: task.worktree,
            branch: task.branch,
            node: task.node,
        }
    }
}

/// One run of a task (or, `skipped`, slots that did not run).
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct RunView {
    #[schemars(with = "wire::Ulid")]
    pub id: RunId,
    #[schemars(with = "wire::Ulid")]
    pub task_id: TaskId,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "wire::Ulid")]
    pub session_id: Option<SessionId>,
    pub status: wire::RunStatus,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub result: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "String")]
    pub error: Option<String>,
    #[serde(with = "rfc3339")]
    #[schemars(with = "wire::Timestamp")]
    pub started_at: OffsetDateTime,
    #[serde(skip_serializing_if = "Option::is_none", with = "rfc3339::option")]
    #[schemars(with = "wire::Timestamp")]
    pub completed_at: Option<OffsetDateTime>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u64")]
    pub duration_ms: Option<u64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "f64")]
    pub cost_usd: Option<f64>,
    /// For a skipped run: how many slots in a row were skipped.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "u32", range(min = 1))]
    pub skipped_slots: Option<u32>,
}

impl From<Run> for RunView {
    fn from(run: Run) -> Self {
        Self {
            id: run.id,
            task_id: run.task_id,
            session_id: run.session_id,
            status: run.status.into(),
            result: run.result,
            error: run.error,
            started_at: run.started_at,
            completed_at: run.completed_at,
            duration_ms: run.duration_ms,
            cost_usd: run.cost_usd,
            skipped_slots: run.skipped_slots,
        }
    }
}

/// A schedule's next fire times, soonest first.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SchedulePreviewBody {
    /// When a task made now with this schedule would run: `count` times, fewer for a
    /// schedule that stops firing (a `once` fires one time).
    #[serde(serialize_with = "timestamps")]
    #[schemars(with = "Vec<wire::Timestamp>", length(min = 1, max = 20))]
    pub next_runs: Vec<OffsetDateTime>,
}

fn timestamps<S: serde::Serializer>(times: &[OffsetDateTime], to: S) -> Result<S::Ok, S::Error> {
    use serde::ser::SerializeSeq;
    let mut seq = to.serialize_seq(Some(times.len()))?;
    /// One time, spelt as every other time of the API.
    #[derive(Serialize)]
    struct At(#[serde(with = "rfc3339")] OffsetDateTime);
    for at in times {
        seq.serialize_element(&At(*at))?;
    }
    seq.end()
}
