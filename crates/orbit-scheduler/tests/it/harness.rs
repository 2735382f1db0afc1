//! A scheduler over a temp data directory with a runner that records its calls.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use orbit_scheduler::{
    Clock, RunError, RunReport, Scheduler, SchedulerOptions, TaskRunner, TokioClock,
};
use orbit_store::{
    AgentName, ContextMode, FsStore, NewAgent, NewTask, Run, ScheduleType, SessionId, Stores, Task,
};
use tempfile::TempDir;
use time::OffsetDateTime;
use time::macros::datetime;
use tokio_util::sync::CancellationToken;

pub const START: OffsetDateTime = datetime!(2026-11-23 10:00 UTC);

/// Records each run; takes `delay` of tokio time per run and ignores its timeout, like a
/// turn whose own timeout failed. Like the agent pool, it refuses a second turn in a busy
/// session (`SessionBusy`), and a turn whose run is cancelled settles with an error.
pub struct FakeRunner {
    pub calls: Mutex<Vec<(Task, SessionId, OffsetDateTime)>>,
    pub delay: Duration,
    pub clock: Arc<TokioClock>,
    /// Sessions with a turn going.
    busy: Mutex<HashSet<SessionId>>,
    /// Turns refused because their session was busy.
    pub refused: AtomicUsize,
    pub aborted: AtomicUsize,
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
                Ok(RunReport { result: format!("did {}", task.prompt), cost_usd: None })
            }
            () = cancel.cancelled() => {
                self.aborted.fetch_add(1, Ordering::SeqCst);
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
    pub dir: TempDir,
    pub stores: Stores,
    pub clock: Arc<TokioClock>,
    pub runner: Arc<FakeRunner>,
    pub agent: AgentName,
}

impl Harness {
    /// Pauses tokio time; the wall clock starts at `START`.
    pub async fn new(delay: Duration) -> Self {
        tokio::time::pause();
        let dir = tempfile::tempdir().unwrap();
        let stores = FsStore::open(dir.path()).unwrap().stores();
        let clock = Arc::new(TokioClock::starting_at(START));
        let runner = Arc::new(FakeRunner {
            calls: Mutex::new(Vec::new()),
            delay,
            clock: clock.clone(),
            busy: Mutex::new(HashSet::new()),
            refused: AtomicUsize::new(0),
            aborted: AtomicUsize::new(0),
            dropped: AtomicUsize::new(0),
        });
        let agent = AgentName::parse("bot").unwrap();
        stores.agents.create(&agent, NewAgent::default()).await.unwrap();
        Self { dir, stores, clock, runner, agent }
    }

    pub fn scheduler(&self) -> Scheduler {
        self.scheduler_on(self.stores.clone())
    }

    pub fn scheduler_on(&self, stores: Stores) -> Scheduler {
        self.scheduler_with(stores, SchedulerOptions::default())
    }

    /// A second process on the same data directory: its own store (own caches) and scheduler.
    pub fn other_process(&self) -> (Stores, Scheduler) {
        let stores = FsStore::open(self.dir.path()).unwrap().stores();
        let scheduler = self.scheduler_on(stores.clone());
        (stores, scheduler)
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
        pass(duration).await;
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
}

/// Lets the scheduler work through `duration` of tokio time in steps, letting its store work
/// (on real threads) land between steps, so that paused time never races past a slot while
/// a file is being written.
pub async fn pass(duration: Duration) {
    let step = Duration::from_secs(2);
    let mut passed = Duration::ZERO;
    while passed < duration {
        settle().await;
        tokio::time::sleep(step).await;
        passed += step;
    }
    settle().await;
}

/// Gives blocking store work real time to finish and the tasks waiting on it a turn.
pub async fn settle() {
    for _ in 0..10 {
        std::thread::sleep(Duration::from_millis(2));
        tokio::task::yield_now().await;
    }
}
