//! The enumerations of the wire, with their schemas: a client generated from the OpenAPI
//! document gets enums, not strings. Job states, misfire policies and schedule sources are
//! the core's types (with the core's `schema` feature); severity and the backoff schema are
//! defined here.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// What a schedule does with slots missed while no scheduler ran.
pub use rota_core::schedule::MisfirePolicy;
/// Where a schedule comes from: `config` (rota.toml, reconciled at start-up) or `api`.
pub use rota_core::schedule::ScheduleSource;
/// A job's state: the core's own type, which carries its schema.
pub use rota_core::JobState;

/// How much a doctor finding needs action.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Severity {
    /// Nothing to do.
    Ok,
    /// Needs attention; the system still runs.
    Warn,
    /// Broken.
    Fail,
}

impl Severity {
    /// `ok`, `warn` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Warn => "warn",
            Severity::Fail => "fail",
        }
    }
}

/// The schema of a backoff (the value itself is `rota_core::Backoff`): a bare list of
/// intervals (`["30s", "60s"]`), or one of the tagged forms.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum BackoffSchema {
    /// Explicit delays: the n-th failure waits the n-th interval; the last one repeats.
    List(Vec<String>),
    /// One of the tagged forms.
    Tagged(BackoffForm),
}

/// The tagged forms of a backoff.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackoffForm {
    /// `initial * factor^(attempt-1)`, capped at `max`, spread by ±`jitter`.
    Exponential(ExponentialBackoff),
    /// The same delay after every failure.
    Fixed(FixedBackoff),
    /// Explicit delays: the n-th failure waits the n-th interval; the last one repeats.
    Intervals(Vec<String>),
}

/// An exponential backoff: `initial * factor^(attempt-1)`, capped at `max`, spread by
/// ±`jitter`. (Named, so that generated clients get one model for it.)
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ExponentialBackoff {
    /// The first delay, such as `15s`.
    pub initial: String,
    /// Growth per attempt (at least 1).
    pub factor: f64,
    /// The longest delay, such as `1h`.
    pub max: String,
    /// Fraction of spread, 0.0..=1.0.
    pub jitter: f64,
}

/// A fixed backoff: the same delay after every failure.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FixedBackoff {
    /// The delay, such as `10s`.
    pub interval: String,
}
