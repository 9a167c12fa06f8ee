//! The SQL of portal accounts and what hangs off them: invitation codes, web sessions and
//! browser-enrollment challenges. Rows decode into these types here, once.
//!
//! Functions that take a connection run inside the caller's transaction (pass `&mut *tx`).

use sqlx::AnyConnection;

use super::{Db, DbError};

/// Where a self-registration stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AccountState {
    /// Waiting for an administrator.
    Pending,
    /// Bound to its identity: approved, invited, or it proved the identity's one-time secret.
    Approved,
    /// Refused by an administrator.
    Rejected,
}

impl AccountState {
    /// The stored and wire name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Approved => "approved",
            Self::Rejected => "rejected",
        }
    }

    /// Parses a stored or requested name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pending" => Some(Self::Pending),
            "approved" => Some(Self::Approved),
            "rejected" => Some(Self::Rejected),
            _ => None,
        }
    }
}

fn state_of(s: String) -> Result<AccountState, DbError> {
    AccountState::parse(&s).ok_or_else(|| DbError::Decode(format!("unknown account state '{s}'").into()))
}

/// A portal account as stored (without its password hash).
#[derive(Debug, Clone)]
pub struct AccountRow {
    /// The identity id it registered or claimed.
    pub id: String,
    /// Display name.
    pub name: String,
    /// Email address, lowercase.
    pub email: String,
    /// Organisation.
    pub organisation: String,
    /// Where it stands.
    pub state: AccountState,
    /// Unix seconds.
    pub created_at: i64,
}

/// A new account.
pub struct NewAccount<'a> {
    /// Identity id.
    pub id: &'a str,
    /// Display name (trimmed).
    pub name: &'a str,
    /// Email (lowercase).
    pub email: &'a str,
    /// Organisation.
    pub organisation: &'a str,
    /// argon2id PHC string of the password.
    pub password_hash: &'a str,
    /// Initial state.
    pub state: AccountState,
    /// Who decided it at once (`invitation:<by>`, `secret:<registrar>`), if anyone.
    pub decided_by: Option<&'a str>,
    /// Unix seconds.
    pub now: i64,
}

/// A live web session, with its account's state.
#[derive(Debug, Clone)]
pub struct SessionRow {
    /// The account's identity id.
    pub identity: String,
    /// The session's CSRF token.
    pub csrf: String,
    /// Unix seconds.
    pub expires_at: i64,
    /// The account's state, read with the session.
    pub account_state: AccountState,
}

/// Spends one use of an unexpired invitation code; returns who created it.
pub async fn spend_invitation(c: &mut AnyConnection, code_hash: &str, now: i64) -> Result<Option<String>, DbError> {
    sqlx::query_scalar(
        "UPDATE invitations SET uses_left = uses_left - 1 WHERE code_hash = $1 AND uses_left > 0 \
         AND expires_at > $2 RETURNING created_by",
    )
    .bind(code_hash)
    .bind(now)
    .fetch_optional(c)
    .await
}

/// Whether a new account under `id` or `email` would collide: with another account, or (unless
/// the account claims the registered identity) with an identity.
pub async fn id_or_email_taken(c: &mut AnyConnection, id: &str, email: &str, claiming: bool) -> Result<bool, DbError> {
    let n: i64 = sqlx::query_scalar(
        "SELECT (SELECT COUNT(*) FROM identities WHERE id = $1 AND $3 = 0) \
         + (SELECT COUNT(*) FROM accounts WHERE identity_id = $1 OR email = $2)",
    )
    .bind(id)
    .bind(email)
    .bind(i64::from(claiming))
    .fetch_one(c)
    .await?;
    Ok(n > 0)
}

/// Inserts an account.
pub async fn insert(c: &mut AnyConnection, a: &NewAccount<'_>) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO accounts (identity_id, name, email, organisation, password_hash, state, created_at, decided_by, decided_at) \
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(a.id)
    .bind(a.name)
    .bind(a.email)
    .bind(a.organisation)
    .bind(a.password_hash)
    .bind(a.state.as_str())
    .bind(a.now)
    .bind(a.decided_by)
    .bind(a.decided_by.map(|_| a.now))
    .execute(c)
    .await?;
    Ok(())
}

/// The password hash and state of the account under `id`.
pub async fn credentials(db: &Db, id: &str) -> Result<Option<(String, AccountState)>, DbError> {
    let row: Option<(String, String)> =
        sqlx::query_as("SELECT password_hash, state FROM accounts WHERE identity_id = $1")
            .bind(id)
            .fetch_optional(&mut *db.acquire().await?)
            .await?;
    row.map(|(h, s)| Ok((h, state_of(s)?))).transpose()
}

/// The account under `id`.
pub async fn get(db: &Db, id: &str) -> Result<Option<AccountRow>, DbError> {
    let row: Option<(String, String, String, String, i64)> =
        sqlx::query_as("SELECT name, email, organisation, state, created_at FROM accounts WHERE identity_id = $1")
            .bind(id)
            .fetch_optional(&mut *db.acquire().await?)
            .await?;
    row.map(|(name, email, organisation, state, created_at)| {
        Ok(AccountRow {
            id: id.to_string(),
            name,
            email,
            organisation,
            state: state_of(state)?,
            created_at,
        })
    })
    .transpose()
}

/// Accounts in `state`, oldest first, at most 1,000.
pub async fn list(db: &Db, state: AccountState) -> Result<Vec<AccountRow>, DbError> {
    let rows: Vec<(String, String, String, String, String, i64)> = sqlx::query_as(
        "SELECT identity_id, name, email, organisation, state, created_at FROM accounts WHERE state = $1 \
         ORDER BY created_at, identity_id LIMIT 1000",
    )
    .bind(state.as_str())
    .fetch_all(&mut *db.acquire().await?)
    .await?;
    rows.into_iter()
        .map(|(id, name, email, organisation, state, created_at)| {
            Ok(AccountRow {
                id,
                name,
                email,
                organisation,
                state: state_of(state)?,
                created_at,
            })
        })
        .collect()
}

/// Decides a pending account; returns it as it was (name, email, organisation), or `None` when
/// no pending account has this id.
pub async fn decide(
    c: &mut AnyConnection,
    id: &str,
    to: AccountState,
    by: &str,
    now: i64,
) -> Result<Option<(String, String, String)>, DbError> {
    sqlx::query_as(
        "UPDATE accounts SET state = $2, decided_by = $3, decided_at = $4 WHERE identity_id = $1 AND state = 'pending' \
         RETURNING name, email, organisation",
    )
    .bind(id)
    .bind(to.as_str())
    .bind(by)
    .bind(now)
    .fetch_optional(c)
    .await
}

/// Stores a new web session (and drops expired ones).
pub async fn insert_session(
    db: &Db,
    token_hash: &str,
    identity: &str,
    csrf: &str,
    now: i64,
    expires_at: i64,
) -> Result<(), DbError> {
    let mut c = db.acquire_writer().await?;
    sqlx::query("DELETE FROM web_sessions WHERE expires_at <= $1")
        .bind(now)
        .execute(&mut *c)
        .await?;
    sqlx::query(
        "INSERT INTO web_sessions (token_hash, identity_id, csrf, created_at, expires_at) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(token_hash)
    .bind(identity)
    .bind(csrf)
    .bind(now)
    .bind(expires_at)
    .execute(&mut *c)
    .await?;
    Ok(())
}

/// The session with this token hash, joined with its account's state.
pub async fn session(db: &Db, token_hash: &str) -> Result<Option<SessionRow>, DbError> {
    let row: Option<(String, String, i64, String)> = sqlx::query_as(
        "SELECT s.identity_id, s.csrf, s.expires_at, a.state FROM web_sessions s \
         JOIN accounts a ON a.identity_id = s.identity_id WHERE s.token_hash = $1",
    )
    .bind(token_hash)
    .fetch_optional(&mut *db.acquire().await?)
    .await?;
    row.map(|(identity, csrf, expires_at, state)| {
        Ok(SessionRow {
            identity,
            csrf,
            expires_at,
            account_state: state_of(state)?,
        })
    })
    .transpose()
}

/// Ends a session.
pub async fn delete_session(db: &Db, token_hash: &str) -> Result<(), DbError> {
    sqlx::query("DELETE FROM web_sessions WHERE token_hash = $1")
        .bind(token_hash)
        .execute(&mut *db.acquire_writer().await?)
        .await?;
    Ok(())
}

/// Stores a browser-enrollment challenge (and drops expired ones).
pub async fn insert_challenge(
    db: &Db,
    challenge_hash: &str,
    identity: &str,
    now: i64,
    expires_at: i64,
) -> Result<(), DbError> {
    let mut c = db.acquire_writer().await?;
    sqlx::query("DELETE FROM enroll_challenges WHERE expires_at <= $1")
        .bind(now)
        .execute(&mut *c)
        .await?;
    sqlx::query("INSERT INTO enroll_challenges (challenge_hash, identity_id, expires_at, used) VALUES ($1, $2, $3, 0)")
        .bind(challenge_hash)
        .bind(identity)
        .bind(expires_at)
        .execute(&mut *c)
        .await?;
    Ok(())
}

/// Stores an invitation code.
pub async fn insert_invitation(
    db: &Db,
    code_hash: &str,
    created_by: &str,
    expires_at: i64,
    uses: i64,
) -> Result<(), DbError> {
    sqlx::query("INSERT INTO invitations (code_hash, created_by, expires_at, uses_left) VALUES ($1, $2, $3, $4)")
        .bind(code_hash)
        .bind(created_by)
        .bind(expires_at)
        .bind(uses)
        .execute(&mut *db.acquire_writer().await?)
        .await?;
    Ok(())
}
