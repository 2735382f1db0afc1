//! Tasks as `agents/<name>/tasks/<id>.json`: created, read, listed, updated and deleted; their
//! runs and slots are in `runs`, the change feed that tells every process of a change in
//! `task_feed`.
//!
//! Every change to a task or its runs holds the agent's `tasks.lock` exclusively, so that each
//! is one step (`runs` says what that makes of slot claims and runs). Listings read an index of
//! `tasks/` (see `index`) under `tasks.lock` taken shared, so that no change is half done while
//! they look; its change log is `tasks.changes.jsonl`.
//!
//! A new task is a line of `tasks/arrivals.jsonl` until the next step under `tasks.lock` makes
//! it a file (see `arrivals`): every change drains first, holding the lock exclusively, and so
//! does a read (one task, a listing, runs) that a `stat` shows something waits for.

use std::path::{Path, PathBuf};
use std::sync::PoisonError;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::index::{self, Change};
use super::{FsStore, Inner, arrivals, io, runs};
use crate::render::{Body, Listing, Rendered};
use crate::{
    AgentName, ChangeCursor, Error, Lease, LeaseToken, NewTask, Result, Run, RunId, RunOutcome,
    RunStart, SessionId, Task, TaskChanges, TaskId, TaskPatch, TaskStore, timestamp,
};

/// What a change to an agent's tasks does with the tasks created before it (see `arrivals`).
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum TaskStep {
    /// Acts on one task (an update, a slot claimed, a run started): the tasks are made files
    /// first unless that one is a file already, so that the scheduler's steps on a task it
    /// knows never wait for a backlog of new ones.
    ActOn(TaskId),
    /// Removes a task's file: as for `ActOn`, and the batch being drained is finished, so
    /// that no batch holds the removed task.
    Remove(TaskId),
    /// Settles a run under way (renewed, finished, interrupted): its task is a file already
    /// (the run started), so nothing is drained, and a renewal never waits for a drain.
    Settle,
}

impl Inner {
    fn task_path(&self, agent: &AgentName, id: &TaskId) -> PathBuf {
        self.tasks_dir(agent).join(format!("{id}.json"))
    }

    /// The agent's tasks, one file each, and the arrivals of new ones (see `arrivals`).
    fn tasks_dir(&self, agent: &AgentName) -> PathBuf {
        self.agent_dir(agent).join("tasks")
    }

    /// Makes a file of `tasks/` of every task created before the call (see `arrivals`), one
    /// bounded step per hold of `tasks.lock`. A task that is a file already (a batch a crash
    /// left, or one another drain worked on) is left alone; the others are written and
    /// fsynced, their index lines first, and `tasks/` is fsynced once per step.
    fn drain_task_arrivals(&self, agent: &AgentName) -> Result<()> {
        let lock = self.agent_dir(agent).join("tasks.lock");
        arrivals::drain(&self.tasks_dir(agent), &lock, |tasks| self.make_task_files(agent, tasks))
    }

    /// The files of tasks that arrived (see [`drain_task_arrivals`](Self::drain_task_arrivals)).
    /// The caller holds `tasks.lock` exclusively.
    fn make_task_files(&self, agent: &AgentName, tasks: Vec<Task>) -> Result<()> {
        if tasks.is_empty() {
            return Ok(());
        }
        let mut files = Vec::with_capacity(tasks.len());
        for task in &tasks {
            let path = self.task_path(agent, &task.id);
            if !io::exists(&path)? {
                files.push((path, task));
            }
        }
        if files.is_empty() {
            return Ok(());
        }
        let ids: Vec<TaskId> = files.iter().map(|(_, task)| task.id).collect();
        self.note_tasks(agent, &ids)?;
        io::write_json_all(&files)?;
        io::sync_dir(&self.tasks_dir(agent))
    }

    /// Reads one of the agent's tasks, or something of it (its runs), without `tasks.lock`,
    /// with every task created before made a file first as far as they can be (a full disk, a
    /// file system gone read-only): the read goes on without the others, but a task not found
    /// then is the drain's error, since it may be one of them.
    pub(super) fn read_task<T>(
        &self,
        agent: &AgentName,
        read: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        let drained = self.with_agent(agent, || self.drain_task_arrivals(agent));
        match (read(), drained) {
            (Err(Error::NotFound { .. }), Err(err)) => Err(err),
            (read, Err(err)) => {
                tracing::warn!(%agent, error = %err, "could not make the agent's new tasks files; read without them");
                read
            }
            (read, Ok(())) => read,
        }
    }

    /// The ids of the agent's tasks, from its directory (unparsable names skipped) and its
    /// arrivals not yet drained. The caller excludes every other write to the agent.
    pub(super) fn task_ids(&self, agent: &AgentName) -> Result<Vec<TaskId>> {
        let dir = self.tasks_dir(agent);
        let names = io::list_names(&dir, ".json")?;
        let mut ids: Vec<TaskId> = names
            .iter()
            .filter_map(|name| name.strip_suffix(".json").and_then(|id| id.parse().ok()))
            .collect();
        ids.extend(arrivals::peek::<Task>(&dir)?.iter().map(|task| task.id));
        ids.sort_unstable();
        ids.dedup();
        Ok(ids)
    }

    pub(super) fn get_task(&self, agent: &AgentName, id: &TaskId) -> Result<Task> {
        io::read_json(&self.task_path(agent, id))?.ok_or_else(|| Error::not_found("task", id))
    }

    /// The change log of `tasks/` (see `index`).
    fn tasks_log(&self, agent: &AgentName) -> PathBuf {
        self.agent_dir(agent).join("tasks.changes.jsonl")
    }

    /// Tells every process's index that a task is about to change; the caller holds
    /// `tasks.lock` exclusively, so it also ends the wait for tasks whose creators died.
    fn note_task(&self, agent: &AgentName, id: &TaskId) -> Result<()> {
        self.note_tasks(agent, std::slice::from_ref(id))
    }

    /// [`note_task`](Self::note_task) for several tasks at once: the index is settled first,
    /// once, so that it does not read a noted task before its change is made.
    fn note_tasks(&self, agent: &AgentName, ids: &[TaskId]) -> Result<()> {
        let (dir, log) = (self.tasks_dir(agent), self.tasks_log(agent));
        let source = index::Source { dir: &dir, log: &log, keep: |_: &Task| true };
        if let Err(err) = self.task_index.settle(agent, &source) {
            tracing::warn!(%agent, error = %err, "could not settle the task index");
        }
        for id in ids {
            index::note(&log, &id.to_string(), Change::Changed, true)?;
        }
        Ok(())
    }

    /// Every agent, in name order, for listing every agent's tasks: read from `agents/` at
    /// every call, so that agents made or deleted by another process are listed or not.
    fn agents_with_tasks(&self) -> Result<Vec<AgentName>> {
        let names = io::list_names(&self.root.join("agents"), "")?;
        Ok(names
            .iter()
            .filter_map(|name| AgentName::parse(name).ok())
            .filter(|agent| self.agent_exists(agent))
            .collect())
    }

    /// The agent's tasks in id order, from the index, under `tasks.lock` taken shared (see
    /// `index`). An agent deleted meanwhile has none.
    pub(super) fn tasks_of(&self, agent: &AgentName) -> Result<Vec<Task>> {
        self.tasks_page(agent, None, usize::MAX)
    }

    /// At most `limit` of the agent's tasks after `after`, in id order, from the index.
    fn tasks_page(
        &self,
        agent: &AgentName,
        after: Option<TaskId>,
        limit: usize,
    ) -> Result<Vec<Task>> {
        let tasks = self.read_tasks(agent, |index, source| {
            index.read(agent, source, |tasks| {
                index::after(tasks, after.map(|id| id.to_string())).take(limit).cloned().collect()
            })
        })?;
        Ok(tasks.unwrap_or_default())
    }

    /// The agent's whole listing of tasks in id order, as `listing` writes it (see `index`):
    /// the kept body, without a lock, while the index's log shows no change; else under the
    /// locks, from the index brought up to date.
    fn tasks_body(&self, agent: &AgentName, listing: &Listing<Task>) -> Result<Body> {
        // Tasks created but not yet files of `tasks/` are not in the index (see `arrivals`).
        let arrived = self.quiet_arrivals.waiting(&self.tasks_dir(agent));
        if !arrived
            && let Some(body) = self.task_index.current_body(agent, &self.tasks_log(agent), listing)
        {
            return Ok(body);
        }
        let body = self.read_tasks(agent, |index, source| index.body(agent, source, listing))?;
        Ok(body.unwrap_or_else(|| listing.write(&[])))
    }

    /// Every agent's tasks, by agent name then id, as `listing` writes them: the body joined
    /// last, while every agent listed then is listed now and each one's index is in the
    /// generation it was joined from.
    ///
    /// An agent whose change log has not grown since this process last read it costs one
    /// `stat` of its `agent.json` (listing `agents/`) and one of its log, with no lock taken
    /// and no file opened: see `index` for why a log that has not grown, and is still the file
    /// held open since, means that no process has begun a change to the agent's tasks. Any
    /// other agent (new here, changed, replaced with its directory) is brought up to date under
    /// its locks as before. The agents are read from `agents/` at every call, so agents made
    /// or deleted by other processes come and go at once.
    fn all_tasks_body(&self, listing: &Listing<Task>) -> Result<Body> {
        let agents = self.agents_with_tasks()?;
        self.task_index.keep_only(&agents);
        // An arrivals directory is `agents/<name>/<inbox or tasks>`.
        self.quiet_arrivals.keep_only(|dir| {
            let agent = dir.parent().and_then(Path::file_name).and_then(|name| name.to_str());
            agent
                .and_then(|name| AgentName::parse(name).ok())
                .is_some_and(|agent| agents.binary_search(&agent).is_ok())
        });
        // An agent not current without a refresh is read (rendered) once, under its locks,
        // here; its renderings serve the join below if the kept body does not answer.
        let mut state = Vec::with_capacity(agents.len());
        let mut read = Vec::with_capacity(agents.len());
        for agent in agents {
            let log = self.tasks_log(&agent);
            let current = match self.quiet_arrivals.waiting(&self.tasks_dir(&agent)) {
                true => None,
                false => self.task_index.current_generation(&agent, &log),
            };
            let (generation, rendered) = match current {
                Some(generation) => (generation, None),
                None => match self.read_tasks(&agent, |index, source| {
                    index.rendered(&agent, source, listing.render)
                })? {
                    Some((generation, rendered)) => (generation, Some(rendered)),
                    // An agent deleted meanwhile has no tasks, and no place in the state.
                    None => continue,
                },
            };
            state.push((agent, generation));
            read.push(rendered);
        }
        let all_tasks = &self.all_tasks;
        if let Some(body) =
            all_tasks.lock().unwrap_or_else(PoisonError::into_inner).get(&state, listing)
        {
            return Ok(body);
        }
        // Joined from each index as it is now, which may be newer than `state`: the body is
        // kept under the generations it was joined from, never under older ones.
        let mut joined_state = Vec::with_capacity(state.len());
        let mut parts = Vec::with_capacity(state.len());
        for ((agent, generation), rendered) in state.into_iter().zip(read) {
            let read = match rendered {
                Some(rendered) => Some((generation, rendered)),
                None => self.read_tasks(&agent, |index, source| {
                    index.rendered(&agent, source, listing.render)
                })?,
            };
            if let Some((generation, rendered)) = read {
                joined_state.push((agent, generation));
                parts.push(rendered);
            }
        }
        let parts: Vec<&[Rendered]> = parts.iter().map(Vec::as_slice).collect();
        let body = listing.join_parts(&parts);
        all_tasks.lock().unwrap_or_else(PoisonError::into_inner).keep(
            joined_state,
            listing,
            body.clone(),
        );
        Ok(body)
    }

    /// Reads the agent's index of tasks under `tasks.lock` taken shared (see `index`); `None`
    /// for an agent deleted meanwhile, which has no tasks.
    fn read_tasks<R>(
        &self,
        agent: &AgentName,
        read: impl FnOnce(&index::RecordIndex<Task>, &index::Source<'_, Task>) -> Result<R>,
    ) -> Result<Option<R>> {
        let dir = self.agent_dir(agent).join("tasks");
        let log = self.tasks_log(agent);
        let source = index::Source { dir: &dir, log: &log, keep: |_: &Task| true };
        // Under the agent's lock too: `tasks.lock` is inside the agent's directory, so without
        // it a reader could hold the lock of a directory deleted meanwhile while it reads the
        // one made anew, and miss a change made under the new lock.
        let read = self.with_agent(agent, || {
            // Tasks created before the read are files first (see `arrivals`), as far as they
            // can be made now (a full disk, a file system gone read-only): the rest is read.
            if let Err(err) = self.drain_task_arrivals(agent) {
                tracing::warn!(%agent, error = %err, "could not make the agent's new tasks files; reading without them");
            }
            let lock = self.agent_dir(agent).join("tasks.lock");
            io::with_lock_mode(&lock, false, || read(&self.task_index, &source))
        });
        match read {
            Err(err) if !self.agent_exists(agent) => {
                tracing::debug!(%agent, error = %err, "the agent went while its tasks were read");
                Ok(None)
            }
            read => read.map(Some),
        }
    }

    /// Runs a change to an agent's tasks or runs: the agent exists and stays, and no other
    /// change to its tasks runs meanwhile. What it does with the tasks created before it (see
    /// `arrivals`) is `step`'s.
    pub(super) fn with_tasks<T>(
        &self,
        agent: &AgentName,
        step: TaskStep,
        body: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        self.with_agent(agent, || {
            let drain = match step {
                TaskStep::ActOn(id) | TaskStep::Remove(id) => {
                    !io::exists(&self.task_path(agent, &id))?
                }
                TaskStep::Settle => false,
            };
            if drain {
                self.drain_task_arrivals(agent)?;
            }
            let lock = self.agent_dir(agent).join("tasks.lock");
            if matches!(step, TaskStep::Remove(_)) {
                arrivals::finish_batch(&self.tasks_dir(agent), &lock, |tasks| {
                    self.make_task_files(agent, tasks)
                })?;
            }
            io::with_lock(&lock, body)
        })
    }

    pub(super) fn put_task(&self, task: &Task) -> Result<()> {
        let path = self.task_path(&task.agent_name, &task.id);
        self.note_task(&task.agent_name, &task.id)?;
        io::ensure_dir(path.parent().unwrap_or(&self.root))?;
        io::write_json(&path, task)
    }
}

#[async_trait]
impl TaskStore for FsStore {
    async fn create(&self, agent: &AgentName, new: NewTask) -> Result<Task> {
        if new.prompt.trim().is_empty() {
            return Err(Error::Invalid("prompt must not be empty".into()));
        }
        let agent = agent.clone();
        self.blocking(move |s| {
            let now = timestamp::now();
            let task = Task::new(&agent, new, now);
            // A line of the agent's task arrivals, made a file of `tasks/` by the next step
            // that drains (see `arrivals`). The line is written with the agent guarded against
            // deletion; its sync, shared with other creators, is waited for after.
            let dir = s.tasks_dir(&agent);
            let appended = s.with_agent(&agent, || {
                io::ensure_dir(&dir)?;
                arrivals::append(&dir, &task)
            })?;
            appended.sync(&s.file_syncs)?;
            s.publish_change(&agent, &task.id);
            Ok(task)
        })
        .await
    }

    async fn get(&self, agent: &AgentName, id: &TaskId) -> Result<Task> {
        let (agent, id) = (agent.clone(), *id);
        self.blocking(move |s| {
            s.require_agent(&agent)?;
            s.read_task(&agent, || s.get_task(&agent, &id))
        })
        .await
    }

    async fn list_by_agent(&self, agent: &AgentName) -> Result<Vec<Task>> {
        let agent = agent.clone();
        self.blocking(move |s| {
            s.require_agent(&agent)?;
            s.tasks_of(&agent)
        })
        .await
    }

    async fn list_page(
        &self,
        agent: &AgentName,
        after: Option<TaskId>,
        limit: usize,
    ) -> Result<Vec<Task>> {
        let agent = agent.clone();
        self.blocking(move |s| {
            s.require_agent(&agent)?;
            s.tasks_page(&agent, after, limit)
        })
        .await
    }

    async fn list_rendered(&self, agent: &AgentName, listing: Listing<Task>) -> Result<Body> {
        let agent = agent.clone();
        self.blocking(move |s| {
            // An agent found gone (deleted by another process) has its held arrivals let go,
            // as the inbox's listing does.
            if let Err(err) = s.require_agent(&agent) {
                s.quiet_arrivals.forget(&s.tasks_dir(&agent));
                return Err(err);
            }
            s.tasks_body(&agent, &listing)
        })
        .await
    }

    async fn list_all(&self) -> Result<Vec<Task>> {
        self.blocking(|s| {
            let mut tasks = Vec::new();
            for agent in s.agents_with_tasks()? {
                tasks.extend(s.tasks_of(&agent)?);
            }
            Ok(tasks)
        })
        .await
    }

    async fn list_all_rendered(&self, listing: Listing<Task>) -> Result<Body> {
        self.blocking(move |s| s.all_tasks_body(&listing)).await
    }

    async fn update(&self, agent: &AgentName, id: &TaskId, patch: TaskPatch) -> Result<Task> {
        let (agent, id) = (agent.clone(), *id);
        self.blocking(move |s| {
            let task = s.with_tasks(&agent, TaskStep::ActOn(id), || {
                let mut task = s.get_task(&agent, &id)?;
                patch.apply(&mut task);
                s.put_task(&task)?;
                Ok(task)
            })?;
            s.publish_change(&agent, &id);
            Ok(task)
        })
        .await
    }

    async fn delete(&self, agent: &AgentName, id: &TaskId) -> Result<()> {
        let (agent, id) = (agent.clone(), *id);
        self.blocking(move |s| {
            s.with_tasks(&agent, TaskStep::Remove(id), || {
                s.note_task(&agent, &id)?;
                let path = s.task_path(&agent, &id);
                if !io::remove_file(&path)? {
                    return Err(Error::not_found("task", id));
                }
                // Answered durable like every other change: without it a power loss could
                // bring back, whole, a task whose deletion was answered.
                io::sync_dir(path.parent().unwrap_or(&s.root))?;
                io::remove_dir_all(&s.runs_dir(&agent, &id))?;
                Ok(())
            })?;
            s.publish_change(&agent, &id);
            Ok(())
        })
        .await
    }

    async fn start_run(
        &self,
        agent: &AgentName,
        task: &TaskId,
        session: Option<SessionId>,
        lease: Lease,
        now: OffsetDateTime,
    ) -> Result<RunStart> {
        runs::start_run(self, agent, task, session, lease, now).await
    }

    async fn record_skip(
        &self,
        agent: &AgentName,
        task: &TaskId,
        now: OffsetDateTime,
    ) -> Result<Run> {
        runs::record_skip(self, agent, task, now).await
    }

    async fn renew_run(
        &self,
        agent: &AgentName,
        task: &TaskId,
        run: &RunId,
        token: &LeaseToken,
        until: OffsetDateTime,
    ) -> Result<()> {
        runs::renew_run(self, agent, task, run, token, until).await
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
        runs::finish_run(self, agent, task, run, token, outcome, now).await
    }

    async fn interrupt_lapsed_run(
        &self,
        agent: &AgentName,
        task: &TaskId,
        run: &RunId,
        now: OffsetDateTime,
    ) -> Result<Option<Run>> {
        runs::interrupt_lapsed_run(self, agent, task, run, now).await
    }

    async fn list_runs(&self, agent: &AgentName, task: &TaskId) -> Result<Vec<Run>> {
        runs::list_runs(self, agent, task).await
    }

    async fn latest_run(&self, agent: &AgentName, task: &TaskId) -> Result<Option<Run>> {
        runs::latest_run(self, agent, task).await
    }

    async fn running_runs(&self) -> Result<Vec<(AgentName, Run)>> {
        runs::running_runs(self).await
    }

    async fn claim_slot(
        &self,
        agent: &AgentName,
        task: &TaskId,
        slot: OffsetDateTime,
    ) -> Result<bool> {
        runs::claim_slot(self, agent, task, slot).await
    }

    async fn changes_since(&self, cursor: Option<ChangeCursor>) -> Result<TaskChanges> {
        self.blocking(move |s| s.read_feed(cursor)).await
    }

    fn watch_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.task_changes.subscribe()
    }
}
