//! # orbit-store-postgres
//!
//! Every store trait of `orbit-store` on PostgreSQL, so that several Orbit nodes share one
//! database: [`PgStore`]. It passes the same contract suite as the filesystem store.
//!
//! - Opening connects a pool sized by [`PgOptions::pool_size`] and applies the embedded,
//!   versioned schema migrations under an advisory lock (`migrate`), so nodes starting at once
//!   migrate once; an applied migration edited since, or a schema a newer Orbit migrated,
//!   refuses the start.
//! - Every operation is one transaction (`db`), retried when the failure was transient and
//!   safe to retry, under a deadline: a database that is away makes the operation fail with
//!   `Error::Unavailable` rather than hang, and the pool reconnects when it is back.
//! - Inbox claims are statements (`inbox`): a batch is claimed by one `UPDATE` over a
//!   `FOR UPDATE SKIP LOCKED` selection, leases are columns, and settling names the token.
//! - Records read and written whole (agents, sessions, tasks, runs) are JSON documents whose
//!   rows are locked (`SELECT ... FOR UPDATE`) while one operation changes them, so the
//!   domain rules are the ones `orbit-store` applies in memory.
//!
//! - Task changes made by other nodes wake this node's scheduler through `LISTEN/NOTIFY`
//!   (`notify`), and nodes tell each other of deleted agents and sessions and of turns to
//!   abort on the same connection (`InstanceStore::signal`), and relay their news in batches
//!   (`news`).
//!
//! What stays on the node: the agents' working directories (under [`PgOptions::workspaces`]).

mod agents;
mod db;
mod error;
mod inbox;
mod instances;
mod memory;
mod migrate;
mod news;
mod notify;
mod sessions;
mod tasks;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use orbit_store::{FsOptions, Stores};

pub use error::{Error, Result};

/// Signals a slow listener of this node may fall behind by before it misses some (it is told
/// it did: a signal is never relied on alone).
const SIGNALS_BUFFERED: usize = 1024;

/// Settings of the PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// `postgresql://user:password@host:port/database` (or the key=value form).
    pub url: String,
    /// The most connections this node holds open.
    pub pool_size: usize,
    /// How long getting a connection may take (waiting for a free one, or connecting) before
    /// the operation fails as unavailable: a database that is down is known this soon.
    pub connect_timeout: Duration,
    /// How long one operation may take in all, retries included, before it fails as
    /// unavailable: a database that stopped answering is known this late (loading every task
    /// of a large installation at start is one operation, so it is generous).
    pub operation_timeout: Duration,
    /// Dead letters and runs kept, as for the filesystem store.
    pub records: FsOptions,
    /// Where this node makes the agents' working directories.
    pub workspaces: PathBuf,
}

impl PgOptions {
    /// Defaults for `url`, with working directories under `workspaces`.
    pub fn new(url: impl Into<String>, workspaces: impl Into<PathBuf>) -> Self {
        Self {
            url: url.into(),
            pool_size: 16,
            connect_timeout: Duration::from_secs(5),
            operation_timeout: Duration::from_secs(60),
            records: FsOptions::default(),
            workspaces: workspaces.into(),
        }
    }
}

/// Every store trait on one PostgreSQL database. Cheap to clone.
#[derive(Clone)]
pub struct PgStore {
    pub(crate) inner: Arc<Inner>,
}

pub(crate) struct Inner {
    pub(crate) pool: Pool,
    pub(crate) options: PgOptions,
    /// The change feed's identity in this database.
    pub(crate) feed: ulid::Ulid,
    /// Ticks at every task change made through this store (see `TaskStore::watch_changes`).
    pub(crate) task_changes: tokio::sync::watch::Sender<u64>,
    /// Every node's signals, as the listening connection receives them
    /// (`InstanceStore::watch_signals`).
    pub(crate) signals: tokio::sync::broadcast::Sender<orbit_store::Signal>,
    /// Every node's relayed news, apart from the signals so that a flood of it never crowds
    /// out a control signal, and word of news lost (`InstanceStore::watch_activity`).
    pub(crate) activity: tokio::sync::broadcast::Sender<orbit_store::Relayed>,
}

impl PgStore {
    /// Connects to the database and brings its schema up to date.
    pub async fn open(options: PgOptions) -> Result<Self> {
        let mut config: tokio_postgres::Config =
            options.url.parse().map_err(|err| Error::InvalidUrl(format!("{err}")))?;
        let bound = options.connect_timeout;
        config.connect_timeout(bound);
        if config.get_application_name().is_none() {
            config.application_name("orbit");
        }
        let manager = Manager::from_config(
            config.clone(),
            tokio_postgres::NoTls,
            ManagerConfig { recycling_method: RecyclingMethod::Fast },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(bound))
            .create_timeout(Some(bound))
            .recycle_timeout(Some(bound))
            .build()
            .map_err(|err| Error::Pool(err.to_string()))?;
        // The listening connection is named apart from the pool's, by process, so that an
        // operator (or a test) looking at `pg_stat_activity` can tell which node it is.
        let mut listener_config = config.clone();
        let name = config.get_application_name().unwrap_or("orbit");
        listener_config.application_name(format!("{name} listener (pid {})", std::process::id()));
        // The listener only reads: the kernel notices a peer gone silent after half a minute
        // rather than the default two hours (and `notify` asks it for answers besides).
        listener_config.keepalives_idle(notify::SILENT_PEER);
        listener_config.tcp_user_timeout(notify::SILENT_PEER);
        let feed = db::within(options.operation_timeout, migrate::run(&pool)).await?;
        let inner = Inner {
            pool,
            options,
            feed,
            task_changes: tokio::sync::watch::channel(0).0,
            signals: tokio::sync::broadcast::channel(SIGNALS_BUFFERED).0,
            activity: tokio::sync::broadcast::channel(SIGNALS_BUFFERED).0,
        };
        let inner = Arc::new(inner);
        tokio::spawn(notify::listen(listener_config, Arc::downgrade(&inner)));
        Ok(Self { inner })
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

    /// Tells this node's schedulers that a task changed.
    pub(crate) fn tick_task_changes(&self) {
        self.inner.task_changes.send_modify(|ticks| *ticks = ticks.wrapping_add(1));
    }
}
