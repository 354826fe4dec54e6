//! Per-minute activity buckets this node keeps in memory for the dashboard's charts:
//! completions, failures, and enqueue-to-start latency, for the last seven days. Fed by the
//! store's notifier (this node's own committed changes; each node charts what it did).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use jiff::Timestamp;
use rota_core::JobState;
use rota_store::{ChangeCause, JobChange, Notifier};

use rota_core::Clock;
use std::sync::Arc;

/// Minutes kept: seven days.
pub const MINUTES_KEPT: usize = 7 * 24 * 60;

/// What happened in one minute.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Bucket {
    /// The minute (seconds since the epoch / 60).
    pub minute: i64,
    /// Jobs enqueued.
    pub enqueued: u64,
    /// Attempts that completed.
    pub completed: u64,
    /// Attempts that failed (retried or dead).
    pub failed: u64,
    /// Jobs started.
    pub started: u64,
    /// Sum of their enqueue-to-start waits, in seconds.
    pub wait_seconds: f64,
}

impl Bucket {
    fn add(&mut self, other: &Bucket) {
        self.enqueued += other.enqueued;
        self.completed += other.completed;
        self.failed += other.failed;
        self.started += other.started;
        self.wait_seconds += other.wait_seconds;
    }

    /// Mean enqueue-to-start wait, if anything started.
    pub fn mean_wait(&self) -> Option<f64> {
        (self.started > 0).then(|| self.wait_seconds / self.started as f64)
    }

    /// Failed attempts as a share of finished ones, if any finished.
    pub fn failure_rate(&self) -> Option<f64> {
        let finished = self.completed + self.failed;
        (finished > 0).then(|| self.failed as f64 / finished as f64)
    }
}

#[derive(Debug, Default)]
struct Buckets {
    /// Oldest first, one per minute that saw activity.
    minutes: VecDeque<Bucket>,
    /// Completions per queue in the last hour, per minute (oldest first).
    per_queue: HashMap<String, VecDeque<(i64, u64)>>,
}

/// The buckets and the clock that says which minute it is.
pub struct Timeline {
    clock: Arc<dyn Clock>,
    buckets: Mutex<Buckets>,
}

impl std::fmt::Debug for Timeline {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Timeline")
    }
}

fn minute_of(t: Timestamp) -> i64 {
    t.as_second().div_euclid(60)
}

impl Timeline {
    /// An empty timeline on `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Self {
            clock,
            buckets: Mutex::default(),
        }
    }

    /// Counts `changes` in the current minute.
    pub fn record(&self, changes: &[JobChange]) {
        let minute = minute_of(self.clock.now());
        let mut delta = Bucket {
            minute,
            ..Bucket::default()
        };
        let mut completed_by_queue: HashMap<&str, u64> = HashMap::new();
        for c in changes {
            let Some(to) = c.to else { continue };
            if c.cause == ChangeCause::Enqueued && c.from.is_none() {
                delta.enqueued += 1;
            }
            match (c.from, to) {
                (_, JobState::Running) => {
                    delta.started += 1;
                    delta.wait_seconds += c.took.map_or(0.0, |d| d.as_secs_f64());
                }
                (Some(JobState::Running), JobState::Completed) => {
                    delta.completed += 1;
                    *completed_by_queue.entry(&c.queue).or_default() += 1;
                }
                (Some(JobState::Running), JobState::Retryable | JobState::Dead)
                    if c.cause == ChangeCause::Failed || c.cause == ChangeCause::Rescued =>
                {
                    delta.failed += 1
                }
                _ => {}
            }
        }
        if delta
            == (Bucket {
                minute,
                ..Bucket::default()
            })
        {
            return;
        }
        let mut b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        match b.minutes.back_mut() {
            Some(last) if last.minute == minute => last.add(&delta),
            _ => b.minutes.push_back(delta),
        }
        while b
            .minutes
            .front()
            .is_some_and(|f| f.minute <= minute - MINUTES_KEPT as i64)
        {
            b.minutes.pop_front();
        }
        for (queue, n) in completed_by_queue {
            let ring = b.per_queue.entry(queue.to_owned()).or_default();
            match ring.back_mut() {
                Some((m, count)) if *m == minute => *count += n,
                _ => ring.push_back((minute, n)),
            }
            while ring.front().is_some_and(|(m, _)| *m <= minute - 60) {
                ring.pop_front();
            }
        }
    }

    /// `count` buckets of `width` minutes each, ending with the current minute, oldest
    /// first (empty ones where nothing happened).
    pub fn series(&self, count: usize, width: i64) -> Vec<Bucket> {
        let now = minute_of(self.clock.now());
        let first = now - count as i64 * width + 1;
        let mut out: Vec<Bucket> = (0..count)
            .map(|i| Bucket {
                minute: first + i as i64 * width,
                ..Bucket::default()
            })
            .collect();
        let b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        for bucket in b
            .minutes
            .iter()
            .filter(|m| m.minute >= first && m.minute <= now)
        {
            let i = ((bucket.minute - first) / width) as usize;
            out[i].add(bucket);
        }
        out
    }

    /// Completions on `queue` in the last hour.
    pub fn queue_completed_last_hour(&self, queue: &str) -> u64 {
        let now = minute_of(self.clock.now());
        let b = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        b.per_queue.get(queue).map_or(0, |ring| {
            ring.iter()
                .filter(|(m, _)| *m > now - 60)
                .map(|(_, n)| n)
                .sum()
        })
    }
}

impl Notifier for Timeline {
    fn notify(&self, changes: &[JobChange]) {
        self.record(changes);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rota_core::ManualClock;

    fn change(queue: &str, from: Option<JobState>, to: JobState, cause: ChangeCause) -> JobChange {
        JobChange {
            id: rota_core::JobId::new(Timestamp::from_second(1).unwrap()),
            queue: queue.into(),
            kind: "k".into(),
            from,
            to: Some(to),
            cause,
            took: Some(std::time::Duration::from_secs(2)),
        }
    }

    /// Changes land in their minute; a series sums buckets of the asked width; minutes past
    /// seven days and queue counts past an hour are forgotten. The clock is moved by hand.
    #[test]
    fn buckets_count_by_minute_and_forget_the_old() {
        let clock = Arc::new(ManualClock::new(
            Timestamp::from_second(1_800_000_000).unwrap(),
        ));
        let t = Timeline::new(clock.clone());
        use JobState::*;
        t.record(&[
            change("q", None, Available, ChangeCause::Enqueued),
            change("q", Some(Available), Running, ChangeCause::Fetched),
            change("q", Some(Running), Completed, ChangeCause::Completed),
        ]);
        clock.advance(std::time::Duration::from_secs(60));
        t.record(&[change("q", Some(Running), Retryable, ChangeCause::Failed)]);
        let series = t.series(60, 1);
        assert_eq!(series.len(), 60);
        let last = series[59];
        let before = series[58];
        assert_eq!(
            (before.enqueued, before.started, before.completed),
            (1, 1, 1)
        );
        assert_eq!(before.mean_wait(), Some(2.0));
        assert_eq!((last.failed, last.completed), (1, 0));
        assert_eq!(last.failure_rate(), Some(1.0));
        let wide = t.series(2, 60);
        assert_eq!(wide[1].completed + wide[1].failed, 2, "one hour holds both");
        assert_eq!(t.queue_completed_last_hour("q"), 1);
        clock.advance(std::time::Duration::from_secs(3600));
        assert_eq!(t.queue_completed_last_hour("q"), 0);
        clock.advance(std::time::Duration::from_secs(7 * 24 * 3600));
        t.record(&[change("q", None, Available, ChangeCause::Enqueued)]);
        assert_eq!(
            t.buckets.lock().unwrap().minutes.len(),
            1,
            "a week old is gone"
        );
    }
}
