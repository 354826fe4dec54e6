//! Queues and workers on the wire.

use std::collections::BTreeMap;

use jiff::Timestamp;
use rota_core::RetryOverride;
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// Declare a queue, or update its settings: the settings given change, the others stay.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct QueueDeclareRequest {
    /// Queue-level attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Queue-level backoff (same shapes as on a job).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::BackoffSchema>)]
    pub backoff: Option<rota_core::Backoff>,
    /// Lease length for jobs fetched from it, such as `30s`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    /// Default per-attempt time limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Most jobs of this queue running at once, across every worker and node (at least 1).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Completed jobs are kept this long, such as `7d` (the server's retention otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_retention: Option<String>,
    /// Cancelled jobs are kept this long (the server's retention otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_retention: Option<String>,
    /// Dead jobs are deleted this long after they died (kept until purged otherwise).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_retention: Option<String>,
    /// Most running jobs sharing one `concurrency_key`, across every worker and node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_concurrency: Option<u32>,
    /// Jobs a key gets per round when claims take turns between keys (1 when unlisted).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub key_weights: BTreeMap<String, u32>,
    /// Jobs of the queue started per period, such as `100/1m` or `10/1s burst 5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    /// Jobs started per period for each `concurrency_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_rate: Option<String>,
    /// Jobs started per period, per kind: `{"email.send": "100/1m"}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kind_rates: BTreeMap<String, String>,
    /// Most ready and scheduled jobs; an enqueue beyond it overflows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<u64>,
    /// Longest the oldest ready job may wait, such as `10m`; an enqueue beyond it overflows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    /// What an enqueue that overflows gets: `reject` (429, the default) or `accept` (stored,
    /// with a warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overflow: Option<String>,
}

impl QueueDeclareRequest {
    /// The queue-level retry layer.
    pub fn retry(&self) -> RetryOverride {
        RetryOverride {
            max_attempts: self.max_attempts,
            backoff: self.backoff.clone(),
        }
    }
}

/// A queue and what is on it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueueView {
    /// Its name.
    pub name: String,
    /// Paused queues hand out no jobs.
    pub paused: bool,
    /// Jobs per state.
    pub counts: BTreeMap<String, u64>,
    /// Seconds the oldest ready job has waited.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub oldest_ready_age_seconds: Option<f64>,
    /// Queue-level attempts.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Queue-level backoff.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::BackoffSchema>)]
    pub backoff: Option<rota_core::Backoff>,
    /// Lease length.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease: Option<String>,
    /// Default per-attempt time limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Most jobs of this queue running at once, across every worker and node (absent: no
    /// limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<u32>,
    /// Completed jobs kept this long (absent: the server's retention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub completed_retention: Option<String>,
    /// Cancelled jobs kept this long (absent: the server's retention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled_retention: Option<String>,
    /// Dead jobs deleted this long after they died (absent: the server's retention).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dead_retention: Option<String>,
    /// Most running jobs sharing one `concurrency_key`, across every worker and node.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_concurrency: Option<u32>,
    /// Jobs a key gets per round when claims take turns between keys (1 when unlisted).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub key_weights: BTreeMap<String, u32>,
    /// Jobs of the queue started per period, such as `100/1m` or `10/1s burst 5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rate: Option<String>,
    /// Jobs started per period for each `concurrency_key`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_rate: Option<String>,
    /// Jobs started per period, per kind: `{"email.send": "100/1m"}`.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub kind_rates: BTreeMap<String, String>,
    /// Most ready and scheduled jobs; an enqueue beyond it overflows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_depth: Option<u64>,
    /// Longest the oldest ready job may wait, such as `10m`; an enqueue beyond it overflows.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age: Option<String>,
    /// What an enqueue that overflows gets: `reject` (429, the default) or `accept` (stored,
    /// with a warning).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub overflow: Option<String>,
    /// Running jobs of the queue.
    #[serde(default)]
    pub running: u64,
    /// Keys at their `key_concurrency` now, with their running jobs (at most 100).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub keys_at_limit: Vec<KeyAtLimit>,
    /// Ready jobs held back by a limit now (≈: counted up to 10,000), and why.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<WaitingView>,
    /// Enqueues this queue refused or accepted beyond `max_depth` or `max_age` since the
    /// server started.
    #[serde(default)]
    pub overflows: u64,
}

/// A key at its concurrency limit.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct KeyAtLimit {
    /// The key.
    pub key: String,
    /// Its running jobs.
    pub running: u64,
    /// The limit.
    pub limit: u32,
}

/// Ready jobs a limit holds back.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct WaitingView {
    /// How many.
    pub jobs: u64,
    /// The limit, such as `queue at its concurrency 4/4`.
    pub reason: String,
}

/// Every queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct QueueList {
    /// The queues, by name.
    pub queues: Vec<QueueView>,
}

/// A known worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerView {
    /// Its id (unique per process).
    pub id: String,
    /// Its stable name (`rota worker --name`, the host name by default), as checked by
    /// `rota health --worker NAME`.
    #[serde(default)]
    pub name: String,
    /// It fetched or heartbeated within the server's lease length.
    #[serde(default)]
    pub alive: bool,
    /// Queues it polls.
    pub queues: Vec<String>,
    /// Kinds it handles (empty: any).
    pub kinds: Vec<String>,
    /// Its host.
    #[serde(default)]
    pub host: String,
    /// Its process id.
    #[serde(default)]
    pub pid: u32,
    /// Jobs it runs at once.
    #[serde(default)]
    pub concurrency: u32,
    /// Its software version.
    #[serde(default)]
    pub version: String,
    /// First seen.
    #[schema(value_type = String, format = DateTime)]
    pub started_at: Timestamp,
    /// Last fetch or heartbeat.
    #[schema(value_type = String, format = DateTime)]
    pub last_seen: Timestamp,
}

/// Every known worker, and which server node runs maintenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerList {
    /// The workers, most recently seen first.
    pub workers: Vec<WorkerView>,
    /// The server node that answered.
    #[serde(default)]
    pub node: String,
    /// The node that leads maintenance (rescuer, pruner, scheduler), if one does now.
    #[serde(default)]
    pub leader: Option<LeaderView>,
}

/// The server node that leads maintenance.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct LeaderView {
    /// Its node id.
    pub node: String,
    /// When its leadership lapses unless renewed (every few seconds while it lives).
    #[schema(value_type = String, format = DateTime)]
    pub expires_at: Timestamp,
}

/// How many jobs an operation touched.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct Count {
    /// The number.
    pub count: u64,
}

/// Dead jobs with the same cause.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorGroupView {
    /// The group (fingerprint): pass it as `group` to list, retry or purge.
    pub group: String,
    /// One of the messages, as an example.
    pub message: String,
    /// How many dead jobs.
    pub count: u64,
    /// Their kinds.
    pub kinds: Vec<String>,
    /// The most recent.
    #[schema(value_type = String, format = DateTime)]
    pub latest: Timestamp,
}

/// Error groups, largest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ErrorGroupList {
    /// The groups.
    pub groups: Vec<ErrorGroupView>,
}

/// One doctor verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FindingView {
    /// The check.
    pub check: String,
    /// ok, warn or fail.
    pub severity: crate::Severity,
    /// What was found.
    pub message: String,
    /// What to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fix: Option<String>,
}

/// Every doctor verdict.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct DoctorReport {
    /// No finding needs action.
    pub healthy: bool,
    /// One per check (several for checks that found several things).
    pub findings: Vec<FindingView>,
}

/// One readiness check.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct CheckView {
    /// store, schema or engine.
    pub name: String,
    /// Whether it passed.
    pub ok: bool,
    /// Details.
    pub detail: String,
}

/// Readiness: the checks that gate traffic, and the doctor's warnings (which do not).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ReadyReport {
    /// Every check passed.
    pub ready: bool,
    /// The checks.
    pub checks: Vec<CheckView>,
    /// Doctor findings that need attention.
    pub warnings: Vec<FindingView>,
}
