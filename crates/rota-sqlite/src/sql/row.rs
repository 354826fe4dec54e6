//! Rows to values: jobs, queues, schedules.

use std::collections::HashMap;
use std::time::Duration;

use rota_core::{Job, JobId, JobState, Lease};
use rota_store::{Queue, ScheduleRecord};
use rusqlite::Row;

use super::from_micros;

/// The job columns, in the order [`job_from_row`] reads them (a macro so that statements
/// are `concat!`ed at compile time instead of formatted on every call).
macro_rules! job_columns {
    () => {
        "id, queue, kind, args, priority, state, attempt, max_attempts, backoff, \
         timeout_ms, unique_key, tags, progress, result, errors, lease_worker, lease_token, \
         lease_expires_at, cancel_requested, run_at, created_at, attempted_at, finished_at, \
         schedule, slot, unique_for_ms, snoozes, checkpoint, snooze_log, concurrency_key"
    };
}
pub(crate) use job_columns;

pub(crate) fn from_json<T: serde::de::DeserializeOwned>(
    idx: usize,
    text: &str,
) -> rusqlite::Result<T> {
    serde_json::from_str(text).map_err(|e| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, e.into())
    })
}

/// A stored job state.
pub(crate) fn state_from_text(idx: usize, text: &str) -> rusqlite::Result<JobState> {
    text.parse().map_err(|e: rota_core::UnknownState| {
        rusqlite::Error::FromSqlConversionFailure(idx, rusqlite::types::Type::Text, e.into())
    })
}

pub(crate) fn job_from_row(row: &Row<'_>) -> rusqlite::Result<Job> {
    let id: [u8; 16] = row.get(0)?;
    let state = state_from_text(5, text(row, 5)?)?;
    let lease_worker: Option<String> = row.get(15)?;
    let lease_token: i64 = row.get(16)?;
    let lease_expires_at: Option<i64> = row.get(17)?;
    let lease = match (state, lease_worker, lease_expires_at) {
        (JobState::Running, Some(worker), Some(expires)) => Some(Lease {
            worker,
            token: lease_token as u64,
            expires_at: from_micros(expires)?,
        }),
        _ => None,
    };
    Ok(Job {
        id: JobId::from_bytes(id),
        queue: row.get(1)?,
        kind: row.get(2)?,
        args: from_json(3, text(row, 3)?)?,
        priority: row.get(4)?,
        state,
        attempt: row.get(6)?,
        max_attempts: row.get(7)?,
        backoff: backoff_from_text(text(row, 8)?)?,
        timeout: row
            .get::<_, Option<i64>>(9)?
            .map(|ms| Duration::from_millis(ms as u64)),
        unique_key: row.get(10)?,
        unique_for: row
            .get::<_, Option<i64>>(25)?
            .map(|ms| Duration::from_millis(ms.max(0) as u64)),
        tags: from_json(11, text(row, 11)?)?,
        concurrency_key: Some(text(row, 29)?)
            .filter(|k| !k.is_empty())
            .map(str::to_owned),
        progress: optional_text(row, 12)?
            .map(|t| from_json(12, t))
            .transpose()?,
        snoozes: row.get(26)?,
        snooze_log: from_json(28, text(row, 28)?)?,
        checkpoint: optional_text(row, 27)?
            .map(|t| from_json(27, t))
            .transpose()?,
        result: optional_text(row, 13)?
            .map(|t| from_json(13, t))
            .transpose()?,
        errors: from_json(14, text(row, 14)?)?,
        lease,
        lease_token: lease_token as u64,
        cancel_requested: row.get(18)?,
        run_at: from_micros(row.get(19)?)?,
        created_at: from_micros(row.get(20)?)?,
        attempted_at: row
            .get::<_, Option<i64>>(21)?
            .map(from_micros)
            .transpose()?,
        finished_at: row
            .get::<_, Option<i64>>(22)?
            .map(from_micros)
            .transpose()?,
        origin: match (
            row.get::<_, Option<String>>(23)?,
            row.get::<_, Option<i64>>(24)?,
        ) {
            (Some(schedule), Some(slot)) => Some(rota_core::JobOrigin {
                schedule,
                slot: from_micros(slot)?,
            }),
            _ => None,
        },
    })
}

/// A TEXT column, borrowed from the row (no allocation).
pub(crate) fn text<'r>(row: &'r Row<'_>, idx: usize) -> rusqlite::Result<&'r str> {
    Ok(row.get_ref(idx)?.as_str()?)
}

/// A nullable TEXT column, borrowed from the row.
fn optional_text<'r>(row: &'r Row<'_>, idx: usize) -> rusqlite::Result<Option<&'r str>> {
    Ok(row.get_ref(idx)?.as_str_or_null()?)
}

/// Parses a stored backoff, remembering recent ones: jobs share a handful of policies, and
/// reading one back is otherwise a few duration parses per row.
fn backoff_from_text(raw: &str) -> rusqlite::Result<rota_core::Backoff> {
    use std::cell::RefCell;
    const REMEMBERED: usize = 64;
    thread_local! {
        static SEEN: RefCell<HashMap<String, rota_core::Backoff>> = RefCell::new(HashMap::new());
    }
    SEEN.with(|seen| {
        if let Some(backoff) = seen.borrow().get(raw) {
            return Ok(backoff.clone());
        }
        let backoff = super::backoff::backoff_from_stored(raw).ok_or_else(|| {
            rusqlite::Error::FromSqlConversionFailure(
                8,
                rusqlite::types::Type::Text,
                format!("not a stored backoff: {raw:?}").into(),
            )
        })?;
        let mut seen = seen.borrow_mut();
        if seen.len() >= REMEMBERED {
            seen.clear();
        }
        seen.insert(raw.to_owned(), backoff.clone());
        Ok(backoff)
    })
}

pub(crate) const QUEUE_COLUMNS: &str = "name, config, paused, updated_at";

pub(crate) fn queue_from_row(row: &Row<'_>) -> rusqlite::Result<Queue> {
    Ok(Queue {
        name: row.get(0)?,
        config: from_json(1, &row.get::<_, String>(1)?)?,
        paused: row.get(2)?,
        updated_at: from_micros(row.get(3)?)?,
    })
}

pub(crate) const SCHEDULE_COLUMNS: &str =
    "definition, last_slot, fired, missed, recovered, last_job, updated_at";

pub(crate) fn schedule_from_row(row: &Row<'_>) -> rusqlite::Result<ScheduleRecord> {
    Ok(ScheduleRecord {
        schedule: from_json(0, text(row, 0)?)?,
        last_slot: from_micros(row.get(1)?)?,
        fired: row.get::<_, i64>(2)? as u64,
        missed: row.get::<_, i64>(3)? as u64,
        recovered: row.get::<_, i64>(4)? as u64,
        last_job: row.get::<_, Option<[u8; 16]>>(5)?.map(JobId::from_bytes),
        updated_at: from_micros(row.get(6)?)?,
    })
}
