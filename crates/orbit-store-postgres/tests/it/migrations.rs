//! Migrations: applied once by nodes starting together, recorded with their names and
//! checksums (from the binary, for a database migrated before they were recorded), and a
//! start refused on a schema the node's migrations do not describe.

use orbit_store_postgres::{PgOptions, PgStore};
use orbit_testkit::postgres::TestDatabase;

/// Nodes starting at once on a fresh database each apply the schema or find it applied;
/// none fails, and each migration is recorded once, by name and with its checksum.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn nodes_starting_together_migrate_once() {
    let database = TestDatabase::new();
    let workspaces = tempfile::tempdir().unwrap();
    let mut opens = Vec::new();
    for _ in 0..6 {
        let options = PgOptions::new(database.url.clone(), workspaces.path());
        opens.push(tokio::spawn(PgStore::open(options)));
    }
    for open in opens {
        open.await.unwrap().unwrap();
    }
    let recorded =
        database.query("SELECT version, name, checksum FROM orbit_migrations ORDER BY version");
    assert_eq!(recorded, fresh_records(), "each migration recorded once");
}

/// What a freshly migrated database records: one line per migration, `version|name|checksum`
/// with the checksum the SHA-256 of the migration's file.
fn fresh_records() -> String {
    let directory = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files: Vec<_> = std::fs::read_dir(directory)
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "sql"))
        .collect();
    files.sort();
    assert!(files.len() >= 6, "{files:?}");
    let lines: Vec<String> = files
        .iter()
        .enumerate()
        .map(|(index, path)| {
            use sha2::Digest;
            let sql = std::fs::read_to_string(path).unwrap().replace("\r\n", "\n");
            let sum: String =
                sha2::Sha256::digest(&sql).iter().map(|b| format!("{b:02x}")).collect();
            let name = path.file_stem().unwrap().to_str().unwrap();
            format!("{}|{name}|{sum}", index + 1)
        })
        .collect();
    lines.join("\n")
}

/// Opens a store on `database`, as a node starting.
async fn open_on(database: &TestDatabase) -> orbit_store_postgres::Result<PgStore> {
    let workspaces = tempfile::tempdir().unwrap();
    PgStore::open(PgOptions::new(database.url.clone(), workspaces.path())).await
}

/// A database migrated by an Orbit that recorded versions alone (no name, no checksum) is
/// accepted, and the names and checksums are recorded from the binary.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_an_older_orbit_migrated_gets_its_checksums_recorded() {
    let database = TestDatabase::new();
    drop(open_on(&database).await.unwrap());
    // The table as the previous binary made it: versions and when they were applied.
    database.execute("ALTER TABLE orbit_migrations DROP COLUMN name, DROP COLUMN checksum");
    let count = fresh_records().lines().count().to_string();
    assert_eq!(database.query("SELECT count(*) FROM orbit_migrations"), count);
    let store = open_on(&database).await.unwrap();
    assert_eq!(
        database.query("SELECT version, name, checksum FROM orbit_migrations ORDER BY version"),
        fresh_records()
    );
    assert!(store.stores().agents.list().await.unwrap().is_empty(), "and it serves");
}

/// A database the previous release migrated (versions 1 to 6, recorded without names or
/// checksums) is brought up to date in one start: its six migrations get their checksums
/// recorded, the newer ones are applied, and it serves.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_database_of_the_previous_release_is_recorded_and_migrated_in_one_start() {
    let database = TestDatabase::new();
    drop(open_on(&database).await.unwrap());
    // Undo what migrations 7 and 8 made, and the records this release keeps: the schema as
    // the previous binary left it.
    database.execute(
        "DROP TABLE relayed_news; ALTER TABLE instances DROP COLUMN address; \
         DELETE FROM orbit_migrations WHERE version > 6; \
         ALTER TABLE orbit_migrations DROP COLUMN name, DROP COLUMN checksum",
    );
    assert_eq!(database.query("SELECT count(*) FROM orbit_migrations"), "6");
    let store = open_on(&database).await.unwrap();
    assert_eq!(
        database.query("SELECT version, name, checksum FROM orbit_migrations ORDER BY version"),
        fresh_records()
    );
    assert_eq!(database.query("SELECT count(*) FROM relayed_news"), "0", "7 applied");
    assert_eq!(
        database.query(
            "SELECT count(*) FROM information_schema.columns \
             WHERE table_name = 'instances' AND column_name = 'address'"
        ),
        "1",
        "8 applied"
    );
    assert!(store.stores().agents.list().await.unwrap().is_empty(), "and it serves");
}

/// A runtime role that does not own the schema (an administrator's role made it, and gave
/// this one the rights to read and write it) starts on a database that is up to date: the
/// start changes no table's definition then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_role_that_does_not_own_the_schema_starts_on_an_up_to_date_database() {
    let database = TestDatabase::new();
    drop(open_on(&database).await.unwrap());
    let role = format!("runtime_{}", ulid::Ulid::new().to_string().to_lowercase());
    database.execute(&format!(
        "CREATE ROLE {role} LOGIN; \
         GRANT USAGE ON SCHEMA public TO {role}; \
         GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}; \
         GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA public TO {role}"
    ));
    let config: tokio_postgres::Config = database.url.parse().unwrap();
    let host = match &config.get_hosts()[0] {
        tokio_postgres::config::Host::Tcp(name) => name.clone(),
        tokio_postgres::config::Host::Unix(dir) => dir.display().to_string(),
    };
    let port = config.get_ports().first().copied().unwrap_or(5432);
    let dbname = config.get_dbname().unwrap();
    let url = format!("host={host} port={port} user={role} dbname={dbname}");
    let workspaces = tempfile::tempdir().unwrap();
    let store = PgStore::open(PgOptions::new(url, workspaces.path())).await.unwrap();
    assert!(store.stores().agents.list().await.unwrap().is_empty(), "and it serves");
    drop(store);
    database.execute(&format!("DROP OWNED BY {role}; DROP ROLE {role}"));
}

/// A node whose migration differs from the one the database applied (edited after release)
/// refuses to start, naming the migration; so does a node older than the database's schema,
/// told to upgrade. Neither changes the database.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_edited_migration_or_a_newer_schema_refuses_the_start() {
    let database = TestDatabase::new();
    drop(open_on(&database).await.unwrap());
    let before =
        database.query("SELECT version, name, checksum FROM orbit_migrations ORDER BY version");
    let fourth = database.query("SELECT checksum FROM orbit_migrations WHERE version = 4");
    database.execute(&format!(
        "UPDATE orbit_migrations SET checksum = '{}' WHERE version = 4",
        "0".repeat(64)
    ));
    let err = open_on(&database).await.err().expect("an edited migration is refused");
    assert!(
        matches!(&err, orbit_store_postgres::Error::EditedMigration { version: 4, name, .. } if name == "0004_session_turns"),
        "{err}"
    );
    assert!(err.to_string().contains("edited after it was applied"), "{err}");

    database
        .execute(&format!("UPDATE orbit_migrations SET checksum = '{fourth}' WHERE version = 4"));
    database.execute(
        "INSERT INTO orbit_migrations (version, name, checksum) VALUES (99, '0099_future', 'ab')",
    );
    let err = open_on(&database).await.err().expect("a newer schema is refused");
    assert!(matches!(&err, orbit_store_postgres::Error::NewerSchema { version: 99, .. }), "{err}");
    assert!(err.to_string().contains("Upgrade this node"), "{err}");
    assert!(err.to_string().contains("0099_future"), "{err}");
    database.execute("DELETE FROM orbit_migrations WHERE version = 99");
    assert_eq!(
        database.query("SELECT version, name, checksum FROM orbit_migrations ORDER BY version"),
        before
    );
    open_on(&database).await.unwrap();
}
