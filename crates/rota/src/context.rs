//! What a handler is given and what it gives back: [`JobContext`] (the job, its lease, its
//! stop token, progress and checkpoints sent in the background) and [`Outcome`].

use std::sync::Arc;
use std::time::Duration;

use rota_api::{CheckpointRequest, LeasedJob, ProgressRequest};
use rota_core::JobId;
use serde_json::Value;
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::Client;

/// What a handler made of a job.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    /// Done, with an optional result.
    Completed(Option<Value>),
    /// Failed: retried after its backoff, or dead when out of attempts (or `discard`).
    Failed {
        /// What went wrong.
        message: String,
        /// Where, if known.
        backtrace: Option<String>,
        /// Do not retry.
        discard: bool,
    },
    /// Run again after this long, without using an attempt.
    Snoozed(Duration),
    /// The handler stopped because [`JobContext::stop`] asked it to; what is reported
    /// then depends on why it was asked (a timeout fails the attempt, a shutdown hands the
    /// job back, a cancel ends it cancelled).
    Stopped,
}

impl Outcome {
    /// A retryable failure with `message`.
    pub fn failed(message: impl Into<String>) -> Self {
        Outcome::Failed {
            message: message.into(),
            backtrace: None,
            discard: false,
        }
    }
}

/// The latest progress report and checkpoint of a job, not yet sent.
#[derive(Debug, Clone, Default)]
pub(crate) struct LatestProgress {
    pub(crate) progress: Option<(u8, Option<String>)>,
    pub(crate) checkpoint: Option<serde_json::Value>,
}

/// One job handed to a handler.
#[derive(Debug, Clone)]
pub struct JobContext {
    /// The job as fetched (the whole job is [`Client::job`]).
    pub job: LeasedJob,
    /// Its id.
    pub id: JobId,
    /// The lease token every report presents.
    pub token: u64,
    /// Cancelled when the job must stop early: it was cancelled, timed out, lost its lease,
    /// or is handed back at shutdown. The handler should then stop what it started and
    /// return; the runtime waits for it (up to [`WorkerOptions::kill_grace`] and a little
    /// more) before it reports, so nothing of the job outlives the report.
    pub stop: CancellationToken,
    pub(crate) progress: Arc<ProgressSender>,
}

impl JobContext {
    /// A context for `job` outside a worker (its progress goes nowhere).
    #[cfg(test)]
    pub(crate) fn detached(job: LeasedJob) -> Self {
        let id: JobId = job.id.parse().expect("a job id");
        let token = job.lease_token;
        let client = Client::new("http://127.0.0.1:9").expect("a valid URL");
        Self {
            id,
            token,
            job,
            stop: CancellationToken::new(),
            progress: Arc::new(ProgressSender::new(client, id, token)),
        }
    }

    /// The attempt this run is (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.job.attempt
    }

    /// The job's kind.
    pub fn kind(&self) -> &str {
        &self.job.kind
    }

    /// The token cancelled when the job must stop early (see [`JobContext::stop`]): a cancel
    /// requested through the API reaches it within a heartbeat interval.
    pub fn cancellation(&self) -> &CancellationToken {
        &self.stop
    }

    /// Reports progress (0..=100 and an optional message). It never waits: the latest value
    /// is sent in the background, at most every [`PROGRESS_EVERY`], so a flood of progress
    /// costs one request per interval.
    pub fn progress(&self, percent: u8, message: Option<String>) {
        self.progress
            .update(|latest| latest.progress = Some((percent, message)));
    }

    /// Saves a checkpoint (small JSON) that the job's next attempt receives, if this one
    /// fails. Like progress it never waits: the latest is sent in the background.
    pub fn checkpoint(&self, checkpoint: serde_json::Value) {
        self.progress
            .update(|latest| latest.checkpoint = Some(checkpoint));
    }
}

/// The progress last sent for a job, so the last report of a finished job is not lost to
/// the interval.
pub(crate) type SentProgress = Arc<std::sync::Mutex<Option<(u8, Option<String>)>>>;

/// A job's progress and checkpoints on their way to the server: the background task that
/// sends them starts with the first report, so a job that reports none costs nothing.
#[derive(Debug)]
pub(crate) struct ProgressSender {
    client: Client,
    job: JobId,
    token: u64,
    latest: tokio::sync::watch::Sender<LatestProgress>,
    sent: SentProgress,
    task: std::sync::OnceLock<tokio::task::JoinHandle<()>>,
}

impl ProgressSender {
    pub(crate) fn new(client: Client, job: JobId, token: u64) -> Self {
        Self {
            client,
            job,
            token,
            latest: tokio::sync::watch::channel(LatestProgress::default()).0,
            sent: SentProgress::default(),
            task: std::sync::OnceLock::new(),
        }
    }

    fn update(&self, change: impl FnOnce(&mut LatestProgress)) {
        self.task.get_or_init(|| {
            tokio::spawn(send_progress(
                self.client.clone(),
                self.job.to_string(),
                self.token,
                self.latest.subscribe(),
                self.sent.clone(),
            ))
        });
        self.latest.send_modify(change);
    }

    /// The job ended: stops the background sender and sends what it has not, the checkpoint
    /// first (the next attempt depends on it reaching the server before the outcome).
    pub(crate) async fn finish(&self) {
        let Some(task) = self.task.get() else {
            return;
        };
        task.abort();
        let latest = self.latest.borrow().clone();
        let job = self.job.to_string();
        if let Some(checkpoint) = latest.checkpoint {
            let request = CheckpointRequest {
                token: self.token,
                checkpoint,
            };
            if let Err(err) = self.client.checkpoint(&job, &request).await {
                warn!(job = %job, error = %err, "could not save the checkpoint");
            }
        }
        if latest.progress.is_none()
            || latest.progress == *self.sent.lock().expect("sent progress poisoned")
        {
            return;
        }
        let (percent, message) = latest.progress.expect("checked");
        let request = ProgressRequest {
            token: self.token,
            percent,
            message,
        };
        if let Err(err) = self.client.progress(&job, &request).await {
            warn!(job = %job, error = %err, "could not report progress");
        }
    }
}

/// Longest progress reports wait for one another: only the latest value in each interval
/// is sent.
pub const PROGRESS_EVERY: Duration = Duration::from_millis(500);

/// Sends a job's latest progress while it runs, at most every [`PROGRESS_EVERY`].
async fn send_progress(
    client: Client,
    job: String,
    token: u64,
    mut latest: tokio::sync::watch::Receiver<LatestProgress>,
    sent: SentProgress,
) {
    let mut sent_checkpoint = None;
    let mut sent_progress = None;
    while latest.changed().await.is_ok() {
        let now = latest.borrow_and_update().clone();
        if now.checkpoint.is_some() && now.checkpoint != sent_checkpoint {
            let checkpoint = now.checkpoint.clone().expect("checked");
            let request = CheckpointRequest { token, checkpoint };
            match client.checkpoint(&job, &request).await {
                Ok(_) => sent_checkpoint = now.checkpoint.clone(),
                Err(err) => warn!(job = %job, error = %err, "could not save the checkpoint"),
            }
        }
        if let Some((percent, message)) = now
            .progress
            .clone()
            .filter(|_| now.progress != sent_progress)
        {
            let answer = client
                .progress(
                    &job,
                    &ProgressRequest {
                        token,
                        percent,
                        message,
                    },
                )
                .await;
            match answer {
                Ok(_) => {
                    sent_progress = now.progress.clone();
                    *sent.lock().expect("sent progress poisoned") = now.progress.clone();
                }
                Err(err) => warn!(job = %job, error = %err, "could not report progress"),
            }
        }
        tokio::time::sleep(PROGRESS_EVERY).await;
    }
}
