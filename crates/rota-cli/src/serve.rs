//! `rota serve`: open the store, reconcile queues, start the engine, serve HTTP until
//! SIGINT or SIGTERM, then shut down in order.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use rota_core::{Clock, SystemClock};
use rota_server::{AppState, ServerConfig};
use rota_sqlite::{SqliteOptions, SqliteStore};
use rota_store::{PolicyDefaults, QueueDeclareParams, Store};
use tokio_util::sync::CancellationToken;
use tracing::info;

use crate::cli::ServeArgs;
use crate::config;

/// Runs the server until a shutdown signal.
pub async fn run(args: ServeArgs) -> anyhow::Result<ExitCode> {
    init_logging();
    let config = config::resolve(&args)?;
    if !config.bind.ip().is_loopback() && !config.auth.enabled() && !config.insecure_no_auth {
        bail!(
            "refusing to listen on {}: no auth tokens are configured, so anyone who can reach it could run jobs; bind a loopback address (127.0.0.1) or pass --insecure-no-auth",
            config.bind
        );
    }
    let listener = tokio::net::TcpListener::bind(config.bind).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!("cannot listen on {}: the address is in use (another rota?); choose another with --bind", config.bind)
        } else {
            anyhow::anyhow!("cannot listen on {}: {e}", config.bind)
        }
    })?;
    let mut options = SqliteOptions::new(&config.database);
    options.durability = config.durability;
    let store = tokio::task::spawn_blocking(move || SqliteStore::open(options))
        .await
        .context("opening the database")?
        .with_context(|| format!("opening database {}", config.database.display()))?;
    let migration = store.migration();
    if migration.from == migration.to {
        info!(schema = migration.to, database = %config.database.display(), "database schema is current");
    } else {
        info!(from = migration.from, to = migration.to, database = %config.database.display(), "applied database migrations");
    }
    if config.durability == rota_sqlite::Durability::Normal {
        tracing::warn!(
            "durability = normal: acknowledged jobs survive a crash of rota, not a power loss"
        );
    }
    let store: Arc<dyn Store> = Arc::new(store);
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
    for (name, queue) in &config.queues {
        store
            .queue_declare(QueueDeclareParams {
                name: name.clone(),
                config: queue.clone(),
                now: clock.now(),
            })
            .await
            .with_context(|| format!("declaring queue {name:?} from the config file"))?;
    }
    reconcile_schedules(&*store, &config.schedules, clock.now()).await?;
    let defaults = PolicyDefaults {
        retry: rota_core::RetryPolicy::resolve(
            &config.retry,
            None,
            None,
            &rota_core::RetryPolicy::default(),
        ),
        kinds: config.kinds.clone().into_iter().collect(),
        limits: rota_core::Limits::default(),
    };
    if config.auth.enabled() {
        info!(tokens = config.auth.tokens.len(), "bearer-token auth is on");
    }
    let state = AppState::new(
        store.clone(),
        clock.clone(),
        ServerConfig {
            body_limit: config.body_limit,
            lease: config.lease,
            defaults: Arc::new(defaults),
            auth: config.auth.clone(),
        },
    );
    let shutdown = CancellationToken::new();
    rota_server::maintenance::spawn(&state, shutdown.clone());
    let services = state.clone();
    info!(address = %config.bind, "rota listening on http://{}", config.bind);
    let signal = shutdown.clone();
    rota_server::serve(listener, state, async move {
        wait_for_signal().await;
        info!("shutting down: finishing in-flight requests");
        signal.cancel();
    })
    .await
    .context("serving HTTP")?;
    shutdown.cancel();
    services.join_services().await;
    // Dropping the last handle flushes and stops the writer.
    drop(store);
    info!("stopped");
    Ok(ExitCode::SUCCESS)
}

async fn wait_for_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("installing the SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

pub fn init_logging() {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    let _ = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .try_init();
}

/// Makes the stored config schedules match the file: adds and updates the file's, removes
/// config schedules no longer in it (their jobs stay). API schedules are left alone.
async fn reconcile_schedules(
    store: &dyn Store,
    schedules: &[rota_core::schedule::ScheduleDef],
    now: jiff::Timestamp,
) -> anyhow::Result<()> {
    for def in schedules {
        store
            .schedule_upsert(rota_store::ScheduleUpsertParams {
                schedule: def.clone(),
                now,
            })
            .await
            .with_context(|| format!("saving schedule {:?} from the config file", def.name))?;
    }
    for record in store.schedule_list().await? {
        let gone = record.schedule.source == rota_core::schedule::ScheduleSource::Config
            && !schedules.iter().any(|d| d.name == record.schedule.name);
        if gone {
            store.schedule_delete(&record.schedule.name).await?;
            info!(schedule = %record.schedule.name, "removed schedule no longer in the config file");
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
