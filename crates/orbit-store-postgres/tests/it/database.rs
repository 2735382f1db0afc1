//! What only a database store has to show: several stores (nodes) on one database (claims,
//! task changes, signals, a session's turn, shared approvals) and a database that is away.
//! Migrations are in `migrations`, the news relayed between nodes in `news`.

use std::collections::HashSet;
use std::time::{Duration, Instant};

use orbit_store::{
    AgentName, Claimer, ErrorKind, InstanceId, MessageType, NewAgent, NewMessage, SessionId,
    timestamp,
};
use orbit_store_postgres::{PgOptions, PgStore};

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
pub(crate) async fn until_heard(
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

fn node_named(name: &str) -> orbit_store::NodeIdentity {
    orbit_store::NodeIdentity { name: name.into(), data_dir: format!("{name}-dir") }
}
