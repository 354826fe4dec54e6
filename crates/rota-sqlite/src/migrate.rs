//! Versioned migrations, embedded in the binary and applied in one transaction by
//! `Store::store_migrate` (or [`migrate_connection`]).

use jiff::Timestamp;
use rota_store::{MigrationReport, StoreError};
use rusqlite::Connection;

use crate::sql::db_err;

/// The migrations, numbered in lockstep with every other backend.
pub const MIGRATIONS: &[(i64, &str)] = &[
    (1, include_str!("../migrations/0001_init.sql")),
    (2, include_str!("../migrations/0002_schedules.sql")),
    (3, include_str!("../migrations/0003_counts.sql")),
    (4, include_str!("../migrations/0004_leader.sql")),
    (5, include_str!("../migrations/0005_unique_for.sql")),
    (6, include_str!("../migrations/0006_snoozes_checkpoint.sql")),
    (7, include_str!("../migrations/0007_flow_control.sql")),
    (8, include_str!("../migrations/0008_history.sql")),
];

/// The newest schema version this binary knows.
pub const SCHEMA_VERSION: i64 = MIGRATIONS[MIGRATIONS.len() - 1].0;

/// Brings the schema up to [`SCHEMA_VERSION`] on `conn` inside the caller's transaction, or
/// refuses a database whose schema is newer than this binary.
pub(crate) fn migrate_in(conn: &Connection, now: Timestamp) -> Result<MigrationReport, StoreError> {
    migrate_to(conn, now, SCHEMA_VERSION)
}

/// Applies the migrations up to `target` (tests build older schemas with this).
fn migrate_to(
    conn: &Connection,
    now: Timestamp,
    target: i64,
) -> Result<MigrationReport, StoreError> {
    let err = db_err("applying migrations");
    conn.execute_batch(
        "CREATE TABLE IF NOT EXISTS schema_version (
             version    INTEGER NOT NULL PRIMARY KEY,
             applied_at INTEGER NOT NULL
         )",
    )
    .map_err(&err)?;
    let from = version(conn)?;
    if from > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: from,
            supported: SCHEMA_VERSION,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > from && *v <= target) {
        conn.execute_batch(sql)
            .map_err(|e| crate::sql::classify(&format!("applying migration {version}"), e))?;
        conn.execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, ?2)",
            (version, now.as_microsecond()),
        )
        .map_err(&err)?;
    }
    Ok(MigrationReport {
        from,
        to: from.max(target),
    })
}

/// Brings the schema of `conn` up to date in its own `BEGIN IMMEDIATE` transaction.
pub fn migrate_connection(
    conn: &mut Connection,
    now: Timestamp,
) -> Result<MigrationReport, StoreError> {
    let err = db_err("applying migrations");
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(&err)?;
    let report = migrate_in(&tx, now)?;
    tx.commit().map_err(&err)?;
    Ok(report)
}

/// Creates (or brings) the database at `path` to schema `version` exactly, as an older
/// Rota would have left it; for tests of upgrades.
pub fn create_at_version(path: &std::path::Path, version: i64) -> Result<(), StoreError> {
    let mut conn = Connection::open(path).map_err(|e| {
        StoreError::Unavailable(format!("cannot open database {}: {e}", path.display()))
    })?;
    let tx = conn
        .transaction()
        .map_err(db_err("creating an old schema"))?;
    migrate_to(&tx, Timestamp::UNIX_EPOCH, version)?;
    tx.commit().map_err(db_err("creating an old schema"))
}

/// The schema version `conn` has (0 when it has no Rota schema yet).
pub(crate) fn version(conn: &Connection) -> Result<i64, StoreError> {
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

/// The schema version of the database at `path`, without changing it (0 when it has no
/// Rota schema yet).
pub fn current_version(path: &std::path::Path) -> Result<i64, StoreError> {
    let conn = Connection::open_with_flags(path, rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY)
        .map_err(|e| {
            StoreError::Unavailable(format!("cannot open database {}: {e}", path.display()))
        })?;
    version(&conn)
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
