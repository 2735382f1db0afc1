//! The inbox, where a message's directory is its state and `rename(2)` is the claim.
//!
//! ```text
//! inbox/pending/<id>.json                   waiting for a session
//! inbox/claimed/<id>.<token>.<pid>.json     held: token is a fresh ULID (the claim's time),
//!                                           pid the holder's process
//! inbox/archive/<id>.json                   read or archived
//! inbox/dead/<id>.json                      set aside after too many deliveries
//! ```
//!
//! A claim renames `pending/<id>.json` to a claim name nobody else can pick. `rename` is
//! atomic, so of any number of racing claimers (threads or processes) exactly one moves the
//! file and the others find it gone. The winner then stamps `claimedBy` and `claimedAt` into
//! its own claim file.
//!
//! Whoever finishes or takes over a claim file first renames it to a claim name of its own,
//! and only then rewrites and moves it; a rival that lost that rename finds the file gone and
//! backs off. No name is ever reused, so a slow rival can never act on a newer claim.
//!
//! A claim is stale when its holder's process is gone (same host: processes that share a
//! data directory share `/proc`) or its token is older than the lease. Stale claims are given
//! back (or set aside as dead after `max_deliveries`) before unclaimed messages are listed.

use std::path::{Path, PathBuf};

use async_trait::async_trait;
use ulid::Ulid;

use super::{FsStore, Inner, io};
use crate::{
    AgentName, Error, InboxMessage, InboxStore, MessageId, MessageStatus, NewMessage, Result,
    SessionId, timestamp,
};

/// A file in `claimed/`.
struct ClaimFile {
    path: PathBuf,
    id: MessageId,
    token: Ulid,
    pid: u32,
}

impl ClaimFile {
    fn parse(dir: &Path, name: &str) -> Option<Self> {
        let mut parts = name.strip_suffix(".json")?.split('.');
        let id = MessageId::parse(parts.next()?).ok()?;
        let token = Ulid::from_string(parts.next()?).ok()?;
        let pid = parts.next()?.parse().ok()?;
        parts.next().is_none().then(|| Self { path: dir.join(name), id, token, pid })
    }
}

/// Whether a process lives (a zombie does not count).
fn process_alive(pid: u32) -> bool {
    if pid == std::process::id() {
        return true;
    }
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        // The state is the first field after the parenthesised command name.
        Ok(stat) => stat
            .rsplit_once(')')
            .and_then(|(_, rest)| rest.split_whitespace().next())
            .is_some_and(|state| state != "Z" && state != "X"),
        Err(_) => false,
    }
}

impl Inner {
    fn inbox_dir(&self, agent: &AgentName, state: &str) -> PathBuf {
        self.agent_dir(agent).join("inbox").join(state)
    }

    fn pending_path(&self, agent: &AgentName, id: &MessageId) -> PathBuf {
        self.inbox_dir(agent, "pending").join(format!("{id}.json"))
    }

    fn filed_path(&self, agent: &AgentName, state: &str, id: &MessageId) -> PathBuf {
        self.inbox_dir(agent, state).join(format!("{id}.json"))
    }

    /// A claim name only this call will ever use.
    fn fresh_claim_path(&self, agent: &AgentName, id: &MessageId) -> Result<PathBuf> {
        let dir = self.inbox_dir(agent, "claimed");
        io::ensure_dir(&dir)?;
        Ok(dir.join(format!("{id}.{}.{}.json", crate::ids::new_ulid(), std::process::id())))
    }

    fn claim_files(&self, agent: &AgentName) -> Result<Vec<ClaimFile>> {
        let dir = self.inbox_dir(agent, "claimed");
        Ok(io::list_names(&dir, ".json")?
            .iter()
            .filter_map(|name| ClaimFile::parse(&dir, name))
            .collect())
    }

    /// Takes over a claim file by renaming it to a fresh claim name; `None` when a rival
    /// moved it first.
    fn take_over(
        &self,
        agent: &AgentName,
        claim: &ClaimFile,
    ) -> Result<Option<(PathBuf, InboxMessage)>> {
        let mine = self.fresh_claim_path(agent, &claim.id)?;
        if !io::rename(&claim.path, &mine)? {
            return Ok(None);
        }
        match io::read_json::<InboxMessage>(&mine) {
            Ok(Some(message)) => Ok(Some((mine, message))),
            Ok(None) => Ok(None),
            Err(err) => {
                tracing::warn!(error = %err, "setting aside an unreadable inbox message");
                io::ensure_dir(&self.inbox_dir(agent, "dead"))?;
                io::rename(
                    &mine,
                    &self.inbox_dir(agent, "dead").join(format!("{}.corrupt.json", claim.id)),
                )?;
                Ok(None)
            }
        }
    }

    /// Writes a message held in `claim_path` and moves it to where its status belongs.
    fn file_away(
        &self,
        agent: &AgentName,
        claim_path: &Path,
        message: &InboxMessage,
    ) -> Result<()> {
        let state = match message.status {
            MessageStatus::Pending => "pending",
            MessageStatus::Read | MessageStatus::Archived => "archive",
            MessageStatus::Dead => "dead",
        };
        io::write_json(claim_path, message)?;
        io::ensure_dir(&self.inbox_dir(agent, state))?;
        let target = self.filed_path(agent, state, &message.id);
        io::rename(claim_path, &target)?;
        io::sync_dir(&self.inbox_dir(agent, state))
    }

    /// Puts a message whose delivery failed back in line, or sets it aside when it has
    /// failed too often.
    fn give_back(
        &self,
        agent: &AgentName,
        claim_path: &Path,
        mut message: InboxMessage,
    ) -> Result<()> {
        if message.deliveries >= self.options.max_deliveries {
            tracing::warn!(%agent, message = %message.id, deliveries = message.deliveries, "setting aside an inbox message that keeps failing");
            message.status = MessageStatus::Dead;
        } else {
            message.status = MessageStatus::Pending;
            message.claimed_by = None;
            message.claimed_at = None;
        }
        self.file_away(agent, claim_path, &message)
    }

    /// Finds the claim file of `id` that `session` holds and takes it over.
    fn take_session_claim(
        &self,
        agent: &AgentName,
        id: &MessageId,
        session: &SessionId,
    ) -> Result<(PathBuf, InboxMessage)> {
        for claim in self.claim_files(agent)?.into_iter().filter(|c| c.id == *id) {
            let held_by_session = io::read_json::<InboxMessage>(&claim.path)
                .ok()
                .flatten()
                .is_some_and(|m| m.claimed_by == Some(*session));
            if held_by_session && let Some(taken) = self.take_over(agent, &claim)? {
                return Ok(taken);
            }
        }
        Err(Error::Conflict(format!("inbox message {id} is not claimed by session {session}")))
    }

    fn recover_stale_claims(&self, agent: &AgentName) -> Result<()> {
        let now_ms =
            u64::try_from(timestamp::now().unix_timestamp_nanos() / 1_000_000).unwrap_or(0);
        let lease_ms = u64::try_from(self.options.claim_lease.as_millis()).unwrap_or(u64::MAX);
        for claim in self.claim_files(agent)? {
            let expired = now_ms.saturating_sub(claim.token.timestamp_ms()) > lease_ms;
            if !expired && process_alive(claim.pid) {
                continue;
            }
            let Some((path, message)) = self.take_over(agent, &claim)? else { continue };
            tracing::info!(%agent, message = %claim.id, holder_pid = claim.pid, expired, "recovering a stale inbox claim");
            match message.status {
                MessageStatus::Pending => self.give_back(agent, &path, message)?,
                // A holder that died while filing the message away: finish the filing.
                MessageStatus::Read | MessageStatus::Archived | MessageStatus::Dead => {
                    self.file_away(agent, &path, &message)?
                }
            }
        }
        Ok(())
    }

    fn read_dir_messages(&self, agent: &AgentName, state: &str) -> Result<Vec<InboxMessage>> {
        let dir = self.inbox_dir(agent, state);
        Ok(io::list_names(&dir, ".json")?
            .iter()
            .filter_map(|name| io::read_json_lenient(&dir.join(name)))
            .collect())
    }

    fn find_message(&self, agent: &AgentName, id: &MessageId) -> Result<Option<InboxMessage>> {
        if let Some(message) = io::read_json(&self.pending_path(agent, id))? {
            return Ok(Some(message));
        }
        for claim in self.claim_files(agent)?.into_iter().filter(|c| c.id == *id) {
            if let Some(message) = io::read_json(&claim.path)? {
                return Ok(Some(message));
            }
        }
        for state in ["archive", "dead"] {
            if let Some(message) = io::read_json(&self.filed_path(agent, state, id))? {
                return Ok(Some(message));
            }
        }
        Ok(None)
    }
}

#[async_trait]
impl InboxStore for FsStore {
    async fn send(&self, new: NewMessage) -> Result<InboxMessage> {
        if new.message.trim().is_empty() {
            return Err(Error::Invalid("message must not be empty".into()));
        }
        self.blocking(move |s| {
            s.require_agent(&new.to_agent)?;
            let message = InboxMessage {
                id: MessageId::new(),
                from_agent: new.from_agent,
                to_agent: new.to_agent,
                message: new.message,
                message_type: new.message_type,
                request_id: new.request_id,
                status: MessageStatus::Pending,
                claimed_by: None,
                claimed_at: None,
                deliveries: 0,
                created_at: timestamp::now(),
                read_at: None,
            };
            io::ensure_dir(&s.inbox_dir(&message.to_agent, "pending"))?;
            io::write_json(&s.pending_path(&message.to_agent, &message.id), &message)?;
            Ok(message)
        })
        .await
    }

    async fn get_pending(&self, agent: &AgentName) -> Result<Vec<InboxMessage>> {
        let agent = agent.clone();
        self.blocking(move |s| {
            s.require_agent(&agent)?;
            let mut messages = s.read_dir_messages(&agent, "pending")?;
            for claim in s.claim_files(&agent)? {
                if let Some(message) = io::read_json_lenient::<InboxMessage>(&claim.path)
                    && message.status == MessageStatus::Pending
                {
                    messages.push(message);
                }
            }
            messages.sort_by_key(|m| m.id);
            messages.dedup_by_key(|m| m.id);
            Ok(messages)
        })
        .await
    }

    async fn get(&self, agent: &AgentName, id: &MessageId) -> Result<InboxMessage> {
        let (agent, id) = (agent.clone(), *id);
        self.blocking(move |s| {
            s.require_agent(&agent)?;
            // A message moving between directories can be missed by one pass; it cannot be
            // missed by several passes unless it moves every time.
            for _ in 0..3 {
                if let Some(message) = s.find_message(&agent, &id)? {
                    return Ok(message);
                }
            }
            Err(Error::not_found("inbox message", id))
        })
        .await
    }

    async fn get_unclaimed(&self, agent: &AgentName) -> Result<Vec<InboxMessage>> {
        let agent = agent.clone();
        self.blocking(move |s| {
            s.require_agent(&agent)?;
            s.recover_stale_claims(&agent)?;
            s.read_dir_messages(&agent, "pending")
        })
        .await
    }

    async fn claim(&self, agent: &AgentName, id: &MessageId, session: &SessionId) -> Result<bool> {
        let (agent, id, session) = (agent.clone(), *id, *session);
        self.blocking(move |s| {
            let claim_path = s.fresh_claim_path(&agent, &id)?;
            if !io::rename(&s.pending_path(&agent, &id), &claim_path)? {
                return Ok(false);
            }
            io::sync_dir(&s.inbox_dir(&agent, "pending"))?;
            let Some(mut message) = io::read_json::<InboxMessage>(&claim_path)? else {
                return Ok(false);
            };
            message.claimed_by = Some(session);
            message.claimed_at = Some(timestamp::now());
            message.deliveries += 1;
            io::write_json(&claim_path, &message)?;
            Ok(true)
        })
        .await
    }

    async fn release(&self, agent: &AgentName, id: &MessageId, session: &SessionId) -> Result<()> {
        let (agent, id, session) = (agent.clone(), *id, *session);
        self.blocking(move |s| {
            let (path, message) = s.take_session_claim(&agent, &id, &session)?;
            s.give_back(&agent, &path, message)
        })
        .await
    }

    async fn mark_read(
        &self,
        agent: &AgentName,
        id: &MessageId,
        session: &SessionId,
    ) -> Result<()> {
        let (agent, id, session) = (agent.clone(), *id, *session);
        self.blocking(move |s| {
            let (path, mut message) = s.take_session_claim(&agent, &id, &session)?;
            message.status = MessageStatus::Read;
            message.read_at = Some(timestamp::now());
            s.file_away(&agent, &path, &message)
        })
        .await
    }

    async fn archive(&self, agent: &AgentName, id: &MessageId) -> Result<()> {
        let (agent, id) = (agent.clone(), *id);
        self.blocking(move |s| {
            s.require_agent(&agent)?;
            let mine = s.fresh_claim_path(&agent, &id)?;
            let taken = if io::rename(&s.pending_path(&agent, &id), &mine)? {
                io::read_json::<InboxMessage>(&mine)?.map(|message| (mine, message))
            } else {
                let mut taken = None;
                for claim in s.claim_files(&agent)?.into_iter().filter(|c| c.id == id) {
                    if let Some(found) = s.take_over(&agent, &claim)? {
                        taken = Some(found);
                        break;
                    }
                }
                taken
            };
            match taken {
                Some((path, mut message)) => {
                    message.status = MessageStatus::Archived;
                    message.read_at.get_or_insert_with(timestamp::now);
                    s.file_away(&agent, &path, &message)
                }
                None if s.find_message(&agent, &id)?.is_some() => Ok(()),
                None => Err(Error::not_found("inbox message", id)),
            }
        })
        .await
    }

    async fn list_dead(&self, agent: &AgentName) -> Result<Vec<InboxMessage>> {
        let agent = agent.clone();
        self.blocking(move |s| {
            s.require_agent(&agent)?;
            s.read_dir_messages(&agent, "dead")
        })
        .await
    }
}
