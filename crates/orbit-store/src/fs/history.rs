//! The message histories of the sessions read last, kept parsed with the byte offset read to,
//! so that reading a session again parses only the messages appended since.
//!
//! A history file (`sessions/<id>.jsonl`) is only ever appended to, under the agent's journal
//! lock, and removed with its session; an id is a ULID and never comes back. So the lines
//! before the offset a reader consumed never change, in any process: reading on from there
//! gives what reading the whole file would. Only complete lines are consumed (a line being
//! written is read when its newline lands), and a line that does not parse is skipped as
//! `io::read_jsonl` skips it. A file shorter than the offset (removed and never made again, or
//! damaged by hand) is read again from the start.
//!
//! Memory is bounded: at most [`KEPT`] histories are kept, and a new one pushes out another.
//!
//! Beside them, the last whole answer of each of the [`KEPT`] sessions read whole last
//! (`SessionStore::get_detail`: the session's view and every message's) is kept as one buffer
//! with what it was made from: the state of the agent's session journal the session was read
//! in (its `Generation`) and the length of the history file then. It is answered again only
//! while a `stat` of the history says that length (see `Inner::kept_detail` for the journal's
//! side), so another process's append is seen at once. These are kept apart from the
//! histories, under a lock never held across a file operation, so that the check never waits
//! for a reader's I/O; the bodies are held in the process's pool of kept bodies
//! (`render::BODIES_MAX_BYTES` in all).

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use super::io;
use crate::lru::Held;
use crate::render::{self, Body, Detail, Generation, Render, Rendered};
use crate::{Error, Result, Session, SessionId, SessionMessage};

/// Histories kept at once.
const KEPT: usize = 64;

#[derive(Default)]
struct History {
    offset: u64,
    messages: Vec<SessionMessage>,
    /// The renderings of the first messages by one function (`render`): a history is only
    /// appended to, so they stay right, and only the messages appended since are rendered.
    rendered: Option<(Render<SessionMessage>, Vec<Rendered>)>,
}

/// A session's whole answer as last joined, and what it was joined from.
struct KeptDetail {
    /// The state of the agent's session journal the session was read in.
    journal: Generation,
    /// The length of the history file the messages were read to.
    offset: u64,
    /// What wrote the body.
    detail: Detail<Session, SessionMessage>,
    body: Held<Body>,
    /// When the body was last made or vouched for by a `stat`: past [`RECENT`], the check
    /// leaves the caller's thread for the blocking pool (a path not looked at for long may
    /// need the disk, or hang on a stuck mount).
    checked: Instant,
}

/// How long a kept body may go unchecked and still be checked on the caller's thread.
const RECENT: Duration = Duration::from_secs(1);

/// The histories read last, shared by the store's clones.
#[derive(Default)]
pub(crate) struct HistoryCache {
    histories: Mutex<HashMap<SessionId, History>>,
    /// Never held across a file operation (see the module's comment).
    details: Mutex<HashMap<SessionId, KeptDetail>>,
}

impl HistoryCache {
    /// Every complete, parseable message of `path`, the history of session `id`.
    pub(crate) fn read(&self, id: SessionId, path: &Path) -> Result<Vec<SessionMessage>> {
        self.with_history(id, path, |history| history.messages.clone())
    }

    /// How many complete, parseable messages `path` holds, and each one rendered by `render`.
    pub(crate) fn read_rendered(
        &self,
        id: SessionId,
        path: &Path,
        render: Render<SessionMessage>,
    ) -> Result<(usize, Vec<Rendered>)> {
        self.with_history(id, path, |history| {
            let count = history.messages.len();
            (count, rendered(history, render).to_vec())
        })
    }

    /// Reads the history as [`read_rendered`](Self::read_rendered) does and gives `join` the
    /// count of messages and their renderings by `detail`'s function; a body `join` answers
    /// (it answers none when the session's record disagrees with the count) is kept for
    /// [`kept_detail`](Self::kept_detail), as made from the journal in state `journal`.
    pub(crate) fn read_detail(
        &self,
        id: SessionId,
        path: &Path,
        journal: Generation,
        detail: &Detail<Session, SessionMessage>,
        join: impl FnOnce(usize, &[Rendered]) -> Option<Body>,
    ) -> Result<Option<Body>> {
        let (offset, body) = self.with_history(id, path, |history| {
            let (count, offset) = (history.messages.len(), history.offset);
            (offset, join(count, rendered(history, detail.parts.render)))
        })?;
        if let Some(body) = &body {
            let kept = render::keep_body(body).map(|body| KeptDetail {
                journal,
                offset,
                detail: *detail,
                body,
                checked: Instant::now(),
            });
            // What leaves the map is dropped after the lock is let go: freeing a body of up
            // to the pool's size must not hold up the caller's-thread check.
            let mut dropped = Vec::new();
            let mut details = self.details.lock().unwrap_or_else(PoisonError::into_inner);
            match kept {
                Some(kept) => {
                    if !details.contains_key(&id) && details.len() >= KEPT {
                        // Any one, as for the histories.
                        if let Some(other) = details.keys().next().copied() {
                            dropped.extend(details.remove(&other));
                        }
                    }
                    dropped.extend(details.insert(id, kept));
                }
                // Larger than every kept body together may be: none kept.
                None => dropped.extend(details.remove(&id)),
            }
            drop(details);
            drop(dropped);
        }
        Ok(body)
    }

    /// Whether a body is kept for session `id` that was made or vouched for within [`RECENT`]:
    /// only then may it be checked on the caller's thread.
    pub(crate) fn recently_checked(&self, id: SessionId) -> bool {
        let details = self.details.lock().unwrap_or_else(PoisonError::into_inner);
        details.get(&id).is_some_and(|kept| kept.checked.elapsed() <= RECENT)
    }

    /// The body kept for session `id` by `detail`, if it was made from the journal in state
    /// `journal` and its history file (`path`) is still the length it was read to then.
    ///
    /// The history is only appended to, and a writer appends a message before the journal
    /// line that counts it, so the history at that length, with the session as of `journal`,
    /// is what reading both now would give. One `stat`, no open; `None` whenever anything
    /// else holds (nothing kept, another function, the file longer, shorter or unreadable).
    pub(crate) fn kept_detail(
        &self,
        id: SessionId,
        path: &Path,
        journal: Generation,
        detail: &Detail<Session, SessionMessage>,
    ) -> Option<Body> {
        let (offset, body) = {
            let details = self.details.lock().unwrap_or_else(PoisonError::into_inner);
            let kept = details.get(&id)?;
            if kept.journal != journal
                || !kept.detail.same_as(detail)
                || kept.checked.elapsed() > RECENT
            {
                return None;
            }
            (kept.offset, kept.body.touch(Body::clone)?)
        };
        let len = match std::fs::metadata(path) {
            Ok(metadata) => metadata.len(),
            // A history is made by its first message's append: none yet is an empty one.
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => 0,
            Err(_) => return None,
        };
        if len != offset {
            return None;
        }
        let mut details = self.details.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(kept) = details.get_mut(&id).filter(|kept| kept.journal == journal) {
            kept.checked = Instant::now();
        }
        Some(body)
    }

    fn with_history<R>(
        &self,
        id: SessionId,
        path: &Path,
        read: impl FnOnce(&mut History) -> R,
    ) -> Result<R> {
        let mut histories = self.histories.lock().unwrap_or_else(PoisonError::into_inner);
        if !histories.contains_key(&id) && histories.len() >= KEPT {
            // Any one: the cache saves re-reading, it is never the truth.
            if let Some(other) = histories.keys().next().copied() {
                histories.remove(&other);
            }
        }
        let history = histories.entry(id).or_default();
        if let Err(err) = read_on(history, path) {
            histories.remove(&id);
            return Err(err);
        }
        Ok(read(history))
    }

    /// Forgets a session's history (deleted).
    pub(crate) fn forget(&self, id: &SessionId) {
        let history = self.histories.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
        let detail = self.details.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
        // Freed after the locks are let go (see `read_detail`).
        drop((history, detail));
    }
}

/// Every message of `history` rendered by `render`: the renderings kept, and the messages
/// appended since rendered now (a history is only appended to, so those kept stay right).
fn rendered(history: &mut History, render: Render<SessionMessage>) -> &[Rendered] {
    // Equal function pointers are the same code (see `render`).
    #[allow(unpredictable_function_pointer_comparisons)]
    let same = history.rendered.as_ref().is_some_and(|(made_by, _)| *made_by == render);
    if !same {
        history.rendered = Some((render, Vec::new()));
    }
    let Some((_, rendered)) = &mut history.rendered else { return &[] };
    let new = &history.messages[rendered.len().min(history.messages.len())..];
    rendered.extend(new.iter().map(|message| Rendered::from(render(message))));
    rendered
}

fn read_on(history: &mut History, path: &Path) -> Result<()> {
    let mut file = match File::open(path) {
        Ok(file) => file,
        Err(err) if err.kind() == std::io::ErrorKind::NotFound => {
            *history = History::default();
            return Ok(());
        }
        Err(err) => return Err(Error::io(path, err)),
    };
    let len = file.metadata().map_err(|err| Error::io(path, err))?.len();
    if len < history.offset {
        *history = History::default();
    }
    if len == history.offset {
        return Ok(());
    }
    let mut bytes = Vec::with_capacity((len - history.offset) as usize);
    file.seek(SeekFrom::Start(history.offset)).map_err(|err| Error::io(path, err))?;
    file.take(len - history.offset).read_to_end(&mut bytes).map_err(|err| Error::io(path, err))?;
    let (messages, complete) = io::parse_jsonl::<SessionMessage>(path, &bytes);
    history.messages.extend(messages);
    history.offset += complete as u64;
    Ok(())
}
