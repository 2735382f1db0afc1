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

    /// A PostgreSQL database to keep Orbit's records in (`postgresql://user:pass@host/db`),
    /// shared by every node started with it; each node keeps its own data directory for the
    /// agents' working directories and the CLI's state. Without it, the records are files in
    /// the data directory.
    #[arg(long, env = "ORBIT_DATABASE_URL", hide_env_values = true)]
    pub database_url: Option<String>,

    /// This node's name, which the API gives for the sessions and tasks whose git worktrees
    /// it holds (they run on it alone). Default: made at the first start (the host's name
    /// and a random suffix) and kept in the data directory's `node-name`.
    #[arg(long, env = "ORBIT_NODE_NAME", value_parser = node_name)]
    pub node_name: Option<String>,

    /// Where the other nodes of the cluster reach this node's API (`http://host:port`), to
    /// forward to it a watcher of a turn it runs. Default: `http://` and the address it
    /// listens on, when that is one address; none when it listens on every address
    /// (`0.0.0.0`, `::`), and then the other nodes answer 409 to a watcher of its turns.
    /// Its host must be one this node answers to (its own address, or an `--allowed-host`).
    #[arg(long, env = "ORBIT_ADVERTISE_URL", value_parser = advertise_url)]
    pub advertise_url: Option<String>,

    /// Most connections to the database this node holds open.
    #[arg(long, env = "ORBIT_DATABASE_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u64).range(1..=1000))]
    pub database_pool_size: u64,

    /// Bearer token every request but /health must carry. Prefer ORBIT_API_TOKEN or
    /// --api-token-file: a command-line argument is visible to every local user in `ps`.
    #[arg(long, env = "ORBIT_API_TOKEN", hide_env_values = true)]
    pub api_token: Option<String>,

    /// A file holding the API token (its first line), readable by the owner only.
    #[arg(long, env = "ORBIT_API_TOKEN_FILE", conflicts_with = "api_token")]
    pub api_token_file: Option<PathBuf>,

    /// Another name (or name:port) clients reach the server by, besides its own address and,
    /// on loopback, localhost. Requests naming any other Host are refused. Repeatable.
    #[arg(long = "allowed-host", env = "ORBIT_ALLOWED_HOSTS", value_delimiter = ',')]
    pub allowed_hosts: Vec<String>,

    /// A directory inside which agents may be given a workdir (their own project); a workdir
    /// outside every root is refused. Repeatable; the variable takes a `:`-separated list.
    /// A server that listens beyond loopback accepts no workdir until it has a root.
    #[arg(long = "workdir-root", env = "ORBIT_WORKDIR_ROOTS", value_delimiter = ':')]
    pub workdir_roots: Vec<PathBuf>,

    /// The Claude Code CLI binary.
    #[arg(long, env = "ORBIT_CLAUDE_BIN", default_value = "claude")]
    pub claude_bin: PathBuf,

    /// Your own Claude Code configuration, whose login (`.credentials.json`) Orbit's CLIs
    /// share; nothing else of it is used. Default: `CLAUDE_CONFIG_DIR`, else `~/.claude`.
    #[arg(long, env = "CLAUDE_CONFIG_DIR")]
    pub claude_user_dir: Option<PathBuf>,

    /// Most CLI processes alive at once.
    #[arg(long, env = "ORBIT_MAX_PROCESSES", default_value_t = 8)]
    pub max_processes: usize,

    /// Seconds an `ask` permission request waits for a person before the tool is denied
    /// (1 to 86400).
    #[arg(long, env = "ORBIT_ASK_TIMEOUT_SECS", default_value_t = 60, value_parser = ask_timeout_secs())]
    pub ask_timeout_secs: u64,

    /// Seconds an `ask` permission request of a scheduled task's run waits for a person (who
    /// finds it in `GET /api/approvals`) before the tool is denied. A run is still bound by
    /// its own timeout (30 min). 1 to 86400.
    #[arg(long, env = "ORBIT_RUN_ASK_TIMEOUT_SECS", default_value_t = 600, value_parser = ask_timeout_secs())]
    pub run_ask_timeout_secs: u64,

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

    /// Seconds a request body may take to arrive (408 past it).
    #[arg(long, env = "ORBIT_BODY_TIMEOUT_SECS", default_value_t = 30)]
    pub body_timeout_secs: u64,

    /// Seconds a client has to send a request's headers (408 past it).
    #[arg(long, env = "ORBIT_HEADER_TIMEOUT_SECS", default_value_t = 10)]
    pub header_timeout_secs: u64,

    /// Seconds a chat stream waits for a client that reads nothing before dropping it; the
    /// turn goes on and is recorded.
    #[arg(long, env = "ORBIT_SLOW_CLIENT_TIMEOUT_SECS", default_value_t = 30)]
    pub slow_client_timeout_secs: u64,

    /// Most connections open at once; further clients wait to be accepted.
    #[arg(long, env = "ORBIT_MAX_CONNECTIONS", default_value_t = 256)]
    pub max_connections: usize,

    /// Log every answer at info: method, path, status and request id. Off by default: a
    /// line per request, written synchronously, costs more than a small answer itself. Lines
    /// logged while answering a request name its id either way.
    #[arg(long, env = "ORBIT_ACCESS_LOG")]
    pub access_log: bool,

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
            // A database URL may carry a password.
            .field("database_url", &self.database_url.as_ref().map(|_| "<redacted>"))
            .field("api_token", &self.api_token.as_ref().map(|_| "<redacted>"))
            .field("api_token_file", &self.api_token_file)
            .field("allowed_hosts", &self.allowed_hosts)
            .field("workdir_roots", &self.workdir_roots)
            .field("claude_bin", &self.claude_bin)
            .finish_non_exhaustive()
    }
}

/// Why the API token could not be read.
#[derive(Debug, thiserror::Error)]
#[error("cannot read the API token file {path}: {source}")]
pub struct TokenFileError {
    path: PathBuf,
    source: std::io::Error,
}

impl Settings {
    /// Parses the command line and the environment, warning about a token given as an
    /// argument.
    pub fn from_command_line() -> Self {
        let matches = <Self as clap::CommandFactory>::command().get_matches();
        let given_as_argument =
            matches.value_source("api_token") == Some(clap::parser::ValueSource::CommandLine);
        let settings = match <Self as clap::FromArgMatches>::from_arg_matches(&matches) {
            Ok(settings) => settings,
            Err(err) => err.exit(),
        };
        if given_as_argument {
            tracing::warn!(
                "--api-token is visible to every local user in the process list; use ORBIT_API_TOKEN or --api-token-file instead"
            );
        }
        settings
    }

    /// The API token in force: `--api-token` / `ORBIT_API_TOKEN`, or the first line of
    /// `--api-token-file`; `None` when empty or not given.
    pub fn api_token(&self) -> Result<Option<String>, TokenFileError> {
        let token = match &self.api_token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| TokenFileError { path: path.clone(), source })?;
                text.lines().next().map(|line| line.trim().to_owned())
            }
            None => self.api_token.clone(),
        };
        Ok(token.filter(|token| !token.is_empty()))
    }

    /// Which directories may be an agent's workdir: inside the roots, and none without one
    /// on a server that listens beyond loopback (the servers that need a token), where a
    /// client could otherwise point an agent at any directory the server's user can write.
    pub fn workdir_policy(
        &self,
    ) -> Result<orbit_agent::workdir::WorkdirPolicy, orbit_agent::workdir::RootError> {
        orbit_agent::workdir::WorkdirPolicy::new(&self.workdir_roots, !self.bind.ip().is_loopback())
    }

    /// Where the other nodes reach this one, listening on `bound`: `--advertise-url`, else
    /// `http://` and the bound address when it is one address. None when it listens on every
    /// address: which of the machine's addresses the others reach is not for it to guess.
    pub fn advertised_address(&self, bound: SocketAddr) -> Option<String> {
        self.advertise_url
            .clone()
            .or_else(|| (!bound.ip().is_unspecified()).then(|| format!("http://{bound}")))
    }

    /// The data directory, defaulting to `~/.orbit`.
    pub fn data_dir(&self) -> PathBuf {
        self.data_dir.clone().unwrap_or_else(|| {
            let home =
                std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("."));
            home.join(".orbit")
        })
    }
}

/// The seconds an `ask` request may wait: at least one, at most a day
/// (`orbit_agent::MAX_ASK_TIMEOUT_SECS`); clap refuses anything else at startup, saying so.
fn node_name(name: &str) -> Result<String, String> {
    orbit_store::limits::check_node_name(name).map_err(|err| err.to_string())?;
    Ok(name.to_owned())
}

/// An address the other nodes can forward to, `http://host:port`, kept in that form built
/// from its parts (the host lowercased; a trailing `/` is taken): the API's paths are put
/// after it, so nothing may follow the port, and the nodes' forwarding client carries no
/// TLS, so a cluster's nodes talk over a private network. The port is required and the host
/// must be one the others can connect to, not `0.0.0.0` or `::`.
fn advertise_url(url: &str) -> Result<String, String> {
    let expected = "expected http://host:port, with no path, query, fragment or user";
    if url.contains('#') {
        return Err(format!("a fragment is not allowed: {expected}"));
    }
    let uri: actix_web::http::Uri =
        url.parse().map_err(|err| format!("not a URL ({err}): {expected}"))?;
    let Some(authority) = uri.authority().filter(|_| uri.scheme_str() == Some("http")) else {
        return Err(expected.into());
    };
    let plain = !authority.host().is_empty()
        && !authority.as_str().contains('@')
        && matches!(uri.path(), "" | "/")
        && uri.query().is_none();
    if !plain {
        return Err(expected.into());
    }
    let Some(port) = authority.port_u16().filter(|port| *port != 0) else {
        return Err(format!("a port from 1 to 65535 is required: {expected}"));
    };
    let host = authority.host().to_ascii_lowercase();
    let ip = host.trim_start_matches('[').trim_end_matches(']').parse::<std::net::IpAddr>();
    if ip.is_ok_and(|ip| ip.is_unspecified()) {
        return Err(format!(
            "{host} is every address of a machine, not one the other nodes can connect to: {expected}"
        ));
    }
    Ok(format!("http://{host}:{port}"))
}

fn ask_timeout_secs() -> clap::builder::RangedU64ValueParser<u64> {
    clap::value_parser!(u64).range(1..=orbit_agent::MAX_ASK_TIMEOUT_SECS)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use clap::Parser;

    use super::Settings;

    /// The rule decided from the settings alone (a test may listen on loopback only).
    #[test]
    fn ask_timeouts_past_a_day_are_refused_at_startup() {
        for flag in ["--ask-timeout-secs", "--run-ask-timeout-secs"] {
            let day = orbit_agent::MAX_ASK_TIMEOUT_SECS.to_string();
            let settings = Settings::try_parse_from(["orbit-server", flag, &day]).unwrap();
            assert!(settings.ask_timeout_secs.max(settings.run_ask_timeout_secs) == 86_400);
            for bad in ["86401", "18446744073709551615", "0"] {
                let err = Settings::try_parse_from(["orbit-server", flag, bad]).unwrap_err();
                assert!(err.to_string().contains(flag), "{err}");
            }
        }
    }

    #[test]
    fn a_node_advertises_its_one_address_or_the_url_it_was_given() {
        let bound = |addr: &str| addr.parse::<std::net::SocketAddr>().unwrap();
        let plain = Settings::parse_from(["orbit-server"]);
        let advertised = plain.advertised_address(bound("127.0.0.1:40001"));
        assert_eq!(advertised.as_deref(), Some("http://127.0.0.1:40001"));
        let v6 = plain.advertised_address(bound("[::1]:40001"));
        assert_eq!(v6.as_deref(), Some("http://[::1]:40001"));
        assert_eq!(plain.advertised_address(bound("0.0.0.0:3001")), None, "every address");
        assert_eq!(plain.advertised_address(bound("[::]:3001")), None, "every address");
        let given = ["orbit-server", "--advertise-url", "http://node-1.internal:3001/"];
        let given = Settings::parse_from(given).advertised_address(bound("0.0.0.0:3001"));
        assert_eq!(given.as_deref(), Some("http://node-1.internal:3001"), "its slash trimmed");
        for (url, kept) in [
            ("HTTP://Node-1:3001", "http://node-1:3001"),
            ("http://[::1]:3001/", "http://[::1]:3001"),
            ("http://10.0.0.1:3001", "http://10.0.0.1:3001"),
        ] {
            let given = Settings::parse_from(["orbit-server", "--advertise-url", url]);
            assert_eq!(given.advertise_url.as_deref(), Some(kept), "{url}");
        }
        for bad in [
            "https://node-1:3001",
            "node-1:3001",
            "http://node-1:3001/api",
            "http://node-1:3001/?x=1",
            "http://user@node-1:3001",
            "http://",
            "http://node-1:3001#",
            "http://node-1:3001/#x",
            "http://node-1:99999",
            "http://node-1:abc",
            "http://node-1:",
            "http://node-1:0",
            "http://node-1",
            "http://0.0.0.0:3001",
            "http://[::]:3001",
        ] {
            let refused = Settings::try_parse_from(["orbit-server", "--advertise-url", bad]);
            assert!(refused.is_err(), "{bad} is refused");
        }
    }

    #[test]
    fn a_server_beyond_loopback_takes_workdirs_only_inside_its_roots() {
        let dir = std::env::temp_dir().display().to_string();
        let exposed = Settings::parse_from(["orbit-server", "--bind", "0.0.0.0:3001"]);
        let refused = exposed.workdir_policy().unwrap().check(&dir).unwrap_err();
        assert!(refused.to_string().contains("--workdir-root"), "{refused}");
        let rooted = Settings::parse_from([
            "orbit-server",
            "--bind",
            "0.0.0.0:3001",
            "--workdir-root",
            &dir,
        ]);
        assert!(rooted.workdir_policy().unwrap().check(&dir).is_ok());
        let local = Settings::parse_from(["orbit-server", "--bind", "127.0.0.1:3001"]);
        assert!(local.workdir_policy().unwrap().check(&dir).is_ok());
        let missing = Settings::parse_from(["orbit-server", "--workdir-root", "/nowhere/at/all"]);
        assert!(missing.workdir_policy().is_err(), "a root must exist");
    }
}
