//! The storage seam: the [`Store`] trait every Rota backend implements.
//!
//! The trait is batch-shaped (insert many, claim many, complete many), so one round trip
//! and one commit serve many jobs, and dyn-compatible, so the engine and server hold an
//! `Arc<dyn Store>` chosen at run time. Every params struct that reads or writes time carries
//! `now` from the injected [`rota_core::Clock`]; backends never read the clock themselves.
//! Errors are [`StoreError`], classified by [`ErrorKind`]; what differs between backends is
//! reported as [`Capabilities`]. The behaviour every backend must have is specified once, in
//! the [`conformance`] suite (feature `conformance`), which each backend runs unchanged.
//!
//! The rules every backend must apply alike are pure functions here, so a backend does I/O
//! and row mapping only: enqueue planning ([`plan_enqueue`]), the lease of a queue
//! ([`lease_for`]), selector defaults and the purge filter, schedule restarts and validation,
//! dead-job grouping ([`group_dead`]), progress and page-size checks. Every committed job
//! state change is reported once, as a [`JobChange`], to the store's [`Notifier`].

mod capability;
mod change;
mod dead_group;
mod enqueue;
mod error;
mod flow;
mod params;
mod park;
mod rule;
mod store;

#[cfg(feature = "conformance")]
pub mod conformance;

pub use capability::Capabilities;
pub use change::{
    count_deltas, ChangeCause, JobChange, NoNotifier, Notifier, Notifiers, StateChange,
    HISTORY_CHARS,
};
pub use dead_group::{group_dead, DeadRow, RECENT_DEATHS};
pub use enqueue::{
    plan_enqueue, queue_not_declared, retry_blocked_by, unique_key_blocks, CollapseHolder,
    CollapseKey, Planned, PolicyDefaults,
};
pub use error::{ErrorKind, StoreError};
pub use flow::{
    apply_backpressure, blocked_keys, check_backpressure, fetch_per_key, has_backpressure,
    has_claim_limits, key_of, keys_at_limit, merge_plans, plan_claim, queue_waiting,
    waiting_reason, BucketScope, Buckets, ClaimMemory, ClaimPlan, KeyHeads, QueueLoad, QueuePlan,
    Running, LIMIT_POLL, NO_KEY, RETRY_AFTER_DEFAULT,
};
pub use params::*;
pub use park::{ClaimAnswer, ClaimTicket, ParkedClaim};
pub use rule::{
    check_checkpoint, check_claim_queues, check_minimum, check_page_limit, check_progress,
    check_queue_config, check_schedule, claim_allowance, lease_for, purgeable_states,
    queue_config_merged, retention_for, schedule_last_slot, selector_filter, takes_kind,
    CHECKPOINT_MAX_BYTES, LAST_SEEN_RESOLUTION, LEASE_MIN, PAGE_LIMIT_DEFAULT, PAGE_LIMIT_MAX,
    TIMEOUT_MIN,
};
pub use store::Store;
