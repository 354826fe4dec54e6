//! Flow control at claim time: keyed concurrency, fairness between keys, rate limits.

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use rota_core::add_duration;

use super::*;

/// Declares `name` with `config`.
pub async fn declare(store: &dyn Store, name: &str, config: QueueConfig, now: Timestamp) {
    store
        .queue_declare(QueueDeclareParams {
            merge: false,
            name: name.into(),
            config,
            now,
        })
        .await
        .expect("declare");
}

fn keyed(queue: &str, key: &str) -> NewJob {
    NewJob::new(queue, "k", serde_json::json!({})).concurrency_key(key)
}

fn per_key(jobs: &[Job]) -> HashMap<String, usize> {
    let mut n = HashMap::new();
    for j in jobs {
        *n.entry(j.concurrency_key.clone().unwrap_or_default())
            .or_default() += 1;
    }
    n
}

/// A queue's `key_concurrency` caps the running jobs of each key; jobs without a key are not
/// held back by it; a finished job frees its key's place.
pub async fn a_key_concurrency_caps_the_running_jobs_of_each_key(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let config = QueueConfig {
        key_concurrency: Some(2),
        ..QueueConfig::default()
    };
    declare(store, "keyed", config, now).await;
    let mut jobs = Vec::new();
    for key in ["a", "b", "c"] {
        jobs.extend((0..5).map(|_| keyed("keyed", key)));
    }
    jobs.extend((0..3).map(|_| NewJob::new("keyed", "k", serde_json::json!({}))));
    insert(store, jobs, now).await;
    let first = claim(store, "w", &["keyed"], &[], 100, now).await;
    let n = per_key(&first);
    assert_eq!((n["a"], n["b"], n["c"], n[""]), (2, 2, 2, 3), "{n:?}");
    assert_eq!(
        first[0].concurrency_key, None,
        "jobs without a key form their own group"
    );
    assert!(claim(store, "w2", &["keyed"], &[], 100, now)
        .await
        .is_empty());
    let a = first
        .iter()
        .find(|j| j.concurrency_key.as_deref() == Some("a"))
        .unwrap();
    complete(store, lease_of(a), now).await.unwrap();
    let again = claim(store, "w2", &["keyed"], &[], 100, now).await;
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].concurrency_key.as_deref(), Some("a"));
}

/// Sixteen claimers racing on four keys with `key_concurrency = 2`: together they hold two
/// jobs of each key, never more.
pub async fn concurrent_claims_never_exceed_a_key_concurrency(s: Subject) {
    let now = t0();
    let config = QueueConfig {
        key_concurrency: Some(2),
        ..QueueConfig::default()
    };
    declare(&*s.store, "keyed", config, now).await;
    let mut jobs = Vec::new();
    for key in ["a", "b", "c", "d"] {
        jobs.extend((0..25).map(|_| keyed("keyed", key)));
    }
    insert(&*s.store, jobs, now).await;
    let mut tasks = Vec::new();
    for w in 0..16 {
        let store = s.store.clone();
        tasks.push(tokio::spawn(async move {
            claim(&*store, &format!("w{w}"), &["keyed"], &[], 3, now).await
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let n = per_key(&all);
    assert_eq!(all.len(), 8, "{n:?}");
    assert!(n.values().all(|c| *c == 2), "{n:?}");
}

/// One key's backlog does not starve another's: key A enqueues 1,000 jobs, then key B 10;
/// claimed one at a time (each finished before the next), B's ten all start within the first
/// twenty claims. Within a key, priority still comes first.
pub async fn claims_take_turns_between_keys(s: Subject) {
    let store = &*s.store;
    let now = t0();
    insert(
        store,
        (0..1000).map(|_| keyed("default", "a")).collect(),
        now,
    )
    .await;
    let mut b: Vec<NewJob> = (0..9).map(|_| keyed("default", "b")).collect();
    b.push(keyed("default", "b").priority(0));
    let b_jobs = insert(store, b, now).await;
    let urgent_b = b_jobs.last().unwrap().id;
    let mut order = Vec::new();
    for i in 0..20 {
        let got = claim(store, &format!("w{i}"), &["default"], &[], 1, now).await;
        assert_eq!(got.len(), 1);
        complete(store, lease_of(&got[0]), now).await.unwrap();
        order.push(got[0].clone());
    }
    let bs: Vec<&Job> = order
        .iter()
        .filter(|j| j.concurrency_key.as_deref() == Some("b"))
        .collect();
    assert_eq!(bs.len(), 10, "B's jobs within the first 20 claims");
    assert_eq!(bs[0].id, urgent_b, "priority orders within a key");
}

/// A queue's `rate` spreads its starts: `10/1s` (burst 1) admits one job per 100 ms, whatever
/// the claims ask for; a claim at a later time gets the tokens that refilled.
pub async fn a_queue_rate_limits_starts_over_time(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let config = QueueConfig {
        rate: Some("10/1s".parse().unwrap()),
        ..QueueConfig::default()
    };
    declare(store, "rated", config, now).await;
    insert(
        store,
        (0..100)
            .map(|_| NewJob::new("rated", "k", serde_json::json!({})))
            .collect(),
        now,
    )
    .await;
    let mut started = 0;
    // Every 10 ms for one second.
    for step in 0..100u64 {
        let at = add_duration(now, Duration::from_millis(step * 10));
        started += claim(store, "w", &["rated"], &[], 50, at).await.len();
    }
    assert!((10..=11).contains(&started), "{started} started in 1 s");
    let burst = QueueConfig {
        rate: Some("10/1s burst 5".parse().unwrap()),
        ..QueueConfig::default()
    };
    declare(store, "bursty", burst, now).await;
    insert(
        store,
        (0..20)
            .map(|_| NewJob::new("bursty", "k", serde_json::json!({})))
            .collect(),
        now,
    )
    .await;
    assert_eq!(claim(store, "w", &["bursty"], &[], 50, now).await.len(), 5);
}

/// A `key_rate` limits each key alone, and a `kind_rates` entry only its kind.
pub async fn key_and_kind_rates_limit_only_their_jobs(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let config = QueueConfig {
        key_rate: Some("1/1m".parse().unwrap()),
        kind_rates: [("slow".to_string(), "1/1m".parse().unwrap())].into(),
        ..QueueConfig::default()
    };
    declare(store, "rated", config, now).await;
    let mut jobs: Vec<NewJob> = Vec::new();
    for key in ["a", "b"] {
        jobs.extend((0..3).map(|_| keyed("rated", key)));
    }
    jobs.extend((0..3).map(|_| NewJob::new("rated", "slow", serde_json::json!({}))));
    jobs.extend((0..3).map(|_| NewJob::new("rated", "fast", serde_json::json!({}))));
    insert(store, jobs, now).await;
    let got = claim(store, "w", &["rated"], &[], 100, now).await;
    let n = per_key(&got);
    assert_eq!((n["a"], n["b"]), (1, 1), "one per key per minute: {n:?}");
    let slow = got.iter().filter(|j| j.kind == "slow").count();
    let fast = got.iter().filter(|j| j.kind == "fast").count();
    assert_eq!((slow, fast), (1, 3));
    assert!(claim(store, "w", &["rated"], &[], 100, now)
        .await
        .is_empty());
    let later = add_duration(now, secs(60));
    assert_eq!(
        claim(store, "w", &["rated"], &[], 100, later).await.len(),
        3
    );
}

async fn try_insert(
    store: &dyn Store,
    jobs: Vec<NewJob>,
    now: Timestamp,
) -> Result<Vec<Inserted>, StoreError> {
    store
        .job_insert_many(JobInsertManyParams {
            jobs,
            defaults: std::sync::Arc::default(),
            now,
        })
        .await
}

fn plain(queue: &str, n: usize) -> Vec<NewJob> {
    (0..n)
        .map(|_| NewJob::new(queue, "k", serde_json::json!({})))
        .collect()
}

/// A queue's `max_depth` refuses the enqueue that would pass it, whole batches included
/// (nothing of a refused batch is stored, nothing accepted before is lost); with
/// `overflow = accept` the jobs are stored with a warning; `max_age` refuses while the oldest
/// ready job has waited too long.
pub async fn backpressure_refuses_beyond_max_depth_and_max_age(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let config = QueueConfig {
        max_depth: Some(100),
        ..QueueConfig::default()
    };
    declare(store, "bounded", config, now).await;
    try_insert(store, plain("bounded", 95), now).await.unwrap();
    let err = try_insert(store, plain("bounded", 10), now)
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::QueueFull { queue, .. } if queue == "bounded"),
        "{err:?}"
    );
    assert_eq!(err.kind(), ErrorKind::Overloaded);
    try_insert(store, plain("bounded", 5), now).await.unwrap();
    let err = try_insert(store, plain("bounded", 1), now)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("max_depth 100"), "{err}");
    let counts = store.job_counts(JobCountsParams::default()).await.unwrap();
    let stored: u64 = counts
        .iter()
        .filter(|c| c.queue == "bounded")
        .map(|c| c.count)
        .sum();
    assert_eq!(stored, 100, "the accepted jobs, and only them");
    // A claim frees room.
    let got = claim(store, "w", &["bounded"], &[], 1, now).await;
    assert_eq!(got.len(), 1);
    try_insert(store, plain("bounded", 1), now).await.unwrap();

    let accepting = QueueConfig {
        max_depth: Some(1),
        overflow: Some(Overflow::Accept),
        ..QueueConfig::default()
    };
    declare(store, "lenient", accepting, now).await;
    let first = try_insert(store, plain("lenient", 1), now).await.unwrap();
    assert_eq!(first[0].warning, None);
    let over = try_insert(store, plain("lenient", 2), now).await.unwrap();
    assert!(over.iter().all(|i| i.warning.is_some()), "{over:?}");

    let aging = QueueConfig {
        max_age: Some(secs(60)),
        ..QueueConfig::default()
    };
    declare(store, "aging", aging, now).await;
    try_insert(store, plain("aging", 1), now).await.unwrap();
    try_insert(store, plain("aging", 1), add_duration(now, secs(59)))
        .await
        .unwrap();
    let err = try_insert(store, plain("aging", 1), add_duration(now, secs(61)))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("max_age 1m"), "{err}");
}

/// Sixteen producers racing batches of ten into a queue with `max_depth = 100`: exactly ten
/// batches are stored.
pub async fn concurrent_enqueues_never_pass_a_max_depth(s: Subject) {
    let now = t0();
    let config = QueueConfig {
        max_depth: Some(100),
        ..QueueConfig::default()
    };
    declare(&*s.store, "bounded", config, now).await;
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let store = s.store.clone();
        tasks.push(tokio::spawn(async move {
            try_insert(&*store, plain("bounded", 10), now).await.is_ok()
        }));
    }
    let mut stored = 0;
    for t in tasks {
        stored += usize::from(t.await.unwrap());
    }
    assert_eq!(stored, 10);
}

/// A queue's flow state names the keys at their limit, the ready jobs they hold back, and
/// the running jobs of a key asked about; a held-back job's reason says which limit.
pub async fn the_flow_state_shows_what_limits_hold_back(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let config = QueueConfig {
        key_concurrency: Some(1),
        rate: Some("1/1h".parse().unwrap()),
        ..QueueConfig::default()
    };
    declare(store, "keyed", config.clone(), now).await;
    insert(
        store,
        vec![
            keyed("keyed", "a"),
            keyed("keyed", "a"),
            keyed("keyed", "a"),
            keyed("keyed", "b"),
        ],
        now,
    )
    .await;
    let got = claim(store, "w", &["keyed"], &[], 10, now).await;
    assert_eq!(got.len(), 1, "the queue's rate admits one");
    let held_key = got[0].concurrency_key.clone().unwrap();
    let flow = store
        .queue_flow(QueueFlowParams {
            queue: "keyed".into(),
            key: Some("b".into()),
            now,
        })
        .await
        .unwrap();
    assert_eq!(flow.running.total, 1);
    assert_eq!(flow.running.of_key(&held_key), 1);
    assert!(flow.buckets.contains_key(&BucketScope::Queue));
    let expected_waiting = if held_key == "a" { 2 } else { 0 };
    assert_eq!(flow.waiting_on_keys, expected_waiting);
    let ready = store
        .job_list(JobListParams {
            filter: JobFilter {
                states: vec![rota_core::JobState::Available],
                ..JobFilter::default()
            },
            after: None,
            limit: 10,
            scan: None,
        })
        .await
        .unwrap()
        .jobs;
    let same_key = ready
        .iter()
        .find(|j| j.concurrency_key.as_deref() == Some(held_key.as_str()));
    if let Some(job) = same_key {
        let flow = store
            .queue_flow(QueueFlowParams {
                queue: "keyed".into(),
                key: job.concurrency_key.clone(),
                now,
            })
            .await
            .unwrap();
        assert_eq!(
            waiting_reason(&config, job, &flow, now).as_deref(),
            Some(format!("key {held_key} at its limit 1/1").as_str())
        );
    }
    let other = ready
        .iter()
        .find(|j| j.concurrency_key.as_deref() != Some(held_key.as_str()))
        .unwrap();
    let reason = waiting_reason(&config, other, &flow, now).unwrap();
    assert!(
        reason.starts_with("queue at its rate 1/1h: next start in"),
        "{reason}"
    );
    let missing = store
        .queue_flow(QueueFlowParams {
            queue: "nope".into(),
            key: None,
            now,
        })
        .await
        .unwrap_err();
    assert_eq!(missing.kind(), ErrorKind::NotFound);
}

fn debounced(n: u32) -> NewJob {
    NewJob::new("default", "reindex", serde_json::json!({ "n": n })).debounce(
        "user:1",
        secs(1),
        secs(3),
    )
}

fn ms(n: u64) -> Duration {
    Duration::from_millis(n)
}

/// Fifty enqueues of one debounce key within a second (one batch of two among them) make
/// one job, with the last arguments, due a period after the last enqueue; it runs once.
pub async fn debounced_enqueues_collapse_into_one_job_with_the_latest_args(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let mut ids = HashSet::new();
    for n in 0..48u32 {
        let at = add_duration(now, ms(u64::from(n) * 20));
        let got = try_insert(store, vec![debounced(n)], at).await.unwrap();
        assert_eq!(got[0].duplicate, n > 0);
        ids.insert(got[0].job.id);
    }
    let last_at = add_duration(now, ms(47 * 20));
    let batch = try_insert(store, vec![debounced(48), debounced(49)], last_at)
        .await
        .unwrap();
    ids.extend(batch.iter().map(|i| i.job.id));
    assert_eq!(ids.len(), 1, "one job for the whole burst");
    assert_eq!(batch[1].job.args, serde_json::json!({ "n": 49 }));
    let due = add_duration(last_at, secs(1));
    assert_eq!(batch[1].job.run_at, due);
    let early = rota_core::sub_duration(due, ms(1));
    assert!(
        claim(store, "w", &["default"], &[], 10, early)
            .await
            .is_empty(),
        "not before a period after the last enqueue"
    );
    let ran = claim(store, "w", &["default"], &[], 10, due).await;
    assert_eq!(ran.len(), 1, "it runs once");
    let stored = store
        .job_get(JobGetParams {
            id: *ids.iter().next().unwrap(),
        })
        .await
        .unwrap();
    assert_eq!(
        stored.args,
        serde_json::json!({ "n": 49 }),
        "stored with the last arguments"
    );
    assert_eq!(stored.state, rota_core::JobState::Running);
    // After it started, the next enqueue is a new job.
    let next = try_insert(store, vec![debounced(50)], add_duration(due, secs(1)))
        .await
        .unwrap();
    assert!(!next[0].duplicate);
    assert!(!ids.contains(&next[0].job.id));
}

/// Under a continuous stream (an enqueue every 500 ms, period 1 s), `max_wait = 3s` bounds
/// the delay: the job comes due 3 s after the first enqueue, and runs.
pub async fn max_wait_bounds_a_debounce_under_a_continuous_stream(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let mut first: Option<Job> = None;
    let mut claimed = Vec::new();
    for step in 0..20u64 {
        let at = add_duration(now, ms(step * 500));
        let got = try_insert(store, vec![debounced(step as u32)], at)
            .await
            .unwrap();
        first.get_or_insert(got[0].job.clone());
        claimed.extend(claim(store, "w", &["default"], &[], 10, at).await);
    }
    let first = first.unwrap();
    assert!(
        !claimed.is_empty(),
        "the stream did not hold the job back forever"
    );
    let one = claimed
        .iter()
        .find(|j| j.id == first.id)
        .expect("the first burst's job ran");
    assert_eq!(
        one.attempted_at,
        Some(add_duration(now, secs(3))),
        "max_wait after the first"
    );
    assert!(
        claimed.len() >= 2,
        "later bursts ran too: {}",
        claimed.len()
    );
}

/// A throttle key takes one job per period; the others in it are duplicates of that one.
pub async fn a_throttle_takes_one_job_per_key_per_period(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let job =
        || NewJob::new("default", "digest", serde_json::json!({})).throttle("user:1", secs(60));
    let first = try_insert(store, vec![job()], now).await.unwrap().remove(0);
    assert!(!first.duplicate);
    for n in 1..10 {
        let again = try_insert(store, vec![job()], add_duration(now, secs(n * 5)))
            .await
            .unwrap()
            .remove(0);
        assert!(again.duplicate);
        assert_eq!(again.job.id, first.job.id);
    }
    let other =
        NewJob::new("default", "digest", serde_json::json!({})).throttle("user:2", secs(60));
    assert!(!try_insert(store, vec![other], now).await.unwrap()[0].duplicate);
    let later = try_insert(store, vec![job()], add_duration(now, secs(60)))
        .await
        .unwrap()
        .remove(0);
    assert!(!later.duplicate, "a new period takes a new job");
}

/// Sixteen producers enqueueing with one debounce key at once make one job.
pub async fn concurrent_debounced_enqueues_make_one_job(s: Subject) {
    let now = t0();
    let mut tasks = Vec::new();
    for n in 0..16u32 {
        let store = s.store.clone();
        tasks.push(tokio::spawn(async move {
            try_insert(&*store, vec![debounced(n)], now).await.unwrap()[0]
                .job
                .id
        }));
    }
    let mut ids = HashSet::new();
    for t in tasks {
        ids.insert(t.await.unwrap());
    }
    assert_eq!(ids.len(), 1);
}
