//! Enqueueing inside the application's own PostgreSQL transaction (feature `postgres`): the
//! job exists if and only if the transaction commits, so "the order is saved but its email
//! job is lost" (or the reverse) cannot happen.
//!
//! Policy: the job's own retry settings (from its [`Job`]) and its queue's apply as with any
//! enqueue; the server-wide `[defaults]` and `[kinds]` layers of `rota.toml` are not known
//! to the application, so the built-in defaults stand in for them.

use std::sync::Arc;

use rota_postgres::PostgresStore;
use rota_store::{JobInsertManyParams, PolicyDefaults};

use crate::enqueue::JobHandle;
use crate::job::{request_for, Job};
use crate::{Client, ClientError};

/// Why a transactional enqueue failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnqueueInError {
    /// The job is not valid (the field is named).
    #[error("invalid job: {0}")]
    Invalid(#[from] rota_core::ValidationError),
    /// Its arguments do not serialize.
    #[error(transparent)]
    Args(ClientError),
    /// The database refused it (queue not declared, queue full, connection lost).
    #[error("storing the job in the transaction")]
    Store(#[from] rota_store::StoreError),
}

impl Client {
    /// Enqueues `job` inside `transaction` (a connection to the database Rota's PostgreSQL
    /// backend uses, at the current schema). The job exists, and workers hear of it, when
    /// the transaction commits; nothing of it remains if it rolls back. The handle follows
    /// it through this client once committed.
    ///
    /// ```no_run
    /// # use serde::{Deserialize, Serialize};
    /// # #[derive(Serialize, Deserialize)] struct ShipOrder { order: i32 }
    /// # impl rota::Job for ShipOrder {
    /// #     const KIND: &'static str = "order.ship";
    /// #     const QUEUE: &'static str = "orders";
    /// #     type Output = ();
    /// # }
    /// # async fn demo(client: rota::Client, db: &mut tokio_postgres::Client) -> Result<(), Box<dyn std::error::Error>> {
    /// let tx = db.transaction().await?;
    /// tx.execute("INSERT INTO orders (id) VALUES ($1)", &[&42]).await?;
    /// let handle = client.enqueue_in(&tx, ShipOrder { order: 42 }).await?;
    /// tx.commit().await?;
    /// handle.wait().await?;
    /// # Ok(()) }
    /// ```
    pub async fn enqueue_in<J: Job>(
        &self,
        transaction: &tokio_postgres::Transaction<'_>,
        job: J,
    ) -> Result<JobHandle<J::Output>, EnqueueInError> {
        let request = request_for(&job).map_err(|source| {
            EnqueueInError::Args(ClientError::Args {
                kind: J::KIND.into(),
                source,
            })
        })?;
        let now = rota_core::Clock::now(&rota_core::SystemClock);
        let new_job = request.into_new_job(now)?;
        let mut inserted = PostgresStore::enqueue_in(
            transaction,
            JobInsertManyParams {
                jobs: vec![new_job],
                defaults: Arc::new(PolicyDefaults::default()),
                now,
            },
        )
        .await?;
        let inserted = inserted.remove(0);
        Ok(self
            .job_handle(inserted.job.id.to_string())
            .duplicate(inserted.duplicate))
    }
}
