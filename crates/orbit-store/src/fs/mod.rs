//! The filesystem store: JSON files and JSONL under one data directory.
//!
//! # Layout
//!
//! ```text
//! <root>/agents/<name>/agent.json                  the agent
//! <root>/agents/<name>/sessions.jsonl              session journal (see `sessions`)
//! <root>/agents/<name>/sessions/<id>.jsonl         a session's messages
//! <root>/agents/<name>/inbox/{pending,claimed,archive,dead}/   inbox (see `inbox`)
//! <root>/agents/<name>/tasks/<id>.json             a task
//! <root>/agents/<name>/runs/<task>/<run>.json      a run record
//! <root>/agents/<name>/memory/YYYY-MM-DD.md        daily memory
//! <root>/workspaces/<name>/                        the agent's working directory (kept on delete)
//! ```
//!
//! Every path is built from an [`AgentName`](crate::AgentName) or a ULID newtype, never from
//! raw input. Blocking file work runs on tokio's blocking pool.

mod agents;
mod inbox;
pub(crate) mod io;
mod memory;
mod sessions;
mod tasks;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use crate::{AgentName, Error, Result, Stores};

/// Settings of the filesystem store.
#[derive(Debug, Clone)]
pub struct FsOptions {
    /// A claim older than this is given back even if its holder's process still lives
    /// (a guard against a reused process id). Must exceed the longest turn.
    pub claim_lease: Duration,
    /// After this many deliveries a released message is set aside as dead.
    pub max_deliveries: u32,
}

impl Default for FsOptions {
    fn default() -> Self {
        Self { claim_lease: Duration::from_secs(6 * 60 * 60), max_deliveries: 3 }
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
    sessions: sessions::JournalCache,
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
        io::ensure_dir(&root.join("agents"))?;
        io::ensure_dir(&root.join("workspaces"))?;
        // Prove the directory is writable now rather than at the first user request.
        let probe = root.join(".write-probe");
        io::write_bytes(&probe, b"ok")?;
        io::remove_file(&probe)?;
        Ok(Self {
            inner: Arc::new(Inner { root, options, sessions: sessions::JournalCache::default() }),
        })
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
}
