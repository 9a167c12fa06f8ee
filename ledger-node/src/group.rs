//! The Raft group's types, shared by the ordering ([`crate::raft`]) and the node-to-node
//! transport ([`crate::peers`]): openraft's type configuration of a subchain's group, and the
//! Raft node id of a city node.

use std::io::Cursor;

use openraft::BasicNode;

use crate::chain::{Applied, Proposal};

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
