//! The CA's Ed25519 signing keys: `GET /api/v1/keys/{purpose}` (public: every key with its state
//! and, for the log, its verifier key and handover checkpoint, so auditors follow a handover)
//! and the handover steps for administrators.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post};
use bsn_api::ca::{Items, SigningKey};
use identity::CaRole;
use identity::logleaf::KeyPurpose;

use crate::app::{AppState, now};
use crate::auth::Caller;
use crate::db::keys::KeyRow;
use crate::handover::{Handover, HandoverError};
use crate::problem::ApiError;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/keys/{purpose}", get(list).post(begin))
        .route("/api/v1/keys/{purpose}/{number}/finish", post(finish))
}

impl From<HandoverError> for ApiError {
    fn from(e: HandoverError) -> Self {
        match e {
            HandoverError::Refused(m) => ApiError::RotationRefused(m),
            HandoverError::Unknown(purpose, n) => ApiError::NotFound(format!("no {purpose} key number {n}")),
            HandoverError::Internal(e) => ApiError::Internal(e),
        }
    }
}

fn purpose(text: &str) -> Result<KeyPurpose, ApiError> {
    KeyPurpose::parse(text).ok_or_else(|| {
        ApiError::NotFound(format!(
            "no key purpose '{text}': the CA's keys are `log` and `membership`"
        ))
    })
}

fn view(s: &AppState, r: &KeyRow) -> SigningKey {
    let vkey = (r.purpose == "log")
        .then(|| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(&r.public_key)
                .ok()
                .and_then(|b| <[u8; 32]>::try_from(b).ok())
                .map(|k| crate::log::vkey_of(s.log.origin(), &k))
        })
        .flatten();
    SigningKey {
        purpose: r.purpose.clone(),
        number: r.number,
        state: r.state.clone(),
        public_key: r.public_key.clone(),
        vkey,
        handover: (r.purpose == "membership")
            .then(|| {
                r.handover_checkpoint
                    .as_deref()
                    .and_then(|h| serde_json::from_str(h).ok())
            })
            .flatten(),
        handover_checkpoint: r.handover_checkpoint.clone().filter(|_| r.purpose == "log"),
        changed_at: r.changed_at,
    }
}

fn handover(s: &AppState) -> Handover<'_> {
    Handover {
        db: &s.db,
        log: &s.log,
        passphrase: &s.keys.passphrase,
        token: s.keys.token.as_ref(),
        membership: &s.membership,
        feed: &s.feed_wakeup,
    }
}

/// Every key of a purpose, by number (public).
async fn list(
    State(s): State<Arc<AppState>>,
    Path(p): Path<String>,
) -> Result<axum::Json<Items<SigningKey>>, ApiError> {
    let p = purpose(&p)?;
    let rows = crate::db::keys::all(&mut *s.db.acquire().await?, p.name()).await?;
    Ok(axum::Json(Items {
        items: rows.iter().map(|r| view(&s, r)).collect(),
    }))
}

/// Begins a handover: the next key, incoming (administrators).
async fn begin(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(p): Path<String>,
) -> Result<(StatusCode, axum::Json<SigningKey>), ApiError> {
    caller.require_any(&[CaRole::Admin])?;
    let row = handover(&s)
        .begin(purpose(&p)?, caller.identity.id.as_str(), now())
        .await?;
    Ok((StatusCode::CREATED, axum::Json(view(&s, &row))))
}

/// Finishes a handover: the incoming key takes over (administrators).
async fn finish(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path((p, n)): Path<(String, String)>,
) -> Result<axum::Json<SigningKey>, ApiError> {
    caller.require_any(&[CaRole::Admin])?;
    let p = purpose(&p)?;
    let number = n
        .parse::<i64>()
        .ok()
        .filter(|n| *n > 0)
        .ok_or_else(|| ApiError::InvalidField(format!("'{n}' is not a key's number")))?;
    let row = handover(&s)
        .finish(p, number, caller.identity.id.as_str(), now())
        .await?;
    Ok(axum::Json(view(&s, &row)))
}
