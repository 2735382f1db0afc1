//! The one error type of the scheduler crate, as meilisearch's index-scheduler has its own:
//! what can go wrong when a person asks the scheduler for something.

use orbit_store::ErrorKind;

/// Everything a request to the scheduler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The task's previous run is still going, under a live lease.
    #[error("the task's previous run is still running")]
    Overlap,
    #[error(transparent)]
    Store(#[from] orbit_store::Error),
}

impl Error {
    /// Classifies this error for callers that map failures to answers.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Overlap => ErrorKind::Conflict,
            Error::Store(err) => err.kind(),
        }
    }
}

/// The result of the scheduler's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
