//! Queue statements.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rota_core::JobState;
use rota_store::*;

use super::count::job_counts;
use super::job::job_oldest_ready;
use super::row::{queue_from_row, QUEUE_COLUMNS};
use super::{json, micros, texts, Conn, Tx};

/// How long a node trusts what it read of a queue before reading it again. A pause or a
/// setting changed on another node reaches this one's enqueues and claims within this time
/// (at once on the node that made the change).
pub(crate) const QUEUE_CACHE_TTL: Duration = Duration::from_secs(1);

/// Queues as this node last read them, so that enqueues and claims do not read the queue
/// table on every request.
#[derive(Debug, Default)]
pub(crate) struct QueueCache {
    entries: Mutex<HashMap<String, (Queue, Instant)>>,
}

impl QueueCache {
    /// Every queue of `names`, if all were read within the TTL.
    fn get(&self, names: &[String]) -> Option<HashMap<String, Queue>> {
        let entries = self.entries.lock().expect("queue cache lock");
        names
            .iter()
            .map(|n| {
                let (queue, at) = entries.get(n)?;
                (at.elapsed() < QUEUE_CACHE_TTL).then(|| (n.clone(), queue.clone()))
            })
            .collect()
    }

    fn put(&self, queues: &HashMap<String, Queue>) {
        let now = Instant::now();
        let mut entries = self.entries.lock().expect("queue cache lock");
        for (name, queue) in queues {
            entries.insert(name.clone(), (queue.clone(), now));
        }
    }

    /// Forgets a queue this node just changed.
    pub(crate) fn forget(&self, name: &str) {
        self.entries.lock().expect("queue cache lock").remove(name);
    }
}

/// [`queue_required_many`] through the transaction's queue cache.
pub(crate) async fn queue_required_cached(
    tx: &Tx<'_>,
    names: &[String],
) -> Result<HashMap<String, Queue>, StoreError> {
    let Some(cache) = tx.queue_cache() else {
        return queue_required_many(tx, names).await;
    };
    if let Some(queues) = cache.get(names) {
        return Ok(queues);
    }
    let queues = queue_required_many(tx, names).await?;
    cache.put(&queues);
    Ok(queues)
}

async fn queue_get(db: &impl Conn, name: &str) -> Result<Option<Queue>, StoreError> {
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
    db: &impl Conn,
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

async fn queue_names(db: &impl Conn) -> Result<Vec<String>, StoreError> {
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
    db: &impl Conn,
    names: &[String],
) -> Result<HashMap<String, Queue>, StoreError> {
    let queues = queues_by_name(db, names).await?;
    if let Some(missing) = names.iter().find(|n| !queues.contains_key(*n)) {
        return Err(queue_not_declared(missing, &queue_names(db).await?));
    }
    Ok(queues)
}

async fn queue_required(db: &impl Conn, name: &str) -> Result<Queue, StoreError> {
    let mut queues = queue_required_many(db, &[name.to_owned()]).await?;
    Ok(queues.remove(name).expect("required queue is present"))
}

/// Declares or updates a queue.
pub(crate) async fn queue_declare(
    db: &impl Conn,
    p: QueueDeclareParams,
) -> Result<Queue, StoreError> {
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
    db: &impl Conn,
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
    db: &impl Conn,
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
