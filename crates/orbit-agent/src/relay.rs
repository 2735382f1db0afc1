//! Every node's activity on every node's event stream: what happens on this node is relayed
//! to the others through the store's signals (PostgreSQL's `NOTIFY`), and what they relay is
//! announced on this node's bus, marked as relayed so that it goes no further.
//!
//! A task change is not relayed: every node reads it from the store's change feed and
//! announces it itself, so relaying it would show it twice. The rest happens on one node
//! only (a turn, an approval, an inbox claim, a session or agent changed through it, a run
//! it runs) and is relayed once, in a compact form well under a notification's limit (a
//! turn's error text is cut; nothing carries a tool's input). Relaying is news like the bus
//! itself: a node that is not listening at that moment never hears it, and the records stay
//! the truth.

use orbit_store::SignalKind;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::AgentPool;
use crate::activity::{Activity, Announced, Next, TurnEnding};

/// The most characters of a failed turn's error text relayed: the rest is in its session.
const ERROR_CHARS: usize = 1000;

/// The most bytes the relayed error text takes in JSON, escapes included (a control
/// character takes six), so that the signal stays under PostgreSQL's 8000 bytes.
const ERROR_JSON_BYTES: usize = 3000;

/// One activity as it travels between nodes.
#[derive(Debug, Serialize, Deserialize)]
struct News {
    #[serde(with = "orbit_store::timestamp::rfc3339")]
    at: OffsetDateTime,
    activity: Activity,
}

/// Whether the other nodes learn of it only from this one.
fn is_news_elsewhere(activity: &Activity) -> bool {
    !matches!(activity, Activity::TaskChanged { .. })
}

/// The compact form of an announcement of this node, when the others are to hear of it.
fn compact(announced: &Announced) -> Option<serde_json::Value> {
    if announced.relayed || !is_news_elsewhere(&announced.activity) {
        return None;
    }
    let activity = match &announced.activity {
        Activity::TurnEnded { agent, session, ending } => Activity::TurnEnded {
            agent: agent.clone(),
            session: *session,
            ending: TurnEnding { error: ending.error.as_deref().map(cut), ..ending.clone() },
        },
        other => other.clone(),
    };
    let news = News { at: announced.at, activity };
    match serde_json::to_value(&news) {
        Ok(value) => Some(value),
        Err(err) => {
            tracing::warn!(error = %err, ?news, "an activity did not serialize");
            None
        }
    }
}

/// The text, cut to at most [`ERROR_CHARS`] characters and [`ERROR_JSON_BYTES`] bytes of
/// JSON, with a mark where it was cut.
fn cut(text: &str) -> String {
    let mut json_bytes = 0;
    for (count, (at, c)) in text.char_indices().enumerate() {
        json_bytes += json_len(c);
        if count == ERROR_CHARS || json_bytes > ERROR_JSON_BYTES {
            return format!("{}…", &text[..at]);
        }
    }
    text.to_owned()
}

/// The bytes a character takes inside a JSON string.
fn json_len(c: char) -> usize {
    match c {
        '"' | '\\' | '\n' | '\r' | '\t' | '\u{8}' | '\u{c}' => 2,
        c if u32::from(c) < 0x20 => 6,
        c => c.len_utf8(),
    }
}

impl AgentPool {
    /// Relays this node's activity to the other nodes until `shutdown` resolves, and then
    /// what was announced before it; `None` when the store carries no signals (nobody to
    /// tell). The clients' streams end before the turns drain at a stop, this relay after
    /// them: it is not ended by [`crate::ActivityBus::close`], so the other nodes hear how
    /// the draining turns, approvals and runs ended.
    pub fn spawn_activity_relay(
        &self,
        shutdown: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> Option<tokio::task::JoinHandle<()>> {
        // Only to learn whether the store carries signals at all.
        drop(self.stores().instances.watch_signals()?);
        let mut subscription = self.activity().subscribe_past_close();
        let pool = self.clone();
        Some(tokio::spawn(async move {
            tokio::pin!(shutdown);
            loop {
                let next = tokio::select! {
                    // What is announced goes before the stop, so none of it is left behind.
                    biased;
                    next = subscription.next() => next,
                    () = &mut shutdown => break,
                };
                if !pool.relay(next).await {
                    return;
                }
            }
            while let Some(next) = subscription.ready() {
                if !pool.relay(next).await {
                    return;
                }
            }
        }))
    }

    /// Tells the other nodes of one announcement; false once there are no more.
    async fn relay(&self, next: Next) -> bool {
        match next {
            Next::Event(announced) => {
                if let Some(news) = compact(&announced) {
                    self.tell_other_nodes(SignalKind::Activity { news }).await;
                }
                true
            }
            Next::Missed => {
                tracing::warn!("fell behind this node's activity: the other nodes miss some");
                true
            }
            Next::Closed => false,
        }
    }

    /// Announces here what another node relayed.
    pub(crate) fn hear_news(&self, news: serde_json::Value) {
        match serde_json::from_value::<News>(news) {
            Ok(News { at, activity }) => self.activity().announce_relayed(activity, at),
            // From a node of another version, perhaps: not for this one.
            Err(err) => {
                tracing::warn!(error = %err, "ignored another node's activity it cannot read")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use orbit_store::{AgentName, SessionId, TaskId};

    use super::*;
    use crate::ActivityBus;

    /// The newest announcement of the bus.
    async fn newest(bus: &ActivityBus) -> Arc<Announced> {
        match bus.subscribe(Some(bus.newest() - 1)).next().await {
            Next::Event(announced) => announced,
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn news_travels_whole_and_is_announced_as_relayed_once() {
        let (here, there) = (ActivityBus::default(), ActivityBus::default());
        let agent = AgentName::parse("bot").unwrap();
        let session = SessionId::new();
        let error = Some("é".repeat(5000));
        let ending = TurnEnding { success: false, cost_usd: Some(0.5), error };
        here.announce(Activity::TurnEnded { agent, session, ending });
        let original = newest(&here).await;
        let news = compact(&original).unwrap();
        let bytes = news.to_string().len();
        assert!(bytes < 4000, "a long error is cut: {bytes} bytes");

        let News { at, activity } = serde_json::from_value(news).unwrap();
        there.announce_relayed(activity, at);
        let relayed = newest(&there).await;
        assert!(relayed.relayed);
        assert_eq!(relayed.at, original.at);
        let Activity::TurnEnded { ending, .. } = &relayed.activity else { panic!("{relayed:?}") };
        assert_eq!(ending.error.as_deref().map(|e| e.chars().count()), Some(ERROR_CHARS + 1));
        assert_eq!(compact(&relayed), None, "what was relayed here goes no further");
    }

    /// What goes to PostgreSQL is the whole signal, escaped: the longest error text of the
    /// most escaped characters still fits its limit (`orbit-store-postgres`'s 7900 bytes).
    #[tokio::test]
    async fn the_most_escaped_error_text_fits_a_notification() {
        let bus = ActivityBus::default();
        let agent = AgentName::parse(&"a".repeat(64)).unwrap();
        for error in ["\u{1}".repeat(5000), "\"".repeat(5000), "\u{10FFFF}".repeat(5000)] {
            let ending = TurnEnding { success: false, cost_usd: Some(0.5), error: Some(error) };
            bus.announce(Activity::TurnEnded {
                agent: agent.clone(),
                session: SessionId::new(),
                ending,
            });
            let news = compact(&*newest(&bus).await).unwrap();
            let what = SignalKind::Activity { news };
            let signal = orbit_store::Signal { from: orbit_store::InstanceId::new(), what };
            let bytes = serde_json::to_string(&signal).unwrap().len();
            assert!(bytes < 7900, "{bytes} bytes");
        }
    }

    #[tokio::test]
    async fn a_task_change_is_not_relayed_since_every_node_reads_the_feed() {
        let bus = ActivityBus::default();
        let agent = AgentName::parse("bot").unwrap();
        bus.announce(Activity::TaskChanged { agent: agent.clone(), task: TaskId::new() });
        assert_eq!(compact(&*newest(&bus).await), None);
        bus.announce(Activity::AgentChanged { agent });
        assert!(compact(&*newest(&bus).await).is_some());
    }
}
