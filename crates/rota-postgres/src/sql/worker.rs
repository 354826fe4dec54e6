//! Worker statements.

use jiff::Timestamp;
use rota_store::*;

use super::row::worker_from_row;
use super::{json, micros, Conn, Tx};

/// Refreshes a worker's last-seen time (on fetch and heartbeat), with the transaction's
/// next statement.
pub(crate) async fn touch_worker(
    tx: &Tx<'_>,
    worker: &str,
    now: Timestamp,
) -> Result<(), StoreError> {
    tx.defer(
        format!("refreshing worker {worker:?}"),
        "UPDATE rota.worker SET last_seen = $2 WHERE id = $1 AND last_seen <= $3",
        vec![
            Box::new(worker.to_owned()),
            Box::new(micros(now)),
            Box::new(micros(rota_core::sub_duration(now, LAST_SEEN_RESOLUTION))),
        ],
    )
    .await
}

/// Records or refreshes a worker.
pub(crate) async fn worker_register(
    db: &impl Conn,
    p: WorkerRegisterParams,
) -> Result<Worker, StoreError> {
    if p.worker.id.is_empty() {
        return Err(rota_core::ValidationError::new("worker.id", "must not be empty").into());
    }
    let row = db
        .query_opt(
            &format!("registering worker {:?}", p.worker.id),
            "INSERT INTO rota.worker (id, info, started_at, last_seen) VALUES ($1, $2::text::jsonb, $3, $3) \
             ON CONFLICT (id) DO UPDATE SET info = excluded.info, last_seen = excluded.last_seen \
             RETURNING info, started_at, last_seen",
            &[&p.worker.id, &json(&p.worker), &micros(p.now)],
        )
        .await?
        .ok_or_else(|| StoreError::backend("registering worker", "row vanished"))?;
    worker_from_row(&row)
}

/// Every known worker, most recently seen first.
pub(crate) async fn worker_list(db: &impl Conn) -> Result<Vec<Worker>, StoreError> {
    let rows = db
        .query(
            "listing workers",
            "SELECT info, started_at, last_seen FROM rota.worker ORDER BY last_seen DESC, id",
            &[],
        )
        .await?;
    rows.iter().map(worker_from_row).collect()
}
