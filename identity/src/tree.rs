//! Building an RFC 6962 Merkle tree root leaf by leaf, with memory for only its right edge:
//! what a verifier of the issuance log needs to replay it (tree math from `tlog_tiles`); and a
//! small tree held whole in memory, to prove inclusion and consistency in it.

use tlog_tiles::{EMPTY_HASH, Hash, HashReader, node_hash};

/// A tree held whole in memory: every hash `tlog_tiles` stores, in its layout. For small trees
/// (a block's entries, test data): proofs come from `tlog_tiles::prove_record` and `prove_tree`
/// with this as the reader.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct MemoryTree {
    hashes: Vec<Hash>,
    leaves: u64,
}

impl MemoryTree {
    /// Adds the next leaf by its record hash (`tlog_tiles::record_hash` of the leaf's data).
    pub fn push(&mut self, record_hash: Hash) -> Result<(), tlog_tiles::Error> {
        let new = tlog_tiles::stored_hashes_for_record_hash(self.leaves, record_hash, self)?;
        self.hashes.extend(new);
        self.leaves += 1;
        Ok(())
    }

    /// Leaves so far.
    pub fn size(&self) -> u64 {
        self.leaves
    }
}

impl HashReader for MemoryTree {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        indexes
            .iter()
            .map(|i| {
                self.hashes
                    .get(*i as usize)
                    .copied()
                    .ok_or(tlog_tiles::Error::IndexesNotInTree)
            })
            .collect()
    }
}

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
