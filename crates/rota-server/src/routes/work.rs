//! The worker protocol: fetch (long poll), heartbeat, complete, fail, hand back.

use axum::extract::State;
use rota_api::{
    CompleteAndFetchRequest, CompleteAndFetchResponse, CompleteRequest, CompletionRequest,
    FailRequest, FetchRequest, FetchResponse, HandBackRequest, HeartbeatOutcome, HeartbeatRequest,
    HeartbeatResponse, ItemOutcomes, LeasedJob, Problem,
};
use rota_core::{ErrorReport, JobId};
use rota_store::*;

use super::jobs::outcomes;
use super::wait_param;
use crate::error::{store_problem, ApiError};
use crate::extract::ApiJson;
use crate::state::{AppState, WAIT_MAX};

/// Most jobs one fetch may lease.
pub const FETCH_MAX: u32 = 1000;

/// Lease jobs; waits (up to `wait`) until one is ready.
#[utoipa::path(post, path = "/v1/fetch", tag = "work", request_body = FetchRequest,
    responses((status = 200, body = FetchResponse), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn fetch(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<FetchRequest>,
) -> Result<ApiJson<FetchResponse>, ApiError> {
    let plan = FetchPlan::check(&request)?;
    register_once(&state, &request).await?;
    let (_, fetched) = lease_jobs(&state, &request, plan, Vec::new()).await;
    Ok(ApiJson(fetched?))
}

/// Record successful attempts, then lease the next jobs, in one request (one transaction
/// on SQLite): a worker's steady state. With completions it answers at once (`fetch.wait`
/// applies only without them), so their outcomes are not held back. A fetch that fails after the completions were
/// recorded answers their outcomes and the fetch's problem in `fetch_error`.
#[utoipa::path(post, path = "/v1/complete-and-fetch", tag = "work", request_body = CompleteAndFetchRequest,
    responses((status = 200, body = CompleteAndFetchResponse), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn complete_and_fetch(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<CompleteAndFetchRequest>,
) -> Result<ApiJson<CompleteAndFetchResponse>, ApiError> {
    let plan = FetchPlan::check(&request.fetch).map_err(|e| e.under("fetch"))?;
    register_once(&state, &request.fetch).await?;
    let ids: Vec<JobId> = request.completions.iter().map(|c| c.job).collect();
    let (results, fetched) = lease_jobs(
        &state,
        &request.fetch,
        plan,
        completions(request.completions),
    )
    .await;
    let results = outcomes(&ids, results?).results;
    Ok(ApiJson(match fetched {
        Ok(f) => CompleteAndFetchResponse {
            results,
            jobs: f.jobs,
            lease: f.lease,
            fetch_error: None,
        },
        Err(e) => CompleteAndFetchResponse {
            results,
            jobs: Vec::new(),
            lease: rota_core::format_duration(state.config.lease),
            fetch_error: Some(*e.0),
        },
    }))
}

/// A fetch request's checked limits.
#[derive(Debug, Clone, Copy)]
struct FetchPlan {
    max: u32,
    wait: std::time::Duration,
}

impl FetchPlan {
    fn check(request: &FetchRequest) -> Result<Self, ApiError> {
        if request.worker.trim().is_empty() {
            return Err(ApiError::invalid("worker", "worker: give this worker's id"));
        }
        if request.queues.is_empty() {
            return Err(ApiError::invalid(
                "queues",
                "queues: name at least one queue",
            ));
        }
        let max = request.max.unwrap_or(1);
        if !(1..=FETCH_MAX).contains(&max) {
            return Err(ApiError::invalid(
                "max",
                format!("max: must be between 1 and {FETCH_MAX}, got {max}"),
            ));
        }
        let wait = wait_param("wait", request.wait.as_deref(), WAIT_MAX)?;
        Ok(Self { max, wait })
    }
}

/// The completions' outcomes (an error: none were recorded) and the fetch's answer.
type Leased = (
    Result<Vec<Result<rota_core::Job, StoreError>>, ApiError>,
    Result<FetchResponse, ApiError>,
);

/// Records `completions` (if any) with the first claim, then waits (up to the plan's `wait`)
/// until a job is ready.
async fn lease_jobs(
    state: &AppState,
    request: &FetchRequest,
    plan: FetchPlan,
    completions: Vec<Completion>,
) -> Leased {
    let claim = || JobClaimManyParams {
        worker: request.worker.clone(),
        queues: request.queues.clone(),
        kinds: request.kinds.clone(),
        max: plan.max as usize,
        lease: state.config.lease,
        now: state.clock.now(),
    };
    // With completions the call answers at once, jobs or none: their outcomes (and the
    // worker's knowledge that they landed) are not held back by a long poll.
    let wait = if completions.is_empty() {
        plan.wait
    } else {
        std::time::Duration::ZERO
    };
    let mut deadline = tokio::time::Instant::now() + wait;
    // Subscribe before claiming: a job enqueued between an empty claim and the wait still
    // wakes this fetch.
    let ready = state.wake.subscribe(&request.queues, &request.kinds);
    let mut first = Some(completions).filter(|c| !c.is_empty());
    let mut completed = Vec::new();
    // What a parked claim was answered, when the store ran it for this fetch.
    let mut handed: Option<rota_store::ClaimAnswer> = None;
    loop {
        let claimed = match (handed.take(), first.take()) {
            (Some(answer), _) => answer,
            (None, Some(completions)) => {
                match state
                    .store
                    .job_complete_and_claim(JobCompleteAndClaimParams {
                        completions,
                        claim: claim(),
                    })
                    .await
                {
                    Ok(out) => {
                        completed = out.completions;
                        out.claimed
                    }
                    Err(e) => {
                        let e = ApiError::from(e);
                        return (Err(e.clone()), Err(e));
                    }
                }
            }
            (None, None) => state.store.job_claim_many(claim()).await,
        };
        let jobs = match claimed {
            Ok(jobs) => jobs,
            Err(e) => return (Ok(completed), Err(e.into())),
        };
        let now = tokio::time::Instant::now();
        if !jobs.is_empty() || now >= deadline {
            // The shortest lease length granted (queues may set their own), so the worker
            // knows how often to heartbeat: the length, not the time left, which is a few
            // microseconds shorter by the time the answer is written.
            let lease = jobs
                .iter()
                .filter_map(|j| Some((j.lease.as_ref()?, j.attempted_at?)))
                .map(|(l, granted_at)| {
                    std::time::Duration::try_from(l.expires_at.duration_since(granted_at))
                        .unwrap_or_default()
                })
                .min()
                .unwrap_or(state.config.lease);
            let full = request.full;
            return (
                Ok(completed),
                Ok(FetchResponse {
                    jobs: jobs
                        .into_iter()
                        .filter_map(|j| LeasedJob::with(j, full))
                        .collect(),
                    lease: rota_core::format_duration(lease),
                }),
            );
        }
        // Enqueues and state changes on these queues wake this at once; a job that becomes
        // due by time (a delay, a retry backoff) wakes it at its run_at. No polling.
        let clock_now = state.clock.now();
        let next_due = match state
            .store
            .job_next_due(JobNextDueParams {
                queues: request.queues.clone(),
            })
            .await
        {
            Ok(due) => due,
            Err(e) => return (Ok(completed), Err(e.into())),
        };
        // A due time past the deadline (however far: up to the end of time) is the deadline.
        let wake_at = match next_due {
            Some(due) => std::time::Duration::try_from(due.duration_since(clock_now))
                .ok()
                .and_then(|d| now.checked_add(d))
                .map_or(deadline, |at| at.min(deadline)),
            None => deadline,
        };
        // Parked, the claim runs inside the transaction that makes a job ready (one commit
        // from enqueue to lease, on stores that can); the subscription still wakes this for
        // anything the parked claim does not cover (a due time, a resumed queue).
        let mut parked = state.store.job_claim_park(claim(), state.clock.clone());
        {
            let answered = async {
                match parked.as_mut() {
                    Some(p) => p.answered().await,
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                answer = answered => handed = Some(answer),
                _ = ready.notified() => {}
                _ = tokio::time::sleep_until(state.look_again_by(deadline.min(wake_at))) => {}
                _ = state.shutdown.cancelled() => deadline = now,
            }
        }
        if handed.is_none() {
            if let Some(p) = parked {
                // Taken just before the withdrawal: its jobs are this fetch's.
                handed = p.withdraw().await;
            }
        }
    }
}

async fn register_once(state: &AppState, request: &FetchRequest) -> Result<(), ApiError> {
    if state
        .registered
        .lock()
        .expect("registry poisoned")
        .contains(&request.worker)
    {
        return Ok(());
    }
    let worker = WorkerInfo {
        id: request.worker.clone(),
        queues: request.queues.clone(),
        kinds: request.kinds.clone(),
        name: request
            .name
            .clone()
            .or_else(|| request.host.clone())
            .unwrap_or_default(),
        host: request.host.clone().unwrap_or_default(),
        pid: request.pid.unwrap_or_default(),
        concurrency: request.concurrency.unwrap_or(1),
        version: request.version.clone().unwrap_or_default(),
    };
    state
        .store
        .worker_register(WorkerRegisterParams {
            worker,
            now: state.clock.now(),
        })
        .await?;
    state
        .registered
        .lock()
        .expect("registry poisoned")
        .insert(request.worker.clone());
    Ok(())
}

/// Extend leases; answers carry cancel requests.
#[utoipa::path(post, path = "/v1/heartbeat", tag = "work", request_body = HeartbeatRequest,
    responses((status = 200, body = HeartbeatResponse), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn heartbeat(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<HeartbeatRequest>,
) -> Result<ApiJson<HeartbeatResponse>, ApiError> {
    let leases: Vec<LeaseRef> = request
        .leases
        .iter()
        .map(|l| LeaseRef {
            job: l.job,
            token: l.token,
        })
        .collect();
    let results = state
        .store
        .lease_extend_many(LeaseExtendManyParams {
            worker: request.worker,
            leases: leases.clone(),
            lease: state.config.lease,
            now: state.clock.now(),
        })
        .await?;
    Ok(ApiJson(HeartbeatResponse {
        results: leases
            .iter()
            .zip(results)
            .map(|(lease, r)| match r {
                Ok(ext) => HeartbeatOutcome {
                    job: lease.job.to_string(),
                    held: true,
                    cancel_requested: ext.cancel_requested,
                    error: None,
                },
                Err(err) => HeartbeatOutcome {
                    job: lease.job.to_string(),
                    held: false,
                    cancel_requested: false,
                    error: Some(store_problem(&err)),
                },
            })
            .collect(),
    }))
}

/// Record successful attempts.
#[utoipa::path(post, path = "/v1/complete", tag = "work", request_body = CompleteRequest,
    responses((status = 200, body = ItemOutcomes), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn complete(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<CompleteRequest>,
) -> Result<ApiJson<ItemOutcomes>, ApiError> {
    let ids: Vec<JobId> = request.completions.iter().map(|c| c.job).collect();
    let completions = completions(request.completions);
    let results = state
        .store
        .job_complete_many(JobCompleteManyParams {
            completions,
            now: state.clock.now(),
        })
        .await?;
    Ok(ApiJson(outcomes(&ids, results)))
}

/// The store's completions for the wire's.
fn completions(requests: Vec<CompletionRequest>) -> Vec<Completion> {
    requests
        .into_iter()
        .map(|c| Completion {
            lease: LeaseRef {
                job: c.job,
                token: c.token,
            },
            result: c.result,
        })
        .collect()
}

/// Record failed attempts (retried after the job's backoff, or dead); a failure with
/// `snooze` reschedules the job instead, without using an attempt.
#[utoipa::path(post, path = "/v1/fail", tag = "work", request_body = FailRequest,
    responses((status = 200, body = ItemOutcomes), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn fail(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<FailRequest>,
) -> Result<ApiJson<ItemOutcomes>, ApiError> {
    let now = state.clock.now();
    let ids: Vec<JobId> = request.failures.iter().map(|f| f.job).collect();
    let mut failures = Vec::new();
    let mut snoozes = Vec::new();
    for (i, f) in request.failures.into_iter().enumerate() {
        let lease = LeaseRef {
            job: f.job,
            token: f.token,
        };
        if f.snooze.is_some() && f.discard {
            let field = format!("failures[{i}].discard");
            return Err(ApiError::invalid(
                &field,
                format!("{field}: a failure either snoozes or discards the job, not both"),
            ));
        }
        match f.snooze {
            Some(raw) => {
                let field = format!("failures[{i}].snooze");
                let delay = rota_core::parse_duration_field(&field, &raw)?;
                snoozes.push((i, Snooze { lease, delay }));
            }
            None => failures.push((
                i,
                Failure {
                    lease,
                    error: ErrorReport {
                        message: f.message,
                        backtrace: f.backtrace,
                    },
                    discard: f.discard,
                },
            )),
        }
    }
    let (order, failures): (Vec<usize>, Vec<Failure>) = failures.into_iter().unzip();
    let mut results: Vec<Option<Result<rota_core::Job, StoreError>>> =
        (0..ids.len()).map(|_| None).collect();
    if !failures.is_empty() {
        let out = state
            .store
            .job_fail_many(JobFailManyParams { failures, now })
            .await?;
        for (i, r) in order.into_iter().zip(out) {
            results[i] = Some(r);
        }
    }
    let (order, snoozes): (Vec<usize>, Vec<Snooze>) = snoozes.into_iter().unzip();
    if !snoozes.is_empty() {
        let out = state
            .store
            .job_snooze_many(JobSnoozeManyParams {
                snoozes,
                max_snoozes: state.config.max_snoozes,
                now,
            })
            .await?;
        for (i, r) in order.into_iter().zip(out) {
            results[i] = Some(r);
        }
    }
    let results: Vec<_> = results
        .into_iter()
        .map(|r| r.expect("every failure answered"))
        .collect();
    Ok(ApiJson(outcomes(&ids, results)))
}

/// Give leases back unrun (graceful shutdown): the jobs are available again at once, without
/// using an attempt.
#[utoipa::path(post, path = "/v1/hand-back", tag = "work", request_body = HandBackRequest,
    responses((status = 200, body = ItemOutcomes), (status = "4XX", body = Problem, content_type = "application/problem+json")))]
pub async fn hand_back(
    State(state): State<AppState>,
    ApiJson(request): ApiJson<HandBackRequest>,
) -> Result<ApiJson<ItemOutcomes>, ApiError> {
    let ids: Vec<JobId> = request.leases.iter().map(|l| l.job).collect();
    let leases = request
        .leases
        .iter()
        .map(|l| LeaseRef {
            job: l.job,
            token: l.token,
        })
        .collect();
    let results = state
        .store
        .lease_hand_back_many(LeaseHandBackManyParams {
            leases,
            now: state.clock.now(),
        })
        .await?;
    Ok(ApiJson(outcomes(&ids, results)))
}
