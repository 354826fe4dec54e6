//! The job: what a producer submits ([`NewJob`]) and what Rota keeps ([`Job`]).

use std::time::Duration;

use jiff::Timestamp;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::duration::serde_humane;
use crate::{Backoff, JobId, JobState, Lease, RetryOverride, RetryPolicy};

/// Priority when the producer gives none (0 runs first, 9 last).
pub const PRIORITY_DEFAULT: u8 = 5;

/// What a producer submits.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct NewJob {
    /// The declared queue it goes to.
    pub queue: String,
    /// The handler name, such as `email.send`.
    pub kind: String,
    /// The handler's input.
    #[serde(default)]
    pub args: Value,
    /// 0..=9, lower runs first; 5 when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Not before this instant; now when unset.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_at: Option<Timestamp>,
    /// Job-level retry settings (the most specific layer).
    #[serde(default, skip_serializing_if = "RetryOverride::is_empty")]
    pub retry: RetryOverride,
    /// How long one attempt may run before its worker kills it.
    #[serde(
        default,
        with = "serde_humane::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Deduplication key: an enqueue whose key matches an unfinished job returns that job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_key: Option<String>,
    /// Also match jobs with the same key that finished less than this long ago.
    #[serde(
        default,
        with = "serde_humane::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub unique_for: Option<Duration>,
    /// Free-form labels for filtering.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Flow-control key, such as `customer:42`: the queue's `key_concurrency` and `key_rate`
    /// limit the jobs sharing it, and claims go round-robin across keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// Collapse enqueues with the same key inside a period into one run with the latest
    /// arguments.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debounce: Option<Debounce>,
    /// At most one run per key per period; the rest are duplicates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<Throttle>,
    /// The schedule and slot that enqueued it, if a schedule did.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<JobOrigin>,
}

/// Debounce: enqueues with the same `key` less than `period` apart collapse into one job,
/// which runs `period` after the last of them with its arguments, but never later than
/// `max_wait` after the first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Debounce {
    /// What identifies the burst, such as `reindex:user:42`.
    pub key: String,
    /// Quiet time after the last enqueue before the job runs.
    #[serde(with = "serde_humane")]
    pub period: Duration,
    /// Longest the job may be put off after the first enqueue of the burst.
    #[serde(with = "serde_humane")]
    pub max_wait: Duration,
}

/// Throttle: at most one job per `key` is accepted per `period` (from the accepted one's
/// enqueue); the others are answered as duplicates of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Throttle {
    /// What is throttled, such as `digest:user:42`.
    pub key: String,
    /// One job per this long.
    #[serde(with = "serde_humane")]
    pub period: Duration,
}

/// The schedule slot a job was enqueued for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobOrigin {
    /// The schedule's name.
    pub schedule: String,
    /// The slot.
    pub slot: Timestamp,
}

impl NewJob {
    /// A job of `kind` on `queue` with `args` and every option at its default.
    pub fn new(queue: impl Into<String>, kind: impl Into<String>, args: Value) -> Self {
        Self {
            queue: queue.into(),
            kind: kind.into(),
            args,
            priority: None,
            run_at: None,
            retry: RetryOverride::default(),
            timeout: None,
            unique_key: None,
            unique_for: None,
            tags: Vec::new(),
            concurrency_key: None,
            debounce: None,
            throttle: None,
            origin: None,
        }
    }

    /// Sets the priority (0..=9, lower first).
    pub fn priority(mut self, priority: u8) -> Self {
        self.priority = Some(priority);
        self
    }

    /// Runs no earlier than `at`.
    pub fn run_at(mut self, at: Timestamp) -> Self {
        self.run_at = Some(at);
        self
    }

    /// Sets the job-level attempt limit.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.retry.max_attempts = Some(n);
        self
    }

    /// Sets the job-level backoff.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.retry.backoff = Some(backoff);
        self
    }

    /// Sets the deduplication key.
    pub fn unique_key(mut self, key: impl Into<String>) -> Self {
        self.unique_key = Some(key.into());
        self
    }

    /// Sets the flow-control key.
    pub fn concurrency_key(mut self, key: impl Into<String>) -> Self {
        self.concurrency_key = Some(key.into());
        self
    }

    /// Debounces on `key`: see [`Debounce`].
    pub fn debounce(
        mut self,
        key: impl Into<String>,
        period: Duration,
        max_wait: Duration,
    ) -> Self {
        self.debounce = Some(Debounce {
            key: key.into(),
            period,
            max_wait,
        });
        self
    }

    /// Throttles on `key`: see [`Throttle`].
    pub fn throttle(mut self, key: impl Into<String>, period: Duration) -> Self {
        self.throttle = Some(Throttle {
            key: key.into(),
            period,
        });
        self
    }

    /// Adds a tag.
    pub fn tag(mut self, tag: impl Into<String>) -> Self {
        self.tags.push(tag.into());
        self
    }

    /// Sets the per-attempt timeout.
    pub fn timeout(mut self, timeout: Duration) -> Self {
        self.timeout = Some(timeout);
        self
    }
}

/// A handler's progress report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    /// 0..=100.
    pub percent: u8,
    /// What the handler is doing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// What a worker says when an attempt fails.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorReport {
    /// The error message.
    pub message: String,
    /// The backtrace or stack trace, if the worker has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backtrace: Option<String>,
}

/// One failed attempt in a job's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    /// The attempt that failed (1-based).
    pub attempt: u32,
    /// When it failed.
    pub at: Timestamp,
    /// The error message.
    pub message: String,
    /// The backtrace, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backtrace: Option<String>,
    /// The worker that ran the attempt.
    pub worker: String,
    /// Groups errors by cause: see [`crate::fingerprint::fingerprint`].
    #[serde(default)]
    pub fingerprint: String,
}

/// Snoozes kept in a job's history.
pub const SNOOZE_LOG_MAX: usize = 20;

/// One snooze in a job's history.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SnoozeRecord {
    /// When the handler snoozed.
    pub at: Timestamp,
    /// The attempt it was in (given back by the snooze).
    pub attempt: u32,
    /// When the job runs again.
    pub until: Timestamp,
}

/// A job as Rota keeps it. Change it only through [`crate::transition`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    /// Identity (UUIDv7).
    pub id: JobId,
    /// Its queue.
    pub queue: String,
    /// Its handler name.
    pub kind: String,
    /// The handler's input.
    pub args: Value,
    /// 0..=9, lower first.
    pub priority: u8,
    /// Where it is in its life.
    pub state: JobState,
    /// Attempts started so far (snoozes and hand-backs give theirs back).
    pub attempt: u32,
    /// The effective attempt limit.
    pub max_attempts: u32,
    /// The effective backoff.
    pub backoff: Backoff,
    /// Per-attempt run-time limit.
    #[serde(
        default,
        with = "serde_humane::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Deduplication key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_key: Option<String>,
    /// How long after it finished the job keeps its unique key taken (it is kept at least
    /// that long, whatever the retention).
    #[serde(
        default,
        with = "serde_humane::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub unique_for: Option<Duration>,
    /// Labels.
    #[serde(default)]
    pub tags: Vec<String>,
    /// Flow-control key (see [`NewJob::concurrency_key`]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// The latest progress report.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<Progress>,
    /// Snoozes of the current attempt series (reset when a failed attempt is recorded for
    /// exceeding the limit).
    #[serde(default)]
    pub snoozes: u32,
    /// The latest snoozes, oldest first (at most [`SNOOZE_LOG_MAX`]): when, in which
    /// attempt, until when.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snooze_log: Vec<SnoozeRecord>,
    /// The latest checkpoint a handler saved; the next attempt receives it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint: Option<Value>,
    /// The handler's result, once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub result: Option<Value>,
    /// Every failed attempt, oldest first.
    #[serde(default)]
    pub errors: Vec<JobError>,
    /// The current lease; present exactly when the job is running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<Lease>,
    /// The last fencing token issued for this job (0 before its first fetch).
    pub lease_token: u64,
    /// Someone asked to cancel the job while it was running.
    pub cancel_requested: bool,
    /// When it may next run.
    pub run_at: Timestamp,
    /// When it was enqueued.
    pub created_at: Timestamp,
    /// When its latest attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub attempted_at: Option<Timestamp>,
    /// When it reached a final state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<Timestamp>,
    /// The schedule and slot that enqueued it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<JobOrigin>,
}

impl Job {
    /// The job a validated [`NewJob`] becomes, with its resolved `policy`, at `now`.
    pub fn from_new(new: NewJob, id: JobId, policy: RetryPolicy, now: Timestamp) -> Job {
        let run_at = crate::truncate_to_micros(new.run_at.unwrap_or(now));
        Job {
            id,
            queue: new.queue,
            kind: new.kind,
            args: new.args,
            priority: new.priority.unwrap_or(PRIORITY_DEFAULT),
            state: if run_at > now {
                JobState::Scheduled
            } else {
                JobState::Available
            },
            attempt: 0,
            max_attempts: policy.max_attempts,
            backoff: policy.backoff,
            timeout: new.timeout,
            unique_for: new.unique_key.as_ref().and(new.unique_for),
            unique_key: new.unique_key,
            tags: new.tags,
            concurrency_key: new.concurrency_key,
            progress: None,
            snoozes: 0,
            snooze_log: Vec::new(),
            checkpoint: None,
            result: None,
            errors: Vec::new(),
            lease: None,
            lease_token: 0,
            cancel_requested: false,
            run_at,
            created_at: now,
            attempted_at: None,
            finished_at: None,
            origin: new.origin,
        }
    }

    /// The effective retry policy recorded on the job.
    pub fn retry_policy(&self) -> RetryPolicy {
        RetryPolicy {
            max_attempts: self.max_attempts,
            backoff: self.backoff.clone(),
        }
    }
}
