//! The Orbit server as a library, so that tests start the same thing `main` does.

pub mod clock;
pub mod config;
pub mod listener;
mod registration;
pub mod startup;
pub mod telemetry;
