//! Parameters and results of [`crate::Store`] methods: one struct per method.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rota_core::schedule::ScheduleDef;
use rota_core::{ErrorReport, Event, Job, JobId, JobState, NewJob, Progress, Rate, RetryOverride};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::PolicyDefaults;

/// Enqueue a batch.
#[derive(Debug, Clone)]
pub struct JobInsertManyParams {
    /// The jobs, in order.
    pub jobs: Vec<NewJob>,
    /// Server and kind policy layers, and limits.
    pub defaults: Arc<PolicyDefaults>,
    /// The current time.
    pub now: Timestamp,
}

/// One enqueued job.
#[derive(Debug, Clone, PartialEq)]
pub struct Inserted {
    /// The stored job (the existing one when `duplicate`).
    pub job: Job,
    /// The unique key matched an existing job; nothing new was stored.
    pub duplicate: bool,
    /// Stored beyond its queue's `max_depth` or `max_age` (the queue accepts overflow).
    pub warning: Option<String>,
}

/// Lease jobs for a worker.
#[derive(Debug, Clone)]
pub struct JobClaimManyParams {
    /// The worker's id (recorded on the lease).
    pub worker: String,
    /// Queues to take from (at least one).
    pub queues: Vec<String>,
    /// Kinds the worker handles; empty means every kind.
    pub kinds: Vec<String>,
    /// At most this many jobs.
    pub max: usize,
    /// Lease length for jobs whose queue sets none.
    pub lease: Duration,
    /// The current time.
    pub now: Timestamp,
}

/// A worker's reference to a job it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct LeaseRef {
    /// The job.
    pub job: JobId,
    /// The fencing token from the fetch.
    pub token: u64,
}

/// Extend leases.
#[derive(Debug, Clone)]
pub struct LeaseExtendManyParams {
    /// The worker heartbeating (its last-seen time is refreshed).
    pub worker: String,
    /// The leases.
    pub leases: Vec<LeaseRef>,
    /// New lease length from now, for jobs whose queue sets none.
    pub lease: Duration,
    /// The current time.
    pub now: Timestamp,
}

/// An extended lease.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extended {
    /// The job.
    pub job: JobId,
    /// The new expiry.
    pub expires_at: Timestamp,
    /// Someone asked to cancel the job: stop and report.
    pub cancel_requested: bool,
}

/// One successful attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Completion {
    /// The lease held.
    pub lease: LeaseRef,
    /// The handler's result.
    pub result: Option<Value>,
}

impl Completion {
    /// The state-machine event this completion is.
    pub fn event(self) -> (JobId, Event) {
        let event = Event::Completed {
            token: self.lease.token,
            result: self.result,
        };
        (self.lease.job, event)
    }
}

impl Failure {
    /// The state-machine event this failure is.
    pub fn event(self) -> (JobId, Event) {
        let event = Event::Failed {
            token: self.lease.token,
            error: self.error,
            discard: self.discard,
        };
        (self.lease.job, event)
    }
}

impl LeaseRef {
    /// The event of handing this lease back unrun.
    pub fn hand_back(self) -> (JobId, Event) {
        (self.job, Event::HandedBack { token: self.token })
    }
}

/// Record successful attempts.
#[derive(Debug, Clone)]
pub struct JobCompleteManyParams {
    /// The completions.
    pub completions: Vec<Completion>,
    /// The current time.
    pub now: Timestamp,
}

/// Record successful attempts and lease the next jobs, in one call (one transaction where
/// the backend can): a worker's steady state, one round trip per batch instead of two.
#[derive(Debug, Clone)]
pub struct JobCompleteAndClaimParams {
    /// The completions, applied first (their `now` is the claim's).
    pub completions: Vec<Completion>,
    /// The claim, made after them (so a queue's concurrency freed by them is available).
    pub claim: JobClaimManyParams,
}

/// What a [`JobCompleteAndClaimParams`] call did.
#[derive(Debug)]
pub struct CompletedAndClaimed {
    /// Per completion, in order: the completed job, or why not (a stale token: `LeaseLost`).
    pub completions: Vec<Result<Job, crate::StoreError>>,
    /// The jobs leased, or why the claim failed (an undeclared queue): the completions
    /// stand either way.
    pub claimed: Result<Vec<Job>, crate::StoreError>,
}

/// One failed attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Failure {
    /// The lease held.
    pub lease: LeaseRef,
    /// What went wrong.
    pub error: ErrorReport,
    /// Do not retry.
    pub discard: bool,
}

/// Record failed attempts.
#[derive(Debug, Clone)]
pub struct JobFailManyParams {
    /// The failures.
    pub failures: Vec<Failure>,
    /// The current time.
    pub now: Timestamp,
}

/// Report progress.
#[derive(Debug, Clone)]
pub struct JobProgressParams {
    /// The lease held.
    pub lease: LeaseRef,
    /// The report.
    pub progress: Progress,
    /// The current time.
    pub now: Timestamp,
}

/// Cancel jobs.
#[derive(Debug, Clone)]
pub struct JobCancelManyParams {
    /// The jobs.
    pub ids: Vec<JobId>,
    /// The current time.
    pub now: Timestamp,
}

/// Hand leases back unrun.
#[derive(Debug, Clone)]
pub struct LeaseHandBackManyParams {
    /// The leases.
    pub leases: Vec<LeaseRef>,
    /// The current time.
    pub now: Timestamp,
}

/// Which jobs an operator means.
#[derive(Debug, Clone, PartialEq)]
pub enum JobSelector {
    /// These jobs.
    Ids(Vec<JobId>),
    /// Every job matching the filter (its `states` is narrowed by the operation).
    Filter(JobFilter),
}

/// Retry dead or cancelled jobs.
#[derive(Debug, Clone)]
pub struct JobRetryManyParams {
    /// Which jobs; with a filter, only dead jobs are retried unless `states` says otherwise.
    pub selector: JobSelector,
    /// The current time.
    pub now: Timestamp,
}

/// Delete finished jobs on an operator's request (dead-job purge).
#[derive(Debug, Clone)]
pub struct JobPurgeParams {
    /// Which jobs; only jobs in `states` are deleted, whatever the selector says.
    pub selector: JobSelector,
    /// The states that may be deleted (final states only; others are ignored).
    pub states: Vec<JobState>,
}

/// Rescue expired leases.
#[derive(Debug, Clone)]
pub struct LeaseRescueParams {
    /// The current time: leases that expired before it are rescued.
    pub now: Timestamp,
    /// At most this many per call.
    pub limit: usize,
}

/// What a rescue pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RescueReport {
    /// Jobs sent back to retry.
    pub retried: Vec<JobId>,
    /// Jobs that had used their last attempt and are now dead.
    pub dead: Vec<JobId>,
    /// Jobs whose cancellation had been requested and are now cancelled.
    pub cancelled: Vec<JobId>,
    /// Every rescued job's queue, kind and new state (for metrics).
    pub outcomes: Vec<(String, String, JobState)>,
}

impl RescueReport {
    /// Whether nothing was rescued.
    pub fn is_empty(&self) -> bool {
        self.retried.is_empty() && self.dead.is_empty() && self.cancelled.is_empty()
    }

    /// Records a job as rescued, in the state the rescue left it in.
    pub fn record(&mut self, job: &Job) {
        self.outcomes
            .push((job.queue.clone(), job.kind.clone(), job.state));
        match job.state {
            JobState::Dead => self.dead.push(job.id),
            JobState::Cancelled => self.cancelled.push(job.id),
            _ => self.retried.push(job.id),
        }
    }
}

/// Delete old finished jobs.
#[derive(Debug, Clone)]
pub struct JobPruneParams {
    /// Only jobs of this queue (all queues when absent).
    pub queue: Option<String>,
    /// The current time. A job whose unique key is still taken (its `unique_for` after it
    /// finished has not passed) is kept, whatever its retention.
    pub now: Timestamp,
    /// Completed jobs finished longer ago than this go.
    pub completed_retention: Duration,
    /// Cancelled jobs finished longer ago than this go.
    pub cancelled_retention: Duration,
    /// Dead jobs are kept forever unless this is set.
    pub dead_retention: Option<Duration>,
    /// At most this many per call.
    pub limit: usize,
}

/// What a prune pass deleted.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PruneReport {
    /// Completed jobs deleted.
    pub completed: u64,
    /// Cancelled jobs deleted.
    pub cancelled: u64,
    /// Dead jobs deleted.
    pub dead: u64,
}

impl PruneReport {
    /// Whether nothing was deleted.
    pub fn is_empty(&self) -> bool {
        self.completed + self.cancelled + self.dead == 0
    }

    /// Records `n` jobs in `state` deleted.
    pub fn add(&mut self, state: JobState, n: u64) {
        match state {
            JobState::Completed => self.completed += n,
            JobState::Cancelled => self.cancelled += n,
            _ => self.dead += n,
        }
    }
}

impl JobPruneParams {
    /// Which finished jobs go: per state, those that finished before its cutoff (dead jobs
    /// only when a dead retention is set).
    pub fn cutoffs(&self) -> Vec<(JobState, Timestamp)> {
        let cutoff = |retention| rota_core::sub_duration(self.now, retention);
        let mut out = vec![
            (JobState::Completed, cutoff(self.completed_retention)),
            (JobState::Cancelled, cutoff(self.cancelled_retention)),
        ];
        if let Some(retention) = self.dead_retention {
            out.push((JobState::Dead, cutoff(retention)));
        }
        out
    }
}

/// Which jobs to list. Empty lists mean "any".
#[derive(Debug, Clone, Default, PartialEq)]
pub struct JobFilter {
    /// Any of these queues.
    pub queues: Vec<String>,
    /// Any of these kinds.
    pub kinds: Vec<String>,
    /// Any of these states.
    pub states: Vec<JobState>,
    /// Carrying this tag.
    pub tag: Option<String>,
    /// Created at or after.
    pub created_after: Option<Timestamp>,
    /// Created before.
    pub created_before: Option<Timestamp>,
    /// Whose last error has this fingerprint.
    pub error_group: Option<String>,
}

impl JobFilter {
    /// Whether `job` matches (the one definition backends' SQL must agree with).
    pub fn matches(&self, job: &Job) -> bool {
        (self.queues.is_empty() || self.queues.contains(&job.queue))
            && (self.kinds.is_empty() || self.kinds.contains(&job.kind))
            && (self.states.is_empty() || self.states.contains(&job.state))
            && self.tag.as_ref().is_none_or(|t| job.tags.contains(t))
            && self.created_after.is_none_or(|t| job.created_at >= t)
            && self.created_before.is_none_or(|t| job.created_at < t)
            && self
                .error_group
                .as_ref()
                .is_none_or(|g| job.errors.last().is_some_and(|e| &e.fingerprint == g))
    }
}

/// Read a job's history.
#[derive(Debug, Clone)]
pub struct JobHistoryParams {
    /// The job.
    pub id: JobId,
}

/// List jobs, newest first.
#[derive(Debug, Clone, Default)]
pub struct JobListParams {
    /// Which jobs.
    pub filter: JobFilter,
    /// Continue after this job (the previous page's `next`).
    pub after: Option<JobId>,
    /// Page size, 1..=[`crate::PAGE_LIMIT_MAX`] (others are refused naming `limit`).
    pub limit: usize,
    /// Look at no more than this many jobs (newest first, from `after`): a filter that
    /// matches few jobs then answers in bounded time with what it found, and `next`
    /// continues the search where it stopped (the page is `partial`). All jobs when absent.
    pub scan: Option<usize>,
}

/// A page of jobs.
#[derive(Debug, Clone, PartialEq)]
pub struct JobPage {
    /// The jobs, newest first.
    pub jobs: Vec<Job>,
    /// Cursor for the next page, if there may be one.
    pub next: Option<JobId>,
    /// The scan limit ran out before the page filled: `next` is where it stopped, and older
    /// jobs may still match. (A page the scan filled exactly is not partial, but its `next`
    /// is where the scan stopped too.)
    pub partial: bool,
}

/// The jobs a listing with a scan limit looked at: the oldest of them, and whether the
/// limit was reached (else the listing reached the oldest job there is).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ScanWindow {
    /// The oldest job looked at.
    pub oldest: Option<JobId>,
    /// Whether as many jobs as the limit were looked at.
    pub full: bool,
}

impl JobPage {
    /// The page of `limit` from a listing of up to `limit + 1` jobs: the extra one only tells
    /// that another page exists.
    pub fn from_one_extra(mut jobs: Vec<Job>, limit: usize) -> Self {
        let next = (jobs.len() > limit).then(|| {
            jobs.truncate(limit);
            jobs[limit - 1].id
        });
        Self {
            jobs,
            next,
            partial: false,
        }
    }

    /// The same, from a listing bounded by a scan `window`: a page the window ended before
    /// it filled continues from the window's oldest job.
    pub fn within(jobs: Vec<Job>, limit: usize, window: Option<ScanWindow>) -> Self {
        let mut page = Self::from_one_extra(jobs, limit);
        if let Some(ScanWindow {
            oldest: Some(oldest),
            full: true,
        }) = window
        {
            if page.next.is_none() {
                page.partial = page.jobs.len() < limit;
                page.next = Some(oldest);
            }
        }
        page
    }
}

/// A queue's settings (defaults for the jobs on it).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct QueueConfig {
    /// Queue-level retry settings.
    #[serde(default)]
    pub retry: RetryOverride,
    /// Lease length for jobs fetched from this queue.
    #[serde(
        default,
        with = "rota_core::serde_humane::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub lease: Option<Duration>,
    /// Default per-attempt timeout.
    #[serde(
        default,
        with = "rota_core::serde_humane::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub timeout: Option<Duration>,
    /// Most jobs running at once across all workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Most running jobs sharing one `concurrency_key`, across all workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_concurrency: Option<u32>,
    /// Jobs one key gets per round of the round-robin between keys (1 when unlisted).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub key_weights: BTreeMap<String, u32>,
    /// Jobs of this queue started per period (`100/1m`), across all workers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<Rate>,
    /// Jobs started per period for each `concurrency_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_rate: Option<Rate>,
    /// Jobs of a kind started per period, per kind.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kind_rates: BTreeMap<String, Rate>,
    /// Most ready and scheduled jobs; beyond it an enqueue overflows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<u64>,
    /// Longest the oldest ready job may wait; beyond it an enqueue overflows.
    #[serde(
        default,
        with = "rota_core::serde_humane::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub max_age: Option<Duration>,
    /// What an enqueue beyond `max_depth` or `max_age` gets (`reject` when unset).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overflow: Option<Overflow>,
    /// Completed jobs of this queue are kept this long (the server's retention otherwise).
    #[serde(
        default,
        with = "rota_core::serde_humane::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub completed_retention: Option<Duration>,
    /// Cancelled jobs of this queue are kept this long (the server's retention otherwise).
    #[serde(
        default,
        with = "rota_core::serde_humane::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub cancelled_retention: Option<Duration>,
    /// Dead jobs of this queue are deleted this long after they died (kept until purged
    /// otherwise, unless the server sets a dead retention).
    #[serde(
        default,
        with = "rota_core::serde_humane::option",
        skip_serializing_if = "Option::is_none"
    )]
    pub dead_retention: Option<Duration>,
}

/// What an enqueue into a queue beyond its `max_depth` or `max_age` gets.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Overflow {
    /// Refused: 429 with `Retry-After`; nothing is stored.
    #[default]
    Reject,
    /// Stored anyway, with a warning in the answer, the metrics and the doctor.
    Accept,
}

impl Overflow {
    /// `reject` or `accept`.
    pub fn as_str(self) -> &'static str {
        match self {
            Overflow::Reject => "reject",
            Overflow::Accept => "accept",
        }
    }
}

impl std::str::FromStr for Overflow {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "reject" => Ok(Overflow::Reject),
            "accept" => Ok(Overflow::Accept),
            other => Err(format!("must be \"reject\" or \"accept\", got {other:?}")),
        }
    }
}

/// How long finished jobs are kept before the pruner deletes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Completed jobs.
    pub completed: Duration,
    /// Cancelled jobs.
    pub cancelled: Duration,
    /// Dead jobs; `None` keeps them until an explicit purge.
    pub dead: Option<Duration>,
}

/// Completed jobs are kept this long unless configured.
pub const COMPLETED_RETENTION_DEFAULT: Duration = Duration::from_secs(24 * 3600);
/// Cancelled jobs are kept this long unless configured.
pub const CANCELLED_RETENTION_DEFAULT: Duration = Duration::from_secs(24 * 3600);

impl Default for Retention {
    fn default() -> Self {
        Self {
            completed: COMPLETED_RETENTION_DEFAULT,
            cancelled: CANCELLED_RETENTION_DEFAULT,
            dead: None,
        }
    }
}

/// A declared queue.
#[derive(Debug, Clone, PartialEq)]
pub struct Queue {
    /// Its name.
    pub name: String,
    /// Its settings.
    pub config: QueueConfig,
    /// Paused queues hand out no jobs.
    pub paused: bool,
    /// Last change.
    pub updated_at: Timestamp,
}

/// Declare or update a queue.
#[derive(Debug, Clone)]
pub struct QueueDeclareParams {
    /// The name.
    pub name: String,
    /// Its settings.
    pub config: QueueConfig,
    /// Change only the settings `config` gives (`Some`), keeping the others, as `PUT
    /// /v1/queues/{name}` and `rota queues declare` do; otherwise `config` replaces them all
    /// (the configuration file at start-up, which is the whole truth).
    pub merge: bool,
    /// The current time.
    pub now: Timestamp,
}

/// Pause or resume a queue.
#[derive(Debug, Clone)]
pub struct QueueSetPausedParams {
    /// The queue.
    pub name: String,
    /// Paused or not.
    pub paused: bool,
    /// The current time.
    pub now: Timestamp,
}

/// List queues.
#[derive(Debug, Clone)]
pub struct QueueListParams {
    /// The current time (for the age of the oldest ready job).
    pub now: Timestamp,
}

/// A queue and what is on it.
#[derive(Debug, Clone, PartialEq)]
pub struct QueueStats {
    /// The queue.
    pub queue: Queue,
    /// Jobs per state (states with none are absent).
    pub counts: BTreeMap<JobState, u64>,
    /// How long the oldest due, available job has been waiting.
    pub oldest_ready_age: Option<Duration>,
}

/// Read a queue's flow-control state.
#[derive(Debug, Clone)]
pub struct QueueFlowParams {
    /// The queue.
    pub queue: String,
    /// Also count the running jobs of this key.
    pub key: Option<String>,
    /// The current time.
    pub now: Timestamp,
}

/// A queue's flow-control state now (of a queue without claim-time limits, its settings only).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct QueueFlow {
    /// The queue's settings.
    pub config: QueueConfig,
    /// Its running jobs; per key, the keys at their `key_concurrency` (at most
    /// [`KEYS_AT_LIMIT_MAX`], most running first) and the key asked about.
    pub running: crate::Running,
    /// Its rate buckets that are not full.
    pub buckets: crate::Buckets,
    /// Ready jobs of the keys at their limit (counted up to [`WAITING_COUNT_MAX`]).
    pub waiting_on_keys: u64,
}

/// Keys at their limit a [`QueueFlow`] lists.
pub const KEYS_AT_LIMIT_MAX: usize = 100;
/// Ready jobs held back by keys that a [`QueueFlow`] counts before it stops.
pub const WAITING_COUNT_MAX: u64 = 10_000;

/// What a worker says about itself.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct WorkerInfo {
    /// Unique id, such as `host:pid:random`.
    pub id: String,
    /// Stable name (the host name unless set), for health checks.
    #[serde(default)]
    pub name: String,
    /// Host name.
    pub host: String,
    /// Process id.
    pub pid: u32,
    /// Queues it polls.
    pub queues: Vec<String>,
    /// Kinds it handles (empty: any).
    pub kinds: Vec<String>,
    /// Jobs it runs at once.
    pub concurrency: u32,
    /// Its software version.
    pub version: String,
}

/// Register a worker.
#[derive(Debug, Clone)]
pub struct WorkerRegisterParams {
    /// The worker.
    pub worker: WorkerInfo,
    /// The current time.
    pub now: Timestamp,
}

/// A known worker.
#[derive(Debug, Clone, PartialEq)]
pub struct Worker {
    /// What it said about itself.
    pub info: WorkerInfo,
    /// First registration.
    pub started_at: Timestamp,
    /// Last fetch, heartbeat or registration.
    pub last_seen: Timestamp,
}

/// Create or update a schedule.
#[derive(Debug, Clone)]
pub struct ScheduleUpsertParams {
    /// The definition (validated by the caller).
    pub schedule: ScheduleDef,
    /// The current time: a new schedule, or one whose expression or zone changed, counts its
    /// slots from here (earlier slots are not "missed").
    pub now: Timestamp,
}

/// A schedule with its bookkeeping.
#[derive(Debug, Clone, PartialEq)]
pub struct ScheduleRecord {
    /// The definition.
    pub schedule: ScheduleDef,
    /// Slots at or before this are done.
    pub last_slot: Timestamp,
    /// Slots enqueued on time.
    pub fired: u64,
    /// Slots that passed while no scheduler ran (or while disabled).
    pub missed: u64,
    /// Missed slots enqueued late.
    pub recovered: u64,
    /// The most recent job it enqueued.
    pub last_job: Option<JobId>,
    /// Last change to the definition or bookkeeping.
    pub updated_at: Timestamp,
}

/// Enqueue a schedule's due slots and advance its bookkeeping, atomically.
#[derive(Debug, Clone)]
pub struct ScheduleFireParams {
    /// The schedule.
    pub name: String,
    /// The `last_slot` the plan was made from: if another scheduler advanced it meanwhile,
    /// nothing happens (it fired these slots).
    pub expected_last: Timestamp,
    /// The new `last_slot`.
    pub last_slot: Timestamp,
    /// One job per slot to fire (each with its `cron:<name>:<slot>` unique key).
    pub jobs: Vec<NewJob>,
    /// How many of `jobs` recover missed slots.
    pub recovered: u64,
    /// Missed slots not fired.
    pub skipped: u64,
    /// Retry-policy layers and limits for the jobs.
    pub defaults: Arc<PolicyDefaults>,
    /// The current time.
    pub now: Timestamp,
}

/// What firing did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ScheduleFired {
    /// The schedule had already been advanced past `expected_last` by another scheduler.
    pub lost_race: bool,
    /// The jobs (a slot whose job already existed comes back as a duplicate).
    pub jobs: Vec<Inserted>,
}

/// How many jobs a queue holds of one kind in one state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobCount {
    /// The queue.
    pub queue: String,
    /// The kind.
    pub kind: String,
    /// The state.
    pub state: JobState,
    /// How many.
    pub count: u64,
}

/// What the store knows about its own health.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreHealth {
    /// The database's schema version.
    pub schema_version: i64,
    /// The version this binary expects.
    pub schema_expected: i64,
    /// The database server's own clock, where it has one apart from this node's (the
    /// doctor warns when the two differ by more than a second).
    pub database_time: Option<Timestamp>,
}

/// Dead jobs that failed with the same cause.
#[derive(Debug, Clone, PartialEq)]
pub struct ErrorGroup {
    /// The fingerprint of their last error.
    pub fingerprint: String,
    /// One of their messages, as an example.
    pub message: String,
    /// How many dead jobs.
    pub count: u64,
    /// Their kinds.
    pub kinds: Vec<String>,
    /// The most recent death.
    pub latest: Timestamp,
    /// The earliest death (of those read).
    pub first: Timestamp,
    /// When the latest of them died, newest first (at most
    /// [`crate::RECENT_DEATHS`], in the order the backend read them).
    pub recent: Vec<Timestamp>,
}

/// Most snoozes a job may have unless configured.
pub const MAX_SNOOZES_DEFAULT: u32 = 100;

/// Save a running job's checkpoint.
#[derive(Debug, Clone)]
pub struct JobCheckpointParams {
    /// The lease held.
    pub lease: LeaseRef,
    /// The checkpoint (at most [`crate::CHECKPOINT_MAX_BYTES`] of JSON).
    pub checkpoint: Value,
    /// The current time.
    pub now: Timestamp,
}

/// Read one job.
#[derive(Debug, Clone)]
pub struct JobGetParams {
    /// The job.
    pub id: JobId,
}

/// List running jobs, soonest lease expiry first.
#[derive(Debug, Clone)]
pub struct JobListRunningParams {
    /// At most this many.
    pub limit: usize,
}

/// Find when a waiting fetch should look again.
#[derive(Debug, Clone)]
pub struct JobNextDueParams {
    /// The queues the fetch polls.
    pub queues: Vec<String>,
}

/// Read the job counts.
#[derive(Debug, Clone, Default)]
pub struct JobCountsParams {}

/// List known workers.
#[derive(Debug, Clone, Default)]
pub struct WorkerListParams {}

/// Group dead jobs by cause.
#[derive(Debug, Clone, Default)]
pub struct DeadGroupsParams {
    /// Only jobs that died at or after this time (all when absent).
    pub since: Option<Timestamp>,
    /// Only the latest this many of them (all when absent): a bounded read for callers that
    /// run often, such as the doctor, however many jobs died.
    pub latest: Option<usize>,
}

/// List schedules.
#[derive(Debug, Clone, Default)]
pub struct ScheduleListParams {}

/// Remove a schedule.
#[derive(Debug, Clone)]
pub struct ScheduleDeleteParams {
    /// Its name.
    pub name: String,
}

/// Check the store's health.
#[derive(Debug, Clone, Default)]
pub struct StoreHealthParams {}

/// Bring the schema up to date.
#[derive(Debug, Clone)]
pub struct StoreMigrateParams {
    /// The current time (recorded with each applied migration).
    pub now: Timestamp,
}

/// What migrating did to the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationReport {
    /// The version before.
    pub from: i64,
    /// The version now.
    pub to: i64,
}

/// One snooze: run a running job again later without using an attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Snooze {
    /// The lease held.
    pub lease: LeaseRef,
    /// How long to wait.
    pub delay: Duration,
}

impl Snooze {
    /// The state-machine event this snooze is, for a job allowed `limit` snoozes.
    pub fn event(self, limit: u32) -> (JobId, Event) {
        let event = Event::Snoozed {
            token: self.lease.token,
            delay: self.delay,
            limit,
        };
        (self.lease.job, event)
    }
}

/// Snooze running jobs.
#[derive(Debug, Clone)]
pub struct JobSnoozeManyParams {
    /// The snoozes.
    pub snoozes: Vec<Snooze>,
    /// Most snoozes a job may have; the one beyond counts as a failed attempt.
    pub max_snoozes: u32,
    /// The current time.
    pub now: Timestamp,
}

/// How a grouping backend has served writes so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WriteStats {
    /// Transactions committed.
    pub transactions: u64,
    /// Write requests served (their ratio to `transactions` is the commit batch size).
    pub requests: u64,
    /// Parked claims run inside the transaction that made their jobs ready (see
    /// [`Store::job_claim_park`](crate::Store::job_claim_park)).
    pub parked_claims: u64,
}

/// Try to become (or stay) the leader of `name`.
#[derive(Debug, Clone)]
pub struct LeaderElectParams {
    /// What is led, such as `maintenance`.
    pub name: String,
    /// Who asks (a node id).
    pub holder: String,
    /// How long the leadership lasts without a renewal.
    pub ttl: Duration,
    /// The current time.
    pub now: Timestamp,
}

/// Extend a leadership this holder has.
#[derive(Debug, Clone)]
pub struct LeaderRenewParams {
    /// What is led.
    pub name: String,
    /// The holder renewing.
    pub holder: String,
    /// New length from now.
    pub ttl: Duration,
    /// The current time.
    pub now: Timestamp,
}

/// Read who leads.
#[derive(Debug, Clone)]
pub struct LeaderGetParams {
    /// What is led.
    pub name: String,
    /// Who asks (its `is_leader` is answered).
    pub holder: String,
}

/// Give a leadership up at once.
#[derive(Debug, Clone)]
pub struct LeaderResignParams {
    /// What is led.
    pub name: String,
    /// The holder resigning (nothing happens if someone else holds it).
    pub holder: String,
    /// The current time.
    pub now: Timestamp,
}

/// Who leads, after an election or renewal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Leadership {
    /// The current holder.
    pub holder: String,
    /// When it lapses unless renewed.
    pub expires_at: Timestamp,
    /// Whether the caller is the holder.
    pub is_leader: bool,
}

impl Leadership {
    /// Nobody leads (the row is gone: resigned, or never taken).
    pub fn nobody(now: Timestamp) -> Self {
        Self {
            holder: String::new(),
            expires_at: now,
            is_leader: false,
        }
    }
}
