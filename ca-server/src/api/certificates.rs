//! Certificate listing, lookup and revocation.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use bsn_api::ca::{Certificate, Page, RevokeRequest, Revoked};
use serde::Deserialize;

use super::identities::page_limit;
use super::normalize_serial;
use crate::app::{AppState, now, parse_rfc3339, rfc3339};
use crate::auth::Caller;
use crate::db::{CertFilter, CertRow};
use crate::pki::{Reason, pem};
use crate::problem::{ApiError, Json, Query};
use crate::revocation::{Authority, Revocations, RevokeError};

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/certificates", get(list))
        .route("/api/v1/certificates/{serial}", get(one))
        .route("/api/v1/certificates/{serial}/revoke", post(revoke))
}

pub(super) fn view(c: CertRow, now: i64) -> Certificate {
    let status = if c.revoked_at.is_some() {
        "revoked"
    } else if c.not_after <= now {
        "expired"
    } else {
        "valid"
    };
    Certificate {
        status: status.to_string(),
        not_before: rfc3339(c.not_before),
        not_after: rfc3339(c.not_after),
        issued_at: rfc3339(c.issued_at),
        revoked_at: c.revoked_at.map(rfc3339),
        certificate: c.der.as_deref().map(|d| pem("CERTIFICATE", d)),
        serial: c.serial,
        identity: c.identity_id,
        key_sha256: c.key_sha256,
        issued_via: c.issued_via,
        authorized_by: c.authorized_by,
        revocation_reason: c.revocation_reason,
        revoked_by: c.revoked_by,
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    identity: Option<String>,
    serial: Option<String>,
    status: Option<String>,
    expires_before: Option<String>,
    expires_after: Option<String>,
    after: Option<String>,
    limit: Option<i64>,
}

fn time_param(name: &str, v: Option<String>) -> Result<Option<i64>, ApiError> {
    v.map(|s| parse_rfc3339(&s).ok_or_else(|| ApiError::InvalidField(format!("{name} must be an RFC 3339 time"))))
        .transpose()
}

/// Administrators and auditors list any certificates; everyone else only their own.
async fn list(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<axum::Json<Page<Certificate>>, ApiError> {
    let identity = match (caller.reads_all_certificates(), q.identity) {
        (true, id) => id,
        (false, Some(id)) if id != caller.identity.id => {
            return Err(ApiError::Forbidden(
                "only administrators and auditors may list other identities' certificates".into(),
            ));
        }
        (false, _) => Some(caller.identity.id.clone()),
    };
    let status = q.status.unwrap_or_else(|| "any".into());
    if !["any", "valid", "revoked", "expired"].contains(&status.as_str()) {
        return Err(ApiError::InvalidField(
            "status must be one of: any, valid, revoked, expired".into(),
        ));
    }
    let serial = q
        .serial
        .map(|s| normalize_serial(&s).ok_or_else(|| ApiError::InvalidField("serial must be hex".into())))
        .transpose()?;
    let limit = page_limit(q.limit)?;
    let filter = CertFilter {
        identity,
        serial,
        status,
        expires_before: time_param("expires_before", q.expires_before)?,
        expires_after: time_param("expires_after", q.expires_after)?,
        after: q.after.unwrap_or_default(),
        limit,
    };
    let t = now().unix_timestamp();
    let rows = s.db.list_certificates(&filter, t).await?;
    let next_after = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.serial.clone()))
        .flatten();
    Ok(axum::Json(Page {
        items: rows.into_iter().map(|r| view(r, t)).collect(),
        next_after,
    }))
}

async fn one(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(serial): Path<String>,
) -> Result<axum::Json<Certificate>, ApiError> {
    let serial = normalize_serial(&serial).ok_or_else(|| ApiError::InvalidField("serial must be hex".into()))?;
    match s.db.certificate(&serial).await? {
        Some(c) if caller.reads_all_certificates() || c.identity_id == caller.identity.id => {
            Ok(axum::Json(view(c, now().unix_timestamp())))
        }
        _ => Err(ApiError::NotFound(format!("no certificate {serial} that you may see"))),
    }
}

/// The holder (with any of its valid certificates) or an administrator revokes a certificate.
async fn revoke(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(serial): Path<String>,
    Json(r): Json<RevokeRequest>,
) -> Result<axum::Json<Revoked>, ApiError> {
    let serial = normalize_serial(&serial).ok_or_else(|| ApiError::InvalidField("serial must be hex".into()))?;
    let reason = parse_reason(r.reason.as_deref())?;
    let by = if caller.is_admin() {
        Authority::Administrator(&caller.identity.id)
    } else {
        Authority::Holder(&caller.identity.id)
    };
    match revocations(&s).revoke(&serial, reason, by, now()).await {
        Ok(r) => Ok(axum::Json(revoked(&s, r))),
        Err(e @ RevokeError::NotYours(_)) => Err(ApiError::Forbidden(e.to_string())),
        Err(e) => Err(e.into()),
    }
}

/// An RFC 5280 reason by name (unspecified when absent).
pub(super) fn parse_reason(name: Option<&str>) -> Result<Reason, ApiError> {
    match name {
        None => Ok(Reason::Unspecified),
        Some(name) => Reason::parse(name).ok_or_else(|| {
            let names: Vec<&str> = Reason::ALL.iter().map(|(_, n)| *n).collect();
            ApiError::InvalidField(format!("reason '{name}' is not one of: {}", names.join(", ")))
        }),
    }
}

/// The revocation service over this replica's state.
pub(super) fn revocations(s: &AppState) -> Revocations<'_> {
    Revocations {
        db: &s.db,
        issuers: &s.issuers,
        keys: &s.keys,
        log: &s.log,
        membership: &s.membership,
        trust_domain: s.trust_domain.as_str(),
        feed: &s.feed_wakeup,
    }
}

/// The response to a revocation (and the metric).
pub(super) fn revoked(s: &AppState, r: crate::revocation::Revoked) -> Revoked {
    s.metrics.revocations.inc();
    Revoked {
        serial: r.serial,
        reason: r.reason.name().to_string(),
        revoked_at: rfc3339(r.revoked_at),
        crl_number: r.crl_number,
        receipt: r.receipt,
    }
}

impl From<RevokeError> for ApiError {
    fn from(e: RevokeError) -> Self {
        match e {
            e @ RevokeError::Unknown(_) => ApiError::NotFound(e.to_string()),
            e @ RevokeError::NotYours(_) => ApiError::Forbidden(e.to_string()),
            RevokeError::AlreadyRevoked => ApiError::AlreadyRevoked,
            RevokeError::Internal(e) => ApiError::Internal(e),
        }
    }
}
