//! The node directory: `GET /api/v1/nodes` (public), `PUT /api/v1/nodes/self` (a city node
//! or orderer, with its own certificate, says where it runs and what it offers), and
//! `POST|DELETE /api/v1/nodes/{id}/drain` (administrators take a city node out of service for
//! placement, moving its subchains, or put it back).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post, put};
use bsn_api::ca::{Drained, MovedSubchain, Nodes, OwnEntry, StuckSubchain};
use identity::CaRole;

use super::directory;
use crate::app::AppState;
use crate::auth::Caller;
use crate::nodes::Current;
use crate::problem::{ApiError, Json};

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/nodes", get(list))
        .route("/api/v1/nodes/self", put(set_own))
        .route("/api/v1/nodes/{id}/drain", post(drain).delete(undrain))
}

fn view(c: Current) -> Nodes {
    Nodes {
        revision: c.revision,
        nodes: c.nodes,
        signed: c.signed,
    }
}

/// Every node's role, city and URL, and the signed directory (public: participants look up
/// where a subchain is served, nodes where their peers are).
async fn list(State(s): State<Arc<AppState>>) -> Result<axum::Json<Nodes>, ApiError> {
    Ok(axum::Json(view(directory(&s).current().await?)))
}

/// A node's own entry: only the node itself, authenticated by its certificate, may set it.
async fn set_own(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<OwnEntry>,
) -> Result<axum::Json<Nodes>, ApiError> {
    let kind = caller.identity.kind;
    if !kind.is_network_node() || caller.serial == "session" {
        return Err(ApiError::Forbidden(
            "only a city node or an orderer sets its own directory entry, with its own certificate".into(),
        ));
    }
    Ok(axum::Json(view(
        directory(&s)
            .set_own(&caller.identity.id, kind, &body.city, &body.url, body.capacity.as_ref())
            .await?,
    )))
}

/// Takes a city node out of service for placement and moves its subchains, one membership
/// revision each, to the nodes placement picks in its city (administrators). Subchains that fit
/// nowhere stay and are listed; calling it again retries them.
async fn drain(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Drained>, ApiError> {
    caller.require_any(&[CaRole::Admin])?;
    let marked = directory(&s)
        .set_draining(&id, true)
        .await?
        .ok_or_else(|| ApiError::NotFound(format!("no node '{id}' is in the node directory")))?;
    let registry = super::registry(&s);
    let (mut moved, mut stuck) = (Vec::new(), Vec::new());
    for subchain in registry.hosted_by(&id).await? {
        match registry
            .rehost(&subchain, &id, &caller.identity.id, crate::app::now().unix_timestamp())
            .await
        {
            Ok(Some(r)) => moved.push(MovedSubchain {
                nodes: registry.require(&subchain).await?.nodes,
                subchain,
                revision: r.revision,
            }),
            Ok(None) => {}
            Err(crate::registry::RegistryError::NoPlacement(e)) => stuck.push(StuckSubchain {
                subchain,
                why: e.to_string(),
            }),
            Err(e) => return Err(e.into()),
        }
    }
    tracing::info!(node = %id, moved = moved.len(), stuck = stuck.len(), by = %caller.identity.id, "node drained");
    Ok(axum::Json(Drained {
        node: id,
        directory_revision: marked.revision,
        moved,
        stuck,
    }))
}

/// Puts a drained node back in service for placement (administrators).
async fn undrain(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
) -> Result<axum::Json<Nodes>, ApiError> {
    caller.require_any(&[CaRole::Admin])?;
    Ok(axum::Json(view(
        directory(&s)
            .set_draining(&id, false)
            .await?
            .ok_or_else(|| ApiError::NotFound(format!("no node '{id}' is in the node directory")))?,
    )))
}
