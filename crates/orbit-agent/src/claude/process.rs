//! One live CLI process: its stdin writer, its stdout reader task, its stderr logger.

use std::collections::VecDeque;
use std::process::Stdio;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::{Notify, mpsc};

use crate::runtime::{ControlHandler, ProcessEvent, RuntimeProcess, SpawnSpec};
use crate::{Error, Result};

/// How long a process may take to exit after its stdin closes before it is asked to stop
/// with SIGTERM, and after that before it is killed. An idle CLI exits within half a second
/// of its input closing; one that waits on a control answer it can no longer get does not.
const EXIT_GRACE: Duration = Duration::from_secs(1);
/// Stderr lines kept to explain a crash.
const STDERR_TAIL: usize = 20;

struct Shared {
    /// Where the running turn's events go.
    turn: Mutex<Option<mpsc::UnboundedSender<ProcessEvent>>>,
    stderr_tail: Mutex<VecDeque<String>>,
    exited: AtomicBool,
    exit_notify: Notify,
}

/// A running `claude` process.
pub struct ClaudeProcess {
    pid: u32,
    stdin: Arc<tokio::sync::Mutex<Option<ChildStdin>>>,
    shared: Arc<Shared>,
    next_request: AtomicU64,
}

impl ClaudeProcess {
    /// Spawns the CLI in its own process group and sends the `initialize` request.
    pub(crate) async fn start(mut command: Command, spec: &SpawnSpec) -> std::io::Result<Self> {
        command.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        // Its own process group, so that an abort can end the CLI and everything it started.
        command.process_group(0).kill_on_drop(true);
        let mut child = super::spawn::spawn_tied_to_server(command).await?;
        let pid = child.id().unwrap_or(0);
        let stdin = child
            .stdin
            .take()
            .map(|s| Arc::new(tokio::sync::Mutex::new(Some(s))))
            .ok_or_else(|| std::io::Error::other("no stdin"))?;
        let stdout = child.stdout.take().ok_or_else(|| std::io::Error::other("no stdout"))?;
        let stderr = child.stderr.take().ok_or_else(|| std::io::Error::other("no stderr"))?;
        let shared = Arc::new(Shared {
            turn: Mutex::new(None),
            stderr_tail: Mutex::new(VecDeque::new()),
            exited: AtomicBool::new(false),
            exit_notify: Notify::new(),
        });
        tokio::spawn(log_stderr(pid, stderr, shared.clone()));
        tokio::spawn(read_stdout(
            child,
            stdout,
            stdin.clone(),
            shared.clone(),
            spec.control.clone(),
        ));
        let process = Self { pid, stdin, shared, next_request: AtomicU64::new(1) };
        let initialize = json!({
            "subtype": "initialize",
            "hooks": {"PreToolUse": [{"matcher": ".*", "hookCallbackIds": ["orbit_pre_tool_use"]}]},
            "appendSystemPrompt": spec.append_system_prompt,
            // Orbit's tools, served in this process over `mcp_message`.
            "sdkMcpServers": ["orbit"],
        });
        // The answer comes on stdout like any other line and needs no waiting for: a turn
        // written after it is processed after it.
        if let Err(err) = process.send_control(initialize).await {
            tracing::warn!(pid, error = %err, "could not initialize the CLI");
        }
        tracing::debug!(pid, cwd = %spec.cwd.display(), resume = ?spec.resume, "started Claude Code CLI");
        Ok(process)
    }

    async fn write_line(&self, line: &Value) -> Result<()> {
        write_line(&self.stdin, line).await
    }

    async fn send_control(&self, request: Value) -> Result<()> {
        let id = format!("orbit_{}", self.next_request.fetch_add(1, Ordering::Relaxed));
        self.write_line(&json!({"type": "control_request", "request_id": id, "request": request}))
            .await
    }

    fn kill_group(&self) {
        self.signal_group(Signal::SIGKILL);
    }

    fn signal_group(&self, signal: Signal) {
        if self.pid != 0 && !self.shared.exited.load(Ordering::SeqCst) {
            let _ = killpg(Pid::from_raw(self.pid as i32), signal);
        }
    }
}

async fn write_line(stdin: &tokio::sync::Mutex<Option<ChildStdin>>, line: &Value) -> Result<()> {
    let mut guard = stdin.lock().await;
    let Some(stdin) = guard.as_mut() else {
        return Err(Error::Protocol("the CLI's input is closed".into()));
    };
    let mut bytes = serde_json::to_vec(line).map_err(|err| Error::Protocol(err.to_string()))?;
    bytes.push(b'\n');
    stdin
        .write_all(&bytes)
        .await
        .map_err(|err| Error::Protocol(format!("cannot write to the CLI: {err}")))?;
    stdin.flush().await.map_err(|err| Error::Protocol(format!("cannot write to the CLI: {err}")))
}

async fn log_stderr(pid: u32, stderr: tokio::process::ChildStderr, shared: Arc<Shared>) {
    let mut lines = BufReader::new(stderr).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        tracing::warn!(pid, "claude stderr: {line}");
        let mut tail = shared.stderr_tail.lock().unwrap_or_else(PoisonError::into_inner);
        if tail.len() == STDERR_TAIL {
            tail.pop_front();
        }
        tail.push_back(line);
    }
}

fn send_to_turn(shared: &Shared, event: ProcessEvent) {
    let turn = shared.turn.lock().unwrap_or_else(PoisonError::into_inner);
    if let Some(turn) = turn.as_ref() {
        let _ = turn.send(event);
    }
}

async fn read_stdout(
    mut child: Child,
    stdout: tokio::process::ChildStdout,
    stdin: Arc<tokio::sync::Mutex<Option<ChildStdin>>>,
    shared: Arc<Shared>,
    control: Arc<dyn ControlHandler>,
) {
    let pid = child.id().unwrap_or(0);
    let mut lines = BufReader::new(stdout).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let message: Value = match serde_json::from_str(&line) {
            Ok(message) => message,
            Err(err) => {
                tracing::warn!(pid, error = %err, "unparseable line from the CLI: {line}");
                continue;
            }
        };
        match message["type"].as_str() {
            Some("control_request") => {
                let (stdin, control) = (stdin.clone(), control.clone());
                // Answered on a task of its own: an `ask` permission may wait for a person.
                tokio::spawn(async move {
                    let request_id = message["request_id"].clone();
                    let request = &message["request"];
                    let subtype = request["subtype"].as_str().unwrap_or_default();
                    // Handled on a task of its own so that a handler that panics still gets
                    // an answer to the CLI, which would otherwise wait for it for ever.
                    let handled = {
                        let (kind, request) = (subtype.to_owned(), request.clone());
                        tokio::spawn(async move { control.handle(&kind, &request).await })
                            .await
                            .unwrap_or_else(|err| {
                                tracing::error!(error = %err, "a control request handler failed");
                                Err(format!("Orbit failed to handle the {subtype} request"))
                            })
                    };
                    let response = match handled {
                        Ok(payload) => {
                            json!({"subtype": "success", "request_id": request_id, "response": payload})
                        }
                        Err(error) => {
                            json!({"subtype": "error", "request_id": request_id, "error": error})
                        }
                    };
                    if let Err(err) = write_line(
                        &stdin,
                        &json!({"type": "control_response", "response": response}),
                    )
                    .await
                    {
                        tracing::debug!(error = %err, "could not answer a control request");
                    }
                });
            }
            Some("control_response") | Some("control_cancel_request") | Some("keep_alive") => {
                if message["response"]["subtype"] == "error" {
                    tracing::warn!(
                        pid,
                        "CLI refused a control request: {}",
                        message["response"]["error"]
                    );
                }
            }
            _ => send_to_turn(&shared, ProcessEvent::Message(super::protocol::parse(message))),
        }
    }
    let status = match child.wait().await {
        Ok(status) => status.to_string(),
        Err(err) => format!("unknown status: {err}"),
    };
    // Whatever the CLI started in its process group (a tool's shell, say) ends with it. The
    // group's id cannot have been taken by another group while those members live.
    if pid != 0 {
        let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
    }
    shared.exited.store(true, Ordering::SeqCst);
    // Let the stderr logger catch up so the tail explains the exit.
    tokio::time::sleep(Duration::from_millis(20)).await;
    let stderr = shared
        .stderr_tail
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .iter()
        .cloned()
        .collect::<Vec<_>>()
        .join("\n");
    tracing::debug!(pid, %status, "Claude Code CLI exited");
    let conversation_missing = super::protocol::says_conversation_missing(&stderr);
    send_to_turn(&shared, ProcessEvent::Exited { status, stderr, conversation_missing });
    shared.exit_notify.notify_waiters();
}

#[async_trait]
impl RuntimeProcess for ClaudeProcess {
    async fn send_turn(&self, text: &str) -> Result<mpsc::UnboundedReceiver<ProcessEvent>> {
        let (tx, rx) = mpsc::unbounded_channel();
        *self.shared.turn.lock().unwrap_or_else(PoisonError::into_inner) = Some(tx);
        if self.shared.exited.load(Ordering::SeqCst) {
            return Err(Error::CliExited {
                status: "before the turn".into(),
                stderr: String::new(),
            });
        }
        let user = json!({
            "type": "user",
            "session_id": "",
            "message": {"role": "user", "content": [{"type": "text", "text": text}]},
            "parent_tool_use_id": null,
        });
        self.write_line(&user).await?;
        Ok(rx)
    }

    async fn interrupt(&self) -> Result<()> {
        self.send_control(json!({"subtype": "interrupt"})).await
    }

    async fn shutdown(&self) {
        // Registered before the check, so an exit between the two still wakes it.
        let exited = self.shared.exit_notify.notified();
        if self.shared.exited.load(Ordering::SeqCst) {
            return;
        }
        tokio::pin!(exited);
        // Closing stdin lets the CLI save its session and exit on its own.
        self.stdin.lock().await.take();
        if tokio::time::timeout(EXIT_GRACE, &mut exited).await.is_ok()
            || self.shared.exited.load(Ordering::SeqCst)
        {
            return;
        }
        self.signal_group(Signal::SIGTERM);
        if tokio::time::timeout(EXIT_GRACE, &mut exited).await.is_err()
            && !self.shared.exited.load(Ordering::SeqCst)
        {
            tracing::warn!(
                pid = self.pid,
                "CLI did not exit when asked; killing its process group"
            );
            self.kill_group();
        }
    }

    fn has_exited(&self) -> bool {
        self.shared.exited.load(Ordering::SeqCst)
    }

    fn pid(&self) -> Option<u32> {
        (!self.has_exited() && self.pid != 0).then_some(self.pid)
    }
}

impl Drop for ClaudeProcess {
    fn drop(&mut self) {
        // The last guard: no CLI outlives the value that owns it.
        self.kill_group();
    }
}
