//! Schedules: definition bookkeeping and the atomic, at-most-once fire.

use std::time::Duration;

use rota_core::schedule::{JobTemplate, MisfirePolicy, ScheduleDef, ScheduleSource};
use rota_core::{add_duration, JobState, RetryOverride};

use super::*;

fn def(expression: &str) -> ScheduleDef {
    ScheduleDef {
        name: "nightly".into(),
        expression: expression.into(),
        timezone: "UTC".into(),
        template: JobTemplate {
            queue: "default".into(),
            kind: "report".into(),
            args: serde_json::json!({}),
            priority: None,
            retry: RetryOverride::default(),
            timeout: None,
        },
        misfire: MisfirePolicy::Latest,
        backfill: Duration::ZERO,
        enabled: true,
        source: ScheduleSource::Api,
    }
}

async fn upsert(store: &dyn Store, def: ScheduleDef, now: Timestamp) -> ScheduleRecord {
    store
        .schedule_upsert(ScheduleUpsertParams { schedule: def, now })
        .await
        .unwrap()
}

fn fire(record: &ScheduleRecord, slot: Timestamp, now: Timestamp) -> ScheduleFireParams {
    ScheduleFireParams {
        name: record.schedule.name.clone(),
        expected_last: record.last_slot,
        last_slot: slot,
        jobs: vec![record.schedule.job_for(slot, secs(3600))],
        recovered: 0,
        skipped: 0,
        defaults: Arc::default(),
        now,
    }
}

/// A schedule counts slots from its creation; an expression change restarts the count, other
/// changes keep it.
pub async fn upserts_restart_the_slot_count_only_when_the_timing_changes(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let created = upsert(store, def("0 2 * * *"), now).await;
    assert_eq!((created.last_slot, created.fired), (now, 0));
    let later = add_duration(now, secs(3600));
    let mut changed = def("0 2 * * *");
    changed.template.kind = "report.v2".into();
    assert_eq!(
        upsert(store, changed, later).await.last_slot,
        now,
        "same timing: count kept"
    );
    let retimed = upsert(store, def("0 3 * * *"), later).await;
    assert_eq!(retimed.last_slot, later, "new expression: counted from now");
    let err = store
        .schedule_upsert(ScheduleUpsertParams {
            schedule: def("not cron"),
            now,
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Invalid);
}

/// Firing enqueues the slot's job and advances the schedule in one step; a second firing
/// from the same starting point loses the race and enqueues nothing.
pub async fn a_slot_fires_once_and_a_stale_fire_loses_the_race(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let record = upsert(store, def("@every 1m"), now).await;
    let slot = add_duration(now, secs(60));
    let first = store
        .schedule_fire(fire(&record, slot, slot))
        .await
        .unwrap();
    assert!(!first.lost_race);
    assert_eq!(first.jobs.len(), 1);
    let job = &first.jobs[0].job;
    assert_eq!(
        (job.state, job.unique_key.clone()),
        (JobState::Available, Some(format!("cron:nightly:{slot}")))
    );
    assert_eq!(
        job.origin.as_ref().map(|o| (o.schedule.as_str(), o.slot)),
        Some(("nightly", slot))
    );
    let second = store
        .schedule_fire(fire(&record, slot, slot))
        .await
        .unwrap();
    assert!(second.lost_race);
    let after = store
        .schedule_list(ScheduleListParams::default())
        .await
        .unwrap()
        .remove(0);
    assert_eq!(
        (after.last_slot, after.fired, after.last_job),
        (slot, 1, Some(job.id))
    );
    let page = store
        .job_list(JobListParams {
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(page.jobs.len(), 1);
}

/// Deleting a schedule keeps its jobs; deleting an unknown one is NotFound.
pub async fn deleting_a_schedule_keeps_its_jobs(s: Subject) {
    let store = &*s.store;
    let now = t0();
    let record = upsert(store, def("@every 1m"), now).await;
    let slot = add_duration(now, secs(60));
    let fired = store
        .schedule_fire(fire(&record, slot, slot))
        .await
        .unwrap();
    store
        .schedule_delete(ScheduleDeleteParams {
            name: "nightly".into(),
        })
        .await
        .unwrap();
    assert!(store
        .schedule_list(ScheduleListParams::default())
        .await
        .unwrap()
        .is_empty());
    assert!(store
        .job_get(JobGetParams {
            id: fired.jobs[0].job.id
        })
        .await
        .is_ok());
    assert_eq!(
        store
            .schedule_delete(ScheduleDeleteParams {
                name: "nightly".into()
            })
            .await
            .unwrap_err()
            .kind(),
        ErrorKind::NotFound
    );
}

/// The next due time of waiting jobs is what a waiting fetch sleeps until.
pub async fn the_next_due_time_is_the_earliest_waiting_run_at(s: Subject) {
    let store = &*s.store;
    let now = t0();
    assert_eq!(
        store
            .job_next_due(JobNextDueParams {
                queues: vec!["default".into()]
            })
            .await
            .unwrap(),
        None
    );
    insert(
        store,
        vec![
            new_job("a").run_at(add_duration(now, secs(90))),
            new_job("b").run_at(add_duration(now, secs(30))),
            new_job("c"),
        ],
        now,
    )
    .await;
    assert_eq!(
        store
            .job_next_due(JobNextDueParams {
                queues: vec!["default".into()]
            })
            .await
            .unwrap(),
        Some(add_duration(now, secs(30)))
    );
    declare(store, "other", now).await;
    assert_eq!(
        store
            .job_next_due(JobNextDueParams {
                queues: vec!["other".into()]
            })
            .await
            .unwrap(),
        None
    );
}

/// A schedule for an undeclared queue could never fire: it is refused like an enqueue,
/// naming the nearest declared queue (issue 18: it was accepted and failed every second).
pub async fn a_schedule_for_an_undeclared_queue_is_refused_naming_the_nearest(s: Subject) {
    let store = &*s.store;
    let mut bad = def("@every 1m");
    bad.template.queue = "defualt".into();
    let err = store
        .schedule_upsert(ScheduleUpsertParams {
            schedule: bad,
            now: t0(),
        })
        .await
        .unwrap_err();
    assert!(
        matches!(&err, StoreError::QueueNotDeclared { suggestion: Some(s), .. } if s == "default"),
        "{err}"
    );
    assert!(store
        .schedule_list(ScheduleListParams::default())
        .await
        .unwrap()
        .is_empty());
}
