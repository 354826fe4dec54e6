//! One diagnostics snapshot shared by `/readyz`, `/metrics` and `/v1/doctor`: the doctor's
//! findings, job counts, queues and live workers, taken at most once a second by a
//! background refresher while the server runs (or on demand when there is none), so
//! probes and scrapes read memory instead of running every check against the database.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;
use rota_api::{DoctorReport, FindingView};
use rota_core::Clock;
use rota_engine::doctor::{diagnose, diagnose_observed, Finding, Severity, LIVE_WORKER_WINDOW};
use rota_store::{JobCount, QueueStats, Retention, Store, StoreError};
use tokio_util::sync::CancellationToken;

/// Failed snapshots, logged at most once per [`rota_engine::QUIET_PERIOD`].
static SNAPSHOT_FAILED: rota_engine::LogThrottle =
    rota_engine::LogThrottle::new(rota_engine::QUIET_PERIOD);

/// How often the refresher takes a snapshot while the server runs.
pub const SNAPSHOT_REFRESH: Duration = Duration::from_secs(1);
/// Oldest a snapshot may be before a reader takes one itself (the refresher keeps it well
/// younger; this is for when no refresher runs, as in tests).
pub const SNAPSHOT_MAX_AGE: Duration = Duration::from_secs(2);

/// What the store looked like at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    /// When it was taken (the server's clock).
    pub taken_at: Timestamp,
    /// When it was taken (monotonic, for its age).
    pub taken: tokio::time::Instant,
    /// Every doctor check.
    pub findings: Vec<Finding>,
    /// Job counts per queue, kind and state.
    pub counts: Vec<JobCount>,
    /// Every queue with its counts and oldest ready job.
    pub queues: Vec<QueueStats>,
    /// Workers seen within [`LIVE_WORKER_WINDOW`].
    pub workers_live: usize,
    /// What the limits of each queue that has them hold back now.
    pub limits: Vec<QueueLimitsNow>,
}

/// What a queue's limits hold back now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueLimitsNow {
    /// The queue.
    pub queue: String,
    /// Keys at their `key_concurrency` (up to 100 are counted).
    pub keys_at_limit: u64,
    /// Ready jobs a limit holds back.
    pub waiting: u64,
}

impl Snapshot {
    /// Takes a snapshot of `store` at `now`.
    pub async fn take(
        store: &dyn Store,
        now: Timestamp,
        retention: &Retention,
    ) -> Result<Self, StoreError> {
        // The doctor reads the workload once; the gauges use what it read.
        let (findings, observed) = diagnose_observed(store, now, retention).await;
        let observed = observed?;
        let live_since = rota_core::sub_duration(now, LIVE_WORKER_WINDOW);
        let workers_live = observed
            .workers
            .iter()
            .filter(|w| w.last_seen >= live_since)
            .count();
        // What the doctor read of each limited queue serves the gauges too.
        let limits = observed
            .held_back(now)
            .map(|(q, keys_at_limit, waiting)| QueueLimitsNow {
                queue: q.queue.name.clone(),
                keys_at_limit: keys_at_limit as u64,
                waiting: waiting.map_or(0, |(n, _)| n),
            })
            .collect();
        Ok(Self {
            taken_at: now,
            taken: tokio::time::Instant::now(),
            findings,
            counts: observed.counts,
            queues: observed.queues,
            workers_live,
            limits,
        })
    }

    /// The doctor's report from this snapshot.
    pub fn doctor_report(&self) -> DoctorReport {
        doctor_report(self.findings.clone())
    }
}

/// The doctor's report from `findings`: healthy when none needs action.
pub fn doctor_report(findings: Vec<Finding>) -> DoctorReport {
    DoctorReport {
        healthy: findings.iter().all(|f| f.severity == Severity::Ok),
        findings: findings.into_iter().map(finding_view).collect(),
    }
}

/// Runs every doctor check against `store` now (`rota doctor --database`, without a server),
/// with the server's `retention`.
pub async fn doctor_report_of(
    store: &dyn Store,
    now: Timestamp,
    retention: &Retention,
) -> DoctorReport {
    doctor_report(diagnose(store, now, retention).await)
}

/// The wire form of a finding.
pub fn finding_view(f: Finding) -> FindingView {
    FindingView {
        check: f.check.to_owned(),
        severity: match f.severity {
            Severity::Ok => rota_api::Severity::Ok,
            Severity::Warn => rota_api::Severity::Warn,
            Severity::Fail => rota_api::Severity::Fail,
        },
        message: f.message,
        fix: f.fix,
    }
}

/// The shared snapshot and how to renew it.
pub struct Diagnostics {
    store: Arc<dyn Store>,
    clock: Arc<dyn Clock>,
    retention: Retention,
    current: Mutex<Option<Arc<Snapshot>>>,
    taking: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Diagnostics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Diagnostics")
    }
}

impl Diagnostics {
    /// Diagnostics of `store`, with no snapshot yet.
    pub fn new(store: Arc<dyn Store>, clock: Arc<dyn Clock>, retention: Retention) -> Self {
        Self {
            store,
            clock,
            retention,
            current: Mutex::new(None),
            taking: tokio::sync::Mutex::new(()),
        }
    }

    fn fresh(&self) -> Option<Arc<Snapshot>> {
        self.current
            .lock()
            .expect("snapshot poisoned")
            .clone()
            .filter(|s| s.taken.elapsed() < SNAPSHOT_MAX_AGE)
    }

    /// A snapshot at most [`SNAPSHOT_MAX_AGE`] old; takes one when there is none that
    /// fresh (one taker at a time: concurrent callers share its result).
    pub async fn snapshot(&self) -> Result<Arc<Snapshot>, StoreError> {
        if let Some(snapshot) = self.fresh() {
            return Ok(snapshot);
        }
        let _taking = self.taking.lock().await;
        if let Some(snapshot) = self.fresh() {
            return Ok(snapshot);
        }
        self.refresh().await
    }

    /// Takes a new snapshot now.
    pub async fn refresh(&self) -> Result<Arc<Snapshot>, StoreError> {
        let snapshot =
            Arc::new(Snapshot::take(&*self.store, self.clock.now(), &self.retention).await?);
        *self.current.lock().expect("snapshot poisoned") = Some(snapshot.clone());
        Ok(snapshot)
    }

    /// Keeps the snapshot fresh until `shutdown`, so probes and scrapes never wait for it.
    pub async fn run(self: Arc<Self>, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(SNAPSHOT_REFRESH);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            let _taking = self.taking.lock().await;
            if let Err(err) = self.refresh().await {
                if let Some(held_back) = SNAPSHOT_FAILED.admit(std::time::Instant::now()) {
                    tracing::warn!(error = %err, held_back, "diagnostics snapshot failed; retrying (logged at most every 10 s)");
                }
            }
        }
    }
}
