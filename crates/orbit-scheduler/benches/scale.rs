//! Scheduler scale: 100,000 active tasks over 100 agents; how long they take to load, how
//! much CPU an idle scheduler uses, and how late slots fire.
//! `cargo bench -p orbit-scheduler --bench scale`; results go to docs/benchmarks.md.

// Benchmark code: a failed expectation is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use orbit_scheduler::{
    Clock, RunError, RunReport, Scheduler, SchedulerOptions, SystemClock, TaskRunner,
};
use orbit_store::{
    AgentName, ContextMode, FsStore, NewAgent, NewTask, ScheduleType, SessionId, Task,
};
use time::OffsetDateTime;

const AGENTS: usize = 100;
const TASKS_PER_AGENT: usize = 1000;
/// Tasks firing every second in each lateness phase: a busy server, then an extreme one.
const LATENESS_PHASES: [usize; 2] = [20, 200];

/// Records how late each run started against its slot.
struct LatenessRunner {
    lateness_ms: Mutex<Vec<f64>>,
}

#[async_trait]
impl TaskRunner for LatenessRunner {
    async fn run(
        &self,
        task: &Task,
        _run: orbit_store::RunId,
        _session: SessionId,
        _timeout: Duration,
        _cancel: tokio_util::sync::CancellationToken,
    ) -> Result<RunReport, RunError> {
        if let Some(slot) = task.next_run {
            let late = (SystemClock.now() - slot).as_seconds_f64() * 1e3;
            self.lateness_ms.lock().unwrap().push(late);
        }
        Ok(RunReport::default())
    }
    async fn release(&self, _agent: &AgentName, _session: &SessionId) {}
}

/// This process's CPU time (user + system) so far.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap();
    let fields: Vec<&str> = stat.rsplit_once(')').unwrap().1.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    Duration::from_millis(ticks * 10)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let stores = FsStore::open(dir.path()).unwrap().stores();
    let far = OffsetDateTime::new_utc(
        time::Date::from_calendar_date(2027, time::Month::January, 1).unwrap(),
        time::Time::MIDNIGHT,
    );
    let started = Instant::now();
    let mut creators = tokio::task::JoinSet::new();
    for index in 0..AGENTS {
        let stores = stores.clone();
        creators.spawn(async move {
            let agent = AgentName::parse(&format!("agent-{index:03}")).unwrap();
            stores.agents.create(&agent, NewAgent::default()).await.unwrap();
            for _ in 0..TASKS_PER_AGENT {
                let new = NewTask {
                    node: None,
                    name: None,
                    prompt: "yearly report".into(),
                    schedule_type: ScheduleType::Cron,
                    schedule_value: "0 0 1 1 *".into(),
                    context_mode: ContextMode::Isolated,
                    timezone: None,
                    next_run: Some(far),
                    worktree: false,
                    branch: None,
                };
                stores.tasks.create(&agent, new).await.unwrap();
            }
        });
    }
    while creators.join_next().await.is_some() {}
    eprintln!(
        "created {} tasks in {:.1} s",
        AGENTS * TASKS_PER_AGENT,
        started.elapsed().as_secs_f64()
    );

    let runner = Arc::new(LatenessRunner { lateness_ms: Mutex::new(Vec::new()) });
    let scheduler = Scheduler::new(
        stores.clone(),
        runner.clone(),
        Arc::new(SystemClock),
        SchedulerOptions::default(),
    );
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let loading = Instant::now();
    let background = {
        let scheduler = scheduler.clone();
        tokio::spawn(async move { scheduler.run(async { stopped.await.unwrap_or(()) }).await })
    };
    while scheduler.planned() < AGENTS * TASKS_PER_AGENT {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let load = loading.elapsed();

    // Idle: every task's next slot is weeks away.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let (cpu_before, wall_before) = (cpu_time(), Instant::now());
    tokio::time::sleep(Duration::from_secs(10)).await;
    let idle_cpu =
        (cpu_time() - cpu_before).as_secs_f64() / wall_before.elapsed().as_secs_f64() * 100.0;

    // Lateness: tasks every second on top of the 100,000 idle ones, in two phases.
    let agent = AgentName::parse("agent-000").unwrap();
    let mut phases = Vec::new();
    let mut added = Vec::new();
    for tasks in LATENESS_PHASES {
        for task in added.drain(..) {
            stores.tasks.delete(&agent, &task).await.unwrap();
            scheduler.task_changed(&agent, &task);
        }
        runner.lateness_ms.lock().unwrap().clear();
        let first = SystemClock.now() + time::Duration::seconds(2);
        for _ in 0..tasks {
            let new = NewTask {
                node: None,
                name: None,
                prompt: "tick".into(),
                schedule_type: ScheduleType::Interval,
                schedule_value: "1000".into(),
                context_mode: ContextMode::Main,
                timezone: None,
                next_run: Some(first),
                worktree: false,
                branch: None,
            };
            let task = stores.tasks.create(&agent, new).await.unwrap();
            scheduler.task_changed(&agent, &task.id);
            added.push(task.id);
        }
        tokio::time::sleep(Duration::from_secs(12)).await;
        let mut lateness = runner.lateness_ms.lock().unwrap().clone();
        lateness.sort_by(f64::total_cmp);
        phases.push((tasks, lateness));
    }
    stop.send(()).unwrap();
    background.await.unwrap();

    println!("| measurement | result |\n| --- | --- |");
    println!(
        "| load {} active tasks of {AGENTS} agents (scheduler start to all planned) | {:.2} s |",
        AGENTS * TASKS_PER_AGENT,
        load.as_secs_f64()
    );
    println!("| CPU of an idle scheduler holding them (10 s) | {idle_cpu:.2} % of one core |");
    for (tasks, lateness) in phases {
        println!(
            "| fire lateness, {tasks} tasks due every second for ~10 s ({} runs) | p50 {:.0} ms, p99 {:.0} ms |",
            lateness.len(),
            percentile(&lateness, 0.5),
            percentile(&lateness, 0.99)
        );
    }
}
