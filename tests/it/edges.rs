//! The server as a process at the edges of its life: SIGKILL, SIGTERM mid-turn and with idle
//! warm sessions, and a restart as PID 1 of a new pid namespace (as in a container).

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use orbit_store::{AgentName, FsStore, MessageStatus, Stores};
use orbit_testkit::{ModelServer, Reply, Rule};
use serde_json::{Value, json};

fn rules() -> Vec<Rule> {
    vec![
        Rule::when_user_says(
            "slow",
            Reply::Delayed(Duration::from_secs(60), Box::new(Reply::Text("late".into()))),
        ),
        Rule::always(Reply::Text("fast".into())),
    ]
}

/// An `orbit-server` process on port 0, optionally started through a wrapper command.
struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(data: &Path, tmp: &Path, model: &ModelServer, wrapper: &[&str]) -> Self {
        let binary = env!("CARGO_BIN_EXE_orbit-server-under-test");
        let mut command = match wrapper.split_first() {
            Some((program, args)) => {
                let mut command = Command::new(program);
                command.args(args).arg(binary);
                command
            }
            None => Command::new(binary),
        };
        let mut child = command
            .args(["--bind", "127.0.0.1:0", "--lease-secs", "3", "--data-dir"])
            .arg(data)
            .arg("--claude-bin")
            .arg(orbit_testkit::claude_bin())
            .envs(orbit_testkit::cli_env(model, tmp))
            .env("RUST_LOG", "info")
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = BufReader::new(child.stderr.take().unwrap());
        let (port_tx, port_rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in stderr.lines().map_while(Result::ok) {
                // Shown with a failing test's output.
                eprintln!("server: {line}");
                if let Some(rest) = line.split("port=").nth(1) {
                    let port = rest.split_whitespace().next().unwrap_or_default();
                    let _ = port_tx.send(port.parse::<u16>().unwrap_or(0));
                }
            }
        });
        let Ok(port) = port_rx.recv_timeout(Duration::from_secs(30)) else {
            child.kill().unwrap();
            panic!("the server never said where it listens");
        };
        Self { child, port }
    }

    fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// The server's own pid: the wrapper's child when started through `unshare --fork`.
    fn server_pid(&self) -> i32 {
        let pid = self.child.id();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        children.split_whitespace().next().and_then(|c| c.parse().ok()).unwrap_or(pid as i32)
    }
}

fn client() -> awc::Client {
    awc::Client::builder().timeout(Duration::from_secs(60)).finish()
}

async fn post(server: &Server, path: &str, body: Value) -> Value {
    let mut response = client().post(server.url(path)).send_json(&body).await.unwrap();
    let bytes = response.body().limit(1 << 24).await.unwrap();
    serde_json::from_slice(&bytes).unwrap_or(Value::Null)
}

/// Starts a chat on its own task and waits until the model has it.
async fn start_slow_chat(server: &Server, model: &ModelServer, session: Option<&str>) {
    let seen = model.requests().len();
    let url = server.url("/api/chat");
    let mut body = json!({"agentName": "bot", "message": "slow"});
    if let Some(session) = session {
        body["sessionId"] = json!(session);
    }
    actix_web::rt::spawn(async move {
        let _ = client().post(url).send_json(&body).await;
    });
    wait_until(Duration::from_secs(30), || model.requests().len() > seen).await;
}

async fn wait_until(limit: Duration, mut done: impl FnMut() -> bool) {
    let deadline = Instant::now() + limit;
    while !done() {
        assert!(Instant::now() < deadline, "waited {limit:?} in vain");
        actix_web::rt::time::sleep(Duration::from_millis(50)).await;
    }
}

fn setup() -> (tempfile::TempDir, PathBuf, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let (data, tmp) = (dir.path().join("data"), dir.path().join("tmp"));
    std::fs::create_dir_all(&tmp).unwrap();
    (dir, data, tmp)
}

fn clis(tmp: &Path) -> Vec<u32> {
    orbit_testkit::processes_with_env(&tmp.display().to_string())
}

fn stores(data: &Path) -> Stores {
    FsStore::open(data).unwrap().stores()
}

fn bot() -> AgentName {
    AgentName::parse("bot").unwrap()
}

#[test]
fn a_sigkilled_server_leaves_no_cli_running() {
    let (_dir, data, tmp) = setup();
    let model = ModelServer::start(rules());
    let mut server = Server::start(&data, &tmp, &model, &[]);
    actix_web::rt::System::new().block_on(async {
        start_slow_chat(&server, &model, None).await;
        assert!(!clis(&tmp).is_empty(), "a CLI runs the turn");
        kill(Pid::from_raw(server.server_pid()), Signal::SIGKILL).unwrap();
        server.child.wait().unwrap();
        // The kernel kills each CLI when the server dies; nothing has to come back for it.
        wait_until(Duration::from_secs(5), || clis(&tmp).is_empty()).await;
    });
}

#[test]
fn sigterm_mid_turn_settles_the_claims_and_records_the_turn_within_ten_seconds() {
    let (_dir, data, tmp) = setup();
    let model = ModelServer::start(rules());
    let mut server = Server::start(&data, &tmp, &model, &[]);
    let message = actix_web::rt::System::new().block_on(async {
        post(&server, "/api/agents", json!({"name": "bot"})).await;
        let sent = post(
            &server,
            "/api/agents/bot/inbox",
            json!({"fromAgent": "bot", "message": "a note for the next turn"}),
        )
        .await;
        start_slow_chat(&server, &model, None).await;
        sent["message"]["id"].as_str().unwrap().to_owned()
    });
    let stopping = Instant::now();
    kill(Pid::from_raw(server.server_pid()), Signal::SIGTERM).unwrap();
    let status = server.child.wait().unwrap();
    let took = stopping.elapsed();
    assert!(status.success(), "{status}");
    assert!(took < Duration::from_secs(10), "the stop took {took:?}");
    assert!(clis(&tmp).is_empty(), "no CLI outlives the server");

    let stores = stores(&data);
    actix_web::rt::System::new().block_on(async {
        let id = orbit_store::MessageId::parse(&message).unwrap();
        let message = stores.inbox.get(&bot(), &id).await.unwrap();
        assert_eq!(message.status, MessageStatus::Pending);
        assert!(message.lease.is_none(), "the aborted turn gave its claim back: {message:?}");
        assert_eq!(message.deliveries, 1, "it reached the model once");
        let sessions = stores.sessions.list_by_agent(&bot()).await.unwrap();
        assert_eq!(sessions.len(), 1);
        let history = stores.sessions.get_messages(&bot(), &sessions[0].id).await.unwrap();
        assert_eq!(history.len(), 2, "the aborted turn is recorded: {history:?}");
        assert!(history[1].content.contains("aborted"), "{history:?}");
    });
}

#[test]
fn sigterm_with_idle_warm_sessions_stops_at_once() {
    let (_dir, data, tmp) = setup();
    let model = ModelServer::start(rules());
    let mut server = Server::start(&data, &tmp, &model, &[]);
    actix_web::rt::System::new().block_on(async {
        for _ in 0..4 {
            let mut response = client()
                .post(server.url("/api/chat"))
                .send_json(&json!({"agentName": "bot", "message": "hello"}))
                .await
                .unwrap();
            response.body().limit(1 << 24).await.unwrap();
        }
    });
    let warm = clis(&tmp).len();
    let stopping = Instant::now();
    kill(Pid::from_raw(server.server_pid()), Signal::SIGTERM).unwrap();
    // Counted after the signal, so that a failed count cannot leave the server running.
    assert!(warm >= 4, "four warm CLI processes (and their helpers), not {warm}");
    assert!(server.child.wait().unwrap().success());
    let took = stopping.elapsed();
    // One after another at five seconds each this took twenty; side by side, about one.
    assert!(took < Duration::from_secs(5), "the stop took {took:?}");
    assert!(clis(&tmp).is_empty());
}

/// A server in a container is PID 1 at every start, so "is the holder's pid alive" says yes
/// for its predecessor's claims. Killed mid-turn and started again in a new pid namespace, it
/// takes the claim back once its lease lapses, and the message reaches a turn.
#[test]
fn restarted_as_pid_1_of_a_new_namespace_it_recovers_the_claims_of_its_predecessor() {
    let (_dir, data, tmp) = setup();
    let model = ModelServer::start(rules());
    let container = ["unshare", "--pid", "--fork", "--mount-proc"];
    let mut first = Server::start(&data, &tmp, &model, &container);
    let message = actix_web::rt::System::new().block_on(async {
        post(&first, "/api/agents", json!({"name": "bot"})).await;
        let sent = post(
            &first,
            "/api/agents/bot/inbox",
            json!({"fromAgent": "bot", "message": "remember the milk"}),
        )
        .await;
        start_slow_chat(&first, &model, None).await;
        sent["message"]["id"].as_str().unwrap().to_owned()
    });
    let id = orbit_store::MessageId::parse(&message).unwrap();
    // Killing the namespace's PID 1 kills everything in it, as a container's end does.
    kill(Pid::from_raw(first.server_pid()), Signal::SIGKILL).unwrap();
    first.child.wait().unwrap();
    let held = actix_web::rt::System::new()
        .block_on(async { stores(&data).inbox.get(&bot(), &id).await.unwrap() });
    assert!(held.lease.is_some(), "the killed server held the message");

    let mut second = Server::start(&data, &tmp, &model, &container);
    actix_web::rt::System::new().block_on(async {
        // The lease is 3 s; the claim is taken back once it lapses, whatever pid the new
        // server has.
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let seen = model.requests().len();
            let mut response = client()
                .post(second.url("/api/chat"))
                .send_json(&json!({"agentName": "bot", "message": "anything new?"}))
                .await
                .unwrap();
            response.body().limit(1 << 24).await.unwrap();
            let delivered = model.requests()[seen..]
                .iter()
                .any(|request| request.to_string().contains("remember the milk"));
            if delivered {
                break;
            }
            assert!(Instant::now() < deadline, "the claim was never recovered");
            actix_web::rt::time::sleep(Duration::from_millis(500)).await;
        }
        let message = stores(&data).inbox.get(&bot(), &id).await.unwrap();
        assert_eq!(message.status, MessageStatus::Read);
    });
    kill(Pid::from_raw(second.server_pid()), Signal::SIGTERM).unwrap();
    second.child.wait().unwrap();
}

/// Deleting an agent while its turns run answers 200, ends them, and a new agent of the same
/// name starts with nothing of the old one.
#[actix_web::test]
async fn deleting_an_agent_mid_turn_leaves_nothing_to_a_new_agent_of_its_name() {
    let app = std::rc::Rc::new(crate::helpers::TestApp::spawn(rules()).await);
    let mut chats = Vec::new();
    for _ in 0..3 {
        let session = app.create_session("bot").await;
        let app = app.clone();
        chats.push(actix_web::rt::spawn(async move {
            app.chat(json!({"agentName": "bot", "sessionId": session, "message": "slow"})).await
        }));
    }
    app.wait_for_model_requests(3).await;
    let deleted = app.call("DELETE", "/api/agents/bot", None).await;
    assert_eq!(deleted.status, 200, "{}", deleted.body);
    for chat in chats {
        chat.await.unwrap();
    }
    assert_eq!(app.call("GET", "/api/agents/bot", None).await.status, 404);
    app.create_agent("bot").await;
    let sessions = app.call("GET", "/api/agents/bot/sessions", None).await;
    assert_eq!(sessions.body["sessions"], json!([]), "the new agent inherits no session");
    assert!(orbit_testkit::processes_with_env(&app.tmp_marker()).is_empty());
}

/// A chat refused for want of a process leaves no session behind.
#[actix_web::test]
async fn a_chat_refused_with_429_creates_no_session() {
    let app = std::rc::Rc::new(crate::helpers::TestApp::spawn_with(rules(), None, 1).await);
    let busy = {
        let app = app.clone();
        actix_web::rt::spawn(async move {
            app.chat(json!({"agentName": "bot", "message": "slow"})).await
        })
    };
    app.wait_for_model_requests(1).await;
    // Each refusal waits out the slot wait (10 s) first.
    for _ in 0..2 {
        let (status, _) = app.chat(json!({"agentName": "bot", "message": "hello"})).await;
        assert_eq!(status, 429);
    }
    let sessions = app.call("GET", "/api/agents/bot/sessions", None).await;
    assert_eq!(sessions.body["sessions"].as_array().unwrap().len(), 1, "only the running chat's");
    let running = sessions.body["sessions"][0]["id"].as_str().unwrap().to_owned();
    app.call("POST", &format!("/api/agents/bot/sessions/{running}/abort"), None).await;
    busy.await.unwrap();
}

/// SIGTERM while a task's run is mid-turn keeps the same deadline as a chat, and the run
/// leaves its record finished, not `running`.
#[test]
fn sigterm_mid_run_stops_within_ten_seconds_and_finishes_the_run_record() {
    let (_dir, data, tmp) = setup();
    let model = ModelServer::start(rules());
    let mut server = Server::start(&data, &tmp, &model, &[]);
    let task = actix_web::rt::System::new().block_on(async {
        post(&server, "/api/agents", json!({"name": "bot"})).await;
        let task = post(
            &server,
            "/api/agents/bot/tasks",
            json!({"prompt": "slow", "scheduleType": "cron", "scheduleValue": "0 0 1 1 *", "contextMode": "isolated"}),
        )
        .await;
        let id = task["task"]["id"].as_str().unwrap().to_owned();
        post(&server, &format!("/api/agents/bot/tasks/{id}/run"), json!({})).await;
        wait_until(Duration::from_secs(30), || !model.requests().is_empty()).await;
        id
    });
    let stopping = Instant::now();
    kill(Pid::from_raw(server.server_pid()), Signal::SIGTERM).unwrap();
    assert!(server.child.wait().unwrap().success());
    let took = stopping.elapsed();
    assert!(took < Duration::from_secs(10), "the stop took {took:?}");
    assert!(clis(&tmp).is_empty());
    let stores = stores(&data);
    actix_web::rt::System::new().block_on(async {
        let task = orbit_store::TaskId::parse(&task).unwrap();
        let runs = stores.tasks.list_runs(&bot(), &task).await.unwrap();
        assert_eq!(runs.len(), 1);
        assert_eq!(runs[0].status, orbit_store::RunStatus::Error, "{:?}", runs[0]);
        assert!(runs[0].lease.is_none() && runs[0].completed_at.is_some());
    });
}
