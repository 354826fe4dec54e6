//! Typed handlers: [`Worker::builder`] registers an async function per [`Job`] type; the
//! [`Registry`] it builds decodes each job's arguments into that type (a job whose arguments
//! do not decode fails for good, naming the field and the kind), runs the function, catches
//! a panic (message and backtrace recorded, the job retried), and turns its `Result` into the
//! job's outcome.

use std::collections::HashMap;
use std::future::Future;
use std::panic::AssertUnwindSafe;
use std::pin::Pin;
use std::time::Duration;

use futures_util::FutureExt;
use serde_json::Value;

use crate::job::Job;
use crate::worker::{Handler, Lane, WorkerError, WorkerOptions};
use crate::{Client, JobContext, Outcome, Worker};

/// Why a handler gave no result, and what to do about it. Any error converts into a
/// retryable failure with `?` (its message and causes are recorded); [`JobContext::discard`]
/// and [`JobContext::snooze`] make the other two.
pub struct JobFailure(Failure);

enum Failure {
    Retry(String),
    Discard(String),
    Snooze(Duration),
}

impl JobFailure {
    /// A failure retried per the job's policy (dead once out of attempts).
    pub fn retry(message: impl Into<String>) -> Self {
        Self(Failure::Retry(message.into()))
    }

    /// A failure not retried: the job is dead at once.
    pub fn discard(reason: impl Into<String>) -> Self {
        Self(Failure::Discard(reason.into()))
    }

    /// Not a failure: run the job again after `delay`, without using an attempt.
    pub fn snooze(delay: Duration) -> Self {
        Self(Failure::Snooze(delay))
    }

    fn outcome(self) -> Outcome {
        match self.0 {
            Failure::Retry(message) => Outcome::failed(message),
            Failure::Discard(message) => Outcome::Failed {
                message,
                backtrace: None,
                discard: true,
            },
            Failure::Snooze(delay) => Outcome::Snoozed(delay),
        }
    }
}

impl std::fmt::Debug for JobFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Failure::Retry(m) => write!(f, "retry: {m}"),
            Failure::Discard(m) => write!(f, "discard: {m}"),
            Failure::Snooze(d) => write!(f, "snooze {d:?}"),
        }
    }
}

impl std::fmt::Display for JobFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// Like `anyhow`, any error converts (so `JobFailure` itself is not a `std::error::Error`).
impl<E: std::error::Error + Send + Sync + 'static> From<E> for JobFailure {
    fn from(err: E) -> Self {
        JobFailure::retry(crate::worker::chain(&err))
    }
}

impl JobContext {
    /// A failure that is not retried: `return Err(ctx.discard("the account is closed"))`.
    pub fn discard(&self, reason: impl Into<String>) -> JobFailure {
        JobFailure::discard(reason)
    }

    /// Runs the job again after `delay` without using an attempt:
    /// `return Err(ctx.snooze(Duration::from_secs(30)))`.
    pub fn snooze(&self, delay: Duration) -> JobFailure {
        JobFailure::snooze(delay)
    }
}

type BoxedRun = Pin<Box<dyn Future<Output = Outcome> + Send>>;

/// A handler for jobs of type `J`: any `Fn(J, JobContext) -> impl Future<Output =
/// Result<J::Output, JobFailure>>`, such as an `async fn`.
pub trait JobHandler<J: Job>: Send + Sync + 'static {
    /// What the call returns.
    type Future: Future<Output = Result<J::Output, JobFailure>> + Send + 'static;
    /// Runs one job.
    fn call(&self, job: J, context: JobContext) -> Self::Future;
}

impl<J, F, Fut> JobHandler<J> for F
where
    J: Job,
    F: Fn(J, JobContext) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = Result<J::Output, JobFailure>> + Send + 'static,
{
    type Future = Fut;
    fn call(&self, job: J, context: JobContext) -> Fut {
        self(job, context)
    }
}

/// One registered job type, its arguments still JSON.
trait ErasedHandler: Send + Sync {
    fn run(&self, args: Value, context: JobContext) -> BoxedRun;
}

struct Typed<J, H> {
    handler: H,
    job: std::marker::PhantomData<fn() -> J>,
}

impl<J: Job, H: JobHandler<J>> ErasedHandler for Typed<J, H> {
    fn run(&self, args: Value, context: JobContext) -> BoxedRun {
        crate::panic::capture_backtraces();
        let args: J = match serde_path_to_error::deserialize(args) {
            Ok(args) => args,
            Err(err) => {
                let message = undecodable(J::KIND, &err);
                return Box::pin(std::future::ready(Outcome::Failed {
                    message,
                    backtrace: None,
                    discard: true,
                }));
            }
        };
        let stop = context.stop.clone();
        let work = AssertUnwindSafe(self.handler.call(args, context)).catch_unwind();
        Box::pin(async move {
            // A handler that returns as soon as it sees the stop wins; one that ignores it is
            // dropped (cancelled) here, so a timeout ends it at once.
            let ran = tokio::select! {
                biased;
                ran = work => ran,
                _ = stop.cancelled() => return Outcome::Stopped,
            };
            match ran {
                Ok(Ok(output)) => match serde_json::to_value(output) {
                    Ok(Value::Null) => Outcome::Completed(None),
                    Ok(result) => Outcome::Completed(Some(result)),
                    Err(err) => Outcome::Failed {
                        message: format!(
                            "the result of a {} job does not serialize: {err}",
                            J::KIND
                        ),
                        backtrace: None,
                        discard: true,
                    },
                },
                Ok(Err(failure)) => failure.outcome(),
                Err(panic) => {
                    let (message, backtrace) = crate::panic::describe(panic);
                    Outcome::Failed {
                        message: format!("handler panicked: {message}"),
                        backtrace,
                        discard: false,
                    }
                }
            }
        })
    }
}

/// The message for arguments that do not decode: the kind, the field's path, serde's reason.
fn undecodable(kind: &str, err: &serde_path_to_error::Error<serde_json::Error>) -> String {
    let path = err.path().to_string();
    let inner = err.inner();
    if path == "." {
        format!("arguments of {kind} do not decode: {inner}")
    } else {
        format!("arguments of {kind} do not decode: field `{path}`: {inner}")
    }
}

/// The typed handlers of one worker, by kind: the [`Handler`] that [`WorkerBuilder::build`]
/// gives the runtime.
pub struct Registry {
    handlers: HashMap<&'static str, Box<dyn ErasedHandler>>,
}

impl Handler for Registry {
    fn run(&self, job: JobContext) -> Pin<Box<dyn Future<Output = Outcome> + Send + '_>> {
        match self.handlers.get(job.job.kind.as_str()) {
            Some(handler) => {
                let args = job.job.args.clone();
                handler.run(args, job)
            }
            // The server leases only registered kinds; a job that slipped through is retried
            // (another worker may handle it).
            None => Box::pin(std::future::ready(Outcome::failed(format!(
                "no handler for kind {} in this worker",
                job.job.kind
            )))),
        }
    }
}

/// Builds a typed [`Worker`]: the queues it takes from, each with its concurrency, and one
/// handler per [`Job`] type.
///
/// ```no_run
/// # use serde::{Deserialize, Serialize};
/// # #[derive(Serialize, Deserialize)] struct SendEmail { to: String }
/// # impl rota::Job for SendEmail {
/// #     const KIND: &'static str = "email.send";
/// #     const QUEUE: &'static str = "emails";
/// #     type Output = ();
/// # }
/// async fn send_email(job: SendEmail, ctx: rota::JobContext) -> Result<(), rota::JobFailure> {
///     ctx.progress(50, Some(format!("sending to {}", job.to)));
///     Ok(())
/// }
///
/// # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
/// let client = rota::Client::new("http://127.0.0.1:7700")?;
/// let shutdown = tokio_util::sync::CancellationToken::new();
/// rota::Worker::builder(client)
///     .queue("emails", 32)
///     .register::<SendEmail, _>(send_email)
///     .build()?
///     .run_until(shutdown)
///     .await?;
/// # Ok(()) }
/// ```
pub struct WorkerBuilder {
    client: Client,
    options: WorkerOptions,
    handlers: HashMap<&'static str, (&'static str, Box<dyn ErasedHandler>)>,
    duplicate: Option<&'static str>,
}

impl std::fmt::Debug for WorkerBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkerBuilder")
            .field("options", &self.options)
            .field("kinds", &self.handlers.keys().collect::<Vec<_>>())
            .finish()
    }
}

impl Worker<Registry> {
    /// Starts building a typed worker over `client`'s server.
    pub fn builder(client: Client) -> WorkerBuilder {
        WorkerBuilder {
            client,
            options: WorkerOptions::new(vec![]),
            handlers: HashMap::new(),
            duplicate: None,
        }
    }
}

impl WorkerBuilder {
    /// Takes jobs from `queue`, running up to `concurrency` of them at once.
    pub fn queue(mut self, queue: &str, concurrency: usize) -> Self {
        self.options
            .lanes
            .push(Lane::new(vec![queue.to_owned()], concurrency));
        self
    }

    /// Runs jobs of type `J` with `handler`, an async function of the job's arguments and
    /// its [`JobContext`]. `J::QUEUE` must be one of the worker's queues.
    pub fn register<J: Job, H: JobHandler<J>>(mut self, handler: H) -> Self {
        let typed = Typed::<J, H> {
            handler,
            job: std::marker::PhantomData,
        };
        if self
            .handlers
            .insert(J::KIND, (J::QUEUE, Box::new(typed)))
            .is_some()
        {
            self.duplicate.get_or_insert(J::KIND);
        }
        self
    }

    /// On shutdown, how long running jobs may finish before they are cancelled and their
    /// leases handed back (10 s by default).
    pub fn grace(mut self, grace: Duration) -> Self {
        self.options.grace = grace;
        self
    }

    /// The worker's stable name, which health checks ask for (the host name by default).
    pub fn name(mut self, name: impl Into<String>) -> Self {
        let name = name.into();
        self.options.id = format!("{name}:{}", std::process::id());
        self.options.name = name;
        self
    }

    /// Checks that every registered job's queue is one the worker takes from (the producer
    /// and the worker share the queue's name through the [`Job`], so a job is never sent
    /// where nobody looks), and builds the worker.
    pub fn build(mut self) -> Result<Worker<Registry>, WorkerError> {
        let invalid = |field, message: String| Err(WorkerError::Invalid { field, message });
        if self.options.lanes.is_empty() {
            return invalid(
                "queues",
                "name at least one queue with .queue(name, concurrency)".into(),
            );
        }
        if self.handlers.is_empty() {
            return invalid(
                "handlers",
                "register at least one job type with .register::<J, _>(handler)".into(),
            );
        }
        if let Some(kind) = self.duplicate {
            return invalid("handlers", format!("kind {kind} is registered twice"));
        }
        self.options.check()?;
        let queues: Vec<&str> = self
            .options
            .lanes
            .iter()
            .flat_map(|l| l.queues.iter().map(String::as_str))
            .collect();
        let mut kinds: Vec<&str> = self.handlers.keys().copied().collect();
        kinds.sort_unstable();
        for kind in &kinds {
            let queue = self.handlers[kind].0;
            if !queues.contains(&queue) {
                return invalid(
                    "queues",
                    format!("jobs of kind {kind} go to queue {queue:?}, which this worker does not take from: add .queue({queue:?}, concurrency)"),
                );
            }
        }
        self.options.kinds = kinds.iter().map(|k| (*k).to_owned()).collect();
        self.options.version = format!("rota-rust {}", env!("CARGO_PKG_VERSION"));
        let registry = Registry {
            handlers: self
                .handlers
                .into_iter()
                .map(|(kind, (_, handler))| (kind, handler))
                .collect(),
        };
        Ok(Worker::new(self.client, self.options, registry))
    }
}

/// Shared with tests: a job's typed handler run on JSON arguments, outside a worker.
#[cfg(test)]
pub(crate) fn run_typed<J: Job, H: JobHandler<J>>(
    handler: H,
    args: Value,
    context: JobContext,
) -> BoxedRun {
    Typed::<J, H> {
        handler,
        job: std::marker::PhantomData,
    }
    .run(args, context)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Serialize, serde::Deserialize)]
    struct Resize {
        width: u32,
        #[allow(dead_code)]
        height: u32,
    }

    impl Job for Resize {
        const KIND: &'static str = "images.resize";
        const QUEUE: &'static str = "media";
        type Output = u32;
    }

    fn context(args: Value) -> JobContext {
        let view: rota_api::LeasedJob = serde_json::from_value(serde_json::json!({
            "id": "018f0000-0000-7000-8000-000000000000", "queue": "media",
            "kind": "images.resize", "args": args, "attempt": 1, "max_attempts": 3,
            "lease_token": 1, "lease_expires_at": "2026-12-02T00:00:00Z"
        }))
        .unwrap();
        JobContext::detached(view)
    }

    async fn run(args: Value) -> Outcome {
        run_typed::<Resize, _>(
            |job: Resize, _ctx| async move {
                if job.width == 0 {
                    panic!("width must not be zero");
                }
                if job.width == 1 {
                    return Err(JobFailure::discard("too small"));
                }
                Ok(job.width * 2)
            },
            args.clone(),
            context(args),
        )
        .await
    }

    #[tokio::test]
    async fn arguments_that_do_not_decode_fail_for_good_naming_the_field_and_kind() {
        let outcome = run(serde_json::json!({"width": "wide", "height": 1})).await;
        let Outcome::Failed {
            message, discard, ..
        } = outcome
        else {
            panic!("{outcome:?}")
        };
        assert!(discard);
        assert!(message.contains("images.resize"), "{message}");
        assert!(message.contains("`width`"), "{message}");
        let outcome = run(serde_json::json!({"width": 3})).await;
        let Outcome::Failed { message, .. } = outcome else {
            panic!("{outcome:?}")
        };
        assert!(message.contains("missing field `height`"), "{message}");
    }

    #[tokio::test]
    async fn output_failure_and_panic_become_outcomes() {
        assert_eq!(
            run(serde_json::json!({"width": 4, "height": 1})).await,
            Outcome::Completed(Some(serde_json::json!(8)))
        );
        assert_eq!(
            run(serde_json::json!({"width": 1, "height": 1})).await,
            Outcome::Failed {
                message: "too small".into(),
                backtrace: None,
                discard: true
            }
        );
        let Outcome::Failed {
            message,
            backtrace,
            discard,
        } = run(serde_json::json!({"width": 0, "height": 1})).await
        else {
            panic!("a panic is a failure")
        };
        assert!(!discard);
        assert_eq!(message, "handler panicked: width must not be zero");
        assert!(backtrace.is_some_and(|b| !b.is_empty()));
    }

    #[test]
    fn a_lane_without_slots_is_refused_at_build() {
        let client = Client::new("http://127.0.0.1:1").unwrap();
        let err = Worker::builder(client)
            .queue("media", 0)
            .register::<Resize, _>(|job: Resize, _| async move { Ok(job.width) })
            .build()
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "invalid worker option concurrency: must be at least 1"
        );
    }

    #[test]
    fn a_job_for_a_queue_the_worker_does_not_take_is_refused_at_build() {
        let client = Client::new("http://127.0.0.1:1").unwrap();
        let err = Worker::builder(client)
            .queue("images", 4)
            .register::<Resize, _>(|job: Resize, _| async move { Ok(job.width) })
            .build()
            .unwrap_err();
        let text = err.to_string();
        assert!(text.contains("\"media\""), "{text}");
        assert!(text.contains(".queue(\"media\""), "{text}");
    }
}
