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
use identity::IdentityId;
use serde::{Deserialize, Serialize};

use crate::app::{AppState, now, rfc3339};
use crate::auth::Caller;
use crate::commit::Precondition;
use crate::db::CertFilter;
use crate::portal::{self, CHALLENGE_TTL, SESSION_TTL};
use crate::problem::{ApiError, Json, Query};
use crate::secrets::Source;

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

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RegisterRequest {
    id: String,
    name: String,
    email: String,
    #[serde(default)]
    organisation: String,
    password: String,
    #[serde(default)]
    invitation: Option<String>,
    /// Claim an identity a registrar registered: its one-time enrollment secret.
    #[serde(default)]
    secret: Option<String>,
}

#[derive(Serialize)]
struct Account {
    id: String,
    name: String,
    email: String,
    organisation: String,
    state: String,
    created_at: String,
}

async fn register(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(r): Json<RegisterRequest>,
) -> Result<(StatusCode, axum::Json<Account>), ApiError> {
    let source = Source::address(peer.ip());
    let id = IdentityId::parse(&r.id).map_err(|e| ApiError::InvalidField(format!("id: {e}")))?;
    let email = r.email.trim().to_ascii_lowercase();
    portal::check_account(&r.name, &email, &r.organisation, &r.password).map_err(ApiError::InvalidField)?;
    let t = now().unix_timestamp();
    let claim = r.secret.as_deref().filter(|c| !c.is_empty()).map(str::to_string);
    if claim.is_some() && r.invitation.as_deref().is_some_and(|c| !c.is_empty()) {
        return Err(ApiError::InvalidField(
            "give an invitation code or an enrollment secret, not both".into(),
        ));
    }
    // Each registration that gets this far costs an argon2id hash or two: limited per address.
    if let Err(wait) = s.login_limits.register(peer.ip()) {
        s.tarpit.hold().await;
        return Err(ApiError::SlowDown("registrations", wait));
    }
    let clean = s.demerits.clean(&source);
    // Claiming a registered identity: its secret must verify, like an enrollment.
    let claimed = match claim {
        None => None,
        Some(secret) => {
            let ident = s.db.identity(id.as_str()).await?;
            let stored = ident.as_ref().and_then(|i| i.secret_hash.clone());
            if !s.hasher.verify(&source, clean, secret, stored.clone()).await? {
                s.demerits.record(&source);
                return Err(ApiError::InvalidCredentials);
            }
            let (Some(ident), Some(stored)) = (ident, stored) else {
                return Err(ApiError::InvalidCredentials);
            };
            if ident.kind != "participant" || ident.status != "active" {
                return Err(ApiError::Forbidden(
                    "only active participants sign in to the portal".into(),
                ));
            }
            if ident.secret_expires_at.is_none_or(|e| e <= t) {
                return Err(ApiError::SecretExpired);
            }
            Some((stored, ident.registered_by))
        }
    };
    let hash = s.hasher.hash(&source, clean, r.password).await?;
    let mut tx = s.db.begin().await?;
    if let Some((stored, _)) = &claimed {
        let used = sqlx::query(
            "UPDATE identities SET enrollments_left = enrollments_left - 1 WHERE id = $1 AND secret_hash = $2 \
             AND enrollments_left > 0 AND secret_expires_at > $3 AND status = 'active'",
        )
        .bind(id.as_str())
        .bind(stored)
        .bind(t)
        .execute(&mut *tx)
        .await?;
        if used.rows_affected() != 1 {
            return Err(ApiError::SecretUsedUp);
        }
    }
    let invited_by = match r.invitation.as_deref().filter(|c| !c.is_empty()) {
        None => None,
        Some(code) => {
            let by: Option<String> = sqlx::query_scalar(
                "UPDATE invitations SET uses_left = uses_left - 1 WHERE code_hash = $1 AND uses_left > 0 \
                 AND expires_at > $2 RETURNING created_by",
            )
            .bind(portal::token_hash(code.trim()))
            .bind(t)
            .fetch_optional(&mut *tx)
            .await?;
            Some(by.ok_or_else(|| ApiError::InvalidField("the invitation code is unknown, used up or expired".into()))?)
        }
    };
    let taken: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM identities WHERE id = $1 AND $3 = 0) \
         + (SELECT COUNT(*) FROM accounts WHERE identity_id = $1 OR email = $2)",
    )
    .bind(id.as_str())
    .bind(&email)
    .bind(i64::from(claimed.is_some()))
    .fetch_one(&mut *tx)
    .await?;
    if taken > 0 {
        return Err(ApiError::Conflict(
            "that id or email address is already registered".into(),
        ));
    }
    let decided_by = match (&invited_by, &claimed) {
        (Some(by), _) => Some(format!("invitation:{by}")),
        (None, Some((_, by))) => Some(format!("secret:{by}")),
        _ => None,
    };
    let state = if decided_by.is_some() { "approved" } else { "pending" };
    sqlx::query(
        "INSERT INTO accounts (identity_id, name, email, organisation, password_hash, state, created_at, decided_by, decided_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(id.as_str())
    .bind(r.name.trim())
    .bind(&email)
    .bind(&r.organisation)
    .bind(hash)
    .bind(state)
    .bind(t)
    .bind(&decided_by)
    .bind(decided_by.as_ref().map(|_| t))
    .execute(&mut *tx)
    .await?;
    if let Some(by) = &invited_by {
        create_identity(&mut tx, id.as_str(), &r.name, &email, &r.organisation, by, t).await?;
    }
    tx.commit().await?;
    tracing::info!(id = %id, state, "portal registration");
    Ok((
        StatusCode::CREATED,
        axum::Json(Account {
            id: id.to_string(),
            name: r.name.trim().to_string(),
            email,
            organisation: r.organisation,
            state: state.into(),
            created_at: rfc3339(t),
        }),
    ))
}

async fn create_identity(
    tx: &mut sqlx::Transaction<'static, sqlx::Any>,
    id: &str,
    name: &str,
    email: &str,
    organisation: &str,
    by: &str,
    t: i64,
) -> Result<(), ApiError> {
    let attributes = serde_json::json!({ "name": name.trim(), "email": email, "organisation": organisation });
    // A participant without roles, and never over an identity someone else registered meanwhile
    // (on PostgreSQL another replica may have committed one since this transaction looked).
    let inserted = sqlx::query(
        "INSERT INTO identities (id, kind, roles, attributes, dns_names, ip_addresses, status, enrollments_left, \
         registered_by, created_at) VALUES ($1, 'participant', '[]', $2, '[]', '[]', 'active', 0, $3, $4) \
         ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(attributes.to_string())
    .bind(by)
    .bind(t)
    .execute(&mut **tx)
    .await?;
    if inserted.rows_affected() != 1 {
        return Err(ApiError::IdentityExists);
    }
    Ok(())
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct LoginRequest {
    id: String,
    password: String,
}

async fn login(
    State(s): State<Arc<AppState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    Json(r): Json<LoginRequest>,
) -> Result<Response, ApiError> {
    if let Err(wait) = s.login_limits.sign_in(&r.id, peer.ip()) {
        s.tarpit.hold().await;
        return Err(ApiError::TooManyAttempts(wait));
    }
    let source = Source::address(peer.ip());
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT password_hash, state FROM accounts WHERE identity_id = $1")
            .bind(&r.id)
            .fetch_optional(&mut *s.db.acquire().await?)
            .await?;
    let hash = row.as_ref().map(|(h, _)| h.clone());
    if !s
        .hasher
        .verify(&source, s.demerits.clean(&source), r.password, hash)
        .await?
    {
        s.demerits.record(&source);
        tracing::info!(id = %r.id, peer = %peer.ip(), "portal sign-in refused");
        return Err(ApiError::BadLogin);
    }
    s.login_limits.signed_in(&r.id, peer.ip());
    let (_, state) = row.ok_or(ApiError::BadLogin)?;
    if state == "rejected" {
        return Err(ApiError::Forbidden("this registration was not approved".into()));
    }
    let token = portal::random_token();
    let csrf = portal::random_token();
    let t = now().unix_timestamp();
    let mut conn = s.db.acquire().await?;
    sqlx::query("DELETE FROM web_sessions WHERE expires_at <= $1")
        .bind(t)
        .execute(&mut *conn)
        .await?;
    sqlx::query(
        "INSERT INTO web_sessions (token_hash, identity_id, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(portal::token_hash(&token))
    .bind(&r.id)
    .bind(&csrf)
    .bind(t)
    .bind(t + SESSION_TTL.as_secs() as i64)
    .execute(&mut *conn)
    .await?;
    tracing::info!(id = %r.id, "portal sign-in");
    let body = serde_json::json!({ "id": r.id, "state": state, "csrf_token": csrf });
    Ok(([(header::SET_COOKIE, portal::session_cookie(&token))], axum::Json(body)).into_response())
}

async fn logout(State(s): State<Arc<AppState>>, session: Session) -> Result<Response, ApiError> {
    session.check_csrf()?;
    sqlx::query("DELETE FROM web_sessions WHERE token_hash = $1")
        .bind(&session.web.token_hash)
        .execute(&mut *s.db.acquire().await?)
        .await?;
    Ok((StatusCode::NO_CONTENT, [(header::SET_COOKIE, portal::clear_cookie())]).into_response())
}

/// The signed-in account, or `{"signed_in": false}` (a visitor is not an error).
async fn me(
    State(s): State<Arc<AppState>>,
    session: Result<Session, ApiError>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    let Ok(session) = session else {
        return Ok(axum::Json(serde_json::json!({ "signed_in": false })));
    };
    let id = &session.web.identity;
    let row: Option<(String, String, String, String)> =
        sqlx::query_as("SELECT name, email, organisation, state FROM accounts WHERE identity_id = $1")
            .bind(id)
            .fetch_optional(&mut *s.db.acquire().await?)
            .await?;
    let (name, email, organisation, state) = row.ok_or(ApiError::SessionRequired)?;
    // The identity's roles only once the account is bound to it: a pending account must not
    // learn anything about an identity someone else registered under the same id.
    let roles = match session.identity() {
        Ok(id) => s.db.identity(id).await?.map(|i| i.roles).unwrap_or_default(),
        Err(_) => Vec::new(),
    };
    Ok(axum::Json(serde_json::json!({
        "signed_in": true,
        "id": id,
        "spiffe_id": format!("spiffe://{}/participant/{}", s.trust_domain, id),
        "name": name,
        "email": email,
        "organisation": organisation,
        "state": state,
        "roles": roles,
        "csrf_token": session.web.csrf,
    })))
}

/// Fails unless the signed-in account was approved (it proved control of its identity) and the
/// identity is an active participant.
async fn approved(s: &AppState, session: &Session) -> Result<crate::db::IdentityRow, ApiError> {
    match s.db.identity(session.identity()?).await? {
        Some(i) if i.kind != "participant" => {
            Err(ApiError::Forbidden("only participants sign in to the portal".into()))
        }
        Some(i) if i.status == "active" => Ok(i),
        Some(_) => Err(ApiError::IdentityDisabled),
        None => Err(ApiError::Forbidden(
            "your registration is waiting for an administrator's approval".into(),
        )),
    }
}

async fn challenge(
    State(s): State<Arc<AppState>>,
    session: Session,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    session.check_csrf()?;
    let ident = approved(&s, &session).await?;
    let challenge = portal::random_token();
    let t = now().unix_timestamp();
    let expires = t + CHALLENGE_TTL.as_secs() as i64;
    let mut conn = s.db.acquire().await?;
    sqlx::query("DELETE FROM enroll_challenges WHERE expires_at <= $1")
        .bind(t)
        .execute(&mut *conn)
        .await?;
    sqlx::query("INSERT INTO enroll_challenges (challenge_hash, identity_id, expires_at, used) VALUES ($1, $2, $3, 0)")
        .bind(portal::token_hash(&challenge))
        .bind(&ident.id)
        .bind(expires)
        .execute(&mut *conn)
        .await?;
    Ok(axum::Json(
        serde_json::json!({ "challenge": challenge, "expires_at": rfc3339(expires) }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct EnrollRequest {
    /// The challenge, as received.
    challenge: String,
    /// The new public key's SubjectPublicKeyInfo, DER, base64.
    spki: String,
    /// Signature over the proof context and the challenge's bytes, base64.
    signature: String,
}

async fn enroll(
    State(s): State<Arc<AppState>>,
    session: Session,
    Json(r): Json<EnrollRequest>,
) -> Result<(StatusCode, axum::Json<super::enroll::Issued>), ApiError> {
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
    let precondition = Precondition::ConsumeChallenge {
        challenge_hash: portal::token_hash(r.challenge.trim()),
        now: now().unix_timestamp(),
    };
    super::enroll::issue(&s, &ident, &key, "portal", format!("portal:{}", ident.id), precondition).await
}

async fn my_certificates(
    State(s): State<Arc<AppState>>,
    session: Session,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
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
    let chain: String = s.ca.chain().iter().map(|c| crate::pki::pem("CERTIFICATE", c)).collect();
    Ok(axum::Json(serde_json::json!({ "items": items, "chain": chain })))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RevokeRequest {
    #[serde(default)]
    reason: Option<String>,
}

async fn revoke(
    State(s): State<Arc<AppState>>,
    session: Session,
    Path(serial): Path<String>,
    Json(r): Json<RevokeRequest>,
) -> Result<axum::Json<super::certificates::Revoked>, ApiError> {
    session.check_csrf()?;
    let me = session.identity()?;
    let serial = super::normalize_serial(&serial).ok_or_else(|| ApiError::InvalidField("serial must be hex".into()))?;
    let reason = super::certificates::parse_reason(r.reason.as_deref())?;
    match s.db.certificate(&serial).await? {
        Some(c) if c.identity_id == me => {
            if c.revoked_at.is_some() {
                return Err(ApiError::AlreadyRevoked);
            }
        }
        _ => return Err(ApiError::NotFound(format!("you have no certificate {serial}"))),
    }
    let revoked = super::certificates::revoke_recorded(&s, serial, reason, me).await?;
    Ok(axum::Json(revoked))
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
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    caller.require_any(&["admin"])?;
    let state = q.state.unwrap_or_else(|| "pending".into());
    if !["pending", "approved", "rejected"].contains(&state.as_str()) {
        return Err(ApiError::InvalidField(
            "state must be pending, approved or rejected".into(),
        ));
    }
    let rows: Vec<(String, String, String, String, String, i64)> = sqlx::query_as(
        "SELECT identity_id, name, email, organisation, state, created_at FROM accounts WHERE state = $1 \
         ORDER BY created_at, identity_id LIMIT 1000",
    )
    .bind(&state)
    .fetch_all(&mut *s.db.acquire().await?)
    .await?;
    let items: Vec<Account> = rows
        .into_iter()
        .map(|(id, name, email, organisation, state, created)| Account {
            id,
            name,
            email,
            organisation,
            state,
            created_at: rfc3339(created),
        })
        .collect();
    Ok(axum::Json(serde_json::json!({ "items": items })))
}

async fn decide(
    s: &AppState,
    caller: &Caller,
    id: &str,
    approve: bool,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    caller.require_any(&["admin"])?;
    let t = now().unix_timestamp();
    let mut tx = s.db.begin().await?;
    let row: Option<(String, String, String)> = sqlx::query_as(
        "UPDATE accounts SET state = $2, decided_by = $3, decided_at = $4 WHERE identity_id = $1 AND state = 'pending' \
         RETURNING name, email, organisation",
    )
    .bind(id)
    .bind(if approve { "approved" } else { "rejected" })
    .bind(&caller.identity.id)
    .bind(t)
    .fetch_optional(&mut *tx)
    .await?;
    let (name, email, organisation) =
        row.ok_or_else(|| ApiError::NotFound(format!("no pending registration '{id}'")))?;
    if approve {
        let exists: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM identities WHERE id = $1")
            .bind(id)
            .fetch_one(&mut *tx)
            .await?;
        if exists > 0 {
            return Err(ApiError::IdentityExists);
        }
        create_identity(&mut tx, id, &name, &email, &organisation, &caller.identity.id, t).await?;
    }
    tx.commit().await?;
    tracing::info!(id, approve, by = %caller.identity.id, "portal registration decided");
    Ok(axum::Json(serde_json::json!({
        "id": id,
        "state": if approve { "approved" } else { "rejected" },
    })))
}

async fn approve(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    decide(&s, &caller, &id, true).await
}

async fn reject(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<serde_json::Value>, ApiError> {
    decide(&s, &caller, &id, false).await
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct InviteRequest {
    #[serde(default = "week")]
    ttl_seconds: i64,
    #[serde(default = "one")]
    uses: i64,
}

fn week() -> i64 {
    7 * 86_400
}
fn one() -> i64 {
    1
}

/// An invitation code: whoever registers with it is approved at once.
async fn invite(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Json(r): Json<InviteRequest>,
) -> Result<(StatusCode, axum::Json<serde_json::Value>), ApiError> {
    caller.require_any(&["admin", "registrar"])?;
    if !(60..=90 * 86_400).contains(&r.ttl_seconds) || !(1..=1000).contains(&r.uses) {
        return Err(ApiError::InvalidField(
            "ttl_seconds must be from 60 to 7776000 and uses from 1 to 1000".into(),
        ));
    }
    let code = crate::secrets::new_secret();
    let expires = now().unix_timestamp() + r.ttl_seconds;
    sqlx::query("INSERT INTO invitations (code_hash, created_by, expires_at, uses_left) VALUES ($1, $2, $3, $4)")
        .bind(portal::token_hash(&code))
        .bind(&caller.identity.id)
        .bind(expires)
        .bind(r.uses)
        .execute(&mut *s.db.acquire().await?)
        .await?;
    Ok((
        StatusCode::CREATED,
        axum::Json(serde_json::json!({ "code": code, "expires_at": rfc3339(expires), "uses": r.uses })),
    ))
}
