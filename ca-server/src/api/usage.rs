//! Metering (issue 14): `POST /api/v1/usage` (a city node or orderer reports what it counted,
//! signed with its certificate's key) and `GET /api/v1/subchains/{id}/usage?from=&to=` (the
//! subchain's publisher and admins, CA administrators and auditors).

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, State};
use axum::routing::{get, post};
use bsn_api::ca::{NodeUsage, SubchainUsage, UsageAccepted, UsageTotals};
use identity::membership::{Role, SubchainId};
use identity::usage::SignedUsage;
use serde::Deserialize;

use super::registry;
use crate::app::{AppState, now};
use crate::auth::Caller;
use crate::problem::{ApiError, Json, Query};
use crate::usage::{Meter, UsageError};

pub(super) fn router() -> Router<Arc<AppState>> {
    Router::new()
        .route("/api/v1/usage", post(report))
        .route("/api/v1/subchains/{id}/usage", get(totals))
}

impl From<UsageError> for ApiError {
    fn from(e: UsageError) -> Self {
        match e {
            UsageError::Invalid(m) => ApiError::InvalidField(m),
            e @ UsageError::BadSignature => ApiError::InvalidProof(e.to_string()),
            UsageError::Forbidden(m) => ApiError::Forbidden(m),
            UsageError::Replayed(m) => ApiError::ReplayedReport(m),
            UsageError::Internal(e) => ApiError::Internal(e),
        }
    }
}

fn meter(s: &AppState) -> Meter<'_> {
    Meter {
        db: &s.db,
        trust_domain: s.trust_domain.as_str(),
    }
}

/// A node's signed usage report.
async fn report(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Json(body): Json<SignedUsage>,
) -> Result<axum::Json<UsageAccepted>, ApiError> {
    if !caller.identity.kind.is_network_node() || caller.serial == "session" {
        return Err(ApiError::Forbidden(
            "only a city node or an orderer reports usage, with its own certificate".into(),
        ));
    }
    let cert =
        s.db.certificate(&caller.serial)
            .await?
            .and_then(|c| c.der)
            .ok_or_else(|| ApiError::Internal(anyhow::anyhow!("no stored certificate {}", caller.serial)))?;
    let rows = meter(&s)
        .accept(
            &caller.identity.id,
            &caller.serial,
            &cert,
            &body,
            now().unix_timestamp(),
        )
        .await?;
    Ok(axum::Json(UsageAccepted { rows }))
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Period {
    from: Option<i64>,
    to: Option<i64>,
}

/// The longest period one request covers.
const MAX_PERIOD_SECS: i64 = 366 * 86_400;

/// A subchain's usage per node and hour.
async fn totals(
    State(s): State<Arc<AppState>>,
    caller: Caller,
    Path(id): Path<String>,
    Query(q): Query<Period>,
) -> Result<axum::Json<SubchainUsage>, ApiError> {
    let id = SubchainId::parse(&id).map_err(|e| ApiError::InvalidField(e.to_string()))?;
    let reg = registry(&s);
    let sub = reg.require(id.as_str()).await?;
    let me = &caller.identity.id;
    let allowed = caller.reads_all_certificates()
        || &sub.publisher == me
        || reg.role_of(id.as_str(), me).await? == Some(Role::Admin);
    if !allowed {
        return Err(ApiError::Forbidden(format!(
            "only the publisher and admins of '{id}', CA administrators and auditors see its usage"
        )));
    }
    let now = now().unix_timestamp();
    let to = q.to.unwrap_or(now - now.rem_euclid(3600) + 3600);
    let from = q.from.unwrap_or(to - 86_400);
    let from = from - from.rem_euclid(3600);
    if to <= from || to - from > MAX_PERIOD_SECS {
        return Err(ApiError::InvalidField(format!(
            "from must be before to, at most {} days apart",
            MAX_PERIOD_SECS / 86_400
        )));
    }
    let found = meter(&s).rows(id.as_str(), from, to).await?;
    let mut totals = UsageTotals::default();
    let last_hour = found.iter().map(|(_, r)| r.hour).max();
    let rows: Vec<NodeUsage> = found
        .into_iter()
        .map(|(node, r)| {
            totals.transactions += r.transactions;
            totals.bytes_written += r.bytes_written;
            totals.bytes_served += r.bytes_served;
            totals.refused += r.refused;
            if Some(r.hour) == last_hour {
                totals.bytes_stored += r.bytes_stored;
            }
            NodeUsage {
                node,
                hour: r.hour,
                transactions: r.transactions,
                bytes_written: r.bytes_written,
                bytes_stored: r.bytes_stored,
                bytes_served: r.bytes_served,
                refused: r.refused,
            }
        })
        .collect();
    Ok(axum::Json(SubchainUsage {
        subchain: id.as_str().to_string(),
        from,
        to,
        plan: sub.plan,
        rows,
        totals,
    }))
}
