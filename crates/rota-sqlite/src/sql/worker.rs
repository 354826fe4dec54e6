//! Worker statements.

use jiff::Timestamp;
use rota_store::*;
use rusqlite::{params, Connection};

use super::row::from_json;
use super::{classify, db_err, from_micros, json, micros};

/// Refreshes a worker's last-seen time (on fetch and heartbeat).
pub(crate) fn touch_worker(
    conn: &Connection,
    worker: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    let stale = rota_core::sub_duration(now, LAST_SEEN_RESOLUTION);
    conn.prepare_cached("UPDATE worker SET last_seen = ?2 WHERE id = ?1 AND last_seen <= ?3")
        .and_then(|mut stmt| stmt.execute(params![worker, micros(now), micros(stale)]))
        .map_err(|e| classify(&format!("refreshing worker {worker:?}"), e))?;
    Ok(())
}

/// Records or refreshes a worker.
pub(crate) fn worker_register(
    conn: &Connection,
    p: WorkerRegisterParams,
) -> Result<Worker, StoreError> {
    if p.worker.id.is_empty() {
        return Err(rota_core::ValidationError::new("worker.id", "must not be empty").into());
    }
    conn.prepare_cached(
        "INSERT INTO worker (id, info, started_at, last_seen) VALUES (?1, ?2, ?3, ?3) \
         ON CONFLICT (id) DO UPDATE SET info = excluded.info, last_seen = excluded.last_seen",
    )
    .and_then(|mut stmt| stmt.execute(params![p.worker.id, json(&p.worker), micros(p.now)]))
    .map_err(|e| classify(&format!("registering worker {:?}", p.worker.id), e))?;
    worker_list(conn)?
        .into_iter()
        .find(|w| w.info.id == p.worker.id)
        .ok_or_else(|| StoreError::backend("registering worker", "row vanished"))
}

/// Every known worker, most recently seen first.
pub(crate) fn worker_list(conn: &Connection) -> Result<Vec<Worker>, StoreError> {
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
