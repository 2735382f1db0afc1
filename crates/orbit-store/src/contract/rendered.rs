//! The contract of listings rendered by their caller (`render`).

use std::fmt::Debug;

use super::{agent, claimer, interval_task, request};
use crate::render::{Detail, Listing, Rendered};
use crate::{
    ErrorKind, NewSession, Role, SessionId, SessionMessage, SessionPatch, Stores, TaskPatch,
    TaskStatus,
};

fn debug<T: Debug>(record: &T) -> Vec<u8> {
    format!("{record:?}").into_bytes()
}

fn pretty<T: Debug>(record: &T) -> Vec<u8> {
    format!("{record:#?}").into_bytes()
}

/// Records rendered by `debug` between brackets, with commas.
fn listing<T: Debug>() -> Listing<T> {
    Listing { open: "[[", render: debug, close: "]]" }
}

fn bytes(rendered: Vec<Rendered>) -> Vec<Vec<u8>> {
    rendered.iter().map(|record| record.to_vec()).collect()
}

/// Every rendered listing is the plain listing's records rendered one by one, in order, and
/// joined.
async fn assert_rendered_as_listed(stores: &Stores, agent: &crate::AgentName, what: &str) {
    let sessions = stores.sessions.list_by_agent(agent).await.unwrap();
    let rendered = stores.sessions.list_rendered(agent, listing()).await.unwrap();
    assert_eq!(rendered, listing().write(&sessions), "sessions {what}");
    let pending = stores.inbox.get_pending(agent).await.unwrap();
    let rendered = stores.inbox.pending_rendered(agent, listing()).await.unwrap();
    assert_eq!(rendered, listing().write(&pending), "inbox {what}");
    let tasks = stores.tasks.list_by_agent(agent).await.unwrap();
    let rendered = stores.tasks.list_rendered(agent, listing()).await.unwrap();
    assert_eq!(rendered, listing().write(&tasks), "tasks {what}");
    let all = stores.tasks.list_all().await.unwrap();
    let rendered = stores.tasks.list_all_rendered(listing()).await.unwrap();
    assert_eq!(rendered, listing().write(&all), "all tasks {what}");
}

/// Rendered listings answer what rendering each record of the plain listing gives, in order,
/// again after records change, leave and arrive (a store that keeps renderings forgets a
/// changed record's), and a listing rendered by another function is that function's.
pub async fn rendered_listings_follow_their_records(stores: &Stores) {
    let painter = agent(stores, "painter").await;
    let other = agent(stores, "other-painter").await;
    let mut sessions: Vec<SessionId> = Vec::new();
    for index in 0..3 {
        let new = NewSession { title: Some(format!("session {index}")), ..NewSession::default() };
        sessions.push(stores.sessions.create(&painter, new).await.unwrap().id);
        stores.inbox.send(request(&other, &painter, &format!("message {index}"))).await.unwrap();
        stores.tasks.create(&painter, interval_task(&format!("task {index}"))).await.unwrap();
    }
    stores.tasks.create(&other, interval_task("another's task")).await.unwrap();
    assert_rendered_as_listed(stores, &painter, "as made").await;
    assert_rendered_as_listed(stores, &painter, "listed twice").await;

    let patch = SessionPatch { title: Some("renamed".into()), ..SessionPatch::default() };
    stores.sessions.update(&painter, &sessions[1], patch).await.unwrap();
    stores.sessions.delete(&painter, &sessions[0]).await.unwrap();
    stores.sessions.create(&painter, NewSession::default()).await.unwrap();
    let pending = stores.inbox.get_pending(&painter).await.unwrap();
    stores.inbox.archive(&painter, &pending[0].id).await.unwrap();
    stores.inbox.claim(&painter, &pending[1].id, &claimer(SessionId::new())).await.unwrap();
    stores.inbox.send(request(&other, &painter, "one more")).await.unwrap();
    let tasks = stores.tasks.list_by_agent(&painter).await.unwrap();
    let pause = TaskPatch { status: Some(TaskStatus::Paused), ..TaskPatch::default() };
    stores.tasks.update(&painter, &tasks[1].id, pause).await.unwrap();
    stores.tasks.delete(&painter, &tasks[2].id).await.unwrap();
    stores.tasks.create(&painter, interval_task("a new task")).await.unwrap();
    assert_rendered_as_listed(stores, &painter, "after changes").await;

    let pretty_listing = Listing { open: "(", render: pretty, close: ")" };
    let rendered = stores.sessions.list_rendered(&painter, pretty_listing).await.unwrap();
    let listed = stores.sessions.list_by_agent(&painter).await.unwrap();
    assert_eq!(rendered, pretty_listing.write(&listed), "another render");
    let pretty_listing = Listing { open: "(", render: pretty, close: ")" };
    let rendered = stores.inbox.pending_rendered(&painter, pretty_listing).await.unwrap();
    let listed = stores.inbox.get_pending(&painter).await.unwrap();
    assert_eq!(rendered, pretty_listing.write(&listed), "another render");
    let pretty_listing = Listing { open: "(", render: pretty, close: ")" };
    let rendered = stores.tasks.list_rendered(&painter, pretty_listing).await.unwrap();
    let listed = stores.tasks.list_by_agent(&painter).await.unwrap();
    assert_eq!(rendered, pretty_listing.write(&listed), "another render");
    let framed = Listing { open: "{", ..pretty_listing };
    let rendered = stores.tasks.list_rendered(&painter, framed).await.unwrap();
    assert_eq!(rendered, framed.write(&listed), "another frame");

    let unknown = crate::AgentName::parse("nobody-paints").unwrap();
    let missing = stores.sessions.list_rendered(&unknown, listing()).await.unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    let missing = stores.inbox.pending_rendered(&unknown, listing()).await.unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
    let missing = stores.tasks.list_rendered(&unknown, listing()).await.unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
}

/// A session read with its history rendered is the session and its messages rendered one by
/// one, again after more messages come (a store that keeps the renderings of a history
/// renders only the new ones), and by another function that function's.
pub async fn rendered_history_follows_its_messages(stores: &Stores) {
    let talker = agent(stores, "talker").await;
    let session = stores.sessions.create(&talker, NewSession::default()).await.unwrap();
    for round in 0..3 {
        let (read, rendered) =
            stores.sessions.get_rendered(&talker, &session.id, debug).await.unwrap();
        let messages = stores.sessions.get_messages(&talker, &session.id).await.unwrap();
        assert_eq!(read.message_count, 2 * round, "round {round}");
        assert_eq!(read.id, session.id);
        assert_eq!(
            bytes(rendered),
            messages.iter().map(debug).collect::<Vec<_>>(),
            "round {round}"
        );
        for role in [Role::User, Role::Assistant] {
            let message = SessionMessage::new(role, format!("round {round}"));
            stores.sessions.append_message(&talker, &session.id, message).await.unwrap();
        }
    }
    let (_, rendered) = stores.sessions.get_rendered(&talker, &session.id, pretty).await.unwrap();
    let messages = stores.sessions.get_messages(&talker, &session.id).await.unwrap();
    assert_eq!(bytes(rendered), messages.iter().map(pretty).collect::<Vec<_>>(), "another render");
    let missing = stores.sessions.get_rendered(&talker, &SessionId::new(), debug).await;
    assert_eq!(missing.unwrap_err().kind(), ErrorKind::NotFound);
}

/// A session read whole with its history (`get_detail`) is the session and its messages as
/// read one by one, joined, after every change: a message appended, the session updated, and
/// with another function or frame that one's.
pub async fn rendered_detail_follows_its_session_and_messages(stores: &Stores) {
    let detail = Detail { open: "<", head: debug, parts: listing() };
    let expected =
        |session: &crate::Session, messages: &[SessionMessage], detail: &Detail<_, _>| {
            detail.join(session, &crate::render::each(messages, detail.parts.render))
        };
    let talker = agent(stores, "detailed").await;
    let session = stores.sessions.create(&talker, NewSession::default()).await.unwrap();
    for round in 0..3 {
        for _ in 0..2 {
            let body = stores.sessions.get_detail(&talker, &session.id, &detail).await.unwrap();
            let read = stores.sessions.get(&talker, &session.id).await.unwrap();
            let messages = stores.sessions.get_messages(&talker, &session.id).await.unwrap();
            assert_eq!(read.message_count, round, "round {round}");
            assert_eq!(body, expected(&read, &messages, &detail), "round {round}");
        }
        let message = SessionMessage::new(Role::User, format!("round {round}"));
        stores.sessions.append_message(&talker, &session.id, message).await.unwrap();
        let patch = SessionPatch { title: Some(format!("title {round}")), ..Default::default() };
        stores.sessions.update(&talker, &session.id, patch).await.unwrap();
    }
    let read = stores.sessions.get(&talker, &session.id).await.unwrap();
    let messages = stores.sessions.get_messages(&talker, &session.id).await.unwrap();
    let body = stores.sessions.get_detail(&talker, &session.id, &detail).await.unwrap();
    assert_eq!(body, expected(&read, &messages, &detail), "after the last change");
    for other in [
        Detail { head: pretty, ..detail },
        Detail { open: "{", ..detail },
        Detail { parts: Listing { render: pretty, ..listing() }, ..detail },
        Detail { parts: Listing { close: "}", ..listing() }, ..detail },
    ] {
        let body = stores.sessions.get_detail(&talker, &session.id, &other).await.unwrap();
        assert_eq!(body, expected(&read, &messages, &other), "another function or frame");
    }
    let missing = stores.sessions.get_detail(&talker, &SessionId::new(), &detail).await;
    assert_eq!(missing.unwrap_err().kind(), ErrorKind::NotFound);
    stores.sessions.delete(&talker, &session.id).await.unwrap();
    let deleted = stores.sessions.get_detail(&talker, &session.id, &detail).await;
    assert_eq!(deleted.unwrap_err().kind(), ErrorKind::NotFound, "deleted");
    let unknown = crate::AgentName::parse("nobody-talks").unwrap();
    let missing = stores.sessions.get_detail(&unknown, &session.id, &detail).await;
    assert_eq!(missing.unwrap_err().kind(), ErrorKind::NotFound);
}
