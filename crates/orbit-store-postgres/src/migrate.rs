//! Schema migrations: embedded in the binary, versioned, applied at start under an advisory
//! lock so that nodes starting together apply each once.

use deadpool_postgres::Pool;

use crate::error::Failure;

/// Every migration, in order; a database records the versions it has.
const MIGRATIONS: &[(i32, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_cli_transcripts.sql")),
    (3, include_str!("../migrations/0003_session_transcripts.sql")),
    (4, include_str!("../migrations/0004_session_turns.sql")),
    (5, include_str!("../migrations/0005_turn_aborts.sql")),
    (6, include_str!("../migrations/0006_pending_approvals.sql")),
    (7, include_str!("../migrations/0007_instance_addresses.sql")),
];

/// An arbitrary constant naming Orbit's migration lock among the database's advisory locks.
const MIGRATION_LOCK: i64 = 0x0_7b17_5c4e;

/// Applies the migrations the database lacks and returns the change feed's identity.
pub(crate) async fn run(pool: &Pool) -> orbit_store::Result<ulid::Ulid> {
    apply(pool).await.map_err(Failure::into_store)
}

async fn apply(pool: &Pool) -> Result<ulid::Ulid, Failure> {
    let mut client = pool.get().await?;
    let tx = client.transaction().await?;
    // Held until the transaction ends: a second node waits here, then finds nothing to do.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await?;
    tx.batch_execute(
        "CREATE TABLE IF NOT EXISTS orbit_migrations (
            version integer PRIMARY KEY,
            applied_at timestamptz NOT NULL DEFAULT now()
        )",
    )
    .await?;
    let applied: Vec<i32> = tx
        .query("SELECT version FROM orbit_migrations", &[])
        .await?
        .iter()
        .map(|row| row.get(0))
        .collect();
    if let Some(newer) = applied.iter().find(|v| !MIGRATIONS.iter().any(|(known, _)| known == *v)) {
        return Err(Failure::Store(orbit_store::Error::Backend(format!(
            "the database has schema version {newer}, which this Orbit does not know: it was \
             migrated by a newer Orbit"
        ))));
    }
    for (version, sql) in MIGRATIONS {
        if applied.contains(version) {
            continue;
        }
        tracing::info!(version, "applying a database migration");
        tx.batch_execute(sql).await?;
        tx.execute("INSERT INTO orbit_migrations (version) VALUES ($1)", &[version]).await?;
    }
    let feed = ulid::Ulid::new().to_string();
    tx.execute(
        "INSERT INTO orbit_feed (id, feed) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
        &[&feed],
    )
    .await?;
    let feed: String = tx.query_one("SELECT feed FROM orbit_feed WHERE id = 1", &[]).await?.get(0);
    tx.commit().await?;
    ulid::Ulid::from_string(&feed).map_err(|err| {
        Failure::Store(orbit_store::Error::Backend(format!("the change feed's id is bad: {err}")))
    })
}
