//! Rota on PostgreSQL: many `rota serve` nodes on one database.
//!
//! [`PostgresStore`] implements [`rota_store::Store`] with tokio-postgres and a
//! deadpool-postgres pool. Its tables live in the schema `rota`, so they sit beside an
//! application's own tables. Each write request is one transaction: rows are locked
//! (`FOR UPDATE`, or `FOR UPDATE SKIP LOCKED` for claims), transitioned by the same
//! `rota_core::transition` as on SQLite, and written back a batch per statement; its job
//! changes become job-count deltas inside the transaction, and after the commit reach this
//! node's notifier and, as a NOTIFY sent by the broadcaster, the other nodes
//! ([`notification`]). Migrations are
//! embedded and applied by `store_migrate` under an advisory lock ([`migrate`]). All SQL is
//! in the private `sql` module, one file per area; the rules come from `rota-store`.
//!
//! [`PostgresStore::enqueue_in`] enqueues inside a caller's own transaction, so a job exists
//! if and only if the caller commits.

mod broadcast;
mod connect;
mod listen;
pub mod migrate;
mod notification;
mod sql;

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use async_trait::async_trait;
use deadpool_postgres::{Object, Pool};
use rota_core::{Event, Job, JobId, JobState};
use rota_store::*;

pub use connect::{ConnectError, PostgresOptions};
pub use migrate::SCHEMA_VERSION;

use sql::{is_retryable, Begin, Db, QueueCache, Tx};

/// Who hears committed job changes; shared by the store, its writes and its listener.
pub(crate) type SharedNotifier = Arc<RwLock<Arc<dyn Notifier>>>;

/// What a write or read function of a connection returns.
type BoxedFuture<'t, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 't>>;

/// A pooled connection lent to one write. If the write is abandoned halfway (its request was
/// cancelled) after BEGIN went out, the connection is rolled back before it returns to the
/// pool, never handed to the next request inside a transaction.
struct Session {
    client: Option<Object>,
    began: AtomicBool,
    done: bool,
}

impl Session {
    async fn rollback(&mut self) {
        if self.began.load(Ordering::Acquire) {
            if let Some(client) = &self.client {
                if client.batch_execute("ROLLBACK").await.is_err() {
                    // Broken: keep it out of the pool.
                    self.client.take().map(Object::take);
                }
            }
        }
        self.done = true;
    }
}

impl Drop for Session {
    fn drop(&mut self) {
        if self.done || !self.began.load(Ordering::Acquire) {
            return;
        }
        let Some(client) = self.client.take() else {
            return;
        };
        match tokio::runtime::Handle::try_current() {
            Ok(runtime) => {
                runtime.spawn(async move {
                    if client.batch_execute("ROLLBACK").await.is_err() {
                        drop(Object::take(client));
                    }
                });
            }
            Err(_) => {
                drop(Object::take(client));
            }
        }
    }
}

/// How often job-count deltas are folded into the counts.
const FOLD_EVERY: Duration = Duration::from_secs(1);

/// Times a write is tried when it deadlocks with another.
const WRITE_TRIES: usize = 5;

/// The PostgreSQL store.
pub struct PostgresStore {
    pool: Pool,
    notifier: SharedNotifier,
    /// This node's name in the notifications it sends.
    origin: Arc<str>,
    /// Queues as this node last read them.
    queues: QueueCache,
    /// Each queue's round-robin cursor and held-back jobs on this node.
    memory: Arc<ClaimMemory>,
    /// Sends this node's notifications after its commits.
    broadcaster: broadcast::Broadcaster,
    /// Background tasks (the listener, the count fold), stopped when the store drops.
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for PostgresStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PostgresStore")
            .field("origin", &self.origin)
            .finish_non_exhaustive()
    }
}

impl Drop for PostgresStore {
    fn drop(&mut self) {
        for task in &self.tasks {
            task.abort();
        }
    }
}

impl PostgresStore {
    /// Connects (creating the database first when `options.create_database` says so and it
    /// is missing), without touching the schema: call `store_migrate` before anything else.
    /// Needs a Tokio runtime: it starts the LISTEN connection and the count fold.
    pub async fn open(options: PostgresOptions) -> Result<Self, ConnectError> {
        let pool = connect::pool(&options).await?;
        let notifier: SharedNotifier = Arc::new(RwLock::new(Arc::new(NoNotifier)));
        let origin: Arc<str> = format!("{:016x}", rand_u64()).into();
        let (listening, listened) = tokio::sync::oneshot::channel();
        let listener = tokio::spawn(listen::run(
            options.pg_config()?,
            origin.clone(),
            notifier.clone(),
            listening,
        ));
        // Changes other nodes commit from here on are heard (if the LISTEN connection is
        // slow to come, it keeps trying; the safety poll covers the gap).
        let _ = tokio::time::timeout(options.connect_timeout, listened).await;
        let (broadcaster, sending) = broadcast::Broadcaster::new(options.pg_config()?);
        let sender = tokio::spawn(sending);
        let fold_pool = pool.clone();
        let fold = tokio::spawn(async move {
            let mut every = tokio::time::interval(FOLD_EVERY);
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                if let Err(err) = fold_counts(&fold_pool).await {
                    tracing::debug!(error = %err, "folding job counts failed; trying again");
                }
            }
        });
        Ok(Self {
            pool,
            notifier,
            origin,
            queues: QueueCache::default(),
            memory: Arc::default(),
            broadcaster,
            tasks: vec![listener, fold, sender],
        })
    }

    /// Opens and migrates the database (for tests, benchmarks and embedding).
    pub async fn open_migrated(options: PostgresOptions) -> Result<Self, StoreError> {
        let store = Self::open(options)
            .await
            .map_err(|e| StoreError::Unavailable(e.to_string()))?;
        store
            .store_migrate(StoreMigrateParams {
                now: jiff::Timestamp::now(),
            })
            .await?;
        Ok(store)
    }

    /// Brings the database to schema `version` exactly, as an older Rota would have left it
    /// (for tests of upgrades).
    pub async fn migrate_to_version(&self, version: i64) -> Result<MigrationReport, StoreError> {
        let mut client = self.client().await?;
        migrate::migrate_to(&mut client, jiff::Timestamp::UNIX_EPOCH, version).await
    }

    /// Enqueues jobs inside the caller's own transaction: they exist if and only if it
    /// commits, and other nodes (and this one) hear of them when it does. The caller's
    /// connection must reach the same database, at the current schema.
    pub async fn enqueue_in(
        tx: &tokio_postgres::Transaction<'_>,
        p: JobInsertManyParams,
    ) -> Result<Vec<Inserted>, StoreError> {
        // No origin: every node, this one included, hears the notification at commit.
        let tx = Tx::new(Db::new(tx.client(), None), Begin::Open, "", None);
        let inserted = sql::job_insert_many(&tx, p).await?;
        tx.finish().await?;
        Ok(inserted)
    }

    async fn client(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(connect::pool_error)
    }

    /// Runs `f` in a transaction and commits it; tells the notifier after the commit. A
    /// deadlock or serialization failure runs it again.
    async fn write<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        T: Send,
        F: for<'t> Fn(&'t Tx<'t>) -> BoxedFuture<'t, T> + Send + Sync,
    {
        let mut tries = 0;
        loop {
            tries += 1;
            match self.write_once(&f).await {
                Err(err) if tries < WRITE_TRIES && is_retryable(&err) => continue,
                result => return result,
            }
        }
    }

    async fn write_once<T, F>(&self, f: &F) -> Result<T, StoreError>
    where
        T: Send,
        F: for<'t> Fn(&'t Tx<'t>) -> BoxedFuture<'t, T> + Send + Sync,
    {
        let mut session = Session {
            client: Some(self.client().await?),
            began: AtomicBool::new(false),
            done: false,
        };
        let result = {
            let client = session.client.as_ref().expect("session has its connection");
            let tx = Tx::new(
                Db::new(client, Some(&client.statement_cache)),
                Begin::Pending(&session.began),
                &self.origin,
                Some(&self.queues),
            );
            match f(&tx).await {
                Ok(out) => tx.finish().await.map(|changes| (out, changes)),
                Err(err) => Err(err),
            }
        };
        let (out, changes) = match result {
            Ok(done) => {
                session.done = true;
                done
            }
            Err(err) => {
                session.rollback().await;
                return Err(err);
            }
        };
        if !changes.is_empty() {
            self.broadcaster
                .send(notification::encode(&self.origin, &changes));
            let notifier = self.notifier.read().expect("notifier lock").clone();
            notifier.notify(&changes);
        }
        Ok(out)
    }

    /// Runs a read on a pooled connection.
    async fn read<T, F>(&self, f: F) -> Result<T, StoreError>
    where
        F: for<'c> FnOnce(&'c Db<'c>) -> BoxedFuture<'c, T>,
    {
        let client = self.client().await?;
        let db = Db::new(&client, Some(&client.statement_cache));
        f(&db).await
    }

    async fn apply_each<I: Clone + Send + Sync>(
        &self,
        items: Vec<I>,
        now: jiff::Timestamp,
        to_event: impl Fn(I) -> (JobId, Event) + Send + Sync,
    ) -> Result<Vec<Result<Job, StoreError>>, StoreError> {
        let to_event = &to_event;
        let items = &items;
        self.write(move |tx| {
            let events = items.iter().cloned().map(to_event).collect();
            Box::pin(sql::job_apply_many(tx, events, now))
        })
        .await
    }
}

async fn fold_counts(pool: &Pool) -> Result<u64, StoreError> {
    let client = pool.get().await.map_err(connect::pool_error)?;
    sql::job_counts_fold(&Db::new(&client, Some(&client.statement_cache))).await
}

/// A random number for naming this node in notifications.
fn rand_u64() -> u64 {
    // A v7 id's last 8 bytes are random.
    let id = JobId::new(jiff::Timestamp::now());
    u64::from_le_bytes(id.as_bytes()[8..].try_into().expect("8 bytes"))
}

#[async_trait]
impl Store for PostgresStore {
    fn capabilities(&self) -> Capabilities {
        let mut c = Capabilities::minimal();
        c.listen_notify = true;
        c.multi_node = true;
        c
    }

    fn notifier_set(&self, notifier: Arc<dyn Notifier>) {
        *self.notifier.write().expect("notifier lock") = notifier;
    }

    async fn store_migrate(&self, p: StoreMigrateParams) -> Result<MigrationReport, StoreError> {
        let mut client = self.client().await?;
        migrate::migrate_to(&mut client, p.now, SCHEMA_VERSION).await
    }

    async fn job_insert_many(&self, p: JobInsertManyParams) -> Result<Vec<Inserted>, StoreError> {
        let p = &p;
        self.write(move |tx| Box::pin(sql::job_insert_many(tx, p.clone())))
            .await
    }

    async fn job_claim_many(&self, p: JobClaimManyParams) -> Result<Vec<Job>, StoreError> {
        let p = &p;
        let memory = &self.memory;
        self.write(move |tx| {
            let (p, memory) = (p.clone(), memory.clone());
            Box::pin(async move { sql::job_claim_many(tx, p, &memory).await })
        })
        .await
    }

    async fn lease_extend_many(
        &self,
        p: LeaseExtendManyParams,
    ) -> Result<Vec<Result<Extended, StoreError>>, StoreError> {
        let p = &p;
        self.write(move |tx| Box::pin(sql::lease_extend_many(tx, p.clone())))
            .await
    }

    async fn job_complete_many(
        &self,
        p: JobCompleteManyParams,
    ) -> Result<Vec<Result<Job, StoreError>>, StoreError> {
        self.apply_each(p.completions, p.now, Completion::event)
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
        one(self
            .apply_each(vec![event], p.now, |e| (p.lease.job, e))
            .await)
    }

    async fn job_progress(&self, p: JobProgressParams) -> Result<Job, StoreError> {
        check_progress(&p.progress)?;
        let event = Event::Progressed {
            token: p.lease.token,
            progress: p.progress,
        };
        one(self
            .apply_each(vec![event], p.now, |e| (p.lease.job, e))
            .await)
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
        let p = &p;
        self.write(move |tx| {
            let p = p.clone();
            Box::pin(async move {
                let ids = sql::job_select_ids(tx, &p.selector, JobState::Dead).await?;
                sql::job_retry_many(tx, ids, p.now).await
            })
        })
        .await
    }

    async fn lease_rescue_expired(&self, p: LeaseRescueParams) -> Result<RescueReport, StoreError> {
        let p = &p;
        self.write(move |tx| Box::pin(sql::lease_rescue_expired(tx, p.clone())))
            .await
    }

    async fn job_prune(&self, p: JobPruneParams) -> Result<PruneReport, StoreError> {
        let p = &p;
        self.write(move |tx| Box::pin(sql::job_prune(tx, p.clone())))
            .await
    }

    async fn job_purge(&self, p: JobPurgeParams) -> Result<u64, StoreError> {
        let states = purgeable_states(&p.states);
        if states.is_empty() {
            return Ok(0);
        }
        let (p, states) = (&p, &states);
        self.write(move |tx| {
            let (p, states) = (p.clone(), states.clone());
            Box::pin(async move {
                let ids = sql::job_select_ids(tx, &p.selector, JobState::Dead).await?;
                sql::job_delete(tx, &ids, &states).await
            })
        })
        .await
    }

    async fn job_get(&self, p: JobGetParams) -> Result<Job, StoreError> {
        self.read(move |db| Box::pin(sql::job_get(db, p.id))).await
    }

    async fn job_history(&self, p: JobHistoryParams) -> Result<Vec<StateChange>, StoreError> {
        self.read(move |db| Box::pin(sql::job_history(db, p.id)))
            .await
    }

    async fn job_list(&self, p: JobListParams) -> Result<JobPage, StoreError> {
        let limit = check_page_limit(p.limit)?;
        self.read(move |db| {
            Box::pin(async move {
                let jobs = sql::job_list(db, &p, limit + 1).await?;
                // Where a bounded scan stopped matters only when it did not fill the page.
                let window = match p.scan {
                    Some(n) if jobs.len() <= limit => {
                        Some(sql::job_scan_window(db, p.after, n).await?)
                    }
                    _ => None,
                };
                Ok(JobPage::within(jobs, limit, window))
            })
        })
        .await
    }

    async fn queue_declare(&self, p: QueueDeclareParams) -> Result<Queue, StoreError> {
        let p = &p;
        let result = self
            .write(move |tx| Box::pin(sql::queue_declare(tx, p.clone())))
            .await;
        self.queues.forget(&p.name);
        result
    }

    async fn queue_set_paused(&self, p: QueueSetPausedParams) -> Result<Queue, StoreError> {
        let p = &p;
        let result = self
            .write(move |tx| Box::pin(sql::queue_set_paused(tx, p.clone())))
            .await;
        self.queues.forget(&p.name);
        result
    }

    async fn queue_list(&self, p: QueueListParams) -> Result<Vec<QueueStats>, StoreError> {
        self.read(move |db| Box::pin(sql::queue_list(db, p))).await
    }

    async fn queue_flow(&self, p: QueueFlowParams) -> Result<QueueFlow, StoreError> {
        self.read(move |db| Box::pin(sql::queue_flow(db, p))).await
    }

    async fn worker_register(&self, p: WorkerRegisterParams) -> Result<Worker, StoreError> {
        let p = &p;
        self.write(move |tx| Box::pin(sql::worker_register(tx, p.clone())))
            .await
    }

    async fn worker_list(&self, _p: WorkerListParams) -> Result<Vec<Worker>, StoreError> {
        self.read(|db| Box::pin(sql::worker_list(db))).await
    }

    async fn store_health(&self, _p: StoreHealthParams) -> Result<StoreHealth, StoreError> {
        let (version, database_time) = self
            .read(|db| {
                Box::pin(
                    async move { Ok((migrate::version(db).await?, sql::database_time(db).await?)) },
                )
            })
            .await?;
        Ok(StoreHealth {
            schema_version: version,
            schema_expected: SCHEMA_VERSION,
            database_time: Some(database_time),
        })
    }

    async fn job_list_running(&self, p: JobListRunningParams) -> Result<Vec<Job>, StoreError> {
        self.read(move |db| Box::pin(sql::job_list_running(db, p.limit)))
            .await
    }

    async fn dead_groups(&self, p: DeadGroupsParams) -> Result<Vec<ErrorGroup>, StoreError> {
        let rows = self
            .read(move |db| Box::pin(sql::dead_rows(db, p.since, p.latest)))
            .await?;
        Ok(group_dead(rows))
    }

    async fn job_counts(&self, _p: JobCountsParams) -> Result<Vec<JobCount>, StoreError> {
        self.read(|db| Box::pin(sql::job_counts(db))).await
    }

    async fn schedule_upsert(&self, p: ScheduleUpsertParams) -> Result<ScheduleRecord, StoreError> {
        check_schedule(&p.schedule, p.now)?;
        let p = &p;
        self.write(move |tx| Box::pin(sql::schedule_upsert(tx, p.clone())))
            .await
    }

    async fn schedule_delete(&self, p: ScheduleDeleteParams) -> Result<(), StoreError> {
        let name = &p.name;
        self.write(move |tx| {
            let name = name.clone();
            Box::pin(async move { sql::schedule_delete(tx, &name).await })
        })
        .await
    }

    async fn schedule_list(
        &self,
        _p: ScheduleListParams,
    ) -> Result<Vec<ScheduleRecord>, StoreError> {
        self.read(|db| Box::pin(sql::schedule_list(db))).await
    }

    async fn schedule_fire(&self, p: ScheduleFireParams) -> Result<ScheduleFired, StoreError> {
        let p = &p;
        self.write(move |tx| Box::pin(sql::schedule_fire(tx, p.clone())))
            .await
    }

    async fn job_next_due(
        &self,
        p: JobNextDueParams,
    ) -> Result<Option<jiff::Timestamp>, StoreError> {
        let held_back = self.memory.retry_at(&p.queues);
        let due = self
            .read(move |db| Box::pin(async move { sql::job_next_due(db, &p.queues).await }))
            .await?;
        Ok(due.into_iter().chain(held_back).min())
    }

    async fn leader_attempt_elect(&self, p: LeaderElectParams) -> Result<Leadership, StoreError> {
        let p = &p;
        self.write(move |tx| Box::pin(sql::leader_attempt_elect(tx, p.clone())))
            .await
    }

    async fn leader_renew(&self, p: LeaderRenewParams) -> Result<Leadership, StoreError> {
        let p = &p;
        self.write(move |tx| Box::pin(sql::leader_renew(tx, p.clone())))
            .await
    }

    async fn leader_get(&self, p: LeaderGetParams) -> Result<Option<Leadership>, StoreError> {
        self.read(move |db| Box::pin(async move { sql::leader_get(db, &p.name, &p.holder).await }))
            .await
    }

    async fn leader_resign(&self, p: LeaderResignParams) -> Result<(), StoreError> {
        let p = &p;
        self.write(move |tx| Box::pin(sql::leader_resign(tx, p.clone())))
            .await
    }
}

/// The one answer of a batch of one.
fn one(results: Result<Vec<Result<Job, StoreError>>, StoreError>) -> Result<Job, StoreError> {
    results?.pop().expect("a batch of one has one answer")
}
