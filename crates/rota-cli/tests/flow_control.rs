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

/// One run of a job as its handler saw it: its key, start and end.
#[derive(Debug, Clone)]
struct Run {
    key: Option<String>,
    start: Instant,
    end: Instant,
}

/// Every run, in the order they were logged.
type SideEffects = Arc<Mutex<Vec<Run>>>;

/// A worker that asks for `max` jobs of `queue` at a time, "runs" each for 2 ms
/// concurrently, logs when each ran, and completes them; until `total` jobs have run.
async fn worker(
    url: String,
    name: String,
    queue: &'static str,
    max: u32,
    total: usize,
    log: SideEffects,
) {
    let client = rota::Client::new(&url).unwrap();
    loop {
        if log.lock().unwrap().len() >= total {
            return;
        }
        let fetched = client
            .fetch(&FetchRequest {
                worker: name.clone(),
                queues: vec![queue.into()],
                max: Some(max),
                wait: Some("1s".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        let runs: Vec<_> = fetched
            .jobs
            .iter()
            .map(|job| {
                let key = job.concurrency_key.clone();
                tokio::spawn(async move {
                    let start = Instant::now();
                    tokio::time::sleep(Duration::from_millis(2)).await;
                    Run {
                        key,
                        start,
                        end: Instant::now(),
                    }
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

/// Runs `workers` workers spread over `urls` until `total` jobs of `queue` have run.
async fn drain(
    urls: &[String],
    queue: &'static str,
    workers: usize,
    max: u32,
    total: usize,
) -> Vec<Run> {
    let log: SideEffects = Arc::default();
    let handles: Vec<_> = (0..workers)
        .map(|w| {
            tokio::spawn(worker(
                urls[w % urls.len()].clone(),
                format!("worker-{w}"),
                queue,
                max,
                total,
                log.clone(),
            ))
        })
        .collect();
    for w in handles {
        tokio::time::timeout(Duration::from_secs(120), w)
            .await
            .expect("the queue drains")
            .unwrap();
    }
    let log = std::mem::take(&mut *log.lock().unwrap());
    log
}

/// The most runs that overlapped, from their start and end times.
fn most_at_once<'a>(log: impl IntoIterator<Item = &'a Run>) -> usize {
    let mut events: Vec<(Instant, i32)> = Vec::new();
    for run in log {
        events.push((run.start, 1));
        events.push((run.end, -1));
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

/// Enqueues `jobs` in batches of 500.
async fn enqueue(client: &rota::Client, jobs: Vec<NewJobRequest>) {
    for batch in jobs.chunks(500) {
        client
            .enqueue_many_ids(&EnqueueManyRequest {
                jobs: batch.to_vec(),
            })
            .await
            .unwrap();
    }
}

fn job_on(queue: &str, key: Option<String>) -> NewJobRequest {
    NewJobRequest {
        queue: queue.into(),
        kind: format!("{queue}.work"),
        concurrency_key: key,
        ..Default::default()
    }
}

async fn race(urls: Vec<String>) {
    let client = rota::Client::new(&urls[0]).unwrap();
    enqueue(
        &client,
        (0..JOBS).map(|_| job_on("limited", None)).collect(),
    )
    .await;
    let log = drain(&urls, "limited", 3, 8, JOBS).await;
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

/// 20 keys x 200 jobs on a queue with `key_concurrency = 2`: never more than two running
/// jobs share a key, and every job completes.
async fn keyed_race(urls: Vec<String>) {
    const KEYS: usize = 20;
    const PER_KEY: usize = 200;
    let client = rota::Client::new(&urls[0]).unwrap();
    let jobs = (0..PER_KEY)
        .flat_map(|_| (0..KEYS).map(|k| job_on("keyed", Some(format!("customer:{k}")))))
        .collect();
    enqueue(&client, jobs).await;
    let log = drain(&urls, "keyed", 3, 16, KEYS * PER_KEY).await;
    assert_eq!(log.len(), KEYS * PER_KEY, "every job ran once");
    let mut busiest = 0;
    for k in 0..KEYS {
        let key = format!("customer:{k}");
        let runs: Vec<&Run> = log
            .iter()
            .filter(|r| r.key.as_deref() == Some(&key))
            .collect();
        assert_eq!(runs.len(), PER_KEY, "{key}");
        let most = most_at_once(runs);
        assert!(
            most <= 2,
            "{most} jobs of {key} ran at once; its limit is 2"
        );
        busiest = busiest.max(most);
    }
    assert_eq!(busiest, 2, "a key reached its limit, so the test tested it");
    assert!(most_at_once(&log) > 2, "keys ran side by side");
    let queue = client.queue("keyed").await.unwrap();
    assert_eq!(
        queue.counts.get("completed").copied(),
        Some((KEYS * PER_KEY) as u64)
    );
}

const KEYED: &str = "[queues.keyed]\nkey_concurrency = 2\n";

/// Keyed concurrency on one server.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyed_concurrency_holds_for_every_key() {
    let server = Server::start(KEYED);
    keyed_race(vec![server.url.clone()]).await;
}

/// Keyed concurrency on two PostgreSQL nodes.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn keyed_concurrency_holds_across_postgres_nodes() {
    let db = TempPostgresDb::new();
    let a = Server::start_with_args(KEYED, &["--database", &db.url]);
    let b = Server::start_with_args(KEYED, &["--database", &db.url]);
    keyed_race(vec![a.url.clone(), b.url.clone()]).await;
}

/// `rate = "10/1s"` over about ten seconds: no second holds more starts than the bucket
/// allows (10 per second, plus the one a burst of 1 may add at a window's edge), and the
/// workers are not starved either (waiting fetches look again when the next token is due).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rate_limit_spreads_starts_evenly() {
    const TOTAL: usize = 100;
    let server = Server::start("[queues.rated]\nrate = \"10/1s\"\n");
    let client = server.client();
    enqueue(&client, (0..TOTAL).map(|_| job_on("rated", None)).collect()).await;
    let began = Instant::now();
    let log = drain(std::slice::from_ref(&server.url), "rated", 2, 10, TOTAL).await;
    let took = began.elapsed();
    let mut starts: Vec<Instant> = log.iter().map(|r| r.start).collect();
    starts.sort();
    for (i, start) in starts.iter().enumerate() {
        let within = starts[i..]
            .iter()
            .take_while(|s| **s < *start + Duration::from_secs(1))
            .count();
        assert!(
            within <= 11,
            "{within} starts within one second from start {i}"
        );
    }
    assert!(
        took >= Duration::from_secs(9),
        "100 jobs at 10/s took {took:?}"
    );
    assert!(
        took < Duration::from_secs(15),
        "the workers kept up with the rate: {took:?}"
    );
}

/// Key A enqueues 10,000 jobs, then key B 10: B's jobs all start within the first 100
/// claims of a worker taking one job at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn one_keys_backlog_does_not_starve_another() {
    let server = Server::start("");
    let client = server.client();
    let a: Vec<NewJobRequest> = (0..10_000)
        .map(|_| job_on("default", Some("tenant:a".into())))
        .collect();
    enqueue(&client, a).await;
    let b: Vec<NewJobRequest> = (0..10)
        .map(|_| job_on("default", Some("tenant:b".into())))
        .collect();
    enqueue(&client, b).await;
    let mut b_started = Vec::new();
    for claim in 0..100 {
        let fetched = client
            .fetch(&FetchRequest {
                worker: "w".into(),
                queues: vec!["default".into()],
                max: Some(1),
                ..Default::default()
            })
            .await
            .unwrap();
        let job = &fetched.jobs[0];
        if job.concurrency_key.as_deref() == Some("tenant:b") {
            b_started.push(claim);
        }
        support::complete_all(&client, &fetched.jobs).await.unwrap();
    }
    assert_eq!(
        b_started.len(),
        10,
        "B's jobs started at claims {b_started:?}"
    );
    assert!(b_started.iter().all(|c| *c < 100));
}

/// `max_depth = 100`: the 101st enqueue is answered 429 with `Retry-After` and names the
/// limit; the hundred accepted jobs are all there; the queue, the metrics and the doctor
/// show it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_full_queue_answers_429_with_retry_after() {
    let server = Server::start("[queues.bounded]\nmax_depth = 100\n");
    let client = server.client();
    for _ in 0..100 {
        client
            .enqueue_request(&job_on("bounded", None))
            .await
            .unwrap();
    }
    let http = reqwest::Client::new();
    let answer = http
        .post(format!("{}/v1/jobs", server.url))
        .json(&serde_json::json!({"queue": "bounded", "kind": "bounded.work"}))
        .send()
        .await
        .unwrap();
    assert_eq!(answer.status().as_u16(), 429);
    let retry_after: u64 = answer.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry_after >= 1, "{retry_after}");
    assert_eq!(
        answer.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let problem: serde_json::Value = answer.json().await.unwrap();
    assert_eq!(problem["code"], "queue_full");
    assert_eq!(problem["field"], "queue");
    assert_eq!(problem["retry_after"], retry_after);
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .contains("max_depth 100"),
        "{problem}"
    );
    let queue = client.queue("bounded").await.unwrap();
    assert_eq!(
        queue.counts.get("available").copied(),
        Some(100),
        "nothing lost"
    );
    assert_eq!(queue.overflows, 1);
    let metrics = http
        .get(format!("{}/metrics", server.url))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("rota_queue_overflows_total{queue=\"bounded\",outcome=\"rejected\"} 1"),
        "{metrics}"
    );
    let doctor = server.rota(&["doctor"]);
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        text.contains("queue `bounded` holds 100 ready and scheduled jobs, at its max_depth 100"),
        "{text}"
    );
    let show = server.rota(&["queues", "show", "bounded"]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(text.contains("depth 100"), "{text}");
    assert!(text.contains("overflows: 1"), "{text}");
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

/// Fifty enqueues of one debounce key within a second, through the API and the CLI, run
/// once, with the last arguments; a throttled key answers duplicates.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_debounced_burst_runs_once_with_the_last_arguments() {
    let server = Server::start("");
    let client = server.client();
    let debounce = |n: u32| NewJobRequest {
        queue: "default".into(),
        kind: "reindex".into(),
        args: serde_json::json!({ "n": n }),
        debounce: Some(rota::api::DebounceRequest {
            key: "user:42".into(),
            period: "1s".into(),
            max_wait: "10s".into(),
        }),
        ..Default::default()
    };
    let mut ids = std::collections::HashSet::new();
    for n in 0..49 {
        ids.insert(client.enqueue_request(&debounce(n)).await.unwrap().job.id);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let out = server.rota(&[
        "enqueue",
        "reindex",
        "--args",
        r#"{"n": 49}"#,
        "--debounce",
        "user:42",
        "--period",
        "1s",
        "--max-wait",
        "10s",
        "--json",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let last: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(last["duplicate"], true, "{last}");
    ids.insert(last["job"]["id"].as_str().unwrap().to_string());
    assert_eq!(ids.len(), 1, "one job for the burst");
    let mut ran = Vec::new();
    let began = Instant::now();
    while began.elapsed() < Duration::from_secs(3) {
        let fetched = client
            .fetch(&FetchRequest {
                worker: "w".into(),
                queues: vec!["default".into()],
                max: Some(10),
                wait: Some("1s".into()),
                ..Default::default()
            })
            .await
            .unwrap();
        support::complete_all(&client, &fetched.jobs).await.unwrap();
        ran.extend(fetched.jobs);
    }
    assert_eq!(ran.len(), 1, "it ran once");
    assert_eq!(ran[0].args, serde_json::json!({ "n": 49 }));

    let throttled = server.rota(&[
        "enqueue",
        "digest",
        "--throttle",
        "user:42",
        "--period",
        "1h",
        "--json",
    ]);
    let again = server.rota(&[
        "enqueue",
        "digest",
        "--throttle",
        "user:42",
        "--period",
        "1h",
        "--json",
    ]);
    let first: serde_json::Value = serde_json::from_slice(&throttled.stdout).unwrap();
    let second: serde_json::Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(second["duplicate"], true);
    assert_eq!(first["job"]["id"], second["job"]["id"]);
    let bad = server.rota(&[
        "enqueue",
        "digest",
        "--debounce",
        "k",
        "--period",
        "1m",
        "--max-wait",
        "1s",
    ]);
    assert!(!bad.status.success());
    let err = String::from_utf8_lossy(&bad.stderr);
    assert!(err.contains("debounce.max_wait"), "{err}");
}

/// What limits hold back is visible: the job says why it waits, the queue how many wait and
/// which keys are at their limit, the doctor names it, the metrics count it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn what_a_limit_holds_back_is_shown_everywhere() {
    let server = Server::start("[queues.keyed]\nkey_concurrency = 1\n");
    let client = server.client();
    let mut ids = Vec::new();
    for _ in 0..3 {
        let job = job_on("keyed", Some("customer:42".into()));
        ids.push(client.enqueue_request(&job).await.unwrap().job.id);
    }
    let held = client
        .fetch(&FetchRequest {
            worker: "w".into(),
            queues: vec!["keyed".into()],
            max: Some(10),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(held.jobs.len(), 1, "one job of the key runs");
    let waiting = ids.iter().find(|id| **id != held.jobs[0].id).unwrap();
    let show = server.rota(&["jobs", "show", waiting]);
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        text.contains("waiting:   key customer:42 at its limit 1/1"),
        "{text}"
    );
    let queue = server.rota(&["queues", "show", "keyed"]);
    let text = String::from_utf8_lossy(&queue.stdout);
    assert!(text.contains("key customer:42 at its limit 1/1"), "{text}");
    assert!(
        text.contains("2 (1 key at its key_concurrency 1)"),
        "{text}"
    );
    let doctor = server.rota(&["doctor"]);
    let text = String::from_utf8_lossy(&doctor.stdout);
    assert!(
        text.contains("queue `keyed`: 2 ready jobs wait (1 key at its key_concurrency 1)"),
        "{text}"
    );
    let metrics = server.metrics().await;
    assert!(
        metrics.contains("rota_queue_keys_at_limit{queue=\"keyed\"} 1"),
        "{metrics}"
    );
    assert!(
        metrics.contains("rota_queue_waiting_on_limits{queue=\"keyed\"} 2"),
        "{metrics}"
    );
}
