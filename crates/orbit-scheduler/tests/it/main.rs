//! The scheduler on paused tokio time, a test clock and a store (in memory, or on disk where
//! files or several processes are the point), with a scripted task runner; one binary so the
//! suite links once.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod firing;
mod harness;
mod processes;
mod recovery;
