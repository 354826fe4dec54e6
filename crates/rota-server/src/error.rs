//! One error type for every handler, rendered as `application/problem+json`.

use axum::extract::rejection::{JsonRejection, PathRejection, QueryRejection};
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use rota_api::Problem;
use rota_store::{ErrorKind, StoreError};

use rota_engine::LogThrottle;

/// An API error: a problem with a stable code. 5xx answers say "internal error" and log the
/// real cause; user-input errors are not logged.
#[derive(Debug, Clone)]
pub struct ApiError(pub Box<Problem>);

impl ApiError {
    /// 422 about `field`.
    pub fn invalid(field: &str, detail: impl Into<String>) -> Self {
        Self(Box::new(
            Problem::new(422, "invalid_field", "Invalid field", detail).with_field(field),
        ))
    }

    /// The same error about a field inside `parent` (`max` becomes `fetch.max`, in the
    /// field and in the detail that names it).
    pub fn under(mut self, parent: &str) -> Self {
        if let Some(field) = self.0.field.take() {
            let nested = format!("{parent}.{field}");
            if let Some(rest) = self.0.detail.strip_prefix(&format!("{field}:")) {
                self.0.detail = format!("{nested}:{rest}");
            }
            self.0.field = Some(nested);
        }
        self
    }

    /// 404 for something that does not exist.
    pub fn not_found(code: &str, detail: impl Into<String>) -> Self {
        Self(Box::new(Problem::new(404, code, "Not found", detail)))
    }
}

impl From<Problem> for ApiError {
    fn from(problem: Problem) -> Self {
        Self(Box::new(problem))
    }
}

impl From<rota_core::ValidationError> for ApiError {
    fn from(err: rota_core::ValidationError) -> Self {
        Self::invalid(&err.field, err.to_string())
    }
}

/// The problem for a store error (also used for per-item errors in batch answers).
pub fn store_problem(err: &StoreError) -> Problem {
    match (err.kind(), err) {
        (_, StoreError::QueueNotDeclared { .. }) => Problem::new(
            404,
            "queue_not_declared",
            "Queue not declared",
            err.to_string(),
        )
        .with_field("queue"),
        (_, StoreError::Invalid(v)) => {
            Problem::new(422, "invalid_field", "Invalid field", err.to_string())
                .with_field(v.field.clone())
        }
        (_, StoreError::InvalidItem { index, error }) => {
            let field = format!("jobs[{index}].{}", error.field);
            Problem::new(
                422,
                "invalid_field",
                "Invalid field",
                format!("{field}: {}", error.message),
            )
            .with_field(field)
        }
        (_, StoreError::QueueFull { retry_after, .. }) => {
            Problem::new(429, "queue_full", "Queue full", err.to_string())
                .with_field("queue")
                .with_retry_after(retry_after.as_secs().max(1))
        }
        (ErrorKind::NotFound, _) => {
            Problem::new(404, "job_not_found", "Not found", err.to_string())
        }
        (ErrorKind::LeaseLost, _) => Problem::new(409, "lease_lost", "Lease lost", err.to_string()),
        (ErrorKind::Conflict, _) => Problem::new(409, "conflict", "Conflict", err.to_string()),
        (ErrorKind::Busy, _) => {
            Problem::new(503, "busy", "Busy", "the database is busy; retry shortly")
        }
        (ErrorKind::StorageFull, _) => {
            if let Some(held_back) = STORAGE_FULL_LOG.admit(std::time::Instant::now()) {
                tracing::error!(error = %err, held_back, "storage full (logged at most every 10 s; held_back: how many more since the last line)");
            }
            Problem::new(
                507,
                "storage_full",
                "Insufficient storage",
                "the disk holding the database is full, so this was not written (nothing already acknowledged is lost); retry once space is freed",
            )
            .with_retry_after(STORAGE_FULL_RETRY_AFTER_SECS)
        }
        (ErrorKind::Unavailable | ErrorKind::SchemaMismatch, _) => {
            if let Some(held_back) = UNAVAILABLE_LOG.admit(std::time::Instant::now()) {
                tracing::error!(error = %err, held_back, "store unavailable (logged at most every 10 s; held_back: how many more since the last line)");
            }
            Problem::new(
                503,
                "unavailable",
                "Unavailable",
                "the database is unavailable",
            )
        }
        _ => {
            tracing::error!(error = %err, "internal error");
            Problem::new(500, "internal", "Internal error", "internal error")
        }
    }
}

/// Requests refused because the database is unavailable, or its disk full, come in floods:
/// one log line per 10 s each.
static UNAVAILABLE_LOG: LogThrottle = LogThrottle::new(rota_engine::QUIET_PERIOD);
static STORAGE_FULL_LOG: LogThrottle = LogThrottle::new(rota_engine::QUIET_PERIOD);

/// What a client told "storage full" waits before trying again.
const STORAGE_FULL_RETRY_AFTER_SECS: u64 = 5;

impl From<StoreError> for ApiError {
    fn from(err: StoreError) -> Self {
        Self(Box::new(store_problem(&err)))
    }
}

impl From<JsonRejection> for ApiError {
    fn from(rejection: JsonRejection) -> Self {
        let status = rejection.status();
        let (code, title) = match status {
            StatusCode::PAYLOAD_TOO_LARGE => ("payload_too_large", "Payload too large"),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                ("unsupported_media_type", "Unsupported media type")
            }
            StatusCode::UNPROCESSABLE_ENTITY => ("invalid_body", "Invalid body"),
            _ => ("malformed_json", "Malformed JSON"),
        };
        let detail = match status {
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                "send the body as JSON with `content-type: application/json`".to_owned()
            }
            _ => rejection.body_text(),
        };
        let mut problem = Problem::new(status.as_u16(), code, title, detail);
        // serde names the path of a field it cannot read ("misfire: unknown variant ..."):
        // the problem names that field too, as for every other invalid input.
        if status == StatusCode::UNPROCESSABLE_ENTITY {
            let field = problem
                .detail
                .split_once("target type: ")
                .and_then(|(_, rest)| rest.split_once(": "))
                .map(|(path, _)| path)
                .filter(|path| !path.is_empty() && !path.contains(' ') && *path != ".");
            if let Some(field) = field {
                problem.field = Some(field.to_owned());
            }
        }
        Self(Box::new(problem))
    }
}

impl From<PathRejection> for ApiError {
    fn from(rejection: PathRejection) -> Self {
        Self::from(Problem::new(
            400,
            "invalid_path",
            "Invalid path",
            rejection.body_text(),
        ))
    }
}

impl From<QueryRejection> for ApiError {
    fn from(rejection: QueryRejection) -> Self {
        Self::from(Problem::new(
            400,
            "invalid_query",
            "Invalid query",
            rejection.body_text(),
        ))
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let status =
            StatusCode::from_u16(self.0.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let body = serde_json::to_vec(&*self.0).unwrap_or_default();
        let mut response = (
            status,
            [(header::CONTENT_TYPE, "application/problem+json")],
            body,
        )
            .into_response();
        if let Some(seconds) = self.0.retry_after {
            response
                .headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(seconds));
        }
        response
    }
}
