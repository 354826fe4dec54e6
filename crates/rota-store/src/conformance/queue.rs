//! Queues and workers.

use rota_core::{add_duration, Backoff, JobState, RetryOverride};

use super::*;

/// The default queue exists from the start.
pub async fn a_fresh_store_has_the_default_queue(s: Subject) {
    let queues = s
        .store
        .queue_list(QueueListParams { now: t0() })
        .await
        .unwrap();
    let names: Vec<_> = queues.iter().map(|q| q.queue.name.as_str()).collect();
    assert_eq!(names, ["default"]);
    assert!(!queues[0].queue.paused);
}

/// Counts per state, and how long the oldest ready job has waited.
pub async fn queues_list_counts_per_state_and_the_oldest_ready_age(s: Subject) {
    let store = &*s.store;
    let now = t0();
    insert(store, vec![new_job("a"), new_job("a"), new_job("a")], now).await;
    insert_one(
        store,
        new_job("a").run_at(add_duration(now, secs(3600))),
        now,
    )
    .await;
    claim(store, "w", &["default"], &[], 1, add_duration(now, secs(5))).await;
    declare(store, "empty", now).await;
    let stats = store
        .queue_list(QueueListParams {
            now: add_duration(now, secs(90)),
        })
        .await
        .unwrap();
    let default = stats.iter().find(|q| q.queue.name == "default").unwrap();
    assert_eq!(default.counts.get(&JobState::Available), Some(&2));
    assert_eq!(default.counts.get(&JobState::Running), Some(&1));
    assert_eq!(default.counts.get(&JobState::Scheduled), Some(&1));
    assert_eq!(default.oldest_ready_age, Some(secs(90)));
    let empty = stats.iter().find(|q| q.queue.name == "empty").unwrap();
    assert!(empty.counts.is_empty());
    assert_eq!(empty.oldest_ready_age, None);
}

/// Declaring an existing queue updates it; its retry settings reach new jobs.
pub async fn declaring_again_updates_settings_and_queue_policy_applies_to_jobs(s: Subject) {
    let store = &*s.store;
    let now = t0();
    declare(store, "reports", now).await;
    let config = QueueConfig {
        retry: RetryOverride {
            max_attempts: Some(2),
            backoff: Some(Backoff::Fixed { interval: secs(5) }),
        },
        lease: Some(secs(60)),
        timeout: Some(secs(600)),
        concurrency: Some(4),
        ..QueueConfig::default()
    };
    let queue = store
        .queue_declare(QueueDeclareParams {
            merge: false,
            name: "reports".into(),
            config: config.clone(),
            now,
        })
        .await
        .unwrap();
    assert_eq!(queue.config, config);
    let job = insert_one(
        store,
        NewJob::new("reports", "build", serde_json::json!({})),
        now,
    )
    .await;
    assert_eq!((job.max_attempts, job.timeout), (2, Some(secs(600))));
    let err = store
        .queue_declare(QueueDeclareParams {
            merge: false,
            name: "Bad Name".into(),
            config: QueueConfig::default(),
            now,
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
}

/// Pausing a queue that does not exist says so.
pub async fn pausing_an_undeclared_queue_is_not_found(s: Subject) {
    let err = s
        .store
        .queue_set_paused(QueueSetPausedParams {
            name: "ghost".into(),
            paused: true,
            now: t0(),
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotFound);
}

/// Registration records a worker; fetches and heartbeats refresh its last-seen time.
pub async fn workers_are_registered_and_seen_on_fetch(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let info = WorkerInfo {
        id: "host:1:abc".into(),
        name: "mailer".into(),
        host: "host".into(),
        pid: 1,
        queues: vec!["default".into()],
        kinds: vec!["a".into()],
        concurrency: 4,
        version: "0.1.0".into(),
    };
    let worker = store
        .worker_register(WorkerRegisterParams {
            worker: info.clone(),
            now,
        })
        .await
        .unwrap();
    assert_eq!((worker.started_at, worker.last_seen), (now, now));
    claim(
        store,
        "host:1:abc",
        &["default"],
        &["a"],
        1,
        add_duration(now, secs(10)),
    )
    .await;
    let workers = store
        .worker_list(WorkerListParams::default())
        .await
        .unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].info, info);
    assert_eq!(
        (workers[0].started_at, workers[0].last_seen),
        (now, add_duration(now, secs(10)))
    );
    // Refreshed at most once per LAST_SEEN_RESOLUTION: an idle worker's empty claims write
    // nothing in between.
    let last_seen = |at: Timestamp| async move {
        claim(store, "host:1:abc", &["default"], &["a"], 1, at).await;
        store
            .worker_list(WorkerListParams::default())
            .await
            .unwrap()[0]
            .last_seen
    };
    let soon = add_duration(now, secs(10) + LAST_SEEN_RESOLUTION / 2);
    assert_eq!(last_seen(soon).await, add_duration(now, secs(10)));
    let later = add_duration(now, secs(10) + LAST_SEEN_RESOLUTION);
    assert_eq!(last_seen(later).await, later);
}

/// Counts per queue, kind and state follow every change, deletions included.
pub async fn job_counts_follow_every_state_change(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let count = |counts: &[JobCount], kind: &str, state: JobState| {
        counts
            .iter()
            .find(|c| c.queue == "default" && c.kind == kind && c.state == state)
            .map_or(0, |c| c.count)
    };
    insert(
        store,
        vec![
            new_job("a"),
            new_job("a"),
            new_job("b"),
            new_job("a").run_at(add_duration(now, secs(60))),
        ],
        now,
    )
    .await;
    let c = store.job_counts(JobCountsParams::default()).await.unwrap();
    assert_eq!(
        (
            count(&c, "a", JobState::Available),
            count(&c, "a", JobState::Scheduled),
            count(&c, "b", JobState::Available)
        ),
        (2, 1, 1)
    );
    let jobs = claim(store, "w", &["default"], &["a"], 2, now).await;
    complete(store, lease_of(&jobs[0]), now).await.unwrap();
    let c = store.job_counts(JobCountsParams::default()).await.unwrap();
    assert_eq!(
        (
            count(&c, "a", JobState::Available),
            count(&c, "a", JobState::Running),
            count(&c, "a", JobState::Completed)
        ),
        (0, 1, 1)
    );
    // Promotion of the due scheduled job is counted too.
    claim(
        store,
        "w",
        &["default"],
        &["a"],
        5,
        add_duration(now, secs(60)),
    )
    .await;
    let c = store.job_counts(JobCountsParams::default()).await.unwrap();
    assert_eq!(
        (
            count(&c, "a", JobState::Scheduled),
            count(&c, "a", JobState::Running)
        ),
        (0, 2)
    );
    store
        .job_prune(JobPruneParams {
            queue: None,
            now: add_duration(now, secs(200_000)),
            completed_retention: secs(1),
            cancelled_retention: secs(1),
            dead_retention: None,
            limit: 100,
        })
        .await
        .unwrap();
    let c = store.job_counts(JobCountsParams::default()).await.unwrap();
    assert_eq!(count(&c, "a", JobState::Completed), 0);
    let stats = store.queue_list(QueueListParams { now }).await.unwrap();
    let default = stats.iter().find(|q| q.queue.name == "default").unwrap();
    assert_eq!(default.counts.get(&JobState::Running), Some(&2));
}

/// A merge declare changes only the settings it gives; a replace declare sets them all
/// (issue 18: `rota queues declare q --lease 1m` reset the others).
pub async fn a_merge_declare_changes_only_the_settings_given(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let full = QueueConfig {
        retry: RetryOverride {
            max_attempts: Some(5),
            backoff: Some(Backoff::Intervals(vec![secs(1), secs(2)])),
        },
        timeout: Some(secs(10)),
        completed_retention: Some(secs(7 * 86_400)),
        ..QueueConfig::default()
    };
    let declare = |config: QueueConfig, merge: bool| {
        store.queue_declare(QueueDeclareParams {
            name: "q1".into(),
            config,
            merge,
            now,
        })
    };
    declare(full.clone(), false).await.unwrap();
    let merged = declare(
        QueueConfig {
            lease: Some(secs(60)),
            ..QueueConfig::default()
        },
        true,
    )
    .await
    .unwrap();
    assert_eq!(merged.config.lease, Some(secs(60)));
    assert_eq!(merged.config.retry, full.retry);
    assert_eq!(merged.config.timeout, full.timeout);
    assert_eq!(merged.config.completed_retention, full.completed_retention);
    let replaced = declare(QueueConfig::default(), false).await.unwrap();
    assert_eq!(replaced.config, QueueConfig::default());
    let err = declare(
        QueueConfig {
            lease: Some(Duration::from_millis(1)),
            ..QueueConfig::default()
        },
        true,
    )
    .await
    .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid, "{err}");
}
