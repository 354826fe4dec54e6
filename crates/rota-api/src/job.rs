//! Jobs on the wire: what producers send, and how jobs are shown.

use jiff::Timestamp;
use rota_core::{
    format_duration, parse_duration_field, Backoff, Job, JobError, NewJob, Progress, RetryOverride,
    ValidationError,
};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use utoipa::ToSchema;

use crate::Problem;

/// A job to enqueue.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewJobRequest {
    /// The declared queue.
    pub queue: String,
    /// The handler name, such as `email.send`.
    pub kind: String,
    /// The handler's input (any JSON).
    #[serde(default)]
    #[schema(value_type = Value)]
    pub args: Value,
    /// 0..=9, lower runs first; 5 when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<u8>,
    /// Run no earlier than this RFC 3339 time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub run_at: Option<Timestamp>,
    /// Run no earlier than this long from now, such as `5m` (not with `run_at`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub delay: Option<String>,
    /// Attempts, the first included.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_attempts: Option<u32>,
    /// Backoff: `{"intervals": ["30s", "60s"]}`, `{"fixed": {"interval": "10s"}}` or
    /// `{"exponential": {"initial": "15s", "factor": 2, "max": "1h", "jitter": 0.2}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<crate::BackoffSchema>)]
    pub backoff: Option<Backoff>,
    /// Per-attempt time limit, such as `10m`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Deduplication key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_key: Option<String>,
    /// Keep the key taken this long after the job finished, such as `1h`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_for: Option<String>,
    /// Labels.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub tags: Vec<String>,
    /// Flow-control key, such as `customer:42`: the queue's `key_concurrency` and `key_rate`
    /// limit the jobs sharing it, and claims take turns between keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// Collapse enqueues with the same key less than `period` apart into one job that runs
    /// `period` after the last, with its arguments, and at most `max_wait` after the first.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub debounce: Option<DebounceRequest>,
    /// Accept at most one job per key per `period`; the others are answered as duplicates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub throttle: Option<ThrottleRequest>,
}

/// A debounce: `{"key": "reindex:42", "period": "5s", "max_wait": "1m"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct DebounceRequest {
    /// What identifies the burst.
    pub key: String,
    /// Quiet time after the last enqueue, such as `5s`.
    pub period: String,
    /// Longest the job may be put off after the first enqueue, such as `1m`.
    pub max_wait: String,
}

/// A throttle: `{"key": "digest:42", "period": "1h"}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ThrottleRequest {
    /// What is throttled.
    pub key: String,
    /// One job per this long, such as `1h`.
    pub period: String,
}

fn duration_field(
    field: &str,
    raw: &Option<String>,
) -> Result<Option<std::time::Duration>, ValidationError> {
    raw.as_deref()
        .map(|text| parse_duration_field(field, text))
        .transpose()
}

impl NewJobRequest {
    /// The domain job, resolving `delay` against `now`. Errors name the field.
    pub fn into_new_job(self, now: Timestamp) -> Result<NewJob, ValidationError> {
        let delay = duration_field("delay", &self.delay)?;
        let run_at = match (self.run_at, delay) {
            (Some(_), Some(_)) => {
                return Err(ValidationError::new(
                    "delay",
                    "give either run_at or delay, not both",
                ))
            }
            (Some(at), None) => Some(at),
            (None, Some(d)) => {
                rota_core::validation::validate_delay("delay", d)?;
                Some(rota_core::add_duration(now, d))
            }
            (None, None) => None,
        };
        Ok(NewJob {
            timeout: duration_field("timeout", &self.timeout)?,
            unique_for: duration_field("unique_for", &self.unique_for)?,
            queue: self.queue,
            kind: self.kind,
            args: self.args,
            priority: self.priority,
            run_at,
            retry: RetryOverride {
                max_attempts: self.max_attempts,
                backoff: self.backoff,
            },
            unique_key: self.unique_key,
            tags: self.tags,
            concurrency_key: self.concurrency_key,
            debounce: self
                .debounce
                .map(|d| {
                    Ok::<_, ValidationError>(rota_core::Debounce {
                        period: parse_duration_field("debounce.period", &d.period)?,
                        max_wait: parse_duration_field("debounce.max_wait", &d.max_wait)?,
                        key: d.key,
                    })
                })
                .transpose()?,
            throttle: self
                .throttle
                .map(|t| {
                    Ok::<_, ValidationError>(rota_core::Throttle {
                        period: parse_duration_field("throttle.period", &t.period)?,
                        key: t.key,
                    })
                })
                .transpose()?,
            origin: None,
        })
    }
}

/// Enqueue many jobs at once: all are stored, or none.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct EnqueueManyRequest {
    /// The jobs, in order.
    pub jobs: Vec<NewJobRequest>,
}

/// One enqueued job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct Enqueued {
    /// The job as stored (the existing one when `duplicate`).
    pub job: JobView,
    /// Its unique key matched an unfinished job; nothing new was stored.
    pub duplicate: bool,
    /// Stored beyond its queue's `max_depth` or `max_age` (the queue accepts overflow).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub warning: Option<String>,
}

/// The jobs of an enqueue-many, in request order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EnqueueManyResponse {
    /// One entry per requested job.
    pub jobs: Vec<Enqueued>,
}

/// The minimal answer of an enqueue-many (`?return=ids`, or `Prefer: return=minimal`): the
/// jobs' ids in request order, without their documents.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EnqueuedIds {
    /// One id per requested job, in order (an existing job's id for a duplicate).
    pub ids: Vec<String>,
    /// The positions (in `ids`) whose unique key matched an existing job: nothing new was
    /// stored for them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub duplicates: Vec<usize>,
    /// Warnings, such as a queue that accepted jobs beyond its `max_depth`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
}

/// The answer of an enqueue-many: the full jobs, or only their ids when asked.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(untagged)]
pub enum EnqueueManyAnswer {
    /// Every job's document (the default).
    Jobs(EnqueueManyResponse),
    /// Only the ids (`?return=ids` or `Prefer: return=minimal`).
    Ids(EnqueuedIds),
}

/// One failed attempt.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobErrorView {
    /// The attempt (1-based).
    pub attempt: u32,
    /// When it failed.
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// The message.
    pub message: String,
    /// The backtrace, if any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub backtrace: Option<String>,
    /// The worker that ran it.
    pub worker: String,
    /// The error's group: the same cause with other ids and numbers has the same one.
    #[serde(default)]
    pub fingerprint: String,
}

impl From<JobError> for JobErrorView {
    fn from(e: JobError) -> Self {
        Self {
            attempt: e.attempt,
            at: e.at,
            message: e.message,
            backtrace: e.backtrace,
            worker: e.worker,
            fingerprint: e.fingerprint,
        }
    }
}

/// One snooze in a job's history.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SnoozeView {
    /// When the handler snoozed.
    #[schema(value_type = String, format = DateTime)]
    pub at: Timestamp,
    /// The attempt it was in.
    pub attempt: u32,
    /// When the job runs again.
    #[schema(value_type = String, format = DateTime)]
    pub until: Timestamp,
}

/// A job as the API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobView {
    /// UUIDv7.
    pub id: String,
    /// Its queue.
    pub queue: String,
    /// Its handler name.
    pub kind: String,
    /// The handler's input.
    #[schema(value_type = Value)]
    pub args: Value,
    /// 0..=9, lower first.
    pub priority: u8,
    /// Its state.
    pub state: crate::JobState,
    /// Attempts started.
    pub attempt: u32,
    /// The effective attempt limit.
    pub max_attempts: u32,
    /// The effective backoff.
    #[schema(value_type = crate::BackoffSchema)]
    pub backoff: Backoff,
    /// Per-attempt time limit.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<String>,
    /// Deduplication key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unique_key: Option<String>,
    /// Labels.
    pub tags: Vec<String>,
    /// Flow-control key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency_key: Option<String>,
    /// Why a ready job is not running yet, when a limit holds it back, such as
    /// `key customer:42 at its limit 5/5`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub waiting: Option<String>,
    /// Latest progress, 0..=100.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress: Option<u8>,
    /// Latest progress message.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub progress_message: Option<String>,
    /// The handler's result.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub result: Option<Value>,
    /// Snoozes of the current series of attempts.
    #[serde(default)]
    pub snoozes: u32,
    /// The latest snoozes (up to 20), oldest first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub snoozed: Vec<SnoozeView>,
    /// The latest checkpoint its handler saved (given to the next attempt).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<Value>)]
    pub checkpoint: Option<Value>,
    /// Every failed attempt, oldest first.
    pub errors: Vec<JobErrorView>,
    /// The worker holding the lease, when running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker: Option<String>,
    /// The lease's fencing token, when running: present it to heartbeat, complete or fail.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub lease_token: Option<u64>,
    /// When the lease lapses, when running.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub lease_expires_at: Option<Timestamp>,
    /// A cancel was requested while it ran.
    pub cancel_requested: bool,
    /// When it may next run.
    #[schema(value_type = String, format = DateTime)]
    pub run_at: Timestamp,
    /// When it was enqueued.
    #[schema(value_type = String, format = DateTime)]
    pub created_at: Timestamp,
    /// When its latest attempt started.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub attempted_at: Option<Timestamp>,
    /// When it reached a final state.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub finished_at: Option<Timestamp>,
    /// The schedule that enqueued it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub schedule: Option<String>,
    /// The schedule slot it was enqueued for.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Option<String>, format = DateTime)]
    pub slot: Option<Timestamp>,
}

impl From<Job> for JobView {
    fn from(job: Job) -> Self {
        let (progress, progress_message) = match job.progress {
            Some(Progress { percent, message }) => (Some(percent), message),
            None => (None, None),
        };
        Self {
            id: job.id.to_string(),
            queue: job.queue,
            kind: job.kind,
            args: job.args,
            priority: job.priority,
            state: job.state,
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            backoff: job.backoff,
            timeout: job.timeout.map(format_duration),
            unique_key: job.unique_key,
            tags: job.tags,
            concurrency_key: job.concurrency_key,
            waiting: None,
            progress,
            progress_message,
            result: job.result,
            errors: job.errors.into_iter().map(Into::into).collect(),
            worker: job.lease.as_ref().map(|l| l.worker.clone()),
            lease_token: job.lease.as_ref().map(|l| l.token),
            lease_expires_at: job.lease.as_ref().map(|l| l.expires_at),
            snoozes: job.snoozes,
            snoozed: job
                .snooze_log
                .iter()
                .map(|s| SnoozeView {
                    at: s.at,
                    attempt: s.attempt,
                    until: s.until,
                })
                .collect(),
            checkpoint: job.checkpoint,
            cancel_requested: job.cancel_requested,
            run_at: job.run_at,
            created_at: job.created_at,
            attempted_at: job.attempted_at,
            finished_at: job.finished_at,
            schedule: job.origin.as_ref().map(|o| o.schedule.clone()),
            slot: job.origin.map(|o| o.slot),
        }
    }
}

/// A page of jobs, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct JobPageView {
    /// The jobs.
    pub jobs: Vec<JobView>,
    /// Pass as `after` for the next page; absent on the last page.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub next: Option<String>,
}

/// Select jobs by id or by filter (retry, purge).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct JobSelection {
    /// These jobs.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub ids: Vec<String>,
    /// Or every job on these queues...
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub queues: Vec<String>,
    /// ...of these kinds.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub kinds: Vec<String>,
    /// ...whose last error is in this group (fingerprint).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
}

/// The outcome for one job of a multi-job operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ItemOutcome {
    /// The job.
    pub job: String,
    /// Its state afterwards, when the operation succeeded for it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<crate::JobState>,
    /// Why it failed for this job.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Problem>,
}

/// Outcomes, in request order.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ItemOutcomes {
    /// One per job.
    pub results: Vec<ItemOutcome>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_refused() {
        let err = serde_json::from_str::<NewJobRequest>(r#"{"queue":"q","kind":"k","priorty":1}"#)
            .unwrap_err();
        assert!(err.to_string().contains("priorty"), "{err}");
    }

    #[test]
    fn bad_durations_name_their_field() {
        let req = NewJobRequest {
            queue: "q".into(),
            kind: "k".into(),
            timeout: Some("soon".into()),
            ..Default::default()
        };
        let err = req.into_new_job(Timestamp::UNIX_EPOCH).unwrap_err();
        assert_eq!(err.field, "timeout");
        assert!(err.to_string().contains("\"soon\""), "{err}");
    }

    #[test]
    fn delay_is_resolved_against_now() {
        let req = NewJobRequest {
            queue: "q".into(),
            kind: "k".into(),
            delay: Some("5m".into()),
            ..Default::default()
        };
        let job = req.into_new_job(Timestamp::UNIX_EPOCH).unwrap();
        assert_eq!(job.run_at.unwrap().as_second(), 300);
    }
}
