//! The subchain registry: directory, creation and settings (publishers), members and roles,
//! join requests and their approval, signed membership statements.
//!
//! Who may manage a subchain: a CA administrator, its publisher, or a member with the `admin`
//! role on it. Nobody approves their own request.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::{get, post, put};
use bsn_api::ca::{
    AddMembers, Approve, CreateSubchain, Items, JoinRequestBody, MembershipKey, MyMembership, Page, SetRole,
    UpdateSubchain, Updated,
};
use identity::membership::{DirectoryEntry, Envelope, Member, Role, SubchainId};
use identity::{CaRole, IdentityKind};
use serde::Deserialize;

use super::identities::page_limit;
use super::registry;
use crate::app::{AppState, now};
use crate::auth::Caller;
use crate::problem::{ApiError, Json, Query};
use crate::registry::{Joined, Patch, Policy, RegistryError};

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/subchains", get(list).post(create))
        .route("/api/v1/subchains/{id}", get(one).patch(update))
        .route("/api/v1/subchains/{id}/members", get(members).post(add_members))
        .route(
            "/api/v1/subchains/{id}/members/{identity}",
            put(put_member).delete(remove_member),
        )
        .route("/api/v1/subchains/{id}/join", post(join))
        .route("/api/v1/subchains/{id}/requests", get(requests))
        .route("/api/v1/subchains/{id}/requests/{identity}/approve", post(approve))
        .route("/api/v1/subchains/{id}/requests/{identity}/reject", post(reject))
        .route("/api/v1/subchains/{id}/statement", get(statement))
        .route("/api/v1/subchains/{id}/statements/{revision}", get(statement_at))
        .route("/api/v1/memberships", get(my_memberships))
        .route("/api/v1/membership-key", get(membership_key))
}

impl From<RegistryError> for ApiError {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::InvalidField(m) => ApiError::InvalidField(m),
            RegistryError::NotFound(m) => ApiError::NotFound(m),
            RegistryError::Conflict(m) => ApiError::Conflict(m),
            e @ RegistryError::UnknownPlan(_) => ApiError::UnknownPlan(e.to_string()),
            e @ RegistryError::PlanNotOpen(_) => ApiError::PlanNotOpen(e.to_string()),
            RegistryError::NoPlacement(e) => match e {
                crate::placement::PlacementError::UnknownNode(_) => ApiError::InvalidField(e.to_string()),
                crate::placement::PlacementError::Cities | crate::placement::PlacementError::RepeatedCity(_) => {
                    ApiError::InvalidField(e.to_string())
                }
                _ => ApiError::NoPlacement(e.to_string()),
            },
            RegistryError::Internal(e) => ApiError::Internal(e),
        }
    }
}

fn subchain_id(id: &str) -> Result<SubchainId, ApiError> {
    SubchainId::parse(id).map_err(|e| ApiError::InvalidField(e.to_string()))
}

fn role(name: &str) -> Result<Role, ApiError> {
    Role::parse(name)
        .ok_or_else(|| ApiError::InvalidField(format!("role '{name}' is not one of: reader, writer, admin")))
}

fn policy(name: &str) -> Result<Policy, ApiError> {
    Policy::parse(name).ok_or_else(|| ApiError::InvalidField(format!("policy '{name}' is not one of: open, approval")))
}

fn text(field: &str, v: &str, max: usize) -> Result<(), ApiError> {
    if v.chars().count() > max || v.chars().any(char::is_control) {
        return Err(ApiError::InvalidField(format!(
            "{field} must be at most {max} characters without control characters"
        )));
    }
    Ok(())
}

/// Loads the subchain and fails unless the caller may manage it.
async fn managed(s: &AppState, caller: &Caller, id: &str) -> Result<crate::registry::Subchain, ApiError> {
    let id = subchain_id(id)?;
    let reg = registry(s);
    let sub = reg.require(id.as_str()).await?;
    if caller.is_admin() || sub.publisher == caller.identity.id {
        return Ok(sub);
    }
    if reg.role_of(id.as_str(), &caller.identity.id).await? == Some(Role::Admin) {
        return Ok(sub);
    }
    Err(ApiError::Forbidden(format!(
        "only the publisher, admins of '{id}' and CA administrators may manage it"
    )))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ListQuery {
    after: Option<String>,
    limit: Option<i64>,
    publisher: Option<String>,
}

/// The directory, for any authenticated identity.
async fn list(
    State(s): State<Arc<AppState>>,
    _caller: Caller,
    Query(q): Query<ListQuery>,
) -> Result<axum::Json<Page<bsn_api::ca::Subchain>>, ApiError> {
    let limit = page_limit(q.limit)?;
    let items = registry(&s)
        .list(q.after.as_deref().unwrap_or(""), limit, q.publisher.as_deref())
        .await?;
    let next_after = (items.len() as i64 == limit)
        .then(|| items.last().map(|i| i.id.clone()))
        .flatten();
    Ok(axum::Json(Page {
        items: {
            let endpoints = super::directory(&s).current().await?.nodes;
            items.into_iter().map(|i| subchain_view(i, &endpoints)).collect()
        },
        next_after,
    }))
}

async fn one(
    State(s): State<Arc<AppState>>,
    _caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<bsn_api::ca::Subchain>, ApiError> {
    let sub = registry(&s).require(subchain_id(&id)?.as_str()).await?;
    let endpoints = super::directory(&s).current().await?.nodes;
    Ok(axum::Json(subchain_view(sub, &endpoints)))
}

/// App publishers (role `publisher`) and administrators create subchains.
async fn create(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Json(r): Json<CreateSubchain>,
) -> Result<(StatusCode, axum::Json<bsn_api::ca::Revised>), ApiError> {
    caller.require_any(&[CaRole::Publisher, CaRole::Admin])?;
    if caller.identity.kind != IdentityKind::Participant {
        return Err(ApiError::Forbidden("only participants publish subchains".into()));
    }
    let id = subchain_id(&r.id)?;
    if r.name.trim().is_empty() {
        return Err(ApiError::InvalidField("name must not be empty".into()));
    }
    text("name", &r.name, 100)?;
    text("description", &r.description, 2000)?;
    let new = crate::registry::NewSubchain {
        id,
        name: r.name,
        description: r.description,
        policy: policy(&r.policy)?,
        nodes: r.nodes,
        cities: r.cities,
        plan: r.plan,
        assigns_any_plan: caller.is_admin(),
        orderers: r.orderers,
    };
    let revised = registry(&s)
        .create(new, &caller.identity.id, now().unix_timestamp())
        .await?;
    tracing::info!(subchain = %revised.subchain, by = %caller.identity.id, "subchain created");
    Ok((StatusCode::CREATED, axum::Json(revised_view(revised))))
}

async fn update(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(r): Json<UpdateSubchain>,
) -> Result<axum::Json<Updated>, ApiError> {
    let sub = managed(&s, &caller, &id).await?;
    if let Some(n) = &r.name {
        if n.trim().is_empty() {
            return Err(ApiError::InvalidField("name must not be empty".into()));
        }
        text("name", n, 100)?;
    }
    if let Some(d) = &r.description {
        text("description", d, 2000)?;
    }
    let patch = Patch {
        name: r.name,
        description: r.description,
        policy: r.policy.as_deref().map(policy).transpose()?,
        nodes: r.nodes,
        orderers: r.orderers,
        plan: r.plan,
        assigns_any_plan: caller.is_admin(),
    };
    let revision = registry(&s)
        .update(&sub.id, patch, &caller.identity.id, now().unix_timestamp())
        .await?;
    Ok(axum::Json(Updated {
        subchain: subchain_view(
            registry(&s).require(&sub.id).await?,
            &super::directory(&s).current().await?.nodes,
        ),
        revision: revision.map(revised_view),
    }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct PageQuery {
    after: Option<String>,
    limit: Option<i64>,
}

/// Fails unless the caller may see who the subchain's members are: its members, hosting nodes,
/// publisher, administrators and auditors. The member list, a statement of any revision (which
/// lists the members) and anything else naming them have this one audience.
async fn may_see_members(s: &AppState, caller: &Caller, id: &str) -> Result<(), ApiError> {
    let reg = registry(s);
    let sub = reg.require(id).await?;
    let me = &caller.identity.id;
    let allowed = caller.is_admin()
        || caller.reads_all_certificates()
        || &sub.publisher == me
        || sub.nodes.contains(me)
        || reg.role_of(id, me).await?.is_some();
    if allowed {
        Ok(())
    } else {
        Err(ApiError::Forbidden(format!(
            "only members, hosting nodes, managers and auditors of '{id}' may see its members"
        )))
    }
}

/// Members, for the subchain's managers, members and hosting nodes.
async fn members(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<PageQuery>,
) -> Result<axum::Json<Page<Member>>, ApiError> {
    let id = subchain_id(&id)?;
    let reg = registry(&s);
    may_see_members(&s, &caller, id.as_str()).await?;
    let limit = page_limit(q.limit)?;
    let items = reg
        .members(id.as_str(), q.after.as_deref().unwrap_or(""), limit)
        .await?;
    let next_after = (items.len() as i64 == limit)
        .then(|| items.last().map(|m| m.id.clone()))
        .flatten();
    Ok(axum::Json(Page { items, next_after }))
}

/// Adds up to 1,000 members in one revision (the 64 KiB body limit).
async fn add_members(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(r): Json<AddMembers>,
) -> Result<axum::Json<bsn_api::ca::Revised>, ApiError> {
    let sub = managed(&s, &caller, &id).await?;
    if r.members.is_empty() || r.members.len() > 1_000 {
        return Err(ApiError::InvalidField("give 1 to 1,000 members per call".into()));
    }
    let mut members = r
        .members
        .into_iter()
        .map(|m| {
            identity::IdentityId::parse(&m.id).map_err(|e| ApiError::InvalidField(e.to_string()))?;
            Ok(Member {
                id: m.id,
                role: role(&m.role)?,
            })
        })
        .collect::<Result<Vec<_>, ApiError>>()?;
    members.sort_by(|a, b| a.id.cmp(&b.id));
    if members.windows(2).any(|w| w[0].id == w[1].id) {
        return Err(ApiError::InvalidField("members must not repeat".into()));
    }
    let revised = registry(&s)
        .add_members(&sub.id, &members, &caller.identity.id, now().unix_timestamp())
        .await?;
    Ok(axum::Json(revised_view(revised)))
}

/// Adds a member or changes its role.
async fn put_member(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path((id, who)): Path<(String, String)>,
    Json(r): Json<SetRole>,
) -> Result<axum::Json<bsn_api::ca::Revised>, ApiError> {
    let sub = managed(&s, &caller, &id).await?;
    let role = role(&r.role)?;
    if who == sub.publisher && role != Role::Admin {
        return Err(ApiError::Conflict(
            "the publisher stays an admin of its subchain".into(),
        ));
    }
    let revised = registry(&s)
        .put_member(&sub.id, &who, role, &caller.identity.id, now().unix_timestamp())
        .await?;
    Ok(axum::Json(revised_view(revised)))
}

/// Removes a member (managers), or leaves (the member itself).
async fn remove_member(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path((id, who)): Path<(String, String)>,
) -> Result<axum::Json<bsn_api::ca::Revised>, ApiError> {
    let sub = if who == caller.identity.id {
        registry(&s).require(subchain_id(&id)?.as_str()).await?
    } else {
        managed(&s, &caller, &id).await?
    };
    let revised = registry(&s)
        .remove_member(&sub.id, &who, &caller.identity.id, now().unix_timestamp())
        .await?;
    Ok(axum::Json(revised_view(revised)))
}

/// A participant asks to join (open subchains admit readers and writers at once).
async fn join(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Json(r): Json<JoinRequestBody>,
) -> Result<(StatusCode, axum::Json<bsn_api::ca::Joined>), ApiError> {
    if caller.identity.kind != IdentityKind::Participant {
        return Err(ApiError::Forbidden("only participants join subchains".into()));
    }
    let id = subchain_id(&id)?;
    let role = role(&r.role)?;
    text("note", &r.note, 500)?;
    let joined = registry(&s)
        .join(id.as_str(), &caller.identity.id, role, &r.note, now().unix_timestamp())
        .await?;
    Ok(match joined {
        Joined::Member(r) => (StatusCode::OK, axum::Json(bsn_api::ca::Joined::Member(revised_view(r)))),
        Joined::Pending(r) => (
            StatusCode::ACCEPTED,
            axum::Json(bsn_api::ca::Joined::Pending(request_view(r))),
        ),
    })
}

async fn requests(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Items<bsn_api::ca::JoinRequest>>, ApiError> {
    let sub = managed(&s, &caller, &id).await?;
    let items = registry(&s).requests(&sub.id).await?;
    Ok(axum::Json(Items {
        items: items.into_iter().map(request_view).collect(),
    }))
}

async fn approve(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path((id, who)): Path<(String, String)>,
    Json(body): Json<Approve>,
) -> Result<axum::Json<bsn_api::ca::Revised>, ApiError> {
    let sub = managed(&s, &caller, &id).await?;
    if who == caller.identity.id {
        return Err(ApiError::Forbidden("nobody approves their own request".into()));
    }
    let reg = registry(&s);
    let request = reg
        .request_of(&sub.id, &who)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no pending request of '{who}' to join '{}'", sub.id)))?;
    let granted = match body.role {
        Some(r) => role(&r)?,
        None => request.role,
    };
    let revised = reg
        .put_member(&sub.id, &who, granted, &caller.identity.id, now().unix_timestamp())
        .await?;
    Ok(axum::Json(revised_view(revised)))
}

/// Managers reject a request; the requester may withdraw it.
async fn reject(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path((id, who)): Path<(String, String)>,
) -> Result<StatusCode, ApiError> {
    let sub = if who == caller.identity.id {
        registry(&s).require(subchain_id(&id)?.as_str()).await?
    } else {
        managed(&s, &caller, &id).await?
    };
    registry(&s).reject(&sub.id, &who).await?;
    Ok(StatusCode::NO_CONTENT)
}

async fn statement(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Envelope>, ApiError> {
    let id = subchain_id(&id)?;
    may_see_members(&s, &caller, id.as_str()).await?;
    registry(&s)
        .statement(id.as_str(), None)
        .await?
        .map(axum::Json)
        .ok_or_else(|| ApiError::NotFound(format!("no subchain '{id}'")))
}

async fn statement_at(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path((id, revision)): Path<(String, String)>,
) -> Result<axum::Json<Envelope>, ApiError> {
    let id = subchain_id(&id)?;
    may_see_members(&s, &caller, id.as_str()).await?;
    let revision: i64 = revision
        .parse()
        .ok()
        .filter(|r| *r >= 1)
        .ok_or_else(|| ApiError::InvalidField("revision must be a positive integer".into()))?;
    registry(&s)
        .statement(id.as_str(), Some(revision))
        .await?
        .map(axum::Json)
        .ok_or_else(|| ApiError::NotFound(format!("no revision {revision} of subchain '{id}'")))
}

async fn my_memberships(
    State(s): State<Arc<AppState>>,
    caller: Caller,
) -> Result<axum::Json<Items<MyMembership>>, ApiError> {
    let items: Vec<MyMembership> = registry(&s)
        .memberships(&caller.identity.id)
        .await?
        .into_iter()
        .map(|(subchain, role)| MyMembership { subchain, role })
        .collect();
    Ok(axum::Json(Items { items }))
}

/// The membership verification key (public; also in the SPIFFE bundle).
async fn membership_key(State(s): State<Arc<AppState>>) -> axum::Json<MembershipKey> {
    axum::Json(MembershipKey {
        algorithm: "Ed25519".into(),
        key: s.membership.public().to_base64(),
    })
}

/// A registry subchain as the API shows it.
fn subchain_view(s: crate::registry::Subchain, directory: &[DirectoryEntry]) -> bsn_api::ca::Subchain {
    let endpoints = directory
        .iter()
        .filter(|e| s.nodes.binary_search(&e.id).is_ok())
        .cloned()
        .collect();
    bsn_api::ca::Subchain {
        endpoints,
        orderers: s.orderers,
        id: s.id,
        name: s.name,
        publisher: s.publisher,
        description: s.description,
        policy: s.policy.name().to_string(),
        revision: s.revision,
        members: s.members,
        nodes: s.nodes,
        plan: s.plan,
        created_at: s.created_at,
        updated_at: s.updated_at,
    }
}

/// A new revision as the API shows it.
pub(super) fn revised_view(r: crate::registry::Revised) -> bsn_api::ca::Revised {
    bsn_api::ca::Revised {
        subchain: r.subchain,
        revision: r.revision,
        statement: r.statement,
        receipt: r.receipt,
    }
}

fn request_view(r: crate::registry::JoinRequest) -> bsn_api::ca::JoinRequest {
    bsn_api::ca::JoinRequest {
        subchain: r.subchain,
        identity: r.identity,
        role: r.role,
        note: r.note,
        requested_at: r.requested_at,
    }
}
