//! Sessions, indexed by a per-agent journal.
//!
//! Session metadata lives in `agents/<name>/sessions.jsonl`, an append-only journal whose
//! first line names the journal (`{"op":"header","journal":"<ulid>"}`, fresh for every file
//! ever written) and whose other lines are whole session records
//! (`{"op":"put","session":{..}}`) or deletions (`{"op":"delete","id":".."}`); the last line
//! for an id wins. Messages live in `agents/<name>/sessions/<id>.jsonl`.
//!
//! Why a journal: listing 10,000 sessions must not read 10,000 files. Each process keeps the
//! journal replayed in memory with the byte offset it has read to; a read fstats the journal
//! and parses only the bytes other writers appended since. That stays correct with several
//! processes on one directory because every change is a line in the shared file:
//!
//! - writers hold `sessions.lock` (an exclusive `flock`) while they refresh, apply a change
//!   to the current record and append it, so concurrent updates never lose each other;
//! - readers take no lock and parse only complete lines, so a write in progress is invisible
//!   until its newline lands;
//! - when the journal holds many superseded lines or bytes it is compacted under the lock into
//!   a new file, with a new header, renamed over the old one; readers notice the new header and
//!   replay it from the start.
//!
//! A reader knows the file it replayed by the header's id, read again at every refresh that
//! opens the file, and never by device and inode alone: a filesystem reuses a freed inode at
//! once, so a journal deleted with its agent, or compacted twice, can come back under the same
//! inode with a longer length, and a reader trusting an inode it does not hold would go on
//! from its old offset in a different file.
//!
//! The one exception is the reader's shortcut (`Journal::refresh_to_read`): a reader that
//! still holds open the file it replayed last (`follow`) skips the refresh when one `stat` of
//! the path names that very device and inode at the length consumed. A held file's inode
//! cannot be freed, so it cannot be reused; the journal is only appended to or replaced by a
//! rename, so the same file at the same length holds nothing new. A reader whose held file was
//! let go (the process's few slots are given to the files checked most recently) refreshes as
//! above, reading the header.
//!
//! The journal's lines, replay, header and compaction live in `session_journal`; this file
//! is the store's sessions and their histories built on it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::PoisonError;

use super::session_journal::{Entry, Journal, compact};
use super::{FsStore, Inner, io};
use crate::render::{Body, Detail, Listing, Render, Rendered};
use crate::{
    AgentName, Error, MessagePreview, NewSession, Result, Session, SessionId, SessionMessage,
    SessionPatch, SessionStore, TranscriptCursor, TranscriptEntry, TranscriptPage,
};
use async_trait::async_trait;

impl Inner {
    fn journal_path(&self, agent: &AgentName) -> PathBuf {
        self.agent_dir(agent).join("sessions.jsonl")
    }

    fn messages_path(&self, agent: &AgentName, id: &SessionId) -> PathBuf {
        self.agent_dir(agent).join("sessions").join(format!("{id}.jsonl"))
    }

    /// The agent exists; an agent found gone (deleted by another process) has its journal
    /// forgotten here too.
    fn require_journal(&self, agent: &AgentName) -> Result<()> {
        let exists = self.require_agent(agent);
        if exists.is_err() {
            self.sessions.forget(agent);
        }
        exists
    }

    /// Reads with the journal replayed up to date, without the cross-process lock.
    pub(super) fn read_sessions<T>(
        &self,
        agent: &AgentName,
        read: impl FnOnce(&BTreeMap<SessionId, Session>) -> T,
    ) -> Result<T> {
        self.require_journal(agent)?;
        let journal = self.sessions.journal(agent);
        let mut journal = journal.lock().unwrap_or_else(PoisonError::into_inner);
        journal.refresh_to_read(&self.journal_path(agent))?;
        Ok(read(&journal.sessions))
    }

    /// The whole answer kept for session `id` by `detail`, when a `stat` of the agent's
    /// journal and one of the session's history show that neither changed since it was
    /// joined: the journal is the file this process replayed last (held open, see `follow`)
    /// at the length consumed, and no line was replayed since the body was joined (the
    /// journal's generation); the history is the length it was read to (see `history`).
    /// Every change of a session, in any process, is a journal line, and every new message
    /// is appended to the history before its line; an agent deleted anywhere takes its
    /// journal's path with it. So the body is what reading both now would give.
    ///
    /// This runs on the caller's thread, not the blocking pool: it opens nothing, does two
    /// `stat`s, and never waits for a lock that a thread doing file work may hold (the
    /// journal's is taken only if free; the others are never held across a file operation nor
    /// while a large value is freed). A kept body is answered this way only if it was made or
    /// vouched for within the last second (see `history`), so the `stat`s are of files this
    /// process has just looked at; any other outcome is `None`, and the caller reads the
    /// ordinary way.
    fn kept_detail(
        &self,
        agent: &AgentName,
        id: &SessionId,
        detail: &Detail<Session, SessionMessage>,
    ) -> Option<Body> {
        // Nothing is looked at on this thread for a body not vouched for just before.
        if !self.histories.recently_checked(*id) {
            return None;
        }
        let journal = self.sessions.existing(agent)?;
        let generation = {
            let journal = journal.try_lock().ok()?;
            let followed = journal.followed.as_ref()?;
            if !followed.unchanged(&self.journal_path(agent), journal.offset) {
                return None;
            }
            journal.renderings.generation()
        };
        self.histories.kept_detail(*id, &self.messages_path(agent, id), generation, detail)
    }

    /// The session with its whole history as `detail` writes it, read the ordinary way (the
    /// journal refreshed, the history read on from where it was read to), and kept for
    /// [`kept_detail`](Self::kept_detail).
    fn session_detail(
        &self,
        agent: &AgentName,
        id: &SessionId,
        detail: &Detail<Session, SessionMessage>,
    ) -> Result<Body> {
        self.require_journal(agent)?;
        let journal = self.sessions.journal(agent);
        let (session, generation) = {
            let mut journal = journal.lock().unwrap_or_else(PoisonError::into_inner);
            journal.refresh_to_read(&self.journal_path(agent))?;
            (journal.sessions.get(id).cloned(), journal.renderings.generation())
        };
        let session = session.ok_or_else(|| Error::not_found("session", id))?;
        let path = self.messages_path(agent, id);
        let joined =
            self.histories.read_detail(*id, &path, generation, detail, |count, messages| {
                (session.message_count == count as u64).then(|| detail.join(&session, messages))
            })?;
        if let Some(body) = joined {
            return Ok(body);
        }
        let (session, messages) = self.repaired_history(agent, id, detail.parts.render)?;
        Ok(detail.join(&session, &messages))
    }

    /// The session and its history when its record and its history disagree on the count:
    /// `messages_of` repairs the record, which is read again so that the answer shows the
    /// repaired count.
    fn repaired_history(
        &self,
        agent: &AgentName,
        id: &SessionId,
        render: Render<SessionMessage>,
    ) -> Result<(Session, Vec<Rendered>)> {
        let messages = self.messages_of(agent, id)?;
        let session = self
            .read_sessions(agent, |sessions| sessions.get(id).cloned())?
            .ok_or_else(|| Error::not_found("session", id))?;
        Ok((session, crate::render::each(&messages, render)))
    }

    /// Every session, newest first, as `listing` writes it: the body kept while the journal
    /// has not changed since it was joined, else one joined from the renderings kept for the
    /// sessions unchanged since they were last listed and new ones for the others.
    fn sessions_body(&self, agent: &AgentName, listing: &Listing<Session>) -> Result<Body> {
        self.require_journal(agent)?;
        let journal = self.sessions.journal(agent);
        let mut journal = journal.lock().unwrap_or_else(PoisonError::into_inner);
        journal.refresh_to_read(&self.journal_path(agent))?;
        let Journal { sessions, renderings, .. } = &mut *journal;
        Ok(renderings.body(sessions.iter().rev(), listing))
    }

    /// Changes the journal under the cross-process lock. `change` sees every session as of
    /// now and returns the entry to append (or `None` to append nothing) and a result.
    /// Runs `body` under the journal's lock while session `id` exists (`NotFound` otherwise),
    /// so that what it writes for the session cannot land after the session's deletion.
    pub(super) fn with_session<T>(
        &self,
        agent: &AgentName,
        id: &SessionId,
        body: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        self.write_sessions(agent, |sessions| {
            if !sessions.contains_key(id) {
                return Err(Error::not_found("session", id));
            }
            Ok((None, body()?))
        })
    }

    fn write_sessions<T>(
        &self,
        agent: &AgentName,
        change: impl FnOnce(&BTreeMap<SessionId, Session>) -> Result<(Option<Entry>, T)>,
    ) -> Result<T> {
        let path = self.journal_path(agent);
        let journal = self.sessions.journal(agent);
        self.with_agent(agent, || {
            io::with_lock(&self.agent_dir(agent).join("sessions.lock"), || {
                let mut journal = journal.lock().unwrap_or_else(PoisonError::into_inner);
                let len = journal.refresh(&path, false)?;
                if journal.journal.is_none() {
                    // A new journal, or one from before headers: give it a header first.
                    compact(&path, &mut journal, len > 0)?;
                }
                let (entry, result) = change(&journal.sessions)?;
                if let Some(entry) = entry {
                    let line = serde_json::to_vec(&entry)
                        .map_err(|err| Error::Corrupt { path: path.clone(), source: err })?;
                    io::append_line(&path, &line)?;
                    // Replaying our own line keeps the offset exact, torn-line repair included.
                    journal.refresh(&path, false)?;
                    if journal.wants_compaction() {
                        compact(&path, &mut journal, true)?;
                    }
                }
                Ok(result)
            })
        })
    }

    /// The session's history, parsed on from where this process last read it (see `history`);
    /// a record whose count disagrees with its history is repaired.
    fn messages_of(&self, agent: &AgentName, id: &SessionId) -> Result<Vec<SessionMessage>> {
        let session = self
            .read_sessions(agent, |sessions| sessions.get(id).cloned())?
            .ok_or_else(|| Error::not_found("session", id))?;
        let path = self.messages_path(agent, id);
        // Parsed on from where this process last read it (see `history`).
        let messages = self.histories.read(*id, &path)?;
        if session.message_count == messages.len() as u64 {
            return Ok(messages);
        }
        // A crash between a message and its count, or a skipped torn line: make the record
        // agree with the history that is really there, re-reading both under the lock so
        // that a concurrent append is not mistaken for damage.
        self.write_sessions(agent, |sessions| {
            let mut session = sessions.get(id).cloned().ok_or_else(|| Error::not_found("session", id))?;
            let messages: Vec<SessionMessage> = io::read_jsonl(&path)?;
            if session.message_count == messages.len() as u64 {
                return Ok((None, messages));
            }
            tracing::warn!(%agent, session = %id, recorded = session.message_count, found = messages.len(), "repairing message count");
            session.message_count = messages.len() as u64;
            session.last_message_at = messages.last().map(|m| m.created_at);
            session.last_message = messages.last().map(MessagePreview::of);
            Ok((Some(Entry::Put { session: Box::new(session) }), messages))
        })
    }

    fn create_session(&self, agent: &AgentName, id: SessionId, new: NewSession) -> Result<Session> {
        let session = Session::new(agent, id, new);
        self.write_sessions(agent, |sessions| {
            if sessions.contains_key(&session.id) {
                return Err(Error::AlreadyExists { what: "session", id: session.id.to_string() });
            }
            Ok((Some(Entry::Put { session: Box::new(session.clone()) }), session))
        })
    }

    fn update_session(
        &self,
        agent: &AgentName,
        id: &SessionId,
        change: impl FnOnce(&mut Session),
    ) -> Result<Session> {
        self.write_sessions(agent, |sessions| {
            let mut session =
                sessions.get(id).cloned().ok_or_else(|| Error::not_found("session", id))?;
            change(&mut session);
            Ok((Some(Entry::Put { session: Box::new(session.clone()) }), session))
        })
    }
}

#[async_trait]
impl SessionStore for FsStore {
    async fn create_with_id(
        &self,
        agent: &AgentName,
        id: SessionId,
        new: NewSession,
    ) -> Result<Session> {
        let agent = agent.clone();
        self.blocking(move |s| s.create_session(&agent, id, new)).await
    }

    async fn get(&self, agent: &AgentName, id: &SessionId) -> Result<Session> {
        let (agent, id) = (agent.clone(), *id);
        self.blocking(move |s| {
            s.read_sessions(&agent, |sessions| sessions.get(&id).cloned())?
                .ok_or_else(|| Error::not_found("session", id))
        })
        .await
    }

    async fn list_by_agent(&self, agent: &AgentName) -> Result<Vec<Session>> {
        let agent = agent.clone();
        // Ids are ULIDs, so reverse id order is newest first.
        self.blocking(move |s| {
            s.read_sessions(&agent, |sessions| sessions.values().rev().cloned().collect())
        })
        .await
    }

    async fn list_rendered(&self, agent: &AgentName, listing: Listing<Session>) -> Result<Body> {
        let agent = agent.clone();
        self.blocking(move |s| s.sessions_body(&agent, &listing)).await
    }

    async fn list_page(
        &self,
        agent: &AgentName,
        before: Option<SessionId>,
        limit: usize,
    ) -> Result<Vec<Session>> {
        let agent = agent.clone();
        self.blocking(move |s| {
            s.read_sessions(&agent, |sessions| {
                let older = match before {
                    Some(before) => sessions.range(..before),
                    None => sessions.range(..),
                };
                older.rev().take(limit).map(|(_, session)| session.clone()).collect()
            })
        })
        .await
    }

    async fn update(
        &self,
        agent: &AgentName,
        id: &SessionId,
        patch: SessionPatch,
    ) -> Result<Session> {
        let (agent, id) = (agent.clone(), *id);
        self.blocking(move |s| {
            s.update_session(&agent, &id, |session| {
                patch.apply(session);
            })
        })
        .await
    }

    async fn delete(&self, agent: &AgentName, id: &SessionId) -> Result<()> {
        let (agent, id) = (agent.clone(), *id);
        self.blocking(move |s| {
            s.write_sessions(&agent, |sessions| {
                if !sessions.contains_key(&id) {
                    return Err(Error::not_found("session", id));
                }
                Ok((Some(Entry::Delete { id }), ()))
            })?;
            io::remove_file(&s.messages_path(&agent, &id))?;
            s.histories.forget(&id);
            s.remove_transcript(&agent, &id)
        })
        .await
    }

    async fn append_message(
        &self,
        agent: &AgentName,
        id: &SessionId,
        message: SessionMessage,
    ) -> Result<()> {
        let (agent, id) = (agent.clone(), *id);
        self.blocking(move |s| {
            let messages = s.messages_path(&agent, &id);
            // The message is written under the journal lock, so it cannot land after a
            // concurrent delete removed the history, and the count moves with it.
            s.write_sessions(&agent, |sessions| {
                let mut session =
                    sessions.get(&id).cloned().ok_or_else(|| Error::not_found("session", id))?;
                io::ensure_dir(messages.parent().unwrap_or(Path::new(".")))?;
                io::append_json(&messages, &message)?;
                session.message_count += 1;
                session.last_message_at = Some(message.created_at);
                session.last_message = Some(MessagePreview::of(&message));
                Ok((Some(Entry::Put { session: Box::new(session) }), ()))
            })
        })
        .await
    }

    async fn get_messages(&self, agent: &AgentName, id: &SessionId) -> Result<Vec<SessionMessage>> {
        let (agent, id) = (agent.clone(), *id);
        self.blocking(move |s| s.messages_of(&agent, &id)).await
    }

    async fn get_rendered(
        &self,
        agent: &AgentName,
        id: &SessionId,
        render: Render<SessionMessage>,
    ) -> Result<(Session, Vec<Rendered>)> {
        let (agent, id) = (agent.clone(), *id);
        self.blocking(move |s| {
            let session = s
                .read_sessions(&agent, |sessions| sessions.get(&id).cloned())?
                .ok_or_else(|| Error::not_found("session", id))?;
            let path = s.messages_path(&agent, &id);
            let (count, rendered) = s.histories.read_rendered(id, &path, render)?;
            if session.message_count == count as u64 {
                return Ok((session, rendered));
            }
            s.repaired_history(&agent, &id, render)
        })
        .await
    }

    async fn get_detail(
        &self,
        agent: &AgentName,
        id: &SessionId,
        detail: &Detail<Session, SessionMessage>,
    ) -> Result<Body> {
        if let Some(body) = self.inner.kept_detail(agent, id, detail) {
            return Ok(body);
        }
        let (agent, id, detail) = (agent.clone(), *id, *detail);
        self.blocking(move |s| s.session_detail(&agent, &id, &detail)).await
    }

    async fn append_transcript(
        &self,
        agent: &AgentName,
        id: &SessionId,
        entries: &[TranscriptEntry],
    ) -> Result<()> {
        let (agent, id, entries) = (agent.clone(), *id, entries.to_vec());
        self.blocking(move |s| s.append_transcript(&agent, &id, &entries)).await
    }

    async fn read_transcript(
        &self,
        agent: &AgentName,
        id: &SessionId,
        from: TranscriptCursor,
        limit: usize,
    ) -> Result<TranscriptPage> {
        let (agent, id) = (agent.clone(), *id);
        self.blocking(move |s| s.read_transcript(&agent, &id, from, limit)).await
    }
}
