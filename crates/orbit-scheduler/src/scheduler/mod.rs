//! The firing loop.
//!
//! Next fire times live in memory, in a min-heap keyed by time, with the authoritative plan
//! per task beside it (a heap entry that no longer matches its task's plan is stale and
//! skipped). The loop sleeps until the earliest fire time, but never longer than `recheck`,
//! so the wall clock and the store's task change feed are read every few seconds; a change
//! made in this process wakes it at once.
//!
//! Several schedulers may share one data directory (several server processes). None of them
//! owns a task: each plans every task from what the store holds, and the store decides who
//! fires a slot (`TaskStore::claim_slot`) and whether a run may start (`TaskStore::start_run`
//! refuses while another run holds a live lease). A running run's lease is renewed by the
//! process running it ([`leases`]); whoever finds it lapsed marks it interrupted.
//!
//! The work is split by job: [`planning`] (which slot a task fires next, and learning of
//! changes), [`runs`] (firing a slot, a run's life, shutdown), [`sessions`] (which session
//! and worktree a run uses), [`leases`] (renewal, and recovery of runs other processes left).

mod leases;
mod planning;
mod runs;
mod sessions;

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap};
use std::future::Future;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use orbit_store::{
    AgentName, ChangeCursor, InstanceId, LeaseToken, Run, RunId, SessionId, Stores, TaskId,
};
use time::OffsetDateTime;
use tokio::sync::Notify;
use tokio::task::JoinHandle;

use crate::clock::Clock;
use crate::runner::TaskRunner;

/// Most slots fired at once.
const MAX_CONCURRENT_FIRES: usize = 64;

/// Timings of the scheduler.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    /// Missed cron and interval slots younger than this get one catch-up run.
    pub catch_up_recurring: Duration,
    /// A missed `once` younger than this still runs.
    pub catch_up_once: Duration,
    /// A run longer than this is aborted; a main-mode run's wait for the main session counts.
    pub run_timeout: Duration,
    /// The longest sleep between two readings of the wall clock and the change feed.
    pub recheck: Duration,
    /// How long running runs may finish after shutdown before they are aborted.
    pub shutdown_grace: Duration,
    /// This server process's registration: running runs name it.
    pub instance: InstanceId,
    /// This node's name: tasks pinned to another node (their worktree is on its disk) are
    /// that node's scheduler's to fire.
    pub node: String,
    /// How long a running run's lease lasts unless renewed; it is renewed every third of it.
    pub run_lease: Duration,
    /// Where runs starting and finishing, tasks changing and the sessions made for runs
    /// are announced.
    pub activity: orbit_agent::ActivityBus,
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
            node: "local".into(),
            run_lease: Duration::from_secs(30),
            activity: orbit_agent::ActivityBus::default(),
        }
    }
}

struct Planned {
    agent: AgentName,
    at: OffsetDateTime,
}

/// A run this process is running, and holds the lease of.
struct Active {
    agent: AgentName,
    task: TaskId,
    run: RunId,
    token: LeaseToken,
    session: SessionId,
    /// Stops this run's turn alone.
    cancel: tokio_util::sync::CancellationToken,
    handle: JoinHandle<()>,
}

/// Something to look at again later: a task whose firing failed, or a run another process
/// holds, whose lease may lapse.
struct Later {
    at: OffsetDateTime,
    agent: AgentName,
    task: TaskId,
    run: Option<RunId>,
}

#[derive(Default)]
struct State {
    planned: HashMap<TaskId, Planned>,
    heap: BinaryHeap<Reverse<(OffsetDateTime, TaskId)>>,
    running: HashMap<TaskId, Active>,
    /// Tasks this process was told changed, waiting for the next wake.
    changed: Vec<(AgentName, TaskId)>,
    /// Where this scheduler is in the store's change feed.
    cursor: Option<ChangeCursor>,
    later: Vec<Later>,
}

struct Inner {
    stores: Stores,
    runner: Arc<dyn TaskRunner>,
    clock: Arc<dyn Clock>,
    options: SchedulerOptions,
    state: Mutex<State>,
    wake: Notify,
    /// Main-mode runs of one agent take turns in its main session; this is each agent's
    /// queue in this process.
    main_sessions: Mutex<HashMap<AgentName, Arc<tokio::sync::Mutex<()>>>>,
    /// Set once shutdown began, so that runs ended by it say so.
    stopping: AtomicBool,
    /// Where runs go on: the runtime the scheduler was made on, never the caller's (a
    /// run-now request's HTTP worker stops before the scheduler does, and its runtime's tasks
    /// with it).
    runtime: Option<tokio::runtime::Handle>,
    /// Every run's task, so that a stop waits for them without polling.
    runs: tokio_util::task::TaskTracker,
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
                main_sessions: Mutex::new(HashMap::new()),
                stopping: AtomicBool::new(false),
                runtime: tokio::runtime::Handle::try_current().ok(),
                runs: tokio_util::task::TaskTracker::new(),
            }),
        }
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Tells the scheduler a task was made, changed or deleted in this process; it re-plans
    /// that task at once. (Changes made by other processes arrive through the store's change
    /// feed within `recheck`.)
    pub fn task_changed(&self, agent: &AgentName, task: &TaskId) {
        self.state().changed.push((agent.clone(), *task));
        self.inner.wake.notify_one();
    }

    fn announce(&self, activity: orbit_agent::Activity) {
        self.inner.options.activity.announce(activity);
    }

    /// Announces a run's record as it now stands: started, or finished.
    fn announce_run(&self, run: &Run, agent: &AgentName) {
        self.announce(match run.status {
            orbit_store::RunStatus::Running => orbit_agent::Activity::RunStarted {
                agent: agent.clone(),
                task: run.task_id,
                run: run.id,
                session: run.session_id,
            },
            status => orbit_agent::Activity::RunFinished {
                agent: agent.clone(),
                task: run.task_id,
                run: run.id,
                status,
            },
        });
    }

    /// How many tasks are planned to fire.
    pub fn planned(&self) -> usize {
        self.state().planned.len()
    }

    /// Runs until `shutdown` resolves: recovers runs a crash left `running`, plans every
    /// active task, fires slots as they come and renews the leases of its runs; then lets
    /// running runs finish up to the grace period and aborts the rest.
    pub async fn run(&self, shutdown: impl Future<Output = ()>) {
        // Leases are renewed until the last run has ended, shutdown grace included.
        let (stopped, stopped_rx) = tokio::sync::watch::channel(false);
        let firing = async {
            self.fire_until(shutdown).await;
            self.stop().await;
            let _ = stopped.send(true);
        };
        tokio::join!(firing, self.renew_leases(stopped_rx));
        tracing::info!("scheduler stopped");
    }

    async fn fire_until(&self, shutdown: impl Future<Output = ()>) {
        tokio::pin!(shutdown);
        let mut store_changes = self.inner.stores.tasks.watch_changes();
        self.start_up().await;
        loop {
            self.apply_changes().await;
            let now = self.inner.clock.now();
            self.look_again(now).await;
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
            let wait = self.next_wait(now);
            tokio::select! {
                () = tokio::time::sleep(wait) => {}
                () = self.inner.wake.notified() => {}
                () = changed(&mut store_changes) => {}
                () = &mut shutdown => break,
            }
        }
    }

    /// How long the loop may sleep: until the earliest slot or look-again, at most `recheck`.
    fn next_wait(&self, now: OffsetDateTime) -> Duration {
        let state = self.state();
        let slot = state.heap.peek().map(|Reverse((at, _))| *at);
        let later = state.later.iter().map(|later| later.at).min();
        let next = [slot, later].into_iter().flatten().min();
        match next {
            Some(at) => Duration::try_from(at - now)
                .unwrap_or(Duration::ZERO)
                .min(self.inner.options.recheck),
            None => self.inner.options.recheck,
        }
    }

    /// Starts a run of the task now (the API's "run now"), unless its previous run is still
    /// going under a live lease. It is no slot of the schedule, so it claims none: the
    /// store's atomic run start is what keeps it and a fire of the same moment from both
    /// starting.
    pub async fn run_now(&self, agent: &AgentName, task: &TaskId) -> crate::Result<Run> {
        if self.inner.stopping.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(crate::Error::ShuttingDown);
        }
        let task = self.inner.stores.tasks.get(agent, task).await?;
        // Its worktree is on that node's disk; a run here would make another one here.
        if let Some(node) = task.node.as_ref().filter(|node| **node != self.inner.options.node) {
            return Err(crate::Error::OnOtherNode { task: task.id, node: node.clone() });
        }
        if self.agent_inactive(agent).await {
            return Err(crate::Error::AgentInactive(agent.clone()));
        }
        match self.start_run(&task).await? {
            Some(run) => Ok(run),
            None => Err(crate::Error::Overlap),
        }
    }
}

/// Resolves when the store says a task changed; never, for a store that does not say.
async fn changed(changes: &mut tokio::sync::watch::Receiver<u64>) {
    if changes.changed().await.is_err() {
        std::future::pending::<()>().await;
    }
}
