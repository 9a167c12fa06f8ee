//! The subchains this node takes part in: opening each one's store when the CA's statement lists
//! this node, and its ordering: a Raft group when this node is one of its voters (an orderer it
//! names, or a hosting city node of a subchain that names no orderer), else a
//! [`crate::relay::Relay`] that pulls and verifies the blocks the orderers make. Then the
//! voters' leader writes new statements as config blocks, and every node runs the pipeline for
//! transactions submitted to it: validate (parse, creator certificate, signature, role, new id),
//! then batch into proposals (the block cutter) and wait for them to be applied.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, RwLock};

use identity::ledger::{CreatorKey, Digest32, SignedTx};
use identity::membership::Role;
use identity::verify::TrustBundle;
use rustls_pki_types::CertificateDer;
use tokio::sync::{Semaphore, mpsc, oneshot, watch};

use crate::chain::Applied;
use crate::chain::{Outcome, Proposal, ProposedTx};
use crate::directory::Directory;
use crate::peers::Peers;
use crate::raft::{Membership, OrderError, Orderer, RaftOrderer};
use crate::relay::Relay;
use crate::store::Store;

/// How a subchain is ordered on this node.
pub enum Ordering {
    /// This node is one of its Raft voters.
    Raft(Arc<RaftOrderer>),
    /// This node is a city node following its orderers.
    Relay(Arc<Relay>),
}

impl Ordering {
    fn is_leader(&self) -> bool {
        match self {
            Ordering::Raft(r) => r.is_leader(),
            Ordering::Relay(_) => false,
        }
    }
}

impl Orderer for Ordering {
    async fn propose(&self, p: Proposal) -> Result<Applied, OrderError> {
        match self {
            Ordering::Raft(r) => r.propose(p).await,
            Ordering::Relay(r) => r.propose(p).await,
        }
    }

    async fn shutdown(&self) {
        match self {
            Ordering::Raft(r) => r.shutdown().await,
            Ordering::Relay(r) => r.shutdown(),
        }
    }
}

/// Tunables of the block cutter and validation.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Most transactions in one block.
    pub block_max_txs: usize,
    /// Proposals in flight at once per subchain (more overlap fsyncs; each is a block).
    pub inflight: usize,
    /// Page cache per subchain database, bytes.
    pub cache_bytes: usize,
}

/// Why a transaction was refused before ordering.
#[derive(Debug, Clone, thiserror::Error)]
pub enum Refusal {
    /// Does not parse.
    #[error("transaction {index}: {reason}")]
    Malformed {
        /// Position in the request.
        index: usize,
        /// Why.
        reason: String,
    },
    /// For another subchain.
    #[error("transaction {index} is for subchain {other}, not this one")]
    WrongSubchain {
        /// Position.
        index: usize,
        /// The subchain it names.
        other: String,
    },
    /// The creator certificate does not verify (other CA, expired, revoked, not a BSN leaf).
    #[error("transaction {index}: creator certificate refused: {reason}")]
    Creator {
        /// Position.
        index: usize,
        /// Why.
        reason: String,
    },
    /// The signature does not verify.
    #[error("transaction {index}: the signature does not verify with the creator certificate's key")]
    BadSignature {
        /// Position.
        index: usize,
    },
    /// The creator may not write.
    #[error("transaction {index}: creator {creator} is not a writer of this subchain")]
    NotWriter {
        /// Position.
        index: usize,
        /// The creator.
        creator: String,
    },
    /// The id is on the chain already, or twice in the request.
    #[error("transaction {index} ({id}) was already submitted")]
    Duplicate {
        /// Position.
        index: usize,
        /// The id, hex.
        id: String,
    },
}

/// A checked creator certificate.
#[derive(Clone)]
struct Creator {
    id: String,
    serial: String,
    not_before: i64,
    not_after: i64,
    key: CreatorKey,
}

/// Creator certificates verified once (chain to the bundle, profile) and remembered by hash;
/// validity and revocation are re-checked on every use.
pub struct Creators {
    bundle: TrustBundle,
    intermediates: Vec<CertificateDer<'static>>,
    /// Where the intermediates the CA published since this node's credential was issued are.
    directory: Arc<Directory>,
    cache: Mutex<HashMap<Digest32, Creator>>,
}

const CREATOR_CACHE: usize = 100_000;

impl Creators {
    /// Creators verified against `bundle`, with the CA's issuing `intermediates` and those the
    /// change feed announces (a rotation publishes the next one before it issues anything).
    pub fn new(bundle: TrustBundle, intermediates: Vec<CertificateDer<'static>>, directory: Arc<Directory>) -> Self {
        Self {
            bundle,
            intermediates,
            directory,
            cache: Mutex::new(HashMap::new()),
        }
    }

    fn check(&self, cert: &[u8], now: i64, directory: &Directory) -> Result<Creator, String> {
        let c = self.valid_at(cert, now)?;
        if directory.is_revoked(&c.serial) {
            return Err(format!("certificate {} is revoked", c.serial));
        }
        Ok(c)
    }

    /// The creator of a certificate that chains to the bundle and was valid at `now` (revocation
    /// is not considered: a later revocation does not undo a transaction already ordered).
    fn valid_at(&self, cert: &[u8], now: i64) -> Result<Creator, String> {
        let h = identity::ledger::sha256(cert);
        let cached = self.cache.lock().expect("creators").get(&h).cloned();
        let c = match cached {
            Some(c) => c,
            None => {
                let mut chain = vec![CertificateDer::from(cert.to_vec())];
                chain.extend(self.intermediates.iter().cloned());
                chain.extend(self.directory.intermediates());
                let leaf = self
                    .bundle
                    .verify_client(&chain, now.max(0) as u64, &[])
                    .map_err(|e| e.to_string())?;
                let (_, parsed) =
                    x509_parser::parse_x509_certificate(cert).map_err(|_| "not a DER certificate".to_string())?;
                let c = Creator {
                    id: leaf.spiffe_id.id.as_str().to_string(),
                    serial: leaf.serial_hex,
                    not_before: leaf.not_before,
                    not_after: leaf.not_after,
                    key: CreatorKey::from_certificate(&parsed).map_err(|e| e.to_string())?,
                };
                let mut g = self.cache.lock().expect("creators");
                if g.len() >= CREATOR_CACHE {
                    g.clear();
                }
                g.insert(h, c.clone());
                c
            }
        };
        if now < c.not_before || now > c.not_after {
            return Err("the certificate is not valid now (expired or not yet valid)".into());
        }
        Ok(c)
    }
}

struct Pending {
    txs: Vec<ProposedTx>,
    reply: oneshot::Sender<Result<Vec<Outcome>, OrderError>>,
}

/// A subchain hosted here.
pub struct Subchain {
    /// The subchain id.
    pub id: String,
    /// Its store.
    pub store: Arc<Store>,
    orderer: Arc<Ordering>,
    queue: mpsc::Sender<Pending>,
    /// The height of the last applied block (`None` before genesis).
    pub applied: watch::Receiver<Option<u64>>,
    reconciling: std::sync::atomic::AtomicBool,
}

impl Subchain {
    /// The subchain's Raft group member on this node (`None`: this node follows the orderers).
    pub fn raft(&self) -> Option<&RaftOrderer> {
        match &*self.orderer {
            Ordering::Raft(r) => Some(r),
            Ordering::Relay(_) => None,
        }
    }

    /// Queues validated transactions for the next blocks and waits until they are applied.
    pub async fn order(&self, txs: Vec<ProposedTx>) -> Result<Vec<Outcome>, OrderError> {
        let (reply, rx) = oneshot::channel();
        self.queue
            .send(Pending { txs, reply })
            .await
            .map_err(|_| OrderError::Stopped("the subchain is closing".into()))?;
        rx.await
            .map_err(|_| OrderError::Stopped("the subchain is closing".into()))?
    }
}

/// The block cutter: takes what is queued (up to a block's worth) whenever a proposal slot is
/// free, so blocks grow with load and a lone transaction waits for no timer.
async fn cut_blocks(orderer: Arc<Ordering>, mut rx: mpsc::Receiver<Pending>, limits: Limits) {
    let slots = Arc::new(Semaphore::new(limits.inflight.max(1)));
    let mut carry: Option<Pending> = None;
    loop {
        let Ok(permit) = slots.clone().acquire_owned().await else {
            return;
        };
        let first = match carry.take() {
            Some(p) => p,
            None => match rx.recv().await {
                Some(p) => p,
                None => return,
            },
        };
        let mut count = first.txs.len();
        let mut batch = vec![first];
        while count < limits.block_max_txs {
            match rx.try_recv() {
                Ok(p) if count + p.txs.len() > limits.block_max_txs => {
                    carry = Some(p);
                    break;
                }
                Ok(p) => {
                    count += p.txs.len();
                    batch.push(p);
                }
                Err(_) => break,
            }
        }
        let orderer = orderer.clone();
        tokio::spawn(async move {
            let _permit = permit;
            let mut txs = Vec::with_capacity(count);
            let mut replies = Vec::with_capacity(batch.len());
            for p in batch {
                replies.push((p.txs.len(), p.reply));
                txs.extend(p.txs);
            }
            let proposal = Proposal::Txs {
                timestamp_ms: crate::clock::now_ms(),
                txs,
            };
            match orderer.propose(proposal).await {
                Ok(applied) => {
                    let mut outcomes = applied.outcomes.into_iter();
                    for (n, reply) in replies {
                        let mine: Vec<Outcome> = outcomes.by_ref().take(n).collect();
                        let _ = reply.send(Ok(mine));
                    }
                }
                Err(e) => {
                    for (_, reply) in replies {
                        let _ = reply.send(Err(e.clone()));
                    }
                }
            }
        });
    }
}

/// Every subchain this node hosts.
pub struct Subchains {
    directory: Arc<Directory>,
    creators: Arc<Creators>,
    data_dir: PathBuf,
    name: String,
    addr: String,
    peers: Peers,
    limits: Limits,
    open: RwLock<HashMap<String, Arc<Subchain>>>,
    verify_slots: Semaphore,
}

impl Subchains {
    /// The set, with subchain databases under `data_dir/subchains/`.
    pub fn new(
        directory: Arc<Directory>,
        creators: Creators,
        data_dir: PathBuf,
        node_name: &str,
        addr: String,
        peers: Peers,
        limits: Limits,
    ) -> Self {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        Self {
            directory,
            creators: Arc::new(creators),
            data_dir,
            name: node_name.to_string(),
            addr,
            peers,
            limits,
            open: RwLock::new(HashMap::new()),
            verify_slots: Semaphore::new(cores),
        }
    }

    /// A hosted subchain that is open.
    pub fn get(&self, id: &str) -> Option<Arc<Subchain>> {
        self.open.read().expect("subchains").get(id).cloned()
    }

    /// Every open subchain.
    pub fn all(&self) -> Vec<Arc<Subchain>> {
        let mut v: Vec<_> = self.open.read().expect("subchains").values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    fn membership<'a>(&'a self, hosts: &'a [String]) -> Membership<'a> {
        Membership {
            me: &self.name,
            my_addr: &self.addr,
            hosts,
            peers: &self.peers,
        }
    }

    async fn open_subchain(
        &self,
        id: &str,
        statement: &identity::membership::Statement,
    ) -> anyhow::Result<Arc<Subchain>> {
        if let Some(s) = self.get(id) {
            return Ok(s);
        }
        let dir = self.data_dir.join("subchains");
        std::fs::create_dir_all(&dir)?;
        let store = Arc::new(tokio::task::block_in_place(|| {
            Store::open(&dir.join(format!("{id}.redb")), id, self.limits.cache_bytes)
        })?);
        let (tx, applied) = watch::channel(store.tip().last.map(|(h, _)| h));
        let orderer = Arc::new(if statement.orders(&self.name) {
            Ordering::Raft(Arc::new(
                RaftOrderer::start(
                    store.clone(),
                    self.directory.keys(),
                    self.membership(statement.voters()),
                    tx,
                )
                .await?,
            ))
        } else {
            let creators = self.creators.clone();
            let check: crate::relay::CreatorCheck = Arc::new(move |tx: &SignedTx, at: i64, verified_here: bool| {
                let c = creators.valid_at(&tx.body.creator_cert, at)?;
                if !verified_here {
                    tx.verify(&c.key).map_err(|_| "bad signature".to_string())?;
                }
                Ok(c.id)
            });
            Ordering::Relay(Relay::start(
                store.clone(),
                self.directory.keys(),
                self.peers.clone(),
                self.directory.clone(),
                check,
                tx,
            ))
        });
        let (queue, rx) = mpsc::channel(4096);
        tokio::spawn(cut_blocks(orderer.clone(), rx, self.limits.clone()));
        let s = Arc::new(Subchain {
            id: id.to_string(),
            store,
            orderer,
            queue,
            applied,
            reconciling: std::sync::atomic::AtomicBool::new(false),
        });
        self.open.write().expect("subchains").insert(id.to_string(), s.clone());
        tracing::info!(subchain = id, "subchain opened");
        Ok(s)
    }

    /// Brings the open set in line with the CA's statements: opens newly hosted subchains,
    /// writes each newer statement as a config block, closes subchains no longer hosted here.
    pub async fn sync(&self) {
        let hosted = self.directory.hosted();
        for known in &hosted {
            let id = known.statement.subchain.as_str();
            let s = match self.open_subchain(id, &known.statement).await {
                Ok(s) => s,
                Err(e) => {
                    tracing::error!(subchain = id, error = %e, "cannot open subchain");
                    continue;
                }
            };
            // Group changes can take long (a new host catching up): one at a time, off this loop.
            if s.orderer.is_leader() && !s.reconciling.swap(true, std::sync::atomic::Ordering::AcqRel) {
                let (s2, hosts) = (s.clone(), known.statement.voters().to_vec());
                let (name, addr, peers) = (self.name.clone(), self.addr.clone(), self.peers.clone());
                tokio::spawn(async move {
                    let m = Membership {
                        me: &name,
                        my_addr: &addr,
                        hosts: &hosts,
                        peers: &peers,
                    };
                    while let Some(r) = s2.raft()
                        && r.reconcile(m).await
                    {}
                    s2.reconciling.store(false, std::sync::atomic::Ordering::Release);
                });
            }
            // The leader writes a newer statement as a config block (followers get it by Raft).
            if s.orderer.is_leader() && known.statement.revision > s.store.tip().revision() {
                let p = Proposal::Config {
                    envelope: known.envelope.clone(),
                    handovers: self.directory.handovers(),
                };
                match s.orderer.propose(p).await {
                    Ok(a) if a.refused.is_some() => {
                        crate::warn_every!(
                            format!("config-refused {id}"),
                            subchain = id,
                            why = a.refused.as_deref(),
                            "config not applied"
                        )
                    }
                    Ok(a) => {
                        tracing::info!(
                            subchain = id,
                            revision = known.statement.revision,
                            height = a.height,
                            "membership config block"
                        )
                    }
                    Err(e) => {
                        crate::warn_every!(format!("config-unordered {id}"), subchain = id, error = %e, "config block not ordered")
                    }
                }
            }
        }
        let gone: Vec<Arc<Subchain>> = {
            let mut g = self.open.write().expect("subchains");
            let keep: std::collections::HashSet<&str> = hosted.iter().map(|k| k.statement.subchain.as_str()).collect();
            let ids: Vec<String> = g.keys().filter(|k| !keep.contains(k.as_str())).cloned().collect();
            ids.iter().filter_map(|k| g.remove(k)).collect()
        };
        for s in gone {
            tracing::info!(
                subchain = s.id,
                "no longer hosted here: closing (its database stays on disk)"
            );
            s.orderer.shutdown().await;
        }
    }

    /// Runs [`Subchains::sync`] now, on every statement change, on every new node directory (a
    /// host's URL may arrive after the statement naming it), and every two seconds (a group
    /// change that failed, say because a host was down, is retried).
    pub async fn follow(self: Arc<Self>) {
        let mut changes = self.directory.statement_changes();
        let mut nodes = self.directory.node_directory_changes();
        loop {
            self.sync().await;
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                r = nodes.changed() => if r.is_err() { return },
                _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
            }
        }
    }

    /// Stops every group.
    pub async fn shutdown(&self) {
        for s in self.all() {
            s.orderer.shutdown().await;
        }
    }

    /// Checks submitted transactions as the leader does before ordering them: each parses, is
    /// for `subchain`, has a valid unrevoked creator certificate from this CA whose key signed
    /// it, a creator who is a writer now, and an id not seen before. Any failure refuses them all.
    pub async fn validate(&self, subchain: &Subchain, raw: Vec<Vec<u8>>, now: i64) -> Result<Vec<ProposedTx>, Refusal> {
        let _slot = self.verify_slots.acquire().await.expect("never closed");
        let checked = tokio::task::block_in_place(|| {
            use std::collections::HashSet;
            let mut seen = HashSet::with_capacity(raw.len());
            let mut out = Vec::with_capacity(raw.len());
            // One read transaction for the request (unreadable: apply refuses duplicates anyway).
            let on_chain = subchain.store.tx_index().ok();
            for (index, bytes) in raw.into_iter().enumerate() {
                let tx = SignedTx::parse(bytes).map_err(|e| Refusal::Malformed {
                    index,
                    reason: e.to_string(),
                })?;
                if tx.body.subchain.as_str() != subchain.id {
                    return Err(Refusal::WrongSubchain {
                        index,
                        other: tx.body.subchain.to_string(),
                    });
                }
                let creator = self
                    .creators
                    .check(&tx.body.creator_cert, now, &self.directory)
                    .map_err(|reason| Refusal::Creator { index, reason })?;
                tx.verify(&creator.key).map_err(|_| Refusal::BadSignature { index })?;
                if !self
                    .directory
                    .role_of(&subchain.id, &creator.id)
                    .is_some_and(|r| r.allows(Role::Writer))
                {
                    return Err(Refusal::NotWriter {
                        index,
                        creator: creator.id,
                    });
                }
                let known = on_chain.as_ref().is_some_and(|i| i.contains(&tx.id));
                if known || !seen.insert(tx.id) {
                    return Err(Refusal::Duplicate {
                        index,
                        id: hex::encode(tx.id),
                    });
                }
                out.push(ProposedTx {
                    creator: creator.id,
                    id: tx.id,
                    bytes: tx.bytes,
                });
            }
            Ok(out)
        });
        match &checked {
            Err(_) => crate::metrics::TX_REFUSED.inc(),
            // A city node checks each block from the orderers: it need not verify again the
            // signatures it has just verified here.
            Ok(txs) => {
                if let Ordering::Relay(r) = &*subchain.orderer {
                    r.vouch(txs.iter().map(|t| identity::ledger::sha256(&t.bytes)));
                }
            }
        }
        checked
    }
}
