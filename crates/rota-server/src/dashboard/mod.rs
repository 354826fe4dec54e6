//! The dashboard: server-rendered HTML pages at `/` over the same store and view models as
//! the API, with live counts over one server-sent-events stream.
//!
//! Pages are askama templates (`templates/`, every value escaped); the only script is the
//! vendored, pinned htmx and `dashboard.js`, both served from the binary under
//! `/assets/`, so a strict Content-Security-Policy (`default-src 'self'`) holds on every
//! page. Who may see and act is [`session`]; the pages are [`pages`]; the actions (all
//! POSTs) are [`actions`]; the live stream is [`live`]; the charts' data is [`timeline`].

#![allow(
    clippy::result_large_err,
    reason = "page handlers return early with the response that ends them"
)]

pub mod actions;
pub mod assets;
pub mod bulk;
pub mod charts;
pub mod live;
pub mod pages;
pub mod session;
pub mod timeline;

use std::sync::Arc;

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{Html, IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;

use crate::state::AppState;

/// What the dashboard keeps beside the API's state.
#[derive(Debug)]
pub struct Dashboard {
    /// The CSRF secret when auth is off (random per process).
    pub secret: String,
    /// Per-minute activity for the charts.
    pub timeline: Arc<timeline::Timeline>,
    /// The live stream's producer.
    pub live: Arc<live::Live>,
    /// Bulk actions running in the background, and the latest finished.
    pub bulk: bulk::BulkRuns,
}

impl Dashboard {
    /// A dashboard on `clock` with a fresh secret.
    pub fn new(clock: Arc<dyn rota_core::Clock>) -> Self {
        let mut bytes = [0u8; 32];
        // Without randomness the secret is still unguessable enough from outside the
        // process (the time), and auth-off servers only bind loopback.
        if getrandom::fill(&mut bytes).is_err() {
            let t = jiff::Timestamp::now().as_nanosecond().to_le_bytes();
            bytes[..16].copy_from_slice(&t);
        }
        Self {
            secret: bytes.iter().map(|b| format!("{b:02x}")).collect(),
            timeline: Arc::new(timeline::Timeline::new(clock)),
            live: Arc::new(live::Live::default()),
            bulk: bulk::BulkRuns::default(),
        }
    }
}

/// The Content-Security-Policy of every dashboard response.
pub const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; object-src 'none'";

/// Every dashboard route.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/", get(pages::overview))
        .route("/jobs", get(pages::jobs))
        .route("/jobs/{id}", get(pages::job))
        .route("/errors", get(pages::errors))
        .route("/queues", get(pages::queues))
        .route("/schedules", get(pages::schedules))
        .route("/workers", get(pages::workers))
        .route("/login", get(pages::login).post(actions::login))
        .route("/logout", post(actions::logout))
        .route("/events", get(live::events))
        .route("/assets/{file}", get(assets::asset))
        .route("/jobs/{id}/{action}", post(actions::job_action))
        .route("/jobs/{id}/raw/{part}", get(pages::raw))
        .route("/jobs/bulk", post(actions::bulk))
        .route("/jobs/bulk/{run}", get(pages::bulk_run))
        .route("/errors/{action}", post(actions::group_action))
        .route("/queues/{name}/{action}", post(actions::queue_action))
        .route("/schedules/{name}/{action}", post(actions::schedule_action))
        .layer(axum::middleware::from_fn(security_headers))
}

/// Whether `path` is the dashboard's (not the API's, health's or metrics').
pub fn owns(path: &str) -> bool {
    !(path.starts_with("/v1/")
        || path == "/v1"
        || matches!(path, "/healthz" | "/readyz" | "/metrics"))
}

async fn security_headers(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let is_asset = request.uri().path().starts_with("/assets/");
    let mut response = next.run(request).await;
    let h = response.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(CSP),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !is_asset {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    response
}

/// A rendered template as a response (a render failure is a 500 that names no data).
pub fn render(template: &impl askama::Template) -> Response {
    match template.render() {
        Ok(html) => Html(html).into_response(),
        Err(err) => {
            tracing::error!(error = %err, "a dashboard template failed to render");
            (
                StatusCode::INTERNAL_SERVER_ERROR,
                "the page failed to render",
            )
                .into_response()
        }
    }
}

/// A small page saying what went wrong, with `status`.
pub fn message_page(status: u16, title: &str, message: &str) -> Response {
    let page = pages::MessagePage {
        title: title.to_owned(),
        message: message.to_owned(),
    };
    let mut response = render(&page);
    *response.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::BAD_REQUEST);
    response
}

/// A store error as a page (unavailable: 503; not found: 404; else 500 without details).
/// `store_problem` logs what needs logging, as for the API.
pub fn store_error_page(err: &rota_store::StoreError) -> Response {
    let problem = crate::error::store_problem(err);
    message_page(problem.status, &problem.title, &problem.detail)
}
