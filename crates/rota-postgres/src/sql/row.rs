//! Rows to values: jobs, queues, schedules.

use std::time::Duration;

use rota_core::{Job, JobId, JobState, Lease};
use rota_store::{Queue, ScheduleRecord, StoreError};
use serde::de::DeserializeOwned;
use tokio_postgres::types::Json;
use tokio_postgres::Row;

use super::{from_micros, row_err};

/// The job columns, in the order [`job_from_row`] reads them (a macro so that statements
/// are `concat!`ed at compile time).
macro_rules! job_columns {
    () => {
        "id, queue, kind, args, priority, state, attempt, max_attempts, backoff, \
         timeout_ms, unique_key, tags, progress, result, errors, lease_worker, lease_token, \
         lease_expires_at, cancel_requested, run_at, created_at, attempted_at, finished_at, \
         schedule, slot, unique_for_ms, snoozes, checkpoint, snooze_log, concurrency_key"
    };
}
pub(crate) use job_columns;

pub(crate) fn get<'r, T: tokio_postgres::types::FromSql<'r>>(
    row: &'r Row,
    idx: usize,
) -> Result<T, StoreError> {
    row.try_get(idx)
        .map_err(|e| row_err(&format!("reading column {idx} of a row"), e))
}

fn from_json<T: DeserializeOwned>(row: &Row, idx: usize) -> Result<T, StoreError> {
    Ok(get::<Json<T>>(row, idx)?.0)
}

fn from_json_opt<T: DeserializeOwned>(row: &Row, idx: usize) -> Result<Option<T>, StoreError> {
    Ok(get::<Option<Json<T>>>(row, idx)?.map(|j| j.0))
}

/// A stored job state.
pub(crate) fn state_from_text(text: &str) -> Result<JobState, StoreError> {
    text.parse()
        .map_err(|e: rota_core::UnknownState| row_err("reading a job state", e))
}

/// A job from a row of [`job_columns!`].
pub(crate) fn job_from_row(row: &Row) -> Result<Job, StoreError> {
    let id: uuid::Uuid = get(row, 0)?;
    let state = state_from_text(get(row, 5)?)?;
    let lease_worker: Option<String> = get(row, 15)?;
    let lease_token: i64 = get(row, 16)?;
    let lease_expires_at: Option<i64> = get(row, 17)?;
    let lease = match (state, lease_worker, lease_expires_at) {
        (JobState::Running, Some(worker), Some(expires)) => Some(Lease {
            worker,
            token: lease_token as u64,
            expires_at: from_micros(expires),
        }),
        _ => None,
    };
    let millis = |v: Option<i64>| v.map(|ms| Duration::from_millis(ms.max(0) as u64));
    Ok(Job {
        id: JobId::from(id),
        queue: get(row, 1)?,
        kind: get(row, 2)?,
        args: from_json(row, 3)?,
        priority: get::<i16>(row, 4)?.clamp(0, 255) as u8,
        state,
        attempt: get::<i32>(row, 6)?.max(0) as u32,
        max_attempts: get::<i32>(row, 7)?.max(0) as u32,
        backoff: from_json(row, 8)?,
        timeout: millis(get(row, 9)?),
        unique_key: get(row, 10)?,
        unique_for: millis(get(row, 25)?),
        tags: from_json(row, 11)?,
        concurrency_key: Some(get::<String>(row, 29)?).filter(|k| !k.is_empty()),
        progress: from_json_opt(row, 12)?,
        snoozes: get::<i32>(row, 26)?.max(0) as u32,
        snooze_log: from_json(row, 28)?,
        checkpoint: from_json_opt(row, 27)?,
        result: from_json_opt(row, 13)?,
        errors: from_json(row, 14)?,
        lease,
        lease_token: lease_token as u64,
        cancel_requested: get(row, 18)?,
        run_at: from_micros(get(row, 19)?),
        created_at: from_micros(get(row, 20)?),
        attempted_at: get::<Option<i64>>(row, 21)?.map(from_micros),
        finished_at: get::<Option<i64>>(row, 22)?.map(from_micros),
        origin: match (
            get::<Option<String>>(row, 23)?,
            get::<Option<i64>>(row, 24)?,
        ) {
            (Some(schedule), Some(slot)) => Some(rota_core::JobOrigin {
                schedule,
                slot: from_micros(slot),
            }),
            _ => None,
        },
    })
}

/// Jobs from rows of [`job_columns!`].
pub(crate) fn jobs_from_rows(rows: &[Row]) -> Result<Vec<Job>, StoreError> {
    rows.iter().map(job_from_row).collect()
}

pub(crate) const QUEUE_COLUMNS: &str = "name, config, paused, updated_at";

pub(crate) fn queue_from_row(row: &Row) -> Result<Queue, StoreError> {
    Ok(Queue {
        name: get(row, 0)?,
        config: from_json(row, 1)?,
        paused: get(row, 2)?,
        updated_at: from_micros(get(row, 3)?),
    })
}

pub(crate) const SCHEDULE_COLUMNS: &str =
    "definition, last_slot, fired, missed, recovered, last_job, updated_at";

pub(crate) fn schedule_from_row(row: &Row) -> Result<ScheduleRecord, StoreError> {
    Ok(ScheduleRecord {
        schedule: from_json(row, 0)?,
        last_slot: from_micros(get(row, 1)?),
        fired: get::<i64>(row, 2)?.max(0) as u64,
        missed: get::<i64>(row, 3)?.max(0) as u64,
        recovered: get::<i64>(row, 4)?.max(0) as u64,
        last_job: get::<Option<uuid::Uuid>>(row, 5)?.map(JobId::from),
        updated_at: from_micros(get(row, 6)?),
    })
}

/// A worker's info from its jsonb column.
pub(crate) fn worker_from_row(row: &Row) -> Result<rota_store::Worker, StoreError> {
    Ok(rota_store::Worker {
        info: from_json(row, 0)?,
        started_at: from_micros(get(row, 1)?),
        last_seen: from_micros(get(row, 2)?),
    })
}
