//! # orbit-testkit
//!
//! What Orbit's tests need to run the real Claude Code CLI offline:
//!
//! - [`ModelServer`]: a scripted stand-in for `POST /v1/messages` on 127.0.0.1 that streams
//!   SSE, answers by [`Rule`]s and records every request;
//! - [`claude_bin`] and [`cli_env`]: where the pinned CLI is, and the environment that points
//!   it at the scripted server and keeps it quiet.
//!
//! This is test code: it panics on misuse rather than returning errors.

// Test support: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod model_server;
pub mod postgres;

use std::path::{Path, PathBuf};

pub use model_server::{ModelServer, Reply, Rule, last_conversation_message, last_user_text};

/// The pinned Claude Code CLI: `ORBIT_TEST_CLAUDE_BIN`, else the project-local install made
/// by `scripts/setup-claude.sh`. Panics with what to do when neither exists, so a test that
/// needs the CLI fails loudly instead of passing without it.
pub fn claude_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("ORBIT_TEST_CLAUDE_BIN") {
        return PathBuf::from(bin);
    }
    let local = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../../.orbit-tools/node_modules/@anthropic-ai/claude-code/bin/claude.exe");
    assert!(
        local.exists(),
        "the Claude Code CLI is not installed: run ./scripts/setup-claude.sh (./scripts/test.sh does)"
    );
    local
}

/// Environment for a CLI that talks only to `server`, never retries, and keeps its scratch
/// files in `tmp`.
pub fn cli_env(server: &ModelServer, tmp: &Path) -> Vec<(String, String)> {
    vec![
        ("ANTHROPIC_BASE_URL".into(), server.base_url()),
        ("ANTHROPIC_API_KEY".into(), "test-key".into()),
        ("CLAUDE_CODE_DISABLE_NONESSENTIAL_TRAFFIC".into(), "1".into()),
        ("CLAUDE_CODE_MAX_RETRIES".into(), "0".into()),
        ("TMPDIR".into(), tmp.display().to_string()),
    ]
}

/// Pids of live (not zombie) processes whose environment contains `needle` (a test's own
/// `TMPDIR`, say), which finds a test's CLI processes and everything they started.
pub fn processes_with_env(needle: &str) -> Vec<u32> {
    processes_where(|dir| {
        std::fs::read(dir.join("environ"))
            .is_ok_and(|env| String::from_utf8_lossy(&env).contains(needle))
    })
}

fn processes_where(matches: impl Fn(&Path) -> bool) -> Vec<u32> {
    let mut pids = Vec::new();
    let Ok(entries) = std::fs::read_dir("/proc") else { return pids };
    for entry in entries.flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else { continue };
        if pid == std::process::id() || !matches(&entry.path()) {
            continue;
        }
        let zombie = std::fs::read_to_string(entry.path().join("stat"))
            .ok()
            .and_then(|stat| {
                stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('Z'))
            })
            .unwrap_or(true);
        if !zombie {
            pids.push(pid);
        }
    }
    pids
}
