//! Runs one turn of one session against a data directory, without the server.
//!
//! ```sh
//! cargo run -p orbit-agent --example one_turn -- /tmp/orbit-data my-agent "Say hello"
//! cargo run -p orbit-agent --example one_turn -- --claude-bin ~/bin/claude /tmp/orbit-data my-agent "Hi"
//! ```
//!
//! The CLI is found as the server finds it (with `scripts/run.sh`'s fallback): `--claude-bin`,
//! else `ORBIT_CLAUDE_BIN`, else `claude` on PATH, else the pinned install in this
//! repository's `.orbit-tools/` (`./scripts/setup-claude.sh` makes it). It inherits this
//! process's environment (`ANTHROPIC_API_KEY`, ...) and shares your Claude login.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use orbit_agent::claude::{ClaudeCli, ClaudeCliConfig, credentials};
use orbit_agent::{AgentPool, ChatOptions, CliMessageKind, PoolOptions, TurnEvent};
use orbit_store::{AgentName, FsStore, NewSession};

#[tokio::main]
async fn main() -> std::process::ExitCode {
    match run().await {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(err) => {
            // A sentence for a person, not a debug dump.
            eprintln!("one_turn: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}

const USAGE: &str = "usage: one_turn [--claude-bin PATH] <data-dir> <agent> <prompt>";

/// The pinned CLI that `scripts/setup-claude.sh` installs, relative to this crate.
const PINNED: &str = "../../.orbit-tools/node_modules/@anthropic-ai/claude-code/bin/claude.exe";

async fn run() -> Result<(), String> {
    let mut args: Vec<String> = std::env::args().skip(1).collect();
    let claude_bin = match args.iter().position(|arg| arg == "--claude-bin") {
        Some(at) if at + 1 < args.len() => {
            Some(PathBuf::from(args.drain(at..=at + 1).nth(1).unwrap_or_default()))
        }
        Some(_) => return Err(format!("--claude-bin needs a path; {USAGE}")),
        None => None,
    };
    let [data_dir, agent, prompt] = <[String; 3]>::try_from(args).map_err(|_| USAGE.to_owned())?;
    let bin = find_cli(claude_bin)?;
    let store = FsStore::open(&data_dir)
        .map_err(|err| format!("cannot open the data directory {data_dir}: {err}"))?;
    let stores = store.stores();
    let agent = AgentName::parse(&agent).map_err(|err| format!("{err}"))?;
    stores
        .agents
        .ensure(&agent)
        .await
        .map_err(|err| format!("cannot make agent {agent}: {err}"))?;
    let session = stores
        .sessions
        .create(&agent, NewSession::default())
        .await
        .map_err(|err| format!("cannot make a session of {agent}: {err}"))?;

    let user_config_dir = credentials::user_config_dir();
    let env: Vec<(String, String)> = std::env::vars().collect();
    if let Some(warning) = credentials::find(&env, user_config_dir.as_deref()).warning() {
        eprintln!("one_turn: warning: {warning}");
    }
    let runtime = ClaudeCli::new(ClaudeCliConfig {
        bin,
        config_dir: store.root().join("claude"),
        user_config_dir,
        env: Vec::new(),
        max_turns: None,
    });
    let pool = AgentPool::new(stores, Arc::new(runtime), PoolOptions::default());

    let turn = pool
        .get(&agent, &session.id)
        .start_turn(&prompt, ChatOptions::default())
        .await
        .map_err(|err| format!("the turn could not start: {err}"))?;
    let (mut events, outcome) = turn.into_parts();
    while let Some(event) = events.recv().await {
        match event {
            TurnEvent::Cli(message) if matches!(message.kind, CliMessageKind::Other) => {
                println!("{}", message.raw);
            }
            TurnEvent::Failed { message, .. } => eprintln!("one_turn: {message}"),
            _ => {}
        }
    }
    let outcome = outcome.await;
    pool.shutdown(std::time::Duration::from_secs(5)).await;
    // The failure was printed as the turn's last event.
    let outcome = outcome.map_err(|_| format!("session {} ended without an answer", session.id))?;
    eprintln!("session {}: {}", session.id, outcome.result);
    Ok(())
}

/// The CLI as the server and `scripts/run.sh` find it.
fn find_cli(flag: Option<PathBuf>) -> Result<PathBuf, String> {
    if let Some(bin) = flag.or_else(|| std::env::var_os("ORBIT_CLAUDE_BIN").map(PathBuf::from)) {
        return Ok(bin);
    }
    let on_path = std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .map(|dir| dir.join("claude"))
        .find(|candidate| candidate.is_file());
    let pinned = Path::new(env!("CARGO_MANIFEST_DIR")).join(PINNED);
    on_path.or_else(|| pinned.is_file().then_some(pinned)).ok_or_else(|| {
        "cannot find the Claude Code CLI: it is not on PATH and not installed in .orbit-tools/. Run ./scripts/setup-claude.sh, or name it with --claude-bin or ORBIT_CLAUDE_BIN".to_owned()
    })
}
