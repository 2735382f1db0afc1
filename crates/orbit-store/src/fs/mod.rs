//! The filesystem store: JSON files and JSONL under one data directory.
//!
//! # Layout
//!
//! ```text
//! <root>/agents/<name>/agent.json                  the agent
//! <root>/agents/<name>/sessions.jsonl              session journal (see `sessions`)
//! <root>/agents/<name>/sessions/<id>.jsonl         a session's messages
//! <root>/agents/<name>/inbox/{open,archive,dead}/   inbox (see `inbox`)
//! <root>/agents/<name>/inbox/open.changes.jsonl    change log of `open/` (see `index`)
//! <root>/agents/<name>/inbox/arrivals.*            messages sent, not yet files (see `arrivals`)
//! <root>/agents/<name>/tasks/<id>.json             a task
//! <root>/agents/<name>/tasks/arrivals.*            tasks created, not yet files (see `arrivals`)
//! <root>/agents/<name>/tasks.changes.jsonl         change log of `tasks/` (see `index`)
//! <root>/agents/<name>/runs/<task>/<run>.json      a run record (see `runs`)
//! <root>/agents/.locks/<name>.lock                 the agent's lock (see below)
//! <root>/agents/.trash/                            agents being deleted
//! <root>/instances/<id>.json                       registered server processes
//! <root>/task-changes.jsonl                        the task change feed (see `task_feed`)
//! <root>/agents/<name>/memory/YYYY-MM-DD.md        daily memory
//! <root>/workspaces/<name>/                        the agent's working directory (kept on delete)
//! ```
//!
//! Every path is built from an [`AgentName`](crate::AgentName) or a ULID newtype, never from
//! raw input. Blocking file work runs on tokio's blocking pool.
//!
//! # An agent's lock
//!
//! Every write under an agent's directory holds the agent's lock shared and first checks that
//! the agent exists; creating and deleting the agent hold it exclusively. Deleting renames the
//! whole directory into `.trash/` in that one step and removes it afterwards. So a write either
//! lands before the deletion and goes with it, or finds the agent gone; nothing a racing write
//! does can leave a record behind that a new agent of the same name would inherit.

mod agents;
mod arrivals;
mod data_dir_id;
mod follow;
mod history;
mod inbox;
mod inbox_claims;
mod index;
mod instances;
pub(crate) mod io;
mod memory;
mod runs;
mod session_journal;
mod sessions;
mod sync_rounds;
mod task_feed;
mod tasks;
mod transcripts;

pub use data_dir_id::data_dir_id;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::{AgentName, Error, Result, Stores};

/// Settings of the filesystem store.
#[derive(Debug, Clone)]
pub struct FsOptions {
    /// After this many failed deliveries a released message is set aside as dead.
    pub max_deliveries: u32,
    /// How many finished runs a task keeps; older ones are removed as new ones start.
    pub runs_kept: usize,
}

impl Default for FsOptions {
    fn default() -> Self {
        Self { max_deliveries: 3, runs_kept: 200 }
    }
}

/// The filesystem implementation of every store trait. Cheap to clone.
#[derive(Clone)]
pub struct FsStore {
    inner: Arc<Inner>,
}

pub(crate) struct Inner {
    root: PathBuf,
    options: FsOptions,
    sessions: session_journal::JournalCache,
    /// The message histories of the sessions read last (see `history`).
    histories: history::HistoryCache,
    /// Each agent's pending inbox messages (see `index`).
    inbox_index: index::RecordIndex<crate::InboxMessage>,
    /// Each agent's tasks (see `index`).
    task_index: index::RecordIndex<crate::Task>,
    /// The shared fdatasyncs of the files new records are appended to (see `arrivals`).
    file_syncs: sync_rounds::FileSyncs,
    /// The arrivals found with nothing waiting, for the listings' one-`stat` look (see
    /// `arrivals`).
    quiet_arrivals: arrivals::Quiet,
    /// The last whole listing of every agent's tasks, by the generation of each agent's index
    /// it was joined from (see `tasks`).
    all_tasks: std::sync::Mutex<
        crate::render::JoinedBody<Vec<(crate::AgentName, crate::render::Generation)>, crate::Task>,
    >,
    /// Ticks at every task change made through this store (see `TaskStore::watch_changes`).
    task_changes: tokio::sync::watch::Sender<u64>,
}

impl FsStore {
    /// Opens (making if needed) a data directory with default options.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        Self::open_with(root, FsOptions::default())
    }

    /// Opens (making if needed) a data directory, checking that it is writable.
    pub fn open_with(root: impl Into<PathBuf>, options: FsOptions) -> Result<Self> {
        let root = root.into();
        io::ensure_dir(&root)?;
        if io::make_private(&root)? {
            tracing::warn!(
                path = %root.display(),
                "the data directory was readable by other users; it is now private to its owner (0700)"
            );
        }
        io::ensure_dir(&root.join("agents").join(".locks"))?;
        io::ensure_dir(&root.join("agents").join(".trash"))?;
        io::ensure_dir(&root.join("workspaces"))?;
        io::ensure_dir(&root.join("instances"))?;
        // Prove the directory is writable now rather than at the first user request.
        let probe = root.join(".write-probe");
        io::write_bytes(&probe, b"ok")?;
        io::remove_file(&probe)?;
        let inner = Inner {
            root,
            options,
            sessions: session_journal::JournalCache::default(),
            histories: history::HistoryCache::default(),
            inbox_index: index::RecordIndex::default(),
            task_index: index::RecordIndex::default(),
            file_syncs: sync_rounds::FileSyncs::default(),
            quiet_arrivals: arrivals::Quiet::default(),
            all_tasks: std::sync::Mutex::default(),
            task_changes: tokio::sync::watch::channel(0).0,
        };
        // Agents whose deletion a crash interrupted.
        inner.empty_trash();
        inner.migrate_inboxes();
        Ok(Self { inner: Arc::new(inner) })
    }

    /// The data directory.
    pub fn root(&self) -> &Path {
        &self.inner.root
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

    /// Runs blocking file work off the async threads.
    async fn blocking<T, F>(&self, work: F) -> Result<T>
    where
        T: Send + 'static,
        F: FnOnce(&Inner) -> Result<T> + Send + 'static,
    {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || work(&inner))
            .await
            .map_err(|err| Error::Worker(err.to_string()))?
    }
}

impl Inner {
    fn agent_dir(&self, agent: &AgentName) -> PathBuf {
        self.root.join("agents").join(agent.as_str())
    }

    fn agent_exists(&self, agent: &AgentName) -> bool {
        self.agent_dir(agent).join("agent.json").is_file()
    }

    fn require_agent(&self, agent: &AgentName) -> Result<()> {
        if self.agent_exists(agent) { Ok(()) } else { Err(Error::not_found("agent", agent)) }
    }

    fn agent_lock(&self, agent: &AgentName) -> PathBuf {
        self.root.join("agents").join(".locks").join(format!("{agent}.lock"))
    }

    /// Runs a write under the agent's directory: the agent must exist, and cannot be deleted
    /// until `body` returns (see the module docs).
    fn with_agent<T>(&self, agent: &AgentName, body: impl FnOnce() -> Result<T>) -> Result<T> {
        io::with_lock_mode(&self.agent_lock(agent), false, || {
            self.require_agent(agent)?;
            body()
        })
    }

    /// Runs `body` with every write to the agent excluded (creation and deletion).
    fn with_agent_exclusive<T>(
        &self,
        agent: &AgentName,
        body: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        io::with_lock_mode(&self.agent_lock(agent), true, body)
    }

    /// Moves an agent's directory out of the way in one step; its removal comes later.
    fn trash_agent_dir(&self, agent: &AgentName) -> Result<bool> {
        let trash = self
            .root
            .join("agents")
            .join(".trash")
            .join(format!("{agent}.{}", crate::ids::new_ulid()));
        io::rename(&self.agent_dir(agent), &trash)
    }

    /// Removes what deletions left in the trash.
    fn empty_trash(&self) {
        let trash = self.root.join("agents").join(".trash");
        let Ok(entries) = std::fs::read_dir(&trash) else { return };
        for entry in entries.flatten() {
            if let Err(err) = io::remove_dir_all(&entry.path()) {
                tracing::warn!(error = %err, "could not remove a deleted agent's files");
            }
        }
    }
}
