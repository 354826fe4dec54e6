//! Claiming: order, due-ness, kinds, paused queues, concurrency.

use std::collections::HashSet;

use rota_core::{add_duration, JobState};

use super::*;

/// Priority first (lower first), then run_at, then id.
pub async fn claims_follow_priority_then_run_at_then_id(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let later = insert_one(
        store,
        new_job("later").priority(5),
        add_duration(now, secs(1)),
    )
    .await;
    let urgent = insert_one(
        store,
        new_job("urgent").priority(0),
        add_duration(now, secs(1)),
    )
    .await;
    let first = insert_one(store, new_job("first").priority(5), now).await;
    let second = insert_one(store, new_job("second").priority(5), now).await;
    let lazy = insert_one(store, new_job("lazy").priority(9), now).await;
    let at = add_duration(now, secs(2));
    let order: Vec<_> = claim(store, "w", &["default"], &[], 10, at)
        .await
        .iter()
        .map(|j| j.id)
        .collect();
    // `first` and `second` share priority and run_at: the smaller (older) id goes first.
    assert_eq!(order, [urgent.id, first.id, second.id, later.id, lazy.id]);
}

/// A job is claimable only once its run_at has come, and claiming sets up the lease.
pub async fn only_due_available_jobs_are_claimed(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let job = insert_one(store, new_job("a").run_at(add_duration(now, secs(60))), now).await;
    assert!(claim(
        store,
        "w",
        &["default"],
        &[],
        10,
        add_duration(now, secs(59))
    )
    .await
    .is_empty());
    let due = add_duration(now, secs(60));
    let claimed = claim(store, "w1", &["default"], &[], 10, due).await;
    assert_eq!(claimed.len(), 1);
    let c = &claimed[0];
    assert_eq!(
        (c.id, c.state, c.attempt, c.attempted_at),
        (job.id, JobState::Running, 1, Some(due))
    );
    let lease = c.lease.as_ref().unwrap();
    assert_eq!(
        (lease.worker.as_str(), lease.expires_at),
        ("w1", add_duration(due, secs(30)))
    );
    assert_eq!(
        store.job_get(JobGetParams { id: job.id }).await.unwrap(),
        *c
    );
    // Running jobs are not claimable again.
    assert!(claim(store, "w2", &["default"], &[], 10, due)
        .await
        .is_empty());
}

/// A worker asking for kinds [a] never gets a job of kind b.
pub async fn a_claim_for_some_kinds_never_returns_another_kind(s: Subject) {
    let store = &*s.store;
    let now = t0();
    insert(
        store,
        (0..5).flat_map(|_| [new_job("a"), new_job("b")]).collect(),
        now,
    )
    .await;
    let got = claim(store, "w", &["default"], &["a"], 100, now).await;
    assert_eq!(got.len(), 5);
    assert!(got.iter().all(|j| j.kind == "a"));
    assert!(claim(store, "w", &["default"], &["a"], 100, now)
        .await
        .is_empty());
    assert_eq!(
        claim(store, "w", &["default"], &["b", "c"], 100, now)
            .await
            .len(),
        5
    );
}

/// Paused queues hand out nothing; resumed, they do again.
pub async fn a_paused_queue_yields_nothing_until_resumed(s: Subject) {
    let store = &*s.store;
    let now = t0();
    insert(store, vec![new_job("a"), new_job("a")], now).await;
    let paused = store
        .queue_set_paused(QueueSetPausedParams {
            name: "default".into(),
            paused: true,
            now,
        })
        .await
        .unwrap();
    assert!(paused.paused);
    assert!(claim(store, "w", &["default"], &[], 10, now)
        .await
        .is_empty());
    store
        .queue_set_paused(QueueSetPausedParams {
            name: "default".into(),
            paused: false,
            now,
        })
        .await
        .unwrap();
    assert_eq!(claim(store, "w", &["default"], &[], 10, now).await.len(), 2);
}

/// Eight claimers racing over 200 jobs: every job is claimed exactly once.
pub async fn concurrent_claimers_never_share_a_job(s: Subject) {
    let now = t0();
    insert(
        &*s.store,
        (0..200).map(|i| new_job(&format!("k{}", i % 3))).collect(),
        now,
    )
    .await;
    let mut tasks = Vec::new();
    for w in 0..8 {
        let store = s.store.clone();
        tasks.push(tokio::spawn(async move {
            let mut mine = Vec::new();
            loop {
                let got = claim(&*store, &format!("w{w}"), &["default"], &[], 7, now).await;
                if got.is_empty() {
                    break mine;
                }
                mine.extend(got.into_iter().map(|j| j.id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let unique: HashSet<_> = all.iter().collect();
    assert_eq!(all.len(), 200);
    assert_eq!(unique.len(), 200);
}

/// A worker polling a misspelled queue hears about it instead of waiting forever.
pub async fn claiming_from_an_undeclared_queue_is_rejected(s: Subject) {
    let store = &*s.store;
    let err = store
        .job_claim_many(JobClaimManyParams {
            worker: "w".into(),
            queues: vec!["defualt".into()],
            kinds: vec![],
            max: 1,
            lease: secs(30),
            now: t0(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::QueueNotDeclared { suggestion: Some(s), .. } if s == "default"),
        "{err:?}"
    );
}

/// `max` bounds the batch.
pub async fn a_claim_takes_at_most_max_jobs(s: Subject) {
    let store = &*s.store;
    let now = t0();
    insert(store, (0..10).map(|_| new_job("a")).collect(), now).await;
    declare(store, "other", now).await;
    insert(
        store,
        (0..10)
            .map(|_| NewJob::new("other", "a", serde_json::json!({})))
            .collect(),
        now,
    )
    .await;
    assert_eq!(
        claim(store, "w", &["default", "other"], &[], 3, now)
            .await
            .len(),
        3
    );
    assert_eq!(
        claim(store, "w", &["default", "other"], &[], 100, now)
            .await
            .len(),
        17
    );
}

/// Declares queue `name` with a concurrency limit.
/// A queue's `concurrency` caps its running jobs: a claim takes only what is left, a
/// finished or rescued job frees its place, and another queue is not limited by it.
pub async fn a_queue_concurrency_caps_its_running_jobs(s: Subject) {
    let store = &*s.store;
    let now = t0();
    declare_limited(store, "limited", 2, now).await;
    let job = |kind: &str| NewJob::new("limited", kind, serde_json::json!({}));
    insert(store, (0..5).map(|_| job("a")).collect(), now).await;
    insert(store, (0..5).map(|_| new_job("a")).collect(), now).await;
    let first = claim(store, "w", &["limited", "default"], &[], 10, now).await;
    let limited = |jobs: &[Job]| jobs.iter().filter(|j| j.queue == "limited").count();
    assert_eq!(limited(&first), 2, "two of the limited queue");
    assert_eq!(first.len(), 7, "the unlimited queue is not held back");
    assert!(claim(store, "w2", &["limited"], &[], 10, now)
        .await
        .is_empty());
    let running: Vec<&Job> = first.iter().filter(|j| j.queue == "limited").collect();
    complete(store, lease_of(running[0]), now).await.unwrap();
    let again = claim(store, "w2", &["limited"], &[], 10, now).await;
    assert_eq!(again.len(), 1, "one place was freed");
    // A lease that expires frees its place when the job is rescued.
    let later = add_duration(now, secs(31));
    assert!(claim(store, "w3", &["limited"], &[], 10, now)
        .await
        .is_empty());
    rescue(store, later).await;
    let after_rescue = claim(store, "w3", &["limited"], &[], 10, later).await;
    assert_eq!(after_rescue.len(), 2, "both expired leases were rescued");
}

/// Sixteen claimers racing on a queue with `concurrency = 3`: together they hold exactly
/// three jobs, never more.
pub async fn concurrent_claims_never_exceed_a_queue_concurrency(s: Subject) {
    let now = t0();
    declare_limited(&*s.store, "limited", 3, now).await;
    insert(
        &*s.store,
        (0..100)
            .map(|_| NewJob::new("limited", "a", serde_json::json!({})))
            .collect(),
        now,
    )
    .await;
    let mut tasks = Vec::new();
    for w in 0..16 {
        let store = s.store.clone();
        tasks.push(tokio::spawn(async move {
            claim(&*store, &format!("w{w}"), &["limited"], &[], 2, now)
                .await
                .len()
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await.unwrap();
    }
    assert_eq!(total, 3);
}
