//! Schedule statements.

use rota_store::*;

use super::job::job_insert_many;
use super::queue::queue_required_many;
use super::row::{schedule_from_row, SCHEDULE_COLUMNS};
use super::{json, micros, Conn, Tx};

async fn schedule_get(
    db: &impl Conn,
    name: &str,
    lock: bool,
) -> Result<Option<ScheduleRecord>, StoreError> {
    let sql = format!(
        "SELECT {SCHEDULE_COLUMNS} FROM rota.schedule WHERE name = $1{}",
        if lock { " FOR UPDATE" } else { "" }
    );
    db.query_opt(&format!("reading schedule {name:?}"), &sql, &[&name])
        .await?
        .map(|r| schedule_from_row(&r))
        .transpose()
}

/// Creates or updates a schedule.
pub(crate) async fn schedule_upsert(
    db: &impl Conn,
    p: ScheduleUpsertParams,
) -> Result<ScheduleRecord, StoreError> {
    let name = p.schedule.name.clone();
    // A schedule for an undeclared queue could never fire: refused like an enqueue.
    queue_required_many(db, std::slice::from_ref(&p.schedule.template.queue)).await?;
    let existing = schedule_get(db, &name, true).await?;
    let last_slot = schedule_last_slot(existing.as_ref(), &p.schedule, p.now);
    db.execute(
        &format!("saving schedule {name:?}"),
        "INSERT INTO rota.schedule (name, definition, last_slot, fired, missed, recovered, last_job, created_at, updated_at) \
         VALUES ($1, $2::text::jsonb, $3, 0, 0, 0, NULL, $4, $4) \
         ON CONFLICT (name) DO UPDATE SET definition = excluded.definition, last_slot = excluded.last_slot, \
         updated_at = excluded.updated_at",
        &[&name, &json(&p.schedule), &micros(last_slot), &micros(p.now)],
    )
    .await?;
    schedule_get(db, &name, false)
        .await?
        .ok_or(StoreError::ScheduleNotFound(name))
}

/// Removes a schedule.
pub(crate) async fn schedule_delete(db: &impl Conn, name: &str) -> Result<(), StoreError> {
    let n = db
        .execute(
            &format!("deleting schedule {name:?}"),
            "DELETE FROM rota.schedule WHERE name = $1",
            &[&name],
        )
        .await?;
    if n == 0 {
        return Err(StoreError::ScheduleNotFound(name.to_owned()));
    }
    Ok(())
}

/// Every schedule, by name.
pub(crate) async fn schedule_list(db: &impl Conn) -> Result<Vec<ScheduleRecord>, StoreError> {
    let rows = db
        .query(
            "listing schedules",
            &format!("SELECT {SCHEDULE_COLUMNS} FROM rota.schedule ORDER BY name"),
            &[],
        )
        .await?;
    rows.iter().map(schedule_from_row).collect()
}

/// Fires a schedule's planned slots, unless another scheduler got there first (the row is
/// locked, so of two schedulers racing on different nodes the second sees the first's
/// `last_slot`).
pub(crate) async fn schedule_fire(
    tx: &Tx<'_>,
    p: ScheduleFireParams,
) -> Result<ScheduleFired, StoreError> {
    let Some(current) = schedule_get(tx, &p.name, true).await? else {
        return Err(StoreError::ScheduleNotFound(p.name));
    };
    if current.last_slot != p.expected_last {
        return Ok(ScheduleFired {
            lost_race: true,
            jobs: vec![],
        });
    }
    let on_time = p.jobs.len() as u64 - p.recovered;
    let jobs = if p.jobs.is_empty() {
        vec![]
    } else {
        job_insert_many(
            tx,
            JobInsertManyParams {
                jobs: p.jobs,
                defaults: p.defaults,
                now: p.now,
            },
        )
        .await?
    };
    let last_job = jobs.last().map(|i| *i.job.id.as_uuid());
    tx.execute(
        &format!("advancing schedule {:?}", p.name),
        "UPDATE rota.schedule SET last_slot = $2, fired = fired + $3, missed = missed + $4, \
         recovered = recovered + $5, last_job = coalesce($6, last_job), updated_at = $7 WHERE name = $1",
        &[
            &p.name,
            &micros(p.last_slot),
            &(on_time as i64),
            &((p.recovered + p.skipped) as i64),
            &(p.recovered as i64),
            &last_job,
            &micros(p.now),
        ],
    )
    .await?;
    Ok(ScheduleFired {
        lost_race: false,
        jobs,
    })
}
