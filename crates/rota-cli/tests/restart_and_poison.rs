//! Issue 18's end-to-end cases: no single row can make a queue unreadable, and a server
//! restart never rescues a live worker's job.

mod support;

use std::time::Duration;

use rota::api::*;
use serde_json::json;
use support::*;

/// A row whose time is beyond any timestamp (as an older binary stored a `--delay
/// 100000000h`) leaves its queue fully usable: list, show, cancel, and a worker on the
/// queue; and such times are now refused at enqueue naming the field.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_single_row_can_make_a_queue_unreadable() {
    let server = Server::start("");
    let client = server.client();
    let out = server.rota(&["enqueue", "x", "--delay", "100000000h"]);
    assert_eq!(out.status.code(), Some(1));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("delay") && stderr.contains("10 years"),
        "{stderr}"
    );
    let out = server.rota(&["enqueue", "x", "--at", "9999-12-30T22:00:00.5Z"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("run_at"));

    let far = client
        .enqueue_request(&NewJobRequest {
            delay: Some("1h".into()),
            ..job("far", json!({}))
        })
        .await
        .unwrap();
    rusqlite::Connection::open(server.path().join("rota.db"))
        .unwrap()
        .execute(
            "UPDATE job SET run_at = ?1 WHERE id = ?2",
            rusqlite::params![
                i64::MAX,
                far.job.id.parse::<rota_core::JobId>().unwrap().as_bytes()
            ],
        )
        .unwrap();
    client
        .enqueue_request(&job("near", json!({})))
        .await
        .unwrap();
    let list = server.rota(&["jobs", "list"]);
    assert!(
        list.status.success(),
        "{}",
        String::from_utf8_lossy(&list.stderr)
    );
    assert!(client.job(&far.job.id).await.is_ok());
    let worker = Worker::start(&server, &["--queue", "default", "--exec", "cat >/dev/null"]);
    eventually(Duration::from_secs(10), "the near job done", async || {
        let page = client.jobs(&[("kind", "near".into())]).await.ok()?;
        (page.jobs[0].state == JobState::Completed).then_some(())
    })
    .await;
    let cancelled = client.cancel(&far.job.id).await.unwrap();
    assert_eq!(cancelled.state, JobState::Cancelled);
    drop(worker);
}

/// Two jobs run `sleep 15` under a 6 s lease; the server stops 2 s in and comes back 9 s
/// later, past both leases. The workers are alive: after the restart they heartbeat, and
/// both jobs complete on their first attempt, with no "stopped heartbeating" error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_server_restart_never_rescues_a_live_workers_job() {
    let mut server = Server::start("lease = \"6s\"\n");
    let client = server.client();
    for _ in 0..2 {
        client
            .enqueue_request(&job("slow", json!({})))
            .await
            .unwrap();
    }
    let _worker = Worker::start(
        &server,
        &[
            "--queue",
            "default",
            "--concurrency",
            "2",
            "--exec",
            "sleep 15",
        ],
    );
    eventually(Duration::from_secs(10), "both jobs running", async || {
        let page = client.jobs(&[("state", "running".into())]).await.ok()?;
        (page.jobs.len() == 2).then_some(())
    })
    .await;
    std::thread::sleep(Duration::from_secs(2));
    server.terminate();
    std::thread::sleep(Duration::from_secs(9));
    server.restart();
    let done = eventually(Duration::from_secs(30), "both jobs completed", async || {
        let page = client.jobs(&[]).await.ok()?;
        page.jobs
            .iter()
            .all(|j| j.state == JobState::Completed)
            .then_some(page.jobs)
    })
    .await;
    for job in done {
        assert_eq!(job.attempt, 1, "{job:?}");
        assert!(job.errors.is_empty(), "{:?}", job.errors);
    }
}

/// A database someone else holds locked at start-up (a backup, an operator's session) is
/// waited for: the server starts once the lock is gone instead of exiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_database_at_start_up_is_waited_for() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rota.db");
    let conn = rusqlite::Connection::open(&db).unwrap();
    conn.execute_batch("PRAGMA journal_mode = WAL; BEGIN EXCLUSIVE; CREATE TABLE held (x);")
        .unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut serve = std::process::Command::new(ROTA)
        .args(["serve", "--bind", &format!("127.0.0.1:{port}")])
        .current_dir(dir.path())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(Duration::from_secs(7));
    assert!(
        serve.try_wait().unwrap().is_none(),
        "still waiting, not exited"
    );
    conn.execute_batch("COMMIT").unwrap();
    let client = rota::Client::new(&format!("http://127.0.0.1:{port}")).unwrap();
    eventually(Duration::from_secs(15), "the server ready", async || {
        client
            .ready()
            .await
            .ok()
            .filter(|(ready, _)| *ready)
            .map(|_| ())
    })
    .await;
    serve.kill().unwrap();
    let out = serve.wait_with_output().unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(log.contains("locked by someone else"), "{log}");
}
