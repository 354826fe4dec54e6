//! Typed jobs: one definition, shared by the code that enqueues a job and the worker that
//! runs it, so kind, queue, arguments and retry policy cannot drift apart.

use std::time::Duration;

use rota_api::{NewJobRequest, ScheduleRequest};
use rota_core::{format_duration, Backoff};
use serde::de::DeserializeOwned;
use serde::Serialize;

/// A job: its arguments are the implementing type (serialized as JSON), and the constants
/// and functions say where it goes and how it is retried. Producer and worker use the same
/// definition, so they cannot spell the queue differently, and the retry policy travels with
/// every job instead of living in a worker's configuration.
///
/// ```
/// use std::time::Duration;
/// use serde::{Deserialize, Serialize};
///
/// #[derive(Serialize, Deserialize)]
/// struct SendEmail {
///     to: String,
///     subject: String,
/// }
///
/// impl rota::Job for SendEmail {
///     const KIND: &'static str = "email.send";
///     const QUEUE: &'static str = "emails";
///     type Output = ();
///
///     fn retry() -> rota::RetryPolicy {
///         rota::RetryPolicy::attempts(5).backoff(rota::Backoff::Intervals(vec![
///             Duration::from_secs(30),
///             Duration::from_secs(300),
///         ]))
///     }
///
///     fn timeout() -> Option<Duration> {
///         Some(Duration::from_secs(60))
///     }
/// }
/// ```
pub trait Job: Serialize + DeserializeOwned + Send + Sync + 'static {
    /// The handler name, such as `email.send`.
    const KIND: &'static str;
    /// The queue it goes to (declared on the server).
    const QUEUE: &'static str;
    /// What the handler returns, stored as the job's result (`()` for nothing).
    type Output: Serialize + DeserializeOwned + Send + 'static;

    /// Attempts and backoff; the server's defaults for what is left unset.
    fn retry() -> RetryPolicy {
        RetryPolicy::default()
    }

    /// Longest one attempt may run; the handler is cancelled after it and the attempt fails.
    fn timeout() -> Option<Duration> {
        None
    }

    /// 0..=9, lower runs first; the server's default (5) when `None`.
    fn priority() -> Option<u8> {
        None
    }
}

/// How a job is retried: what is not set here falls to the queue's and the server's
/// defaults.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct RetryPolicy {
    /// Attempts, the first included.
    pub max_attempts: Option<u32>,
    /// Delays between attempts.
    pub backoff: Option<Backoff>,
}

impl RetryPolicy {
    /// At most `n` attempts, the first included.
    pub fn attempts(n: u32) -> Self {
        Self {
            max_attempts: Some(n),
            backoff: None,
        }
    }

    /// With `backoff` between attempts.
    pub fn backoff(mut self, backoff: Backoff) -> Self {
        self.backoff = Some(backoff);
        self
    }
}

/// The wire request for `job`: its kind, queue, arguments and policy.
pub(crate) fn request_for<J: Job>(job: &J) -> Result<NewJobRequest, serde_json::Error> {
    let retry = J::retry();
    Ok(NewJobRequest {
        queue: J::QUEUE.into(),
        kind: J::KIND.into(),
        args: serde_json::to_value(job)?,
        priority: J::priority(),
        max_attempts: retry.max_attempts,
        backoff: retry.backoff,
        timeout: J::timeout().map(format_duration),
        ..Default::default()
    })
}

/// A schedule named `name` that enqueues `job` on `cron` (UTC, misfire `latest`; change the
/// fields before [`Client::create_schedule`](crate::Client::create_schedule) for others),
/// carrying the job type's kind, queue and retry policy, so scheduled runs retry exactly
/// like enqueued ones.
pub fn schedule_request<J: Job>(
    name: &str,
    cron: &str,
    job: &J,
) -> Result<ScheduleRequest, crate::ClientError> {
    let request = request_for(job).map_err(|source| crate::ClientError::Args {
        kind: J::KIND.into(),
        source,
    })?;
    Ok(ScheduleRequest {
        name: name.into(),
        cron: cron.into(),
        queue: request.queue,
        kind: request.kind,
        args: request.args,
        priority: request.priority,
        max_attempts: request.max_attempts,
        backoff: request.backoff,
        timeout: request.timeout,
        ..Default::default()
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Serialize, Deserialize)]
    struct Resize {
        width: u32,
    }

    impl Job for Resize {
        const KIND: &'static str = "images.resize";
        const QUEUE: &'static str = "media";
        type Output = String;
        fn retry() -> RetryPolicy {
            RetryPolicy::attempts(3).backoff(Backoff::Fixed {
                interval: Duration::from_secs(10),
            })
        }
        fn timeout() -> Option<Duration> {
            Some(Duration::from_secs(90))
        }
    }

    #[test]
    fn the_request_carries_kind_queue_args_and_policy() {
        let request = request_for(&Resize { width: 64 }).unwrap();
        assert_eq!(request.kind, "images.resize");
        assert_eq!(request.queue, "media");
        assert_eq!(request.args, serde_json::json!({"width": 64}));
        assert_eq!(request.max_attempts, Some(3));
        assert_eq!(
            request.backoff,
            Some(Backoff::Fixed {
                interval: Duration::from_secs(10)
            })
        );
        assert_eq!(request.timeout.as_deref(), Some("1m 30s"));
    }
}
