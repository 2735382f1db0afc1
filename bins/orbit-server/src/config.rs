//! Server settings: flags with `ORBIT_*` environment fallbacks.

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;

/// The Orbit server.
#[derive(Clone, Parser)]
#[command(name = "orbit-server", version, about)]
pub struct Settings {
    /// Address to listen on. A non-loopback address needs an API token.
    #[arg(long, env = "ORBIT_BIND", default_value = "127.0.0.1:3001")]
    pub bind: SocketAddr,

    /// Data directory (default: ~/.orbit).
    #[arg(long, env = "ORBIT_DATA_DIR")]
    pub data_dir: Option<PathBuf>,

    /// Bearer token every /api request must carry.
    #[arg(long, env = "ORBIT_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// The Claude Code CLI binary.
    #[arg(long, env = "ORBIT_CLAUDE_BIN", default_value = "claude")]
    pub claude_bin: PathBuf,

    /// Most CLI processes alive at once.
    #[arg(long, env = "ORBIT_MAX_PROCESSES", default_value_t = 8)]
    pub max_processes: usize,

    /// Seconds an `ask` permission request waits for a person before the tool is denied.
    #[arg(long, env = "ORBIT_ASK_TIMEOUT_SECS", default_value_t = 60)]
    pub ask_timeout_secs: u64,

    /// Seconds an inbox claim or a running task run lasts unless its server renews it: how
    /// long the work of a server that died stays with it before another takes it back.
    #[arg(long, env = "ORBIT_LEASE_SECS", default_value_t = 30, value_parser = clap::value_parser!(u64).range(3..=3600))]
    pub lease_secs: u64,

    /// Process slots kept for people's chats, which scheduled runs may not take.
    #[arg(long, env = "ORBIT_RESERVED_FOR_CHATS", default_value_t = 1)]
    pub reserved_for_chats: usize,

    /// Largest request body, in bytes.
    #[arg(long, default_value_t = 1024 * 1024)]
    pub body_limit: usize,

    /// Extra environment for the CLI (tests point it at a scripted model this way).
    #[arg(skip)]
    pub cli_env: Vec<(String, String)>,
}

impl std::fmt::Debug for Settings {
    // The token never reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Settings")
            .field("bind", &self.bind)
            .field("data_dir", &self.data_dir)
            .field("api_token", &self.api_token.as_ref().map(|_| "<redacted>"))
            .field("claude_bin", &self.claude_bin)
            .finish_non_exhaustive()
    }
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
