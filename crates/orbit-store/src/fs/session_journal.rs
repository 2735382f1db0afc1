//! The session journal of one agent, `agents/<name>/sessions.jsonl`, replayed in memory (see
//! `sessions` for its format and why it is correct across processes): its lines, its replay
//! from the offset read to, its header, its compaction, and each agent's replayed journal
//! kept by the store.

use std::collections::{BTreeMap, HashMap};
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use serde::{Deserialize, Serialize};

use super::follow::Followed;
use super::io;
use crate::render::Renderings;
use crate::{AgentName, Error, Result, Session, SessionId};

/// Compact once the journal has this many lines and more than twice as many as sessions.
pub(super) const COMPACT_MIN_LINES: u64 = 1024;
/// Or once it has this many bytes and more than twice the bytes of the live records, so that
/// updates of large records cannot grow it without bound between line-count compactions.
pub(super) const COMPACT_MIN_BYTES: u64 = 4 * 1024 * 1024;
/// Bytes read at the start of the file to find its header.
pub(super) const HEADER_PROBE: usize = 128;

#[derive(Debug, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(super) enum Entry {
    Header { journal: crate::ids::JournalId },
    Put { session: Box<Session> },
    Delete { id: SessionId },
}

/// One agent's journal, replayed.
#[derive(Default)]
pub(super) struct Journal {
    /// The header id of the file replayed, to notice a replaced file.
    pub(super) journal: Option<crate::ids::JournalId>,
    /// Bytes of the file consumed (always the end of a complete line).
    pub(super) offset: u64,
    /// Lines consumed, to decide when to compact.
    pub(super) lines: u64,
    /// Bytes of the line that put each live session, to decide when to compact.
    pub(super) live_bytes: HashMap<SessionId, u64>,
    pub(super) sessions: BTreeMap<SessionId, Session>,
    /// The renderings of the sessions listed whole (`SessionStore::list_rendered`) and their
    /// last body (see `render`), each rendering forgotten, and the body dropped, when a
    /// session changes.
    pub(super) renderings: Renderings<SessionId, Session>,
    /// The file as last read, held open (see `follow`), so that a read can tell with one
    /// `stat` that nothing was appended and the file was not replaced.
    pub(super) followed: Option<Followed>,
}

impl Journal {
    pub(super) fn apply(&mut self, entry: Entry, bytes: u64) {
        match entry {
            Entry::Header { .. } => {}
            Entry::Put { session } => {
                self.live_bytes.insert(session.id, bytes);
                self.renderings.changed(&session.id);
                self.sessions.insert(session.id, *session);
            }
            Entry::Delete { id } => {
                self.live_bytes.remove(&id);
                self.renderings.changed(&id);
                self.sessions.remove(&id);
            }
        }
        self.lines += 1;
    }

    pub(super) fn wants_compaction(&self) -> bool {
        let live_lines = self.sessions.len() as u64;
        let live_bytes: u64 = self.live_bytes.values().sum();
        (self.lines >= COMPACT_MIN_LINES && self.lines > 2 * live_lines)
            || (self.offset >= COMPACT_MIN_BYTES && self.offset > 2 * live_bytes)
    }

    /// Catches up with the file: replays what was appended since the last read, or the
    /// whole file when it was replaced. Returns the file's length. A reader (`hold`) keeps
    /// the file held for its next one-`stat` check; a writer lets go of the file it held
    /// (see `follow`: only readers of listings use a slot of the process's bounded few).
    pub(super) fn refresh(&mut self, path: &Path, hold: bool) -> Result<u64> {
        let mut file = match File::open(path) {
            Ok(file) => file,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
                *self = Journal::default();
                return Ok(0);
            }
            Err(err) => return Err(Error::io(path, err)),
        };
        let metadata = file.metadata().map_err(|err| Error::io(path, err))?;
        let len = metadata.len();
        let header = read_header(&mut file, path)?;
        if header.is_none() || header != self.journal || len < self.offset {
            // A different file (or one whose header is not complete yet): start over.
            *self = Journal { journal: header, ..Journal::default() };
        }
        if len > self.offset {
            let mut bytes = Vec::with_capacity((len - self.offset) as usize);
            file.seek(SeekFrom::Start(self.offset)).map_err(|err| Error::io(path, err))?;
            file.read_to_end(&mut bytes).map_err(|err| Error::io(path, err))?;
            let complete = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
            for line in bytes[..complete].split(|b| *b == b'\n') {
                if line.iter().all(u8::is_ascii_whitespace) {
                    continue;
                }
                match serde_json::from_slice::<Entry>(line) {
                    Ok(entry) => self.apply(entry, line.len() as u64 + 1),
                    Err(err) => {
                        tracing::warn!(path = %path.display(), error = %err, "skipping a journal line that does not parse")
                    }
                }
            }
            self.offset += complete as u64;
        }
        // The file held before is let go first, so that a journal never holds two.
        if hold {
            self.followed = None;
            self.followed = Followed::hold(file, &metadata);
        } else if !self.followed.as_ref().is_some_and(|followed| followed.is(&metadata)) {
            self.followed = None;
        }
        Ok(len)
    }

    /// Catches up with the file for a reader: nothing to do when the file is the one held
    /// since the last refresh and no longer than this journal consumed (one `stat`; see
    /// `follow`). The journal is only appended to, or replaced by a rename, so the same file
    /// at the same length holds nothing new.
    pub(super) fn refresh_to_read(&mut self, path: &Path) -> Result<()> {
        if self.followed.as_ref().is_some_and(|followed| followed.unchanged(path, self.offset)) {
            return Ok(());
        }
        self.refresh(path, true).map(drop)
    }
}

/// The id in a journal's header line; `None` for a file without one (empty, being written,
/// or from before headers, which is then replayed in full at every refresh until compacted).
pub(super) fn read_header(file: &mut File, path: &Path) -> Result<Option<crate::ids::JournalId>> {
    let mut probe = [0u8; HEADER_PROBE];
    let mut filled = 0;
    file.seek(SeekFrom::Start(0)).map_err(|err| Error::io(path, err))?;
    while filled < probe.len() {
        match file.read(&mut probe[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(err) => return Err(Error::io(path, err)),
        }
    }
    let Some(end) = probe[..filled].iter().position(|b| *b == b'\n') else { return Ok(None) };
    match serde_json::from_slice::<Entry>(&probe[..end]) {
        Ok(Entry::Header { journal }) => Ok(Some(journal)),
        _ => Ok(None),
    }
}

/// A new journal's first line.
pub(super) fn header_line(path: &Path) -> Result<Vec<u8>> {
    let mut line = serde_json::to_vec(&Entry::Header { journal: crate::ids::JournalId::new() })
        .map_err(|err| Error::Corrupt { path: path.into(), source: err })?;
    line.push(b'\n');
    Ok(line)
}

/// Each agent's replayed journal, shared by the store's clones.
#[derive(Default)]
pub(crate) struct JournalCache {
    journals: Mutex<HashMap<AgentName, Arc<Mutex<Journal>>>>,
}

impl JournalCache {
    pub(super) fn journal(&self, agent: &AgentName) -> Arc<Mutex<Journal>> {
        let mut journals = self.journals.lock().unwrap_or_else(PoisonError::into_inner);
        journals.entry(agent.clone()).or_default().clone()
    }

    /// The agent's replayed journal, if this process has one, without making one.
    pub(super) fn existing(&self, agent: &AgentName) -> Option<Arc<Mutex<Journal>>> {
        self.journals.lock().unwrap_or_else(PoisonError::into_inner).get(agent).cloned()
    }

    /// Forgets an agent's journal: the agent is gone (deleted here, or found gone), so its
    /// sessions are not kept and its deleted journal is not held open.
    pub(crate) fn forget(&self, agent: &AgentName) {
        // Dropped after the lock is let go: dropping a journal closes its held file, which
        // the caller's-thread check (`kept_detail`) must never wait behind.
        let removed = self.journals.lock().unwrap_or_else(PoisonError::into_inner).remove(agent);
        drop(removed);
    }
}

/// Rewrites the journal as a fresh header and one line per live session.
pub(super) fn compact(path: &Path, journal: &mut Journal, log: bool) -> Result<()> {
    let mut bytes = header_line(path)?;
    for session in journal.sessions.values() {
        let entry = Entry::Put { session: Box::new(session.clone()) };
        serde_json::to_writer(&mut bytes, &entry)
            .map_err(|err| Error::Corrupt { path: path.into(), source: err })?;
        bytes.push(b'\n');
    }
    io::write_bytes(path, &bytes)?;
    if log {
        tracing::debug!(path = %path.display(), lines = journal.lines, sessions = journal.sessions.len(), "compacted session journal");
    }
    *journal = Journal::default();
    journal.refresh(path, false)?;
    Ok(())
}
