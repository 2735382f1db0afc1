//! Which slot each task fires next, and learning that tasks changed.
//!
//! A task's slots are a pure function of its stored schedule and anchor (see
//! `Task::slot_at_or_after`), so every scheduler on a data directory plans the same slots and
//! the store's slot claim lets exactly one of them fire each. Changes reach a scheduler two
//! ways: the store's tick for changes made in this process, and its change feed, read at every wake,
//! from every process.

use std::cmp::Reverse;
use std::collections::HashSet;

use orbit_store::{
    AgentName, ErrorKind, Schedule, ScheduleType, Task, TaskId, TaskPatch, TaskStatus,
};
use time::OffsetDateTime;

use super::{Later, Planned, Scheduler};
use crate::slots::{Plan, plan};

impl Scheduler {
    /// Plans every task and recovers runs left running, at the start of the loop.
    pub(super) async fn start_up(&self) {
        // The feed position is taken before the tasks are read, so that a change made in
        // between is seen again rather than missed.
        match self.inner.stores.tasks.changes_since(None).await {
            Ok(feed) => self.state().cursor = Some(feed.cursor),
            Err(err) => tracing::warn!(error = %err, "could not read the task change feed"),
        }
        self.recover_runs().await;
        self.reload_all().await;
        tracing::info!(planned = self.planned(), instance = %self.inner.options.instance, "scheduler started");
    }

    /// Re-reads every task, dropping the plans of tasks that are gone.
    async fn reload_all(&self) {
        let tasks = match self.inner.stores.tasks.list_all().await {
            Ok(tasks) => tasks,
            Err(err) => {
                tracing::error!(error = %err, "scheduler could not load tasks");
                return;
            }
        };
        let present: HashSet<TaskId> = tasks.iter().map(|task| task.id).collect();
        let gone: Vec<TaskId> = {
            let state = self.state();
            state.planned.keys().chain(state.running.keys()).copied().collect()
        };
        for id in gone.into_iter().filter(|id| !present.contains(id)) {
            self.forget(&id).await;
        }
        for task in tasks {
            self.replan(task).await;
        }
    }

    /// Re-plans the tasks changed since the last wake: those this process was told of, and
    /// those the change feed names. A reset feed (replaced, or unreadable history) means
    /// changes may be missing, so every task is re-read.
    pub(super) async fn apply_changes(&self) {
        let cursor = self.state().cursor;
        let mut changed = std::mem::take(&mut self.state().changed);
        match self.inner.stores.tasks.changes_since(cursor).await {
            Ok(feed) => {
                self.state().cursor = Some(feed.cursor);
                if feed.reset {
                    tracing::info!("the task change feed was replaced; re-reading every task");
                    self.reload_all().await;
                    return;
                }
                changed.extend(feed.changes.into_iter().map(|change| (change.agent, change.task)));
            }
            Err(err) => tracing::warn!(error = %err, "could not read the task change feed"),
        }
        let mut seen = HashSet::new();
        for (agent, id) in changed {
            if seen.insert(id) {
                // Every task change, whoever made it in whichever process, passes here.
                self.announce(orbit_agent::Activity::TaskChanged {
                    agent: agent.clone(),
                    task: id,
                });
                self.reread(&agent, &id).await;
            }
        }
    }

    /// Re-reads one task and plans it, or forgets it when it is gone.
    pub(super) async fn reread(&self, agent: &AgentName, id: &TaskId) {
        match self.inner.stores.tasks.get(agent, id).await {
            Ok(task) => self.replan(task).await,
            Err(err) if err.kind() == ErrorKind::NotFound => self.forget(id).await,
            Err(err) => {
                tracing::warn!(%agent, task = %id, error = %err, "could not re-read a changed task");
                self.look_again_later(agent, id);
            }
        }
    }

    /// A deleted task stops: no more slots, and its running run here is aborted.
    async fn forget(&self, id: &TaskId) {
        let removed = {
            let mut state = self.state();
            state.planned.remove(id);
            state.running.remove(id)
        };
        if let Some(active) = removed {
            active.cancel.cancel();
        }
    }

    /// Asks for the task to be re-read after `recheck` (after a store failure), instead of
    /// at once and again and again.
    pub(super) fn look_again_later(&self, agent: &AgentName, id: &TaskId) {
        let at = self.inner.clock.now() + self.inner.options.recheck;
        self.state().later.push(Later { at, agent: agent.clone(), task: *id, run: None });
    }

    /// Deals with what was put off until now: re-reads tasks, re-checks others' runs.
    pub(super) async fn look_again(&self, now: OffsetDateTime) {
        let due: Vec<Later> = {
            let mut state = self.state();
            let (due, kept) =
                std::mem::take(&mut state.later).into_iter().partition(|l| l.at <= now);
            state.later = kept;
            due
        };
        for later in due {
            if let Some(run) = later.run {
                self.recheck_run(&later.agent, &later.task, &run).await;
            }
            self.reread(&later.agent, &later.task).await;
        }
    }

    /// Plans a task's next fire from its record, persisting a skip past old missed slots.
    pub(super) async fn replan(&self, task: Task) {
        let schedule = match Schedule::parse(
            task.schedule_type,
            &task.schedule_value,
            task.timezone.as_deref(),
        ) {
            Ok(schedule) => schedule,
            Err(err) => {
                tracing::warn!(task = %task.id, error = %err, "task has an invalid schedule; it will not fire");
                self.state().planned.remove(&task.id);
                return;
            }
        };
        if task.status != TaskStatus::Active {
            self.state().planned.remove(&task.id);
            return;
        }
        if task.node.as_ref().is_some_and(|node| *node != self.inner.options.node) {
            // Its worktree is on that node's disk: that node's scheduler fires it.
            self.state().planned.remove(&task.id);
            return;
        }
        let now = self.inner.clock.now();
        let options = &self.inner.options;
        match plan(&task, &schedule, now, options.catch_up_recurring, options.catch_up_once) {
            Plan::FireAt(at) => {
                if task.next_run.is_some_and(|stored| stored < at && at > now) {
                    // Missed slots beyond the catch-up window are skipped, not run.
                    tracing::info!(task = %task.id, missed = ?task.next_run, next = %at, "skipping slots missed beyond the catch-up window");
                    self.save_next_run(&task, Some(at), None).await;
                }
                let mut state = self.state();
                state.planned.insert(task.id, Planned { agent: task.agent_name.clone(), at });
                state.heap.push(Reverse((at, task.id)));
            }
            Plan::Never => {
                self.state().planned.remove(&task.id);
                if task.schedule_type == ScheduleType::Once && task.status == TaskStatus::Active {
                    tracing::warn!(task = %task.id, "a once task was missed beyond its catch-up window");
                    self.save_next_run(&task, None, Some(TaskStatus::Completed)).await;
                }
            }
        }
    }

    async fn save_next_run(
        &self,
        task: &Task,
        next_run: Option<OffsetDateTime>,
        status: Option<TaskStatus>,
    ) {
        let patch = TaskPatch { next_run: Some(next_run), status, ..TaskPatch::default() };
        if let Err(err) = self.inner.stores.tasks.update(&task.agent_name, &task.id, patch).await {
            tracing::warn!(task = %task.id, error = %err, "could not store the next run");
        }
    }

    /// The planned slots due at `now`, taken off the plan.
    pub(super) fn take_due(&self, now: OffsetDateTime) -> Vec<(AgentName, TaskId, OffsetDateTime)> {
        let mut state = self.state();
        let mut due = Vec::new();
        while let Some(Reverse((at, task))) = state.heap.peek().copied() {
            if at > now {
                break;
            }
            state.heap.pop();
            // Only the entry matching the task's current plan counts; others are stale.
            if state.planned.get(&task).is_some_and(|p| p.at == at)
                && let Some(planned) = state.planned.remove(&task)
            {
                due.push((planned.agent, task, at));
            }
        }
        due
    }

    /// Moves the task past the slot this process fired: its next run, or completion for a
    /// `once`.
    pub(super) async fn advance(&self, task: Task, schedule: &Schedule, slot: OffsetDateTime) {
        // The next slot of the schedule, from the slot, never from now: every scheduler on
        // the data directory must compute the same slots. A next slot already past is caught
        // up (or skipped) by the plan.
        let next = task.slot_at_or_after(schedule, slot + time::Duration::MILLISECOND);
        let status = (task.schedule_type == ScheduleType::Once).then_some(TaskStatus::Completed);
        let patch = TaskPatch {
            next_run: Some(next),
            last_run: Some(slot),
            status,
            ..TaskPatch::default()
        };
        match self.inner.stores.tasks.update(&task.agent_name, &task.id, patch).await {
            Ok(updated) => self.replan(updated).await,
            Err(err) => {
                tracing::warn!(task = %task.id, error = %err, "could not advance a task");
                self.look_again_later(&task.agent_name, &task.id);
            }
        }
    }
}
