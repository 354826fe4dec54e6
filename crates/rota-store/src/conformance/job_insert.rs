//! Enqueue: states, policy resolution, uniqueness, declared queues, atomic batches.

use std::collections::HashMap;
use std::sync::Arc;

use rota_core::{add_duration, Backoff, JobState, NewJob, RetryOverride, RetryPolicy};
use serde_json::json;

use super::*;

/// A new job is available now, with the policy resolved job > kind > queue > default.
pub async fn inserted_jobs_are_available_with_their_effective_policy(s: Subject) {
    let store = &*s.store;
    let now = t0();
    store
        .queue_declare(QueueDeclareParams {
            merge: false,
            name: "mail".into(),
            config: QueueConfig {
                retry: RetryOverride {
                    max_attempts: Some(7),
                    backoff: Some(Backoff::Fixed { interval: secs(9) }),
                },
                ..QueueConfig::default()
            },
            now,
        })
        .await
        .unwrap();
    let defaults = Arc::new(PolicyDefaults {
        kinds: HashMap::from([(
            "mail.send".to_string(),
            RetryOverride {
                max_attempts: Some(4),
                backoff: None,
            },
        )]),
        ..PolicyDefaults::default()
    });
    let jobs = vec![
        NewJob::new("mail", "mail.send", json!({"to": "a@example.com"})).max_attempts(2),
        NewJob::new("mail", "mail.send", json!({})),
        NewJob::new("mail", "other", json!({})),
        NewJob::new("default", "other", json!({})),
    ];
    let inserted = store
        .job_insert_many(JobInsertManyParams {
            jobs,
            defaults,
            now,
        })
        .await
        .unwrap();
    let policies: Vec<(u32, Backoff)> = inserted
        .iter()
        .map(|i| (i.job.max_attempts, i.job.backoff.clone()))
        .collect();
    let fixed9 = Backoff::Fixed { interval: secs(9) };
    assert_eq!(
        policies,
        [
            (2, fixed9.clone()),
            (4, fixed9.clone()),
            (7, fixed9),
            (20, RetryPolicy::default().backoff)
        ]
    );
    for i in &inserted {
        assert!(!i.duplicate);
        assert_eq!(i.job.state, JobState::Available);
        assert_eq!(
            (i.job.attempt, i.job.run_at, i.job.created_at),
            (0, now, now)
        );
        // What was stored is what was returned.
        assert_eq!(
            store.job_get(JobGetParams { id: i.job.id }).await.unwrap(),
            i.job
        );
    }
    assert_eq!(inserted[0].job.args, json!({"to": "a@example.com"}));
}

/// A job whose run_at is in the future waits as `scheduled`.
pub async fn jobs_with_a_future_run_at_are_scheduled(s: Subject) {
    let now = t0();
    let job = insert_one(
        &*s.store,
        new_job("a").run_at(add_duration(now, secs(60))),
        now,
    )
    .await;
    assert_eq!(job.state, JobState::Scheduled);
    assert!(claim(&*s.store, "w", &["default"], &[], 10, now)
        .await
        .is_empty());
}

/// The same unique key while the first job is unfinished returns that job, flagged.
pub async fn a_duplicate_unique_key_returns_the_existing_job(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let first = insert_one(store, new_job("a").unique_key("order-1"), now).await;
    let again = store
        .job_insert_many(JobInsertManyParams {
            jobs: vec![
                new_job("a").unique_key("order-1"),
                new_job("a").unique_key("order-2"),
            ],
            defaults: Arc::default(),
            now,
        })
        .await
        .unwrap();
    assert!(again[0].duplicate);
    assert_eq!(again[0].job.id, first.id);
    assert!(!again[1].duplicate);
    let page = store
        .job_list(JobListParams {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.jobs.len(), 2);
}

/// Once the job with a key finished, the key is free again, unless that job's `unique_for`
/// covers it: the window is the first job's, whatever the newcomer says (issue 18).
pub async fn a_unique_key_frees_when_its_job_finishes_unless_unique_for_says_otherwise(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let mut first = new_job("a").unique_key("k");
    first.unique_for = Some(secs(3600));
    insert_one(store, first, now).await;
    let job = claim(store, "w", &["default"], &[], 1, now).await.remove(0);
    complete(store, lease_of(&job), now).await.unwrap();

    let again = |at| async move {
        store
            .job_insert_many(JobInsertManyParams {
                jobs: vec![new_job("a").unique_key("k")],
                defaults: Arc::default(),
                now: at,
            })
            .await
            .unwrap()
            .remove(0)
    };
    let dup = again(add_duration(now, secs(60))).await;
    assert!(
        dup.duplicate,
        "finished within the first job's unique_for: still a duplicate"
    );
    assert_eq!(dup.job.id, job.id);
    let fresh = again(add_duration(now, secs(7200))).await;
    assert!(!fresh.duplicate, "after unique_for the key is free");

    // Without a window, a finished job frees its key at once.
    insert_one(store, new_job("b").unique_key("k2"), now).await;
    let b = claim(store, "w", &["default"], &["b"], 1, now)
        .await
        .remove(0);
    complete(store, lease_of(&b), now).await.unwrap();
    let plain = store
        .job_insert_many(JobInsertManyParams {
            jobs: vec![new_job("b").unique_key("k2")],
            defaults: Arc::default(),
            now,
        })
        .await
        .unwrap();
    assert!(!plain[0].duplicate);
}

/// A finished job whose unique key is still taken is kept, whatever the retention: a
/// `unique_for` of 48 h outlives a 24 h retention (issue 18: the job was pruned and the key
/// freed early).
pub async fn a_job_is_kept_while_its_unique_key_is_taken(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let mut windowed = new_job("a").unique_key("k");
    windowed.unique_for = Some(secs(48 * 3600));
    insert_one(store, windowed, now).await;
    let job = claim(store, "w", &["default"], &[], 1, now).await.remove(0);
    complete(store, lease_of(&job), now).await.unwrap();
    let prune = |at| JobPruneParams {
        queue: None,
        now: at,
        completed_retention: secs(24 * 3600),
        cancelled_retention: secs(24 * 3600),
        dead_retention: None,
        limit: 100,
    };
    let day_and_a_half = add_duration(now, secs(36 * 3600));
    assert!(store
        .job_prune(prune(day_and_a_half))
        .await
        .unwrap()
        .is_empty());
    let dup = store
        .job_insert_many(JobInsertManyParams {
            jobs: vec![new_job("a").unique_key("k")],
            defaults: Arc::default(),
            now: day_and_a_half,
        })
        .await
        .unwrap();
    assert!(
        dup[0].duplicate,
        "the key is still taken after the retention"
    );
    let report = store
        .job_prune(prune(add_duration(now, secs(49 * 3600))))
        .await
        .unwrap();
    assert_eq!(report.completed, 1, "pruned once its window passed");
}

/// `email` when only `emails` exists: rejected, naming `emails`.
pub async fn enqueue_to_an_undeclared_queue_names_the_nearest_declared_queue(s: Subject) {
    let store = &*s.store;
    let now = t0();
    declare(store, "emails", now).await;
    let err = store
        .job_insert_many(JobInsertManyParams {
            jobs: vec![NewJob::new("email", "send", json!({}))],
            defaults: Arc::default(),
            now,
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    assert!(
        matches!(&err, StoreError::QueueNotDeclared { queue, suggestion: Some(s) } if queue == "email" && s == "emails"),
        "{err:?}"
    );
    assert!(err.to_string().contains("did you mean \"emails\""), "{err}");
}

/// One bad job in a batch rejects the whole batch; nothing of it is stored.
pub async fn a_batch_is_all_or_nothing(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let err = store
        .job_insert_many(JobInsertManyParams {
            jobs: vec![
                new_job("a"),
                new_job("b"),
                NewJob::new("nope", "c", json!({})),
            ],
            defaults: Arc::default(),
            now,
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
    let page = store
        .job_list(JobListParams {
            limit: 100,
            ..Default::default()
        })
        .await
        .unwrap();
    assert!(
        page.jobs.is_empty(),
        "partial batch stored: {:?}",
        page.jobs
    );
}

/// Validation errors name the field.
pub async fn invalid_jobs_are_rejected_naming_the_field(s: Subject) {
    let store = &*s.store;
    for (job, field) in [
        (new_job("a").priority(12), "priority"),
        (new_job("has space"), "kind"),
        (new_job("a").max_attempts(0), "max_attempts"),
    ] {
        let err = store
            .job_insert_many(JobInsertManyParams {
                jobs: vec![job],
                defaults: Arc::default(),
                now: t0(),
            })
            .await
            .unwrap_err();
        assert_eq!(err.kind(), ErrorKind::Invalid);
        assert!(
            matches!(&err, StoreError::Invalid(v) if v.field == field),
            "{err:?}"
        );
    }
}

/// Concurrent batches succeed or fail alone: a rejected batch takes nothing else with it.
pub async fn concurrent_batches_fail_alone(s: Subject) {
    let now = t0();
    let tasks: Vec<_> = (0..40)
        .map(|i| {
            let store = s.store.clone();
            tokio::spawn(async move {
                let queue = if i % 5 == 0 { "missing" } else { "default" };
                let jobs = vec![new_job("a"), NewJob::new(queue, "b", json!({ "i": i }))];
                store
                    .job_insert_many(JobInsertManyParams {
                        jobs,
                        defaults: Arc::default(),
                        now,
                    })
                    .await
                    .map(|inserted| inserted.len())
            })
        })
        .collect();
    let mut stored = 0;
    for (i, task) in tasks.into_iter().enumerate() {
        match task.await.unwrap() {
            Ok(n) => {
                assert_ne!(i % 5, 0, "batch {i} should have been rejected");
                stored += n;
            }
            Err(err) => {
                assert_eq!(i % 5, 0, "batch {i} failed: {err}");
                assert_eq!(err.kind(), ErrorKind::NotFound);
            }
        }
    }
    let page = s
        .store
        .job_list(JobListParams {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!((stored, page.jobs.len()), (64, 64));
}

/// In a batch of several, an invalid job is named by its place, and nothing is stored.
pub async fn an_invalid_job_in_a_batch_is_named_by_its_place(s: Subject) {
    let store = &*s.store;
    let err = store
        .job_insert_many(JobInsertManyParams {
            jobs: vec![new_job("a"), new_job("b").priority(12)],
            defaults: Arc::default(),
            now: t0(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
    assert!(
        matches!(&err, StoreError::InvalidItem { index: 1, error } if error.field == "priority"),
        "{err:?}"
    );
    let page = store
        .job_list(JobListParams {
            limit: 10,
            ..JobListParams::default()
        })
        .await
        .unwrap();
    assert!(page.jobs.is_empty(), "all or nothing");
}
