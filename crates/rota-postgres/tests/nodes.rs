//! Two stores on one database, as two nodes see it: cross-node notifications, and enqueues
//! inside a caller's own transaction.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use rota_core::{JobState, NewJob};
use rota_postgres::{PostgresOptions, PostgresStore};
use rota_store::*;
use rota_testkit::TempPostgresDb;

/// Records what a node hears, local and remote apart.
#[derive(Default)]
struct Heard {
    local: Mutex<Vec<JobChange>>,
    remote: Mutex<Vec<JobChange>>,
}

impl Notifier for Heard {
    fn notify(&self, changes: &[JobChange]) {
        self.local.lock().unwrap().extend_from_slice(changes);
    }

    fn notify_remote(&self, changes: &[JobChange]) {
        self.remote.lock().unwrap().extend_from_slice(changes);
    }
}

impl Heard {
    fn remote_ids(&self) -> Vec<rota_core::JobId> {
        self.remote.lock().unwrap().iter().map(|c| c.id).collect()
    }
}

async fn node(db: &TempPostgresDb) -> (Arc<PostgresStore>, Arc<Heard>) {
    let store = Arc::new(
        PostgresStore::open_migrated(PostgresOptions::new(&db.url))
            .await
            .unwrap(),
    );
    let heard = Arc::new(Heard::default());
    store.notifier_set(heard.clone());
    (store, heard)
}

fn insert(jobs: Vec<NewJob>) -> JobInsertManyParams {
    JobInsertManyParams {
        jobs,
        defaults: Arc::default(),
        now: jiff::Timestamp::now(),
    }
}

async fn within(what: &str, check: impl Fn() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    while !check() {
        assert!(tokio::time::Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// What one node commits, the other hears as a remote change; a node never hears its own
/// changes as remote; a claim (a fetch) is not sent; a completion is.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn changes_on_one_node_reach_the_other_as_hints() {
    let db = tokio::task::spawn_blocking(TempPostgresDb::new)
        .await
        .unwrap();
    let (a, heard_a) = node(&db).await;
    let (b, heard_b) = node(&db).await;
    // Both listeners are connected once each hears the other's first change.
    let job = a
        .job_insert_many(insert(vec![NewJob::new(
            "default",
            "k",
            serde_json::json!({}),
        )]))
        .await
        .unwrap()
        .remove(0)
        .job;
    within("b hears a's enqueue", || {
        heard_b.remote_ids().contains(&job.id)
    })
    .await;
    assert_eq!(
        heard_a.local.lock().unwrap().len(),
        1,
        "a heard its own, locally"
    );
    let claimed = b
        .job_claim_many(JobClaimManyParams {
            worker: "w".into(),
            queues: vec!["default".into()],
            kinds: vec![],
            max: 1,
            lease: Duration::from_secs(30),
            now: jiff::Timestamp::now(),
        })
        .await
        .unwrap();
    b.job_complete_many(JobCompleteManyParams {
        completions: vec![Completion {
            lease: LeaseRef {
                job: job.id,
                token: claimed[0].lease.as_ref().unwrap().token,
            },
            result: None,
        }],
        now: jiff::Timestamp::now(),
    })
    .await
    .unwrap();
    within("a hears b's completion", || {
        heard_a
            .remote
            .lock()
            .unwrap()
            .iter()
            .any(|c| c.id == job.id && c.to == Some(JobState::Completed))
    })
    .await;
    let a_remote = heard_a.remote.lock().unwrap().clone();
    assert!(
        a_remote.iter().all(|c| c.to != Some(JobState::Running)),
        "fetches are not sent: {a_remote:?}"
    );
    assert!(
        heard_b
            .remote
            .lock()
            .unwrap()
            .iter()
            .all(|c| c.to != Some(JobState::Completed)),
        "b does not hear its own completion as remote"
    );
}

/// A job enqueued in the caller's transaction exists if and only if it commits, and every
/// node hears of it only then.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_transactional_enqueue_exists_only_if_the_transaction_commits() {
    let db = tokio::task::spawn_blocking(TempPostgresDb::new)
        .await
        .unwrap();
    let (a, heard_a) = node(&db).await;
    let (mut client, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    client
        .batch_execute("CREATE TABLE orders (id int PRIMARY KEY)")
        .await
        .unwrap();

    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO orders VALUES (1)", &[])
        .await
        .unwrap();
    let rolled_back = PostgresStore::enqueue_in(
        &tx,
        insert(vec![NewJob::new(
            "default",
            "order.ship",
            serde_json::json!({"order": 1}),
        )]),
    )
    .await
    .unwrap()
    .remove(0)
    .job;
    tx.rollback().await.unwrap();
    let err = a
        .job_get(JobGetParams { id: rolled_back.id })
        .await
        .unwrap_err();
    assert!(matches!(err, StoreError::JobNotFound(_)), "{err}");

    let tx = client.transaction().await.unwrap();
    tx.execute("INSERT INTO orders VALUES (2)", &[])
        .await
        .unwrap();
    let committed = PostgresStore::enqueue_in(
        &tx,
        insert(vec![NewJob::new(
            "default",
            "order.ship",
            serde_json::json!({"order": 2}),
        )]),
    )
    .await
    .unwrap()
    .remove(0)
    .job;
    // Not visible, and not announced, before the commit.
    assert!(a.job_get(JobGetParams { id: committed.id }).await.is_err());
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(
        heard_a.remote_ids().is_empty(),
        "nothing announced before the commit"
    );
    tx.commit().await.unwrap();
    within("the node hears the committed enqueue", || {
        heard_a.remote_ids().contains(&committed.id)
    })
    .await;
    assert!(!heard_a.remote_ids().contains(&rolled_back.id));
    let claimed = a
        .job_claim_many(JobClaimManyParams {
            worker: "w".into(),
            queues: vec!["default".into()],
            kinds: vec![],
            max: 10,
            lease: Duration::from_secs(30),
            now: jiff::Timestamp::now(),
        })
        .await
        .unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].id, committed.id);
    let counts = a.job_counts(JobCountsParams::default()).await.unwrap();
    let running: u64 = counts
        .iter()
        .filter(|c| c.state == JobState::Running)
        .map(|c| c.count)
        .sum();
    assert_eq!(
        running, 1,
        "counts include the transactional enqueue: {counts:?}"
    );
}
