//! Leases: heartbeats, expiry, rescue and fencing.

use rota_core::{add_duration, JobState};

use super::*;

/// A heartbeat pushes the expiry out and tells the worker about a cancel request.
pub async fn heartbeats_extend_the_lease_and_carry_cancel_requests(s: Subject) {
    let store = &*s.store;
    let now = t0();
    insert_one(store, new_job("a"), now).await;
    let job = claim(store, "w", &["default"], &[], 1, now).await.remove(0);
    let beat = |at| {
        store.lease_extend_many(LeaseExtendManyParams {
            worker: "w".into(),
            leases: vec![lease_of(&job)],
            lease: secs(30),
            now: at,
        })
    };
    let t1 = add_duration(now, secs(20));
    let ext = beat(t1).await.unwrap().remove(0).unwrap();
    assert_eq!(
        (ext.expires_at, ext.cancel_requested),
        (add_duration(t1, secs(30)), false)
    );
    // Past the original expiry but within the extended one: not rescued.
    assert!(rescue(store, add_duration(now, secs(40))).await.is_empty());
    store
        .job_cancel_many(JobCancelManyParams {
            ids: vec![job.id],
            now: t1,
        })
        .await
        .unwrap();
    let ext = beat(add_duration(now, secs(45)))
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert!(ext.cancel_requested);
}

/// A heartbeat with someone else's token is refused.
pub async fn a_heartbeat_with_a_stale_token_is_rejected(s: Subject) {
    let store = &*s.store;
    let now = t0();
    insert_one(store, new_job("a"), now).await;
    let job = claim(store, "w", &["default"], &[], 1, now).await.remove(0);
    let out = store
        .lease_extend_many(LeaseExtendManyParams {
            worker: "w".into(),
            leases: vec![LeaseRef {
                job: job.id,
                token: lease_of(&job).token + 1,
            }],
            lease: secs(30),
            now,
        })
        .await
        .unwrap();
    assert_eq!(out[0].as_ref().unwrap_err().kind(), ErrorKind::LeaseLost);
    assert_eq!(
        store.job_get(JobGetParams { id: job.id }).await.unwrap(),
        job
    );
}

/// A worker that stops heartbeating loses the job after its lease; the job runs again.
pub async fn an_expired_lease_is_rescued_and_the_job_runs_again(s: Subject) {
    let store = &*s.store;
    let clock = clock();
    let id = insert_one(store, new_job("a").max_attempts(5), clock.now())
        .await
        .id;
    claim(store, "crashed", &["default"], &[], 1, clock.now()).await;
    clock.advance(secs(29));
    assert!(
        rescue(store, clock.now()).await.is_empty(),
        "lease still live"
    );
    clock.advance(secs(1));
    let report = rescue(store, clock.now()).await;
    assert_eq!(report.retried, [id]);
    let job = store.job_get(JobGetParams { id }).await.unwrap();
    assert_eq!(
        (job.state, job.attempt, job.lease.clone()),
        (JobState::Retryable, 1, None)
    );
    assert_eq!(
        job.errors[0].message,
        "lease expired: worker crashed stopped heartbeating"
    );
    assert_eq!(job.errors[0].worker, "crashed");
    clock.set(job.run_at);
    let again = claim(store, "healthy", &["default"], &[], 1, clock.now())
        .await
        .remove(0);
    assert_eq!((again.id, again.attempt), (id, 2));
    assert_eq!(
        complete(store, lease_of(&again), clock.now())
            .await
            .unwrap()
            .state,
        JobState::Completed
    );
}

/// A job that takes its worker down every time ends dead after max_attempts, not in a loop.
pub async fn a_job_that_kills_its_worker_every_time_ends_dead(s: Subject) {
    let store = &*s.store;
    let clock = clock();
    let id = insert_one(store, new_job("poison").max_attempts(4), clock.now())
        .await
        .id;
    let mut runs = 0;
    for _ in 0..50 {
        let job = store.job_get(JobGetParams { id }).await.unwrap();
        if job.state.is_final() {
            break;
        }
        clock.set(job.run_at.max(clock.now()));
        if !claim(store, "w", &["default"], &[], 1, clock.now())
            .await
            .is_empty()
        {
            runs += 1;
        }
        clock.advance(secs(31));
        rescue(store, clock.now()).await;
    }
    let job = store.job_get(JobGetParams { id }).await.unwrap();
    assert_eq!((job.state, runs, job.errors.len()), (JobState::Dead, 4, 4));
}

/// The stale worker of a rescued and re-leased job gets a conflict; the job completes
/// exactly once, by the worker that holds it.
pub async fn a_stale_worker_cannot_complete_a_rescued_and_released_job(s: Subject) {
    let store = &*s.store;
    let clock = clock();
    insert_one(store, new_job("a"), clock.now()).await;
    let first = claim(store, "slow", &["default"], &[], 1, clock.now())
        .await
        .remove(0);
    clock.advance(secs(31));
    rescue(store, clock.now()).await;
    clock.set(
        store
            .job_get(JobGetParams { id: first.id })
            .await
            .unwrap()
            .run_at,
    );
    let second = claim(store, "fresh", &["default"], &[], 1, clock.now())
        .await
        .remove(0);
    assert_eq!(second.id, first.id);
    let stale = complete(store, lease_of(&first), clock.now())
        .await
        .unwrap_err();
    assert_eq!(stale.kind(), ErrorKind::LeaseLost);
    assert!(stale.to_string().contains("token 1, current 2"), "{stale}");
    let done = complete(store, lease_of(&second), clock.now())
        .await
        .unwrap();
    assert_eq!((done.state, done.attempt), (JobState::Completed, 2));
    let late = complete(store, lease_of(&first), clock.now())
        .await
        .unwrap_err();
    assert_eq!(late.kind(), ErrorKind::LeaseLost);
    assert_eq!(
        store.job_get(JobGetParams { id: first.id }).await.unwrap(),
        done
    );
}

/// Rescue touches only expired leases.
pub async fn live_leases_are_not_rescued(s: Subject) {
    let store = &*s.store;
    let now = t0();
    insert(store, vec![new_job("a"), new_job("a")], now).await;
    let old = claim(store, "w", &["default"], &[], 1, now).await.remove(0);
    let young = claim(
        store,
        "w",
        &["default"],
        &[],
        1,
        add_duration(now, secs(20)),
    )
    .await
    .remove(0);
    let report = rescue(store, add_duration(now, secs(35))).await;
    assert_eq!(report.retried, [old.id]);
    assert_eq!(
        store
            .job_get(JobGetParams { id: young.id })
            .await
            .unwrap()
            .state,
        JobState::Running
    );
}

/// A queue's own lease length applies to its jobs, at fetch and at every heartbeat.
pub async fn a_queues_lease_applies_to_its_jobs(s: Subject) {
    let store = &*s.store;
    let now = t0();
    store
        .queue_declare(QueueDeclareParams {
            merge: false,
            name: "long".into(),
            config: QueueConfig {
                lease: Some(secs(300)),
                ..QueueConfig::default()
            },
            now,
        })
        .await
        .unwrap();
    insert(
        store,
        vec![
            NewJob::new("long", "k", serde_json::json!({})),
            new_job("k"),
        ],
        now,
    )
    .await;
    let jobs = claim(store, "w", &["long", "default"], &[], 2, now).await;
    let expiry = |j: &Job| j.lease.as_ref().unwrap().expires_at;
    let long = jobs.iter().find(|j| j.queue == "long").unwrap();
    let plain = jobs.iter().find(|j| j.queue == "default").unwrap();
    assert_eq!(
        (expiry(long), expiry(plain)),
        (add_duration(now, secs(300)), add_duration(now, secs(30)))
    );
    let later = add_duration(now, secs(10));
    let out = store
        .lease_extend_many(LeaseExtendManyParams {
            worker: "w".into(),
            leases: vec![lease_of(long), lease_of(plain)],
            lease: secs(30),
            now: later,
        })
        .await
        .unwrap();
    assert_eq!(
        out[0].as_ref().unwrap().expires_at,
        add_duration(later, secs(300))
    );
    assert_eq!(
        out[1].as_ref().unwrap().expires_at,
        add_duration(later, secs(30))
    );
}

/// Running jobs are listed soonest lease expiry first, and only running ones.
pub async fn running_jobs_are_listed_soonest_expiry_first(s: Subject) {
    let store = &*s.store;
    let now = t0();
    insert(store, vec![new_job("a"), new_job("b"), new_job("c")], now).await;
    let first = claim(store, "w", &["default"], &["a"], 1, now)
        .await
        .remove(0);
    let second = claim(
        store,
        "w",
        &["default"],
        &["b"],
        1,
        add_duration(now, secs(5)),
    )
    .await
    .remove(0);
    let running = store
        .job_list_running(JobListRunningParams { limit: 10 })
        .await
        .unwrap();
    let ids: Vec<_> = running.iter().map(|j| j.id).collect();
    assert_eq!(ids, vec![first.id, second.id]);
    let one = store
        .job_list_running(JobListRunningParams { limit: 1 })
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
}
