//! Versioned migrations, embedded in the binary, numbered in lockstep with the SQLite
//! backend, and applied in one transaction under an advisory lock, so that ten nodes starting
//! together apply them once (the others wait, then find the schema current).

use jiff::Timestamp;
use rota_store::{MigrationReport, StoreError};
use tokio_postgres::Client;

use crate::sql::{classify, Conn, Db};

/// The migrations.
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

/// The advisory lock key taken while migrating ("rota" in ASCII).
const MIGRATION_LOCK: i64 = 0x726f_7461;

/// Applies the migrations up to `target` in one transaction, or refuses a database whose
/// schema is newer than this binary.
pub(crate) async fn migrate_to(
    client: &mut Client,
    now: Timestamp,
    target: i64,
) -> Result<MigrationReport, StoreError> {
    let err = |e| classify("applying migrations", e);
    let tx = client.transaction().await.map_err(err)?;
    tx.execute("SELECT pg_advisory_xact_lock($1)", &[&MIGRATION_LOCK])
        .await
        .map_err(err)?;
    tx.batch_execute(
        "CREATE SCHEMA IF NOT EXISTS rota;
         CREATE TABLE IF NOT EXISTS rota.schema_version (
             version    bigint NOT NULL PRIMARY KEY,
             applied_at bigint NOT NULL
         )",
    )
    .await
    .map_err(err)?;
    let from = version(&Db::new(tx.client(), None)).await?;
    if from > SCHEMA_VERSION {
        return Err(StoreError::SchemaTooNew {
            found: from,
            supported: SCHEMA_VERSION,
        });
    }
    for (version, sql) in MIGRATIONS.iter().filter(|(v, _)| *v > from && *v <= target) {
        tx.batch_execute(sql)
            .await
            .map_err(|e| classify(&format!("applying migration {version}"), e))?;
        tx.execute(
            "INSERT INTO rota.schema_version (version, applied_at) VALUES ($1, $2)",
            &[version, &now.as_microsecond()],
        )
        .await
        .map_err(err)?;
    }
    tx.commit().await.map_err(err)?;
    Ok(MigrationReport {
        from,
        to: from.max(target),
    })
}

/// The schema version the database has (0 when it has no Rota schema yet).
pub(crate) async fn version(db: &impl Conn) -> Result<i64, StoreError> {
    let row = db
        .query_opt(
            "reading the schema version",
            "SELECT to_regclass('rota.schema_version') IS NOT NULL",
            &[],
        )
        .await?;
    if !row.is_some_and(|r| r.get::<_, bool>(0)) {
        return Ok(0);
    }
    let row = db
        .query_opt(
            "reading the schema version",
            "SELECT coalesce(max(version), 0)::int8 FROM rota.schema_version",
            &[],
        )
        .await?;
    Ok(row.map_or(0, |r| r.get(0)))
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
