//! The PostgreSQL store side by side with the filesystem store on the same machine: session
//! create and list with 10,000 sessions, inbox claims with 64 claimers across two nodes, and
//! loading 100,000 tasks as a scheduler does at start. Prints a markdown table
//! (docs/benchmarks.md). Needs a PostgreSQL server: ORBIT_TEST_DATABASE_URL, else a
//! throwaway cluster (`scripts/setup-postgres.sh` installs the binaries).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::HashSet;
use std::time::{Duration, Instant};

use orbit_store::{
    AgentName, Claimer, ContextMode, FsStore, InstanceId, MessageType, NewAgent, NewMessage,
    NewSession, NewTask, ScheduleType, SessionId, Stores, timestamp,
};
use orbit_store_postgres::{PgOptions, PgStore};
use orbit_testkit::postgres::TestDatabase;

const SESSIONS: usize = 10_000;
const MESSAGES: usize = 2_000;
const CLAIMERS: usize = 64;
const TASKS: usize = 100_000;

fn median(mut samples: Vec<Duration>) -> Duration {
    samples.sort();
    samples[samples.len() / 2]
}

fn ms(d: Duration) -> String {
    format!("{:.2} ms", d.as_secs_f64() * 1000.0)
}

/// Two "nodes" of one store kind: two handles with their own connections or file handles.
struct Pair {
    name: &'static str,
    first: Stores,
    second: Stores,
}

async fn sessions(pair: &Pair) -> (String, String) {
    let agent = AgentName::parse("sessions").unwrap();
    pair.first.agents.create(&agent, NewAgent::default()).await.unwrap();
    let started = Instant::now();
    for _ in 0..SESSIONS {
        pair.first.sessions.create(&agent, NewSession::default()).await.unwrap();
    }
    let rate = SESSIONS as f64 / started.elapsed().as_secs_f64();
    let mut samples = Vec::new();
    for _ in 0..20 {
        let started = Instant::now();
        let listed = pair.second.sessions.list_by_agent(&agent).await.unwrap();
        samples.push(started.elapsed());
        assert_eq!(listed.len(), SESSIONS);
    }
    (format!("{rate:.0} sessions/s"), ms(median(samples)))
}

async fn claims(pair: &Pair) -> String {
    let agent = AgentName::parse("claims").unwrap();
    pair.first.agents.create(&agent, NewAgent::default()).await.unwrap();
    for index in 0..MESSAGES {
        let message = NewMessage {
            from_agent: agent.clone().into(),
            to_agent: agent.clone(),
            message: format!("m{index}"),
            message_type: MessageType::Request,
            request_id: None,
        };
        pair.first.inbox.send(message).await.unwrap();
    }
    let started = Instant::now();
    let mut claimers = Vec::new();
    for worker in 0..CLAIMERS {
        let inbox =
            if worker % 2 == 0 { pair.first.inbox.clone() } else { pair.second.inbox.clone() };
        let agent = agent.clone();
        claimers.push(tokio::spawn(async move {
            let me = Claimer {
                session: SessionId::new(),
                instance: InstanceId::new(),
                until: timestamp::now() + time::Duration::minutes(5),
            };
            let mut won = Vec::new();
            loop {
                let batch = inbox.claim_unclaimed(&agent, &me, 1).await.unwrap();
                let Some(message) = batch.into_iter().next() else {
                    // Another claimer may hold the rest for a moment: done only when none is left.
                    if inbox.get_unclaimed(&agent).await.unwrap().is_empty() {
                        return won;
                    }
                    continue;
                };
                let token = message.lease.unwrap().token;
                inbox.mark_read(&agent, &message.id, &token).await.unwrap();
                won.push(message.id);
            }
        }));
    }
    let mut claimed = Vec::new();
    for claimer in claimers {
        claimed.extend(claimer.await.unwrap());
    }
    let elapsed = started.elapsed();
    assert_eq!(claimed.len(), MESSAGES);
    assert_eq!(claimed.into_iter().collect::<HashSet<_>>().len(), MESSAGES, "each claimed once");
    format!(
        "{:.0} claims/s ({MESSAGES} claimed and read in {:.2} s)",
        MESSAGES as f64 / elapsed.as_secs_f64(),
        elapsed.as_secs_f64()
    )
}

async fn tasks(stores: &Stores) -> (String, String) {
    let started = Instant::now();
    let mut writers = Vec::new();
    for writer in 0..100 {
        let stores = stores.clone();
        writers.push(tokio::spawn(async move {
            let agent = AgentName::parse(&format!("tasks-{writer}")).unwrap();
            stores.agents.create(&agent, NewAgent::default()).await.unwrap();
            for _ in 0..TASKS / 100 {
                let task = NewTask {
                    node: None,
                    name: None,
                    prompt: "check".into(),
                    schedule_type: ScheduleType::Cron,
                    schedule_value: "0 0 1 1 *".into(),
                    context_mode: ContextMode::Isolated,
                    timezone: None,
                    next_run: Some(timestamp::now() + time::Duration::days(30)),
                    worktree: false,
                    branch: None,
                };
                stores.tasks.create(&agent, task).await.unwrap();
            }
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    let rate = TASKS as f64 / started.elapsed().as_secs_f64();
    let started = Instant::now();
    let all = stores.tasks.list_all().await.unwrap();
    let load = started.elapsed();
    assert_eq!(all.len(), TASKS);
    (format!("{rate:.0} tasks/s (100 writers)"), format!("{:.2} s", load.as_secs_f64()))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let fs = Pair {
        name: "filesystem",
        first: FsStore::open(dir.path().join("data")).unwrap().stores(),
        second: FsStore::open(dir.path().join("data")).unwrap().stores(),
    };
    let database = TestDatabase::new();
    let open = || PgStore::open(PgOptions::new(database.url.clone(), dir.path().join("ws")));
    let pg = Pair {
        name: "PostgreSQL",
        first: open().await.unwrap().stores(),
        second: open().await.unwrap().stores(),
    };
    println!("| measurement | filesystem | PostgreSQL |\n| --- | --- | --- |");
    let mut rows: Vec<(String, Vec<String>)> = vec![
        (format!("create {SESSIONS} sessions, one after another"), vec![]),
        (format!("list {SESSIONS} sessions from the other node (median of 20)"), vec![]),
        (
            format!(
                "{CLAIMERS} claimers on two nodes over {MESSAGES} messages (claim + mark read)"
            ),
            vec![],
        ),
    ];
    // ORBIT_BENCH_SKIP_FS=1 measures PostgreSQL alone (the filesystem's claims take minutes).
    let pairs: Vec<&Pair> = if std::env::var_os("ORBIT_BENCH_SKIP_FS").is_some() {
        rows.iter_mut().for_each(|row| row.1.push("-".into()));
        vec![&pg]
    } else {
        vec![&fs, &pg]
    };
    // ORBIT_BENCH_CLAIMS_ONLY=1 measures the claims alone (the row most changed by the
    // filesystem store's claim path), skipping the sessions and the 100,000 tasks.
    let claims_only = std::env::var_os("ORBIT_BENCH_CLAIMS_ONLY").is_some();
    for pair in pairs {
        if claims_only {
            rows[0].1.push("-".into());
            rows[1].1.push("-".into());
        } else {
            let (create, list) = sessions(pair).await;
            rows[0].1.push(create);
            rows[1].1.push(list);
        }
        rows[2].1.push(claims(pair).await);
        eprintln!("{} done", pair.name);
    }
    for (name, cells) in &rows {
        println!("| {name} | {} |", cells.join(" | "));
    }
    if claims_only {
        return;
    }
    let (create, load) = tasks(&pg.first).await;
    println!("| create {TASKS} tasks of 100 agents (PostgreSQL) | | {create} |");
    println!(
        "| load {TASKS} tasks as a scheduler does at start (`list_all`) | see the scheduler benchmark | {load} |"
    );
}
