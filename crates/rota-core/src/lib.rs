//! Rota's job model, with no I/O and no async runtime.
//!
//! A producer submits a [`NewJob`]; validation ([`validation`]) and policy resolution
//! ([`RetryPolicy::resolve`]) turn it into a [`Job`]. From then on a job only changes through
//! [`transition`], a pure function of `(job, event, now)` that every backend follows, so that
//! the state machine in `docs/state_machine.md` is specified and property-tested in one place.
//! A running job holds a [`Lease`] whose fencing token must be presented by every worker call.
//! Time comes from a [`Clock`]: [`SystemClock`] in production, [`ManualClock`] in tests.

mod clock;
mod duration;
pub mod fingerprint;
mod id;
mod job;
mod lease;
mod rate;
mod retry;
pub mod schedule;
mod state;
pub mod text;
mod transition;
pub mod validation;

pub use clock::{truncate_to_micros, Clock, ManualClock, SystemClock};
pub use duration::{
    format_duration, parse_duration, parse_duration_field, serde_humane, DurationParseError,
};
pub use id::JobId;
pub use job::{
    Debounce, ErrorReport, Job, JobError, JobOrigin, NewJob, Progress, SnoozeRecord, Throttle,
    PRIORITY_DEFAULT, SNOOZE_LOG_MAX,
};
pub use lease::Lease;
pub use rate::{Rate, RateParseError};
pub use retry::{
    rescue_spread, Backoff, RetryOverride, RetryPolicy, BACKOFF_FACTOR_DEFAULT,
    BACKOFF_INITIAL_DEFAULT, BACKOFF_JITTER_DEFAULT, BACKOFF_MAX_DEFAULT, MAX_ATTEMPTS_DEFAULT,
    RESCUE_SPREAD,
};
pub use state::{JobState, UnknownState};
pub use transition::{transition, Event, TransitionError};
pub use validation::{Limits, ValidationError};

/// How far ahead anything may be scheduled: a job's `run_at` or delay is refused beyond it,
/// and a backoff or snooze delay is cut to it (ten years of 365 days). Far enough for any
/// real schedule, and every stored time stays readable.
pub const SCHEDULE_HORIZON: std::time::Duration = std::time::Duration::from_secs(3650 * 86_400);

/// `now` plus `delay`, the delay cut to [`SCHEDULE_HORIZON`] (backoffs and snoozes).
pub fn delay_until(now: jiff::Timestamp, delay: std::time::Duration) -> jiff::Timestamp {
    add_duration(now, delay.min(SCHEDULE_HORIZON))
}

/// Adds a duration to a timestamp, saturating at the largest representable instant.
///
/// Durations in Rota come from configuration and are bounded far below jiff's range, so
/// saturation is a guard against absurd input, not a path that real jobs take.
pub fn add_duration(at: jiff::Timestamp, d: std::time::Duration) -> jiff::Timestamp {
    truncate_to_micros(at.checked_add(d).unwrap_or(jiff::Timestamp::MAX))
}

/// Subtracts a duration from a timestamp, saturating at the smallest representable instant.
pub fn sub_duration(at: jiff::Timestamp, d: std::time::Duration) -> jiff::Timestamp {
    truncate_to_micros(at.checked_sub(d).unwrap_or(jiff::Timestamp::MIN))
}
