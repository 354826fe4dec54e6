use std::sync::Arc;
use std::time::{Duration, Instant};
use rota_core::{Clock, NewJob, SystemClock};
use rota_sqlite::{Durability, SqliteOptions, SqliteStore};
use rota_store::*;
use serde_json::json;

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let dir = tempfile::tempdir().unwrap();
    let mut o = SqliteOptions::new(dir.path().join("b.db"));
    o.durability = if std::env::args().any(|a| a == "full") { Durability::Full } else { Durability::Normal };
    let store = SqliteStore::open(o).unwrap();
    let batch = 100;
    let (mut ti, mut tc, mut tx) = (Duration::ZERO, Duration::ZERO, Duration::ZERO);
    let iters = 200;
    for _ in 0..iters {
        let jobs = (0..batch).map(|i| NewJob::new("default", "bench.noop", json!({ "i": i }))).collect();
        let t = Instant::now();
        store.job_insert_many(JobInsertManyParams { jobs, defaults: Arc::default(), now: SystemClock.now() }).await.unwrap();
        ti += t.elapsed();
        let t = Instant::now();
        let claimed = store.job_claim_many(JobClaimManyParams { worker: "b".into(), queues: vec!["default".into()], kinds: vec![], max: batch, lease: Duration::from_secs(30), now: SystemClock.now() }).await.unwrap();
        tc += t.elapsed();
        let completions = claimed.iter().map(|j| Completion { lease: LeaseRef { job: j.id, token: j.lease.as_ref().unwrap().token }, result: None }).collect();
        let t = Instant::now();
        store.job_complete_many(JobCompleteManyParams { completions, now: SystemClock.now() }).await.unwrap();
        tx += t.elapsed();
    }
    let n = (iters * batch) as f64;
    println!("insert {:.1}us/job claim {:.1}us/job complete {:.1}us/job total {:.0} jobs/s",
        ti.as_secs_f64()*1e6/n, tc.as_secs_f64()*1e6/n, tx.as_secs_f64()*1e6/n, n/(ti+tc+tx).as_secs_f64());
}
