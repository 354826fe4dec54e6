//! Wake-up fan-out: "a job is ready on queue Q" reaches every long poll waiting on Q.
//!
//! A fetch subscribes *before* it queries the store, then waits on its subscription if the
//! query found nothing. Each subscription holds a permit-style `Notify`, so a wake-up that
//! lands between the query and the wait is not lost: the wait returns at once.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, Weak};

use tokio::sync::Notify;

/// Fans wake-ups out to the subscriptions of each queue. Clones share the same hub.
#[derive(Debug, Clone, Default)]
pub struct WakeHub {
    queues: Arc<Mutex<HashMap<String, Vec<Weak<Notify>>>>>,
}

/// One waiter's interest in some queues. Dropping it unsubscribes.
#[derive(Debug)]
pub struct Subscription {
    notify: Arc<Notify>,
}

impl Subscription {
    /// Resolves at the first wake-up for any subscribed queue since the subscription was
    /// made (or since the last wake-up it returned for).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

impl WakeHub {
    /// A hub with no subscriptions.
    pub fn new() -> Self {
        Self::default()
    }

    /// Subscribes to wake-ups for `queues`. Subscribe before querying the store.
    pub fn subscribe<S: AsRef<str>>(&self, queues: &[S]) -> Subscription {
        let notify = Arc::new(Notify::new());
        let mut map = self.queues.lock().expect("wake hub poisoned");
        for queue in queues {
            let subs = map.entry(queue.as_ref().to_owned()).or_default();
            subs.retain(|w| w.strong_count() > 0);
            subs.push(Arc::downgrade(&notify));
        }
        Subscription { notify }
    }

    /// Wakes every subscription to `queue`.
    pub fn notify(&self, queue: &str) {
        let mut map = self.queues.lock().expect("wake hub poisoned");
        if let Some(subs) = map.get_mut(queue) {
            subs.retain(|w| match w.upgrade() {
                Some(notify) => {
                    notify.notify_one();
                    true
                }
                None => false,
            });
            if subs.is_empty() {
                map.remove(queue);
            }
        }
    }

    /// Live subscriptions to `queue` (for tests and metrics).
    pub fn subscribers(&self, queue: &str) -> usize {
        let map = self.queues.lock().expect("wake hub poisoned");
        map.get(queue).map_or(0, |subs| {
            subs.iter().filter(|w| w.strong_count() > 0).count()
        })
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test(start_paused = true)]
    async fn a_wake_up_before_the_wait_is_not_lost() {
        let hub = WakeHub::new();
        let sub = hub.subscribe(&["mail"]);
        hub.notify("mail");
        tokio::time::timeout(Duration::from_secs(1), sub.notified())
            .await
            .expect("the earlier wake-up is kept as a permit");
    }

    #[tokio::test(start_paused = true)]
    async fn only_subscribers_of_the_queue_wake() {
        let hub = WakeHub::new();
        let mail = hub.subscribe(&["mail"]);
        let both = hub.subscribe(&["mail", "billing"]);
        hub.notify("billing");
        tokio::time::timeout(Duration::from_secs(1), both.notified())
            .await
            .unwrap();
        assert!(
            tokio::time::timeout(Duration::from_secs(1), mail.notified())
                .await
                .is_err()
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_waiting_fetch_wakes_when_notified_from_another_task() {
        let hub = WakeHub::new();
        let sub = hub.subscribe(&["q"]);
        let notifier = hub.clone();
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(10)).await;
            notifier.notify("q");
        });
        tokio::time::timeout(Duration::from_secs(5), sub.notified())
            .await
            .unwrap();
    }

    #[test]
    fn dropped_subscriptions_are_forgotten() {
        let hub = WakeHub::new();
        let sub = hub.subscribe(&["q"]);
        assert_eq!(hub.subscribers("q"), 1);
        drop(sub);
        assert_eq!(hub.subscribers("q"), 0);
        hub.notify("q");
        assert!(hub.queues.lock().unwrap().is_empty());
    }
}
