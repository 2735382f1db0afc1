//! orbit-agent against the real Claude Code CLI and the scripted model server, one binary so
//! they link once.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod harness;
mod inbox;
mod lifecycle;
mod permissions;
mod pool;
mod tools;
mod turns;
mod workdirs;
mod worktrees;
