//! Claims under contention: 64 claimers in one process, claimers in two processes (by id, and
//! in batches picked from each process's index), and claims whose holder process was killed.
//!
//! The child processes are this test binary run again on one test (`child_claimer`), which
//! does nothing unless its environment names a role.

use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use orbit_store::{
    AgentName, Claimer, FsStore, InboxMessage, InstanceId, MessageId, MessageType, NewAgent,
    NewMessage, SessionId, Stores, timestamp,
};

/// How long the children's claims last unless renewed.
const CHILD_LEASE: Duration = Duration::from_secs(3);

fn lease_until(lease: Duration) -> time::OffsetDateTime {
    timestamp::now() + lease
}

const ROLE: &str = "ORBIT_STORE_TEST_CHILD";
const DIR: &str = "ORBIT_STORE_TEST_DIR";

async fn seeded(dir: &Path, count: usize) -> (Stores, AgentName, HashSet<MessageId>) {
    let stores = FsStore::open(dir).unwrap().stores();
    let sender = AgentName::parse("sender").unwrap();
    let worker = AgentName::parse("worker").unwrap();
    stores.agents.create(&sender, NewAgent::default()).await.unwrap();
    stores.agents.create(&worker, NewAgent::default()).await.unwrap();
    let mut ids = HashSet::new();
    for index in 0..count {
        let message = NewMessage {
            from_agent: sender.clone().into(),
            to_agent: worker.clone(),
            message: format!("job {index}"),
            message_type: MessageType::Request,
            request_id: None,
        };
        ids.insert(stores.inbox.send(message).await.unwrap().id);
    }
    (stores, worker, ids)
}

/// How the claimers of [`claim_all`] take messages.
#[derive(Clone, Copy)]
enum Claiming {
    /// Each lists the unclaimed messages and claims them one by one (`claim`).
    OneByOne,
    /// Each takes batches of one to three (`claim_unclaimed`, which picks them from the index
    /// of `open/`).
    Batches,
}

/// Claims everything it can with `claimers` concurrent sessions; returns what it won.
async fn claim_all(
    stores: &Stores,
    worker: &AgentName,
    claimers: usize,
    lease: Duration,
    claiming: Claiming,
) -> Vec<InboxMessage> {
    let instance = InstanceId::new();
    let mut handles = Vec::new();
    for claimer in 0..claimers {
        let (inbox, worker) = (stores.inbox.clone(), worker.clone());
        handles.push(tokio::spawn(async move {
            let session = SessionId::new();
            let mut won = Vec::new();
            loop {
                let me = Claimer { session, instance, until: lease_until(lease) };
                match claiming {
                    Claiming::OneByOne => {
                        let unclaimed = inbox.get_unclaimed(&worker).await.unwrap();
                        if unclaimed.is_empty() {
                            return won;
                        }
                        for message in unclaimed {
                            let me = Claimer { until: lease_until(lease), ..me };
                            if let Some(message) =
                                inbox.claim(&worker, &message.id, &me).await.unwrap()
                            {
                                won.push(message);
                            }
                        }
                    }
                    Claiming::Batches => {
                        let batch =
                            inbox.claim_unclaimed(&worker, &me, 1 + claimer % 3).await.unwrap();
                        // None free now: done once no message is left unclaimed (the others
                        // may hold the rest).
                        if batch.is_empty()
                            && inbox.get_unclaimed(&worker).await.unwrap().is_empty()
                        {
                            return won;
                        }
                        won.extend(batch);
                    }
                }
            }
        }));
    }
    let mut won = Vec::new();
    for handle in handles {
        won.extend(handle.await.unwrap());
    }
    won
}

fn assert_exactly_once(won: &[MessageId], expected: &HashSet<MessageId>) {
    let unique: HashSet<MessageId> = won.iter().copied().collect();
    assert_eq!(unique.len(), won.len(), "a message was claimed twice");
    let never: Vec<_> = expected.difference(&unique).collect();
    assert!(
        never.is_empty(),
        "{} messages were never claimed, such as {:?}",
        never.len(),
        never.first()
    );
    assert_eq!(&unique, expected);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn sixty_four_claimers_take_each_of_a_thousand_messages_once() {
    let dir = tempfile::tempdir().unwrap();
    let (stores, worker, ids) = seeded(dir.path(), 1000).await;
    let won = claim_all(&stores, &worker, 64, Duration::from_secs(60), Claiming::OneByOne).await;
    let won: Vec<_> = won.iter().map(|m| m.id).collect();
    assert_exactly_once(&won, &ids);
}

fn spawn_child(role: &str, dir: &Path) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "multiprocess::child_claimer", "--nocapture", "--test-threads=1"])
        .env(ROLE, role)
        .env(DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

/// The ids a child printed as `WON <id>` lines before it said `HOLDING`.
fn held_claims(child: &mut std::process::Child) -> HashSet<MessageId> {
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut held = HashSet::new();
    while let Some(Ok(line)) = lines.next() {
        // libtest prints `test <name> ... ` without a newline before the test's own output.
        if let Some((_, id)) = line.split_once("WON ") {
            assert!(held.insert(MessageId::parse(id).unwrap()), "claimed twice in one process");
        }
        if line.ends_with("HOLDING") {
            break;
        }
    }
    // Keep reading, so that the child's last words do not hit a closed pipe.
    std::thread::spawn(move || lines.for_each(drop));
    held
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claimers_in_two_processes_take_each_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_stores, _worker, ids) = seeded(dir.path(), 600).await;
    let mut children =
        [spawn_child("claim-and-hold", dir.path()), spawn_child("claim-and-hold", dir.path())];
    // Both children start before either is given the go, so their claims overlap in time.
    std::fs::write(dir.path().join("go"), b"").unwrap();
    let mut won: Vec<MessageId> = Vec::new();
    for child in &mut children {
        won.extend(held_claims(child));
    }
    // Only now may the children exit: a holder that exits early has its claims given back,
    // rightly, to the other.
    std::fs::write(dir.path().join("exit"), b"").unwrap();
    for child in &mut children {
        assert!(child.wait().unwrap().success());
    }
    assert_exactly_once(&won, &ids);
}

/// The claims of each process pick their messages from its own index of `open/`, which learns
/// of the other process's claims only from the change log: each message is still claimed by
/// exactly one claimer, and every one is claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_claimers_in_two_processes_take_each_message_once() {
    let dir = tempfile::tempdir().unwrap();
    let (_stores, _worker, ids) = seeded(dir.path(), 600).await;
    let mut children = [
        spawn_child("claim-batches-and-hold", dir.path()),
        spawn_child("claim-batches-and-hold", dir.path()),
    ];
    std::fs::write(dir.path().join("go"), b"").unwrap();
    let mut won: Vec<MessageId> = Vec::new();
    let mut each = Vec::new();
    for child in &mut children {
        let held = held_claims(child);
        each.push(held.len());
        won.extend(held);
    }
    std::fs::write(dir.path().join("exit"), b"").unwrap();
    for child in &mut children {
        assert!(child.wait().unwrap().success());
    }
    assert_exactly_once(&won, &ids);
    assert!(each.iter().all(|&n| n > 0), "one process claimed everything: no race ({each:?})");
}

/// A killed process's batch claims lapse, and a claim in another process takes them back,
/// counting the delivery, then claims them oldest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_claims_of_a_killed_process_are_taken_back_by_a_claim() {
    let dir = tempfile::tempdir().unwrap();
    let (stores, worker, ids) = seeded(dir.path(), 5).await;
    let mut oldest_first: Vec<MessageId> = ids.iter().copied().collect();
    oldest_first.sort();
    // This store's index is built before the child claims: it learns of them from the log.
    assert_eq!(stores.inbox.get_unclaimed(&worker).await.unwrap().len(), 5);
    let mut child = spawn_child("claim-batches-and-die", dir.path());
    // Every lease the child takes ends after `go` + its lease, and before `held` + its lease.
    let go = Instant::now();
    std::fs::write(dir.path().join("go"), b"").unwrap();
    assert_eq!(held_claims(&mut child), ids);
    let held = Instant::now();
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let me = Claimer {
        session: SessionId::new(),
        instance: InstanceId::new(),
        until: lease_until(Duration::from_secs(60)),
    };
    let early = stores.inbox.claim_unclaimed(&worker, &me, 10).await.unwrap();
    // Judged only while surely before the first lease ends (a loaded machine may be late).
    if go.elapsed() < CHILD_LEASE {
        assert!(early.is_empty(), "claims held before their lease lapses");
    }
    // The leases lapse at moments spread over the child's claims: wait until all have, so
    // that one claim takes every message back, oldest first.
    tokio::time::sleep(
        (held + CHILD_LEASE + Duration::from_millis(500)).saturating_duration_since(Instant::now()),
    )
    .await;
    let late = stores.inbox.claim_unclaimed(&worker, &me, 10).await.unwrap();
    // Each claim takes its messages oldest first; together they take every one, once.
    for batch in [&early, &late] {
        let order: Vec<MessageId> = batch.iter().map(|m| m.id).collect();
        assert!(order.is_sorted(), "a batch is claimed oldest first: {order:?}");
    }
    let mut taken: Vec<InboxMessage> = early.into_iter().chain(late).collect();
    taken.sort_by_key(|m| m.id);
    assert_eq!(taken.iter().map(|m| m.id).collect::<Vec<_>>(), oldest_first);
    assert!(taken.iter().all(|m| m.deliveries == 1 && m.claimed_by == Some(me.session)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_of_a_killed_process_become_claimable_when_their_leases_lapse() {
    let dir = tempfile::tempdir().unwrap();
    let (stores, worker, ids) = seeded(dir.path(), 5).await;
    let mut child = spawn_child("claim-and-renew", dir.path());
    std::fs::write(dir.path().join("go"), b"").unwrap();
    assert_eq!(held_claims(&mut child), ids);
    // Well past the lease: the child's renewals keep its claims.
    tokio::time::sleep(CHILD_LEASE * 2).await;
    assert!(
        stores.inbox.get_unclaimed(&worker).await.unwrap().is_empty(),
        "claims whose holder renews them hold past their first lease"
    );

    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    assert!(
        stores.inbox.get_unclaimed(&worker).await.unwrap().is_empty(),
        "nothing asks whether the holder's pid lives: the claims hold until their lease lapses"
    );
    let deadline = Instant::now() + CHILD_LEASE * 4;
    let back = loop {
        let back: HashSet<_> =
            stores.inbox.get_unclaimed(&worker).await.unwrap().into_iter().map(|m| m.id).collect();
        if back == ids || Instant::now() > deadline {
            break back;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(back, ids, "every claim of the dead process is given back");
    let message = stores.inbox.get(&worker, ids.iter().next().unwrap()).await.unwrap();
    assert_eq!((message.claimed_by, message.deliveries, message.lease), (None, 1, None));
}

/// The child side of the tests above; a no-op when run as an ordinary test.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn child_claimer() {
    let Ok(role) = std::env::var(ROLE) else { return };
    let dir = std::path::PathBuf::from(std::env::var(DIR).unwrap());
    let deadline = Instant::now() + Duration::from_secs(30);
    while !dir.join("go").exists() {
        assert!(Instant::now() < deadline, "never told to go");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let stores = FsStore::open(&dir).unwrap().stores();
    let worker = AgentName::parse("worker").unwrap();
    // Five claims are taken well within a short lease; six hundred are not, and a lease that
    // lapses while its holder is still busy claiming is rightly taken by the other process.
    let lease = if role == "claim-and-renew" || role == "claim-batches-and-die" {
        CHILD_LEASE
    } else {
        Duration::from_secs(120)
    };
    let held = if role.starts_with("claim-batches") {
        claim_all(&stores, &worker, 8, lease, Claiming::Batches).await
    } else {
        claim_all(&stores, &worker, 8, lease, Claiming::OneByOne).await
    };
    for message in &held {
        println!("WON {}", message.id);
    }
    println!("HOLDING");
    // A holder renews its claims while it lives, as a turn does.
    let deadline = Instant::now() + Duration::from_secs(120);
    // A holder about to be killed does not renew: it hangs until the kill, as a stuck one.
    let renews = role != "claim-batches-and-die";
    while !dir.join("exit").exists() && Instant::now() < deadline {
        for message in held.iter().filter(|_| renews) {
            let token = message.lease.unwrap().token;
            stores.inbox.renew(&worker, &message.id, &token, lease_until(lease)).await.unwrap();
        }
        tokio::time::sleep(lease.min(CHILD_LEASE) / 5).await;
    }
}
