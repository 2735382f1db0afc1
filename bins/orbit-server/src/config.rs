//! Server settings: flags with `ORBIT_*` environment fallbacks.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// The Orbit server.
#[derive(Debug, Clone, Parser)]
#[command(name = "orbit-server", version, about)]
pub struct Settings {
    /// Address to listen on. A non-loopback address needs an API token.
    #[arg(long, env = "ORBIT_BIND", default_value = "127.0.0.1:3001")]
    pub bind: SocketAddr,

    /// Data directory (default: ~/.orbit).
    #[arg(long, env = "ORBIT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,
}

impl Settings {
    /// The data directory, defaulting to `~/.orbit`.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| {
            let home =
                std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
            home.join(".orbit")
        })
    }
}
