//! The Orbit server as a library, so that tests start the same thing `main` does.

pub mod clock;
pub mod config;
pub mod listener;
pub mod startup;
pub mod telemetry;
