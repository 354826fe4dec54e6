//! The worker runtime: a [`Worker`] fetches jobs from a server and runs each through a
//! [`Handler`], with heartbeats for every lease it holds (one batched call per beat), the
//! job's timeout, cancellation seen at the next heartbeat, and a graceful shutdown that
//! stops fetching, lets running jobs finish for a grace period, then hands the remaining
//! leases back so another worker takes them at once.
//!
//! `rota worker --exec` is one handler (a child process per job); the typed Rust worker and
//! any embedding use the same runtime.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rota_api::{
    CompleteRequest, CompletionRequest, FailRequest, FailureRequest, FetchRequest, HandBackRequest,
    HeartbeatRequest, JobView, LeaseToken, ProgressRequest,
};
use rota_core::{format_duration, parse_duration, JobId};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

use crate::{Client, ClientError};

/// Longest one fetch waits for a job before asking again (a third of the lease when that is
/// shorter, so an idle worker is seen within its lease, as `rota health --worker` checks).
pub const FETCH_WAIT: Duration = Duration::from_secs(5);
/// Lease assumed until the server says otherwise.
pub const LEASE_ASSUMED: Duration = Duration::from_secs(30);

/// What a handler made of a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done, with an optional result.
    Completed(Option<Value>),
    /// Failed: retried after its backoff, or dead when out of attempts (or `discard`).
    Failed {
        /// What went wrong.
        message: String,
        /// Where, if known.
        backtrace: Option<String>,
        /// Do not retry.
        discard: bool,
    },
    /// Run again after this long, without using an attempt.
    Snoozed(Duration),
}

impl Outcome {
    /// A retryable failure with `message`.
    pub fn failed(message: impl Into<String>) -> Self {
        Outcome::Failed {
            message: message.into(),
            backtrace: None,
            discard: false,
        }
    }
}

/// One job handed to a handler.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The job as fetched.
    pub job: JobView,
    /// Its id.
    pub id: JobId,
    /// The lease token every report presents.
    pub token: u64,
    client: Client,
}

impl JobContext {
    /// Reports progress (0..=100 and an optional message); failures are logged, not fatal.
    pub async fn progress(&self, percent: u8, message: Option<String>) {
        let sent = self
            .client
            .progress(
                &self.job.id,
                &ProgressRequest {
                    token: self.token,
                    percent,
                    message,
                },
            )
            .await;
        if let Err(err) = sent {
            warn!(job = %self.id, error = %err, "could not report progress");
        }
    }
}

/// Runs jobs. The future is dropped when the job is cancelled, times out, loses its lease
/// or is handed back at shutdown: release what it holds on drop (a child process started
/// with `kill_on_drop`, say).
pub trait Handler: Send + Sync + 'static {
    /// Runs one job to its outcome.
    fn run(&self, job: JobContext) -> Pin<Box<dyn Future<Output = Outcome> + Send + '_>>;
}

/// Where and how a worker takes jobs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Unique per process, recorded on each lease.
    pub id: String,
    /// Stable name for health checks (the host name by default).
    pub name: String,
    /// Queues to take from.
    pub queues: Vec<String>,
    /// Kinds it handles (empty: any).
    pub kinds: Vec<String>,
    /// Jobs run at once.
    pub concurrency: usize,
    /// On shutdown, how long running jobs may finish before their leases are handed back.
    pub grace: Duration,
    /// The software running the jobs, such as `rota-worker-exec 0.1.0`.
    pub version: String,
}

impl WorkerOptions {
    /// Options for `queues`: named after the host, one job at a time, 10 s of grace.
    pub fn new(queues: Vec<String>) -> Self {
        let name = hostname();
        Self {
            id: format!("{name}:{}", std::process::id()),
            name,
            queues,
            kinds: vec![],
            concurrency: 1,
            grace: Duration::from_secs(10),
            version: format!("rota {}", env!("CARGO_PKG_VERSION")),
        }
    }
}

/// Why a running job was stopped before its handler finished.
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

/// Why a worker stopped on its own.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WorkerError {
    /// The options cannot work.
    #[error("invalid worker option {field}: {message}")]
    Invalid {
        /// The option.
        field: &'static str,
        /// What is wrong.
        message: String,
    },
    /// The server refused the worker's fetch (a problem, not a network error): a queue not
    /// declared, a bad token.
    #[error("fetching jobs")]
    Fetch(#[source] ClientError),
}

/// A worker over one server.
pub struct Worker<H> {
    client: Client,
    options: WorkerOptions,
    handler: Arc<H>,
}

enum Ran {
    Handled(Outcome),
    Stopped,
    TimedOut(Duration),
}

impl<H: Handler> Worker<H> {
    /// A worker taking jobs from `client`'s server and running them with `handler`.
    pub fn new(client: Client, options: WorkerOptions, handler: H) -> Self {
        Self {
            client,
            options,
            handler: Arc::new(handler),
        }
    }

    /// Runs until `shutdown` is cancelled, then stops fetching, waits up to the grace
    /// period, and hands the leases of jobs still running back.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        let o = &self.options;
        if o.concurrency == 0 {
            return Err(WorkerError::Invalid {
                field: "concurrency",
                message: "must be at least 1".into(),
            });
        }
        if o.queues.is_empty() {
            return Err(WorkerError::Invalid {
                field: "queues",
                message: "name at least one queue".into(),
            });
        }
        let table: Table = Arc::default();
        let slots = Arc::new(Semaphore::new(o.concurrency));
        let lease = Arc::new(Mutex::new(LEASE_ASSUMED));
        let beats = tokio::spawn(heartbeat_loop(
            self.client.clone(),
            o.id.clone(),
            table.clone(),
            lease.clone(),
            shutdown.clone(),
        ));
        info!(worker = %o.id, name = %o.name, queues = ?o.queues, "worker started");
        let mut tasks = tokio::task::JoinSet::new();
        let mut failure = None;
        while !shutdown.is_cancelled() {
            let permit = tokio::select! {
                permit = slots.clone().acquire_owned() => permit.expect("semaphore open"),
                _ = shutdown.cancelled() => break,
            };
            // Not cancelled mid-request: a job leased by a fetch is always seen, so on
            // shutdown it can be handed back rather than left to expire.
            let wait = FETCH_WAIT.min(*lease.lock().expect("lease poisoned") / 3);
            let fetched = self
                .client
                .fetch(&FetchRequest {
                    worker: o.id.clone(),
                    queues: o.queues.clone(),
                    kinds: o.kinds.clone(),
                    max: Some(1),
                    wait: Some(format_duration(wait)),
                    name: Some(o.name.clone()),
                    host: Some(hostname()),
                    pid: Some(std::process::id()),
                    concurrency: Some(o.concurrency as u32),
                    version: Some(o.version.clone()),
                })
                .await;
            let response = match fetched {
                Ok(response) => response,
                Err(err) if err.code().is_some() => {
                    failure = Some(WorkerError::Fetch(err));
                    break;
                }
                Err(err) => {
                    warn!(error = %err, "fetch failed; retrying in 1s");
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                        _ = shutdown.cancelled() => {}
                    }
                    continue;
                }
            };
            if let Ok(d) = parse_duration(&response.lease) {
                *lease.lock().expect("lease poisoned") = d;
            }
            let Some(job) = response.jobs.into_iter().next() else {
                continue;
            };
            let (id, token) = match (job.id.parse::<JobId>(), job.lease_token) {
                (Ok(id), Some(token)) => (id, token),
                _ => continue,
            };
            let stop_token = CancellationToken::new();
            let reason = Arc::new(Mutex::new(None));
            table.lock().expect("job table poisoned").insert(
                id,
                Running {
                    token,
                    stop: stop_token.clone(),
                    reason: reason.clone(),
                },
            );
            let (client, table, handler) =
                (self.client.clone(), table.clone(), self.handler.clone());
            tasks.spawn(async move {
                let timeout = job.timeout.as_deref().and_then(|t| parse_duration(t).ok());
                let context = JobContext {
                    job,
                    id,
                    token,
                    client: client.clone(),
                };
                let ran = run_one(&*handler, context, timeout, stop_token).await;
                let reason = *reason.lock().expect("reason poisoned");
                report(&client, id, token, ran, reason).await;
                table.lock().expect("job table poisoned").remove(&id);
                drop(permit);
            });
        }
        info!(running = tasks.len(), grace = %format_duration(o.grace), "stopping: no more fetches");
        if tokio::time::timeout(o.grace, async {
            while tasks.join_next().await.is_some() {}
        })
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
        match failure {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

async fn run_one<H: Handler>(
    handler: &H,
    context: JobContext,
    timeout: Option<Duration>,
    stop: CancellationToken,
) -> Ran {
    let limit = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    tokio::select! {
        outcome = handler.run(context) => Ran::Handled(outcome),
        _ = stop.cancelled() => Ran::Stopped,
        _ = limit => Ran::TimedOut(timeout.unwrap_or_default()),
    }
}

async fn report(client: &Client, job: JobId, token: u64, ran: Ran, reason: Option<Stop>) {
    let fail =
        |message: String, backtrace: Option<String>, discard: bool, snooze: Option<String>| {
            FailRequest {
                failures: vec![FailureRequest {
                    job,
                    token,
                    message,
                    backtrace,
                    discard,
                    snooze,
                }],
            }
        };
    let sent = match ran {
        Ran::Handled(Outcome::Completed(result)) => client
            .complete(&CompleteRequest {
                completions: vec![CompletionRequest { job, token, result }],
            })
            .await
            .map(|_| ()),
        Ran::Handled(Outcome::Snoozed(delay)) => client
            .fail(&fail(
                "snoozed".into(),
                None,
                false,
                Some(format_duration(delay)),
            ))
            .await
            .map(|_| ()),
        Ran::Handled(Outcome::Failed {
            message,
            backtrace,
            discard,
        }) => client
            .fail(&fail(message, backtrace, discard, None))
            .await
            .map(|_| ()),
        Ran::TimedOut(after) => client
            .fail(&fail(
                format!("timed out after {}", format_duration(after)),
                None,
                false,
                None,
            ))
            .await
            .map(|_| ()),
        Ran::Stopped => match reason {
            Some(Stop::Shutdown) => client
                .hand_back(&HandBackRequest {
                    leases: vec![LeaseToken { job, token }],
                })
                .await
                .map(|_| ()),
            Some(Stop::Cancelled) => client
                .fail(&fail("cancelled on request".into(), None, false, None))
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

/// This machine's host name (`localhost` when it cannot be read).
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}
