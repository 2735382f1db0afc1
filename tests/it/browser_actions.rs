//! Every action the console offers, done by clicking in a real browser and checked against
//! the API: agents edited and deleted, sessions renamed and deleted, tasks paused, resumed,
//! run and deleted, a dirty worktree reported and then removed on request, inbox messages
//! claimed, read and dead, a running turn aborted, a 409 and a 429 explained, and an
//! approval's card gone when its time runs out. Needs Chromium like `browser`.

use std::time::Duration;

use orbit_testkit::{Reply, Rule};
use serde_json::{Value, json};

use crate::browser::say;
use crate::browser_driver::{Browser, browser_wanted};
use crate::helpers::TestApp;

/// A long answer: a word a second.
const PATIENT_ANSWER: &str = "one two three four five six seven eight nine ten eleven twelve \
                              thirteen fourteen fifteen sixteen seventeen eighteen nineteen twenty \
                              twenty-one twenty-two twenty-three twenty-four twenty-five the end";

fn action_rules() -> Vec<Rule> {
    let refusal =
        r#"{"type":"error","error":{"type":"invalid_request_error","message":"scripted refusal"}}"#;
    vec![
        Rule::after_tool_result(Reply::Text("the tool has finished".into())),
        Rule::when_user_says("fail please", Reply::HttpError(400, refusal.into())),
        Rule::when_user_says(
            "take your time",
            Reply::Streamed { text: PATIENT_ANSWER.into(), pause: Duration::from_millis(1000) },
        ),
        Rule::when_user_says(
            "write the file",
            Reply::ToolUse {
                name: "Bash".into(),
                input: json!({"command": "echo waited > waited.txt", "description": "write"}),
            },
        ),
        Rule::always(Reply::Text("hello from the model".into())),
    ]
}

/// Waits until nothing matches `css`.
async fn wait_gone(browser: &Browser, css: &str) {
    for _ in 0..300 {
        if browser.text(css).await.is_none() {
            return;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("{css} is still shown: {:?}", browser.text("main").await);
}

/// Presses a confirming button twice, as a person confirms, and waits for `gone` to go. The
/// question must still be there for the second press (a list redrawn between the presses
/// would take it away, and the second press would only ask again): once is enough.
async fn confirm(browser: &Browser, css: &str, gone: &str) {
    browser.click(css).await;
    browser.wait_for_text(css, "?").await;
    browser.click(css).await;
    wait_gone(browser, gone).await;
}

async fn status_of(app: &TestApp, path: &str) -> (u16, Value) {
    let answer = app.call("GET", path, None).await;
    (answer.status, answer.body)
}

#[actix_web::test]
async fn agents_sessions_tasks_and_worktrees_are_managed_by_clicking() {
    if !browser_wanted() {
        return;
    }
    let app = TestApp::spawn(action_rules()).await;
    app.create_agent("crew").await;
    app.create_agent("doomed").await;
    let browser = Browser::start().await;
    browser.open(&format!("{}/", app.address)).await;

    // An agent edited: mode and model.
    browser.click("[data-agent=crew] .actions button").await;
    browser.select("[data-agent=crew] form.edit select[name=permissionMode]", "ask").await;
    browser.type_into("[data-agent=crew] form.edit input[name=model]", "sonnet").await;
    browser.click("[data-agent=crew] form.edit button[type=submit]").await;
    browser.wait_for_text("[data-agent=crew]", "sonnet").await;
    let (_, crew) = status_of(&app, "/api/agents/crew").await;
    assert_eq!(
        (crew["agent"]["permissionMode"].as_str(), crew["agent"]["model"].as_str()),
        (Some("ask"), Some("sonnet"))
    );
    // An agent deleted, after a confirmation.
    // The question stays while the list hears of a change elsewhere: its redraw waits.
    browser.click("[data-agent=doomed] button.danger").await;
    browser.wait_for_text("[data-agent=doomed] button.danger", "?").await;
    app.create_agent("bystander").await;
    actix_web::rt::time::sleep(Duration::from_millis(800)).await;
    browser.wait_for_text("[data-agent=doomed] button.danger", "?").await;
    browser.click("[data-agent=doomed] button.danger").await;
    wait_gone(&browser, "[data-agent=doomed]").await;
    browser.wait_for("[data-agent=bystander]").await;
    assert_eq!(status_of(&app, "/api/agents/doomed").await.0, 404);

    // A session renamed, another deleted.
    let keep =
        app.call("POST", "/api/agents/crew/sessions", Some(json!({"title": "old name"}))).await;
    let keep = keep.body["session"]["id"].as_str().unwrap().to_owned();
    let scrap = app.create_session("crew").await;
    browser.open(&format!("{}/#/agents/crew", app.address)).await;
    browser.click(&format!("[data-session=\"{keep}\"] .actions button")).await;
    browser
        .type_into(&format!("[data-session=\"{keep}\"] form.edit input[name=title]"), "new name")
        .await;
    browser.click(&format!("[data-session=\"{keep}\"] form.edit button[type=submit]")).await;
    browser.wait_for_text(&format!("[data-session=\"{keep}\"] a.name"), "new name").await;
    let (_, kept) = status_of(&app, &format!("/api/agents/crew/sessions/{keep}")).await;
    assert_eq!(kept["session"]["title"], "new name");
    let scrapped = format!("[data-session=\"{scrap}\"]");
    confirm(&browser, &format!("{scrapped} button.danger"), &scrapped).await;
    assert_eq!(status_of(&app, &format!("/api/agents/crew/sessions/{scrap}")).await.0, 404);

    // A task paused, resumed, run now and deleted.
    let task =
        json!({"prompt": "Say hello", "scheduleType": "interval", "scheduleValue": "3600000"});
    let task = app.call("POST", "/api/agents/crew/tasks", Some(task)).await;
    let task = task.body["task"]["id"].as_str().unwrap().to_owned();
    let card = format!("[data-task=\"{task}\"]");
    let task_path = format!("/api/agents/crew/tasks/{task}");
    browser.open(&format!("{}/#/agents/crew/tasks", app.address)).await;
    browser.click(&format!("{card} .actions button")).await;
    browser.wait_for_text(&format!("{card} header .pill"), "paused").await;
    assert_eq!(status_of(&app, &task_path).await.1["task"]["status"], "paused");
    browser.click(&format!("{card} .actions button")).await;
    browser.wait_for_text(&format!("{card} header .pill"), "active").await;
    assert_eq!(status_of(&app, &task_path).await.1["task"]["status"], "active");
    browser.click(&format!("{card} .actions button:nth-child(2)")).await;
    browser.wait_for_text(&format!("{card} .runs"), "success").await;
    let (_, runs) = status_of(&app, &format!("{task_path}/runs")).await;
    assert_eq!(runs["runs"][0]["status"], "success", "{runs}");
    browser.screenshot("tasks-run-now").await;
    confirm(&browser, &format!("{card} .actions button.danger"), &card).await;
    assert_eq!(status_of(&app, &task_path).await.0, 404);

    // A worktree left with uncommitted work: reported, kept, then removed when asked again.
    let session =
        app.call("POST", "/api/agents/crew/sessions", Some(json!({"worktree": true}))).await;
    let session = session.body["session"]["id"].as_str().unwrap().to_owned();
    let (_, worktrees) = status_of(&app, "/api/agents/crew/worktrees").await;
    let worktree = worktrees["worktrees"][0].clone();
    let path = worktree["path"].as_str().unwrap();
    std::fs::write(std::path::Path::new(path).join("unsaved.txt"), "work in progress").unwrap();
    let deleted = app.call("DELETE", &format!("/api/agents/crew/sessions/{session}"), None).await;
    assert!(deleted.body["worktreeKept"].is_object(), "{}", deleted.body);
    let row = format!("[data-worktree=\"{}\"]", worktree["id"].as_str().unwrap());
    browser.open(&format!("{}/#/agents/crew/worktrees", app.address)).await;
    browser.click(&format!("{row} .actions button")).await;
    browser.wait_for_text("main .notice", "Not removed").await;
    browser.wait_for_text(&format!("{row} .actions button.danger"), "Remove anyway").await;
    browser.screenshot("worktree-dirty").await;
    assert!(std::path::Path::new(path).join("unsaved.txt").exists(), "kept");
    confirm(&browser, &format!("{row} .actions button.danger"), &row).await;
    assert_eq!(status_of(&app, "/api/agents/crew/worktrees").await.1["worktrees"], json!([]));
}

#[actix_web::test]
async fn inbox_messages_are_seen_claimed_read_and_dead() {
    if !browser_wanted() {
        return;
    }
    let app = TestApp::spawn(action_rules()).await;
    app.create_agent("crew").await;
    app.create_agent("lost").await;
    let note =
        json!({"fromAgent": "ops", "fromKind": "person", "message": "Read me during a turn"});
    app.call("POST", "/api/agents/crew/inbox", Some(note)).await;
    let browser = Browser::start().await;
    browser.open(&format!("{}/#/agents/crew/inbox", app.address)).await;
    browser.wait_for_text("#inbox-pending", "Read me during a turn").await;

    // Claimed by the turn that reads it, then read when that turn ends.
    let session = app.create_session("crew").await;
    let chat = json!({"agentName": "crew", "sessionId": session, "message": "take your time"});
    let ((status, _), ()) = tokio::join!(app.chat(chat), async {
        browser.wait_for_text("#inbox-claimed", "Claimed by").await;
        browser.screenshot("inbox-claimed").await;
        browser.click("#inbox-claimed a").await;
        browser.wait_for_text("main", "running in this session").await;
        browser.open(&format!("{}/#/agents/crew/inbox", app.address)).await;
    });
    assert_eq!(status, 200);
    browser.wait_for_text("#inbox-archived", "Read me during a turn").await;
    browser.wait_for_text("#inbox-archived .pill", "read").await;
    assert_eq!(browser.text("#inbox-claimed").await.unwrap(), "No message is being handled now.");

    // Dead: a message that three turns failed to handle.
    let note =
        json!({"fromAgent": "ops", "fromKind": "person", "message": "Nobody will handle me"});
    app.call("POST", "/api/agents/lost/inbox", Some(note)).await;
    browser.open(&format!("{}/#/agents/lost/inbox", app.address)).await;
    browser.wait_for_text("#inbox-pending", "Nobody will handle me").await;
    let session = app.create_session("lost").await;
    for _ in 0..3 {
        let chat = json!({"agentName": "lost", "sessionId": session, "message": "fail please"});
        assert_eq!(app.chat(chat).await.0, 200);
    }
    browser.wait_for_text("#inbox-dead", "Nobody will handle me").await;
    browser.wait_for_text("#inbox-dead", "Delivered 3 time(s)").await;
    assert_eq!(browser.text("#inbox-pending").await.unwrap(), "No pending messages.");
    browser.screenshot("inbox-dead").await;
}

/// Reads of the inbox the page made (`GET .../inbox`, without the archive's and the dead's).
async fn inbox_reads(browser: &Browser, agent: &str) -> usize {
    let reads = browser
        .script(
            "return performance.getEntriesByType('resource')\
             .filter((r) => new URL(r.name).pathname === arguments[0]).length;",
            json!([format!("/api/agents/{agent}/inbox")]),
        )
        .await;
    reads.as_u64().unwrap() as usize
}

#[actix_web::test]
async fn the_inbox_reloads_once_for_a_burst_and_draws_only_its_latest_read() {
    if !browser_wanted() {
        return;
    }
    let app = TestApp::spawn(vec![]).await;
    app.create_agent("crew").await;
    let browser = Browser::start().await;
    browser.open(&format!("{}/#/agents/crew/inbox", app.address)).await;
    browser.wait_for_text("#inbox-pending", "No pending messages").await;
    browser.wait_for_text("#live", "live").await;
    let before = inbox_reads(&browser, "crew").await;

    // A burst of ten messages: one reload (or a few, on a slow machine), not ten.
    let send = |text: String| {
        let body = json!({"fromAgent": "ops", "fromKind": "person", "message": text});
        app.call("POST", "/api/agents/crew/inbox", Some(body))
    };
    let sent = futures_util::future::join_all((0..10).map(|n| send(format!("burst {n}")))).await;
    assert!(sent.iter().all(|answer| answer.status == 201));
    for n in 0..10 {
        browser.wait_for_text("#inbox-pending", &format!("burst {n}")).await;
    }
    actix_web::rt::time::sleep(Duration::from_millis(600)).await;
    let reads = inbox_reads(&browser, "crew").await - before;
    assert!((1..=4).contains(&reads), "a burst of ten events read the inbox {reads} times");

    // Two reloads overlap and the older one's answer comes back last: it is not drawn over
    // the newer one. The page's next inbox read is answered late (its answer read at once,
    // held back two seconds).
    browser
        .script(
            "const real = window.fetch; let first = true; \
             window.fetch = async (path, init) => { \
               const answer = await real(path, init); \
               if (first && String(path).endsWith('/api/agents/crew/inbox')) { \
                 first = false; await new Promise((r) => setTimeout(r, 2000)); \
               } \
               return answer; };",
            json!([]),
        )
        .await;
    assert_eq!(send("older".into()).await.status, 201);
    browser.wait_for_text("#inbox-pending", "burst 9").await;
    actix_web::rt::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(send("newer".into()).await.status, 201);
    browser.wait_for_text("#inbox-pending", "newer").await;
    // The held-back answer (without "newer") has come and gone.
    actix_web::rt::time::sleep(Duration::from_millis(2500)).await;
    let shown = browser.text("#inbox-pending").await.unwrap();
    assert!(shown.contains("newer") && shown.contains("older"), "{shown}");
}

#[actix_web::test]
async fn a_turn_is_aborted_and_refusals_are_explained() {
    if !browser_wanted() {
        return;
    }
    // One process for everything: a second turn elsewhere finds none free.
    let app = TestApp::spawn_configured(action_rules(), None, |settings| {
        settings.max_processes = 1;
        settings.ask_timeout_secs = 3;
    })
    .await;
    app.create_agent("solo").await;
    let mine = app.create_session("solo").await;
    let other = app.create_session("solo").await;
    let browser = Browser::start().await;
    browser.open(&format!("{}/#/agents/solo/sessions/{mine}", app.address)).await;

    // Aborted while it streams: the answer stops short.
    say(&browser, "take your time").await;
    browser.wait_for_text(".msg.assistant.streaming .text", "two").await;
    browser.click("#composer button.danger").await;
    browser.wait_for_text("main", "Abort requested").await;
    browser.wait_for("#composer button[type=submit]:not([disabled])").await;
    browser.screenshot("chat-aborted").await;
    let (_, session) = status_of(&app, &format!("/api/agents/solo/sessions/{mine}")).await;
    let answer = session["messages"][1]["content"].as_str().unwrap_or_default();
    assert!(!answer.contains("the end"), "stopped short: {session}");
    // What the stopped turn cost (the CLI says so in its result) is counted, today's too.
    let cost = session["session"]["totalCostUsd"].as_f64();
    assert!(cost.is_some_and(|cost| cost > 0.0), "an aborted turn's cost is counted: {session}");
    assert_eq!(session["session"]["dayCost"]["costUsd"].as_f64(), cost, "{session}");

    // Busy: the only process serves another session's long turn (it ended this session's
    // idle one to start).
    let busy = json!({"agentName": "solo", "sessionId": other, "message": "take your time"});
    let asked = app.model.requests().len();
    let ((status, _), ()) = tokio::join!(app.chat(busy), async {
        while app.model.requests().len() == asked {
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        say(&browser, "hello").await;
        browser.wait_for_text("main", "busy (429)").await;
        assert_eq!(
            browser
                .script("return document.querySelector('#composer textarea').value;", json!([]))
                .await,
            "hello",
            "the message is kept"
        );
        browser.screenshot("chat-busy").await;
    });
    assert_eq!(status, 200);

    // Conflict: the agent was made inactive elsewhere.
    app.call("PUT", "/api/agents/solo", Some(json!({"status": "inactive"}))).await;
    browser.type_into("#composer textarea", "hello again\u{E007}").await;
    browser.wait_for_text("main", "(409: ").await;
    browser.screenshot("chat-conflict").await;
    app.call("PUT", "/api/agents/solo", Some(json!({"status": "active", "permissionMode": "ask"})))
        .await;

    // An approval nobody answers: its card goes when its time runs out, on every page.
    browser.open(&format!("{}/#/approvals", app.address)).await;
    browser.wait_for("main .approvals, main h1").await;
    let ask = json!({"agentName": "solo", "sessionId": mine, "message": "write the file"});
    let ((status, _), ()) = tokio::join!(app.chat(ask), async {
        browser.wait_for_text("main .approval .tool", "Bash").await;
        browser.wait_for_text("#approval-count", "1").await;
        wait_gone(&browser, "main .approval:not(.answered)").await;
        browser.wait_for("#approval-count[hidden]").await;
    });
    assert_eq!(status, 200);
}

/// A TCP relay between the browser and the server that can cut every connection and refuse
/// new ones for a while, as when a laptop loses its network.
struct Relay {
    port: u16,
    down: std::sync::Arc<std::sync::atomic::AtomicBool>,
    connections: std::sync::Arc<std::sync::Mutex<Vec<tokio::task::AbortHandle>>>,
}

impl Relay {
    async fn bind() -> (Self, tokio::net::TcpListener) {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let relay = Self {
            port: listener.local_addr().unwrap().port(),
            down: Default::default(),
            connections: Default::default(),
        };
        (relay, listener)
    }

    fn forward(&self, listener: tokio::net::TcpListener, to: String) {
        let (down, connections) = (self.down.clone(), self.connections.clone());
        tokio::spawn(async move {
            while let Ok((mut inbound, _)) = listener.accept().await {
                if down.load(std::sync::atomic::Ordering::SeqCst) {
                    continue; // dropped: the connection closes at once
                }
                let to = to.clone();
                let task = tokio::spawn(async move {
                    let Ok(mut outbound) = tokio::net::TcpStream::connect(to).await else { return };
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                });
                connections.lock().unwrap().push(task.abort_handle());
            }
        });
    }

    fn cut(&self, down: bool) {
        self.down.store(down, std::sync::atomic::Ordering::SeqCst);
        if down {
            for connection in self.connections.lock().unwrap().drain(..) {
                connection.abort();
            }
        }
    }
}

#[actix_web::test]
async fn after_a_dropped_connection_the_console_reconnects_and_catches_up() {
    if !browser_wanted() {
        return;
    }
    let (relay, listener) = Relay::bind().await;
    let through = format!("127.0.0.1:{}", relay.port);
    let allowed = through.clone();
    let app = TestApp::spawn_configured(vec![], None, move |settings| {
        settings.allowed_hosts.push(allowed);
    })
    .await;
    relay.forward(listener, app.address.trim_start_matches("http://").to_owned());
    app.create_agent("first").await;
    let browser = Browser::start().await;
    browser.open(&format!("http://{through}/")).await;
    browser.wait_for_text("#live", "live").await;
    browser.wait_for("[data-agent=first]").await;
    browser.script("window.samePage = true;", json!([])).await;

    relay.cut(true);
    browser.wait_for_text("#live", "offline").await;
    // Made while the console cannot hear of it.
    app.create_agent("while-away").await;
    browser.screenshot("offline").await;
    actix_web::rt::time::sleep(Duration::from_secs(2)).await;
    assert!(browser.text("[data-agent=while-away]").await.is_none(), "not heard of yet");
    relay.cut(false);
    browser.wait_for_text("#live", "live").await;
    browser.wait_for("[data-agent=while-away]").await;
    assert_eq!(browser.script("return window.samePage;", json!([])).await, true, "no reload");
}
