//! Firing a slot, a run's life from its record to its outcome, and shutdown.
//!
//! A run's record is written before anything else happens for it (`TaskStore::start_run`,
//! atomic against another run of the task under a live lease), so a skip or a lost race makes
//! no session. The turn then runs on a task of its own, under the run timeout and a last-
//! resort safety net past it; whatever happens, the record gets an outcome.

use std::sync::atomic::Ordering;
use std::time::Duration;

use orbit_store::{
    AgentName, AgentStatus, ContextMode, ErrorKind, Lease, Run, RunId, RunOutcome, RunStart,
    RunStatus, Schedule, SessionId, Task, TaskId, TaskStatus,
};
use time::OffsetDateTime;

use tokio_util::sync::CancellationToken;

use super::{Active, Scheduler};
use crate::runner::{RunError, RunReport};

/// How far past the run timeout the safety net waits. The turn's own timeout should have
/// ended it by then.
const SAFETY_MARGIN: Duration = Duration::from_secs(10);

/// How long a turn aborted by the safety net or at shutdown may take to settle.
const SETTLE_GRACE: Duration = Duration::from_secs(10);

/// How often a main-mode run asks again for a main session busy with a turn it did not start
/// (a person's chat, or another process's run).
const MAIN_RETRY: Duration = Duration::from_secs(1);

impl Scheduler {
    /// Fires one slot: checks that it is still a slot of the task's current schedule,
    /// claims it, starts the run or records a skip; then plans the next.
    pub(super) async fn fire(&self, agent: &AgentName, id: &TaskId, slot: OffsetDateTime) {
        let stores = &self.inner.stores;
        // Re-read: another process may have paused, rescheduled or deleted the task.
        let task = match stores.tasks.get(agent, id).await {
            Ok(task) => task,
            Err(err) if err.kind() == ErrorKind::NotFound => return,
            Err(err) => {
                tracing::warn!(task = %id, error = %err, "could not read a task to fire it");
                self.look_again_later(agent, id);
                return;
            }
        };
        let Ok(schedule) =
            Schedule::parse(task.schedule_type, &task.schedule_value, task.timezone.as_deref())
        else {
            return self.replan(task).await;
        };
        if task.status != TaskStatus::Active || !task.is_slot(&schedule, slot) {
            tracing::debug!(task = %id, %slot, "no longer a slot of the task; re-planning");
            return self.replan(task).await;
        }
        match stores.tasks.claim_slot(agent, id, slot).await {
            Ok(true) => {}
            Ok(false) => {
                tracing::debug!(task = %id, %slot, "slot already fired elsewhere");
                return self.reread(agent, id).await;
            }
            Err(err) => {
                tracing::warn!(task = %id, error = %err, "could not claim a slot");
                self.look_again_later(agent, id);
                return;
            }
        }
        // An inactive agent runs nothing: its slot passes, claimed, without a run, so the
        // plan moves on rather than firing the same slot again.
        if self.agent_inactive(agent).await {
            tracing::info!(task = %id, %slot, %agent, "the agent is inactive; the slot passes without a run");
            return self.advance(task, &schedule, slot).await;
        }
        match self.start_run(&task).await {
            Ok(Some(_)) => {}
            Ok(None) => {
                tracing::info!(task = %id, %slot, "previous run still running; skipping the slot");
                let now = self.inner.clock.now();
                match stores.tasks.record_skip(agent, id, now).await {
                    Ok(skipped) => self.announce_run(&skipped, agent),
                    Err(err) => {
                        tracing::warn!(task = %id, error = %err, "could not record a skipped run")
                    }
                }
            }
            Err(err) => tracing::error!(task = %id, error = %err, "could not start a run"),
        }
        self.advance(task, &schedule, slot).await;
    }

    /// Whether the agent's status is `inactive`. A failed read says no: the run then meets the
    /// same failure and records it, rather than the slot passing unseen.
    pub(super) async fn agent_inactive(&self, agent: &AgentName) -> bool {
        match self.inner.stores.agents.get(agent).await {
            Ok(found) => found.status == AgentStatus::Inactive,
            Err(_) => false,
        }
    }

    /// Writes the run record and runs the turn on a task of its own; `None` when the task's
    /// previous run still runs under a live lease.
    pub(super) async fn start_run(&self, task: &Task) -> orbit_store::Result<Option<Run>> {
        let stores = &self.inner.stores;
        // The main session is one per agent, made at most once; an isolated run's session is
        // made only once the run has started.
        let session = match task.context_mode {
            ContextMode::Main => self.main_session(task).await?,
            ContextMode::Isolated => SessionId::new(),
        };
        let now = self.inner.clock.now();
        let lease = Lease::new(self.inner.options.instance, now + self.inner.options.run_lease);
        let run = match stores
            .tasks
            .start_run(&task.agent_name, &task.id, Some(session), lease, now)
            .await?
        {
            RunStart::Started(run) => run,
            RunStart::Overlap(_) => return Ok(None),
        };
        if task.context_mode == ContextMode::Isolated
            && let Err(err) = self.isolated_session(task, session).await
        {
            let outcome = failed(format!("could not make the run's session: {err}"));
            let now = self.inner.clock.now();
            let finished = stores
                .tasks
                .finish_run(&task.agent_name, &task.id, &run.id, &lease.token, outcome, now)
                .await?;
            self.announce_run(&finished, &task.agent_name);
            return Err(err);
        }
        tracing::info!(task = %task.id, run = %run.id, %session, "run started");
        self.announce_run(&run, &task.agent_name);
        let this = self.clone();
        let (agent, task_id, run_id, token) =
            (task.agent_name.clone(), task.id, run.id, lease.token);
        let task = task.clone();
        // Hold the lock while spawning, so the task cannot finish before it is registered.
        let cancel = tokio_util::sync::CancellationToken::new();
        let run_cancel = cancel.clone();
        let body = async move {
            let outcome = this.turn(&task, run_id, session, &run_cancel).await;
            let status = outcome.status;
            let now = this.inner.clock.now();
            match this
                .inner
                .stores
                .tasks
                .finish_run(&task.agent_name, &task.id, &run_id, &token, outcome, now)
                .await
            {
                Ok(finished) => this.announce_run(&finished, &task.agent_name),
                Err(err) => {
                    tracing::warn!(task = %task.id, run = %run_id, error = %err, "could not finish a run record")
                }
            }
            tracing::info!(task = %task.id, run = %run_id, ?status, "run finished");
            if task.context_mode == ContextMode::Isolated {
                this.inner.runner.release(&task.agent_name, &session).await;
            }
            let mut state = this.state();
            if state.running.get(&task.id).is_some_and(|active| active.run == run_id) {
                state.running.remove(&task.id);
            }
        };
        let mut state = self.state();
        let body = self.inner.runs.track_future(body);
        let handle = match &self.inner.runtime {
            Some(runtime) => runtime.spawn(body),
            None => tokio::spawn(body),
        };
        state.running.insert(
            task_id,
            Active { agent, task: task_id, run: run_id, token, session, cancel, handle },
        );
        Ok(Some(run))
    }

    /// Runs the run's turn to an outcome, within the run timeout.
    async fn turn(
        &self,
        task: &Task,
        run: RunId,
        session: SessionId,
        cancel: &CancellationToken,
    ) -> RunOutcome {
        let timeout = self.inner.options.run_timeout;
        let deadline = tokio::time::Instant::now() + timeout;
        let result = match task.context_mode {
            ContextMode::Main => self.turn_in_main(task, run, session, deadline, cancel).await,
            ContextMode::Isolated => self.guarded_turn(task, run, session, timeout, cancel).await,
        };
        match result {
            Ok(report) => RunOutcome {
                status: RunStatus::Success,
                result: Some(report.recorded_result()),
                error: None,
                cost_usd: report.cost_usd,
            },
            Err(_) if self.inner.stopping.load(Ordering::SeqCst) => failed("aborted at shutdown"),
            Err(_) if cancel.is_cancelled() => {
                failed("cancelled: its task was deleted or its lease lost")
            }
            Err(err) => failed(err.to_string()),
        }
    }

    /// A main-mode turn: waits its turn among this process's main-mode runs of the agent,
    /// then for the session to be free of turns others started, all within the run timeout.
    async fn turn_in_main(
        &self,
        task: &Task,
        run: RunId,
        session: SessionId,
        deadline: tokio::time::Instant,
        cancel: &CancellationToken,
    ) -> Result<RunReport, RunError> {
        let busy = || {
            RunError::Failed(format!(
                "the main session stayed busy for {} s",
                self.inner.options.run_timeout.as_secs()
            ))
        };
        let cancelled = || RunError::Failed("cancelled while waiting for the main session".into());
        let queue = self.main_queue(&task.agent_name);
        let _turn = tokio::select! {
            turn = tokio::time::timeout_at(deadline, queue.lock_owned()) => match turn {
                Ok(turn) => turn,
                Err(_) => return Err(busy()),
            },
            () = cancel.cancelled() => return Err(cancelled()),
        };
        loop {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            if left.is_zero() {
                return Err(busy());
            }
            match self.guarded_turn(task, run, session, left, cancel).await {
                Err(RunError::SessionBusy) => {
                    tracing::debug!(task = %task.id, %session, "the main session is busy; waiting");
                    tokio::select! {
                        () = tokio::time::sleep(MAIN_RETRY.min(left)) => {}
                        () = cancel.cancelled() => return Err(cancelled()),
                    }
                }
                settled => return settled,
            }
        }
    }

    /// One turn under `timeout`. The turn's own timeout should end it; should it not, the
    /// safety net past it aborts the turn and still waits a little for it to settle, so the
    /// turn is never abandoned unseen and the run is recorded either way.
    async fn guarded_turn(
        &self,
        task: &Task,
        run: RunId,
        session: SessionId,
        timeout: Duration,
        cancel: &CancellationToken,
    ) -> Result<RunReport, RunError> {
        // A child token: the safety net below stops this turn without cancelling the run.
        let turn_cancel = cancel.child_token();
        let turn = self.inner.runner.run(task, run, session, timeout, turn_cancel.clone());
        tokio::pin!(turn);
        tokio::select! {
            settled = &mut turn => settled,
            () = tokio::time::sleep(timeout + SAFETY_MARGIN) => {
                tracing::warn!(task = %task.id, %session, "a turn outlived its timeout; aborting it");
                turn_cancel.cancel();
                let timed_out = RunError::Failed(format!("timed out after {} s", timeout.as_secs()));
                match tokio::time::timeout(SETTLE_GRACE, &mut turn).await {
                    Ok(Ok(report)) => Ok(report),
                    Ok(Err(_)) => Err(timed_out),
                    Err(_) => {
                        tracing::warn!(task = %task.id, %session, "an aborted turn did not settle");
                        Err(timed_out)
                    }
                }
            }
        }
    }

    /// Stops firing; lets runs finish up to the grace period; aborts the rest.
    pub(super) async fn stop(&self) {
        self.inner.stopping.store(true, Ordering::SeqCst);
        let until = tokio::time::Instant::now() + self.inner.options.shutdown_grace;
        // Closing lets `wait` resolve once the runs going now have ended (a run-now after this
        // point is still tracked and still waited for).
        self.inner.runs.close();
        let _ = tokio::time::timeout_at(until, self.inner.runs.wait()).await;
        let mut left: Vec<Active> =
            self.state().running.drain().map(|(_, active)| active).collect();
        // Every leftover run is told to stop at once, and all settle side by side under one
        // deadline, so a stop does not grow with the number of runs.
        for active in &left {
            tracing::warn!(session = %active.session, "aborting a run at shutdown");
            active.cancel.cancel();
        }
        let settle_until = tokio::time::Instant::now() + SETTLE_GRACE;
        for active in &mut left {
            if let Ok(Ok(())) = tokio::time::timeout_at(settle_until, &mut active.handle).await {
                continue;
            }
            // The turn did not end when asked: stop waiting, and say so in its record.
            active.handle.abort();
            let now = self.inner.clock.now();
            match self
                .inner
                .stores
                .tasks
                .finish_run(
                    &active.agent,
                    &active.task,
                    &active.run,
                    &active.token,
                    failed("aborted at shutdown"),
                    now,
                )
                .await
            {
                Ok(finished) => self.announce_run(&finished, &active.agent),
                Err(err) => {
                    tracing::warn!(run = %active.run, error = %err, "could not finish an aborted run")
                }
            }
        }
    }
}

fn failed(error: impl Into<String>) -> RunOutcome {
    RunOutcome { status: RunStatus::Error, result: None, error: Some(error.into()), cost_usd: None }
}
