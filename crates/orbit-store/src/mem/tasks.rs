//! Tasks, runs and the task change feed in memory, with the filesystem store's rules: a slot
//! is claimed by moving `lastSlot` forward, a run starts against the newest run's live lease,
//! settling needs the lease's token, and a task keeps its newest `runs_kept` runs.

use async_trait::async_trait;
use time::OffsetDateTime;

use super::{MemStore, State, TaskRecord};
use crate::{
    AgentName, ChangeCursor, Error, Lease, LeaseToken, NewTask, Result, Run, RunId, RunOutcome,
    RunStart, RunStatus, SessionId, Task, TaskChange, TaskChanges, TaskId, TaskPatch, TaskStore,
    timestamp,
};

/// The feed is replaced by an empty one past this many changes (its readers are told to
/// re-read every task), as the filesystem store replaces its file past a size.
const FEED_MAX_CHANGES: usize = 10_000;

/// The change feed: a wake-up call for schedulers, not data.
pub(super) struct Feed {
    id: ulid::Ulid,
    changes: Vec<TaskChange>,
}

impl Default for Feed {
    fn default() -> Self {
        Self { id: crate::new_ulid(), changes: Vec::new() }
    }
}

impl Feed {
    pub(super) fn publish(&mut self, agent: &AgentName, task: &TaskId) {
        if self.changes.len() >= FEED_MAX_CHANGES {
            *self = Feed::default();
        }
        self.changes.push(TaskChange { agent: agent.clone(), task: *task });
    }

    fn read(&self, cursor: Option<ChangeCursor>) -> TaskChanges {
        let end = ChangeCursor { feed: self.id, offset: self.changes.len() as u64 };
        let Some(cursor) = cursor else {
            return TaskChanges { changes: Vec::new(), reset: false, cursor: end };
        };
        let from = usize::try_from(cursor.offset).ok().filter(|from| *from <= self.changes.len());
        match from {
            Some(from) if cursor.feed == self.id => {
                TaskChanges { changes: self.changes[from..].to_vec(), reset: false, cursor: end }
            }
            // A replaced feed, or a cursor from nowhere: changes may be missing.
            _ => TaskChanges { changes: Vec::new(), reset: true, cursor: end },
        }
    }
}

impl State {
    fn task_mut(&mut self, agent: &AgentName, id: &TaskId) -> Result<&mut TaskRecord> {
        self.agent_mut(agent)?.tasks.get_mut(id).ok_or_else(|| Error::not_found("task", id))
    }

    fn task(&self, agent: &AgentName, id: &TaskId) -> Result<&TaskRecord> {
        self.agent(agent)?.tasks.get(id).ok_or_else(|| Error::not_found("task", id))
    }
}

impl TaskRecord {
    fn newest_run(&self) -> Option<&Run> {
        self.task.latest_run.and_then(|id| self.runs.get(&id))
    }

    fn run_mut(&mut self, id: &RunId) -> Result<&mut Run> {
        self.runs.get_mut(id).ok_or_else(|| Error::not_found("run", id))
    }

    /// Adds a run as the task's newest, and drops the oldest records (skips included) beyond
    /// the retention.
    fn add_run(&mut self, run: Run, kept: usize) {
        self.task.latest_run = Some(run.id);
        self.runs.insert(run.id, run);
        while self.runs.len() > kept {
            self.runs.pop_first();
        }
    }
}

fn interrupt(agent: &AgentName, run: &mut Run, now: OffsetDateTime) {
    let holder = run.lease.map(|lease| lease.instance.to_string()).unwrap_or_default();
    tracing::warn!(%agent, task = %run.task_id, run = %run.id, %holder, "marking a run interrupted: its server stopped renewing it");
    run.interrupt(now);
}

fn not_held(run: &RunId, detail: String) -> Error {
    Error::Conflict(format!("run {run} is no longer held by this server{detail}"))
}

#[async_trait]
impl TaskStore for MemStore {
    async fn create(&self, agent: &AgentName, new: NewTask) -> Result<Task> {
        if new.prompt.trim().is_empty() {
            return Err(Error::Invalid("prompt must not be empty".into()));
        }
        let mut state = self.state();
        let tasks = &mut state.agent_mut(agent)?.tasks;
        let now = timestamp::now();
        let task = Task::new(agent, new, now);
        tasks.insert(task.id, TaskRecord { task: task.clone(), runs: Default::default() });
        state.feed.publish(agent, &task.id);
        self.inner.task_changes.send_modify(|ticks| *ticks = ticks.wrapping_add(1));
        Ok(task)
    }

    async fn get(&self, agent: &AgentName, id: &TaskId) -> Result<Task> {
        Ok(self.state().task(agent, id)?.task.clone())
    }

    async fn list_by_agent(&self, agent: &AgentName) -> Result<Vec<Task>> {
        let state = self.state();
        Ok(state.agent(agent)?.tasks.values().map(|record| record.task.clone()).collect())
    }

    async fn list_all(&self) -> Result<Vec<Task>> {
        let state = self.state();
        let agents = state.agents.values();
        Ok(agents.flat_map(|agent| agent.tasks.values().map(|r| r.task.clone())).collect())
    }

    async fn update(&self, agent: &AgentName, id: &TaskId, patch: TaskPatch) -> Result<Task> {
        let mut state = self.state();
        let task = &mut state.task_mut(agent, id)?.task;
        patch.apply(task);
        let task = task.clone();
        state.feed.publish(agent, id);
        self.inner.task_changes.send_modify(|ticks| *ticks = ticks.wrapping_add(1));
        Ok(task)
    }

    async fn delete(&self, agent: &AgentName, id: &TaskId) -> Result<()> {
        let mut state = self.state();
        if state.agent_mut(agent)?.tasks.remove(id).is_none() {
            return Err(Error::not_found("task", id));
        }
        state.feed.publish(agent, id);
        self.inner.task_changes.send_modify(|ticks| *ticks = ticks.wrapping_add(1));
        Ok(())
    }

    async fn start_run(
        &self,
        agent: &AgentName,
        task: &TaskId,
        session: Option<SessionId>,
        lease: Lease,
        now: OffsetDateTime,
    ) -> Result<RunStart> {
        let kept = self.inner.options.runs_kept;
        let mut state = self.state();
        let record = state.task_mut(agent, task)?;
        if let Some(previous) = record.task.latest_run
            && let Some(previous) = record.runs.get_mut(&previous)
            && previous.status == RunStatus::Running
        {
            match previous.lease {
                Some(held) if !held.expired_at(now) => {
                    return Ok(RunStart::Overlap(previous.clone()));
                }
                _ => interrupt(agent, previous, now),
            }
        }
        let run = Run::started(*task, session, lease, now);
        record.add_run(run.clone(), kept);
        Ok(RunStart::Started(run))
    }

    async fn record_skip(
        &self,
        agent: &AgentName,
        task: &TaskId,
        now: OffsetDateTime,
    ) -> Result<Run> {
        let mut state = self.state();
        let record = state.task_mut(agent, task)?;
        // Skips join the newest skip record while no run started after it (ids are ULIDs,
        // so a later run has a greater id).
        let consecutive = record
            .task
            .latest_skip
            .is_some_and(|skip| record.task.latest_run.is_none_or(|run| run < skip));
        if consecutive
            && let Some(skip_id) = record.task.latest_skip
            && let Some(skip) = record.runs.get_mut(&skip_id)
        {
            skip.skipped_slots = Some(skip.skipped_slots.unwrap_or(1).saturating_add(1));
            skip.completed_at = Some(now);
            return Ok(skip.clone());
        }
        let run = Run::skipped(*task, now);
        record.runs.insert(run.id, run.clone());
        record.task.latest_skip = Some(run.id);
        Ok(run)
    }

    async fn renew_run(
        &self,
        agent: &AgentName,
        task: &TaskId,
        run: &RunId,
        token: &LeaseToken,
        until: OffsetDateTime,
    ) -> Result<()> {
        let mut state = self.state();
        let record = state.task_mut(agent, task)?.run_mut(run)?;
        if !record.renew(token, until) {
            return Err(not_held(run, String::new()));
        }
        Ok(())
    }

    async fn finish_run(
        &self,
        agent: &AgentName,
        task: &TaskId,
        run: &RunId,
        token: &LeaseToken,
        outcome: RunOutcome,
        now: OffsetDateTime,
    ) -> Result<Run> {
        let mut state = self.state();
        let record = state.task_mut(agent, task)?.run_mut(run)?;
        if !record.is_held_by(token) {
            return Err(not_held(run, format!(" (it is {:?})", record.status)));
        }
        record.complete(outcome, now);
        Ok(record.clone())
    }

    async fn interrupt_lapsed_run(
        &self,
        agent: &AgentName,
        task: &TaskId,
        run: &RunId,
        now: OffsetDateTime,
    ) -> Result<Option<Run>> {
        let mut state = self.state();
        let record = state.task_mut(agent, task)?.run_mut(run)?;
        let lapsed = record.status == RunStatus::Running
            && record.lease.is_none_or(|lease| lease.expired_at(now));
        if !lapsed {
            return Ok(None);
        }
        interrupt(agent, record, now);
        Ok(Some(record.clone()))
    }

    async fn list_runs(&self, agent: &AgentName, task: &TaskId) -> Result<Vec<Run>> {
        // Ids are ULIDs, so reverse id order is newest first.
        Ok(self.state().task(agent, task)?.runs.values().rev().cloned().collect())
    }

    async fn latest_run(&self, agent: &AgentName, task: &TaskId) -> Result<Option<Run>> {
        Ok(self.state().task(agent, task)?.newest_run().cloned())
    }

    async fn running_runs(&self) -> Result<Vec<(AgentName, Run)>> {
        let state = self.state();
        let mut running = Vec::new();
        for (name, agent) in &state.agents {
            for record in agent.tasks.values() {
                if let Some(run) = record.newest_run().filter(|r| r.status == RunStatus::Running) {
                    running.push((name.clone(), run.clone()));
                }
            }
        }
        Ok(running)
    }

    async fn claim_slot(
        &self,
        agent: &AgentName,
        task: &TaskId,
        slot: OffsetDateTime,
    ) -> Result<bool> {
        let mut state = self.state();
        let task = &mut state.task_mut(agent, task)?.task;
        if task.last_slot.is_some_and(|last| last >= slot) {
            return Ok(false);
        }
        task.last_slot = Some(slot);
        Ok(true)
    }

    fn watch_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.task_changes.subscribe()
    }

    async fn changes_since(&self, cursor: Option<ChangeCursor>) -> Result<TaskChanges> {
        Ok(self.state().feed.read(cursor))
    }
}
