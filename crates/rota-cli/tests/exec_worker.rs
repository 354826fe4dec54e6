//! `rota worker --exec` with real programs, on a real server (issue 17): no lost reports, no
//! orphans, robust to what programs print.

mod support;

use std::time::{Duration, Instant};

use rota::api::*;
use serde_json::json;
use support::*;

/// Whether a process whose whole command line is `command` is running (exactly: the
/// worker's own arguments contain the command too).
fn running(command: &str) -> bool {
    std::process::Command::new("pgrep")
        .args(["-x", "-f", command])
        .output()
        .unwrap()
        .status
        .success()
}

/// Enqueues `request`, returning the job's id.
async fn enqueue(client: &rota::Client, request: &NewJobRequest) -> String {
    client.enqueue_request(request).await.unwrap().job.id
}

/// Waits until job `id` runs.
async fn until_running(client: &rota::Client, id: &str) {
    eventually(Duration::from_secs(10), "the job running", async || {
        (client.job(id).await.ok()?.state == JobState::Running).then_some(())
    })
    .await;
}

async fn final_job(client: &rota::Client, id: &str, within: Duration) -> JobView {
    eventually(within, "the job to finish", async || {
        let job = client.job(id).await.ok()?;
        job.state.is_final().then_some(job)
    })
    .await
}

/// Four jobs of `sleep 3` at concurrency 2; the server stops 1 s in and comes back 8 s later:
/// the two jobs that finished while it was down report when it is back, and no job runs
/// twice (each start is logged by the program itself).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reports_lost_to_a_server_restart_are_retried_and_nothing_runs_twice() {
    let mut server = Server::start("lease = \"6s\"\n");
    let client = server.client();
    let mut ids = Vec::new();
    for _ in 0..4 {
        ids.push(enqueue(&client, &job("slow", json!({}))).await);
    }
    let _worker = Worker::start(
        &server,
        &[
            "--queue",
            "default",
            "--concurrency",
            "2",
            "--exec",
            "echo $ROTA_JOB_ID >> runs.log; sleep 3",
        ],
    );
    eventually(Duration::from_secs(10), "two jobs running", async || {
        let page = client.jobs(&[("state", "running".into())]).await.ok()?;
        (page.jobs.len() == 2).then_some(())
    })
    .await;
    std::thread::sleep(Duration::from_secs(1));
    server.terminate();
    std::thread::sleep(Duration::from_secs(8));
    server.restart();
    for id in &ids {
        let job = final_job(&client, id, Duration::from_secs(30)).await;
        assert_eq!(job.state, JobState::Completed, "{job:?}");
        assert_eq!(job.attempt, 1, "{job:?}");
    }
    let runs = std::fs::read_to_string(server.path().join("runs.log")).unwrap();
    let mut lines: Vec<&str> = runs.lines().collect();
    lines.sort();
    lines.dedup();
    assert_eq!(runs.lines().count(), 4, "each job ran once: {runs}");
    assert_eq!(lines.len(), 4);
}

/// The database locked for 10 s (a held exclusive transaction): fetches get `busy`, the
/// worker retries instead of exiting, and takes the next job when the lock is gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_does_not_stop_the_worker() {
    let server = Server::start("");
    let client = server.client();
    let mut worker = Worker::start(&server, &["--queue", "default", "--exec", "cat >/dev/null"]);
    // The server listens before it migrates: wait until it is ready.
    eventually(Duration::from_secs(10), "the server ready", async || {
        client
            .ready()
            .await
            .ok()
            .filter(|(ready, _)| *ready)
            .map(|_| ())
    })
    .await;
    let db = server.path().join("rota.db");
    let lock = std::thread::spawn(move || {
        let conn = rusqlite::Connection::open(db).unwrap();
        conn.execute_batch("BEGIN EXCLUSIVE").unwrap();
        std::thread::sleep(Duration::from_secs(10));
        conn.execute_batch("COMMIT").unwrap();
    });
    std::thread::sleep(Duration::from_secs(9));
    assert!(worker.is_running(), "the worker survived the busy database");
    lock.join().unwrap();
    let id = enqueue(&client, &job("after", json!({}))).await;
    let job = final_job(&client, &id, Duration::from_secs(20)).await;
    assert_eq!(job.state, JobState::Completed);
    assert!(worker.is_running());
}

/// A timeout stops the job's whole process group (the program's own children too): first
/// SIGTERM, which the program may catch to clean up, then SIGKILL.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timeout_stops_the_whole_group_with_sigterm_first() {
    let server = Server::start("");
    let client = server.client();
    let _worker = Worker::start(
        &server,
        &[
            "--queue",
            "default",
            "--kill-grace",
            "2s",
            "--exec",
            "trap 'echo term >> got.log' TERM; sleep 577 & sleep 578 & wait; wait",
        ],
    );
    let id = enqueue(
        &client,
        &NewJobRequest {
            timeout: Some("2s".into()),
            max_attempts: Some(1),
            ..job("stuck", json!({}))
        },
    )
    .await;
    let job = final_job(&client, &id, Duration::from_secs(20)).await;
    assert_eq!(job.state, JobState::Dead);
    assert!(
        job.errors[0].message.contains("timed out after 2s"),
        "{job:?}"
    );
    assert!(!running("sleep 577") && !running("sleep 578"), "no orphans");
    let got = std::fs::read_to_string(server.path().join("got.log")).unwrap_or_default();
    assert!(got.contains("term"), "the program got SIGTERM first");
}

/// A cancel reaches a running job within about a second, and the job's processes stop.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cancel_reaches_a_running_job_within_two_seconds() {
    let server = Server::start("");
    let client = server.client();
    let _worker = Worker::start(&server, &["--queue", "default", "--exec", "sleep 579"]);
    let id = enqueue(&client, &job("long", json!({}))).await;
    until_running(&client, &id).await;
    let asked = Instant::now();
    let out = server.rota(&["jobs", "cancel", &id]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("cancel pending"),
        "the CLI says a running job's cancel is pending"
    );
    let job = final_job(&client, &id, Duration::from_secs(10)).await;
    assert_eq!(job.state, JobState::Cancelled);
    assert!(
        asked.elapsed() < Duration::from_secs(2),
        "{:?}",
        asked.elapsed()
    );
    assert!(!running("sleep 579"));
}

/// A background process that keeps stdout open does not hold the job: it ends when its
/// main process exits (and the leftover is stopped).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_background_process_holding_stdout_does_not_hang_the_job() {
    leftover_is_stopped_with_the_job("sleep 581 &", "sleep 581").await;
}

/// A detached leftover (its output sent elsewhere) does not outlive the job either: once
/// the main process exits, the group is stopped the same way.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_detached_leftover_is_stopped_with_the_job() {
    leftover_is_stopped_with_the_job("sleep 593 >/dev/null 2>&1 &", "sleep 593").await;
}

/// Runs a job that starts `leftover` and then prints its result: the job completes with
/// that result, and `leftover_command` is not running after.
async fn leftover_is_stopped_with_the_job(leftover: &str, leftover_command: &str) {
    let server = Server::start("");
    let client = server.client();
    let exec = format!("cat >/dev/null; {leftover} echo '{{\"done\": true}}'");
    let _worker = Worker::start(
        &server,
        &["--queue", "default", "--kill-grace", "1s", "--exec", &exec],
    );
    let id = enqueue(&client, &job("bg", json!({}))).await;
    let job = final_job(&client, &id, Duration::from_secs(10)).await;
    assert_eq!(job.state, JobState::Completed);
    assert_eq!(job.result, Some(json!({"done": true})));
    assert!(!running(leftover_command), "no orphans");
}

/// Hostile output and exits get clear outcomes: non-UTF-8 stderr is kept (lossily), a log
/// line before the JSON result does not lose it, 127 fails for good at once, a signal is
/// named, and the worker's token is not in the job's environment.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn real_programs_get_clear_outcomes() {
    let server = Server::start("");
    let client = server.client();
    let _worker = Worker::start_with_env(
        &server,
        &[
            "--queue",
            "default",
            "--concurrency",
            "4",
            "--exec",
            r#"case "$ROTA_KIND" in
               latin1) printf 'caf\351\n' >&2; printf 'more\n' >&2; exit 3 ;;
               logged) read -r line; echo "starting"; echo '{"n": 1}' ;;
               missing) no-such-command-xyz ;;
               killed) kill -SEGV $$ ;;
               token) echo "{\"token\": \"${ROTA_TOKEN:-none}\"}" ;;
             esac"#,
        ],
        &[("ROTA_TOKEN", "rota_secret_admin_token")],
    );
    let mut ids = std::collections::HashMap::new();
    for kind in ["latin1", "logged", "missing", "killed", "token"] {
        let id = enqueue(
            &client,
            &NewJobRequest {
                max_attempts: Some(3),
                ..job(kind, json!({"x": 1}))
            },
        )
        .await;
        ids.insert(kind, id);
    }
    let latin1 = final_or_retrying(&client, &ids["latin1"]).await;
    let message = &latin1.errors[0].message;
    assert!(
        message.contains("status 3") && message.contains("caf") && message.contains("more"),
        "{message}"
    );
    let logged = final_job(&client, &ids["logged"], Duration::from_secs(10)).await;
    assert_eq!(
        logged.result,
        Some(json!({"n": 1})),
        "stdin had a newline; last JSON line"
    );
    let missing = final_job(&client, &ids["missing"], Duration::from_secs(10)).await;
    assert_eq!(
        (missing.state, missing.attempt),
        (JobState::Dead, 1),
        "{missing:?}"
    );
    assert!(missing.errors[0].message.contains("127 (not found)"));
    let killed = final_or_retrying(&client, &ids["killed"]).await;
    assert!(killed.errors[0].message.contains("SIGSEGV"), "{killed:?}");
    let token = final_job(&client, &ids["token"], Duration::from_secs(10)).await;
    assert_eq!(token.result, Some(json!({"token": "none"})));
}

async fn final_or_retrying(client: &rota::Client, id: &str) -> JobView {
    eventually(Duration::from_secs(10), "a failed attempt", async || {
        let job = client.job(id).await.ok()?;
        (!job.errors.is_empty()).then_some(job)
    })
    .await
}

/// Floods stay bounded: 100 MB on stdout, a 20 MB stderr line without a newline and 20,000
/// progress lines each get an outcome, the program is never blocked by its progress, and
/// the worker's memory stays small. An oversized result fails the job once, for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn floods_of_output_keep_the_worker_small() {
    let server = Server::start("");
    let client = server.client();
    let mut worker = Worker::start(
        &server,
        &[
            "--queue",
            "default",
            "--concurrency",
            "4",
            "--exec",
            r#"case "$ROTA_KIND" in
               stdout) head -c 100000000 /dev/zero ;;
               line) head -c 20000000 /dev/zero | tr '\0' x >&2; exit 1 ;;
               progress) i=0; while [ $i -lt 20000 ]; do echo "rota:progress $((i % 100)) step" >&2; i=$((i+1)); done; echo '{"ok": 1}' ;;
               big) python3 -c 'import json; print(json.dumps({"blob": "x" * 2000000}))' ;;
             esac"#,
        ],
    );
    let mut ids = std::collections::HashMap::new();
    for kind in ["stdout", "line", "progress", "big"] {
        let id = enqueue(
            &client,
            &NewJobRequest {
                max_attempts: Some(3),
                ..job(kind, json!({}))
            },
        )
        .await;
        ids.insert(kind, id);
    }
    let started = Instant::now();
    let progress = final_job(&client, &ids["progress"], Duration::from_secs(30)).await;
    assert_eq!(progress.result, Some(json!({"ok": 1})));
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "progress never blocks the program"
    );
    for kind in ["stdout", "big"] {
        let job = final_job(&client, &ids[kind], Duration::from_secs(30)).await;
        assert_eq!(
            (job.state, job.attempt),
            (JobState::Dead, 1),
            "{kind}: {job:?}"
        );
        assert!(job.errors[0].message.contains("result too large"), "{kind}");
    }
    let line = final_or_retrying(&client, &ids["line"]).await;
    assert!(line.errors[0].message.len() < 10_000, "a bounded tail");
    let rss_kib: u64 = std::fs::read_to_string(format!("/proc/{}/status", worker.pid()))
        .unwrap()
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    assert!(
        rss_kib < 64 * 1024,
        "worker RSS {rss_kib} KiB after the floods"
    );
    assert!(worker.is_running());
}

/// A checkpoint saved before a failure (`rota:checkpoint {...}` on stderr) reaches the next
/// attempt as `ROTA_CHECKPOINT`, and the API shows it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_saved_before_a_failure_reaches_the_next_attempt() {
    let server = Server::start("");
    let client = server.client();
    let _worker = Worker::start(
        &server,
        &[
            "--queue",
            "default",
            "--exec",
            r#"if [ -n "$ROTA_CHECKPOINT" ]; then echo "{\"resumed_from\": $ROTA_CHECKPOINT}"; else echo 'rota:checkpoint {"done": 40}' >&2; exit 1; fi"#,
        ],
    );
    let id = enqueue(
        &client,
        &NewJobRequest {
            backoff: Some(rota_core::Backoff::Intervals(vec![Duration::from_secs(1)])),
            ..job("resumable", json!({}))
        },
    )
    .await;
    let job = final_job(&client, &id, Duration::from_secs(20)).await;
    assert_eq!(job.state, JobState::Completed, "{job:?}");
    assert_eq!(job.attempt, 2);
    assert_eq!(job.result, Some(json!({"resumed_from": {"done": 40}})));
    assert_eq!(job.checkpoint, Some(json!({"done": 40})));
}

/// `echo 0s; exit 75` cannot loop: snoozes last at least a second, and past the server's
/// limit a snooze is a failed attempt; an unparsable delay fails with a clear error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_snooze_loop_is_bounded() {
    let server = Server::start("max_snoozes = 2\n");
    let client = server.client();
    let _worker = Worker::start(
        &server,
        &[
            "--queue",
            "default",
            "--concurrency",
            "2",
            "--exec",
            r#"case "$ROTA_KIND" in loop) echo 0s; exit 75 ;; garbled) echo -5m; exit 75 ;; esac"#,
        ],
    );
    let looping = enqueue(
        &client,
        &NewJobRequest {
            max_attempts: Some(1),
            ..job("loop", json!({}))
        },
    )
    .await;
    let garbled = enqueue(
        &client,
        &NewJobRequest {
            max_attempts: Some(1),
            ..job("garbled", json!({}))
        },
    )
    .await;
    let started = Instant::now();
    let job = final_job(&client, &looping, Duration::from_secs(20)).await;
    assert_eq!(job.state, JobState::Dead);
    assert!(job.errors[0].message.contains("snoozed 2 times"), "{job:?}");
    assert_eq!(job.snoozed.len(), 2, "the snoozes are in its history");
    assert!(
        started.elapsed() >= Duration::from_secs(2),
        "each snooze lasted a second"
    );
    let job = final_job(&client, &garbled, Duration::from_secs(10)).await;
    assert!(
        job.errors[0].message.contains("does not name a delay"),
        "{job:?}"
    );
}

/// SIGTERM to the worker: after the grace its jobs' whole groups are stopped and the jobs
/// handed back, available at once, with no attempt used.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_shutdown_stops_the_group_and_hands_the_job_back() {
    let server = Server::start("");
    let client = server.client();
    let mut worker = Worker::start(
        &server,
        &[
            "--queue",
            "default",
            "--grace",
            "1s",
            "--kill-grace",
            "1s",
            "--exec",
            "sleep 583 & sleep 584",
        ],
    );
    let id = enqueue(&client, &job("long", json!({}))).await;
    until_running(&client, &id).await;
    let status = worker.terminate(Duration::from_secs(15));
    assert!(status.success());
    let job = client.job(&id).await.unwrap();
    assert_eq!(
        (job.state, job.attempt),
        (JobState::Available, 0),
        "{job:?}"
    );
    assert!(!running("sleep 583") && !running("sleep 584"), "no orphans");
}

/// A result larger than the server's body limit fails the job once, for good, instead of
/// rerunning it until it dies of "stopped heartbeating".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_result_over_the_body_limit_fails_once() {
    let server = Server::start("body_limit = 100000\n");
    let client = server.client();
    let _worker = Worker::start(
        &server,
        &[
            "--queue",
            "default",
            "--exec",
            r#"python3 -c 'import json; print(json.dumps({"blob": "x" * 300000}))'"#,
        ],
    );
    let id = enqueue(
        &client,
        &NewJobRequest {
            max_attempts: Some(3),
            ..job("big", json!({}))
        },
    )
    .await;
    let job = final_job(&client, &id, Duration::from_secs(20)).await;
    assert_eq!((job.state, job.attempt), (JobState::Dead, 1), "{job:?}");
    assert!(job.errors[0]
        .message
        .contains("result too large for the server"));
}

/// A result the server refuses (a NUL character in it, which no store keeps) fails that job
/// once, for good, naming why; the worker goes on with the others. It used to stop the
/// worker: the refusal of a completion riding on a fetch read as a refused fetch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_refused_result_fails_its_job_and_the_worker_goes_on() {
    let server = Server::start("");
    let client = server.client();
    let mut worker = Worker::start(
        &server,
        &[
            "--queue",
            "default",
            "--concurrency",
            "4",
            "--exec",
            r#"python3 -c 'import json, sys; a = json.load(sys.stdin); print(json.dumps({"out": "a\0b" if a["bad"] else "ok"}))'"#,
        ],
    );
    let mut ids = Vec::new();
    for bad in [false, false, true, false, false, false] {
        let request = NewJobRequest {
            max_attempts: Some(3),
            ..job(if bad { "bad" } else { "good" }, json!({ "bad": bad }))
        };
        ids.push((bad, enqueue(&client, &request).await));
    }
    for (bad, id) in &ids {
        let job = final_job(&client, id, Duration::from_secs(20)).await;
        if *bad {
            assert_eq!((job.state, job.attempt), (JobState::Dead, 1), "{job:?}");
            let message = &job.errors[0].message;
            assert!(
                message.contains("result refused by the server"),
                "{message}"
            );
            assert!(message.contains("result.out"), "{message}");
        } else {
            assert_eq!(job.state, JobState::Completed, "{job:?}");
            assert_eq!(job.result, Some(json!({"out": "ok"})));
        }
    }
    assert!(worker.is_running(), "the worker went on");
}

/// A job that arrives after shutdown began (the worker's long poll was already waiting) is
/// handed back without being started.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_fetched_during_shutdown_is_handed_back_unstarted() {
    let server = Server::start("");
    let client = server.client();
    let mut worker = Worker::start(
        &server,
        &["--queue", "default", "--exec", "echo ran >> ran.log"],
    );
    // Wait until its long poll is waiting (the worker registered with its first fetch).
    eventually(Duration::from_secs(10), "the worker polling", async || {
        let workers = client.workers().await.ok()?;
        (!workers.workers.is_empty()).then_some(())
    })
    .await;
    std::thread::sleep(Duration::from_millis(300));
    std::process::Command::new("kill")
        .args(["-TERM", &worker.pid().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(100));
    let id = enqueue(&client, &job("late", json!({}))).await;
    let status = worker.terminate(Duration::from_secs(15));
    assert!(status.success());
    let job = client.job(&id).await.unwrap();
    assert_eq!(
        (job.state, job.attempt),
        (JobState::Available, 0),
        "{job:?}"
    );
    assert!(
        !server.path().join("ran.log").exists(),
        "the job never started"
    );
}

/// A second SIGTERM skips the grace: the running job is stopped and handed back at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_signal_skips_the_grace() {
    let server = Server::start("");
    let client = server.client();
    let mut worker = Worker::start(
        &server,
        &[
            "--queue",
            "default",
            "--grace",
            "60s",
            "--kill-grace",
            "1s",
            "--exec",
            "sleep 585",
        ],
    );
    let id = enqueue(&client, &job("long", json!({}))).await;
    until_running(&client, &id).await;
    std::process::Command::new("kill")
        .args(["-TERM", &worker.pid().to_string()])
        .status()
        .unwrap();
    std::thread::sleep(Duration::from_millis(300));
    let started = Instant::now();
    let status = worker.terminate(Duration::from_secs(10));
    assert!(status.success());
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "not the 60 s grace"
    );
    let job = client.job(&id).await.unwrap();
    assert_eq!(
        (job.state, job.attempt),
        (JobState::Available, 0),
        "{job:?}"
    );
    assert!(!running("sleep 585"));
}
