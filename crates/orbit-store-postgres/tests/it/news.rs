//! News relayed between nodes: apart from the control signals, in batches that arrive whole
//! and in order (a large item through a stored row), stored rows removed by the database's
//! clock, and a listener that lost its connection, or whose connection went silent, saying
//! news was lost.

use std::time::{Duration, Instant};

use orbit_store::{AgentName, InstanceId, Relayed, SessionId};
use orbit_store_postgres::{PgOptions, PgStore};
use orbit_testkit::postgres::TestDatabase;
use serde_json::{Value, json};

use crate::database::until_heard;

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

/// Two nodes' stores, the second's receiver of relayed news, and the database's guard.
type Hearing = (
    orbit_store::Stores,
    orbit_store::Stores,
    tokio::sync::broadcast::Receiver<Relayed>,
    crate::Guard,
);

/// Two nodes on one database, `a` and `b`, with `b`'s receiver of relayed news already
/// hearing `a`'s; the guard keeps the database.
async fn two_nodes_hearing_each_other() -> Hearing {
    let (first, guard) = crate::open(orbit_store::contract::options());
    let second = PgStore::open(PgOptions::new(guard.database.url.clone(), guard.workspaces.path()))
        .await
        .unwrap();
    let (a, b) = (first.stores(), second.stores());
    let mut heard = b.instances.watch_activity().unwrap();
    until_hearing_news(&a, &mut heard).await;
    (a, b, heard, guard)
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
    let (a, _b, mut heard, guard) = two_nodes_hearing_each_other().await;

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
    let (a, _b, mut heard, _guard) = two_nodes_hearing_each_other().await;
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
