//! The services every Rota node runs, on top of an `Arc<dyn Store>`; no HTTP, no SQL.
//!
//! Each maintenance service ([`Rescuer`], [`Pruner`]) is a [`Service`]: a `run_once(now)`
//! that tests call directly with a manual clock, and a loop ([`service::spawn`]) that only
//! ticks, wakes, and stops. [`WakeHub`] fans "a job is ready on queue Q" out to long-polling
//! fetches so that they return at once instead of sleeping and polling.

pub mod doctor;
mod pruner;
mod rescuer;
pub mod scheduler;
pub mod service;
mod wake;

pub use pruner::{Pruner, PrunerConfig};
pub use rescuer::{Rescuer, RescuerConfig};
pub use scheduler::{Recovery, Scheduler, SchedulerConfig, SchedulerReport};
pub use service::{Service, ServiceHandle, ServiceReport};
pub use wake::{Subscription, WakeHub};

/// Hears what the engine's services did, for metrics. Every method does nothing by default.
pub trait EngineObserver: Send + Sync {
    /// Expired leases were rescued.
    fn rescued(&self, _report: &rota_store::RescueReport) {}
    /// A schedule fired `slots` slots, `recovered` of them missed ones, enqueuing `jobs`.
    fn fired(
        &self,
        _schedule: &str,
        _slots: usize,
        _recovered: usize,
        _jobs: &[rota_store::Inserted],
    ) {
    }
}
