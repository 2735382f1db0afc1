//! The contract of tasks: their lifecycle, runs (started under a lease, finished, skipped,
//! kept to a bound, judged at the caller's clock), slots claimed once, and the change feed.

use std::collections::HashSet;

use time::macros::datetime;

use super::{RUNS_KEPT, agent, in_secs, interval_task};
use crate::{
    ChangeCursor, ErrorKind, InstanceId, Lease, LeaseToken, RunOutcome, RunStart, RunStatus,
    SessionId, Stores, TaskPatch, TaskStatus, timestamp,
};

fn outcome(status: RunStatus) -> RunOutcome {
    RunOutcome { status, result: Some("done".into()), error: None, cost_usd: Some(0.1) }
}

fn lease(secs: i64) -> Lease {
    Lease::new(InstanceId::new(), in_secs(secs))
}

/// Create, read, list, update and delete tasks.
pub async fn tasks_lifecycle(stores: &Stores) {
    let a = agent(stores, "a").await;
    let b = agent(stores, "b").await;
    let task = stores.tasks.create(&a, interval_task("check status")).await.unwrap();
    assert_eq!(task.status, TaskStatus::Active);
    assert_eq!(task.anchor, task.next_run, "the first slot fixes the phase of the others");
    assert_eq!(stores.tasks.get(&a, &task.id).await.unwrap(), task);
    let other = stores.tasks.create(&b, interval_task("other")).await.unwrap();
    assert_eq!(stores.tasks.list_by_agent(&a).await.unwrap(), vec![task.clone()]);
    let mut all: Vec<_> =
        stores.tasks.list_all().await.unwrap().into_iter().map(|t| t.id).collect();
    all.sort();
    assert_eq!(all, vec![task.id, other.id]);

    let updated = stores
        .tasks
        .update(
            &a,
            &task.id,
            TaskPatch {
                status: Some(TaskStatus::Paused),
                next_run: Some(None),
                ..TaskPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.status, TaskStatus::Paused);
    assert_eq!(updated.next_run, None);
    assert_eq!(updated.prompt, "check status");
    stores.tasks.delete(&a, &task.id).await.unwrap();
    assert_eq!(stores.tasks.get(&a, &task.id).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(stores.tasks.delete(&a, &task.id).await.unwrap_err().kind(), ErrorKind::NotFound);
}

/// Runs are recorded when they start, finished with their outcome, listed newest first;
/// consecutive skips share one record.
pub async fn runs_lifecycle(stores: &Stores) {
    let a = agent(stores, "a").await;
    let task = stores.tasks.create(&a, interval_task("p")).await.unwrap();
    let session = SessionId::new();
    let held = lease(60);
    let RunStart::Started(first) =
        stores.tasks.start_run(&a, &task.id, Some(session), held, timestamp::now()).await.unwrap()
    else {
        panic!("nothing runs yet")
    };
    assert_eq!((first.status, first.completed_at), (RunStatus::Running, None));
    assert_eq!(stores.tasks.latest_run(&a, &task.id).await.unwrap(), Some(first.clone()));
    assert_eq!(stores.tasks.running_runs().await.unwrap(), vec![(a.clone(), first.clone())]);
    let skipped = stores.tasks.record_skip(&a, &task.id, timestamp::now()).await.unwrap();
    assert!(skipped.completed_at.is_some());
    let again = stores.tasks.record_skip(&a, &task.id, timestamp::now()).await.unwrap();
    assert_eq!(
        (again.id, again.skipped_slots),
        (skipped.id, Some(2)),
        "consecutive skips are one record"
    );
    let finished = stores
        .tasks
        .finish_run(
            &a,
            &task.id,
            &first.id,
            &held.token,
            outcome(RunStatus::Success),
            timestamp::now(),
        )
        .await
        .unwrap();
    assert_eq!(finished.status, RunStatus::Success);
    assert!(
        finished.completed_at.is_some()
            && finished.duration_ms.is_some()
            && finished.lease.is_none()
    );
    assert_eq!(stores.tasks.list_runs(&a, &task.id).await.unwrap(), vec![again, finished.clone()]);
    assert!(stores.tasks.running_runs().await.unwrap().is_empty(), "a finished run is not running");
    let err = stores
        .tasks
        .finish_run(
            &a,
            &task.id,
            &first.id,
            &held.token,
            outcome(RunStatus::Error),
            timestamp::now(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "a run is finished once");
    let RunStart::Started(second) =
        stores.tasks.start_run(&a, &task.id, None, lease(60), timestamp::now()).await.unwrap()
    else {
        panic!("the first run finished")
    };
    let skip = stores.tasks.record_skip(&a, &task.id, timestamp::now()).await.unwrap();
    assert_eq!(skip.skipped_slots, Some(1), "a run in between starts a new skip record");
    assert_eq!(stores.tasks.latest_run(&a, &task.id).await.unwrap().map(|r| r.id), Some(second.id));
}

/// A task keeps its newest runs only (skip records count), and its newest run is always
/// among them.
pub async fn runs_are_kept_to_a_bound(stores: &Stores) {
    let a = agent(stores, "a").await;
    let task = stores.tasks.create(&a, interval_task("p")).await.unwrap();
    let mut started = Vec::new();
    for round in 0..RUNS_KEPT + 4 {
        let held = lease(60);
        let RunStart::Started(run) =
            stores.tasks.start_run(&a, &task.id, None, held, timestamp::now()).await.unwrap()
        else {
            panic!("round {round}: the previous run finished")
        };
        let status = if round % 2 == 0 { RunStatus::Success } else { RunStatus::Error };
        stores
            .tasks
            .finish_run(&a, &task.id, &run.id, &held.token, outcome(status), timestamp::now())
            .await
            .unwrap();
        started.push(run.id);
    }
    let kept: Vec<_> =
        stores.tasks.list_runs(&a, &task.id).await.unwrap().into_iter().map(|r| r.id).collect();
    let newest: Vec<_> = started.iter().rev().take(RUNS_KEPT).copied().collect();
    assert_eq!(kept, newest, "the newest {RUNS_KEPT} runs, newest first");
    let latest = stores.tasks.latest_run(&a, &task.id).await.unwrap().unwrap();
    assert_eq!(Some(&latest.id), started.last());
    // A skip is a record too: it pushes the oldest run out, and the newest run stays.
    stores.tasks.record_skip(&a, &task.id, timestamp::now()).await.unwrap();
    let RunStart::Started(last) =
        stores.tasks.start_run(&a, &task.id, None, lease(60), timestamp::now()).await.unwrap()
    else {
        panic!("the previous run finished")
    };
    let runs = stores.tasks.list_runs(&a, &task.id).await.unwrap();
    assert_eq!(runs.len(), RUNS_KEPT);
    assert_eq!((runs[0].id, runs[0].status), (last.id, RunStatus::Running));
    assert_eq!(runs[1].status, RunStatus::Skipped);
}

/// A run under a live lease refuses a second start; a lapsed one is marked interrupted and
/// its holder can no longer renew or finish it.
pub async fn run_leases(stores: &Stores) {
    let a = agent(stores, "a").await;
    let task = stores.tasks.create(&a, interval_task("p")).await.unwrap();
    let held = lease(60);
    let RunStart::Started(run) =
        stores.tasks.start_run(&a, &task.id, None, held, timestamp::now()).await.unwrap()
    else {
        panic!("nothing runs yet")
    };
    match stores.tasks.start_run(&a, &task.id, None, lease(60), timestamp::now()).await.unwrap() {
        RunStart::Overlap(running) => assert_eq!(running.id, run.id),
        RunStart::Started(_) => panic!("two runs at once"),
    }
    assert_eq!(
        stores.tasks.interrupt_lapsed_run(&a, &task.id, &run.id, timestamp::now()).await.unwrap(),
        None
    );
    stores.tasks.renew_run(&a, &task.id, &run.id, &held.token, in_secs(-1)).await.unwrap();
    let err = stores
        .tasks
        .renew_run(&a, &task.id, &run.id, &LeaseToken::new(), in_secs(60))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    let interrupted = stores
        .tasks
        .interrupt_lapsed_run(&a, &task.id, &run.id, timestamp::now())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(interrupted.status, RunStatus::Error);
    assert!(interrupted.error.unwrap().contains("interrupted"));
    for settled in [
        stores
            .tasks
            .finish_run(
                &a,
                &task.id,
                &run.id,
                &held.token,
                outcome(RunStatus::Success),
                timestamp::now(),
            )
            .await
            .map(drop),
        stores.tasks.renew_run(&a, &task.id, &run.id, &held.token, in_secs(60)).await,
    ] {
        assert_eq!(settled.unwrap_err().kind(), ErrorKind::Conflict);
    }
    // A lapsed run found by the next start is interrupted on the way.
    let stale = lease(-1);
    let RunStart::Started(lapsed) =
        stores.tasks.start_run(&a, &task.id, None, stale, timestamp::now()).await.unwrap()
    else {
        panic!("the last run was interrupted")
    };
    let RunStart::Started(next) =
        stores.tasks.start_run(&a, &task.id, None, lease(60), timestamp::now()).await.unwrap()
    else {
        panic!("a lapsed run does not block")
    };
    let runs = stores.tasks.list_runs(&a, &task.id).await.unwrap();
    assert_eq!(runs[0].id, next.id);
    assert_eq!((runs[1].id, runs[1].status), (lapsed.id, RunStatus::Error));
}

/// Whether a run's lease has lapsed is judged at the caller's `now`, not by the store's own
/// clock, so a scheduler on a test clock (or a skewed one) and the store agree.
pub async fn run_expiry_follows_the_callers_clock(stores: &Stores) {
    let a = agent(stores, "a").await;
    let task = stores.tasks.create(&a, interval_task("p")).await.unwrap();
    let at = datetime!(2020-01-01 0:00 UTC);
    let seconds = |s: i64| at + time::Duration::seconds(s);
    let first = Lease::new(InstanceId::new(), seconds(30));
    let RunStart::Started(run) =
        stores.tasks.start_run(&a, &task.id, None, first, at).await.unwrap()
    else {
        panic!("nothing runs yet")
    };
    assert_eq!(run.started_at, at);
    let second = Lease::new(InstanceId::new(), seconds(60));
    match stores.tasks.start_run(&a, &task.id, None, second, seconds(10)).await.unwrap() {
        RunStart::Overlap(running) => assert_eq!(running.id, run.id),
        RunStart::Started(_) => panic!("the first lease holds until 00:00:30 at 00:00:10"),
    }
    let RunStart::Started(next) =
        stores.tasks.start_run(&a, &task.id, None, second, seconds(31)).await.unwrap()
    else {
        panic!("the first lease lapsed at 00:00:30")
    };
    let finished = stores
        .tasks
        .finish_run(&a, &task.id, &next.id, &second.token, outcome(RunStatus::Success), seconds(40))
        .await
        .unwrap();
    assert_eq!((finished.completed_at, finished.duration_ms), (Some(seconds(40)), Some(9_000)));
    let runs = stores.tasks.list_runs(&a, &task.id).await.unwrap();
    assert_eq!((runs[1].id, runs[1].completed_at), (run.id, Some(seconds(31))));
    let skip = stores.tasks.record_skip(&a, &task.id, seconds(50)).await.unwrap();
    assert_eq!(skip.started_at, seconds(50));
}

/// Of any number of claimers of one slot exactly one wins; slots are claimed in time order.
pub async fn slots_fire_once_in_order(stores: &Stores) {
    let a = agent(stores, "a").await;
    let task = stores.tasks.create(&a, interval_task("p")).await.unwrap();
    let slot = datetime!(2026-11-23 12:00 UTC);
    let mut handles = Vec::new();
    for _ in 0..8 {
        let tasks = stores.tasks.clone();
        let (a, id) = (a.clone(), task.id);
        handles.push(tokio::spawn(async move { tasks.claim_slot(&a, &id, slot).await.unwrap() }));
    }
    let mut wins = 0;
    for handle in handles {
        wins += usize::from(handle.await.unwrap());
    }
    assert_eq!(wins, 1);
    assert!(
        !stores.tasks.claim_slot(&a, &task.id, slot - time::Duration::minutes(1)).await.unwrap()
    );
    assert!(
        stores.tasks.claim_slot(&a, &task.id, slot + time::Duration::minutes(1)).await.unwrap()
    );
    let err = stores.tasks.claim_slot(&a, &crate::TaskId::new(), slot).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

/// Creates, updates and deletes reach every reader of the change feed.
pub async fn task_change_feed(stores: &Stores) {
    let a = agent(stores, "a").await;
    let start = stores.tasks.changes_since(None).await.unwrap();
    assert!(start.changes.is_empty() && !start.reset);
    let mut ticks = stores.tasks.watch_changes();
    let ticked = |ticks: &mut tokio::sync::watch::Receiver<u64>| {
        let changed = ticks.has_changed().unwrap_or(false);
        ticks.borrow_and_update();
        changed
    };
    let task = stores.tasks.create(&a, interval_task("p")).await.unwrap();
    assert!(ticked(&mut ticks), "a create ticks the watch");
    stores
        .tasks
        .update(&a, &task.id, TaskPatch { prompt: Some("q".into()), ..TaskPatch::default() })
        .await
        .unwrap();
    assert!(ticked(&mut ticks), "an update ticks the watch");
    stores.tasks.delete(&a, &task.id).await.unwrap();
    assert!(ticked(&mut ticks), "a delete ticks the watch");
    let seen = stores.tasks.changes_since(Some(start.cursor)).await.unwrap();
    assert!(!seen.reset);
    assert_eq!(seen.changes.len(), 3);
    assert!(seen.changes.iter().all(|c| c.agent == a && c.task == task.id));
    let quiet = stores.tasks.changes_since(Some(seen.cursor)).await.unwrap();
    assert!(quiet.changes.is_empty() && !quiet.reset);
    // A cursor of another feed (one replaced since, or another store's) cannot say what was
    // missed: the reader is told to re-read every task, and given the current position.
    let foreign = ChangeCursor { feed: crate::new_ulid(), offset: seen.cursor.offset };
    let reset = stores.tasks.changes_since(Some(foreign)).await.unwrap();
    assert!(reset.reset && reset.changes.is_empty());
    assert_eq!(reset.cursor, seen.cursor);
    let beyond = ChangeCursor { offset: seen.cursor.offset + 1_000, ..seen.cursor };
    assert!(stores.tasks.changes_since(Some(beyond)).await.unwrap().reset);
}

/// Deleting an agent deletes its tasks, and the change feed says so of each, so that every
/// reader (another node's scheduler) stops planning them without re-reading every task.
pub async fn deleting_an_agent_tells_the_feed_of_its_tasks(stores: &Stores) {
    let (a, b) = (agent(stores, "a").await, agent(stores, "b").await);
    let one = stores.tasks.create(&a, interval_task("one")).await.unwrap();
    let two = stores.tasks.create(&a, interval_task("two")).await.unwrap();
    let other = stores.tasks.create(&b, interval_task("other")).await.unwrap();
    let start = stores.tasks.changes_since(None).await.unwrap();
    let mut ticks = stores.tasks.watch_changes();
    ticks.borrow_and_update();
    stores.agents.delete(&a).await.unwrap();
    assert!(ticks.has_changed().unwrap_or(false), "the deletion ticks the watch");
    let seen = stores.tasks.changes_since(Some(start.cursor)).await.unwrap();
    assert!(!seen.reset);
    let changed: HashSet<_> = seen.changes.iter().map(|c| (c.agent.clone(), c.task)).collect();
    assert_eq!(changed, HashSet::from([(a.clone(), one.id), (a.clone(), two.id)]));
    for change in &seen.changes {
        let err = stores.tasks.get(&change.agent, &change.task).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "a reader finds the task gone");
    }
    assert!(stores.tasks.get(&b, &other.id).await.is_ok(), "another agent's task stays");
}
