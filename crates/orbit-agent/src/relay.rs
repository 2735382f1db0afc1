//! Every node's activity on every node's event stream: what happens on this node is relayed
//! to the others through the store (`InstanceStore::relay`, PostgreSQL's `NOTIFY`), and what
//! they relay is announced on this node's bus, marked as relayed so that it goes no further.
//!
//! A task change is not relayed: every node reads it from the store's change feed and
//! announces it itself, so relaying it would show it twice. The rest happens on one node
//! only (a turn, an approval, an inbox claim, a session or agent changed through it, a run
//! it runs) and is relayed once, in a compact form (a turn's error text is cut; nothing
//! carries a tool's input). The relay sends what was announced while its last relay was on
//! its way as one batch, in order, which the store packs into as few messages as it can.
//!
//! Relaying is news like the bus itself, but a loss is never silent: when this node's relay
//! fell behind its bus or a relay failed, the next batch carries a lost marker (sent alone
//! after a short wait, doubling up to half a minute, when nothing new is announced; tried
//! once more at a stop), and the other nodes tell their clients to reload (`ActivityBus::announce_news_lost`), as a node does
//! when the store says its own listening missed some (`Relayed::Lost`) or its queue of
//! relayed news overflowed. The records stay the truth.

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

/// The most announcements relayed in one batch: a burst larger than this is sent as several.
const BATCH: usize = 1024;

/// How long the relay first waits, after a relay failed, to send the lost marker alone when
/// nothing new is announced meanwhile; it doubles after each further failure.
const LOST_RETRY_FIRST: std::time::Duration = std::time::Duration::from_secs(1);

/// The longest the relay waits between two tries of the lost marker alone.
const LOST_RETRY_MOST: std::time::Duration = std::time::Duration::from_secs(30);

/// The item that tells the other nodes that this node's news was lost before it was relayed
/// (its relay fell behind its bus, or a relay failed): their clients should reload.
fn lost_marker() -> serde_json::Value {
    serde_json::json!({ LOST: true })
}

/// The key of [`lost_marker`].
const LOST: &str = "lost";

/// What the relay gathered to send since its last relay.
#[derive(Default)]
struct Batch {
    news: Vec<serde_json::Value>,
    /// How many announcements it read (some are not relayed).
    read: usize,
    /// Whether the bus closed (for this reader: never, see `subscribe_past_close`).
    closed: bool,
}

impl Batch {
    /// Adds what the bus said next; whether to read on.
    fn add(&mut self, next: Next) -> bool {
        self.read += 1;
        match next {
            Next::Event(announced) => self.news.extend(compact(&announced)),
            Next::Missed => {
                tracing::warn!("fell behind this node's activity: the other nodes miss some");
                self.news.push(lost_marker());
            }
            // The other nodes' news lost here: each node finds out its own losses.
            Next::NewsLost => {}
            Next::Closed => self.closed = true,
        }
        !self.closed && self.read < BATCH
    }
}

impl AgentPool {
    /// Relays this node's activity to the other nodes until `shutdown` resolves, and then
    /// what was announced before it; `None` when the store carries no signals (nobody to
    /// tell). The clients' streams end before the turns drain at a stop, this relay after
    /// them: it is not ended by [`crate::ActivityBus::close`], so the other nodes hear how
    /// the draining turns, approvals and runs ended.
    ///
    /// What was announced while the last relay was being sent goes in the next, as one batch
    /// (the store packs it into as few messages as it can), in order: a burst costs a few
    /// round trips to the database rather than one per announcement.
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
            // Whether news was lost since the last relay that reached the store.
            let mut lost = false;
            // How long to wait, while news is lost, before sending the lost marker alone.
            let mut retry_after = LOST_RETRY_FIRST;
            let mut stopping = false;
            loop {
                let mut batch = Batch::default();
                if lost {
                    batch.news.push(lost_marker());
                }
                let mut reading = true;
                if !stopping {
                    tokio::select! {
                        // What is announced goes before the stop, so none of it is left behind.
                        biased;
                        next = subscription.next() => reading = batch.add(next),
                        () = &mut shutdown => stopping = true,
                        // The other nodes are told of a loss without waiting for this node
                        // to announce something new, which may take hours.
                        () = tokio::time::sleep(retry_after), if lost => {}
                    }
                }
                while reading {
                    let Some(next) = subscription.ready() else { break };
                    reading = batch.add(next);
                }
                if batch.read == 0 && stopping {
                    // At a stop, what was announced before it is sent, and then the relay
                    // ends: a loss not yet told is tried once more.
                    if lost {
                        pool.relay(batch.news).await;
                    }
                    return;
                }
                if !batch.news.is_empty() {
                    let sent = pool.relay(batch.news).await;
                    retry_after = match (sent, lost) {
                        (false, true) => (retry_after * 2).min(LOST_RETRY_MOST),
                        _ => LOST_RETRY_FIRST,
                    };
                    lost = !sent;
                }
                if batch.closed {
                    return;
                }
            }
        }))
    }

    /// Tells the other nodes of a batch of news; whether the store took it.
    async fn relay(&self, news: Vec<serde_json::Value>) -> bool {
        let count = news.len();
        match self.stores().instances.relay(self.instance(), news).await {
            Ok(()) => true,
            Err(err) => {
                tracing::warn!(error = %err, count, "could not relay this node's activity");
                false
            }
        }
    }

    /// Announces here what another node relayed, in its order: its activity, and that some
    /// of its news was lost before it was relayed.
    pub(crate) fn hear_news(&self, news: Vec<serde_json::Value>) {
        for item in news {
            if item.get(LOST).is_some() {
                self.activity().announce_news_lost();
                continue;
            }
            match serde_json::from_value::<News>(item) {
                Ok(News { at, activity }) => self.activity().announce_relayed(activity, at),
                // From a node of another version, perhaps: not for this one.
                Err(err) => {
                    tracing::warn!(error = %err, "ignored another node's activity it cannot read")
                }
            }
        }
    }
}

/// The items of relayed news: an array's, or one item (from a node that relays one at a
/// time).
pub(crate) fn items(news: serde_json::Value) -> Vec<serde_json::Value> {
    match news {
        serde_json::Value::Array(items) => items,
        item => vec![item],
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::sync::Arc;

    use orbit_store::{AgentName, SessionId, SignalKind, TaskId};

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

    /// A relay that fell behind its bus marks the loss for the other nodes in its batch; a
    /// loss of the other nodes' news on this node is not relayed (each node finds its own).
    #[tokio::test]
    async fn a_batch_marks_what_the_relay_missed_and_keeps_the_order() {
        let bus = ActivityBus::new(3);
        let mut reader = bus.subscribe_past_close();
        let changed =
            |name: &str| Activity::AgentChanged { agent: AgentName::parse(name).unwrap() };
        for name in ["a", "b", "c", "d"] {
            bus.announce(changed(name));
        }
        let mut batch = Batch::default();
        assert!(batch.add(reader.ready().unwrap()), "fell out of the ring: missed");
        bus.announce_news_lost();
        bus.announce(changed("e"));
        bus.announce(changed("f"));
        while let Some(next) = reader.ready() {
            assert!(batch.add(next));
        }
        let agents: Vec<serde_json::Value> =
            batch.news.iter().map(|item| item["activity"]["agent"].clone()).collect();
        assert_eq!(batch.news[0], lost_marker(), "{:?}", batch.news);
        assert_eq!(agents[1..], [serde_json::json!("e"), serde_json::json!("f")]);
        assert_eq!(batch.news.len(), 3, "{:?}", batch.news);
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
