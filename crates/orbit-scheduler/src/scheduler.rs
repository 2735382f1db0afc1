//! The firing loop.
//!
//! Next fire times live in memory, in a min-heap keyed by time, with the authoritative plan
//! per task beside it (a heap entry that no longer matches its task's plan is stale and
//! skipped). The loop sleeps until the earliest fire time, but never longer than `recheck`,
//! so the wall clock is re-read every few seconds; a change to a task wakes it at once.
//!
//! A slot fires at most once, across scheduler instances and restarts, because firing first
//! claims the slot in the store (create-if-absent). A task whose previous run still runs
//! skips the slot, and the skip is recorded as a run.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use orbit_store::{
    AgentName, AgentPatch, ContextMode, ErrorKind, InstanceId, Lease, LeaseToken, NewSession, Run,
    RunOutcome, RunStart, RunStatus, Schedule, ScheduleType, SessionId, Stores, Task, TaskId,
    TaskPatch, TaskStatus,
};
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::runner::TaskRunner;
use crate::slots::{Plan, plan};

/// Most slots fired at once.
const MAX_CONCURRENT_FIRES: usize = 64;

/// Timings of the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Missed cron and interval slots younger than this get one catch-up run.
    pub catch_up_recurring: Duration,
    /// A missed `once` younger than this still runs.
    pub catch_up_once: Duration,
    /// A run longer than this is aborted.
    pub run_timeout: Duration,
    /// The longest sleep between two readings of the wall clock.
    pub recheck: Duration,
    /// How long running runs may finish after shutdown before they are aborted.
    pub shutdown_grace: Duration,
    /// This server process's registration: running runs name it.
    pub instance: InstanceId,
    /// How long a running run's lease lasts unless renewed.
    pub run_lease: Duration,
}

impl Default for SchedulerOptions {
    fn default() -> Self {
        Self {
            catch_up_recurring: Duration::from_secs(60 * 60),
            catch_up_once: Duration::from_secs(24 * 60 * 60),
            run_timeout: Duration::from_secs(30 * 60),
            recheck: Duration::from_secs(5),
            shutdown_grace: Duration::from_secs(30),
            instance: InstanceId::new(),
            run_lease: Duration::from_secs(30),
        }
    }
}

/// Why a run could not start now.
#[derive(Debug)]
pub enum RunNowError {
    /// The task's previous run is still going.
    Overlap,
    Store(orbit_store::Error),
}

impl RunNowError {
    pub fn kind(&self) -> ErrorKind {
        match self {
            RunNowError::Overlap => ErrorKind::Conflict,
            RunNowError::Store(err) => err.kind(),
        }
    }
}

impl std::fmt::Display for RunNowError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RunNowError::Overlap => f.write_str("the task's previous run is still running"),
            RunNowError::Store(err) => err.fmt(f),
        }
    }
}

struct Planned {
    agent: AgentName,
    at: OffsetDateTime,
}

struct Active {
    agent: AgentName,
    task: TaskId,
    run: orbit_store::RunId,
    token: LeaseToken,
    session: SessionId,
    handle: JoinHandle<()>,
}

#[derive(Default)]
struct State {
    planned: HashMap<TaskId, Planned>,
    heap: BinaryHeap<Reverse<(OffsetDateTime, TaskId)>>,
    running: HashMap<TaskId, Active>,
    changed: Vec<(AgentName, TaskId)>,
}

struct Inner {
    stores: Stores,
    runner: Arc<dyn TaskRunner>,
    clock: Arc<dyn Clock>,
    options: SchedulerOptions,
    state: Mutex<State>,
    wake: Notify,
}

/// Fires tasks on their schedules. Cheap to clone.
#[derive(Clone)]
pub struct Scheduler {
    inner: Arc<Inner>,
}

impl Scheduler {
    pub fn new(
        stores: Stores,
        runner: Arc<dyn TaskRunner>,
        clock: Arc<dyn Clock>,
        options: SchedulerOptions,
    ) -> Self {
        Self {
            inner: Arc::new(Inner {
                stores,
                runner,
                clock,
                options,
                state: Mutex::new(State::default()),
                wake: Notify::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells the scheduler a task was made, changed or deleted; it re-plans that task.
    pub fn task_changed(&self, agent: &AgentName, task: &TaskId) {
        self.state().changed.push((agent.clone(), *task));
        self.inner.wake.notify_one();
    }

    /// How many tasks are planned to fire.
    pub fn planned(&self) -> usize {
        self.state().planned.len()
    }

    /// Runs until `shutdown` resolves: recovers runs a crash left `running`, plans every
    /// active task, fires slots as they come; then lets running runs finish up to the grace
    /// period and aborts the rest.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        self.recover_interrupted_runs().await;
        match self.inner.stores.tasks.list_all().await {
            Ok(tasks) => {
                for task in tasks {
                    self.replan(task).await;
                }
            }
            Err(err) => tracing::error!(error = %err, "scheduler could not load tasks"),
        }
        tracing::info!(planned = self.planned(), "scheduler started");
        loop {
            self.apply_changes().await;
            let now = self.inner.clock.now();
            // Due slots of different tasks fire side by side: each costs a few fsyncs, and
            // one after another they would make the last of many slots late.
            let mut firing = tokio::task::JoinSet::new();
            for (agent, task, slot) in self.take_due(now) {
                let this = self.clone();
                firing.spawn(async move { this.fire(&agent, &task, slot).await });
                if firing.len() >= MAX_CONCURRENT_FIRES {
                    firing.join_next().await;
                }
            }
            while firing.join_next().await.is_some() {}
            let next = self.state().heap.peek().map(|Reverse((at, _))| *at);
            let wait = match next {
                Some(at) if at > now => Duration::try_from(at - now)
                    .unwrap_or(Duration::ZERO)
                    .min(self.inner.options.recheck),
                Some(_) => Duration::ZERO,
                None => self.inner.options.recheck,
            };
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.inner.wake.notified() => {}
                () = &mut shutdown => break,
            }
        }
        self.stop().await;
    }

    /// Starts a run of the task now (the API's "run now"), unless its previous run is still
    /// going. The slot is this moment, so it is claimed like any other.
    pub async fn run_now(&self, agent: &AgentName, task: &TaskId) -> Result<Run, RunNowError> {
        let task = self.inner.stores.tasks.get(agent, task).await.map_err(RunNowError::Store)?;
        if self.is_running(&task).await {
            return Err(RunNowError::Overlap);
        }
        let slot = self.inner.clock.now();
        if !self
            .inner
            .stores
            .tasks
            .claim_slot(agent, &task.id, slot)
            .await
            .map_err(RunNowError::Store)?
        {
            return Err(RunNowError::Overlap);
        }
        self.start_run(task).await.map_err(RunNowError::Store)
    }

    fn take_due(&self, now: OffsetDateTime) -> Vec<(AgentName, TaskId, OffsetDateTime)> {
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

    async fn apply_changes(&self) {
        let changed = std::mem::take(&mut self.state().changed);
        for (agent, id) in changed {
            match self.inner.stores.tasks.get(&agent, &id).await {
                Ok(task) => self.replan(task).await,
                Err(err) if err.kind() == ErrorKind::NotFound => {
                    // A deleted task stops: no more slots, and its running run is aborted.
                    let removed = {
                        let mut state = self.state();
                        state.planned.remove(&id);
                        state.running.remove(&id)
                    };
                    if let Some(active) = removed {
                        self.inner.runner.abort(&active.agent, &active.session).await;
                    }
                }
                Err(err) => {
                    tracing::warn!(%agent, task = %id, error = %err, "could not re-read a changed task")
                }
            }
        }
    }

    /// Plans a task's next fire from its record, persisting a skip past old missed slots.
    async fn replan(&self, task: Task) {
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
                if task.schedule_type == ScheduleType::Once {
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

    /// Whether the task has a run going, here or in another live process.
    async fn is_running(&self, task: &Task) -> bool {
        if self.state().running.contains_key(&task.id) {
            return true;
        }
        match self.inner.stores.tasks.latest_run(&task.agent_name, &task.id).await {
            Ok(Some(run)) => {
                run.status == RunStatus::Running
                    && run.lease.is_some_and(|lease| !lease.expired_at(self.inner.clock.now()))
            }
            _ => false,
        }
    }

    /// Fires one slot: claims it, skips it on overlap, or starts the run; then plans the next.
    async fn fire(&self, agent: &AgentName, id: &TaskId, slot: OffsetDateTime) {
        let stores = &self.inner.stores;
        let task = match stores.tasks.get(agent, id).await {
            Ok(task) if task.status == TaskStatus::Active => task,
            _ => return,
        };
        match stores.tasks.claim_slot(agent, id, slot).await {
            Ok(true) => {
                if self.is_running(&task).await {
                    tracing::info!(task = %id, %slot, "previous run still running; skipping the slot");
                    if let Err(err) =
                        stores.tasks.record_skip(agent, id, self.inner.clock.now()).await
                    {
                        tracing::warn!(task = %id, error = %err, "could not record a skipped run");
                    }
                } else if let Err(err) = self.start_run(task.clone()).await {
                    tracing::error!(task = %id, error = %err, "could not start a run");
                }
            }
            Ok(false) => tracing::debug!(task = %id, %slot, "slot already fired elsewhere"),
            Err(err) => tracing::warn!(task = %id, error = %err, "could not claim a slot"),
        }
        self.advance(task, slot).await;
    }

    /// Moves the task past `slot`: its next run, or completion for a `once`.
    async fn advance(&self, task: Task, slot: OffsetDateTime) {
        let Ok(schedule) =
            Schedule::parse(task.schedule_type, &task.schedule_value, task.timezone.as_deref())
        else {
            return;
        };
        // From the slot, not from now: every scheduler on the data directory must compute
        // the same next slot, or each would claim a slightly different one and both fire.
        // A next slot already past is caught up (or skipped) by the plan.
        let next = schedule.next_after(slot);
        let status = (task.schedule_type == ScheduleType::Once).then_some(TaskStatus::Completed);
        let patch = TaskPatch {
            next_run: Some(next),
            last_run: Some(slot),
            status,
            ..TaskPatch::default()
        };
        match self.inner.stores.tasks.update(&task.agent_name, &task.id, patch).await {
            Ok(updated) => self.replan(updated).await,
            Err(err) => tracing::warn!(task = %task.id, error = %err, "could not advance a task"),
        }
    }

    /// The session a run uses: a fresh one, or the agent's main session.
    async fn session_for(&self, task: &Task) -> orbit_store::Result<SessionId> {
        let stores = &self.inner.stores;
        let title = format!(
            "task: {}",
            task.name.as_deref().unwrap_or(&task.prompt).chars().take(60).collect::<String>()
        );
        match task.context_mode {
            ContextMode::Isolated => {
                let worktree_id =
                    if task.worktree { Some(self.ensure_worktree(task).await?) } else { None };
                let new = NewSession { title: Some(title), worktree_id, ..NewSession::default() };
                Ok(stores.sessions.create(&task.agent_name, new).await?.id)
            }
            ContextMode::Main => {
                let agent = stores.agents.get(&task.agent_name).await?;
                if let Some(main) = agent.main_session_id
                    && stores.sessions.get(&task.agent_name, &main).await.is_ok()
                {
                    return Ok(main);
                }
                let main = stores
                    .sessions
                    .create(
                        &task.agent_name,
                        NewSession { title: Some("main".into()), ..NewSession::default() },
                    )
                    .await?;
                stores
                    .agents
                    .update(
                        &task.agent_name,
                        AgentPatch { main_session_id: Some(main.id), ..AgentPatch::default() },
                    )
                    .await?;
                Ok(main.id)
            }
        }
    }

    /// The task's worktree, made at its first run.
    async fn ensure_worktree(&self, task: &Task) -> orbit_store::Result<String> {
        let base = self.inner.stores.agents.working_dir(&task.agent_name).await?;
        let id = task.id.to_string();
        if !orbit_agent::worktree::path_of(&base, &id).is_dir() {
            orbit_agent::worktree::create(&base, &id, task.branch.as_deref()).await.map_err(
                |err| {
                    orbit_store::Error::Invalid(format!("cannot make the task's worktree: {err}"))
                },
            )?;
        }
        Ok(id)
    }

    /// Writes the run record and runs the turn on a task of its own.
    async fn start_run(&self, task: Task) -> orbit_store::Result<Run> {
        let session = self.session_for(&task).await?;
        let lease = Lease::new(
            self.inner.options.instance,
            self.inner.clock.now() + self.inner.options.run_lease,
        );
        let run = match self
            .inner
            .stores
            .tasks
            .start_run(&task.agent_name, &task.id, Some(session), lease, self.inner.clock.now())
            .await?
        {
            RunStart::Started(run) => run,
            RunStart::Overlap(run) => {
                return Err(orbit_store::Error::Conflict(format!(
                    "run {} is still running",
                    run.id
                )));
            }
        };
        let token = lease.token;
        tracing::info!(task = %task.id, run = %run.id, %session, "run started");
        let this = self.clone();
        let (agent, task_id, run_id) = (task.agent_name.clone(), task.id, run.id);
        // Hold the lock while spawning, so the task cannot finish before it is registered.
        let mut state = self.state();
        let handle = tokio::spawn(async move {
            let timeout = this.inner.options.run_timeout;
            let outcome = match tokio::time::timeout(
                timeout + Duration::from_secs(10),
                this.inner.runner.run(&task, session, timeout),
            )
            .await
            {
                Ok(Ok(report)) => RunOutcome {
                    status: RunStatus::Success,
                    result: Some(report.result),
                    error: None,
                    cost_usd: report.cost_usd,
                },
                Ok(Err(error)) => RunOutcome {
                    status: RunStatus::Error,
                    result: None,
                    error: Some(error),
                    cost_usd: None,
                },
                Err(_) => {
                    this.inner.runner.abort(&task.agent_name, &session).await;
                    RunOutcome {
                        status: RunStatus::Error,
                        result: None,
                        error: Some(format!("timed out after {} s", timeout.as_secs())),
                        cost_usd: None,
                    }
                }
            };
            let status = outcome.status;
            if let Err(err) = this
                .inner
                .stores
                .tasks
                .finish_run(
                    &task.agent_name,
                    &task.id,
                    &run_id,
                    &token,
                    outcome,
                    this.inner.clock.now(),
                )
                .await
            {
                tracing::warn!(task = %task.id, run = %run_id, error = %err, "could not finish a run record");
            }
            tracing::info!(task = %task.id, run = %run_id, ?status, "run finished");
            if task.context_mode == ContextMode::Isolated {
                this.inner.runner.release(&task.agent_name, &session).await;
            }
            this.state().running.remove(&task.id);
        });
        state
            .running
            .insert(task_id, Active { agent, task: task_id, run: run_id, token, session, handle });
        Ok(run)
    }

    /// Marks runs left `running` by a process that is gone as interrupted.
    async fn recover_interrupted_runs(&self) {
        let stores = &self.inner.stores;
        let Ok(tasks) = stores.tasks.list_all().await else { return };
        for task in tasks {
            let Ok(Some(run)) = stores.tasks.latest_run(&task.agent_name, &task.id).await else {
                continue;
            };
            if run.status == RunStatus::Running {
                let now = self.inner.clock.now();
                match stores
                    .tasks
                    .interrupt_lapsed_run(&task.agent_name, &task.id, &run.id, now)
                    .await
                {
                    Ok(None) => {}
                    Ok(Some(_)) => {
                        tracing::warn!(task = %task.id, run = %run.id, "marked a run interrupted by a crash")
                    }
                    Err(err) => {
                        tracing::warn!(task = %task.id, error = %err, "could not mark an interrupted run")
                    }
                }
            }
        }
    }

    /// Stops firing; lets runs finish up to the grace period; aborts the rest.
    async fn stop(&self) {
        let until = tokio::time::Instant::now() + self.inner.options.shutdown_grace;
        while !self.state().running.is_empty() && tokio::time::Instant::now() < until {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        let left: Vec<Active> = self.state().running.drain().map(|(_, active)| active).collect();
        for mut active in left {
            tracing::warn!(session = %active.session, "aborting a run at shutdown");
            self.inner.runner.abort(&active.agent, &active.session).await;
            if tokio::time::timeout(Duration::from_secs(10), &mut active.handle).await.is_err() {
                // The turn did not end when asked: stop waiting, and say so in its record.
                active.handle.abort();
                let outcome = RunOutcome {
                    status: RunStatus::Error,
                    result: None,
                    error: Some("aborted at shutdown".into()),
                    cost_usd: None,
                };
                if let Err(err) = self
                    .inner
                    .stores
                    .tasks
                    .finish_run(
                        &active.agent,
                        &active.task,
                        &active.run,
                        &active.token,
                        outcome,
                        self.inner.clock.now(),
                    )
                    .await
                {
                    tracing::warn!(run = %active.run, error = %err, "could not finish an aborted run");
                }
            }
        }
        tracing::info!("scheduler stopped");
    }
}

impl orbit_agent::TaskListener for Scheduler {
    fn task_changed(&self, agent: &AgentName, task: &TaskId) {
        Scheduler::task_changed(self, agent, task);
    }
}
