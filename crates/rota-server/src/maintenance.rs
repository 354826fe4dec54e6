//! The engine's maintenance services, started beside the HTTP server.

use std::sync::Arc;

use rota_core::Clock;
use rota_engine::{service, Pruner, PrunerConfig, Rescuer, RescuerConfig};
use rota_store::Store;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Starts the rescuer and the pruner; they stop when `shutdown` is cancelled.
pub fn spawn(
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    shutdown: CancellationToken,
) -> Vec<JoinHandle<()>> {
    let (rescuer, _) = service::spawn(
        Rescuer::new(store.clone(), RescuerConfig::default()),
        clock.clone(),
        shutdown.clone(),
    );
    let (pruner, _) = service::spawn(Pruner::new(store, PrunerConfig::default()), clock, shutdown);
    vec![rescuer, pruner]
}
