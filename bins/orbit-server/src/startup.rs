//! The composition root: the only place that names concrete implementations.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::dev::Server;
use actix_web::web::Data;
use orbit_agent::claude::{ClaudeCli, ClaudeCliConfig, credentials};
use orbit_agent::{ActivityBus, AgentPool, PoolOptions};
use orbit_api::{AllowedHosts, AppState};
use orbit_scheduler::{AgentRunner, Scheduler, SchedulerOptions, SystemClock};
use orbit_store::{FsStore, InstanceId, NodeIdentity, Stores};
use orbit_store_postgres::{PgOptions, PgStore};

use tokio_util::sync::CancellationToken;

use crate::clock::Verdict;
use crate::config::Settings;
use crate::listener::ListenerOptions;
use crate::registration::{HeartbeatStop, Registration, heartbeat, hostname};

/// How long running turns may go on after a shutdown signal before they are aborted. With
/// the abort's grace and the CLIs' exit this keeps a stop under 10 s, inside a supervisor's
/// usual stop timeout (docker's is 10 s), after which would come a SIGKILL.
const TURN_DEADLINE: Duration = Duration::from_secs(4);

/// How long a stop waits for its last words to the store: the relay's last activity and
/// the deregistration (a database that is away would make each wait its full deadline).
const LAST_WORDS: Duration = Duration::from_secs(2);
/// How long an aborted turn's CLI gets to stop before it is killed, at shutdown.
const SHUTDOWN_ABORT_GRACE: Duration = Duration::from_secs(2);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot use data directory {path}: {source}")]
    DataDir { path: std::path::PathBuf, source: orbit_store::Error },
    #[error("cannot use the database: {0}")]
    Database(#[from] orbit_store_postgres::Error),
    #[error("cannot listen on {addr}: {source} (is another server using the port?)")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error(
        "refusing to listen on {0} without an API token: set --api-token or ORBIT_API_TOKEN, or bind to 127.0.0.1"
    )]
    ExposedWithoutToken(std::net::SocketAddr),
    #[error(transparent)]
    TokenFile(#[from] crate::config::TokenFileError),
    #[error("cannot keep this node's name in {path}: {source}")]
    NodeName { path: std::path::PathBuf, source: std::io::Error },
    #[error(
        "--node-name is '{asked}' but this data directory belongs to node '{kept}' ({path}): its sessions and tasks with worktrees are pinned to that name. Drop --node-name (ORBIT_NODE_NAME), or start with an empty data directory"
    )]
    NodeRenamed { asked: String, kept: String, path: std::path::PathBuf },
    #[error(
        "another node of this database is running under this node's name, on another data directory: {0}. Give each node's data directory a name of its own (--node-name / ORBIT_NODE_NAME at its first start); processes sharing one data directory share its name. If that node is this one, restarted on a new data directory, or it stopped less than a lease (--lease-secs) ago, its registration has yet to lapse: retry once it has"
    )]
    NodeNameTaken(String),
    #[error(
        "this machine's clock is {0}, more than a node may be off ({1} ms: a sixth of --lease-secs, 500 ms at most): nodes judge each other's leases by their clocks, so a clock that far off could take work another node holds. Synchronize this machine's clock (NTP: chrony or systemd-timesyncd), or the database server's if it is the one that is off (then every node says so), and start again"
    )]
    ClockOffset(String, u128),
    #[error("cannot read the database's clock: {0}")]
    Clock(orbit_store::Error),
    #[error("cannot register this node: {0}")]
    Register(orbit_store::Error),
    #[error(
        "this node advertises {address} (--advertise-url), but would refuse a request for that host itself, so every watcher another node forwards here would be refused: add its host and port to --allowed-host (ORBIT_ALLOWED_HOSTS)"
    )]
    AdvertisedHostRefused { address: String },
    #[error("{0} (--workdir-root / ORBIT_WORKDIR_ROOTS)")]
    WorkdirRoot(#[from] orbit_agent::workdir::RootError),
}

/// The records' store: PostgreSQL when a database URL is given (shared by every node on it),
/// else files in the data directory. The data directory is made either way: it holds what
/// is local to this node (the agents' working directories, the CLI's state).
async fn open_stores(
    settings: &Settings,
    data_dir: &std::path::Path,
) -> Result<Stores, StartupError> {
    let data_error = |source| StartupError::DataDir { path: data_dir.to_owned(), source };
    let Some(url) = &settings.database_url else {
        return Ok(FsStore::open(data_dir).map_err(data_error)?.stores());
    };
    make_private_dir(data_dir).map_err(data_error)?;
    let mut options = PgOptions::new(url.clone(), data_dir.join("workspaces"));
    options.pool_size = usize::try_from(settings.database_pool_size).unwrap_or(16);
    let store = PgStore::open(options).await?;
    tracing::info!(pool_size = settings.database_pool_size, "the records are in PostgreSQL");
    Ok(store.stores())
}

/// This node's name: the one kept in the data directory's `node-name`, made at the first
/// start from `--node-name` or else the host's name and a random suffix. Kept with the data
/// directory, since what it pins (git worktrees) is there: every process on one data
/// directory, and the same one after a restart, has the same name. A `--node-name` other than
/// the kept one is refused rather than obeyed: every session and task pinned to the old name
/// would be stranded (refused and never run) under the new one.
fn node_name(settings: &Settings, data_dir: &std::path::Path) -> Result<String, StartupError> {
    let path = data_dir.join("node-name");
    let error = |source| StartupError::NodeName { path: path.clone(), source };
    let read = || -> Result<Option<String>, StartupError> {
        match std::fs::read_to_string(&path) {
            Ok(name) if orbit_store::limits::check_node_name(name.trim()).is_ok() => {
                Ok(Some(name.trim().to_owned()))
            }
            Ok(_) => {
                Err(error(std::io::Error::new(std::io::ErrorKind::InvalidData, "not a node name")))
            }
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(err) => Err(error(err)),
        }
    };
    let check = |kept: String| match &settings.node_name {
        Some(asked) if *asked != kept => {
            Err(StartupError::NodeRenamed { asked: asked.clone(), kept, path: path.clone() })
        }
        _ => Ok(kept),
    };
    if let Some(kept) = read()? {
        return check(kept);
    }
    let suffix = orbit_store::new_ulid().to_string().to_lowercase().split_off(16);
    let name = settings.node_name.clone().unwrap_or_else(|| {
        let host: String = hostname()
            .chars()
            .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
            .take(60)
            .collect();
        let host = if host.is_empty() { "node".to_owned() } else { host };
        // The ULID's last ten characters are random.
        format!("{host}-{suffix}")
    });
    // Written aside, synced and linked into place, which fails when another process starting
    // on the same directory got there first: then its name is this node's too. Synced, file
    // and directory, because a name lost in a power loss would be made anew, a different one.
    let aside = data_dir.join(format!(".node-name.{suffix}"));
    // Private, as everything in the data directory is.
    let written = (|| {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let mut file =
            std::fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&aside)?;
        file.write_all(format!("{name}\n").as_bytes())?;
        file.sync_all()
    })();
    let linked = written.and_then(|()| std::fs::hard_link(&aside, &path));
    let _ = std::fs::remove_file(&aside);
    match linked {
        Ok(()) => {
            std::fs::File::open(data_dir).and_then(|dir| dir.sync_all()).map_err(error)?;
            Ok(name)
        }
        Err(err) if err.kind() == std::io::ErrorKind::AlreadyExists => match read()? {
            Some(kept) => check(kept),
            None => Err(error(err)),
        },
        Err(err) => Err(error(err)),
    }
}

fn make_private_dir(dir: &std::path::Path) -> Result<(), orbit_store::Error> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|source| orbit_store::Error::Io { path: dir.to_owned(), source })
}

/// A built server, listening, not yet serving.
pub struct Application {
    port: u16,
    server: Server,
    pool: AgentPool,
    scheduler: Scheduler,
    stores: Stores,
    registration: Registration,
    lease: Duration,
}

impl Application {
    /// Opens the stores, composes the agent pool and binds the listener.
    pub async fn build(settings: &Settings) -> Result<Self, StartupError> {
        let api_token = settings.api_token()?;
        if !settings.bind.ip().is_loopback() && api_token.is_none() {
            return Err(StartupError::ExposedWithoutToken(settings.bind));
        }
        // A server others can reach (hence its token) lets clients choose an agent's workdir,
        // where its CLI runs and writes, only inside roots its operator named.
        let data_dir = settings.data_dir();
        let stores = open_stores(settings, &data_dir).await?;
        let node = node_name(settings, &data_dir)?;
        tracing::info!(%node, "this node's name");
        let data_dir_id = orbit_store::data_dir_id(&data_dir)
            .map_err(|source| StartupError::DataDir { path: data_dir.clone(), source })?;
        let identity = NodeIdentity { name: node.clone(), data_dir: data_dir_id };
        let workdirs = settings.workdir_policy()?.excluding_data_dir(&data_dir);
        let user_config_dir =
            settings.claude_user_dir.clone().or_else(credentials::user_config_dir).map(|dir| {
                // Absolute, so that the link made in each conversation's directory points at it
                // from there too.
                std::path::absolute(&dir).unwrap_or(dir)
            });
        // Said at start, in the log, rather than discovered at the first chat.
        let mut cli_env: Vec<(String, String)> = std::env::vars().collect();
        cli_env.extend(settings.cli_env.iter().cloned());
        match credentials::find(&cli_env, user_config_dir.as_deref()) {
            found @ credentials::Found::Nothing { .. } => {
                if let Some(warning) = found.warning() {
                    tracing::warn!("{warning}");
                }
            }
            credentials::Found::Variable(name) => {
                tracing::info!(from = %name, "the model's credentials come from the environment")
            }
            credentials::Found::Login(file) => {
                tracing::info!(login = %file.display(), "the CLIs share your Claude login")
            }
        }
        let runtime = ClaudeCli::new(ClaudeCliConfig {
            bin: settings.claude_bin.clone(),
            config_dir: data_dir.join("claude"),
            user_config_dir,
            env: settings.cli_env.clone(),
            max_turns: None,
        });
        // A fresh identity at every start: work this process takes names it, and nothing of
        // a predecessor's (a crashed server, PID 1 of the container before) is mistaken for ours.
        let instance = InstanceId::new();
        let lease = Duration::from_secs(settings.lease_secs);
        // One bus for the whole server: the pool, the scheduler and the API announce on it,
        // `GET /api/events` reads it.
        let activity = ActivityBus::default();
        let options = PoolOptions {
            activity: activity.clone(),
            max_processes: settings.max_processes,
            ask_timeout: Duration::from_secs(settings.ask_timeout_secs),
            run_ask_timeout: Duration::from_secs(settings.run_ask_timeout_secs),
            instance,
            node: node.clone(),
            claim_lease: lease,
            reserved_for_chats: settings.reserved_for_chats,
            shutdown_abort_grace: SHUTDOWN_ABORT_GRACE,
            ..PoolOptions::default()
        };
        let pool = AgentPool::new(stores.clone(), Arc::new(runtime), options);
        let runner = Arc::new(AgentRunner { pool: pool.clone() });
        let scheduler = Scheduler::new(
            stores.clone(),
            runner,
            Arc::new(SystemClock),
            SchedulerOptions {
                instance,
                node,
                run_lease: lease,
                activity,
                // The pool aborts every turn still running after TURN_DEADLINE; the scheduler
                // waits a little longer, so its runs end by that abort and record its outcome.
                shutdown_grace: TURN_DEADLINE + SHUTDOWN_ABORT_GRACE + Duration::from_secs(1),
                ..SchedulerOptions::default()
            },
        );
        let bind_error = |source| StartupError::Bind { addr: settings.bind, source };
        let listener = TcpListener::bind(settings.bind).map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;
        let port = local.port();
        // Known only now that the port is bound (port 0 picks one).
        let address = settings.advertised_address(local);
        let allowed_hosts = AllowedHosts::for_address(local, &settings.allowed_hosts);
        if let Some(address) = &address {
            refused_advertised_host(address, &allowed_hosts)?;
        }
        let state = Data::new(AppState {
            stores: stores.clone(),
            pool: pool.clone(),
            scheduler: scheduler.clone(),
            api_token,
            body_limit: settings.body_limit,
            body_read_timeout: Duration::from_secs(settings.body_timeout_secs),
            slow_client_timeout: Duration::from_secs(settings.slow_client_timeout_secs),
            allowed_hosts,
            workdirs,
            access_log: settings.access_log,
        });
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        let options = ListenerOptions {
            workers,
            max_connections: settings.max_connections,
            header_timeout: Duration::from_secs(settings.header_timeout_secs),
        };
        // Checked before registering, so that a node whose clock is off never takes work.
        if crate::clock::test_hook_set() {
            tracing::warn!(
                "ORBIT_TEST_CLOCK_OFFSET_MS is set: this node's clock check sees a shifted clock \
                 (a test hook; it can hide a real offset, never set it outside tests)"
            );
        }
        let clock_bound = crate::clock::max_offset(lease);
        match crate::clock::check(stores.instances.as_ref(), clock_bound).await {
            Err(err) => return Err(StartupError::Clock(err)),
            Ok(None) => {}
            Ok(Some((reading, Verdict::Differs))) => {
                return Err(StartupError::ClockOffset(reading.describe(), clock_bound.as_millis()));
            }
            Ok(Some((reading, Verdict::Agrees))) => {
                tracing::info!(clock = %reading.describe(), "this clock agrees with the database's");
            }
            // Checked again at every heartbeat, which stops the node once it is sure.
            Ok(Some((reading, Verdict::Unsure))) => tracing::warn!(
                clock = %reading.describe(),
                bound_ms = clock_bound.as_millis(),
                "cannot tell whether this clock agrees with the database's: its answers are too slow"
            ),
        }
        // Registered before serving, so that a second node under this name on another
        // data directory is refused at its start rather than sharing the pinned work.
        let registration = Registration { instance, identity, address };
        registration.register(&stores, lease).await.map_err(|err| match err.kind() {
            orbit_store::ErrorKind::Conflict => StartupError::NodeNameTaken(err.to_string()),
            _ => StartupError::Register(err),
        })?;
        let address = registration.address.as_deref().unwrap_or("none");
        tracing::info!(%instance, %address, "registered");
        // Said at start rather than found at the first watcher another node turns away.
        if registration.address.is_none() && settings.database_url.is_some() {
            tracing::warn!(
                "the other nodes cannot pass this node's turns to their watchers: it listens on every address and was given no --advertise-url (ORBIT_ADVERTISE_URL)"
            );
        }
        if let Some(address) = &registration.address {
            warn_of_a_shared_address(&stores, instance, address).await;
        }
        let server = crate::listener::serve(listener, state, options).map_err(bind_error)?;
        Ok(Self { port, server, pool, scheduler, stores, registration, lease })
    }

    /// The port actually bound (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGINT or SIGTERM, then stops in order: no new connections, no more task
    /// runs, running turns finish up to a deadline and the rest are aborted (each settles its
    /// inbox claims and records itself), every CLI process ends side by side, the instance
    /// is deregistered. A node that lost its name to a node of another data directory (its
    /// heartbeat lapsed, and the other started under the name meanwhile) stops the same way
    /// at once, aborting its turns rather than finishing them, and answers an error: it must
    /// not run on under a name another node holds.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        // Background loops are told to stop, and their end awaited, like mini-redis's
        // `shutdown` and `shutdown_complete`.
        let stopping_loops = CancellationToken::new();
        let mut heartbeat = tokio::spawn(heartbeat(
            self.pool.clone(),
            self.registration.clone(),
            self.lease,
            stopping_loops.clone(),
        ));
        let eviction = self.pool.spawn_eviction(stopping_loops.clone().cancelled_owned());
        // Other nodes' deletions and aborts, on a store shared with them.
        let signals = self.pool.spawn_signal_listener(stopping_loops.clone().cancelled_owned());
        // This node's activity on the other nodes' event streams (theirs arrive as signals).
        let relay = self.pool.spawn_activity_relay(stopping_loops.clone().cancelled_owned());
        let (stop_scheduler, scheduler_stopped) = tokio::sync::oneshot::channel::<()>();
        let scheduler = self.scheduler.clone();
        let scheduling = tokio::spawn(async move {
            scheduler.run(async { scheduler_stopped.await.unwrap_or(()) }).await;
        });
        let handle = self.server.handle();
        let mut server = tokio::spawn(self.server);
        let mut name_lost = None;
        let stop = tokio::select! {
            served = &mut server => Err(served),
            () = stop_signal() => {
                tracing::info!("stopping: no new requests or task runs; finishing running turns");
                Ok(TURN_DEADLINE)
            }
            beaten = &mut heartbeat => {
                let err = match beaten {
                    Ok(Some(HeartbeatStop::NameLost(err))) => {
                        tracing::error!(error = %err, "stopping at once: this node lost its name");
                        format!("this node lost its name: {err}")
                    }
                    Ok(Some(HeartbeatStop::ClockOff { reading, bound })) => {
                        tracing::error!(
                            offset_ms = reading.offset.whole_milliseconds(),
                            round_trip_ms = reading.round_trip.as_millis(),
                            bound_ms = bound.as_millis(),
                            "stopping at once: this machine's clock is {}, more than a node may be off; synchronize it (NTP), or the database server's if every node says so",
                            reading.describe()
                        );
                        format!(
                            "this machine's clock is {}, more than a node may be off ({} ms): synchronize it (NTP), or the database server's if every node says so",
                            reading.describe(),
                            bound.as_millis()
                        )
                    }
                    Ok(None) => "the heartbeat stopped".to_owned(),
                    Err(err) => {
                        tracing::error!(error = %err, "stopping at once: the heartbeat failed");
                        format!("the heartbeat failed: {err}")
                    }
                };
                name_lost = Some(err);
                Ok(Duration::ZERO)
            }
        };
        let served = match stop {
            Err(served) => served,
            Ok(deadline) => {
                // Event streams never end by themselves; they end now, so the server's stop
                // does not wait for them.
                self.pool.activity().close();
                let graceful = name_lost.is_none();
                let stopping = tokio::spawn(async move { handle.stop(graceful).await });
                // Turns of chats and of task runs finish, or are aborted, side by side under
                // one deadline.
                let _ = stop_scheduler.send(());
                let pool = self.pool.clone();
                let _ = tokio::join!(scheduling, pool.shutdown(deadline));
                let _ = stopping.await;
                server.await
            }
        };
        stopping_loops.cancel();
        if name_lost.is_none() {
            let _ = heartbeat.await;
        }
        let _ = eviction.await;
        if let Some(signals) = signals {
            let _ = signals.await;
        }
        // The relay tells the other nodes how this node's last turns ended, but a database
        // that is away must not hold the stop past its deadline: each signal may wait for it.
        if let Some(mut relay) = relay
            && tokio::time::timeout(LAST_WORDS, &mut relay).await.is_err()
        {
            tracing::warn!("the other nodes were not told all of this node's last activity");
            relay.abort();
        }
        // A registration left behind lapses with its lease; waiting longer helps nobody.
        match tokio::time::timeout(
            LAST_WORDS,
            self.stores.instances.deregister(&self.registration.instance),
        )
        .await
        {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!(error = %err, "could not deregister this instance"),
            Err(_) => tracing::warn!("could not deregister this instance in time"),
        }
        tracing::info!("stopped");
        if let Some(err) = name_lost {
            return Err(std::io::Error::other(err));
        }
        served.unwrap_or_else(|err| Err(std::io::Error::other(err)))
    }
}

/// Refuses an advertised address whose host this node's own `Host` check would refuse: the
/// other nodes forward watchers to it with that host, and each would get a 403. Said at start
/// rather than found at the first watcher.
fn refused_advertised_host(address: &str, allowed: &AllowedHosts) -> Result<(), StartupError> {
    let host = address.strip_prefix("http://").unwrap_or(address);
    if allowed.allows(host) {
        return Ok(());
    }
    Err(StartupError::AdvertisedHostRefused { address: address.to_owned() })
}

/// Logs an error when another live instance registered this node's own address: the nodes
/// would forward each other's watchers to whichever of them answers there, and a node that
/// reaches itself answers 409. Not refused: the other may be a registration yet to lapse of
/// this very node, restarted.
async fn warn_of_a_shared_address(stores: &Stores, this: InstanceId, address: &str) {
    let now = orbit_store::timestamp::now();
    let Ok(instances) = stores.instances.list().await else { return };
    let sharing = instances.iter().find(|other| {
        other.id != this && other.live_at(now) && other.address.as_deref() == Some(address)
    });
    if let Some(other) = sharing {
        tracing::error!(
            %address,
            other = %other.id,
            "another live node registered this node's address: watchers forwarded to it may reach the wrong node; give each node its own --advertise-url (ORBIT_ADVERTISE_URL)"
        );
    }
}

/// Resolves at the first SIGINT or SIGTERM.
async fn stop_signal() {
    use tokio::signal::unix::{SignalKind, signal};
    let (Ok(mut interrupt), Ok(mut terminate)) =
        (signal(SignalKind::interrupt()), signal(SignalKind::terminate()))
    else {
        tracing::error!("cannot listen for stop signals; stop the server with SIGKILL");
        return std::future::pending().await;
    };
    tokio::select! {
        _ = interrupt.recv() => {}
        _ = terminate.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    /// README's own set-up: every address, an advertised LAN address; refused once an
    /// `--allowed-host` that is not that address narrows the hosts, and kept when it names it.
    #[test]
    fn an_advertised_host_this_node_would_refuse_is_refused_at_start() {
        let every = "0.0.0.0:3001".parse().unwrap();
        let advertised = "http://10.0.0.1:3001";
        let any = AllowedHosts::for_address(every, &[]);
        assert!(refused_advertised_host(advertised, &any).is_ok());
        let proxy = AllowedHosts::for_address(every, &["orbit.example".into()]);
        let refused = refused_advertised_host(advertised, &proxy).unwrap_err().to_string();
        assert!(refused.contains(advertised) && refused.contains("--allowed-host"), "{refused}");
        let both = AllowedHosts::for_address(every, &["orbit.example".into(), "10.0.0.1".into()]);
        assert!(refused_advertised_host(advertised, &both).is_ok());
        let loopback = AllowedHosts::for_address("127.0.0.1:3001".parse().unwrap(), &[]);
        assert!(refused_advertised_host("http://127.0.0.1:3001", &loopback).is_ok());
    }
}
