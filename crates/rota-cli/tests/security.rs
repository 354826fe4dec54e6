//! Issue 15's security half, against a real `rota serve` on loopback: S3, every route ×
//! every kind of credential against the committed auth matrix (docs/AUTH-MATRIX.md); S4, a
//! token flooding past its rate.

mod support;

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;

use support::*;

/// One at a time: S4 measures latencies, which a neighbouring test would disturb.
static ONE_AT_A_TIME: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

/// The credential columns of the matrix, in its order.
const COLUMNS: [&str; 7] = [
    "none",
    "read",
    "produce",
    "work",
    "admin",
    "revoked",
    "malformed",
];

/// One row of docs/AUTH-MATRIX.md.
#[derive(Debug)]
struct Row {
    method: String,
    route: String,
    expected: Vec<String>,
}

fn auth_matrix() -> Vec<Row> {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../docs/AUTH-MATRIX.md");
    let text = std::fs::read_to_string(path).unwrap();
    text.lines()
        .filter(|l| l.starts_with("| ") && l.contains('`'))
        .map(|line| {
            let cells: Vec<String> = line
                .trim_matches('|')
                .split('|')
                .map(|c| c.trim().trim_matches('`').to_owned())
                .collect();
            assert_eq!(cells.len(), 2 + COLUMNS.len(), "matrix row {line:?}");
            Row {
                method: cells[0].clone(),
                route: cells[1].clone(),
                expected: cells[2..].to_vec(),
            }
        })
        .collect()
}

/// What a status means for the matrix: `401`, `403`, or `ok` (it reached its handler).
fn outcome(status: u16) -> String {
    match status {
        401 | 403 => status.to_string(),
        _ => "ok".into(),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_route_answers_every_credential_as_the_auth_matrix_says() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (read, read_entry) = new_token("reader", "read");
    let (produce, produce_entry) = new_token("producer", "produce");
    let (work, work_entry) = new_token("worker", "work");
    let (admin, admin_entry) = new_token("operator", "admin");
    let (revoked, revoked_entry) = new_token("former-operator", "admin");
    let config = format!("{read_entry}\n{produce_entry}\n{work_entry}\n{admin_entry}\n");
    let mut server = Server::start(&format!("{config}\n{revoked_entry}"));
    let http = reqwest::Client::new();
    let queues = format!("{}/v1/queues", server.url);
    let before = http
        .get(&queues)
        .bearer_auth(&revoked)
        .send()
        .await
        .unwrap();
    assert_eq!(before.status(), 200, "the token works before it is revoked");
    // Revoked: removed from rota.toml, server restarted.
    server.kill9();
    std::fs::write(server.path().join("rota.toml"), &config).unwrap();
    server.restart();

    let matrix = auth_matrix();
    let served: serde_json::Value = http
        .get(format!("{}/v1/openapi.json", server.url))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let mut routes: BTreeSet<(String, String)> = BTreeSet::new();
    for (path, item) in served["paths"].as_object().unwrap() {
        for method in item.as_object().unwrap().keys() {
            routes.insert((method.to_uppercase(), path.clone()));
        }
    }
    routes.insert(("GET".into(), "/v1/openapi.json".into()));
    routes.insert(("GET".into(), "/metrics".into()));
    let listed: BTreeSet<(String, String)> = matrix
        .iter()
        .map(|r| (r.method.clone(), r.route.clone()))
        .collect();
    assert_eq!(
        routes, listed,
        "docs/AUTH-MATRIX.md must list exactly the server's routes"
    );

    // The admin token with its last character changed (to `1` when it already ends in `0`:
    // one token in sixteen did, and then the "one off" token was the admin's own).
    let last = if admin.ends_with('0') { '1' } else { '0' };
    let one_off = format!("{}{last}", &admin[..admin.len() - 1]);
    assert_ne!(one_off, admin);
    let malformed = [
        format!("Basic {admin}"),
        "Bearer".to_owned(),
        "Bearer ".to_owned(),
        format!("Bearer {one_off}"),
        format!("Bearer\t{admin}"),
        admin.clone(),
    ];
    let mut cells = 0;
    let mut mismatches = Vec::new();
    for row in &matrix {
        let path = row
            .route
            .replace("{id}", "01J000000000000000000000AA")
            .replace("{name}", "matrix");
        let url = format!("{}{path}", server.url);
        for (column, expected) in COLUMNS.iter().zip(&row.expected) {
            let headers: Vec<Option<String>> = match *column {
                "none" => vec![None],
                "read" => vec![Some(format!("Bearer {read}"))],
                "produce" => vec![Some(format!("Bearer {produce}"))],
                "work" => vec![Some(format!("Bearer {work}"))],
                "admin" => vec![Some(format!("Bearer {admin}"))],
                "revoked" => vec![Some(format!("Bearer {revoked}"))],
                _ => malformed.iter().cloned().map(Some).collect(),
            };
            for header in headers {
                let mut request = http
                    .request(row.method.parse().unwrap(), &url)
                    .header("content-type", "application/json")
                    .body("{}");
                if let Some(header) = &header {
                    request = request.header("authorization", header);
                }
                let response = request.send().await.unwrap();
                let status = response.status().as_u16();
                let www = response.headers().get("www-authenticate").cloned();
                let body: serde_json::Value = response.json().await.unwrap_or_default();
                cells += 1;
                assert!(
                    status < 500,
                    "{} {path} as {column}: {status} {body}",
                    row.method
                );
                if outcome(status) != *expected {
                    mismatches.push(format!(
                        "{} {} as {column} ({header:?}): expected {expected}, got {status} {body}",
                        row.method, row.route
                    ));
                    continue;
                }
                match status {
                    401 => assert!(
                        body["code"] == "unauthorized" && www.is_some_and(|v| v == "Bearer"),
                        "{} {path} as {column}: a 401 says unauthorized and WWW-Authenticate: Bearer ({body})",
                        row.method
                    ),
                    403 => assert!(
                        body["code"] == "forbidden"
                            && body["detail"].as_str().unwrap().contains("needs a"),
                        "{} {path} as {column}: a 403 names the scope needed ({body})",
                        row.method
                    ),
                    _ => {}
                }
            }
        }
    }
    assert!(
        mismatches.is_empty(),
        "{} of {cells} requests differ from docs/AUTH-MATRIX.md:\n{}",
        mismatches.len(),
        mismatches.join("\n")
    );
    println!(
        "{}",
        serde_json::json!({
            "test": "S3", "routes": matrix.len(), "requests": cells, "mismatches": 0,
            "server_peak_mib": peak_mib(server.pid().unwrap()),
        })
    );
}

/// Latencies of `n` enqueues, one after another, as `token`.
async fn enqueue_latencies(
    http: &reqwest::Client,
    url: &str,
    token: &str,
    n: usize,
) -> Vec<std::time::Duration> {
    let mut took = Vec::with_capacity(n);
    for i in 0..n {
        let started = std::time::Instant::now();
        let response = http
            .post(format!("{url}/v1/jobs"))
            .bearer_auth(token)
            .json(&serde_json::json!({"queue": "default", "kind": "calm", "args": {"i": i}}))
            .send()
            .await
            .unwrap();
        assert_eq!(
            response.status(),
            200,
            "a well-behaved client is never limited"
        );
        took.push(started.elapsed());
    }
    took
}

fn p99_ms(mut took: Vec<std::time::Duration>) -> f64 {
    took.sort();
    took[(took.len() * 99 / 100).min(took.len() - 1)].as_secs_f64() * 1e3
}

/// S4: one token floods the server past its `rate`; three other clients enqueue as usual.
/// The flood is answered 429 `rate_limited` with `Retry-After`, gets no more than its rate
/// through, and the others are never limited. Their p99 with and without the flood is
/// printed (docs/RELIABILITY.md keeps the figures; timings are not asserted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_token_gets_429_with_retry_after_and_the_others_go_on() {
    let _one = ONE_AT_A_TIME.lock().await;
    let (flood, flood_entry) = new_token("flood", "produce");
    let calm: Vec<(String, String)> = (0..3)
        .map(|i| new_token(&format!("calm-{i}"), "produce"))
        .collect();
    let mut config = flood_entry.replace("[[token]]", "[[token]]\nrate = \"100/1s burst 20\"");
    for (_, entry) in &calm {
        config += &format!("\n{entry}");
    }
    let server = Server::start(&config);
    let url = server.url.clone();
    let http = reqwest::Client::new();
    let per_client = 300;

    let measure = || async {
        let runs = calm
            .iter()
            .map(|(token, _)| enqueue_latencies(&http, &url, token, per_client));
        futures_util::future::join_all(runs).await.concat()
    };
    let baseline = p99_ms(measure().await);

    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let started = std::time::Instant::now();
    let flooders: Vec<_> = (0..8)
        .map(|_| {
            let (http, url, flood, stop) = (http.clone(), url.clone(), flood.clone(), stop.clone());
            tokio::spawn(async move {
                let (mut admitted, mut limited) = (0u64, 0u64);
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    let response = http
                        .post(format!("{url}/v1/jobs"))
                        .bearer_auth(&flood)
                        .json(&serde_json::json!({"queue": "default", "kind": "flood"}))
                        .send()
                        .await
                        .unwrap();
                    match response.status().as_u16() {
                        200 => admitted += 1,
                        429 => {
                            let retry = response.headers().get("retry-after").cloned();
                            let body: serde_json::Value = response.json().await.unwrap();
                            assert_eq!(body["code"], "rate_limited", "{body}");
                            assert!(
                                retry.is_some_and(
                                    |v| v.to_str().unwrap().parse::<u64>().unwrap() >= 1
                                ),
                                "a 429 says when to come back"
                            );
                            limited += 1;
                        }
                        other => panic!("the flood got {other}"),
                    }
                }
                (admitted, limited)
            })
        })
        .collect();
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let during = p99_ms(measure().await);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let (mut admitted, mut limited) = (0, 0);
    for flooder in flooders {
        let (a, l) = flooder.await.unwrap();
        admitted += a;
        limited += l;
    }
    let elapsed = started.elapsed().as_secs_f64();
    assert!(limited > 0, "the flood was never limited");
    let allowed = 20.0 + 100.0 * elapsed;
    assert!(
        (admitted as f64) <= allowed + 1.0,
        "the flood got {admitted} through in {elapsed:.1} s; its rate allows {allowed:.0}"
    );
    println!(
        "{}",
        serde_json::json!({
            "test": "S4", "flood_admitted": admitted, "flood_limited": limited,
            "flood_seconds": (elapsed * 10.0).round() / 10.0,
            "calm_p99_ms_baseline": (baseline * 100.0).round() / 100.0,
            "calm_p99_ms_during_flood": (during * 100.0).round() / 100.0,
            "ratio": ((during / baseline) * 100.0).round() / 100.0,
            "server_peak_mib": peak_mib(server.pid().unwrap()),
        })
    );
}

/// What the server did with one raw request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Answer {
    /// A response with this status.
    Status(u16),
    /// The connection closed without a response.
    Closed,
}

/// Sends `head` then `body` on a fresh connection and reads the status line (at most
/// `within`).
fn send_raw(port: u16, head: &str, body: &[u8], within: std::time::Duration) -> Answer {
    use std::io::{Read, Write};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    stream.set_read_timeout(Some(within)).unwrap();
    let _ = stream.write_all(head.as_bytes());
    let _ = stream.write_all(body);
    let mut response = Vec::new();
    let mut buf = [0u8; 4096];
    loop {
        match stream.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                response.extend_from_slice(&buf[..n]);
                if response.windows(2).any(|w| w == b"\r\n") {
                    break;
                }
            }
        }
    }
    let line = String::from_utf8_lossy(&response);
    match line.split_whitespace().nth(1).and_then(|s| s.parse().ok()) {
        Some(status) if line.starts_with("HTTP/1.") => Answer::Status(status),
        _ => Answer::Closed,
    }
}

/// A POST of `body` to `path` with a JSON content type.
fn post(port: u16, path: &str, extra_headers: &str, body: &[u8]) -> Answer {
    let head = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n{extra_headers}\r\n",
        body.len()
    );
    send_raw(port, &head, body, std::time::Duration::from_secs(10))
}

fn get(port: u16, path: &str, extra_headers: &str) -> Answer {
    let head = format!(
        "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n{extra_headers}\r\n"
    );
    send_raw(port, &head, b"", std::time::Duration::from_secs(10))
}

/// The header deadline the S2 server runs with (`header_timeout` in rota.toml).
const HEADER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(2);

/// Slowloris (200 connections sending a header line every 500 ms), then 10,000
/// connections that send nothing: the server closes every one within the header deadline
/// plus a margin of its opening. Returns how many of each it closed.
fn slowloris_and_idle_connections(port: u16, wrong: &mut Vec<String>) -> (usize, usize) {
    use std::io::{Read, Write};
    use std::time::{Duration, Instant};
    let margin = Duration::from_secs(3);
    let opened = Instant::now();
    let mut slow: Vec<std::net::TcpStream> = (0..200)
        .map(|_| {
            let mut s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
            s.write_all(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\n")
                .unwrap();
            s.set_read_timeout(Some(Duration::from_millis(1))).unwrap();
            s
        })
        .collect();
    let mut slowloris_closed = 0;
    while !slow.is_empty() && opened.elapsed() < HEADER_TIMEOUT + margin {
        std::thread::sleep(Duration::from_millis(500));
        slow.retain_mut(|s| {
            // Closed: the drip fails, or a read sees the end (or a 408).
            let closed = s.write_all(b"X-Drip: 1\r\n").is_err() || s.read(&mut [0u8; 64]).is_ok();
            slowloris_closed += usize::from(closed);
            !closed
        });
    }

    // Opened from 8 threads; each connection is then read until the server closes it.
    let idle_closed: usize = std::thread::scope(|scope| {
        let threads: Vec<_> = (0..8)
            .map(|_| {
                scope.spawn(move || {
                    let mine: Vec<(Instant, std::net::TcpStream)> = (0..1250)
                        .map(|_| {
                            let s = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
                            (Instant::now(), s)
                        })
                        .collect();
                    let mut closed = 0;
                    for (at, mut s) in mine {
                        let left = (at + HEADER_TIMEOUT + margin)
                            .saturating_duration_since(Instant::now())
                            .max(Duration::from_millis(1));
                        s.set_read_timeout(Some(left)).unwrap();
                        let gone = match s.read(&mut [0u8; 256]) {
                            Ok(_) => true,
                            Err(e) => e.kind() == std::io::ErrorKind::ConnectionReset,
                        };
                        closed += usize::from(gone);
                    }
                    closed
                })
            })
            .collect();
        threads.into_iter().map(|t| t.join().unwrap()).sum()
    });
    if slowloris_closed < 200 {
        wrong.push(format!(
            "slowloris: {slowloris_closed} of 200 connections closed within {:?}",
            HEADER_TIMEOUT + margin
        ));
    }
    if idle_closed < 10_000 {
        wrong.push(format!(
            "idle: {idle_closed} of 10,000 connections closed within {:?} of opening",
            HEADER_TIMEOUT + margin
        ));
    }
    (slowloris_closed, idle_closed)
}

/// Peak resident memory of a process (VmHWM), MiB.
fn peak_mib(pid: u32) -> f64 {
    memory_mib(pid, "VmHWM:")
}

/// Resident memory of a process, MiB.
fn rss_mib(pid: u32) -> f64 {
    memory_mib(pid, "VmRSS:")
}

fn memory_mib(pid: u32, field: &str) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    kib / 1024.0
}

/// gzip of `n` zero bytes, made by the system's `gzip`.
fn gzip_zeros(n: usize) -> Vec<u8> {
    use std::io::Write;
    let mut child = Command::new("gzip")
        .args(["-c", "-9"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("gzip");
    let mut stdin = child.stdin.take().unwrap();
    let writer = std::thread::spawn(move || {
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..n / zeros.len() {
            stdin.write_all(&zeros).unwrap();
        }
    });
    let out = child.wait_with_output().unwrap();
    writer.join().unwrap();
    out.stdout
}

/// S2: malformed and oversized requests against a real server. Each gets its documented
/// answer (docs/RELIABILITY.md lists them) or a closed connection; none a 5xx; the server's
/// memory grows less than 64 MiB; a well-behaved client is served throughout.
#[test]
fn malformed_and_oversized_requests_get_their_4xx_and_hurt_no_one() {
    let _one = ONE_AT_A_TIME.blocking_lock();
    let server = Server::start(&format!(
        "header_timeout = \"{}s\"\n",
        HEADER_TIMEOUT.as_secs()
    ));
    let port = server.port;
    let pid = server.pid().unwrap();
    let job = br#"{"queue":"default","kind":"k"}"#;
    assert_eq!(post(port, "/v1/jobs", "", job), Answer::Status(200));
    let rss_before = rss_mib(pid);

    // A calm client enqueues all along; every one of its requests must succeed.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let calm = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut served = 0;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let answer = post(
                    port,
                    "/v1/jobs",
                    "",
                    br#"{"queue":"default","kind":"calm"}"#,
                );
                assert_eq!(answer, Answer::Status(200), "the calm client was refused");
                served += 1;
                std::thread::sleep(std::time::Duration::from_millis(20));
            }
            served
        })
    };

    let over_cap = {
        let filler = "x".repeat(1024 * 1024);
        format!(r#"{{"queue":"default","kind":"k","args":{{"s":"{filler}"}}}}"#).into_bytes()
    };
    let deep = {
        let n = 100_000;
        let mut body = br#"{"queue":"default","kind":"k","args":"#.to_vec();
        body.extend(std::iter::repeat_n(b'[', n));
        body.extend(std::iter::repeat_n(b']', n));
        body.push(b'}');
        body
    };
    let huge_batch = {
        let jobs = vec![r#"{"queue":"default","kind":"k"}"#; 40_000].join(",");
        format!(r#"{{"jobs":[{jobs}]}}"#).into_bytes()
    };
    let bomb = gzip_zeros(256 << 20);
    let long_header = format!("X-Filler: {}\r\n", "a".repeat(1024 * 1024));
    let many_headers: String = (0..500).map(|i| format!("X-H{i}: v\r\n")).collect();
    let long_path = format!("/v1/jobs/{}", "a".repeat(100 * 1024));

    use Answer::*;
    let cases: Vec<(&str, Answer, Answer)> = vec![
        ("body over the 1 MiB cap", post(port, "/v1/jobs", "", &over_cap), Status(413)),
        ("Content-Length of 1 GiB, little sent", send_raw(port, "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 1073741824\r\n\r\n", b"{", std::time::Duration::from_secs(10)), Status(413)),
        ("gzip bomb (256 MiB of zeros)", post(port, "/v1/jobs", "Content-Encoding: gzip\r\n", &bomb), Status(415)),
        ("JSON nested 100,000 deep", post(port, "/v1/jobs", "", &deep), Status(400)),
        ("invalid UTF-8 in the body", post(port, "/v1/jobs", "", b"{\"queue\":\"default\",\"kind\":\"\xff\xfe\"}"), Status(400)),
        ("lone surrogate escape", post(port, "/v1/jobs", "", br#"{"queue":"default","kind":"\ud800"}"#), Status(400)),
        ("NUL in the kind", post(port, "/v1/jobs", "", br#"{"queue":"default","kind":"a\u0000b"}"#), Status(422)),
        ("batch of 40,000 jobs (over the cap)", post(port, "/v1/jobs/batch", "", &huge_batch), Status(413)),
        ("empty body", post(port, "/v1/jobs", "", b""), Status(400)),
        ("JSON array instead of an object", post(port, "/v1/jobs", "", b"[1,2]"), Status(422)),
        ("JSON null", post(port, "/v1/jobs", "", b"null"), Status(422)),
        ("truncated JSON", post(port, "/v1/jobs", "", br#"{"queue":"def"#), Status(400)),
        ("unknown field", post(port, "/v1/jobs", "", br#"{"queue":"default","kind":"k","bogus":1}"#), Status(422)),
        ("priority beyond i64", post(port, "/v1/jobs", "", br#"{"queue":"default","kind":"k","priority":99999999999999999999}"#), Status(422)),
        ("priority 1e400", post(port, "/v1/jobs", "", br#"{"queue":"default","kind":"k","priority":1e400}"#), Status(400)),
        ("a 100,000-character kind", post(port, "/v1/jobs", "", format!(r#"{{"queue":"default","kind":"{}"}}"#, "k".repeat(100_000)).as_bytes()), Status(422)),
        ("text/plain content type", send_raw(port, &format!("POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", job.len()), job, std::time::Duration::from_secs(10)), Status(415)),
        ("no content type", send_raw(port, &format!("POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: {}\r\nConnection: close\r\n\r\n", job.len()), job, std::time::Duration::from_secs(10)), Status(415)),
        ("Content-Length and Transfer-Encoding both", send_raw(port, "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n", b"", std::time::Duration::from_secs(10)), Status(400)),
        ("two different Content-Lengths", send_raw(port, "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\nContent-Length: 7\r\n\r\n", b"{}", std::time::Duration::from_secs(10)), Status(400)),
        ("broken chunk size", send_raw(port, "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n", b"", std::time::Duration::from_secs(10)), Status(400)),
        ("garbage request line", send_raw(port, "HELLO THERE\r\n\r\n", b"", std::time::Duration::from_secs(10)), Status(400)),
        ("a 1 MiB header", get(port, "/v1/queues", &long_header), Status(431)),
        ("500 headers", get(port, "/v1/queues", &many_headers), Status(431)),
        ("a 100 KiB path", get(port, &long_path, ""), Status(414)),
        ("invalid UTF-8 in the path", get(port, "/v1/queues/%FF%FE", ""), Status(400)),
        ("a job id that is not one", get(port, "/v1/jobs/not-an-id", ""), Status(422)),
        ("limit=-1", get(port, "/v1/jobs?limit=-1", ""), Status(400)),
        ("limit=abc", get(port, "/v1/jobs?limit=abc", ""), Status(400)),
        ("limit=10^12", get(port, "/v1/jobs?limit=1000000000000", ""), Status(422)),
        ("fetch wait of 10,000 hours", post(port, "/v1/fetch", "", br#"{"worker":"w","queues":["default"],"wait":"10000h","max":1}"#), Status(422)),
        ("fetch max of 10^9", post(port, "/v1/fetch", "", br#"{"worker":"w","queues":["default"],"max":1000000000}"#), Status(422)),
        ("PATCH on /v1/jobs", send_raw(port, "PATCH /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n", b"", std::time::Duration::from_secs(10)), Status(405)),
        ("HTTP/1.0 without Host", send_raw(port, "GET /healthz HTTP/1.0\r\n\r\n", b"", std::time::Duration::from_secs(10)), Status(200)),
        ("Content-Length larger than the body, then silence", send_raw(port, "POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100\r\n\r\n", b"{\"queue\"", std::time::Duration::from_secs(3)), Closed),
    ];
    let mut wrong = Vec::new();
    for (what, got, expected) in &cases {
        if got != expected {
            wrong.push(format!("{what}: expected {expected:?}, got {got:?}"));
        }
    }

    // Chunked upload that never ends: the server must stop it near the cap, not read 1 GiB.
    let chunked_sent = {
        use std::io::{Read, Write};
        let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
        stream
            .write_all(b"POST /v1/jobs HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n")
            .unwrap();
        let chunk = format!("{:x}\r\n{}\r\n", 64 * 1024, "x".repeat(64 * 1024));
        let mut sent = 0usize;
        while sent < 1 << 30 && stream.write_all(chunk.as_bytes()).is_ok() {
            sent += 64 * 1024;
        }
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        let mut head = [0u8; 12];
        let _ = stream.read(&mut head);
        let status = String::from_utf8_lossy(&head).into_owned();
        if sent >= 1 << 30 && !status.contains("413") {
            wrong.push(format!("chunked 1 GiB: all of it was read ({status:?})"));
        }
        sent
    };

    let (slowloris_closed, idle_held) = slowloris_and_idle_connections(port, &mut wrong);

    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let served = calm.join().expect("the calm client was refused");
    let rss_after = peak_mib(pid);
    println!(
        "{}",
        serde_json::json!({
            "test": "S2", "cases": cases.len() + 1, "wrong": wrong.len(),
            "chunked_mib_sent_before_refused": sent_mib(chunked_sent),
            "calm_requests_served": served,
            "slowloris_closed": slowloris_closed, "idle_connections_closed": idle_held,
            "server_rss_mib_before": rss_before, "server_peak_mib_after": rss_after,
        })
    );
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
    assert!(
        rss_after - rss_before < 64.0,
        "the server grew from {rss_before:.0} to {rss_after:.0} MiB"
    );
    assert_eq!(get(port, "/healthz", ""), Answer::Status(200));
}

fn sent_mib(bytes: usize) -> f64 {
    (bytes as f64 / (1 << 20) as f64).round()
}

/// Schemathesis against the server's own `/v1/openapi.json`, as an admin, a producer and a
/// worker token, for `seconds` in all: no 5xx, and every response's status, content type,
/// headers and body as the document says (two thirds of the time); and every request the
/// document allows is accepted (`positive_data_acceptance`, a third, as an admin), with
/// `schemathesis_hooks.py` mending what a schema cannot say (cron texts, time zones, rules
/// across fields; its coverage phase, which hooks do not reach, is left out of that run).
fn schemathesis(seconds: u64) {
    let requirements =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/schemathesis-requirements.txt");
    let python = python_venv("schemathesis-venv", &requirements);
    let schemathesis = python.with_file_name("schemathesis");
    let tokens: Vec<(&str, (String, String))> = ["admin", "produce", "work"]
        .into_iter()
        .map(|scope| (scope, new_token(scope, scope)))
        .collect();
    let config: String = tokens.iter().map(|(_, (_, e))| format!("{e}\n")).collect();
    let server = Server::start(&config);
    // Schemathesis keeps a cache of what it found in `.schemathesis` under its working
    // directory; a run's findings belong to the run, not to the checkout.
    let scratch = tempfile::tempdir().unwrap();
    let mut figures = Vec::new();
    let responses = "not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,response_headers_conformance";
    let runs = tokens
        .iter()
        .map(|(scope, (token, _))| {
            // As an admin, who reaches every handler, half the responses' time; a quarter
            // each for the rest.
            let share = if *scope == "admin" { 3 } else { 6 };
            (*scope, token, responses.to_owned(), seconds / share, None)
        })
        .chain(std::iter::once((
            "admin, requests",
            &tokens[0].1 .0,
            format!("{responses},positive_data_acceptance"),
            seconds / 3,
            Some("fuzzing,stateful"),
        )));
    for (scope, token, checks, budget, phases) in runs {
        let mut command = Command::new(&schemathesis);
        command
            .args(["run", &format!("{}/v1/openapi.json", server.url)])
            .args(["-H", &format!("Authorization: Bearer {token}")])
            .args(["--checks", &checks])
            // One worker: CPython 3.11 (this machine's) parses source in threads with a shared
            // recursion counter (cpython#106905), which failed a ten-minute run with
            // "SystemError: AST constructor recursion depth mismatch" inside Hypothesis.
            .args(["--max-time", &budget.max(1).to_string(), "--workers", "1"])
            .args(["--seed", "15"])
            // A documented wait (`?wait=60s`) may take its minute.
            .args(["--request-timeout", "65"])
            .current_dir(scratch.path())
            .env("NO_COLOR", "1");
        if let Some(phases) = phases {
            command
                .args(["--phases", phases])
                .env(
                    "PYTHONPATH",
                    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests"),
                )
                .env("SCHEMATHESIS_HOOKS", "schemathesis_hooks");
        }
        let out = command.output().expect("schemathesis runs");
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "schemathesis as {scope} failed:\n{text}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let generated = text
            .lines()
            .find(|l| l.contains(" generated, "))
            .unwrap_or_default()
            .trim()
            .to_owned();
        figures.push(serde_json::json!({"scope": scope, "seconds": budget, "cases": generated}));
    }
    let logs = server.logs();
    assert!(!logs.contains("panicked"), "{logs}");
    println!(
        "{}",
        serde_json::json!({
            "test": "S1", "runs": figures, "server_5xx": 0,
            "server_peak_mib": peak_mib(server.pid().unwrap()),
        })
    );
}

#[test]
fn s1_schemathesis_finds_no_5xx_and_every_response_matches_the_document() {
    let _one = ONE_AT_A_TIME.blocking_lock();
    schemathesis(60);
}

#[test]
#[ignore = "ten minutes: cargo test -p rota-cli --release --test security -- --ignored"]
fn s1_full_schemathesis_for_ten_minutes() {
    let _one = ONE_AT_A_TIME.blocking_lock();
    schemathesis(600);
}
