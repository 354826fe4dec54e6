//! Parked claims: an idle fetch's claim runs inside the transaction that makes a job ready,
//! so the job is leased by the enqueue's own commit; one ready job takes one parked claim;
//! a withdrawn claim never leases anything.

use std::sync::Arc;
use std::time::Duration;

use rota_core::{Clock, Job, JobId, JobState, NewJob, SystemClock};
use rota_sqlite::{SqliteOptions, SqliteStore};
use rota_store::{JobClaimManyParams, JobGetParams, JobInsertManyParams, ParkedClaim, Store};
use serde_json::json;

fn open() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open_migrated(SqliteOptions::new(dir.path().join("rota.db"))).unwrap();
    (dir, store)
}

fn park(store: &SqliteStore, worker: &str, kinds: &[&str]) -> ParkedClaim {
    let claim = JobClaimManyParams {
        worker: worker.into(),
        queues: vec!["default".into()],
        kinds: kinds.iter().map(|k| k.to_string()).collect(),
        max: 1,
        lease: Duration::from_secs(30),
        now: SystemClock.now(),
    };
    store
        .job_claim_park(claim, Arc::new(SystemClock))
        .expect("SQLite parks claims")
}

async fn enqueue(store: &SqliteStore, kind: &str) -> JobId {
    store
        .job_insert_many(JobInsertManyParams {
            jobs: vec![NewJob::new("default", kind, json!({}))],
            defaults: Arc::default(),
            now: SystemClock.now(),
        })
        .await
        .unwrap()[0]
        .job
        .id
}

/// The parked claim's answer; a claim never answered fails the test instead of hanging it.
async fn answer(parked: &mut ParkedClaim) -> Vec<Job> {
    tokio::time::timeout(Duration::from_secs(5), parked.answered())
        .await
        .expect("the parked claim was not answered")
        .unwrap()
}

async fn get(store: &SqliteStore, id: JobId) -> Job {
    store.job_get(JobGetParams { id }).await.unwrap()
}

#[tokio::test]
async fn a_parked_claim_takes_the_next_job_in_the_enqueues_own_commit() {
    let (_dir, store) = open();
    let mut parked = park(&store, "w1", &[]);
    let before = store.writer_stats();
    let id = enqueue(&store, "mail").await;
    let jobs = answer(&mut parked).await;
    let after = store.writer_stats();
    assert_eq!(jobs.len(), 1);
    assert_eq!(jobs[0].id, id);
    assert_eq!(
        (
            after.transactions - before.transactions,
            after.parked_claims - before.parked_claims
        ),
        (1, 1),
        "enqueue and lease in one commit"
    );
    let stored = get(&store, id).await;
    assert_eq!(stored.state, JobState::Running);
    assert_eq!(stored.lease.as_ref().unwrap().worker, "w1");
    assert_eq!(stored.lease_token, jobs[0].lease_token);
}

#[tokio::test]
async fn one_ready_job_takes_one_of_several_parked_claims() {
    let (_dir, store) = open();
    let mut first = park(&store, "w1", &[]);
    let second = park(&store, "w2", &[]);
    let third = park(&store, "w3", &[]);
    let id = enqueue(&store, "mail").await;
    let jobs = answer(&mut first).await;
    assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![id]);
    assert!(
        second.withdraw().await.is_none(),
        "the second was not taken"
    );
    assert!(third.withdraw().await.is_none(), "the third was not taken");
    assert_eq!(store.writer_stats().parked_claims, 1);
}

#[tokio::test]
async fn a_withdrawn_claim_leases_nothing() {
    let (_dir, store) = open();
    let parked = park(&store, "w1", &[]);
    assert!(parked.withdraw().await.is_none());
    let id = enqueue(&store, "mail").await;
    assert_eq!(get(&store, id).await.state, JobState::Available);
    assert_eq!(store.writer_stats().parked_claims, 0);
}

#[tokio::test]
async fn a_parked_claim_waits_for_a_kind_it_takes() {
    let (_dir, store) = open();
    let mut parked = park(&store, "w1", &["image"]);
    let mail = enqueue(&store, "mail").await;
    assert_eq!(
        store.writer_stats().parked_claims,
        0,
        "not taken for a mail job"
    );
    assert_eq!(get(&store, mail).await.state, JobState::Available);
    let image = enqueue(&store, "image").await;
    let jobs = answer(&mut parked).await;
    assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![image]);
}

#[tokio::test]
async fn a_dropped_claim_leases_nothing() {
    let (_dir, store) = open();
    drop(park(&store, "gone", &[]));
    let id = enqueue(&store, "mail").await;
    assert_eq!(get(&store, id).await.state, JobState::Available);
    assert_eq!(store.writer_stats().parked_claims, 0);
}
