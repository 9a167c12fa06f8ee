//! The service's one error type and its RFC 9457 `application/problem+json` rendering.
//!
//! Every `type` is `urn:bsn:problem:<slug>`; the slugs are part of the API and never change.

use axum::extract::rejection::{JsonRejection, QueryRejection};
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use bsn_api::problem::Problem;
use serde::de::DeserializeOwned;

/// Everything an API call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// The body or query is not what the endpoint takes (syntax, unknown or missing fields).
    #[error("{0}")]
    InvalidRequest(String),
    /// A field has a value outside its rules (id syntax, unknown role, bad reason...).
    #[error("{0}")]
    InvalidField(String),
    /// The CSR is malformed.
    #[error("{0}")]
    InvalidCsr(String),
    /// The CSR's self-signature does not verify.
    #[error("the CSR signature does not verify with the CSR's public key")]
    CsrSignature,
    /// The key type, size or point is not accepted.
    #[error("{0}")]
    UnsupportedKey(String),
    /// Unknown identity or wrong secret (deliberately not told apart).
    #[error("unknown identity or wrong enrollment secret")]
    InvalidCredentials,
    /// The enrollment secret expired.
    #[error("the enrollment secret has expired; ask your registrar for a new one")]
    SecretExpired,
    /// The enrollment secret has no uses left.
    #[error("the enrollment secret has been used up; ask your registrar for a new one")]
    SecretUsedUp,
    /// The call needs a client certificate and none was presented.
    #[error("this call needs a client certificate issued by this CA (mTLS)")]
    ClientCertRequired,
    /// The client certificate is not one this CA issued and recorded.
    #[error("the client certificate is not known to this CA")]
    CertificateUnknown,
    /// The client certificate (or the one being renewed) is revoked.
    #[error("the client certificate has been revoked")]
    CertificateRevoked,
    /// The client certificate has expired.
    #[error("the client certificate has expired; enroll again")]
    CertificateExpired,
    /// The identity is disabled.
    #[error("the identity is disabled")]
    IdentityDisabled,
    /// Authenticated, but not allowed to do this.
    #[error("{0}")]
    Forbidden(String),
    /// No such resource.
    #[error("{0}")]
    NotFound(String),
    /// The identity id is taken.
    #[error("an identity with this id already exists")]
    IdentityExists,
    /// A portal account holds this id (in any state): it is reserved for that account.
    #[error(
        "a portal account holds the id '{0}'; decide its registration in the portal's administration, or choose another id"
    )]
    IdReserved(String),
    /// The identity's record changed while the request was handled; retrying will work.
    #[error("the identity's record changed while the certificate was being issued; retry")]
    IdentityChanged,
    /// The certificate was revoked before.
    #[error("the certificate is already revoked")]
    AlreadyRevoked,
    /// The change conflicts with the current state (exists already, already a member...).
    #[error("{0}")]
    Conflict(String),
    /// A rotation step that does not fit the intermediates' current state.
    #[error("{0}")]
    RotationRefused(String),
    /// No plan of this name is on offer.
    #[error("{0}")]
    UnknownPlan(String),
    /// The plan is assigned by administrators only.
    #[error("{0}")]
    PlanNotOpen(String),
    /// No node in a city fits the subchain's plan (which city, what is missing).
    #[error("{0}")]
    NoPlacement(String),
    /// A usage report not newer than the last one taken from its node.
    #[error("{0}")]
    ReplayedReport(String),
    /// The portal enrollment challenge is unknown, used, expired, or its signature is wrong.
    #[error("{0}")]
    InvalidProof(String),
    /// The challenge was used or expired before the certificate was stored.
    #[error("the enrollment challenge was used or has expired; start again")]
    InvalidChallenge,
    /// Signed in with a wrong id or password (deliberately not told apart).
    #[error("wrong identity id or password")]
    BadLogin,
    /// Too many sign-in attempts; retry after the given seconds.
    #[error("too many sign-in attempts; try again in {0} seconds")]
    TooManyAttempts(u64),
    /// Too many registrations or failed enrollments from this source; retry after the seconds.
    #[error("too many {0} from your address; try again in {1} seconds")]
    SlowDown(&'static str, u64),
    /// The portal session is missing or expired.
    #[error("sign in first (your session is missing or has expired)")]
    SessionRequired,
    /// A state-changing portal request without the session's CSRF token or from another origin.
    #[error("{0}")]
    CsrfRejected(String),
    /// A feed cursor the feed never handed out (ahead of it, or malformed).
    #[error("{0}")]
    InvalidCursor(String),
    /// The body is larger than the endpoint accepts.
    #[error("the request body is too large")]
    PayloadTooLarge,
    /// The body is not JSON.
    #[error("the request body must be JSON (Content-Type: application/json)")]
    UnsupportedMediaType,
    /// Too much expensive work is queued.
    #[error("the server is busy; retry shortly")]
    Busy,
    /// A failure that is not the client's; details go to the log, not the client.
    #[error("internal error")]
    Internal(#[from] anyhow::Error),
}

impl ApiError {
    /// HTTP status, stable slug and title.
    pub fn parts(&self) -> (StatusCode, &'static str, &'static str) {
        use StatusCode as S;
        match self {
            Self::InvalidRequest(_) => (S::BAD_REQUEST, "invalid-request", "Invalid request"),
            Self::InvalidField(_) => (S::BAD_REQUEST, "invalid-field", "Invalid field value"),
            Self::InvalidCsr(_) => (S::BAD_REQUEST, "invalid-csr", "Malformed certificate signing request"),
            Self::CsrSignature => (S::BAD_REQUEST, "csr-signature-invalid", "CSR signature does not verify"),
            Self::UnsupportedKey(_) => (S::BAD_REQUEST, "unsupported-key", "Unsupported or invalid public key"),
            Self::InvalidCredentials => (S::UNAUTHORIZED, "invalid-credentials", "Invalid enrollment credentials"),
            Self::SecretExpired => (S::UNAUTHORIZED, "secret-expired", "Enrollment secret expired"),
            Self::SecretUsedUp => (S::UNAUTHORIZED, "secret-used-up", "Enrollment secret used up"),
            Self::ClientCertRequired => (
                S::UNAUTHORIZED,
                "client-certificate-required",
                "Client certificate required",
            ),
            Self::CertificateUnknown => (S::UNAUTHORIZED, "certificate-unknown", "Unknown client certificate"),
            Self::CertificateRevoked => (S::UNAUTHORIZED, "certificate-revoked", "Certificate revoked"),
            Self::CertificateExpired => (S::UNAUTHORIZED, "certificate-expired", "Certificate expired"),
            Self::IdentityDisabled => (S::FORBIDDEN, "identity-disabled", "Identity disabled"),
            Self::Forbidden(_) => (S::FORBIDDEN, "forbidden", "Not allowed"),
            Self::NotFound(_) => (S::NOT_FOUND, "not-found", "Not found"),
            Self::IdentityExists => (S::CONFLICT, "identity-exists", "Identity already exists"),
            Self::IdReserved(_) => (S::CONFLICT, "id-reserved", "Id held by a portal account"),
            Self::AlreadyRevoked => (S::CONFLICT, "already-revoked", "Certificate already revoked"),
            Self::Conflict(_) => (S::CONFLICT, "conflict", "Conflicts with the current state"),
            Self::RotationRefused(_) => (S::CONFLICT, "rotation-refused", "Rotation step refused"),
            Self::UnknownPlan(_) => (S::BAD_REQUEST, "unknown-plan", "No such plan"),
            Self::PlanNotOpen(_) => (S::FORBIDDEN, "plan-not-open", "Plan assigned by administrators only"),
            Self::NoPlacement(_) => (S::CONFLICT, "no-placement", "Nothing fits the plan"),
            Self::ReplayedReport(_) => (S::CONFLICT, "replayed-report", "Usage report already taken"),
            Self::InvalidCursor(_) => (S::BAD_REQUEST, "invalid-cursor", "Invalid feed cursor"),
            Self::InvalidProof(_) => (S::BAD_REQUEST, "invalid-proof", "Proof of possession failed"),
            Self::InvalidChallenge => (S::CONFLICT, "invalid-challenge", "Enrollment challenge used or expired"),
            Self::BadLogin => (S::UNAUTHORIZED, "bad-login", "Sign-in failed"),
            Self::TooManyAttempts(_) | Self::SlowDown(..) => {
                (S::TOO_MANY_REQUESTS, "too-many-attempts", "Too many attempts")
            }
            Self::SessionRequired => (S::UNAUTHORIZED, "session-required", "Sign-in required"),
            Self::CsrfRejected(_) => (S::FORBIDDEN, "csrf-rejected", "Cross-site request refused"),
            Self::IdentityChanged => (S::CONFLICT, "identity-changed", "Identity changed during the request"),
            Self::PayloadTooLarge => (S::PAYLOAD_TOO_LARGE, "payload-too-large", "Request body too large"),
            Self::UnsupportedMediaType => (
                S::UNSUPPORTED_MEDIA_TYPE,
                "unsupported-media-type",
                "JSON body required",
            ),
            Self::Busy => (S::SERVICE_UNAVAILABLE, "busy", "Server busy"),
            Self::Internal(_) => (S::INTERNAL_SERVER_ERROR, "internal", "Internal error"),
        }
    }
}

/// Renders a problem document.
pub fn problem(status: StatusCode, slug: &str, title: &str, detail: &str) -> Response {
    Problem::new(status.as_u16(), slug, title, detail).into_response()
}

/// Whether `e` is the database pool's wait running out: every connection (on SQLite the one
/// writer) stayed busy for the pool's whole wait, an overload the client may retry, not a fault.
fn pool_timed_out(e: &anyhow::Error) -> bool {
    e.chain()
        .any(|c| matches!(c.downcast_ref::<sqlx::Error>(), Some(sqlx::Error::PoolTimedOut)))
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let this = match self {
            Self::Internal(e) if pool_timed_out(&e) => {
                tracing::warn!("the database stayed busy past the pool's wait: answered 503");
                Self::Busy
            }
            other => other,
        };
        let (status, slug, title) = this.parts();
        if let Self::Internal(e) = &this {
            tracing::error!(error = format!("{e:#}"), "internal error");
        }
        let retry_after = match this {
            Self::TooManyAttempts(secs) | Self::SlowDown(_, secs) => Some(secs),
            _ => None,
        };
        Problem::new(status.as_u16(), slug, title, this.to_string()).into_response_with_retry(retry_after)
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(e.into())
    }
}

impl From<crate::secrets::Busy> for ApiError {
    fn from(_: crate::secrets::Busy) -> Self {
        Self::Busy
    }
}

/// `axum::Json` whose rejections are problem documents.
pub struct Json<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequest<S> for Json<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        match axum::Json::<T>::from_request(req, state).await {
            Ok(axum::Json(v)) => Ok(Json(v)),
            Err(JsonRejection::MissingJsonContentType(_)) => Err(ApiError::UnsupportedMediaType),
            Err(JsonRejection::BytesRejection(r)) if r.status() == StatusCode::PAYLOAD_TOO_LARGE => {
                Err(ApiError::PayloadTooLarge)
            }
            Err(e) => Err(ApiError::InvalidRequest(e.body_text())),
        }
    }
}

/// `axum::extract::Query` whose rejections are problem documents.
pub struct Query<T>(pub T);

impl<S: Send + Sync, T: DeserializeOwned> FromRequestParts<S> for Query<T> {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut axum::http::request::Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Query::<T>::from_request_parts(parts, state)
            .await
            .map(|q| Query(q.0))
            .map_err(|e: QueryRejection| ApiError::InvalidRequest(e.body_text()))
    }
}
