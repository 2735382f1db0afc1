//! The inbox: a row per message with its claim as columns, every change of state one
//! statement from the state its caller holds.
//!
//! - A batch is claimed by one `UPDATE` of the rows a `FOR UPDATE SKIP LOCKED` selection
//!   picked (oldest first): concurrent claimers skip each other's rows instead of waiting, and
//!   a row is claimed by exactly one of them.
//! - A single claim, renew, release and mark-read are `UPDATE`s conditioned on the state the
//!   caller holds (unclaimed, or held under its lease token); under PostgreSQL's row locks the
//!   condition is re-checked after a concurrent change, so no two of them both succeed.
//! - Before unclaimed messages are listed or claimed, claims whose lease lapsed are given back
//!   (counting a delivery), and a message that reached the model `max_deliveries` times
//!   becomes `dead`.

use async_trait::async_trait;
use orbit_store::{
    AgentName, Claimer, Error, InboxMessage, InboxStore, Lease, LeaseToken, MessageId,
    MessageStatus, NewMessage, Result, timestamp,
};
use serde::de::DeserializeOwned;
use time::OffsetDateTime;
use tokio_postgres::Row;

use crate::PgStore;
use crate::db::{self, not_found, require_agent, transaction};
use crate::error::{FOREIGN_KEY_VIOLATION, Failure, violates};

type Tx<'a> = deadpool_postgres::Transaction<'a>;

const COLUMNS: &str = "id, to_agent, status, from_agent, from_kind, message, message_type, \
    request_id, claimed_by, claimed_at, deliveries, lease_instance, lease_token, lease_until, \
    created_at, read_at";

/// The columns as the statements return them (`agent` is named `to_agent` for the reader).
fn returning() -> String {
    COLUMNS.replace("to_agent", "agent AS to_agent")
}

/// An enum's wire name (`pending`, `request`, ...), as the JSON records spell it.
fn name_of<T: serde::Serialize>(value: &T) -> String {
    match serde_json::to_value(value) {
        Ok(serde_json::Value::String(text)) => text,
        _ => String::new(),
    }
}

fn parse_name<T: DeserializeOwned>(text: String, what: &str) -> Result<T, Failure> {
    serde_json::from_value(serde_json::Value::String(text.clone())).map_err(|_| {
        Failure::Store(Error::Backend(format!("an inbox row has an unknown {what} {text:?}")))
    })
}

fn parse_id<T: std::str::FromStr<Err = Error>>(text: String) -> Result<T, Failure> {
    text.parse().map_err(Failure::Store)
}

fn message_of(row: &Row) -> Result<InboxMessage, Failure> {
    let optional_id =
        |column: &str| -> Result<Option<String>, Failure> { Ok(row.try_get(column)?) };
    let lease = match (
        optional_id("lease_instance")?,
        optional_id("lease_token")?,
        row.try_get::<_, Option<OffsetDateTime>>("lease_until")?,
    ) {
        (Some(instance), Some(token), Some(until)) => {
            Some(Lease { instance: parse_id(instance)?, token: parse_id(token)?, until })
        }
        _ => None,
    };
    Ok(InboxMessage {
        id: parse_id(row.try_get("id")?)?,
        from_agent: row.try_get("from_agent")?,
        from_kind: parse_name(row.try_get("from_kind")?, "sender kind")?,
        to_agent: parse_id(row.try_get("to_agent")?)?,
        message: row.try_get("message")?,
        message_type: parse_name(row.try_get("message_type")?, "message type")?,
        request_id: optional_id("request_id")?.map(parse_id).transpose()?,
        status: parse_name(row.try_get("status")?, "status")?,
        claimed_by: optional_id("claimed_by")?.map(parse_id).transpose()?,
        claimed_at: row.try_get("claimed_at")?,
        deliveries: u32::try_from(row.try_get::<_, i32>("deliveries")?).unwrap_or(0),
        lease,
        created_at: row.try_get("created_at")?,
        read_at: row.try_get("read_at")?,
    })
}

fn messages_of(rows: &[Row]) -> Result<Vec<InboxMessage>, Failure> {
    rows.iter().map(message_of).collect()
}

fn not_held(id: &MessageId) -> Failure {
    Failure::Store(Error::Conflict(format!(
        "inbox message {id} is no longer held by this claim (its lease lapsed, or it was archived)"
    )))
}

impl PgStore {
    fn max_deliveries(&self) -> i32 {
        i32::try_from(self.inner.options.records.max_deliveries).unwrap_or(i32::MAX)
    }

    /// Gives back the agent's claims (or one message's) whose lease lapsed before `now`: their
    /// holders may have shown the messages to the model, so the delivery counts.
    async fn recover_expired(
        &self,
        tx: &Tx<'_>,
        agent: &AgentName,
        only: Option<&MessageId>,
        now: OffsetDateTime,
    ) -> Result<(), Failure> {
        let only = only.map(ToString::to_string);
        let dead = db::rows(
            tx,
            "UPDATE inbox SET deliveries = deliveries + 1, claimed_by = NULL, claimed_at = NULL, \
                lease_instance = NULL, lease_token = NULL, lease_until = NULL, \
                status = CASE WHEN deliveries + 1 >= $3 THEN 'dead' ELSE 'pending' END \
             WHERE agent = $1 AND status = 'pending' AND lease_until <= $2 \
                AND ($4::text IS NULL OR id = $4) \
             RETURNING id, status",
            &[&agent.as_str(), &now, &self.max_deliveries(), &only],
        )
        .await?;
        for row in dead.iter().filter(|row| row.get::<_, &str>("status") == "dead") {
            let id: &str = row.get("id");
            tracing::warn!(%agent, message = id, "setting aside an inbox message that keeps failing");
        }
        Ok(())
    }

    /// A message as it is, `NotFound` when unknown.
    async fn select(
        tx: &Tx<'_>,
        agent: &AgentName,
        id: &MessageId,
    ) -> Result<InboxMessage, Failure> {
        let sql = format!("SELECT {} FROM inbox WHERE agent = $1 AND id = $2", returning());
        match db::row(tx, &sql, &[&agent.as_str(), &id.to_string()]).await? {
            Some(row) => message_of(&row),
            None => {
                require_agent(tx, agent).await?;
                Err(not_found("inbox message", id))
            }
        }
    }

    /// Runs a statement that changes a message the caller holds under `token` (`$1` agent,
    /// `$2` id, `$3` token, then `extra`); `Conflict` when the token no longer holds it.
    async fn settle(
        tx: &Tx<'_>,
        agent: &AgentName,
        id: &MessageId,
        token: &LeaseToken,
        set: &str,
        extra: &[&(dyn tokio_postgres::types::ToSql + Sync)],
    ) -> Result<InboxMessage, Failure> {
        let sql = format!(
            "UPDATE inbox SET {set} WHERE agent = $1 AND id = $2 AND status = 'pending' \
             AND lease_token = $3 RETURNING {}",
            returning()
        );
        let (agent_text, id_text, token_text) = (agent.as_str(), id.to_string(), token.to_string());
        let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> =
            vec![&agent_text, &id_text, &token_text];
        params.extend_from_slice(extra);
        match db::row(tx, &sql, &params).await? {
            Some(row) => message_of(&row),
            None => {
                require_agent(tx, agent).await?;
                Err(not_held(id))
            }
        }
    }
}

#[async_trait]
impl InboxStore for PgStore {
    async fn send(&self, new: NewMessage) -> Result<InboxMessage> {
        if new.message.trim().is_empty() {
            return Err(Error::Invalid("message must not be empty".into()));
        }
        let message = InboxMessage::new(new);
        transaction!(self, |tx| async {
            let sent = db::execute(
                &tx,
                "INSERT INTO inbox (agent, id, status, from_agent, from_kind, message, \
                    message_type, request_id, deliveries, created_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, 0, $9)",
                &[
                    &message.to_agent.as_str(),
                    &message.id.to_string(),
                    &name_of(&message.status),
                    &message.from_agent,
                    &name_of(&message.from_kind),
                    &message.message,
                    &name_of(&message.message_type),
                    &message.request_id.map(|id| id.to_string()),
                    &message.created_at,
                ],
            )
            .await;
            match sent {
                Err(err) if violates(&err, FOREIGN_KEY_VIOLATION) => {
                    Err(not_found("agent", &message.to_agent))
                }
                other => other.map(drop),
            }
        })?;
        Ok(message)
    }

    async fn get_pending(&self, agent: &AgentName) -> Result<Vec<InboxMessage>> {
        let sql = format!(
            "SELECT {} FROM inbox WHERE agent = $1 AND status = 'pending' ORDER BY id",
            returning()
        );
        transaction!(self, |tx| async {
            let rows = db::rows(&tx, &sql, &[&agent.as_str()]).await?;
            if rows.is_empty() {
                require_agent(&tx, agent).await?;
            }
            messages_of(&rows)
        })
    }

    async fn get(&self, agent: &AgentName, id: &MessageId) -> Result<InboxMessage> {
        transaction!(self, |tx| Self::select(&tx, agent, id))
    }

    async fn get_unclaimed(&self, agent: &AgentName) -> Result<Vec<InboxMessage>> {
        let sql = format!(
            "SELECT {} FROM inbox WHERE agent = $1 AND status = 'pending' \
             AND lease_token IS NULL ORDER BY id",
            returning()
        );
        transaction!(self, |tx| async {
            self.recover_expired(&tx, agent, None, timestamp::now()).await?;
            let rows = db::rows(&tx, &sql, &[&agent.as_str()]).await?;
            if rows.is_empty() {
                require_agent(&tx, agent).await?;
            }
            messages_of(&rows)
        })
    }

    async fn claim(
        &self,
        agent: &AgentName,
        id: &MessageId,
        claimer: &Claimer,
    ) -> Result<Option<InboxMessage>> {
        let sql = format!(
            "UPDATE inbox SET claimed_by = $3, claimed_at = $4, lease_instance = $5, \
                lease_token = $6, lease_until = $7 \
             WHERE agent = $1 AND id = $2 AND status = 'pending' AND lease_token IS NULL \
             RETURNING {}",
            returning()
        );
        transaction!(self, |tx| async {
            let now = timestamp::now();
            // A claim whose holder's lease lapsed is taken over: that delivery counts.
            self.recover_expired(&tx, agent, Some(id), now).await?;
            let lease = Lease::new(claimer.instance, claimer.until);
            let row = db::row(
                &tx,
                &sql,
                &[
                    &agent.as_str(),
                    &id.to_string(),
                    &claimer.session.to_string(),
                    &now,
                    &lease.instance.to_string(),
                    &lease.token.to_string(),
                    &lease.until,
                ],
            )
            .await?;
            match row {
                Some(row) => Ok(Some(message_of(&row)?)),
                None => {
                    require_agent(&tx, agent).await?;
                    Ok(None)
                }
            }
        })
    }

    async fn claim_unclaimed(
        &self,
        agent: &AgentName,
        claimer: &Claimer,
        limit: usize,
    ) -> Result<Vec<InboxMessage>> {
        // One statement claims the batch: the rows no other claimer holds locked, oldest
        // first. The claimed rows come back in no particular order, so they are sorted.
        let sql = format!(
            "WITH picked AS ( \
                SELECT id FROM inbox WHERE agent = $1 AND status = 'pending' \
                AND lease_token IS NULL ORDER BY id LIMIT $7 FOR UPDATE SKIP LOCKED) \
             UPDATE inbox SET claimed_by = $2, claimed_at = $3, lease_instance = $4, \
                lease_token = $5, lease_until = $6 \
             FROM picked WHERE inbox.agent = $1 AND inbox.id = picked.id \
             RETURNING {}",
            returning()
                .split(", ")
                .map(|column| format!("inbox.{column}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        transaction!(self, |tx| async {
            let now = timestamp::now();
            self.recover_expired(&tx, agent, None, now).await?;
            let lease = Lease::new(claimer.instance, claimer.until);
            let rows = db::rows(
                &tx,
                &sql,
                &[
                    &agent.as_str(),
                    &claimer.session.to_string(),
                    &now,
                    &lease.instance.to_string(),
                    &lease.token.to_string(),
                    &lease.until,
                    &limit,
                ],
            )
            .await?;
            if rows.is_empty() {
                require_agent(&tx, agent).await?;
            }
            let mut claimed = messages_of(&rows)?;
            claimed.sort_by_key(|message| message.id);
            Ok(claimed)
        })
    }

    async fn renew(
        &self,
        agent: &AgentName,
        id: &MessageId,
        token: &LeaseToken,
        until: OffsetDateTime,
    ) -> Result<()> {
        transaction!(self, |tx| Self::settle(&tx, agent, id, token, "lease_until = $4", &[&until]))
            .map(drop)
    }

    async fn release(
        &self,
        agent: &AgentName,
        id: &MessageId,
        token: &LeaseToken,
        delivered: bool,
    ) -> Result<InboxMessage> {
        let counted = i32::from(delivered);
        let max = self.max_deliveries();
        let released = transaction!(self, |tx| Self::settle(
            &tx,
            agent,
            id,
            token,
            "deliveries = deliveries + $4, claimed_by = NULL, claimed_at = NULL, \
                lease_instance = NULL, lease_token = NULL, lease_until = NULL, \
                status = CASE WHEN deliveries + $4 >= $5 THEN 'dead' ELSE 'pending' END",
            &[&counted, &max],
        ))?;
        if released.status == MessageStatus::Dead {
            tracing::warn!(%agent, message = %id, deliveries = released.deliveries, "setting aside an inbox message that keeps failing");
        }
        Ok(released)
    }

    async fn mark_read(
        &self,
        agent: &AgentName,
        id: &MessageId,
        token: &LeaseToken,
    ) -> Result<InboxMessage> {
        let now = timestamp::now();
        transaction!(self, |tx| Self::settle(
            &tx,
            agent,
            id,
            token,
            "status = 'read', deliveries = deliveries + 1, read_at = $4, \
                lease_instance = NULL, lease_token = NULL, lease_until = NULL",
            &[&now],
        ))
    }

    async fn archive(&self, agent: &AgentName, id: &MessageId) -> Result<InboxMessage> {
        let sql = format!(
            "UPDATE inbox SET status = 'archived', read_at = COALESCE(read_at, $3), \
                lease_instance = NULL, lease_token = NULL, lease_until = NULL \
             WHERE agent = $1 AND id = $2 AND status IN ('pending', 'archived') RETURNING {}",
            returning()
        );
        transaction!(self, |tx| async {
            let row =
                db::row(&tx, &sql, &[&agent.as_str(), &id.to_string(), &timestamp::now()]).await?;
            match row {
                Some(row) => message_of(&row),
                None => {
                    let message = Self::select(&tx, agent, id).await?;
                    let state = if message.status == MessageStatus::Read { "read" } else { "dead" };
                    Err(Failure::Store(Error::Conflict(format!(
                        "inbox message {id} is {state}, not pending"
                    ))))
                }
            }
        })
    }

    async fn list_dead(&self, agent: &AgentName) -> Result<Vec<InboxMessage>> {
        let sql = format!(
            "SELECT {} FROM inbox WHERE agent = $1 AND status = 'dead' ORDER BY id",
            returning()
        );
        transaction!(self, |tx| async {
            let rows = db::rows(&tx, &sql, &[&agent.as_str()]).await?;
            if rows.is_empty() {
                require_agent(&tx, agent).await?;
            }
            messages_of(&rows)
        })
    }

    async fn filed_page(
        &self,
        agent: &AgentName,
        before: Option<MessageId>,
        limit: usize,
    ) -> Result<Vec<InboxMessage>> {
        let sql = format!(
            "SELECT {} FROM inbox WHERE agent = $1 AND status IN ('read', 'archived') \
             AND ($2::text IS NULL OR id < $2) ORDER BY id DESC LIMIT $3",
            returning()
        );
        let before = before.map(|id| id.to_string());
        let limit = i64::try_from(limit).unwrap_or(i64::MAX);
        transaction!(self, |tx| async {
            let rows = db::rows(&tx, &sql, &[&agent.as_str(), &before, &limit]).await?;
            if rows.is_empty() {
                require_agent(&tx, agent).await?;
            }
            messages_of(&rows)
        })
    }
}
