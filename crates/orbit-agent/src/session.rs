//! A session agent: one Orbit session, its warm CLI process, and its chat turns.
//!
//! Starting a turn ([`SessionAgent::start_turn`]) is a fallible step that refuses at once,
//! before anything is claimed or created: a turn already running (`TurnInProgress`), an
//! unknown session, no process slot (`Busy`), a pool shutting down. An accepted turn runs on
//! a task that the pool owns, never on the caller's: a caller that goes away, or whose future
//! is dropped (an HTTP worker stopping, a scheduler's timeout), cannot cut a turn in half.
//!
//! The turn itself (the plan's `OrbitAgent.chat`, corrected):
//! 1. make sure a CLI process runs (its slot was taken when the turn started);
//! 2. claim the agent's unclaimed inbox messages for this session, under a lease that the
//!    turn renews while it lives, and put them in this turn's user message, so they reach the
//!    model even on a warm or resumed CLI session whose system prompt is fixed;
//! 3. run the turn, passing every CLI event on unchanged, storing the CLI's `session_id` as
//!    soon as its `init` names it;
//! 4. mark the claimed messages read on success, give them back on failure or abort (a
//!    delivery counts only if the turn reached the model);
//! 5. record the exchange: messages, last activity, daily memory, cost and usage.
//!
//! Whatever ends the turn, steps 4 and 5 run exactly once, on the turn's own task. An abort
//! is latched from the moment the turn is accepted, so one that arrives while the turn is
//! still starting its process ends it before the model is asked. A process whose turn did not
//! end with a result (an abort, a timeout, a crash) is ended, never given another turn.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedMutexGuard, oneshot};

use orbit_store::{
    AgentName, Claimer, InboxMessage, PermissionMode, Role, SessionId, SessionMessage,
    SessionPatch, Usage,
};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::policy::{Decision, SessionControl};
use crate::pool::{PoolShared, ProcessSlot};
use crate::prompt::{self, TurnKind};
use crate::runtime::{ProcessEvent, RuntimeProcess, SpawnSpec};
use crate::tools::OrbitTools;
use crate::{Error, Result};

/// Most inbox messages one turn takes.
const MAX_CLAIMS: usize = 20;

/// What a caller may set for one turn.
#[derive(Debug, Clone, Default)]
pub struct ChatOptions {
    /// A model for this session from now on.
    pub model: Option<String>,
    pub kind: TurnKind,
    /// Abort the turn after this long.
    pub timeout: Option<Duration>,
}

/// How a turn ended.
#[derive(Debug, Clone)]
pub struct TurnOutcome {
    /// The assistant's final text.
    pub result: String,
    pub cost_usd: Option<f64>,
    /// Inbox messages handled in this turn.
    pub handled_messages: Vec<orbit_store::MessageId>,
}

/// An accepted turn: its events as they happen, and how it ended.
pub struct Turn {
    /// The turn's events; the channel closes when the turn ends.
    pub events: mpsc::UnboundedReceiver<Value>,
    outcome: oneshot::Receiver<Result<TurnOutcome>>,
}

impl Turn {
    /// Waits for the turn's end. Dropping a `Turn` instead leaves the turn running to its
    /// end all the same.
    pub async fn outcome(self) -> Result<TurnOutcome> {
        self.outcome.await.unwrap_or_else(|_| {
            Err(Error::Protocol("the turn's task ended without an outcome".into()))
        })
    }

    /// Splits the turn into its events and the wait for its end.
    pub fn into_parts(
        self,
    ) -> (mpsc::UnboundedReceiver<Value>, impl std::future::Future<Output = Result<TurnOutcome>>)
    {
        let outcome = self.outcome;
        let wait = async move {
            outcome.await.unwrap_or_else(|_| {
                Err(Error::Protocol("the turn's task ended without an outcome".into()))
            })
        };
        (self.events, wait)
    }
}

/// A live CLI process and the slot it holds.
struct LiveProcess {
    process: Box<dyn RuntimeProcess>,
    _permit: ProcessSlot,
    /// A turn was sent and has not ended with a result: the process may still be working on
    /// it, so it must never be given another turn.
    mid_turn: bool,
    /// Whether the process was started with `--resume` and has not yet begun a turn.
    resuming: bool,
    /// The CLI session id its turns report.
    cli_session: Option<String>,
    /// The CLI session's running cost total as last reported, to turn totals into per-turn
    /// costs. For a resumed CLI session it starts at what the Orbit session recorded.
    cost_base: f64,
    /// The mode the process was started in (`allow-all` starts the CLI differently).
    mode: PermissionMode,
}

/// One Orbit session's agent.
pub struct SessionAgent {
    agent: AgentName,
    session: SessionId,
    shared: Arc<PoolShared>,
    running: AtomicBool,
    abort: watch::Sender<u64>,
    live: Arc<tokio::sync::Mutex<Option<LiveProcess>>>,
    last_used: Mutex<Instant>,
    control: Arc<SessionControl>,
}

/// Resets the running flag when a turn ends, however it ends.
struct RunningGuard(Arc<SessionAgent>);

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::SeqCst);
    }
}

/// What a turn was given when it was accepted.
struct Accepted {
    live: OwnedMutexGuard<Option<LiveProcess>>,
    /// A process slot, taken when no reusable process was there.
    permit: Option<ProcessSlot>,
    abort: watch::Receiver<u64>,
    mode: PermissionMode,
}

enum TurnEnd {
    Result(Value),
    ResumeFailed(String),
}

impl SessionAgent {
    pub(crate) fn new(agent: AgentName, session: SessionId, shared: Arc<PoolShared>) -> Self {
        let tools = OrbitTools {
            agent: agent.clone(),
            session,
            stores: shared.stores.clone(),
            task_listener: shared.task_listener.clone(),
        };
        let control = Arc::new(SessionControl::new(shared.options.ask_timeout, tools));
        Self {
            control,
            agent,
            session,
            shared,
            running: AtomicBool::new(false),
            abort: watch::channel(0).0,
            live: Arc::new(tokio::sync::Mutex::new(None)),
            last_used: Mutex::new(Instant::now()),
        }
    }

    pub fn agent(&self) -> &AgentName {
        &self.agent
    }

    pub fn session(&self) -> SessionId {
        self.session
    }

    /// Whether a turn is running.
    pub fn is_running(&self) -> bool {
        self.running.load(Ordering::SeqCst)
    }

    pub(crate) fn idle_for(&self) -> Duration {
        self.last_used.lock().unwrap_or_else(PoisonError::into_inner).elapsed()
    }

    /// The pid of the live CLI process, if any.
    pub async fn process_id(&self) -> Option<u32> {
        self.live.lock().await.as_ref().and_then(|live| live.process.pid())
    }

    /// Interrupts the running turn. `NotRunning` when there is none.
    pub fn abort(&self) -> Result<()> {
        if !self.is_running() {
            return Err(Error::NotRunning(self.session.to_string()));
        }
        self.abort.send_modify(|generation| *generation += 1);
        Ok(())
    }

    /// Answers a pending `ask` permission request of this session's running turn.
    pub fn answer_permission(
        &self,
        request_id: &str,
        allow: bool,
        message: Option<String>,
    ) -> Result<()> {
        self.control.answer(request_id, Decision { allow, message })
    }

    /// Ends the live CLI process, if idle (`force` ends it even mid-turn, after an abort, and
    /// waits for the turn to settle).
    pub(crate) async fn stop_process(&self, force: bool) -> bool {
        if force {
            let _ = self.abort();
        }
        let mut live = if force {
            self.live.lock().await
        } else {
            match self.live.try_lock() {
                Ok(live) => live,
                Err(_) => return false,
            }
        };
        match live.take() {
            Some(live) => {
                live.process.shutdown().await;
                true
            }
            None => false,
        }
    }

    /// Runs one chat turn to its end, sending every event to `events`: [`Self::start_turn`]
    /// and then the turn's outcome.
    pub async fn chat(
        self: &Arc<Self>,
        prompt: &str,
        options: ChatOptions,
        events: mpsc::UnboundedSender<Value>,
    ) -> Result<TurnOutcome> {
        let (mut turn_events, outcome) = self.start_turn(prompt, options).await?.into_parts();
        while let Some(event) = turn_events.recv().await {
            let _ = events.send(event);
        }
        outcome.await
    }

    /// Accepts a turn and starts it on a task the pool owns, or refuses it at once: another
    /// turn of this session runs (`TurnInProgress`), the session does not exist, no process
    /// slot comes free (`Busy`), or the pool is shutting down. Nothing is claimed, created or
    /// spent for a refused turn.
    pub async fn start_turn(self: &Arc<Self>, prompt: &str, options: ChatOptions) -> Result<Turn> {
        // Subscribed before the turn counts as running, so an abort that sees it running is
        // seen by the turn, however early.
        let mut abort = self.abort.subscribe();
        abort.borrow_and_update();
        if self.shared.is_closing() {
            return Err(Error::ShuttingDown);
        }
        if self.running.swap(true, Ordering::SeqCst) {
            return Err(Error::TurnInProgress(self.session.to_string()));
        }
        let running = RunningGuard(self.clone());
        *self.last_used.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        let accepted = self.accept(&options, abort).await?;
        let (events_tx, events) = mpsc::unbounded_channel();
        let (outcome_tx, outcome) = oneshot::channel();
        let this = self.clone();
        let prompt = prompt.to_owned();
        self.shared.spawn_turn(async move {
            let _running = running;
            let outcome = this.run(&prompt, options, accepted, &events_tx).await;
            let _ = outcome_tx.send(outcome);
        });
        Ok(Turn { events, outcome })
    }

    /// The checks and the slot of a turn being started.
    async fn accept(&self, options: &ChatOptions, abort: watch::Receiver<u64>) -> Result<Accepted> {
        // The session must exist before anything is claimed or spent for it.
        self.shared.stores.sessions.get(&self.agent, &self.session).await?;
        let mode = self.permission_mode().await?;
        let mut live = self.live.clone().lock_owned().await;
        // A process that ended, that did not finish its last turn, or that was started for
        // `allow-all` when the mode is now stricter (or the other way round) is replaced;
        // the next one resumes.
        let stale = live.as_ref().is_some_and(|l| {
            l.mid_turn
                || l.process.has_exited()
                || (l.mode == PermissionMode::AllowAll) != (mode == PermissionMode::AllowAll)
        });
        if stale && let Some(old) = live.take() {
            old.process.shutdown().await;
        }
        let permit = match &*live {
            Some(_) => None,
            None => Some(
                self.shared.acquire_process_slot(&self.agent, &self.session, options.kind).await?,
            ),
        };
        Ok(Accepted { live, permit, abort, mode })
    }

    /// The accepted turn, start to end; settles and records exactly once.
    async fn run(
        &self,
        prompt: &str,
        options: ChatOptions,
        accepted: Accepted,
        events: &mpsc::UnboundedSender<Value>,
    ) -> Result<TurnOutcome> {
        let Accepted { mut live, permit, mut abort, mode } = accepted;
        self.control.begin_turn(mode, events.clone());
        let mut claimed = Vec::new();
        let mut delivered = false;
        let outcome = async {
            self.prepare_process(&mut live, permit, &options, mode).await?;
            if abort.has_changed().unwrap_or(false) {
                return Err(Error::Aborted);
            }
            claimed = self.claim_inbox().await?;
            let _renewing = self.renew_claims(&claimed);
            let text = prompt::user_message(prompt, &claimed);
            self.run_turn(&mut live, &text, &options, &mut abort, events, &mut delivered).await
        }
        .await;
        self.control.end_turn();
        self.settle_claims(&claimed, outcome.is_ok(), delivered).await;
        *self.last_used.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        if let Err(err) = &outcome {
            tracing::info!(agent = %self.agent, session = %self.session, error = %err, "turn failed");
        }
        let result = match &outcome {
            Ok(outcome) => outcome.result.clone(),
            Err(err) => format!("(turn failed: {err})"),
        };
        self.record(prompt, &result, options.kind).await;
        outcome.map(|mut outcome| {
            outcome.handled_messages = claimed.iter().map(|m| m.id).collect();
            outcome
        })
    }

    async fn claim_inbox(&self) -> Result<Vec<InboxMessage>> {
        let claimer = Claimer {
            session: self.session,
            instance: self.shared.options.instance,
            until: orbit_store::timestamp::now() + self.shared.options.claim_lease,
        };
        Ok(self.shared.stores.inbox.claim_unclaimed(&self.agent, &claimer, MAX_CLAIMS).await?)
    }

    /// Renews the claims' leases at a third of their length until the returned guard drops.
    fn renew_claims(&self, claimed: &[InboxMessage]) -> Option<AbortOnDrop> {
        if claimed.is_empty() {
            return None;
        }
        let (inbox, agent) = (self.shared.stores.inbox.clone(), self.agent.clone());
        let lease = self.shared.options.claim_lease;
        let held: Vec<_> =
            claimed.iter().filter_map(|m| m.lease.map(|lease| (m.id, lease.token))).collect();
        Some(AbortOnDrop(tokio::spawn(async move {
            loop {
                tokio::time::sleep(lease / 3).await;
                let until = orbit_store::timestamp::now() + lease;
                for (id, token) in &held {
                    if let Err(err) = inbox.renew(&agent, id, token, until).await {
                        tracing::warn!(%agent, message = %id, error = %err, "could not renew an inbox claim");
                    }
                }
            }
        })))
    }

    async fn settle_claims(&self, claimed: &[InboxMessage], success: bool, delivered: bool) {
        let inbox = &self.shared.stores.inbox;
        for message in claimed {
            let Some(lease) = message.lease else { continue };
            let settled = if success {
                inbox.mark_read(&self.agent, &message.id, &lease.token).await.map(drop)
            } else {
                inbox.release(&self.agent, &message.id, &lease.token, delivered).await.map(drop)
            };
            if let Err(err) = settled {
                tracing::warn!(agent = %self.agent, message = %message.id, error = %err, success, "could not settle an inbox claim");
            }
        }
    }

    /// Makes sure a live process fits this turn: a model change restarts it (resuming), and
    /// a missing one is started in the slot the turn was given.
    async fn prepare_process(
        &self,
        live: &mut Option<LiveProcess>,
        permit: Option<ProcessSlot>,
        options: &ChatOptions,
        mode: PermissionMode,
    ) -> Result<()> {
        let mut permit = permit;
        if let Some(model) = &options.model {
            let current = self.shared.stores.sessions.get(&self.agent, &self.session).await?.model;
            if current.as_deref() != Some(model.as_str()) {
                let patch = SessionPatch { model: Some(model.clone()), ..SessionPatch::default() };
                self.shared.stores.sessions.update(&self.agent, &self.session, patch).await?;
                // A different model needs a new process (it resumes the same CLI session);
                // the same model again keeps the warm one. The old process's slot passes on.
                if let Some(old) = live.take() {
                    old.process.shutdown().await;
                    permit = Some(old._permit);
                }
            }
        }
        if live.is_none() {
            let permit = match permit {
                Some(permit) => permit,
                None => {
                    self.shared
                        .acquire_process_slot(&self.agent, &self.session, options.kind)
                        .await?
                }
            };
            *live = Some(self.start_process(options.kind, true, mode, permit).await?);
        }
        Ok(())
    }

    async fn run_turn(
        &self,
        live: &mut Option<LiveProcess>,
        text: &str,
        options: &ChatOptions,
        abort: &mut watch::Receiver<u64>,
        events: &mpsc::UnboundedSender<Value>,
        delivered: &mut bool,
    ) -> Result<TurnOutcome> {
        loop {
            let Some(current) = live.as_mut() else {
                return Err(Error::Protocol("no CLI process for the turn".into()));
            };
            current.mid_turn = true;
            let end = self.drive_turn(current, text, options, abort, events, delivered).await;
            match end {
                Ok(TurnEnd::Result(result)) => {
                    current.mid_turn = false;
                    return self.finish(current, result).await;
                }
                Ok(TurnEnd::ResumeFailed(reason)) => {
                    let old = current.cli_session.clone();
                    tracing::warn!(session = %self.session, old_cli_session = ?old, %reason, "resume failed; continuing in a fresh CLI session");
                    let _ = events.send(json!({
                        "type": "system",
                        "subtype": "orbit_resume_failed",
                        "previousSdkSessionId": old,
                        "message": format!("The previous Claude Code session could not be resumed ({reason}); this turn runs in a fresh one."),
                    }));
                    let Some(old) = live.take() else { continue };
                    old.process.shutdown().await;
                    *live =
                        Some(self.start_process(options.kind, false, old.mode, old._permit).await?);
                }
                Err(err) => {
                    // After an abort, a crash or a timeout the process is not trusted with
                    // another turn; the next turn resumes the CLI session in a new one.
                    if let Some(old) = live.take() {
                        old.process.shutdown().await;
                    }
                    return Err(err);
                }
            }
        }
    }

    /// The session's mode, else its agent's.
    async fn permission_mode(&self) -> Result<PermissionMode> {
        let stores = &self.shared.stores;
        let session = stores.sessions.get(&self.agent, &self.session).await?;
        match session.permission_mode {
            Some(mode) => Ok(mode),
            None => Ok(stores.agents.get(&self.agent).await?.permission_mode),
        }
    }

    async fn start_process(
        &self,
        kind: TurnKind,
        resume: bool,
        permission_mode: PermissionMode,
        permit: ProcessSlot,
    ) -> Result<LiveProcess> {
        let stores = &self.shared.stores;
        let session = stores.sessions.get(&self.agent, &self.session).await?;
        let agent = stores.agents.get(&self.agent).await?;
        let base: PathBuf = stores.agents.working_dir(&self.agent).await?;
        // A session with its own worktree runs there, resumes included.
        let cwd = match &session.worktree_id {
            Some(id) => crate::worktree::path_of(&base, id),
            None => base,
        };
        let resume = if resume { session.sdk_session_id.clone() } else { None };
        let memory_dir = stores.memory.location(&self.agent);
        let spec = SpawnSpec {
            conversation: format!("{}/{}", self.agent, self.session),
            cwd,
            resume: resume.clone(),
            model: session.model.clone().or(agent.model.clone()),
            append_system_prompt: prompt::system_prompt(
                &self.agent,
                &self.session,
                kind,
                memory_dir.as_deref(),
            ),
            permission_mode,
            control: self.control.clone(),
        };
        let process = self.shared.runtime.spawn(spec).await?;
        let cost_base = if resume.is_some() { session.total_cost_usd.unwrap_or(0.0) } else { 0.0 };
        Ok(LiveProcess {
            process,
            _permit: permit,
            mid_turn: false,
            resuming: resume.is_some(),
            cli_session: resume,
            cost_base,
            mode: permission_mode,
        })
    }

    /// Sends the turn and forwards its events until its result.
    async fn drive_turn(
        &self,
        live: &mut LiveProcess,
        text: &str,
        options: &ChatOptions,
        abort: &mut watch::Receiver<u64>,
        events: &mpsc::UnboundedSender<Value>,
        delivered: &mut bool,
    ) -> Result<TurnEnd> {
        if abort.has_changed().unwrap_or(false) {
            return Err(Error::Aborted);
        }
        let mut stream = live.process.send_turn(text).await?;
        // From here the model may see the turn's inbox messages.
        *delivered = true;
        let resuming = std::mem::replace(&mut live.resuming, false);
        let mut seen_init = false;
        let deadline = options.timeout.map(|t| tokio::time::Instant::now() + t);
        let mut stop: Option<(Error, tokio::time::Instant)> = None;
        loop {
            let give_up_at = stop.as_ref().map(|(_, at)| *at).or(deadline);
            let event = tokio::select! {
                event = stream.recv() => event,
                changed = abort.changed(), if stop.is_none() => {
                    if changed.is_ok() {
                        live.process.interrupt().await.ok();
                        stop = Some((Error::Aborted, tokio::time::Instant::now() + self.shared.abort_grace()));
                    }
                    continue;
                }
                () = sleep_until_opt(give_up_at) => {
                    match stop.take() {
                        // The interrupt was not heeded in time.
                        Some((err, _)) => {
                            live.process.shutdown().await;
                            return Err(err);
                        }
                        None => {
                            live.process.interrupt().await.ok();
                            let secs = options.timeout.map_or(0, |t| t.as_secs());
                            stop = Some((Error::TimedOut(secs), tokio::time::Instant::now() + self.shared.abort_grace()));
                            continue;
                        }
                    }
                }
            };
            let message = match event {
                Some(ProcessEvent::Message(message)) => message,
                Some(ProcessEvent::Exited { stderr, .. })
                    if resuming && !seen_init && stderr_says_no_conversation(&stderr) =>
                {
                    return Ok(TurnEnd::ResumeFailed(first_line(&stderr)));
                }
                Some(ProcessEvent::Exited { status, stderr }) => {
                    return Err(stop.map_or(Error::CliExited { status, stderr }, |(err, _)| err));
                }
                None => {
                    return Err(Error::CliExited {
                        status: "unknown".into(),
                        stderr: String::new(),
                    });
                }
            };
            let kind = (
                message["type"].as_str().unwrap_or_default(),
                message["subtype"].as_str().unwrap_or_default(),
            );
            if kind == ("system", "init") {
                seen_init = true;
                self.note_cli_session(live, &message).await;
            }
            if kind.0 == "result" && resuming && !seen_init {
                // A resume the CLI could not do ends in an error result before any init.
                return Ok(TurnEnd::ResumeFailed(message["errors"].to_string()));
            }
            let _ = events.send(message.clone());
            if kind.0 == "result" {
                return match stop {
                    Some((err, _)) => Err(err),
                    None => Ok(TurnEnd::Result(message)),
                };
            }
        }
    }

    async fn note_cli_session(&self, live: &mut LiveProcess, init: &Value) {
        let Some(id) = init["session_id"].as_str() else { return };
        if live.cli_session.as_deref() == Some(id) {
            return;
        }
        live.cli_session = Some(id.to_owned());
        let patch = SessionPatch { sdk_session_id: Some(id.to_owned()), ..SessionPatch::default() };
        if let Err(err) =
            self.shared.stores.sessions.update(&self.agent, &self.session, patch).await
        {
            tracing::warn!(session = %self.session, error = %err, "could not store the CLI session id");
        }
    }

    async fn finish(&self, live: &mut LiveProcess, result: Value) -> Result<TurnOutcome> {
        let text = result["result"].as_str().unwrap_or_default().to_owned();
        // `total_cost_usd` is the CLI session's running total; a fresh CLI session starts at 0.
        let total = result["total_cost_usd"].as_f64();
        let usage: Option<Usage> = serde_json::from_value(result["usage"].clone()).ok();
        let turn_cost = total.map(|total| (total - live.cost_base).max(0.0));
        if let Some(total) = total {
            live.cost_base = total;
        }
        let patch =
            SessionPatch { add_cost_usd: turn_cost, add_usage: usage, ..SessionPatch::default() };
        self.shared.stores.sessions.update(&self.agent, &self.session, patch).await?;
        if result["is_error"].as_bool() == Some(true) {
            let reason = if text.is_empty() {
                result["subtype"].as_str().unwrap_or("error").to_owned()
            } else {
                text
            };
            return Err(Error::TurnFailed(reason));
        }
        Ok(TurnOutcome { result: text, cost_usd: turn_cost, handled_messages: Vec::new() })
    }

    /// Appends the exchange to the session and the agent's memory. Failures are logged: the
    /// turn itself already happened.
    async fn record(&self, prompt: &str, result: &str, kind: TurnKind) {
        let stores = &self.shared.stores;
        for (role, content) in [(Role::User, prompt), (Role::Assistant, result)] {
            if let Err(err) = stores
                .sessions
                .append_message(&self.agent, &self.session, SessionMessage::new(role, content))
                .await
            {
                tracing::warn!(session = %self.session, error = %err, "could not append to the session");
            }
        }
        if let Err(err) = stores.agents.update_last_active(&self.agent).await {
            tracing::warn!(agent = %self.agent, error = %err, "could not update last activity");
        }
        let label = match kind {
            TurnKind::Chat => "chat",
            TurnKind::ScheduledTask => "scheduled task",
        };
        let entry = format!(
            "{label}, session {}\n\n**Prompt:** {}\n\n**Result:** {}",
            self.session,
            clip(prompt, 500),
            clip(result, 1000)
        );
        if let Err(err) =
            stores.memory.append(&self.agent, orbit_store::timestamp::now(), &entry).await
        {
            tracing::warn!(agent = %self.agent, error = %err, "could not append to memory");
        }
        crate::qmd::refresh_in_background(stores.memory.location(&self.agent));
    }
}

fn clip(text: &str, max: usize) -> String {
    if text.chars().count() <= max {
        text.to_owned()
    } else {
        format!("{}...", text.chars().take(max).collect::<String>())
    }
}

fn stderr_says_no_conversation(stderr: &str) -> bool {
    stderr.contains("No conversation found")
}

fn first_line(text: &str) -> String {
    text.lines().find(|l| !l.trim().is_empty()).unwrap_or("resume failed").to_owned()
}

async fn sleep_until_opt(at: Option<tokio::time::Instant>) {
    match at {
        Some(at) => tokio::time::sleep_until(at).await,
        None => std::future::pending().await,
    }
}

/// Aborts a background task when dropped.
struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}
