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
//! 3. run the turn, passing every CLI event on unchanged (partial messages as text deltas)
//!    through the turn's sink, to its caller and its log (`turn_log`: what watchers who
//!    attach mid-turn are replayed, and the transcript), storing the CLI's `session_id` as
//!    soon as its `init` names it;
//! 4. mark the claimed messages read on success, give them back on failure or abort (a
//!    delivery counts only if the turn reached the model);
//! 5. record the exchange: messages (the user's stamped when it was sent), last activity,
//!    daily memory, cost and usage, then the turn's transcript, before the caller hears the
//!    turn's last event.
//!
//! Whatever ends the turn, steps 4 and 5 run exactly once, on the turn's own task. An abort
//! is latched from the moment the turn is accepted, so one that arrives while the turn is
//! still starting its process ends it before the model is asked. A process whose turn did not
//! end with a result (an abort, a timeout, a crash) is ended, never given another turn.

use std::sync::atomic::{AtomicU8, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{OwnedMutexGuard, oneshot};

use crate::event::{CliResult, TurnEvent};
use orbit_store::{AgentName, LeaseToken, PermissionMode, RunId, SessionId};
use tokio::sync::{mpsc, watch};

use crate::policy::{Decision, DeniedTool, SessionControl};
use crate::pool::{PoolShared, ProcessSlot};
use crate::prompt::TurnKind;
use crate::runtime::RuntimeProcess;
use crate::tools::OrbitTools;
use crate::{Error, Result};

mod claims;
mod portability;
mod turn;
mod turn_hold;
mod turn_log;

pub(crate) use turn_log::TurnLog;
pub(crate) use turn_log::TurnSink;
pub use turn_log::{REPLAY_BYTES, REPLAY_EVENTS, TRANSCRIPT_TURN_BYTES, TurnWatcher};

/// What a caller may set for one turn.
#[derive(Debug, Clone, Default)]
pub struct ChatOptions {
    /// A model for this session from now on.
    pub model: Option<String>,
    pub kind: TurnKind,
    /// Abort the turn after this long.
    pub timeout: Option<Duration>,
    /// The task run this turn is, if any: its pending approvals name it.
    pub run: Option<RunId>,
}

/// How a turn ended.
#[derive(Debug, Clone)]
pub struct TurnOutcome {
    /// The assistant's final text.
    pub result: String,
    pub cost_usd: Option<f64>,
    /// Inbox messages handled in this turn.
    pub handled_messages: Vec<orbit_store::MessageId>,
    /// The tool calls the turn was refused (by a person, by nobody answering in time, or by
    /// `safe` mode), in order.
    pub denied_tools: Vec<DeniedTool>,
}

/// An accepted turn: its events as they happen, and how it ended.
pub struct Turn {
    id: u64,
    /// The turn's events; the channel closes when the turn ends.
    pub events: mpsc::UnboundedReceiver<TurnEvent>,
    outcome: oneshot::Receiver<Result<TurnOutcome>>,
}

impl Turn {
    /// Names this turn for [`SessionAgent::abort_turn`].
    pub fn id(&self) -> u64 {
        self.id
    }

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
    ) -> (mpsc::UnboundedReceiver<TurnEvent>, impl std::future::Future<Output = Result<TurnOutcome>>)
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
    /// Idle, running a turn, or retired from the pool (see [`TurnState`]).
    state: AtomicU8,
    /// The id of the turn last accepted; ids are never reused.
    current_turn: AtomicU64,
    next_turn: AtomicU64,
    /// The id of the turn asked to stop (see [`AbortSignal`]).
    abort: watch::Sender<u64>,
    /// The hold of the turn last held across nodes, with that turn's id: an abort asked
    /// through another node names the hold, and stops that turn alone.
    held_turn: Mutex<Option<(LeaseToken, u64)>>,
    live: Arc<tokio::sync::Mutex<Option<LiveProcess>>>,
    last_used: Mutex<Instant>,
    control: Arc<SessionControl>,
    /// The running turn's log, for watchers who attach mid-turn.
    current: Mutex<Option<Arc<TurnLog>>>,
}

/// What a session agent is doing. One atomic for both, so that a turn starting and the pool
/// retiring an idle agent cannot both succeed: a retired agent never runs another turn, and
/// a running one is never retired.
#[repr(u8)]
enum TurnState {
    Idle = 0,
    Running = 1,
    Retired = 2,
}

/// Sets the agent idle again when a turn ends, however it ends.
struct RunningGuard(Arc<SessionAgent>);

/// Ends the turn's log when the turn's task ends, however it ends, so no watcher waits for
/// a turn that is gone.
struct LogGuard(Arc<SessionAgent>, Arc<TurnLog>);

impl Drop for LogGuard {
    fn drop(&mut self) {
        let mut current = self.0.current.lock().unwrap_or_else(PoisonError::into_inner);
        if current.as_ref().is_some_and(|log| Arc::ptr_eq(log, &self.1)) {
            current.take();
        }
        drop(current);
        self.1.close();
    }
}

impl Drop for RunningGuard {
    fn drop(&mut self) {
        self.0.state.store(TurnState::Idle as u8, Ordering::SeqCst);
    }
}

/// An abort request for whatever turn runs (turn ids start at 1, so it names none).
const ANY_TURN: u64 = u64::MAX;

/// A turn's view of abort requests: only a request naming this turn stops it, so an abort
/// meant for another turn (an earlier one of the session, or a scheduler's own run) never
/// stops this one.
pub(super) struct AbortSignal {
    requests: watch::Receiver<u64>,
    turn: u64,
}

impl AbortSignal {
    /// Whether this turn was asked to stop (and not yet told).
    pub(super) fn requested(&mut self) -> bool {
        self.requests.has_changed().unwrap_or(false) && {
            let request = *self.requests.borrow_and_update();
            self.names_me(request)
        }
    }

    fn names_me(&self, request: u64) -> bool {
        request == self.turn || request == ANY_TURN
    }

    /// Resolves when this turn is asked to stop.
    pub(super) async fn wait(&mut self) {
        loop {
            if self.requests.changed().await.is_err() {
                return std::future::pending().await;
            }
            let request = *self.requests.borrow_and_update();
            if self.names_me(request) {
                return;
            }
        }
    }
}

/// What a turn was given when it was accepted.
struct Accepted {
    live: OwnedMutexGuard<Option<LiveProcess>>,
    /// A process slot, taken when no reusable process was there.
    permit: Option<ProcessSlot>,
    abort: AbortSignal,
    mode: PermissionMode,
}

enum TurnEnd {
    Result(CliResult),
    ResumeFailed(String),
}

impl SessionAgent {
    pub(crate) fn new(agent: AgentName, session: SessionId, shared: Arc<PoolShared>) -> Self {
        let tools = OrbitTools {
            agent: agent.clone(),
            session,
            stores: shared.stores.clone(),
            activity: shared.options.activity.clone(),
            node: shared.options.node.clone(),
        };
        let news = crate::policy::ApprovalNews {
            activity: shared.options.activity.clone(),
            instances: shared.stores.instances.clone(),
            instance: shared.options.instance,
        };
        let control = Arc::new(SessionControl::new((agent.clone(), session), tools, news));
        Self {
            control,
            agent,
            session,
            shared,
            state: AtomicU8::new(TurnState::Idle as u8),
            current_turn: AtomicU64::new(0),
            next_turn: AtomicU64::new(1),
            abort: watch::channel(0).0,
            held_turn: Mutex::new(None),
            live: Arc::new(tokio::sync::Mutex::new(None)),
            last_used: Mutex::new(Instant::now()),
            current: Mutex::new(None),
        }
    }

    /// Watches the running turn: its events from its start (as far as the replay buffer
    /// holds them), then live, until it ends. `None` when no turn runs.
    pub fn watch(&self) -> Option<TurnWatcher> {
        let current = self.current.lock().unwrap_or_else(PoisonError::into_inner);
        current.as_ref().map(|log| log.watch())
    }

    pub fn agent(&self) -> &AgentName {
        &self.agent
    }

    pub fn session(&self) -> SessionId {
        self.session
    }

    /// Whether a turn is running.
    pub fn is_running(&self) -> bool {
        self.state.load(Ordering::SeqCst) == TurnState::Running as u8
    }

    /// Takes an idle agent out of service for good (the pool drops it); `false` when a turn
    /// runs.
    pub(crate) fn retire(&self) -> bool {
        let (idle, retired) = (TurnState::Idle as u8, TurnState::Retired as u8);
        self.state.compare_exchange(idle, retired, Ordering::SeqCst, Ordering::SeqCst).is_ok()
            || self.state.load(Ordering::SeqCst) == retired
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
        // Whatever turn runs now: a turn that has just been accepted may not have published
        // its id yet, and a turn ignores requests from before it began.
        self.abort.send_replace(ANY_TURN);
        Ok(())
    }

    /// Interrupts the running turn if it is the one held by `hold` (see
    /// [`SessionStore::request_turn_abort`](orbit_store::SessionStore::request_turn_abort)).
    /// `NotRunning` when that turn runs here no more.
    pub fn abort_held(&self, hold: &LeaseToken) -> Result<()> {
        let held = *self.held_turn.lock().unwrap_or_else(PoisonError::into_inner);
        match held {
            Some((token, turn))
                if token == *hold
                    && self.is_running()
                    && self.current_turn.load(Ordering::SeqCst) == turn =>
            {
                self.abort.send_replace(turn);
                Ok(())
            }
            _ => Err(Error::NotRunning(self.session.to_string())),
        }
    }

    /// Interrupts the turn `id` (see [`Turn::id`]) if it still runs; never another one, and
    /// never overwriting a pending request for the turn that runs.
    pub fn abort_turn(&self, id: u64) {
        if self.is_running() && self.current_turn.load(Ordering::SeqCst) == id {
            self.abort.send_replace(id);
        }
    }

    /// The tool calls of this session's running turn that wait for a person.
    pub fn pending_approvals(&self) -> Vec<orbit_store::PendingApproval> {
        self.control.pending_approvals()
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
        events: mpsc::UnboundedSender<TurnEvent>,
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
        // The user's message is stamped when it was sent, not when its turn ends.
        let sent_at = orbit_store::timestamp::now();
        // Subscribed before the turn counts as running, so an abort that sees it running is
        // seen by the turn, however early.
        let mut requests = self.abort.subscribe();
        requests.borrow_and_update();
        if self.shared.is_closing() {
            return Err(Error::ShuttingDown);
        }
        let (idle, running) = (TurnState::Idle as u8, TurnState::Running as u8);
        match self.state.compare_exchange(idle, running, Ordering::SeqCst, Ordering::SeqCst) {
            Ok(_) => {}
            Err(state) if state == TurnState::Retired as u8 => {
                // The pool let this agent go between handing it out and now: the session's
                // current agent takes the turn.
                let current = self.shared.agent(&self.agent, &self.session);
                return Box::pin(current.start_turn(prompt, options)).await;
            }
            Err(_) => return Err(Error::TurnInProgress(self.session.to_string())),
        }
        let id = self.next_turn.fetch_add(1, Ordering::SeqCst);
        self.current_turn.store(id, Ordering::SeqCst);
        let abort = AbortSignal { requests, turn: id };
        let running = RunningGuard(self.clone());
        *self.last_used.lock().unwrap_or_else(PoisonError::into_inner) = Instant::now();
        let (accepted, hold) = self.accept(&options, abort, id).await?;
        let (events_tx, events) = mpsc::unbounded_channel();
        let (outcome_tx, outcome) = oneshot::channel();
        let log = TurnLog::new(self.session);
        *self.current.lock().unwrap_or_else(PoisonError::into_inner) = Some(log.clone());
        let closing = LogGuard(self.clone(), log.clone());
        let sink = TurnSink::new(events_tx, log);
        let this = self.clone();
        let prompt = prompt.to_owned();
        self.shared.spawn_turn(async move {
            // Dropped in reverse: the log ends before the agent counts as idle again, and
            // the caller's channel (held by `sink`, which the block owns) closes after both,
            // so a caller that saw its events end finds the session idle.
            let _running = running;
            let _closing = closing;
            let outcome = this.run(&prompt, sent_at, options, accepted, &sink).await;
            // Let go before the end is told, so that a next turn finds the session free.
            hold.release().await;
            let _ = outcome_tx.send(outcome);
        });
        Ok(Turn { id, events, outcome })
    }

    /// The checks, the hold on the session and the slot of a turn being started.
    async fn accept(
        self: &Arc<Self>,
        options: &ChatOptions,
        abort: AbortSignal,
        turn: u64,
    ) -> Result<(Accepted, turn_hold::TurnHold)> {
        // The session must exist before anything is claimed or spent for it, and run here.
        let session = self.shared.stores.sessions.get(&self.agent, &self.session).await?;
        crate::workflow::check_here(
            "session",
            &session.id.to_string(),
            session.node.as_deref(),
            &self.shared.options.node,
        )?;
        // No other node runs a turn of it from here on, until the hold is let go.
        let hold = self.hold_turn(turn).await?;
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
        // A shutdown that began while this turn waited for its slot takes no new turn.
        if self.shared.is_closing() {
            return Err(Error::ShuttingDown);
        }
        Ok((Accepted { live, permit, abort, mode }, hold))
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
}
