//! The Python client's tests (`clients/python/tests`, pytest) against this build's `rota`:
//! part of `cargo test --workspace`, so the README's one test command runs them too.
//!
//! The Python is `$ROTA_PYTHON` when set; otherwise a virtual environment in
//! `target/python-venv`, made on first use with the pinned `requirements-test.txt`
//! (PyPI must be reachable once).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

fn repo() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The venv's Python, made if missing (once, for both tests of this binary).
fn python() -> String {
    static PYTHON: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    PYTHON.get_or_init(make_venv).clone()
}

fn make_venv() -> String {
    if let Ok(python) = std::env::var("ROTA_PYTHON") {
        return python;
    }
    let python = support::python_venv(
        "python-venv",
        &repo().join("clients/python/requirements-test.txt"),
    );
    python.to_string_lossy().into_owned()
}

#[test]
fn the_python_client_passes_its_tests_against_a_real_server() {
    let root = repo();
    let out = Command::new(python())
        .args([
            "-m",
            "pytest",
            "-q",
            "-p",
            "no:cacheprovider",
            "clients/python/tests",
        ])
        .current_dir(&root)
        .env("ROTA_BIN", env!("CARGO_BIN_EXE_rota"))
        .env("PYTHONPATH", root.join("clients/python/src"))
        .env_remove("ROTA_URL")
        .env_remove("ROTA_TOKEN")
        .output()
        .expect("pytest runs");
    let text = support::output_text(&out);
    assert!(out.status.success(), "pytest failed:\n{text}");
    assert!(text.contains(" passed"), "{text}");
}

/// `mypy --strict` on the package and on a file of the types users get (`enqueue(task,
/// args)` is a `JobHandle[R]`; arguments of the wrong type are refused).
#[test]
fn the_python_client_type_checks_strictly() {
    let root = repo().join("clients/python");
    let out = Command::new(python())
        .args([
            "-m",
            "mypy",
            "--strict",
            "--no-incremental",
            "src/rota",
            "tests/typing_check.py",
        ])
        .current_dir(&root)
        .env("MYPYPATH", root.join("src"))
        .output()
        .expect("mypy runs");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "mypy --strict failed:\n{text}");
}
