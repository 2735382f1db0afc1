//! Whole listings answered from the store's renderings of their records (`orbit_store::render`):
//! the store keeps each record's JSON view beside the record until it changes, and the whole
//! joined body of a listing until anything in it changes, so answering 1,000 unchanged records
//! sends the same buffer again instead of cloning, converting and serializing each record (or
//! even copying their bytes). The body is byte for byte what serializing the listing's body
//! type (`SessionsBody`, `MessagesBody`, `TasksBody` without `nextCursor`) writes; the tests
//! below hold the two together.

use actix_web::HttpResponse;
use actix_web::http::header::ContentType;
use orbit_store::render::{Body, Detail, Listing};
use orbit_store::{InboxMessage, Session, SessionMessage, Task};
use serde::Serialize;

use crate::views::{MessageView, SessionMessageView, SessionView, TaskView};

/// `{"sessions":[...]}`, as `SessionsBody` serializes without a cursor.
pub const SESSIONS: Listing<Session> =
    Listing { open: "{\"sessions\":[", render: session, close: "]}" };

/// `{"messages":[...]}`, as `MessagesBody` serializes without a cursor.
pub const MESSAGES: Listing<InboxMessage> =
    Listing { open: "{\"messages\":[", render: message, close: "]}" };

/// `{"tasks":[...]}`, as `TasksBody` serializes without a cursor.
pub const TASKS: Listing<Task> = Listing { open: "{\"tasks\":[", render: task, close: "]}" };

/// `{"session":{...},"messages":[...]}`: a session with its history, as serializing
/// `SessionDetailBody` writes it.
pub const SESSION_DETAIL: Detail<Session, SessionMessage> = Detail {
    open: "{\"session\":",
    head: session,
    parts: Listing { open: ",\"messages\":[", render: session_message, close: "]}" },
};

/// A session's view as JSON (`orbit_store::render::Render`).
pub fn session(session: &Session) -> Vec<u8> {
    to_json(&SessionView::from(session.clone()))
}

/// An inbox message's view as JSON.
pub fn message(message: &InboxMessage) -> Vec<u8> {
    to_json(&MessageView::from(message.clone()))
}

/// A task's view as JSON.
pub fn task(task: &Task) -> Vec<u8> {
    to_json(&TaskView::from(task.clone()))
}

/// A message of a session's history as JSON.
pub fn session_message(message: &SessionMessage) -> Vec<u8> {
    to_json(&SessionMessageView::from(message.clone()))
}

/// A view's compact JSON. Views hold only strings, numbers, booleans and timestamps, which
/// always serialize; were one not to, the record would show as `null` and the error be logged,
/// rather than failing every listing it is in.
fn to_json(view: &impl Serialize) -> Vec<u8> {
    serde_json::to_vec(view).unwrap_or_else(|err| {
        tracing::error!(error = %err, "a record's view does not serialize");
        b"null".to_vec()
    })
}

/// `200` with a whole listing's body (or a session's with its history), as the store joined
/// (or kept) it.
pub fn answer(body: Body) -> HttpResponse {
    HttpResponse::Ok().content_type(ContentType::json()).body(body)
}

#[cfg(test)]
mod tests {
    use orbit_store::render::{self, Render, Rendered};
    use orbit_store::{
        AgentName, ContextMode, MessageType, NewMessage, NewSession, NewTask, Role, ScheduleType,
        Sender,
    };

    use super::*;
    use crate::views::{self, MessagesBody, SessionDetailBody, SessionsBody, TasksBody};

    fn rendered<T>(records: &[T], render: Render<T>) -> Vec<Rendered> {
        render::each(records, render)
    }

    #[test]
    fn a_listing_from_renderings_is_what_serializing_its_body_writes() {
        let agent = AgentName::parse("alice").unwrap();
        let mut sessions = Vec::new();
        for index in 0..3 {
            let title = (index > 0).then(|| format!("a \"quoted\" title\n{index} é"));
            let new = NewSession { title, ..NewSession::default() };
            let mut session = Session::new(&agent, orbit_store::SessionId::new(), new);
            session.total_cost_usd = (index == 2).then_some(0.25);
            sessions.push(session);
        }
        for count in [0, 1, 3] {
            let some = &sessions[..count];
            let expected = serde_json::to_vec(&SessionsBody {
                sessions: views::all(some.to_vec()),
                next_cursor: None,
            })
            .unwrap();
            assert_eq!(SESSIONS.write(some), expected);
            assert_eq!(SESSIONS.join(&rendered(some, session)), expected);
        }

        let messages: Vec<InboxMessage> = (0..3)
            .map(|index| {
                InboxMessage::new(NewMessage {
                    from_agent: Sender::Person(format!("Ann \\ {index}")),
                    to_agent: agent.clone(),
                    message: "line one\nline \u{1f}two".into(),
                    message_type: MessageType::default(),
                    request_id: None,
                })
            })
            .collect();
        let expected = serde_json::to_vec(&MessagesBody {
            messages: views::all(messages.clone()),
            next_cursor: None,
        })
        .unwrap();
        assert_eq!(MESSAGES.write(&messages), expected);

        let tasks: Vec<Task> = (0..2)
            .map(|index| {
                let now = orbit_store::timestamp::now();
                let new = NewTask {
                    name: Some(format!("task {index}")),
                    prompt: "Summarise\tthe day".into(),
                    schedule_type: ScheduleType::Interval,
                    schedule_value: "60000".into(),
                    context_mode: ContextMode::Isolated,
                    timezone: None,
                    next_run: (index == 0).then_some(now),
                    worktree: index == 1,
                    branch: (index == 1).then(|| "summaries".into()),
                    node: (index == 1).then(|| "node-a".into()),
                };
                Task::new(&agent, new, now)
            })
            .collect();
        let expected =
            serde_json::to_vec(&TasksBody { tasks: views::all(tasks.clone()), next_cursor: None })
                .unwrap();
        assert_eq!(TASKS.write(&tasks), expected);
        let (first, rest) = tasks.split_at(1);
        let parts = [rendered(first, task), rendered(rest, task)];
        assert_eq!(TASKS.join_parts(&[&parts[0], &parts[1]]), expected, "joined from two agents");

        for count in [0, 1, 3] {
            let history: Vec<SessionMessage> = (0..count)
                .map(|index| {
                    let role = if index % 2 == 0 { Role::User } else { Role::Assistant };
                    SessionMessage::new(role, format!("said \"{index}\"\n\u{7f} ü"))
                })
                .collect();
            let expected = serde_json::to_vec(&SessionDetailBody {
                session: sessions[2].clone().into(),
                messages: views::all(history.clone()),
            })
            .unwrap();
            let got = SESSION_DETAIL.join(&sessions[2], &rendered(&history, session_message));
            assert_eq!(got, expected, "{count} messages");
        }
    }
}
