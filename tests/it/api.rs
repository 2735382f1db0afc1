//! The plan's verification flow and the contract's error rows, over HTTP.

use orbit_testkit::{Reply, Rule};
use serde_json::json;

use crate::helpers::{TestApp, read};

#[actix_web::test]
async fn the_verification_flow_works_end_to_end() {
    let app = TestApp::spawn(vec![Rule::always(Reply::Text("hello from the model".into()))]).await;
    assert_eq!(app.call("GET", "/health", None).await.status, 200);

    let created = app.call("POST", "/api/agents", Some(json!({"name": "test-bot"}))).await;
    assert_eq!(created.status, 201, "{}", created.body);
    assert_eq!(created.body["agent"]["name"], "test-bot");
    let session_id = app.create_session("test-bot").await;

    for prompt in ["hello", "hello again"] {
        let (status, events) = app
            .chat(json!({"agentName": "test-bot", "sessionId": session_id, "message": prompt}))
            .await;
        assert_eq!(status, 200);
        assert_eq!(
            events[0],
            json!({"type": "system", "subtype": "orbit_session", "sessionId": session_id}),
            "Orbit's session id comes first"
        );
        assert!(
            events.iter().any(|e| e["type"] == "system" && e["subtype"] == "init"),
            "runtime events pass through"
        );
        let result = events.iter().find(|e| e["type"] == "result").unwrap();
        assert_eq!(result["result"], "hello from the model");
    }

    let sessions = app.call("GET", "/api/agents/test-bot/sessions", None).await;
    assert_eq!(
        sessions.body["sessions"].as_array().unwrap().len(),
        1,
        "the chat reused the session"
    );
    let detail =
        app.call("GET", &format!("/api/agents/test-bot/sessions/{session_id}"), None).await;
    assert_eq!(detail.body["messages"].as_array().unwrap().len(), 4);
    assert_eq!(detail.body["session"]["messageCount"], 4);
    assert!(detail.body["session"]["sdkSessionId"].is_string());

    let sent = app
        .call(
            "POST",
            "/api/agents/test-bot/inbox",
            Some(json!({"fromAgent": "alice", "message": "status?"})),
        )
        .await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    let message_id = sent.body["message"]["id"].as_str().unwrap().to_owned();
    let inbox = app.call("GET", "/api/agents/test-bot/inbox", None).await;
    assert_eq!(inbox.body["messages"][0]["id"], message_id.as_str());
    assert_eq!(
        app.call("DELETE", &format!("/api/agents/test-bot/inbox/{message_id}"), None).await.status,
        200
    );
    let archived = app.call("GET", &format!("/api/agents/test-bot/inbox/{message_id}"), None).await;
    assert_eq!(archived.body["message"]["status"], "archived");

    let task = app
        .call("POST", "/api/agents/test-bot/tasks", Some(json!({"prompt": "Check status", "scheduleType": "interval", "scheduleValue": "60000", "contextMode": "isolated"})))
        .await;
    assert_eq!(task.status, 201, "{}", task.body);
    assert!(task.body["task"]["nextRun"].is_string());
    let task_id = task.body["task"]["id"].as_str().unwrap().to_owned();
    let all = app.call("GET", "/api/tasks", None).await;
    assert_eq!(all.body["tasks"].as_array().unwrap().len(), 1);
    let paused = app
        .call(
            "PUT",
            &format!("/api/agents/test-bot/tasks/{task_id}"),
            Some(json!({"status": "paused"})),
        )
        .await;
    assert_eq!(
        (paused.body["task"]["status"].as_str(), paused.body["task"]["nextRun"].is_null()),
        (Some("paused"), true)
    );
    assert_eq!(
        app.call("GET", &format!("/api/agents/test-bot/tasks/{task_id}/runs"), None).await.body,
        json!({"runs": []})
    );

    // A chat without a session makes one.
    let (_, events) = app.chat(json!({"agentName": "test-bot", "message": "new thread"})).await;
    assert_ne!(events[0]["sessionId"], session_id.as_str());
    assert_eq!(
        app.call("GET", "/api/agents/test-bot/sessions", None).await.body["sessions"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    assert!(
        !orbit_testkit::processes_with_env(&app.tmp_marker()).is_empty(),
        "warm CLI processes between turns"
    );
    assert_eq!(app.call("DELETE", "/api/agents/test-bot", None).await.status, 200);
    assert_eq!(app.call("GET", "/api/agents/test-bot", None).await.status, 404);
    assert!(
        orbit_testkit::processes_with_env(&app.tmp_marker()).is_empty(),
        "no CLI outlives its agent's deletion"
    );
}

#[actix_web::test]
async fn every_error_is_json_with_a_fitting_status() {
    let app = TestApp::spawn(vec![]).await;
    app.create_agent("bot").await;
    let unknown_session = "01ARZ3NDEKTSV4RRFFQ69G5FAV";
    let cases: Vec<(&str, String, Option<serde_json::Value>, u16)> = vec![
        ("POST", "/api/agents".into(), Some(json!({"name": "bot"})), 409),
        ("POST", "/api/agents".into(), Some(json!({"name": "Bad Name"})), 400),
        ("POST", "/api/agents".into(), Some(json!({"nom": "x"})), 400),
        ("GET", "/api/agents/..".into(), None, 400),
        ("GET", "/api/agents/%2e%2e".into(), None, 400),
        ("GET", "/api/agents/A".into(), None, 400),
        ("GET", format!("/api/agents/{}", "a".repeat(65)), None, 400),
        ("GET", "/api/agents/ghost".into(), None, 404),
        ("GET", "/api/agents/bot/sessions/not-a-ulid".into(), None, 400),
        ("GET", format!("/api/agents/bot/sessions/{unknown_session}"), None, 404),
        ("POST", format!("/api/agents/bot/sessions/{unknown_session}/abort"), None, 404),
        ("POST", "/api/nodes/-worker/release".into(), None, 400),
        ("POST", format!("/api/nodes/{}/release", "n".repeat(101)), None, 400),
        ("GET", format!("/api/agents/bot/inbox/{unknown_session}"), None, 404),
        (
            "POST",
            "/api/agents/bot/inbox".into(),
            Some(json!({"fromAgent": "a", "message": ""})),
            400,
        ),
        (
            "POST",
            "/api/agents/bot/tasks".into(),
            Some(
                json!({"prompt": "p", "scheduleType": "cron", "scheduleValue": "61 * * * *", "contextMode": "isolated"}),
            ),
            400,
        ),
        (
            "POST",
            "/api/agents/bot/tasks".into(),
            Some(
                json!({"prompt": "p", "scheduleType": "interval", "scheduleValue": "10", "contextMode": "isolated"}),
            ),
            400,
        ),
        (
            "POST",
            "/api/chat".into(),
            Some(json!({"agentName": "bot", "sessionId": unknown_session, "message": "hi"})),
            404,
        ),
        ("GET", "/no/such/route".into(), None, 404),
    ];
    for (method, path, body, status) in cases {
        let answer = app.call(method, &path, body).await;
        assert_eq!(answer.status, status, "{method} {path}: {}", answer.body);
        assert!(
            answer.body["error"].is_string() && answer.body["code"].is_string(),
            "{method} {path}: {}",
            answer.body
        );
    }
    let cron = app
        .call("POST", "/api/agents/bot/tasks", Some(json!({"prompt": "p", "scheduleType": "cron", "scheduleValue": "61 * * * *", "contextMode": "isolated"})))
        .await;
    assert!(
        cron.body["error"].as_str().unwrap().contains("invalid cron expression '61 * * * *'"),
        "{}",
        cron.body
    );

    let malformed = read(
        app.builder("POST", "/api/agents")
            .insert_header(("content-type", "application/json"))
            .send_body("{not json")
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(malformed.status, 400);
    let huge = format!("{{\"name\": \"{}\"}}", "x".repeat(2 * 1024 * 1024));
    let too_large = read(
        app.builder("POST", "/api/agents")
            .insert_header(("content-type", "application/json"))
            .send_body(huge)
            .await
            .unwrap(),
    )
    .await;
    assert_eq!(
        (too_large.status, too_large.body["code"].as_str()),
        (413, Some("payload_too_large"))
    );
    assert_eq!(
        app.call("GET", "/api/agents", None).await.body["agents"].as_array().unwrap().len(),
        1,
        "bad input changed nothing"
    );
}

#[actix_web::test]
async fn a_token_guards_every_api_route() {
    let app = TestApp::spawn_with_token(vec![], Some("s3cret-token")).await;
    assert_eq!(app.call("GET", "/api/agents", None).await.status, 200);
    let anonymous = |path: &str| app.client.get(format!("{}{path}", app.address));
    assert_eq!(read(anonymous("/api/agents").send().await.unwrap()).await.status, 401);
    assert_eq!(
        read(anonymous("/api/agents?token=s3cret-token").send().await.unwrap()).await.status,
        401,
        "never from the query string"
    );
    let wrong = anonymous("/api/agents")
        .insert_header(("Authorization", "Bearer s3cret-tokeX"))
        .send()
        .await
        .unwrap();
    assert_eq!(read(wrong).await.status, 401);
    assert_eq!(
        read(anonymous("/health").send().await.unwrap()).await.status,
        200,
        "health needs no token"
    );
}

#[actix_web::test]
async fn the_openapi_document_lists_every_route() {
    let app = TestApp::spawn(vec![]).await;
    let document = app.call("GET", "/api/openapi.json", None).await;
    assert_eq!(document.status, 200);
    assert_eq!(document.body["openapi"], "3.1.0");
    let contract = [
        ("get", "/health"),
        ("post", "/api/agents"),
        ("get", "/api/agents"),
        ("get", "/api/agents/{name}"),
        ("put", "/api/agents/{name}"),
        ("delete", "/api/agents/{name}"),
        ("get", "/api/agents/{name}/sessions"),
        ("post", "/api/agents/{name}/sessions"),
        ("get", "/api/agents/{name}/sessions/{id}"),
        ("put", "/api/agents/{name}/sessions/{id}"),
        ("delete", "/api/agents/{name}/sessions/{id}"),
        ("post", "/api/agents/{name}/sessions/{id}/abort"),
        ("get", "/api/agents/{name}/inbox"),
        ("post", "/api/agents/{name}/inbox"),
        ("get", "/api/agents/{name}/inbox/{msg}"),
        ("delete", "/api/agents/{name}/inbox/{msg}"),
        ("get", "/api/tasks"),
        ("get", "/api/agents/{name}/tasks"),
        ("post", "/api/agents/{name}/tasks"),
        ("put", "/api/agents/{name}/tasks/{id}"),
        ("delete", "/api/agents/{name}/tasks/{id}"),
        ("get", "/api/agents/{name}/tasks/{id}"),
        ("get", "/api/agents/{name}/tasks/{id}/runs"),
        ("post", "/api/chat"),
        ("get", "/api/openapi.json"),
        ("post", "/api/agents/{name}/sessions/{id}/permissions/{requestId}"),
        ("get", "/api/agents/{name}/worktrees"),
        ("delete", "/api/agents/{name}/worktrees/{id}"),
        ("post", "/api/agents/{name}/tasks/{id}/run"),
        ("get", "/api/approvals"),
        ("get", "/api/agents/{name}/approvals"),
        ("get", "/api/agents/{name}/sessions/{id}/stream"),
        ("get", "/api/agents/{name}/sessions/{id}/transcript"),
        ("get", "/api/events"),
        ("get", "/api/agents/{name}/inbox/dead"),
        ("get", "/api/agents/{name}/inbox/archive"),
        ("post", "/api/schedules/preview"),
        ("post", "/api/nodes/{node}/release"),
    ];
    for (method, path) in contract {
        assert!(
            document.body["paths"][path][method]["summary"].is_string(),
            "{method} {path} is not documented"
        );
    }
    let documented: usize = document.body["paths"]
        .as_object()
        .unwrap()
        .values()
        .map(|item| item.as_object().unwrap().len())
        .sum();
    assert_eq!(documented, contract.len(), "the document lists the contract's routes, no more");

    // Every documented route is served: a request to it reaches a handler (whatever it then
    // answers), never the fallback for a path or a method the server does not know. Names
    // an agent that does not exist, so that no request changes anything.
    for (path, item) in document.body["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            let concrete = concrete_path(path);
            if path == "/api/events" {
                // A stream that never ends by itself: served when its first event comes.
                app.events(None).await;
                continue;
            }
            let body = matches!(method.as_str(), "post" | "put").then(|| json!({}));
            let answer = app.call(&method.to_uppercase(), &concrete, body).await;
            assert!(
                !unknown_route(&answer),
                "{method} {path} is documented but not served: {} {}",
                answer.status,
                answer.body
            );
        }
    }
    // And the check can tell: routes the server lacks are caught by it.
    assert!(unknown_route(&app.call("GET", "/api/agents/ghost/nothing-here", None).await));
    assert!(unknown_route(&app.call("PATCH", "/api/agents/ghost", Some(json!({}))).await));
}

/// A documented path with its parameters filled in: an agent that does not exist, ULIDs.
fn concrete_path(path: &str) -> String {
    path.split('/')
        .map(|segment| match segment {
            "{name}" => "ghost",
            s if s.starts_with('{') => "01ARZ3NDEKTSV4RRFFQ69G5FAV",
            s => s,
        })
        .collect::<Vec<_>>()
        .join("/")
}

/// Whether the server answered as it does for a route it does not have: a 404 naming no
/// route, or a 405 for a method the path does not take.
fn unknown_route(answer: &crate::helpers::Answer) -> bool {
    let no_route = answer.body["error"].as_str().is_some_and(|e| e.starts_with("no route for"));
    (answer.status == 404 && no_route) || answer.status == 405
}

/// Pages `path` with `?limit=2`, following `nextCursor`, and returns the ids of `key` in order.
async fn paged_ids(app: &TestApp, path: &str, key: &str) -> Vec<String> {
    let mut ids = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(cursor) => format!("{path}?limit=2&cursor={cursor}"),
            None => format!("{path}?limit=2"),
        };
        let page = app.call("GET", &url, None).await;
        assert_eq!(page.status, 200, "{url}: {}", page.body);
        let records = page.body[key].as_array().unwrap();
        assert!(records.len() <= 2, "{url}: a page holds at most its limit");
        ids.extend(records.iter().map(|r| r["id"].as_str().unwrap().to_owned()));
        match page.body["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.replace('/', "%2F")),
            None => return ids,
        }
    }
}

async fn all_ids(app: &TestApp, path: &str, key: &str) -> Vec<String> {
    let all = app.call("GET", path, None).await;
    assert_eq!(all.status, 200, "{}", all.body);
    assert!(all.body.get("nextCursor").is_none(), "no page asked, no cursor: {}", all.body);
    all.body[key].as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap().to_owned()).collect()
}

#[actix_web::test]
async fn listings_answer_pages_with_limit_and_cursor() {
    let app = TestApp::spawn(vec![]).await;
    for agent in ["pager", "pager-two"] {
        assert_eq!(app.call("POST", "/api/agents", Some(json!({"name": agent}))).await.status, 201);
        for index in 0..5 {
            app.create_session(agent).await;
            let sent = app
                .call(
                    "POST",
                    &format!("/api/agents/{agent}/inbox"),
                    Some(json!({"fromAgent": "someone", "message": format!("job {index}")})),
                )
                .await;
            assert_eq!(sent.status, 201, "{}", sent.body);
            let task = app
                .call("POST", &format!("/api/agents/{agent}/tasks"), Some(json!({"prompt": format!("task {index}"), "scheduleType": "cron", "scheduleValue": "0 9 * * 1"})))
                .await;
            assert_eq!(task.status, 201, "{}", task.body);
        }
    }
    for (path, key) in [
        ("/api/agents/pager/sessions", "sessions"),
        ("/api/agents/pager/inbox", "messages"),
        ("/api/agents/pager/tasks", "tasks"),
        ("/api/tasks", "tasks"),
    ] {
        let all = all_ids(&app, path, key).await;
        assert!(all.len() >= 5, "{path}: {all:?}");
        assert_eq!(paged_ids(&app, path, key).await, all, "{path}: the pages make the listing");
    }
    let task = all_ids(&app, "/api/agents/pager/tasks", "tasks").await[0].clone();
    let runs = format!("/api/agents/pager/tasks/{task}/runs");
    assert_eq!(paged_ids(&app, &runs, "runs").await, all_ids(&app, &runs, "runs").await);

    for bad in [
        "/api/agents/pager/sessions?limit=0",
        "/api/agents/pager/sessions?limit=1001",
        "/api/agents/pager/sessions?limit=two",
        "/api/agents/pager/inbox?cursor=01HZZZZZZZZZZZZZZZZZZZZZZZ",
        "/api/agents/pager/tasks?limit=2&cursor=not-a-cursor",
        "/api/tasks?limit=2&cursor=pager",
    ] {
        let answer = app.call("GET", bad, None).await;
        assert_eq!(answer.status, 400, "{bad}: {}", answer.body);
        assert_eq!(answer.body["code"], "invalid_input", "{bad}: {}", answer.body);
    }
}

/// Only a node that is gone can be released: the node asked is running, so releasing its own
/// name is a 409 naming it; a name no record is pinned to releases nothing.
#[actix_web::test]
async fn a_running_node_is_not_released() {
    let app = TestApp::spawn(vec![]).await;
    let own = std::fs::read_to_string(app.dir.path().join("data").join("node-name")).unwrap();
    let own = own.trim();
    let refused = app.call("POST", &format!("/api/nodes/{own}/release"), None).await;
    assert_eq!(refused.status, 409, "{}", refused.body);
    assert_eq!(refused.body["code"], "conflict");
    let message = refused.body["error"].as_str().unwrap();
    assert!(message.contains(&format!("node '{own}' is running")), "{message}");
    let nothing = app.call("POST", "/api/nodes/never-was/release", None).await;
    assert_eq!(nothing.status, 200, "{}", nothing.body);
    assert_eq!(nothing.body, json!({"node": "never-was", "sessions": [], "tasks": []}));
}
