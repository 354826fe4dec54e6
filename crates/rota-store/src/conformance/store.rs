//! The store itself: health, migration.

use super::*;

/// A migrated store reports its schema as current.
pub async fn health_reports_a_current_schema(s: Subject) {
    let health = s
        .store
        .store_health(StoreHealthParams::default())
        .await
        .unwrap();
    assert_eq!(health.schema_version, health.schema_expected);
    assert!(health.schema_version > 0);
}

/// Migrating a current schema changes nothing and says so.
pub async fn migrating_a_current_schema_changes_nothing(s: Subject) {
    let store = &*s.store;
    let report = store
        .store_migrate(StoreMigrateParams { now: t0() })
        .await
        .unwrap();
    assert_eq!(report.from, report.to);
    insert_one(store, new_job("a"), t0()).await;
}

/// A store left at an older schema (the factory's `older` subject) says so in its health,
/// is brought up to date by one migration that reports from and to, and then works.
pub async fn an_older_schema_is_brought_up_to_date(s: Subject) {
    let store = &*s.store;
    let before = store
        .store_health(StoreHealthParams::default())
        .await
        .unwrap();
    assert!(
        before.schema_version < before.schema_expected,
        "the factory gives an older schema: {before:?}"
    );
    let report = store
        .store_migrate(StoreMigrateParams { now: t0() })
        .await
        .unwrap();
    assert_eq!(
        (report.from, report.to),
        (before.schema_version, before.schema_expected)
    );
    let after = store
        .store_health(StoreHealthParams::default())
        .await
        .unwrap();
    assert_eq!(after.schema_version, after.schema_expected);
    let job = insert_one(store, new_job("a"), t0()).await;
    let claimed = claim(store, "w", &["default"], &[], 1, t0()).await;
    assert_eq!(claimed[0].id, job.id);
    let again = store
        .store_migrate(StoreMigrateParams { now: t0() })
        .await
        .unwrap();
    assert_eq!(again.from, again.to);
}
