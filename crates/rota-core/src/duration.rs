//! Humane durations (`30s`, `5m`, `1h 30m`) at the edges; `std::time::Duration` inside.

use std::time::Duration;

use jiff::SignedDuration;

/// A duration string that could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid duration {input:?}: expected a positive duration such as 30s, 5m, 1h 30m or 7d")]
pub struct DurationParseError {
    /// What was given.
    pub input: String,
}

/// Reads `30s`, `1.5s`, `250ms`, `5m`, `1h 30m`, `7d`, `2w` or ISO 8601 `PT30S`; a day is 24
/// hours and a week 7 days (retentions and horizons are written in days); negative values
/// are refused.
pub fn parse_duration(input: &str) -> Result<Duration, DurationParseError> {
    let err = || DurationParseError {
        input: input.to_owned(),
    };
    let text = input.trim();
    let signed: SignedDuration = match text.parse() {
        Ok(signed) => signed,
        Err(_) => {
            let span: jiff::Span = text.parse().map_err(|_| err())?;
            if span.get_years() != 0 || span.get_months() != 0 {
                return Err(err());
            }
            span.to_duration(jiff::SpanRelativeTo::days_are_24_hours())
                .map_err(|_| err())?
        }
    };
    Duration::try_from(signed).map_err(|_| err())
}

/// [`parse_duration`] for an input `field`: the error names the field, as every
/// [`crate::ValidationError`] does.
pub fn parse_duration_field(field: &str, raw: &str) -> Result<Duration, crate::ValidationError> {
    parse_duration(raw).map_err(|e| crate::ValidationError::new(field, e.to_string()))
}

/// Writes a duration the way [`parse_duration`] reads it, e.g. `1m 30s`, `250ms`, or `7d`
/// for a whole number of days (two days or more; `24h` stays `24h`).
pub fn format_duration(d: Duration) -> String {
    const DAY: u64 = 86_400;
    if d.subsec_nanos() == 0 && d.as_secs() >= 2 * DAY && d.as_secs() % DAY == 0 {
        return format!("{}d", d.as_secs() / DAY);
    }
    match SignedDuration::try_from(d) {
        Ok(signed) => format!("{signed:#}"),
        Err(_) => format!("{}s", d.as_secs()),
    }
}

/// Serde helpers so that durations travel as humane strings:
/// `#[serde(with = "rota_core::serde_humane")]` (also `::option` and `::list`).
pub mod serde_humane {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    /// Writes a duration as a humane string.
    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&super::format_duration(*d))
    }

    /// Reads a humane duration string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        let raw = String::deserialize(d)?;
        super::parse_duration(&raw).map_err(serde::de::Error::custom)
    }

    /// The same for `Option<Duration>`.
    pub mod option {
        use std::time::Duration;

        use serde::{Deserialize, Deserializer, Serializer};

        /// Writes an optional duration.
        pub fn serialize<S: Serializer>(d: &Option<Duration>, s: S) -> Result<S::Ok, S::Error> {
            match d {
                Some(d) => super::serialize(d, s),
                None => s.serialize_none(),
            }
        }

        /// Reads an optional duration.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
            Option::<String>::deserialize(d)?
                .map(|raw| super::super::parse_duration(&raw).map_err(serde::de::Error::custom))
                .transpose()
        }
    }

    /// The same for `Vec<Duration>`.
    pub mod list {
        use std::time::Duration;

        use serde::{ser::SerializeSeq, Deserialize, Deserializer, Serializer};

        /// Writes a list of durations.
        pub fn serialize<S: Serializer>(list: &[Duration], s: S) -> Result<S::Ok, S::Error> {
            let mut seq = s.serialize_seq(Some(list.len()))?;
            for d in list {
                seq.serialize_element(&super::super::format_duration(*d))?;
            }
            seq.end()
        }

        /// Reads a list of durations.
        pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Duration>, D::Error> {
            Vec::<String>::deserialize(d)?
                .iter()
                .map(|raw| super::super::parse_duration(raw).map_err(serde::de::Error::custom))
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn days_and_weeks_are_24_hours_and_7_days() {
        assert_eq!(
            parse_duration("7d").unwrap(),
            Duration::from_secs(7 * 86_400)
        );
        assert_eq!(
            parse_duration("2w").unwrap(),
            Duration::from_secs(14 * 86_400)
        );
        assert_eq!(
            parse_duration("1d 12h").unwrap(),
            Duration::from_secs(36 * 3600)
        );
        assert_eq!(format_duration(Duration::from_secs(30 * 86_400)), "30d");
        assert_eq!(format_duration(Duration::from_secs(86_400)), "24h");
        assert_eq!(
            parse_duration(&format_duration(Duration::from_secs(30 * 86_400))).unwrap(),
            Duration::from_secs(30 * 86_400)
        );
        assert!(parse_duration("1y").is_err(), "years vary in length");
        assert!(parse_duration("-1d").is_err());
    }

    #[test]
    fn humane_durations_round_trip() {
        for (text, d) in [
            ("30s", Duration::from_secs(30)),
            ("1h 30m", Duration::from_secs(5400)),
            ("250ms", Duration::from_millis(250)),
        ] {
            assert_eq!(parse_duration(text).unwrap(), d, "{text}");
            assert_eq!(parse_duration(&format_duration(d)).unwrap(), d);
        }
    }

    #[test]
    fn negative_and_garbage_durations_are_refused_with_the_input_named() {
        for bad in ["-5s", "soon", ""] {
            let err = parse_duration(bad).unwrap_err();
            assert!(err.to_string().contains(&format!("{bad:?}")), "{err}");
        }
    }
}
