//! The node directory's store: each city node's and orderer's own entry, and every signed
//! revision of the directory. The rules (only a node sets its own entry, one revision per
//! change, feed order) are in `crate::nodes`.

use identity::IdentityKind;
use identity::membership::{DirectoryEntry, Envelope};
use identity::plan::Capacity;
use sqlx::{AnyConnection, Row};

use super::DbError;
use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;

fn capacity(json: Option<String>) -> Result<Option<Capacity>, DbError> {
    json.map(|j| {
        let c: Capacity =
            serde_json::from_str(&j).map_err(|e| DbError::Decode(format!("stored capacity: {e}").into()))?;
        c.check()
            .map_err(|e| DbError::Decode(format!("stored capacity: {e}").into()))?;
        Ok(c)
    })
    .transpose()
}

/// Every entry, sorted by id, with the role its identity's kind gives it (and, when
/// `active_nodes`, only city nodes whose identity is active: the ones placement may use).
async fn select(c: &mut AnyConnection, active_nodes: bool) -> Result<Vec<DirectoryEntry>, DbError> {
    let only = if active_nodes {
        " WHERE i.kind = 'node' AND i.status = 'active'"
    } else {
        ""
    };
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT n.id, i.kind, n.city, n.url, n.capacity, n.draining FROM network_nodes n \
         JOIN identities i ON i.id = n.id{only} ORDER BY n.id"
    )))
    .fetch_all(c)
    .await?;
    rows.iter()
        .map(|r| {
            let kind: String = r.try_get(1)?;
            let draining: i64 = r.try_get(5)?;
            Ok(DirectoryEntry {
                id: r.try_get(0)?,
                role: kind
                    .parse::<IdentityKind>()
                    .map_err(|e| DbError::Decode(format!("identity kind {kind:?}: {e}").into()))?,
                city: r.try_get(2)?,
                url: r.try_get(3)?,
                capacity: capacity(r.try_get(4)?)?,
                draining: draining != 0,
            })
        })
        .collect()
}

/// Every entry, sorted by id, with the role its identity's kind gives it.
pub async fn entries(c: &mut AnyConnection) -> Result<Vec<DirectoryEntry>, DbError> {
    select(c, false).await
}

/// The entries of active city nodes (what placement may choose from, with those that declared
/// no capacity), sorted by id.
pub async fn active_city_nodes(c: &mut AnyConnection) -> Result<Vec<DirectoryEntry>, DbError> {
    select(c, true).await
}

/// `id`'s entry (city, url, capacity), if it published one.
pub async fn entry(c: &mut AnyConnection, id: &str) -> Result<Option<(String, String, Option<Capacity>)>, DbError> {
    let row = sqlx::query("SELECT city, url, capacity FROM network_nodes WHERE id = $1")
        .bind(id)
        .fetch_optional(c)
        .await?;
    row.map(|r| Ok((r.try_get(0)?, r.try_get(1)?, capacity(r.try_get(2)?)?)))
        .transpose()
}

/// Sets `id`'s own entry (keeping whether it is draining).
pub async fn upsert(
    c: &mut AnyConnection,
    id: &str,
    city: &str,
    url: &str,
    declared: Option<&Capacity>,
    at: i64,
) -> Result<(), DbError> {
    let declared = declared
        .map(serde_json::to_string)
        .transpose()
        .map_err(|e| DbError::Decode(e.to_string().into()))?;
    sqlx::query(
        "INSERT INTO network_nodes (id, city, url, capacity, updated_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (id) DO UPDATE SET city = excluded.city, url = excluded.url, capacity = excluded.capacity, \
         updated_at = excluded.updated_at",
    )
    .bind(id)
    .bind(city)
    .bind(url)
    .bind(declared)
    .bind(at)
    .execute(c)
    .await?;
    Ok(())
}

/// Marks `id` draining (or back in service); false when it has no entry or already was so.
pub async fn set_draining(c: &mut AnyConnection, id: &str, draining: bool, at: i64) -> Result<bool, DbError> {
    let r = sqlx::query("UPDATE network_nodes SET draining = $1, updated_at = $2 WHERE id = $3 AND draining <> $1")
        .bind(i64::from(draining))
        .bind(at)
        .bind(id)
        .execute(c)
        .await?;
    Ok(r.rows_affected() > 0)
}

/// The newest signed revision: (revision, envelope).
pub async fn latest(c: &mut AnyConnection) -> Result<Option<(i64, Envelope)>, DbError> {
    let row =
        sqlx::query("SELECT revision, payload, signature FROM directory_revisions ORDER BY revision DESC LIMIT 1")
            .fetch_optional(c)
            .await?;
    row.map(|r| {
        let payload: Vec<u8> = r.try_get(1)?;
        let signature: Vec<u8> = r.try_get(2)?;
        Ok((
            r.try_get(0)?,
            Envelope {
                payload: B64.encode(payload),
                signature: B64.encode(signature),
            },
        ))
    })
    .transpose()
}

/// Stores a signed revision (`payload` and `signature` are the envelope's raw bytes).
pub async fn insert_revision(
    c: &mut AnyConnection,
    revision: i64,
    payload: &[u8],
    signature: &[u8],
    at: i64,
) -> Result<(), DbError> {
    sqlx::query("INSERT INTO directory_revisions (revision, payload, signature, at) VALUES ($1, $2, $3, $4)")
        .bind(revision)
        .bind(payload)
        .bind(signature)
        .bind(at)
        .execute(c)
        .await?;
    Ok(())
}

/// The feed event of a new revision, for every node.
pub async fn insert_directory_event(c: &mut AnyConnection, seq: i64, revision: i64, at: i64) -> Result<(), DbError> {
    sqlx::query("INSERT INTO feed (seq, kind, revision, at) VALUES ($1, 'directory', $2, $3)")
        .bind(seq)
        .bind(revision)
        .bind(at)
        .execute(&mut *c)
        .await?;
    super::registry::for_every_node(c, seq).await
}
