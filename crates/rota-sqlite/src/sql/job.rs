//! Job statements: enqueue, claim, lease, rescue, prune, purge, reads.

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use rota_core::{transition, Event, Job, JobId, JobState};
use rota_store::*;
use rusqlite::{params, Connection, OptionalExtension};

use super::queue::{queue_get, queue_load, queue_required};
use super::row::{job_columns, job_from_row};
use super::worker::touch_worker;
use super::write::{insert_job, job_promote_due, save_job};
use super::{classify, db_err, exec_cached, from_micros, json, micros, Tx};

pub(crate) use super::write::{job_delete, job_prune_state};

/// The first ready jobs of one key, in claim order (a walk of `job_ready`).
pub(crate) const CLAIM_SELECT: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM job \
             WHERE state = 'available' AND queue = ?1 AND concurrency_key = ?2 AND +run_at <= ?3 \
               AND (?4 IS NULL OR kind IN (SELECT value FROM json_each(?4))) \
             ORDER BY priority, run_at, id LIMIT ?5"
);
/// The first ready job of the next key after `?2`, in claim order (one seek on `job_ready`).
pub(crate) const READY_KEY_AFTER: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM job WHERE state = 'available' AND queue = ?1 AND concurrency_key > ?2 \
     ORDER BY concurrency_key, priority, run_at, id LIMIT 1"
);
/// The first ready job of the first key.
pub(crate) const READY_KEY_FIRST: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM job WHERE state = 'available' AND queue = ?1 \
     ORDER BY concurrency_key, priority, run_at, id LIMIT 1"
);
/// Running jobs of queue `?1` per key (a walk of the queue's part of `job_running_key`: the
/// running set only).
pub(crate) const RUNNING_PER_KEY: &str = "SELECT concurrency_key, count(*) FROM job \
     WHERE state = 'running' AND concurrency_key <> '' AND queue = ?1 GROUP BY concurrency_key";
/// The keys of queue `?1` with at least `?2` running jobs, most first (a walk of the queue's
/// part of `job_running_key`: the running set only).
pub(crate) const KEYS_AT_LIMIT: &str = "SELECT concurrency_key, count(*) FROM job \
     WHERE state = 'running' AND concurrency_key <> '' AND queue = ?1 \
     GROUP BY concurrency_key HAVING count(*) >= ?2 \
     ORDER BY count(*) DESC, concurrency_key LIMIT ?3";
/// Ready jobs of key `?2`, counted up to `?3` (a walk of `job_ready`).
pub(crate) const READY_OF_KEY: &str = "SELECT count(*) FROM (SELECT 1 FROM job \
     WHERE state = 'available' AND queue = ?1 AND concurrency_key = ?2 LIMIT ?3)";
/// Running jobs holding a key (a seek on `job_running_key`).
pub(crate) const RUNNING_OF_KEY: &str = "SELECT count(*) FROM job \
     WHERE state = 'running' AND concurrency_key <> '' AND queue = ?1 AND concurrency_key = ?2";
pub(crate) const RESCUE_SELECT: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM job \
             WHERE state = 'running' AND lease_expires_at <= ?1 \
             ORDER BY lease_expires_at LIMIT ?2"
);
pub(crate) const OLDEST_AVAILABLE: &str =
    "SELECT min(run_at) FROM job WHERE state = 'available' AND queue = ?1";
pub(crate) const OLDEST_WAITING: &str = "SELECT min(run_at) FROM job WHERE state IN ('scheduled', 'retryable') AND queue = ?1 AND run_at <= ?2";
pub(crate) const NEXT_DUE: &str =
    "SELECT min(run_at) FROM job WHERE state IN ('scheduled', 'retryable') AND queue = ?1";
pub(crate) const RUNNING_SELECT: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM job WHERE state = 'running' ORDER BY lease_expires_at LIMIT ?1"
);
pub(crate) const DEAD_GROUPS_SELECT: &str = "SELECT json_extract(errors, '$[#-1].fingerprint'), json_extract(errors, '$[#-1].message'), kind, finished_at \
             FROM job WHERE state = 'dead' AND finished_at IS NOT NULL AND finished_at >= ?1 \
             ORDER BY finished_at DESC LIMIT ?2";

/// One job by id.
pub(crate) fn job_get(conn: &Connection, id: JobId) -> Result<Job, StoreError> {
    conn.prepare_cached(concat!(
        "SELECT ",
        job_columns!(),
        " FROM job WHERE id = ?1"
    ))
    .map_err(db_err("preparing job lookup"))?
    .query_row([id.as_bytes()], job_from_row)
    .optional()
    .map_err(|e| classify(&format!("reading job {id}"), e))?
    .ok_or(StoreError::JobNotFound(id))
}

/// Loads a job, applies `event` and saves the result.
pub(crate) fn job_apply(
    tx: &Tx<'_>,
    id: JobId,
    event: Event,
    now: Timestamp,
) -> Result<Job, StoreError> {
    let job = job_get(tx, id)?;
    let cause = ChangeCause::of(&event);
    let next = transition(&job, event, now)?;
    save_job(tx, &job, &next, cause, now)?;
    Ok(next)
}

/// Applies one event per item, each answered on its own (a stale lease refuses only its
/// item).
pub(crate) fn job_apply_each<T>(
    tx: &Tx<'_>,
    items: Vec<T>,
    now: Timestamp,
    to_event: impl Fn(T) -> (JobId, Event),
) -> Vec<Result<Job, StoreError>> {
    items
        .into_iter()
        .map(|item| {
            let (id, event) = to_event(item);
            job_apply(tx, id, event, now)
        })
        .collect()
}

/// Enqueues a batch (the caller's savepoint makes it all or nothing).
pub(crate) fn job_insert_many(
    tx: &Tx<'_>,
    p: JobInsertManyParams,
) -> Result<Vec<Inserted>, StoreError> {
    let mut queues: HashMap<String, QueueConfig> = HashMap::new();
    let mut loads: HashMap<String, QueueLoad> = HashMap::new();
    let len = p.jobs.len();
    let mut out = Vec::with_capacity(len);
    for (index, new) in p.jobs.into_iter().enumerate() {
        if !queues.contains_key(&new.queue) {
            rota_core::validation::validate_queue_name(&new.queue)
                .map_err(|e| StoreError::from(e).at_item(index, len))?;
            let queue = queue_required(tx, &new.queue)?;
            if has_backpressure(&queue.config) {
                // Before this batch's jobs: the writer runs one request at a time.
                loads.insert(queue.name.clone(), queue_load(tx, &queue.name, p.now)?);
            }
            queues.insert(queue.name, queue.config);
        }
        let same_key = match &new.unique_key {
            Some(key) => jobs_with_unique_key(tx, key)?,
            None => Vec::new(),
        };
        let collapse = CollapseKey::of(&new);
        let holder = match &collapse {
            Some(c) => collapse_holder(tx, c)?,
            None => None,
        };
        let queue = &queues[&new.queue];
        let planned = plan_enqueue(new, queue, &same_key, holder.as_ref(), &p.defaults, p.now)
            .map_err(|e| e.at_item(index, len))?;
        match planned {
            Planned::Duplicate(job) => out.push(Inserted {
                job,
                duplicate: true,
                warning: None,
            }),
            Planned::Debounced { before, after } => {
                save_job(tx, &before, &after, ChangeCause::Enqueued, p.now)?;
                out.push(Inserted {
                    job: *after,
                    duplicate: true,
                    warning: None,
                });
            }
            Planned::Insert(job) => {
                insert_job(tx, &job, ChangeCause::Enqueued)?;
                if let Some(c) = &collapse {
                    collapse_take(tx, c, &c.holder(&job, p.now))?;
                }
                out.push(Inserted {
                    job,
                    duplicate: false,
                    warning: None,
                });
            }
        }
    }
    // A refusal rolls the batch back with the request's savepoint.
    apply_backpressure(&mut out, |q| &queues[q], &loads, p.now)?;
    Ok(out)
}

/// Retries (operator's request) the job `id`, unless another unfinished job holds its unique
/// key: two live jobs never share one.
pub(crate) fn job_retry(tx: &Tx<'_>, id: JobId, now: Timestamp) -> Result<Job, StoreError> {
    let job = job_get(tx, id)?;
    if let Some(key) = &job.unique_key {
        let same_key = jobs_with_unique_key(tx, key)?;
        if let Some(holder) = retry_blocked_by(&job, &same_key) {
            return Err(StoreError::UniqueKeyTaken {
                job: id,
                key: key.clone(),
                holder: holder.id,
            });
        }
    }
    let next = transition(&job, Event::Retried, now)?;
    save_job(tx, &job, &next, ChangeCause::Retried, now)?;
    Ok(next)
}

/// Who holds a debounce or throttle key now.
fn collapse_holder(
    conn: &Connection,
    key: &CollapseKey,
) -> Result<Option<CollapseHolder>, StoreError> {
    let row: Option<([u8; 16], i64, i64)> = conn
        .prepare_cached(
            "SELECT job, first_at, until FROM enqueue_collapse WHERE scope = ?1 AND key = ?2",
        )
        .and_then(|mut stmt| {
            stmt.query_row(params![key.scope, key.key], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
        })
        .map_err(|e| classify(&format!("looking up {} key {:?}", key.scope, key.key), e))?;
    let Some((id, first_at, until)) = row else {
        return Ok(None);
    };
    let job = match job_get(conn, JobId::from_bytes(id)) {
        Ok(job) => Some(job),
        Err(StoreError::JobNotFound(_)) => None,
        Err(e) => return Err(e),
    };
    Ok(Some(CollapseHolder {
        job,
        first_at: from_micros(first_at).map_err(db_err("reading a collapse key"))?,
        until: from_micros(until).map_err(db_err("reading a collapse key"))?,
    }))
}

/// Gives a debounce or throttle key to a new holder.
fn collapse_take(
    conn: &Connection,
    key: &CollapseKey,
    holder: &CollapseHolder,
) -> Result<(), StoreError> {
    let job = holder.job.as_ref().map(|j| j.id.as_bytes().to_vec());
    conn.prepare_cached(
        "INSERT INTO enqueue_collapse (scope, key, job, first_at, until) VALUES (?1, ?2, ?3, ?4, ?5) \
         ON CONFLICT (scope, key) DO UPDATE SET job = excluded.job, first_at = excluded.first_at, \
           until = excluded.until",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![key.scope, key.key, job, micros(holder.first_at), micros(holder.until)])
    })
    .map_err(|e| classify(&format!("taking {} key {:?}", key.scope, key.key), e))?;
    Ok(())
}

/// The jobs holding unique key `key`, newest first.
fn jobs_with_unique_key(conn: &Connection, key: &str) -> Result<Vec<Job>, StoreError> {
    let mut stmt = conn
        .prepare_cached(concat!(
            "SELECT ",
            job_columns!(),
            " FROM job WHERE unique_key = ?1 ORDER BY id DESC"
        ))
        .map_err(db_err("preparing unique-key lookup"))?;
    let jobs = stmt
        .query_map([key], job_from_row)
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<Job>>>())
        .map_err(|e| classify(&format!("looking up unique key {key:?}"), e));
    jobs
}

/// Leases up to `max` jobs. Runs on the writer, so concurrent claimers are serialized and
/// never share a job, and the running counts a limit is checked against are exact.
pub(crate) fn job_claim_many(
    tx: &Tx<'_>,
    p: JobClaimManyParams,
    memory: &ClaimMemory,
) -> Result<Vec<Job>, StoreError> {
    check_claim_queues(&p.queues)?;
    // The concurrency checks read the counts: include what this request changed before.
    tx.settle_counts()?;
    let mut open_queues = Vec::with_capacity(p.queues.len());
    for name in &p.queues {
        let queue = queue_required(tx, name)?;
        if !queue.paused && !open_queues.iter().any(|q: &Queue| q.name == queue.name) {
            open_queues.push(queue);
        }
    }
    touch_worker(tx, &p.worker, p.now)?;
    if open_queues.is_empty() || p.max == 0 {
        return Ok(Vec::new());
    }
    let kinds = (!p.kinds.is_empty()).then(|| json(&p.kinds));
    let mut plans: Vec<QueuePlan<'_>> = Vec::with_capacity(open_queues.len());
    for queue in &open_queues {
        job_promote_due(tx, &queue.name, p.now)?;
        let (plan, buckets) = plan_queue_claim(tx, queue, kinds.as_deref(), &p, memory)?;
        plans.push((&queue.name, &queue.config, plan, buckets));
    }
    let (candidates, charged) = merge_plans(&plans, p.max, p.now);
    for (queue, buckets) in &charged {
        save_buckets(tx, queue, buckets)?;
    }
    let mut claimed = Vec::with_capacity(candidates.len());
    for job in candidates {
        let (_, config, _, _) = plans
            .iter()
            .find(|(q, ..)| *q == job.queue)
            .expect("planned");
        let event = Event::Fetched {
            worker: p.worker.clone(),
            lease_for: lease_for(Some(config), p.lease),
        };
        let next = transition(job, event, p.now)?;
        save_job(tx, job, &next, ChangeCause::Fetched, p.now)?;
        claimed.push(next);
    }
    Ok(claimed)
}

/// A claim inside a request that has already written (after completions): in a savepoint
/// of its own, so a claim that fails (an undeclared queue) leaves the earlier writes. The
/// outer `Result` is the database failing; the inner one the claim's own answer.
pub(crate) fn job_claim_nested(
    tx: &Tx<'_>,
    p: JobClaimManyParams,
    memory: &ClaimMemory,
) -> Result<Result<Vec<Job>, StoreError>, StoreError> {
    let run = |sql: &str| exec_cached(tx, sql).map_err(db_err("a claim's savepoint"));
    let mark = tx.mark()?;
    run("SAVEPOINT claim")?;
    let claimed = job_claim_many(tx, p, memory);
    if claimed.is_err() {
        run("ROLLBACK TO claim")?;
        tx.rewind(mark);
    }
    run("RELEASE claim")?;
    Ok(claimed)
}

/// The claim plan of one open queue, and the buckets it started from: the ready keys after
/// the queue's cursor that are not at a limit, their first jobs, and the planner's choice.
fn plan_queue_claim(
    tx: &Tx<'_>,
    queue: &Queue,
    kinds: Option<&str>,
    p: &JobClaimManyParams,
    memory: &ClaimMemory,
) -> Result<(ClaimPlan, Buckets), StoreError> {
    let config = &queue.config;
    let mut running = Running {
        // From the job counts: no scan.
        total: match config.concurrency {
            Some(_) => running_count(tx, &queue.name)?,
            None => 0,
        },
        by_key: HashMap::new(),
    };
    let allowance = claim_allowance(config, running.total, p.max);
    if allowance == 0 {
        let plan = ClaimPlan::default();
        memory.remember(&queue.name, config, &plan, &Buckets::new(), true, p.now);
        return Ok((plan, Buckets::new()));
    }
    let buckets = if has_claim_limits(config) {
        load_buckets(tx, &queue.name, p.now)?
    } else {
        Buckets::new()
    };
    if config.key_concurrency.is_some() {
        running.by_key = running_per_key(tx, &queue.name)?;
    }
    let blocked = blocked_keys(config, &running, &buckets, p.now);
    let mut found: Vec<(String, Job)> = Vec::new();
    let mut skipped = false;
    let mut scan = ReadyKeys::new(tx, &queue.name, memory.cursor(&queue.name))?;
    while found.len() < allowance {
        let Some((key, head)) = scan.next()? else {
            break;
        };
        if blocked.binary_search(&key).is_ok() {
            skipped = true;
            continue;
        }
        found.push((key, head));
    }
    let due = |j: &Job| j.run_at <= p.now && takes_kind(&p.kinds, &j.kind);
    let mut stmt = tx
        .prepare_cached(CLAIM_SELECT)
        .map_err(db_err("preparing claim"))?;
    let keys = found.len();
    let mut heads = Vec::with_capacity(keys);
    for (key, head) in found {
        let limit = fetch_per_key(config, &running, &key, keys, allowance);
        // One job of the key: the head the scan read is it.
        let jobs = if limit == 1 && due(&head) {
            vec![head]
        } else {
            stmt.query_map(
                params![queue.name, key, micros(p.now), kinds, limit as i64],
                job_from_row,
            )
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<Job>>>())
            .map_err(|e| classify(&format!("claiming from queue {:?}", queue.name), e))?
        };
        heads.push(KeyHeads { key, jobs });
    }
    let read: usize = heads.iter().map(|h| h.jobs.len()).sum();
    let plan = plan_claim(config, &running, &buckets, heads, allowance, p.now);
    let left = skipped || read > plan.jobs.len();
    memory.remember(&queue.name, config, &plan, &buckets, left, p.now);
    Ok((plan, buckets))
}

/// The keys of a queue's ready jobs, each with its first job in claim order, in key order
/// from just after the round-robin cursor, wrapping around once to end at the cursor: one
/// index seek per key.
struct ReadyKeys<'t, 'c> {
    after: rusqlite::CachedStatement<'t>,
    from_start: rusqlite::CachedStatement<'t>,
    queue: &'c str,
    cursor: Option<String>,
    at: Option<String>,
    wrapped: bool,
}

impl<'t, 'c> ReadyKeys<'t, 'c> {
    fn new(tx: &'t Tx<'_>, queue: &'c str, cursor: Option<String>) -> Result<Self, StoreError> {
        Ok(Self {
            after: tx
                .prepare_cached(READY_KEY_AFTER)
                .map_err(db_err("preparing key scan"))?,
            from_start: tx
                .prepare_cached(READY_KEY_FIRST)
                .map_err(db_err("preparing key scan"))?,
            queue,
            wrapped: cursor.is_none(),
            at: cursor.clone(),
            cursor,
        })
    }

    fn next(&mut self) -> Result<Option<(String, Job)>, StoreError> {
        loop {
            let found: Option<Job> = match &self.at {
                Some(at) => self.after.query_row(params![self.queue, at], job_from_row),
                None => self.from_start.query_row([self.queue], job_from_row),
            }
            .optional()
            .map_err(db_err("scanning ready keys"))?;
            match found {
                None if self.wrapped => return Ok(None),
                None => {
                    self.wrapped = true;
                    self.at = None;
                }
                Some(head) => {
                    let key = key_of(&head).to_string();
                    if self.wrapped && self.cursor.as_ref().is_some_and(|c| key > *c) {
                        return Ok(None);
                    }
                    self.at = Some(key.clone());
                    return Ok(Some((key, head)));
                }
            }
        }
    }
}

/// A queue's flow-control state (see `Store::queue_flow`).
pub(crate) fn queue_flow(conn: &Connection, p: QueueFlowParams) -> Result<QueueFlow, StoreError> {
    let queue = queue_required(conn, &p.queue)?;
    let config = &queue.config;
    if !has_claim_limits(config) {
        return Ok(QueueFlow {
            config: queue.config,
            ..QueueFlow::default()
        });
    }
    let mut flow = QueueFlow {
        config: config.clone(),
        running: Running {
            total: running_count(conn, &queue.name)?,
            by_key: HashMap::new(),
        },
        ..QueueFlow::default()
    };
    if let Some(limit) = config.key_concurrency {
        let at_limit: Vec<(String, i64)> = conn
            .prepare_cached(KEYS_AT_LIMIT)
            .and_then(|mut stmt| {
                stmt.query_map(params![queue.name, limit, KEYS_AT_LIMIT_MAX as i64], |r| {
                    Ok((r.get(0)?, r.get(1)?))
                })?
                .collect()
            })
            .map_err(db_err("finding keys at their limit"))?;
        let mut ready = conn
            .prepare_cached(READY_OF_KEY)
            .map_err(db_err("preparing ready count"))?;
        for (key, n) in at_limit {
            let left = WAITING_COUNT_MAX.saturating_sub(flow.waiting_on_keys);
            if left > 0 {
                let waiting: i64 = ready
                    .query_row(params![queue.name, key, left as i64], |r| r.get(0))
                    .map_err(db_err("counting ready jobs of a key"))?;
                flow.waiting_on_keys += waiting.max(0) as u64;
            }
            flow.running.by_key.insert(key, n.max(0) as u64);
        }
    }
    if let Some(key) = p.key {
        let n = running_of_key(conn, &queue.name, &key)?;
        flow.running.by_key.insert(key, n);
    }
    flow.buckets = load_buckets(conn, &queue.name, p.now)?;
    Ok(flow)
}

/// How many jobs of `queue` are running (from the job counts: no scan).
fn running_count(conn: &Connection, queue: &str) -> Result<u64, StoreError> {
    conn.prepare_cached(
        "SELECT coalesce(sum(n), 0) FROM job_count WHERE queue = ?1 AND state = 'running'",
    )
    .and_then(|mut stmt| stmt.query_row([queue], |r| r.get::<_, i64>(0)))
    .map(|n| n.max(0) as u64)
    .map_err(|e| classify(&format!("counting running jobs of {queue:?}"), e))
}

/// Running jobs of `queue` per key.
fn running_per_key(conn: &Connection, queue: &str) -> Result<HashMap<String, u64>, StoreError> {
    conn.prepare_cached(RUNNING_PER_KEY)
        .and_then(|mut stmt| {
            stmt.query_map([queue], |r| {
                Ok((r.get(0)?, r.get::<_, i64>(1)?.max(0) as u64))
            })?
            .collect()
        })
        .map_err(|e| classify(&format!("counting running jobs per key of {queue:?}"), e))
}

/// How many running jobs of `queue` hold `key` (a seek on `job_running_key`).
fn running_of_key(conn: &Connection, queue: &str, key: &str) -> Result<u64, StoreError> {
    conn.prepare_cached(RUNNING_OF_KEY)
        .and_then(|mut stmt| stmt.query_row([queue, key], |r| r.get::<_, i64>(0)))
        .map(|n| n.max(0) as u64)
        .map_err(|e| classify(&format!("counting running jobs of key {key:?}"), e))
}

/// The rate buckets of `queue` that are not full at `now`.
fn load_buckets(conn: &Connection, queue: &str, now: Timestamp) -> Result<Buckets, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT scope, name, tat FROM rate_bucket WHERE queue = ?1 AND tat > ?2")
        .map_err(db_err("preparing bucket lookup"))?;
    let rows = stmt
        .query_map(params![queue, micros(now)], |r| {
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                from_micros(r.get(2)?)?,
            ))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db_err("reading rate buckets"))?;
    Ok(rows
        .into_iter()
        .filter_map(|(scope, name, tat)| Some((BucketScope::from_parts(&scope, &name)?, tat)))
        .collect())
}

fn save_buckets(conn: &Connection, queue: &str, buckets: &Buckets) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO rate_bucket (queue, scope, name, tat) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (queue, scope, name) DO UPDATE SET tat = excluded.tat",
        )
        .map_err(db_err("preparing bucket update"))?;
    for (scope, tat) in buckets {
        let (scope, name) = scope.parts();
        stmt.execute(params![queue, scope, name, micros(*tat)])
            .map_err(db_err("saving a rate bucket"))?;
    }
    Ok(())
}

/// Extends leases, one answer per lease.
pub(crate) fn lease_extend_many(
    tx: &Tx<'_>,
    p: LeaseExtendManyParams,
) -> Result<Vec<Result<Extended, StoreError>>, StoreError> {
    touch_worker(tx, &p.worker, p.now)?;
    let mut leases: HashMap<String, Duration> = HashMap::new();
    Ok(p.leases
        .iter()
        .map(|lease| {
            let before = job_get(tx, lease.job)?;
            if !leases.contains_key(&before.queue) {
                let queue = queue_get(tx, &before.queue)?;
                leases.insert(
                    before.queue.clone(),
                    lease_for(queue.as_ref().map(|q| &q.config), p.lease),
                );
            }
            let event = Event::Heartbeat {
                token: lease.token,
                lease_for: leases[&before.queue],
            };
            let job = transition(&before, event, p.now)?;
            save_job(tx, &before, &job, ChangeCause::Fetched, p.now)?;
            Ok(Extended {
                job: job.id,
                expires_at: job.lease.as_ref().map_or(p.now, |l| l.expires_at),
                cancel_requested: job.cancel_requested,
            })
        })
        .collect())
}

/// Rescues up to `limit` expired leases.
pub(crate) fn lease_rescue_expired(
    tx: &Tx<'_>,
    p: LeaseRescueParams,
) -> Result<RescueReport, StoreError> {
    let mut stmt = tx
        .prepare_cached(RESCUE_SELECT)
        .map_err(db_err("preparing rescue"))?;
    let expired = stmt
        .query_map(params![micros(p.now), p.limit as i64], job_from_row)
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<Job>>>())
        .map_err(db_err("finding expired leases"))?;
    let mut report = RescueReport::default();
    for job in expired {
        let next = transition(&job, Event::LeaseExpired, p.now)?;
        save_job(tx, &job, &next, ChangeCause::Rescued, p.now)?;
        report.record(&next);
    }
    Ok(report)
}

/// Deletes finished jobs past their retention.
pub(crate) fn job_prune(tx: &Tx<'_>, p: JobPruneParams) -> Result<PruneReport, StoreError> {
    // Buckets that have refilled are the same as none.
    tx.prepare_cached("DELETE FROM rate_bucket WHERE tat <= ?1")
        .and_then(|mut stmt| stmt.execute([micros(p.now)]))
        .map_err(db_err("pruning rate buckets"))?;
    // Keys whose hold has ended are free either way.
    tx.prepare_cached("DELETE FROM enqueue_collapse WHERE until <= ?1")
        .and_then(|mut stmt| stmt.execute([micros(p.now)]))
        .map_err(db_err("pruning debounce and throttle keys"))?;
    let mut report = PruneReport::default();
    for (state, cutoff) in p.cutoffs() {
        let n = job_prune_state(tx, state, cutoff, p.queue.as_deref(), p.limit, p.now)?;
        report.add(state, n);
    }
    Ok(report)
}

/// The ids an operator's selector means; a filter without states means `default_state`.
pub(crate) fn job_select_ids(
    conn: &Connection,
    selector: &JobSelector,
    default_state: JobState,
) -> Result<Vec<JobId>, StoreError> {
    match selector {
        JobSelector::Ids(ids) => Ok(ids.clone()),
        JobSelector::Filter(filter) => {
            let params = JobListParams {
                filter: selector_filter(filter, default_state),
                after: None,
                limit: 0,
                scan: None,
            };
            Ok(job_list(conn, &params, usize::MAX >> 1, None)?
                .into_iter()
                .map(|j| j.id)
                .collect())
        }
    }
}

/// Jobs matching a filter, newest first, after the cursor, at most `limit`.
pub(crate) fn job_list(
    conn: &Connection,
    p: &JobListParams,
    limit: usize,
    oldest: Option<JobId>,
) -> Result<Vec<Job>, StoreError> {
    let f = &p.filter;
    let list = |v: &[String]| (!v.is_empty()).then(|| json(&v));
    let states: Vec<String> = f.states.iter().map(|s| s.as_str().to_owned()).collect();
    let mut stmt = conn
        .prepare_cached(concat!(
            "SELECT ",
            job_columns!(),
            " FROM job \
             WHERE (?1 IS NULL OR queue IN (SELECT value FROM json_each(?1))) \
               AND (?2 IS NULL OR kind IN (SELECT value FROM json_each(?2))) \
               AND (?3 IS NULL OR state IN (SELECT value FROM json_each(?3))) \
               AND (?4 IS NULL OR (instr(tags, json_quote(?4)) > 0 \
                    AND EXISTS (SELECT 1 FROM json_each(job.tags) WHERE value = ?4))) \
               AND (?5 IS NULL OR created_at >= ?5) \
               AND (?6 IS NULL OR created_at < ?6) \
               AND id < coalesce(?7, X'FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF') \
               AND id >= coalesce(?10, X'') \
               AND (?9 IS NULL OR json_extract(errors, '$[#-1].fingerprint') = ?9) \
             ORDER BY id DESC LIMIT ?8"
        ))
        .map_err(db_err("preparing job list"))?;
    let rows = stmt
        .query_map(
            params![
                list(&f.queues),
                list(&f.kinds),
                list(&states),
                f.tag,
                f.created_after.map(micros),
                f.created_before.map(micros),
                p.after.map(|id| id.as_bytes().to_vec()),
                limit as i64,
                f.error_group,
                oldest.map(|id| id.as_bytes().to_vec()),
            ],
            job_from_row,
        )
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<Job>>>())
        .map_err(db_err("listing jobs"));
    rows
}

/// A job's stored history.
pub(crate) fn job_history(conn: &Connection, id: JobId) -> Result<Vec<StateChange>, StoreError> {
    let text: Option<String> = conn
        .prepare_cached("SELECT history FROM job WHERE id = ?1")
        .and_then(|mut stmt| stmt.query_row([id.as_bytes()], |r| r.get(0)).optional())
        .map_err(db_err("reading a job's history"))?;
    let text = text.ok_or(StoreError::JobNotFound(id))?;
    Ok(StateChange::parse_log(&text))
}

/// The jobs a listing from `after` with a scan limit of `scan` looks at: the oldest of
/// them when there are that many (one walk of the primary key; a listing then stops there).
pub(crate) fn job_scan_window(
    conn: &Connection,
    after: Option<JobId>,
    scan: usize,
) -> Result<ScanWindow, StoreError> {
    let oldest = conn
        .prepare_cached(
            "SELECT id FROM job WHERE id < coalesce(?1, X'FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF') \
             ORDER BY id DESC LIMIT 1 OFFSET ?2",
        )
        .and_then(|mut stmt| {
            stmt.query_row(
                params![
                    after.map(|id| id.as_bytes().to_vec()),
                    scan.max(1) as i64 - 1
                ],
                |r| r.get::<_, [u8; 16]>(0),
            )
            .optional()
        })
        .map_err(db_err("bounding a job listing"))?;
    Ok(ScanWindow {
        oldest: oldest.map(JobId::from_bytes),
        full: oldest.is_some(),
    })
}

/// The earliest run_at of a waiting job on `queues` (one index seek per queue).
pub(crate) fn job_next_due(
    conn: &Connection,
    queues: &[String],
) -> Result<Option<Timestamp>, StoreError> {
    let mut stmt = conn
        .prepare_cached(NEXT_DUE)
        .map_err(db_err("finding the next due job"))?;
    let mut earliest: Option<i64> = None;
    for queue in queues {
        let at: Option<i64> = stmt
            .query_row([queue], |r| r.get(0))
            .map_err(db_err("finding the next due job"))?;
        earliest = earliest.into_iter().chain(at).min();
    }
    earliest
        .map(from_micros)
        .transpose()
        .map_err(db_err("finding the next due job"))
}

/// Running jobs, soonest lease expiry first (the `job_leased` index).
pub(crate) fn job_list_running(conn: &Connection, limit: usize) -> Result<Vec<Job>, StoreError> {
    conn.prepare_cached(RUNNING_SELECT)
        .and_then(|mut stmt| stmt.query_map([limit as i64], job_from_row)?.collect())
        .map_err(db_err("listing running jobs"))
}

/// Dead jobs since `since`, one row each for [`group_dead`] (the `job_finished` index
/// narrows the scan to dead jobs in the window).
pub(crate) fn dead_rows(
    conn: &Connection,
    since: Option<Timestamp>,
    latest: Option<usize>,
) -> Result<Vec<DeadRow>, StoreError> {
    let err = db_err("grouping dead jobs");
    let mut stmt = conn.prepare_cached(DEAD_GROUPS_SELECT).map_err(&err)?;
    let limit = latest.map_or(-1, |n| n as i64);
    let rows = stmt
        .query_map([since.map_or(i64::MIN, micros), limit], |r| {
            Ok(DeadRow {
                fingerprint: r.get(0)?,
                message: r.get(1)?,
                kind: r.get(2)?,
                finished_at: from_micros(r.get(3)?)?,
            })
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(&err);
    rows
}
