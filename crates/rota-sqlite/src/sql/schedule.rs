//! Schedule statements.

use rota_store::*;
use rusqlite::{params, Connection, OptionalExtension};

use super::job::job_insert_many;
use super::queue::queue_required;
use super::row::{schedule_from_row, SCHEDULE_COLUMNS};
use super::{classify, db_err, json, micros, Tx};

fn schedule_get(conn: &Connection, name: &str) -> Result<Option<ScheduleRecord>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedule WHERE name = ?1"
    ))
    .and_then(|mut stmt| stmt.query_row([name], schedule_from_row).optional())
    .map_err(|e| classify(&format!("reading schedule {name:?}"), e))
}

/// Creates or updates a schedule.
pub(crate) fn schedule_upsert(
    conn: &Connection,
    p: ScheduleUpsertParams,
) -> Result<ScheduleRecord, StoreError> {
    let name = p.schedule.name.clone();
    // A schedule for an undeclared queue could never fire: refused like an enqueue.
    queue_required(conn, &p.schedule.template.queue)?;
    let existing = schedule_get(conn, &name)?;
    let last_slot = schedule_last_slot(existing.as_ref(), &p.schedule, p.now);
    conn.prepare_cached(
        "INSERT INTO schedule (name, definition, last_slot, fired, missed, recovered, last_job, created_at, updated_at) \
         VALUES (?1, ?2, ?3, 0, 0, 0, NULL, ?4, ?4) \
         ON CONFLICT (name) DO UPDATE SET definition = excluded.definition, last_slot = excluded.last_slot, \
         updated_at = excluded.updated_at",
    )
    .and_then(|mut stmt| stmt.execute(params![name, json(&p.schedule), micros(last_slot), micros(p.now)]))
    .map_err(|e| classify(&format!("saving schedule {name:?}"), e))?;
    schedule_get(conn, &name)?.ok_or(StoreError::ScheduleNotFound(name))
}

/// Removes a schedule.
pub(crate) fn schedule_delete(conn: &Connection, name: &str) -> Result<(), StoreError> {
    let n = conn
        .prepare_cached("DELETE FROM schedule WHERE name = ?1")
        .and_then(|mut stmt| stmt.execute([name]))
        .map_err(|e| classify(&format!("deleting schedule {name:?}"), e))?;
    if n == 0 {
        return Err(StoreError::ScheduleNotFound(name.to_owned()));
    }
    Ok(())
}

/// Every schedule, by name.
pub(crate) fn schedule_list(conn: &Connection) -> Result<Vec<ScheduleRecord>, StoreError> {
    conn.prepare_cached(&format!(
        "SELECT {SCHEDULE_COLUMNS} FROM schedule ORDER BY name"
    ))
    .and_then(|mut stmt| stmt.query_map([], schedule_from_row)?.collect())
    .map_err(db_err("listing schedules"))
}

/// Fires a schedule's planned slots, unless another scheduler got there first.
pub(crate) fn schedule_fire(
    tx: &Tx<'_>,
    p: ScheduleFireParams,
) -> Result<ScheduleFired, StoreError> {
    let Some(current) = schedule_get(tx, &p.name)? else {
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
        )?
    };
    let last_job = jobs.last().map(|i| i.job.id.as_bytes().to_vec());
    tx.prepare_cached(
        "UPDATE schedule SET last_slot = ?2, fired = fired + ?3, missed = missed + ?4, \
         recovered = recovered + ?5, last_job = coalesce(?6, last_job), updated_at = ?7 WHERE name = ?1",
    )
    .and_then(|mut stmt| {
        stmt.execute(params![
            p.name,
            micros(p.last_slot),
            on_time as i64,
            (p.recovered + p.skipped) as i64,
            p.recovered as i64,
            last_job,
            micros(p.now),
        ])
    })
    .map_err(|e| classify(&format!("advancing schedule {:?}", p.name), e))?;
    Ok(ScheduleFired {
        lost_race: false,
        jobs,
    })
}
