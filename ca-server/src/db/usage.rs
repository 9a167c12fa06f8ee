//! Usage reports and totals (issue 14). The rules (who may report what, replays) are in
//! `crate::usage`.

use identity::usage::UsageRow;
use sqlx::{AnyConnection, Row};

use super::DbError;

fn n(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// The newest report sequence number taken from `node` (0: none).
pub async fn last_seq(c: &mut AnyConnection, node: &str) -> Result<i64, DbError> {
    let v: Option<i64> = sqlx::query_scalar("SELECT MAX(seq) FROM usage_reports WHERE node = $1")
        .bind(node)
        .fetch_one(c)
        .await?;
    Ok(v.unwrap_or(0))
}

/// A report as received.
pub struct Received<'a> {
    /// The node.
    pub node: &'a str,
    /// Its sequence number.
    pub seq: i64,
    /// When the node made it.
    pub at: i64,
    /// The payload bytes.
    pub payload: &'a [u8],
    /// The signature bytes.
    pub signature: &'a [u8],
    /// The serial of the certificate it came with.
    pub serial: &'a str,
    /// When the CA took it.
    pub received: i64,
}

/// Stores a report.
pub async fn insert_report(c: &mut AnyConnection, r: &Received<'_>) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO usage_reports (node, seq, at, payload, signature, serial, received) \
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(r.node)
    .bind(r.seq)
    .bind(r.at)
    .bind(r.payload)
    .bind(r.signature)
    .bind(r.serial)
    .bind(r.received)
    .execute(c)
    .await?;
    Ok(())
}

/// Sets a (node, subchain, hour)'s totals from report `seq`, unless a newer report set them.
pub async fn upsert_row(c: &mut AnyConnection, node: &str, row: &UsageRow, seq: i64) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO usage (node, subchain, hour, transactions, bytes_written, bytes_stored, bytes_served, refused, seq) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9) ON CONFLICT (node, subchain, hour) DO UPDATE SET \
         transactions = excluded.transactions, bytes_written = excluded.bytes_written, \
         bytes_stored = excluded.bytes_stored, bytes_served = excluded.bytes_served, \
         refused = excluded.refused, seq = excluded.seq WHERE usage.seq < excluded.seq",
    )
    .bind(node)
    .bind(&row.subchain)
    .bind(row.hour)
    .bind(n(row.transactions))
    .bind(n(row.bytes_written))
    .bind(n(row.bytes_stored))
    .bind(n(row.bytes_served))
    .bind(n(row.refused))
    .bind(seq)
    .execute(c)
    .await?;
    Ok(())
}

/// Deletes `node`'s reports no total refers to any more, except the newest (which keeps its
/// sequence number for the replay check).
pub async fn prune_reports(c: &mut AnyConnection, node: &str, newest: i64) -> Result<(), DbError> {
    sqlx::query(
        "DELETE FROM usage_reports WHERE node = $1 AND seq < $2 \
         AND NOT EXISTS (SELECT 1 FROM usage u WHERE u.node = usage_reports.node AND u.seq = usage_reports.seq)",
    )
    .bind(node)
    .bind(newest)
    .execute(c)
    .await?;
    Ok(())
}

/// Whether `node` hosts or orders `subchain` now.
pub async fn takes_part(c: &mut AnyConnection, node: &str, subchain: &str) -> Result<bool, DbError> {
    let v: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM subchain_nodes WHERE subchain_id = $1 AND node_id = $2) \
              + (SELECT COUNT(*) FROM subchain_orderers WHERE subchain_id = $1 AND orderer_id = $2)",
    )
    .bind(subchain)
    .bind(node)
    .fetch_one(c)
    .await?;
    Ok(v > 0)
}

/// A subchain's totals per node and hour in [from, to), by hour then node.
pub async fn rows(
    c: &mut AnyConnection,
    subchain: &str,
    from: i64,
    to: i64,
) -> Result<Vec<(String, UsageRow)>, DbError> {
    let rows = sqlx::query(
        "SELECT node, hour, transactions, bytes_written, bytes_stored, bytes_served, refused FROM usage \
         WHERE subchain = $1 AND hour >= $2 AND hour < $3 ORDER BY hour, node LIMIT 100000",
    )
    .bind(subchain)
    .bind(from)
    .bind(to)
    .fetch_all(c)
    .await?;
    let u = |r: &sqlx::any::AnyRow, i: usize| -> Result<u64, DbError> {
        let v: i64 = r.try_get(i)?;
        Ok(u64::try_from(v).unwrap_or(0))
    };
    rows.iter()
        .map(|r| {
            Ok((
                r.try_get(0)?,
                UsageRow {
                    subchain: subchain.to_string(),
                    hour: r.try_get(1)?,
                    transactions: u(r, 2)?,
                    bytes_written: u(r, 3)?,
                    bytes_stored: u(r, 4)?,
                    bytes_served: u(r, 5)?,
                    refused: u(r, 6)?,
                },
            ))
        })
        .collect()
}
