//! Building an RFC 6962 Merkle tree root leaf by leaf, with memory for only its right edge:
//! what a verifier of the issuance log needs to replay it (tree math from `tlog_tiles`).

use tlog_tiles::{EMPTY_HASH, Hash, node_hash};

/// The right edge of a tree built leaf by leaf: its perfect subtrees, largest first, each with
/// its size in leaves.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct CompactRange(Vec<(u64, Hash)>);

impl CompactRange {
    /// A range restored from its subtrees (as [`CompactRange::subtrees`] returned them).
    pub fn from_subtrees(subtrees: Vec<(u64, Hash)>) -> Self {
        Self(subtrees)
    }

    /// The perfect subtrees on the right edge, largest first.
    pub fn subtrees(&self) -> &[(u64, Hash)] {
        &self.0
    }

    /// Adds the next leaf hash (`tlog_tiles::record_hash` of the leaf).
    pub fn push(&mut self, leaf_hash: Hash) {
        let mut node = (1u64, leaf_hash);
        while let Some(&(size, left)) = self.0.last() {
            if size != node.0 {
                break;
            }
            self.0.pop();
            node = (size * 2, node_hash(left, node.1));
        }
        self.0.push(node);
    }

    /// The RFC 6962 root of the leaves pushed so far.
    pub fn root(&self) -> Hash {
        let mut it = self.0.iter().rev();
        let Some(&(_, mut acc)) = it.next() else {
            return EMPTY_HASH;
        };
        for &(_, h) in it {
            acc = node_hash(h, acc);
        }
        acc
    }
}
