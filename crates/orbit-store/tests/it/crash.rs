//! A writer process killed with SIGKILL at random moments, over and over: afterwards every
//! JSON file parses and every write the writer saw succeed is there.
//!
//! The writer is this test binary run again on `crash_writer_child`. It prints `ACK <kind>
//! <ids>` after each write returns Ok; the parent kills it after a random delay, then checks
//! every acknowledged write against the store and parses every file in the data directory.
//! Beside its sequential writes, the writer creates tasks and sends inbox messages from
//! several concurrent lanes, so that kills also cut writers sharing an arrivals file's
//! `fdatasync` (`fs::sync_rounds`).

use std::path::{Path, PathBuf};
use std::time::Duration;

use orbit_store::{
    AgentName, AgentPatch, FsStore, MessageId, MessageType, NewAgent, NewMessage, NewSession, Role,
    SessionId, SessionMessage, SessionPatch, Stores, TaskId,
};

use crate::children::{random_below, run_until_killed};

const DIR: &str = "ORBIT_STORE_CRASH_DIR";
const KILLS: usize = 120;
/// On a loaded machine many writers are killed before they write anything: rounds go on
/// past `KILLS`, up to this many, until the writers did enough to prove something.
const MAX_KILLS: usize = 4 * KILLS;

fn agent() -> AgentName {
    AgentName::parse("writer").unwrap()
}

#[derive(Default)]
struct Acked {
    sessions: Vec<SessionId>,
    messages: Vec<(SessionId, String)>,
    inbox: Vec<MessageId>,
    tasks: Vec<TaskId>,
    titles: Vec<(SessionId, String)>,
}

/// Runs the writer and kills it: every other round at a random moment from its start (store
/// opening and recovery included), the others at a random moment after its first write, so
/// that a loaded machine, where starting a process takes longer than the first window, still
/// sees writes cut.
fn run_writer_until_killed(dir: &Path, acked: &mut Acked, after_first_write: bool) {
    // Kill somewhere between start-up (or the first write) and well into the writing.
    let after = after_first_write.then_some("ACK ");
    let delay = Duration::from_millis(5 + random_below(60));
    for line in run_until_killed("crash::crash_writer_child", DIR, dir, after, delay) {
        // libtest prints `test <name> ... ` without a newline before the test's own output.
        let Some(start) = line.find("ACK ") else { continue };
        let parts: Vec<&str> = line[start..].split(' ').collect();
        match parts.as_slice() {
            ["ACK", "session", id] => acked.sessions.push(SessionId::parse(id).unwrap()),
            ["ACK", "message", id, text] => {
                acked.messages.push((SessionId::parse(id).unwrap(), (*text).to_owned()))
            }
            ["ACK", "inbox", id] => acked.inbox.push(MessageId::parse(id).unwrap()),
            ["ACK", "task", id] => acked.tasks.push(TaskId::parse(id).unwrap()),
            ["ACK", "title", id, title] => {
                acked.titles.push((SessionId::parse(id).unwrap(), (*title).to_owned()))
            }
            _ => {}
        }
    }
}

/// Every `.json` file parses; every complete `.jsonl` line but a torn last one parses.
fn assert_every_file_parses(dir: &Path) {
    let mut stack = vec![dir.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path: PathBuf = entry.unwrap().path();
            let name = path.file_name().unwrap().to_string_lossy().into_owned();
            if path.is_dir() {
                stack.push(path);
            } else if name.starts_with('.') {
                continue; // a temp file: never a record
            } else if name.ends_with(".json") {
                let bytes = std::fs::read(&path).unwrap();
                assert!(
                    serde_json::from_slice::<serde_json::Value>(&bytes).is_ok(),
                    "{} does not parse",
                    path.display()
                );
            }
        }
    }
}

/// The contents of a session's history file as it is on disk: its complete lines that parse,
/// which is what the store reads back.
fn history_on_disk(dir: &Path, id: &SessionId) -> Vec<String> {
    let path = dir.join("agents/writer/sessions").join(format!("{id}.jsonl"));
    let Ok(bytes) = std::fs::read(path) else { return Vec::new() };
    let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    bytes[..complete]
        .split(|b| *b == b'\n')
        .filter_map(|line| serde_json::from_slice::<SessionMessage>(line).ok())
        .map(|message| message.content)
        .collect()
}

async fn assert_acked_writes_present(dir: &Path, stores: &Stores, acked: &Acked) {
    let writer = agent();
    for id in &acked.sessions {
        stores.sessions.get(&writer, id).await.unwrap();
    }
    let mut by_session = std::collections::BTreeMap::<SessionId, Vec<&str>>::new();
    for (id, text) in &acked.messages {
        by_session.entry(*id).or_default().push(text);
    }
    for (id, texts) in by_session {
        // The raw state first: `get_messages` repairs a count that disagrees with the
        // history, so checking the count after it would check the repair, not the writes.
        let recorded = stores.sessions.get(&writer, &id).await.unwrap().message_count;
        let on_disk = history_on_disk(dir, &id);
        for text in &texts {
            assert!(
                on_disk.iter().any(|m| m == text),
                "acknowledged message {text} of {id} is lost"
            );
        }
        assert!(
            recorded >= texts.len() as u64,
            "{id}: {} appends were acknowledged but the count says {recorded}",
            texts.len()
        );
        let found = on_disk.len() as u64;
        assert!(
            recorded <= found && found - recorded <= 1,
            "{id}: the count says {recorded} and the history holds {found}: only the one append \
             the kill cut between its message and its count may be missing from the count"
        );
        let messages = stores.sessions.get_messages(&writer, &id).await.unwrap();
        assert_eq!(
            messages.iter().map(|m| &m.content).collect::<Vec<_>>(),
            on_disk.iter().collect::<Vec<_>>()
        );
        assert_eq!(
            stores.sessions.get(&writer, &id).await.unwrap().message_count,
            found,
            "{id}: reading the history repairs its count"
        );
    }
    for id in &acked.inbox {
        stores.inbox.get(&writer, id).await.unwrap();
    }
    for id in &acked.tasks {
        stores.tasks.get(&writer, id).await.unwrap();
    }
    // Only the last acknowledged title of a session must be there (later ones may land too).
    let mut last_titles = std::collections::HashMap::new();
    for (id, title) in &acked.titles {
        last_titles.insert(*id, title.clone());
    }
    for (id, title) in last_titles {
        let stored = stores.sessions.get(&writer, &id).await.unwrap().title.unwrap();
        assert!(
            stored.parse::<u64>().unwrap() >= title.parse::<u64>().unwrap(),
            "title {title} of {id} went back to {stored}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_survive_sigkill_at_random_moments() {
    let dir = tempfile::tempdir().unwrap();
    let stores = FsStore::open(dir.path()).unwrap().stores();
    stores.agents.create(&agent(), NewAgent::default()).await.unwrap();
    let mut total = Acked::default();
    for round in 0..MAX_KILLS {
        if round >= KILLS && total.messages.len() > KILLS {
            break;
        }
        let mut acked = Acked::default();
        run_writer_until_killed(dir.path(), &mut acked, round % 2 == 1);
        assert_acked_writes_present(dir.path(), &stores, &acked).await;
        if round % 20 == 0 {
            assert_every_file_parses(dir.path());
        }
        total.sessions.extend(acked.sessions);
        total.messages.extend(acked.messages);
        total.inbox.extend(acked.inbox);
        total.tasks.extend(acked.tasks);
    }
    assert_every_file_parses(dir.path());
    assert_acked_writes_present(dir.path(), &stores, &total).await;
    assert!(
        total.messages.len() > KILLS,
        "the writer did too little in {MAX_KILLS} rounds to prove anything: {}",
        total.messages.len()
    );
    assert!(!total.tasks.is_empty(), "the concurrent lanes were never acknowledged a task");
    // The store still works after all of that.
    let session = stores.sessions.create(&agent(), NewSession::default()).await.unwrap();
    stores
        .sessions
        .append_message(&agent(), &session.id, SessionMessage::new(Role::User, "after"))
        .await
        .unwrap();
}

/// The writer; a no-op when run as an ordinary test.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crash_writer_child() {
    let Ok(dir) = std::env::var(DIR) else { return };
    let stores = FsStore::open(dir).unwrap().stores();
    let writer = agent();
    for lane in 0..3 {
        let stores = stores.clone();
        tokio::spawn(async move {
            for n in 0u64.. {
                let task = crate::records::weekly_task(format!("lane {lane} task {n}"));
                let task = stores.tasks.create(&agent(), task).await.unwrap();
                println!("ACK task {}", task.id);
                let message =
                    crate::records::request(&agent(), &agent(), format!("lane {lane} note {n}"));
                let sent = stores.inbox.send(message).await.unwrap();
                println!("ACK inbox {}", sent.id);
            }
        });
    }
    let mut counter = 0u64;
    loop {
        let session = stores.sessions.create(&writer, NewSession::default()).await.unwrap();
        println!("ACK session {}", session.id);
        for _ in 0..5 {
            counter += 1;
            let text = format!("m{counter}");
            stores
                .sessions
                .append_message(&writer, &session.id, SessionMessage::new(Role::User, &text))
                .await
                .unwrap();
            println!("ACK message {} {text}", session.id);
            stores
                .sessions
                .update(
                    &writer,
                    &session.id,
                    SessionPatch { title: Some(counter.to_string()), ..SessionPatch::default() },
                )
                .await
                .unwrap();
            println!("ACK title {} {counter}", session.id);
        }
        let message = NewMessage {
            from_agent: writer.clone().into(),
            to_agent: writer.clone(),
            message: format!("note {counter}"),
            message_type: MessageType::Request,
            request_id: None,
        };
        let sent = stores.inbox.send(message).await.unwrap();
        println!("ACK inbox {}", sent.id);
        stores
            .agents
            .update(
                &writer,
                AgentPatch { model: Some(format!("model-{counter}")), ..AgentPatch::default() },
            )
            .await
            .unwrap();
    }
}
