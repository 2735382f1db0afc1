//! The sending side of one SSE response, bounded in bytes.
//!
//! A chat turn writes as fast as the model answers; a client may read slower, or never. The
//! events waiting for one client hold at most `BUDGET` bytes (an event larger than that takes
//! the whole budget), and a client that leaves the budget spent for the stall limit in all
//! (its waits add up, so a client that reads a little now and then cannot hold the turn's
//! later events back for long) is dropped: its stream ends, and the turn, which never waits
//! on a client, goes on.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use actix_web_lab::sse;
use futures_util::Stream;
use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc};

/// Bytes of events held for one client at most.
const BUDGET: usize = 1024 * 1024;

type Item = (sse::Event, OwnedSemaphorePermit);

/// Where a turn's events go for one client, until it is gone or too slow.
pub struct ClientStream {
    tx: Option<mpsc::Sender<Item>>,
    budget: Arc<Semaphore>,
    stall_limit: Duration,
    /// How long sends have waited for this client so far.
    stalled: Duration,
}

impl ClientStream {
    /// A stream and its response body.
    pub fn new(
        stall_limit: Duration,
    ) -> (Self, sse::Sse<impl Stream<Item = Result<sse::Event, Infallible>>>) {
        // The byte budget is the real bound; the count only has to be large enough not to
        // matter before it.
        let (tx, rx) = mpsc::channel::<Item>(1024);
        let body = futures_util::stream::unfold(rx, |mut rx| async move {
            // The permit is dropped here, as actix takes the event to write it.
            rx.recv().await.map(|(event, _permit)| (Ok(event), rx))
        });
        let budget = Arc::new(Semaphore::new(BUDGET));
        (
            Self { tx: Some(tx), budget, stall_limit, stalled: Duration::ZERO },
            sse::Sse::from_stream(body),
        )
    }

    /// Whether the client is still being sent events.
    pub fn is_connected(&self) -> bool {
        self.tx.is_some()
    }

    /// Resolves when the client is gone (its response dropped), or was dropped.
    pub async fn closed(&self) {
        if let Some(tx) = &self.tx {
            tx.closed().await;
        }
    }

    /// Sends `value` as one event; a client that is gone or has not read for the stall limit
    /// is dropped (and said so in the log), and later sends do nothing.
    pub async fn send<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
        session_id: &orbit_store::SessionId,
    ) {
        let label = format!("session {session_id}");
        self.send_event(value, None, &label).await;
    }

    /// Sends `value` as one event with an SSE `id` (which a client resuming sends back as
    /// `Last-Event-ID`); `label` names the stream in the log.
    pub async fn send_event<T: Serialize + ?Sized>(
        &mut self,
        value: &T,
        id: Option<String>,
        label: &str,
    ) {
        let Some(tx) = self.tx.as_ref() else { return };
        let data = match serde_json::to_string(value) {
            Ok(data) => data,
            // Only a map with keys that are not strings fails, which no event has.
            Err(err) => return tracing::warn!(error = %err, "an event did not serialize"),
        };
        let cost = u32::try_from(data.len().clamp(1, BUDGET)).unwrap_or(u32::MAX);
        let data = sse::Data::new(data);
        let event: sse::Event = match id {
            Some(id) => data.id(id).into(),
            None => data.into(),
        };
        let budget = self.budget.clone();
        let waiting = tokio::time::Instant::now();
        let sent =
            tokio::time::timeout(self.stall_limit.saturating_sub(self.stalled), async move {
                let permit = budget.acquire_many_owned(cost).await.ok()?;
                tx.send((event, permit)).await.ok()
            })
            .await;
        self.stalled += waiting.elapsed();
        match sent {
            Ok(Some(())) => {}
            Ok(None) => {
                tracing::info!(stream = %label, "client disconnected; the work goes on");
                self.tx = None;
            }
            Err(_) => {
                tracing::warn!(stream = %label, "client fell too far behind and was dropped; the work goes on");
                self.tx = None;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a watcher of a quiet turn waits on besides the next event: its client leaving
    /// (the response dropped) is noticed without anything being sent.
    #[actix_web::test]
    async fn a_client_leaving_is_noticed_with_nothing_sent() {
        let (client, response) = ClientStream::new(Duration::from_secs(1));
        let waiting = tokio::time::timeout(Duration::from_millis(50), client.closed()).await;
        assert!(waiting.is_err(), "a client still there is not gone");
        drop(response);
        let noticed = tokio::time::timeout(Duration::from_secs(10), client.closed()).await;
        assert!(noticed.is_ok(), "the client's leaving ends the wait");
        assert!(client.is_connected(), "nothing was sent, so only `closed` could tell");
    }
}
