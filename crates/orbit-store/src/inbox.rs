//! The inbox: request/response messages between agents, claimed by one session each.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::render::{Body, Listing};
use crate::{AgentName, InstanceId, Lease, LeaseToken, MessageId, Result, SessionId};

/// Whether a message asks or answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    #[default]
    Request,
    Response,
}

/// Who wrote a message: an agent (its tools), or a person or another system writing over the
/// API, whose name is free text rather than an agent's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SenderKind {
    /// Records written before senders had a kind were all from agents.
    #[default]
    Agent,
    Person,
}

/// A message's sender as a writer gives it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Sender {
    Agent(AgentName),
    /// A person's or a system's name: checked by whoever takes it (`limits::check_sender`).
    Person(String),
}

impl Sender {
    pub fn name(&self) -> &str {
        match self {
            Sender::Agent(name) => name.as_str(),
            Sender::Person(name) => name,
        }
    }

    pub fn kind(&self) -> SenderKind {
        match self {
            Sender::Agent(_) => SenderKind::Agent,
            Sender::Person(_) => SenderKind::Person,
        }
    }
}

impl From<AgentName> for Sender {
    fn from(name: AgentName) -> Self {
        Sender::Agent(name)
    }
}

/// Where a message is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageStatus {
    /// Waiting for a session, or held by one (`claimedBy` says which).
    Pending,
    /// Handled by a session's successful turn.
    Read,
    /// Put away by a person.
    Archived,
    /// Set aside after failing too many deliveries; kept for a person to look at.
    Dead,
}

/// An inbox message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct InboxMessage {
    pub id: MessageId,
    /// The sender's name: an agent's name, or a person's when `from_kind` says so.
    pub from_agent: String,
    #[serde(default)]
    pub from_kind: SenderKind,
    pub to_agent: AgentName,
    pub message: String,
    pub message_type: MessageType,
    /// For a response, the id of the request it answers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<MessageId>,
    pub status: MessageStatus,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub claimed_by: Option<SessionId>,
    #[serde(
        default,
        with = "crate::timestamp::rfc3339::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub claimed_at: Option<OffsetDateTime>,
    /// How many turns this message reached the model in without being handled (a turn that
    /// never started, refused for want of a process say, does not count).
    #[serde(default)]
    pub deliveries: u32,
    /// The claim's holder, fencing token and expiry while the message is claimed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    #[serde(with = "crate::timestamp::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "crate::timestamp::rfc3339::option")]
    pub read_at: Option<OffsetDateTime>,
}

impl InboxMessage {
    /// A new pending message, sent now.
    pub fn new(new: NewMessage) -> Self {
        Self {
            id: MessageId::new(),
            from_agent: new.from_agent.name().to_owned(),
            from_kind: new.from_agent.kind(),
            to_agent: new.to_agent,
            message: new.message,
            message_type: new.message_type,
            request_id: new.request_id,
            status: MessageStatus::Pending,
            claimed_by: None,
            claimed_at: None,
            deliveries: 0,
            lease: None,
            created_at: crate::timestamp::now(),
            read_at: None,
        }
    }
}

/// What a sender gives.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub from_agent: Sender,
    pub to_agent: AgentName,
    pub message: String,
    pub message_type: MessageType,
    pub request_id: Option<MessageId>,
}

/// Who claims messages, and for how long.
#[derive(Debug, Clone, Copy)]
pub struct Claimer {
    pub session: SessionId,
    pub instance: InstanceId,
    /// The claims lapse at this moment unless renewed.
    pub until: OffsetDateTime,
}

/// Storage of inbox messages with an atomic claim.
///
/// Every change of a message's state is one atomic step from the state its caller holds, so
/// claim, renew, release, mark-read, archive and dead-lettering cannot undo each other, across
/// tasks, threads and processes sharing one store. A claim is a [`Lease`]: of any number of
/// concurrent claimers exactly one wins; the winner settles the message with the lease's
/// token, which is refused (`Conflict`) once the lease lapsed and the message was taken back
/// or archived. Expired claims are given back before unclaimed messages are listed; a
/// message that reached the model too often without being handled is set aside as `dead`.
#[async_trait]
pub trait InboxStore: Send + Sync {
    /// Delivers a message to `to_agent`'s inbox (`NotFound` when that agent does not exist).
    async fn send(&self, new: NewMessage) -> Result<InboxMessage>;
    /// Pending messages, claimed or not, oldest first.
    async fn get_pending(&self, agent: &AgentName) -> Result<Vec<InboxMessage>>;
    /// A page of [`get_pending`](Self::get_pending): at most `limit` pending messages newer
    /// than the message `after` (from the oldest when `None`), oldest first.
    async fn pending_page(
        &self,
        agent: &AgentName,
        after: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<InboxMessage>> {
        let pending = self.get_pending(agent).await?;
        Ok(pending.into_iter().filter(|m| after.is_none_or(|a| m.id > a)).take(limit).collect())
    }
    /// [`get_pending`](Self::get_pending) as `listing` writes it; a store may keep the
    /// renderings of unchanged messages and the body of an unchanged listing (see
    /// [`render`](crate::render)).
    async fn pending_rendered(
        &self,
        agent: &AgentName,
        listing: Listing<InboxMessage>,
    ) -> Result<Body> {
        Ok(listing.write(&self.get_pending(agent).await?))
    }
    /// One message wherever it is in its life; `NotFound` when unknown.
    async fn get(&self, agent: &AgentName, id: &MessageId) -> Result<InboxMessage>;
    /// Pending messages that nobody holds, oldest first. Expired claims are given back first.
    async fn get_unclaimed(&self, agent: &AgentName) -> Result<Vec<InboxMessage>>;
    /// Claims one message: the claimed message with its lease, or `None` when it is held
    /// by someone else already or no longer pending.
    async fn claim(
        &self,
        agent: &AgentName,
        id: &MessageId,
        claimer: &Claimer,
    ) -> Result<Option<InboxMessage>>;
    /// Gives expired claims back, then claims every unclaimed message, oldest first, up to
    /// `limit`, in one step. Returns the messages claimed, each with its lease.
    async fn claim_unclaimed(
        &self,
        agent: &AgentName,
        claimer: &Claimer,
        limit: usize,
    ) -> Result<Vec<InboxMessage>>;
    /// Extends a claim the caller holds. `Conflict` when `token` no longer holds it.
    async fn renew(
        &self,
        agent: &AgentName,
        id: &MessageId,
        token: &LeaseToken,
        until: OffsetDateTime,
    ) -> Result<()>;
    /// Gives a claim back so that another session can take the message. `delivered` says
    /// whether the message reached the model; such a failed delivery counts towards setting
    /// the message aside as dead. Returns the message as it now is. `Conflict` when `token`
    /// no longer holds it.
    async fn release(
        &self,
        agent: &AgentName,
        id: &MessageId,
        token: &LeaseToken,
        delivered: bool,
    ) -> Result<InboxMessage>;
    /// Marks a message the caller holds as read and files it away. `Conflict` when `token`
    /// no longer holds it.
    async fn mark_read(
        &self,
        agent: &AgentName,
        id: &MessageId,
        token: &LeaseToken,
    ) -> Result<InboxMessage>;
    /// Files a pending message away as archived, whoever holds it (the holder's settling is
    /// refused from then on). Archiving an archived message again succeeds; `NotFound` when
    /// the message is unknown, `Conflict` when it is read or dead.
    async fn archive(&self, agent: &AgentName, id: &MessageId) -> Result<InboxMessage>;
    /// Messages set aside as dead, oldest first.
    async fn list_dead(&self, agent: &AgentName) -> Result<Vec<InboxMessage>>;
    /// A page of the messages filed away, read or archived, newest first: at most `limit`
    /// older than the message `before` (from the newest when `None`). They only grow, so the
    /// newest are the ones a person looks for; `NotFound` for an unknown agent.
    async fn filed_page(
        &self,
        agent: &AgentName,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<InboxMessage>>;
}
