//! The pruner: deletes finished jobs past their retention; dead jobs only when told to.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rota_store::{
    retention_for, JobPruneParams, PruneReport, QueueListParams, Retention, Store, StoreError,
};
use tracing::info;

use crate::{Service, ServiceReport};

/// How often the pruner runs.
pub const PRUNER_INTERVAL_DEFAULT: Duration = Duration::from_secs(60);
/// Most jobs deleted per store call.
pub const PRUNER_BATCH_DEFAULT: usize = 5000;

/// Pruner settings.
#[derive(Debug, Clone)]
pub struct PrunerConfig {
    /// Time between passes.
    pub interval: Duration,
    /// The server's retention: completed and cancelled jobs 24 h by default; dead jobs kept
    /// until purged unless set (a dead-letter queue is never emptied by accident). Each
    /// queue's own settings win over it ([`rota_store::retention_for`]).
    pub retention: Retention,
    /// Jobs per store call.
    pub batch: usize,
}

impl Default for PrunerConfig {
    fn default() -> Self {
        Self {
            interval: PRUNER_INTERVAL_DEFAULT,
            retention: Retention::default(),
            batch: PRUNER_BATCH_DEFAULT,
        }
    }
}

/// Deletes old finished jobs in batches, so one pass never holds the writer for long.
pub struct Pruner {
    store: Arc<dyn Store>,
    config: PrunerConfig,
}

impl Pruner {
    /// A pruner over `store`.
    pub fn new(store: Arc<dyn Store>, config: PrunerConfig) -> Self {
        assert!(config.batch > 0, "PrunerConfig.batch must be above zero");
        Self { store, config }
    }
}

impl Service for Pruner {
    type Report = PruneReport;

    fn name(&self) -> &'static str {
        "pruner"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    async fn run_once(&self, now: Timestamp) -> Result<PruneReport, StoreError> {
        let mut total = PruneReport::default();
        // Per queue, with the queue's own retention over the server's.
        for q in self.store.queue_list(QueueListParams { now }).await? {
            let retention = retention_for(&q.queue.config, &self.config.retention);
            loop {
                let report = self
                    .store
                    .job_prune(JobPruneParams {
                        queue: Some(q.queue.name.clone()),
                        now,
                        completed_retention: retention.completed,
                        cancelled_retention: retention.cancelled,
                        dead_retention: retention.dead,
                        limit: self.config.batch,
                    })
                    .await?;
                total.completed += report.completed;
                total.cancelled += report.cancelled;
                total.dead += report.dead;
                let batch = self.config.batch as u64;
                if report.completed < batch && report.cancelled < batch && report.dead < batch {
                    break;
                }
            }
        }
        Ok(total)
    }
}

impl ServiceReport for PruneReport {
    fn is_empty(&self) -> bool {
        PruneReport::is_empty(self)
    }

    fn log(&self, service: &'static str) {
        info!(
            service,
            completed = self.completed,
            cancelled = self.cancelled,
            dead = self.dead,
            "pruned finished jobs"
        );
    }
}
