//! A Rota server inside your own process (feature `embedded`): the same server `rota serve`
//! runs (store on an SQLite file, engine services, the `/v1` API on a loopback port), for
//! applications that want durable jobs without a separate process. The [`Client`] and
//! [`Worker`](crate::Worker) talk to it exactly as they talk to `rota serve`, so code
//! written against one runs against the other.
//!
//! ```no_run
//! # async fn demo() -> Result<(), Box<dyn std::error::Error>> {
//! let server = rota::embedded::EmbeddedServer::builder("jobs.db")
//!     .queue("emails")
//!     .start()
//!     .await?;
//! let client = server.client();
//! // ... enqueue, run workers ...
//! server.shutdown().await?;
//! # Ok(()) }
//! ```

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use rota_core::SystemClock;
use rota_server::{Server, ServerConfig, Startup};
use rota_sqlite::{SqliteOptions, SqliteStore};
use rota_store::{QueueConfig, Store};
use tokio_util::sync::CancellationToken;

use crate::{Client, Job};

/// Why an embedded server did not start or stop cleanly.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbeddedError {
    /// The database file could not be opened.
    #[error("opening the database {path}")]
    Open {
        /// The file.
        path: PathBuf,
        /// Why.
        #[source]
        source: rota_store::StoreError,
    },
    /// The server could not start (migration, queue declarations).
    #[error("starting the embedded server")]
    Start(#[source] rota_server::StartError),
    /// The loopback listener could not be bound, or serving failed.
    #[error("serving on loopback")]
    Io(#[source] std::io::Error),
}

/// Settings for an [`EmbeddedServer`].
#[derive(Debug, Clone)]
pub struct EmbeddedBuilder {
    path: PathBuf,
    queues: Vec<(String, QueueConfig)>,
}

impl EmbeddedBuilder {
    /// Declares `queue` at start (with the server's defaults).
    pub fn queue(mut self, queue: &str) -> Self {
        if !self.queues.iter().any(|(name, _)| name == queue) {
            self.queues.push((queue.to_owned(), QueueConfig::default()));
        }
        self
    }

    /// Declares the queue jobs of type `J` go to.
    pub fn queue_for<J: Job>(self) -> Self {
        self.queue(J::QUEUE)
    }

    /// Opens (or creates) the database, migrates it, declares the queues, starts the
    /// engine services and serves the API on a free loopback port.
    pub async fn start(self) -> Result<EmbeddedServer, EmbeddedError> {
        let path = self.path.clone();
        let store =
            tokio::task::spawn_blocking(move || SqliteStore::open(SqliteOptions::new(path)))
                .await
                .expect("opening the store does not panic")
                .map_err(|source| EmbeddedError::Open {
                    path: self.path.clone(),
                    source,
                })?;
        let store: Arc<dyn Store> = Arc::new(store);
        let server = Server::start(
            store,
            Arc::new(SystemClock),
            ServerConfig::default(),
            Startup {
                queues: self.queues,
                schedules: vec![],
            },
        )
        .await
        .map_err(EmbeddedError::Start)?;
        let listener = rota_server::listen(([127, 0, 0, 1], 0).into())
            .await
            .map_err(EmbeddedError::Io)?;
        let addr = listener.local_addr().map_err(EmbeddedError::Io)?;
        let stop = CancellationToken::new();
        let stopped = stop.clone();
        let serving =
            tokio::spawn(server.serve(listener, async move { stopped.cancelled().await }));
        let client = Client::new(&format!("http://{addr}")).expect("a loopback URL is valid");
        Ok(EmbeddedServer {
            addr,
            client,
            stop,
            serving,
        })
    }
}

/// A running in-process Rota server.
#[derive(Debug)]
pub struct EmbeddedServer {
    addr: SocketAddr,
    client: Client,
    stop: CancellationToken,
    serving: tokio::task::JoinHandle<std::io::Result<()>>,
}

impl EmbeddedServer {
    /// A server on the SQLite file at `path` (created if missing).
    pub fn builder(path: impl Into<PathBuf>) -> EmbeddedBuilder {
        EmbeddedBuilder {
            path: path.into(),
            queues: vec![],
        }
    }

    /// A client for it.
    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// Its base URL, such as `http://127.0.0.1:41234` (for other processes, or `rota
    /// --url`).
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops serving (requests in flight finish), stops the engine services and returns.
    pub async fn shutdown(self) -> Result<(), EmbeddedError> {
        self.stop.cancel();
        match self.serving.await {
            Ok(served) => served.map_err(EmbeddedError::Io),
            Err(join) => Err(EmbeddedError::Io(std::io::Error::other(join))),
        }
    }
}
