//! `rota worker --exec CMD`: the SDK's [`rota::Worker`] with one handler, [`Exec`], that
//! runs each job as a child process, for handlers in any language. The protocol is in
//! docs/EXEC.md.
//!
//! Each job's args go to the child's stdin as JSON (with a trailing newline), with
//! `ROTA_JOB_ID`, `ROTA_ATTEMPT`, `ROTA_KIND` and `ROTA_QUEUE` in its environment (and not
//! the worker's `ROTA_TOKEN`). Exit 0 completes the job (stdout, or its last line that is
//! JSON, is the result); exit 75 (`EX_TEMPFAIL`) snoozes it (stdout may name the delay, such
//! as `5m`; 30 s otherwise); 126 and 127 (not executable, not found) fail it for good; any
//! other exit fails it with the tail of stderr. A stderr line `rota:progress 40 copying`
//! reports progress. Each job runs in its own process group: when it must stop (timeout,
//! cancel, lost lease, shutdown) the whole group gets SIGTERM, then SIGKILL after
//! `--kill-grace`; when its main process exits, whatever it left running is stopped the same
//! way, and the outcome is reported only after the group is gone.

use std::future::Future;
use std::pin::Pin;
use std::process::{ExitCode, Stdio};
use std::time::Duration;

use anyhow::Context;
use rota::{Handler, JobContext, Lane, Outcome, Worker, WorkerOptions};
use rota_core::parse_duration;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;
use tracing::warn;

use crate::cli::{ClientArgs, WorkerArgs};

/// Exit status that asks for a snooze (sysexits `EX_TEMPFAIL`).
const EXIT_SNOOZE: i32 = 75;
/// Snooze when the child names no delay.
const SNOOZE_DEFAULT: Duration = Duration::from_secs(30);
/// Bytes of stderr kept as the error message (the tail).
const STDERR_TAIL: usize = 4096;
/// Longest stderr line read whole (a checkpoint line may be up to 64 KiB of JSON); the rest
/// of a longer line is dropped.
const LINE_MAX: usize = 64 * 1024 + 64;
/// Most bytes of stdout kept for the result; a larger result fails the job.
pub const RESULT_MAX: usize = 512 * 1024;
/// Shortest snooze: `echo 0s; exit 75` must not spin.
const SNOOZE_MIN: Duration = Duration::from_secs(1);

/// Runs the worker until a shutdown signal.
pub async fn run(args: WorkerArgs, client_args: &ClientArgs) -> anyhow::Result<ExitCode> {
    crate::serve::init_logging();
    let client = crate::client_commands::client(client_args)?;
    let grace = parse_duration(&args.grace).context("--grace")?;
    let kill_grace = parse_duration(&args.kill_grace).context("--kill-grace")?;
    if args.concurrency == 0 {
        anyhow::bail!("--concurrency: must be at least 1");
    }
    let mut options = WorkerOptions::new(vec![Lane::new(args.queue.clone(), args.concurrency)]);
    if let Some(name) = args.name {
        options.id = format!("{name}:{}", std::process::id());
        options.name = name;
    }
    if let Some(id) = args.id {
        options.id = id;
    }
    options.kinds = args.kind;
    options.grace = grace;
    options.kill_grace = kill_grace;
    options.version = format!("rota-worker-exec {}", env!("CARGO_PKG_VERSION"));
    let (shutdown, hurry) = (CancellationToken::new(), CancellationToken::new());
    {
        let (shutdown, hurry) = (shutdown.clone(), hurry.clone());
        tokio::spawn(async move {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("SIGTERM handler");
            // The first signal starts a graceful stop; a second one skips the grace.
            for signal in [&shutdown, &hurry] {
                tokio::select! { _ = tokio::signal::ctrl_c() => {}, _ = term.recv() => {} }
                signal.cancel();
            }
        });
    }
    let exec = Exec {
        command: args.exec,
        kill_grace,
    };
    Worker::new(client, options, exec)
        .run_hurried(shutdown, hurry)
        .await?;
    Ok(ExitCode::SUCCESS)
}

/// Runs each job as `sh -c COMMAND` in its own process group.
pub struct Exec {
    /// The command line.
    pub command: String,
    /// Between SIGTERM and SIGKILL to the job's process group.
    pub kill_grace: Duration,
}

impl Handler for Exec {
    fn run(&self, job: JobContext) -> Pin<Box<dyn Future<Output = Outcome> + Send + '_>> {
        Box::pin(run_child(&self.command, self.kill_grace, job))
    }
}

/// The job's process group as rustix names it (none if the child had no id).
fn group_pid(pgid: u32) -> Option<rustix::process::Pid> {
    i32::try_from(pgid)
        .ok()
        .and_then(rustix::process::Pid::from_raw)
}

/// Signals every process of the job's group.
fn signal_group(pgid: u32, signal: rustix::process::Signal) {
    if let Some(pid) = group_pid(pgid) {
        // The group may be gone already: nothing to do then.
        let _ = rustix::process::kill_process_group(pid, signal);
    }
}

/// Stops the job's process group: SIGTERM, then SIGKILL once `gone` resolved (the main
/// process exited, the group let go of its pipes, or the group is empty) or `kill_grace`
/// passed, whichever is first. Returns what `gone` gave, if it resolved before the SIGKILL.
async fn stop_group<T>(
    pgid: u32,
    kill_grace: Duration,
    gone: impl Future<Output = T>,
) -> Option<T> {
    signal_group(pgid, rustix::process::Signal::TERM);
    let early = tokio::time::timeout(kill_grace, gone).await.ok();
    signal_group(pgid, rustix::process::Signal::KILL);
    early
}

/// Resolves once no process is left in the job's group (polled every 10 ms).
async fn group_empty(pgid: u32) {
    let Some(pid) = group_pid(pgid) else { return };
    while rustix::process::test_kill_process_group(pid).is_ok() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// The bounded tail of a stream, decoded lossily (a program may print any bytes).
#[derive(Default)]
struct Tail {
    bytes: Vec<u8>,
    total: usize,
}

impl Tail {
    fn push(&mut self, chunk: &[u8], keep: usize) {
        self.total += chunk.len();
        self.bytes.extend_from_slice(chunk);
        if self.bytes.len() > keep {
            let cut = self.bytes.len() - keep;
            self.bytes.drain(..cut);
        }
    }
}

/// Reads stderr: `rota:progress` lines go to the job's progress (the latest, in the
/// background), everything else into a bounded tail. Lines end at `\n` or `\r`; bytes are
/// decoded lossily; no line can grow memory without bound.
async fn read_stderr(mut stderr: tokio::process::ChildStderr, job: JobContext) -> String {
    let mut tail = Tail::default();
    let mut line: Vec<u8> = Vec::new();
    let mut buf = [0u8; 8192];
    let on_line = |line: &[u8], tail: &mut Tail| {
        let text = String::from_utf8_lossy(line);
        if let Some(rest) = text.strip_prefix("rota:checkpoint ") {
            match serde_json::from_str(rest.trim()) {
                Ok(checkpoint) => {
                    job.checkpoint(checkpoint);
                    return;
                }
                Err(err) => {
                    warn!(job = %job.id, error = %err, "a rota:checkpoint line is not JSON; kept as output")
                }
            }
        }
        if let Some(rest) = text.strip_prefix("rota:progress ") {
            let (percent, message) = rest.split_once(' ').unwrap_or((rest, ""));
            if let Ok(percent) = percent.trim().parse::<u8>() {
                let message = (!message.is_empty()).then(|| message.to_owned());
                job.progress(percent, message);
                return;
            }
        }
        tail.push(line, STDERR_TAIL);
        tail.push(b"\n", STDERR_TAIL);
    };
    loop {
        let n = match stderr.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        for &byte in &buf[..n] {
            if byte == b'\n' || byte == b'\r' {
                on_line(&line, &mut tail);
                line.clear();
            } else if line.len() < LINE_MAX {
                line.push(byte);
            }
        }
    }
    if !line.is_empty() {
        on_line(&line, &mut tail);
    }
    String::from_utf8_lossy(&tail.bytes).into_owned()
}

/// Reads stdout, keeping at most `RESULT_MAX + 1` bytes (enough to tell it is too big).
async fn read_stdout(mut stdout: tokio::process::ChildStdout) -> Tail {
    let mut kept = Tail::default();
    let mut buf = [0u8; 8192];
    loop {
        match stdout.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => kept.push(&buf[..n], RESULT_MAX + 1),
        }
    }
    kept
}

/// The job's result from its stdout: all of it if it is JSON, else its last line that is.
fn result_of(stdout: &[u8], job: &str) -> Option<serde_json::Value> {
    let text = String::from_utf8_lossy(stdout);
    if text.trim().is_empty() {
        return None;
    }
    if let Ok(value) = serde_json::from_str(&text) {
        return Some(value);
    }
    let last = text
        .lines()
        .rev()
        .find_map(|line| serde_json::from_str(line.trim()).ok());
    if last.is_none() {
        warn!(
            job,
            "stdout is not JSON and has no JSON line: the job completes without a result"
        );
    }
    last
}

fn signal_name(signal: i32) -> String {
    let name = match signal {
        1 => "SIGHUP",
        2 => "SIGINT",
        3 => "SIGQUIT",
        4 => "SIGILL",
        6 => "SIGABRT",
        7 => "SIGBUS",
        8 => "SIGFPE",
        9 => "SIGKILL",
        11 => "SIGSEGV",
        13 => "SIGPIPE",
        15 => "SIGTERM",
        _ => return format!("signal {signal}"),
    };
    format!("{name} ({signal})")
}

async fn run_child(exec: &str, kill_grace: Duration, context: JobContext) -> Outcome {
    use std::os::unix::process::ExitStatusExt;

    let job = &context.job;
    let mut command = tokio::process::Command::new("sh");
    if let Some(checkpoint) = &job.checkpoint {
        // What an earlier attempt saved with `rota:checkpoint`: resume from there.
        command.env("ROTA_CHECKPOINT", checkpoint.to_string());
    }
    if let Some(timeout) = job.timeout.as_deref().and_then(|t| parse_duration(t).ok()) {
        // When the job will be stopped, so it can plan (RFC 3339).
        let deadline = rota_core::add_duration(jiff::Timestamp::now(), timeout);
        command.env("ROTA_DEADLINE", deadline.to_string());
    }
    let mut child = match command
        .arg("-c")
        .arg(exec)
        .env("ROTA_JOB_ID", &job.id)
        .env("ROTA_ATTEMPT", job.attempt.to_string())
        .env("ROTA_KIND", &job.kind)
        .env("ROTA_QUEUE", &job.queue)
        // The worker's credentials are not the job's.
        .env_remove("ROTA_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // Its own process group, so that everything it starts can be stopped with it.
        .process_group(0)
        .kill_on_drop(true)
        .spawn()
    {
        Ok(child) => child,
        Err(err) => return Outcome::failed(format!("cannot run `{exec}`: {err}")),
    };
    let pgid = child.id().unwrap_or_default();
    if let Some(mut stdin) = child.stdin.take() {
        let mut args = job.args.to_string();
        args.push('\n');
        tokio::spawn(async move {
            let _ = stdin.write_all(args.as_bytes()).await;
        });
    }
    let stdout = tokio::spawn(read_stdout(child.stdout.take().expect("piped stdout")));
    let stderr = tokio::spawn(read_stderr(
        child.stderr.take().expect("piped stderr"),
        context.clone(),
    ));
    let status = tokio::select! {
        status = child.wait() => status.ok(),
        _ = context.stop.cancelled() => {
            // Timeout, cancel, lost lease or shutdown: stop the whole group, and return
            // only once the main process is gone (the runtime reports after that).
            if stop_group(pgid, kill_grace, child.wait()).await.is_none() {
                let _ = child.wait().await;
            }
            stdout.abort();
            stderr.abort();
            return Outcome::Stopped;
        }
    };
    // The main process exited: the job is over. Anything it left running (holding its
    // pipes open, say) is stopped with the group, so the pipes close and nothing of the job
    // outlives its report.
    let mut pipes = Box::pin(async {
        (
            stdout.await.unwrap_or_default(),
            stderr.await.unwrap_or_default(),
        )
    });
    let (out, err) = match tokio::time::timeout(Duration::from_millis(100), &mut pipes).await {
        Ok(done) => {
            // Leftovers that let go of the pipes (a detached daemon) are stopped the same way.
            stop_group(pgid, kill_grace, group_empty(pgid)).await;
            done
        }
        Err(_) => match stop_group(pgid, kill_grace, &mut pipes).await {
            Some(done) => done,
            None => pipes.await,
        },
    };
    let describe = |tail: &str, status: String| match tail.trim() {
        "" => format!("command {status}"),
        tail => format!("command {status}: {tail}"),
    };
    match status.and_then(|s| s.code().map(Ok).or_else(|| s.signal().map(Err))) {
        Some(Ok(0)) if out.total > RESULT_MAX => Outcome::Failed {
            message: format!(
                "result too large: {} bytes on stdout, more than the {RESULT_MAX} a result may have; store large results elsewhere and return a reference",
                out.total
            ),
            backtrace: None,
            discard: true,
        },
        Some(Ok(0)) => Outcome::Completed(result_of(&out.bytes, &job.id)),
        Some(Ok(EXIT_SNOOZE)) => {
            let said = String::from_utf8_lossy(&out.bytes).trim().to_owned();
            if said.is_empty() {
                return Outcome::Snoozed(SNOOZE_DEFAULT);
            }
            match parse_duration(&said) {
                Ok(delay) => Outcome::Snoozed(delay.max(SNOOZE_MIN)),
                Err(e) => Outcome::failed(format!(
                    "exit 75 asks for a snooze, but stdout does not name a delay: {e}"
                )),
            }
        }
        Some(Ok(code @ (126 | 127))) => Outcome::Failed {
            message: describe(
                &err,
                format!(
                    "exited with status {code} ({})",
                    if code == 126 { "not executable" } else { "not found" }
                ),
            ),
            backtrace: None,
            discard: true,
        },
        Some(Ok(code)) => Outcome::failed(describe(&err, format!("exited with status {code}"))),
        Some(Err(signal)) => Outcome::failed(describe(
            &err,
            format!("was killed by {}", signal_name(signal)),
        )),
        None => Outcome::failed(describe(&err, "ended without a status".into())),
    }
}
