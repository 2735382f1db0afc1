//! The inbox and task listings come from in-memory indexes kept current by change logs
//! (`fs::index`). These tests hold every listing of a store that has been listing all along
//! against a store opened afresh, which reads every file: with writers in other store
//! instances (each with its own indexes and file locks, as another process has), with a writer
//! process killed at random moments, and with the log removed or replaced.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use orbit_store::{AgentName, FsStore, NewAgent, NewMessage, Stores, TaskPatch};

const DIR: &str = "ORBIT_STORE_INDEX_DIR";

use crate::records::{claimer, request, weekly_task as task};

fn message(text: &str) -> NewMessage {
    request(&AgentName::parse("sender").unwrap(), &worker(), text)
}

fn worker() -> AgentName {
    AgentName::parse("worker").unwrap()
}

/// Every listing of `stores` equals that of a store opened afresh on `dir`. The whole
/// listings (kept bodies) are asked first, before any plain listing brings the indexes up to
/// date, so that a kept body answered without a refresh is what is checked.
async fn assert_listings_current(dir: &Path, stores: &Stores, moment: &str) {
    let fresh = FsStore::open(dir).unwrap().stores();
    let pending = fresh.inbox.get_pending(&worker()).await.unwrap();
    assert_eq!(
        text(stores.inbox.pending_rendered(&worker(), listing()).await.unwrap()),
        text(listing().write(&pending)),
        "pending inbox messages rendered {moment}"
    );
    let tasks = fresh.tasks.list_by_agent(&worker()).await.unwrap();
    assert_eq!(
        text(stores.tasks.list_rendered(&worker(), listing()).await.unwrap()),
        text(listing().write(&tasks)),
        "the agent's tasks rendered {moment}"
    );
    let tasks = fresh.tasks.list_all().await.unwrap();
    assert_eq!(
        text(stores.tasks.list_all_rendered(listing()).await.unwrap()),
        text(listing().write(&tasks)),
        "every task rendered {moment}"
    );
    assert_eq!(
        json(&stores.inbox.get_pending(&worker()).await.unwrap()),
        json(&fresh.inbox.get_pending(&worker()).await.unwrap()),
        "pending inbox messages {moment}"
    );
    assert_eq!(
        json(&stores.tasks.list_by_agent(&worker()).await.unwrap()),
        json(&fresh.tasks.list_by_agent(&worker()).await.unwrap()),
        "the agent's tasks {moment}"
    );
    assert_eq!(
        json(&stores.tasks.list_all().await.unwrap()),
        json(&fresh.tasks.list_all().await.unwrap()),
        "every task {moment}"
    );
}

fn render<T: serde::Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).unwrap()
}

fn listing<T: serde::Serialize>() -> orbit_store::render::Listing<T> {
    orbit_store::render::Listing { open: "[", render, close: "]" }
}

fn text(body: orbit_store::render::Body) -> String {
    String::from_utf8(body.to_vec()).unwrap()
}

/// Listings are compared as JSON, which shows where they differ.
fn json<T: serde::Serialize>(value: &T) -> serde_json::Value {
    serde_json::to_value(value).unwrap()
}

async fn with_agents(dir: &Path) -> Stores {
    let stores = FsStore::open(dir).unwrap().stores();
    for name in ["worker", "sender"] {
        let _ = stores.agents.create(&AgentName::parse(name).unwrap(), NewAgent::default()).await;
    }
    stores
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_stay_current_with_writers_in_other_stores() {
    let dir = tempfile::tempdir().unwrap();
    let reader = with_agents(dir.path()).await;
    let writers =
        [FsStore::open(dir.path()).unwrap().stores(), FsStore::open(dir.path()).unwrap().stores()];
    assert_listings_current(dir.path(), &reader, "at the start").await;
    let mut tasks = Vec::new();
    for step in 0..60usize {
        let writer = &writers[step % 2];
        match step % 6 {
            0 | 1 => {
                writer.inbox.send(message(&format!("job {step}"))).await.unwrap();
            }
            2 => {
                // Claim one, then settle it one of three ways.
                let claimed = writer.inbox.claim_unclaimed(&worker(), &claimer(), 1).await.unwrap();
                if let Some(claimed) = claimed.first() {
                    let token = claimed.lease.unwrap().token;
                    match step % 3 {
                        0 => drop(
                            writer.inbox.mark_read(&worker(), &claimed.id, &token).await.unwrap(),
                        ),
                        1 => drop(
                            writer
                                .inbox
                                .release(&worker(), &claimed.id, &token, false)
                                .await
                                .unwrap(),
                        ),
                        _ => drop(writer.inbox.archive(&worker(), &claimed.id).await.unwrap()),
                    }
                }
            }
            3 => tasks.push(
                writer.tasks.create(&worker(), task(format!("task {step}"))).await.unwrap().id,
            ),
            4 => {
                let id = tasks[step % tasks.len()];
                let patch = TaskPatch {
                    prompt: Some(format!("changed at {step}")),
                    ..TaskPatch::default()
                };
                writer.tasks.update(&worker(), &id, patch).await.unwrap();
            }
            _ => {
                if tasks.len() > 2 {
                    let id = tasks.remove(0);
                    writer.tasks.delete(&worker(), &id).await.unwrap();
                }
            }
        }
        assert_listings_current(dir.path(), &reader, &format!("after step {step}")).await;
        // The writers' own indexes too.
        assert_listings_current(dir.path(), writer, &format!("in the writer after step {step}"))
            .await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_removed_or_replaced_log_makes_readers_read_the_files_again() {
    let dir = tempfile::tempdir().unwrap();
    let reader = with_agents(dir.path()).await;
    let writer = FsStore::open(dir.path()).unwrap().stores();
    writer.inbox.send(message("one")).await.unwrap();
    writer.tasks.create(&worker(), task("one")).await.unwrap();
    assert_listings_current(dir.path(), &reader, "before the logs go").await;
    let inbox_log = dir.path().join("agents/worker/inbox/open.changes.jsonl");
    let tasks_log = dir.path().join("agents/worker/tasks.changes.jsonl");
    assert!(inbox_log.is_file() && tasks_log.is_file(), "the change logs are where the docs say");
    std::fs::remove_file(&inbox_log).unwrap();
    std::fs::remove_file(&tasks_log).unwrap();
    // Changes made while no log exists, then a log made anew, as a replaced one is.
    writer.inbox.send(message("two")).await.unwrap();
    writer.tasks.create(&worker(), task("two")).await.unwrap();
    assert_listings_current(dir.path(), &reader, "after the logs were made anew").await;
    assert_eq!(reader.inbox.get_pending(&worker()).await.unwrap().len(), 2);
    assert_eq!(reader.tasks.list_all().await.unwrap().len(), 2);
}

/// Runs the writer child until killed after a random delay, listing all along.
async fn run_writer_until_killed(dir: &Path, reader: &Stores, delay: Duration) -> usize {
    let mut child = Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "index::index_writer_child", "--nocapture", "--test-threads=1"])
        .env(DIR, dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let counting = std::thread::spawn(move || {
        BufReader::new(stdout).lines().map_while(Result::ok).filter(|l| l.contains("ACK")).count()
    });
    let until = std::time::Instant::now() + delay;
    while std::time::Instant::now() < until {
        reader.inbox.pending_rendered(&worker(), listing()).await.unwrap();
        reader.tasks.list_all_rendered(listing()).await.unwrap();
        reader.inbox.get_pending(&worker()).await.unwrap();
        reader.tasks.list_all().await.unwrap();
    }
    child.kill().unwrap();
    child.wait().unwrap();
    counting.join().unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn listings_stay_current_when_a_writer_process_is_killed() {
    let dir = tempfile::tempdir().unwrap();
    let reader = with_agents(dir.path()).await;
    let mut acked = 0;
    for round in 0..12u64 {
        acked +=
            run_writer_until_killed(dir.path(), &reader, Duration::from_millis(30 + 23 * round))
                .await;
        assert_listings_current(dir.path(), &reader, &format!("after kill {round}")).await;
    }
    assert!(acked > 0, "the writer never wrote: the test proved nothing");
}

/// The writer; a no-op when run as an ordinary test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn index_writer_child() {
    let Ok(dir) = std::env::var(DIR) else { return };
    let stores = FsStore::open(dir).unwrap().stores();
    let mut step = 0u64;
    loop {
        step += 1;
        stores.inbox.send(message(&format!("job {step}"))).await.unwrap();
        if let Some(claimed) =
            stores.inbox.claim_unclaimed(&worker(), &claimer(), 1).await.unwrap().first()
            && step.is_multiple_of(2)
        {
            stores
                .inbox
                .mark_read(&worker(), &claimed.id, &claimed.lease.unwrap().token)
                .await
                .unwrap();
        }
        let task = stores.tasks.create(&worker(), task(format!("task {step}"))).await.unwrap();
        if step.is_multiple_of(3) {
            stores.tasks.delete(&worker(), &task.id).await.unwrap();
        } else {
            let patch =
                TaskPatch { prompt: Some(format!("changed {step}")), ..TaskPatch::default() };
            stores.tasks.update(&worker(), &task.id, patch).await.unwrap();
        }
        println!("ACK {step}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_unreadable_record_does_not_fail_the_listings() {
    let dir = tempfile::tempdir().unwrap();
    let stores = with_agents(dir.path()).await;
    stores.inbox.send(message("one")).await.unwrap();
    stores.tasks.create(&worker(), task("one")).await.unwrap();
    assert_listings_current(dir.path(), &stores, "before").await;
    // Directories by record names: reading them fails with an I/O error, as a file the
    // server may not read (made by root) does.
    std::fs::create_dir(dir.path().join("agents/worker/inbox/open/zzzz.json")).unwrap();
    std::fs::create_dir(dir.path().join("agents/worker/tasks/zzzz.json")).unwrap();
    stores.inbox.send(message("two")).await.unwrap();
    stores.tasks.create(&worker(), task("two")).await.unwrap();
    assert_eq!(stores.inbox.get_pending(&worker()).await.unwrap().len(), 2);
    assert_eq!(stores.tasks.list_all().await.unwrap().len(), 2);
    assert_listings_current(dir.path(), &stores, "with an unreadable record").await;
}

/// Claims pick their messages from the index, so what a crash or damage left in `open/` that
/// is not a pending message reaches them through the index too: a message rewritten as read
/// whose move a crash cut short (its log line written, as a writer writes it first) is moved
/// to `archive/` by the next claim of a store that had read the directory before, and a file
/// that does not parse is set aside in `dead/` by a store that reads the directory afresh.
/// Neither is ever claimed, and the claims go on, oldest first.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn claims_move_on_what_a_crash_or_damage_left_in_open() {
    let dir = tempfile::tempdir().unwrap();
    let stores = with_agents(dir.path()).await;
    let mut sent = Vec::new();
    for text in ["one", "two", "three"] {
        sent.push(stores.inbox.send(message(text)).await.unwrap().id);
    }
    let me = claimer();
    let first = stores.inbox.claim_unclaimed(&worker(), &me, 1).await.unwrap();
    assert_eq!(first.iter().map(|m| m.id).collect::<Vec<_>>(), [sent[0]]);

    let inbox = dir.path().join("agents/worker/inbox");
    let file = inbox.join(format!("open/{}.json", sent[1]));
    let mut closed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    closed["status"] = "read".into();
    let mut log =
        std::fs::OpenOptions::new().append(true).open(inbox.join("open.changes.jsonl")).unwrap();
    std::io::Write::write_all(&mut log, format!("{{\"changed\":\"{}\"}}\n", sent[1]).as_bytes())
        .unwrap();
    std::fs::write(&file, serde_json::to_vec(&closed).unwrap()).unwrap();

    let next = stores.inbox.claim_unclaimed(&worker(), &me, 5).await.unwrap();
    assert_eq!(next.iter().map(|m| m.id).collect::<Vec<_>>(), [sent[2]], "the read one is not");
    assert!(!file.exists(), "the read message was left in open/");
    assert!(inbox.join(format!("archive/{}.json", sent[1])).is_file());

    let damaged = inbox.join("open/00000000000000000000000000.json");
    std::fs::write(&damaged, b"{not json").unwrap();
    let fresh = FsStore::open(dir.path()).unwrap().stores();
    assert!(fresh.inbox.claim_unclaimed(&worker(), &me, 5).await.unwrap().is_empty());
    assert!(!damaged.exists(), "the damaged file was left in open/");
    assert!(inbox.join("dead/00000000000000000000000000.json.corrupt").is_file());
    // Both stores' indexes follow the moves: the listings still hold only what is pending.
    assert_listings_current(dir.path(), &stores, "after the claims moved them on").await;
    assert_listings_current(dir.path(), &fresh, "after the claims moved them on").await;
}

/// Sends three messages and builds the index of the worker's inbox (a listing reads them).
async fn three_indexed(
    stores: &Stores,
    dir: &Path,
) -> (Vec<orbit_store::MessageId>, Vec<std::path::PathBuf>) {
    let mut sent = Vec::new();
    for text in ["one", "two", "three"] {
        sent.push(stores.inbox.send(message(text)).await.unwrap().id);
    }
    assert_eq!(stores.inbox.get_unclaimed(&worker()).await.unwrap().len(), 3);
    let files =
        sent.iter().map(|id| dir.join(format!("agents/worker/inbox/open/{id}.json"))).collect();
    (sent, files)
}

/// A message file damaged after the index read it (bit rot: no log line says so) does not
/// fail the claims of the agent: it is set aside in `dead/` and the others are claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_damaged_after_indexing_is_set_aside_and_the_rest_claimed() {
    let dir = tempfile::tempdir().unwrap();
    let stores = with_agents(dir.path()).await;
    let (sent, files) = three_indexed(&stores, dir.path()).await;
    std::fs::write(&files[0], b"{not json").unwrap();
    let claimed = stores.inbox.claim_unclaimed(&worker(), &claimer(), 5).await.unwrap();
    assert_eq!(claimed.iter().map(|m| m.id).collect::<Vec<_>>(), sent[1..]);
    let dead = dir.path().join(format!("agents/worker/inbox/dead/{}.json.corrupt", sent[0]));
    assert!(dead.is_file(), "the damaged file is set aside");
    assert!(stores.inbox.get_unclaimed(&worker()).await.unwrap().is_empty());
}

/// A batch of one is not cut short by a damaged oldest message: the claim chooses again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_damaged_oldest_message_does_not_leave_a_batch_of_one_empty() {
    let dir = tempfile::tempdir().unwrap();
    let stores = with_agents(dir.path()).await;
    let (sent, files) = three_indexed(&stores, dir.path()).await;
    std::fs::write(&files[0], b"{not json").unwrap();
    for expected in &sent[1..] {
        let claimed = stores.inbox.claim_unclaimed(&worker(), &claimer(), 1).await.unwrap();
        assert_eq!(claimed.iter().map(|m| m.id).collect::<Vec<_>>(), [*expected]);
    }
    assert!(stores.inbox.claim_unclaimed(&worker(), &claimer(), 1).await.unwrap().is_empty());
}

/// A file that cannot be read (a directory by its name here; EIO or EACCES in life) is
/// skipped by every claim, and not listed as unclaimed; once readable it is claimed again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_unreadable_after_indexing_is_skipped_until_it_can_be_read() {
    let dir = tempfile::tempdir().unwrap();
    let stores = with_agents(dir.path()).await;
    let (sent, files) = three_indexed(&stores, dir.path()).await;
    let kept = std::fs::read(&files[0]).unwrap();
    std::fs::remove_file(&files[0]).unwrap();
    std::fs::create_dir(&files[0]).unwrap();
    for expected in &sent[1..] {
        let claimed = stores.inbox.claim_unclaimed(&worker(), &claimer(), 1).await.unwrap();
        assert_eq!(claimed.iter().map(|m| m.id).collect::<Vec<_>>(), [*expected]);
    }
    assert!(stores.inbox.get_unclaimed(&worker()).await.unwrap().is_empty());
    std::fs::remove_dir(&files[0]).unwrap();
    std::fs::write(&files[0], kept).unwrap();
    let claimed = stores.inbox.claim_unclaimed(&worker(), &claimer(), 1).await.unwrap();
    assert_eq!(claimed.iter().map(|m| m.id).collect::<Vec<_>>(), [sent[0]]);
}

/// `get_unclaimed` reads the files it answers: a message damaged unlogged is not reported
/// as claimable (a loop "claim; if none, ask what is unclaimed" would never end).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unclaimed_listing_does_not_report_a_damaged_message() {
    let dir = tempfile::tempdir().unwrap();
    let stores = with_agents(dir.path()).await;
    let (sent, files) = three_indexed(&stores, dir.path()).await;
    std::fs::write(&files[1], b"{not json").unwrap();
    let unclaimed = stores.inbox.get_unclaimed(&worker()).await.unwrap();
    assert_eq!(unclaimed.iter().map(|m| m.id).collect::<Vec<_>>(), [sent[0], sent[2]]);
}

/// A file that did not parse, repaired by hand (no log line), is claimed again: the claim
/// that finds the stray pending names it in the log, and the index takes it back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stray_repaired_by_hand_is_claimed_again() {
    let dir = tempfile::tempdir().unwrap();
    let stores = with_agents(dir.path()).await;
    let (sent, files) = three_indexed(&stores, dir.path()).await;
    let kept = std::fs::read(&files[0]).unwrap();
    // Damaged before the first claim looks, and noted in the log as a rewrite would be, so
    // the index holds it as a stray; repaired unlogged before the claim moves it on.
    std::fs::write(&files[0], b"{not json").unwrap();
    let log = dir.path().join("agents/worker/inbox/open.changes.jsonl");
    let mut line = format!("{{\"changed\":\"{}\"}}\n", sent[0]).into_bytes();
    let mut all = std::fs::read(&log).unwrap();
    all.append(&mut line);
    std::fs::write(&log, all).unwrap();
    assert_eq!(stores.inbox.pending_page(&worker(), None, 10).await.unwrap().len(), 2);
    std::fs::write(&files[0], kept).unwrap();
    let claimed = stores.inbox.claim_unclaimed(&worker(), &claimer(), 5).await.unwrap();
    assert_eq!(claimed.iter().map(|m| m.id).collect::<Vec<_>>(), sent);
}
