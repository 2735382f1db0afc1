//! The in-memory store: every store trait over maps behind one mutex, for tests that are about
//! timing and ownership rather than files.
//!
//! It keeps the filesystem store's semantics (the contract suite runs against both), and
//! gets its atomicity for free: every operation is one critical section of one
//! `std::sync::Mutex`, never held across an `.await` (mini-redis's rationale for a plain
//! mutex over short sections). So a claim, a slot, a run start or a lease check cannot
//! interleave with another, as under the filesystem store's locks.
//!
//! What it deliberately does not do: survive its process, or be shared by two processes. Tests
//! of crashes, of several processes on one data directory and of file damage stay on
//! [`FsStore`](crate::FsStore). Agents' working directories are the user's work, not records,
//! so they are real directories even here, made under the directory the store is given.

mod agents;
mod inbox;
mod sessions;
mod tasks;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use async_trait::async_trait;
use time::macros::format_description;
use time::{Date, OffsetDateTime, UtcOffset};

use crate::{
    Agent, AgentName, Error, FsOptions, InboxMessage, Instance, InstanceId, InstanceStore,
    MemoryHit, MemoryStore, NodeIdentity, Result, Run, RunId, Session, SessionId, SessionMessage,
    Stores, Task, TaskId, timestamp,
};

/// A registration expired this long ago is dropped by the next listing, as the filesystem
/// store prunes its instance files.
const PRUNE_AFTER: Duration = Duration::from_secs(60 * 60);

const DAY_FORMAT: &[time::format_description::BorrowedFormatItem<'_>] =
    format_description!("[year]-[month]-[day]");

/// Every store trait in memory. Cheap to clone; clones share one state, like two handles on
/// one data directory in one process.
#[derive(Clone)]
pub struct MemStore {
    inner: Arc<Inner>,
}

struct Inner {
    /// Where agents' working directories are made.
    workspaces: PathBuf,
    /// The same settings as the filesystem store's (dead letters, runs kept).
    options: FsOptions,
    state: Mutex<State>,
    /// Ticks at every task change (see `TaskStore::watch_changes`).
    task_changes: tokio::sync::watch::Sender<u64>,
}

#[derive(Default)]
struct State {
    agents: BTreeMap<AgentName, AgentRecord>,
    instances: BTreeMap<InstanceId, Instance>,
    feed: tasks::Feed,
}

/// An agent and everything of it: deleting the agent drops the lot in one step, so nothing
/// reaches a later agent of the same name.
struct AgentRecord {
    agent: Agent,
    sessions: BTreeMap<SessionId, SessionRecord>,
    inbox: BTreeMap<crate::MessageId, InboxMessage>,
    tasks: BTreeMap<TaskId, TaskRecord>,
    memory: BTreeMap<Date, String>,
}

struct SessionRecord {
    session: Session,
    messages: Vec<SessionMessage>,
    transcript: Vec<crate::TranscriptEntry>,
}

struct TaskRecord {
    task: Task,
    runs: BTreeMap<RunId, Run>,
}

impl MemStore {
    /// An empty store whose agents' working directories are made under `workspaces`.
    pub fn new(workspaces: impl Into<PathBuf>) -> Self {
        Self::with_options(workspaces, FsOptions::default())
    }

    /// An empty store with the given dead-letter and run-retention settings.
    pub fn with_options(workspaces: impl Into<PathBuf>, options: FsOptions) -> Self {
        let inner = Inner {
            workspaces: workspaces.into(),
            options,
            state: Mutex::new(State::default()),
            task_changes: tokio::sync::watch::channel(0).0,
        };
        Self { inner: Arc::new(inner) }
    }

    /// This store behind every store trait.
    pub fn stores(&self) -> Stores {
        Stores {
            agents: Arc::new(self.clone()),
            sessions: Arc::new(self.clone()),
            inbox: Arc::new(self.clone()),
            tasks: Arc::new(self.clone()),
            memory: Arc::new(self.clone()),
            instances: Arc::new(self.clone()),
        }
    }

    /// The state, for one operation. A panic in another holder cannot leave it half-changed
    /// in a way the next caller must not see (every change is applied after its checks), so
    /// a poisoned lock is taken over.
    fn state(&self) -> MutexGuard<'_, State> {
        self.inner.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

impl State {
    fn agent(&self, name: &AgentName) -> Result<&AgentRecord> {
        self.agents.get(name).ok_or_else(|| Error::not_found("agent", name))
    }

    fn agent_mut(&mut self, name: &AgentName) -> Result<&mut AgentRecord> {
        self.agents.get_mut(name).ok_or_else(|| Error::not_found("agent", name))
    }
}

#[async_trait]
impl MemoryStore for MemStore {
    async fn append(&self, agent: &AgentName, at: OffsetDateTime, entry: &str) -> Result<()> {
        let mut state = self.state();
        let record = state.agent_mut(agent)?;
        let at = at.to_offset(UtcOffset::UTC);
        // The same text the filesystem store appends, so a day reads the same from both.
        let heading = format!("## {:02}:{:02}:{:02} UTC", at.hour(), at.minute(), at.second());
        let day = record.memory.entry(at.date()).or_default();
        day.push_str(&format!("{heading}\n\n{}\n\n", entry.trim_end()));
        Ok(())
    }

    async fn read_day(&self, agent: &AgentName, day: Date) -> Result<Option<String>> {
        Ok(self.state().agent(agent)?.memory.get(&day).cloned())
    }

    async fn list_days(&self, agent: &AgentName) -> Result<Vec<Date>> {
        Ok(self.state().agent(agent)?.memory.keys().copied().collect())
    }

    async fn search(&self, agent: &AgentName, query: &str, limit: usize) -> Result<Vec<MemoryHit>> {
        let needle = query.trim().to_lowercase();
        if needle.is_empty() {
            return Err(Error::Invalid("search query must not be empty".into()));
        }
        let state = self.state();
        let mut hits = Vec::new();
        for (day, text) in state.agent(agent)?.memory.iter().rev() {
            let date = day.format(DAY_FORMAT).unwrap_or_default();
            for (index, line) in text.lines().enumerate() {
                if line.to_lowercase().contains(&needle) {
                    hits.push(MemoryHit { date: date.clone(), line: index + 1, text: line.into() });
                    if hits.len() >= limit {
                        return Ok(hits);
                    }
                }
            }
        }
        Ok(hits)
    }
}

#[async_trait]
impl InstanceStore for MemStore {
    async fn register(
        &self,
        id: InstanceId,
        host: &str,
        pid: u32,
        node: &NodeIdentity,
        address: Option<&str>,
        until: OffsetDateTime,
    ) -> Result<Instance> {
        let now = timestamp::now();
        let mut state = self.state();
        let registered: Vec<Instance> = state.instances.values().cloned().collect();
        node.check_unique(&id, &registered, now)?;
        let instance = Instance::registered(id, host, pid, node, address, now, until);
        state.instances.insert(id, instance.clone());
        Ok(instance)
    }

    async fn heartbeat(&self, id: &InstanceId, until: OffsetDateTime) -> Result<Instance> {
        let now = timestamp::now();
        let mut state = self.state();
        let registered: Vec<Instance> = state.instances.values().cloned().collect();
        let instance =
            state.instances.get_mut(id).ok_or_else(|| Error::not_found("instance", id))?;
        instance.check_renewal(&registered, now)?;
        instance.heartbeat_at = now;
        instance.until = until;
        Ok(instance.clone())
    }

    async fn list(&self) -> Result<Vec<Instance>> {
        let now = timestamp::now();
        let mut state = self.state();
        state.instances.retain(|_, instance| now - instance.until <= PRUNE_AFTER);
        Ok(state.instances.values().cloned().collect())
    }

    async fn deregister(&self, id: &InstanceId) -> Result<()> {
        self.state().instances.remove(id);
        Ok(())
    }
}
