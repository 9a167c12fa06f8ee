//! The subchain registry: subchains, their hosting nodes and members, join requests, and the
//! signed membership statement of every revision; and the change feed ledger nodes follow.
//!
//! Every change to a subchain's membership is one transaction that (1) locks the subchain's row
//! and bumps its revision, (2) applies the change, (3) reads the new membership and signs its
//! statement, (4) appends a membership leaf to the issuance log (locking the log's row), and
//! (5) writes a feed event whose sequence number is taken under that lock, so feed order is
//! commit order on every replica. Authorisation is decided by the caller (the API layer) from
//! [`Subchain`] and [`Registry::role_of`]; this module enforces the data rules.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use identity::membership::{Envelope, Heartbeat, Member, MembershipKey, Role, Statement, SubchainId};
use identity::{IdentityKind, IdentityStatus};
use ring::signature::{Ed25519KeyPair, KeyPair};
use sqlx::{Any, Row, Transaction};

use crate::db::{Db, placeholders};
use crate::log::{LogSigner, NewLeaf, Receipt};

/// The CA's membership signing key (Ed25519). Kept sealed in the database's `meta`, so every
/// replica signs with the same key.
pub struct MembershipSigner {
    key: Ed25519KeyPair,
    public: MembershipKey,
    trust_domain: String,
}

impl MembershipSigner {
    /// Loads the key from the database, creating it on first use (the first replica to insert
    /// it wins; the others read the winner's).
    pub async fn load_or_create(db: &Db, passphrase: &str, trust_domain: &str) -> anyhow::Result<Self> {
        if db.meta("membership_key_sealed").await?.is_none() {
            let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                .map_err(|_| anyhow::anyhow!("cannot generate the membership key"))?;
            let sealed = crate::keystore::seal(passphrase, "membership", pkcs8.as_ref())?;
            sqlx::query("INSERT INTO ca_meta (k, v) VALUES ('membership_key_sealed', $1) ON CONFLICT (k) DO NOTHING")
                .bind(sealed)
                .execute(&mut *db.acquire().await?)
                .await?;
        }
        let sealed = db
            .meta("membership_key_sealed")
            .await?
            .ok_or_else(|| anyhow::anyhow!("membership key missing"))?;
        let pkcs8 = crate::keystore::open(passphrase, "membership", &sealed)?;
        let key = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| anyhow::anyhow!("membership key: {e}"))?;
        let public = MembershipKey::from_bytes(key.public_key().as_ref())?;
        Ok(Self {
            key,
            public,
            trust_domain: trust_domain.to_string(),
        })
    }

    /// The verification key.
    pub fn public(&self) -> &MembershipKey {
        &self.public
    }

    /// Signs a payload under a context.
    pub fn seal(&self, context: &[u8], payload: &[u8]) -> Envelope {
        Envelope {
            payload: B64.encode(payload),
            signature: B64.encode(self.key.sign(&identity::membership::signed_message(context, payload))),
        }
    }

    /// A signed heartbeat for `node` at feed position `cursor`.
    pub fn heartbeat(&self, node: &str, cursor: u64, at_ms: i64) -> Envelope {
        let hb = Heartbeat {
            trust_domain: self.trust_domain.clone(),
            node: node.to_string(),
            cursor,
            at_ms,
        };
        let payload = serde_json::to_vec(&hb).unwrap_or_default();
        self.seal(identity::membership::HEARTBEAT_CONTEXT, &payload)
    }
}

/// Who may join a subchain without approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Policy {
    /// Anyone may join as reader or writer at once; admin needs approval.
    Open,
    /// Every join needs approval by the publisher, a subchain admin or a CA administrator.
    Approval,
}

impl Policy {
    /// `open` or `approval`.
    pub fn name(self) -> &'static str {
        match self {
            Policy::Open => "open",
            Policy::Approval => "approval",
        }
    }

    fn parse(s: &str) -> Result<Self, RegistryError> {
        match s {
            "open" => Ok(Policy::Open),
            "approval" => Ok(Policy::Approval),
            _ => Err(RegistryError::Internal(anyhow::anyhow!("stored policy '{s}'"))),
        }
    }
}

/// A subchain's record.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Subchain {
    /// Id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The publishing identity (manages it).
    pub publisher: String,
    /// Free text.
    pub description: String,
    /// Join policy.
    pub policy: Policy,
    /// Current membership revision.
    pub revision: i64,
    /// Number of members.
    pub members: i64,
    /// Hosting city nodes, sorted.
    pub nodes: Vec<String>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// A new subchain.
pub struct NewSubchain {
    /// Id.
    pub id: SubchainId,
    /// Display name.
    pub name: String,
    /// Free text.
    pub description: String,
    /// Join policy.
    pub policy: Policy,
    /// Hosting node ids.
    pub nodes: Vec<String>,
}

/// Changes to a subchain's settings (absent fields stay).
#[derive(Default)]
pub struct Patch {
    /// New name.
    pub name: Option<String>,
    /// New description.
    pub description: Option<String>,
    /// New policy.
    pub policy: Option<Policy>,
    /// New hosting nodes (a membership revision).
    pub nodes: Option<Vec<String>>,
}

/// A membership change's result.
#[derive(Debug, Clone, serde::Serialize)]
pub struct Revised {
    /// The subchain.
    pub subchain: String,
    /// The new revision.
    pub revision: i64,
    /// The signed statement of it.
    pub statement: Envelope,
    /// Its place in the issuance log.
    pub receipt: Receipt,
}

/// A pending join request.
#[derive(Debug, Clone, serde::Serialize)]
pub struct JoinRequest {
    /// The subchain.
    pub subchain: String,
    /// Who asks.
    pub identity: String,
    /// The role asked for.
    pub role: Role,
    /// Free text from the requester.
    pub note: String,
    /// Unix seconds.
    pub requested_at: i64,
}

/// What a join did.
#[derive(Debug, Clone, serde::Serialize)]
#[serde(tag = "outcome", rename_all = "lowercase")]
pub enum Joined {
    /// Open policy: a member now.
    Member(Revised),
    /// Waiting for approval.
    Pending(JoinRequest),
}

/// One event of the change feed: the API contract's type (the feed is what nodes read).
pub use bsn_api::ca::FeedEvent;

/// Everything a membership change needs besides the database.
pub struct Registry<'a> {
    /// The store.
    pub db: &'a Db,
    /// The membership key.
    pub signer: &'a MembershipSigner,
    /// The issuance log's key.
    pub log: &'a LogSigner,
    /// Woken after each committed revision (the feed streams wait on it).
    pub feed: &'a tokio::sync::watch::Sender<u64>,
}

/// Wakes the feed streams waiting on `feed`: something was committed that they may send.
pub fn wake_feed(feed: &tokio::sync::watch::Sender<u64>) {
    feed.send_modify(|v| *v = v.wrapping_add(1));
}

impl Registry<'_> {
    /// Wakes the feed streams: a revision was committed.
    fn announce(&self) {
        wake_feed(self.feed);
    }
}

/// What a registry call can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// A field breaks its rules (unknown node, not a participant, bad revision...).
    #[error("{0}")]
    InvalidField(String),
    /// No such subchain, member or request.
    #[error("{0}")]
    NotFound(String),
    /// The change conflicts with the current state (exists already, already a member...).
    #[error("{0}")]
    Conflict(String),
    /// Storage or signing failed.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<sqlx::Error> for RegistryError {
    fn from(e: sqlx::Error) -> Self {
        Self::Internal(e.into())
    }
}

fn db_err(e: impl Into<anyhow::Error>) -> RegistryError {
    RegistryError::Internal(e.into())
}

fn parse_role(s: &str) -> Result<Role, RegistryError> {
    Role::parse(s).ok_or_else(|| RegistryError::Internal(anyhow::anyhow!("stored role '{s}'")))
}

const SUBCHAIN_COLUMNS: &str = "id, name, publisher, description, policy, revision, members, created_at, updated_at";

fn subchain_from(r: &sqlx::any::AnyRow) -> Result<Subchain, RegistryError> {
    Ok(Subchain {
        id: r.try_get(0).map_err(db_err)?,
        name: r.try_get(1).map_err(db_err)?,
        publisher: r.try_get(2).map_err(db_err)?,
        description: r.try_get(3).map_err(db_err)?,
        policy: Policy::parse(&r.try_get::<String, _>(4).map_err(db_err)?)?,
        revision: r.try_get(5).map_err(db_err)?,
        members: r.try_get(6).map_err(db_err)?,
        nodes: Vec::new(),
        created_at: r.try_get(7).map_err(db_err)?,
        updated_at: r.try_get(8).map_err(db_err)?,
    })
}

async fn nodes_of(conn: &mut sqlx::AnyConnection, id: &str) -> Result<Vec<String>, RegistryError> {
    sqlx::query_scalar("SELECT node_id FROM subchain_nodes WHERE subchain_id = $1 ORDER BY node_id")
        .bind(id)
        .fetch_all(conn)
        .await
        .map_err(db_err)
}

/// Checks hosting nodes: 1 to 64 distinct, each an active node identity. Returns them sorted.
async fn check_nodes(conn: &mut sqlx::AnyConnection, nodes: &[String]) -> Result<Vec<String>, RegistryError> {
    let mut sorted = nodes.to_vec();
    sorted.sort();
    sorted.dedup();
    if sorted.len() != nodes.len() {
        return Err(RegistryError::InvalidField("nodes must not repeat".into()));
    }
    if sorted.is_empty() || sorted.len() > 64 {
        return Err(RegistryError::InvalidField(
            "a subchain needs 1 to 64 hosting nodes".into(),
        ));
    }
    for n in &sorted {
        match crate::db::Db::kind_and_status(&mut *conn, n).await.map_err(db_err)? {
            Some((IdentityKind::Node, IdentityStatus::Active)) => {}
            Some((IdentityKind::Participant, _)) => {
                return Err(RegistryError::InvalidField(format!("'{n}' is not a node identity")));
            }
            Some(_) => return Err(RegistryError::InvalidField(format!("node '{n}' is disabled"))),
            None => return Err(RegistryError::InvalidField(format!("no node identity '{n}'"))),
        }
    }
    Ok(sorted)
}

/// Fails unless `id` is an active participant.
async fn check_participant(conn: &mut sqlx::AnyConnection, id: &str) -> Result<(), RegistryError> {
    match crate::db::Db::kind_and_status(conn, id).await.map_err(db_err)? {
        Some((IdentityKind::Participant, IdentityStatus::Active)) => Ok(()),
        Some((IdentityKind::Node, _)) => Err(RegistryError::InvalidField(format!(
            "'{id}' is a node, not a participant"
        ))),
        Some(_) => Err(RegistryError::InvalidField(format!("identity '{id}' is disabled"))),
        None => Err(RegistryError::NotFound(format!("no identity '{id}'"))),
    }
}

impl Registry<'_> {
    /// A subchain, with its nodes.
    pub async fn get(&self, id: &str) -> Result<Option<Subchain>, RegistryError> {
        let mut conn = self.db.acquire().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SUBCHAIN_COLUMNS} FROM subchains WHERE id = $1"
        )))
        .bind(id)
        .fetch_optional(&mut *conn)
        .await
        .map_err(db_err)?;
        let Some(row) = row else { return Ok(None) };
        let mut s = subchain_from(&row)?;
        s.nodes = nodes_of(&mut conn, id).await?;
        Ok(Some(s))
    }

    /// Fails with not-found unless the subchain exists.
    pub async fn require(&self, id: &str) -> Result<Subchain, RegistryError> {
        self.get(id)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("no subchain '{id}'")))
    }

    /// The directory: subchains by id after `after`, with their nodes.
    pub async fn list(&self, after: &str, limit: i64, publisher: Option<&str>) -> Result<Vec<Subchain>, RegistryError> {
        let mut conn = self.db.acquire().await?;
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
            "SELECT {SUBCHAIN_COLUMNS} FROM subchains WHERE id > $1 \
             AND (CAST($2 AS TEXT) IS NULL OR publisher = $2) ORDER BY id LIMIT $3"
        )))
        .bind(after)
        .bind(publisher)
        .bind(limit)
        .fetch_all(&mut *conn)
        .await
        .map_err(db_err)?;
        let mut out = rows.iter().map(subchain_from).collect::<Result<Vec<_>, _>>()?;
        for s in &mut out {
            s.nodes = nodes_of(&mut conn, &s.id).await?;
        }
        Ok(out)
    }

    /// The identity's role on the subchain, if it is a member.
    pub async fn role_of(&self, subchain: &str, identity: &str) -> Result<Option<Role>, RegistryError> {
        let role: Option<String> =
            sqlx::query_scalar("SELECT role FROM subchain_members WHERE subchain_id = $1 AND identity_id = $2")
                .bind(subchain)
                .bind(identity)
                .fetch_optional(&mut *self.db.acquire().await?)
                .await
                .map_err(db_err)?;
        role.as_deref().map(parse_role).transpose()
    }

    /// Members by id after `after`.
    pub async fn members(&self, subchain: &str, after: &str, limit: i64) -> Result<Vec<Member>, RegistryError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT identity_id, role FROM subchain_members WHERE subchain_id = $1 AND identity_id > $2 \
             ORDER BY identity_id LIMIT $3",
        )
        .bind(subchain)
        .bind(after)
        .bind(limit)
        .fetch_all(&mut *self.db.acquire().await?)
        .await
        .map_err(db_err)?;
        rows.into_iter()
            .map(|(id, role)| {
                Ok(Member {
                    id,
                    role: parse_role(&role)?,
                })
            })
            .collect()
    }

    /// The subchains an identity belongs to, with its role in each.
    pub async fn memberships(&self, identity: &str) -> Result<Vec<(String, Role)>, RegistryError> {
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT subchain_id, role FROM subchain_members WHERE identity_id = $1 ORDER BY subchain_id",
        )
        .bind(identity)
        .fetch_all(&mut *self.db.acquire().await?)
        .await
        .map_err(db_err)?;
        rows.into_iter().map(|(s, r)| Ok((s, parse_role(&r)?))).collect()
    }

    /// Pending join requests of a subchain.
    pub async fn requests(&self, subchain: &str) -> Result<Vec<JoinRequest>, RegistryError> {
        let rows: Vec<(String, String, String, String, i64)> = sqlx::query_as(
            "SELECT subchain_id, identity_id, role, note, requested_at FROM join_requests \
             WHERE subchain_id = $1 ORDER BY requested_at, identity_id",
        )
        .bind(subchain)
        .fetch_all(&mut *self.db.acquire().await?)
        .await
        .map_err(db_err)?;
        rows.into_iter()
            .map(|(subchain, identity, role, note, requested_at)| {
                Ok(JoinRequest {
                    subchain,
                    identity,
                    role: parse_role(&role)?,
                    note,
                    requested_at,
                })
            })
            .collect()
    }

    /// The signed statement of a revision (the latest if `None`).
    pub async fn statement(&self, subchain: &str, revision: Option<i64>) -> Result<Option<Envelope>, RegistryError> {
        let row: Option<(Vec<u8>, Vec<u8>)> = sqlx::query_as(
            "SELECT payload, signature FROM subchain_statements WHERE subchain_id = $1 \
             AND revision = COALESCE($2, (SELECT revision FROM subchains WHERE id = $1))",
        )
        .bind(subchain)
        .bind(revision)
        .fetch_optional(&mut *self.db.acquire().await?)
        .await
        .map_err(db_err)?;
        Ok(row.map(|(p, s)| Envelope {
            payload: B64.encode(p),
            signature: B64.encode(s),
        }))
    }

    /// Creates a subchain at revision 1, with its publisher as its first admin member.
    pub async fn create(&self, new: NewSubchain, publisher: &str, now: i64) -> Result<Revised, RegistryError> {
        let mut tx = self.db.begin().await?;
        let nodes = check_nodes(&mut tx, &new.nodes).await?;
        let inserted = sqlx::query(
            "INSERT INTO subchains (id, name, publisher, description, policy, revision, members, created_at, updated_at) \
             VALUES ($1, $2, $3, $4, $5, 1, 1, $6, $6) ON CONFLICT (id) DO NOTHING",
        )
        .bind(new.id.as_str())
        .bind(&new.name)
        .bind(publisher)
        .bind(&new.description)
        .bind(new.policy.name())
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if inserted.rows_affected() == 0 {
            return Err(RegistryError::Conflict(format!("subchain '{}' already exists", new.id)));
        }
        for n in &nodes {
            sqlx::query("INSERT INTO subchain_nodes (node_id, subchain_id) VALUES ($1, $2)")
                .bind(n)
                .bind(new.id.as_str())
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        sqlx::query(
            "INSERT INTO subchain_members (subchain_id, identity_id, role, since, added_by) VALUES ($1, $2, 'admin', $3, $2)",
        )
        .bind(new.id.as_str())
        .bind(publisher)
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        let revised = self
            .commit_revision(&mut tx, new.id.as_str(), 1, &[], publisher, now)
            .await?;
        tx.commit().await.map_err(db_err)?;
        self.announce();
        Ok(revised)
    }

    /// Locks the subchain's row and starts a new revision. Returns (revision, hosting nodes before).
    async fn begin_revision(
        &self,
        tx: &mut Transaction<'static, Any>,
        subchain: &str,
        now: i64,
    ) -> Result<(i64, Vec<String>), RegistryError> {
        let revision: Option<i64> = sqlx::query_scalar(
            "UPDATE subchains SET revision = revision + 1, updated_at = $2 WHERE id = $1 RETURNING revision",
        )
        .bind(subchain)
        .bind(now)
        .fetch_optional(&mut **tx)
        .await
        .map_err(db_err)?;
        let revision = revision.ok_or_else(|| RegistryError::NotFound(format!("no subchain '{subchain}'")))?;
        Ok((revision, nodes_of(tx, subchain).await?))
    }

    /// Changes settings; a change of hosting nodes is a new membership revision.
    pub async fn update(
        &self,
        subchain: &str,
        patch: Patch,
        by: &str,
        now: i64,
    ) -> Result<Option<Revised>, RegistryError> {
        let mut tx = self.db.begin().await?;
        let found = sqlx::query(
            "UPDATE subchains SET name = COALESCE($2, name), description = COALESCE($3, description), \
             policy = COALESCE($4, policy), updated_at = $5 WHERE id = $1",
        )
        .bind(subchain)
        .bind(patch.name)
        .bind(patch.description)
        .bind(patch.policy.map(Policy::name))
        .bind(now)
        .execute(&mut *tx)
        .await
        .map_err(db_err)?;
        if found.rows_affected() == 0 {
            return Err(RegistryError::NotFound(format!("no subchain '{subchain}'")));
        }
        let Some(nodes) = patch.nodes else {
            tx.commit().await.map_err(db_err)?;
            return Ok(None);
        };
        let nodes = check_nodes(&mut tx, &nodes).await?;
        let (revision, before) = self.begin_revision(&mut tx, subchain, now).await?;
        if before == nodes {
            return Err(RegistryError::Conflict(
                "the subchain already has exactly these hosting nodes".into(),
            ));
        }
        sqlx::query("DELETE FROM subchain_nodes WHERE subchain_id = $1")
            .bind(subchain)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        for n in &nodes {
            sqlx::query("INSERT INTO subchain_nodes (node_id, subchain_id) VALUES ($1, $2)")
                .bind(n)
                .bind(subchain)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
        }
        let revised = self
            .commit_revision(&mut tx, subchain, revision, &before, by, now)
            .await?;
        tx.commit().await.map_err(db_err)?;
        self.announce();
        Ok(Some(revised))
    }

    /// Adds a member or changes its role (a pending request of it is settled by this).
    pub async fn put_member(
        &self,
        subchain: &str,
        identity: &str,
        role: Role,
        by: &str,
        now: i64,
    ) -> Result<Revised, RegistryError> {
        let mut tx = self.db.begin().await?;
        check_participant(&mut tx, identity).await?;
        let (revision, nodes) = self.begin_revision(&mut tx, subchain, now).await?;
        let current: Option<String> =
            sqlx::query_scalar("SELECT role FROM subchain_members WHERE subchain_id = $1 AND identity_id = $2")
                .bind(subchain)
                .bind(identity)
                .fetch_optional(&mut *tx)
                .await
                .map_err(db_err)?;
        match current {
            Some(r) if r == role.name() => {
                return Err(RegistryError::Conflict(format!(
                    "'{identity}' is already a {r} of '{subchain}'"
                )));
            }
            Some(_) => {
                sqlx::query("UPDATE subchain_members SET role = $3 WHERE subchain_id = $1 AND identity_id = $2")
                    .bind(subchain)
                    .bind(identity)
                    .bind(role.name())
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
            None => {
                sqlx::query(
                    "INSERT INTO subchain_members (subchain_id, identity_id, role, since, added_by) VALUES ($1, $2, $3, $4, $5)",
                )
                .bind(subchain)
                .bind(identity)
                .bind(role.name())
                .bind(now)
                .bind(by)
                .execute(&mut *tx)
                .await
                .map_err(db_err)?;
                sqlx::query("UPDATE subchains SET members = members + 1 WHERE id = $1")
                    .bind(subchain)
                    .execute(&mut *tx)
                    .await
                    .map_err(db_err)?;
            }
        }
        sqlx::query("DELETE FROM join_requests WHERE subchain_id = $1 AND identity_id = $2")
            .bind(subchain)
            .bind(identity)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let revised = self
            .commit_revision(&mut tx, subchain, revision, &nodes, by, now)
            .await?;
        tx.commit().await.map_err(db_err)?;
        self.announce();
        Ok(revised)
    }

    /// Adds many members at once (one revision). Existing members keep their roles.
    pub async fn add_members(
        &self,
        subchain: &str,
        members: &[Member],
        by: &str,
        now: i64,
    ) -> Result<Revised, RegistryError> {
        let mut tx = self.db.begin().await?;
        let (revision, nodes) = self.begin_revision(&mut tx, subchain, now).await?;
        let backend = self.db.backend;
        let mut added = 0u64;
        for chunk in members.chunks(500) {
            let ids: Vec<&str> = chunk.iter().map(|m| m.id.as_str()).collect();
            let sql = format!(
                "SELECT COUNT(*) FROM identities WHERE kind = 'participant' AND status = 'active' AND id IN ({})",
                placeholders(backend, 1, ids.len())
            );
            let mut q = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql));
            for id in &ids {
                q = q.bind(*id);
            }
            let known = q.fetch_one(&mut *tx).await.map_err(db_err)?;
            if known as usize != ids.len() {
                return Err(RegistryError::InvalidField(
                    "every member must be an active participant identity".into(),
                ));
            }
            let values: Vec<String> = (0..chunk.len())
                .map(|i| format!("({})", placeholders(backend, i * 5 + 1, 5)))
                .collect();
            let sql = format!(
                "INSERT INTO subchain_members (subchain_id, identity_id, role, since, added_by) VALUES {} \
                 ON CONFLICT (subchain_id, identity_id) DO NOTHING",
                values.join(", ")
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for m in chunk {
                q = q
                    .bind(subchain)
                    .bind(m.id.as_str())
                    .bind(m.role.name())
                    .bind(now)
                    .bind(by);
            }
            added += q.execute(&mut *tx).await.map_err(db_err)?.rows_affected();
        }
        if added == 0 {
            return Err(RegistryError::Conflict("all of them are members already".into()));
        }
        sqlx::query("UPDATE subchains SET members = members + $2 WHERE id = $1")
            .bind(subchain)
            .bind(added as i64)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let revised = self
            .commit_revision(&mut tx, subchain, revision, &nodes, by, now)
            .await?;
        tx.commit().await.map_err(db_err)?;
        self.announce();
        Ok(revised)
    }

    /// Removes a member. The publisher stays an admin of its own subchain.
    pub async fn remove_member(
        &self,
        subchain: &str,
        identity: &str,
        by: &str,
        now: i64,
    ) -> Result<Revised, RegistryError> {
        let mut tx = self.db.begin().await?;
        let (revision, nodes) = self.begin_revision(&mut tx, subchain, now).await?;
        let publisher: String = sqlx::query_scalar("SELECT publisher FROM subchains WHERE id = $1")
            .bind(subchain)
            .fetch_one(&mut *tx)
            .await
            .map_err(db_err)?;
        if publisher == identity {
            return Err(RegistryError::Conflict(
                "the publisher cannot be removed from its subchain".into(),
            ));
        }
        let gone = sqlx::query("DELETE FROM subchain_members WHERE subchain_id = $1 AND identity_id = $2")
            .bind(subchain)
            .bind(identity)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        if gone.rows_affected() == 0 {
            return Err(RegistryError::NotFound(format!(
                "'{identity}' is not a member of '{subchain}'"
            )));
        }
        sqlx::query("UPDATE subchains SET members = members - 1 WHERE id = $1")
            .bind(subchain)
            .execute(&mut *tx)
            .await
            .map_err(db_err)?;
        let revised = self
            .commit_revision(&mut tx, subchain, revision, &nodes, by, now)
            .await?;
        tx.commit().await.map_err(db_err)?;
        self.announce();
        Ok(revised)
    }

    /// A participant asks to join. Open subchains admit readers and writers at once.
    pub async fn join(
        &self,
        subchain: &str,
        identity: &str,
        role: Role,
        note: &str,
        now: i64,
    ) -> Result<Joined, RegistryError> {
        let s = self.require(subchain).await?;
        if self.role_of(subchain, identity).await?.is_some() {
            return Err(RegistryError::Conflict(format!(
                "you are already a member of '{subchain}'"
            )));
        }
        if s.policy == Policy::Open && role != Role::Admin {
            return Ok(Joined::Member(
                self.put_member(subchain, identity, role, identity, now).await?,
            ));
        }
        let mut conn = self.db.acquire().await?;
        check_participant(&mut conn, identity).await?;
        let inserted = sqlx::query(
            "INSERT INTO join_requests (subchain_id, identity_id, role, note, requested_at) VALUES ($1, $2, $3, $4, $5) \
             ON CONFLICT (subchain_id, identity_id) DO NOTHING",
        )
        .bind(subchain)
        .bind(identity)
        .bind(role.name())
        .bind(note)
        .bind(now)
        .execute(&mut *conn)
        .await
        .map_err(db_err)?;
        if inserted.rows_affected() == 0 {
            return Err(RegistryError::Conflict(format!(
                "you already have a pending request to join '{subchain}'"
            )));
        }
        Ok(Joined::Pending(JoinRequest {
            subchain: subchain.to_string(),
            identity: identity.to_string(),
            role,
            note: note.to_string(),
            requested_at: now,
        }))
    }

    /// The pending request of `identity`, if any.
    pub async fn request_of(&self, subchain: &str, identity: &str) -> Result<Option<JoinRequest>, RegistryError> {
        Ok(self
            .requests(subchain)
            .await?
            .into_iter()
            .find(|r| r.identity == identity))
    }

    /// Rejects (deletes) a pending request.
    pub async fn reject(&self, subchain: &str, identity: &str) -> Result<(), RegistryError> {
        let gone = sqlx::query("DELETE FROM join_requests WHERE subchain_id = $1 AND identity_id = $2")
            .bind(subchain)
            .bind(identity)
            .execute(&mut *self.db.acquire().await?)
            .await
            .map_err(db_err)?;
        if gone.rows_affected() == 0 {
            return Err(RegistryError::NotFound(format!(
                "no pending request of '{identity}' to join '{subchain}'"
            )));
        }
        Ok(())
    }

    /// Signs the statement of `revision`, stores it, logs it and puts it on the feed for the
    /// nodes hosting the subchain before (`nodes_before`) and after the change.
    async fn commit_revision(
        &self,
        tx: &mut Transaction<'static, Any>,
        subchain: &str,
        revision: i64,
        nodes_before: &[String],
        by: &str,
        now: i64,
    ) -> Result<Revised, RegistryError> {
        let nodes = nodes_of(tx, subchain).await?;
        let rows: Vec<(String, String)> = sqlx::query_as(
            "SELECT identity_id, role FROM subchain_members WHERE subchain_id = $1 ORDER BY identity_id",
        )
        .bind(subchain)
        .fetch_all(&mut **tx)
        .await
        .map_err(db_err)?;
        let members = rows
            .into_iter()
            .map(|(id, role)| {
                Ok(Member {
                    id,
                    role: parse_role(&role)?,
                })
            })
            .collect::<Result<Vec<_>, RegistryError>>()?;
        let statement = Statement {
            version: 1,
            trust_domain: self.signer.trust_domain.clone(),
            subchain: SubchainId::parse(subchain).map_err(db_err)?,
            revision: revision as u64,
            issued_at: now,
            nodes: nodes.clone(),
            members,
        };
        let payload = serde_json::to_vec(&statement).map_err(db_err)?;
        let envelope = self.signer.seal(identity::membership::STATEMENT_CONTEXT, &payload);
        let signature = B64.decode(&envelope.signature).map_err(db_err)?;
        let leaf = identity::logleaf::LogLeaf::Membership {
            time: now.max(0) as u64,
            subchain: subchain.to_string(),
            revision: revision as u64,
            authorized_by: by.to_string(),
            statement_sha256: ring::digest::digest(&ring::digest::SHA256, &payload)
                .as_ref()
                .try_into()
                .map_err(db_err)?,
        };
        let new = NewLeaf {
            bytes: leaf.encode().map_err(db_err)?,
            kind: "membership",
            serial: String::new(),
            identity: by.to_string(),
            at: now,
        };
        let appended = crate::log::append(tx, self.db.backend, self.log, &[new], true)
            .await
            .map_err(db_err)?;
        sqlx::query(
            "INSERT INTO subchain_statements (subchain_id, revision, payload, signature, log_index) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(subchain)
        .bind(revision)
        .bind(payload)
        .bind(signature)
        .bind(appended.first as i64)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
        let seq = next_seq(tx).await?;
        sqlx::query("INSERT INTO feed (seq, kind, subchain_id, revision, at) VALUES ($1, 'membership', $2, $3, $4)")
            .bind(seq)
            .bind(subchain)
            .bind(revision)
            .bind(now)
            .execute(&mut **tx)
            .await
            .map_err(db_err)?;
        let mut audience: Vec<&String> = nodes.iter().chain(nodes_before).collect();
        audience.sort();
        audience.dedup();
        for n in audience {
            sqlx::query("INSERT INTO feed_audience (node_id, seq) VALUES ($1, $2)")
                .bind(n)
                .bind(seq)
                .execute(&mut **tx)
                .await
                .map_err(db_err)?;
        }
        Ok(Revised {
            subchain: subchain.to_string(),
            revision,
            statement: envelope,
            receipt: appended.receipt(0),
        })
    }
}

/// The next feed position. Callers hold the issuance log's row lock (they appended a leaf in
/// this transaction), so positions are handed out in commit order.
async fn next_seq(tx: &mut Transaction<'static, Any>) -> Result<i64, RegistryError> {
    sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) + 1 FROM feed")
        .fetch_one(&mut **tx)
        .await
        .map_err(db_err)
}

/// Puts a revocation on the feed (in the revocation's transaction, after its log leaf).
pub async fn feed_revocation(
    tx: &mut Transaction<'static, Any>,
    serial: &str,
    identity: &str,
    reason: &str,
    at: i64,
) -> Result<i64, RegistryError> {
    let seq = next_seq(tx).await?;
    sqlx::query(
        "INSERT INTO feed (seq, kind, serial, identity_id, reason, at) VALUES ($1, 'revocation', $2, $3, $4, $5)",
    )
    .bind(seq)
    .bind(serial)
    .bind(identity)
    .bind(reason)
    .bind(at)
    .execute(&mut **tx)
    .await
    .map_err(db_err)?;
    sqlx::query("INSERT INTO feed_audience (node_id, seq) VALUES ('*', $1)")
        .bind(seq)
        .execute(&mut **tx)
        .await
        .map_err(db_err)?;
    Ok(seq)
}

/// The feed's newest position (0 when empty).
pub async fn feed_head(db: &Db) -> Result<i64, RegistryError> {
    sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM feed")
        .fetch_one(&mut *db.acquire().await?)
        .await
        .map_err(db_err)
}

/// Events after `cursor` that `node` may see, oldest first: an index range scan of the node's
/// and everyone's audience rows, never a scan of the registry.
pub async fn feed_page(db: &Db, node: &str, cursor: i64, limit: i64) -> Result<Vec<FeedEvent>, RegistryError> {
    let rows = sqlx::query(
        "SELECT f.seq, f.kind, f.subchain_id, f.revision, f.serial, f.identity_id, f.reason, f.at, s.payload, s.signature \
         FROM feed_audience a JOIN feed f ON f.seq = a.seq \
         LEFT JOIN subchain_statements s ON s.subchain_id = f.subchain_id AND s.revision = f.revision \
         WHERE a.node_id IN ('*', $1) AND a.seq > $2 ORDER BY a.seq LIMIT $3",
    )
    .bind(node)
    .bind(cursor)
    .bind(limit)
    .fetch_all(&mut *db.acquire().await?)
    .await
    .map_err(db_err)?;
    rows.iter()
        .map(|r| {
            let kind: String = r.try_get(1).map_err(db_err)?;
            let seq: i64 = r.try_get(0).map_err(db_err)?;
            let at: i64 = r.try_get(7).map_err(db_err)?;
            Ok(if kind == "membership" {
                let payload: Vec<u8> = r.try_get(8).map_err(db_err)?;
                let signature: Vec<u8> = r.try_get(9).map_err(db_err)?;
                FeedEvent::Membership {
                    seq,
                    subchain: r.try_get(2).map_err(db_err)?,
                    revision: r.try_get(3).map_err(db_err)?,
                    at,
                    statement: Envelope {
                        payload: B64.encode(payload),
                        signature: B64.encode(signature),
                    },
                }
            } else {
                FeedEvent::Revocation {
                    seq,
                    serial: r.try_get(4).map_err(db_err)?,
                    identity: r.try_get(5).map_err(db_err)?,
                    reason: r.try_get(6).map_err(db_err)?,
                    at,
                }
            })
        })
        .collect()
}
