//! A scripted Anthropic Messages API on 127.0.0.1.
//!
//! It speaks just enough HTTP/1.1 for the CLI (one request per connection, answered with
//! `Connection: close`) and streams replies in the Messages SSE format, text as one
//! `text_delta` per word as the real API sends pieces of text (and, for [`Reply::Streamed`],
//! with a pause before each, written to the socket as it goes). Each request is matched
//! against the rules in order; the first match answers. Every request body is kept.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// What the scripted model answers.
#[derive(Debug, Clone)]
pub enum Reply {
    /// A text reply ending the turn.
    Text(String),
    /// A text reply ending the turn, generated slowly: each word is written to the socket
    /// after `pause`, so the client sees the text arrive piece by piece.
    Streamed { text: String, pause: Duration },
    /// A tool call: the CLI runs the tool and sends its result in the next request.
    ToolUse { name: String, input: Value },
    /// The same reply after a pause (to let a test act mid-turn).
    Delayed(Duration, Box<Reply>),
    /// An HTTP error status with an Anthropic error body.
    HttpError(u16, String),
}

/// When a rule answers.
#[derive(Clone)]
pub struct Rule {
    matcher: Arc<dyn Fn(&Value) -> bool + Send + Sync>,
    reply: Reply,
}

impl Rule {
    /// Answers when the last user message's text contains `needle`.
    pub fn when_user_says(needle: &str, reply: Reply) -> Self {
        let needle = needle.to_owned();
        Self::when(move |request| last_user_text(request).contains(&needle), reply)
    }

    /// Answers when the last message carries a tool result.
    pub fn after_tool_result(reply: Reply) -> Self {
        Self::when(last_is_tool_result, reply)
    }

    /// Answers when `matcher` accepts the request body.
    pub fn when(matcher: impl Fn(&Value) -> bool + Send + Sync + 'static, reply: Reply) -> Self {
        Self { matcher: Arc::new(matcher), reply }
    }

    /// Answers every request.
    pub fn always(reply: Reply) -> Self {
        Self::when(|_| true, reply)
    }
}

/// The blocks of the newest conversation message that are not the CLI's own
/// `<system-reminder>` texts.
fn newest_blocks(request: &Value) -> Vec<Value> {
    let last = last_conversation_message(request);
    if last["role"] != "user" {
        return Vec::new();
    }
    match &last["content"] {
        Value::String(text) => vec![serde_json::json!({"type": "text", "text": text})],
        Value::Array(blocks) => blocks
            .iter()
            .filter(|b| {
                !(b["type"] == "text"
                    && b["text"]
                        .as_str()
                        .is_some_and(|t| t.trim_start().starts_with("<system-reminder>")))
            })
            .cloned()
            .collect(),
        _ => Vec::new(),
    }
}

/// The user's newest prompt: the text the CLI sent after the last tool result of the newest
/// user message (the CLI merges tool results and the next prompt into one message), without
/// its own reminders. Empty when the model is answering a tool result.
pub fn last_user_text(request: &Value) -> String {
    let blocks = newest_blocks(request);
    let after_tools = blocks.iter().rposition(|b| b["type"] == "tool_result").map_or(0, |i| i + 1);
    blocks[after_tools..].iter().filter_map(|b| b["text"].as_str()).collect::<Vec<_>>().join("\n")
}

/// The last message that is not a `system` entry (the CLI puts those inside `messages`).
pub fn last_conversation_message(request: &Value) -> Value {
    let messages = request["messages"].as_array().cloned().unwrap_or_default();
    messages.into_iter().rev().find(|m| m["role"] != "system").unwrap_or_default()
}

/// Whether the model is answering a tool result: the newest block (reminders aside) is one.
fn last_is_tool_result(request: &Value) -> bool {
    newest_blocks(request).last().is_some_and(|b| b["type"] == "tool_result")
}

/// Every reply and tool call gets its own id: the CLI merges assistant messages that share an
/// id and treats a repeated tool id as the same call.
static NEXT_TOOL_USE: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

struct Shared {
    rules: Mutex<Vec<Rule>>,
    requests: Mutex<Vec<Value>>,
}

/// The scripted server; stops when dropped.
pub struct ModelServer {
    addr: SocketAddr,
    shared: Arc<Shared>,
    _shutdown: tokio::sync::oneshot::Sender<()>,
}

impl ModelServer {
    /// Starts a server on 127.0.0.1 with these rules, on a thread of its own so that it
    /// answers whatever runtime the test uses.
    pub fn start(rules: Vec<Rule>) -> Self {
        let shared =
            Arc::new(Shared { rules: Mutex::new(rules), requests: Mutex::new(Vec::new()) });
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let (shutdown_tx, shutdown_rx) = tokio::sync::oneshot::channel::<()>();
        let server_shared = shared.clone();
        std::thread::spawn(move || {
            let runtime =
                tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async move {
                let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
                addr_tx.send(listener.local_addr().unwrap()).unwrap();
                let serve = async {
                    loop {
                        let Ok((stream, _)) = listener.accept().await else { continue };
                        tokio::spawn(handle(stream, server_shared.clone()));
                    }
                };
                tokio::select! {
                    () = serve => {}
                    _ = shutdown_rx => {}
                }
            });
        });
        let addr = addr_rx.recv().unwrap();
        Self { addr, shared, _shutdown: shutdown_tx }
    }

    /// `http://127.0.0.1:PORT`, for `ANTHROPIC_BASE_URL`.
    pub fn base_url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Every request body received so far.
    pub fn requests(&self) -> Vec<Value> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// Replaces the rules.
    pub fn set_rules(&self, rules: Vec<Rule>) {
        *self.shared.rules.lock().unwrap() = rules;
    }
}

async fn handle(mut stream: TcpStream, shared: Arc<Shared>) {
    let Some((head, body)) = read_request(&mut stream).await else { return };
    if !head.starts_with("POST /v1/messages") {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n")
            .await;
        return;
    }
    let request: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    shared.requests.lock().unwrap().push(request.clone());
    let reply = {
        let rules = shared.rules.lock().unwrap();
        rules.iter().find(|rule| (rule.matcher)(&request)).map(|rule| rule.reply.clone())
    };
    let mut reply = reply.unwrap_or_else(|| Reply::Text("(no rule matched)".into()));
    while let Reply::Delayed(pause, inner) = reply {
        tokio::time::sleep(pause).await;
        reply = *inner;
    }
    let model = request["model"].as_str().unwrap_or("claude-test").to_owned();
    if let Reply::Streamed { pause, .. } = &reply {
        // No length: the body ends when the connection closes, as it is written.
        let head = "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\nconnection: close\r\n\r\n";
        if stream.write_all(head.as_bytes()).await.is_err() {
            return;
        }
        for event in sse_events(&model, &reply) {
            if event.starts_with("event: content_block_delta") {
                tokio::time::sleep(*pause).await;
            }
            if stream.write_all(event.as_bytes()).await.is_err() || stream.flush().await.is_err() {
                return;
            }
        }
        let _ = stream.shutdown().await;
        return;
    }
    let response = match reply {
        Reply::HttpError(status, message) => {
            // The error types the Messages API gives with these statuses.
            let kind = match status {
                401 => "authentication_error",
                429 => "rate_limit_error",
                529 => "overloaded_error",
                _ => "api_error",
            };
            let body =
                json!({"type": "error", "error": {"type": kind, "message": message}}).to_string();
            format!(
                "HTTP/1.1 {status} Error\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
        }
        reply => {
            let body = sse_events(&model, &reply).concat();
            format!(
                "HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ncache-control: no-cache\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            )
        }
    };
    let _ = stream.write_all(response.as_bytes()).await;
    let _ = stream.shutdown().await;
}

async fn read_request(stream: &mut TcpStream) -> Option<(String, Vec<u8>)> {
    let mut buffer = Vec::new();
    let mut chunk = [0u8; 8192];
    let header_end = loop {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            break end + 4;
        }
    };
    let head = String::from_utf8_lossy(&buffer[..header_end]).into_owned();
    let length = head
        .lines()
        .find_map(|line| {
            line.split_once(':')
                .filter(|(name, _)| name.eq_ignore_ascii_case("content-length"))
                .map(|(_, v)| v.trim().parse::<usize>().unwrap_or(0))
        })
        .unwrap_or(0);
    while buffer.len() < header_end + length {
        let read = stream.read(&mut chunk).await.ok()?;
        if read == 0 {
            return None;
        }
        buffer.extend_from_slice(&chunk[..read]);
    }
    Some((head, buffer[header_end..header_end + length].to_vec()))
}

fn event(name: &str, data: &Value) -> String {
    format!("event: {name}\ndata: {data}\n\n")
}

/// The reply's SSE events, in order.
fn sse_events(model: &str, reply: &Reply) -> Vec<String> {
    let mut body = vec![];
    body.push(event(
        "message_start",
        &json!({"type": "message_start", "message": {"id": format!("msg_{:08}", NEXT_TOOL_USE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)), "type": "message", "role": "assistant", "model": model, "content": [], "stop_reason": null, "stop_sequence": null, "usage": {"input_tokens": 10, "output_tokens": 1}}}),
    ));
    let stop_reason = match reply {
        Reply::ToolUse { name, input } => {
            let id = format!(
                "toolu_{:08}",
                NEXT_TOOL_USE.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            );
            body.push(event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "tool_use", "id": id, "name": name, "input": {}}}),
            ));
            body.push(event(
                "content_block_delta",
                &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "input_json_delta", "partial_json": input.to_string()}}),
            ));
            "tool_use"
        }
        Reply::Text(text) | Reply::Streamed { text, .. } => {
            body.push(event(
                "content_block_start",
                &json!({"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}),
            ));
            // One delta per word (its trailing space included), as the API sends text in
            // pieces; an empty text is one empty delta.
            let mut pieces: Vec<&str> = text.split_inclusive(' ').collect();
            if pieces.is_empty() {
                pieces.push("");
            }
            for piece in pieces {
                body.push(event(
                    "content_block_delta",
                    &json!({"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": piece}}),
                ));
            }
            "end_turn"
        }
        Reply::Delayed(..) | Reply::HttpError(..) => "end_turn",
    };
    body.push(event("content_block_stop", &json!({"type": "content_block_stop", "index": 0})));
    body.push(event(
        "message_delta",
        &json!({"type": "message_delta", "delta": {"stop_reason": stop_reason, "stop_sequence": null}, "usage": {"output_tokens": 5}}),
    ));
    body.push(event("message_stop", &json!({"type": "message_stop"})));
    body
}
