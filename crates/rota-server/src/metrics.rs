//! Prometheus metrics at `/metrics`, in the text exposition format (prometheus-client).
//!
//! Counters are counted where things happen (handlers, and the engine through
//! [`rota_engine::EngineObserver`]); gauges are read at scrape time from cheap aggregates
//! (the store's job counts, per-queue index seeks, the worker list, the doctor), never from
//! a scan of the jobs. Kinds are capped at [`KIND_LABELS_MAX`] label values; later kinds are
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
use rota_core::{Job, JobState};
use rota_store::{Inserted, QueueListParams, RescueReport, Store};

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
struct ScheduleLabels {
    schedule: String,
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
    schedule_recovered: Family<ScheduleLabels, Counter>,
    jobs: Family<StateLabels, Gauge>,
    oldest_ready: Family<QueueLabels, Gauge<f64, std::sync::atomic::AtomicU64>>,
    workers: Gauge,
    doctor_warnings: Family<CheckLabels, Gauge>,
    store_transactions: Gauge,
    store_requests: Gauge,
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
            schedule_recovered: Family::default(),
            jobs: Family::default(),
            oldest_ready: Family::default(),
            workers: Gauge::default(),
            doctor_warnings: Family::default(),
            store_transactions: Gauge::default(),
            store_requests: Gauge::default(),
            scrape: tokio::sync::Mutex::new(()),
            registry: Registry::default(),
        };
        registry.register(
            "jobs_enqueued",
            "Jobs enqueued (duplicates excluded)",
            m.enqueued.clone(),
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

    /// Jobs were enqueued.
    pub fn enqueued(&self, inserted: &[Inserted]) {
        for i in inserted.iter().filter(|i| !i.duplicate) {
            self.enqueued
                .get_or_create(&self.labels(&i.job.queue, &i.job.kind))
                .inc();
        }
    }

    /// Jobs were leased.
    pub fn started(&self, jobs: &[Job]) {
        for job in jobs {
            if let Some(started) = job.attempted_at {
                let waited = started.duration_since(job.run_at).as_secs_f64().max(0.0);
                self.wait_seconds
                    .get_or_create(&QueueLabels {
                        queue: job.queue.clone(),
                    })
                    .observe(waited);
            }
        }
    }

    /// Workers reported outcomes; `failed` says whether the report was a failure.
    pub fn reported(&self, jobs: &[&Job], failed: bool) {
        for job in jobs {
            let labels = self.labels(&job.queue, &job.kind);
            if failed && job.state != JobState::Scheduled {
                self.failed.get_or_create(&labels).inc();
            }
            match job.state {
                JobState::Completed => {
                    self.completed.get_or_create(&labels).inc();
                    if let (Some(start), Some(end)) = (job.attempted_at, job.finished_at) {
                        let ran = end.duration_since(start).as_secs_f64().max(0.0);
                        self.run_seconds
                            .get_or_create(&QueueLabels {
                                queue: job.queue.clone(),
                            })
                            .observe(ran);
                    }
                }
                JobState::Retryable if failed => {
                    self.retried.get_or_create(&labels).inc();
                }
                JobState::Dead => {
                    self.dead.get_or_create(&labels).inc();
                }
                JobState::Cancelled => {
                    self.cancelled.get_or_create(&labels).inc();
                }
                _ => {}
            }
        }
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

    /// The text exposition of every metric, with gauges read now.
    pub async fn render(
        &self,
        store: &dyn Store,
        now: jiff::Timestamp,
    ) -> Result<String, rota_store::StoreError> {
        let _one_scrape_at_a_time = self.scrape.lock().await;
        self.jobs.clear();
        for c in store.job_counts().await? {
            self.jobs
                .get_or_create(&StateLabels {
                    queue: c.queue,
                    state: c.state.as_str().into(),
                })
                .inc_by(c.count as i64);
        }
        self.oldest_ready.clear();
        for q in store.queue_list(QueueListParams { now }).await? {
            let age = q.oldest_ready_age.map_or(0.0, |a| a.as_secs_f64());
            self.oldest_ready
                .get_or_create(&QueueLabels {
                    queue: q.queue.name,
                })
                .set(age);
        }
        let live_since = rota_core::sub_duration(now, rota_engine::doctor::LIVE_WORKER_WINDOW);
        self.workers.set(
            store
                .worker_list()
                .await?
                .iter()
                .filter(|w| w.last_seen >= live_since)
                .count() as i64,
        );
        self.doctor_warnings.clear();
        for f in rota_engine::doctor::diagnose(store, now).await {
            let gauge = self.doctor_warnings.get_or_create(&CheckLabels {
                check: f.check.to_owned(),
            });
            if f.severity != rota_engine::doctor::Severity::Ok {
                gauge.inc();
            }
        }
        if let Some((transactions, requests)) = store.write_stats() {
            self.store_transactions.set(transactions as i64);
            self.store_requests.set(requests as i64);
        }
        let mut text = String::new();
        encode(&mut text, &self.registry)
            .map_err(|e| rota_store::StoreError::backend("encoding metrics", e))?;
        Ok(text)
    }
}

impl rota_engine::EngineObserver for Metrics {
    fn rescued(&self, report: &RescueReport) {
        for (queue, kind, state) in &report.outcomes {
            let labels = self.labels(queue, kind);
            self.lease_expirations.inc();
            self.rescued.get_or_create(&labels).inc();
            match state {
                JobState::Dead => self.dead.get_or_create(&labels).inc(),
                JobState::Cancelled => self.cancelled.get_or_create(&labels).inc(),
                _ => self.retried.get_or_create(&labels).inc(),
            };
        }
    }

    fn fired(&self, schedule: &str, slots: usize, recovered: usize, jobs: &[Inserted]) {
        let labels = ScheduleLabels {
            schedule: schedule.to_owned(),
        };
        self.schedule_fires
            .get_or_create(&labels)
            .inc_by(slots as u64);
        self.schedule_recovered
            .get_or_create(&labels)
            .inc_by(recovered as u64);
        self.enqueued(jobs);
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
