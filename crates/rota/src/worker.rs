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
    CheckpointRequest, CompleteRequest, CompletionRequest, FailRequest, FailureRequest,
    FetchRequest, HandBackRequest, HeartbeatRequest, JobView, LeaseToken, ProgressRequest,
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
    /// The handler stopped because [`JobContext::stop`] asked it to; what is reported
    /// then depends on why it was asked (a timeout fails the attempt, a shutdown hands the
    /// job back, a cancel ends it cancelled).
    Stopped,
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

/// The latest progress report and checkpoint of a job, not yet sent.
#[derive(Debug, Clone, Default)]
struct LatestProgress {
    progress: Option<(u8, Option<String>)>,
    checkpoint: Option<serde_json::Value>,
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
    /// Cancelled when the job must stop early: it was cancelled, timed out, lost its lease,
    /// or is handed back at shutdown. The handler should then stop what it started and
    /// return; the runtime waits for it (up to [`WorkerOptions::kill_grace`] and a little
    /// more) before it reports, so nothing of the job outlives the report.
    pub stop: CancellationToken,
    progress: Arc<tokio::sync::watch::Sender<LatestProgress>>,
}

impl JobContext {
    /// Reports progress (0..=100 and an optional message). It never waits: the latest value
    /// is sent in the background, at most every [`PROGRESS_EVERY`], so a flood of progress
    /// costs one request per interval.
    pub fn progress(&self, percent: u8, message: Option<String>) {
        self.progress
            .send_modify(|latest| latest.progress = Some((percent, message)));
    }

    /// Saves a checkpoint (small JSON) that the job's next attempt receives, if this one
    /// fails. Like progress it never waits: the latest is sent in the background.
    pub fn checkpoint(&self, checkpoint: serde_json::Value) {
        self.progress
            .send_modify(|latest| latest.checkpoint = Some(checkpoint));
    }
}

/// Longest progress reports wait for one another: only the latest value in each interval
/// is sent.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Sends a job's latest progress while it runs, at most every [`PROGRESS_EVERY`].
async fn send_progress(
    client: Client,
    job: String,
    token: u64,
    mut latest: tokio::sync::watch::Receiver<LatestProgress>,
) {
    let mut sent_checkpoint = None;
    let mut sent_progress = None;
    while latest.changed().await.is_ok() {
        let now = latest.borrow_and_update().clone();
        if now.checkpoint.is_some() && now.checkpoint != sent_checkpoint {
            let checkpoint = now.checkpoint.clone().expect("checked");
            let request = CheckpointRequest { token, checkpoint };
            match client.checkpoint(&job, &request).await {
                Ok(_) => sent_checkpoint = now.checkpoint.clone(),
                Err(err) => warn!(job = %job, error = %err, "could not save the checkpoint"),
            }
        }
        if let Some((percent, message)) = now
            .progress
            .clone()
            .filter(|_| now.progress != sent_progress)
        {
            let sent = client
                .progress(
                    &job,
                    &ProgressRequest {
                        token,
                        percent,
                        message,
                    },
                )
                .await;
            match sent {
                Ok(_) => sent_progress = now.progress.clone(),
                Err(err) => warn!(job = %job, error = %err, "could not report progress"),
            }
        }
        tokio::time::sleep(PROGRESS_EVERY).await;
    }
}

/// Runs jobs. When [`JobContext::stop`] is cancelled the handler should stop the job's
/// work and return soon; if it has not returned [`WorkerOptions::kill_grace`] plus five
/// seconds later, its future is dropped (release what it holds on drop too).
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
    /// After asking a job to stop (timeout, cancel, hand-back), how long it may take before
    /// it is killed (the exec handler sends SIGTERM, then SIGKILL after this).
    pub kill_grace: Duration,
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
            kill_grace: Duration::from_secs(5),
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
    TimedOut,
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
    /// period, and hands the leases of jobs still running back. A second cancellation of
    /// `hurry` (a second Ctrl-C) ends the grace period at once.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        self.run_until(shutdown, CancellationToken::new()).await
    }

    /// [`Worker::run`], with `hurry` ending the grace period early when cancelled.
    pub async fn run_until(
        self,
        shutdown: CancellationToken,
        hurry: CancellationToken,
    ) -> Result<(), WorkerError> {
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
        ));
        info!(worker = %o.id, name = %o.name, queues = ?o.queues, "worker started");
        let mut tasks = tokio::task::JoinSet::new();
        let mut failure = None;
        let mut retry = Backoff::new();
        while !shutdown.is_cancelled() {
            // Finished jobs leave the set at once, so memory stays flat over any number.
            while tasks.try_join_next().is_some() {}
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
                Ok(response) => {
                    retry.reset();
                    response
                }
                Err(err) if is_fatal(&err) => {
                    failure = Some(WorkerError::Fetch(err));
                    break;
                }
                Err(err) => {
                    // Busy, unavailable, a 5xx or the network: wait and ask again; running
                    // jobs carry on meanwhile.
                    let pause = retry.next();
                    warn!(error = %chain(&err), retry_in = %format_duration(pause), "fetch failed; retrying");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
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
            if shutdown.is_cancelled() {
                // It arrived after shutdown began: give it back unstarted.
                info!(job = %id, "job fetched during shutdown: handing it back unstarted");
                let client = self.client.clone();
                let reason = Arc::new(Mutex::new(Some(Stop::Shutdown)));
                deliver(&client, id, token, Ran::Stopped, &reason).await;
                break;
            }
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
            let (client, table, handler, kill_grace) = (
                self.client.clone(),
                table.clone(),
                self.handler.clone(),
                o.kill_grace,
            );
            tasks.spawn(async move {
                let timeout = job.timeout.as_deref().and_then(|t| parse_duration(t).ok());
                let (progress, latest) = tokio::sync::watch::channel(LatestProgress::default());
                let sender =
                    tokio::spawn(send_progress(client.clone(), job.id.clone(), token, latest));
                let progress = Arc::new(progress);
                let context = JobContext {
                    job,
                    id,
                    token,
                    stop: stop_token.clone(),
                    progress: progress.clone(),
                };
                let ran = run_one(&*handler, context, timeout, &reason, kill_grace).await;
                sender.abort();
                // A checkpoint saved just before the end must reach the server before the
                // outcome does (the next attempt depends on it).
                let checkpoint = progress.borrow().checkpoint.clone();
                if let Some(checkpoint) = checkpoint {
                    let request = CheckpointRequest { token, checkpoint };
                    if let Err(err) = client.checkpoint(&id.to_string(), &request).await {
                        warn!(job = %id, error = %err, "could not save the checkpoint");
                    }
                }
                // The lease stays in the table (and heartbeated) until the report lands.
                deliver(&client, id, token, ran, &reason).await;
                table.lock().expect("job table poisoned").remove(&id);
                drop(permit);
            });
        }
        info!(running = tasks.len(), grace = %format_duration(o.grace), "stopping: no more fetches");
        let finished = async { while tasks.join_next().await.is_some() {} };
        let in_grace = tokio::select! {
            _ = tokio::time::timeout(o.grace, finished) => false,
            _ = hurry.cancelled() => true,
        };
        if in_grace || !tasks.is_empty() {
            let ids: Vec<JobId> = table
                .lock()
                .expect("job table poisoned")
                .keys()
                .copied()
                .collect();
            if !ids.is_empty() {
                info!(
                    jobs = ids.len(),
                    "grace period over: stopping jobs and handing their leases back"
                );
            }
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

/// What running a job came to.
enum Ran {
    Handled(Outcome),
    Stopped,
    TimedOut(Duration),
}

/// Whether a fetch error means the worker cannot work at all (a bad token, a queue that is
/// not declared, a request the server refuses): then it exits with the reason. Anything
/// else (busy, unavailable, a 5xx, the network) is retried.
fn is_fatal(err: &ClientError) -> bool {
    match err {
        ClientError::Api(problem) => matches!(problem.status, 400 | 401 | 403 | 404 | 422),
        _ => false,
    }
}

/// Exponential pauses between retries: 200 ms doubling to 5 s.
struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(5);

    fn new() -> Self {
        Self(Self::FIRST)
    }

    fn reset(&mut self) {
        self.0 = Self::FIRST;
    }

    fn next(&mut self) -> Duration {
        let pause = self.0;
        self.0 = (self.0 * 2).min(Self::MAX);
        pause
    }
}

async fn run_one<H: Handler>(
    handler: &H,
    context: JobContext,
    timeout: Option<Duration>,
    reason: &Arc<Mutex<Option<Stop>>>,
    kill_grace: Duration,
) -> Ran {
    let stop_token = context.stop.clone();
    let mut work = handler.run(context);
    let limit = async {
        match timeout {
            Some(t) => tokio::time::sleep(t).await,
            None => std::future::pending().await,
        }
    };
    let outcome = tokio::select! {
        outcome = &mut work => Some(outcome),
        _ = stop_token.cancelled() => None,
        _ = limit => {
            reason.lock().expect("reason poisoned").get_or_insert(Stop::TimedOut);
            stop_token.cancel();
            None
        }
    };
    match outcome {
        Some(Outcome::Stopped) | None => {}
        Some(outcome) => return Ran::Handled(outcome),
    }
    let timed_out = *reason.lock().expect("reason poisoned") == Some(Stop::TimedOut);
    // Asked to stop: the handler stops what it started (SIGTERM, then SIGKILL after the
    // kill grace) and returns; only then is the outcome reported. (It may have returned
    // already, as the stop and its return raced.)
    if !stop_token.is_cancelled() {
        return Ran::Stopped;
    }
    if outcome.is_none()
        && tokio::time::timeout(kill_grace + Duration::from_secs(5), work)
            .await
            .is_err()
    {
        warn!("a handler did not stop within its kill grace; dropped");
    }
    match timeout {
        Some(after) if timed_out => Ran::TimedOut(after),
        _ => Ran::Stopped,
    }
}

/// The request that reports `ran`, if any.
enum Report {
    Complete(CompleteRequest),
    Fail(FailRequest),
    HandBack(HandBackRequest),
}

fn report_for(job: JobId, token: u64, ran: Ran, reason: Option<Stop>) -> Option<Report> {
    let fail =
        |message: String, backtrace: Option<String>, discard: bool, snooze: Option<String>| {
            Report::Fail(FailRequest {
                failures: vec![FailureRequest {
                    job,
                    token,
                    message,
                    backtrace,
                    discard,
                    snooze,
                }],
            })
        };
    Some(match (ran, reason) {
        (Ran::Handled(Outcome::Completed(result)), _) => Report::Complete(CompleteRequest {
            completions: vec![CompletionRequest { job, token, result }],
        }),
        (Ran::Handled(Outcome::Stopped), reason) => {
            return report_for(job, token, Ran::Stopped, reason)
        }
        (Ran::Handled(Outcome::Snoozed(delay)), _) => {
            fail("snoozed".into(), None, false, Some(format_duration(delay)))
        }
        (
            Ran::Handled(Outcome::Failed {
                message,
                backtrace,
                discard,
            }),
            _,
        ) => fail(message, backtrace, discard, None),
        (Ran::TimedOut(after), _) => fail(
            format!("timed out after {}", format_duration(after)),
            None,
            false,
            None,
        ),
        (Ran::Stopped, Some(Stop::TimedOut)) => fail("timed out".into(), None, false, None),
        (Ran::Stopped, Some(Stop::Shutdown)) => Report::HandBack(HandBackRequest {
            leases: vec![LeaseToken { job, token }],
        }),
        (Ran::Stopped, Some(Stop::Cancelled)) => {
            fail("cancelled on request".into(), None, false, None)
        }
        (Ran::Stopped, Some(Stop::LeaseLost) | None) => return None,
    })
}

/// Reports what became of a job, retrying while the lease is held: a report lost to a
/// restarting server, a busy database or a network blip is sent again (the job keeps being
/// heartbeated meanwhile), so finished work is never run a second time for want of a
/// report. It gives up only when the lease is lost, and says so.
async fn deliver(
    client: &Client,
    job: JobId,
    token: u64,
    ran: Ran,
    reason: &Arc<Mutex<Option<Stop>>>,
) {
    let reason_now = *reason.lock().expect("reason poisoned");
    let Some(mut report) = report_for(job, token, ran, reason_now) else {
        return;
    };
    let mut retry = Backoff::new();
    loop {
        let sent = match &report {
            Report::Complete(r) => client.complete(r).await,
            Report::Fail(r) => client.fail(r).await,
            Report::HandBack(r) => client.hand_back(r).await,
        };
        match sent {
            Ok(outcomes) => {
                if let Some(problem) = outcomes.results.first().and_then(|r| r.error.as_ref()) {
                    if problem.code == "lease_lost" {
                        warn!(job = %job, detail = %problem.detail, "report refused: the lease was lost (the job was rescued after its lease expired); this outcome is dropped");
                    } else {
                        warn!(job = %job, code = %problem.code, detail = %problem.detail, "report refused");
                    }
                }
                return;
            }
            Err(ClientError::Api(problem))
                if problem.code == "payload_too_large" && matches!(report, Report::Complete(_)) =>
            {
                // Running the job again would make the same result: fail it once, for good.
                warn!(job = %job, "result larger than the server's body limit: failing the job");
                report = Report::Fail(FailRequest {
                    failures: vec![FailureRequest {
                        job,
                        token,
                        message: format!("result too large for the server ({})", problem.detail),
                        backtrace: None,
                        discard: true,
                        snooze: None,
                    }],
                });
            }
            Err(err) if is_fatal(&err) => {
                warn!(job = %job, error = %err, "report refused");
                return;
            }
            Err(err) => {
                if *reason.lock().expect("reason poisoned") == Some(Stop::LeaseLost) {
                    warn!(job = %job, error = %err, "could not report, and the lease is lost: the job will be retried elsewhere");
                    return;
                }
                let pause = retry.next();
                warn!(job = %job, error = %chain(&err), retry_in = %format_duration(pause), "could not report the job's outcome; retrying while its lease is held");
                tokio::time::sleep(pause).await;
            }
        }
    }
}

/// Heartbeats every lease in the table: once a third of the lease has passed, and at least
/// every [`CANCEL_CHECK`] while jobs run, so a cancel reaches a running job within a second
/// or two.
async fn heartbeat_loop(client: Client, worker: String, table: Table, lease: Arc<Mutex<Duration>>) {
    let tick = Duration::from_millis(100);
    let mut last_beat = tokio::time::Instant::now();
    loop {
        tokio::time::sleep(tick).await;
        let every = (*lease.lock().expect("lease poisoned") / 3)
            .min(CANCEL_CHECK)
            .max(tick);
        if last_beat.elapsed() < every {
            continue;
        }
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
            continue;
        }
        last_beat = tokio::time::Instant::now();
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
            Err(err) => warn!(error = %chain(&err), "heartbeat failed; retrying"),
        }
    }
}

/// Longest a running job waits to hear that it was cancelled.
pub const CANCEL_CHECK: Duration = Duration::from_secs(1);

/// An error with its causes, each once (a transport error says "connection refused" only
/// at the bottom of its chain).
fn chain(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        let message = cause.to_string();
        if !text.contains(&message) {
            text.push_str(": ");
            text.push_str(&message);
        }
        source = cause.source();
    }
    text
}

/// This machine's host name (`localhost` when it cannot be read).
pub fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Transport errors are logged with their root cause (issue 17: "connection refused"
    /// was left out).
    #[tokio::test]
    async fn a_connection_error_names_its_root_cause() {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let client = Client::new(&format!("http://127.0.0.1:{port}")).unwrap();
        let err = client.workers().await.unwrap_err();
        let text = chain(&err);
        assert!(text.to_lowercase().contains("connection refused"), "{text}");
        assert_eq!(text.matches("error sending request").count(), 1, "{text}");
    }
}
