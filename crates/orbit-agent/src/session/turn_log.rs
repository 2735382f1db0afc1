//! A running turn's log: what watchers who attach mid-turn are shown, and the transcript the
//! turn leaves in the store.
//!
//! Every event of a turn goes through its [`TurnSink`]: to the caller that started the turn
//! (its own channel, as before), and into the turn's [`TurnLog`]. The log keeps two things,
//! both bounded so that a turn's memory is too:
//!
//! - the replay buffer: the newest events as JSON, at most [`REPLAY_BYTES`] and
//!   [`REPLAY_EVENTS`]. A watcher ([`TurnWatcher`]) reads it from the turn's first event and
//!   then follows it live, at its own pace; events that fell out of the buffer before it read
//!   them are replaced by one `orbit_events_dropped` event saying how many. Watchers read; they
//!   never hold the turn up, and one leaving does nothing to the turn.
//! - the transcript: every entry of the turn (the user message, the inbox messages delivered,
//!   every event shown, text deltas too), stamped, up to [`TRANSCRIPT_TURN_BYTES`]; entries
//!   past that are counted and left out, and one `omitted` entry says how many. The turn's
//!   final event (the CLI's `result`, or Orbit's `error`) is kept whatever the limit, after
//!   that entry: it is
//!   what says how the turn ended, and it is small beside the limit (the final text, or an
//!   error). The turn writes the transcript to the store in one step when it ends.
//!
//! Text deltas are kept although the whole assistant message follows them: the transcript is
//! every event as the stream showed it (what a watcher saw, in its timing). They count against
//! the limit like any entry, so a long answer can crowd out later events, never the end.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use orbit_store::{SessionId, TranscriptEntry, TranscriptKind};
use serde_json::{Value, json};
use tokio::sync::{mpsc, watch};

use crate::event::{CliMessageKind, TurnEvent, events_dropped_json};

/// Bytes of event JSON a turn's replay buffer holds at most.
pub const REPLAY_BYTES: usize = 2 * 1024 * 1024;
/// Events a turn's replay buffer holds at most (many tiny text deltas count too).
pub const REPLAY_EVENTS: usize = 20_000;
/// Bytes of transcript a turn keeps at most (its entries' JSON).
pub const TRANSCRIPT_TURN_BYTES: usize = 4 * 1024 * 1024;

/// What a transcript entry costs beyond its data: its stamp, turn id and kind.
const ENTRY_OVERHEAD: usize = 96;

struct LogState {
    /// The newest events, oldest first; `replay[0]` is the turn's event number `first`.
    replay: VecDeque<Arc<Value>>,
    first: u64,
    replay_bytes: usize,
    /// The size of each event in `replay`, to give bytes back as it leaves.
    sizes: VecDeque<usize>,
    transcript: Vec<TranscriptEntry>,
    transcript_bytes: usize,
    omitted: u64,
    /// Whether the `omitted` entry is in `transcript` already (the final event came after it).
    omitted_noted: bool,
    closed: bool,
}

/// One turn's log (see the module's comment).
pub(crate) struct TurnLog {
    session: SessionId,
    /// The turn's id in the transcript.
    turn: String,
    state: Mutex<LogState>,
    /// Bumped at every change, so watchers wake.
    changes: watch::Sender<u64>,
}

impl TurnLog {
    pub(crate) fn new(session: SessionId) -> Arc<Self> {
        Arc::new(Self {
            session,
            turn: orbit_store::new_ulid().to_string(),
            state: Mutex::new(LogState {
                replay: VecDeque::new(),
                first: 0,
                replay_bytes: 0,
                sizes: VecDeque::new(),
                transcript: Vec::new(),
                transcript_bytes: 0,
                omitted: 0,
                omitted_noted: false,
                closed: false,
            }),
            changes: watch::channel(0).0,
        })
    }

    fn state(&self) -> MutexGuard<'_, LogState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds a transcript entry that is not a stream event (the user message, an inbox
    /// message), stamped `at`.
    pub(crate) fn note(&self, kind: TranscriptKind, at: time::OffsetDateTime, data: Value) {
        let size = data.to_string().len();
        self.state().keep(TranscriptEntry { turn: self.turn.clone(), kind, at, data }, size, false);
    }

    /// Adds an event: to the replay buffer and the transcript, stamped now.
    pub(crate) fn push(&self, event: &TurnEvent) {
        let Some(json) = event.to_json(self.session) else { return };
        let size = json.to_string().len();
        let at = orbit_store::timestamp::now();
        // The CLI's `result`, or Orbit's `error` (a `Finished` has no event of its own).
        let last = matches!(event, TurnEvent::Failed { .. })
            || matches!(event, TurnEvent::Cli(message) if matches!(message.kind, CliMessageKind::Result(_)));
        let mut state = self.state();
        state.keep(
            TranscriptEntry {
                turn: self.turn.clone(),
                kind: TranscriptKind::Event,
                at,
                data: json.clone(),
            },
            size,
            last,
        );
        state.replay.push_back(Arc::new(json));
        state.sizes.push_back(size);
        state.replay_bytes += size;
        while state.replay.len() > 1
            && (state.replay_bytes > REPLAY_BYTES || state.replay.len() > REPLAY_EVENTS)
        {
            state.replay.pop_front();
            let gone = state.sizes.pop_front().unwrap_or(0);
            state.replay_bytes -= gone;
            state.first += 1;
        }
        drop(state);
        self.changes.send_modify(|n| *n += 1);
    }

    /// Ends the log: watchers read what is left and stop.
    pub(crate) fn close(&self) {
        self.state().closed = true;
        self.changes.send_modify(|n| *n += 1);
    }

    /// The turn's transcript so far, with an `omitted` entry where the limit cut it.
    pub(crate) fn take_transcript(&self) -> Vec<TranscriptEntry> {
        let mut state = self.state();
        if state.omitted > 0 && !state.omitted_noted {
            let note = state.omitted_entry(&self.turn);
            state.transcript.push(note);
        }
        std::mem::take(&mut state.transcript)
    }

    /// A watcher from the turn's first event still held.
    pub(crate) fn watch(self: &Arc<Self>) -> TurnWatcher {
        TurnWatcher { log: self.clone(), next: 0, changes: self.changes.subscribe() }
    }
}

impl LogState {
    /// Keeps `entry` if it fits the turn's limit, or always when it is the turn's `last`.
    fn keep(&mut self, entry: TranscriptEntry, size: usize, last: bool) {
        let cost = size + ENTRY_OVERHEAD;
        if self.omitted > 0 || self.transcript_bytes + cost > TRANSCRIPT_TURN_BYTES {
            if !last {
                self.omitted += 1;
                return;
            }
            if !self.omitted_noted && self.omitted > 0 {
                let note = self.omitted_entry(&entry.turn);
                self.transcript.push(note);
                self.omitted_noted = true;
            }
        }
        self.transcript_bytes += cost;
        self.transcript.push(entry);
    }

    fn omitted_entry(&self, turn: &str) -> TranscriptEntry {
        TranscriptEntry {
            turn: turn.to_owned(),
            kind: TranscriptKind::Omitted,
            at: orbit_store::timestamp::now(),
            data: json!({"omitted": self.omitted, "limitBytes": TRANSCRIPT_TURN_BYTES}),
        }
    }
}

/// One watcher of a running turn: its events from the first on, then live, until the turn
/// ends.
pub struct TurnWatcher {
    log: Arc<TurnLog>,
    /// The number of the next event to show.
    next: u64,
    changes: watch::Receiver<u64>,
}

impl TurnWatcher {
    /// The next event's JSON; `None` once the turn has ended and every event was shown.
    pub async fn next(&mut self) -> Option<Arc<Value>> {
        loop {
            // Marked seen before looking, so a change after the look wakes the wait below.
            self.changes.borrow_and_update();
            {
                let state = self.log.state();
                if self.next < state.first {
                    let dropped = state.first - self.next;
                    self.next = state.first;
                    return Some(Arc::new(events_dropped_json(dropped)));
                }
                let index = usize::try_from(self.next - state.first).unwrap_or(usize::MAX);
                if let Some(event) = state.replay.get(index) {
                    self.next += 1;
                    return Some(event.clone());
                }
                if state.closed {
                    return None;
                }
            }
            if self.changes.changed().await.is_err() {
                return None;
            }
        }
    }
}

/// Where a turn's events go: the caller's channel and the turn's log.
#[derive(Clone)]
pub(crate) struct TurnSink {
    caller: mpsc::UnboundedSender<TurnEvent>,
    pub(crate) log: Arc<TurnLog>,
}

impl TurnSink {
    pub(crate) fn new(caller: mpsc::UnboundedSender<TurnEvent>, log: Arc<TurnLog>) -> Self {
        Self { caller, log }
    }

    /// Logs the event and gives it to the caller (who may have gone: the turn goes on).
    pub(crate) fn send(&self, event: TurnEvent) {
        self.log.push(&event);
        let _ = self.caller.send(event);
    }

    /// Gives the event to the caller only (it was logged already).
    pub(crate) fn send_to_caller(&self, event: TurnEvent) {
        let _ = self.caller.send(event);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delta(text: &str) -> TurnEvent {
        TurnEvent::TextDelta { text: text.to_owned() }
    }

    #[tokio::test]
    async fn watchers_replay_then_follow_and_end_with_the_turn() {
        let log = TurnLog::new(SessionId::new());
        log.push(&TurnEvent::Started);
        log.push(&delta("a"));
        let (mut early, mut idle) = (log.watch(), log.watch());
        assert_eq!(early.next().await.unwrap()["subtype"], "orbit_session");
        assert_eq!(early.next().await.unwrap()["text"], "a");
        let later = tokio::spawn({
            let log = log.clone();
            async move {
                log.push(&delta("b"));
                log.close();
            }
        });
        assert_eq!(early.next().await.unwrap()["text"], "b", "then live");
        assert!(early.next().await.is_none(), "and the stream ends with the turn");
        later.await.unwrap();
        // A watcher that has read nothing yet still gets it all, then the end.
        let mut all = Vec::new();
        while let Some(event) = idle.next().await {
            all.push(event);
        }
        assert_eq!(all.len(), 3);
        let mut attached_after = log.watch();
        assert_eq!(attached_after.next().await.unwrap()["subtype"], "orbit_session");
    }

    #[tokio::test]
    async fn the_replay_is_bounded_and_says_what_it_dropped() {
        let log = TurnLog::new(SessionId::new());
        let mut slow = log.watch();
        let total = REPLAY_EVENTS + 10;
        for n in 0..total {
            log.push(&delta(&n.to_string()));
        }
        log.close();
        let marker = slow.next().await.unwrap();
        assert_eq!(marker["subtype"], "orbit_events_dropped");
        assert_eq!(marker["dropped"], 10);
        assert_eq!(slow.next().await.unwrap()["text"], "10", "then the oldest kept");
        let big = "x".repeat(REPLAY_BYTES / 4);
        let log = TurnLog::new(SessionId::new());
        for _ in 0..8 {
            log.push(&delta(&big));
        }
        let state = log.state();
        assert!(state.replay_bytes <= REPLAY_BYTES && state.replay.len() < 8, "bounded by bytes");
    }

    #[test]
    fn the_transcript_is_bounded_and_says_what_it_left_out() {
        let log = TurnLog::new(SessionId::new());
        let at = orbit_store::timestamp::now();
        log.note(TranscriptKind::User, at, json!({"text": "hi"}));
        let big = "x".repeat(TRANSCRIPT_TURN_BYTES / 3);
        for _ in 0..5 {
            log.push(&delta(&big));
        }
        let entries = log.take_transcript();
        let last = entries.last().unwrap();
        assert_eq!(last.kind, TranscriptKind::Omitted);
        assert_eq!(last.data["omitted"], 3, "two of the five fit");
        assert_eq!(entries[0].kind, TranscriptKind::User);
        assert_eq!(entries.len(), 4);
    }

    /// However full the transcript, the turn's final event is kept, after the `omitted` entry.
    #[test]
    fn the_final_event_is_kept_past_the_limit() {
        let result = json!({"type": "result", "subtype": "success", "result": "done",
            "is_error": false, "session_id": "s"});
        for last in [
            TurnEvent::Cli(crate::claude::protocol::parse(result)),
            TurnEvent::Failed {
                message: "the turn failed: boom".into(),
                kind: orbit_store::ErrorKind::Internal,
            },
        ] {
            let log = TurnLog::new(SessionId::new());
            let big = "x".repeat(TRANSCRIPT_TURN_BYTES / 3);
            for _ in 0..5 {
                log.push(&delta(&big));
            }
            log.push(&last);
            let entries = log.take_transcript();
            let kinds: Vec<_> = entries.iter().map(|e| e.kind).collect();
            use TranscriptKind::{Event, Omitted};
            assert_eq!(kinds, [Event, Event, Omitted, Event], "two deltas, a note, the end");
            assert_eq!(entries[2].data["omitted"], 3);
            assert_eq!(entries[3].data, last.to_json(log.session).unwrap());
        }
        // A transcript within the limit has no `omitted` entry.
        let log = TurnLog::new(SessionId::new());
        log.push(&delta("hi"));
        let failed = TurnEvent::Failed { message: "no".into(), kind: orbit_store::ErrorKind::Busy };
        log.push(&failed);
        let kinds: Vec<_> = log.take_transcript().iter().map(|e| e.kind).collect();
        assert_eq!(kinds, [TranscriptKind::Event; 2]);
    }
}
