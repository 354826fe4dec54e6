//! The scheduler: turns cron schedules into jobs, one per slot, at most once per slot
//! however many nodes run it, and recovers slots missed while no scheduler ran.
//!
//! Each pass plans every enabled schedule's due slots from its stored `last_slot`
//! ([`rota_core::schedule::plan_slots`]) and fires them with
//! [`rota_store::Store::schedule_fire`], which enqueues the slot jobs (unique key
//! `cron:<name>:<slot>`) and advances `last_slot` in one transaction, or does nothing if
//! another scheduler advanced it first. Between passes it sleeps until the next slot of any
//! schedule or until told that schedules changed: no polling while idle.

use std::fmt;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rota_core::schedule::{plan_slots, MisfirePolicy, MISFIRE_GRACE_DEFAULT};
use rota_core::Clock;
use rota_store::{PolicyDefaults, ScheduleFireParams, Store, StoreError};
use tokio::sync::Notify;
use tokio_util::sync::CancellationToken;
use tracing::{info, warn};

/// Failed passes, logged at most once per [`crate::QUIET_PERIOD`].
static PASS_FAILED: crate::LogThrottle = crate::LogThrottle::new(crate::QUIET_PERIOD);

/// How long a slot's unique key blocks a second job after the first finished.
pub const SLOT_UNIQUE_FOR_DEFAULT: Duration = Duration::from_secs(30 * 24 * 3600);
/// Schedules fired at once in a pass (their commits are grouped).
const FIRE_CONCURRENCY: usize = 256;
/// Longest sleep between passes, so schedules changed on other nodes are seen.
pub const SCHEDULER_MAX_SLEEP_DEFAULT: Duration = Duration::from_secs(60);

/// Scheduler settings.
#[derive(Debug, Clone)]
pub struct SchedulerConfig {
    /// A slot fired later than this after its time counts as missed.
    pub grace: Duration,
    /// How long a slot's job keeps its unique key after finishing.
    pub unique_for: Duration,
    /// Longest sleep between passes.
    pub max_sleep: Duration,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        Self {
            grace: MISFIRE_GRACE_DEFAULT,
            unique_for: SLOT_UNIQUE_FOR_DEFAULT,
            max_sleep: SCHEDULER_MAX_SLEEP_DEFAULT,
        }
    }
}

/// Missed slots a pass recovered or skipped for one schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovery {
    /// The schedule.
    pub schedule: String,
    /// Its misfire policy.
    pub policy: MisfirePolicy,
    /// Missed slots enqueued now.
    pub recovered: Vec<Timestamp>,
    /// Missed slots not enqueued, by policy.
    pub skipped: usize,
}

impl fmt::Display for Recovery {
    /// The log line: `schedule "nightly" (misfire latest): recovered 1 missed slot
    /// (2026-03-01T08:00:00Z), skipped 4`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let slots: Vec<String> = self.recovered.iter().map(ToString::to_string).collect();
        write!(
            f,
            "schedule {:?} (misfire {}): recovered {} missed slot{} ({}), skipped {}",
            self.schedule,
            match self.policy {
                MisfirePolicy::Skip => "skip",
                MisfirePolicy::Latest => "latest",
                MisfirePolicy::All => "all",
            },
            self.recovered.len(),
            if self.recovered.len() == 1 { "" } else { "s" },
            if slots.is_empty() {
                "none".to_owned()
            } else {
                slots.join(", ")
            },
            self.skipped
        )
    }
}

/// What a pass did.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct SchedulerReport {
    /// Jobs enqueued (on time and recovered), by this pass.
    pub enqueued: usize,
    /// Missed slots recovered or skipped, per schedule.
    pub recoveries: Vec<Recovery>,
    /// Schedules another scheduler had already advanced.
    pub lost_races: usize,
    /// Schedules that could not fire (see the log and the doctor).
    pub failed: usize,
    /// The next slot of any enabled schedule: when to wake.
    pub next_slot: Option<Timestamp>,
}

/// The scheduler service.
pub struct Scheduler {
    store: Arc<dyn Store>,
    config: SchedulerConfig,
    defaults: Arc<PolicyDefaults>,
    changed: Arc<Notify>,
    observer: Option<Arc<dyn crate::EngineObserver>>,
    leader: crate::LeaderFlag,
}

impl Scheduler {
    /// A scheduler over `store`; jobs get `defaults` for policy resolution.
    pub fn new(
        store: Arc<dyn Store>,
        config: SchedulerConfig,
        defaults: Arc<PolicyDefaults>,
    ) -> Self {
        Self {
            store,
            config,
            defaults,
            changed: Arc::new(Notify::new()),
            observer: None,
            leader: crate::LeaderFlag::always(),
        }
    }

    /// Fires only while `leader` says this node leads maintenance.
    pub fn with_leader(mut self, leader: crate::LeaderFlag) -> Self {
        self.leader = leader;
        self
    }

    /// Tells `observer` about every slot fired.
    pub fn with_observer(mut self, observer: Arc<dyn crate::EngineObserver>) -> Self {
        self.observer = Some(observer);
        self
    }

    /// Uses `changed` as the "schedules changed" signal (shared with whoever edits them).
    pub fn with_changed(mut self, changed: Arc<Notify>) -> Self {
        self.changed = changed;
        self
    }

    /// A handle to tell the running scheduler that schedules changed.
    pub fn changed(&self) -> Arc<Notify> {
        self.changed.clone()
    }

    /// One pass at `now`. Tests call this directly with a manual clock.
    pub async fn run_once(&self, now: Timestamp) -> Result<SchedulerReport, StoreError> {
        let mut report = SchedulerReport::default();
        // Plan every schedule first (pure), then fire the due ones concurrently, so their
        // transactions share commits (group commit) instead of paying one fsync each.
        let mut due = Vec::new();
        for record in self
            .store
            .schedule_list(rota_store::ScheduleListParams::default())
            .await?
        {
            let def = &record.schedule;
            if !def.enabled {
                continue;
            }
            let cadence = match def.validate() {
                Ok(cadence) => cadence,
                Err(err) => {
                    warn!(schedule = %def.name, error = %err, "schedule cannot be evaluated; skipping it");
                    continue;
                }
            };
            let plan = plan_slots(
                &cadence,
                record.last_slot,
                now,
                def.misfire,
                def.backfill,
                self.config.grace,
            );
            let from = plan.last_slot.unwrap_or(record.last_slot).max(now);
            if let Some(next) = cadence.next_after(from) {
                report.next_slot = Some(report.next_slot.map_or(next, |n| n.min(next)));
            }
            if plan.last_slot.is_some() {
                due.push((record, plan));
            }
        }
        for chunk in due.chunks(FIRE_CONCURRENCY) {
            let mut fires = tokio::task::JoinSet::new();
            for (record, plan) in chunk.iter().cloned() {
                let (store, defaults, unique_for) = (
                    self.store.clone(),
                    self.defaults.clone(),
                    self.config.unique_for,
                );
                fires.spawn(async move {
                    let def = &record.schedule;
                    let params = ScheduleFireParams {
                        name: def.name.clone(),
                        expected_last: record.last_slot,
                        last_slot: plan.last_slot.expect("only due schedules are fired"),
                        jobs: plan
                            .fire
                            .iter()
                            .map(|slot| def.job_for(*slot, unique_for))
                            .collect(),
                        recovered: plan.recovered.len() as u64,
                        skipped: plan.skipped as u64,
                        defaults,
                        now,
                    };
                    let fired = store.schedule_fire(params).await;
                    (record, plan, fired)
                });
            }
            while let Some(joined) = fires.join_next().await {
                let (record, plan, fired) =
                    joined.map_err(|e| StoreError::backend("firing a schedule", e))?;
                let def = &record.schedule;
                // One schedule that cannot fire (its queue gone, say) must not stop the
                // others; the doctor flags it.
                let fired = match fired {
                    Ok(fired) => fired,
                    Err(err) => {
                        warn!(schedule = %def.name, error = %err, "schedule could not fire; the others did");
                        report.failed += 1;
                        continue;
                    }
                };
                if fired.lost_race {
                    report.lost_races += 1;
                    continue;
                }
                report.enqueued += fired.jobs.iter().filter(|i| !i.duplicate).count();
                if let Some(observer) = &self.observer {
                    observer.fired(
                        &def.name,
                        plan.fire.len(),
                        plan.recovered.len(),
                        &fired.jobs,
                    );
                }
                if !plan.recovered.is_empty() || plan.skipped > 0 {
                    let recovery = Recovery {
                        schedule: def.name.clone(),
                        policy: def.misfire,
                        recovered: plan.recovered.clone(),
                        skipped: plan.skipped,
                    };
                    info!("{recovery}");
                    report.recoveries.push(recovery);
                }
            }
        }
        Ok(report)
    }

    /// Runs passes until `shutdown`: after each, sleeps until the next slot, a change, or
    /// `max_sleep`, whichever comes first.
    pub async fn run(self, clock: Arc<dyn Clock>, shutdown: CancellationToken) {
        loop {
            let now = clock.now();
            let pass = if self.leader.is_leader() {
                self.run_once(now).await
            } else {
                Ok(SchedulerReport::default())
            };
            let sleep = match pass {
                Ok(report) => report
                    .next_slot
                    .map(|next| {
                        Duration::try_from(next.duration_since(clock.now())).unwrap_or_default()
                    })
                    .unwrap_or(self.config.max_sleep)
                    .min(self.config.max_sleep),
                Err(err) => {
                    if let Some(held_back) = PASS_FAILED.admit(std::time::Instant::now()) {
                        warn!(error = %err, held_back, "scheduler pass failed; retrying in 1s (logged at most every 10 s)");
                    }
                    Duration::from_secs(1)
                }
            };
            tokio::select! {
                _ = shutdown.cancelled() => break,
                _ = self.changed.notified() => {}
                _ = self.leader.changed() => {}
                _ = tokio::time::sleep(sleep) => {}
            }
        }
    }
}
