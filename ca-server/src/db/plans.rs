//! The plans on offer (issue 14): each a resource plan (`identity::plan::Plan`) and whether
//! publishers choose it themselves (`open`) or only an administrator assigns it. The rules are
//! in `crate::plans`.

use identity::plan::{Plan, Tenancy};
use sqlx::{AnyConnection, Row};

use super::DbError;

/// A plan on offer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Offer {
    /// The plan.
    pub plan: Plan,
    /// Publishers choose it themselves (otherwise only an administrator assigns it).
    pub open: bool,
}

const COLUMNS: &str = "name, tenancy, rate, burst, storage, bandwidth, open";

fn offer(r: &sqlx::any::AnyRow) -> Result<Offer, DbError> {
    let tenancy: String = r.try_get(1)?;
    let figure = |i: usize| -> Result<u64, DbError> {
        let v: i64 = r.try_get(i)?;
        u64::try_from(v).map_err(|_| DbError::Decode(format!("stored plan figure {v}").into()))
    };
    let plan = Plan {
        name: r.try_get(0)?,
        tenancy: match tenancy.as_str() {
            "shared" => Tenancy::Shared,
            "dedicated" => Tenancy::Dedicated,
            t => return Err(DbError::Decode(format!("stored tenancy '{t}'").into())),
        },
        rate: figure(2)?,
        burst: figure(3)?,
        storage: figure(4)?,
        bandwidth: figure(5)?,
    };
    plan.check()
        .map_err(|e| DbError::Decode(format!("stored plan: {e}").into()))?;
    let open: i64 = r.try_get(6)?;
    Ok(Offer { plan, open: open != 0 })
}

/// Every plan on offer: shared ones first, then by rate and name.
pub async fn list(c: &mut AnyConnection) -> Result<Vec<Offer>, DbError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM plans ORDER BY tenancy DESC, rate, name"
    )))
    .fetch_all(c)
    .await?;
    rows.iter().map(offer).collect()
}

/// The plan named `name`.
pub async fn get(c: &mut AnyConnection, name: &str) -> Result<Option<Offer>, DbError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {COLUMNS} FROM plans WHERE name = $1"
    )))
    .bind(name)
    .fetch_optional(c)
    .await?;
    row.as_ref().map(offer).transpose()
}

/// Defines `offer` (or changes the plan of its name).
pub async fn put(c: &mut AnyConnection, offer: &Offer, at: i64) -> Result<(), DbError> {
    let p = &offer.plan;
    let n = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    sqlx::query(
        "INSERT INTO plans (name, tenancy, rate, burst, storage, bandwidth, open, updated_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8) ON CONFLICT (name) DO UPDATE SET tenancy = excluded.tenancy, \
         rate = excluded.rate, burst = excluded.burst, storage = excluded.storage, \
         bandwidth = excluded.bandwidth, open = excluded.open, updated_at = excluded.updated_at",
    )
    .bind(&p.name)
    .bind(p.tenancy.as_str())
    .bind(n(p.rate))
    .bind(n(p.burst))
    .bind(n(p.storage))
    .bind(n(p.bandwidth))
    .bind(i64::from(offer.open))
    .bind(at)
    .execute(c)
    .await?;
    Ok(())
}

/// Withdraws the plan named `name` (subchains that have it keep it); false when there is none.
pub async fn delete(c: &mut AnyConnection, name: &str) -> Result<bool, DbError> {
    let r = sqlx::query("DELETE FROM plans WHERE name = $1")
        .bind(name)
        .execute(c)
        .await?;
    Ok(r.rows_affected() > 0)
}
