//! The node directory: where each city node and orderer runs (role, city, public URL),
//! published as a signed, revisioned document (`GET /api/v1/nodes`) and announced to every node
//! on the change feed, so nodes find their peers and participants find where a subchain is
//! served without hand-kept address lists.
//!
//! Rules: only a node sets its own entry, with its own certificate (nobody can speak for another
//! node); its role is its identity's kind (`node` or `orderer`), never a claim; city and URL pass
//! `identity::membership::check_city` and `check_node_url`. Each change is one transaction that
//! takes the issuance log's sequencer lock (so feed order is commit order on every replica, as
//! for membership changes), upserts the entry, signs the whole directory as the next revision
//! with the membership key, stores it and writes a feed event for every node. Setting the same
//! entry again changes nothing and signs nothing.
//!
//! A city node may declare the capacity it offers for placement (`identity::plan::Capacity`);
//! an administrator may mark a node draining (nothing new is placed on it; `crate::registry`
//! moves its subchains). Both are part of the signed entry.
//!
//! Non-features: entries are not logged in the
//! issuance log (they are not issuance: the signature and the feed carry them); an entry stays
//! when its identity is disabled (the statements, not the directory, say who hosts).

use identity::IdentityKind;
use identity::membership::{DirectoryEntry, Envelope, NodeDirectory};
use identity::plan::Capacity;

use crate::db::Db;
use crate::db::nodes as store;
use crate::registry::{MembershipSigner, RegistryError, wake_feed};

/// The directory service.
pub struct Directory<'a> {
    /// The store.
    pub db: &'a Db,
    /// The membership key, which signs the directory.
    pub signer: &'a MembershipSigner,
    /// Woken after each new revision (the feed streams wait on it).
    pub feed: &'a tokio::sync::watch::Sender<u64>,
}

/// The directory now: its revision, entries and signed form (`None` before any entry).
pub struct Current {
    /// Revision (0 when empty).
    pub revision: u64,
    /// Entries, sorted by id.
    pub nodes: Vec<DirectoryEntry>,
    /// The signed revision.
    pub signed: Option<Envelope>,
}

/// A directory revision this CA stored: its payload, checked for shape.
fn stored_directory(env: &Envelope) -> anyhow::Result<NodeDirectory> {
    use base64::Engine;
    let payload = base64::engine::general_purpose::STANDARD.decode(&env.payload)?;
    let d: NodeDirectory = serde_json::from_slice(&payload)?;
    d.check()?;
    Ok(d)
}

impl Directory<'_> {
    /// The current directory.
    pub async fn current(&self) -> Result<Current, RegistryError> {
        let mut c = self.db.acquire().await?;
        let latest = store::latest(&mut c).await?;
        let nodes = store::entries(&mut c).await?;
        Ok(match latest {
            None => Current {
                revision: 0,
                nodes,
                signed: None,
            },
            Some((rev, env)) => {
                // The listing is read from the signed revision itself, so the two always agree
                // (signed here, perhaps by a membership key a handover has since retired).
                let d: NodeDirectory = stored_directory(&env)
                    .map_err(|e| RegistryError::Internal(anyhow::anyhow!("stored directory {rev}: {e}")))?;
                Current {
                    revision: d.revision,
                    nodes: d.nodes,
                    signed: Some(env),
                }
            }
        })
    }

    /// Sets `node`'s own entry (the caller authenticated as `node`, of `kind`): city, URL and,
    /// for a city node, the capacity it offers for placement. Returns the directory after the
    /// change (unchanged when the entry already said this).
    pub async fn set_own(
        &self,
        node: &str,
        kind: IdentityKind,
        city: &str,
        url: &str,
        capacity: Option<&Capacity>,
    ) -> Result<Current, RegistryError> {
        if !kind.is_network_node() {
            return Err(RegistryError::InvalidField(format!(
                "{node} is a {}: only city nodes and orderers are in the node directory",
                kind.as_str()
            )));
        }
        identity::membership::check_city(city).map_err(RegistryError::InvalidField)?;
        identity::membership::check_node_url(url).map_err(RegistryError::InvalidField)?;
        if let Some(c) = capacity {
            if kind != IdentityKind::Node {
                return Err(RegistryError::InvalidField(format!(
                    "{node} is an orderer: only city nodes declare a capacity (they host subchains)"
                )));
            }
            c.check().map_err(RegistryError::InvalidField)?;
        }
        let mut tx = self.db.begin().await?;
        self.signer
            .refresh_locked(&mut tx)
            .await
            .map_err(RegistryError::Internal)?;
        if store::entry(&mut tx, node)
            .await?
            .is_some_and(|(c, u, cap)| c == city && u == url && cap.as_ref() == capacity)
        {
            tx.commit().await?;
            return self.current().await;
        }
        let at = crate::app::now().unix_timestamp();
        store::upsert(&mut tx, node, city, url, capacity, at).await?;
        let current = self.revise(tx, at).await?;
        tracing::info!(node, city, url, revision = current.revision, "node directory revised");
        Ok(current)
    }

    /// Takes `node` out of service for placement (`draining`) or puts it back: nothing new is
    /// placed on a draining node. A new directory revision; `None` when it has no entry, and the
    /// directory unchanged when it already was so.
    pub async fn set_draining(&self, node: &str, draining: bool) -> Result<Option<Current>, RegistryError> {
        let mut tx = self.db.begin().await?;
        self.signer
            .refresh_locked(&mut tx)
            .await
            .map_err(RegistryError::Internal)?;
        if store::entry(&mut tx, node).await?.is_none() {
            return Ok(None);
        }
        let at = crate::app::now().unix_timestamp();
        if !store::set_draining(&mut tx, node, draining, at).await? {
            tx.commit().await?;
            return Ok(Some(self.current().await?));
        }
        let current = self.revise(tx, at).await?;
        tracing::info!(node, draining, revision = current.revision, "node directory revised");
        Ok(Some(current))
    }

    /// Signs the entries as the next revision, stores it, puts it on the feed for every node and
    /// commits `tx` (which holds the log's lock).
    async fn revise(&self, mut tx: sqlx::Transaction<'static, sqlx::Any>, at: i64) -> Result<Current, RegistryError> {
        let revision = store::latest(&mut tx).await?.map_or(0, |(r, _)| r) + 1;
        let nodes = store::entries(&mut tx).await?;
        let (d, env) = self
            .signer
            .directory(revision as u64, at, nodes)
            .map_err(|e| RegistryError::Internal(e.into()))?;
        let raw = |s: &str| {
            use base64::Engine;
            base64::engine::general_purpose::STANDARD
                .decode(s)
                .map_err(|e| RegistryError::Internal(e.into()))
        };
        store::insert_revision(&mut tx, revision, &raw(&env.payload)?, &raw(&env.signature)?, at).await?;
        let seq = crate::db::registry::next_seq(&mut tx).await?;
        store::insert_directory_event(&mut tx, seq, revision, at).await?;
        tx.commit().await?;
        wake_feed(self.feed);
        Ok(Current {
            revision: d.revision,
            nodes: d.nodes,
            signed: Some(env),
        })
    }
}
