//! Runs one turn of one session against a data directory, without the server.
//!
//! ```sh
//! cargo run -p orbit-agent --example one_turn -- /tmp/orbit-data my-agent "Say hello"
//! ```
//!
//! The CLI is `claude` on PATH unless `ORBIT_CLAUDE_BIN` names another; it inherits this
//! process's environment (`ANTHROPIC_API_KEY`, ...).

use std::sync::Arc;

use orbit_agent::claude::{ClaudeCli, ClaudeCliConfig};
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

async fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut args = std::env::args().skip(1);
    let (Some(data_dir), Some(agent), Some(prompt)) = (args.next(), args.next(), args.next())
    else {
        return Err("usage: one_turn <data-dir> <agent> <prompt>".into());
    };
    let store = FsStore::open(&data_dir)?;
    let stores = store.stores();
    let agent = AgentName::parse(&agent)?;
    stores.agents.ensure(&agent).await?;
    let session = stores.sessions.create(&agent, NewSession::default()).await?;

    let bin = std::env::var_os("ORBIT_CLAUDE_BIN").map_or_else(|| "claude".into(), Into::into);
    let runtime = ClaudeCli::new(ClaudeCliConfig {
        bin,
        config_dir: store.root().join("claude"),
        env: Vec::new(),
        max_turns: None,
    });
    let pool = AgentPool::new(stores, Arc::new(runtime), PoolOptions::default());

    let turn = pool.get(&agent, &session.id).start_turn(&prompt, ChatOptions::default()).await?;
    let (mut events, outcome) = turn.into_parts();
    while let Some(event) = events.recv().await {
        match event {
            TurnEvent::Cli(message) if matches!(message.kind, CliMessageKind::Other) => {
                println!("{}", message.raw);
            }
            TurnEvent::Failed { message, .. } => eprintln!("the turn failed: {message}"),
            _ => {}
        }
    }
    let outcome = outcome.await;
    pool.shutdown(std::time::Duration::from_secs(5)).await;
    let outcome = outcome?;
    eprintln!("session {}: {}", session.id, outcome.result);
    Ok(())
}
