//! A scheduler over a store with a runner that records its calls.
//!
//! The store is in memory (`Harness::new`) for tests of timing and ownership: its operations
//! finish within the await that makes them, so paused tokio time cannot race past them and
//! stepping through time needs no real sleeps. Tests that need files or several processes on
//! one data directory (`other_process`, a crashed child, git worktrees) use
//! `Harness::on_disk`, whose store works on tokio's blocking threads, in real time.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use orbit_scheduler::{
    Clock, RunError, RunReport, Scheduler, SchedulerOptions, TaskRunner, TokioClock,
};
use orbit_store::{
    AgentName, ContextMode, FsStore, MemStore, NewAgent, NewTask, Run, ScheduleType, SessionId,
    Stores, Task,
};
use tempfile::TempDir;
use time::OffsetDateTime;
use time::macros::datetime;
use tokio_util::sync::CancellationToken;

pub const START: OffsetDateTime = datetime!(2026-11-23 10:00 UTC);

/// Records each run; takes `delay` of tokio time per run and ignores its timeout, like a
/// turn whose own timeout failed. Like the agent pool, it refuses a second turn in a busy
/// session (`SessionBusy`), and a turn whose run is cancelled ends at once with an error, so
/// a test can tell a run its cancellation ended (`ended_by_abort`) from one left to run out.
pub struct FakeRunner {
    pub calls: Mutex<Vec<(Task, SessionId, OffsetDateTime)>>,
    pub delay: Duration,
    pub clock: Arc<TokioClock>,
    /// Sessions with a turn going.
    busy: Mutex<HashSet<SessionId>>,
    /// Turns refused because their session was busy.
    pub refused: AtomicUsize,
    /// Aborts asked for while a turn was going.
    pub aborted: AtomicUsize,
    /// Turns that ended because they were aborted.
    pub ended_by_abort: AtomicUsize,
    /// Turns whose future was dropped before it settled (abandoned).
    pub dropped: AtomicUsize,
}

/// Counts a turn's future dropped before it settled.
struct Unsettled<'a>(Option<&'a AtomicUsize>);

impl Drop for Unsettled<'_> {
    fn drop(&mut self) {
        if let Some(dropped) = self.0 {
            dropped.fetch_add(1, Ordering::SeqCst);
        }
    }
}

#[async_trait]
impl TaskRunner for FakeRunner {
    async fn run(
        &self,
        task: &Task,
        _run: orbit_store::RunId,
        session: SessionId,
        _timeout: Duration,
        cancel: CancellationToken,
    ) -> Result<RunReport, RunError> {
        if !self.busy.lock().unwrap().insert(session) {
            self.refused.fetch_add(1, Ordering::SeqCst);
            return Err(RunError::SessionBusy);
        }
        self.calls.lock().unwrap().push((task.clone(), session, self.clock.now()));
        let mut unsettled = Unsettled(Some(&self.dropped));
        let settled = tokio::select! {
            () = tokio::time::sleep(self.delay) => {
                Ok(RunReport { result: format!("did {}", task.prompt), ..RunReport::default() })
            }
            () = cancel.cancelled() => {
                self.aborted.fetch_add(1, Ordering::SeqCst);
                self.ended_by_abort.fetch_add(1, Ordering::SeqCst);
                Err(RunError::Failed("aborted".into()))
            }
        };
        self.busy.lock().unwrap().remove(&session);
        unsettled.0 = None;
        settled
    }
    async fn release(&self, _agent: &AgentName, _session: &SessionId) {}
}

pub struct Harness {
    /// The data directory of a store on disk; the agents' working directories otherwise.
    pub dir: TempDir,
    pub stores: Stores,
    pub clock: Arc<TokioClock>,
    pub runner: Arc<FakeRunner>,
    pub agent: AgentName,
    /// Whether `stores` is an `FsStore` on `dir`.
    on_disk: bool,
}

impl Harness {
    /// Pauses tokio time; the wall clock starts at `START`; the store is in memory.
    pub async fn new(delay: Duration) -> Self {
        Self::build(delay, false).await
    }

    /// Like `new`, on an `FsStore`: for tests of files, processes and worktrees.
    pub async fn on_disk(delay: Duration) -> Self {
        Self::build(delay, true).await
    }

    async fn build(delay: Duration, on_disk: bool) -> Self {
        tokio::time::pause();
        let dir = tempfile::tempdir().unwrap();
        let stores = if on_disk {
            FsStore::open(dir.path()).unwrap().stores()
        } else {
            MemStore::new(dir.path()).stores()
        };
        let clock = Arc::new(TokioClock::starting_at(START));
        let runner = Arc::new(FakeRunner {
            calls: Mutex::new(Vec::new()),
            delay,
            clock: clock.clone(),
            busy: Mutex::new(HashSet::new()),
            refused: AtomicUsize::new(0),
            aborted: AtomicUsize::new(0),
            ended_by_abort: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
        });
        let agent = AgentName::parse("bot").unwrap();
        stores.agents.create(&agent, NewAgent::default()).await.unwrap();
        Self { dir, stores, clock, runner, agent, on_disk }
    }

    pub fn scheduler(&self) -> Scheduler {
        self.scheduler_on(self.stores.clone())
    }

    pub fn scheduler_on(&self, stores: Stores) -> Scheduler {
        self.scheduler_with(stores, SchedulerOptions::default())
    }

    /// A second process on the same data directory: its own store (own caches) and scheduler.
    pub fn other_process(&self) -> (Stores, Scheduler) {
        let stores = self.other_store();
        let scheduler = self.scheduler_on(stores.clone());
        (stores, scheduler)
    }

    /// A second `FsStore` on the data directory, with caches of its own.
    pub fn other_store(&self) -> Stores {
        assert!(self.on_disk, "two processes share a data directory: use Harness::on_disk");
        FsStore::open(self.dir.path()).unwrap().stores()
    }

    pub fn scheduler_with(&self, stores: Stores, options: SchedulerOptions) -> Scheduler {
        Scheduler::new(stores, self.runner.clone(), self.clock.clone(), options)
    }

    /// Starts the loop in the background; the returned sender stops it.
    pub fn start(
        &self,
        scheduler: &Scheduler,
    ) -> (tokio::sync::oneshot::Sender<()>, tokio::task::JoinHandle<()>) {
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let scheduler = scheduler.clone();
        let handle = tokio::spawn(async move {
            scheduler.run(async { stopped.await.ok().unwrap_or(()) }).await;
        });
        (stop, handle)
    }

    /// Runs `scheduler` for `duration` of tokio time, then stops it and waits for it.
    pub async fn run_for(&self, scheduler: &Scheduler, duration: Duration) {
        let (stop, handle) = self.start(scheduler);
        self.pass(duration).await;
        stop.send(()).unwrap();
        handle.await.unwrap();
    }

    pub async fn task(
        &self,
        kind: ScheduleType,
        value: &str,
        mode: ContextMode,
        next_run: Option<OffsetDateTime>,
    ) -> Task {
        let new = NewTask {
            node: None,
            name: Some("t".into()),
            prompt: "check".into(),
            schedule_type: kind,
            schedule_value: value.into(),
            context_mode: mode,
            timezone: None,
            next_run,
            worktree: false,
            branch: None,
        };
        self.stores.tasks.create(&self.agent, new).await.unwrap()
    }

    pub async fn runs(&self, task: &Task) -> Vec<Run> {
        self.stores.tasks.list_runs(&self.agent, &task.id).await.unwrap()
    }

    pub fn calls(&self) -> Vec<(Task, SessionId, OffsetDateTime)> {
        self.runner.calls.lock().unwrap().clone()
    }

    /// Lets the scheduler work through `duration` of tokio time in steps, letting store work
    /// land between steps, so that paused time never races past a slot while a file is being
    /// written.
    pub async fn pass(&self, duration: Duration) {
        let step = Duration::from_secs(2);
        let mut passed = Duration::ZERO;
        while passed < duration {
            self.settle().await;
            tokio::time::sleep(step).await;
            passed += step;
        }
        self.settle().await;
    }

    /// Gives the tasks waiting on store work a turn; an `FsStore`'s work runs on blocking
    /// threads in real time, so it also gets real time to finish. (Paused tokio time moves
    /// only when every task waits, and a task waiting on a blocking thread counts as waiting.)
    pub async fn settle(&self) {
        for _ in 0..10 {
            if self.on_disk {
                std::thread::sleep(Duration::from_millis(2));
            }
            tokio::task::yield_now().await;
        }
    }
}
