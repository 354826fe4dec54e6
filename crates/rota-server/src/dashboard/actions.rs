//! The actions: every one a POST from a page of this origin with the session's CSRF token
//! and an admin token behind it (see [`super::session`]); each answers with a redirect
//! back to the page it came from, saying what it did. They call the same store operations
//! (and the same handlers) as the API.

use axum::extract::{Path, State};
use axum::http::{header, HeaderMap, Method};
use axum::response::{IntoResponse, Redirect, Response};
use axum::Form;
use rota_core::{JobId, JobState};
use rota_store::{
    JobCancelManyParams, JobListParams, JobPurgeParams, JobRetryManyParams, JobSelector, StoreError,
};

use super::pages::{local_path, query_string, JobsQuery, LoginPage};
use super::session::{self, Refusal};
use super::{message_page, render, store_error_page};
use crate::extract::ApiPath;
use crate::state::AppState;

/// Jobs changed per transaction by a bulk action over "all matching".
pub const BULK_CHUNK: usize = 1_000;

/// A form's fields, repeated ones kept (`ids=a&ids=b`).
type Fields = Vec<(String, String)>;

fn field<'a>(fields: &'a Fields, name: &str) -> Option<&'a str> {
    fields
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

fn api_error_page(err: crate::error::ApiError) -> Response {
    message_page(err.0.status, &err.0.title, &err.0.detail)
}

fn refused(refusal: Refusal) -> Response {
    message_page(refusal.status(), "Refused", &refusal.message())
}

/// Checks the action may go through; the viewer on success.
fn guard(state: &AppState, headers: &HeaderMap, fields: &Fields) -> Result<(), Response> {
    session::authorize_action(state, &Method::POST, headers, field(fields, "csrf"))
        .map(|_| ())
        .map_err(refused)
}

/// After an action: the snapshot and error groups are read again, so the page the action
/// returns to (and every live page) shows its effect at once.
async fn acted(state: &AppState) {
    state.dashboard.live.touch();
    if let Err(err) = state.diagnostics.refresh().await {
        tracing::warn!(error = %err, "refreshing the snapshot after an action failed");
    }
}

fn back_to(fields: &Fields, default: &str, done: &str) -> Response {
    let back = local_path(field(fields, "back"), default);
    let sep = if back.contains('?') { '&' } else { '?' };
    Redirect::to(&format!("{back}{sep}{}", query_string(&[("done", done)]))).into_response()
}

/// `POST /login`: a valid token becomes the session cookie.
pub async fn login(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(fields): Form<Fields>,
) -> Response {
    if let Err(refusal) = session::same_origin(&headers) {
        return refused(refusal);
    }
    let next = local_path(field(&fields, "next"), "/");
    let token = field(&fields, "token").unwrap_or("").trim();
    if !state.config.auth.enabled() {
        return Redirect::to(&next).into_response();
    }
    if state.config.auth.find(token).is_none() {
        let mut response = render(&LoginPage {
            next,
            error: Some(if token.is_empty() {
                "token: paste a token made by `rota token new`".into()
            } else {
                "token: not one this server accepts".into()
            }),
        });
        *response.status_mut() = axum::http::StatusCode::UNAUTHORIZED;
        return response;
    }
    (
        [(header::SET_COOKIE, session::session_cookie(token))],
        Redirect::to(&next),
    )
        .into_response()
}

/// `POST /logout`: ends the session.
pub async fn logout(headers: HeaderMap) -> Response {
    if let Err(refusal) = session::same_origin(&headers) {
        return refused(refusal);
    }
    (
        [(header::SET_COOKIE, session::clear_cookie())],
        Redirect::to("/login"),
    )
        .into_response()
}

fn parse_id(raw: &str) -> Result<JobId, Response> {
    raw.parse().map_err(|_| {
        message_page(
            422,
            "Not a job id",
            &format!("{raw:?} is not a job id (a UUID)"),
        )
    })
}

/// Retries, cancels or deletes `ids`; says how many it did, and why the rest not.
async fn act_on(state: &AppState, action: &str, ids: Vec<JobId>) -> Result<(u64, u64), StoreError> {
    let now = state.clock.now();
    let n = ids.len() as u64;
    match action {
        "retry" => {
            let out = state
                .store
                .job_retry_many(JobRetryManyParams {
                    selector: JobSelector::Ids(ids),
                    now,
                })
                .await?;
            let ok = out.iter().filter(|r| r.is_ok()).count() as u64;
            Ok((ok, n - ok))
        }
        "cancel" => {
            let out = state
                .store
                .job_cancel_many(JobCancelManyParams { ids, now })
                .await?;
            let ok = out.iter().filter(|r| r.is_ok()).count() as u64;
            Ok((ok, n - ok))
        }
        _ => {
            // Delete: only jobs that are not running (a running job is cancelled first).
            let gone = state
                .store
                .job_purge(JobPurgeParams {
                    selector: JobSelector::Ids(ids),
                    states: STATES_DELETABLE.to_vec(),
                })
                .await?;
            Ok((gone, n - gone))
        }
    }
}

/// States a job may be deleted from (a running one is cancelled first).
const STATES_DELETABLE: [JobState; 6] = [
    JobState::Available,
    JobState::Scheduled,
    JobState::Retryable,
    JobState::Completed,
    JobState::Dead,
    JobState::Cancelled,
];

fn valid_action(action: &str) -> Result<(), Response> {
    match action {
        "retry" | "cancel" | "delete" => Ok(()),
        other => Err(message_page(
            404,
            "No such action",
            &format!("{other:?}: a job can be retried, cancelled or deleted"),
        )),
    }
}

fn summary(action: &str, done: u64, not: u64) -> String {
    let verb = match action {
        "retry" => "retried",
        "cancel" => "cancelled",
        _ => "deleted",
    };
    let jobs = |n: u64| {
        if n == 1 {
            "job".to_owned()
        } else {
            "jobs".to_owned()
        }
    };
    if not == 0 {
        format!("{verb} {done} {}", jobs(done))
    } else {
        format!(
            "{verb} {done} {}; {not} could not be (not in a state that allows it)",
            jobs(done)
        )
    }
}

/// `POST /jobs/{id}/{retry|cancel|delete}`.
pub async fn job_action(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    Form(fields): Form<Fields>,
) -> Response {
    if let Err(r) = guard(&state, &headers, &fields) {
        return r;
    }
    if let Err(r) = valid_action(&action) {
        return r;
    }
    let id = match parse_id(&id) {
        Ok(id) => id,
        Err(r) => return r,
    };
    match act_on(&state, &action, vec![id]).await {
        Ok((done, not)) => {
            acted(&state).await;
            let default = if action == "delete" && done == 1 {
                "/jobs".to_owned()
            } else {
                format!("/jobs/{id}")
            };
            let back = if action == "delete" && done == 1 {
                None
            } else {
                field(&fields, "back")
            };
            let fields: Fields = back
                .map(|b| vec![("back".to_owned(), b.to_owned())])
                .unwrap_or_default();
            back_to(&fields, &default, &summary(&action, done, not))
        }
        Err(e) => store_error_page(&e),
    }
}

/// How many jobs a filter matches, from the kept counts, when it filters by queue, kind
/// and state only (others cannot be counted without reading the jobs).
async fn expected_matches(state: &AppState, filter: &rota_store::JobFilter) -> Option<u64> {
    let countable = filter.tag.is_none()
        && filter.error_group.is_none()
        && filter.created_after.is_none()
        && filter.created_before.is_none();
    if !countable {
        return None;
    }
    let snapshot = state.diagnostics.snapshot().await.ok()?;
    Some(
        snapshot
            .counts
            .iter()
            .filter(|c| filter.queues.is_empty() || filter.queues.contains(&c.queue))
            .filter(|c| filter.kinds.is_empty() || filter.kinds.contains(&c.kind))
            .filter(|c| filter.states.is_empty() || filter.states.contains(&c.state))
            .map(|c| c.count)
            .sum(),
    )
}

/// Runs a bulk action over everything `filter` matches, a chunk of [`BULK_CHUNK`] per
/// transaction, recording its progress for the run's page.
async fn run_bulk(state: AppState, id: u64, action: String, filter: rota_store::JobFilter) {
    let runs = &state.dashboard.bulk;
    let mut after = None;
    let outcome = loop {
        let page = match state
            .store
            .job_list(JobListParams {
                filter: filter.clone(),
                after,
                limit: BULK_CHUNK,
                scan: None,
            })
            .await
        {
            Ok(p) => p,
            Err(e) => break Err(e),
        };
        let ids: Vec<JobId> = page.jobs.iter().map(|j| j.id).collect();
        if ids.is_empty() {
            break Ok(());
        }
        match act_on(&state, &action, ids).await {
            Ok((done, refused)) => runs.progress(id, done, refused),
            Err(e) => break Err(e),
        }
        match page.next {
            Some(next) => after = Some(next),
            None => break Ok(()),
        }
    };
    if let Err(err) = &outcome {
        tracing::warn!(error = %err, "a bulk action from the dashboard stopped");
    }
    runs.finish(
        id,
        outcome
            .err()
            .map(|e| crate::error::store_problem(&e).detail),
    );
    acted(&state).await;
}

/// `POST /jobs/bulk`: `action` on the checked `ids` (at once), or with `all=1` on every job
/// the filter fields match (in the background, a chunk of [`BULK_CHUNK`] per transaction;
/// the answer sends the browser to the run's progress page).
pub async fn bulk(
    State(state): State<AppState>,
    headers: HeaderMap,
    Form(fields): Form<Fields>,
) -> Response {
    if let Err(r) = guard(&state, &headers, &fields) {
        return r;
    }
    let action = field(&fields, "action").unwrap_or("").to_owned();
    if let Err(r) = valid_action(&action) {
        return r;
    }
    let (mut done, mut not) = (0u64, 0u64);
    if field(&fields, "all") == Some("1") {
        let q = JobsQuery {
            state: field(&fields, "state").map(str::to_owned),
            queue: field(&fields, "queue").map(str::to_owned),
            kind: field(&fields, "kind").map(str::to_owned),
            tag: field(&fields, "tag").map(str::to_owned),
            group: field(&fields, "group").map(str::to_owned),
            from: field(&fields, "from").map(str::to_owned),
            to: field(&fields, "to").map(str::to_owned),
            ..JobsQuery::default()
        };
        let filter = match q.filter() {
            Ok(f) => f,
            Err(e) => return message_page(422, "Invalid filter", &e),
        };
        let expected = expected_matches(&state, &filter).await;
        let back = local_path(field(&fields, "back"), "/jobs");
        let id = state.dashboard.bulk.start(&action, expected, back);
        tokio::spawn(run_bulk(state.clone(), id, action, filter));
        return Redirect::to(&format!("/jobs/bulk/{id}")).into_response();
    }
    let mut ids = Vec::new();
    for (_, raw) in fields.iter().filter(|(k, _)| k == "ids") {
        match parse_id(raw) {
            Ok(id) => ids.push(id),
            Err(r) => return r,
        }
    }
    if ids.is_empty() {
        return back_to(
            &fields,
            "/jobs",
            "nothing selected: tick jobs, or \"all matching\"",
        );
    }
    for chunk in ids.chunks(BULK_CHUNK) {
        match act_on(&state, &action, chunk.to_vec()).await {
            Ok((d, n)) => {
                done += d;
                not += n;
            }
            Err(e) => return store_error_page(&e),
        }
    }
    acted(&state).await;
    back_to(&fields, "/jobs", &summary(&action, done, not))
}

/// `POST /errors/{retry|purge}` with `group`: every dead job of an error group, through
/// the API's own redrive and purge.
pub async fn group_action(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path(action): Path<String>,
    Form(fields): Form<Fields>,
) -> Response {
    if let Err(r) = guard(&state, &headers, &fields) {
        return r;
    }
    let Some(group) = field(&fields, "group").filter(|g| !g.is_empty()) else {
        return message_page(422, "No group", "group: name the error group to act on");
    };
    let selection = rota_api::JobSelection {
        group: Some(group.to_owned()),
        ..rota_api::JobSelection::default()
    };
    let api_json = crate::extract::ApiJson(selection);
    let done = match action.as_str() {
        "retry" => match crate::routes::jobs::retry_dead(State(state.clone()), api_json).await {
            Ok(out) => {
                let ok = out.0.results.iter().filter(|r| r.error.is_none()).count();
                let not = out.0.results.len() - ok;
                summary("retry", ok as u64, not as u64)
            }
            Err(e) => return api_error_page(e),
        },
        "purge" => match crate::routes::jobs::purge_dead(State(state.clone()), api_json).await {
            Ok(count) => format!("purged {} dead jobs", count.0.count),
            Err(e) => return api_error_page(e),
        },
        other => {
            return message_page(
                404,
                "No such action",
                &format!("{other:?}: a group can be retried or purged"),
            )
        }
    };
    acted(&state).await;
    back_to(&fields, "/errors", &done)
}

/// `POST /queues/{name}/{pause|resume}`.
pub async fn queue_action(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
    Form(fields): Form<Fields>,
) -> Response {
    if let Err(r) = guard(&state, &headers, &fields) {
        return r;
    }
    let path = ApiPath(name.clone());
    let out = match action.as_str() {
        "pause" => crate::routes::queues::pause_queue(State(state.clone()), path).await,
        "resume" => crate::routes::queues::resume_queue(State(state.clone()), path).await,
        other => {
            return message_page(
                404,
                "No such action",
                &format!("{other:?}: a queue can be paused or resumed"),
            )
        }
    };
    match out {
        Ok(_) => {
            acted(&state).await;
            back_to(&fields, "/queues", &format!("queue {name} {action}d"))
        }
        Err(e) => api_error_page(e),
    }
}

/// `POST /schedules/{name}/{pause|resume|trigger}`.
pub async fn schedule_action(
    State(state): State<AppState>,
    headers: HeaderMap,
    Path((name, action)): Path<(String, String)>,
    Form(fields): Form<Fields>,
) -> Response {
    if let Err(r) = guard(&state, &headers, &fields) {
        return r;
    }
    let path = ApiPath(name.clone());
    let done = match action.as_str() {
        "pause" => crate::routes::schedules::pause_schedule(State(state.clone()), path)
            .await
            .map(|_| format!("schedule {name} paused")),
        "resume" => crate::routes::schedules::resume_schedule(State(state.clone()), path)
            .await
            .map(|_| format!("schedule {name} resumed")),
        "trigger" => crate::routes::schedules::trigger_schedule(State(state.clone()), path)
            .await
            .map(|e| format!("schedule {name} triggered: job {}", e.0.job.id)),
        other => {
            return message_page(
                404,
                "No such action",
                &format!("{other:?}: a schedule can be paused, resumed or triggered"),
            )
        }
    };
    match done {
        Ok(done) => {
            acted(&state).await;
            back_to(&fields, "/schedules", &done)
        }
        Err(e) => api_error_page(e),
    }
}
