//! Leadership of maintenance: on many nodes, the rescuer, pruner and scheduler run on one
//! node only, the one holding the store's leadership row (a lease with an expiry, renewed by
//! the leader, taken over by another node after it expires, handed over at once on resign).

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rota_core::Clock;
use rota_store::{LeaderElectParams, LeaderResignParams, Store, StoreError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Failed elections, logged at most once per [`crate::QUIET_PERIOD`].
static ELECTION_FAILED: crate::LogThrottle = crate::LogThrottle::new(crate::QUIET_PERIOD);

/// The leadership row maintenance runs under.
pub const MAINTENANCE: &str = "maintenance";
/// How long a leadership lasts without renewal.
pub const LEADER_TTL_DEFAULT: Duration = Duration::from_secs(15);
/// How often the elector renews (or tries to take) the leadership.
pub const LEADER_INTERVAL_DEFAULT: Duration = Duration::from_secs(5);

/// Whether this node leads; shared by the elector (which sets it) and the services.
#[derive(Debug, Clone)]
pub struct LeaderFlag {
    leads: Arc<AtomicBool>,
    changed: Arc<Notify>,
    fixed: bool,
}

impl LeaderFlag {
    /// A flag that always says "leader" (one node, or tests).
    pub fn always() -> Self {
        Self {
            leads: Arc::new(AtomicBool::new(true)),
            changed: Arc::new(Notify::new()),
            fixed: true,
        }
    }

    fn follower() -> Self {
        Self {
            leads: Arc::new(AtomicBool::new(false)),
            changed: Arc::new(Notify::new()),
            fixed: false,
        }
    }

    /// Whether this node leads now.
    pub fn is_leader(&self) -> bool {
        self.leads.load(Ordering::Acquire)
    }

    fn set(&self, leads: bool) {
        if self.leads.swap(leads, Ordering::AcqRel) != leads {
            self.changed.notify_waiters();
        }
    }

    /// Resolves when leadership is gained or lost.
    pub async fn changed(&self) {
        if self.fixed {
            std::future::pending::<()>().await;
        }
        self.changed.notified().await;
    }
}

/// Elector settings.
#[derive(Debug, Clone)]
pub struct ElectorConfig {
    /// This node's id (the holder recorded in the row).
    pub node: String,
    /// Leadership length without renewal.
    pub ttl: Duration,
    /// Time between elections (well under `ttl`).
    pub interval: Duration,
}

impl ElectorConfig {
    /// Defaults for node `node`.
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            ttl: LEADER_TTL_DEFAULT,
            interval: LEADER_INTERVAL_DEFAULT,
        }
    }
}

/// Holds (or waits for) the maintenance leadership.
pub struct Elector {
    store: Arc<dyn Store>,
    config: ElectorConfig,
    flag: LeaderFlag,
}

impl Elector {
    /// An elector for `store`, and the flag the services read.
    pub fn new(store: Arc<dyn Store>, config: ElectorConfig) -> (Self, LeaderFlag) {
        assert!(
            config.interval < config.ttl,
            "ElectorConfig.interval must be below ttl"
        );
        let flag = LeaderFlag::follower();
        (
            Self {
                store,
                config,
                flag: flag.clone(),
            },
            flag,
        )
    }

    /// One election at `now` (takes the row if free or expired, renews it if ours); returns
    /// whether this node leads.
    pub async fn run_once(&self, now: Timestamp) -> Result<bool, StoreError> {
        let leadership = self
            .store
            .leader_attempt_elect(LeaderElectParams {
                name: MAINTENANCE.into(),
                holder: self.config.node.clone(),
                ttl: self.config.ttl,
                now,
            })
            .await?;
        if leadership.is_leader != self.flag.is_leader() {
            if leadership.is_leader {
                info!(node = %self.config.node, "leading maintenance (rescuer, pruner, scheduler)");
            } else {
                info!(leader = %leadership.holder, "another node leads maintenance");
            }
        }
        self.flag.set(leadership.is_leader);
        Ok(leadership.is_leader)
    }

    /// Elects until `shutdown`, then resigns so another node takes over at once.
    pub async fn run(self, clock: Arc<dyn Clock>, shutdown: CancellationToken) {
        let mut ticker = tokio::time::interval(self.config.interval);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = ticker.tick() => {}
            }
            if let Err(err) = self.run_once(clock.now()).await {
                // Without a renewal the leadership lapses; stop maintenance before it does.
                if let Some(held_back) = ELECTION_FAILED.admit(std::time::Instant::now()) {
                    warn!(error = %err, held_back, "leader election failed; retrying next tick (logged at most every 10 s)");
                }
                self.flag.set(false);
            }
        }
        if self.flag.is_leader() {
            self.flag.set(false);
            let resigned = self
                .store
                .leader_resign(LeaderResignParams {
                    name: MAINTENANCE.into(),
                    holder: self.config.node.clone(),
                    now: clock.now(),
                })
                .await;
            if let Err(err) = resigned {
                warn!(error = %err, "could not resign leadership; it lapses on its own");
            }
        }
    }
}
