//! Slot arithmetic: when a task fires next, and which missed slot to catch up.

use std::time::Duration;

use orbit_store::{Schedule, ScheduleType, Task};
use time::OffsetDateTime;

/// Most slots walked when looking for the last missed one (a minutely cron over an hour
/// needs 60).
const MAX_WALK: usize = 10_000;

/// What to do about a task now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Plan {
    /// Fire the slot at this time (now or later).
    FireAt(OffsetDateTime),
    /// Nothing will fire.
    Never,
}

/// The plan for an active task at `now`. Its pending slot is the first slot of its schedule
/// at or after its stored next run (which moves past paused time and skipped misses) and
/// after the last slot any scheduler claimed; a pending slot in the future fires as it is;
/// a missed one fires as the most recent missed slot when that is within the catch-up
/// window; older misses are skipped to the next slot after now. Only stored fields and `now`
/// go in, and slots come from the schedule's anchor, so every scheduler plans alike.
pub fn plan(
    task: &Task,
    schedule: &Schedule,
    now: OffsetDateTime,
    catch_up_recurring: Duration,
    catch_up_once: Duration,
) -> Plan {
    let mut from = task.next_run.unwrap_or(now);
    if let Some(claimed) = task.last_slot {
        from = from.max(claimed + time::Duration::MILLISECOND);
    }
    let Some(pending) = task.slot_at_or_after(schedule, from) else {
        return Plan::Never;
    };
    if pending > now {
        return Plan::FireAt(pending);
    }
    let window =
        if task.schedule_type == ScheduleType::Once { catch_up_once } else { catch_up_recurring };
    let last_missed = last_slot_at_or_before(schedule, pending, now);
    if now - last_missed <= window {
        Plan::FireAt(last_missed)
    } else {
        task.slot_at_or_after(schedule, now).map_or(Plan::Never, Plan::FireAt)
    }
}

/// The latest slot of `schedule` in `[first, now]`, `first` being a slot.
fn last_slot_at_or_before(
    schedule: &Schedule,
    first: OffsetDateTime,
    now: OffsetDateTime,
) -> OffsetDateTime {
    match schedule {
        Schedule::Interval(every) => {
            // Checked throughout: `first` comes from a stored record, and a slot no sum can
            // reach is a slot that does not exist, not a reason to panic.
            let every_ms = i128::try_from(every.as_millis()).unwrap_or(i128::MAX).max(1);
            let periods = (now - first).whole_milliseconds() / every_ms;
            i64::try_from(periods.saturating_mul(every_ms))
                .ok()
                .and_then(|ms| first.checked_add(time::Duration::milliseconds(ms)))
                .unwrap_or(first)
        }
        Schedule::Once(_) => first,
        Schedule::Cron(..) => {
            let mut last = first;
            for _ in 0..MAX_WALK {
                match schedule.next_after(last) {
                    Some(next) if next <= now => last = next,
                    _ => break,
                }
            }
            last
        }
    }
}
