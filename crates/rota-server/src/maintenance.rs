//! The engine's services, started beside the HTTP server: the leadership elector, the
//! rescuer, the pruner and the scheduler (which run only while this node leads), and the
//! diagnostics refresher and the dashboard's live producer (which run on every node).

use std::sync::Arc;

use rota_core::Clock;
use rota_engine::{
    service, Elector, ElectorConfig, Pruner, PrunerConfig, Rescuer, RescuerConfig, Scheduler,
    SchedulerConfig,
};
use rota_store::Store;
use tokio_util::sync::CancellationToken;

/// Starts the services for the server with `state` (recorded in `state.services` for
/// readiness); they stop when `shutdown` is cancelled, and the leader resigns.
pub(crate) fn spawn(
    state: &crate::AppState,
    shutdown: CancellationToken,
    longest_lease: std::time::Duration,
) {
    let (store, clock): (Arc<dyn Store>, Arc<dyn Clock>) =
        (state.store.clone(), state.clock.clone());
    let observer: Arc<dyn rota_engine::EngineObserver> = state.metrics.clone();
    let (elector, leader) =
        Elector::new(store.clone(), ElectorConfig::new(state.config.node.clone()));
    let elector = tokio::spawn(elector.run(clock.clone(), shutdown.clone()));
    let (rescuer, _) = service::spawn_led(
        Rescuer::new(
            store.clone(),
            RescuerConfig {
                // After a restart, every lease gets a full period to heartbeat again.
                startup_grace: longest_lease,
                ..RescuerConfig::default()
            },
        ),
        clock.clone(),
        shutdown.clone(),
        leader.clone(),
    );
    let (pruner, _) = service::spawn_led(
        Pruner::new(
            store.clone(),
            PrunerConfig {
                retention: state.config.retention,
                ..PrunerConfig::default()
            },
        ),
        clock.clone(),
        shutdown.clone(),
        leader.clone(),
    );
    let scheduler = Scheduler::new(
        store,
        SchedulerConfig::default(),
        state.config.defaults.clone(),
    )
    .with_changed(state.schedules_changed.clone())
    .with_observer(observer)
    .with_leader(leader);
    let scheduler = tokio::spawn(scheduler.run(clock, shutdown.clone()));
    let live = tokio::spawn(
        state
            .dashboard
            .live
            .clone()
            .run(state.clone(), shutdown.clone()),
    );
    let diagnostics = tokio::spawn(state.diagnostics.clone().run(shutdown));
    state.services.lock().expect("services poisoned").extend([
        elector,
        rescuer,
        pruner,
        scheduler,
        diagnostics,
        live,
    ]);
}
