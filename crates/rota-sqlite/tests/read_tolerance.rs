//! Any value the write path could ever store can be read back: one row must never make a
//! listing, a read, a claim or a wait fail (issue 18: a run_at saturated to the largest
//! timestamp made every read of its queue answer 500).

use std::sync::Arc;
use std::time::Duration;

use rota_core::{Clock, JobState, ManualClock, NewJob};
use rota_store::*;
use rota_testkit::TempSqlite;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_row_with_an_out_of_range_time_reads_and_its_queue_still_works() {
    let db = TempSqlite::new();
    let store = &*db.store;
    let now = ManualClock::default().now();
    let inserted = store
        .job_insert_many(JobInsertManyParams {
            jobs: vec![
                NewJob::new("default", "far", json!({}))
                    .run_at(rota_core::add_duration(now, Duration::from_secs(3600))),
                NewJob::new("default", "near", json!({})),
            ],
            defaults: Arc::default(),
            now,
        })
        .await
        .unwrap();
    let far = inserted[0].job.id;
    // As an older binary wrote it: the largest integer, beyond any timestamp.
    rusqlite::Connection::open(db.path())
        .unwrap()
        .execute(
            "UPDATE job SET run_at = ?1 WHERE id = ?2",
            rusqlite::params![i64::MAX, far.as_bytes()],
        )
        .unwrap();
    let job = store.job_get(JobGetParams { id: far }).await.unwrap();
    assert_eq!(job.run_at, jiff::Timestamp::MAX);
    let page = store
        .job_list(JobListParams {
            limit: 10,
            ..JobListParams::default()
        })
        .await
        .unwrap();
    assert_eq!(page.jobs.len(), 2);
    let due = store
        .job_next_due(JobNextDueParams {
            queues: vec!["default".into()],
        })
        .await
        .unwrap();
    assert_eq!(due, Some(jiff::Timestamp::MAX));
    let claimed = store
        .job_claim_many(JobClaimManyParams {
            worker: "w".into(),
            queues: vec!["default".into()],
            kinds: vec![],
            max: 10,
            lease: Duration::from_secs(30),
            now,
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1, "the due job is claimed");
    let cancelled = store
        .job_cancel_many(JobCancelManyParams {
            ids: vec![far],
            now,
        })
        .await
        .unwrap()
        .remove(0)
        .unwrap();
    assert_eq!(
        cancelled.state,
        JobState::Cancelled,
        "and the far one can be removed"
    );
}
