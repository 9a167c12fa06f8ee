//! The portal's API: self-registration (pending until an administrator approves, or approved at
//! once with an invitation code), password sign-in with a session cookie, and, for a signed-in
//! participant, enrollment with a key made in the browser, its certificates and revoking them.
//! Administrators (mTLS) list and decide registrations; registrars and administrators issue
//! invitation codes.
//!
//! Every state-changing call made with a session needs the session's CSRF token in
//! `X-CSRF-Token` and must not come from another origin (`Origin`, `Sec-Fetch-Site`).

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{ConnectInfo, FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use bsn_api::ca::{
    Account, AccountDecision, Challenge, Invitation, InviteRequest, Issued, Items, Login, Me, MyCertificates,
    PortalEnroll, PortalRegister, RevokeRequest, Revoked, SignedIn,
};
use identity::{CaRole, IdentityId};
use serde::Deserialize;

use crate::accounts::{AccountError, Accounts, Registration};
use crate::app::{AppState, now, rfc3339};
use crate::auth::Caller;
use crate::db::CertFilter;
use crate::db::accounts::{AccountRow, AccountState};
use crate::portal;
use crate::problem::{ApiError, Json, Query};
use crate::revocation::{Authority, RevokeError};
use crate::secrets::{Asker, Source};

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/portal/register", post(register))
        .route("/api/v1/portal/login", post(login))
        .route("/api/v1/portal/logout", post(logout))
        .route("/api/v1/portal/me", get(me))
        .route("/api/v1/portal/challenge", post(challenge))
        .route("/api/v1/portal/enroll", post(enroll))
        .route("/api/v1/portal/certificates", get(my_certificates))
        .route("/api/v1/portal/certificates/{serial}/revoke", post(revoke))
        .route("/api/v1/accounts", get(accounts))
        .route("/api/v1/accounts/{id}/approve", post(approve))
        .route("/api/v1/accounts/{id}/reject", post(reject))
        .route("/api/v1/invitations", post(invite))
}

/// A signed-in portal user (from the session cookie, checked against the database), whose
/// account may still be pending; `csrf_ok` says whether the request passed the CSRF check.
pub(super) struct Session {
    web: crate::auth::WebSession,
    csrf_ok: Result<(), String>,
}

impl Session {
    /// Fails unless the request carries the session's CSRF token and comes from this origin.
    fn check_csrf(&self) -> Result<(), ApiError> {
        self.csrf_ok.clone().map_err(ApiError::CsrfRejected)
    }

    /// The account's identity id, once the account proved control of it: every route but the
    /// account's own status and sign-out goes through here.
    fn identity(&self) -> Result<&str, ApiError> {
        self.web.require_approved()?;
        Ok(&self.web.identity)
    }
}

impl FromRequestParts<Arc<AppState>> for Session {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, s: &Arc<AppState>) -> Result<Self, ApiError> {
        let web = crate::auth::web_session(parts, s)
            .await?
            .ok_or(ApiError::SessionRequired)?;
        let csrf_ok = crate::auth::check_csrf(parts, &web.csrf).map_err(|e| e.to_string());
        Ok(Session { web, csrf_ok })
    }
}

impl From<AccountError> for ApiError {
    fn from(e: AccountError) -> Self {
        match e {
            AccountError::InvalidField(m) => ApiError::InvalidField(m),
            AccountError::InvalidCredentials => ApiError::InvalidCredentials,
            AccountError::SecretExpired => ApiError::SecretExpired,
            AccountError::SecretUsedUp => ApiError::SecretUsedUp,
            AccountError::Forbidden(m) => ApiError::Forbidden(m),
            e @ AccountError::Taken => ApiError::Conflict(e.to_string()),
            AccountError::IdentityExists => ApiError::IdentityExists,
            e @ AccountError::NoPending(_) => ApiError::NotFound(e.to_string()),
            AccountError::BadLogin => ApiError::BadLogin,
            e @ AccountError::Rejected => ApiError::Forbidden(e.to_string()),
            AccountError::Busy => ApiError::Busy,
            AccountError::Database(e) => e.into(),
        }
    }
}

impl From<AccountRow> for Account {
    fn from(a: AccountRow) -> Self {
        Account {
            id: a.id,
            name: a.name,
            email: a.email,
            organisation: a.organisation,
            state: a.state.as_str().into(),
            created_at: rfc3339(a.created_at),
        }
    }
}

fn account_service(s: &AppState) -> Accounts<'_> {
    Accounts::new(&s.db, &s.hasher)
}

async fn register(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(r): Json<PortalRegister>,
) -> Result<(StatusCode, axum::Json<Account>), ApiError> {
    let source = Source::address(peer.ip());
    let id = IdentityId::parse(&r.id).map_err(|e| ApiError::InvalidField(e.to_string()))?;
    let registration = Registration::new(
        id,
        &r.name,
        &r.email,
        r.organisation,
        r.password,
        r.secret,
        r.invitation,
    )?;
    // Each registration that gets this far costs an argon2id hash or two: limited per address.
    if let Err(wait) = s.login_limits.register(peer.ip()) {
        s.tarpit.hold().await;
        return Err(ApiError::SlowDown("registrations", wait));
    }
    let who = Asker {
        source: &source,
        clean: s.demerits.clean(&source),
    };
    match account_service(&s)
        .register(registration, who, now().unix_timestamp())
        .await
    {
        Ok(account) => Ok((StatusCode::CREATED, axum::Json(account.into()))),
        Err(e) => {
            if matches!(e, AccountError::InvalidCredentials) {
                s.demerits.record(&source);
            }
            Err(e.into())
        }
    }
}

async fn login(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(r): Json<Login>,
) -> Result<Response, ApiError> {
    if let Err(wait) = s.login_limits.sign_in(&r.id, peer.ip()) {
        s.tarpit.hold().await;
        return Err(ApiError::TooManyAttempts(wait));
    }
    let source = Source::address(peer.ip());
    let who = Asker {
        source: &source,
        clean: s.demerits.clean(&source),
    };
    match account_service(&s)
        .sign_in(&r.id, r.password, who, now().unix_timestamp())
        .await
    {
        Ok(session) => {
            s.login_limits.signed_in(&r.id, peer.ip());
            let body = SignedIn {
                id: r.id,
                state: session.state.as_str().into(),
                csrf_token: session.csrf,
            };
            Ok((
                [(header::SET_COOKIE, portal::session_cookie(&session.token))],
                axum::Json(body),
            )
                .into_response())
        }
        Err(AccountError::BadLogin) => {
            s.demerits.record(&source);
            tracing::info!(id = %r.id, peer = %peer.ip(), "portal sign-in refused");
            Err(ApiError::BadLogin)
        }
        Err(e @ AccountError::Rejected) => {
            // The password was right: not a failure to count against the owner.
            s.login_limits.signed_in(&r.id, peer.ip());
            Err(e.into())
        }
        Err(e) => Err(e.into()),
    }
}

async fn logout(State(s): State<Arc<AppState>>, session: Session) -> Result<Response, ApiError> {
    session.check_csrf()?;
    account_service(&s).sign_out(&session.web.token_hash).await?;
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, portal::clear_cookie())]).into_response())
}

/// The signed-in account, or `{"signed_in": false}` (a visitor is not an error).
async fn me(State(s): State<Arc<AppState>>, session: Result<Session, ApiError>) -> Result<axum::Json<Me>, ApiError> {
    let Ok(session) = session else {
        return Ok(axum::Json(Me::default()));
    };
    let id = &session.web.identity;
    let account = account_service(&s)
        .account(id)
        .await?
        .ok_or(ApiError::SessionRequired)?;
    // The identity's roles only once the account is bound to it: a pending account must not
    // learn anything about an identity someone else registered under the same id.
    let roles = match session.identity() {
        Ok(id) => {
            s.db.identity(id)
                .await?
                .map_or_else(Vec::new, |i| i.roles.iter().map(|r| r.as_str().to_string()).collect())
        }
        Err(_) => Vec::new(),
    };
    Ok(axum::Json(Me {
        signed_in: true,
        id: Some(id.clone()),
        spiffe_id: Some(format!("spiffe://{}/participant/{}", s.trust_domain, id)),
        name: Some(account.name),
        email: Some(account.email),
        organisation: Some(account.organisation),
        state: Some(account.state.as_str().into()),
        roles: Some(roles),
        csrf_token: Some(session.web.csrf.clone()),
    }))
}

/// Fails unless the signed-in account was approved (it proved control of its identity) and the
/// identity is an active participant.
async fn approved(s: &AppState, session: &Session) -> Result<crate::db::IdentityRow, ApiError> {
    match s.db.identity(session.identity()?).await? {
        Some(i) if i.kind != identity::IdentityKind::Participant => {
            Err(ApiError::Forbidden("only participants sign in to the portal".into()))
        }
        Some(i) if i.status == identity::IdentityStatus::Active => Ok(i),
        Some(_) => Err(ApiError::IdentityDisabled),
        None => Err(ApiError::Forbidden(
            "your registration is waiting for an administrator's approval".into(),
        )),
    }
}

async fn challenge(State(s): State<Arc<AppState>>, session: Session) -> Result<axum::Json<Challenge>, ApiError> {
    session.check_csrf()?;
    let ident = approved(&s, &session).await?;
    let (challenge, expires) = account_service(&s)
        .new_challenge(&ident.id, now().unix_timestamp())
        .await?;
    Ok(axum::Json(Challenge {
        challenge,
        expires_at: rfc3339(expires),
    }))
}

async fn enroll(
    State(s): State<Arc<AppState>>,
    session: Session,
    Json(r): Json<PortalEnroll>,
) -> Result<(StatusCode, axum::Json<Issued>), ApiError> {
    session.check_csrf()?;
    let ident = approved(&s, &session).await?;
    let bad = |m: &str| ApiError::InvalidField(m.to_string());
    URL_SAFE_NO_PAD
        .decode(r.challenge.trim())
        .map_err(|_| bad("challenge is not the one you were given"))?;
    let spki = STANDARD
        .decode(r.spki.trim())
        .map_err(|_| bad("spki must be base64 DER"))?;
    let signature = STANDARD
        .decode(r.signature.trim())
        .map_err(|_| bad("signature must be base64"))?;
    let key = crate::csr::check_spki_der(&spki)?;
    portal::verify_proof(&key, r.challenge.trim().as_bytes(), &signature).map_err(ApiError::InvalidProof)?;
    let i = super::enroll::issuance(&s)
        .enroll_from_portal(&ident, &key, portal::token_hash(r.challenge.trim()))
        .await?;
    Ok(super::enroll::issued(i))
}

async fn my_certificates(
    State(s): State<Arc<AppState>>,
    session: Session,
) -> Result<axum::Json<MyCertificates>, ApiError> {
    let t = now().unix_timestamp();
    let filter = CertFilter {
        identity: Some(session.identity()?.to_string()),
        serial: None,
        status: "any".into(),
        expires_before: None,
        expires_after: None,
        after: String::new(),
        limit: 1000,
    };
    let rows = s.db.list_certificates(&filter, t).await?;
    let items: Vec<_> = rows.into_iter().map(|c| super::certificates::view(c, t)).collect();
    // Their certificates may come from any intermediate whose CRL is still published.
    let chain: String = s
        .issuers
        .get()
        .signing
        .values()
        .map(|c| crate::pki::pem("CERTIFICATE", &c.intermediate))
        .collect();
    Ok(axum::Json(MyCertificates { items, chain }))
}

async fn revoke(
    State(s): State<Arc<AppState>>,
    session: Session,
    Path(serial): Path<String>,
    Json(r): Json<RevokeRequest>,
) -> Result<axum::Json<Revoked>, ApiError> {
    session.check_csrf()?;
    let me = session.identity()?;
    let serial = super::normalize_serial(&serial).ok_or_else(|| ApiError::InvalidField("serial must be hex".into()))?;
    let reason = super::certificates::parse_reason(r.reason.as_deref())?;
    let revocations = super::certificates::revocations(&s);
    match revocations.revoke(&serial, reason, Authority::Holder(me), now()).await {
        Ok(r) => Ok(axum::Json(super::certificates::revoked(&s, r))),
        // Another identity's certificate is not for this session to know about.
        Err(RevokeError::Unknown(_) | RevokeError::NotYours(_)) => {
            Err(ApiError::NotFound(format!("you have no certificate {serial}")))
        }
        Err(e) => Err(e.into()),
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AccountsQuery {
    state: Option<String>,
}

/// Registrations, for administrators.
async fn accounts(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<AccountsQuery>,
) -> Result<axum::Json<Items<Account>>, ApiError> {
    caller.require_any(&[CaRole::Admin])?;
    let state = q.state.as_deref().unwrap_or("pending");
    let state = AccountState::parse(state)
        .ok_or_else(|| ApiError::InvalidField("state must be pending, approved or rejected".into()))?;
    let items: Vec<Account> = account_service(&s)
        .list(state)
        .await?
        .into_iter()
        .map(Account::from)
        .collect();
    Ok(axum::Json(Items { items }))
}

async fn decide(
    s: &AppState,
    caller: &Caller,
    id: &str,
    approve: bool,
) -> Result<axum::Json<AccountDecision>, ApiError> {
    caller.require_any(&[CaRole::Admin])?;
    let state = account_service(s)
        .decide(id, approve, &caller.identity.id, now().unix_timestamp())
        .await?;
    Ok(axum::Json(AccountDecision {
        id: id.to_string(),
        state: state.as_str().into(),
    }))
}

async fn approve(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<AccountDecision>, ApiError> {
    decide(&s, &caller, &id, true).await
}

async fn reject(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<AccountDecision>, ApiError> {
    decide(&s, &caller, &id, false).await
}

/// An invitation code: whoever registers with it is approved at once.
async fn invite(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Json(r): Json<InviteRequest>,
) -> Result<(StatusCode, axum::Json<Invitation>), ApiError> {
    caller.require_any(&[CaRole::Admin, CaRole::Registrar])?;
    let (code, expires) = account_service(&s)
        .invite(&caller.identity.id, r.ttl_seconds, r.uses, now().unix_timestamp())
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(Invitation {
            code,
            expires_at: rfc3339(expires),
            uses: r.uses,
        }),
    ))
}
