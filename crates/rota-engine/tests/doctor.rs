//! The doctor against a real SQLite store.

use std::sync::Arc;

use rota_core::schedule::{JobTemplate, MisfirePolicy, ScheduleDef, ScheduleSource};
use rota_core::{Clock, ManualClock};
use rota_engine::doctor::{diagnose, Severity};
use rota_store::*;
use rota_testkit::TempSqlite;

/// A stored schedule that cannot fire (here: its queue is not declared, as an older binary
/// accepted) is flagged, not reported "ok" (issue 18).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_schedule_that_cannot_fire_is_flagged() {
    let db = TempSqlite::new();
    let store: Arc<dyn Store> = db.store.clone();
    let now = ManualClock::default().now();
    let def = ScheduleDef {
        name: "badq".into(),
        expression: "* * * * *".into(),
        timezone: "UTC".into(),
        template: JobTemplate {
            queue: "default".into(),
            kind: "k".into(),
            args: serde_json::json!({}),
            priority: None,
            retry: Default::default(),
            timeout: None,
        },
        misfire: MisfirePolicy::Latest,
        backfill: std::time::Duration::from_secs(3600),
        enabled: true,
        source: ScheduleSource::Api,
    };
    store
        .schedule_upsert(ScheduleUpsertParams {
            schedule: def.clone(),
            now,
        })
        .await
        .unwrap();
    let findings = diagnose(&*store, now, &Retention::default()).await;
    let retention = findings
        .iter()
        .find(|f| f.check == "retention")
        .expect("shown");
    assert!(
        retention.message.contains("completed 24h")
            && retention.message.contains("dead until purged"),
        "{}",
        retention.message
    );
    assert!(findings
        .iter()
        .any(|f| f.check == "schedules" && f.severity == Severity::Ok));
    let mut old = def;
    old.template.queue = "nope".into();
    rusqlite::Connection::open(db.path())
        .unwrap()
        .execute(
            "UPDATE schedule SET definition = ?1 WHERE name = 'badq'",
            [serde_json::to_string(&old).unwrap()],
        )
        .unwrap();
    let findings = diagnose(&*store, now, &Retention::default()).await;
    let flagged = findings
        .iter()
        .find(|f| f.check == "schedules" && f.severity == Severity::Warn)
        .expect("flagged");
    assert!(
        flagged.message.contains("badq") && flagged.message.contains("`nope` is not declared"),
        "{}",
        flagged.message
    );
}
