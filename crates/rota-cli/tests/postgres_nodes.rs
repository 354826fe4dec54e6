//! Several `rota serve` nodes on one PostgreSQL database: real processes, real `kill -9`.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rota::api::{CompleteRequest, CompletionRequest, EnqueueManyRequest, FetchRequest};
use rota_testkit::TempPostgresDb;
use support::{eventually, job, Server};

const JOBS: usize = 20_000;

fn node(db: &TempPostgresDb, config: &str) -> Server {
    Server::start_with_args(config, &["--database", &db.url])
}

/// Completed jobs, as the store counts them.
async fn completed(server: &Server) -> u64 {
    let queues = server.client().queues().await.unwrap();
    queues
        .queues
        .iter()
        .map(|q| q.counts.get("completed").copied().unwrap_or(0))
        .sum()
}

/// A worker loop on one node: fetch a batch, complete it, count each accepted completion by
/// job id. Stops when `stop` is set; a node that stops answering ends it (its leases are
/// then left to expire).
async fn work(
    server_url: String,
    name: String,
    accepted: Arc<Mutex<HashMap<String, u32>>>,
    done: Arc<AtomicUsize>,
    stop: Arc<AtomicBool>,
) {
    let client = rota::Client::new(&server_url).unwrap();
    while !stop.load(Ordering::Relaxed) {
        let Ok(fetched) = client
            .fetch(&FetchRequest {
                worker: name.clone(),
                queues: vec!["default".into()],
                max: Some(50),
                wait: Some("1s".into()),
                ..Default::default()
            })
            .await
        else {
            return;
        };
        if fetched.jobs.is_empty() {
            continue;
        }
        let Ok(outcomes) = support::complete_all(&client, &fetched.jobs).await else {
            return;
        };
        let mut accepted = accepted.lock().unwrap();
        for outcome in outcomes.results {
            if outcome.error.is_none() {
                *accepted.entry(outcome.job).or_default() += 1;
                done.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// Three nodes, 20,000 jobs enqueued round-robin through all of them, workers on all of
/// them; the leader is killed with SIGKILL halfway, with jobs leased through it that nobody
/// will complete. Every job completes, none twice; the abandoned ones are rescued by the
/// new leader on a surviving node.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_complete_every_job_once_through_a_leader_kill() {
    let db = TempPostgresDb::new();
    let config = "lease = \"2s\"\n";
    let mut nodes = [node(&db, config), node(&db, config), node(&db, config)];

    for batch in 0..JOBS / 500 {
        let jobs = (0..500)
            .map(|i| job("noop", serde_json::json!({ "n": batch * 500 + i })))
            .collect();
        let ids = nodes[batch % 3]
            .client()
            .enqueue_many_ids(&EnqueueManyRequest { jobs })
            .await
            .unwrap();
        assert_eq!(ids.ids.len(), 500);
    }

    let accepted: Arc<Mutex<HashMap<String, u32>>> = Arc::default();
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut workers = Vec::new();
    for (i, n) in nodes.iter().enumerate() {
        for w in 0..2 {
            workers.push(tokio::spawn(work(
                n.url.clone(),
                format!("worker-{i}-{w}"),
                accepted.clone(),
                done.clone(),
                stop.clone(),
            )));
        }
    }

    eventually(Duration::from_secs(120), "half the jobs done", async || {
        (done.load(Ordering::Relaxed) >= JOBS / 2).then_some(())
    })
    .await;
    let leader = eventually(Duration::from_secs(30), "a leader", async || {
        nodes[0].leader_pid().await
    })
    .await;
    let victim = nodes
        .iter()
        .position(|n| n.pid() == Some(leader))
        .expect("the leader is one of the three nodes");
    // Jobs leased through the leader by a worker that will never report: only a rescue by
    // another node can finish them.
    let abandoned = nodes[victim]
        .client()
        .fetch(&FetchRequest {
            worker: "abandoned".into(),
            queues: vec!["default".into()],
            max: Some(20),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(abandoned.jobs.len(), 20);
    nodes[victim].kill9();
    let survivor = (victim + 1) % 3;

    eventually(
        Duration::from_secs(120),
        "every job completed",
        async || (completed(&nodes[survivor]).await == JOBS as u64).then_some(()),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    for w in workers {
        w.await.unwrap();
    }

    let accepted = std::mem::take(&mut *accepted.lock().unwrap());
    let twice: Vec<_> = accepted.iter().filter(|(_, n)| **n > 1).collect();
    assert!(twice.is_empty(), "jobs completed twice: {twice:?}");
    // A completion the killed node committed but never answered is completed, unheard.
    assert!(
        accepted.len() + 200 >= JOBS,
        "completions heard: {}",
        accepted.len()
    );
    for j in &abandoned.jobs {
        let job = nodes[survivor].client().job(&j.id).await.unwrap();
        assert_eq!(job.state, rota::api::JobState::Completed, "{}", j.id);
        assert_eq!(job.attempt, 2, "rescued once, then completed: {}", j.id);
    }
    let left = db
        .psql("SELECT count(*) FROM rota.job WHERE state <> 'completed'")
        .unwrap();
    assert_eq!(left, "0", "no job left running or waiting");
    let new_leader = eventually(Duration::from_secs(30), "a new leader", async || {
        nodes[survivor].leader_pid().await
    })
    .await;
    assert_ne!(
        new_leader, leader,
        "the leadership moved to a surviving node"
    );
    assert!(nodes.iter().any(|n| n.pid() == Some(new_leader)));
}

/// Ten nodes started at once with `--create-database` on a database that does not exist
/// yet: it is created (once), the migrations are applied once (by one node, under the
/// advisory lock), and all ten serve.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_nodes_starting_together_migrate_once_and_all_serve() {
    let url = TempPostgresDb::missing_url();
    let mut nodes: Vec<Server> = (0..10)
        .map(|_| Server::spawn_with_args("", &["--database", &url, "--create-database"]))
        .collect();
    for n in &mut nodes {
        n.wait_until_listening();
    }
    for n in &nodes {
        let id = n
            .client()
            .enqueue_request(&job("hello", serde_json::json!({})))
            .await
            .unwrap();
        assert!(!id.job.id.is_empty());
    }
    let migrated: Vec<usize> = nodes
        .iter()
        .enumerate()
        .filter(|(_, n)| n.logs().contains("applied database migrations from=0"))
        .map(|(i, _)| i)
        .collect();
    assert_eq!(migrated.len(), 1, "exactly one node migrated: {migrated:?}");
    assert_eq!(
        nodes_query(&url, "SELECT count(*) FROM rota.schema_version").await,
        rota_postgres::SCHEMA_VERSION
    );
    assert_eq!(
        nodes_query(&url, "SELECT count(*) FROM rota.job").await,
        10,
        "every node enqueued"
    );
}

/// One count from the database at `url`.
async fn nodes_query(url: &str, sql: &str) -> i64 {
    let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client.query_one(sql, &[]).await.unwrap().get(0)
}

/// A missing database is named in one line with the fix, and `--create-database` creates it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_database_is_named_and_created_on_request() {
    let url = TempPostgresDb::missing_url();
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(support::ROTA)
        .args(["serve", "--bind", "127.0.0.1:0", "--database", &url])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("does not exist on 127.0.0.1:")
            && err.contains("create it, or start with --create-database"),
        "{err}"
    );
    assert_eq!(err.trim().lines().count(), 1, "one line: {err}");
    let server = Server::start_with_args("", &["--database", &url, "--create-database"]);
    let enqueued = server
        .client()
        .enqueue_request(&job("hello", serde_json::json!({})))
        .await
        .unwrap();
    assert!(!enqueued.job.id.is_empty());
    drop(server);
    // The test cluster is thrown away with the process; the database need not be dropped.
}

/// A fetch long-polling on one node returns within milliseconds when another node enqueues,
/// and a `?wait` on one node returns when the job completes through another: LISTEN/NOTIFY
/// carries the wake-up (the safety poll alone would take seconds).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn waits_on_one_node_wake_for_changes_made_on_another() {
    let db = TempPostgresDb::new();
    let a = node(&db, "");
    let b = node(&db, "");
    let fetch = {
        let client = b.client();
        tokio::spawn(async move {
            let fetched = client
                .fetch(&FetchRequest {
                    worker: "w".into(),
                    queues: vec!["default".into()],
                    wait: Some("20s".into()),
                    ..Default::default()
                })
                .await
                .unwrap();
            (fetched, std::time::Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    let enqueued = a
        .client()
        .enqueue_request(&job("hello", serde_json::json!({})))
        .await
        .unwrap();
    let enqueued_at = std::time::Instant::now();
    let (fetched, returned_at) = fetch.await.unwrap();
    assert_eq!(fetched.jobs.len(), 1);
    assert_eq!(fetched.jobs[0].id, enqueued.job.id);
    let took = returned_at.saturating_duration_since(enqueued_at);
    assert!(
        took < Duration::from_secs(1),
        "the fetch on b took {took:?}"
    );

    let wait = {
        let client = b.client();
        let id = enqueued.job.id.clone();
        tokio::spawn(async move {
            let job = client.job_wait(&id, "20s").await.unwrap();
            (job, std::time::Instant::now())
        })
    };
    tokio::time::sleep(Duration::from_millis(300)).await;
    a.client()
        .complete(&CompleteRequest {
            completions: vec![CompletionRequest {
                job: fetched.jobs[0].id.parse().unwrap(),
                token: fetched.jobs[0].lease_token,
                result: Some(serde_json::json!({"ok": true})),
            }],
        })
        .await
        .unwrap();
    let completed_at = std::time::Instant::now();
    let (job, returned_at) = wait.await.unwrap();
    assert_eq!(job.state, rota::api::JobState::Completed);
    let took = returned_at.saturating_duration_since(completed_at);
    assert!(took < Duration::from_secs(1), "the wait on b took {took:?}");
}

/// PostgreSQL stopped and started again under two nodes with a producer and workers:
/// `/readyz` goes 503 and back, the producer gets 503 problems (never a 500, never a hang)
/// while the database is down, no acknowledged enqueue is lost, and no job is left running.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_database_outage_is_503_and_the_nodes_recover_by_themselves() {
    let cluster = rota_testkit::PostgresCluster::start();
    cluster.create_database("rota");
    let url = cluster.url("rota");
    let config = "lease = \"2s\"\n";
    let nodes = [
        Server::start_with_args(config, &["--database", &url]),
        Server::start_with_args(config, &["--database", &url]),
    ];
    let urls: Vec<String> = nodes.iter().map(|n| n.url.clone()).collect();

    let stop = Arc::new(AtomicBool::new(false));
    let acknowledged: Arc<Mutex<Vec<String>>> = Arc::default();
    let refusals: Arc<Mutex<Vec<u16>>> = Arc::default();
    let producer = {
        let (urls, stop, acknowledged, refusals) = (
            urls.clone(),
            stop.clone(),
            acknowledged.clone(),
            refusals.clone(),
        );
        tokio::spawn(async move {
            let clients: Vec<_> = urls.iter().map(|u| rota::Client::new(u).unwrap()).collect();
            let mut n = 0usize;
            while !stop.load(Ordering::Relaxed) {
                n += 1;
                let started = std::time::Instant::now();
                match clients[n % 2]
                    .enqueue_request(&job("noop", serde_json::json!({ "n": n })))
                    .await
                {
                    Ok(e) => acknowledged.lock().unwrap().push(e.job.id),
                    Err(rota::ClientError::Api(p)) => refusals.lock().unwrap().push(p.status),
                    Err(other) => panic!("not an HTTP problem: {other}"),
                }
                assert!(
                    started.elapsed() < Duration::from_secs(15),
                    "an enqueue hung for {:?}",
                    started.elapsed()
                );
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        })
    };
    let done = Arc::new(AtomicUsize::new(0));
    let mut workers = Vec::new();
    for (i, u) in urls.iter().enumerate() {
        let (u, done, stop) = (u.clone(), done.clone(), stop.clone());
        workers.push(tokio::spawn(async move {
            // A worker that outlives errors, as `rota worker` does.
            while !stop.load(Ordering::Relaxed) {
                work(
                    u.clone(),
                    format!("worker-{i}"),
                    Arc::default(),
                    done.clone(),
                    stop.clone(),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }));
    }

    tokio::time::sleep(Duration::from_secs(1)).await;
    cluster.stop();
    for n in &nodes {
        eventually(Duration::from_secs(20), "readyz 503", async || {
            match n.client().ready().await {
                Ok((false, _)) => Some(()),
                _ => None,
            }
        })
        .await;
    }
    eventually(Duration::from_secs(20), "a refused enqueue", async || {
        (!refusals.lock().unwrap().is_empty()).then_some(())
    })
    .await;
    cluster.restart();
    for n in &nodes {
        eventually(
            Duration::from_secs(30),
            "readyz 200 again",
            async || match n.client().ready().await {
                Ok((true, _)) => Some(()),
                _ => None,
            },
        )
        .await;
    }
    let before = acknowledged.lock().unwrap().len();
    eventually(
        Duration::from_secs(20),
        "enqueues accepted again",
        async || (acknowledged.lock().unwrap().len() > before + 20).then_some(()),
    )
    .await;
    stop.store(true, Ordering::Relaxed);
    producer.await.unwrap();
    for w in workers {
        w.await.unwrap();
    }

    let refusals = refusals.lock().unwrap().clone();
    assert!(
        refusals.iter().all(|s| *s == 503),
        "outage answers: {refusals:?}"
    );
    let acknowledged = acknowledged.lock().unwrap().clone();
    let stored: u64 = cluster
        .psql("rota", "SELECT count(*) FROM rota.job")
        .unwrap()
        .parse()
        .unwrap();
    // A commit cut by the outage may have landed unacknowledged; never the reverse.
    assert!(stored >= acknowledged.len() as u64, "{stored} stored");
    let listed = acknowledged.join("','");
    let found: u64 = cluster
        .psql(
            "rota",
            &format!("SELECT count(*) FROM rota.job WHERE id IN ('{listed}')"),
        )
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(found, acknowledged.len() as u64);
    // Leases cut by the outage expire and are rescued; nothing stays running.
    let c = nodes[0].client();
    for id in acknowledged.iter().rev().take(5) {
        c.job(id).await.unwrap();
    }
    eventually(Duration::from_secs(60), "no job running", async || {
        let running = cluster
            .psql(
                "rota",
                "SELECT count(*) FROM rota.job WHERE state = 'running'",
            )
            .ok()?;
        (running == "0").then_some(())
    })
    .await;
}

/// Slots of schedule `tick` with how many jobs each has, oldest first.
fn slots(db: &TempPostgresDb) -> Vec<(i64, u32)> {
    db.psql(
        "SELECT slot, count(*) FROM rota.job WHERE schedule = 'tick' GROUP BY slot ORDER BY slot",
    )
    .unwrap()
    .lines()
    .filter_map(|l| {
        let (slot, n) = l.split_once('|')?;
        Some((slot.parse().ok()?, n.parse().ok()?))
    })
    .collect()
}

/// A schedule firing every second on three nodes while the leader is killed with SIGKILL
/// twice (and restarted): with `misfire = "all"` every slot from the first to the last fires,
/// and none twice, although a worker completes the jobs (so a slot's unique key is free
/// again and only the schedule's own bookkeeping keeps it from firing twice).
async fn cron_survives_leader_kills(slot_target: usize) {
    let db = TempPostgresDb::new();
    let config = r#"
lease = "2s"

[[schedule]]
name = "tick"
cron = "@every 1s"
queue = "default"
kind = "tick"
misfire = "all"
backfill = "10m"
"#;
    let mut nodes = [node(&db, config), node(&db, config), node(&db, config)];
    let stop = Arc::new(AtomicBool::new(false));
    let worker = {
        let (urls, stop) = (
            nodes.iter().map(|n| n.url.clone()).collect::<Vec<_>>(),
            stop.clone(),
        );
        tokio::spawn(async move {
            let done = Arc::new(AtomicUsize::new(0));
            let mut i = 0;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                work(
                    urls[i % 3].clone(),
                    "cron-worker".into(),
                    Arc::default(),
                    done.clone(),
                    stop.clone(),
                )
                .await;
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        })
    };
    let mut killed = Vec::new();
    for round in 1..=2 {
        eventually(
            Duration::from_secs(180),
            "slots before the kill",
            async || (slots(&db).len() >= slot_target * round / 3).then_some(()),
        )
        .await;
        let leader = eventually(Duration::from_secs(60), "a leader", async || {
            for n in &nodes {
                if let Some(pid) = n.leader_pid().await {
                    return Some(pid);
                }
            }
            None
        })
        .await;
        let victim = nodes
            .iter()
            .position(|n| n.pid() == Some(leader))
            .expect("the leader is a node");
        nodes[victim].kill9();
        killed.push(leader);
        nodes[victim].restart();
        let survivor = (victim + 1) % 3;
        eventually(Duration::from_secs(60), "a new leader", async || {
            nodes[survivor]
                .leader_pid()
                .await
                .filter(|pid| *pid != leader)
        })
        .await;
    }
    eventually(Duration::from_secs(180), "every slot", async || {
        (slots(&db).len() >= slot_target).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    worker.await.unwrap();

    let fired = slots(&db);
    let twice: Vec<_> = fired.iter().filter(|(_, n)| *n > 1).collect();
    assert!(twice.is_empty(), "slots fired twice: {twice:?}");
    let gaps: Vec<_> = fired
        .windows(2)
        .filter(|w| w[1].0 - w[0].0 != 1_000_000)
        .map(|w| (w[0].0, w[1].0))
        .collect();
    assert!(gaps.is_empty(), "slots missed between: {gaps:?}");
    assert_eq!(killed.len(), 2);
}

/// The CI-sized run: 45 slots, two leader kills.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_schedule_fires_every_slot_once_through_two_leader_kills() {
    cron_survives_leader_kills(45).await;
}

/// The long run the issue asks for: 300 slots, two leader kills (about six minutes):
/// `cargo test -p rota-cli --test postgres_nodes -- --ignored`.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
#[ignore = "six minutes; run with --ignored"]
async fn a_schedule_fires_300_slots_once_through_two_leader_kills() {
    cron_survives_leader_kills(300).await;
}

/// A node started while PostgreSQL is down (restarting as the node is deployed) waits for it,
/// saying so in the log, and serves once it is back, instead of exiting (found by the
/// battery's R3: a node restarted during a database restart stayed down).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_started_while_postgres_is_down_waits_for_it() {
    let cluster = rota_testkit::PostgresCluster::start();
    cluster.create_database("rota");
    cluster.stop();
    let mut server = Server::spawn_with_args("", &["--database", &cluster.url("rota")]);
    server.wait_until_listening();
    eventually(
        Duration::from_secs(20),
        "the node to say it waits",
        async || {
            server
                .logs()
                .contains("waiting up to 30s for it")
                .then_some(())
        },
    )
    .await;
    cluster.restart();
    let enqueued = eventually(Duration::from_secs(30), "the node to serve", async || {
        server
            .client()
            .enqueue_request(&job("hello", serde_json::json!({})))
            .await
            .ok()
    })
    .await;
    assert!(!enqueued.job.id.is_empty());
    assert!(server.pid().is_some());
}
