//! How a job's effective backoff is stored: a short text, not the JSON document.
//!
//! Every job row carries its backoff, and the default policy as JSON
//! (`{"exponential":{"initial":"15s","factor":2.0,"max":"1h","jitter":0.2}}`) is 70 bytes
//! of every row; written compactly (`exp:15s,2,1h,0.2`) it is 16. Smaller rows mean
//! fewer bytes copied and fewer pages per batch on every state change. Rows written before
//! schema 8 hold JSON; both forms are read.
//!
//! - `exp:<initial>,<factor>,<max>,<jitter>`
//! - `fixed:<interval>`
//! - `at:<interval>,<interval>,…` (the explicit list; empty after the colon for none)
//!
//! Durations are written by [`format_duration`] (no commas in its output) and read by
//! [`parse_duration`]; factors and jitters by Rust's shortest round-tripping float format.

use std::time::Duration;

use rota_core::{format_duration, parse_duration, Backoff};

/// The stored form of `backoff`.
pub(crate) fn backoff_to_text(backoff: &Backoff) -> String {
    match backoff {
        Backoff::Exponential {
            initial,
            factor,
            max,
            jitter,
        } => format!(
            "exp:{},{factor},{},{jitter}",
            format_duration(*initial),
            format_duration(*max)
        ),
        Backoff::Fixed { interval } => format!("fixed:{}", format_duration(*interval)),
        Backoff::Intervals(list) => {
            let list: Vec<String> = list.iter().map(|d| format_duration(*d)).collect();
            format!("at:{}", list.join(","))
        }
    }
}

/// Reads a stored backoff in either form; `None` when it is neither.
pub(crate) fn backoff_from_stored(raw: &str) -> Option<Backoff> {
    if raw.starts_with('{') || raw.starts_with('[') {
        return serde_json::from_str(raw).ok();
    }
    let (form, rest) = raw.split_once(':')?;
    let duration = |s: &str| parse_duration(s).ok();
    match form {
        "exp" => {
            let mut parts = rest.split(',');
            let backoff = Backoff::Exponential {
                initial: duration(parts.next()?)?,
                factor: parts.next()?.parse().ok()?,
                max: duration(parts.next()?)?,
                jitter: parts.next()?.parse().ok()?,
            };
            parts.next().is_none().then_some(backoff)
        }
        "fixed" => Some(Backoff::Fixed {
            interval: duration(rest)?,
        }),
        "at" if rest.is_empty() => Some(Backoff::Intervals(Vec::new())),
        "at" => rest
            .split(',')
            .map(duration)
            .collect::<Option<Vec<Duration>>>()
            .map(Backoff::Intervals),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn round_trip(backoff: Backoff) {
        let text = backoff_to_text(&backoff);
        assert_eq!(backoff_from_stored(&text), Some(backoff), "{text}");
    }

    #[test]
    fn every_form_reads_back_as_written() {
        round_trip(Backoff::default());
        round_trip(Backoff::Exponential {
            initial: Duration::from_nanos(1_500_000_001),
            factor: 1.1,
            max: Duration::from_secs(90 * 86_400 + 5400),
            jitter: 0.0,
        });
        round_trip(Backoff::Fixed {
            interval: Duration::from_millis(250),
        });
        round_trip(Backoff::Intervals(vec![
            Duration::from_secs(30),
            Duration::from_secs(90),
            Duration::from_secs(7200),
        ]));
        round_trip(Backoff::Intervals(Vec::new()));
    }

    #[test]
    fn the_default_policy_is_short() {
        assert_eq!(backoff_to_text(&Backoff::default()), "exp:15s,2,1h,0.2");
    }

    #[test]
    fn rows_written_as_json_still_read() {
        let json = serde_json::to_string(&Backoff::default()).unwrap();
        assert_eq!(backoff_from_stored(&json), Some(Backoff::default()));
        assert_eq!(
            backoff_from_stored(r#"["30s","1m"]"#),
            Some(Backoff::Intervals(vec![
                Duration::from_secs(30),
                Duration::from_secs(60)
            ]))
        );
    }

    #[test]
    fn anything_else_is_refused() {
        for raw in [
            "",
            "exp:15s,2,1h",
            "exp:15s,2,1h,0.2,9",
            "fixed:soon",
            "linear:1s",
        ] {
            assert_eq!(backoff_from_stored(raw), None, "{raw:?}");
        }
    }
}
