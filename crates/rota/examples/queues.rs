//! Three kinds of work, three queues, each with its own worker concurrency: emails (many at
//! once), payments (one at a time, never in parallel) and data sync (a few). The queue is part
//! of each job's type, so producer and worker cannot spell it differently — the incident where
//! jobs sat forever in a queue nobody read.
//!
//! Run it against a server:
//!
//! ```text
//! rota serve &                                   # http://127.0.0.1:7700, rota.db
//! cargo run -p rota --example queues             # ROTA_URL=... for another server
//! ```

use std::time::Duration;

use rota::{Client, Job, JobContext, JobFailure, RetryPolicy, Worker};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct SendEmail {
    to: String,
}

impl Job for SendEmail {
    const KIND: &'static str = "email.send";
    const QUEUE: &'static str = "emails";
    type Output = ();
}

#[derive(Serialize, Deserialize)]
struct ChargeCard {
    order: u64,
    cents: u64,
}

impl Job for ChargeCard {
    const KIND: &'static str = "payment.charge";
    const QUEUE: &'static str = "payments";
    type Output = String;
    fn retry() -> RetryPolicy {
        RetryPolicy::attempts(10)
    }
}

#[derive(Serialize, Deserialize)]
struct SyncAccount {
    account: u64,
}

impl Job for SyncAccount {
    const KIND: &'static str = "sync.account";
    const QUEUE: &'static str = "sync";
    type Output = u32;
    fn timeout() -> Option<Duration> {
        Some(Duration::from_secs(300))
    }
}

async fn send_email(email: SendEmail, _: JobContext) -> Result<(), JobFailure> {
    println!("email to {}", email.to);
    Ok(())
}

async fn charge(card: ChargeCard, _: JobContext) -> Result<String, JobFailure> {
    Ok(format!(
        "charged {} cents for order {}",
        card.cents, card.order
    ))
}

async fn sync(job: SyncAccount, ctx: JobContext) -> Result<u32, JobFailure> {
    ctx.progress(100, Some(format!("account {} synced", job.account)));
    Ok(3)
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("ROTA_URL").unwrap_or_else(|_| "http://127.0.0.1:7700".into());
    let client = Client::new(&url)?;
    for queue in [SendEmail::QUEUE, ChargeCard::QUEUE, SyncAccount::QUEUE] {
        client.declare_queue(queue, &Default::default()).await?;
    }
    let shutdown = tokio_util::sync::CancellationToken::new();
    let worker = Worker::builder(client.clone())
        .queue(SendEmail::QUEUE, 32)
        .queue(ChargeCard::QUEUE, 1)
        .queue(SyncAccount::QUEUE, 4)
        .register::<SendEmail, _>(send_email)
        .register::<ChargeCard, _>(charge)
        .register::<SyncAccount, _>(sync)
        .build()?;
    let running = tokio::spawn(worker.run_until(shutdown.clone()));

    client
        .enqueue_many((0..10).map(|i| SendEmail {
            to: format!("user{i}@example.com"),
        }))
        .await?;
    let receipt = client
        .enqueue(ChargeCard {
            order: 42,
            cents: 1999,
        })
        .unique("charge:42")
        .await?;
    let synced = client.enqueue(SyncAccount { account: 7 }).await?;
    println!("{}", receipt.wait().await?);
    println!("synced {} records", synced.wait().await?);

    shutdown.cancel();
    running.await??;
    Ok(())
}
