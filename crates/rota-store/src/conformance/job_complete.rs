//! Reporting outcomes: complete, fail, snooze, hand back, progress, cancel.

use rota_core::{add_duration, Backoff, JobState, Progress, TransitionError};
use serde_json::json;

use super::*;

/// The state changes a transition makes are kept with the job, with their cause and the
/// worker involved, but fetches and completions (the row records those) and promotions.
pub async fn a_job_keeps_its_state_changes(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let id = insert_one(store, new_job("a").max_attempts(3), now)
        .await
        .id;
    let job = claim(store, "w1", &["default"], &[], 1, now)
        .await
        .remove(0);
    fail(
        store,
        lease_of(&job),
        "boom",
        false,
        add_duration(now, secs(1)),
    )
    .await;
    // Due after its backoff: claimed again, handed back, claimed, completed.
    let later = add_duration(now, secs(3600));
    let job = claim(store, "w2", &["default"], &[], 1, later)
        .await
        .remove(0);
    assert_eq!(job.id, id);
    store
        .lease_hand_back_many(LeaseHandBackManyParams {
            leases: vec![lease_of(&job)],
            now: add_duration(later, secs(1)),
        })
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    let job = claim(
        store,
        "w3",
        &["default"],
        &[],
        1,
        add_duration(later, secs(2)),
    )
    .await
    .remove(0);
    complete(store, lease_of(&job), add_duration(later, secs(3)))
        .await
        .unwrap();
    let history = store.job_history(JobHistoryParams { id }).await.unwrap();
    let seen: Vec<(JobState, JobState, &str, Option<&str>)> = history
        .iter()
        .map(|c| (c.from, c.to, c.cause.as_str(), c.worker.as_deref()))
        .collect();
    use JobState::*;
    assert_eq!(
        seen,
        vec![
            (Running, Retryable, "failed", Some("w1")),
            (Running, Available, "handed back", Some("w2")),
        ]
    );
    assert_eq!(history[0].at, add_duration(now, secs(1)));
    assert_eq!(history[1].at, add_duration(later, secs(1)));
    let missing = rota_core::JobId::new(now);
    let err = store
        .job_history(JobHistoryParams { id: missing })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

/// A job's history keeps only its latest changes (the last [`HISTORY_CHARS`] of its log).
pub async fn a_job_history_keeps_the_latest_changes(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let id = insert_one(store, new_job("a").max_attempts(1000), now)
        .await
        .id;
    // Each round is a fetch (not kept) and a hand-back (kept).
    let rounds = 60;
    for i in 0..rounds {
        let at = add_duration(now, secs(i as u64));
        let job = claim(store, "w", &["default"], &[], 1, at).await.remove(0);
        hand_back(store, lease_of(&job), at).await;
    }
    let history = store.job_history(JobHistoryParams { id }).await.unwrap();
    assert!(
        (30..80).contains(&history.len()),
        "the latest changes, about 2,000 bytes of them: {}",
        history.len()
    );
    assert!(
        history.windows(2).all(|w| w[0].at <= w[1].at),
        "oldest first"
    );
    let last = history.last().unwrap();
    assert_eq!(last.cause, "handed back");
    assert_eq!(last.at, add_duration(now, secs(rounds as u64 - 1)));
}

/// Completion stores the result and finishes the job; a second completion conflicts.
pub async fn completing_records_the_result_once(s: Subject) {
    let store = &*s.store;
    let now = t0();
    insert_one(store, new_job("a"), now).await;
    let job = claim(store, "w", &["default"], &[], 1, now).await.remove(0);
    let done = complete(store, lease_of(&job), add_duration(now, secs(2)))
        .await
        .unwrap();
    assert_eq!(done.state, JobState::Completed);
    assert_eq!(done.result, Some(json!({"ok": true})));
    assert_eq!(done.finished_at, Some(add_duration(now, secs(2))));
    assert_eq!(done.lease, None);
    let again = complete(store, lease_of(&job), add_duration(now, secs(3)))
        .await
        .unwrap_err();
    assert_eq!(again.kind(), ErrorKind::LeaseLost);
    assert_eq!(
        store.job_get(JobGetParams { id: job.id }).await.unwrap(),
        done
    );
}

/// Intervals [30s, 60s, 120s], max_attempts 3: three failures, the configured delays
/// between attempts, then dead with three errors, message and backtrace, args intact.
pub async fn a_job_failing_with_intervals_backs_off_as_configured_and_ends_dead(s: Subject) {
    let store = &*s.store;
    let clock = clock();
    let args = json!({"invoice": 42, "lines": [1, 2, 3]});
    let job = NewJob::new("default", "invoice.send", args.clone())
        .max_attempts(3)
        .backoff(Backoff::Intervals(vec![secs(30), secs(60), secs(120)]));
    let id = insert_one(store, job, clock.now()).await.id;
    let mut attempt_starts = Vec::new();
    for attempt in 1..=3u32 {
        // Not claimable a second before its backoff ends.
        let mut got = claim(store, "w", &["default"], &[], 1, clock.now()).await;
        while got.is_empty() {
            clock.advance(secs(1));
            got = claim(store, "w", &["default"], &[], 1, clock.now()).await;
        }
        let job = got.remove(0);
        assert_eq!((job.id, job.attempt), (id, attempt));
        attempt_starts.push(clock.now());
        clock.advance(secs(1));
        let failed = fail(
            store,
            lease_of(&job),
            &format!("smtp timeout #{attempt}"),
            false,
            clock.now(),
        )
        .await;
        let expected = if attempt < 3 {
            JobState::Retryable
        } else {
            JobState::Dead
        };
        assert_eq!(failed.state, expected);
    }
    let gaps: Vec<u64> = attempt_starts
        .windows(2)
        .map(|w| w[1].duration_since(w[0]).as_secs() as u64)
        .collect();
    // Each gap is one second of running plus the configured delay.
    assert_eq!(gaps, [31, 61]);
    let dead = store.job_get(JobGetParams { id }).await.unwrap();
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.args, args);
    assert_eq!(dead.errors.len(), 3);
    for (i, e) in dead.errors.iter().enumerate() {
        assert_eq!(e.attempt, i as u32 + 1);
        assert_eq!(e.message, format!("smtp timeout #{}", i + 1));
        assert!(e.backtrace.as_deref().unwrap().contains("at handler"));
        assert_eq!(e.worker, "w");
        assert_eq!(e.at, add_duration(attempt_starts[i], secs(1)));
    }
}

/// A handler that discards its job sends it to dead at once.
pub async fn a_discarded_job_goes_straight_to_dead(s: Subject) {
    let store = &*s.store;
    let now = t0();
    insert_one(store, new_job("a"), now).await;
    let job = claim(store, "w", &["default"], &[], 1, now).await.remove(0);
    let dead = fail(store, lease_of(&job), "bad input", true, now).await;
    assert_eq!(
        (dead.state, dead.attempt, dead.max_attempts),
        (JobState::Dead, 1, 20)
    );
}

/// Snooze: scheduled for later, the attempt given back.
pub async fn snoozing_reschedules_without_using_an_attempt(s: Subject) {
    let store = &*s.store;
    let now = t0();
    insert_one(store, new_job("a"), now).await;
    let job = claim(store, "w", &["default"], &[], 1, now).await.remove(0);
    let snoozed = store
        .job_snooze_many(JobSnoozeManyParams {
            snoozes: vec![Snooze {
                lease: lease_of(&job),
                delay: secs(300),
            }],
            max_snoozes: 10,
            now,
        })
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert_eq!((snoozed.state, snoozed.attempt), (JobState::Scheduled, 0));
    assert_eq!(snoozed.run_at, add_duration(now, secs(300)));
    assert!(claim(
        store,
        "w",
        &["default"],
        &[],
        1,
        add_duration(now, secs(299))
    )
    .await
    .is_empty());
    let again = claim(
        store,
        "w",
        &["default"],
        &[],
        1,
        add_duration(now, secs(300)),
    )
    .await;
    assert_eq!(again[0].attempt, 1);
}

/// Hand back: available again at once, attempt not used, the old token dead.
pub async fn handing_back_makes_the_job_available_without_using_an_attempt(s: Subject) {
    let store = &*s.store;
    let now = t0();
    insert_one(store, new_job("a"), now).await;
    let job = claim(store, "w1", &["default"], &[], 1, now)
        .await
        .remove(0);
    let back = store
        .lease_hand_back_many(LeaseHandBackManyParams {
            leases: vec![lease_of(&job)],
            now,
        })
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert_eq!(
        (back.state, back.attempt, back.lease.clone()),
        (JobState::Available, 0, None)
    );
    let again = claim(store, "w2", &["default"], &[], 1, now)
        .await
        .remove(0);
    assert_eq!(again.attempt, 1);
    assert_eq!(
        complete(store, lease_of(&job), now)
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::LeaseLost
    );
}

/// Progress needs the current lease.
pub async fn progress_is_recorded_for_the_lease_holder_only(s: Subject) {
    let store = &*s.store;
    let now = t0();
    insert_one(store, new_job("a"), now).await;
    let job = claim(store, "w", &["default"], &[], 1, now).await.remove(0);
    let progress = Progress {
        percent: 40,
        message: Some("copying".into()),
    };
    let updated = store
        .job_progress(JobProgressParams {
            lease: lease_of(&job),
            progress: progress.clone(),
            now,
        })
        .await
        .unwrap();
    assert_eq!(updated.progress, Some(progress.clone()));
    let stale = LeaseRef {
        job: job.id,
        token: 999,
    };
    let err = store
        .job_progress(JobProgressParams {
            lease: stale,
            progress,
            now,
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::LeaseLost);
    let too_much = Progress {
        percent: 101,
        message: None,
    };
    let err = store
        .job_progress(JobProgressParams {
            lease: lease_of(&job),
            progress: too_much,
            now,
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
}

/// Waiting jobs are cancelled at once; running ones get a request the worker sees.
pub async fn cancelling_a_waiting_job_is_immediate_and_a_running_one_is_requested(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let waiting = insert_one(store, new_job("a").run_at(add_duration(now, secs(60))), now).await;
    insert_one(store, new_job("b"), now).await;
    let running = claim(store, "w", &["default"], &[], 1, now).await.remove(0);
    let out = store
        .job_cancel_many(JobCancelManyParams {
            ids: vec![waiting.id, running.id],
            now,
        })
        .await
        .unwrap();
    let cancelled = out[0].as_ref().unwrap();
    assert_eq!(
        (cancelled.state, cancelled.finished_at),
        (JobState::Cancelled, Some(now))
    );
    let requested = out[1].as_ref().unwrap();
    assert_eq!(
        (requested.state, requested.cancel_requested),
        (JobState::Running, true)
    );
    // The worker reports failure after stopping: the job ends cancelled, not retried.
    let ended = fail(store, lease_of(&running), "stopped on request", false, now).await;
    assert_eq!(ended.state, JobState::Cancelled);
    let again = store
        .job_cancel_many(JobCancelManyParams {
            ids: vec![waiting.id],
            now,
        })
        .await
        .unwrap()
        .remove(0)
        .unwrap_err();
    assert_eq!(again.kind(), ErrorKind::Conflict);
}

/// In a batch, a stale lease fails alone; the others are recorded.
pub async fn batch_results_are_per_item(s: Subject) {
    let store = &*s.store;
    let now = t0();
    insert(store, vec![new_job("a"), new_job("a")], now).await;
    let jobs = claim(store, "w", &["default"], &[], 2, now).await;
    let missing = rota_core::JobId::new(now);
    let out = store
        .job_complete_many(JobCompleteManyParams {
            completions: vec![
                Completion {
                    lease: lease_of(&jobs[0]),
                    result: None,
                },
                Completion {
                    lease: LeaseRef {
                        job: jobs[1].id,
                        token: 77,
                    },
                    result: None,
                },
                Completion {
                    lease: LeaseRef {
                        job: missing,
                        token: 1,
                    },
                    result: None,
                },
            ],
            now,
        })
        .await
        .unwrap();
    assert_eq!(out[0].as_ref().unwrap().state, JobState::Completed);
    assert!(matches!(
        out[1].as_ref().unwrap_err(),
        StoreError::Transition(TransitionError::LeaseLost {
            presented: 77,
            current: Some(1),
            ..
        })
    ));
    assert_eq!(out[2].as_ref().unwrap_err().kind(), ErrorKind::NotFound);
    assert_eq!(
        store
            .job_get(JobGetParams { id: jobs[1].id })
            .await
            .unwrap()
            .state,
        JobState::Running
    );
}

/// Snoozes are counted; the one beyond the limit is a failed attempt (issue 17).
pub async fn snoozes_are_counted_and_limited(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let id = insert_one(store, new_job("a").max_attempts(5), now)
        .await
        .id;
    let snooze = |job: Job| async move {
        store
            .job_snooze_many(JobSnoozeManyParams {
                snoozes: vec![Snooze {
                    lease: lease_of(&job),
                    delay: secs(1),
                }],
                max_snoozes: 2,
                now,
            })
            .await
            .unwrap()
            .remove(0)
            .unwrap()
    };
    let mut at = now;
    for expected in 1..=2 {
        let job = claim(store, "w", &["default"], &[], 1, at).await.remove(0);
        let snoozed = snooze(job).await;
        assert_eq!((snoozed.snoozes, snoozed.attempt), (expected, 0));
        at = add_duration(at, secs(2));
    }
    let job = claim(store, "w", &["default"], &[], 1, at).await.remove(0);
    let failed = snooze(job).await;
    assert_eq!(
        failed.state,
        JobState::Retryable,
        "the third snooze is a failure"
    );
    assert_eq!(failed.attempt, 1);
    assert!(failed.errors[0].message.contains("snoozed 2 times"));
    assert_eq!(
        failed.snooze_log.len(),
        2,
        "both snoozes are in the history"
    );
    assert!(failed.snooze_log[0].until > failed.snooze_log[0].at);
    assert_eq!(
        store.job_get(JobGetParams { id }).await.unwrap().snoozes,
        0,
        "counted afresh after the failure"
    );
}

/// A checkpoint saved by the lease holder is kept and given to the next attempt; a stale
/// worker cannot save one, and a big one is refused (issue 17).
pub async fn a_checkpoint_survives_into_the_next_attempt(s: Subject) {
    let store = &*s.store;
    let now = t0();
    insert_one(store, new_job("a").max_attempts(3), now).await;
    let job = claim(store, "w", &["default"], &[], 1, now).await.remove(0);
    let saved = store
        .job_checkpoint(JobCheckpointParams {
            lease: lease_of(&job),
            checkpoint: serde_json::json!({"done": 40}),
            now,
        })
        .await
        .unwrap();
    assert_eq!(saved.checkpoint, Some(serde_json::json!({"done": 40})));
    let big = serde_json::json!({"blob": "x".repeat(CHECKPOINT_MAX_BYTES)});
    let err = store
        .job_checkpoint(JobCheckpointParams {
            lease: lease_of(&job),
            checkpoint: big,
            now,
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    fail(store, lease_of(&job), "crashed", false, now).await;
    let stale = store
        .job_checkpoint(JobCheckpointParams {
            lease: lease_of(&job),
            checkpoint: serde_json::json!({"done": 99}),
            now,
        })
        .await
        .unwrap_err();
    assert_eq!(stale.kind(), ErrorKind::LeaseLost);
    let later = add_duration(now, secs(3600));
    let again = claim(store, "w", &["default"], &[], 1, later)
        .await
        .remove(0);
    assert_eq!(again.attempt, 2);
    assert_eq!(again.checkpoint, Some(serde_json::json!({"done": 40})));
}

/// One call completes a batch and leases the next: completions first (so the places they
/// free count), each per item and fenced by its token, a completed job never completed twice,
/// and the counts follow both halves.
pub async fn completing_and_claiming_in_one_call_fences_and_counts(s: Subject) {
    let store = &*s.store;
    let now = t0();
    declare_limited(store, "limited", 2, now).await;
    let job = || NewJob::new("limited", "a", json!({}));
    insert(store, (0..4).map(|_| job()).collect(), now).await;
    let running = claim(store, "w", &["limited"], &[], 10, now).await;
    assert_eq!(running.len(), 2, "the queue's concurrency holds the rest");
    let call = |queue: &'static str, completions: Vec<Completion>| async move {
        store
            .job_complete_and_claim(JobCompleteAndClaimParams {
                completions,
                claim: JobClaimManyParams {
                    worker: "w".into(),
                    queues: vec![queue.into()],
                    kinds: vec![],
                    max: 10,
                    lease: secs(30),
                    now: add_duration(now, secs(1)),
                },
            })
            .await
            .expect("complete-and-claim call")
    };
    let claimed = |out: &CompletedAndClaimed| out.claimed.as_ref().expect("claim").clone();
    let stale = LeaseRef {
        job: running[1].id,
        token: lease_of(&running[1]).token + 1,
    };
    let out = call(
        "limited",
        vec![
            Completion {
                lease: lease_of(&running[0]),
                result: Some(json!({"n": 1})),
            },
            Completion {
                lease: stale,
                result: None,
            },
        ],
    )
    .await;
    let done = out.completions[0].as_ref().expect("a held lease completes");
    assert_eq!(
        (done.state, done.result.clone()),
        (JobState::Completed, Some(json!({"n": 1})))
    );
    assert_eq!(
        out.completions[1].as_ref().unwrap_err().kind(),
        ErrorKind::LeaseLost,
        "a token the job does not hold is refused"
    );
    let next = claimed(&out);
    assert_eq!(
        next.len(),
        1,
        "exactly the place the completion freed is taken"
    );
    let next = &next[0];
    assert_eq!(next.state, JobState::Running);
    assert!(![running[0].id, running[1].id].contains(&next.id));
    // The refused completion left its job running under its holder's lease.
    let other = store
        .job_get(JobGetParams { id: running[1].id })
        .await
        .unwrap();
    assert_eq!(
        (other.state, other.lease.map(|l| l.token)),
        (JobState::Running, Some(lease_of(&running[1]).token))
    );
    // The same completion again is refused and changes nothing; nothing is freed to claim.
    let again = call(
        "limited",
        vec![Completion {
            lease: lease_of(&running[0]),
            result: Some(json!({"n": 2})),
        }],
    )
    .await;
    assert_eq!(
        again.completions[0].as_ref().unwrap_err().kind(),
        ErrorKind::LeaseLost
    );
    assert!(claimed(&again).is_empty());
    // A claim that fails (an undeclared queue) leaves the completions it came with.
    let failing = call(
        "limitd",
        vec![Completion {
            lease: lease_of(next),
            result: None,
        }],
    )
    .await;
    assert_eq!(
        failing.completions[0].as_ref().map(|j| j.state).unwrap(),
        JobState::Completed
    );
    assert!(matches!(
        failing.claimed,
        Err(StoreError::QueueNotDeclared { .. })
    ));
    let first = store
        .job_get(JobGetParams { id: running[0].id })
        .await
        .unwrap();
    assert_eq!(
        first.result,
        Some(json!({"n": 1})),
        "completed exactly once"
    );
    let counts = store.job_counts(JobCountsParams::default()).await.unwrap();
    let count = |state: JobState| {
        counts
            .iter()
            .filter(|c| c.queue == "limited" && c.state == state)
            .map(|c| c.count)
            .sum::<u64>()
    };
    assert_eq!(
        (
            count(JobState::Completed),
            count(JobState::Running),
            count(JobState::Available)
        ),
        (2, 1, 1)
    );
}
