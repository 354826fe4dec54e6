//! Enqueue planning every backend shares: validation, policy resolution, the unique-key
//! decision. A backend looks up the queue and the jobs holding the same unique key, calls
//! [`plan_enqueue`], and writes what it says.

use std::collections::HashMap;

use jiff::Timestamp;
use rota_core::validation::{nearest_name, validate_new_job};
use rota_core::{Job, JobId, Limits, NewJob, RetryOverride, RetryPolicy};

use crate::{QueueConfig, StoreError};

/// The server-wide layers of retry policy resolution, and payload limits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyDefaults {
    /// The server default (the least specific layer).
    pub retry: RetryPolicy,
    /// Per-kind settings (between job and queue).
    pub kinds: HashMap<String, RetryOverride>,
    /// Payload limits.
    pub limits: Limits,
}

/// What to do with one new job.
#[derive(Debug, Clone, PartialEq)]
pub enum Planned {
    /// Store this job (validated, its policy resolved).
    Insert(Job),
    /// A job with the same unique key, or the throttle's holder, blocks it: answer with that
    /// job, store nothing.
    Duplicate(Job),
    /// It folds into the scheduled job of its debounce key: save `after` (latest arguments,
    /// later run time) over `before` and answer with it.
    Debounced {
        /// The job as stored.
        before: Box<Job>,
        /// The job with the new arguments and run time.
        after: Box<Job>,
    },
}

/// A debounce or throttle key as stored: which job holds it and since when.
#[derive(Debug, Clone, PartialEq)]
pub struct CollapseHolder {
    /// The job holding the key (absent if it was deleted since).
    pub job: Option<Job>,
    /// When the job that took the key was enqueued (a debounce's burst began).
    pub first_at: Timestamp,
    /// Until when the key is held (a throttle's period; a debounce's `max_wait`).
    pub until: Timestamp,
}

/// The debounce or throttle key of a new job, as the store keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollapseKey {
    /// `debounce` or `throttle`.
    pub scope: &'static str,
    /// The key.
    pub key: String,
    /// How long a new holder keeps it.
    pub hold: std::time::Duration,
}

impl CollapseKey {
    /// The key of `new`, if it is debounced or throttled.
    pub fn of(new: &NewJob) -> Option<Self> {
        match (&new.debounce, &new.throttle) {
            (Some(d), _) => Some(Self {
                scope: "debounce",
                key: d.key.clone(),
                hold: d.max_wait,
            }),
            (None, Some(t)) => Some(Self {
                scope: "throttle",
                key: t.key.clone(),
                hold: t.period,
            }),
            (None, None) => None,
        }
    }

    /// The holder a job stored now for this key becomes.
    pub fn holder(&self, job: &Job, now: Timestamp) -> CollapseHolder {
        CollapseHolder {
            job: Some(job.clone()),
            first_at: now,
            until: rota_core::add_duration(now, self.hold),
        }
    }
}

/// Plans one enqueue: validates `new`, returns the unfinished (or recently finished) job
/// among `same_key` that makes it a duplicate, or resolves it against its queue's settings
/// into the job to store. `same_key` are the stored jobs with `new`'s unique key, newest
/// first (empty when it has none).
pub fn plan_enqueue(
    new: NewJob,
    queue: &QueueConfig,
    same_key: &[Job],
    collapse: Option<&CollapseHolder>,
    defaults: &PolicyDefaults,
    now: Timestamp,
) -> Result<Planned, StoreError> {
    validate_new_job(&new, &defaults.limits)?;
    if let Some(run_at) = new.run_at {
        rota_core::validation::validate_run_at("run_at", run_at, now)?;
    }
    if new.unique_key.is_some() {
        if let Some(existing) = same_key.iter().find(|job| unique_key_blocks(job, now)) {
            return Ok(Planned::Duplicate(existing.clone()));
        }
    }
    let holder = collapse.and_then(|h| Some((h.job.as_ref()?, h)));
    if let (Some(_), Some((job, holder))) = (&new.throttle, holder) {
        if holder.until > now {
            return Ok(Planned::Duplicate(job.clone()));
        }
    }
    if let (Some(d), Some((job, holder))) = (&new.debounce, holder) {
        if job.state == rota_core::JobState::Scheduled {
            let run_at = rota_core::add_duration(now, d.period)
                .min(rota_core::add_duration(holder.first_at, d.max_wait));
            let event = rota_core::Event::Debounced {
                args: new.args,
                run_at,
            };
            let after = rota_core::transition(job, event, now)?;
            return Ok(Planned::Debounced {
                before: Box::new(job.clone()),
                after: Box::new(after),
            });
        }
    }
    let mut new = new;
    if let Some(d) = &new.debounce {
        new.run_at = Some(rota_core::add_duration(now, d.period));
    }
    let policy = RetryPolicy::resolve(
        &new.retry,
        defaults.kinds.get(&new.kind),
        Some(&queue.retry),
        &defaults.retry,
    );
    if new.timeout.is_none() {
        new.timeout = queue.timeout;
    }
    Ok(Planned::Insert(Job::from_new(
        new,
        JobId::new(now),
        policy,
        now,
    )))
}

/// The error for an undeclared `queue`, naming the closest of the `declared` ones.
pub fn queue_not_declared(queue: &str, declared: &[String]) -> StoreError {
    StoreError::QueueNotDeclared {
        queue: queue.to_owned(),
        suggestion: nearest_name(queue, declared.iter().map(String::as_str)).map(str::to_owned),
    }
}

/// Whether `existing`, which has the same unique key, makes a new enqueue a duplicate: it
/// does while `existing` is unfinished, and for `existing`'s own `unique_for` after it
/// finished (the window belongs to the job that took the key, not to the newcomer).
pub fn unique_key_blocks(existing: &Job, now: Timestamp) -> bool {
    match existing.finished_at {
        None => true,
        Some(finished) => existing
            .unique_for
            .is_some_and(|window| rota_core::add_duration(finished, window) > now),
    }
}

/// The unfinished job among `same_key` (other than `job`) that makes retrying `job` a
/// second live job with one key; retrying must wait until it finished.
pub fn retry_blocked_by<'a>(job: &Job, same_key: &'a [Job]) -> Option<&'a Job> {
    job.unique_key.as_ref()?;
    same_key
        .iter()
        .find(|other| other.id != job.id && other.finished_at.is_none())
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;
    use rota_core::{Backoff, JobState};
    use serde_json::json;

    fn now() -> Timestamp {
        Timestamp::from_second(1_800_000_000).unwrap()
    }

    fn insert(new: NewJob, queue: &QueueConfig) -> Job {
        match plan_enqueue(new, queue, &[], None, &PolicyDefaults::default(), now()).unwrap() {
            Planned::Insert(job) => job,
            other => panic!("not an insert: {other:?}"),
        }
    }

    fn collapse(new: NewJob, holder: &CollapseHolder, at: Timestamp) -> Planned {
        let queue = QueueConfig::default();
        plan_enqueue(
            new,
            &queue,
            &[],
            Some(holder),
            &PolicyDefaults::default(),
            at,
        )
        .unwrap()
    }

    #[test]
    fn a_debounced_job_runs_a_period_after_the_last_enqueue_within_max_wait() {
        let s = std::time::Duration::from_secs;
        let new = |n: u32| {
            NewJob::new("default", "reindex", serde_json::json!({ "n": n })).debounce(
                "user:1",
                s(10),
                s(30),
            )
        };
        let first = insert(new(1), &QueueConfig::default());
        assert_eq!(first.state, rota_core::JobState::Scheduled);
        assert_eq!(first.run_at, now() + jiff::SignedDuration::from_secs(10));
        let key = CollapseKey::of(&new(1)).unwrap();
        let holder = key.holder(&first, now());
        let at = |secs| now() + jiff::SignedDuration::from_secs(secs);
        let Planned::Debounced { before, after } = collapse(new(2), &holder, at(5)) else {
            panic!("folds into the scheduled job");
        };
        assert_eq!(before.id, after.id);
        assert_eq!(
            after.args,
            serde_json::json!({ "n": 2 }),
            "the latest arguments"
        );
        assert_eq!(after.run_at, at(15), "a period after the last enqueue");
        let holder = CollapseHolder {
            job: Some(*after),
            ..holder
        };
        let Planned::Debounced { after, .. } = collapse(new(3), &holder, at(25)) else {
            panic!("still folds");
        };
        assert_eq!(
            after.run_at,
            at(30),
            "never later than max_wait after the first"
        );
        let mut ran = (*after).clone();
        ran.state = rota_core::JobState::Running;
        let holder = CollapseHolder {
            job: Some(ran),
            ..holder
        };
        assert!(
            matches!(collapse(new(4), &holder, at(31)), Planned::Insert(_)),
            "once it started, the next enqueue is a new job"
        );
    }

    #[test]
    fn a_throttled_key_takes_one_job_per_period() {
        let new = || {
            NewJob::new("default", "digest", serde_json::json!({}))
                .throttle("user:1", std::time::Duration::from_secs(60))
        };
        let first = insert(new(), &QueueConfig::default());
        let holder = CollapseKey::of(&new()).unwrap().holder(&first, now());
        let at = |secs| now() + jiff::SignedDuration::from_secs(secs);
        assert!(
            matches!(collapse(new(), &holder, at(59)), Planned::Duplicate(j) if j.id == first.id)
        );
        assert!(matches!(
            collapse(new(), &holder, at(60)),
            Planned::Insert(_)
        ));
    }

    #[test]
    fn the_queue_layer_fills_what_the_job_leaves_open() {
        let queue = QueueConfig {
            retry: RetryOverride {
                max_attempts: Some(3),
                backoff: Some(Backoff::Fixed {
                    interval: Duration::from_secs(7),
                }),
            },
            timeout: Some(Duration::from_secs(60)),
            ..QueueConfig::default()
        };
        let job = insert(NewJob::new("q", "k", json!({})).max_attempts(5), &queue);
        assert_eq!(job.max_attempts, 5, "the job's own setting wins");
        assert_eq!(
            job.backoff,
            Backoff::Fixed {
                interval: Duration::from_secs(7)
            }
        );
        assert_eq!(job.timeout, Some(Duration::from_secs(60)));
        assert_eq!(job.state, JobState::Available);
    }

    #[test]
    fn an_unfinished_job_with_the_key_makes_a_duplicate() {
        let queue = QueueConfig::default();
        let first = insert(NewJob::new("q", "k", json!({})).unique_key("u"), &queue);
        let planned = plan_enqueue(
            NewJob::new("q", "k", json!({})).unique_key("u"),
            &queue,
            std::slice::from_ref(&first),
            None,
            &PolicyDefaults::default(),
            now(),
        )
        .unwrap();
        assert_eq!(planned, Planned::Duplicate(first));
    }

    #[test]
    fn a_finished_job_blocks_its_key_only_within_its_own_unique_for() {
        let mut done = insert(
            NewJob::new("q", "k", json!({})).unique_key("u"),
            &Default::default(),
        );
        done.finished_at = Some(now());
        let later = rota_core::add_duration(now(), Duration::from_secs(30));
        assert!(
            !unique_key_blocks(&done, later),
            "no window: free once finished"
        );
        done.unique_for = Some(Duration::from_secs(60));
        assert!(unique_key_blocks(&done, later));
        done.unique_for = Some(Duration::from_secs(10));
        assert!(!unique_key_blocks(&done, later));
        // The window is the first job's: a newcomer without unique_for is still a duplicate
        // inside it (issue 18).
        done.unique_for = Some(Duration::from_secs(60));
        let planned = plan_enqueue(
            NewJob::new("q", "k", json!({})).unique_key("u"),
            &QueueConfig::default(),
            std::slice::from_ref(&done),
            None,
            &PolicyDefaults::default(),
            later,
        )
        .unwrap();
        assert!(matches!(planned, Planned::Duplicate(_)));
    }

    #[test]
    fn retrying_is_blocked_by_another_live_job_with_the_key() {
        let mut dead = insert(
            NewJob::new("q", "k", json!({})).unique_key("u"),
            &Default::default(),
        );
        dead.finished_at = Some(now());
        let live = insert(
            NewJob::new("q", "k", json!({})).unique_key("u"),
            &Default::default(),
        );
        let same = vec![live.clone(), dead.clone()];
        assert_eq!(retry_blocked_by(&dead, &same).map(|j| j.id), Some(live.id));
        assert!(retry_blocked_by(&dead, std::slice::from_ref(&dead)).is_none());
    }

    #[test]
    fn invalid_jobs_are_refused_naming_the_field() {
        let err = plan_enqueue(
            NewJob::new("q", "", json!({})),
            &QueueConfig::default(),
            &[],
            None,
            &PolicyDefaults::default(),
            now(),
        )
        .unwrap_err();
        assert!(
            matches!(err, StoreError::Invalid(ref v) if v.field == "kind"),
            "{err}"
        );
    }

    /// A far-future time is refused naming the field (issue 18: it was stored saturated and
    /// made the queue unreadable).
    #[test]
    fn a_run_at_beyond_ten_years_is_refused_naming_the_field() {
        let far =
            rota_core::add_duration(now(), rota_core::SCHEDULE_HORIZON + Duration::from_secs(1));
        let err = plan_enqueue(
            NewJob::new("q", "k", json!({})).run_at(far),
            &QueueConfig::default(),
            &[],
            None,
            &PolicyDefaults::default(),
            now(),
        )
        .unwrap_err();
        assert!(
            matches!(err, StoreError::Invalid(ref v) if v.field == "run_at"),
            "{err}"
        );
        let edge = rota_core::add_duration(now(), rota_core::SCHEDULE_HORIZON);
        insert(
            NewJob::new("q", "k", json!({})).run_at(edge),
            &QueueConfig::default(),
        );
    }

    #[test]
    fn an_undeclared_queue_names_the_nearest() {
        let err = queue_not_declared("defualt", &["default".into(), "mail".into()]);
        assert!(
            err.to_string().contains("did you mean \"default\""),
            "{err}"
        );
    }
}
