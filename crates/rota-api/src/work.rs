//! The worker protocol: fetch (long poll), heartbeat, complete, fail.

use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

/// Lease jobs. Returns as soon as at least one job is ready, or when `wait` elapses.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FetchRequest {
    /// The worker's id (unique per process), recorded on each lease.
    pub worker: String,
    /// Queues to take from.
    pub queues: Vec<String>,
    /// Kinds this worker handles; empty means every kind.
    #[serde(default)]
    pub kinds: Vec<String>,
    /// At most this many jobs (1..=1000; default 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(minimum = 1, maximum = 1000)]
    pub max: Option<u32>,
    /// How long to wait for a job, such as `30s` (default 0: answer at once; at most 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub wait: Option<String>,
    /// About the worker, recorded when it is first seen: its stable name (the host name
    /// unless set), which health checks ask for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// Its host.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    /// Its process id.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pid: Option<u32>,
    /// How many jobs it runs at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Its software and version, such as `rota-worker 0.1.0`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub version: Option<String>,
    /// Also answer each job's whole document (`job`: history, policy, timestamps); by
    /// default a fetch answers only what running the job needs.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub full: bool,
}

/// Leased jobs; each carries its `lease_token`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FetchResponse {
    /// The jobs (possibly none, when `wait` elapsed).
    pub jobs: Vec<LeasedJob>,
    /// The lease length granted, such as `30s`: heartbeat well within it.
    pub lease: String,
}

/// A leased job as a worker needs it: what to run, with what, which attempt, and the lease
/// to report it with. The whole job (history, policy, timestamps) is `GET /v1/jobs/{id}`;
/// leaving it out makes a fetch answer about a third of the bytes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LeasedJob {
    /// UUIDv7.
    pub id: String,
    /// Its queue.
    pub queue: String,
    /// Its handler name.
    pub kind: String,
    /// The handler's input.
    #[schema(value_type = Value)]
    pub args: Value,
    /// This attempt (1 for the first).
    pub attempt: u32,
    /// The effective attempt limit.
    pub max_attempts: u32,
    /// The lease's fencing token: present it to heartbeat, complete or fail.
    pub lease_token: u64,
    /// When the lease lapses unless heartbeated.
    #[schema(value_type = String, format = DateTime)]
    pub lease_expires_at: jiff::Timestamp,
    /// Per-attempt time limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// The checkpoint an earlier attempt saved.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub checkpoint: Option<Value>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Flow-control key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// The whole job, when the fetch asked for it (`full`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<Box<crate::JobView>>,
}

impl LeasedJob {
    /// The job as leased; `None` for a job without a lease (not one a fetch returns).
    pub fn of(job: rota_core::Job) -> Option<Self> {
        Self::with(job, false)
    }

    /// The job as leased, with its whole document when `full`.
    pub fn with(job: rota_core::Job, full: bool) -> Option<Self> {
        let whole = full.then(|| Box::new(crate::JobView::from(job.clone())));
        let lease = job.lease?;
        Some(Self {
            id: job.id.to_string(),
            queue: job.queue,
            kind: job.kind,
            args: job.args,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            lease_token: lease.token,
            lease_expires_at: lease.expires_at,
            timeout: job.timeout.map(rota_core::format_duration),
            checkpoint: job.checkpoint,
            tags: job.tags,
            concurrency_key: job.concurrency_key,
            job: whole,
        })
    }
}

/// A job and the lease token it was fetched with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct LeaseToken {
    /// The job id.
    #[schema(value_type = String)]
    pub job: rota_core::JobId,
    /// The fencing token from the fetch.
    pub token: u64,
}

/// Extend leases.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    /// The worker's id.
    pub worker: String,
    /// The leases held.
    pub leases: Vec<LeaseToken>,
}

/// One heartbeat answer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatOutcome {
    /// The job.
    pub job: String,
    /// Whether the lease is still held (false: stop working on it).
    pub held: bool,
    /// Someone asked to cancel the job: stop and report failure.
    pub cancel_requested: bool,
    /// Why the lease is not held.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<crate::Problem>,
}

/// Heartbeat answers, in request order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatResponse {
    /// One per lease.
    pub results: Vec<HeartbeatOutcome>,
}

/// One successful attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompletionRequest {
    /// The job id.
    #[schema(value_type = String)]
    pub job: rota_core::JobId,
    /// The fencing token from the fetch.
    pub token: u64,
    /// The handler's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub result: Option<Value>,
}

/// Record successful attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    /// The completions.
    pub completions: Vec<CompletionRequest>,
}

/// Record successful attempts and lease the next jobs in one request (one transaction
/// where the backend allows): a worker's steady state.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteAndFetchRequest {
    /// The completions, recorded first (a place they free in a limited queue counts).
    #[serde(default)]
    pub completions: Vec<CompletionRequest>,
    /// The fetch, made after them. With completions the call answers at once, jobs or
    /// none (their outcomes are not held back by a long poll): `wait` applies only when
    /// `completions` is empty.
    pub fetch: FetchRequest,
}

/// The completions' outcomes and the jobs leased.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CompleteAndFetchResponse {
    /// One per completion, in request order.
    pub results: Vec<crate::ItemOutcome>,
    /// The jobs leased (possibly none, when `wait` elapsed).
    pub jobs: Vec<LeasedJob>,
    /// The lease length granted, such as `30s`.
    pub lease: String,
    /// Why no jobs were leased, when the fetch half failed (an undeclared queue); the
    /// completions in `results` stand.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fetch_error: Option<crate::Problem>,
}

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailureRequest {
    /// The job id.
    #[schema(value_type = String)]
    pub job: rota_core::JobId,
    /// The fencing token from the fetch.
    pub token: u64,
    /// The error message.
    pub message: String,
    /// The backtrace, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backtrace: Option<String>,
    /// Do not retry: the job goes to dead.
    #[serde(default)]
    pub discard: bool,
    /// Instead of failing, run again after this long without using an attempt (snooze).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snooze: Option<String>,
}

/// Record failed attempts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    /// The failures.
    pub failures: Vec<FailureRequest>,
}

/// Give leases back unrun (graceful shutdown).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HandBackRequest {
    /// The leases.
    pub leases: Vec<LeaseToken>,
}

/// Save a running job's checkpoint: its next attempt receives it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CheckpointRequest {
    /// The fencing token from the fetch.
    pub token: u64,
    /// Where to resume from (any JSON, at most 64 KiB).
    #[schema(value_type = Value)]
    pub checkpoint: Value,
}

/// Report progress on a running job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ProgressRequest {
    /// The fencing token from the fetch.
    pub token: u64,
    /// 0..=100.
    pub percent: u8,
    /// What the handler is doing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}
