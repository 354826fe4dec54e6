//! Rota's embedded backend: one SQLite file, no set-up.
//!
//! [`SqliteStore`] implements [`rota_store::Store`]. Writes go to one writer thread
//! ([`writer`]) that folds concurrent requests into one transaction (group commit); reads
//! use a few reader connections ([`reader`]). The database runs in WAL mode with
//! `synchronous=FULL` unless [`Durability::Normal`] is chosen. Migrations ([`migrate`]) are
//! embedded and applied by `store_migrate` (or [`SqliteStore::open_migrated`]); a database
//! written by a newer Rota is refused. All SQL is in the private `sql` module, one file per
//! area; the rules the SQL follows come from `rota-store`.

pub mod bound;
pub mod migrate;
mod park;
mod reader;
mod sql;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use async_trait::async_trait;
use rota_core::{Clock, Event, Job, JobId, JobState, SystemClock};
use rota_store::*;
use rusqlite::{Connection, OpenFlags};

pub use migrate::SCHEMA_VERSION;
pub use writer::WriterStats;

/// How hard each commit is pushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// `synchronous=FULL`: an acknowledged write survives power loss (the default).
    #[default]
    Full,
    /// `synchronous=NORMAL`: survives a process crash, not a power loss; faster.
    Normal,
}

/// How to open a SQLite store.
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// The database file (created if missing).
    pub path: PathBuf,
    /// Commit durability.
    pub durability: Durability,
    /// Idle reader connections kept open.
    pub readers: usize,
}

/// WAL pages (4 KiB each) after which a commit checkpoints.
pub const WAL_AUTOCHECKPOINT_PAGES: u32 = 10_000;

/// Reader connections kept by default.
pub const READERS_DEFAULT: usize = 4;

impl SqliteOptions {
    /// Defaults for `path`: FULL durability, four readers.
    pub fn new(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            durability: Durability::Full,
            readers: READERS_DEFAULT,
        }
    }
}

/// The embedded SQLite store.
#[derive(Debug)]
pub struct SqliteStore {
    writer: writer::Writer,
    readers: reader::Readers,
    path: PathBuf,
    memory: Arc<ClaimMemory>,
    parking: Arc<park::Parking>,
}

impl SqliteStore {
    /// Opens the database (creating the file if needed) without touching its schema: call
    /// `store_migrate` before anything else.
    pub fn open(options: SqliteOptions) -> Result<Self, StoreError> {
        let conn = open_writer_connection(&options.path, options.durability)?;
        Ok(Self::start(conn, options))
    }

    /// Opens and migrates the database (for tests, benchmarks and embedding).
    pub fn open_migrated(options: SqliteOptions) -> Result<Self, StoreError> {
        let mut conn = open_writer_connection(&options.path, options.durability)?;
        migrate::migrate_connection(&mut conn, SystemClock.now())?;
        Ok(Self::start(conn, options))
    }

    fn start(conn: Connection, options: SqliteOptions) -> Self {
        let memory: Arc<ClaimMemory> = Arc::default();
        let parking = Arc::new(park::Parking::new(memory.clone()));
        Self {
            writer: writer::Writer::start(conn, &options.path, parking.clone()),
            readers: reader::Readers::new(options.path.clone(), options.readers),
            path: options.path,
            memory,
            parking,
        }
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// How many transactions and requests the writer has served (group commit makes the
    /// first much smaller than the second under concurrency).
    pub fn writer_stats(&self) -> WriterStats {
        self.writer.stats()
    }

    async fn apply_each<T: Send + 'static>(
        &self,
        items: Vec<T>,
        now: jiff::Timestamp,
        to_event: impl Fn(T) -> (JobId, Event) + Send + 'static,
    ) -> Result<Vec<Result<Job, StoreError>>, StoreError> {
        self.writer
            .write(move |tx| Ok(sql::job_apply_each(tx, items, now, to_event)))
            .await
    }
}

fn open_writer_connection(path: &Path, durability: Durability) -> Result<Connection, StoreError> {
    let open_err = |e: rusqlite::Error| {
        StoreError::Unavailable(format!("cannot open database {}: {e}", path.display()))
    };
    let conn = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_WRITE
            | OpenFlags::SQLITE_OPEN_CREATE
            | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(open_err)?;
    conn.busy_timeout(Duration::from_secs(5))
        .map_err(open_err)?;
    let mode: String = conn
        .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
        .map_err(open_err)?;
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(StoreError::Unavailable(format!(
            "database {} cannot use WAL mode (got {mode}); is it on a network file system?",
            path.display()
        )));
    }
    let sync = match durability {
        Durability::Full => "FULL",
        Durability::Normal => "NORMAL",
    };
    conn.execute_batch(&format!(
        "PRAGMA synchronous = {sync}; PRAGMA temp_store = MEMORY; PRAGMA cache_size = -65536;"
    ))
    .map_err(open_err)?;
    // Checkpoint at most every ~40 MiB of WAL instead of SQLite's 4 MiB: pages rewritten often
    // (index roots, the newest leaves) are copied into the database once per checkpoint
    // rather than ten times, which measured 15 % faster on the lifecycle benchmark. Crash
    // recovery reads at most this much WAL. (The writer replaces this automatic checkpoint
    // with its own, between groups: `writer::Checkpoints`.)
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
        .map_err(open_err)?;
    conn.set_prepared_statement_cache_capacity(64);
    stable_plans(&conn).map_err(open_err)?;
    Ok(conn)
}

/// Plans that do not depend on the values bound to a statement's parameters (SQLite's query
/// planner stability guarantee). Without it, SQLite (built with STAT4) re-prepares a statement
/// whenever a bound value that could change its plan changes, which for the claim (whose
/// `now` changes every call) meant parsing and planning every statement of every claim again:
/// 3 % of the writer's time. Every hot statement is written to seek its index whatever the
/// values (see the EXPLAIN tests, which plan with unknown parameters).
pub(crate) fn stable_plans(conn: &Connection) -> rusqlite::Result<()> {
    conn.set_db_config(
        rusqlite::config::DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG,
        true,
    )
    .map(|_| ())
}

#[async_trait]
impl Store for SqliteStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities::minimal()
    }

    fn write_stats(&self) -> Option<WriteStats> {
        let stats = self.writer.stats();
        Some(WriteStats {
            transactions: stats.transactions,
            requests: stats.requests,
            parked_claims: stats.parked_claims,
        })
    }

    fn notifier_set(&self, notifier: std::sync::Arc<dyn Notifier>) {
        self.writer.set_notifier(notifier);
    }

    async fn store_migrate(&self, p: StoreMigrateParams) -> Result<MigrationReport, StoreError> {
        self.writer
            .write(move |tx| migrate::migrate_in(tx, p.now))
            .await
    }

    async fn job_insert_many(&self, p: JobInsertManyParams) -> Result<Vec<Inserted>, StoreError> {
        self.writer
            .write(move |tx| sql::job_insert_many(tx, p))
            .await
    }

    async fn job_claim_many(&self, p: JobClaimManyParams) -> Result<Vec<Job>, StoreError> {
        let memory = self.memory.clone();
        self.writer
            .write(move |tx| sql::job_claim_many(tx, p, &memory))
            .await
    }

    fn job_claim_park(
        &self,
        p: JobClaimManyParams,
        clock: Arc<dyn rota_core::Clock>,
    ) -> Option<ParkedClaim> {
        let (ticket, parked) = ClaimTicket::new(p, clock);
        self.parking.park(ticket);
        Some(parked)
    }

    async fn lease_extend_many(
        &self,
        p: LeaseExtendManyParams,
    ) -> Result<Vec<Result<Extended, StoreError>>, StoreError> {
        self.writer
            .write(move |tx| sql::lease_extend_many(tx, p))
            .await
    }

    async fn job_complete_many(
        &self,
        p: JobCompleteManyParams,
    ) -> Result<Vec<Result<Job, StoreError>>, StoreError> {
        self.apply_each(p.completions, p.now, Completion::event)
            .await
    }

    async fn job_complete_and_claim(
        &self,
        p: JobCompleteAndClaimParams,
    ) -> Result<CompletedAndClaimed, StoreError> {
        let memory = self.memory.clone();
        // One writer request: the completions and the claim share a transaction and its fsync.
        self.writer
            .write(move |tx| {
                let completions =
                    sql::job_apply_each(tx, p.completions, p.claim.now, Completion::event);
                let claimed = sql::job_claim_nested(tx, p.claim, &memory)?;
                Ok(CompletedAndClaimed {
                    completions,
                    claimed,
                })
            })
            .await
    }

    async fn job_fail_many(
        &self,
        p: JobFailManyParams,
    ) -> Result<Vec<Result<Job, StoreError>>, StoreError> {
        self.apply_each(p.failures, p.now, Failure::event).await
    }

    async fn job_snooze_many(
        &self,
        p: JobSnoozeManyParams,
    ) -> Result<Vec<Result<Job, StoreError>>, StoreError> {
        let limit = p.max_snoozes;
        self.apply_each(p.snoozes, p.now, move |s| s.event(limit))
            .await
    }

    async fn job_checkpoint(&self, p: JobCheckpointParams) -> Result<Job, StoreError> {
        check_checkpoint(&p.checkpoint)?;
        let event = Event::Checkpointed {
            token: p.lease.token,
            checkpoint: p.checkpoint,
        };
        self.writer
            .write(move |tx| sql::job_apply(tx, p.lease.job, event, p.now))
            .await
    }

    async fn job_progress(&self, p: JobProgressParams) -> Result<Job, StoreError> {
        check_progress(&p.progress)?;
        let event = Event::Progressed {
            token: p.lease.token,
            progress: p.progress,
        };
        self.writer
            .write(move |tx| sql::job_apply(tx, p.lease.job, event, p.now))
            .await
    }

    async fn job_cancel_many(
        &self,
        p: JobCancelManyParams,
    ) -> Result<Vec<Result<Job, StoreError>>, StoreError> {
        self.apply_each(p.ids, p.now, |id| (id, Event::CancelRequested))
            .await
    }

    async fn lease_hand_back_many(
        &self,
        p: LeaseHandBackManyParams,
    ) -> Result<Vec<Result<Job, StoreError>>, StoreError> {
        self.apply_each(p.leases, p.now, LeaseRef::hand_back).await
    }

    async fn job_retry_many(
        &self,
        p: JobRetryManyParams,
    ) -> Result<Vec<Result<Job, StoreError>>, StoreError> {
        let now = p.now;
        self.writer
            .write(move |tx| {
                let ids = sql::job_select_ids(tx, &p.selector, JobState::Dead)?;
                Ok(ids
                    .into_iter()
                    .map(|id| sql::job_retry(tx, id, now))
                    .collect())
            })
            .await
    }

    async fn lease_rescue_expired(&self, p: LeaseRescueParams) -> Result<RescueReport, StoreError> {
        self.writer
            .write(move |tx| sql::lease_rescue_expired(tx, p))
            .await
    }

    async fn job_prune(&self, p: JobPruneParams) -> Result<PruneReport, StoreError> {
        self.writer.write(move |tx| sql::job_prune(tx, p)).await
    }

    async fn job_purge(&self, p: JobPurgeParams) -> Result<u64, StoreError> {
        let states = purgeable_states(&p.states);
        if states.is_empty() {
            return Ok(0);
        }
        self.writer
            .write(move |tx| {
                let ids = sql::job_select_ids(tx, &p.selector, JobState::Dead)?;
                sql::job_delete(tx, &ids, &states)
            })
            .await
    }

    async fn job_get(&self, p: JobGetParams) -> Result<Job, StoreError> {
        self.readers
            .read(move |conn| sql::job_get(conn, p.id))
            .await
    }

    async fn job_history(&self, p: JobHistoryParams) -> Result<Vec<StateChange>, StoreError> {
        self.readers
            .read(move |conn| sql::job_history(conn, p.id))
            .await
    }

    async fn job_list(&self, p: JobListParams) -> Result<JobPage, StoreError> {
        let limit = check_page_limit(p.limit)?;
        self.readers
            .read(move |conn| {
                let window = p
                    .scan
                    .map(|n| sql::job_scan_window(conn, p.after, n))
                    .transpose()?;
                let oldest = window.and_then(|w| w.oldest);
                let jobs = sql::job_list(conn, &p, limit + 1, oldest)?;
                Ok(JobPage::within(jobs, limit, window))
            })
            .await
    }

    async fn queue_declare(&self, p: QueueDeclareParams) -> Result<Queue, StoreError> {
        self.writer.write(move |tx| sql::queue_declare(tx, p)).await
    }

    async fn queue_set_paused(&self, p: QueueSetPausedParams) -> Result<Queue, StoreError> {
        self.writer
            .write(move |tx| sql::queue_set_paused(tx, p))
            .await
    }

    async fn queue_list(&self, p: QueueListParams) -> Result<Vec<QueueStats>, StoreError> {
        self.readers
            .read(move |conn| sql::queue_list(conn, p))
            .await
    }

    async fn queue_flow(&self, p: QueueFlowParams) -> Result<QueueFlow, StoreError> {
        self.readers
            .read(move |conn| sql::queue_flow(conn, p))
            .await
    }

    async fn worker_register(&self, p: WorkerRegisterParams) -> Result<Worker, StoreError> {
        self.writer
            .write(move |tx| sql::worker_register(tx, p))
            .await
    }

    async fn worker_list(&self, _p: WorkerListParams) -> Result<Vec<Worker>, StoreError> {
        self.readers.read(sql::worker_list).await
    }

    async fn store_health(&self, _p: StoreHealthParams) -> Result<StoreHealth, StoreError> {
        // Open connections keep working on a file that was deleted or replaced underneath
        // them; the store is gone all the same.
        if !self.path.exists() {
            return Err(StoreError::Unavailable(format!(
                "database file {} no longer exists",
                self.path.display()
            )));
        }
        // Reads can go on where writes cannot (a full disk, a read-only file system).
        if let Some(err) = self.writer.failing() {
            return Err(err);
        }
        let version = self.readers.read(migrate::version).await?;
        Ok(StoreHealth {
            schema_version: version,
            schema_expected: SCHEMA_VERSION,
            database_time: None,
        })
    }

    async fn job_list_running(&self, p: JobListRunningParams) -> Result<Vec<Job>, StoreError> {
        self.readers
            .read(move |conn| sql::job_list_running(conn, p.limit))
            .await
    }

    async fn dead_groups(&self, p: DeadGroupsParams) -> Result<Vec<ErrorGroup>, StoreError> {
        let rows = self
            .readers
            .read(move |conn| sql::dead_rows(conn, p.since, p.latest))
            .await?;
        Ok(group_dead(rows))
    }

    async fn job_counts(&self, _p: JobCountsParams) -> Result<Vec<JobCount>, StoreError> {
        self.readers.read(sql::job_counts).await
    }

    async fn schedule_upsert(&self, p: ScheduleUpsertParams) -> Result<ScheduleRecord, StoreError> {
        check_schedule(&p.schedule, p.now)?;
        self.writer
            .write(move |tx| sql::schedule_upsert(tx, p))
            .await
    }

    async fn schedule_delete(&self, p: ScheduleDeleteParams) -> Result<(), StoreError> {
        self.writer
            .write(move |tx| sql::schedule_delete(tx, &p.name))
            .await
    }

    async fn schedule_list(
        &self,
        _p: ScheduleListParams,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        self.readers.read(sql::schedule_list).await
    }

    async fn schedule_fire(&self, p: ScheduleFireParams) -> Result<ScheduleFired, StoreError> {
        self.writer.write(move |tx| sql::schedule_fire(tx, p)).await
    }

    async fn job_next_due(
        &self,
        p: JobNextDueParams,
    ) -> Result<Option<jiff::Timestamp>, StoreError> {
        let held_back = self.memory.retry_at(&p.queues);
        let due = self
            .readers
            .read(move |conn| sql::job_next_due(conn, &p.queues))
            .await?;
        Ok(due.into_iter().chain(held_back).min())
    }

    async fn leader_attempt_elect(&self, p: LeaderElectParams) -> Result<Leadership, StoreError> {
        self.writer
            .write(move |tx| sql::leader_attempt_elect(tx, p))
            .await
    }

    async fn leader_renew(&self, p: LeaderRenewParams) -> Result<Leadership, StoreError> {
        self.writer.write(move |tx| sql::leader_renew(tx, p)).await
    }

    async fn leader_get(&self, p: LeaderGetParams) -> Result<Option<Leadership>, StoreError> {
        self.readers
            .read(move |conn| sql::leader_get(conn, &p.name, &p.holder))
            .await
    }

    async fn leader_resign(&self, p: LeaderResignParams) -> Result<(), StoreError> {
        self.writer.write(move |tx| sql::leader_resign(tx, p)).await
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rota_core::NewJob;
    use rota_store::*;

    /// Claims do not re-prepare their statements: with values that change every call (`now`),
    /// the statements are parsed and planned once (issue 14: they were re-prepared at every
    /// claim, 3 % of the writer's time).
    #[test]
    fn claims_reuse_their_prepared_statements() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("rota.db");
        let mut conn = super::open_writer_connection(&path, super::Durability::Normal).unwrap();
        crate::migrate::migrate_connection(&mut conn, jiff::Timestamp::UNIX_EPOCH).unwrap();
        let memory = ClaimMemory::default();
        let start = jiff::Timestamp::from_second(1_800_000_000).unwrap();
        let jobs: Vec<NewJob> = (0..500)
            .map(|i| NewJob::new("default", "k", serde_json::json!({ "i": i })))
            .collect();
        let tx = crate::sql::Tx::new(&conn);
        crate::sql::job_insert_many(
            &tx,
            JobInsertManyParams {
                jobs,
                defaults: Arc::default(),
                now: start,
            },
        )
        .unwrap();
        tx.finish().unwrap();
        for i in 0..10 {
            let tx = crate::sql::Tx::new(&conn);
            let claimed = crate::sql::job_claim_many(
                &tx,
                JobClaimManyParams {
                    worker: "w".into(),
                    queues: vec!["default".into()],
                    kinds: Vec::new(),
                    max: 10,
                    lease: std::time::Duration::from_secs(30),
                    now: start + jiff::SignedDuration::from_millis(i),
                },
                &memory,
            )
            .unwrap();
            assert_eq!(claimed.len(), 10);
            tx.finish().unwrap();
        }
        let claim = conn.prepare_cached(crate::sql::CLAIM_SELECT).unwrap();
        assert!(
            claim.get_status(rusqlite::StatementStatus::RePrepare) <= 1,
            "the claim was prepared again {} times",
            claim.get_status(rusqlite::StatementStatus::RePrepare)
        );
    }
}
