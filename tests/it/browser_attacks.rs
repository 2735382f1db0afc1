//! The console attacked in a real browser: markup planted in everything it shows (session
//! titles, messages and their senders, task names and prompts, the model's text, a tool's
//! input and output) stays text; no page of another origin can frame the console, read the
//! API or change anything through it; the token stays out of URLs and out of lasting storage.
//! Needs Chromium like `browser`.

use std::time::Duration;

use actix_web::{App, HttpResponse, HttpServer, web};
use orbit_testkit::{Reply, Rule};
use serde_json::{Value, json};

use crate::browser::say;
use crate::browser_driver::{Browser, browser_wanted};
use crate::helpers::TestApp;

/// Markup that would show up as elements (and run, were the policy not there) if any text
/// reached the page as HTML.
fn payload(place: &str) -> String {
    format!(
        "<b class=\"injected\">{place}</b><img class=\"injected\" src=\"/x\" onerror=\"window.pwned='{place}'\">\
         <script>window.pwned='{place}'</script>"
    )
}

/// Elements the payloads would make, and whatever they ran.
const INJECTED: &str = "return {elements: document.querySelectorAll('.injected, main script, main img').length, \
                        pwned: window.pwned || null, violations: window.violations || null};";

fn attack_rules() -> Vec<Rule> {
    vec![
        Rule::after_tool_result(Reply::Text(payload("tool-answer"))),
        Rule::when_user_says(
            "run the tool",
            Reply::ToolUse {
                name: "Bash".into(),
                input: json!({
                    "command": format!("printf '%s' '{}'", payload("tool-output").replace('\'', "")),
                    "description": payload("tool-description"),
                }),
            },
        ),
        Rule::always(Reply::Text(payload("model-text"))),
    ]
}

/// Moves the console to `hash` within the same document (the listener of policy
/// violations stays), and waits for `css` to hold `wanted`.
async fn go(browser: &Browser, hash: &str, css: &str, wanted: &str) {
    browser.script("location.hash = arguments[0];", json!([hash])).await;
    browser.wait_for_text(css, wanted).await;
}

async fn assert_clean(browser: &Browser, page: &str) {
    let found = browser.script(INJECTED, json!([])).await;
    assert_eq!(found["elements"], 0, "{page}: markup became elements: {found}");
    assert_eq!(found["pwned"], Value::Null, "{page}: a payload ran: {found}");
    assert_eq!(found["violations"], json!([]), "{page}: the policy had to stop something: {found}");
}

#[actix_web::test]
async fn markup_planted_everywhere_is_shown_as_text() {
    if !browser_wanted() {
        return;
    }
    let app = TestApp::spawn(attack_rules()).await;
    app.create_agent_with(json!({"name": "target", "permissionMode": "allow-all"})).await;
    app.create_agent_with(json!({"name": "asker", "permissionMode": "ask"})).await;
    let created = app
        .call("POST", "/api/agents/target/sessions", Some(json!({"title": payload("title")})))
        .await;
    let session = created.body["session"]["id"].as_str().unwrap().to_owned();
    let from = payload("sender").chars().take(120).collect::<String>();
    let sent = json!({"fromAgent": from, "fromKind": "person", "message": payload("inbox")});
    assert_eq!(app.call("POST", "/api/agents/target/inbox", Some(sent)).await.status, 201);
    let task = json!({"prompt": payload("prompt"), "name": payload("task-name"), "scheduleType": "interval", "scheduleValue": "3600000"});
    assert_eq!(app.call("POST", "/api/agents/target/tasks", Some(task)).await.status, 201);

    let browser = Browser::start().await;
    browser.open(&format!("{}/", app.address)).await;
    browser.wait_for("[data-agent=target]").await;
    // Every policy violation from here on is recorded; hash changes keep the document.
    browser
        .script(
            "window.violations = []; document.addEventListener('securitypolicyviolation', \
             (e) => window.violations.push(e.violatedDirective + ' ' + e.blockedURI));",
            json!([]),
        )
        .await;

    go(&browser, "#/agents/target/sessions", "#session-list", "<b class=\"injected\">title</b>")
        .await;
    assert_clean(&browser, "sessions").await;

    // The chat: the model's text, streamed and then from the transcript, a tool's input,
    // its output and the answer after it.
    go(&browser, &format!("#/agents/target/sessions/{session}"), "main h1", "title").await;
    say(&browser, "say something").await;
    browser.wait_for_text(".msg.assistant", "<b class=\"injected\">model-text</b>").await;
    browser.wait_for_text(".turn-footer", "done in").await;
    say(&browser, "run the tool").await;
    browser.wait_for_text(".log", "tool-answer").await;
    browser.wait_for_text(".msg.assistant:last-child .turn-footer", "done in").await;
    browser
        .script(
            "document.querySelectorAll('.log details').forEach((d) => { d.open = true; });",
            json!([]),
        )
        .await;
    let log = browser.text(".log").await.unwrap();
    for place in ["tool-description", "tool-output", "tool-answer"] {
        assert!(
            // The input is shown as JSON (its quotes escaped), the output and answer as
            // they are.
            log.contains(&format!("<b class=\\\"injected\\\">{place}</b>"))
                || log.contains(&format!("<b class=\"injected\">{place}</b>")),
            "{place} as text: {log}"
        );
    }
    assert_clean(&browser, "chat").await;
    browser.screenshot("attack-chat").await;
    // Read again from the transcript, as when the session is opened later.
    go(&browser, "#/agents/target/sessions", "#session-list", "tool-answer").await;
    assert_clean(&browser, "sessions with previews").await;
    go(&browser, &format!("#/agents/target/sessions/{session}"), ".log", "tool-answer").await;
    browser
        .script(
            "document.querySelectorAll('.log details').forEach((d) => { d.open = true; });",
            json!([]),
        )
        .await;
    browser.wait_for_text(".log", "tool-output").await;
    assert_clean(&browser, "chat history").await;

    go(&browser, "#/agents/target/inbox", "#inbox-archived", "<b class=\"injected\">inbox</b>")
        .await;
    browser.wait_for_text("#inbox-archived", "<b class=\"injected\">sender").await;
    assert_clean(&browser, "inbox").await;
    go(&browser, "#/tasks", "#task-list", "<b class=\"injected\">task-name</b>").await;
    browser.wait_for_text("#task-list", "<b class=\"injected\">prompt</b>").await;
    assert_clean(&browser, "tasks").await;

    // An approval card: the tool's input as text.
    let asker = app.create_session("asker").await;
    let ask = json!({"agentName": "asker", "sessionId": asker, "message": "run the tool"});
    let chat = app.chat(ask);
    let look = async {
        go(&browser, "#/approvals", "main", "tool-description").await;
        assert_clean(&browser, "approvals").await;
        browser.screenshot("attack-approvals").await;
        browser.click(".approval button.danger").await;
    };
    let ((status, _), ()) = tokio::join!(chat, look);
    assert_eq!(status, 200);
    assert_clean(&browser, "after the approval").await;
}

/// A page of another origin, served on another port of loopback: frames the console, reads
/// the API, and posts to it in each way a page can.
fn evil_page(target: &str) -> String {
    format!(
        r#"<!doctype html><title>evil</title>
<iframe id="framed" src="{target}/" width="600" height="400" onload="window.framedLoaded = true"></iframe>
<form id="form" method="POST" action="{target}/api/agents" enctype="text/plain" target="sink">
<input name='{{"name":"formmade","x":"' value='"}}'></form>
<iframe name="sink"></iframe>
<script>
window.results = {{}};
(async () => {{
  try {{ const r = await fetch('{target}/api/agents'); results.read = 'read: ' + await r.text(); }}
  catch (e) {{ results.read = 'blocked'; }}
  try {{ const r = await fetch('{target}/api/agents', {{method: 'POST', headers: {{'Content-Type': 'application/json'}}, body: '{{"name":"jsonmade"}}'}}); results.json = 'answered ' + r.status; }}
  catch (e) {{ results.json = 'blocked'; }}
  try {{ await fetch('{target}/api/agents', {{method: 'POST', mode: 'no-cors', headers: {{'Content-Type': 'text/plain'}}, body: '{{"name":"plainmade"}}'}}); results.plain = 'sent'; }}
  catch (e) {{ results.plain = 'blocked'; }}
  try {{ await fetch('{target}/api/agents/victim', {{method: 'DELETE', mode: 'no-cors'}}); results.delete = 'sent'; }}
  catch (e) {{ results.delete = 'blocked'; }}
  // The form's answer loads in its frame: then it has been judged.
  document.querySelector('iframe[name=sink]').addEventListener('load', () => {{ results.posted = true; }});
  document.getElementById('form').submit();
  results.done = true;
}})();
</script>"#
    )
}

#[actix_web::test]
async fn another_origin_can_neither_frame_nor_drive_the_console() {
    if !browser_wanted() {
        return;
    }
    // No token on loopback: the case where only the browser's rules and the server's
    // origin checks stand between a web page and the agents.
    let app = TestApp::spawn(vec![]).await;
    app.create_agent("victim").await;
    let page = evil_page(&app.address);
    let evil = HttpServer::new(move || {
        let page = page.clone();
        App::new().route(
            "/",
            web::get().to(move || {
                let page = page.clone();
                async move { HttpResponse::Ok().content_type("text/html; charset=utf-8").body(page) }
            }),
        )
    })
    .workers(1)
    .bind("127.0.0.1:0")
    .unwrap();
    let evil_address = format!("http://{}", evil.addrs()[0]);
    let evil = evil.run();
    let evil_handle = evil.handle();
    actix_web::rt::spawn(evil);

    let browser = Browser::start().await;
    browser.open(&format!("{evil_address}/")).await;
    let mut results = Value::Null;
    for _ in 0..300 {
        results = browser.script("return window.results || null;", json!([])).await;
        // Done, and the form's post answered (its answer loaded in the sink frame).
        if results["done"] == true && results["posted"] == true {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(results["done"], true, "the page ran: {results}");
    assert_eq!(results["posted"], true, "the form's post was answered: {results}");
    assert_eq!(results["read"], "blocked", "the API's answers are not readable: {results}");
    assert_eq!(
        results["json"], "blocked",
        "a JSON post needs a preflight no answer allows: {results}"
    );
    let agents = app.call("GET", "/api/agents", None).await.body;
    let names: Vec<&str> =
        agents["agents"].as_array().unwrap().iter().map(|a| a["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["victim"], "nothing made or deleted from another origin: {results}");

    // The framed console is refused (frame-ancestors 'none'): the frame holds the browser's
    // error page, not the console.
    // Judged once the frame has loaded what the browser put in it.
    let mut loaded = Value::Null;
    for _ in 0..300 {
        loaded = browser.script("return window.framedLoaded || false;", json!([])).await;
        if loaded == true {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(loaded, true, "the frame loaded");
    let frame = browser.try_element("#framed").await.unwrap();
    browser
        .command("POST", "/frame", Some(json!({"id": {crate::browser_driver::ELEMENT: frame}})))
        .await;
    let script = "return {url: location.href, console: !!document.getElementById('main')};";
    let inside =
        browser.command("POST", "/execute/sync", Some(json!({"script": script, "args": []}))).await;
    assert_eq!(inside["console"], false, "the console must not render in a frame: {inside}");
    assert!(!inside["url"].as_str().unwrap().starts_with(&app.address), "{inside}");
    browser.command("POST", "/frame/parent", Some(json!({}))).await;
    browser.screenshot("attack-framed").await;

    // Not even the console's own origin may frame it.
    browser.open(&format!("{}/", app.address)).await;
    browser.wait_for("[data-agent=victim]").await;
    let framed = browser
        .command(
            "POST",
            "/execute/async",
            Some(json!({"script": "const done = arguments[0]; const f = document.createElement('iframe'); \
                f.src = '/'; const look = () => done({console: !!f.contentDocument?.getElementById('main')}); \
                f.onload = () => setTimeout(look, 500); setTimeout(look, 5000); document.body.append(f);", "args": []})),
        )
        .await;
    assert_eq!(framed["console"], false, "framed by its own origin: {framed}");
    evil_handle.stop(false).await;
}

#[actix_web::test]
async fn the_token_stays_out_of_urls_and_lasting_storage() {
    if !browser_wanted() {
        return;
    }
    let app = TestApp::spawn_with_token(vec![], Some("secret-token-value")).await;
    let browser = Browser::start().await;
    // A token an older console remembered for the origin (where any later page on this host
    // and port could read it) is forgotten, not used; none is offered to be kept there.
    browser.open(&format!("{}/", app.address)).await;
    browser.wait_for("#token-form").await;
    browser.script("localStorage.setItem('orbit.token', 'secret-token-value');", json!([])).await;
    browser.open(&format!("{}/", app.address)).await;
    browser.wait_for("#token-form").await;
    let local = browser.script("return localStorage.getItem('orbit.token');", json!([])).await;
    assert_eq!(local, Value::Null, "forgotten");
    assert!(browser.text("#token-form input[name=remember]").await.is_none(), "not offered");
    browser.type_into("#token-form input[name=token]", "secret-token-value").await;
    browser.click("#token-form button[type=submit]").await;
    browser.wait_for_text("#live", "live").await;
    let stored = browser
        .script(
            "return {session: sessionStorage.getItem('orbit.token'), local: localStorage.getItem('orbit.token'), \
             url: location.href, cookies: document.cookie, \
             resources: performance.getEntriesByType('resource').map((r) => r.name)};",
            json!([]),
        )
        .await;
    assert_eq!(stored["session"], "secret-token-value", "kept for the tab: {stored}");
    assert_eq!(stored["local"], Value::Null, "not kept past the tab: {stored}");
    assert_eq!(
        stored["cookies"], "",
        "no cookie carries it (a cookie would ride along on forged requests)"
    );
    assert!(
        !stored
            .to_string()
            .replace("\"session\":\"secret-token-value\"", "")
            .contains("secret-token-value"),
        "never in a URL: {stored}"
    );
    // Every request went to the console's own origin.
    for url in stored["resources"].as_array().unwrap() {
        assert!(url.as_str().unwrap().starts_with(&app.address), "only its own server: {url}");
    }
    // A late refusal of a request sent with an older token (say, the one a person corrected)
    // leaves the token in use alone: neither forgotten nor asked for again.
    let late = browser
        .command(
            "POST",
            "/execute/async",
            Some(json!({"script": "const done = arguments[arguments.length - 1]; \
                import('/console/js/api.js').then(async (api) => { \
                  const current = sessionStorage.getItem('orbit.token'); \
                  sessionStorage.setItem('orbit.token', 'an-older-token'); \
                  const answer = api.api('GET', '/api/agents').then(() => 200, (e) => e.status); \
                  sessionStorage.setItem('orbit.token', current); \
                  const status = await answer; \
                  await new Promise((r) => setTimeout(r, 200)); \
                  done({status, token: sessionStorage.getItem('orbit.token'), \
                        asked: !!document.getElementById('token-form')}); \
                }, (e) => done({error: String(e)}));", "args": []})),
        )
        .await;
    assert_eq!(
        late,
        json!({"status": 401, "token": "secret-token-value", "asked": false}),
        "the older token's refusal is not the current one's"
    );
    browser.wait_for_text("#live", "live").await;

    // A refused token is forgotten and asked for again.
    browser
        .script(
            "sessionStorage.setItem('orbit.token', 'stale'); setTimeout(() => location.reload(), 0);",
            json!([]),
        )
        .await;
    browser.wait_for_text("#token-form .notice", "refused").await;
    let after = browser.script("return sessionStorage.getItem('orbit.token');", json!([])).await;
    assert_eq!(after, Value::Null, "a refused token is not kept: {after}");
}

#[actix_web::test]
async fn crafted_console_routes_are_not_found_and_reach_no_other_api_path() {
    if !browser_wanted() {
        return;
    }
    let app = TestApp::spawn(vec![]).await;
    app.create_agent("victim").await;
    let browser = Browser::start().await;
    browser.open(&format!("{}/#/", app.address)).await;
    browser.wait_for("[data-agent=victim]").await;
    // Parts that would climb out of the API path built from them (the browser resolves
    // `..`, encoded or not), that are no name or id, or that are not valid percent-encoding.
    for crafted in [
        "#/agents/%2E%2E/tasks",
        "#/agents/../sessions",
        "#/agents/./inbox",
        "#/agents/victim/sessions/%2E%2E",
        "#/agents/victim/sessions/..%2F..%2Ftasks",
        "#/agents/victim/%2E%2E",
        "#/agents/Victim/sessions",
        "#/agents/%E0%A4%A/inbox",
        "#/agents/victim/sessions/%",
        "#/nowhere",
    ] {
        go(&browser, crafted, "main", "Not found").await;
        browser.wait_for("#not-found").await;
        // Back to a real page, so the next route draws anew.
        go(&browser, "#/", "#agent-list", "victim").await;
    }
    // The skip link moves the focus and leaves the page as it is.
    go(&browser, "#main", "#agent-list", "victim").await;
    let asked = browser
        .script(
            "return performance.getEntriesByType('resource').map((r) => new URL(r.name).pathname)\
             .filter((p) => p.startsWith('/api/'));",
            json!([]),
        )
        .await;
    let asked: std::collections::BTreeSet<&str> =
        asked.as_array().unwrap().iter().map(|p| p.as_str().unwrap()).collect();
    let expected = ["/api/agents", "/api/agents/victim/sessions", "/api/approvals", "/api/events"];
    assert!(
        asked.iter().all(|path| expected.contains(path)),
        "only the agents page's own requests: {asked:?}"
    );
}

#[actix_web::test]
async fn an_approval_card_is_found_by_any_request_id() {
    if !browser_wanted() {
        return;
    }
    let app = TestApp::spawn(vec![]).await;
    let browser = Browser::start().await;
    browser.open(&format!("{}/#/approvals", app.address)).await;
    browser.wait_for_text("main", "Nothing is waiting").await;
    // Ids that end or bend a selector's string if put into it as they are.
    let found = browser
        .command(
            "POST",
            "/execute/async",
            Some(json!({"script": "const done = arguments[arguments.length - 1]; \
                import('/console/js/approvals.js').then((approvals) => { \
                  const ids = ['a\"]', 'b\\\\', 'c\"], .approval[data-request=\"d', '\\'']; \
                  const cards = ids.map((id) => approvals.approvalCard({requestId: id, agentName: 'x', \
                    sessionId: 's', toolName: 'T', input: {}}, {showSession: false})); \
                  document.querySelector('main').append(...cards); \
                  try { done(ids.map((id, i) => approvals.approvalCardOf(id) === cards[i] \
                      && approvals.approvalCardOf(id, {waiting: true}) === cards[i])); } \
                  catch (e) { done(String(e)); } \
                }, (e) => done(String(e)));", "args": []})),
        )
        .await;
    assert_eq!(found, json!([true, true, true, true]), "each card found by its own id");
}
