//! The inbox: request/response messages between agents, claimed by one session each.

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use time::OffsetDateTime;

use crate::{AgentName, MessageId, Result, SessionId};

/// Whether a message asks or answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MessageType {
    #[default]
    Request,
    Response,
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
    pub from_agent: AgentName,
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
    /// How many times a session has claimed this message.
    #[serde(default)]
    pub deliveries: u32,
    #[serde(with = "crate::timestamp::rfc3339")]
    pub created_at: OffsetDateTime,
    #[serde(with = "crate::timestamp::rfc3339::option")]
    pub read_at: Option<OffsetDateTime>,
}

/// What a sender gives.
#[derive(Debug, Clone)]
pub struct NewMessage {
    pub from_agent: AgentName,
    pub to_agent: AgentName,
    pub message: String,
    pub message_type: MessageType,
    pub request_id: Option<MessageId>,
}

/// Storage of inbox messages with an atomic claim.
///
/// A claim is exclusive across tasks, threads and processes sharing one store: of any number
/// of concurrent `claim` calls for one message, exactly one returns `true`. A claim whose
/// holder died becomes claimable again; a message claimed and given back too often is set
/// aside with status `dead`.
#[async_trait]
pub trait InboxStore: Send + Sync {
    /// Delivers a message to `to_agent`'s inbox (`NotFound` when that agent does not exist).
    async fn send(&self, new: NewMessage) -> Result<InboxMessage>;
    /// Pending messages, claimed or not, oldest first.
    async fn get_pending(&self, agent: &AgentName) -> Result<Vec<InboxMessage>>;
    /// One message wherever it is in its life; `NotFound` when unknown.
    async fn get(&self, agent: &AgentName, id: &MessageId) -> Result<InboxMessage>;
    /// Pending messages that no live session holds, oldest first. Claims of dead holders are
    /// given back first.
    async fn get_unclaimed(&self, agent: &AgentName) -> Result<Vec<InboxMessage>>;
    /// Claims a message for a session; `false` when it is claimed already or gone.
    async fn claim(&self, agent: &AgentName, id: &MessageId, session: &SessionId) -> Result<bool>;
    /// Gives a session's claim back, so that another session can take the message (or sets it
    /// aside as dead when it has been delivered too often). `Conflict` when the session does
    /// not hold the message.
    async fn release(&self, agent: &AgentName, id: &MessageId, session: &SessionId) -> Result<()>;
    /// Marks a message the session holds as read and files it away. `Conflict` when the
    /// session does not hold it.
    async fn mark_read(&self, agent: &AgentName, id: &MessageId, session: &SessionId)
    -> Result<()>;
    /// Files a message away as archived, whoever holds it; `NotFound` when it is not pending.
    async fn archive(&self, agent: &AgentName, id: &MessageId) -> Result<()>;
    /// Messages set aside as dead, oldest first.
    async fn list_dead(&self, agent: &AgentName) -> Result<Vec<InboxMessage>>;
}
