//! The roots' store: every root the CA has had, its cross-certificate, its CRL and (when the CA
//! made it) its sealed key or its label in the token. The rules are in `crate::roots`.

use sqlx::{AnyConnection, Row};

use super::{DbError, NewKey};

/// A root as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RootRow {
    /// Its number (1: made at initialisation, or given by the offline root at init).
    pub number: i64,
    /// The self-signed certificate, DER.
    pub der: Vec<u8>,
    /// The same subject and key certified by root `number - 1`, DER (none for number 1).
    pub cross: Option<Vec<u8>>,
    /// Its current CRL, DER (none for number 1, whose CRL is the data directory's
    /// `root-crl.der`).
    pub crl: Option<Vec<u8>>,
    /// Its key, sealed with the CA's passphrase, when the CA made it outside a token.
    pub key_sealed: Option<String>,
    /// The label of its key in the CA's token, when the CA made it there.
    pub key_label: Option<String>,
    /// `published`, `active`, `retiring` or `withdrawn`.
    pub state: String,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub changed_at: i64,
}

impl RootRow {
    /// Whether relying parties trust it now (in the trust bundle).
    pub fn trusted(&self) -> bool {
        self.state != "withdrawn"
    }
}

fn row(r: &sqlx::any::AnyRow) -> Result<RootRow, sqlx::Error> {
    Ok(RootRow {
        number: r.try_get(0)?,
        der: r.try_get(1)?,
        cross: r.try_get(2)?,
        crl: r.try_get(3)?,
        key_sealed: r.try_get(4)?,
        key_label: r.try_get(5)?,
        state: r.try_get(6)?,
        created_at: r.try_get(7)?,
        changed_at: r.try_get(8)?,
    })
}

/// Every root, by number.
pub async fn all(c: &mut AnyConnection) -> Result<Vec<RootRow>, DbError> {
    let rows = sqlx::query(
        "SELECT number, der, cross_der, crl, key_sealed, key_label, state, created_at, changed_at \
         FROM roots ORDER BY number",
    )
    .fetch_all(c)
    .await?;
    rows.iter().map(row).collect()
}

/// What changes when the set of roots changes: (number, state) of each.
pub async fn states(c: &mut AnyConnection) -> Result<Vec<(i64, String)>, DbError> {
    let rows = sqlx::query("SELECT number, state FROM roots ORDER BY number")
        .fetch_all(c)
        .await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

/// Records the root of initialisation as number 1, active, unless it is recorded. Returns
/// whether it wrote.
pub async fn record_first(c: &mut AnyConnection, der: &[u8], at: i64) -> Result<bool, DbError> {
    let r = sqlx::query(
        "INSERT INTO roots (number, der, state, created_at, changed_at) VALUES (1, $1, 'active', $2, $2) \
         ON CONFLICT (number) DO NOTHING",
    )
    .bind(der)
    .bind(at)
    .execute(c)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// A new root, `published`.
pub struct NewRoot<'a> {
    /// Its number.
    pub number: i64,
    /// Its self-signed certificate.
    pub der: &'a [u8],
    /// Its cross-certificate from the root before it.
    pub cross: &'a [u8],
    /// Its first CRL.
    pub crl: &'a [u8],
    /// Its key, when the CA made it.
    pub key: Option<&'a NewKey>,
}

/// Adds a new root, `published`.
pub async fn insert(c: &mut AnyConnection, new: &NewRoot<'_>, at: i64) -> Result<(), DbError> {
    let (key_sealed, key_label) = new.key.map(NewKey::columns).unwrap_or((None, None));
    sqlx::query(
        "INSERT INTO roots (number, der, cross_der, crl, key_sealed, key_label, state, created_at, changed_at) \
         VALUES ($1, $2, $3, $4, $5, $6, 'published', $7, $7)",
    )
    .bind(new.number)
    .bind(new.der)
    .bind(new.cross)
    .bind(new.crl)
    .bind(key_sealed)
    .bind(key_label)
    .bind(at)
    .execute(c)
    .await?;
    Ok(())
}

/// Moves `number` from state `from` to `to`; false if it was not in `from`.
pub async fn set_state(c: &mut AnyConnection, number: i64, from: &str, to: &str, at: i64) -> Result<bool, DbError> {
    let r = sqlx::query("UPDATE roots SET state = $3, changed_at = $4 WHERE number = $1 AND state = $2")
        .bind(number)
        .bind(from)
        .bind(to)
        .bind(at)
        .execute(c)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Erases a withdrawn root's sealed key and CRL.
pub async fn drop_key(c: &mut AnyConnection, number: i64) -> Result<(), DbError> {
    sqlx::query("UPDATE roots SET key_sealed = NULL, crl = NULL WHERE number = $1")
        .bind(number)
        .execute(c)
        .await?;
    Ok(())
}

/// Replaces root `number`'s CRL (a later root's; number 1's is a file).
pub async fn set_crl(c: &mut AnyConnection, number: i64, crl: &[u8]) -> Result<(), DbError> {
    sqlx::query("UPDATE roots SET crl = $2 WHERE number = $1")
        .bind(number)
        .bind(crl)
        .execute(c)
        .await?;
    Ok(())
}

/// The intermediates root `number` certified that are not retired: (number, state).
pub async fn live_intermediates(c: &mut AnyConnection, root: i64) -> Result<Vec<(i64, String)>, DbError> {
    let rows =
        sqlx::query("SELECT number, state FROM issuing_cas WHERE root = $1 AND state <> 'retired' ORDER BY number")
            .bind(root)
            .fetch_all(c)
            .await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

/// A feed event for every node: root `number` took `step`.
pub async fn insert_feed_event(
    c: &mut AnyConnection,
    seq: i64,
    number: i64,
    step: &str,
    at: i64,
) -> Result<(), DbError> {
    sqlx::query("INSERT INTO feed (seq, kind, revision, reason, at) VALUES ($1, 'root', $2, $3, $4)")
        .bind(seq)
        .bind(number)
        .bind(step)
        .bind(at)
        .execute(&mut *c)
        .await?;
    super::registry::for_every_node(c, seq).await
}
