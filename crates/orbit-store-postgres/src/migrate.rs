//! Schema migrations: embedded in the binary, versioned and named, applied at start under an
//! advisory lock so that nodes starting together apply each once.
//!
//! The database records each applied migration's version, name and a checksum of its SQL
//! (SHA-256). At every start the records are checked against the binary's migrations before
//! anything is applied: a recorded checksum that differs from the binary's means a migration
//! was edited after a database applied it (its schema is not what the binary's SQL says), and
//! a version the binary does not know means a newer node migrated the database. Both refuse
//! the start with a sentence saying what to do. A database migrated by an Orbit that recorded
//! no names or checksums has them recorded from the binary, on trust: the first binary to
//! record them is the one that checks from then on.

use deadpool_postgres::Pool;
use sha2::{Digest, Sha256};

use crate::error::{Error, Failure, Result};

/// One migration: its version, its name (its file's, without `.sql`) and its SQL.
#[derive(Debug)]
struct Migration {
    version: i32,
    name: &'static str,
    sql: &'static str,
}

/// A migration, by its version and its file's name under `migrations/`.
macro_rules! migration {
    ($version:literal, $name:literal) => {
        Migration {
            version: $version,
            name: $name,
            sql: include_str!(concat!("../migrations/", $name, ".sql")),
        }
    };
}

/// Every migration, in order. A migration is never edited once released, only added.
const MIGRATIONS: &[Migration] = &[
    migration!(1, "0001_init"),
    migration!(2, "0002_cli_transcripts"),
    migration!(3, "0003_session_transcripts"),
    migration!(4, "0004_session_turns"),
    migration!(5, "0005_turn_aborts"),
    migration!(6, "0006_pending_approvals"),
    migration!(7, "0007_relayed_news"),
    migration!(8, "0008_instance_addresses"),
];

/// An arbitrary constant naming Orbit's migration lock among the database's advisory locks.
const MIGRATION_LOCK: i64 = 0x0_7b17_5c4e;

/// What the database records of one applied migration: the name and checksum are missing
/// where an older Orbit applied it.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Applied {
    version: i32,
    name: Option<String>,
    checksum: Option<String>,
}

/// The SHA-256 of the migration's SQL with its line endings made `\n`, in lowercase hex: a
/// binary built from a checkout with `\r\n` line endings (Windows' `core.autocrlf`) checks
/// the same migrations as one built from an `\n` checkout.
fn checksum(sql: &str) -> String {
    let sql = sql.replace("\r\n", "\n");
    Sha256::digest(sql.as_bytes()).iter().map(|byte| format!("{byte:02x}")).collect()
}

/// What the start does with the database's records: the migrations to record a name and a
/// checksum for (applied by an Orbit that recorded none), and those to apply. Refuses an
/// edited migration and a version this binary does not know.
fn plan<'a>(
    known: &'a [Migration],
    applied: &[Applied],
) -> Result<(Vec<&'a Migration>, Vec<&'a Migration>)> {
    let newest_known = known.iter().map(|m| m.version).max().unwrap_or(0);
    let unknown = applied.iter().filter(|a| !known.iter().any(|m| m.version == a.version));
    if let Some(newer) = unknown.max_by_key(|a| a.version) {
        return Err(Error::NewerSchema {
            version: newer.version,
            name: newer.name.clone().unwrap_or_else(|| "unnamed".into()),
            known: newest_known,
        });
    }
    let (mut to_record, mut to_apply) = (Vec::new(), Vec::new());
    for migration in known {
        let Some(record) = applied.iter().find(|a| a.version == migration.version) else {
            to_apply.push(migration);
            continue;
        };
        match &record.checksum {
            None => to_record.push(migration),
            Some(recorded) if *recorded == checksum(migration.sql) => {}
            Some(recorded) => {
                return Err(Error::EditedMigration {
                    version: migration.version,
                    applied_name: record.name.clone().unwrap_or_else(|| "unnamed".into()),
                    applied_checksum: recorded.clone(),
                    name: migration.name.into(),
                    checksum: checksum(migration.sql),
                });
            }
        }
    }
    Ok((to_record, to_apply))
}

/// Applies the migrations the database lacks and returns the change feed's identity.
pub(crate) async fn run(pool: &Pool) -> Result<ulid::Ulid> {
    let mut client = pool.get().await.map_err(store)?;
    let tx = client.transaction().await.map_err(store)?;
    // Held until the transaction ends: a second node waits here, then finds nothing to do.
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK]).await.map_err(store)?;
    // The columns an older Orbit's table lacks are added, empty, for `plan` to fill. Only
    // then: `ALTER TABLE` needs the table's owner, and a runtime role that does not own it
    // still starts on a database that is up to date.
    let columns: Vec<String> = tx
        .query(
            "SELECT column_name::text FROM information_schema.columns \
             WHERE table_schema = current_schema() AND table_name = 'orbit_migrations'",
            &[],
        )
        .await
        .map_err(store)?
        .iter()
        .map(|row| row.try_get(0))
        .collect::<Result<_, _>>()
        .map_err(store)?;
    let has = |name: &str| columns.iter().any(|column| column == name);
    if columns.is_empty() {
        tx.batch_execute(
            "CREATE TABLE orbit_migrations (
                version integer PRIMARY KEY,
                applied_at timestamptz NOT NULL DEFAULT now(),
                name text,
                checksum text
            )",
        )
        .await
        .map_err(store)?;
    } else if !has("name") || !has("checksum") {
        tx.batch_execute(
            "ALTER TABLE orbit_migrations ADD COLUMN IF NOT EXISTS name text,
                ADD COLUMN IF NOT EXISTS checksum text",
        )
        .await
        .map_err(store)?;
    }
    let rows = tx
        .query("SELECT version, name, checksum FROM orbit_migrations ORDER BY version", &[])
        .await
        .map_err(store)?;
    let mut applied = Vec::with_capacity(rows.len());
    for row in rows {
        applied.push(Applied {
            version: row.try_get(0).map_err(store)?,
            name: row.try_get(1).map_err(store)?,
            checksum: row.try_get(2).map_err(store)?,
        });
    }
    let (to_record, to_apply) = plan(MIGRATIONS, &applied)?;
    for migration in to_record {
        tracing::info!(
            version = migration.version,
            name = migration.name,
            "recording the name and checksum of a migration an older Orbit applied"
        );
        tx.execute(
            "UPDATE orbit_migrations SET name = $2, checksum = $3 WHERE version = $1",
            &[&migration.version, &migration.name, &checksum(migration.sql)],
        )
        .await
        .map_err(store)?;
    }
    for migration in to_apply {
        tracing::info!(version = migration.version, name = migration.name, "applying a migration");
        tx.batch_execute(migration.sql).await.map_err(store)?;
        tx.execute(
            "INSERT INTO orbit_migrations (version, name, checksum) VALUES ($1, $2, $3)",
            &[&migration.version, &migration.name, &checksum(migration.sql)],
        )
        .await
        .map_err(store)?;
    }
    let feed = ulid::Ulid::new().to_string();
    tx.execute(
        "INSERT INTO orbit_feed (id, feed) VALUES (1, $1) ON CONFLICT (id) DO NOTHING",
        &[&feed],
    )
    .await
    .map_err(store)?;
    let feed: String = tx
        .query_one("SELECT feed FROM orbit_feed WHERE id = 1", &[])
        .await
        .map_err(store)?
        .try_get(0)
        .map_err(store)?;
    tx.commit().await.map_err(store)?;
    ulid::Ulid::from_string(&feed).map_err(|err| {
        Error::Store(orbit_store::Error::Backend(format!("the change feed's id is bad: {err}")))
    })
}

/// A database failure as the store's error (unavailable when the connection went).
fn store(err: impl Into<Failure>) -> Error {
    Error::Store(err.into().into_store())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn applied(version: i32, checksum: Option<String>) -> Applied {
        Applied { version, name: checksum.as_ref().map(|_| format!("{version:04}_x")), checksum }
    }

    fn recorded(migrations: &[Migration]) -> Vec<Applied> {
        migrations.iter().map(|m| applied(m.version, Some(checksum(m.sql)))).collect()
    }

    #[test]
    fn the_checksum_does_not_depend_on_the_checkouts_line_endings() {
        let sql = "CREATE TABLE a (\n    id integer\n);\n";
        assert_eq!(checksum(&sql.replace('\n', "\r\n")), checksum(sql));
        assert_ne!(checksum("CREATE TABLE b ();\n"), checksum(sql));
    }

    #[test]
    fn every_migration_has_the_next_version_and_its_files_name() {
        for (index, migration) in MIGRATIONS.iter().enumerate() {
            assert_eq!(usize::try_from(migration.version).unwrap(), index + 1);
            assert!(migration.name.starts_with(&format!("{:04}_", migration.version)));
        }
        assert_eq!(checksum("").len(), 64);
        assert_eq!(
            checksum("abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
            "SHA-256's own test vector"
        );
    }

    #[test]
    fn a_fresh_database_applies_every_migration_and_an_up_to_date_one_none() {
        let (record, apply) = plan(MIGRATIONS, &[]).unwrap();
        assert!(record.is_empty());
        assert_eq!(apply.len(), MIGRATIONS.len());
        let (record, apply) = plan(MIGRATIONS, &recorded(MIGRATIONS)).unwrap();
        assert!(record.is_empty() && apply.is_empty());
        let (record, apply) = plan(MIGRATIONS, &recorded(&MIGRATIONS[..2])).unwrap();
        assert!(record.is_empty());
        let after_two: Vec<i32> = MIGRATIONS[2..].iter().map(|m| m.version).collect();
        assert_eq!(after_two.first(), Some(&3));
        assert_eq!(apply.iter().map(|m| m.version).collect::<Vec<_>>(), after_two);
    }

    #[test]
    fn migrations_an_older_orbit_applied_have_their_checksums_recorded_not_refused() {
        let older: Vec<Applied> = (1..=3).map(|version| applied(version, None)).collect();
        let (record, apply) = plan(MIGRATIONS, &older).unwrap();
        assert_eq!(record.iter().map(|m| m.version).collect::<Vec<_>>(), [1, 2, 3]);
        let after_three: Vec<i32> = MIGRATIONS[3..].iter().map(|m| m.version).collect();
        assert_eq!(after_three.first(), Some(&4));
        assert_eq!(apply.iter().map(|m| m.version).collect::<Vec<_>>(), after_three);
    }

    #[test]
    fn an_edited_migration_and_a_newer_schema_are_refused() {
        let mut edited = recorded(MIGRATIONS);
        edited[1].checksum = Some("0".repeat(64));
        let err = plan(MIGRATIONS, &edited).unwrap_err();
        assert!(matches!(err, Error::EditedMigration { version: 2, .. }), "{err}");
        assert!(err.to_string().contains("edited"), "{err}");

        let mut newer = recorded(MIGRATIONS);
        newer.push(applied(100, Some("f".repeat(64))));
        let err = plan(MIGRATIONS, &newer).unwrap_err();
        assert!(matches!(err, Error::NewerSchema { version: 100, .. }), "{err}");
        assert!(err.to_string().contains("Upgrade this node"), "{err}");
    }
}
