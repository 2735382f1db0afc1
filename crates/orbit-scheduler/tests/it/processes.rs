//! Several server processes on one data directory, as two schedulers each on its own
//! `FsStore` (own caches, like separate processes): changes travel through the store, slots
//! keep one phase and fire once, and runs are owned by lease.

use std::time::Duration;

use orbit_scheduler::{Clock, Error as SchedulerError, SchedulerOptions};
use orbit_store::{
    ContextMode, InstanceId, Lease, RunStart, RunStatus, Schedule, ScheduleType, TaskPatch,
    TaskStatus,
};
use time::Duration as WallDuration;

use crate::harness::{Harness, START};

#[tokio::test]
async fn task_changes_made_in_one_process_reach_the_other_within_seconds() {
    let h = Harness::on_disk(Duration::from_secs(1)).await;
    let (other_stores, other) = h.other_process();
    let (stop, handle) = h.start(&other);
    h.pass(Duration::from_secs(2)).await;
    assert_eq!(other.planned(), 0);

    // This process makes, pauses, resumes and deletes a task, and tells only itself.
    let task = h
        .task(
            ScheduleType::Interval,
            "3600000",
            ContextMode::Isolated,
            Some(START + WallDuration::hours(1)),
        )
        .await;
    h.pass(Duration::from_secs(6)).await;
    assert_eq!(other.planned(), 1, "a created task is planned by the other process");
    let paused = TaskPatch {
        status: Some(TaskStatus::Paused),
        next_run: Some(None),
        ..TaskPatch::default()
    };
    h.stores.tasks.update(&h.agent, &task.id, paused).await.unwrap();
    h.pass(Duration::from_secs(6)).await;
    assert_eq!(other.planned(), 0, "a pause reaches the other process");
    let resumed = TaskPatch {
        status: Some(TaskStatus::Active),
        next_run: Some(Some(START + WallDuration::hours(1))),
        ..TaskPatch::default()
    };
    h.stores.tasks.update(&h.agent, &task.id, resumed).await.unwrap();
    h.pass(Duration::from_secs(6)).await;
    assert_eq!(other.planned(), 1, "so does a resume");
    h.stores.tasks.delete(&h.agent, &task.id).await.unwrap();
    h.pass(Duration::from_secs(6)).await;
    assert_eq!(other.planned(), 0, "and a delete");
    stop.send(()).unwrap();
    handle.await.unwrap();
    drop(other_stores);
}

#[tokio::test]
async fn two_processes_fire_one_phase_of_slots_even_when_a_next_run_is_off_phase() {
    let h = Harness::on_disk(Duration::from_millis(100)).await;
    let task = h
        .task(
            ScheduleType::Interval,
            "1000",
            ContextMode::Isolated,
            Some(START + WallDuration::seconds(1)),
        )
        .await;
    let (_, other) = h.other_process();
    let first = h.scheduler();
    let (stop_first, first_handle) = h.start(&first);
    let (stop_other, other_handle) = h.start(&other);
    h.pass(Duration::from_secs(2)).await;
    // What the update route used to do: a next run computed from "now", half a second off
    // the phase the other process fires on.
    let now = h.clock.now();
    let off_phase = TaskPatch {
        next_run: Some(Some(now + WallDuration::milliseconds(1500))),
        ..TaskPatch::default()
    };
    h.stores.tasks.update(&h.agent, &task.id, off_phase).await.unwrap();
    first.task_changed(&h.agent, &task.id);
    h.pass(Duration::from_secs(6)).await;
    stop_first.send(()).unwrap();
    stop_other.send(()).unwrap();
    first_handle.await.unwrap();
    other_handle.await.unwrap();

    // Slots at seconds 1 to 8 at most; two phases would have fired about twice as often.
    let calls = h.calls().len();
    assert!((5..=8).contains(&calls), "{calls} runs in 8 one-second slots");
    let stored = h.stores.tasks.get(&h.agent, &task.id).await.unwrap();
    let schedule = Schedule::parse(ScheduleType::Interval, "1000", None).unwrap();
    let last = stored.last_slot.unwrap();
    assert!(stored.is_slot(&schedule, last), "claimed slot {last} is on the task's phase");
    let runs = h.runs(&task).await;
    assert_eq!(runs.iter().filter(|r| r.status == RunStatus::Success).count(), calls);
}

#[tokio::test]
async fn a_task_made_in_one_process_is_fired_by_the_other_after_its_maker_stops() {
    let h = Harness::on_disk(Duration::from_secs(1)).await;
    let (_, other) = h.other_process();
    let maker = h.scheduler();
    let (stop_maker, maker_handle) = h.start(&maker);
    let (stop_other, other_handle) = h.start(&other);
    let task = h
        .task(
            ScheduleType::Interval,
            "60000",
            ContextMode::Isolated,
            Some(START + WallDuration::minutes(1)),
        )
        .await;
    maker.task_changed(&h.agent, &task.id);
    h.pass(Duration::from_secs(10)).await;
    stop_maker.send(()).unwrap();
    maker_handle.await.unwrap();
    h.pass(Duration::from_secs(2 * 60)).await;
    stop_other.send(()).unwrap();
    other_handle.await.unwrap();
    assert_eq!(h.calls().len(), 2, "the other process fired both slots");
    assert_eq!(h.runs(&task).await.len(), 2);
}

#[tokio::test]
async fn a_run_left_running_by_a_dead_process_is_recovered_within_one_lease() {
    let h = Harness::on_disk(Duration::from_secs(1)).await;
    let task = h
        .task(
            ScheduleType::Interval,
            "3600000",
            ContextMode::Isolated,
            Some(START + WallDuration::hours(1)),
        )
        .await;
    // A process that died a moment ago: its run's lease still holds for 20 s.
    let (dead_stores, _) = h.other_process();
    let lease = Lease::new(InstanceId::new(), START + WallDuration::seconds(20));
    let RunStart::Started(run) =
        dead_stores.tasks.start_run(&h.agent, &task.id, None, lease, START).await.unwrap()
    else {
        panic!("nothing ran")
    };
    let scheduler = h.scheduler();
    let (stop, handle) = h.start(&scheduler);
    h.pass(Duration::from_secs(10)).await;
    let latest = h.stores.tasks.latest_run(&h.agent, &task.id).await.unwrap().unwrap();
    assert_eq!((latest.id, latest.status), (run.id, RunStatus::Running), "its lease still holds");
    h.pass(Duration::from_secs(16)).await;
    let latest = h.stores.tasks.latest_run(&h.agent, &task.id).await.unwrap().unwrap();
    assert_eq!(latest.status, RunStatus::Error, "recovered at its lapse, not at the next slot");
    assert!(latest.error.unwrap().starts_with("interrupted"));
    stop.send(()).unwrap();
    handle.await.unwrap();
}

#[tokio::test]
async fn a_running_runs_lease_is_renewed_so_another_process_leaves_it_alone() {
    // A run of two minutes under a 30 s lease.
    let h = Harness::on_disk(Duration::from_secs(2 * 60)).await;
    let task = h
        .task(
            ScheduleType::Once,
            "2026-11-23T10:00:10Z",
            ContextMode::Isolated,
            Some(START + WallDuration::seconds(10)),
        )
        .await;
    let options = SchedulerOptions { run_lease: Duration::from_secs(30), ..Default::default() };
    let runner = h.scheduler_with(h.stores.clone(), options.clone());
    let (stop, handle) = h.start(&runner);
    h.pass(Duration::from_secs(70)).await;
    let running = h.stores.tasks.latest_run(&h.agent, &task.id).await.unwrap().unwrap();
    assert_eq!(running.status, RunStatus::Running);
    assert!(running.lease.unwrap().until > h.clock.now(), "renewed past its first 30 s");
    // A second process starting now finds the run held, and a run-now there is refused.
    let (other_stores, _) = h.other_process();
    let other =
        h.scheduler_with(other_stores, SchedulerOptions { instance: InstanceId::new(), ..options });
    let (stop_other, other_handle) = h.start(&other);
    h.pass(Duration::from_secs(2)).await;
    assert!(matches!(other.run_now(&h.agent, &task.id).await, Err(SchedulerError::Overlap)));
    h.pass(Duration::from_secs(70)).await;
    stop.send(()).unwrap();
    stop_other.send(()).unwrap();
    handle.await.unwrap();
    other_handle.await.unwrap();
    let runs = h.runs(&task).await;
    assert_eq!(runs.len(), 1);
    assert_eq!((runs[0].id, runs[0].status), (running.id, RunStatus::Success));
}

#[tokio::test]
async fn run_now_is_refused_only_under_a_live_lease() {
    let h = Harness::on_disk(Duration::from_secs(60)).await;
    let task = h
        .task(
            ScheduleType::Interval,
            "3600000",
            ContextMode::Isolated,
            Some(START + WallDuration::hours(1)),
        )
        .await;
    let (other_stores, _) = h.other_process();
    let lapsed = Lease::new(InstanceId::new(), START - WallDuration::seconds(1));
    other_stores.tasks.start_run(&h.agent, &task.id, None, lapsed, START).await.unwrap();
    let scheduler = h.scheduler();
    let run = scheduler.run_now(&h.agent, &task.id).await.expect("a lapsed run does not block");
    assert!(matches!(scheduler.run_now(&h.agent, &task.id).await, Err(SchedulerError::Overlap)));
    let runs = h.runs(&task).await;
    assert_eq!(runs[0].id, run.id);
    assert_eq!(runs[1].status, RunStatus::Error, "the lapsed run was marked interrupted");
}

#[tokio::test]
async fn run_now_racing_a_fire_in_another_process_starts_one_run() {
    let h = Harness::on_disk(Duration::from_secs(30)).await;
    let task = h
        .task(
            ScheduleType::Interval,
            "60000",
            ContextMode::Isolated,
            Some(START + WallDuration::minutes(1)),
        )
        .await;
    let (_, other) = h.other_process();
    let (stop, handle) = h.start(&other);
    h.pass(Duration::from_secs(58)).await;
    // The click lands as the slot comes: one run, and the other side skips or is refused.
    let here = h.scheduler();
    let (clicked, ()) =
        tokio::join!(here.run_now(&h.agent, &task.id), h.pass(Duration::from_secs(4)));
    h.pass(Duration::from_secs(10)).await;
    stop.send(()).unwrap();
    handle.await.unwrap();
    let runs = h.runs(&task).await;
    let started = runs.iter().filter(|r| r.status != RunStatus::Skipped).count();
    let skipped = runs.iter().filter(|r| r.status == RunStatus::Skipped).count();
    assert_eq!(h.calls().len(), 1, "one turn ran: {runs:?}");
    assert_eq!(started, 1);
    assert_eq!(skipped + usize::from(clicked.is_err()), 1, "the loser skipped or was refused");
}
