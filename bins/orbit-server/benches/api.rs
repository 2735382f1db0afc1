//! API throughput and tail latency with 32 concurrent clients over loopback, on a data
//! directory holding 1,000 and then 10,000 sessions of one agent.
//! `cargo bench -p orbit-server --bench api`; results go to docs/benchmarks.md.

// Benchmark code: a failed expectation is a failed run.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::rc::Rc;
use std::time::{Duration, Instant};

use clap::Parser;
use orbit_server::config::Settings;
use orbit_server::startup::Application;
use orbit_store::{AgentName, FsStore, NewAgent, NewSession};

const CLIENTS: usize = 32;
const REQUESTS_PER_CLIENT: usize = 100;

async fn measure(label: &str, base: Rc<String>, method: &'static str, path: String) {
    let client = Rc::new(awc::Client::builder().timeout(Duration::from_secs(30)).finish());
    let started = Instant::now();
    let mut handles = Vec::new();
    for _ in 0..CLIENTS {
        let (client, base, path) = (client.clone(), base.clone(), path.clone());
        handles.push(actix_web::rt::spawn(async move {
            let mut latencies = Vec::with_capacity(REQUESTS_PER_CLIENT);
            for _ in 0..REQUESTS_PER_CLIENT {
                let sent = Instant::now();
                let request = client.request(
                    awc::http::Method::from_bytes(method.as_bytes()).unwrap(),
                    format!("{base}{path}"),
                );
                let mut response = request.send().await.unwrap();
                let body = response.body().limit(64 * 1024 * 1024).await.unwrap();
                assert!(response.status().is_success(), "{}", String::from_utf8_lossy(&body));
                latencies.push(sent.elapsed());
            }
            latencies
        }));
    }
    let mut latencies = Vec::new();
    for handle in handles {
        latencies.extend(handle.await.unwrap());
    }
    let elapsed = started.elapsed();
    latencies.sort();
    let p50 = latencies[latencies.len() / 2];
    let p99 = latencies[latencies.len() * 99 / 100];
    println!(
        "| {label} | {:.0} req/s | {:.1} ms | {:.1} ms |",
        latencies.len() as f64 / elapsed.as_secs_f64(),
        p50.as_secs_f64() * 1e3,
        p99.as_secs_f64() * 1e3
    );
}

fn main() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let agent = AgentName::parse("bench").unwrap();
    let system = actix_web::rt::System::new();
    system.block_on(async {
        let stores = FsStore::open(&data).unwrap().stores();
        stores.agents.create(&agent, NewAgent::default()).await.unwrap();
        let mut settings = Settings::parse_from(["orbit-server", "--bind", "127.0.0.1:0"]);
        settings.data_dir = Some(data.clone());
        let app = Application::build(&settings).await.unwrap();
        let base = Rc::new(format!("http://127.0.0.1:{}", app.port()));
        actix_web::rt::spawn(app.run_until_stopped());

        println!("| route ({CLIENTS} clients x {REQUESTS_PER_CLIENT} requests) | throughput | p50 | p99 |\n| --- | --- | --- | --- |");
        let mut seeded = 0;
        for target in [1_000, 10_000] {
            while seeded < target {
                stores.sessions.create(&agent, NewSession::default()).await.unwrap();
                seeded += 1;
            }
            let some_session = stores.sessions.list_by_agent(&agent).await.unwrap()[0].id;
            measure(&format!("GET /api/agents/bench/sessions ({target} sessions)"), base.clone(), "GET", "/api/agents/bench/sessions".into()).await;
            measure(&format!("GET /api/agents/bench/sessions/:id ({target} sessions)"), base.clone(), "GET", format!("/api/agents/bench/sessions/{some_session}")).await;
            measure(&format!("GET /api/agents ({target} sessions)"), base.clone(), "GET", "/api/agents".into()).await;
            measure(&format!("POST /api/agents/bench/sessions ({target} sessions)"), base.clone(), "POST", "/api/agents/bench/sessions".into()).await;
            seeded += CLIENTS * REQUESTS_PER_CLIENT;
        }
    });
}
