//! Wall-clock timestamps as the contract writes them: RFC 3339 UTC with milliseconds.

use time::OffsetDateTime;

/// The current UTC time, truncated to whole milliseconds so that it survives a round trip
/// through its RFC 3339 text unchanged.
pub fn now() -> OffsetDateTime {
    truncate_to_millis(OffsetDateTime::now_utc())
}

/// `at` without its sub-millisecond part.
pub fn truncate_to_millis(at: OffsetDateTime) -> OffsetDateTime {
    let millis = at.millisecond();
    at.replace_millisecond(millis).unwrap_or(at)
}

/// Serde for `OffsetDateTime` as RFC 3339 text.
pub mod rfc3339 {
    pub use time::serde::rfc3339::*;
}
