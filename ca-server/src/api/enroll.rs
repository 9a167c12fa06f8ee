//! Enrollment (CSR + one-time secret) and renewal (CSR over mTLS).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, State};
use axum::http::StatusCode;
use axum::routing::post;
use bsn_api::ca::{EnrollRequest, Issued, RenewRequest};
use identity::IdentityId;

use crate::app::{AppState, rfc3339};
use crate::auth::Presented;
use crate::commit::CommitError;
use crate::csr::{CsrError, check_csr_pem};
use crate::issuance::{Issuance, IssueError};
use crate::pki::pem;
use crate::problem::{ApiError, Json};
use crate::secrets::{Asker, Source};

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/enroll", post(enroll))
        .route("/api/v1/renew", post(renew))
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

impl From<IssueError> for ApiError {
    fn from(e: IssueError) -> Self {
        match e {
            IssueError::InvalidCredentials => ApiError::InvalidCredentials,
            IssueError::IdentityDisabled => ApiError::IdentityDisabled,
            IssueError::SecretExpired => ApiError::SecretExpired,
            IssueError::SecretUsedUp => ApiError::SecretUsedUp,
            IssueError::CertificateUnknown => ApiError::CertificateUnknown,
            IssueError::Commit(e) => e.into(),
            IssueError::Busy => ApiError::Busy,
            IssueError::Internal(e) => ApiError::Internal(e),
        }
    }
}

/// The issuance service over this replica's state.
pub(super) fn issuance(s: &AppState) -> Issuance<'_> {
    Issuance {
        ca: s.ca(),
        db: &s.db,
        committer: &s.committer,
        hasher: &s.hasher,
        identities: &s.identities,
        trust_domain: &s.trust_domain,
    }
}

/// The response to an issuance.
pub(super) fn issued(i: crate::issuance::Issued) -> (StatusCode, axum::Json<Issued>) {
    (
        StatusCode::CREATED,
        axum::Json(Issued {
            serial: i.serial,
            spiffe_id: i.spiffe_id.to_string(),
            not_before: rfc3339(i.not_before),
            not_after: rfc3339(i.not_after),
            certificate: pem("CERTIFICATE", &i.der),
            chain: i.chain.iter().map(|c| pem("CERTIFICATE", c)).collect(),
            receipt: Some(i.receipt),
        }),
    )
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
    let id = IdentityId::parse(&req.id).map_err(|e| ApiError::InvalidField(e.to_string()))?;
    let key = check_csr_pem(&req.csr)?;
    let who = Asker {
        source: &source,
        clean: s.demerits.clean(&source),
    };
    match issuance(&s).enroll(&id, req.secret, &key, who).await {
        Ok(i) => Ok(issued(i)),
        Err(e) => {
            if matches!(e, IssueError::InvalidCredentials) {
                s.enroll_limits.failed(&source);
                s.demerits.record(&source);
            }
            Err(e.into())
        }
    }
}

async fn renew(
    State(s): State<Arc<AppState>>,
    me: Presented,
    Json(req): Json<RenewRequest>,
) -> Result<(StatusCode, axum::Json<Issued>), ApiError> {
    let key = check_csr_pem(&req.csr)?;
    let i = issuance(&s).renew(&me.spiffe_id, &me.serial, &key).await?;
    Ok(issued(i))
}
