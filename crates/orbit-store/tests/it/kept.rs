//! Whole listings answered from kept bodies (`render`, `fs::index`, `fs::follow`): a process
//! that listed (and so kept a body, and holds the log it read) must answer what another
//! process changed since, at its very next listing, for every listing: the sessions of an
//! agent, its pending inbox, its tasks, and every agent's tasks. `here` and `there` below are
//! two `FsStore`s on one directory, each with its own indexes, kept bodies and file locks, as
//! two server processes have.

use std::time::Duration;

use orbit_store::render::{Body, Listing};
use orbit_store::{
    AgentName, Claimer, FsStore, InstanceId, MessageType, NewAgent, NewMessage, NewSession,
    NewTask, ScheduleType, SessionId, SessionPatch, Stores, TaskPatch, timestamp,
};

fn render<T: serde::Serialize>(record: &T) -> Vec<u8> {
    serde_json::to_vec(record).unwrap()
}

fn listing<T: serde::Serialize>() -> Listing<T> {
    Listing { open: "{\"records\":[", render, close: "]}" }
}

fn name(name: &str) -> AgentName {
    AgentName::parse(name).unwrap()
}

fn message(to: &AgentName, text: &str) -> NewMessage {
    NewMessage {
        from_agent: name("sender").into(),
        to_agent: to.clone(),
        message: text.to_owned(),
        message_type: MessageType::Request,
        request_id: None,
    }
}

fn task(prompt: &str) -> NewTask {
    NewTask {
        node: None,
        name: None,
        prompt: prompt.to_owned(),
        schedule_type: ScheduleType::Cron,
        schedule_value: "0 9 * * 1".into(),
        context_mode: Default::default(),
        timezone: None,
        next_run: None,
        worktree: false,
        branch: None,
    }
}

fn claimer() -> Claimer {
    Claimer {
        session: SessionId::new(),
        instance: InstanceId::new(),
        until: timestamp::now() + Duration::from_secs(60),
    }
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
/// makes one again under the same name (whose log is a new file, perhaps under a reused
/// inode): each listing here is what a store opened afresh lists.
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
    // Deleted here: let go at once.
    here.agents.delete(&agents[1]).await.unwrap();
    there.tasks.list_all_rendered(listing()).await.unwrap();
    there.sessions.list_rendered(&agents[1], listing()).await.unwrap_err();
    assert_eq!(deleted_files_held(dir.path()), Vec::<String>::new());
}
