//! Tasks as `agents/<name>/tasks/<id>.json`, runs as `agents/<name>/runs/<task>/<run>.json`,
//! and the task change feed `task-changes.jsonl`.
//!
//! Every change to a task or its runs holds the agent's `tasks.lock` exclusively (creating a
//! task under a fresh id holds it shared, as listings do), so a slot claim (the
//! task's `lastSlot` moves forward or the claim is refused), a run start (refused while the
//! task's newest run runs under a live lease) and a run's settling (refused to a holder whose
//! lease was found lapsed) are each one step. The task record points at its newest run, so no
//! fire lists the runs directory; a task keeps its newest `runs_kept` runs. Listings read an
//! index of `tasks/` (see `index`) under `tasks.lock` taken shared, so that no change is half
//! done while they look; its change log is `tasks.changes.jsonl`.
//!
//! The change feed tells every process sharing the directory that a task was created, updated
//! or deleted: an append-only file with a header line naming it (like the session journal),
//! which readers tail from their offset. It is a wake-up call, not data: it is appended without
//! fsync, and replaced by an empty one when it grows past a bound, which tells its readers to
//! re-read every task. A change whose line is lost (the writer crashed between the task and
//! its line, or the append failed and was logged) reaches other live schedulers only when they
//! next re-read that task or restart; the writer's own scheduler and every scheduler started
//! after it see the task.
//!
//! A change's line is appended after its record is written and its task lock let go, so lines
//! of racing writers may come in another order than their records (an update's line before
//! the create's, a delete's before an update's). That is harmless because a line carries no
//! state: it names a task, and its reader re-reads the task (`get`) after reading the line.
//! Every change's line comes after the change, so a reader that has read it then reads that
//! change or a newer one; the last change's line comes after the last change, so the reader
//! ends with the final state (or the task gone), whatever order the lines took. Publishing
//! under the lock would only make creators, who hold it shared, wait on the feed's own lock.

use std::fs::File;
use std::io::{BufRead, BufReader, Read, Seek, SeekFrom};
use std::path::PathBuf;
use std::sync::PoisonError;

use async_trait::async_trait;
use time::OffsetDateTime;

use super::index::{self, Change};
use super::{FsStore, Inner, created, io};
use crate::render::{Body, Listing, Rendered};
use crate::{
    AgentName, ChangeCursor, Error, Lease, LeaseToken, NewTask, Result, Run, RunId, RunOutcome,
    RunStart, RunStatus, SessionId, Task, TaskChange, TaskChanges, TaskId, TaskPatch, TaskStore,
    timestamp,
};

/// The change feed is replaced by an empty one past this size.
const FEED_MAX_BYTES: u64 = 1024 * 1024;

/// The header line is far shorter; a longer first line is not a header.
const HEADER_MAX_BYTES: u64 = 256;

#[derive(serde::Serialize, serde::Deserialize)]
#[serde(untagged)]
enum FeedLine {
    Header { feed: crate::ids::JournalId },
    Change(TaskChange),
}

impl Inner {
    fn task_path(&self, agent: &AgentName, id: &TaskId) -> PathBuf {
        self.agent_dir(agent).join("tasks").join(format!("{id}.json"))
    }

    fn runs_dir(&self, agent: &AgentName, task: &TaskId) -> PathBuf {
        self.agent_dir(agent).join("runs").join(task.to_string())
    }

    fn run_path(&self, agent: &AgentName, task: &TaskId, run: &RunId) -> PathBuf {
        self.runs_dir(agent, task).join(format!("{run}.json"))
    }

    /// The ids of the agent's tasks, from its directory (unparsable names skipped).
    pub(super) fn task_ids(&self, agent: &AgentName) -> Result<Vec<TaskId>> {
        let names = io::list_names(&self.agent_dir(agent).join("tasks"), ".json")?;
        Ok(names
            .iter()
            .filter_map(|name| name.strip_suffix(".json").and_then(|id| id.parse().ok()))
            .collect())
    }

    fn get_task(&self, agent: &AgentName, id: &TaskId) -> Result<Task> {
        io::read_json(&self.task_path(agent, id))?.ok_or_else(|| Error::not_found("task", id))
    }

    /// The change log of `tasks/` (see `index`).
    fn tasks_log(&self, agent: &AgentName) -> PathBuf {
        self.agent_dir(agent).join("tasks.changes.jsonl")
    }

    /// Tells every process's index that a task is about to change; the caller holds
    /// `tasks.lock` exclusively, so it also ends the wait for tasks whose creators died.
    fn note_task(&self, agent: &AgentName, id: &TaskId) -> Result<()> {
        let (dir, log) = (self.agent_dir(agent).join("tasks"), self.tasks_log(agent));
        let source = index::Source { dir: &dir, log: &log, keep: |_: &Task| true };
        if let Err(err) = self.task_index.settle(agent, &source) {
            tracing::warn!(%agent, error = %err, "could not settle the task index");
        }
        index::note(&log, &id.to_string(), Change::Changed, true)
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
    fn tasks_of(&self, agent: &AgentName) -> Result<Vec<Task>> {
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
        if let Some(body) = self.task_index.current_body(agent, &self.tasks_log(agent), listing) {
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
        // An agent not current without a refresh is read (rendered) once, under its locks,
        // here; its renderings serve the join below if the kept body does not answer.
        let mut state = Vec::with_capacity(agents.len());
        let mut read = Vec::with_capacity(agents.len());
        for agent in agents {
            let log = self.tasks_log(&agent);
            let (generation, rendered) = match self.task_index.current_generation(&agent, &log) {
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
            io::with_lock_mode(&self.agent_dir(agent).join("tasks.lock"), false, || {
                read(&self.task_index, &source)
            })
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
    /// change to its tasks runs meanwhile.
    fn with_tasks<T>(&self, agent: &AgentName, body: impl FnOnce() -> Result<T>) -> Result<T> {
        self.with_agent(agent, || io::with_lock(&self.agent_dir(agent).join("tasks.lock"), body))
    }

    /// The directory of an agent's task files.
    fn tasks_dir(&self, agent: &AgentName) -> PathBuf {
        self.agent_dir(agent).join("tasks")
    }

    /// Makes the new tasks of the agent's log durable in their files and lets the log go (see
    /// `created`), off the request path and without `tasks.lock`. A failure is logged: the
    /// sealed log stays, and the next checkpoint or open takes it up.
    fn checkpoint_tasks(&self, agent: &AgentName) {
        let dir = self.tasks_dir(agent);
        let Some(_under_way) = self.created.checkpointing(&dir) else { return };
        let done = created::seal(&dir, &self.created).and_then(|()| created::checkpoint(&dir));
        if let Err(err) = done {
            tracing::warn!(%agent, error = %err, "could not checkpoint the log of new tasks");
        }
    }

    /// Brings back the new tasks of the agent's log that a power loss took (see `created`).
    /// Run at open.
    pub(super) fn replay_tasks(&self, agent: &AgentName) -> Result<created::Replayed> {
        let dir = self.tasks_dir(agent);
        if !created::has_logs(&dir)? {
            return Ok(created::Replayed::default());
        }
        let mut restored = Vec::new();
        let replayed = self.with_tasks(agent, || {
            created::replay(
                &dir,
                &self.created,
                &[],
                |task: &Task| task.agent_name == *agent,
                |name, task: Task| {
                    self.note_task(agent, &task.id)?;
                    io::write_json(&dir.join(name), &task)?;
                    restored.push(task.id);
                    Ok(())
                },
            )
        })?;
        for id in &restored {
            self.publish_change(agent, id);
        }
        Ok(replayed)
    }

    fn put_task(&self, task: &Task) -> Result<()> {
        let path = self.task_path(&task.agent_name, &task.id);
        self.note_task(&task.agent_name, &task.id)?;
        io::ensure_dir(path.parent().unwrap_or(&self.root))?;
        io::write_json(&path, task)
    }

    fn read_run(&self, agent: &AgentName, task: &TaskId, run: &RunId) -> Result<Run> {
        io::read_json(&self.run_path(agent, task, run))?.ok_or_else(|| Error::not_found("run", run))
    }

    fn put_run(&self, agent: &AgentName, run: &Run) -> Result<()> {
        let dir = self.runs_dir(agent, &run.task_id);
        io::ensure_dir(&dir)?;
        io::write_json(&dir.join(format!("{}.json", run.id)), run)
    }

    /// The task's newest run, through the task's pointer.
    fn newest_run(&self, task: &Task) -> Result<Option<Run>> {
        match task.latest_run {
            Some(run) => Ok(io::read_json(&self.run_path(&task.agent_name, &task.id, &run))?),
            None => Ok(None),
        }
    }

    /// Adds a run as the task's newest, and drops runs beyond the retention.
    fn add_run(&self, mut task: Task, run: &Run) -> Result<()> {
        // The pointer first: a crash between the two leaves a pointer to no run, which reads
        // as "no run", never a running run that nothing points at and nothing settles.
        task.latest_run = Some(run.id);
        self.put_task(&task)?;
        self.put_run(&task.agent_name, run)?;
        let dir = self.runs_dir(&task.agent_name, &task.id);
        let names = io::list_names(&dir, ".json")?;
        let excess = names.len().saturating_sub(self.options.runs_kept);
        for name in names.iter().take(excess) {
            io::remove_file(&dir.join(name))?;
        }
        Ok(())
    }

    fn interrupt(&self, agent: &AgentName, mut run: Run, now: OffsetDateTime) -> Result<Run> {
        let holder = run.lease.map(|lease| lease.instance.to_string()).unwrap_or_default();
        tracing::warn!(%agent, task = %run.task_id, run = %run.id, %holder, "marking a run interrupted: its server stopped renewing it");
        run.interrupt(now);
        self.put_run(agent, &run)?;
        Ok(run)
    }

    fn feed_path(&self) -> PathBuf {
        self.root.join("task-changes.jsonl")
    }

    /// Tells every process that a task changed. A failure is logged, not returned: the
    /// change itself is stored, and other schedulers re-read every task now and then. Called
    /// after the change is made and its lock let go: the line only says "read this task
    /// again", so lines in another order than their changes are harmless (see the module docs).
    pub(super) fn publish_change(&self, agent: &AgentName, task: &TaskId) {
        let published = io::with_lock(&self.root.join("task-changes.lock"), || {
            let path = self.feed_path();
            let len = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            if len == 0 || len > FEED_MAX_BYTES {
                let mut header =
                    serde_json::to_vec(&FeedLine::Header { feed: crate::ids::JournalId::new() })
                        .map_err(|err| Error::Corrupt { path: path.clone(), source: err })?;
                header.push(b'\n');
                io::write_bytes(&path, &header)?;
            }
            let line = serde_json::to_vec(&FeedLine::Change(TaskChange {
                agent: agent.clone(),
                task: *task,
            }))
            .map_err(|err| Error::Corrupt { path: path.clone(), source: err })?;
            io::append_line_unsynced(&path, &line)
        });
        if let Err(err) = published {
            tracing::warn!(%agent, %task, error = %err, "could not publish a task change");
        }
        // After the feed line, so that a scheduler woken by the tick finds the change there.
        self.task_changes.send_modify(|ticks| *ticks = ticks.wrapping_add(1));
    }

    /// Reads the feed past `cursor`: its header line, then only the bytes after the cursor,
    /// because schedulers poll it at every wake and it grows up to `FEED_MAX_BYTES`.
    fn read_feed(&self, cursor: Option<ChangeCursor>) -> Result<TaskChanges> {
        let path = self.feed_path();
        let file = match File::open(&path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                // No feed yet: nothing changed since whatever the reader read.
                let cursor = ChangeCursor { feed: ulid::Ulid::nil(), offset: 0 };
                return Ok(TaskChanges { changes: Vec::new(), reset: false, cursor });
            }
            Err(err) => return Err(Error::io(&path, err)),
        };
        let len = file.metadata().map_err(|err| Error::io(&path, err))?.len();
        let mut reader = BufReader::new(file);
        let mut first = Vec::new();
        (&mut reader)
            .take(HEADER_MAX_BYTES)
            .read_until(b'\n', &mut first)
            .map_err(|err| Error::io(&path, err))?;
        let (header, header_len) = io::parse_jsonl::<FeedLine>(&path, &first);
        let feed = match header.first() {
            Some(FeedLine::Header { feed }) => feed.ulid(),
            _ => ulid::Ulid::nil(),
        };
        let same_feed = cursor.is_some_and(|c| c.feed == feed || c.feed.is_nil());
        let from = match cursor {
            Some(c) if same_feed && c.offset <= len => c.offset.max(header_len as u64),
            // A new reader, or a replaced feed: read it all to find its end.
            _ => header_len as u64,
        };
        reader.seek(SeekFrom::Start(from)).map_err(|err| Error::io(&path, err))?;
        let mut bytes = Vec::new();
        reader.read_to_end(&mut bytes).map_err(|err| Error::io(&path, err))?;
        let (lines, complete) = io::parse_jsonl::<FeedLine>(&path, &bytes);
        let end = ChangeCursor { feed, offset: from + complete as u64 };
        let Some(cursor) = cursor else {
            return Ok(TaskChanges { changes: Vec::new(), reset: false, cursor: end });
        };
        if !same_feed || cursor.offset > len {
            return Ok(TaskChanges { changes: Vec::new(), reset: true, cursor: end });
        }
        let changes = lines
            .into_iter()
            .filter_map(|line| match line {
                FeedLine::Change(change) => Some(change),
                FeedLine::Header { .. } => None,
            })
            .collect();
        Ok(TaskChanges { changes, reset: false, cursor: end })
    }
}

#[async_trait]
impl TaskStore for FsStore {
    async fn create(&self, agent: &AgentName, new: NewTask) -> Result<Task> {
        if new.prompt.trim().is_empty() {
            return Err(Error::Invalid("prompt must not be empty".into()));
        }
        let agent = agent.clone();
        let (task, due) = self
            .blocking(move |s| {
                let now = timestamp::now();
                let task = Task::new(&agent, new, now);
                // A fresh id: no one else can name this file, so creators hold `tasks.lock` only
                // shared, and the log of new records makes the file durable, its sync shared by
                // concurrent creators (see `created`); the index's line comes first (see `index`).
                let due = s.with_agent(&agent, || {
                    io::with_lock_mode(&s.agent_dir(&agent).join("tasks.lock"), false, || {
                        let log = s.tasks_log(&agent);
                        let id = task.id.to_string();
                        index::note(&log, &id, Change::New, false)?;
                        let path = s.task_path(&agent, &task.id);
                        let dir = path.parent().unwrap_or(&s.root);
                        let written = io::ensure_dir(dir)
                            .and_then(|()| created::write_new(&path, &task, &s.created));
                        if written.is_err() {
                            // Readers stop waiting for it; a partial file never got its name.
                            let _ = index::note(&log, &id, Change::Changed, false);
                        }
                        written
                    })
                })?;
                s.publish_change(&agent, &task.id);
                Ok((task, due))
            })
            .await?;
        if due {
            let agent = task.agent_name.clone();
            self.checkpoint_in_background(move |s| s.checkpoint_tasks(&agent));
        }
        Ok(task)
    }

    async fn get(&self, agent: &AgentName, id: &TaskId) -> Result<Task> {
        let (agent, id) = (agent.clone(), *id);
        self.blocking(move |s| {
            s.require_agent(&agent)?;
            s.get_task(&agent, &id)
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
            s.require_agent(&agent)?;
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
            let task = s.with_tasks(&agent, || {
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
            s.with_tasks(&agent, || {
                let path = s.task_path(&agent, &id);
                if !path.exists() {
                    return Err(Error::not_found("task", id));
                }
                s.note_task(&agent, &id)?;
                // The create's line may still be in the log of new records: a tombstone keeps
                // it from bringing the task back after a power loss (see `created`).
                let dir = path.parent().unwrap_or(&s.root);
                created::tombstone(dir, &format!("{id}.json"), &s.created)?;
                if !io::remove_file(&path)? {
                    return Err(Error::not_found("task", id));
                }
                // The deletion is answered durable, like every other change.
                io::sync_dir(dir)?;
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
        let (agent, task_id) = (agent.clone(), *task);
        self.blocking(move |s| {
            s.with_tasks(&agent, || {
                let task = s.get_task(&agent, &task_id)?;
                if let Some(previous) = s.newest_run(&task)?
                    && previous.status == RunStatus::Running
                {
                    match previous.lease {
                        Some(held) if !held.expired_at(now) => {
                            return Ok(RunStart::Overlap(previous));
                        }
                        _ => {
                            s.interrupt(&agent, previous, now)?;
                        }
                    }
                }
                let run = Run::started(task_id, session, lease, now);
                s.add_run(task, &run)?;
                Ok(RunStart::Started(run))
            })
        })
        .await
    }

    async fn record_skip(
        &self,
        agent: &AgentName,
        task: &TaskId,
        now: OffsetDateTime,
    ) -> Result<Run> {
        let (agent, task_id) = (agent.clone(), *task);
        self.blocking(move |s| {
            s.with_tasks(&agent, || {
                let task = s.get_task(&agent, &task_id)?;
                // Skips join the newest skip record while no run started after it (ids are
                // ULIDs, so a later run has a greater id).
                let consecutive = task
                    .latest_skip
                    .is_some_and(|skip| task.latest_run.is_none_or(|run| run < skip));
                if consecutive
                    && let Some(skip_id) = task.latest_skip
                    && let Ok(mut skip) = s.read_run(&agent, &task_id, &skip_id)
                {
                    skip.skipped_slots = Some(skip.skipped_slots.unwrap_or(1).saturating_add(1));
                    skip.completed_at = Some(now);
                    s.put_run(&agent, &skip)?;
                    return Ok(skip);
                }
                let run = Run::skipped(task_id, now);
                s.put_run(&agent, &run)?;
                let mut task = task;
                task.latest_skip = Some(run.id);
                s.put_task(&task)?;
                Ok(run)
            })
        })
        .await
    }

    async fn renew_run(
        &self,
        agent: &AgentName,
        task: &TaskId,
        run: &RunId,
        token: &LeaseToken,
        until: OffsetDateTime,
    ) -> Result<()> {
        let (agent, task, run_id, token) = (agent.clone(), *task, *run, *token);
        self.blocking(move |s| {
            s.with_tasks(&agent, || {
                let mut run = s.read_run(&agent, &task, &run_id)?;
                if !run.renew(&token, until) {
                    return Err(Error::Conflict(format!(
                        "run {run_id} is no longer held by this server"
                    )));
                }
                s.put_run(&agent, &run)
            })
        })
        .await
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
        let (agent, task, run_id, token) = (agent.clone(), *task, *run, *token);
        self.blocking(move |s| {
            s.with_tasks(&agent, || {
                let mut run = s.read_run(&agent, &task, &run_id)?;
                if !run.is_held_by(&token) {
                    return Err(Error::Conflict(format!(
                        "run {run_id} is no longer held by this server (it is {:?})",
                        run.status
                    )));
                }
                run.complete(outcome, now);
                s.put_run(&agent, &run)?;
                Ok(run)
            })
        })
        .await
    }

    async fn interrupt_lapsed_run(
        &self,
        agent: &AgentName,
        task: &TaskId,
        run: &RunId,
        now: OffsetDateTime,
    ) -> Result<Option<Run>> {
        let (agent, task, run_id) = (agent.clone(), *task, *run);
        self.blocking(move |s| {
            s.with_tasks(&agent, || {
                let run = s.read_run(&agent, &task, &run_id)?;
                let lapsed = run.status == RunStatus::Running
                    && run.lease.is_none_or(|lease| lease.expired_at(now));
                if !lapsed {
                    return Ok(None);
                }
                s.interrupt(&agent, run, now).map(Some)
            })
        })
        .await
    }

    async fn list_runs(&self, agent: &AgentName, task: &TaskId) -> Result<Vec<Run>> {
        let (agent, task) = (agent.clone(), *task);
        self.blocking(move |s| {
            s.get_task(&agent, &task)?;
            let dir = s.runs_dir(&agent, &task);
            let mut runs: Vec<Run> = io::list_names(&dir, ".json")?
                .iter()
                .filter_map(|name| io::read_json_lenient(&dir.join(name)))
                .collect();
            runs.sort_by_key(|run| std::cmp::Reverse(run.id));
            Ok(runs)
        })
        .await
    }

    async fn latest_run(&self, agent: &AgentName, task: &TaskId) -> Result<Option<Run>> {
        let (agent, task) = (agent.clone(), *task);
        self.blocking(move |s| {
            let task = s.get_task(&agent, &task)?;
            s.newest_run(&task)
        })
        .await
    }

    async fn running_runs(&self) -> Result<Vec<(AgentName, Run)>> {
        self.blocking(|s| {
            let mut running = Vec::new();
            for name in io::list_names(&s.root.join("agents"), "")? {
                let Ok(agent) = AgentName::parse(&name) else { continue };
                if !s.agent_exists(&agent) {
                    continue;
                }
                for task in s.tasks_of(&agent)? {
                    if let Some(run) =
                        s.newest_run(&task)?.filter(|r| r.status == RunStatus::Running)
                    {
                        running.push((agent.clone(), run));
                    }
                }
            }
            Ok(running)
        })
        .await
    }

    async fn claim_slot(
        &self,
        agent: &AgentName,
        task: &TaskId,
        slot: OffsetDateTime,
    ) -> Result<bool> {
        let (agent, task) = (agent.clone(), *task);
        self.blocking(move |s| {
            s.with_tasks(&agent, || {
                let mut record = s.get_task(&agent, &task)?;
                if record.last_slot.is_some_and(|last| last >= slot) {
                    return Ok(false);
                }
                record.last_slot = Some(slot);
                s.put_task(&record)?;
                Ok(true)
            })
        })
        .await
    }

    async fn changes_since(&self, cursor: Option<ChangeCursor>) -> Result<TaskChanges> {
        self.blocking(move |s| s.read_feed(cursor)).await
    }

    fn watch_changes(&self) -> tokio::sync::watch::Receiver<u64> {
        self.inner.task_changes.subscribe()
    }
}
