//! A city node's gateway for one participant, with everything the node says that can be checked
//! checked before it is returned: the same surface as the Python and Node.js SDKs (`sdk/`), and
//! what `bsn tx` and `bsn query` use.
//!
//! Features: sign and submit transactions and wait for the commit; read keys, ranges and chain
//! info; fetch a transaction with its inclusion proof verified against its block header; fetch
//! blocks decoded from their encoding and chained by hash; follow new blocks as they commit,
//! resuming after a lost connection or a node restart.
//! Non-features: no retries of writes (a failed submission is reported, never resent).

use std::path::Path;
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use identity::ledger::{Block, BlockHeader, Op, check_entry, sha256};
use identity::membership::SubchainId;

use crate::client::{Api, ClientError, EventStream};
use crate::node::{
    BlockPage, BlockView, Committed, StatePage, StateValue, SubchainInfo, SubmitRequest, TxProof, TxResult, TxView,
};
use crate::tx::TxSigner;

fn verification(m: impl Into<String>) -> ClientError {
    ClientError::Verification(m.into())
}

/// A transaction whose inclusion in its block was verified.
#[derive(Debug, Clone)]
pub struct VerifiedTx {
    /// The transaction as the node decoded it (its `signed` bytes are what was verified).
    pub transaction: TxView,
    /// Block height.
    pub height: u64,
    /// Index in the block.
    pub index: u32,
    /// The block's header, whose hash is the block hash.
    pub header: BlockHeader,
}

/// A block decoded from its encoding and checked against its stated hash and height.
#[derive(Debug, Clone)]
pub struct VerifiedBlock {
    /// The node's view (with decoded entries when the node sent them).
    pub view: BlockView,
    /// The decoded block.
    pub block: Block,
}

fn verify_block(view: BlockView) -> Result<VerifiedBlock, ClientError> {
    let raw = B64
        .decode(&view.encoded)
        .map_err(|_| verification("the node sent a block that is not base64"))?;
    let block = Block::decode(&raw).map_err(|e| verification(format!("the node sent a bad block: {e}")))?;
    if hex::encode(block.header.hash()) != view.hash || block.header.height != view.height {
        return Err(verification("a block does not match its stated hash or height"));
    }
    Ok(VerifiedBlock { view, block })
}

/// A participant's connection to one city node.
pub struct Gateway {
    api: Api,
    signer: TxSigner,
}

impl Gateway {
    /// A gateway client with the participant's certificate and key files (one file holding both
    /// works too) and the CA's trust bundle.
    pub fn from_files(url: &str, bundle: &Path, cert: &Path, key: &Path) -> Result<Self, ClientError> {
        Ok(Self {
            api: Api::from_files(url, bundle, Some((cert, key)))?,
            signer: TxSigner::from_files(cert, key)?,
        })
    }

    /// The underlying API client (for routes this type does not wrap).
    pub fn api(&self) -> &Api {
        &self.api
    }

    /// The signer of this participant's transactions.
    pub fn signer(&self) -> &TxSigner {
        &self.signer
    }

    fn path(subchain: &SubchainId, rest: &str) -> String {
        format!("/api/v1/subchains/{subchain}{rest}")
    }

    /// The chain's height, tip, membership revision and the caller's role.
    pub async fn info(&self, subchain: &SubchainId) -> Result<SubchainInfo, ClientError> {
        self.api.get_as(&Self::path(subchain, ""), &[]).await
    }

    /// Signs one transaction with this participant's key, submits it and waits for the commit;
    /// returns its id and where it committed.
    pub async fn submit(&self, subchain: &SubchainId, ops: Vec<Op>) -> Result<(String, TxResult), ClientError> {
        let signed = self.signer.sign(subchain, ops)?;
        let mut results = self.submit_signed(subchain, &[signed.bytes]).await?;
        let r = results
            .pop()
            .ok_or_else(|| verification("the node answered with no result"))?;
        if r.id != signed.id {
            return Err(verification("the node answered for another transaction"));
        }
        Ok((signed.id, r))
    }

    /// Submits signed transactions (up to 1,000; all commit or none do).
    pub async fn submit_signed(&self, subchain: &SubchainId, signed: &[Vec<u8>]) -> Result<Vec<TxResult>, ClientError> {
        let body = SubmitRequest {
            transactions: signed.iter().map(|s| B64.encode(s)).collect(),
        };
        let v: Committed = self.api.post_as(&Self::path(subchain, "/transactions"), &body).await?;
        if v.results.len() != signed.len() {
            return Err(verification("the node answered for another number of transactions"));
        }
        Ok(v.results)
    }

    /// A key's value (a `not-found` problem when it is not set).
    pub async fn get(&self, subchain: &SubchainId, key: &str) -> Result<StateValue, ClientError> {
        let enc: Vec<String> = key.split('/').map(urlencode).collect();
        self.api
            .get_as(&Self::path(subchain, &format!("/state/{}", enc.join("/"))), &[])
            .await
    }

    /// Keys from `start` (inclusive) to `end` (exclusive, empty for no end), in order.
    pub async fn range(
        &self,
        subchain: &SubchainId,
        start: &str,
        end: &str,
        limit: usize,
    ) -> Result<StatePage, ClientError> {
        self.api
            .get_as(
                &Self::path(subchain, "/state"),
                &[
                    ("start", start.to_string()),
                    ("end", end.to_string()),
                    ("limit", limit.to_string()),
                ],
            )
            .await
    }

    /// A committed transaction with its inclusion proof checked against its block header.
    pub async fn transaction(&self, subchain: &SubchainId, id: &str) -> Result<VerifiedTx, ClientError> {
        let v: TxProof = self
            .api
            .get_as(&Self::path(subchain, &format!("/transactions/{}", urlencode(id))), &[])
            .await?;
        let header = BlockHeader::decode(
            &B64.decode(&v.header)
                .map_err(|_| verification("the block header is not base64"))?,
        )
        .map_err(|e| verification(e.to_string()))?;
        let signed = B64
            .decode(&v.transaction.signed)
            .map_err(|_| verification("the transaction is not base64"))?;
        let actual = identity::ledger::tx_id(&signed).map_err(|e| verification(e.to_string()))?;
        if hex::encode(actual) != id {
            return Err(verification("the node sent another transaction than the one asked for"));
        }
        let proof = v
            .proof
            .iter()
            .map(|h| {
                hex::decode(h)
                    .ok()
                    .and_then(|b| b.try_into().ok())
                    .ok_or_else(|| verification("a proof hash is not 32 bytes of hex"))
            })
            .collect::<Result<Vec<[u8; 32]>, _>>()?;
        if hex::encode(header.hash()) != v.block_hash {
            return Err(verification("the block header does not hash to the block hash"));
        }
        if !check_entry(
            &proof,
            u64::from(header.entry_count),
            header.entries_root,
            u64::from(v.index),
            &sha256(&signed),
        ) {
            return Err(verification("the inclusion proof does not verify"));
        }
        Ok(VerifiedTx {
            transaction: v.transaction,
            height: v.height,
            index: v.index,
            header,
        })
    }

    /// One block by height or by hash, decoded and checked against its stated hash.
    pub async fn block(&self, subchain: &SubchainId, at: BlockAt<'_>) -> Result<VerifiedBlock, ClientError> {
        let path = match at {
            BlockAt::Height(h) => Self::path(subchain, &format!("/blocks/{h}")),
            BlockAt::Hash(h) => Self::path(subchain, &format!("/blocks/by-hash/{}", urlencode(h))),
        };
        verify_block(self.api.get_as(&path, &[]).await?)
    }

    /// Up to `limit` blocks from `from`, each checked to extend the one before it (and the
    /// first to extend `previous`, when given).
    pub async fn blocks(
        &self,
        subchain: &SubchainId,
        from: u64,
        limit: usize,
        previous: Option<[u8; 32]>,
    ) -> Result<Vec<VerifiedBlock>, ClientError> {
        let page: BlockPage = self
            .api
            .get_as(
                &Self::path(subchain, "/blocks"),
                &[("from", from.to_string()), ("limit", limit.to_string())],
            )
            .await?;
        let mut previous = previous;
        let mut out = Vec::with_capacity(page.blocks.len());
        for v in page.blocks {
            let b = verify_block(v)?;
            chain(&mut previous, &b.block)?;
            out.push(b);
        }
        Ok(out)
    }

    /// New blocks from `from` as they commit, each checked to extend the one before it; the
    /// stream resumes by itself after a lost connection or a node restart, and gives up after
    /// `give_up_after` without an answer.
    pub fn follow(&self, subchain: &SubchainId, from: u64, give_up_after: Duration) -> BlockStream<'_> {
        BlockStream {
            gateway: self,
            path: Self::path(subchain, "/blocks/stream"),
            next: from,
            previous: None,
            events: None,
            give_up_after,
        }
    }
}

/// Which block [`Gateway::block`] fetches.
#[derive(Debug, Clone, Copy)]
pub enum BlockAt<'a> {
    /// By height.
    Height(u64),
    /// By hash (hex).
    Hash(&'a str),
}

fn chain(previous: &mut Option<[u8; 32]>, b: &Block) -> Result<(), ClientError> {
    if let Some(p) = previous
        && b.header.previous != *p
    {
        return Err(verification(format!(
            "block {} does not extend the block before it",
            b.header.height
        )));
    }
    *previous = Some(b.header.hash());
    Ok(())
}

/// Blocks as they commit ([`Gateway::follow`]).
pub struct BlockStream<'a> {
    gateway: &'a Gateway,
    path: String,
    next: u64,
    previous: Option<[u8; 32]>,
    events: Option<EventStream>,
    give_up_after: Duration,
}

impl BlockStream<'_> {
    /// The next block, verified; waits for it to commit.
    pub async fn next(&mut self) -> Result<VerifiedBlock, ClientError> {
        let mut down_since: Option<Instant> = None;
        loop {
            if self.events.is_none() {
                match self
                    .gateway
                    .api
                    .events(&self.path, &[("from", self.next.to_string())])
                    .await
                {
                    Ok(es) => {
                        self.events = Some(es);
                        down_since = None;
                    }
                    Err(e @ ClientError::Transport { .. }) => {
                        let since = *down_since.get_or_insert_with(Instant::now);
                        if since.elapsed() > self.give_up_after {
                            return Err(e);
                        }
                        tokio::time::sleep(Duration::from_millis(500)).await;
                        continue;
                    }
                    Err(e) => return Err(e),
                }
            }
            let Some(events) = self.events.as_mut() else { continue };
            match events.next().await {
                Ok(Some(ev)) if ev.event == "block" => {
                    let view: BlockView =
                        serde_json::from_str(&ev.data).map_err(|e| verification(format!("a block event: {e}")))?;
                    let b = verify_block(view)?;
                    if b.block.header.height != self.next {
                        return Err(verification(format!(
                            "expected block {}, got {}",
                            self.next, b.block.header.height
                        )));
                    }
                    chain(&mut self.previous, &b.block)?;
                    self.next += 1;
                    return Ok(b);
                }
                Ok(Some(_)) => {}
                // The node closed the stream or the connection broke: resume where it stopped.
                Ok(None) | Err(ClientError::Transport { .. }) => {
                    self.events = None;
                    let since = *down_since.get_or_insert_with(Instant::now);
                    if since.elapsed() > self.give_up_after {
                        return Err(ClientError::Transport {
                            url: self.path.clone(),
                            reason: format!("no block for {:?}", self.give_up_after),
                        });
                    }
                    // A pause before asking again, so a node that keeps closing the stream is
                    // not asked in a tight loop.
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use identity::ledger::BlockKind;

    fn view(block: &Block) -> BlockView {
        let h = &block.header;
        BlockView {
            height: h.height,
            hash: hex::encode(h.hash()),
            previous: hex::encode(h.previous),
            entries_root: hex::encode(h.entries_root),
            kind: crate::node::BlockKind::Transactions,
            membership_revision: h.membership_revision,
            timestamp_ms: h.timestamp_ms,
            entry_count: h.entry_count,
            encoded: B64.encode(block.encode()),
            entries: None,
        }
    }

    #[test]
    fn blocks_are_checked_against_their_encoding_and_chained() {
        let b0 = Block::new(BlockKind::Transactions, 0, [0; 32], 1, 1, vec![b"a".to_vec()]);
        let b1 = Block::new(BlockKind::Transactions, 1, b0.header.hash(), 1, 2, vec![b"b".to_vec()]);
        let stranger = Block::new(BlockKind::Transactions, 1, [9; 32], 1, 2, vec![b"c".to_vec()]);
        assert!(verify_block(view(&b0)).is_ok());
        let mut lying = view(&b1);
        lying.hash = hex::encode([1u8; 32]);
        assert!(matches!(verify_block(lying), Err(ClientError::Verification(_))));
        let mut garbled = view(&b1);
        garbled.encoded = "not base64!".into();
        assert!(matches!(verify_block(garbled), Err(ClientError::Verification(_))));
        let mut previous = None;
        chain(&mut previous, &b0).unwrap();
        chain(&mut previous, &b1).unwrap();
        let mut previous = Some(b0.header.hash());
        assert!(matches!(
            chain(&mut previous, &stranger),
            Err(ClientError::Verification(_))
        ));
    }
}
