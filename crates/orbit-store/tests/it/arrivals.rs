//! New inbox messages are lines of the inbox's arrivals until a step under the inbox's lock
//! makes them files (`fs::arrivals`). A process that sends, lists, claims and reads messages
//! at once is killed with SIGKILL at random moments, over and over, so that kills cut sends
//! sharing an `fdatasync`, drains between their swap and their removal, and claims: every send
//! it saw answered is there afterwards, nothing it read comes back, no message is ever in two
//! places, and no task it deleted comes back. Tasks are lines of their arrivals the same way.
//!
//! The child is this test binary run again on `arrivals::arrivals_child`; it prints `SENT <id>`
//! after a send returns, `READ <id>` after marking a message it claimed read, `KEEP <id>` after
//! creating a task it keeps, and `GONE <id>` after deleting one it created.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::time::Duration;

use orbit_store::{
    AgentName, Claimer, Error, FsStore, InstanceId, MessageId, MessageStatus, NewAgent, SessionId,
    TaskId, timestamp,
};

use crate::children::{random_below, run_until_killed};
use crate::records::{request, weekly_task};

const DIR: &str = "ORBIT_STORE_ARRIVALS_DIR";
const KILLS: usize = 40;
/// A child's claims lapse soon, so that the next child (and the check at the end) takes back
/// what a killed one held.
const CHILD_LEASE: Duration = Duration::from_millis(300);

fn agent() -> AgentName {
    AgentName::parse("mailbox").unwrap()
}

/// The ids of the message files in one of the inbox's directories.
fn ids_in(dir: &Path, state: &str) -> Vec<MessageId> {
    let Ok(entries) = std::fs::read_dir(dir.join("agents/mailbox/inbox").join(state)) else {
        return Vec::new();
    };
    entries
        .filter_map(|entry| {
            let name = entry.unwrap().file_name().into_string().unwrap();
            name.strip_suffix(".json").and_then(|id| MessageId::parse(id).ok())
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sends_drains_and_claims_survive_sigkill_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let stores = FsStore::open(dir.path()).unwrap().stores();
    stores.agents.create(&agent(), NewAgent::default()).await.unwrap();
    let (mut sent, mut read) = (HashSet::new(), HashMap::<MessageId, usize>::new());
    let (mut kept, mut deleted) = (HashSet::new(), HashSet::new());
    for round in 0..KILLS {
        // Every other child is killed after its first read.
        let after = (round % 2 == 1).then_some("READ ");
        let delay = Duration::from_millis(20 + random_below(200));
        for line in run_until_killed("arrivals::arrivals_child", DIR, dir.path(), after, delay) {
            // libtest prints `test <name> ... ` without a newline before the child's output.
            let Some(start) =
                ["SENT ", "READ ", "KEEP ", "GONE "].iter().find_map(|tag| line.find(tag))
            else {
                continue;
            };
            match line[start..].split(' ').collect::<Vec<_>>().as_slice() {
                ["SENT", id] => {
                    sent.insert(MessageId::parse(id).unwrap());
                }
                ["READ", id] => *read.entry(MessageId::parse(id).unwrap()).or_default() += 1,
                ["KEEP", id] => {
                    kept.insert(TaskId::parse(id).unwrap());
                }
                ["GONE", id] => {
                    deleted.insert(TaskId::parse(id).unwrap());
                }
                _ => {}
            }
        }
        // Every third round only: a store opened afresh, as a restarted server, finishes what
        // the child left, and the next child must meet that itself the other times.
        if round % 3 != 2 && round + 1 < KILLS {
            continue;
        }
        let fresh = FsStore::open(dir.path()).unwrap().stores();
        for id in &sent {
            let message = fresh.inbox.get(&agent(), id).await.unwrap_or_else(|err| {
                panic!("round {round}: the answered send {id} is lost: {err}")
            });
            if read.contains_key(id) {
                assert_eq!(message.status, MessageStatus::Read, "round {round}: {id} came back");
            }
        }
        for id in &kept {
            fresh.tasks.get(&agent(), id).await.unwrap_or_else(|err| {
                panic!("round {round}: the created task {id} is lost: {err}")
            });
        }
        for id in &deleted {
            assert!(
                matches!(fresh.tasks.get(&agent(), id).await, Err(Error::NotFound { .. })),
                "round {round}: the deleted task {id} came back"
            );
        }
        let open: HashSet<_> = ids_in(dir.path(), "open").into_iter().collect();
        for id in ids_in(dir.path(), "archive").into_iter().chain(ids_in(dir.path(), "dead")) {
            assert!(!open.contains(&id), "round {round}: {id} is both open and filed away");
        }
    }
    assert!(sent.len() > KILLS, "the child sent too little to prove anything: {}", sent.len());
    assert!(!deleted.is_empty(), "the child never deleted a task");
    assert!(!read.is_empty(), "the child never read a message");
    for (id, times) in &read {
        assert_eq!(*times, 1, "{id} was delivered and read {times} times");
    }
    // Whatever is still pending is claimed here once each leases lapse: every message sent
    // was read by a child or is taken now, and none twice.
    tokio::time::sleep(CHILD_LEASE).await;
    let claimer = Claimer {
        session: SessionId::new(),
        instance: InstanceId::new(),
        until: timestamp::now() + Duration::from_secs(60),
    };
    let rest = stores.inbox.claim_unclaimed(&agent(), &claimer, usize::MAX).await.unwrap();
    for message in &rest {
        assert!(!read.contains_key(&message.id), "{} was read and is pending again", message.id);
    }
    let rest: HashSet<_> = rest.iter().map(|message| message.id).collect();
    for id in sent.iter().filter(|id| !read.contains_key(id) && !rest.contains(id)) {
        // Read by a child killed before it printed so, or set aside after the claims of
        // three children were cut by their kills.
        let message = stores.inbox.get(&agent(), id).await.unwrap();
        assert!(
            matches!(message.status, MessageStatus::Read | MessageStatus::Dead),
            "{id} was neither read, pending nor set aside: {message:?}"
        );
    }
}

/// The child of the test above; a no-op when run as an ordinary test.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn arrivals_child() {
    let Ok(dir) = std::env::var(DIR) else { return };
    let stores = FsStore::open(dir).unwrap().stores();
    // Made by the parent; made here too when the child is run by hand.
    let _ = stores.agents.create(&agent(), NewAgent::default()).await;
    for lane in 0..3 {
        let stores = stores.clone();
        tokio::spawn(async move {
            for n in 0u64.. {
                let message = request(&agent(), &agent(), format!("lane {lane} note {n}"));
                let sent = stores.inbox.send(message).await.unwrap();
                println!("SENT {}", sent.id);
                if n % 7 == 0 {
                    // A listing drains with the lock taken shared first.
                    stores.inbox.get_pending(&agent()).await.unwrap();
                }
            }
        });
    }
    // A burst of sends with no read between, so that a batch passes one step of a drain.
    let burst = stores.clone();
    tokio::spawn(async move {
        for n in 0..100 {
            let message = request(&agent(), &agent(), format!("burst note {n}"));
            let sent = burst.inbox.send(message).await.unwrap();
            println!("SENT {}", sent.id);
        }
    });
    // Tasks created and, every other one, deleted: a deleted task must never come back from a
    // batch a kill left.
    let tasks = stores.clone();
    tokio::spawn(async move {
        for n in 0u64.. {
            let task =
                tasks.tasks.create(&agent(), weekly_task(format!("task {n}"))).await.unwrap();
            if n % 2 == 0 {
                tasks.tasks.delete(&agent(), &task.id).await.unwrap();
                println!("GONE {}", task.id);
            } else {
                println!("KEEP {}", task.id);
            }
        }
    });
    loop {
        let claimer = Claimer {
            session: SessionId::new(),
            instance: InstanceId::new(),
            until: timestamp::now() + CHILD_LEASE,
        };
        let claimed = stores.inbox.claim_unclaimed(&agent(), &claimer, 4).await.unwrap();
        for message in claimed {
            let token = message.lease.unwrap().token;
            if stores.inbox.mark_read(&agent(), &message.id, &token).await.is_ok() {
                println!("READ {}", message.id);
            }
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
}

/// A batch a drain left behind, killed after making every message's file, and met again only
/// after those messages moved on (claimed and read, archived): finishing it brings none back,
/// wherever it went. (A drain that stopped midway through a batch, or another process's drain
/// between its steps, leaves the same state.)
#[tokio::test]
async fn a_batch_finished_again_brings_back_nothing_that_moved_on() {
    let dir = tempfile::tempdir().unwrap();
    let stores = FsStore::open(dir.path()).unwrap().stores();
    stores.agents.create(&agent(), NewAgent::default()).await.unwrap();
    let mut sent = Vec::new();
    for text in ["one", "two", "three"] {
        sent.push(stores.inbox.send(request(&agent(), &agent(), text)).await.unwrap());
    }
    // Drained by a listing: all three are files of `open/` now.
    assert_eq!(stores.inbox.get_pending(&agent()).await.unwrap().len(), 3);
    let claimer = Claimer {
        session: SessionId::new(),
        instance: InstanceId::new(),
        until: timestamp::now() + Duration::from_secs(60),
    };
    let claimed = stores.inbox.claim_unclaimed(&agent(), &claimer, 1).await.unwrap();
    assert_eq!(claimed[0].id, sent[0].id);
    let token = claimed[0].lease.unwrap().token;
    stores.inbox.mark_read(&agent(), &sent[0].id, &token).await.unwrap();
    stores.inbox.archive(&agent(), &sent[1].id).await.unwrap();

    // The batch, as the killed drain left it.
    let mut batch = b"\n".to_vec();
    for message in &sent {
        batch.push(b'\n');
        batch.extend(serde_json::to_vec(message).unwrap());
        batch.push(b'\n');
    }
    let inbox = dir.path().join("agents/mailbox/inbox");
    std::fs::write(inbox.join("arrivals.draining.jsonl"), batch).unwrap();

    let pending = stores.inbox.get_pending(&agent()).await.unwrap();
    assert_eq!(pending.iter().map(|m| m.id).collect::<Vec<_>>(), [sent[2].id]);
    assert!(!inbox.join("arrivals.draining.jsonl").exists(), "the batch was finished");
    let fresh = FsStore::open(dir.path()).unwrap().stores();
    assert_eq!(fresh.inbox.get(&agent(), &sent[0].id).await.unwrap().status, MessageStatus::Read);
    assert_eq!(
        fresh.inbox.get(&agent(), &sent[1].id).await.unwrap().status,
        MessageStatus::Archived
    );
    assert_eq!(ids_in(dir.path(), "open"), [sent[2].id], "nothing came back to open/");
}

/// Steps that settle a claim, read what was filed away, or act on a task that is a file
/// already drain nothing, so they never wait behind a backlog of new records; a listing then
/// drains what waits.
#[tokio::test]
async fn settling_reading_filed_and_acting_on_a_known_task_drain_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let stores = FsStore::open(dir.path()).unwrap().stores();
    stores.agents.create(&agent(), NewAgent::default()).await.unwrap();
    let inbox = dir.path().join("agents/mailbox/inbox/arrivals.jsonl");
    let tasks = dir.path().join("agents/mailbox/tasks/arrivals.jsonl");
    let waits = |path: &std::path::Path| std::fs::metadata(path).unwrap().len() > 1;

    stores.inbox.send(request(&agent(), &agent(), "first")).await.unwrap();
    let claimer = Claimer {
        session: SessionId::new(),
        instance: InstanceId::new(),
        until: timestamp::now() + Duration::from_secs(60),
    };
    let held = stores.inbox.claim_unclaimed(&agent(), &claimer, 1).await.unwrap();
    assert!(!waits(&inbox), "a claim drains");
    stores.inbox.send(request(&agent(), &agent(), "second")).await.unwrap();
    assert!(waits(&inbox));
    let token = held[0].lease.unwrap().token;
    let later = timestamp::now() + Duration::from_secs(120);
    stores.inbox.renew(&agent(), &held[0].id, &token, later).await.unwrap();
    stores.inbox.mark_read(&agent(), &held[0].id, &token).await.unwrap();
    stores.inbox.list_dead(&agent()).await.unwrap();
    assert_eq!(stores.inbox.filed_page(&agent(), None, 10).await.unwrap().len(), 1);
    assert!(waits(&inbox), "settling and reading filed messages drained");
    assert_eq!(stores.inbox.get_pending(&agent()).await.unwrap().len(), 1);
    assert!(!waits(&inbox), "a listing drains");

    let known = stores.tasks.create(&agent(), weekly_task("known")).await.unwrap();
    stores.tasks.get(&agent(), &known.id).await.unwrap();
    assert!(!waits(&tasks), "a read of a task drains");
    let new = stores.tasks.create(&agent(), weekly_task("new")).await.unwrap();
    let patch = orbit_store::TaskPatch { name: Some("renamed".into()), ..Default::default() };
    stores.tasks.update(&agent(), &known.id, patch).await.unwrap();
    assert!(stores.tasks.claim_slot(&agent(), &known.id, timestamp::now()).await.unwrap());
    assert!(waits(&tasks), "acting on a task that is a file drained");
    // Acting on the task that waits makes it a file first.
    let patch = orbit_store::TaskPatch { name: Some("also".into()), ..Default::default() };
    stores.tasks.update(&agent(), &new.id, patch).await.unwrap();
    assert!(!waits(&tasks));
}
