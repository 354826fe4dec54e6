//! Migrations (`store_migrate`), and refusal of a database from a newer Rota.

use std::path::Path;

use rota_sqlite::{migrate::MIGRATIONS, SqliteOptions, SqliteStore, SCHEMA_VERSION};
use rota_store::{ErrorKind, MigrationReport, Store, StoreError, StoreMigrateParams};

async fn migrate(store: &SqliteStore) -> Result<MigrationReport, StoreError> {
    store
        .store_migrate(StoreMigrateParams {
            now: jiff::Timestamp::now(),
        })
        .await
}

#[tokio::test]
async fn a_new_database_is_migrated_to_the_current_version_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rota.db");
    let store = SqliteStore::open(SqliteOptions::new(&db)).unwrap();
    let report = migrate(&store).await.unwrap();
    assert_eq!((report.from, report.to), (0, SCHEMA_VERSION));
    drop(store);
    let store = SqliteStore::open(SqliteOptions::new(&db)).unwrap();
    assert_eq!(migrate(&store).await.unwrap().from, SCHEMA_VERSION);
    let conn = rusqlite::Connection::open(&db).unwrap();
    let mode: String = conn
        .query_row("PRAGMA journal_mode", [], |r| r.get(0))
        .unwrap();
    assert_eq!(mode, "wal");
}

#[tokio::test]
async fn a_database_from_a_newer_schema_is_refused_naming_both_versions() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("rota.db");
    drop(SqliteStore::open_migrated(SqliteOptions::new(&db)).unwrap());
    let newer = SCHEMA_VERSION + 7;
    rusqlite::Connection::open(&db)
        .unwrap()
        .execute(
            "INSERT INTO schema_version (version, applied_at) VALUES (?1, 0)",
            [newer],
        )
        .unwrap();
    let store = SqliteStore::open(SqliteOptions::new(&db)).unwrap();
    let err = migrate(&store).await.unwrap_err();
    assert_eq!(err.kind(), ErrorKind::SchemaMismatch);
    assert!(matches!(
        SqliteStore::open_migrated(SqliteOptions::new(&db)),
        Err(StoreError::SchemaTooNew { .. })
    ));
    assert!(
        matches!(err, StoreError::SchemaTooNew { found, supported } if found == newer && supported == SCHEMA_VERSION)
    );
    let message = err.to_string();
    assert!(
        message.contains(&newer.to_string())
            && message.contains(&format!("version {SCHEMA_VERSION}")),
        "{message}"
    );
}

#[test]
fn every_migration_file_is_embedded_in_order() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("migrations");
    let mut files: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    files.sort();
    assert_eq!(files.len(), MIGRATIONS.len());
    for (file, (version, sql)) in files.iter().zip(MIGRATIONS) {
        assert!(
            file.starts_with(&format!("{version:04}_")),
            "{file} is not migration {version}"
        );
        let on_disk = std::fs::read_to_string(
            Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("migrations")
                .join(file),
        )
        .unwrap();
        assert_eq!(&on_disk, sql);
    }
}

#[test]
fn an_unopenable_path_is_unavailable_naming_the_path() {
    let err = SqliteStore::open(SqliteOptions::new("/nonexistent-dir/rota.db")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Unavailable);
    assert!(
        err.to_string().contains("/nonexistent-dir/rota.db"),
        "{err}"
    );
}
