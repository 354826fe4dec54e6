//! A client generated from the served OpenAPI document (openapi-python-client, pinned in
//! `openapi-client-requirements.txt`) is generated without warnings and drives a real server:
//! the document is what a generator reads, not only what a validator accepts (the inline
//! backoff forms made duplicate models, and the generated client had none).

mod support;

use std::path::Path;
use std::process::Command;

use support::*;

#[tokio::test(flavor = "multi_thread")]
async fn a_client_generated_from_the_document_runs_a_job() {
    let here = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let python = python_venv(
        "openapi-client-venv",
        &here.join("openapi-client-requirements.txt"),
    );
    let generator = python.with_file_name("openapi-python-client");
    let server = Server::start("");
    let scratch = tempfile::tempdir().unwrap();
    let document = scratch.path().join("openapi.json");
    let served = reqwest::get(format!("{}/v1/openapi.json", server.url))
        .await
        .unwrap()
        .bytes()
        .await
        .unwrap();
    std::fs::write(&document, served).unwrap();
    let out = Command::new(&generator)
        .args(["generate", "--meta", "none", "--path"])
        .arg(&document)
        .current_dir(scratch.path())
        .env("NO_COLOR", "1")
        .output()
        .expect("openapi-python-client runs");
    let text = output_text(&out);
    assert!(out.status.success(), "generating failed:\n{text}");
    // Its only warning may be that no formatter (ruff) is installed.
    let problems: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("Unable to") || l.contains("duplicate") || l.contains("removal"))
        .collect();
    assert!(problems.is_empty(), "the generator dropped parts:\n{text}");
    let out = Command::new(&python)
        .arg(here.join("openapi_client/drive.py"))
        .arg(&server.url)
        .current_dir(scratch.path())
        .env("PYTHONPATH", scratch.path())
        .output()
        .expect("python runs");
    let text = output_text(&out);
    assert!(
        out.status.success() && text.contains("generated client: ok"),
        "{text}"
    );
}
