//! The inbox in memory: each message's state changes as one step under the store's mutex,
//! with the filesystem store's rules (leases with fencing tokens, lapsed claims given back
//! counting a delivery, dead letters after `max_deliveries`).

use async_trait::async_trait;
use time::OffsetDateTime;

use super::MemStore;
use crate::{
    AgentName, Claimer, Error, InboxMessage, InboxStore, Lease, LeaseToken, MessageId,
    MessageStatus, NewMessage, Result, timestamp,
};

impl MemStore {
    /// Puts a message whose claim ended unhandled back in line, or sets it aside when it has
    /// reached the model too often.
    fn give_back(&self, message: &mut InboxMessage, delivered: bool) {
        if delivered {
            message.deliveries = message.deliveries.saturating_add(1);
        }
        message.lease = None;
        message.claimed_by = None;
        message.claimed_at = None;
        if message.deliveries >= self.inner.options.max_deliveries {
            tracing::warn!(agent = %message.to_agent, message = %message.id, deliveries = message.deliveries, "setting aside an inbox message that keeps failing");
            message.status = MessageStatus::Dead;
        }
    }

    /// Gives back every pending claim whose lease lapsed before `now`: its holder may have
    /// shown the message to the model, so the delivery counts.
    fn recover_expired<'a>(
        &self,
        inbox: impl Iterator<Item = &'a mut InboxMessage>,
        now: OffsetDateTime,
    ) {
        for message in inbox {
            if message.status == MessageStatus::Pending
                && message.lease.is_some_and(|lease| lease.expired_at(now))
            {
                self.give_back(message, true);
            }
        }
    }
}

fn claim_one(message: &mut InboxMessage, claimer: &Claimer) {
    message.lease = Some(Lease::new(claimer.instance, claimer.until));
    message.claimed_by = Some(claimer.session);
    message.claimed_at = Some(timestamp::now());
}

/// The pending message `token` holds; `Conflict` otherwise.
fn held<'a>(
    inbox: &'a mut std::collections::BTreeMap<MessageId, InboxMessage>,
    id: &MessageId,
    token: &LeaseToken,
) -> Result<&'a mut InboxMessage> {
    match inbox.get_mut(id) {
        Some(message)
            if message.status == MessageStatus::Pending
                && message.lease.is_some_and(|lease| lease.token == *token) =>
        {
            Ok(message)
        }
        _ => Err(Error::Conflict(format!(
            "inbox message {id} is no longer held by this claim (its lease lapsed, or it was archived)"
        ))),
    }
}

#[async_trait]
impl InboxStore for MemStore {
    async fn send(&self, new: NewMessage) -> Result<InboxMessage> {
        if new.message.trim().is_empty() {
            return Err(Error::Invalid("message must not be empty".into()));
        }
        let mut state = self.state();
        let inbox = &mut state.agent_mut(&new.to_agent)?.inbox;
        let message = InboxMessage::new(new);
        inbox.insert(message.id, message.clone());
        Ok(message)
    }

    async fn get_pending(&self, agent: &AgentName) -> Result<Vec<InboxMessage>> {
        let state = self.state();
        let inbox = &state.agent(agent)?.inbox;
        // Ids are ULIDs: id order is age order.
        Ok(inbox.values().filter(|m| m.status == MessageStatus::Pending).cloned().collect())
    }

    async fn get(&self, agent: &AgentName, id: &MessageId) -> Result<InboxMessage> {
        let state = self.state();
        state
            .agent(agent)?
            .inbox
            .get(id)
            .cloned()
            .ok_or_else(|| Error::not_found("inbox message", id))
    }

    async fn get_unclaimed(&self, agent: &AgentName) -> Result<Vec<InboxMessage>> {
        let mut state = self.state();
        let inbox = &mut state.agent_mut(agent)?.inbox;
        self.recover_expired(inbox.values_mut(), timestamp::now());
        Ok(inbox
            .values()
            .filter(|m| m.status == MessageStatus::Pending && m.lease.is_none())
            .cloned()
            .collect())
    }

    async fn claim(
        &self,
        agent: &AgentName,
        id: &MessageId,
        claimer: &Claimer,
    ) -> Result<Option<InboxMessage>> {
        let mut state = self.state();
        let inbox = &mut state.agent_mut(agent)?.inbox;
        let Some(message) = inbox.get_mut(id).filter(|m| m.status == MessageStatus::Pending) else {
            return Ok(None);
        };
        match message.lease {
            None => {}
            Some(lease) if lease.expired_at(timestamp::now()) => {
                // Taken over from a holder whose lease lapsed: that delivery counts.
                self.give_back(message, true);
                if message.status != MessageStatus::Pending {
                    return Ok(None);
                }
            }
            Some(_) => return Ok(None),
        }
        claim_one(message, claimer);
        Ok(Some(message.clone()))
    }

    async fn claim_unclaimed(
        &self,
        agent: &AgentName,
        claimer: &Claimer,
        limit: usize,
    ) -> Result<Vec<InboxMessage>> {
        let mut state = self.state();
        let inbox = &mut state.agent_mut(agent)?.inbox;
        self.recover_expired(inbox.values_mut(), timestamp::now());
        Ok(inbox
            .values_mut()
            .filter(|m| m.status == MessageStatus::Pending && m.lease.is_none())
            .take(limit)
            .map(|message| {
                claim_one(message, claimer);
                message.clone()
            })
            .collect())
    }

    async fn renew(
        &self,
        agent: &AgentName,
        id: &MessageId,
        token: &LeaseToken,
        until: OffsetDateTime,
    ) -> Result<()> {
        let mut state = self.state();
        let message = held(&mut state.agent_mut(agent)?.inbox, id, token)?;
        if let Some(lease) = message.lease.as_mut() {
            lease.until = until;
        }
        Ok(())
    }

    async fn release(
        &self,
        agent: &AgentName,
        id: &MessageId,
        token: &LeaseToken,
        delivered: bool,
    ) -> Result<InboxMessage> {
        let mut state = self.state();
        let message = held(&mut state.agent_mut(agent)?.inbox, id, token)?;
        self.give_back(message, delivered);
        Ok(message.clone())
    }

    async fn mark_read(
        &self,
        agent: &AgentName,
        id: &MessageId,
        token: &LeaseToken,
    ) -> Result<InboxMessage> {
        let mut state = self.state();
        let message = held(&mut state.agent_mut(agent)?.inbox, id, token)?;
        message.status = MessageStatus::Read;
        message.deliveries = message.deliveries.saturating_add(1);
        message.read_at = Some(timestamp::now());
        message.lease = None;
        Ok(message.clone())
    }

    async fn archive(&self, agent: &AgentName, id: &MessageId) -> Result<InboxMessage> {
        let mut state = self.state();
        let inbox = &mut state.agent_mut(agent)?.inbox;
        let message = inbox.get_mut(id).ok_or_else(|| Error::not_found("inbox message", id))?;
        match message.status {
            MessageStatus::Pending => {
                message.status = MessageStatus::Archived;
                message.lease = None;
                message.read_at.get_or_insert_with(timestamp::now);
                Ok(message.clone())
            }
            MessageStatus::Archived => Ok(message.clone()),
            MessageStatus::Read | MessageStatus::Dead => Err(Error::Conflict(format!(
                "inbox message {id} is {}, not pending",
                if message.status == MessageStatus::Read { "read" } else { "dead" }
            ))),
        }
    }

    async fn list_dead(&self, agent: &AgentName) -> Result<Vec<InboxMessage>> {
        let state = self.state();
        let inbox = &state.agent(agent)?.inbox;
        Ok(inbox.values().filter(|m| m.status == MessageStatus::Dead).cloned().collect())
    }

    async fn filed_page(
        &self,
        agent: &AgentName,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<InboxMessage>> {
        let state = self.state();
        let inbox = &state.agent(agent)?.inbox;
        Ok(inbox
            .values()
            .rev()
            .filter(|m| matches!(m.status, MessageStatus::Read | MessageStatus::Archived))
            .filter(|m| before.is_none_or(|before| m.id < before))
            .take(limit)
            .cloned()
            .collect())
    }
}
