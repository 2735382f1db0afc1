//! Safe by default: no web page can drive Orbit, no request can exhaust it, no input is a
//! 500. Each test here failed on the server before the hardening.

use std::time::Duration;

use orbit_testkit::{Reply, Rule};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{TestApp, parse_answer};

const AGENT: &str = r#"{"name": "evil", "permissionMode": "allow-all"}"#;

#[actix_web::test]
async fn a_web_page_cannot_drive_a_default_server() {
    let app = TestApp::spawn(vec![Rule::always(Reply::Text("pwned".into()))]).await;
    let host = app.authority().to_owned();
    // A browser's simple POST: no preflight, so it would be sent, but not as JSON.
    let simple = app
        .raw(
            &format!("POST /api/agents HTTP/1.1\r\nHost: {host}\r\nOrigin: http://evil.example\r\nContent-Type: text/plain"),
            AGENT,
        )
        .await;
    assert_eq!(simple.status, 403, "{}", simple.body);
    let plain = app
        .raw(
            &format!("POST /api/agents HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain"),
            AGENT,
        )
        .await;
    assert_eq!((plain.status, plain.body["code"].as_str()), (415, Some("unsupported_media_type")));
    let chat = app
        .raw(
            &format!("POST /api/chat HTTP/1.1\r\nHost: {host}\r\nContent-Type: text/plain"),
            r#"{"agentName": "evil", "message": "run this"}"#,
        )
        .await;
    assert_eq!(chat.status, 415, "{}", chat.body);
    // A cross-origin request in JSON (which a browser sends only after a preflight).
    let cross = app
        .raw(
            &format!("POST /api/agents HTTP/1.1\r\nHost: {host}\r\nOrigin: http://evil.example\r\nContent-Type: application/json"),
            AGENT,
        )
        .await;
    assert_eq!((cross.status, cross.body["code"].as_str()), (403, Some("cross_origin")));
    // A DNS-rebound name: same origin to the browser, a foreign Host to the server.
    let port = host.rsplit(':').next().unwrap();
    let rebound = app
        .raw(
            &format!("GET /api/agents HTTP/1.1\r\nHost: evil.example:{port}\r\nOrigin: http://evil.example:{port}"),
            "",
        )
        .await;
    assert_eq!((rebound.status, rebound.body["code"].as_str()), (403, Some("forbidden_host")));
    let read = app.raw(&format!("GET /api/agents HTTP/1.1\r\nHost: evil.example:{port}"), "").await;
    assert_eq!(read.status, 403);
    assert!(app.model.requests().is_empty(), "no turn started");
    assert_eq!(app.call("GET", "/api/agents", None).await.body, json!({"agents": []}));

    // Local clients keep working: curl (no Origin), and pages of the server's own origin.
    for (host, origin) in [
        (host.clone(), None),
        (format!("localhost:{port}"), None),
        (host.clone(), Some(format!("http://{host}"))),
    ] {
        let origin = origin.map(|o| format!("\r\nOrigin: {o}")).unwrap_or_default();
        let own = app
            .raw(
                &format!("POST /api/agents HTTP/1.1\r\nHost: {host}{origin}\r\nContent-Type: application/json; charset=utf-8"),
                r#"{"name": "mine"}"#,
            )
            .await;
        assert!(matches!(own.status, 201 | 409), "{host}{origin}: {} {}", own.status, own.body);
    }
}

#[actix_web::test]
async fn an_allowed_host_setting_adds_a_name() {
    let app = TestApp::spawn_configured(vec![], None, |settings| {
        settings.allowed_hosts = vec!["orbit.test".into()];
    })
    .await;
    let port = app.authority().rsplit(':').next().unwrap().to_owned();
    for host in [format!("orbit.test:{port}"), "orbit.test".into()] {
        let answer = app.raw(&format!("GET /api/agents HTTP/1.1\r\nHost: {host}"), "").await;
        assert_eq!(answer.status, 200, "{host}");
    }
    let other = app.raw(&format!("GET /api/agents HTTP/1.1\r\nHost: other.test:{port}"), "").await;
    assert_eq!(other.status, 403);
}

/// Conversations, prompts and tool output must not outlive the tab in a browser's cache.
#[actix_web::test]
async fn api_answers_are_never_cached_nor_sniffed() {
    let app = TestApp::spawn_with_token(vec![], Some("s3cret")).await;
    let host = app.authority().to_owned();
    let auth = "Authorization: Bearer s3cret";
    for (request, status) in [
        (format!("GET /api/agents HTTP/1.1\r\nHost: {host}\r\n{auth}"), 200),
        (format!("GET /api/agents/nobody HTTP/1.1\r\nHost: {host}\r\n{auth}"), 404),
        (format!("GET /api/agents HTTP/1.1\r\nHost: {host}"), 401),
    ] {
        let answer = app.raw(&request, "").await;
        assert_eq!(answer.status, status, "{request}");
        let head = answer.head.to_ascii_lowercase();
        assert!(head.contains("\r\ncache-control: no-store"), "{request}: {head}");
        assert!(head.contains("\r\nx-content-type-options: nosniff"), "{request}: {head}");
    }
}

#[actix_web::test]
async fn no_spelling_of_an_api_route_skips_the_token() {
    let app = TestApp::spawn_with_token(vec![], Some("s3cret")).await;
    let host = app.authority().to_owned();
    for path in [
        "/%61pi/agents",
        "/%41PI/agents",
        "//api/agents",
        "/api//agents",
        "/api/../api/agents",
        "/api/./agents",
        "/API/agents",
        "/api/agents/",
        "/api%2Fagents",
        "/%2561pi/agents",
        "/api/openapi.json",
    ] {
        let answer = app.raw(&format!("GET {path} HTTP/1.1\r\nHost: {host}"), "").await;
        assert_eq!(answer.status, 401, "GET {path}: {}", answer.body);
        let created = app
            .raw(
                &format!("POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json"),
                r#"{"name": "sneaky"}"#,
            )
            .await;
        assert_eq!(created.status, 401, "POST {path}: {}", created.body);
    }
    assert_eq!(app.call("GET", "/api/agents", None).await.body, json!({"agents": []}));
    let health = app.raw(&format!("GET /health HTTP/1.1\r\nHost: {host}"), "").await;
    assert_eq!(health.status, 200, "health needs no token");
}

#[actix_web::test]
async fn the_token_can_come_from_a_file() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("token");
    std::fs::write(&file, "from-a-file\n").unwrap();
    let app = TestApp::spawn_configured(vec![], Some("from-a-file"), |settings| {
        settings.api_token = None;
        settings.api_token_file = Some(file.clone());
    })
    .await;
    assert_eq!(app.call("GET", "/api/agents", None).await.status, 200);
    let anonymous = app.client.get(format!("{}/api/agents", app.address)).send().await.unwrap();
    assert_eq!(anonymous.status().as_u16(), 401);
}

#[actix_web::test]
async fn the_data_directory_is_private_to_its_owner() {
    use std::os::unix::fs::PermissionsExt;
    let app = TestApp::spawn(vec![]).await;
    app.create_agent("bot").await;
    app.call("POST", "/api/agents/bot/sessions", Some(json!({"title": "private"}))).await;
    let sent = app
        .call("POST", "/api/agents/bot/inbox", Some(json!({"fromAgent": "alice", "message": "hi"})))
        .await;
    assert_eq!(sent.status, 201);
    let root = app.dir.path().join("data");
    let mut checked = 0;
    let mut stack = vec![root.clone()];
    while let Some(path) = stack.pop() {
        let meta = std::fs::symlink_metadata(&path).unwrap();
        assert_eq!(meta.permissions().mode() & 0o077, 0, "{} is open to others", path.display());
        checked += 1;
        if meta.is_dir() && !path.ends_with("workspaces") && !path.ends_with("claude") {
            stack.extend(std::fs::read_dir(&path).unwrap().map(|e| e.unwrap().path()));
        }
    }
    assert!(checked > 5, "records were written and checked");
}

#[actix_web::test]
async fn an_open_data_directory_is_made_private_at_start() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::set_permissions(&data, std::fs::Permissions::from_mode(0o755)).unwrap();
    let _app = TestApp::spawn_configured(vec![], None, |settings| {
        settings.data_dir = Some(data.clone());
    })
    .await;
    assert_eq!(std::fs::metadata(&data).unwrap().permissions().mode() & 0o777, 0o700);
}

#[actix_web::test]
async fn a_body_that_never_arrives_is_cut_off() {
    let app =
        TestApp::spawn_configured(vec![], None, |settings| settings.body_timeout_secs = 1).await;
    let mut stream = tokio::net::TcpStream::connect(app.authority()).await.unwrap();
    let head = format!(
        "POST /api/agents HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n{{\"na",
        app.authority()
    );
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut answer = vec![0u8; 4096];
    // Not a speed assertion: only a bound on waiting for an answer the old server never gave.
    let read = tokio::time::timeout(Duration::from_secs(60), stream.read(&mut answer))
        .await
        .expect("the server waited for the body for ever")
        .unwrap();
    let answer = parse_answer(&answer[..read]);
    assert_eq!((answer.status, answer.body["code"].as_str()), (408, Some("request_timeout")));
}

#[actix_web::test]
async fn a_client_that_never_reads_is_dropped_and_the_turn_goes_on() {
    // Three large events: the first fills what the connection holds, the second the stream's
    // budget; the third cannot be queued, and the client that reads nothing is dropped.
    let big = "x".repeat(3 * 1024 * 1024);
    let app = TestApp::spawn_configured(
        vec![
            Rule::when_user_says(
                "flood",
                Reply::ToolUse { name: "no_such_tool".into(), input: json!({"pad": big}) },
            ),
            Rule::after_tool_result(Reply::Text(big.clone())),
        ],
        None,
        |settings| settings.slow_client_timeout_secs = 1,
    )
    .await;
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut stream = socket.connect(app.authority().parse().unwrap()).await.unwrap();
    let body = r#"{"agentName": "bot", "message": "flood"}"#;
    let request = format!(
        "POST /api/chat HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        app.authority(),
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    // The turn ends and is recorded while the client reads nothing.
    let mut recorded = false;
    for _ in 0..1200 {
        let sessions = app.call("GET", "/api/agents/bot/sessions", None).await;
        if sessions.body["sessions"][0]["messageCount"] == 2 {
            recorded = true;
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(recorded, "the turn went on without its client");
    // Past the stall limit the client has been dropped: what it reads now ends early.
    actix_web::rt::time::sleep(Duration::from_secs(3)).await;
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut received))
        .await
        .expect("the dropped client's connection was closed")
        .unwrap();
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{}", &text[..text.len().min(200)]);
    assert!(!text.contains(r#""type":"result""#), "a dropped client gets no more events");
}

#[actix_web::test]
async fn every_field_has_a_limit() {
    let app = TestApp::spawn(vec![]).await;
    app.create_agent("bot").await;
    let huge = "t".repeat(300 * 1024);
    let long_model = "m".repeat(130 * 1024);
    let cases: Vec<(&str, &str, Value)> = vec![
        ("POST", "/api/agents/bot/sessions", json!({"title": huge})),
        ("POST", "/api/agents/bot/sessions", json!({"model": long_model})),
        ("POST", "/api/agents/bot/sessions", json!({"model": "--dangerously-skip-permissions"})),
        ("POST", "/api/agents/bot/sessions", json!({"model": "two words"})),
        ("POST", "/api/agents", json!({"name": "other", "model": long_model})),
        ("PUT", "/api/agents/bot", json!({"model": long_model})),
        ("POST", "/api/chat", json!({"agentName": "bot", "message": "hi", "model": long_model})),
        ("POST", "/api/chat", json!({"agentName": "bot", "message": huge})),
        ("POST", "/api/agents/bot/inbox", json!({"fromAgent": "alice", "message": huge})),
        (
            "POST",
            "/api/agents/bot/tasks",
            json!({"prompt": huge, "scheduleType": "interval", "scheduleValue": "60000", "contextMode": "isolated"}),
        ),
        (
            "POST",
            "/api/agents/bot/tasks",
            json!({"prompt": "p", "name": huge, "scheduleType": "interval", "scheduleValue": "60000", "contextMode": "isolated"}),
        ),
    ];
    for (method, path, body) in cases {
        let answer = app.call(method, path, Some(body)).await;
        assert_eq!(
            (answer.status, answer.body["code"].as_str()),
            (400, Some("invalid_input")),
            "{method} {path}: {}",
            answer.body
        );
    }
    let sessions = app.call("GET", "/api/agents/bot/sessions", None).await;
    assert_eq!(sessions.body["sessions"], json!([]), "nothing was stored");
    assert!(app.model.requests().is_empty(), "no CLI was started");
}

#[actix_web::test]
async fn absurd_schedules_are_refused_with_the_reason() {
    let app = TestApp::spawn(vec![]).await;
    app.create_agent("bot").await;
    let task = |kind: &str, value: &str| json!({"prompt": "p", "scheduleType": kind, "scheduleValue": value, "contextMode": "isolated"});
    for (kind, value) in [
        ("interval", "300000000000000"),
        ("interval", "18446744073709551615"),
        ("cron", "0 0 30 2 *"),
    ] {
        let answer = app.call("POST", "/api/agents/bot/tasks", Some(task(kind, value))).await;
        assert_eq!(answer.status, 400, "{kind} {value}: {}", answer.body);
        assert!(answer.body["error"].as_str().unwrap().contains(value), "{}", answer.body);
    }
    let created = app.call("POST", "/api/agents/bot/tasks", Some(task("interval", "60000"))).await;
    let id = created.body["task"]["id"].as_str().unwrap().to_owned();
    let update = app
        .call(
            "PUT",
            &format!("/api/agents/bot/tasks/{id}"),
            Some(json!({"scheduleValue": "300000000000000"})),
        )
        .await;
    assert_eq!(update.status, 400, "{}", update.body);
    assert_eq!(app.call("GET", "/health", None).await.status, 200, "the server lives on");
}

#[actix_web::test]
async fn branch_conflicts_are_409_and_bad_names_400_without_paths() {
    let app = TestApp::spawn(vec![]).await;
    let data_dir = app.dir.path().display().to_string();
    let make = |branch: Value| json!({"worktree": true, "branch": branch});
    let first = app.call("POST", "/api/agents/bot/sessions", Some(make(json!("dup")))).await;
    assert_eq!(first.status, 201, "{}", first.body);
    for (branch, status) in [
        ("dup", 409),
        ("dup/sub", 409),
        ("nul\u{0}x", 400),
        ("HEAD", 400),
        ("FETCH_HEAD", 400),
        ("ORIG_HEAD", 400),
        ("@", 400),
        ("@{-1}", 400),
        ("refs/heads/x", 400),
        ("-x", 400),
    ] {
        let answer = app.call("POST", "/api/agents/bot/sessions", Some(make(json!(branch)))).await;
        assert_eq!(answer.status, status, "{branch:?}: {}", answer.body);
        assert!(!answer.body.to_string().contains(&data_dir), "{branch:?}: {}", answer.body);
    }
}

#[actix_web::test]
async fn worktrees_live_in_a_repository_orbit_owns() {
    let dir = tempfile::tempdir().unwrap();
    let status = std::process::Command::new("git")
        .args(["init", "--quiet"])
        .current_dir(dir.path())
        .status()
        .unwrap();
    assert!(status.success());
    let data = dir.path().join("orbit-data");
    let app = TestApp::spawn_configured(vec![], None, |settings| {
        settings.data_dir = Some(data.clone());
    })
    .await;
    let made = app
        .call("POST", "/api/agents/bot/sessions", Some(json!({"worktree": true, "branch": "mine"})))
        .await;
    assert_eq!(made.status, 201, "{}", made.body);
    let branches = std::process::Command::new("git")
        .args(["branch", "--list"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        !String::from_utf8_lossy(&branches.stdout).contains("mine"),
        "the user's repository got no branch of Orbit's"
    );
}

#[actix_web::test]
async fn errors_the_framework_makes_are_json_too() {
    let app = TestApp::spawn(vec![]).await;
    let wrong_method = app.call("PATCH", "/api/agents", None).await;
    assert_eq!(
        (wrong_method.status, wrong_method.body["code"].as_str()),
        (405, Some("method_not_allowed")),
        "{}",
        wrong_method.body
    );
    let host = app.authority().to_owned();
    let bad_path =
        app.raw(&format!("GET /api/agents/bot/sessions/%ZZ HTTP/1.1\r\nHost: {host}"), "").await;
    assert!(bad_path.body["code"].is_string(), "{} {}", bad_path.status, bad_path.body);
}

#[test]
fn health_checks_and_refusals_cost_no_log_line_at_the_default_level() {
    use std::io::{BufRead, BufReader};
    use std::process::{Command, Stdio};
    let dir = tempfile::tempdir().unwrap();
    // With the access log on, which logs every other answer.
    let mut server = Command::new(env!("CARGO_BIN_EXE_orbit-server-under-test"))
        .args(["--bind", "127.0.0.1:0", "--access-log", "--data-dir"])
        .arg(dir.path().join("data"))
        .env_remove("RUST_LOG")
        .env("ORBIT_API_TOKEN", "s3cret")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = BufReader::new(server.stderr.take().unwrap());
    let (line_tx, line_rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in stderr.lines().map_while(Result::ok) {
            let _ = line_tx.send(line);
        }
    });
    let port = line_rx
        .iter()
        .find_map(|line| {
            let rest = line.split("port=").nth(1)?;
            rest.split_whitespace().next()?.parse::<u16>().ok()
        })
        .unwrap_or_else(|| {
            let _ = server.kill();
            panic!("the server never said where it listens")
        });
    actix_web::rt::System::new().block_on(async {
        let client = awc::Client::default();
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..20 {
            assert_eq!(client.get(format!("{base}/health")).send().await.unwrap().status(), 200);
            let refused = client.get(format!("{base}/api/agents")).send().await.unwrap();
            assert_eq!(refused.status(), 401);
        }
        let allowed = client
            .get(format!("{base}/api/agents"))
            .insert_header(("Authorization", "Bearer s3cret"))
            .send()
            .await
            .unwrap();
        assert_eq!(allowed.status(), 200);
    });
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(server.id() as i32),
        nix::sys::signal::Signal::SIGTERM,
    )
    .unwrap();
    assert!(server.wait().unwrap().success());
    let answered: Vec<String> = line_rx.iter().filter(|line| line.contains("answered")).collect();
    assert_eq!(answered.len(), 1, "one line, for the one request served: {answered:#?}");
}

/// Sends `bytes` on a new connection and reads until the server closes it.
async fn exchange(app: &TestApp, bytes: &[u8]) -> Vec<u8> {
    let mut stream = tokio::net::TcpStream::connect(app.authority()).await.unwrap();
    // The server may answer and stop reading before all of an oversized head is sent.
    let _ = stream.write_all(bytes).await;
    let mut answer = Vec::new();
    // Not a speed assertion: only a bound on waiting for an answer.
    tokio::time::timeout(Duration::from_secs(60), stream.read_to_end(&mut answer))
        .await
        .expect("the server never closed the connection")
        .ok();
    answer
}

#[actix_web::test]
async fn errors_the_connection_makes_are_json_too() {
    let app =
        TestApp::spawn_configured(vec![], None, |settings| settings.header_timeout_secs = 1).await;
    let host = app.authority().to_owned();

    // A request line the parser refuses: actix-http's own 400, once an empty body.
    let garbage = exchange(&app, b"GET / HTTP/9.9 nonsense\r\n\r\n").await;
    let garbage = parse_answer(&garbage);
    assert_eq!((garbage.status, garbage.body["code"].as_str()), (400, Some("malformed_request")));
    assert!(garbage.body["error"].is_string(), "{}", garbage.body);

    // A head with more header lines than the server reads (96): actix-http's own 431. Many
    // short lines rather than one long one, so the server has read all of it when it answers
    // and closes (unread bytes would make the close a reset that can eat the answer).
    let lines: String = (0..100).map(|i| format!("X-Line-{i}: {i}\r\n")).collect();
    let huge = format!("GET /health HTTP/1.1\r\nHost: {host}\r\n{lines}\r\n");
    let huge = parse_answer(&exchange(&app, huge.as_bytes()).await);
    assert_eq!((huge.status, huge.body["code"].as_str()), (431, Some("headers_too_large")));

    // A head that never ends: actix-http's own 408 after the header timeout.
    let slow = format!("GET /health HTTP/1.1\r\nHost: {host}\r\n");
    let slow = parse_answer(&exchange(&app, slow.as_bytes()).await);
    assert_eq!((slow.status, slow.body["code"].as_str()), (408, Some("request_timeout")));

    // Pipelined behind a good request, whose answer goes out in the same write.
    let pipelined = format!("GET /health HTTP/1.1\r\nHost: {host}\r\n\r\nGARBAGE nonsense\r\n\r\n");
    let pipelined = String::from_utf8(exchange(&app, pipelined.as_bytes()).await).unwrap();
    let (first, second) = pipelined.split_at(pipelined.find("HTTP/1.1 400").expect(&pipelined));
    assert!(first.starts_with("HTTP/1.1 200 OK"), "{pipelined}");
    let second = parse_answer(second.as_bytes());
    assert_eq!(second.body["code"], "malformed_request", "{pipelined}");

    // The connection still serves well-formed requests, keep-alive and all.
    let health = format!(
        "GET /health HTTP/1.1\r\nHost: {host}\r\n\r\nGET /health HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n"
    );
    let both = String::from_utf8(exchange(&app, health.as_bytes()).await).unwrap();
    assert_eq!(both.matches("HTTP/1.1 200 OK").count(), 2, "{both}");
}
