//! Every request's text kept to `rota_core::text`'s rule: no NUL character reaches a store.
//! A NUL in a path, query or form value, or in JSON data, is refused (422, naming where); in
//! the prose of a worker's report (an error message, a backtrace, a progress message) it is
//! replaced, so the report is recorded. One gate for every route, the dashboard's included;
//! without it PostgreSQL answered 500 and a failure report with a NUL in it was lost.

use axum::body::{Body, Bytes};
use axum::extract::{FromRequest, Request, State};
use axum::http::header::CONTENT_TYPE;
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use rota_core::text::{clean_nul_in_request, json_may_hold_nul, nul_refused};

use crate::error::ApiError;
use crate::AppState;

/// Where a request body holds prose: the failure reports of `POST /v1/fail` and the message
/// of `POST /v1/jobs/{id}/progress` (`[]` stands for any index).
const PROSE: &[&str] = &["failures[].message", "failures[].backtrace", "message"];

/// The gate (a middleware).
pub async fn guard(State(state): State<AppState>, request: Request, next: Next) -> Response {
    if let Some(field) = nul_in_uri(request.uri()) {
        return refused(&field);
    }
    let kind = body_kind(&request);
    if kind == BodyKind::Other {
        return next.run(request).await;
    }
    let (parts, body) = request.into_parts();
    // Read as the extractors would (the body limit included), so that a body that cannot be
    // read gets the answer it got without the gate.
    let bytes = match Bytes::from_request(Request::from_parts(parts.clone(), body), &state).await {
        Ok(bytes) => bytes,
        // Over the limit (a body without a declared length): the limit's own problem.
        Err(rejection) if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE => {
            return StatusCode::PAYLOAD_TOO_LARGE.into_response()
        }
        Err(rejection) => {
            let (code, title) = match kind {
                BodyKind::Json => ("malformed_json", "Malformed JSON"),
                _ => ("invalid_body", "Invalid body"),
            };
            let problem = rota_api::Problem::new(
                rejection.status().as_u16(),
                code,
                title,
                rejection.body_text(),
            );
            return ApiError::from(problem).into_response();
        }
    };
    let bytes = match kind {
        BodyKind::Form => match nul_in_pairs(&bytes) {
            Some(field) => return refused(&field),
            None => bytes,
        },
        BodyKind::Json if json_may_hold_nul(&bytes) => match clean_json(&bytes) {
            Ok(cleaned) => cleaned,
            Err(response) => return *response,
        },
        _ => bytes,
    };
    next.run(Request::from_parts(parts, Body::from(bytes)))
        .await
}

#[derive(Debug, PartialEq, Eq)]
enum BodyKind {
    Json,
    Form,
    Other,
}

fn body_kind(request: &Request) -> BodyKind {
    let Some(content_type) = request
        .headers()
        .get(CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
    else {
        return BodyKind::Other;
    };
    let essence = content_type
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    if essence == "application/x-www-form-urlencoded" {
        BodyKind::Form
    } else if essence == "application/json" || essence.ends_with("+json") {
        BodyKind::Json
    } else {
        BodyKind::Other
    }
}

/// A JSON body with its prose scrubbed, or the refusal of its data. A body that does not
/// parse is passed on as it came, for the extractor's own error.
fn clean_json(bytes: &Bytes) -> Result<Bytes, Box<Response>> {
    let Ok(mut value) = serde_json::from_slice::<serde_json::Value>(bytes) else {
        return Ok(bytes.clone());
    };
    match clean_nul_in_request(&mut value, PROSE) {
        Ok(()) => Ok(Bytes::from(
            serde_json::to_vec(&value).expect("a JSON value serializes"),
        )),
        Err(err) => Err(Box::new(ApiError::from(err).into_response())),
    }
}

/// The parameter of the path or query that holds a NUL (`%00`), if any.
fn nul_in_uri(uri: &axum::http::Uri) -> Option<String> {
    if holds_nul(uri.path().as_bytes()) {
        return Some("path".to_owned());
    }
    uri.query().and_then(|q| nul_in_pairs(q.as_bytes()))
}

/// The name of the first `name=value` pair (a query or a form body) that holds `%00`.
fn nul_in_pairs(pairs: &[u8]) -> Option<String> {
    pairs
        .split(|&b| b == b'&')
        .find(|pair| holds_nul(pair))
        .map(|pair| {
            let name = pair.split(|&b| b == b'=').next().unwrap_or_default();
            String::from_utf8_lossy(name).into_owned()
        })
}

fn holds_nul(raw: &[u8]) -> bool {
    raw.windows(3).any(|w| w == b"%00") || raw.contains(&0)
}

fn refused(field: &str) -> Response {
    ApiError::from(nul_refused(field)).into_response()
}
