//! # orbit-scheduler
//!
//! Task schedules: parsing and validating `cron`, `interval` and `once`, and computing the
//! next fire time. (The firing loop itself is not built yet.)

mod schedule;

pub use schedule::{Error, Schedule};

/// The result of schedule operations.
pub type Result<T, E = Error> = std::result::Result<T, E>;
