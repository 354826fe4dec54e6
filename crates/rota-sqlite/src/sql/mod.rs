//! Every SQL statement of the SQLite backend, one module per area, and the mapping between
//! rows and values.
//!
//! Functions here run on a connection the caller provides: the writer's [`Tx`] (inside its
//! group transaction) for writes, a reader's `Connection` for reads. Job rows change only
//! through [`write`], whose functions record each change in the request's [`Tx`]; the
//! writer turns those records into job-count updates (in the same savepoint) and, after the
//! commit, into notifications. Rules (validation, planning, policy) come from `rota-store`.

mod backoff;
mod count;
mod job;
mod leader;
mod queue;
mod row;
mod schedule;
mod worker;
mod write;

pub(crate) use count::job_counts;
pub(crate) use job::*;
pub(crate) use leader::{leader_attempt_elect, leader_get, leader_renew, leader_resign};
pub(crate) use queue::{queue_declare, queue_list, queue_set_paused};
pub(crate) use schedule::{schedule_delete, schedule_fire, schedule_list, schedule_upsert};
pub(crate) use worker::{worker_list, worker_register};
pub(crate) use write::Tx;

use jiff::Timestamp;
use rota_store::StoreError;

/// Wraps a rusqlite error with what was being done.
pub(crate) fn db_err(context: &'static str) -> impl Fn(rusqlite::Error) -> StoreError {
    move |err| classify(context, err)
}

/// Classifies a rusqlite error by meaning.
pub(crate) fn classify(context: &str, err: rusqlite::Error) -> StoreError {
    match err.sqlite_error_code() {
        Some(rusqlite::ErrorCode::DatabaseBusy | rusqlite::ErrorCode::DatabaseLocked) => {
            StoreError::Busy(format!("{context}: {err}"))
        }
        Some(rusqlite::ErrorCode::DiskFull) => StoreError::StorageFull(format!("{context}: {err}")),
        Some(
            rusqlite::ErrorCode::CannotOpen
            | rusqlite::ErrorCode::NotADatabase
            | rusqlite::ErrorCode::ReadOnly
            | rusqlite::ErrorCode::SystemIoFailure,
        ) => StoreError::Unavailable(format!("{context}: {err}")),
        _ => StoreError::backend(context, err),
    }
}

/// A timestamp as stored: microseconds since the epoch.
/// Runs a statement without parameters through the statement cache (parsed once).
pub(crate) fn exec_cached(conn: &rusqlite::Connection, sql: &str) -> rusqlite::Result<()> {
    conn.prepare_cached(sql)?.execute([]).map(|_| ())
}

pub(crate) fn micros(at: Timestamp) -> i64 {
    at.as_microsecond()
}

/// A stored timestamp. Any integer reads: a value beyond what a timestamp can hold (written
/// by an older binary that saturated a far-future time) reads as the nearest end of the
/// range, so one row can never make a listing, a claim or a wait fail.
pub(crate) fn from_micros(v: i64) -> rusqlite::Result<Timestamp> {
    Ok(Timestamp::from_microsecond(v).unwrap_or(if v > 0 {
        Timestamp::MAX
    } else {
        Timestamp::MIN
    }))
}

/// A value as stored JSON text.
pub(crate) fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("job fields always serialize")
}

#[cfg(test)]
mod tests {
    use rusqlite::Connection;

    use super::job::{
        CLAIM_SELECT, DEAD_GROUPS_SELECT, KEYS_AT_LIMIT, NEXT_DUE, OLDEST_AVAILABLE,
        OLDEST_WAITING, READY_KEY_AFTER, READY_KEY_FIRST, READY_OF_KEY, RESCUE_SELECT,
        RUNNING_OF_KEY, RUNNING_PER_KEY, RUNNING_SELECT,
    };
    use super::write::{PROMOTE_DUE_SELECT, PROMOTE_DUE_UPDATE, PRUNE_DELETE};

    /// Statements on hot or large paths.
    const HOT_STATEMENTS: [(&str, &str); 16] = [
        ("running per key", RUNNING_PER_KEY),
        ("keys at their limit", KEYS_AT_LIMIT),
        ("ready of a key", READY_OF_KEY),
        ("promote select", PROMOTE_DUE_SELECT),
        ("promote update", PROMOTE_DUE_UPDATE),
        ("claim", CLAIM_SELECT),
        ("next ready key", READY_KEY_AFTER),
        ("first ready key", READY_KEY_FIRST),
        ("running of a key", RUNNING_OF_KEY),
        ("rescue", RESCUE_SELECT),
        ("oldest available", OLDEST_AVAILABLE),
        ("oldest waiting", OLDEST_WAITING),
        ("next due", NEXT_DUE),
        ("running", RUNNING_SELECT),
        ("dead groups", DEAD_GROUPS_SELECT),
        ("prune", PRUNE_DELETE),
    ];

    /// Every hot statement finds its rows through an index: a plain `SCAN job` (a full scan
    /// of the job table) would make it slower as jobs accumulate. Partial indexes are used only
    /// when the statement repeats the index's WHERE condition exactly, which is easy to break.
    #[test]
    fn hot_statements_use_their_indexes() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::migrate::migrate_connection(&mut conn, jiff::Timestamp::UNIX_EPOCH).unwrap();
        check_plans(&conn);
    }

    /// The same at 1,000,000 jobs over 1,000 concurrency keys, nearly all finished, with the
    /// statistics `ANALYZE` gathers (issue 14: claims of a queue with limits stay index seeks
    /// at a million jobs).
    #[test]
    fn hot_statements_use_their_indexes_at_a_million_jobs() {
        let mut conn = Connection::open_in_memory().unwrap();
        crate::migrate::migrate_connection(&mut conn, jiff::Timestamp::UNIX_EPOCH).unwrap();
        conn.execute_batch(
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < 1000000) \
             INSERT INTO job (id, queue, kind, args, priority, state, attempt, max_attempts, \
               backoff, tags, errors, lease_token, cancel_requested, run_at, created_at, \
               finished_at, lease_expires_at, concurrency_key) \
             SELECT randomblob(16), 'q' || (i % 20), 'k' || (i % 50), '{}', i % 10, \
               CASE i % 1000 WHEN 0 THEN 'available' WHEN 1 THEN 'running' \
                 WHEN 2 THEN 'scheduled' WHEN 3 THEN 'dead' ELSE 'completed' END, \
               1, 20, '\"exponential\"', '[]', '[]', 1, 0, i, i, i, i, \
               CASE WHEN i % 2 = 0 THEN 'customer:' || (i % 1000) ELSE '' END \
             FROM n; \
             ANALYZE;",
        )
        .unwrap();
        check_plans(&conn);
    }

    fn check_plans(conn: &Connection) {
        for (name, sql) in HOT_STATEMENTS {
            let mut stmt = conn.prepare(&format!("EXPLAIN QUERY PLAN {sql}")).unwrap();
            let plan: Vec<String> = stmt
                .query_map(
                    rusqlite::params_from_iter(std::iter::repeat_n(
                        rusqlite::types::Value::Null,
                        stmt.parameter_count(),
                    )),
                    |r| r.get::<_, String>(3),
                )
                .unwrap()
                .collect::<rusqlite::Result<_>>()
                .unwrap();
            // `SCAN job USING INDEX <partial index>` walks only that index's rows: fine.
            assert!(
                plan.iter().all(|step| step != "SCAN job"),
                "{name} scans the job table: {plan:?}"
            );
            // Claims seek: the ready index by queue and key, no sort. (Keys at their limit
            // sort the few keys found, not the jobs.)
            if (name.contains("claim") || name.contains("key"))
                && !["keys at their limit", "running per key"].contains(&name)
            {
                assert!(
                    plan.iter().any(|step| step.starts_with("SEARCH job USING")
                        && (step.contains("job_ready") || step.contains("job_running_key")))
                        && plan.iter().all(|step| !step.contains("TEMP B-TREE")),
                    "{name} does not seek its index: {plan:?}"
                );
            }
        }
    }
}
