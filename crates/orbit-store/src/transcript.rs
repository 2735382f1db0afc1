//! Session transcripts: everything a turn did, in order, each stamped when it happened.
//!
//! A turn's transcript is written once, as one batch, when the turn ends (the agent runtime
//! collects it meanwhile), so a transcript holds whole turns only: a server that dies mid-turn
//! loses that turn's transcript, never an earlier one, and a file store's write cut short by a
//! crash is never read, not even its first lines (see `fs::transcripts`). The entries' content
//! (`data`) is the runtime's: the store keeps it as it is.
//!
//! A page stops at `limit` entries or at [`PAGE_BYTES`] of them, whichever comes first, but
//! always holds at least one entry when any follows, so one huge entry is still readable.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use time::OffsetDateTime;

/// What a transcript entry records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TranscriptKind {
    /// The person's (or the task's) message that started the turn, stamped when it was sent.
    User,
    /// An inbox message delivered to the model in the turn.
    Inbox,
    /// One event of the turn's stream, as the stream showed it.
    Event,
    /// Entries past the turn's size limit that were left out; `data` says how many.
    Omitted,
}

/// One entry of a session's transcript.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct TranscriptEntry {
    /// The turn the entry belongs to (a ULID, fresh for every turn).
    pub turn: String,
    pub kind: TranscriptKind,
    #[serde(with = "crate::timestamp::rfc3339")]
    pub at: OffsetDateTime,
    pub data: Value,
}

/// Where a transcript page starts: `START`, or a page's `next`. What the number means is the
/// store's own (a byte offset, an index, a row id); callers only pass it back.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct TranscriptCursor(pub u64);

impl TranscriptCursor {
    pub const START: Self = Self(0);
}

/// About how many bytes of entries (as JSON) a transcript page holds at most: a page stops
/// before the entry that would pass it, unless that entry is its first.
pub const PAGE_BYTES: u64 = 4 << 20;

/// A page of a transcript, oldest entry first.
#[derive(Debug, Clone, PartialEq)]
pub struct TranscriptPage {
    pub entries: Vec<TranscriptEntry>,
    /// Where the next page starts. On the last page it is the transcript's end: a reader
    /// following new turns reads from it again later and gets exactly what came since.
    pub next: TranscriptCursor,
    /// Whether entries follow `next` now.
    pub more: bool,
}
