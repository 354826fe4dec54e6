//! Jobs: enqueue, read, list, wait, cancel, retry, dead jobs.

use axum::extract::State;
use rota_api::{
    CheckpointRequest, Count, EnqueueManyAnswer, EnqueueManyRequest, EnqueueManyResponse, Enqueued,
    EnqueuedIds, ErrorGroupList, ErrorGroupView, ItemOutcome, ItemOutcomes, JobPageView,
    JobSelection, JobView, NewJobRequest, Problem, ProgressRequest,
};
use rota_core::{JobId, JobState};
use rota_store::*;
use serde::Deserialize;
use utoipa::IntoParams;

use super::{job_id, wait_param};
use crate::error::{store_problem, ApiError};
use crate::extract::{ApiJson, ApiPath, ApiQuery};
use crate::state::{AppState, WAIT_MAX};

/// Enqueues `requests`; in a batch, an invalid job is named by its place (`jobs[1].priority`).
async fn enqueue_all(
    state: &AppState,
    requests: Vec<NewJobRequest>,
    batch: bool,
) -> Result<Vec<Enqueued>, ApiError> {
    let now = state.clock.now();
    let mut jobs = Vec::with_capacity(requests.len());
    let in_batch = |i: usize, e: rota_core::ValidationError| {
        let field = if batch {
            format!("jobs[{i}].{}", e.field)
        } else {
            e.field.clone()
        };
        ApiError::invalid(&field, format!("{field}: {}", e.message))
    };
    for (i, request) in requests.into_iter().enumerate() {
        jobs.push(request.into_new_job(now).map_err(|e| in_batch(i, e))?);
    }
    // The store validates each job; in a batch of several it says which one failed, and a
    // batch of one is named `jobs[0]` here.
    let inserted = state
        .store
        .job_insert_many(JobInsertManyParams {
            jobs,
            defaults: state.config.defaults.clone(),
            now,
        })
        .await
        .map_err(|err| match err {
            StoreError::Invalid(e) => in_batch(0, e),
            StoreError::QueueFull { ref queue, .. } => {
                state.metrics.overflow(queue, "rejected");
                ApiError::from(err)
            }
            err => ApiError::from(err),
        })?;
    let mut overflowed: Vec<&str> = inserted
        .iter()
        .filter(|i| i.warning.is_some())
        .map(|i| i.job.queue.as_str())
        .collect();
    overflowed.dedup();
    for queue in overflowed {
        state.metrics.overflow(queue, "accepted");
    }
    Ok(inserted
        .into_iter()
        .map(|i| Enqueued {
            job: i.job.into(),
            duplicate: i.duplicate,
            warning: i.warning,
        })
        .collect())
}

/// Enqueue one job.
#[utoipa::path(post, path = "/v1/jobs", tag = "jobs", request_body = NewJobRequest,
    responses((status = 200, body = Enqueued), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn enqueue(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<NewJobRequest>,
) -> Result<ApiJson<Enqueued>, ApiError> {
    Ok(ApiJson(
        enqueue_all(&state, vec![request], false).await?.remove(0),
    ))
}

/// Options of an enqueue-many.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EnqueueManyQuery {
    /// `ids` answers only the jobs' ids, in order (as does `Prefer: return=minimal`).
    #[serde(rename = "return")]
    #[param(rename = "return")]
    pub answer: Option<String>,
}

/// Enqueue many jobs: all are stored, or none. The answer carries every job, or only their
/// ids with `?return=ids` or `Prefer: return=minimal` (a fraction of the bytes).
#[utoipa::path(post, path = "/v1/jobs/batch", tag = "jobs", request_body = EnqueueManyRequest, params(EnqueueManyQuery),
    responses((status = 200, body = EnqueueManyAnswer), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn enqueue_many(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<EnqueueManyQuery>,
    headers: axum::http::HeaderMap,
    ApiJson(request): ApiJson<EnqueueManyRequest>,
) -> Result<ApiJson<EnqueueManyAnswer>, ApiError> {
    if request.jobs.is_empty() {
        return Err(ApiError::invalid("jobs", "jobs: give at least one job"));
    }
    let minimal = match query.answer.as_deref() {
        None => headers
            .get_all("prefer")
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .any(|p| p.trim().eq_ignore_ascii_case("return=minimal")),
        Some("ids") => true,
        Some("jobs") => false,
        Some(other) => {
            return Err(ApiError::invalid(
                "return",
                format!("return: `ids` or `jobs`, got {other:?}"),
            ))
        }
    };
    let enqueued = enqueue_all(&state, request.jobs, true).await?;
    Ok(ApiJson(if minimal {
        EnqueueManyAnswer::Ids(EnqueuedIds {
            duplicates: enqueued
                .iter()
                .enumerate()
                .filter(|(_, e)| e.duplicate)
                .map(|(i, _)| i)
                .collect(),
            warnings: {
                let mut w: Vec<String> =
                    enqueued.iter().filter_map(|e| e.warning.clone()).collect();
                w.dedup();
                w
            },
            ids: enqueued.into_iter().map(|e| e.job.id).collect(),
        })
    } else {
        EnqueueManyAnswer::Jobs(EnqueueManyResponse { jobs: enqueued })
    }))
}

/// Options of a job read.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct GetJobQuery {
    /// Wait up to this long (such as `30s`, at most `60s`) for the job to finish.
    pub wait: Option<String>,
}

/// One job; with `wait`, answers when it reaches a final state or the wait elapses.
#[utoipa::path(get, path = "/v1/jobs/{id}", tag = "jobs", params(("id" = String, Path, description = "job id"), GetJobQuery),
    responses((status = 200, body = JobView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn get_job(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiQuery(query): ApiQuery<GetJobQuery>,
) -> Result<ApiJson<JobView>, ApiError> {
    let id = job_id("id", &id)?;
    let wait = wait_param("wait", query.wait.as_deref(), WAIT_MAX)?;
    let mut deadline = tokio::time::Instant::now() + wait;
    // Subscribe before reading, so a finish between the read and the wait is not missed.
    let finished = state.wake.subscribe_job(id);
    loop {
        let job = state.store.job_get(JobGetParams { id }).await?;
        if job.state.is_final() || tokio::time::Instant::now() >= deadline {
            let waiting = crate::view::job_waiting(&*state.store, &job, state.clock.now()).await?;
            let mut view = JobView::from(job);
            view.waiting = waiting;
            return Ok(ApiJson(view));
        }
        tokio::select! {
            _ = finished.notified() => {}
            _ = tokio::time::sleep_until(state.look_again_by(deadline)) => {}
            _ = state.shutdown.cancelled() => deadline = tokio::time::Instant::now(),
        }
    }
}

/// Filters of a job listing.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only this state.
    #[param(value_type = Option<rota_api::JobState>)]
    pub state: Option<String>,
    /// Only jobs with this tag.
    pub tag: Option<String>,
    /// Created at or after (RFC 3339).
    pub created_after: Option<String>,
    /// Created before (RFC 3339).
    pub created_before: Option<String>,
    /// Only jobs whose last error has this fingerprint (an error group).
    pub group: Option<String>,
    /// The previous page's `next`.
    pub after: Option<String>,
    /// Page size, 1..=1000 (default 100).
    pub limit: Option<usize>,
}

/// Filters of the dead-job listing: those of [`ListQuery`] but the state, which is `dead`.
#[derive(Debug, Default, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct DeadListQuery {
    /// Only this queue.
    pub queue: Option<String>,
    /// Only this kind.
    pub kind: Option<String>,
    /// Only jobs with this tag.
    pub tag: Option<String>,
    /// Created at or after (RFC 3339).
    pub created_after: Option<String>,
    /// Created before (RFC 3339).
    pub created_before: Option<String>,
    /// Only jobs whose last error has this fingerprint (an error group).
    pub group: Option<String>,
    /// The previous page's `next`.
    pub after: Option<String>,
    /// Page size, 1..=1000 (default 100).
    pub limit: Option<usize>,
}

impl From<DeadListQuery> for ListQuery {
    fn from(q: DeadListQuery) -> Self {
        ListQuery {
            queue: q.queue,
            kind: q.kind,
            state: None,
            tag: q.tag,
            created_after: q.created_after,
            created_before: q.created_before,
            group: q.group,
            after: q.after,
            limit: q.limit,
        }
    }
}

fn time_param(field: &str, raw: &Option<String>) -> Result<Option<jiff::Timestamp>, ApiError> {
    raw.as_deref()
        .map(|t| {
            t.parse().map_err(|e| {
                ApiError::invalid(
                    field,
                    format!("{field}: {t:?} is not an RFC 3339 time: {e}"),
                )
            })
        })
        .transpose()
}

fn list_params(
    query: ListQuery,
    forced_state: Option<JobState>,
) -> Result<JobListParams, ApiError> {
    let states = match (forced_state, &query.state) {
        (Some(state), _) => vec![state],
        (None, Some(raw)) => vec![raw.parse().map_err(|e: rota_core::UnknownState| {
            ApiError::invalid("state", format!("state: {e}"))
        })?],
        (None, None) => vec![],
    };
    // Checked by the store (`check_page_limit`), which names the field.
    let limit = query.limit.unwrap_or(PAGE_LIMIT_DEFAULT);
    Ok(JobListParams {
        filter: JobFilter {
            queues: query.queue.into_iter().collect(),
            kinds: query.kind.into_iter().collect(),
            states,
            tag: query.tag,
            created_after: time_param("created_after", &query.created_after)?,
            created_before: time_param("created_before", &query.created_before)?,
            error_group: query.group,
        },
        after: query
            .after
            .as_deref()
            .map(|a| job_id("after", a))
            .transpose()?,
        limit,
        scan: None,
    })
}

async fn list(state: &AppState, params: JobListParams) -> Result<JobPageView, ApiError> {
    Ok(crate::view::job_page(&*state.store, params).await?)
}

/// Jobs matching filters, newest first, a page at a time.
#[utoipa::path(get, path = "/v1/jobs", tag = "jobs", params(ListQuery),
    responses((status = 200, body = JobPageView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_jobs(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<ListQuery>,
) -> Result<ApiJson<JobPageView>, ApiError> {
    Ok(ApiJson(list(&state, list_params(query, None)?).await?))
}

/// Dead jobs grouped by their last error's cause (fingerprint), largest group first.
#[utoipa::path(get, path = "/v1/dead/groups", tag = "dead", responses((status = 200, body = ErrorGroupList)))]
pub async fn dead_groups(
    State(state): State<AppState>,
) -> Result<ApiJson<ErrorGroupList>, ApiError> {
    let groups = state.store.dead_groups(DeadGroupsParams::default()).await?;
    Ok(ApiJson(ErrorGroupList {
        groups: groups
            .into_iter()
            .map(|g| ErrorGroupView {
                group: g.fingerprint,
                message: g.message,
                count: g.count,
                kinds: g.kinds,
                latest: g.latest,
            })
            .collect(),
    }))
}

/// Dead jobs, newest first.
#[utoipa::path(get, path = "/v1/dead", tag = "dead", params(DeadListQuery),
    responses((status = 200, body = JobPageView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn list_dead(
    State(state): State<AppState>,
    ApiQuery(query): ApiQuery<DeadListQuery>,
) -> Result<ApiJson<JobPageView>, ApiError> {
    Ok(ApiJson(
        list(&state, list_params(query.into(), Some(JobState::Dead))?).await?,
    ))
}

pub(crate) fn outcomes(
    ids: &[JobId],
    results: Vec<Result<rota_core::Job, StoreError>>,
) -> ItemOutcomes {
    ItemOutcomes {
        results: ids
            .iter()
            .zip(results)
            .map(|(id, r)| match r {
                Ok(job) => ItemOutcome {
                    job: id.to_string(),
                    state: Some(job.state),
                    error: None,
                },
                Err(err) => ItemOutcome {
                    job: id.to_string(),
                    state: None,
                    error: Some(store_problem(&err)),
                },
            })
            .collect(),
    }
}

fn single(outcome: Result<rota_core::Job, StoreError>) -> Result<ApiJson<JobView>, ApiError> {
    Ok(ApiJson(outcome?.into()))
}

/// Cancel a job: at once if waiting; if running, by request (its worker sees it on its
/// next heartbeat).
#[utoipa::path(post, path = "/v1/jobs/{id}/cancel", tag = "jobs", params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = JobView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn cancel(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<JobView>, ApiError> {
    let id = job_id("id", &id)?;
    let mut out = state
        .store
        .job_cancel_many(JobCancelManyParams {
            ids: vec![id],
            now: state.clock.now(),
        })
        .await?;
    single(out.remove(0))
}

/// Retry a dead or cancelled job now, keeping its history.
#[utoipa::path(post, path = "/v1/jobs/{id}/retry", tag = "jobs", params(("id" = String, Path, description = "job id")),
    responses((status = 200, body = JobView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn retry(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
) -> Result<ApiJson<JobView>, ApiError> {
    let id = job_id("id", &id)?;
    let mut out = state
        .store
        .job_retry_many(JobRetryManyParams {
            selector: JobSelector::Ids(vec![id]),
            now: state.clock.now(),
        })
        .await?;
    single(out.remove(0))
}

/// The dead jobs an operator selected: by ids, or by queues and/or kinds (one is required,
/// so nothing is retried or purged wholesale by accident). Also returns the ids given.
fn dead_selector(
    selection: JobSelection,
    action: &str,
) -> Result<(JobSelector, Vec<JobId>), ApiError> {
    let ids: Vec<JobId> = selection
        .ids
        .iter()
        .map(|id| job_id("ids", id))
        .collect::<Result<_, _>>()?;
    if !ids.is_empty() {
        return Ok((JobSelector::Ids(ids.clone()), ids));
    }
    if selection.queues.is_empty() && selection.kinds.is_empty() && selection.group.is_none() {
        return Err(ApiError::invalid(
            "ids",
            format!("to {action} dead jobs, give ids, or queues, kinds and/or an error group: dead jobs are never selected wholesale by accident"),
        ));
    }
    let filter = JobFilter {
        queues: selection.queues,
        kinds: selection.kinds,
        states: vec![JobState::Dead],
        error_group: selection.group,
        ..JobFilter::default()
    };
    Ok((JobSelector::Filter(filter), ids))
}

/// Retry dead jobs by id or by filter (queues, kinds), keeping their history.
#[utoipa::path(post, path = "/v1/dead/retry", tag = "dead", request_body = JobSelection,
    responses((status = 200, body = ItemOutcomes), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn retry_dead(
    State(state): State<AppState>,
    ApiJson(selection): ApiJson<JobSelection>,
) -> Result<ApiJson<ItemOutcomes>, ApiError> {
    let (selector, requested) = dead_selector(selection, "retry")?;
    let filter = match selector {
        JobSelector::Filter(filter) => filter,
        ids => {
            let results = state
                .store
                .job_retry_many(JobRetryManyParams {
                    selector: ids,
                    now: state.clock.now(),
                })
                .await?;
            return Ok(ApiJson(outcomes(&requested, results)));
        }
    };
    // By filter, a page of ids at a time, each page one transaction: a redrive of 200,000
    // dead jobs never holds them all (it held 576 MiB in the battery's R11). A job retried
    // leaves the filter; the cursor moves on past any that could not be.
    let mut results = Vec::new();
    let mut after = None;
    loop {
        let page = state
            .store
            .job_list(JobListParams {
                filter: filter.clone(),
                after,
                limit: REDRIVE_CHUNK,
                scan: None,
            })
            .await?;
        let ids: Vec<JobId> = page.jobs.iter().map(|j| j.id).collect();
        if ids.is_empty() {
            break;
        }
        let retried = state
            .store
            .job_retry_many(JobRetryManyParams {
                selector: JobSelector::Ids(ids.clone()),
                now: state.clock.now(),
            })
            .await?;
        results.extend(outcomes(&ids, retried).results);
        match page.next {
            Some(next) => after = Some(next),
            None => break,
        }
    }
    Ok(ApiJson(ItemOutcomes { results }))
}

/// Dead jobs retried per transaction in a redrive by filter.
const REDRIVE_CHUNK: usize = 1_000;

/// Delete dead jobs by id or by filter (queues, kinds); says how many went. A filter is
/// required: there is no "purge everything" by accident.
#[utoipa::path(post, path = "/v1/dead/purge", tag = "dead", request_body = JobSelection,
    responses((status = 200, body = Count), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn purge_dead(
    State(state): State<AppState>,
    ApiJson(selection): ApiJson<JobSelection>,
) -> Result<ApiJson<Count>, ApiError> {
    let (selector, _) = dead_selector(selection, "purge")?;
    let count = state
        .store
        .job_purge(JobPurgeParams {
            selector,
            states: vec![JobState::Dead],
        })
        .await?;
    tracing::info!(count, "purged dead jobs on request");
    Ok(ApiJson(Count { count }))
}

/// Report progress on a running job (with its lease token).
#[utoipa::path(post, path = "/v1/jobs/{id}/progress", tag = "work", params(("id" = String, Path, description = "job id")), request_body = ProgressRequest,
    responses((status = 200, body = JobView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn progress(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<ProgressRequest>,
) -> Result<ApiJson<JobView>, ApiError> {
    let id = job_id("id", &id)?;
    let job = state
        .store
        .job_progress(JobProgressParams {
            lease: LeaseRef {
                job: id,
                token: request.token,
            },
            progress: rota_core::Progress {
                percent: request.percent,
                message: request.message,
            },
            now: state.clock.now(),
        })
        .await?;
    Ok(ApiJson(job.into()))
}

/// Save a running job's checkpoint (with its lease token): its next attempt receives it.
#[utoipa::path(post, path = "/v1/jobs/{id}/checkpoint", tag = "work", params(("id" = String, Path, description = "job id")), request_body = CheckpointRequest,
    responses((status = 200, body = JobView), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn checkpoint(
    State(state): State<AppState>,
    ApiPath(id): ApiPath<String>,
    ApiJson(request): ApiJson<CheckpointRequest>,
) -> Result<ApiJson<JobView>, ApiError> {
    let id = job_id("id", &id)?;
    let job = state
        .store
        .job_checkpoint(JobCheckpointParams {
            lease: LeaseRef {
                job: id,
                token: request.token,
            },
            checkpoint: request.checkpoint,
            now: state.clock.now(),
        })
        .await?;
    Ok(ApiJson(job.into()))
}
