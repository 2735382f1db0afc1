//! The answers to one session's control requests: tool permissions by mode (with a person in
//! the loop for `ask`), and Orbit's own MCP tools.
//!
//! The `PreToolUse` hook fires for every tool call, even when the working directory's own
//! `.claude` settings would allow the tool, so `safe` denies there. `ask` asks there too and
//! settles the call with an explicit allow or deny, so `can_use_tool` rarely follows; when it
//! does for a call a person already allowed, it is allowed without asking twice.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use orbit_store::PermissionMode;
use serde_json::{Value, json};
use tokio::sync::{mpsc, oneshot};

use crate::activity::{Activity, ActivityBus, ApprovalSettlement};
use crate::event::{PermissionRequest, TurnEvent};
use crate::runtime::ControlHandler;
use crate::tools::OrbitTools;
use crate::{Error, Result};

/// Tools that only read. Everything else writes or executes.
const READ_ONLY_TOOLS: &[&str] = &[
    "Read",
    "Glob",
    "Grep",
    "LS",
    "WebFetch",
    "WebSearch",
    "TodoWrite",
    "Task",
    "ToolSearch",
    "NotebookRead",
    "BashOutput",
];

/// Whether a tool only reads.
fn is_read_only(tool: &str) -> bool {
    READ_ONLY_TOOLS.contains(&tool)
}

/// Orbit's own tools change only Orbit's records (inbox, tasks, memory), never files or
/// processes, so every mode lets an agent use them.
fn is_orbit_tool(tool: &str) -> bool {
    tool.starts_with("mcp__orbit__")
}

/// A person's answer to a permission request.
#[derive(Debug, Clone)]
pub struct Decision {
    pub allow: bool,
    pub message: Option<String>,
}

/// A tool call waiting for a person: who to tell, and what it asks.
struct Pending {
    answer: oneshot::Sender<Decision>,
    approval: PendingApproval,
}

/// A tool call waiting for a person's answer, as anyone may list it.
#[derive(Debug, Clone)]
pub struct PendingApproval {
    pub request: PermissionRequest,
    pub created_at: time::OffsetDateTime,
    /// Denied at this moment unless answered before.
    pub expires_at: time::OffsetDateTime,
}

/// One session's control handler.
pub(crate) struct SessionControl {
    /// The agent and session it answers for, as approvals are announced.
    owner: (orbit_store::AgentName, orbit_store::SessionId),
    activity: ActivityBus,
    mode: Mutex<PermissionMode>,
    ask_timeout: Duration,
    /// Where the running turn's events go, so `ask` can show its request.
    events: Mutex<Option<mpsc::UnboundedSender<TurnEvent>>>,
    pending: Mutex<HashMap<String, Pending>>,
    /// Tool calls a person allowed in the hook, not to be asked about again.
    approved: Mutex<HashSet<String>>,
    tools: OrbitTools,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SessionControl {
    pub(crate) fn new(
        owner: (orbit_store::AgentName, orbit_store::SessionId),
        ask_timeout: Duration,
        tools: OrbitTools,
        activity: ActivityBus,
    ) -> Self {
        Self {
            owner,
            activity,
            mode: Mutex::new(PermissionMode::default()),
            ask_timeout,
            events: Mutex::new(None),
            pending: Mutex::new(HashMap::new()),
            approved: Mutex::new(HashSet::new()),
            tools,
        }
    }

    /// Sets the mode and the event sink for the turn that starts.
    pub(crate) fn begin_turn(
        &self,
        mode: PermissionMode,
        events: mpsc::UnboundedSender<TurnEvent>,
    ) {
        *lock(&self.mode) = mode;
        *lock(&self.events) = Some(events);
    }

    /// Ends the turn: no sink, and every question still open is answered "deny".
    pub(crate) fn end_turn(&self) {
        lock(&self.events).take();
        lock(&self.pending).clear();
        lock(&self.approved).clear();
    }

    /// Answers a pending permission request.
    pub(crate) fn answer(&self, request_id: &str, decision: Decision) -> Result<()> {
        let waiting = lock(&self.pending)
            .remove(request_id)
            .ok_or_else(|| Error::PermissionNotPending(request_id.to_owned()))?;
        waiting
            .answer
            .send(decision)
            .map_err(|_| Error::PermissionNotPending(request_id.to_owned()))
    }

    /// The tool calls of the running turn that wait for a person, oldest first.
    pub(crate) fn pending_approvals(&self) -> Vec<PendingApproval> {
        let mut approvals: Vec<_> =
            lock(&self.pending).values().map(|pending| pending.approval.clone()).collect();
        approvals.sort_by(|a, b| a.request.request_id.cmp(&b.request.request_id));
        approvals
    }

    /// Asks a person through the turn's event stream; no answer in time means deny.
    async fn ask(&self, tool: &str, input: &Value, tool_use_id: &str) -> Decision {
        let request_id = orbit_store::new_ulid().to_string();
        let (tx, rx) = oneshot::channel();
        let sent = {
            let events = lock(&self.events);
            events.as_ref().is_some_and(|events| {
                let request = PermissionRequest {
                    request_id: request_id.clone(),
                    tool_name: tool.to_owned(),
                    input: input.clone(),
                    tool_use_id: tool_use_id.to_owned(),
                };
                let created_at = orbit_store::timestamp::now();
                let approval = PendingApproval {
                    request: request.clone(),
                    created_at,
                    expires_at: created_at + self.ask_timeout,
                };
                lock(&self.pending).insert(request_id.clone(), Pending { answer: tx, approval });
                events.send(TurnEvent::PermissionRequest(request)).is_ok()
            })
        };
        if !sent {
            lock(&self.pending).remove(&request_id);
            return Decision {
                allow: false,
                message: Some("Orbit: nobody is there to allow this tool".into()),
            };
        }
        let (agent, session) = self.owner.clone();
        self.activity.announce(Activity::ApprovalPending {
            agent: agent.clone(),
            session,
            request_id: request_id.clone(),
            tool_name: tool.to_owned(),
        });
        // Announced here, where the wait ends, whatever ends it: an answer, the timeout, or
        // the turn's end (which drops the answer's sender).
        let (decision, settlement) = match tokio::time::timeout(self.ask_timeout, rx).await {
            Ok(Ok(decision)) => {
                let settlement = if decision.allow {
                    ApprovalSettlement::Allowed
                } else {
                    ApprovalSettlement::Denied
                };
                (decision, settlement)
            }
            _ => {
                lock(&self.pending).remove(&request_id);
                let secs = self.ask_timeout.as_secs();
                let decision = Decision {
                    allow: false,
                    message: Some(format!("Orbit: nobody allowed {tool} within {secs} s")),
                };
                (decision, ApprovalSettlement::Expired)
            }
        };
        self.activity.announce(Activity::ApprovalSettled {
            agent,
            session,
            request_id,
            settlement,
        });
        decision
    }

    /// Whether the tool may run, asking a person in `ask` mode.
    async fn decide(&self, tool: &str, input: &Value, tool_use_id: &str) -> Decision {
        let mode = *lock(&self.mode);
        if mode == PermissionMode::AllowAll
            || is_read_only(tool)
            || is_orbit_tool(tool)
            || lock(&self.approved).contains(tool_use_id)
        {
            return Decision { allow: true, message: None };
        }
        match mode {
            PermissionMode::Safe => Decision {
                allow: false,
                message: Some(format!(
                    "Orbit: {tool} is not allowed in safe mode (it writes or executes)"
                )),
            },
            PermissionMode::Ask | PermissionMode::AllowAll => {
                let decision = self.ask(tool, input, tool_use_id).await;
                if decision.allow {
                    lock(&self.approved).insert(tool_use_id.to_owned());
                }
                decision
            }
        }
    }
}

#[async_trait]
impl ControlHandler for SessionControl {
    async fn handle(&self, subtype: &str, request: &Value) -> std::result::Result<Value, String> {
        match subtype {
            "hook_callback" => {
                let input = &request["input"];
                let tool = input["tool_name"].as_str().unwrap_or_default();
                let tool_use_id = request["tool_use_id"]
                    .as_str()
                    .or_else(|| input["tool_use_id"].as_str())
                    .unwrap_or_default();
                let decision = self.decide(tool, &input["tool_input"], tool_use_id).await;
                let verdict = if decision.allow { "allow" } else { "deny" };
                let reason = decision.message.unwrap_or_else(|| format!("Orbit: {verdict}"));
                Ok(
                    json!({"hookSpecificOutput": {"hookEventName": "PreToolUse", "permissionDecision": verdict, "permissionDecisionReason": reason}}),
                )
            }
            "can_use_tool" => {
                let tool = request["tool_name"].as_str().unwrap_or_default();
                let tool_use_id = request["tool_use_id"].as_str().unwrap_or_default();
                let decision = self.decide(tool, &request["input"], tool_use_id).await;
                if decision.allow {
                    Ok(json!({"behavior": "allow", "updatedInput": request["input"]}))
                } else {
                    Ok(
                        json!({"behavior": "deny", "message": decision.message.unwrap_or_else(|| "Orbit: denied".into())}),
                    )
                }
            }
            "mcp_message" if request["server_name"] == "orbit" => {
                Ok(json!({"mcp_response": self.tools.handle(&request["message"]).await}))
            }
            other => Err(format!("Orbit does not handle control request '{other}'")),
        }
    }
}
