//! What every handler shares.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rota_core::Clock;
use rota_engine::WakeHub;
use rota_store::{Notifiers, PolicyDefaults, Store};

use crate::diagnostics::Diagnostics;

/// Largest request body unless configured otherwise.
pub const BODY_LIMIT_DEFAULT: usize = 1024 * 1024;
/// Lease length for fetched jobs unless their queue sets one.
pub const LEASE_DEFAULT: Duration = Duration::from_secs(30);
/// How long a connection has to deliver a request's headers (and longest a keep-alive
/// connection may sit idle) unless configured otherwise.
pub const HEADER_TIMEOUT_DEFAULT: Duration = Duration::from_secs(30);

/// How long start-up waits, by default, for a network database that does not answer yet
/// (restarting beside this node), before it gives up with the reason.
pub const DATABASE_WAIT_DEFAULT: Duration = Duration::from_secs(30);
/// Longest a fetch or a job wait may hold a request open.
pub const WAIT_MAX: Duration = Duration::from_secs(60);

/// Server settings (resolved: defaults applied).
#[derive(Debug, Clone)]
pub struct ServerConfig {
    /// Largest request body, in bytes.
    pub body_limit: usize,
    /// Default lease length.
    pub lease: Duration,
    /// How long a connection has to deliver a request's headers, and longest it may sit
    /// idle between requests; then it is closed.
    pub header_timeout: Duration,
    /// How long start-up waits for a network database that does not answer (zero: not at
    /// all); a file database that cannot be opened ends the start at once either way.
    pub database_wait: Duration,
    /// Retry-policy layers and payload limits.
    pub defaults: Arc<PolicyDefaults>,
    /// Accepted bearer tokens (none: auth off, loopback only).
    pub auth: crate::auth::Auth,
    /// This node's id, the holder of the maintenance leadership when it leads.
    pub node: String,
    /// How long finished jobs are kept (each queue may set its own).
    pub retention: rota_store::Retention,
    /// Most snoozes a job may have; the one beyond counts as a failed attempt.
    pub max_snoozes: u32,
}

/// A node id unique to this process: host, process id and start time.
pub fn node_id() -> String {
    let host = std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into());
    let started = jiff::Timestamp::now().as_millisecond();
    format!("{host}:{}:{started}", std::process::id())
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            body_limit: BODY_LIMIT_DEFAULT,
            lease: LEASE_DEFAULT,
            header_timeout: HEADER_TIMEOUT_DEFAULT,
            database_wait: DATABASE_WAIT_DEFAULT,
            defaults: Arc::default(),
            auth: crate::auth::Auth::default(),
            node: node_id(),
            retention: rota_store::Retention::default(),
            max_snoozes: rota_store::MAX_SNOOZES_DEFAULT,
        }
    }
}

/// The state handlers share.
#[derive(Clone)]
pub struct AppState {
    /// The store.
    pub store: Arc<dyn Store>,
    /// Where "now" comes from.
    pub clock: Arc<dyn Clock>,
    /// Wake-ups for long polls (fetches and job waits), fed by the store's job changes.
    pub wake: WakeHub,
    /// The shared diagnostics snapshot behind `/readyz`, `/metrics` and the doctor.
    pub diagnostics: Arc<Diagnostics>,
    /// Settings.
    pub config: Arc<ServerConfig>,
    /// Workers already registered by this process (registration is once per worker).
    pub registered: Arc<Mutex<HashSet<String>>>,
    /// Cancelled when the server shuts down: long polls answer at once instead of holding
    /// the shutdown up until their wait elapses.
    pub shutdown: tokio_util::sync::CancellationToken,
    /// Told when schedules change through the API, so the scheduler re-plans at once.
    pub schedules_changed: Arc<tokio::sync::Notify>,
    /// Prometheus metrics.
    pub metrics: Arc<crate::metrics::Metrics>,
    /// The engine services started for this server (see `maintenance::spawn`).
    pub services: Arc<Mutex<Vec<tokio::task::JoinHandle<()>>>>,
    /// Rate-limited tokens' buckets.
    pub token_buckets: Arc<crate::auth::TokenBuckets>,
    /// The dashboard's own state (charts' buckets, live stream).
    pub dashboard: Arc<crate::dashboard::Dashboard>,
}

/// How often a long poll looks again on a store that other nodes write to (notifications
/// from them are a hint, and may be lost while a connection is re-established).
pub const SAFETY_POLL: std::time::Duration = std::time::Duration::from_secs(2);

impl AppState {
    /// State over `store` with `config`. Attaches the store's notifier: every committed
    /// job change wakes waiting fetches and job waits and is counted in the metrics.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, config: ServerConfig) -> Self {
        let wake = WakeHub::new();
        let metrics: Arc<crate::metrics::Metrics> = Arc::default();
        let dashboard = Arc::new(crate::dashboard::Dashboard::new(clock.clone()));
        store.notifier_set(Arc::new(Notifiers(vec![
            Arc::new(wake.clone()),
            metrics.clone(),
            dashboard.timeline.clone(),
            dashboard.live.clone(),
        ])));
        Self {
            diagnostics: Arc::new(Diagnostics::new(
                store.clone(),
                clock.clone(),
                config.retention,
            )),
            store,
            clock,
            wake,
            config: Arc::new(config),
            registered: Arc::default(),
            shutdown: tokio_util::sync::CancellationToken::new(),
            schedules_changed: Arc::new(tokio::sync::Notify::new()),
            services: Arc::default(),
            token_buckets: Arc::default(),
            dashboard,
            metrics,
        }
    }

    /// When a long poll that would sleep until `until` must look again even though nothing
    /// woke it: `until` on a store only this process writes; at most [`SAFETY_POLL`] from
    /// now where other nodes write too, so that a lost cross-node notification delays a
    /// fetch or a wait by at most that.
    pub fn look_again_by(&self, until: tokio::time::Instant) -> tokio::time::Instant {
        if self.store.capabilities().multi_node {
            until.min(tokio::time::Instant::now() + SAFETY_POLL)
        } else {
            until
        }
    }

    /// How many engine services are running, of how many started.
    pub fn services_running(&self) -> (usize, usize) {
        let services = self.services.lock().expect("services poisoned");
        (
            services.iter().filter(|h| !h.is_finished()).count(),
            services.len(),
        )
    }

    /// Waits for the engine services to stop (after shutdown was signalled to them).
    pub async fn join_services(&self) {
        let handles: Vec<_> = self
            .services
            .lock()
            .expect("services poisoned")
            .drain(..)
            .collect();
        for handle in handles {
            let _ = handle.await;
        }
    }
}
