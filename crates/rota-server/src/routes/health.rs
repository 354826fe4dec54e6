//! Liveness, readiness and the doctor.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use rota_api::{CheckView, DoctorReport, ReadyReport, Severity};
use rota_store::StoreHealthParams;

use crate::diagnostics::finding_view;
use crate::error::ApiError;
use crate::extract::ApiJson;
use crate::state::AppState;

/// The process is alive (no dependency is checked).
#[utoipa::path(get, path = "/healthz", tag = "health", responses((status = 200, description = "alive")))]
pub async fn healthz() -> Response {
    axum::Json(serde_json::json!({"status": "ok"})).into_response()
}

/// Ready to serve: the store answers, its schema is current, the engine services run. The
/// doctor's warnings (from the shared snapshot, at most a second or two old) are listed but
/// do not fail readiness. 503 when not ready.
#[utoipa::path(get, path = "/readyz", tag = "health", responses((status = 200, body = ReadyReport), (status = 503, body = ReadyReport)))]
pub async fn readyz(State(state): State<AppState>) -> Response {
    let mut checks = Vec::new();
    let store = state.store.store_health(StoreHealthParams::default()).await;
    checks.push(CheckView {
        name: "store".into(),
        ok: store.is_ok(),
        detail: match &store {
            Ok(_) => "reachable".into(),
            Err(err) => err.to_string(),
        },
    });
    if let Ok(h) = &store {
        checks.push(CheckView {
            name: "schema".into(),
            ok: h.schema_version == h.schema_expected,
            detail: format!(
                "database {}, binary {}",
                h.schema_version, h.schema_expected
            ),
        });
    }
    let (running, total) = state.services_running();
    checks.push(CheckView {
        name: "engine".into(),
        ok: total > 0 && running == total,
        detail: format!("{running} of {total} services running"),
    });
    let warnings = match (&store, state.diagnostics.snapshot().await) {
        (Ok(_), Ok(snapshot)) => snapshot
            .findings
            .iter()
            .cloned()
            .map(finding_view)
            .filter(|f| f.severity != Severity::Ok)
            .collect(),
        _ => vec![],
    };
    let ready = checks.iter().all(|c| c.ok);
    let status = if ready {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        axum::Json(ReadyReport {
            ready,
            checks,
            warnings,
        }),
    )
        .into_response()
}

/// Every doctor check, run now, with the fix for what needs action (an operator asking
/// gets a fresh answer, which also renews the snapshot probes and scrapes read).
#[utoipa::path(get, path = "/v1/doctor", tag = "health", responses((status = 200, body = DoctorReport)))]
pub async fn doctor(State(state): State<AppState>) -> Result<ApiJson<DoctorReport>, ApiError> {
    Ok(ApiJson(state.diagnostics.refresh().await?.doctor_report()))
}
