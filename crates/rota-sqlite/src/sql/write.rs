//! The only functions that change job rows. Each records what it changed, as a
//! [`JobChange`], in the request's [`Tx`]; the writer applies the job-count updates those
//! records imply inside the request's savepoint and, after the commit, hands the records to
//! the store's notifier. A write path cannot forget either: there is no other way to write a
//! job row.

use std::cell::RefCell;
use std::ops::Deref;

use jiff::Timestamp;
use rota_core::{Job, JobId, JobState};
use rota_store::{count_deltas, ChangeCause, JobChange, StateChange, StoreError, HISTORY_CHARS};
use rusqlite::{params, Connection, OptionalExtension};

use super::row::job_columns;
use super::{classify, db_err, json, micros};

/// The writer's connection for one write request, with the job changes it made so far.
pub(crate) struct Tx<'c> {
    conn: &'c Connection,
    changes: RefCell<Vec<JobChange>>,
    /// How many of `changes` the `job_count` table already reflects.
    counted: std::cell::Cell<usize>,
}

impl Deref for Tx<'_> {
    type Target = Connection;

    fn deref(&self) -> &Connection {
        self.conn
    }
}

impl<'c> Tx<'c> {
    /// A request on `conn` (inside its savepoint).
    pub(crate) fn new(conn: &'c Connection) -> Self {
        Self {
            conn,
            changes: RefCell::default(),
            counted: std::cell::Cell::new(0),
        }
    }

    fn record(&self, change: JobChange) {
        self.changes.borrow_mut().push(change);
    }

    /// Brings the `job_count` table up to date with the job changes made so far (one
    /// statement per queue, kind and state touched), so a read of the counts later in the
    /// same request (a claim's concurrency check after completions) sees them.
    pub(crate) fn settle_counts(&self) -> Result<(), StoreError> {
        let changes = self.changes.borrow();
        let deltas = count_deltas(&changes[self.counted.get()..]);
        self.counted.set(changes.len());
        if deltas.is_empty() {
            return Ok(());
        }
        let mut stmt = self
            .conn
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

    /// A mark to [`Tx::rewind`] to: the changes recorded so far, all counted.
    pub(crate) fn mark(&self) -> Result<usize, StoreError> {
        self.settle_counts()?;
        Ok(self.counted.get())
    }

    /// Forgets the changes recorded after `mark`, when the savepoint that made them was
    /// rolled back (with their count updates).
    pub(crate) fn rewind(&self, mark: usize) {
        self.changes.borrow_mut().truncate(mark);
        self.counted.set(mark);
    }

    /// Applies the job-count changes not yet applied and returns the request's changes for
    /// the notifier.
    pub(crate) fn finish(self) -> Result<Vec<JobChange>, StoreError> {
        self.settle_counts()?;
        Ok(self.changes.into_inner())
    }
}

/// Stores a new job.
pub(crate) fn insert_job(tx: &Tx<'_>, job: &Job, cause: ChangeCause) -> Result<(), StoreError> {
    let mut stmt = tx
        .prepare_cached(concat!("INSERT INTO job (", job_columns!(), ") VALUES \
             (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21, ?22, ?23, ?24, ?25, ?26, ?27, ?28, ?29, ?30)"))
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
        super::backoff::backoff_to_text(&job.backoff),
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
        job.unique_for
            .map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX)),
        job.snoozes,
        job.checkpoint.as_ref().map(json),
        json(&job.snooze_log),
        job.concurrency_key.as_deref().unwrap_or(rota_store::NO_KEY),
    ])
    .map_err(|e| classify(&format!("inserting job {}", job.id), e))?;
    tx.record(JobChange::between(None, job, cause, job.created_at).expect("a new job is a change"));
    Ok(())
}

/// Appends `?` (one line) to `history`, keeping its last [`HISTORY_CHARS`] (the 2000 in the
/// SQL).
const _: () = assert!(HISTORY_CHARS == 2000);
const HISTORY_APPEND: &str = "substr(history || ?, -2000)";

/// Writes back the fields a transition changed, and only those: SQLite maintains an index
/// on an UPDATE when the index's columns are in the SET list, changed or not, so a narrow
/// SET keeps each transition to the index work it really needs.
pub(crate) fn save_job(
    tx: &Tx<'_>,
    before: &Job,
    after: &Job,
    cause: ChangeCause,
    now: Timestamp,
) -> Result<(), StoreError> {
    use rusqlite::types::Value as V;

    let mut sql = String::with_capacity(160);
    let mut values: Vec<V> = vec![V::Blob(after.id.as_bytes().to_vec())];
    // `column = template`, the template's `?` the value's placeholder.
    let mut assign = |column: &str, template: &str, value: V| {
        sql.push_str(if values.len() == 1 {
            "UPDATE job SET "
        } else {
            ", "
        });
        values.push(value);
        sql.push_str(column);
        sql.push_str(" = ");
        sql.push_str(&template.replace('?', &format!("?{}", values.len())));
    };
    // A change of state is appended to the job's history in SQL (the history is never read
    // on this path), the oldest entry dropped beyond HISTORY_MAX.
    if let Some(change) = StateChange::between(before, after, cause, now) {
        assign("history", HISTORY_APPEND, V::Text(change.line()));
    }
    let mut set = |column: &str, value: V| assign(column, "?", value);
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
    if before.args != after.args {
        set("args", V::Text(json(&after.args)));
    }
    if before.progress != after.progress {
        set("progress", opt_text(after.progress.as_ref().map(json)));
    }
    if before.snoozes != after.snoozes {
        set("snoozes", V::Integer(after.snoozes.into()));
    }
    if before.snooze_log != after.snooze_log {
        set("snooze_log", V::Text(json(&after.snooze_log)));
    }
    if before.checkpoint != after.checkpoint {
        set("checkpoint", opt_text(after.checkpoint.as_ref().map(json)));
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
    sql.push_str(" WHERE id = ?1");
    tx.prepare_cached(&sql)
        .and_then(|mut stmt| stmt.execute(rusqlite::params_from_iter(values)))
        .map_err(|e| classify(&format!("updating job {}", after.id), e))?;
    if let Some(change) = JobChange::between(Some(before), after, cause, now) {
        tx.record(change);
    }
    Ok(())
}

/// Promotion: which waiting jobs of a queue are due (`state IN ('scheduled', 'retryable')`
/// exactly as in the partial index `job_waiting`: SQLite uses a partial index only when the
/// query repeats its condition).
pub(crate) const PROMOTE_DUE_SELECT: &str = "SELECT id, kind, state FROM job \
             WHERE state IN ('scheduled', 'retryable') AND queue = ?1 AND run_at <= ?2";
/// Promotion, set-based: it changes nothing but the state.
pub(crate) const PROMOTE_DUE_UPDATE: &str = "UPDATE job SET state = 'available' \
         WHERE state IN ('scheduled', 'retryable') AND queue = ?1 AND run_at <= ?2";

/// Makes scheduled and retryable jobs of `queue` whose time has come available (the `Due`
/// transition); returns how many. The SELECT almost always finds nothing.
pub(crate) fn job_promote_due(
    tx: &Tx<'_>,
    queue: &str,
    now: Timestamp,
) -> Result<usize, StoreError> {
    let err = db_err("promoting due jobs");
    let due: Vec<([u8; 16], String, String)> = tx
        .prepare_cached(PROMOTE_DUE_SELECT)
        .and_then(|mut stmt| {
            stmt.query_map(params![queue, micros(now)], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?))
            })?
            .collect()
        })
        .map_err(&err)?;
    if due.is_empty() {
        return Ok(0);
    }
    tx.prepare_cached(PROMOTE_DUE_UPDATE)
        .and_then(|mut stmt| stmt.execute(params![queue, micros(now)]))
        .map_err(&err)?;
    for (id, kind, state) in &due {
        if let Ok(from) = state.parse() {
            tx.record(JobChange {
                id: JobId::from_bytes(*id),
                queue: queue.to_owned(),
                kind: kind.clone(),
                from: Some(from),
                to: Some(JobState::Available),
                cause: ChangeCause::Promoted,
                took: None,
            });
        }
    }
    Ok(due.len())
}

/// Pruning: up to `?3` jobs in state `?1` finished before `?2` (of queue `?4` when given),
/// except those whose unique key is still taken at `?5`.
pub(crate) const PRUNE_DELETE: &str = "DELETE FROM job WHERE id IN (SELECT id FROM job \
             WHERE state = ?1 AND finished_at IS NOT NULL AND finished_at < ?2 \
               AND (?4 IS NULL OR queue = ?4) \
               AND (unique_for_ms IS NULL OR finished_at + unique_for_ms * 1000 <= ?5) \
             LIMIT ?3) \
             RETURNING id, queue, kind";

/// Deletes up to `limit` jobs in `state` that finished before `cutoff`; returns how many.
pub(crate) fn job_prune_state(
    tx: &Tx<'_>,
    state: JobState,
    cutoff: Timestamp,
    queue: Option<&str>,
    limit: usize,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let gone: Vec<([u8; 16], String, String)> = tx
        .prepare_cached(PRUNE_DELETE)
        .and_then(|mut stmt| {
            stmt.query_map(
                params![
                    state.as_str(),
                    micros(cutoff),
                    limit as i64,
                    queue,
                    micros(now)
                ],
                |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?)),
            )?
            .collect()
        })
        .map_err(|e| classify(&format!("pruning {state} jobs"), e))?;
    let count = gone.len() as u64;
    for (id, queue, kind) in gone {
        tx.record(JobChange::deleted(
            JobId::from_bytes(id),
            queue,
            kind,
            state,
            ChangeCause::Pruned,
        ));
    }
    Ok(count)
}

/// Deletes the given jobs that are in one of `states`; returns how many went.
pub(crate) fn job_delete(
    tx: &Tx<'_>,
    ids: &[JobId],
    states: &[JobState],
) -> Result<u64, StoreError> {
    let states = json(&states.iter().map(|s| s.as_str()).collect::<Vec<_>>());
    let mut stmt = tx
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
                tx.record(JobChange::deleted(
                    *id,
                    queue,
                    kind,
                    state,
                    ChangeCause::Purged,
                ));
            }
            deleted += 1;
        }
    }
    Ok(deleted)
}
