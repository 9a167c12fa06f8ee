//! Registration (admins and registrars) and identity lookup.

use std::net::IpAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use bsn_api::ca::{Identity, NewSecret, Page, RegisterRequest, Registered, SecretRequest};
use identity::{CaRole, IdentityId, IdentityKind, IdentityStatus, SpiffeId};
use serde::Deserialize;

use crate::app::{AppState, now, rfc3339};
use crate::auth::Caller;
use crate::db::{IdentityFilter, IdentityRow, NewIdentity};
use crate::problem::{ApiError, Json, Query};
use crate::secrets::Source;
use crate::secrets::new_secret;

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/identities", get(list).post(register))
        .route("/api/v1/identities/{id}", get(one))
        .route("/api/v1/identities/{id}/secret", axum::routing::post(reset_secret))
        .route("/api/v1/identities/{id}/disable", axum::routing::post(disable))
        .route("/api/v1/identities/{id}/enable", axum::routing::post(enable))
}

fn spiffe_id_of(s: &AppState, kind: IdentityKind, id: &str) -> String {
    format!("spiffe://{}/{}/{}", s.trust_domain, kind.as_str(), id)
}

fn role_names(roles: &[CaRole]) -> Vec<String> {
    roles.iter().map(|r| r.as_str().to_string()).collect()
}

fn view(s: &AppState, i: IdentityRow) -> Identity {
    Identity {
        spiffe_id: spiffe_id_of(s, i.kind, &i.id),
        secret_expires_at: i.secret_expires_at.map(rfc3339),
        created_at: rfc3339(i.created_at),
        id: i.id,
        kind: i.kind.as_str().to_string(),
        roles: role_names(&i.roles),
        attributes: i.attributes,
        dns_names: i.dns_names,
        ip_addresses: i.ip_addresses,
        status: i.status.as_str().to_string(),
        enrollments_left: i.enrollments_left,
        registered_by: i.registered_by,
    }
}

fn valid_dns_name(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty()
                && l.len() <= 63
                && !l.starts_with('-')
                && !l.ends_with('-')
                && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Checks a registration against the caller's rights and the field rules, before anything is written.
fn check_registration(
    caller: &Caller,
    r: &RegisterRequest,
) -> Result<(IdentityId, IdentityKind, Vec<CaRole>), ApiError> {
    caller.require_any(&[CaRole::Admin, CaRole::Registrar])?;
    let id = IdentityId::parse(&r.id).map_err(|e| ApiError::InvalidField(e.to_string()))?;
    let kind: IdentityKind = r
        .kind
        .parse()
        .map_err(|e| ApiError::InvalidField(format!("type: {e}")))?;
    let mut roles: Vec<CaRole> = Vec::with_capacity(r.roles.len());
    for name in &r.roles {
        let role = ca_role(name)?;
        if roles.contains(&role) {
            return Err(ApiError::InvalidField(format!("role '{name}' is listed twice")));
        }
        roles.push(role);
    }
    let has_host_names = !r.dns_names.is_empty() || !r.ip_addresses.is_empty();
    if has_host_names && !kind.is_network_node() {
        return Err(ApiError::InvalidField(
            "only node and orderer identities may have dns_names or ip_addresses".into(),
        ));
    }
    if r.dns_names.len() + r.ip_addresses.len() > 16 {
        return Err(ApiError::InvalidField(
            "at most 16 dns_names and ip_addresses together".into(),
        ));
    }
    if let Some(d) = r.dns_names.iter().find(|d| !valid_dns_name(d)) {
        return Err(ApiError::InvalidField(format!("dns_names: '{d}' is not a DNS name")));
    }
    if let Some(ip) = r.ip_addresses.iter().find(|ip| ip.parse::<IpAddr>().is_err()) {
        return Err(ApiError::InvalidField(format!(
            "ip_addresses: '{ip}' is not an IP address"
        )));
    }
    if r.attributes.len() > 32
        || r.attributes
            .iter()
            .any(|(k, v)| IdentityId::parse(k).is_err() || k.len() > 64 || v.as_str().is_none_or(|s| s.len() > 256))
    {
        return Err(ApiError::InvalidField(
            "attributes: at most 32, names of [a-zA-Z0-9._-] up to 64 characters, string values up to 256".into(),
        ));
    }
    if !(1..=100).contains(&r.max_enrollments) {
        return Err(ApiError::InvalidField("max_enrollments must be from 1 to 100".into()));
    }
    if !(1..=30 * 86_400).contains(&r.secret_ttl_seconds) {
        return Err(ApiError::InvalidField(
            "secret_ttl_seconds must be from 1 to 2592000 (30 days)".into(),
        ));
    }
    if !caller.is_admin() && (kind != IdentityKind::Participant || !r.roles.is_empty()) {
        return Err(ApiError::Forbidden(
            "registrars may register participants without roles only".into(),
        ));
    }
    Ok((id, kind, roles))
}

/// A CA role by name, or a problem naming the roles there are.
fn ca_role(name: &str) -> Result<CaRole, ApiError> {
    name.parse()
        .map_err(|_| ApiError::InvalidField(format!("role '{name}' is not one of: {}", CaRole::names())))
}

async fn register(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Json(r): Json<RegisterRequest>,
) -> Result<(StatusCode, axum::Json<Registered>), ApiError> {
    let (id, kind, roles) = check_registration(&caller, &r)?;
    let taken = || async {
        if s.db.identity(id.as_str()).await?.is_some() {
            return Err(ApiError::IdentityExists);
        }
        if s.db.account_holds(id.as_str()).await? {
            return Err(ApiError::IdReserved(id.to_string()));
        }
        Ok(())
    };
    taken().await?;
    let secret = new_secret();
    let hash = s
        .hasher
        .hash(&Source::Identity(caller.identity.id.clone()), true, secret.clone())
        .await?;
    let t = now().unix_timestamp();
    let new = NewIdentity {
        id: id.to_string(),
        kind,
        roles,
        attributes: r.attributes,
        dns_names: r.dns_names.iter().map(|d| d.to_ascii_lowercase()).collect(),
        ip_addresses: r
            .ip_addresses
            .iter()
            .filter_map(|ip| ip.parse::<IpAddr>().ok())
            .map(|ip| ip.to_string())
            .collect(),
        secret_hash: Some(hash),
        secret_expires_at: Some(t + r.secret_ttl_seconds),
        enrollments_left: r.max_enrollments,
        registered_by: caller.identity.id.clone(),
        created_at: t,
    };
    if !s.db.register(&new).await? {
        taken().await?;
        return Err(ApiError::IdentityExists);
    }
    let spiffe_id = SpiffeId {
        trust_domain: s.trust_domain.clone(),
        kind,
        id,
    };
    tracing::info!(identity = %spiffe_id, by = %caller.identity.id, "identity registered");
    Ok((
        StatusCode::CREATED,
        axum::Json(Registered {
            id: new.id,
            kind: new.kind.as_str().to_string(),
            spiffe_id: spiffe_id.to_string(),
            roles: role_names(&new.roles),
            secret,
            secret_expires_at: rfc3339(t + r.secret_ttl_seconds),
            max_enrollments: r.max_enrollments,
        }),
    ))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    #[serde(rename = "type")]
    kind: Option<String>,
    role: Option<String>,
    after: Option<String>,
    limit: Option<i64>,
}

/// Page size bounds.
pub(super) fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    let l = limit.unwrap_or(100);
    if (1..=1000).contains(&l) {
        Ok(l)
    } else {
        Err(ApiError::InvalidField("limit must be from 1 to 1000".into()))
    }
}

async fn list(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<axum::Json<Page<Identity>>, ApiError> {
    caller.require_any(&[CaRole::Admin, CaRole::Registrar])?;
    let kind = q
        .kind
        .map(|k| k.parse::<IdentityKind>())
        .transpose()
        .map_err(|e| ApiError::InvalidField(format!("type: {e}")))?;
    let role = q.role.as_deref().map(ca_role).transpose()?;
    let limit = page_limit(q.limit)?;
    let filter = IdentityFilter {
        kind,
        role,
        registered_by: (!caller.is_admin()).then(|| caller.identity.id.clone()),
        after: q.after.unwrap_or_default(),
        limit,
    };
    let rows = s.db.list_identities(&filter).await?;
    let next_after = (rows.len() as i64 == limit)
        .then(|| rows.last().map(|r| r.id.clone()))
        .flatten();
    Ok(axum::Json(Page {
        items: rows.into_iter().map(|r| view(&s, r)).collect(),
        next_after,
    }))
}

async fn one(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Identity>, ApiError> {
    let row = s.db.identity(&id).await?;
    let visible =
        |r: &IdentityRow| caller.is_admin() || r.id == caller.identity.id || r.registered_by == caller.identity.id;
    match row {
        Some(r) if visible(&r) => Ok(axum::Json(view(&s, r))),
        _ => Err(ApiError::NotFound(format!("no identity '{id}' that you may see"))),
    }
}

/// Loads an identity the caller manages: administrators manage all, registrars those they
/// registered (and never administrators or registrars).
async fn managed(s: &AppState, caller: &Caller, id: &str) -> Result<IdentityRow, ApiError> {
    caller.require_any(&[CaRole::Admin, CaRole::Registrar])?;
    let row =
        s.db.identity(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no identity '{id}'")))?;
    if caller.is_admin() {
        return Ok(row);
    }
    if row.registered_by != caller.identity.id {
        return Err(ApiError::NotFound(format!("no identity '{id}' that you registered")));
    }
    if !row.roles.is_empty() {
        return Err(ApiError::Forbidden(
            "registrars may not manage identities with roles".into(),
        ));
    }
    Ok(row)
}

/// Issues a new one-time enrollment secret (for a lost or expired one); the old one stops working.
async fn reset_secret(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(r): Json<SecretRequest>,
) -> Result<axum::Json<NewSecret>, ApiError> {
    if !(1..=100).contains(&r.max_enrollments) {
        return Err(ApiError::InvalidField("max_enrollments must be from 1 to 100".into()));
    }
    if !(1..=30 * 86_400).contains(&r.secret_ttl_seconds) {
        return Err(ApiError::InvalidField(
            "secret_ttl_seconds must be from 1 to 2592000 (30 days)".into(),
        ));
    }
    let row = managed(&s, &caller, &id).await?;
    if row.id == crate::init::SERVER_ID {
        return Err(ApiError::Forbidden(
            "the CA server's own identity does not enroll".into(),
        ));
    }
    let secret = new_secret();
    let hash = s
        .hasher
        .hash(&Source::Identity(caller.identity.id.clone()), true, secret.clone())
        .await?;
    let expires = now().unix_timestamp() + r.secret_ttl_seconds;
    if !s.db.set_secret(&row.id, &hash, expires, r.max_enrollments).await? {
        return Err(ApiError::NotFound(format!("no identity '{id}'")));
    }
    tracing::info!(identity = %row.id, by = %caller.identity.id, "enrollment secret reset");
    Ok(axum::Json(NewSecret {
        id: row.id,
        secret,
        secret_expires_at: rfc3339(expires),
        max_enrollments: r.max_enrollments,
    }))
}

async fn disable(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Identity>, ApiError> {
    set_status(&s, &caller, &id, IdentityStatus::Disabled).await
}

async fn enable(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Identity>, ApiError> {
    set_status(&s, &caller, &id, IdentityStatus::Active).await
}

/// Administrators disable or re-enable an identity. A disabled identity can neither enroll nor
/// renew nor call the API; its certificates stay valid until revoked.
async fn set_status(
    s: &AppState,
    caller: &Caller,
    id: &str,
    status: IdentityStatus,
) -> Result<axum::Json<Identity>, ApiError> {
    caller.require_any(&[CaRole::Admin])?;
    if id == caller.identity.id {
        return Err(ApiError::Forbidden(
            "administrators cannot disable or enable themselves".into(),
        ));
    }
    if !s.db.set_status(id, status).await? {
        return Err(ApiError::NotFound(format!("no identity '{id}'")));
    }
    s.identities.invalidate(id);
    tracing::info!(identity = %id, status = status.as_str(), by = %caller.identity.id, "identity status changed");
    let row =
        s.db.identity(id)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no identity '{id}'")))?;
    Ok(axum::Json(view(s, row)))
}
