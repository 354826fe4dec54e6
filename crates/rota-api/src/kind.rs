//! The enumerations of the wire, with their schemas: a client generated from the OpenAPI
//! document gets enums, not strings.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// A job's state.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    /// Waiting for its run_at.
    Scheduled,
    /// Ready to be fetched.
    Available,
    /// Leased by a worker.
    Running,
    /// Failed; waiting for its backoff.
    Retryable,
    /// Finished successfully.
    Completed,
    /// Out of attempts, or discarded.
    Dead,
    /// Cancelled.
    Cancelled,
}

impl JobState {
    /// The state's name, as on the wire.
    pub fn as_str(self) -> &'static str {
        rota_core::JobState::from(self).as_str()
    }
}

impl std::fmt::Display for JobState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl From<rota_core::JobState> for JobState {
    fn from(state: rota_core::JobState) -> Self {
        use rota_core::JobState as S;
        match state {
            S::Scheduled => Self::Scheduled,
            S::Available => Self::Available,
            S::Running => Self::Running,
            S::Retryable => Self::Retryable,
            S::Completed => Self::Completed,
            S::Dead => Self::Dead,
            S::Cancelled => Self::Cancelled,
        }
    }
}

impl From<JobState> for rota_core::JobState {
    fn from(state: JobState) -> Self {
        use rota_core::JobState as S;
        match state {
            JobState::Scheduled => S::Scheduled,
            JobState::Available => S::Available,
            JobState::Running => S::Running,
            JobState::Retryable => S::Retryable,
            JobState::Completed => S::Completed,
            JobState::Dead => S::Dead,
            JobState::Cancelled => S::Cancelled,
        }
    }
}

impl PartialEq<&str> for JobState {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

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

/// What a schedule does with slots missed while no scheduler ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Misfire {
    /// None of them.
    Skip,
    /// One catch-up run for the most recent missed slot (the default).
    Latest,
    /// Every missed slot within the backfill window, oldest first.
    All,
}

impl From<rota_core::schedule::MisfirePolicy> for Misfire {
    fn from(policy: rota_core::schedule::MisfirePolicy) -> Self {
        use rota_core::schedule::MisfirePolicy as P;
        match policy {
            P::Skip => Self::Skip,
            P::Latest => Self::Latest,
            P::All => Self::All,
        }
    }
}

impl From<Misfire> for rota_core::schedule::MisfirePolicy {
    fn from(misfire: Misfire) -> Self {
        use rota_core::schedule::MisfirePolicy as P;
        match misfire {
            Misfire::Skip => P::Skip,
            Misfire::Latest => P::Latest,
            Misfire::All => P::All,
        }
    }
}

impl std::fmt::Display for Misfire {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Misfire::Skip => "skip",
            Misfire::Latest => "latest",
            Misfire::All => "all",
        })
    }
}

impl std::str::FromStr for Misfire {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.parse::<rota_core::schedule::MisfirePolicy>().map(Into::into)
    }
}

/// Where a schedule comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum ScheduleSource {
    /// `[[schedule]]` in rota.toml (reconciled at start-up).
    Config,
    /// Created through the API or CLI.
    Api,
}

impl From<rota_core::schedule::ScheduleSource> for ScheduleSource {
    fn from(source: rota_core::schedule::ScheduleSource) -> Self {
        match source {
            rota_core::schedule::ScheduleSource::Config => Self::Config,
            rota_core::schedule::ScheduleSource::Api => Self::Api,
        }
    }
}

impl std::fmt::Display for ScheduleSource {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            ScheduleSource::Config => "config",
            ScheduleSource::Api => "api",
        })
    }
}

impl JobState {
    /// Whether the job is done (completed, dead or cancelled).
    pub fn is_final(self) -> bool {
        rota_core::JobState::from(self).is_final()
    }
}

/// The schema of a backoff (the value itself is `rota_core::Backoff`): one of
/// `{"exponential": {...}}`, `{"fixed": {"interval": "10s"}}` or `{"intervals": ["30s", "1m"]}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum BackoffSchema {
    /// `initial * factor^(attempt-1)`, capped at `max`, spread by ±`jitter`.
    Exponential {
        /// The first delay, such as `15s`.
        initial: String,
        /// Growth per attempt (at least 1).
        factor: f64,
        /// The longest delay, such as `1h`.
        max: String,
        /// Fraction of spread, 0.0..=1.0.
        jitter: f64,
    },
    /// The same delay after every failure.
    Fixed {
        /// The delay, such as `10s`.
        interval: String,
    },
    /// Explicit delays: the n-th failure waits the n-th interval; the last one repeats.
    Intervals(Vec<String>),
}
