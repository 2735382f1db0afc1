//! `TestApp`: a server on port 0 with its own data directory and scripted model.

use std::time::Duration;

use clap::Parser;
use orbit_server::config::Settings;
use orbit_server::startup::Application;
use orbit_testkit::{ModelServer, Rule};
use serde_json::Value;
use tempfile::TempDir;

pub struct TestApp {
    pub address: String,
    pub dir: TempDir,
    pub model: ModelServer,
    pub client: awc::Client,
    pub token: Option<String>,
}

pub struct Answer {
    pub status: u16,
    pub body: Value,
    /// The status line and headers, as sent.
    pub head: String,
}

impl TestApp {
    pub async fn spawn(rules: Vec<Rule>) -> Self {
        Self::spawn_with_token(rules, None).await
    }

    pub async fn spawn_with_token(rules: Vec<Rule>, token: Option<&str>) -> Self {
        Self::spawn_with(rules, token, 8).await
    }

    pub async fn spawn_with(rules: Vec<Rule>, token: Option<&str>, max_processes: usize) -> Self {
        Self::spawn_configured(rules, token, |settings| settings.max_processes = max_processes)
            .await
    }

    /// A server whose settings `configure` adjusts last.
    pub async fn spawn_configured(
        rules: Vec<Rule>,
        token: Option<&str>,
        configure: impl FnOnce(&mut Settings),
    ) -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("tmp")).unwrap();
        let model = ModelServer::start(rules);
        let mut settings = Settings::parse_from(["orbit-server", "--bind", "127.0.0.1:0"]);
        settings.data_dir = Some(dir.path().join("data"));
        settings.claude_bin = orbit_testkit::claude_bin();
        settings.api_token = token.map(str::to_owned);
        settings.cli_env = orbit_testkit::cli_env(&model, &dir.path().join("tmp"));
        // Never the login of whoever runs the tests.
        settings.claude_user_dir = Some(dir.path().join("user-claude"));
        configure(&mut settings);
        let app = Application::build(&settings).await.unwrap();
        let address = format!("http://127.0.0.1:{}", app.port());
        actix_web::rt::spawn(app.run_until_stopped());
        let client = awc::Client::builder().timeout(Duration::from_secs(60)).finish();
        Self { address, dir, model, client, token: token.map(str::to_owned) }
    }

    fn request(&self, method: awc::http::Method, path: &str) -> awc::ClientRequest {
        let request = self.client.request(method, format!("{}{path}", self.address));
        match &self.token {
            Some(token) => request.insert_header(("Authorization", format!("Bearer {token}"))),
            None => request,
        }
    }

    /// Sends a request and reads its answer, which must match its documented schema.
    pub async fn call(&self, method: &str, path: &str, body: Option<Value>) -> Answer {
        let verb = awc::http::Method::from_bytes(method.as_bytes()).unwrap();
        let request = self.request(verb, path);
        let response = match body {
            Some(body) => request.send_json(&body).await,
            None => request.send().await,
        };
        let answer = read(response.unwrap()).await;
        crate::schema::check_answer(method, path, answer.status, &answer.body);
        answer
    }

    /// Makes an agent named `name` with default settings.
    pub async fn create_agent(&self, name: &str) {
        self.create_agent_with(serde_json::json!({ "name": name })).await;
    }

    /// Makes an agent from a creation body (its name and settings).
    pub async fn create_agent_with(&self, body: Value) {
        let created = self.call("POST", "/api/agents", Some(body.clone())).await;
        assert_eq!(created.status, 201, "making agent {body}: {}", created.body);
    }

    /// Makes a session of `agent` with default settings and returns its id.
    pub async fn create_session(&self, agent: &str) -> String {
        let path = format!("/api/agents/{agent}/sessions");
        let created = self.call("POST", &path, None).await;
        assert_eq!(created.status, 201, "making a session of {agent}: {}", created.body);
        created.body["session"]["id"].as_str().unwrap().to_owned()
    }

    pub fn builder(&self, method: &str, path: &str) -> awc::ClientRequest {
        self.request(awc::http::Method::from_bytes(method.as_bytes()).unwrap(), path)
    }

    /// Posts a chat and returns its SSE events once the stream ends; the events (or the
    /// refusal) must match their documented schemas.
    pub async fn chat(&self, body: Value) -> (u16, Vec<Value>) {
        let mut response = self.builder("POST", "/api/chat").send_json(&body).await.unwrap();
        let status = response.status().as_u16();
        let bytes = response.body().limit(16 * 1024 * 1024).await.unwrap();
        let text = String::from_utf8_lossy(&bytes);
        if status != 200 {
            let refusal = serde_json::from_str(&text).unwrap_or(Value::Null);
            crate::schema::check_answer("POST", "/api/chat", status, &refusal);
            return (status, vec![refusal]);
        }
        let events: Vec<Value> = text
            .lines()
            .filter_map(|line| line.strip_prefix("data: "))
            .map(|data| serde_json::from_str(data).unwrap())
            .collect();
        crate::schema::check_events(&events);
        (status, events)
    }

    /// Sends `head` (request line and headers, without the blank line) and `body` on a new
    /// connection as they are, byte for byte, and reads the answer to its end. For what an
    /// HTTP client library would not send: odd paths, foreign hosts, a browser's headers.
    pub async fn raw(&self, head: &str, body: &str) -> Answer {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let address = self.address.trim_start_matches("http://");
        let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
        let request =
            format!("{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
        stream.write_all(request.as_bytes()).await.unwrap();
        let mut answer = Vec::new();
        stream.read_to_end(&mut answer).await.unwrap();
        parse_answer(&answer)
    }

    /// The `host:port` the server listens on.
    pub fn authority(&self) -> &str {
        self.address.trim_start_matches("http://")
    }

    pub fn tmp_marker(&self) -> String {
        self.dir.path().join("tmp").display().to_string()
    }

    pub async fn wait_for_model_requests(&self, count: usize) {
        for _ in 0..600 {
            if self.model.requests().len() >= count {
                return;
            }
            actix_web::rt::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("the model never got {count} requests");
    }
}

/// A `GET /api/events` stream being read: each event's `id:` and its `data:` as JSON, every
/// one checked against the documented schema.
pub struct EventReader<S> {
    response: awc::ClientResponse<S>,
    buffer: String,
}

impl<S> EventReader<S>
where
    S: futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>> + Unpin,
{
    /// The next event, `None` when the stream ended; fails the test after 30 s without one.
    pub async fn next(&mut self) -> Option<(Option<String>, Value)> {
        use futures_util::StreamExt;
        loop {
            while let Some(end) = self.buffer.find("\n\n") {
                let frame: String = self.buffer.drain(..end + 2).collect();
                let id = frame.lines().find_map(|l| l.strip_prefix("id: ")).map(str::to_owned);
                let Some(data) = frame.lines().find_map(|l| l.strip_prefix("data: ")) else {
                    continue; // a keep-alive comment
                };
                let event: Value = serde_json::from_str(data).unwrap();
                crate::schema::check_server_event(&event);
                return Some((id, event));
            }
            let chunk = tokio::time::timeout(Duration::from_secs(30), self.response.next())
                .await
                .expect("an event within 30 s")?;
            self.buffer.push_str(&String::from_utf8_lossy(&chunk.unwrap()));
        }
    }

    /// Reads until an event for which `wanted` holds, and returns it with every event read.
    pub async fn until(&mut self, wanted: impl Fn(&Value) -> bool) -> (Value, Vec<Value>) {
        let mut seen = Vec::new();
        while let Some((_, event)) = self.next().await {
            seen.push(event.clone());
            if wanted(&event) {
                return (event, seen);
            }
        }
        panic!("the event stream ended before the event wanted; it sent {seen:?}");
    }
}

impl TestApp {
    /// Opens `GET /api/events` (resuming after `last_event_id`), and reads its first event,
    /// which must be `ready`; returns the stream and that event's id.
    pub async fn events(
        &self,
        last_event_id: Option<&str>,
    ) -> (
        EventReader<
            impl futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>>
            + Unpin
            + use<>,
        >,
        String,
    ) {
        let mut request = self.builder("GET", "/api/events");
        if let Some(id) = last_event_id {
            request = request.insert_header(("Last-Event-ID", id));
        }
        let response = request.send().await.unwrap();
        assert_eq!(response.status(), 200);
        assert_eq!(
            response.headers().get("content-type").unwrap().to_str().unwrap(),
            "text/event-stream"
        );
        let mut reader = EventReader { response, buffer: String::new() };
        let (id, ready) = reader.next().await.expect("a first event");
        assert_eq!(ready["type"], "ready", "{ready}");
        (reader, id.expect("ready has an id"))
    }
}

pub async fn read(
    mut response: awc::ClientResponse<
        impl futures_util::Stream<Item = Result<actix_web::web::Bytes, awc::error::PayloadError>>
        + Unpin,
    >,
) -> Answer {
    let status = response.status().as_u16();
    let head = response
        .headers()
        .iter()
        .map(|(name, value)| format!("\r\n{name}: {}", value.to_str().unwrap_or_default()))
        .collect();
    let bytes = response.body().limit(16 * 1024 * 1024).await.unwrap();
    let body = if bytes.is_empty() {
        Value::Null
    } else {
        serde_json::from_slice(&bytes)
            .unwrap_or_else(|_| Value::String(String::from_utf8_lossy(&bytes).into_owned()))
    };
    Answer { status, body, head }
}

/// Parses a raw HTTP/1.1 answer (no chunked bodies: error answers have a length).
pub fn parse_answer(bytes: &[u8]) -> Answer {
    let text = String::from_utf8_lossy(bytes);
    let status = text.split(' ').nth(1).and_then(|s| s.parse().ok()).unwrap_or(0);
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let body = serde_json::from_str(body).unwrap_or_else(|_| Value::String(body.to_owned()));
    Answer { status, body, head: head.to_owned() }
}

/// Makes a session's cost of "today" yesterday's, as if its turns had ended the day before:
/// a later record of the session appended to its agent's journal (the fs store's last record
/// of an id wins, and every reader picks up appended lines). Returns yesterday's date.
pub fn backdate_day_cost(app: &TestApp, agent: &str, session: &str) -> String {
    use std::io::Write;
    let journal = app.dir.path().join(format!("data/agents/{agent}/sessions.jsonl"));
    let text = std::fs::read_to_string(&journal).unwrap();
    let mut record = text
        .lines()
        .filter_map(|line| serde_json::from_str::<Value>(line).ok())
        .rfind(|entry| entry["op"] == "put" && entry["session"]["id"] == session)
        .unwrap_or_else(|| panic!("session {session} is not in {}", journal.display()));
    let yesterday = time::OffsetDateTime::now_utc().date().previous_day().unwrap().to_string();
    assert!(record["session"]["dayCost"].is_object(), "it has a cost of today: {record}");
    record["session"]["dayCost"]["day"] = Value::String(yesterday.clone());
    let mut file = std::fs::OpenOptions::new().append(true).open(&journal).unwrap();
    file.write_all(format!("{record}\n").as_bytes()).unwrap();
    yesterday
}
