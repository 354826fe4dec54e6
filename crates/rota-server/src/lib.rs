//! Rota's HTTP server: the `/v1` API over an `Arc<dyn Store>`.
//!
//! [`app`] builds the axum `Router` from [`AppState`] (tests call it directly with
//! `oneshot`); [`serve`] runs it on a listener until a shutdown future resolves. Every
//! handler lives in [`routes`], annotated with `#[utoipa::path]`, which is both its route and
//! its entry in the OpenAPI document served at `/v1/openapi.json`. Errors are [`ApiError`],
//! rendered as `application/problem+json` with a stable `code`; request bodies, paths and
//! queries are read through extractors ([`extract`]) whose rejections are problems too.

pub mod auth;
pub mod error;
pub mod extract;
pub mod maintenance;
pub mod metrics;
pub mod routes;
pub mod state;

use std::future::Future;

use axum::extract::DefaultBodyLimit;
use axum::Router;
use utoipa::OpenApi;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

pub use error::ApiError;
pub use state::{AppState, ServerConfig};

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
        .routes(routes!(jobs::list_dead))
        .routes(routes!(jobs::retry_dead))
        .routes(routes!(jobs::purge_dead))
        .routes(routes!(jobs::dead_groups))
        .routes(routes!(work::fetch))
        .routes(routes!(work::heartbeat))
        .routes(routes!(work::complete))
        .routes(routes!(work::fail))
        .routes(routes!(work::hand_back))
        .routes(routes!(queues::list_queues))
        .routes(routes!(queues::declare_queue))
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

/// The OpenAPI document of every `/v1` route.
pub fn openapi() -> utoipa::openapi::OpenApi {
    api_router().into_openapi()
}

/// The application: every `/v1` route, the OpenAPI document, problem+json for unknown
/// routes, and the body limit.
pub fn app(state: AppState) -> Router {
    let body_limit = state.config.body_limit;
    let (router, api) = api_router().split_for_parts();
    let document = serde_json::to_value(&api).expect("the OpenAPI document serializes");
    router
        .route(
            "/v1/openapi.json",
            axum::routing::get(move || {
                let document = document.clone();
                async move { axum::Json(document) }
            }),
        )
        .route("/metrics", axum::routing::get(metrics_route))
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
            auth::require_token,
        ))
        .layer(axum::middleware::from_fn_with_state(
            state.clone(),
            count_request,
        ))
        .layer(DefaultBodyLimit::max(body_limit))
        .with_state(state)
}

/// Prometheus text exposition of every metric.
async fn metrics_route(
    axum::extract::State(state): axum::extract::State<AppState>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    match state.metrics.render(&*state.store, state.clock.now()).await {
        Ok(text) => (
            [(
                axum::http::header::CONTENT_TYPE,
                "text/plain; version=0.0.4; charset=utf-8",
            )],
            text,
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

/// Serves `app(state)` on `listener` until `shutdown` resolves, then stops accepting and
/// lets in-flight requests finish.
pub async fn serve(
    listener: tokio::net::TcpListener,
    state: AppState,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let stopping = state.shutdown.clone();
    axum::serve(listener, app(state))
        .with_graceful_shutdown(async move {
            shutdown.await;
            stopping.cancel();
        })
        .await
}
