//! Every SQL statement of the PostgreSQL backend, one module per area, and the mapping
//! between rows and values.
//!
//! Functions here run on any [`Conn`]: a [`Db`] (a pooled connection, with its statement
//! cache) for reads, a [`Tx`] for writes. A `Tx` pipelines: its BEGIN goes out with its
//! first statement, writes whose answer nothing waits for are sent with the next statement
//! (or the COMMIT), so a write costs one or two round trips. Job rows change only through
//! [`write`], whose functions record each change in the [`Tx`]; [`Tx::finish`] turns the
//! records into job-count deltas and cross-node notifications, sent with the COMMIT. Rules (validation, planning, policy, state transitions) come from
//! `rota-store` and `rota-core`, exactly as on SQLite.

mod count;
mod job;
mod leader;
mod queue;
mod row;
mod schedule;
mod worker;
mod write;

pub(crate) use count::{job_counts, job_counts_fold};
pub(crate) use job::*;
pub(crate) use leader::{leader_attempt_elect, leader_get, leader_renew, leader_resign};
pub(crate) use queue::QueueCache;
pub(crate) use queue::{queue_declare, queue_list, queue_set_paused};
pub(crate) use schedule::{schedule_delete, schedule_fire, schedule_list, schedule_upsert};
pub(crate) use worker::{worker_list, worker_register};
pub(crate) use write::{Begin, Tx};

use std::future::Future;

use deadpool_postgres::StatementCache;
use jiff::Timestamp;
use rota_store::StoreError;
use tokio_postgres::error::SqlState;
use tokio_postgres::types::ToSql;
use tokio_postgres::{Client, Row, Statement};

/// Something statements run on: a pooled connection ([`Db`], for reads) or a write
/// transaction ([`Tx`], which pipelines). Every SQL function takes `&impl Conn`.
pub(crate) trait Conn: Sync {
    /// Runs `sql`, returning its rows; `context` says what was being done if it fails.
    fn query(
        &self,
        context: &str,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Vec<Row>, StoreError>> + Send;

    /// Runs `sql`, returning how many rows it changed.
    fn execute(
        &self,
        context: &str,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<u64, StoreError>> + Send;

    /// Runs `sql`, returning its first row if there is one.
    fn query_opt(
        &self,
        context: &str,
        sql: &str,
        params: &[Param<'_>],
    ) -> impl Future<Output = Result<Option<Row>, StoreError>> + Send {
        async move { Ok(self.query(context, sql, params).await?.into_iter().next()) }
    }
}

/// A connection: prepared statements come from its cache when it has one (pooled
/// connections do; a caller's own transaction does not).
#[derive(Clone, Copy)]
pub(crate) struct Db<'a> {
    client: &'a Client,
    cache: Option<&'a StatementCache>,
}

/// A statement parameter.
pub(crate) type Param<'p> = &'p (dyn ToSql + Sync);

/// An owned statement parameter (for statements sent later).
pub(crate) type OwnedParam = Box<dyn ToSql + Sync + Send>;

impl<'a> Db<'a> {
    /// Statements on `client`, prepared once per connection through `cache` if given.
    pub(crate) fn new(client: &'a Client, cache: Option<&'a StatementCache>) -> Self {
        Self { client, cache }
    }

    pub(crate) fn client(&self) -> &'a Client {
        self.client
    }

    /// The prepared statement for `sql`.
    pub(crate) async fn prepare(&self, context: &str, sql: &str) -> Result<Statement, StoreError> {
        match self.cache {
            Some(cache) => cache.prepare(self.client, sql).await,
            None => self.client.prepare(sql).await,
        }
        .map_err(|e| classify(context, e))
    }
}

impl Conn for Db<'_> {
    async fn query(
        &self,
        context: &str,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Vec<Row>, StoreError> {
        let stmt = self.prepare(context, sql).await?;
        self.client
            .query(&stmt, params)
            .await
            .map_err(|e| classify(context, e))
    }

    async fn execute(
        &self,
        context: &str,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<u64, StoreError> {
        let stmt = self.prepare(context, sql).await?;
        self.client
            .execute(&stmt, params)
            .await
            .map_err(|e| classify(context, e))
    }
}

/// Classifies a PostgreSQL error by meaning.
pub(crate) fn classify(context: &str, err: tokio_postgres::Error) -> StoreError {
    if err.is_closed() {
        return StoreError::Unavailable(format!("{context}: the database connection closed"));
    }
    let Some(db) = err.as_db_error() else {
        // No server answer at all: the connection broke or the server is gone.
        return StoreError::Unavailable(format!("{context}: {err}"));
    };
    let code = db.code();
    if *code == SqlState::T_R_SERIALIZATION_FAILURE
        || *code == SqlState::T_R_DEADLOCK_DETECTED
        || *code == SqlState::LOCK_NOT_AVAILABLE
        || *code == SqlState::QUERY_CANCELED
    {
        return StoreError::Busy(format!("{context}: {}", db.message()));
    }
    if *code == SqlState::DISK_FULL {
        return StoreError::StorageFull(format!("{context}: {}", db.message()));
    }
    if code.code().starts_with("08")
        || code.code().starts_with("57P")
        || *code == SqlState::TOO_MANY_CONNECTIONS
        || *code == SqlState::INSUFFICIENT_PRIVILEGE
        || *code == SqlState::READ_ONLY_SQL_TRANSACTION
    {
        return StoreError::Unavailable(format!("{context}: {}", db.message()));
    }
    StoreError::backend(context, db.message())
}

/// Whether a failed transaction may simply be run again (a deadlock or serialization
/// failure between concurrent writers).
pub(crate) fn is_retryable(err: &StoreError) -> bool {
    matches!(err, StoreError::Busy(m) if m.contains("deadlock") || m.contains("serialize"))
}

/// A timestamp as stored: microseconds since the epoch.
pub(crate) fn micros(at: Timestamp) -> i64 {
    at.as_microsecond()
}

/// A stored timestamp; a value beyond what a timestamp can hold reads as the nearest end of
/// the range, so one row can never make a listing, a claim or a wait fail.
pub(crate) fn from_micros(v: i64) -> Timestamp {
    Timestamp::from_microsecond(v).unwrap_or(if v > 0 {
        Timestamp::MAX
    } else {
        Timestamp::MIN
    })
}

/// A value as JSON text (cast to jsonb in the statement).
pub(crate) fn json<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_string(value).expect("job fields always serialize")
}

/// Wraps a row-mapping failure with what was being read.
pub(crate) fn row_err(context: &str, err: impl std::fmt::Display) -> StoreError {
    StoreError::backend(context, err)
}

/// The database server's clock.
pub(crate) async fn database_time(db: &impl Conn) -> Result<Timestamp, StoreError> {
    let row = db
        .query_opt(
            "reading the database clock",
            "SELECT (extract(epoch FROM clock_timestamp()) * 1000000)::int8",
            &[],
        )
        .await?;
    Ok(from_micros(row.map_or(0, |r| r.get(0))))
}

/// Text-array parameters for `= ANY($n)`.
pub(crate) fn texts(values: &[String]) -> Vec<&str> {
    values.iter().map(String::as_str).collect()
}

#[cfg(test)]
mod tests {
    use super::job::{
        CLAIM_SELECT, DEAD_GROUPS_SELECT, NEXT_DUE, OLDEST_READY, RESCUE_SELECT, RUNNING_PER_QUEUE,
        RUNNING_SELECT,
    };
    use super::write::{PROMOTE_DUE, PRUNE_DELETE};

    /// Statements on hot or large paths.
    const HOT_STATEMENTS: [(&str, &str); 9] = [
        ("running per queue", RUNNING_PER_QUEUE),
        ("promote", PROMOTE_DUE),
        ("claim", CLAIM_SELECT),
        ("rescue", RESCUE_SELECT),
        ("oldest ready", OLDEST_READY),
        ("next due", NEXT_DUE),
        ("running", RUNNING_SELECT),
        ("dead groups", DEAD_GROUPS_SELECT),
        ("prune", PRUNE_DELETE),
    ];

    /// Every hot statement finds its rows through an index in the plan PostgreSQL uses for
    /// any parameters (the generic plan), on a table shaped like a busy one: 1,000,000 jobs
    /// spread over 1,000 concurrency keys, nearly all finished, analysed. A `Seq Scan on job`
    /// would make the statement slower as jobs accumulate (issue 14: claims of a queue with
    /// limits stay index seeks at a million jobs).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn hot_statements_use_their_indexes() {
        let db = tokio::task::spawn_blocking(rota_testkit::TempPostgresDb::new)
            .await
            .unwrap();
        let store = crate::PostgresStore::open_migrated(crate::PostgresOptions::new(&db.url))
            .await
            .unwrap();
        drop(store);
        let (client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
            .await
            .unwrap();
        tokio::spawn(connection);
        client
            .batch_execute(
                "INSERT INTO rota.job (id, queue, kind, args, priority, state, attempt, \
                   max_attempts, backoff, tags, errors, lease_token, cancel_requested, run_at, \
                   created_at, finished_at, lease_expires_at, concurrency_key) \
                 SELECT gen_random_uuid(), 'q' || (i % 20), 'k' || (i % 50), '{}', i % 10, \
                   CASE WHEN i % 1000 = 0 THEN 'available' WHEN i % 1000 = 1 THEN 'running' \
                        WHEN i % 1000 = 2 THEN 'scheduled' WHEN i % 1000 = 3 THEN 'dead' \
                        ELSE 'completed' END, \
                   1, 20, '\"exponential\"', '[]', '[]', 1, false, i, i, i, i, \
                   CASE WHEN i % 2 = 0 THEN 'customer:' || (i % 1000) ELSE '' END \
                 FROM generate_series(1, 1000000) i; \
                 ANALYZE rota.job; \
                 SET plan_cache_mode = force_generic_plan;",
            )
            .await
            .unwrap();
        for (i, (name, sql)) in HOT_STATEMENTS.iter().enumerate() {
            let params = client.prepare(sql).await.unwrap().params().len();
            client
                .batch_execute(&format!("PREPARE hot{i} AS {sql}"))
                .await
                .unwrap();
            let nulls = vec!["NULL"; params].join(", ");
            let args = if params == 0 {
                String::new()
            } else {
                format!("({nulls})")
            };
            let plan: Vec<String> = client
                .query(&format!("EXPLAIN EXECUTE hot{i}{args}"), &[])
                .await
                .unwrap()
                .iter()
                .map(|r| r.get(0))
                .collect();
            assert!(
                plan.iter().all(|step| !step.contains("Seq Scan on job")),
                "{name} scans the job table:\n{}",
                plan.join("\n")
            );
            if *name == "claim" {
                // The key scan and each key's jobs: seeks on the ready index, no sort of jobs.
                assert!(
                    plan.iter()
                        .any(|step| step.contains("using job_ready on job"))
                        && plan.iter().all(|step| !step.contains("Sort Key: job.")),
                    "the claim does not seek job_ready:\n{}",
                    plan.join("\n")
                );
            }
        }
    }
}
