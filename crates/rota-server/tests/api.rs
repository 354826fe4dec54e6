//! The /v1 API through `app(state)` with `oneshot`, on a real SQLite store.

use std::sync::Arc;
use std::time::Duration;

use axum::body::Body;
use axum::http::{header, Request, StatusCode};
use http_body_util::BodyExt;
use rota_core::SystemClock;
use rota_server::{app, AppState, ServerConfig};
use rota_testkit::TempSqlite;
use serde_json::{json, Value};
use tower::ServiceExt;

struct Api {
    state: AppState,
    _db: Box<dyn std::any::Any + Send + Sync>,
}

impl Api {
    fn new() -> Self {
        Self::with_config(ServerConfig::default())
    }

    fn with_config(config: ServerConfig) -> Self {
        let db = TempSqlite::new();
        let state = AppState::new(db.store.clone(), Arc::new(SystemClock), config);
        Self {
            state,
            _db: Box::new(db),
        }
    }

    /// The API over a conformance subject's store (SQLite or PostgreSQL).
    fn on(subject: rota_store::conformance::Subject) -> Self {
        let state = AppState::new(
            subject.store,
            Arc::new(SystemClock),
            ServerConfig::default(),
        );
        Self {
            state,
            _db: subject.guard,
        }
    }

    async fn raw(&self, request: Request<Body>) -> (StatusCode, String, Value) {
        let response = app(self.state.clone()).oneshot(request).await.unwrap();
        let status = response.status();
        let content_type = response
            .headers()
            .get(header::CONTENT_TYPE)
            .map(|v| v.to_str().unwrap().to_owned())
            .unwrap_or_default();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        (status, content_type, body)
    }

    async fn call(&self, method: &str, uri: &str, body: Option<Value>) -> (StatusCode, Value) {
        let builder = Request::builder().method(method).uri(uri);
        let request = match body {
            Some(body) => builder
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body.to_string()))
                .unwrap(),
            None => builder.body(Body::empty()).unwrap(),
        };
        let (status, _, body) = self.raw(request).await;
        (status, body)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_goes_from_enqueue_to_completed_and_a_waiting_read_sees_it() {
    let api = Api::new();
    let (status, body) = api
        .call(
            "POST",
            "/v1/jobs",
            Some(json!({"queue": "default", "kind": "email.send", "args": {"to": "ada"}})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let id = body["job"]["id"].as_str().unwrap().to_owned();
    assert_eq!(body["job"]["state"], "available");

    // A reader waits for the job to finish.
    let waiter = {
        let api_state = api.state.clone();
        let id = id.clone();
        tokio::spawn(async move {
            let request = Request::get(format!("/v1/jobs/{id}?wait=20s"))
                .body(Body::empty())
                .unwrap();
            let response = app(api_state).oneshot(request).await.unwrap();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            serde_json::from_slice::<Value>(&bytes).unwrap()
        })
    };

    let (status, fetched) = api
        .call(
            "POST",
            "/v1/fetch",
            Some(json!({"worker": "w1", "queues": ["default"], "kinds": ["email.send"], "max": 5})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{fetched}");
    let job = &fetched["jobs"][0];
    assert_eq!(
        (
            job["id"].as_str().unwrap(),
            job["attempt"].as_u64().unwrap()
        ),
        (id.as_str(), 1)
    );
    // A fetch answers what a worker needs, not the whole job (that is GET /v1/jobs/{id}).
    assert!(
        job.get("errors").is_none() && job.get("created_at").is_none(),
        "{job}"
    );
    assert!(job["lease_expires_at"].is_string(), "{job}");
    let token = job["lease_token"].as_u64().unwrap();

    let (status, done) = api
        .call(
            "POST",
            "/v1/complete",
            Some(json!({"completions": [{"job": id, "token": token, "result": {"sent": true}}]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{done}");
    assert_eq!(done["results"][0]["state"], "completed");

    let seen = tokio::time::timeout(Duration::from_secs(10), waiter)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(seen["state"], "completed");
    assert_eq!(seen["result"], json!({"sent": true}));

    // A second completion with the same token is a conflict, reported per item.
    let (_, again) = api
        .call(
            "POST",
            "/v1/complete",
            Some(json!({"completions": [{"job": id, "token": token}]})),
        )
        .await;
    assert_eq!(again["results"][0]["error"]["code"], "lease_lost");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_fetch_returns_as_soon_as_a_job_is_enqueued() {
    let api = Api::new();
    let fetch = {
        let state = api.state.clone();
        tokio::spawn(async move {
            let body = json!({"worker": "w", "queues": ["default"], "wait": "30s"}).to_string();
            let request = Request::post("/v1/fetch")
                .header(header::CONTENT_TYPE, "application/json")
                .body(Body::from(body))
                .unwrap();
            let started = std::time::Instant::now();
            let response = app(state).oneshot(request).await.unwrap();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            (
                started.elapsed(),
                serde_json::from_slice::<Value>(&bytes).unwrap(),
            )
        })
    };
    // Let the fetch find the queue empty and start waiting.
    while api.state.wake.subscribers("default") == 0 {
        tokio::task::yield_now().await;
    }
    api.call(
        "POST",
        "/v1/jobs",
        Some(json!({"queue": "default", "kind": "k"})),
    )
    .await;
    let (elapsed, body) = fetch.await.unwrap();
    assert_eq!(body["jobs"].as_array().unwrap().len(), 1, "{body}");
    assert!(
        elapsed < Duration::from_secs(25),
        "woken by the enqueue, not the timeout: {elapsed:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enqueue_to_an_undeclared_queue_is_a_404_problem_naming_the_closest_queue() {
    let api = Api::new();
    api.call("PUT", "/v1/queues/emails", Some(json!({}))).await;
    let request = Request::post("/v1/jobs")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"queue": "email", "kind": "send"}).to_string(),
        ))
        .unwrap();
    let (status, content_type, body) = api.raw(request).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(content_type, "application/problem+json");
    assert_eq!(body["code"], "queue_not_declared");
    assert_eq!(body["field"], "queue");
    assert!(
        body["detail"].as_str().unwrap().contains("\"emails\""),
        "{body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queues_can_be_declared_paused_and_resumed_and_show_counts() {
    let api = Api::new();
    let (status, q) = api
        .call(
            "PUT",
            "/v1/queues/reports",
            Some(json!({"max_attempts": 3, "lease": "1m"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{q}");
    assert_eq!(
        (q["max_attempts"].as_u64(), q["lease"].as_str()),
        (Some(3), Some("1m"))
    );
    api.call(
        "POST",
        "/v1/jobs",
        Some(json!({"queue": "reports", "kind": "build"})),
    )
    .await;
    let (_, paused) = api.call("POST", "/v1/queues/reports/pause", None).await;
    assert_eq!(paused["paused"], true);
    let (_, fetched) = api
        .call(
            "POST",
            "/v1/fetch",
            Some(json!({"worker": "w", "queues": ["reports"]})),
        )
        .await;
    assert_eq!(fetched["jobs"].as_array().unwrap().len(), 0);
    api.call("POST", "/v1/queues/reports/resume", None).await;
    let (_, list) = api.call("GET", "/v1/queues", None).await;
    let reports = list["queues"]
        .as_array()
        .unwrap()
        .iter()
        .find(|q| q["name"] == "reports")
        .unwrap()
        .clone();
    assert_eq!(reports["counts"]["available"], 1);
    let (_, workers) = api.call("GET", "/v1/workers", None).await;
    assert_eq!(workers["workers"][0]["id"], "w");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_job_is_dead_after_its_attempts_and_retried_from_dead() {
    let api = Api::new();
    let (_, enq) = api
        .call(
            "POST",
            "/v1/jobs",
            Some(json!({"queue": "default", "kind": "k", "max_attempts": 1})),
        )
        .await;
    let id = enq["job"]["id"].as_str().unwrap().to_owned();
    let (_, fetched) = api
        .call(
            "POST",
            "/v1/fetch",
            Some(json!({"worker": "w", "queues": ["default"]})),
        )
        .await;
    let token = fetched["jobs"][0]["lease_token"].as_u64().unwrap();
    let (_, failed) = api
        .call("POST", "/v1/fail", Some(json!({"failures": [{"job": id, "token": token, "message": "boom", "backtrace": "at x"}]})))
        .await;
    assert_eq!(failed["results"][0]["state"], "dead");
    let (_, dead) = api.call("GET", "/v1/dead", None).await;
    assert_eq!(dead["jobs"][0]["errors"][0]["message"], "boom");
    let (_, retried) = api
        .call("POST", "/v1/dead/retry", Some(json!({"kinds": ["k"]})))
        .await;
    assert_eq!(retried["results"][0]["state"], "available", "{retried}");
    let (_, job) = api.call("GET", &format!("/v1/jobs/{id}"), None).await;
    assert_eq!(
        (
            job["state"].as_str(),
            job["errors"].as_array().unwrap().len()
        ),
        (Some("available"), 1)
    );
}

/// method, uri, content type, body, expected status, expected problem code.
type Case = (
    &'static str,
    &'static str,
    Option<&'static str>,
    Vec<u8>,
    u16,
    &'static str,
);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn malformed_requests_get_their_documented_4xx_as_problem_json() {
    let api = Api::with_config(ServerConfig {
        body_limit: 64 * 1024,
        ..ServerConfig::default()
    });
    let json_type = Some("application/json");
    let huge = format!(
        r#"{{"queue":"default","kind":"k","args":"{}"}}"#,
        "x".repeat(100_000)
    );
    let deep = format!(
        r#"{{"queue":"default","kind":"k","args":{}1{}}}"#,
        "[".repeat(200),
        "]".repeat(200)
    );
    let cases: Vec<Case> = vec![
        ("POST", "/v1/jobs", json_type, b"{".to_vec(), 400, "malformed_json"),
        ("POST", "/v1/jobs", json_type, b"not json".to_vec(), 400, "malformed_json"),
        ("POST", "/v1/jobs", json_type, b"".to_vec(), 400, "malformed_json"),
        ("POST", "/v1/jobs", None, br#"{"queue":"default","kind":"k"}"#.to_vec(), 415, "unsupported_media_type"),
        ("POST", "/v1/jobs", Some("text/plain"), br#"{"queue":"default","kind":"k"}"#.to_vec(), 415, "unsupported_media_type"),
        ("POST", "/v1/jobs", json_type, br#"{"queue":5,"kind":"k"}"#.to_vec(), 422, "invalid_body"),
        ("POST", "/v1/jobs", json_type, br#"{"kind":"k"}"#.to_vec(), 422, "invalid_body"),
        ("POST", "/v1/jobs", json_type, br#"{"queue":"default","kind":"k","priority":-1}"#.to_vec(), 422, "invalid_body"),
        ("POST", "/v1/jobs", json_type, br#"{"queue":"default","kind":"k","priority":10}"#.to_vec(), 422, "invalid_field"),
        ("POST", "/v1/jobs", json_type, br#"{"queue":"default","kind":"k","priority":"high"}"#.to_vec(), 422, "invalid_body"),
        ("POST", "/v1/jobs", json_type, br#"{"queue":"default","kind":"k","priorty":1}"#.to_vec(), 422, "invalid_body"),
        ("POST", "/v1/jobs", json_type, br#"{"queue":"nope","kind":"k"}"#.to_vec(), 404, "queue_not_declared"),
        ("POST", "/v1/jobs", json_type, br#"{"queue":"Bad Queue","kind":"k"}"#.to_vec(), 422, "invalid_field"),
        ("POST", "/v1/jobs", json_type, br#"{"queue":"default","kind":""}"#.to_vec(), 422, "invalid_field"),
        ("POST", "/v1/jobs", json_type, br#"{"queue":"default","kind":"k","delay":"soon"}"#.to_vec(), 422, "invalid_field"),
        ("POST", "/v1/jobs", json_type, br#"{"queue":"default","kind":"k","delay":"-5s"}"#.to_vec(), 422, "invalid_field"),
        ("POST", "/v1/jobs", json_type, br#"{"queue":"default","kind":"k","timeout":"5 parsecs"}"#.to_vec(), 422, "invalid_field"),
        ("POST", "/v1/jobs", json_type, br#"{"queue":"default","kind":"k","max_attempts":0}"#.to_vec(), 422, "invalid_field"),
        ("POST", "/v1/jobs", json_type, br#"{"queue":"default","kind":"k","run_at":"yesterday"}"#.to_vec(), 422, "invalid_body"),
        ("POST", "/v1/jobs", json_type, br#"{"queue":"default","kind":"k","backoff":{"intervals":[]}}"#.to_vec(), 422, "invalid_field"),
        ("POST", "/v1/jobs", json_type, br#"{"queue":"default","kind":"k","backoff":{"linear":1}}"#.to_vec(), 422, "invalid_body"),
        ("POST", "/v1/jobs", json_type, huge.into_bytes(), 413, "payload_too_large"),
        ("POST", "/v1/jobs", json_type, deep.into_bytes(), 400, "malformed_json"),
        ("POST", "/v1/jobs", json_type, b"{\"queue\":\"default\",\"kind\":\"\xff\xfe\"}".to_vec(), 400, "malformed_json"),
        ("POST", "/v1/jobs/batch", json_type, br#"{"jobs":[]}"#.to_vec(), 422, "invalid_field"),
        ("POST", "/v1/jobs/batch", json_type, br#"{"jobs":{}}"#.to_vec(), 422, "invalid_body"),
        ("GET", "/v1/jobs/not-a-uuid", None, vec![], 422, "invalid_field"),
        ("GET", "/v1/jobs/0190a000-0000-7000-8000-000000000000", None, vec![], 404, "job_not_found"),
        ("GET", "/v1/jobs/0190a000-0000-7000-8000-000000000000?wait=forever", None, vec![], 422, "invalid_field"),
        ("GET", "/v1/jobs/0190a000-0000-7000-8000-000000000000?wait=2h", None, vec![], 422, "invalid_field"),
        ("GET", "/v1/jobs?limit=0", None, vec![], 422, "invalid_field"),
        ("GET", "/v1/jobs?limit=many", None, vec![], 400, "invalid_query"),
        ("GET", "/v1/jobs?state=done", None, vec![], 422, "invalid_field"),
        ("GET", "/v1/jobs?colour=red", None, vec![], 400, "invalid_query"),
        ("GET", "/v1/jobs?created_after=monday", None, vec![], 422, "invalid_field"),
        ("POST", "/v1/fetch", json_type, br#"{"worker":"w","queues":[]}"#.to_vec(), 422, "invalid_field"),
        ("POST", "/v1/fetch", json_type, br#"{"worker":"","queues":["default"]}"#.to_vec(), 422, "invalid_field"),
        ("POST", "/v1/fetch", json_type, br#"{"worker":"w","queues":["default"],"max":0}"#.to_vec(), 422, "invalid_field"),
        ("POST", "/v1/fetch", json_type, br#"{"worker":"w","queues":["default"],"wait":"10m"}"#.to_vec(), 422, "invalid_field"),
        ("POST", "/v1/fetch", json_type, br#"{"worker":"w","queues":["defualt"]}"#.to_vec(), 404, "queue_not_declared"),
        ("POST", "/v1/complete", json_type, br#"{"completions":[{"job":"nope","token":1}]}"#.to_vec(), 422, "invalid_body"),
        ("POST", "/v1/complete", json_type, br#"{"completions":[{"job":"0190a000-0000-7000-8000-000000000000","token":-1}]}"#.to_vec(), 422, "invalid_body"),
        ("POST", "/v1/fail", json_type, br#"{"failures":[{"job":"0190a000-0000-7000-8000-000000000000","token":1,"message":"x","snooze":"later"}]}"#.to_vec(), 422, "invalid_field"),
        ("POST", "/v1/dead/retry", json_type, br#"{}"#.to_vec(), 422, "invalid_field"),
        ("POST", "/v1/dead/purge", json_type, br#"{}"#.to_vec(), 422, "invalid_field"),
        ("PUT", "/v1/queues/Bad%20Name", json_type, br#"{}"#.to_vec(), 422, "invalid_field"),
        ("PUT", "/v1/queues/q", json_type, br#"{"lease":"forever"}"#.to_vec(), 422, "invalid_field"),
        ("POST", "/v1/queues/ghost/pause", None, vec![], 404, "queue_not_declared"),
        ("GET", "/v1/nothing-here", None, vec![], 404, "no_route"),
    ];
    assert!(cases.len() >= 30);
    for (method, uri, content_type, body, status, code) in cases {
        let mut request = Request::builder().method(method).uri(uri);
        if let Some(ct) = content_type {
            request = request.header(header::CONTENT_TYPE, ct);
        }
        let shown = String::from_utf8_lossy(&body)
            .chars()
            .take(80)
            .collect::<String>();
        let (got, got_type, problem) = api.raw(request.body(Body::from(body)).unwrap()).await;
        assert_eq!(got.as_u16(), status, "{method} {uri} {shown}: {problem}");
        assert_eq!(
            got_type, "application/problem+json",
            "{method} {uri} {shown}"
        );
        assert_eq!(problem["code"], code, "{method} {uri} {shown}: {problem}");
        assert_eq!(problem["status"], status);
        assert!(!problem["detail"].as_str().unwrap_or("").is_empty());
    }
}

#[test]
fn the_openapi_document_is_valid_and_lists_every_route() {
    let doc = serde_json::to_value(rota_server::openapi()).unwrap();
    assert!(doc["openapi"].as_str().unwrap().starts_with("3."));
    let expected = [
        ("post", "/v1/jobs"),
        ("get", "/v1/jobs"),
        ("post", "/v1/jobs/batch"),
        ("get", "/v1/jobs/{id}"),
        ("post", "/v1/jobs/{id}/cancel"),
        ("post", "/v1/jobs/{id}/retry"),
        ("post", "/v1/jobs/{id}/progress"),
        ("post", "/v1/jobs/{id}/checkpoint"),
        ("get", "/v1/dead"),
        ("post", "/v1/dead/retry"),
        ("post", "/v1/dead/purge"),
        ("get", "/v1/dead/groups"),
        ("get", "/healthz"),
        ("get", "/readyz"),
        ("get", "/v1/doctor"),
        ("post", "/v1/fetch"),
        ("post", "/v1/heartbeat"),
        ("post", "/v1/complete"),
        ("post", "/v1/complete-and-fetch"),
        ("post", "/v1/fail"),
        ("post", "/v1/hand-back"),
        ("get", "/v1/queues"),
        ("get", "/v1/queues/{name}"),
        ("put", "/v1/queues/{name}"),
        ("post", "/v1/queues/{name}/pause"),
        ("post", "/v1/queues/{name}/resume"),
        ("get", "/v1/workers"),
        ("get", "/v1/schedules"),
        ("post", "/v1/schedules"),
        ("get", "/v1/schedules/{name}"),
        ("delete", "/v1/schedules/{name}"),
        ("post", "/v1/schedules/{name}/pause"),
        ("post", "/v1/schedules/{name}/resume"),
        ("post", "/v1/schedules/{name}/trigger"),
    ];
    let paths = doc["paths"].as_object().unwrap();
    let listed: usize = paths
        .values()
        .map(|ops| ops.as_object().unwrap().len())
        .sum();
    assert_eq!(
        listed,
        expected.len(),
        "{:?}",
        paths.keys().collect::<Vec<_>>()
    );
    for (method, path) in expected {
        let op = &doc["paths"][path][method];
        assert!(op.is_object(), "{method} {path} missing");
        assert!(
            op["responses"]["200"].is_object(),
            "{method} {path} has no 200 response"
        );
    }
    // Every referenced schema is defined.
    let text = doc.to_string();
    for reference in text.split("\"$ref\":\"#/components/schemas/").skip(1) {
        let name = &reference[..reference.find('"').unwrap()];
        assert!(
            doc["components"]["schemas"][name].is_object(),
            "schema {name} is referenced but not defined"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn tokens_are_required_and_checked_by_scope() {
    use rota_server::{generate_token, Auth, Scope, TokenEntry};
    let mut tokens = Vec::new();
    let mut entries = Vec::new();
    for scope in [Scope::Produce, Scope::Work, Scope::Admin] {
        let (token, hash) = generate_token().unwrap();
        entries.push(TokenEntry {
            name: scope.to_string(),
            scope,
            hash: TokenEntry::parse_hash(&hash).unwrap(),
            rate: None,
        });
        tokens.push(token);
    }
    let (produce, work, admin) = (&tokens[0], &tokens[1], &tokens[2]);
    let api = Api::with_config(ServerConfig {
        auth: Auth { tokens: entries },
        ..ServerConfig::default()
    });
    let send = |method: &str, uri: &str, token: Option<&str>, body: Value| {
        let mut request = Request::builder()
            .method(method)
            .uri(uri)
            .header(header::CONTENT_TYPE, "application/json");
        if let Some(token) = token {
            request = request.header(header::AUTHORIZATION, format!("Bearer {token}"));
        }
        request.body(Body::from(body.to_string())).unwrap()
    };
    let job = json!({"queue": "default", "kind": "k"});
    let fetch = json!({"worker": "w", "queues": ["default"]});

    let (status, _, problem) = api.raw(send("POST", "/v1/jobs", None, job.clone())).await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _, problem) = api
        .raw(send(
            "POST",
            "/v1/jobs",
            Some("rota_not_a_real_token"),
            job.clone(),
        ))
        .await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (401, Some("unauthorized"))
    );
    let (status, _, problem) = api
        .raw(send("POST", "/v1/jobs", Some(work), job.clone()))
        .await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (403, Some("forbidden")),
        "a work token cannot enqueue"
    );
    let (status, _, problem) = api
        .raw(send("POST", "/v1/fetch", Some(produce), fetch.clone()))
        .await;
    assert_eq!(
        (status.as_u16(), problem["code"].as_str()),
        (403, Some("forbidden")),
        "a produce token cannot fetch"
    );
    let (status, _, problem) = api
        .raw(send("POST", "/v1/queues/q/pause", Some(produce), json!({})))
        .await;
    assert_eq!(status.as_u16(), 403, "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .ends_with("this needs an admin token"),
        "{problem}"
    );
    // The scheme is case-insensitive (RFC 9110).
    let (status, _, body) = api
        .raw(
            Request::get("/v1/queues")
                .header(header::AUTHORIZATION, format!("bearer {work}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");

    let (status, _, body) = api
        .raw(send("POST", "/v1/jobs", Some(produce), job.clone()))
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let (status, _, body) = api
        .raw(send("POST", "/v1/fetch", Some(work), fetch.clone()))
        .await;
    assert_eq!(
        (status, body["jobs"].as_array().map(Vec::len)),
        (StatusCode::OK, Some(1))
    );
    let (status, _, _) = api
        .raw(send("PUT", "/v1/queues/q", Some(admin), json!({})))
        .await;
    assert_eq!(status, StatusCode::OK);
    let (status, _, _) = api
        .raw(
            Request::get("/v1/queues")
                .header(header::AUTHORIZATION, format!("Bearer {work}"))
                .body(Body::empty())
                .unwrap(),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "any token may read");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiting_fetch_wakes_when_a_delayed_job_becomes_due() {
    let api = Api::new();
    let (_, enq) = api
        .call(
            "POST",
            "/v1/jobs",
            Some(json!({"queue": "default", "kind": "k", "delay": "1s"})),
        )
        .await;
    assert_eq!(enq["job"]["state"], "scheduled");
    let started = std::time::Instant::now();
    let (_, fetched) = api
        .call(
            "POST",
            "/v1/fetch",
            Some(json!({"worker": "w", "queues": ["default"], "wait": "30s"})),
        )
        .await;
    assert_eq!(fetched["jobs"].as_array().unwrap().len(), 1, "{fetched}");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "woken at the job's run_at, not at the wait's end"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn schedules_are_created_shown_paused_triggered_and_deleted() {
    let api = Api::new();
    let request = json!({"name": "nightly", "cron": "0 2 * * *", "timezone": "Europe/London", "queue": "default", "kind": "report.build", "max_attempts": 3, "misfire": "all", "backfill": "6h"});
    let (status, created) = api.call("POST", "/v1/schedules", Some(request)).await;
    assert_eq!(status, StatusCode::OK, "{created}");
    assert_eq!(
        (
            created["enabled"].as_bool(),
            created["source"].as_str(),
            created["misfire"].as_str()
        ),
        (Some(true), Some("api"), Some("all"))
    );
    assert!(created["next_slot"].is_string());
    let (_, list) = api.call("GET", "/v1/schedules", None).await;
    assert_eq!(list["schedules"].as_array().unwrap().len(), 1);
    let (_, paused) = api.call("POST", "/v1/schedules/nightly/pause", None).await;
    assert_eq!(
        (paused["enabled"].as_bool(), paused["next_slot"].is_null()),
        (Some(false), true)
    );
    let (_, resumed) = api.call("POST", "/v1/schedules/nightly/resume", None).await;
    assert_eq!(resumed["enabled"], true);
    let (status, triggered) = api
        .call("POST", "/v1/schedules/nightly/trigger", None)
        .await;
    assert_eq!(status, StatusCode::OK, "{triggered}");
    assert_eq!(
        (
            triggered["job"]["schedule"].as_str(),
            triggered["job"]["max_attempts"].as_u64()
        ),
        (Some("nightly"), Some(3))
    );
    let (_, shown) = api.call("GET", "/v1/schedules/nightly", None).await;
    assert_eq!(shown["cron"], "0 2 * * *");
    let (status, _) = api.call("DELETE", "/v1/schedules/nightly", None).await;
    assert_eq!(status, StatusCode::OK);
    let (status, problem) = api.call("GET", "/v1/schedules/nightly", None).await;
    assert_eq!(
        (status, problem["code"].as_str()),
        (StatusCode::NOT_FOUND, Some("schedule_not_found"))
    );
    // The triggered job stays.
    let (_, job) = api
        .call(
            "GET",
            &format!("/v1/jobs/{}", triggered["job"]["id"].as_str().unwrap()),
            None,
        )
        .await;
    assert_eq!(job["schedule"], "nightly");

    for (bad, field) in [
        (
            // The request's own field, not the core's name for it.
            json!({"name": "x", "cron": "61 * * * *", "queue": "default", "kind": "k"}),
            "cron",
        ),
        (
            json!({"name": "x", "cron": "@daily", "timezone": "Mars/Base", "queue": "default", "kind": "k"}),
            "timezone",
        ),
        (
            json!({"name": "x", "cron": "@daily", "queue": "default", "kind": "k", "misfire": "sometimes"}),
            "misfire",
        ),
    ] {
        let (status, problem) = api.call("POST", "/v1/schedules", Some(bad)).await;
        assert_eq!(
            (status, problem["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(field)),
            "{problem}"
        );
        assert!(
            problem["detail"]
                .as_str()
                .unwrap()
                .contains("schedule \"x\""),
            "{problem}"
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dead_jobs_with_the_same_error_form_one_group_that_can_be_retried() {
    let api = Api::new();
    let jobs: Vec<Value> = (0..51).map(|i| json!({"queue": "default", "kind": if i < 50 { "sync" } else { "mail" }, "max_attempts": 1})).collect();
    api.call("POST", "/v1/jobs/batch", Some(json!({ "jobs": jobs })))
        .await;
    let (_, fetched) = api
        .call(
            "POST",
            "/v1/fetch",
            Some(json!({"worker": "w", "queues": ["default"], "max": 100})),
        )
        .await;
    let failures: Vec<Value> = fetched["jobs"]
        .as_array()
        .unwrap()
        .iter()
        .enumerate()
        .map(|(i, j)| {
            let message = if j["kind"] == "sync" {
                format!("customer {} not found in shard {} (request {})", 1000 + i, i % 7, j["id"].as_str().unwrap())
            } else {
                "smtp: connection refused".to_owned()
            };
            json!({"job": j["id"], "token": j["lease_token"], "message": message, "backtrace": format!("at sync.rs:{}\nat main.rs:{}", 40 + i, i)})
        })
        .collect();
    let (_, failed) = api
        .call("POST", "/v1/fail", Some(json!({ "failures": failures })))
        .await;
    assert!(failed["results"]
        .as_array()
        .unwrap()
        .iter()
        .all(|r| r["state"] == "dead"));
    let (_, groups) = api.call("GET", "/v1/dead/groups", None).await;
    let groups = groups["groups"].as_array().unwrap().clone();
    assert_eq!(groups.len(), 2, "{groups:?}");
    assert_eq!(
        (groups[0]["count"].as_u64(), groups[0]["kinds"][0].as_str()),
        (Some(50), Some("sync"))
    );
    assert_eq!(
        (groups[1]["count"].as_u64(), groups[1]["kinds"][0].as_str()),
        (Some(1), Some("mail"))
    );
    let group = groups[0]["group"].as_str().unwrap();
    let (_, listed) = api
        .call("GET", &format!("/v1/dead?group={group}&limit=1000"), None)
        .await;
    assert_eq!(listed["jobs"].as_array().unwrap().len(), 50);
    let (_, retried) = api
        .call("POST", "/v1/dead/retry", Some(json!({ "group": group })))
        .await;
    assert_eq!(retried["results"].as_array().unwrap().len(), 50);
    let (_, left) = api.call("GET", "/v1/dead/groups", None).await;
    assert_eq!(
        left["groups"].as_array().unwrap().len(),
        1,
        "only the mail group is still dead"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_count_a_scripted_run_and_parse_as_prometheus_text() {
    let api = Api::new();
    let mut jobs: Vec<Value> = (0..10)
        .map(|_| json!({"queue": "default", "kind": "ok"}))
        .collect();
    jobs.extend((0..3).map(|_| json!({"queue": "default", "kind": "flaky", "max_attempts": 2})));
    jobs.push(json!({"queue": "default", "kind": "bad", "max_attempts": 1}));
    api.call("POST", "/v1/jobs/batch", Some(json!({ "jobs": jobs })))
        .await;
    let (_, fetched) = api
        .call(
            "POST",
            "/v1/fetch",
            Some(json!({"worker": "w", "queues": ["default"], "max": 100})),
        )
        .await;
    let leased = fetched["jobs"].as_array().unwrap();
    assert_eq!(leased.len(), 14);
    let lease = |j: &Value| (j["id"].clone(), j["lease_token"].clone());
    let completions: Vec<Value> = leased
        .iter()
        .filter(|j| j["kind"] == "ok")
        .map(|j| {
            let (id, t) = lease(j);
            json!({"job": id, "token": t})
        })
        .collect();
    let failures: Vec<Value> = leased
        .iter()
        .filter(|j| j["kind"] != "ok")
        .map(|j| {
            let (id, t) = lease(j);
            json!({"job": id, "token": t, "message": "boom"})
        })
        .collect();
    api.call(
        "POST",
        "/v1/complete",
        Some(json!({ "completions": completions })),
    )
    .await;
    api.call("POST", "/v1/fail", Some(json!({ "failures": failures })))
        .await;

    let response = app(api.state.clone())
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let text = String::from_utf8(
        response
            .into_body()
            .collect()
            .await
            .unwrap()
            .to_bytes()
            .to_vec(),
    )
    .unwrap();
    let lines = text.lines().map(|l| Ok(l.to_owned()));
    let scrape = prometheus_parse::Scrape::parse(lines).expect("valid Prometheus text");
    let total = |name: &str| -> f64 {
        scrape
            .samples
            .iter()
            .filter(|s| s.metric == name)
            .map(|s| match s.value {
                prometheus_parse::Value::Counter(v)
                | prometheus_parse::Value::Gauge(v)
                | prometheus_parse::Value::Untyped(v) => v,
                _ => 0.0,
            })
            .sum()
    };
    assert_eq!(total("rota_jobs_enqueued_total"), 14.0, "{text}");
    assert_eq!(total("rota_jobs_completed_total"), 10.0);
    assert_eq!(total("rota_jobs_retried_total"), 3.0);
    assert_eq!(total("rota_jobs_dead_total"), 1.0);
    assert_eq!(total("rota_jobs_failed_total"), 4.0);
    let retryable = scrape
        .samples
        .iter()
        .find(|s| s.metric == "rota_jobs" && s.labels.get("state") == Some("retryable"))
        .expect("jobs gauge by state");
    assert!(matches!(retryable.value, prometheus_parse::Value::Gauge(v) if v == 3.0));
    assert!(scrape
        .samples
        .iter()
        .any(|s| s.metric == "rota_http_requests_total"
            && s.labels.get("route") == Some("/v1/fetch")));
    assert!(scrape
        .samples
        .iter()
        .any(|s| s.metric == "rota_workers_connected"));
}

async fn scrape(api: &Api) -> String {
    let response = app(api.state.clone())
        .oneshot(Request::get("/metrics").body(Body::empty()).unwrap())
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    String::from_utf8(bytes.to_vec()).unwrap()
}

/// Every series in `/metrics` belongs to a family with help text, as `promtool check
/// metrics` demands of the Prometheus text format (issue 9: the counters' `_total` series
/// had none, because OpenMetrics names the family without the suffix).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_metric_family_has_help_text() {
    let api = Api::new();
    api.call(
        "POST",
        "/v1/jobs",
        Some(json!({"queue": "default", "kind": "k"})),
    )
    .await;
    let text = scrape(&api).await;
    assert!(!text.contains("# EOF"), "0.0.4 text has no EOF marker");
    let mut help = std::collections::HashMap::new();
    let mut types = std::collections::HashMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# HELP ") {
            let (name, text) = rest.split_once(' ').unwrap_or((rest, ""));
            assert!(!text.trim().is_empty(), "empty help: {line}");
            help.insert(name.to_owned(), text.to_owned());
        } else if let Some(rest) = line.strip_prefix("# TYPE ") {
            let (name, kind) = rest.split_once(' ').unwrap();
            types.insert(name.to_owned(), kind.to_owned());
        }
    }
    let mut series = 0;
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        series += 1;
        let name = line.split(['{', ' ']).next().unwrap();
        let family = ["_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| {
                let base = name.strip_suffix(suffix)?;
                (types.get(base).map(String::as_str) == Some("histogram")).then_some(base)
            })
            .unwrap_or(name);
        assert!(
            help.contains_key(family),
            "series {name} has no # HELP line for {family}"
        );
    }
    assert!(series > 0);
    assert!(help.contains_key("rota_jobs_enqueued_total"), "{text}");
    assert_eq!(types["rota_jobs_enqueued_total"], "counter");
    // A scraper that asks for OpenMetrics gets it.
    let response = app(api.state.clone())
        .oneshot(
            Request::get("/metrics")
                .header(
                    header::ACCEPT,
                    "application/openmetrics-text; version=1.0.0",
                )
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    assert!(response.headers()[header::CONTENT_TYPE]
        .to_str()
        .unwrap()
        .starts_with("application/openmetrics-text"));
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    assert!(String::from_utf8_lossy(&bytes)
        .trim_end()
        .ends_with("# EOF"));
}

fn fetch_request(worker: &str, wait: &str) -> Request<Body> {
    Request::post("/v1/fetch")
        .header(header::CONTENT_TYPE, "application/json")
        .body(Body::from(
            json!({"worker": worker, "queues": ["default"], "wait": wait}).to_string(),
        ))
        .unwrap()
}

/// With 16 fetches waiting on one queue, one enqueue reaches one of them, not all 16
/// (counted by the wake hub and the store's parked claims), and that one gets the job.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_enqueue_wakes_one_of_sixteen_waiting_fetches() {
    let api = Api::new();
    let mut fetches = Vec::new();
    for i in 0..16 {
        let router = app(api.state.clone());
        fetches.push(tokio::spawn(async move {
            let response = router
                .oneshot(fetch_request(&format!("w{i}"), "3s"))
                .await
                .unwrap();
            let bytes = response.into_body().collect().await.unwrap().to_bytes();
            let body: Value = serde_json::from_slice(&bytes).unwrap();
            (
                tokio::time::Instant::now(),
                body["jobs"].as_array().unwrap().len(),
            )
        }));
    }
    let subscribed = async {
        while api.state.wake.subscribers("default") < 16 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    };
    tokio::time::timeout(Duration::from_secs(5), subscribed)
        .await
        .expect("16 fetches wait");
    let parked = || api.state.store.write_stats().unwrap().parked_claims;
    let (before, parked_before) = (api.state.wake.wakeups(), parked());
    let enqueued = tokio::time::Instant::now();
    api.call(
        "POST",
        "/v1/jobs",
        Some(json!({"queue": "default", "kind": "k"})),
    )
    .await;
    let mut got = Vec::new();
    for f in fetches {
        got.push(f.await.unwrap());
    }
    // A fetch whose claim was parked by then is handed the job in the enqueue's commit
    // (no wake-up at all); one that was still claiming is woken.
    assert_eq!(
        (api.state.wake.wakeups() - before) + (parked() - parked_before),
        1,
        "one wake-up or one parked claim for one job"
    );
    let winners: Vec<_> = got.iter().filter(|(_, n)| *n == 1).collect();
    assert_eq!(winners.len(), 1);
    assert!(
        winners[0].0 - enqueued < Duration::from_secs(1),
        "the woken fetch answered at once, not at its deadline"
    );
}

/// A `?wait` on a job whose worker died wakes when the rescuer moves the job, not at the
/// wait's deadline (issue 9: rescues did not reach job waiters).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_wait_wakes_when_the_rescuer_ends_the_job() {
    use rota_engine::Service;
    let api = Api::new();
    let (_, enqueued) = api
        .call(
            "POST",
            "/v1/jobs",
            Some(json!({"queue": "default", "kind": "k", "max_attempts": 1})),
        )
        .await;
    let id = enqueued["job"]["id"].as_str().unwrap().to_owned();
    let (_, fetched) = api
        .call(
            "POST",
            "/v1/fetch",
            Some(json!({"worker": "doomed", "queues": ["default"]})),
        )
        .await;
    assert_eq!(fetched["jobs"].as_array().unwrap().len(), 1);
    let router = app(api.state.clone());
    let uri = format!("/v1/jobs/{id}?wait=30s");
    let waiter = tokio::spawn(async move {
        let response = router
            .oneshot(Request::get(uri).body(Body::empty()).unwrap())
            .await
            .unwrap();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        serde_json::from_slice::<Value>(&bytes).unwrap()
    });
    tokio::time::sleep(Duration::from_millis(100)).await;
    // The worker never heartbeats: rescue as if its 30 s lease had passed (injected time).
    let later = rota_core::add_duration(jiff::Timestamp::now(), Duration::from_secs(60));
    let rescuer = rota_engine::Rescuer::new(
        api.state.store.clone(),
        rota_engine::RescuerConfig {
            startup_grace: Duration::ZERO,
            ..Default::default()
        },
    );
    let report = rescuer.run_once(later).await.unwrap();
    assert_eq!(report.dead.len(), 1);
    let job = tokio::time::timeout(Duration::from_secs(5), waiter)
        .await
        .expect("the waiter wakes at the rescue, long before its 30 s deadline")
        .unwrap();
    assert_eq!(job["state"], "dead");
}

/// Defects of issue 9 found by trying the API as a new user.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fetch_reports_the_granted_lease_and_queues_can_be_read_and_declared_bare() {
    let api = Api::new();
    api.call(
        "POST",
        "/v1/jobs",
        Some(json!({"queue": "default", "kind": "k"})),
    )
    .await;
    let (_, fetched) = api
        .call(
            "POST",
            "/v1/fetch",
            Some(json!({"worker": "w", "queues": ["default"]})),
        )
        .await;
    assert_eq!(
        fetched["lease"], "30s",
        "the granted length, not the time left"
    );
    // PUT with no body declares with defaults; GET reads one queue.
    let (status, queue) = api.call("PUT", "/v1/queues/reports", None).await;
    assert_eq!(status, StatusCode::OK, "{queue}");
    assert_eq!(queue["name"], "reports");
    let (status, queue) = api.call("GET", "/v1/queues/reports", None).await;
    assert_eq!(
        (status, queue["name"].as_str()),
        (StatusCode::OK, Some("reports"))
    );
    let (status, problem) = api.call("GET", "/v1/queues/nope", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert_eq!(problem["code"], "queue_not_declared");
    // A page size out of range is refused by the store's one rule, naming the field.
    let (status, problem) = api.call("GET", "/v1/jobs?limit=1001", None).await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["field"], "limit", "{problem}");
}

/// A body over the limit is refused naming the limit and the setting that raises it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_body_over_the_limit_names_the_limit_and_the_setting() {
    let api = Api::with_config(ServerConfig {
        body_limit: 1000,
        ..ServerConfig::default()
    });
    let big = "x".repeat(2000);
    let (status, problem) = api
        .call(
            "POST",
            "/v1/jobs",
            Some(json!({"queue": "default", "kind": "k", "args": {"blob": big}})),
        )
        .await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert_eq!(problem["code"], "payload_too_large");
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("1000 bytes") && detail.contains("--body-limit"),
        "{detail}"
    );
}

/// Smaller defects of issue 18, each at the API: a batch names the failing job, a failure
/// cannot both snooze and discard, far-future and zero values are refused naming the field,
/// a schedule for an undeclared queue is refused, and a queue declare changes only what it
/// gives.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_input_is_refused_naming_the_field_and_the_job() {
    let api = Api::new();
    let (status, problem) = api
        .call(
            "POST",
            "/v1/jobs/batch",
            Some(json!({"jobs": [
                {"queue": "default", "kind": "ok"},
                {"queue": "default", "kind": "bad", "priority": 12}
            ]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["field"], "jobs[1].priority", "{problem}");
    for (body, field) in [
        (
            json!({"queue": "default", "kind": "k", "delay": "100000000h"}),
            "delay",
        ),
        (
            json!({"queue": "default", "kind": "k", "run_at": "9999-12-30T22:00:00.5Z"}),
            "run_at",
        ),
        (
            json!({"queue": "default", "kind": "k", "timeout": "0s"}),
            "timeout",
        ),
    ] {
        let (status, problem) = api.call("POST", "/v1/jobs", Some(body)).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(problem["field"], field, "{problem}");
    }
    let (_, page) = api.call("GET", "/v1/jobs", None).await;
    assert!(
        page["jobs"].as_array().unwrap().is_empty(),
        "nothing was stored"
    );

    api.call(
        "POST",
        "/v1/jobs",
        Some(json!({"queue": "default", "kind": "k"})),
    )
    .await;
    let (_, fetched) = api
        .call(
            "POST",
            "/v1/fetch",
            Some(json!({"worker": "w", "queues": ["default"]})),
        )
        .await;
    let job = &fetched["jobs"][0];
    let (status, problem) = api
        .call(
            "POST",
            "/v1/fail",
            Some(
                json!({"failures": [{"job": job["id"], "token": job["lease_token"],
                "message": "x", "snooze": "5m", "discard": true}]}),
            ),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["field"], "failures[0].discard", "{problem}");

    let (status, problem) = api
        .call(
            "POST",
            "/v1/schedules",
            Some(json!({"name": "badq", "cron": "* * * * *", "queue": "defualt", "kind": "k"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND, "{problem}");
    assert_eq!(problem["code"], "queue_not_declared");
    assert!(problem["detail"].as_str().unwrap().contains("\"default\""));

    let (status, _) = api
        .call(
            "PUT",
            "/v1/queues/q1",
            Some(json!({"max_attempts": 5, "timeout": "1s", "backoff": ["1s", "2s"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    let (_, queue) = api
        .call("PUT", "/v1/queues/q1", Some(json!({"lease": "1m"})))
        .await;
    assert_eq!(
        (&queue["lease"], &queue["max_attempts"], &queue["timeout"]),
        (&json!("1m"), &json!(5), &json!("1s")),
        "{queue}"
    );
    assert_eq!(queue["backoff"], json!({"intervals": ["1s", "2s"]}));
    let (status, problem) = api
        .call("PUT", "/v1/queues/q1", Some(json!({"lease": "0s"})))
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["field"], "lease", "{problem}");
}

/// A minimal-response enqueue (`?return=ids` or `Prefer: return=minimal`) returns exactly
/// the ids of the jobs, in request order, and says which were duplicates (issue 16).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_minimal_enqueue_answers_the_ids_in_order() {
    let api = Api::new();
    let jobs: Vec<Value> = (0..5)
        .map(|i| json!({"queue": "default", "kind": "k", "args": {"i": i}}))
        .collect();
    let (status, answer) = api
        .call(
            "POST",
            "/v1/jobs/batch?return=ids",
            Some(json!({ "jobs": jobs })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert!(answer.get("jobs").is_none(), "no documents: {answer}");
    let ids: Vec<String> = answer["ids"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 5);
    for (i, id) in ids.iter().enumerate() {
        let (_, job) = api.call("GET", &format!("/v1/jobs/{id}"), None).await;
        assert_eq!(job["args"]["i"], i, "in request order");
    }
    let request = Request::post("/v1/jobs/batch")
        .header(header::CONTENT_TYPE, "application/json")
        .header("prefer", "return=minimal")
        .body(Body::from(
            json!({"jobs": [
                {"queue": "default", "kind": "k", "unique_key": "u"},
                {"queue": "default", "kind": "k", "unique_key": "u"}
            ]})
            .to_string(),
        ))
        .unwrap();
    let (status, _, answer) = api.raw(request).await;
    assert_eq!(status, StatusCode::OK, "{answer}");
    assert_eq!(
        answer["ids"][0], answer["ids"][1],
        "the second is the first's duplicate"
    );
    assert_eq!(answer["duplicates"], json!([1]));
    let (status, problem) = api
        .call(
            "POST",
            "/v1/jobs/batch?return=everything",
            Some(json!({"jobs": [{"queue": "default", "kind": "k"}]})),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY);
    assert_eq!(problem["field"], "return");
}

/// One request completes a batch and leases the next: per-item outcomes (a stale token is
/// refused), the new jobs lean unless `full`, and a fetch that fails after the completions
/// says so beside their outcomes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn complete_and_fetch_records_the_batch_and_leases_the_next() {
    let api = Api::new();
    let enqueue = json!({"jobs": (0..3).map(|i| json!({"queue": "default", "kind": "k", "args": {"i": i}})).collect::<Vec<_>>()});
    let (status, _) = api.call("POST", "/v1/jobs/batch", Some(enqueue)).await;
    assert_eq!(status, StatusCode::OK);
    let (_, fetched) = api
        .call(
            "POST",
            "/v1/fetch",
            Some(json!({"worker": "w", "queues": ["default"], "max": 2})),
        )
        .await;
    let jobs = fetched["jobs"].as_array().unwrap().clone();
    let lease = |j: &Value| {
        (
            j["id"].as_str().unwrap().to_owned(),
            j["lease_token"].as_u64().unwrap(),
        )
    };
    let (a, ta) = lease(&jobs[0]);
    let (b, tb) = lease(&jobs[1]);
    let (status, out) = api
        .call(
            "POST",
            "/v1/complete-and-fetch",
            Some(json!({
                "completions": [{"job": a, "token": ta, "result": {"ok": 1}}, {"job": b, "token": tb + 1}],
                "fetch": {"worker": "w", "queues": ["default"], "max": 10, "full": true},
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["results"][0]["state"], "completed", "{out}");
    assert_eq!(out["results"][1]["error"]["code"], "lease_lost", "{out}");
    assert_eq!(out["jobs"].as_array().unwrap().len(), 1, "{out}");
    let next = &out["jobs"][0];
    assert_eq!(next["args"], json!({"i": 2}));
    assert_eq!(
        next["job"]["state"], "running",
        "full: the whole document: {next}"
    );
    assert_eq!(out["lease"], "30s");
    assert!(out.get("fetch_error").is_none(), "{out}");
    let (_, done) = api.call("GET", &format!("/v1/jobs/{a}"), None).await;
    assert_eq!(
        (done["state"].as_str(), &done["result"]),
        (Some("completed"), &json!({"ok": 1}))
    );

    // The fetch half fails (a typo'd queue): the completion stands and the problem is named.
    let (c, tc) = lease(next);
    let (status, out) = api
        .call(
            "POST",
            "/v1/complete-and-fetch",
            Some(json!({
                "completions": [{"job": c, "token": tc}],
                "fetch": {"worker": "w", "queues": ["defualt"]},
            })),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{out}");
    assert_eq!(out["results"][0]["state"], "completed", "{out}");
    assert_eq!(out["fetch_error"]["code"], "queue_not_declared", "{out}");
    assert_eq!(out["jobs"], json!([]));

    // A bad fetch is refused before anything is recorded, naming the nested field.
    let (status, problem) = api
        .call(
            "POST",
            "/v1/complete-and-fetch",
            Some(json!({
                "completions": [{"job": b, "token": tb}],
                "fetch": {"worker": "w", "queues": ["default"], "max": 0},
            })),
        )
        .await;
    assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
    assert_eq!(problem["field"], "fetch.max", "{problem}");
    assert!(
        problem["detail"]
            .as_str()
            .unwrap()
            .starts_with("fetch.max:"),
        "{problem}"
    );
    let (_, still) = api.call("GET", &format!("/v1/jobs/{b}"), None).await;
    assert_eq!(still["state"], "running");
}

/// A worker that goes away mid-poll (its connection closes, so the fetch is dropped) has
/// nothing leased for it afterwards: its parked claim is withdrawn with it, and the next
/// job stays available for the workers that are still there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_fetch_dropped_mid_poll_has_nothing_leased_for_it() {
    let api = Api::new();
    let router = app(api.state.clone());
    let polling = tokio::spawn(async move { router.oneshot(fetch_request("gone", "10s")).await });
    let subscribed = async {
        while api.state.wake.subscribers("default") < 1 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        // Past its empty claim, to its park.
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    tokio::time::timeout(Duration::from_secs(5), subscribed)
        .await
        .expect("the fetch waits");
    polling.abort();
    let _ = polling.await;
    let (status, job) = api
        .call(
            "POST",
            "/v1/jobs",
            Some(json!({"queue": "default", "kind": "k"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{job}");
    let id = job["job"]["id"].as_str().unwrap();
    let (_, stored) = api.call("GET", &format!("/v1/jobs/{id}"), None).await;
    assert_eq!(stored["state"], "available", "{stored}");
    assert_eq!(api.state.store.write_stats().unwrap().parked_claims, 0);
}

/// A NUL character (which PostgreSQL cannot store) is refused in data, naming where, and
/// replaced in a failure report's prose, so the report is recorded: the same on both stores
/// (PostgreSQL answered 500 to all of it, and lost the failure report).
async fn nul_characters_are_refused_in_data_and_replaced_in_prose(api: Api) {
    let (status, body) = api.call("PUT", "/v1/queues/q", None).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let job = |extra: Value| {
        let mut body = json!({"queue": "q", "kind": "k"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        body
    };
    for (extra, field) in [
        (json!({"tags": ["ok", "a\u{0}b"]}), "tags[1]"),
        (json!({"args": {"to": ["x", "a\u{0}"]}}), "args.to[1]"),
        (json!({"args": {"message": "a\u{0}"}}), "args.message"),
        (json!({"unique_key": "a\u{0}"}), "unique_key"),
        (json!({"concurrency_key": "a\u{0}"}), "concurrency_key"),
    ] {
        let (status, problem) = api.call("POST", "/v1/jobs", Some(job(extra))).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{problem}");
        assert_eq!(problem["field"], field, "{problem}");
        assert!(
            problem["detail"].as_str().unwrap().contains("NUL"),
            "{problem}"
        );
    }
    let (_, page) = api.call("GET", "/v1/jobs?queue=q", None).await;
    assert_eq!(
        page["jobs"].as_array().unwrap().len(),
        0,
        "nothing stored: {page}"
    );
    for (uri, field) in [
        ("/v1/jobs?queue=q&tag=a%00b", "tag"),
        ("/v1/schedules/a%00b", "path"),
        ("/jobs?kind=%00", "kind"),
    ] {
        let (status, problem) = api.call("GET", uri, None).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{uri}: {problem}");
        assert_eq!(problem["field"], field, "{uri}: {problem}");
    }

    // Text that only looks like the escape (an escaped backslash, then u0000) is stored.
    let (status, body) = api
        .call(
            "POST",
            "/v1/jobs",
            Some(job(json!({"args": {"raw": "\\u0000"}}))),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(body["job"]["args"]["raw"], "\\u0000");

    // A worker's failure report with a NUL in its message is recorded, the NUL replaced.
    let (status, fetched) = api
        .call(
            "POST",
            "/v1/fetch",
            Some(json!({"worker": "w", "queues": ["q"]})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{fetched}");
    let leased = &fetched["jobs"][0];
    let id = leased["id"].as_str().unwrap();
    let token = &leased["lease_token"];
    let (status, body) = api
        .call(
            "POST",
            &format!("/v1/jobs/{id}/progress"),
            Some(json!({"token": token, "percent": 5, "message": "step\u{0}1"})),
        )
        .await;
    assert_eq!(status, StatusCode::OK, "{body}");
    let failure = json!({"failures": [{"job": id, "token": token,
        "message": "boom\u{0}", "backtrace": "at \u{0}main"}]});
    let (status, body) = api.call("POST", "/v1/fail", Some(failure)).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert!(body["results"][0]["error"].is_null(), "{body}");
    let (_, job) = api.call("GET", &format!("/v1/jobs/{id}"), None).await;
    assert_eq!(job["state"], "retryable", "{job}");
    assert_eq!(job["errors"][0]["message"], "boom\u{FFFD}", "{job}");
    assert_eq!(job["errors"][0]["backtrace"], "at \u{FFFD}main", "{job}");
    assert_eq!(job["progress_message"], "step\u{FFFD}1", "{job}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_on_sqlite() {
    nul_characters_are_refused_in_data_and_replaced_in_prose(Api::on(
        rota_testkit::sqlite_subject().await,
    ))
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nul_characters_on_postgres() {
    nul_characters_are_refused_in_data_and_replaced_in_prose(Api::on(
        rota_testkit::postgres_subject().await,
    ))
    .await;
}

/// What an answer shows is what a read returns: times given or computed finer than the
/// microsecond (which every store keeps) are cut to it before they are answered (the enqueue
/// answered `…59.999999999Z` and a read `…00Z`).
async fn answers_show_times_as_stored(api: Api) {
    api.call("PUT", "/v1/queues/q", None).await;
    for extra in [
        json!({"run_at": "1969-12-31T23:59:59.999999999Z"}),
        json!({"run_at": "2030-01-01T00:00:00.123456789+01:00"}),
        json!({"delay": "1ms 1ns"}),
    ] {
        let mut body = json!({"queue": "q", "kind": "k"});
        body.as_object_mut()
            .unwrap()
            .extend(extra.as_object().unwrap().clone());
        let (status, answer) = api.call("POST", "/v1/jobs", Some(body)).await;
        assert_eq!(status, StatusCode::OK, "{answer}");
        let id = answer["job"]["id"].as_str().unwrap();
        let (_, read) = api.call("GET", &format!("/v1/jobs/{id}"), None).await;
        assert_eq!(answer["job"]["run_at"], read["run_at"], "{extra}");
        let shown = read["run_at"].as_str().unwrap();
        let fraction = shown.split('.').nth(1).unwrap_or("Z");
        assert!(fraction.len() <= 7, "at most microseconds: {shown}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_show_times_as_stored_on_sqlite() {
    answers_show_times_as_stored(Api::on(rota_testkit::sqlite_subject().await)).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn answers_show_times_as_stored_on_postgres() {
    answers_show_times_as_stored(Api::on(rota_testkit::postgres_subject().await)).await;
}
