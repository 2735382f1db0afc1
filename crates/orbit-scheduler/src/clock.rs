//! Wall-clock time, behind a seam so that tests can drive it.

use std::sync::Mutex;

use time::OffsetDateTime;

/// The current wall-clock time.
pub trait Clock: Send + Sync {
    fn now(&self) -> OffsetDateTime;
}

/// The system's clock.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> OffsetDateTime {
        orbit_store::timestamp::now()
    }
}

/// A wall clock that follows tokio's clock from a fixed start, so that paused tokio time
/// (`tokio::time::pause`, `advance`) moves it; `jump` moves it alone, like a suspended
/// machine or a clock change.
pub struct TokioClock {
    start_wall: OffsetDateTime,
    start: tokio::time::Instant,
    jumped: Mutex<time::Duration>,
}

impl TokioClock {
    pub fn starting_at(start_wall: OffsetDateTime) -> Self {
        Self {
            start_wall,
            start: tokio::time::Instant::now(),
            jumped: Mutex::new(time::Duration::ZERO),
        }
    }

    /// Moves the wall clock by `by` without tokio time passing.
    pub fn jump(&self, by: time::Duration) {
        *self.jumped.lock().unwrap_or_else(std::sync::PoisonError::into_inner) += by;
    }
}

impl Clock for TokioClock {
    fn now(&self) -> OffsetDateTime {
        let jumped = *self.jumped.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        orbit_store::timestamp::truncate_to_millis(self.start_wall + self.start.elapsed() + jumped)
    }
}
