//! Request and response bodies of a ledger node's gateway (`/api/v1/subchains/...`).
//!
//! The node serialises these types and the `bsn` CLI, the tests and the benchmarks read them;
//! the node's OpenAPI document takes its schemas from them ([`crate::contract`]). Hashes and
//! transaction ids are lowercase hex, bytes are standard base64, times are Unix milliseconds.

use identity::membership::{Role, SubchainId};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// `GET /api/v1/subchains`: the subchains this node hosts that the caller is a member of.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostedSubchains {
    /// One per subchain.
    pub subchains: Vec<HostedSubchain>,
}

/// One subchain in [`HostedSubchains`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct HostedSubchain {
    /// The subchain.
    pub id: SubchainId,
    /// The caller's role on it.
    pub role: Role,
    /// Height of its last block on this node (none before the first).
    pub height: Option<u64>,
}

/// `GET /api/v1/subchains/{id}`: the subchain as this node sees it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubchainInfo {
    /// The subchain.
    pub id: SubchainId,
    /// This node's identity id.
    pub node: String,
    /// The node id of the current Raft leader, if one is known.
    pub leader: Option<String>,
    /// Height of the last block (none before the first).
    pub height: Option<u64>,
    /// Hash of the last block, hex.
    pub tip: Option<String>,
    /// Timestamp of the last block, Unix milliseconds.
    pub timestamp_ms: Option<i64>,
    /// Membership revision in force at the tip.
    pub membership_revision: Option<u64>,
    /// Transactions committed.
    pub transactions: u64,
    /// The caller's role.
    pub role: Option<Role>,
    /// The resource plan in force (its statement's), if it has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub plan: Option<identity::plan::Plan>,
    /// Bytes the subchain takes on this node's disk, held against the plan's storage allowance.
    #[serde(default)]
    pub stored_bytes: u64,
    /// The ordering group's voters as this node knows them (names, sorted), when this node is
    /// one of them; a city node that follows the ordering cluster lists none. They follow the
    /// statement's hosts (or orderers) one change at a time, led by the group's leader.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub voters: Vec<String>,
}

/// `POST /api/v1/subchains/{id}/transactions`: a batch of signed transactions.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubmitRequest {
    /// 1 to 1000 signed transactions, base64.
    pub transactions: Vec<String>,
}

/// The answer to a submission in which every transaction committed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Committed {
    /// One per transaction, in the order sent.
    pub results: Vec<TxResult>,
}

/// What became of one submitted transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TxResult {
    /// Transaction id, hex.
    pub id: String,
    /// Block it committed in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub height: Option<u64>,
    /// Its index in that block.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub index: Option<u32>,
    /// Why it did not commit (only in a `not-all-committed` problem's `results`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub refused: Option<String>,
}

/// One operation of a transaction.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum TxOp {
    /// Sets a key.
    Put {
        /// The key.
        put: String,
        /// The value, base64.
        value: String,
    },
    /// Removes a key.
    Delete {
        /// The key.
        delete: String,
    },
}

/// A committed transaction, decoded.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TxView {
    /// Transaction id, hex.
    pub id: String,
    /// Its creator's identity id (read from the creator certificate).
    pub creator: String,
    /// Its operations.
    pub ops: Vec<TxOp>,
    /// The signed transaction as submitted, base64.
    pub signed: String,
}

/// A block entry: a decoded transaction, or for a configuration block the membership statement
/// envelope it applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum BlockEntry {
    /// A transaction.
    Transaction(TxView),
    /// A configuration entry (a signed membership statement envelope).
    Config(serde_json::Value),
}

/// `GET /api/v1/subchains/{id}/transactions/{tx}`: a transaction with the proof that it is in
/// its block.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TxProof {
    /// The transaction.
    pub transaction: TxView,
    /// Block height.
    pub height: u64,
    /// Index in the block.
    pub index: u32,
    /// Hash of the block, hex.
    pub block_hash: String,
    /// The encoded block header, base64 (its hash is `block_hash`).
    pub header: String,
    /// Inclusion proof of the entry under the header's `entries_root`, hex hashes.
    pub proof: Vec<String>,
}

/// A key's value: `GET /api/v1/subchains/{id}/state/{key}`, and the items of a range.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StateValue {
    /// The key.
    pub key: String,
    /// The value, base64.
    pub value: String,
    /// The value as text, when it is UTF-8.
    pub text: Option<String>,
    /// Height of the block that last wrote it.
    pub height: u64,
}

/// `GET /api/v1/subchains/{id}/state?start=&end=&limit=`: keys in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct StatePage {
    /// Up to `limit` values.
    pub items: Vec<StateValue>,
    /// Whether more keys follow in the range.
    pub more: bool,
}

/// What a block carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum BlockKind {
    /// A membership change.
    Config,
    /// Transactions.
    Transactions,
}

/// A block: `GET .../blocks/{height}`, `.../blocks/by-hash/{hash}` and the block stream's
/// events carry `entries`; pages of blocks do not.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockView {
    /// Height.
    pub height: u64,
    /// Hash of the header, hex.
    pub hash: String,
    /// Hash of the previous block's header, hex.
    pub previous: String,
    /// Merkle root of the entries, hex.
    pub entries_root: String,
    /// What it carries.
    pub kind: BlockKind,
    /// Membership revision in force.
    pub membership_revision: u64,
    /// Timestamp, Unix milliseconds.
    pub timestamp_ms: i64,
    /// Number of entries.
    pub entry_count: u32,
    /// The whole block as stored, base64.
    pub encoded: String,
    /// The entries, decoded.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entries: Option<Vec<BlockEntry>>,
}

/// `GET /api/v1/subchains/{id}/blocks?from=&limit=`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlockPage {
    /// Blocks from `from`, without entries.
    pub blocks: Vec<BlockView>,
}

/// `GET /api/v1/subchains/{id}/state` query.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RangeQuery {
    /// First key (inclusive); empty for the first key.
    #[serde(default)]
    pub start: String,
    /// Key to stop before; empty for no end.
    #[serde(default)]
    pub end: String,
    /// At most this many values, 1 to 1000 (100 if absent).
    pub limit: Option<usize>,
}

/// Query of the block page, the block stream and the node-to-node block fetch.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct BlocksQuery {
    /// First height.
    #[serde(default)]
    pub from: u64,
    /// At most this many blocks, 1 to 1000.
    pub limit: Option<usize>,
    /// When there is no block at `from` yet, wait up to this many milliseconds (at most 10,000)
    /// for one before answering (a city node following an orderer long-polls).
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// `GET /raft/v1/tips` query: where a city node's last look at an orderer's tips ended.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TipsQuery {
    /// The `epoch` of the last answer (absent: first call); another epoch means the orderer
    /// restarted and the answer lists every height it knows.
    #[serde(default)]
    pub epoch: Option<u64>,
    /// The `seq` of the last answer.
    #[serde(default)]
    pub after: Option<u64>,
    /// How long to wait for a change when there is none, ms (at most 10,000).
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// One subchain's height on the answering node.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SubchainTip {
    /// The subchain.
    pub subchain: String,
    /// The height of its last block there.
    pub height: u64,
}

/// `GET /raft/v1/tips`: the heights subchains reached on an orderer since `after`, only for
/// subchains the caller hosts: one long poll per orderer tells a city node which of its
/// hibernating subchains have new blocks to pull.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Tips {
    /// Changes with every start of the answering node.
    pub epoch: u64,
    /// Where this answer ends (the next call's `after`).
    pub seq: u64,
    /// True when `tips` is every height the node knows (first call, a restart, or a caller too
    /// far behind), not only the changes.
    pub reset: bool,
    /// The heights, each subchain at most once.
    pub tips: Vec<SubchainTip>,
}

/// `GET /raft/v1/{id}/blocks`: raw blocks for a host catching up.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct RawBlocks {
    /// Encoded blocks from `from`, base64.
    pub blocks: Vec<String>,
}
