//! Rota's embedded backend: one SQLite file, no set-up.
//!
//! [`SqliteStore`] implements [`rota_store::Store`]. Writes go to one writer thread
//! ([`writer`]) that folds concurrent requests into one transaction (group commit); reads
//! use a few reader connections ([`reader`]). The database runs in WAL mode with
//! `synchronous=FULL` unless [`Durability::Normal`] is chosen. Migrations ([`migrate`]) are
//! embedded and applied on open; a database written by a newer Rota is refused. All SQL is
//! in [`sql`].

pub mod migrate;
pub mod reader;
pub mod sql;
pub mod writer;

use std::path::{Path, PathBuf};
use std::time::Duration;

use async_trait::async_trait;
use rota_core::{Clock, Event, Job, JobId, JobState, SystemClock};
use rota_store::*;
use rusqlite::{Connection, OpenFlags};

pub use migrate::{MigrationReport, SCHEMA_VERSION};
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
    migration: MigrationReport,
    path: PathBuf,
}

impl SqliteStore {
    /// Opens (creating if needed) and migrates the database.
    pub fn open(options: SqliteOptions) -> Result<Self, StoreError> {
        let mut conn = open_writer_connection(&options.path, options.durability)?;
        let migration = migrate::migrate(&mut conn, SystemClock.now())?;
        Ok(Self {
            writer: writer::Writer::start(conn),
            readers: reader::Readers::new(options.path.clone(), options.readers),
            migration,
            path: options.path,
        })
    }

    /// What opening did to the schema.
    pub fn migration(&self) -> MigrationReport {
        self.migration
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
            .write(move |conn| {
                Ok(items
                    .into_iter()
                    .map(|item| {
                        let (id, event) = to_event(item);
                        sql::job_apply(conn, id, event, now)
                    })
                    .collect())
            })
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
    // Checkpoint every ~40 MiB of WAL instead of SQLite's 4 MiB: pages rewritten often (index
    // roots, the newest leaves) are copied into the database once per checkpoint rather than
    // ten times, which measured 15 % faster on the lifecycle benchmark. Crash recovery reads
    // at most this much WAL.
    conn.pragma_update(None, "wal_autocheckpoint", WAL_AUTOCHECKPOINT_PAGES)
        .map_err(open_err)?;
    conn.set_prepared_statement_cache_capacity(64);
    Ok(conn)
}

#[async_trait]
impl Store for SqliteStore {
    fn capabilities(&self) -> Capabilities {
        Capabilities::minimal()
    }

    fn write_stats(&self) -> Option<(u64, u64)> {
        let stats = self.writer.stats();
        Some((stats.transactions, stats.requests))
    }

    async fn job_insert_many(&self, p: JobInsertManyParams) -> Result<Vec<Inserted>, StoreError> {
        self.writer
            .write(move |conn| sql::job_insert_many(conn, p))
            .await
    }

    async fn job_claim_many(&self, p: JobClaimManyParams) -> Result<Vec<Job>, StoreError> {
        self.writer
            .write(move |conn| sql::job_claim_many(conn, p))
            .await
    }

    async fn lease_extend_many(
        &self,
        p: LeaseExtendManyParams,
    ) -> Result<Vec<Result<Extended, StoreError>>, StoreError> {
        self.writer
            .write(move |conn| sql::lease_extend_many(conn, p))
            .await
    }

    async fn job_complete_many(
        &self,
        p: JobCompleteManyParams,
    ) -> Result<Vec<Result<Job, StoreError>>, StoreError> {
        self.apply_each(p.completions, p.now, |c| {
            (
                c.lease.job,
                Event::Completed {
                    token: c.lease.token,
                    result: c.result,
                },
            )
        })
        .await
    }

    async fn job_fail_many(
        &self,
        p: JobFailManyParams,
    ) -> Result<Vec<Result<Job, StoreError>>, StoreError> {
        self.apply_each(p.failures, p.now, |f| {
            (
                f.lease.job,
                Event::Failed {
                    token: f.lease.token,
                    error: f.error,
                    discard: f.discard,
                },
            )
        })
        .await
    }

    async fn job_snooze(&self, p: JobSnoozeParams) -> Result<Job, StoreError> {
        let event = Event::Snoozed {
            token: p.lease.token,
            delay: p.delay,
        };
        self.writer
            .write(move |conn| sql::job_apply(conn, p.lease.job, event, p.now))
            .await
    }

    async fn job_progress(&self, p: JobProgressParams) -> Result<Job, StoreError> {
        if p.progress.percent > 100 {
            return Err(rota_core::ValidationError::new(
                "progress.percent",
                format!("must be between 0 and 100, got {}", p.progress.percent),
            )
            .into());
        }
        let event = Event::Progressed {
            token: p.lease.token,
            progress: p.progress,
        };
        self.writer
            .write(move |conn| sql::job_apply(conn, p.lease.job, event, p.now))
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
        self.apply_each(p.leases, p.now, |l| {
            (l.job, Event::HandedBack { token: l.token })
        })
        .await
    }

    async fn job_retry_many(
        &self,
        p: JobRetryManyParams,
    ) -> Result<Vec<Result<Job, StoreError>>, StoreError> {
        let now = p.now;
        self.writer
            .write(move |conn| {
                let ids = sql::job_select_ids(conn, p.selector, JobState::Dead)?;
                Ok(ids
                    .into_iter()
                    .map(|id| sql::job_apply(conn, id, Event::Retried, now))
                    .collect())
            })
            .await
    }

    async fn lease_rescue_expired(&self, p: LeaseRescueParams) -> Result<RescueReport, StoreError> {
        self.writer
            .write(move |conn| sql::lease_rescue_expired(conn, p))
            .await
    }

    async fn job_prune(&self, p: JobPruneParams) -> Result<PruneReport, StoreError> {
        self.writer.write(move |conn| sql::job_prune(conn, p)).await
    }

    async fn job_purge(&self, p: JobPurgeParams) -> Result<u64, StoreError> {
        let states: Vec<JobState> = p.states.into_iter().filter(|s| s.is_final()).collect();
        if states.is_empty() {
            return Ok(0);
        }
        self.writer
            .write(move |conn| {
                let ids = sql::job_select_ids(conn, p.selector, JobState::Dead)?;
                sql::job_delete(conn, &ids, &states)
            })
            .await
    }

    async fn job_get(&self, id: JobId) -> Result<Job, StoreError> {
        self.readers.read(move |conn| sql::job_get(conn, id)).await
    }

    async fn job_list(&self, p: JobListParams) -> Result<JobPage, StoreError> {
        let limit = p.limit.clamp(1, 1000);
        self.readers
            .read(move |conn| {
                // One extra row tells whether another page exists.
                let mut jobs = sql::job_list(conn, &p, limit + 1)?;
                let next = (jobs.len() > limit).then(|| {
                    jobs.truncate(limit);
                    jobs[limit - 1].id
                });
                Ok(JobPage { jobs, next })
            })
            .await
    }

    async fn queue_declare(&self, p: QueueDeclareParams) -> Result<Queue, StoreError> {
        self.writer
            .write(move |conn| sql::queue_declare(conn, p))
            .await
    }

    async fn queue_set_paused(&self, p: QueueSetPausedParams) -> Result<Queue, StoreError> {
        self.writer
            .write(move |conn| sql::queue_set_paused(conn, p))
            .await
    }

    async fn queue_list(&self, p: QueueListParams) -> Result<Vec<QueueStats>, StoreError> {
        self.readers
            .read(move |conn| sql::queue_list(conn, p))
            .await
    }

    async fn worker_register(&self, p: WorkerRegisterParams) -> Result<Worker, StoreError> {
        self.writer
            .write(move |conn| sql::worker_register(conn, p))
            .await
    }

    async fn worker_list(&self) -> Result<Vec<Worker>, StoreError> {
        self.readers.read(sql::worker_list).await
    }

    async fn store_health(&self) -> Result<StoreHealth, StoreError> {
        let path = self.path.clone();
        let version = tokio::task::spawn_blocking(move || migrate::current_version(&path))
            .await
            .map_err(|e| StoreError::backend("checking the database", e))??;
        Ok(StoreHealth {
            schema_version: version,
            schema_expected: SCHEMA_VERSION,
        })
    }

    async fn job_list_running(&self, limit: usize) -> Result<Vec<Job>, StoreError> {
        self.readers
            .read(move |conn| sql::job_list_running(conn, limit))
            .await
    }

    async fn dead_groups(
        &self,
        since: Option<jiff::Timestamp>,
    ) -> Result<Vec<ErrorGroup>, StoreError> {
        self.readers
            .read(move |conn| sql::dead_groups(conn, since))
            .await
    }

    async fn job_counts(&self) -> Result<Vec<JobCount>, StoreError> {
        self.readers.read(sql::job_counts).await
    }

    async fn schedule_upsert(&self, p: ScheduleUpsertParams) -> Result<ScheduleRecord, StoreError> {
        p.schedule.validate()?;
        self.writer
            .write(move |conn| sql::schedule_upsert(conn, p))
            .await
    }

    async fn schedule_delete(&self, name: &str) -> Result<(), StoreError> {
        let name = name.to_owned();
        self.writer
            .write(move |conn| sql::schedule_delete(conn, &name))
            .await
    }

    async fn schedule_list(&self) -> Result<Vec<ScheduleRecord>, StoreError> {
        self.readers.read(sql::schedule_list).await
    }

    async fn schedule_fire(&self, p: ScheduleFireParams) -> Result<ScheduleFired, StoreError> {
        self.writer
            .write(move |conn| sql::schedule_fire(conn, p))
            .await
    }

    async fn job_next_due(
        &self,
        queues: Vec<String>,
    ) -> Result<Option<jiff::Timestamp>, StoreError> {
        self.readers
            .read(move |conn| sql::job_next_due(conn, &queues))
            .await
    }
}
