//! The composition root: the only place that names concrete implementations.

use std::net::TcpListener;
use std::sync::Arc;
use std::time::Duration;

use actix_web::HttpServer;
use actix_web::dev::Server;
use actix_web::web::Data;
use orbit_agent::claude::{ClaudeCli, ClaudeCliConfig};
use orbit_agent::{AgentPool, PoolOptions};
use orbit_api::{AllowedHosts, AppState};
use orbit_scheduler::{AgentRunner, Scheduler, SchedulerOptions, SystemClock};
use orbit_store::FsStore;

use crate::config::Settings;

/// How long running turns may go on after a shutdown signal before they are aborted.
const TURN_DEADLINE: Duration = Duration::from_secs(10);

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot use data directory {path}: {source}")]
    DataDir { path: std::path::PathBuf, source: orbit_store::Error },
    #[error("cannot listen on {addr}: {source} (is another server using the port?)")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
    #[error(
        "refusing to listen on {0} without an API token: set --api-token or ORBIT_API_TOKEN, or bind to 127.0.0.1"
    )]
    ExposedWithoutToken(std::net::SocketAddr),
    #[error(transparent)]
    TokenFile(#[from] crate::config::TokenFileError),
}

/// A built server, listening, not yet serving.
pub struct Application {
    port: u16,
    server: Server,
    pool: AgentPool,
    scheduler: Scheduler,
}

impl Application {
    /// Opens the stores, composes the agent pool and binds the listener.
    pub fn build(settings: &Settings) -> Result<Self, StartupError> {
        let api_token = settings.api_token()?;
        if !settings.bind.ip().is_loopback() && api_token.is_none() {
            return Err(StartupError::ExposedWithoutToken(settings.bind));
        }
        let data_dir = settings.data_dir();
        let store = FsStore::open(&data_dir)
            .map_err(|source| StartupError::DataDir { path: data_dir.clone(), source })?;
        let runtime = ClaudeCli::new(ClaudeCliConfig {
            bin: settings.claude_bin.clone(),
            config_dir: data_dir.join("claude"),
            env: settings.cli_env.clone(),
            max_turns: None,
        });
        let options = PoolOptions {
            max_processes: settings.max_processes,
            ask_timeout: Duration::from_secs(settings.ask_timeout_secs),
            ..PoolOptions::default()
        };
        let pool = AgentPool::new(store.stores(), Arc::new(runtime), options);
        let runner = Arc::new(AgentRunner { pool: pool.clone() });
        let scheduler = Scheduler::new(
            store.stores(),
            runner,
            Arc::new(SystemClock),
            SchedulerOptions::default(),
        );
        pool.set_task_listener(Arc::new(scheduler.clone()));
        let bind_error = |source| StartupError::Bind { addr: settings.bind, source };
        let listener = TcpListener::bind(settings.bind).map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;
        let port = local.port();
        let state = Data::new(AppState {
            stores: store.stores(),
            pool: pool.clone(),
            scheduler: scheduler.clone(),
            api_token,
            body_limit: settings.body_limit,
            body_read_timeout: Duration::from_secs(settings.body_timeout_secs),
            slow_client_timeout: Duration::from_secs(settings.slow_client_timeout_secs),
            allowed_hosts: AllowedHosts::for_address(local, &settings.allowed_hosts),
        });
        // actix counts connections per worker; split the total the same way it picks its
        // worker count.
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        let server = HttpServer::new(move || orbit_api::app(state.clone()))
            .workers(workers)
            .max_connections(settings.max_connections.div_ceil(workers).max(1))
            .client_request_timeout(Duration::from_secs(settings.header_timeout_secs))
            .client_disconnect_timeout(Duration::from_secs(1))
            .listen(listener)
            .map_err(bind_error)?
            // Open chat streams get this long after SIGINT/SIGTERM before their connections close.
            .shutdown_timeout(5)
            .run();
        Ok(Self { port, server, pool, scheduler })
    }

    /// The port actually bound (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until SIGINT or SIGTERM, then lets running turns finish up to a deadline,
    /// aborts the rest and ends every CLI process.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let eviction = self.pool.spawn_eviction(std::future::pending());
        let (stop_scheduler, scheduler_stopped) = tokio::sync::oneshot::channel::<()>();
        let scheduler = self.scheduler.clone();
        let scheduling = tokio::spawn(async move {
            scheduler.run(async { scheduler_stopped.await.unwrap_or(()) }).await;
        });
        let served = self.server.await;
        tracing::info!("stopping: no more task runs; finishing running turns");
        let _ = stop_scheduler.send(());
        let _ = scheduling.await;
        self.pool.shutdown(TURN_DEADLINE).await;
        eviction.abort();
        tracing::info!("stopped");
        served
    }
}
