//! Job changes reach the notifier once each, after they committed.

use std::sync::Mutex;

use super::*;

#[derive(Default)]
struct Recorder(Mutex<Vec<JobChange>>);

impl Notifier for Recorder {
    fn notify(&self, changes: &[JobChange]) {
        self.0.lock().unwrap().extend_from_slice(changes);
    }
}

impl Recorder {
    fn take(&self) -> Vec<(Option<JobState>, Option<JobState>, ChangeCause)> {
        self.0
            .lock()
            .unwrap()
            .drain(..)
            .map(|c| (c.from, c.to, c.cause))
            .collect()
    }
}

/// Every state change, whoever makes it, is reported once with its from, to and cause;
/// heartbeats and refused changes are not reported.
pub async fn every_state_change_is_reported_once(s: Subject) {
    use JobState::*;
    let store = &*s.store;
    let recorder = Arc::new(Recorder::default());
    store.notifier_set(recorder.clone());
    let now = t0();
    let job = insert_one(store, new_job("a").max_attempts(1), now).await;
    assert_eq!(
        recorder.take(),
        vec![(None, Some(Available), ChangeCause::Enqueued)]
    );
    let claimed = claim(store, "w", &["default"], &[], 1, now).await.remove(0);
    let changes = recorder.0.lock().unwrap().clone();
    assert_eq!(changes.len(), 1);
    assert_eq!(
        (changes[0].id, &changes[0].queue, &changes[0].kind),
        (job.id, &job.queue, &job.kind)
    );
    recorder.take();
    store
        .lease_extend_many(LeaseExtendManyParams {
            worker: "w".into(),
            leases: vec![lease_of(&claimed)],
            lease: secs(30),
            now,
        })
        .await
        .unwrap();
    assert!(recorder.take().is_empty(), "a heartbeat changes no state");
    let expired = add_duration(now, secs(60));
    rescue(store, expired).await;
    assert_eq!(
        recorder.take(),
        vec![(Some(Running), Some(Dead), ChangeCause::Rescued)]
    );
    assert!(complete(store, lease_of(&claimed), expired).await.is_err());
    assert!(
        recorder.take().is_empty(),
        "a refused completion is not a change"
    );
    store
        .job_retry_many(JobRetryManyParams {
            selector: JobSelector::Ids(vec![job.id]),
            now: expired,
        })
        .await
        .unwrap();
    assert_eq!(
        recorder.take(),
        vec![(Some(Dead), Some(Available), ChangeCause::Retried)]
    );
    let later = insert_one(store, new_job("b").run_at(add_duration(now, secs(90))), now).await;
    assert_eq!(later.state, Scheduled);
    recorder.take();
    claim(
        store,
        "w",
        &["default"],
        &["b"],
        1,
        add_duration(now, secs(91)),
    )
    .await;
    assert_eq!(
        recorder.take(),
        vec![
            (Some(Scheduled), Some(Available), ChangeCause::Promoted),
            (Some(Available), Some(Running), ChangeCause::Fetched),
        ]
    );
}
