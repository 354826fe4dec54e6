//! The Rust SDK (`rota` crate) end to end: typed jobs enqueued with the typed client and run
//! by `Worker::builder`, against a real `rota serve` process over HTTP and against the
//! embedded server (feature `embedded`). Every case runs on both: the same suite.

mod support;

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rota::api::JobState;
use rota::{Backoff, Client, Job, JobContext, JobFailure, RetryPolicy, WaitError, Worker};
use serde::{Deserialize, Serialize};
use tokio_util::sync::CancellationToken;

const QUEUE: &str = "sdk";

/// Where the suite runs: a `rota serve` process, or the embedded server.
enum Target {
    Process(support::Server),
    Embedded(rota::testing::TestServer),
}

impl Target {
    async fn process() -> Self {
        Target::Process(support::Server::start(&format!("[queues.{QUEUE}]\n")))
    }

    async fn embedded() -> Self {
        Target::Embedded(rota::testing::TestServer::start(&[QUEUE]).await)
    }

    fn client(&self) -> Client {
        match self {
            Target::Process(server) => server.client(),
            Target::Embedded(server) => server.client(),
        }
    }
}

/// Runs each case against both targets.
macro_rules! on_both_targets {
    ($($case:ident),* $(,)?) => {
        mod http {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Target::process().await).await
                }
            )*
        }
        mod embedded {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $case() {
                    super::$case(super::Target::embedded().await).await
                }
            )*
        }
    };
}

on_both_targets!(
    a_typed_job_round_trips,
    undecodable_arguments_fail_for_good_naming_the_field,
    a_panic_is_recorded_and_retried,
    a_handler_past_its_timeout_is_cancelled_and_retried,
    graceful_shutdown_hands_unfinished_jobs_back_at_once,
    a_cancel_reaches_the_running_handler_within_a_heartbeat,
);

/// Runs `worker` in the background until the returned token is cancelled.
fn spawn(
    worker: rota::WorkerBuilder,
) -> (
    CancellationToken,
    tokio::task::JoinHandle<Result<(), rota::WorkerError>>,
) {
    let worker = worker.build().expect("the worker builds");
    let shutdown = CancellationToken::new();
    (shutdown.clone(), tokio::spawn(worker.run_until(shutdown)))
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Resize {
    width: u32,
    height: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Thumbnail {
    pixels: u64,
    label: String,
}

impl Job for Resize {
    const KIND: &'static str = "images.resize";
    const QUEUE: &'static str = QUEUE;
    type Output = Thumbnail;
    fn retry() -> RetryPolicy {
        RetryPolicy::attempts(3)
    }
}

async fn resize(job: Resize, ctx: JobContext) -> Result<Thumbnail, JobFailure> {
    if job.width == 0 {
        return Err(ctx.discard("width must be positive"));
    }
    Ok(Thumbnail {
        pixels: u64::from(job.width) * u64::from(job.height),
        label: format!("{}x{} on attempt {}", job.width, job.height, ctx.attempt()),
    })
}

async fn a_typed_job_round_trips(target: Target) {
    let client = target.client();
    let (shutdown, running) = spawn(
        Worker::builder(client.clone())
            .queue(QUEUE, 4)
            .register::<Resize, _>(resize),
    );
    let handle = client
        .enqueue(Resize {
            width: 3,
            height: 4,
        })
        .priority(1)
        .await
        .unwrap();
    let thumbnail: Thumbnail = handle.wait().await.unwrap();
    assert_eq!(
        thumbnail,
        Thumbnail {
            pixels: 12,
            label: "3x4 on attempt 1".into()
        }
    );
    // The policy travelled with the job.
    let status = handle.get().await.unwrap();
    assert_eq!(status.state(), JobState::Completed);
    assert_eq!(status.view.max_attempts, 3);
    assert_eq!(status.view.priority, 1);

    // Many in one request; each handle gives its own typed output.
    let handles = client
        .enqueue_many((1..=5).map(|w| Resize {
            width: w,
            height: 10,
        }))
        .await
        .unwrap();
    for (w, handle) in (1..=5u64).zip(&handles) {
        assert_eq!(handle.wait().await.unwrap().pixels, w * 10);
    }

    // Untyped interop: by kind and JSON, the result read as JSON.
    let raw = client
        .enqueue_json(
            QUEUE,
            "images.resize",
            serde_json::json!({"width": 2, "height": 2}),
        )
        .await
        .unwrap();
    assert_eq!(raw.wait().await.unwrap()["pixels"], 4);

    // A discard is dead at once, with the reason.
    let discarded = client
        .enqueue(Resize {
            width: 0,
            height: 1,
        })
        .await
        .unwrap();
    match discarded.wait().await {
        Err(WaitError::Dead {
            attempts, message, ..
        }) => {
            assert_eq!(attempts, 1);
            assert_eq!(message, "width must be positive");
        }
        other => panic!("expected dead, got {other:?}"),
    }
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

async fn undecodable_arguments_fail_for_good_naming_the_field(target: Target) {
    let client = target.client();
    let (shutdown, running) = spawn(
        Worker::builder(client.clone())
            .queue(QUEUE, 2)
            .register::<Resize, _>(resize),
    );
    let bad = client
        .enqueue_json(
            QUEUE,
            "images.resize",
            serde_json::json!({"width": "wide", "height": 1}),
        )
        .await
        .unwrap();
    match bad.wait().await {
        Err(WaitError::Dead {
            attempts, message, ..
        }) => {
            assert_eq!(attempts, 1, "not retried");
            assert!(message.contains("images.resize"), "{message}");
            assert!(message.contains("`width`"), "{message}");
        }
        other => panic!("expected dead, got {other:?}"),
    }
    // The worker keeps going.
    let good = client
        .enqueue(Resize {
            width: 1,
            height: 1,
        })
        .await
        .unwrap();
    assert_eq!(good.wait().await.unwrap().pixels, 1);
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

#[derive(Serialize, Deserialize)]
struct Flaky;

impl Job for Flaky {
    const KIND: &'static str = "flaky";
    const QUEUE: &'static str = QUEUE;
    type Output = u32;
    fn retry() -> RetryPolicy {
        RetryPolicy::attempts(3).backoff(Backoff::Fixed {
            interval: Duration::from_secs(1),
        })
    }
}

async fn a_panic_is_recorded_and_retried(target: Target) {
    let client = target.client();
    let (shutdown, running) = spawn(
        Worker::builder(client.clone())
            .queue(QUEUE, 2)
            .register::<Flaky, _>(|_: Flaky, ctx: JobContext| async move {
                if ctx.attempt() == 1 {
                    panic!("the first attempt always breaks");
                }
                Ok(ctx.attempt())
            })
            .register::<Resize, _>(resize),
    );
    let handle = client.enqueue(Flaky).await.unwrap();
    assert_eq!(handle.wait().await.unwrap(), 2, "retried after the panic");
    let view = handle.get().await.unwrap().view;
    assert_eq!(view.errors.len(), 1);
    let error = &view.errors[0];
    assert_eq!(
        error.message,
        "handler panicked: the first attempt always breaks"
    );
    let backtrace = error.backtrace.as_deref().unwrap_or_default();
    assert!(
        backtrace.contains("sdk"),
        "the backtrace shows where: {backtrace}"
    );
    // The worker is still running jobs.
    let after = client
        .enqueue(Resize {
            width: 2,
            height: 1,
        })
        .await
        .unwrap();
    assert_eq!(after.wait().await.unwrap().pixels, 2);
    assert!(!running.is_finished());
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

#[derive(Serialize, Deserialize)]
struct Slow;

impl Job for Slow {
    const KIND: &'static str = "slow";
    const QUEUE: &'static str = QUEUE;
    type Output = ();
    fn retry() -> RetryPolicy {
        RetryPolicy::attempts(2).backoff(Backoff::Fixed {
            interval: Duration::from_secs(1),
        })
    }
    fn timeout() -> Option<Duration> {
        Some(Duration::from_secs(1))
    }
}

/// Sets its flag when dropped: a handler future dropped mid-await drops it.
struct DropFlag(Arc<AtomicBool>);

impl Drop for DropFlag {
    fn drop(&mut self) {
        self.0.store(true, Ordering::SeqCst);
    }
}

async fn a_handler_past_its_timeout_is_cancelled_and_retried(target: Target) {
    let client = target.client();
    let dropped = Arc::new(AtomicBool::new(false));
    let flag = dropped.clone();
    let (shutdown, running) = spawn(
        Worker::builder(client.clone())
            .queue(QUEUE, 2)
            .register::<Slow, _>(move |_: Slow, ctx: JobContext| {
                let guard = DropFlag(flag.clone());
                async move {
                    if ctx.attempt() == 1 {
                        // Ignores its stop token: only dropping the future ends it.
                        tokio::time::sleep(Duration::from_secs(60)).await;
                    }
                    std::mem::forget(guard);
                    Ok(())
                }
            }),
    );
    let started = Instant::now();
    let handle = client.enqueue(Slow).await.unwrap();
    handle.wait().await.unwrap();
    assert!(started.elapsed() < Duration::from_secs(20));
    assert!(
        dropped.load(Ordering::SeqCst),
        "the first attempt's future was dropped"
    );
    let view = handle.get().await.unwrap().view;
    assert_eq!(view.attempt, 2);
    assert!(
        view.errors[0].message.contains("timed out"),
        "{:?}",
        view.errors
    );
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

#[derive(Serialize, Deserialize)]
struct Nap {
    long: bool,
}

impl Job for Nap {
    const KIND: &'static str = "nap";
    const QUEUE: &'static str = QUEUE;
    type Output = ();
}

async fn graceful_shutdown_hands_unfinished_jobs_back_at_once(target: Target) {
    let client = target.client();
    let started = Arc::new(AtomicUsize::new(0));
    // Every handler run that finished, by job id: each must appear once.
    let finished: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
    let (first_started, first_finished) = (started.clone(), finished.clone());
    let first = Worker::builder(client.clone())
        .queue(QUEUE, 10)
        .grace(Duration::from_secs(2))
        .register::<Nap, _>(move |nap: Nap, ctx: JobContext| {
            let (started, finished) = (first_started.clone(), first_finished.clone());
            async move {
                started.fetch_add(1, Ordering::SeqCst);
                let nap = if nap.long { 300 } else { 1 };
                tokio::time::sleep(Duration::from_secs(nap)).await;
                *finished
                    .lock()
                    .unwrap()
                    .entry(ctx.id.to_string())
                    .or_default() += 1;
                Ok(())
            }
        });
    let handles = client
        .enqueue_many((0..10).map(|i| Nap { long: i % 2 == 0 }))
        .await
        .unwrap();
    let (shutdown, running) = spawn(first);
    support::eventually(Duration::from_secs(10), "10 jobs running", async || {
        (started.load(Ordering::SeqCst) == 10).then_some(())
    })
    .await;
    shutdown.cancel();
    let stopping = Instant::now();
    running.await.unwrap().unwrap();
    assert!(
        stopping.elapsed() < Duration::from_secs(5),
        "stopped within the grace and a little: {:?}",
        stopping.elapsed()
    );
    // The short ones finished within the grace; the long ones are available again at once,
    // not after their 30 s lease, and no attempt was used.
    let mut long = vec![];
    for (i, handle) in handles.iter().enumerate() {
        let view = handle.get().await.unwrap().view;
        if i % 2 == 0 {
            assert_eq!(view.state, JobState::Available, "{view:?}");
            long.push(handle.clone());
        } else {
            assert_eq!(view.state, JobState::Completed, "{view:?}");
        }
    }
    assert_eq!(finished.lock().unwrap().len(), 5);

    let second_finished = finished.clone();
    let (shutdown, running) = spawn(
        Worker::builder(client.clone())
            .queue(QUEUE, 10)
            .register::<Nap, _>(move |_: Nap, ctx: JobContext| {
                let finished = second_finished.clone();
                async move {
                    *finished
                        .lock()
                        .unwrap()
                        .entry(ctx.id.to_string())
                        .or_default() += 1;
                    Ok(())
                }
            }),
    );
    for handle in &long {
        handle.wait_for(Duration::from_secs(10)).await.unwrap();
    }
    shutdown.cancel();
    running.await.unwrap().unwrap();
    let finished = finished.lock().unwrap().clone();
    assert_eq!(finished.len(), 10, "none lost");
    assert!(
        finished.values().all(|&n| n == 1),
        "none twice: {finished:?}"
    );
    for handle in &handles {
        let view = handle.get().await.unwrap().view;
        assert_eq!(view.state, JobState::Completed);
        assert_eq!(view.attempt, 1, "the hand-back used no attempt");
    }
}

#[derive(Serialize, Deserialize)]
struct Watch;

impl Job for Watch {
    const KIND: &'static str = "watch";
    const QUEUE: &'static str = QUEUE;
    type Output = ();
}

async fn a_cancel_reaches_the_running_handler_within_a_heartbeat(target: Target) {
    let client = target.client();
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<&'static str>();
    let (shutdown, running) = spawn(
        Worker::builder(client.clone())
            .queue(QUEUE, 2)
            .register::<Watch, _>(move |_: Watch, ctx: JobContext| {
                let tx = tx.clone();
                async move {
                    tx.send("started").unwrap();
                    ctx.cancellation().cancelled().await;
                    tx.send("saw the cancel").unwrap();
                    Ok(())
                }
            }),
    );
    let handle = client.enqueue(Watch).await.unwrap();
    assert_eq!(rx.recv().await, Some("started"));
    let asked = Instant::now();
    handle.cancel().await.unwrap();
    assert_eq!(rx.recv().await, Some("saw the cancel"));
    let took = asked.elapsed();
    assert!(
        took <= rota::worker::CANCEL_CHECK + Duration::from_millis(500),
        "the cancel took {took:?}"
    );
    match handle.wait_for(Duration::from_secs(10)).await {
        Err(WaitError::Cancelled { .. }) => {}
        other => panic!("expected cancelled, got {other:?}"),
    }
    shutdown.cancel();
    running.await.unwrap().unwrap();
}

/// The test helper users are told to use: a throwaway embedded server and `drain`, which runs
/// a real worker until the queue has nothing ready or running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drain_runs_a_real_worker_until_the_queue_is_empty() {
    let server = rota::testing::TestServer::start(&[QUEUE]).await;
    let client = server.client();
    client
        .enqueue_many((1..=5).map(|w| Resize {
            width: w,
            height: 2,
        }))
        .await
        .unwrap();
    let discarded = client
        .enqueue(Resize {
            width: 0,
            height: 2,
        })
        .await
        .unwrap();
    // Arguments that only the real JSON round trip can reject.
    client
        .enqueue_json(
            QUEUE,
            Resize::KIND,
            serde_json::json!({"width": -1, "height": 2}),
        )
        .await
        .unwrap();
    let drained = server
        .drain(
            server
                .worker()
                .queue(QUEUE, 4)
                .register::<Resize, _>(resize),
        )
        .await;
    assert_eq!(
        drained,
        rota::testing::Drained {
            completed: 5,
            dead: 2,
            cancelled: 0,
            waiting: 0
        }
    );
    assert!(matches!(
        discarded.wait().await,
        Err(WaitError::Dead { .. })
    ));
}

/// A worker with jobs to run reports completions with its next fetch: one
/// `/v1/complete-and-fetch` request per batch, not a complete and a fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_draining_worker_reports_with_its_fetches() {
    let server = support::Server::start(&format!("[queues.{QUEUE}]\n"));
    let client = server.client();
    let handles = client
        .enqueue_many((1..=400).map(|w| Resize {
            width: w,
            height: 1,
        }))
        .await
        .unwrap();
    let (shutdown, running) = spawn(
        Worker::builder(client.clone())
            .queue(QUEUE, 8)
            .register::<Resize, _>(resize),
    );
    for (w, handle) in (1..=400u64).zip(&handles) {
        assert_eq!(handle.wait().await.unwrap().pixels, w);
    }
    shutdown.cancel();
    running.await.unwrap().unwrap();
    let metrics = server.metrics().await;
    let requests = |route: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("rota_http_requests_total{"))
            .filter(|l| l.contains(&format!("route=\"{route}\"")))
            .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .sum()
    };
    let (combined, alone) = (requests("/v1/complete-and-fetch"), requests("/v1/complete"));
    assert!(
        combined > 0.0 && combined > alone,
        "completions ride with fetches: {combined} complete-and-fetch, {alone} complete"
    );
    let counts = client.queue(QUEUE).await.unwrap();
    assert_eq!(
        counts.counts.get("completed"),
        Some(&400),
        "each job completed once"
    );
}
