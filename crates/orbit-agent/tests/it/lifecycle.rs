//! A turn's life at its edges: refused before it starts, aborted before it reaches the model,
//! abandoned by its caller, the pool shutting down around it, a process cap shared with
//! scheduled runs.

use std::sync::Arc;
use std::time::Duration;

use orbit_agent::claude::{ClaudeCli, ClaudeCliConfig};
use orbit_agent::{AgentPool, ChatOptions, Error, PoolOptions, TurnKind};
use orbit_store::{MessageStatus, Role};
use orbit_testkit::{Reply, Rule};

use crate::harness::{Harness, all_user_text, text};

fn slow_then_quick() -> Vec<Rule> {
    vec![
        Rule::when_user_says(
            "slow",
            Reply::Delayed(Duration::from_secs(3), Box::new(text("slow answer"))),
        ),
        Rule::when_user_says(
            "first",
            Reply::Delayed(Duration::from_secs(2), Box::new(text("answer to: first"))),
        ),
        Rule::always(text("answer to: second")),
    ]
}

/// A turn that never reached the model (no CLI could start) gives its claims back without
/// counting a delivery, so refusals never set a message aside as dead.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_that_never_reached_the_model_is_not_a_delivery() {
    let h = Harness::new(vec![]).await;
    let runtime = ClaudeCli::new(ClaudeCliConfig {
        user_config_dir: None,
        bin: "/nonexistent/claude".into(),
        config_dir: h.dir.path().join("c"),
        env: vec![],
        max_turns: None,
    });
    let pool = AgentPool::new(h.stores.clone(), Arc::new(runtime), PoolOptions::default());
    let id = h.send_inbox("please look at this").await;
    let session = h.session().await;
    for _ in 0..5 {
        let err = pool
            .get(&h.agent, &session)
            .chat("hi", ChatOptions::default(), tokio::sync::mpsc::unbounded_channel().0)
            .await
            .unwrap_err();
        assert!(matches!(err, Error::CliMissing { .. }), "{err}");
    }
    let message = h.stores.inbox.get(&h.agent, &id).await.unwrap();
    assert_eq!(
        (message.status, message.deliveries, message.lease),
        (MessageStatus::Pending, 0, None)
    );
}

/// Past the process cap the turn is refused before anything is claimed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_refused_for_want_of_a_process_claims_nothing() {
    let options = PoolOptions {
        max_processes: 1,
        slot_wait: Duration::from_millis(200),
        ..PoolOptions::default()
    };
    let h = Harness::with_options(slow_then_quick(), options).await;
    let busy_session = h.session().await;
    let running = h.spawn_turn(&busy_session, "slow");
    h.wait_for_requests(1).await;
    let id = h.send_inbox("for whoever runs next").await;
    let other = h.session().await;
    for _ in 0..4 {
        let refused =
            h.pool.get(&h.agent, &other).start_turn("hello", ChatOptions::default()).await;
        assert!(matches!(refused, Err(Error::Busy(1))), "refused for want of a slot");
    }
    let message = h.stores.inbox.get(&h.agent, &id).await.unwrap();
    assert_eq!((message.deliveries, message.lease), (0, None), "nothing was claimed by a refusal");
    assert!(h.stores.sessions.get_messages(&h.agent, &other).await.unwrap().is_empty());
    running.await.unwrap().unwrap();
}

/// An abort that arrives while the turn is still starting (here: waiting for a process slot)
/// is not lost: the turn ends aborted before the model is asked, and the session goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_before_the_turn_reaches_the_model_ends_it() {
    let options = PoolOptions {
        max_processes: 1,
        slot_wait: Duration::from_secs(30),
        ..PoolOptions::default()
    };
    let h = Harness::with_options(slow_then_quick(), options).await;
    let holder = h.session().await;
    let holding = h.spawn_turn(&holder, "slow");
    h.wait_for_requests(1).await;
    let session = h.session().await;
    let agent = h.pool.get(&h.agent, &session);
    let waiting = {
        let agent = agent.clone();
        tokio::spawn(async move {
            match agent.start_turn("second", ChatOptions::default()).await {
                Ok(turn) => turn.outcome().await,
                Err(err) => Err(err),
            }
        })
    };
    while !agent.is_running() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    agent.abort().unwrap();
    holding.await.unwrap().unwrap();
    let outcome = waiting.await.unwrap();
    assert!(matches!(outcome, Err(Error::Aborted)), "{outcome:?}");
    assert_eq!(h.model.requests().len(), 1, "the aborted turn never asked the model");
    assert!(!agent.is_running());
    let (outcome, _) = h.chat(&session, "second").await;
    assert_eq!(outcome.unwrap().result, "answer to: second");
}

/// A caller that stops waiting (a scheduler's timeout dropping its future) does not cut the
/// turn in half: it runs to its end and is recorded once, and the next turn gets its own
/// answer, never the abandoned one's.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_turn_whose_caller_gives_up_still_ends_and_the_next_turn_gets_its_own_answer() {
    let h = Harness::new(slow_then_quick()).await;
    let session = h.session().await;
    let agent = h.pool.get(&h.agent, &session);
    let abandoned = tokio::time::timeout(
        Duration::from_millis(500),
        agent.chat("first", ChatOptions::default(), tokio::sync::mpsc::unbounded_channel().0),
    )
    .await;
    assert!(abandoned.is_err(), "the caller gave up");
    for _ in 0..200 {
        if !agent.is_running() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(!agent.is_running(), "the abandoned turn ended on its own");
    let (outcome, _) = h.chat(&session, "second").await;
    assert_eq!(outcome.unwrap().result, "answer to: second");
    let history = h.stores.sessions.get_messages(&h.agent, &session).await.unwrap();
    let lines: Vec<_> = history.iter().map(|m| (m.role, m.content.as_str())).collect();
    assert_eq!(
        lines,
        vec![
            (Role::User, "first"),
            (Role::Assistant, "answer to: first"),
            (Role::User, "second"),
            (Role::Assistant, "answer to: second"),
        ]
    );
}

/// Shutdown lets a running turn finish within the deadline, refuses new ones, and ends every
/// process.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_lets_turns_finish_and_refuses_new_ones() {
    let h = Harness::new(slow_then_quick()).await;
    let session = h.session().await;
    let running = h.spawn_turn(&session, "first");
    h.wait_for_requests(1).await;
    h.pool.shutdown(Duration::from_secs(20)).await;
    assert_eq!(running.await.unwrap().unwrap().result, "answer to: first");
    let other = h.session().await;
    let refused = h.pool.get(&h.agent, &other).start_turn("hello", ChatOptions::default()).await;
    assert!(matches!(refused, Err(Error::ShuttingDown)));
    assert!(h.live_cli_processes().is_empty());
}

/// Shutdown past its deadline aborts the turn, which settles its claim and records itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_past_its_deadline_aborts_and_settles() {
    let rules = vec![Rule::always(Reply::Delayed(Duration::from_secs(60), Box::new(text("late"))))];
    let h = Harness::new(rules).await;
    let id = h.send_inbox("handle me").await;
    let session = h.session().await;
    let running = h.spawn_turn(&session, "take your time");
    h.wait_for_requests(1).await;
    assert!(all_user_text(&h.model.requests()[0]).contains("handle me"));
    h.pool.shutdown(Duration::from_millis(200)).await;
    assert!(matches!(running.await.unwrap(), Err(Error::Aborted)));
    let message = h.stores.inbox.get(&h.agent, &id).await.unwrap();
    assert_eq!(
        (message.status, message.deliveries, message.lease),
        (MessageStatus::Pending, 1, None)
    );
    assert_eq!(h.stores.sessions.get_messages(&h.agent, &session).await.unwrap().len(), 2);
    assert!(h.live_cli_processes().is_empty());
}

/// Scheduled runs cannot take the process slots kept for people's chats.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn scheduled_turns_leave_a_slot_for_chats() {
    let options = PoolOptions {
        max_processes: 2,
        reserved_for_chats: 1,
        slot_wait: Duration::from_millis(300),
        ..PoolOptions::default()
    };
    let h = Harness::with_options(slow_then_quick(), options).await;
    let scheduled = ChatOptions { kind: TurnKind::ScheduledTask, ..ChatOptions::default() };
    let first = h.session().await;
    let agent = h.pool.get(&h.agent, &first);
    let run = agent.start_turn("slow", scheduled.clone()).await.unwrap();
    let second = h.session().await;
    let refused = h.pool.get(&h.agent, &second).start_turn("slow", scheduled).await;
    assert!(matches!(refused, Err(Error::Busy(_))), "the second scheduled turn finds no slot");
    let chat = h.session().await;
    let (outcome, _) = h.chat(&chat, "second").await;
    assert_eq!(outcome.unwrap().result, "answer to: second", "a person's chat still runs");
    run.outcome().await.unwrap();
}

/// Each conversation's CLI has a state directory of its own, so concurrent first starts never
/// race on one `.claude.json`, and a forgotten session leaves no state behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_conversation_keeps_its_cli_state_apart_and_forgetting_removes_it() {
    let h = Harness::new(vec![Rule::always(text("ok"))]).await;
    let sessions = [h.session().await, h.session().await, h.session().await, h.session().await];
    let turns: Vec<_> = sessions.iter().map(|s| h.spawn_turn(s, "hello")).collect();
    for turn in turns {
        assert_eq!(turn.await.unwrap().unwrap().result, "ok", "every concurrent first start works");
    }
    let mut dirs = std::collections::HashSet::new();
    for session in &sessions {
        let pid = h.pool.get(&h.agent, session).process_id().await.expect("a warm process");
        let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
        let dir = String::from_utf8_lossy(&environ)
            .split('\0')
            .find_map(|var| var.strip_prefix("CLAUDE_CONFIG_DIR=").map(str::to_owned))
            .unwrap();
        assert!(dir.ends_with(&format!("bot/{session}")), "{dir}");
        assert!(std::path::Path::new(&dir).join(".claude.json").exists());
        dirs.insert(dir);
    }
    assert_eq!(dirs.len(), sessions.len(), "no two CLIs share a state directory");
    let gone = dirs.iter().find(|d| d.ends_with(&sessions[0].to_string())).unwrap().clone();
    h.pool.forget_session(&h.agent, &sessions[0]).await;
    assert!(!std::path::Path::new(&gone).exists(), "a forgotten session's CLI state is removed");
    h.pool.forget_agent(&h.agent).await;
    assert!(dirs.iter().all(|d| !std::path::Path::new(d).exists()));
    assert!(h.live_cli_processes().is_empty());
}
