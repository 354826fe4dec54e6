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

/// Grace after the first pass during which nothing is rescued, unless configured: the
/// default lease.
pub const RESCUER_STARTUP_GRACE_DEFAULT: Duration = Duration::from_secs(30);

/// Rescuer settings.
#[derive(Debug, Clone)]
pub struct RescuerConfig {
    /// Time between passes.
    pub interval: Duration,
    /// Jobs per store call.
    pub batch: usize,
    /// After the rescuer starts (its first pass), how long it leaves every lease alone: the
    /// longest lease a job can have. While this server was down, live workers could not
    /// heartbeat, so their leases look expired; this gives each one a full lease period,
    /// counted from start-up, to heartbeat again before it is rescued.
    pub startup_grace: Duration,
}

impl Default for RescuerConfig {
    fn default() -> Self {
        Self {
            interval: RESCUER_INTERVAL_DEFAULT,
            batch: RESCUER_BATCH_DEFAULT,
            startup_grace: RESCUER_STARTUP_GRACE_DEFAULT,
        }
    }
}

/// Returns jobs whose workers stopped heartbeating to retry. Each rescue counts as a failed
/// attempt, so a job that kills its worker every time ends dead instead of looping.
pub struct Rescuer {
    store: Arc<dyn Store>,
    config: RescuerConfig,
    started: std::sync::OnceLock<Timestamp>,
}

impl Rescuer {
    /// A rescuer over `store`.
    pub fn new(store: Arc<dyn Store>, config: RescuerConfig) -> Self {
        assert!(config.batch > 0, "RescuerConfig.batch must be above zero");
        Self {
            store,
            config,
            started: std::sync::OnceLock::new(),
        }
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
        let started = *self.started.get_or_init(|| now);
        if now < rota_core::add_duration(started, self.config.startup_grace) {
            return Ok(total);
        }
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
