//! Measures the scheduler: how late 10,000 schedules fire their slots, and what an idle
//! scheduler costs. Figures go to docs/PERFORMANCE.md.
//!
//! Run with `cargo run --release -p rota-engine --example schedule_lag` (about 40 s).

use std::sync::Arc;
use std::time::{Duration, Instant};

use rota_core::schedule::{JobTemplate, MisfirePolicy, ScheduleDef, ScheduleSource};
use rota_core::{Clock, RetryOverride, SystemClock};
use rota_engine::{Scheduler, SchedulerConfig};
use rota_store::*;
use rota_testkit::TempSqlite;
use tokio_util::sync::CancellationToken;

const SCHEDULES: usize = 10_000;

fn def(name: String, expression: &str) -> ScheduleDef {
    ScheduleDef {
        name,
        expression: expression.into(),
        timezone: "UTC".into(),
        template: JobTemplate {
            queue: "default".into(),
            kind: "tick".into(),
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

/// CPU time this process has used (user + system), from /proc.
fn cpu_time() -> Duration {
    let stat = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    let fields: Vec<&str> = stat
        .rsplit(')')
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    let ticks: u64 = fields.get(11).and_then(|u| u.parse().ok()).unwrap_or(0)
        + fields.get(12).and_then(|s| s.parse().ok()).unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let clock: Arc<dyn Clock> = Arc::new(SystemClock);

    // Idle: one hourly schedule; the loop should sleep, not poll.
    let idle = TempSqlite::new();
    idle.store
        .schedule_upsert(ScheduleUpsertParams {
            schedule: def("hourly".into(), "@hourly"),
            now: clock.now(),
        })
        .await
        .unwrap();
    let stop = CancellationToken::new();
    let before = cpu_time();
    let task = tokio::spawn(
        Scheduler::new(
            idle.store.clone(),
            SchedulerConfig::default(),
            Arc::default(),
        )
        .run(clock.clone(), stop.clone()),
    );
    tokio::time::sleep(Duration::from_secs(10)).await;
    stop.cancel();
    task.await.unwrap();
    println!("idle scheduler, 10 s: {:?} of CPU", cpu_time() - before);

    // Load: 10,000 schedules every 10 s.
    let db = TempSqlite::new();
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for i in 0..SCHEDULES {
        let store = db.store.clone();
        let now = clock.now();
        tasks.spawn(async move {
            store
                .schedule_upsert(ScheduleUpsertParams {
                    schedule: def(format!("s{i}"), "@every 10s"),
                    now,
                })
                .await
                .unwrap()
        });
    }
    while tasks.join_next().await.is_some() {}
    println!("created {SCHEDULES} schedules in {:?}", started.elapsed());
    let stop = CancellationToken::new();
    let task = tokio::spawn(
        Scheduler::new(db.store.clone(), SchedulerConfig::default(), Arc::default())
            .run(clock.clone(), stop.clone()),
    );
    // Two slots: from each slot's instant until all 10,000 of its jobs are committed.
    for round in 1..=2 {
        let now = clock.now().as_second();
        let slot = jiff::Timestamp::from_second((now / 10 + 1) * 10).unwrap();
        let until_slot = slot.duration_since(clock.now());
        tokio::time::sleep(Duration::try_from(until_slot).unwrap_or_default()).await;
        let expected = SCHEDULES * round;
        loop {
            let queues = db
                .store
                .queue_list(QueueListParams { now: clock.now() })
                .await
                .unwrap();
            let total: u64 = queues.iter().flat_map(|q| q.counts.values()).sum();
            if total as usize >= expected {
                break;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let lag = clock.now().duration_since(slot);
        println!(
            "slot {slot}: all {SCHEDULES} jobs committed {:.0} ms after the slot",
            lag.as_secs_f64() * 1000.0
        );
    }
    stop.cancel();
    task.await.unwrap();
}
