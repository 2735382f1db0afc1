//! # orbit-store
//!
//! Orbit's domain types (agents, sessions, inbox messages, tasks, runs, memory), the async
//! store traits the rest of Orbit uses as `Arc<dyn Trait>`, [`FsStore`], their
//! implementation as JSON and JSONL files under one data directory, and [`MemStore`], their
//! implementation in memory for tests that are about timing rather than files.
//!
//! This is the only crate that reads or writes Orbit's records in the data directory. Every
//! name and id is parsed into a newtype ([`AgentName`], [`SessionId`], ...) before a path is
//! built from it. Every JSON write is atomic (temp file, fsync, rename, fsync of the
//! directory) and every JSONL append is fsynced; see `fs::io` for the rules and `fs::inbox`
//! for the atomic claim.
//!
//! With the `contract` feature, [`contract`] holds the test suite that every implementation
//! of the traits must pass.

mod agent;
mod approval;
#[cfg(feature = "contract")]
pub mod contract;
mod error;
mod fs;
mod ids;
mod inbox;
mod lease;
pub mod limits;
mod lru;
mod mem;
mod memory;
pub mod render;
mod schedule;
mod session;
mod task;
pub mod timestamp;
mod transcript;

use std::sync::Arc;

pub use agent::{
    Agent, AgentPatch, AgentStatus, AgentStore, NewAgent, PermissionMode, Workdir, WorkingDir,
    WorktreeOwner,
};
pub use approval::PendingApproval;
pub use error::{Error, ErrorKind};
pub use fs::{FsOptions, FsStore, data_dir_id};
pub use ids::{
    AgentName, InstanceId, JournalId, LeaseToken, MessageId, RunId, SessionId, TaskId, new_ulid,
};
pub use inbox::{
    Claimer, InboxMessage, InboxStore, MessageStatus, MessageType, NewMessage, Sender, SenderKind,
};
pub use lease::{Instance, InstanceStore, Lease, NodeIdentity, Relayed, Signal, SignalKind};
pub use mem::MemStore;
pub use memory::{MemoryHit, MemoryStore};
pub use schedule::{Schedule, ScheduleError};
pub use session::{
    DayCost, MessagePreview, NewSession, RenewedTurn, Role, Session, SessionMessage, SessionPatch,
    SessionStore, Usage,
};
pub use task::{
    ChangeCursor, ContextMode, NewTask, Run, RunOutcome, RunStart, RunStatus, ScheduleType, Task,
    TaskChange, TaskChanges, TaskPatch, TaskStatus, TaskStore,
};
pub use transcript::{
    PAGE_BYTES as TRANSCRIPT_PAGE_BYTES, TranscriptCursor, TranscriptEntry, TranscriptKind,
    TranscriptPage,
};

/// The result of every store operation.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Every store, as trait objects: what the rest of Orbit is given.
#[derive(Clone)]
pub struct Stores {
    pub agents: Arc<dyn AgentStore>,
    pub sessions: Arc<dyn SessionStore>,
    pub inbox: Arc<dyn InboxStore>,
    pub tasks: Arc<dyn TaskStore>,
    pub memory: Arc<dyn MemoryStore>,
    pub instances: Arc<dyn InstanceStore>,
}
