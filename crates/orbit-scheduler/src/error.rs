//! The one error type of the scheduler crate, as meilisearch's index-scheduler has its own:
//! what can go wrong when a person asks the scheduler for something.

use orbit_store::ErrorKind;

/// Everything a request to the scheduler can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The task's previous run is still going, under a live lease.
    #[error("the task's previous run is still running")]
    Overlap,
    /// The task's agent is inactive, and so runs nothing.
    #[error(
        "agent '{0}' is inactive, so its tasks do not run; set its status to active to run them"
    )]
    AgentInactive(orbit_store::AgentName),
    /// The task's worktree is on another node's disk: that node runs it.
    #[error("task {task} works in a git worktree on node '{node}'; send its requests to that node")]
    OnOtherNode { task: orbit_store::TaskId, node: String },
    /// The scheduler is stopping and starts no run.
    #[error("the server is shutting down and starts no run")]
    ShuttingDown,
    #[error(transparent)]
    Store(#[from] orbit_store::Error),
}

impl Error {
    /// Classifies this error for callers that map failures to answers.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Overlap | Error::AgentInactive(_) | Error::OnOtherNode { .. } => {
                ErrorKind::Conflict
            }
            Error::ShuttingDown => ErrorKind::Busy,
            Error::Store(err) => err.kind(),
        }
    }
}

/// The result of the scheduler's operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
