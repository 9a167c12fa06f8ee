//! The portal accounts service: self-registration (pending, invited, or claiming a registered
//! identity with its one-time secret), administrators' decisions, invitation codes, sign-in and
//! sessions, and browser-enrollment challenges. It owns these rules and their transactions; the
//! SQL is in [`crate::db::accounts`], the HTTP in `api/portal.rs`, the rate limits in the caller.
//!
//! The rule that keeps identities safe: an account acts as an identity only when it is
//! `approved`, and it becomes approved only by creating a new participant (administrator's
//! approval or an invitation; refused if the id exists) or by proving the identity's one-time
//! secret.

use identity::IdentityId;

use crate::db::Db;
use crate::db::accounts::{self as store, AccountRow, AccountState, NewAccount, SessionRow};
use crate::portal;
use crate::secrets::{Asker, Busy, Hasher};

/// What an accounts call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum AccountError {
    /// A field breaks its rules.
    #[error("{0}")]
    InvalidField(String),
    /// The claimed identity is unknown or the secret is wrong (not told apart).
    #[error("unknown identity or wrong enrollment secret")]
    InvalidCredentials,
    /// The claimed identity's secret expired.
    #[error("the enrollment secret has expired")]
    SecretExpired,
    /// The claimed identity's secret was used up meanwhile.
    #[error("the enrollment secret has been used up")]
    SecretUsedUp,
    /// The claimed identity may not have a portal account.
    #[error("{0}")]
    Forbidden(String),
    /// The id or email is taken.
    #[error("that id or email address is already registered")]
    Taken,
    /// An identity with the account's id was registered meanwhile.
    #[error("an identity with this id already exists")]
    IdentityExists,
    /// No pending account with this id.
    #[error("no pending registration '{0}'")]
    NoPending(String),
    /// Wrong id or password (not told apart).
    #[error("wrong identity id or password")]
    BadLogin,
    /// The password was right, but an administrator refused the registration.
    #[error("this registration was not approved")]
    Rejected,
    /// Too much hashing queued.
    #[error("busy")]
    Busy,
    /// Storage failed.
    #[error("database: {0}")]
    Database(#[from] crate::db::DbError),
}

impl From<Busy> for AccountError {
    fn from(_: Busy) -> Self {
        Self::Busy
    }
}

/// A self-registration whose fields passed the account rules (built only by
/// [`Registration::new`]).
pub struct Registration {
    id: IdentityId,
    name: String,
    email: String,
    organisation: String,
    password: String,
    secret: Option<String>,
    invitation: Option<String>,
}

impl Registration {
    /// Checks the fields (name, email, organisation, password strength; not both a secret and
    /// an invitation) and normalises them (trimmed name, lowercase email).
    pub fn new(
        id: IdentityId,
        name: &str,
        email: &str,
        organisation: String,
        password: String,
        secret: Option<String>,
        invitation: Option<String>,
    ) -> Result<Self, AccountError> {
        let name = name.trim().to_string();
        let email = email.trim().to_ascii_lowercase();
        portal::check_account(&name, &email, &organisation, &password).map_err(AccountError::InvalidField)?;
        let secret = secret.filter(|c| !c.is_empty());
        let invitation = invitation.map(|c| c.trim().to_string()).filter(|c| !c.is_empty());
        if secret.is_some() && invitation.is_some() {
            return Err(AccountError::InvalidField(
                "give an invitation code or an enrollment secret, not both".into(),
            ));
        }
        Ok(Self {
            id,
            name,
            email,
            organisation,
            password,
            secret,
            invitation,
        })
    }
}

/// A new session: the cookie token (only its hash is stored) and the CSRF token.
pub struct NewSession {
    /// The session token for the cookie.
    pub token: String,
    /// The CSRF token.
    pub csrf: String,
    /// The account's state.
    pub state: AccountState,
}

/// The service.
pub struct Accounts<'a> {
    db: &'a Db,
    hasher: &'a Hasher,
}

impl<'a> Accounts<'a> {
    /// The service over a store and the argon2id hasher.
    pub fn new(db: &'a Db, hasher: &'a Hasher) -> Self {
        Self { db, hasher }
    }

    /// Registers an account: approved at once with a valid invitation (creating a participant
    /// without roles) or with the claimed identity's secret (spending one use), pending
    /// otherwise. Refused, changing nothing, if the id or email is taken.
    pub async fn register(&self, r: Registration, who: Asker<'_>, now: i64) -> Result<AccountRow, AccountError> {
        let email = r.email;
        let claimed = match r.secret {
            None => None,
            Some(secret) => Some(self.check_claim(&r.id, secret, &who, now).await?),
        };
        let password_hash = self.hasher.hash(who.source, who.clean, r.password).await?;
        let mut tx = self.db.begin().await?;
        if let Some((stored, _)) = &claimed
            && !Db::consume_secret(&mut tx, r.id.as_str(), stored, now).await?
        {
            return Err(AccountError::SecretUsedUp);
        }
        let invited_by = match &r.invitation {
            None => None,
            Some(code) => Some(
                store::spend_invitation(&mut tx, &portal::token_hash(code), now)
                    .await?
                    .ok_or_else(|| {
                        AccountError::InvalidField("the invitation code is unknown, used up or expired".into())
                    })?,
            ),
        };
        if store::id_or_email_taken(&mut tx, r.id.as_str(), &email, claimed.is_some()).await? {
            return Err(AccountError::Taken);
        }
        let decided_by = match (&invited_by, &claimed) {
            (Some(by), _) => Some(format!("invitation:{by}")),
            (None, Some((_, by))) => Some(format!("secret:{by}")),
            _ => None,
        };
        let state = if decided_by.is_some() {
            AccountState::Approved
        } else {
            AccountState::Pending
        };
        let name = r.name.as_str();
        store::insert(
            &mut tx,
            &NewAccount {
                id: r.id.as_str(),
                name,
                email: &email,
                organisation: &r.organisation,
                password_hash: &password_hash,
                state,
                decided_by: decided_by.as_deref(),
                now,
            },
        )
        .await?;
        if let Some(by) = &invited_by {
            create_participant(&mut tx, r.id.as_str(), name, &email, &r.organisation, by, now).await?;
        }
        tx.commit().await?;
        tracing::info!(id = %r.id, state = state.as_str(), "portal registration");
        Ok(AccountRow {
            id: r.id.to_string(),
            name: name.to_string(),
            email,
            organisation: r.organisation,
            state,
            created_at: now,
        })
    }

    /// Checks a claim of a registered identity: its secret verifies (like an enrollment), it is
    /// an active participant, the secret has not expired. Returns the secret's hash and the
    /// registrar.
    async fn check_claim(
        &self,
        id: &IdentityId,
        secret: String,
        who: &Asker<'_>,
        now: i64,
    ) -> Result<(String, String), AccountError> {
        let ident = self.db.identity(id.as_str()).await?;
        let stored = ident.as_ref().and_then(|i| i.secret_hash.clone());
        if !self
            .hasher
            .verify(who.source, who.clean, secret, stored.clone())
            .await?
        {
            return Err(AccountError::InvalidCredentials);
        }
        let (Some(ident), Some(stored)) = (ident, stored) else {
            return Err(AccountError::InvalidCredentials);
        };
        if ident.kind != identity::IdentityKind::Participant || ident.status != identity::IdentityStatus::Active {
            return Err(AccountError::Forbidden(
                "only active participants sign in to the portal".into(),
            ));
        }
        if ident.secret_expires_at.is_none_or(|e| e <= now) {
            return Err(AccountError::SecretExpired);
        }
        Ok((stored, ident.registered_by))
    }

    /// Signs in with a password: a new session for any account but a rejected one.
    pub async fn sign_in(
        &self,
        id: &str,
        password: String,
        who: Asker<'_>,
        now: i64,
    ) -> Result<NewSession, AccountError> {
        let row = store::credentials(self.db, id).await?;
        let hash = row.as_ref().map(|(h, _)| h.clone());
        if !self.hasher.verify(who.source, who.clean, password, hash).await? {
            return Err(AccountError::BadLogin);
        }
        let (_, state) = row.ok_or(AccountError::BadLogin)?;
        if state == AccountState::Rejected {
            return Err(AccountError::Rejected);
        }
        let token = portal::random_token();
        let csrf = portal::random_token();
        let expires = now + portal::SESSION_TTL.as_secs() as i64;
        store::insert_session(self.db, &portal::token_hash(&token), id, &csrf, now, expires).await?;
        tracing::info!(id, "portal sign-in");
        Ok(NewSession { token, csrf, state })
    }

    /// Ends a session.
    pub async fn sign_out(&self, token_hash: &str) -> Result<(), AccountError> {
        Ok(store::delete_session(self.db, token_hash).await?)
    }

    /// The unexpired session with this token hash.
    pub async fn session(&self, token_hash: &str, now: i64) -> Result<Option<SessionRow>, AccountError> {
        Ok(store::session(self.db, token_hash)
            .await?
            .filter(|s| s.expires_at > now))
    }

    /// The account under `id`.
    pub async fn account(&self, id: &str) -> Result<Option<AccountRow>, AccountError> {
        Ok(store::get(self.db, id).await?)
    }

    /// A one-time browser-enrollment challenge for `identity`; returns it and its expiry.
    pub async fn new_challenge(&self, identity: &str, now: i64) -> Result<(String, i64), AccountError> {
        let challenge = portal::random_token();
        let expires = now + portal::CHALLENGE_TTL.as_secs() as i64;
        store::insert_challenge(self.db, &portal::token_hash(&challenge), identity, now, expires).await?;
        Ok((challenge, expires))
    }

    /// Accounts in `state`, for administrators.
    pub async fn list(&self, state: AccountState) -> Result<Vec<AccountRow>, AccountError> {
        Ok(store::list(self.db, state).await?)
    }

    /// An administrator's decision on a pending account; approval creates the participant
    /// (refused, changing nothing, if an identity has the id).
    pub async fn decide(&self, id: &str, approve: bool, by: &str, now: i64) -> Result<AccountState, AccountError> {
        let to = if approve {
            AccountState::Approved
        } else {
            AccountState::Rejected
        };
        let mut tx = self.db.begin().await?;
        let (name, email, organisation) = store::decide(&mut tx, id, to, by, now)
            .await?
            .ok_or_else(|| AccountError::NoPending(id.to_string()))?;
        if approve {
            if Db::identity_exists(&mut tx, id).await? {
                return Err(AccountError::IdentityExists);
            }
            create_participant(&mut tx, id, &name, &email, &organisation, by, now).await?;
        }
        tx.commit().await?;
        tracing::info!(id, approve, by, "portal registration decided");
        Ok(to)
    }

    /// A new invitation code good for `uses` registrations until `now + ttl_seconds`; returns
    /// the code (only its hash is stored) and its expiry.
    pub async fn invite(&self, by: &str, ttl_seconds: i64, uses: i64, now: i64) -> Result<(String, i64), AccountError> {
        if !(60..=90 * 86_400).contains(&ttl_seconds) || !(1..=1000).contains(&uses) {
            return Err(AccountError::InvalidField(
                "ttl_seconds must be from 60 to 7776000 and uses from 1 to 1000".into(),
            ));
        }
        let code = crate::secrets::new_secret();
        let expires = now + ttl_seconds;
        store::insert_invitation(self.db, &portal::token_hash(&code), by, expires, uses).await?;
        Ok((code, expires))
    }
}

/// The participant an approved or invited account is bound to: no roles, the account's details
/// as attributes.
async fn create_participant(
    c: &mut crate::db::Conn,
    id: &str,
    name: &str,
    email: &str,
    organisation: &str,
    by: &str,
    now: i64,
) -> Result<(), AccountError> {
    let attributes = serde_json::json!({ "name": name.trim(), "email": email, "organisation": organisation });
    if !Db::insert_portal_participant(c, id, &attributes, by, now).await? {
        return Err(AccountError::IdentityExists);
    }
    Ok(())
}
