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

    /// `at` as `YYYY-MM-DDTHH:MM:SS.mmmZ`, in UTC.
    pub fn format(at: OffsetDateTime) -> Result<String, time::error::Format> {
        let layout = format_description!(
            "[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z"
        );
        at.to_offset(time::UtcOffset::UTC).format(layout)
    }

    pub fn serialize<S: Serializer>(at: &OffsetDateTime, serializer: S) -> Result<S::Ok, S::Error> {
        let text = format(*at).map_err(serde::ser::Error::custom)?;
        serializer.serialize_str(&text)
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
    fn always_three_fraction_digits_in_utc() {
        let cases = [
            (datetime!(2026-11-23 21:08:15.180 UTC), "2026-11-23T21:08:15.180Z"),
            (datetime!(2026-11-23 21:08:15 UTC), "2026-11-23T21:08:15.000Z"),
            (datetime!(2026-11-23 22:08:15.219 +1), "2026-11-23T21:08:15.219Z"),
        ];
        for (at, text) in cases {
            assert_eq!(rfc3339::format(at).unwrap(), text);
        }
        let back: time::OffsetDateTime =
            rfc3339::deserialize(serde_json::json!("2026-11-23T21:08:15.18Z")).unwrap();
        assert_eq!(back, datetime!(2026-11-23 21:08:15.180 UTC), "older text still reads");
    }
}
