//! View models: a page-worth of data in its wire form, built from the store here rather than
//! inside the JSON handlers, so the HTML dashboard can reuse them.

use jiff::Timestamp;
use rota_api::{JobPageView, KeyAtLimit, QueueView, ScheduleView, WaitingView, WorkerView};
use rota_store::{
    JobGetParams, JobListParams, QueueFlowParams, QueueListParams, QueueStats, ScheduleRecord,
    Store, StoreError, Worker,
};

/// A queue with its counts.
pub fn queue(stats: QueueStats) -> QueueView {
    let running = stats
        .counts
        .get(&rota_core::JobState::Running)
        .copied()
        .unwrap_or(0);
    QueueView {
        name: stats.queue.name,
        paused: stats.queue.paused,
        counts: stats
            .counts
            .into_iter()
            .map(|(state, n)| (state.as_str().to_owned(), n))
            .collect(),
        oldest_ready_age_seconds: stats.oldest_ready_age.map(|d| d.as_secs_f64()),
        max_attempts: stats.queue.config.retry.max_attempts,
        backoff: stats.queue.config.retry.backoff.clone(),
        lease: stats.queue.config.lease.map(rota_core::format_duration),
        timeout: stats.queue.config.timeout.map(rota_core::format_duration),
        concurrency: stats.queue.config.concurrency,
        completed_retention: stats
            .queue
            .config
            .completed_retention
            .map(rota_core::format_duration),
        cancelled_retention: stats
            .queue
            .config
            .cancelled_retention
            .map(rota_core::format_duration),
        dead_retention: stats
            .queue
            .config
            .dead_retention
            .map(rota_core::format_duration),
        key_concurrency: stats.queue.config.key_concurrency,
        key_weights: stats.queue.config.key_weights.clone(),
        rate: stats.queue.config.rate.map(|r| r.to_string()),
        key_rate: stats.queue.config.key_rate.map(|r| r.to_string()),
        kind_rates: stats
            .queue
            .config
            .kind_rates
            .iter()
            .map(|(k, r)| (k.clone(), r.to_string()))
            .collect(),
        max_depth: stats.queue.config.max_depth,
        max_age: stats.queue.config.max_age.map(rota_core::format_duration),
        overflow: stats.queue.config.overflow.map(|o| o.as_str().to_string()),
        running,
        keys_at_limit: Vec::new(),
        waiting: None,
        overflows: 0,
    }
}

/// A queue with its counts and, when it has limits, what they hold back now.
pub async fn queue_with_flow(
    store: &dyn Store,
    stats: QueueStats,
    now: Timestamp,
) -> Result<QueueView, StoreError> {
    let config = stats.queue.config.clone();
    let ready = stats
        .counts
        .get(&rota_core::JobState::Available)
        .copied()
        .unwrap_or(0);
    let mut view = queue(stats);
    if rota_store::has_claim_limits(&config) {
        let flow = store
            .queue_flow(QueueFlowParams {
                queue: view.name.clone(),
                key: None,
                now,
            })
            .await?;
        if let Some(limit) = config.key_concurrency {
            view.keys_at_limit = rota_store::keys_at_limit(&config, &flow)
                .into_iter()
                .map(|(key, running)| KeyAtLimit {
                    key: key.to_string(),
                    running,
                    limit,
                })
                .collect();
        }
        view.waiting = rota_store::queue_waiting(&config, &flow, ready, now)
            .map(|(jobs, reason)| WaitingView { jobs, reason });
    }
    Ok(view)
}

/// Every queue.
pub async fn queues(store: &dyn Store, now: Timestamp) -> Result<Vec<QueueView>, StoreError> {
    let mut views = Vec::new();
    for stats in store.queue_list(QueueListParams { now }).await? {
        views.push(queue_with_flow(store, stats, now).await?);
    }
    Ok(views)
}

/// Why a job waits, when a limit of its queue holds it back now.
pub async fn job_waiting(
    store: &dyn Store,
    job: &rota_core::Job,
    now: Timestamp,
) -> Result<Option<String>, StoreError> {
    if job.state != rota_core::JobState::Available {
        return Ok(None);
    }
    let flow = match store
        .queue_flow(QueueFlowParams {
            queue: job.queue.clone(),
            key: job.concurrency_key.clone(),
            now,
        })
        .await
    {
        Ok(flow) => flow,
        Err(e) if e.kind() == rota_store::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(e),
    };
    Ok(rota_store::waiting_reason(&flow.config, job, &flow, now))
}

/// One queue, if declared (the flow of that queue only).
pub async fn queue_named(
    store: &dyn Store,
    name: &str,
    now: Timestamp,
) -> Result<Option<QueueView>, StoreError> {
    let stats = store.queue_list(QueueListParams { now }).await?;
    match stats.into_iter().find(|q| q.queue.name == name) {
        Some(stats) => Ok(Some(queue_with_flow(store, stats, now).await?)),
        None => Ok(None),
    }
}

/// A schedule with its next slot and the state of its last job.
pub async fn schedule(store: &dyn Store, record: ScheduleRecord, now: Timestamp) -> ScheduleView {
    let def = &record.schedule;
    let next_slot = if def.enabled {
        def.validate()
            .ok()
            .and_then(|c| c.next_after(record.last_slot.max(now)))
    } else {
        None
    };
    let last_job_state = match record.last_job {
        Some(id) => store
            .job_get(JobGetParams { id })
            .await
            .ok()
            .map(|j| j.state),
        None => None,
    };
    ScheduleView {
        name: def.name.clone(),
        cron: def.expression.clone(),
        timezone: def.timezone.clone(),
        queue: def.template.queue.clone(),
        kind: def.template.kind.clone(),
        misfire: def.misfire,
        backfill: rota_core::format_duration(def.backfill),
        enabled: def.enabled,
        source: def.source,
        next_slot,
        last_slot: record.last_slot,
        last_job: record.last_job.map(|id| id.to_string()),
        last_job_state,
        fired: record.fired,
        missed: record.missed,
        recovered: record.recovered,
    }
}

/// A page of jobs.
pub async fn job_page(store: &dyn Store, params: JobListParams) -> Result<JobPageView, StoreError> {
    let page = store.job_list(params).await?;
    Ok(JobPageView {
        jobs: page.jobs.into_iter().map(Into::into).collect(),
        next: page.next.map(|id| id.to_string()),
    })
}

/// A worker; `alive` when it fetched or heartbeated within `lease` of `now`.
pub fn worker(w: Worker, lease: std::time::Duration, now: Timestamp) -> WorkerView {
    WorkerView {
        alive: rota_core::add_duration(w.last_seen, lease) >= now,
        name: if w.info.name.is_empty() {
            w.info.host.clone()
        } else {
            w.info.name
        },
        id: w.info.id,
        queues: w.info.queues,
        kinds: w.info.kinds,
        host: w.info.host,
        pid: w.info.pid,
        concurrency: w.info.concurrency,
        version: w.info.version,
        started_at: w.started_at,
        last_seen: w.last_seen,
    }
}
