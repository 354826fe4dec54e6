//! Queue statements.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use jiff::Timestamp;
use rota_core::JobState;
use rota_store::*;
use rusqlite::{params, Connection, OptionalExtension};

use super::count::job_counts;
use super::job::{OLDEST_AVAILABLE, OLDEST_WAITING};
use super::row::{queue_from_row, QUEUE_COLUMNS};
use super::{classify, db_err, from_micros, json, micros};

pub(crate) fn queue_get(conn: &Connection, name: &str) -> Result<Option<Queue>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {QUEUE_COLUMNS} FROM queue WHERE name = ?1"
    ))
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

/// The queue, or the "not declared" error naming the nearest declared one.
pub(crate) fn queue_required(conn: &Connection, name: &str) -> Result<Queue, StoreError> {
    match queue_get(conn, name)? {
        Some(queue) => Ok(queue),
        None => Err(queue_not_declared(name, &queue_names(conn)?)),
    }
}

/// Declares or updates a queue.
pub(crate) fn queue_declare(conn: &Connection, p: QueueDeclareParams) -> Result<Queue, StoreError> {
    rota_core::validation::validate_queue_name(&p.name)?;
    let mut p = p;
    if p.merge {
        if let Some(existing) = queue_get(conn, &p.name)? {
            p.config = queue_config_merged(&existing.config, p.config);
        }
    }
    check_queue_config(&p.config)?;
    conn.prepare_cached(
        "INSERT INTO queue (name, config, paused, updated_at) VALUES (?1, ?2, 0, ?3) \
         ON CONFLICT (name) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at",
    )
    .and_then(|mut stmt| stmt.execute(params![p.name, json(&p.config), micros(p.now)]))
    .map_err(|e| classify(&format!("declaring queue {:?}", p.name), e))?;
    queue_required(conn, &p.name)
}

/// Pauses or resumes a queue.
pub(crate) fn queue_set_paused(
    conn: &Connection,
    p: QueueSetPausedParams,
) -> Result<Queue, StoreError> {
    queue_required(conn, &p.name)?;
    conn.prepare_cached("UPDATE queue SET paused = ?2, updated_at = ?3 WHERE name = ?1")
        .and_then(|mut stmt| stmt.execute(params![p.name, p.paused, micros(p.now)]))
        .map_err(|e| classify(&format!("pausing queue {:?}", p.name), e))?;
    queue_required(conn, &p.name)
}

/// A queue's ready and scheduled jobs (from the job counts) and its oldest ready job.
pub(crate) fn queue_load(
    conn: &Connection,
    queue: &str,
    now: Timestamp,
) -> Result<QueueLoad, StoreError> {
    let depth = conn
        .prepare_cached(
            "SELECT coalesce(sum(n), 0) FROM job_count \
             WHERE queue = ?1 AND state IN ('available', 'scheduled', 'retryable')",
        )
        .and_then(|mut stmt| stmt.query_row([queue], |r| r.get::<_, i64>(0)))
        .map_err(|e| classify(&format!("counting the jobs of {queue:?}"), e))?;
    Ok(QueueLoad {
        depth: depth.max(0) as u64,
        oldest_ready: oldest_ready(conn, queue, now)?
            .map(from_micros)
            .transpose()
            .map_err(db_err("reading the oldest ready job"))?,
    })
}

/// When the oldest ready job of `queue` became ready: the earliest run_at of its available
/// jobs (one index seek per priority) and of its due but not yet promoted ones.
fn oldest_ready(conn: &Connection, queue: &str, now: Timestamp) -> Result<Option<i64>, StoreError> {
    let err = db_err("finding the oldest ready job");
    let oldest: Option<i64> = conn
        .prepare_cached(OLDEST_AVAILABLE)
        .and_then(|mut stmt| stmt.query_row([queue], |r| r.get(0)))
        .map_err(&err)?;
    let waiting: Option<i64> = conn
        .prepare_cached(OLDEST_WAITING)
        .and_then(|mut stmt| stmt.query_row(params![queue, micros(now)], |r| r.get(0)))
        .map_err(&err)?;
    Ok(oldest.into_iter().chain(waiting).min())
}

/// Every queue with its counts.
pub(crate) fn queue_list(
    conn: &Connection,
    p: QueueListParams,
) -> Result<Vec<QueueStats>, StoreError> {
    let err = db_err("listing queues");
    let queues: Vec<Queue> = conn
        .prepare_cached(&format!("SELECT {QUEUE_COLUMNS} FROM queue ORDER BY name"))
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
