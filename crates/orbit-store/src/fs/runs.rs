//! A task's runs, as `agents/<name>/runs/<task>/<run>.json`, and its slots.
//!
//! Each step holds the agent's `tasks.lock` exclusively (see `tasks`), so a slot claim (the
//! task's `lastSlot` moves forward or the claim is refused), a run start (refused while the
//! task's newest run runs under a live lease) and a run's settling (refused to a holder whose
//! lease was found lapsed) are each one step. The task record points at its newest run, so no
//! fire lists the runs directory; a task keeps its newest `runs_kept` runs.
//!
//! The functions here are `TaskStore`'s run and slot methods, which `FsStore`'s implementation
//! of the trait (in `tasks`) hands on to.

use std::path::PathBuf;

use time::OffsetDateTime;

use super::tasks::TaskStep;
use super::{FsStore, Inner, io};
use crate::{
    AgentName, Error, Lease, LeaseToken, Result, Run, RunId, RunOutcome, RunStart, RunStatus,
    SessionId, Task, TaskId,
};

impl Inner {
    pub(super) fn runs_dir(&self, agent: &AgentName, task: &TaskId) -> PathBuf {
        self.agent_dir(agent).join("runs").join(task.to_string())
    }

    fn run_path(&self, agent: &AgentName, task: &TaskId, run: &RunId) -> PathBuf {
        self.runs_dir(agent, task).join(format!("{run}.json"))
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
}

pub(super) async fn start_run(
    store: &FsStore,
    agent: &AgentName,
    task: &TaskId,
    session: Option<SessionId>,
    lease: Lease,
    now: OffsetDateTime,
) -> Result<RunStart> {
    let (agent, task_id) = (agent.clone(), *task);
    store
        .blocking(move |s| {
            s.with_tasks(&agent, TaskStep::ActOn(task_id), || {
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

pub(super) async fn record_skip(
    store: &FsStore,
    agent: &AgentName,
    task: &TaskId,
    now: OffsetDateTime,
) -> Result<Run> {
    let (agent, task_id) = (agent.clone(), *task);
    store
        .blocking(move |s| {
            s.with_tasks(&agent, TaskStep::ActOn(task_id), || {
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

pub(super) async fn renew_run(
    store: &FsStore,
    agent: &AgentName,
    task: &TaskId,
    run: &RunId,
    token: &LeaseToken,
    until: OffsetDateTime,
) -> Result<()> {
    let (agent, task, run_id, token) = (agent.clone(), *task, *run, *token);
    store
        .blocking(move |s| {
            s.with_tasks(&agent, TaskStep::Settle, || {
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

pub(super) async fn finish_run(
    store: &FsStore,
    agent: &AgentName,
    task: &TaskId,
    run: &RunId,
    token: &LeaseToken,
    outcome: RunOutcome,
    now: OffsetDateTime,
) -> Result<Run> {
    let (agent, task, run_id, token) = (agent.clone(), *task, *run, *token);
    store
        .blocking(move |s| {
            s.with_tasks(&agent, TaskStep::Settle, || {
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

pub(super) async fn interrupt_lapsed_run(
    store: &FsStore,
    agent: &AgentName,
    task: &TaskId,
    run: &RunId,
    now: OffsetDateTime,
) -> Result<Option<Run>> {
    let (agent, task, run_id) = (agent.clone(), *task, *run);
    store
        .blocking(move |s| {
            s.with_tasks(&agent, TaskStep::Settle, || {
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

pub(super) async fn list_runs(
    store: &FsStore,
    agent: &AgentName,
    task: &TaskId,
) -> Result<Vec<Run>> {
    let (agent, task) = (agent.clone(), *task);
    store
        .blocking(move |s| {
            s.read_task(&agent, || s.get_task(&agent, &task))?;
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

pub(super) async fn latest_run(
    store: &FsStore,
    agent: &AgentName,
    task: &TaskId,
) -> Result<Option<Run>> {
    let (agent, task) = (agent.clone(), *task);
    store
        .blocking(move |s| {
            let task = s.read_task(&agent, || s.get_task(&agent, &task))?;
            s.newest_run(&task)
        })
        .await
}

pub(super) async fn running_runs(store: &FsStore) -> Result<Vec<(AgentName, Run)>> {
    store
        .blocking(|s| {
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

pub(super) async fn claim_slot(
    store: &FsStore,
    agent: &AgentName,
    task: &TaskId,
    slot: OffsetDateTime,
) -> Result<bool> {
    let (agent, task) = (agent.clone(), *task);
    store
        .blocking(move |s| {
            s.with_tasks(&agent, TaskStep::ActOn(task), || {
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
