//! Job counts per queue, kind and state. Writes append deltas (see [`super::Tx::finish`]);
//! reads add the deltas not yet folded to the folded counts; [`job_counts_fold`] moves the
//! deltas into the counts. Reading never scans the job table.

use rota_store::{JobCount, StoreError};

use super::row::state_from_text;
use super::Conn;

/// Job counts per queue, kind and state.
pub(crate) async fn job_counts(db: &impl Conn) -> Result<Vec<JobCount>, StoreError> {
    let rows = db
        .query(
            "reading job counts",
            "SELECT queue, kind, state, sum(n)::int8 FROM ( \
               SELECT queue, kind, state, n FROM rota.job_count \
               UNION ALL SELECT queue, kind, state, n FROM rota.job_count_delta) c \
             GROUP BY queue, kind, state HAVING sum(n) > 0 ORDER BY queue, kind, state",
            &[],
        )
        .await?;
    rows.iter()
        .map(|r| {
            Ok(JobCount {
                queue: r.get(0),
                kind: r.get(1),
                state: state_from_text(r.get(2))?,
                count: r.get::<_, i64>(3) as u64,
            })
        })
        .collect()
}

/// Moves the deltas into the counts, atomically; returns how many delta rows it folded.
/// Several nodes may fold at once: each delta row is deleted, and so added, once.
pub(crate) async fn job_counts_fold(db: &impl Conn) -> Result<u64, StoreError> {
    let row = db
        .query_opt(
            "folding job counts",
            "WITH d AS (DELETE FROM rota.job_count_delta RETURNING queue, kind, state, n), \
             s AS (SELECT queue, kind, state, sum(n)::int8 AS n FROM d \
                   GROUP BY queue, kind, state ORDER BY queue, kind, state), \
             u AS (INSERT INTO rota.job_count (queue, kind, state, n) SELECT * FROM s \
                   ON CONFLICT (queue, kind, state) DO UPDATE SET n = rota.job_count.n + excluded.n) \
             SELECT count(*)::int8 FROM d",
            &[],
        )
        .await?;
    Ok(row.map_or(0, |r| r.get::<_, i64>(0)) as u64)
}
