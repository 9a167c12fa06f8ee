//! One redb database per subchain: blocks, the block-hash and transaction indexes, the world
//! state, and the Raft log, vote and applied position. Every write transaction commits with
//! redb's default `Durability::Immediate`, so what it wrote is on disk when `commit` returns,
//! except two that a durable Raft log makes redundant: applying committed Raft entries
//! ([`Store::apply`]) and recording the committed index ([`Store::set_meta_lazily`]).
//!
//! Crash story: a block, its indexes, its state changes and the Raft "applied" position are one
//! redb transaction, so after a crash either all of them are there or none is. A Raft log append
//! is durable before openraft is told so, and a client hears "committed" only after its entry is
//! durable in the log of a majority and its block is applied here. Applying commits without an
//! fsync (`Durability::None`): redb makes such a commit durable with the next durable commit of
//! the same file (the next log append, vote, truncation or purge), and a crash before that one
//! takes the database back to the last durable commit, with "applied" before the lost blocks;
//! openraft then re-applies them from the durable log, and block making is deterministic (the
//! proposal carries its timestamp), so the same blocks with the same hashes come back. The log
//! is purged only behind a snapshot, by a durable commit that comes after the applies it
//! covers. Blocks a city node takes from orderers ([`Store::import_checked`]) have no log
//! behind them and commit durably. This saves two of the three fsyncs of each block
//! (`bench-ledger` measures it).

use std::ops::Bound;
use std::path::Path;
use std::sync::Mutex;

use identity::ledger::{Block, Digest32};
use identity::membership::{Envelope, MembershipKeys, Statement};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use crate::chain::{Applied, Proposal, Tip, next_block};

/// A check of one block given the tip before it (see [`Store::import_checked`]).
pub type BlockCheck<'a> = dyn Fn(&Tip, &Block) -> Result<(), String> + 'a;

const BLOCKS: TableDefinition<u64, &[u8]> = TableDefinition::new("blocks");
const BLOCK_HASHES: TableDefinition<&[u8; 32], u64> = TableDefinition::new("block_hashes");
const TXS: TableDefinition<&[u8; 32], (u64, u32)> = TableDefinition::new("txs");
const STATE: TableDefinition<&str, (u64, &[u8])> = TableDefinition::new("state");
const META: TableDefinition<&str, &[u8]> = TableDefinition::new("meta");
const RAFT_LOG: TableDefinition<u64, &[u8]> = TableDefinition::new("raft_log");

/// A snapshot of a chain's transaction index ([`Store::tx_index`]).
pub struct TxIndex(redb::ReadOnlyTable<&'static [u8; 32], (u64, u32)>);

impl TxIndex {
    /// Whether the transaction is on the chain (a read error says no: apply checks again).
    pub fn contains(&self, id: &Digest32) -> bool {
        self.0.get(id).ok().flatten().is_some()
    }
}

/// A store error (I/O or a corrupt database).
#[derive(Debug, thiserror::Error)]
#[error("block store: {0}")]
pub struct StoreError(pub String);

fn err(e: impl std::fmt::Display) -> StoreError {
    StoreError(e.to_string())
}

/// A value in the world state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StateValue {
    /// The key.
    pub key: String,
    /// The value.
    pub value: Vec<u8>,
    /// Height of the block that last wrote it.
    pub height: u64,
}

type Tables<'a, 't> = (
    &'a mut redb::Table<'t, u64, &'static [u8]>,
    &'a mut redb::Table<'t, &'static [u8; 32], u64>,
    &'a mut redb::Table<'t, &'static [u8; 32], (u64, u32)>,
    &'a mut redb::Table<'t, &'static str, (u64, &'static [u8])>,
    &'a mut redb::Table<'t, &'static str, &'static [u8]>,
);

/// Writes a block and what it indexes and changes: its transactions and their state changes, or
/// for a config block the statement now in force.
fn put_block(t: Tables<'_, '_>, block: &Block, config: bool) -> Result<(), StoreError> {
    let (blocks, hashes, txs, state, m) = t;
    let h = block.header.height;
    blocks.insert(h, block.encode().as_slice()).map_err(err)?;
    hashes.insert(&block.header.hash(), h).map_err(err)?;
    if config {
        m.insert("membership", block.entries[0].as_slice()).map_err(err)?;
        return Ok(());
    }
    for (i, e) in block.entries.iter().enumerate() {
        let tx = identity::ledger::SignedTx::parse(e.clone()).map_err(err)?;
        txs.insert(&tx.id, (h, i as u32)).map_err(err)?;
        for op in &tx.body.ops {
            match op {
                identity::ledger::Op::Put { key, value } => {
                    state.insert(key.as_str(), (h, value.as_slice())).map_err(err)?;
                }
                identity::ledger::Op::Delete { key } => {
                    state.remove(key.as_str()).map_err(err)?;
                }
            }
        }
    }
    Ok(())
}

/// A subchain's database on this node.
pub struct Store {
    db: Database,
    subchain: String,
    tip: Mutex<Tip>,
    path: std::path::PathBuf,
}

impl Store {
    /// Bytes the subchain takes on disk here (its database file: blocks, state and the Raft
    /// log), what its plan's storage allowance is held against.
    pub fn bytes_on_disk(&self) -> u64 {
        std::fs::metadata(&self.path).map_or(0, |m| m.len())
    }

    /// Opens (or creates) the database at `path`, with a page cache of `cache_bytes`.
    pub fn open(path: &Path, subchain: &str, cache_bytes: usize) -> Result<Self, StoreError> {
        let db = Database::builder()
            .set_cache_size(cache_bytes)
            .create(path)
            .map_err(err)?;
        // A database made here before has every table: no write (and no fsync) to open it, so
        // waking a hibernating subchain costs no disk write.
        let complete = {
            let r = db.begin_read().map_err(err)?;
            r.list_tables().map_err(err)?.count() == 6
        };
        if !complete {
            let w = db.begin_write().map_err(err)?;
            {
                w.open_table(BLOCKS).map_err(err)?;
                w.open_table(BLOCK_HASHES).map_err(err)?;
                w.open_table(TXS).map_err(err)?;
                w.open_table(STATE).map_err(err)?;
                w.open_table(META).map_err(err)?;
                w.open_table(RAFT_LOG).map_err(err)?;
            }
            w.commit().map_err(err)?;
        }
        let store = Self {
            db,
            subchain: subchain.to_string(),
            tip: Mutex::new(Tip::default()),
            path: path.to_path_buf(),
        };
        let tip = store.read_tip()?;
        *store.tip.lock().expect("tip") = tip;
        Ok(store)
    }

    /// The tip of the database at `path`, opened and closed again without writing (for a
    /// subchain that hibernates).
    pub fn peek(path: &Path) -> Result<Tip, StoreError> {
        let db = Database::builder().set_cache_size(256 * 1024).open(path).map_err(err)?;
        Self::tip_of(&db)
    }

    fn read_tip(&self) -> Result<Tip, StoreError> {
        Self::tip_of(&self.db)
    }

    fn tip_of(db: &Database) -> Result<Tip, StoreError> {
        let r = db.begin_read().map_err(err)?;
        if r.list_tables().map_err(err)?.count() < 6 {
            return Ok(Tip::default());
        }
        let blocks = r.open_table(BLOCKS).map_err(err)?;
        let meta = r.open_table(META).map_err(err)?;
        let Some((_, last)) = blocks.last().map_err(err)? else {
            return Ok(Tip::default());
        };
        let block = Block::decode(last.value()).map_err(err)?;
        let membership = match meta.get("membership").map_err(err)? {
            Some(v) => {
                let env: Envelope = serde_json::from_slice(v.value()).map_err(err)?;
                let payload =
                    base64::Engine::decode(&base64::engine::general_purpose::STANDARD, &env.payload).map_err(err)?;
                Some(serde_json::from_slice::<Statement>(&payload).map_err(err)?)
            }
            None => None,
        };
        Ok(Tip {
            last: Some((block.header.height, block.header.hash())),
            timestamp_ms: block.header.timestamp_ms,
            membership,
        })
    }

    /// The subchain.
    pub fn subchain(&self) -> &str {
        &self.subchain
    }

    /// The end of the chain.
    pub fn tip(&self) -> Tip {
        self.tip.lock().expect("tip").clone()
    }

    /// Applies ordered proposals in one write transaction, with the Raft bookkeeping `meta`
    /// (key, value) written alongside; returns what each proposal did (`None`: not a proposal,
    /// such as a Raft membership entry). Commits without an fsync: only for entries a durable
    /// Raft log holds (see the crash story in the module docs).
    pub fn apply(
        &self,
        keys: &MembershipKeys,
        proposals: &[Option<&Proposal>],
        meta: &[(&str, Vec<u8>)],
    ) -> Result<Vec<Applied>, StoreError> {
        let mut tip = self.tip();
        let mut results = Vec::with_capacity(proposals.len());
        let (mut new_blocks, mut new_txs) = (0u64, 0u64);
        let mut w = self.db.begin_write().map_err(err)?;
        {
            let mut blocks = w.open_table(BLOCKS).map_err(err)?;
            let mut hashes = w.open_table(BLOCK_HASHES).map_err(err)?;
            let mut txs = w.open_table(TXS).map_err(err)?;
            let mut state = w.open_table(STATE).map_err(err)?;
            let mut m = w.open_table(META).map_err(err)?;
            for p in proposals {
                let Some(p) = p else {
                    results.push(Applied::default());
                    continue;
                };
                let (made, applied) = next_block(&self.subchain, keys, &tip, p, |id| {
                    txs.get(id).map(|v| v.is_some()).unwrap_or(true)
                });
                if let Some((block, statement)) = made {
                    new_blocks += 1;
                    if statement.is_none() {
                        new_txs += block.entries.len() as u64;
                    }
                    put_block(
                        (&mut blocks, &mut hashes, &mut txs, &mut state, &mut m),
                        &block,
                        statement.is_some(),
                    )?;
                    if statement.is_some() {
                        tip.membership = statement;
                    }
                    tip.last = Some((block.header.height, block.header.hash()));
                    tip.timestamp_ms = block.header.timestamp_ms;
                }
                results.push(applied);
            }
            for (k, v) in meta {
                m.insert(*k, v.as_slice()).map_err(err)?;
            }
        }
        // Not fsynced: the Raft log holds these entries durably (see the crash story above).
        w.set_durability(redb::Durability::None).map_err(err)?;
        w.commit().map_err(err)?;
        *self.tip.lock().expect("tip") = tip;
        crate::metrics::BLOCKS.add(new_blocks);
        crate::metrics::TX_COMMITTED.add(new_txs);
        Ok(results)
    }

    /// Imports blocks fetched from a peer (catching up from a snapshot): each must extend the
    /// chain here; config blocks must carry a statement that verifies with one of `keys`, for this
    /// subchain, newer than the one in force. One write transaction for the batch, with `meta`
    /// written alongside.
    pub fn import(&self, keys: &MembershipKeys, batch: &[Block], meta: &[(&str, Vec<u8>)]) -> Result<(), StoreError> {
        self.import_inner(keys, batch, meta, None, true)
    }

    /// [`Store::import`] for blocks from an orderer this node does not trust to have checked
    /// them: besides the link and config checks, every transaction id must be new on the chain,
    /// timestamps may not go back, and `check` must accept each block given the tip before it
    /// (the relay checks creators, signatures and roles there). Nothing of a batch is written
    /// unless every block passes. With `durable` false the commit is not fsynced (see
    /// [`Store::flush`] and the relay's crash story).
    pub fn import_checked(
        &self,
        keys: &MembershipKeys,
        batch: &[Block],
        check: &BlockCheck<'_>,
        durable: bool,
    ) -> Result<(), StoreError> {
        self.import_inner(keys, batch, &[], Some(check), durable)
    }

    /// Makes every earlier commit durable (an fsynced commit of the time it ran).
    pub fn flush(&self) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(err)?;
        w.open_table(META)
            .map_err(err)?
            .insert("flushed_ms", crate::clock::now_ms().to_be_bytes().as_slice())
            .map_err(err)?;
        w.commit().map_err(err)
    }

    fn import_inner(
        &self,
        keys: &MembershipKeys,
        batch: &[Block],
        meta: &[(&str, Vec<u8>)],
        check: Option<&BlockCheck<'_>>,
        durable: bool,
    ) -> Result<(), StoreError> {
        let mut tip = self.tip();
        let mut w = self.db.begin_write().map_err(err)?;
        {
            let mut blocks = w.open_table(BLOCKS).map_err(err)?;
            let mut hashes = w.open_table(BLOCK_HASHES).map_err(err)?;
            let mut txs = w.open_table(TXS).map_err(err)?;
            let mut state = w.open_table(STATE).map_err(err)?;
            let mut m = w.open_table(META).map_err(err)?;
            for block in batch {
                let (want_height, want_prev) = match tip.last {
                    None => (0, [0; 32]),
                    Some((h, hash)) => (h + 1, hash),
                };
                if block.header.height != want_height || block.header.previous != want_prev {
                    return Err(StoreError(format!(
                        "fetched block {} does not extend the chain at {want_height}",
                        block.header.height
                    )));
                }
                let config = block.header.kind == identity::ledger::BlockKind::Config;
                if let Some(check) = check {
                    if block.header.timestamp_ms < tip.timestamp_ms {
                        return Err(StoreError(format!("block {} goes back in time", block.header.height)));
                    }
                    check(&tip, block).map_err(StoreError)?;
                    if !config {
                        let mut in_block = std::collections::HashSet::new();
                        for e in &block.entries {
                            let id = identity::ledger::tx_id(e).map_err(err)?;
                            if !in_block.insert(id) || txs.get(&id).map_err(err)?.is_some() {
                                return Err(StoreError(format!(
                                    "block {} repeats transaction {}",
                                    block.header.height,
                                    hex::encode(id)
                                )));
                            }
                        }
                    }
                }
                if config {
                    if block.entries.len() != 1 {
                        return Err(StoreError(format!(
                            "config block {} must hold one statement",
                            block.header.height
                        )));
                    }
                    let env: Envelope = serde_json::from_slice(&block.entries[0]).map_err(err)?;
                    let statement = keys.verify_statement(&env).map_err(err)?;
                    if statement.subchain.as_str() != self.subchain
                        || statement.revision <= tip.revision()
                        || statement.revision != block.header.membership_revision
                    {
                        return Err(StoreError(format!(
                            "config block {} does not carry a newer statement of this subchain",
                            block.header.height
                        )));
                    }
                    tip.membership = Some(statement);
                }
                put_block((&mut blocks, &mut hashes, &mut txs, &mut state, &mut m), block, config)?;
                tip.last = Some((block.header.height, block.header.hash()));
                tip.timestamp_ms = block.header.timestamp_ms;
            }
            for (k, v) in meta {
                m.insert(*k, v.as_slice()).map_err(err)?;
            }
        }
        if !durable {
            w.set_durability(redb::Durability::None).map_err(err)?;
        }
        w.commit().map_err(err)?;
        *self.tip.lock().expect("tip") = tip;
        crate::metrics::BLOCKS.add(batch.len() as u64);
        crate::metrics::TX_COMMITTED.add(
            batch
                .iter()
                .filter(|b| b.header.kind != identity::ledger::BlockKind::Config)
                .map(|b| b.entries.len() as u64)
                .sum(),
        );
        Ok(())
    }

    /// A block's encoding by height.
    pub fn block(&self, height: u64) -> Result<Option<Vec<u8>>, StoreError> {
        let r = self.db.begin_read().map_err(err)?;
        let t = r.open_table(BLOCKS).map_err(err)?;
        Ok(t.get(height).map_err(err)?.map(|v| v.value().to_vec()))
    }

    /// Blocks from `from`, at most `limit`.
    pub fn blocks_from(&self, from: u64, limit: usize) -> Result<Vec<Vec<u8>>, StoreError> {
        let r = self.db.begin_read().map_err(err)?;
        let t = r.open_table(BLOCKS).map_err(err)?;
        let mut out = Vec::new();
        for item in t.range(from..).map_err(err)?.take(limit) {
            out.push(item.map_err(err)?.1.value().to_vec());
        }
        Ok(out)
    }

    /// A block's height by its hash.
    pub fn height_of(&self, hash: &Digest32) -> Result<Option<u64>, StoreError> {
        let r = self.db.begin_read().map_err(err)?;
        let t = r.open_table(BLOCK_HASHES).map_err(err)?;
        Ok(t.get(hash).map_err(err)?.map(|v| v.value()))
    }

    /// Where a transaction is: block height and index.
    pub fn tx_position(&self, id: &Digest32) -> Result<Option<(u64, u32)>, StoreError> {
        let r = self.db.begin_read().map_err(err)?;
        let t = r.open_table(TXS).map_err(err)?;
        Ok(t.get(id).map_err(err)?.map(|v| v.value()))
    }

    /// The transaction index as it is now, for many lookups under one read transaction.
    pub fn tx_index(&self) -> Result<TxIndex, StoreError> {
        let r = self.db.begin_read().map_err(err)?;
        Ok(TxIndex(r.open_table(TXS).map_err(err)?))
    }

    /// Number of transactions on the chain.
    pub fn tx_count(&self) -> Result<u64, StoreError> {
        let r = self.db.begin_read().map_err(err)?;
        let t = r.open_table(TXS).map_err(err)?;
        t.len().map_err(err)
    }

    /// One state value.
    pub fn get(&self, key: &str) -> Result<Option<StateValue>, StoreError> {
        let r = self.db.begin_read().map_err(err)?;
        let t = r.open_table(STATE).map_err(err)?;
        Ok(t.get(key).map_err(err)?.map(|v| {
            let (height, value) = v.value();
            StateValue {
                key: key.to_string(),
                value: value.to_vec(),
                height,
            }
        }))
    }

    /// State values with `start <= key < end` (an empty `end`: no upper bound), at most `limit`.
    pub fn range(&self, start: &str, end: &str, limit: usize) -> Result<Vec<StateValue>, StoreError> {
        let r = self.db.begin_read().map_err(err)?;
        let t = r.open_table(STATE).map_err(err)?;
        let upper = if end.is_empty() {
            Bound::Unbounded
        } else {
            Bound::Excluded(end)
        };
        let mut out = Vec::new();
        for item in t
            .range::<&str>((Bound::Included(start), upper))
            .map_err(err)?
            .take(limit)
        {
            let (k, v) = item.map_err(err)?;
            let (height, value) = v.value();
            out.push(StateValue {
                key: k.value().to_string(),
                value: value.to_vec(),
                height,
            });
        }
        Ok(out)
    }

    /// A metadata value.
    pub fn meta(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        let r = self.db.begin_read().map_err(err)?;
        let t = r.open_table(META).map_err(err)?;
        Ok(t.get(key).map_err(err)?.map(|v| v.value().to_vec()))
    }

    /// Writes a metadata value durably.
    pub fn set_meta(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(err)?;
        w.open_table(META).map_err(err)?.insert(key, value).map_err(err)?;
        w.commit().map_err(err)
    }

    /// Writes a metadata value that may be lost in a crash (made durable by the next durable
    /// commit): for what can be learnt again, such as the Raft committed index.
    pub fn set_meta_lazily(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        let mut w = self.db.begin_write().map_err(err)?;
        w.open_table(META).map_err(err)?.insert(key, value).map_err(err)?;
        w.set_durability(redb::Durability::None).map_err(err)?;
        w.commit().map_err(err)
    }

    /// Appends Raft log entries (index, bytes) durably.
    pub fn log_append(&self, entries: &[(u64, Vec<u8>)]) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(err)?;
        {
            let mut t = w.open_table(RAFT_LOG).map_err(err)?;
            for (i, e) in entries {
                t.insert(*i, e.as_slice()).map_err(err)?;
            }
        }
        w.commit().map_err(err)
    }

    /// Raft log entries in `[from, to)`.
    pub fn log_range(&self, from: u64, to: u64) -> Result<Vec<Vec<u8>>, StoreError> {
        let r = self.db.begin_read().map_err(err)?;
        let t = r.open_table(RAFT_LOG).map_err(err)?;
        let mut out = Vec::new();
        for item in t.range(from..to).map_err(err)? {
            out.push(item.map_err(err)?.1.value().to_vec());
        }
        Ok(out)
    }

    /// The last Raft log entry.
    pub fn log_last(&self) -> Result<Option<Vec<u8>>, StoreError> {
        let r = self.db.begin_read().map_err(err)?;
        let t = r.open_table(RAFT_LOG).map_err(err)?;
        Ok(t.last().map_err(err)?.map(|(_, v)| v.value().to_vec()))
    }

    /// Removes log entries with index >= `from` (conflicting entries) durably.
    pub fn log_truncate(&self, from: u64) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(err)?;
        w.open_table(RAFT_LOG)
            .map_err(err)?
            .retain_in(from.., |_, _| false)
            .map_err(err)?;
        w.commit().map_err(err)
    }

    /// Removes log entries with index <= `upto` (covered by a snapshot), recording `meta` in the
    /// same transaction.
    pub fn log_purge(&self, upto: u64, meta: (&str, &[u8])) -> Result<(), StoreError> {
        let w = self.db.begin_write().map_err(err)?;
        {
            w.open_table(RAFT_LOG)
                .map_err(err)?
                .retain_in(..=upto, |_, _| false)
                .map_err(err)?;
            w.open_table(META).map_err(err)?.insert(meta.0, meta.1).map_err(err)?;
        }
        w.commit().map_err(err)
    }
}
