//! The task change feed across store instances (as across processes). A change's line is
//! appended after its record is written and its lock let go, so racing writers' lines may come
//! in another order than their records; a line carries no state, and a reader that re-reads
//! each task it is told of, as the scheduler does, still ends with every task's final state.
//!
//! This guards the rule that every line comes after its change: a line published before its
//! change could leave the reader with an older state. It does not assert that lines came out
//! of order in a given run (that depends on timing); it holds whichever order they came in.

use std::collections::BTreeMap;

use orbit_store::{FsStore, Stores, Task, TaskId, TaskPatch};

use crate::records::weekly_task;

/// Applies the feed past `cursor` as the scheduler does: every task named is read again.
async fn follow(
    reader: &Stores,
    cursor: &mut orbit_store::ChangeCursor,
    seen: &mut BTreeMap<TaskId, Task>,
) {
    let feed = reader.tasks.changes_since(Some(*cursor)).await.unwrap();
    *cursor = feed.cursor;
    assert!(!feed.reset, "the feed was replaced during the test");
    for change in feed.changes {
        match reader.tasks.get(&change.agent, &change.task).await {
            Ok(task) => {
                seen.insert(task.id, task);
            }
            Err(err) if err.kind() == orbit_store::ErrorKind::NotFound => {
                seen.remove(&change.task);
            }
            Err(err) => panic!("reading a changed task: {err}"),
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_reader_that_rereads_what_the_feed_names_ends_with_every_final_state() {
    let dir = tempfile::tempdir().unwrap();
    let reader = FsStore::open(dir.path()).unwrap().stores();
    let agent = orbit_store::AgentName::parse("worker").unwrap();
    reader.agents.create(&agent, Default::default()).await.unwrap();
    let mut cursor = reader.tasks.changes_since(None).await.unwrap().cursor;
    let writers =
        [FsStore::open(dir.path()).unwrap().stores(), FsStore::open(dir.path()).unwrap().stores()];
    let mut handles = Vec::new();
    for writer in 0..8usize {
        // Two stores, each task changed by both, so that lines and records race.
        let (mine, other) = (writers[writer % 2].clone(), writers[(writer + 1) % 2].clone());
        let agent = agent.clone();
        handles.push(tokio::spawn(async move {
            for round in 0..15usize {
                let task = mine
                    .tasks
                    .create(&agent, weekly_task(format!("{writer}/{round}")))
                    .await
                    .unwrap();
                let (first, second) = (mine.tasks.clone(), other.tasks.clone());
                let (a, b) = (agent.clone(), agent.clone());
                let patch =
                    |text: &str| TaskPatch { prompt: Some(text.into()), ..TaskPatch::default() };
                let (p1, p2) = (patch("first"), patch("second"));
                let one = tokio::spawn(async move { first.update(&a, &task.id, p1).await });
                let two = tokio::spawn(async move { second.update(&b, &task.id, p2).await });
                one.await.unwrap().unwrap();
                two.await.unwrap().unwrap();
                if round % 3 == 0 {
                    other.tasks.delete(&agent, &task.id).await.unwrap();
                }
            }
        }));
    }
    let mut seen = BTreeMap::new();
    while !handles.iter().all(|handle| handle.is_finished()) {
        follow(&reader, &mut cursor, &mut seen).await;
    }
    for handle in handles {
        handle.await.unwrap();
    }
    follow(&reader, &mut cursor, &mut seen).await;
    let fresh = FsStore::open(dir.path()).unwrap().stores();
    let stored: BTreeMap<TaskId, Task> =
        fresh.tasks.list_all().await.unwrap().into_iter().map(|task| (task.id, task)).collect();
    assert_eq!(stored.len(), 8 * 10, "tasks kept");
    assert_eq!(
        serde_json::to_value(&seen).unwrap(),
        serde_json::to_value(&stored).unwrap(),
        "what the feed's reader holds is what is stored"
    );
}
