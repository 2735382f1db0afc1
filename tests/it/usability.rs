//! What a person meets first: sortable timestamps, a task read by id, defaults, errors that
//! say which mistake, a person writing to an agent, inactive agents, forced worktree removal,
//! Orbit's own first stream event, and failures of the model told in Orbit's words.

use std::time::Duration;

use orbit_testkit::{Reply, Rule};
use serde_json::{Value, json};

use crate::helpers::TestApp;

#[actix_web::test]
async fn tasks_read_by_id_default_to_isolated_and_say_what_a_schedule_needs() {
    let app = TestApp::spawn(vec![Rule::always(Reply::Text("ok".into()))]).await;
    app.create_agent("bot").await;
    // A whole second: `time`'s own RFC 3339 wrote `...T00:00:00Z`, which sorts after
    // `...T00:00:00.5Z` as a string.
    let created = app
        .call(
            "POST",
            "/api/agents/bot/tasks",
            Some(json!({"prompt": "p", "scheduleType": "once", "scheduleValue": "2030-01-01T00:00:00Z"})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let task = &created.body["task"];
    assert_eq!(task["contextMode"], "isolated", "the default context");
    assert_eq!(task["nextRun"], "2030-01-01T00:00:00.000Z", "three fraction digits, always");
    for stamp in [&task["createdAt"], &task["nextRun"]] {
        assert_eq!(stamp.as_str().unwrap().len(), "2030-01-01T00:00:00.000Z".len(), "{stamp}");
    }

    let id = task["id"].as_str().unwrap();
    let read = app.call("GET", &format!("/api/agents/bot/tasks/{id}"), None).await;
    assert_eq!((read.status, &read.body["task"]), (200, task));
    let missing = app.call("GET", "/api/agents/bot/tasks/01JD2Y7W3Q5ZK8X9M4N6P0R1ST", None).await;
    assert_eq!((missing.status, missing.body["code"].as_str()), (404, Some("not_found")));

    let once = |value: &str| json!({"prompt": "p", "scheduleType": "once", "scheduleValue": value});
    let bad_once = app.call("POST", "/api/agents/bot/tasks", Some(once("tomorrow 9am"))).await;
    assert_eq!((bad_once.status, bad_once.body["code"].as_str()), (400, Some("invalid_schedule")));
    let message = bad_once.body["error"].as_str().unwrap();
    assert!(message.contains("RFC 3339") && message.contains("2026-11-23T21:08:15Z"), "{message}");
    let past = app.call("POST", "/api/agents/bot/tasks", Some(once("2001-01-01T00:00:00Z"))).await;
    assert_eq!(past.body["code"], "invalid_schedule", "{}", past.body);
    let field = app
        .call("POST", "/api/agents/bot/tasks", Some(json!({"prompt": 1, "scheduleType": "once", "scheduleValue": "2030-01-01T00:00:00Z"})))
        .await;
    assert_eq!(field.body["code"], "invalid_input", "{}", field.body);
    let not_json = app
        .raw(
            &format!(
                "POST /api/agents/bot/tasks HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json",
                app.authority()
            ),
            "{oops",
        )
        .await;
    assert_eq!((not_json.status, not_json.body["code"].as_str()), (400, Some("invalid_json")));
}

#[actix_web::test]
async fn a_person_writes_to_an_agent_and_the_model_is_told_who_wrote() {
    let app = TestApp::spawn(vec![Rule::always(Reply::Text("noted".into()))]).await;
    app.create_agent("bot").await;
    let send = |body: Value| app.call("POST", "/api/agents/bot/inbox", Some(body));
    let person = send(json!({"fromAgent": "Human Bob", "message": "Ship it on Friday"})).await;
    assert_eq!(person.status, 201, "{}", person.body);
    assert_eq!(
        (&person.body["message"]["fromAgent"], &person.body["message"]["fromKind"]),
        (&json!("Human Bob"), &json!("person"))
    );
    let agent = send(json!({"fromAgent": "alice", "message": "hi"})).await;
    assert_eq!(agent.body["message"]["fromKind"], "agent", "old clients keep working");
    let said = send(json!({"fromAgent": "bob", "fromKind": "person", "message": "hi"})).await;
    assert_eq!(said.body["message"]["fromKind"], "person");
    for bad in [
        json!({"fromAgent": "Human Bob", "fromKind": "agent", "message": "hi"}),
        json!({"fromAgent": "tab\there", "message": "hi"}),
        json!({"fromAgent": "", "message": "hi"}),
    ] {
        let refused = send(bad.clone()).await;
        assert_eq!(refused.status, 400, "{bad}: {}", refused.body);
    }

    let (status, _) = app.chat(json!({"agentName": "bot", "message": "any news?"})).await;
    assert_eq!(status, 200);
    let prompt = orbit_testkit::last_user_text(&app.model.requests()[0]);
    assert!(prompt.contains("from Human Bob (a person, not an agent)"), "{prompt}");
    assert!(prompt.contains("from agent alice"), "{prompt}");
}

#[actix_web::test]
async fn an_inactive_agent_neither_chats_nor_runs() {
    let app = TestApp::spawn(vec![Rule::always(Reply::Text("ok".into()))]).await;
    app.create_agent("bot").await;
    let task = app
        .call(
            "POST",
            "/api/agents/bot/tasks",
            Some(json!({"prompt": "tick", "scheduleType": "interval", "scheduleValue": "1000"})),
        )
        .await;
    let task = task.body["task"]["id"].as_str().unwrap().to_owned();
    let paused = app.call("PUT", "/api/agents/bot", Some(json!({"status": "inactive"}))).await;
    assert_eq!(paused.status, 200, "{}", paused.body);

    let (status, answer) = app.chat(json!({"agentName": "bot", "message": "hi"})).await;
    assert_eq!((status, answer[0]["code"].as_str()), (409, Some("conflict")), "{answer:?}");
    assert!(answer[0]["error"].as_str().unwrap().contains("inactive"), "{answer:?}");
    let run = app.call("POST", &format!("/api/agents/bot/tasks/{task}/run"), None).await;
    assert_eq!(run.status, 409, "{}", run.body);
    // Three slots of the interval pass without a run.
    actix_web::rt::time::sleep(Duration::from_millis(3500)).await;
    let runs = app.call("GET", &format!("/api/agents/bot/tasks/{task}/runs"), None).await;
    assert_eq!(runs.body["runs"], json!([]), "an inactive agent's task does not fire");
    assert!(app.model.requests().is_empty(), "no turn reached the model");

    app.call("PUT", "/api/agents/bot", Some(json!({"status": "active"}))).await;
    let (status, events) = app.chat(json!({"agentName": "bot", "message": "hi"})).await;
    assert_eq!(status, 200);
    assert_eq!(events[0]["type"], "system");
    assert_eq!(events[0]["subtype"], "orbit_session", "Orbit's first event has its own subtype");
    assert!(events[0]["sessionId"].is_string());
    assert!(events.iter().any(|e| e["subtype"] == "init"), "the CLI's own init follows");
}

#[actix_web::test]
async fn a_dirty_worktree_is_removed_only_when_forced() {
    let app = TestApp::spawn(vec![Rule::always(Reply::Text("ok".into()))]).await;
    app.create_agent("bot").await;
    let created =
        app.call("POST", "/api/agents/bot/sessions", Some(json!({"worktree": true}))).await;
    let session = created.body["session"]["id"].as_str().unwrap().to_owned();
    let listed = app.call("GET", "/api/agents/bot/worktrees", None).await.body;
    let path = listed["worktrees"][0]["path"].as_str().unwrap().to_owned();
    std::fs::write(format!("{path}/wip.txt"), "work in progress").unwrap();

    let route = format!("/api/agents/bot/worktrees/{session}");
    assert_eq!(app.call("DELETE", &route, None).await.status, 409);
    for bad in ["?force=yes", "?forse=true"] {
        let refused = app.call("DELETE", &format!("{route}{bad}"), None).await;
        assert_eq!(refused.status, 400, "{bad}: {}", refused.body);
    }
    assert!(std::path::Path::new(&path).exists(), "refusals remove nothing");
    // Not from under its live session, even forced: it goes with the session.
    let live = app.call("DELETE", &format!("{route}?force=true"), None).await;
    assert_eq!(live.status, 409, "{}", live.body);
    assert!(live.body["error"].as_str().unwrap().contains("session"), "{}", live.body);
    let deleted = app.call("DELETE", &format!("/api/agents/bot/sessions/{session}"), None).await;
    assert_eq!(deleted.body["worktreeKept"]["id"], session.as_str(), "kept: it has work");
    assert_eq!(app.call("DELETE", &route, None).await.status, 409, "still dirty");
    let forced = app.call("DELETE", &format!("{route}?force=true"), None).await;
    assert_eq!(forced.status, 200, "{}", forced.body);
    assert!(!std::path::Path::new(&path).exists());
    assert_eq!(
        app.call("GET", "/api/agents/bot/worktrees", None).await.body,
        json!({"worktrees": []})
    );
}

/// A chat's failure as the stream ends it and as the session stored it.
async fn failed_chat(app: &TestApp) -> (String, String) {
    let (status, events) = app.chat(json!({"agentName": "bot", "message": "hi"})).await;
    assert_eq!(status, 200);
    let last = events.last().unwrap();
    assert_eq!(last["type"], "error", "{events:?}");
    let session = events[0]["sessionId"].as_str().unwrap();
    let read = app.call("GET", &format!("/api/agents/bot/sessions/{session}"), None).await;
    let stored = read.body["messages"][1]["content"].as_str().unwrap().to_owned();
    (last["message"].as_str().unwrap().to_owned(), stored)
}

#[actix_web::test]
async fn without_credentials_orbit_says_what_to_set_and_a_login_is_shared() {
    let no_key = |settings: &mut orbit_server::config::Settings| {
        settings.cli_env.retain(|(name, _)| name != "ANTHROPIC_API_KEY");
    };
    let app =
        TestApp::spawn_configured(vec![Rule::always(Reply::Text("hello".into()))], None, no_key)
            .await;
    let (message, stored) = failed_chat(&app).await;
    assert!(
        message.contains("no credentials") && message.contains("ANTHROPIC_API_KEY"),
        "{message}"
    );
    assert!(!message.contains("/login"), "no CLI command Orbit does not have: {message}");
    assert_eq!(stored, format!("({message})"), "said once, without a doubled prefix");
    assert!(app.model.requests().is_empty());

    // The user's own login (CLAUDE_CONFIG_DIR or ~/.claude) is shared with every conversation.
    let app = TestApp::spawn_configured(
        vec![Rule::always(Reply::Text("hello".into()))],
        None,
        |settings| {
            no_key(settings);
            let user = settings.claude_user_dir.clone().unwrap();
            std::fs::create_dir_all(&user).unwrap();
            let login = json!({"claudeAiOauth": {
                "accessToken": "sk-ant-oat01-test", "refreshToken": "sk-ant-ort01-test",
                "expiresAt": 4_102_444_800_000_u64, "scopes": ["user:inference", "user:profile"],
                "subscriptionType": "max",
            }});
            std::fs::write(user.join(".credentials.json"), login.to_string()).unwrap();
        },
    )
    .await;
    let (status, events) = app.chat(json!({"agentName": "bot", "message": "hi"})).await;
    assert_eq!(status, 200);
    let result = events.iter().find(|e| e["type"] == "result").unwrap();
    assert_eq!(result["result"], "hello", "{events:?}");
}

#[actix_web::test]
async fn rate_limits_and_overload_say_what_happened_and_when_to_retry() {
    let cases = [
        (429, "rate limit reached", ["rate-limiting", "again in a minute"]),
        (529, "Overloaded", ["overloaded", "again in a few minutes"]),
        (401, "invalid x-api-key", ["refused Orbit's credentials", "ANTHROPIC_API_KEY"]),
    ];
    for (status, text, words) in cases {
        let app = TestApp::spawn(vec![Rule::always(Reply::HttpError(status, text.into()))]).await;
        let (message, stored) = failed_chat(&app).await;
        for word in words {
            assert!(message.contains(word), "{status}: {message}");
        }
        assert!(!message.contains("/login"), "{message}");
        assert_eq!(stored, format!("({message})"));
    }
}
