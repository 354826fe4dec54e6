//! WAL checkpoints run between the writer's groups, never inside a commit a caller waits on,
//! and still keep the WAL from growing under a steady load.

use std::sync::Arc;

use rota_core::{Clock, NewJob, SystemClock};
use rota_sqlite::{SqliteOptions, SqliteStore};
use rota_store::{JobInsertManyParams, Store, StoreMigrateParams};
use serde_json::json;

const MIB: u64 = 1024 * 1024;

async fn insert(store: &SqliteStore, from: usize, n: usize) {
    store
        .job_insert_many(JobInsertManyParams {
            jobs: (from..from + n)
                .map(|i| NewJob::new("default", "bulk", json!({ "i": i, "pad": "x".repeat(200) })))
                .collect(),
            defaults: Arc::default(),
            now: SystemClock.now(),
        })
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_wal_stays_small_after_100_000_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rota.db");
    let store = Arc::new(SqliteStore::open(SqliteOptions::new(&path)).unwrap());
    store
        .store_migrate(StoreMigrateParams {
            now: SystemClock.now(),
        })
        .await
        .unwrap();
    let wal_size = || {
        std::fs::metadata(dir.path().join("rota.db-wal"))
            .map(|m| m.len())
            .unwrap_or(0)
    };
    // One producer at a time: the writer is idle between commits and checkpoints then, once
    // the WAL holds ~4 MiB; the file (reused from its start after each checkpoint) stays
    // near that.
    for b in 0..500 {
        insert(&store, b * 100, 100).await;
    }
    let idle_wal = wal_size();
    let idle_checkpoints = store.writer_stats().checkpoints;
    assert!(idle_checkpoints > 0);
    assert!(
        idle_wal < 12 * MIB,
        "the WAL grew to {} KiB while idle",
        idle_wal / 1024
    );
    // Four producers keep the writer busy: it checkpoints between groups at ~40 MiB.
    let mut tasks = tokio::task::JoinSet::new();
    for p in 0..4 {
        let store = store.clone();
        tasks.spawn(async move {
            for b in 0..125 {
                insert(&store, 50_000 + (p * 125 + b) * 100, 100).await;
            }
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let wal = wal_size();
    let db = std::fs::metadata(&path).unwrap().len();
    // Without checkpoints the WAL would hold every page written since the idle phase; with
    // them it stays near the 40 MiB busy threshold.
    assert!(db > 30 * MIB, "the data is in the database: {db} bytes");
    assert!(store.writer_stats().checkpoints > idle_checkpoints);
    assert!(
        wal < 64 * MIB,
        "the WAL grew to {} KiB (database {} KiB)",
        wal / 1024,
        db / 1024
    );
}

/// An idle worker's fetches write nothing: an empty claim within a second of the worker's
/// last refresh changes no page, so its commit appends nothing to the WAL (and costs no
/// fsync).
#[tokio::test]
async fn empty_claims_write_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("rota.db");
    let store = SqliteStore::open_migrated(SqliteOptions::new(&path)).unwrap();
    let now = SystemClock.now();
    let claim = |at| rota_store::JobClaimManyParams {
        worker: "idle".into(),
        queues: vec!["default".into()],
        kinds: vec![],
        max: 10,
        lease: std::time::Duration::from_secs(30),
        now: at,
    };
    store
        .worker_register(rota_store::WorkerRegisterParams {
            worker: rota_store::WorkerInfo {
                id: "idle".into(),
                ..Default::default()
            },
            now,
        })
        .await
        .unwrap();
    assert!(store.job_claim_many(claim(now)).await.unwrap().is_empty());
    let wal = || {
        std::fs::metadata(dir.path().join("rota.db-wal"))
            .unwrap()
            .len()
    };
    let before = wal();
    for i in 0..50 {
        let at = rota_core::add_duration(now, std::time::Duration::from_millis(i * 10));
        assert!(store.job_claim_many(claim(at)).await.unwrap().is_empty());
    }
    assert_eq!(wal(), before, "50 empty claims wrote to the WAL");
}
