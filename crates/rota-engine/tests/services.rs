//! The maintenance services against a real SQLite store, with a manual clock.

use std::sync::Arc;
use std::time::Duration;

use rota_core::{add_duration, Clock, JobState, ManualClock, NewJob};
use rota_engine::{service, Pruner, PrunerConfig, Rescuer, RescuerConfig, Service};
use rota_store::*;
use rota_testkit::TempSqlite;
use serde_json::json;
use tokio_util::sync::CancellationToken;

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

async fn enqueue_and_claim(
    store: &dyn Store,
    n: usize,
    clock: &ManualClock,
) -> Vec<rota_core::Job> {
    let jobs = (0..n)
        .map(|i| NewJob::new("default", "k", json!({ "i": i })).max_attempts(2))
        .collect();
    store
        .job_insert_many(JobInsertManyParams {
            jobs,
            defaults: Arc::default(),
            now: clock.now(),
        })
        .await
        .unwrap();
    store
        .job_claim_many(JobClaimManyParams {
            worker: "w".into(),
            queues: vec!["default".into()],
            kinds: vec![],
            max: n,
            lease: secs(30),
            now: clock.now(),
        })
        .await
        .unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rescuer_rescues_every_expired_lease_across_batches() {
    let db = TempSqlite::new();
    let clock = ManualClock::default();
    let claimed = enqueue_and_claim(&*db.store, 25, &clock).await;
    let rescuer = Rescuer::new(
        db.store.clone(),
        RescuerConfig {
            batch: 10,
            startup_grace: secs(0),
            ..RescuerConfig::default()
        },
    );
    assert!(rescuer
        .run_once(clock.now())
        .await
        .unwrap()
        .retried
        .is_empty());
    clock.advance(secs(30));
    let report = rescuer.run_once(clock.now()).await.unwrap();
    assert_eq!(report.retried.len(), 25, "three store calls of at most 10");
    for job in claimed {
        assert_eq!(
            db.store
                .job_get(rota_store::JobGetParams { id: job.id })
                .await
                .unwrap()
                .state,
            JobState::Retryable
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_pruner_keeps_dead_jobs_and_young_ones() {
    let db = TempSqlite::new();
    let clock = ManualClock::default();
    let claimed = enqueue_and_claim(&*db.store, 3, &clock).await;
    let lease = |j: &rota_core::Job| LeaseRef {
        job: j.id,
        token: j.lease.as_ref().unwrap().token,
    };
    db.store
        .job_complete_many(JobCompleteManyParams {
            completions: vec![Completion {
                lease: lease(&claimed[0]),
                result: None,
            }],
            now: clock.now(),
        })
        .await
        .unwrap();
    db.store
        .job_fail_many(JobFailManyParams {
            failures: vec![Failure {
                lease: lease(&claimed[1]),
                error: rota_core::ErrorReport {
                    message: "no".into(),
                    backtrace: None,
                },
                discard: true,
            }],
            now: clock.now(),
        })
        .await
        .unwrap();
    let pruner = Pruner::new(db.store.clone(), PrunerConfig::default());
    clock.advance(secs(3600));
    assert!(
        pruner.run_once(clock.now()).await.unwrap().is_empty(),
        "too young"
    );
    clock.advance(secs(24 * 3600));
    let report = pruner.run_once(clock.now()).await.unwrap();
    assert_eq!((report.completed, report.dead), (1, 0));
    assert_eq!(
        db.store
            .job_get(rota_store::JobGetParams { id: claimed[1].id })
            .await
            .unwrap()
            .state,
        JobState::Dead
    );
    assert_eq!(
        db.store
            .job_get(rota_store::JobGetParams { id: claimed[2].id })
            .await
            .unwrap()
            .state,
        JobState::Running
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_service_loop_runs_passes_on_trigger_and_stops_on_shutdown() {
    let db = TempSqlite::new();
    let clock = ManualClock::default();
    let claimed = enqueue_and_claim(&*db.store, 1, &clock).await;
    // A long interval: only the first tick and explicit triggers run passes.
    let rescuer = Rescuer::new(
        db.store.clone(),
        RescuerConfig {
            interval: secs(3600),
            startup_grace: secs(0),
            ..RescuerConfig::default()
        },
    );
    let shutdown = CancellationToken::new();
    let (task, mut handle) = service::spawn(rescuer, Arc::new(clock.clone()), shutdown.clone());
    handle.wait_for_passes(1).await;
    assert_eq!(
        db.store
            .job_get(rota_store::JobGetParams { id: claimed[0].id })
            .await
            .unwrap()
            .state,
        JobState::Running
    );
    clock.set(add_duration(clock.now(), secs(31)));
    handle.trigger();
    handle.wait_for_passes(2).await;
    assert_eq!(
        db.store
            .job_get(rota_store::JobGetParams { id: claimed[0].id })
            .await
            .unwrap()
            .state,
        JobState::Retryable
    );
    shutdown.cancel();
    tokio::time::timeout(secs(10), task)
        .await
        .expect("stops on shutdown")
        .unwrap();
}

/// After a restart, a live worker's lease that expired while the server was down is not
/// rescued at once: every lease gets one lease period, from start-up, to heartbeat again
/// (issue 18: the rescuer's first pass took both running jobs 3 ms after start-up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rescuer_gives_every_lease_a_lease_period_after_start_up() {
    let db = TempSqlite::new();
    let clock = ManualClock::default();
    let store = &*db.store;
    let claimed = enqueue_and_claim(store, 2, &clock).await; // 30 s leases
    let (alive, dead) = (&claimed[0], &claimed[1]);
    let start = add_duration(clock.now(), secs(40)); // the server was down for 40 s
    let rescuer = Rescuer::new(
        db.store.clone(),
        RescuerConfig {
            startup_grace: secs(30),
            ..RescuerConfig::default()
        },
    );
    assert!(
        rescuer.run_once(start).await.unwrap().is_empty(),
        "no rescue at start-up"
    );
    // The live worker heartbeats as soon as the server answers again.
    let beat = add_duration(start, secs(2));
    let extended = store
        .lease_extend_many(LeaseExtendManyParams {
            worker: "w".into(),
            leases: vec![LeaseRef {
                job: alive.id,
                token: alive.lease.as_ref().unwrap().token,
            }],
            lease: secs(30),
            now: beat,
        })
        .await
        .unwrap();
    assert!(
        extended[0].is_ok(),
        "a lease that expired unrescued can still be renewed"
    );
    assert!(rescuer
        .run_once(add_duration(start, secs(29)))
        .await
        .unwrap()
        .is_empty());
    let after_grace = add_duration(start, secs(30));
    let report = rescuer.run_once(after_grace).await.unwrap();
    assert_eq!(
        report.retried,
        vec![dead.id],
        "only the job whose worker is gone"
    );
    let get = |id| store.job_get(JobGetParams { id });
    assert_eq!(get(alive.id).await.unwrap().state, JobState::Running);
    assert_eq!(get(alive.id).await.unwrap().attempt, 1);
}

/// Retention is a setting, server-wide and per queue, and jobs age through the clock: a
/// queue keeping completed jobs 1 h loses them after 1 h while the server's 24 h keeps the
/// others; a server dead retention removes dead jobs (issue 18: both were hard-coded).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn retention_is_set_per_server_and_per_queue() {
    let db = TempSqlite::new();
    let store = &*db.store;
    let clock = ManualClock::default();
    store
        .queue_declare(QueueDeclareParams {
            name: "short".into(),
            config: QueueConfig {
                completed_retention: Some(secs(3600)),
                ..QueueConfig::default()
            },
            merge: false,
            now: clock.now(),
        })
        .await
        .unwrap();
    store
        .job_insert_many(JobInsertManyParams {
            jobs: vec![
                NewJob::new("short", "a", json!({})),
                NewJob::new("default", "b", json!({})),
                NewJob::new("default", "c", json!({})).max_attempts(1),
            ],
            defaults: Arc::default(),
            now: clock.now(),
        })
        .await
        .unwrap();
    let claimed = store
        .job_claim_many(JobClaimManyParams {
            worker: "w".into(),
            queues: vec!["short".into(), "default".into()],
            kinds: vec![],
            max: 3,
            lease: secs(30),
            now: clock.now(),
        })
        .await
        .unwrap();
    for job in &claimed {
        let lease = LeaseRef {
            job: job.id,
            token: job.lease.as_ref().unwrap().token,
        };
        if job.kind == "c" {
            store
                .job_fail_many(JobFailManyParams {
                    failures: vec![Failure {
                        lease,
                        error: rota_core::ErrorReport {
                            message: "no".into(),
                            backtrace: None,
                        },
                        discard: false,
                    }],
                    now: clock.now(),
                })
                .await
                .unwrap();
        } else {
            store
                .job_complete_many(JobCompleteManyParams {
                    completions: vec![Completion {
                        lease,
                        result: None,
                    }],
                    now: clock.now(),
                })
                .await
                .unwrap();
        }
    }
    let pruner = Pruner::new(
        db.store.clone(),
        PrunerConfig {
            retention: Retention {
                dead: Some(secs(7 * 86_400)),
                ..Retention::default()
            },
            ..PrunerConfig::default()
        },
    );
    clock.advance(secs(3601));
    let report = pruner.run_once(clock.now()).await.unwrap();
    assert_eq!(
        (report.completed, report.dead),
        (1, 0),
        "the short queue's job"
    );
    clock.advance(secs(24 * 3600));
    let report = pruner.run_once(clock.now()).await.unwrap();
    assert_eq!(
        (report.completed, report.dead),
        (1, 0),
        "the default queue's, after 24 h"
    );
    clock.advance(secs(7 * 86_400));
    let report = pruner.run_once(clock.now()).await.unwrap();
    assert_eq!(
        report.dead, 1,
        "dead jobs go after the server's dead retention"
    );
}
