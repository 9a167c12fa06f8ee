//! A city node's side of a subchain ordered by the consensus ordering cluster (the statement
//! names orderers and this node is a host, not an orderer).
//!
//! The city node is not a Raft voter: adding city nodes never slows commits. It **pulls** the
//! ordered blocks from the subchain's orderers (`/raft/v1/{id}/blocks`, as Fabric's peers pull
//! from its deliver service) whenever an orderer's tip feed ([`crate::tips`], one long poll per
//! orderer for all subchains) says it has more, and every [`RECHECK`] regardless, trying each
//! orderer in turn when one fails, and verifies
//! every block before applying it: the hash chain, the entries root, and for each transaction its
//! subchain, its creator's certificate (chain to the CA's bundle, valid at the block's time), its
//! signature, the creator's writer role in the statement in force at that height, and that its
//! id is new on the chain; config blocks must carry a statement signed by the CA, newer than the
//! one in force. A block that fails is never applied: the node says why, tries another orderer,
//! and serves what it has. Submissions made at this node are checked here (as at any node) and
//! forwarded to an orderer, which forwards to the ordering leader; the answer comes after the
//! block is applied here too (waited for up to 5 s), so a read on this node right after sees the
//! write.
//!
//! Crash story: a transaction is durable once the ordering leader answers (its Raft log entry
//! is fsynced on a majority of the orderers), so a city node's chain is a verified copy that
//! can always be fetched again. Imports therefore commit without an fsync, and the chain is
//! made durable at most [`FLUSH_EVERY`] later (a timer, or the next import after that long),
//! and when the relay stops. After a crash the node's chain is its last durable commit, a
//! prefix of the ordered chain (redb never exposes a torn commit); it then pulls and verifies
//! the rest again before serving it. On one machine hosting many city nodes this keeps their
//! fsyncs from queueing behind each other on every block.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use identity::ledger::{Block, BlockKind, SignedTx};
use identity::membership::Role;
use tokio::sync::watch;

use crate::chain::{Applied, Proposal, Tip};
use crate::directory::Directory;
use crate::peers::Peers;
use crate::raft::OrderError;
use crate::store::Store;

/// Checks a transaction's creator at a block's time and, unless the third argument says this
/// node already verified these very bytes, its signature; gives the creator's id.
pub type CreatorCheck = Arc<dyn Fn(&SignedTx, i64, bool) -> Result<String, String> + Send + Sync>;

/// Longest time imported blocks stay without an fsync.
pub const FLUSH_EVERY: Duration = Duration::from_secs(1);

/// Blocks asked for at once.
const PAGE: usize = 500;

/// How often a caught-up city node asks its orderers again without news from their tip feeds
/// (which normally say at once when there is a new block).
pub const RECHECK: Duration = Duration::from_secs(30);

/// Signed transactions remembered as verified at submission, at most.
const VOUCHED: usize = 65_536;

/// A city node following a subchain's orderers.
pub struct Relay {
    subchain: String,
    store: Arc<Store>,
    keys: crate::directory::KeyRing,
    peers: Peers,
    directory: Arc<Directory>,
    creators: CreatorCheck,
    applied: watch::Sender<Option<u64>>,
    stop: watch::Sender<bool>,
    /// Where to start in the statement's orderer list: the orderer that last answered. Both
    /// following and forwarding move on from an orderer that fails, so a dead one costs one
    /// timeout, not one per submission.
    preferred: AtomicUsize,
    /// SHA-256 of whole signed transactions this node verified when they were submitted here,
    /// so their signatures are not verified a second time when their block arrives (one ECDSA
    /// verification per transaction fewer on the city node that took it). Keyed by the hash of
    /// every byte, signature and certificate included, so only the very bytes verified match.
    vouched: std::sync::Mutex<std::collections::HashSet<identity::ledger::Digest32>>,
    /// When the oldest import not yet fsynced committed (`None`: everything is durable).
    unflushed: std::sync::Mutex<Option<std::time::Instant>>,
    /// Wakes the flusher when imports start waiting for an fsync (an idle subchain has no
    /// timer running).
    flush_wanted: tokio::sync::Notify,
    /// Wakes the follower when an orderer has blocks this node lacks (its tip feed said so, or
    /// a submission forwarded from here was ordered).
    poked: tokio::sync::Notify,
}

impl Relay {
    /// Starts following the orderers of `store`'s subchain.
    pub fn start(
        store: Arc<Store>,
        keys: crate::directory::KeyRing,
        peers: Peers,
        directory: Arc<Directory>,
        creators: CreatorCheck,
        applied: watch::Sender<Option<u64>>,
    ) -> Arc<Self> {
        let r = Arc::new(Self {
            subchain: store.subchain().to_string(),
            store,
            keys,
            peers,
            directory,
            creators,
            applied,
            stop: watch::channel(false).0,
            preferred: AtomicUsize::new(0),
            vouched: Default::default(),
            unflushed: std::sync::Mutex::new(None),
            flush_wanted: tokio::sync::Notify::new(),
            poked: tokio::sync::Notify::new(),
        });
        tokio::spawn(r.clone().follow());
        tokio::spawn(r.clone().flush_in_time());
        r
    }

    /// The orderers the statement in force names, in its order.
    fn statement_orderers(&self) -> Vec<String> {
        self.directory
            .statement(&self.subchain)
            .map(|k| k.statement.orderers)
            .unwrap_or_default()
    }

    /// The orderers the statement in force names, starting with the preferred one, then each
    /// next in turn; `skip` more moves the start on. Also returns where the list starts in the
    /// statement's order.
    fn orderers(&self, skip: usize) -> (usize, Vec<String>) {
        let mut o = self.statement_orderers();
        let mut n = 0;
        if !o.is_empty() {
            n = (self.preferred.load(Ordering::Relaxed) + skip) % o.len();
            o.rotate_left(n);
        }
        (n, o)
    }

    /// Moves the preference past `name` (it failed), unless another task already moved it.
    fn prefer_next(&self, name: &str) {
        let all = self.statement_orderers();
        if let Some(i) = all.iter().position(|o| o == name) {
            let _ = self
                .preferred
                .compare_exchange(i, (i + 1) % all.len(), Ordering::Relaxed, Ordering::Relaxed);
        }
    }

    /// Remembers signed transactions whose signatures this node has just verified (submitted
    /// here, checked in full, about to be forwarded).
    pub fn vouch(&self, signed: impl IntoIterator<Item = identity::ledger::Digest32>) {
        let mut v = self.vouched.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        for h in signed {
            if v.len() >= VOUCHED {
                // Forgetting only costs a verification.
                v.clear();
            }
            v.insert(h);
        }
    }

    /// Whether this node verified these bytes at submission (forgotten once used).
    fn vouched_for(&self, signed: &[u8]) -> bool {
        let mut v = self.vouched.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        // Blocks of transactions submitted elsewhere need no hash.
        !v.is_empty() && v.remove(&identity::ledger::sha256(signed))
    }

    /// An orderer has blocks beyond this node's copy: fetch them now.
    pub fn poke(&self) {
        self.poked.notify_one();
    }

    /// Forwards a proposal to the ordering cluster and waits until its block is applied here.
    pub async fn propose(&self, p: Proposal) -> Result<Applied, OrderError> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        let mut attempt = 0usize;
        loop {
            let mut last = String::from("the statement names no orderer");
            let (start, orderers) = self.orderers(attempt);
            for (k, o) in orderers.iter().enumerate() {
                let Some(url) = self.peers.address(o) else {
                    last = format!("no URL for orderer {o} in the node directory");
                    continue;
                };
                match self.peers.propose(&url, &self.subchain, &p).await {
                    Ok(applied) => {
                        // The next proposal goes to the leader that ordered this one (no
                        // forwarding hop), or at least to the orderer that answered.
                        let answered = (start + k) % orderers.len();
                        let leader = applied
                            .leader
                            .as_ref()
                            .and_then(|l| self.statement_orderers().iter().position(|o| o == l));
                        match leader {
                            Some(i) => self.preferred.store(i, Ordering::Relaxed),
                            None if attempt > 0 || k > 0 => self.preferred.store(answered, Ordering::Relaxed),
                            None => {}
                        }
                        if let Some(h) = applied.height {
                            self.poke();
                            let mut w = self.applied.subscribe();
                            let _ =
                                tokio::time::timeout(Duration::from_secs(5), w.wait_for(|a| a.is_some_and(|a| a >= h)))
                                    .await;
                        }
                        return Ok(applied);
                    }
                    Err(e) => {
                        if matches!(e, crate::peers::PeerError::Unreachable(..)) {
                            self.prefer_next(o);
                        }
                        last = format!("{o}: {e}");
                    }
                }
            }
            attempt += 1;
            if tokio::time::Instant::now() > deadline {
                return Err(OrderError::NoLeader(last));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    /// Stops following, and makes what was imported durable.
    pub fn shutdown(&self) {
        self.stop.send_replace(true);
        tokio::task::block_in_place(|| self.flush());
    }

    /// Fsyncs the imports not yet durable, if any.
    fn flush(&self) {
        let mut u = self.unflushed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        if u.is_some() {
            match self.store.flush() {
                Ok(()) => *u = None,
                Err(e) => crate::warn_every!(
                    format!("relay flush {}", self.subchain),
                    subchain = self.subchain,
                    error = %e,
                    "cannot make the imported blocks durable; will try again"
                ),
            }
        }
    }

    /// Fsyncs imported blocks within [`FLUSH_EVERY`] when no later import did. Sleeps without a
    /// timer until an import leaves something to fsync.
    async fn flush_in_time(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        loop {
            tokio::select! {
                _ = self.flush_wanted.notified() => {}
                _ = stop.changed() => return,
            }
            tokio::select! {
                _ = tokio::time::sleep(FLUSH_EVERY) => {}
                _ = stop.changed() => return,
            }
            let due = self
                .unflushed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .is_some_and(|t| t.elapsed() >= FLUSH_EVERY);
            if due {
                tokio::task::block_in_place(|| self.flush());
            }
        }
    }

    /// Pulls and applies blocks for ever (until [`Relay::shutdown`]).
    async fn follow(self: Arc<Self>) {
        let mut stop = self.stop.subscribe();
        while !*stop.borrow() {
            let from = self.store.tip().last.map_or(0, |(h, _)| h + 1);
            let (_, orderers) = self.orderers(0);
            let Some(o) = orderers.first() else {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_millis(500)) => {}
                    _ = stop.changed() => {}
                }
                continue;
            };
            // An orderer that has not opened the subchain yet (it was just created, and the
            // orderer's statement arrives a moment after this node's) answers 404 not-hosted:
            // one warning a minute for all subchains, not one per subchain.
            let mut not_hosted = false;
            let outcome = match self.peers.address(o) {
                None => Err(format!("no URL for orderer {o} in the node directory")),
                Some(url) => {
                    let path = format!("/raft/v1/{}/blocks?from={from}&limit={PAGE}", self.subchain);
                    tokio::select! {
                        r = self.peers.get::<bsn_api::node::RawBlocks>(&url, &path, Duration::from_secs(8)) => r.map_err(|e| {
                            not_hosted = matches!(e, crate::peers::PeerError::Refused(..)) && e.gone();
                            e.to_string()
                        }),
                        _ = stop.changed() => return,
                    }
                }
            };
            let applied = outcome.and_then(|page| self.apply(&page.blocks));
            match applied {
                // A whole page: there may be more at once.
                Ok(n) if n >= PAGE => {}
                // Caught up with what the orderer had: wait for news of more (the orderers' tip
                // feed, or a submission from here), and look again now and then regardless.
                Ok(_) => {
                    tokio::select! {
                        _ = self.poked.notified() => {}
                        _ = tokio::time::sleep(RECHECK) => {}
                        _ = stop.changed() => {}
                    }
                }
                Err(e) => {
                    tracing::debug!(subchain = self.subchain, orderer = o, error = e, "cannot take blocks");
                    let key = if not_hosted {
                        format!("relay not-hosted {o}")
                    } else {
                        format!("relay {} {o}", self.subchain)
                    };
                    crate::warn_every!(
                        key,
                        subchain = self.subchain,
                        orderer = o,
                        error = e,
                        "cannot take blocks from this orderer; trying the next"
                    );
                    self.prefer_next(o);
                    tokio::select! {
                        _ = tokio::time::sleep(Duration::from_millis(200)) => {}
                        _ = stop.changed() => {}
                    }
                }
            }
        }
    }

    /// Decodes, verifies and applies a page of blocks (one write transaction); returns how many.
    fn apply(&self, page: &[String]) -> Result<usize, String> {
        if page.is_empty() {
            return Ok(0);
        }
        let blocks = page
            .iter()
            .map(|b| {
                B64.decode(b)
                    .map_err(|e| e.to_string())
                    .and_then(|raw| Block::decode(&raw).map_err(|e| format!("block: {e}")))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let check = |tip: &Tip, block: &Block| self.check(tip, block);
        tokio::task::block_in_place(|| {
            // The lock orders imports and flushes, and says whether this one must be durable.
            let mut u = self.unflushed.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            let durable = u.is_some_and(|t| t.elapsed() >= FLUSH_EVERY);
            self.store.import_checked(&self.keys.get(), &blocks, &check, durable)?;
            *u = match (durable, *u) {
                (true, _) => None,
                (false, Some(since)) => Some(since),
                (false, None) => {
                    self.flush_wanted.notify_one();
                    Some(std::time::Instant::now())
                }
            };
            Ok::<_, crate::store::StoreError>(())
        })
        .map_err(|e| e.to_string())?;
        self.applied.send_replace(self.store.tip().last.map(|(h, _)| h));
        Ok(blocks.len())
    }

    /// The checks of one transaction block against the chain before it (the store checks the
    /// link, the entries root, config statements and duplicate ids).
    fn check(&self, tip: &Tip, block: &Block) -> Result<(), String> {
        if block.header.kind != BlockKind::Transactions {
            return Ok(());
        }
        if block.header.membership_revision != tip.revision() {
            return Err(format!(
                "block {} claims membership revision {}, but {} is in force",
                block.header.height,
                block.header.membership_revision,
                tip.revision()
            ));
        }
        let at = block.header.timestamp_ms / 1000;
        for (i, entry) in block.entries.iter().enumerate() {
            let bad = |why: String| format!("block {} transaction {i}: {why}", block.header.height);
            let tx = SignedTx::parse(entry.clone()).map_err(|e| bad(e.to_string()))?;
            if tx.body.subchain.as_str() != self.subchain {
                return Err(bad(format!("for subchain {}", tx.body.subchain)));
            }
            let creator = (self.creators)(&tx, at, self.vouched_for(entry)).map_err(bad)?;
            let writer = tip
                .membership
                .as_ref()
                .and_then(|m| m.role_of(&creator))
                .is_some_and(|r| r.allows(Role::Writer));
            if !writer {
                return Err(bad(format!(
                    "{creator} was not a writer at revision {}",
                    tip.revision()
                )));
            }
        }
        Ok(())
    }
}
