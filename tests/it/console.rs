//! The web console's files: served at `/` from the binary, without the token (they hold no
//! data), under a strict Content-Security-Policy; the API behind them keeps its guards.

use orbit_testkit::{Reply, Rule};
use serde_json::json;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::helpers::TestApp;

#[actix_web::test]
async fn the_console_is_served_without_the_token_and_the_api_is_not() {
    let app = TestApp::spawn_with_token(vec![], Some("console-token")).await;
    let anonymous = awc::Client::default();
    let mut page = anonymous.get(format!("{}/", app.address)).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let header = |name: &str| page.headers().get(name).unwrap().to_str().unwrap().to_owned();
    assert_eq!(header("content-type"), "text/html; charset=utf-8");
    let policy = header("content-security-policy");
    assert!(policy.starts_with("default-src 'self'"), "{policy}");
    assert!(policy.contains("script-src 'self'") && policy.contains("frame-ancestors 'none'"));
    assert_eq!(header("x-content-type-options"), "nosniff");
    let html = String::from_utf8(page.body().await.unwrap().to_vec()).unwrap();
    assert!(html.contains("/console/js/app.js"), "{html}");
    assert!(!html.contains("http://") && !html.contains("https://"), "nothing from another host");

    for asset in ["/console/js/app.js", "/console/js/chat.js", "/console/style.css"] {
        let mut answer = anonymous.get(format!("{}{asset}", app.address)).send().await.unwrap();
        assert_eq!(answer.status(), 200, "{asset}");
        let body = String::from_utf8(answer.body().limit(1 << 20).await.unwrap().to_vec()).unwrap();
        assert!(
            !body.contains("http://") && !body.contains("https://"),
            "{asset} loads nothing from another host"
        );
    }
    let api = anonymous.get(format!("{}/api/agents", app.address)).send().await.unwrap();
    assert_eq!(api.status(), 401, "the API still needs the token");
    let near_miss =
        anonymous.get(format!("{}/console/js/missing.js", app.address)).send().await.unwrap();
    assert_eq!(near_miss.status(), 401, "only the console's own files go without the token");

    // A foreign page still cannot drive the API, token or not.
    let foreign = app
        .raw(
            &format!(
                "GET /api/agents HTTP/1.1\r\nHost: {}\r\nOrigin: http://evil.example\r\nAuthorization: Bearer console-token",
                app.authority()
            ),
            "",
        )
        .await;
    assert_eq!(foreign.status, 403);
}

/// What the console previews before saving a task: the next fire times of a schedule, or the
/// reason a task with it would be refused, checked as task creation checks it.
#[actix_web::test]
async fn a_schedule_is_previewed_before_a_task_is_made() {
    let app = TestApp::spawn(vec![]).await;
    let preview = |body: serde_json::Value| app.call("POST", "/api/schedules/preview", Some(body));

    let cron = preview(json!({"scheduleType": "cron", "scheduleValue": "30 9 * * 1-5", "timezone": "Asia/Kolkata", "count": 3})).await;
    assert_eq!(cron.status, 200, "{}", cron.body);
    let times: Vec<OffsetDateTime> = cron.body["nextRuns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| OffsetDateTime::parse(t.as_str().unwrap(), &Rfc3339).unwrap())
        .collect();
    assert_eq!(times.len(), 3);
    assert!(times.windows(2).all(|w| w[0] < w[1]), "soonest first: {times:?}");
    // India keeps no summer time: 09:30 there is always 04:00 UTC.
    let india = time::UtcOffset::from_hms(5, 30, 0).unwrap();
    for at in &times {
        let local = at.to_offset(india);
        assert_eq!((local.hour(), local.minute()), (9, 30), "09:30 in Kolkata: {at}");
        assert!(local.weekday().number_from_monday() <= 5, "a weekday: {at}");
    }

    let interval = preview(json!({"scheduleType": "interval", "scheduleValue": "90000"})).await;
    let runs: Vec<OffsetDateTime> = interval.body["nextRuns"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| OffsetDateTime::parse(t.as_str().unwrap(), &Rfc3339).unwrap())
        .collect();
    assert_eq!(runs.len(), 5, "five when not asked: {}", interval.body);
    assert!(runs.windows(2).all(|w| w[1] - w[0] == time::Duration::seconds(90)));

    let once = preview(
        json!({"scheduleType": "once", "scheduleValue": "2099-01-02T03:04:05Z", "count": 4}),
    )
    .await;
    assert_eq!(once.body["nextRuns"], json!(["2099-01-02T03:04:05.000Z"]), "a once fires once");

    // Refused as creating the task would be, with the same code and reason.
    for (kind, value) in [
        ("cron", "0 0 30 2 *"),
        ("cron", "61 * * * *"),
        ("interval", "10"),
        ("once", "2001-01-01T00:00:00Z"),
    ] {
        let body = json!({"scheduleType": kind, "scheduleValue": value, "prompt": "p"});
        let made = app.call("POST", "/api/agents/bot/tasks", Some(body)).await;
        let previewed = preview(json!({"scheduleType": kind, "scheduleValue": value})).await;
        assert_eq!(previewed.status, 400, "{kind} {value}: {}", previewed.body);
        assert_eq!(previewed.body["code"], "invalid_schedule");
        if made.status == 400 {
            assert_eq!(previewed.body["error"], made.body["error"], "{kind} {value}");
        }
    }
    // At the edge of time's range, and a cron that never fires: refused, not a panic.
    for (kind, value) in [("once", "9999-12-31T23:59:59.999Z"), ("cron", "0 0 31 2,4,6,9,11 *")] {
        let previewed =
            preview(json!({"scheduleType": kind, "scheduleValue": value, "count": 2})).await;
        assert_eq!(previewed.status, 400, "{kind} {value}: {}", previewed.body);
        assert_eq!(previewed.body["code"], "invalid_schedule", "{kind} {value}");
    }
    let zone = preview(
        json!({"scheduleType": "cron", "scheduleValue": "0 9 * * *", "timezone": "Mars/Olympus"}),
    )
    .await;
    assert_eq!(zone.body["code"], "invalid_schedule");
    assert!(zone.body["error"].as_str().unwrap().contains("Mars/Olympus"), "{}", zone.body);
    let too_many =
        preview(json!({"scheduleType": "interval", "scheduleValue": "1000", "count": 21})).await;
    assert_eq!(too_many.body["code"], "invalid_input", "{}", too_many.body);
    // Nothing was made.
    assert_eq!(app.call("GET", "/api/tasks", None).await.body["tasks"], json!([]));
}

/// The inbox's filed messages (read or archived) are listed newest first, a page at a time.
#[actix_web::test]
async fn read_and_archived_messages_are_listed_newest_first_in_pages() {
    let app = TestApp::spawn(vec![Rule::always(Reply::Text("noted".into()))]).await;
    app.create_agent("bot").await;
    let mut sent = Vec::new();
    for index in 0..3 {
        let body =
            json!({"fromAgent": "ops", "fromKind": "person", "message": format!("note {index}")});
        let answer = app.call("POST", "/api/agents/bot/inbox", Some(body)).await;
        sent.push(answer.body["message"]["id"].as_str().unwrap().to_owned());
    }
    for id in &sent[..2] {
        assert_eq!(
            app.call("DELETE", &format!("/api/agents/bot/inbox/{id}"), None).await.status,
            200
        );
    }
    // The third is read by a turn: the chat delivers pending messages.
    let (status, _) = app.chat(json!({"agentName": "bot", "message": "anything new?"})).await;
    assert_eq!(status, 200);
    let all = app.call("GET", "/api/agents/bot/inbox/archive", None).await;
    assert_eq!(all.status, 200, "{}", all.body);
    let ids: Vec<&str> = all.body["messages"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, [sent[2].as_str(), sent[1].as_str(), sent[0].as_str()], "newest first");
    assert_eq!(all.body["messages"][0]["status"], "read");
    assert_eq!(all.body["messages"][1]["status"], "archived");
    assert!(all.body.get("nextCursor").is_none());

    let first = app.call("GET", "/api/agents/bot/inbox/archive?limit=2", None).await;
    assert_eq!(first.body["messages"].as_array().unwrap().len(), 2);
    let cursor = first.body["nextCursor"].as_str().unwrap();
    assert_eq!(cursor, sent[1]);
    let rest = app
        .call("GET", &format!("/api/agents/bot/inbox/archive?limit=2&cursor={cursor}"), None)
        .await;
    assert_eq!(rest.body["messages"][0]["id"], sent[0].as_str());
    assert!(rest.body.get("nextCursor").is_none());

    assert_eq!(app.call("GET", "/api/agents/bot/inbox/archive?cursor=x", None).await.status, 400);
    assert_eq!(
        app.call("GET", "/api/agents/bot/inbox/archive?limit=2&cursor=x", None).await.status,
        400
    );
    assert_eq!(app.call("GET", "/api/agents/ghost/inbox/archive", None).await.status, 404);
    assert_eq!(app.call("GET", "/api/agents/bot/inbox", None).await.body["messages"], json!([]));
}

/// A session listing says how the conversation ends and what today's turns cost.
#[actix_web::test]
async fn sessions_list_their_last_message_and_todays_cost() {
    let app = TestApp::spawn(vec![Rule::always(Reply::Text("hello from the model".into()))]).await;
    app.create_agent("bot").await;
    let (status, _) = app.chat(json!({"agentName": "bot", "message": "hi"})).await;
    assert_eq!(status, 200);
    let listed = app.call("GET", "/api/agents/bot/sessions", None).await;
    let session = &listed.body["sessions"][0];
    assert_eq!(
        session["lastMessage"],
        json!({"role": "assistant", "text": "hello from the model"})
    );
    let today = OffsetDateTime::now_utc().date().to_string();
    assert_eq!(session["dayCost"]["day"], today);
    let total = session["totalCostUsd"].as_f64().unwrap();
    assert!(total > 0.0, "the scripted model's usage costs something: {session}");
    assert_eq!(session["dayCost"]["costUsd"].as_f64().unwrap(), total, "all of it today");

    // Turns that ended yesterday are not today's: the session's next turn starts a new day.
    let id = session["id"].as_str().unwrap().to_owned();
    let yesterday = crate::helpers::backdate_day_cost(&app, "bot", &id);
    let listed = app.call("GET", "/api/agents/bot/sessions", None).await;
    assert_eq!(listed.body["sessions"][0]["dayCost"]["day"], yesterday.as_str());
    let again = json!({"agentName": "bot", "sessionId": id, "message": "hi again"});
    assert_eq!(app.chat(again).await.0, 200);
    let listed = app.call("GET", "/api/agents/bot/sessions", None).await;
    let session = &listed.body["sessions"][0];
    let both = session["totalCostUsd"].as_f64().unwrap();
    assert!(both > total, "{session}");
    assert_eq!(session["dayCost"]["day"], today);
    let day = session["dayCost"]["costUsd"].as_f64().unwrap();
    assert!(
        (day - (both - total)).abs() < 1e-9,
        "only the second turn's cost is today's: {session}"
    );
}
