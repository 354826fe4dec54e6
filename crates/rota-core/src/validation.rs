//! Validation of what producers and operators send, with errors that name the field.

use crate::NewJob;

/// Largest `args` payload accepted unless configured otherwise (serialized JSON bytes).
pub const MAX_ARGS_BYTES_DEFAULT: usize = 512 * 1024;
/// Longest queue name.
pub const MAX_QUEUE_NAME_LEN: usize = 64;
/// Longest kind.
pub const MAX_KIND_LEN: usize = 128;
/// Longest schedule name.
pub const MAX_SCHEDULE_NAME_LEN: usize = 128;
/// Most tags on one job.
pub const MAX_TAGS: usize = 16;
/// Longest tag or unique key.
pub const MAX_LABEL_LEN: usize = 255;

/// An input that was refused, naming the field and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{field}: {message}")]
pub struct ValidationError {
    /// The offending field, e.g. `priority` or `backoff.jitter`.
    pub field: String,
    /// What is wrong and, where there is one, the fix.
    pub message: String,
}

impl ValidationError {
    /// An error about `field`.
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            field: field.into(),
            message: message.into(),
        }
    }
}

/// Size limits that deployments may tune.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest serialized `args`, in bytes.
    pub max_args_bytes: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            max_args_bytes: MAX_ARGS_BYTES_DEFAULT,
        }
    }
}

/// Checks a queue name: 1 to 64 characters of `a-z`, `0-9`, `_`, `-`, `.`, starting with a
/// letter or digit.
pub fn validate_queue_name(name: &str) -> Result<(), ValidationError> {
    validate_name("queue", name, MAX_QUEUE_NAME_LEN, |c| {
        c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '_' | '-' | '.')
    })
}

/// Checks a kind: 1 to 128 characters of ASCII letters, digits, `_`, `-`, `.`, `:`, starting
/// with a letter or digit.
pub fn validate_kind(kind: &str) -> Result<(), ValidationError> {
    validate_name("kind", kind, MAX_KIND_LEN, |c| {
        c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.' | ':')
    })
}

fn validate_name(
    field: &str,
    value: &str,
    max_len: usize,
    allowed: impl Fn(char) -> bool,
) -> Result<(), ValidationError> {
    if value.is_empty() {
        return Err(ValidationError::new(field, "must not be empty"));
    }
    if value.len() > max_len {
        return Err(ValidationError::new(
            field,
            format!("must be at most {max_len} characters, got {}", value.len()),
        ));
    }
    if !value.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        return Err(ValidationError::new(
            field,
            format!("{value:?} must start with a letter or digit"),
        ));
    }
    if let Some(bad) = value.chars().find(|c| !allowed(*c)) {
        return Err(ValidationError::new(
            field,
            format!("{value:?} contains {bad:?}, which is not allowed here"),
        ));
    }
    Ok(())
}

/// The highest (least urgent) priority.
pub const PRIORITY_MAX: u8 = 9;

/// Checks a priority: 0..=9, lower first.
pub fn validate_priority(priority: u8) -> Result<(), ValidationError> {
    if priority > PRIORITY_MAX {
        return Err(ValidationError::new(
            "priority",
            format!("must be between 0 and 9 (lower runs first), got {priority}"),
        ));
    }
    Ok(())
}

/// Shortest per-attempt timeout: a job cannot do anything in less.
pub const TIMEOUT_MIN: std::time::Duration = std::time::Duration::from_secs(1);

/// Checks that `run_at` is at most [`crate::SCHEDULE_HORIZON`] after `now`.
pub fn validate_run_at(
    field: &str,
    run_at: jiff::Timestamp,
    now: jiff::Timestamp,
) -> Result<(), ValidationError> {
    let horizon = crate::add_duration(now, crate::SCHEDULE_HORIZON);
    if run_at > horizon {
        return Err(ValidationError::new(
            field,
            format!("must be at most 10 years ahead (until {horizon}), got {run_at}"),
        ));
    }
    Ok(())
}

/// Checks that `delay` is at most [`crate::SCHEDULE_HORIZON`].
pub fn validate_delay(field: &str, delay: std::time::Duration) -> Result<(), ValidationError> {
    if delay > crate::SCHEDULE_HORIZON {
        return Err(ValidationError::new(
            field,
            format!(
                "must be at most 10 years (3650d), got {}",
                crate::format_duration(delay)
            ),
        ));
    }
    Ok(())
}

/// Checks everything a producer controls in a [`NewJob`] (its `run_at` against the horizon
/// is checked with `now` by [`validate_run_at`]).
pub fn validate_new_job(job: &NewJob, limits: &Limits) -> Result<(), ValidationError> {
    validate_queue_name(&job.queue)?;
    validate_kind(&job.kind)?;
    if let Some(priority) = job.priority {
        validate_priority(priority)?;
    }
    job.retry.validate()?;
    if let Some(timeout) = job.timeout {
        if timeout < TIMEOUT_MIN {
            return Err(ValidationError::new(
                "timeout",
                format!(
                    "must be at least {}, got {}",
                    crate::format_duration(TIMEOUT_MIN),
                    crate::format_duration(timeout)
                ),
            ));
        }
    }
    let size = serde_json::to_vec(&job.args).map(|v| v.len()).unwrap_or(0);
    if size > limits.max_args_bytes {
        return Err(ValidationError::new(
            "args",
            format!(
                "is {size} bytes, more than the limit of {} bytes: store large payloads elsewhere and pass a reference",
                limits.max_args_bytes
            ),
        ));
    }
    if job.tags.len() > MAX_TAGS {
        return Err(ValidationError::new(
            "tags",
            format!("at most {MAX_TAGS} tags, got {}", job.tags.len()),
        ));
    }
    for tag in &job.tags {
        if tag.is_empty() || tag.chars().count() > MAX_LABEL_LEN {
            return Err(ValidationError::new(
                "tags",
                format!("each tag must be 1 to {MAX_LABEL_LEN} characters, got {tag:?}"),
            ));
        }
    }
    validate_collapse(job)?;
    for (field, key) in [
        ("unique_key", &job.unique_key),
        ("concurrency_key", &job.concurrency_key),
        (
            "debounce.key",
            &job.debounce.as_ref().map(|d| d.key.clone()),
        ),
        (
            "throttle.key",
            &job.throttle.as_ref().map(|t| t.key.clone()),
        ),
    ] {
        if let Some(key) = key {
            if key.is_empty() || key.chars().count() > MAX_LABEL_LEN {
                return Err(ValidationError::new(
                    field,
                    format!("must be 1 to {MAX_LABEL_LEN} characters"),
                ));
            }
        }
    }
    Ok(())
}

/// Debounce and throttle: one of them, without a run time or unique key of its own, with
/// periods of at least a millisecond and within the schedule horizon, and a debounce's
/// `max_wait` at least its `period`.
fn validate_collapse(job: &NewJob) -> Result<(), ValidationError> {
    let (field, period) = match (&job.debounce, &job.throttle) {
        (Some(_), Some(_)) => {
            return Err(ValidationError::new(
                "throttle",
                "give either debounce or throttle, not both",
            ))
        }
        (Some(d), None) => {
            if d.max_wait < d.period {
                return Err(ValidationError::new(
                    "debounce.max_wait",
                    format!(
                        "must be at least the period ({}), got {}",
                        crate::format_duration(d.period),
                        crate::format_duration(d.max_wait)
                    ),
                ));
            }
            if job.run_at.is_some() {
                return Err(ValidationError::new(
                    "debounce",
                    "a debounced job runs a period after the last enqueue: give no run_at or delay",
                ));
            }
            ("debounce", d.max_wait.max(d.period))
        }
        (None, Some(t)) => ("throttle", t.period),
        (None, None) => return Ok(()),
    };
    if job.unique_key.is_some() {
        return Err(ValidationError::new(
            field,
            format!("{field} collapses jobs by its own key: give no unique_key"),
        ));
    }
    let shortest = match (&job.debounce, &job.throttle) {
        (Some(d), _) => d.period,
        (_, Some(t)) => t.period,
        _ => period,
    };
    if shortest < std::time::Duration::from_millis(1) {
        return Err(ValidationError::new(
            format!("{field}.period"),
            "must be at least 1ms",
        ));
    }
    if period > crate::SCHEDULE_HORIZON {
        return Err(ValidationError::new(
            field,
            "periods must be within ten years",
        ));
    }
    Ok(())
}

/// The candidate closest to `name` by edit distance, if any is close enough to be a likely
/// misspelling (at most a third of the name's length, and at least 1 edit allowed).
pub fn nearest_name<'a>(
    name: &str,
    candidates: impl IntoIterator<Item = &'a str>,
) -> Option<&'a str> {
    let budget = (name.chars().count() / 3).max(2);
    candidates
        .into_iter()
        .map(|c| (strsim::damerau_levenshtein(name, c), c))
        .filter(|(distance, _)| *distance <= budget)
        .min_by_key(|(distance, c)| (*distance, *c))
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn bad_input_names_its_field() {
        let limits = Limits::default();
        let cases = [
            (NewJob::new("", "k", json!({})), "queue"),
            (NewJob::new("Emails", "k", json!({})), "queue"),
            (NewJob::new("q", "bad kind", json!({})), "kind"),
            (NewJob::new("q", "k", json!({})).priority(10), "priority"),
            (
                NewJob::new("q", "k", json!({})).max_attempts(0),
                "max_attempts",
            ),
            (NewJob::new("q", "k", json!("x".repeat(600_000))), "args"),
            (
                NewJob::new("q", "k", json!({})).concurrency_key(""),
                "concurrency_key",
            ),
            (
                NewJob::new("q", "k", json!({})).debounce("d", secs(60), secs(1)),
                "debounce.max_wait",
            ),
            (
                NewJob::new("q", "k", json!({}))
                    .debounce("d", secs(1), secs(2))
                    .run_at(jiff::Timestamp::UNIX_EPOCH),
                "debounce",
            ),
            (
                NewJob::new("q", "k", json!({}))
                    .throttle("t", secs(1))
                    .unique_key("u"),
                "throttle",
            ),
            (
                NewJob::new("q", "k", json!({}))
                    .throttle("t", secs(1))
                    .debounce("d", secs(1), secs(1)),
                "throttle",
            ),
            (
                NewJob::new("q", "k", json!({})).throttle("t", secs(0)),
                "throttle.period",
            ),
            (
                NewJob::new("q", "k", json!({})).throttle("", secs(1)),
                "throttle.key",
            ),
        ];
        fn secs(n: u64) -> std::time::Duration {
            std::time::Duration::from_secs(n)
        }
        for (job, field) in cases {
            let err = validate_new_job(&job, &limits).unwrap_err();
            assert_eq!(err.field, field, "{err}");
        }
        assert!(validate_new_job(
            &NewJob::new("emails", "email.send", json!({"to": 1})),
            &limits
        )
        .is_ok());
    }

    #[test]
    fn nearest_name_finds_likely_misspellings_only() {
        let declared = ["default", "emails", "billing"];
        assert_eq!(nearest_name("email", declared), Some("emails"));
        assert_eq!(nearest_name("defualt", declared), Some("default"));
        assert_eq!(nearest_name("zzzzzzzz", declared), None);
    }
}
