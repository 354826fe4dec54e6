//! The OpenAPI document: committed at docs/openapi.json, identical to what the server
//! serves, and typed (enums for states, severities, misfire policies and backoff forms).
//!
//! After changing the API, regenerate the committed copy with
//! `ROTA_BLESS=1 cargo test -p rota-server --test openapi`.

use std::path::PathBuf;
use std::sync::Arc;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt;
use rota_core::SystemClock;
use rota_server::{app, AppState, ServerConfig};
use rota_testkit::TempSqlite;
use serde_json::Value;
use tower::ServiceExt;

fn committed_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs/openapi.json")
}

async fn served() -> Value {
    let db = TempSqlite::new();
    let state = AppState::new(
        db.store.clone(),
        Arc::new(SystemClock),
        ServerConfig::default(),
    );
    let response = app(state)
        .oneshot(
            Request::get("/v1/openapi.json")
                .body(Body::empty())
                .unwrap(),
        )
        .await
        .unwrap();
    let bytes = response.into_body().collect().await.unwrap().to_bytes();
    serde_json::from_slice(&bytes).unwrap()
}

#[tokio::test]
async fn the_committed_document_is_what_the_server_serves() {
    let served = served().await;
    let text = serde_json::to_string_pretty(&served).unwrap() + "\n";
    let path = committed_path();
    if std::env::var_os("ROTA_BLESS").is_some() {
        std::fs::write(&path, &text).unwrap();
    }
    let committed = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        committed == text,
        "docs/openapi.json differs from the document the server serves; regenerate it with `ROTA_BLESS=1 cargo test -p rota-server --test openapi` and commit it"
    );
}

#[tokio::test]
async fn states_severities_misfire_and_backoff_are_typed() {
    let doc = served().await;
    let schemas = &doc["components"]["schemas"];
    let variants = |name: &str| -> Vec<String> {
        schemas[name]["enum"]
            .as_array()
            .unwrap_or_else(|| panic!("{name} is an enum: {}", schemas[name]))
            .iter()
            .map(|v| v.as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(
        variants("JobState"),
        [
            "scheduled",
            "available",
            "running",
            "retryable",
            "completed",
            "dead",
            "cancelled"
        ]
    );
    assert_eq!(variants("Severity"), ["ok", "warn", "fail"]);
    assert_eq!(variants("MisfirePolicy"), ["skip", "latest", "all"]);
    assert_eq!(variants("ScheduleSource"), ["config", "api"]);
    assert_eq!(
        schemas["JobView"]["properties"]["state"]["$ref"],
        "#/components/schemas/JobState"
    );
    assert_eq!(
        schemas["FindingView"]["properties"]["severity"]["$ref"],
        "#/components/schemas/Severity"
    );
    let backoff = schemas["BackoffSchema"]["oneOf"].as_array().unwrap();
    assert_eq!(
        backoff.len(),
        2,
        "a bare list or a tagged form: {}",
        schemas["BackoffSchema"]
    );
    let forms = schemas["BackoffForm"]["oneOf"].as_array().unwrap();
    assert_eq!(forms.len(), 3, "{}", schemas["BackoffForm"]);
}

/// The document says what the server enforces: `max` is 1..=1000 (issue 9: it said 0).
#[tokio::test]
async fn fetch_max_is_documented_as_the_server_enforces_it() {
    let doc = served().await;
    let max = &doc["components"]["schemas"]["FetchRequest"]["properties"]["max"];
    assert_eq!(max["minimum"], 1, "{max}");
    assert_eq!(max["maximum"], 1000, "{max}");
}

/// The served document passes a real OpenAPI validator (openapi-spec-validator, installed by
/// `.ci/run`), and every parameter is where the server reads it: path parameters in the
/// path template, the rest in the query (issue 18: query parameters were declared `in: path`
/// and required, which broke generated clients).
#[tokio::test]
async fn the_document_is_valid_openapi_and_query_parameters_are_in_the_query() {
    let doc = served().await;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("openapi.json");
    std::fs::write(&path, serde_json::to_vec(&doc).unwrap()).unwrap();
    let out = std::process::Command::new("python3")
        .args(["-m", "openapi_spec_validator"])
        .arg(&path)
        .output()
        .expect("python3 runs (the OpenAPI validator is a Python package)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !report.contains("No module named"),
        "install the validator: `pip install openapi-spec-validator` ({report})"
    );
    assert!(out.status.success(), "{report}");
    for (template, item) in doc["paths"].as_object().unwrap() {
        for (method, op) in item.as_object().unwrap() {
            for p in op["parameters"].as_array().into_iter().flatten() {
                let name = p["name"].as_str().unwrap();
                let placeholder = format!("{{{name}}}");
                let expected = if template.contains(&placeholder) {
                    "path"
                } else {
                    "query"
                };
                assert_eq!(p["in"], expected, "{method} {template} {name}");
                if expected == "query" {
                    assert_ne!(p["required"], true, "{method} {template} {name}");
                }
            }
        }
    }
    let dead = &doc["paths"]["/v1/dead"]["get"]["parameters"];
    assert!(
        dead.as_array()
            .unwrap()
            .iter()
            .all(|p| p["name"] != "state"),
        "/v1/dead takes no state filter"
    );
}

/// The document states what the server checks beyond types (S1 checks that the server
/// accepts every request the document allows; these are the rules a client sees first).
#[tokio::test]
async fn the_document_states_what_the_server_checks() {
    let doc = served().await;
    let schemas = &doc["components"]["schemas"];
    let param = |path: &str, method: &str, name: &str| -> Value {
        doc["paths"][path][method]["parameters"]
            .as_array()
            .unwrap()
            .iter()
            .find(|p| p["name"] == name)
            .unwrap_or_else(|| panic!("{method} {path} has {name}"))["schema"]
            .clone()
    };
    assert_eq!(param("/v1/jobs/{id}", "get", "id")["format"], "uuid");
    assert_eq!(param("/v1/jobs", "get", "limit")["maximum"], 1000);
    assert_eq!(
        param("/v1/jobs", "get", "created_after")["format"],
        "date-time"
    );
    let job = &schemas["NewJobRequest"]["properties"];
    assert_eq!(job["queue"]["pattern"], "^[a-z0-9][a-z0-9_.-]{0,63}$");
    assert_eq!(job["priority"]["maximum"], 9);
    assert_eq!(job["tags"]["maxItems"], 16);
    assert_eq!(schemas["LeaseToken"]["properties"]["job"]["format"], "uuid");
    assert_eq!(
        schemas["ProgressRequest"]["properties"]["percent"]["maximum"],
        100
    );
    let exclusive = schemas["NewJobRequest"]["allOf"].to_string();
    assert!(
        exclusive.contains(r#"{"not":{"required":["run_at","delay"]}}"#),
        "{exclusive}"
    );
    // An empty body declares a queue with defaults.
    assert_eq!(
        doc["paths"]["/v1/queues/{name}"]["put"]["requestBody"]["required"],
        false
    );
    // What the server shows is not held to what requests may send.
    assert_eq!(
        schemas["QueueView"]["properties"]["backoff"]["oneOf"][0]["$ref"],
        "#/components/schemas/BackoffShown"
    );
    assert!(schemas["BackoffShown"]
        .to_string()
        .contains("BackoffFormShown"));
}
