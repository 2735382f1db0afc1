//! `GET /api/events` over HTTP: what changes is announced, whoever changes it (the API, a
//! turn, an approval, the scheduler), and a client that reconnects catches up or is told to
//! reload.

use orbit_testkit::{Reply, Rule};
use serde_json::{Value, json};

use crate::helpers::TestApp;

fn rules() -> Vec<Rule> {
    vec![
        Rule::after_tool_result(Reply::Text("done".into())),
        Rule::when_user_says(
            "write the file",
            Reply::ToolUse {
                name: "Bash".into(),
                input: json!({"command": "echo hi > made.txt", "description": "write"}),
            },
        ),
        Rule::always(Reply::Text("hello from the model".into())),
    ]
}

fn is(kind: &'static str) -> impl Fn(&Value) -> bool {
    move |event| event["type"] == kind
}

#[actix_web::test]
async fn the_event_stream_announces_what_changes() {
    let app = TestApp::spawn(rules()).await;
    let (mut events, _) = app.events(None).await;

    app.create_agent_with(json!({"name": "bot", "permissionMode": "ask"})).await;
    let (changed, _) = events.until(is("agent_changed")).await;
    assert_eq!(changed["agentName"], "bot");

    let session = app.create_session("bot").await;
    let (created, _) = events.until(is("session_created")).await;
    assert_eq!(
        (created["agentName"].as_str(), created["sessionId"].as_str()),
        (Some("bot"), Some(session.as_str()))
    );

    // A message arrives, and the next turn claims and handles it.
    let sent = app
        .call(
            "POST",
            "/api/agents/bot/inbox",
            Some(json!({"fromAgent": "Ann Lee", "message": "hi"})),
        )
        .await;
    let message = sent.body["message"]["id"].as_str().unwrap().to_owned();
    let (arrived, _) = events.until(is("inbox_arrived")).await;
    assert_eq!(
        (arrived["messageId"].as_str(), arrived["from"].as_str()),
        (Some(message.as_str()), Some("Ann Lee"))
    );
    let (status, _) =
        app.chat(json!({"agentName": "bot", "sessionId": session, "message": "hello"})).await;
    assert_eq!(status, 200);
    let (started, _) = events.until(is("turn_started")).await;
    assert_eq!(
        (started["sessionId"].as_str(), started["kind"].as_str()),
        (Some(session.as_str()), Some("chat"))
    );
    let (claimed, _) = events.until(is("inbox_claimed")).await;
    assert_eq!(
        (claimed["messageId"].as_str(), claimed["sessionId"].as_str()),
        (Some(message.as_str()), Some(session.as_str()))
    );
    let (read, _) = events.until(is("inbox_read")).await;
    assert_eq!(read["messageId"], message.as_str());
    let (ended, _) = events.until(is("turn_ended")).await;
    assert_eq!(
        (ended["sessionId"].as_str(), ended["success"].as_bool()),
        (Some(session.as_str()), Some(true))
    );

    // An ask-mode tool call: pending, then settled by the person's answer.
    let chat = {
        let body = json!({"agentName": "bot", "sessionId": session, "message": "write the file"});
        let request = app.builder("POST", "/api/chat").send_json(&body);
        actix_web::rt::spawn(async move {
            let mut response = request.await.unwrap();
            response.body().limit(16 * 1024 * 1024).await.unwrap();
        })
    };
    let (pending, _) = events.until(is("approval_pending")).await;
    assert_eq!(pending["toolName"], "Bash");
    let request = pending["requestId"].as_str().unwrap();
    let path = format!("/api/agents/bot/sessions/{session}/permissions/{request}");
    assert_eq!(app.call("POST", &path, Some(json!({"allow": false}))).await.status, 200);
    let (settled, _) = events.until(is("approval_settled")).await;
    assert_eq!(
        (settled["requestId"].as_str(), settled["settlement"].as_str()),
        (Some(request), Some("denied"))
    );
    events.until(is("turn_ended")).await;
    chat.await.unwrap();

    // A task run, started by run-now, is announced by the scheduler from start to finish.
    let task = app
        .call(
            "POST",
            "/api/agents/bot/tasks",
            Some(
                json!({"prompt": "report", "scheduleType": "interval", "scheduleValue": "3600000"}),
            ),
        )
        .await;
    let task = task.body["task"]["id"].as_str().unwrap().to_owned();
    let (changed, _) = events.until(is("task_changed")).await;
    assert_eq!(changed["taskId"], task.as_str());
    let run = app.call("POST", &format!("/api/agents/bot/tasks/{task}/run"), None).await;
    assert_eq!(run.status, 202, "{}", run.body);
    let run = run.body["run"]["id"].as_str().unwrap().to_owned();
    let (started, seen) = events.until(is("run_started")).await;
    assert_eq!(started["runId"], run.as_str());
    let run_session = started["sessionId"].as_str().unwrap().to_owned();
    let (finished, seen_after) = events.until(is("run_finished")).await;
    assert_eq!(
        (finished["runId"].as_str(), finished["status"].as_str()),
        (Some(run.as_str()), Some("success"))
    );
    assert!(
        seen.iter()
            .chain(&seen_after)
            .any(|e| e["type"] == "session_created" && e["sessionId"] == run_session.as_str()),
        "the run's session is announced"
    );

    let deleted = app.call("DELETE", &format!("/api/agents/bot/sessions/{session}"), None).await;
    assert_eq!(deleted.status, 200);
    let (gone, _) = events.until(is("session_deleted")).await;
    assert_eq!(gone["sessionId"], session.as_str());
}

#[actix_web::test]
async fn a_client_resumes_after_its_last_event_id_or_is_told_to_resync() {
    let app = TestApp::spawn(vec![]).await;
    let (mut events, ready) = app.events(None).await;
    app.create_agent("first").await;
    let (first_id, first) = events.next().await.unwrap();
    assert_eq!(first["agentName"], "first");
    let first_id = first_id.unwrap();
    // An id is `<stream>-<n>`: the node's stream, and a number that increases.
    let (stream, first_n) = first_id.split_once('-').unwrap();
    let (ready_stream, ready_n) = ready.split_once('-').unwrap();
    assert_eq!(stream, ready_stream, "one stream");
    assert!(first_n.parse::<u64>().unwrap() > ready_n.parse::<u64>().unwrap(), "ids increase");
    drop(events);
    app.create_agent("second").await;
    app.create_agent("third").await;

    // Resuming after the first: what was missed comes, in order, then what comes next.
    let (mut resumed, position) = app.events(Some(&first_id)).await;
    assert_eq!(position, first_id, "ready names where the stream resumes");
    assert_eq!(resumed.next().await.unwrap().1["agentName"], "second");
    assert_eq!(resumed.next().await.unwrap().1["agentName"], "third");
    app.create_agent("fourth").await;
    assert_eq!(resumed.next().await.unwrap().1["agentName"], "fourth");

    // An id the server no longer holds (or never gave) says reload, and the stream goes on.
    let (gone, another_nodes) =
        (format!("{stream}-1"), format!("{}-{first_n}", orbit_store::new_ulid()));
    for stale in [gone.as_str(), "1", "not-a-number", another_nodes.as_str()] {
        let (mut stale_stream, _) = app.events(Some(stale)).await;
        let (_, resync) = stale_stream.next().await.unwrap();
        assert_eq!(resync["type"], "resync", "{stale}: {resync}");
        app.create_agent(&format!("after-{}", stale.len())).await;
        let (_, next) = stale_stream.next().await.unwrap();
        assert_eq!(next["type"], "agent_changed", "{stale}: {next}");
    }
}

#[actix_web::test]
async fn the_event_stream_needs_the_token_like_every_api_route() {
    let app = TestApp::spawn_with_token(vec![], Some("secret-token")).await;
    let anonymous = app.client.get(format!("{}/api/events", app.address)).send().await.unwrap();
    assert_eq!(anonymous.status(), 401);
    let (_events, _) = app.events(None).await;
}

#[actix_web::test]
async fn a_message_the_model_never_handles_is_announced_dead_and_listed() {
    let refusal =
        r#"{"type":"error","error":{"type":"invalid_request_error","message":"scripted refusal"}}"#;
    let app = TestApp::spawn(vec![Rule::always(Reply::HttpError(400, refusal.into()))]).await;
    app.create_agent("bot").await;
    let (mut events, _) = app.events(None).await;
    let sent = app
        .call("POST", "/api/agents/bot/inbox", Some(json!({"fromAgent": "ann", "message": "hi"})))
        .await;
    let message = sent.body["message"]["id"].as_str().unwrap().to_owned();
    let session = app.create_session("bot").await;
    for attempt in 1..=3 {
        let (status, chat) =
            app.chat(json!({"agentName": "bot", "sessionId": session, "message": "go"})).await;
        assert_eq!(status, 200);
        assert!(chat.iter().any(|e| e["type"] == "error"), "turn {attempt} fails: {chat:?}");
        let wanted = if attempt < 3 { "inbox_released" } else { "inbox_dead" };
        let (settled, _) = events.until(is(wanted)).await;
        assert_eq!(settled["messageId"], message.as_str());
    }
    let dead = app.call("GET", "/api/agents/bot/inbox/dead", None).await;
    assert_eq!(dead.status, 200, "{}", dead.body);
    assert_eq!(dead.body["messages"][0]["id"], message.as_str());
    assert_eq!(dead.body["messages"][0]["status"], "dead");
    assert_eq!(app.call("GET", "/api/agents/bot/inbox", None).await.body["messages"], json!([]));
    assert_eq!(app.call("GET", "/api/agents/ghost/inbox/dead", None).await.status, 404);
}
