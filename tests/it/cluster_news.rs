//! What one node shows of the others: the tool calls waiting for a person in turns another
//! node runs (`GET /api/approvals`), and the other nodes' activity on its event stream
//! (`GET /api/events`), and where a turn another node runs is watched (`GET .../stream`). Two
//! `orbit-server` processes on one database, the real CLI on node A, every question asked of
//! node B.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use orbit_testkit::postgres::TestDatabase;
use serde_json::{Value, json};

use crate::nodes::{Node, asking_model, call, start_nodes, wait_until};

/// One event of a stream with its id.
type Framed = (Option<String>, Value);

/// Every event of a node's `GET /api/events` so far, with its id, read on a task of its own.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<Framed>>>);

impl Events {
    /// Opens the node's stream (resuming after `last_event_id`) and reads it until the
    /// returned task is dropped or the node goes; `ready` has come when this returns.
    async fn open(
        node: &Node,
        last_event_id: Option<&str>,
    ) -> (Self, actix_web::rt::task::JoinHandle<()>) {
        let mut request = crate::nodes::client().get(node.url("/api/events"));
        if let Some(id) = last_event_id {
            request = request.insert_header(("Last-Event-ID", id));
        }
        let mut response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        let events = Self::default();
        let seen = events.clone();
        let reading = actix_web::rt::spawn(async move {
            let mut buffer = String::new();
            while let Some(Ok(chunk)) = response.next().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let frame: String = buffer.drain(..end + 2).collect();
                    let id = frame.lines().find_map(|l| l.strip_prefix("id: ")).map(str::to_owned);
                    let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) else {
                        continue; // a keep-alive comment
                    };
                    crate::schema::check_server_event(&serde_json::from_str(data).unwrap());
                    seen.0.lock().unwrap().push((id, serde_json::from_str(data).unwrap()));
                }
            }
        });
        let ready = events.clone();
        wait_until(Duration::from_secs(10), "no ready event", move || {
            ready.all().first().is_some_and(|e| e["type"] == "ready")
        })
        .await;
        (events, reading)
    }

    fn all(&self) -> Vec<Value> {
        self.0.lock().unwrap().iter().map(|(_, event)| event.clone()).collect()
    }

    fn ids(&self) -> Vec<String> {
        self.0.lock().unwrap().iter().filter_map(|(id, _)| id.clone()).collect()
    }

    /// How many events of `kind` name `key`: `value`.
    fn count(&self, kind: &str, key: &str, value: &str) -> usize {
        self.all().iter().filter(|e| e["type"] == kind && e[key] == value).count()
    }

    /// Waits until `wanted` holds of the events.
    async fn wait_for(&self, what: &str, wanted: impl Fn(&Self) -> bool) {
        let events = self.clone();
        wait_until(Duration::from_secs(30), what, move || wanted(&events)).await;
    }
}

/// The node's `GET /api/approvals`.
async fn approvals(node: &Node) -> Vec<Value> {
    let (status, body) = call(node, "GET", "/api/approvals", None).await;
    assert_eq!(status, 200, "{body}");
    crate::schema::check_answer("GET", "/api/approvals", 200, &body);
    body["approvals"].as_array().unwrap().clone()
}

/// Polls the node's approvals until `wanted` holds of them, and returns them.
async fn approvals_until(node: &Node, what: &str, wanted: impl Fn(&[Value]) -> bool) -> Vec<Value> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let listed = approvals(node).await;
        if wanted(&listed) {
            return listed;
        }
        assert!(Instant::now() < deadline, "{what}: {listed:?}");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A chat on `node` left running; its events once it ends (none when its node went away).
fn start_chat(node: &Node, body: Value) -> actix_web::rt::task::JoinHandle<Vec<Value>> {
    let url = node.url("/api/chat");
    actix_web::rt::spawn(async move {
        let Ok(mut response) = crate::nodes::client().post(url).send_json(&body).await else {
            return Vec::new();
        };
        let bytes = response.body().limit(1 << 24).await.unwrap_or_default();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .filter_map(|data| serde_json::from_str(data).ok())
            .collect()
    })
}

/// A call waiting on A is listed by B, answered through B, and gone from B's list once its
/// wait ends (answered, or its turn aborted); B's event stream shows A's turns and approvals
/// once each, and a task change (which each node reads from the change feed) once.
#[test]
fn a_nodes_approvals_and_activity_are_seen_on_another() {
    let database = TestDatabase::new();
    let (model_a, model_b) = (asking_model(), asking_model());
    let ([mut a, mut b], _dirs) = start_nodes(&database.url, [&model_a, &model_b]);
    actix_web::rt::System::new().block_on(async {
        let (on_b, _reading) = Events::open(&b, None).await;
        let agent = json!({"name": "bot", "permissionMode": "ask"});
        assert_eq!(call(&a, "POST", "/api/agents", Some(agent)).await.0, 201);
        let (_, session) = call(&a, "POST", "/api/agents/bot/sessions", None).await;
        let session = session["session"]["id"].as_str().unwrap().to_owned();
        let task =
            json!({"prompt": "later", "scheduleType": "interval", "scheduleValue": "3600000"});
        let (status, task) = call(&a, "POST", "/api/agents/bot/tasks", Some(task)).await;
        assert_eq!(status, 201, "{task}");
        let task = task["task"]["id"].as_str().unwrap().to_owned();

        // A's turn asks; B lists the call as A does, with its input, and answers it.
        let chat = json!({"agentName": "bot", "sessionId": session, "message": "write the file"});
        let running = start_chat(&a, chat.clone());
        let listed =
            approvals_until(&b, "B never listed A's call", |listed| listed.len() == 1).await;
        let on_a = approvals(&a).await;
        assert_eq!(listed, on_a, "B lists A's call as A does");
        let request = listed[0]["requestId"].as_str().unwrap().to_owned();
        assert_eq!(listed[0]["agentName"], "bot");
        assert_eq!(listed[0]["sessionId"], session.as_str());
        assert_eq!(listed[0]["toolName"], "Bash");
        assert_eq!(listed[0]["input"]["command"], "echo hi > made.txt");
        let (status, body) = call(&b, "GET", "/api/agents/bot/approvals", None).await;
        assert_eq!((status, &body["approvals"]), (200, &json!(listed)), "{body}");
        // A's turn is watched on A, and through B (cluster_watch.rs); a request B was handed
        // by another node already is not passed on again: B says where the turn runs.
        let stream = format!("/api/agents/bot/sessions/{session}/stream");
        let forwarded = crate::nodes::client()
            .get(b.url(&stream))
            .insert_header(("orbit-forwarded-by", "01JD2Y7W3Q5ZK8X9M4N6P0R1ST"))
            .send()
            .await;
        let mut forwarded = forwarded.unwrap();
        let status = forwarded.status().as_u16();
        let body: Value = forwarded.json().await.unwrap();
        assert_eq!((status, &body["code"]), (409, &json!("conflict")), "{body}");
        let node_a = std::fs::read_to_string(a.data.join("node-name")).unwrap();
        let named = format!("runs on node '{}'", node_a.trim());
        assert!(body["error"].as_str().unwrap().contains(&named), "{body}");
        let answer = format!("/api/agents/bot/sessions/{session}/permissions/{request}");
        let (status, body) = call(&b, "POST", &answer, Some(json!({"allow": true}))).await;
        assert_eq!(status, 200, "{body}");
        let events = running.await.unwrap();
        let result = events.iter().find(|e| e["type"] == "result");
        assert_eq!(result.map(|r| &r["result"]), Some(&json!("done")), "{events:?}");
        assert_eq!(approvals(&b).await, Vec::<Value>::new(), "answered: listed nowhere");
        let (status, body) = call(&b, "GET", &stream, None).await;
        assert_eq!(status, 404, "no turn runs anywhere: {body}");

        // A call whose turn ends unanswered (aborted through B) leaves B's list too.
        let running = start_chat(&a, chat);
        let listed =
            approvals_until(&b, "B never listed A's second call", |listed| listed.len() == 1).await;
        let second = listed[0]["requestId"].as_str().unwrap().to_owned();
        assert_ne!(second, request);
        let abort = format!("/api/agents/bot/sessions/{session}/abort");
        assert_eq!(call(&b, "POST", &abort, None).await.0, 200);
        running.await.unwrap();
        // Withdrawn off the turn's path: soon after the turn ended, not necessarily before.
        approvals_until(&b, "its turn ended, yet listed", <[Value]>::is_empty).await;

        // B's stream: A's activity once each, the task change once.
        on_b.wait_for("B's stream never showed A's second turn end", |events| {
            events.count("turn_ended", "sessionId", &session) == 2
        })
        .await;
        // A's news reaches B in the order A announced it: once B shows a change made on A
        // after everything above, whatever would have come twice has come.
        let sentinel = json!({"name": "sentinel"});
        assert_eq!(call(&a, "POST", "/api/agents", Some(sentinel)).await.0, 201);
        on_b.wait_for("B never showed A's sentinel change", |events| {
            events.count("agent_changed", "agentName", "sentinel") == 1
        })
        .await;
        let once = [
            ("agent_changed", "agentName", "bot"),
            ("session_created", "sessionId", session.as_str()),
            ("task_changed", "taskId", task.as_str()),
            ("approval_pending", "requestId", request.as_str()),
            ("approval_settled", "requestId", request.as_str()),
            ("approval_pending", "requestId", second.as_str()),
            ("approval_settled", "requestId", second.as_str()),
        ];
        for (kind, key, value) in once {
            assert_eq!(on_b.count(kind, key, value), 1, "{kind} {value}: {:?}", on_b.all());
        }
        assert_eq!(on_b.count("turn_started", "sessionId", &session), 2, "{:?}", on_b.all());
        let settled = |id: &str| {
            on_b.all().into_iter().find(|e| e["type"] == "approval_settled" && e["requestId"] == id)
        };
        assert_eq!(settled(&request).unwrap()["settlement"], "allowed");
        assert_eq!(settled(&second).unwrap()["settlement"], "expired");
        let ended = on_b.all().into_iter().find(|e| e["type"] == "turn_ended").unwrap();
        assert_eq!(ended["success"], true, "{ended}");

        // Ids are per node: B's last id brought to A resyncs; brought back to B it resumes.
        let last = on_b.ids().pop().unwrap();
        let (on_a, _reading_a) = Events::open(&a, Some(&last)).await;
        on_a.wait_for("A never told the client to resync", |events| events.all().len() >= 2).await;
        assert_eq!(on_a.all()[1]["type"], "resync", "{:?}", on_a.all());
        let (again_on_b, _reading_b) = Events::open(&b, Some(&last)).await;
        assert_eq!(
            call(&a, "PUT", "/api/agents/bot", Some(json!({"model": "sonnet"}))).await.0,
            200
        );
        again_on_b
            .wait_for("B never resumed with A's next change", |events| events.all().len() >= 2)
            .await;
        assert_eq!(again_on_b.all()[1]["type"], "agent_changed", "{:?}", again_on_b.all());
    });
    a.stop();
    b.stop();
}

/// The calls of a node that died (SIGKILL, nothing withdrawn) leave the others' lists once
/// its registration lapses.
#[test]
fn a_dead_nodes_approvals_are_not_listed() {
    let database = TestDatabase::new();
    let (model_a, model_b) = (asking_model(), asking_model());
    let ([mut a, mut b], _dirs) = start_nodes(&database.url, [&model_a, &model_b]);
    actix_web::rt::System::new().block_on(async {
        let agent = json!({"name": "bot", "permissionMode": "ask"});
        assert_eq!(call(&a, "POST", "/api/agents", Some(agent)).await.0, 201);
        let _running = start_chat(&a, json!({"agentName": "bot", "message": "write the file"}));
        approvals_until(&b, "B never listed A's call", |listed| listed.len() == 1).await;
        a.kill();
        // The lease is 3 s: A's registration lapses within it.
        approvals_until(&b, "a dead node's call stayed listed", <[Value]>::is_empty).await;
        let rows = database.query("SELECT count(*) FROM pending_approvals");
        assert_eq!(rows, "1", "the call is still in the database, listed by nobody");
    });
    b.stop();
}

/// A node that stops tells the others how its draining turns ended: the relay outlives the
/// clients' streams, which end first.
#[test]
fn a_stopping_nodes_draining_turns_are_seen_ending_on_another() {
    let database = TestDatabase::new();
    let (model_a, model_b) = (asking_model(), asking_model());
    let ([a, mut b], _dirs) = start_nodes(&database.url, [&model_a, &model_b]);
    actix_web::rt::System::new().block_on(async {
        let (on_b, _reading) = Events::open(&b, None).await;
        let agent = json!({"name": "bot", "permissionMode": "ask"});
        assert_eq!(call(&a, "POST", "/api/agents", Some(agent)).await.0, 201);
        let (_, session) = call(&a, "POST", "/api/agents/bot/sessions", None).await;
        let session = session["session"]["id"].as_str().unwrap().to_owned();
        let chat = json!({"agentName": "bot", "sessionId": session, "message": "write the file"});
        let _running = start_chat(&a, chat);
        let listed =
            approvals_until(&b, "B never listed A's call", |listed| listed.len() == 1).await;
        let request = listed[0]["requestId"].as_str().unwrap().to_owned();

        // A stops with its turn waiting for a person: the turn is aborted at the deadline.
        let mut a = a;
        let stopping = std::thread::spawn(move || a.stop());
        on_b.wait_for("B never heard how A's waiting call ended", |events| {
            events.count("approval_settled", "requestId", &request) == 1
        })
        .await;
        on_b.wait_for("B never heard A's draining turn end", |events| {
            events.count("turn_ended", "sessionId", &session) == 1
        })
        .await;
        stopping.join().unwrap();
        assert_eq!(approvals(&b).await, Vec::<Value>::new(), "A left: listed nowhere");
    });
    b.stop();
}

/// While the database is away a node still lists the calls its own turns hold (others' it
/// cannot know) and takes their answers; once it is back, an answered call is listed
/// nowhere.
#[test]
fn a_node_lists_and_answers_its_own_calls_while_the_database_is_away() {
    let database = TestDatabase::new();
    let (model_a, model_b) = (asking_model(), asking_model());
    let ([mut a, mut b], _dirs) = start_nodes(&database.url, [&model_a, &model_b]);
    actix_web::rt::System::new().block_on(async {
        let agent = json!({"name": "bot", "permissionMode": "ask"});
        assert_eq!(call(&a, "POST", "/api/agents", Some(agent)).await.0, 201);
        let _running = start_chat(&a, json!({"agentName": "bot", "message": "write the file"}));
        let listed =
            approvals_until(&b, "B never listed A's call", |listed| listed.len() == 1).await;
        let request = listed[0]["requestId"].as_str().unwrap().to_owned();
        let session = listed[0]["sessionId"].as_str().unwrap().to_owned();

        database.cut_off();
        assert_eq!(approvals(&a).await, listed, "A lists its own call without the database");
        assert_eq!(approvals(&b).await, Vec::<Value>::new(), "B knows of none but its own");
        let answer = format!("/api/agents/bot/sessions/{session}/permissions/{request}");
        let (status, body) = call(&a, "POST", &answer, Some(json!({"allow": true}))).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(approvals(&a).await, Vec::<Value>::new(), "answered");

        database.restore();
        approvals_until(&b, "an answered call stayed listed", <[Value]>::is_empty).await;
    });
    a.stop();
    b.stop();
}

/// A node whose connection listening for the others' news is lost (its backend terminated)
/// tells every client of its event stream `resync` once it listens again, and the other
/// nodes' news reaches them afterwards; a node whose connection stayed tells its clients
/// nothing.
#[test]
fn a_node_that_missed_news_tells_its_clients_to_resync() {
    let database = TestDatabase::new();
    let (model_a, model_b) = (asking_model(), asking_model());
    let ([mut a, mut b], _dirs) = start_nodes(&database.url, [&model_a, &model_b]);
    actix_web::rt::System::new().block_on(async {
        let (on_a, _reading_a) = Events::open(&a, None).await;
        let (on_b, _reading_b) = Events::open(&b, None).await;
        // B listens: a change made on A reaches B's stream.
        assert_eq!(call(&a, "POST", "/api/agents", Some(json!({"name": "before"}))).await.0, 201);
        on_b.wait_for("B never showed A's change", |events| {
            events.count("agent_changed", "agentName", "before") == 1
        })
        .await;

        let listener = format!("orbit listener (pid {})", b.child.id());
        let ended = database.query(&format!(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
             WHERE application_name = '{listener}' AND datname = current_database()"
        ));
        assert_eq!(ended, "1", "B's listening connection, and only it");
        on_b.wait_for("B never told its client to resync", |events| {
            events.all().iter().any(|e| e["type"] == "resync")
        })
        .await;
        let resync = on_b.all().into_iter().find(|e| e["type"] == "resync").unwrap();
        let reason = resync["reason"].as_str().unwrap();
        assert!(reason.contains("missed some of the other nodes' events"), "{reason}");

        // News flows again, on the same stream.
        assert_eq!(call(&a, "POST", "/api/agents", Some(json!({"name": "after"}))).await.0, 201);
        on_b.wait_for("B never showed A's change after it listened again", |events| {
            events.count("agent_changed", "agentName", "after") == 1
        })
        .await;
        on_a.wait_for("A's own change", |events| {
            events.count("agent_changed", "agentName", "after") == 1
        })
        .await;
        let resyncs =
            |events: &Events| events.all().iter().filter(|e| e["type"] == "resync").count();
        assert_eq!(resyncs(&on_b), 1, "{:?}", on_b.all());
        assert_eq!(resyncs(&on_a), 0, "A missed nothing: {:?}", on_a.all());
    });
    a.stop();
    b.stop();
}
