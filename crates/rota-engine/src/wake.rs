//! Wake-ups for long polls, fed by the store's job changes.
//!
//! [`WakeHub`] is a [`Notifier`]: every committed job change reaches it once. A fetch
//! subscribes to its queues (and kinds) *before* it claims, then waits on its subscription if
//! the claim found nothing; a job wait subscribes to one job before it reads it. A change
//! that makes `n` jobs of a queue ready wakes at most `n` idle fetches that could take them
//! (not every fetch on the queue); a job that reaches a final state wakes its waiters; a job
//! that becomes due later wakes one fetch so that it re-plans its timer. Each subscription
//! holds a permit-style `Notify`, so a wake-up that lands between the claim and the wait is
//! not lost.

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};

use rota_core::{JobId, JobState};
use rota_store::{JobChange, Notifier};
use tokio::sync::Notify;

#[derive(Debug)]
struct Waiter {
    notify: Notify,
    /// Kinds the fetch takes (empty: any).
    kinds: Vec<String>,
    /// Woken and not yet looked again: a further wake-up would be wasted on it.
    pending: AtomicBool,
}

impl Waiter {
    fn takes(&self, kind: &str) -> bool {
        rota_store::takes_kind(&self.kinds, kind)
    }

    /// Wakes it unless it is already woken; says whether this woke it.
    fn wake(&self) -> bool {
        if self.pending.swap(true, Ordering::AcqRel) {
            return false;
        }
        self.notify.notify_one();
        true
    }
}

#[derive(Debug, Default)]
struct Waiters {
    queues: HashMap<String, VecDeque<Weak<Waiter>>>,
    jobs: HashMap<JobId, Vec<Weak<Waiter>>>,
}

/// Fans job changes out to waiting fetches and job waits. Clones share the same hub.
#[derive(Debug, Clone, Default)]
pub struct WakeHub {
    waiters: Arc<Mutex<Waiters>>,
    wakeups: Arc<AtomicU64>,
}

/// One waiter's interest. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    waiter: Arc<Waiter>,
}

impl Subscription {
    /// Resolves at the first wake-up since the subscription was made (or since the last
    /// wake-up it returned for).
    pub async fn notified(&self) {
        self.waiter.notify.notified().await;
        self.waiter.pending.store(false, Ordering::Release);
    }
}

fn new_waiter(kinds: &[String]) -> Arc<Waiter> {
    Arc::new(Waiter {
        notify: Notify::new(),
        kinds: kinds.to_vec(),
        pending: AtomicBool::new(false),
    })
}

impl WakeHub {
    /// A hub with no subscriptions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes a fetch to jobs of `kinds` (empty: any) becoming ready on `queues`.
    /// Subscribe before claiming.
    pub fn subscribe<S: AsRef<str>>(&self, queues: &[S], kinds: &[String]) -> Subscription {
        let waiter = new_waiter(kinds);
        let mut w = self.waiters.lock().expect("wake hub poisoned");
        for queue in queues {
            let subs = w.queues.entry(queue.as_ref().to_owned()).or_default();
            subs.retain(|s| s.strong_count() > 0);
            subs.push_back(Arc::downgrade(&waiter));
        }
        Subscription { waiter }
    }

    /// Subscribes to job `id` reaching a final state. Subscribe before reading the job.
    pub fn subscribe_job(&self, id: JobId) -> Subscription {
        let waiter = new_waiter(&[]);
        let mut w = self.waiters.lock().expect("wake hub poisoned");
        let subs = w.jobs.entry(id).or_default();
        subs.retain(|s| s.strong_count() > 0);
        subs.push(Arc::downgrade(&waiter));
        Subscription { waiter }
    }

    /// Wakes up to `n` idle fetches on `queue` that take `kind`, oldest subscription first
    /// (each woken one goes to the back, so wake-ups rotate).
    pub fn wake_ready(&self, queue: &str, kind: &str, n: usize) {
        let mut w = self.waiters.lock().expect("wake hub poisoned");
        let Some(subs) = w.queues.get_mut(queue) else {
            return;
        };
        let mut woken = 0;
        let mut rotated = 0;
        let len = subs.len();
        while woken < n && rotated < len {
            rotated += 1;
            let Some(weak) = subs.pop_front() else { break };
            let Some(waiter) = weak.upgrade() else {
                continue;
            };
            if waiter.takes(kind) && waiter.wake() {
                woken += 1;
            }
            subs.push_back(weak);
        }
        if subs.is_empty() {
            w.queues.remove(queue);
        }
        self.wakeups.fetch_add(woken as u64, Ordering::Relaxed);
    }

    /// Wakes every fetch on `queue` (the queue was resumed, or its settings changed).
    pub fn wake_queue(&self, queue: &str) {
        let mut w = self.waiters.lock().expect("wake hub poisoned");
        if let Some(subs) = w.queues.get_mut(queue) {
            for waiter in subs.iter().filter_map(Weak::upgrade) {
                if waiter.wake() {
                    self.wakeups.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Wakes the waiters of job `id`.
    pub fn wake_job(&self, id: JobId) {
        let mut w = self.waiters.lock().expect("wake hub poisoned");
        if let Some(subs) = w.jobs.remove(&id) {
            for waiter in subs.iter().filter_map(Weak::upgrade) {
                if waiter.wake() {
                    self.wakeups.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Live fetch subscriptions to `queue` (for tests and metrics).
    pub fn subscribers(&self, queue: &str) -> usize {
        let w = self.waiters.lock().expect("wake hub poisoned");
        w.queues.get(queue).map_or(0, |subs| {
            subs.iter().filter(|s| s.strong_count() > 0).count()
        })
    }

    /// Wake-ups delivered so far (each woke one idle waiter).
    pub fn wakeups(&self) -> u64 {
        self.wakeups.load(Ordering::Relaxed)
    }
}

impl Notifier for WakeHub {
    fn notify(&self, changes: &[JobChange]) {
        // Newly ready jobs per queue and kind, so that a batch of 100 wakes up to 100
        // fetches in one pass; a job due later wakes one fetch to re-plan its timer. A job
        // made ready and leased in the same commit (a parked claim took it) is not ready.
        let leased: std::collections::HashSet<JobId> = changes
            .iter()
            .filter(|c| c.from == Some(JobState::Available) && c.to == Some(JobState::Running))
            .map(|c| c.id)
            .collect();
        let mut ready: HashMap<(&str, &str), usize> = HashMap::new();
        for c in changes {
            match c.to {
                Some(JobState::Available) if leased.contains(&c.id) => {}
                Some(JobState::Available) => {
                    *ready.entry((&c.queue, &c.kind)).or_default() += 1;
                }
                Some(JobState::Scheduled | JobState::Retryable) => {
                    ready.entry((&c.queue, &c.kind)).or_insert(1);
                }
                Some(state) if state.is_final() => self.wake_job(c.id),
                None => self.wake_job(c.id),
                _ => {}
            }
        }
        for ((queue, kind), n) in ready {
            self.wake_ready(queue, kind, n);
        }
    }

    /// Another node's changes wake this node's fetches and waiters alike.
    fn notify_remote(&self, changes: &[JobChange]) {
        self.notify(changes);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use rota_store::ChangeCause;

    use super::*;

    fn ready(queue: &str, kind: &str) -> JobChange {
        JobChange {
            id: JobId::new(jiff::Timestamp::UNIX_EPOCH),
            queue: queue.into(),
            kind: kind.into(),
            from: None,
            to: Some(JobState::Available),
            cause: ChangeCause::Enqueued,
            took: None,
        }
    }

    async fn woke(sub: &Subscription) -> bool {
        tokio::time::timeout(Duration::from_millis(10), sub.notified())
            .await
            .is_ok()
    }

    #[tokio::test(start_paused = true)]
    async fn a_wake_up_before_the_wait_is_not_lost() {
        let hub = WakeHub::new();
        let sub = hub.subscribe(&["mail"], &[]);
        hub.notify(&[ready("mail", "k")]);
        assert!(woke(&sub).await, "the earlier wake-up is kept as a permit");
    }

    #[tokio::test(start_paused = true)]
    async fn only_subscribers_of_the_queue_wake() {
        let hub = WakeHub::new();
        let mail = hub.subscribe(&["mail"], &[]);
        let both = hub.subscribe(&["mail", "billing"], &[]);
        hub.notify(&[ready("billing", "k")]);
        assert!(woke(&both).await);
        assert!(!woke(&mail).await);
    }

    #[tokio::test(start_paused = true)]
    async fn one_ready_job_wakes_one_of_sixteen_idle_fetches() {
        let hub = WakeHub::new();
        let subs: Vec<_> = (0..16).map(|_| hub.subscribe(&["q"], &[])).collect();
        hub.notify(&[ready("q", "k")]);
        let mut woken = 0;
        for sub in &subs {
            woken += usize::from(woke(sub).await);
        }
        assert_eq!((woken, hub.wakeups()), (1, 1));
        hub.notify(&[ready("q", "k"), ready("q", "k"), ready("q", "k")]);
        let mut woken = 0;
        for sub in &subs {
            woken += usize::from(woke(sub).await);
        }
        assert_eq!(woken, 3, "three ready jobs wake three fetches");
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_leased_in_the_commit_that_made_it_ready_wakes_no_one() {
        let hub = WakeHub::new();
        let idle = hub.subscribe(&["q"], &[]);
        let (made, other) = (ready("q", "k"), ready("q", "k"));
        let mut leased = made.clone();
        leased.from = Some(JobState::Available);
        leased.to = Some(JobState::Running);
        hub.notify(&[made.clone(), leased.clone()]);
        assert!(!woke(&idle).await, "a parked claim took it");
        hub.notify(&[made, other, leased]);
        assert!(woke(&idle).await, "the other job is still ready");
    }

    #[tokio::test(start_paused = true)]
    async fn a_fetch_for_other_kinds_is_not_woken() {
        let hub = WakeHub::new();
        let images = hub.subscribe(&["q"], &["image".to_owned()]);
        let mail = hub.subscribe(&["q"], &["mail".to_owned()]);
        hub.notify(&[ready("q", "mail")]);
        assert!(woke(&mail).await);
        assert!(!woke(&images).await);
    }

    #[tokio::test(start_paused = true)]
    async fn a_job_reaching_a_final_state_wakes_its_waiters() {
        let hub = WakeHub::new();
        let id = JobId::new(jiff::Timestamp::UNIX_EPOCH);
        let sub = hub.subscribe_job(id);
        let mut change = ready("q", "k");
        change.id = id;
        change.to = Some(JobState::Running);
        hub.notify(std::slice::from_ref(&change));
        assert!(!woke(&sub).await, "running is not final");
        change.to = Some(JobState::Dead);
        hub.notify(&[change]);
        assert!(woke(&sub).await);
    }

    #[test]
    fn dropped_subscriptions_are_forgotten() {
        let hub = WakeHub::new();
        let sub = hub.subscribe(&["q"], &[]);
        assert_eq!(hub.subscribers("q"), 1);
        drop(sub);
        assert_eq!(hub.subscribers("q"), 0);
        hub.wake_ready("q", "k", 1);
        assert!(hub.waiters.lock().unwrap().queues.is_empty());
    }
}
