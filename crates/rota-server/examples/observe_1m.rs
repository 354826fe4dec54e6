//! Measures a `/metrics` scrape and a doctor run with 1,000,000 jobs in the store.
//! Figures go to docs/PERFORMANCE.md.
//!
//! Run with `cargo run --release -p rota-server --example observe_1m` (about a minute: most
//! of it fills the database).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rota_core::{Clock, ErrorReport, NewJob, SystemClock};
use rota_server::metrics::Metrics;
use rota_store::*;
use rota_testkit::TempSqlite;
use serde_json::json;

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
        .job_counts()
        .await
        .unwrap()
        .iter()
        .map(|c| c.count)
        .sum();
    println!("filled {counts} jobs in {:?}", started.elapsed());
    assert_eq!(counts as usize, TOTAL);

    let metrics = Metrics::new();
    let mut scrapes = Vec::new();
    let mut doctors = Vec::new();
    let mut size = 0;
    for _ in 0..20 {
        let t = Instant::now();
        size = metrics
            .render(store, SystemClock.now())
            .await
            .unwrap()
            .len();
        scrapes.push(t.elapsed());
        let t = Instant::now();
        let report = rota_server::routes::health::doctor_report(store, SystemClock.now()).await;
        doctors.push(t.elapsed());
        assert!(!report.findings.is_empty());
    }
    scrapes.sort();
    doctors.sort();
    println!(
        "/metrics render ({size} bytes): median {:?}, max {:?}",
        scrapes[10], scrapes[19]
    );
    println!(
        "doctor run: median {:?}, max {:?}",
        doctors[10], doctors[19]
    );
}
