//! The seam between a session and whatever runs its turns: one turn in, a stream of events
//! out, abortable. [`crate::claude::ClaudeCli`] implements it with the real CLI.

use std::path::PathBuf;
use std::sync::Arc;

use async_trait::async_trait;
use orbit_store::PermissionMode;
use serde_json::Value;
use tokio::sync::mpsc;

use crate::Result;
use crate::event::CliMessage;

/// How to start a conversation process.
#[derive(Clone)]
pub struct SpawnSpec {
    /// Names the conversation (`agent/session`): a runtime keeps each conversation's own state
    /// under it, apart from every other's.
    pub conversation: String,
    /// The working directory of the turns (the agent's, or a worktree).
    pub cwd: PathBuf,
    /// The CLI session to continue, if any.
    pub resume: Option<String>,
    pub model: Option<String>,
    /// Appended to the CLI's system prompt; fixed for the life of the process.
    pub append_system_prompt: String,
    pub permission_mode: PermissionMode,
    /// Answers the CLI's control requests (tool permissions, hooks, MCP).
    pub control: Arc<dyn ControlHandler>,
}

/// What a live process reports to the turn that is running.
#[derive(Debug, Clone)]
pub enum ProcessEvent {
    /// One message of the conversation.
    Message(CliMessage),
    /// The process ended; no more events follow.
    Exited {
        status: String,
        stderr: String,
        /// It ended because the conversation it was to resume does not exist.
        conversation_missing: bool,
    },
}

/// Starts conversation processes.
#[async_trait]
pub trait Runtime: Send + Sync {
    async fn spawn(&self, spec: SpawnSpec) -> Result<Box<dyn RuntimeProcess>>;
    /// Forgets the state kept for a conversation, or for every conversation under a prefix
    /// (`agent`), once its session or agent is deleted; nothing of it may reach a new one.
    async fn forget(&self, conversation: &str) {
        let _ = conversation;
    }
    /// The runtime's own transcript of CLI session `cli_session` in the conversation's state,
    /// if it has one: what it needs to resume the session, saved in the store after each
    /// turn so that another node can resume it.
    async fn export_transcript(&self, conversation: &str, cli_session: &str) -> Option<Vec<u8>> {
        let _ = (conversation, cli_session);
        None
    }
    /// Puts a transcript exported elsewhere into the conversation's state, where a resume in
    /// `cwd` finds it. Keeps the state's own when it has one already (it is this node's, and
    /// at least as new). Returns whether it wrote one.
    async fn import_transcript(
        &self,
        conversation: &str,
        cwd: &std::path::Path,
        cli_session: &str,
        transcript: &[u8],
    ) -> Result<bool> {
        let _ = (conversation, cwd, cli_session, transcript);
        Ok(false)
    }
}

/// A live conversation process that runs turns one after another.
#[async_trait]
pub trait RuntimeProcess: Send + Sync {
    /// Sends one user turn. Its events arrive on the returned channel, ending with a
    /// `result` message or [`ProcessEvent::Exited`].
    async fn send_turn(&self, text: &str) -> Result<mpsc::UnboundedReceiver<ProcessEvent>>;
    /// Asks the running turn to stop; it ends with an error result.
    async fn interrupt(&self) -> Result<()>;
    /// Ends the process: closes its input, waits a grace period, then kills its process group.
    async fn shutdown(&self);
    /// Whether the process has ended.
    fn has_exited(&self) -> bool;
    /// The operating system's process id, while it lives.
    fn pid(&self) -> Option<u32>;
}

/// Answers a control request from the CLI.
#[async_trait]
pub trait ControlHandler: Send + Sync {
    /// `subtype` is the request's subtype (`can_use_tool`, `hook_callback`, `mcp_message`);
    /// returns the response payload, or an error text the CLI is told.
    async fn handle(&self, subtype: &str, request: &Value) -> std::result::Result<Value, String>;
}
