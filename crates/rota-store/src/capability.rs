//! What differs between backends, reported by the backend rather than guessed by callers.

use std::time::Duration;

/// Properties of a backend that callers may adapt to.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Capabilities {
    /// The backend pushes "jobs are ready" notifications across processes (PostgreSQL
    /// LISTEN/NOTIFY). Without it, only this process's own inserts wake long polls.
    pub listen_notify: bool,
    /// The finest time the backend stores; timestamps are truncated to it.
    pub time_precision: Duration,
    /// Several processes may write to the same database at once.
    pub multi_node: bool,
}

impl Capabilities {
    /// A backend with no optional capability and microsecond timestamps.
    pub fn minimal() -> Self {
        Self {
            listen_notify: false,
            time_precision: Duration::from_micros(1),
            multi_node: false,
        }
    }
}
