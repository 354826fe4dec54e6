//! The dashboard's static files, compiled into the binary: the vendored htmx (2.0.11,
//! from the npm registry, unmodified; its licence beside it), the dashboard's own script
//! and its style sheet. Cached for an hour: pages link them with the version in the query.

use axum::extract::Path;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};

/// htmx, pinned.
pub const HTMX: &str = include_str!("../../assets/htmx-2.0.11.min.js");
/// The dashboard's script: live frames, select-all, confirmations.
pub const SCRIPT: &str = include_str!("../../assets/dashboard.js");
/// The style sheet (light and dark).
pub const STYLE: &str = include_str!("../../assets/dashboard.css");

/// `GET /assets/{file}`.
pub async fn asset(Path(file): Path<String>) -> Response {
    let (body, kind) = match file.as_str() {
        "htmx-2.0.11.min.js" => (HTMX, "text/javascript; charset=utf-8"),
        "dashboard.js" => (SCRIPT, "text/javascript; charset=utf-8"),
        "dashboard.css" => (STYLE, "text/css; charset=utf-8"),
        _ => return (StatusCode::NOT_FOUND, "no such asset").into_response(),
    };
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        body,
    )
        .into_response()
}
