//! Enqueue rules every backend shares: validation, policy resolution, uniqueness.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use rota_core::validation::{nearest_name, validate_new_job};
use rota_core::{Job, JobId, Limits, NewJob, RetryOverride, RetryPolicy};

use crate::{QueueConfig, StoreError};

/// The server-wide layers of retry policy resolution, and payload limits.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct PolicyDefaults {
    /// The server default (the least specific layer).
    pub retry: RetryPolicy,
    /// Per-kind settings (between job and queue).
    pub kinds: HashMap<String, RetryOverride>,
    /// Payload limits.
    pub limits: Limits,
}

/// Validates `new` and resolves it against its queue's settings into the job to store.
/// `queue` is `None` when the queue is not declared; the caller then reports
/// [`queue_not_declared`] with the names it knows.
pub fn check_insert(
    new: NewJob,
    queue: Option<&QueueConfig>,
    defaults: &PolicyDefaults,
    now: Timestamp,
) -> Result<Job, StoreError> {
    validate_new_job(&new, &defaults.limits)?;
    let Some(queue) = queue else {
        return Err(StoreError::QueueNotDeclared {
            queue: new.queue,
            suggestion: None,
        });
    };
    let policy = RetryPolicy::resolve(
        &new.retry,
        defaults.kinds.get(&new.kind),
        Some(&queue.retry),
        &defaults.retry,
    );
    let mut new = new;
    if new.timeout.is_none() {
        new.timeout = queue.timeout;
    }
    Ok(Job::from_new(new, JobId::new(now), policy, now))
}

/// The error for an undeclared `queue`, naming the closest of the `declared` ones.
pub fn queue_not_declared(queue: &str, declared: &[String]) -> StoreError {
    StoreError::QueueNotDeclared {
        queue: queue.to_owned(),
        suggestion: nearest_name(queue, declared.iter().map(String::as_str)).map(str::to_owned),
    }
}

/// Whether `existing`, which has the same unique key, makes a new enqueue a duplicate: it
/// does while `existing` is unfinished, and for `unique_for` after it finished.
pub fn unique_key_blocks(existing: &Job, unique_for: Option<Duration>, now: Timestamp) -> bool {
    match existing.finished_at {
        None => true,
        Some(finished) => {
            unique_for.is_some_and(|window| rota_core::add_duration(finished, window) > now)
        }
    }
}
