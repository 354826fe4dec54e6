//! The shape every background service shares: `run_once(now)` plus a loop that only starts,
//! ticks, wakes and stops.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rota_core::Clock;
use rota_store::StoreError;
use tokio::sync::{watch, Notify};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tracing::warn;

/// Failed passes, logged at most once per [`crate::QUIET_PERIOD`].
static PASS_FAILED: crate::LogThrottle = crate::LogThrottle::new(crate::QUIET_PERIOD);

/// A periodic maintenance service.
pub trait Service: Send + Sync + 'static {
    /// What one pass did.
    type Report: ServiceReport;
    /// The service's name, for logs.
    fn name(&self) -> &'static str;
    /// Time between passes.
    fn interval(&self) -> Duration;
    /// One pass at `now`. Tests call this directly.
    fn run_once(
        &self,
        now: Timestamp,
    ) -> impl Future<Output = Result<Self::Report, StoreError>> + Send;
}

/// What a service reports after a pass.
pub trait ServiceReport: Send {
    /// Whether the pass did nothing (nothing is logged then).
    fn is_empty(&self) -> bool;
    /// Logs what the pass did.
    fn log(&self, service: &'static str);
}

/// A running service's controls: wake it now, or wait for its passes.
#[derive(Debug, Clone)]
pub struct ServiceHandle {
    wake: Arc<Notify>,
    passes: watch::Receiver<u64>,
}

impl ServiceHandle {
    /// Runs a pass now instead of at the next tick.
    pub fn trigger(&self) {
        self.wake.notify_one();
    }

    /// Waits until at least `n` passes have completed since the service started.
    pub async fn wait_for_passes(&mut self, n: u64) {
        let _ = self.passes.wait_for(|done| *done >= n).await;
    }
}

/// Starts `service` on the current runtime; it stops when `shutdown` is cancelled.
pub fn spawn<S: Service>(
    service: S,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> (JoinHandle<()>, ServiceHandle) {
    spawn_led(service, clock, shutdown, crate::LeaderFlag::always())
}

/// Starts `service` so that its passes run only while `leader` says this node leads.
pub fn spawn_led<S: Service>(
    service: S,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
    leader: crate::LeaderFlag,
) -> (JoinHandle<()>, ServiceHandle) {
    let wake = Arc::new(Notify::new());
    let (passes_tx, passes_rx) = watch::channel(0);
    let handle = ServiceHandle {
        wake: wake.clone(),
        passes: passes_rx,
    };
    let task = tokio::spawn(async move {
        let mut ticker = tokio::time::interval(service.interval());
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
                _ = wake.notified() => {}
                _ = leader.changed() => {}
            }
            if !leader.is_leader() {
                continue;
            }
            match service.run_once(clock.now()).await {
                Ok(report) if report.is_empty() => {}
                Ok(report) => report.log(service.name()),
                // One failed pass never ends the loop.
                Err(err) => {
                    if let Some(held_back) = PASS_FAILED.admit(std::time::Instant::now()) {
                        warn!(service = service.name(), error = %err, held_back, "pass failed; retrying next tick (logged at most every 10 s)")
                    }
                }
            }
            passes_tx.send_modify(|n| *n += 1);
        }
    });
    (task, handle)
}
