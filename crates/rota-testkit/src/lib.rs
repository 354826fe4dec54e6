//! Test support for Rota (never in release builds): temporary stores for the conformance
//! suite and for tests that need a real database.
//!
//! [`sqlite_subject`] is the factory the SQLite backend passes to
//! `rota_store::conformance_tests!`; [`TempSqlite`] opens a store in a directory that is
//! removed when it drops.

use std::path::PathBuf;
use std::sync::Arc;

use rota_sqlite::{SqliteOptions, SqliteStore};
use rota_store::conformance::Subject;

/// A SQLite store in a temporary directory, removed on drop.
pub struct TempSqlite {
    /// The store.
    pub store: Arc<SqliteStore>,
    /// The directory holding the database.
    pub dir: tempfile::TempDir,
}

impl TempSqlite {
    /// A fresh, migrated store with default options.
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("temp dir");
        let store = SqliteStore::open(SqliteOptions::new(dir.path().join("rota.db")))
            .expect("open sqlite store");
        Self {
            store: Arc::new(store),
            dir,
        }
    }

    /// The database file.
    pub fn path(&self) -> PathBuf {
        self.dir.path().join("rota.db")
    }
}

impl Default for TempSqlite {
    fn default() -> Self {
        Self::new()
    }
}

/// A fresh SQLite store for one conformance case.
pub async fn sqlite_subject() -> Subject {
    let temp = TempSqlite::new();
    Subject {
        store: temp.store.clone(),
        guard: Box::new(temp),
    }
}

/// The README's Rust example, compiled as a doc test so that the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
