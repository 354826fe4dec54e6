//! The real `rota` binary, end to end: server and exec workers as processes, `kill -9`.

mod support;

use std::time::Duration;

use rota::api::*;
use serde_json::json;
use support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_worker_completes_a_job_and_a_waiting_read_returns_its_result() {
    let server = Server::start("");
    let client = server.client();
    let enqueued = client
        .enqueue_request(&job("greet", json!({"name": "ada"})))
        .await
        .unwrap();
    let _worker = Worker::start(
        &server,
        &[
            "--queue",
            "default",
            "--exec",
            r#"read args; echo "{\"greeting\": \"hello\", \"got\": $args}""#,
        ],
    );
    let done = client.job_wait(&enqueued.job.id, "30s").await.unwrap();
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!(
        done.result,
        Some(json!({"greeting": "hello", "got": {"name": "ada"}}))
    );
    assert_eq!(done.attempt, 1);
    let workers = client.workers().await.unwrap().workers;
    assert_eq!(workers.len(), 1);
    let w = &workers[0];
    assert!(
        w.pid > 0 && !w.host.is_empty() && w.version.starts_with("rota-worker-exec"),
        "{w:?}"
    );
    assert_eq!(
        (w.queues.clone(), w.concurrency),
        (vec!["default".to_string()], 1)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_command_is_retried_then_dead_with_its_stderr_and_can_be_retried_from_dead() {
    let server = Server::start("");
    let client = server.client();
    let mut request = job("broken", json!({}));
    request.max_attempts = Some(2);
    request.backoff = Some(rota_core::Backoff::Fixed {
        interval: Duration::from_millis(100),
    });
    let id = client.enqueue_request(&request).await.unwrap().job.id;
    let _worker = Worker::start(
        &server,
        &[
            "--queue",
            "default",
            "--exec",
            "echo 'smtp: connection refused' >&2; exit 3",
        ],
    );
    let dead = eventually(Duration::from_secs(30), "the job to die", async || {
        let job = client.job(&id).await.unwrap();
        (job.state == JobState::Dead).then_some(job)
    })
    .await;
    assert_eq!(dead.errors.len(), 2);
    assert!(
        dead.errors[0]
            .message
            .contains("exited with status 3: smtp: connection refused"),
        "{:?}",
        dead.errors[0]
    );
    let out = server.rota(&["dead", "retry", &id]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let again = client.job(&id).await.unwrap();
    // The worker may already have run (and failed) the retried job again: the history grows,
    // it is never reset.
    assert!(again.errors.len() >= 2, "history kept: {:?}", again.errors);
    assert_eq!(
        again.errors[..2],
        dead.errors[..],
        "the earlier attempts stay"
    );
    assert!(
        matches!(
            again.state.as_str(),
            "available" | "running" | "retryable" | "dead"
        ),
        "{}",
        again.state
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_loses_it_to_a_second_worker_after_the_lease() {
    let server = Server::start("lease = \"2s\"\n");
    let client = server.client();
    let id = client
        .enqueue_request(&job("slow", json!({})))
        .await
        .unwrap()
        .job
        .id;
    let marker = server.path().join("started");
    let mut first = Worker::start(
        &server,
        &[
            "--queue",
            "default",
            "--exec",
            &format!("touch {}; sleep 60", marker.display()),
        ],
    );
    eventually(
        Duration::from_secs(20),
        "the first worker to start the job",
        async || marker.exists().then_some(()),
    )
    .await;
    first.kill9();
    let _second = Worker::start(
        &server,
        &[
            "--queue",
            "default",
            "--exec",
            "echo '{\"by\": \"second\"}'",
        ],
    );
    let done = client.job_wait(&id, "60s").await.unwrap();
    assert_eq!(done.state, JobState::Completed, "{done:?}");
    assert_eq!(done.attempt, 2);
    assert_eq!(done.result, Some(json!({"by": "second"})));
    assert!(
        done.errors[0].message.starts_with("lease expired: worker"),
        "{:?}",
        done.errors
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_hands_back_jobs_that_outlive_the_grace_period() {
    let server = Server::start("lease = \"60s\"\n");
    let client = server.client();
    let ids: Vec<String> = {
        let jobs = (0..2).map(|i| job("long", json!({"i": i}))).collect();
        client
            .enqueue_many_requests(&EnqueueManyRequest { jobs })
            .await
            .unwrap()
            .jobs
            .into_iter()
            .map(|e| e.job.id)
            .collect()
    };
    let mut first = Worker::start(
        &server,
        &[
            "--queue",
            "default",
            "--concurrency",
            "2",
            "--grace",
            "500ms",
            "--exec",
            "sleep 60",
        ],
    );
    eventually(Duration::from_secs(20), "both jobs running", async || {
        let page = client.jobs(&[("state", "running".into())]).await.unwrap();
        (page.jobs.len() == 2).then_some(())
    })
    .await;
    let status = first.terminate(Duration::from_secs(10));
    assert!(status.success(), "{status:?}");
    // Handed back, not left to expire (the lease is 60 s): available at once, attempt given back.
    for id in &ids {
        let job = client.job(id).await.unwrap();
        assert_eq!(
            (job.state.as_str(), job.attempt),
            ("available", 0),
            "{job:?}"
        );
    }
    let _second = Worker::start(
        &server,
        &["--queue", "default", "--concurrency", "2", "--exec", "true"],
    );
    for id in &ids {
        let done = client.job_wait(id, "30s").await.unwrap();
        assert_eq!((done.state.as_str(), done.attempt), ("completed", 1));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acknowledged_batches_survive_kill_9_of_the_server_whole() {
    const BATCH: usize = 20;
    let mut server = Server::start("");
    let mut acknowledged: Vec<String> = Vec::new();
    let mut attempted: Vec<String> = Vec::new();
    for round in 0..10 {
        // Several producers keep batches in flight; the server is killed right after one of
        // them is acknowledged, while others are mid-request.
        let (acked_tx, mut acked_rx) = tokio::sync::mpsc::unbounded_channel::<String>();
        let mut producers = Vec::new();
        for p in 0..3 {
            let (client, acked_tx) = (server.client(), acked_tx.clone());
            let tags: Vec<String> = (0..1000).map(|b| format!("r{round}p{p}b{b}")).collect();
            attempted.extend(tags.iter().take(50).cloned());
            producers.push(tokio::spawn(async move {
                for tag in tags.into_iter().take(50) {
                    let jobs = (0..BATCH)
                        .map(|i| NewJobRequest {
                            tags: vec![tag.clone()],
                            ..job("batch", json!({ "i": i }))
                        })
                        .collect();
                    if client
                        .enqueue_many_requests(&EnqueueManyRequest { jobs })
                        .await
                        .is_err()
                    {
                        return;
                    }
                    let _ = acked_tx.send(tag);
                }
            }));
        }
        acknowledged.push(acked_rx.recv().await.expect("a batch acknowledged"));
        tokio::time::sleep(Duration::from_millis(5 * (round as u64 % 4))).await;
        server.kill9();
        for producer in producers {
            let _ = producer.await;
        }
        while let Ok(tag) = acked_rx.try_recv() {
            acknowledged.push(tag);
        }
        server.restart();
    }
    let client = server.client();
    for tag in &attempted {
        let page = client
            .jobs(&[("tag", tag.clone()), ("limit", "100".into())])
            .await
            .unwrap();
        let present = page.jobs.len();
        if acknowledged.contains(tag) {
            assert_eq!(
                present, BATCH,
                "acknowledged batch {tag} lost jobs after kill -9"
            );
        } else {
            assert!(
                present == 0 || present == BATCH,
                "batch {tag} is partly present: {present} of {BATCH}"
            );
        }
    }
    assert!(acknowledged.len() >= 10);
}

#[test]
fn a_non_loopback_bind_without_tokens_is_refused_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(ROTA)
        .args(["serve", "--bind", "0.0.0.0:0"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("refusing to listen on 0.0.0.0:0") && stderr.contains("--insecure-no-auth"),
        "{stderr}"
    );
}

/// A command with no server where it points says so in one line that names the URL, the
/// cause and where the URL comes from (it said "error sending request for url" twice).
#[test]
fn a_command_without_a_server_says_so_in_one_line() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("http://127.0.0.1:{}", free_port());
    let out = std::process::Command::new(ROTA)
        .args(["enqueue", "report.build"])
        .env("ROTA_URL", &url)
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains(&format!("cannot reach rota at {url}: Connection refused"))
            && stderr.contains("ROTA_URL")
            && !stderr.contains("error sending request"),
        "{stderr}"
    );
}

#[test]
fn start_up_errors_are_one_clear_line_and_a_non_zero_exit() {
    let dir = tempfile::tempdir().unwrap();
    // Never the default port: something else may listen on 127.0.0.1:7700, and a test must
    // not depend on a fixed port being free (see issue 9).
    let run = |args: &[&str], config: &str| {
        std::fs::write(dir.path().join("rota.toml"), config).unwrap();
        let mut args = args.to_vec();
        if !args.contains(&"--bind") {
            args.extend(["--bind", "127.0.0.1:0"]);
        }
        let out = std::process::Command::new(ROTA)
            .args(&args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{args:?} succeeded");
        String::from_utf8_lossy(&out.stderr).into_owned()
    };
    // Occupy the default port when it is free, so the test shows it does not need it.
    let _default_port = std::net::TcpListener::bind("127.0.0.1:7700").ok();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken = port.local_addr().unwrap().to_string();
    for (args, config, expected) in [
        (vec!["serve"], "bnd = 1\n", "did you mean `bind`"),
        (vec!["serve"], "bind = \n", "line 1"),
        (
            vec!["serve", "--database", "mysql://x/y"],
            "",
            "unsupported URL scheme `mysql://`",
        ),
        (
            vec!["serve", "--database", "postgres://rota@host.invalid/rota"],
            "",
            "PostgreSQL host \"host.invalid\" is not known",
        ),
        (
            vec![
                "serve",
                "--database",
                "postgres://rota@127.0.0.1:1/rota",
                "--database-wait",
                "0s",
            ],
            "",
            "cannot reach PostgreSQL on 127.0.0.1:1",
        ),
        (
            vec!["serve", "--database-wait", "soon"],
            "",
            "database_wait",
        ),
        (
            vec!["serve", "--bind", taken.as_str()],
            "",
            "address is in use",
        ),
        (
            vec!["serve", "--durability", "sometimes"],
            "",
            "durability: expected `full` or `normal`",
        ),
    ] {
        let stderr = run(&args, config);
        assert!(stderr.contains(expected), "{args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{args:?}: {stderr}");
    }
    // A database written by a newer rota.
    let db = dir.path().join("new.db");
    drop(rota_sqlite::SqliteStore::open_migrated(rota_sqlite::SqliteOptions::new(&db)).unwrap());
    rusqlite_bump(&db);
    let stderr = run(&["serve", "--database", db.to_str().unwrap()], "");
    assert!(
        stderr.contains("newer than this binary supports"),
        "{stderr}"
    );
    drop(port);
}

fn rusqlite_bump(db: &std::path::Path) {
    // Through the store's own schema table, as a newer release would leave it.
    rusqlite::Connection::open(db)
        .unwrap()
        .execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (999, 0)",
            [],
        )
        .unwrap();
}

#[test]
fn a_mistyped_flag_or_command_fails_once_with_a_suggestion() {
    for (args, hint) in [
        (vec!["enqueu", "x"], "enqueue"),
        (vec!["enqueue", "x", "--queu", "q"], "--queue"),
        (vec!["worker", "--queue", "q", "--exek", "true"], "--exec"),
    ] {
        let out = std::process::Command::new(ROTA)
            .args(&args)
            .output()
            .unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(hint), "{args:?}: {stderr}");
    }
}

#[test]
fn migrate_status_and_up_report_schema_versions() {
    let dir = tempfile::tempdir().unwrap();
    let rota = |args: &[&str]| {
        let out = std::process::Command::new(ROTA)
            .args(args)
            .current_dir(dir.path())
            .output()
            .unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let (ok, before) = rota(&["migrate", "status", "--database", "x.db"]);
    assert!(ok && before.contains("no database yet"), "{before}");
    let (ok, up) = rota(&["migrate", "up", "--database", "x.db"]);
    assert!(
        ok && up.contains(&format!("schema 0 -> {}", rota_sqlite::SCHEMA_VERSION)),
        "{up}"
    );
    let (ok, after) = rota(&["migrate", "status", "--database", "x.db"]);
    assert!(ok && after.contains("up to date"), "{after}");
    rusqlite_bump(&dir.path().join("x.db"));
    let (ok, newer) = rota(&["migrate", "status", "--database", "x.db"]);
    assert!(!ok && newer.contains("newer rota"), "{newer}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_ends_long_polls_and_stops_the_server_promptly() {
    let mut server = Server::start("");
    let client = server.client();
    let poll = tokio::spawn(async move {
        client
            .fetch(&FetchRequest {
                worker: "w".into(),
                queues: vec!["default".into()],
                kinds: vec![],
                max: Some(1),
                wait: Some("50s".into()),
                ..Default::default()
            })
            .await
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    let took = tokio::task::spawn_blocking(move || server.terminate())
        .await
        .unwrap();
    assert!(took < Duration::from_secs(5), "shutdown took {took:?}");
    let answered = poll
        .await
        .unwrap()
        .expect("the long poll is answered, not cut off");
    assert!(answered.jobs.is_empty());
}

#[test]
fn tokens_made_by_rota_token_new_are_accepted_by_scope() {
    let make = |scope: &str| {
        let out = std::process::Command::new(ROTA)
            .args(["token", "new", "--scope", scope, "--name", scope])
            .output()
            .unwrap();
        assert!(out.status.success());
        let token = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        let config = String::from_utf8(out.stderr).unwrap();
        let entry = config[config.find("[[token]]").unwrap()..].to_owned();
        (token, entry)
    };
    let (producer, producer_entry) = make("produce");
    let (worker, worker_entry) = make("work");
    let server = Server::start(&format!("{producer_entry}\n{worker_entry}\n"));
    let run = |token: Option<&str>, args: &[&str]| {
        let mut command = std::process::Command::new(ROTA);
        command
            .args(args)
            .env("ROTA_URL", &server.url)
            .env_remove("ROTA_TOKEN");
        if let Some(token) = token {
            command.env("ROTA_TOKEN", token);
        }
        let out = command.output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (ok, stderr) = run(None, &["enqueue", "k"]);
    assert!(!ok && stderr.contains("unauthorized"), "{stderr}");
    let (ok, stderr) = run(Some(&worker), &["enqueue", "k"]);
    assert!(!ok && stderr.contains("forbidden"), "{stderr}");
    let (ok, stderr) = run(Some(&producer), &["enqueue", "k"]);
    assert!(ok, "{stderr}");
    let (ok, stderr) = run(Some("rota_0000"), &["jobs", "list"]);
    assert!(!ok && stderr.contains("unauthorized"), "{stderr}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_exec_worker_kills_children_that_time_out_or_are_cancelled() {
    let server = Server::start("lease = \"3s\"\n");
    let client = server.client();
    let mut slow = job("slow", json!({}));
    slow.timeout = Some("1s".into());
    slow.max_attempts = Some(1);
    let timed = client.enqueue_request(&slow).await.unwrap().job.id;
    let cancelled = client
        .enqueue_request(&job("forever", json!({})))
        .await
        .unwrap()
        .job
        .id;
    let _worker = Worker::start(
        &server,
        &[
            "--queue",
            "default",
            "--concurrency",
            "2",
            "--exec",
            "sleep 120",
        ],
    );
    let dead = client.job_wait(&timed, "30s").await.unwrap();
    assert_eq!(dead.state, JobState::Dead);
    assert_eq!(dead.errors[0].message, "timed out after 1s");
    eventually(
        Duration::from_secs(20),
        "the second job to run",
        async || (client.job(&cancelled).await.unwrap().state == JobState::Running).then_some(()),
    )
    .await;
    let out = server.rota(&["jobs", "cancel", &cancelled]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The next heartbeat (every lease/3 = 1 s) carries the request; the child is killed.
    let ended = client.job_wait(&cancelled, "30s").await.unwrap();
    assert_eq!(ended.state, JobState::Cancelled);
    assert_eq!(ended.errors[0].message, "cancelled on request");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_config_schedule_fires_into_an_exec_worker_and_recovers_a_slot_missed_across_kill_9() {
    let config = r#"
[[schedule]]
name = "tick"
cron = "@every 1s"
queue = "default"
kind = "tick"
args = { hello = "world" }
misfire = "latest"
"#;
    let mut server = Server::start(config);
    let client = server.client();
    let _worker = Worker::start(&server, &["--queue", "default", "--exec", "cat"]);
    let completed = |client: rota::Client| async move {
        client
            .jobs(&[
                ("state", "completed".into()),
                ("kind", "tick".into()),
                ("limit", "1000".into()),
            ])
            .await
            .unwrap()
            .jobs
    };
    eventually(
        Duration::from_secs(30),
        "three scheduled jobs completed",
        async || {
            let done = completed(client.clone()).await;
            (done.len() >= 3).then_some(())
        },
    )
    .await;
    let done = completed(client.clone()).await;
    assert!(done
        .iter()
        .all(|j| j.schedule.as_deref() == Some("tick")
            && j.result == Some(json!({"hello": "world"}))));

    server.kill9();
    let down_from = jiff::Timestamp::now();
    tokio::time::sleep(Duration::from_millis(3500)).await;
    server.restart();
    let client = server.client();
    let tick = eventually(
        Duration::from_secs(30),
        "the missed slot recovered",
        async || {
            let s = client.schedule("tick").await.ok()?;
            (s.recovered >= 1).then_some(s)
        },
    )
    .await;
    assert!(tick.missed >= 2, "{tick:?}");
    // The recovered slot's job exists: a slot inside the downtime.
    let jobs = client
        .jobs(&[("kind", "tick".into()), ("limit", "1000".into())])
        .await
        .unwrap()
        .jobs;
    assert!(
        jobs.iter().any(|j| j.slot.is_some_and(|s| s > down_from)),
        "no job for a slot after the kill"
    );
    let out = server.rota(&["schedules", "list"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && table.contains("tick") && table.contains("@every 1s"),
        "{table}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn config_schedules_are_reconciled_at_start_up_and_bad_ones_refused() {
    let mut server = Server::start("[[schedule]]\nname = \"nightly\"\ncron = \"0 2 * * *\"\nqueue = \"default\"\nkind = \"report\"\n");
    let client = server.client();
    assert_eq!(
        client.schedule("nightly").await.unwrap().source,
        rota::api::ScheduleSource::Config
    );
    let triggered: Enqueued = client.schedule_action("nightly", "trigger").await.unwrap();
    server.kill9();
    // Updated: another expression; then removed: its history (jobs) stays.
    std::fs::write(server.path().join("rota.toml"), "[[schedule]]\nname = \"nightly\"\ncron = \"0 3 * * *\"\nqueue = \"default\"\nkind = \"report\"\n").unwrap();
    server.restart();
    assert_eq!(
        server.client().schedule("nightly").await.unwrap().cron,
        "0 3 * * *"
    );
    server.kill9();
    std::fs::write(server.path().join("rota.toml"), "").unwrap();
    server.restart();
    let client = server.client();
    assert_eq!(
        client.schedule("nightly").await.unwrap_err().code(),
        Some("schedule_not_found")
    );
    assert_eq!(
        client
            .job(&triggered.job.id)
            .await
            .unwrap()
            .schedule
            .as_deref(),
        Some("nightly")
    );
    server.kill9();

    std::fs::write(server.path().join("rota.toml"), "[[schedule]]\nname = \"bad\"\ncron = \"0 2 * * *\"\ntimezone = \"Mars/Base\"\nqueue = \"default\"\nkind = \"k\"\n").unwrap();
    let out = std::process::Command::new(ROTA)
        .args(["serve", "--bind", "127.0.0.1:0"])
        .current_dir(server.path())
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success() && stderr.contains("schedule \"bad\"") && stderr.contains("timezone"),
        "{stderr}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn doctor_names_a_queue_nobody_polls_and_the_queues_workers_do_poll() {
    let server = Server::start("");
    let client = server.client();
    // A healthy system: nothing to report, exit 0.
    let out = server.rota(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("ok   queues"), "{text}");

    // The classic incident: producer on `scribes`, worker on `default`.
    client
        .declare_queue("scribes", &QueueDeclareRequest::default())
        .await
        .unwrap();
    for _ in 0..3 {
        client
            .enqueue_request(&NewJobRequest {
                queue: "scribes".into(),
                ..job("copy", json!({}))
            })
            .await
            .unwrap();
    }
    client
        .fetch(&FetchRequest {
            worker: "w1".into(),
            queues: vec!["default".into()],
            kinds: vec![],
            max: Some(1),
            wait: None,
            ..Default::default()
        })
        .await
        .unwrap();
    let out = server.rota(&["doctor"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("queue `scribes` has 3 ready jobs and no worker"),
        "{text}"
    );
    assert!(text.contains("workers poll `default`"), "{text}");
    assert!(
        text.contains("fix: start a worker with --queue scribes"),
        "{text}"
    );
    // The same warning in /readyz, without failing readiness.
    let (ready, report) = client.ready().await.unwrap();
    assert!(ready);
    assert!(report
        .warnings
        .iter()
        .any(|w| w.check == "queues" && w.message.contains("scribes")));
    // And directly against the database file.
    let out = std::process::Command::new(ROTA)
        .args(["doctor", "--database", "rota.db"])
        .current_dir(server.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("queue `scribes`"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn readyz_fails_when_the_database_is_gone_while_healthz_passes() {
    let server = Server::start("");
    let client = server.client();
    let (ready, report) = client.ready().await.unwrap();
    assert!(ready, "{report:?}");
    assert!(report.checks.iter().all(|c| c.ok));
    assert!(server.rota(&["health"]).status.success());
    for file in ["rota.db", "rota.db-wal", "rota.db-shm"] {
        let _ = std::fs::remove_file(server.path().join(file));
    }
    let (ready, report) = client.ready().await.unwrap();
    assert!(!ready);
    assert!(
        report.checks.iter().any(|c| c.name == "store" && !c.ok),
        "{report:?}"
    );
    let health = reqwest_get(&format!("{}/healthz", server.url)).await;
    assert_eq!(health, 200);
    let out = server.rota(&["health"]);
    assert_eq!(out.status.code(), Some(1));
}

async fn reqwest_get(url: &str) -> u16 {
    let (host, path) = url.trim_start_matches("http://").split_once('/').unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    stream
        .write_all(
            format!("GET /{path} HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n").as_bytes(),
        )
        .await
        .unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    response.split_whitespace().nth(1).unwrap().parse().unwrap()
}

/// `rota serve --help` offers only what serve uses (issue 9: it listed --url, --token and
/// --json), while client commands keep them.
#[test]
fn serve_help_lists_only_server_options() {
    let out = std::process::Command::new(ROTA)
        .args(["serve", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success());
    assert!(
        help.contains("--database") && help.contains("--bind"),
        "{help}"
    );
    for client_only in ["--url", "--token", "--json"] {
        assert!(!help.contains(client_only), "{client_only} in: {help}");
    }
    let out = std::process::Command::new(ROTA)
        .args(["jobs", "list", "--help"])
        .output()
        .unwrap();
    let help = String::from_utf8_lossy(&out.stdout);
    assert!(help.contains("--url") && help.contains("--json"), "{help}");
}

/// A container's health check asks for its own worker by name, as `celery inspect ping -d
/// worker@$HOSTNAME` does: exit 0 while it fetches or heartbeats within its lease, 1 with
/// one line saying why otherwise.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_is_healthy_by_name_while_it_polls_and_not_after_it_dies() {
    let server = Server::start("lease = \"2s\"\n");
    let mut worker = Worker::start(
        &server,
        &["--queue", "default", "--exec", "true", "--name", "box-1"],
    );
    let alive = eventually(Duration::from_secs(10), "worker box-1 alive", async || {
        let out = server.rota(&["health", "--worker", "box-1"]);
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .await;
    assert!(alive.contains("worker box-1 is alive"), "{alive}");
    assert_eq!(alive.trim().lines().count(), 1);
    let out = server.rota(&["health", "--worker", "box-2"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stdout).contains("never seen"));
    let workers = server.client().workers().await.unwrap();
    assert!(workers.workers.iter().any(|w| w.name == "box-1"));
    worker.kill9();
    let dead = eventually(
        Duration::from_secs(10),
        "worker box-1 not alive",
        async || {
            let out = server.rota(&["health", "--worker", "box-1"]);
            (out.status.code() == Some(1))
                .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
        },
    )
    .await;
    assert!(dead.contains("is NOT alive"), "{dead}");
}

/// `rota jobs wait` tells outcomes apart by exit status (0 completed, 4 dead, 5 cancelled),
/// `rota jobs list --tag` filters, and `rota enqueue --unique-for` keeps the key taken after
/// the job finished (issue 18, items 13 and 14).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cli_waits_with_telling_exit_codes_and_filters_by_tag() {
    let server = Server::start("");
    let enqueue = |args: &[&str]| {
        let out = server.rota(&[&["enqueue"], args].concat());
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .next()
            .unwrap()
            .to_owned()
    };
    let doomed = enqueue(&["doomed", "--max-attempts", "1", "--tag", "t1"]);
    let later = enqueue(&[
        "later",
        "--delay",
        "1h",
        "--unique",
        "nightly",
        "--unique-for",
        "1h",
    ]);
    let other = enqueue(&["other"]);
    let listed = server.rota(&["jobs", "list", "--tag", "t1"]);
    let text = String::from_utf8_lossy(&listed.stdout);
    assert!(text.contains(&doomed) && !text.contains(&other), "{text}");
    let _worker = Worker::start(
        &server,
        &["--queue", "default", "--kind", "doomed", "--exec", "exit 1"],
    );
    let out = server.rota(&["jobs", "wait", &doomed, "--timeout", "20s"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    server.rota(&["jobs", "cancel", &later]);
    let out = server.rota(&["jobs", "wait", &later, "--timeout", "5s"]);
    assert_eq!(out.status.code(), Some(5));
    // The cancelled job finished, but its key stays taken for the hour it asked for.
    let again = server.rota(&["enqueue", "later", "--unique", "nightly"]);
    assert!(String::from_utf8_lossy(&again.stdout).contains("duplicate"));
}

/// `rota bench --database` with a bad URL, or a database its server cannot reach, fails at
/// once with the reason instead of waiting for a server that never listens.
#[test]
fn the_benchmark_fails_at_once_on_a_database_it_cannot_use() {
    let dir = tempfile::tempdir().unwrap();
    for (database, expected) in [
        ("mysql://x/y", "unsupported URL scheme `mysql://`"),
        (
            "postgres://rota@127.0.0.1:1/rota",
            "exited (exit status: 1) before it listened",
        ),
    ] {
        let started = std::time::Instant::now();
        let out = std::process::Command::new(ROTA)
            .args([
                "bench",
                "--only",
                "w2",
                "--jobs",
                "10",
                "--database",
                database,
            ])
            .current_dir(dir.path())
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{database}: {stderr}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(15),
            "{database}: took {:?}",
            started.elapsed()
        );
    }
}

/// `rota bench` measures the bounds beside the figures, in the same run, and reports each
/// workload as a share of its bound (issue 16).
#[test]
fn the_benchmark_reports_each_workload_against_its_bound() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(ROTA)
        .args([
            "bench",
            "--jobs",
            "200",
            "--rate",
            "50",
            "--duration",
            "1s",
            "--durability",
            "normal",
            "--json",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let bounds = &report["bounds"];
    for key in ["fsync_ms", "round_trip_ms", "raw_lifecycle_jobs_per_s"] {
        assert!(bounds[key].as_f64().unwrap() > 0.0, "{key}: {report}");
    }
    for key in ["w1", "w2", "w3_p50"] {
        assert!(
            report["shares"][key].as_f64().unwrap() > 0.0,
            "{key}: {report}"
        );
    }
}
