//! The crate's error type (opening the store) and how a database failure becomes a store error.

/// What opening the store can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The database URL does not parse.
    #[error("invalid database URL: {0}")]
    InvalidUrl(String),
    /// The connection pool could not be built.
    #[error("cannot build the connection pool: {0}")]
    Pool(String),
    /// A migration the database applied differs from this binary's of the same version: it
    /// was edited after it was applied, so the schema is not what this binary's SQL says.
    #[error(
        "the database's migration {version} ({applied_name}) was applied from SQL with checksum \
         {applied_checksum}, but this Orbit's migration {version} ({name}) has checksum \
         {checksum}: a migration was edited after it was applied. Run a binary whose \
         migrations match the database's (migrations are only ever added, never edited)"
    )]
    EditedMigration {
        version: i32,
        applied_name: String,
        applied_checksum: String,
        name: String,
        checksum: String,
    },
    /// The database has a schema version this binary does not know: a newer Orbit migrated
    /// it.
    #[error(
        "the database has schema version {version} ({name}), newer than this Orbit knows (up \
         to {known}): a newer Orbit node migrated it. Upgrade this node to that Orbit's version"
    )]
    NewerSchema { version: i32, name: String, known: i32 },
    /// Connecting, migrating or reading the schema failed.
    #[error("{0}")]
    Store(#[from] orbit_store::Error),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A failure inside one store operation: the store's own verdict, or the database's, kept
/// apart so that the retry loop can tell a transient database failure from an answer.
#[derive(Debug)]
pub(crate) enum Failure {
    Store(orbit_store::Error),
    Db(tokio_postgres::Error),
    Pool(deadpool_postgres::PoolError),
}

impl From<orbit_store::Error> for Failure {
    fn from(err: orbit_store::Error) -> Self {
        Failure::Store(err)
    }
}

impl From<tokio_postgres::Error> for Failure {
    fn from(err: tokio_postgres::Error) -> Self {
        Failure::Db(err)
    }
}

impl From<deadpool_postgres::PoolError> for Failure {
    fn from(err: deadpool_postgres::PoolError) -> Self {
        Failure::Pool(err)
    }
}

/// SQLSTATEs after which the transaction was rolled back by the server and may run again.
const RETRYABLE: [&str; 2] = ["40001", "40P01"];

impl Failure {
    /// Whether running the operation again is safe and may succeed: a serialization failure
    /// or a deadlock (the server rolled the transaction back), or a connection that was lost
    /// or never made before the transaction committed.
    pub(crate) fn retryable(&self) -> bool {
        match self {
            Failure::Store(_) => false,
            Failure::Pool(_) => true,
            Failure::Db(err) => {
                err.code().is_some_and(|code| RETRYABLE.contains(&code.code()))
                    || connection_lost(err)
            }
        }
    }

    pub(crate) fn into_store(self) -> orbit_store::Error {
        match self {
            Failure::Store(err) => err,
            Failure::Pool(err) => orbit_store::Error::Unavailable(format!(
                "cannot get a connection to the database ({err})"
            )),
            Failure::Db(err) if connection_lost(&err) => orbit_store::Error::Unavailable(format!(
                "the connection to the database failed ({err})"
            )),
            Failure::Db(err) => orbit_store::Error::Backend(describe(&err)),
        }
    }
}

/// Whether the connection went away, or the server is shutting down or starting.
fn connection_lost(err: &tokio_postgres::Error) -> bool {
    if err.is_closed() {
        return true;
    }
    if let Some(code) = err.code() {
        let code = code.code();
        // Class 08 is connection exceptions; 57P0x the server's shutdown and start; 53300 too
        // many connections.
        return code.starts_with("08") || code.starts_with("57P0") || code == "53300";
    }
    // No SQLSTATE: an I/O error underneath (a reset, a refused connection).
    std::error::Error::source(err).is_some_and(|source| source.is::<std::io::Error>())
}

/// The server's message with its detail, for the log.
fn describe(err: &tokio_postgres::Error) -> String {
    match err.as_db_error() {
        Some(db) => format!("{} ({})", db.message(), db.code().code()),
        None => err.to_string(),
    }
}

/// Whether `err` is the violation of a constraint of this SQLSTATE (unique: 23505, foreign
/// key: 23503).
pub(crate) fn violates(err: &Failure, code: &str) -> bool {
    matches!(err, Failure::Db(db) if db.code().is_some_and(|c| c.code() == code))
}

pub(crate) const UNIQUE_VIOLATION: &str = "23505";
pub(crate) const FOREIGN_KEY_VIOLATION: &str = "23503";
