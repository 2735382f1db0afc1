//! Whole listings answered from kept bodies (`render`, `fs::index`, `fs::follow`): a process
//! that listed (and so kept a body, and holds the log it read) must answer what another
//! process changed since, at its very next listing, for every listing: the sessions of an
//! agent, its pending inbox, its tasks, every agent's tasks, and one session with its history.
//! `here` and `there` below are
//! two `FsStore`s on one directory, each with its own indexes, kept bodies and file locks, as
//! two server processes have.

use std::time::Duration;

use orbit_store::render::{Body, Detail, Listing};
use orbit_store::{
    AgentName, FsStore, NewAgent, NewMessage, NewSession, Role, SessionId, SessionMessage,
    SessionPatch, Stores, TaskPatch,
};

use crate::records::{claimer, request, weekly_task as task};

fn message(to: &AgentName, text: &str) -> NewMessage {
    request(&name("sender"), to, text)
}

fn render<T: serde::Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).unwrap()
}

fn listing<T: serde::Serialize>() -> Listing<T> {
    Listing { open: "{\"records\":[", render, close: "]}" }
}

fn name(name: &str) -> AgentName {
    AgentName::parse(name).unwrap()
}

fn two_stores() -> (tempfile::TempDir, Stores, Stores) {
    let dir = tempfile::tempdir().unwrap();
    let here = FsStore::open(dir.path()).unwrap().stores();
    let there = FsStore::open(dir.path()).unwrap().stores();
    (dir, here, there)
}

/// Listed twice with nothing changed in between: the same buffer, not a copy.
fn assert_same_buffer(first: &Body, second: &Body, what: &str) {
    assert_eq!(first.as_ptr(), second.as_ptr(), "{what}: an unchanged listing was joined again");
}

#[tokio::test]
async fn the_sessions_of_an_agent_follow_another_process() {
    let (dir, here, there) = two_stores();
    let bot = name("bot");
    here.agents.create(&bot, NewAgent::default()).await.unwrap();
    let first = here.sessions.create(&bot, NewSession::default()).await.unwrap();
    let kept = here.sessions.list_rendered(&bot, listing()).await.unwrap();
    assert_same_buffer(
        &kept,
        &here.sessions.list_rendered(&bot, listing()).await.unwrap(),
        "sessions",
    );
    for step in 0..3 {
        match step {
            0 => drop(there.sessions.create(&bot, NewSession::default()).await.unwrap()),
            1 => {
                let patch = SessionPatch { title: Some("there".into()), ..SessionPatch::default() };
                there.sessions.update(&bot, &first.id, patch).await.unwrap();
            }
            _ => there.sessions.delete(&bot, &first.id).await.unwrap(),
        }
        let body = here.sessions.list_rendered(&bot, listing()).await.unwrap();
        let fresh = FsStore::open(dir.path()).unwrap().stores();
        let expected = listing().write(&fresh.sessions.list_by_agent(&bot).await.unwrap());
        assert_eq!(body, expected, "step {step}");
    }
}

fn detail() -> Detail<orbit_store::Session, SessionMessage> {
    Detail { open: "{\"session\":", head: render, parts: listing() }
}

/// A session with its history as a store without any kept body reads it.
async fn fresh_detail(dir: &std::path::Path, agent: &AgentName, id: &SessionId) -> Body {
    let fresh = FsStore::open(dir).unwrap().stores();
    let messages = fresh.sessions.get_messages(agent, id).await.unwrap();
    let session = fresh.sessions.get(agent, id).await.unwrap();
    detail().join(&session, &orbit_store::render::each(&messages, render))
}

/// One session read whole (`get_detail`): the body kept by this process is answered while
/// nothing changed, and never after another process appended a message, updated the session,
/// wrote a message without its count (a writer that died between the two), deleted the
/// session or deleted the agent.
#[tokio::test]
async fn a_session_with_its_history_follows_another_process() {
    let (dir, here, there) = two_stores();
    let bot = name("bot");
    here.agents.create(&bot, NewAgent::default()).await.unwrap();
    let session = here.sessions.create(&bot, NewSession::default()).await.unwrap();
    let id = session.id;
    let said = |text: &str| SessionMessage::new(Role::User, text.to_owned());
    here.sessions.append_message(&bot, &id, said("here")).await.unwrap();
    let kept = here.sessions.get_detail(&bot, &id, &detail()).await.unwrap();
    assert_eq!(kept, fresh_detail(dir.path(), &bot, &id).await);
    assert_same_buffer(
        &kept,
        &here.sessions.get_detail(&bot, &id, &detail()).await.unwrap(),
        "detail",
    );
    let history = dir.path().join(format!("agents/bot/sessions/{id}.jsonl"));
    for step in 0..4 {
        match step {
            0 => there.sessions.append_message(&bot, &id, said("there")).await.unwrap(),
            1 => {
                let patch = SessionPatch { title: Some("there".into()), ..SessionPatch::default() };
                there.sessions.update(&bot, &id, patch).await.unwrap();
            }
            2 => {
                let line = serde_json::to_string(&said("no count")).unwrap();
                append_line(&history, &line);
            }
            _ => here.sessions.append_message(&bot, &id, said("here again")).await.unwrap(),
        }
        let body = here.sessions.get_detail(&bot, &id, &detail()).await.unwrap();
        assert_eq!(body, fresh_detail(dir.path(), &bot, &id).await, "step {step}");
        let again = here.sessions.get_detail(&bot, &id, &detail()).await.unwrap();
        assert_eq!(again, body, "step {step}, read again");
    }
    let count = here.sessions.get(&bot, &id).await.unwrap().message_count;
    assert_eq!(count, 4, "every message counted, the one written without its count too");

    there.sessions.delete(&bot, &id).await.unwrap();
    let gone = here.sessions.get_detail(&bot, &id, &detail()).await.unwrap_err();
    assert_eq!(gone.kind(), orbit_store::ErrorKind::NotFound, "session deleted");

    let other = here.sessions.create(&bot, NewSession::default()).await.unwrap();
    here.sessions.get_detail(&bot, &other.id, &detail()).await.unwrap();
    there.agents.delete(&bot).await.unwrap();
    let gone = here.sessions.get_detail(&bot, &other.id, &detail()).await.unwrap_err();
    assert_eq!(gone.kind(), orbit_store::ErrorKind::NotFound, "agent deleted");
}

#[tokio::test]
async fn the_pending_inbox_follows_another_process() {
    let (dir, here, there) = two_stores();
    let bot = name("bot");
    here.agents.create(&bot, NewAgent::default()).await.unwrap();
    here.inbox.send(message(&bot, "first")).await.unwrap();
    let kept = here.inbox.pending_rendered(&bot, listing()).await.unwrap();
    assert_same_buffer(
        &kept,
        &here.inbox.pending_rendered(&bot, listing()).await.unwrap(),
        "inbox",
    );
    for step in 0..3 {
        match step {
            0 => drop(there.inbox.send(message(&bot, "second")).await.unwrap()),
            1 => drop(there.inbox.claim_unclaimed(&bot, &claimer(), 1).await.unwrap()),
            _ => {
                let pending = there.inbox.get_pending(&bot).await.unwrap();
                there.inbox.archive(&bot, &pending[0].id).await.unwrap();
            }
        }
        let body = here.inbox.pending_rendered(&bot, listing()).await.unwrap();
        let fresh = FsStore::open(dir.path()).unwrap().stores();
        let expected = listing().write(&fresh.inbox.get_pending(&bot).await.unwrap());
        assert_eq!(body, expected, "step {step}");
    }
}

#[tokio::test]
async fn the_tasks_of_an_agent_follow_another_process() {
    let (dir, here, there) = two_stores();
    let bot = name("bot");
    here.agents.create(&bot, NewAgent::default()).await.unwrap();
    let first = here.tasks.create(&bot, task("first")).await.unwrap();
    let kept = here.tasks.list_rendered(&bot, listing()).await.unwrap();
    assert_same_buffer(&kept, &here.tasks.list_rendered(&bot, listing()).await.unwrap(), "tasks");
    for step in 0..3 {
        match step {
            0 => drop(there.tasks.create(&bot, task("second")).await.unwrap()),
            1 => {
                let patch = TaskPatch { prompt: Some("there".into()), ..TaskPatch::default() };
                there.tasks.update(&bot, &first.id, patch).await.unwrap();
            }
            _ => there.tasks.delete(&bot, &first.id).await.unwrap(),
        }
        let body = here.tasks.list_rendered(&bot, listing()).await.unwrap();
        let fresh = FsStore::open(dir.path()).unwrap().stores();
        let expected = listing().write(&fresh.tasks.list_by_agent(&bot).await.unwrap());
        assert_eq!(body, expected, "step {step}");
    }
}

/// Every agent's tasks, as another process changes tasks, makes agents, deletes them and
/// makes one again under the same name (whose log is a new file, a different inode: the old
/// one is held here until the check finds it replaced): each listing here is what a store
/// opened afresh lists.
#[tokio::test]
async fn every_agents_tasks_follow_another_process() {
    let (dir, here, there) = two_stores();
    let agents = [name("ann"), name("bob")];
    for agent in &agents {
        here.agents.create(agent, NewAgent::default()).await.unwrap();
        here.tasks.create(agent, task("first")).await.unwrap();
    }
    let kept = here.tasks.list_all_rendered(listing()).await.unwrap();
    assert_same_buffer(&kept, &here.tasks.list_all_rendered(listing()).await.unwrap(), "all tasks");
    let carl = name("carl");
    for step in 0..7 {
        match step {
            0 => drop(there.tasks.create(&agents[1], task("second")).await.unwrap()),
            1 => {
                let id = there.tasks.list_by_agent(&agents[0]).await.unwrap()[0].id;
                let patch = TaskPatch { prompt: Some("there".into()), ..TaskPatch::default() };
                there.tasks.update(&agents[0], &id, patch).await.unwrap();
            }
            2 => {
                there.agents.create(&carl, NewAgent::default()).await.unwrap();
                there.tasks.create(&carl, task("carl's")).await.unwrap();
            }
            3 => there.agents.delete(&agents[0]).await.unwrap(),
            4 => {
                there.agents.create(&agents[0], NewAgent::default()).await.unwrap();
                there.tasks.create(&agents[0], task("ann again")).await.unwrap();
            }
            5 => {
                let id = there.tasks.list_by_agent(&carl).await.unwrap()[0].id;
                there.tasks.delete(&carl, &id).await.unwrap();
            }
            _ => there.agents.delete(&carl).await.unwrap(),
        }
        let body = here.tasks.list_all_rendered(listing()).await.unwrap();
        let fresh = FsStore::open(dir.path()).unwrap().stores();
        let expected = listing().write(&fresh.tasks.list_all().await.unwrap());
        assert_eq!(body, expected, "step {step}");
        let again = here.tasks.list_all_rendered(listing()).await.unwrap();
        assert_same_buffer(&body, &again, &format!("all tasks after step {step}"));
    }
}

/// A change made in this process shows at once too, and a listing by another function or
/// frame is never answered a body kept for another.
#[tokio::test]
async fn a_kept_body_answers_only_its_own_listing_and_state() {
    let (_dir, here, _there) = two_stores();
    let bot = name("bot");
    here.agents.create(&bot, NewAgent::default()).await.unwrap();
    here.tasks.create(&bot, task("one")).await.unwrap();
    let one = here.tasks.list_rendered(&bot, listing()).await.unwrap();
    let other: Listing<orbit_store::Task> = Listing { open: "[", render, close: "]" };
    let framed = here.tasks.list_rendered(&bot, other).await.unwrap();
    assert_eq!(framed, other.write(&here.tasks.list_by_agent(&bot).await.unwrap()));
    here.tasks.create(&bot, task("two")).await.unwrap();
    let two = here.tasks.list_rendered(&bot, listing()).await.unwrap();
    assert_ne!(one, two);
    assert_eq!(two, listing().write(&here.tasks.list_by_agent(&bot).await.unwrap()));
}

/// Files of this test's directory that this process holds open though they were deleted.
fn deleted_files_held(dir: &std::path::Path) -> Vec<String> {
    let prefix = dir.to_string_lossy().into_owned();
    std::fs::read_dir("/proc/self/fd")
        .unwrap()
        .filter_map(|fd| std::fs::read_link(fd.ok()?.path()).ok())
        .map(|target| target.to_string_lossy().into_owned())
        .filter(|target| target.starts_with(&prefix) && target.ends_with(" (deleted)"))
        .collect()
}

/// The logs and journals held open for the one-`stat` check are let go when their agent is
/// deleted, here or by another process, so that deleted files are not kept open.
#[tokio::test]
async fn the_files_of_a_deleted_agent_are_not_held_open() {
    let (dir, here, there) = two_stores();
    let agents = [name("ann"), name("bob")];
    for agent in &agents {
        here.agents.create(agent, NewAgent::default()).await.unwrap();
        here.tasks.create(agent, task("one")).await.unwrap();
        here.sessions.create(agent, NewSession::default()).await.unwrap();
        here.sessions.list_rendered(agent, listing()).await.unwrap();
        here.inbox.send(message(agent, "one")).await.unwrap();
        here.inbox.pending_rendered(agent, listing()).await.unwrap();
    }
    here.tasks.list_all_rendered(listing()).await.unwrap();
    there.tasks.list_all_rendered(listing()).await.unwrap();
    there.sessions.list_rendered(&agents[1], listing()).await.unwrap();
    assert!(deleted_files_held(dir.path()).is_empty());

    // Deleted by the other store: let go at this store's next listings.
    there.agents.delete(&agents[0]).await.unwrap();
    here.tasks.list_all_rendered(listing()).await.unwrap();
    let gone = here.sessions.list_rendered(&agents[0], listing()).await.unwrap_err();
    assert_eq!(gone.kind(), orbit_store::ErrorKind::NotFound);
    let gone = here.inbox.pending_rendered(&agents[0], listing()).await.unwrap_err();
    assert_eq!(gone.kind(), orbit_store::ErrorKind::NotFound);
    // Deleted here: let go at once.
    here.agents.delete(&agents[1]).await.unwrap();
    there.tasks.list_all_rendered(listing()).await.unwrap();
    there.sessions.list_rendered(&agents[1], listing()).await.unwrap_err();
    assert_eq!(deleted_files_held(dir.path()), Vec::<String>::new());
}

/// Appends `line` and a newline to `path`, as a writer of another process does.
fn append_line(path: &std::path::Path, line: &str) {
    let mut file = std::fs::OpenOptions::new().append(true).open(path).unwrap();
    std::io::Write::write_all(&mut file, format!("{line}\n").as_bytes()).unwrap();
}

/// The one pending message of `bot`, as its file holds it, with its id.
fn the_open_message(dir: &std::path::Path, bot: &AgentName) -> (String, String) {
    let open = dir.join("agents").join(bot.as_str()).join("inbox").join("open");
    let entry = std::fs::read_dir(&open).unwrap().next().unwrap().unwrap().path();
    let id = entry.file_stem().unwrap().to_string_lossy().into_owned();
    (id, std::fs::read_to_string(&entry).unwrap())
}

/// A record announced as new (its creator holds the lock only shared, so its line may come
/// before its file) turns the lock-free answer off until its file is found: the file may land
/// without another line, and a listing that trusted the unchanged log would miss it.
#[tokio::test]
async fn an_announced_record_is_looked_for_until_found_though_the_log_stays_still() {
    let (dir, here, _there) = two_stores();
    let bot = name("bot");
    here.agents.create(&bot, NewAgent::default()).await.unwrap();
    here.inbox.send(message(&bot, "first")).await.unwrap();
    here.inbox.pending_rendered(&bot, listing()).await.unwrap();

    // A creator elsewhere, midway: its line is written, its file not yet.
    let inbox = dir.path().join("agents/bot/inbox");
    let (first, record) = the_open_message(dir.path(), &bot);
    let second = orbit_store::MessageId::new().to_string();
    append_line(&inbox.join("open.changes.jsonl"), &format!("{{\"new\":\"{second}\"}}"));
    let body = here.inbox.pending_rendered(&bot, listing()).await.unwrap();
    assert_eq!(body, listing().write(&here.inbox.get_pending(&bot).await.unwrap()));

    // Its file lands, with no new line in the log.
    let temp = inbox.join(format!(".{second}.tmp"));
    std::fs::write(&temp, record.replace(&first, &second)).unwrap();
    std::fs::rename(&temp, inbox.join("open").join(format!("{second}.json"))).unwrap();
    let body = here.inbox.pending_rendered(&bot, listing()).await.unwrap();
    let fresh = FsStore::open(dir.path()).unwrap().stores();
    let pending = fresh.inbox.get_pending(&bot).await.unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(body, listing().write(&pending), "the announced message is missing");
}

/// Holds the lock file at `path` exclusively, as a writer of another process does.
fn lock_exclusively(path: &std::path::Path) -> std::fs::File {
    let file = std::fs::OpenOptions::new().write(true).create(true).truncate(false).open(path);
    let file = file.unwrap();
    file.lock().unwrap();
    file
}

/// A whole listing whose log has not grown answers without taking the lock (a writer holding
/// it does not hold the listing up); once a line was appended it waits for the lock, and then
/// answers the change the line announced.
#[tokio::test]
async fn a_listing_takes_no_lock_while_the_log_is_still_and_waits_once_it_grew() {
    let (dir, here, _there) = two_stores();
    let bot = name("bot");
    here.agents.create(&bot, NewAgent::default()).await.unwrap();
    here.inbox.send(message(&bot, "first")).await.unwrap();
    let kept = here.inbox.pending_rendered(&bot, listing()).await.unwrap();

    let inbox = dir.path().join("agents/bot/inbox");
    let lock = lock_exclusively(&inbox.join(".lock"));
    let listed =
        tokio::time::timeout(Duration::from_secs(30), here.inbox.pending_rendered(&bot, listing()))
            .await
            .expect("a listing of a still log waited for the inbox lock");
    assert_same_buffer(&kept, &listed.unwrap(), "inbox");

    // A writer, holding the lock, announces a change and makes it.
    let (id, record) = the_open_message(dir.path(), &bot);
    append_line(&inbox.join("open.changes.jsonl"), &format!("{{\"changed\":\"{id}\"}}"));
    let listing_now = {
        let here = here.clone();
        let bot = bot.clone();
        tokio::spawn(async move { here.inbox.pending_rendered(&bot, listing()).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!listing_now.is_finished(), "a listing answered past an announced change");
    let path = inbox.join("open").join(format!("{id}.json"));
    let temp = inbox.join(".rewritten.tmp");
    std::fs::write(&temp, record.replace("first", "rewritten")).unwrap();
    std::fs::rename(&temp, &path).unwrap();
    drop(lock);
    let body = listing_now.await.unwrap().unwrap();
    let pending = here.inbox.get_pending(&bot).await.unwrap();
    assert_eq!(pending[0].message, "rewritten");
    assert_eq!(body, listing().write(&pending));
}

/// The tasks of an agent, and every agent's tasks, answer without `tasks.lock` while the
/// agent's log has not grown (as the inbox above), and wait for it once a line was appended.
#[tokio::test]
async fn task_listings_take_no_lock_while_the_log_is_still() {
    let (dir, here, _there) = two_stores();
    let bot = name("bot");
    here.agents.create(&bot, NewAgent::default()).await.unwrap();
    here.tasks.create(&bot, task("one")).await.unwrap();
    let kept = here.tasks.list_rendered(&bot, listing()).await.unwrap();
    let kept_all = here.tasks.list_all_rendered(listing()).await.unwrap();
    let id = here.tasks.list_by_agent(&bot).await.unwrap()[0].id;

    let lock = lock_exclusively(&dir.path().join("agents/bot/tasks.lock"));
    let (listed, listed_all) = tokio::time::timeout(Duration::from_secs(30), async {
        let listed = here.tasks.list_rendered(&bot, listing()).await.unwrap();
        (listed, here.tasks.list_all_rendered(listing()).await.unwrap())
    })
    .await
    .expect("a listing of a still log waited for tasks.lock");
    assert_same_buffer(&kept, &listed, "tasks");
    assert_same_buffer(&kept_all, &listed_all, "all tasks");

    let log = dir.path().join("agents/bot/tasks.changes.jsonl");
    append_line(&log, &format!("{{\"changed\":\"{id}\"}}"));
    let listing_all = {
        let here = here.clone();
        tokio::spawn(async move { here.tasks.list_all_rendered(listing()).await })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(!listing_all.is_finished(), "every agent's tasks answered past an announced change");
    drop(lock);
    let body = listing_all.await.unwrap().unwrap();
    assert_eq!(body, listing().write(&here.tasks.list_by_agent(&bot).await.unwrap()));
}

/// Another process replaces the agent (deleted, made again under its name, a task created and
/// listed); this process's first listing after refreshes its index from the new directory's
/// log. A task created after that is in the next listing: the arrivals looked at are the new
/// directory's too, never a file held from the old one (the fourth review of the arrivals).
#[tokio::test]
async fn a_task_created_in_an_agent_replaced_by_another_process_is_listed() {
    let (dir, here, there) = two_stores();
    let bot = name("bot");
    here.agents.create(&bot, NewAgent::default()).await.unwrap();
    here.tasks.create(&bot, task("old")).await.unwrap();
    here.tasks.list_rendered(&bot, listing()).await.unwrap();
    here.tasks.list_rendered(&bot, listing()).await.unwrap();
    there.agents.delete(&bot).await.unwrap();
    there.agents.create(&bot, NewAgent::default()).await.unwrap();
    there.tasks.create(&bot, task("new")).await.unwrap();
    there.tasks.list_rendered(&bot, listing()).await.unwrap();
    here.tasks.list_rendered(&bot, listing()).await.unwrap();
    let answered = here.tasks.create(&bot, task("answered")).await.unwrap();
    let body = here.tasks.list_rendered(&bot, listing()).await.unwrap();
    let fresh = FsStore::open(dir.path()).unwrap().stores();
    let expected = listing().write(&fresh.tasks.list_by_agent(&bot).await.unwrap());
    assert_eq!(
        String::from_utf8_lossy(&body),
        String::from_utf8_lossy(&expected),
        "task {} answered before the listing",
        answered.id
    );
}

/// The same for a message sent, by the other process, to an agent it replaced.
#[tokio::test]
async fn a_message_sent_to_an_agent_replaced_by_another_process_is_listed() {
    let (dir, here, there) = two_stores();
    let bot = name("bot");
    here.agents.create(&bot, NewAgent::default()).await.unwrap();
    here.inbox.send(message(&bot, "old")).await.unwrap();
    here.inbox.pending_rendered(&bot, listing()).await.unwrap();
    here.inbox.pending_rendered(&bot, listing()).await.unwrap();
    there.agents.delete(&bot).await.unwrap();
    there.agents.create(&bot, NewAgent::default()).await.unwrap();
    there.inbox.send(message(&bot, "new")).await.unwrap();
    there.inbox.pending_rendered(&bot, listing()).await.unwrap();
    here.inbox.pending_rendered(&bot, listing()).await.unwrap();
    there.inbox.send(message(&bot, "answered")).await.unwrap();
    let body = here.inbox.pending_rendered(&bot, listing()).await.unwrap();
    let fresh = FsStore::open(dir.path()).unwrap().stores();
    let expected = listing().write(&fresh.inbox.get_pending(&bot).await.unwrap());
    assert_eq!(String::from_utf8_lossy(&body), String::from_utf8_lossy(&expected));
}
