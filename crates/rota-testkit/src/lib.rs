//! Test support for Rota (never in release builds): temporary stores for the conformance
//! suite and for tests that need a real database.
//!
//! [`sqlite_subject`] and [`sqlite_subject_older`] are the factories the SQLite backend
//! passes to `rota_store::conformance_tests!`, [`postgres_subject`] and
//! [`postgres_subject_older`] the PostgreSQL backend's ([`TempPostgresDb`] gives each test a
//! database of its own); [`TempSqlite`] opens a store in a directory that is
//! removed when it drops.

use std::path::PathBuf;
use std::sync::Arc;

use rota_postgres::{PostgresOptions, PostgresStore};
use rota_sqlite::{SqliteOptions, SqliteStore};
use rota_store::conformance::Subject;

mod postgres;

pub use postgres::{PostgresCluster, TempPostgresDb, URL_VAR as POSTGRES_URL_VAR};

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
        let store = SqliteStore::open_migrated(SqliteOptions::new(dir.path().join("rota.db")))
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

/// A SQLite store left at the schema version before the current one, not migrated.
pub async fn sqlite_subject_older() -> Subject {
    let dir = tempfile::tempdir().expect("temp dir");
    let path = dir.path().join("rota.db");
    rota_sqlite::migrate::create_at_version(&path, rota_sqlite::SCHEMA_VERSION - 1)
        .expect("create an older schema");
    let store = SqliteStore::open(SqliteOptions::new(path)).expect("open sqlite store");
    Subject {
        store: Arc::new(store),
        guard: Box::new(dir),
    }
}

/// A fresh, migrated PostgreSQL store in a database of its own for one conformance case.
pub async fn postgres_subject() -> Subject {
    let db = tokio::task::spawn_blocking(TempPostgresDb::new)
        .await
        .expect("create a test database");
    let store = PostgresStore::open_migrated(PostgresOptions::new(&db.url))
        .await
        .expect("open postgres store");
    Subject {
        store: Arc::new(store),
        guard: Box::new(db),
    }
}

/// A PostgreSQL store left at the schema version before the current one, not migrated.
pub async fn postgres_subject_older() -> Subject {
    let db = tokio::task::spawn_blocking(TempPostgresDb::new)
        .await
        .expect("create a test database");
    let store = PostgresStore::open(PostgresOptions::new(&db.url))
        .await
        .expect("open postgres store");
    store
        .migrate_to_version(rota_postgres::SCHEMA_VERSION - 1)
        .await
        .expect("create an older schema");
    Subject {
        store: Arc::new(store),
        guard: Box::new(db),
    }
}

/// The README's Rust example, compiled as a doc test so that the README stays true.
#[cfg(doctest)]
#[doc = include_str!("../../../README.md")]
pub struct ReadmeDoctests;
