//! The server assembly: one [`Server`] owns the store, the engine services and the router,
//! and shuts them down in order. `rota serve` resolves its configuration, opens the store
//! and calls [`Server::start`] then [`Server::serve`]; nothing else is assembled by hand.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use rota_core::schedule::{ScheduleDef, ScheduleSource};
use rota_core::Clock;
use rota_store::{
    MigrationReport, QueueConfig, QueueDeclareParams, QueueListParams, ScheduleDeleteParams,
    ScheduleListParams, ScheduleUpsertParams, Store, StoreError, StoreMigrateParams,
};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::{AppState, ServerConfig};

/// Why a server could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The schema could not be brought up to date (or is newer than this binary).
    #[error("migrating the database")]
    Migrate(#[source] StoreError),
    /// The store could not be read while starting.
    #[error("reading the store")]
    Store(#[source] StoreError),
    /// A queue from the configuration could not be declared.
    #[error("declaring queue {name:?} from the config file")]
    Queue {
        /// The queue.
        name: String,
        /// Why.
        #[source]
        source: StoreError,
    },
    /// A schedule from the configuration could not be saved or an old one removed.
    #[error("reconciling schedule {name:?} from the config file")]
    Schedule {
        /// The schedule.
        name: String,
        /// Why.
        #[source]
        source: StoreError,
    },
}

/// What the server sets up at start, beyond [`ServerConfig`].
#[derive(Debug, Clone, Default)]
pub struct Startup {
    /// Queues to declare (or update), from the configuration file.
    pub queues: Vec<(String, QueueConfig)>,
    /// The configuration file's schedules: added or updated; config schedules no longer
    /// listed are removed (their jobs stay); API schedules are left alone.
    pub schedules: Vec<ScheduleDef>,
}

/// A running Rota node: store, engine services, HTTP router.
pub struct Server {
    state: AppState,
    shutdown: CancellationToken,
    migration: MigrationReport,
}

impl std::fmt::Debug for Server {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Server")
            .field("migration", &self.migration)
            .finish()
    }
}

impl Server {
    /// Migrates the store, declares the configured queues, reconciles the configured
    /// schedules and starts the engine services (leadership, rescuer, pruner, scheduler,
    /// diagnostics).
    pub async fn start(
        store: Arc<dyn Store>,
        clock: Arc<dyn Clock>,
        config: ServerConfig,
        startup: Startup,
    ) -> Result<Self, StartError> {
        let migration = migrate(&*store, &*clock, config.database_wait).await?;
        // The steps after migrating read and write the store too; a database server that
        // restarts between them (R3) is waited for as migrating waits for it.
        let started = tokio::time::Instant::now();
        let network = store.capabilities().multi_node;
        let longest_lease = loop {
            match prepare(&*store, &*clock, config.lease, &startup).await {
                Err(err)
                    if network
                        && err.is_unavailable()
                        && started.elapsed() < config.database_wait =>
                {
                    tracing::warn!(error = %err, "the database stopped answering while starting; trying again");
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
                other => break other?,
            }
        };
        let state = AppState::new(store, clock, config);
        let shutdown = CancellationToken::new();
        crate::maintenance::spawn(&state, shutdown.clone(), longest_lease);
        Ok(Self {
            state,
            shutdown,
            migration,
        })
    }

    /// What starting did to the schema.
    pub fn migration(&self) -> MigrationReport {
        self.migration
    }

    /// The handlers' shared state (for tests).
    pub fn state(&self) -> &AppState {
        &self.state
    }

    /// Serves HTTP on `listener` until `shutdown` resolves, then lets in-flight requests
    /// finish, stops the engine services (the leader resigns) and returns.
    pub async fn serve(
        self,
        listener: tokio::net::TcpListener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> std::io::Result<()> {
        let served = crate::serve(listener, self.state.clone(), shutdown).await;
        self.shutdown.cancel();
        self.state.join_services().await;
        served
    }
}

/// Declares the configured queues, reconciles the configured schedules, and answers the
/// longest lease of any queue (at least `lease`).
async fn prepare(
    store: &dyn Store,
    clock: &dyn Clock,
    lease: Duration,
    startup: &Startup,
) -> Result<Duration, StartError> {
    for (name, queue) in &startup.queues {
        store
            .queue_declare(QueueDeclareParams {
                name: name.clone(),
                config: queue.clone(),
                // The configuration file is the whole truth for its queues.
                merge: false,
                now: clock.now(),
            })
            .await
            .map_err(|source| StartError::Queue {
                name: name.clone(),
                source,
            })?;
    }
    reconcile_schedules(store, &startup.schedules, clock.now()).await?;
    Ok(store
        .queue_list(QueueListParams { now: clock.now() })
        .await
        .map_err(StartError::Store)?
        .iter()
        .filter_map(|q| q.queue.config.lease)
        .fold(lease, Duration::max))
}

impl StartError {
    /// Whether the store did not answer (a database server restarting).
    fn is_unavailable(&self) -> bool {
        let source = match self {
            StartError::Migrate(e) | StartError::Store(e) => e,
            StartError::Queue { source, .. } | StartError::Schedule { source, .. } => source,
        };
        source.kind() == rota_store::ErrorKind::Unavailable
    }
}

/// How long start-up waits for a database that someone else holds locked.
const MIGRATE_BUSY_WAIT: Duration = Duration::from_secs(60);

/// Migrates the store. A database busy with someone else's transaction (a backup, an
/// operator's session) is waited for, and so is a database server that does not answer yet
/// (it is restarting as this node starts), each with a line in the log, instead of ending the
/// start: a node restarted during a database restart comes up by itself, as Celery's workers
/// do with `broker_connection_retry_on_startup`. A file database that cannot be opened ends
/// the start at once.
/// The server is waited for up to `unavailable_wait` ([`ServerConfig::database_wait`]), with
/// one warning when the waiting starts.
async fn migrate(
    store: &dyn Store,
    clock: &dyn Clock,
    unavailable_wait: Duration,
) -> Result<MigrationReport, StartError> {
    let started = tokio::time::Instant::now();
    let network = store.capabilities().multi_node;
    let mut warned = false;
    loop {
        match store
            .store_migrate(StoreMigrateParams { now: clock.now() })
            .await
        {
            Err(err)
                if err.kind() == rota_store::ErrorKind::Busy
                    && started.elapsed() < MIGRATE_BUSY_WAIT =>
            {
                tracing::warn!(error = %err, "the database is locked by someone else; waiting to migrate it");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            Err(err)
                if network
                    && err.kind() == rota_store::ErrorKind::Unavailable
                    && started.elapsed() < unavailable_wait =>
            {
                if !warned {
                    tracing::warn!(
                        error = %err,
                        "the database does not answer; waiting up to {}s for it (database_wait)",
                        unavailable_wait.as_secs()
                    );
                    warned = true;
                }
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
            other => return other.map_err(StartError::Migrate),
        }
    }
}

/// Makes the stored config schedules match the file: adds and updates the file's, removes
/// config schedules no longer in it (their jobs stay). API schedules are left alone.
async fn reconcile_schedules(
    store: &dyn Store,
    schedules: &[ScheduleDef],
    now: jiff::Timestamp,
) -> Result<(), StartError> {
    let failed = |name: &str| {
        let name = name.to_owned();
        move |source| StartError::Schedule { name, source }
    };
    for def in schedules {
        store
            .schedule_upsert(ScheduleUpsertParams {
                schedule: def.clone(),
                now,
            })
            .await
            .map_err(failed(&def.name))?;
    }
    let stored = store
        .schedule_list(ScheduleListParams::default())
        .await
        .map_err(failed("*"))?;
    for record in stored {
        let name = &record.schedule.name;
        let gone = record.schedule.source == ScheduleSource::Config
            && !schedules.iter().any(|d| &d.name == name);
        if gone {
            store
                .schedule_delete(ScheduleDeleteParams { name: name.clone() })
                .await
                .map_err(failed(name))?;
            info!(schedule = %name, "removed schedule no longer in the config file");
        }
    }
    if !schedules.is_empty() {
        info!(
            schedules = schedules.len(),
            "schedules from the config file are in place"
        );
    }
    Ok(())
}
