//! The contract of sessions: their lifecycle, messages, previews and costs, concurrent
//! updates, and the hold of a session's turn with the aborts asked of it.

use super::{agent, in_secs, name};
use crate::{
    ErrorKind, InstanceId, Lease, NewSession, Role, SessionId, SessionMessage, SessionPatch,
    Stores, Usage, timestamp,
};

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
