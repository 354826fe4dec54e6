//! Durability: what an enqueue acknowledged survives `kill -9`, and group commit really
//! groups.

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rota_core::{Clock, JobId, NewJob, SystemClock};
use rota_sqlite::{SqliteOptions, SqliteStore};
use rota_store::{JobInsertManyParams, Store};
use serde_json::json;

const CHILD_DB_ENV: &str = "ROTA_CRASH_CHILD_DB";

/// The child process of the crash test: enqueues batches from four tasks forever, printing
/// each acknowledged batch's ids on one line. Run only by `acknowledged_jobs_survive_kill_9`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "child process of acknowledged_jobs_survive_kill_9, which runs it"]
async fn crash_child() {
    let path = std::env::var(CHILD_DB_ENV).expect("run by the crash test");
    let store = Arc::new(SqliteStore::open_migrated(SqliteOptions::new(path)).expect("open"));
    let out = Arc::new(Mutex::new(std::io::stdout()));
    let mut tasks = Vec::new();
    for task in 0..4 {
        let (store, out) = (store.clone(), out.clone());
        tasks.push(tokio::spawn(async move {
            for seq in 0u64.. {
                let batch = (0..5)
                    .map(|k| {
                        NewJob::new(
                            "default",
                            "crash.test",
                            json!({"task": task, "seq": seq, "k": k}),
                        )
                    })
                    .collect();
                let inserted = store
                    .job_insert_many(JobInsertManyParams {
                        jobs: batch,
                        defaults: Arc::default(),
                        now: SystemClock.now(),
                    })
                    .await
                    .expect("insert");
                let ids: Vec<String> = inserted.iter().map(|i| i.job.id.to_string()).collect();
                // One write per line: a pipe write this small is atomic, so a line is
                // either whole (acknowledged) or absent.
                let line = format!("ack {}\n", ids.join(" "));
                out.lock().unwrap().write_all(line.as_bytes()).unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
}

fn pseudo_random_millis(lo: u64, hi: u64) -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .subsec_nanos() as u64;
    lo + (nanos.wrapping_mul(2_654_435_761) >> 7) % (hi - lo)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_jobs_survive_kill_9() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("crash.db");
    let exe = std::env::current_exe().unwrap();
    let mut acknowledged: Vec<JobId> = Vec::new();
    for round in 0..20 {
        let mut child = Command::new(&exe)
            .args([
                "--exact",
                "crash_child",
                "--ignored",
                "--nocapture",
                "--test-threads=1",
            ])
            .env(CHILD_DB_ENV, &db)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (first_ack_tx, first_ack_rx) = std::sync::mpsc::channel();
        let reader = std::thread::spawn(move || {
            let mut reader = BufReader::new(stdout);
            let mut acked = Vec::new();
            let mut line = String::new();
            let mut told = false;
            while reader.read_line(&mut line).unwrap_or(0) > 0 {
                // A line cut by the kill has no newline: its batch was not reported.
                if let Some(ids) = line.strip_suffix('\n').and_then(|l| l.strip_prefix("ack ")) {
                    acked.extend(ids.split(' ').map(|id| id.parse::<JobId>().unwrap()));
                    if !told {
                        let _ = first_ack_tx.send(());
                        told = true;
                    }
                }
                line.clear();
            }
            acked
        });
        first_ack_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the child acknowledged nothing");
        std::thread::sleep(Duration::from_millis(pseudo_random_millis(5, 120)));
        child.kill().unwrap(); // SIGKILL
        child.wait().unwrap();
        let acked = reader.join().unwrap();
        assert!(!acked.is_empty(), "round {round}: nothing acknowledged");
        acknowledged.extend(acked);

        let store = SqliteStore::open_migrated(SqliteOptions::new(&db)).unwrap();
        let started = Instant::now();
        for id in &acknowledged {
            let job = store
                .job_get(rota_store::JobGetParams { id: *id })
                .await
                .unwrap_or_else(|e| panic!("round {round}: acknowledged job lost: {e}"));
            assert_eq!(job.kind, "crash.test");
        }
        assert!(started.elapsed() < Duration::from_secs(60));
    }
    assert!(acknowledged.len() >= 20 * 5);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_single_inserts_share_commits_and_all_are_durable() {
    const N: usize = 100;
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("group.db");
    let store = Arc::new(SqliteStore::open_migrated(SqliteOptions::new(&db)).unwrap());
    let before = store.writer_stats();
    let barrier = Arc::new(tokio::sync::Barrier::new(N));
    let tasks: Vec<_> = (0..N)
        .map(|i| {
            let (store, barrier) = (store.clone(), barrier.clone());
            tokio::spawn(async move {
                barrier.wait().await;
                let job = NewJob::new("default", "group", json!({ "i": i }));
                let mut out = store
                    .job_insert_many(JobInsertManyParams {
                        jobs: vec![job],
                        defaults: Arc::default(),
                        now: SystemClock.now(),
                    })
                    .await
                    .unwrap();
                out.remove(0).job.id
            })
        })
        .collect();
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    let after = store.writer_stats();
    let transactions = after.transactions - before.transactions;
    assert_eq!(after.requests - before.requests, N as u64);
    assert!(
        transactions <= (N / 4) as u64,
        "{N} concurrent inserts took {transactions} transactions: group commit is not grouping"
    );
    drop(store);
    let reopened = SqliteStore::open_migrated(SqliteOptions::new(&db)).unwrap();
    for id in ids {
        reopened
            .job_get(rota_store::JobGetParams { id })
            .await
            .unwrap();
    }
}

/// A database file deleted or replaced under the running store: the open connection would
/// keep taking writes into a file nothing opens again, so writes are refused as unavailable
/// (naming the file) instead of acknowledged and lost at the next start.
#[tokio::test]
async fn writes_are_refused_once_the_database_file_is_deleted_or_replaced() {
    for replace in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rota.db");
        let store = SqliteStore::open_migrated(SqliteOptions::new(&path)).unwrap();
        let insert = || JobInsertManyParams {
            jobs: vec![NewJob::new("default", "k", json!({}))],
            defaults: Arc::default(),
            now: SystemClock.now(),
        };
        store.job_insert_many(insert()).await.unwrap();
        std::fs::remove_file(&path).unwrap();
        if replace {
            std::fs::write(&path, b"").unwrap();
        }
        let err = store.job_insert_many(insert()).await.unwrap_err();
        assert_eq!(err.kind(), rota_store::ErrorKind::Unavailable, "{err}");
        let word = if replace { "replaced" } else { "deleted" };
        assert!(
            err.to_string().contains(word) && err.to_string().contains("rota.db"),
            "{err}"
        );
    }
}
