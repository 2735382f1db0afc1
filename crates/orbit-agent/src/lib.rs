//! # orbit-agent
//!
//! The heart of Orbit: it runs sessions' turns on the Claude Code CLI.
//!
//! - [`runtime`]: the seam, "one turn in, a stream of events out, abortable" ([`Runtime`],
//!   [`RuntimeProcess`]), and [`claude::ClaudeCli`], its implementation over stream-json.
//! - [`SessionAgent`]: one session's warm process and its chat turns, with inbox claims.
//! - [`AgentPool`]: session agents keyed `agentName:sessionId`, a cap on live processes,
//!   idle eviction, shutdown; `signals`: what it tells, and hears from, other nodes on the
//!   same store; `relay`: this node's activity on the other nodes' event streams.
//!
//! Usable without the server: see `examples/one_turn.rs`.

pub mod activity;
pub mod claude;
mod error;
pub mod event;
mod policy;
mod pool;
pub mod prompt;
mod qmd;
mod relay;
pub mod runtime;
mod session;
mod signals;
mod tools;
pub mod workdir;
pub mod workflow;
pub mod worktree;

pub use activity::{Activity, ActivityBus};
pub use error::Error;
pub use event::{
    CliMessage, CliMessageKind, CliResult, ModelFailure, PermissionRequest, TurnEvent,
    events_dropped_json,
};
pub use policy::{Decision, DeniedTool, MAX_ASK_TIMEOUT_SECS};
pub use pool::{AgentPool, PoolOptions};
pub use prompt::TurnKind;
pub use runtime::{ControlHandler, ProcessEvent, Runtime, RuntimeProcess, SpawnSpec};
pub use session::{
    ChatOptions, REPLAY_BYTES, REPLAY_EVENTS, SessionAgent, TRANSCRIPT_TURN_BYTES, Turn,
    TurnOutcome, TurnWatcher,
};

/// The result of every agent operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;
