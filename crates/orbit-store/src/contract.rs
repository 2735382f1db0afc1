//! The contract every implementation of the store traits must pass.
//!
//! An implementation's tests call [`store_contract_tests!`](crate::store_contract_tests) with
//! a factory that returns fresh, empty [`Stores`] and a guard that keeps them alive:
//!
//! ```ignore
//! orbit_store::store_contract_tests!(|| {
//!     let dir = tempfile::tempdir().unwrap();
//!     (orbit_store::FsStore::open(dir.path()).unwrap().stores(), dir)
//! });
//! ```
//!
//! Each case is a public async function, so a failing case names itself in the test output.

// This module is test code shipped behind a feature: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;

use time::macros::datetime;

use crate::{
    AgentName, AgentPatch, AgentStatus, ContextMode, ErrorKind, MessageStatus, MessageType,
    NewAgent, NewMessage, NewSession, NewTask, PermissionMode, Role, RunOutcome, RunStatus,
    ScheduleType, SessionId, SessionMessage, SessionPatch, Stores, TaskPatch, TaskStatus, Usage,
};

/// Generates one `#[tokio::test]` per contract case for a store factory.
#[macro_export]
macro_rules! store_contract_tests {
    ($factory:expr) => {
        $crate::store_contract_tests!(@cases $factory;
            agents_lifecycle, sessions_lifecycle, session_messages, session_updates_do_not_lose_each_other,
            inbox_send_and_read, inbox_claim_is_exclusive, inbox_release_and_dead_letter, inbox_concurrent_claims,
            inbox_archive, tasks_lifecycle, runs_lifecycle, memory_days_and_search, invalid_input_is_refused);
    };
    (@cases $factory:expr; $($case:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
            async fn $case() {
                let (stores, _guard) = ($factory)();
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
        from_agent: from.clone(),
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
            NewAgent { model: Some("m1".into()), permission_mode: Some(PermissionMode::Ask) },
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
    assert!(dir.is_dir());
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
    assert!(stores.inbox.claim(&b, &first.id, &s1).await.unwrap());
    assert!(!stores.inbox.claim(&b, &first.id, &s2).await.unwrap());
    assert!(!stores.inbox.claim(&b, &first.id, &s1).await.unwrap());

    let unclaimed: Vec<_> =
        stores.inbox.get_unclaimed(&b).await.unwrap().into_iter().map(|m| m.id).collect();
    assert_eq!(unclaimed, vec![second.id]);
    let pending = stores.inbox.get_pending(&b).await.unwrap();
    assert_eq!(pending.len(), 2);
    assert_eq!(pending[0].claimed_by, Some(s1));
    assert!(pending[0].claimed_at.is_some());
    assert_eq!(pending[1].claimed_by, None);

    let err = stores.inbox.mark_read(&b, &first.id, &s2).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict, "only the holder marks it read");
    stores.inbox.mark_read(&b, &first.id, &s1).await.unwrap();
    let read = stores.inbox.get(&b, &first.id).await.unwrap();
    assert_eq!(read.status, MessageStatus::Read);
    assert!(read.read_at.is_some());
    assert_eq!(stores.inbox.get_pending(&b).await.unwrap().len(), 1);
    assert!(
        !stores.inbox.claim(&b, &first.id, &s2).await.unwrap(),
        "a read message cannot be claimed"
    );
}

/// A released claim is claimable again; after three deliveries it is set aside as dead.
pub async fn inbox_release_and_dead_letter(stores: &Stores) {
    let a = agent(stores, "a").await;
    let b = agent(stores, "b").await;
    let message = stores.inbox.send(request(&a, &b, "flaky")).await.unwrap();
    let err = stores.inbox.release(&b, &message.id, &SessionId::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Conflict);
    for delivery in 1..=3 {
        let session = SessionId::new();
        assert!(
            stores.inbox.claim(&b, &message.id, &session).await.unwrap(),
            "delivery {delivery}"
        );
        assert_eq!(stores.inbox.get(&b, &message.id).await.unwrap().deliveries, delivery);
        stores.inbox.release(&b, &message.id, &session).await.unwrap();
    }
    let dead = stores.inbox.get(&b, &message.id).await.unwrap();
    assert_eq!(dead.status, MessageStatus::Dead);
    assert!(stores.inbox.get_unclaimed(&b).await.unwrap().is_empty());
    assert!(stores.inbox.get_pending(&b).await.unwrap().is_empty());
    assert_eq!(stores.inbox.list_dead(&b).await.unwrap(), vec![dead]);
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
    for _ in 0..16 {
        let inbox = stores.inbox.clone();
        let b = b.clone();
        handles.push(tokio::spawn(async move {
            let session = SessionId::new();
            let mut won = Vec::new();
            for message in inbox.get_unclaimed(&b).await.unwrap() {
                if inbox.claim(&b, &message.id, &session).await.unwrap() {
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

/// Archiving files a message away, claimed or not, and never destroys it.
pub async fn inbox_archive(stores: &Stores) {
    let a = agent(stores, "a").await;
    let b = agent(stores, "b").await;
    let loose = stores.inbox.send(request(&a, &b, "loose")).await.unwrap();
    let held = stores.inbox.send(request(&a, &b, "held")).await.unwrap();
    let session = SessionId::new();
    assert!(stores.inbox.claim(&b, &held.id, &session).await.unwrap());
    stores.inbox.archive(&b, &loose.id).await.unwrap();
    stores.inbox.archive(&b, &held.id).await.unwrap();
    stores.inbox.archive(&b, &held.id).await.unwrap();
    for id in [loose.id, held.id] {
        assert_eq!(stores.inbox.get(&b, &id).await.unwrap().status, MessageStatus::Archived);
    }
    assert!(stores.inbox.get_pending(&b).await.unwrap().is_empty());
    assert_eq!(
        stores.inbox.mark_read(&b, &held.id, &session).await.unwrap_err().kind(),
        ErrorKind::Conflict
    );
    let err = stores.inbox.archive(&b, &crate::MessageId::new()).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

fn interval_task(prompt: &str) -> NewTask {
    NewTask {
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

/// Create, read, list, update and delete tasks.
pub async fn tasks_lifecycle(stores: &Stores) {
    let a = agent(stores, "a").await;
    let b = agent(stores, "b").await;
    let task = stores.tasks.create(&a, interval_task("check status")).await.unwrap();
    assert_eq!(task.status, TaskStatus::Active);
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

/// Runs are recorded when they start, finished with their outcome, listed newest first.
pub async fn runs_lifecycle(stores: &Stores) {
    let a = agent(stores, "a").await;
    let task = stores.tasks.create(&a, interval_task("p")).await.unwrap();
    let session = SessionId::new();
    let first =
        stores.tasks.create_run(&a, &task.id, Some(session), RunStatus::Running).await.unwrap();
    assert_eq!(first.status, RunStatus::Running);
    assert_eq!(first.completed_at, None);
    let skipped = stores.tasks.create_run(&a, &task.id, None, RunStatus::Skipped).await.unwrap();
    assert!(skipped.completed_at.is_some());
    let finished = stores
        .tasks
        .finish_run(
            &a,
            &task.id,
            &first.id,
            RunOutcome {
                status: RunStatus::Success,
                result: Some("done".into()),
                error: None,
                cost_usd: Some(0.1),
            },
        )
        .await
        .unwrap();
    assert_eq!(finished.status, RunStatus::Success);
    assert!(finished.completed_at.is_some() && finished.duration_ms.is_some());
    assert_eq!(stores.tasks.list_runs(&a, &task.id).await.unwrap(), vec![skipped, finished]);
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
