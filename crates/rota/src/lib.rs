//! The Rota SDK: [`Client`] speaks the `/v1` HTTP API for producers, operators and workers;
//! [`Worker`] runs jobs through a [`Handler`] (fetch loop, batched heartbeats, timeouts,
//! cancellation, graceful hand-back).
//!
//! ```no_run
//! # async fn demo() -> Result<(), rota::ClientError> {
//! let client = rota::Client::new("http://127.0.0.1:7700")?;
//! let job = rota::api::NewJobRequest {
//!     queue: "default".into(),
//!     kind: "email.send".into(),
//!     args: serde_json::json!({"to": "ada@example.com"}),
//!     ..Default::default()
//! };
//! let enqueued = client.enqueue(&job).await?;
//! let finished = client.job_wait(&enqueued.job.id, "30s").await?;
//! println!("{} is {}", finished.id, finished.state);
//! # Ok(()) }
//! ```
//!
//! The wire types are re-exported as [`api`]. Errors from the server arrive as
//! [`ClientError::Api`] with the server's problem document (stable `code`, `detail`).

mod client;
pub mod worker;

pub use client::{Client, ClientError};
/// The `/v1` wire types.
pub use rota_api as api;
pub use worker::{Handler, JobContext, Outcome, Worker, WorkerError, WorkerOptions};
