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

/// Serde for `OffsetDateTime` as RFC 3339 UTC text with exactly three fraction digits
/// (`2026-11-23T21:08:15.180Z`). `time`'s own RFC 3339 drops trailing zeros (`.18Z`), and
/// then timestamps do not sort as strings; reading accepts any RFC 3339 text, so records
/// written before keep loading.
pub mod rfc3339 {
    use serde::{Deserialize, Deserializer, Serializer};
    use time::OffsetDateTime;
    use time::format_description::well_known::Rfc3339;
    use time::macros::format_description;

    /// The length of `YYYY-MM-DDTHH:MM:SS.mmmZ`.
    const LEN: usize = 24;

    /// `at` as `YYYY-MM-DDTHH:MM:SS.mmmZ`, in UTC.
    pub fn format(at: OffsetDateTime) -> Result<String, time::error::Format> {
        match write(at) {
            Some(bytes) => Ok(String::from_utf8_lossy(&bytes).into_owned()),
            None => format_slowly(at),
        }
    }

    /// `time`'s formatter, for the years [`write`] does not take.
    fn format_slowly(at: OffsetDateTime) -> Result<String, time::error::Format> {
        let layout = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        at.to_offset(time::UtcOffset::UTC).format(layout)
    }

    /// `at`'s text written into a buffer on the stack, for years 0 to 9999 (every timestamp
    /// Orbit makes): listings write several timestamps per record, and `time`'s formatter,
    /// which interprets its layout and allocates a `String` each time, was a measurable part of
    /// answering them (docs/benchmarks.md). `None` for other years.
    fn write(at: OffsetDateTime) -> Option<[u8; LEN]> {
        let at = at.to_offset(time::UtcOffset::UTC);
        let year = u16::try_from(at.year()).ok().filter(|year| *year <= 9999)?;
        let mut out = *b"0000-00-00T00:00:00.000Z";
        let mut put = |at: usize, width: usize, mut value: u16| {
            for index in (at..at + width).rev() {
                out[index] = b'0' + (value % 10) as u8;
                value /= 10;
            }
        };
        put(0, 4, year);
        put(5, 2, u16::from(u8::from(at.month())));
        put(8, 2, u16::from(at.day()));
        put(11, 2, u16::from(at.hour()));
        put(14, 2, u16::from(at.minute()));
        put(17, 2, u16::from(at.second()));
        put(20, 3, at.millisecond());
        Some(out)
    }

    pub fn serialize<S: Serializer>(at: &OffsetDateTime, serializer: S) -> Result<S::Ok, S::Error> {
        match write(*at) {
            // Only ASCII digits and separators were written.
            Some(bytes) => {
                serializer.serialize_str(std::str::from_utf8(&bytes).unwrap_or_default())
            }
            None => {
                let text = format_slowly(*at).map_err(serde::ser::Error::custom)?;
                serializer.serialize_str(&text)
            }
        }
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<OffsetDateTime, D::Error> {
        let text = String::deserialize(deserializer)?;
        OffsetDateTime::parse(&text, &Rfc3339).map_err(serde::de::Error::custom)
    }

    /// The same for an `Option<OffsetDateTime>` (`null` when absent).
    pub mod option {
        use serde::{Deserialize, Deserializer, Serializer};
        use time::OffsetDateTime;

        pub fn serialize<S: Serializer>(
            at: &Option<OffsetDateTime>,
            serializer: S,
        ) -> Result<S::Ok, S::Error> {
            match at {
                Some(at) => super::serialize(at, serializer),
                None => serializer.serialize_none(),
            }
        }

        pub fn deserialize<'de, D: Deserializer<'de>>(
            deserializer: D,
        ) -> Result<Option<OffsetDateTime>, D::Error> {
            #[derive(Deserialize)]
            struct Wrapped(#[serde(with = "super")] OffsetDateTime);
            Ok(Option::<Wrapped>::deserialize(deserializer)?.map(|Wrapped(at)| at))
        }
    }
}

#[cfg(test)]
mod tests {
    use time::macros::datetime;

    use super::rfc3339;

    #[test]
    fn the_fast_text_is_what_times_formatter_writes() {
        let layout = time::macros::format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        let mut at = datetime!(0000-01-01 00:00:00.000 UTC);
        // A prime step in seconds and milliseconds, through every field's digits.
        let step = time::Duration::seconds(86_413 * 37) + time::Duration::milliseconds(7);
        while at.year() <= 9999 {
            assert_eq!(rfc3339::format(at).unwrap(), at.format(layout).unwrap());
            let text = serde_json::to_string(&Wrapped(at)).unwrap();
            assert_eq!(text, format!("\"{}\"", at.format(layout).unwrap()));
            match at.checked_add(step) {
                Some(next) => at = next,
                None => break,
            }
        }
    }

    #[derive(serde::Serialize)]
    struct Wrapped(#[serde(with = "rfc3339")] time::OffsetDateTime);

    #[test]
    fn always_three_fraction_digits_in_utc() {
        let cases = [
            (datetime!(2026-11-23 21:08:15.180 UTC), "2026-11-23T21:08:15.180Z"),
            (datetime!(2026-11-23 21:08:15 UTC), "2026-11-23T21:08:15.000Z"),
            (datetime!(2026-11-23 22:08:15.219 +1), "2026-11-23T21:08:15.219Z"),
        ];
        for (at, text) in cases {
            assert_eq!(rfc3339::format(at).unwrap(), text);
        }
        let before_year_zero = datetime!(-0001-12-31 23:59:59.999 UTC);
        assert_eq!(rfc3339::format(before_year_zero).unwrap(), "-0001-12-31T23:59:59.999Z");
        let back: time::OffsetDateTime =
            rfc3339::deserialize(serde_json::json!("2026-11-23T21:08:15.18Z")).unwrap();
        assert_eq!(back, datetime!(2026-11-23 21:08:15.180 UTC), "older text still reads");
    }
}
