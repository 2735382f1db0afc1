//! Connections, transactions, retries and deadlines: the one way every operation reaches the
//! database.
//!
//! Every store operation runs as one transaction through [`transaction!`]: a connection from
//! the pool (its wait and its connect are bounded), the operation's statements, a commit. A
//! failure that the server answered by rolling back (a serialization failure, a deadlock) or
//! a connection lost before the commit is retried a few times; a failure at the commit is not
//! (the outcome is unknown). The whole operation, retries included, has a deadline: a
//! database that went away or stopped answering makes the operation fail with
//! `Error::Unavailable` (503 over HTTP), never hang.

use std::time::Duration;

use deadpool_postgres::{Object, Pool};
use serde::de::DeserializeOwned;
use tokio_postgres::Row;
use tokio_postgres::types::ToSql;

use crate::error::Failure;

/// How often an operation is tried when its failures are transient.
pub(crate) const ATTEMPTS: u32 = 4;

/// Parameters of one statement.
pub(crate) type Params<'a> = &'a [&'a (dyn ToSql + Sync)];

/// A connection from the pool, or `Unavailable`.
pub(crate) async fn connection(pool: &Pool) -> Result<Object, Failure> {
    Ok(pool.get().await?)
}

/// Runs `operation` under `deadline`, turning the lapse into `Unavailable`.
pub(crate) async fn within<T, E: From<orbit_store::Error>>(
    deadline: Duration,
    operation: impl Future<Output = Result<T, E>>,
) -> Result<T, E> {
    match tokio::time::timeout(deadline, operation).await {
        Ok(result) => result,
        Err(_) => Err(E::from(orbit_store::Error::Unavailable(format!(
            "the database did not answer within {} s",
            deadline.as_secs()
        )))),
    }
}

/// A pause before the next attempt: short, growing, so that a restarting server is given a
/// moment without stalling the caller.
pub(crate) async fn back_off(attempt: u32) {
    tokio::time::sleep(Duration::from_millis(50 * u64::from(attempt * attempt))).await;
}

/// Pins the error type of an operation's body (an `async` block cannot say it).
pub(crate) fn failing<T, F: Future<Output = Result<T, Failure>>>(body: F) -> F {
    body
}

/// Runs `$body` (an expression using the transaction `$tx`, evaluating to a future of
/// `Result<T, Failure>`) in a transaction of `$store`, retrying transient failures, under the
/// store's deadline. Evaluates to `orbit_store::Result<T>`.
macro_rules! transaction {
    ($store:expr, |$tx:ident| $body:expr) => {{
        let store: &$crate::PgStore = &$store;
        $crate::db::within(store.inner.options.operation_timeout, async {
            let mut attempt = 0;
            loop {
                attempt += 1;
                let outcome: Result<_, $crate::error::Failure> = async {
                    let mut client = $crate::db::connection(&store.inner.pool).await?;
                    let $tx = client.transaction().await?;
                    let value = $crate::db::failing($body).await?;
                    // A failure from here on leaves the outcome unknown: not retried.
                    $tx.commit().await.map_err(|err| {
                        $crate::error::Failure::Store($crate::error::Failure::Db(err).into_store())
                    })?;
                    Ok(value)
                }
                .await;
                match outcome {
                    Ok(value) => break Ok(value),
                    Err(failure) if failure.retryable() && attempt < $crate::db::ATTEMPTS => {
                        tracing::debug!(?failure, attempt, "retrying a store operation");
                        $crate::db::back_off(attempt).await;
                    }
                    Err(failure) => break Err(failure.into_store()),
                }
            }
        })
        .await
    }};
}
pub(crate) use transaction;

/// Every row of a statement (prepared once per connection).
pub(crate) async fn rows(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    params: Params<'_>,
) -> Result<Vec<Row>, Failure> {
    let statement = tx.prepare_cached(sql).await?;
    Ok(tx.query(&statement, params).await?)
}

/// The first row of a statement, if any.
pub(crate) async fn row(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    params: Params<'_>,
) -> Result<Option<Row>, Failure> {
    let statement = tx.prepare_cached(sql).await?;
    Ok(tx.query_opt(&statement, params).await?)
}

/// How many rows a statement changed.
pub(crate) async fn execute(
    tx: &deadpool_postgres::Transaction<'_>,
    sql: &str,
    params: Params<'_>,
) -> Result<u64, Failure> {
    let statement = tx.prepare_cached(sql).await?;
    Ok(tx.execute(&statement, params).await?)
}

/// A `jsonb` value's text as the server sends it, parsed straight into a record rather than
/// through a `serde_json::Value` tree (listing 10,000 sessions spent most of its time there).
struct JsonbText<'a>(&'a [u8]);

impl<'a> tokio_postgres::types::FromSql<'a> for JsonbText<'a> {
    fn from_sql(
        ty: &tokio_postgres::types::Type,
        raw: &'a [u8],
    ) -> Result<Self, Box<dyn std::error::Error + Sync + Send>> {
        // The binary form of `jsonb` is a version byte (1) and the JSON text.
        match (ty, raw.split_first()) {
            (&tokio_postgres::types::Type::JSONB, Some((1, text))) => Ok(JsonbText(text)),
            (&tokio_postgres::types::Type::JSON, _) => Ok(JsonbText(raw)),
            _ => Err("not a jsonb value of version 1".into()),
        }
    }

    fn accepts(ty: &tokio_postgres::types::Type) -> bool {
        matches!(*ty, tokio_postgres::types::Type::JSONB | tokio_postgres::types::Type::JSON)
    }
}

/// The record in a row's `doc` column; a record that does not parse is `Backend`.
pub(crate) fn doc<T: DeserializeOwned>(row: &Row) -> Result<T, Failure> {
    let JsonbText(text) = row.try_get("doc")?;
    serde_json::from_slice(text).map_err(|err| {
        Failure::Store(orbit_store::Error::Backend(format!(
            "a stored record does not parse: {err}"
        )))
    })
}

/// The records of rows, skipping (and logging) any that does not parse: one damaged record
/// never hides the rest of a listing.
pub(crate) fn docs<T: DeserializeOwned>(rows: &[Row]) -> Vec<T> {
    rows.iter()
        .filter_map(|row| match doc(row) {
            Ok(record) => Some(record),
            Err(err) => {
                tracing::warn!(?err, "skipping a damaged record in a listing");
                None
            }
        })
        .collect()
}

/// A record as a `doc` parameter.
pub(crate) fn json<T: serde::Serialize>(record: &T) -> Result<serde_json::Value, Failure> {
    serde_json::to_value(record).map_err(|err| {
        Failure::Store(orbit_store::Error::Backend(format!("a record does not serialize: {err}")))
    })
}

/// `NotFound` for the agent unless it exists (asked after a query found nothing, to tell an
/// empty answer from an unknown agent).
pub(crate) async fn require_agent(
    tx: &deadpool_postgres::Transaction<'_>,
    agent: &orbit_store::AgentName,
) -> Result<(), Failure> {
    let found = row(tx, "SELECT 1 FROM agents WHERE name = $1", &[&agent.as_str()]).await?;
    match found {
        Some(_) => Ok(()),
        None => Err(Failure::Store(orbit_store::Error::NotFound {
            what: "agent",
            id: agent.to_string(),
        })),
    }
}

pub(crate) fn not_found(what: &'static str, id: impl ToString) -> Failure {
    Failure::Store(orbit_store::Error::NotFound { what, id: id.to_string() })
}
