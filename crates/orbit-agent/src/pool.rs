//! The pool of session agents, keyed `agentName:sessionId`, with a cap on live CLI processes
//! and idle eviction.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use orbit_store::{AgentName, InstanceId, SessionId, Stores};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::task::TaskTracker;

use crate::prompt::TurnKind;
use crate::runtime::Runtime;
use crate::session::SessionAgent;
use crate::{Error, Result};

/// How often a turn waiting for a process slot looks again for an idle process to end.
const SLOT_RECHECK: Duration = Duration::from_millis(250);

/// Limits and timings of the pool.
#[derive(Debug, Clone)]
pub struct PoolOptions {
    /// Most CLI processes alive at once (running or warm).
    pub max_processes: usize,
    /// How long a turn waits for a process slot before failing with `Busy`.
    pub slot_wait: Duration,
    /// A session idle this long has its CLI process ended.
    pub idle_ttl: Duration,
    /// How long an interrupted turn may take to end before its process is killed.
    pub abort_grace: Duration,
    /// The same when the turn is aborted by a shutdown, which has a deadline to keep.
    pub shutdown_abort_grace: Duration,
    /// How long an `ask` permission request of a chat waits for a person before it is denied.
    pub ask_timeout: Duration,
    /// The same for a scheduled run's turn, where nobody is watching as it asks: a person
    /// finds the request in the pending approvals and has longer to answer.
    pub run_ask_timeout: Duration,
    /// This server process's registration: inbox claims name it.
    pub instance: InstanceId,
    /// The name of this node (the data directory's, so every process on one directory has
    /// the same): sessions and tasks with a worktree here are pinned to it.
    pub node: String,
    /// How long an inbox claim lasts unless its turn renews it (it renews at a third of this
    /// while it lives); a claim of a server that died is taken back after this long.
    pub claim_lease: Duration,
    /// Process slots that scheduled runs may not take, kept for people's chats (at most
    /// `max_processes - 1`, so scheduled runs always have one).
    pub reserved_for_chats: usize,
    /// The longest a turn may run when its caller sets no timeout: a CLI that hangs must not
    /// hold its session, its process slot and its inbox claims for ever.
    pub turn_timeout: Duration,
    /// Where turns, inbox claims, approvals and session changes are announced.
    pub activity: crate::ActivityBus,
}

impl Default for PoolOptions {
    fn default() -> Self {
        Self {
            max_processes: 8,
            slot_wait: Duration::from_secs(10),
            idle_ttl: Duration::from_secs(10 * 60),
            abort_grace: Duration::from_secs(5),
            shutdown_abort_grace: Duration::from_secs(2),
            ask_timeout: Duration::from_secs(60),
            run_ask_timeout: Duration::from_secs(10 * 60),
            instance: InstanceId::new(),
            node: "local".into(),
            claim_lease: Duration::from_secs(30),
            reserved_for_chats: 1,
            turn_timeout: Duration::from_secs(30 * 60),
            activity: crate::ActivityBus::default(),
        }
    }
}

/// What every session agent of a pool shares.
pub(crate) struct PoolShared {
    pub(crate) stores: Stores,
    pub(crate) runtime: Arc<dyn Runtime>,
    pub(crate) options: PoolOptions,
    slots: Arc<Semaphore>,
    /// The slots scheduled runs may take (fewer than `slots` by the chats' reserve); a
    /// scheduled turn holds one of these beside its process slot.
    scheduled_slots: Arc<Semaphore>,
    /// Every turn started, so that shutdown can wait for them.
    turns: TaskTracker,
    /// Where turns run: the runtime the pool was made on, which outlives request handlers.
    runtime_handle: Option<tokio::runtime::Handle>,
    closing: AtomicBool,
    agents: Mutex<HashMap<(AgentName, SessionId), Arc<SessionAgent>>>,
    /// Held while a workdir changes and while a session's worktree is made, so that no
    /// worktree appears between the check that an agent has none and the change.
    worktree_changes: tokio::sync::Mutex<()>,
}

impl PoolShared {
    fn snapshot(&self) -> Vec<Arc<SessionAgent>> {
        self.agents.lock().unwrap_or_else(PoisonError::into_inner).values().cloned().collect()
    }

    /// The session agent of `agent:session`, made on first use.
    pub(crate) fn agent(
        self: &Arc<Self>,
        agent: &AgentName,
        session: &SessionId,
    ) -> Arc<SessionAgent> {
        let mut agents = self.agents.lock().unwrap_or_else(PoisonError::into_inner);
        agents
            .entry((agent.clone(), *session))
            .or_insert_with(|| Arc::new(SessionAgent::new(agent.clone(), *session, self.clone())))
            .clone()
    }

    pub(crate) fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    /// How long an interrupted turn may take to end before its process is killed.
    pub(crate) fn abort_grace(&self) -> Duration {
        if self.is_closing() { self.options.shutdown_abort_grace } else { self.options.abort_grace }
    }

    /// Runs a turn on the pool's runtime, tracked for shutdown.
    pub(crate) fn spawn_turn(&self, turn: impl Future<Output = ()> + Send + 'static) {
        let turn = self.turns.track_future(turn);
        match &self.runtime_handle {
            Some(handle) => drop(handle.spawn(turn)),
            None => drop(tokio::spawn(turn)),
        }
    }

    /// A process slot: free at once, or by ending the longest-idle warm process, or within
    /// the wait; `Busy` otherwise. A scheduled turn also needs one of the slots not kept for
    /// chats.
    pub(crate) async fn acquire_process_slot(
        &self,
        agent: &AgentName,
        session: &SessionId,
        kind: TurnKind,
    ) -> Result<ProcessSlot> {
        let share = match kind {
            TurnKind::Chat => None,
            TurnKind::ScheduledTask => {
                let share = self.scheduled_slots.clone();
                match tokio::time::timeout(self.options.slot_wait, share.acquire_owned()).await {
                    Ok(Ok(permit)) => Some(permit),
                    _ => return Err(Error::Busy(self.options.max_processes)),
                }
            }
        };
        let process = self.acquire_slot(agent, session).await?;
        Ok(ProcessSlot { _process: process, _share: share })
    }

    async fn acquire_slot(
        &self,
        agent: &AgentName,
        session: &SessionId,
    ) -> Result<OwnedSemaphorePermit> {
        let until = tokio::time::Instant::now() + self.options.slot_wait;
        loop {
            if let Ok(permit) = self.slots.clone().try_acquire_owned() {
                return Ok(permit);
            }
            // A process whose turn just ended keeps its slot while it stays warm; ending the
            // longest-idle one makes room. Looked for again while waiting, since a busy process
            // may become idle meanwhile.
            if self.end_an_idle_process(agent, session).await {
                continue;
            }
            let now = tokio::time::Instant::now();
            if now >= until || self.is_closing() {
                return Err(Error::Busy(self.options.max_processes));
            }
            let wait = (until - now).min(SLOT_RECHECK);
            if let Ok(Ok(permit)) =
                tokio::time::timeout(wait, self.slots.clone().acquire_owned()).await
            {
                return Ok(permit);
            }
        }
    }

    /// Ends the longest-idle warm process other than this session's; whether one was ended.
    async fn end_an_idle_process(&self, agent: &AgentName, session: &SessionId) -> bool {
        let mut idle: Vec<_> = self
            .snapshot()
            .into_iter()
            .filter(|a| !(a.is_running() || (a.agent() == agent && a.session() == *session)))
            .collect();
        idle.sort_by_key(|a| std::cmp::Reverse(a.idle_for()));
        for candidate in idle {
            if candidate.stop_process(false).await {
                tracing::debug!(agent = %candidate.agent(), session = %candidate.session(), "ended an idle CLI process to make room");
                return true;
            }
        }
        false
    }
}

/// Takes a session agent out of service: its turn aborted and settled, its process ended, and
/// no turn started on it afterwards.
async fn retire(agent: &SessionAgent) {
    while !agent.retire() {
        agent.stop_process(true).await;
    }
    agent.stop_process(true).await;
}

/// A live process's right to exist: a process slot, and for a scheduled turn's process one
/// of the slots scheduled runs may take.
pub(crate) struct ProcessSlot {
    _process: OwnedSemaphorePermit,
    _share: Option<OwnedSemaphorePermit>,
}

/// The session agents of a server, created on demand.
#[derive(Clone)]
pub struct AgentPool {
    shared: Arc<PoolShared>,
}

impl AgentPool {
    /// A pool whose turns run on the current tokio runtime (made outside one, on the
    /// runtime of whoever starts each turn).
    pub fn new(stores: Stores, runtime: Arc<dyn Runtime>, options: PoolOptions) -> Self {
        let slots = Arc::new(Semaphore::new(options.max_processes));
        let scheduled = options.max_processes.saturating_sub(
            options.reserved_for_chats.min(options.max_processes.saturating_sub(1)),
        );
        Self {
            shared: Arc::new(PoolShared {
                stores,
                runtime,
                options,
                slots,
                scheduled_slots: Arc::new(Semaphore::new(scheduled)),
                turns: TaskTracker::new(),
                runtime_handle: tokio::runtime::Handle::try_current().ok(),
                closing: AtomicBool::new(false),
                agents: Mutex::new(HashMap::new()),
                worktree_changes: tokio::sync::Mutex::new(()),
            }),
        }
    }

    /// The session agent of `agent:session`, made on first use.
    pub fn get(&self, agent: &AgentName, session: &SessionId) -> Arc<SessionAgent> {
        self.shared.agent(agent, session)
    }

    /// Every tool call waiting for a person, of one agent or of all, oldest first: those of
    /// this process's turns, and those the store shares from the other live nodes' (none
    /// but this process's own on a store no other node shares, or while the store cannot
    /// answer: this node's own are listed all the same, and the failure is logged).
    pub async fn pending_approvals(
        &self,
        agent: Option<&AgentName>,
    ) -> Vec<orbit_store::PendingApproval> {
        let wanted = |approval: &orbit_store::PendingApproval| {
            agent.is_none_or(|name| &approval.agent == name)
        };
        let now = orbit_store::timestamp::now();
        let shared = match self.stores().instances.shared_approvals(now).await {
            Ok(shared) => shared.unwrap_or_default(),
            Err(err) => {
                tracing::warn!(error = %err, "could not list the other nodes' waiting tool calls: listing this node's only");
                Vec::new()
            }
        };
        let mut all: Vec<_> = self
            .local_pending_approvals()
            .into_iter()
            .filter(|a| wanted(a))
            // This process's own are as it holds them: its copies in the store may lag.
            .chain(shared.into_iter().filter(|a| a.instance != self.instance() && wanted(a)))
            .collect();
        all.sort_by(|a, b| a.request_id.cmp(&b.request_id));
        all
    }

    /// The tool calls waiting for a person in this process's turns.
    pub fn local_pending_approvals(&self) -> Vec<orbit_store::PendingApproval> {
        self.shared.snapshot().into_iter().flat_map(|a| a.pending_approvals()).collect()
    }

    /// Whether a turn of `agent` runs in this process now.
    pub fn agent_is_running(&self, agent: &AgentName) -> bool {
        self.shared.snapshot().iter().any(|a| a.agent() == agent && a.is_running())
    }

    /// Where the pool's turns, claims, approvals and session changes are announced.
    pub fn activity(&self) -> &crate::ActivityBus {
        &self.shared.options.activity
    }

    /// This server process's registration, which its inbox claims and signals name.
    pub fn instance(&self) -> InstanceId {
        self.shared.options.instance
    }

    /// This node's name, which pins the sessions and tasks whose worktrees it holds.
    pub fn node(&self) -> &str {
        &self.shared.options.node
    }

    /// Waits for the pool's turn to change a workdir or make a session's worktree.
    pub(crate) async fn lock_worktree_changes(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.shared.worktree_changes.lock().await
    }

    /// The stores the pool's turns write to.
    pub fn stores(&self) -> &Stores {
        &self.shared.stores
    }

    /// The session agent if it is in the pool.
    pub fn find(&self, agent: &AgentName, session: &SessionId) -> Option<Arc<SessionAgent>> {
        self.shared
            .agents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&(agent.clone(), *session))
            .cloned()
    }

    pub fn has(&self, agent: &AgentName, session: &SessionId) -> bool {
        self.find(agent, session).is_some()
    }

    /// How many session agents the pool holds.
    pub fn size(&self) -> usize {
        self.shared.agents.lock().unwrap_or_else(PoisonError::into_inner).len()
    }

    /// Removes a session agent, aborting its turn and ending its process.
    pub async fn release(&self, agent: &AgentName, session: &SessionId) {
        let removed = self
            .shared
            .agents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&(agent.clone(), *session));
        if let Some(removed) = removed {
            retire(&removed).await;
        }
    }

    /// Removes a deleted session's agent and forgets its CLI state.
    pub async fn forget_session(&self, agent: &AgentName, session: &SessionId) {
        self.release(agent, session).await;
        self.shared.runtime.forget(&format!("{agent}/{session}")).await;
    }

    /// Removes a deleted agent's session agents and forgets all of its CLI state.
    pub async fn forget_agent(&self, agent: &AgentName) {
        self.release_agent(agent).await;
        self.shared.runtime.forget(agent.as_str()).await;
    }

    /// Removes every session agent of an agent.
    pub async fn release_agent(&self, agent: &AgentName) {
        let removed: Vec<_> = {
            let mut agents = self.shared.agents.lock().unwrap_or_else(PoisonError::into_inner);
            let keys: Vec<_> = agents.keys().filter(|(name, _)| name == agent).cloned().collect();
            keys.into_iter().filter_map(|key| agents.remove(&key)).collect()
        };
        for session in removed {
            retire(&session).await;
        }
    }

    /// Ends the processes of sessions idle longer than the TTL and drops those agents.
    pub async fn evict_idle(&self) -> usize {
        let ttl = self.shared.options.idle_ttl;
        let mut evicted = 0;
        for agent in self.shared.snapshot() {
            if agent.is_running() || agent.idle_for() < ttl {
                continue;
            }
            agent.stop_process(false).await;
            let mut agents = self.shared.agents.lock().unwrap_or_else(PoisonError::into_inner);
            let key = (agent.agent().clone(), agent.session());
            // Retired under the map's lock: a turn that starts on this agent later is handed
            // to the session's next agent instead, so one session never has two.
            if agents.get(&key).is_some_and(|a| Arc::ptr_eq(a, &agent) && a.retire()) {
                agents.remove(&key);
                evicted += 1;
            }
        }
        evicted
    }

    /// Evicts idle sessions every half TTL until `shutdown` resolves.
    pub fn spawn_eviction(
        &self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> tokio::task::JoinHandle<()> {
        let pool = self.clone();
        tokio::spawn(async move {
            tokio::pin!(shutdown);
            let period = pool.shared.options.idle_ttl / 2;
            loop {
                tokio::select! {
                    () = tokio::time::sleep(period) => { pool.evict_idle().await; }
                    () = &mut shutdown => return,
                }
            }
        })
    }

    /// Shuts down in order: refuses new turns, lets running turns finish until `deadline`,
    /// aborts the rest and waits for them to settle and record themselves, then ends every
    /// CLI process side by side.
    pub async fn shutdown(&self, deadline: Duration) {
        self.shared.closing.store(true, Ordering::SeqCst);
        self.shared.turns.close();
        if tokio::time::timeout(deadline, self.shared.turns.wait()).await.is_err() {
            let running: Vec<_> =
                self.shared.snapshot().into_iter().filter(|a| a.is_running()).collect();
            tracing::warn!(turns = running.len(), "aborting turns still running at shutdown");
            for agent in &running {
                let _ = agent.abort();
            }
            // An aborted turn ends within the grace (its process is killed then), and then
            // settles its claims and records itself.
            let settle = self.shared.options.shutdown_abort_grace + Duration::from_secs(2);
            if tokio::time::timeout(settle, self.shared.turns.wait()).await.is_err() {
                tracing::error!("turns did not settle after being aborted");
            }
        }
        let agents: Vec<_> = self
            .shared
            .agents
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain()
            .map(|(_, a)| a)
            .collect();
        let stops = agents.iter().map(|agent| agent.stop_process(true));
        // Bounded: a process is killed at the latest when its agent is dropped.
        let limit = self.shared.options.shutdown_abort_grace + Duration::from_secs(3);
        if tokio::time::timeout(limit, futures_util::future::join_all(stops)).await.is_err() {
            tracing::warn!(
                "CLI processes did not end in time; they are killed as the server exits"
            );
        }
    }
}
