//! Store throughput on SQLite, through the `Store` API.
//!
//! Run with `cargo bench -p rota-sqlite --bench store`. Figures are recorded in
//! docs/PERFORMANCE.md; nothing here is asserted.
//!
//! - `lifecycle`: enqueue a batch, claim it, complete it (one store call each), per batch
//!   size, FULL and NORMAL durability.
//! - `lifecycle_full_4_clients`: four such clients at batch 100 at once.
//! - `drain_combined`: a worker's steady state with `job_complete_and_claim` — per batch,
//!   one enqueue call and one call that completes the last batch and claims the next (two
//!   transactions per batch instead of three).
//! - `single_insert_full`: one job per call, awaited (W1 without HTTP).
//! - `concurrent_single_inserts`: 64 tasks each enqueueing one job per call (group commit).

use std::sync::{Arc, LazyLock};

use divan::counter::ItemsCount;
use divan::Bencher;
use rota_core::{Clock, NewJob, SystemClock};
use rota_sqlite::{Durability, SqliteOptions, SqliteStore};
use rota_store::*;
use serde_json::json;
use tokio::runtime::Runtime;

static RUNTIME: LazyLock<Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
});

fn main() {
    divan::main();
}

fn open(durability: Durability) -> (tempfile::TempDir, Arc<SqliteStore>) {
    let dir = tempfile::tempdir().unwrap();
    let mut options = SqliteOptions::new(dir.path().join("bench.db"));
    options.durability = durability;
    (dir, Arc::new(SqliteStore::open_migrated(options).unwrap()))
}

async fn enqueue(store: &SqliteStore, batch: usize) {
    let jobs = (0..batch)
        .map(|i| NewJob::new("default", "bench.noop", json!({ "i": i })))
        .collect();
    store
        .job_insert_many(JobInsertManyParams {
            jobs,
            defaults: Arc::default(),
            now: SystemClock.now(),
        })
        .await
        .unwrap();
}

fn claim(batch: usize) -> JobClaimManyParams {
    JobClaimManyParams {
        worker: "bench".into(),
        queues: vec!["default".into()],
        kinds: vec![],
        max: batch,
        lease: std::time::Duration::from_secs(30),
        now: SystemClock.now(),
    }
}

fn completions_of(claimed: &[rota_core::Job]) -> Vec<Completion> {
    claimed
        .iter()
        .map(|j| Completion {
            lease: LeaseRef {
                job: j.id,
                token: j.lease.as_ref().unwrap().token,
            },
            result: None,
        })
        .collect()
}

async fn lifecycle_once(store: &SqliteStore, batch: usize) {
    enqueue(store, batch).await;
    let claimed = store.job_claim_many(claim(batch)).await.unwrap();
    assert_eq!(claimed.len(), batch);
    let completions = completions_of(&claimed);
    for outcome in store
        .job_complete_many(JobCompleteManyParams {
            completions,
            now: SystemClock.now(),
        })
        .await
        .unwrap()
    {
        outcome.unwrap();
    }
}

fn lifecycle(bencher: Bencher<'_, '_>, durability: Durability, batch: usize) {
    let (_dir, store) = open(durability);
    bencher
        .counter(ItemsCount::new(batch))
        .bench_local(|| RUNTIME.block_on(lifecycle_once(&store, batch)));
}

/// Enqueue + claim + complete, `synchronous=FULL`.
#[divan::bench(args = [1, 10, 100])]
fn lifecycle_full(bencher: Bencher<'_, '_>, batch: usize) {
    lifecycle(bencher, Durability::Full, batch);
}

/// Enqueue + claim + complete, `synchronous=NORMAL`.
#[divan::bench(args = [1, 10, 100])]
fn lifecycle_normal(bencher: Bencher<'_, '_>, batch: usize) {
    lifecycle(bencher, Durability::Normal, batch);
}

/// Four clients each running the batch-100 lifecycle at once: group commit folds their
/// commits together (not one of the figures; shows what concurrency buys).
#[divan::bench(sample_count = 50)]
fn lifecycle_full_4_clients(bencher: Bencher<'_, '_>) {
    let (_dir, store) = open(Durability::Full);
    bencher.counter(ItemsCount::new(400usize)).bench_local(|| {
        RUNTIME.block_on(async {
            let clients: Vec<_> = (0..4)
                .map(|_| {
                    let store = store.clone();
                    tokio::spawn(async move { lifecycle_once(&store, 100).await })
                })
                .collect();
            for c in clients {
                c.await.unwrap();
            }
        })
    });
}

/// A draining worker's steady state at batch 100: each iteration enqueues a batch, then
/// completes the batch claimed last time and claims this one in one
/// `job_complete_and_claim` call — two transactions per 100 jobs.
fn drain_combined(bencher: Bencher<'_, '_>, durability: Durability) {
    const BATCH: usize = 100;
    let (_dir, store) = open(durability);
    let mut held: Vec<rota_core::Job> = Vec::new();
    bencher.counter(ItemsCount::new(BATCH)).bench_local(|| {
        RUNTIME.block_on(async {
            enqueue(&store, BATCH).await;
            let done = store
                .job_complete_and_claim(JobCompleteAndClaimParams {
                    completions: completions_of(&held),
                    claim: claim(BATCH),
                })
                .await
                .unwrap();
            for outcome in done.completions {
                outcome.unwrap();
            }
            held = done.claimed.unwrap();
            assert_eq!(held.len(), BATCH);
        })
    });
}

/// The draining worker's steady state, `synchronous=FULL`.
#[divan::bench]
fn drain_combined_full(bencher: Bencher<'_, '_>) {
    drain_combined(bencher, Durability::Full);
}

/// The draining worker's steady state, `synchronous=NORMAL` (no fsync: Rota's and
/// SQLite's own work).
#[divan::bench]
fn drain_combined_normal(bencher: Bencher<'_, '_>) {
    drain_combined(bencher, Durability::Normal);
}

/// One job per call, each awaited, `synchronous=FULL`: W1's store share (the writer hop,
/// the insert and the commit's fsync), without HTTP.
#[divan::bench]
fn single_insert_full(bencher: Bencher<'_, '_>) {
    let (_dir, store) = open(Durability::Full);
    bencher.bench_local(|| RUNTIME.block_on(enqueue(&store, 1)));
}

/// One job per call, `synchronous=NORMAL`: the same without the fsync.
#[divan::bench]
fn single_insert_normal(bencher: Bencher<'_, '_>) {
    let (_dir, store) = open(Durability::Normal);
    bencher.bench_local(|| RUNTIME.block_on(enqueue(&store, 1)));
}

const TASKS: usize = 64;
const PER_TASK: usize = 20;

fn concurrent_inserts(bencher: Bencher<'_, '_>, durability: Durability) {
    let (_dir, store) = open(durability);
    bencher
        .counter(ItemsCount::new(TASKS * PER_TASK))
        .bench_local(|| {
            RUNTIME.block_on(async {
                let tasks: Vec<_> = (0..TASKS)
                    .map(|t| {
                        let store = store.clone();
                        tokio::spawn(async move {
                            for i in 0..PER_TASK {
                                let job =
                                    NewJob::new("default", "bench.noop", json!({ "t": t, "i": i }));
                                store
                                    .job_insert_many(JobInsertManyParams {
                                        jobs: vec![job],
                                        defaults: Arc::default(),
                                        now: SystemClock.now(),
                                    })
                                    .await
                                    .unwrap();
                            }
                        })
                    })
                    .collect();
                for t in tasks {
                    t.await.unwrap();
                }
            })
        });
}

/// 64 tasks each enqueueing one job per call, `synchronous=FULL` (group commit).
#[divan::bench(sample_count = 20)]
fn concurrent_single_inserts_full(bencher: Bencher<'_, '_>) {
    concurrent_inserts(bencher, Durability::Full);
}

/// 64 tasks each enqueueing one job per call, `synchronous=NORMAL`.
#[divan::bench(sample_count = 20)]
fn concurrent_single_inserts_normal(bencher: Bencher<'_, '_>) {
    concurrent_inserts(bencher, Durability::Normal);
}
