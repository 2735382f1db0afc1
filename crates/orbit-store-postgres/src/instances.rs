//! The registry of nodes: a row per server process with its heartbeat.

use std::time::Duration;

use async_trait::async_trait;
use orbit_store::{Instance, InstanceId, InstanceStore, NodeIdentity, Result, Signal, timestamp};
use time::OffsetDateTime;

use crate::PgStore;
use crate::db::{self, doc, docs, json, not_found, transaction};
use crate::error::Failure;

/// The longest signal: PostgreSQL's limit on a notification's payload (8000 bytes), less a
/// margin.
const SIGNAL_BYTES: usize = 7900;

/// Names the registry's advisory lock among the database's.
const REGISTRY_LOCK: i64 = 0x0_7b17_1d00;

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
        until: OffsetDateTime,
    ) -> Result<Instance> {
        let now = timestamp::now();
        let instance = Instance {
            id,
            host: host.to_owned(),
            pid,
            started_at: now,
            heartbeat_at: now,
            until,
            node: Some(node.clone()),
        };
        transaction!(self, |tx| async {
            lock_registry(&tx).await?;
            let now = database_now(&tx).await?;
            let registered: Vec<Instance> =
                docs(&db::rows(&tx, "SELECT doc FROM instances WHERE until > $1", &[&now]).await?);
            node.check_unique(&id, &registered, now)?;
            db::execute(
                &tx,
                "INSERT INTO instances (id, until, doc) VALUES ($1, $2, $3) \
                 ON CONFLICT (id) DO UPDATE SET until = $2, doc = $3",
                &[&id.to_string(), &until, &json(&instance)?],
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
            Ok(docs(&db::rows(&tx, "SELECT doc FROM instances ORDER BY id", &[]).await?))
        })
    }

    async fn deregister(&self, id: &InstanceId) -> Result<()> {
        transaction!(self, |tx| db::execute(
            &tx,
            "DELETE FROM instances WHERE id = $1",
            &[&id.to_string()]
        ))
        .map(drop)
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
        transaction!(self, |tx| db::execute(
            &tx,
            "SELECT pg_notify($1, $2)",
            &[&crate::notify::SIGNALS, &payload]
        ))
        .map(drop)
    }

    fn watch_signals(&self) -> Option<tokio::sync::broadcast::Receiver<Signal>> {
        Some(self.inner.signals.subscribe())
    }
}
