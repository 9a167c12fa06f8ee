//! The CA's store: one code path over sqlx's `Any` driver for SQLite (default) and PostgreSQL,
//! with a migration set per backend. Only plain column types are used (TEXT, BIGINT, BLOB/BYTEA),
//! which `Any` maps the same way on both.
//!
//! Durability: SQLite runs in WAL mode with `synchronous=FULL` (every commit is fsynced);
//! PostgreSQL with its default `synchronous_commit=on`.

use std::time::Duration;

use identity::{CaRole, IdentityKind, IdentityStatus};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::migrate::Migrator;
use sqlx::{Any, AnyPool, Row, Transaction};
use time::OffsetDateTime;

use crate::pki::{Ca, Reason, RevokedEntry};

pub mod accounts;
pub mod intermediates;
pub mod keys;
pub mod nodes;
pub mod plans;
pub mod registry;
pub mod roots;
pub mod usage;

static SQLITE: Migrator = sqlx::migrate!("../migrations/sqlite");
static POSTGRES: Migrator = sqlx::migrate!("../migrations/postgres");

/// A database failure (connection, SQL, constraint) that is not the client's fault.
pub type DbError = sqlx::Error;

/// Where a key made by a rotation or a handover is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum NewKey {
    /// Sealed with the CA's passphrase, in the database.
    Sealed(String),
    /// In the CA's token, under this label.
    Token(String),
}

impl NewKey {
    /// Its `key_sealed` and `key_label` columns.
    pub fn columns(&self) -> (Option<&str>, Option<&str>) {
        match self {
            NewKey::Sealed(s) => (Some(s.as_str()), None),
            NewKey::Token(l) => (None, Some(l.as_str())),
        }
    }
}

/// A connection, or (through `&mut *tx`) the connection of a transaction: what the store
/// functions that run inside a caller's transaction take.
pub type Conn = sqlx::AnyConnection;

/// Which database is behind the pool.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// Embedded SQLite file.
    Sqlite,
    /// PostgreSQL server.
    Postgres,
}

/// The store.
#[derive(Clone)]
pub struct Db {
    pool: AnyPool,
    /// Where write transactions run: on SQLite a pool of one connection, so this process's
    /// writers queue in order for it (SQLite has one writer at a time anyway; left to its busy
    /// handler they poll with growing sleeps, and under a long burst one could starve past the
    /// busy timeout and fail with "database is locked"); on PostgreSQL the pool itself.
    writer: AnyPool,
    /// The backend.
    pub backend: Backend,
}

/// An identity as stored.
#[derive(Debug, Clone)]
pub struct IdentityRow {
    /// Id.
    pub id: String,
    /// Participant or node.
    pub kind: IdentityKind,
    /// CA roles.
    pub roles: Vec<CaRole>,
    /// Free-form attributes.
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// DNS SANs for node certificates.
    pub dns_names: Vec<String>,
    /// IP SANs for node certificates.
    pub ip_addresses: Vec<String>,
    /// Active or disabled.
    pub status: IdentityStatus,
    /// argon2id PHC string of the enrollment secret, if one was issued.
    pub secret_hash: Option<String>,
    /// When the enrollment secret expires.
    pub secret_expires_at: Option<i64>,
    /// Enrollments left on the secret.
    pub enrollments_left: i64,
    /// Who registered it.
    pub registered_by: String,
    /// Unix seconds.
    pub created_at: i64,
}

impl IdentityRow {
    /// Whether the identity has this role.
    pub fn has_role(&self, role: CaRole) -> bool {
        self.roles.contains(&role)
    }
}

/// A certificate as stored (without its DER unless asked).
#[derive(Debug, Clone)]
pub struct CertRow {
    /// Serial, lowercase hex.
    pub serial: String,
    /// Holder.
    pub identity_id: String,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// SHA-256 of the SPKI.
    pub key_sha256: String,
    /// Unix seconds.
    pub issued_at: i64,
    /// `enroll`, `renew` or `init`.
    pub issued_via: String,
    /// Who authorised it (the secret's registrar, or the renewing certificate's serial).
    pub authorized_by: String,
    /// Unix seconds, if revoked.
    pub revoked_at: Option<i64>,
    /// RFC 5280 reason name, if revoked.
    pub revocation_reason: Option<String>,
    /// Who revoked it.
    pub revoked_by: Option<String>,
    /// DER, when the query asked for it.
    pub der: Option<Vec<u8>>,
    /// The number of the intermediate that issued it.
    pub issuer: i64,
}

/// Filters for listing certificates.
#[derive(Debug, Default, Clone)]
pub struct CertFilter {
    /// Only this holder.
    pub identity: Option<String>,
    /// Only this serial.
    pub serial: Option<String>,
    /// `valid`, `revoked`, `expired`, or `any`.
    pub status: String,
    /// not_after <= this.
    pub expires_before: Option<i64>,
    /// not_after >= this.
    pub expires_after: Option<i64>,
    /// Serials greater than this (cursor).
    pub after: String,
    /// Page size.
    pub limit: i64,
}

/// Filters for listing identities.
#[derive(Debug, Default, Clone)]
pub struct IdentityFilter {
    /// Only this kind.
    pub kind: Option<IdentityKind>,
    /// Has this role.
    pub role: Option<CaRole>,
    /// Registered by this identity.
    pub registered_by: Option<String>,
    /// Ids greater than this (cursor).
    pub after: String,
    /// Page size.
    pub limit: i64,
}

/// A new identity to register.
#[derive(Debug, Clone)]
pub struct NewIdentity {
    /// Id.
    pub id: String,
    /// Kind.
    pub kind: IdentityKind,
    /// Roles.
    pub roles: Vec<CaRole>,
    /// Attributes.
    pub attributes: serde_json::Map<String, serde_json::Value>,
    /// DNS SANs.
    pub dns_names: Vec<String>,
    /// IP SANs.
    pub ip_addresses: Vec<String>,
    /// Enrollment secret hash, if any.
    pub secret_hash: Option<String>,
    /// Secret expiry.
    pub secret_expires_at: Option<i64>,
    /// Uses.
    pub enrollments_left: i64,
    /// Registrar.
    pub registered_by: String,
    /// Now.
    pub created_at: i64,
}

/// The CRL as stored.
#[derive(Debug, Clone)]
pub struct CrlRow {
    /// CRL number.
    pub number: i64,
    /// Unix seconds.
    pub this_update: i64,
    /// Unix seconds.
    pub next_update: i64,
    /// DER.
    pub der: Vec<u8>,
}

macro_rules! cert_columns {
    () => {
        "serial, identity_id, not_before, not_after, key_sha256, issued_at, issued_via, \
         authorized_by, revoked_at, revocation_reason, revoked_by, issuer"
    };
}

impl Db {
    /// Connects (creating a SQLite file if missing) and applies this backend's migrations.
    pub async fn connect(url: &str) -> Result<Self, DbError> {
        sqlx::any::install_default_drivers();
        let backend = if url.starts_with("sqlite:") {
            Backend::Sqlite
        } else if url.starts_with("postgres:") || url.starts_with("postgresql:") {
            Backend::Postgres
        } else {
            return Err(sqlx::Error::Configuration(
                "database URL must start with sqlite: or postgres:".into(),
            ));
        };
        let options = |max: u32, wait: Duration| {
            AnyPoolOptions::new()
                .max_connections(max)
                .acquire_timeout(wait)
                .after_connect(move |conn, _| {
                    Box::pin(async move {
                        if backend == Backend::Sqlite {
                            for pragma in [
                                "PRAGMA journal_mode = WAL",
                                "PRAGMA synchronous = FULL",
                                "PRAGMA busy_timeout = 10000",
                                // 32 MiB of pages per connection at most (SQLite's default is 2 MiB):
                                // appends touch index pages all over a large log.
                                "PRAGMA cache_size = -32768",
                            ] {
                                sqlx::query(pragma).execute(&mut *conn).await?;
                            }
                        }
                        Ok(())
                    })
                })
        };
        let pool = options(if backend == Backend::Sqlite { 8 } else { 16 }, Duration::from_secs(10))
            .connect(url)
            .await?;
        let writer = match backend {
            // Writers wait their turn longer than readers wait for a connection: the queue moves
            // one transaction (milliseconds) at a time, and its length is bounded by the
            // server's bounded connections.
            Backend::Sqlite => options(1, Duration::from_secs(30)).connect(url).await?,
            Backend::Postgres => pool.clone(),
        };
        let db = Self { pool, writer, backend };
        match backend {
            Backend::Sqlite => SQLITE.run(&db.pool).await?,
            Backend::Postgres => POSTGRES.run(&db.pool).await?,
        }
        Ok(db)
    }

    /// A connection from the pool, for reads (several statements on one connection). A write
    /// outside a transaction takes [`Db::acquire_writer`].
    pub async fn acquire(&self) -> Result<sqlx::pool::PoolConnection<Any>, DbError> {
        self.pool.acquire().await
    }

    /// The connection writes outside a transaction run on (single-statement writes, in
    /// autocommit): on SQLite the one writer connection, in its queue, so that such a write
    /// is not left polling for the lock behind a stream of transactions; on PostgreSQL any.
    pub async fn acquire_writer(&self) -> Result<sqlx::pool::PoolConnection<Any>, DbError> {
        self.writer.acquire().await
    }

    /// Starts a (writing) transaction. On SQLite it is `BEGIN IMMEDIATE`, which takes the write
    /// lock at once and waits for it under the busy timeout: a deferred transaction that reads
    /// first and writes later fails with "database is locked" instead of waiting when another
    /// process (a second replica) is writing.
    pub async fn begin(&self) -> Result<Transaction<'static, Any>, DbError> {
        match self.backend {
            Backend::Sqlite => self.writer.begin_with("BEGIN IMMEDIATE").await,
            Backend::Postgres => self.pool.begin().await,
        }
    }

    /// Closes the pool (waits for connections to be returned).
    pub async fn close(&self) {
        self.writer.close().await;
        self.pool.close().await
    }

    /// A value from the CA's metadata.
    pub async fn meta(&self, key: &str) -> Result<Option<String>, DbError> {
        sqlx::query_scalar("SELECT v FROM ca_meta WHERE k = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await
    }

    /// Writes a metadata value, failing if it exists (so initialisation cannot run twice).
    pub async fn insert_meta(tx: &mut Transaction<'static, Any>, key: &str, value: &str) -> Result<(), DbError> {
        sqlx::query("INSERT INTO ca_meta (k, v) VALUES ($1, $2)")
            .bind(key)
            .bind(value)
            .execute(&mut **tx)
            .await?;
        Ok(())
    }

    /// Inserts an identity; `false` if the id is taken, by an identity or by a portal account in
    /// any state (an account's id is reserved for the identity it will be bound to: registering
    /// it here would hand a stranger's pending account whatever this identity may do).
    pub async fn insert_identity(exec: &mut Transaction<'static, Any>, n: &NewIdentity) -> Result<bool, DbError> {
        let r = sqlx::query(
            "INSERT INTO identities (id, kind, roles, attributes, dns_names, ip_addresses, status, secret_hash, \
             secret_expires_at, enrollments_left, registered_by, created_at) \
             SELECT $1, $2, $3, $4, $5, $6, 'active', $7, $8, $9, $10, $11 \
             WHERE NOT EXISTS (SELECT 1 FROM accounts WHERE identity_id = $1) ON CONFLICT (id) DO NOTHING",
        )
        .bind(&n.id)
        .bind(n.kind.as_str())
        .bind(json(&n.roles))
        .bind(json(&n.attributes))
        .bind(json(&n.dns_names))
        .bind(json(&n.ip_addresses))
        .bind(n.secret_hash.as_deref())
        .bind(n.secret_expires_at)
        .bind(n.enrollments_left)
        .bind(&n.registered_by)
        .bind(n.created_at)
        .execute(&mut **exec)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Replaces an identity's enrollment secret (the old one stops working at once); `false` if
    /// there is no such identity.
    pub async fn set_secret(&self, id: &str, hash: &str, expires_at: i64, uses: i64) -> Result<bool, DbError> {
        let mut tx = self.begin().await?;
        let r = sqlx::query(
            "UPDATE identities SET secret_hash = $2, secret_expires_at = $3, enrollments_left = $4 WHERE id = $1",
        )
        .bind(id)
        .bind(hash)
        .bind(expires_at)
        .bind(uses)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    /// Sets an identity's status (`active` or `disabled`); `false` if there is no such identity.
    pub async fn set_status(&self, id: &str, status: IdentityStatus) -> Result<bool, DbError> {
        let mut tx = self.begin().await?;
        let r = sqlx::query("UPDATE identities SET status = $2 WHERE id = $1")
            .bind(id)
            .bind(status.as_str())
            .execute(&mut *tx)
            .await?;
        tx.commit().await?;
        Ok(r.rows_affected() == 1)
    }

    /// Registers an identity in its own transaction; `false` if the id is taken.
    pub async fn register(&self, n: &NewIdentity) -> Result<bool, DbError> {
        let mut tx = self.begin().await?;
        let inserted = Self::insert_identity(&mut tx, n).await?;
        tx.commit().await?;
        Ok(inserted)
    }

    /// Spends one use of an identity's unexpired enrollment secret, if `secret_hash` is still
    /// its secret and the identity is active; `false` otherwise.
    pub async fn consume_secret(
        c: &mut sqlx::AnyConnection,
        id: &str,
        secret_hash: &str,
        now: i64,
    ) -> Result<bool, DbError> {
        let r = sqlx::query(
            "UPDATE identities SET enrollments_left = enrollments_left - 1 WHERE id = $1 AND secret_hash = $2 \
             AND enrollments_left > 0 AND secret_expires_at > $3 AND status = 'active'",
        )
        .bind(id)
        .bind(secret_hash)
        .bind(now)
        .execute(c)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Inserts an active participant without roles or secret, for a portal account that was
    /// approved or invited; `false` if the id is taken (another replica may have committed an
    /// identity under it since the caller's transaction looked).
    pub async fn insert_portal_participant(
        c: &mut sqlx::AnyConnection,
        id: &str,
        attributes: &serde_json::Value,
        registered_by: &str,
        now: i64,
    ) -> Result<bool, DbError> {
        let r = sqlx::query(
            "INSERT INTO identities (id, kind, roles, attributes, dns_names, ip_addresses, status, enrollments_left, \
             registered_by, created_at) VALUES ($1, 'participant', '[]', $2, '[]', '[]', 'active', 0, $3, $4) \
             ON CONFLICT (id) DO NOTHING",
        )
        .bind(id)
        .bind(attributes.to_string())
        .bind(registered_by)
        .bind(now)
        .execute(c)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// Whether an identity has this id (inside the caller's transaction).
    pub async fn identity_exists(c: &mut sqlx::AnyConnection, id: &str) -> Result<bool, DbError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM identities WHERE id = $1")
            .bind(id)
            .fetch_one(c)
            .await?;
        Ok(n > 0)
    }

    /// An identity's kind and status (inside the caller's transaction), parsed.
    pub async fn kind_and_status(
        c: &mut sqlx::AnyConnection,
        id: &str,
    ) -> Result<Option<(IdentityKind, IdentityStatus)>, DbError> {
        let row: Option<(String, String)> = sqlx::query_as("SELECT kind, status FROM identities WHERE id = $1")
            .bind(id)
            .fetch_optional(c)
            .await?;
        Ok(match row {
            Some((k, s)) => Some((parse_text(&k)?, parse_text(&s)?)),
            None => None,
        })
    }

    /// Whether a portal account (pending, approved or rejected) holds this id.
    pub async fn account_holds(&self, id: &str) -> Result<bool, DbError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM accounts WHERE identity_id = $1")
            .bind(id)
            .fetch_one(&self.pool)
            .await?;
        Ok(n > 0)
    }

    /// One identity.
    pub async fn identity(&self, id: &str) -> Result<Option<IdentityRow>, DbError> {
        let row = sqlx::query(IDENTITY_SELECT_ONE)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| identity_row(&r)).transpose()
    }

    /// A page of identities.
    pub async fn list_identities(&self, f: &IdentityFilter) -> Result<Vec<IdentityRow>, DbError> {
        let role_pattern = f.role.map(|r| format!("%\"{}\"%", r.as_str()));
        let rows = sqlx::query(IDENTITY_LIST)
            .bind(f.kind.map(IdentityKind::as_str))
            .bind(role_pattern)
            .bind(f.registered_by.as_deref())
            .bind(&f.after)
            .bind(f.limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(identity_row).collect()
    }

    /// The certificate with this serial and its holder, for authenticating an mTLS caller.
    pub async fn cert_with_holder(&self, serial: &str) -> Result<Option<(CertRow, IdentityRow)>, DbError> {
        let row = sqlx::query(CALLER_SELECT)
            .bind(serial)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| Ok((cert_row(&r, true)?, identity_row(&r)?))).transpose()
    }

    /// One certificate with its DER.
    pub async fn certificate(&self, serial: &str) -> Result<Option<CertRow>, DbError> {
        let sql = concat!("SELECT ", cert_columns!(), ", der FROM certificates WHERE serial = $1");
        let row = sqlx::query(sql).bind(serial).fetch_optional(&self.pool).await?;
        row.map(|r| cert_row(&r, true)).transpose()
    }

    /// A page of certificates (without DER).
    pub async fn list_certificates(&self, f: &CertFilter, now: i64) -> Result<Vec<CertRow>, DbError> {
        let sql = concat!(
            "SELECT ",
            cert_columns!(),
            " FROM certificates \
             WHERE (CAST($1 AS TEXT) IS NULL OR identity_id = $1) \
               AND (CAST($2 AS TEXT) IS NULL OR serial = $2) \
               AND ($3 = 'any' OR ($3 = 'revoked' AND revoked_at IS NOT NULL) \
                    OR ($3 = 'valid' AND revoked_at IS NULL AND not_after > $4) \
                    OR ($3 = 'expired' AND revoked_at IS NULL AND not_after <= $4)) \
               AND (CAST($5 AS BIGINT) IS NULL OR not_after <= $5) \
               AND (CAST($6 AS BIGINT) IS NULL OR not_after >= $6) \
               AND serial > $7 \
             ORDER BY serial LIMIT $8"
        );
        let rows = sqlx::query(sql)
            .bind(f.identity.as_deref())
            .bind(f.serial.as_deref())
            .bind(&f.status)
            .bind(now)
            .bind(f.expires_before)
            .bind(f.expires_after)
            .bind(&f.after)
            .bind(f.limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(|r| cert_row(r, false)).collect()
    }

    /// Counts of identities and certificates (for operators and tests: "nothing was written").
    pub async fn counts(&self) -> Result<(i64, i64), DbError> {
        let i: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM identities")
            .fetch_one(&self.pool)
            .await?;
        let c: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM certificates")
            .fetch_one(&self.pool)
            .await?;
        Ok((i, c))
    }

    /// Intermediate `issuer`'s current CRL.
    pub async fn crl(&self, issuer: i64) -> Result<Option<CrlRow>, DbError> {
        let row = sqlx::query("SELECT number, this_update, next_update, der FROM crls WHERE issuer = $1")
            .bind(issuer)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            Ok(CrlRow {
                number: r.try_get(0)?,
                this_update: r.try_get(1)?,
                next_update: r.try_get(2)?,
                der: r.try_get(3)?,
            })
        })
        .transpose()
    }

    /// Writes an intermediate's first CRL (number 1): at initialisation, and when a new
    /// intermediate is published.
    pub async fn insert_first_crl(
        c: &mut sqlx::AnyConnection,
        ca: &Ca,
        now: OffsetDateTime,
    ) -> Result<(), anyhow::Error> {
        let der = ca.sign_crl(1, now, &[])?;
        sqlx::query("INSERT INTO crls (issuer, number, this_update, next_update, der) VALUES ($1, 1, $2, $3, $4)")
            .bind(ca.number)
            .bind(now.unix_timestamp())
            .bind((now + ca.policy.crl_validity).unix_timestamp())
            .bind(der)
            .execute(c)
            .await?;
        Ok(())
    }

    /// Takes intermediate `issuer`'s next CRL number, locking its CRL row until the transaction
    /// ends (so concurrent revocations from any replica get consecutive numbers).
    pub async fn next_crl_number(c: &mut sqlx::AnyConnection, issuer: i64) -> Result<Option<i64>, DbError> {
        sqlx::query_scalar("UPDATE crls SET number = number + 1 WHERE issuer = $1 RETURNING number")
            .bind(issuer)
            .fetch_optional(c)
            .await
    }

    /// Marks a certificate revoked; `false` if it was revoked already (or does not exist).
    pub async fn mark_revoked(
        c: &mut sqlx::AnyConnection,
        serial: &str,
        at: i64,
        reason: Reason,
        by: &str,
    ) -> Result<bool, DbError> {
        let r = sqlx::query(
            "UPDATE certificates SET revoked_at = $2, revocation_reason = $3, revoked_by = $4 \
             WHERE serial = $1 AND revoked_at IS NULL",
        )
        .bind(serial)
        .bind(at)
        .bind(reason.name())
        .bind(by)
        .execute(c)
        .await?;
        Ok(r.rows_affected() == 1)
    }

    /// The holder's identity id and kind of a certificate.
    pub async fn holder(c: &mut sqlx::AnyConnection, serial: &str) -> Result<(String, String), DbError> {
        let row = sqlx::query(
            "SELECT c.identity_id, i.kind FROM certificates c JOIN identities i ON i.id = c.identity_id WHERE c.serial = $1",
        )
        .bind(serial)
        .fetch_one(c)
        .await?;
        Ok((row.try_get(0)?, row.try_get(1)?))
    }

    /// Records where a certificate's revocation is in the issuance log.
    pub async fn set_revocation_log_index(
        c: &mut sqlx::AnyConnection,
        serial: &str,
        index: u64,
    ) -> Result<(), DbError> {
        sqlx::query("UPDATE certificates SET revocation_log_index = $2 WHERE serial = $1")
            .bind(serial)
            .bind(index as i64)
            .execute(c)
            .await?;
        Ok(())
    }

    /// Re-signs `ca`'s CRL if more than half of its lifetime has passed (any replica may do
    /// it; the row lock makes only one succeed per period). Returns the new number if it did.
    pub async fn refresh_crl_if_due(&self, ca: &Ca, now: OffsetDateTime) -> Result<Option<i64>, anyhow::Error> {
        let half = ca.policy.crl_validity.whole_seconds() / 2;
        let mut tx = self.begin().await?;
        let number: Option<i64> = sqlx::query_scalar(
            "UPDATE crls SET number = number + 1 WHERE issuer = $3 AND next_update - $1 <= $2 RETURNING number",
        )
        .bind(half)
        .bind(now.unix_timestamp())
        .bind(ca.number)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(number) = number else {
            tx.rollback().await?;
            return Ok(None);
        };
        Self::resign_crl(&mut tx, ca, number, now).await?;
        tx.commit().await?;
        Ok(Some(number))
    }

    /// Signs and stores `ca`'s CRL `number` listing every unexpired revoked certificate it
    /// issued, inside the caller's transaction (which took the number, and so holds the row).
    pub async fn resign_crl(
        c: &mut sqlx::AnyConnection,
        ca: &Ca,
        number: i64,
        now: OffsetDateTime,
    ) -> Result<(), anyhow::Error> {
        let rows = sqlx::query(
            "SELECT serial, revoked_at, revocation_reason FROM certificates \
             WHERE revoked_at IS NOT NULL AND not_after > $1 AND issuer = $2 ORDER BY serial",
        )
        .bind(now.unix_timestamp())
        .bind(ca.number)
        .fetch_all(&mut *c)
        .await?;
        let revoked = rows
            .iter()
            .map(|r| {
                let reason: Option<String> = r.try_get(2)?;
                Ok(RevokedEntry {
                    serial_hex: r.try_get(0)?,
                    revoked_at: r.try_get(1)?,
                    reason: reason.as_deref().and_then(Reason::parse).unwrap_or(Reason::Unspecified),
                })
            })
            .collect::<Result<Vec<_>, sqlx::Error>>()?;
        let der = ca.sign_crl(number, now, &revoked)?;
        sqlx::query("UPDATE crls SET this_update = $1, next_update = $2, der = $3 WHERE issuer = $4")
            .bind(now.unix_timestamp())
            .bind((now + ca.policy.crl_validity).unix_timestamp())
            .bind(der)
            .bind(ca.number)
            .execute(c)
            .await?;
        Ok(())
    }
}

macro_rules! identity_columns {
    () => {
        "i.id, i.kind, i.roles, i.attributes, i.dns_names, i.ip_addresses, i.status, \
         i.secret_hash, i.secret_expires_at, i.enrollments_left, i.registered_by, i.created_at"
    };
}

const IDENTITY_SELECT_ONE: &str = concat!("SELECT ", identity_columns!(), " FROM identities i WHERE i.id = $1");

const IDENTITY_LIST: &str = concat!(
    "SELECT ",
    identity_columns!(),
    " FROM identities i \
     WHERE (CAST($1 AS TEXT) IS NULL OR i.kind = $1) \
       AND (CAST($2 AS TEXT) IS NULL OR i.roles LIKE $2) \
       AND (CAST($3 AS TEXT) IS NULL OR i.registered_by = $3) \
       AND i.id > $4 ORDER BY i.id LIMIT $5"
);

const CALLER_SELECT: &str = concat!(
    "SELECT c.serial, c.identity_id, c.not_before, c.not_after, c.key_sha256, c.issued_at, c.issued_via, \
     c.authorized_by, c.revoked_at, c.revocation_reason, c.revoked_by, c.issuer, c.der, ",
    identity_columns!(),
    " FROM certificates c JOIN identities i ON i.id = c.identity_id WHERE c.serial = $1"
);

/// Placeholders for `n` parameters starting at number `first`: `$first, $first+1, ...` on
/// PostgreSQL, anonymous `?` on SQLite, whose parser looks each named `$N` up in a list of the
/// names seen so far (quadratic in a statement with thousands of parameters).
pub(crate) fn placeholders(backend: Backend, first: usize, n: usize) -> String {
    match backend {
        Backend::Sqlite => vec!["?"; n].join(", "),
        Backend::Postgres => (first..first + n)
            .map(|i| format!("${i}"))
            .collect::<Vec<_>>()
            .join(", "),
    }
}

/// The stored JSON text of a value (the renewal precondition compares these texts).
pub(crate) fn json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".into())
}

fn parse_json<T: serde::de::DeserializeOwned>(s: &str) -> Result<T, sqlx::Error> {
    serde_json::from_str(s).map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// A column that holds a domain value's name (`participant`, `active`...), parsed once here.
fn parse_text<T: std::str::FromStr<Err = identity::names::NameError>>(s: &str) -> Result<T, sqlx::Error> {
    s.parse().map_err(|e| sqlx::Error::Decode(Box::new(e)))
}

/// Reads identity columns by name (they may follow other columns in a join).
fn identity_row(r: &AnyRow) -> Result<IdentityRow, sqlx::Error> {
    Ok(IdentityRow {
        id: r.try_get("id")?,
        kind: parse_text(&r.try_get::<String, _>("kind")?)?,
        roles: parse_json(&r.try_get::<String, _>("roles")?)?,
        attributes: parse_json(&r.try_get::<String, _>("attributes")?)?,
        dns_names: parse_json(&r.try_get::<String, _>("dns_names")?)?,
        ip_addresses: parse_json(&r.try_get::<String, _>("ip_addresses")?)?,
        status: parse_text(&r.try_get::<String, _>("status")?)?,
        secret_hash: r.try_get("secret_hash")?,
        secret_expires_at: r.try_get("secret_expires_at")?,
        enrollments_left: r.try_get("enrollments_left")?,
        registered_by: r.try_get("registered_by")?,
        created_at: r.try_get("created_at")?,
    })
}

fn cert_row(r: &AnyRow, with_der: bool) -> Result<CertRow, sqlx::Error> {
    Ok(CertRow {
        serial: r.try_get("serial")?,
        identity_id: r.try_get("identity_id")?,
        not_before: r.try_get("not_before")?,
        not_after: r.try_get("not_after")?,
        key_sha256: r.try_get("key_sha256")?,
        issued_at: r.try_get("issued_at")?,
        issued_via: r.try_get("issued_via")?,
        authorized_by: r.try_get("authorized_by")?,
        revoked_at: r.try_get("revoked_at")?,
        revocation_reason: r.try_get("revocation_reason")?,
        revoked_by: r.try_get("revoked_by")?,
        der: if with_der { Some(r.try_get("der")?) } else { None },
        issuer: r.try_get("issuer")?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// On SQLite this process's writes (transactions, and single statements on the writer
    /// connection) take turns in the order they asked: a writer waiting behind a long
    /// transaction is served before later ones, not left to the busy handler's polling (which, under a long burst, starved one past the busy timeout
    /// into "database is locked"; seen creating 10,000 subchains).
    #[tokio::test]
    async fn sqlite_writers_take_turns_in_order() {
        let file = std::env::temp_dir().join(format!("bsn-writers-{}.db", std::process::id()));
        let url = format!("sqlite://{}?mode=rwc", file.display());
        let db = Db::connect(&url).await.unwrap();
        sqlx::query("CREATE TABLE turns (n INTEGER NOT NULL)")
            .execute(&db.pool)
            .await
            .unwrap();
        let first = db.begin().await.unwrap();
        let mut waiting = Vec::new();
        for n in 0..12i64 {
            let db = db.clone();
            waiting.push(tokio::spawn(async move {
                let insert = sqlx::query("INSERT INTO turns (n) VALUES ($1)").bind(n);
                if n % 3 == 2 {
                    // A single-statement write outside a transaction queues with them.
                    insert.execute(&mut *db.acquire_writer().await.unwrap()).await.unwrap();
                } else {
                    let mut tx = db.begin().await.unwrap();
                    insert.execute(&mut *tx).await.unwrap();
                    tx.commit().await.unwrap();
                }
            }));
            // Each asks after the one before.
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
        first.commit().await.unwrap();
        for w in waiting {
            w.await.unwrap();
        }
        let order: Vec<i64> = sqlx::query_scalar("SELECT n FROM turns ORDER BY rowid")
            .fetch_all(&db.pool)
            .await
            .unwrap();
        assert_eq!(order, (0..12).collect::<Vec<_>>());
        db.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
        }
    }

    /// Upgrading a SQLite CA to migration 8 keeps every log entry and stored hash, now keyed by
    /// the rowid, with the entries' indexes in place.
    #[tokio::test]
    async fn the_rowid_migration_keeps_the_whole_log() {
        sqlx::any::install_default_drivers();
        let file = std::env::temp_dir().join(format!("bsn-migration-8-{}.db", std::process::id()));
        let url = format!("sqlite://{}?mode=rwc", file.display());
        let pool = AnyPool::connect(&url).await.unwrap();
        SQLITE.run_to(7, &pool).await.unwrap();
        for i in 0..300i64 {
            sqlx::query(
                "INSERT INTO log_entries (idx, leaf, kind, serial, identity, at, leaf_hash) \
                 VALUES ($1, $2, 'issuance', $3, 'p', $4, $5)",
            )
            .bind(i)
            .bind(vec![i as u8; 10])
            .bind(format!("s{i}"))
            .bind(1000 + i)
            .bind(vec![(i % 251) as u8; 32])
            .execute(&pool)
            .await
            .unwrap();
            sqlx::query("INSERT INTO log_hashes (idx, hash) VALUES ($1, $2)")
                .bind(2 * i)
                .bind(vec![(i % 7) as u8; 32])
                .execute(&pool)
                .await
                .unwrap();
        }
        pool.close().await;

        let db = Db::connect(&url).await.unwrap();
        let count = |sql: &'static str| sqlx::query_scalar::<_, i64>(sql).fetch_one(&db.pool);
        assert_eq!(
            count("SELECT count(*) FROM log_entries WHERE rowid = idx")
                .await
                .unwrap(),
            300
        );
        assert_eq!(
            count("SELECT count(*) FROM log_hashes WHERE rowid = idx")
                .await
                .unwrap(),
            300
        );
        let (leaf, serial, at): (Vec<u8>, String, i64) =
            sqlx::query_as("SELECT leaf, serial, at FROM log_entries WHERE idx = 299")
                .fetch_one(&db.pool)
                .await
                .unwrap();
        assert_eq!((leaf, serial.as_str(), at), (vec![43u8; 10], "s299", 1299));
        let hash: Vec<u8> = sqlx::query_scalar("SELECT hash FROM log_hashes WHERE idx = 598")
            .fetch_one(&db.pool)
            .await
            .unwrap();
        assert_eq!(hash, vec![5u8; 32]);
        assert_eq!(
            count(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name IN \
                 ('log_entries_serial', 'log_entries_identity', 'log_entries_leaf_hash', 'log_entries_at')"
            )
            .await
            .unwrap(),
            4
        );
        // Only the rowid keys them now: no automatic index on idx is left.
        assert_eq!(
            count(
                "SELECT count(*) FROM sqlite_master WHERE type = 'index' \
                 AND tbl_name IN ('log_entries', 'log_hashes') AND name LIKE 'sqlite_autoindex%'"
            )
            .await
            .unwrap(),
            0
        );
        db.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
        }
    }

    /// Upgrading a SQLite CA to migration 9 (rotation): its one CRL becomes intermediate 1's,
    /// every certificate is intermediate 1's, and the log and the feed keep every row while they
    /// learn the `intermediate` kind.
    #[tokio::test]
    async fn the_rotation_migration_keeps_the_crl_certificates_log_and_feed() {
        sqlx::any::install_default_drivers();
        let file = std::env::temp_dir().join(format!("bsn-migration-9-{}.db", std::process::id()));
        let url = format!("sqlite://{}?mode=rwc", file.display());
        let pool = AnyPool::connect(&url).await.unwrap();
        SQLITE.run_to(8, &pool).await.unwrap();
        for sql in [
            "INSERT INTO identities (id, kind, roles, attributes, dns_names, ip_addresses, status, \
             enrollments_left, registered_by, created_at) VALUES ('alice', 'participant', '[]', '{}', '[]', '[]', \
             'active', 0, 'admin', 1)",
            "INSERT INTO certificates (serial, identity_id, not_before, not_after, der, key_sha256, issued_at, \
             issued_via, authorized_by) VALUES ('0a', 'alice', 1, 2, x'3082', 'k', 1, 'enroll', 'admin')",
            "INSERT INTO crl (id, number, this_update, next_update, der) VALUES (1, 7, 10, 20, x'308201')",
            "INSERT INTO log_entries (idx, leaf, kind, serial, identity, at) VALUES (0, x'01', 'issuance', '0a', 'alice', 1)",
            "INSERT INTO feed (seq, kind, serial, identity_id, reason, at) VALUES (1, 'revocation', '0a', 'alice', 'x', 1)",
        ] {
            sqlx::query(sql).execute(&pool).await.unwrap();
        }
        pool.close().await;

        let db = Db::connect(&url).await.unwrap();
        let crl = db.crl(1).await.unwrap().unwrap();
        assert_eq!((crl.number, crl.this_update, crl.der), (7, 10, vec![0x30, 0x82, 0x01]));
        assert_eq!(db.certificate("0a").await.unwrap().unwrap().issuer, 1);
        let kinds: Vec<(String, String)> = sqlx::query_as(
            "SELECT (SELECT kind FROM log_entries WHERE idx = 0), (SELECT kind FROM feed WHERE seq = 1)",
        )
        .fetch_all(&db.pool)
        .await
        .unwrap();
        assert_eq!(kinds, [("issuance".to_string(), "revocation".to_string())]);
        for sql in [
            "INSERT INTO log_entries (idx, leaf, kind, serial, identity, at) VALUES (1, x'01', 'intermediate', '', 'admin', 2)",
            "INSERT INTO feed (seq, kind, revision, reason, at) VALUES (2, 'intermediate', 2, 'published', 2)",
        ] {
            sqlx::query(sql).execute(&db.pool).await.unwrap();
        }
        db.close().await;
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", file.display()));
        }
    }
}
