//! A turn that one node runs is watched through any node (`GET .../stream`): the node asked
//! passes the stream through from the node that runs it, to the address that node
//! registered. Two `orbit-server` processes on one database, the real CLI, a turn held open
//! by a tool call waiting for a person.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use orbit_testkit::postgres::TestDatabase;
use serde_json::{Value, json};

use crate::nodes::{Node, asking_model, client, wait_until};

/// The token of the nodes started with one; the others ignore it.
const TOKEN: &str = "cluster-secret";

/// A request to `node` carrying the cluster's token.
fn request(node: &Node, method: &str, path: &str) -> awc::ClientRequest {
    let method = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
    client().request(method, node.url(path)).bearer_auth(TOKEN)
}

/// The status and JSON body of a call with the token.
async fn call(node: &Node, method: &str, path: &str, body: Option<Value>) -> (u16, Value) {
    let request = request(node, method, path);
    let mut response = match body {
        Some(body) => request.send_json(&body).await.unwrap(),
        None => request.send().await.unwrap(),
    };
    let bytes = response.body().limit(1 << 24).await.unwrap();
    (response.status().as_u16(), serde_json::from_slice(&bytes).unwrap_or(Value::Null))
}

/// The events of a watcher's stream so far, read on a task of its own until the stream ends.
#[derive(Clone, Default)]
struct Watched(Arc<Mutex<Vec<Value>>>);

impl Watched {
    /// Opens `GET path` on `node`, which must answer 200 with a stream.
    async fn open(node: &Node, path: &str) -> (Self, actix_web::rt::task::JoinHandle<()>) {
        let mut response = request(node, "GET", path).send().await.unwrap();
        assert_eq!(response.status(), 200, "{path} on port {}", node.port);
        let content_type = response.headers().get("content-type").unwrap().to_str().unwrap();
        assert_eq!(content_type, "text/event-stream");
        let watched = Self::default();
        let seen = watched.clone();
        let reading = actix_web::rt::spawn(async move {
            let mut buffer = String::new();
            while let Some(Ok(chunk)) = response.next().await {
                buffer.push_str(&String::from_utf8_lossy(&chunk));
                while let Some(end) = buffer.find("\n\n") {
                    let frame: String = buffer.drain(..end + 2).collect();
                    // Keep-alive comments carry no data.
                    if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) {
                        seen.0.lock().unwrap().push(serde_json::from_str(data).unwrap());
                    }
                }
            }
        });
        (watched, reading)
    }

    fn all(&self) -> Vec<Value> {
        self.0.lock().unwrap().clone()
    }
}

/// Polls `node`'s approvals until one is listed, and returns its request id.
async fn waiting_call(node: &Node) -> String {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (status, body) = call(node, "GET", "/api/approvals", None).await;
        assert_eq!(status, 200, "{body}");
        if let Some(request) = body["approvals"][0]["requestId"].as_str() {
            return request.to_owned();
        }
        assert!(Instant::now() < deadline, "the turn never asked: {body}");
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A chat on `node` left running; its events once it ends.
fn start_chat(node: &Node, body: Value) -> actix_web::rt::task::JoinHandle<Vec<Value>> {
    let chat = request(node, "POST", "/api/chat");
    actix_web::rt::spawn(async move {
        let mut response = chat.send_json(&body).await.unwrap();
        let bytes = response.body().limit(1 << 24).await.unwrap_or_default();
        String::from_utf8_lossy(&bytes)
            .lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .filter_map(|data| serde_json::from_str(data).ok())
            .collect()
    })
}

/// Makes the agent (asking for every tool) and a session on `node`; the session's id.
async fn asking_session(node: &Node) -> String {
    let agent = json!({"name": "bot", "permissionMode": "ask"});
    assert_eq!(call(node, "POST", "/api/agents", Some(agent)).await.0, 201);
    let (_, session) = call(node, "POST", "/api/agents/bot/sessions", None).await;
    session["session"]["id"].as_str().unwrap().to_owned()
}

/// B passes A's turn through: the same events as A's own watcher gives, through to the
/// turn's end; a request B forwarded is never forwarded again. The nodes share a token, of
/// which B sends A a proof (never the token itself), and A accepts nothing less.
#[test]
fn a_turn_on_one_node_is_watched_through_another() {
    let database = TestDatabase::new();
    let (model_a, model_b) = (asking_model(), asking_model());
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let token = ["--api-token", TOKEN];
    let mut a = Node::start_with(&database.url, dirs[0].path(), &model_a, &token);
    let mut b = Node::start_with(&database.url, dirs[1].path(), &model_b, &token);
    let node_a = std::fs::read_to_string(a.data.join("node-name")).unwrap().trim().to_owned();
    actix_web::rt::System::new().block_on(async {
        let session = asking_session(&a).await;
        let chat = json!({"agentName": "bot", "sessionId": session, "message": "write the file"});
        let running = start_chat(&a, chat);
        let waiting = waiting_call(&a).await;

        let stream = format!("/api/agents/bot/sessions/{session}/stream");
        let (on_a, reading_a) = Watched::open(&a, &stream).await;
        let (on_b, reading_b) = Watched::open(&b, &stream).await;
        // Both have caught up with the turn so far (it waits for the answer meanwhile).
        let (watched_a, watched_b) = (on_a.clone(), on_b.clone());
        wait_until(Duration::from_secs(30), "B never caught up with A's watcher", move || {
            let so_far = watched_a.all();
            !so_far.is_empty() && watched_b.all() == so_far
        })
        .await;
        assert!(
            on_b.all().iter().any(|e| e["type"] == "permission_request"),
            "the waiting call is among the events: {:?}",
            on_b.all()
        );

        // A request a node forwarded is answered where it lands, never passed on again.
        let forwarded = request(&b, "GET", &stream)
            .insert_header(("orbit-forwarded-by", "01JD2Y7W3Q5ZK8X9M4N6P0R1ST"))
            .send()
            .await;
        let mut forwarded = forwarded.unwrap();
        let body: Value = forwarded.json().await.unwrap();
        assert_eq!((forwarded.status().as_u16(), &body["code"]), (409, &json!("conflict")));
        let message = body["error"].as_str().unwrap();
        assert!(message.contains(&format!("runs on node '{node_a}'")), "{message}");
        assert!(message.contains("not forwarded again"), "{message}");
        crate::schema::check_answer("GET", &stream, 409, &body);

        // The answer ends the turn; both watchers' streams end with it, alike.
        let answer = format!("/api/agents/bot/sessions/{session}/permissions/{waiting}");
        let (status, body) = call(&a, "POST", &answer, Some(json!({"allow": true}))).await;
        assert_eq!(status, 200, "{body}");
        let chatted = running.await.unwrap();
        for reading in [reading_a, reading_b] {
            let ended = actix_web::rt::time::timeout(Duration::from_secs(30), reading).await;
            assert!(ended.is_ok(), "a watcher's stream did not end with the turn");
        }
        let (watched_a, watched_b) = (on_a.all(), on_b.all());
        assert_eq!(watched_b, watched_a, "B's watcher saw what A's did");
        crate::schema::check_events(&watched_b);
        let result = watched_b.iter().rev().find(|e| e["type"] == "result");
        assert_eq!(result.map(|r| &r["result"]), Some(&json!("done")), "{watched_b:?}");
        let last_of_chat = chatted.iter().rev().find(|e| e["type"] == "result");
        assert_eq!(result, last_of_chat, "the watcher saw the chat's own end");
        assert!(model_b.requests().is_empty(), "the turn ran on A alone");

        let (status, body) = call(&b, "GET", &stream, None).await;
        assert_eq!(status, 404, "no turn runs anywhere: {body}");
        let untokened = client().get(b.url(&stream)).send().await.unwrap();
        assert_eq!(untokened.status(), 401, "B checks the token itself");
        let forged = client()
            .get(a.url(&stream))
            .insert_header(("orbit-forwarded-auth", "1.00"))
            .send()
            .await
            .unwrap();
        assert_eq!(forged.status(), 401, "A takes no proof that is not one");
    });
    a.stop();
    b.stop();
}

/// A holder registered at an address where nothing listens is named, with the address, in a
/// 502 at once rather than a hang.
#[test]
fn a_holder_that_cannot_be_reached_is_named_at_once() {
    let database = TestDatabase::new();
    let (model_a, model_b) = (asking_model(), asking_model());
    // A port that was just free and is closed now: connecting is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap();
    let address = format!("http://{closed}");
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    // A node refuses to start advertising a host its own Host check would refuse.
    let authority = closed.to_string();
    let advertise = ["--advertise-url", address.as_str(), "--allowed-host", authority.as_str()];
    let mut a = Node::start_with(&database.url, dirs[0].path(), &model_a, &advertise);
    let mut b = Node::start(&database.url, dirs[1].path(), &model_b);
    let node_a = std::fs::read_to_string(a.data.join("node-name")).unwrap().trim().to_owned();
    actix_web::rt::System::new().block_on(async {
        let session = asking_session(&a).await;
        let chat = json!({"agentName": "bot", "sessionId": session, "message": "write the file"});
        let running = start_chat(&a, chat);
        waiting_call(&a).await;

        let stream = format!("/api/agents/bot/sessions/{session}/stream");
        let asked = Instant::now();
        let (status, body) = call(&b, "GET", &stream, None).await;
        // Not a speed target: the call's own limit is 60 s, and a hang would reach it.
        assert!(
            asked.elapsed() < Duration::from_secs(30),
            "answered only after {:?}",
            asked.elapsed()
        );
        assert_eq!((status, &body["code"]), (502, &json!("node_unreachable")), "{body}");
        let message = body["error"].as_str().unwrap();
        assert!(message.contains(&format!("node '{node_a}'")), "names the node: {message}");
        assert!(message.contains(&address), "and its address: {message}");
        crate::schema::check_answer("GET", &stream, 502, &body);

        let abort = format!("/api/agents/bot/sessions/{session}/abort");
        assert_eq!(call(&a, "POST", &abort, None).await.0, 200);
        running.await.unwrap();
    });
    a.stop();
    b.stop();
}
