//! The node directory: `GET /api/v1/nodes` (public) and `PUT /api/v1/nodes/self` (a city node
//! or orderer, with its own certificate, says where it runs).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::routing::{get, put};
use bsn_api::ca::{Nodes, OwnEntry};

use crate::app::AppState;
use crate::auth::Caller;
use crate::nodes::{Current, Directory};
use crate::problem::{ApiError, Json};

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/nodes", get(list))
        .route("/api/v1/nodes/self", put(set_own))
}

pub(super) fn directory(s: &AppState) -> Directory<'_> {
    Directory {
        db: &s.db,
        signer: &s.membership,
        feed: &s.feed_wakeup,
    }
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
            .set_own(&caller.identity.id, kind, &body.city, &body.url)
            .await?,
    )))
}
