//! `rota worker --exec CMD`: the SDK's [`rota::Worker`] with one handler, [`Exec`], that
//! runs each job as a child process, for handlers in any language.
//!
//! Each job's args go to the child's stdin as JSON, with `ROTA_JOB_ID`, `ROTA_ATTEMPT` and
//! `ROTA_KIND` in its environment. Exit 0 completes the job (stdout, if it is JSON, is the
//! result); exit 75 (`EX_TEMPFAIL`) snoozes it (stdout may name the delay, such as `5m`;
//! 30 s otherwise); any other exit fails it with the tail of stderr. A stderr line
//! `rota:progress 40 copying` reports progress. The runtime heartbeats, applies the job's
//! timeout and cancellation (the child is killed), and on SIGTERM or SIGINT stops fetching,
//! lets running children finish for `--grace`, then kills the rest and hands their leases
//! back, so another worker takes them at once.

use std::future::Future;
use std::pin::Pin;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::Context;
use rota::{Handler, JobContext, Outcome, Worker, WorkerOptions};
use rota_core::parse_duration;
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio_util::sync::CancellationToken;

use crate::cli::{ClientArgs, WorkerArgs};

/// Exit status that asks for a snooze (sysexits `EX_TEMPFAIL`).
const EXIT_SNOOZE: i32 = 75;
/// Snooze when the child names no delay.
const SNOOZE_DEFAULT: Duration = Duration::from_secs(30);
/// Bytes of stderr kept as the error message.
const STDERR_TAIL: usize = 4096;

/// Runs the worker until a shutdown signal.
pub async fn run(args: WorkerArgs, client_args: &ClientArgs) -> anyhow::Result<ExitCode> {
    crate::serve::init_logging();
    let client = crate::client_commands::client(client_args)?;
    let grace = parse_duration(&args.grace).context("--grace")?;
    if args.concurrency == 0 {
        anyhow::bail!("--concurrency: must be at least 1");
    }
    let mut options = WorkerOptions::new(args.queue.clone());
    if let Some(name) = args.name {
        options.id = format!("{name}:{}", std::process::id());
        options.name = name;
    }
    if let Some(id) = args.id {
        options.id = id;
    }
    options.kinds = args.kind;
    options.concurrency = args.concurrency;
    options.grace = grace;
    options.version = format!("rota-worker-exec {}", env!("CARGO_PKG_VERSION"));
    let shutdown = CancellationToken::new();
    {
        let shutdown = shutdown.clone();
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
            shutdown.cancel();
        });
    }
    Worker::new(client, options, Exec { command: args.exec })
        .run(shutdown)
        .await?;
    Ok(ExitCode::SUCCESS)
}

/// Runs each job as `sh -c COMMAND`.
pub struct Exec {
    /// The command line.
    pub command: String,
}

impl Handler for Exec {
    fn run(&self, job: JobContext) -> Pin<Box<dyn Future<Output = Outcome> + Send + '_>> {
        Box::pin(run_child(&self.command, job))
    }
}

async fn run_child(exec: &str, context: JobContext) -> Outcome {
    let job = &context.job;
    let mut child = match tokio::process::Command::new("sh")
        .arg("-c")
        .arg(exec)
        .env("ROTA_JOB_ID", &job.id)
        .env("ROTA_ATTEMPT", job.attempt.to_string())
        .env("ROTA_KIND", &job.kind)
        .env("ROTA_QUEUE", &job.queue)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Dropped when the runtime stops the job (cancel, timeout, lease lost, shutdown).
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(err) => return Outcome::failed(format!("cannot run `{exec}`: {err}")),
    };
    if let Some(mut stdin) = child.stdin.take() {
        let args = job.args.to_string();
        tokio::spawn(async move {
            let _ = stdin.write_all(args.as_bytes()).await;
        });
    }
    let mut stdout = child.stdout.take().expect("piped stdout");
    let stderr = child.stderr.take().expect("piped stderr");
    let stdout_task = tokio::spawn(async move {
        let mut buf = Vec::new();
        let _ = stdout.read_to_end(&mut buf).await;
        buf
    });
    let progress = context.clone();
    let stderr_task = tokio::spawn(async move {
        let mut lines = BufReader::new(stderr).lines();
        let mut tail = String::new();
        while let Ok(Some(line)) = lines.next_line().await {
            if let Some(rest) = line.strip_prefix("rota:progress ") {
                let (percent, message) = rest.split_once(' ').unwrap_or((rest, ""));
                if let Ok(percent) = percent.trim().parse::<u8>() {
                    let message = (!message.is_empty()).then(|| message.to_owned());
                    progress.progress(percent, message).await;
                    continue;
                }
            }
            tail.push_str(&line);
            tail.push('\n');
            if tail.len() > STDERR_TAIL {
                let cut = tail.len() - STDERR_TAIL;
                let cut = (cut..tail.len())
                    .find(|i| tail.is_char_boundary(*i))
                    .unwrap_or(tail.len());
                tail.drain(..cut);
            }
        }
        tail
    });
    let code = child.wait().await.ok().and_then(|s| s.code());
    let stdout = stdout_task.await.unwrap_or_default();
    let stderr_tail = stderr_task.await.unwrap_or_default();
    match code {
        Some(0) => Outcome::Completed(serde_json::from_slice(&stdout).ok()),
        Some(EXIT_SNOOZE) => Outcome::Snoozed(
            std::str::from_utf8(&stdout)
                .ok()
                .and_then(|s| parse_duration(s.trim()).ok())
                .unwrap_or(SNOOZE_DEFAULT),
        ),
        code => {
            let status = code.map_or("was killed by a signal".to_owned(), |c| {
                format!("exited with status {c}")
            });
            Outcome::failed(match stderr_tail.trim() {
                "" => format!("command {status}"),
                tail => format!("command {status}: {tail}"),
            })
        }
    }
}
