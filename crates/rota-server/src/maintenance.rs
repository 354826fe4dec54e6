//! The engine's services, started beside the HTTP server.

use std::sync::Arc;

use rota_core::Clock;
use rota_engine::{
    service, Pruner, PrunerConfig, Rescuer, RescuerConfig, Scheduler, SchedulerConfig,
};
use rota_store::Store;
use tokio_util::sync::CancellationToken;

/// Starts the rescuer, the pruner and the scheduler for the server with `state` (recorded in
/// `state.services` for readiness); they stop when `shutdown` is cancelled.
pub fn spawn(state: &crate::AppState, shutdown: CancellationToken) {
    let (store, clock): (Arc<dyn Store>, Arc<dyn Clock>) =
        (state.store.clone(), state.clock.clone());
    let observer: Arc<dyn rota_engine::EngineObserver> = state.metrics.clone();
    let rescuer =
        Rescuer::new(store.clone(), RescuerConfig::default()).with_observer(observer.clone());
    let (rescuer, _) = service::spawn(rescuer, clock.clone(), shutdown.clone());
    let (pruner, _) = service::spawn(
        Pruner::new(store.clone(), PrunerConfig::default()),
        clock.clone(),
        shutdown.clone(),
    );
    let scheduler = Scheduler::new(
        store,
        SchedulerConfig::default(),
        state.config.defaults.clone(),
    )
    .with_wake(state.wake.clone())
    .with_changed(state.schedules_changed.clone())
    .with_observer(observer);
    let scheduler = tokio::spawn(scheduler.run(clock, shutdown));
    state
        .services
        .lock()
        .expect("services poisoned")
        .extend([rescuer, pruner, scheduler]);
}
