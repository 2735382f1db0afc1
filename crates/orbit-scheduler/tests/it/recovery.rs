//! Outages and restarts: catch-up of missed slots, runs left running by a crash.

use std::process::{Command, Stdio};
use std::time::Duration;

use orbit_store::{AgentName, ContextMode, FsStore, RunStatus, ScheduleType, TaskId};
use time::Duration as WallDuration;

use crate::harness::{Harness, START};

#[tokio::test]
async fn after_an_outage_the_most_recent_missed_slot_runs_once() {
    let h = Harness::new(Duration::from_secs(1)).await;
    // The server was down from 9:30: thirty one-minute slots were missed.
    let recent = h
        .task(
            ScheduleType::Interval,
            "60000",
            ContextMode::Isolated,
            Some(START - WallDuration::minutes(30)),
        )
        .await;
    // A three-hourly slot missed two hours ago: beyond the one-hour window, so no catch-up.
    let old = h
        .task(
            ScheduleType::Interval,
            "10800000",
            ContextMode::Isolated,
            Some(START - WallDuration::hours(2)),
        )
        .await;
    // A once missed two days ago: beyond its 24-hour window; it completes without running.
    let once = h
        .task(
            ScheduleType::Once,
            "2026-11-21T10:00:00Z",
            ContextMode::Isolated,
            Some(START - WallDuration::days(2)),
        )
        .await;
    let scheduler = h.scheduler();
    h.run_for(&scheduler, Duration::from_secs(30)).await;
    let calls = h.calls();
    assert_eq!(calls.len(), 1, "one catch-up run, not thirty");
    assert_eq!(calls[0].0.id, recent.id);
    let recent = h.stores.tasks.get(&h.agent, &recent.id).await.unwrap();
    assert_eq!(recent.last_run, Some(START), "the most recent missed slot ran");
    assert_eq!(recent.next_run, Some(START + WallDuration::minutes(1)));
    let old = h.stores.tasks.get(&h.agent, &old.id).await.unwrap();
    assert!(old.next_run.unwrap() > START, "old misses are skipped to the next slot");
    assert!(h.runs(&old).await.is_empty());
    let once = h.stores.tasks.get(&h.agent, &once.id).await.unwrap();
    assert_eq!((once.status, once.next_run), (orbit_store::TaskStatus::Completed, None));
}

#[tokio::test]
async fn a_wall_clock_jump_is_noticed_within_seconds() {
    let h = Harness::new(Duration::from_secs(1)).await;
    h.task(
        ScheduleType::Interval,
        "3600000",
        ContextMode::Isolated,
        Some(START + WallDuration::hours(1)),
    )
    .await;
    let scheduler = h.scheduler();
    let (stop, handle) = h.start(&scheduler);
    h.pass(Duration::from_secs(10)).await;
    // The machine slept for an hour: tokio time barely moved, the wall clock did.
    h.clock.jump(WallDuration::hours(1));
    h.pass(Duration::from_secs(10)).await;
    stop.send(()).unwrap();
    handle.await.unwrap();
    assert_eq!(h.calls().len(), 1, "the hourly slot fired within seconds of the jump");
}

const CHILD_DIR: &str = "ORBIT_SCHEDULER_TEST_DIR";

#[tokio::test]
async fn a_restart_mid_run_marks_the_run_interrupted_and_does_not_fire_its_slot_again() {
    let h = Harness::on_disk(Duration::from_secs(1)).await;
    let task = h.task(ScheduleType::Interval, "60000", ContextMode::Isolated, Some(START)).await;
    // Another server process claimed the slot, started its run, and was killed mid-run.
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "recovery::crashing_scheduler_child", "--nocapture", "--test-threads=1"])
        .env(CHILD_DIR, h.dir.path())
        .env("ORBIT_SCHEDULER_TEST_TASK", task.id.to_string())
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let mut out = String::new();
    std::io::Read::read_to_string(child.stdout.as_mut().unwrap(), &mut out).unwrap();
    assert!(out.contains("RUNNING"), "{out}");
    child.wait().unwrap();

    let scheduler = h.scheduler();
    h.run_for(&scheduler, Duration::from_secs(30)).await;
    let runs = h.runs(&task).await;
    assert_eq!(runs.len(), 1, "the claimed slot did not fire again");
    assert_eq!(runs[0].status, RunStatus::Error);
    assert!(
        runs[0].error.as_deref().is_some_and(|e| e.starts_with("interrupted")),
        "{:?}",
        runs[0].error
    );
    assert!(h.calls().is_empty());
}

/// The crashing server of the test above: claims the slot, records a running run, then exits
/// without finishing it (as a SIGKILL would leave things). A no-op as an ordinary test.
#[tokio::test]
async fn crashing_scheduler_child() {
    let Ok(dir) = std::env::var(CHILD_DIR) else { return };
    let stores = FsStore::open(dir).unwrap().stores();
    let agent = AgentName::parse("bot").unwrap();
    let task = TaskId::parse(&std::env::var("ORBIT_SCHEDULER_TEST_TASK").unwrap()).unwrap();
    assert!(stores.tasks.claim_slot(&agent, &task, START).await.unwrap());
    // A lease that the crash let lapse (it is never renewed).
    let lease =
        orbit_store::Lease::new(orbit_store::InstanceId::new(), START - WallDuration::minutes(1));
    stores.tasks.start_run(&agent, &task, None, lease, START).await.unwrap();
    println!("RUNNING");
    std::process::exit(0);
}

#[tokio::test]
async fn a_run_past_its_timeout_is_aborted_and_recorded_as_an_error() {
    let h = Harness::new(Duration::from_secs(10 * 60)).await;
    let task = h
        .task(
            ScheduleType::Once,
            "2026-11-23T10:01:00Z",
            ContextMode::Isolated,
            Some(START + WallDuration::minutes(1)),
        )
        .await;
    let options = orbit_scheduler::SchedulerOptions {
        run_timeout: Duration::from_secs(60),
        ..Default::default()
    };
    let scheduler = h.scheduler_with(h.stores.clone(), options);
    h.run_for(&scheduler, Duration::from_secs(3 * 60)).await;
    let runs = h.runs(&task).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0].status, runs[0].error.as_deref()),
        (RunStatus::Error, Some("timed out after 60 s"))
    );
    // The safety net asked the turn to stop, the abort ended it, and the run was recorded
    // then (timeout and safety margin after its start), not after the turn ran its ten
    // minutes nor when the scheduler gave up waiting; the turn was not dropped unseen.
    use std::sync::atomic::Ordering::SeqCst;
    assert_eq!(h.runner.aborted.load(SeqCst), 1);
    assert_eq!(h.runner.ended_by_abort.load(SeqCst), 1);
    assert_eq!(h.runner.dropped.load(SeqCst), 0);
    let took = runs[0].duration_ms.unwrap();
    assert!((70_000..71_000).contains(&took), "ended by the abort at 60 s + 10 s, not {took} ms");
}
