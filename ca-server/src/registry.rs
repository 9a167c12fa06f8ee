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
use ring::signature::Ed25519KeyPair;
use sqlx::{Any, Transaction};

use crate::db::Db;
use crate::db::registry as store;
use crate::log::{LogSigner, NewLeaf, Receipt};
use crate::placement::{self, Board, Placed};
use identity::plan::{Plan, Tenancy};

/// The CA's membership signing key (Ed25519), as `signing_keys` says which one is active: number
/// 1 is the key of initialisation (sealed in the database's `meta`, so every replica signs with
/// it, or in the token), later ones are made by a handover (`crate::handover`), sealed in their
/// rows or in the token. A handover bumps `log_state.key_epoch`; a statement or directory
/// revision is signed inside a transaction that read the epoch under the log's lock
/// ([`MembershipSigner::refresh_locked`]), so no replica signs one with a key a handover retired.
/// Heartbeats, signed outside a transaction, follow within a minute (`serve`'s refresh loop);
/// verifiers accept every key of the chain for them.
pub struct MembershipSigner {
    trust_domain: String,
    /// Number 1's key, unless it was retired and erased.
    first: Option<Arc<crate::hsm::EdKey>>,
    passphrase: String,
    token: Option<Arc<crate::hsm::Token>>,
    /// Keys of later numbers, each opened once (argon2id makes opening slow on purpose).
    opened: crate::hsm::OpenedEdKeys,
    now: std::sync::RwLock<Arc<ActiveKey>>,
}

/// The key signing now, as of `epoch` (-1: not loaded).
struct ActiveKey {
    epoch: i64,
    number: i64,
    key: Option<Arc<crate::hsm::EdKey>>,
    public: MembershipKey,
}

use std::sync::Arc;

impl MembershipSigner {
    /// Opens the signer: number 1's key from the token (`first_in_token`) or the database (made
    /// on first use: the first replica to insert it wins, the others read the winner's). It signs
    /// nothing before [`MembershipSigner::reload`] has read which key is active.
    pub async fn load(
        db: &Db,
        passphrase: &str,
        trust_domain: &str,
        first_in_token: Option<crate::hsm::EdKey>,
        token: Option<Arc<crate::hsm::Token>>,
    ) -> anyhow::Result<Self> {
        let first = match first_in_token {
            Some(k) => Some(k),
            None => {
                let handed_over = crate::db::keys::all(&mut *db.acquire().await?, "membership")
                    .await?
                    .iter()
                    .any(|r| r.number > 1);
                if db.meta("membership_key_sealed").await?.is_none() && !handed_over {
                    let pkcs8 = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
                        .map_err(|_| anyhow::anyhow!("cannot generate the membership key"))?;
                    let sealed = crate::keystore::seal(passphrase, "membership", pkcs8.as_ref())?;
                    store::insert_membership_key(&mut *db.acquire_writer().await?, &sealed).await?;
                }
                match db.meta("membership_key_sealed").await? {
                    Some(sealed) => {
                        let pkcs8 = crate::keystore::open(passphrase, "membership", &sealed)?;
                        let key =
                            Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| anyhow::anyhow!("membership key: {e}"))?;
                        Some(crate::hsm::EdKey::Software(key))
                    }
                    // Retired by a handover and erased.
                    None => None,
                }
            }
        };
        let first = first.map(Arc::new);
        let placeholder = MembershipKey::from_bytes(&[0; 32])?;
        let signer = Self {
            trust_domain: trust_domain.to_string(),
            first,
            passphrase: passphrase.to_string(),
            token,
            opened: Default::default(),
            now: std::sync::RwLock::new(Arc::new(ActiveKey {
                epoch: -1,
                number: 0,
                key: None,
                public: placeholder,
            })),
        };
        Ok(signer)
    }

    /// Number 1's public key, if this replica holds it (the caller records it as number 1, then
    /// [`MembershipSigner::reload`]s: nothing is signed before).
    pub fn first_public(&self) -> Option<[u8; 32]> {
        self.first.as_ref().map(|k| k.public())
    }

    fn active(&self) -> Arc<ActiveKey> {
        self.now.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Loads the active key if the key epoch `epoch` is not the one loaded.
    pub async fn refresh(&self, conn: &mut sqlx::AnyConnection, epoch: i64) -> anyhow::Result<()> {
        if self.active().epoch == epoch {
            return Ok(());
        }
        let rows = crate::db::keys::all(conn, "membership").await?;
        let row = rows
            .iter()
            .find(|r| r.state == "active")
            .ok_or_else(|| anyhow::anyhow!("no active membership key is recorded"))?;
        let key = self.key_of(row)?;
        let public = MembershipKey::from_bytes(&key.public())?;
        if public.to_base64() != row.public_key {
            anyhow::bail!("membership key {} is not the key recorded for it", row.number);
        }
        let changed = self.active().number != row.number;
        self.opened
            .retain(|n| rows.iter().any(|r| r.number == n && r.state != "retired"));
        *self.now.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ActiveKey {
            epoch,
            number: row.number,
            key: Some(key),
            public,
        });
        if changed {
            tracing::info!(
                epoch,
                key = row.number,
                "membership documents are signed by key {}",
                row.number
            );
        }
        Ok(())
    }

    /// Reads the key epoch and loads the active key if it changed (start-up, after a handover
    /// step, and every minute for heartbeats).
    pub async fn reload(&self, conn: &mut sqlx::AnyConnection) -> anyhow::Result<()> {
        let epoch = crate::db::keys::epoch(&mut *conn).await?;
        self.refresh(conn, epoch).await
    }

    /// Takes the issuance log's lock in `tx` and loads the active key as of the epoch read under
    /// it: what a transaction that signs a statement or a directory revision calls first.
    pub async fn refresh_locked(&self, tx: &mut Transaction<'static, Any>) -> anyhow::Result<()> {
        crate::log::lock_sequencer(tx).await?;
        let epoch = crate::db::keys::epoch(tx).await?;
        self.refresh(tx, epoch).await
    }

    /// Makes the next refresh load the stored keys whatever the epoch.
    pub fn forget(&self) {
        let now = self.active();
        *self.now.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(ActiveKey {
            epoch: -1,
            number: now.number,
            key: now.key.clone(),
            public: now.public.clone(),
        });
    }

    /// Membership key `row`'s signing key: number 1's, or one a handover made (sealed in its row
    /// or in the token).
    pub fn key_of(&self, row: &crate::db::keys::KeyRow) -> anyhow::Result<Arc<crate::hsm::EdKey>> {
        if row.number == 1 {
            return self
                .first
                .clone()
                .ok_or_else(|| anyhow::anyhow!("membership key 1 was retired and erased"));
        }
        self.opened
            .open(
                "membership",
                row,
                &key_label(row.number),
                self.token.as_deref(),
                Some(&self.passphrase),
            )
            .map_err(anyhow::Error::msg)
    }

    /// The active verification key.
    pub fn public(&self) -> MembershipKey {
        self.active().public.clone()
    }

    /// The trust domain.
    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    /// Signs a payload under a context with the active key (a token may refuse).
    pub fn seal(&self, context: &[u8], payload: &[u8]) -> Result<Envelope, crate::hsm::HsmError> {
        let active = self.active();
        let key = active
            .key
            .as_ref()
            .ok_or_else(|| crate::hsm::HsmError::Token("no membership key has been loaded".into()))?;
        Ok(Envelope {
            payload: B64.encode(payload),
            signature: B64.encode(key.sign(&identity::membership::signed_message(context, payload))?),
        })
    }

    /// The signed node directory of `revision` listing `nodes` (sorted by id).
    pub fn directory(
        &self,
        revision: u64,
        issued_at: i64,
        nodes: Vec<identity::membership::DirectoryEntry>,
    ) -> Result<(identity::membership::NodeDirectory, Envelope), crate::hsm::HsmError> {
        let d = identity::membership::NodeDirectory {
            version: 1,
            trust_domain: self.trust_domain.clone(),
            revision,
            issued_at,
            nodes,
        };
        let payload = serde_json::to_vec(&d).unwrap_or_default();
        let env = self.seal(identity::membership::DIRECTORY_CONTEXT, &payload)?;
        Ok((d, env))
    }

    /// A signed heartbeat for `node` at feed position `cursor`.
    pub fn heartbeat(&self, node: &str, cursor: u64, at_ms: i64) -> Result<Envelope, crate::hsm::HsmError> {
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

/// The label a later membership key is sealed under.
pub fn key_label(number: i64) -> String {
    format!("membership {number}")
}

pub use crate::db::registry::{FeedEvent, JoinRequest, Policy, Subchain};

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
    /// Hosting node ids named by hand (empty: the CA places it in `cities`).
    pub nodes: Vec<String>,
    /// The cities to place it in when no node is named.
    pub cities: Vec<String>,
    /// The plan's name (`None`: the cheapest open plan when placed in cities; no plan when the
    /// nodes are named and none of them is offered for placement).
    pub plan: Option<String>,
    /// The caller may assign plans that are not open to publishers (an administrator).
    pub assigns_any_plan: bool,
    /// Orderer ids (`None`: the CA picks up to three of the cluster, the least loaded first;
    /// empty: the hosting nodes order it themselves).
    pub orderers: Option<Vec<String>>,
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
    /// New orderers (a membership revision; empty: the hosting nodes order it).
    pub orderers: Option<Vec<String>>,
    /// A new plan, by name (a membership revision; the subchain moves off nodes that cannot
    /// take it, within their cities).
    pub plan: Option<String>,
    /// The caller may assign plans that are not open to publishers (an administrator).
    pub assigns_any_plan: bool,
}

/// A membership change's result.
#[derive(Debug, Clone)]
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

/// What a join did.
#[derive(Debug, Clone)]
pub enum Joined {
    /// Open policy: a member now.
    Member(Revised),
    /// Waiting for approval.
    Pending(JoinRequest),
}

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
    /// No plan of this name is on offer.
    #[error("no plan '{0}' is on offer (`bsn plans` lists them)")]
    UnknownPlan(String),
    /// Only administrators assign this plan.
    #[error("the plan '{0}' is assigned by administrators only; ask one, or choose another (`bsn plans`)")]
    PlanNotOpen(String),
    /// Nothing fits where the subchain was to go.
    #[error(transparent)]
    NoPlacement(#[from] crate::placement::PlacementError),
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
        match Db::kind_and_status(&mut *conn, n).await? {
            Some((IdentityKind::Node | IdentityKind::Orderer, IdentityStatus::Active)) => {}
            Some((IdentityKind::Participant, _)) => {
                return Err(RegistryError::InvalidField(format!("'{n}' is not a node identity")));
            }
            Some(_) => return Err(RegistryError::InvalidField(format!("node '{n}' is disabled"))),
            None => return Err(RegistryError::InvalidField(format!("no node identity '{n}'"))),
        }
    }
    Ok(sorted)
}

/// How many orderers the CA picks for a new subchain when the publisher names none.
pub const ORDERERS_PER_SUBCHAIN: usize = 3;

/// Checks orderers: at most 7 distinct, each an active orderer identity. Returns them sorted.
async fn check_orderers(conn: &mut sqlx::AnyConnection, orderers: &[String]) -> Result<Vec<String>, RegistryError> {
    let mut sorted = orderers.to_vec();
    sorted.sort();
    sorted.dedup();
    if sorted.len() != orderers.len() || sorted.len() > 7 {
        return Err(RegistryError::InvalidField(
            "a subchain has at most 7 distinct orderers (3 or 5 is usual)".into(),
        ));
    }
    for o in &sorted {
        match Db::kind_and_status(&mut *conn, o).await? {
            Some((IdentityKind::Orderer, IdentityStatus::Active)) => {}
            Some((IdentityKind::Orderer, _)) => {
                return Err(RegistryError::InvalidField(format!("orderer '{o}' is disabled")));
            }
            Some(_) => return Err(RegistryError::InvalidField(format!("'{o}' is not an orderer identity"))),
            None => return Err(RegistryError::InvalidField(format!("no orderer identity '{o}'"))),
        }
    }
    Ok(sorted)
}

/// The orderers the CA gives a new subchain: the [`ORDERERS_PER_SUBCHAIN`] active orderers with
/// a valid certificate ordering the fewest subchains (ties by id), sorted; none when the network
/// has no orderer.
async fn pick_orderers(conn: &mut sqlx::AnyConnection, now: i64) -> Result<Vec<String>, RegistryError> {
    let mut picked: Vec<String> = store::orderer_load(conn, now)
        .await?
        .into_iter()
        .take(ORDERERS_PER_SUBCHAIN)
        .map(|(id, _)| id)
        .collect();
    picked.sort();
    Ok(picked)
}

/// Fails unless `id` is an active participant.
async fn check_participant(conn: &mut sqlx::AnyConnection, id: &str) -> Result<(), RegistryError> {
    match Db::kind_and_status(conn, id).await? {
        Some((IdentityKind::Participant, IdentityStatus::Active)) => Ok(()),
        Some((IdentityKind::Node | IdentityKind::Orderer, _)) => Err(RegistryError::InvalidField(format!(
            "'{id}' is a node, not a participant"
        ))),
        Some(_) => Err(RegistryError::InvalidField(format!("identity '{id}' is disabled"))),
        None => Err(RegistryError::NotFound(format!("no identity '{id}'"))),
    }
}

/// The placement board: the active city nodes that declared a capacity, with every subchain
/// placed on them (a subchain without a plan takes no declared capacity).
async fn board(conn: &mut sqlx::AnyConnection) -> Result<Board, RegistryError> {
    let nodes: Vec<placement::Node> = crate::db::nodes::active_city_nodes(&mut *conn)
        .await?
        .into_iter()
        .filter_map(|e| {
            e.capacity.map(|capacity| placement::Node {
                id: e.id,
                city: e.city,
                capacity,
                draining: e.draining,
            })
        })
        .collect();
    if nodes.is_empty() {
        return Ok(Board::new(nodes, &[])?);
    }
    let on_board: std::collections::HashSet<&str> = nodes.iter().map(|n| n.id.as_str()).collect();
    let placed: Vec<Placed> = store::placements(conn)
        .await?
        .into_iter()
        .filter(|(_, node, _)| on_board.contains(node.as_str()))
        .map(|(subchain, node, plan)| Placed {
            subchain,
            node,
            tenancy: plan.as_ref().map_or(Tenancy::Shared, |p| p.tenancy),
            rate: plan.as_ref().map_or(0, |p| p.rate),
            storage: plan.as_ref().map_or(0, |p| p.storage),
        })
        .collect();
    Ok(Board::new(nodes, &placed)?)
}

/// Checks hosting nodes named by hand against the board: every node offered for placement
/// must take `plan`, and a subchain on one needs a plan.
fn pin(board: &mut Board, subchain: &str, plan: Option<&Plan>, nodes: &[String]) -> Result<(), RegistryError> {
    match plan {
        Some(plan) => Ok(board.pin(subchain, plan, nodes)?),
        None => match nodes.iter().find(|n| board.spare(n).is_some()) {
            Some(n) => Err(RegistryError::InvalidField(format!(
                "'{n}' hosts subchains by plan: choose one (`bsn plans` lists them)"
            ))),
            None => Ok(()),
        },
    }
}

/// The plan named `name`, if on offer and the caller may choose it.
async fn offered_plan(conn: &mut sqlx::AnyConnection, name: &str, assigns_any: bool) -> Result<Plan, RegistryError> {
    let offer = crate::db::plans::get(conn, name)
        .await?
        .ok_or_else(|| RegistryError::UnknownPlan(name.to_string()))?;
    if !offer.open && !assigns_any {
        return Err(RegistryError::PlanNotOpen(name.to_string()));
    }
    Ok(offer.plan)
}

/// The open plan with the lowest rate (then name): what a subchain placed without naming a
/// plan gets.
async fn cheapest_open_plan(conn: &mut sqlx::AnyConnection) -> Result<Plan, RegistryError> {
    crate::db::plans::list(conn)
        .await?
        .into_iter()
        .filter(|o| o.open)
        .map(|o| o.plan)
        .min_by(|a, b| (a.rate, &a.name).cmp(&(b.rate, &b.name)))
        .ok_or_else(|| {
            RegistryError::InvalidField("no plan is open to publishers: name one an administrator assigns".into())
        })
}

impl Registry<'_> {
    /// A subchain, with its nodes.
    pub async fn get(&self, id: &str) -> Result<Option<Subchain>, RegistryError> {
        Ok(store::subchain(&mut *self.db.acquire().await?, id).await?)
    }

    /// Fails with not-found unless the subchain exists.
    pub async fn require(&self, id: &str) -> Result<Subchain, RegistryError> {
        self.get(id)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("no subchain '{id}'")))
    }

    /// The directory: subchains by id after `after`, with their nodes.
    pub async fn list(&self, after: &str, limit: i64, publisher: Option<&str>) -> Result<Vec<Subchain>, RegistryError> {
        Ok(store::subchains(&mut *self.db.acquire().await?, after, limit, publisher).await?)
    }

    /// The identity's role on the subchain, if it is a member.
    pub async fn role_of(&self, subchain: &str, identity: &str) -> Result<Option<Role>, RegistryError> {
        Ok(store::role_of(&mut *self.db.acquire().await?, subchain, identity).await?)
    }

    /// Members by id after `after`.
    pub async fn members(&self, subchain: &str, after: &str, limit: i64) -> Result<Vec<Member>, RegistryError> {
        Ok(store::members(&mut *self.db.acquire().await?, subchain, after, limit).await?)
    }

    /// The subchains an identity belongs to, with its role in each.
    pub async fn memberships(&self, identity: &str) -> Result<Vec<(String, Role)>, RegistryError> {
        Ok(store::memberships(&mut *self.db.acquire().await?, identity).await?)
    }

    /// Pending join requests of a subchain.
    pub async fn requests(&self, subchain: &str) -> Result<Vec<JoinRequest>, RegistryError> {
        Ok(store::requests(&mut *self.db.acquire().await?, subchain).await?)
    }

    /// The signed statement of a revision (the latest if `None`).
    pub async fn statement(&self, subchain: &str, revision: Option<i64>) -> Result<Option<Envelope>, RegistryError> {
        Ok(store::statement(&mut *self.db.acquire().await?, subchain, revision).await?)
    }

    /// Creates a subchain at revision 1, with its publisher as its first admin member.
    pub async fn create(&self, new: NewSubchain, publisher: &str, now: i64) -> Result<Revised, RegistryError> {
        let mut tx = self.db.begin().await?;
        // Placement reads every node's load: under the log's lock, which every change of
        // hosting nodes or plans takes, so two creations never both take the last free node.
        crate::log::lock_sequencer(&mut tx).await.map_err(db_err)?;
        let id = new.id.as_str();
        let plan = match &new.plan {
            Some(name) => Some(offered_plan(&mut tx, name, new.assigns_any_plan).await?),
            None if new.nodes.is_empty() => Some(cheapest_open_plan(&mut tx).await?),
            None => None,
        };
        let nodes = match (new.nodes.is_empty(), new.cities.is_empty()) {
            (false, false) => {
                return Err(RegistryError::InvalidField(
                    "name the hosting nodes or the cities to place the subchain in, not both".into(),
                ));
            }
            (true, true) => {
                return Err(RegistryError::InvalidField(
                    "name the cities to place the subchain in (or, by hand, its hosting nodes)".into(),
                ));
            }
            (true, false) => {
                let plan = plan
                    .as_ref()
                    .ok_or_else(|| RegistryError::Internal(anyhow::anyhow!("no plan")))?;
                for c in &new.cities {
                    identity::membership::check_city(c).map_err(RegistryError::InvalidField)?;
                }
                let mut placed = board(&mut tx).await?.place(id, plan, &new.cities)?;
                placed.sort();
                placed
            }
            (false, true) => {
                let nodes = check_nodes(&mut tx, &new.nodes).await?;
                pin(&mut board(&mut tx).await?, id, plan.as_ref(), &nodes)?;
                nodes
            }
        };
        let orderers = match &new.orderers {
            Some(o) => check_orderers(&mut tx, o).await?,
            None => pick_orderers(&mut tx, now).await?,
        };
        let inserted =
            store::insert_subchain(&mut tx, id, &new.name, publisher, &new.description, new.policy, now).await?;
        if !inserted {
            return Err(RegistryError::Conflict(format!("subchain '{}' already exists", new.id)));
        }
        store::set_plan(&mut tx, id, plan.as_ref()).await?;
        store::set_nodes(&mut tx, id, &nodes).await?;
        store::set_orderers(&mut tx, id, &orderers).await?;
        store::insert_member(&mut tx, id, publisher, Role::Admin, now, publisher).await?;
        let revised = self
            .commit_and_announce(tx, new.id.as_str(), 1, &[], publisher, now)
            .await?;
        Ok(revised)
    }

    /// Moves `subchain` off `node` (draining) to the node placement picks in the same city, as
    /// one membership revision. `None` when the subchain is not (or no longer) on `node`.
    pub async fn rehost(
        &self,
        subchain: &str,
        node: &str,
        by: &str,
        now: i64,
    ) -> Result<Option<Revised>, RegistryError> {
        let mut tx = self.db.begin().await?;
        let current = store::nodes_of(&mut tx, subchain).await?;
        if !current.iter().any(|n| n == node) {
            return Ok(None);
        }
        let (revision, before) = self.begin_revision(&mut tx, subchain, now).await?;
        crate::log::lock_sequencer(&mut tx).await.map_err(db_err)?;
        let plan = store::plan_of(&mut tx, subchain).await?;
        let next = board(&mut tx).await?.replan(subchain, plan.as_ref(), &current)?;
        if next == current {
            return Ok(None);
        }
        store::set_nodes(&mut tx, subchain, &next).await?;
        let revised = self
            .commit_and_announce(tx, subchain, revision, &before, by, now)
            .await?;
        Ok(Some(revised))
    }

    /// The subchains `node` hosts, by id.
    pub async fn hosted_by(&self, node: &str) -> Result<Vec<String>, RegistryError> {
        Ok(store::hosted_by(&mut *self.db.acquire().await?, node).await?)
    }

    /// Locks the subchain's row and starts a new revision. Returns (revision, the nodes that
    /// take part in it before the change: hosting nodes and orderers, sorted).
    async fn begin_revision(
        &self,
        tx: &mut Transaction<'static, Any>,
        subchain: &str,
        now: i64,
    ) -> Result<(i64, Vec<String>), RegistryError> {
        let revision = store::bump_revision(tx, subchain, now)
            .await?
            .ok_or_else(|| RegistryError::NotFound(format!("no subchain '{subchain}'")))?;
        let mut before = store::nodes_of(tx, subchain).await?;
        before.extend(store::orderers_of(tx, subchain).await?);
        before.sort();
        before.dedup();
        Ok((revision, before))
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
        let found = store::update_settings(&mut tx, subchain, patch.name, patch.description, patch.policy, now).await?;
        if !found {
            return Err(RegistryError::NotFound(format!("no subchain '{subchain}'")));
        }
        if patch.nodes.is_none() && patch.orderers.is_none() && patch.plan.is_none() {
            tx.commit().await.map_err(db_err)?;
            return Ok(None);
        }
        let nodes = match &patch.nodes {
            Some(n) => Some(check_nodes(&mut tx, n).await?),
            None => None,
        };
        let orderers = match &patch.orderers {
            Some(o) => Some(check_orderers(&mut tx, o).await?),
            None => None,
        };
        let plan = match &patch.plan {
            Some(name) => Some(offered_plan(&mut tx, name, patch.assigns_any_plan).await?),
            None => None,
        };
        let (nodes_now, orderers_now) = (
            store::nodes_of(&mut tx, subchain).await?,
            store::orderers_of(&mut tx, subchain).await?,
        );
        if orderers
            .as_ref()
            .is_some_and(|o| o.is_empty() != orderers_now.is_empty())
        {
            return Err(RegistryError::Conflict(
                "how a subchain is ordered (by the ordering cluster, or by its own city nodes) is fixed when it is created; change its orderers, not whether it has any".into(),
            ));
        }
        let plan_now = store::plan_of(&mut tx, subchain).await?;
        if nodes.as_ref().is_none_or(|n| *n == nodes_now)
            && orderers.as_ref().is_none_or(|o| *o == orderers_now)
            && plan.as_ref().is_none_or(|p| Some(p) == plan_now.as_ref())
        {
            return Err(RegistryError::Conflict(
                "the subchain already has exactly these hosting nodes, orderers and plan".into(),
            ));
        }
        let (revision, before) = self.begin_revision(&mut tx, subchain, now).await?;
        // Hosting nodes and plans are placed under the log's lock (after the subchain's row, the
        // order every revision takes them in).
        let nodes = if nodes.is_some() || plan.is_some() {
            crate::log::lock_sequencer(&mut tx).await.map_err(db_err)?;
            let mut board = board(&mut tx).await?;
            let in_force = plan.as_ref().or(plan_now.as_ref());
            match nodes {
                Some(n) => {
                    pin(&mut board, subchain, in_force, &n)?;
                    Some(n)
                }
                None => Some(board.replan(subchain, in_force, &nodes_now)?),
            }
        } else {
            None
        };
        if let Some(plan) = &plan {
            store::set_plan(&mut tx, subchain, Some(plan)).await?;
        }
        if let Some(nodes) = nodes.as_ref().filter(|n| **n != nodes_now) {
            store::set_nodes(&mut tx, subchain, nodes).await?;
        }
        if let Some(orderers) = &orderers {
            store::set_orderers(&mut tx, subchain, orderers).await?;
        }
        let revised = self
            .commit_and_announce(tx, subchain, revision, &before, by, now)
            .await?;
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
        match store::role_of(&mut tx, subchain, identity).await? {
            Some(r) if r == role => {
                return Err(RegistryError::Conflict(format!(
                    "'{identity}' is already a {} of '{subchain}'",
                    r.name()
                )));
            }
            Some(_) => store::set_member_role(&mut tx, subchain, identity, role).await?,
            None => {
                store::insert_member(&mut tx, subchain, identity, role, now, by).await?;
                store::add_to_member_count(&mut tx, subchain, 1).await?;
            }
        }
        store::delete_join_request(&mut tx, subchain, identity).await?;
        let revised = self
            .commit_and_announce(tx, subchain, revision, &nodes, by, now)
            .await?;
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
            let known = store::count_active_participants(&mut tx, backend, &ids).await?;
            if known as usize != ids.len() {
                return Err(RegistryError::InvalidField(
                    "every member must be an active participant identity".into(),
                ));
            }
            added += store::insert_new_members(&mut tx, backend, subchain, chunk, now, by).await?;
        }
        if added == 0 {
            return Err(RegistryError::Conflict("all of them are members already".into()));
        }
        store::add_to_member_count(&mut tx, subchain, added as i64).await?;
        let revised = self
            .commit_and_announce(tx, subchain, revision, &nodes, by, now)
            .await?;
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
        if store::publisher_of(&mut tx, subchain).await? == identity {
            return Err(RegistryError::Conflict(
                "the publisher cannot be removed from its subchain".into(),
            ));
        }
        if !store::delete_member(&mut tx, subchain, identity).await? {
            return Err(RegistryError::NotFound(format!(
                "'{identity}' is not a member of '{subchain}'"
            )));
        }
        store::add_to_member_count(&mut tx, subchain, -1).await?;
        let revised = self
            .commit_and_announce(tx, subchain, revision, &nodes, by, now)
            .await?;
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
        let mut conn = self.db.acquire_writer().await?;
        check_participant(&mut conn, identity).await?;
        let request = JoinRequest {
            subchain: subchain.to_string(),
            identity: identity.to_string(),
            role,
            note: note.to_string(),
            requested_at: now,
        };
        if !store::insert_join_request(&mut conn, &request).await? {
            return Err(RegistryError::Conflict(format!(
                "you already have a pending request to join '{subchain}'"
            )));
        }
        Ok(Joined::Pending(request))
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
        let gone = store::delete_join_request(&mut *self.db.acquire_writer().await?, subchain, identity).await?;
        if !gone {
            return Err(RegistryError::NotFound(format!(
                "no pending request of '{identity}' to join '{subchain}'"
            )));
        }
        Ok(())
    }

    /// Drops `orderer` from every subchain it orders once it has no valid certificate left
    /// (called in the transaction that revokes its certificate, so both happen or neither). In
    /// each subchain the least loaded active orderer with a valid certificate that is not in
    /// the group yet takes its place, or, with none free, the group goes on without it; a
    /// subchain it orders alone keeps it (there is no one else to order it) and is logged.
    /// Each change is a new membership revision signed, logged and fed like any other.
    pub async fn drop_orderer(
        &self,
        tx: &mut Transaction<'static, Any>,
        orderer: &str,
        by: &str,
        now: i64,
    ) -> Result<Vec<Revised>, RegistryError> {
        if store::valid_certificates(tx, orderer, now).await? > 0 {
            return Ok(Vec::new());
        }
        let mut revised = Vec::new();
        for subchain in store::ordered_by(tx, orderer).await? {
            let current = store::orderers_of(tx, &subchain).await?;
            let mut next: Vec<String> = current.iter().filter(|o| *o != orderer).cloned().collect();
            let free = store::orderer_load(tx, now)
                .await?
                .into_iter()
                .map(|(id, _)| id)
                .find(|id| id != orderer && !current.contains(id));
            next.extend(free);
            if next.is_empty() {
                tracing::warn!(
                    subchain,
                    orderer,
                    "the subchain's only orderer has no valid certificate and no other orderer is free; it keeps it"
                );
                continue;
            }
            next.sort();
            let (revision, before) = self.begin_revision(tx, &subchain, now).await?;
            store::set_orderers(tx, &subchain, &next).await?;
            revised.push(self.commit_revision(tx, &subchain, revision, &before, by, now).await?);
        }
        Ok(revised)
    }

    /// [`Registry::commit_revision`], then commits `tx` and wakes the feed streams.
    async fn commit_and_announce(
        &self,
        mut tx: Transaction<'static, Any>,
        subchain: &str,
        revision: i64,
        nodes_before: &[String],
        by: &str,
        now: i64,
    ) -> Result<Revised, RegistryError> {
        let revised = self
            .commit_revision(&mut tx, subchain, revision, nodes_before, by, now)
            .await?;
        tx.commit().await.map_err(db_err)?;
        self.announce();
        Ok(revised)
    }

    /// Signs the statement of `revision`, stores it, logs it and puts it on the feed for the
    /// nodes and orderers of the subchain before (`nodes_before`) and after the change.
    async fn commit_revision(
        &self,
        tx: &mut Transaction<'static, Any>,
        subchain: &str,
        revision: i64,
        nodes_before: &[String],
        by: &str,
        now: i64,
    ) -> Result<Revised, RegistryError> {
        let nodes = store::nodes_of(tx, subchain).await?;
        let orderers = store::orderers_of(tx, subchain).await?;
        let members = store::members(tx, subchain, "", i64::MAX).await?;
        let plan = store::plan_of(tx, subchain).await?;
        let statement = Statement {
            version: 1,
            trust_domain: self.signer.trust_domain().to_string(),
            subchain: SubchainId::parse(subchain).map_err(db_err)?,
            revision: revision as u64,
            issued_at: now,
            nodes: nodes.clone(),
            orderers: orderers.clone(),
            members,
            plan,
        };
        let payload = serde_json::to_vec(&statement).map_err(db_err)?;
        self.signer.refresh_locked(tx).await.map_err(db_err)?;
        let envelope = self
            .signer
            .seal(identity::membership::STATEMENT_CONTEXT, &payload)
            .map_err(db_err)?;
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
        store::insert_statement(tx, subchain, revision, &payload, &signature, appended.first as i64).await?;
        let seq = store::next_seq(tx).await?;
        let mut audience: Vec<&String> = nodes.iter().chain(&orderers).chain(nodes_before).collect();
        audience.sort();
        audience.dedup();
        store::insert_membership_event(tx, seq, subchain, revision, now, &audience).await?;
        Ok(Revised {
            subchain: subchain.to_string(),
            revision,
            statement: envelope,
            receipt: appended.receipt(0),
        })
    }
}

/// Puts a revocation on the feed (in the revocation's transaction, after its log leaf).
pub async fn feed_revocation(
    tx: &mut Transaction<'static, Any>,
    serial: &str,
    identity: &str,
    reason: &str,
    at: i64,
) -> Result<i64, RegistryError> {
    let seq = store::next_seq(tx).await?;
    store::insert_revocation_event(tx, seq, serial, identity, reason, at).await?;
    Ok(seq)
}

/// The feed's newest position (0 when empty).
pub async fn feed_head(db: &Db) -> Result<i64, RegistryError> {
    Ok(store::feed_head(&mut *db.acquire().await?).await?)
}

/// Records `node`'s report that it has durably processed the feed up to `seq`.
pub async fn record_ack(db: &Db, node: &str, seq: i64, at: i64) -> Result<(), RegistryError> {
    Ok(store::record_ack(&mut *db.acquire_writer().await?, node, seq, at).await?)
}

/// Events after `cursor` that `node` may see, oldest first.
pub async fn feed_page(db: &Db, node: &str, cursor: i64, limit: i64) -> Result<Vec<FeedEvent>, RegistryError> {
    Ok(store::feed_page(&mut *db.acquire().await?, node, cursor, limit).await?)
}
