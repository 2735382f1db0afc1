//! Scheduled tasks and the records of their runs.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::render::{Body, Listing};
use crate::{AgentName, Lease, LeaseToken, Result, RunId, SessionId, TaskId};

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
    /// The node whose disk holds the task's worktree (set only with one): only that node's
    /// scheduler fires it, and only that node deletes it. See [`Session::node`].
    ///
    /// [`Session::node`]: crate::Session::node
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// The first slot of the schedule as it was set (the next run computed when the task was
    /// made or its schedule changed): slots are never earlier, and interval slots are
    /// `anchor + k * interval`, so every scheduler computes the same slots from the record.
    #[serde(
        default,
        with = "crate::timestamp::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub anchor: Option<OffsetDateTime>,
    /// The latest slot a scheduler claimed; a slot fires only if it is later than this.
    #[serde(
        default,
        with = "crate::timestamp::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub last_slot: Option<OffsetDateTime>,
    /// The newest run record (not counting skips), so that it is found without listing runs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_run: Option<RunId>,
    /// The newest skip record, which later skips join while no run starts in between.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub latest_skip: Option<RunId>,
}

impl Task {
    /// A new active task of `agent`, made at `now`. Its first slot fixes the phase of every
    /// later one.
    pub fn new(agent: &AgentName, new: NewTask, now: OffsetDateTime) -> Self {
        Self {
            id: TaskId::new(),
            agent_name: agent.clone(),
            name: new.name,
            prompt: new.prompt,
            schedule_type: new.schedule_type,
            schedule_value: new.schedule_value,
            context_mode: new.context_mode,
            timezone: new.timezone,
            status: TaskStatus::Active,
            next_run: new.next_run,
            last_run: None,
            created_at: now,
            worktree: new.worktree,
            branch: new.branch,
            node: new.node,
            anchor: Some(new.next_run.unwrap_or(now)),
            last_slot: None,
            latest_run: None,
            latest_skip: None,
        }
    }

    /// The slot origin of this task's schedule: its anchor, else its creation.
    pub fn schedule_origin(&self) -> OffsetDateTime {
        self.anchor.unwrap_or(self.created_at)
    }

    /// The first slot of the task's schedule at or after `at`, or `None` when none is left.
    pub fn slot_at_or_after(
        &self,
        schedule: &crate::Schedule,
        at: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        schedule.slot_at_or_after(self.schedule_origin(), at)
    }

    /// Whether `at` is a slot of the task's schedule (a fire time no other instance would
    /// compute differently).
    pub fn is_slot(&self, schedule: &crate::Schedule, at: OffsetDateTime) -> bool {
        self.slot_at_or_after(schedule, at) == Some(at)
    }
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
    pub node: Option<String>,
}

/// A change to a task, as the change feed tells it to every scheduler sharing the store.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskChange {
    pub agent: AgentName,
    pub task: TaskId,
}

/// Where a reader of the change feed is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ChangeCursor {
    /// Which feed (it is replaced now and then).
    pub feed: ulid::Ulid,
    pub offset: u64,
}

/// What the change feed holds past a cursor.
#[derive(Debug, Clone)]
pub struct TaskChanges {
    pub changes: Vec<TaskChange>,
    /// The feed was replaced (or the cursor is from nowhere): changes may be missing, so the
    /// reader should re-read every task.
    pub reset: bool,
    pub cursor: ChangeCursor,
}

/// How starting a run went.
#[derive(Debug, Clone)]
pub enum RunStart {
    Started(Run),
    /// The task's previous run is still running under a live lease.
    Overlap(Run),
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
    /// A new slot origin: the new schedule's first slot (set with a new schedule).
    pub anchor: Option<OffsetDateTime>,
    /// A node gone for good: a task pinned to it loses its pin (its worktree is on that
    /// node's disk), so that any node may run it, making a new worktree. A task pinned
    /// elsewhere, or not at all, is left as it is.
    pub release_from: Option<String>,
    /// The node about to make the task's worktree: a task with a worktree and no node is
    /// pinned to it. A task pinned already keeps its node (the caller reads it back).
    pub pin_to: Option<String>,
}

impl TaskPatch {
    /// Applies the patch to a task: each field given replaces the task's.
    pub fn apply(self, task: &mut Task) {
        if let Some(name) = self.name {
            task.name = Some(name);
        }
        if let Some(prompt) = self.prompt {
            task.prompt = prompt;
        }
        if let Some(value) = self.schedule_value {
            task.schedule_value = value;
        }
        if let Some(timezone) = self.timezone {
            task.timezone = Some(timezone);
        }
        if let Some(status) = self.status {
            task.status = status;
        }
        if let Some(next_run) = self.next_run {
            task.next_run = next_run;
        }
        if let Some(last_run) = self.last_run {
            task.last_run = Some(last_run);
        }
        if let Some(anchor) = self.anchor {
            task.anchor = Some(anchor);
        }
        if let Some(gone) = self.release_from
            && task.node.as_deref() == Some(gone.as_str())
        {
            task.node = None;
        }
        if let Some(here) = self.pin_to
            && task.worktree
            && task.node.is_none()
        {
            task.node = Some(here);
        }
    }
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
    /// While running: the server process running it and until when (see `Lease`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// For a skipped run: how many slots in a row were skipped (one record for all).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub skipped_slots: Option<u32>,
}

impl Run {
    /// A run of `task` starting at `now` under `lease`.
    pub fn started(
        task: TaskId,
        session: Option<SessionId>,
        lease: Lease,
        now: OffsetDateTime,
    ) -> Self {
        Self {
            id: RunId::new(),
            task_id: task,
            session_id: session,
            status: RunStatus::Running,
            result: None,
            error: None,
            started_at: now,
            completed_at: None,
            duration_ms: None,
            cost_usd: None,
            lease: Some(lease),
            skipped_slots: None,
        }
    }

    /// The record of a slot of `task` skipped at `now` because its previous run still ran.
    pub fn skipped(task: TaskId, now: OffsetDateTime) -> Self {
        Self {
            id: RunId::new(),
            task_id: task,
            session_id: None,
            status: RunStatus::Skipped,
            result: None,
            error: None,
            started_at: now,
            completed_at: Some(now),
            duration_ms: Some(0),
            cost_usd: None,
            lease: None,
            skipped_slots: Some(1),
        }
    }

    /// Whether the run is still running under the lease `token` names: the fencing rule every
    /// store applies before a renewal or a finish.
    pub fn is_held_by(&self, token: &crate::LeaseToken) -> bool {
        self.status == RunStatus::Running && self.lease.is_some_and(|lease| lease.token == *token)
    }

    /// Extends the lease to `until` when `token` still holds the run; false when it does not.
    pub fn renew(&mut self, token: &crate::LeaseToken, until: OffsetDateTime) -> bool {
        if !self.is_held_by(token) {
            return false;
        }
        if let Some(lease) = self.lease.as_mut() {
            lease.until = until;
        }
        true
    }

    /// Ends the run with its outcome at `now`: its lease goes, its end and duration are
    /// stamped.
    pub fn complete(&mut self, outcome: RunOutcome, now: OffsetDateTime) {
        self.status = outcome.status;
        self.result = outcome.result;
        self.error = outcome.error;
        self.cost_usd = outcome.cost_usd;
        self.lease = None;
        self.completed_at = Some(now);
        self.duration_ms =
            Some(u64::try_from((now - self.started_at).whole_milliseconds()).unwrap_or(0));
    }

    /// Ends a run whose server stopped renewing its lease.
    pub fn interrupt(&mut self, now: OffsetDateTime) {
        let outcome = RunOutcome {
            status: RunStatus::Error,
            result: None,
            error: Some("interrupted: the server running it went away".into()),
            cost_usd: None,
        };
        self.complete(outcome, now);
    }
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
    /// A page of [`list_by_agent`](Self::list_by_agent): at most `limit` tasks newer than the
    /// task `after` (from the oldest when `None`), oldest first.
    async fn list_page(
        &self,
        agent: &AgentName,
        after: Option<TaskId>,
        limit: usize,
    ) -> Result<Vec<Task>> {
        let tasks = self.list_by_agent(agent).await?;
        Ok(tasks.into_iter().filter(|t| after.is_none_or(|a| t.id > a)).take(limit).collect())
    }
    /// [`list_by_agent`](Self::list_by_agent) as `listing` writes it; a store may keep the
    /// renderings of unchanged tasks and the body of an unchanged listing (see
    /// [`render`](crate::render)).
    async fn list_rendered(&self, agent: &AgentName, listing: Listing<Task>) -> Result<Body> {
        Ok(listing.write(&self.list_by_agent(agent).await?))
    }
    /// Every agent's tasks.
    async fn list_all(&self) -> Result<Vec<Task>>;
    /// [`list_all`](Self::list_all) as `listing` writes it, as
    /// [`list_rendered`](Self::list_rendered).
    async fn list_all_rendered(&self, listing: Listing<Task>) -> Result<Body> {
        Ok(listing.write(&self.list_all().await?))
    }
    /// Applies a partial update atomically with respect to other updates.
    async fn update(&self, agent: &AgentName, id: &TaskId, patch: TaskPatch) -> Result<Task>;
    /// Removes the task and its runs.
    async fn delete(&self, agent: &AgentName, id: &TaskId) -> Result<()>;
    /// Starts a run at `now` under `lease`, unless the task's previous run still runs under a
    /// live lease at `now` (`Overlap`); a previous run whose lease lapsed is marked
    /// interrupted first. Atomic with respect to other starts: two callers never both start.
    /// `now` is the caller's clock, so that the store and the scheduler judge expiry alike.
    async fn start_run(
        &self,
        agent: &AgentName,
        task: &TaskId,
        session: Option<SessionId>,
        lease: Lease,
        now: OffsetDateTime,
    ) -> Result<RunStart>;
    /// Records a slot skipped at `now`. Consecutive skips share one record, counting them.
    async fn record_skip(
        &self,
        agent: &AgentName,
        task: &TaskId,
        now: OffsetDateTime,
    ) -> Result<Run>;
    /// Extends a running run's lease. `Conflict` when `token` no longer holds it.
    async fn renew_run(
        &self,
        agent: &AgentName,
        task: &TaskId,
        run: &RunId,
        token: &LeaseToken,
        until: OffsetDateTime,
    ) -> Result<()>;
    /// Finishes a running run with its outcome, stamping its end (`now`) and duration.
    /// `Conflict` when `token` no longer holds it (it was found lapsed and marked interrupted).
    async fn finish_run(
        &self,
        agent: &AgentName,
        task: &TaskId,
        run: &RunId,
        token: &LeaseToken,
        outcome: RunOutcome,
        now: OffsetDateTime,
    ) -> Result<Run>;
    /// Marks a running run whose lease lapsed before `now` as interrupted; `None` when it is
    /// not running or its lease still holds.
    async fn interrupt_lapsed_run(
        &self,
        agent: &AgentName,
        task: &TaskId,
        run: &RunId,
        now: OffsetDateTime,
    ) -> Result<Option<Run>>;
    /// The task's runs, newest first.
    async fn list_runs(&self, agent: &AgentName, task: &TaskId) -> Result<Vec<Run>>;
    /// The task's newest run, without reading the others.
    async fn latest_run(&self, agent: &AgentName, task: &TaskId) -> Result<Option<Run>>;
    /// Every run still marked `running`, of every agent, with its agent (read at start-up to
    /// find runs a crash interrupted; only tasks that ever ran are looked at).
    async fn running_runs(&self) -> Result<Vec<(AgentName, Run)>>;
    /// Claims a slot (a scheduled fire time) of a task: `true` for exactly one caller per
    /// slot, across processes and restarts. Slots are claimed in time order: a slot no later
    /// than the task's last claimed slot is refused.
    async fn claim_slot(
        &self,
        agent: &AgentName,
        task: &TaskId,
        slot: OffsetDateTime,
    ) -> Result<bool>;
    /// Changes to tasks (created, updated, deleted) made through this store, by any process,
    /// since `cursor`; `None` asks only for the current position.
    async fn changes_since(&self, cursor: Option<ChangeCursor>) -> Result<TaskChanges>;
    /// Ticks whenever a task is created, updated or deleted through this store in this
    /// process, so that a scheduler wakes at once instead of at its next look at the feed.
    /// The one place task changes are announced: whoever changes a task (the API, an agent's
    /// tools) needs to tell no one. A store without it never ticks.
    fn watch_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        tokio::sync::watch::channel(0).1
    }
}
