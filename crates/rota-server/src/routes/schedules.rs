//! Schedules: list, show, create, delete, pause, resume, trigger.

use axum::extract::State;
use rota_api::{Count, Enqueued, Problem, ScheduleList, ScheduleRequest, ScheduleView};
use rota_core::schedule::{ScheduleDef, ScheduleSource};
use rota_store::*;

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;

async fn view(state: &AppState, record: ScheduleRecord) -> ScheduleView {
    crate::view::schedule(&*state.store, record, state.clock.now()).await
}

async fn find(state: &AppState, name: &str) -> Result<ScheduleRecord, ApiError> {
    state
        .store
        .schedule_list(ScheduleListParams::default())
        .await?
        .into_iter()
        .find(|r| r.schedule.name == name)
        .ok_or_else(|| {
            ApiError::not_found("schedule_not_found", format!("schedule {name:?} not found"))
        })
}

/// Every schedule with its next slot and counts.
#[utoipa::path(get, path = "/v1/schedules", tag = "schedules", responses((status = 200, body = ScheduleList)))]
pub async fn list_schedules(
    State(state): State<AppState>,
) -> Result<ApiJson<ScheduleList>, ApiError> {
    let mut schedules = Vec::new();
    for record in state
        .store
        .schedule_list(ScheduleListParams::default())
        .await?
    {
        schedules.push(view(&state, record).await);
    }
    Ok(ApiJson(ScheduleList { schedules }))
}

/// One schedule.
#[utoipa::path(get, path = "/v1/schedules/{name}", tag = "schedules", params(("name" = String, Path, description = "schedule name")),
    responses((status = 200, body = ScheduleView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_schedule(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<ApiJson<ScheduleView>, ApiError> {
    let record = find(&state, &name).await?;
    Ok(ApiJson(view(&state, record).await))
}

async fn save(state: &AppState, def: ScheduleDef) -> Result<ApiJson<ScheduleView>, ApiError> {
    let record = state
        .store
        .schedule_upsert(ScheduleUpsertParams {
            schedule: def,
            now: state.clock.now(),
        })
        .await?;
    state.schedules_changed.notify_one();
    Ok(ApiJson(view(state, record).await))
}

/// Create or replace a schedule.
#[utoipa::path(post, path = "/v1/schedules", tag = "schedules", request_body = ScheduleRequest,
    responses((status = 200, body = ScheduleView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn create_schedule(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<ScheduleRequest>,
) -> Result<ApiJson<ScheduleView>, ApiError> {
    let def = request.into_def(ScheduleSource::Api)?;
    save(&state, def).await
}

/// Delete a schedule; the jobs it enqueued stay.
#[utoipa::path(delete, path = "/v1/schedules/{name}", tag = "schedules", params(("name" = String, Path, description = "schedule name")),
    responses((status = 200, body = Count), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn delete_schedule(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<ApiJson<Count>, ApiError> {
    state
        .store
        .schedule_delete(ScheduleDeleteParams { name: name.clone() })
        .await
        .map_err(|e| match e {
            StoreError::ScheduleNotFound(_) => {
                ApiError::not_found("schedule_not_found", e.to_string())
            }
            other => other.into(),
        })?;
    state.schedules_changed.notify_one();
    Ok(ApiJson(Count { count: 1 }))
}

async fn set_enabled(
    state: &AppState,
    name: &str,
    enabled: bool,
) -> Result<ApiJson<ScheduleView>, ApiError> {
    let mut def = find(state, name).await?.schedule;
    def.enabled = enabled;
    save(state, def).await
}

/// Pause a schedule: its slots pass without jobs and are not recovered later.
#[utoipa::path(post, path = "/v1/schedules/{name}/pause", tag = "schedules", params(("name" = String, Path, description = "schedule name")),
    responses((status = 200, body = ScheduleView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn pause_schedule(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<ApiJson<ScheduleView>, ApiError> {
    set_enabled(&state, &name, false).await
}

/// Resume a paused schedule from its next slot.
#[utoipa::path(post, path = "/v1/schedules/{name}/resume", tag = "schedules", params(("name" = String, Path, description = "schedule name")),
    responses((status = 200, body = ScheduleView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn resume_schedule(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<ApiJson<ScheduleView>, ApiError> {
    set_enabled(&state, &name, true).await
}

/// Enqueue the schedule's job now, outside its slots.
#[utoipa::path(post, path = "/v1/schedules/{name}/trigger", tag = "schedules", params(("name" = String, Path, description = "schedule name")),
    responses((status = 200, body = Enqueued), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn trigger_schedule(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<ApiJson<Enqueued>, ApiError> {
    let def = find(&state, &name).await?.schedule;
    let now = state.clock.now();
    let mut job = def.job_for(now, std::time::Duration::ZERO);
    job.unique_key = Some(format!("cron:{}:manual:{now}", def.name));
    let mut inserted = state
        .store
        .job_insert_many(JobInsertManyParams {
            jobs: vec![job],
            defaults: state.config.defaults.clone(),
            now,
        })
        .await?;
    let i = inserted.remove(0);
    Ok(ApiJson(Enqueued {
        job: i.job.into(),
        duplicate: i.duplicate,
        warning: i.warning,
    }))
}
