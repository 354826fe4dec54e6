//! Prometheus metrics at `/metrics`, in the text exposition format (prometheus-client).
//!
//! Counters are counted from the store's job changes ([`Metrics`] is a
//! [`rota_store::Notifier`]) and from the engine's schedule fires
//! ([`rota_engine::EngineObserver`]); gauges come from the shared diagnostics snapshot
//! (job counts, oldest ready job per queue, live workers, the doctor's findings), refreshed
//! at most once a second, never from a scan of the jobs. Served as Prometheus text 0.0.4
//! ([`prometheus_text`]) or, when asked for, OpenMetrics. Kinds are capped at [`KIND_LABELS_MAX`] label values; later kinds are
//! counted under `other`.

use std::collections::HashSet;
use std::sync::Mutex;

use prometheus_client::encoding::text::encode;
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::{exponential_buckets, Histogram};
use prometheus_client::registry::Registry;
use rota_core::JobState;
use rota_store::{ChangeCause, Inserted, JobChange, Notifier, WriteStats};

use crate::diagnostics::Snapshot;

/// Distinct kinds that get their own label value.
pub const KIND_LABELS_MAX: usize = 50;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct JobLabels {
    queue: String,
    kind: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    queue: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    queue: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct HttpLabels {
    route: String,
    status: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OverflowLabels {
    queue: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ScheduleLabels {
    schedule: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ReadLabels {
    read: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CheckLabels {
    check: String,
}

fn histogram() -> Histogram {
    Histogram::new(exponential_buckets(0.001, 4.0, 12))
}

/// Every metric Rota exports.
pub struct Metrics {
    registry: Registry,
    kinds: Mutex<HashSet<String>>,
    enqueued: Family<JobLabels, Counter>,
    completed: Family<JobLabels, Counter>,
    failed: Family<JobLabels, Counter>,
    retried: Family<JobLabels, Counter>,
    dead: Family<JobLabels, Counter>,
    rescued: Family<JobLabels, Counter>,
    cancelled: Family<JobLabels, Counter>,
    lease_expirations: Counter,
    run_seconds: Family<QueueLabels, Histogram, fn() -> Histogram>,
    wait_seconds: Family<QueueLabels, Histogram, fn() -> Histogram>,
    http_requests: Family<HttpLabels, Counter>,
    schedule_fires: Family<ScheduleLabels, Counter>,
    overflows: Family<OverflowLabels, Counter>,
    schedule_recovered: Family<ScheduleLabels, Counter>,
    jobs: Family<StateLabels, Gauge>,
    oldest_ready: Family<QueueLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    keys_at_limit: Family<QueueLabels, Gauge>,
    waiting_on_limits: Family<QueueLabels, Gauge>,
    workers: Gauge,
    doctor_warnings: Family<CheckLabels, Gauge>,
    store_transactions: Gauge,
    store_requests: Gauge,
    store_parked_claims: Gauge,
    dashboard_reads: Family<ReadLabels, Counter>,
    dashboard_listeners: Gauge,
    scrape: tokio::sync::Mutex<()>,
}

impl std::fmt::Debug for Metrics {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Metrics")
    }
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    /// A registry with every Rota metric registered.
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("rota");
        let m = Metrics {
            kinds: Mutex::default(),
            enqueued: Family::default(),
            completed: Family::default(),
            failed: Family::default(),
            retried: Family::default(),
            dead: Family::default(),
            rescued: Family::default(),
            cancelled: Family::default(),
            lease_expirations: Counter::default(),
            run_seconds: Family::new_with_constructor(histogram),
            wait_seconds: Family::new_with_constructor(histogram),
            http_requests: Family::default(),
            schedule_fires: Family::default(),
            overflows: Family::default(),
            schedule_recovered: Family::default(),
            jobs: Family::default(),
            oldest_ready: Family::default(),
            keys_at_limit: Family::default(),
            waiting_on_limits: Family::default(),
            workers: Gauge::default(),
            doctor_warnings: Family::default(),
            store_transactions: Gauge::default(),
            store_parked_claims: Gauge::default(),
            store_requests: Gauge::default(),
            dashboard_reads: Family::default(),
            dashboard_listeners: Gauge::default(),
            scrape: tokio::sync::Mutex::new(()),
            registry: Registry::default(),
        };
        registry.register(
            "dashboard_reads",
            "Database reads the dashboard's shared producer made (error_groups), and live frames it rendered (frames): whatever the number of open pages",
            m.dashboard_reads.clone(),
        );
        registry.register(
            "dashboard_listeners",
            "Dashboard pages listening to the live stream now",
            m.dashboard_listeners.clone(),
        );
        registry.register(
            "jobs_enqueued",
            "Jobs enqueued (duplicates excluded)",
            m.enqueued.clone(),
        );
        registry.register(
            "queue_keys_at_limit",
            "Concurrency keys of the queue at their key_concurrency now",
            m.keys_at_limit.clone(),
        );
        registry.register(
            "queue_waiting_on_limits",
            "Ready jobs of the queue that a limit (concurrency, key_concurrency, rate) holds back now",
            m.waiting_on_limits.clone(),
        );
        registry.register(
            "queue_overflows",
            "Enqueues beyond a queue's max_depth or max_age, by outcome (rejected: answered 429; accepted: stored with a warning)",
            m.overflows.clone(),
        );
        registry.register(
            "jobs_completed",
            "Attempts that completed",
            m.completed.clone(),
        );
        registry.register(
            "jobs_failed",
            "Attempts that failed (reported by a worker)",
            m.failed.clone(),
        );
        registry.register(
            "jobs_retried",
            "Failed attempts followed by a retry",
            m.retried.clone(),
        );
        registry.register("jobs_dead", "Jobs that ended dead", m.dead.clone());
        registry.register(
            "jobs_rescued",
            "Jobs rescued from an expired lease",
            m.rescued.clone(),
        );
        registry.register(
            "jobs_cancelled",
            "Jobs that ended cancelled",
            m.cancelled.clone(),
        );
        registry.register(
            "lease_expirations",
            "Leases that expired without a heartbeat",
            m.lease_expirations.clone(),
        );
        registry.register(
            "job_run_seconds",
            "Run time of completed attempts",
            m.run_seconds.clone(),
        );
        registry.register(
            "job_wait_seconds",
            "Time from ready (enqueue or due) to start",
            m.wait_seconds.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP requests by route and status",
            m.http_requests.clone(),
        );
        registry.register(
            "schedule_fires",
            "Schedule slots enqueued",
            m.schedule_fires.clone(),
        );
        registry.register(
            "schedule_recovered_misfires",
            "Missed schedule slots recovered",
            m.schedule_recovered.clone(),
        );
        registry.register("jobs", "Jobs by queue and state", m.jobs.clone());
        registry.register(
            "queue_oldest_ready_seconds",
            "Age of the oldest ready job per queue",
            m.oldest_ready.clone(),
        );
        registry.register(
            "workers_connected",
            "Workers seen in the last minute",
            m.workers.clone(),
        );
        registry.register(
            "doctor_warnings",
            "Doctor findings that need action, by check",
            m.doctor_warnings.clone(),
        );
        registry.register(
            "store_transactions",
            "Write transactions committed (group commit: many requests each)",
            m.store_transactions.clone(),
        );
        registry.register(
            "store_parked_claims",
            "Idle fetches' claims run inside the commit that made their jobs ready",
            m.store_parked_claims.clone(),
        );
        registry.register(
            "store_write_requests",
            "Write requests served by the store",
            m.store_requests.clone(),
        );
        Metrics { registry, ..m }
    }

    fn labels(&self, queue: &str, kind: &str) -> JobLabels {
        let mut kinds = self.kinds.lock().expect("kinds poisoned");
        let kind = if kinds.contains(kind) {
            kind.to_owned()
        } else if kinds.len() < KIND_LABELS_MAX {
            kinds.insert(kind.to_owned());
            kind.to_owned()
        } else {
            "other".to_owned()
        };
        JobLabels {
            queue: queue.to_owned(),
            kind,
        }
    }

    /// Counts one committed batch of job changes (outcomes, retries, rescues, and the
    /// wait and run histograms).
    fn count_changes(&self, changes: &[JobChange]) {
        for c in changes {
            let Some(to) = c.to else { continue };
            let labels = || self.labels(&c.queue, &c.kind);
            let seconds = || c.took.map_or(0.0, |d| d.as_secs_f64());
            match c.cause {
                ChangeCause::Enqueued => self.enqueued.get_or_create(&labels()).inc(),
                ChangeCause::Failed => self.failed.get_or_create(&labels()).inc(),
                ChangeCause::Rescued => {
                    self.lease_expirations.inc();
                    self.rescued.get_or_create(&labels()).inc()
                }
                _ => 0,
            };
            match (c.from, to) {
                (_, JobState::Running) => self
                    .wait_seconds
                    .get_or_create(&QueueLabels {
                        queue: c.queue.clone(),
                    })
                    .observe(seconds()),
                (_, JobState::Completed) => {
                    self.completed.get_or_create(&labels()).inc();
                    self.run_seconds
                        .get_or_create(&QueueLabels {
                            queue: c.queue.clone(),
                        })
                        .observe(seconds());
                }
                (Some(JobState::Running), JobState::Retryable) => {
                    self.retried.get_or_create(&labels()).inc();
                }
                (_, JobState::Dead) => {
                    self.dead.get_or_create(&labels()).inc();
                }
                (_, JobState::Cancelled) => {
                    self.cancelled.get_or_create(&labels()).inc();
                }
                _ => {}
            }
        }
    }

    /// An enqueue to `queue` went beyond its backpressure limits: `rejected` or `accepted`.
    pub fn overflow(&self, queue: &str, outcome: &str) {
        self.overflows
            .get_or_create(&OverflowLabels {
                queue: queue.to_owned(),
                outcome: outcome.to_owned(),
            })
            .inc();
    }

    /// The dashboard read the database (`error_groups`) or rendered a live frame (`frames`).
    pub fn dashboard_read(&self, read: &str) {
        self.dashboard_reads
            .get_or_create(&ReadLabels {
                read: read.to_owned(),
            })
            .inc();
    }

    /// How many dashboard pages listen to the live stream.
    pub fn dashboard_listeners(&self, n: usize) {
        self.dashboard_listeners.set(n as i64);
    }

    /// Enqueues to `queue` beyond its limits since start, either outcome.
    pub fn overflows_of(&self, queue: &str) -> u64 {
        ["rejected", "accepted"]
            .iter()
            .filter_map(|outcome| {
                // Read only: a queue without overflows gets no series.
                self.overflows
                    .get(&OverflowLabels {
                        queue: queue.to_owned(),
                        outcome: (*outcome).to_owned(),
                    })
                    .map(|counter| counter.get())
            })
            .sum()
    }

    /// An HTTP request was answered.
    pub fn http(&self, route: &str, status: u16) {
        self.http_requests
            .get_or_create(&HttpLabels {
                route: route.to_owned(),
                status: status.to_string(),
            })
            .inc();
    }

    /// The OpenMetrics text of every metric, with gauges read from `snapshot`.
    pub async fn render(
        &self,
        snapshot: &Snapshot,
        write_stats: Option<WriteStats>,
    ) -> Result<String, rota_store::StoreError> {
        let _one_scrape_at_a_time = self.scrape.lock().await;
        self.jobs.clear();
        for c in &snapshot.counts {
            self.jobs
                .get_or_create(&StateLabels {
                    queue: c.queue.clone(),
                    state: c.state.as_str().into(),
                })
                .inc_by(c.count as i64);
        }
        self.oldest_ready.clear();
        for q in &snapshot.queues {
            let age = q.oldest_ready_age.map_or(0.0, |a| a.as_secs_f64());
            self.oldest_ready
                .get_or_create(&QueueLabels {
                    queue: q.queue.name.clone(),
                })
                .set(age);
        }
        self.keys_at_limit.clear();
        self.waiting_on_limits.clear();
        for l in &snapshot.limits {
            let labels = QueueLabels {
                queue: l.queue.clone(),
            };
            self.keys_at_limit
                .get_or_create(&labels)
                .set(l.keys_at_limit as i64);
            self.waiting_on_limits
                .get_or_create(&labels)
                .set(l.waiting as i64);
        }
        self.workers.set(snapshot.workers_live as i64);
        self.doctor_warnings.clear();
        for f in &snapshot.findings {
            let gauge = self.doctor_warnings.get_or_create(&CheckLabels {
                check: f.check.to_owned(),
            });
            if f.severity != rota_engine::doctor::Severity::Ok {
                gauge.inc();
            }
        }
        if let Some(stats) = write_stats {
            self.store_transactions.set(stats.transactions as i64);
            self.store_requests.set(stats.requests as i64);
            self.store_parked_claims.set(stats.parked_claims as i64);
        }
        let mut text = String::new();
        encode(&mut text, &self.registry)
            .map_err(|e| rota_store::StoreError::backend("encoding metrics", e))?;
        Ok(text)
    }
}

/// The Prometheus text format (version 0.0.4) of an OpenMetrics exposition: a counter's
/// `# HELP` and `# TYPE` lines name its `_total` series (OpenMetrics names the family
/// without the suffix, which a 0.0.4 parser such as `promtool check metrics` reads as a
/// series without help), and the `# EOF` and `# UNIT` lines go.
pub fn prometheus_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|l| l.strip_prefix("# TYPE "))
        .filter_map(|l| l.strip_suffix(" counter"))
        .collect();
    let mut out = String::with_capacity(openmetrics.len() + 64);
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    out
}

impl Notifier for Metrics {
    fn notify(&self, changes: &[JobChange]) {
        self.count_changes(changes);
    }
}

impl rota_engine::EngineObserver for Metrics {
    fn fired(&self, schedule: &str, slots: usize, recovered: usize, _jobs: &[Inserted]) {
        let labels = ScheduleLabels {
            schedule: schedule.to_owned(),
        };
        self.schedule_fires
            .get_or_create(&labels)
            .inc_by(slots as u64);
        self.schedule_recovered
            .get_or_create(&labels)
            .inc_by(recovered as u64);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_beyond_the_cap_share_the_other_label() {
        let m = Metrics::new();
        let labels: Vec<JobLabels> = (0..KIND_LABELS_MAX + 10)
            .map(|i| m.labels("q", &format!("kind{i}")))
            .collect();
        assert_eq!(
            labels[KIND_LABELS_MAX - 1].kind,
            format!("kind{}", KIND_LABELS_MAX - 1)
        );
        assert!(labels[KIND_LABELS_MAX..].iter().all(|l| l.kind == "other"));
        assert_eq!(
            m.labels("q", "kind0").kind,
            "kind0",
            "a known kind keeps its label"
        );
    }
}
