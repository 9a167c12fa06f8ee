//! The issuing intermediates' store: every intermediate the CA has had, its state and (for
//! those made by rotation) its sealed key. The rules are in `crate::intermediates`.

use sqlx::{AnyConnection, Row};

use super::{DbError, NewKey};

/// An intermediate as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IntermediateRow {
    /// Its number (1: made at initialisation).
    pub number: i64,
    /// The certificate, DER (empty while `requested`).
    pub der: Vec<u8>,
    /// The CSR waiting for an offline root's signature (while `requested`).
    pub csr: Option<String>,
    /// Its key, sealed with the CA's passphrase (none for number 1, whose key is where init
    /// put it, for one whose key is in the CA's token, and for a retired one, whose key was
    /// destroyed).
    pub key_sealed: Option<String>,
    /// The label of its key in the CA's PKCS#11 token, when rotation made it there.
    pub key_label: Option<String>,
    /// `requested`, `next`, `published`, `active`, `retiring` or `retired`.
    pub state: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub changed_at: i64,
    /// The number of the root that certified it (or is to, while `requested`).
    pub root: i64,
}

fn row(r: &sqlx::any::AnyRow) -> Result<IntermediateRow, sqlx::Error> {
    Ok(IntermediateRow {
        number: r.try_get(0)?,
        der: r.try_get::<Option<Vec<u8>>, _>(1)?.unwrap_or_default(),
        key_sealed: r.try_get(2)?,
        state: r.try_get(3)?,
        created_at: r.try_get(4)?,
        changed_at: r.try_get(5)?,
        csr: r.try_get(6)?,
        key_label: r.try_get(7)?,
        root: r.try_get(8)?,
    })
}

/// Every intermediate, by number.
pub async fn all(c: &mut AnyConnection) -> Result<Vec<IntermediateRow>, DbError> {
    let rows = sqlx::query(
        "SELECT number, der, key_sealed, state, created_at, changed_at, csr, key_label, root FROM issuing_cas \
         ORDER BY number",
    )
    .fetch_all(c)
    .await?;
    rows.iter().map(row).collect()
}

/// What changes when the set of intermediates changes: (number, state) of each, by number.
pub async fn states(c: &mut AnyConnection) -> Result<Vec<(i64, String)>, DbError> {
    let rows = sqlx::query("SELECT number, state FROM issuing_cas ORDER BY number")
        .fetch_all(c)
        .await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

/// Records the intermediate made at initialisation as number 1, active, unless it is recorded
/// (a CA initialised before rotation existed, or just now; replicas starting together write it
/// once). Returns whether it wrote.
pub async fn record_first(c: &mut AnyConnection, der: &[u8], at: i64) -> Result<bool, DbError> {
    let r = sqlx::query(
        "INSERT INTO issuing_cas (number, der, key_sealed, state, created_at, changed_at) \
         VALUES (1, $1, NULL, 'active', $2, $2) ON CONFLICT (number) DO NOTHING",
    )
    .bind(der)
    .bind(at)
    .execute(c)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Adds a new intermediate: `next` with its certificate, or `requested` with the CSR an offline
/// root is to sign; its key sealed here or named in the token; certified by root `root`.
pub async fn insert_new(
    c: &mut AnyConnection,
    number: i64,
    made: &Made,
    key: &NewKey,
    root: i64,
    at: i64,
) -> Result<(), DbError> {
    let (key_sealed, key_label) = key.columns();
    let (der, csr, state) = match made {
        Made::Certificate(der) => (Some(der.clone()), None, "next"),
        Made::Request(csr) => (None, Some(csr.clone()), "requested"),
    };
    sqlx::query(
        "INSERT INTO issuing_cas (number, der, csr, key_sealed, key_label, state, created_at, changed_at, root) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $7, $8)",
    )
    .bind(number)
    .bind(der)
    .bind(csr)
    .bind(key_sealed)
    .bind(key_label)
    .bind(state)
    .bind(at)
    .bind(root)
    .execute(c)
    .await?;
    Ok(())
}

/// What making a new intermediate produced.
#[derive(Debug, Clone)]
pub enum Made {
    /// Its certificate, signed by the root at hand (DER).
    Certificate(Vec<u8>),
    /// Its CSR (PEM), for the offline root.
    Request(String),
}

/// Stores the certificate an offline root signed for `requested` intermediate `number`, which
/// becomes `next`; false if it was not `requested`.
pub async fn adopt(c: &mut AnyConnection, number: i64, der: &[u8], at: i64) -> Result<bool, DbError> {
    let r = sqlx::query(
        "UPDATE issuing_cas SET der = $2, csr = NULL, state = 'next', changed_at = $3 \
         WHERE number = $1 AND state = 'requested'",
    )
    .bind(number)
    .bind(der)
    .bind(at)
    .execute(c)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Moves `number` from state `from` to `to`; false if it was not in `from`.
pub async fn set_state(c: &mut AnyConnection, number: i64, from: &str, to: &str, at: i64) -> Result<bool, DbError> {
    let r = sqlx::query("UPDATE issuing_cas SET state = $3, changed_at = $4 WHERE number = $1 AND state = $2")
        .bind(number)
        .bind(from)
        .bind(to)
        .bind(at)
        .execute(c)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Destroys a retired intermediate's sealed key.
pub async fn drop_key(c: &mut AnyConnection, number: i64) -> Result<(), DbError> {
    sqlx::query("UPDATE issuing_cas SET key_sealed = NULL WHERE number = $1")
        .bind(number)
        .execute(c)
        .await?;
    Ok(())
}

/// The certificates `issuer` signed that are still valid at `now` (revoked ones included: their
/// revocation is published on its CRL until they expire): how many, and when the last expires.
pub async fn unexpired(c: &mut AnyConnection, issuer: i64, now: i64) -> Result<(i64, Option<i64>), DbError> {
    let r = sqlx::query("SELECT COUNT(*), MAX(not_after) FROM certificates WHERE issuer = $1 AND not_after > $2")
        .bind(issuer)
        .bind(now)
        .fetch_one(c)
        .await?;
    Ok((r.try_get(0)?, r.try_get(1)?))
}

/// Deletes a retired intermediate's CRL.
pub async fn drop_crl(c: &mut AnyConnection, issuer: i64) -> Result<(), DbError> {
    sqlx::query("DELETE FROM crls WHERE issuer = $1")
        .bind(issuer)
        .execute(c)
        .await?;
    Ok(())
}

/// A feed event for every node: intermediate `number` took `step`.
pub async fn insert_feed_event(
    c: &mut AnyConnection,
    seq: i64,
    number: i64,
    step: &str,
    at: i64,
) -> Result<(), DbError> {
    sqlx::query("INSERT INTO feed (seq, kind, revision, reason, at) VALUES ($1, 'intermediate', $2, $3, $4)")
        .bind(seq)
        .bind(number)
        .bind(step)
        .bind(at)
        .execute(&mut *c)
        .await?;
    super::registry::for_every_node(c, seq).await
}

/// The feed position at which intermediate `number` was published, if it was.
pub async fn published_at(c: &mut AnyConnection, number: i64) -> Result<Option<i64>, DbError> {
    let r =
        sqlx::query("SELECT MAX(seq) FROM feed WHERE kind = 'intermediate' AND revision = $1 AND reason = 'published'")
            .bind(number)
            .fetch_one(c)
            .await?;
    r.try_get(0)
}

/// Active node identities that acknowledged a feed position at or after `since` (Unix seconds)
/// but not yet `seq`: (node, acknowledged position, when), by node.
pub async fn behind(c: &mut AnyConnection, seq: i64, since: i64) -> Result<Vec<(String, i64, i64)>, DbError> {
    let rows = sqlx::query(
        "SELECT a.node_id, a.seq, a.at FROM feed_acks a JOIN identities i ON i.id = a.node_id \
         WHERE a.at >= $1 AND a.seq < $2 AND i.status = 'active' ORDER BY a.node_id",
    )
    .bind(since)
    .bind(seq)
    .fetch_all(c)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, r.try_get(2)?)))
        .collect()
}
