//! A nightly report on a schedule that lives in the server, not in a worker: restarting or
//! redeploying workers loses no run (a slot that came due while no worker ran waits as an
//! available job, and slots missed while the *server* was down are recovered by the misfire
//! policy). The schedule carries the job type's retry policy, so scheduled runs retry like
//! enqueued ones.
//!
//! ```text
//! rota serve &
//! cargo run -p rota --example nightly
//! rota schedules list                            # nightly-report, next slot 03:00 UTC
//! ```

use std::time::Duration;

use rota::{Client, Job, JobContext, JobFailure, RetryPolicy, Worker};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct NightlyReport {
    recipients: Vec<String>,
}

impl Job for NightlyReport {
    const KIND: &'static str = "reports.nightly";
    const QUEUE: &'static str = "reports";
    type Output = usize;
    fn retry() -> RetryPolicy {
        RetryPolicy::attempts(5)
    }
}

async fn report(job: NightlyReport, _: JobContext) -> Result<usize, JobFailure> {
    println!("report sent to {} recipients", job.recipients.len());
    Ok(job.recipients.len())
}

fn worker(client: &Client) -> Result<rota::Worker<rota::Registry>, rota::WorkerError> {
    Worker::builder(client.clone())
        .queue(NightlyReport::QUEUE, 1)
        .register::<NightlyReport, _>(report)
        .build()
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("ROTA_URL").unwrap_or_else(|_| "http://127.0.0.1:7700".into());
    let client = Client::new(&url)?;
    client
        .declare_queue(NightlyReport::QUEUE, &Default::default())
        .await?;
    let mut schedule = rota::schedule_request(
        "nightly-report",
        "0 3 * * *",
        &NightlyReport {
            recipients: vec!["ops@example.com".into()],
        },
    )?;
    schedule.timezone = Some("Europe/Berlin".into());
    schedule.misfire = Some("latest".into());
    let created = client.create_schedule(&schedule).await?;
    println!("schedule {} next at {:?}", created.name, created.next_slot);

    // A worker runs, then stops (a deploy)...
    let shutdown = tokio_util::sync::CancellationToken::new();
    let first = tokio::spawn(worker(&client)?.run_until(shutdown.clone()));
    tokio::time::sleep(Duration::from_secs(1)).await;
    shutdown.cancel();
    first.await??;

    // ...and while no worker runs, a slot comes due (here: triggered by hand). It waits.
    let _: serde_json::Value = client.schedule_action("nightly-report", "trigger").await?;
    println!("triggered while no worker runs");

    // The restarted worker picks it up.
    let shutdown = tokio_util::sync::CancellationToken::new();
    let second = tokio::spawn(worker(&client)?.run_until(shutdown.clone()));
    let runs = client
        .jobs(&[("kind", NightlyReport::KIND.into()), ("limit", "1".into())])
        .await?;
    if let Some(job) = runs.jobs.first() {
        let sent: usize = client.job_handle(job.id.clone()).wait().await?;
        println!("the run after the restart reached {sent} recipient(s)");
    }
    shutdown.cancel();
    second.await??;
    Ok(())
}
