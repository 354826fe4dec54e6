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
    /// Its name in a job's history.
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeCause::Enqueued => "enqueued",
            ChangeCause::Promoted => "due",
            ChangeCause::Fetched => "fetched",
            ChangeCause::Completed => "completed",
            ChangeCause::Failed => "failed",
            ChangeCause::Snoozed => "snoozed",
            ChangeCause::Cancelled => "cancelled",
            ChangeCause::Rescued => "rescued",
            ChangeCause::HandedBack => "handed back",
            ChangeCause::Retried => "retried",
            ChangeCause::Pruned => "pruned",
            ChangeCause::Purged => "purged",
        }
    }

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

/// One change of a job's state as its history keeps it (see [`crate::Store::job_history`]).
///
/// Stored as one line of text per change, appended by the backend in the same write as the
/// change (`history || line`) and cut to its last [`HISTORY_CHARS`] characters. Fetches and
/// completions are not kept (see [`StateChange::between`]); a JSON array edited in SQL cost
/// the store's lifecycle 22 %.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateChange {
    /// When.
    pub at: Timestamp,
    /// The state before.
    pub from: JobState,
    /// The state after.
    pub to: JobState,
    /// Why ([`ChangeCause::as_str`]).
    pub cause: String,
    /// The worker involved (the one that fetched, failed, snoozed, completed or lost it).
    pub worker: Option<String>,
}

/// The most characters of history a job keeps (about 35 changes; the oldest are cut).
pub const HISTORY_CHARS: usize = 2000;

impl StateChange {
    /// The entry for a job that went from `before` to `after` for `cause` at `now`, if its
    /// state changed and the change is one a history keeps: every change but a fetch and a
    /// completion, which the job row itself records (`attempted_at`, `finished_at`) and
    /// which, appended to every job, cost the store's lifecycle 10–16 % (measured). What
    /// every backend appends to the stored history in the same write.
    pub fn between(before: &Job, after: &Job, cause: ChangeCause, now: Timestamp) -> Option<Self> {
        let routine = matches!(cause, ChangeCause::Fetched | ChangeCause::Completed);
        (before.state != after.state && !routine).then(|| Self {
            at: now,
            from: before.state,
            to: after.state,
            cause: cause.as_str().to_owned(),
            worker: after
                .lease
                .as_ref()
                .or(before.lease.as_ref())
                .map(|l| l.worker.clone()),
        })
    }

    /// Its line: `micros from to cause|worker`, newline-terminated (a newline in the worker
    /// becomes a space).
    pub fn line(&self) -> String {
        format!(
            "{} {} {} {}|{}\n",
            self.at.as_microsecond(),
            self.from.as_str(),
            self.to.as_str(),
            self.cause,
            self.worker
                .as_deref()
                .unwrap_or("")
                .replace(['\n', '\r'], " ")
        )
    }

    /// The changes of a stored history, oldest first. A log at its full length was cut, so
    /// its first line may be partial and is skipped; a line that does not read is skipped.
    pub fn parse_log(log: &str) -> Vec<Self> {
        let cut = log.chars().count() >= HISTORY_CHARS;
        log.lines()
            .skip(usize::from(cut))
            .filter_map(Self::parse_line)
            .collect()
    }

    fn parse_line(line: &str) -> Option<Self> {
        let (head, worker) = line.split_once('|')?;
        let mut parts = head.splitn(4, ' ');
        let at = Timestamp::from_microsecond(parts.next()?.parse().ok()?).ok()?;
        let from = parts.next()?.parse().ok()?;
        let to = parts.next()?.parse().ok()?;
        let cause = parts.next()?.to_owned();
        Some(Self {
            at,
            from,
            to,
            cause,
            worker: (!worker.is_empty()).then(|| worker.to_owned()),
        })
    }
}

#[cfg(test)]
mod history_tests {
    use super::*;

    #[test]
    fn lines_read_back_and_a_cut_line_is_skipped() {
        let change = StateChange {
            at: Timestamp::from_microsecond(1_800_000_000_123_456).unwrap(),
            from: JobState::Running,
            to: JobState::Retryable,
            cause: "handed back".into(),
            worker: Some("host a|b\nc".into()),
        };
        let line = change.line();
        assert!(line.ends_with('\n'));
        let read = StateChange::parse_log(&line);
        assert_eq!(read.len(), 1);
        assert_eq!(read[0].worker.as_deref(), Some("host a|b c"));
        assert_eq!(
            (read[0].at, read[0].from, read[0].to),
            (change.at, change.from, change.to)
        );
        assert_eq!(read[0].cause, "handed back");
        // Cut as the stores cut it: the last HISTORY_CHARS characters of many lines.
        let many = line.repeat(100);
        let cut: String = many
            .chars()
            .skip(many.chars().count() - HISTORY_CHARS)
            .collect();
        let read = StateChange::parse_log(&cut);
        let whole = HISTORY_CHARS / line.chars().count();
        assert_eq!(read.len(), whole, "every whole line, the cut one skipped");
        assert!(read
            .iter()
            .all(|c| c.at == change.at && c.cause == "handed back"));
        let none = StateChange {
            worker: None,
            ..change
        };
        assert_eq!(StateChange::parse_log(&none.line())[0].worker, None);
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
