//! The worker runtime: a [`Worker`] fetches jobs from a server and runs each through a
//! [`Handler`]. Each [`Lane`] (queues and a concurrency) has its own fetch loop, which asks
//! for as many jobs as it has free slots in one long poll; every lease the worker holds is
//! heartbeated in one batched call per beat (cancellations come back with it); outcomes are
//! sent in batches by the [`Reporter`](crate::report); a job's timeout stops its handler;
//! a graceful shutdown stops fetching, lets running jobs finish for a grace period, then
//! hands the remaining leases back so another worker takes them at once.
//!
//! `rota worker --exec` is one handler (a child process per job); the typed Rust worker
//! ([`Worker::builder`]) and any embedding use the same runtime.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rota_api::{
    CompleteAndFetchRequest, FetchRequest, FetchResponse, HeartbeatRequest, LeaseToken, LeasedJob,
};
use rota_core::{format_duration, parse_duration, JobId};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{info, warn};

use crate::context::ProgressSender;
use crate::report::{Item, Pending, Reporter};
use crate::{Client, ClientError, JobContext, Outcome};

/// Longest one fetch waits for a job before asking again (a third of the lease when that is
/// shorter, so an idle worker is seen within its lease, as `rota health --worker` checks).
/// A fetch in flight is not cut at shutdown (jobs it leased are handed back, not left to
/// expire), so this is also the longest an idle worker takes to stop: 2 s, as Sidekiq's
/// fetch timeout, for one idle request per lane every 2 s.
pub const FETCH_WAIT: Duration = Duration::from_secs(2);
/// Longest a fetch waits for the rest of a lane's slots to free up.
pub const FETCH_GATHER: Duration = Duration::from_millis(2);
/// Lease assumed until the server says otherwise.
pub const LEASE_ASSUMED: Duration = Duration::from_secs(30);

/// Runs jobs. When [`JobContext::stop`] is cancelled the handler should stop the job's
/// work and return soon; if it has not returned [`WorkerOptions::kill_grace`] plus five
/// seconds later, its future is dropped (release what it holds on drop too).
pub trait Handler: Send + Sync + 'static {
    /// Runs one job to its outcome.
    fn run(&self, job: JobContext) -> Pin<Box<dyn Future<Output = Outcome> + Send + '_>>;
}

/// Queues a worker takes jobs from together, and how many of their jobs it runs at once.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Lane {
    /// The queues, asked in one fetch.
    pub queues: Vec<String>,
    /// Jobs of these queues run at once.
    pub concurrency: usize,
}

impl Lane {
    /// `queues`, `concurrency` jobs at a time.
    pub fn new(queues: Vec<String>, concurrency: usize) -> Self {
        Self {
            queues,
            concurrency,
        }
    }
}

/// Where and how a worker takes jobs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// Unique per process, recorded on each lease.
    pub id: String,
    /// Stable name for health checks (the host name by default).
    pub name: String,
    /// The queues it takes from, each lane with its own concurrency.
    pub lanes: Vec<Lane>,
    /// Kinds it handles (empty: any).
    pub kinds: Vec<String>,
    /// On shutdown, how long running jobs may finish before their leases are handed back.
    pub grace: Duration,
    /// After asking a job to stop (timeout, cancel, hand-back), how long it may take before
    /// it is killed (the exec handler sends SIGTERM, then SIGKILL after this).
    pub kill_grace: Duration,
    /// The software running the jobs, such as `rota-worker-exec 0.1.0`.
    pub version: String,
}

impl WorkerOptions {
    /// Options for `lanes`: named after the host, 10 s of grace.
    pub fn new(lanes: Vec<Lane>) -> Self {
        let name = hostname();
        Self {
            id: format!("{name}:{}", std::process::id()),
            name,
            lanes,
            kinds: vec![],
            grace: Duration::from_secs(10),
            kill_grace: Duration::from_secs(5),
            version: format!("rota {}", env!("CARGO_PKG_VERSION")),
        }
    }

    /// Jobs run at once over every lane.
    pub fn concurrency(&self) -> usize {
        self.lanes.iter().map(|l| l.concurrency).sum()
    }

    pub(crate) fn check(&self) -> Result<(), WorkerError> {
        let invalid = |field, message: &str| {
            Err(WorkerError::Invalid {
                field,
                message: message.into(),
            })
        };
        if self.lanes.is_empty() || self.lanes.iter().any(|l| l.queues.is_empty()) {
            return invalid("queues", "name at least one queue");
        }
        if self.lanes.iter().any(|l| l.concurrency == 0) {
            return invalid("concurrency", "must be at least 1");
        }
        Ok(())
    }
}

/// Why a running job was stopped before its handler finished.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Stop {
    Cancelled,
    LeaseLost,
    Shutdown,
    TimedOut,
}

pub(crate) struct Running {
    pub(crate) token: u64,
    stop: CancellationToken,
    reason: Arc<Mutex<Option<Stop>>>,
}

pub(crate) type Table = Arc<Mutex<HashMap<JobId, Running>>>;

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
    // The cause is in the message (not `source`), so a plain `{e}` says why.
    #[error("the server refused the worker's fetch: {0}")]
    Fetch(ClientError),
}

/// A worker over one server.
pub struct Worker<H> {
    client: Client,
    options: WorkerOptions,
    handler: Arc<H>,
}

impl<H> std::fmt::Debug for Worker<H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("server", &self.client.base_url())
            .field("options", &self.options)
            .finish()
    }
}

/// What every fetch loop and job task of one worker shares.
struct Shared<H> {
    client: Client,
    options: WorkerOptions,
    handler: Arc<H>,
    table: Table,
    lease: Arc<Mutex<Duration>>,
    reporter: Reporter,
    jobs: TaskTracker,
    fetching: CancellationToken,
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

    /// The options it runs with.
    pub fn options(&self) -> &WorkerOptions {
        &self.options
    }

    /// Runs until `shutdown` is cancelled, then stops fetching, waits up to the grace
    /// period, and hands the leases of jobs still running back.
    pub async fn run_until(self, shutdown: CancellationToken) -> Result<(), WorkerError> {
        self.run_hurried(shutdown, CancellationToken::new()).await
    }

    /// [`Worker::run_until`], with `hurry` ending the grace period early when cancelled (a
    /// second Ctrl-C).
    pub async fn run_hurried(
        self,
        shutdown: CancellationToken,
        hurry: CancellationToken,
    ) -> Result<(), WorkerError> {
        self.options.check()?;
        let table: Table = Arc::default();
        let (reporter, reports) = Reporter::start(self.client.clone(), table.clone());
        let shared = Arc::new(Shared {
            client: self.client.clone(),
            options: self.options,
            handler: self.handler,
            table,
            lease: Arc::new(Mutex::new(LEASE_ASSUMED)),
            reporter,
            jobs: TaskTracker::new(),
            // Cancelled on shutdown, or when one lane cannot fetch at all.
            fetching: shutdown.child_token(),
        });
        let o = &shared.options;
        let beats = tokio::spawn(heartbeat_loop(
            shared.client.clone(),
            o.id.clone(),
            shared.table.clone(),
            shared.lease.clone(),
        ));
        info!(worker = %o.id, name = %o.name, lanes = ?o.lanes, "worker started");
        let lanes = o.lanes.iter().map(|lane| fetch_loop(&shared, lane));
        let failure = futures_util::future::join_all(lanes)
            .await
            .into_iter()
            .flatten()
            .next();
        shared.jobs.close();
        info!(running = shared.jobs.len(), grace = %format_duration(o.grace), "stopping: no more fetches");
        let in_grace = tokio::select! {
            _ = tokio::time::timeout(o.grace, shared.jobs.wait()) => false,
            _ = hurry.cancelled() => true,
        };
        if in_grace || !shared.jobs.is_empty() {
            let ids: Vec<JobId> = shared
                .table
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
                stop(&shared.table, id, Stop::Shutdown);
            }
            shared.jobs.wait().await;
        }
        // Every job task has handed its report over; the reporter sends the last of them and
        // ends with its last sender. Their leases are heartbeated until then.
        drop(shared);
        let _ = reports.await;
        beats.abort();
        match failure {
            Some(err) => Err(err),
            None => Ok(()),
        }
    }
}

/// One lane's loop: wait for a free slot, ask for as many jobs as there are free slots,
/// start each. Returns why it stopped, if it was not told to.
async fn fetch_loop<H: Handler>(shared: &Arc<Shared<H>>, lane: &Lane) -> Option<WorkerError> {
    let o = &shared.options;
    let slots = Arc::new(Semaphore::new(lane.concurrency));
    let mut retry = Backoff::new();
    let host = hostname();
    loop {
        let first = tokio::select! {
            permit = slots.clone().acquire_owned() => permit.expect("semaphore open"),
            _ = shared.fetching.cancelled() => return None,
        };
        let mut permits = vec![first];
        while let Ok(permit) = slots.clone().try_acquire_owned() {
            permits.push(permit);
        }
        // While slots are busy, jobs finishing a moment apart would each make a fetch of
        // their own: wait a moment for the rest, so requests stay large (a worker of
        // concurrency 64 draining short jobs makes one fetch and one report per 64 jobs;
        // with half, it made twice as many and drained 20 % slower).
        let missing = lane.concurrency - permits.len();
        if missing > 0 {
            // One wait for all of them (one wake-up, not one per finishing job); on timeout
            // the slots it had gathered go back, and whatever is free is taken.
            let all = slots.clone().acquire_many_owned(missing as u32);
            match tokio::time::timeout(FETCH_GATHER, all).await {
                Ok(mut many) => {
                    let many = many.as_mut().expect("semaphore open");
                    while let Some(one) = many.split(1) {
                        permits.push(one);
                    }
                }
                Err(_) => {
                    while let Ok(permit) = slots.clone().try_acquire_owned() {
                        permits.push(permit);
                    }
                }
            }
        }
        // Not cancelled mid-request: a job leased by a fetch is always seen, so on
        // shutdown it can be handed back rather than left to expire.
        let wait = FETCH_WAIT.min(*shared.lease.lock().expect("lease poisoned") / 3);
        let request = FetchRequest {
            worker: o.id.clone(),
            queues: lane.queues.clone(),
            kinds: o.kinds.clone(),
            max: Some(permits.len() as u32),
            wait: Some(format_duration(wait)),
            name: Some(o.name.clone()),
            host: Some(host.clone()),
            pid: Some(std::process::id()),
            concurrency: Some(o.concurrency() as u32),
            version: Some(o.version.clone()),
            full: false,
        };
        let fetched = fetch_with_completions(shared, request).await;
        let response = match fetched {
            Ok(response) => {
                retry.reset();
                response
            }
            Err(err) if is_fatal(&err) => {
                shared.fetching.cancel();
                return Some(WorkerError::Fetch(err));
            }
            Err(err) => {
                // Busy, unavailable, a 5xx or the network: wait and ask again; running
                // jobs carry on meanwhile.
                drop(permits);
                let pause = retry.next();
                warn!(error = %chain(&err), retry_in = %format_duration(pause), "fetch failed; retrying");
                tokio::select! {
                    _ = tokio::time::sleep(pause) => {}
                    _ = shared.fetching.cancelled() => {}
                }
                continue;
            }
        };
        if let Ok(d) = parse_duration(&response.lease) {
            *shared.lease.lock().expect("lease poisoned") = d;
        }
        for job in response.jobs {
            let Ok(id) = job.id.parse::<JobId>() else {
                continue;
            };
            let token = job.lease_token;
            if shared.fetching.is_cancelled() {
                // It arrived after shutdown began: give it back unstarted.
                info!(job = %id, "job fetched during shutdown: handing it back unstarted");
                let reason = Arc::new(Mutex::new(Some(Stop::Shutdown)));
                let item = Item::HandBack(LeaseToken { job: id, token });
                shared.reporter.report(item, reason);
                continue;
            }
            let permit = permits.pop().expect("no more jobs than free slots");
            start(shared, job, id, token, permit);
        }
    }
}

/// Fetches, taking along the completions waiting to be reported (one request and one
/// transaction for both); completions whose request failed go back to the reporter.
async fn fetch_with_completions<H>(
    shared: &Shared<H>,
    fetch: FetchRequest,
) -> Result<FetchResponse, ClientError> {
    let rides = shared.reporter.take_completions();
    if rides.is_empty() {
        return shared.client.fetch(&fetch).await;
    }
    let completions = rides.iter().filter_map(Pending::completion).collect();
    let request = CompleteAndFetchRequest { completions, fetch };
    match shared.client.complete_and_fetch(&request).await {
        Ok(answer) => {
            shared.reporter.answered(rides, answer.results);
            match answer.fetch_error {
                Some(problem) => Err(ClientError::Api(Box::new(problem))),
                None => Ok(FetchResponse {
                    jobs: answer.jobs,
                    lease: answer.lease,
                }),
            }
        }
        Err(err) if about_completions(&err) => {
            // The completions were refused, not the fetch (a result the server does not
            // take): they go to the reporter, which deals with them one by one, and the
            // fetch goes on its own. Stopping the worker here would leave it in a loop of
            // restarts on the same completion.
            shared.reporter.resend(rides);
            shared.client.fetch(&request.fetch).await
        }
        Err(err) => {
            shared.reporter.resend(rides);
            Err(err)
        }
    }
}

/// Whether a refused complete-and-fetch was refused for its completions (a field under
/// `completions`, or a body over the limit, which only results make large).
fn about_completions(err: &ClientError) -> bool {
    match err {
        ClientError::Api(problem) => {
            problem.code == "payload_too_large"
                || problem
                    .field
                    .as_deref()
                    .is_some_and(|f| f.starts_with("completions"))
        }
        _ => false,
    }
}

/// Starts one leased job: it is heartbeated from now until its outcome is reported.
fn start<H: Handler>(
    shared: &Arc<Shared<H>>,
    job: LeasedJob,
    id: JobId,
    token: u64,
    permit: OwnedSemaphorePermit,
) {
    let stop_token = CancellationToken::new();
    let reason = Arc::new(Mutex::new(None));
    shared.table.lock().expect("job table poisoned").insert(
        id,
        Running {
            token,
            stop: stop_token.clone(),
            reason: reason.clone(),
        },
    );
    let shared = shared.clone();
    shared.jobs.clone().spawn(async move {
        let client = &shared.client;
        let timeout = job.timeout.as_deref().and_then(|t| parse_duration(t).ok());
        let progress = Arc::new(ProgressSender::new(client.clone(), id, token));
        let context = JobContext {
            job,
            id,
            token,
            stop: stop_token.clone(),
            progress: progress.clone(),
        };
        let kill_grace = shared.options.kill_grace;
        let ran = run_one(&*shared.handler, context, timeout, &reason, kill_grace).await;
        progress.finish().await;
        // The lease stays in the table (and heartbeated) until the report lands.
        let reason_now = *reason.lock().expect("reason poisoned");
        match Item::for_run(id, token, ran, reason_now) {
            Some(item) => shared.reporter.report(item, reason),
            None => {
                shared.table.lock().expect("job table poisoned").remove(&id);
            }
        }
        // The slot is free once the report is queued: the fetch it wakes takes the
        // completion along.
        drop(permit);
    });
}

/// What running a job came to.
pub(crate) enum Ran {
    Handled(Outcome),
    Stopped,
    TimedOut(Duration),
}

/// Whether a fetch error means the worker cannot work at all (a bad token, a queue that is
/// not declared, a request the server refuses): then it exits with the reason. Anything
/// else (busy, unavailable, a 5xx, the network) is retried.
pub(crate) fn is_fatal(err: &ClientError) -> bool {
    match err {
        ClientError::Api(problem) => matches!(problem.status, 400 | 401 | 403 | 404 | 422),
        _ => false,
    }
}

/// Exponential pauses between retries: 200 ms doubling to 5 s.
pub(crate) struct Backoff(Duration);

impl Backoff {
    const FIRST: Duration = Duration::from_millis(200);
    const MAX: Duration = Duration::from_secs(5);

    pub(crate) fn new() -> Self {
        Self(Self::FIRST)
    }

    pub(crate) fn reset(&mut self) {
        self.0 = Self::FIRST;
    }

    pub(crate) fn next(&mut self) -> Duration {
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
    // A job cancelled while it ran ends cancelled, whatever its handler made of the stop
    // (returning as soon as it sees the token is how a handler obeys it).
    let cancelled = *reason.lock().expect("reason poisoned") == Some(Stop::Cancelled);
    let returned = outcome.is_some();
    match outcome {
        Some(Outcome::Stopped) | None => {}
        Some(_) if cancelled => {}
        Some(outcome) => return Ran::Handled(outcome),
    }
    let timed_out = *reason.lock().expect("reason poisoned") == Some(Stop::TimedOut);
    // Asked to stop: the handler stops what it started (SIGTERM, then SIGKILL after the
    // kill grace) and returns; only then is the outcome reported. (It may have returned
    // already, as the stop and its return raced.)
    if !stop_token.is_cancelled() {
        return Ran::Stopped;
    }
    if !returned
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
                        warn!(job = %lease.job, "lease lost: the job was rescued after its lease expired (this worker did not heartbeat in time); stopping it, and its outcome will not be reported");
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
pub(crate) fn chain(err: &dyn std::error::Error) -> String {
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
        // One plain line: the cause and the fix, not reqwest's chain repeating the URL.
        assert!(text.contains("is `rota serve` running there?"), "{text}");
        assert_eq!(text.matches("error sending request").count(), 0, "{text}");
    }
}
