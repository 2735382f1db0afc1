//! Scheduled tasks end to end: the real server's scheduler runs turns on the real CLI.

use std::collections::HashSet;
use std::time::Duration;

use orbit_testkit::{Reply, Rule};
use serde_json::{Value, json};

use crate::helpers::TestApp;

async fn runs(app: &TestApp, task: &str) -> Vec<Value> {
    app.call("GET", &format!("/api/agents/bot/tasks/{task}/runs"), None).await.body["runs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

#[actix_web::test]
async fn an_interval_task_runs_its_prompt_in_fresh_sessions() {
    let app = TestApp::spawn(vec![
        Rule::when_user_says("report status", Reply::Text("all green".into())),
        Rule::always(Reply::Text("ok".into())),
    ])
    .await;
    app.create_agent("bot").await;
    let task = app
        .call("POST", "/api/agents/bot/tasks", Some(json!({"prompt": "report status", "scheduleType": "interval", "scheduleValue": "1000", "contextMode": "isolated"})))
        .await;
    assert_eq!(task.status, 201, "{}", task.body);
    let task_id = task.body["task"]["id"].as_str().unwrap().to_owned();

    let mut finished = Vec::new();
    for _ in 0..120 {
        finished =
            runs(&app, &task_id).await.into_iter().filter(|r| r["status"] == "success").collect();
        if finished.len() >= 2 {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    }
    assert!(finished.len() >= 2, "two runs succeeded: {:?}", runs(&app, &task_id).await);
    assert!(finished.iter().all(|r| r["result"] == "all green"));
    let sessions: HashSet<_> =
        finished.iter().map(|r| r["sessionId"].as_str().unwrap().to_owned()).collect();
    assert_eq!(sessions.len(), finished.len(), "a fresh session for each run");

    // Deleting the task stops it.
    assert_eq!(
        app.call("DELETE", &format!("/api/agents/bot/tasks/{task_id}"), None).await.status,
        200
    );
    let sessions_after_delete =
        app.call("GET", "/api/agents/bot/sessions", None).await.body["sessions"]
            .as_array()
            .unwrap()
            .len();
    actix_web::rt::time::sleep(Duration::from_secs(3)).await;
    let sessions_later = app.call("GET", "/api/agents/bot/sessions", None).await.body["sessions"]
        .as_array()
        .unwrap()
        .len();
    assert_eq!(sessions_later, sessions_after_delete, "no run after deletion");
}

#[actix_web::test]
async fn run_now_starts_a_run_and_refuses_to_overlap() {
    let app = TestApp::spawn(vec![
        Rule::when_user_says(
            "slow job",
            Reply::Delayed(Duration::from_secs(4), Box::new(Reply::Text("finished".into()))),
        ),
        Rule::always(Reply::Text("ok".into())),
    ])
    .await;
    app.create_agent("bot").await;
    let task = app
        .call("POST", "/api/agents/bot/tasks", Some(json!({"prompt": "slow job", "scheduleType": "cron", "scheduleValue": "0 0 1 1 *", "contextMode": "main"})))
        .await;
    let task_id = task.body["task"]["id"].as_str().unwrap().to_owned();
    let started = app.call("POST", &format!("/api/agents/bot/tasks/{task_id}/run"), None).await;
    assert_eq!(started.status, 202, "{}", started.body);
    assert_eq!(started.body["run"]["status"], "running");
    let overlapping = app.call("POST", &format!("/api/agents/bot/tasks/{task_id}/run"), None).await;
    assert_eq!(overlapping.status, 409, "{}", overlapping.body);
    for _ in 0..60 {
        if runs(&app, &task_id).await.first().is_some_and(|r| r["status"] == "success") {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(500)).await;
    }
    let done = runs(&app, &task_id).await;
    assert_eq!(
        (done.len(), done[0]["status"].as_str(), done[0]["result"].as_str()),
        (1, Some("success"), Some("finished"))
    );
    let main =
        app.call("GET", "/api/agents/bot", None).await.body["agent"]["mainSessionId"].clone();
    assert_eq!(done[0]["sessionId"], main, "main mode continues the agent's main session");
}
