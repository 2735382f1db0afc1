//! The web console in a real browser: headless Chromium, driven through chromedriver's
//! WebDriver HTTP API, against the real server, the real CLI and the scripted model.
//!
//! Needs Debian's `chromium` and `chromium-driver` (`scripts/setup-chromium.sh`, run by
//! `scripts/test.sh`). Without them these tests fail, saying so, unless `ORBIT_SKIP_BROWSER=1`
//! asks to skip them. Screenshots of the main pages are left in `target/browser-screenshots/`.
//! The driver of the browser is `browser_driver`; this module keeps the main flows, the
//! model's rules the console's tests share and the composer's `say`.

use std::time::Duration;

use orbit_testkit::{Reply, Rule};
use serde_json::{Value, json};

use crate::browser_driver::{Browser, browser_wanted};
use crate::helpers::TestApp;

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
