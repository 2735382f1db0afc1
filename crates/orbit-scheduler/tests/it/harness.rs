//! A scheduler over a temp data directory with a runner that records its calls.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use async_trait::async_trait;
use orbit_scheduler::{Clock, RunReport, Scheduler, SchedulerOptions, TaskRunner, TokioClock};
use orbit_store::{
    AgentName, ContextMode, FsStore, NewAgent, NewTask, Run, ScheduleType, SessionId, Stores, Task,
};
use tempfile::TempDir;
use time::OffsetDateTime;
use time::macros::datetime;

pub const START: OffsetDateTime = datetime!(2026-11-23 10:00 UTC);

/// Records each run; takes `delay` of tokio time per run.
pub struct FakeRunner {
    pub calls: Mutex<Vec<(Task, SessionId, OffsetDateTime)>>,
    pub delay: Duration,
    pub clock: Arc<TokioClock>,
}

#[async_trait]
impl TaskRunner for FakeRunner {
    async fn run(
        &self,
        task: &Task,
        session: SessionId,
        _timeout: Duration,
    ) -> Result<RunReport, String> {
        self.calls.lock().unwrap().push((task.clone(), session, self.clock.now()));
        tokio::time::sleep(self.delay).await;
        Ok(RunReport { result: format!("did {}", task.prompt), cost_usd: None })
    }
    async fn release(&self, _agent: &AgentName, _session: &SessionId) {}
    async fn abort(&self, _agent: &AgentName, _session: &SessionId) {}
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
        let runner =
            Arc::new(FakeRunner { calls: Mutex::new(Vec::new()), delay, clock: clock.clone() });
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
