//! The one error type of the agent crate.

use orbit_store::ErrorKind;

use crate::event::ModelFailure;

/// Everything a turn, the pool or the runtime can fail with.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Store(#[from] orbit_store::Error),

    /// The session already has a running turn; a second one is refused, not queued.
    #[error("session {0} already has a running turn")]
    TurnInProgress(String),

    /// No CLI process slot came free within the wait; the caller may retry later.
    #[error("all {0} agent processes are busy; try again shortly")]
    Busy(usize),

    /// The server is shutting down and takes no new turns.
    #[error("the server is shutting down and takes no new turns")]
    ShuttingDown,

    /// The session or task works in a git worktree on another node's disk: its turns run,
    /// and it is deleted, on that node alone.
    #[error("{what} {id} works in a git worktree on node '{node}'; send its requests to that node")]
    OnOtherNode { what: &'static str, id: String, node: String },

    /// A node asked to be released as gone for good is running: its records stay pinned.
    #[error(
        "node '{node}' is running (instance {instance}, its heartbeat good until {until}); only a node that is gone can be released: stop it, or wait for its heartbeat to lapse"
    )]
    NodeRunning { node: String, instance: String, until: String },

    /// Abort was asked of a session with no running turn.
    #[error("session {0} has no running turn")]
    NotRunning(String),

    /// The Claude Code CLI binary could not be started.
    #[error(
        "cannot start the Claude Code CLI at '{bin}': {source}. Install it (./scripts/setup-claude.sh) or point --claude-bin / ORBIT_CLAUDE_BIN at it"
    )]
    CliMissing {
        bin: String,
        #[source]
        source: std::io::Error,
    },

    /// The CLI process ended in the middle of a turn.
    #[error("the Claude Code CLI exited during the turn ({status}){}", stderr_hint(.stderr))]
    CliExited { status: String, stderr: String },

    /// The CLI finished the turn with an error result.
    #[error("the turn failed: {0}")]
    TurnFailed(String),

    /// The model service refused the turn in a way a person can act on; the message says
    /// what to do in Orbit's words, not the CLI's (which speak of its own `/login`).
    #[error("{}", model_failure(.failure, .detail))]
    Model { failure: ModelFailure, detail: String },

    /// The turn was aborted on request.
    #[error("the turn was aborted")]
    Aborted,

    /// The turn ran past its time limit and was aborted.
    #[error("the turn took longer than {0} s and was aborted")]
    TimedOut(u64),

    /// Talking to the CLI failed (a write to its stdin, a malformed line).
    #[error("CLI protocol error: {0}")]
    Protocol(String),

    /// An answer for a permission request that is not waiting.
    #[error("no permission request {0} is pending")]
    PermissionNotPending(String),

    /// Bad input to a worktree operation (a hostile branch name, say).
    #[error("{0}")]
    Invalid(String),

    /// A task's schedule that does not parse, or never fires.
    #[error("{0}")]
    InvalidSchedule(String),

    /// A worktree that does not exist.
    #[error("worktree '{0}' not found")]
    WorktreeNotFound(String),

    /// A new worktree's branch exists, or clashes with one that does (`a/b` beside `a`).
    #[error("branch '{0}' already exists or clashes with an existing branch")]
    BranchExists(String),

    /// A worktree with uncommitted changes, kept rather than destroyed.
    #[error("worktree '{0}' has uncommitted changes and was kept")]
    WorktreeDirty(String),

    /// git failed.
    #[error("git failed: {0}")]
    Git(String),

    /// A change that the thing's present state does not allow (the sentence says why).
    #[error("{0}")]
    Conflict(String),
}

fn model_failure(failure: &ModelFailure, detail: &str) -> String {
    const SET_CREDENTIALS: &str = "set ANTHROPIC_API_KEY (or ANTHROPIC_AUTH_TOKEN) in the environment of the Orbit server, or log in once with the `claude` CLI as the user who runs the server (Orbit's CLIs share ~/.claude/.credentials.json, or that of CLAUDE_CONFIG_DIR), then restart the server";
    match failure {
        ModelFailure::NoCredentials => {
            format!(
                "the model cannot be used: Orbit found no credentials for it. To fix it, {SET_CREDENTIALS}"
            )
        }
        ModelFailure::CredentialsRefused { status } => {
            let status = status.map_or(String::new(), |status| format!(" (HTTP {status})"));
            // The CLI's own words point at its `/login`, which Orbit has not: left out.
            format!(
                "the model service refused Orbit's credentials{status}. To fix it, {SET_CREDENTIALS}"
            )
        }
        ModelFailure::RateLimited => format!(
            "the model service is rate-limiting this account (HTTP 429: too many requests or tokens per minute): {detail}. Send the message again in a minute or so"
        ),
        ModelFailure::Overloaded { status } => format!(
            "the model service is overloaded or failing (HTTP {status}), which is usually temporary: {detail}. Send the message again in a few minutes"
        ),
    }
}

fn stderr_hint(stderr: &str) -> String {
    if stderr.trim().is_empty() { String::new() } else { format!(": {}", stderr.trim()) }
}

impl Error {
    /// Classifies this error for callers that map failures to answers.
    pub fn kind(&self) -> ErrorKind {
        match self {
            Error::Store(err) => err.kind(),
            Error::TurnInProgress(_) => ErrorKind::Conflict,
            Error::Busy(_) | Error::ShuttingDown => ErrorKind::Busy,
            Error::Model { failure, .. } => match failure {
                ModelFailure::RateLimited | ModelFailure::Overloaded { .. } => ErrorKind::Busy,
                ModelFailure::NoCredentials | ModelFailure::CredentialsRefused { .. } => {
                    ErrorKind::Internal
                }
            },
            Error::NotRunning(_) | Error::PermissionNotPending(_) | Error::WorktreeNotFound(_) => {
                ErrorKind::NotFound
            }
            Error::Invalid(_) | Error::InvalidSchedule(_) => ErrorKind::Invalid,
            Error::WorktreeDirty(_)
            | Error::BranchExists(_)
            | Error::Conflict(_)
            | Error::OnOtherNode { .. }
            | Error::NodeRunning { .. } => ErrorKind::Conflict,
            Error::CliMissing { .. }
            | Error::CliExited { .. }
            | Error::TurnFailed(_)
            | Error::Aborted
            | Error::TimedOut(_)
            | Error::Protocol(_)
            | Error::Git(_) => ErrorKind::Internal,
        }
    }
}
