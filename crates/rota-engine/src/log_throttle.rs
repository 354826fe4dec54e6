//! Errors that come in floods (every request fails while the database is down) are logged
//! at most once per period, with how many were not: the log says the database is down, not
//! a thousand times a second. Each request still gets its answer and is counted in
//! `rota_http_requests_total`.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How often a repeating failure (the database down) is logged: once per this long.
pub const QUIET_PERIOD: Duration = Duration::from_secs(10);

/// A gate that lets one log line through per period.
#[derive(Debug)]
pub struct LogThrottle {
    every: Duration,
    state: Mutex<(Option<Instant>, u64)>,
}

impl LogThrottle {
    /// One line per `every`.
    pub const fn new(every: Duration) -> Self {
        Self {
            every,
            state: Mutex::new((None, 0)),
        }
    }

    /// At `now`: `Some(n)` to log, `n` being how many were held back since the last line;
    /// `None` to stay quiet (this one is counted).
    pub fn admit(&self, now: Instant) -> Option<u64> {
        let mut state = self.state.lock().unwrap_or_else(|e| e.into_inner());
        match state.0 {
            Some(last) if now.saturating_duration_since(last) < self.every => {
                state.1 += 1;
                None
            }
            _ => {
                let held = state.1;
                *state = (Some(now), 0);
                Some(held)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_per_period_with_the_count_held_back() {
        let gate = LogThrottle::new(Duration::from_secs(10));
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        assert_eq!(gate.admit(at(0)), Some(0));
        for s in 1..10 {
            assert_eq!(gate.admit(at(s)), None, "second {s}");
        }
        assert_eq!(gate.admit(at(10)), Some(9));
        assert_eq!(gate.admit(at(11)), None);
        assert_eq!(gate.admit(at(100)), Some(1));
    }
}
