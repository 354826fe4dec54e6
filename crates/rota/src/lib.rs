//! The Rota SDK: typed background jobs for Rust.
//!
//! One definition of a job — a serde type implementing [`Job`] — is shared by the code that
//! enqueues it and the worker that runs it, so the kind, the queue, the arguments and the
//! retry policy cannot drift apart: the compiler checks them.
//!
//! - [`Client`] speaks the `/v1` HTTP API: [`Client::enqueue`] a typed job (options, then
//!   `.await`) for a [`JobHandle`] whose [`wait`](JobHandle::wait) gives the typed output;
//!   [`Client::enqueue_many`]; [`Client::enqueue_json`] for producers without the types;
//!   queues, schedules, dead jobs and workers for operators. Problems from the server are
//!   [`ClientError::Api`] with the stable `code` ([`ClientError::error_code`]).
//! - [`Worker::builder`] registers one async handler per job type and runs them: each queue
//!   with its own concurrency, one long poll for as many jobs as there are free slots, one
//!   batched heartbeat per interval (which carries cancellations back), outcomes sent in
//!   batches; arguments that do not decode fail the job for good, naming the field; a panic
//!   is recorded with its backtrace; a timeout cancels the handler; a graceful shutdown hands
//!   unfinished jobs back at once.
//! - Feature `embedded`: [`embedded::EmbeddedServer`], a Rota server inside your process on
//!   an SQLite file, and [`testing::TestServer`] to test handlers with real serialization.
//! - Feature `postgres`: [`Client::enqueue_in`] enqueues inside your own PostgreSQL
//!   transaction.
//!
//! ```no_run
//! use std::time::Duration;
//! use rota::{Client, Job, JobContext, JobFailure, RetryPolicy, Worker};
//! use serde::{Deserialize, Serialize};
//!
//! #[derive(Serialize, Deserialize)]
//! struct SendEmail {
//!     to: String,
//!     subject: String,
//! }
//!
//! impl Job for SendEmail {
//!     const KIND: &'static str = "email.send";
//!     const QUEUE: &'static str = "emails";
//!     type Output = String;
//!
//!     fn retry() -> RetryPolicy {
//!         RetryPolicy::attempts(5)
//!     }
//!     fn timeout() -> Option<Duration> {
//!         Some(Duration::from_secs(30))
//!     }
//! }
//!
//! async fn send_email(email: SendEmail, ctx: JobContext) -> Result<String, JobFailure> {
//!     if email.to.is_empty() {
//!         return Err(ctx.discard("no recipient"));
//!     }
//!     // ... send it ...
//!     Ok(format!("sent {:?} to {}", email.subject, email.to))
//! }
//!
//! #[tokio::main]
//! async fn main() -> Result<(), Box<dyn std::error::Error>> {
//!     // `rota serve` runs on 127.0.0.1:7700; `rota queues declare emails` declared the queue.
//!     let client = Client::new("http://127.0.0.1:7700")?;
//!
//!     let shutdown = tokio_util::sync::CancellationToken::new();
//!     let worker = Worker::builder(client.clone())
//!         .queue("emails", 32)
//!         .register::<SendEmail, _>(send_email)
//!         .build()?;
//!     let running = tokio::spawn(worker.run_until(shutdown.clone()));
//!
//!     let handle = client
//!         .enqueue(SendEmail { to: "ada@example.com".into(), subject: "Welcome".into() })
//!         .await?;
//!     let receipt: String = handle.wait().await?;
//!     println!("{receipt}");
//!
//!     shutdown.cancel();
//!     running.await??;
//!     Ok(())
//! }
//! ```

mod client;
mod context;
mod enqueue;
mod job;
mod panic;
mod registry;
mod report;
pub mod worker;

#[cfg(feature = "embedded")]
pub mod embedded;
#[cfg(feature = "postgres")]
mod postgres;
#[cfg(feature = "embedded")]
pub mod testing;

pub use client::{Client, ClientError, ErrorCode};
pub use context::{JobContext, Outcome, PROGRESS_EVERY};
pub use enqueue::{Enqueue, JobHandle, JobStatus, WaitError};
pub use job::{schedule_request, Job, RetryPolicy};
#[cfg(feature = "postgres")]
pub use postgres::EnqueueInError;
pub use registry::{JobFailure, JobHandler, Registry, WorkerBuilder};
pub use report::REPORT_BATCH;
/// The `/v1` wire types.
pub use rota_api as api;
/// Delays between attempts.
pub use rota_core::Backoff;
pub use worker::{Handler, Lane, Worker, WorkerError, WorkerOptions};
