//! Store benchmarks: `cargo bench -p orbit-store`. Results go to docs/benchmarks.md.
//!
//! A plain binary rather than a benchmark framework: each figure is the median of repeated
//! runs, printed as a markdown table row.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use orbit_store::{
    AgentName, FsStore, MessageType, NewAgent, NewMessage, NewSession, Role, SessionId,
    SessionMessage, TranscriptCursor, TranscriptEntry, TranscriptKind,
};

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn row(what: &str, value: String) {
    println!("| {what} | {value} |");
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let store = FsStore::open(dir.path()).unwrap();
    let stores = store.stores();
    let agent = AgentName::parse("bench").unwrap();
    stores.agents.create(&agent, NewAgent::default()).await.unwrap();

    println!("| measurement | result |\n| --- | --- |");
    let started = Instant::now();
    for _ in 0..10_000 {
        stores.sessions.create(&agent, NewSession::default()).await.unwrap();
    }
    row(
        "create 10,000 sessions (fsync each)",
        format!("{:.0} sessions/s", 10_000.0 / started.elapsed().as_secs_f64()),
    );

    let cold = FsStore::open(dir.path()).unwrap().stores();
    let started = Instant::now();
    assert_eq!(cold.sessions.list_by_agent(&agent).await.unwrap().len(), 10_000);
    row(
        "list 10,000 sessions, first call of a new process (journal replay)",
        format!("{:.2} ms", started.elapsed().as_secs_f64() * 1e3),
    );

    let mut samples = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        let sessions = stores.sessions.list_by_agent(&agent).await.unwrap();
        samples.push(started.elapsed());
        assert_eq!(sessions.len(), 10_000);
    }
    row(
        "list 10,000 sessions, warm (median of 50)",
        format!("{:.2} ms", median(samples).as_secs_f64() * 1e3),
    );

    // Another process's write, seen by this one: one more line to read.
    let other = FsStore::open(dir.path()).unwrap().stores();
    let mut samples = Vec::new();
    for _ in 0..20 {
        other.sessions.create(&agent, NewSession::default()).await.unwrap();
        let started = Instant::now();
        stores.sessions.list_by_agent(&agent).await.unwrap();
        samples.push(started.elapsed());
    }
    row(
        "list 10,000 sessions after another store instance wrote one (median of 20)",
        format!("{:.2} ms", median(samples).as_secs_f64() * 1e3),
    );

    let session = stores.sessions.create(&agent, NewSession::default()).await.unwrap();
    for index in 0..1000 {
        let role = if index % 2 == 0 { Role::User } else { Role::Assistant };
        stores
            .sessions
            .append_message(
                &agent,
                &session.id,
                SessionMessage::new(role, format!("message {index} ").repeat(20)),
            )
            .await
            .unwrap();
    }
    let mut samples = Vec::new();
    for _ in 0..50 {
        let started = Instant::now();
        assert_eq!(stores.sessions.get_messages(&agent, &session.id).await.unwrap().len(), 1000);
        samples.push(started.elapsed());
    }
    row(
        "read a session with 1,000 messages (median of 50)",
        format!("{:.2} ms", median(samples).as_secs_f64() * 1e3),
    );

    // Transcripts: 1,000 turns of 100 entries (about 200 bytes each), one write per turn; a
    // page costs what it returns, wherever it starts.
    let session = stores.sessions.create(&agent, NewSession::default()).await.unwrap();
    let turn: Vec<TranscriptEntry> = (0..100)
        .map(|index| TranscriptEntry {
            turn: orbit_store::new_ulid().to_string(),
            kind: TranscriptKind::Event,
            at: orbit_store::timestamp::now(),
            data: serde_json::json!({"type": "text_delta", "text": format!("piece {index} ").repeat(12)}),
        })
        .collect();
    let started = Instant::now();
    for _ in 0..1000 {
        stores.sessions.append_transcript(&agent, &session.id, &turn).await.unwrap();
    }
    row(
        "append 1,000 turns of 100 transcript entries (fsync each turn)",
        format!("{:.0} turns/s", 1000.0 / started.elapsed().as_secs_f64()),
    );
    let (mut first, mut last) = (Vec::new(), Vec::new());
    let mut cursor = TranscriptCursor::START;
    let mut pages = 0;
    loop {
        let started = Instant::now();
        let page = stores.sessions.read_transcript(&agent, &session.id, cursor, 100).await.unwrap();
        let elapsed = started.elapsed();
        if pages < 50 {
            first.push(elapsed);
        }
        pages += 1;
        cursor = page.next;
        if !page.more {
            last.push(elapsed);
            break;
        }
        if pages > 950 {
            last.push(elapsed);
        }
    }
    assert_eq!(pages, 1000);
    row(
        "read a 100-entry transcript page of 100,000 (median, first 50 pages / last 50)",
        format!(
            "{:.2} ms / {:.2} ms",
            median(first).as_secs_f64() * 1e3,
            median(last).as_secs_f64() * 1e3
        ),
    );

    let sender = AgentName::parse("sender").unwrap();
    stores.agents.create(&sender, NewAgent::default()).await.unwrap();
    for index in 0..2000 {
        let message = NewMessage {
            from_agent: sender.clone().into(),
            to_agent: agent.clone(),
            message: format!("job {index}"),
            message_type: MessageType::Request,
            request_id: None,
        };
        stores.inbox.send(message).await.unwrap();
    }
    let ids: Vec<_> =
        stores.inbox.get_unclaimed(&agent).await.unwrap().into_iter().map(|m| m.id).collect();
    let started = Instant::now();
    let mut handles = Vec::new();
    for claimer in 0..64 {
        let (inbox, agent, ids) = (stores.inbox.clone(), agent.clone(), ids.clone());
        handles.push(tokio::spawn(async move {
            let me = orbit_store::Claimer {
                session: SessionId::new(),
                instance: orbit_store::InstanceId::new(),
                until: orbit_store::timestamp::now() + std::time::Duration::from_secs(600),
            };
            let mut won = 0;
            // Each claimer walks the list from its own offset, as racing sessions would.
            for index in 0..ids.len() {
                let id = ids[(index + claimer * 31) % ids.len()];
                if inbox.claim(&agent, &id, &me).await.unwrap().is_some() {
                    won += 1;
                }
            }
            won
        }));
    }
    let mut won = 0;
    for handle in handles {
        won += handle.await.unwrap();
    }
    let elapsed = started.elapsed();
    assert_eq!(won, ids.len());
    row(
        "claims with 64 claimers racing over 2,000 messages",
        format!(
            "{:.0} claims/s ({} claim attempts in {:.2} s)",
            won as f64 / elapsed.as_secs_f64(),
            64 * ids.len(),
            elapsed.as_secs_f64()
        ),
    );
}
