//! The scheduler against a real SQLite store, with a manual clock (no sleeps).

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use jiff::Timestamp;
use rota_core::schedule::{JobTemplate, MisfirePolicy, ScheduleDef, ScheduleSource};
use rota_core::{add_duration, Backoff, Clock, ErrorReport, JobState, ManualClock, RetryOverride};
use rota_engine::{Scheduler, SchedulerConfig};
use rota_store::*;
use rota_testkit::TempSqlite;
use serde_json::json;

fn at(text: &str) -> Timestamp {
    text.parse().unwrap()
}

fn schedule(
    name: &str,
    expression: &str,
    misfire: MisfirePolicy,
    backfill: Duration,
) -> ScheduleDef {
    ScheduleDef {
        name: name.into(),
        expression: expression.into(),
        timezone: "UTC".into(),
        template: JobTemplate {
            queue: "default".into(),
            kind: "report.build".into(),
            args: json!({"full": true}),
            priority: None,
            retry: RetryOverride::default(),
            timeout: None,
        },
        misfire,
        backfill,
        enabled: true,
        source: ScheduleSource::Api,
    }
}

fn scheduler(db: &TempSqlite) -> Scheduler {
    Scheduler::new(db.store.clone(), SchedulerConfig::default(), Arc::default())
}

async fn upsert(db: &TempSqlite, def: ScheduleDef, now: Timestamp) {
    db.store
        .schedule_upsert(ScheduleUpsertParams { schedule: def, now })
        .await
        .unwrap();
}

async fn jobs(db: &TempSqlite) -> Vec<rota_core::Job> {
    db.store
        .job_list(JobListParams {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap()
        .jobs
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_fifteen_minutes_over_a_day_fires_96_times_each_slot_once() {
    let db = TempSqlite::new();
    let clock = ManualClock::new(at("2026-03-01T00:00:00Z"));
    upsert(
        &db,
        schedule(
            "quarter",
            "*/15 * * * *",
            MisfirePolicy::Latest,
            Duration::ZERO,
        ),
        clock.now(),
    )
    .await;
    let scheduler = scheduler(&db);
    for _ in 0..(24 * 60) {
        clock.advance(Duration::from_secs(60));
        scheduler.run_once(clock.now()).await.unwrap();
    }
    let all = jobs(&db).await;
    assert_eq!(all.len(), 96);
    let slots: HashSet<_> = all
        .iter()
        .map(|j| j.origin.as_ref().unwrap().slot)
        .collect();
    assert_eq!(slots.len(), 96);
    assert!(all.iter().all(|j| j
        .unique_key
        .as_deref()
        .unwrap()
        .starts_with("cron:quarter:")));
    let record = db
        .store
        .schedule_list(rota_store::ScheduleListParams::default())
        .await
        .unwrap()
        .remove(0);
    assert_eq!((record.fired, record.missed, record.recovered), (96, 0, 0));
}

async fn down_from_4_to_8_30(
    policy: MisfirePolicy,
) -> (Vec<Timestamp>, rota_engine::SchedulerReport) {
    let db = TempSqlite::new();
    let clock = ManualClock::new(at("2026-03-01T00:00:00Z"));
    upsert(
        &db,
        schedule("hourly", "@hourly", policy, Duration::from_secs(6 * 3600)),
        clock.now(),
    )
    .await;
    let scheduler = scheduler(&db);
    for _ in 0..3 {
        clock.advance(Duration::from_secs(3600));
        scheduler.run_once(clock.now()).await.unwrap();
    }
    assert_eq!(
        jobs(&db).await.len(),
        3,
        "01:00, 02:00, 03:00 fired on time"
    );
    // Down from 04:00 to 08:30; the scheduler starts again at 08:30.
    clock.set(at("2026-03-01T08:30:00Z"));
    let report = scheduler.run_once(clock.now()).await.unwrap();
    let mut recovered: Vec<Timestamp> = jobs(&db)
        .await
        .iter()
        .filter_map(|j| j.origin.as_ref().map(|o| o.slot))
        .filter(|s| *s > at("2026-03-01T03:00:00Z"))
        .collect();
    recovered.sort();
    (recovered, report)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slots_missed_while_down_follow_the_misfire_policy_and_are_logged() {
    let (latest, report) = down_from_4_to_8_30(MisfirePolicy::Latest).await;
    assert_eq!(latest, [at("2026-03-01T08:00:00Z")]);
    assert_eq!(
        report.recoveries[0].to_string(),
        "schedule \"hourly\" (misfire latest): recovered 1 missed slot (2026-03-01T08:00:00Z), skipped 4"
    );

    let (all, report) = down_from_4_to_8_30(MisfirePolicy::All).await;
    let hours: Vec<_> = (4..=8)
        .map(|h| at(&format!("2026-03-01T{h:02}:00:00Z")))
        .collect();
    assert_eq!(all, hours);
    assert!(
        report.recoveries[0]
            .to_string()
            .contains("recovered 5 missed slots (2026-03-01T04:00:00Z, "),
        "{}",
        report.recoveries[0]
    );

    let (skip, report) = down_from_4_to_8_30(MisfirePolicy::Skip).await;
    assert!(skip.is_empty());
    assert_eq!(
        report.recoveries[0].to_string(),
        "schedule \"hourly\" (misfire skip): recovered 0 missed slots (none), skipped 5"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_schedulers_on_one_database_fire_every_slot_exactly_once() {
    let db = TempSqlite::new();
    let clock = ManualClock::new(at("2026-03-01T00:00:00Z"));
    upsert(
        &db,
        schedule(
            "minutely",
            "* * * * *",
            MisfirePolicy::Latest,
            Duration::ZERO,
        ),
        clock.now(),
    )
    .await;
    let schedulers: Vec<Arc<Scheduler>> = (0..3).map(|_| Arc::new(scheduler(&db))).collect();
    let mut races = 0;
    for _ in 0..1000 {
        clock.advance(Duration::from_secs(60));
        let now = clock.now();
        let passes: Vec<_> = schedulers
            .iter()
            .map(|s| {
                let s = s.clone();
                tokio::spawn(async move { s.run_once(now).await.unwrap() })
            })
            .collect();
        for pass in passes {
            races += pass.await.unwrap().lost_races;
        }
    }
    let page = db
        .store
        .job_list(JobListParams {
            limit: 1000,
            ..Default::default()
        })
        .await
        .unwrap();
    let mut slots: Vec<Timestamp> = page
        .jobs
        .iter()
        .map(|j| j.origin.as_ref().unwrap().slot)
        .collect();
    slots.sort();
    slots.dedup();
    assert_eq!(
        (page.jobs.len(), slots.len()),
        (1000, 1000),
        "every slot once, none twice"
    );
    assert!(page.next.is_none());
    assert!(races > 0, "the schedulers really raced");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failing_scheduled_job_is_retried_with_the_template_policy_and_dies_with_its_slot() {
    let db = TempSqlite::new();
    let clock = ManualClock::new(at("2026-03-01T00:00:00Z"));
    let mut def = schedule(
        "nightly",
        "0 2 * * *",
        MisfirePolicy::Latest,
        Duration::ZERO,
    );
    def.template.retry = RetryOverride {
        max_attempts: Some(2),
        backoff: Some(Backoff::Intervals(vec![Duration::from_secs(90)])),
    };
    upsert(&db, def, clock.now()).await;
    clock.set(at("2026-03-01T02:00:00Z"));
    scheduler(&db).run_once(clock.now()).await.unwrap();
    let claim = |now| {
        db.store.job_claim_many(JobClaimManyParams {
            worker: "w".into(),
            queues: vec!["default".into()],
            kinds: vec![],
            max: 1,
            lease: Duration::from_secs(30),
            now,
        })
    };
    let fail = |job: &rota_core::Job, now| {
        db.store.job_fail_many(JobFailManyParams {
            failures: vec![Failure {
                lease: LeaseRef {
                    job: job.id,
                    token: job.lease.as_ref().unwrap().token,
                },
                error: ErrorReport {
                    message: "no data".into(),
                    backtrace: None,
                },
                discard: false,
            }],
            now,
        })
    };
    let first = claim(clock.now()).await.unwrap().remove(0);
    assert_eq!(
        (first.max_attempts, first.backoff.clone()),
        (2, Backoff::Intervals(vec![Duration::from_secs(90)]))
    );
    let failed = fail(&first, clock.now()).await.unwrap().remove(0).unwrap();
    assert_eq!(
        failed.run_at,
        add_duration(clock.now(), Duration::from_secs(90))
    );
    clock.advance(Duration::from_secs(90));
    let second = claim(clock.now()).await.unwrap().remove(0);
    let dead = fail(&second, clock.now()).await.unwrap().remove(0).unwrap();
    assert_eq!(dead.state, JobState::Dead);
    let origin = dead.origin.unwrap();
    assert_eq!(
        (origin.schedule.as_str(), origin.slot),
        ("nightly", at("2026-03-01T02:00:00Z"))
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_expression_takes_effect_without_firing_the_old_expressions_slots() {
    let db = TempSqlite::new();
    let clock = ManualClock::new(at("2026-03-01T00:00:00Z"));
    upsert(
        &db,
        schedule(
            "report",
            "0 * * * *",
            MisfirePolicy::All,
            Duration::from_secs(24 * 3600),
        ),
        clock.now(),
    )
    .await;
    clock.set(at("2026-03-01T03:00:00Z"));
    scheduler(&db).run_once(clock.now()).await.unwrap();
    let before = jobs(&db).await.len();
    // Down; at the next start-up (05:30) the config says ":30 past" instead of ":00".
    clock.set(at("2026-03-01T05:40:00Z"));
    upsert(
        &db,
        schedule(
            "report",
            "30 * * * *",
            MisfirePolicy::All,
            Duration::from_secs(24 * 3600),
        ),
        clock.now(),
    )
    .await;
    let report = scheduler(&db).run_once(clock.now()).await.unwrap();
    assert_eq!(
        jobs(&db).await.len(),
        before,
        "04:00 and 05:00 (old expression) are not fired"
    );
    assert!(report.recoveries.is_empty());
    assert_eq!(report.next_slot, Some(at("2026-03-01T06:30:00Z")));
    clock.set(at("2026-03-01T06:30:00Z"));
    scheduler(&db).run_once(clock.now()).await.unwrap();
    let last = jobs(&db).await.remove(0);
    assert_eq!(last.origin.unwrap().slot, at("2026-03-01T06:30:00Z"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_schedule_skips_its_slots_and_resumes_without_recovering_them() {
    let db = TempSqlite::new();
    let clock = ManualClock::new(at("2026-03-01T00:00:00Z"));
    let mut def = schedule(
        "hourly",
        "@hourly",
        MisfirePolicy::All,
        Duration::from_secs(24 * 3600),
    );
    upsert(&db, def.clone(), clock.now()).await;
    def.enabled = false;
    upsert(&db, def.clone(), clock.now()).await;
    clock.set(at("2026-03-01T05:10:00Z"));
    scheduler(&db).run_once(clock.now()).await.unwrap();
    assert!(jobs(&db).await.is_empty());
    def.enabled = true;
    upsert(&db, def, clock.now()).await;
    scheduler(&db).run_once(clock.now()).await.unwrap();
    assert!(
        jobs(&db).await.is_empty(),
        "slots passed while paused are not recovered"
    );
}
