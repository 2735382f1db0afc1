//! The one error type of the store crate, and its HTTP-free classification.

use std::path::PathBuf;

/// Everything a store operation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A name or id from outside did not parse; nothing was touched.
    #[error("invalid {what} {input:?}: {reason}")]
    InvalidId { what: &'static str, input: String, reason: String },

    /// A value was well-formed but not acceptable (an empty prompt, a bad field).
    #[error("{0}")]
    Invalid(String),

    /// The named record does not exist.
    #[error("{what} '{id}' not found")]
    NotFound { what: &'static str, id: String },

    /// Creating a record that exists already.
    #[error("{what} '{id}' already exists")]
    AlreadyExists { what: &'static str, id: String },

    /// The record exists but is not in the state the operation needs, such as releasing
    /// an inbox message that another session holds.
    #[error("{0}")]
    Conflict(String),

    /// A record on disk did not parse. Returned only for single-record reads; listings skip
    /// such records with a warning so that one bad file never hides the rest.
    #[error("corrupt record at {path}: {source}")]
    Corrupt {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },

    /// The operating system refused a file operation.
    #[error("i/o error at {path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A blocking store task panicked or was cancelled.
    #[error("store worker failed: {0}")]
    Worker(String),

    /// The store's backing service (a database server) cannot be reached or did not answer in
    /// time; the same request may succeed once it is back.
    #[error("the store is unavailable: {0}")]
    Unavailable(String),

    /// The store's backing service refused an operation for a reason that is not the
    /// caller's (a broken schema, a failed statement).
    #[error("store backend error: {0}")]
    Backend(String),
}

/// What kind of failure an error is, for callers that map failures to answers (only
/// `orbit-api` turns these into HTTP statuses).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ErrorKind {
    /// Bad input from the caller.
    Invalid,
    /// The thing asked for does not exist.
    NotFound,
    /// The thing exists already, or is in a state that forbids the request.
    Conflict,
    /// A capacity limit was reached; the same request may succeed later.
    Busy,
    /// A fault of the machine or the data, not of the caller.
    Internal,
    /// A service the store depends on is away; the same request may succeed later.
    Unavailable,
}

impl Error {
    /// Classifies this error.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::InvalidId { .. } | Error::Invalid(_) => ErrorKind::Invalid,
            Error::NotFound { .. } => ErrorKind::NotFound,
            Error::AlreadyExists { .. } | Error::Conflict(_) => ErrorKind::Conflict,
            Error::Corrupt { .. } | Error::Io { .. } | Error::Worker(_) | Error::Backend(_) => {
                ErrorKind::Internal
            }
            Error::Unavailable(_) => ErrorKind::Unavailable,
        }
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }

    pub(crate) fn not_found(what: &'static str, id: impl ToString) -> Self {
        Error::NotFound { what, id: id.to_string() }
    }
}
