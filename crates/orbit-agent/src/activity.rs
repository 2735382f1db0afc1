//! What changes on a server, as it happens: a bounded in-process broadcast of typed
//! [`Activity`], for clients that watch (the API's `GET /api/events`, the web console).
//!
//! Each kind of change is announced from one place: sessions made and deleted by the
//! workflows (and by the scheduler for its runs), turns and inbox claims by the turn itself,
//! approvals by the session's control handler, runs and task changes by the scheduler,
//! messages sent and archived and agents changed by whoever does it (the API, an agent's
//! tools). Nothing here is durable: it is news, and the records stay the truth.
//!
//! The bus keeps the last `capacity` announcements in a ring, each with an id one above the
//! previous. A subscriber reads from its own position in the ring, so a slow subscriber costs
//! nothing but its position, and one that fell out of the ring (or asks to resume from an id
//! the ring no longer holds) is told it missed some ([`Next::Missed`]) and should reload what
//! it shows. Ids start from the clock at the bus's creation, so a server started later
//! numbers above an earlier one, and a client resuming across a restart is told to reload
//! rather than being replayed the wrong events.
//!
//! Each bus also has a stream id of its own (a fresh ULID, [`ActivityBus::stream`]): ids are
//! this bus's alone, so a client that brings an id to another node (or to a later start of
//! this one) is recognized by the stream id it names, and told to reload.
//!
//! On a cluster, what happens on one node is relayed to the others (`relay`) and announced
//! there too, marked [`Announced::relayed`] so that it is not relayed again. The activities
//! derive serde for that node-to-node form only; what clients see is `orbit-api`'s. When some
//! of the other nodes' news never reached this node (its connection listening for it was
//! lost, or a queue on the way overflowed), the bus is told ([`ActivityBus::announce_news_lost`])
//! and every subscriber reads [`Next::NewsLost`] at that place in the stream.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use orbit_store::{AgentName, MessageId, RunId, RunStatus, SessionId, TaskId};
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;
use tokio::sync::watch;

use crate::prompt::TurnKind;

/// How many announcements a bus keeps for subscribers that resume or read slowly.
pub const DEFAULT_CAPACITY: usize = 1024;

/// One change, as a client watching the server is told of it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "camelCase", rename_all_fields = "camelCase")]
pub enum Activity {
    /// An agent was made, changed (model, mode, status) or deleted.
    AgentChanged {
        agent: AgentName,
    },
    SessionCreated {
        agent: AgentName,
        session: SessionId,
    },
    SessionDeleted {
        agent: AgentName,
        session: SessionId,
    },
    TurnStarted {
        agent: AgentName,
        session: SessionId,
        kind: TurnKind,
    },
    TurnEnded {
        agent: AgentName,
        session: SessionId,
        ending: TurnEnding,
    },
    /// An `ask`-mode tool call waits for a person.
    ApprovalPending {
        agent: AgentName,
        session: SessionId,
        request_id: String,
        tool_name: String,
    },
    /// It no longer waits: answered, or denied for want of an answer.
    ApprovalSettled {
        agent: AgentName,
        session: SessionId,
        request_id: String,
        settlement: ApprovalSettlement,
    },
    InboxArrived {
        agent: AgentName,
        message: MessageId,
        from: String,
    },
    InboxClaimed {
        agent: AgentName,
        message: MessageId,
        session: SessionId,
    },
    /// A claimed message was handled by its turn.
    InboxRead {
        agent: AgentName,
        message: MessageId,
    },
    /// A claimed message was given back by a turn that failed, to be claimed again.
    InboxReleased {
        agent: AgentName,
        message: MessageId,
    },
    /// A message was set aside after reaching the model too often without being handled.
    InboxDead {
        agent: AgentName,
        message: MessageId,
    },
    InboxArchived {
        agent: AgentName,
        message: MessageId,
    },
    /// A task was made, changed or deleted (by anyone, in any process sharing the store).
    TaskChanged {
        agent: AgentName,
        task: TaskId,
    },
    RunStarted {
        agent: AgentName,
        task: TaskId,
        run: RunId,
        session: Option<SessionId>,
    },
    RunFinished {
        agent: AgentName,
        task: TaskId,
        run: RunId,
        status: RunStatus,
    },
}

/// How a turn ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TurnEnding {
    pub success: bool,
    pub cost_usd: Option<f64>,
    /// What went wrong, in Orbit's words, when it failed.
    pub error: Option<String>,
}

/// Why a tool call stopped waiting for a person.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub enum ApprovalSettlement {
    Allowed,
    Denied,
    /// Nobody answered in time, or the turn ended first: the tool was denied.
    Expired,
}

/// One announcement: its place in the stream, when it happened, what happened.
#[derive(Debug, Clone, PartialEq)]
pub struct Announced {
    pub id: u64,
    pub at: OffsetDateTime,
    pub activity: Activity,
    /// Whether it happened on another node and was relayed here (and so is not relayed on).
    pub relayed: bool,
}

/// What a subscriber reads next.
#[derive(Debug, Clone)]
pub enum Next {
    Event(Arc<Announced>),
    /// Announcements after the subscriber's position are no longer held: it should reload
    /// what it shows. It reads on from the newest.
    Missed,
    /// Some of the other nodes' news never reached this node, here in the stream: the
    /// subscriber should reload what it shows, and reads on.
    NewsLost,
    /// The bus was closed (the server stops).
    Closed,
}

/// One place in the ring.
#[derive(Debug, Clone)]
enum Entry {
    Event(Arc<Announced>),
    /// News relayed from other nodes was lost here ([`ActivityBus::announce_news_lost`]).
    NewsLost {
        id: u64,
    },
}

impl Entry {
    fn id(&self) -> u64 {
        match self {
            Entry::Event(announced) => announced.id,
            Entry::NewsLost { id } => *id,
        }
    }
}

struct Shared {
    /// This bus's stream id: the ids it gives mean something only with it.
    stream: String,
    capacity: usize,
    ring: Mutex<VecDeque<Entry>>,
    /// The id of the newest announcement (one below the first id before any).
    newest: watch::Sender<u64>,
    closed: AtomicBool,
}

/// The bus: cheap to clone, every clone the same bus.
#[derive(Clone)]
pub struct ActivityBus {
    shared: Arc<Shared>,
}

impl std::fmt::Debug for ActivityBus {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ActivityBus").field("newest", &self.newest()).finish_non_exhaustive()
    }
}

impl Default for ActivityBus {
    fn default() -> Self {
        Self::new(DEFAULT_CAPACITY)
    }
}

impl ActivityBus {
    /// A bus holding the last `capacity` announcements (at least one).
    pub fn new(capacity: usize) -> Self {
        // A thousand ids per millisecond of the clock: a later start numbers above all an
        // earlier one announced, unless it announced more than that for its whole life.
        let millis = OffsetDateTime::now_utc().unix_timestamp_nanos() / 1_000_000;
        let first = u64::try_from(millis).unwrap_or(0).saturating_mul(1000).max(1);
        let (newest, _) = watch::channel(first - 1);
        Self {
            shared: Arc::new(Shared {
                stream: orbit_store::new_ulid().to_string(),
                capacity: capacity.max(1),
                ring: Mutex::new(VecDeque::with_capacity(capacity.max(1))),
                newest,
                closed: AtomicBool::new(false),
            }),
        }
    }

    /// Tells every subscriber; never waits for one.
    pub fn announce(&self, activity: Activity) {
        self.push(activity, orbit_store::timestamp::now(), false);
    }

    /// Tells every subscriber of something another node announced at `at`, which is not
    /// relayed again.
    pub fn announce_relayed(&self, activity: Activity, at: OffsetDateTime) {
        self.push(activity, at, true);
    }

    /// Tells every subscriber that some of the other nodes' news never reached this node
    /// (the connection it is relayed on was lost, or it came faster than a queue on the way
    /// could hold): they should reload what they show.
    pub fn announce_news_lost(&self) {
        self.push_entry(|id| Entry::NewsLost { id });
    }

    fn push(&self, activity: Activity, at: OffsetDateTime, relayed: bool) {
        self.push_entry(|id| Entry::Event(Arc::new(Announced { id, at, activity, relayed })));
    }

    fn push_entry(&self, entry: impl FnOnce(u64) -> Entry) {
        let mut ring = self.shared.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let id = *self.shared.newest.borrow() + 1;
        if ring.len() == self.shared.capacity {
            ring.pop_front();
        }
        ring.push_back(entry(id));
        // Under the ring's lock, so ids are in the ring in order.
        self.shared.newest.send_replace(id);
    }

    /// This bus's stream id (a ULID), which tells its ids from another bus's.
    pub fn stream(&self) -> &str {
        &self.shared.stream
    }

    /// The id of the newest announcement.
    pub fn newest(&self) -> u64 {
        *self.shared.newest.borrow()
    }

    /// Reads from after `last_seen` (a client resuming), or from now on. A `last_seen` the
    /// ring no longer holds, or one this bus never gave, makes the first read [`Next::Missed`].
    pub fn subscribe(&self, last_seen: Option<u64>) -> Subscription {
        let newest = self.shared.newest.subscribe();
        let cursor = last_seen.unwrap_or_else(|| *newest.borrow());
        Subscription { shared: self.shared.clone(), newest, cursor, ends_at_close: true }
    }

    /// Reads from now on, past [`ActivityBus::close`]: for the server's own readers (the
    /// relay to other nodes), which must hear what the turns still draining at a stop
    /// announce after the clients' streams ended. Its owner stops reading when it is done.
    pub fn subscribe_past_close(&self) -> Subscription {
        Subscription { ends_at_close: false, ..self.subscribe(None) }
    }

    /// Ends every subscription: their next read is [`Next::Closed`].
    pub fn close(&self) {
        self.shared.closed.store(true, Ordering::SeqCst);
        self.shared.newest.send_modify(|_| {});
    }
}

/// One subscriber's position in the bus.
pub struct Subscription {
    shared: Arc<Shared>,
    newest: watch::Receiver<u64>,
    /// The id of the last announcement read (or skipped).
    cursor: u64,
    /// Whether [`ActivityBus::close`] ends it (every client's does).
    ends_at_close: bool,
}

impl Subscription {
    /// The id of the last announcement this subscription read or skipped.
    pub fn position(&self) -> u64 {
        self.cursor
    }

    /// The next announcement, waiting for one when there is none yet.
    pub async fn next(&mut self) -> Next {
        loop {
            if let Some(next) = self.ready() {
                return next;
            }
            if self.newest.changed().await.is_err() {
                return Next::Closed;
            }
        }
    }

    /// The next announcement if there is one now, without waiting.
    pub fn ready(&mut self) -> Option<Next> {
        if self.ends_at_close && self.shared.closed.load(Ordering::SeqCst) {
            return Some(Next::Closed);
        }
        let newest = *self.newest.borrow_and_update();
        (self.cursor != newest).then(|| self.read(newest))
    }

    fn read(&mut self, newest: u64) -> Next {
        let ring = self.shared.ring.lock().unwrap_or_else(PoisonError::into_inner);
        let oldest = ring.front().map_or(newest + 1, Entry::id);
        // Behind the ring, or ahead of the bus (an id from another server's stream).
        if self.cursor + 1 < oldest || self.cursor > newest {
            self.cursor = ring.back().map_or(newest, Entry::id);
            return Next::Missed;
        }
        let index = usize::try_from(self.cursor + 1 - oldest).unwrap_or(usize::MAX);
        match ring.get(index) {
            Some(next) => {
                self.cursor = next.id();
                match next {
                    Entry::Event(announced) => Next::Event(announced.clone()),
                    Entry::NewsLost { .. } => Next::NewsLost,
                }
            }
            None => {
                self.cursor = newest;
                Next::Missed
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn changed(name: &str) -> Activity {
        Activity::AgentChanged { agent: AgentName::parse(name).unwrap() }
    }

    fn event(next: Next) -> Activity {
        match next {
            Next::Event(announced) => announced.activity.clone(),
            other => panic!("expected an event, got {other:?}"),
        }
    }

    #[tokio::test]
    async fn a_subscriber_reads_every_announcement_in_order() {
        let bus = ActivityBus::new(8);
        let mut reader = bus.subscribe(None);
        bus.announce(changed("a"));
        bus.announce(changed("b"));
        assert_eq!(event(reader.next().await), changed("a"));
        assert_eq!(event(reader.next().await), changed("b"));
        assert!(
            tokio::time::timeout(std::time::Duration::from_millis(50), reader.next())
                .await
                .is_err(),
            "nothing more until something happens"
        );
    }

    #[tokio::test]
    async fn a_subscriber_resumes_after_the_last_id_it_saw() {
        let bus = ActivityBus::new(8);
        bus.announce(changed("a"));
        let seen = bus.newest();
        bus.announce(changed("b"));
        let mut reader = bus.subscribe(Some(seen));
        assert_eq!(event(reader.next().await), changed("b"));
        assert_eq!(reader.position(), bus.newest());
    }

    #[tokio::test]
    async fn a_subscriber_that_fell_out_of_the_ring_is_told_and_reads_on_from_the_newest() {
        let bus = ActivityBus::new(2);
        let mut reader = bus.subscribe(None);
        for name in ["a", "b", "c"] {
            bus.announce(changed(name));
        }
        assert!(matches!(reader.next().await, Next::Missed));
        bus.announce(changed("d"));
        assert_eq!(event(reader.next().await), changed("d"));
        // An id no bus of this process gave: missed too.
        let mut stranger = bus.subscribe(Some(bus.newest() + 10));
        assert!(matches!(stranger.next().await, Next::Missed));
    }

    #[tokio::test]
    async fn lost_news_is_read_by_every_subscriber_in_its_place_and_reading_goes_on() {
        let bus = ActivityBus::new(8);
        let (mut first, mut second) = (bus.subscribe(None), bus.subscribe(None));
        bus.announce(changed("a"));
        bus.announce_news_lost();
        let lost_at = bus.newest();
        bus.announce(changed("b"));
        for reader in [&mut first, &mut second] {
            assert_eq!(event(reader.next().await), changed("a"));
            assert!(matches!(reader.next().await, Next::NewsLost));
            assert_eq!(reader.position(), lost_at);
            assert_eq!(event(reader.next().await), changed("b"));
        }
        // A client resuming from before the loss is told of it too.
        let mut resuming = bus.subscribe(Some(lost_at - 1));
        assert!(matches!(resuming.next().await, Next::NewsLost));
    }

    #[tokio::test]
    async fn closing_ends_every_subscription() {
        let bus = ActivityBus::new(2);
        let mut reader = bus.subscribe(None);
        let waiting = tokio::spawn(async move { reader.next().await });
        tokio::task::yield_now().await;
        bus.close();
        assert!(matches!(waiting.await.unwrap(), Next::Closed));
    }

    #[tokio::test]
    async fn the_servers_own_reader_hears_what_is_announced_after_the_close() {
        let bus = ActivityBus::new(8);
        let mut relay = bus.subscribe_past_close();
        let mut client = bus.subscribe(None);
        bus.close();
        bus.announce(changed("a"));
        assert!(matches!(client.next().await, Next::Closed));
        assert_eq!(event(relay.next().await), changed("a"));
        assert!(relay.ready().is_none(), "nothing more now");
    }
}
