//! A node of a cluster SIGKILLed mid-turn loses nothing: once its lease lapses, another node
//! on the same database takes back its inbox claims, and the session it served goes on there.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use orbit_testkit::postgres::TestDatabase;
use orbit_testkit::{ModelServer, Reply, Rule};
use serde_json::{Value, json};

/// An `orbit-server` process on port 0, a node of the cluster on `database`.
struct Node {
    child: Child,
    port: u16,
}

impl Node {
    fn start(database: &TestDatabase, dir: &Path, model: &ModelServer) -> Self {
        let (data, tmp) = (dir.join("data"), dir.join("tmp"));
        std::fs::create_dir_all(&tmp).unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_orbit-server-under-test"))
            .args(["--bind", "127.0.0.1:0", "--lease-secs", "3", "--data-dir"])
            .arg(&data)
            .arg("--claude-bin")
            .arg(orbit_testkit::claude_bin())
            .env("ORBIT_DATABASE_URL", &database.url)
            .envs(orbit_testkit::cli_env(model, &tmp))
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                eprintln!("node: {line}");
                if let Some(rest) = line.split("port=").nth(1) {
                    let port = rest.split_whitespace().next().unwrap_or_default();
                    let _ = port_tx.send(port.parse::<u16>().unwrap_or(0));
                }
            }
        });
        let Ok(port) = port_rx.recv_timeout(Duration::from_secs(30)) else {
            child.kill().unwrap();
            panic!("the node never said where it listens");
        };
        Self { child, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }
}

fn client() -> awc::Client {
    awc::Client::builder().timeout(Duration::from_secs(60)).finish()
}

async fn call(node: &Node, method: &str, path: &str, body: Option<Value>) -> Value {
    let request =
        client().request(awc::http::Method::from_bytes(method.as_bytes()).unwrap(), node.url(path));
    let mut response = match body {
        Some(body) => request.send_json(&body).await.unwrap(),
        None => request.send().await.unwrap(),
    };
    let bytes = response.body().limit(1 << 24).await.unwrap();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

/// The SSE events of a chat.
async fn chat(node: &Node, body: Value) -> Vec<Value> {
    let mut response = client().post(node.url("/api/chat")).send_json(&body).await.unwrap();
    let bytes = response.body().limit(1 << 24).await.unwrap();
    String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|line| line.strip_prefix("data: "))
        .filter_map(|data| serde_json::from_str(data).ok())
        .collect()
}

#[test]
fn a_node_killed_mid_turn_has_its_claims_and_session_taken_over() {
    let database = TestDatabase::new();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let slow = Reply::Delayed(Duration::from_secs(60), Box::new(Reply::Text("late".into())));
    let model_a = ModelServer::start(vec![Rule::always(slow)]);
    let model_b = ModelServer::start(vec![Rule::always(Reply::Text("fast".into()))]);
    let mut a = Node::start(&database, dir_a.path(), &model_a);
    let mut b = Node::start(&database, dir_b.path(), &model_b);
    let (message, session) = actix_web::rt::System::new().block_on(async {
        call(&a, "POST", "/api/agents", Some(json!({"name": "bot"}))).await;
        let sent = call(
            &a,
            "POST",
            "/api/agents/bot/inbox",
            Some(json!({"fromAgent": "alice", "message": "remember the milk"})),
        )
        .await;
        let message = sent["message"]["id"].as_str().unwrap().to_owned();
        let url = a.url("/api/chat");
        actix_web::rt::spawn(async move {
            let _ =
                client().post(url).send_json(&json!({"agentName": "bot", "message": "slow"})).await;
        });
        let deadline = Instant::now() + Duration::from_secs(30);
        while model_a.requests().is_empty() {
            assert!(Instant::now() < deadline, "node A's turn never reached its model");
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        let held = call(&b, "GET", &format!("/api/agents/bot/inbox/{message}"), None).await;
        assert!(held["message"]["claimedBy"].is_string(), "node A holds the message: {held}");
        let sessions = call(&b, "GET", "/api/agents/bot/sessions", None).await;
        (message, sessions["sessions"][0]["id"].as_str().unwrap().to_owned())
    });
    assert!(model_a.requests()[0].to_string().contains("remember the milk"));
    kill(Pid::from_raw(a.child.id() as i32), Signal::SIGKILL).unwrap();
    a.child.wait().unwrap();

    actix_web::rt::System::new().block_on(async {
        // The lease is 3 s: once it lapses, node B's next turn claims the message.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let seen = model_b.requests().len();
            chat(&b, json!({"agentName": "bot", "message": "anything new?"})).await;
            let delivered = model_b.requests()[seen..]
                .iter()
                .any(|request| request.to_string().contains("remember the milk"));
            if delivered {
                break;
            }
            assert!(Instant::now() < deadline, "node B never took the claim back");
            actix_web::rt::time::sleep(Duration::from_millis(500)).await;
        }
        let message = call(&b, "GET", &format!("/api/agents/bot/inbox/{message}"), None).await;
        assert_eq!(message["message"]["status"], "read", "{message}");
        assert_eq!(message["message"]["deliveries"], 2, "A's lapsed delivery counts: {message}");

        // The session whose turn died with node A goes on on node B. Its CLI conversation
        // never finished a turn, so there is no transcript to restore: the turn says so and
        // runs in a fresh CLI session.
        let events =
            chat(&b, json!({"agentName": "bot", "sessionId": session, "message": "hello?"})).await;
        let result = events.iter().find(|e| e["type"] == "result").expect("a result");
        assert_eq!(result["result"], "fast", "{events:?}");
    });
    kill(Pid::from_raw(b.child.id() as i32), Signal::SIGTERM).unwrap();
    b.child.wait().unwrap();
}
