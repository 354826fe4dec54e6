//! The physical bound of the SQLite backend on this machine: the job lifecycle (insert,
//! claim, complete, each its own transaction) in raw SQL on the real schema, with none of
//! Rota's code. `rota bench` prints its drain figure as a share of this.

use std::path::Path;
use std::time::Instant;

use rota_store::StoreError;
use rusqlite::params;

use crate::sql::db_err;
use crate::Durability;

/// Jobs per second through raw-SQL lifecycles of `batch` jobs, `rounds` times, on a fresh
/// database at `path` with the given durability.
pub fn raw_lifecycle_rate(
    path: &Path,
    durability: Durability,
    batch: usize,
    rounds: usize,
) -> Result<f64, StoreError> {
    let mut conn = crate::open_writer_connection(path, durability)?;
    crate::migrate::migrate_connection(&mut conn, jiff::Timestamp::now())?;
    let err = db_err("measuring the raw lifecycle");
    let now = jiff::Timestamp::now().as_microsecond();
    let started = Instant::now();
    let mut next_id: u128 = 1;
    for _ in 0..rounds {
        let ids: Vec<[u8; 16]> = (0..batch)
            .map(|_| {
                next_id += 1;
                next_id.to_be_bytes()
            })
            .collect();
        let tx = conn.transaction().map_err(&err)?;
        {
            let mut insert = tx
                .prepare_cached(
                    "INSERT INTO job (id, queue, kind, args, priority, state, attempt, max_attempts, \
                     backoff, tags, errors, lease_token, cancel_requested, run_at, created_at) \
                     VALUES (?1, 'default', 'k', '{}', 5, 'available', 0, 20, '{}', '[]', '[]', 0, 0, ?2, ?2)",
                )
                .map_err(&err)?;
            for id in &ids {
                insert.execute(params![id, now]).map_err(&err)?;
            }
        }
        tx.commit().map_err(&err)?;
        let tx = conn.transaction().map_err(&err)?;
        {
            let mut claim = tx
                .prepare_cached(
                    "UPDATE job SET state = 'running', attempt = 1, lease_worker = 'w', \
                     lease_token = 1, lease_expires_at = ?2, attempted_at = ?2 WHERE id = ?1",
                )
                .map_err(&err)?;
            for id in &ids {
                claim.execute(params![id, now]).map_err(&err)?;
            }
        }
        tx.commit().map_err(&err)?;
        let tx = conn.transaction().map_err(&err)?;
        {
            let mut complete = tx
                .prepare_cached(
                    "UPDATE job SET state = 'completed', lease_worker = NULL, \
                     lease_expires_at = NULL, finished_at = ?2 WHERE id = ?1",
                )
                .map_err(&err)?;
            for id in &ids {
                complete.execute(params![id, now]).map_err(&err)?;
            }
        }
        tx.commit().map_err(&err)?;
    }
    Ok((batch * rounds) as f64 / started.elapsed().as_secs_f64())
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::*;

    #[test]
    fn the_raw_lifecycle_runs_on_the_real_schema() {
        let dir = tempfile::tempdir().unwrap();
        let rate =
            raw_lifecycle_rate(&dir.path().join("bound.db"), Durability::Normal, 10, 3).unwrap();
        assert!(rate > 0.0);
        let conn = Connection::open(dir.path().join("bound.db")).unwrap();
        let done: i64 = conn
            .query_row(
                "SELECT count(*) FROM job WHERE state = 'completed'",
                [],
                |r| r.get(0),
            )
            .unwrap();
        assert_eq!(done, 30);
    }
}
