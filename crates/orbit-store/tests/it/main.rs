//! orbit-store's integration tests, one binary so they link once.

mod contract;
mod crash;
mod ids;
mod multiprocess;
