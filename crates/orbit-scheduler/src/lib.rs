//! # orbit-scheduler
//!
//! Fires tasks on their schedules. Schedules themselves (`orbit_store::Schedule`) are parsed
//! and validated in the domain crate. (The firing loop is not built yet.)

pub use orbit_store::{Schedule, ScheduleError};
