//! Versioned migrations, embedded in the binary and applied on open in one transaction.

use jiff::Timestamp;
use rota_store::StoreError;
use rusqlite::{Connection, OptionalExtension};

use crate::sql::db_err;

/// The migrations, numbered in lockstep with every other backend.
pub const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_schedules.sql")),
    (3, include_str!("../migrations/0003_counts.sql")),
];

/// The newest schema version this binary knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// What opening did to the schema.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MigrationReport {
    /// The version before.
    pub from: i64,
    /// The version now.
    pub to: i64,
}

/// Brings the schema up to [`SCHEMA_VERSION`] in one `BEGIN IMMEDIATE` transaction, or
/// refuses a database whose schema is newer than this binary.
pub fn migrate(conn: &mut Connection, now: Timestamp) -> Result<MigrationReport, StoreError> {
    let err = db_err("applying migrations");
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(&err)?;
    tx.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    INTEGER NOT NULL PRIMARY KEY,
             applied_at INTEGER NOT NULL
         )",
    )
    .map_err(&err)?;
    let from: i64 = tx
        .query_row("SELECT max(version) FROM schema_version", [], |r| r.get(0))
        .optional()
        .map_err(&err)?
        .flatten()
        .unwrap_or(0);
    if from > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: from,
            supported: SCHEMA_VERSION,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > from) {
        tx.execute_batch(sql)
            .map_err(|e| crate::sql::classify(&format!("applying migration {version}"), e))?;
        tx.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
            (version, now.as_microsecond()),
        )
        .map_err(&err)?;
    }
    tx.commit().map_err(&err)?;
    Ok(MigrationReport {
        from,
        to: SCHEMA_VERSION,
    })
}

/// The schema version of the database at `path`, without changing it (0 when it has no
/// Rota schema yet).
pub fn current_version(path: &std::path::Path) -> Result<i64, StoreError> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| {
            StoreError::Unavailable(format!("cannot open database {}: {e}", path.display()))
        })?;
    let exists: bool = conn
        .query_row(
            "SELECT count(*) > 0 FROM sqlite_schema WHERE name = 'schema_version'",
            [],
            |r| r.get(0),
        )
        .map_err(db_err("reading the schema version"))?;
    if !exists {
        return Ok(0);
    }
    conn.query_row(
        "SELECT coalesce(max(version), 0) FROM schema_version",
        [],
        |r| r.get(0),
    )
    .map_err(db_err("reading the schema version"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn migrations_are_numbered_one_up_without_gaps() {
        for (i, (version, _)) in MIGRATIONS.iter().enumerate() {
            assert_eq!(*version, i as i64 + 1);
        }
    }
}
