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
    };
    let queue = store
        .queue_declare(QueueDeclareParams {
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
    let workers = store.worker_list().await.unwrap();
    assert_eq!(workers.len(), 1);
    assert_eq!(workers[0].info, info);
    assert_eq!(
        (workers[0].started_at, workers[0].last_seen),
        (now, add_duration(now, secs(10)))
    );
}
