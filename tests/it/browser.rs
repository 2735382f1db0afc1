//! The web console in a real browser: headless Chromium, driven through chromedriver's
//! WebDriver HTTP API, against the real server, the real CLI and the scripted model.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/setup-chromium.sh`, run by
//! `scripts/test.sh`). Without them these tests fail, saying so, unless `ORBIT_SKIP_BROWSER=1`
//! asks to skip them. Screenshots of the main pages are left in `target/browser-screenshots/`.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use base64::Engine;
use orbit_testkit::{Reply, Rule};
use serde_json::{Value, json};

use crate::helpers::TestApp;

const CHROMIUM: &str = "/usr/bin/chromium";
const CHROMEDRIVER: &str = "/usr/bin/chromedriver";
/// The W3C name of an element reference in WebDriver answers.
pub(crate) const ELEMENT: &str = "element-6066-11e4-a52e-4f735466cecf";
/// How long the page may take to show what a step waits for (a turn of the real CLI).
const PATIENCE: Duration = Duration::from_secs(60);

/// Whether to run: `false` (with a message) only when `ORBIT_SKIP_BROWSER=1`.
pub(crate) fn browser_wanted() -> bool {
    if std::env::var("ORBIT_SKIP_BROWSER").as_deref() == Ok("1") {
        eprintln!("ORBIT_SKIP_BROWSER=1: the browser tests of the console are skipped");
        return false;
    }
    assert!(
        Path::new(CHROMIUM).exists() && Path::new(CHROMEDRIVER).exists(),
        "Chromium is not installed ({CHROMIUM}, {CHROMEDRIVER}): run scripts/setup-chromium.sh, \
         or set ORBIT_SKIP_BROWSER=1 to skip the console's browser tests"
    );
    true
}

fn screenshots() -> PathBuf {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/browser-screenshots");
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A chromedriver process and one browser session of it.
pub(crate) struct Browser {
    client: awc::Client,
    session: String,
    driver: Child,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Ending chromedriver ends the browser it started.
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

impl Browser {
    pub(crate) async fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
        let driver = Command::new(CHROMEDRIVER)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver starts");
        let client = awc::Client::builder().timeout(Duration::from_secs(120)).finish();
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..100 {
            if let Ok(mut answer) = client.get(format!("{base}/status")).send().await
                && answer.json::<Value>().await.is_ok_and(|s| s["value"]["ready"] == true)
            {
                break;
            }
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
        let profile = tempfile::tempdir().unwrap();
        let args = [
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--window-size=1280,900",
        ]
        .map(str::to_owned)
        .into_iter()
        .chain([format!("--user-data-dir={}", profile.path().display())])
        .collect::<Vec<_>>();
        let capabilities = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": CHROMIUM, "args": args},
        }}});
        let mut answer =
            client.post(format!("{base}/session")).send_json(&capabilities).await.unwrap();
        let body: Value = answer.json().limit(1 << 20).await.unwrap();
        let session = body["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no browser session: {body}"))
            .to_owned();
        Self { client, session: format!("{base}/session/{session}"), driver, _profile: profile }
    }

    pub(crate) async fn command(&self, method: &str, path: &str, body: Option<Value>) -> Value {
        match self.try_command(method, path, body).await {
            Ok(value) => value,
            Err(body) => panic!("WebDriver {method} {path}: {body}"),
        }
    }

    /// A command; the error's body when WebDriver refuses it.
    pub(crate) async fn try_command(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> Result<Value, Value> {
        let url = format!("{}{path}", self.session);
        let request = match method {
            "GET" => self.client.get(url),
            "DELETE" => self.client.delete(url),
            _ => self.client.post(url),
        };
        let mut answer = match body {
            Some(body) => request.send_json(&body).await.unwrap(),
            None => request.send().await.unwrap(),
        };
        let body: Value = answer.json().limit(64 << 20).await.unwrap();
        if answer.status().is_success() { Ok(body["value"].clone()) } else { Err(body) }
    }

    /// Finds `css` and acts on it; an element that the page re-rendered meanwhile (lists
    /// are redrawn as events arrive) is found again.
    pub(crate) async fn on_element(&self, css: &str, action: &str, body: Value) {
        self.wait_for(css).await;
        for _ in 0..50 {
            // Between the wait and the find, the list may be mid-redraw.
            let Some(id) = self.try_element(css).await else {
                actix_web::rt::time::sleep(Duration::from_millis(100)).await;
                continue;
            };
            match self
                .try_command("POST", &format!("/element/{id}/{action}"), Some(body.clone()))
                .await
            {
                Ok(_) => return,
                Err(error) if error["value"]["error"] == "stale element reference" => {
                    actix_web::rt::time::sleep(Duration::from_millis(100)).await;
                }
                Err(error) => panic!("WebDriver {action} on {css}: {error}"),
            }
        }
        panic!("{css} kept being redrawn");
    }

    pub(crate) async fn open(&self, url: &str) {
        self.command("POST", "/url", Some(json!({"url": url}))).await;
    }

    pub(crate) async fn resize(&self, width: u32, height: u32) {
        self.command("POST", "/window/rect", Some(json!({"width": width, "height": height}))).await;
    }

    pub(crate) async fn script(&self, script: &str, args: Value) -> Value {
        self.command("POST", "/execute/sync", Some(json!({"script": script, "args": args}))).await
    }

    /// The element matching `css`, if there is one now.
    pub(crate) async fn try_element(&self, css: &str) -> Option<String> {
        let found = self
            .try_command("POST", "/element", Some(json!({"using": "css selector", "value": css})))
            .await
            .ok()?;
        found[ELEMENT].as_str().map(str::to_owned)
    }

    pub(crate) async fn click(&self, css: &str) {
        self.on_element(css, "click", json!({})).await;
    }

    /// Types into a field as a person would (it is cleared first).
    pub(crate) async fn type_into(&self, css: &str, text: &str) {
        self.on_element(css, "clear", json!({})).await;
        self.on_element(css, "value", json!({"text": text})).await;
    }

    pub(crate) async fn select(&self, css: &str, value: &str) {
        self.click(&format!("{css} option[value=\"{value}\"]")).await;
    }

    /// The text (hidden parts included) of the first element matching `css`, if any.
    pub(crate) async fn text(&self, css: &str) -> Option<String> {
        let text = self
            .script(
                "const e = document.querySelector(arguments[0]); return e ? e.textContent : null;",
                json!([css]),
            )
            .await;
        text.as_str().map(str::to_owned)
    }

    /// Waits until an element matching `css` exists; returns its text.
    pub(crate) async fn wait_for(&self, css: &str) -> String {
        self.wait_for_text(css, "").await
    }

    /// Waits until an element matching `css` holds `wanted`; returns its text.
    pub(crate) async fn wait_for_text(&self, css: &str, wanted: &str) -> String {
        let until = tokio::time::Instant::now() + PATIENCE;
        let mut last = None;
        while tokio::time::Instant::now() < until {
            last = self.text(css).await;
            if let Some(text) = &last
                && text.contains(wanted)
            {
                return text.clone();
            }
            actix_web::rt::time::sleep(Duration::from_millis(100)).await;
        }
        let page = self.text("main").await.unwrap_or_default();
        panic!("{css} never held {wanted:?} (last: {last:?}); the page shows: {page}");
    }

    pub(crate) async fn screenshot(&self, name: &str) {
        let png = self.command("GET", "/screenshot", None).await;
        let bytes =
            base64::engine::general_purpose::STANDARD.decode(png.as_str().unwrap()).unwrap();
        std::fs::write(screenshots().join(format!("{name}.png")), bytes).unwrap();
    }
}

/// An answer the model writes a word at a time.
const SLOW_ANSWER: &str = "first words arrive early while the rest is still being written \
                           and the last word comes long after them at the very end";

pub(crate) fn rules() -> Vec<Rule> {
    vec![
        Rule::after_tool_result(Reply::Text("the tool has finished".into())),
        Rule::when_user_says(
            "write the file",
            Reply::ToolUse {
                name: "Bash".into(),
                input: json!({"command": "echo console-was-here | tee made.txt", "description": "write"}),
            },
        ),
        Rule::when_user_says(
            "remove the file",
            Reply::ToolUse {
                name: "Bash".into(),
                input: json!({"command": "rm made.txt", "description": "remove"}),
            },
        ),
        Rule::when_user_says(
            "tell it slowly",
            Reply::Streamed { text: SLOW_ANSWER.into(), pause: Duration::from_millis(300) },
        ),
        Rule::always(Reply::Text("hello from the model".into())),
    ]
}

/// Sends a chat message from the session page's composer (Enter sends).
pub(crate) async fn say(browser: &Browser, message: &str) {
    // Sending is refused while the previous turn is still ending.
    browser.wait_for("#composer button[type=submit]:not([disabled])").await;
    browser.type_into("#composer textarea", &format!("{message}\u{E007}")).await;
}

#[actix_web::test]
async fn the_console_runs_a_team_in_a_real_browser() {
    if !browser_wanted() {
        return;
    }
    let app = TestApp::spawn(rules()).await;
    let browser = Browser::start().await;
    browser.open(&format!("{}/", app.address)).await;

    // Create an agent in ask mode.
    browser.wait_for("#create-agent").await;
    browser.type_into("#create-agent input[name=name]", "scout").await;
    browser.select("#create-agent select[name=permissionMode]", "ask").await;
    browser.click("#create-agent button[type=submit]").await;
    browser.wait_for_text("[data-agent=scout]", "ask").await;
    browser.screenshot("agents").await;
    assert_eq!(
        app.call("GET", "/api/agents/scout", None).await.body["agent"]["permissionMode"],
        "ask"
    );

    // A session, and a chat whose answer streams in.
    browser.click("[data-agent=scout] a.name").await;
    browser.type_into("#create-session input[name=title]", "First steps").await;
    browser.click("#create-session button[type=submit]").await;
    browser.wait_for_text("main h1", "First steps").await;
    let chat = browser.script("return location.hash;", json!([])).await;
    let chat = chat.as_str().unwrap().to_owned();
    say(&browser, "Say hello").await;
    browser.wait_for_text(".msg.assistant", "hello from the model").await;
    browser.wait_for_text(".turn-footer", "done in").await;

    // A slow answer shows its first words while the turn still runs, then the whole message
    // once: the deltas are confirmed by it, not repeated.
    say(&browser, "tell it slowly").await;
    browser.wait_for_text(".msg.assistant.streaming .text", "first words").await;
    let partial = browser.text(".msg.assistant.streaming .text").await;
    browser.screenshot("chat-streaming").await;
    assert!(
        partial.as_deref().is_some_and(|text| !text.contains("very end")),
        "the text shows before the turn ends: {partial:?}"
    );
    browser.wait_for_text(".msg.assistant:last-child .turn-footer", "done in").await;
    let whole = browser
        .script(
            "return [...document.querySelectorAll('.msg.assistant:last-child .text')]\
             .map((p) => p.textContent);",
            json!([]),
        )
        .await;
    assert_eq!(whole, json!([SLOW_ANSWER]), "the whole message, once");

    // An ask prompt, allowed: the card, the count on every page, then the tool's result.
    say(&browser, "write the file").await;
    browser.wait_for_text(".log .approval:not(.answered) .tool", "Bash").await;
    browser.wait_for_text("#approval-count", "1").await;
    browser.screenshot("chat-approval").await;
    browser.click(".log .approval button.primary").await;
    browser.wait_for_text("details.tool.done", "console-was-here").await;
    browser.wait_for_text(".msg.assistant:last-child", "the tool has finished").await;
    let workspace = app.dir.path().join("data/workspaces/scout/made.txt");
    assert!(workspace.exists(), "the allowed tool ran");
    browser.click("details.tool.done summary").await;
    browser.screenshot("chat").await;

    // Another, denied from the approvals page with a message; the file stays.
    say(&browser, "remove the file").await;
    browser.wait_for(".log .approval:not(.answered)").await;
    browser.click("a[data-nav=approvals]").await;
    browser.wait_for_text("main .approval .tool", "Bash").await;
    browser.type_into("main .approval input[name=message]", "keep it, please").await;
    browser.screenshot("approvals").await;
    browser.click("main .approval button.danger").await;
    // The card goes once answered, and the count with it.
    browser.wait_for_text("main", "Nothing is waiting").await;
    browser.wait_for_text("#approval-count", "0").await;
    assert!(workspace.exists(), "the denied tool did not run");
    let reached = || app.model.requests().iter().any(|r| r.to_string().contains("keep it, please"));
    for _ in 0..300 {
        if reached() {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(reached(), "the person's message reached the model");

    // Opened again, the session shows its history from the transcript: the messages, the
    // tool calls with their results (the allowed one's output, the denied one's refusal),
    // each turn's duration and cost.
    let session = chat.rsplit('/').next().unwrap().to_owned();
    let transcript = format!("/api/agents/scout/sessions/{session}/transcript?limit=1000");
    // All four turns are stored (a turn's transcript is written when it ends).
    for _ in 0..300 {
        let stored = app.call("GET", &transcript, None).await.body.to_string();
        if stored.matches(r#""type":"result""#).count() >= 4 {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    browser.open(&format!("{}/#/agents/scout", app.address)).await;
    browser.wait_for_text("#session-list", "First steps").await;
    browser.open(&format!("{}/{chat}", app.address)).await;
    browser.wait_for_text(".log .msg.user", "Say hello").await;
    browser.wait_for_text(".log details.tool.done", "console-was-here").await;
    browser.wait_for_text(".log details.tool.failed", "keep it, please").await;
    browser.wait_for_text(".log", SLOW_ANSWER).await;
    let footers = browser
        .script(
            "return [...document.querySelectorAll('.log .turn-footer')].map((p) => p.textContent);",
            json!([]),
        )
        .await;
    let footers = footers.as_array().unwrap();
    assert_eq!(footers.len(), 4, "one answer per turn: {footers:?}");
    assert!(
        footers.iter().all(
            |f| f.as_str().unwrap().contains("done in") && f.as_str().unwrap().contains("cost")
        ),
        "{footers:?}"
    );
    // In view above the sticky composer, as a person would scroll it.
    browser
        .script(
            "document.querySelector('.log details.tool.done').scrollIntoView({block: 'center'});",
            json!([]),
        )
        .await;
    // Each turn's own cost (the CLI's result says the session's running total).
    let shown: f64 = footers
        .iter()
        .filter_map(|f| f.as_str()?.split("cost $").nth(1)?.split(' ').next()?.parse::<f64>().ok())
        .sum();
    let path = format!("/api/agents/scout/sessions/{session}");
    let total =
        app.call("GET", &path, None).await.body["session"]["totalCostUsd"].as_f64().unwrap();
    assert!((shown - total).abs() < 0.0003, "turns' costs {footers:?} add up to {total}");
    browser.click(".log details.tool.done summary").await;
    browser.screenshot("chat-history").await;
    browser
        .script(
            "const d = document.querySelector('.log details.tool.failed'); \
             d.open = true; d.scrollIntoView({block: 'center'});",
            json!([]),
        )
        .await;
    browser.screenshot("chat-history-denied").await;
    browser.resize(390, 844).await;
    browser.screenshot("chat-history-390").await;
    browser.resize(1280, 900).await;

    // A task that the scheduler runs by itself: its run appears without a reload.
    browser.open(&format!("{}/#/agents/scout/tasks", app.address)).await;
    browser.type_into("#create-task textarea[name=prompt]", "Write the daily report").await;
    browser.type_into("#create-task input[name=scheduleValue]", "10").await;
    browser.wait_for_text("#schedule-check", "at least 1000 ms").await;
    // A cron expression is checked by the server as it is typed: its reason, or its next runs.
    browser.select("#create-task select[name=scheduleType]", "cron").await;
    browser.type_into("#create-task input[name=scheduleValue]", "0 0 30 2 *").await;
    browser.wait_for_text("#schedule-check", "never fires").await;
    browser.type_into("#create-task input[name=scheduleValue]", "15 6 * * *").await;
    browser.wait_for_text("#schedule-check", "Next 3 runs").await;
    let upcoming = browser
        .script(
            "return [...document.querySelectorAll('#schedule-preview time[datetime]')]\
             .filter((t) => !t.title).map((t) => t.getAttribute('datetime'));",
            json!([]),
        )
        .await;
    let upcoming: Vec<&str> =
        upcoming.as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect();
    assert_eq!(upcoming.len(), 3, "{upcoming:?}");
    assert!(upcoming.iter().all(|t| t.contains("T06:15:00")), "06:15 UTC each day: {upcoming:?}");
    browser.screenshot("tasks-schedule-preview").await;
    browser.select("#create-task select[name=scheduleType]", "once").await;
    let soon = orbit_store::timestamp::now() + Duration::from_secs(4);
    let soon = orbit_store::timestamp::rfc3339::format(soon).unwrap();
    browser.type_into("#create-task input[name=scheduleValue]", &soon).await;
    browser.wait_for_text("#schedule-check", "Runs once").await;
    browser.click("#create-task button[type=submit]").await;
    browser.wait_for("[data-task]").await;
    browser.wait_for_text("[data-task] .runs", "success").await;
    browser.screenshot("tasks").await;
    browser.click("[data-task] .runs a").await;
    browser.wait_for_text(".log", "Write the daily report").await;

    // The inbox: a message sent, then archived.
    browser.open(&format!("{}/#/agents/scout/inbox", app.address)).await;
    browser.type_into("#send-message textarea[name=message]", "Please review the report").await;
    browser.click("#send-message button[type=submit]").await;
    browser.wait_for_text("#inbox-pending", "Please review the report").await;
    browser.screenshot("inbox").await;
    browser.click("#inbox-pending button").await;
    browser.wait_for_text("#inbox-archived", "Please review the report").await;

    // A session in a worktree of its own, listed among the worktrees.
    browser.open(&format!("{}/#/agents/scout/sessions", app.address)).await;
    browser.click("#create-session input[name=worktree]").await;
    browser.type_into("#create-session input[name=branch]", "feature/console").await;
    browser.click("#create-session button[type=submit]").await;
    browser.wait_for("#composer").await;
    browser.open(&format!("{}/#/agents/scout/worktrees", app.address)).await;
    browser.wait_for_text("#worktree-list", "feature/console").await;
    browser.screenshot("worktrees").await;
    browser.open(&format!("{}/#/agents/scout", app.address)).await;
    browser.wait_for_text("#session-list", "First steps").await;
    // Each session with the start of its last message, as the API has it.
    let sessions = app.call("GET", "/api/agents/scout/sessions", None).await.body;
    let first_steps = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["title"] == "First steps")
        .unwrap()
        .clone();
    let last = first_steps["lastMessage"]["text"].as_str().unwrap();
    let id = first_steps["id"].as_str().unwrap();
    browser.wait_for_text(&format!("[data-session=\"{id}\"] .snippet"), last).await;
    browser.screenshot("sessions").await;

    // A phone's width.
    browser.resize(390, 844).await;
    browser.open(&format!("{}/#/", app.address)).await;
    browser.wait_for("[data-agent=scout]").await;
    // Cost today: the sessions' costs of today's turns, exactly; a session whose turns ended
    // yesterday (First steps, made so) is left out.
    let yesterday = crate::helpers::backdate_day_cost(&app, "scout", id);
    let today = time::OffsetDateTime::now_utc().date().to_string();
    let sessions = app.call("GET", "/api/agents/scout/sessions", None).await.body;
    let backdated = sessions["sessions"].as_array().unwrap().iter().find(|s| s["id"] == id);
    assert_eq!(backdated.unwrap()["dayCost"]["day"], yesterday.as_str(), "{sessions}");
    assert!(backdated.unwrap()["dayCost"]["costUsd"].as_f64().unwrap() > 0.0, "{sessions}");
    let usd: f64 = sessions["sessions"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["dayCost"]["day"] == today.as_str())
        .map(|s| s["dayCost"]["costUsd"].as_f64().unwrap())
        .sum();
    assert!(usd > 0.0, "today's turns cost something: {sessions}");
    let shown = if usd < 0.01 { format!("${usd:.4}") } else { format!("${usd:.2}") };
    browser.script("location.hash = '#/tasks';", json!([])).await;
    browser.wait_for_text("main h1", "Tasks").await;
    browser.script("location.hash = '#/';", json!([])).await;
    browser.wait_for_text("[data-agent=scout] .cost", &shown).await;
    browser.screenshot("agents-390").await;
    // At UTC midnight the list is drawn anew, and today's costs become yesterday's: the
    // page's clock is set to four seconds before midnight, the list drawn by it, then left.
    browser
        .script(
            "const real = Date.now.bind(Date); const now = new Date(real()); \
             const offset = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate() + 1) \
               - 4000 - real(); \
             Date.now = () => real() + offset; location.hash = '#/tasks';",
            json!([]),
        )
        .await;
    browser.wait_for_text("main h1", "Tasks").await;
    browser.script("location.hash = '#/';", json!([])).await;
    browser.wait_for_text("[data-agent=scout] .cost", &shown).await;
    // Exactly nothing (today's "$0.0012" holds "$0.00" too).
    let mut cost = None;
    for _ in 0..100 {
        cost = browser.text("[data-agent=scout] .cost").await;
        if cost.as_deref() == Some("$0.00") {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(cost.as_deref(), Some("$0.00"), "nothing of a new day is spent yet");
    browser.script("location.reload();", json!([])).await;
    browser.wait_for_text("[data-agent=scout] .cost", &shown).await;
    browser.open(&format!("{}/#/agents/scout/tasks", app.address)).await;
    browser.wait_for("[data-task]").await;
    browser.screenshot("tasks-390").await;
    browser.click("[data-task] .runs a").await;
    browser.wait_for_text(".log", "Write the daily report").await;
    browser.screenshot("chat-390").await;
}

#[actix_web::test]
async fn a_token_protected_server_refuses_the_console_until_the_token_is_given() {
    if !browser_wanted() {
        return;
    }
    let app = TestApp::spawn_with_token(vec![], Some("the-right-token")).await;
    app.create_agent("guarded").await;
    let browser = Browser::start().await;
    browser.open(&format!("{}/", app.address)).await;
    browser.wait_for("#token-form").await;
    assert!(browser.text("#agent-list").await.is_none(), "nothing is shown without the token");
    browser.screenshot("token").await;

    // A token that no HTTP header can carry (a zero-width space, a curly quote, a letter
    // outside Latin-1) is refused on the spot, saying why, and not kept.
    for pasted in ["the-right-token\u{200B}", "\u{201C}the-right-token\u{201D}", "tökén-ž"] {
        browser
            .script(
                "document.querySelector('#token-form input[name=token]').value = arguments[0];",
                json!([pasted]),
            )
            .await;
        browser.click("#token-form button[type=submit]").await;
        browser.wait_for_text("#token-form .notice", "printable ASCII").await;
        let kept = browser
            .script(
                "return sessionStorage.getItem('orbit.token') || localStorage.getItem('orbit.token');",
                json!([]),
            )
            .await;
        assert_eq!(kept, Value::Null, "{pasted:?} is not kept");
        browser
            .script("document.querySelector('#token-form .notice').textContent = '';", json!([]))
            .await;
    }

    browser.type_into("#token-form input[name=token]", "a-wrong-token").await;
    browser.click("#token-form button[type=submit]").await;
    browser.wait_for_text("#token-form .notice", "refused").await;

    browser.type_into("#token-form input[name=token]", "the-right-token").await;
    browser.click("#token-form button[type=submit]").await;
    browser.wait_for_text("#agent-list", "guarded").await;
    browser.wait_for_text("#live", "live").await;
    let url = browser.script("return location.href;", json!([])).await;
    assert!(!url.as_str().unwrap().contains("the-right-token"), "never in a URL: {url}");

    // Asked once: a reload keeps it for the tab.
    browser.open(&format!("{}/#/tasks", app.address)).await;
    browser.wait_for_text("main h1", "Tasks").await;
    assert!(browser.text("#token-form").await.is_none());
}

#[actix_web::test]
async fn a_turn_started_elsewhere_is_watched_live() {
    if !browser_wanted() {
        return;
    }
    let app = TestApp::spawn(rules()).await;
    app.create_agent("watched").await;
    let session = app.create_session("watched").await;
    let page = format!("{}/#/agents/watched/sessions/{session}", app.address);
    let browser = Browser::start().await;
    browser.open(&page).await;
    browser.wait_for_text(".log", "No messages yet").await;
    let slow = json!({"agentName": "watched", "sessionId": session, "message": "tell it slowly"});

    // Started by another client while the session is open: announced by turn_started,
    // watched through /stream as it streams.
    let ((status, _), ()) = tokio::join!(app.chat(slow.clone()), async {
        browser.wait_for_text(".msg.assistant.streaming .text", "first words").await;
        browser.wait_for_text("main", "running in this session").await;
        let partial = browser.text(".msg.assistant.streaming .text").await;
        assert!(
            partial.as_deref().is_some_and(|text| !text.contains("very end")),
            "watched before the turn ends: {partial:?}"
        );
        browser.screenshot("chat-watched").await;
    });
    assert_eq!(status, 200);
    // Once it ended, its transcript takes its place, with the message that started it.
    browser.wait_for_text(".log .turn-group .msg.user", "tell it slowly").await;
    browser.wait_for_text(".log .turn-group .turn-footer", "done in").await;
    let texts = "return [...document.querySelectorAll('.log .msg.assistant .text')]\
                 .map((p) => p.textContent);";
    assert_eq!(browser.script(texts, json!([])).await, json!([SLOW_ANSWER]));

    // Opened while a turn runs: attached at once, shown from the turn's first event.
    browser.open(&format!("{}/#/agents/watched", app.address)).await;
    browser.wait_for("#session-list").await;
    let asked = app.model.requests().len();
    let ((status, _), ()) = tokio::join!(app.chat(slow), async {
        while app.model.requests().len() == asked {
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        browser.open(&page).await;
        browser.wait_for_text(".msg.assistant.streaming .text", "first words").await;
        browser.wait_for_text("main", "A turn is running in this session").await;
    });
    assert_eq!(status, 200);
    browser.wait_for_text(".log .turn-group:last-child .turn-footer", "done in").await;
    assert_eq!(
        browser.script(texts, json!([])).await,
        json!([SLOW_ANSWER, SLOW_ANSWER]),
        "the earlier turn from the transcript, the watched one in its place"
    );
    browser.resize(390, 844).await;
    browser.script("window.scrollTo(0, document.documentElement.scrollHeight);", json!([])).await;
    browser.screenshot("chat-watched-390").await;
}
