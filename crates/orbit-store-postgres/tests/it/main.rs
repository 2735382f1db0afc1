//! orbit-store-postgres's integration tests, one binary so they link once: the shared store
//! contract on a real PostgreSQL, and what only a database store has to show (`database`:
//! nodes on one database; `migrations`; `news`: what nodes relay to each other).

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod contract;
mod database;
mod migrations;
mod news;

use orbit_store::{FsOptions, Stores};
use orbit_store_postgres::{PgOptions, PgStore};
use orbit_testkit::postgres::TestDatabase;

/// What keeps a test's store alive: its database and its working directories.
pub struct Guard {
    pub database: TestDatabase,
    pub workspaces: tempfile::TempDir,
}

/// A store on a fresh database, opened from a synchronous factory on the test's runtime.
pub fn open(records: FsOptions) -> (PgStore, Guard) {
    let database = TestDatabase::new();
    let workspaces = tempfile::tempdir().unwrap();
    let mut options = PgOptions::new(database.url.clone(), workspaces.path().join("workspaces"));
    options.records = records;
    let store = tokio::task::block_in_place(|| {
        tokio::runtime::Handle::current().block_on(PgStore::open(options))
    })
    .unwrap();
    (store, Guard { database, workspaces })
}

pub fn stores(records: FsOptions) -> (Stores, Guard) {
    let (store, guard) = open(records);
    (store.stores(), guard)
}
