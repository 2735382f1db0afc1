//! The inbox: one file per message, its directory an index of its state, and one lock per
//! agent's inbox that makes every change of state a single step.
//!
//! ```text
//! inbox/open/<id>.json      pending: waiting for a session, or claimed (its `lease` says by whom)
//! inbox/archive/<id>.json   read or archived
//! inbox/dead/<id>.json      set aside after too many failed deliveries, or unreadable
//! inbox/.lock               held (flock) by every change of state
//! inbox/arrivals.*          messages sent and not yet files of `open/` (see `arrivals`)
//! ```
//!
//! Why a lock rather than renames alone: a state change reads the message, checks that the
//! caller still holds what it thinks it holds (its lease token), and writes the new state. A
//! rename-only scheme has to write the new state back onto a name that a rival may have moved
//! away meanwhile, and the file comes back from the dead (an archived message delivered again).
//! Under the lock the check and the write are one step; the lock is per agent and held for a
//! few file operations, so sessions of different agents never wait for each other.
//!
//! The message's content is the truth and its directory follows it: closing a message first
//! rewrites it in place with its final status, then moves it to `archive/` or `dead/`. A crash
//! between the two leaves a closed message in `open/`, which readers skip by its status and the
//! next change under the lock moves on. Nothing is ever written in these directories but under
//! the lock held exclusively.
//!
//! `send` appends the message to the inbox's arrivals and touches none of them: every step but
//! a claim's settling first makes the messages sent before it files of `open/`, in bounded
//! steps under the lock held exclusively (`with_inbox`, `arrivals`). Readers then take the lock
//! shared, so a listing sees every message exactly once even while messages move between
//! directories. The pending listing reads an index of `open/` (see `index`), whose change log
//! `open.changes.jsonl` every change to `open/` writes to first.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use time::OffsetDateTime;

use super::index::{self, Change};
use super::{FsStore, Inner, arrivals, io};
use crate::render::{Body, Listing};
use crate::{
    AgentName, Claimer, Error, InboxMessage, InboxStore, Lease, LeaseToken, MessageId,
    MessageStatus, NewMessage, Result, timestamp,
};

pub(super) const OPEN: &str = "open";
pub(super) const ARCHIVE: &str = "archive";
pub(super) const DEAD: &str = "dead";

/// What an inbox step does with the messages sent before it (see `arrivals`).
#[derive(Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Reads them, under the lock shared: they are made files first, as far as they can be.
    Read,
    /// Reads the messages filed away (`archive/`, `dead/`), under the lock shared: no new
    /// message is one, so nothing is drained.
    ReadFiled,
    /// Acts on pending messages (a claim, an archiving), under the lock exclusively: they are
    /// made files first.
    Act,
    /// Settles a claim it holds, under the lock exclusively. Its message is a file already
    /// (it was claimed), so nothing is drained: a renewal never waits for a drain.
    Settle,
}

impl Inner {
    /// Moves messages of the older layout (`pending/<id>.json`, `claimed/<id>.<token>.<pid>.json`)
    /// into `open/`, claims given back: their holders were processes of an older server.
    pub(super) fn migrate_inboxes(&self) {
        let Ok(agents) = io::list_names(&self.root.join("agents"), "") else { return };
        for name in agents {
            let Ok(agent) = AgentName::parse(&name) else { continue };
            let old = ["pending", "claimed"].map(|state| self.inbox_dir(&agent, state));
            if !old.iter().any(|dir| dir.is_dir()) {
                continue;
            }
            let moved = self.with_inbox(&agent, Step::Act, || {
                let mut moved = 0;
                for dir in &old {
                    for file in io::list_names(dir, ".json")? {
                        let path = dir.join(&file);
                        let Some(mut message) = io::read_json_lenient::<InboxMessage>(&path) else {
                            continue;
                        };
                        if message.status == MessageStatus::Pending {
                            message.lease = None;
                            message.claimed_by = None;
                            message.claimed_at = None;
                        }
                        // A newer copy (from a crash mid-move) wins over an older one.
                        if io::read_json::<InboxMessage>(&self.message_path(
                            &agent,
                            OPEN,
                            &message.id,
                        ))
                        .ok()
                        .flatten()
                        .is_none()
                        {
                            io::ensure_dir(&self.inbox_dir(&agent, OPEN))?;
                            self.write_open(&agent, &message)?;
                            moved += 1;
                        }
                        io::remove_file(&path)?;
                    }
                    io::remove_dir_all(dir)?;
                }
                Ok(moved)
            });
            match moved {
                Ok(0) => {}
                Ok(moved) => {
                    tracing::warn!(%agent, moved, "moved inbox messages of an older layout into open/")
                }
                Err(err) => {
                    tracing::warn!(%agent, error = %err, "could not move inbox messages of an older layout")
                }
            }
        }
    }

    pub(super) fn inbox_dir(&self, agent: &AgentName, state: &str) -> PathBuf {
        self.agent_dir(agent).join("inbox").join(state)
    }

    fn message_path(&self, agent: &AgentName, state: &str, id: &MessageId) -> PathBuf {
        self.inbox_dir(agent, state).join(format!("{id}.json"))
    }

    /// The change log of `open/` (see `index`).
    pub(super) fn open_log(&self, agent: &AgentName) -> PathBuf {
        self.agent_dir(agent).join("inbox").join("open.changes.jsonl")
    }

    /// Tells every process's index that a message in `open/` is about to change: before the
    /// change, under the inbox lock held exclusively.
    pub(super) fn note_open(
        &self,
        agent: &AgentName,
        id: &MessageId,
        change: Change,
    ) -> Result<()> {
        index::note(&self.open_log(agent), &id.to_string(), change, change == Change::Changed)
    }

    /// The pending messages, oldest first, from the index. The caller holds the inbox lock.
    fn pending_messages(&self, agent: &AgentName) -> Result<Vec<InboxMessage>> {
        self.pending_page(agent, None, usize::MAX)
    }

    /// At most `limit` pending messages newer than `after`, oldest first, from the index.
    fn pending_page(
        &self,
        agent: &AgentName,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<InboxMessage>> {
        let (dir, log) = (self.inbox_dir(agent, OPEN), self.open_log(agent));
        // Ids are ULIDs: key order is age order.
        self.inbox_index.read(agent, &pending_source(&dir, &log), |pending| {
            index::after(pending, after.map(|id| id.to_string())).take(limit).cloned().collect()
        })
    }

    /// The whole listing of the pending messages, oldest first, as `listing` writes it (see
    /// `index`). The caller holds the inbox lock.
    fn pending_body(&self, agent: &AgentName, listing: &Listing<InboxMessage>) -> Result<Body> {
        let (dir, log) = (self.inbox_dir(agent, OPEN), self.open_log(agent));
        self.inbox_index.body(agent, &pending_source(&dir, &log), listing)
    }

    /// Runs `body` holding the agent's inbox lock (exclusive, or shared for reads), with the
    /// agent guarded against deletion; unless it settles a claim, every message sent before
    /// it began is a file of `open/` first (see `arrivals`).
    fn with_inbox<T>(
        &self,
        agent: &AgentName,
        step: Step,
        body: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        self.with_agent(agent, || {
            let dir = self.agent_dir(agent).join("inbox");
            io::ensure_dir(&dir)?;
            let lock = dir.join(".lock");
            let drained = match step {
                Step::Read => self.drain_arrivals(agent, &dir, &lock),
                Step::Act => {
                    self.drain_arrivals(agent, &dir, &lock)?;
                    Ok(())
                }
                Step::ReadFiled | Step::Settle => Ok(()),
            };
            let exclusive = matches!(step, Step::Act | Step::Settle);
            match (io::with_lock_mode(&lock, exclusive, body), drained) {
                // What could not be drained (a full disk, a file system gone read-only) is not
                // read yet; the rest still is, but "not found" cannot be told then.
                (Err(Error::NotFound { .. }), Err(err)) => Err(err),
                (read, Err(err)) => {
                    tracing::warn!(%agent, error = %err, "could not make the inbox's new messages files; read without them");
                    read
                }
                (read, Ok(())) => read,
            }
        })
    }

    /// Makes a file of `open/` of every message sent before the call (see `arrivals`), one
    /// bounded step per hold of the inbox lock. A message that is a file already, wherever it
    /// went since (a batch a crash left, or one another drain worked on), is left alone; the
    /// others are written and fsynced, their index lines first, and `open/` is fsynced once
    /// per step.
    fn drain_arrivals(&self, agent: &AgentName, dir: &Path, lock: &Path) -> Result<()> {
        arrivals::drain(dir, lock, |messages: Vec<InboxMessage>| {
            if messages.is_empty() {
                return Ok(());
            }
            let open = self.inbox_dir(agent, OPEN);
            io::ensure_dir(&open)?;
            let mut files = Vec::with_capacity(messages.len());
            for message in &messages {
                if self.message_file_exists(agent, &message.id)? {
                    continue;
                }
                self.note_open(agent, &message.id, Change::Changed)?;
                files.push((self.message_path(agent, OPEN, &message.id), message));
            }
            io::write_json_all(&files)?;
            // Even when every file was there already: a drain killed after its renames and
            // before this fsync left them in `open/` but not yet durable, and the batch's
            // removal after this step fsyncs only `inbox/`.
            io::sync_dir(&open)
        })
    }

    /// Whether message `id` is a file in any state, a damaged one set aside included.
    fn message_file_exists(&self, agent: &AgentName, id: &MessageId) -> Result<bool> {
        for state in [OPEN, ARCHIVE, DEAD] {
            if io::exists(&self.message_path(agent, state, id))? {
                return Ok(true);
            }
        }
        io::exists(&self.inbox_dir(agent, DEAD).join(format!("{id}.json.corrupt")))
    }

    /// Moves a message already rewritten with a closed status out of `open/`.
    pub(super) fn move_closed(&self, agent: &AgentName, message: &InboxMessage) -> Result<()> {
        let state = match message.status {
            MessageStatus::Pending => return Ok(()),
            MessageStatus::Read | MessageStatus::Archived => ARCHIVE,
            MessageStatus::Dead => DEAD,
        };
        self.note_open(agent, &message.id, Change::Changed)?;
        io::ensure_dir(&self.inbox_dir(agent, state))?;
        io::rename(
            &self.message_path(agent, OPEN, &message.id),
            &self.message_path(agent, state, &message.id),
        )?;
        io::sync_dir(&self.inbox_dir(agent, state))?;
        io::sync_dir(&self.inbox_dir(agent, OPEN))
    }

    /// Writes a message's new state; a closed one is then moved out of `open/`.
    fn write_open(&self, agent: &AgentName, message: &InboxMessage) -> Result<()> {
        self.note_open(agent, &message.id, Change::Changed)?;
        io::write_json(&self.message_path(agent, OPEN, &message.id), message)?;
        self.move_closed(agent, message)
    }

    /// A pending message as stored, `None` when it is not (or no longer) pending.
    pub(super) fn read_open(
        &self,
        agent: &AgentName,
        id: &MessageId,
    ) -> Result<Option<InboxMessage>> {
        Ok(io::read_json::<InboxMessage>(&self.message_path(agent, OPEN, id))?
            .filter(|message| message.status == MessageStatus::Pending))
    }

    /// Puts a message whose claim ended unhandled back in line, or sets it aside when it
    /// has reached the model too often.
    pub(super) fn give_back(
        &self,
        agent: &AgentName,
        mut message: InboxMessage,
        delivered: bool,
    ) -> Result<InboxMessage> {
        if delivered {
            message.deliveries = message.deliveries.saturating_add(1);
        }
        message.lease = None;
        message.claimed_by = None;
        message.claimed_at = None;
        if message.deliveries >= self.options.max_deliveries {
            tracing::warn!(%agent, message = %message.id, deliveries = message.deliveries, "setting aside an inbox message that keeps failing");
            message.status = MessageStatus::Dead;
        }
        self.write_open(agent, &message)?;
        Ok(message)
    }

    pub(super) fn claim_one(
        &self,
        agent: &AgentName,
        mut message: InboxMessage,
        claimer: &Claimer,
    ) -> Result<InboxMessage> {
        message.lease = Some(Lease::new(claimer.instance, claimer.until));
        message.claimed_by = Some(claimer.session);
        message.claimed_at = Some(timestamp::now());
        self.write_open(agent, &message)?;
        Ok(message)
    }

    /// The open message `token` holds; `Conflict` otherwise.
    fn held(&self, agent: &AgentName, id: &MessageId, token: &LeaseToken) -> Result<InboxMessage> {
        match self.read_open(agent, id)? {
            Some(message) if message.lease.is_some_and(|lease| lease.token == *token) => {
                Ok(message)
            }
            _ => Err(Error::Conflict(format!(
                "inbox message {id} is no longer held by this claim (its lease lapsed, or it was archived)"
            ))),
        }
    }

    fn find_message(&self, agent: &AgentName, id: &MessageId) -> Result<Option<InboxMessage>> {
        for state in [OPEN, ARCHIVE, DEAD] {
            if let Some(message) = io::read_json(&self.message_path(agent, state, id))? {
                return Ok(Some(message));
            }
        }
        Ok(None)
    }
}

/// Where the index of pending messages reads from: `open/`, keeping the pending ones.
pub(super) fn pending_source<'a>(dir: &'a Path, log: &'a Path) -> index::Source<'a, InboxMessage> {
    index::Source {
        dir,
        log,
        keep: |message: &InboxMessage| message.status == MessageStatus::Pending,
    }
}

#[async_trait]
impl InboxStore for FsStore {
    async fn send(&self, new: NewMessage) -> Result<InboxMessage> {
        if new.message.trim().is_empty() {
            return Err(Error::Invalid("message must not be empty".into()));
        }
        self.blocking(move |s| {
            let agent = new.to_agent.clone();
            let message = InboxMessage::new(new);
            // A line of the inbox's arrivals, made a file of `open/` by the next step that
            // drains (see `arrivals`). The line is written with the agent guarded against
            // deletion; its sync, shared with other senders, is waited for after.
            let dir = s.agent_dir(&agent).join("inbox");
            let appended = s.with_agent(&agent, || {
                io::ensure_dir(&dir)?;
                arrivals::append(&dir, &message)
            })?;
            appended.sync(&s.file_syncs)?;
            Ok(message)
        })
        .await
    }

    async fn get_pending(&self, agent: &AgentName) -> Result<Vec<InboxMessage>> {
        let agent = agent.clone();
        self.blocking(move |s| s.with_inbox(&agent, Step::Read, || s.pending_messages(&agent)))
            .await
    }

    async fn pending_rendered(
        &self,
        agent: &AgentName,
        listing: Listing<InboxMessage>,
    ) -> Result<Body> {
        let agent = agent.clone();
        self.blocking(move |s| {
            // The kept body, without a lock, while nothing waits in the arrivals and the
            // index's log shows no change (see `index`); else under the inbox lock, from the index brought up to date. An agent
            // found gone (deleted by another process) has its replica forgotten, so that its
            // deleted log is not held open.
            if let Err(err) = s.require_agent(&agent) {
                s.inbox_index.forget(&agent);
                s.quiet_arrivals.forget(&s.agent_dir(&agent).join("inbox"));
                return Err(err);
            }
            // Messages sent but not yet files of `open/` are not in it (see `arrivals`).
            let log = s.open_log(&agent);
            let arrived = s.quiet_arrivals.waiting(&s.agent_dir(&agent).join("inbox"));
            if !arrived && let Some(body) = s.inbox_index.current_body(&agent, &log, &listing) {
                return Ok(body);
            }
            s.with_inbox(&agent, Step::Read, || s.pending_body(&agent, &listing))
        })
        .await
    }

    async fn pending_page(
        &self,
        agent: &AgentName,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<InboxMessage>> {
        let agent = agent.clone();
        self.blocking(move |s| {
            s.with_inbox(&agent, Step::Read, || s.pending_page(&agent, after, limit))
        })
        .await
    }

    async fn get(&self, agent: &AgentName, id: &MessageId) -> Result<InboxMessage> {
        let (agent, id) = (agent.clone(), *id);
        self.blocking(move |s| {
            s.with_inbox(&agent, Step::Read, || {
                s.find_message(&agent, &id)?.ok_or_else(|| Error::not_found("inbox message", id))
            })
        })
        .await
    }

    async fn get_unclaimed(&self, agent: &AgentName) -> Result<Vec<InboxMessage>> {
        let agent = agent.clone();
        self.blocking(move |s| {
            s.with_inbox(&agent, Step::Act, || {
                s.take_unclaimed(&agent, timestamp::now(), None, usize::MAX)
            })
        })
        .await
    }

    async fn claim(
        &self,
        agent: &AgentName,
        id: &MessageId,
        claimer: &Claimer,
    ) -> Result<Option<InboxMessage>> {
        let (agent, id, claimer) = (agent.clone(), *id, *claimer);
        self.blocking(move |s| {
            s.with_inbox(&agent, Step::Act, || {
                let Some(message) = s.read_open(&agent, &id)? else { return Ok(None) };
                let free = message.lease.is_none_or(|lease| lease.expired_at(timestamp::now()));
                if !free {
                    return Ok(None);
                }
                let message = match message.lease {
                    // Taken over from a holder whose lease lapsed: that delivery counts.
                    Some(_) => s.give_back(&agent, message, true)?,
                    None => message,
                };
                if message.status != MessageStatus::Pending {
                    return Ok(None);
                }
                s.claim_one(&agent, message, &claimer).map(Some)
            })
        })
        .await
    }

    async fn claim_unclaimed(
        &self,
        agent: &AgentName,
        claimer: &Claimer,
        limit: usize,
    ) -> Result<Vec<InboxMessage>> {
        let (agent, claimer) = (agent.clone(), *claimer);
        self.blocking(move |s| {
            s.with_inbox(&agent, Step::Act, || {
                s.take_unclaimed(&agent, timestamp::now(), Some(&claimer), limit)
            })
        })
        .await
    }

    async fn renew(
        &self,
        agent: &AgentName,
        id: &MessageId,
        token: &LeaseToken,
        until: OffsetDateTime,
    ) -> Result<()> {
        let (agent, id, token) = (agent.clone(), *id, *token);
        self.blocking(move |s| {
            s.with_inbox(&agent, Step::Settle, || {
                let mut message = s.held(&agent, &id, &token)?;
                if let Some(lease) = message.lease.as_mut() {
                    lease.until = until;
                }
                s.write_open(&agent, &message)
            })
        })
        .await
    }

    async fn release(
        &self,
        agent: &AgentName,
        id: &MessageId,
        token: &LeaseToken,
        delivered: bool,
    ) -> Result<InboxMessage> {
        let (agent, id, token) = (agent.clone(), *id, *token);
        self.blocking(move |s| {
            s.with_inbox(&agent, Step::Settle, || {
                let message = s.held(&agent, &id, &token)?;
                s.give_back(&agent, message, delivered)
            })
        })
        .await
    }

    async fn mark_read(
        &self,
        agent: &AgentName,
        id: &MessageId,
        token: &LeaseToken,
    ) -> Result<InboxMessage> {
        let (agent, id, token) = (agent.clone(), *id, *token);
        self.blocking(move |s| {
            s.with_inbox(&agent, Step::Settle, || {
                let mut message = s.held(&agent, &id, &token)?;
                message.status = MessageStatus::Read;
                message.deliveries = message.deliveries.saturating_add(1);
                message.read_at = Some(timestamp::now());
                message.lease = None;
                s.write_open(&agent, &message)?;
                Ok(message)
            })
        })
        .await
    }

    async fn archive(&self, agent: &AgentName, id: &MessageId) -> Result<InboxMessage> {
        let (agent, id) = (agent.clone(), *id);
        self.blocking(move |s| {
            s.with_inbox(&agent, Step::Act, || {
                let Some(mut message) = s.find_message(&agent, &id)? else {
                    return Err(Error::not_found("inbox message", id));
                };
                match message.status {
                    MessageStatus::Pending => {
                        message.status = MessageStatus::Archived;
                        message.lease = None;
                        message.read_at.get_or_insert_with(timestamp::now);
                        s.write_open(&agent, &message)?;
                        Ok(message)
                    }
                    MessageStatus::Archived => Ok(message),
                    MessageStatus::Read | MessageStatus::Dead => Err(Error::Conflict(format!(
                        "inbox message {id} is {}, not pending",
                        if message.status == MessageStatus::Read { "read" } else { "dead" }
                    ))),
                }
            })
        })
        .await
    }

    async fn list_dead(&self, agent: &AgentName) -> Result<Vec<InboxMessage>> {
        let agent = agent.clone();
        self.blocking(move |s| {
            s.with_inbox(&agent, Step::ReadFiled, || {
                let dir = s.inbox_dir(&agent, DEAD);
                Ok(io::list_names(&dir, ".json")?
                    .iter()
                    .filter_map(|name| io::read_json_lenient(&dir.join(name)))
                    .collect())
            })
        })
        .await
    }

    async fn filed_page(
        &self,
        agent: &AgentName,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<InboxMessage>> {
        let agent = agent.clone();
        self.blocking(move |s| {
            s.with_inbox(&agent, Step::ReadFiled, || {
                let dir = s.inbox_dir(&agent, ARCHIVE);
                // Ids are ULIDs: name order is age order, and only the page's files are read.
                let names = io::list_names(&dir, ".json")?;
                Ok(names
                    .iter()
                    .rev()
                    .filter(|name| {
                        let id =
                            name.strip_suffix(".json").and_then(|id| MessageId::parse(id).ok());
                        before.is_none_or(|before| id.is_some_and(|id| id < before))
                    })
                    .filter_map(|name| io::read_json_lenient::<InboxMessage>(&dir.join(name)))
                    .filter(|m| matches!(m.status, MessageStatus::Read | MessageStatus::Archived))
                    .take(limit)
                    .collect())
            })
        })
        .await
    }
}
