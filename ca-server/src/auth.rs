//! Who is calling: the mTLS client certificate, checked against the CA's own records on every
//! request (so a revocation is effective on the very next request, on every replica, whatever
//! the TLS session state); or, without a client certificate, a signed-in portal user (session
//! cookie, with the CSRF check on state-changing requests), as its identity.

use std::sync::Arc;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use identity::{CaRole, IdentityKind, IdentityStatus, SpiffeId};

use crate::app::AppState;
use crate::db::IdentityRow;
use crate::problem::ApiError;

/// The client certificate of the request's connection (its leaf, as the TLS handshake verified
/// it), if one was presented. Put on every request by the connection layer.
#[derive(Debug, Clone)]
pub struct ClientCert(pub Option<Arc<rustls_pki_types::CertificateDer<'static>>>);

/// Admits every connection that finished its handshake; node identities' connections (the
/// feed's followers) use the reserved capacity.
pub struct Admission;

impl bsn_transport::Admit for Admission {
    type Ext = ClientCert;
    fn admit(
        &self,
        _remote: std::net::SocketAddr,
        certs: Option<&[rustls_pki_types::CertificateDer<'static>]>,
    ) -> Option<bsn_transport::Admitted<ClientCert>> {
        let leaf = certs.and_then(|c| c.first()).cloned();
        let node = leaf
            .as_ref()
            .is_some_and(|l| identity::profile::check_leaf(l).is_ok_and(|i| i.spiffe_id.kind.is_network_node()));
        Some(bsn_transport::Admitted {
            class: if node {
                bsn_transport::Class::Reserved
            } else {
                bsn_transport::Class::Public
            },
            ext: ClientCert(leaf.map(Arc::new)),
            cut: None,
        })
    }
}

/// An authenticated caller.
#[derive(Debug, Clone)]
pub struct Caller {
    /// The caller's identity record.
    pub identity: IdentityRow,
    /// The identity named by the certificate.
    pub spiffe_id: SpiffeId,
    /// Serial of the certificate it presented (`session` for a portal user).
    pub serial: String,
}

impl Caller {
    /// Whether the caller is an administrator.
    pub fn is_admin(&self) -> bool {
        self.identity.has_role(CaRole::Admin)
    }

    /// Administrators and auditors may read every certificate record (auditors only read).
    pub fn reads_all_certificates(&self) -> bool {
        self.is_admin() || self.identity.has_role(CaRole::Auditor)
    }

    /// Fails unless the caller has one of `roles`.
    pub fn require_any(&self, roles: &[CaRole]) -> Result<(), ApiError> {
        if roles.iter().any(|r| self.identity.has_role(*r)) {
            Ok(())
        } else {
            Err(ApiError::Forbidden(format!(
                "this call needs one of the roles: {}",
                roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
            )))
        }
    }
}

impl FromRequestParts<Arc<AppState>> for Caller {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let leaf = parts.extensions.get::<ClientCert>().and_then(|c| c.0.clone());
        let Some(leaf) = leaf else {
            // No client certificate: a signed-in portal user acts as its identity.
            return session_caller(parts, state).await;
        };
        let info = identity::profile::check_leaf(&leaf).map_err(|_| ApiError::CertificateUnknown)?;
        if info.spiffe_id.trust_domain != state.trust_domain {
            return Err(ApiError::CertificateUnknown);
        }
        let (cert, identity) = state
            .db
            .cert_with_holder(&info.serial_hex)
            .await?
            .ok_or(ApiError::CertificateUnknown)?;
        if cert.der.as_deref() != Some(leaf.as_ref().as_ref()) || cert.identity_id != info.spiffe_id.id.as_str() {
            return Err(ApiError::CertificateUnknown);
        }
        if cert.revoked_at.is_some() {
            return Err(ApiError::CertificateRevoked);
        }
        if cert.not_after <= crate::app::now().unix_timestamp() {
            return Err(ApiError::CertificateExpired);
        }
        if identity.status != IdentityStatus::Active {
            return Err(ApiError::IdentityDisabled);
        }
        Ok(Caller {
            identity,
            spiffe_id: info.spiffe_id,
            serial: cert.serial,
        })
    }
}

/// The client certificate as the TLS handshake verified it (chain to our roots), read without
/// touching the database. Only for calls whose writing transaction re-checks the certificate and
/// its holder against the records (renewal).
#[derive(Debug, Clone)]
pub struct Presented {
    /// The identity the certificate names.
    pub spiffe_id: SpiffeId,
    /// Its serial.
    pub serial: String,
}

impl FromRequestParts<Arc<AppState>> for Presented {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &Arc<AppState>) -> Result<Self, ApiError> {
        let info = parts
            .extensions
            .get::<ClientCert>()
            .and_then(|c| c.0.as_ref().map(|leaf| identity::profile::check_leaf(leaf)))
            .ok_or(ApiError::ClientCertRequired)?
            .map_err(|_| ApiError::CertificateUnknown)?;
        if info.spiffe_id.trust_domain != state.trust_domain {
            return Err(ApiError::CertificateUnknown);
        }
        if info.not_after <= crate::app::now().unix_timestamp() {
            return Err(ApiError::CertificateExpired);
        }
        Ok(Presented {
            spiffe_id: info.spiffe_id,
            serial: info.serial_hex,
        })
    }
}

/// A portal session named by the request's cookie.
pub struct WebSession {
    /// The account's identity id.
    pub identity: String,
    /// The session's CSRF token.
    pub csrf: String,
    /// SHA-256 of the session token (the row's key).
    pub token_hash: String,
    /// The account's state: only an approved account acts as its identity. A pending or
    /// rejected account may see its own status and sign out, nothing else.
    pub account_state: crate::db::accounts::AccountState,
}

impl WebSession {
    /// Fails unless the account proved control of its identity: an administrator approved its
    /// self-registration (which created that identity), an invitation code did, or it claimed
    /// a registered identity with that identity's one-time secret.
    pub fn require_approved(&self) -> Result<(), ApiError> {
        use crate::db::accounts::AccountState;
        match self.account_state {
            AccountState::Approved => Ok(()),
            AccountState::Rejected => Err(ApiError::Forbidden("this registration was not approved".into())),
            AccountState::Pending => Err(ApiError::Forbidden(
                "your registration is waiting for an administrator's approval".into(),
            )),
        }
    }
}

/// The unexpired portal session the request's cookie names; `None` when there is no session
/// cookie, session-required when it names no live session.
pub async fn web_session(parts: &Parts, state: &AppState) -> Result<Option<WebSession>, ApiError> {
    let Some(token) = parts
        .headers
        .get_all(axum::http::header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .find_map(crate::portal::token_from_cookies)
    else {
        return Ok(None);
    };
    let token_hash = crate::portal::token_hash(token);
    // The account's state is read with the session on every request, so a session never acts
    // as an identity its account has not proved control of.
    let session = crate::accounts::Accounts::new(&state.db, &state.hasher)
        .session(&token_hash, crate::app::now().unix_timestamp())
        .await
        .map_err(ApiError::from)?
        .ok_or(ApiError::SessionRequired)?;
    Ok(Some(WebSession {
        identity: session.identity,
        csrf: session.csrf,
        token_hash,
        account_state: session.account_state,
    }))
}

/// Fails unless the request carries the session's CSRF token and comes from this origin.
/// (HTTP/2 has no Host header; the authority is in the URI.)
pub fn check_csrf(parts: &Parts, csrf: &str) -> Result<(), ApiError> {
    let h = |name: &str| parts.headers.get(name).and_then(|v| v.to_str().ok());
    let authority = parts.uri.authority().map(|a| a.as_str());
    match crate::portal::csrf_problem(
        csrf,
        h("x-csrf-token"),
        h("origin"),
        h("host").or(authority),
        h("sec-fetch-site"),
    ) {
        None => Ok(()),
        Some(why) => Err(ApiError::CsrfRejected(why)),
    }
}

/// The caller behind a portal session cookie: its account must be approved (it proved control
/// of the identity), the identity must exist, be an active participant, and a state-changing
/// request must carry the session's CSRF token and come from this origin.
async fn session_caller(parts: &Parts, state: &Arc<AppState>) -> Result<Caller, ApiError> {
    let session = web_session(parts, state).await?.ok_or(ApiError::ClientCertRequired)?;
    session.require_approved()?;
    if !matches!(parts.method, axum::http::Method::GET | axum::http::Method::HEAD) {
        check_csrf(parts, &session.csrf)?;
    }
    let identity =
        state.db.identity(&session.identity).await?.ok_or_else(|| {
            ApiError::Forbidden("your registration is waiting for an administrator's approval".into())
        })?;
    if identity.status != IdentityStatus::Active {
        return Err(ApiError::IdentityDisabled);
    }
    if identity.kind != IdentityKind::Participant {
        return Err(ApiError::Forbidden("only participants sign in to the portal".into()));
    }
    let spiffe_id = SpiffeId {
        trust_domain: state.trust_domain.clone(),
        kind: identity.kind,
        id: identity::IdentityId::parse(&identity.id)
            .map_err(|_| ApiError::Internal(anyhow::anyhow!("bad stored id")))?,
    };
    Ok(Caller {
        identity,
        spiffe_id,
        serial: "session".into(),
    })
}
