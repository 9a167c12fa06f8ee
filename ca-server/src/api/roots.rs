//! The roots: `GET /api/v1/roots` (public: every root the CA has had, with its state and
//! cross-certificate, so relying parties, nodes and auditors learn the next root before anything
//! is certified under it) and the rotation steps for administrators.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use bsn_api::ca::{AddRoot, InstallRootCrl, Items, Root};
use identity::CaRole;
use identity::logleaf::RootStep;

use crate::app::{AppState, now};
use crate::auth::Caller;
use crate::db::roots::RootRow;
use crate::problem::{ApiError, Json};
use crate::roots::{GivenRoot, RootRotation};

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/roots", get(list).post(add))
        .route("/api/v1/roots/{number}/activate", post(activate))
        .route("/api/v1/roots/{number}/withdraw", post(withdraw))
        .route("/api/v1/roots/{number}/crl", post(install_crl))
}

fn view(s: &AppState, r: &RootRow) -> Root {
    let (not_before, not_after) = x509_parser::parse_x509_certificate(&r.der)
        .map(|(_, c)| (c.validity().not_before.timestamp(), c.validity().not_after.timestamp()))
        .unwrap_or((0, 0));
    Root {
        number: r.number,
        state: r.state.clone(),
        certificate: crate::pki::pem("CERTIFICATE", &r.der),
        cross: r.cross.as_ref().map(|c| crate::pki::pem("CERTIFICATE", c)),
        sha256: crate::pki::sha256_hex(&r.der),
        not_before,
        not_after,
        crl_url: r.trusted().then(|| {
            crate::pki::numbered_root_crl_url(&s.keys.public_url, u32::try_from(r.number).unwrap_or(u32::MAX))
        }),
        changed_at: r.changed_at,
    }
}

fn rotation(s: &AppState) -> RootRotation<'_> {
    RootRotation {
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
        .ok_or_else(|| ApiError::InvalidField(format!("'{text}' is not a root's number")))
}

/// Every root: public.
async fn list(State(s): State<Arc<AppState>>) -> Result<axum::Json<Items<Root>>, ApiError> {
    let rows = crate::db::roots::all(&mut *s.db.acquire().await?).await?;
    Ok(axum::Json(Items {
        items: rows.iter().map(|r| view(&s, r)).collect(),
    }))
}

/// Publishes the next root (administrators): made here, or given by the offline root.
async fn add(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<AddRoot>,
) -> Result<(StatusCode, axum::Json<Root>), ApiError> {
    caller.require_any(&[CaRole::Admin])?;
    let given = match (body.certificate, body.cross, body.crl) {
        (None, None, None) => None,
        (Some(certificate), Some(cross), Some(crl)) => Some(GivenRoot {
            certificate,
            cross,
            crl,
        }),
        _ => {
            return Err(ApiError::InvalidField(
                "give all of certificate, cross and crl (what `ca-server root rotate` made), or none \
                 (the CA makes the root with the current root's key)"
                    .into(),
            ));
        }
    };
    let row = rotation(&s).add(given, caller.identity.id.as_str(), now()).await?;
    s.issuers.reload(&s.db, &s.keys).await?;
    Ok((StatusCode::CREATED, axum::Json(view(&s, &row))))
}

async fn step(s: &AppState, caller: &Caller, text: &str, step: RootStep) -> Result<axum::Json<Root>, ApiError> {
    caller.require_any(&[CaRole::Admin])?;
    let row = rotation(s)
        .step(step, number(text)?, caller.identity.id.as_str(), now())
        .await?;
    // This replica switches at once; the others within `intermediates::FOLLOW_EVERY`.
    s.issuers.reload(&s.db, &s.keys).await?;
    Ok(axum::Json(view(s, &row)))
}

/// Makes a `published` root the one that certifies the next intermediates (administrators).
async fn activate(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(n): Path<String>,
) -> Result<axum::Json<Root>, ApiError> {
    step(&s, &caller, &n, RootStep::Activated).await
}

/// Withdraws a `retiring` root whose intermediates have all retired (administrators).
async fn withdraw(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(n): Path<String>,
) -> Result<axum::Json<Root>, ApiError> {
    step(&s, &caller, &n, RootStep::Withdrawn).await
}

/// Installs a later root's CRL signed offline (administrators).
async fn install_crl(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(n): Path<String>,
    Json(body): Json<InstallRootCrl>,
) -> Result<axum::Json<Root>, ApiError> {
    caller.require_any(&[CaRole::Admin])?;
    let row = rotation(&s).install_crl(number(&n)?, &body.crl, now()).await?;
    s.issuers.reload(&s.db, &s.keys).await?;
    Ok(axum::Json(view(&s, &row)))
}
