//! The one specification of [`Store`] behaviour, run unchanged by every backend.
//!
//! A backend's `tests/conformance.rs` is one line:
//!
//! ```ignore
//! rota_store::conformance_tests!(rota_testkit::sqlite_subject, rota_testkit::sqlite_subject_older);
//! ```
//!
//! where the first factory is an `async fn() -> Subject` giving a fresh, empty, migrated
//! store, and the second one giving a store left at the schema version before the current
//! one (not migrated), for the migration case.
//! That expands to one `#[tokio::test]` per case, grouped in a module per area. A change to
//! Store behaviour lands here as a case, never as a backend-only test.

use std::any::Any;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rota_core::{add_duration, Clock, ErrorReport, Job, JobState, ManualClock, NewJob};

use crate::*;

pub mod change;
pub mod dead;
pub mod flow;
pub mod job_complete;
pub mod job_fetch;
pub mod job_insert;
pub mod job_list;
pub mod leader;
pub mod lease;
pub mod queue;
pub mod schedule;
pub mod store;

/// A fresh store under test, with whatever keeps it alive (a temp dir, a database).
pub struct Subject {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Dropped when the test ends.
    pub guard: Box<dyn Any + Send + Sync>,
}

/// Expands to one `#[tokio::test]` per conformance case for the store made by `$factory`.
#[macro_export]
macro_rules! conformance_tests {
    ($factory:path, $older:path) => {
        mod store_migrate {
            #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn an_older_schema_is_brought_up_to_date() {
                let subject = $older().await;
                $crate::conformance::store::an_older_schema_is_brought_up_to_date(subject).await;
            }
        }
        $crate::conformance_cases! { $factory;
            store {
                health_reports_a_current_schema,
                migrating_a_current_schema_changes_nothing,
            }
            change {
                every_state_change_is_reported_once,
            }
            flow {
                a_key_concurrency_caps_the_running_jobs_of_each_key,
                concurrent_claims_never_exceed_a_key_concurrency,
                claims_take_turns_between_keys,
                a_queue_rate_limits_starts_over_time,
                key_and_kind_rates_limit_only_their_jobs,
                backpressure_refuses_beyond_max_depth_and_max_age,
                concurrent_enqueues_never_pass_a_max_depth,
                the_flow_state_shows_what_limits_hold_back,
                debounced_enqueues_collapse_into_one_job_with_the_latest_args,
                max_wait_bounds_a_debounce_under_a_continuous_stream,
                a_throttle_takes_one_job_per_key_per_period,
                concurrent_debounced_enqueues_make_one_job,
            }
            leader {
                two_contenders_elect_one_leader,
                a_leader_that_stops_renewing_is_replaced_after_expiry,
                a_resigned_leader_hands_over_at_once,
                the_leader_can_be_read_without_changing_it,
            }
            job_insert {
                inserted_jobs_are_available_with_their_effective_policy,
                jobs_with_a_future_run_at_are_scheduled,
                a_duplicate_unique_key_returns_the_existing_job,
                a_unique_key_frees_when_its_job_finishes_unless_unique_for_says_otherwise,
                a_job_is_kept_while_its_unique_key_is_taken,
                enqueue_to_an_undeclared_queue_names_the_nearest_declared_queue,
                a_batch_is_all_or_nothing,
                invalid_jobs_are_rejected_naming_the_field,
                an_invalid_job_in_a_batch_is_named_by_its_place,
                concurrent_batches_fail_alone,
            }
            job_fetch {
                claims_follow_priority_then_run_at_then_id,
                only_due_available_jobs_are_claimed,
                a_claim_for_some_kinds_never_returns_another_kind,
                a_paused_queue_yields_nothing_until_resumed,
                concurrent_claimers_never_share_a_job,
                claiming_from_an_undeclared_queue_is_rejected,
                a_claim_takes_at_most_max_jobs,
                a_queue_concurrency_caps_its_running_jobs,
                concurrent_claims_never_exceed_a_queue_concurrency,
            }
            job_complete {
                a_job_keeps_its_state_changes,
                a_job_history_keeps_the_latest_changes,
                completing_records_the_result_once,
                a_job_failing_with_intervals_backs_off_as_configured_and_ends_dead,
                a_discarded_job_goes_straight_to_dead,
                snoozing_reschedules_without_using_an_attempt,
                handing_back_makes_the_job_available_without_using_an_attempt,
                progress_is_recorded_for_the_lease_holder_only,
                cancelling_a_waiting_job_is_immediate_and_a_running_one_is_requested,
                batch_results_are_per_item,
                snoozes_are_counted_and_limited,
                a_checkpoint_survives_into_the_next_attempt,
                completing_and_claiming_in_one_call_fences_and_counts,
            }
            lease {
                heartbeats_extend_the_lease_and_carry_cancel_requests,
                a_heartbeat_with_a_stale_token_is_rejected,
                an_expired_lease_is_rescued_and_the_job_runs_again,
                a_job_that_kills_its_worker_every_time_ends_dead,
                a_stale_worker_cannot_complete_a_rescued_and_released_job,
                live_leases_are_not_rescued,
                a_queues_lease_applies_to_its_jobs,
                running_jobs_are_listed_soonest_expiry_first,
            }
            dead {
                dead_jobs_survive_pruning_unless_a_dead_retention_is_set,
                finished_jobs_are_pruned_after_their_retention,
                retrying_dead_jobs_by_id_keeps_their_history,
                retrying_dead_jobs_by_filter_touches_only_matching_dead_jobs,
                purging_deletes_only_matching_jobs_in_final_states,
                dead_jobs_are_grouped_by_the_cause_of_their_last_error,
                dead_groups_can_be_read_from_the_latest_deaths_only,
                retrying_a_dead_job_whose_key_another_live_job_holds_is_refused,
                pruning_a_queue_touches_only_its_jobs,
            }
            job_list {
                a_missing_job_is_not_found,
                listing_filters_and_pages_newest_first,
                a_scan_limit_bounds_a_listing_and_continues_it,
            }
            queue {
                a_fresh_store_has_the_default_queue,
                queues_list_counts_per_state_and_the_oldest_ready_age,
                declaring_again_updates_settings_and_queue_policy_applies_to_jobs,
                pausing_an_undeclared_queue_is_not_found,
                workers_are_registered_and_seen_on_fetch,
                job_counts_follow_every_state_change,
                a_merge_declare_changes_only_the_settings_given,
            }
            schedule {
                upserts_restart_the_slot_count_only_when_the_timing_changes,
                a_slot_fires_once_and_a_stale_fire_loses_the_race,
                deleting_a_schedule_keeps_its_jobs,
                the_next_due_time_is_the_earliest_waiting_run_at,
                a_schedule_for_an_undeclared_queue_is_refused_naming_the_nearest,
            }
        }
    };
}

/// Implementation detail of [`conformance_tests!`].
#[doc(hidden)]
#[macro_export]
macro_rules! conformance_cases {
    ($factory:path; $($area:ident { $($case:ident),* $(,)? })*) => {
        $(
            mod $area {
                $(
                    #[::tokio::test(flavor = "multi_thread", worker_threads = 2)]
                    async fn $case() {
                        let subject = $factory().await;
                        $crate::conformance::$area::$case(subject).await;
                    }
                )*
            }
        )*
    };
}

/// A test clock, at the same instant for every case.
pub fn clock() -> ManualClock {
    ManualClock::default()
}

/// Seconds.
pub fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A job of `kind` on the default queue.
pub fn new_job(kind: &str) -> NewJob {
    NewJob::new("default", kind, serde_json::json!({"kind": kind}))
}

/// Inserts jobs, expecting success.
pub async fn insert(store: &dyn Store, jobs: Vec<NewJob>, now: Timestamp) -> Vec<Job> {
    store
        .job_insert_many(JobInsertManyParams {
            jobs,
            defaults: Arc::default(),
            now,
        })
        .await
        .expect("insert")
        .into_iter()
        .map(|i| i.job)
        .collect()
}

/// Inserts one job.
pub async fn insert_one(store: &dyn Store, job: NewJob, now: Timestamp) -> Job {
    insert(store, vec![job], now).await.remove(0)
}

/// Claims from `queues` for `worker` with a 30 s lease.
pub async fn claim(
    store: &dyn Store,
    worker: &str,
    queues: &[&str],
    kinds: &[&str],
    max: usize,
    now: Timestamp,
) -> Vec<Job> {
    store
        .job_claim_many(JobClaimManyParams {
            worker: worker.into(),
            queues: queues.iter().map(|q| q.to_string()).collect(),
            kinds: kinds.iter().map(|k| k.to_string()).collect(),
            max,
            lease: secs(30),
            now,
        })
        .await
        .expect("claim")
}

/// Declares queue `name` with a concurrency limit.
pub async fn declare_limited(store: &dyn Store, name: &str, limit: u32, now: Timestamp) {
    store
        .queue_declare(QueueDeclareParams {
            merge: false,
            name: name.into(),
            config: QueueConfig {
                concurrency: Some(limit),
                ..QueueConfig::default()
            },
            now,
        })
        .await
        .expect("declare");
}

/// The lease reference of a claimed job.
pub fn lease_of(job: &Job) -> LeaseRef {
    LeaseRef {
        job: job.id,
        token: job.lease.as_ref().expect("job is leased").token,
    }
}

/// Completes one claimed job.
pub async fn complete(
    store: &dyn Store,
    lease: LeaseRef,
    now: Timestamp,
) -> Result<Job, StoreError> {
    store
        .job_complete_many(JobCompleteManyParams {
            completions: vec![Completion {
                lease,
                result: Some(serde_json::json!({"ok": true})),
            }],
            now,
        })
        .await
        .expect("complete call")
        .remove(0)
}

/// Fails one claimed job.
pub async fn fail(
    store: &dyn Store,
    lease: LeaseRef,
    message: &str,
    discard: bool,
    now: Timestamp,
) -> Job {
    store
        .job_fail_many(JobFailManyParams {
            failures: vec![Failure {
                lease,
                error: ErrorReport {
                    message: message.into(),
                    backtrace: Some(format!("{message}\n  at handler (job.rs:1)")),
                },
                discard,
            }],
            now,
        })
        .await
        .expect("fail call")
        .remove(0)
        .expect("fail")
}

/// Hands one claimed job back, expecting success.
pub async fn hand_back(store: &dyn Store, lease: LeaseRef, now: Timestamp) -> Job {
    store
        .lease_hand_back_many(LeaseHandBackManyParams {
            leases: vec![lease],
            now,
        })
        .await
        .expect("hand back call")
        .remove(0)
        .expect("hand back")
}

/// Rescues expired leases at `now`.
pub async fn rescue(store: &dyn Store, now: Timestamp) -> RescueReport {
    store
        .lease_rescue_expired(LeaseRescueParams { now, limit: 1000 })
        .await
        .expect("rescue")
}

/// Declares a queue with default settings.
pub async fn declare(store: &dyn Store, name: &str, now: Timestamp) -> Queue {
    store
        .queue_declare(QueueDeclareParams {
            merge: false,
            name: name.into(),
            config: QueueConfig::default(),
            now,
        })
        .await
        .expect("declare")
}

/// The current time of a fresh test clock; most cases need only this and offsets.
pub fn t0() -> Timestamp {
    clock().now()
}
