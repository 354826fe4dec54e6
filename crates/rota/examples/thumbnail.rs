//! A thumbnail job that fails: it is retried 3 times, 2 seconds apart — the policy is part of
//! the job's type, so it applies wherever the job is enqueued from — and then it is dead, its
//! last error and backtrace kept for `rota dead list` and `rota jobs show`.
//!
//! ```text
//! rota serve &
//! cargo run -p rota --example thumbnail
//! rota jobs show <the id it prints>              # every attempt, with its backtrace
//! ```

use std::time::Duration;

use rota::{Backoff, Client, Job, JobContext, JobFailure, RetryPolicy, WaitError, Worker};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct Thumbnail {
    image: String,
    width: u32,
}

impl Job for Thumbnail {
    const KIND: &'static str = "images.thumbnail";
    const QUEUE: &'static str = "media";
    type Output = String;
    fn retry() -> RetryPolicy {
        RetryPolicy::attempts(3).backoff(Backoff::Fixed {
            interval: Duration::from_secs(2),
        })
    }
}

async fn thumbnail(job: Thumbnail, ctx: JobContext) -> Result<String, JobFailure> {
    println!("attempt {} at {}", ctx.attempt(), job.image);
    // A corrupt image: the decoder panics. The panic is caught, recorded with its backtrace,
    // and the job retried; the worker keeps running.
    let header: Vec<u8> = Vec::new();
    let magic = header[0];
    Ok(format!("{}px thumbnail, magic {magic}", job.width))
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("ROTA_URL").unwrap_or_else(|_| "http://127.0.0.1:7700".into());
    let client = Client::new(&url)?;
    client
        .declare_queue(Thumbnail::QUEUE, &Default::default())
        .await?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let worker = Worker::builder(client.clone())
        .queue(Thumbnail::QUEUE, 4)
        .register::<Thumbnail, _>(thumbnail)
        .build()?;
    let running = tokio::spawn(worker.run_until(shutdown.clone()));

    let handle = client
        .enqueue(Thumbnail {
            image: "s3://bucket/corrupt.png".into(),
            width: 128,
        })
        .await?;
    println!("job {}", handle.id());
    match handle.wait().await {
        Err(WaitError::Dead {
            attempts,
            message,
            backtrace,
            ..
        }) => {
            println!("dead after {attempts} attempts: {message}");
            let lines = backtrace.unwrap_or_default();
            println!("backtrace (first lines):");
            for line in lines.lines().take(8) {
                println!("  {line}");
            }
        }
        other => println!("unexpected: {other:?}"),
    }
    shutdown.cancel();
    running.await??;
    Ok(())
}
