//! `rota worker --exec CMD`: runs each job as a child process, for handlers in any language.
//!
//! Each job's args go to the child's stdin as JSON, with `ROTA_JOB_ID`, `ROTA_ATTEMPT` and
//! `ROTA_KIND` in its environment. Exit 0 completes the job (stdout, if it is JSON, is the
//! result); exit 75 (`EX_TEMPFAIL`) snoozes it (stdout may name the delay, such as `5m`;
//! 30 s otherwise); any other exit fails it with the tail of stderr. A stderr line
//! `rota:progress 40 copying` reports progress. Leases are heartbeated while children run; a
//! child is killed when its job times out, is cancelled, or its lease is lost. On SIGTERM or
//! SIGINT the worker stops fetching, lets running children finish for `--grace`, then kills
//! the rest and hands their leases back, so another worker takes them at once.

use std::collections::HashMap;
use std::process::{ExitCode, Stdio};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Context;
use rota::api::*;
use rota::Client;
use rota_core::{format_duration, parse_duration, JobId};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::cli::{ClientArgs, WorkerArgs};

/// Exit status that asks for a snooze (sysexits `EX_TEMPFAIL`).
const EXIT_SNOOZE: i32 = 75;
/// Snooze when the child names no delay.
const SNOOZE_DEFAULT: Duration = Duration::from_secs(30);
/// Bytes of stderr kept as the error message.
const STDERR_TAIL: usize = 4096;

/// Why a child was stopped before it finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Stop {
    Cancelled,
    LeaseLost,
    Shutdown,
}

struct Running {
    token: u64,
    stop: CancellationToken,
    reason: Arc<Mutex<Option<Stop>>>,
}

type Table = Arc<Mutex<HashMap<JobId, Running>>>;

fn stop(table: &Table, id: &JobId, reason: Stop) {
    if let Some(r) = table.lock().expect("job table poisoned").get(id) {
        r.reason
            .lock()
            .expect("reason poisoned")
            .get_or_insert(reason);
        r.stop.cancel();
    }
}

/// Runs the worker until a shutdown signal.
pub async fn run(args: WorkerArgs, client_args: &ClientArgs) -> anyhow::Result<ExitCode> {
    crate::serve::init_logging();
    let client = crate::client_commands::client(client_args)?;
    let grace = parse_duration(&args.grace).context("--grace")?;
    if args.concurrency == 0 {
        anyhow::bail!("--concurrency: must be at least 1");
    }
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| format!("{}:{}", hostname(), std::process::id()));
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
            shutdown.cancel();
        });
    }
    let table: Table = Arc::default();
    let slots = Arc::new(Semaphore::new(args.concurrency));
    let lease = Arc::new(Mutex::new(Duration::from_secs(30)));
    let beats = tokio::spawn(heartbeat_loop(
        client.clone(),
        id.clone(),
        table.clone(),
        lease.clone(),
        shutdown.clone(),
    ));
    info!(worker = %id, queues = ?args.queue, "worker started");
    let mut tasks = tokio::task::JoinSet::new();
    while !shutdown.is_cancelled() {
        let permit = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("semaphore open"),
            _ = shutdown.cancelled() => break,
        };
        // Not cancelled mid-request: a job leased by a fetch is always seen, so on shutdown
        // it can be handed back rather than left to expire.
        let fetched = client
            .fetch(&FetchRequest {
                worker: id.clone(),
                queues: args.queue.clone(),
                kinds: args.kind.clone(),
                max: Some(1),
                wait: Some("5s".into()),
                host: Some(hostname()),
                pid: Some(std::process::id()),
                concurrency: Some(args.concurrency as u32),
                version: Some(format!("rota-worker-exec {}", env!("CARGO_PKG_VERSION"))),
            })
            .await;
        let response = match fetched {
            Ok(response) => response,
            Err(err) if err.code().is_some() => return Err(err).context("fetching jobs"),
            Err(err) => {
                warn!(error = %err, "fetch failed; retrying in 1s");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        if let Ok(d) = parse_duration(&response.lease) {
            *lease.lock().expect("lease poisoned") = d;
        }
        let Some(job) = response.jobs.into_iter().next() else {
            continue;
        };
        let (job_id, token) = match (job.id.parse::<JobId>(), job.lease_token) {
            (Ok(job_id), Some(token)) => (job_id, token),
            _ => continue,
        };
        let stop_token = CancellationToken::new();
        let reason = Arc::new(Mutex::new(None));
        table.lock().expect("job table poisoned").insert(
            job_id,
            Running {
                token,
                stop: stop_token.clone(),
                reason: reason.clone(),
            },
        );
        let (client, table, exec) = (client.clone(), table.clone(), args.exec.clone());
        tasks.spawn(async move {
            let outcome = run_child(&exec, &job, &client, token, stop_token).await;
            let reason = *reason.lock().expect("reason poisoned");
            report(&client, job_id, token, outcome, reason).await;
            table.lock().expect("job table poisoned").remove(&job_id);
            drop(permit);
        });
    }
    info!(running = tasks.len(), grace = %format_duration(grace), "stopping: no more fetches");
    if tokio::time::timeout(grace, async { while tasks.join_next().await.is_some() {} })
        .await
        .is_err()
    {
        let ids: Vec<JobId> = table
            .lock()
            .expect("job table poisoned")
            .keys()
            .copied()
            .collect();
        info!(jobs = ids.len(), "grace period over: handing leases back");
        for id in &ids {
            stop(&table, id, Stop::Shutdown);
        }
        while tasks.join_next().await.is_some() {}
    }
    beats.abort();
    Ok(ExitCode::SUCCESS)
}

enum Outcome {
    Exited {
        code: Option<i32>,
        stdout: Vec<u8>,
        stderr_tail: String,
    },
    Stopped,
    TimedOut(Duration),
    SpawnFailed(String),
}

async fn run_child(
    exec: &str,
    job: &JobView,
    client: &Client,
    token: u64,
    stop: CancellationToken,
) -> Outcome {
    let mut child = match tokio::process::Command::new("sh")
        .arg("-c")
        .arg(exec)
        .env("ROTA_JOB_ID", &job.id)
        .env("ROTA_ATTEMPT", job.attempt.to_string())
        .env("ROTA_KIND", &job.kind)
        .env("ROTA_QUEUE", &job.queue)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(err) => return Outcome::SpawnFailed(format!("cannot run `{exec}`: {err}")),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let args = job.args.to_string();
        tokio::spawn(async move {
            let _ = stdin.write_all(args.as_bytes()).await;
        });
    }
    let mut stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let stdout_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf).await;
        buf
    });
    let (client, id) = (client.clone(), job.id.clone());
    let stderr_task = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut tail = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.strip_prefix("rota:progress ") {
                let (percent, message) = rest.split_once(' ').unwrap_or((rest, ""));
                if let Ok(percent) = percent.trim().parse::<u8>() {
                    let message = (!message.is_empty()).then(|| message.to_owned());
                    let _ = client
                        .progress(
                            &id,
                            &ProgressRequest {
                                token,
                                percent,
                                message,
                            },
                        )
                        .await;
                    continue;
                }
            }
            tail.push_str(&line);
            tail.push('\n');
            if tail.len() > STDERR_TAIL {
                let cut = tail.len() - STDERR_TAIL;
                let cut = (cut..tail.len())
                    .find(|i| tail.is_char_boundary(*i))
                    .unwrap_or(tail.len());
                tail.drain(..cut);
            }
        }
        tail
    });
    let timeout = job.timeout.as_deref().and_then(|t| parse_duration(t).ok());
    let limit = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        status = child.wait() => {
            let code = status.ok().and_then(|s| s.code());
            let stdout = stdout_task.await.unwrap_or_default();
            let stderr_tail = stderr_task.await.unwrap_or_default();
            Outcome::Exited { code, stdout, stderr_tail }
        }
        _ = stop.cancelled() => {
            let _ = child.kill().await;
            Outcome::Stopped
        }
        _ = limit => {
            let _ = child.kill().await;
            Outcome::TimedOut(timeout.unwrap_or_default())
        }
    }
}

async fn report(client: &Client, job: JobId, token: u64, outcome: Outcome, reason: Option<Stop>) {
    let failure = |message: String, snooze: Option<String>| FailRequest {
        failures: vec![FailureRequest {
            job,
            token,
            message,
            backtrace: None,
            discard: false,
            snooze,
        }],
    };
    let sent = match outcome {
        Outcome::Exited {
            code: Some(0),
            stdout,
            ..
        } => {
            let result = serde_json::from_slice(&stdout).ok();
            client
                .complete(&CompleteRequest {
                    completions: vec![CompletionRequest { job, token, result }],
                })
                .await
                .map(|_| ())
        }
        Outcome::Exited {
            code: Some(EXIT_SNOOZE),
            stdout,
            ..
        } => {
            let delay = std::str::from_utf8(&stdout)
                .ok()
                .and_then(|s| parse_duration(s.trim()).ok())
                .unwrap_or(SNOOZE_DEFAULT);
            client
                .fail(&failure("snoozed".into(), Some(format_duration(delay))))
                .await
                .map(|_| ())
        }
        Outcome::Exited {
            code, stderr_tail, ..
        } => {
            let status = code.map_or("was killed by a signal".to_owned(), |c| {
                format!("exited with status {c}")
            });
            let message = match stderr_tail.trim() {
                "" => format!("command {status}"),
                tail => format!("command {status}: {tail}"),
            };
            client.fail(&failure(message, None)).await.map(|_| ())
        }
        Outcome::TimedOut(after) => client
            .fail(&failure(
                format!("timed out after {}", format_duration(after)),
                None,
            ))
            .await
            .map(|_| ()),
        Outcome::SpawnFailed(message) => client.fail(&failure(message, None)).await.map(|_| ()),
        Outcome::Stopped => match reason {
            Some(Stop::Shutdown) => client
                .hand_back(&HandBackRequest {
                    leases: vec![LeaseToken { job, token }],
                })
                .await
                .map(|_| ()),
            Some(Stop::Cancelled) => client
                .fail(&failure("cancelled on request".into(), None))
                .await
                .map(|_| ()),
            Some(Stop::LeaseLost) | None => Ok(()),
        },
    };
    if let Err(err) = sent {
        warn!(job = %job, error = %err, "could not report the job's outcome; its lease will expire and it will be retried");
    }
}

async fn heartbeat_loop(
    client: Client,
    worker: String,
    table: Table,
    lease: Arc<Mutex<Duration>>,
    shutdown: CancellationToken,
) {
    // Ticks often and beats once a third of the lease has passed since the last beat, so a
    // shorter lease learnt from a later fetch takes effect at once.
    let tick = Duration::from_millis(100);
    let mut last_beat = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let every = (*lease.lock().expect("lease poisoned") / 3).max(tick);
        if last_beat.elapsed() < every {
            continue;
        }
        last_beat = tokio::time::Instant::now();
        let leases: Vec<LeaseToken> = table
            .lock()
            .expect("job table poisoned")
            .iter()
            .map(|(job, r)| LeaseToken {
                job: *job,
                token: r.token,
            })
            .collect();
        if leases.is_empty() {
            if shutdown.is_cancelled() && table.lock().expect("job table poisoned").is_empty() {
                return;
            }
            continue;
        }
        match client
            .heartbeat(&HeartbeatRequest {
                worker: worker.clone(),
                leases: leases.clone(),
            })
            .await
        {
            Ok(response) => {
                for (lease, outcome) in leases.iter().zip(response.results) {
                    if !outcome.held {
                        stop(&table, &lease.job, Stop::LeaseLost);
                    } else if outcome.cancel_requested {
                        stop(&table, &lease.job, Stop::Cancelled);
                    }
                }
            }
            Err(err) => warn!(error = %err, "heartbeat failed; retrying"),
        }
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
