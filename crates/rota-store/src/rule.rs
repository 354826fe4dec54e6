//! Small rules every backend applies the same way: lease length per queue, selector
//! defaults, the purge filter, progress and page-size validation, schedule restarts.
//! Pure functions, unit-tested without a database.

use std::time::Duration;

use jiff::Timestamp;
use rota_core::schedule::ScheduleDef;
use rota_core::{JobState, Progress, ValidationError};

use rota_core::RetryOverride;

use crate::{JobFilter, QueueConfig, Retention, ScheduleRecord, StoreError};

/// Largest page of a job listing.
pub const PAGE_LIMIT_MAX: usize = 1000;
/// Page size when none is given.
pub const PAGE_LIMIT_DEFAULT: usize = 100;

/// A queue's settings after a partial update: every setting `given` has replaces the
/// existing one, the others are kept (`PUT /v1/queues/{name}`, `rota queues declare`).
pub fn queue_config_merged(existing: &QueueConfig, given: QueueConfig) -> QueueConfig {
    QueueConfig {
        retry: RetryOverride {
            max_attempts: given.retry.max_attempts.or(existing.retry.max_attempts),
            backoff: given
                .retry
                .backoff
                .or_else(|| existing.retry.backoff.clone()),
        },
        lease: given.lease.or(existing.lease),
        timeout: given.timeout.or(existing.timeout),
        concurrency: given.concurrency.or(existing.concurrency),
        key_concurrency: given.key_concurrency.or(existing.key_concurrency),
        key_weights: if given.key_weights.is_empty() {
            existing.key_weights.clone()
        } else {
            given.key_weights
        },
        rate: given.rate.or(existing.rate),
        key_rate: given.key_rate.or(existing.key_rate),
        kind_rates: if given.kind_rates.is_empty() {
            existing.kind_rates.clone()
        } else {
            given.kind_rates
        },
        max_depth: given.max_depth.or(existing.max_depth),
        max_age: given.max_age.or(existing.max_age),
        overflow: given.overflow.or(existing.overflow),
        completed_retention: given.completed_retention.or(existing.completed_retention),
        cancelled_retention: given.cancelled_retention.or(existing.cancelled_retention),
        dead_retention: given.dead_retention.or(existing.dead_retention),
    }
}

/// How long `queue`'s finished jobs are kept: its own settings over the server's.
pub fn retention_for(queue: &QueueConfig, server: &Retention) -> Retention {
    Retention {
        completed: queue.completed_retention.unwrap_or(server.completed),
        cancelled: queue.cancelled_retention.unwrap_or(server.cancelled),
        dead: queue.dead_retention.or(server.dead),
    }
}

/// Whether a fetch (or worker) naming `kinds` takes jobs of `kind`: naming none takes any.
pub fn takes_kind(kinds: &[String], kind: &str) -> bool {
    kinds.is_empty() || kinds.iter().any(|k| k == kind)
}

/// How fresh a worker's last-seen time is kept: a fetch or heartbeat within this of the last
/// refresh leaves it, so an idle worker's empty claim writes nothing (and costs no fsync).
pub const LAST_SEEN_RESOLUTION: Duration = Duration::from_secs(1);

/// Shortest lease: a lease shorter than this would expire before a worker could heartbeat.
pub const LEASE_MIN: Duration = Duration::from_secs(1);
/// Shortest per-attempt timeout.
pub const TIMEOUT_MIN: Duration = rota_core::validation::TIMEOUT_MIN;

/// Checks a queue's settings: a lease of at least [`LEASE_MIN`], a timeout of at least
/// [`TIMEOUT_MIN`], a concurrency of at least 1, a valid retry layer.
pub fn check_queue_config(config: &QueueConfig) -> Result<(), StoreError> {
    config.retry.validate()?;
    for (field, value) in [
        ("concurrency", config.concurrency),
        ("key_concurrency", config.key_concurrency),
    ] {
        if value == Some(0) {
            return Err(ValidationError::new(
                field,
                "must be at least 1 (to stop a queue handing out jobs, pause it)",
            )
            .into());
        }
    }
    if let Some((key, _)) = config.key_weights.iter().find(|(_, w)| **w == 0) {
        return Err(
            ValidationError::new(format!("key_weights.{key}"), "must be at least 1").into(),
        );
    }
    if config.max_depth == Some(0) {
        return Err(ValidationError::new(
            "max_depth",
            "must be at least 1 (to stop accepting jobs, stop the producers)",
        )
        .into());
    }
    check_minimum("lease", config.lease, LEASE_MIN)?;
    check_minimum("timeout", config.timeout, TIMEOUT_MIN)?;
    Ok(())
}

/// Checks that `value`, if set, is at least `min`; the error names `field` and the minimum.
pub fn check_minimum(
    field: &str,
    value: Option<Duration>,
    min: Duration,
) -> Result<(), StoreError> {
    match value {
        Some(v) if v < min => Err(ValidationError::new(
            field,
            format!(
                "must be at least {}, got {}",
                rota_core::format_duration(min),
                rota_core::format_duration(v)
            ),
        )
        .into()),
        _ => Ok(()),
    }
}

/// How many jobs one claim may take from a queue that has `running` jobs running now: at
/// most `max`, and never so many that more than the queue's `concurrency` would run at once
/// (across every worker and node; the backend makes concurrent claims of a limited queue
/// see each other's).
pub fn claim_allowance(queue: &QueueConfig, running: u64, max: usize) -> usize {
    match queue.concurrency {
        None => max,
        Some(limit) => usize::try_from(u64::from(limit).saturating_sub(running))
            .unwrap_or(usize::MAX)
            .min(max),
    }
}

/// The lease a job of `queue` gets: the queue's own, else the server default.
pub fn lease_for(queue: Option<&QueueConfig>, default: Duration) -> Duration {
    queue.and_then(|q| q.lease).unwrap_or(default)
}

/// The filter an operator's selector filter means: one that names no states means
/// `default_state` (dead jobs, for retry and purge), so nothing else is touched.
pub fn selector_filter(filter: &JobFilter, default_state: JobState) -> JobFilter {
    let mut filter = filter.clone();
    if filter.states.is_empty() {
        filter.states = vec![default_state];
    }
    filter
}

/// The states a purge may delete: the final ones among `requested`.
pub fn purgeable_states(requested: &[JobState]) -> Vec<JobState> {
    requested.iter().copied().filter(|s| s.is_final()).collect()
}

/// Checks a progress report (percent 0..=100).
pub fn check_progress(progress: &Progress) -> Result<(), StoreError> {
    if progress.percent > 100 {
        return Err(ValidationError::new(
            "progress.percent",
            format!("must be between 0 and 100, got {}", progress.percent),
        )
        .into());
    }
    Ok(())
}

/// Largest checkpoint, in bytes of JSON: a position to resume from, not the data.
pub const CHECKPOINT_MAX_BYTES: usize = 64 * 1024;

/// Checks a checkpoint's size.
pub fn check_checkpoint(checkpoint: &serde_json::Value) -> Result<(), StoreError> {
    let size = serde_json::to_vec(checkpoint).map_or(0, |v| v.len());
    if size > CHECKPOINT_MAX_BYTES {
        return Err(ValidationError::new(
            "checkpoint",
            format!("is {size} bytes, more than {CHECKPOINT_MAX_BYTES}: keep a position to resume from, not the data"),
        )
        .into());
    }
    Ok(())
}

/// Checks a listing's page size (1..=[`PAGE_LIMIT_MAX`]).
pub fn check_page_limit(limit: usize) -> Result<usize, StoreError> {
    if !(1..=PAGE_LIMIT_MAX).contains(&limit) {
        return Err(ValidationError::new(
            "limit",
            format!("must be between 1 and {PAGE_LIMIT_MAX}, got {limit}"),
        )
        .into());
    }
    Ok(limit)
}

/// Checks a claim request: at least one queue.
pub fn check_claim_queues(queues: &[String]) -> Result<(), StoreError> {
    if queues.is_empty() {
        return Err(ValidationError::new("queues", "name at least one queue to fetch from").into());
    }
    Ok(())
}

/// Checks a schedule definition before it is stored at `now`: valid, and with a slot within
/// the next ten years (`0 0 30 2 *` never comes; a 7-field expression with a past year
/// neither).
pub fn check_schedule(schedule: &ScheduleDef, now: Timestamp) -> Result<(), StoreError> {
    let cadence = schedule.validate()?;
    let horizon = rota_core::add_duration(now, rota_core::SCHEDULE_HORIZON);
    if cadence.next_after(now).is_none_or(|next| next > horizon) {
        return Err(ValidationError::new(
            "expression",
            format!(
                "schedule {:?}: {:?} never fires (no slot in the next 10 years)",
                schedule.name, schedule.expression
            ),
        )
        .into());
    }
    Ok(())
}

/// The `last_slot` an upserted schedule keeps: a new schedule, a changed expression or time
/// zone, or one enabled again starts counting at `now` (the old timing's missed slots, or
/// those passed while disabled, never fire); any other change keeps its place.
pub fn schedule_last_slot(
    existing: Option<&ScheduleRecord>,
    new: &ScheduleDef,
    now: Timestamp,
) -> Timestamp {
    match existing {
        Some(old)
            if old.schedule.expression == new.expression
                && old.schedule.timezone == new.timezone
                && (old.schedule.enabled || !new.enabled) =>
        {
            old.last_slot
        }
        _ => now,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rota_core::schedule::{JobTemplate, MisfirePolicy, ScheduleSource};

    fn t(s: i64) -> Timestamp {
        Timestamp::from_second(1_800_000_000 + s).unwrap()
    }

    fn def(expression: &str, enabled: bool) -> ScheduleDef {
        ScheduleDef {
            name: "s".into(),
            expression: expression.into(),
            timezone: "UTC".into(),
            template: JobTemplate {
                queue: "default".into(),
                kind: "k".into(),
                args: serde_json::json!({}),
                priority: None,
                retry: Default::default(),
                timeout: None,
            },
            misfire: MisfirePolicy::Latest,
            backfill: Duration::from_secs(3600),
            enabled,
            source: ScheduleSource::Api,
        }
    }

    fn record(schedule: ScheduleDef, last_slot: Timestamp) -> ScheduleRecord {
        ScheduleRecord {
            schedule,
            last_slot,
            fired: 0,
            missed: 0,
            recovered: 0,
            last_job: None,
            updated_at: last_slot,
        }
    }

    #[test]
    fn a_queue_lease_wins_over_the_default() {
        let queue = QueueConfig {
            lease: Some(Duration::from_secs(5)),
            ..QueueConfig::default()
        };
        assert_eq!(
            lease_for(Some(&queue), Duration::from_secs(30)),
            Duration::from_secs(5)
        );
        assert_eq!(
            lease_for(Some(&QueueConfig::default()), Duration::from_secs(30)),
            Duration::from_secs(30)
        );
        assert_eq!(
            lease_for(None, Duration::from_secs(30)),
            Duration::from_secs(30)
        );
    }

    /// A partial update changes only what it gives (issue 18: `rota queues declare q1
    /// --lease 1m` reset max_attempts, backoff and timeout).
    #[test]
    fn a_partial_queue_update_keeps_what_it_does_not_give() {
        let existing = QueueConfig {
            retry: RetryOverride {
                max_attempts: Some(5),
                backoff: Some(rota_core::Backoff::Intervals(vec![Duration::from_secs(1)])),
            },
            timeout: Some(Duration::from_secs(1)),
            completed_retention: Some(Duration::from_secs(60)),
            ..QueueConfig::default()
        };
        let merged = queue_config_merged(
            &existing,
            QueueConfig {
                lease: Some(Duration::from_secs(60)),
                ..QueueConfig::default()
            },
        );
        assert_eq!(merged.lease, Some(Duration::from_secs(60)));
        assert_eq!(merged.retry, existing.retry);
        assert_eq!(merged.timeout, existing.timeout);
        assert_eq!(merged.completed_retention, existing.completed_retention);
    }

    #[test]
    fn a_queues_retention_wins_over_the_servers() {
        let server = Retention {
            dead: Some(Duration::from_secs(7 * 86_400)),
            ..Retention::default()
        };
        let queue = QueueConfig {
            completed_retention: Some(Duration::from_secs(3600)),
            ..QueueConfig::default()
        };
        let r = retention_for(&queue, &server);
        assert_eq!(r.completed, Duration::from_secs(3600));
        assert_eq!(r.cancelled, server.cancelled);
        assert_eq!(r.dead, server.dead);
        assert_eq!(
            retention_for(&QueueConfig::default(), &Retention::default()).dead,
            None
        );
    }

    /// Zero or tiny leases and timeouts make no sense and are refused naming the minimum.
    #[test]
    fn a_lease_or_timeout_below_the_minimum_is_refused() {
        for (config, field) in [
            (
                QueueConfig {
                    lease: Some(Duration::ZERO),
                    ..QueueConfig::default()
                },
                "lease",
            ),
            (
                QueueConfig {
                    lease: Some(Duration::from_millis(1)),
                    ..QueueConfig::default()
                },
                "lease",
            ),
            (
                QueueConfig {
                    timeout: Some(Duration::ZERO),
                    ..QueueConfig::default()
                },
                "timeout",
            ),
        ] {
            let err = check_queue_config(&config).unwrap_err();
            assert!(
                matches!(&err, StoreError::Invalid(v) if v.field == field && v.message.contains("at least 1s")),
                "{err}"
            );
        }
        assert!(check_queue_config(&QueueConfig::default()).is_ok());
    }

    #[test]
    fn a_filter_without_states_means_the_default_state() {
        assert_eq!(
            selector_filter(&JobFilter::default(), JobState::Dead).states,
            vec![JobState::Dead]
        );
        let explicit = JobFilter {
            states: vec![JobState::Cancelled],
            ..JobFilter::default()
        };
        assert_eq!(
            selector_filter(&explicit, JobState::Dead).states,
            vec![JobState::Cancelled]
        );
    }

    #[test]
    fn only_final_states_are_purgeable() {
        assert_eq!(
            purgeable_states(&[JobState::Dead, JobState::Running, JobState::Completed]),
            vec![JobState::Dead, JobState::Completed]
        );
        assert!(purgeable_states(&[JobState::Available]).is_empty());
    }

    #[test]
    fn progress_above_100_is_refused_naming_the_field() {
        let ok = Progress {
            percent: 100,
            message: None,
        };
        assert!(check_progress(&ok).is_ok());
        let err = check_progress(&Progress {
            percent: 101,
            message: None,
        })
        .unwrap_err();
        assert!(err.to_string().contains("progress.percent"), "{err}");
    }

    #[test]
    fn page_limits_outside_1_to_1000_are_refused() {
        assert_eq!(check_page_limit(1).unwrap(), 1);
        assert_eq!(check_page_limit(1000).unwrap(), 1000);
        assert!(check_page_limit(0).is_err());
        let err = check_page_limit(1001).unwrap_err();
        assert!(err.to_string().contains("limit"), "{err}");
    }

    #[test]
    fn claims_name_at_least_one_queue() {
        assert!(check_claim_queues(&[]).is_err());
        assert!(check_claim_queues(&["q".into()]).is_ok());
    }

    #[test]
    fn an_invalid_schedule_is_refused() {
        assert!(check_schedule(&def("*/5 * * * *", true), t(0)).is_ok());
        assert!(check_schedule(&def("not cron", true), t(0)).is_err());
    }

    /// Schedules that can never fire are refused (issue 18: they were accepted and shown
    /// enabled with no next slot).
    #[test]
    fn a_schedule_that_never_fires_is_refused() {
        for never in [
            "0 0 30 2 *",
            "@every 100000000h",
            "0 0 0 1 1 * 2020",
            "* * * *",
        ] {
            let err = check_schedule(&def(never, true), t(0)).unwrap_err();
            assert!(
                matches!(err, StoreError::Invalid(ref v) if v.field == "expression"),
                "{never}: {err}"
            );
        }
        assert!(check_schedule(&def("@every 1h", true), t(0)).is_ok());
        assert!(
            check_schedule(&def("0 30 2 * * *", true), t(0)).is_ok(),
            "6 fields"
        );
    }

    #[test]
    fn schedules_restart_only_when_their_timing_changes_or_they_are_enabled_again() {
        let old = record(def("*/5 * * * *", true), t(0));
        assert_eq!(
            schedule_last_slot(None, &old.schedule, t(100)),
            t(100),
            "new"
        );
        let mut same_timing = def("*/5 * * * *", true);
        same_timing.template.kind = "other".into();
        assert_eq!(schedule_last_slot(Some(&old), &same_timing, t(100)), t(0));
        assert_eq!(
            schedule_last_slot(Some(&old), &def("*/10 * * * *", true), t(100)),
            t(100),
            "expression changed"
        );
        let mut zone = def("*/5 * * * *", true);
        zone.timezone = "Europe/London".into();
        assert_eq!(
            schedule_last_slot(Some(&old), &zone, t(100)),
            t(100),
            "zone changed"
        );
        let disabled = record(def("*/5 * * * *", false), t(0));
        assert_eq!(
            schedule_last_slot(Some(&disabled), &def("*/5 * * * *", true), t(100)),
            t(100),
            "enabled again"
        );
        assert_eq!(
            schedule_last_slot(Some(&old), &def("*/5 * * * *", false), t(100)),
            t(0),
            "disabling keeps the place"
        );
    }

    #[test]
    fn a_claim_never_takes_a_queue_past_its_concurrency() {
        let limited = QueueConfig {
            concurrency: Some(4),
            ..QueueConfig::default()
        };
        assert_eq!(claim_allowance(&limited, 0, 10), 4);
        assert_eq!(claim_allowance(&limited, 3, 10), 1);
        assert_eq!(claim_allowance(&limited, 4, 10), 0);
        assert_eq!(
            claim_allowance(&limited, 9, 10),
            0,
            "already over (lowered limit)"
        );
        assert_eq!(claim_allowance(&limited, 1, 2), 2, "max still applies");
        assert_eq!(claim_allowance(&QueueConfig::default(), 1_000, 7), 7);
        let zero = QueueConfig {
            concurrency: Some(0),
            ..QueueConfig::default()
        };
        let err = check_queue_config(&zero).unwrap_err().to_string();
        assert!(
            err.contains("concurrency") && err.contains("pause"),
            "{err}"
        );
    }
}
