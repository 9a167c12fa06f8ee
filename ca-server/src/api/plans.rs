//! Resource plans (issue 14): `GET /api/v1/plans` (public: what a publisher may choose) and, for
//! administrators, `PUT /api/v1/plans/{name}` (define or change one) and `DELETE` (withdraw
//! it). A plan's figures are copied into the statement of each subchain that chooses it, so a
//! change applies to a subchain when its plan is chosen again, never behind its back.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::routing::get;
use bsn_api::ca::{PlanOffer, Plans};
use identity::CaRole;

use crate::app::{AppState, now};
use crate::auth::Caller;
use crate::db::plans::{self as store, Offer};
use crate::problem::{ApiError, Json};

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/plans", get(list))
        .route("/api/v1/plans/{name}", get(one).put(put).delete(withdraw))
}

fn view(o: Offer) -> PlanOffer {
    PlanOffer {
        plan: o.plan,
        open: o.open,
    }
}

/// Every plan on offer.
async fn list(State(s): State<Arc<AppState>>) -> Result<axum::Json<Plans>, ApiError> {
    let plans = store::list(&mut *s.db.acquire().await?).await?;
    Ok(axum::Json(Plans {
        plans: plans.into_iter().map(view).collect(),
    }))
}

/// One plan.
async fn one(State(s): State<Arc<AppState>>, Path(name): Path<String>) -> Result<axum::Json<PlanOffer>, ApiError> {
    store::get(&mut *s.db.acquire().await?, &name)
        .await?
        .map(|o| axum::Json(view(o)))
        .ok_or_else(|| ApiError::UnknownPlan(format!("no plan '{name}' is on offer")))
}

/// Defines a plan or changes one (administrators).
async fn put(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
    Json(body): Json<PlanOffer>,
) -> Result<axum::Json<PlanOffer>, ApiError> {
    caller.require_any(&[CaRole::Admin])?;
    if body.plan.name != name {
        return Err(ApiError::InvalidField(format!(
            "the plan's name '{}' is not the one in the path '{name}'",
            body.plan.name
        )));
    }
    body.plan.check().map_err(ApiError::InvalidField)?;
    let offer = Offer {
        plan: body.plan,
        open: body.open,
    };
    store::put(&mut *s.db.acquire_writer().await?, &offer, now().unix_timestamp()).await?;
    tracing::info!(plan = %name, by = %caller.identity.id, "plan defined");
    Ok(axum::Json(view(offer)))
}

/// Withdraws a plan (administrators): no new subchain chooses it; those that have it keep it.
async fn withdraw(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(name): Path<String>,
) -> Result<StatusCode, ApiError> {
    caller.require_any(&[CaRole::Admin])?;
    if !store::delete(&mut *s.db.acquire_writer().await?, &name).await? {
        return Err(ApiError::UnknownPlan(format!("no plan '{name}' is on offer")));
    }
    tracing::info!(plan = %name, by = %caller.identity.id, "plan withdrawn");
    Ok(StatusCode::NO_CONTENT)
}
