//! The answers to one session's control requests: tool permissions by mode (with a person in
//! the loop for `ask`), and Orbit's own MCP tools.
//!
//! The `PreToolUse` hook fires for every tool call, even when the working directory's own
//! `.claude` settings would allow the tool, so `safe` denies there. `ask` asks there too and
//! settles the call with an explicit allow or deny, so `can_use_tool` rarely follows; when it
//! does for a call a person already allowed, it is allowed without asking twice.
//!
//! A call waiting for a person is also shared through the store
//! (`InstanceStore::share_approval`) while it waits, so that every node of a cluster lists
//! it; the store keeps nothing when no other node shares it.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use orbit_store::{InstanceId, InstanceStore, PendingApproval, PermissionMode, RunId};
use serde_json::{Value, json};
use tokio::sync::oneshot;

use crate::activity::{Activity, ActivityBus, ApprovalSettlement};
use crate::event::{PermissionRequest, TurnEvent};
use crate::runtime::ControlHandler;
use crate::session::TurnSink;
use crate::tools::OrbitTools;
use crate::{Error, Result};

/// The longest an `ask` request may wait for a person, in seconds (a day): the server refuses
/// to start with a longer `--ask-timeout-secs` or `--run-ask-timeout-secs`, and the policy
/// holds to it whatever it is given.
pub const MAX_ASK_TIMEOUT_SECS: u64 = 24 * 60 * 60;

/// When a request made at `created_at` that waits `timeout` expires; the far future when that
/// is past what a timestamp can hold (never, with a timeout held to the maximum).
fn expiry(created_at: time::OffsetDateTime, timeout: Duration) -> time::OffsetDateTime {
    time::Duration::try_from(timeout)
        .ok()
        .and_then(|timeout| created_at.checked_add(timeout))
        .unwrap_or(time::PrimitiveDateTime::MAX.assume_utc())
}

/// Shares a waiting call through the store on a task of its own, and withdraws it once the
/// returned sender is dropped (the wait ended, whatever ended it, or its future was dropped):
/// in that order, and never on the permission path, so that a slow or absent database
/// delays neither the question nor the answer to the CLI. A store that cannot keep the copy
/// now leaves the call listed by this node only; one that cannot withdraw it leaves it
/// listed elsewhere until it expires or this node's heartbeat drops it
/// (`InstanceStore::keep_approvals`). Both are logged.
fn share_while_waiting(news: &ApprovalNews, approval: PendingApproval) -> oneshot::Sender<()> {
    let (settled, wait_ended) = oneshot::channel::<()>();
    let instances = news.instances.clone();
    tokio::spawn(async move {
        let request = approval.request_id.clone();
        if let Err(err) = instances.share_approval(&approval).await {
            tracing::warn!(error = %err, %request, "could not list a tool call waiting for a person on the other nodes");
        }
        let _ = wait_ended.await;
        if let Err(err) = instances.withdraw_approval(&approval.instance, &request).await {
            tracing::warn!(error = %err, %request, "could not withdraw a settled tool call from the other nodes' lists");
        }
    });
    settled
}

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

/// A tool call the running turn was refused, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeniedTool {
    pub tool: String,
    /// The reason the model was told.
    pub reason: String,
}

/// What the running turn set: its mode, how long `ask` waits, and whose it is.
struct TurnControl {
    mode: PermissionMode,
    ask_timeout: Duration,
    run: Option<RunId>,
    /// Where the turn's events go, so `ask` can show its request.
    events: Option<TurnSink>,
    /// Counts turns begun and ended: what a call learns after the turn it asked in ended
    /// is not that turn's news, nor the next one's.
    generation: u64,
}

/// Where a session's waiting calls are told of: the bus, and the store that shares them
/// with the other nodes under this server process's instance.
pub(crate) struct ApprovalNews {
    pub(crate) activity: ActivityBus,
    pub(crate) instances: Arc<dyn InstanceStore>,
    pub(crate) instance: InstanceId,
}

/// One session's control handler.
pub(crate) struct SessionControl {
    /// The agent and session it answers for, as approvals are announced.
    owner: (orbit_store::AgentName, orbit_store::SessionId),
    news: ApprovalNews,
    turn: Mutex<TurnControl>,
    pending: Mutex<HashMap<String, Pending>>,
    /// Tool calls a person allowed in the hook, not to be asked about again.
    approved: Mutex<HashSet<String>>,
    /// The running turn's denied calls by tool use id (the hook and `can_use_tool` may both
    /// ask about one call; it counts once).
    denied: Mutex<Vec<(String, DeniedTool)>>,
    tools: OrbitTools,
}

fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

impl SessionControl {
    pub(crate) fn new(
        owner: (orbit_store::AgentName, orbit_store::SessionId),
        tools: OrbitTools,
        news: ApprovalNews,
    ) -> Self {
        Self {
            owner,
            news,
            turn: Mutex::new(TurnControl {
                mode: PermissionMode::default(),
                ask_timeout: Duration::from_secs(60),
                run: None,
                events: None,
                generation: 0,
            }),
            pending: Mutex::new(HashMap::new()),
            approved: Mutex::new(HashSet::new()),
            denied: Mutex::new(Vec::new()),
            tools,
        }
    }

    /// Sets the mode, the `ask` timeout (at most [`MAX_ASK_TIMEOUT_SECS`]), the task run (if
    /// any) and the event sink for the turn that starts.
    pub(crate) fn begin_turn(
        &self,
        mode: PermissionMode,
        ask_timeout: Duration,
        run: Option<RunId>,
        events: TurnSink,
    ) {
        let ask_timeout = ask_timeout.min(Duration::from_secs(MAX_ASK_TIMEOUT_SECS));
        let mut turn = lock(&self.turn);
        let generation = turn.generation + 1;
        *turn = TurnControl { mode, ask_timeout, run, events: Some(events), generation };
        lock(&self.denied).clear();
    }

    /// Ends the turn: no sink, and every question still open is answered "deny". Returns the
    /// tool calls the turn was denied.
    pub(crate) fn end_turn(&self) -> Vec<DeniedTool> {
        {
            let mut turn = lock(&self.turn);
            turn.events.take();
            turn.generation += 1;
            // Under the turn's lock, as `ask` inserts: no call of this turn is left behind.
            lock(&self.pending).clear();
        }
        lock(&self.approved).clear();
        std::mem::take(&mut *lock(&self.denied)).into_iter().map(|(_, denied)| denied).collect()
    }

    fn note_denied(&self, tool: &str, tool_use_id: &str, reason: &str) {
        let mut denied = lock(&self.denied);
        if tool_use_id.is_empty() || !denied.iter().any(|(id, _)| id == tool_use_id) {
            let call = DeniedTool { tool: tool.to_owned(), reason: reason.to_owned() };
            denied.push((tool_use_id.to_owned(), call));
        }
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
        approvals.sort_by(|a, b| a.request_id.cmp(&b.request_id));
        approvals
    }

    /// Asks a person: the request goes on the turn's event stream (and its log, for watchers
    /// who attach later) and into the pending list any client can answer from. No answer in
    /// time means deny.
    async fn ask(&self, tool: &str, input: &Value, tool_use_id: &str) -> Decision {
        let request_id = orbit_store::new_ulid().to_string();
        let (tx, rx) = oneshot::channel();
        let (agent, session) = self.owner.clone();
        let (events, ask_timeout, approval) = {
            let turn = lock(&self.turn);
            let Some(events) = turn.events.clone() else {
                return Decision {
                    allow: false,
                    message: Some("Orbit: no turn is running to allow this tool".into()),
                };
            };
            let created_at = orbit_store::timestamp::now();
            let approval = PendingApproval {
                request_id: request_id.clone(),
                agent: agent.clone(),
                session,
                run: turn.run,
                tool_name: tool.to_owned(),
                input: input.clone(),
                tool_use_id: tool_use_id.to_owned(),
                created_at,
                expires_at: expiry(created_at, turn.ask_timeout),
                instance: self.news.instance,
            };
            // Pending here, under the turn's lock, before any node lists it: an answer
            // passed on from another node finds it, and the turn's end (which clears the
            // pending calls under the same lock) cannot come between and leave it behind.
            lock(&self.pending)
                .insert(request_id.clone(), Pending { answer: tx, approval: approval.clone() });
            (events, turn.ask_timeout, approval)
        };
        let request = PermissionRequest {
            request_id: request_id.clone(),
            tool_name: tool.to_owned(),
            input: input.clone(),
            tool_use_id: tool_use_id.to_owned(),
        };
        let shared = share_while_waiting(&self.news, approval);
        events.send(TurnEvent::PermissionRequest(request));
        self.news.activity.announce(Activity::ApprovalPending {
            agent: agent.clone(),
            session,
            request_id: request_id.clone(),
            tool_name: tool.to_owned(),
        });
        // Announced here, where the wait ends, whatever ends it: an answer, the timeout, or
        // the turn's end (which drops the answer's sender).
        let (decision, settlement) = match tokio::time::timeout(ask_timeout, rx).await {
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
                let secs = ask_timeout.as_secs();
                let decision = Decision {
                    allow: false,
                    message: Some(format!("Orbit: nobody allowed {tool} within {secs} s")),
                };
                (decision, ApprovalSettlement::Expired)
            }
        };
        drop(shared);
        self.news.activity.announce(Activity::ApprovalSettled {
            agent,
            session,
            request_id,
            settlement,
        });
        decision
    }

    /// Whether the tool may run, asking a person in `ask` mode; a denial is noted for the
    /// turn's outcome.
    async fn decide(&self, tool: &str, input: &Value, tool_use_id: &str) -> Decision {
        let generation = lock(&self.turn).generation;
        let decision = self.decide_unnoted(tool, input, tool_use_id).await;
        if !decision.allow {
            // A call whose turn ended while it waited is not a later turn's denial.
            let turn = lock(&self.turn);
            if turn.generation == generation {
                let reason = decision.message.as_deref().unwrap_or("denied by a person");
                self.note_denied(tool, tool_use_id, reason);
            }
        }
        decision
    }

    async fn decide_unnoted(&self, tool: &str, input: &Value, tool_use_id: &str) -> Decision {
        let mode = lock(&self.turn).mode;
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

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use orbit_store::{AgentName, Instance, MemStore, SessionId};
    use tokio::sync::{Notify, mpsc};

    use super::*;
    use crate::session::TurnLog;

    /// A store whose database is away until `back` is notified: sharing and withdrawing
    /// wait for it, and are noted in the order they finish.
    struct AwayStore {
        inner: Arc<dyn InstanceStore>,
        back: Notify,
        done: Mutex<Vec<String>>,
    }

    #[async_trait]
    impl InstanceStore for AwayStore {
        async fn register(
            &self,
            id: InstanceId,
            host: &str,
            pid: u32,
            node: &orbit_store::NodeIdentity,
            address: Option<&str>,
            until: time::OffsetDateTime,
        ) -> orbit_store::Result<Instance> {
            self.inner.register(id, host, pid, node, address, until).await
        }
        async fn heartbeat(
            &self,
            id: &InstanceId,
            until: time::OffsetDateTime,
        ) -> orbit_store::Result<Instance> {
            self.inner.heartbeat(id, until).await
        }
        async fn list(&self) -> orbit_store::Result<Vec<Instance>> {
            self.inner.list().await
        }
        async fn deregister(&self, id: &InstanceId) -> orbit_store::Result<()> {
            self.inner.deregister(id).await
        }
        async fn share_approval(&self, approval: &PendingApproval) -> orbit_store::Result<()> {
            self.back.notified().await;
            lock(&self.done).push(format!("share {}", approval.request_id));
            Ok(())
        }
        async fn withdraw_approval(
            &self,
            _instance: &InstanceId,
            request_id: &str,
        ) -> orbit_store::Result<()> {
            lock(&self.done).push(format!("withdraw {request_id}"));
            Ok(())
        }
    }

    fn control(instances: Arc<AwayStore>) -> Arc<SessionControl> {
        let stores = MemStore::new(std::env::temp_dir()).stores();
        let (agent, session) = (AgentName::parse("bot").unwrap(), SessionId::new());
        let activity = ActivityBus::default();
        let tools = OrbitTools {
            agent: agent.clone(),
            session,
            stores,
            activity: activity.clone(),
            node: "here".into(),
        };
        let news = ApprovalNews { activity, instances, instance: InstanceId::new() };
        Arc::new(SessionControl::new((agent, session), tools, news))
    }

    fn away() -> Arc<AwayStore> {
        let inner = MemStore::new(std::env::temp_dir()).stores().instances;
        Arc::new(AwayStore { inner, back: Notify::new(), done: Mutex::new(Vec::new()) })
    }

    fn begin(control: &SessionControl) -> mpsc::UnboundedReceiver<TurnEvent> {
        let (events, received) = mpsc::unbounded_channel();
        let sink = TurnSink::new(events, TurnLog::new(SessionId::new()));
        control.begin_turn(PermissionMode::Ask, Duration::from_secs(60), None, sink);
        received
    }

    fn asking(control: &Arc<SessionControl>) -> tokio::task::JoinHandle<Decision> {
        let control = control.clone();
        tokio::spawn(
            async move { control.decide("Bash", &json!({"command": "ls"}), "toolu_1").await },
        )
    }

    /// Finding 3 of the review: the database is never awaited on the permission path.
    #[tokio::test]
    async fn a_database_away_delays_neither_the_question_nor_the_answer() {
        let store = away();
        let control = control(store.clone());
        let mut events = begin(&control);
        let decided = asking(&control);
        // Bounded only so that the old behaviour (waiting for the database) fails, not hangs.
        let asked = tokio::time::timeout(Duration::from_secs(10), events.recv()).await;
        let Ok(Some(TurnEvent::PermissionRequest(request))) = asked else {
            panic!("the question waited for the database: {asked:?}")
        };
        control.answer(&request.request_id, Decision { allow: true, message: None }).unwrap();
        assert!(decided.await.unwrap().allow, "answered while the database is away");
        assert!(lock(&store.done).is_empty());

        // Back, the copy is shared and then withdrawn, in that order.
        store.back.notify_one();
        let id = &request.request_id;
        let expected = vec![format!("share {id}"), format!("withdraw {id}")];
        while *lock(&store.done) != expected {
            tokio::task::yield_now().await;
        }
    }

    /// Finding 4 of the review: a call whose turn ended while it waited is neither left
    /// pending nor counted as a later turn's denial.
    #[tokio::test]
    async fn a_call_outliving_its_turn_is_no_later_turns_news() {
        let control = control(away());
        let mut events = begin(&control);
        let decided = asking(&control);
        assert!(matches!(events.recv().await, Some(TurnEvent::PermissionRequest(_))));
        assert_eq!(control.pending_approvals().len(), 1);
        assert_eq!(control.end_turn(), Vec::new(), "the wait has not ended yet");
        let _next = begin(&control);
        assert!(!decided.await.unwrap().allow);
        assert!(control.pending_approvals().is_empty());
        assert_eq!(control.end_turn(), Vec::new(), "the next turn denied nothing");
    }

    #[test]
    fn an_expiry_past_any_timestamp_is_the_far_future_not_a_panic() {
        let now = orbit_store::timestamp::now();
        assert_eq!(expiry(now, Duration::from_secs(60)), now + time::Duration::seconds(60));
        let far = time::PrimitiveDateTime::MAX.assume_utc();
        assert_eq!(expiry(now, Duration::from_secs(u64::MAX)), far);
        assert_eq!(expiry(now, Duration::MAX), far);
    }
}
