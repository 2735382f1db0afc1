//! How a claim chooses its messages: from the in-memory index of `open/` under the inbox's
//! lock held exclusively, reading only the files it takes, and letting a file that disagrees
//! with the index decide (see `take_unclaimed`). The inbox's other steps are in `inbox`.

use time::OffsetDateTime;

use super::inbox::{DEAD, OPEN, pending_source};
use super::index::{self, Change};
use super::{Inner, io};
use crate::{AgentName, Claimer, Error, InboxMessage, MessageId, MessageStatus, Result};

/// The most times one claim chooses from the index (see `take_unclaimed`).
const MAX_ROUNDS: usize = 4;

impl Inner {
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
    pub(super) fn take_unclaimed(
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
