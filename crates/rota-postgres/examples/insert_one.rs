//! One job per call, straight to the store (no HTTP): the PostgreSQL side of `rota bench`'s
//! W1. `cargo run --release -p rota-postgres --example insert_one -- postgres://… [jobs]`.

use std::sync::Arc;
use std::time::Instant;

use rota_core::NewJob;
use rota_postgres::{PostgresOptions, PostgresStore};
use rota_store::{JobInsertManyParams, Store};

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let mut args = std::env::args().skip(1);
    let url = args.next().expect("usage: insert_one postgres://… [jobs]");
    let n: usize = args.next().map_or(5_000, |s| s.parse().expect("a number"));
    let store = PostgresStore::open_migrated(PostgresOptions::new(url))
        .await
        .expect("open");
    let started = Instant::now();
    for i in 0..n {
        store
            .job_insert_many(JobInsertManyParams {
                jobs: vec![NewJob::new(
                    "default",
                    "bench.noop",
                    serde_json::json!({ "i": i }),
                )],
                defaults: Arc::default(),
                now: jiff::Timestamp::now(),
            })
            .await
            .expect("insert");
    }
    let took = started.elapsed();
    println!(
        "{n} single-job inserts: {:.0} jobs/s, {:.3} ms each",
        n as f64 / took.as_secs_f64(),
        took.as_secs_f64() * 1000.0 / n as f64
    );
}
