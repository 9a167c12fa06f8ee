//! Ordering: one openraft group per subchain (openraft pinned to `=0.9.25`), behind the
//! [`Orderer`] trait so the engine can change without touching the rest of the node.
//!
//! The Raft log and the state machine live in the subchain's redb [`Store`]: an append is one
//! durable write transaction and so is applying a run of entries (block + indexes + state +
//! applied position). A Raft snapshot is the chain itself up to the applied position (the state
//! is already in the store), so building one writes only its metadata and lets openraft purge the
//! log behind it.
//!
//! A subchain hosted on several nodes runs one group across them (`peers::GroupNetwork`); a
//! single host is a one-node group, the embedded default.
// openraft's storage traits fix the (large) error type; boxing it is not an option.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::time::Duration;

use std::collections::BTreeMap;

use openraft::error::{ClientWriteError, RaftError};
use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, LogState, OptionalSend, RaftLogReader, RaftSnapshotBuilder,
    Snapshot, SnapshotMeta, SnapshotPolicy, StorageError, StorageIOError, StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::chain::{Applied, Proposal};
use crate::group::{TypeConfig, node_id};
use crate::peers::{GroupNetwork, Peers};
use crate::store::Store;

/// Why a proposal was not ordered.
#[derive(Debug, Clone, thiserror::Error)]
pub enum OrderError {
    /// No leader right now (election in progress); try again.
    #[error("no leader for this subchain right now: {0}")]
    NoLeader(String),
    /// The group stopped (node shutting down, or a storage failure).
    #[error("ordering stopped: {0}")]
    Stopped(String),
}

/// What the rest of the node needs from an ordering service.
pub trait Orderer: Send + Sync + 'static {
    /// Orders a proposal and returns once it is applied (durable) on this node.
    fn propose(&self, p: Proposal) -> impl Future<Output = Result<Applied, OrderError>> + Send;
    /// Stops the group.
    fn shutdown(&self) -> impl Future<Output = ()> + Send;
}

/// How long a member refuses other candidates after it last heard from its leader (openraft's
/// leader lease is the longest election timeout), in milliseconds.
pub const LEASE_MS: u64 = 2000;

/// A subchain's openraft group.
pub struct RaftOrderer {
    raft: openraft::Raft<TypeConfig>,
    subchain: String,
    me: u64,
    /// This node's name.
    name: String,
    peers: Peers,
    applied: watch::Receiver<Option<u64>>,
    /// The subchain's store (to find where an earlier copy of a proposal committed).
    store: Arc<Store>,
    /// The other hosts the statement listed when this member started (names).
    others: Vec<String>,
    /// When this member last campaigned because its leader was gone (one campaign for all the
    /// writes waiting on it: each would otherwise raise the term once more).
    campaigned: std::sync::Mutex<Option<tokio::time::Instant>>,
}

/// Where this node and its peers are.
#[derive(Clone, Copy)]
pub struct Membership<'a> {
    /// This node's name.
    pub me: &'a str,
    /// This node's gateway URL.
    pub my_addr: &'a str,
    /// The hosting nodes the CA's statement lists (sorted).
    pub hosts: &'a [String],
    /// Addresses of the other nodes.
    pub peers: &'a Peers,
}

impl Membership<'_> {
    /// The hosts with a known address, as Raft members.
    fn members(&self) -> BTreeMap<u64, BasicNode> {
        self.hosts
            .iter()
            .filter_map(|h| {
                let addr = if h == self.me {
                    Some(self.my_addr.to_string())
                } else {
                    self.peers.address(h)
                };
                match addr {
                    Some(a) => Some((node_id(h), BasicNode::new(a))),
                    None => {
                        crate::warn_every!(
                            format!("no-address {h}"),
                            node = h,
                            "no address for this hosting node: it has not published its URL in the CA's node directory (ledger-node init --url), and [peers] in node.toml does not name it"
                        );
                        None
                    }
                }
            })
            .collect()
    }
}

/// The host that creates a new subchain's group, and so first leads it: the one the subchain's
/// id hashes to (SHA-256, the first 8 bytes, modulo the number of hosts), so that an ordering
/// cluster's groups are led by all its orderers, not all by the first one (whose death would
/// then cost every group an election). Every node computes the same from the same statement.
pub(crate) fn initializer<'h>(subchain: &str, hosts: &'h [String]) -> Option<&'h str> {
    if hosts.is_empty() {
        return None;
    }
    let d = identity::ledger::sha256(subchain.as_bytes());
    let n = u64::from_be_bytes(d[..8].try_into().expect("8"));
    hosts.get((n % hosts.len() as u64) as usize).map(String::as_str)
}

/// The first of a group's voters that the statement's hosts no longer list (by node id), if the
/// statement lists any host at all.
fn no_longer_listed(voters: &std::collections::BTreeSet<u64>, hosts: &[String]) -> Option<u64> {
    if hosts.is_empty() {
        return None;
    }
    let listed: std::collections::BTreeSet<u64> = hosts.iter().map(|h| node_id(h)).collect();
    voters.iter().find(|id| !listed.contains(id)).copied()
}

impl RaftOrderer {
    /// Starts (or restarts) this node's member of the subchain's group. A new group is created
    /// (initialised with every hosting node as a voter) only by one host of the CA's statement
    /// ([`initializer`]), and only when its store is empty; the others join when it reaches them.
    pub async fn start(
        store: Arc<Store>,
        keys: crate::directory::KeyRing,
        m: Membership<'_>,
        applied: watch::Sender<Option<u64>>,
        quiet: bool,
    ) -> anyhow::Result<Self> {
        let config = openraft::Config {
            cluster_name: store.subchain().to_string(),
            heartbeat_interval: 250,
            election_timeout_min: 1000,
            election_timeout_max: LEASE_MS,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(5_000),
            max_in_snapshot_log_to_keep: 1_000,
            install_snapshot_timeout: 60_000,
            ..Default::default()
        }
        .validate()?;
        let subchain = store.subchain().to_string();
        let me = node_id(m.me);
        let fresh = store.tip().last.is_none();
        let log = LogStore { store: store.clone() };
        let kept = store.clone();
        let watcher = applied.subscribe();
        let sm = SmHandle(Arc::new(StateMachine {
            store,
            keys,
            applied,
            peers: m.peers.clone(),
        }));
        let network = GroupNetwork {
            subchain: subchain.clone(),
            peers: m.peers.clone(),
        };
        let raft = openraft::Raft::new(me, Arc::new(config), network, log, sm).await?;
        if quiet {
            raft.runtime_config().tick(false);
        }
        if !fresh {
            // Until its core has started, the group's metrics are the blank ones a new member
            // starts with: a read right after waking would report no leader although the stored
            // vote names one. Starting takes microseconds.
            let _ = raft
                .wait(Some(Duration::from_secs(1)))
                .metrics(|m| m.current_term > 0, "the stored vote loaded")
                .await;
        }
        if fresh && initializer(&subchain, m.hosts) == Some(m.me) && !raft.is_initialized().await? {
            raft.initialize(m.members()).await?;
        }
        Ok(Self {
            raft,
            subchain,
            me,
            name: m.me.to_string(),
            peers: m.peers.clone(),
            applied: watcher,
            store: kept,
            others: m.hosts.iter().filter(|h| *h != m.me).cloned().collect(),
            campaigned: std::sync::Mutex::new(None),
        })
    }

    /// The openraft handle (for the peer RPC routes).
    pub fn raft(&self) -> &openraft::Raft<TypeConfig> {
        &self.raft
    }

    /// Stops (or restarts) the group's timers on this node: heartbeats, election timeouts.
    pub fn set_quiet(&self, quiet: bool) {
        self.raft.runtime_config().tick(!quiet);
    }

    /// Waits until the group has a leader this node knows of (at most `timeout`).
    pub async fn wait_for_leader(&self, timeout: Duration) {
        let _ = self
            .raft
            .wait(Some(timeout))
            .metrics(|m| m.current_leader.is_some(), "a leader")
            .await;
    }

    /// Whether this node knows a leader of the group now (itself or another).
    pub fn knows_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader.is_some()
    }

    /// Whether this node leads the group now.
    pub fn is_leader(&self) -> bool {
        self.raft.metrics().borrow().current_leader == Some(self.me)
    }

    /// The group's voters as this member knows them (Raft node ids).
    pub fn voter_ids(&self) -> Vec<u64> {
        self.raft
            .metrics()
            .borrow()
            .membership_config
            .membership()
            .voter_ids()
            .collect()
    }

    /// Moves the group's voters one step towards the CA's host list (add one, or remove one),
    /// when this node is the leader. Returns whether it changed something.
    pub async fn reconcile(&self, m: Membership<'_>) -> bool {
        if !self.is_leader() {
            return false;
        }
        let want = m.members();
        let have: std::collections::BTreeSet<u64> = self.voter_ids().into_iter().collect();
        if let Some((id, node)) = want.iter().find(|(id, _)| !have.contains(id)) {
            tracing::info!(subchain = self.subchain, node = node.addr, "adding a host to the group");
            if let Err(e) = self.raft.add_learner(*id, node.clone(), true).await {
                crate::warn_every!(format!("could not add the host as a learner {}", self.subchain), subchain = self.subchain, error = %e, "could not add the host as a learner");
                return false;
            }
            let mut voters = have.clone();
            voters.insert(*id);
            return match self.raft.change_membership(voters, false).await {
                Ok(_) => true,
                Err(e) => {
                    crate::warn_every!(format!("could not promote the host {}", self.subchain), subchain = self.subchain, error = %e, "could not promote the host");
                    false
                }
            };
        }
        // Removed only when the statement no longer lists it: a host whose URL this node has
        // not learnt yet is still a voter (a leader that joined recently, knowing fewer peers
        // than the others, used to remove it and shrink the group to a minority of live nodes).
        if let Some(gone) = no_longer_listed(&have, m.hosts) {
            tracing::info!(
                subchain = self.subchain,
                node = gone,
                "removing a node that no longer hosts the subchain"
            );
            let mut voters = have.clone();
            voters.remove(&gone);
            return match self.raft.change_membership(voters, false).await {
                Ok(_) => true,
                Err(e) => {
                    crate::warn_every!(format!("could not remove the node {}", self.subchain), subchain = self.subchain, error = %e, "could not remove the node");
                    false
                }
            };
        }
        false
    }
}

impl Orderer for RaftOrderer {
    async fn propose(&self, p: Proposal) -> Result<Applied, OrderError> {
        // While a leader is being elected (at start-up, or after the leader failed), retry for a
        // while; a follower forwards to the leader and then waits until it has applied the block
        // itself, so a read on this node right after sees the write.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(15);
        // Whether a forward was given up: its copy may have committed after all.
        let mut gave_up = false;
        let mut woke_others = false;
        loop {
            // As leader, the write waits for a majority of the group; one that no majority
            // answers (the others are down or cut off) is answered at the deadline, not never
            // (seen: a lone leader held the request until the client gave up after 60 s). It
            // stays in this leader's log and may still commit if enough members return, so
            // the answer says to look the transactions up before sending them again.
            let limit = deadline.max(tokio::time::Instant::now() + Duration::from_secs(2));
            let Ok(written) = tokio::time::timeout_at(limit, self.raft.client_write(p.clone())).await else {
                return Err(OrderError::NoLeader(
                    "no majority of the group confirmed the write within 15 s (members are down or cut off); \
                     it may still commit if they return: look its transactions up by id before sending them again"
                        .into(),
                ));
            };
            let last = match written {
                Ok(r) => {
                    let applied = Applied {
                        leader: Some(self.name.clone()),
                        ..r.data
                    };
                    return Ok(if gave_up {
                        self.settle(applied, &p).await
                    } else {
                        applied
                    });
                }
                Err(RaftError::APIError(ClientWriteError::ForwardToLeader(f))) => match f.leader_node {
                    Some(leader) => match self.forward(f.leader_id, &leader.addr, &p, deadline).await {
                        // The leader this member knows of is gone (its host refuses or does
                        // not answer, or no longer hosts the subchain): campaign now rather
                        // than after an election timeout. A group that slept holds no fresher
                        // news of its leader than its vote, and a write is waiting. The others
                        // refuse while they still hear from a live leader (the lease), so this
                        // cannot unseat one.
                        Err(e) if e.gone() && self.may_campaign() => {
                            tracing::info!(subchain = self.subchain, error = %e, "the leader is gone: campaigning");
                            let _ = self.raft.trigger().elect().await;
                            e.to_string()
                        }
                        Ok(applied) => {
                            if let Some(h) = applied.height {
                                let mut w = self.applied.clone();
                                let _ = tokio::time::timeout(
                                    Duration::from_secs(5),
                                    w.wait_for(|a| a.is_some_and(|a| a >= h)),
                                )
                                .await;
                            }
                            return Ok(if gave_up {
                                self.settle(applied, &p).await
                            } else {
                                applied
                            });
                        }
                        Err(e) => {
                            gave_up |= matches!(e, crate::peers::PeerError::Superseded(..));
                            e.to_string()
                        }
                    },
                    None => {
                        // This member knows no leader: it slept without hearing from one since
                        // the group was created (it opened the subchain after the first
                        // leader's last append), or its vote is not a committed one. The
                        // leader may be asleep too, and a sleeping leader sends nothing: wake
                        // the other members once (a woken leader restores its leadership and
                        // replicates at once), rather than wait for an election timeout that
                        // a member with no membership never has.
                        if !woke_others {
                            woke_others = true;
                            self.wake_others();
                        }
                        // Its own campaign for a leader that is gone was refused while the
                        // others honoured that leader's lease (a member woken by the vote
                        // request starts a lease on its stored vote then): campaign again as
                        // soon as the lease is over, rather than at a random election timeout,
                        // unless this member has voted for another candidate meanwhile.
                        if self.campaign_refused() && self.may_campaign() {
                            tracing::info!(subchain = self.subchain, "the lease is over: campaigning again");
                            let _ = self.raft.trigger().elect().await;
                        }
                        "no leader elected yet".to_string()
                    }
                },
                Err(RaftError::APIError(e)) => e.to_string(),
                Err(RaftError::Fatal(e)) => return Err(OrderError::Stopped(e.to_string())),
            };
            if tokio::time::Instant::now() > deadline {
                return Err(OrderError::NoLeader(last));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
    }
}

impl RaftOrderer {
    /// Whether a write that found its leader gone may campaign now: not if another write on
    /// this member did within the lease (and 100 ms).
    fn may_campaign(&self) -> bool {
        let mut last = self
            .campaigned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let now = tokio::time::Instant::now();
        if last.is_some_and(|t| now.duration_since(t) < Duration::from_millis(LEASE_MS + 100)) {
            return false;
        }
        *last = Some(now);
        true
    }

    /// Whether this member campaigned because its leader was gone and is still a candidate
    /// nobody followed: no leader known, and its vote its own, uncommitted.
    fn campaign_refused(&self) -> bool {
        let campaigned = self
            .campaigned
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .is_some();
        let m = self.raft.metrics();
        let m = m.borrow();
        campaigned
            && m.current_leader.is_none()
            && m.vote.leader_id().voted_for() == Some(self.me)
            && !m.vote.is_committed()
    }

    /// Campaigns to succeed a leader this member no longer hears from, after refusing its vote
    /// to a candidate (at `term`) whose log is shorter than this member's: that candidate
    /// cannot win, and this member would otherwise campaign at a term the candidate already
    /// holds, be refused in turn, and win only at its next timeout. It first votes for itself
    /// at the candidate's term (its own lease has expired: the caller waited for it), then
    /// campaigns at the term above, which the candidate grants.
    /// Nothing is done if this member leads the group (a leader hears no appends: it sends
    /// them), or has voted at that term or later meanwhile (it granted a better candidate, or
    /// campaigned itself).
    pub async fn succeed(&self, term: u64, last_log_id: Option<LogId<u64>>) {
        if self.is_leader() || self.raft.metrics().borrow().vote.leader_id().term >= term {
            return;
        }
        let own = openraft::raft::VoteRequest::new(Vote::new(term, self.me), last_log_id);
        let _ = self.raft.vote(own).await;
        tracing::info!(
            subchain = self.subchain,
            term,
            "a candidate with a shorter log cannot win: campaigning"
        );
        let _ = self.raft.trigger().elect().await;
    }

    /// Wakes this subchain on the group's other members (the membership's voters and the hosts
    /// the statement listed): a block read past any height, which opens the subchain there and
    /// returns nothing, and makes a leader it reaches send a heartbeat at once (`raft_blocks`).
    /// Fire and forget.
    fn wake_others(&self) {
        let (vote, last_log, mut urls) = {
            let m = self.raft.metrics();
            let m = m.borrow();
            let urls: Vec<String> = m
                .membership_config
                .membership()
                .nodes()
                .filter(|(id, _)| **id != self.me)
                .map(|(id, n)| self.peers.address_of(*id, &n.addr))
                .collect();
            (m.vote.to_string(), m.last_log_index, urls)
        };
        urls.extend(self.others.iter().filter_map(|h| self.peers.address(h)));
        urls.sort();
        urls.dedup();
        tracing::debug!(
            subchain = self.subchain,
            vote,
            last_log,
            members = urls.len(),
            "no leader known: waking the other members"
        );
        let path = format!("/raft/v1/{}/blocks?from={}&limit=1", self.subchain, u64::MAX);
        for url in urls {
            let (peers, path) = (self.peers.clone(), path.clone());
            tokio::spawn(async move {
                let _ = peers
                    .get::<bsn_api::node::RawBlocks>(&url, &path, Duration::from_secs(5))
                    .await;
            });
        }
    }

    /// Sends a proposal to the leader this member knows of. A leader that lost its majority (its
    /// certificate revoked, cut off from the others) takes the proposal and never commits it, so
    /// the forward is given up as soon as this member hears of another leader, starts an
    /// election, or the proposal's deadline passes; the caller then proposes again where the
    /// group now stands (and [`RaftOrderer::settle`] finds the first copy if it committed).
    async fn forward(
        &self,
        leader_id: Option<u64>,
        addr: &str,
        p: &Proposal,
        deadline: tokio::time::Instant,
    ) -> Result<Applied, crate::peers::PeerError> {
        let url = self.peers.address_of(leader_id.unwrap_or_default(), addr);
        let mut metrics = self.raft.metrics();
        // Given up when this member hears of another leader or starts an election; a copy
        // that commits after all is found by `settle`.
        tokio::select! {
            r = self.peers.propose(&url, &self.subchain, p) => r,
            _ = metrics.wait_for(|m| m.current_leader != leader_id) => Err(crate::peers::PeerError::Superseded(url)),
            _ = tokio::time::sleep_until(deadline) => Err(crate::peers::PeerError::Superseded(url)),
        }
    }

    /// After a given-up forward, the copy proposed again finds the transactions of the first
    /// copy on the chain if that one committed after all: each such "duplicate" is reported
    /// where it committed (read from this member's store once it has applied that far), so a
    /// client is never told that a write it made failed when it is on the chain.
    async fn settle(&self, mut applied: Applied, p: &Proposal) -> Applied {
        let Proposal::Txs { txs, .. } = p else {
            return applied;
        };
        let mut w = self.applied.clone();
        for (i, o) in applied.outcomes.iter_mut().enumerate() {
            if *o != crate::chain::Outcome::Duplicate {
                continue;
            }
            let Some(tx) = txs.get(i) else { continue };
            let end = tokio::time::Instant::now() + Duration::from_secs(5);
            loop {
                if let Ok(Some((height, index))) = self.store.tx_position(&tx.id) {
                    *o = crate::chain::Outcome::Committed { height, index };
                    break;
                }
                if !matches!(tokio::time::timeout_at(end, w.changed()).await, Ok(Ok(()))) {
                    break;
                }
            }
        }
        applied
    }
}

fn encode<T: Serialize>(v: &T) -> Vec<u8> {
    serde_json::to_vec(v).expect("serializable")
}

fn decode<T: for<'de> Deserialize<'de>>(b: &[u8]) -> Result<T, StorageError<u64>> {
    serde_json::from_slice(b).map_err(|e| StorageIOError::read(&e).into())
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    // redb writes block on fsync: keep them off the async workers' hot path.
    tokio::task::block_in_place(f)
}

/// The Raft log half of the store.
#[derive(Clone)]
pub struct LogStore {
    store: Arc<Store>,
}

impl RaftLogReader<TypeConfig> for LogStore {
    async fn try_get_log_entries<RB: RangeBounds<u64> + Clone + Debug + OptionalSend>(
        &mut self,
        range: RB,
    ) -> Result<Vec<Entry<TypeConfig>>, StorageError<u64>> {
        let from = match range.start_bound() {
            Bound::Included(i) => *i,
            Bound::Excluded(i) => i + 1,
            Bound::Unbounded => 0,
        };
        let to = match range.end_bound() {
            Bound::Included(i) => i + 1,
            Bound::Excluded(i) => *i,
            Bound::Unbounded => u64::MAX,
        };
        let raw = self
            .store
            .log_range(from, to)
            .map_err(|e| StorageIOError::read_logs(&e))?;
        raw.iter().map(|b| decode(b)).collect()
    }
}

impl RaftLogStorage<TypeConfig> for LogStore {
    type LogReader = Self;

    async fn get_log_state(&mut self) -> Result<LogState<TypeConfig>, StorageError<u64>> {
        let purged: Option<LogId<u64>> = match self.store.meta("last_purged").map_err(|e| StorageIOError::read(&e))? {
            Some(b) => decode(&b)?,
            None => None,
        };
        let last = match self.store.log_last().map_err(|e| StorageIOError::read_logs(&e))? {
            Some(b) => Some(decode::<Entry<TypeConfig>>(&b)?.log_id),
            None => purged,
        };
        Ok(LogState {
            last_purged_log_id: purged,
            last_log_id: last,
        })
    }

    async fn get_log_reader(&mut self) -> Self::LogReader {
        self.clone()
    }

    async fn save_vote(&mut self, vote: &Vote<u64>) -> Result<(), StorageError<u64>> {
        blocking(|| self.store.set_meta("vote", &encode(vote))).map_err(|e| StorageIOError::write_vote(&e).into())
    }

    async fn read_vote(&mut self) -> Result<Option<Vote<u64>>, StorageError<u64>> {
        match self.store.meta("vote").map_err(|e| StorageIOError::read_vote(&e))? {
            Some(b) => Ok(Some(decode(&b)?)),
            None => Ok(None),
        }
    }

    async fn save_committed(&mut self, committed: Option<LogId<u64>>) -> Result<(), StorageError<u64>> {
        // Lost in a crash at worst: the leader tells a follower the committed index again, and a
        // lone voter commits its whole durable log once it leads.
        blocking(|| self.store.set_meta_lazily("committed", &encode(&committed)))
            .map_err(|e| StorageIOError::write(&e).into())
    }

    async fn read_committed(&mut self) -> Result<Option<LogId<u64>>, StorageError<u64>> {
        match self.store.meta("committed").map_err(|e| StorageIOError::read(&e))? {
            Some(b) => decode(&b),
            None => Ok(None),
        }
    }

    async fn append<I>(&mut self, entries: I, callback: LogFlushed<TypeConfig>) -> Result<(), StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let rows: Vec<(u64, Vec<u8>)> = entries.into_iter().map(|e| (e.log_id.index, encode(&e))).collect();
        // Durable when log_append returns (redb Durability::Immediate); only then say so.
        let r = blocking(|| self.store.log_append(&rows));
        match r {
            Ok(()) => {
                callback.log_io_completed(Ok(()));
                Ok(())
            }
            Err(e) => {
                callback.log_io_completed(Err(std::io::Error::other(e.to_string())));
                Err(StorageIOError::write_logs(&e).into())
            }
        }
    }

    async fn truncate(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        blocking(|| self.store.log_truncate(log_id.index)).map_err(|e| StorageIOError::write_logs(&e).into())
    }

    async fn purge(&mut self, log_id: LogId<u64>) -> Result<(), StorageError<u64>> {
        let meta = encode(&Some(log_id));
        blocking(|| self.store.log_purge(log_id.index, ("last_purged", &meta)))
            .map_err(|e| StorageIOError::write_logs(&e).into())
    }
}

/// The state-machine half: the chain.
pub struct StateMachine {
    store: Arc<Store>,
    keys: crate::directory::KeyRing,
    applied: watch::Sender<Option<u64>>,
    peers: Peers,
}

#[derive(Serialize, Deserialize)]
struct SnapshotRecord {
    meta: SnapshotMeta<u64, BasicNode>,
    height: Option<u64>,
    hash: Option<String>,
}

impl StateMachine {
    fn snapshot_record(&self) -> Result<Option<SnapshotRecord>, StorageError<u64>> {
        match self
            .store
            .meta("snapshot")
            .map_err(|e| StorageIOError::read_snapshot(None, &e))?
        {
            Some(b) => Ok(Some(decode(&b)?)),
            None => Ok(None),
        }
    }
}

impl RaftSnapshotBuilder<TypeConfig> for StateMachineRef {
    async fn build_snapshot(&mut self) -> Result<Snapshot<TypeConfig>, StorageError<u64>> {
        let sm = &self.0;
        let (last_log_id, last_membership) = applied_state(&sm.store)?;
        let tip = sm.store.tip();
        let record = SnapshotRecord {
            meta: SnapshotMeta {
                last_log_id,
                last_membership,
                snapshot_id: format!(
                    "{}-{}",
                    last_log_id.map_or(0, |l| l.index),
                    tip.last.map_or(0, |(h, _)| h)
                ),
            },
            height: tip.last.map(|(h, _)| h),
            hash: tip.last.map(|(_, h)| hex::encode(h)),
        };
        let bytes = encode(&record);
        blocking(|| sm.store.set_meta("snapshot", &bytes)).map_err(|e| StorageIOError::write_snapshot(None, &e))?;
        Ok(Snapshot {
            meta: record.meta,
            snapshot: Box::new(Cursor::new(bytes)),
        })
    }
}

/// A handle to the state machine for building snapshots.
pub struct StateMachineRef(Arc<StateMachine>);

type AppliedState = (Option<LogId<u64>>, StoredMembership<u64, BasicNode>);

fn applied_state(store: &Store) -> Result<AppliedState, StorageError<u64>> {
    let applied = match store
        .meta("applied")
        .map_err(|e| StorageIOError::read_state_machine(&e))?
    {
        Some(b) => decode(&b)?,
        None => None,
    };
    let membership = match store
        .meta("raft_membership")
        .map_err(|e| StorageIOError::read_state_machine(&e))?
    {
        Some(b) => decode(&b)?,
        None => StoredMembership::default(),
    };
    Ok((applied, membership))
}

/// The state machine as openraft owns it.
pub struct SmHandle(Arc<StateMachine>);

impl RaftStateMachine<TypeConfig> for SmHandle {
    type SnapshotBuilder = StateMachineRef;

    async fn applied_state(&mut self) -> Result<AppliedState, StorageError<u64>> {
        applied_state(&self.0.store)
    }

    async fn apply<I>(&mut self, entries: I) -> Result<Vec<Applied>, StorageError<u64>>
    where
        I: IntoIterator<Item = Entry<TypeConfig>> + OptionalSend,
        I::IntoIter: OptionalSend,
    {
        let entries: Vec<Entry<TypeConfig>> = entries.into_iter().collect();
        let Some(last) = entries.last().map(|e| e.log_id) else {
            return Ok(Vec::new());
        };
        let mut membership = None;
        let proposals: Vec<Option<&Proposal>> = entries
            .iter()
            .map(|e| match &e.payload {
                EntryPayload::Normal(p) => Some(p),
                EntryPayload::Membership(m) => {
                    membership = Some(StoredMembership::new(Some(e.log_id), m.clone()));
                    None
                }
                EntryPayload::Blank => None,
            })
            .collect();
        let mut meta = vec![("applied", encode(&Some(last)))];
        if let Some(m) = membership {
            meta.push(("raft_membership", encode(&m)));
        }
        let sm = &self.0;
        let results = blocking(|| sm.store.apply(&sm.keys.get(), &proposals, &meta))
            .map_err(|e| StorageIOError::write_state_machine(&e))?;
        sm.applied.send_replace(sm.store.tip().last.map(|(h, _)| h));
        Ok(results)
    }

    async fn get_snapshot_builder(&mut self) -> Self::SnapshotBuilder {
        StateMachineRef(self.0.clone())
    }

    async fn begin_receiving_snapshot(&mut self) -> Result<Box<Cursor<Vec<u8>>>, StorageError<u64>> {
        Ok(Box::new(Cursor::new(Vec::new())))
    }

    async fn install_snapshot(
        &mut self,
        meta: &SnapshotMeta<u64, BasicNode>,
        snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        // A snapshot is "the chain up to height H, whose hash is X": fetch the missing blocks from
        // the group's other members, check each extends the chain, and check the last one is X.
        let record: SnapshotRecord = decode(snapshot.get_ref())?;
        let sm = self.0.clone();
        let fail = |m: String| -> StorageError<u64> {
            StorageIOError::write_snapshot(Some(meta.signature()), AnyError::error(m)).into()
        };
        tracing::info!(
            subchain = sm.store.subchain(),
            to = record.height,
            from = sm.store.tip().last.map(|(h, _)| h),
            "installing a snapshot: fetching the missing blocks from the group"
        );
        if let (Some(height), Some(hash)) = (record.height, record.hash.clone()) {
            let sources: Vec<String> = meta
                .last_membership
                .membership()
                .nodes()
                .map(|(id, n)| sm.peers.address_of(*id, &n.addr))
                .collect();
            let mut last_error = String::from("no member to fetch blocks from");
            'fetch: while sm.store.tip().last.is_none_or(|(h, _)| h < height) {
                let from = sm.store.tip().last.map_or(0, |(h, _)| h + 1);
                for src in &sources {
                    let page: Result<bsn_api::node::RawBlocks, _> = sm
                        .peers
                        .get(
                            src,
                            &format!("/raft/v1/{}/blocks?from={from}&limit=500", sm.store.subchain()),
                            Duration::from_secs(30),
                        )
                        .await;
                    let blocks = match page {
                        Ok(v) => v
                            .blocks
                            .iter()
                            .map(|b| {
                                base64::Engine::decode(&base64::engine::general_purpose::STANDARD, b)
                                    .map_err(|e| e.to_string())
                                    .and_then(|raw| identity::ledger::Block::decode(&raw).map_err(|e| e.to_string()))
                            })
                            .collect::<Result<Vec<_>, _>>(),
                        Err(e) => Err(e.to_string()),
                    };
                    match blocks {
                        Ok(b) if !b.is_empty() => {
                            let b: Vec<_> = b.into_iter().take_while(|b| b.header.height <= height).collect();
                            blocking(|| sm.store.import(&sm.keys.get(), &b, &[])).map_err(|e| fail(e.to_string()))?;
                            continue 'fetch;
                        }
                        Ok(_) => last_error = format!("{src} has no blocks from {from}"),
                        Err(e) => last_error = e,
                    }
                }
                return Err(fail(format!(
                    "cannot fetch blocks to install the snapshot: {last_error}"
                )));
            }
            let tip = sm.store.tip();
            if tip.last.map(|(h, x)| (h, hex::encode(x))) != Some((height, hash)) {
                return Err(fail("the fetched chain does not end in the snapshot's block".into()));
            }
        }
        let meta_rows = vec![
            ("applied", encode(&meta.last_log_id)),
            ("raft_membership", encode(&meta.last_membership)),
            ("snapshot", encode(&record)),
        ];
        blocking(|| sm.store.import(&sm.keys.get(), &[], &meta_rows)).map_err(|e| fail(e.to_string()))?;
        sm.applied.send_replace(sm.store.tip().last.map(|(h, _)| h));
        crate::metrics::SNAPSHOTS_INSTALLED.inc();
        Ok(())
    }

    async fn get_current_snapshot(&mut self) -> Result<Option<Snapshot<TypeConfig>>, StorageError<u64>> {
        Ok(self.0.snapshot_record()?.map(|r| {
            let bytes = encode(&r);
            Snapshot {
                meta: r.meta,
                snapshot: Box::new(Cursor::new(bytes)),
            }
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::{initializer, no_longer_listed, node_id};

    #[test]
    fn groups_are_created_by_every_host_in_turn_and_by_the_same_one_everywhere() {
        let hosts: Vec<String> = ["o1", "o2", "o3"].map(String::from).to_vec();
        let mut led = std::collections::BTreeMap::<&str, usize>::new();
        for i in 0..3000 {
            let id = format!("app-{i}");
            let first = initializer(&id, &hosts).unwrap();
            assert_eq!(initializer(&id, &hosts), Some(first), "deterministic");
            *led.entry(first).or_default() += 1;
        }
        // Each orderer creates (and so first leads) about a third of the groups.
        assert_eq!(led.len(), 3, "{led:?}");
        assert!(led.values().all(|n| (850..1150).contains(n)), "{led:?}");
        assert_eq!(initializer("demo", &[]), None);
        assert_eq!(initializer("demo", &hosts[..1]), Some("o1"));
    }

    #[test]
    fn only_a_voter_the_statement_no_longer_lists_is_removed() {
        let hosts: Vec<String> = ["n1", "n2", "n4"].map(String::from).to_vec();
        let voters = |names: &[&str]| names.iter().map(|n| node_id(n)).collect();
        // Every listed host is kept, whether or not this node knows its URL yet.
        assert_eq!(no_longer_listed(&voters(&["n1", "n2", "n4"]), &hosts), None);
        assert_eq!(
            no_longer_listed(&voters(&["n1", "n2", "n3", "n4"]), &hosts),
            Some(node_id("n3"))
        );
        // A statement naming nobody removes nobody.
        assert_eq!(no_longer_listed(&voters(&["n1"]), &[]), None);
    }
}
