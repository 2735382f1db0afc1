//! The server on PostgreSQL (`--database-url`), alone and as several nodes on one database:
//! each node has its own data directory and scripted model, everything else is shared.

use std::rc::Rc;

use orbit_testkit::postgres::TestDatabase;
use orbit_testkit::{Reply, Rule, last_user_text};
use serde_json::{Value, json};

use crate::helpers::TestApp;

/// A node of a cluster on `database`, answering every prompt with `reply`.
async fn node(database: &TestDatabase, reply: &str) -> TestApp {
    let url = database.url.clone();
    TestApp::spawn_configured(vec![Rule::always(Reply::Text(reply.into()))], None, move |s| {
        s.database_url = Some(url);
        s.database_pool_size = 8;
    })
    .await
}

fn result_of(events: &[Value]) -> &Value {
    &events.iter().find(|e| e["type"] == "result").unwrap_or_else(|| panic!("{events:?}"))["result"]
}

/// One node on PostgreSQL serves the API as on files: agents, chats (resumed), sessions with
/// their messages, the inbox and tasks.
#[actix_web::test]
async fn the_server_runs_on_postgresql() {
    let database = TestDatabase::new();
    let app = node(&database, "hello from the model").await;
    let created = app.call("POST", "/api/agents", Some(json!({"name": "bot"}))).await;
    assert_eq!(created.status, 201, "{}", created.body);
    let (status, events) = app.chat(json!({"agentName": "bot", "message": "hi"})).await;
    assert_eq!(status, 200);
    assert_eq!(result_of(&events), "hello from the model");
    let session = events.iter().find_map(|e| e["sessionId"].as_str()).unwrap().to_owned();
    let (_, events) =
        app.chat(json!({"agentName": "bot", "sessionId": session, "message": "again"})).await;
    assert_eq!(result_of(&events), "hello from the model");
    assert!(events.iter().all(|e| e["subtype"] != "orbit_resume_failed"), "resumed on one node");

    let detail = app.call("GET", &format!("/api/agents/bot/sessions/{session}"), None).await;
    assert_eq!(detail.body["session"]["messageCount"], 4, "{}", detail.body);
    assert_eq!(detail.body["messages"].as_array().unwrap().len(), 4);
    let sent = app
        .call(
            "POST",
            "/api/agents/bot/inbox",
            Some(json!({"fromAgent": "alice", "message": "status?"})),
        )
        .await;
    assert_eq!(sent.status, 201, "{}", sent.body);
    let task = app
        .call("POST", "/api/agents/bot/tasks", Some(json!({"prompt": "Check", "scheduleType": "interval", "scheduleValue": "60000", "contextMode": "isolated"})))
        .await;
    assert_eq!(task.status, 201, "{}", task.body);
    let tasks = app.call("GET", "/api/tasks", None).await;
    assert_eq!(tasks.body["tasks"].as_array().unwrap().len(), 1, "{}", tasks.body);
}

/// A session made on node A is listed, read, renamed and chatted with on node B.
#[actix_web::test]
async fn a_session_made_on_one_node_is_served_by_another() {
    let database = TestDatabase::new();
    let a = node(&database, "from node a").await;
    let b = node(&database, "from node b").await;
    assert_eq!(a.call("POST", "/api/agents", Some(json!({"name": "bot"}))).await.status, 201);
    let (_, events) =
        a.chat(json!({"agentName": "bot", "message": "remember: the code is 4711"})).await;
    assert_eq!(result_of(&events), "from node a");
    let session = events.iter().find_map(|e| e["sessionId"].as_str()).unwrap().to_owned();

    let listed = b.call("GET", "/api/agents/bot/sessions", None).await;
    assert_eq!(listed.body["sessions"][0]["id"], session.as_str(), "{}", listed.body);
    let path = format!("/api/agents/bot/sessions/{session}");
    let renamed = b.call("PUT", &path, Some(json!({"title": "renamed on b"}))).await;
    assert_eq!(renamed.status, 200, "{}", renamed.body);
    assert_eq!(a.call("GET", &path, None).await.body["session"]["title"], "renamed on b");

    let (status, events) = b
        .chat(json!({"agentName": "bot", "sessionId": session, "message": "what is the code?"}))
        .await;
    assert_eq!(status, 200);
    assert_eq!(result_of(&events), "from node b");
    // The CLI conversation begun on A resumed on B: A's transcript was restored into B's CLI
    // state, so the earlier turn reached B's model with the new one.
    assert!(
        events.iter().all(|e| e["subtype"] != "orbit_resume_failed"),
        "resumed without falling back to a fresh session: {events:?}"
    );
    let asked = b.model.requests();
    let last = serde_json::to_string(asked.last().unwrap()).unwrap();
    assert!(last.contains("the code is 4711"), "the earlier turn reached the model: {last}");
    assert!(last.contains("from node a"), "with the earlier answer: {last}");
    let detail = a.call("GET", &path, None).await;
    assert_eq!(detail.body["session"]["messageCount"], 4, "{}", detail.body);
    assert_eq!(detail.body["messages"][3]["content"], "from node b");
}

/// Chats on two nodes at once claim the agent's inbox: every message reaches the model in
/// exactly one turn, on one node, and ends read.
#[actix_web::test]
async fn inbox_messages_are_claimed_once_across_nodes() {
    let database = TestDatabase::new();
    let a = Rc::new(node(&database, "ok").await);
    let b = Rc::new(node(&database, "ok").await);
    assert_eq!(a.call("POST", "/api/agents", Some(json!({"name": "bot"}))).await.status, 201);
    let markers: Vec<String> = (0..12).map(|i| format!("inbox-marker-{i:02}")).collect();
    for marker in &markers {
        let sent = a
            .call(
                "POST",
                "/api/agents/bot/inbox",
                Some(json!({"fromAgent": "alice", "message": marker})),
            )
            .await;
        assert_eq!(sent.status, 201, "{}", sent.body);
    }
    let mut chats = Vec::new();
    for index in 0..4 {
        let app = if index % 2 == 0 { a.clone() } else { b.clone() };
        chats.push(actix_web::rt::spawn(async move {
            app.chat(json!({"agentName": "bot", "message": format!("turn {index}")})).await
        }));
    }
    for chat in chats {
        let (status, events) = chat.await.unwrap();
        assert_eq!(status, 200, "{events:?}");
    }
    // What the turns did not take is taken by one more turn on each node.
    for app in [&a, &b] {
        let (status, _) = app.chat(json!({"agentName": "bot", "message": "sweep"})).await;
        assert_eq!(status, 200);
    }
    let requests: Vec<String> =
        a.model.requests().iter().chain(b.model.requests().iter()).map(last_user_text).collect();
    for marker in &markers {
        let seen = requests.iter().filter(|text| text.contains(marker.as_str())).count();
        assert_eq!(seen, 1, "{marker} reached the model {seen} times");
    }
    let inbox = b.call("GET", "/api/agents/bot/inbox", None).await;
    assert_eq!(inbox.body["messages"].as_array().unwrap().len(), 0, "all read: {}", inbox.body);
}

async fn runs_of(app: &TestApp, task: &str) -> Vec<Value> {
    app.call("GET", &format!("/api/agents/bot/tasks/{task}/runs"), None).await.body["runs"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

/// Two nodes' schedulers plan the same tasks: an interval task's slots and a once task's one
/// slot each fire once in the whole cluster.
#[actix_web::test]
async fn slots_fire_once_across_nodes() {
    let database = TestDatabase::new();
    let a = node(&database, "done").await;
    let b = node(&database, "done").await;
    assert_eq!(a.call("POST", "/api/agents", Some(json!({"name": "bot"}))).await.status, 201);
    // Far enough ahead that both schedulers have read it from the change feed (at most 5 s).
    let at = orbit_store::timestamp::now() + std::time::Duration::from_secs(8);
    let at = orbit_store::timestamp::rfc3339::format(at).unwrap();
    let once = a
        .call("POST", "/api/agents/bot/tasks", Some(json!({"prompt": "once job", "scheduleType": "once", "scheduleValue": at, "contextMode": "isolated"})))
        .await;
    assert_eq!(once.status, 201, "{}", once.body);
    let once = once.body["task"]["id"].as_str().unwrap().to_owned();
    let interval = b
        .call("POST", "/api/agents/bot/tasks", Some(json!({"prompt": "interval job", "scheduleType": "interval", "scheduleValue": "2000", "contextMode": "isolated"})))
        .await;
    assert_eq!(interval.status, 201, "{}", interval.body);
    let anchor = interval.body["task"]["nextRun"].clone();
    let interval = interval.body["task"]["id"].as_str().unwrap().to_owned();

    let finished = |runs: &[Value]| runs.iter().filter(|r| r["status"] != "running").count();
    for _ in 0..120 {
        let (once_runs, interval_runs) = (runs_of(&a, &once).await, runs_of(&a, &interval).await);
        if finished(&once_runs) >= 1 && finished(&interval_runs) >= 5 {
            break;
        }
        actix_web::rt::time::sleep(std::time::Duration::from_millis(500)).await;
    }
    // Let a second firing of the once slot, if there were one, show itself.
    actix_web::rt::time::sleep(std::time::Duration::from_secs(3)).await;
    let once_runs = runs_of(&b, &once).await;
    assert_eq!(once_runs.len(), 1, "the once task ran once: {once_runs:?}");
    assert_eq!(once_runs[0]["status"], "success", "{once_runs:?}");
    let interval_runs = runs_of(&b, &interval).await;
    assert!(interval_runs.len() >= 5, "{interval_runs:?}");
    // Every slot is consumed once, by a run or by a skip (a slot that met the previous,
    // slow, run): had both nodes fired a slot, there would be more than the schedule had.
    let parse = |text: &Value| {
        time::OffsetDateTime::parse(
            text.as_str().unwrap(),
            &time::format_description::well_known::Rfc3339,
        )
        .unwrap()
    };
    let slots_so_far =
        (orbit_store::timestamp::now() - parse(&anchor)).whole_milliseconds() / 2000 + 1;
    let consumed: i128 = interval_runs
        .iter()
        .map(|r| {
            if r["status"] == "skipped" {
                i128::from(r["skippedSlots"].as_u64().unwrap())
            } else {
                1
            }
        })
        .sum();
    assert!(
        consumed <= slots_so_far,
        "{consumed} slots consumed of {slots_so_far} the schedule had: {interval_runs:?}"
    );
    let requests: Vec<String> =
        a.model.requests().iter().chain(b.model.requests().iter()).map(last_user_text).collect();
    let count = |prompt: &str| requests.iter().filter(|text| text.contains(prompt)).count();
    assert_eq!(count("once job"), 1, "the once prompt reached the model once");
    let succeeded = interval_runs.iter().filter(|r| r["status"] == "success").count();
    let started = interval_runs.len();
    let reached = count("interval job");
    assert!(
        (succeeded..=started).contains(&reached),
        "each interval run reached the model once: {reached} requests for {started} runs"
    );
}
