//! Flow control through real servers: a queue's concurrency holds across workers and nodes.

mod support;

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rota::api::{EnqueueManyRequest, FetchRequest, NewJobRequest};
use rota_testkit::TempPostgresDb;
use support::Server;

const JOBS: usize = 2_000;
const LIMIT: usize = 4;
const CONFIG: &str = "[queues.limited]\nconcurrency = 4\n";

/// Start and end of each job as its handler saw them.
type SideEffects = Arc<Mutex<Vec<(Instant, Instant)>>>;

/// A worker that asks for more than the limit, "runs" each job for 2 ms concurrently, logs
/// when each ran, and completes them; until every job is done.
async fn worker(url: String, name: String, log: SideEffects) {
    let client = rota::Client::new(&url).unwrap();
    loop {
        if log.lock().unwrap().len() >= JOBS {
            return;
        }
        let fetched = client
            .fetch(&FetchRequest {
                worker: name.clone(),
                queues: vec!["limited".into()],
                max: Some(8),
                wait: Some("1s".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let runs: Vec<_> = fetched
            .jobs
            .iter()
            .map(|_| {
                tokio::spawn(async {
                    let start = Instant::now();
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    (start, Instant::now())
                })
            })
            .collect();
        for run in runs {
            let ran = run.await.unwrap();
            log.lock().unwrap().push(ran);
        }
        if fetched.jobs.is_empty() {
            continue;
        }
        support::complete_all(&client, &fetched.jobs).await.unwrap();
    }
}

/// The most jobs that ran at once, from their start and end times.
fn most_at_once(log: &[(Instant, Instant)]) -> usize {
    let mut events: Vec<(Instant, i32)> = Vec::with_capacity(log.len() * 2);
    for (start, end) in log {
        events.push((*start, 1));
        events.push((*end, -1));
    }
    // At the same instant, ends before starts.
    events.sort();
    let (mut now, mut most) = (0i32, 0i32);
    for (_, delta) in events {
        now += delta;
        most = most.max(now);
    }
    most as usize
}

async fn race(urls: Vec<String>) {
    let client = rota::Client::new(&urls[0]).unwrap();
    for batch in 0..JOBS / 500 {
        let jobs = (0..500)
            .map(|i| NewJobRequest {
                queue: "limited".into(),
                kind: "limited.work".into(),
                args: serde_json::json!({ "n": batch * 500 + i }),
                ..Default::default()
            })
            .collect();
        client
            .enqueue_many_ids(&EnqueueManyRequest { jobs })
            .await
            .unwrap();
    }
    let log: SideEffects = Arc::default();
    let workers: Vec<_> = (0..3)
        .map(|w| {
            tokio::spawn(worker(
                urls[w % urls.len()].clone(),
                format!("worker-{w}"),
                log.clone(),
            ))
        })
        .collect();
    for w in workers {
        tokio::time::timeout(Duration::from_secs(120), w)
            .await
            .expect("the queue drains")
            .unwrap();
    }
    let log = std::mem::take(&mut *log.lock().unwrap());
    assert_eq!(log.len(), JOBS, "every job ran once");
    let most = most_at_once(&log);
    assert!(
        most <= LIMIT,
        "{most} jobs ran at once; the limit is {LIMIT}"
    );
    assert_eq!(most, LIMIT, "the limit was reached, so the test tested it");
    let queue = client.queue("limited").await.unwrap();
    assert_eq!(queue.concurrency, Some(LIMIT as u32));
    assert_eq!(queue.counts.get("completed").copied(), Some(JOBS as u64));
}

/// Three workers asking for 8 jobs at a time on a queue with `concurrency = 4`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_workers_never_run_more_than_a_queues_concurrency() {
    let server = Server::start(CONFIG);
    race(vec![server.url.clone()]).await;
}

/// The same on two PostgreSQL nodes, the workers spread over both.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_postgres_nodes_never_run_more_than_a_queues_concurrency() {
    let db = TempPostgresDb::new();
    let a = Server::start_with_args(CONFIG, &["--database", &db.url]);
    let b = Server::start_with_args(CONFIG, &["--database", &db.url]);
    race(vec![a.url.clone(), b.url.clone()]).await;
}
