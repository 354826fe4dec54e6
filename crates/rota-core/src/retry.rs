//! Retry policies: how many attempts a job gets and how long it waits between them.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::duration::serde_humane;

/// Attempts a job gets unless its job, kind or queue says otherwise.
pub const MAX_ATTEMPTS_DEFAULT: u32 = 20;
/// First exponential delay.
pub const BACKOFF_INITIAL_DEFAULT: Duration = Duration::from_secs(15);
/// Growth factor of the exponential backoff.
pub const BACKOFF_FACTOR_DEFAULT: f64 = 2.0;
/// Cap of the exponential backoff.
pub const BACKOFF_MAX_DEFAULT: Duration = Duration::from_secs(3600);
/// Jitter of the exponential backoff, as a fraction (0.2 = ±20 %).
pub const BACKOFF_JITTER_DEFAULT: f64 = 0.2;

/// How long a failed job waits before its next attempt.
///
/// Written as `{"exponential": {...}}`, `{"fixed": {"interval": "10s"}}`,
/// `{"intervals": ["30s", "1m"]}`, or just the list of intervals (`["30s", "60s", "120s"]`,
/// the form users write first, as the CLI's `--backoff 30s,60s,120s`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Backoff {
    /// `initial * factor^(attempt-1)`, capped at `max`, spread by ±`jitter`.
    Exponential {
        /// The first delay.
        #[serde(with = "serde_humane")]
        initial: Duration,
        /// Growth per attempt (at least 1).
        factor: f64,
        /// The longest delay.
        #[serde(with = "serde_humane")]
        max: Duration,
        /// Fraction of spread, 0.0..=1.0.
        jitter: f64,
    },
    /// The same delay after every failure.
    Fixed {
        /// The delay.
        #[serde(with = "serde_humane")]
        interval: Duration,
    },
    /// Explicit delays: the n-th failure waits the n-th interval; the last one repeats.
    Intervals(#[serde(with = "serde_humane::list")] Vec<Duration>),
}

/// The tagged forms of [`Backoff`], as serde derives them.
#[derive(Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
enum TaggedBackoff {
    /// `initial * factor^(attempt-1)`, capped at `max`, spread by ±`jitter`.
    Exponential {
        /// The first delay.
        #[serde(with = "serde_humane")]
        initial: Duration,
        /// Growth per attempt (at least 1).
        factor: f64,
        /// The longest delay.
        #[serde(with = "serde_humane")]
        max: Duration,
        /// Fraction of spread, 0.0..=1.0.
        jitter: f64,
    },
    /// The same delay after every failure.
    Fixed {
        /// The delay.
        #[serde(with = "serde_humane")]
        interval: Duration,
    },
    /// Explicit delays: the n-th failure waits the n-th interval; the last one repeats.
    Intervals(#[serde(with = "serde_humane::list")] Vec<Duration>),
}

impl From<TaggedBackoff> for Backoff {
    fn from(tagged: TaggedBackoff) -> Self {
        match tagged {
            TaggedBackoff::Exponential {
                initial,
                factor,
                max,
                jitter,
            } => Backoff::Exponential {
                initial,
                factor,
                max,
                jitter,
            },
            TaggedBackoff::Fixed { interval } => Backoff::Fixed { interval },
            TaggedBackoff::Intervals(list) => Backoff::Intervals(list),
        }
    }
}

impl<'de> Deserialize<'de> for Backoff {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct Forms;
        impl<'de> serde::de::Visitor<'de> for Forms {
            type Value = Backoff;

            fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str(
                    "a list of intervals such as [\"30s\", \"60s\"], {intervals = [...]}, {fixed = {interval = \"10s\"}} or {exponential = {initial = \"15s\", factor = 2.0, max = \"1h\", jitter = 0.2}}",
                )
            }

            fn visit_seq<A: serde::de::SeqAccess<'de>>(
                self,
                mut seq: A,
            ) -> Result<Backoff, A::Error> {
                let mut list = Vec::new();
                while let Some(raw) = seq.next_element::<String>()? {
                    list.push(crate::parse_duration(&raw).map_err(serde::de::Error::custom)?);
                }
                Ok(Backoff::Intervals(list))
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(self, map: A) -> Result<Backoff, A::Error> {
                TaggedBackoff::deserialize(serde::de::value::MapAccessDeserializer::new(map))
                    .map(Backoff::from)
            }

            fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<Backoff, E> {
                Err(E::invalid_value(serde::de::Unexpected::Str(v), &self))
            }
        }
        d.deserialize_any(Forms)
    }
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff::Exponential {
            initial: BACKOFF_INITIAL_DEFAULT,
            factor: BACKOFF_FACTOR_DEFAULT,
            max: BACKOFF_MAX_DEFAULT,
            jitter: BACKOFF_JITTER_DEFAULT,
        }
    }
}

impl Backoff {
    /// The delay after failed attempt number `attempt` (1-based). `seed` makes the jitter
    /// deterministic per job (pass [`crate::JobId::seed`]), so the function stays pure.
    pub fn delay(&self, attempt: u32, seed: u64) -> Duration {
        let attempt = attempt.max(1);
        match self {
            Backoff::Fixed { interval } => *interval,
            Backoff::Intervals(list) => {
                let i = (attempt as usize - 1).min(list.len().saturating_sub(1));
                list.get(i).copied().unwrap_or_default()
            }
            Backoff::Exponential {
                initial,
                factor,
                max,
                jitter,
            } => {
                let exponent = (attempt - 1).min(64) as i32;
                let base = (initial.as_secs_f64() * factor.powi(exponent)).min(max.as_secs_f64());
                // A number in [-1, 1) from the seed and the attempt.
                let unit = (splitmix64(seed ^ u64::from(attempt)) >> 11) as f64
                    / (1u64 << 53) as f64
                    * 2.0
                    - 1.0;
                let spread = base * jitter.clamp(0.0, 1.0) * unit;
                Duration::from_secs_f64((base + spread).max(0.0))
            }
        }
    }

    /// Checks the parameters, naming the field that is wrong.
    pub fn validate(&self) -> Result<(), crate::ValidationError> {
        use crate::ValidationError as E;
        match self {
            Backoff::Exponential {
                factor,
                jitter,
                initial,
                max,
            } => {
                if !(factor.is_finite() && *factor >= 1.0) {
                    return Err(E::new(
                        "backoff.factor",
                        format!("must be a number of at least 1, got {factor}"),
                    ));
                }
                if !(0.0..=1.0).contains(jitter) {
                    return Err(E::new(
                        "backoff.jitter",
                        format!("must be between 0 and 1, got {jitter}"),
                    ));
                }
                if max < initial {
                    return Err(E::new(
                        "backoff.max",
                        "must not be shorter than backoff.initial",
                    ));
                }
                Ok(())
            }
            Backoff::Fixed { .. } => Ok(()),
            Backoff::Intervals(list) if list.is_empty() => Err(E::new(
                "backoff.intervals",
                "must list at least one interval, such as [\"30s\", \"60s\"]",
            )),
            Backoff::Intervals(_) => Ok(()),
        }
    }
}

/// Over how long the jobs of one rescue are spread, on top of their backoff.
pub const RESCUE_SPREAD: Duration = Duration::from_secs(5);

/// How much later than its backoff a rescued job (its worker stopped heartbeating) is offered
/// again: a share of [`RESCUE_SPREAD`] drawn from the job's seed and attempt. A lost worker
/// usually leaves many jobs at once; without the spread, the rescue would offer them all in
/// the same instant (a thundering herd onto the remaining workers), and jobs that shared a
/// worker with a job that kills it would be fetched with it again and again, dying beside
/// it (issue 15's R6 found three innocent jobs dead after five crashes).
pub fn rescue_spread(seed: u64, attempt: u32) -> Duration {
    // Decorrelated from the backoff's own jitter (which uses `seed ^ attempt`).
    let unit =
        (splitmix64(splitmix64(seed) ^ u64::from(attempt)) >> 11) as f64 / (1u64 << 53) as f64;
    RESCUE_SPREAD.mul_f64(unit)
}

fn splitmix64(mut x: u64) -> u64 {
    x = x.wrapping_add(0x9E37_79B9_7F4A_7C15);
    x = (x ^ (x >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    x = (x ^ (x >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    x ^ (x >> 31)
}

/// A complete retry policy: what a job is given once every layer has been resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RetryPolicy {
    /// Total attempts, the first included (at least 1).
    pub max_attempts: u32,
    /// Delay between attempts.
    pub backoff: Backoff,
}

impl Default for RetryPolicy {
    /// 20 attempts, exponential from 15 s doubling to a 1 h cap, ±20 % jitter.
    fn default() -> Self {
        Self {
            max_attempts: MAX_ATTEMPTS_DEFAULT,
            backoff: Backoff::default(),
        }
    }
}

/// One layer of retry settings (job, kind or queue); unset fields fall through to the next.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetryOverride {
    /// Total attempts, if this layer sets them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Backoff, if this layer sets it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backoff: Option<Backoff>,
}

impl RetryOverride {
    /// Whether this layer sets nothing.
    pub fn is_empty(&self) -> bool {
        self.max_attempts.is_none() && self.backoff.is_none()
    }

    /// Checks the values this layer sets.
    pub fn validate(&self) -> Result<(), crate::ValidationError> {
        if self.max_attempts == Some(0) {
            return Err(crate::ValidationError::new(
                "max_attempts",
                "must be at least 1 (the first attempt counts)",
            ));
        }
        self.backoff.as_ref().map_or(Ok(()), Backoff::validate)
    }
}

impl RetryPolicy {
    /// The effective policy: each field from the most specific layer that sets it, in the
    /// order job > kind > queue > server default. The result is stored on the job, so what
    /// runs is what was resolved at enqueue, whatever changes later.
    pub fn resolve(
        job: &RetryOverride,
        kind: Option<&RetryOverride>,
        queue: Option<&RetryOverride>,
        default: &RetryPolicy,
    ) -> RetryPolicy {
        let layers = [Some(job), kind, queue];
        let max_attempts = layers
            .iter()
            .flatten()
            .find_map(|layer| layer.max_attempts)
            .unwrap_or(default.max_attempts);
        let backoff = layers
            .iter()
            .flatten()
            .find_map(|layer| layer.backoff.clone())
            .unwrap_or_else(|| default.backoff.clone());
        RetryPolicy {
            max_attempts,
            backoff,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_list_of_durations_is_explicit_intervals() {
        let list: Backoff = serde_json::from_str(r#"["30s", "60s", "120s"]"#).unwrap();
        assert_eq!(
            list,
            Backoff::Intervals(vec![
                Duration::from_secs(30),
                Duration::from_secs(60),
                Duration::from_secs(120)
            ])
        );
        let tagged: Backoff =
            serde_json::from_str(r#"{"intervals": ["30s", "60s", "120s"]}"#).unwrap();
        assert_eq!(tagged, list);
        let fixed: Backoff = serde_json::from_str(r#"{"fixed": {"interval": "10s"}}"#).unwrap();
        assert_eq!(
            fixed,
            Backoff::Fixed {
                interval: Duration::from_secs(10)
            }
        );
        let err = serde_json::from_str::<Backoff>(r#""30s""#)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("a list of intervals") && err.contains("exponential"),
            "{err}"
        );
        let err = serde_json::from_str::<Backoff>(r#"{"fixed": {"interval": "10s", "x": 1}}"#)
            .unwrap_err()
            .to_string();
        assert!(err.contains("unknown field"), "{err}");
    }

    #[test]
    fn intervals_are_used_in_order_and_the_last_repeats() {
        let b = Backoff::Intervals(vec![
            Duration::from_secs(30),
            Duration::from_secs(60),
            Duration::from_secs(120),
        ]);
        let delays: Vec<u64> = (1..=5).map(|n| b.delay(n, 7).as_secs()).collect();
        assert_eq!(delays, [30, 60, 120, 120, 120]);
    }

    #[test]
    fn exponential_doubles_up_to_its_cap_within_jitter() {
        let b = Backoff::default();
        for attempt in 1..=12 {
            let base = (15.0 * 2f64.powi(attempt as i32 - 1)).min(3600.0);
            for seed in 0..50 {
                let d = b.delay(attempt, seed).as_secs_f64();
                assert!(
                    d >= base * 0.8 - 1e-9 && d <= base * 1.2 + 1e-9,
                    "{attempt}: {d}"
                );
            }
        }
        // The jitter really spreads: not every seed gives the same delay.
        assert_ne!(b.delay(3, 1), b.delay(3, 2));
        // And it is a pure function of its inputs.
        assert_eq!(b.delay(3, 1), b.delay(3, 1));
    }

    #[test]
    fn resolution_takes_each_field_from_the_most_specific_layer() {
        let job = RetryOverride {
            max_attempts: Some(3),
            backoff: None,
        };
        let kind = RetryOverride {
            max_attempts: Some(9),
            backoff: Some(Backoff::Fixed {
                interval: Duration::from_secs(5),
            }),
        };
        let queue = RetryOverride {
            max_attempts: Some(11),
            backoff: Some(Backoff::Intervals(vec![Duration::from_secs(1)])),
        };
        let resolved =
            RetryPolicy::resolve(&job, Some(&kind), Some(&queue), &RetryPolicy::default());
        assert_eq!(resolved.max_attempts, 3);
        assert_eq!(resolved.backoff, kind.backoff.clone().unwrap());

        let resolved = RetryPolicy::resolve(
            &RetryOverride::default(),
            None,
            Some(&queue),
            &RetryPolicy::default(),
        );
        assert_eq!(resolved.max_attempts, 11);
        let resolved = RetryPolicy::resolve(
            &RetryOverride::default(),
            None,
            None,
            &RetryPolicy::default(),
        );
        assert_eq!(resolved, RetryPolicy::default());
    }

    #[test]
    fn policies_serialize_with_humane_durations() {
        let policy = RetryPolicy {
            max_attempts: 3,
            backoff: Backoff::Intervals(vec![Duration::from_secs(30), Duration::from_secs(60)]),
        };
        let json = serde_json::to_string(&policy).unwrap();
        assert_eq!(
            json,
            r#"{"max_attempts":3,"backoff":{"intervals":["30s","1m"]}}"#
        );
        assert_eq!(serde_json::from_str::<RetryPolicy>(&json).unwrap(), policy);
    }

    #[test]
    fn invalid_backoffs_name_their_field() {
        let bad = Backoff::Exponential {
            initial: Duration::from_secs(1),
            factor: 0.5,
            max: Duration::from_secs(10),
            jitter: 0.1,
        };
        assert_eq!(bad.validate().unwrap_err().field, "backoff.factor");
        assert_eq!(
            Backoff::Intervals(vec![]).validate().unwrap_err().field,
            "backoff.intervals"
        );
    }
}
