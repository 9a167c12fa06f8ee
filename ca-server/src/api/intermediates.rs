//! The issuing intermediates: `GET /api/v1/intermediates` (public: every intermediate but one
//! still being prepared, with its state, so relying parties, nodes and auditors learn the next
//! one before it issues) and the rotation steps for administrators.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use bsn_api::ca::{ActivateIntermediate, AdoptIntermediate, Intermediate, Items};
use identity::CaRole;
use identity::logleaf::IntermediateStep;

use crate::app::{AppState, now};
use crate::auth::Caller;
use crate::db::intermediates::IntermediateRow;
use crate::intermediates::{Rotation, RotationError};
use crate::problem::{ApiError, Json};

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/intermediates", get(list).post(next))
        .route("/api/v1/intermediates/{number}/publish", post(publish))
        .route("/api/v1/intermediates/{number}/activate", post(activate))
        .route("/api/v1/intermediates/{number}/retire", post(retire))
        .route("/api/v1/intermediates/{number}/certificate", post(adopt))
}

impl From<RotationError> for ApiError {
    fn from(e: RotationError) -> Self {
        match e {
            RotationError::Refused(m) => ApiError::RotationRefused(m),
            RotationError::Unknown(what, n) => ApiError::NotFound(format!("no {what} number {n}")),
            RotationError::Internal(e) => ApiError::Internal(e),
        }
    }
}

fn view(s: &AppState, r: &IntermediateRow) -> Intermediate {
    let (not_before, not_after) = x509_parser::parse_x509_certificate(&r.der)
        .map(|(_, c)| (c.validity().not_before.timestamp(), c.validity().not_after.timestamp()))
        .unwrap_or((0, 0));
    let crl_published = matches!(r.state.as_str(), "published" | "active" | "retiring");
    let made = !r.der.is_empty();
    Intermediate {
        number: r.number,
        state: r.state.clone(),
        certificate: if made {
            crate::pki::pem("CERTIFICATE", &r.der)
        } else {
            String::new()
        },
        csr: r.csr.clone(),
        sha256: if made {
            crate::pki::sha256_hex(&r.der)
        } else {
            String::new()
        },
        not_before,
        not_after,
        crl_url: crl_published.then(|| crate::pki::issuing_crl_url(&s.keys.public_url, r.number)),
        changed_at: r.changed_at,
    }
}

fn rotation(s: &AppState) -> Rotation<'_> {
    Rotation {
        db: &s.db,
        log: &s.log,
        keys: &s.keys,
        feed: &s.feed_wakeup,
    }
}

fn number(text: &str) -> Result<i64, ApiError> {
    text.parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::InvalidField(format!("'{text}' is not an intermediate's number")))
}

/// Every intermediate but one still being made (`requested`, `next`): public.
async fn list(State(s): State<Arc<AppState>>) -> Result<axum::Json<Items<Intermediate>>, ApiError> {
    let rows = crate::db::intermediates::all(&mut *s.db.acquire().await?).await?;
    Ok(axum::Json(Items {
        items: rows
            .iter()
            .filter(|r| !matches!(r.state.as_str(), "requested" | "next"))
            .map(|r| view(&s, r))
            .collect(),
    }))
}

/// Makes the next intermediate (administrators).
async fn next(
    State(s): State<Arc<AppState>>,
    caller: Caller,
) -> Result<(StatusCode, axum::Json<Intermediate>), ApiError> {
    caller.require_any(&[CaRole::Admin])?;
    let row = rotation(&s).next(now()).await?;
    Ok((StatusCode::CREATED, axum::Json(view(&s, &row))))
}

async fn step(
    s: &AppState,
    caller: &Caller,
    text: &str,
    step: IntermediateStep,
    force: bool,
) -> Result<axum::Json<Intermediate>, ApiError> {
    caller.require_any(&[CaRole::Admin])?;
    let row = rotation(s)
        .step(step, number(text)?, caller.identity.id.as_str(), force, now())
        .await?;
    // This replica switches at once; the others within `intermediates::FOLLOW_EVERY`.
    s.issuers.reload(&s.db, &s.keys).await?;
    Ok(axum::Json(view(s, &row)))
}

/// Publishes a `next` intermediate (administrators).
async fn publish(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(n): Path<String>,
) -> Result<axum::Json<Intermediate>, ApiError> {
    step(&s, &caller, &n, IntermediateStep::Published, false).await
}

/// Switches issuance to a `published` intermediate (administrators), once the nodes that report
/// to the feed acknowledged its publication (or with `force`).
async fn activate(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(n): Path<String>,
    Json(body): Json<ActivateIntermediate>,
) -> Result<axum::Json<Intermediate>, ApiError> {
    step(&s, &caller, &n, IntermediateStep::Activated, body.force).await
}

/// Takes the certificate an offline root signed for a `requested` intermediate (administrators).
async fn adopt(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(n): Path<String>,
    Json(body): Json<AdoptIntermediate>,
) -> Result<axum::Json<Intermediate>, ApiError> {
    caller.require_any(&[CaRole::Admin])?;
    let row = rotation(&s).adopt(number(&n)?, &body.certificate, now()).await?;
    Ok(axum::Json(view(&s, &row)))
}

/// Retires a `retiring` intermediate whose certificates have all expired (administrators).
async fn retire(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(n): Path<String>,
) -> Result<axum::Json<Intermediate>, ApiError> {
    step(&s, &caller, &n, IntermediateStep::Retired, false).await
}
