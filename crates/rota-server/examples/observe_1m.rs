//! Measures a `/metrics` scrape, a `/readyz` probe (through the router, as a scraper or a
//! probe sees them: they read the shared diagnostics snapshot) and the snapshot itself (a
//! full doctor run plus counts), with 1,000,000 jobs in the store. Figures go to
//! docs/PERFORMANCE.md.
//!
//! Run with `cargo run --release -p rota-server --example observe_1m` (about a minute: most
//! of it fills the database).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::Request;
use rota_core::{Clock, ErrorReport, NewJob, SystemClock};
use rota_server::diagnostics::Snapshot;
use rota_store::*;
use rota_testkit::TempSqlite;
use serde_json::json;
use tower::ServiceExt;

const TOTAL: usize = 1_000_000;

async fn insert(store: &dyn Store, jobs: Vec<NewJob>) {
    store
        .job_insert_many(JobInsertManyParams {
            jobs,
            defaults: Arc::default(),
            now: SystemClock.now(),
        })
        .await
        .unwrap();
}

async fn claim(store: &dyn Store, queue: &str, max: usize) -> Vec<rota_core::Job> {
    store
        .job_claim_many(JobClaimManyParams {
            worker: "filler".into(),
            queues: vec![queue.into()],
            kinds: vec![],
            max,
            lease: Duration::from_secs(3600),
            now: SystemClock.now(),
        })
        .await
        .unwrap()
}

fn lease(job: &rota_core::Job) -> LeaseRef {
    LeaseRef {
        job: job.id,
        token: job.lease.as_ref().unwrap().token,
    }
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let db = TempSqlite::new();
    let store: &dyn Store = &*db.store;
    let started = Instant::now();
    for q in ["mail", "billing"] {
        store
            .queue_declare(QueueDeclareParams {
                merge: false,
                name: q.into(),
                config: QueueConfig::default(),
                now: SystemClock.now(),
            })
            .await
            .unwrap();
    }
    // 500,000 completed (on `mail`).
    for _ in 0..500 {
        insert(
            store,
            (0..1000)
                .map(|i| NewJob::new("mail", format!("mail.k{}", i % 5), json!({"i": i})))
                .collect(),
        )
        .await;
        let jobs = claim(store, "mail", 1000).await;
        let completions = jobs
            .iter()
            .map(|j| Completion {
                lease: lease(j),
                result: None,
            })
            .collect();
        store
            .job_complete_many(JobCompleteManyParams {
                completions,
                now: SystemClock.now(),
            })
            .await
            .unwrap();
    }
    // 10,000 dead, in two error groups (on `billing`).
    for round in 0..10 {
        insert(
            store,
            (0..1000)
                .map(|i| NewJob::new("billing", "charge", json!({"i": i})).max_attempts(1))
                .collect(),
        )
        .await;
        let jobs = claim(store, "billing", 1000).await;
        let failures = jobs
            .iter()
            .enumerate()
            .map(|(i, j)| Failure {
                lease: lease(j),
                error: ErrorReport {
                    message: if i % 2 == 0 {
                        format!("card {} declined", 4000 + i + round)
                    } else {
                        "gateway timeout".into()
                    },
                    backtrace: None,
                },
                discard: false,
            })
            .collect();
        store
            .job_fail_many(JobFailManyParams {
                failures,
                now: SystemClock.now(),
            })
            .await
            .unwrap();
    }
    // 450,000 available and 40,000 scheduled on `default`.
    for b in 0..490 {
        let later = b >= 450;
        insert(
            store,
            (0..1000)
                .map(|i| {
                    let job = NewJob::new("default", format!("k{}", i % 7), json!({"i": i}));
                    if later {
                        job.run_at(rota_core::add_duration(
                            SystemClock.now(),
                            Duration::from_secs(86_400),
                        ))
                    } else {
                        job
                    }
                })
                .collect(),
        )
        .await;
    }
    let counts: u64 = store
        .job_counts(JobCountsParams::default())
        .await
        .unwrap()
        .iter()
        .map(|c| c.count)
        .sum();
    println!("filled {counts} jobs in {:?}", started.elapsed());
    assert_eq!(counts as usize, TOTAL);

    let server = rota_server::Server::start(
        db.store.clone(),
        Arc::new(SystemClock),
        rota_server::ServerConfig::default(),
        rota_server::Startup::default(),
    )
    .await
    .unwrap();
    let app = rota_server::app(server.state().clone());
    let get = |uri: &'static str| {
        let app = app.clone();
        async move {
            let t = Instant::now();
            let response = app
                .oneshot(Request::get(uri).body(Body::empty()).unwrap())
                .await
                .unwrap();
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            (t.elapsed(), status, body.len())
        }
    };
    // The first request takes the snapshot; later ones read it (the refresher renews it
    // once a second in the background).
    let (first, _, _) = get("/metrics").await;
    println!("first /metrics (takes the snapshot): {first:?}");
    let mut scrapes = Vec::new();
    let mut probes = Vec::new();
    let mut snapshots = Vec::new();
    let mut size = 0;
    for _ in 0..20 {
        let (took, status, len) = get("/metrics").await;
        assert!(status.is_success());
        scrapes.push(took);
        size = len;
        let (took, _, _) = get("/readyz").await;
        probes.push(took);
        let t = Instant::now();
        let snapshot = Snapshot::take(store, SystemClock.now(), &Retention::default())
            .await
            .unwrap();
        snapshots.push(t.elapsed());
        assert!(!snapshot.findings.is_empty());
        tokio::time::sleep(Duration::from_millis(150)).await;
    }
    scrapes.sort();
    probes.sort();
    snapshots.sort();
    println!(
        "/metrics scrape ({size} bytes): median {:?}, max {:?}",
        scrapes[10], scrapes[19]
    );
    println!(
        "/readyz probe: median {:?}, max {:?}",
        probes[10], probes[19]
    );
    println!(
        "snapshot (doctor run, counts, queues, workers): median {:?}, max {:?}",
        snapshots[10], snapshots[19]
    );
}
