//! The registry of nodes: a row per server process with its heartbeat.

use std::time::Duration;

use async_trait::async_trait;
use orbit_store::{
    Instance, InstanceId, InstanceStore, NodeIdentity, PendingApproval, Result, Signal, SignalKind,
    timestamp,
};
use time::OffsetDateTime;

use crate::PgStore;
use crate::db::{self, doc, docs, json, not_found, transaction};
use crate::error::Failure;

/// The longest signal: a notification's payload.
const SIGNAL_BYTES: usize = crate::news::PAYLOAD_BYTES;

/// Names the registry's advisory lock among the database's.
const REGISTRY_LOCK: i64 = 0x0_7b17_1d00;

/// The most bytes of a tool's input (as JSON) kept in a shared copy of a waiting call: a
/// `Write` call's content may be megabytes, which every listing would carry. Beyond it the
/// copy keeps a preview (see [`capped`]); the node whose turn waits lists the whole input.
const APPROVAL_INPUT_BYTES: usize = 32 * 1024;

/// A registration expired this long ago is dropped by the next listing.
const PRUNE_AFTER: Duration = Duration::from_secs(60 * 60);

/// Orders registrations and renewals, so that two nodes registering at once under one name
/// see each other, and a lapsed node renewing sees whoever took its name meanwhile. The
/// isolation is said rather than assumed: each statement must see what the transactions
/// before the lock's release committed, which READ COMMITTED gives (a database whose
/// default is REPEATABLE READ would keep the snapshot taken before the lock was granted).
async fn lock_registry(tx: &deadpool_postgres::Transaction<'_>) -> Result<(), Failure> {
    tx.batch_execute("SET TRANSACTION ISOLATION LEVEL READ COMMITTED").await?;
    db::execute(tx, "SELECT pg_advisory_xact_lock($1)", &[&REGISTRY_LOCK]).await.map(drop)
}

/// The database's clock: whether another node's registration is live is judged by one
/// clock for every node, not by each asker's own (a node's `until` is still its own clock's,
/// so nodes' clocks must agree to well within the lease; see docs/architecture.md).
async fn database_now(tx: &deadpool_postgres::Transaction<'_>) -> Result<OffsetDateTime, Failure> {
    let row = db::row(tx, "SELECT statement_timestamp()", &[]).await?;
    match row {
        Some(row) => Ok(row.try_get(0)?),
        None => Err(Failure::Store(orbit_store::Error::Backend("no clock".into()))),
    }
}

#[async_trait]
impl InstanceStore for PgStore {
    async fn register(
        &self,
        id: InstanceId,
        host: &str,
        pid: u32,
        node: &NodeIdentity,
        address: Option<&str>,
        until: OffsetDateTime,
    ) -> Result<Instance> {
        let now = timestamp::now();
        let instance = Instance::registered(id, host, pid, node, address, now, until);
        transaction!(self, |tx| async {
            lock_registry(&tx).await?;
            let now = database_now(&tx).await?;
            let registered: Vec<Instance> =
                docs(&db::rows(&tx, "SELECT doc FROM instances WHERE until > $1", &[&now]).await?);
            node.check_unique(&id, &registered, now)?;
            db::execute(
                &tx,
                "INSERT INTO instances (id, until, address, doc) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (id) DO UPDATE SET until = $2, address = $3, doc = $4",
                &[&id.to_string(), &until, &address, &json(&instance)?],
            )
            .await
        })?;
        Ok(instance)
    }

    async fn heartbeat(&self, id: &InstanceId, until: OffsetDateTime) -> Result<Instance> {
        transaction!(self, |tx| async {
            lock_registry(&tx).await?;
            let row = db::row(
                &tx,
                "SELECT doc FROM instances WHERE id = $1 FOR UPDATE",
                &[&id.to_string()],
            )
            .await?
            .ok_or_else(|| not_found("instance", id))?;
            let mut instance: Instance = doc(&row)?;
            let now = database_now(&tx).await?;
            if !instance.live_at(now) {
                let registered: Vec<Instance> = docs(
                    &db::rows(&tx, "SELECT doc FROM instances WHERE until > $1", &[&now]).await?,
                );
                instance.check_renewal(&registered, now)?;
            }
            instance.heartbeat_at = timestamp::now();
            instance.until = until;
            db::execute(
                &tx,
                "UPDATE instances SET until = $2, doc = $3 WHERE id = $1",
                &[&id.to_string(), &until, &json(&instance)?],
            )
            .await?;
            Ok(instance)
        })
    }

    async fn list(&self) -> Result<Vec<Instance>> {
        let horizon = timestamp::now() - PRUNE_AFTER;
        transaction!(self, |tx| async {
            db::execute(&tx, "DELETE FROM instances WHERE until < $1", &[&horizon]).await?;
            // A node that died leaves its approvals behind; they go with its registration.
            db::execute(
                &tx,
                "DELETE FROM pending_approvals a \
                 WHERE NOT EXISTS (SELECT 1 FROM instances i WHERE i.id = a.instance)",
                &[],
            )
            .await?;
            Ok(docs(&db::rows(&tx, "SELECT doc FROM instances ORDER BY id", &[]).await?))
        })
    }

    async fn deregister(&self, id: &InstanceId) -> Result<()> {
        transaction!(self, |tx| async {
            db::execute(
                &tx,
                "DELETE FROM pending_approvals WHERE instance = $1",
                &[&id.to_string()],
            )
            .await?;
            db::execute(&tx, "DELETE FROM instances WHERE id = $1", &[&id.to_string()]).await
        })
        .map(drop)
    }

    /// `clock_timestamp()`, the time the statement reads it, rather than the start of its
    /// transaction or statement: the caller brackets the call with its own clock.
    async fn clock(&self) -> Result<Option<OffsetDateTime>> {
        let now: OffsetDateTime = transaction!(self, |tx| async {
            match db::row(&tx, "SELECT clock_timestamp()", &[]).await? {
                Some(row) => Ok(row.try_get(0)?),
                None => Err(Failure::Store(orbit_store::Error::Backend("no clock".into()))),
            }
        })?;
        Ok(Some(now))
    }

    async fn share_approval(&self, approval: &PendingApproval) -> Result<()> {
        let approval = &capped(approval.clone());
        transaction!(self, |tx| async {
            db::execute(
                &tx,
                "INSERT INTO pending_approvals (request_id, instance, agent, session_id, doc) \
                 VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (request_id) DO UPDATE SET instance = $2, doc = $5",
                &[
                    &approval.request_id,
                    &approval.instance.to_string(),
                    &approval.agent.as_str(),
                    &approval.session.to_string(),
                    &json(approval)?,
                ],
            )
            .await
        })
        .map(drop)
    }

    async fn withdraw_approval(&self, instance: &InstanceId, request_id: &str) -> Result<()> {
        transaction!(self, |tx| db::execute(
            &tx,
            "DELETE FROM pending_approvals WHERE instance = $1 AND request_id = $2",
            &[&instance.to_string(), &request_id]
        ))
        .map(drop)
    }

    async fn keep_approvals(
        &self,
        instance: &InstanceId,
        waiting: &[String],
        before: OffsetDateTime,
    ) -> Result<()> {
        let waiting = waiting.to_vec();
        transaction!(self, |tx| db::execute(
            &tx,
            "DELETE FROM pending_approvals WHERE instance = $1 AND NOT (request_id = ANY($2)) \
             AND (doc->>'createdAt')::timestamptz < $3",
            &[&instance.to_string(), &waiting, &before]
        ))
        .map(drop)
    }

    /// Joined with the registry: a row is listed while its instance's registration runs and
    /// its wait has not expired (a copy whose withdrawal failed goes at its expiry at the
    /// latest, and with the next heartbeat of its instance).
    async fn shared_approvals(&self, now: OffsetDateTime) -> Result<Option<Vec<PendingApproval>>> {
        transaction!(self, |tx| async {
            let rows = db::rows(
                &tx,
                "SELECT a.doc FROM pending_approvals a JOIN instances i ON i.id = a.instance \
                 WHERE i.until > $1 AND (a.doc->>'expiresAt')::timestamptz > $1 \
                 ORDER BY a.request_id",
                &[&now],
            )
            .await?;
            Ok(Some(docs(&rows)))
        })
    }

    /// A notification on the signals channel, which every node's listening connection
    /// receives (this node's own too).
    async fn signal(&self, signal: Signal) -> Result<()> {
        let payload = serde_json::to_string(&signal)
            .map_err(|err| orbit_store::Error::Invalid(format!("unsendable signal: {err}")))?;
        if payload.len() >= SIGNAL_BYTES {
            return Err(orbit_store::Error::Invalid(format!(
                "too long to pass to another node ({} bytes of at most {SIGNAL_BYTES})",
                payload.len()
            )));
        }
        let channel = match signal.what {
            SignalKind::Activity { .. } => crate::notify::ACTIVITY,
            _ => crate::notify::SIGNALS,
        };
        transaction!(self, |tx| db::execute(&tx, "SELECT pg_notify($1, $2)", &[&channel, &payload]))
            .map(drop)
    }

    fn watch_signals(&self) -> Option<tokio::sync::broadcast::Receiver<Signal>> {
        Some(self.inner.signals.subscribe())
    }

    /// Notifications on the activity channel, packed and stored by `news`.
    async fn relay(&self, from: InstanceId, news: Vec<serde_json::Value>) -> Result<()> {
        crate::news::send(self, from, &news).await
    }

    fn watch_activity(&self) -> Option<tokio::sync::broadcast::Receiver<orbit_store::Relayed>> {
        Some(self.inner.activity.subscribe())
    }
}

/// The approval with an input of at most [`APPROVAL_INPUT_BYTES`] of JSON: a longer one is
/// replaced by `{"truncated": true, "bytes": <its length>, "preview": <its JSON's start>}`.
fn capped(mut approval: PendingApproval) -> PendingApproval {
    let text = approval.input.to_string();
    if text.len() > APPROVAL_INPUT_BYTES {
        let mut end = APPROVAL_INPUT_BYTES;
        while !text.is_char_boundary(end) {
            end -= 1;
        }
        approval.input = serde_json::json!({
            "truncated": true,
            "bytes": text.len(),
            "preview": format!("{}…", &text[..end]),
        });
    }
    approval
}
