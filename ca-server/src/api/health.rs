//! Liveness and readiness.

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::StatusCode;
use axum::routing::get;

use identity::CaRole;

use crate::app::AppState;
use crate::auth::Caller;
use crate::problem::ApiError;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/healthz", get(|| async { "ok\n" }))
        .route("/readyz", get(ready))
        .route("/metrics", get(metrics))
        .route("/api/v1/openapi.json", get(openapi))
}

/// Ready when the database answers and the issuing key signs (a token may be gone).
async fn ready(State(s): State<Arc<AppState>>) -> (StatusCode, &'static str) {
    match s.db.meta("trust_domain").await {
        Ok(Some(_)) => {}
        _ => return (StatusCode::SERVICE_UNAVAILABLE, "database unavailable\n"),
    }
    let state = s.clone();
    let ca = state.ca();
    match tokio::task::spawn_blocking(move || ca.signer_works()).await {
        Ok(true) => (StatusCode::OK, "ready\n"),
        _ => (
            StatusCode::SERVICE_UNAVAILABLE,
            "the issuing key does not sign (is its token present?)\n",
        ),
    }
}

/// Prometheus text exposition: for administrators and auditors (mTLS or a portal session)
/// unless `metrics_access = "public"`.
async fn metrics(
    State(s): State<Arc<AppState>>,
    caller: Result<Caller, ApiError>,
) -> Result<([(axum::http::HeaderName, &'static str); 1], String), ApiError> {
    if !s.metrics_public {
        caller?.require_any(&[CaRole::Admin, CaRole::Auditor])?;
    }
    let root_crl = match crate::serve::root_crl_next_update(&s.root_crl) {
        Some(t) => format!(
            "# HELP bsn_ca_root_crl_next_update_seconds When the root's published CRL expires (Unix seconds); \
             relying parties that check every CRL of the chain refuse all clients after it: re-sign with \
             `ca-server root crl` before.\n# TYPE bsn_ca_root_crl_next_update_seconds gauge\n\
             bsn_ca_root_crl_next_update_seconds {t}\n"
        ),
        None => String::new(),
    };
    Ok((
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        s.metrics.render() + &s.connections.render("bsn_ca_") + &root_crl,
    ))
}

/// The OpenAPI document describing this API.
pub(super) const OPENAPI: &str = include_str!("openapi.json");

async fn openapi() -> ([(axum::http::HeaderName, &'static str); 1], &'static str) {
    ([(axum::http::header::CONTENT_TYPE, "application/json")], OPENAPI)
}
