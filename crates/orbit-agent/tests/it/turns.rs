//! Plain, resumed, warm and recovered turns, and aborts.

use std::time::Duration;

use orbit_agent::{Error, PoolOptions};
use orbit_store::{Role, SessionPatch};
use orbit_testkit::{Reply, Rule};

use crate::harness::{Harness, all_user_text, text};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_plain_turn_streams_events_and_records_the_exchange() {
    let h = Harness::new(vec![Rule::always(text("pong"))]).await;
    let session = h.session().await;
    let (outcome, events) = h.chat(&session, "ping").await;
    let outcome = outcome.unwrap();
    assert_eq!(outcome.result, "pong");
    let init = events
        .iter()
        .find(|e| e["type"] == "system" && e["subtype"] == "init")
        .expect("an init event");
    assert_eq!(events.last().unwrap()["type"], "result");
    let stored = h.stores.sessions.get(&h.agent, &session).await.unwrap();
    assert_eq!(
        stored.sdk_session_id.as_deref(),
        init["session_id"].as_str(),
        "the CLI's session_id is stored"
    );
    assert!(stored.total_cost_usd.unwrap() > 0.0);
    let messages = h.stores.sessions.get_messages(&h.agent, &session).await.unwrap();
    assert_eq!(
        messages.iter().map(|m| (m.role, m.content.as_str())).collect::<Vec<_>>(),
        vec![(Role::User, "ping"), (Role::Assistant, "pong")]
    );
    let system = h.model.requests()[0]["system"].to_string();
    assert!(
        system.contains("You are the agent \\\"bot\\\""),
        "the appended system prompt reaches the model"
    );
    let memory = h.stores.memory.search(&h.agent, "ping", 5).await.unwrap();
    assert!(!memory.is_empty(), "the turn is in the daily memory");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_warm_second_turn_reuses_the_process() {
    let h = Harness::new(vec![Rule::always(text("ok"))]).await;
    let session = h.session().await;
    h.chat(&session, "first question").await.0.unwrap();
    let pid = h.pool.get(&h.agent, &session).process_id().await.expect("a warm process");
    h.chat(&session, "second question").await.0.unwrap();
    assert_eq!(
        h.pool.get(&h.agent, &session).process_id().await,
        Some(pid),
        "the same process ran both turns"
    );
    let last = h.model.requests().last().cloned().unwrap();
    assert!(all_user_text(&last).contains("first question"), "the second turn carries the first");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_turn_after_idle_eviction_resumes_the_cli_session() {
    // Long enough that the check right after the turn cannot be late; short for a test.
    let idle_ttl = Duration::from_secs(3);
    let options = PoolOptions { idle_ttl, ..PoolOptions::default() };
    let h = Harness::with_options(vec![Rule::always(text("ok"))], options).await;
    let session = h.session().await;
    h.chat(&session, "remember the word aubergine").await.0.unwrap();
    let first_cli = h.stores.sessions.get(&h.agent, &session).await.unwrap().sdk_session_id;
    assert!(first_cli.is_some(), "the CLI's session id is stored");
    assert_eq!(h.pool.evict_idle().await, 0, "a session idle for less than the TTL is kept");
    assert_eq!(h.live_cli_processes().len(), 1, "a warm process between turns");

    tokio::time::sleep(idle_ttl).await;
    assert_eq!(h.pool.evict_idle().await, 1, "idle past the TTL, it is evicted");
    assert!(h.live_cli_processes().is_empty(), "eviction ends the process");
    assert!(!h.pool.has(&h.agent, &session));

    h.chat(&session, "which word?").await.0.unwrap();
    let last = h.model.requests().last().cloned().unwrap();
    assert!(all_user_text(&last).contains("aubergine"), "the resumed turn carries the first");
    assert_eq!(
        h.stores.sessions.get(&h.agent, &session).await.unwrap().sdk_session_id,
        first_cli,
        "the new process resumed the CLI session rather than starting another"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_that_fails_continues_in_a_fresh_cli_session() {
    let h = Harness::new(vec![Rule::always(text("fresh"))]).await;
    let session = h.session().await;
    let lost = "11111111-2222-3333-4444-555555555555".to_owned();
    h.stores
        .sessions
        .update(
            &h.agent,
            &session,
            SessionPatch { sdk_session_id: Some(lost.clone()), ..SessionPatch::default() },
        )
        .await
        .unwrap();
    let (outcome, events) = h.chat(&session, "hello again").await;
    assert_eq!(outcome.unwrap().result, "fresh");
    let notice = events
        .iter()
        .find(|e| e["subtype"] == "orbit_resume_failed")
        .expect("the stream says the resume failed");
    assert_eq!(notice["previousSdkSessionId"], lost.as_str());
    let stored = h.stores.sessions.get(&h.agent, &session).await.unwrap().sdk_session_id.unwrap();
    assert_ne!(stored, lost, "the new CLI session id is stored");
    h.chat(&session, "and again").await.0.unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abort_mid_turn_leaves_no_process_and_the_next_turn_works() {
    let h = Harness::new(vec![
        Rule::when_user_says(
            "slow",
            Reply::Delayed(Duration::from_secs(30), Box::new(text("too late"))),
        ),
        Rule::always(text("quick")),
    ])
    .await;
    let session = h.session().await;
    let agent = h.pool.get(&h.agent, &session);
    let turn = h.spawn_turn(&session, "slow please");
    h.wait_for_requests(1).await;
    assert!(
        matches!(
            agent
                .chat("meanwhile", Default::default(), tokio::sync::mpsc::unbounded_channel().0)
                .await,
            Err(Error::TurnInProgress(_))
        ),
        "a second turn is refused"
    );
    agent.abort().unwrap();
    let result = tokio::time::timeout(Duration::from_secs(20), turn)
        .await
        .expect("abort ends the turn")
        .unwrap();
    assert!(matches!(result, Err(Error::Aborted)), "{result:?}");
    assert!(
        h.live_cli_processes().is_empty(),
        "no claude process outlives its abort: {:?}",
        h.live_cli_processes()
    );
    assert!(matches!(agent.abort(), Err(Error::NotRunning(_))));
    let (outcome, _) = h.chat(&session, "are you there").await;
    assert_eq!(outcome.unwrap().result, "quick");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_cli_is_a_clear_error() {
    use std::sync::Arc;

    use orbit_agent::claude::{ClaudeCli, ClaudeCliConfig};
    let h = Harness::new(vec![]).await;
    let runtime = ClaudeCli::new(ClaudeCliConfig {
        user_config_dir: None,
        bin: "/nonexistent/claude".into(),
        config_dir: h.dir.path().join("c"),
        env: vec![],
        max_turns: None,
    });
    let pool = orbit_agent::AgentPool::new(h.stores.clone(), Arc::new(runtime), Default::default());
    let session = h.session().await;
    let err = pool
        .get(&h.agent, &session)
        .chat("hi", Default::default(), tokio::sync::mpsc::unbounded_channel().0)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::CliMissing { .. }), "{err}");
    assert!(err.to_string().contains("ORBIT_CLAUDE_BIN"), "the error says what to do: {err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cli_crash_mid_turn_fails_the_turn_and_leaves_the_session_usable() {
    let h = Harness::new(vec![
        Rule::when_user_says(
            "slow",
            Reply::Delayed(Duration::from_secs(30), Box::new(text("late"))),
        ),
        Rule::always(text("recovered")),
    ])
    .await;
    let session = h.session().await;
    let turn = h.spawn_turn(&session, "slow please");
    h.wait_for_requests(1).await;
    for pid in h.live_cli_processes() {
        nix::sys::signal::kill(
            nix::unistd::Pid::from_raw(pid as i32),
            nix::sys::signal::Signal::SIGKILL,
        )
        .unwrap();
    }
    let result = tokio::time::timeout(Duration::from_secs(20), turn)
        .await
        .expect("the crash ends the turn")
        .unwrap();
    assert!(matches!(result, Err(Error::CliExited { .. })), "{result:?}");
    let (outcome, _) = h.chat(&session, "still there?").await;
    assert_eq!(outcome.unwrap().result, "recovered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeating_the_same_model_keeps_the_warm_process() {
    let h = Harness::new(vec![Rule::always(text("ok"))]).await;
    let session = h.session().await;
    let agent = h.pool.get(&h.agent, &session);
    let with_model = || orbit_agent::ChatOptions {
        model: Some("claude-test-model".into()),
        ..Default::default()
    };
    agent.chat("one", with_model(), tokio::sync::mpsc::unbounded_channel().0).await.unwrap();
    let pid = agent.process_id().await.expect("a warm process");
    agent.chat("two", with_model(), tokio::sync::mpsc::unbounded_channel().0).await.unwrap();
    assert_eq!(agent.process_id().await, Some(pid), "the same model does not restart the CLI");
    assert_eq!(
        h.stores.sessions.get(&h.agent, &session).await.unwrap().model.as_deref(),
        Some("claude-test-model")
    );
    assert_eq!(h.model.requests().last().unwrap()["model"], "claude-test-model");
}
