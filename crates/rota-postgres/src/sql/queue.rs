//! Queue statements.

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use rota_core::JobState;
use rota_store::*;

use super::count::job_counts;
use super::job::job_oldest_ready;
use super::row::{queue_from_row, QUEUE_COLUMNS};
use super::{json, micros, texts, Db};

async fn queue_get(db: &Db<'_>, name: &str) -> Result<Option<Queue>, StoreError> {
    db.query_opt(
        &format!("reading queue {name:?}"),
        &format!("SELECT {QUEUE_COLUMNS} FROM rota.queue WHERE name = $1"),
        &[&name],
    )
    .await?
    .map(|r| queue_from_row(&r))
    .transpose()
}

/// The declared queues among `names`, by name.
pub(crate) async fn queues_by_name(
    db: &Db<'_>,
    names: &[String],
) -> Result<HashMap<String, Queue>, StoreError> {
    let rows = db
        .query(
            "reading queues",
            &format!("SELECT {QUEUE_COLUMNS} FROM rota.queue WHERE name = ANY($1)"),
            &[&texts(names)],
        )
        .await?;
    rows.iter()
        .map(|r| queue_from_row(r).map(|q| (q.name.clone(), q)))
        .collect()
}

async fn queue_names(db: &Db<'_>) -> Result<Vec<String>, StoreError> {
    let rows = db
        .query(
            "listing queue names",
            "SELECT name FROM rota.queue ORDER BY name",
            &[],
        )
        .await?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

/// Every queue of `names`, or the "not declared" error for the first missing one, naming
/// the nearest declared queue.
pub(crate) async fn queue_required_many(
    db: &Db<'_>,
    names: &[String],
) -> Result<HashMap<String, Queue>, StoreError> {
    let queues = queues_by_name(db, names).await?;
    if let Some(missing) = names.iter().find(|n| !queues.contains_key(*n)) {
        return Err(queue_not_declared(missing, &queue_names(db).await?));
    }
    Ok(queues)
}

async fn queue_required(db: &Db<'_>, name: &str) -> Result<Queue, StoreError> {
    let mut queues = queue_required_many(db, &[name.to_owned()]).await?;
    Ok(queues.remove(name).expect("required queue is present"))
}

/// Declares or updates a queue.
pub(crate) async fn queue_declare(db: &Db<'_>, p: QueueDeclareParams) -> Result<Queue, StoreError> {
    rota_core::validation::validate_queue_name(&p.name)?;
    let mut p = p;
    if p.merge {
        if let Some(existing) = queue_get(db, &p.name).await? {
            p.config = queue_config_merged(&existing.config, p.config);
        }
    }
    check_queue_config(&p.config)?;
    db.execute(
        &format!("declaring queue {:?}", p.name),
        "INSERT INTO rota.queue (name, config, paused, updated_at) VALUES ($1, $2::text::jsonb, false, $3) \
         ON CONFLICT (name) DO UPDATE SET config = excluded.config, updated_at = excluded.updated_at",
        &[&p.name, &json(&p.config), &micros(p.now)],
    )
    .await?;
    queue_required(db, &p.name).await
}

/// Pauses or resumes a queue.
pub(crate) async fn queue_set_paused(
    db: &Db<'_>,
    p: QueueSetPausedParams,
) -> Result<Queue, StoreError> {
    queue_required(db, &p.name).await?;
    db.execute(
        &format!("pausing queue {:?}", p.name),
        "UPDATE rota.queue SET paused = $2, updated_at = $3 WHERE name = $1",
        &[&p.name, &p.paused, &micros(p.now)],
    )
    .await?;
    queue_required(db, &p.name).await
}

/// Every queue with its counts.
pub(crate) async fn queue_list(
    db: &Db<'_>,
    p: QueueListParams,
) -> Result<Vec<QueueStats>, StoreError> {
    let rows = db
        .query(
            "listing queues",
            &format!("SELECT {QUEUE_COLUMNS} FROM rota.queue ORDER BY name"),
            &[],
        )
        .await?;
    let queues = rows
        .iter()
        .map(queue_from_row)
        .collect::<Result<Vec<_>, _>>()?;
    let mut counts: HashMap<String, BTreeMap<JobState, u64>> = HashMap::new();
    for c in job_counts(db).await? {
        *counts
            .entry(c.queue)
            .or_default()
            .entry(c.state)
            .or_default() += c.count;
    }
    let mut out = Vec::with_capacity(queues.len());
    for queue in queues {
        let oldest = job_oldest_ready(db, &queue.name, p.now).await?;
        out.push(QueueStats {
            counts: counts.remove(&queue.name).unwrap_or_default(),
            oldest_ready_age: oldest.map(|run_at| {
                Duration::from_micros((micros(p.now) - micros(run_at)).max(0) as u64)
            }),
            queue,
        });
    }
    Ok(out)
}
