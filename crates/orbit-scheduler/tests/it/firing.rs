//! Firing on schedule: intervals, once, pause and resume, overlap, two schedulers.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use orbit_scheduler::SchedulerOptions;

use orbit_store::{ContextMode, RunStatus, ScheduleType, TaskPatch, TaskStatus};
use time::Duration as WallDuration;

use crate::harness::{Harness, START};

#[tokio::test]
async fn an_interval_fires_on_time_with_a_fresh_session_each_run() {
    let h = Harness::new(Duration::from_secs(1)).await;
    let task = h
        .task(
            ScheduleType::Interval,
            "60000",
            ContextMode::Isolated,
            Some(START + WallDuration::minutes(1)),
        )
        .await;
    let scheduler = h.scheduler();
    h.run_for(&scheduler, Duration::from_secs(5 * 60 + 30)).await;

    let calls = h.calls();
    assert_eq!(calls.len(), 5, "one run per minute for five minutes");
    for (index, (_, _, at)) in calls.iter().enumerate() {
        let slot = START + WallDuration::minutes(index as i64 + 1);
        assert!(
            *at >= slot && *at - slot < WallDuration::seconds(3),
            "run {index} fired at {at}, slot {slot}"
        );
    }
    let sessions: HashSet<_> = calls.iter().map(|(_, session, _)| *session).collect();
    assert_eq!(sessions.len(), 5, "a fresh session each run");
    let runs = h.runs(&task).await;
    assert_eq!(runs.len(), 5);
    assert!(runs.iter().all(|r| r.status == RunStatus::Success
        && r.result.as_deref() == Some("did check")
        && r.completed_at.is_some()));
    let stored = h.stores.tasks.get(&h.agent, &task.id).await.unwrap();
    assert_eq!(stored.last_run, Some(START + WallDuration::minutes(5)));
    assert_eq!(stored.next_run, Some(START + WallDuration::minutes(6)));
}

#[tokio::test]
async fn a_once_task_fires_exactly_once_then_completes() {
    let h = Harness::new(Duration::from_secs(1)).await;
    let task = h
        .task(
            ScheduleType::Once,
            "2026-11-23T10:02:00Z",
            ContextMode::Isolated,
            Some(START + WallDuration::minutes(2)),
        )
        .await;
    let scheduler = h.scheduler();
    h.run_for(&scheduler, Duration::from_secs(10 * 60)).await;
    assert_eq!(h.calls().len(), 1);
    let stored = h.stores.tasks.get(&h.agent, &task.id).await.unwrap();
    assert_eq!((stored.status, stored.next_run), (TaskStatus::Completed, None));
}

#[tokio::test]
async fn a_paused_task_never_fires_and_does_not_catch_up_when_resumed() {
    let h = Harness::new(Duration::from_secs(1)).await;
    let task = h
        .task(
            ScheduleType::Interval,
            "60000",
            ContextMode::Isolated,
            Some(START + WallDuration::minutes(1)),
        )
        .await;
    let scheduler = h.scheduler();
    let (stop, handle) = h.start(&scheduler);
    let paused = TaskPatch {
        status: Some(TaskStatus::Paused),
        next_run: Some(None),
        ..TaskPatch::default()
    };
    h.stores.tasks.update(&h.agent, &task.id, paused).await.unwrap();
    scheduler.task_changed(&h.agent, &task.id);
    h.pass(Duration::from_secs(5 * 60)).await;
    assert!(h.calls().is_empty(), "a paused task fired");

    // Resuming plans from now (as the API does), so the paused minutes are not caught up.
    let now = START + WallDuration::seconds(300);
    let resumed = TaskPatch {
        status: Some(TaskStatus::Active),
        next_run: Some(Some(now + WallDuration::minutes(1))),
        ..TaskPatch::default()
    };
    h.stores.tasks.update(&h.agent, &task.id, resumed).await.unwrap();
    scheduler.task_changed(&h.agent, &task.id);
    h.pass(Duration::from_secs(90)).await;
    stop.send(()).unwrap();
    handle.await.unwrap();
    assert_eq!(h.calls().len(), 1, "one run after resuming, none for the paused time");
}

#[tokio::test]
async fn slots_that_come_while_the_previous_run_runs_are_skipped_as_one_record() {
    // Each run takes 10 s; the task fires every second.
    let h = Harness::new(Duration::from_secs(10)).await;
    let task = h
        .task(
            ScheduleType::Interval,
            "1000",
            ContextMode::Isolated,
            Some(START + WallDuration::seconds(1)),
        )
        .await;
    let scheduler = h.scheduler();
    h.run_for(&scheduler, Duration::from_secs(14)).await;
    // The run of second 1 lasts until second 11: the slots of seconds 2 to 10 (and 11, when
    // it comes a moment before the run's end is recorded) are one skip record; the run of
    // second 11 or 12 finishes within the shutdown grace, and the slots after it start the
    // next skip record.
    let runs = h.runs(&task).await;
    let statuses: Vec<RunStatus> = runs.iter().rev().map(|r| r.status).collect();
    assert_eq!(
        statuses,
        vec![RunStatus::Success, RunStatus::Skipped, RunStatus::Success, RunStatus::Skipped],
        "{runs:#?}"
    );
    let skipped = runs[2].skipped_slots.unwrap();
    assert!((9..=10).contains(&skipped), "one record for {skipped} skipped slots");
}

#[tokio::test]
async fn a_run_still_going_at_shutdown_is_aborted_after_the_grace_and_says_so() {
    let h = Harness::new(Duration::from_secs(10 * 60)).await;
    let task = h
        .task(
            ScheduleType::Interval,
            "60000",
            ContextMode::Isolated,
            Some(START + WallDuration::minutes(1)),
        )
        .await;
    let options =
        SchedulerOptions { shutdown_grace: Duration::from_secs(30), ..Default::default() };
    let scheduler = h.scheduler_with(h.stores.clone(), options);
    h.run_for(&scheduler, Duration::from_secs(90)).await;
    let runs = h.runs(&task).await;
    assert_eq!(runs.len(), 1);
    assert_eq!(
        (runs[0].status, runs[0].error.as_deref()),
        (RunStatus::Error, Some("aborted at shutdown"))
    );
    assert_eq!(h.runner.aborted.load(Ordering::SeqCst), 1, "the turn was asked to stop");
    assert_eq!(h.runner.ended_by_abort.load(Ordering::SeqCst), 1, "the abort ended it");
    assert_eq!(h.runner.dropped.load(Ordering::SeqCst), 0, "and it settled, not dropped");
    // Fired at 10:01, stopped at 10:01:30, aborted when the 30 s grace ran out: recorded
    // within a second of 10:02, not 10 s later, when the scheduler gives up on a turn that
    // ignores its abort.
    let ended = runs[0].completed_at.unwrap() - (START + WallDuration::minutes(2));
    assert!(ended >= WallDuration::ZERO && ended < WallDuration::seconds(1), "{runs:?}");
}

#[tokio::test]
async fn two_schedulers_on_one_directory_fire_each_slot_once() {
    let h = Harness::on_disk(Duration::from_secs(1)).await;
    let task = h
        .task(
            ScheduleType::Interval,
            "60000",
            ContextMode::Isolated,
            Some(START + WallDuration::minutes(1)),
        )
        .await;
    let other_stores = h.other_store();
    let (first, second) = (h.scheduler(), h.scheduler_on(other_stores));
    let (stop_first, first_handle) = h.start(&first);
    let (stop_second, second_handle) = h.start(&second);
    h.pass(Duration::from_secs(5 * 60 + 30)).await;
    stop_first.send(()).unwrap();
    stop_second.send(()).unwrap();
    first_handle.await.unwrap();
    second_handle.await.unwrap();
    assert_eq!(h.calls().len(), 5, "five slots, five runs");
    assert_eq!(h.runs(&task).await.len(), 5);
}

#[tokio::test]
async fn main_mode_runs_continue_one_session() {
    let h = Harness::new(Duration::from_secs(1)).await;
    h.task(
        ScheduleType::Interval,
        "60000",
        ContextMode::Main,
        Some(START + WallDuration::minutes(1)),
    )
    .await;
    let scheduler = h.scheduler();
    h.run_for(&scheduler, Duration::from_secs(3 * 60 + 30)).await;
    let sessions: HashSet<_> = h.calls().iter().map(|(_, session, _)| *session).collect();
    assert_eq!((h.calls().len(), sessions.len()), (3, 1), "three runs in the one main session");
    let agent = h.stores.agents.get(&h.agent).await.unwrap();
    assert_eq!(agent.main_session_id, sessions.into_iter().next());
}

#[tokio::test]
async fn two_main_tasks_due_on_one_slot_run_one_after_the_other_in_one_main_session() {
    // Each run takes 20 s; two processes share the directory, and the agent has no main
    // session yet, so whichever process fires each task may be the one to make it.
    let h = Harness::on_disk(Duration::from_secs(20)).await;
    let first = Some(START + WallDuration::minutes(1));
    let one = h.task(ScheduleType::Interval, "3600000", ContextMode::Main, first).await;
    let two = h.task(ScheduleType::Interval, "3600000", ContextMode::Main, first).await;
    let (_, other) = h.other_process();
    let (a, b) = (h.scheduler(), other);
    let (stop_a, handle_a) = h.start(&a);
    let (stop_b, handle_b) = h.start(&b);
    h.pass(Duration::from_secs(2 * 60)).await;
    stop_a.send(()).unwrap();
    stop_b.send(()).unwrap();
    handle_a.await.unwrap();
    handle_b.await.unwrap();

    let calls = h.calls();
    assert_eq!(calls.len(), 2, "both tasks ran");
    assert_eq!(calls[0].1, calls[1].1, "in the one main session");
    assert!(calls[1].2 - calls[0].2 >= WallDuration::seconds(20), "one after the other");
    for task in [&one, &two] {
        let runs = h.runs(task).await;
        assert_eq!(
            (runs.len(), runs[0].status),
            (1, RunStatus::Success),
            "neither failed on a busy session: {runs:?}"
        );
    }
    let sessions = h.stores.sessions.list_by_agent(&h.agent).await.unwrap();
    assert_eq!(sessions.len(), 1, "the main session was made once");
    let agent = h.stores.agents.get(&h.agent).await.unwrap();
    assert_eq!(agent.main_session_id, Some(calls[0].1));
}

#[tokio::test]
async fn a_main_mode_run_waits_for_a_turn_it_did_not_start_rather_than_failing() {
    let h = Harness::new(Duration::from_secs(20)).await;
    let task = h
        .task(
            ScheduleType::Interval,
            "3600000",
            ContextMode::Main,
            Some(START + WallDuration::seconds(10)),
        )
        .await;
    let main =
        h.stores.sessions.create(&h.agent, orbit_store::NewSession::default()).await.unwrap();
    h.stores.agents.claim_main_session(&h.agent, main.id, None).await.unwrap();
    // A person's 20 s chat turn in the main session, from before the slot.
    let runner = h.runner.clone();
    let chat = task.clone();
    let person = tokio::spawn(async move {
        orbit_scheduler::TaskRunner::run(
            &*runner,
            &chat,
            orbit_store::RunId::new(),
            main.id,
            Duration::from_secs(60),
            Default::default(),
        )
        .await
    });
    let scheduler = h.scheduler();
    h.run_for(&scheduler, Duration::from_secs(60)).await;
    assert!(person.await.unwrap().is_ok());
    let calls = h.calls();
    assert_eq!(calls.len(), 2);
    assert!(calls[1].2 >= START + WallDuration::seconds(20), "after the person's turn ended");
    assert!(h.runner.refused.load(Ordering::SeqCst) >= 1, "the session was found busy");
    let runs = h.runs(&task).await;
    assert_eq!((runs.len(), runs[0].status), (1, RunStatus::Success), "{runs:?}");
}

#[tokio::test]
async fn a_task_in_its_own_worktree_runs_every_run_there() {
    let h = Harness::on_disk(Duration::from_secs(1)).await;
    let new = orbit_store::NewTask {
        node: None,
        name: None,
        prompt: "build".into(),
        schedule_type: ScheduleType::Interval,
        schedule_value: "60000".into(),
        context_mode: ContextMode::Isolated,
        timezone: None,
        next_run: Some(START + WallDuration::minutes(1)),
        worktree: true,
        branch: Some("task/build".into()),
    };
    let task = h.stores.tasks.create(&h.agent, new).await.unwrap();
    let scheduler = h.scheduler();
    h.run_for(&scheduler, Duration::from_secs(2 * 60 + 30)).await;
    let calls = h.calls();
    assert_eq!(calls.len(), 2);
    for (_, session, _) in &calls {
        let session = h.stores.sessions.get(&h.agent, session).await.unwrap();
        assert_eq!(
            session.worktree_id,
            Some(task.id.to_string()),
            "each run's session works in the task's worktree"
        );
    }
    let base = h.stores.agents.working_dir(&h.agent).await.unwrap();
    let trees = orbit_agent::worktree::list(&base).await.unwrap();
    assert_eq!(
        (trees.len(), trees[0].id.clone(), trees[0].branch.as_deref()),
        (1, task.id.to_string(), Some("task/build"))
    );
}
