//! `rota bench --only d1`: the dashboard at scale (issue 13).
//!
//! Seeds `--jobs` jobs over five queues, twenty kinds and fifty tags (60 % completed, 2 %
//! dead in eight error groups, the rest waiting), then times every page (30 requests each,
//! after 3 to warm up, one at a time), then measures what open pages cost: with 1 and then
//! 10 live streams open while jobs keep changing, the dashboard's reads of the database
//! and rendered frames per second, from the server's own metrics.

use std::time::{Duration, Instant};

use anyhow::Context;
use rota::api::*;
use rota::Client;
use serde::Serialize;
use serde_json::json;

const QUEUES: usize = 5;
const KINDS: usize = 20;
const TAGS: usize = 50;
const TIMED: usize = 30;
const WARMUP: usize = 3;
/// The eight error groups of the dead jobs.
const CAUSES: [&str; 8] = [
    "timeout",
    "connection refused",
    "bad gateway",
    "TLS handshake failed",
    "rate limited by upstream",
    "invalid payload",
    "permission denied",
    "disk quota exceeded",
];

/// One page's timings.
#[derive(Debug, Serialize)]
pub struct PageTiming {
    path: String,
    median_ms: f64,
    p95_ms: f64,
    max_ms: f64,
    bytes: usize,
}

/// What open pages cost.
#[derive(Debug, Serialize)]
pub struct LiveCost {
    tabs: usize,
    error_group_reads_per_s: f64,
    frames_per_s: f64,
    frames_received: usize,
}

/// The benchmark's figures.
#[derive(Debug, Serialize)]
pub struct DashboardReport {
    jobs: usize,
    seed_seconds: f64,
    pages: Vec<PageTiming>,
    live: Vec<LiveCost>,
}

fn queue(i: usize) -> String {
    format!("dash-{}", i % QUEUES)
}

/// Enqueues `n` jobs (`max_attempts` 1 when `doomed`), a thousand per call.
async fn seed_jobs(client: &Client, n: usize, offset: usize, doomed: bool) -> anyhow::Result<()> {
    let mut i = 0;
    while i < n {
        let size = (n - i).min(1000);
        let jobs = (offset + i..offset + i + size)
            .map(|j| NewJobRequest {
                queue: if doomed {
                    "dash-doomed".into()
                } else {
                    queue(j)
                },
                kind: format!("kind{}", j % KINDS),
                args: json!({"i": j, "to": format!("user{j}@example.com"), "body": "x".repeat(64)}),
                tags: vec![format!("t{}", j % TAGS)],
                max_attempts: doomed.then_some(1),
                ..NewJobRequest::default()
            })
            .collect();
        client
            .enqueue_many_ids(&EnqueueManyRequest { jobs })
            .await?;
        i += size;
    }
    Ok(())
}

/// Fetches from `queues` and completes (or, with `fail`, fails with one of eight causes)
/// until `n` are done.
async fn finish(client: &Client, queues: Vec<String>, n: usize, fail: bool) -> anyhow::Result<()> {
    let fetch = FetchRequest {
        worker: "bench-dashboard".into(),
        queues,
        max: Some(1000),
        ..FetchRequest::default()
    };
    let mut done = 0;
    while done < n {
        let jobs = client.fetch(&fetch).await?.jobs;
        anyhow::ensure!(!jobs.is_empty(), "ran out of jobs after {done}");
        done += jobs.len();
        if fail {
            let failures = jobs
                .iter()
                .enumerate()
                .map(|(k, j)| FailureRequest {
                    job: j.id.parse().expect("a job id"),
                    token: j.lease_token,
                    message: format!(
                        "{} after {} ms talking to host-{k}",
                        CAUSES[k % CAUSES.len()],
                        100 + k
                    ),
                    backtrace: Some("Traceback:\n  at handler (app.py:10)".into()),
                    discard: false,
                    snooze: None,
                })
                .collect();
            client.fail(&FailRequest { failures }).await?;
        } else {
            let completions = jobs
                .iter()
                .map(|j| CompletionRequest {
                    job: j.id.parse().expect("a job id"),
                    token: j.lease_token,
                    result: None,
                })
                .collect();
            client.complete(&CompleteRequest { completions }).await?;
        }
    }
    Ok(())
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i]
}

async fn time_page(
    http: &reqwest::Client,
    url: &str,
    path: &str,
    token: Option<&str>,
) -> anyhow::Result<PageTiming> {
    let mut samples = Vec::with_capacity(TIMED);
    let mut bytes = 0;
    for round in 0..WARMUP + TIMED {
        let mut request = http.get(format!("{url}{path}"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let started = Instant::now();
        let response = request.send().await?;
        let status = response.status();
        let body = response.bytes().await?;
        let took = started.elapsed().as_secs_f64() * 1000.0;
        anyhow::ensure!(status.is_success(), "{path}: {status}");
        if round >= WARMUP {
            samples.push(took);
            bytes = body.len();
        }
    }
    samples.sort_by(f64::total_cmp);
    Ok(PageTiming {
        path: path.to_owned(),
        median_ms: percentile(&samples, 0.5),
        p95_ms: percentile(&samples, 0.95),
        max_ms: *samples.last().unwrap_or(&0.0),
        bytes,
    })
}

async fn dashboard_reads(http: &reqwest::Client, url: &str) -> anyhow::Result<(f64, f64)> {
    let text = http
        .get(format!("{url}/metrics"))
        .send()
        .await?
        .text()
        .await?;
    let value = |read: &str| {
        text.lines()
            .find(|l| l.starts_with(&format!("rota_dashboard_reads_total{{read=\"{read}\"}}")))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse::<f64>().ok())
            .unwrap_or(0.0)
    };
    Ok((value("error_groups"), value("frames")))
}

/// With `tabs` live streams open for `window`, while a job is enqueued and completed
/// every 100 ms: the dashboard's reads and frames per second.
async fn live_cost(
    client: &Client,
    http: &reqwest::Client,
    url: &str,
    token: Option<&str>,
    tabs: usize,
    window: Duration,
) -> anyhow::Result<LiveCost> {
    let received = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut streams = tokio::task::JoinSet::new();
    for _ in 0..tabs {
        let mut request = http.get(format!("{url}/events"));
        if let Some(token) = token {
            request = request.bearer_auth(token);
        }
        let mut response = request.send().await?;
        anyhow::ensure!(
            response.status().is_success(),
            "/events: {}",
            response.status()
        );
        let received = received.clone();
        streams.spawn(async move {
            while let Ok(Some(chunk)) = response.chunk().await {
                let frames = String::from_utf8_lossy(&chunk)
                    .matches("event: frame")
                    .count();
                received.fetch_add(frames, std::sync::atomic::Ordering::Relaxed);
            }
        });
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = dashboard_reads(http, url).await?;
    let started = Instant::now();
    let mut i = 0;
    while started.elapsed() < window {
        seed_jobs(client, 1, 10_000_000 + i, false).await?;
        finish(client, vec![queue(10_000_000 + i)], 1, false)
            .await
            .ok();
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let after = dashboard_reads(http, url).await?;
    let seconds = started.elapsed().as_secs_f64();
    streams.abort_all();
    Ok(LiveCost {
        tabs,
        error_group_reads_per_s: (after.0 - before.0) / seconds,
        frames_per_s: (after.1 - before.1) / seconds,
        frames_received: received.load(std::sync::atomic::Ordering::Relaxed),
    })
}

/// Seeds, times the pages, measures the live cost; prints the figures.
pub async fn run(
    client: &Client,
    url: &str,
    token: Option<&str>,
    n: usize,
    json_out: bool,
) -> anyhow::Result<()> {
    for q in 0..QUEUES {
        client
            .declare_queue(&queue(q), &QueueDeclareRequest::default())
            .await?;
    }
    client
        .declare_queue("dash-doomed", &QueueDeclareRequest::default())
        .await?;
    let started = Instant::now();
    let dead = (n / 50).max(8);
    let completed = n * 3 / 5;
    eprintln!("seeding {n} jobs ({completed} completed, {dead} dead)…");
    seed_jobs(client, n - dead, 0, false)
        .await
        .context("enqueueing")?;
    seed_jobs(client, dead, n, true)
        .await
        .context("enqueueing the doomed")?;
    let all: Vec<String> = (0..QUEUES).map(queue).collect();
    finish(client, all, completed, false)
        .await
        .context("completing")?;
    finish(client, vec!["dash-doomed".into()], dead, true)
        .await
        .context("failing")?;
    let seed_seconds = started.elapsed().as_secs_f64();
    eprintln!("seeded in {seed_seconds:.0} s; timing pages…");
    // Let the snapshot see everything.
    tokio::time::sleep(Duration::from_secs(2)).await;

    let http = reqwest::Client::new();
    let page = client
        .jobs(&[("state", "completed".into()), ("limit", "1".into())])
        .await?;
    let some_job = page
        .jobs
        .first()
        .map(|j| j.id.clone())
        .context("a completed job")?;
    let middle = client
        .jobs(&[("state", "available".into()), ("limit", "1000".into())])
        .await?
        .next
        .unwrap_or_default();
    let group = client
        .dead_groups()
        .await?
        .groups
        .first()
        .map(|g| g.group.clone())
        .unwrap_or_default();
    let paths = [
        "/".to_owned(),
        "/?window=7d".into(),
        "/jobs".into(),
        "/jobs?state=available".into(),
        format!("/jobs?state=available&after={middle}"),
        "/jobs?state=dead".into(),
        "/jobs?queue=dash-3&kind=kind8".into(),
        "/jobs?queue=dash-3&state=completed".into(),
        "/jobs?tag=t13".into(),
        // Filters that match nothing: the listing looks through every job (the worst case).
        "/jobs?tag=none-such".into(),
        "/jobs?state=cancelled".into(),
        "/jobs?queue=dash-3&kind=kind8&state=dead".into(),
        format!("/jobs?state=dead&group={group}"),
        format!("/jobs/{some_job}"),
        "/errors".into(),
        format!("/errors?group={group}"),
        "/queues".into(),
        "/schedules".into(),
        "/workers".into(),
    ];
    let mut pages = Vec::new();
    for path in &paths {
        pages.push(time_page(&http, url, path, token).await?);
    }
    eprintln!("measuring open pages…");
    let window = Duration::from_secs(10);
    let live = vec![
        live_cost(client, &http, url, token, 1, window).await?,
        live_cost(client, &http, url, token, 10, window).await?,
    ];
    let report = DashboardReport {
        jobs: n,
        seed_seconds,
        pages,
        live,
    };
    if json_out {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("D1 dashboard at {n} jobs (seeded in {seed_seconds:.0} s), server {url}");
        println!(
            "{:<48} {:>9} {:>9} {:>9} {:>9}",
            "page", "median ms", "p95 ms", "max ms", "bytes"
        );
        for p in &report.pages {
            println!(
                "{:<48} {:>9.1} {:>9.1} {:>9.1} {:>9}",
                p.path, p.median_ms, p.p95_ms, p.max_ms, p.bytes
            );
        }
        for l in &report.live {
            println!(
                "{:>2} open page(s): {:.2} error-group reads/s, {:.2} frames rendered/s, {} frames received",
                l.tabs, l.error_group_reads_per_s, l.frames_per_s, l.frames_received
            );
        }
    }
    Ok(())
}
