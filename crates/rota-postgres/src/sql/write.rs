//! The only functions that change job rows. Each records what it changed, as a
//! [`JobChange`], in the request's [`Tx`]; [`Tx::finish`] appends the job-count deltas
//! those records imply and sends the cross-node notifications, in one statement inside the
//! transaction. A write path cannot forget either: there is no other way to write a job row.
//!
//! Rows are written a batch at a time: one `INSERT … SELECT FROM unnest(…)` for every new
//! job of a request, one `UPDATE … FROM unnest(…)` for every changed one.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use futures_util::future::join_all;
use tokio_postgres::{Row, Statement};

use jiff::Timestamp;
use rota_core::{Job, JobId, JobState};
use rota_store::{count_deltas, ChangeCause, JobChange, StateChange, StoreError, HISTORY_CHARS};

use super::{classify, json, micros, Conn, Db, OwnedParam, Param, QueueCache};
use crate::notification;

/// Whether a [`Tx`] must open its transaction.
pub(crate) enum Begin<'a> {
    /// Send BEGIN with the first statement; the flag records that it went out (so that the
    /// owner of the connection can roll back if the request is abandoned).
    Pending(&'a AtomicBool),
    /// The caller's transaction is open already (and the caller commits it).
    Open,
}

/// A prepared statement with its parameters, sent later: a write whose answer nothing
/// waits for (deferred to the next statement), or one of several pipelined queries.
struct Prepared {
    context: String,
    stmt: Statement,
    params: Vec<OwnedParam>,
}

impl Prepared {
    fn params(&self) -> Vec<Param<'_>> {
        self.params.iter().map(|p| &**p as Param<'_>).collect()
    }
}

/// What a pipelined statement answered.
enum Answer {
    Done,
    Rows(Vec<Row>),
    Count(u64),
}

type PgFuture<'f> =
    Pin<Box<dyn Future<Output = Result<Answer, tokio_postgres::Error>> + Send + 'f>>;

/// A write request's transaction, with the job changes it made so far. Its statements are
/// pipelined: BEGIN, the deferred writes and the next statement go out together.
pub(crate) struct Tx<'a> {
    db: Db<'a>,
    begin: Begin<'a>,
    origin: &'a str,
    queues: Option<&'a QueueCache>,
    changes: Mutex<Vec<JobChange>>,
    deferred: Mutex<Vec<Prepared>>,
}

impl<'a> Tx<'a> {
    /// A request on `db`; `origin` names this node in the notifications it sends; `queues`
    /// is the node's queue cache, if it has one.
    pub(crate) fn new(
        db: Db<'a>,
        begin: Begin<'a>,
        origin: &'a str,
        queues: Option<&'a QueueCache>,
    ) -> Self {
        Self {
            db,
            begin,
            origin,
            queues,
            changes: Mutex::default(),
            deferred: Mutex::default(),
        }
    }

    /// The node's queue cache.
    pub(crate) fn queue_cache(&self) -> Option<&'a QueueCache> {
        self.queues
    }

    fn record(&self, change: JobChange) {
        self.changes.lock().expect("change list lock").push(change);
    }

    async fn prepare(
        &self,
        context: impl Into<String>,
        sql: &str,
        params: Vec<OwnedParam>,
    ) -> Result<Prepared, StoreError> {
        let context = context.into();
        let stmt = self.db.prepare(&context, sql).await?;
        Ok(Prepared {
            context,
            stmt,
            params,
        })
    }

    /// Queues a write to go out with the next statement (or the commit); its failure fails
    /// the request then.
    pub(crate) async fn defer(
        &self,
        context: impl Into<String>,
        sql: &str,
        params: Vec<OwnedParam>,
    ) -> Result<(), StoreError> {
        let prepared = self.prepare(context, sql, params).await?;
        self.deferred.lock().expect("deferred lock").push(prepared);
        Ok(())
    }

    /// Sends BEGIN (the first time), the deferred writes and `last`, in one round trip, and
    /// returns `last`'s answer; the first failure (in sending order) is the error.
    async fn send(&self, last: Option<(&str, PgFuture<'_>)>) -> Result<Option<Answer>, StoreError> {
        let deferred = std::mem::take(&mut *self.deferred.lock().expect("deferred lock"));
        let client = self.db.client();
        let mut contexts: Vec<&str> = Vec::with_capacity(deferred.len() + 2);
        let mut futures: Vec<PgFuture<'_>> = Vec::with_capacity(deferred.len() + 2);
        if let Begin::Pending(sent) = &self.begin {
            if !sent.swap(true, Ordering::AcqRel) {
                contexts.push("beginning a transaction");
                futures.push(Box::pin(async move {
                    client.batch_execute("BEGIN").await.map(|()| Answer::Done)
                }));
            }
        }
        for d in &deferred {
            contexts.push(&d.context);
            futures.push(Box::pin(async move {
                client
                    .execute(&d.stmt, &d.params())
                    .await
                    .map(Answer::Count)
            }));
        }
        let wants_answer = last.is_some();
        if let Some((context, future)) = last {
            contexts.push(context);
            futures.push(future);
        }
        if futures.is_empty() {
            return Ok(None);
        }
        let mut answers = Vec::with_capacity(futures.len());
        for (context, result) in contexts.iter().zip(join_all(futures).await) {
            answers.push(result.map_err(|e| classify(context, e))?);
        }
        Ok(if wants_answer { answers.pop() } else { None })
    }

    /// Runs several queries in one round trip (with BEGIN and the deferred writes), in order:
    /// each sees the effects of those before it. Returns their rows, in order.
    pub(crate) async fn query_many(
        &self,
        queries: Vec<(String, &str, Vec<OwnedParam>)>,
    ) -> Result<Vec<Vec<Row>>, StoreError> {
        let mut prepared = Vec::with_capacity(queries.len());
        for (context, sql, params) in queries {
            prepared.push(self.prepare(context, sql, params).await?);
        }
        let client = self.db.client();
        let mut futures: Vec<PgFuture<'_>> = Vec::with_capacity(prepared.len());
        for q in &prepared {
            futures.push(Box::pin(async move {
                client.query(&q.stmt, &q.params()).await.map(Answer::Rows)
            }));
        }
        // The first query rides with BEGIN and the deferred writes; the rest right behind it.
        let mut futures = futures.into_iter();
        let Some(first) = futures.next() else {
            return Ok(Vec::new());
        };
        let (head, rest) = futures_util::future::join(
            self.send(Some((&prepared[0].context, first))),
            join_all(futures),
        )
        .await;
        let mut out = Vec::with_capacity(prepared.len());
        if let Some(Answer::Rows(rows)) = head? {
            out.push(rows);
        }
        for (q, result) in prepared[1..].iter().zip(rest) {
            match result.map_err(|e| classify(&q.context, e))? {
                Answer::Rows(rows) => out.push(rows),
                _ => unreachable!("a query answers rows"),
            }
        }
        Ok(out)
    }

    /// Appends the job-count deltas of this request's changes and the notifications to other
    /// nodes to the pending writes, sends them with the COMMIT (or, in a caller's own
    /// transaction, flushes them), and returns the changes for this node's notifier.
    pub(crate) async fn finish(self) -> Result<Vec<JobChange>, StoreError> {
        let changes = std::mem::take(&mut *self.changes.lock().expect("change list lock"));
        let deltas = count_deltas(&changes);
        // In a caller's own transaction the notifications must leave with its commit; a
        // write of the store's own hands them to the broadcaster after its commit.
        let payloads = match self.begin {
            Begin::Open => notification::encode(self.origin, &changes),
            Begin::Pending(_) => Vec::new(),
        };
        if !deltas.is_empty() || !payloads.is_empty() {
            let mut queues = Vec::with_capacity(deltas.len());
            let mut kinds = Vec::with_capacity(deltas.len());
            let mut states = Vec::with_capacity(deltas.len());
            let mut ns = Vec::with_capacity(deltas.len());
            for ((queue, kind, state), n) in deltas {
                queues.push(queue.to_owned());
                kinds.push(kind.to_owned());
                states.push(state.as_str());
                ns.push(n);
            }
            self.defer(
                "recording job counts",
                "WITH d AS (INSERT INTO rota.job_count_delta (queue, kind, state, n) \
                   SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bigint[])) \
                 SELECT count(pg_notify('rota', p)) FROM unnest($5::text[]) p",
                vec![
                    Box::new(queues),
                    Box::new(kinds),
                    Box::new(states),
                    Box::new(ns),
                    Box::new(payloads),
                ],
            )
            .await?;
        }
        match &self.begin {
            Begin::Open => {
                self.send(None).await?;
            }
            Begin::Pending(sent) => {
                let pending = !self.deferred.lock().expect("deferred lock").is_empty();
                if pending || sent.load(Ordering::Acquire) {
                    let client = self.db.client();
                    self.send(Some((
                        "committing",
                        Box::pin(async move {
                            client.batch_execute("COMMIT").await.map(|()| Answer::Done)
                        }),
                    )))
                    .await?;
                }
            }
        }
        Ok(changes)
    }
}

impl Conn for Tx<'_> {
    async fn query(
        &self,
        context: &str,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<Vec<Row>, StoreError> {
        let stmt = self.db.prepare(context, sql).await?;
        let client = self.db.client();
        let future: PgFuture<'_> =
            Box::pin(async move { client.query(&stmt, params).await.map(Answer::Rows) });
        match self.send(Some((context, future))).await? {
            Some(Answer::Rows(rows)) => Ok(rows),
            _ => unreachable!("a query answers rows"),
        }
    }

    async fn execute(
        &self,
        context: &str,
        sql: &str,
        params: &[Param<'_>],
    ) -> Result<u64, StoreError> {
        let stmt = self.db.prepare(context, sql).await?;
        let client = self.db.client();
        let future: PgFuture<'_> =
            Box::pin(async move { client.execute(&stmt, params).await.map(Answer::Count) });
        match self.send(Some((context, future))).await? {
            Some(Answer::Count(n)) => Ok(n),
            _ => unreachable!("an execute answers a count"),
        }
    }
}

/// Column values of many jobs, one array per column, for `unnest`.
#[derive(Default)]
struct JobArrays {
    id: Vec<uuid::Uuid>,
    queue: Vec<String>,
    kind: Vec<String>,
    args: Vec<String>,
    priority: Vec<i16>,
    state: Vec<&'static str>,
    attempt: Vec<i32>,
    max_attempts: Vec<i32>,
    backoff: Vec<String>,
    timeout_ms: Vec<Option<i64>>,
    unique_key: Vec<Option<String>>,
    tags: Vec<String>,
    progress: Vec<Option<String>>,
    result: Vec<Option<String>>,
    errors: Vec<String>,
    lease_worker: Vec<Option<String>>,
    lease_token: Vec<i64>,
    lease_expires_at: Vec<Option<i64>>,
    cancel_requested: Vec<bool>,
    run_at: Vec<i64>,
    created_at: Vec<i64>,
    attempted_at: Vec<Option<i64>>,
    finished_at: Vec<Option<i64>>,
    schedule: Vec<Option<String>>,
    slot: Vec<Option<i64>>,
    unique_for_ms: Vec<Option<i64>>,
    snoozes: Vec<i32>,
    checkpoint: Vec<Option<String>>,
    snooze_log: Vec<String>,
    concurrency_key: Vec<String>,
}

fn int(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn millis(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl JobArrays {
    fn push(&mut self, job: &Job) {
        self.id.push(*job.id.as_uuid());
        self.queue.push(job.queue.clone());
        self.kind.push(job.kind.clone());
        self.args.push(json(&job.args));
        self.priority.push(job.priority.into());
        self.state.push(job.state.as_str());
        self.attempt.push(int(job.attempt));
        self.max_attempts.push(int(job.max_attempts));
        self.backoff.push(json(&job.backoff));
        self.timeout_ms.push(job.timeout.map(millis));
        self.unique_key.push(job.unique_key.clone());
        self.tags.push(json(&job.tags));
        self.progress.push(job.progress.as_ref().map(json));
        self.result.push(job.result.as_ref().map(json));
        self.errors.push(json(&job.errors));
        self.lease_worker
            .push(job.lease.as_ref().map(|l| l.worker.clone()));
        self.lease_token.push(job.lease_token as i64);
        self.lease_expires_at
            .push(job.lease.as_ref().map(|l| micros(l.expires_at)));
        self.cancel_requested.push(job.cancel_requested);
        self.run_at.push(micros(job.run_at));
        self.created_at.push(micros(job.created_at));
        self.attempted_at.push(job.attempted_at.map(micros));
        self.finished_at.push(job.finished_at.map(micros));
        self.schedule
            .push(job.origin.as_ref().map(|o| o.schedule.clone()));
        self.slot.push(job.origin.as_ref().map(|o| micros(o.slot)));
        self.unique_for_ms.push(job.unique_for.map(millis));
        self.snoozes.push(int(job.snoozes));
        self.checkpoint.push(job.checkpoint.as_ref().map(json));
        self.snooze_log.push(json(&job.snooze_log));
        self.concurrency_key.push(
            job.concurrency_key
                .clone()
                .unwrap_or_else(|| rota_store::NO_KEY.to_string()),
        );
    }
}

const INSERT_JOBS: &str = "INSERT INTO rota.job (id, queue, kind, args, priority, state, \
     attempt, max_attempts, backoff, timeout_ms, unique_key, tags, progress, result, errors, \
     lease_worker, lease_token, lease_expires_at, cancel_requested, run_at, created_at, \
     attempted_at, finished_at, schedule, slot, unique_for_ms, snoozes, checkpoint, snooze_log, \
     concurrency_key) \
     SELECT id, queue, kind, args::jsonb, priority, state, attempt, max_attempts, \
       backoff::jsonb, timeout_ms, unique_key, tags::jsonb, progress::jsonb, result::jsonb, \
       errors::jsonb, lease_worker, lease_token, lease_expires_at, cancel_requested, run_at, \
       created_at, attempted_at, finished_at, schedule, slot, unique_for_ms, snoozes, \
       checkpoint::jsonb, snooze_log::jsonb, concurrency_key \
     FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int2[], $6::text[], \
       $7::int4[], $8::int4[], $9::text[], $10::int8[], $11::text[], $12::text[], $13::text[], \
       $14::text[], $15::text[], $16::text[], $17::int8[], $18::int8[], $19::bool[], \
       $20::int8[], $21::int8[], $22::int8[], $23::int8[], $24::text[], $25::int8[], \
       $26::int8[], $27::int4[], $28::text[], $29::text[], $30::text[]) \
     AS u(id, queue, kind, args, priority, state, attempt, max_attempts, backoff, timeout_ms, \
       unique_key, tags, progress, result, errors, lease_worker, lease_token, lease_expires_at, \
       cancel_requested, run_at, created_at, attempted_at, finished_at, schedule, slot, \
       unique_for_ms, snoozes, checkpoint, snooze_log, concurrency_key)";

/// Stores new jobs, in one statement.
pub(crate) async fn insert_jobs(
    tx: &Tx<'_>,
    jobs: &[Job],
    cause: ChangeCause,
) -> Result<(), StoreError> {
    if jobs.is_empty() {
        return Ok(());
    }
    let mut a = JobArrays::default();
    for job in jobs {
        a.push(job);
    }
    let params: Vec<OwnedParam> = vec![
        Box::new(a.id),
        Box::new(a.queue),
        Box::new(a.kind),
        Box::new(a.args),
        Box::new(a.priority),
        Box::new(a.state),
        Box::new(a.attempt),
        Box::new(a.max_attempts),
        Box::new(a.backoff),
        Box::new(a.timeout_ms),
        Box::new(a.unique_key),
        Box::new(a.tags),
        Box::new(a.progress),
        Box::new(a.result),
        Box::new(a.errors),
        Box::new(a.lease_worker),
        Box::new(a.lease_token),
        Box::new(a.lease_expires_at),
        Box::new(a.cancel_requested),
        Box::new(a.run_at),
        Box::new(a.created_at),
        Box::new(a.attempted_at),
        Box::new(a.finished_at),
        Box::new(a.schedule),
        Box::new(a.slot),
        Box::new(a.unique_for_ms),
        Box::new(a.snoozes),
        Box::new(a.checkpoint),
        Box::new(a.snooze_log),
        Box::new(a.concurrency_key),
    ];
    // Sent with the next statement or the commit: a duplicate id or a broken row fails the
    // request there.
    tx.defer("inserting jobs", INSERT_JOBS, params).await?;
    for job in jobs {
        tx.record(
            JobChange::between(None, job, cause, job.created_at).expect("a new job is a change"),
        );
    }
    Ok(())
}

/// The columns a transition may change: name, array type in `unnest`, and the cast from it.
const UPDATABLE: [(&str, &str, &str); 17] = [
    ("state", "text[]", ""),
    ("args", "text[]", "::jsonb"),
    ("attempt", "int4[]", ""),
    ("max_attempts", "int4[]", ""),
    ("progress", "text[]", "::jsonb"),
    ("snoozes", "int4[]", ""),
    ("snooze_log", "text[]", "::jsonb"),
    ("checkpoint", "text[]", "::jsonb"),
    ("result", "text[]", "::jsonb"),
    ("errors", "text[]", "::jsonb"),
    ("lease_worker", "text[]", ""),
    ("lease_expires_at", "int8[]", ""),
    ("lease_token", "int8[]", ""),
    ("cancel_requested", "bool[]", ""),
    ("run_at", "int8[]", ""),
    ("attempted_at", "int8[]", ""),
    ("finished_at", "int8[]", ""),
];

/// Whether `column` differs between two versions of a job.
fn changed(column: &str, a: &Job, b: &Job) -> bool {
    match column {
        "state" => a.state != b.state,
        "args" => a.args != b.args,
        "attempt" => a.attempt != b.attempt,
        "max_attempts" => a.max_attempts != b.max_attempts,
        "progress" => a.progress != b.progress,
        "snoozes" => a.snoozes != b.snoozes,
        "snooze_log" => a.snooze_log != b.snooze_log,
        "checkpoint" => a.checkpoint != b.checkpoint,
        "result" => a.result != b.result,
        "errors" => a.errors != b.errors,
        "lease_worker" | "lease_expires_at" => a.lease != b.lease,
        "lease_token" => a.lease_token != b.lease_token,
        "cancel_requested" => a.cancel_requested != b.cancel_requested,
        "run_at" => a.run_at != b.run_at,
        "attempted_at" => a.attempted_at != b.attempted_at,
        "finished_at" => a.finished_at != b.finished_at,
        other => unreachable!("not an updatable column: {other}"),
    }
}

/// The values of `column` for `jobs`, as one array parameter.
fn column_values(column: &str, jobs: &[&Job]) -> OwnedParam {
    fn each<T: tokio_postgres::types::ToSql + Sync + Send + 'static>(
        jobs: &[&Job],
        f: impl Fn(&Job) -> T,
    ) -> OwnedParam {
        Box::new(jobs.iter().map(|j| f(j)).collect::<Vec<T>>())
    }
    match column {
        "state" => each(jobs, |j| j.state.as_str()),
        "attempt" => each(jobs, |j| int(j.attempt)),
        "max_attempts" => each(jobs, |j| int(j.max_attempts)),
        "args" => each(jobs, |j| json(&j.args)),
        "progress" => each(jobs, |j| j.progress.as_ref().map(json)),
        "snoozes" => each(jobs, |j| int(j.snoozes)),
        "snooze_log" => each(jobs, |j| json(&j.snooze_log)),
        "checkpoint" => each(jobs, |j| j.checkpoint.as_ref().map(json)),
        "result" => each(jobs, |j| j.result.as_ref().map(json)),
        "errors" => each(jobs, |j| json(&j.errors)),
        "lease_worker" => each(jobs, |j| j.lease.as_ref().map(|l| l.worker.clone())),
        "lease_expires_at" => each(jobs, |j| j.lease.as_ref().map(|l| micros(l.expires_at))),
        "lease_token" => each(jobs, |j| j.lease_token as i64),
        "cancel_requested" => each(jobs, |j| j.cancel_requested),
        "run_at" => each(jobs, |j| micros(j.run_at)),
        "attempted_at" => each(jobs, |j| j.attempted_at.map(micros)),
        "finished_at" => each(jobs, |j| j.finished_at.map(micros)),
        other => unreachable!("not an updatable column: {other}"),
    }
}

/// One job's state before and after a transition, and why it changed.
pub(crate) struct Saved<'j> {
    pub(crate) before: &'j Job,
    pub(crate) after: &'j Job,
    pub(crate) cause: ChangeCause,
}

impl<'j> Saved<'j> {
    /// Each job of `before` with its transitioned self in `after` (same order), all for
    /// `cause`.
    pub(crate) fn pairs(before: &'j [Job], after: &'j [Job], cause: ChangeCause) -> Vec<Self> {
        before
            .iter()
            .zip(after)
            .map(|(before, after)| Saved {
                before,
                after,
                cause,
            })
            .collect()
    }
}

/// Appends `u.history` (one line; nothing when absent) to the job's history, keeping its
/// last [`HISTORY_CHARS`] (the 2000 in the SQL).
const _: () = assert!(HISTORY_CHARS == 2000);
const HISTORY_APPEND: &str =
    "history = CASE WHEN u.history IS NULL THEN j.history ELSE right(j.history || u.history, 2000) END";

/// Writes back transitioned jobs (the rows must be locked by this transaction), in one
/// statement sent with the next one; unchanged jobs are skipped.
pub(crate) async fn save_jobs(
    tx: &Tx<'_>,
    saved: &[Saved<'_>],
    now: Timestamp,
) -> Result<(), StoreError> {
    // Only the columns some job of the batch changed are sent and set: unchanged JSON is
    // neither serialized nor parsed again, and the statement stays as narrow as the
    // transition.
    let mut jobs: Vec<&Job> = Vec::with_capacity(saved.len());
    let mut columns: Vec<&str> = Vec::new();
    for s in saved.iter().filter(|s| s.before != s.after) {
        jobs.push(s.after);
        for (column, _, _) in UPDATABLE {
            if !columns.contains(&column) && changed(column, s.before, s.after) {
                columns.push(column);
            }
        }
    }
    if jobs.is_empty() || columns.is_empty() {
        return Ok(());
    }
    let mut set = Vec::with_capacity(columns.len());
    let mut arrays = vec!["$1::uuid[]".to_owned()];
    let mut names = vec!["id"];
    let mut params: Vec<OwnedParam> = vec![Box::new(
        jobs.iter().map(|j| *j.id.as_uuid()).collect::<Vec<_>>(),
    )];
    // In the fixed order of UPDATABLE, so a column set always makes the same statement.
    for (name, array, cast) in UPDATABLE.iter().filter(|c| columns.contains(&c.0)) {
        set.push(format!("{name} = u.{name}{cast}"));
        arrays.push(format!("${}::{array}", names.len() + 1));
        names.push(name);
        params.push(column_values(name, &jobs));
    }
    // A change of state is appended to the job's history (never read on this path), the
    // oldest entry dropped beyond HISTORY_MAX.
    let entries: Vec<Option<String>> = saved
        .iter()
        .filter(|s| s.before != s.after)
        .map(|s| StateChange::between(s.before, s.after, s.cause, now).map(|c| c.line()))
        .collect();
    if entries.iter().any(Option::is_some) {
        set.push(HISTORY_APPEND.to_owned());
        arrays.push(format!("${}::text[]", names.len() + 1));
        names.push("history");
        params.push(Box::new(entries));
    }
    let sql = format!(
        "UPDATE rota.job j SET {} FROM unnest({}) AS u({}) WHERE j.id = u.id",
        set.join(", "),
        arrays.join(", "),
        names.join(", ")
    );
    tx.defer("updating jobs", &sql, params).await?;
    for s in saved {
        if let Some(change) = JobChange::between(Some(s.before), s.after, s.cause, now) {
            tx.record(change);
        }
    }
    Ok(())
}

/// Promotion: scheduled and retryable jobs of these queues whose time has come become
/// available (the `Due` transition, set-based: it changes nothing but the state). Jobs
/// another transaction holds are left for the next claim.
pub(crate) const PROMOTE_DUE: &str = "UPDATE rota.job j SET state = 'available' \
     FROM (SELECT id, state FROM rota.job \
           WHERE state IN ('scheduled', 'retryable') AND queue = ANY($1) AND run_at <= $2 \
           FOR UPDATE SKIP LOCKED) w \
     WHERE j.id = w.id \
     RETURNING j.id, j.queue, j.kind, w.state";

/// Records the promotions [`PROMOTE_DUE`] answered.
pub(crate) fn record_promoted(tx: &Tx<'_>, rows: &[Row]) {
    for row in rows {
        let from: &str = row.get(3);
        if let Ok(from) = from.parse() {
            tx.record(JobChange {
                id: JobId::from(row.get::<_, uuid::Uuid>(0)),
                queue: row.get(1),
                kind: row.get(2),
                from: Some(from),
                to: Some(JobState::Available),
                cause: ChangeCause::Promoted,
                took: None,
            });
        }
    }
}

/// Pruning: up to `$3` jobs in state `$1` finished before `$2` (of queue `$4` when given),
/// except those whose unique key is still taken at `$5`.
pub(crate) const PRUNE_DELETE: &str = "DELETE FROM rota.job WHERE id IN (SELECT id FROM rota.job \
     WHERE state = $1 AND finished_at IS NOT NULL AND finished_at < $2 \
       AND ($4::text IS NULL OR queue = $4) \
       AND (unique_for_ms IS NULL OR finished_at + unique_for_ms * 1000 <= $5) \
     LIMIT $3 FOR UPDATE SKIP LOCKED) \
     RETURNING id, queue, kind";

/// Deletes up to `limit` jobs in `state` that finished before `cutoff`; returns how many.
pub(crate) async fn job_prune_state(
    tx: &Tx<'_>,
    state: JobState,
    cutoff: Timestamp,
    queue: Option<&str>,
    limit: usize,
    now: Timestamp,
) -> Result<u64, StoreError> {
    let rows = tx
        .query(
            &format!("pruning {state} jobs"),
            PRUNE_DELETE,
            &[
                &state.as_str(),
                &micros(cutoff),
                &(limit.min(i64::MAX as usize) as i64),
                &queue,
                &micros(now),
            ],
        )
        .await?;
    for row in &rows {
        tx.record(JobChange::deleted(
            JobId::from(row.get::<_, uuid::Uuid>(0)),
            row.get(1),
            row.get(2),
            state,
            ChangeCause::Pruned,
        ));
    }
    Ok(rows.len() as u64)
}

/// Deletes the given jobs that are in one of `states`; returns how many went.
pub(crate) async fn job_delete(
    tx: &Tx<'_>,
    ids: &[JobId],
    states: &[JobState],
) -> Result<u64, StoreError> {
    let ids: Vec<uuid::Uuid> = ids.iter().map(|id| *id.as_uuid()).collect();
    let states: Vec<&str> = states.iter().map(|s| s.as_str()).collect();
    let rows = tx
        .query(
            "purging jobs",
            "DELETE FROM rota.job WHERE id = ANY($1) AND state = ANY($2) \
             RETURNING id, queue, kind, state",
            &[&ids, &states],
        )
        .await?;
    for row in &rows {
        let state: &str = row.get(3);
        if let Ok(state) = state.parse() {
            tx.record(JobChange::deleted(
                JobId::from(row.get::<_, uuid::Uuid>(0)),
                row.get(1),
                row.get(2),
                state,
                ChangeCause::Purged,
            ));
        }
    }
    Ok(rows.len() as u64)
}
