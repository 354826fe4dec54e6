//! The Rust SDK's transactional enqueue (feature `postgres`): a job enqueued inside the
//! application's own PostgreSQL transaction exists if and only if it commits, and a `rota
//! serve` node on the same database runs it once it does.

mod support;

use std::time::Duration;

use rota::{Job, JobContext, JobFailure, RetryPolicy, Worker};
use rota_testkit::TempPostgresDb;
use serde::{Deserialize, Serialize};
use support::Server;

#[derive(Serialize, Deserialize)]
struct ShipOrder {
    order: i32,
}

impl Job for ShipOrder {
    const KIND: &'static str = "order.ship";
    const QUEUE: &'static str = "orders";
    type Output = String;
    fn retry() -> RetryPolicy {
        RetryPolicy::attempts(7)
    }
}

async fn ship(job: ShipOrder, _: JobContext) -> Result<String, JobFailure> {
    Ok(format!("order {} shipped", job.order))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_enqueued_in_a_transaction_exists_only_if_it_commits() {
    let db = TempPostgresDb::new();
    let server = Server::start_with_args("[queues.orders]\n", &["--database", &db.url]);
    let client = server.client();
    // The server listens before it has migrated; the application's connection needs the
    // schema.
    support::eventually(Duration::from_secs(30), "the server ready", async || {
        client.ready().await.ok().filter(|(ok, _)| *ok)
    })
    .await;
    let (mut app, connection) = tokio_postgres::connect(&db.url, tokio_postgres::NoTls)
        .await
        .unwrap();
    tokio::spawn(connection);
    app.batch_execute("CREATE TABLE shop_orders (id int PRIMARY KEY)")
        .await
        .unwrap();

    let tx = app.transaction().await.unwrap();
    tx.execute("INSERT INTO shop_orders VALUES (1)", &[])
        .await
        .unwrap();
    let rolled_back = client
        .enqueue_in(&tx, ShipOrder { order: 1 })
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let err = rolled_back.get().await.unwrap_err();
    assert_eq!(err.error_code(), Some(rota::ErrorCode::NotFound), "{err}");

    let tx = app.transaction().await.unwrap();
    tx.execute("INSERT INTO shop_orders VALUES (2)", &[])
        .await
        .unwrap();
    let committed = client
        .enqueue_in(&tx, ShipOrder { order: 2 })
        .await
        .unwrap();
    // Not visible before the commit.
    assert!(committed.get().await.is_err());
    tx.commit().await.unwrap();

    let shutdown = tokio_util::sync::CancellationToken::new();
    let worker = Worker::builder(client.clone())
        .queue(ShipOrder::QUEUE, 2)
        .register::<ShipOrder, _>(ship)
        .build()
        .unwrap();
    let running = tokio::spawn(worker.run_until(shutdown.clone()));
    let shipped = committed.wait_for(Duration::from_secs(20)).await.unwrap();
    assert_eq!(shipped, "order 2 shipped");
    // The job's own policy travelled with it.
    assert_eq!(committed.get().await.unwrap().view.max_attempts, 7);

    // A queue that is not declared is refused inside the transaction too, by name.
    #[derive(Serialize, Deserialize)]
    struct Lost;
    impl Job for Lost {
        const KIND: &'static str = "lost";
        const QUEUE: &'static str = "nobody-reads-this";
        type Output = ();
    }
    let tx = app.transaction().await.unwrap();
    let err = client.enqueue_in(&tx, Lost).await.unwrap_err();
    assert!(
        format!("{err:#}").contains("nobody-reads-this")
            || format!("{err:?}").contains("nobody-reads-this"),
        "{err:?}"
    );
    drop(tx);
    shutdown.cancel();
    running.await.unwrap().unwrap();
}
