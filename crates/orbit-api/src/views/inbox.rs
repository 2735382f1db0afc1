//! The view of an inbox message.

use orbit_store::timestamp::rfc3339;
use orbit_store::{AgentName, InboxMessage, MessageId, SessionId};
use schemars::JsonSchema;
use serde::Serialize;
use time::OffsetDateTime;

use crate::wire;

/// An inbox message.
#[derive(Debug, Serialize, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct MessageView {
    #[schemars(with = "wire::Ulid")]
    pub id: MessageId,
    /// The sender's name: an agent's, or a person's when `fromKind` is `person`.
    #[schemars(with = "wire::SenderName")]
    pub from_agent: String,
    pub from_kind: wire::SenderKind,
    #[schemars(with = "wire::AgentName")]
    pub to_agent: AgentName,
    #[schemars(length(max = orbit_store::limits::INBOX_MESSAGE))]
    pub message: String,
    pub message_type: wire::MessageType,
    /// For a response, the id of the request it answers.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "wire::Ulid")]
    pub request_id: Option<MessageId>,
    pub status: wire::MessageStatus,
    /// The session holding the message while a turn works on it.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schemars(with = "wire::Ulid")]
    pub claimed_by: Option<SessionId>,
    #[serde(skip_serializing_if = "Option::is_none", with = "rfc3339::option")]
    #[schemars(with = "wire::Timestamp")]
    pub claimed_at: Option<OffsetDateTime>,
    /// How many turns the message reached the model in without being handled.
    pub deliveries: u32,
    #[serde(with = "rfc3339")]
    #[schemars(with = "wire::Timestamp")]
    pub created_at: OffsetDateTime,
    #[serde(with = "rfc3339::option")]
    #[schemars(with = "Option<wire::Timestamp>")]
    pub read_at: Option<OffsetDateTime>,
}

impl From<InboxMessage> for MessageView {
    fn from(message: InboxMessage) -> Self {
        Self {
            id: message.id,
            from_agent: message.from_agent,
            from_kind: message.from_kind.into(),
            to_agent: message.to_agent,
            message: message.message,
            message_type: message.message_type.into(),
            request_id: message.request_id,
            status: message.status.into(),
            claimed_by: message.claimed_by,
            claimed_at: message.claimed_at,
            deliveries: message.deliveries,
            created_at: message.created_at,
            read_at: message.read_at,
        }
    }
}
