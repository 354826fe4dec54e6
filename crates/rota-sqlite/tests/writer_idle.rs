//! The writer spins briefly for the next request while one client sends call after call,
//! and sleeps once the calls stop: an idle server burns no CPU.

use std::sync::Arc;
use std::time::Duration;

use rota_core::{Clock, NewJob, SystemClock};
use rota_sqlite::{SqliteOptions, SqliteStore};
use rota_store::{JobInsertManyParams, Store};
use serde_json::json;

/// CPU time (user + system, in clock ticks) of this process's thread named `prefix…`.
fn thread_ticks(prefix: &str) -> u64 {
    for task in std::fs::read_dir("/proc/self/task").unwrap() {
        let dir = task.unwrap().path();
        let comm = std::fs::read_to_string(dir.join("comm")).unwrap_or_default();
        if !comm.trim().starts_with(prefix) {
            continue;
        }
        let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
        // Fields after the parenthesised name: state is field 3; utime and stime are 14, 15.
        let after = &stat[stat.rfind(')').unwrap() + 2..];
        let fields: Vec<&str> = after.split(' ').collect();
        return fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    }
    panic!("no thread named {prefix}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_writer_sleeps_when_the_calls_stop() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(
        SqliteStore::open_migrated(SqliteOptions::new(dir.path().join("rota.db"))).unwrap(),
    );
    // Back to back: the writer spins between these.
    for i in 0..200 {
        store
            .job_insert_many(JobInsertManyParams {
                jobs: vec![NewJob::new("default", "k", json!({ "i": i }))],
                defaults: Arc::default(),
                now: SystemClock.now(),
            })
            .await
            .unwrap();
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = thread_ticks("rota-sqlite-wri");
    tokio::time::sleep(Duration::from_millis(500)).await;
    let spent = thread_ticks("rota-sqlite-wri") - before;
    // A writer still spinning would spend the whole half second (about 50 ticks).
    assert!(spent <= 2, "the idle writer used {spent} ticks in 500 ms");
}
