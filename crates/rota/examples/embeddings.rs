//! Regenerating embeddings for many documents: the handler reports progress as it goes (sent
//! in the background, never blocking the work), and the producer watches it — progress
//! through `get`, the result through `wait`, which long-polls the server instead of polling.
//!
//! ```text
//! rota serve &
//! cargo run -p rota --example embeddings
//! ```

use std::time::Duration;

use rota::{Client, Job, JobContext, JobFailure, Worker};
use serde::{Deserialize, Serialize};

#[derive(Serialize, Deserialize)]
struct RegenerateEmbeddings {
    collection: String,
    documents: u32,
}

#[derive(Debug, Serialize, Deserialize)]
struct Regenerated {
    vectors: u32,
}

impl Job for RegenerateEmbeddings {
    const KIND: &'static str = "embeddings.regenerate";
    const QUEUE: &'static str = "ml";
    type Output = Regenerated;
    fn timeout() -> Option<Duration> {
        Some(Duration::from_secs(600))
    }
}

async fn regenerate(job: RegenerateEmbeddings, ctx: JobContext) -> Result<Regenerated, JobFailure> {
    for done in 1..=job.documents {
        if ctx.cancellation().is_cancelled() {
            return Err(JobFailure::retry("stopped early"));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let percent = (done * 100 / job.documents) as u8;
        ctx.progress(
            percent,
            Some(format!("{done}/{} of {}", job.documents, job.collection)),
        );
    }
    Ok(Regenerated {
        vectors: job.documents,
    })
}

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let url = std::env::var("ROTA_URL").unwrap_or_else(|_| "http://127.0.0.1:7700".into());
    let client = Client::new(&url)?;
    client
        .declare_queue(RegenerateEmbeddings::QUEUE, &Default::default())
        .await?;
    let shutdown = tokio_util::sync::CancellationToken::new();
    let worker = Worker::builder(client.clone())
        .queue(RegenerateEmbeddings::QUEUE, 2)
        .register::<RegenerateEmbeddings, _>(regenerate)
        .build()?;
    let running = tokio::spawn(worker.run_until(shutdown.clone()));

    let handle = client
        .enqueue(RegenerateEmbeddings {
            collection: "handbook".into(),
            documents: 30,
        })
        .await?;
    let watcher = {
        let handle = handle.clone();
        tokio::spawn(async move {
            loop {
                let status = handle.get().await?;
                if let Some((percent, message)) = status.progress() {
                    println!("{percent:>3} % {}", message.unwrap_or_default());
                }
                if status.is_final() {
                    return Ok::<_, rota::ClientError>(());
                }
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
        })
    };
    let done = handle.wait().await?;
    println!("done: {done:?}");
    watcher.await??;
    shutdown.cancel();
    running.await??;
    Ok(())
}
