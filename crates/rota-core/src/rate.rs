//! Rate limits: `100/1m` (optionally `100/1m burst 20`), enforced as a token bucket kept as
//! one instant per bucket (the generic cell rate algorithm): the bucket's theoretical arrival
//! time `tat`. A bucket admits a job at `now` when `tat <= now + tolerance`, and each admission
//! moves `tat` one interval (`period / count`) on. With the default burst of 1 the jobs are
//! spread evenly, so no window of one period ever holds more than `count + 1`; a burst of `b`
//! lets `b` go at once after a quiet spell.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::{add_duration, format_duration, parse_duration, sub_duration};

/// A rate: `count` jobs per `period`, `burst` of them at once.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Rate {
    /// Jobs per period (at least 1).
    pub count: u32,
    /// The period (at least 1 ms).
    pub period: Duration,
    /// How many may go at once after a quiet spell (at least 1).
    pub burst: u32,
}

/// Why a rate did not parse.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0} (expected a rate such as \"100/1m\" or \"10/1s burst 5\")")]
pub struct RateParseError(String);

impl Rate {
    /// The time one job uses up: `period / count`.
    pub fn interval(&self) -> Duration {
        self.period / self.count.max(1)
    }

    /// How far ahead of `now` the bucket may run: `(burst - 1)` intervals.
    fn tolerance(&self) -> Duration {
        self.interval() * self.burst.saturating_sub(1)
    }

    /// Admits one job at `now` against a bucket at `tat` (`None`: fresh), returning the new
    /// `tat`, or `None` when the bucket is empty.
    pub fn admit(&self, tat: Option<Timestamp>, now: Timestamp) -> Option<Timestamp> {
        let tat = tat.map_or(now, |t| t.max(now));
        (tat <= add_duration(now, self.tolerance())).then(|| add_duration(tat, self.interval()))
    }

    /// When a bucket at `tat` admits its next job (`now` or earlier: it admits one now).
    pub fn next_admission(&self, tat: Timestamp) -> Timestamp {
        sub_duration(tat, self.tolerance())
    }
}

impl FromStr for Rate {
    type Err = RateParseError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        let (rate, burst) = match text.split_once("burst") {
            Some((rate, burst)) => (rate.trim(), Some(burst.trim())),
            None => (text, None),
        };
        let (count, period) = rate
            .split_once('/')
            .ok_or_else(|| RateParseError(format!("{text:?} has no '/'")))?;
        let count: u32 = count
            .trim()
            .parse()
            .map_err(|_| RateParseError(format!("{:?} is not a whole number", count.trim())))?;
        let period_text = period.trim();
        // "100/m" reads as "100/1m".
        let period = parse_duration(period_text)
            .or_else(|_| parse_duration(&format!("1{period_text}")))
            .map_err(|e| RateParseError(format!("period {period_text:?}: {e}")))?;
        let burst = match burst {
            None => 1,
            Some(b) => b
                .parse()
                .map_err(|_| RateParseError(format!("burst {b:?} is not a whole number")))?,
        };
        if count == 0 {
            return Err(RateParseError("the count must be at least 1".into()));
        }
        if period < Duration::from_millis(1) {
            return Err(RateParseError("the period must be at least 1ms".into()));
        }
        if burst == 0 {
            return Err(RateParseError("the burst must be at least 1".into()));
        }
        Ok(Rate {
            count,
            period,
            burst,
        })
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.count, format_duration(self.period))?;
        if self.burst > 1 {
            write!(f, " burst {}", self.burst)?;
        }
        Ok(())
    }
}

impl Serialize for Rate {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Rate {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        text.parse().map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(ms: i64) -> Timestamp {
        Timestamp::from_millisecond(1_700_000_000_000 + ms).unwrap()
    }

    #[test]
    fn rates_parse_and_print_back() {
        let r: Rate = "100/1m".parse().unwrap();
        assert_eq!(
            (r.count, r.period, r.burst),
            (100, Duration::from_secs(60), 1)
        );
        assert_eq!(r.to_string(), "100/1m");
        let r: Rate = "10/1s burst 5".parse().unwrap();
        assert_eq!(r.burst, 5);
        assert_eq!(r.to_string(), "10/1s burst 5");
        assert_eq!(
            "5/m".parse::<Rate>().unwrap().period,
            Duration::from_secs(60)
        );
        for bad in [
            "",
            "100",
            "0/1s",
            "x/1s",
            "10/0s",
            "10/1s burst 0",
            "10/1s burst x",
        ] {
            let err = bad.parse::<Rate>().unwrap_err().to_string();
            assert!(err.contains("expected a rate such as"), "{bad}: {err}");
        }
    }

    #[test]
    fn a_bucket_spreads_jobs_one_interval_apart() {
        let r: Rate = "10/1s".parse().unwrap();
        let t1 = r.admit(None, at(0)).unwrap();
        assert_eq!(t1, at(100));
        assert_eq!(r.admit(Some(t1), at(50)), None, "the second job waits");
        assert_eq!(r.admit(Some(t1), at(100)), Some(at(200)));
        assert_eq!(r.next_admission(t1), at(100));
    }

    #[test]
    fn a_burst_goes_at_once_then_refills() {
        let r: Rate = "10/1s burst 3".parse().unwrap();
        let mut tat = None;
        for _ in 0..3 {
            tat = Some(r.admit(tat, at(0)).expect("within the burst"));
        }
        assert_eq!(r.admit(tat, at(0)), None);
        assert!(
            r.admit(tat, at(100)).is_some(),
            "one token back after an interval"
        );
    }

    #[test]
    fn no_window_of_one_period_exceeds_count_plus_burst() {
        let r: Rate = "10/1s burst 4".parse().unwrap();
        let mut tat = None;
        let mut admitted = Vec::new();
        for ms in (0..5_000).step_by(7) {
            if let Some(next) = r.admit(tat, at(ms)) {
                tat = Some(next);
                admitted.push(ms);
            }
        }
        for (i, start) in admitted.iter().enumerate() {
            let inside = admitted[i..]
                .iter()
                .take_while(|t| **t < start + 1000)
                .count();
            assert!(
                inside as u32 <= r.count + r.burst,
                "{inside} in the window at {start}"
            );
        }
        assert!(
            admitted.len() >= 50,
            "about 10 per second over 5 s: {}",
            admitted.len()
        );
    }
}
