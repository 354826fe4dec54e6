//! The pruner: deletes finished jobs past their retention; dead jobs only when told to.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rota_store::{JobPruneParams, PruneReport, Store, StoreError};
use tracing::info;

use crate::{Service, ServiceReport};

/// How often the pruner runs.
pub const PRUNER_INTERVAL_DEFAULT: Duration = Duration::from_secs(60);
/// How long completed jobs are kept.
pub const COMPLETED_RETENTION_DEFAULT: Duration = Duration::from_secs(24 * 3600);
/// How long cancelled jobs are kept.
pub const CANCELLED_RETENTION_DEFAULT: Duration = Duration::from_secs(24 * 3600);
/// Most jobs deleted per store call.
pub const PRUNER_BATCH_DEFAULT: usize = 5000;

/// Pruner settings.
#[derive(Debug, Clone)]
pub struct PrunerConfig {
    /// Time between passes.
    pub interval: Duration,
    /// Completed jobs older than this go.
    pub completed_retention: Duration,
    /// Cancelled jobs older than this go.
    pub cancelled_retention: Duration,
    /// Dead jobs are kept forever unless this is set: a dead-letter queue is never purged
    /// by accident.
    pub dead_retention: Option<Duration>,
    /// Jobs per store call.
    pub batch: usize,
}

impl Default for PrunerConfig {
    fn default() -> Self {
        Self {
            interval: PRUNER_INTERVAL_DEFAULT,
            completed_retention: COMPLETED_RETENTION_DEFAULT,
            cancelled_retention: CANCELLED_RETENTION_DEFAULT,
            dead_retention: None,
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
        loop {
            let report = self
                .store
                .job_prune(JobPruneParams {
                    now,
                    completed_retention: self.config.completed_retention,
                    cancelled_retention: self.config.cancelled_retention,
                    dead_retention: self.config.dead_retention,
                    limit: self.config.batch,
                })
                .await?;
            total.completed += report.completed;
            total.cancelled += report.cancelled;
            total.dead += report.dead;
            let batch = self.config.batch as u64;
            if report.completed < batch && report.cancelled < batch && report.dead < batch {
                return Ok(total);
            }
        }
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
