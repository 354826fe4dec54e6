//! `rota bench`: the four workloads of docs/PERFORMANCE.md, through the SDK's HTTP client.
//!
//! - W1: enqueue one job per call, one client, each call awaited before the next.
//! - W1b: enqueue in batches of 1,000 per call.
//! - W2: drain: all jobs queued first, then workers fetch and complete in batches; from the
//!   first job start to the last completion.
//! - W3: latency: a worker waiting; a producer enqueues at a fixed rate; enqueue-call start
//!   to handler start, p50/p95/p99.
//!
//! - D1 (`--only d1`, never by default): the dashboard at scale; see [`crate::bench_dashboard`].
//!
//! Without `--url` it starts `rota serve` (this binary) on a free loopback port in a temporary
//! directory, so the figures are those of the real server process.

use std::collections::HashMap;
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use indicatif::{ProgressBar, ProgressStyle};
use rota::api::*;
use rota::Client;
use serde::Serialize;
use serde_json::json;

use crate::cli::{BenchArgs, ClientArgs};

const QUEUE: &str = "bench";

#[derive(Debug, Default, Serialize)]
struct Report {
    jobs: usize,
    durability: Option<String>,
    /// Concurrency keys the jobs were spread over (0: none).
    keys: usize,
    /// The bench queue's key_concurrency.
    #[serde(skip_serializing_if = "Option::is_none")]
    key_concurrency: Option<u32>,
    /// The physical bounds measured in the same run.
    bounds: Bounds,
    /// Each workload as a share of its bound (1.0 = at the bound).
    shares: Shares,
    #[serde(skip_serializing_if = "Option::is_none")]
    w1_jobs_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    w1b_jobs_per_s: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    w2_jobs_per_s: Option<f64>,
    /// W2 through the Rust SDK's `Worker` (typed no-op handler).
    #[serde(skip_serializing_if = "Option::is_none")]
    w2w_jobs_per_s: Option<f64>,
    /// Worker requests (fetch, heartbeat, complete, complete-and-fetch, fail, hand-back) per
    /// job in W2w.
    #[serde(skip_serializing_if = "Option::is_none")]
    w2w_requests_per_job: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    w3_latency_ms: Option<Latency>,
}

/// What the machine allows, measured beside the workloads so the figures hold on a noisy
/// disk.
#[derive(Debug, Default, Serialize)]
struct Bounds {
    /// Median of a 4 KiB append plus `fdatasync` on the database's filesystem, ms.
    fsync_ms: f64,
    /// Median loopback HTTP round trip to the server (`GET /healthz`), ms.
    round_trip_ms: f64,
    /// The job lifecycle in raw SQL on the same schema and durability, batch 100, jobs/s
    /// (SQLite only).
    #[serde(skip_serializing_if = "Option::is_none")]
    raw_lifecycle_jobs_per_s: Option<f64>,
    /// The same fsync at W3's pace (one per interval, the machine idle between), ms: what
    /// each of W3's commits meets.
    #[serde(skip_serializing_if = "Option::is_none")]
    fsync_paced_ms: Option<f64>,
    /// The same round trip at W3's pace, ms.
    #[serde(skip_serializing_if = "Option::is_none")]
    round_trip_paced_ms: Option<f64>,
}

#[derive(Debug, Default, Serialize)]
struct Shares {
    /// W1 against 1 / (fsync + round trip).
    #[serde(skip_serializing_if = "Option::is_none")]
    w1: Option<f64>,
    /// W2 against the raw lifecycle.
    #[serde(skip_serializing_if = "Option::is_none")]
    w2: Option<f64>,
    /// The bound of W3's p50 (fsync + two round trips, back to back) over the p50 measured.
    #[serde(skip_serializing_if = "Option::is_none")]
    w3_p50: Option<f64>,
    /// The same with the fsync and round trip measured at W3's pace: what a lone request
    /// meets on a machine idle between requests (a halted CPU to wake on each side).
    #[serde(skip_serializing_if = "Option::is_none")]
    w3_p50_paced: Option<f64>,
}

/// Median of `rounds` 4 KiB appends each followed by `fdatasync`, in `dir`, one every `pace`
/// (back to back when zero).
fn fsync_ms(dir: &std::path::Path, rounds: usize, pace: Duration) -> anyhow::Result<f64> {
    use std::io::Write;
    let path = dir.join(".rota-bench-fsync");
    let mut file = std::fs::File::create(&path).context("measuring fsync")?;
    let block = [0u8; 4096];
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        std::thread::sleep(pace);
        let t = Instant::now();
        file.write_all(&block)?;
        file.sync_data()?;
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    drop(file);
    let _ = std::fs::remove_file(&path);
    Ok(median(&mut samples))
}

/// Median HTTP round trip of an empty request to the server, one every `pace` (back to back
/// when zero).
async fn round_trip_ms(url: &str, rounds: usize, pace: Duration) -> anyhow::Result<f64> {
    let client = Client::new(url)?;
    let mut samples = Vec::with_capacity(rounds);
    for _ in 0..rounds {
        if !pace.is_zero() {
            tokio::time::sleep(pace).await;
        }
        let t = Instant::now();
        client.healthz().await?;
        samples.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    Ok(median(&mut samples))
}

fn median(samples: &mut [f64]) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples.get(samples.len() / 2).copied().unwrap_or_default()
}

#[derive(Debug, Serialize)]
struct Latency {
    p50: f64,
    p95: f64,
    p99: f64,
    max: f64,
    samples: usize,
}

/// A server started for the benchmark; killed on drop.
struct Spawned {
    child: std::process::Child,
    dir: tempfile::TempDir,
}

impl Drop for Spawned {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Whether something on `port` answers an HTTP request for /healthz.
fn answers_http(port: u16) -> bool {
    use std::io::{Read, Write};
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
    let asked =
        stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n");
    let mut head = [0u8; 9];
    asked.is_ok() && stream.read_exact(&mut head).is_ok() && &head == b"HTTP/1.1 "
}

fn spawn_server(durability: &str, database: Option<&str>) -> anyhow::Result<(Spawned, String)> {
    let dir = tempfile::tempdir().context("creating a temporary directory")?;
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = std::process::Command::new(std::env::current_exe()?)
        .args([
            "serve",
            "--bind",
            &format!("127.0.0.1:{port}"),
            "--durability",
            durability,
        ])
        .args(
            database
                // A benchmark reports a database it cannot reach at once, not after the
                // wait a server restarted beside its database deserves.
                .map(|d| {
                    [
                        "--database",
                        d,
                        "--create-database",
                        "--database-wait",
                        "0s",
                    ]
                })
                .iter()
                .flatten(),
        )
        .current_dir(dir.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(Stdio::inherit())
        .spawn()
        .context("starting rota serve")?;
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut spawned = Spawned { child, dir };
    // `rota serve` binds before it opens the database, so a connection alone is not an
    // answer: it is asked for /healthz until it gives one.
    while !answers_http(port) {
        if let Some(status) = spawned.child.try_wait()? {
            bail!("the benchmark server exited ({status}) before it listened; its error is above");
        }
        if Instant::now() > deadline {
            bail!("the benchmark server did not start within 30 s");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((spawned, format!("http://127.0.0.1:{port}")))
}

fn bar(len: usize, label: &str, json: bool) -> ProgressBar {
    if json {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>4} {bar:40} {pos}/{len} {per_sec}")
            .expect("valid template"),
    );
    bar.set_prefix(label.to_owned());
    bar
}

/// Job `i`; with `keys`, its concurrency key is one of that many.
fn job(i: usize, keys: usize) -> NewJobRequest {
    NewJobRequest {
        queue: QUEUE.into(),
        kind: "bench.noop".into(),
        args: json!({ "i": i }),
        concurrency_key: (keys > 0).then(|| format!("k{}", i % keys)),
        ..Default::default()
    }
}

/// Runs the benchmark.
pub async fn run(args: BenchArgs, client_args: &ClientArgs) -> anyhow::Result<ExitCode> {
    let wanted =
        |w: &str| args.only.is_empty() || args.only.iter().any(|o| o.eq_ignore_ascii_case(w));
    // A bad database URL is refused here, before any server is started for it.
    let on_sqlite = match &args.database {
        Some(raw) => matches!(
            crate::store::DatabaseUrl::parse(raw)?,
            crate::store::DatabaseUrl::Sqlite(_)
        ),
        None => true,
    };
    let mut servers = Vec::new();
    let mut urls = Vec::new();
    match &client_args.url {
        Some(url) => urls.push(url.clone()),
        None => {
            for _ in 0..args.nodes.max(1) {
                let (server, url) = spawn_server(&args.durability, args.database.as_deref())?;
                servers.push(server);
                urls.push(url);
            }
        }
    }
    let url = urls[0].clone();
    let clients = urls
        .iter()
        .map(|u| Ok(Client::new(u)?.with_token(client_args.token.clone())))
        .collect::<anyhow::Result<Vec<_>>>()?;
    let client = clients[0].clone();
    client
        .declare_queue(
            QUEUE,
            &QueueDeclareRequest {
                key_concurrency: args.key_concurrency,
                ..QueueDeclareRequest::default()
            },
        )
        .await
        .context("declaring the bench queue")?;
    let json_out = client_args.json;
    let n = args.jobs;
    if args.only.iter().any(|o| o.eq_ignore_ascii_case("d1")) {
        crate::bench_dashboard::run(&client, &url, client_args.token.as_deref(), n, json_out)
            .await?;
        return Ok(ExitCode::SUCCESS);
    }
    let mut report = Report {
        jobs: n,
        durability: client_args.url.is_none().then(|| args.durability.clone()),
        keys: args.keys,
        key_concurrency: args.key_concurrency,
        ..Report::default()
    };
    // The bounds, in the same run: the database's filesystem (the spawned server's
    // directory, or this one with --url), the loopback, the schema in raw SQL.
    let disk = match servers.first() {
        Some(server) => server.dir.path().to_path_buf(),
        None => std::env::current_dir()?,
    };
    report.bounds.fsync_ms = fsync_ms(&disk, 200, Duration::ZERO)?;
    report.bounds.round_trip_ms = round_trip_ms(&url, 500, Duration::ZERO).await?;
    if wanted("w3") {
        let pace = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
        let d = disk.clone();
        report.bounds.fsync_paced_ms =
            Some(tokio::task::spawn_blocking(move || fsync_ms(&d, 200, pace)).await??);
        report.bounds.round_trip_paced_ms = Some(round_trip_ms(&url, 200, pace).await?);
    }
    let durability = match args.durability.as_str() {
        "normal" => rota_sqlite::Durability::Normal,
        _ => rota_sqlite::Durability::Full,
    };
    if on_sqlite {
        let raw_dir = tempfile::tempdir_in(&disk).context("creating the raw-SQL database")?;
        let raw_path = raw_dir.path().join("bound.db");
        report.bounds.raw_lifecycle_jobs_per_s = Some(
            tokio::task::spawn_blocking(move || {
                rota_sqlite::bound::raw_lifecycle_rate(&raw_path, durability, 100, 100)
            })
            .await??,
        );
    }
    let b = &report.bounds;
    let (fsync, rtt) = (b.fsync_ms, b.round_trip_ms);

    if wanted("w1") {
        let bar = bar(n, "W1", json_out);
        let started = Instant::now();
        for i in 0..n {
            client.enqueue_request(&job(i, args.keys)).await?;
            bar.inc(1);
        }
        bar.finish_and_clear();
        report.w1_jobs_per_s = Some(n as f64 / started.elapsed().as_secs_f64());
        drain(&clients, &args, n, None).await?;
    }
    if wanted("w1b") {
        let bar = bar(n, "W1b", json_out);
        let started = Instant::now();
        enqueue_batches(&client, n, args.keys, &bar).await?;
        bar.finish_and_clear();
        report.w1b_jobs_per_s = Some(n as f64 / started.elapsed().as_secs_f64());
        drain(&clients, &args, n, None).await?;
    }
    if wanted("w2") {
        enqueue_batches(&client, n, args.keys, &ProgressBar::hidden()).await?;
        let bar = bar(n, "W2", json_out);
        let (first, last) = drain(&clients, &args, n, Some(&bar)).await?;
        bar.finish_and_clear();
        report.w2_jobs_per_s = Some(n as f64 / last.duration_since(first).as_secs_f64());
    }
    if wanted("w2w") {
        enqueue_batches(&client, n, args.keys, &ProgressBar::hidden()).await?;
        let before = worker_requests(&url).await?;
        report.w2w_jobs_per_s = Some(sdk_drain(&client, args.worker_concurrency, n).await?);
        let after = worker_requests(&url).await?;
        report.w2w_requests_per_job = Some((after - before) / n as f64);
    }
    if wanted("w3") {
        report.w3_latency_ms = Some(latency(&client, &args, json_out).await?);
    }
    report.shares = Shares {
        w1: report.w1_jobs_per_s.map(|v| v / (1000.0 / (fsync + rtt))),
        w2: report
            .w2_jobs_per_s
            .zip(report.bounds.raw_lifecycle_jobs_per_s)
            .map(|(v, bound)| v / bound),
        w3_p50: report
            .w3_latency_ms
            .as_ref()
            .map(|l| (fsync + 2.0 * rtt) / l.p50),
        w3_p50_paced: report
            .w3_latency_ms
            .as_ref()
            .zip(
                report
                    .bounds
                    .fsync_paced_ms
                    .zip(report.bounds.round_trip_paced_ms),
            )
            .map(|(l, (fsync, rtt))| (fsync + 2.0 * rtt) / l.p50),
    };
    if json_out {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("rota bench: {n} no-op jobs per workload, server {url}");
        let b = &report.bounds;
        println!(
            "bounds: fdatasync {:.3} ms, loopback round trip {:.3} ms{}{}",
            b.fsync_ms,
            b.round_trip_ms,
            b.raw_lifecycle_jobs_per_s
                .map_or(String::new(), |r| format!(
                    ", raw-SQL lifecycle {r:.0} jobs/s"
                )),
            b.fsync_paced_ms
                .zip(b.round_trip_paced_ms)
                .map_or(String::new(), |(f, r)| format!(
                    "; at W3's pace: fdatasync {f:.3} ms, round trip {r:.3} ms"
                ))
        );
        let share = |s: Option<f64>| {
            s.map_or(String::new(), |s| {
                format!("  ({:.0} % of its bound)", s * 100.0)
            })
        };
        if let Some(v) = report.w1_jobs_per_s {
            println!(
                "W1  enqueue, one per call:     {v:>10.0} jobs/s{}",
                share(report.shares.w1)
            );
        }
        if let Some(v) = report.w1b_jobs_per_s {
            println!("W1b enqueue, 1,000 per call:   {v:>10.0} jobs/s");
        }
        if let Some(v) = report.w2_jobs_per_s {
            println!(
                "W2  drain ({} workers x {}, {} node{}): {v:>8.0} jobs/s{}",
                args.workers,
                args.batch,
                urls.len(),
                if urls.len() == 1 { "" } else { "s" },
                share(report.shares.w2)
            );
        }
        if let (Some(v), Some(rt)) = (report.w2w_jobs_per_s, report.w2w_requests_per_job) {
            let of_w2 = report.w2_jobs_per_s.map_or(String::new(), |w2| {
                format!("  ({:.0} % of W2)", v / w2 * 100.0)
            });
            println!(
                "W2w drain, Rust Worker x {}:  {v:>8.0} jobs/s{of_w2}, {rt:.3} requests per job",
                args.worker_concurrency
            );
        }
        if let Some(l) = &report.w3_latency_ms {
            println!(
                "W3  enqueue->start at {}/s:   p50 {:.1} ms  p95 {:.1} ms  p99 {:.1} ms  max {:.1} ms ({} jobs, {} idle workers){}",
                args.rate,
                l.p50,
                l.p95,
                l.p99,
                l.max,
                l.samples,
                args.idle_workers,
                match (report.shares.w3_p50, report.shares.w3_p50_paced) {
                    (Some(hot), Some(paced)) => format!(
                        "  ({:.0} % of its bound at its pace, {:.0} % back to back)",
                        paced * 100.0,
                        hot * 100.0
                    ),
                    (hot, _) => share(hot),
                }
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}

async fn enqueue_batches(
    client: &Client,
    n: usize,
    keys: usize,
    bar: &ProgressBar,
) -> anyhow::Result<()> {
    let mut i = 0;
    while i < n {
        let size = (n - i).min(1000);
        client
            .enqueue_many_requests(&EnqueueManyRequest {
                jobs: (i..i + size).map(|i| job(i, keys)).collect(),
            })
            .await?;
        i += size;
        bar.inc(size as u64);
    }
    Ok(())
}

/// Fetches and completes `n` jobs with `args.workers` concurrent workers; returns the
/// instants of the first fetch that returned jobs and of the last completion.
async fn drain(
    clients: &[Client],
    args: &BenchArgs,
    n: usize,
    bar: Option<&ProgressBar>,
) -> anyhow::Result<(Instant, Instant)> {
    let done = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let first: Arc<Mutex<Option<Instant>>> = Arc::default();
    let last: Arc<Mutex<Option<Instant>>> = Arc::default();
    let mut tasks = tokio::task::JoinSet::new();
    for w in 0..args.workers.max(1) {
        let (client, done, first, last) = (
            clients[w % clients.len()].clone(),
            done.clone(),
            first.clone(),
            last.clone(),
        );
        let bar = bar.cloned().unwrap_or_else(ProgressBar::hidden);
        let batch = args.batch;
        tasks.spawn(async move {
            let fetch = FetchRequest {
                worker: format!("bench-{w}"),
                queues: vec![QUEUE.into()],
                kinds: vec![],
                max: Some(batch),
                wait: Some("1s".into()),
                ..Default::default()
            };
            // The steady state is one request per batch: complete it and lease the next.
            let mut completions = Vec::new();
            while done.load(std::sync::atomic::Ordering::Relaxed) < n {
                let count = completions.len();
                let fetched = if completions.is_empty() {
                    client.fetch(&fetch).await?.jobs
                } else {
                    let answer = client
                        .complete_and_fetch(&CompleteAndFetchRequest {
                            completions: std::mem::take(&mut completions),
                            fetch: fetch.clone(),
                        })
                        .await?;
                    if let Some(problem) = answer.fetch_error {
                        anyhow::bail!("fetch failed: {}", problem.detail);
                    }
                    answer.jobs
                };
                if count > 0 {
                    *last.lock().expect("poisoned") = Some(Instant::now());
                    done.fetch_add(count, std::sync::atomic::Ordering::Relaxed);
                    bar.inc(count as u64);
                }
                if fetched.is_empty() {
                    continue;
                }
                first
                    .lock()
                    .expect("poisoned")
                    .get_or_insert_with(Instant::now);
                completions = fetched
                    .iter()
                    .map(|j| {
                        Ok(CompletionRequest {
                            job: j.id.parse().context("job id")?,
                            token: j.lease_token,
                            result: None,
                        })
                    })
                    .collect::<anyhow::Result<Vec<_>>>()?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(result) = tasks.join_next().await {
        result??;
    }
    let first = first
        .lock()
        .expect("poisoned")
        .context("no job was fetched")?;
    let last = last
        .lock()
        .expect("poisoned")
        .context("no job was completed")?;
    Ok((first, last))
}

/// The bench job as the SDK's typed workers see it.
#[derive(serde::Serialize, serde::Deserialize)]
struct Noop {
    i: usize,
}

impl rota::Job for Noop {
    const KIND: &'static str = "bench.noop";
    const QUEUE: &'static str = QUEUE;
    type Output = ();
}

/// Drains `n` queued jobs with one SDK `Worker` of `concurrency`; jobs/s from the first
/// handler run until the server shows none running.
async fn sdk_drain(client: &Client, concurrency: usize, n: usize) -> anyhow::Result<f64> {
    let ran = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let first: Arc<std::sync::OnceLock<Instant>> = Arc::default();
    let (counter, first_run) = (ran.clone(), first.clone());
    let worker = rota::Worker::builder(client.clone())
        .queue(QUEUE, concurrency.max(1))
        .register::<Noop, _>(move |_: Noop, _| {
            first_run.get_or_init(Instant::now);
            counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async { Ok(()) }
        })
        .build()?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let running = tokio::spawn(worker.run_until(shutdown.clone()));
    while ran.load(std::sync::atomic::Ordering::Relaxed) < n {
        anyhow::ensure!(!running.is_finished(), "the worker stopped early");
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
    // Every handler ran; done once the last reports landed.
    loop {
        let counts = client.queue(QUEUE).await?.counts;
        if counts.get("running").copied().unwrap_or(0) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(2)).await;
    }
    let took = first.get().context("no job ran")?.elapsed();
    shutdown.cancel();
    running.await??;
    Ok(n as f64 / took.as_secs_f64())
}

/// Worker-protocol requests the server has answered so far (from its `/metrics`).
async fn worker_requests(url: &str) -> anyhow::Result<f64> {
    let text = reqwest::get(format!("{url}/metrics")).await?.text().await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("rota_http_requests_total{"))
        .filter(|l| {
            [
                "/v1/fetch",
                "/v1/heartbeat",
                "/v1/complete",
                "/v1/complete-and-fetch",
                "/v1/fail",
                "/v1/hand-back",
            ]
            .iter()
            .any(|route| l.contains(&format!("route=\"{route}\"")))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

async fn latency(client: &Client, args: &BenchArgs, json_out: bool) -> anyhow::Result<Latency> {
    let duration = rota_core::parse_duration(&args.duration).context("--duration")?;
    let total = (args.rate as f64 * duration.as_secs_f64()) as usize;
    let starts: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let began: Arc<Mutex<HashMap<String, Instant>>> = Arc::default();
    let bar = bar(total, "W3", json_out);
    // One worker, or more long-polling the same queue (`--idle-workers`): with the wake-ups
    // counted, a ready job wakes one of them, not all.
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let done = tokio_util::sync::CancellationToken::new();
    let mut workers = tokio::task::JoinSet::new();
    for w in 0..=args.idle_workers {
        let (client, began, seen, done) =
            (client.clone(), began.clone(), seen.clone(), done.clone());
        workers.spawn(async move {
            use std::sync::atomic::Ordering;
            while seen.load(Ordering::Relaxed) < total {
                let request = FetchRequest {
                    worker: format!("bench-latency-{w}"),
                    queues: vec![QUEUE.into()],
                    kinds: vec![],
                    max: Some(100),
                    wait: Some("5s".into()),
                    ..Default::default()
                };
                let fetched = tokio::select! {
                    fetched = client.fetch(&request) => fetched?,
                    _ = done.cancelled() => break,
                };
                let now = Instant::now();
                let mut completions = Vec::new();
                for j in &fetched.jobs {
                    began.lock().expect("poisoned").insert(j.id.clone(), now);
                    completions.push(CompletionRequest {
                        job: j.id.parse().context("job id")?,
                        token: j.lease_token,
                        result: None,
                    });
                }
                if !completions.is_empty() {
                    let n = completions.len();
                    client.complete(&CompleteRequest { completions }).await?;
                    if seen.fetch_add(n, Ordering::Relaxed) + n >= total {
                        done.cancel();
                    }
                }
            }
            anyhow::Ok(())
        });
    }
    let interval = Duration::from_secs_f64(1.0 / args.rate.max(1) as f64);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let mut producers = tokio::task::JoinSet::new();
    for i in 0..total {
        ticker.tick().await;
        let (client, starts, bar) = (client.clone(), starts.clone(), bar.clone());
        let job = job(i, args.keys);
        producers.spawn(async move {
            let start = Instant::now();
            let enqueued = client.enqueue_request(&job).await?;
            starts
                .lock()
                .expect("poisoned")
                .insert(enqueued.job.id, start);
            bar.inc(1);
            anyhow::Ok(())
        });
    }
    while let Some(result) = producers.join_next().await {
        result??;
    }
    while let Some(result) = workers.join_next().await {
        result??;
    }
    bar.finish_and_clear();
    let starts = starts.lock().expect("poisoned");
    let began = began.lock().expect("poisoned");
    let mut samples: Vec<f64> = starts
        .iter()
        .filter_map(|(id, start)| {
            began
                .get(id)
                .map(|b| b.saturating_duration_since(*start).as_secs_f64() * 1000.0)
        })
        .collect();
    samples.sort_by(f64::total_cmp);
    if samples.is_empty() {
        bail!("no latency samples");
    }
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    Ok(Latency {
        p50: pct(0.50),
        p95: pct(0.95),
        p99: pct(0.99),
        max: samples[samples.len() - 1],
        samples: samples.len(),
    })
}
