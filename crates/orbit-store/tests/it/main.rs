//! orbit-store's integration tests, one binary so they link once.

// Test code: a failed expectation is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod arrivals;
mod children;
mod contract;
mod crash;
mod feed;
mod ids;
mod index;
mod journal;
mod kept;
mod multiprocess;
mod new_records;
mod records;
mod transcripts;
mod upgrade;
