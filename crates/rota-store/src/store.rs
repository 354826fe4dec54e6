//! The `Store` trait.

use async_trait::async_trait;
use std::sync::Arc;

use rota_core::Job;

use crate::*;

/// Durable job storage. Implemented by `rota-sqlite` and (later) `rota-postgres`; specified
/// by the conformance suite. Methods are named noun_verb and take one params struct each.
///
/// Batch methods that act on several jobs return one result per item, in input order, so
/// that one stale lease does not fail the rest of a batch; the outer `Result` is for
/// failures of the whole call (database unreachable, invalid request).
#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// What this backend can and cannot do.
    fn capabilities(&self) -> Capabilities;

    /// Transactions committed and write requests served so far, where the backend groups
    /// requests into transactions (their ratio is the commit batch size).
    fn write_stats(&self) -> Option<WriteStats> {
        None
    }

    /// Sets who hears every committed job change ([`JobChange`]); replaces the previous
    /// notifier. A store starts with [`NoNotifier`].
    fn notifier_set(&self, notifier: Arc<dyn Notifier>);

    /// Brings the schema up to this binary's version (applied in one transaction, under a
    /// lock where several nodes may race), or refuses a newer schema. Other methods expect
    /// a current schema; `serve` and `migrate up` call this first.
    async fn store_migrate(&self, p: StoreMigrateParams) -> Result<MigrationReport, StoreError>;

    /// Enqueues jobs, all or nothing: one invalid job or undeclared queue rejects the batch.
    /// A job whose unique key matches an unfinished job returns that job with `duplicate`.
    async fn job_insert_many(&self, p: JobInsertManyParams) -> Result<Vec<Inserted>, StoreError>;

    /// Leases up to `max` due, available jobs of the given queues and kinds, in order of
    /// priority, then run_at, then id; paused queues yield nothing. Concurrent claimers never
    /// receive the same job.
    async fn job_claim_many(&self, p: JobClaimManyParams) -> Result<Vec<Job>, StoreError>;

    /// Parks a claim that found nothing: a backend that can runs it inside the transaction
    /// that next makes a job of its queues ready, and answers it after that commit (see
    /// [`ClaimTicket`]). `None`: this backend cannot; wait for the notifier's wake-up and
    /// claim again. A parked claim must be withdrawn when its fetch stops waiting.
    fn job_claim_park(
        &self,
        p: JobClaimManyParams,
        clock: Arc<dyn rota_core::Clock>,
    ) -> Option<ParkedClaim> {
        let _ = (p, clock);
        None
    }

    /// Extends leases; each answer carries the job's cancel request. Stale tokens get
    /// `LeaseLost`.
    async fn lease_extend_many(
        &self,
        p: LeaseExtendManyParams,
    ) -> Result<Vec<Result<Extended, StoreError>>, StoreError>;

    /// Records successful attempts.
    async fn job_complete_many(
        &self,
        p: JobCompleteManyParams,
    ) -> Result<Vec<Result<Job, StoreError>>, StoreError>;

    /// Records successful attempts, then leases the next jobs: one call for a worker's steady
    /// state. A failed claim does not undo the completions. Backends that can do it in one transaction override this; the default makes
    /// the two calls in turn.
    async fn job_complete_and_claim(
        &self,
        p: JobCompleteAndClaimParams,
    ) -> Result<CompletedAndClaimed, StoreError> {
        let completions = self
            .job_complete_many(JobCompleteManyParams {
                completions: p.completions,
                now: p.claim.now,
            })
            .await?;
        let claimed = self.job_claim_many(p.claim).await;
        Ok(CompletedAndClaimed {
            completions,
            claimed,
        })
    }

    /// Records failed attempts in each job's error history, and moves each job to
    /// `retryable` after its backoff or to `dead`.
    async fn job_fail_many(
        &self,
        p: JobFailManyParams,
    ) -> Result<Vec<Result<Job, StoreError>>, StoreError>;

    /// Reschedules running jobs without using an attempt.
    async fn job_snooze_many(
        &self,
        p: JobSnoozeManyParams,
    ) -> Result<Vec<Result<Job, StoreError>>, StoreError>;

    /// Saves a running job's checkpoint (its lease holder only); the next attempt gets it.
    async fn job_checkpoint(&self, p: JobCheckpointParams) -> Result<Job, StoreError>;

    /// Records a running job's progress.
    async fn job_progress(&self, p: JobProgressParams) -> Result<Job, StoreError>;

    /// Cancels jobs: waiting ones at once, running ones by request (seen at the next
    /// heartbeat, honoured at the worker's next report).
    async fn job_cancel_many(
        &self,
        p: JobCancelManyParams,
    ) -> Result<Vec<Result<Job, StoreError>>, StoreError>;

    /// Gives leases back unrun (graceful shutdown): the jobs become available again without
    /// using an attempt.
    async fn lease_hand_back_many(
        &self,
        p: LeaseHandBackManyParams,
    ) -> Result<Vec<Result<Job, StoreError>>, StoreError>;

    /// Moves dead (or cancelled) jobs back to `available`, keeping their history.
    async fn job_retry_many(
        &self,
        p: JobRetryManyParams,
    ) -> Result<Vec<Result<Job, StoreError>>, StoreError>;

    /// Returns expired leases to retry; each counts as a failed attempt.
    async fn lease_rescue_expired(&self, p: LeaseRescueParams) -> Result<RescueReport, StoreError>;

    /// Deletes completed and cancelled jobs past their retention; dead ones only when a dead
    /// retention is set.
    async fn job_prune(&self, p: JobPruneParams) -> Result<PruneReport, StoreError>;

    /// Deletes the selected jobs that are in one of `states` (final states only), and says
    /// how many. Dead jobs leave only this way or by an explicit dead retention.
    async fn job_purge(&self, p: JobPurgeParams) -> Result<u64, StoreError>;

    /// One job.
    async fn job_get(&self, p: JobGetParams) -> Result<Job, StoreError>;

    /// A job's latest state changes, oldest first (the last [`crate::HISTORY_CHARS`] of its
    /// log): every change a transition made but fetches and completions (which the job's
    /// `attempted_at` and `finished_at` record), written in the same write as the change
    /// (promotions of due jobs, made in bulk, are not among them).
    async fn job_history(&self, p: JobHistoryParams) -> Result<Vec<StateChange>, StoreError>;

    /// Jobs matching a filter, newest first, a page at a time.
    async fn job_list(&self, p: JobListParams) -> Result<JobPage, StoreError>;

    /// Declares a queue, or updates its settings.
    async fn queue_declare(&self, p: QueueDeclareParams) -> Result<Queue, StoreError>;

    /// Pauses or resumes a queue.
    async fn queue_set_paused(&self, p: QueueSetPausedParams) -> Result<Queue, StoreError>;

    /// Every declared queue with its job counts per state and the age of its oldest ready
    /// job.
    async fn queue_list(&self, p: QueueListParams) -> Result<Vec<QueueStats>, StoreError>;

    /// A queue's flow-control state: its settings, and for a queue with claim-time limits its
    /// running jobs (in all, per key at its limit), rate buckets, ready jobs held back by keys.
    /// Cheap: seeks and the running set only.
    async fn queue_flow(&self, p: QueueFlowParams) -> Result<QueueFlow, StoreError>;

    /// Records a worker (or refreshes it).
    async fn worker_register(&self, p: WorkerRegisterParams) -> Result<Worker, StoreError>;

    /// Every known worker with when it was last seen.
    async fn worker_list(&self, p: WorkerListParams) -> Result<Vec<Worker>, StoreError>;

    /// Checks the database is reachable and reports its schema version.
    async fn store_health(&self, p: StoreHealthParams) -> Result<StoreHealth, StoreError>;

    /// Running jobs, soonest lease expiry first (cheap: running jobs are indexed).
    async fn job_list_running(&self, p: JobListRunningParams) -> Result<Vec<Job>, StoreError>;

    /// Dead jobs that died at or after `since`, grouped by their last error's fingerprint,
    /// largest group first.
    async fn dead_groups(&self, p: DeadGroupsParams) -> Result<Vec<ErrorGroup>, StoreError>;

    /// Job counts per queue, kind and state; cheap (no scan of the jobs).
    async fn job_counts(&self, p: JobCountsParams) -> Result<Vec<JobCount>, StoreError>;

    /// Creates or updates a schedule. A changed expression or time zone restarts its slot
    /// count at `now`, so the old expression's missed slots never fire.
    async fn schedule_upsert(&self, p: ScheduleUpsertParams) -> Result<ScheduleRecord, StoreError>;

    /// Removes a schedule; the jobs it enqueued stay.
    async fn schedule_delete(&self, p: ScheduleDeleteParams) -> Result<(), StoreError>;

    /// Every schedule with its bookkeeping, by name.
    async fn schedule_list(&self, p: ScheduleListParams)
        -> Result<Vec<ScheduleRecord>, StoreError>;

    /// Enqueues a schedule's planned slots and advances its `last_slot` in one transaction,
    /// unless another scheduler advanced it first. With the per-slot unique keys this makes
    /// every slot fire at most once, however many schedulers run.
    async fn schedule_fire(&self, p: ScheduleFireParams) -> Result<ScheduleFired, StoreError>;

    /// When a waiting fetch on these queues should look again: the earliest `run_at` of a
    /// scheduled or retryable job, or the time this node's last claim of a queue whose limits
    /// held ready jobs back said to try again (a rate's next token, or [`crate::LIMIT_POLL`]).
    async fn job_next_due(
        &self,
        p: JobNextDueParams,
    ) -> Result<Option<jiff::Timestamp>, StoreError>;

    /// Becomes the leader of `p.name` if nobody holds it or the holder's leadership expired
    /// (or renews it if `p.holder` already holds it); says who leads either way. A lease row
    /// with an expiry, not a database lock, so it works through connection poolers.
    async fn leader_attempt_elect(&self, p: LeaderElectParams) -> Result<Leadership, StoreError>;

    /// Extends `p.holder`'s leadership; `is_leader` is false (and nothing changes) when it
    /// expired and someone else took over.
    async fn leader_renew(&self, p: LeaderRenewParams) -> Result<Leadership, StoreError>;

    /// Who holds the leadership of `p.name`, if anyone (an expired holder is reported with
    /// its past expiry; `is_leader` says whether it is `p.holder`). Changes nothing.
    async fn leader_get(&self, p: LeaderGetParams) -> Result<Option<Leadership>, StoreError>;

    /// Ends `p.holder`'s leadership at once, so another node can take over without waiting
    /// for the expiry. Does nothing when `p.holder` does not lead.
    async fn leader_resign(&self, p: LeaderResignParams) -> Result<(), StoreError>;
}
