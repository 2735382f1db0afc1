//! The contract every implementation of the store traits must pass.
//!
//! An implementation's tests call [`store_contract_tests!`](crate::store_contract_tests) with
//! a factory that returns fresh, empty [`Stores`] built with the given settings (the cases
//! count on them: dead letters after 3 deliveries, a few runs kept) and a guard that keeps
//! them alive:
//!
//! ```ignore
//! orbit_store::store_contract_tests!(|options| {
//!     let dir = tempfile::tempdir().unwrap();
//!     (orbit_store::FsStore::open_with(dir.path(), options).unwrap().stores(), dir)
//! });
//! ```
//!
//! Each case is a public async function, so a failing case names itself in the test output.

// This module is test code shipped behind a feature: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod approvals;
mod rendered;
mod transcripts;

pub use approvals::approvals_are_listed_while_they_wait;

pub use rendered::{
    rendered_detail_follows_its_session_and_messages, rendered_history_follows_its_messages,
    rendered_listings_follow_their_records,
};
pub use transcripts::{
    transcripts_append_and_page, transcripts_belong_to_their_session, transcripts_page_by_bytes,
};

use std::collections::HashSet;
use std::time::Duration;

use time::OffsetDateTime;
use time::macros::datetime;

use crate::{
    AgentName, AgentPatch, AgentStatus, ChangeCursor, Claimer, ContextMode, ErrorKind, FsOptions,
    InboxMessage, InstanceId, Lease, LeaseToken, MessageStatus, MessageType, NewAgent, NewMessage,
    NewSession, NewTask, NodeIdentity, PermissionMode, Role, RunOutcome, RunStart, RunStatus,
    ScheduleType, SessionId, SessionMessage, SessionPatch, Stores, TaskPatch, TaskStatus, Usage,
    timestamp,
};

/// A claimer whose lease runs for a minute.
fn claimer(session: SessionId) -> Claimer {
    Claimer { session, instance: InstanceId::new(), until: in_secs(60) }
}

fn in_secs(secs: i64) -> OffsetDateTime {
    timestamp::now() + time::Duration::seconds(secs)
}

fn token(message: &InboxMessage) -> LeaseToken {
    message.lease.expect("a claimed message carries its lease").token
}

/// How many runs a task keeps in every case: few, so that the bound is reached cheaply.
pub const RUNS_KEPT: usize = 8;

/// The settings the factory must build its stores with.
pub fn options() -> FsOptions {
    FsOptions { max_deliveries: 3, runs_kept: RUNS_KEPT }
}

/// Generates one `#[tokio::test]` per contract case for a store factory.
#[macro_export]
macro_rules! store_contract_tests {
    ($factory:expr) => {
        $crate::store_contract_tests!(@cases $factory;
            agents_lifecycle, sessions_lifecycle, session_messages, session_previews_and_day_cost, session_updates_do_not_lose_each_other,
            transcripts_append_and_page, transcripts_belong_to_their_session, transcripts_page_by_bytes,
            inbox_send_and_read, inbox_claim_is_exclusive, inbox_release_and_dead_letter, inbox_concurrent_claims,
            inbox_archive, inbox_filed_page, inbox_lapsed_lease_is_fenced, inbox_state_changes_never_undo_each_other,
            tasks_lifecycle, runs_lifecycle, runs_are_kept_to_a_bound, run_leases, run_expiry_follows_the_callers_clock, slots_fire_once_in_order, task_change_feed,
            deleting_an_agent_tells_the_feed_of_its_tasks, turn_aborts_go_with_the_hold,
            records_are_released_from_a_node_and_pinned_again,
            instances_register_and_beat, store_clock_agrees_with_this_one, instances_of_one_name_share_a_data_dir, approvals_are_listed_while_they_wait,
            main_session_is_chosen_once, deleted_agent_leaves_nothing,
            memory_days_and_search, invalid_input_is_refused, listings_page_by_cursor,
            rendered_listings_follow_their_records, rendered_history_follows_its_messages,
            rendered_detail_follows_its_session_and_messages);
    };
    (@cases $factory:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (stores, _guard) = ($factory)($crate::contract::options());
                $crate::contract::$case(&stores).await;
            }
        )*
    };
}

fn name(text: &str) -> AgentName {
    AgentName::parse(text).unwrap()
}

async fn agent(stores: &Stores, text: &str) -> AgentName {
    let agent = name(text);
    stores.agents.create(&agent, NewAgent::default()).await.unwrap();
    agent
}

fn request(from: &AgentName, to: &AgentName, text: &str) -> NewMessage {
    NewMessage {
        from_agent: from.clone().into(),
        to_agent: to.clone(),
        message: text.into(),
        message_type: MessageType::Request,
        request_id: None,
    }
}

/// Create, get, list, ensure, update, touch and delete agents.
pub async fn agents_lifecycle(stores: &Stores) {
    let bot = name("bot-a");
    let created = stores
        .agents
        .create(
            &bot,
            NewAgent {
                model: Some("m1".into()),
                permission_mode: Some(PermissionMode::Ask),
                ..NewAgent::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(created.permission_mode, PermissionMode::Ask);
    assert_eq!(created.status, AgentStatus::Active);
    assert_eq!(stores.agents.get(&bot).await.unwrap(), created);
    let again = stores.agents.create(&bot, NewAgent::default()).await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::Conflict);

    let other = name("bot-b");
    assert_eq!(stores.agents.get(&other).await.unwrap_err().kind(), ErrorKind::NotFound);
    let ensured = stores.agents.ensure(&other).await.unwrap();
    assert_eq!(ensured.permission_mode, PermissionMode::Safe);
    assert_eq!(stores.agents.ensure(&other).await.unwrap(), ensured);
    let names: Vec<_> = stores.agents.list().await.unwrap().into_iter().map(|a| a.name).collect();
    assert_eq!(names, vec![bot.clone(), other.clone()]);

    let updated = stores
        .agents
        .update(&bot, AgentPatch { status: Some(AgentStatus::Inactive), ..AgentPatch::default() })
        .await
        .unwrap();
    assert_eq!(updated.status, AgentStatus::Inactive);
    assert_eq!(updated.model.as_deref(), Some("m1"), "a patch leaves other fields alone");
    stores.agents.update_last_active(&bot).await.unwrap();
    assert!(stores.agents.get(&bot).await.unwrap().last_active_at >= created.last_active_at);

    let dir = stores.agents.working_dir(&bot).await.unwrap();
    assert!(matches!(&dir, crate::WorkingDir::Workspace(path) if path.is_dir()), "{dir:?}");

    // A workdir is the user's: used as it is, never made, never removed with the agent.
    let users = std::env::temp_dir().join(format!("orbit-contract-{}", crate::new_ulid()));
    std::fs::create_dir_all(&users).unwrap();
    std::fs::write(users.join("keep.txt"), "mine").unwrap();
    let workdir = crate::Workdir { path: users.clone(), root: None };
    let patch = AgentPatch { workdir: Some(Some(workdir.clone())), ..AgentPatch::default() };
    assert_eq!(stores.agents.update(&bot, patch).await.unwrap().workdir, Some(workdir.clone()));
    let dir = stores.agents.working_dir(&bot).await.unwrap();
    assert!(
        matches!(&dir, crate::WorkingDir::User(given, owner) if *given == workdir && owner.agent == bot),
        "{dir:?}"
    );
    let gone = crate::Workdir { path: users.join("gone"), root: None };
    let patch = AgentPatch { workdir: Some(Some(gone)), ..AgentPatch::default() };
    stores.agents.update(&bot, patch).await.unwrap();
    let err = stores.agents.working_dir(&bot).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert!(!users.join("gone").exists(), "a missing workdir is not made");
    // A workdir that now leads outside the root it was accepted under is refused at use.
    let root = users.canonicalize().unwrap().join("root");
    std::fs::create_dir_all(root.join("inside")).unwrap();
    let rooted = crate::Workdir { path: root.join("inside"), root: Some(root.clone()) };
    let patch = AgentPatch { workdir: Some(Some(rooted.clone())), ..AgentPatch::default() };
    stores.agents.update(&bot, patch).await.unwrap();
    let dir = stores.agents.working_dir(&bot).await.unwrap();
    assert!(matches!(&dir, crate::WorkingDir::User(given, _) if *given == rooted), "{dir:?}");
    std::fs::remove_dir(root.join("inside")).unwrap();
    std::os::unix::fs::symlink(&users, root.join("inside")).unwrap();
    let err = stores.agents.working_dir(&bot).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert!(err.to_string().contains("outside the workdir root"), "{err}");
    std::fs::remove_file(root.join("inside")).unwrap();
    std::fs::remove_dir(&root).unwrap();

    let patch = AgentPatch { workdir: Some(Some(workdir)), ..AgentPatch::default() };
    stores.agents.update(&bot, patch).await.unwrap();
    stores.agents.delete(&bot).await.unwrap();
    assert_eq!(std::fs::read_to_string(users.join("keep.txt")).unwrap(), "mine");
    std::fs::remove_dir_all(&users).unwrap();
    let bot_again = stores.agents.create(&bot, NewAgent::default()).await.unwrap();
    assert_eq!(bot_again.workdir, None, "nothing of the old agent reaches a new one");
    stores.agents.delete(&bot).await.unwrap();
    assert_eq!(stores.agents.get(&bot).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(stores.agents.delete(&bot).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(stores.agents.list().await.unwrap().len(), 1);
}

/// Sessions are made for existing agents only, listed newest first, updated and deleted.
pub async fn sessions_lifecycle(stores: &Stores) {
    let missing = name("ghost");
    let err = stores.sessions.create(&missing, NewSession::default()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);

    let bot = agent(stores, "bot").await;
    let first = stores
        .sessions
        .create(&bot, NewSession { title: Some("one".into()), ..NewSession::default() })
        .await
        .unwrap();
    let second = stores.sessions.create(&bot, NewSession::default()).await.unwrap();
    assert_eq!(first.message_count, 0);
    assert_eq!(first.last_message_at, None);
    let listed: Vec<SessionId> =
        stores.sessions.list_by_agent(&bot).await.unwrap().iter().map(|s| s.id).collect();
    assert_eq!(listed, vec![second.id, first.id], "newest first");

    let updated = stores
        .sessions
        .update(
            &bot,
            &first.id,
            SessionPatch {
                sdk_session_id: Some("cli-1".into()),
                add_cost_usd: Some(0.5),
                add_usage: Some(Usage { input_tokens: 10, output_tokens: 5, ..Usage::default() }),
                ..SessionPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.sdk_session_id.as_deref(), Some("cli-1"));
    assert_eq!(updated.title.as_deref(), Some("one"));
    let updated = stores
        .sessions
        .update(
            &bot,
            &first.id,
            SessionPatch {
                add_cost_usd: Some(0.25),
                add_usage: Some(Usage { input_tokens: 1, ..Usage::default() }),
                ..SessionPatch::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(updated.total_cost_usd, Some(0.75));
    assert_eq!(updated.usage.unwrap().input_tokens, 11);
    assert_eq!(stores.sessions.get(&bot, &first.id).await.unwrap(), updated);

    stores.sessions.delete(&bot, &first.id).await.unwrap();
    assert_eq!(stores.sessions.get(&bot, &first.id).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(
        stores.sessions.delete(&bot, &first.id).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let unknown = SessionId::new();
    let err = stores.sessions.update(&bot, &unknown, SessionPatch::default()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert_eq!(stores.sessions.list_by_agent(&bot).await.unwrap().len(), 1);
}

/// Messages append in order and keep `messageCount` and `lastMessageAt` right.
pub async fn session_messages(stores: &Stores) {
    let bot = agent(stores, "bot").await;
    let session = stores.sessions.create(&bot, NewSession::default()).await.unwrap();
    let user = SessionMessage::new(Role::User, "hello");
    let assistant = SessionMessage::new(Role::Assistant, "hi there");
    stores.sessions.append_message(&bot, &session.id, user.clone()).await.unwrap();
    stores.sessions.append_message(&bot, &session.id, assistant.clone()).await.unwrap();
    assert_eq!(
        stores.sessions.get_messages(&bot, &session.id).await.unwrap(),
        vec![user, assistant.clone()]
    );
    let session = stores.sessions.get(&bot, &session.id).await.unwrap();
    assert_eq!(session.message_count, 2);
    assert_eq!(session.last_message_at, Some(assistant.created_at));
    let err = stores
        .sessions
        .append_message(&bot, &SessionId::new(), SessionMessage::new(Role::User, "x"))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

/// A session keeps the start of its latest message and what its turns cost today.
pub async fn session_previews_and_day_cost(stores: &Stores) {
    let bot = agent(stores, "bot").await;
    let session = stores.sessions.create(&bot, NewSession::default()).await.unwrap();
    assert_eq!(session.last_message, None);
    assert_eq!(session.day_cost, None);
    let long = format!("first   line\n{}", "word ".repeat(100));
    for message in
        [SessionMessage::new(Role::User, "hello"), SessionMessage::new(Role::Assistant, &long)]
    {
        stores.sessions.append_message(&bot, &session.id, message).await.unwrap();
    }
    let listed = stores.sessions.list_by_agent(&bot).await.unwrap();
    let preview = listed[0].last_message.clone().expect("a preview of the latest message");
    assert_eq!(preview.role, Role::Assistant);
    assert!(preview.text.starts_with("first line word word"), "{preview:?}");
    assert!(preview.text.ends_with('…'), "a cut preview says so: {preview:?}");
    assert_eq!(preview.text.chars().count(), crate::MessagePreview::CHARS);

    for cost in [0.5, 0.25] {
        let patch = SessionPatch { add_cost_usd: Some(cost), ..SessionPatch::default() };
        stores.sessions.update(&bot, &session.id, patch).await.unwrap();
    }
    let day_cost = stores.sessions.get(&bot, &session.id).await.unwrap().day_cost.unwrap();
    assert_eq!(day_cost.day, crate::DayCost::day_of(timestamp::now()));
    assert_eq!(day_cost.cost_usd, 0.75);
}

/// Concurrent updates of one session each land.
pub async fn session_updates_do_not_lose_each_other(stores: &Stores) {
    let bot = agent(stores, "bot").await;
    let session = stores.sessions.create(&bot, NewSession::default()).await.unwrap();
    let mut handles = Vec::new();
    for _ in 0..16 {
        let sessions = stores.sessions.clone();
        let bot = bot.clone();
        handles.push(tokio::spawn(async move {
            sessions
                .update(
                    &bot,
                    &session.id,
                    SessionPatch { add_cost_usd: Some(1.0), ..SessionPatch::default() },
                )
                .await
                .unwrap();
        }));
    }
    for handle in handles {
        handle.await.unwrap();
    }
    assert_eq!(stores.sessions.get(&bot, &session.id).await.unwrap().total_cost_usd, Some(16.0));
}

/// Sending, listing and reading single messages.
pub async fn inbox_send_and_read(stores: &Stores) {
    let a = agent(stores, "a").await;
    let b = agent(stores, "b").await;
    let err = stores.inbox.send(request(&a, &name("nobody"), "hi")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let sent = stores.inbox.send(request(&a, &b, "hello")).await.unwrap();
    assert_eq!(sent.status, MessageStatus::Pending);
    assert_eq!(sent.read_at, None);
    assert_eq!(stores.inbox.get(&b, &sent.id).await.unwrap(), sent);
    let reply = stores
        .inbox
        .send(NewMessage {
            message_type: MessageType::Response,
            request_id: Some(sent.id),
            ..request(&b, &a, "hello back")
        })
        .await
        .unwrap();
    assert_eq!(stores.inbox.get(&a, &reply.id).await.unwrap().request_id, Some(sent.id));
    assert_eq!(stores.inbox.get_pending(&b).await.unwrap(), vec![sent]);
    let err = stores.inbox.get(&b, &reply.id).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound, "messages belong to their recipient");
}

/// A claim is taken once; claimed messages stay pending but not unclaimed; read is filed.
pub async fn inbox_claim_is_exclusive(stores: &Stores) {
    let a = agent(stores, "a").await;
    let b = agent(stores, "b").await;
    let first = stores.inbox.send(request(&a, &b, "one")).await.unwrap();
    let second = stores.inbox.send(request(&a, &b, "two")).await.unwrap();
    let (s1, s2) = (SessionId::new(), SessionId::new());
    let held = stores.inbox.claim(&b, &first.id, &claimer(s1)).await.unwrap().unwrap();
    assert_eq!(held.claimed_by, Some(s1));
    assert!(stores.inbox.claim(&b, &first.id, &claimer(s2)).await.unwrap().is_none());
    assert!(stores.inbox.claim(&b, &first.id, &claimer(s1)).await.unwrap().is_none());

    let unclaimed: Vec<_> =
        stores.inbox.get_unclaimed(&b).await.unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(unclaimed, vec![second.id]);
    let pending = stores.inbox.get_pending(&b).await.unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].claimed_by, Some(s1));
    assert!(pending[0].claimed_at.is_some());
    assert_eq!(pending[0].deliveries, 0, "a claim alone is not a delivery");
    assert_eq!(pending[1].claimed_by, None);

    let err = stores.inbox.mark_read(&b, &first.id, &LeaseToken::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "only the holder's token marks it read");
    let read = stores.inbox.mark_read(&b, &first.id, &token(&held)).await.unwrap();
    assert_eq!(read.status, MessageStatus::Read);
    assert_eq!(stores.inbox.get(&b, &first.id).await.unwrap(), read);
    assert!(read.read_at.is_some() && read.lease.is_none());
    assert_eq!(stores.inbox.get_pending(&b).await.unwrap().len(), 1);
    assert!(
        stores.inbox.claim(&b, &first.id, &claimer(s2)).await.unwrap().is_none(),
        "a read message cannot be claimed"
    );
    let batch = stores.inbox.claim_unclaimed(&b, &claimer(s2), 10).await.unwrap();
    assert_eq!(batch.iter().map(|m| m.id).collect::<Vec<_>>(), vec![second.id]);
    assert!(stores.inbox.claim_unclaimed(&b, &claimer(s1), 10).await.unwrap().is_empty());
}

/// A released claim is claimable again; a release that never reached the model does not
/// count; after three failed deliveries the message is set aside as dead.
pub async fn inbox_release_and_dead_letter(stores: &Stores) {
    let a = agent(stores, "a").await;
    let b = agent(stores, "b").await;
    let message = stores.inbox.send(request(&a, &b, "flaky")).await.unwrap();
    let err = stores.inbox.release(&b, &message.id, &LeaseToken::new(), true).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    for _ in 0..5 {
        let held = stores.inbox.claim(&b, &message.id, &claimer(SessionId::new())).await.unwrap();
        let released = stores.inbox.release(&b, &message.id, &token(&held.unwrap()), false).await;
        assert_eq!(released.unwrap().deliveries, 0, "refused turns are not deliveries");
    }
    for delivery in 1..=3 {
        let held = stores.inbox.claim(&b, &message.id, &claimer(SessionId::new())).await.unwrap();
        let held = held.unwrap_or_else(|| panic!("delivery {delivery}"));
        let released = stores.inbox.release(&b, &message.id, &token(&held), true).await.unwrap();
        assert_eq!(released.deliveries, delivery);
    }
    let dead = stores.inbox.get(&b, &message.id).await.unwrap();
    assert_eq!(dead.status, MessageStatus::Dead);
    assert!(stores.inbox.get_unclaimed(&b).await.unwrap().is_empty());
    assert!(stores.inbox.get_pending(&b).await.unwrap().is_empty());
    assert_eq!(stores.inbox.list_dead(&b).await.unwrap(), vec![dead]);
}

/// Read and archived messages are listed newest first, a page at a time; pending and dead
/// ones are not.
pub async fn inbox_filed_page(stores: &Stores) {
    let a = agent(stores, "a").await;
    let b = agent(stores, "b").await;
    assert!(stores.inbox.filed_page(&b, None, 10).await.unwrap().is_empty());
    let mut filed = Vec::new();
    for index in 0..5 {
        let message = stores.inbox.send(request(&a, &b, &format!("m{index}"))).await.unwrap();
        if index % 2 == 0 {
            stores.inbox.archive(&b, &message.id).await.unwrap();
        } else {
            let held = stores.inbox.claim(&b, &message.id, &claimer(SessionId::new())).await;
            stores.inbox.mark_read(&b, &message.id, &token(&held.unwrap().unwrap())).await.unwrap();
        }
        filed.push(message.id);
    }
    let pending = stores.inbox.send(request(&a, &b, "still pending")).await.unwrap();
    filed.reverse();
    let first = stores.inbox.filed_page(&b, None, 2).await.unwrap();
    assert_eq!(first.iter().map(|m| m.id).collect::<Vec<_>>(), filed[..2]);
    assert_eq!(first[1].status, MessageStatus::Read);
    let rest = stores.inbox.filed_page(&b, Some(first[1].id), 10).await.unwrap();
    assert_eq!(rest.iter().map(|m| m.id).collect::<Vec<_>>(), filed[2..]);
    assert_eq!(rest[0].status, MessageStatus::Archived);
    assert!(rest.iter().all(|m| m.id != pending.id));
    let err = stores.inbox.filed_page(&name("nobody"), None, 10).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

/// Many tasks racing for the same messages: each message goes to exactly one.
pub async fn inbox_concurrent_claims(stores: &Stores) {
    let a = agent(stores, "a").await;
    let b = agent(stores, "b").await;
    let mut ids = HashSet::new();
    for index in 0..50 {
        ids.insert(stores.inbox.send(request(&a, &b, &format!("m{index}"))).await.unwrap().id);
    }
    let mut handles = Vec::new();
    for worker in 0..16 {
        let inbox = stores.inbox.clone();
        let b = b.clone();
        handles.push(tokio::spawn(async move {
            let me = claimer(SessionId::new());
            if worker % 2 == 0 {
                return inbox
                    .claim_unclaimed(&b, &me, 7)
                    .await
                    .unwrap()
                    .into_iter()
                    .map(|m| m.id)
                    .collect();
            }
            let mut won = Vec::new();
            for message in inbox.get_unclaimed(&b).await.unwrap() {
                if let Some(message) = inbox.claim(&b, &message.id, &me).await.unwrap() {
                    won.push(message.id);
                }
            }
            won
        }));
    }
    let mut claimed = Vec::new();
    for handle in handles {
        claimed.extend(handle.await.unwrap());
    }
    assert_eq!(claimed.len(), ids.len(), "every message claimed exactly once");
    assert_eq!(claimed.into_iter().collect::<HashSet<_>>(), ids);
}

/// Archiving files a message away, claimed or not, and never destroys it; the holder's
/// settling is refused afterwards; a read message is not archived over.
pub async fn inbox_archive(stores: &Stores) {
    let a = agent(stores, "a").await;
    let b = agent(stores, "b").await;
    let loose = stores.inbox.send(request(&a, &b, "loose")).await.unwrap();
    let held = stores.inbox.send(request(&a, &b, "held")).await.unwrap();
    let session = SessionId::new();
    let claim = stores.inbox.claim(&b, &held.id, &claimer(session)).await.unwrap().unwrap();
    assert_eq!(stores.inbox.archive(&b, &loose.id).await.unwrap().status, MessageStatus::Archived);
    stores.inbox.archive(&b, &held.id).await.unwrap();
    stores.inbox.archive(&b, &held.id).await.unwrap();
    for id in [loose.id, held.id] {
        assert_eq!(stores.inbox.get(&b, &id).await.unwrap().status, MessageStatus::Archived);
    }
    assert!(stores.inbox.get_pending(&b).await.unwrap().is_empty());
    for settle in [
        stores.inbox.mark_read(&b, &held.id, &token(&claim)).await.map(drop),
        stores.inbox.release(&b, &held.id, &token(&claim), true).await.map(drop),
        stores.inbox.renew(&b, &held.id, &token(&claim), in_secs(60)).await,
    ] {
        assert_eq!(settle.unwrap_err().kind(), ErrorKind::Conflict);
    }
    assert_eq!(stores.inbox.get(&b, &held.id).await.unwrap().status, MessageStatus::Archived);
    let err = stores.inbox.archive(&b, &crate::MessageId::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let read = stores.inbox.send(request(&a, &b, "read")).await.unwrap();
    let claim = stores.inbox.claim(&b, &read.id, &claimer(session)).await.unwrap().unwrap();
    stores.inbox.mark_read(&b, &read.id, &token(&claim)).await.unwrap();
    assert_eq!(stores.inbox.archive(&b, &read.id).await.unwrap_err().kind(), ErrorKind::Conflict);
    assert_eq!(stores.inbox.get(&b, &read.id).await.unwrap().status, MessageStatus::Read);
}

/// A claim whose lease lapsed is taken back (counting a delivery); its old holder can no
/// longer renew, release or mark it read, and a renewed lease keeps it.
pub async fn inbox_lapsed_lease_is_fenced(stores: &Stores) {
    let a = agent(stores, "a").await;
    let b = agent(stores, "b").await;
    let message = stores.inbox.send(request(&a, &b, "slow")).await.unwrap();
    let stale = Claimer { until: in_secs(-1), ..claimer(SessionId::new()) };
    let old = stores.inbox.claim(&b, &message.id, &stale).await.unwrap().unwrap();
    let unclaimed = stores.inbox.get_unclaimed(&b).await.unwrap();
    assert_eq!(unclaimed.len(), 1, "a lapsed claim is given back");
    assert_eq!(unclaimed[0].deliveries, 1, "its holder may have shown it to the model");
    let new =
        stores.inbox.claim(&b, &message.id, &claimer(SessionId::new())).await.unwrap().unwrap();
    assert_ne!(token(&old), token(&new));
    assert_eq!(
        stores.inbox.renew(&b, &message.id, &token(&old), in_secs(60)).await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    assert_eq!(
        stores.inbox.mark_read(&b, &message.id, &token(&old)).await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    assert_eq!(
        stores.inbox.release(&b, &message.id, &token(&old), true).await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    // The new holder renews past a lapse and keeps it.
    stores.inbox.renew(&b, &message.id, &token(&new), in_secs(60)).await.unwrap();
    assert!(stores.inbox.get_unclaimed(&b).await.unwrap().is_empty());
    assert!(
        stores.inbox.claim(&b, &message.id, &claimer(SessionId::new())).await.unwrap().is_none()
    );
    let read = stores.inbox.mark_read(&b, &message.id, &token(&new)).await.unwrap();
    assert_eq!((read.status, read.deliveries), (MessageStatus::Read, 2));
}

/// Claims, releases, reads and archives racing on the same messages: every message ends in
/// exactly one state, an archive that answered Ok left the message archived, and a settle
/// that answered Ok was not undone.
pub async fn inbox_state_changes_never_undo_each_other(stores: &Stores) {
    let a = agent(stores, "a").await;
    let b = agent(stores, "b").await;
    for round in 0..40 {
        let message = stores.inbox.send(request(&a, &b, &format!("r{round}"))).await.unwrap();
        let id = message.id;
        let holder = stores.inbox.clone();
        let archiver = stores.inbox.clone();
        let (b1, b2) = (b.clone(), b.clone());
        let settle = tokio::spawn(async move {
            let held = holder.claim(&b1, &id, &claimer(SessionId::new())).await.unwrap()?;
            let outcome = if round % 2 == 0 {
                holder.mark_read(&b1, &id, &token(&held)).await.map(|m| m.status)
            } else {
                holder.release(&b1, &id, &token(&held), true).await.map(|m| m.status)
            };
            outcome.ok()
        });
        let archive =
            tokio::spawn(async move { archiver.archive(&b2, &id).await.map(|m| m.status) });
        let (settled, archived) = (settle.await.unwrap(), archive.await.unwrap());
        let end = stores.inbox.get(&b, &id).await.unwrap();
        let pending: Vec<_> =
            stores.inbox.get_pending(&b).await.unwrap().into_iter().map(|m| m.id).collect();
        assert_eq!(pending.contains(&id), end.status == MessageStatus::Pending, "round {round}");
        match archived {
            Ok(_) => {
                assert_eq!(end.status, MessageStatus::Archived, "round {round}: archive said Ok")
            }
            Err(err) => {
                assert_eq!(err.kind(), ErrorKind::Conflict, "round {round}");
                assert_eq!(
                    settled,
                    Some(MessageStatus::Read),
                    "round {round}: only a read message refuses archiving"
                );
            }
        }
        if settled == Some(MessageStatus::Read) {
            assert_eq!(
                end.status,
                MessageStatus::Read,
                "round {round}: a read answered Ok stays read"
            );
        }
        if end.status == MessageStatus::Pending {
            stores.inbox.archive(&b, &id).await.unwrap();
        }
    }
    assert!(stores.inbox.get_pending(&b).await.unwrap().is_empty());
}

fn interval_task(prompt: &str) -> NewTask {
    NewTask {
        node: None,
        name: Some("check".into()),
        prompt: prompt.into(),
        schedule_type: ScheduleType::Interval,
        schedule_value: "60000".into(),
        context_mode: ContextMode::Isolated,
        timezone: None,
        next_run: Some(datetime!(2026-11-23 12:00 UTC)),
        worktree: false,
        branch: None,
    }
}

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

/// An abort asked of a session's turn is kept against the turn's hold, read at its renewal,
/// and goes with it; only a live hold takes one. A store that keeps no holds (one machine's,
/// whose pool knows its turns) takes none.
pub async fn turn_aborts_go_with_the_hold(stores: &Stores) {
    let a = agent(stores, "a").await;
    let session = stores.sessions.create(&a, NewSession::default()).await.unwrap();
    let sessions = &stores.sessions;
    let now = timestamp::now();
    let held = Lease::new(InstanceId::new(), in_secs(30));
    sessions.hold_turn(&a, &session.id, &held, now).await.unwrap();
    let other = Lease::new(InstanceId::new(), in_secs(30));
    let keeps_holds = sessions.hold_turn(&a, &session.id, &other, now).await.is_err();
    let renewed = sessions.renew_turn(&a, &session.id, &held.token, in_secs(30)).await.unwrap();
    assert!(!renewed.abort_requested, "nobody asked yet");
    let taken = sessions.request_turn_abort(&a, &session.id, timestamp::now()).await.unwrap();
    assert_eq!(taken.is_some(), keeps_holds, "a live hold takes the request, where kept");
    if let Some(token) = taken {
        assert_eq!(token, held.token, "and says which hold took it");
    }
    let renewed = sessions.renew_turn(&a, &session.id, &held.token, in_secs(30)).await.unwrap();
    assert_eq!(renewed.abort_requested, keeps_holds, "the holder learns it at its renewal");
    if !keeps_holds {
        return;
    }
    // The request was for that turn: the same node's next turn starts without it.
    let next = Lease::new(held.instance, in_secs(30));
    sessions.hold_turn(&a, &session.id, &next, timestamp::now()).await.unwrap();
    let renewed = sessions.renew_turn(&a, &session.id, &next.token, in_secs(30)).await.unwrap();
    assert!(!renewed.abort_requested, "a new turn's hold starts without the old request");
    sessions.release_turn(&a, &session.id, &next.token).await.unwrap();
    let none = sessions.request_turn_abort(&a, &session.id, timestamp::now()).await.unwrap();
    assert_eq!(none, None, "no turn runs: nothing takes the request");
    // A hold whose lease lapsed (its node died) runs nothing either.
    let lapsed = Lease::new(InstanceId::new(), in_secs(5));
    sessions.hold_turn(&a, &session.id, &lapsed, timestamp::now()).await.unwrap();
    let none = sessions.request_turn_abort(&a, &session.id, in_secs(10)).await.unwrap();
    assert_eq!(none, None, "a lapsed hold takes no request");
    let missing = sessions.request_turn_abort(&a, &SessionId::new(), timestamp::now()).await;
    assert_eq!(missing.unwrap(), None, "an unknown session runs nothing");
}

/// A node gone for good releases what was pinned to it: a session loses its pin and its
/// worktree and says where it was; a task loses its pin, and is pinned again by the node
/// that makes its next worktree (once: a pinned task keeps its node). Records pinned
/// elsewhere are left alone.
pub async fn records_are_released_from_a_node_and_pinned_again(stores: &Stores) {
    let a = agent(stores, "a").await;
    let pinned = |node: &str| NewSession {
        worktree_id: Some(crate::new_ulid().to_string()),
        node: Some(node.into()),
        ..NewSession::default()
    };
    let lost = stores.sessions.create(&a, pinned("gone")).await.unwrap();
    let kept = stores.sessions.create(&a, pinned("alive")).await.unwrap();
    let release = || SessionPatch { release_from: Some("gone".into()), ..SessionPatch::default() };
    let released = stores.sessions.update(&a, &lost.id, release()).await.unwrap();
    assert_eq!((released.node, released.worktree_id), (None, None));
    assert_eq!(released.released_from.as_deref(), Some("gone"));
    let read = stores.sessions.get(&a, &lost.id).await.unwrap();
    assert_eq!(read.released_from.as_deref(), Some("gone"), "kept");
    let untouched = stores.sessions.update(&a, &kept.id, release()).await.unwrap();
    assert_eq!(untouched.node.as_deref(), Some("alive"));
    assert_eq!(untouched.worktree_id, kept.worktree_id);
    assert_eq!(untouched.released_from, None);

    let worktree_task = NewTask { worktree: true, node: Some("gone".into()), ..interval_task("w") };
    let task = stores.tasks.create(&a, worktree_task).await.unwrap();
    let start = stores.tasks.changes_since(None).await.unwrap();
    let patch = TaskPatch { release_from: Some("gone".into()), ..TaskPatch::default() };
    let released = stores.tasks.update(&a, &task.id, patch).await.unwrap();
    assert_eq!(released.node, None);
    assert!(released.worktree, "it still works in a worktree, to be made anew");
    let seen = stores.tasks.changes_since(Some(start.cursor)).await.unwrap();
    assert_eq!(seen.changes.len(), 1, "the schedulers are told");
    let pin = |node: &str| TaskPatch { pin_to: Some(node.into()), ..TaskPatch::default() };
    let taken = stores.tasks.update(&a, &task.id, pin("b")).await.unwrap();
    assert_eq!(taken.node.as_deref(), Some("b"));
    let again = stores.tasks.update(&a, &task.id, pin("c")).await.unwrap();
    assert_eq!(again.node.as_deref(), Some("b"), "a pinned task keeps its node");
    let plain = stores.tasks.create(&a, interval_task("plain")).await.unwrap();
    let plain = stores.tasks.update(&a, &plain.id, pin("b")).await.unwrap();
    assert_eq!(plain.node, None, "a task without a worktree is pinned nowhere");
}

/// A store's clock, when it has one of its own, reads the time: on this one machine, the
/// same as this process's clock within a generous bound (a database server's clock is the
/// machine's). A store sharing this process's clock says so with `None`.
pub async fn store_clock_agrees_with_this_one(stores: &Stores) {
    let before = OffsetDateTime::now_utc();
    let clock = stores.instances.clock().await.unwrap();
    let after = OffsetDateTime::now_utc();
    if let Some(clock) = clock {
        let slack = time::Duration::seconds(2);
        assert!(
            before - slack <= clock && clock <= after + slack,
            "the store's clock reads {clock}, this process's {before}..{after}"
        );
    }
    // Read twice, it does not go back.
    if let (Some(first), Some(second)) = (clock, stores.instances.clock().await.unwrap()) {
        assert!(first <= second, "the store's clock went back from {first} to {second}");
    }
}

/// Instances register under fresh ids, beat, list and deregister; where each is reached is
/// kept through all of it.
pub async fn instances_register_and_beat(stores: &Stores) {
    let node = node_identity("node-a", "dir-1");
    let address = "http://127.0.0.1:3001";
    let first = stores
        .instances
        .register(InstanceId::new(), "host-a", 1, &node, Some(address), in_secs(15))
        .await
        .unwrap();
    let second = stores
        .instances
        .register(InstanceId::new(), "host-a", 1, &node, None, in_secs(15))
        .await
        .unwrap();
    assert_eq!(first.node.as_ref(), Some(&node), "the node is kept with the instance");
    assert_eq!(first.address.as_deref(), Some(address));
    assert_eq!(second.address, None, "an instance may have no address");
    assert_ne!(first.id, second.id, "the same pid twice is two instances");
    let beat = stores.instances.heartbeat(&first.id, in_secs(30)).await.unwrap();
    assert!(beat.until > first.until);
    assert_eq!(beat.address.as_deref(), Some(address), "a heartbeat keeps the address");
    let listed: HashSet<_> =
        stores.instances.list().await.unwrap().into_iter().map(|i| (i.id, i.address)).collect();
    let expected = [(first.id, Some(address.to_owned())), (second.id, None)];
    assert_eq!(listed, HashSet::from(expected), "the addresses read back as registered");
    stores.instances.deregister(&second.id).await.unwrap();
    assert_eq!(
        stores.instances.heartbeat(&second.id, in_secs(30)).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(stores.instances.list().await.unwrap().len(), 1);
}

fn node_identity(name: &str, data_dir: &str) -> NodeIdentity {
    NodeIdentity { name: name.into(), data_dir: data_dir.into() }
}

/// A node's name belongs to one data directory at a time: an instance of another directory
/// under a name that a live instance has is refused; processes of one directory share it,
/// and a lapsed instance (a node that died) holds the name no longer.
pub async fn instances_of_one_name_share_a_data_dir(stores: &Stores) {
    let register = |node: NodeIdentity, until| {
        let instances = stores.instances.clone();
        async move { instances.register(InstanceId::new(), "host", 1, &node, None, until).await }
    };
    let live = register(node_identity("worker", "dir-1"), in_secs(30)).await.unwrap();
    register(node_identity("worker", "dir-1"), in_secs(30)).await.expect("one directory, one name");
    register(node_identity("other", "dir-2"), in_secs(30)).await.expect("another name");
    let refused = register(node_identity("worker", "dir-2"), in_secs(30)).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Conflict, "{refused}");
    assert!(refused.to_string().contains("'worker'"), "the name is said: {refused}");
    assert!(refused.to_string().contains(&live.id.to_string()), "and who has it: {refused}");
    // Two starting at once on two directories: at most one gets the name.
    let (x, y) = tokio::join!(
        register(node_identity("racer", "dir-1"), in_secs(30)),
        register(node_identity("racer", "dir-2"), in_secs(30))
    );
    let outcomes = [&x, &y].map(|outcome| outcome.as_ref().map_err(crate::Error::kind));
    assert!(
        matches!(outcomes, [Ok(_), Err(ErrorKind::Conflict)] | [Err(ErrorKind::Conflict), Ok(_)]),
        "exactly one takes the name, the other is refused: {x:?} {y:?}"
    );
    // A lapsed instance's name is free.
    let lapsed = register(node_identity("gone", "dir-1"), in_secs(-1)).await.unwrap();
    let taker =
        register(node_identity("gone", "dir-2"), in_secs(30)).await.expect("the old node is gone");
    // ...and stays the taker's: the lapsed instance, come back, may not renew under it.
    let lost = stores.instances.heartbeat(&lapsed.id, in_secs(30)).await.unwrap_err();
    assert_eq!(lost.kind(), ErrorKind::Conflict, "{lost}");
    assert!(lost.to_string().contains(&taker.id.to_string()), "names the taker: {lost}");
    stores.instances.heartbeat(&taker.id, in_secs(30)).await.expect("the taker renews");
    let registered = stores.instances.list().await.unwrap();
    let old =
        registered.iter().find(|i| i.id == lapsed.id).expect("the refused renewal wrote nothing");
    assert!(old.until < timestamp::now(), "still lapsed: {old:?}");
    // Registering anew (as after a prune), it is refused as any newcomer would be.
    let again = register(node_identity("gone", "dir-1"), in_secs(30)).await.unwrap_err();
    assert_eq!(again.kind(), ErrorKind::Conflict, "{again}");
    // A lapsed instance whose name nobody took renews.
    let dozed = register(node_identity("dozer", "dir-1"), in_secs(-1)).await.unwrap();
    let woke = stores.instances.heartbeat(&dozed.id, in_secs(30)).await.expect("nobody took it");
    assert!(woke.live_at(timestamp::now()));
}

/// Two callers racing to make the agent's first main session agree on one.
pub async fn main_session_is_chosen_once(stores: &Stores) {
    let a = agent(stores, "a").await;
    let (one, two) = (SessionId::new(), SessionId::new());
    let (x, y) = tokio::join!(
        stores.agents.claim_main_session(&a, one, None),
        stores.agents.claim_main_session(&a, two, None)
    );
    let winner = x.unwrap();
    assert_eq!(winner, y.unwrap());
    assert!(winner == one || winner == two);
    assert_eq!(stores.agents.get(&a).await.unwrap().main_session_id, Some(winner));
    let replaced = stores.agents.claim_main_session(&a, two, Some(winner)).await.unwrap();
    assert_eq!(replaced, two, "a stale main session is replaced");
}

/// A deleted agent's sessions, inbox and tasks never reach a new agent of the same name, and
/// writes racing the deletion either land before it or fail.
pub async fn deleted_agent_leaves_nothing(stores: &Stores) {
    let a = agent(stores, "a").await;
    stores.sessions.create(&a, NewSession::default()).await.unwrap();
    stores.inbox.send(request(&a, &a, "old")).await.unwrap();
    stores.tasks.create(&a, interval_task("old")).await.unwrap();
    let mut writers = Vec::new();
    for _ in 0..8 {
        let sessions = stores.sessions.clone();
        let a = a.clone();
        writers.push(tokio::spawn(async move {
            let mut made = 0;
            while sessions.create(&a, NewSession::default()).await.is_ok() {
                made += 1;
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
            made
        }));
    }
    tokio::time::sleep(Duration::from_millis(20)).await;
    stores.agents.delete(&a).await.unwrap();
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(stores.agents.get(&a).await.unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(
        stores.sessions.create(&a, NewSession::default()).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    let again = agent(stores, "a").await;
    assert!(stores.sessions.list_by_agent(&again).await.unwrap().is_empty());
    assert!(stores.inbox.get_pending(&again).await.unwrap().is_empty());
    assert!(stores.tasks.list_by_agent(&again).await.unwrap().is_empty());
    assert!(stores.tasks.list_all().await.unwrap().is_empty());
}

/// Memory appends to the day's file and searches across days.
pub async fn memory_days_and_search(stores: &Stores) {
    let a = agent(stores, "a").await;
    let monday = datetime!(2026-11-23 09:30 UTC);
    let tuesday = datetime!(2026-11-24 10:00 UTC);
    stores.memory.append(&a, monday, "The deploy key is in the Vault").await.unwrap();
    stores.memory.append(&a, monday, "Lunch was fine").await.unwrap();
    stores.memory.append(&a, tuesday, "Rotated the deploy key").await.unwrap();
    let day = stores.memory.read_day(&a, monday.date()).await.unwrap().unwrap();
    assert!(day.contains("## 09:30:00 UTC") && day.contains("Lunch was fine"));
    assert_eq!(
        stores.memory.read_day(&a, datetime!(2026-01-01 0:00 UTC).date()).await.unwrap(),
        None
    );
    assert_eq!(stores.memory.list_days(&a).await.unwrap(), vec![monday.date(), tuesday.date()]);
    let hits = stores.memory.search(&a, "DEPLOY KEY", 10).await.unwrap();
    let texts: Vec<_> = hits.iter().map(|h| (h.date.as_str(), h.text.as_str())).collect();
    assert_eq!(
        texts,
        vec![
            ("2026-11-24", "Rotated the deploy key"),
            ("2026-11-23", "The deploy key is in the Vault")
        ]
    );
    assert_eq!(stores.memory.search(&a, "deploy", 1).await.unwrap().len(), 1);
}

/// Empty payloads are refused without touching anything.
pub async fn invalid_input_is_refused(stores: &Stores) {
    let a = agent(stores, "a").await;
    let err = stores.inbox.send(request(&a, &a, "  ")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    let err = stores.tasks.create(&a, interval_task("")).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    let err = stores.memory.search(&a, " ", 5).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert!(stores.inbox.get_pending(&a).await.unwrap().is_empty());
    assert!(stores.tasks.list_by_agent(&a).await.unwrap().is_empty());
}

/// Pages of the session, inbox and task listings: in the listing's order, `limit` at a time,
/// each after the cursor (the last id of the page before), together the whole listing.
pub async fn listings_page_by_cursor(stores: &Stores) {
    let agent = name("pager");
    stores.agents.create(&agent, NewAgent::default()).await.unwrap();
    for index in 0..5 {
        stores.sessions.create(&agent, NewSession::default()).await.unwrap();
        let message = NewMessage {
            from_agent: name("someone").into(),
            to_agent: agent.clone(),
            message: format!("message {index}"),
            message_type: MessageType::Request,
            request_id: None,
        };
        stores.inbox.send(message).await.unwrap();
        stores.tasks.create(&agent, interval_task(&format!("task {index}"))).await.unwrap();
    }
    // A message that is no longer pending is in no page.
    let archived = stores.inbox.get_pending(&agent).await.unwrap()[1].id;
    stores.inbox.archive(&agent, &archived).await.unwrap();

    let sessions: Vec<_> =
        stores.sessions.list_by_agent(&agent).await.unwrap().iter().map(|s| s.id).collect();
    let mut paged = Vec::new();
    let mut cursor = None;
    loop {
        let page = stores.sessions.list_page(&agent, cursor, 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        cursor = Some(last.id);
        paged.extend(page.iter().map(|s| s.id));
    }
    assert_eq!(paged, sessions, "session pages, newest first, make the whole listing");
    assert_eq!(sessions.len(), 5);

    let pending: Vec<_> =
        stores.inbox.get_pending(&agent).await.unwrap().iter().map(|m| m.id).collect();
    let mut paged = Vec::new();
    let mut cursor = None;
    loop {
        let page = stores.inbox.pending_page(&agent, cursor, 3).await.unwrap();
        assert!(page.len() <= 3);
        let Some(last) = page.last() else { break };
        cursor = Some(last.id);
        paged.extend(page.iter().map(|m| m.id));
    }
    assert_eq!(paged, pending, "inbox pages, oldest first, make the pending listing");
    assert_eq!(pending.len(), 4);
    assert!(!paged.contains(&archived));

    let tasks: Vec<_> =
        stores.tasks.list_by_agent(&agent).await.unwrap().iter().map(|t| t.id).collect();
    let mut paged = Vec::new();
    let mut cursor = None;
    loop {
        let page = stores.tasks.list_page(&agent, cursor, 2).await.unwrap();
        assert!(page.len() <= 2);
        let Some(last) = page.last() else { break };
        cursor = Some(last.id);
        paged.extend(page.iter().map(|t| t.id));
    }
    assert_eq!(paged, tasks, "task pages, oldest first, make the whole listing");
    assert_eq!(tasks.len(), 5);

    // A page of a store that holds nothing past the cursor is empty, and an unknown agent is
    // not found as in the listings.
    let newest_task = *tasks.last().unwrap();
    assert!(stores.tasks.list_page(&agent, Some(newest_task), 10).await.unwrap().is_empty());
    let unknown = name("nobody-here");
    assert_eq!(
        stores.sessions.list_page(&unknown, None, 1).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
    assert_eq!(
        stores.tasks.list_page(&unknown, None, 1).await.unwrap_err().kind(),
        ErrorKind::NotFound
    );
}
