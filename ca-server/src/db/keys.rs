//! The CA's Ed25519 signing keys' store (`signing_keys`): every log and membership key the CA has
//! had, its state and (for those made by a handover) its sealed key. The rules are in
//! `crate::handover`; the log's signer reads its keys here.

use sqlx::{AnyConnection, Row};

use super::{DbError, NewKey};

/// A signing key as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRow {
    /// `log` or `membership`.
    pub purpose: String,
    /// Its number (1: made at initialisation).
    pub number: i64,
    /// `incoming`, `active` or `retired`.
    pub state: String,
    /// The raw Ed25519 public key, base64.
    pub public_key: String,
    /// Its PKCS#8 key sealed with the CA's passphrase (none for number 1, whose key is where init
    /// put it, and for a retired one).
    pub key_sealed: Option<String>,
    /// The label of its key in the CA's PKCS#11 token, when a handover made it there.
    pub key_label: Option<String>,
    /// For a log key that took over: the last checkpoint its predecessor and it both signed.
    pub handover_checkpoint: Option<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub changed_at: i64,
}

fn row(r: &sqlx::any::AnyRow) -> Result<KeyRow, sqlx::Error> {
    Ok(KeyRow {
        purpose: r.try_get(0)?,
        number: r.try_get(1)?,
        state: r.try_get(2)?,
        public_key: r.try_get(3)?,
        key_sealed: r.try_get(4)?,
        handover_checkpoint: r.try_get(5)?,
        created_at: r.try_get(6)?,
        changed_at: r.try_get(7)?,
        key_label: r.try_get(8)?,
    })
}

/// Every key of `purpose`, by number.
pub async fn all(c: &mut AnyConnection, purpose: &str) -> Result<Vec<KeyRow>, DbError> {
    let rows = sqlx::query(
        "SELECT purpose, number, state, public_key, key_sealed, handover_checkpoint, created_at, changed_at, \
         key_label FROM signing_keys WHERE purpose = $1 ORDER BY number",
    )
    .bind(purpose)
    .fetch_all(c)
    .await?;
    rows.iter().map(row).collect()
}

/// Records the key made at initialisation as number 1, active, unless one is recorded. Returns
/// whether it wrote.
pub async fn record_first(c: &mut AnyConnection, purpose: &str, public_key: &str, at: i64) -> Result<bool, DbError> {
    let r = sqlx::query(
        "INSERT INTO signing_keys (purpose, number, state, public_key, created_at, changed_at) \
         VALUES ($1, 1, 'active', $2, $3, $3) ON CONFLICT (purpose, number) DO NOTHING",
    )
    .bind(purpose)
    .bind(public_key)
    .bind(at)
    .execute(c)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Adds key `number` of `purpose` as `incoming`, sealed here or named in the token.
pub async fn insert_incoming(
    c: &mut AnyConnection,
    purpose: &str,
    number: i64,
    public_key: &str,
    key: &NewKey,
    at: i64,
) -> Result<(), DbError> {
    let (key_sealed, key_label) = key.columns();
    sqlx::query(
        "INSERT INTO signing_keys (purpose, number, state, public_key, key_sealed, key_label, created_at, changed_at) \
         VALUES ($1, $2, 'incoming', $3, $4, $5, $6, $6)",
    )
    .bind(purpose)
    .bind(number)
    .bind(public_key)
    .bind(key_sealed)
    .bind(key_label)
    .bind(at)
    .execute(c)
    .await?;
    Ok(())
}

/// Finishes a handover: `number` becomes active (keeping `checkpoint`, the last one both keys
/// signed, for a log key), the active one retired with its sealed key erased. False if `number`
/// was not incoming.
pub async fn finish(
    c: &mut AnyConnection,
    purpose: &str,
    number: i64,
    checkpoint: Option<&str>,
    at: i64,
) -> Result<bool, DbError> {
    sqlx::query(
        "UPDATE signing_keys SET state = 'retired', key_sealed = NULL, changed_at = $2 \
         WHERE purpose = $1 AND state = 'active'",
    )
    .bind(purpose)
    .bind(at)
    .execute(&mut *c)
    .await?;
    let r = sqlx::query(
        "UPDATE signing_keys SET state = 'active', handover_checkpoint = $3, changed_at = $4 \
         WHERE purpose = $1 AND number = $2 AND state = 'incoming'",
    )
    .bind(purpose)
    .bind(number)
    .bind(checkpoint)
    .bind(at)
    .execute(c)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Marks a change of the signing keys: the log's signers compare it with what they loaded.
pub async fn bump_epoch(c: &mut AnyConnection) -> Result<(), DbError> {
    sqlx::query("UPDATE log_state SET key_epoch = key_epoch + 1 WHERE id = 1")
        .execute(c)
        .await?;
    Ok(())
}

/// The current key epoch.
pub async fn epoch(c: &mut AnyConnection) -> Result<i64, DbError> {
    sqlx::query_scalar("SELECT key_epoch FROM log_state WHERE id = 1")
        .fetch_one(c)
        .await
}

/// Erases membership key 1's sealed copy (`ca_meta`), once a handover retired it.
pub async fn erase_first_membership_key(c: &mut AnyConnection) -> Result<(), DbError> {
    sqlx::query("DELETE FROM ca_meta WHERE k = 'membership_key_sealed'")
        .execute(c)
        .await?;
    Ok(())
}

/// Announces membership key `number`'s handover to every node on the feed.
pub async fn insert_feed_event(c: &mut AnyConnection, seq: i64, number: i64, at: i64) -> Result<(), DbError> {
    sqlx::query("INSERT INTO feed (seq, kind, revision, reason, at) VALUES ($1, 'key', $2, 'finished', $3)")
        .bind(seq)
        .bind(number)
        .bind(at)
        .execute(&mut *c)
        .await?;
    super::registry::for_every_node(c, seq).await
}
