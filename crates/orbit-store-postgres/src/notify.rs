//! Changes made by other nodes reach this one at once: a connection of its own `LISTEN`s to
//! the channel every task change notifies (`tasks::publish`, delivered at commit), and each
//! notification ticks this store's `watch_changes`, which wakes the scheduler to read the
//! change feed. A notification missed while the connection was down is made up for by a tick
//! at every reconnect and by the scheduler's own periodic re-read of the feed (every few
//! seconds), so a lost notification delays a change, never loses it.

use std::sync::Weak;
use std::time::Duration;

use futures_util::StreamExt;
use tokio_postgres::AsyncMessage;

use crate::Inner;

/// The channel task changes are announced on.
pub(crate) const TASK_CHANGES: &str = "orbit_task_changes";

/// How long to wait before connecting again after the listening connection failed.
const RECONNECT_AFTER: Duration = Duration::from_secs(1);

/// How often a quiet listener checks that its store still exists.
const GONE_CHECK: Duration = Duration::from_secs(10);

/// Listens until the store is gone.
pub(crate) async fn listen(config: tokio_postgres::Config, store: Weak<Inner>) {
    loop {
        match config.connect(tokio_postgres::NoTls).await {
            Ok((client, mut connection)) => {
                let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
                let driver = tokio::spawn(async move {
                    let mut messages =
                        futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(_)) => {
                                if tx.send(()).is_err() {
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
                match client.batch_execute(&format!("LISTEN {TASK_CHANGES}")).await {
                    Ok(()) => {
                        // Whatever changed while this node was not listening is in the feed.
                        if !tick(&store) {
                            return;
                        }
                        loop {
                            tokio::select! {
                                notified = rx.recv() => {
                                    if notified.is_none() || !tick(&store) {
                                        break;
                                    }
                                }
                                // A store dropped while all is quiet lets its connection go.
                                () = tokio::time::sleep(GONE_CHECK) => {
                                    if store.strong_count() == 0 {
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
        tokio::time::sleep(RECONNECT_AFTER).await;
    }
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
