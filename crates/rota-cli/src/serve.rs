//! `rota serve`: resolve the configuration, open the store, start the [`rota_server::Server`]
//! (migrations, configured queues and schedules, engine services), serve HTTP until SIGINT
//! or SIGTERM, then shut down in order.

use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{bail, Context};
use rota_core::{Clock, SystemClock};
use rota_server::{Server, ServerConfig, Startup};
use rota_store::PolicyDefaults;
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
    let listener = rota_server::listen(config.bind).await.map_err(|e| {
        if e.kind() == std::io::ErrorKind::AddrInUse {
            anyhow::anyhow!("cannot listen on {}: the address is in use (another rota?); choose another with --bind", config.bind)
        } else {
            anyhow::anyhow!("cannot listen on {}: {e}", config.bind)
        }
    })?;
    let open = crate::store::OpenOptions {
        durability: config.durability,
        create_database: config.create_database,
        pool_size: config.pool_size,
        wait: config.database_wait,
    };
    let store = crate::store::open_store(&config.database, &open).await?;
    if config.durability == rota_sqlite::Durability::Normal {
        tracing::warn!(
            "durability = normal: acknowledged jobs survive a crash of rota, not a power loss"
        );
    }
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);
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
    let server = Server::start(
        store,
        clock,
        ServerConfig {
            body_limit: config.body_limit,
            lease: config.lease,
            header_timeout: config.header_timeout,
            database_wait: config.database_wait,
            defaults: Arc::new(defaults),
            auth: config.auth.clone(),
            retention: config.retention,
            max_snoozes: config.max_snoozes,
            ..ServerConfig::default()
        },
        Startup {
            queues: config.queues.clone().into_iter().collect(),
            schedules: config.schedules.clone(),
        },
    )
    .await
    .with_context(|| format!("starting on database {}", config.database))?;
    let migration = server.migration();
    if migration.from == migration.to {
        info!(schema = migration.to, database = %config.database, "database schema is current");
    } else {
        info!(from = migration.from, to = migration.to, database = %config.database, "applied database migrations");
    }
    info!(address = %config.bind, "rota listening on http://{}", config.bind);
    server
        .serve(listener, async move {
            wait_for_signal().await;
            info!("shutting down: finishing in-flight requests");
        })
        .await
        .context("serving HTTP")?;
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
