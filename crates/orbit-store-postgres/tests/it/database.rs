//! What only a database store has to show: migrations applied once by nodes starting
//! together, several stores (nodes) on one database, and a database that is away.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use orbit_store::{
    AgentName, Claimer, ErrorKind, InstanceId, MessageType, NewAgent, NewMessage, Relayed,
    SessionId, timestamp,
};
use orbit_store_postgres::{PgOptions, PgStore};
use orbit_testkit::postgres::TestDatabase;
use serde_json::{Value, json};

/// Nodes starting at once on a fresh database each apply the schema or find it applied;
/// none fails, and each migration is recorded once, by name and with its checksum.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_starting_together_migrate_once() {
    let database = TestDatabase::new();
    let workspaces = tempfile::tempdir().unwrap();
    let mut opens = Vec::new();
    for _ in 0..6 {
        let options = PgOptions::new(database.url.clone(), workspaces.path());
        opens.push(tokio::spawn(PgStore::open(options)));
    }
    for open in opens {
        open.await.unwrap().unwrap();
    }
    let recorded =
        database.query("SELECT version, name, checksum FROM orbit_migrations ORDER BY version");
    assert_eq!(recorded, fresh_records(), "each migration recorded once");
}

/// What a freshly migrated database records: one line per migration, `version|name|checksum`
/// with the checksum the SHA-256 of the migration's file.
fn fresh_records() -> String {
    let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files: Vec<_> = std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "{files:?}");
    let lines: Vec<String> = files
        .iter()
        .enumerate()
        .map(|(index, path)| {
            use sha2::Digest;
            let sql = std::fs::read_to_string(path).unwrap().replace("\r\n", "\n");
            let sum: String =
                sha2::Sha256::digest(&sql).iter().map(|b| format!("{b:02x}")).collect();
            let name = path.file_stem().unwrap().to_str().unwrap();
            format!("{}|{name}|{sum}", index + 1)
        })
        .collect();
    lines.join("\n")
}

/// Opens a store on `database`, as a node starting.
async fn open_on(database: &TestDatabase) -> orbit_store_postgres::Result<PgStore> {
    let workspaces = tempfile::tempdir().unwrap();
    PgStore::open(PgOptions::new(database.url.clone(), workspaces.path())).await
}

/// A database migrated by an Orbit that recorded versions alone (no name, no checksum) is
/// accepted, and the names and checksums are recorded from the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_an_older_orbit_migrated_gets_its_checksums_recorded() {
    let database = TestDatabase::new();
    drop(open_on(&database).await.unwrap());
    // The table as the previous binary made it: versions and when they were applied.
    database.execute("ALTER TABLE orbit_migrations DROP COLUMN name, DROP COLUMN checksum");
    let count = fresh_records().lines().count().to_string();
    assert_eq!(database.query("SELECT count(*) FROM orbit_migrations"), count);
    let store = open_on(&database).await.unwrap();
    assert_eq!(
        database.query("SELECT version, name, checksum FROM orbit_migrations ORDER BY version"),
        fresh_records()
    );
    assert!(store.stores().agents.list().await.unwrap().is_empty(), "and it serves");
}

/// A database the previous release migrated (versions 1 to 6, recorded without names or
/// checksums) is brought up to date in one start: its six migrations get their checksums
/// recorded, the newer ones are applied, and it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_the_previous_release_is_recorded_and_migrated_in_one_start() {
    let database = TestDatabase::new();
    drop(open_on(&database).await.unwrap());
    // Undo what migrations 7 and 8 made, and the records this release keeps: the schema as
    // the previous binary left it.
    database.execute(
        "DROP TABLE relayed_news; ALTER TABLE instances DROP COLUMN address; \
         DELETE FROM orbit_migrations WHERE version > 6; \
         ALTER TABLE orbit_migrations DROP COLUMN name, DROP COLUMN checksum",
    );
    assert_eq!(database.query("SELECT count(*) FROM orbit_migrations"), "6");
    let store = open_on(&database).await.unwrap();
    assert_eq!(
        database.query("SELECT version, name, checksum FROM orbit_migrations ORDER BY version"),
        fresh_records()
    );
    assert_eq!(database.query("SELECT count(*) FROM relayed_news"), "0", "7 applied");
    assert_eq!(
        database.query(
            "SELECT count(*) FROM information_schema.columns \
             WHERE table_name = 'instances' AND column_name = 'address'"
        ),
        "1",
        "8 applied"
    );
    assert!(store.stores().agents.list().await.unwrap().is_empty(), "and it serves");
}

/// A runtime role that does not own the schema (an administrator's role made it, and gave
/// this one the rights to read and write it) starts on a database that is up to date: the
/// start changes no table's definition then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_does_not_own_the_schema_starts_on_an_up_to_date_database() {
    let database = TestDatabase::new();
    drop(open_on(&database).await.unwrap());
    let role = format!("runtime_{}", ulid::Ulid::new().to_string().to_lowercase());
    database.execute(&format!(
        "CREATE ROLE {role} LOGIN; \
         GRANT USAGE ON SCHEMA public TO {role}; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}; \
         GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {role}"
    ));
    let config: tokio_postgres::Config = database.url.parse().unwrap();
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(name) => name.clone(),
        tokio_postgres::config::Host::Unix(dir) => dir.display().to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let dbname = config.get_dbname().unwrap();
    let url = format!("host={host} port={port} user={role} dbname={dbname}");
    let workspaces = tempfile::tempdir().unwrap();
    let store = PgStore::open(PgOptions::new(url, workspaces.path())).await.unwrap();
    assert!(store.stores().agents.list().await.unwrap().is_empty(), "and it serves");
    drop(store);
    database.execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"));
}

/// A node whose migration differs from the one the database applied (edited after release)
/// refuses to start, naming the migration; so does a node older than the database's schema,
/// told to upgrade. Neither changes the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_migration_or_a_newer_schema_refuses_the_start() {
    let database = TestDatabase::new();
    drop(open_on(&database).await.unwrap());
    let before =
        database.query("SELECT version, name, checksum FROM orbit_migrations ORDER BY version");
    let fourth = database.query("SELECT checksum FROM orbit_migrations WHERE version = 4");
    database.execute(&format!(
        "UPDATE orbit_migrations SET checksum = '{}' WHERE version = 4",
        "0".repeat(64)
    ));
    let err = open_on(&database).await.err().expect("an edited migration is refused");
    assert!(
        matches!(&err, orbit_store_postgres::Error::EditedMigration { version: 4, name, .. } if name == "0004_session_turns"),
        "{err}"
    );
    assert!(err.to_string().contains("edited after it was applied"), "{err}");

    database
        .execute(&format!("UPDATE orbit_migrations SET checksum = '{fourth}' WHERE version = 4"));
    database.execute(
        "INSERT INTO orbit_migrations (version, name, checksum) VALUES (99, '0099_future', 'ab')",
    );
    let err = open_on(&database).await.err().expect("a newer schema is refused");
    assert!(matches!(&err, orbit_store_postgres::Error::NewerSchema { version: 99, .. }), "{err}");
    assert!(err.to_string().contains("Upgrade this node"), "{err}");
    assert!(err.to_string().contains("0099_future"), "{err}");
    database.execute("DELETE FROM orbit_migrations WHERE version = 99");
    assert_eq!(
        database.query("SELECT version, name, checksum FROM orbit_migrations ORDER BY version"),
        before
    );
    open_on(&database).await.unwrap();
}

/// 64 claimers on two nodes (two stores, two pools) share 500 messages: each is claimed
/// exactly once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn claims_are_exclusive_across_nodes() {
    let (first, guard) = crate::open(orbit_store::contract::options());
    let second = PgStore::open(PgOptions::new(guard.database.url.clone(), guard.workspaces.path()))
        .await
        .unwrap();
    let (a, b) = (first.stores(), second.stores());
    let bot = AgentName::parse("bot").unwrap();
    a.agents.create(&bot, NewAgent::default()).await.unwrap();
    let mut sent = HashSet::new();
    for index in 0..500 {
        let message = NewMessage {
            from_agent: bot.clone().into(),
            to_agent: bot.clone(),
            message: format!("m{index}"),
            message_type: MessageType::Request,
            request_id: None,
        };
        sent.insert(a.inbox.send(message).await.unwrap().id);
    }
    let mut claimers = Vec::new();
    for worker in 0..64 {
        let inbox = if worker % 2 == 0 { a.inbox.clone() } else { b.inbox.clone() };
        let bot = bot.clone();
        claimers.push(tokio::spawn(async move {
            let me = Claimer {
                session: SessionId::new(),
                instance: InstanceId::new(),
                until: timestamp::now() + time::Duration::minutes(1),
            };
            let mut won = Vec::new();
            loop {
                let batch = inbox.claim_unclaimed(&bot, &me, 3).await.unwrap();
                if batch.is_empty() {
                    return won;
                }
                won.extend(batch.into_iter().map(|m| m.id));
            }
        }));
    }
    let mut claimed = Vec::new();
    for claimer in claimers {
        claimed.extend(claimer.await.unwrap());
    }
    assert_eq!(claimed.len(), sent.len(), "no message claimed twice");
    assert_eq!(claimed.into_iter().collect::<HashSet<_>>(), sent);
}

/// A database that does not answer makes operations fail as unavailable within the
/// operation deadline, rather than hang.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unreachable_database_is_unavailable_not_a_hang() {
    let (store, guard) = crate::open(orbit_store::contract::options());
    // The same store's settings, pointed at a socket directory where no server listens.
    let nowhere = tempfile::tempdir().unwrap();
    let url = format!("postgresql:///orbit?host={}&user=orbit", nowhere.path().display());
    let mut options = PgOptions::new(url, guard.workspaces.path());
    options.connect_timeout = Duration::from_secs(2);
    options.operation_timeout = Duration::from_secs(4);
    let started = Instant::now();
    let err = PgStore::open(options).await.err().expect("no server there");
    assert!(started.elapsed() < Duration::from_secs(10), "it failed within the deadline");
    let orbit_store_postgres::Error::Store(err) = err else { panic!("{err}") };
    assert_eq!(err.kind(), ErrorKind::Unavailable, "{err}");
    // The store that did open answers normally.
    assert!(store.stores().agents.list().await.unwrap().is_empty());
}

/// A task changed through one node wakes the other node's scheduler at once (its
/// `watch_changes` ticks on the notification), and the change is in the feed it reads.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_task_change_on_one_node_wakes_the_other() {
    let (first, guard) = crate::open(orbit_store::contract::options());
    let second = PgStore::open(PgOptions::new(guard.database.url.clone(), guard.workspaces.path()))
        .await
        .unwrap();
    let (a, b) = (first.stores(), second.stores());
    let bot = AgentName::parse("bot").unwrap();
    a.agents.create(&bot, NewAgent::default()).await.unwrap();
    let start = b.tasks.changes_since(None).await.unwrap();
    let mut ticks = b.tasks.watch_changes();
    // The listener's first tick, at connecting, may come any time: start from a quiet watch.
    until_listening(&b).await;
    ticks.borrow_and_update();
    let task = a.tasks.create(&bot, interval_task("p")).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), ticks.changed())
        .await
        .expect("the other node was told within 5 s")
        .unwrap();
    let seen = b.tasks.changes_since(Some(start.cursor)).await.unwrap();
    assert_eq!(seen.changes.iter().map(|c| c.task).collect::<Vec<_>>(), vec![task.id]);
}

/// An agent deleted through one node takes its tasks with it (by the foreign key), and the
/// other node's scheduler is woken and reads a change for each of them in the feed, so it
/// stops planning them at once rather than at its next re-read of every task.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_agent_deleted_on_one_node_tells_the_other_of_its_tasks() {
    let (first, guard) = crate::open(orbit_store::contract::options());
    let second = PgStore::open(PgOptions::new(guard.database.url.clone(), guard.workspaces.path()))
        .await
        .unwrap();
    let (a, b) = (first.stores(), second.stores());
    let bot = AgentName::parse("bot").unwrap();
    a.agents.create(&bot, NewAgent::default()).await.unwrap();
    let mut made = HashSet::new();
    for prompt in ["one", "two", "three"] {
        made.insert(a.tasks.create(&bot, interval_task(prompt)).await.unwrap().id);
    }
    let start = b.tasks.changes_since(None).await.unwrap();
    let mut ticks = b.tasks.watch_changes();
    // The listener's first tick, at connecting, may come any time: start from a quiet watch.
    until_listening(&b).await;
    ticks.borrow_and_update();
    a.agents.delete(&bot).await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), ticks.changed())
        .await
        .expect("the other node was told within 5 s")
        .unwrap();
    let seen = b.tasks.changes_since(Some(start.cursor)).await.unwrap();
    assert!(!seen.reset);
    let deleted: HashSet<_> = seen.changes.iter().map(|c| c.task).collect();
    assert_eq!(deleted, made, "a change for each of the agent's tasks");
    for task in &made {
        let gone = b.tasks.get(&bot, task).await.unwrap_err();
        assert_eq!(gone.kind(), ErrorKind::NotFound, "{gone}");
    }
}

/// Waits until `stores`' listening connection is up: it hears a signal sent through it. Its
/// tick at connecting comes before it hands on any signal, so the watch is quiet from then.
async fn until_listening(stores: &orbit_store::Stores) {
    let mut heard = stores.instances.watch_signals().expect("a database store has signals");
    let probe = orbit_store::Signal {
        from: InstanceId::new(),
        what: orbit_store::SignalKind::Done { request: "probe".into() },
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        // A signal sent before the connection listens is lost: send again until one is heard.
        stores.instances.signal(probe.clone()).await.unwrap();
        if let Ok(Ok(_)) = tokio::time::timeout(Duration::from_millis(100), heard.recv()).await {
            return;
        }
        assert!(Instant::now() < deadline, "the store never listened");
    }
}

/// Sends `signal` until `heard` hears it (a signal sent before the connection listens is
/// lost) or `within` passes: what was heard, or `None`.
async fn until_heard(
    stores: &orbit_store::Stores,
    signal: &orbit_store::Signal,
    heard: &mut tokio::sync::broadcast::Receiver<orbit_store::Signal>,
    within: Duration,
) -> Option<orbit_store::Signal> {
    tokio::time::timeout(within, async {
        loop {
            stores.instances.signal(signal.clone()).await.unwrap();
            if let Ok(got) = tokio::time::timeout(Duration::from_millis(200), heard.recv()).await {
                return got.unwrap();
            }
        }
    })
    .await
    .ok()
}

fn interval_task(prompt: &str) -> orbit_store::NewTask {
    orbit_store::NewTask {
        node: None,
        name: None,
        prompt: prompt.into(),
        schedule_type: orbit_store::ScheduleType::Interval,
        schedule_value: "60000".into(),
        context_mode: orbit_store::ContextMode::Isolated,
        timezone: None,
        next_run: None,
        worktree: false,
        branch: None,
    }
}

/// A signal sent through one node is heard by the other, whole, and by the sender too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signal_from_one_node_reaches_the_other() {
    let (first, guard) = crate::open(orbit_store::contract::options());
    let second = PgStore::open(PgOptions::new(guard.database.url.clone(), guard.workspaces.path()))
        .await
        .unwrap();
    let (a, b) = (first.stores(), second.stores());
    let mut heard_by_b = b.instances.watch_signals().expect("PostgreSQL carries signals");
    let mut heard_by_a = a.instances.watch_signals().unwrap();
    let signal = orbit_store::Signal {
        from: InstanceId::new(),
        what: orbit_store::SignalKind::SessionDeleted {
            agent: AgentName::parse("bot").unwrap(),
            session: SessionId::new(),
        },
    };
    // The listening connections are made as the stores open, at a moment this test cannot
    // see: the signal is sent again until each store has heard it, which a store that never
    // listens never does.
    for heard in [&mut heard_by_b, &mut heard_by_a] {
        let got = tokio::time::timeout(Duration::from_secs(30), async {
            loop {
                a.instances.signal(signal.clone()).await.unwrap();
                if let Ok(got) =
                    tokio::time::timeout(Duration::from_millis(200), heard.recv()).await
                {
                    return got.unwrap();
                }
            }
        })
        .await
        .expect("heard within 30 s");
        assert_eq!(got, signal);
    }
}

/// A session's turn is held by one node at a time: another node is refused while the lease
/// is live and takes it once it lapsed; the holder may take it again; a stale token renews
/// nothing and releases nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_turn_is_held_by_one_node_at_a_time() {
    let (store, _guard) = crate::open(orbit_store::contract::options());
    let stores = store.stores();
    let bot = AgentName::parse("bot").unwrap();
    stores.agents.create(&bot, NewAgent::default()).await.unwrap();
    let session = stores.sessions.create(&bot, orbit_store::NewSession::default()).await.unwrap();
    let (node_a, node_b) = (InstanceId::new(), InstanceId::new());
    let now = timestamp::now();
    let lease = Duration::from_secs(30);
    let held_by_a = orbit_store::Lease::new(node_a, now + lease);
    let sessions = &stores.sessions;
    sessions.hold_turn(&bot, &session.id, &held_by_a, now).await.unwrap();

    let by_b = orbit_store::Lease::new(node_b, now + lease);
    let refused = sessions.hold_turn(&bot, &session.id, &by_b, now).await.unwrap_err();
    assert_eq!(refused.kind(), ErrorKind::Conflict, "{refused}");
    // A itself may take it again (its pool runs one turn of a session at a time).
    let again_by_a = orbit_store::Lease::new(node_a, now + lease);
    sessions.hold_turn(&bot, &session.id, &again_by_a, now).await.unwrap();
    let stale = sessions.renew_turn(&bot, &session.id, &held_by_a.token, now + lease).await;
    assert_eq!(stale.unwrap_err().kind(), ErrorKind::Conflict, "the old token holds nothing");
    sessions.release_turn(&bot, &session.id, &held_by_a.token).await.unwrap();
    let still = sessions.hold_turn(&bot, &session.id, &by_b, now).await.unwrap_err();
    assert_eq!(still.kind(), ErrorKind::Conflict, "a stale release let nothing go");

    // Once A's lease lapsed (A died), B takes the turn.
    let later = now + lease + Duration::from_secs(1);
    let by_b = orbit_store::Lease::new(node_b, later + lease);
    sessions.hold_turn(&bot, &session.id, &by_b, later).await.unwrap();
    sessions.renew_turn(&bot, &session.id, &by_b.token, later + lease).await.unwrap();
    sessions.release_turn(&bot, &session.id, &by_b.token).await.unwrap();
    sessions.hold_turn(&bot, &session.id, &again_by_a, now).await.unwrap();

    let missing = sessions.hold_turn(&bot, &SessionId::new(), &by_b, now).await.unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound, "{missing}");
}

/// Who holds a session's turn is the registered instance with the live lease, named by its
/// node: none once the lease lapsed, or when nothing holds it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sessions_turn_holder_is_named_while_its_lease_lives() {
    let (store, _guard) = crate::open(orbit_store::contract::options());
    let stores = store.stores();
    let bot = AgentName::parse("bot").unwrap();
    stores.agents.create(&bot, NewAgent::default()).await.unwrap();
    let session = stores.sessions.create(&bot, orbit_store::NewSession::default()).await.unwrap();
    let now = timestamp::now();
    let lease = Duration::from_secs(30);
    let node_a = stores
        .instances
        .register(InstanceId::new(), "host", 1, &node_named("worker-a"), None, now + lease)
        .await
        .unwrap();
    let sessions = &stores.sessions;
    assert_eq!(sessions.turn_holder(&bot, &session.id, now).await.unwrap(), None);
    let held = orbit_store::Lease::new(node_a.id, now + lease);
    sessions.hold_turn(&bot, &session.id, &held, now).await.unwrap();
    let holder = sessions.turn_holder(&bot, &session.id, now).await.unwrap().unwrap();
    assert_eq!((holder.id, holder.node), (node_a.id, Some(node_named("worker-a"))));
    let lapsed = now + lease + Duration::from_secs(1);
    assert_eq!(sessions.turn_holder(&bot, &session.id, lapsed).await.unwrap(), None);
    sessions.release_turn(&bot, &session.id, &held.token).await.unwrap();
    assert_eq!(sessions.turn_holder(&bot, &session.id, now).await.unwrap(), None);
}

/// The database shares approvals (the contract also passes for a store that shares none, so
/// this is where losing PostgreSQL's implementation fails): a shared call is listed, and
/// the list is a list even when empty.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_database_shares_approvals() {
    let (store, _guard) = crate::open(orbit_store::contract::options());
    let stores = store.stores();
    let now = timestamp::now();
    assert_eq!(stores.instances.shared_approvals(now).await.unwrap(), Some(Vec::new()));
    let lease = Duration::from_secs(30);
    let instance = stores
        .instances
        .register(InstanceId::new(), "host", 1, &node_named("a"), None, now + lease)
        .await
        .unwrap();
    let bot = AgentName::parse("bot").unwrap();
    stores.agents.create(&bot, NewAgent::default()).await.unwrap();
    let session = stores.sessions.create(&bot, orbit_store::NewSession::default()).await.unwrap();
    let approval = orbit_store::PendingApproval {
        request_id: orbit_store::new_ulid().to_string(),
        agent: bot,
        session: session.id,
        run: None,
        tool_name: "Write".into(),
        input: serde_json::json!({"file_path": "a.txt", "content": "hi"}),
        tool_use_id: "toolu_01".into(),
        created_at: now,
        expires_at: now + lease,
        instance: instance.id,
    };
    stores.instances.share_approval(&approval).await.unwrap();
    let listed = stores.instances.shared_approvals(timestamp::now()).await.unwrap();
    assert_eq!(listed, Some(vec![approval.clone()]));

    // A huge input (a Write of megabytes) is kept as a preview of bounded size.
    let content = "x".repeat(4 << 20);
    let huge = orbit_store::PendingApproval {
        request_id: orbit_store::new_ulid().to_string(),
        input: serde_json::json!({"file_path": "big.txt", "content": content}),
        ..approval.clone()
    };
    stores.instances.share_approval(&huge).await.unwrap();
    let listed = stores.instances.shared_approvals(timestamp::now()).await.unwrap().unwrap();
    let kept = &listed[1].input;
    assert_eq!(
        (kept["truncated"].as_bool(), kept["bytes"].as_u64()),
        (Some(true), Some(huge.input.to_string().len() as u64))
    );
    let preview = kept["preview"].as_str().unwrap();
    assert!(preview.starts_with(r#"{"content":"xxx"#), "{preview:.40}");
    assert!(preview.len() < 33 * 1024, "{} bytes", preview.len());
    assert_eq!(listed[1].tool_name, huge.tool_name);
}

/// Relayed activity travels apart from the control signals: a flood of it larger than a
/// receiver's buffer leaves an abort sent after it to be heard, not lost in a lag.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_activity_never_crowds_out_a_control_signal() {
    let (store, _guard) = crate::open(orbit_store::contract::options());
    let stores = store.stores();
    let mut control = stores.instances.watch_signals().unwrap();
    let mut activity = stores.instances.watch_activity().expect("kept apart");
    let bot = AgentName::parse("bot").unwrap();
    let abort = orbit_store::Signal {
        from: InstanceId::new(),
        what: orbit_store::SignalKind::AbortTurn {
            agent: bot.clone(),
            session: SessionId::new(),
            request: "r".into(),
            hold: None,
        },
    };
    // Listening by now: an abort is heard (the connection is made as the store opens).
    let heard = until_heard(&stores, &abort, &mut control, Duration::from_secs(30))
        .await
        .expect("heard within 30 s");
    assert_eq!(heard, abort);
    while control.try_recv().is_ok() {}

    // One relay per item, so that there are more notifications than the receiver holds.
    let from = InstanceId::new();
    for n in 0..1100 {
        stores.instances.relay(from, vec![json!({"n": n})]).await.unwrap();
    }
    stores.instances.signal(abort.clone()).await.unwrap();
    let first = tokio::time::timeout(Duration::from_secs(30), control.recv()).await.unwrap();
    assert_eq!(first.unwrap(), abort, "the abort, not a lag");
    let relayed = tokio::time::timeout(Duration::from_secs(30), activity.recv()).await.unwrap();
    assert!(
        matches!(relayed, Err(tokio::sync::broadcast::error::RecvError::Lagged(_))),
        "the flood itself overflowed its own receiver: {relayed:?}"
    );
}

/// Waits until `stores` hears news it relays (its listening connection is up), and drains
/// what it heard.
async fn until_hearing_news(
    stores: &orbit_store::Stores,
    heard: &mut tokio::sync::broadcast::Receiver<Relayed>,
) {
    let probe = InstanceId::new();
    tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            stores.instances.relay(probe, vec![json!("probe")]).await.unwrap();
            if let Ok(Ok(Relayed::News { from, .. })) =
                tokio::time::timeout(Duration::from_millis(200), heard.recv()).await
                && from == probe
            {
                return;
            }
        }
    })
    .await
    .expect("heard within 30 s");
    while heard.try_recv().is_ok() {}
}

/// News relayed in batches reaches the other node whole and in order: thousands of items
/// packed into few notifications, and an item larger than a notification's payload carried
/// whole (through a row) in its place.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn relayed_news_reaches_another_node_whole_and_in_order() {
    let (first, guard) = crate::open(orbit_store::contract::options());
    let second = PgStore::open(PgOptions::new(guard.database.url.clone(), guard.workspaces.path()))
        .await
        .unwrap();
    let (a, b) = (first.stores(), second.stores());
    let mut heard = b.instances.watch_activity().unwrap();
    until_hearing_news(&a, &mut heard).await;

    let from = InstanceId::new();
    let mut sent = Vec::new();
    for batch in 0..5 {
        let mut news: Vec<Value> =
            (0..1000).map(|n| json!({"batch": batch, "n": n, "pad": "x".repeat(50)})).collect();
        if batch == 2 {
            news.insert(500, json!({"large": "é".repeat(20_000)}));
        }
        a.instances.relay(from, news.clone()).await.unwrap();
        sent.extend(news);
    }
    let mut received = Vec::new();
    let mut notifications = 0;
    while received.len() < sent.len() {
        let next = tokio::time::timeout(Duration::from_secs(30), heard.recv()).await;
        match next.expect("heard within 30 s").unwrap() {
            Relayed::News { from: sender, news } if sender == from => {
                notifications += 1;
                received.extend(news);
            }
            other => panic!("{other:?}"),
        }
    }
    assert_eq!(received, sent, "every item whole, in order");
    assert!(notifications < 60, "packed: {notifications} notifications for 5001 items");
    assert_eq!(guard.database.query("SELECT count(*) FROM relayed_news"), "1");
}

/// The rows of stored news are removed by the database's clock, which wrote them: a row
/// older than ten minutes by it goes at the next stored relay, a younger one stays.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_news_is_removed_by_the_databases_clock() {
    let (store, guard) = crate::open(orbit_store::contract::options());
    guard.database.execute(
        "INSERT INTO relayed_news (at, payload) VALUES \
         (now() - interval '11 minutes', 'old'), (now() - interval '9 minutes', 'young')",
    );
    let large = json!({"large": "é".repeat(20_000)});
    store.stores().instances.relay(InstanceId::new(), vec![large]).await.unwrap();
    assert_eq!(
        guard
            .database
            .query("SELECT string_agg(left(payload, 5), ',' ORDER BY id) FROM relayed_news"),
        "young,{\"fro"
    );
}

/// A node whose listening connection is lost and made again is told that news may have been
/// lost meanwhile, and hears news again afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_that_reconnects_says_news_was_lost() {
    let (store, guard) = crate::open(orbit_store::contract::options());
    let stores = store.stores();
    let mut heard = stores.instances.watch_activity().unwrap();
    until_hearing_news(&stores, &mut heard).await;
    let listener = format!("orbit listener (pid {})", std::process::id());
    let ended = guard.database.query(&format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity \
         WHERE application_name = '{listener}' AND datname = current_database()"
    ));
    assert_eq!(ended, "1", "one listening connection");
    let next = tokio::time::timeout(Duration::from_secs(30), heard.recv()).await;
    assert_eq!(next.expect("told within 30 s").unwrap(), Relayed::Lost);
    until_hearing_news(&stores, &mut heard).await;
}

/// A listening connection that stops answering without closing (a firewall forgot the flow,
/// the database's host died) is given up and made again, and the node told news was lost,
/// long before TCP's own two hours.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_listener_whose_connection_went_silent_says_news_was_lost() {
    let database = TestDatabase::new();
    let proxy = SilencingProxy::start(&database.url).await;
    let workspaces = tempfile::tempdir().unwrap();
    let store = PgStore::open(PgOptions::new(proxy.url.clone(), workspaces.path())).await.unwrap();
    let stores = store.stores();
    let mut heard = stores.instances.watch_activity().unwrap();
    until_hearing_news(&stores, &mut heard).await;
    proxy.silence_open_connections();
    // Noticed at the next quiet check (10 s) when it does not answer within 5 s.
    let next = tokio::time::timeout(Duration::from_secs(40), heard.recv()).await;
    assert_eq!(next.expect("told within 40 s").unwrap(), Relayed::Lost);
}

/// A TCP proxy on 127.0.0.1 to a database, whose open connections can be made to stop
/// forwarding without closing, as a peer that went away silently; later connections work.
struct SilencingProxy {
    /// The database's URL through the proxy.
    url: String,
    /// Connections numbered below this forward nothing more.
    silenced_below: std::sync::Arc<std::sync::atomic::AtomicU64>,
    next: std::sync::Arc<std::sync::atomic::AtomicU64>,
}

impl SilencingProxy {
    async fn start(url: &str) -> Self {
        use std::sync::Arc;
        use std::sync::atomic::{AtomicU64, Ordering};

        let config: tokio_postgres::Config = url.parse().unwrap();
        let host = config.get_hosts()[0].clone();
        let port = config.get_ports().first().copied().unwrap_or(5432);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let mut through = format!(
            "host=127.0.0.1 port={} user={} dbname={}",
            listener.local_addr().unwrap().port(),
            config.get_user().unwrap(),
            config.get_dbname().unwrap(),
        );
        if let Some(password) = config.get_password() {
            through += &format!(" password={}", String::from_utf8_lossy(password));
        }
        let silenced_below = Arc::new(AtomicU64::new(0));
        let next = Arc::new(AtomicU64::new(0));
        let (silenced, numbering) = (silenced_below.clone(), next.clone());
        tokio::spawn(async move {
            loop {
                let (client, _) = listener.accept().await.unwrap();
                let number = numbering.fetch_add(1, Ordering::SeqCst);
                let server: Box<dyn Duplex> = match &host {
                    tokio_postgres::config::Host::Tcp(name) => Box::new(
                        tokio::net::TcpStream::connect((name.as_str(), port)).await.unwrap(),
                    ),
                    tokio_postgres::config::Host::Unix(dir) => Box::new(
                        tokio::net::UnixStream::connect(dir.join(format!(".s.PGSQL.{port}")))
                            .await
                            .unwrap(),
                    ),
                };
                let (client_read, client_write) = tokio::io::split(client);
                let (server_read, server_write) = tokio::io::split(server);
                tokio::spawn(forward(client_read, server_write, number, silenced.clone()));
                tokio::spawn(forward(server_read, client_write, number, silenced.clone()));
            }
        });
        Self { url: through, silenced_below, next }
    }

    fn silence_open_connections(&self) {
        use std::sync::atomic::Ordering;
        self.silenced_below.store(self.next.load(Ordering::SeqCst), Ordering::SeqCst);
    }
}

/// Copies connection `number`'s bytes from `from` to `to` until either closes, or until the
/// connection is silenced: then holds both open without a word.
async fn forward(
    mut from: impl tokio::io::AsyncRead + Unpin,
    mut to: impl tokio::io::AsyncWrite + Unpin,
    number: u64,
    silenced_below: std::sync::Arc<std::sync::atomic::AtomicU64>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut buffer = vec![0; 16 * 1024];
    loop {
        let Ok(read) = from.read(&mut buffer).await else { return };
        if read == 0 {
            return;
        }
        if number < silenced_below.load(std::sync::atomic::Ordering::SeqCst) {
            std::future::pending::<()>().await;
        }
        if to.write_all(&buffer[..read]).await.is_err() {
            return;
        }
    }
}

/// A stream to the database, by TCP or a Unix socket.
trait Duplex: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin {}
impl<T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin> Duplex for T {}

/// A stored row the listener cannot read (a table locked by a migration or an operator)
/// does not hold up the control signals behind it: the node is told news was lost and the
/// signals still come, while the lock is held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stored_row_held_up_does_not_hold_up_the_signals() {
    let (store, guard) = crate::open(orbit_store::contract::options());
    let stores = store.stores();
    let mut heard = stores.instances.watch_activity().unwrap();
    let mut signals = stores.instances.watch_signals().unwrap();
    until_hearing_news(&stores, &mut heard).await;
    // Another connection takes the table and holds it until the end of the test.
    let (locking, connection) =
        tokio_postgres::connect(&guard.database.url, tokio_postgres::NoTls).await.unwrap();
    tokio::spawn(connection);
    locking.batch_execute("BEGIN; LOCK TABLE relayed_news IN ACCESS EXCLUSIVE MODE").await.unwrap();
    let pointer = json!({"from": InstanceId::new().to_string(), "stored": 1}).to_string();
    guard.database.query(&format!("SELECT pg_notify('orbit_activity', '{pointer}')"));
    let next = tokio::time::timeout(Duration::from_secs(60), heard.recv()).await;
    assert_eq!(next.expect("told within 60 s, the lock still held").unwrap(), Relayed::Lost);
    let signal = orbit_store::Signal {
        from: InstanceId::new(),
        what: orbit_store::SignalKind::SessionDeleted {
            agent: AgentName::parse("bot").unwrap(),
            session: SessionId::new(),
        },
    };
    let got = until_heard(&stores, &signal, &mut signals, Duration::from_secs(60))
        .await
        .expect("a signal heard within 60 s, the lock still held");
    assert_eq!(got, signal);
    // The lock was held throughout: its transaction is still open.
    locking.batch_execute("COMMIT").await.unwrap();
}

/// The relay's transport, measured (not asserted; docs/benchmarks.md): items from one node to
/// another, one notification per item as the relay sent them before, and in batches.
/// `cargo test -p orbit-store-postgres --test it relay_throughput -- --ignored --nocapture`
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "a measurement"]
async fn relay_throughput() {
    let (first, guard) = crate::open(orbit_store::contract::options());
    let second = PgStore::open(PgOptions::new(guard.database.url.clone(), guard.workspaces.path()))
        .await
        .unwrap();
    let (a, b) = (first.stores(), second.stores());
    let mut heard = b.instances.watch_activity().unwrap();
    until_hearing_news(&a, &mut heard).await;
    // A turn's end as the relay sends it: about 230 bytes.
    let item = json!({"at": "2026-12-01T15:00:00.123456Z", "activity": {"type": "turnEnded",
        "agent": "reviewer", "session": "01KBDQ6ZQ0000000000000000AB",
        "ending": {"success": true, "costUsd": 0.0123, "error": null}}});
    for (label, items, batch) in
        [("one notification each", 2_000, 1), ("batches of 1024", 50_000, 1024)]
    {
        let from = InstanceId::new();
        let started = Instant::now();
        let sending = {
            let a = a.clone();
            let item = item.clone();
            tokio::spawn(async move {
                let mut left = items;
                while left > 0 {
                    let now = left.min(batch);
                    a.instances.relay(from, vec![item.clone(); now]).await.unwrap();
                    left -= now;
                }
                started.elapsed()
            })
        };
        let mut received = 0;
        while received < items {
            match heard.recv().await.unwrap() {
                Relayed::News { from: sender, news } if sender == from => received += news.len(),
                _ => {}
            }
        }
        let (sent, heard_all) = (sending.await.unwrap(), started.elapsed());
        let rate = items as f64 / heard_all.as_secs_f64();
        eprintln!(
            "{label}: {items} items sent in {sent:?}, heard in {heard_all:?}: {rate:.0} items/s"
        );
    }
}

fn node_named(name: &str) -> orbit_store::NodeIdentity {
    orbit_store::NodeIdentity { name: name.into(), data_dir: format!("{name}-dir") }
}
