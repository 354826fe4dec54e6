//! The services every Rota node runs, on top of an `Arc<dyn Store>`; no HTTP, no SQL.
//!
//! Each maintenance service ([`Rescuer`], [`Pruner`]) is a [`Service`]: a `run_once(now)`
//! that tests call directly with a manual clock, and a loop ([`service::spawn`]) that only
//! ticks, wakes, and stops; they run only on the node whose [`Elector`] holds the store's
//! leadership row. [`WakeHub`] is the store's notifier for long polls: a job becoming ready
//! wakes as many waiting fetches as there are ready jobs, so they return at once instead of
//! sleeping and polling.

pub mod doctor;
mod leader;
mod log_throttle;
mod pruner;
mod rescuer;
pub mod scheduler;
pub mod service;
mod wake;

pub use leader::{Elector, ElectorConfig, LeaderFlag, MAINTENANCE};
pub use log_throttle::{LogThrottle, QUIET_PERIOD};
pub use pruner::{Pruner, PrunerConfig};
pub use rescuer::{Rescuer, RescuerConfig};
pub use scheduler::{Recovery, Scheduler, SchedulerConfig, SchedulerReport};
pub use service::{Service, ServiceHandle, ServiceReport};
pub use wake::{Subscription, WakeHub};

/// Hears what the engine's services did beyond job changes (those reach the store's
/// notifier), for metrics. Every method does nothing by default.
pub trait EngineObserver: Send + Sync {
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
