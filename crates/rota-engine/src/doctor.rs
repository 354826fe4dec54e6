//! The doctor: every check that says whether a Rota installation needs action, with the fix.
//!
//! Used by `rota doctor` (against a server, or directly against a database), by `/readyz`
//! (as warnings that do not fail readiness) and by the metrics. Every check reads cheap
//! aggregates (job counts, indexed running and dead jobs), never a scan of all jobs.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use jiff::Timestamp;
use rota_core::{format_duration, JobState};
use rota_store::{
    retention_for, JobCount, QueueFlow, QueueListParams, QueueStats, Retention, Store, StoreError,
};

/// A worker seen within this long counts as live.
pub const LIVE_WORKER_WINDOW: Duration = Duration::from_secs(60);
/// Dead jobs this recent are reported.
pub const DEAD_WINDOW: Duration = Duration::from_secs(3600);
/// Most dead jobs the doctor groups (the latest): beyond it, counts say "at least".
pub const DEAD_SAMPLE: usize = 10_000;

/// How bad a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// Nothing to do.
    Ok,
    /// Needs attention; the system still runs.
    Warn,
    /// Broken.
    Fail,
}

impl Severity {
    /// `ok`, `warn` or `fail`.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Ok => "ok",
            Severity::Warn => "warn",
            Severity::Fail => "fail",
        }
    }
}

/// One verdict.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Finding {
    /// The check: database, schema, clock, queues, kinds, timeouts, dead, schedules.
    pub check: &'static str,
    /// How bad.
    pub severity: Severity,
    /// What was found.
    pub message: String,
    /// What to do, when something is wrong.
    pub fix: Option<String>,
}

impl Finding {
    fn ok(check: &'static str, message: impl Into<String>) -> Self {
        Self {
            check,
            severity: Severity::Ok,
            message: message.into(),
            fix: None,
        }
    }

    fn warn(check: &'static str, message: impl Into<String>, fix: impl Into<String>) -> Self {
        Self {
            check,
            severity: Severity::Warn,
            message: message.into(),
            fix: Some(fix.into()),
        }
    }
}

fn quoted(names: &BTreeSet<String>) -> String {
    if names.is_empty() {
        return "none".into();
    }
    names
        .iter()
        .map(|n| format!("`{n}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// What the checks read of the workload (workers, queues, job counts), for callers that
/// need it too, so it is read once.
#[derive(Debug, Clone, Default)]
pub struct Observed {
    /// Every known worker.
    pub workers: Vec<rota_store::Worker>,
    /// Every queue with its counts and oldest ready job.
    pub queues: Vec<QueueStats>,
    /// Job counts per queue, kind and state.
    pub counts: Vec<JobCount>,
    /// The flow-control state of each queue with claim-time limits, by queue.
    pub flows: BTreeMap<String, QueueFlow>,
}

impl Observed {
    async fn read(store: &dyn Store, now: Timestamp) -> Result<Self, StoreError> {
        let queues = store.queue_list(QueueListParams { now }).await?;
        let mut flows = BTreeMap::new();
        for q in queues
            .iter()
            .filter(|q| rota_store::has_claim_limits(&q.queue.config))
        {
            let flow = store
                .queue_flow(rota_store::QueueFlowParams {
                    queue: q.queue.name.clone(),
                    key: None,
                    now,
                })
                .await?;
            flows.insert(q.queue.name.clone(), flow);
        }
        Ok(Self {
            workers: store
                .worker_list(rota_store::WorkerListParams::default())
                .await?,
            queues,
            counts: store
                .job_counts(rota_store::JobCountsParams::default())
                .await?,
            flows,
        })
    }

    /// What the limits of each queue that has them hold back now: the queue, its keys at
    /// their limit, and how many ready jobs wait, and why.
    pub fn held_back(
        &self,
        now: Timestamp,
    ) -> impl Iterator<Item = (&QueueStats, usize, Option<(u64, String)>)> {
        self.queues.iter().filter_map(move |q| {
            let flow = self.flows.get(&q.queue.name)?;
            let config = &q.queue.config;
            let ready = q.counts.get(&JobState::Available).copied().unwrap_or(0);
            Some((
                q,
                rota_store::keys_at_limit(config, flow).len(),
                rota_store::queue_waiting(config, flow, ready, now),
            ))
        })
    }
}

fn read_failed(err: &StoreError) -> Finding {
    Finding {
        check: "database",
        severity: Severity::Fail,
        message: format!("reading the database failed: {err}"),
        fix: None,
    }
}

/// Most a node's clock may differ from the database's before the doctor warns.
pub const CLOCK_SKEW_MAX: std::time::Duration = std::time::Duration::from_secs(1);

/// Compares this node's clock (`now`) with the database's, when the database has its own.
fn clock_finding(now: Timestamp, database: Option<Timestamp>) -> Finding {
    let Some(database) = database else {
        return Finding::ok(
            "clock",
            "embedded database: node and database share one clock",
        );
    };
    let skew = now.duration_since(database);
    let size = std::time::Duration::try_from(skew.abs()).unwrap_or(std::time::Duration::MAX);
    if size > CLOCK_SKEW_MAX {
        Finding::warn(
            "clock",
            format!(
                "this node's clock is {:.1}s {} the database's",
                size.as_secs_f64(),
                if skew.is_negative() { "behind" } else { "ahead of" }
            ),
            "synchronise the clocks (NTP, chrony): leases, retries and schedules use each node's clock",
        )
    } else {
        Finding::ok(
            "clock",
            format!(
                "node and database clocks agree within {} ms",
                size.as_millis().max(1)
            ),
        )
    }
}

/// Which node runs maintenance (rescuer, pruner, scheduler). Nobody leading is normal while
/// no server runs (`rota doctor --database` on a stopped one), and lasts at most one election
/// interval when a leader stops, so it is reported, not warned about.
fn leader_finding(now: Timestamp, leader: Option<rota_store::Leadership>) -> Finding {
    match leader {
        Some(l) if l.expires_at > now => Finding::ok(
            "leader",
            format!("node {} leads maintenance (rescuer, pruner, scheduler)", l.holder),
        ),
        Some(l) => Finding::ok(
            "leader",
            format!(
                "no node leads maintenance now: node {}'s leadership lapsed at {}; a running node takes it over within seconds",
                l.holder, l.expires_at
            ),
        ),
        None => Finding::ok(
            "leader",
            "no node leads maintenance now (no server running, or one is being elected)",
        ),
    }
}

/// Runs every check at `now`; `retention` is the server's (shown with each queue's own).
pub async fn diagnose(store: &dyn Store, now: Timestamp, retention: &Retention) -> Vec<Finding> {
    diagnose_observed(store, now, retention).await.0
}

/// [`diagnose`], also returning what it read of the workload (or why it could not).
pub async fn diagnose_observed(
    store: &dyn Store,
    now: Timestamp,
    retention: &Retention,
) -> (Vec<Finding>, Result<Observed, StoreError>) {
    let mut findings = Vec::new();
    let database_time = match store
        .store_health(rota_store::StoreHealthParams::default())
        .await
    {
        Ok(h) => {
            findings.push(Finding::ok("database", "database reachable"));
            findings.push(if h.schema_version == h.schema_expected {
                Finding::ok(
                    "schema",
                    format!("schema version {} is current", h.schema_version),
                )
            } else {
                Finding {
                    check: "schema",
                    severity: Severity::Fail,
                    message: format!(
                        "schema version {} but this binary expects {}",
                        h.schema_version, h.schema_expected
                    ),
                    fix: Some(
                        "run `rota migrate up`, or upgrade rota if the database is newer".into(),
                    ),
                }
            });
            h.database_time
        }
        Err(err) => {
            findings.push(Finding {
                check: "database",
                severity: Severity::Fail,
                message: format!("database unreachable: {err}"),
                fix: Some("check the database path or URL and its permissions".into()),
            });
            return (findings, Err(err));
        }
    };
    findings.push(clock_finding(now, database_time));
    match store
        .leader_get(rota_store::LeaderGetParams {
            name: crate::leader::MAINTENANCE.into(),
            holder: String::new(),
        })
        .await
    {
        Ok(leader) => findings.push(leader_finding(now, leader)),
        Err(err) => {
            findings.push(read_failed(&err));
            return (findings, Err(err));
        }
    }
    let observed = match Observed::read(store, now).await {
        Ok(observed) => observed,
        Err(err) => {
            findings.push(read_failed(&err));
            return (findings, Err(err));
        }
    };
    if let Err(err) = workload_checks(store, now, retention, &observed, &mut findings).await {
        findings.push(read_failed(&err));
    }
    (findings, Ok(observed))
}

async fn workload_checks(
    store: &dyn Store,
    now: Timestamp,
    retention: &Retention,
    observed: &Observed,
    findings: &mut Vec<Finding>,
) -> Result<(), StoreError> {
    let live_since = rota_core::sub_duration(now, LIVE_WORKER_WINDOW);
    let live: Vec<_> = observed
        .workers
        .iter()
        .filter(|w| w.last_seen >= live_since)
        .collect();
    let polled: BTreeSet<String> = live
        .iter()
        .flat_map(|w| w.info.queues.iter().cloned())
        .collect();

    // Queues with ready jobs and nobody polling them: the misspelt-queue incident.
    let mut queue_ok = true;
    let queues = &observed.queues;
    let declared: BTreeSet<String> = queues.iter().map(|q| q.queue.name.clone()).collect();
    findings.push(retention_finding(retention, queues));
    for q in queues {
        let ready = q.counts.get(&JobState::Available).copied().unwrap_or(0);
        if ready > 0 && !q.queue.paused && !polled.contains(&q.queue.name) {
            queue_ok = false;
            let age = q
                .oldest_ready_age
                .map(|a| {
                    format!(
                        ", the oldest waiting {}",
                        format_duration(Duration::from_secs(a.as_secs()))
                    )
                })
                .unwrap_or_default();
            findings.push(Finding::warn(
                "queues",
                format!("queue `{}` has {ready} ready jobs and no worker{age}; workers poll {}", q.queue.name, quoted(&polled)),
                format!("start a worker with --queue {}, or correct the queue name the producer or the worker uses", q.queue.name),
            ));
        }
    }
    if queue_ok {
        findings.push(Finding::ok(
            "queues",
            "every queue with ready jobs has a live worker",
        ));
    }
    findings.extend(backpressure_findings(queues));
    findings.push(limits_finding(observed, now));

    // Ready jobs of a kind that no live worker on their queue handles.
    let mut ready_kinds: BTreeMap<(String, String), u64> = BTreeMap::new();
    for c in &observed.counts {
        if c.state == JobState::Available {
            *ready_kinds
                .entry((c.queue.clone(), c.kind.clone()))
                .or_default() += c.count;
        }
    }
    let mut kinds_ok = true;
    for ((queue, kind), n) in ready_kinds {
        let pollers: Vec<_> = live
            .iter()
            .filter(|w| w.info.queues.contains(&queue))
            .collect();
        if pollers.is_empty() {
            continue; // reported by the queue check
        }
        if !pollers
            .iter()
            .any(|w| rota_store::takes_kind(&w.info.kinds, &kind))
        {
            kinds_ok = false;
            let handled: BTreeSet<String> = pollers
                .iter()
                .flat_map(|w| w.info.kinds.iter().cloned())
                .collect();
            findings.push(Finding::warn(
                "kinds",
                format!("queue `{queue}` has {n} ready `{kind}` jobs and no live worker handles that kind; its workers handle {}", quoted(&handled)),
                format!("deploy a worker that handles `{kind}`, or correct the kind the producer uses"),
            ));
        }
    }
    if kinds_ok {
        findings.push(Finding::ok(
            "kinds",
            "every ready job's kind has a live worker",
        ));
    }

    // Jobs running past their timeout.
    let mut overdue = 0;
    for job in store
        .job_list_running(rota_store::JobListRunningParams { limit: 10_000 })
        .await?
    {
        if let (Some(timeout), Some(started)) = (job.timeout, job.attempted_at) {
            if rota_core::add_duration(started, timeout) < now {
                overdue += 1;
                if overdue <= 10 {
                    findings.push(Finding::warn(
                        "timeouts",
                        format!("job {} (`{}`) has run {} on {}, past its timeout of {}", job.id, job.kind, format_duration(Duration::from_secs(now.duration_since(started).as_secs().max(0) as u64)), job.lease.map(|l| l.worker).unwrap_or_default(), format_duration(timeout)),
                        "the worker should kill it; check that worker, or cancel the job with `rota jobs cancel`",
                    ));
                }
            }
        }
    }
    if overdue == 0 {
        findings.push(Finding::ok("timeouts", "no job runs past its timeout"));
    }

    // Dead jobs in the last hour, by cause: the latest DEAD_SAMPLE of them, so a check that
    // runs every second stays cheap when a bad deploy kills a million jobs.
    let groups = store
        .dead_groups(rota_store::DeadGroupsParams {
            since: Some(rota_core::sub_duration(now, DEAD_WINDOW)),
            latest: Some(DEAD_SAMPLE),
        })
        .await?;
    let sampled = groups.iter().map(|g| g.count).sum::<u64>() >= DEAD_SAMPLE as u64;
    let at_least = if sampled { "at least " } else { "" };
    if groups.is_empty() {
        findings.push(Finding::ok("dead", "no job died in the last hour"));
    }
    for g in groups.iter().take(10) {
        findings.push(Finding::warn(
            "dead",
            format!(
                "{at_least}{} job(s) of {} died in the last hour with: {}",
                g.count,
                g.kinds
                    .iter()
                    .map(|k| format!("`{k}`"))
                    .collect::<Vec<_>>()
                    .join(", "),
                g.message
            ),
            format!(
                "fix the cause, then `rota dead retry --group {}`",
                g.fingerprint
            ),
        ));
    }

    // Schedules that cannot fire, and schedules whose last job failed.
    let mut schedules_ok = true;
    for record in store
        .schedule_list(rota_store::ScheduleListParams::default())
        .await?
    {
        let def = &record.schedule;
        if def.enabled {
            let why = if !declared.contains(&def.template.queue) {
                Some(format!(
                    "its queue `{}` is not declared",
                    def.template.queue
                ))
            } else {
                match def.validate() {
                    Err(err) => Some(err.message),
                    Ok(cadence) => cadence
                        .next_after(record.last_slot.max(now))
                        .is_none()
                        .then(|| format!("`{}` has no future slot", def.expression)),
                }
            };
            if let Some(why) = why {
                schedules_ok = false;
                findings.push(Finding::warn(
                    "schedules",
                    format!("schedule `{}` cannot fire: {why}", def.name),
                    format!(
                        "declare the queue or correct the schedule, or delete it with `rota schedules delete {}`",
                        def.name
                    ),
                ));
                continue;
            }
        }
        if let Some(id) = record.last_job {
            if let Ok(job) = store.job_get(rota_store::JobGetParams { id }).await {
                if matches!(job.state, JobState::Dead | JobState::Retryable) {
                    schedules_ok = false;
                    let last = job
                        .errors
                        .last()
                        .map(|e| e.message.clone())
                        .unwrap_or_default();
                    findings.push(Finding::warn(
                        "schedules",
                        format!(
                            "schedule `{}`: its last job {} is {} ({last})",
                            record.schedule.name, job.id, job.state
                        ),
                        format!("see `rota jobs show {}`", job.id),
                    ));
                }
            }
        }
    }
    if schedules_ok {
        findings.push(Finding::ok(
            "schedules",
            "every schedule can fire, and its last job succeeded or is pending",
        ));
    }
    Ok(())
}

/// What the limits of each queue hold back now (informational: limits doing their job need no
/// action), such as `queue webhooks: 340 ready jobs wait (12 keys at their key_concurrency 2)`.
fn limits_finding(observed: &Observed, now: Timestamp) -> Finding {
    let held: Vec<String> = observed
        .held_back(now)
        .filter_map(|(q, _, waiting)| {
            let (jobs, reason) = waiting?;
            Some(format!(
                "queue `{}`: {jobs} ready jobs wait ({reason})",
                q.queue.name
            ))
        })
        .collect();
    if held.is_empty() {
        Finding::ok("limits", "no queue's limits hold ready jobs back")
    } else {
        Finding::ok("limits", held.join("; "))
    }
}

/// Queues beyond their `max_depth` or `max_age` now: producers are refused (429) or, with
/// `overflow = accept`, warned.
fn backpressure_findings(queues: &[QueueStats]) -> Vec<Finding> {
    let mut findings = Vec::new();
    for q in queues {
        let config = &q.queue.config;
        if !rota_store::has_backpressure(config) {
            continue;
        }
        let depth: u64 = [
            JobState::Available,
            JobState::Scheduled,
            JobState::Retryable,
        ]
        .iter()
        .map(|s| q.counts.get(s).copied().unwrap_or(0))
        .sum();
        let outcome = match config.overflow.unwrap_or_default() {
            rota_store::Overflow::Reject => "enqueues are refused with 429",
            rota_store::Overflow::Accept => {
                "enqueues are accepted with a warning (overflow = accept)"
            }
        };
        let fix = format!(
            "add workers for queue {name} or raise its concurrency, or raise its limit (rota queues declare {name} --max-depth/--max-age)",
            name = q.queue.name
        );
        if let Some(max) = config.max_depth.filter(|max| depth >= *max) {
            findings.push(Finding::warn(
                "backpressure",
                format!(
                    "queue `{}` holds {depth} ready and scheduled jobs, at its max_depth {max}: {outcome}",
                    q.queue.name
                ),
                fix.clone(),
            ));
        }
        if let (Some(max), Some(age)) = (config.max_age, q.oldest_ready_age) {
            if age > max {
                findings.push(Finding::warn(
                    "backpressure",
                    format!(
                        "the oldest ready job of queue `{}` has waited {}, beyond its max_age {}: {outcome}",
                        q.queue.name,
                        format_duration(Duration::from_secs(age.as_secs())),
                        format_duration(max)
                    ),
                    fix,
                ));
            }
        }
    }
    findings
}

fn describe(r: &Retention) -> String {
    format!(
        "completed {}, cancelled {}, dead {}",
        format_duration(r.completed),
        format_duration(r.cancelled),
        r.dead.map_or("until purged".to_owned(), format_duration)
    )
}

/// What the pruner keeps: the server's retention, and each queue that differs.
fn retention_finding(server: &Retention, queues: &[QueueStats]) -> Finding {
    let mut message = format!("jobs kept: {}", describe(server));
    for q in queues {
        let own = retention_for(&q.queue.config, server);
        if own != *server {
            message.push_str(&format!("; queue `{}`: {}", q.queue.name, describe(&own)));
        }
    }
    Finding::ok("retention", message)
}

#[cfg(test)]
mod clock_tests {
    use super::*;

    #[test]
    fn a_node_clock_off_by_more_than_a_second_is_a_warning() {
        let db = Timestamp::from_second(1_800_000_000).unwrap();
        let at = |ms: i64| {
            db.checked_add(jiff::SignedDuration::from_millis(ms))
                .unwrap()
        };
        assert_eq!(clock_finding(at(400), Some(db)).severity, Severity::Ok);
        assert_eq!(clock_finding(at(-900), Some(db)).severity, Severity::Ok);
        let ahead = clock_finding(at(2_500), Some(db));
        assert_eq!(ahead.severity, Severity::Warn);
        assert!(ahead.message.contains("2.5s ahead of"), "{}", ahead.message);
        let behind = clock_finding(at(-3_000), Some(db));
        assert!(behind.message.contains("behind"), "{}", behind.message);
        assert!(behind.fix.as_deref().unwrap().contains("NTP"));
        assert_eq!(
            clock_finding(at(5_000), None).severity,
            Severity::Ok,
            "one clock"
        );
    }
}

#[cfg(test)]
mod backpressure_tests {
    use super::*;
    use rota_store::{Queue, QueueConfig};

    fn stats(config: QueueConfig, ready: u64, age: u64) -> QueueStats {
        QueueStats {
            queue: Queue {
                name: "scribes".into(),
                config,
                paused: false,
                updated_at: Timestamp::UNIX_EPOCH,
            },
            counts: [(JobState::Available, ready)].into(),
            oldest_ready_age: Some(Duration::from_secs(age)),
        }
    }

    #[test]
    fn a_queue_at_its_max_depth_or_beyond_its_max_age_is_a_warning() {
        let config = QueueConfig {
            max_depth: Some(100),
            max_age: Some(Duration::from_secs(600)),
            ..QueueConfig::default()
        };
        assert!(backpressure_findings(&[stats(config.clone(), 99, 10)]).is_empty());
        let full = backpressure_findings(&[stats(config.clone(), 100, 10)]);
        assert_eq!(full.len(), 1);
        assert!(full[0]
            .message
            .contains("at its max_depth 100: enqueues are refused with 429"));
        assert_eq!(full[0].severity, Severity::Warn);
        let old = backpressure_findings(&[stats(config, 1, 601)]);
        assert!(
            old[0].message.contains("beyond its max_age 10m"),
            "{}",
            old[0].message
        );
        assert!(backpressure_findings(&[stats(QueueConfig::default(), 10_000, 9_999)]).is_empty());
    }
}
