//! Issue 12 over HTTP: watching a running turn, scheduled `ask` runs that wait for a person,
//! denied runs that say so, full transcripts, and text streamed as it is generated.

use std::time::Duration;

use futures_util::{Stream, StreamExt};
use orbit_testkit::{Reply, Rule};
use serde_json::{Value, json};

use crate::helpers::TestApp;

/// Reads a server-sent event stream one event at a time.
struct Events<S> {
    response: awc::ClientResponse<S>,
    buffer: String,
}

impl<S> Events<S>
where
    S: Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>> + Unpin,
{
    fn new(response: awc::ClientResponse<S>) -> Self {
        assert_eq!(response.status(), 200);
        Self { response, buffer: String::new() }
    }

    /// The next event's data; `None` when the stream ends.
    async fn next(&mut self) -> Option<Value> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                if let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) {
                    return Some(serde_json::from_str(data).unwrap());
                }
                continue;
            }
            let chunk = tokio::time::timeout(Duration::from_secs(60), self.response.next())
                .await
                .expect("the stream goes on")?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
    }

    /// Every event up to the stream's end.
    async fn rest(&mut self) -> Vec<Value> {
        let mut events = Vec::new();
        while let Some(event) = self.next().await {
            events.push(event);
        }
        events
    }
}

fn write_file_rules(reply: Reply) -> Vec<Rule> {
    vec![
        Rule::after_tool_result(reply),
        Rule::when_user_says(
            "write the file",
            Reply::ToolUse {
                name: "Bash".into(),
                input: json!({"command": "echo hi > made.txt", "description": "write"}),
            },
        ),
        Rule::always(Reply::Text("ok".into())),
    ]
}

fn check_events(events: &[Value]) {
    crate::schema::check_events(events);
}

/// Two clients attach to a running turn and get the same events as its own stream, from its
/// start; clients that leave do not stop it; no turn, no stream. The turn's transcript then
/// holds all of it, the inbox message it handled too, stamped, and pages right.
#[actix_web::test]
async fn watchers_attach_to_a_running_turn_and_the_transcript_keeps_it() {
    let app = TestApp::spawn(write_file_rules(Reply::Text("written it".into()))).await;
    app.create_agent_with(json!({"name": "bot", "permissionMode": "ask"})).await;
    let session = app.create_session("bot").await;
    let stream = format!("/api/agents/bot/sessions/{session}/stream");
    let idle = app.call("GET", &stream, None).await;
    assert_eq!(idle.status, 404, "no turn runs: {}", idle.body);
    assert_eq!(idle.body["code"], "not_found");
    let unknown =
        app.call("GET", "/api/agents/bot/sessions/01JD2Y7W3Q5ZK8X9M4N6P0R1ST/stream", None);
    assert_eq!(unknown.await.status, 404);
    let inbox = app
        .call(
            "POST",
            "/api/agents/bot/inbox",
            Some(json!({"fromAgent": "Alice", "message": "please also check the logs"})),
        )
        .await;
    assert_eq!(inbox.status, 201, "{}", inbox.body);

    let response = app
        .builder("POST", "/api/chat")
        .send_json(&json!({"agentName": "bot", "sessionId": session, "message": "write the file"}))
        .await
        .unwrap();
    let mut chat = Events::new(response);
    let mut seen = Vec::new();
    let request_id = loop {
        let event = chat.next().await.expect("the turn asks before it ends");
        seen.push(event.clone());
        if event["type"] == "permission_request" {
            break event["requestId"].as_str().unwrap().to_owned();
        }
    };

    // Mid-turn: two watchers to the end, two that leave early.
    let watch = || async { Events::new(app.builder("GET", &stream).send().await.unwrap()) };
    let (mut first, mut second) = (watch().await, watch().await);
    let mut leaving = watch().await;
    assert_eq!(leaving.next().await.unwrap()["subtype"], "orbit_session");
    drop(leaving);
    drop(watch().await);
    // The replay reaches the request the turn waits on.
    let mut replayed = Vec::new();
    while replayed.last().is_none_or(|e: &Value| e["type"] != "permission_request") {
        replayed.push(first.next().await.expect("the replay reaches the request"));
    }
    assert_eq!(replayed, seen, "a watcher is shown the turn from its start");

    let listed = app.call("GET", "/api/approvals", None).await.body;
    assert_eq!(listed["approvals"][0]["requestId"], request_id.as_str());
    assert!(listed["approvals"][0].get("runId").is_none(), "a chat's request names no run");
    let answer = format!("/api/agents/bot/sessions/{session}/permissions/{request_id}");
    assert_eq!(app.call("POST", &answer, Some(json!({"allow": true}))).await.status, 200);

    seen.extend(chat.rest().await);
    replayed.extend(first.rest().await);
    let other = second.rest().await;
    check_events(&seen);
    check_events(&replayed);
    assert_eq!(replayed, seen, "a watcher sees what the turn's own stream saw");
    assert_eq!(other, seen, "every watcher sees the same events");
    let result = seen.iter().find(|e| e["type"] == "result").expect("the turn finished");
    assert_eq!(result["subtype"], "success", "watchers leaving did not stop the turn");
    assert!(app.dir.path().join("data/workspaces/bot/made.txt").exists());
    assert_eq!(app.call("GET", &stream, None).await.status, 404, "the turn is over");

    // The transcript: the user message, the inbox delivery, every event, in order, stamped.
    let path = format!("/api/agents/bot/sessions/{session}/transcript");
    let whole = app.call("GET", &format!("{path}?limit=1000"), None).await;
    assert_eq!(whole.status, 200, "{}", whole.body);
    assert!(whole.body["nextCursor"].is_null());
    let entries = whole.body["entries"].as_array().unwrap().clone();
    assert_eq!(entries[0]["kind"], "user");
    assert_eq!(entries[0]["data"]["text"], "write the file");
    let inbox: Vec<_> = entries.iter().filter(|e| e["kind"] == "inbox").collect();
    assert_eq!(inbox.len(), 1, "{entries:?}");
    assert_eq!(inbox[0]["data"]["message"], "please also check the logs");
    assert_eq!(inbox[0]["data"]["fromAgent"], "Alice");
    let events: Vec<Value> =
        entries.iter().filter(|e| e["kind"] == "event").map(|e| e["data"].clone()).collect();
    assert_eq!(events, seen, "the transcript holds every event as streamed");
    let tool_use = events
        .iter()
        .any(|e| e["type"] == "assistant" && e["message"]["content"][0]["type"] == "tool_use");
    let tool_result = events
        .iter()
        .any(|e| e["type"] == "user" && e["message"]["content"][0]["type"] == "tool_result");
    assert!(tool_use && tool_result, "the tool call and its result are kept");
    let stamps: Vec<&str> = entries.iter().map(|e| e["at"].as_str().unwrap()).collect();
    assert!(stamps.windows(2).all(|w| w[0] <= w[1]), "entries are in time order: {stamps:?}");
    assert!(entries.iter().all(|e| e["turn"] == entries[0]["turn"]), "one turn");

    let mut paged = Vec::new();
    let mut cursor: Option<String> = None;
    for _ in 0..entries.len() {
        let query = match &cursor {
            Some(cursor) => format!("{path}?limit=3&cursor={cursor}"),
            None => format!("{path}?limit=3"),
        };
        let page = app.call("GET", &query, None).await;
        assert_eq!(page.status, 200, "{}", page.body);
        let page_entries = page.body["entries"].as_array().unwrap();
        assert!(page_entries.len() <= 3);
        paged.extend(page_entries.iter().cloned());
        match page.body["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert_eq!(paged, entries, "pages of 3 walk the whole transcript once");
    let end = whole.body["endCursor"].as_str().expect("the last page says where it ends");

    // A client following new turns reads from where it stopped: exactly the turn that came.
    let chat = json!({"agentName": "bot", "sessionId": session, "message": "hello again"});
    let response = app.builder("POST", "/api/chat").send_json(&chat).await.unwrap();
    let again = Events::new(response).rest().await;
    assert!(again.iter().any(|e| e["type"] == "result"), "{again:?}");
    let new = app.call("GET", &format!("{path}?cursor={end}"), None).await;
    assert_eq!(new.status, 200, "{}", new.body);
    let new_entries = new.body["entries"].as_array().unwrap();
    assert_eq!(new_entries[0]["data"]["text"], "hello again", "{new_entries:?}");
    assert!(new_entries.iter().all(|e| e["turn"] == new_entries[0]["turn"]), "one turn");
    assert_ne!(new_entries[0]["turn"], entries[0]["turn"], "the new turn only");
    let new_events: Vec<Value> =
        new_entries.iter().filter(|e| e["kind"] == "event").map(|e| e["data"].clone()).collect();
    assert_eq!(new_events, again, "every event of the new turn, and nothing else");
    assert!(new.body["nextCursor"].is_null());
    let later = new.body["endCursor"].as_str().unwrap();
    let none = app.call("GET", &format!("{path}?cursor={later}"), None).await;
    assert!(none.body["entries"].as_array().unwrap().is_empty(), "nothing since");
    assert_eq!(none.body["endCursor"], later, "and the end stays put");
    assert_eq!(app.call("GET", &format!("{path}?cursor=1"), None).await.status, 400);
    assert_eq!(app.call("GET", &format!("{path}?limit=0"), None).await.status, 400);
    let unknown = "/api/agents/bot/sessions/01JD2Y7W3Q5ZK8X9M4N6P0R1ST/transcript";
    assert_eq!(app.call("GET", unknown, None).await.status, 404);
}

/// Text arrives piece by piece before the whole assistant message, and the user message is
/// stamped when it was sent, before the reply.
#[actix_web::test]
async fn text_streams_as_it_is_generated() {
    let words = "one two three four five";
    let reply = Reply::Streamed { text: words.into(), pause: Duration::from_millis(150) };
    let app = TestApp::spawn(vec![Rule::always(reply)]).await;
    app.create_agent("bot").await;
    let session = app.create_session("bot").await;
    let (status, events) =
        app.chat(json!({"agentName": "bot", "sessionId": session, "message": "count"})).await;
    assert_eq!(status, 200);
    let deltas: Vec<usize> =
        (0..events.len()).filter(|i| events[*i]["type"] == "text_delta").collect();
    assert!(deltas.len() >= 5, "a delta per word: {events:?}");
    let text: String = deltas.iter().map(|i| events[*i]["text"].as_str().unwrap()).collect();
    assert_eq!(text, words);
    let whole =
        events.iter().position(|e| e["type"] == "assistant").expect("the whole message comes too");
    assert!(deltas.iter().all(|i| *i < whole), "the pieces come before the whole message");
    assert!(!events.iter().any(|e| e["type"] == "stream_event"), "raw partials are not passed on");

    let detail = app.call("GET", &format!("/api/agents/bot/sessions/{session}"), None).await;
    let messages = detail.body["messages"].as_array().unwrap();
    assert_eq!(
        (messages[0]["role"].as_str(), messages[1]["role"].as_str()),
        (Some("user"), Some("assistant"))
    );
    let (sent, answered) =
        (messages[0]["createdAt"].as_str().unwrap(), messages[1]["createdAt"].as_str().unwrap());
    assert!(
        sent < answered,
        "the user message is stamped when sent ({sent}), not at the end ({answered})"
    );
}

/// Waits until the task's newest run has ended and returns it.
async fn finished_run(app: &TestApp, agent: &str, task: &str) -> Value {
    for _ in 0..240 {
        let runs = app.call("GET", &format!("/api/agents/{agent}/tasks/{task}/runs"), None).await;
        let run = &runs.body["runs"][0];
        if run.is_object() && run["status"] != "running" {
            return run.clone();
        }
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    }
    panic!("the run never ended");
}

async fn task_run_now(app: &TestApp, agent: &str) -> String {
    let created = app
        .call(
            "POST",
            &format!("/api/agents/{agent}/tasks"),
            Some(json!({"prompt": "write the file", "scheduleType": "cron", "scheduleValue": "0 0 1 1 *"})),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let task = created.body["task"]["id"].as_str().unwrap().to_owned();
    let run = app.call("POST", &format!("/api/agents/{agent}/tasks/{task}/run"), None).await;
    assert_eq!(run.status, 202, "{}", run.body);
    task
}

/// A scheduled run of an `ask` agent waits for a person, who finds the request with its run
/// in the approvals, answers it, and the run succeeds with the tool's work done.
#[actix_web::test]
async fn a_scheduled_ask_run_waits_for_a_person() {
    let app = TestApp::spawn(write_file_rules(Reply::Text("wrote made.txt".into()))).await;
    app.create_agent_with(json!({"name": "bot", "permissionMode": "ask"})).await;
    let task = task_run_now(&app, "bot").await;
    let mut approval = Value::Null;
    for _ in 0..240 {
        approval =
            app.call("GET", "/api/agents/bot/approvals", None).await.body["approvals"][0].clone();
        if approval.is_object() {
            break;
        }
        actix_web::rt::time::sleep(Duration::from_millis(250)).await;
    }
    assert_eq!(approval["toolName"], "Bash", "the run's request is listed: {approval}");
    let runs = app.call("GET", &format!("/api/agents/bot/tasks/{task}/runs"), None).await.body;
    assert_eq!(runs["runs"][0]["status"], "running");
    assert_eq!(approval["runId"], runs["runs"][0]["id"], "the request names its run");
    assert_eq!(approval["sessionId"], runs["runs"][0]["sessionId"]);
    let created = approval["createdAt"].as_str().unwrap();
    let expires = approval["expiresAt"].as_str().unwrap();
    let wait = time::OffsetDateTime::parse(expires, &time::format_description::well_known::Rfc3339)
        .unwrap()
        - time::OffsetDateTime::parse(created, &time::format_description::well_known::Rfc3339)
            .unwrap();
    assert_eq!(wait.whole_seconds(), 600, "a run's request waits the run ask timeout");

    let answer = format!(
        "/api/agents/bot/sessions/{}/permissions/{}",
        approval["sessionId"].as_str().unwrap(),
        approval["requestId"].as_str().unwrap()
    );
    assert_eq!(app.call("POST", &answer, Some(json!({"allow": true}))).await.status, 200);
    let run = finished_run(&app, "bot", &task).await;
    assert_eq!(run["status"], "success", "{run}");
    assert_eq!(run["result"], "wrote made.txt", "nothing was denied: {run}");
    assert!(app.dir.path().join("data/workspaces/bot/made.txt").exists(), "the tool ran");
}

/// Runs whose tools were denied say so: by nobody answering in time (`ask`) and by `safe`
/// mode. The run's transcript shows the request and the refusal.
#[actix_web::test]
async fn denied_runs_say_so() {
    let app = TestApp::spawn_configured(
        write_file_rules(Reply::Text("could not".into())),
        None,
        |settings| {
            settings.run_ask_timeout_secs = 1;
        },
    )
    .await;
    app.create_agent_with(json!({"name": "asker", "permissionMode": "ask"})).await;
    app.create_agent_with(json!({"name": "careful", "permissionMode": "safe"})).await;
    let asked = task_run_now(&app, "asker").await;
    let safe = task_run_now(&app, "careful").await;
    let asked = finished_run(&app, "asker", &asked).await;
    let safe = finished_run(&app, "careful", &safe).await;
    for (run, why) in
        [(&asked, "nobody allowed Bash within 1 s"), (&safe, "not allowed in safe mode")]
    {
        let result = run["result"].as_str().unwrap_or_default();
        assert!(
            result.starts_with("could not")
                && result.contains("[Orbit: 1 tool call was denied: Bash: ")
                && result.contains(why),
            "the run says its tool was denied: {run}"
        );
    }
    for file in ["asker", "careful"] {
        assert!(!app.dir.path().join(format!("data/workspaces/{file}/made.txt")).exists());
    }
    let session = asked["sessionId"].as_str().unwrap();
    let transcript =
        app.call("GET", &format!("/api/agents/asker/sessions/{session}/transcript"), None).await;
    let events: Vec<&Value> = transcript.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "event")
        .map(|e| &e["data"])
        .collect();
    assert!(events.iter().any(|e| e["type"] == "permission_request"), "{events:?}");
    let refused = events.iter().any(|e| {
        let block = &e["message"]["content"][0];
        e["type"] == "user" && block["type"] == "tool_result" && block["is_error"] == true
    });
    assert!(refused, "the refusal is in the transcript: {events:?}");
}

/// A watcher that reads nothing is dropped like a slow chat client, and the turn goes on;
/// a turn larger than the replay buffer is replayed from a marker saying how many events
/// were dropped; its transcript stops at the turn's limit and says how much it left out.
#[actix_web::test]
async fn a_slow_watcher_is_dropped_and_a_long_turn_is_bounded() {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let big = "x".repeat(3 * 1024 * 1024);
    // Long enough for the clients that read (in a debug build, on a loaded machine), short
    // enough for the test.
    let app = TestApp::spawn_configured(vec![], None, |settings| {
        settings.slow_client_timeout_secs = 5;
    })
    .await;
    let target = app.dir.path().join("data/workspaces/bot/big.txt");
    // The answer after the tool is eight words of 1 MiB: a delta each, then the whole text,
    // then the result, 24 MiB in all, far more than a socket that is never read, the server's
    // send buffer (4 MiB at most here) and the stream's 1 MiB budget can hold, so the slow
    // watcher stalls long before the turn's end, whatever the kernel's buffers grow to. (One
    // 3 MiB answer could fit in them whole, and the watcher then got the end.)
    let answer: String = (0..8).map(|_| format!("{} ", "y".repeat(1024 * 1024))).collect();
    app.model.set_rules(vec![
        Rule::after_tool_result(Reply::Text(answer)),
        Rule::when_user_says(
            "flood",
            Reply::ToolUse {
                name: "Write".into(),
                input: json!({"file_path": target.display().to_string(), "content": big}),
            },
        ),
    ]);
    app.create_agent_with(json!({"name": "bot", "permissionMode": "ask"})).await;
    let session = app.create_session("bot").await;
    let response = app
        .builder("POST", "/api/chat")
        .send_json(&json!({"agentName": "bot", "sessionId": session, "message": "flood"}))
        .await
        .unwrap();
    let mut chat = Events::new(response);
    let mut seen = Vec::new();
    let request_id = loop {
        let event = chat.next().await.expect("the turn asks before it ends");
        seen.push(event.clone());
        if event["type"] == "permission_request" {
            break event["requestId"].as_str().unwrap().to_owned();
        }
    };

    // A watcher on a socket that holds almost nothing, and never reads.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let mut slow = socket.connect(app.authority().parse().unwrap()).await.unwrap();
    let request = format!(
        "GET /api/agents/bot/sessions/{session}/stream HTTP/1.1\r\nHost: {}\r\nConnection: close\r\n\r\n",
        app.authority()
    );
    slow.write_all(request.as_bytes()).await.unwrap();
    let stream = format!("/api/agents/bot/sessions/{session}/stream");
    let mut watcher = Events::new(app.builder("GET", &stream).send().await.unwrap());
    let marker = watcher.next().await.unwrap();
    assert_eq!(marker["subtype"], "orbit_events_dropped", "{marker}");
    let dropped = marker["dropped"].as_u64().unwrap() as usize;
    assert_eq!(dropped, seen.len() - 1, "all but the request left the 2 MiB buffer");
    assert_eq!(watcher.next().await.unwrap(), seen[seen.len() - 1]);

    let answer = format!("/api/agents/bot/sessions/{session}/permissions/{request_id}");
    assert_eq!(app.call("POST", &answer, Some(json!({"allow": true}))).await.status, 200);
    let (rest, watched) = futures_util::join!(chat.rest(), watcher.rest());
    seen.extend(rest);
    watched.iter().for_each(crate::schema::check_event);
    crate::schema::check_event(&marker);
    // Events of 3 MiB each overflow the 2 MiB buffer at once: a watcher may miss some, shown
    // as markers, but what it is shown is the turn's events in order, ending as the turn did.
    let shown: Vec<&Value> =
        watched.iter().filter(|e| e["subtype"] != "orbit_events_dropped").collect();
    let kinds = |events: &[&Value]| -> Vec<String> {
        events.iter().map(|e| format!("{}/{}", e["type"], e["subtype"])).collect()
    };
    let (seen_kinds, shown_kinds) = (kinds(&seen.iter().collect::<Vec<_>>()), kinds(&shown));
    let mut rest = seen.iter();
    assert!(
        shown.iter().all(|event| rest.any(|e| e == *event)),
        "a watcher is shown the turn's own events, in order: {shown_kinds:?} of {seen_kinds:?}"
    );
    assert!(watched.last() == seen.last(), "and the turn's last event: {shown_kinds:?}");
    let result = seen.iter().find(|e| e["type"] == "result").expect("the turn finished");
    assert_eq!(result["subtype"], "success", "the slow watcher did not hold the turn");
    assert_eq!(std::fs::metadata(&target).unwrap().len(), big.len() as u64);

    // The slow watcher was dropped: its connection is closed without the turn's end.
    let mut received = Vec::new();
    tokio::time::timeout(Duration::from_secs(60), slow.read_to_end(&mut received))
        .await
        .expect("the dropped watcher's connection was closed")
        .unwrap();
    let text = String::from_utf8_lossy(&received);
    assert!(text.starts_with("HTTP/1.1 200"), "{}", &text[..text.len().min(200)]);
    assert!(!text.contains(r#""type":"result""#), "a dropped watcher gets no more events");

    // The transcript: at most 4 MiB of the turn, then a note of what was left out, then the
    // turn's final event all the same; read in pages of at most about 4 MiB each, however
    // high the limit, each holding at least one entry.
    let path = format!("/api/agents/bot/sessions/{session}/transcript?limit=1000");
    let (mut entries, mut pages, mut cursor) = (Vec::new(), 0, None::<String>);
    loop {
        let query = match &cursor {
            Some(cursor) => format!("{path}&cursor={cursor}"),
            None => path.clone(),
        };
        let page = app.call("GET", &query, None).await.body;
        let page_entries = page["entries"].as_array().unwrap().clone();
        assert!(!page_entries.is_empty(), "a page holds at least one entry");
        let bytes: usize = page_entries.iter().map(|e| e.to_string().len()).sum();
        assert!(page_entries.len() == 1 || bytes <= 4 * 1024 * 1024, "{bytes} bytes in a page");
        entries.extend(page_entries);
        pages += 1;
        match page["nextCursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => break,
        }
    }
    assert!(pages >= 2, "entries of 3 MiB and more take a page each: {pages} pages");
    let (note, last) = (&entries[entries.len() - 2], &entries[entries.len() - 1]);
    assert_eq!(note["kind"], "omitted", "a turn keeps at most 4 MiB of transcript");
    assert!(note["data"]["omitted"].as_u64().unwrap() >= 1);
    assert_eq!(last["data"], *result, "the turn's final event is kept past the limit");
    let kept: usize =
        entries[..entries.len() - 1].iter().map(|e| e["data"].to_string().len()).sum();
    assert!(kept <= 4 * 1024 * 1024, "{kept} bytes kept before the final event");
}
