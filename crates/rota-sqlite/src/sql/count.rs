//! Reading the job counts per queue, kind and state. They are kept by the store itself, per
//! write request (see [`super::Tx::finish`]), in the `job_count` table, so reading them
//! never scans the job table.

use rota_store::{JobCount, StoreError};
use rusqlite::Connection;

use super::db_err;
use super::row::state_from_text;

/// Job counts per queue, kind and state.
pub(crate) fn job_counts(conn: &Connection) -> Result<Vec<JobCount>, StoreError> {
    conn.prepare_cached(
        "SELECT queue, kind, state, n FROM job_count WHERE n > 0 ORDER BY queue, kind, state",
    )
    .and_then(|mut stmt| {
        stmt.query_map([], |r| {
            Ok(JobCount {
                queue: r.get(0)?,
                kind: r.get(1)?,
                state: state_from_text(2, &r.get::<_, String>(2)?)?,
                count: r.get::<_, i64>(3)? as u64,
            })
        })?
        .collect::<rusqlite::Result<Vec<_>>>()
    })
    .map_err(db_err("reading job counts"))
}
