//! Rota's HTTP server: the `/v1` API over an `Arc<dyn Store>`.
//!
//! [`Server`] is the assembly `rota serve` runs: it migrates the store, declares the
//! configured queues and schedules, starts the engine services and serves until told to
//! stop. [`app`] builds the axum `Router` from [`AppState`] (tests call it directly with
//! `oneshot`); [`serve`] runs it on a listener until a shutdown future resolves. Every
//! handler lives in [`routes`], annotated with `#[utoipa::path]`, which is both its route and
//! its entry in the OpenAPI document served at `/v1/openapi.json`. Errors are [`ApiError`],
//! rendered as `application/problem+json` with a stable `code`; request bodies, paths and
//! queries are read through extractors ([`extract`]) whose rejections are problems too.

mod auth;
mod connections;
pub mod dashboard;
pub mod diagnostics;
mod error;
mod extract;
mod maintenance;
pub mod metrics;
mod nul_guard;
mod openapi_rules;
mod routes;
mod server;
mod state;
pub mod view;

use std::future::Future;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use auth::{generate_token, Auth, Scope, TokenEntry};
pub use connections::listen;
pub use diagnostics::doctor_report_of;
pub use error::ApiError;
pub use server::{Server, StartError, Startup};
pub use state::{
    node_id, AppState, ServerConfig, BODY_LIMIT_DEFAULT, DATABASE_WAIT_DEFAULT,
    HEADER_TIMEOUT_DEFAULT, LEASE_DEFAULT, WAIT_MAX,
};

#[derive(OpenApi)]
#[openapi(info(
    title = "Rota",
    description = "Durable background jobs: the /v1 HTTP API."
))]
struct ApiDoc;

fn api_router() -> OpenApiRouter<AppState> {
    use routes::{health, jobs, queues, schedules, work};
    OpenApiRouter::with_openapi(ApiDoc::openapi())
        .routes(routes!(jobs::enqueue, jobs::list_jobs))
        .routes(routes!(jobs::enqueue_many))
        .routes(routes!(jobs::get_job))
        .routes(routes!(jobs::cancel))
        .routes(routes!(jobs::retry))
        .routes(routes!(jobs::progress))
        .routes(routes!(jobs::checkpoint))
        .routes(routes!(jobs::list_dead))
        .routes(routes!(jobs::retry_dead))
        .routes(routes!(jobs::purge_dead))
        .routes(routes!(jobs::dead_groups))
        .routes(routes!(work::fetch))
        .routes(routes!(work::heartbeat))
        .routes(routes!(work::complete))
        .routes(routes!(work::complete_and_fetch))
        .routes(routes!(work::fail))
        .routes(routes!(work::hand_back))
        .routes(routes!(queues::list_queues))
        .routes(routes!(queues::get_queue, queues::declare_queue))
        .routes(routes!(queues::pause_queue))
        .routes(routes!(queues::resume_queue))
        .routes(routes!(queues::list_workers))
        .routes(routes!(
            schedules::list_schedules,
            schedules::create_schedule
        ))
        .routes(routes!(schedules::get_schedule, schedules::delete_schedule))
        .routes(routes!(schedules::pause_schedule))
        .routes(routes!(schedules::resume_schedule))
        .routes(routes!(schedules::trigger_schedule))
        .routes(routes!(health::healthz))
        .routes(routes!(health::readyz))
        .routes(routes!(health::doctor))
}

/// The OpenAPI document of every `/v1` route, as served: with what the server checks
/// beyond types ([`openapi_rules`]).
pub fn openapi() -> serde_json::Value {
    document(api_router().into_openapi())
}

fn document(mut api: utoipa::openapi::OpenApi) -> serde_json::Value {
    describe_responses(&mut api);
    let mut document = serde_json::to_value(&api).expect("the OpenAPI document serializes");
    openapi_rules::state_rules(&mut document);
    document
}

/// OpenAPI requires a description on every response; a response the annotations leave
/// without one is described by its status (`200` is "OK", `4XX` "Client error").
fn describe_responses(api: &mut utoipa::openapi::OpenApi) {
    use utoipa::openapi::RefOr;
    for item in api.paths.paths.values_mut() {
        let operations = [
            &mut item.get,
            &mut item.put,
            &mut item.post,
            &mut item.delete,
            &mut item.patch,
        ];
        for operation in operations.into_iter().flatten() {
            for (status, response) in operation.responses.responses.iter_mut() {
                if let RefOr::T(response) = response {
                    if response.description.is_empty() {
                        response.description = status_description(status).to_owned();
                    }
                }
            }
        }
    }
}

fn status_description(status: &str) -> &'static str {
    match status {
        "200" => "OK",
        "201" => "Created",
        "204" => "No content",
        "4XX" => "Client error: a problem document naming the field or thing",
        "404" => "Not found",
        "409" => "Conflict",
        "413" => "Payload too large",
        "422" => "Invalid input",
        "503" => "Not ready, or busy",
        _ => "See the status",
    }
}

/// The application: every `/v1` route, the OpenAPI document, problem+json for unknown
/// routes, and the body limit.
pub fn app(state: AppState) -> Router {
    let body_limit = state.config.body_limit;
    let (router, api) = api_router().split_for_parts();
    let document = document(api);
    router
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || {
                let document = document.clone();
                async move { axum::Json(document) }
            }),
        )
        .route("/metrics", axum::routing::get(metrics_route))
        .merge(dashboard::router())
        .fallback(|| async {
            ApiError::from(rota_api::Problem::new(
                404,
                "no_route",
                "Not found",
                "no such route; see /v1/openapi.json",
            ))
        })
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            nul_guard::guard,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            auth::require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_request,
        ))
        // A declared length over the limit is refused before any of the body is read.
        .layer(tower_http::limit::RequestBodyLimitLayer::new(body_limit))
        .layer(axum::middleware::from_fn(refuse_encoded_bodies))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            explain_body_limit,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Every metric: Prometheus text (0.0.4), or OpenMetrics when the scraper asks for it.
async fn metrics_route(
    axum::extract::State(state): axum::extract::State<AppState>,
    headers: axum::http::HeaderMap,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let openmetrics = headers
        .get(axum::http::header::ACCEPT)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("application/openmetrics-text"));
    let snapshot = match state.diagnostics.snapshot().await {
        Ok(snapshot) => snapshot,
        Err(err) => return ApiError::from(err).into_response(),
    };
    match state
        .metrics
        .render(&snapshot, state.store.write_stats())
        .await
    {
        Ok(text) if openmetrics => (
            [(
                axum::http::header::CONTENT_TYPE,
                "application/openmetrics-text; version=1.0.0; charset=utf-8",
            )],
            text,
        )
            .into_response(),
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            metrics::prometheus_text(&text),
        )
            .into_response(),
        Err(err) => ApiError::from(err).into_response(),
    }
}

/// Counts every request by its route template (not its concrete path) and status.
async fn count_request(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    let route = request
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let response = next.run(request).await;
    state.metrics.http(&route, response.status().as_u16());
    response
}

/// A compressed request body is refused (415) rather than read as JSON: the server does not
/// inflate bodies, so a gzip bomb costs it nothing, and a client that compresses learns why
/// its request failed.
async fn refuse_encoded_bodies(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let encoding = request
        .headers()
        .get(axum::http::header::CONTENT_ENCODING)
        .map(|v| String::from_utf8_lossy(v.as_bytes()).trim().to_owned());
    match encoding {
        Some(encoding) if !encoding.eq_ignore_ascii_case("identity") => {
            ApiError::from(rota_api::Problem::new(
                415,
                "unsupported_encoding",
                "Unsupported content encoding",
                format!(
                    "request bodies are read as sent; Content-Encoding {encoding:?} is not supported: send the JSON uncompressed"
                ),
            ))
            .into_response()
        }
        _ => next.run(request).await,
    }
}

/// A body over the limit gets a problem that names the limit and the setting raising it.
async fn explain_body_limit(
    axum::extract::State(state): axum::extract::State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let response = next.run(request).await;
    if response.status() != axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        return response;
    }
    ApiError::from(rota_api::Problem::new(
        413,
        "payload_too_large",
        "Payload too large",
        format!(
            "the request body is larger than this server's limit of {} bytes; send less (store large payloads elsewhere and pass a reference) or raise the limit with --body-limit, ROTA_BODY_LIMIT or body_limit in rota.toml",
            state.config.body_limit
        ),
    ))
    .into_response()
}

/// Serves `app(state)` on `listener` until `shutdown` resolves, then stops accepting and
/// lets in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stopping = state.shutdown.clone();
    let header_timeout = state.config.header_timeout;
    connections::serve(listener, app(state), header_timeout, async move {
        shutdown.await;
        stopping.cancel();
    })
    .await
}
