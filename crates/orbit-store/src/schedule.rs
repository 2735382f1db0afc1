//! A task's schedule, parsed at the boundary. What a valid schedule is belongs to the domain:
//! the API, the agent's own scheduling tool and the scheduler all check schedules the same way.

use std::time::Duration;

use crate::ScheduleType;
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Why a schedule is refused.
#[derive(Debug, thiserror::Error)]
pub enum ScheduleError {
    #[error("invalid cron expression '{expr}': {reason}")]
    Cron { expr: String, reason: String },
    #[error(
        "invalid interval '{0}': milliseconds as a whole number, at least 1000 and at most {MAX_INTERVAL_MS} (366 days)"
    )]
    Interval(String),
    #[error(
        "invalid once time '{value}': {reason}; expected an RFC 3339 timestamp with a date, a time and an offset, such as 2026-11-23T21:08:15Z"
    )]
    Once { value: String, reason: String },
    #[error("unknown timezone '{0}': use an IANA name such as Europe/Paris")]
    Timezone(String),
}

impl From<ScheduleError> for crate::Error {
    fn from(err: ScheduleError) -> Self {
        crate::Error::Invalid(err.to_string())
    }
}

/// The longest interval: a longer one is better said as a cron or once schedule, and the
/// limit keeps every sum of a time and an interval far from `time`'s range.
pub const MAX_INTERVAL_MS: u64 = 366 * 24 * 60 * 60 * 1000;

/// The latest year a `once` may name: every time a schedule yields stays far enough from
/// `time`'s range (the year 9999) that a step past it cannot overflow.
pub const MAX_YEAR: i32 = 9000;

/// Whether `cron` matches some day within one Gregorian cycle (400 years, after which dates
/// and weekdays repeat) from `year`: a day-level check, without croner's search, so that an
/// expression naming a day that never comes (31 February) is refused at once. Expressions
/// that fire at all match within days, except those of a rare day (29 February): years.
fn fires_on_some_day(cron: &croner::Cron, year: i32) -> bool {
    let Some(mut day) = chrono::NaiveDate::from_ymd_opt(year, 1, 1) else { return true };
    let Some(end) = chrono::NaiveDate::from_ymd_opt(year + 400, 1, 1) else { return true };
    use chrono::Datelike;
    while day < end {
        let pattern = &cron.pattern;
        if pattern.month_match(day.month()).unwrap_or(true)
            && pattern.day_match(day.year(), day.month(), day.day()).unwrap_or(true)
        {
            return true;
        }
        let Some(next) = day.succ_opt() else { return true };
        day = next;
    }
    false
}

/// A parsed schedule.
#[derive(Debug, Clone)]
pub enum Schedule {
    /// A 5-field cron expression, evaluated in an IANA timezone (UTC by default).
    Cron(Box<croner::Cron>, chrono_tz::Tz),
    Interval(Duration),
    Once(OffsetDateTime),
}

impl Schedule {
    /// Parses and checks a schedule as a task gives it.
    pub fn parse(
        kind: ScheduleType,
        value: &str,
        timezone: Option<&str>,
    ) -> Result<Self, ScheduleError> {
        let zone = match timezone {
            None => chrono_tz::Tz::UTC,
            Some(name) => name
                .parse::<chrono_tz::Tz>()
                .map_err(|_| ScheduleError::Timezone(name.to_owned()))?,
        };
        match kind {
            ScheduleType::Cron => {
                let cron_error =
                    |reason: String| ScheduleError::Cron { expr: value.to_owned(), reason };
                if value.split_whitespace().count() != 5 {
                    return Err(cron_error(
                        "it needs exactly 5 fields (minute hour day-of-month month day-of-week)"
                            .into(),
                    ));
                }
                let cron =
                    croner::Cron::new(value).parse().map_err(|err| cron_error(err.to_string()))?;
                // Checked before croner searches for a time: for a day that never comes it
                // steps day by day to the year 5000, seconds of a worker's time per request.
                if !fires_on_some_day(&cron, crate::timestamp::now().year()) {
                    return Err(cron_error("it never fires: no month has such a day".into()));
                }
                let schedule = Self::Cron(Box::new(cron), zone);
                // A valid expression may name a day that never comes (30 February).
                if schedule.next_after(crate::timestamp::now()).is_none() {
                    return Err(cron_error("it never fires".into()));
                }
                Ok(schedule)
            }
            ScheduleType::Interval => match value.trim().parse::<u64>() {
                Ok(ms) if (1000..=MAX_INTERVAL_MS).contains(&ms) => {
                    Ok(Self::Interval(Duration::from_millis(ms)))
                }
                _ => Err(ScheduleError::Interval(value.to_owned())),
            },
            ScheduleType::Once => {
                // Stored times have millisecond precision; a finer `once` would never equal its
                // own stored slot, and the scheduler would re-save it without end.
                let once_error =
                    |reason: String| ScheduleError::Once { value: value.to_owned(), reason };
                let at = OffsetDateTime::parse(value, &Rfc3339)
                    .map_err(|err| once_error(err.to_string()))?;
                if at.year() > MAX_YEAR {
                    return Err(once_error(format!("it is after the year {MAX_YEAR}")));
                }
                Ok(Self::Once(crate::timestamp::truncate_to_millis(at)))
            }
        }
    }

    /// The first slot at or after `at` of this schedule set with `origin` as its first slot;
    /// `None` when it will never fire again. A pure function of the stored schedule, so every
    /// scheduler sharing a store computes the same slots: interval slots are
    /// `origin + k * interval` (never before `origin`), cron slots are the cron's times from
    /// `origin` on, and a once has its one time.
    pub fn slot_at_or_after(
        &self,
        origin: OffsetDateTime,
        at: OffsetDateTime,
    ) -> Option<OffsetDateTime> {
        match self {
            Self::Interval(every) => {
                if at <= origin {
                    return Some(origin);
                }
                let every_ms = i128::try_from(every.as_millis()).ok()?.max(1);
                let since = (at - origin).whole_milliseconds();
                // Round up to a whole number of intervals; sub-millisecond parts are not kept
                // in stored times, so millisecond arithmetic is exact.
                let periods = (since + every_ms - 1) / every_ms;
                let offset = i64::try_from(periods * every_ms).ok()?;
                Some(origin + time::Duration::milliseconds(offset))
            }
            Self::Once(when) => (*when >= at).then_some(*when),
            Self::Cron(..) => {
                // Cron times are whole minutes: the next time after one second earlier is the
                // first at or after `at`, unless `at` has a fraction of a second past one.
                let from = at.max(origin);
                let next = self.next_after(from - time::Duration::SECOND)?;
                if next >= from { Some(next) } else { self.next_after(next) }
            }
        }
    }

    /// The first fire time strictly after `after`; `None` when it will never fire again.
    pub fn next_after(&self, after: OffsetDateTime) -> Option<OffsetDateTime> {
        match self {
            Self::Interval(every) => after.checked_add(time::Duration::try_from(*every).ok()?),
            Self::Once(at) => (*at > after).then_some(*at),
            Self::Cron(cron, zone) => {
                let start =
                    chrono::DateTime::from_timestamp(after.unix_timestamp(), after.nanosecond())?
                        .with_timezone(zone);
                let next = cron.find_next_occurrence(&start, false).ok()?;
                OffsetDateTime::from_unix_timestamp(next.timestamp()).ok()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::*;

    #[test]
    fn parses_and_steps_each_kind() {
        let at = datetime!(2026-11-23 10:00:30 UTC);
        let cron = Schedule::parse(ScheduleType::Cron, "*/15 * * * *", None).unwrap();
        assert_eq!(cron.next_after(at), Some(datetime!(2026-11-23 10:15 UTC)));
        let every = Schedule::parse(ScheduleType::Interval, "60000", None).unwrap();
        assert_eq!(every.next_after(at), Some(datetime!(2026-11-23 10:01:30 UTC)));
        let once = Schedule::parse(ScheduleType::Once, "2026-11-24T00:00:00Z", None).unwrap();
        assert_eq!(once.next_after(at), Some(datetime!(2026-11-24 0:00 UTC)));
        assert_eq!(once.next_after(datetime!(2026-12-01 0:00 UTC)), None);
    }

    #[test]
    fn slots_are_fixed_by_the_origin_not_by_when_they_are_asked() {
        let origin = datetime!(2026-11-23 10:00:00.250 UTC);
        let every = Schedule::parse(ScheduleType::Interval, "1000", None).unwrap();
        assert_eq!(every.slot_at_or_after(origin, origin - time::Duration::hours(1)), Some(origin));
        assert_eq!(every.slot_at_or_after(origin, origin), Some(origin));
        assert_eq!(
            every.slot_at_or_after(origin, datetime!(2026-11-23 10:00:05.100 UTC)),
            Some(datetime!(2026-11-23 10:00:05.250 UTC))
        );
        assert_eq!(
            every.slot_at_or_after(origin, datetime!(2026-11-23 10:00:05.251 UTC)),
            Some(datetime!(2026-11-23 10:00:06.250 UTC))
        );
        let cron = Schedule::parse(ScheduleType::Cron, "*/15 * * * *", None).unwrap();
        let quarter = datetime!(2026-11-23 10:15 UTC);
        assert_eq!(cron.slot_at_or_after(origin, quarter), Some(quarter));
        assert_eq!(
            cron.slot_at_or_after(origin, quarter + time::Duration::MILLISECOND),
            Some(datetime!(2026-11-23 10:30 UTC))
        );
        assert_eq!(
            cron.slot_at_or_after(datetime!(2026-11-23 10:20 UTC), quarter),
            Some(datetime!(2026-11-23 10:30 UTC)),
            "no slot before the origin"
        );
        let at = datetime!(2026-11-24 0:00 UTC);
        let once = Schedule::parse(ScheduleType::Once, "2026-11-24T00:00:00Z", None).unwrap();
        assert_eq!(once.slot_at_or_after(origin, at), Some(at));
        assert_eq!(once.slot_at_or_after(origin, at + time::Duration::MILLISECOND), None);
    }

    #[test]
    fn a_once_time_is_kept_to_the_millisecond_as_it_is_stored() {
        let once = Schedule::parse(ScheduleType::Once, "2030-01-01T00:00:00.0005Z", None).unwrap();
        let slot = once.next_after(datetime!(2029-01-01 0:00 UTC)).unwrap();
        assert_eq!(slot, datetime!(2030-01-01 0:00 UTC), "a stored slot reads back equal");
    }

    #[test]
    fn refuses_bad_schedules_with_the_reason() {
        for (kind, value) in [
            (ScheduleType::Cron, "61 * * * *"),
            (ScheduleType::Cron, "* * * * * *"),
            (ScheduleType::Cron, "nonsense"),
            (ScheduleType::Interval, "999"),
            (ScheduleType::Interval, "-5"),
            (ScheduleType::Interval, "1e3"),
            (ScheduleType::Interval, "300000000000000"),
            (ScheduleType::Interval, "18446744073709551615"),
            (ScheduleType::Cron, "0 0 30 2 *"),
            (ScheduleType::Cron, "0 0 31 2,4,6,9,11 *"),
            (ScheduleType::Once, "tomorrow"),
            (ScheduleType::Once, "9999-12-31T23:59:59.999Z"),
            (ScheduleType::Once, "9001-01-01T00:00:00-23:59"),
        ] {
            let err = Schedule::parse(kind, value, None).unwrap_err();
            assert!(err.to_string().contains(value), "{err}");
        }
        assert!(Schedule::parse(ScheduleType::Cron, "0 9 * * *", Some("Mars/Olympus")).is_err());
    }

    #[test]
    fn cron_follows_the_task_timezone() {
        // 09:00 in Paris is 08:00 UTC in winter.
        let paris = Schedule::parse(ScheduleType::Cron, "0 9 * * *", Some("Europe/Paris")).unwrap();
        assert_eq!(
            paris.next_after(datetime!(2026-11-23 10:00 UTC)),
            Some(datetime!(2026-11-24 8:00 UTC))
        );
        let utc = Schedule::parse(ScheduleType::Cron, "0 9 * * *", None).unwrap();
        assert_eq!(
            utc.next_after(datetime!(2026-11-23 10:00 UTC)),
            Some(datetime!(2026-11-24 9:00 UTC))
        );
    }

    #[test]
    fn rare_days_fire_and_far_times_stay_in_range() {
        // 29 February comes every four years; the 31st of a long month every year.
        for cron in ["0 0 29 2 *", "0 0 31 1,2 *", "0 0 L 2 *", "0 0 * 2 1#5"] {
            let schedule = Schedule::parse(ScheduleType::Cron, cron, None).unwrap();
            assert!(schedule.next_after(crate::timestamp::now()).is_some(), "{cron}");
        }
        // The latest once accepted can still be stepped past without overflow.
        let once =
            Schedule::parse(ScheduleType::Once, "9000-12-31T23:59:59.999-23:59", None).unwrap();
        let Schedule::Once(at) = once else { panic!("a once") };
        assert!(at.checked_add(time::Duration::days(366)).is_some());
        assert_eq!(once.slot_at_or_after(at, at), Some(at));
    }
}
