//! Turns aborted over HTTP, and the process's own life: refusal to expose itself, SIGTERM.

use std::io::{BufRead, BufReader};

use std::process::{Command, Stdio};
use std::time::Duration;

use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use orbit_testkit::{ModelServer, Reply, Rule};
use serde_json::json;

use crate::helpers::TestApp;

fn slow_rules() -> Vec<Rule> {
    vec![
        Rule::when_user_says(
            "slow",
            Reply::Delayed(Duration::from_secs(30), Box::new(Reply::Text("late".into()))),
        ),
        Rule::always(Reply::Text("fast".into())),
    ]
}

#[actix_web::test]
async fn a_turn_aborted_over_http_ends_cleanly() {
    let app = std::rc::Rc::new(TestApp::spawn(slow_rules()).await);
    let session = app.create_session("bot").await;
    let chat = {
        let (app, session) = (app.clone(), session.clone());
        actix_web::rt::spawn(async move {
            app.chat(json!({"agentName": "bot", "sessionId": session, "message": "slow"})).await
        })
    };
    app.wait_for_model_requests(1).await;
    let busy =
        app.chat(json!({"agentName": "bot", "sessionId": session, "message": "again"})).await;
    assert_eq!(busy.0, 409, "a second chat on a running session is refused");
    let aborted =
        app.call("POST", &format!("/api/agents/bot/sessions/{session}/abort"), None).await;
    assert_eq!(aborted.status, 200, "{}", aborted.body);
    let (status, events) = chat.await.unwrap();
    assert_eq!(status, 200);
    assert_eq!(events.last().unwrap()["type"], "error");
    assert!(orbit_testkit::processes_with_env(&app.tmp_marker()).is_empty());
    let (_, events) =
        app.chat(json!({"agentName": "bot", "sessionId": session, "message": "hello"})).await;
    assert_eq!(events.iter().find(|e| e["type"] == "result").unwrap()["result"], "fast");
}

#[test]
fn the_server_refuses_a_public_address_without_a_token() {
    let dir = tempfile::tempdir().unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_orbit-server-under-test"))
        .args(["--bind", "0.0.0.0:0", "--data-dir"])
        .arg(dir.path())
        .env_remove("ORBIT_API_TOKEN")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("without an API token"));
}

/// A node's name pins its worktree sessions and tasks; a `--node-name` that would rename a
/// data directory's node is refused, and a name given at the first start is kept.
#[test]
fn a_data_directory_keeps_its_node_name() {
    let dir = tempfile::tempdir().unwrap();
    // A port taken here: the server stops right after it has named itself.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let bind = taken.local_addr().unwrap().to_string();
    let start = |name: Option<&str>| {
        let mut command = Command::new(env!("CARGO_BIN_EXE_orbit-server-under-test"));
        command.args(["--bind", &bind, "--data-dir"]).arg(dir.path());
        command.env_remove("ORBIT_NODE_NAME");
        if let Some(name) = name {
            command.args(["--node-name", name]);
        }
        command.output().unwrap()
    };
    let first = start(Some("worker-1"));
    assert!(!first.status.success());
    assert!(String::from_utf8_lossy(&first.stderr).contains("cannot listen"));
    let kept = std::fs::read_to_string(dir.path().join("node-name")).unwrap();
    assert_eq!(kept.trim(), "worker-1");
    let renamed = start(Some("worker-2"));
    let stderr = String::from_utf8_lossy(&renamed.stderr);
    assert!(stderr.contains("belongs to node 'worker-1'"), "{stderr}");
    assert_eq!(std::fs::read_to_string(dir.path().join("node-name")).unwrap(), kept);
    let unnamed = start(None);
    assert!(String::from_utf8_lossy(&unnamed.stderr).contains("cannot listen"));
}

#[test]
fn sigterm_during_a_turn_leaves_no_claude_process() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let model = ModelServer::start(slow_rules());
    let mut server = Command::new(env!("CARGO_BIN_EXE_orbit-server-under-test"))
        .args(["--bind", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .arg("--claude-bin")
        .arg(orbit_testkit::claude_bin())
        .envs(orbit_testkit::cli_env(&model, &tmp))
        .env("RUST_LOG", "info")
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(server.stderr.take().unwrap());
    let (port_tx, port_rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            if let Some(rest) = line.split("port=").nth(1) {
                let _ = port_tx.send(
                    rest.split_whitespace().next().unwrap_or_default().parse::<u16>().unwrap_or(0),
                );
            }
        }
    });
    let Ok(port) = port_rx.recv_timeout(Duration::from_secs(30)) else {
        server.kill().unwrap();
        panic!("the server never said where it listens");
    };
    let runtime = actix_web::rt::System::new();
    runtime.block_on(async {
        let client = awc::Client::builder().timeout(Duration::from_secs(60)).finish();
        let chat = actix_web::rt::spawn(async move {
            let _ = client
                .post(format!("http://127.0.0.1:{port}/api/chat"))
                .send_json(&json!({"agentName": "bot", "message": "slow"}))
                .await;
        });
        for _ in 0..400 {
            if !model.requests().is_empty() {
                break;
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(
            !orbit_testkit::processes_with_env(&tmp.display().to_string()).is_empty(),
            "a CLI runs the turn"
        );
        kill(Pid::from_raw(server.id() as i32), Signal::SIGTERM).unwrap();
        chat.abort();
    });
    let status = server.wait().unwrap();
    assert!(status.success(), "{status}");
    assert!(
        orbit_testkit::processes_with_env(&tmp.display().to_string()).is_empty(),
        "no claude process outlives the server"
    );
}

#[test]
fn a_taken_port_or_an_unusable_data_dir_is_a_clear_failure() {
    let dir = tempfile::tempdir().unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let output = Command::new(env!("CARGO_BIN_EXE_orbit-server-under-test"))
        .args(["--bind", &format!("127.0.0.1:{port}"), "--data-dir"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot listen on"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );

    // A file where the data directory should be: not writable as a directory, even for root.
    let file = dir.path().join("not-a-dir");
    std::fs::write(&file, b"x").unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_orbit-server-under-test"))
        .args(["--bind", "127.0.0.1:0", "--data-dir"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(
        String::from_utf8_lossy(&output.stderr).contains("cannot use data directory"),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
}

#[actix_web::test]
async fn a_client_that_disconnects_mid_turn_loses_nothing() {
    let app = TestApp::spawn(vec![
        Rule::when_user_says(
            "slow",
            Reply::Delayed(Duration::from_secs(2), Box::new(Reply::Text("finished anyway".into()))),
        ),
        Rule::always(Reply::Text("ok".into())),
    ])
    .await;
    let session = app.create_session("bot").await;
    {
        // Read the first event, then hang up.
        let mut response = app
            .builder("POST", "/api/chat")
            .send_json(&json!({"agentName": "bot", "sessionId": session, "message": "slow"}))
            .await
            .unwrap();
        use futures_util::StreamExt;
        // The first whole data event, however the body is cut into chunks (keep-alive
        // comments, which clients ignore, may come before it).
        let mut body = String::new();
        let first = loop {
            let chunk = response.next().await.unwrap().unwrap();
            body.push_str(&String::from_utf8_lossy(&chunk));
            let events: Vec<&str> = body.split("\n\n").collect();
            let complete = &events[..events.len() - 1];
            if let Some(event) = complete.iter().find(|e| e.starts_with("data:")) {
                break (*event).to_owned();
            }
        };
        assert!(first.contains(&session), "{first:?}");
    }
    let mut messages = Vec::new();
    for _ in 0..80 {
        messages = app.call("GET", &format!("/api/agents/bot/sessions/{session}"), None).await.body
            ["messages"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        if messages.len() == 2 {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(messages.len(), 2, "the turn finished and was recorded");
    assert_eq!(messages[1]["content"], "finished anyway");
}

#[actix_web::test]
async fn past_the_process_cap_a_chat_is_answered_429() {
    let app = std::rc::Rc::new(TestApp::spawn_with(slow_rules(), None, 1).await);
    let first = app.create_session("bot").await;
    let chat = {
        let (app, first) = (app.clone(), first.clone());
        actix_web::rt::spawn(async move {
            app.chat(json!({"agentName": "bot", "sessionId": first, "message": "slow"})).await
        })
    };
    app.wait_for_model_requests(1).await;
    let (status, body) = app.chat(json!({"agentName": "bot", "message": "hello"})).await;
    assert_eq!(status, 429, "{body:?}");
    assert_eq!(body[0]["code"], "busy");
    app.call("POST", &format!("/api/agents/bot/sessions/{first}/abort"), None).await;
    chat.await.unwrap();
}
