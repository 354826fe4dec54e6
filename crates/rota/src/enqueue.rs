//! Enqueueing typed jobs and following them: [`Enqueue`] (options, then `.await`) and the
//! [`JobHandle`] it gives back (`get`, `wait`, `cancel`).

use std::future::{Future, IntoFuture};
use std::marker::PhantomData;
use std::pin::Pin;
use std::time::Duration;

use jiff::Timestamp;
use rota_api::{EnqueueManyRequest, JobState, JobView, NewJobRequest};
use rota_core::format_duration;
use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::job::{request_for, Job};
use crate::{Client, ClientError};

/// One job about to be enqueued: set options, then `.await` it for its [`JobHandle`].
///
/// ```no_run
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)] struct SendEmail { to: String }
/// # impl rota::Job for SendEmail {
/// #     const KIND: &'static str = "email.send";
/// #     const QUEUE: &'static str = "emails";
/// #     type Output = ();
/// # }
/// # async fn demo(client: rota::Client) -> Result<(), rota::ClientError> {
/// use std::time::Duration;
/// let handle = client
///     .enqueue(SendEmail { to: "ada@example.com".into() })
///     .delay(Duration::from_secs(60))
///     .unique("welcome:ada")
///     .priority(1)
///     .await?;
/// println!("enqueued {}", handle.id());
/// # Ok(()) }
/// ```
#[must_use = "an enqueue does nothing until it is awaited"]
pub struct Enqueue<'c, O> {
    client: &'c Client,
    request: Result<NewJobRequest, ClientError>,
    output: PhantomData<fn() -> O>,
}

impl<O> std::fmt::Debug for Enqueue<'_, O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Enqueue")
            .field("request", &self.request)
            .finish()
    }
}

impl<'c, O> Enqueue<'c, O> {
    pub(crate) fn new(client: &'c Client, request: Result<NewJobRequest, ClientError>) -> Self {
        Self {
            client,
            request,
            output: PhantomData,
        }
    }

    fn with(mut self, f: impl FnOnce(&mut NewJobRequest)) -> Self {
        if let Ok(request) = &mut self.request {
            f(request);
        }
        self
    }

    /// Runs it no earlier than `delay` from now.
    pub fn delay(self, delay: Duration) -> Self {
        self.with(|r| r.delay = Some(format_duration(delay)))
    }

    /// Runs it no earlier than `at`.
    pub fn at(self, at: Timestamp) -> Self {
        self.with(|r| r.run_at = Some(at))
    }

    /// Enqueues it only if no job with `key` is waiting or running: otherwise the handle is
    /// the existing job's ([`JobHandle::is_duplicate`]).
    pub fn unique(self, key: impl Into<String>) -> Self {
        self.with(|r| r.unique_key = Some(key.into()))
    }

    /// Keeps the unique key taken for `period` after the job finished.
    pub fn unique_for(self, period: Duration) -> Self {
        self.with(|r| r.unique_for = Some(format_duration(period)))
    }

    /// 0..=9, lower runs first (overrides [`Job::priority`]).
    pub fn priority(self, priority: u8) -> Self {
        self.with(|r| r.priority = Some(priority))
    }

    /// Adds a label.
    pub fn tag(self, tag: impl Into<String>) -> Self {
        self.with(|r| r.tags.push(tag.into()))
    }

    /// The flow-control key (the queue's `key_concurrency` and `key_rate` limit jobs sharing
    /// it).
    pub fn concurrency_key(self, key: impl Into<String>) -> Self {
        self.with(|r| r.concurrency_key = Some(key.into()))
    }

    /// The request as it will be sent.
    pub fn request(&self) -> Result<&NewJobRequest, &ClientError> {
        self.request.as_ref()
    }
}

impl<'c, O: Send + 'c> IntoFuture for Enqueue<'c, O> {
    type Output = Result<JobHandle<O>, ClientError>;
    type IntoFuture = Pin<Box<dyn Future<Output = Self::Output> + Send + 'c>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(async move {
            let enqueued = self.client.enqueue_request(&self.request?).await?;
            Ok(JobHandle::new(
                self.client.clone(),
                enqueued.job.id,
                enqueued.duplicate,
            ))
        })
    }
}

impl Client {
    /// Enqueues a typed job: its kind, queue, arguments and retry policy come from `job`'s
    /// [`Job`] implementation; set options on the returned [`Enqueue`], then `.await` it.
    pub fn enqueue<J: Job>(&self, job: J) -> Enqueue<'_, J::Output> {
        let request = request_for(&job).map_err(|source| ClientError::Args {
            kind: J::KIND.into(),
            source,
        });
        Enqueue::new(self, request)
    }

    /// Enqueues a job by kind and JSON arguments, for producers that do not share the
    /// worker's types; its result is read as JSON.
    pub fn enqueue_json(&self, queue: &str, kind: &str, args: Value) -> Enqueue<'_, Value> {
        Enqueue::new(
            self,
            Ok(NewJobRequest {
                queue: queue.into(),
                kind: kind.into(),
                args,
                ..Default::default()
            }),
        )
    }

    /// Enqueues typed jobs in one request, all or none, answering only their ids.
    pub async fn enqueue_many<J: Job>(
        &self,
        jobs: impl IntoIterator<Item = J>,
    ) -> Result<Vec<JobHandle<J::Output>>, ClientError> {
        let jobs = jobs
            .into_iter()
            .map(|job| {
                request_for(&job).map_err(|source| ClientError::Args {
                    kind: J::KIND.into(),
                    source,
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let ids = self.enqueue_many_ids(&EnqueueManyRequest { jobs }).await?;
        Ok(ids
            .ids
            .into_iter()
            .map(|id| JobHandle::new(self.clone(), id, false))
            .collect())
    }

    /// A handle on job `id` enqueued elsewhere, its result read as `O`.
    pub fn job_handle<O>(&self, id: impl Into<String>) -> JobHandle<O> {
        JobHandle::new(self.clone(), id.into(), false)
    }
}

/// An enqueued job, whose result is an `O`.
pub struct JobHandle<O> {
    client: Client,
    id: String,
    duplicate: bool,
    output: PhantomData<fn() -> O>,
}

impl<O> Clone for JobHandle<O> {
    fn clone(&self) -> Self {
        Self::new(self.client.clone(), self.id.clone(), self.duplicate)
    }
}

impl<O> std::fmt::Debug for JobHandle<O> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("JobHandle")
            .field("id", &self.id)
            .field("duplicate", &self.duplicate)
            .finish()
    }
}

/// Why a job gave no result.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WaitError {
    /// It failed for good: out of attempts, or discarded.
    #[error("job {id} is dead after {attempts} attempt(s): {message}")]
    Dead {
        /// The job.
        id: String,
        /// Attempts made.
        attempts: u32,
        /// The last attempt's error.
        message: String,
        /// Its backtrace, if the handler gave one.
        backtrace: Option<String>,
    },
    /// It was cancelled.
    #[error("job {id} was cancelled")]
    Cancelled {
        /// The job.
        id: String,
    },
    /// It is not final yet and the wait ran out.
    #[error("job {id} is still {state} after waiting {waited:?}")]
    Pending {
        /// The job.
        id: String,
        /// Its state now.
        state: JobState,
        /// How long was waited.
        waited: Duration,
    },
    /// Its result is not the output type.
    #[error("job {id}'s result does not decode as the job's output")]
    Output {
        /// The job.
        id: String,
        /// Why.
        #[source]
        source: serde_json::Error,
    },
    /// The server could not be asked.
    #[error(transparent)]
    Client(#[from] ClientError),
}

/// A job as the server last saw it.
#[derive(Debug, Clone)]
pub struct JobStatus<O> {
    /// Everything the API shows.
    pub view: JobView,
    output: PhantomData<fn() -> O>,
}

impl<O: DeserializeOwned> JobStatus<O> {
    /// Its state.
    pub fn state(&self) -> JobState {
        self.view.state
    }

    /// Latest progress, 0..=100, and its message.
    pub fn progress(&self) -> Option<(u8, Option<&str>)> {
        self.view
            .progress
            .map(|p| (p, self.view.progress_message.as_deref()))
    }

    /// Whether it reached a final state (completed, dead or cancelled).
    pub fn is_final(&self) -> bool {
        matches!(
            self.view.state,
            JobState::Completed | JobState::Dead | JobState::Cancelled
        )
    }

    /// The typed result once final: the output, or why there is none.
    pub fn outcome(&self) -> Option<Result<O, WaitError>> {
        let v = &self.view;
        match v.state {
            JobState::Completed => Some(
                serde_json::from_value(v.result.clone().unwrap_or(Value::Null)).map_err(|source| {
                    WaitError::Output {
                        id: v.id.clone(),
                        source,
                    }
                }),
            ),
            JobState::Dead => {
                let last = v.errors.last();
                Some(Err(WaitError::Dead {
                    id: v.id.clone(),
                    attempts: v.attempt,
                    message: last.map(|e| e.message.clone()).unwrap_or_default(),
                    backtrace: last.and_then(|e| e.backtrace.clone()),
                }))
            }
            JobState::Cancelled => Some(Err(WaitError::Cancelled { id: v.id.clone() })),
            _ => None,
        }
    }
}

/// Longest one wait request holds (the server's limit).
const WAIT_STEP: Duration = Duration::from_secs(60);

impl<O> JobHandle<O> {
    fn new(client: Client, id: String, duplicate: bool) -> Self {
        Self {
            client,
            id,
            duplicate,
            output: PhantomData,
        }
    }

    #[cfg_attr(not(feature = "postgres"), allow(dead_code))]
    pub(crate) fn duplicate(mut self, duplicate: bool) -> Self {
        self.duplicate = duplicate;
        self
    }
}

impl<O: DeserializeOwned> JobHandle<O> {
    /// The job's id.
    pub fn id(&self) -> &str {
        &self.id
    }

    /// Whether the enqueue found an existing job with the same unique key (this handle is
    /// that job's).
    pub fn is_duplicate(&self) -> bool {
        self.duplicate
    }

    /// The job as it is now.
    pub async fn get(&self) -> Result<JobStatus<O>, ClientError> {
        Ok(JobStatus {
            view: self.client.job(&self.id).await?,
            output: PhantomData,
        })
    }

    /// Waits until the job is final (through the server's long poll, no polling loop) and
    /// gives its typed output, or why there is none.
    pub async fn wait(&self) -> Result<O, WaitError> {
        loop {
            let status = self.wait_step(WAIT_STEP).await?;
            if let Some(outcome) = status.outcome() {
                return outcome;
            }
        }
    }

    /// [`JobHandle::wait`], for at most `limit`: [`WaitError::Pending`] when it runs out.
    pub async fn wait_for(&self, limit: Duration) -> Result<O, WaitError> {
        let started = tokio::time::Instant::now();
        loop {
            let left = limit.saturating_sub(started.elapsed());
            let status = self.wait_step(left.min(WAIT_STEP)).await?;
            if let Some(outcome) = status.outcome() {
                return outcome;
            }
            if started.elapsed() >= limit {
                return Err(WaitError::Pending {
                    id: self.id.clone(),
                    state: status.state(),
                    waited: limit,
                });
            }
        }
    }

    async fn wait_step(&self, step: Duration) -> Result<JobStatus<O>, ClientError> {
        // The server waits in whole milliseconds at least.
        let step = step.max(Duration::from_millis(1));
        Ok(JobStatus {
            view: self
                .client
                .job_wait(&self.id, &format_duration(step))
                .await?,
            output: PhantomData,
        })
    }

    /// Cancels the job: at once if it waits, at its handler's next heartbeat if it runs.
    pub async fn cancel(&self) -> Result<JobStatus<O>, ClientError> {
        Ok(JobStatus {
            view: self.client.cancel(&self.id).await?,
            output: PhantomData,
        })
    }
}
