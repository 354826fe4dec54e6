//! Job statements: enqueue, claim, lease, rescue, prune, purge, reads.
//!
//! Changes to existing jobs follow one pattern: lock the rows (`FOR UPDATE`, in id order so
//! that concurrent batches never deadlock), apply `rota_core::transition` to each, and write
//! every changed row back in one statement ([`save_jobs`]).

use std::collections::HashMap;
use std::time::Duration;

use jiff::Timestamp;
use rota_core::{transition, Event, Job, JobId, JobState};
use rota_store::*;

use super::queue::{queue_required_cached, queue_required_many, queues_by_name};
use super::row::{job_columns, job_from_row, jobs_from_rows};
use super::worker::touch_worker;
use super::write::{insert_jobs, record_promoted, save_jobs, Saved, PROMOTE_DUE};
use super::{from_micros, micros, texts, Conn, OwnedParam, Tx};

pub(crate) use super::write::{job_delete, job_prune_state};

/// Whether key `$k` is skipped by a claim's key scan: a key at the queue's `key_concurrency`
/// `$6` (counted on `job_running_key`), or whose `key_rate` bucket admits nothing before `$5`.
macro_rules! key_blocked {
    ($k:literal) => {
        concat!(
            "(", $k, " <> '' AND (($6::int8 IS NOT NULL AND \
             (SELECT count(*) FROM rota.job WHERE state = 'running' AND concurrency_key <> '' \
              AND queue = $1 AND concurrency_key = ", $k, ") >= $6::int8) OR ($5::int8 IS NOT NULL \
             AND EXISTS (SELECT 1 FROM rota.rate_bucket b WHERE b.queue = $1 AND b.scope = 'key' \
              AND b.name = ", $k, " AND b.tat > $5::int8))))"
        )
    };
}

/// The claim of one queue `$1`, limits checked in the statement itself, so that a claim of a
/// limited queue holds the queue's lock for one round trip and its commit: `allow` is how many
/// jobs it may take (`$4`, within the queue's `concurrency` `$11`); the key scan finds up to
/// that many keys with ready jobs in key order after the round-robin cursor `$2` (when `$3`),
/// wrapping around to it, skipping blocked keys (one index seek per key); each key then gives
/// its first due jobs in claim order (of kinds `$8` when given), as many as its share times
/// its weight (`$9`, `$10`) within its room under `$6`, skipping jobs another claimer holds.
/// `$7` is now. Each row ends with the key's place in the round ([`CLAIM_ORD_COLUMN`]) and its
/// running jobs ([`CLAIM_RUNNING_COLUMN`]).
pub(crate) const CLAIM_SELECT: &str = concat!(
    "WITH RECURSIVE \
     allow(n) AS ( \
       SELECT CASE WHEN $11::int8 IS NULL THEN $4::int8 ELSE greatest(0::int8, least($4::int8, \
         $11::int8 - (SELECT count(*) FROM rota.job WHERE state = 'running' AND queue = $1))) END), \
     fwd(k, n) AS ( \
       SELECT (SELECT concurrency_key FROM rota.job WHERE state = 'available' AND queue = $1 \
                 AND concurrency_key >= $2 AND (concurrency_key > $2 OR NOT $3) \
               ORDER BY concurrency_key LIMIT 1), 0::int8 \
       UNION ALL \
       SELECT (SELECT concurrency_key FROM rota.job WHERE state = 'available' AND queue = $1 \
                 AND concurrency_key > f.k ORDER BY concurrency_key LIMIT 1), \
              f.n + CASE WHEN ", key_blocked!("f.k"), " THEN 0 ELSE 1 END \
       FROM fwd f WHERE f.k IS NOT NULL AND f.n < (SELECT n FROM allow)), \
     wrap(k, n) AS ( \
       SELECT (SELECT concurrency_key FROM rota.job WHERE state = 'available' AND queue = $1 \
                 AND $3 ORDER BY concurrency_key LIMIT 1), 0::int8 \
       UNION ALL \
       SELECT (SELECT concurrency_key FROM rota.job WHERE state = 'available' AND queue = $1 \
                 AND concurrency_key > w.k ORDER BY concurrency_key LIMIT 1), \
              w.n + CASE WHEN ", key_blocked!("w.k"), " THEN 0 ELSE 1 END \
       FROM wrap w WHERE w.k IS NOT NULL AND w.k < $2 AND w.n < (SELECT n FROM allow)), \
     found AS ( \
       SELECT k, row_number() OVER (ORDER BY part, n) AS ord FROM ( \
         SELECT k, 0 AS part, n FROM fwd WHERE k IS NOT NULL \
         UNION ALL \
         SELECT k, 1, n FROM wrap WHERE k IS NOT NULL AND k <= $2) s \
       WHERE NOT ", key_blocked!("s.k"), " ORDER BY part, n LIMIT (SELECT n FROM allow)), \
     counted AS ( \
       SELECT k, ord, CASE WHEN k = '' OR $6::int8 IS NULL THEN 0::int8 ELSE \
         (SELECT count(*) FROM rota.job WHERE state = 'running' AND concurrency_key <> '' \
          AND queue = $1 AND concurrency_key = k) END AS running \
       FROM found), \
     keys AS ( \
       SELECT k, ord, running, least((SELECT n FROM allow), \
         ceil((SELECT n FROM allow)::numeric / (SELECT count(*) FROM found))::int8 \
           * coalesce((SELECT w FROM unnest($9::text[], $10::int8[]) u(key, w) WHERE key = k), 1), \
         CASE WHEN k = '' OR $6::int8 IS NULL THEN $4::int8 ELSE $6::int8 - running END) AS lim \
       FROM counted) \
     SELECT ",
    job_columns!(),
    ", keys.ord, keys.running FROM keys CROSS JOIN LATERAL ( \
       SELECT * FROM rota.job \
       WHERE state = 'available' AND queue = $1 AND concurrency_key = keys.k AND run_at <= $7 \
         AND ($8::text[] IS NULL OR kind = ANY($8)) \
       ORDER BY priority, run_at, id LIMIT greatest(keys.lim, 0) FOR UPDATE SKIP LOCKED) j \
     ORDER BY keys.ord, j.priority, j.run_at, j.id"
);
/// The column of [`CLAIM_SELECT`] that holds the key's place in the round.
pub(crate) const CLAIM_ORD_COLUMN: usize = 30;
/// The column of [`CLAIM_SELECT`] that holds the key's running jobs.
pub(crate) const CLAIM_RUNNING_COLUMN: usize = 31;
pub(crate) const RESCUE_SELECT: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM rota.job WHERE state = 'running' AND lease_expires_at <= $1 \
     ORDER BY lease_expires_at LIMIT $2 FOR UPDATE SKIP LOCKED"
);
/// The oldest ready job: one seek on `job_ready_age` among available jobs, and the due
/// waiting ones not yet promoted.
pub(crate) const OLDEST_READY: &str = "SELECT least( \
       (SELECT min(run_at) FROM rota.job WHERE state = 'available' AND queue = $1), \
       (SELECT min(run_at) FROM rota.job \
        WHERE state IN ('scheduled', 'retryable') AND queue = $1 AND run_at <= $2))";
pub(crate) const NEXT_DUE: &str = "SELECT min(run_at) FROM rota.job \
     WHERE state IN ('scheduled', 'retryable') AND queue = ANY($1)";
pub(crate) const RUNNING_SELECT: &str = concat!(
    "SELECT ",
    job_columns!(),
    " FROM rota.job WHERE state = 'running' ORDER BY lease_expires_at LIMIT $1"
);
pub(crate) const DEAD_GROUPS_SELECT: &str = "SELECT errors -> -1 ->> 'fingerprint', \
       errors -> -1 ->> 'message', kind, finished_at \
     FROM rota.job WHERE state = 'dead' AND finished_at IS NOT NULL AND finished_at >= $1 \
     ORDER BY finished_at DESC LIMIT $2";

fn uuids(ids: &[JobId]) -> Vec<uuid::Uuid> {
    ids.iter().map(|id| *id.as_uuid()).collect()
}

fn limit_param(limit: usize) -> i64 {
    i64::try_from(limit).unwrap_or(i64::MAX)
}

/// One job by id.
pub(crate) async fn job_get(db: &impl Conn, id: JobId) -> Result<Job, StoreError> {
    let row = db
        .query_opt(
            &format!("reading job {id}"),
            concat!("SELECT ", job_columns!(), " FROM rota.job WHERE id = $1"),
            &[id.as_uuid()],
        )
        .await?
        .ok_or(StoreError::JobNotFound(id))?;
    job_from_row(&row)
}

/// Locks and reads the given jobs (absent ones are missing from the map).
async fn jobs_locked(tx: &Tx<'_>, ids: &[JobId]) -> Result<HashMap<JobId, Job>, StoreError> {
    let mut ids = uuids(ids);
    ids.sort_unstable();
    ids.dedup();
    let rows = tx
        .query(
            "locking jobs",
            concat!(
                "SELECT ",
                job_columns!(),
                " FROM rota.job WHERE id = ANY($1) ORDER BY id FOR UPDATE"
            ),
            &[&ids],
        )
        .await?;
    Ok(jobs_from_rows(&rows)?
        .into_iter()
        .map(|j| (j.id, j))
        .collect())
}

/// Applies one event to each job, in order (a job named twice sees its first change), and
/// writes the changed rows back in one statement.
pub(crate) async fn job_apply_many(
    tx: &Tx<'_>,
    events: Vec<(JobId, Event)>,
    now: Timestamp,
) -> Result<Vec<Result<Job, StoreError>>, StoreError> {
    let ids: Vec<JobId> = events.iter().map(|(id, _)| *id).collect();
    let before = jobs_locked(tx, &ids).await?;
    let mut current = before.clone();
    let mut causes: HashMap<JobId, ChangeCause> = HashMap::new();
    let mut out = Vec::with_capacity(events.len());
    for (id, event) in events {
        let Some(job) = current.get(&id) else {
            out.push(Err(StoreError::JobNotFound(id)));
            continue;
        };
        let cause = ChangeCause::of(&event);
        match transition(job, event, now) {
            Ok(next) => {
                causes.insert(id, cause);
                current.insert(id, next.clone());
                out.push(Ok(next));
            }
            Err(e) => out.push(Err(e.into())),
        }
    }
    let saved: Vec<Saved<'_>> = causes
        .iter()
        .map(|(id, cause)| Saved {
            before: &before[id],
            after: &current[id],
            cause: *cause,
        })
        .collect();
    save_jobs(tx, &saved, now).await?;
    Ok(out)
}

/// Takes the unique-key locks of `keys` (in order, so concurrent enqueues never deadlock)
/// and returns every job holding one of them, newest first.
async fn jobs_with_unique_keys(tx: &Tx<'_>, keys: &[&str]) -> Result<Vec<Job>, StoreError> {
    if keys.is_empty() {
        return Ok(Vec::new());
    }
    let keys: Vec<String> = keys.iter().map(|k| k.to_string()).collect();
    take_key_locks(tx, "taking unique keys", keys.clone()).await?;
    let rows = tx
        .query(
            "looking up unique keys",
            concat!(
                "SELECT ",
                job_columns!(),
                " FROM rota.job WHERE unique_key = ANY($1) ORDER BY id DESC"
            ),
            &[&keys],
        )
        .await?;
    jobs_from_rows(&rows)
}

/// Enqueues a batch (the caller's transaction makes it all or nothing).
pub(crate) async fn job_insert_many(
    tx: &Tx<'_>,
    p: JobInsertManyParams,
) -> Result<Vec<Inserted>, StoreError> {
    let len = p.jobs.len();
    let mut names: Vec<String> = Vec::new();
    for (index, new) in p.jobs.iter().enumerate() {
        if !names.contains(&new.queue) {
            rota_core::validation::validate_queue_name(&new.queue)
                .map_err(|e| StoreError::from(e).at_item(index, len))?;
            names.push(new.queue.clone());
        }
    }
    let queues = queue_required_cached(tx, &names).await?;
    let loads = queue_loads(tx, &names, &queues, p.now).await?;
    let keys: Vec<&str> = p
        .jobs
        .iter()
        .filter_map(|j| j.unique_key.as_deref())
        .collect();
    let mut held = jobs_with_unique_keys(tx, &keys).await?;
    let collapse_keys: Vec<CollapseKey> = p.jobs.iter().filter_map(CollapseKey::of).collect();
    let mut holders = collapse_holders(tx, &collapse_keys).await?;
    let mut taken: Vec<(CollapseKey, CollapseHolder)> = Vec::new();
    let mut debounced: Vec<(Job, Job)> = Vec::new();
    let mut out: Vec<Inserted> = Vec::with_capacity(len);
    let mut fresh: Vec<Job> = Vec::with_capacity(len);
    for (index, new) in p.jobs.into_iter().enumerate() {
        let same_key: Vec<Job> = match &new.unique_key {
            Some(key) => held
                .iter()
                .filter(|j| j.unique_key.as_ref() == Some(key))
                .cloned()
                .collect(),
            None => Vec::new(),
        };
        let collapse = CollapseKey::of(&new);
        let slot = collapse.as_ref().map(|c| (c.scope, c.key.clone()));
        let holder = slot.as_ref().and_then(|s| holders.get(s));
        let queue = &queues[&new.queue].config;
        match plan_enqueue(new, queue, &same_key, holder, &p.defaults, p.now)
            .map_err(|e| e.at_item(index, len))?
        {
            Planned::Duplicate(job) => out.push(Inserted {
                job,
                duplicate: true,
                warning: None,
            }),
            Planned::Debounced { before, after } => {
                let (before, after) = (*before, *after);
                // A job of this batch changes before it is stored; a stored one is saved.
                match fresh.iter_mut().find(|j| j.id == after.id) {
                    Some(job) => *job = after.clone(),
                    None => match debounced.iter_mut().find(|(_, a)| a.id == after.id) {
                        Some((_, a)) => *a = after.clone(),
                        None => debounced.push((before, after.clone())),
                    },
                }
                for earlier in out.iter_mut().filter(|i| i.job.id == after.id) {
                    earlier.job = after.clone();
                }
                if let Some(h) = slot.as_ref().and_then(|s| holders.get_mut(s)) {
                    h.job = Some(after.clone());
                }
                out.push(Inserted {
                    job: after,
                    duplicate: true,
                    warning: None,
                });
            }
            Planned::Insert(job) => {
                if job.unique_key.is_some() {
                    // Newest first, as the lookup returned them.
                    held.insert(0, job.clone());
                }
                if let (Some(c), Some(slot)) = (collapse, slot) {
                    let holder = c.holder(&job, p.now);
                    holders.insert(slot, holder.clone());
                    taken.push((c, holder));
                }
                fresh.push(job.clone());
                out.push(Inserted {
                    job,
                    duplicate: false,
                    warning: None,
                });
            }
        }
    }
    apply_backpressure(&mut out, |q| &queues[q].config, &loads, p.now)?;
    let saved: Vec<Saved<'_>> = debounced
        .iter()
        .map(|(before, after)| Saved {
            before,
            after,
            cause: ChangeCause::Enqueued,
        })
        .collect();
    save_jobs(tx, &saved, p.now).await?;
    insert_jobs(tx, &fresh, ChangeCause::Enqueued).await?;
    collapse_take(tx, &taken).await?;
    Ok(out)
}

/// Locks `keys` for this transaction (rows of `unique_lock`, in order, so concurrent
/// transactions never deadlock and those sharing a key take turns).
async fn take_key_locks(
    tx: &Tx<'_>,
    context: &str,
    mut keys: Vec<String>,
) -> Result<(), StoreError> {
    keys.sort_unstable();
    keys.dedup();
    tx.execute(
        context,
        "INSERT INTO rota.unique_lock (key) SELECT unnest($1::text[]) \
         ON CONFLICT (key) DO UPDATE SET key = excluded.key",
        &[&keys],
    )
    .await?;
    Ok(())
}

/// Takes the locks of debounce and throttle keys (through `unique_lock`, in order, so
/// concurrent enqueues never deadlock and take turns per key) and returns who holds each,
/// the holding jobs locked too.
async fn collapse_holders(
    tx: &Tx<'_>,
    keys: &[CollapseKey],
) -> Result<HashMap<(&'static str, String), CollapseHolder>, StoreError> {
    if keys.is_empty() {
        return Ok(HashMap::new());
    }
    let locks = keys
        .iter()
        .map(|k| format!("{}\u{1f}{}", k.scope, k.key))
        .collect();
    take_key_locks(tx, "taking debounce and throttle keys", locks).await?;
    let scopes: Vec<&str> = keys.iter().map(|k| k.scope).collect();
    let names: Vec<&str> = keys.iter().map(|k| k.key.as_str()).collect();
    let rows = tx
        .query(
            "looking up debounce and throttle keys",
            "SELECT c.scope, c.key, c.job, c.first_at, c.until FROM rota.enqueue_collapse c \
             JOIN unnest($1::text[], $2::text[]) AS k(scope, key) \
               ON c.scope = k.scope AND c.key = k.key",
            &[&scopes, &names],
        )
        .await?;
    let ids: Vec<JobId> = rows
        .iter()
        .map(|r| JobId::from(r.get::<_, uuid::Uuid>(2)))
        .collect();
    let jobs = jobs_locked(tx, &ids).await?;
    let mut holders = HashMap::new();
    for row in &rows {
        let scope: String = row.get(0);
        let Some(key) = keys.iter().find(|k| k.scope == scope) else {
            continue;
        };
        holders.insert(
            (key.scope, row.get::<_, String>(1)),
            CollapseHolder {
                job: jobs.get(&JobId::from(row.get::<_, uuid::Uuid>(2))).cloned(),
                first_at: from_micros(row.get(3)),
                until: from_micros(row.get(4)),
            },
        );
    }
    Ok(holders)
}

/// Gives debounce and throttle keys to their new holders (with the commit).
async fn collapse_take(
    tx: &Tx<'_>,
    taken: &[(CollapseKey, CollapseHolder)],
) -> Result<(), StoreError> {
    if taken.is_empty() {
        return Ok(());
    }
    let mut latest: HashMap<(&str, &str), &CollapseHolder> = HashMap::new();
    for (key, holder) in taken {
        latest.insert((key.scope, key.key.as_str()), holder);
    }
    let (mut scope, mut key, mut job, mut first_at, mut until) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for ((s, k), h) in latest {
        let Some(holder) = &h.job else { continue };
        scope.push(s.to_string());
        key.push(k.to_string());
        job.push(*holder.id.as_uuid());
        first_at.push(micros(h.first_at));
        until.push(micros(h.until));
    }
    tx.defer(
        "taking debounce and throttle keys",
        "INSERT INTO rota.enqueue_collapse (scope, key, job, first_at, until) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::uuid[], $4::int8[], $5::int8[]) \
         ON CONFLICT (scope, key) DO UPDATE SET job = excluded.job, \
           first_at = excluded.first_at, until = excluded.until",
        vec![
            Box::new(scope),
            Box::new(key),
            Box::new(job),
            Box::new(first_at),
            Box::new(until),
        ],
    )
    .await
}

/// The loads of the queues with backpressure among `names`: their rows locked first (in
/// name order), so enqueues to one such queue take turns and each sees the jobs the one
/// before committed; then their counts and oldest ready jobs, in the same round trip.
async fn queue_loads(
    tx: &Tx<'_>,
    names: &[String],
    queues: &HashMap<String, Queue>,
    now: Timestamp,
) -> Result<HashMap<String, QueueLoad>, StoreError> {
    let mut pressed: Vec<String> = names
        .iter()
        .filter(|q| has_backpressure(&queues[*q].config))
        .cloned()
        .collect();
    pressed.sort_unstable();
    if pressed.is_empty() {
        return Ok(HashMap::new());
    }
    let mut queries: Vec<(String, &str, Vec<OwnedParam>)> = vec![
        (
            "locking queues with backpressure".into(),
            "SELECT name FROM rota.queue WHERE name = ANY($1) ORDER BY name FOR UPDATE",
            vec![Box::new(pressed.clone())],
        ),
        (
            "counting ready and scheduled jobs".into(),
            "SELECT queue, sum(n)::int8 FROM ( \
               SELECT queue, state, n FROM rota.job_count WHERE queue = ANY($1) \
               UNION ALL SELECT queue, state, n FROM rota.job_count_delta WHERE queue = ANY($1)) c \
             WHERE state IN ('available', 'scheduled', 'retryable') GROUP BY queue",
            vec![Box::new(pressed.clone())],
        ),
    ];
    for q in &pressed {
        queries.push((
            format!("finding the oldest ready job of {q:?}"),
            OLDEST_READY,
            vec![Box::new(q.clone()), Box::new(micros(now))],
        ));
    }
    let mut answers = tx.query_many(queries).await?.into_iter().skip(1);
    let mut loads: HashMap<String, QueueLoad> = pressed
        .iter()
        .map(|q| (q.clone(), QueueLoad::default()))
        .collect();
    for row in answers.next().unwrap_or_default() {
        if let Some(load) = loads.get_mut(row.get::<_, &str>(0)) {
            load.depth = row.get::<_, i64>(1).max(0) as u64;
        }
    }
    for (q, rows) in pressed.iter().zip(answers) {
        let oldest: Option<i64> = rows.first().and_then(|r| r.get(0));
        if let Some(load) = loads.get_mut(q) {
            load.oldest_ready = oldest.map(from_micros);
        }
    }
    Ok(loads)
}

/// Retries (operator's request) the given jobs, each unless another unfinished job holds its
/// unique key: two live jobs never share one.
pub(crate) async fn job_retry_many(
    tx: &Tx<'_>,
    ids: Vec<JobId>,
    now: Timestamp,
) -> Result<Vec<Result<Job, StoreError>>, StoreError> {
    let jobs = jobs_locked(tx, &ids).await?;
    let keys: Vec<&str> = jobs
        .values()
        .filter_map(|j| j.unique_key.as_deref())
        .collect();
    let held = jobs_with_unique_keys(tx, &keys).await?;
    let mut after: HashMap<JobId, Job> = HashMap::new();
    let mut out = Vec::with_capacity(ids.len());
    for id in ids {
        let Some(job) = after.get(&id).or(jobs.get(&id)) else {
            out.push(Err(StoreError::JobNotFound(id)));
            continue;
        };
        if let Some(key) = &job.unique_key {
            let same_key: Vec<Job> = held
                .iter()
                .filter(|j| j.unique_key.as_ref() == Some(key))
                .map(|j| after.get(&j.id).unwrap_or(j).clone())
                .collect();
            if let Some(holder) = retry_blocked_by(job, &same_key) {
                out.push(Err(StoreError::UniqueKeyTaken {
                    job: id,
                    key: key.clone(),
                    holder: holder.id,
                }));
                continue;
            }
        }
        match transition(job, Event::Retried, now) {
            Ok(next) => {
                after.insert(id, next.clone());
                out.push(Ok(next));
            }
            Err(e) => out.push(Err(e.into())),
        }
    }
    let saved: Vec<Saved<'_>> = after
        .values()
        .map(|next| Saved {
            before: &jobs[&next.id],
            after: next,
            cause: ChangeCause::Retried,
        })
        .collect();
    save_jobs(tx, &saved, now).await?;
    Ok(out)
}

/// Leases up to `max` jobs: one `FOR UPDATE SKIP LOCKED` statement per queue polled, so
/// concurrent claimers on any node never share a job and never wait for each other (except
/// on queues with limits, whose claims take turns on the queue's row).
pub(crate) async fn job_claim_many(
    tx: &Tx<'_>,
    p: JobClaimManyParams,
    memory: &ClaimMemory,
) -> Result<Vec<Job>, StoreError> {
    check_claim_queues(&p.queues)?;
    let queues = queue_required_cached(tx, &p.queues).await?;
    touch_worker(tx, &p.worker, p.now).await?;
    let mut open: Vec<&str> = p
        .queues
        .iter()
        .filter(|q| !queues[*q].paused)
        .map(String::as_str)
        .collect();
    open.dedup();
    if open.is_empty() || p.max == 0 {
        return Ok(Vec::new());
    }
    // One round trip: the locks of the limited queues' rows (in name order, so claimers on
    // every node take turns), promotion, every queue's claim (its limits checked in the
    // statement), and what the planner checks the claimed jobs against. Each statement sees
    // the ones before it, and what the claimer before this one committed.
    let now = micros(p.now);
    let kinds = (!p.kinds.is_empty()).then(|| p.kinds.clone());
    let mut limited: Vec<String> = open
        .iter()
        .filter(|q| has_claim_limits(&queues[**q].config))
        .map(|q| q.to_string())
        .collect();
    limited.sort_unstable();
    let mut queries: Vec<(String, &str, Vec<OwnedParam>)> = Vec::new();
    if !limited.is_empty() {
        queries.push((
            "locking limited queues".into(),
            "SELECT name FROM rota.queue WHERE name = ANY($1) ORDER BY name FOR UPDATE",
            vec![Box::new(limited.clone())],
        ));
    }
    let open_names: Vec<String> = open.iter().map(|q| q.to_string()).collect();
    queries.push((
        "promoting due jobs".into(),
        PROMOTE_DUE,
        vec![Box::new(open_names), Box::new(now)],
    ));
    for queue in &open {
        let config = &queues[*queue].config;
        let cursor = memory.cursor(queue);
        let (weight_keys, weights): (Vec<String>, Vec<i64>) = config
            .key_weights
            .iter()
            .map(|(k, w)| (k.clone(), i64::from(*w)))
            .unzip();
        // A key whose bucket's next token comes after this is out of tokens.
        let key_rate_block = config.key_rate.map(|rate| {
            micros(rota_core::add_duration(
                p.now,
                rate.interval() * rate.burst.saturating_sub(1),
            ))
        });
        queries.push((
            format!("claiming from queue {queue:?}"),
            CLAIM_SELECT,
            vec![
                Box::new(queue.to_string()),
                Box::new(cursor.clone().unwrap_or_default()),
                Box::new(cursor.is_some()),
                Box::new(limit_param(p.max)),
                Box::new(key_rate_block),
                Box::new(config.key_concurrency.map(i64::from)),
                Box::new(now),
                Box::new(kinds.clone()),
                Box::new(weight_keys),
                Box::new(weights),
                Box::new(config.concurrency.map(i64::from)),
            ],
        ));
    }
    if !limited.is_empty() {
        queries.push((
            "counting running jobs".into(),
            RUNNING_PER_QUEUE,
            vec![Box::new(limited.clone())],
        ));
        queries.push((
            "reading rate buckets".into(),
            "SELECT queue, scope, name, tat FROM rota.rate_bucket WHERE queue = ANY($1) AND tat > $2",
            vec![Box::new(limited.clone()), Box::new(now)],
        ));
    }
    let mut answers = tx.query_many(queries).await?.into_iter();
    if !limited.is_empty() {
        answers.next();
    }
    record_promoted(tx, &answers.next().unwrap_or_default());
    let claims: Vec<Vec<tokio_postgres::Row>> = open
        .iter()
        .map(|_| answers.next().unwrap_or_default())
        .collect();
    let mut limits: HashMap<String, QueueLimits> = open
        .iter()
        .map(|q| (q.to_string(), QueueLimits::default()))
        .collect();
    for row in answers.next().unwrap_or_default() {
        if let Some(l) = limits.get_mut(row.get::<_, &str>(0)) {
            l.running.total = row.get::<_, i64>(1).max(0) as u64;
        }
    }
    for row in answers.next().unwrap_or_default() {
        let scope = BucketScope::from_parts(row.get(1), row.get(2));
        if let (Some(l), Some(scope)) = (limits.get_mut(row.get::<_, &str>(0)), scope) {
            l.buckets.insert(scope, from_micros(row.get(3)));
        }
    }
    let mut plans = Vec::with_capacity(open.len());
    for (queue, rows) in open.iter().zip(claims) {
        let mut l = limits.remove(*queue).expect("limits of every open queue");
        let mut heads: Vec<KeyHeads> = Vec::new();
        let mut last_ord = None;
        for (row, job) in rows.iter().zip(jobs_from_rows(&rows)?) {
            let ord: i64 = row.get(CLAIM_ORD_COLUMN);
            let key = key_of(&job).to_string();
            if key != NO_KEY {
                let running: i64 = row.get(CLAIM_RUNNING_COLUMN);
                l.running.by_key.insert(key.clone(), running.max(0) as u64);
            }
            match heads.last_mut() {
                Some(last) if last_ord == Some(ord) => last.jobs.push(job),
                _ => heads.push(KeyHeads {
                    key,
                    jobs: vec![job],
                }),
            }
            last_ord = Some(ord);
        }
        let config = &queues[*queue].config;
        let read: usize = heads.iter().map(|h| h.jobs.len()).sum();
        let allowance = claim_allowance(config, l.running.total, p.max);
        let plan = plan_claim(config, &l.running, &l.buckets, heads, allowance, p.now);
        // Keys the statement skipped at a limit are not seen here: for a queue with limits, a
        // claim that came back short counts as held back.
        let left = read > plan.jobs.len() || plan.jobs.len() < allowance;
        memory.remember(queue, config, &plan, &l.buckets, left, p.now);
        plans.push((*queue, config, plan, l.buckets));
    }
    let (candidates, charged) = merge_plans(&plans, p.max, p.now);
    save_buckets(tx, &charged).await?;
    let candidates: Vec<Job> = candidates.into_iter().cloned().collect();
    let mut claimed = Vec::with_capacity(candidates.len());
    for job in &candidates {
        let event = Event::Fetched {
            worker: p.worker.clone(),
            lease_for: lease_for(Some(&queues[&job.queue].config), p.lease),
        };
        claimed.push(transition(job, event, p.now)?);
    }
    save_jobs(
        tx,
        &Saved::pairs(&candidates, &claimed, ChangeCause::Fetched),
        p.now,
    )
    .await?;
    Ok(claimed)
}

/// What a claim of one queue is checked against: its running jobs, its rate buckets that
/// are not full, and the keys it skips.
#[derive(Default)]
struct QueueLimits {
    running: Running,
    buckets: Buckets,
}

/// Running jobs of the queues `$1`, per queue (the `job_leased` index holds running jobs).
pub(crate) const RUNNING_PER_QUEUE: &str = "SELECT queue, count(*)::int8 FROM rota.job \
     WHERE state = 'running' AND queue = ANY($1) GROUP BY queue";

/// A queue's flow-control state (see `Store::queue_flow`).
pub(crate) async fn queue_flow(
    db: &impl Conn,
    p: QueueFlowParams,
) -> Result<QueueFlow, StoreError> {
    let queue = queue_required_many(db, std::slice::from_ref(&p.queue))
        .await?
        .remove(&p.queue)
        .expect("the queue asked for");
    let config = &queue.config;
    if !has_claim_limits(config) {
        return Ok(QueueFlow {
            config: queue.config,
            ..QueueFlow::default()
        });
    }
    let names = vec![queue.name.clone()];
    let total = db
        .query_opt("counting running jobs", RUNNING_PER_QUEUE, &[&names])
        .await?
        .map_or(0, |r| r.get::<_, i64>(1).max(0) as u64);
    let mut flow = QueueFlow {
        config: config.clone(),
        running: Running {
            total,
            by_key: HashMap::new(),
        },
        ..QueueFlow::default()
    };
    if let Some(limit) = config.key_concurrency {
        let at_limit = db
            .query(
                "finding keys at their limit",
                "SELECT concurrency_key, count(*)::int8 FROM rota.job \
                 WHERE state = 'running' AND concurrency_key <> '' AND queue = $1 \
                 GROUP BY concurrency_key HAVING count(*) >= $2 \
                 ORDER BY count(*) DESC, concurrency_key LIMIT $3",
                &[&queue.name, &i64::from(limit), &(KEYS_AT_LIMIT_MAX as i64)],
            )
            .await?;
        for row in at_limit {
            let key: String = row.get(0);
            let left = WAITING_COUNT_MAX.saturating_sub(flow.waiting_on_keys);
            if left > 0 {
                let waiting = db
                    .query_opt(
                        "counting ready jobs of a key",
                        "SELECT count(*)::int8 FROM (SELECT 1 FROM rota.job \
                         WHERE state = 'available' AND queue = $1 AND concurrency_key = $2 \
                         LIMIT $3) r",
                        &[&queue.name, &key, &(left as i64)],
                    )
                    .await?
                    .map_or(0, |r| r.get::<_, i64>(0).max(0) as u64);
                flow.waiting_on_keys += waiting;
            }
            flow.running
                .by_key
                .insert(key, row.get::<_, i64>(1).max(0) as u64);
        }
    }
    if let Some(key) = p.key {
        let n = db
            .query_opt(
                "counting running jobs of a key",
                "SELECT count(*)::int8 FROM rota.job \
                 WHERE state = 'running' AND concurrency_key <> '' AND queue = $1 \
                   AND concurrency_key = $2",
                &[&queue.name, &key],
            )
            .await?
            .map_or(0, |r| r.get::<_, i64>(0).max(0) as u64);
        flow.running.by_key.insert(key, n);
    }
    let rows = db
        .query(
            "reading rate buckets",
            "SELECT scope, name, tat FROM rota.rate_bucket WHERE queue = $1 AND tat > $2",
            &[&queue.name, &micros(p.now)],
        )
        .await?;
    for row in rows {
        if let Some(scope) = BucketScope::from_parts(row.get(0), row.get(1)) {
            flow.buckets.insert(scope, from_micros(row.get(2)));
        }
    }
    Ok(flow)
}

/// Stores the buckets claims drew from (with the commit).
async fn save_buckets(tx: &Tx<'_>, charged: &[(String, Buckets)]) -> Result<(), StoreError> {
    let (mut queue, mut scope, mut name, mut tat) =
        (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for (q, buckets) in charged {
        for (s, t) in buckets {
            let (s, n) = s.parts();
            queue.push(q.clone());
            scope.push(s.to_string());
            name.push(n.to_string());
            tat.push(micros(*t));
        }
    }
    if queue.is_empty() {
        return Ok(());
    }
    tx.defer(
        "saving rate buckets",
        "INSERT INTO rota.rate_bucket (queue, scope, name, tat) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::int8[]) \
         ON CONFLICT (queue, scope, name) DO UPDATE SET tat = excluded.tat",
        vec![
            Box::new(queue),
            Box::new(scope),
            Box::new(name),
            Box::new(tat),
        ],
    )
    .await
}

/// Extends leases, one answer per lease.
pub(crate) async fn lease_extend_many(
    tx: &Tx<'_>,
    p: LeaseExtendManyParams,
) -> Result<Vec<Result<Extended, StoreError>>, StoreError> {
    touch_worker(tx, &p.worker, p.now).await?;
    let ids: Vec<JobId> = p.leases.iter().map(|l| l.job).collect();
    let jobs = jobs_locked(tx, &ids).await?;
    let mut names: Vec<String> = jobs.values().map(|j| j.queue.clone()).collect();
    names.sort_unstable();
    names.dedup();
    let queues = queues_by_name(tx, &names).await?;
    let leases: HashMap<&str, Duration> = names
        .iter()
        .map(|n| {
            (
                n.as_str(),
                lease_for(queues.get(n).map(|q| &q.config), p.lease),
            )
        })
        .collect();
    let events = p
        .leases
        .iter()
        .map(|lease| {
            let lease_for = jobs
                .get(&lease.job)
                .map_or(p.lease, |j| leases[j.queue.as_str()]);
            (
                lease.job,
                Event::Heartbeat {
                    token: lease.token,
                    lease_for,
                },
            )
        })
        .collect();
    let results = job_apply_many(tx, events, p.now).await?;
    Ok(results
        .into_iter()
        .map(|r| {
            r.map(|job| Extended {
                job: job.id,
                expires_at: job.lease.as_ref().map_or(p.now, |l| l.expires_at),
                cancel_requested: job.cancel_requested,
            })
        })
        .collect())
}

/// Rescues up to `limit` expired leases.
pub(crate) async fn lease_rescue_expired(
    tx: &Tx<'_>,
    p: LeaseRescueParams,
) -> Result<RescueReport, StoreError> {
    let rows = tx
        .query(
            "finding expired leases",
            RESCUE_SELECT,
            &[&micros(p.now), &limit_param(p.limit)],
        )
        .await?;
    let expired = jobs_from_rows(&rows)?;
    let mut report = RescueReport::default();
    let mut rescued = Vec::with_capacity(expired.len());
    for job in &expired {
        let next = transition(job, Event::LeaseExpired, p.now)?;
        report.record(&next);
        rescued.push(next);
    }
    save_jobs(
        tx,
        &Saved::pairs(&expired, &rescued, ChangeCause::Rescued),
        p.now,
    )
    .await?;
    Ok(report)
}

/// Deletes finished jobs past their retention.
pub(crate) async fn job_prune(tx: &Tx<'_>, p: JobPruneParams) -> Result<PruneReport, StoreError> {
    // Buckets that have refilled are the same as none.
    tx.defer(
        "pruning rate buckets",
        "DELETE FROM rota.rate_bucket WHERE tat <= $1",
        vec![Box::new(micros(p.now))],
    )
    .await?;
    tx.defer(
        "pruning debounce and throttle keys",
        "DELETE FROM rota.enqueue_collapse WHERE until <= $1",
        vec![Box::new(micros(p.now))],
    )
    .await?;
    let mut report = PruneReport::default();
    for (state, cutoff) in p.cutoffs() {
        let n = job_prune_state(tx, state, cutoff, p.queue.as_deref(), p.limit, p.now).await?;
        report.add(state, n);
    }
    Ok(report)
}

/// The ids an operator's selector means; a filter without states means `default_state`.
pub(crate) async fn job_select_ids(
    db: &impl Conn,
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
            Ok(job_list(db, &params, usize::MAX >> 1)
                .await?
                .into_iter()
                .map(|j| j.id)
                .collect())
        }
    }
}

/// Jobs matching a filter, newest first, after the cursor, at most `limit`.
pub(crate) async fn job_list(
    db: &impl Conn,
    p: &JobListParams,
    limit: usize,
) -> Result<Vec<Job>, StoreError> {
    let f = &p.filter;
    let states: Vec<String> = f.states.iter().map(|s| s.as_str().to_owned()).collect();
    let (queues, kinds, states) = (texts(&f.queues), texts(&f.kinds), texts(&states));
    let created_after = f.created_after.map(micros);
    let created_before = f.created_before.map(micros);
    let after = p.after.map(|id| *id.as_uuid());
    let scan = p.scan.map(limit_param);
    let limit = limit_param(limit);
    // Only the conditions given are written: with `$n IS NULL OR …` forms, a cached
    // (generic) plan cannot use the id range, and picked a partial index and a sort
    // instead (119–214 ms at a million jobs). With a scan limit the filters apply to a
    // subquery that walks the primary key from the cursor and stops after that many jobs;
    // it is pipelined, so a page that fills early stops early.
    let mut conditions: Vec<String> = Vec::new();
    let mut params: Vec<super::Param<'_>> = Vec::new();
    fn push<'a>(
        conditions: &mut Vec<String>,
        params: &mut Vec<super::Param<'a>>,
        condition: &str,
        param: super::Param<'a>,
    ) {
        params.push(param);
        conditions.push(condition.replace('$', &format!("${}", params.len())));
    }
    let mut add = |condition: &str, param| push(&mut conditions, &mut params, condition, param);
    if !queues.is_empty() {
        add("queue = ANY($)", &queues);
    }
    if !kinds.is_empty() {
        add("kind = ANY($)", &kinds);
    }
    if !states.is_empty() {
        add("state = ANY($)", &states);
    }
    if let Some(tag) = &f.tag {
        add("tags ? $", tag);
    }
    if let Some(t) = &created_after {
        add("created_at >= $", t);
    }
    if let Some(t) = &created_before {
        add("created_at < $", t);
    }
    if let Some(group) = &f.error_group {
        add("errors -> -1 ->> 'fingerprint' = $", group);
    }
    let mut window = Vec::new();
    if let Some(id) = &after {
        params.push(id);
        window.push(format!("id < ${}", params.len()));
    }
    let from = match &scan {
        Some(scan) => {
            params.push(scan);
            format!(
                "(SELECT * FROM rota.job{} ORDER BY id DESC LIMIT ${}) AS job",
                if window.is_empty() {
                    String::new()
                } else {
                    format!(" WHERE {}", window[0])
                },
                params.len()
            )
        }
        None => {
            conditions.extend(window);
            "rota.job".to_owned()
        }
    };
    let filter = if conditions.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conditions.join(" AND "))
    };
    params.push(&limit);
    let sql = format!(
        "SELECT {} FROM {from}{filter} ORDER BY id DESC LIMIT ${}",
        job_columns!(),
        params.len()
    );
    let rows = db.query("listing jobs", &sql, &params).await?;
    jobs_from_rows(&rows)
}

/// A job's stored history.
pub(crate) async fn job_history(db: &impl Conn, id: JobId) -> Result<Vec<StateChange>, StoreError> {
    let rows = db
        .query(
            "reading a job's history",
            "SELECT history FROM rota.job WHERE id = $1",
            &[id.as_uuid()],
        )
        .await?;
    let row = rows.first().ok_or(StoreError::JobNotFound(id))?;
    Ok(StateChange::parse_log(&super::row::get::<String>(row, 0)?))
}

/// The jobs a listing from `after` with a scan limit of `scan` looks at: the oldest of
/// them when there are that many (a walk of the primary key; a listing then stops there).
pub(crate) async fn job_scan_window(
    db: &impl Conn,
    after: Option<JobId>,
    scan: usize,
) -> Result<ScanWindow, StoreError> {
    let skip = scan.max(1) as i64 - 1;
    let rows = match after {
        Some(after) => {
            db.query(
                "bounding a job listing",
                "SELECT id FROM rota.job WHERE id < $1 ORDER BY id DESC LIMIT 1 OFFSET $2",
                &[after.as_uuid(), &skip],
            )
            .await?
        }
        None => {
            db.query(
                "bounding a job listing",
                "SELECT id FROM rota.job ORDER BY id DESC LIMIT 1 OFFSET $1",
                &[&skip],
            )
            .await?
        }
    };
    let oldest = match rows.first() {
        Some(row) => Some(JobId::from(super::row::get::<uuid::Uuid>(row, 0)?)),
        None => None,
    };
    Ok(ScanWindow {
        oldest,
        full: oldest.is_some(),
    })
}

/// The earliest run_at of a waiting job on `queues`.
pub(crate) async fn job_next_due(
    db: &impl Conn,
    queues: &[String],
) -> Result<Option<Timestamp>, StoreError> {
    let row = db
        .query_opt("finding the next due job", NEXT_DUE, &[&texts(queues)])
        .await?;
    Ok(row
        .and_then(|r| r.get::<_, Option<i64>>(0))
        .map(from_micros))
}

/// When the oldest ready job of `queue` became ready.
pub(crate) async fn job_oldest_ready(
    db: &impl Conn,
    queue: &str,
    now: Timestamp,
) -> Result<Option<Timestamp>, StoreError> {
    let row = db
        .query_opt(
            "finding the oldest ready job",
            OLDEST_READY,
            &[&queue, &micros(now)],
        )
        .await?;
    Ok(row
        .and_then(|r| r.get::<_, Option<i64>>(0))
        .map(from_micros))
}

/// Running jobs, soonest lease expiry first (the `job_leased` index).
pub(crate) async fn job_list_running(db: &impl Conn, limit: usize) -> Result<Vec<Job>, StoreError> {
    let rows = db
        .query(
            "listing running jobs",
            RUNNING_SELECT,
            &[&limit_param(limit)],
        )
        .await?;
    jobs_from_rows(&rows)
}

/// Dead jobs since `since`, one row each for [`group_dead`].
pub(crate) async fn dead_rows(
    db: &impl Conn,
    since: Option<Timestamp>,
    latest: Option<usize>,
) -> Result<Vec<DeadRow>, StoreError> {
    // LIMIT NULL is no limit.
    let limit = latest.map(|n| n as i64);
    let rows = db
        .query(
            "grouping dead jobs",
            DEAD_GROUPS_SELECT,
            &[&since.map_or(i64::MIN, micros), &limit],
        )
        .await?;
    Ok(rows
        .iter()
        .map(|r| DeadRow {
            fingerprint: r.get(0),
            message: r.get(1),
            kind: r.get(2),
            finished_at: from_micros(r.get(3)),
        })
        .collect())
}
