//! Inbox messages reach the model in the turn that claims them, exactly once.

use std::collections::HashMap;

use orbit_store::MessageStatus;
use orbit_testkit::{Reply, Rule};

use crate::harness::{Harness, all_user_text, session_of, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_message_sent_between_two_warm_turns_reaches_the_second() {
    let h = Harness::new(vec![Rule::always(text("ok"))]).await;
    let session = h.session().await;
    h.chat(&session, "first").await.0.unwrap();
    let id = h.send_inbox("please review PR 42").await;
    let (outcome, _) = h.chat(&session, "second").await;
    assert_eq!(outcome.unwrap().handled_messages, vec![id]);
    let last = h.model.requests().last().cloned().unwrap();
    let text = orbit_testkit::last_user_text(&last);
    assert!(
        text.contains("please review PR 42") && text.contains(&id.to_string()),
        "the message is in this turn's user message: {text}"
    );
    let message = h.stores.inbox.get(&h.agent, &id).await.unwrap();
    assert_eq!(message.status, MessageStatus::Read);
    assert_eq!(message.claimed_by, Some(session));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_turn_gives_its_claims_back() {
    let h = Harness::new(vec![Rule::always(Reply::HttpError(500, "overloaded".into()))]).await;
    let session = h.session().await;
    let id = h.send_inbox("important").await;
    let (outcome, _) = h.chat(&session, "go").await;
    assert!(outcome.is_err(), "an API error fails the turn");
    let message = h.stores.inbox.get(&h.agent, &id).await.unwrap();
    assert_eq!(
        (message.status, message.claimed_by, message.deliveries),
        (MessageStatus::Pending, None, 1)
    );
    assert_eq!(
        h.stores.inbox.get_unclaimed(&h.agent).await.unwrap().len(),
        1,
        "another session can take it"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn eight_concurrent_sessions_share_24_messages_exactly_once() {
    let h = Harness::new(vec![Rule::always(text("done"))]).await;
    let mut ids = Vec::new();
    for index in 0..24 {
        ids.push(h.send_inbox(&format!("job-{index:02}")).await);
    }
    let mut sessions = Vec::new();
    for _ in 0..8 {
        sessions.push(h.session().await);
    }
    let mut turns = tokio::task::JoinSet::new();
    for session in &sessions {
        let agent = h.pool.get(&h.agent, session);
        turns.spawn(async move {
            agent
                .chat(
                    "handle your inbox",
                    Default::default(),
                    tokio::sync::mpsc::unbounded_channel().0,
                )
                .await
        });
    }
    let mut handled = 0;
    while let Some(outcome) = turns.join_next().await {
        handled += outcome.unwrap().unwrap().handled_messages.len();
    }
    assert_eq!(handled, 24);
    // Each job's text appears in the requests of exactly one Orbit session.
    let mut seen_by: HashMap<String, std::collections::HashSet<String>> = HashMap::new();
    for request in h.model.requests() {
        let Some(session) = session_of(&request) else { continue };
        let text = all_user_text(&request);
        for index in 0..24 {
            let job = format!("job-{index:02}");
            if text.contains(&job) {
                seen_by.entry(job).or_default().insert(session.clone());
            }
        }
    }
    for index in 0..24 {
        let job = format!("job-{index:02}");
        assert_eq!(
            seen_by.get(&job).map_or(0, |s| s.len()),
            1,
            "{job} reached {:?}",
            seen_by.get(&job)
        );
    }
    for id in ids {
        assert_eq!(h.stores.inbox.get(&h.agent, &id).await.unwrap().status, MessageStatus::Read);
    }
}
