//! Server-side overhead of a turn against an instant scripted model: cold (a new CLI process)
//! and warm (the live process). `cargo bench -p orbit-agent --bench turn`.

// Benchmark code: a failed expectation is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::sync::Arc;
use std::time::{Duration, Instant};

use orbit_agent::claude::{ClaudeCli, ClaudeCliConfig};
use orbit_agent::{AgentPool, ChatOptions, PoolOptions};
use orbit_store::{AgentName, FsStore, NewAgent, NewSession, PermissionMode};
use orbit_testkit::{ModelServer, Reply, Rule};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let tmp = dir.path().join("tmp");
    std::fs::create_dir_all(&tmp).unwrap();
    let stores = FsStore::open(dir.path().join("data")).unwrap().stores();
    let model = ModelServer::start(vec![Rule::always(Reply::Text("ok".into()))]);
    let runtime = ClaudeCli::new(ClaudeCliConfig {
        user_config_dir: None,
        bin: orbit_testkit::claude_bin(),
        config_dir: dir.path().join("data/claude"),
        env: orbit_testkit::cli_env(&model, &tmp),
        max_turns: Some(5),
    });
    let pool = AgentPool::new(stores.clone(), Arc::new(runtime), PoolOptions::default());
    let agent = AgentName::parse("bench").unwrap();
    stores
        .agents
        .create(
            &agent,
            NewAgent { permission_mode: Some(PermissionMode::AllowAll), ..NewAgent::default() },
        )
        .await
        .unwrap();

    let turn = |session| {
        let agent_ref = pool.get(&agent, &session);
        async move {
            let started = Instant::now();
            agent_ref
                .chat("ping", ChatOptions::default(), tokio::sync::mpsc::unbounded_channel().0)
                .await
                .unwrap();
            started.elapsed()
        }
    };
    let (mut cold, mut warm) = (Vec::new(), Vec::new());
    for _ in 0..10 {
        let session = stores.sessions.create(&agent, NewSession::default()).await.unwrap().id;
        cold.push(turn(session).await);
        for _ in 0..3 {
            warm.push(turn(session).await);
        }
        pool.release(&agent, &session).await;
    }
    println!("| measurement | median |\n| --- | --- |");
    println!(
        "| cold turn (new CLI process, 10 samples) | {:.0} ms |",
        median(cold).as_secs_f64() * 1e3
    );
    println!(
        "| warm turn (live CLI process, 30 samples) | {:.0} ms |",
        median(warm).as_secs_f64() * 1e3
    );
}
