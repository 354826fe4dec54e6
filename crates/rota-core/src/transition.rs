//! The job state machine as one pure function: `(job, event, now) -> job'`.
//!
//! Every backend either calls [`transition`] or implements exactly what it specifies (the
//! conformance suite checks that). A refused event leaves the job as it was.

use std::time::Duration;

use jiff::Timestamp;
use serde_json::Value;

use crate::{add_duration, ErrorReport, Job, JobError, JobId, JobState, Lease, Progress};

/// Something that happens to a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Event {
    /// Its `run_at` has come: scheduled or retryable becomes available.
    Due,
    /// A worker leased it for `lease_for`.
    Fetched {
        /// The worker's id.
        worker: String,
        /// How long the lease lasts without a heartbeat.
        lease_for: Duration,
    },
    /// The worker is still on it: extend the lease.
    Heartbeat {
        /// The fencing token from the fetch.
        token: u64,
        /// New lease length from now.
        lease_for: Duration,
    },
    /// The handler reported progress.
    Progressed {
        /// The fencing token from the fetch.
        token: u64,
        /// What it reported.
        progress: Progress,
    },
    /// The handler succeeded.
    Completed {
        /// The fencing token from the fetch.
        token: u64,
        /// The handler's result.
        result: Option<Value>,
    },
    /// The handler failed.
    Failed {
        /// The fencing token from the fetch.
        token: u64,
        /// The error.
        error: ErrorReport,
        /// Do not retry: the job goes straight to `dead`.
        discard: bool,
    },
    /// The handler asked to run again later without using an attempt.
    Snoozed {
        /// The fencing token from the fetch.
        token: u64,
        /// How long to wait.
        delay: Duration,
        /// Most snoozes a job may have: the one beyond it counts as a failed attempt
        /// instead, so a handler that always snoozes cannot loop forever.
        limit: u32,
    },
    /// The handler saved a checkpoint: its next attempt receives it.
    Checkpointed {
        /// The fencing token from the fetch.
        token: u64,
        /// The checkpoint (small JSON).
        checkpoint: Value,
    },
    /// Someone asked to cancel the job.
    CancelRequested,
    /// The lease lapsed without a heartbeat: counts as a failed attempt.
    LeaseExpired,
    /// The worker is shutting down and gives the job back unrun (no attempt used).
    HandedBack {
        /// The fencing token from the fetch.
        token: u64,
    },
    /// An operator retries a dead or cancelled job; its history is kept.
    Retried,
    /// A debounced enqueue folded into this scheduled job: it runs with the latest `args`,
    /// at `run_at`.
    Debounced {
        /// The latest arguments.
        args: Value,
        /// When it now runs.
        run_at: Timestamp,
    },
}

impl Event {
    /// A short name for messages.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Due => "promote",
            Event::Fetched { .. } => "fetch",
            Event::Heartbeat { .. } => "heartbeat",
            Event::Progressed { .. } => "report progress for",
            Event::Completed { .. } => "complete",
            Event::Failed { .. } => "fail",
            Event::Snoozed { .. } => "snooze",
            Event::Checkpointed { .. } => "checkpoint",
            Event::CancelRequested => "cancel",
            Event::LeaseExpired => "rescue",
            Event::HandedBack { .. } => "hand back",
            Event::Retried => "retry",
            Event::Debounced { .. } => "debounce into",
        }
    }

    /// The fencing token the event presents, if it is a worker's call.
    pub fn token(&self) -> Option<u64> {
        match self {
            Event::Heartbeat { token, .. }
            | Event::Progressed { token, .. }
            | Event::Completed { token, .. }
            | Event::Failed { token, .. }
            | Event::Snoozed { token, .. }
            | Event::Checkpointed { token, .. }
            | Event::HandedBack { token } => Some(*token),
            _ => None,
        }
    }
}

/// Why an event was refused. The job is unchanged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TransitionError {
    /// The event makes no sense in the job's state.
    #[error("job {job} is {state}: cannot {event} it")]
    NotAllowed {
        /// The job.
        job: JobId,
        /// Its state.
        state: JobState,
        /// What was attempted.
        event: &'static str,
    },
    /// The presented lease token is not the current one: the lease expired and was rescued
    /// (and maybe given to another worker), or the job already finished.
    #[error("lease on job {job} is no longer held by this worker (token {presented}, {})",
        match current { Some(t) => format!("current {t}"), None => format!("job is {state}") })]
    LeaseLost {
        /// The job.
        job: JobId,
        /// The token the worker presented.
        presented: u64,
        /// The current lease's token, if the job is running.
        current: Option<u64>,
        /// The job's state.
        state: JobState,
    },
    /// The job's `run_at` has not come yet.
    #[error("job {job} is not due until {run_at}")]
    NotDue {
        /// The job.
        job: JobId,
        /// When it is due.
        run_at: Timestamp,
    },
    /// The lease has not lapsed yet.
    #[error("lease on job {job} is held until {expires_at}")]
    LeaseActive {
        /// The job.
        job: JobId,
        /// When it lapses.
        expires_at: Timestamp,
    },
}

/// Applies `event` to `job` at `now`, returning the job as it is afterwards.
pub fn transition(job: &Job, event: Event, now: Timestamp) -> Result<Job, TransitionError> {
    let event_name = event.name();
    let not_allowed = || TransitionError::NotAllowed {
        job: job.id,
        state: job.state,
        event: event_name,
    };
    // Fencing comes first: a stale token must never change anything, whatever the event.
    if let Some(token) = event.token() {
        match &job.lease {
            Some(lease) if job.state == JobState::Running && lease.token == token => {}
            lease => {
                return Err(TransitionError::LeaseLost {
                    job: job.id,
                    presented: token,
                    current: lease.as_ref().map(|l| l.token),
                    state: job.state,
                })
            }
        }
    }
    let mut next = job.clone();
    match event {
        Event::Debounced { args, run_at } => match job.state {
            JobState::Scheduled => {
                next.args = args;
                next.run_at = run_at;
            }
            _ => return Err(not_allowed()),
        },
        Event::Due => match job.state {
            JobState::Scheduled | JobState::Retryable if job.run_at <= now => {
                next.state = JobState::Available;
            }
            JobState::Scheduled | JobState::Retryable => {
                return Err(TransitionError::NotDue {
                    job: job.id,
                    run_at: job.run_at,
                })
            }
            _ => return Err(not_allowed()),
        },
        Event::Fetched { worker, lease_for } => {
            if job.state != JobState::Available {
                return Err(not_allowed());
            }
            if job.run_at > now {
                return Err(TransitionError::NotDue {
                    job: job.id,
                    run_at: job.run_at,
                });
            }
            next.state = JobState::Running;
            next.attempt += 1;
            next.lease_token += 1;
            next.lease = Some(Lease {
                worker,
                token: next.lease_token,
                expires_at: add_duration(now, lease_for),
            });
            next.attempted_at = Some(now);
        }
        Event::Heartbeat { lease_for, .. } => {
            if let Some(lease) = &mut next.lease {
                lease.expires_at = add_duration(now, lease_for);
            }
        }
        Event::Progressed { progress, .. } => next.progress = Some(progress),
        Event::Completed { result, .. } => {
            next.result = result;
            finish(&mut next, JobState::Completed, now);
        }
        Event::Failed { error, discard, .. } => {
            let worker = job
                .lease
                .as_ref()
                .map(|l| l.worker.clone())
                .unwrap_or_default();
            record_failure(&mut next, error, worker, discard, now);
        }
        Event::Snoozed { delay, limit, .. } if job.snoozes >= limit => {
            let worker = job
                .lease
                .as_ref()
                .map(|l| l.worker.clone())
                .unwrap_or_default();
            let error = ErrorReport {
                message: format!(
                    "snoozed {} times, the most a job may: this snooze counts as a failed attempt",
                    job.snoozes
                ),
                backtrace: None,
            };
            // Counted from here again, so a retry may snooze as the first attempt did.
            next.snoozes = 0;
            let _ = delay;
            record_failure(&mut next, error, worker, false, now);
        }
        Event::Snoozed { delay, .. } => {
            next.snoozes += 1;
            let until = crate::delay_until(now, delay);
            next.snooze_log.push(crate::SnoozeRecord {
                at: now,
                attempt: job.attempt,
                until,
            });
            if next.snooze_log.len() > crate::SNOOZE_LOG_MAX {
                next.snooze_log.remove(0);
            }
            give_back(&mut next, JobState::Scheduled, until, now)
        }
        Event::Checkpointed { checkpoint, .. } => next.checkpoint = Some(checkpoint),
        Event::HandedBack { .. } => give_back(&mut next, JobState::Available, now, now),
        Event::CancelRequested => match job.state {
            JobState::Scheduled | JobState::Available | JobState::Retryable => {
                finish(&mut next, JobState::Cancelled, now);
            }
            JobState::Running => next.cancel_requested = true,
            _ => return Err(not_allowed()),
        },
        Event::LeaseExpired => match &job.lease {
            Some(lease) if job.state == JobState::Running && lease.is_expired(now) => {
                let error = ErrorReport {
                    message: format!(
                        "lease expired: worker {} stopped heartbeating",
                        lease.worker
                    ),
                    backtrace: None,
                };
                record_failure(&mut next, error, lease.worker.clone(), false, now);
                if next.state == JobState::Retryable {
                    next.run_at = crate::add_duration(
                        next.run_at,
                        crate::rescue_spread(job.id.seed(), next.attempt),
                    );
                }
            }
            Some(lease) if job.state == JobState::Running => {
                return Err(TransitionError::LeaseActive {
                    job: job.id,
                    expires_at: lease.expires_at,
                })
            }
            _ => return Err(not_allowed()),
        },
        Event::Retried => match job.state {
            JobState::Dead | JobState::Cancelled => {
                next.state = JobState::Available;
                next.run_at = now;
                next.finished_at = None;
                next.cancel_requested = false;
                // An exhausted job gets one more attempt (as Oban's retry_job does): a manual
                // retry that fails again goes back to dead instead of starting a new series.
                if next.attempt >= next.max_attempts {
                    next.max_attempts = next.attempt + 1;
                }
            }
            _ => return Err(not_allowed()),
        },
    }
    Ok(next)
}

/// A failed attempt: recorded in the history, then retried after the backoff, or dead when
/// attempts are exhausted or the handler discarded the job, or cancelled if that was asked.
fn record_failure(
    job: &mut Job,
    error: ErrorReport,
    worker: String,
    discard: bool,
    now: Timestamp,
) {
    job.errors.push(JobError {
        attempt: job.attempt,
        at: now,
        fingerprint: crate::fingerprint::fingerprint(&error.message, error.backtrace.as_deref()),
        message: error.message,
        backtrace: error.backtrace,
        worker,
    });
    if job.cancel_requested {
        finish(job, JobState::Cancelled, now);
    } else if discard || job.attempt >= job.max_attempts {
        finish(job, JobState::Dead, now);
    } else {
        job.lease = None;
        job.state = JobState::Retryable;
        job.run_at = crate::delay_until(now, job.backoff.delay(job.attempt, job.id.seed()));
    }
}

/// The worker returns the job unrun (snooze or hand back): the attempt is given back.
fn give_back(job: &mut Job, state: JobState, run_at: Timestamp, now: Timestamp) {
    if job.cancel_requested {
        finish(job, JobState::Cancelled, now);
        return;
    }
    job.lease = None;
    job.attempt = job.attempt.saturating_sub(1);
    job.state = state;
    job.run_at = run_at;
}

fn finish(job: &mut Job, state: JobState, now: Timestamp) {
    job.state = state;
    job.lease = None;
    job.finished_at = Some(now);
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;
    use serde_json::json;

    use super::*;

    /// Only a scheduled job takes a debounce's new arguments and run time.
    #[test]
    fn only_a_scheduled_job_is_debounced() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let later = now + jiff::SignedDuration::from_secs(5);
        let job = Job::from_new(
            crate::NewJob::new("q", "k", json!({"n": 1})).run_at(later),
            JobId::new(now),
            RetryPolicy::default(),
            now,
        );
        let event = |n| Event::Debounced {
            args: json!({ "n": n }),
            run_at: later + jiff::SignedDuration::from_secs(1),
        };
        let next = transition(&job, event(2), now).unwrap();
        assert_eq!(
            (next.args.clone(), next.state),
            (json!({"n": 2}), JobState::Scheduled)
        );
        let mut ready = next.clone();
        ready.state = JobState::Available;
        assert!(matches!(
            transition(&ready, event(3), now),
            Err(TransitionError::NotAllowed { .. })
        ));
    }

    /// A handler that always snoozes cannot loop forever: the snooze beyond the limit is a
    /// failed attempt (issue 17: `echo 0s; exit 75` ran 859 times in 5 s).
    #[test]
    fn snoozes_beyond_the_limit_count_as_failed_attempts() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let mut job = Job::from_new(
            crate::NewJob::new("q", "k", serde_json::json!({})),
            JobId::new(now),
            RetryPolicy {
                max_attempts: 2,
                ..RetryPolicy::default()
            },
            now,
        );
        let mut failures = 0;
        for _ in 0..6 {
            job.run_at = now;
            job.state = JobState::Available;
            let running = transition(
                &job,
                Event::Fetched {
                    worker: "w".into(),
                    lease_for: Duration::from_secs(30),
                },
                now,
            )
            .unwrap();
            let token = running.lease.as_ref().unwrap().token;
            job = transition(
                &running,
                Event::Snoozed {
                    token,
                    delay: Duration::from_secs(1),
                    limit: 2,
                },
                now,
            )
            .unwrap();
            if !job.errors.is_empty() && job.errors.len() > failures {
                failures = job.errors.len();
                assert!(job
                    .errors
                    .last()
                    .unwrap()
                    .message
                    .contains("snoozed 2 times"));
            }
            if job.state == JobState::Dead {
                break;
            }
        }
        assert_eq!(
            job.state,
            JobState::Dead,
            "two series of two snoozes, then dead"
        );
        assert_eq!(job.errors.len(), 2);
    }

    /// A snooze or backoff of 100,000,000 hours is cut to the horizon, so the stored time
    /// stays readable (issue 18).
    #[test]
    fn absurd_delays_are_cut_to_the_schedule_horizon() {
        let now = Timestamp::from_second(1_800_000_000).unwrap();
        let huge = Duration::from_secs(100_000_000 * 3600);
        let mut job = Job::from_new(
            crate::NewJob::new("q", "k", serde_json::json!({}))
                .max_attempts(3)
                .backoff(crate::Backoff::Fixed { interval: huge }),
            JobId::new(now),
            Default::default(),
            now,
        );
        job.backoff = crate::Backoff::Fixed { interval: huge };
        let fetch = |j: &Job| {
            transition(
                j,
                Event::Fetched {
                    worker: "w".into(),
                    lease_for: Duration::from_secs(30),
                },
                now,
            )
            .unwrap()
        };
        let horizon = crate::add_duration(now, crate::SCHEDULE_HORIZON);
        let running = fetch(&job);
        let token = running.lease.as_ref().unwrap().token;
        let snoozed = transition(
            &running,
            Event::Snoozed {
                token,
                delay: huge,
                limit: 100,
            },
            now,
        )
        .unwrap();
        assert_eq!(snoozed.run_at, horizon);
        let failed = transition(
            &running,
            Event::Failed {
                token,
                error: ErrorReport {
                    message: "x".into(),
                    backtrace: None,
                },
                discard: false,
            },
            now,
        )
        .unwrap();
        assert_eq!(failed.state, JobState::Retryable);
        assert_eq!(failed.run_at, horizon);
        assert!(Timestamp::from_microsecond(failed.run_at.as_microsecond()).is_ok());
    }
    use crate::{Backoff, NewJob, RetryPolicy};

    fn t0() -> Timestamp {
        Timestamp::from_second(1_767_225_600).unwrap()
    }

    fn secs(n: u64) -> Duration {
        Duration::from_secs(n)
    }

    fn job(max_attempts: u32) -> Job {
        let policy = RetryPolicy {
            max_attempts,
            backoff: Backoff::Intervals(vec![secs(30), secs(60), secs(120)]),
        };
        Job::from_new(
            NewJob::new("default", "k", json!({"n": 1})),
            JobId::new(t0()),
            policy,
            t0(),
        )
    }

    fn fetch(job: &Job, now: Timestamp) -> Job {
        transition(
            job,
            Event::Fetched {
                worker: "w1".into(),
                lease_for: secs(30),
            },
            now,
        )
        .unwrap()
    }

    #[test]
    fn failures_back_off_by_the_configured_intervals_then_die() {
        let mut j = job(3);
        let mut now = t0();
        let mut delays = Vec::new();
        for _ in 0..3 {
            j = fetch(&j, now);
            let token = j.lease.as_ref().unwrap().token;
            let err = ErrorReport {
                message: "boom".into(),
                backtrace: Some("at main".into()),
            };
            j = transition(
                &j,
                Event::Failed {
                    token,
                    error: err,
                    discard: false,
                },
                now,
            )
            .unwrap();
            if j.state == JobState::Retryable {
                delays.push(j.run_at.duration_since(now).as_secs());
                now = j.run_at;
                j = transition(&j, Event::Due, now).unwrap();
            }
        }
        assert_eq!(j.state, JobState::Dead);
        assert_eq!(delays, [30, 60]);
        assert_eq!(j.errors.len(), 3);
        assert_eq!(j.args, json!({"n": 1}));
    }

    #[test]
    fn a_stale_token_is_refused_with_both_tokens_named() {
        let j = fetch(&job(3), t0());
        let err = transition(
            &j,
            Event::Completed {
                token: 99,
                result: None,
            },
            t0(),
        )
        .unwrap_err();
        assert!(matches!(
            err,
            TransitionError::LeaseLost {
                presented: 99,
                current: Some(1),
                ..
            }
        ));
        assert!(err.to_string().contains("token 99, current 1"), "{err}");
    }

    #[test]
    fn cancelling_a_running_job_is_a_request_honoured_at_its_next_report() {
        let j = fetch(&job(3), t0());
        let j = transition(&j, Event::CancelRequested, t0()).unwrap();
        assert_eq!(j.state, JobState::Running);
        assert!(j.cancel_requested);
        let j = transition(&j, Event::HandedBack { token: 1 }, t0()).unwrap();
        assert_eq!(j.state, JobState::Cancelled);
    }

    /// A rescued job comes back after its backoff plus a share of the rescue spread, so the
    /// jobs of one lost worker are not offered again in one instant.
    #[test]
    fn rescued_jobs_are_spread_over_the_rescue_window() {
        let expired = add_duration(t0(), secs(31));
        let mut per_second = [0usize; 6];
        let n = 10_000;
        let mut again = Vec::new();
        for _ in 0..n {
            let j = fetch(&job(3), t0());
            let rescued = transition(&j, Event::LeaseExpired, expired).unwrap();
            assert_eq!(rescued.state, JobState::Retryable);
            let after_backoff = rescued
                .run_at
                .duration_since(add_duration(expired, secs(30)))
                .as_secs_f64();
            assert!(
                (0.0..crate::RESCUE_SPREAD.as_secs_f64()).contains(&after_backoff),
                "{after_backoff}"
            );
            per_second[after_backoff as usize] += 1;
            again.push(rescued);
        }
        // No second of the window takes more than a quarter of the jobs (issue 15's R10).
        assert!(
            per_second.iter().all(|&c| c <= n / 4),
            "jobs per second: {per_second:?}"
        );
        // The same job lands elsewhere in the window at its next rescue.
        let moved = again
            .iter()
            .filter(|j| {
                let due = transition(j, Event::Due, j.run_at).unwrap();
                let j2 = fetch(&due, j.run_at);
                let lease_end = j2.lease.as_ref().unwrap().expires_at;
                let twice = transition(&j2, Event::LeaseExpired, lease_end).unwrap();
                let first = crate::rescue_spread(j.id.seed(), 1);
                let second = crate::rescue_spread(j.id.seed(), 2);
                assert_eq!(
                    twice.run_at,
                    add_duration(add_duration(lease_end, secs(60)), second)
                );
                first.abs_diff(second) > Duration::from_millis(500)
            })
            .count();
        assert!(moved > n / 2, "only {moved} of {n} moved");
    }

    #[test]
    fn retrying_an_exhausted_dead_job_grants_one_more_attempt_and_keeps_history() {
        let mut j = job(1);
        j = fetch(&j, t0());
        j = transition(&j, Event::LeaseExpired, add_duration(t0(), secs(31))).unwrap();
        assert_eq!(j.state, JobState::Dead);
        let j = transition(&j, Event::Retried, add_duration(t0(), secs(40))).unwrap();
        assert_eq!(
            (j.state, j.attempt, j.max_attempts, j.errors.len()),
            (JobState::Available, 1, 2, 1)
        );
        assert_eq!(j.finished_at, None);
    }

    #[derive(Debug, Clone)]
    enum Step {
        Due,
        Fetch,
        Heartbeat(bool),
        Complete(bool),
        Fail(bool, bool),
        Snooze(bool, u64),
        Cancel,
        Expire,
        HandBack(bool),
        Retry,
    }

    fn step() -> impl Strategy<Value = Step> {
        prop_oneof![
            Just(Step::Due),
            Just(Step::Fetch),
            any::<bool>().prop_map(Step::Heartbeat),
            any::<bool>().prop_map(Step::Complete),
            (any::<bool>(), any::<bool>()).prop_map(|(s, d)| Step::Fail(s, d)),
            (any::<bool>(), 0u64..200).prop_map(|(s, d)| Step::Snooze(s, d)),
            Just(Step::Cancel),
            Just(Step::Expire),
            any::<bool>().prop_map(Step::HandBack),
            Just(Step::Retry),
        ]
    }

    /// The event for a step; `stale` steps present a token that is not the current one.
    fn event(step: &Step, job: &Job) -> Event {
        let current = job
            .lease
            .as_ref()
            .map(|l| l.token)
            .unwrap_or(job.lease_token);
        let token = |stale: bool| {
            if stale {
                current.wrapping_sub(1)
            } else {
                current
            }
        };
        let err = || ErrorReport {
            message: "x".into(),
            backtrace: None,
        };
        match step.clone() {
            Step::Due => Event::Due,
            Step::Fetch => Event::Fetched {
                worker: "w".into(),
                lease_for: secs(30),
            },
            Step::Heartbeat(s) => Event::Heartbeat {
                token: token(s),
                lease_for: secs(30),
            },
            Step::Complete(s) => Event::Completed {
                token: token(s),
                result: None,
            },
            Step::Fail(s, discard) => Event::Failed {
                token: token(s),
                error: err(),
                discard,
            },
            Step::Snooze(s, d) => Event::Snoozed {
                token: token(s),
                delay: secs(d),
                limit: 3,
            },
            Step::Cancel => Event::CancelRequested,
            Step::Expire => Event::LeaseExpired,
            Step::HandBack(s) => Event::HandedBack { token: token(s) },
            Step::Retry => Event::Retried,
        }
    }

    fn assert_consistent(j: &Job) {
        assert_eq!(
            j.state == JobState::Running,
            j.lease.is_some(),
            "lease iff running: {j:?}"
        );
        assert_eq!(
            j.state.is_final(),
            j.finished_at.is_some(),
            "finished iff final: {j:?}"
        );
        assert!(j.attempt <= j.max_attempts, "attempts exceed max: {j:?}");
    }

    /// The event that moves a non-final job on, and the time at which it does.
    fn way_forward(j: &Job) -> (Event, Timestamp) {
        match j.state {
            JobState::Scheduled | JobState::Retryable => (Event::Due, j.run_at),
            JobState::Available => (
                Event::Fetched {
                    worker: "w".into(),
                    lease_for: secs(30),
                },
                j.run_at,
            ),
            JobState::Running => (Event::LeaseExpired, j.lease.as_ref().unwrap().expires_at),
            _ => unreachable!("final"),
        }
    }

    proptest! {
        #[test]
        fn random_event_sequences_keep_every_invariant(
            max_attempts in 1u32..5,
            steps in proptest::collection::vec((step(), 0u64..90), 1..60),
        ) {
            let mut j = job(max_attempts);
            let mut now = t0();
            for (step, advance) in steps {
                now = add_duration(now, secs(advance));
                let ev = event(&step, &j);
                let stale = ev.token().is_some_and(|t| j.lease.as_ref().map(|l| l.token) != Some(t));
                match transition(&j, ev, now) {
                    Ok(next) => {
                        prop_assert!(!stale, "a stale token changed the job");
                        prop_assert_eq!(next.id, j.id);
                        prop_assert!(next.errors.len() >= j.errors.len());
                        prop_assert!(next.lease_token >= j.lease_token);
                        j = next;
                    }
                    Err(TransitionError::LeaseLost { .. }) => prop_assert!(stale),
                    Err(_) => {}
                }
                assert_consistent(&j);
                if !j.state.is_final() {
                    let (ev, at) = way_forward(&j);
                    let moved = transition(&j, ev, at.max(now)).expect("a non-final job has a way forward");
                    prop_assert_ne!(moved.state, j.state);
                }
            }
        }

        #[test]
        fn a_job_that_kills_its_worker_every_time_ends_dead_after_max_attempts(max_attempts in 1u32..30) {
            let mut j = job(max_attempts);
            let mut fetches = 0;
            while !j.state.is_final() {
                prop_assert!(fetches <= max_attempts, "looping");
                let (ev, at) = way_forward(&j);
                if matches!(ev, Event::Fetched { .. }) { fetches += 1; }
                j = transition(&j, ev, at).unwrap();
            }
            prop_assert_eq!(j.state, JobState::Dead);
            prop_assert_eq!(fetches, max_attempts);
            prop_assert_eq!(j.errors.len() as u32, max_attempts);
        }
    }
}
