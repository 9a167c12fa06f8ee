//! Ordering: one openraft group per subchain (openraft pinned to `=0.9.25`), behind the
//! [`Orderer`] trait so the engine can change without touching the rest of the node.
//!
//! The Raft log and the state machine live in the subchain's redb [`Store`]: an append is one
//! durable write transaction and so is applying a run of entries (block + indexes + state +
//! applied position). A Raft snapshot is the chain itself up to the applied position (the state
//! is already in the store), so building one writes only its metadata and lets openraft purge the
//! log behind it.
//!
//! This version runs single-node groups (the embedded default): [`NoPeers`] is the network of a
//! group that has no other member, and refuses to reach anyone.
// openraft's storage traits fix the (large) error type; boxing it is not an option.
#![allow(clippy::result_large_err)]

use std::fmt::Debug;
use std::io::Cursor;
use std::ops::{Bound, RangeBounds};
use std::sync::Arc;
use std::time::Duration;

use identity::membership::MembershipKey;
use openraft::error::{InstallSnapshotError, NetworkError, RPCError, RaftError};
use openraft::network::RPCOption;
use openraft::raft::{
    AppendEntriesRequest, AppendEntriesResponse, InstallSnapshotRequest, InstallSnapshotResponse, VoteRequest,
    VoteResponse,
};
use openraft::storage::{LogFlushed, RaftLogStorage, RaftStateMachine};
use openraft::{
    AnyError, BasicNode, Entry, EntryPayload, LogId, LogState, OptionalSend, RaftLogReader, RaftNetwork,
    RaftNetworkFactory, RaftSnapshotBuilder, Snapshot, SnapshotMeta, SnapshotPolicy, StorageError, StorageIOError,
    StoredMembership, Vote,
};
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use crate::chain::{Applied, Proposal};
use crate::store::Store;

openraft::declare_raft_types!(
    /// The Raft types of a subchain's group.
    pub TypeConfig:
        D = Proposal,
        R = Applied,
        NodeId = u64,
        Node = BasicNode,
);

/// A Raft node id from a node's identity id (the first 8 bytes of its SHA-256).
pub fn node_id(name: &str) -> u64 {
    let d = identity::ledger::sha256(name.as_bytes());
    u64::from_be_bytes(d[..8].try_into().expect("8"))
}

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

/// A subchain's openraft group.
pub struct RaftOrderer {
    raft: openraft::Raft<TypeConfig>,
}

impl RaftOrderer {
    /// Starts (or restarts) the single-node group of `store` with this node as its member.
    pub async fn start(
        store: Arc<Store>,
        key: MembershipKey,
        me: u64,
        addr: &str,
        applied: watch::Sender<Option<u64>>,
    ) -> anyhow::Result<Self> {
        let config = openraft::Config {
            cluster_name: store.subchain().to_string(),
            heartbeat_interval: 250,
            election_timeout_min: 300,
            election_timeout_max: 600,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(5_000),
            max_in_snapshot_log_to_keep: 1_000,
            ..Default::default()
        }
        .validate()?;
        let log = LogStore { store: store.clone() };
        let sm = SmHandle(Arc::new(StateMachine { store, key, applied }));
        let raft = openraft::Raft::new(me, Arc::new(config), NoPeers, log, sm).await?;
        if !raft.is_initialized().await? {
            let mut members = std::collections::BTreeMap::new();
            members.insert(me, BasicNode::new(addr));
            raft.initialize(members).await?;
        }
        Ok(Self { raft })
    }
}

impl Orderer for RaftOrderer {
    async fn propose(&self, p: Proposal) -> Result<Applied, OrderError> {
        // Right after start-up the group may still be electing itself: retry for a few seconds.
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            match self.raft.client_write(p.clone()).await {
                Ok(r) => return Ok(r.data),
                Err(RaftError::APIError(e)) => {
                    if tokio::time::Instant::now() > deadline {
                        return Err(OrderError::NoLeader(e.to_string()));
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
                Err(RaftError::Fatal(e)) => return Err(OrderError::Stopped(e.to_string())),
            }
        }
    }

    async fn shutdown(&self) {
        let _ = self.raft.shutdown().await;
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
        blocking(|| self.store.set_meta("committed", &encode(&committed))).map_err(|e| StorageIOError::write(&e).into())
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
    key: MembershipKey,
    applied: watch::Sender<Option<u64>>,
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
        let results = blocking(|| sm.store.apply(&sm.key, &proposals, &meta))
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
        _snapshot: Box<Cursor<Vec<u8>>>,
    ) -> Result<(), StorageError<u64>> {
        // Only a follower far behind its leader receives a snapshot; a single-node group never
        // does. Catching up by fetching blocks belongs with multi-node groups.
        Err(StorageIOError::write_snapshot(
            Some(meta.signature()),
            AnyError::error("this node runs single-node groups: installing a snapshot is not supported"),
        )
        .into())
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

/// The network of a group with no other member: every call fails as unreachable.
pub struct NoPeers;

/// A connection to nobody.
pub struct NoPeer;

impl RaftNetworkFactory<TypeConfig> for NoPeers {
    type Network = NoPeer;

    async fn new_client(&mut self, _target: u64, _node: &BasicNode) -> NoPeer {
        NoPeer
    }
}

fn unreachable<E: std::error::Error>() -> RPCError<u64, BasicNode, E> {
    RPCError::Network(NetworkError::new(&AnyError::error(
        "single-node group: there is no other node to reach",
    )))
}

impl RaftNetwork<TypeConfig> for NoPeer {
    async fn append_entries(
        &mut self,
        _rpc: AppendEntriesRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<AppendEntriesResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(unreachable())
    }

    async fn install_snapshot(
        &mut self,
        _rpc: InstallSnapshotRequest<TypeConfig>,
        _option: RPCOption,
    ) -> Result<InstallSnapshotResponse<u64>, RPCError<u64, BasicNode, RaftError<u64, InstallSnapshotError>>> {
        Err(unreachable())
    }

    async fn vote(
        &mut self,
        _rpc: VoteRequest<u64>,
        _option: RPCOption,
    ) -> Result<VoteResponse<u64>, RPCError<u64, BasicNode, RaftError<u64>>> {
        Err(unreachable())
    }
}
