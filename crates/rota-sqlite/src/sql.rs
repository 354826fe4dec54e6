//! Every SQL statement of the SQLite backend, and the mapping between rows and jobs.
//!
//! Functions here run on a connection the caller provides: the writer's (inside its group
//! transaction) for writes, a reader's for reads. Job changes load the row, apply
//! [`rota_core::transition`] and save the result, so the state machine has one definition.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use jiff::Timestamp;
use rota_core::{transition, Event, Job, JobId, JobState, Lease};
use rota_store::*;
use rusqlite::{params, Connection, OptionalExtension, Row};

/// Wraps a rusqlite error with what was being done.
pub fn db_err(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |err| classify(context, err)
}

/// Classifies a rusqlite error by meaning.
pub fn classify(context: &str, err: rusqlite::Error) -> StoreError {
    match err.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            StoreError::Busy(format!("{context}: {err}"))
        }
        Some(
            rusqlite::ErrorCode::CannotOpen
            | rusqlite::ErrorCode::NotADatabase
            | rusqlite::ErrorCode::ReadOnly
            | rusqlite::ErrorCode::DiskFull
            | rusqlite::ErrorCode::SystemIoFailure,
        ) => StoreError::Unavailable(format!("{context}: {err}")),
        _ => StoreError::backend(context, err),
    }
}

fn micros(at: Timestamp) -> i64 {
    at.as_microsecond()
}

fn from_micros(v: i64) -> rusqlite::Result<Timestamp> {
    Timestamp::from_microsecond(v).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(0, rusqlite::types::Type::Integer, e.into())
    })
}

fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("job fields always serialize")
}

fn from_json<T: serde::de::DeserializeOwned>(idx: usize, text: &str) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, e.into())
    })
}

/// The job columns, in the order [`job_from_row`] reads them (a macro so that statements
/// are `concat!`ed at compile time instead of formatted on every call).
macro_rules! job_columns {
    () => {
        "id, queue, kind, args, priority, state, attempt, max_attempts, backoff, \
         timeout_ms, unique_key, tags, progress, result, errors, lease_worker, lease_token, \
         lease_expires_at, cancel_requested, run_at, created_at, attempted_at, finished_at, \
         schedule, slot"
    };
}

/// Statements on hot or large paths; `hot_statements_use_their_indexes` checks that none of
/// them scans the job table.
const PROMOTE_DUE_SELECT: &str = "SELECT kind, state FROM job \
             WHERE state IN ('scheduled', 'retryable') AND queue = ?1 AND run_at <= ?2";
const PROMOTE_DUE_UPDATE: &str = "UPDATE job SET state = 'available' \
         WHERE state IN ('scheduled', 'retryable') AND queue = ?1 AND run_at <= ?2";
const CLAIM_SELECT: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM job \
             WHERE state = 'available' AND queue = ?1 AND run_at <= ?2 \
               AND (?3 IS NULL OR kind IN (SELECT value FROM json_each(?3))) \
             ORDER BY priority, run_at, id LIMIT ?4"
);
const RESCUE_SELECT: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM job \
             WHERE state = 'running' AND lease_expires_at <= ?1 \
             ORDER BY lease_expires_at LIMIT ?2"
);
const OLDEST_AVAILABLE: &str =
    "SELECT run_at FROM job WHERE state = 'available' AND queue = ?1 AND priority = ?2 \
             ORDER BY run_at LIMIT 1";
const OLDEST_WAITING: &str = "SELECT min(run_at) FROM job WHERE state IN ('scheduled', 'retryable') AND queue = ?1 AND run_at <= ?2";
const NEXT_DUE: &str =
    "SELECT min(run_at) FROM job WHERE state IN ('scheduled', 'retryable') AND queue = ?1";
const RUNNING_SELECT: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM job WHERE state = 'running' ORDER BY lease_expires_at LIMIT ?1"
);
const DEAD_GROUPS_SELECT: &str = "SELECT json_extract(errors, '$[#-1].fingerprint'), json_extract(errors, '$[#-1].message'), kind, finished_at \
             FROM job WHERE state = 'dead' AND finished_at IS NOT NULL AND finished_at >= ?1";
const PRUNE_DELETE: &str = "DELETE FROM job WHERE id IN (SELECT id FROM job \
             WHERE state = ?1 AND finished_at IS NOT NULL AND finished_at < ?2 LIMIT ?3) \
             RETURNING queue, kind";

fn job_from_row(row: &Row<'_>) -> rusqlite::Result<Job> {
    let id: [u8; 16] = row.get(0)?;
    let state = text(row, 5)?;
    let state: JobState = state.parse().map_err(|e: rota_core::UnknownState| {
        rusqlite::Error::FromSqlConversionFailure(5, rusqlite::types::Type::Text, e.into())
    })?;
    let lease_worker: Option<String> = row.get(15)?;
    let lease_token: i64 = row.get(16)?;
    let lease_expires_at: Option<i64> = row.get(17)?;
    let lease = match (state, lease_worker, lease_expires_at) {
        (JobState::Running, Some(worker), Some(expires)) => Some(Lease {
            worker,
            token: lease_token as u64,
            expires_at: from_micros(expires)?,
        }),
        _ => None,
    };
    Ok(Job {
        id: JobId::from_bytes(id),
        queue: row.get(1)?,
        kind: row.get(2)?,
        args: from_json(3, text(row, 3)?)?,
        priority: row.get(4)?,
        state,
        attempt: row.get(6)?,
        max_attempts: row.get(7)?,
        backoff: backoff_from_text(text(row, 8)?)?,
        timeout: row
            .get::<_, Option<i64>>(9)?
            .map(|ms| Duration::from_millis(ms as u64)),
        unique_key: row.get(10)?,
        tags: from_json(11, text(row, 11)?)?,
        progress: optional_text(row, 12)?
            .map(|t| from_json(12, t))
            .transpose()?,
        result: optional_text(row, 13)?
            .map(|t| from_json(13, t))
            .transpose()?,
        errors: from_json(14, text(row, 14)?)?,
        lease,
        lease_token: lease_token as u64,
        cancel_requested: row.get(18)?,
        run_at: from_micros(row.get(19)?)?,
        created_at: from_micros(row.get(20)?)?,
        attempted_at: row
            .get::<_, Option<i64>>(21)?
            .map(from_micros)
            .transpose()?,
        finished_at: row
            .get::<_, Option<i64>>(22)?
            .map(from_micros)
            .transpose()?,
        origin: match (
            row.get::<_, Option<String>>(23)?,
            row.get::<_, Option<i64>>(24)?,
        ) {
            (Some(schedule), Some(slot)) => Some(rota_core::JobOrigin {
                schedule,
                slot: from_micros(slot)?,
            }),
            _ => None,
        },
    })
}

/// A TEXT column, borrowed from the row (no allocation).
fn text<'r>(row: &'r Row<'_>, idx: usize) -> rusqlite::Result<&'r str> {
    Ok(row.get_ref(idx)?.as_str()?)
}

/// A nullable TEXT column, borrowed from the row.
fn optional_text<'r>(row: &'r Row<'_>, idx: usize) -> rusqlite::Result<Option<&'r str>> {
    Ok(row.get_ref(idx)?.as_str_or_null()?)
}

/// Parses a stored backoff, remembering recent ones: jobs share a handful of policies, and
/// reading one back is otherwise a JSON parse plus a duration parse per row.
fn backoff_from_text(raw: &str) -> rusqlite::Result<rota_core::Backoff> {
    use std::cell::RefCell;
    const REMEMBERED: usize = 64;
    thread_local! {
        static SEEN: RefCell<HashMap<String, rota_core::Backoff>> = RefCell::new(HashMap::new());
    }
    SEEN.with(|seen| {
        if let Some(backoff) = seen.borrow().get(raw) {
            return Ok(backoff.clone());
        }
        let backoff: rota_core::Backoff = from_json(8, raw)?;
        let mut seen = seen.borrow_mut();
        if seen.len() >= REMEMBERED {
            seen.clear();
        }
        seen.insert(raw.to_owned(), backoff.clone());
        Ok(backoff)
    })
}

thread_local! {
    /// Changes to `job_count` made by the write request running on this (the writer) thread,
    /// applied by [`flush_count_deltas`] at the end of the request, inside its savepoint.
    static COUNT_DELTAS: std::cell::RefCell<HashMap<(String, String, JobState), i64>> =
        std::cell::RefCell::new(HashMap::new());
}

fn count_delta(queue: &str, kind: &str, state: JobState, delta: i64) {
    COUNT_DELTAS.with(|d| {
        *d.borrow_mut()
            .entry((queue.to_owned(), kind.to_owned(), state))
            .or_default() += delta;
    });
}

/// Applies this request's count changes (one statement per queue, kind and state touched).
pub fn flush_count_deltas(conn: &Connection) -> Result<(), StoreError> {
    let deltas: Vec<_> =
        COUNT_DELTAS.with(|d| d.borrow_mut().drain().filter(|(_, n)| *n != 0).collect());
    if deltas.is_empty() {
        return Ok(());
    }
    let mut stmt = conn
        .prepare_cached(
            "INSERT INTO job_count (queue, kind, state, n) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (queue, kind, state) DO UPDATE SET n = n + excluded.n",
        )
        .map_err(db_err("preparing job counts"))?;
    for ((queue, kind, state), n) in deltas {
        stmt.execute(params![queue, kind, state.as_str(), n])
            .map_err(db_err("updating job counts"))?;
    }
    Ok(())
}

/// Forgets this request's count changes (its savepoint was rolled back).
pub fn discard_count_deltas() {
    COUNT_DELTAS.with(|d| d.borrow_mut().clear());
}

fn insert_job(conn: &Connection, job: &Job) -> Result<(), StoreError> {
    let mut stmt = conn
        .prepare_cached(concat!("INSERT INTO job (", job_columns!(), ") VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25)"))
        .map_err(db_err("preparing job insert"))?;
    stmt.execute(params![
        job.id.as_bytes(),
        job.queue,
        job.kind,
        json(&job.args),
        job.priority,
        job.state.as_str(),
        job.attempt,
        job.max_attempts,
        json(&job.backoff),
        job.timeout.map(|d| d.as_millis() as i64),
        job.unique_key,
        json(&job.tags),
        job.progress.as_ref().map(json),
        job.result.as_ref().map(json),
        json(&job.errors),
        job.lease.as_ref().map(|l| l.worker.as_str()),
        job.lease_token as i64,
        job.lease.as_ref().map(|l| micros(l.expires_at)),
        job.cancel_requested,
        micros(job.run_at),
        micros(job.created_at),
        job.attempted_at.map(micros),
        job.finished_at.map(micros),
        job.origin.as_ref().map(|o| o.schedule.as_str()),
        job.origin.as_ref().map(|o| micros(o.slot)),
    ])
    .map_err(|e| classify(&format!("inserting job {}", job.id), e))?;
    count_delta(&job.queue, &job.kind, job.state, 1);
    Ok(())
}

/// Writes back the fields a transition changed, and only those: SQLite maintains an index
/// on an UPDATE when the index's columns are in the SET list, changed or not, so a narrow
/// SET keeps each transition to the index work it really needs.
fn save_job(conn: &Connection, before: &Job, after: &Job) -> Result<(), StoreError> {
    use rusqlite::types::Value as V;

    let mut sql = String::with_capacity(160);
    let mut values: Vec<V> = vec![V::Blob(after.id.as_bytes().to_vec())];
    let mut set = |column: &str, value: V| {
        sql.push_str(if values.len() == 1 {
            "UPDATE job SET "
        } else {
            ", "
        });
        values.push(value);
        sql.push_str(column);
        sql.push_str(" = ?");
        sql.push_str(&values.len().to_string());
    };
    let opt_text = |v: Option<String>| v.map_or(V::Null, V::Text);
    let opt_int = |v: Option<i64>| v.map_or(V::Null, V::Integer);
    if before.state != after.state {
        set("state", V::Text(after.state.as_str().to_owned()));
    }
    if before.attempt != after.attempt {
        set("attempt", V::Integer(after.attempt.into()));
    }
    if before.max_attempts != after.max_attempts {
        set("max_attempts", V::Integer(after.max_attempts.into()));
    }
    if before.progress != after.progress {
        set("progress", opt_text(after.progress.as_ref().map(json)));
    }
    if before.result != after.result {
        set("result", opt_text(after.result.as_ref().map(json)));
    }
    if before.errors != after.errors {
        set("errors", V::Text(json(&after.errors)));
    }
    if before.lease != after.lease {
        set(
            "lease_worker",
            opt_text(after.lease.as_ref().map(|l| l.worker.clone())),
        );
        set(
            "lease_expires_at",
            opt_int(after.lease.as_ref().map(|l| micros(l.expires_at))),
        );
    }
    if before.lease_token != after.lease_token {
        set("lease_token", V::Integer(after.lease_token as i64));
    }
    if before.cancel_requested != after.cancel_requested {
        set(
            "cancel_requested",
            V::Integer(after.cancel_requested.into()),
        );
    }
    if before.run_at != after.run_at {
        set("run_at", V::Integer(micros(after.run_at)));
    }
    if before.attempted_at != after.attempted_at {
        set("attempted_at", opt_int(after.attempted_at.map(micros)));
    }
    if before.finished_at != after.finished_at {
        set("finished_at", opt_int(after.finished_at.map(micros)));
    }
    if values.len() == 1 {
        return Ok(());
    }
    if before.state != after.state {
        count_delta(&after.queue, &after.kind, before.state, -1);
        count_delta(&after.queue, &after.kind, after.state, 1);
    }
    sql.push_str(" WHERE id = ?1");
    conn.prepare_cached(&sql)
        .and_then(|mut stmt| stmt.execute(rusqlite::params_from_iter(values)))
        .map_err(|e| classify(&format!("updating job {}", after.id), e))?;
    Ok(())
}

/// One job by id.
pub fn job_get(conn: &Connection, id: JobId) -> Result<Job, StoreError> {
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
pub fn job_apply(
    conn: &Connection,
    id: JobId,
    event: Event,
    now: Timestamp,
) -> Result<Job, StoreError> {
    let job = job_get(conn, id)?;
    let next = transition(&job, event, now)?;
    save_job(conn, &job, &next)?;
    Ok(next)
}

fn queue_from_row(row: &Row<'_>) -> rusqlite::Result<Queue> {
    Ok(Queue {
        name: row.get(0)?,
        config: from_json(1, &row.get::<_, String>(1)?)?,
        paused: row.get(2)?,
        updated_at: from_micros(row.get(3)?)?,
    })
}

fn queue_get(conn: &Connection, name: &str) -> Result<Option<Queue>, StoreError> {
    conn.prepare_cached("SELECT name, config, paused, updated_at FROM queue WHERE name = ?1")
        .map_err(db_err("preparing queue lookup"))?
        .query_row([name], queue_from_row)
        .optional()
        .map_err(|e| classify(&format!("reading queue {name:?}"), e))
}

fn queue_names(conn: &Connection) -> Result<Vec<String>, StoreError> {
    let mut stmt = conn
        .prepare_cached("SELECT name FROM queue ORDER BY name")
        .map_err(db_err("preparing queue names"))?;
    let names = stmt
        .query_map([], |r| r.get(0))
        .and_then(|rows| rows.collect())
        .map_err(db_err("listing queue names"));
    names
}

fn queue_required(conn: &Connection, name: &str) -> Result<Queue, StoreError> {
    match queue_get(conn, name)? {
        Some(queue) => Ok(queue),
        None => Err(queue_not_declared(name, &queue_names(conn)?)),
    }
}

/// Enqueues a batch (the caller's savepoint makes it all or nothing).
pub fn job_insert_many(
    conn: &Connection,
    p: JobInsertManyParams,
) -> Result<Vec<Inserted>, StoreError> {
    let mut queues: HashMap<String, QueueConfig> = HashMap::new();
    let mut out = Vec::with_capacity(p.jobs.len());
    for new in p.jobs {
        if !queues.contains_key(&new.queue) {
            rota_core::validation::validate_queue_name(&new.queue)?;
            let queue = queue_required(conn, &new.queue)?;
            queues.insert(queue.name, queue.config);
        }
        if let Some(key) = &new.unique_key {
            if let Some(existing) = unique_match(conn, key, new.unique_for, p.now)? {
                out.push(Inserted {
                    job: existing,
                    duplicate: true,
                });
                continue;
            }
        }
        let queue = queues.get(&new.queue);
        let job = check_insert(new, queue, &p.defaults, p.now)?;
        insert_job(conn, &job)?;
        out.push(Inserted {
            job,
            duplicate: false,
        });
    }
    Ok(out)
}

fn unique_match(
    conn: &Connection,
    key: &str,
    unique_for: Option<Duration>,
    now: Timestamp,
) -> Result<Option<Job>, StoreError> {
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
        .map_err(|e| classify(&format!("looking up unique key {key:?}"), e))?;
    Ok(jobs
        .into_iter()
        .find(|job| unique_key_blocks(job, unique_for, now)))
}

/// Makes scheduled and retryable jobs of `queue` whose time has come available (the `Due`
/// transition, set-based: it changes nothing but the state).
fn job_promote_due(conn: &Connection, queue: &str, now: Timestamp) -> Result<usize, StoreError> {
    // `state IN ('scheduled', 'retryable')` exactly as in the partial index `job_waiting`:
    // SQLite uses a partial index only when the query repeats its condition (with
    // `state = 'scheduled'` it scans the whole table). The SELECT learns what changes, for
    // the job counts; it almost always finds nothing.
    let err = db_err("promoting due jobs");
    let due: Vec<(String, String)> = conn
        .prepare_cached(PROMOTE_DUE_SELECT)
        .and_then(|mut stmt| {
            stmt.query_map(params![queue, micros(now)], |r| Ok((r.get(0)?, r.get(1)?)))?
                .collect()
        })
        .map_err(&err)?;
    if due.is_empty() {
        return Ok(0);
    }
    conn.prepare_cached(PROMOTE_DUE_UPDATE)
        .and_then(|mut stmt| stmt.execute(params![queue, micros(now)]))
        .map_err(&err)?;
    for (kind, state) in &due {
        if let Ok(from) = state.parse() {
            count_delta(queue, kind, from, -1);
            count_delta(queue, kind, JobState::Available, 1);
        }
    }
    Ok(due.len())
}

/// Leases up to `max` jobs. Runs on the writer, so concurrent claimers are serialized and
/// never share a job.
pub fn job_claim_many(conn: &Connection, p: JobClaimManyParams) -> Result<Vec<Job>, StoreError> {
    if p.queues.is_empty() {
        return Err(rota_core::ValidationError::new(
            "queues",
            "name at least one queue to fetch from",
        )
        .into());
    }
    let mut open_queues = Vec::with_capacity(p.queues.len());
    let mut leases: HashMap<String, Duration> = HashMap::new();
    for name in &p.queues {
        let queue = queue_required(conn, name)?;
        if !queue.paused {
            leases.insert(queue.name.clone(), queue.config.lease.unwrap_or(p.lease));
            open_queues.push(queue.name);
        }
    }
    touch_worker(conn, &p.worker, p.now)?;
    if open_queues.is_empty() || p.max == 0 {
        return Ok(Vec::new());
    }
    for queue in &open_queues {
        job_promote_due(conn, queue, p.now)?;
    }
    // Per queue, the first `max` in claim order; merged, the first `max` of all. Querying
    // each queue alone lets SQLite walk the `job_ready` index in order instead of sorting.
    let kinds = (!p.kinds.is_empty()).then(|| json(&p.kinds));
    let mut stmt = conn
        .prepare_cached(CLAIM_SELECT)
        .map_err(db_err("preparing claim"))?;
    let mut candidates = Vec::new();
    for queue in &open_queues {
        let rows = stmt
            .query_map(
                params![queue, micros(p.now), kinds, p.max as i64],
                job_from_row,
            )
            .and_then(|rows| rows.collect::<rusqlite::Result<Vec<Job>>>())
            .map_err(|e| classify(&format!("claiming from queue {queue:?}"), e))?;
        candidates.extend(rows);
    }
    if open_queues.len() > 1 {
        candidates.sort_by_key(|j| (j.priority, j.run_at, j.id));
        candidates.truncate(p.max);
    }
    let mut claimed = Vec::with_capacity(candidates.len());
    for job in candidates {
        let event = Event::Fetched {
            worker: p.worker.clone(),
            lease_for: leases.get(&job.queue).copied().unwrap_or(p.lease),
        };
        let next = transition(&job, event, p.now)?;
        save_job(conn, &job, &next)?;
        claimed.push(next);
    }
    Ok(claimed)
}

fn touch_worker(conn: &Connection, worker: &str, now: Timestamp) -> Result<(), StoreError> {
    conn.prepare_cached("UPDATE worker SET last_seen = ?2 WHERE id = ?1")
        .and_then(|mut stmt| stmt.execute(params![worker, micros(now)]))
        .map_err(|e| classify(&format!("refreshing worker {worker:?}"), e))?;
    Ok(())
}

/// Extends leases, one answer per lease.
pub fn lease_extend_many(
    conn: &Connection,
    p: LeaseExtendManyParams,
) -> Result<Vec<Result<Extended, StoreError>>, StoreError> {
    touch_worker(conn, &p.worker, p.now)?;
    let mut leases: HashMap<String, Duration> = HashMap::new();
    Ok(p.leases
        .iter()
        .map(|lease| {
            let before = job_get(conn, lease.job)?;
            if !leases.contains_key(&before.queue) {
                let queue_lease = queue_get(conn, &before.queue)?.and_then(|q| q.config.lease);
                leases.insert(before.queue.clone(), queue_lease.unwrap_or(p.lease));
            }
            let event = Event::Heartbeat {
                token: lease.token,
                lease_for: leases[&before.queue],
            };
            let job = transition(&before, event, p.now)?;
            save_job(conn, &before, &job)?;
            Ok(Extended {
                job: job.id,
                expires_at: job.lease.as_ref().map_or(p.now, |l| l.expires_at),
                cancel_requested: job.cancel_requested,
            })
        })
        .collect())
}

/// Rescues up to `limit` expired leases.
pub fn lease_rescue_expired(
    conn: &Connection,
    p: LeaseRescueParams,
) -> Result<RescueReport, StoreError> {
    let mut stmt = conn
        .prepare_cached(RESCUE_SELECT)
        .map_err(db_err("preparing rescue"))?;
    let expired = stmt
        .query_map(params![micros(p.now), p.limit as i64], job_from_row)
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<Job>>>())
        .map_err(db_err("finding expired leases"))?;
    let mut report = RescueReport::default();
    for job in expired {
        let next = transition(&job, Event::LeaseExpired, p.now)?;
        save_job(conn, &job, &next)?;
        report
            .outcomes
            .push((next.queue.clone(), next.kind.clone(), next.state));
        match next.state {
            JobState::Dead => report.dead.push(next.id),
            JobState::Cancelled => report.cancelled.push(next.id),
            _ => report.retried.push(next.id),
        }
    }
    Ok(report)
}

/// Deletes finished jobs past their retention.
pub fn job_prune(conn: &Connection, p: JobPruneParams) -> Result<PruneReport, StoreError> {
    let mut stmt = conn
        .prepare_cached(PRUNE_DELETE)
        .map_err(db_err("preparing prune"))?;
    let mut prune = |state: JobState, retention: Duration| -> Result<u64, StoreError> {
        let cutoff = rota_core::sub_duration(p.now, retention);
        let gone: Vec<(String, String)> = stmt
            .query_map(
                params![state.as_str(), micros(cutoff), p.limit as i64],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .and_then(|rows| rows.collect())
            .map_err(|e| classify(&format!("pruning {state} jobs"), e))?;
        for (queue, kind) in &gone {
            count_delta(queue, kind, state, -1);
        }
        Ok(gone.len() as u64)
    };
    Ok(PruneReport {
        completed: prune(JobState::Completed, p.completed_retention)?,
        cancelled: prune(JobState::Cancelled, p.cancelled_retention)?,
        dead: match p.dead_retention {
            Some(retention) => prune(JobState::Dead, retention)?,
            None => 0,
        },
    })
}

/// The ids an operator's selector means; a filter without states means `default_state`.
pub fn job_select_ids(
    conn: &Connection,
    selector: JobSelector,
    default_state: JobState,
) -> Result<Vec<JobId>, StoreError> {
    match selector {
        JobSelector::Ids(ids) => Ok(ids),
        JobSelector::Filter(mut filter) => {
            if filter.states.is_empty() {
                filter.states = vec![default_state];
            }
            let params = JobListParams {
                filter,
                after: None,
                limit: 0,
            };
            Ok(job_list(conn, &params, usize::MAX >> 1)?
                .into_iter()
                .map(|j| j.id)
                .collect())
        }
    }
}

/// Deletes the given jobs that are in one of `states`; returns how many went.
pub fn job_delete(
    conn: &Connection,
    ids: &[JobId],
    states: &[JobState],
) -> Result<u64, StoreError> {
    let states = json(&states.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let mut stmt = conn
        .prepare_cached(
            "DELETE FROM job WHERE id = ?1 AND state IN (SELECT value FROM json_each(?2)) \
             RETURNING queue, kind, state",
        )
        .map_err(db_err("preparing purge"))?;
    let mut deleted = 0;
    for id in ids {
        let gone: Option<(String, String, String)> = stmt
            .query_row(params![id.as_bytes(), states], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })
            .optional()
            .map_err(|e| classify(&format!("purging job {id}"), e))?;
        if let Some((queue, kind, state)) = gone {
            if let Ok(state) = state.parse() {
                count_delta(&queue, &kind, state, -1);
            }
            deleted += 1;
        }
    }
    Ok(deleted)
}

/// Jobs matching a filter, newest first, after the cursor.
pub fn job_list(
    conn: &Connection,
    p: &JobListParams,
    limit: usize,
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
               AND (?4 IS NULL OR EXISTS (SELECT 1 FROM json_each(job.tags) WHERE value = ?4)) \
               AND (?5 IS NULL OR created_at >= ?5) \
               AND (?6 IS NULL OR created_at < ?6) \
               AND (?7 IS NULL OR id < ?7) \
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
            ],
            job_from_row,
        )
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<Job>>>())
        .map_err(db_err("listing jobs"));
    rows
}

/// Declares or updates a queue.
pub fn queue_declare(conn: &Connection, p: QueueDeclareParams) -> Result<Queue, StoreError> {
    rota_core::validation::validate_queue_name(&p.name)?;
    p.config.retry.validate()?;
    conn.prepare_cached(
        "INSERT INTO queue (name, config, paused, updated_at) VALUES (?1, ?2, 0, ?3) \
         ON CONFLICT (name) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at",
    )
    .and_then(|mut stmt| stmt.execute(params![p.name, json(&p.config), micros(p.now)]))
    .map_err(|e| classify(&format!("declaring queue {:?}", p.name), e))?;
    queue_required(conn, &p.name)
}

/// Pauses or resumes a queue.
pub fn queue_set_paused(conn: &Connection, p: QueueSetPausedParams) -> Result<Queue, StoreError> {
    queue_required(conn, &p.name)?;
    conn.prepare_cached("UPDATE queue SET paused = ?2, updated_at = ?3 WHERE name = ?1")
        .and_then(|mut stmt| stmt.execute(params![p.name, p.paused, micros(p.now)]))
        .map_err(|e| classify(&format!("pausing queue {:?}", p.name), e))?;
    queue_required(conn, &p.name)
}

/// Job counts per queue, kind and state (kept by triggers; no scan of the job table).
pub fn job_counts(conn: &Connection) -> Result<Vec<JobCount>, StoreError> {
    conn.prepare_cached(
        "SELECT queue, kind, state, n FROM job_count WHERE n > 0 ORDER BY queue, kind, state",
    )
    .and_then(|mut stmt| {
        stmt.query_map([], |r| {
            let state: String = r.get(2)?;
            Ok((
                r.get::<_, String>(0)?,
                r.get::<_, String>(1)?,
                state,
                r.get::<_, i64>(3)?,
            ))
        })?
        .collect::<rusqlite::Result<Vec<_>>>()
    })
    .map_err(db_err("reading job counts"))
    .map(|rows| {
        rows.into_iter()
            .filter_map(|(queue, kind, state, n)| {
                Some(JobCount {
                    queue,
                    kind,
                    state: state.parse().ok()?,
                    count: n as u64,
                })
            })
            .collect()
    })
}

/// When the oldest ready job of `queue` became ready: the earliest run_at of its available
/// jobs (one index seek per priority) and of its due but not yet promoted ones.
fn oldest_ready(conn: &Connection, queue: &str, now: Timestamp) -> Result<Option<i64>, StoreError> {
    let err = db_err("finding the oldest ready job");
    let mut oldest: Option<i64> = None;
    let mut available = conn.prepare_cached(OLDEST_AVAILABLE).map_err(&err)?;
    for priority in 0..=9 {
        let at: Option<i64> = available
            .query_row(params![queue, priority], |r| r.get(0))
            .optional()
            .map_err(&err)?;
        oldest = oldest.into_iter().chain(at).min();
    }
    let waiting: Option<i64> = conn
        .prepare_cached(OLDEST_WAITING)
        .and_then(|mut stmt| stmt.query_row(params![queue, micros(now)], |r| r.get(0)))
        .map_err(&err)?;
    Ok(oldest.into_iter().chain(waiting).min())
}

/// Every queue with its counts.
pub fn queue_list(conn: &Connection, p: QueueListParams) -> Result<Vec<QueueStats>, StoreError> {
    let err = db_err("listing queues");
    let queues: Vec<Queue> = conn
        .prepare_cached("SELECT name, config, paused, updated_at FROM queue ORDER BY name")
        .and_then(|mut stmt| stmt.query_map([], queue_from_row)?.collect())
        .map_err(&err)?;
    let mut counts: HashMap<String, BTreeMap<JobState, u64>> = HashMap::new();
    for c in job_counts(conn)? {
        *counts
            .entry(c.queue)
            .or_default()
            .entry(c.state)
            .or_default() += c.count;
    }
    let mut out = Vec::with_capacity(queues.len());
    for queue in queues {
        let oldest = oldest_ready(conn, &queue.name, p.now)?;
        out.push(QueueStats {
            counts: counts.remove(&queue.name).unwrap_or_default(),
            oldest_ready_age: oldest
                .map(|run_at| Duration::from_micros((micros(p.now) - run_at).max(0) as u64)),
            queue,
        });
    }
    Ok(out)
}

/// Records or refreshes a worker.
pub fn worker_register(conn: &Connection, p: WorkerRegisterParams) -> Result<Worker, StoreError> {
    if p.worker.id.is_empty() {
        return Err(rota_core::ValidationError::new("worker.id", "must not be empty").into());
    }
    conn.prepare_cached(
        "INSERT INTO worker (id, info, started_at, last_seen) VALUES (?1, ?2, ?3, ?3) \
         ON CONFLICT (id) DO UPDATE SET info = excluded.info, last_seen = excluded.last_seen",
    )
    .and_then(|mut stmt| stmt.execute(params![p.worker.id, json(&p.worker), micros(p.now)]))
    .map_err(|e| classify(&format!("registering worker {:?}", p.worker.id), e))?;
    let workers = worker_list(conn)?;
    workers
        .into_iter()
        .find(|w| w.info.id == p.worker.id)
        .ok_or_else(|| StoreError::backend("registering worker", "row vanished"))
}

/// Every known worker, most recently seen first.
pub fn worker_list(conn: &Connection) -> Result<Vec<Worker>, StoreError> {
    conn.prepare_cached(
        "SELECT info, started_at, last_seen FROM worker ORDER BY last_seen DESC, id",
    )
    .and_then(|mut stmt| {
        stmt.query_map([], |row| {
            Ok(Worker {
                info: from_json(0, &row.get::<_, String>(0)?)?,
                started_at: from_micros(row.get(1)?)?,
                last_seen: from_micros(row.get(2)?)?,
            })
        })?
        .collect()
    })
    .map_err(db_err("listing workers"))
}

fn schedule_from_row(row: &Row<'_>) -> rusqlite::Result<ScheduleRecord> {
    Ok(ScheduleRecord {
        schedule: from_json(0, text(row, 0)?)?,
        last_slot: from_micros(row.get(1)?)?,
        fired: row.get::<_, i64>(2)? as u64,
        missed: row.get::<_, i64>(3)? as u64,
        recovered: row.get::<_, i64>(4)? as u64,
        last_job: row.get::<_, Option<[u8; 16]>>(5)?.map(JobId::from_bytes),
        updated_at: from_micros(row.get(6)?)?,
    })
}

const SCHEDULE_COLUMNS: &str =
    "definition, last_slot, fired, missed, recovered, last_job, updated_at";

fn schedule_get(conn: &Connection, name: &str) -> Result<Option<ScheduleRecord>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedule WHERE name = ?1"
    ))
    .and_then(|mut stmt| stmt.query_row([name], schedule_from_row).optional())
    .map_err(|e| classify(&format!("reading schedule {name:?}"), e))
}

/// Creates or updates a schedule.
pub fn schedule_upsert(
    conn: &Connection,
    p: ScheduleUpsertParams,
) -> Result<ScheduleRecord, StoreError> {
    let name = p.schedule.name.clone();
    let existing = schedule_get(conn, &name)?;
    let restart = match &existing {
        None => true,
        Some(old) => {
            old.schedule.expression != p.schedule.expression
                || old.schedule.timezone != p.schedule.timezone
                || (!old.schedule.enabled && p.schedule.enabled)
        }
    };
    let last_slot = match (&existing, restart) {
        (Some(old), false) => old.last_slot,
        _ => p.now,
    };
    conn.prepare_cached(
        "INSERT INTO schedule (name, definition, last_slot, fired, missed, recovered, last_job, created_at, updated_at) \
         VALUES (?1, ?2, ?3, 0, 0, 0, NULL, ?4, ?4) \
         ON CONFLICT (name) DO UPDATE SET definition = excluded.definition, last_slot = excluded.last_slot, \
         updated_at = excluded.updated_at",
    )
    .and_then(|mut stmt| stmt.execute(params![name, json(&p.schedule), micros(last_slot), micros(p.now)]))
    .map_err(|e| classify(&format!("saving schedule {name:?}"), e))?;
    schedule_get(conn, &name)?.ok_or(StoreError::ScheduleNotFound(name))
}

/// Removes a schedule.
pub fn schedule_delete(conn: &Connection, name: &str) -> Result<(), StoreError> {
    let n = conn
        .prepare_cached("DELETE FROM schedule WHERE name = ?1")
        .and_then(|mut stmt| stmt.execute([name]))
        .map_err(|e| classify(&format!("deleting schedule {name:?}"), e))?;
    if n == 0 {
        return Err(StoreError::ScheduleNotFound(name.to_owned()));
    }
    Ok(())
}

/// Every schedule, by name.
pub fn schedule_list(conn: &Connection) -> Result<Vec<ScheduleRecord>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedule ORDER BY name"
    ))
    .and_then(|mut stmt| stmt.query_map([], schedule_from_row)?.collect())
    .map_err(db_err("listing schedules"))
}

/// Fires a schedule's planned slots, unless another scheduler got there first.
pub fn schedule_fire(
    conn: &Connection,
    p: ScheduleFireParams,
) -> Result<ScheduleFired, StoreError> {
    let Some(current) = schedule_get(conn, &p.name)? else {
        return Err(StoreError::ScheduleNotFound(p.name));
    };
    if current.last_slot != p.expected_last {
        return Ok(ScheduleFired {
            lost_race: true,
            jobs: vec![],
        });
    }
    let on_time = p.jobs.len() as u64 - p.recovered;
    let jobs = if p.jobs.is_empty() {
        vec![]
    } else {
        job_insert_many(
            conn,
            JobInsertManyParams {
                jobs: p.jobs,
                defaults: p.defaults,
                now: p.now,
            },
        )?
    };
    let last_job = jobs.last().map(|i| i.job.id.as_bytes().to_vec());
    conn.prepare_cached(
        "UPDATE schedule SET last_slot = ?2, fired = fired + ?3, missed = missed + ?4, \
         recovered = recovered + ?5, last_job = coalesce(?6, last_job), updated_at = ?7 WHERE name = ?1",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            p.name,
            micros(p.last_slot),
            on_time as i64,
            (p.recovered + p.skipped) as i64,
            p.recovered as i64,
            last_job,
            micros(p.now),
        ])
    })
    .map_err(|e| classify(&format!("advancing schedule {:?}", p.name), e))?;
    Ok(ScheduleFired {
        lost_race: false,
        jobs,
    })
}

/// The earliest run_at of a waiting job on `queues` (one index seek per queue).
pub fn job_next_due(conn: &Connection, queues: &[String]) -> Result<Option<Timestamp>, StoreError> {
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
pub fn job_list_running(conn: &Connection, limit: usize) -> Result<Vec<Job>, StoreError> {
    conn.prepare_cached(RUNNING_SELECT)
        .and_then(|mut stmt| stmt.query_map([limit as i64], job_from_row)?.collect())
        .map_err(db_err("listing running jobs"))
}

/// Dead jobs since `since`, grouped by their last error's fingerprint (the `job_finished`
/// index narrows the scan to dead jobs in the window).
pub fn dead_groups(
    conn: &Connection,
    since: Option<Timestamp>,
) -> Result<Vec<ErrorGroup>, StoreError> {
    let mut stmt = conn
        .prepare_cached(DEAD_GROUPS_SELECT)
        .map_err(db_err("grouping dead jobs"))?;
    let rows = stmt
        .query_map([since.map_or(i64::MIN, micros)], |r| {
            Ok((
                r.get::<_, Option<String>>(0)?,
                r.get::<_, Option<String>>(1)?,
                r.get::<_, String>(2)?,
                r.get::<_, i64>(3)?,
            ))
        })
        .and_then(|rows| rows.collect::<rusqlite::Result<Vec<_>>>())
        .map_err(db_err("grouping dead jobs"))?;
    let mut groups: HashMap<String, ErrorGroup> = HashMap::new();
    for (fingerprint, message, kind, finished) in rows {
        let message = message.unwrap_or_default();
        let fingerprint = fingerprint
            .filter(|f| !f.is_empty())
            .unwrap_or_else(|| rota_core::fingerprint::fingerprint(&message, None));
        let finished = from_micros(finished).map_err(db_err("grouping dead jobs"))?;
        let group = groups
            .entry(fingerprint.clone())
            .or_insert_with(|| ErrorGroup {
                fingerprint,
                message: message.clone(),
                count: 0,
                kinds: vec![],
                latest: finished,
            });
        group.count += 1;
        group.latest = group.latest.max(finished);
        if !group.kinds.contains(&kind) {
            group.kinds.push(kind);
        }
    }
    let mut groups: Vec<ErrorGroup> = groups.into_values().collect();
    groups.sort_by(|a, b| b.count.cmp(&a.count).then(b.latest.cmp(&a.latest)));
    Ok(groups)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every hot statement finds its rows through an index: a plain `SCAN job` (a full scan
    /// of the job table) would make it slower as jobs accumulate. Partial indexes are used only
    /// when the statement repeats the index's WHERE condition exactly, which is easy to break.
    #[test]
    fn hot_statements_use_their_indexes() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::migrate::migrate(&mut conn, Timestamp::UNIX_EPOCH).unwrap();
        let statements = [
            ("promote select", PROMOTE_DUE_SELECT),
            ("promote update", PROMOTE_DUE_UPDATE),
            ("claim", CLAIM_SELECT),
            ("rescue", RESCUE_SELECT),
            ("oldest available", OLDEST_AVAILABLE),
            ("oldest waiting", OLDEST_WAITING),
            ("next due", NEXT_DUE),
            ("running", RUNNING_SELECT),
            ("dead groups", DEAD_GROUPS_SELECT),
            ("prune", PRUNE_DELETE),
        ];
        for (name, sql) in statements {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let plan: Vec<String> = stmt
                .query_map(
                    rusqlite::params_from_iter(std::iter::repeat_n(
                        rusqlite::types::Value::Null,
                        stmt.parameter_count(),
                    )),
                    |r| r.get::<_, String>(3),
                )
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            // `SCAN job USING INDEX <partial index>` walks only that index's rows: fine.
            assert!(
                plan.iter().all(|step| step != "SCAN job"),
                "{name} scans the job table: {plan:?}"
            );
        }
    }
}
