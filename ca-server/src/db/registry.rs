//! The registry's store: subchains, their hosting nodes and members, join requests, signed
//! statements, and the change feed. Every query of the subchain registry is here; rows decode
//! into the registry's domain types ([`Subchain`], [`Policy`], [`JoinRequest`],
//! `identity::membership::Member`, [`FeedEvent`]) once, at this boundary. The rules (who may,
//! what must hold, in which order within a transaction) are in `crate::registry`.
//!
//! Every function takes the connection (or transaction) to run on, so the registry decides what
//! one transaction holds.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
pub use bsn_api::ca::FeedEvent;
use identity::membership::{Envelope, Member, Role};
use sqlx::{AnyConnection, Row};

use super::{Backend, DbError, placeholders};

/// Who may join a subchain without approval.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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

    /// By name.
    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "open" => Some(Policy::Open),
            "approval" => Some(Policy::Approval),
            _ => None,
        }
    }
}

/// A subchain's record.
#[derive(Debug, Clone)]
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
    /// Orderers (its Raft voters), sorted; empty when its city nodes order it.
    pub orderers: Vec<String>,
    /// Its resource plan as chosen (what its statement carries); `None` for a subchain made
    /// before plans.
    pub plan: Option<identity::plan::Plan>,
    /// Unix seconds.
    pub created_at: i64,
    /// Unix seconds.
    pub updated_at: i64,
}

/// A pending join request.
#[derive(Debug, Clone)]
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

fn decode(e: impl std::fmt::Display) -> DbError {
    DbError::Decode(e.to_string().into())
}

fn role(s: &str) -> Result<Role, DbError> {
    Role::parse(s).ok_or_else(|| decode(format!("stored role '{s}'")))
}

const SUBCHAIN_COLUMNS: &str =
    "id, name, publisher, description, policy, revision, members, created_at, updated_at, plan";

/// A stored plan (JSON), parsed and checked.
pub(super) fn stored_plan(json: Option<String>) -> Result<Option<identity::plan::Plan>, DbError> {
    json.map(|j| {
        let p: identity::plan::Plan = serde_json::from_str(&j).map_err(|e| decode(format!("stored plan: {e}")))?;
        p.check().map_err(|e| decode(format!("stored plan: {e}")))?;
        Ok(p)
    })
    .transpose()
}

fn subchain_from(r: &sqlx::any::AnyRow) -> Result<Subchain, DbError> {
    let policy: String = r.try_get(4)?;
    Ok(Subchain {
        id: r.try_get(0)?,
        name: r.try_get(1)?,
        publisher: r.try_get(2)?,
        description: r.try_get(3)?,
        policy: Policy::parse(&policy).ok_or_else(|| decode(format!("stored policy '{policy}'")))?,
        revision: r.try_get(5)?,
        members: r.try_get(6)?,
        nodes: Vec::new(),
        orderers: Vec::new(),
        plan: stored_plan(r.try_get(9)?)?,
        created_at: r.try_get(7)?,
        updated_at: r.try_get(8)?,
    })
}

/// Stores the sealed membership key unless one is stored already (the first replica wins).
pub async fn insert_membership_key(c: &mut AnyConnection, sealed: &str) -> Result<(), DbError> {
    sqlx::query("INSERT INTO ca_meta (k, v) VALUES ('membership_key_sealed', $1) ON CONFLICT (k) DO NOTHING")
        .bind(sealed)
        .execute(c)
        .await?;
    Ok(())
}

/// A subchain's plan (`None`: none, or no such subchain).
pub async fn plan_of(c: &mut AnyConnection, subchain: &str) -> Result<Option<identity::plan::Plan>, DbError> {
    let json: Option<Option<String>> = sqlx::query_scalar("SELECT plan FROM subchains WHERE id = $1")
        .bind(subchain)
        .fetch_optional(c)
        .await?;
    stored_plan(json.flatten())
}

/// Sets a subchain's plan (`None`: none).
pub async fn set_plan(
    c: &mut AnyConnection,
    subchain: &str,
    plan: Option<&identity::plan::Plan>,
) -> Result<(), DbError> {
    let json = plan.map(serde_json::to_string).transpose().map_err(decode)?;
    sqlx::query("UPDATE subchains SET plan = $1 WHERE id = $2")
        .bind(json)
        .bind(subchain)
        .execute(c)
        .await?;
    Ok(())
}

/// Every subchain on every city node that declared a capacity, with its plan (for placement).
pub async fn placements(c: &mut AnyConnection) -> Result<Vec<(String, String, Option<identity::plan::Plan>)>, DbError> {
    // Only nodes that declared a capacity take part in placement: subchains on the others are
    // not read (one creation read every subchain's placement, which made creating 100,000 slow
    // down as they accumulated).
    let rows = sqlx::query(
        "SELECT sn.subchain_id, sn.node_id, s.plan FROM subchain_nodes sn JOIN subchains s ON s.id = sn.subchain_id \
         JOIN network_nodes n ON n.id = sn.node_id WHERE n.capacity IS NOT NULL",
    )
    .fetch_all(c)
    .await?;
    rows.iter()
        .map(|r| Ok((r.try_get(0)?, r.try_get(1)?, stored_plan(r.try_get(2)?)?)))
        .collect()
}

/// A subchain's hosting nodes, sorted.
pub async fn nodes_of(c: &mut AnyConnection, id: &str) -> Result<Vec<String>, DbError> {
    sqlx::query_scalar("SELECT node_id FROM subchain_nodes WHERE subchain_id = $1 ORDER BY node_id")
        .bind(id)
        .fetch_all(c)
        .await
}

/// A subchain's orderers, sorted.
pub async fn orderers_of(c: &mut AnyConnection, id: &str) -> Result<Vec<String>, DbError> {
    sqlx::query_scalar("SELECT orderer_id FROM subchain_orderers WHERE subchain_id = $1 ORDER BY orderer_id")
        .bind(id)
        .fetch_all(c)
        .await
}

/// Replaces a subchain's orderers.
pub async fn set_orderers(c: &mut AnyConnection, subchain: &str, orderers: &[String]) -> Result<(), DbError> {
    sqlx::query("DELETE FROM subchain_orderers WHERE subchain_id = $1")
        .bind(subchain)
        .execute(&mut *c)
        .await?;
    for o in orderers {
        sqlx::query("INSERT INTO subchain_orderers (orderer_id, subchain_id) VALUES ($1, $2)")
            .bind(o)
            .bind(subchain)
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

/// Every active orderer identity with a valid certificate at `now`, with the number of subchains
/// it orders, least loaded first (ties by id).
pub async fn orderer_load(c: &mut AnyConnection, now: i64) -> Result<Vec<(String, i64)>, DbError> {
    let rows = sqlx::query(
        "SELECT i.id, COUNT(o.subchain_id) FROM identities i \
         LEFT JOIN subchain_orderers o ON o.orderer_id = i.id \
         WHERE i.kind = 'orderer' AND i.status = 'active' \
         AND EXISTS (SELECT 1 FROM certificates c WHERE c.identity_id = i.id \
                     AND c.revoked_at IS NULL AND c.not_after > $1) \
         GROUP BY i.id ORDER BY COUNT(o.subchain_id), i.id",
    )
    .bind(now)
    .fetch_all(c)
    .await?;
    rows.iter().map(|r| Ok((r.try_get(0)?, r.try_get(1)?))).collect()
}

/// How many certificates of `identity` are neither revoked nor expired at `now`.
pub async fn valid_certificates(c: &mut AnyConnection, identity: &str, now: i64) -> Result<i64, DbError> {
    sqlx::query_scalar(
        "SELECT COUNT(*) FROM certificates WHERE identity_id = $1 AND revoked_at IS NULL AND not_after > $2",
    )
    .bind(identity)
    .bind(now)
    .fetch_one(c)
    .await
}

/// The subchains `orderer` orders, by id.
pub async fn ordered_by(c: &mut AnyConnection, orderer: &str) -> Result<Vec<String>, DbError> {
    sqlx::query_scalar("SELECT subchain_id FROM subchain_orderers WHERE orderer_id = $1 ORDER BY subchain_id")
        .bind(orderer)
        .fetch_all(c)
        .await
}

/// The subchains `node` hosts, by id.
pub async fn hosted_by(c: &mut AnyConnection, node: &str) -> Result<Vec<String>, DbError> {
    sqlx::query_scalar("SELECT subchain_id FROM subchain_nodes WHERE node_id = $1 ORDER BY subchain_id")
        .bind(node)
        .fetch_all(c)
        .await
}

/// A subchain with its nodes.
pub async fn subchain(c: &mut AnyConnection, id: &str) -> Result<Option<Subchain>, DbError> {
    let row = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SUBCHAIN_COLUMNS} FROM subchains WHERE id = $1"
    )))
    .bind(id)
    .fetch_optional(&mut *c)
    .await?;
    let Some(row) = row else { return Ok(None) };
    let mut s = subchain_from(&row)?;
    s.nodes = nodes_of(c, id).await?;
    s.orderers = orderers_of(c, id).await?;
    Ok(Some(s))
}

/// Subchains by id after `after` (of one publisher, if given), with their nodes.
pub async fn subchains(
    c: &mut AnyConnection,
    after: &str,
    limit: i64,
    publisher: Option<&str>,
) -> Result<Vec<Subchain>, DbError> {
    let rows = sqlx::query(sqlx::AssertSqlSafe(format!(
        "SELECT {SUBCHAIN_COLUMNS} FROM subchains WHERE id > $1 \
         AND (CAST($2 AS TEXT) IS NULL OR publisher = $2) ORDER BY id LIMIT $3"
    )))
    .bind(after)
    .bind(publisher)
    .bind(limit)
    .fetch_all(&mut *c)
    .await?;
    let mut out = rows.iter().map(subchain_from).collect::<Result<Vec<_>, _>>()?;
    for s in &mut out {
        s.nodes = nodes_of(c, &s.id).await?;
        s.orderers = orderers_of(c, &s.id).await?;
    }
    Ok(out)
}

/// An identity's role on a subchain, if it is a member.
pub async fn role_of(c: &mut AnyConnection, subchain: &str, identity: &str) -> Result<Option<Role>, DbError> {
    let r: Option<String> =
        sqlx::query_scalar("SELECT role FROM subchain_members WHERE subchain_id = $1 AND identity_id = $2")
            .bind(subchain)
            .bind(identity)
            .fetch_optional(c)
            .await?;
    r.as_deref().map(role).transpose()
}

/// Members by id after `after`, at most `limit` (`i64::MAX` for all).
pub async fn members(c: &mut AnyConnection, subchain: &str, after: &str, limit: i64) -> Result<Vec<Member>, DbError> {
    let rows: Vec<(String, String)> = sqlx::query_as(
        "SELECT identity_id, role FROM subchain_members WHERE subchain_id = $1 AND identity_id > $2 \
         ORDER BY identity_id LIMIT $3",
    )
    .bind(subchain)
    .bind(after)
    .bind(limit)
    .fetch_all(c)
    .await?;
    rows.into_iter()
        .map(|(id, r)| Ok(Member { id, role: role(&r)? }))
        .collect()
}

/// The subchains an identity belongs to, with its role in each.
pub async fn memberships(c: &mut AnyConnection, identity: &str) -> Result<Vec<(String, Role)>, DbError> {
    let rows: Vec<(String, String)> =
        sqlx::query_as("SELECT subchain_id, role FROM subchain_members WHERE identity_id = $1 ORDER BY subchain_id")
            .bind(identity)
            .fetch_all(c)
            .await?;
    rows.into_iter().map(|(s, r)| Ok((s, role(&r)?))).collect()
}

/// Pending join requests of a subchain, oldest first.
pub async fn requests(c: &mut AnyConnection, subchain: &str) -> Result<Vec<JoinRequest>, DbError> {
    let rows: Vec<(String, String, String, String, i64)> = sqlx::query_as(
        "SELECT subchain_id, identity_id, role, note, requested_at FROM join_requests \
         WHERE subchain_id = $1 ORDER BY requested_at, identity_id",
    )
    .bind(subchain)
    .fetch_all(c)
    .await?;
    rows.into_iter()
        .map(|(subchain, identity, r, note, requested_at)| {
            Ok(JoinRequest {
                subchain,
                identity,
                role: role(&r)?,
                note,
                requested_at,
            })
        })
        .collect()
}

/// The signed statement of a revision (the latest if `None`).
pub async fn statement(
    c: &mut AnyConnection,
    subchain: &str,
    revision: Option<i64>,
) -> Result<Option<Envelope>, DbError> {
    let row: Option<(Vec<u8>, Vec<u8>)> = sqlx::query_as(
        "SELECT payload, signature FROM subchain_statements WHERE subchain_id = $1 \
         AND revision = COALESCE($2, (SELECT revision FROM subchains WHERE id = $1))",
    )
    .bind(subchain)
    .bind(revision)
    .fetch_optional(c)
    .await?;
    Ok(row.map(|(p, s)| Envelope {
        payload: B64.encode(p),
        signature: B64.encode(s),
    }))
}

/// A new subchain at revision 1 with one member (its publisher); `false` if the id is taken.
pub async fn insert_subchain(
    c: &mut AnyConnection,
    id: &str,
    name: &str,
    publisher: &str,
    description: &str,
    policy: Policy,
    now: i64,
) -> Result<bool, DbError> {
    let r = sqlx::query(
        "INSERT INTO subchains (id, name, publisher, description, policy, revision, members, created_at, updated_at) \
         VALUES ($1, $2, $3, $4, $5, 1, 1, $6, $6) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id)
    .bind(name)
    .bind(publisher)
    .bind(description)
    .bind(policy.name())
    .bind(now)
    .execute(c)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Replaces a subchain's hosting nodes.
pub async fn set_nodes(c: &mut AnyConnection, subchain: &str, nodes: &[String]) -> Result<(), DbError> {
    sqlx::query("DELETE FROM subchain_nodes WHERE subchain_id = $1")
        .bind(subchain)
        .execute(&mut *c)
        .await?;
    for n in nodes {
        sqlx::query("INSERT INTO subchain_nodes (node_id, subchain_id) VALUES ($1, $2)")
            .bind(n)
            .bind(subchain)
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

/// Changes the given settings; `false` if there is no such subchain.
pub async fn update_settings(
    c: &mut AnyConnection,
    subchain: &str,
    name: Option<String>,
    description: Option<String>,
    policy: Option<Policy>,
    now: i64,
) -> Result<bool, DbError> {
    let r = sqlx::query(
        "UPDATE subchains SET name = COALESCE($2, name), description = COALESCE($3, description), \
         policy = COALESCE($4, policy), updated_at = $5 WHERE id = $1",
    )
    .bind(subchain)
    .bind(name)
    .bind(description)
    .bind(policy.map(Policy::name))
    .bind(now)
    .execute(c)
    .await?;
    Ok(r.rows_affected() == 1)
}

/// Bumps a subchain's revision, locking its row until the transaction ends; `None` if there is
/// no such subchain.
pub async fn bump_revision(c: &mut AnyConnection, subchain: &str, now: i64) -> Result<Option<i64>, DbError> {
    sqlx::query_scalar("UPDATE subchains SET revision = revision + 1, updated_at = $2 WHERE id = $1 RETURNING revision")
        .bind(subchain)
        .bind(now)
        .fetch_optional(c)
        .await
}

/// A subchain's publisher.
pub async fn publisher_of(c: &mut AnyConnection, subchain: &str) -> Result<String, DbError> {
    sqlx::query_scalar("SELECT publisher FROM subchains WHERE id = $1")
        .bind(subchain)
        .fetch_one(c)
        .await
}

/// Adds a member (the caller checked it is not one).
pub async fn insert_member(
    c: &mut AnyConnection,
    subchain: &str,
    identity: &str,
    r: Role,
    now: i64,
    by: &str,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO subchain_members (subchain_id, identity_id, role, since, added_by) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(subchain)
    .bind(identity)
    .bind(r.name())
    .bind(now)
    .bind(by)
    .execute(c)
    .await?;
    Ok(())
}

/// Changes a member's role.
pub async fn set_member_role(c: &mut AnyConnection, subchain: &str, identity: &str, r: Role) -> Result<(), DbError> {
    sqlx::query("UPDATE subchain_members SET role = $3 WHERE subchain_id = $1 AND identity_id = $2")
        .bind(subchain)
        .bind(identity)
        .bind(r.name())
        .execute(c)
        .await?;
    Ok(())
}

/// Removes a member; `false` if it was none.
pub async fn delete_member(c: &mut AnyConnection, subchain: &str, identity: &str) -> Result<bool, DbError> {
    let r = sqlx::query("DELETE FROM subchain_members WHERE subchain_id = $1 AND identity_id = $2")
        .bind(subchain)
        .bind(identity)
        .execute(c)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Adds `delta` to a subchain's member count.
pub async fn add_to_member_count(c: &mut AnyConnection, subchain: &str, delta: i64) -> Result<(), DbError> {
    sqlx::query("UPDATE subchains SET members = members + $2 WHERE id = $1")
        .bind(subchain)
        .bind(delta)
        .execute(c)
        .await?;
    Ok(())
}

/// How many of `ids` are active participant identities.
pub async fn count_active_participants(c: &mut AnyConnection, backend: Backend, ids: &[&str]) -> Result<i64, DbError> {
    let sql = format!(
        "SELECT COUNT(*) FROM identities WHERE kind = 'participant' AND status = 'active' AND id IN ({})",
        placeholders(backend, 1, ids.len())
    );
    let mut q = sqlx::query_scalar::<_, i64>(sqlx::AssertSqlSafe(sql));
    for id in ids {
        q = q.bind(*id);
    }
    q.fetch_one(c).await
}

/// Adds the members that are not members yet; returns how many were added.
pub async fn insert_new_members(
    c: &mut AnyConnection,
    backend: Backend,
    subchain: &str,
    members: &[Member],
    now: i64,
    by: &str,
) -> Result<u64, DbError> {
    let values: Vec<String> = (0..members.len())
        .map(|i| format!("({})", placeholders(backend, i * 5 + 1, 5)))
        .collect();
    let sql = format!(
        "INSERT INTO subchain_members (subchain_id, identity_id, role, since, added_by) VALUES {} \
         ON CONFLICT (subchain_id, identity_id) DO NOTHING",
        values.join(", ")
    );
    let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
    for m in members {
        q = q
            .bind(subchain)
            .bind(m.id.as_str())
            .bind(m.role.name())
            .bind(now)
            .bind(by);
    }
    Ok(q.execute(c).await?.rows_affected())
}

/// Stores a join request; `false` if one is pending already.
pub async fn insert_join_request(c: &mut AnyConnection, r: &JoinRequest) -> Result<bool, DbError> {
    let done = sqlx::query(
        "INSERT INTO join_requests (subchain_id, identity_id, role, note, requested_at) VALUES ($1, $2, $3, $4, $5) \
         ON CONFLICT (subchain_id, identity_id) DO NOTHING",
    )
    .bind(&r.subchain)
    .bind(&r.identity)
    .bind(r.role.name())
    .bind(&r.note)
    .bind(r.requested_at)
    .execute(c)
    .await?;
    Ok(done.rows_affected() == 1)
}

/// Deletes a join request; `false` if there was none.
pub async fn delete_join_request(c: &mut AnyConnection, subchain: &str, identity: &str) -> Result<bool, DbError> {
    let r = sqlx::query("DELETE FROM join_requests WHERE subchain_id = $1 AND identity_id = $2")
        .bind(subchain)
        .bind(identity)
        .execute(c)
        .await?;
    Ok(r.rows_affected() == 1)
}

/// Stores a revision's signed statement with its place in the issuance log.
pub async fn insert_statement(
    c: &mut AnyConnection,
    subchain: &str,
    revision: i64,
    payload: &[u8],
    signature: &[u8],
    log_index: i64,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO subchain_statements (subchain_id, revision, payload, signature, log_index) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(subchain)
    .bind(revision)
    .bind(payload)
    .bind(signature)
    .bind(log_index)
    .execute(c)
    .await?;
    Ok(())
}

/// The next feed position. Callers hold the issuance log's row lock (they appended a leaf in
/// this transaction), so positions are handed out in commit order.
pub async fn next_seq(c: &mut AnyConnection) -> Result<i64, DbError> {
    sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) + 1 FROM feed")
        .fetch_one(c)
        .await
}

/// A membership event for `audience` (node ids; `*` is every node).
pub async fn insert_membership_event(
    c: &mut AnyConnection,
    seq: i64,
    subchain: &str,
    revision: i64,
    at: i64,
    audience: &[&String],
) -> Result<(), DbError> {
    sqlx::query("INSERT INTO feed (seq, kind, subchain_id, revision, at) VALUES ($1, 'membership', $2, $3, $4)")
        .bind(seq)
        .bind(subchain)
        .bind(revision)
        .bind(at)
        .execute(&mut *c)
        .await?;
    for n in audience {
        sqlx::query("INSERT INTO feed_audience (node_id, seq) VALUES ($1, $2)")
            .bind(n.as_str())
            .bind(seq)
            .execute(&mut *c)
            .await?;
    }
    Ok(())
}

/// A revocation event, for every node.
pub async fn insert_revocation_event(
    c: &mut AnyConnection,
    seq: i64,
    serial: &str,
    identity: &str,
    reason: &str,
    at: i64,
) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO feed (seq, kind, serial, identity_id, reason, at) VALUES ($1, 'revocation', $2, $3, $4, $5)",
    )
    .bind(seq)
    .bind(serial)
    .bind(identity)
    .bind(reason)
    .bind(at)
    .execute(&mut *c)
    .await?;
    for_every_node(c, seq).await
}

/// Makes feed event `seq` visible to every node.
pub async fn for_every_node(c: &mut AnyConnection, seq: i64) -> Result<(), DbError> {
    sqlx::query("INSERT INTO feed_audience (node_id, seq) VALUES ('*', $1)")
        .bind(seq)
        .execute(c)
        .await?;
    Ok(())
}

/// Records that `node` has durably processed the feed up to `seq` (positions only grow).
pub async fn record_ack(c: &mut AnyConnection, node: &str, seq: i64, at: i64) -> Result<(), DbError> {
    sqlx::query(
        "INSERT INTO feed_acks (node_id, seq, at) VALUES ($1, $2, $3) ON CONFLICT (node_id) DO UPDATE \
         SET seq = CASE WHEN excluded.seq > feed_acks.seq THEN excluded.seq ELSE feed_acks.seq END, at = excluded.at",
    )
    .bind(node)
    .bind(seq)
    .bind(at)
    .execute(c)
    .await?;
    Ok(())
}

/// The feed's newest position (0 when empty).
pub async fn feed_head(c: &mut AnyConnection) -> Result<i64, DbError> {
    sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM feed")
        .fetch_one(c)
        .await
}

/// Events after `cursor` that `node` may see, oldest first: an index range scan of the node's
/// and everyone's audience rows, never a scan of the registry.
pub async fn feed_page(c: &mut AnyConnection, node: &str, cursor: i64, limit: i64) -> Result<Vec<FeedEvent>, DbError> {
    let rows = sqlx::query(
        "SELECT f.seq, f.kind, f.subchain_id, f.revision, f.serial, f.identity_id, f.reason, f.at, s.payload, s.signature, \
         d.payload, d.signature, ic.der, ro.der, ro.cross_der, sk.handover_checkpoint \
         FROM feed_audience a JOIN feed f ON f.seq = a.seq \
         LEFT JOIN subchain_statements s ON s.subchain_id = f.subchain_id AND s.revision = f.revision \
         LEFT JOIN directory_revisions d ON f.kind = 'directory' AND d.revision = f.revision \
         LEFT JOIN issuing_cas ic ON f.kind = 'intermediate' AND ic.number = f.revision \
         LEFT JOIN roots ro ON f.kind = 'root' AND ro.number = f.revision \
         LEFT JOIN signing_keys sk ON f.kind = 'key' AND sk.purpose = 'membership' AND sk.number = f.revision \
         WHERE a.node_id IN ('*', $1) AND a.seq > $2 ORDER BY a.seq LIMIT $3",
    )
    .bind(node)
    .bind(cursor)
    .bind(limit)
    .fetch_all(c)
    .await?;
    rows.iter()
        .map(|r| {
            let kind: String = r.try_get(1)?;
            let seq: i64 = r.try_get(0)?;
            let at: i64 = r.try_get(7)?;
            Ok(if kind == "intermediate" {
                let der: Vec<u8> = r.try_get(12)?;
                FeedEvent::Intermediate {
                    seq,
                    number: r.try_get(3)?,
                    step: r.try_get(6)?,
                    at,
                    certificate: B64.encode(der),
                }
            } else if kind == "root" {
                let der: Vec<u8> = r.try_get(13)?;
                let cross: Option<Vec<u8>> = r.try_get(14)?;
                FeedEvent::Root {
                    seq,
                    number: r.try_get(3)?,
                    step: r.try_get(6)?,
                    at,
                    certificate: B64.encode(der),
                    cross: B64.encode(cross.unwrap_or_default()),
                }
            } else if kind == "key" {
                let doc: Option<String> = r.try_get(15)?;
                let handover = serde_json::from_str(doc.as_deref().unwrap_or_default())
                    .map_err(|e| sqlx::Error::Decode(format!("membership key handover: {e}").into()))?;
                FeedEvent::Key {
                    seq,
                    number: r.try_get(3)?,
                    at,
                    handover,
                }
            } else if kind == "directory" {
                let payload: Vec<u8> = r.try_get(10)?;
                let signature: Vec<u8> = r.try_get(11)?;
                FeedEvent::Directory {
                    seq,
                    revision: r.try_get(3)?,
                    at,
                    directory: Envelope {
                        payload: B64.encode(payload),
                        signature: B64.encode(signature),
                    },
                }
            } else if kind == "membership" {
                let payload: Vec<u8> = r.try_get(8)?;
                let signature: Vec<u8> = r.try_get(9)?;
                FeedEvent::Membership {
                    seq,
                    subchain: r.try_get(2)?,
                    revision: r.try_get(3)?,
                    at,
                    statement: Envelope {
                        payload: B64.encode(payload),
                        signature: B64.encode(signature),
                    },
                }
            } else {
                FeedEvent::Revocation {
                    seq,
                    serial: r.try_get(4)?,
                    identity: r.try_get(5)?,
                    reason: r.try_get(6)?,
                    at,
                }
            })
        })
        .collect()
}
