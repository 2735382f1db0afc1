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

use std::collections::HashMap;
use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::sync::{Mutex, PoisonError};

use super::io;
use crate::render::{Render, Rendered};
use crate::{Error, Result, SessionId, SessionMessage};

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

/// The histories read last, shared by the store's clones.
#[derive(Default)]
pub(crate) struct HistoryCache {
    histories: Mutex<HashMap<SessionId, History>>,
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
            let rendered = match &mut history.rendered {
                // Equal function pointers are the same code (see `render`).
                #[allow(unpredictable_function_pointer_comparisons)]
                Some((made_by, rendered)) if *made_by == render => rendered,
                slot => &mut slot.insert((render, Vec::new())).1,
            };
            let new = &history.messages[rendered.len().min(history.messages.len())..];
            rendered.extend(new.iter().map(|message| Rendered::from(render(message))));
            (history.messages.len(), rendered.clone())
        })
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
        self.histories.lock().unwrap_or_else(PoisonError::into_inner).remove(id);
    }
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
