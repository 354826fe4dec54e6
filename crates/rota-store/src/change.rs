//! Job changes, reported once from the one place a backend writes a job row.
//!
//! Every state change (enqueue, promotion, fetch, completion, failure, rescue, prune, …),
//! whoever causes it, becomes a [`JobChange`] that the backend hands to its [`Notifier`]
//! after the change committed. The engine's notifier feeds fetch wake-ups, `?wait` waiters
//! and metrics from it; a backend may also carry changes to other nodes.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rota_core::{Event, Job, JobId, JobState};

/// What caused a change.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum ChangeCause {
    /// Enqueued (by a producer or a schedule).
    Enqueued,
    /// Its run_at came: scheduled or retryable became available.
    Promoted,
    /// Leased by a worker.
    Fetched,
    /// The worker completed it.
    Completed,
    /// The worker failed it.
    Failed,
    /// The worker snoozed it.
    Snoozed,
    /// Cancelled (or asked to be).
    Cancelled,
    /// Its lease expired and the rescuer took it back.
    Rescued,
    /// Its worker handed it back unrun.
    HandedBack,
    /// An operator retried it.
    Retried,
    /// Deleted after its retention.
    Pruned,
    /// Deleted by an operator's purge.
    Purged,
}

impl ChangeCause {
    /// The cause of a change made by `event`.
    pub fn of(event: &Event) -> Self {
        match event {
            Event::Due => ChangeCause::Promoted,
            Event::Fetched { .. }
            | Event::Heartbeat { .. }
            | Event::Progressed { .. }
            | Event::Checkpointed { .. } => ChangeCause::Fetched,
            Event::Completed { .. } => ChangeCause::Completed,
            Event::Failed { .. } => ChangeCause::Failed,
            Event::Snoozed { .. } => ChangeCause::Snoozed,
            Event::CancelRequested => ChangeCause::Cancelled,
            Event::LeaseExpired => ChangeCause::Rescued,
            Event::HandedBack { .. } => ChangeCause::HandedBack,
            Event::Retried => ChangeCause::Retried,
            // A scheduled job stays scheduled: no change of state is reported.
            Event::Debounced { .. } => ChangeCause::Enqueued,
        }
    }
}

/// One job moved from one state to another (or appeared, or was deleted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JobChange {
    /// The job.
    pub id: JobId,
    /// Its queue.
    pub queue: String,
    /// Its kind.
    pub kind: String,
    /// The state before; `None` for a new job.
    pub from: Option<JobState>,
    /// The state after; `None` for a deleted job.
    pub to: Option<JobState>,
    /// Why.
    pub cause: ChangeCause,
    /// For a fetch, how long the job waited since it was due; for the end of an attempt,
    /// how long the attempt ran.
    pub took: Option<Duration>,
}

impl JobChange {
    /// The change from `before` (absent for a new job) to `after`, or `None` when the state
    /// did not change (heartbeats, progress, a cancel request on a running job).
    pub fn between(
        before: Option<&Job>,
        after: &Job,
        cause: ChangeCause,
        now: Timestamp,
    ) -> Option<Self> {
        let from = before.map(|b| b.state);
        if from == Some(after.state) {
            return None;
        }
        let took = match (from, after.state) {
            (_, JobState::Running) => after
                .attempted_at
                .and_then(|at| at.duration_since(after.run_at).try_into().ok()),
            (Some(JobState::Running), _) => before
                .and_then(|b| b.attempted_at)
                .and_then(|start| now.duration_since(start).try_into().ok()),
            _ => None,
        };
        Some(Self {
            id: after.id,
            queue: after.queue.clone(),
            kind: after.kind.clone(),
            from,
            to: Some(after.state),
            cause,
            took,
        })
    }

    /// A job deleted in `state`.
    pub fn deleted(
        id: JobId,
        queue: String,
        kind: String,
        state: JobState,
        cause: ChangeCause,
    ) -> Self {
        Self {
            id,
            queue,
            kind,
            from: Some(state),
            to: None,
            cause,
            took: None,
        }
    }
}

/// The job-count changes that `changes` imply, per queue, kind and state (those that net to
/// zero left out): what every backend adds to its counts in the changes' own transaction.
pub fn count_deltas(changes: &[JobChange]) -> HashMap<(&str, &str, JobState), i64> {
    let mut deltas: HashMap<(&str, &str, JobState), i64> = HashMap::new();
    for c in changes {
        if let Some(from) = c.from {
            *deltas.entry((&c.queue, &c.kind, from)).or_default() -= 1;
        }
        if let Some(to) = c.to {
            *deltas.entry((&c.queue, &c.kind, to)).or_default() += 1;
        }
    }
    deltas.retain(|_, n| *n != 0);
    deltas
}

/// Hears every committed job change. Called once per committed write with that write's
/// changes, in order; must not block (hand heavy work to a task).
pub trait Notifier: Send + Sync + 'static {
    /// Changes that just committed.
    fn notify(&self, changes: &[JobChange]);

    /// Changes another node committed, as far as a backend that carries changes between
    /// nodes knows them (`from` and `took` are absent). A hint for wake-ups only: counters
    /// must not count these (the other node counts its own), and nothing may depend on
    /// hearing them. Ignored unless overridden.
    fn notify_remote(&self, changes: &[JobChange]) {
        let _ = changes;
    }
}

/// A notifier that hears nothing (the default of a store nobody listens to).
#[derive(Debug, Clone, Copy, Default)]
pub struct NoNotifier;

impl Notifier for NoNotifier {
    fn notify(&self, _changes: &[JobChange]) {}
}

/// Several notifiers, each told every change.
#[derive(Clone, Default)]
pub struct Notifiers(pub Vec<Arc<dyn Notifier>>);

impl Notifier for Notifiers {
    fn notify(&self, changes: &[JobChange]) {
        for n in &self.0 {
            n.notify(changes);
        }
    }

    fn notify_remote(&self, changes: &[JobChange]) {
        for n in &self.0 {
            n.notify_remote(changes);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rota_core::NewJob;

    #[test]
    fn a_change_says_from_to_and_how_long_an_attempt_ran() {
        let t0 = Timestamp::from_second(1_800_000_000).unwrap();
        let new = Job::from_new(
            NewJob::new("q", "k", serde_json::json!({})),
            JobId::new(t0),
            Default::default(),
            t0,
        );
        let enqueued = JobChange::between(None, &new, ChangeCause::Enqueued, t0).unwrap();
        assert_eq!(
            (enqueued.from, enqueued.to),
            (None, Some(JobState::Available))
        );
        let t1 = rota_core::add_duration(t0, Duration::from_secs(2));
        let running = rota_core::transition(
            &new,
            Event::Fetched {
                worker: "w".into(),
                lease_for: Duration::from_secs(30),
            },
            t1,
        )
        .unwrap();
        let fetched = JobChange::between(Some(&new), &running, ChangeCause::Fetched, t1).unwrap();
        assert_eq!(
            fetched.took,
            Some(Duration::from_secs(2)),
            "waited since due"
        );
        let t2 = rota_core::add_duration(t1, Duration::from_secs(5));
        let token = running.lease.as_ref().unwrap().token;
        let done = rota_core::transition(
            &running,
            Event::Completed {
                token,
                result: None,
            },
            t2,
        )
        .unwrap();
        let completed =
            JobChange::between(Some(&running), &done, ChangeCause::Completed, t2).unwrap();
        assert_eq!(completed.took, Some(Duration::from_secs(5)), "ran");
        assert!(JobChange::between(Some(&running), &running, ChangeCause::Fetched, t2).is_none());
    }

    #[test]
    fn count_deltas_net_each_queue_kind_and_state() {
        let change = |from, to| JobChange {
            id: JobId::new(Timestamp::UNIX_EPOCH),
            queue: "q".into(),
            kind: "k".into(),
            from,
            to,
            cause: ChangeCause::Fetched,
            took: None,
        };
        let changes = [
            change(None, Some(JobState::Available)),
            change(Some(JobState::Available), Some(JobState::Running)),
            change(Some(JobState::Running), Some(JobState::Completed)),
            change(Some(JobState::Completed), None),
        ];
        let deltas = count_deltas(&changes);
        assert!(
            deltas.is_empty(),
            "enqueued, run, finished, pruned: {deltas:?}"
        );
        let deltas = count_deltas(&changes[..2]);
        assert_eq!(deltas.len(), 1);
        assert_eq!(deltas[&("q", "k", JobState::Running)], 1);
    }
}
