//! The rescuer: returns jobs whose lease expired to retry.

use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rota_store::{LeaseRescueParams, RescueReport, Store, StoreError};
use tracing::info;

use crate::{Service, ServiceReport};

/// How often the rescuer looks for expired leases.
pub const RESCUER_INTERVAL_DEFAULT: Duration = Duration::from_secs(5);
/// Most jobs rescued per store call (a pass repeats calls until fewer come back).
pub const RESCUER_BATCH_DEFAULT: usize = 1000;

/// Rescuer settings.
#[derive(Debug, Clone)]
pub struct RescuerConfig {
    /// Time between passes.
    pub interval: Duration,
    /// Jobs per store call.
    pub batch: usize,
}

impl Default for RescuerConfig {
    fn default() -> Self {
        Self {
            interval: RESCUER_INTERVAL_DEFAULT,
            batch: RESCUER_BATCH_DEFAULT,
        }
    }
}

/// Returns jobs whose workers stopped heartbeating to retry. Each rescue counts as a failed
/// attempt, so a job that kills its worker every time ends dead instead of looping.
pub struct Rescuer {
    store: Arc<dyn Store>,
    config: RescuerConfig,
}

impl Rescuer {
    /// A rescuer over `store`.
    pub fn new(store: Arc<dyn Store>, config: RescuerConfig) -> Self {
        assert!(config.batch > 0, "RescuerConfig.batch must be above zero");
        Self { store, config }
    }
}

impl Service for Rescuer {
    type Report = RescueReport;

    fn name(&self) -> &'static str {
        "rescuer"
    }

    fn interval(&self) -> Duration {
        self.config.interval
    }

    async fn run_once(&self, now: Timestamp) -> Result<RescueReport, StoreError> {
        let mut total = RescueReport::default();
        loop {
            let report = self
                .store
                .lease_rescue_expired(LeaseRescueParams {
                    now,
                    limit: self.config.batch,
                })
                .await?;
            let count = report.retried.len() + report.dead.len() + report.cancelled.len();
            total.retried.extend(report.retried);
            total.dead.extend(report.dead);
            total.cancelled.extend(report.cancelled);
            total.outcomes.extend(report.outcomes);
            if count < self.config.batch {
                return Ok(total);
            }
        }
    }
}

impl ServiceReport for RescueReport {
    fn is_empty(&self) -> bool {
        RescueReport::is_empty(self)
    }

    fn log(&self, service: &'static str) {
        info!(
            service,
            retried = self.retried.len(),
            dead = self.dead.len(),
            cancelled = self.cancelled.len(),
            "rescued expired leases"
        );
    }
}
