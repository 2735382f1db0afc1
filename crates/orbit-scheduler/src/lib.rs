//! # orbit-scheduler
//!
//! Fires tasks on their schedules (`orbit_store::Schedule`: cron, interval, once), exactly once
//! per slot, with catch-up of recently missed slots, overlap skipping, run records and a
//! bounded shutdown. [`Scheduler::run`] is the background loop (mini-redis's shape: sleep until
//! the next fire time or a change, re-read the wall clock every few seconds, stop on a
//! shutdown future). Turns run through a [`TaskRunner`]; [`AgentRunner`] runs them on the
//! agent pool. The wall clock comes from a [`Clock`], so tests drive it.

mod clock;
mod error;
mod runner;
mod scheduler;
mod slots;

pub use clock::{Clock, SystemClock, TokioClock};
pub use error::{Error, Result};
pub use orbit_store::{Schedule, ScheduleError};
pub use runner::{AgentRunner, RunError, RunReport, TaskRunner};
pub use scheduler::{Scheduler, SchedulerOptions};
pub use slots::{Plan, plan};
