//! The inbox: one file per message, its directory an index of its state, and one lock per
//! agent's inbox that makes every change of state a single step.
//!
//! ```text
//! inbox/open/<id>.json      pending: waiting for a session, or claimed (its `lease` says by whom)
//! inbox/archive/<id>.json   read or archived
//! inbox/dead/<id>.json      set aside after too many failed deliveries, or unreadable
//! inbox/.lock               held (flock) by every change of state
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
//! next change under the lock moves on. Nothing is ever written anywhere but under the lock,
//! except `send`, which creates a file under a name no one else can know yet.
//!
//! Readers take the lock shared, so a listing sees every message exactly once even while
//! messages move between directories. The pending listing reads an index of `open/` (see
//! `index`), whose change log `open.changes.jsonl` every change to `open/` writes to first;
//! `send` takes the lock shared too, for that log, and its fsyncs overlap with other sends'.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use time::OffsetDateTime;

use super::index::{self, Change};
use super::{FsStore, Inner, io};
use crate::render::{Body, Listing};
use crate::{
    AgentName, Claimer, Error, InboxMessage, InboxStore, Lease, LeaseToken, MessageId,
    MessageStatus, NewMessage, Result, timestamp,
};

const OPEN: &str = "open";
const ARCHIVE: &str = "archive";
const DEAD: &str = "dead";
/// The most times one claim chooses from the index (see `take_unclaimed`).
const MAX_ROUNDS: usize = 4;

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
            let moved = self.with_inbox(&agent, true, || {
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

    fn inbox_dir(&self, agent: &AgentName, state: &str) -> PathBuf {
        self.agent_dir(agent).join("inbox").join(state)
    }

    fn message_path(&self, agent: &AgentName, state: &str, id: &MessageId) -> PathBuf {
        self.inbox_dir(agent, state).join(format!("{id}.json"))
    }

    /// The change log of `open/` (see `index`).
    fn open_log(&self, agent: &AgentName) -> PathBuf {
        self.agent_dir(agent).join("inbox").join("open.changes.jsonl")
    }

    /// Tells every process's index that a message in `open/` is about to change: before the
    /// change, under the inbox lock (exclusive, or shared for a new message).
    fn note_open(&self, agent: &AgentName, id: &MessageId, change: Change) -> Result<()> {
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
    /// agent guarded against deletion.
    fn with_inbox<T>(
        &self,
        agent: &AgentName,
        exclusive: bool,
        body: impl FnOnce() -> Result<T>,
    ) -> Result<T> {
        self.with_agent(agent, || {
            let dir = self.agent_dir(agent).join("inbox");
            io::ensure_dir(&dir)?;
            io::with_lock_mode(&dir.join(".lock"), exclusive, body)
        })
    }

    /// Gives back every claim whose lease lapsed before `now`, then answers the messages
    /// nobody holds, oldest first, up to `limit` of them (`claim`: claimed for it; else all of
    /// them, as listed). The caller holds the inbox lock exclusively, so the index of `open/`
    /// brought up to date is the directory as far as every change to it was logged (see
    /// `index::RecordIndex::read_settled`): the messages are chosen from it in memory and only
    /// the files taken are read, never the whole directory. What a crash or damage left in
    /// `open/` that is not pending is moved on first.
    ///
    /// A file damaged, made unreadable or edited by hand writes no log line, so the index can
    /// disagree with it. The file decides: such a message is skipped (one file must not fail
    /// every claim of the agent) and named in the log, so that every process's index reads it
    /// again, and the claim chooses again from the index so corrected, for a batch that is
    /// short only when the inbox is.
    fn take_unclaimed(
        &self,
        agent: &AgentName,
        now: OffsetDateTime,
        claim: Option<&Claimer>,
        limit: usize,
    ) -> Result<Vec<InboxMessage>> {
        let mut taken = Vec::new();
        // Each further round follows a disagreement, which the refresh then mends for good
        // (the id read again, and kept, awaited or moved on as its file is); the bound only
        // keeps a file that fails now and then from holding the lock for long.
        for _ in 0..MAX_ROUNDS {
            let round = self.take_round(agent, now, claim, limit - taken.len())?;
            // A listing reads every candidate's file already: chosen again, it would list
            // some twice.
            let listed = claim.is_none() && !round.taken.is_empty();
            taken.extend(round.taken);
            if !round.disagreed || taken.len() == limit || listed {
                break;
            }
        }
        Ok(taken)
    }

    /// One choice from the index (see [`take_unclaimed`](Self::take_unclaimed)).
    fn take_round(
        &self,
        agent: &AgentName,
        now: OffsetDateTime,
        claim: Option<&Claimer>,
        limit: usize,
    ) -> Result<Round> {
        let (dir, log) = (self.inbox_dir(agent, OPEN), self.open_log(agent));
        let found = self.inbox_index.read_settled(
            agent,
            &pending_source(&dir, &log),
            |pending, strays| {
                let mut found =
                    Unclaimed { strays: strays.iter().cloned().collect(), ..Unclaimed::default() };
                let mut free = 0;
                // Ids are ULIDs: key order is age order.
                for message in pending.values() {
                    match message.lease {
                        Some(lease) if lease.expired_at(now) => {
                            found.lapsed.push(message.id);
                            found.candidates.push(message.clone());
                        }
                        Some(_) => {}
                        // Past `limit` free ones only lapsed claims are still looked for.
                        None if free < limit => {
                            free += 1;
                            found.candidates.push(message.clone());
                        }
                        None => {}
                    }
                }
                found
            },
        )?;
        let mut round = Round::default();
        if self.move_strays(agent, &found.strays)? {
            // A message the index left out is pending after all: choose again, in age order,
            // once the index has it back.
            round.disagreed = true;
            return Ok(round);
        }
        let mut given_back = std::collections::HashMap::new();
        for id in &found.lapsed {
            // The file decides: under the lock it is what the index says unless it was
            // damaged or edited unlogged.
            let Some(message) = self.read_agreeing(agent, id, &mut round)? else { continue };
            if message.lease.is_some_and(|lease| lease.expired_at(now)) {
                let holder =
                    message.lease.map(|lease| lease.instance.to_string()).unwrap_or_default();
                tracing::info!(%agent, message = %id, %holder, "taking back an inbox claim whose lease lapsed");
                // A holder that vanished may have shown the message to the model: it counts.
                given_back.insert(*id, self.give_back(agent, message, true)?);
            } else {
                self.disagrees(agent, id, &mut round)?;
            }
        }
        for candidate in found.candidates {
            if round.taken.len() == limit {
                break;
            }
            let id = match given_back.remove(&candidate.id) {
                Some(message) if message.status == MessageStatus::Pending => message.id,
                Some(_) => continue,
                None if candidate.lease.is_some() => continue,
                None => candidate.id,
            };
            // Only a taken message's file is read, and it decides.
            let Some(message) = self.read_agreeing(agent, &id, &mut round)? else { continue };
            if message.lease.is_some() {
                self.disagrees(agent, &id, &mut round)?;
                continue;
            }
            match claim {
                Some(claimer) => round.taken.push(self.claim_one(agent, message, claimer)?),
                None => round.taken.push(message),
            }
        }
        Ok(round)
    }

    /// The pending message `id` as its file is, when the index holds it pending; `None` (the
    /// disagreement noted, see [`disagrees`](Self::disagrees)) when the file is gone, closed,
    /// damaged or cannot be read.
    fn read_agreeing(
        &self,
        agent: &AgentName,
        id: &MessageId,
        round: &mut Round,
    ) -> Result<Option<InboxMessage>> {
        match self.read_open(agent, id) {
            Ok(Some(message)) => return Ok(Some(message)),
            Ok(None) => {}
            Err(err @ (Error::Io { .. } | Error::Corrupt { .. })) => {
                tracing::warn!(%agent, message = %id, error = %err, "skipping an inbox message whose file cannot be read");
            }
            Err(err) => return Err(err),
        }
        self.disagrees(agent, id, round)?;
        Ok(None)
    }

    /// Names in the log a message whose file disagrees with the index, so that every
    /// process's index reads it again: a damaged one becomes a stray, set aside in `dead/`
    /// by the next claim; an unreadable one is left out and awaited (see `index`).
    fn disagrees(&self, agent: &AgentName, id: &MessageId, round: &mut Round) -> Result<()> {
        round.disagreed = true;
        self.note_open(agent, id, Change::Changed)
    }

    /// Moves on the files in `open/` that are not pending messages (`strays`, normally none):
    /// a message rewritten closed whose move a crash cut short goes where its status says, and
    /// a file that does not parse is set aside in `dead/`. Answers whether one was pending
    /// after all (repaired by hand): it is named in the log, so that the index takes it back.
    /// The caller holds the lock exclusively.
    fn move_strays(&self, agent: &AgentName, strays: &[String]) -> Result<bool> {
        let dir = self.inbox_dir(agent, OPEN);
        let mut pending = false;
        for id in strays {
            let name = format!("{id}.json");
            let path = dir.join(&name);
            match io::read_json::<InboxMessage>(&path) {
                Ok(Some(message)) if message.status != MessageStatus::Pending => {
                    self.move_closed(agent, &message)?;
                }
                Ok(Some(_)) => {
                    index::note(&self.open_log(agent), id, Change::Changed, true)?;
                    pending = true;
                }
                // Gone: the refresh that named it a stray will hear of it.
                Ok(None) => {}
                // A transient read error (EIO, EACCES) is skipped this time, not filed away.
                Err(err @ Error::Io { .. }) => {
                    tracing::warn!(error = %err, "skipping an inbox message that could not be read");
                }
                Err(err) => {
                    tracing::warn!(error = %err, "setting aside an inbox message that does not parse");
                    index::note(&self.open_log(agent), id, Change::Changed, true)?;
                    io::ensure_dir(&self.inbox_dir(agent, DEAD))?;
                    io::rename(
                        &path,
                        &self.inbox_dir(agent, DEAD).join(format!("{name}.corrupt")),
                    )?;
                }
            }
        }
        Ok(pending)
    }

    /// Moves a message already rewritten with a closed status out of `open/`.
    fn move_closed(&self, agent: &AgentName, message: &InboxMessage) -> Result<()> {
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
    fn read_open(&self, agent: &AgentName, id: &MessageId) -> Result<Option<InboxMessage>> {
        Ok(io::read_json::<InboxMessage>(&self.message_path(agent, OPEN, id))?
            .filter(|message| message.status == MessageStatus::Pending))
    }

    /// Puts a message whose claim ended unhandled back in line, or sets it aside when it
    /// has reached the model too often.
    fn give_back(
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

    fn claim_one(
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

/// What one round of a claim took, and whether a file disagreed with the index on the way.
#[derive(Default)]
struct Round {
    taken: Vec<InboxMessage>,
    disagreed: bool,
}

/// What a claim found in the index of `open/`, before touching any file.
#[derive(Default)]
struct Unclaimed {
    /// Every message whose claim lapsed, oldest first.
    lapsed: Vec<MessageId>,
    /// The messages that may be taken, oldest first: the first `limit` unclaimed ones, and
    /// every lapsed one among them (given back first, unless it is then set aside as dead).
    candidates: Vec<InboxMessage>,
    /// Files in `open/` that are not pending messages.
    strays: Vec<String>,
}

/// Where the index of pending messages reads from: `open/`, keeping the pending ones.
fn pending_source<'a>(dir: &'a Path, log: &'a Path) -> index::Source<'a, InboxMessage> {
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
            // A fresh id: no one else can name this file, so the lock is taken only shared,
            // for the index's log (see `index`): its line comes first, the file after, with
            // the directory's fsync shared by concurrent senders (see `dirsync`).
            s.with_inbox(&agent, false, || {
                let message = InboxMessage::new(new);
                s.note_open(&agent, &message.id, Change::New)?;
                let dir = s.inbox_dir(&agent, OPEN);
                io::ensure_dir(&dir)?;
                let path = s.message_path(&agent, OPEN, &message.id);
                if let Err(err) = io::write_new_json(&path, &message, &s.dir_syncs) {
                    // Readers stop waiting for it; a partial file never got its name.
                    let id = message.id.to_string();
                    let _ = index::note(&s.open_log(&agent), &id, Change::Changed, false);
                    return Err(err);
                }
                Ok(message)
            })
        })
        .await
    }

    async fn get_pending(&self, agent: &AgentName) -> Result<Vec<InboxMessage>> {
        let agent = agent.clone();
        self.blocking(move |s| s.with_inbox(&agent, false, || s.pending_messages(&agent))).await
    }

    async fn pending_rendered(
        &self,
        agent: &AgentName,
        listing: Listing<InboxMessage>,
    ) -> Result<Body> {
        let agent = agent.clone();
        self.blocking(move |s| {
            // The kept body, without a lock, while the index's log shows no change (see
            // `index`); else under the inbox lock, from the index brought up to date. An agent
            // found gone (deleted by another process) has its replica forgotten, so that its
            // deleted log is not held open.
            if let Err(err) = s.require_agent(&agent) {
                s.inbox_index.forget(&agent);
                return Err(err);
            }
            let log = s.open_log(&agent);
            if let Some(body) = s.inbox_index.current_body(&agent, &log, &listing) {
                return Ok(body);
            }
            s.with_inbox(&agent, false, || s.pending_body(&agent, &listing))
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
        self.blocking(move |s| s.with_inbox(&agent, false, || s.pending_page(&agent, after, limit)))
            .await
    }

    async fn get(&self, agent: &AgentName, id: &MessageId) -> Result<InboxMessage> {
        let (agent, id) = (agent.clone(), *id);
        self.blocking(move |s| {
            s.with_inbox(&agent, false, || {
                s.find_message(&agent, &id)?.ok_or_else(|| Error::not_found("inbox message", id))
            })
        })
        .await
    }

    async fn get_unclaimed(&self, agent: &AgentName) -> Result<Vec<InboxMessage>> {
        let agent = agent.clone();
        self.blocking(move |s| {
            s.with_inbox(&agent, true, || {
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
            s.with_inbox(&agent, true, || {
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
            s.with_inbox(&agent, true, || {
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
            s.with_inbox(&agent, true, || {
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
            s.with_inbox(&agent, true, || {
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
            s.with_inbox(&agent, true, || {
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
            s.with_inbox(&agent, true, || {
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
            s.with_inbox(&agent, false, || {
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
            s.with_inbox(&agent, false, || {
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
