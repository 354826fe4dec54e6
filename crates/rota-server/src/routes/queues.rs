//! Queues and workers.

use axum::extract::State;
use rota_api::{Problem, QueueDeclareRequest, QueueList, QueueView, WorkerList};
use rota_core::ValidationError;
use rota_store::*;

use crate::error::ApiError;
use crate::extract::{ApiJson, ApiPath};
use crate::state::AppState;

async fn view_of(state: &AppState, name: &str) -> Result<QueueView, ApiError> {
    crate::view::queue_named(&*state.store, name, state.clock.now())
        .await?
        .map(|mut q| {
            q.overflows = state.metrics.overflows_of(&q.name);
            q
        })
        .ok_or_else(|| {
            ApiError::not_found(
                "queue_not_declared",
                format!("queue {name:?} is not declared"),
            )
        })
}

/// Every queue, with job counts per state and the age of its oldest ready job.
#[utoipa::path(get, path = "/v1/queues", tag = "queues",
    responses((status = 200, body = QueueList)))]
pub async fn list_queues(State(state): State<AppState>) -> Result<ApiJson<QueueList>, ApiError> {
    let mut queues = crate::view::queues(&*state.store, state.clock.now()).await?;
    for q in &mut queues {
        q.overflows = state.metrics.overflows_of(&q.name);
    }
    Ok(ApiJson(QueueList { queues }))
}

fn duration_field(
    field: &str,
    raw: &Option<String>,
) -> Result<Option<std::time::Duration>, ApiError> {
    Ok(raw
        .as_deref()
        .map(|t| rota_core::parse_duration_field(field, t))
        .transpose()?)
}

fn parse_rate(field: &str, raw: &str) -> Result<rota_core::Rate, ApiError> {
    raw.parse()
        .map_err(|e: rota_core::RateParseError| ValidationError::new(field, e.to_string()).into())
}

fn rate_field(field: &str, raw: &Option<String>) -> Result<Option<rota_core::Rate>, ApiError> {
    raw.as_deref().map(|r| parse_rate(field, r)).transpose()
}

/// One queue, with job counts per state and the age of its oldest ready job.
#[utoipa::path(get, path = "/v1/queues/{name}", tag = "queues", params(("name" = String, Path, description = "queue name")),
    responses((status = 200, body = QueueView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_queue(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<ApiJson<QueueView>, ApiError> {
    Ok(ApiJson(view_of(&state, &name).await?))
}

/// Declare a queue, or update its settings; an empty body declares it with defaults.
#[utoipa::path(put, path = "/v1/queues/{name}", tag = "queues", params(("name" = String, Path, description = "queue name")), request_body = QueueDeclareRequest,
    responses((status = 200, body = QueueView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn declare_queue(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
    request: Option<ApiJson<QueueDeclareRequest>>,
) -> Result<ApiJson<QueueView>, ApiError> {
    let request = request.map(|r| r.0).unwrap_or_default();
    let config = QueueConfig {
        retry: request.retry(),
        lease: duration_field("lease", &request.lease)?,
        timeout: duration_field("timeout", &request.timeout)?,
        concurrency: request.concurrency,
        completed_retention: duration_field("completed_retention", &request.completed_retention)?,
        cancelled_retention: duration_field("cancelled_retention", &request.cancelled_retention)?,
        dead_retention: duration_field("dead_retention", &request.dead_retention)?,
        key_concurrency: request.key_concurrency,
        key_weights: request.key_weights.clone(),
        rate: rate_field("rate", &request.rate)?,
        key_rate: rate_field("key_rate", &request.key_rate)?,
        kind_rates: request
            .kind_rates
            .iter()
            .map(|(kind, raw)| {
                Ok((
                    kind.clone(),
                    parse_rate(&format!("kind_rates.{kind}"), raw)?,
                ))
            })
            .collect::<Result<_, ApiError>>()?,
        max_depth: request.max_depth,
        max_age: duration_field("max_age", &request.max_age)?,
        overflow: request
            .overflow
            .as_deref()
            .map(|raw| {
                raw.parse()
                    .map_err(|e: String| ValidationError::new("overflow", e))
            })
            .transpose()?,
    };
    state
        .store
        .queue_declare(QueueDeclareParams {
            name: name.clone(),
            config,
            // Only what was given changes (issue 18: a declare with --lease reset the rest).
            merge: true,
            now: state.clock.now(),
        })
        .await?;
    Ok(ApiJson(view_of(&state, &name).await?))
}

async fn set_paused(
    state: &AppState,
    name: String,
    paused: bool,
) -> Result<ApiJson<QueueView>, ApiError> {
    state
        .store
        .queue_set_paused(QueueSetPausedParams {
            name: name.clone(),
            paused,
            now: state.clock.now(),
        })
        .await?;
    if !paused {
        state.wake.wake_queue(&name);
    }
    Ok(ApiJson(view_of(state, &name).await?))
}

/// Pause a queue: it hands out no jobs until resumed.
#[utoipa::path(post, path = "/v1/queues/{name}/pause", tag = "queues", params(("name" = String, Path, description = "queue name")),
    responses((status = 200, body = QueueView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn pause_queue(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<ApiJson<QueueView>, ApiError> {
    set_paused(&state, name, true).await
}

/// Resume a paused queue.
#[utoipa::path(post, path = "/v1/queues/{name}/resume", tag = "queues", params(("name" = String, Path, description = "queue name")),
    responses((status = 200, body = QueueView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn resume_queue(
    State(state): State<AppState>,
    ApiPath(name): ApiPath<String>,
) -> Result<ApiJson<QueueView>, ApiError> {
    set_paused(&state, name, false).await
}

/// Every known worker, most recently seen first.
#[utoipa::path(get, path = "/v1/workers", tag = "workers",
    responses((status = 200, body = WorkerList)))]
pub async fn list_workers(State(state): State<AppState>) -> Result<ApiJson<WorkerList>, ApiError> {
    let now = state.clock.now();
    let workers = state.store.worker_list(WorkerListParams::default()).await?;
    let leader = state
        .store
        .leader_get(rota_store::LeaderGetParams {
            name: rota_engine::MAINTENANCE.into(),
            holder: state.config.node.clone(),
        })
        .await?
        .filter(|l| l.expires_at > now)
        .map(|l| rota_api::LeaderView {
            node: l.holder,
            expires_at: l.expires_at,
        });
    Ok(ApiJson(WorkerList {
        workers: workers
            .into_iter()
            .map(|w| crate::view::worker(w, state.config.lease, now))
            .collect(),
        node: state.config.node.clone(),
        leader,
    }))
}
