//! The composition root: the only place that names concrete implementations.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::Server;
use actix_web::{App, HttpServer};
use orbit_api::AppState;
use orbit_store::FsStore;

use crate::config::Settings;

/// Why the server could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartupError {
    #[error("cannot use data directory {path}: {source}")]
    DataDir { path: std::path::PathBuf, source: orbit_store::Error },
    #[error("cannot listen on {addr}: {source} (is another server using the port?)")]
    Bind { addr: std::net::SocketAddr, source: std::io::Error },
}

/// A built server, listening, not yet serving.
pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    /// Opens the stores and binds the listener.
    pub fn build(settings: &Settings) -> Result<Self, StartupError> {
        let data_dir = settings.data_dir();
        let store = FsStore::open(&data_dir)
            .map_err(|source| StartupError::DataDir { path: data_dir.clone(), source })?;
        let state = Arc::new(AppState { stores: store.stores() });
        let listener = TcpListener::bind(settings.bind)
            .map_err(|source| StartupError::Bind { addr: settings.bind, source })?;
        let port = listener
            .local_addr()
            .map_err(|source| StartupError::Bind { addr: settings.bind, source })?
            .port();
        let server =
            HttpServer::new(move || App::new().configure(orbit_api::configure(state.clone())))
                .listen(listener)
                .map_err(|source| StartupError::Bind { addr: settings.bind, source })?
                .run();
        Ok(Self { port, server })
    }

    /// The port actually bound (useful with port 0).
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Serves until the server is stopped.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
