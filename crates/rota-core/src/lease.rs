//! A worker's hold on a running job.

use jiff::Timestamp;
use serde::{Deserialize, Serialize};

/// The lease on a running job. `token` is a fencing token: it grows by one on every fetch of
/// the job, and complete, fail, heartbeat, snooze and hand back must present the current one,
/// so a worker whose lease was rescued and given to another can never change the job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    /// The worker holding the job.
    pub worker: String,
    /// The fencing token issued with this lease.
    pub token: u64,
    /// When the lease lapses unless heartbeated.
    pub expires_at: Timestamp,
}

impl Lease {
    /// Whether the lease has lapsed at `now`.
    pub fn is_expired(&self, now: Timestamp) -> bool {
        self.expires_at <= now
    }
}
