//! Enrollment (CSR + one-time secret) and renewal (CSR over mTLS).

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::routing::post;
use identity::{IdentityId, IdentityKind, SpiffeId};
use serde::{Deserialize, Serialize};

use crate::app::{AppState, now, rfc3339};
use crate::auth::Presented;
use crate::commit::{CommitError, Job, Precondition};
use crate::csr::{CsrError, check_csr_pem};
use crate::db::IdentityRow;
use crate::pki::{LeafSubject, pem};
use crate::problem::{ApiError, Json};
use crate::secrets::Source;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/enroll", post(enroll))
        .route("/api/v1/renew", post(renew))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollRequest {
    id: String,
    secret: String,
    csr: String,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RenewRequest {
    csr: String,
}

/// A newly issued certificate.
#[derive(Serialize)]
pub(super) struct Issued {
    serial: String,
    spiffe_id: String,
    not_before: String,
    not_after: String,
    /// The leaf, PEM.
    certificate: String,
    /// The issuing intermediate(s), PEM.
    chain: String,
    /// Where the issuance stands in the issuance log, with an inclusion proof and the signed
    /// checkpoint that covers it.
    receipt: Option<crate::log::Receipt>,
}

impl From<CsrError> for ApiError {
    fn from(e: CsrError) -> Self {
        match e {
            CsrError::Malformed(m) => ApiError::InvalidCsr(m),
            CsrError::BadSignature => ApiError::CsrSignature,
            e @ CsrError::WeakSignature(_) => ApiError::UnsupportedKey(e.to_string()),
            CsrError::UnsupportedKey(m) => ApiError::UnsupportedKey(m),
        }
    }
}

impl From<CommitError> for ApiError {
    fn from(e: CommitError) -> Self {
        match e {
            CommitError::SecretUsedUp => ApiError::SecretUsedUp,
            CommitError::ChallengeUsed => ApiError::InvalidChallenge,
            CommitError::Revoked => ApiError::CertificateRevoked,
            CommitError::Unknown => ApiError::CertificateUnknown,
            CommitError::Expired => ApiError::CertificateExpired,
            CommitError::Disabled => ApiError::IdentityDisabled,
            CommitError::Stale => ApiError::IdentityChanged,
            CommitError::Database(m) => ApiError::Internal(anyhow::anyhow!("issuance batch: {m}")),
            CommitError::Stopped => ApiError::Busy,
        }
    }
}

async fn enroll(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(req): Json<EnrollRequest>,
) -> Result<(StatusCode, axum::Json<Issued>), ApiError> {
    let source = Source::address(peer.ip());
    if let Err(wait) = s.enroll_limits.check(&source) {
        s.tarpit.hold().await;
        return Err(ApiError::SlowDown("failed enrollments", wait));
    }
    let id = IdentityId::parse(&req.id).map_err(|e| ApiError::InvalidField(format!("id: {e}")))?;
    let key = check_csr_pem(&req.csr)?;
    let ident = s.db.identity(id.as_str()).await?;
    let hash = ident.as_ref().and_then(|i| i.secret_hash.clone());
    let clean = s.demerits.clean(&source);
    if !s.hasher.verify(&source, clean, req.secret, hash.clone()).await? {
        s.enroll_limits.failed(&source);
        s.demerits.record(&source);
        return Err(ApiError::InvalidCredentials);
    }
    let (Some(ident), Some(hash)) = (ident, hash) else {
        return Err(ApiError::InvalidCredentials);
    };
    let t = now();
    if ident.status != "active" {
        return Err(ApiError::IdentityDisabled);
    }
    if ident.secret_expires_at.is_none_or(|e| e <= t.unix_timestamp()) {
        return Err(ApiError::SecretExpired);
    }
    if ident.enrollments_left <= 0 {
        return Err(ApiError::SecretUsedUp);
    }
    let precondition = Precondition::ConsumeSecret {
        secret_hash: hash,
        now: t.unix_timestamp(),
    };
    let authorized_by = format!("secret:{}", ident.registered_by);
    issue(&s, &ident, &key, "enroll", authorized_by, precondition).await
}

/// Renewal reads the holder's record from a short-lived cache and leaves every check that
/// depends on the database (certificate on record, unrevoked, unexpired, identity active and
/// unchanged) to the batch transaction that stores the new certificate.
async fn renew(
    State(s): State<Arc<AppState>>,
    me: Presented,
    Json(req): Json<RenewRequest>,
) -> Result<(StatusCode, axum::Json<Issued>), ApiError> {
    let key = check_csr_pem(&req.csr)?;
    let id = me.spiffe_id.id.as_str();
    let mut retried = false;
    loop {
        let ident = s.identities.get(&s.db, id).await?.ok_or(ApiError::CertificateUnknown)?;
        if ident.kind != me.spiffe_id.kind.as_str() {
            return Err(ApiError::CertificateUnknown);
        }
        if ident.status != "active" {
            return Err(ApiError::IdentityDisabled);
        }
        let sans = (crate::db::json(&ident.dns_names), crate::db::json(&ident.ip_addresses));
        let precondition = Precondition::Renewal {
            serial: me.serial.clone(),
            now: now().unix_timestamp(),
            sans,
        };
        match issue(&s, &ident, &key, "renew", format!("renew:{}", me.serial), precondition).await {
            Err(ApiError::IdentityChanged) if !retried => {
                s.identities.invalidate(id);
                retried = true;
            }
            other => return other,
        }
    }
}

/// Signs a leaf for `ident` and stores it; answers only once it is durable.
pub(super) async fn issue(
    s: &AppState,
    ident: &IdentityRow,
    key: &crate::csr::CheckedKey,
    via: &'static str,
    authorized_by: String,
    precondition: Precondition,
) -> Result<(StatusCode, axum::Json<Issued>), ApiError> {
    let kind: IdentityKind = ident
        .kind
        .parse()
        .map_err(|_| ApiError::Internal(anyhow::anyhow!("bad stored kind")))?;
    let spiffe_id = SpiffeId {
        trust_domain: s.trust_domain.clone(),
        kind,
        id: IdentityId::parse(&ident.id).map_err(|_| ApiError::Internal(anyhow::anyhow!("bad stored id")))?,
    };
    let ips: Vec<IpAddr> = ident.ip_addresses.iter().filter_map(|ip| ip.parse().ok()).collect();
    let validity = match kind {
        IdentityKind::Participant => s.ca.policy.participant_validity,
        IdentityKind::Node => s.ca.policy.node_validity,
    };
    let subject = LeafSubject {
        spiffe_id: &spiffe_id,
        dns_names: &ident.dns_names,
        ip_addresses: &ips,
        validity,
    };
    let t = now();
    let cert =
        s.ca.issue_leaf(&subject, key, t)
            .map_err(|e| ApiError::Internal(e.into()))?;
    let issued = Issued {
        serial: cert.serial_hex.clone(),
        spiffe_id: spiffe_id.to_string(),
        not_before: rfc3339(cert.not_before),
        not_after: rfc3339(cert.not_after),
        certificate: pem("CERTIFICATE", &cert.der),
        chain: s.ca.chain().iter().map(|c| pem("CERTIFICATE", c)).collect(),
        receipt: None,
    };
    let job = Job {
        identity: ident.id.clone(),
        cert,
        issued_via: via,
        authorized_by,
        issued_at: t.unix_timestamp(),
        precondition,
    };
    let mut issued = issued;
    issued.receipt = Some(s.committer.store(job).await?);
    tracing::info!(identity = %spiffe_id, serial = %issued.serial, via, "certificate issued");
    Ok((StatusCode::CREATED, axum::Json(issued)))
}
