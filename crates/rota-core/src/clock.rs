//! Where "now" comes from: injected everywhere so that backoff, leases and schedules are
//! tested by moving a [`ManualClock`], never by sleeping.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use jiff::Timestamp;

/// A source of the current time.
pub trait Clock: Send + Sync + std::fmt::Debug {
    /// The current instant, truncated to microseconds (the precision every backend stores).
    fn now(&self) -> Timestamp;
}

/// The wall clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        truncate_to_micros(Timestamp::now())
    }
}

/// A clock that only moves when a test moves it. Clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock {
    now: Arc<Mutex<Timestamp>>,
}

impl ManualClock {
    /// A clock stopped at `start` (truncated to microseconds).
    pub fn new(start: Timestamp) -> Self {
        Self {
            now: Arc::new(Mutex::new(truncate_to_micros(start))),
        }
    }

    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        let mut now = self.now.lock().expect("clock mutex poisoned");
        *now = crate::add_duration(*now, d);
    }

    /// Sets the clock to `at` (which may be earlier: clocks do go backwards).
    pub fn set(&self, at: Timestamp) {
        *self.now.lock().expect("clock mutex poisoned") = truncate_to_micros(at);
    }
}

impl Default for ManualClock {
    /// A clock stopped at 2026-01-01T00:00:00Z.
    fn default() -> Self {
        Self::new(Timestamp::from_second(1_767_225_600).expect("valid constant"))
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        *self.now.lock().expect("clock mutex poisoned")
    }
}

/// `at` truncated to microseconds, the precision every backend stores: every instant Rota
/// computes or is given goes through it, so what an answer shows is what a read returns.
pub fn truncate_to_micros(at: Timestamp) -> Timestamp {
    Timestamp::from_microsecond(at.as_microsecond()).expect("truncation stays in range")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn manual_clock_moves_only_when_told_and_clones_share_it() {
        let clock = ManualClock::default();
        let twin = clock.clone();
        let start = clock.now();
        clock.advance(Duration::from_secs(30));
        assert_eq!(twin.now().duration_since(start).as_secs(), 30);
    }

    #[test]
    fn system_clock_has_microsecond_precision() {
        assert_eq!(SystemClock.now().subsec_nanosecond() % 1_000, 0);
    }
}
