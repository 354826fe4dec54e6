//! The `/v1` handlers, one module per resource. Each handler's `#[utoipa::path]` is both its
//! route and its OpenAPI entry.

pub mod health;
pub mod jobs;
pub mod queues;
pub mod schedules;
pub mod work;

use std::time::Duration;

use crate::error::ApiError;

/// Parses an optional humane duration parameter, capped at `max`.
pub(crate) fn wait_param(
    field: &str,
    raw: Option<&str>,
    max: Duration,
) -> Result<Duration, ApiError> {
    let Some(raw) = raw else {
        return Ok(Duration::ZERO);
    };
    let wait = rota_core::parse_duration_field(field, raw)?;
    if wait > max {
        return Err(ApiError::invalid(
            field,
            format!(
                "{field}: at most {} (got {raw})",
                rota_core::format_duration(max)
            ),
        ));
    }
    Ok(wait)
}

/// Parses a job id from a path or body, naming the field.
pub(crate) fn job_id(field: &str, raw: &str) -> Result<rota_core::JobId, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::invalid(field, format!("{field}: {raw:?} is not a job id (a UUID)")))
}
