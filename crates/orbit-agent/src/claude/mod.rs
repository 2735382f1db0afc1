//! The real Claude Code CLI, driven over its stream-json protocol as the SDK does.
//!
//! One process per active session: `claude -p --input-format stream-json --output-format
//! stream-json --verbose --include-partial-messages --permission-prompt-tool stdio ...`, in
//! its own process group. Each
//! turn is a `user` line on stdin; the CLI answers with stream-json messages on stdout until a
//! `result`. Its control requests (`can_use_tool`, `hook_callback`, `mcp_message`) are answered
//! by the session's [`ControlHandler`]. Stderr goes to the log.

pub mod credentials;
mod process;
pub(crate) mod protocol;
mod spawn;
mod transcript;

use std::path::PathBuf;

use async_trait::async_trait;
use orbit_store::PermissionMode;
use tokio::process::Command;

pub use process::ClaudeProcess;

use crate::runtime::{Runtime, RuntimeProcess, SpawnSpec};
use crate::{Error, Result};

/// Environment variables of Orbit's own that the CLI must not inherit.
const ORBIT_SECRETS: &[&str] = &["ORBIT_API_TOKEN"];

/// How to run the CLI.
#[derive(Debug, Clone)]
pub struct ClaudeCliConfig {
    /// The `claude` binary.
    pub bin: PathBuf,
    /// The CLI's own state, apart from the user's `~/.claude`: each conversation gets
    /// `<config_dir>/<agent>/<session>` as its `CLAUDE_CONFIG_DIR`.
    pub config_dir: PathBuf,
    /// The user's own CLI configuration (`credentials::user_config_dir`), whose login, when
    /// there is one, each conversation shares; nothing else of it is used.
    pub user_config_dir: Option<PathBuf>,
    /// Extra environment for the CLI, on top of the server's own.
    pub env: Vec<(String, String)>,
    /// A cap on model round trips per turn.
    pub max_turns: Option<u32>,
}

/// The [`Runtime`] backed by the Claude Code CLI.
#[derive(Debug, Clone)]
pub struct ClaudeCli {
    config: ClaudeCliConfig,
}

impl ClaudeCli {
    pub fn new(config: ClaudeCliConfig) -> Self {
        Self { config }
    }

    /// The conversation's own `CLAUDE_CONFIG_DIR`. The CLI rewrites its `.claude.json` at
    /// every start, so CLIs sharing one directory race on it ("configuration file not found
    /// ... backup exists"); one directory per conversation gives each process its own, and
    /// its transcripts for `--resume` stay with it.
    fn conversation_dir(&self, conversation: &str) -> PathBuf {
        self.config.config_dir.join(conversation)
    }

    fn command(&self, spec: &SpawnSpec) -> Command {
        let mut command = Command::new(&self.config.bin);
        command.args([
            "-p",
            "--input-format",
            "stream-json",
            "--output-format",
            "stream-json",
            "--verbose",
            // Text as the model generates it (`stream_event` lines), before the whole message.
            "--include-partial-messages",
        ]);
        command.args(["--permission-prompt-tool", "stdio"]);
        let mode = match spec.permission_mode {
            PermissionMode::AllowAll => "bypassPermissions",
            PermissionMode::Safe | PermissionMode::Ask => "default",
        };
        command.args(["--permission-mode", mode]);
        if let Some(resume) = &spec.resume {
            command.args(["--resume", resume]);
        }
        if let Some(model) = &spec.model {
            command.args(["--model", model]);
        }
        if let Some(max_turns) = self.config.max_turns {
            command.args(["--max-turns", &max_turns.to_string()]);
        }
        for secret in ORBIT_SECRETS {
            command.env_remove(secret);
        }
        command.env("CLAUDE_CONFIG_DIR", self.conversation_dir(&spec.conversation));
        // Orbit's tools go straight into the model's tool list instead of behind ToolSearch.
        command.env("ENABLE_TOOL_SEARCH", "false");
        if spec.permission_mode == PermissionMode::AllowAll && nix::unistd::geteuid().is_root() {
            // The CLI refuses bypassPermissions as root unless told it runs in a sandbox.
            command.env("IS_SANDBOX", "1");
        }
        command.envs(self.config.env.iter().map(|(k, v)| (k, v)));
        command.current_dir(&spec.cwd);
        command
    }
}

#[async_trait]
impl Runtime for ClaudeCli {
    async fn spawn(&self, spec: SpawnSpec) -> Result<Box<dyn RuntimeProcess>> {
        let dir = self.conversation_dir(&spec.conversation);
        tokio::fs::create_dir_all(&dir).await.map_err(|err| {
            tracing::warn!(dir = %dir.display(), error = %err, "cannot make the CLI's state directory");
            Error::Protocol(format!("cannot make the CLI's state directory: {err}"))
        })?;
        if let Some(user_dir) = &self.config.user_config_dir {
            credentials::share_login(user_dir, &dir).await;
        }
        let command = self.command(&spec);
        let process = ClaudeProcess::start(command, &spec).await.map_err(|source| {
            Error::CliMissing { bin: self.config.bin.display().to_string(), source }
        })?;
        Ok(Box::new(process))
    }

    async fn export_transcript(&self, conversation: &str, cli_session: &str) -> Option<Vec<u8>> {
        let file = transcript::find(&self.conversation_dir(conversation), cli_session).await?;
        match tokio::fs::read(&file).await {
            Ok(bytes) => Some(bytes),
            Err(err) => {
                tracing::warn!(file = %file.display(), error = %err, "cannot read a CLI transcript");
                None
            }
        }
    }

    async fn import_transcript(
        &self,
        conversation: &str,
        cwd: &std::path::Path,
        cli_session: &str,
        bytes: &[u8],
    ) -> Result<bool> {
        let dir = self.conversation_dir(conversation);
        if transcript::find(&dir, cli_session).await.is_some() {
            return Ok(false);
        }
        transcript::write(&dir, cwd, cli_session, bytes).await.map_err(|err| {
            Error::Protocol(format!("cannot restore the CLI transcript of {cli_session}: {err}"))
        })?;
        Ok(true)
    }

    async fn forget(&self, conversation: &str) {
        let dir = self.conversation_dir(conversation);
        match tokio::fs::remove_dir_all(&dir).await {
            Ok(()) => {}
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => {}
            Err(err) => {
                tracing::warn!(dir = %dir.display(), error = %err, "could not remove a conversation's CLI state")
            }
        }
    }
}
