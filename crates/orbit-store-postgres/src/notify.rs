//! Changes made by other nodes reach this one at once: a connection of its own `LISTEN`s to
//! the channel every task change notifies (`tasks::publish`, delivered at commit), and each
//! notification ticks this store's `watch_changes`, which wakes the scheduler to read the
//! change feed. A notification missed while the connection was down is made up for by a tick
//! at every reconnect and by the scheduler's own periodic re-read of the feed (every few
//! seconds), so a lost notification delays a change, never loses it.
//!
//! The same connection listens for nodes' signals (`InstanceStore::signal`): each is handed
//! to this node's `watch_signals` receivers. A signal missed while the connection was down
//! is lost; what it told is found out otherwise (a deleted session's record is gone).
//!
//! And for nodes' relayed news (`InstanceStore::relay`, read by `news`), handed to the
//! `watch_activity` receivers. News missed while the connection was down is lost too, and is
//! not found out otherwise: when the connection listens again after it was lost (or after
//! connecting failed), the receivers are told first (`Relayed::Lost`), so that the event
//! streams tell their clients to reload. The connection only reads, so it is asked for an
//! answer whenever it has been quiet for a while ([`GONE_CHECK`]), and the read of a stored
//! row has a deadline ([`ANSWER_WITHIN`]): a connection that stopped answering without
//! closing, or a read held up, is given up and made again rather than left deaf.

use std::sync::Weak;
use std::time::Duration;

use futures_util::StreamExt;
use orbit_store::Relayed;
use tokio_postgres::AsyncMessage;

use crate::{Inner, news};

/// The channel task changes are announced on.
pub(crate) const TASK_CHANGES: &str = "orbit_task_changes";

/// The channel nodes' signals travel on, each a JSON `orbit_store::Signal`.
pub(crate) const SIGNALS: &str = "orbit_signals";

/// The channel nodes' relayed activity travels on (`SignalKind::Activity` signals), apart
/// from the others so that it never crowds them out of a receiver's buffer.
pub(crate) const ACTIVITY: &str = "orbit_activity";

/// How long to wait before connecting again after the listening connection failed.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// How often a quiet listener checks that its store still exists and that its connection
/// still answers.
const GONE_CHECK: Duration = Duration::from_secs(10);

/// How long the listening connection may take to answer a query (the check that it still
/// answers, the read of a stored row) before it is given up and made again.
pub(crate) const ANSWER_WITHIN: Duration = Duration::from_secs(5);

/// How long the kernel lets the listening connection's peer be silent (TCP keepalive, and
/// data left unacknowledged) before it closes the connection.
pub(crate) const SILENT_PEER: Duration = Duration::from_secs(30);

/// Listens until the store is gone.
pub(crate) async fn listen(config: tokio_postgres::Config, store: Weak<Inner>) {
    // Whether the node has not been listening for a while since it first listened (or tried
    // to): news relayed meanwhile never reached it.
    let mut deaf = false;
    loop {
        match config.connect(tokio_postgres::NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(note)) => {
                                let payload = note.payload().to_owned();
                                let heard = match note.channel() {
                                    SIGNALS => Heard::Signal(payload),
                                    ACTIVITY => Heard::Activity(payload),
                                    _ => Heard::TaskChange,
                                };
                                if tx.send(heard).is_err() {
                                    return;
                                }
                            }
                            Ok(_) => {}
                            Err(err) => {
                                tracing::warn!(error = %err, "the database's notification connection failed");
                                return;
                            }
                        }
                    }
                });
                match client
                    .batch_execute(&format!(
                        "LISTEN {TASK_CHANGES}; LISTEN {SIGNALS}; LISTEN {ACTIVITY}"
                    ))
                    .await
                {
                    Ok(()) => {
                        // Whatever changed while this node was not listening is in the feed;
                        // the news relayed meanwhile is lost, and its receivers told.
                        if !tick(&store) || (deaf && !hand_on_news(&store, Relayed::Lost)) {
                            return;
                        }
                        loop {
                            tokio::select! {
                                heard = rx.recv() => {
                                    let delivered = match heard {
                                        None => false,
                                        Some(Heard::TaskChange) => tick(&store),
                                        Some(Heard::Signal(payload)) => {
                                            hand_on(&store, &payload)
                                        }
                                        Some(Heard::Activity(payload)) => {
                                            let read = news::read(&client, &payload);
                                            match tokio::time::timeout(ANSWER_WITHIN, read).await {
                                                Ok(Some(news)) => hand_on_news(&store, news),
                                                Ok(None) => store.strong_count() > 0,
                                                // A row held up (a lock, a slow server) must
                                                // not hold up the signals behind it: listening
                                                // again tells the receivers news was lost.
                                                Err(_) => {
                                                    tracing::warn!("reading news another node stored took too long");
                                                    false
                                                }
                                            }
                                        }
                                    };
                                    if !delivered {
                                        break;
                                    }
                                }
                                // A store dropped while all is quiet lets its connection go,
                                // and a connection that stopped answering without closing (a
                                // firewall forgot it, the server's host died) is made again:
                                // only reading, the listener would not notice for hours.
                                () = tokio::time::sleep(GONE_CHECK) => {
                                    if store.strong_count() == 0 {
                                        break;
                                    }
                                    let ping = client.simple_query("");
                                    if !matches!(tokio::time::timeout(ANSWER_WITHIN, ping).await, Ok(Ok(_))) {
                                        tracing::warn!("the database's notification connection stopped answering");
                                        break;
                                    }
                                }
                            }
                        }
                    }
                    Err(err) => {
                        tracing::warn!(error = %err, "cannot listen for other nodes' changes")
                    }
                }
                driver.abort();
            }
            Err(err) => {
                tracing::debug!(error = %err, "cannot connect to listen for other nodes' changes")
            }
        }
        if store.strong_count() == 0 {
            return;
        }
        deaf = true;
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
}

/// A notification, by its channel.
enum Heard {
    TaskChange,
    Signal(String),
    Activity(String),
}

/// Hands a signal to the store's receivers of signals; `false` once the store is gone.
fn hand_on(store: &Weak<Inner>, payload: &str) -> bool {
    let Some(inner) = store.upgrade() else { return false };
    match serde_json::from_str(payload) {
        // Nobody listening is no failure: the signal was for turns this node does not run.
        Ok(signal) => drop(inner.signals.send(signal)),
        // From a node of another version, perhaps (a newer one relays kinds this one does
        // not know, often): not for this one, and not worth more than a short note.
        Err(err) => {
            let kind = payload.get(..payload.len().min(80)).unwrap_or_default();
            tracing::debug!(error = %err, bytes = payload.len(), kind, "ignored a signal it cannot read");
        }
    }
    true
}

/// Hands news to the store's receivers of news; `false` once the store is gone.
fn hand_on_news(store: &Weak<Inner>, news: Relayed) -> bool {
    let Some(inner) = store.upgrade() else { return false };
    // Nobody listening is no failure: a node without event streams has nobody to tell.
    drop(inner.activity.send(news));
    true
}

/// Ticks the store's watch; `false` once the store is gone.
fn tick(store: &Weak<Inner>) -> bool {
    match store.upgrade() {
        Some(inner) => {
            inner.task_changes.send_modify(|ticks| *ticks = ticks.wrapping_add(1));
            true
        }
        None => false,
    }
}
