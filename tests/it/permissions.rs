//! Issue 5 over HTTP: `ask` answered by a person mid-stream, and worktree routes.

use std::time::Duration;

use futures_util::StreamExt;
use orbit_testkit::{Reply, Rule};
use serde_json::{Value, json};

use crate::helpers::TestApp;

fn write_file_rules() -> Vec<Rule> {
    vec![
        Rule::after_tool_result(Reply::Text("done".into())),
        Rule::when_user_says(
            "write the file",
            Reply::ToolUse {
                name: "Bash".into(),
                input: json!({"command": "echo hi > made.txt", "description": "write"}),
            },
        ),
        Rule::always(Reply::Text("ok".into())),
    ]
}

/// Streams a chat, answering its first permission request with `allow` over HTTP.
async fn chat_answering(app: &TestApp, session: &str, allow: bool) -> Vec<Value> {
    let mut response = app
        .builder("POST", "/api/chat")
        .send_json(&json!({"agentName": "bot", "sessionId": session, "message": "write the file"}))
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    let (mut buffer, mut events) = (String::new(), Vec::new());
    while let Some(chunk) = tokio::time::timeout(Duration::from_secs(60), response.next())
        .await
        .expect("the stream goes on")
    {
        buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        while let Some(end) = buffer.find("\n\n") {
            let frame: String = buffer.drain(..end + 2).collect();
            let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) else { continue };
            let event: Value = serde_json::from_str(data).unwrap();
            if event["type"] == "permission_request" {
                // Any client can find the waiting call, not only this stream's.
                for listing in ["/api/approvals", "/api/agents/bot/approvals"] {
                    let listed = app.call("GET", listing, None).await;
                    assert_eq!(listed.status, 200, "{}", listed.body);
                    let approvals = listed.body["approvals"].as_array().unwrap();
                    assert_eq!(approvals.len(), 1, "{listing}: {}", listed.body);
                    assert_eq!(approvals[0]["requestId"], event["requestId"]);
                    assert_eq!(approvals[0]["sessionId"], session);
                    assert_eq!(approvals[0]["agentName"], "bot");
                    assert_eq!(approvals[0]["toolName"], "Bash");
                    assert!(
                        approvals[0]["expiresAt"].as_str() > approvals[0]["createdAt"].as_str()
                    );
                }
                let path = format!(
                    "/api/agents/bot/sessions/{session}/permissions/{}",
                    event["requestId"].as_str().unwrap()
                );
                assert_eq!(
                    app.call("POST", &path, Some(json!({"allow": allow}))).await.status,
                    200
                );
                assert_eq!(
                    app.call("POST", &path, Some(json!({"allow": allow}))).await.status,
                    404,
                    "an answer for a request no longer pending"
                );
                let after = app.call("GET", "/api/approvals", None).await;
                assert_eq!(
                    after.body["approvals"],
                    json!([]),
                    "an answered call is listed no more"
                );
            }
            events.push(event);
        }
    }
    events
}

#[actix_web::test]
async fn ask_mode_is_answered_over_http() {
    let app = TestApp::spawn(write_file_rules()).await;
    app.create_agent_with(json!({"name": "bot", "permissionMode": "ask"})).await;
    let workspace = app.dir.path().join("data/workspaces/bot/made.txt");

    let denied = app.create_session("bot").await;
    let events = chat_answering(&app, &denied, false).await;
    assert!(events.iter().any(|e| e["type"] == "permission_request" && e["toolName"] == "Bash"));
    assert!(!workspace.exists(), "deny keeps the file away");

    let allowed = app.create_session("bot").await;
    chat_answering(&app, &allowed, true).await;
    assert!(workspace.exists(), "allow lets the write happen");
    let unknown = app
        .call(
            "POST",
            &format!("/api/agents/bot/sessions/{allowed}/permissions/01JD2Y7W3Q5ZK8X9M4N6P0R1ST"),
            Some(json!({"allow": true})),
        )
        .await;
    assert_eq!(unknown.status, 404, "no such request is pending");
    let malformed = app
        .call(
            "POST",
            &format!("/api/agents/bot/sessions/{allowed}/permissions/nothing"),
            Some(json!({"allow": true})),
        )
        .await;
    assert_eq!(malformed.status, 400, "request ids are ULIDs");
}

#[actix_web::test]
async fn sessions_in_worktrees_over_http() {
    let app = TestApp::spawn(vec![Rule::always(Reply::Text("ok".into()))]).await;
    app.create_agent_with(json!({"name": "bot", "permissionMode": "allow-all"})).await;
    for hostile in ["--upload-pack=x", "../x"] {
        let refused = app
            .call(
                "POST",
                "/api/agents/bot/sessions",
                Some(json!({"worktree": true, "branch": hostile})),
            )
            .await;
        assert_eq!(refused.status, 400, "{hostile}: {}", refused.body);
    }
    let created = app
        .call(
            "POST",
            "/api/agents/bot/sessions",
            Some(json!({"worktree": true, "branch": "feature/a"})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let session = created.body["session"]["id"].as_str().unwrap().to_owned();
    let listed = app.call("GET", "/api/agents/bot/worktrees", None).await.body;
    assert_eq!(listed["worktrees"][0]["sessionId"], session.as_str());
    assert_eq!(listed["worktrees"][0]["branch"], "feature/a");
    let path = listed["worktrees"][0]["path"].as_str().unwrap().to_owned();

    let (_, events) =
        app.chat(json!({"agentName": "bot", "sessionId": session, "message": "hi"})).await;
    let init = events.iter().find(|e| e["subtype"] == "init").unwrap();
    assert_eq!(
        std::fs::canonicalize(init["cwd"].as_str().unwrap()).unwrap(),
        std::fs::canonicalize(&path).unwrap(),
        "the turn ran in the worktree"
    );

    std::fs::write(format!("{path}/wip.txt"), "work in progress").unwrap();
    let refused = app.call("DELETE", &format!("/api/agents/bot/worktrees/{session}"), None).await;
    assert_eq!(refused.status, 409);
    let deleted = app.call("DELETE", &format!("/api/agents/bot/sessions/{session}"), None).await;
    assert_eq!(
        deleted.body["worktreeKept"]["id"],
        session.as_str(),
        "a dirty worktree is kept and reported"
    );
    assert!(std::path::Path::new(&path).exists());
    std::fs::remove_file(format!("{path}/wip.txt")).unwrap();
    assert_eq!(
        app.call("DELETE", &format!("/api/agents/bot/worktrees/{session}"), None).await.status,
        200
    );
    assert!(!std::path::Path::new(&path).exists());
    assert_eq!(
        app.call("GET", "/api/agents/bot/worktrees", None).await.body,
        json!({"worktrees": []})
    );
}

#[actix_web::test]
async fn tasks_in_worktrees_over_http() {
    let app = TestApp::spawn(vec![Rule::always(Reply::Text("ok".into()))]).await;
    app.create_agent("bot").await;
    let body = |extra: Value| {
        let mut body = json!({"prompt": "build it", "scheduleType": "cron", "scheduleValue": "0 0 1 1 *", "contextMode": "isolated"});
        body.as_object_mut().unwrap().extend(extra.as_object().unwrap().clone());
        body
    };
    for (extra, why) in [
        (json!({"worktree": true, "branch": "--upload-pack=x"}), "a hostile branch"),
        (json!({"branch": "feature/x"}), "a branch without a worktree"),
        (json!({"worktree": true, "contextMode": "main"}), "a worktree for the main session"),
    ] {
        assert_eq!(
            app.call("POST", "/api/agents/bot/tasks", Some(body(extra))).await.status,
            400,
            "{why}"
        );
    }
    let task = app
        .call(
            "POST",
            "/api/agents/bot/tasks",
            Some(body(json!({"worktree": true, "branch": "task/build"}))),
        )
        .await;
    assert_eq!(task.status, 201, "{}", task.body);
    let task_id = task.body["task"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        app.call("POST", &format!("/api/agents/bot/tasks/{task_id}/run"), None).await.status,
        202
    );
    let mut listed = Value::Null;
    for _ in 0..60 {
        listed = app.call("GET", "/api/agents/bot/worktrees", None).await.body;
        if listed["worktrees"].as_array().is_some_and(|w| !w.is_empty()) {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(listed["worktrees"][0]["taskId"], task_id.as_str(), "{listed}");
    let path = listed["worktrees"][0]["path"].as_str().unwrap().to_owned();
    for _ in 0..60 {
        let runs =
            app.call("GET", &format!("/api/agents/bot/tasks/{task_id}/runs"), None).await.body;
        if runs["runs"][0]["status"] != "running" {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(
        app.call("DELETE", &format!("/api/agents/bot/tasks/{task_id}"), None).await.status,
        200
    );
    assert!(!std::path::Path::new(&path).exists(), "deleting the task removes its worktree");
}
