//! The subchains this node takes part in: opening each one's store when the CA's statement lists
//! this node, and its ordering: a Raft group when this node is one of its voters (an orderer it
//! names, or a hosting city node of a subchain that names no orderer), else a
//! [`crate::relay::Relay`] that pulls and verifies the blocks the orderers make. Then the
//! voters' leader writes new statements as config blocks, and every node runs the pipeline for
//! transactions submitted to it: validate (parse, creator certificate, signature, role, new id),
//! then batch into proposals (the block cutter) and wait for them to be applied.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering as AtomicOrdering};
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
    /// When it was last used or applied a block ([`mono_ms`]).
    last_active: AtomicU64,
    /// Its Raft group's timers are stopped (no heartbeat, no election) until a write or an
    /// applied entry stirs it.
    quiet: std::sync::atomic::AtomicBool,
    /// Writes in progress here (submitted, or forwarded by a peer) that are not answered yet:
    /// while there is one the group's timers keep running, so that a follower whose leader
    /// died elects a new one instead of waiting, quiet, for a leader that never comes back.
    writing: AtomicU64,
    /// When this member last heard from a group leader (an append; at first, when it opened:
    /// openraft's lease on a stored vote starts then), [`mono_ms`].
    heard: AtomicU64,
    /// A campaign to succeed a silent leader is pending ([`Subchain::refused_vote`]).
    succeeding: std::sync::atomic::AtomicBool,
    /// The highest term of a candidate with a shorter log whose vote this member refused.
    refused_term: AtomicU64,
}

/// A write in progress on a subchain ([`Subchain::writing`]): its group stays stirred until the
/// write is answered.
pub struct Writing<'a>(&'a Subchain);

impl Drop for Writing<'_> {
    fn drop(&mut self) {
        self.0.writing.fetch_sub(1, AtomicOrdering::SeqCst);
        self.0.touch();
    }
}

impl Subchain {
    /// Marks the subchain used now (it hibernates only after being idle a while).
    pub fn touch(&self) {
        self.last_active.store(mono_ms(), AtomicOrdering::Relaxed);
    }

    /// A write is coming, or the leader applied entries: the Raft group's timers run again
    /// (heartbeats as leader, elections as follower).
    pub fn stir(&self) {
        self.touch();
        if self.quiet.swap(false, AtomicOrdering::SeqCst)
            && let Some(r) = self.raft()
        {
            r.set_quiet(false);
        }
    }

    /// A write begins here (a submission, or a proposal a peer forwards): the group's timers
    /// run until it is answered, however long ordering it takes.
    pub fn writing(&self) -> Writing<'_> {
        self.writing.fetch_add(1, AtomicOrdering::SeqCst);
        self.stir();
        Writing(self)
    }

    /// An append from the group's leader reached this member.
    pub fn heard_from_leader(&self) {
        self.heard.store(mono_ms(), AtomicOrdering::Relaxed);
    }

    /// This member refused its vote to a candidate. An election is under way that the
    /// candidate may not win: this member's timers run until the group is quiet again (a
    /// follower that only applies runs none, and would never campaign). When the candidate's log
    /// is shorter than this member's it cannot win at all, and this member campaigns as soon as
    /// it has not heard from a leader for the lease, at a term above the candidate's (seen
    /// before: the candidate campaigned in vain for 15 s while the member holding the longer
    /// log, with no timers, waited for a write). A leader heard meanwhile cancels that.
    pub fn refused_vote(
        self: &Arc<Self>,
        req: &openraft::raft::VoteRequest<u64>,
        answer: &openraft::raft::VoteResponse<u64>,
    ) {
        self.stir();
        if answer.last_log_id <= req.last_log_id || self.orderer.is_leader() {
            return;
        }
        self.refused_term
            .fetch_max(req.vote.leader_id().term, AtomicOrdering::SeqCst);
        if self.succeeding.swap(true, AtomicOrdering::SeqCst) {
            return;
        }
        let (weak, last) = (Arc::downgrade(self), answer.last_log_id);
        let started = mono_ms();
        tokio::spawn(async move {
            loop {
                let Some(s) = weak.upgrade() else { return };
                let silent = mono_ms().saturating_sub(s.heard.load(AtomicOrdering::Relaxed));
                let lease = crate::raft::LEASE_MS + 50;
                if silent >= lease || mono_ms().saturating_sub(started) > 3 * lease {
                    if silent >= lease
                        && let Some(r) = s.raft()
                    {
                        r.succeed(s.refused_term.load(AtomicOrdering::SeqCst), last).await;
                    }
                    s.succeeding.store(false, AtomicOrdering::SeqCst);
                    return;
                }
                drop(s);
                tokio::time::sleep(std::time::Duration::from_millis(lease - silent)).await;
            }
        });
    }

    /// Stops the Raft group's timers while nothing happens: a quiet leader sends no heartbeat
    /// and a quiet follower starts no election, so a group whose members sleep at slightly
    /// different times never elects anyone for want of heartbeats. Reads need neither; a write
    /// waiting to be ordered does (the timers stay on while one is in progress).
    fn quiesce(&self) {
        if self.writing.load(AtomicOrdering::SeqCst) > 0 {
            return;
        }
        if !self.quiet.swap(true, AtomicOrdering::SeqCst)
            && let Some(r) = self.raft()
        {
            r.set_quiet(true);
            // A write that began meanwhile found the group not yet quiet and started nothing:
            // the timers go back on (whatever order the two threads' calls landed in).
            if self.writing.load(AtomicOrdering::SeqCst) > 0 {
                self.quiet.store(false, AtomicOrdering::SeqCst);
                r.set_quiet(false);
            }
        }
    }

    /// The subchain's Raft group member on this node (`None`: this node follows the orderers).
    pub fn raft(&self) -> Option<&RaftOrderer> {
        match &*self.orderer {
            Ordering::Raft(r) => Some(r),
            Ordering::Relay(_) => None,
        }
    }

    /// Queues validated transactions for the next blocks and waits until they are applied.
    pub async fn order(&self, txs: Vec<ProposedTx>) -> Result<Vec<Outcome>, OrderError> {
        let _writing = self.writing();
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

/// Milliseconds on this process's monotonic clock.
fn mono_ms() -> u64 {
    static BASE: std::sync::OnceLock<std::time::Instant> = std::sync::OnceLock::new();
    BASE.get_or_init(std::time::Instant::now).elapsed().as_millis() as u64
}

/// What a hibernating subchain had when it was closed (or when its file was looked at).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct ColdTip {
    height: Option<u64>,
    revision: u64,
}

impl ColdTip {
    fn of(tip: &crate::chain::Tip) -> Self {
        Self {
            height: tip.last.map(|(h, _)| h),
            revision: tip.revision(),
        }
    }
}

/// When subchains hibernate (see [`Subchains`]).
#[derive(Debug, Clone)]
pub struct Hibernation {
    /// A subchain nobody holds and nothing happened to for this long is closed.
    pub idle_after: std::time::Duration,
    /// Open subchains at most: beyond it the least recently used that nobody holds are closed
    /// even before `idle_after` (a burst of wake-ups never exhausts files or memory).
    pub max_open: usize,
}

impl Default for Hibernation {
    fn default() -> Self {
        Self {
            idle_after: std::time::Duration::from_secs(30),
            max_open: 512,
        }
    }
}

/// Every subchain this node takes part in. Only the ones in use are open: a subchain nobody
/// holds (no request, stream or peer call running) and that applied nothing for
/// [`Hibernation::idle_after`] hibernates: its ordering stops (Raft group or relay, with their
/// timers and tasks) and its database file is closed, leaving only a few bytes of bookkeeping.
/// It wakes on the first thing that needs it: a request for it at the gateway, a call from a
/// peer of its group (a Raft message or a block fetch), a newer statement from the CA, or, on a
/// city node, an orderer's tip feed ([`crate::tips`]) saying it has blocks this node lacks.
///
/// A woken Raft member restores itself from its durable log and vote; the member that led the
/// group before it slept leads again at once (openraft restores a committed leader without an
/// election), and a member that wakes first forwards to it, waking it. Crash safety is the
/// store's: hibernating is a clean close, and a crash of a hibernating subchain loses nothing.
pub struct Subchains {
    directory: Arc<Directory>,
    creators: Arc<Creators>,
    data_dir: PathBuf,
    name: String,
    addr: String,
    peers: Peers,
    limits: Limits,
    hibernation: Hibernation,
    open: RwLock<HashMap<String, Arc<Subchain>>>,
    /// Opens one subchain at a time (a second caller finds it open).
    opening: tokio::sync::Mutex<()>,
    /// Tips of hibernating subchains this node has seen since it started.
    cold: Mutex<HashMap<String, ColdTip>>,
    /// The statement revision [`Subchains::sync`] last handled for each subchain.
    synced: Mutex<HashMap<String, u64>>,
    /// Subchains a sync pass could not open: the next pass tries them again.
    retry: Mutex<std::collections::HashSet<String>>,
    /// The heights reached here, for the city nodes that follow this node.
    tips: Arc<crate::tips::TipFeed>,
    verify_slots: Semaphore,
    /// Told when this node becomes the leader of a group: [`Subchains::follow`] syncs at once, so a
    /// new leader moves the voters to the statement without waiting for the next round.
    leadership: Arc<tokio::sync::Notify>,
}

impl Subchains {
    /// The set, with subchain databases under `data_dir/subchains/`.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        directory: Arc<Directory>,
        creators: Creators,
        data_dir: PathBuf,
        node_name: &str,
        addr: String,
        peers: Peers,
        limits: Limits,
        hibernation: Hibernation,
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
            hibernation,
            open: RwLock::new(HashMap::new()),
            opening: tokio::sync::Mutex::new(()),
            cold: Mutex::new(HashMap::new()),
            synced: Mutex::new(HashMap::new()),
            retry: Mutex::new(std::collections::HashSet::new()),
            tips: Arc::new(crate::tips::TipFeed::new()),
            verify_slots: Semaphore::new(cores),
            leadership: Arc::new(tokio::sync::Notify::new()),
        }
    }

    /// A subchain that is open now (`None`: hibernating, or not taken part in).
    pub fn get(&self, id: &str) -> Option<Arc<Subchain>> {
        self.open.read().expect("subchains").get(id).cloned()
    }

    /// A subchain this node takes part in, woken if it hibernates; marks it used (a client's
    /// request). `Err` says why it cannot be had (not taken part in, or its store or ordering
    /// failed to open).
    pub async fn acquire(&self, id: &str) -> Result<Arc<Subchain>, String> {
        let s = self.wake(id).await?;
        s.touch();
        Ok(s)
    }

    /// [`Subchains::acquire`] for a peer's message: wakes the subchain but does not mark it used
    /// (heartbeats and long polls alone do not keep a subchain awake).
    pub async fn wake(&self, id: &str) -> Result<Arc<Subchain>, String> {
        if let Some(s) = self.get(id) {
            return Ok(s);
        }
        let Some(known) = self
            .directory
            .statement(id)
            .filter(|k| k.statement.involves(&self.name))
        else {
            return Err(format!("subchain {id} is not hosted here"));
        };
        let _one = self.opening.lock().await;
        if let Some(s) = self.get(id) {
            return Ok(s);
        }
        // A subchain just closed may still be releasing its file: wait a little for it.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(3);
        loop {
            match self.open_subchain(id, &known.statement).await {
                Ok(s) => return Ok(s),
                Err(e) if tokio::time::Instant::now() < deadline && e.to_string().contains("already open") => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                }
                Err(e) => return Err(format!("subchain {id} cannot be opened on this node: {e}")),
            }
        }
    }

    /// Every open subchain.
    pub fn all(&self) -> Vec<Arc<Subchain>> {
        let mut v: Vec<_> = self.open.read().expect("subchains").values().cloned().collect();
        v.sort_by(|a, b| a.id.cmp(&b.id));
        v
    }

    /// How many subchains are open now.
    pub fn open_count(&self) -> usize {
        self.open.read().expect("subchains").len()
    }

    /// The height of a subchain here, open or hibernating (`None`: no block yet, or not seen
    /// since this node started).
    pub fn height(&self, id: &str) -> Option<u64> {
        match self.get(id) {
            Some(s) => s.store.tip().last.map(|(h, _)| h),
            None => self.cold.lock().expect("cold").get(id).and_then(|t| t.height),
        }
    }

    /// The feed of heights reached here.
    pub fn tips(&self) -> &crate::tips::TipFeed {
        &self.tips
    }

    /// Bytes each subchain this node takes part in holds on disk (its database file), open or
    /// not.
    pub fn disk_usage(&self) -> Vec<(String, u64)> {
        self.directory
            .hosted_revisions()
            .into_iter()
            .map(|(id, _)| {
                let bytes = std::fs::metadata(self.path_of(&id)).map_or(0, |m| m.len());
                (id, bytes)
            })
            .collect()
    }

    fn path_of(&self, id: &str) -> PathBuf {
        self.data_dir.join("subchains").join(format!("{id}.redb"))
    }

    /// A hibernating subchain's tip: remembered from its close, else read from its file (which
    /// is opened and closed again, never while the subchain opens or closes); `None` when it
    /// has no file yet. An open subchain's tip if it is open.
    async fn cold_tip(&self, id: &str) -> Option<ColdTip> {
        if let Some(s) = self.get(id) {
            return Some(ColdTip::of(&s.store.tip()));
        }
        if let Some(t) = self.cold.lock().expect("cold").get(id) {
            return Some(*t);
        }
        let _one = self.opening.lock().await;
        if let Some(s) = self.get(id) {
            return Some(ColdTip::of(&s.store.tip()));
        }
        let path = self.path_of(id);
        if !path.exists() {
            return None;
        }
        let t = ColdTip::of(&tokio::task::block_in_place(|| Store::peek(&path)).ok()?);
        self.cold.lock().expect("cold").insert(id.to_string(), t);
        // City nodes following this node learn its height without waking it.
        if let Some(h) = t.height {
            self.tips.note(id, h);
        }
        Some(t)
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
        let t0 = std::time::Instant::now();
        let dir = self.data_dir.join("subchains");
        std::fs::create_dir_all(&dir)?;
        let store = Arc::new(tokio::task::block_in_place(|| {
            Store::open(&self.path_of(id), id, self.limits.cache_bytes)
        })?);
        let (tx, applied) = watch::channel(store.tip().last.map(|(h, _)| h));
        // A group that ran before wakes with its timers stopped: a read needs no leader, and a
        // write starts them (see `Subchain::stir`). In a new group only the member that creates
        // it runs them from the start, to elect its first leader (again if the first election
        // fails); the others wait for it, quiet. A follower whose timers ran while its leader's
        // were stopped would time out and campaign against a live leader that says nothing.
        let fresh = store.tip().last.is_none();
        let quiet = !fresh || crate::raft::initializer(id, statement.voters()) != Some(self.name.as_str());
        let stored = t0.elapsed();
        let orderer = Arc::new(if statement.orders(&self.name) {
            Ordering::Raft(Arc::new(
                RaftOrderer::start(
                    store.clone(),
                    self.directory.keys(),
                    self.membership(statement.voters()),
                    tx,
                    quiet,
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
        if let Ordering::Raft(r) = &*orderer {
            let (mut metrics, me, news) = (
                r.raft().metrics(),
                crate::group::node_id(&self.name),
                self.leadership.clone(),
            );
            // Ends with the group (its metrics channel closes at shutdown).
            tokio::spawn(async move {
                let mut leads = false;
                while metrics.changed().await.is_ok() {
                    let now = metrics.borrow_and_update().current_leader == Some(me);
                    if now && !leads {
                        news.notify_one();
                    }
                    leads = now;
                }
            });
        }
        let (queue, rx) = mpsc::channel(4096);
        tokio::spawn(cut_blocks(orderer.clone(), rx, self.limits.clone()));
        let s = Arc::new(Subchain {
            id: id.to_string(),
            store,
            orderer,
            queue,
            applied: applied.clone(),
            reconciling: std::sync::atomic::AtomicBool::new(false),
            last_active: AtomicU64::new(mono_ms()),
            quiet: std::sync::atomic::AtomicBool::new(quiet),
            writing: AtomicU64::new(0),
            heard: AtomicU64::new(mono_ms()),
            succeeding: std::sync::atomic::AtomicBool::new(false),
            refused_term: AtomicU64::new(0),
        });
        // Every new height: the tip feed hears of it, and the subchain counts as used.
        if let Some(h) = *applied.borrow() {
            self.tips.note(id, h);
        }
        let (tips, weak, sid) = (self.tips.clone(), Arc::downgrade(&s), id.to_string());
        let mut heights = applied;
        tokio::spawn(async move {
            while heights.changed().await.is_ok() {
                let h = *heights.borrow_and_update();
                if let Some(h) = h {
                    tips.note(&sid, h);
                }
                // The leader's timers run while it has entries to make known (heartbeats carry
                // the commit index); a follower's stay as they are: stopped on a quiet one, or it
                // would campaign once the leader's stop (see `Subchain::quiesce`).
                match weak.upgrade() {
                    Some(s) if s.orderer.is_leader() => s.stir(),
                    Some(s) => s.touch(),
                    None => return,
                }
            }
        });
        self.cold.lock().expect("cold").remove(id);
        self.open.write().expect("subchains").insert(id.to_string(), s.clone());
        crate::metrics::SUBCHAINS_WOKEN.inc();
        tracing::debug!(
            subchain = id,
            store_us = stored.as_micros() as u64,
            total_us = t0.elapsed().as_micros() as u64,
            "subchain opened"
        );
        Ok(s)
    }

    /// Whether an open subchain may hibernate now: for a Raft member, nothing it logged is
    /// waiting to be applied, no group change is running, a newer statement is not waiting for
    /// this node (as leader, or with no leader yet) to write it, and as leader its voters are the
    /// statement's; a relay has the statement in force.
    fn may_hibernate(&self, s: &Subchain) -> bool {
        if s.reconciling.load(std::sync::atomic::Ordering::Acquire) {
            return false;
        }
        let statement = self.directory.statement(&s.id).map(|k| k.statement);
        let behind = statement
            .as_ref()
            .is_some_and(|st| st.revision > s.store.tip().revision());
        match &*s.orderer {
            Ordering::Relay(_) => !behind,
            Ordering::Raft(r) => {
                let m = r.raft().metrics().borrow().clone();
                if m.last_applied.map(|l| l.index) != m.last_log_index {
                    return false;
                }
                let leads = r.is_leader();
                // A newer statement waits for a leader to write it: this node, or one elected
                // yet (a follower may sleep while another node leads).
                if behind && (leads || m.current_leader.is_none()) {
                    return false;
                }
                if !leads {
                    return true;
                }
                let want: std::collections::BTreeSet<u64> = statement
                    .as_ref()
                    .map(|st| st.voters().iter().map(|n| crate::group::node_id(n)).collect())
                    .unwrap_or_default();
                let have: std::collections::BTreeSet<u64> = m.membership_config.membership().voter_ids().collect();
                !behind && (want.is_empty() || want == have)
            }
        }
    }

    /// Closes the subchains that may hibernate: idle ones, and beyond [`Hibernation::max_open`]
    /// the least recently used. A subchain someone holds is never closed.
    pub async fn hibernate_idle(&self) {
        let now = mono_ms();
        let idle_ms = self.hibernation.idle_after.as_millis() as u64;
        let mut free: Vec<(u64, Arc<Subchain>)> = self
            .open
            .read()
            .expect("subchains")
            .values()
            // The map's reference, and this one.
            .filter(|s| Arc::strong_count(s) == 1)
            .map(|s| (s.last_active.load(AtomicOrdering::Relaxed), s.clone()))
            .collect();
        free.sort_by_key(|(t, _)| *t);
        // Half-way to hibernating (or held open by a reader): stop the group's timers.
        for s in self.open.read().expect("subchains").values() {
            if now.saturating_sub(s.last_active.load(AtomicOrdering::Relaxed)) >= idle_ms / 2 {
                s.quiesce();
            }
        }
        let over = self.open_count().saturating_sub(self.hibernation.max_open);
        let mut chosen = Vec::new();
        for (i, (t, s)) in free.into_iter().enumerate() {
            let idle = now.saturating_sub(t) >= idle_ms;
            if !(idle || i < over) || !self.may_hibernate(&s) {
                continue;
            }
            chosen.push(s.id.clone());
        }
        for id in chosen {
            // No wake-up or file peek of this subchain runs while it closes.
            let _one = self.opening.lock().await;
            let s = {
                let mut g = self.open.write().expect("subchains");
                // Nobody took it since: only the map holds it (new holders need this lock).
                match g.get(&id) {
                    Some(s) if Arc::strong_count(s) == 1 => g.remove(&id),
                    _ => None,
                }
            };
            let Some(s) = s else { continue };
            s.orderer.shutdown().await;
            self.cold
                .lock()
                .expect("cold")
                .insert(id.clone(), ColdTip::of(&s.store.tip()));
            crate::metrics::SUBCHAINS_HIBERNATED.inc();
            tracing::debug!(subchain = id, "idle: hibernating");
        }
    }

    /// Runs [`Subchains::hibernate_idle`] twice a second, for ever.
    pub async fn hibernate(self: Arc<Self>) {
        loop {
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
            self.hibernate_idle().await;
        }
    }

    /// Brings the subchains in line with the CA's statements: wakes those with a newer
    /// statement than their chain holds (its leader writes it as a config block, a relay pulls
    /// it), starts group changes on the leaders, closes subchains no longer taken part in.
    /// A `full` pass looks at every statement listing this node; the others only at the open
    /// subchains, those whose statement changed since the last pass, and those a pass could not
    /// open: a hibernating subchain whose statement did not change costs nothing (with 10,000
    /// hosted, a full pass every two seconds was most of an idle node's CPU).
    pub async fn sync(&self, full: bool) {
        let started = std::time::Instant::now();
        // Taken before the statements are read: a change arriving meanwhile is seen by this
        // pass or the next.
        let mut changed = self.directory.take_changed_statements();
        changed.extend(std::mem::take(&mut *self.retry.lock().expect("retry")));
        let hosted = if full {
            self.directory.hosted_revisions()
        } else {
            let mut ids = changed.clone();
            ids.extend(self.open.read().expect("subchains").keys().cloned());
            self.directory.revisions_involving(&ids)
        };
        for (id, revision) in &hosted {
            let id = id.as_str();
            let s = match self.get(id) {
                Some(s) => s,
                None => {
                    if self.synced.lock().expect("synced").get(id) == Some(revision) {
                        continue;
                    }
                    let current = self.cold_tip(id).await.is_some_and(|t| t.revision >= *revision);
                    if current {
                        self.synced.lock().expect("synced").insert(id.to_string(), *revision);
                        continue;
                    }
                    match self.acquire(id).await {
                        Ok(s) => s,
                        Err(e) => {
                            crate::warn_every!(format!("open {id}"), subchain = id, error = e, "cannot open subchain");
                            self.retry.lock().expect("retry").insert(id.to_string());
                            continue;
                        }
                    }
                }
            };
            let Some(known) = self.directory.statement(id) else {
                continue;
            };
            self.synced.lock().expect("synced").insert(id.to_string(), *revision);
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
            let behind = known.statement.revision > s.store.tip().revision();
            if behind && let Some(r) = s.raft() {
                // A group just woken from its log knows its leader at once (a committed vote),
                // once its core has started: wait for that rather than a whole sync round.
                let logged = s.store.tip().last.is_some();
                if logged {
                    r.wait_for_leader(std::time::Duration::from_secs(2)).await;
                }
                // Its group must have a leader to write it: timers on where that needs them,
                // on the leader (heartbeats) and on a member that knows none (to elect one).
                // Not on a follower of a known leader: the leader's node wakes for the same
                // statement, and a follower whose timers ran while the leader's were stopped
                // would campaign against it. Nor on a new member other than the group's
                // creator: it has no log to elect with and waits for the creator.
                if r.is_leader() || (logged && !r.knows_leader()) {
                    s.stir();
                }
            }
            if s.orderer.is_leader() && behind {
                let p = Proposal::Config {
                    envelope: known.envelope.clone(),
                    handovers: self.directory.handovers(),
                };
                match s.orderer.propose(p).await {
                    // Refused because the chain already holds it (a proposal of the same
                    // revision committed meanwhile, say by the leader before a restart): done.
                    Ok(a) if a.refused.is_some() && s.store.tip().revision() >= known.statement.revision => {
                        tracing::debug!(subchain = id, why = a.refused.as_deref(), "config already in force")
                    }
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
        let keep: std::collections::HashSet<&str> = hosted.iter().map(|(id, _)| id.as_str()).collect();
        // Gone: not in this pass's list and not hosted now either (a subchain created since the
        // list was taken may have been woken by a peer meanwhile).
        let involved = |id: &str| {
            keep.contains(id)
                || self
                    .directory
                    .statement(id)
                    .is_some_and(|k| k.statement.involves(&self.name))
        };
        let gone: Vec<Arc<Subchain>> = {
            let ids: Vec<String> = self
                .open
                .read()
                .expect("subchains")
                .keys()
                .filter(|k| !involved(k))
                .cloned()
                .collect();
            let mut g = self.open.write().expect("subchains");
            ids.iter().filter_map(|k| g.remove(k)).collect()
        };
        for s in gone {
            tracing::info!(
                subchain = s.id,
                "no longer hosted here: closing (its database stays on disk)"
            );
            s.orderer.shutdown().await;
        }
        if full {
            self.cold.lock().expect("cold").retain(|k, _| involved(k));
            self.synced.lock().expect("synced").retain(|k, _| involved(k));
        } else {
            for id in changed.iter().filter(|id| !involved(id)) {
                self.cold.lock().expect("cold").remove(id);
                self.synced.lock().expect("synced").remove(id);
            }
        }
        tracing::trace!(
            full,
            looked_at = hosted.len(),
            us = started.elapsed().as_micros() as u64,
            "sync pass"
        );
    }

    /// Runs [`Subchains::sync`] now (a full pass), on every statement change, on every new node
    /// directory (a host's URL may arrive after the statement naming it), when this node
    /// becomes a group's leader (it reconciles the voters), and every two seconds (a group
    /// change that failed, say because a host was down, is retried); a full pass again every
    /// ten minutes, as a safety net.
    pub async fn follow(self: Arc<Self>) {
        const FULL_EVERY: std::time::Duration = std::time::Duration::from_secs(600);
        let mut changes = self.directory.statement_changes();
        let mut nodes = self.directory.node_directory_changes();
        let mut last_full: Option<std::time::Instant> = None;
        loop {
            let full = last_full.is_none_or(|t| t.elapsed() >= FULL_EVERY);
            if full {
                last_full = Some(std::time::Instant::now());
            }
            self.sync(full).await;
            tokio::select! {
                r = changes.changed() => if r.is_err() { return },
                r = nodes.changed() => if r.is_err() { return },
                _ = self.leadership.notified() => {}
                _ = tokio::time::sleep(std::time::Duration::from_secs(2)) => {}
            }
        }
    }

    /// A city node's watch on the orderers of the subchains it follows: one long poll of each
    /// orderer's tip feed, waking a hibernating subchain when an orderer has blocks beyond its
    /// height. Watches start and stop as statements name orderers.
    pub async fn watch_orderers(self: Arc<Self>) {
        let mut watching: HashMap<String, watch::Sender<bool>> = HashMap::new();
        let mut changes = self.directory.statement_changes();
        loop {
            let wanted = self.directory.followed_orderers();
            watching.retain(|o, stop| {
                let keep = wanted.contains(o);
                if !keep {
                    stop.send_replace(true);
                }
                keep
            });
            for o in wanted {
                if let std::collections::hash_map::Entry::Vacant(v) = watching.entry(o) {
                    let (stop, stopped) = watch::channel(false);
                    tokio::spawn(self.clone().watch_tips(v.key().clone(), stopped));
                    v.insert(stop);
                }
            }
            // Only a statement changes which orderers are followed (looking costs a pass over
            // every statement, so not on a timer); a change at most twice a second.
            if changes.changed().await.is_err() {
                return;
            }
            tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        }
    }

    async fn watch_tips(self: Arc<Self>, orderer: String, mut stop: watch::Receiver<bool>) {
        let (mut epoch, mut after): (Option<u64>, Option<u64>) = (None, None);
        while !*stop.borrow() {
            let Some(url) = self.peers.address(&orderer) else {
                tokio::select! {
                    _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            };
            let mut path = String::from("/raft/v1/tips?wait_ms=10000");
            if let (Some(e), Some(a)) = (epoch, after) {
                path.push_str(&format!("&epoch={e}&after={a}"));
            }
            let page = tokio::select! {
                r = self.peers.get::<bsn_api::node::Tips>(&url, &path, std::time::Duration::from_secs(15)) => r,
                _ = stop.changed() => return,
            };
            match page {
                Ok(t) => {
                    for tip in &t.tips {
                        self.nudge(&tip.subchain, tip.height).await;
                    }
                    (epoch, after) = (Some(t.epoch), Some(t.seq));
                }
                Err(e) => {
                    crate::warn_every!(
                        format!("tips {orderer}"),
                        orderer = orderer,
                        error = %e,
                        "cannot follow this orderer's tip feed; retrying"
                    );
                    tokio::select! {
                        _ = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
    }

    /// An orderer has `subchain` at `height`: wake it here if it hibernates below that and this
    /// node follows it as a city node (the woken relay pulls and verifies the blocks).
    async fn nudge(&self, subchain: &str, height: u64) {
        if let Some(s) = self.get(subchain) {
            if let Ordering::Relay(r) = &*s.orderer
                && s.store.tip().last.is_none_or(|(h, _)| h < height)
            {
                r.poke();
            }
            return;
        }
        let relay = self
            .directory
            .statement(subchain)
            .is_some_and(|k| k.statement.hosted_by(&self.name) && !k.statement.orders(&self.name));
        if !relay
            || self
                .cold_tip(subchain)
                .await
                .is_some_and(|t| t.height.is_some_and(|h| h >= height))
        {
            return;
        }
        if let Err(e) = self.acquire(subchain).await {
            crate::warn_every!(
                format!("open {subchain}"),
                subchain = subchain,
                error = e,
                "cannot open subchain"
            );
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
