//! New inbox messages and tasks: each durable as a line of its directory's arrivals, whose
//! `fdatasync` concurrent writers share (`fs::sync_rounds`), and made a file by the next step
//! that drains them (`fs::arrivals`). Opening a store replays nothing, so what is on disk (the
//! files, and the lines not yet drained) is what the store answers.

use orbit_store::{AgentName, Error, FsStore, NewAgent, NewMessage};

use crate::records::{request, weekly_task as task};

fn message(text: &str) -> NewMessage {
    request(&agent(), &agent(), text)
}

fn agent() -> AgentName {
    AgentName::parse("writer").unwrap()
}

/// Finding (b) of the commit log's review: a store opening the directory replayed the log's
/// creates over a task deleted by a binary that did not log deletions, bringing it back. A
/// record removed behind the store's back (an older binary, an operator) stays removed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn opening_a_store_never_brings_back_a_record_removed_behind_its_back() {
    let dir = tempfile::tempdir().unwrap();
    let stores = FsStore::open(dir.path()).unwrap().stores();
    stores.agents.create(&agent(), NewAgent::default()).await.unwrap();
    let removed_task = stores.tasks.create(&agent(), task("removed")).await.unwrap();
    let kept_task = stores.tasks.create(&agent(), task("kept")).await.unwrap();
    let removed_message = stores.inbox.send(message("removed")).await.unwrap();
    let kept_message = stores.inbox.send(message("kept")).await.unwrap();
    // A read makes the messages sent and the tasks created files (see `fs::arrivals`).
    assert_eq!(stores.inbox.get_pending(&agent()).await.unwrap().len(), 2);
    assert_eq!(stores.tasks.list_by_agent(&agent()).await.unwrap().len(), 2);
    drop(stores);

    let agent_dir = dir.path().join("agents").join("writer");
    std::fs::remove_file(agent_dir.join("tasks").join(format!("{}.json", removed_task.id)))
        .unwrap();
    std::fs::remove_file(agent_dir.join("inbox/open").join(format!("{}.json", removed_message.id)))
        .unwrap();

    let stores = FsStore::open(dir.path()).unwrap().stores();
    assert!(matches!(
        stores.tasks.get(&agent(), &removed_task.id).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        stores.inbox.get(&agent(), &removed_message.id).await,
        Err(Error::NotFound { .. })
    ));
    let tasks = stores.tasks.list_by_agent(&agent()).await.unwrap();
    assert_eq!(tasks.iter().map(|t| t.id).collect::<Vec<_>>(), [kept_task.id]);
    let pending = stores.inbox.get_pending(&agent()).await.unwrap();
    assert_eq!(pending.iter().map(|m| m.id).collect::<Vec<_>>(), [kept_message.id]);
}

/// Many creates at once, so that they share their arrivals' syncs: every one answered is there,
/// for this store and for one opened afresh, and nothing else is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_creates_sharing_fsyncs_are_all_there() {
    let dir = tempfile::tempdir().unwrap();
    let stores = FsStore::open(dir.path()).unwrap().stores();
    stores.agents.create(&agent(), NewAgent::default()).await.unwrap();
    let mut writers = tokio::task::JoinSet::new();
    for n in 0..48 {
        let stores = stores.clone();
        writers.spawn(async move {
            let task = stores.tasks.create(&agent(), task(format!("t{n}"))).await.unwrap();
            let sent = stores.inbox.send(message(&format!("m{n}"))).await.unwrap();
            (task.id, sent.id)
        });
    }
    let (mut tasks, mut messages): (Vec<_>, Vec<_>) = writers.join_all().await.into_iter().unzip();
    tasks.sort();
    messages.sort();
    for stores in [stores, FsStore::open(dir.path()).unwrap().stores()] {
        let mut listed: Vec<_> =
            stores.tasks.list_by_agent(&agent()).await.unwrap().iter().map(|t| t.id).collect();
        listed.sort();
        assert_eq!(listed, tasks);
        let mut pending: Vec<_> =
            stores.inbox.get_pending(&agent()).await.unwrap().iter().map(|m| m.id).collect();
        pending.sort();
        assert_eq!(pending, messages);
    }
}

/// Task creates of two stores on one directory, many at once, publish on the change feed; the
/// first of them finds the feed past its size and replaces it. Every create's change is on the
/// new feed exactly once: none went to the replaced file (an appender between its look at the
/// feed and its write when the file was replaced) and no two lines were interleaved.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_task_creates_each_publish_once_across_a_replaced_feed() {
    use orbit_store::ChangeCursor;

    let dir = tempfile::tempdir().unwrap();
    let first = FsStore::open(dir.path()).unwrap().stores();
    let second = FsStore::open(dir.path()).unwrap().stores();
    first.agents.create(&agent(), NewAgent::default()).await.unwrap();
    // A feed past its size (1 MiB), as a long-running directory has: the next publish
    // replaces it.
    let feed = dir.path().join("task-changes.jsonl");
    let filler = format!("{}\n", "x".repeat(1023));
    std::fs::write(&feed, filler.repeat(1100)).unwrap();

    let mut writers = tokio::task::JoinSet::new();
    for n in 0..40 {
        let stores = if n % 2 == 0 { first.clone() } else { second.clone() };
        writers.spawn(async move { stores.tasks.create(&agent(), task(format!("t{n}"))).await });
    }
    let mut created: Vec<_> =
        writers.join_all().await.into_iter().map(|task| task.unwrap().id).collect();
    created.sort();

    assert!(std::fs::metadata(&feed).unwrap().len() < 64 * 1024, "the feed was not replaced");
    let from_start = ChangeCursor { feed: ulid::Ulid::nil(), offset: 0 };
    let changes = second.tasks.changes_since(Some(from_start)).await.unwrap();
    assert!(!changes.reset);
    let mut published: Vec<_> = changes.changes.iter().map(|change| change.task).collect();
    published.sort();
    assert_eq!(published, created, "each create's change once on the new feed");
}
