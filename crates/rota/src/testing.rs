//! Testing handlers without lying (feature `embedded`): a throwaway [`TestServer`] (a real
//! embedded server on an SQLite file in a temporary directory) and [`TestServer::drain`],
//! which runs a real worker until the queues are empty. Jobs go through the same JSON
//! encoding, the same store and the same state machine as in production, so a handler that
//! cannot decode its arguments, or a retry policy that never applies, fails the test.
//!
//! ```no_run
//! # use serde::{Deserialize, Serialize};
//! # #[derive(Serialize, Deserialize)] struct SendEmail { to: String }
//! # impl rota::Job for SendEmail {
//! #     const KIND: &'static str = "email.send";
//! #     const QUEUE: &'static str = "emails";
//! #     type Output = ();
//! # }
//! # async fn send_email(_: SendEmail, _: rota::JobContext) -> Result<(), rota::JobFailure> { Ok(()) }
//! #[tokio::test]
//! async fn welcome_emails_are_sent() {
//!     let server = rota::testing::TestServer::start(&["emails"]).await;
//!     server.client().enqueue(SendEmail { to: "ada@example.com".into() }).await.unwrap();
//!     let drained = server
//!         .drain(server.worker().queue("emails", 4).register::<SendEmail, _>(send_email))
//!         .await;
//!     assert_eq!(drained.completed, 1);
//!     assert_eq!(drained.dead, 0);
//! }
//! ```

use std::collections::BTreeMap;
use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::embedded::EmbeddedServer;
use crate::{Client, Worker, WorkerBuilder};

/// A throwaway embedded server; its database is deleted when it is dropped.
#[derive(Debug)]
pub struct TestServer {
    server: EmbeddedServer,
    _dir: tempfile::TempDir,
}

/// What a [`TestServer::drain`] left in the drained queues, by state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Drained {
    /// Jobs completed.
    pub completed: u64,
    /// Jobs dead (failed for good).
    pub dead: u64,
    /// Jobs cancelled.
    pub cancelled: u64,
    /// Jobs waiting to run later (a retry's backoff, a delay, a snooze).
    pub waiting: u64,
}

impl TestServer {
    /// A fresh server with `queues` declared.
    ///
    /// # Panics
    /// If the temporary directory or the server cannot be made (a test cannot go on).
    pub async fn start(queues: &[&str]) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory for the test database");
        let mut builder = EmbeddedServer::builder(dir.path().join("rota.db"));
        for queue in queues {
            builder = builder.queue(queue);
        }
        let server = builder.start().await.expect("the test server starts");
        Self { server, _dir: dir }
    }

    /// A client for it.
    pub fn client(&self) -> Client {
        self.server.client()
    }

    /// Its base URL.
    pub fn url(&self) -> String {
        self.server.url()
    }

    /// A worker builder over it, for [`TestServer::drain`].
    pub fn worker(&self) -> WorkerBuilder {
        Worker::builder(self.client())
    }

    /// Runs the worker `builder` describes until none of its queues has a job ready or
    /// running (jobs due later — a retry's backoff, a delay — stay where they are; see
    /// [`Drained::waiting`]), then stops it and counts what became of the jobs.
    ///
    /// # Panics
    /// If the worker cannot be built or fails, or the server cannot be asked.
    pub async fn drain(&self, builder: WorkerBuilder) -> Drained {
        let worker = builder.build().expect("the worker builds");
        let queues: Vec<String> = worker
            .options()
            .lanes
            .iter()
            .flat_map(|l| l.queues.clone())
            .collect();
        let shutdown = CancellationToken::new();
        let running = tokio::spawn(worker.run_until(shutdown.clone()));
        let client = self.client();
        let counts = loop {
            let counts = self.counts(&client, &queues).await;
            let busy = counts.get("available").copied().unwrap_or(0)
                + counts.get("running").copied().unwrap_or(0);
            if busy == 0 {
                break counts;
            }
            if running.is_finished() {
                break counts;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        shutdown.cancel();
        running
            .await
            .expect("the worker does not panic")
            .expect("the worker runs");
        let count = |state: &str| counts.get(state).copied().unwrap_or(0);
        Drained {
            completed: count("completed"),
            dead: count("dead"),
            cancelled: count("cancelled"),
            waiting: count("scheduled") + count("retryable"),
        }
    }

    async fn counts(&self, client: &Client, queues: &[String]) -> BTreeMap<String, u64> {
        let mut total = BTreeMap::new();
        for queue in queues {
            let view = client.queue(queue).await.expect("the queue's counts");
            for (state, n) in view.counts {
                *total.entry(state).or_insert(0) += n;
            }
        }
        total
    }
}
