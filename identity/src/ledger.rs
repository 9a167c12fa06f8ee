//! The ledger's canonical encodings: signed transactions, blocks, and the Merkle tree over a
//! block's entries (RFC 6962 hashing, proofs from `tlog_tiles`).
//!
//! A **transaction** is a body (version, subchain, nonce, the creator's certificate, operations
//! on the key-value world state) followed by the creator's signature over
//! `"bsn transaction v1\n" || body` with its certificate's key. Its id is SHA-256 of the body.
//! Every length is explicit and every field has one encoding, so the bytes a client signs are the
//! bytes every node stores and every verifier re-checks; nothing is ever re-serialised.
//!
//! ```text
//! body   = u8 version (1) | u8 len, subchain id | u8 len, nonce (8-64 bytes)
//!        | u16 len, creator certificate (DER) | u16 count, ops
//! op     = u8 1 (put) | u16 len, key (UTF-8) | u32 len, value
//!        | u8 2 (delete) | u16 len, key (UTF-8)
//! signed = u32 len, body | u16 len, signature
//! ```
//!
//! A **block** is a fixed-size header and its entries (signed transactions, or for a config block
//! the CA's signed membership statement). The block hash is SHA-256 of
//! `"bsn block v1\n" || header`; the header carries the previous block's hash and the RFC 6962
//! root over the entries' SHA-256 hashes, so one hash pins the whole chain.

use ring::digest::{SHA256, digest};
use tlog_tiles::{Hash, record_hash};

use crate::membership::SubchainId;
use crate::tree::{CompactRange, MemoryTree};

/// What a transaction's signature covers before its body.
pub const TX_CONTEXT: &[u8] = b"bsn transaction v1\n";
/// What a block hash covers before the header.
pub const BLOCK_CONTEXT: &[u8] = b"bsn block v1\n";
/// Largest signed transaction, in bytes.
pub const MAX_TX_BYTES: usize = 128 * 1024;
/// Most operations in one transaction.
pub const MAX_OPS: usize = 256;
/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 512;
/// Largest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 64 * 1024;
/// Shortest and longest nonce, in bytes.
pub const NONCE_BYTES: std::ops::RangeInclusive<usize> = 8..=64;
/// Size of an encoded block header.
pub const HEADER_BYTES: usize = 1 + 1 + 8 + 32 + 32 + 8 + 8 + 4;

/// A 32-byte hash (transaction id, block hash, Merkle root).
pub type Digest32 = [u8; 32];

/// Why a transaction or block was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    /// The bytes do not follow the encoding.
    #[error("malformed: {0}")]
    Malformed(String),
    /// Bigger than the limits allow.
    #[error("too large: {0}")]
    TooLarge(String),
    /// The creator certificate's key type is not one the ledger accepts.
    #[error("unsupported creator key: {0}")]
    UnsupportedKey(String),
    /// The signature does not verify with the creator certificate's key.
    #[error("the signature does not verify with the creator certificate's key")]
    BadSignature,
}

fn malformed<T>(m: impl Into<String>) -> Result<T, LedgerError> {
    Err(LedgerError::Malformed(m.into()))
}

/// SHA-256.
pub fn sha256(data: &[u8]) -> Digest32 {
    digest(&SHA256, data).as_ref().try_into().expect("32 bytes")
}

/// One operation on the world state.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Op {
    /// Set `key` to `value`.
    Put {
        /// The key (UTF-8, 1-512 bytes).
        key: String,
        /// The value (up to 64 KiB).
        value: Vec<u8>,
    },
    /// Remove `key`.
    Delete {
        /// The key.
        key: String,
    },
}

impl Op {
    /// The key the operation touches.
    pub fn key(&self) -> &str {
        match self {
            Op::Put { key, .. } | Op::Delete { key } => key,
        }
    }
}

/// A transaction's content, before it is signed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TxBody {
    /// The subchain it is for.
    pub subchain: SubchainId,
    /// Random bytes that make the id unique.
    pub nonce: Vec<u8>,
    /// The creator's certificate (DER); its key signs the transaction.
    pub creator_cert: Vec<u8>,
    /// The operations, applied in order.
    pub ops: Vec<Op>,
}

fn check_key(key: &str) -> Result<(), LedgerError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES {
        return Err(LedgerError::TooLarge(format!("a key is 1 to {MAX_KEY_BYTES} bytes")));
    }
    if key.chars().any(char::is_control) {
        return malformed("a key may not contain control characters");
    }
    Ok(())
}

impl TxBody {
    /// The canonical encoding, after checking the limits.
    pub fn encode(&self) -> Result<Vec<u8>, LedgerError> {
        if !NONCE_BYTES.contains(&self.nonce.len()) {
            return malformed("the nonce is 8 to 64 bytes");
        }
        if self.creator_cert.is_empty() || self.creator_cert.len() > u16::MAX as usize {
            return malformed("the creator certificate is missing or too long");
        }
        if self.ops.is_empty() || self.ops.len() > MAX_OPS {
            return Err(LedgerError::TooLarge(format!(
                "a transaction has 1 to {MAX_OPS} operations"
            )));
        }
        let mut b = Vec::with_capacity(256 + self.creator_cert.len());
        b.push(1);
        b.push(self.subchain.as_str().len() as u8);
        b.extend_from_slice(self.subchain.as_str().as_bytes());
        b.push(self.nonce.len() as u8);
        b.extend_from_slice(&self.nonce);
        b.extend_from_slice(&(self.creator_cert.len() as u16).to_be_bytes());
        b.extend_from_slice(&self.creator_cert);
        b.extend_from_slice(&(self.ops.len() as u16).to_be_bytes());
        for op in &self.ops {
            check_key(op.key())?;
            match op {
                Op::Put { key, value } => {
                    if value.len() > MAX_VALUE_BYTES {
                        return Err(LedgerError::TooLarge(format!(
                            "a value is at most {MAX_VALUE_BYTES} bytes"
                        )));
                    }
                    b.push(1);
                    b.extend_from_slice(&(key.len() as u16).to_be_bytes());
                    b.extend_from_slice(key.as_bytes());
                    b.extend_from_slice(&(value.len() as u32).to_be_bytes());
                    b.extend_from_slice(value);
                }
                Op::Delete { key } => {
                    b.push(2);
                    b.extend_from_slice(&(key.len() as u16).to_be_bytes());
                    b.extend_from_slice(key.as_bytes());
                }
            }
        }
        if b.len() + 8 > MAX_TX_BYTES {
            return Err(LedgerError::TooLarge(format!(
                "a signed transaction is at most {MAX_TX_BYTES} bytes"
            )));
        }
        Ok(b)
    }

    /// Decodes a body, checking every rule [`TxBody::encode`] checks.
    pub fn decode(b: &[u8]) -> Result<Self, LedgerError> {
        let mut r = Reader(b);
        if r.u8()? != 1 {
            return malformed("unknown transaction version");
        }
        let n = r.u8()? as usize;
        let subchain = std::str::from_utf8(r.take(n)?)
            .ok()
            .and_then(|s| SubchainId::parse(s).ok())
            .ok_or_else(|| LedgerError::Malformed("the subchain id is not valid".into()))?;
        let n = r.u8()? as usize;
        let nonce = r.take(n)?.to_vec();
        let n = r.u16()? as usize;
        let creator_cert = r.take(n)?.to_vec();
        let count = r.u16()? as usize;
        let mut ops = Vec::with_capacity(count.min(MAX_OPS));
        for _ in 0..count {
            let tag = r.u8()?;
            let n = r.u16()? as usize;
            let key = std::str::from_utf8(r.take(n)?)
                .map_err(|_| LedgerError::Malformed("a key is not UTF-8".into()))?
                .to_string();
            ops.push(match tag {
                1 => {
                    let n = r.u32()? as usize;
                    Op::Put {
                        key,
                        value: r.take(n)?.to_vec(),
                    }
                }
                2 => Op::Delete { key },
                _ => return malformed("unknown operation"),
            });
        }
        if !r.0.is_empty() {
            return malformed("trailing bytes after the operations");
        }
        let body = Self {
            subchain,
            nonce,
            creator_cert,
            ops,
        };
        // One encoding only: re-encoding must give the same bytes (and checks every limit).
        if body.encode()? != b {
            return malformed("not in canonical form");
        }
        Ok(body)
    }
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], LedgerError> {
        if self.0.len() < n {
            return malformed("truncated");
        }
        let (a, b) = self.0.split_at(n);
        self.0 = b;
        Ok(a)
    }
    fn u8(&mut self) -> Result<u8, LedgerError> {
        Ok(self.take(1)?[0])
    }
    fn u16(&mut self) -> Result<u16, LedgerError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().expect("2")))
    }
    fn u32(&mut self) -> Result<u32, LedgerError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().expect("4")))
    }
    fn u64(&mut self) -> Result<u64, LedgerError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().expect("8")))
    }
    fn digest(&mut self) -> Result<Digest32, LedgerError> {
        Ok(self.take(32)?.try_into().expect("32"))
    }
}

/// The message a creator signs for a body.
pub fn signing_message(body: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(TX_CONTEXT.len() + body.len());
    m.extend_from_slice(TX_CONTEXT);
    m.extend_from_slice(body);
    m
}

/// Puts an encoded body and its signature together into a signed transaction.
pub fn assemble(body: &[u8], signature: &[u8]) -> Vec<u8> {
    let mut b = Vec::with_capacity(6 + body.len() + signature.len());
    b.extend_from_slice(&(body.len() as u32).to_be_bytes());
    b.extend_from_slice(body);
    b.extend_from_slice(&(signature.len() as u16).to_be_bytes());
    b.extend_from_slice(signature);
    b
}

/// A parsed signed transaction (its signature not yet checked: see [`SignedTx::verify`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedTx {
    /// The whole signed encoding.
    pub bytes: Vec<u8>,
    /// The decoded body.
    pub body: TxBody,
    /// The transaction id: SHA-256 of the body.
    pub id: Digest32,
    body_end: usize,
}

impl SignedTx {
    /// Parses a signed transaction.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, LedgerError> {
        if bytes.len() > MAX_TX_BYTES {
            return Err(LedgerError::TooLarge(format!(
                "a signed transaction is at most {MAX_TX_BYTES} bytes"
            )));
        }
        let (body_end, sig_range) = split_signed(&bytes)?;
        let body = TxBody::decode(&bytes[4..body_end])?;
        if sig_range.is_empty() {
            return malformed("the signature is empty");
        }
        let id = sha256(&bytes[4..body_end]);
        Ok(Self {
            bytes,
            body,
            id,
            body_end,
        })
    }

    /// The encoded body.
    pub fn body_bytes(&self) -> &[u8] {
        &self.bytes[4..self.body_end]
    }

    /// The signature.
    pub fn signature(&self) -> &[u8] {
        &self.bytes[self.body_end + 2..]
    }

    /// Checks the signature with the creator's public key.
    pub fn verify(&self, key: &CreatorKey) -> Result<(), LedgerError> {
        key.verify(&signing_message(self.body_bytes()), self.signature())
    }
}

/// Splits a signed transaction into the end of its body and its signature's range.
fn split_signed(bytes: &[u8]) -> Result<(usize, std::ops::Range<usize>), LedgerError> {
    let mut r = Reader(bytes);
    let n = r.u32()? as usize;
    r.take(n)?;
    let s = r.u16()? as usize;
    r.take(s)?;
    if !r.0.is_empty() {
        return malformed("trailing bytes after the signature");
    }
    Ok((4 + n, 4 + n + 2..4 + n + 2 + s))
}

/// The id of a signed transaction (SHA-256 of its body) without decoding the body.
pub fn tx_id(signed: &[u8]) -> Result<Digest32, LedgerError> {
    let (body_end, _) = split_signed(signed)?;
    Ok(sha256(&signed[4..body_end]))
}

/// A creator certificate's public key, ready to verify signatures.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CreatorKey {
    alg: KeyAlg,
    key: Vec<u8>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum KeyAlg {
    P256,
    P384,
    Ed25519,
    Rsa,
}

impl CreatorKey {
    /// Reads the key from a certificate's SubjectPublicKeyInfo.
    pub fn from_certificate(cert: &x509_parser::certificate::X509Certificate<'_>) -> Result<Self, LedgerError> {
        use x509_parser::oid_registry as oids;
        let spki = cert.public_key();
        let alg = &spki.algorithm.algorithm;
        let kind = if *alg == oids::OID_KEY_TYPE_EC_PUBLIC_KEY {
            let curve = spki
                .algorithm
                .parameters
                .as_ref()
                .and_then(|p| p.as_oid().ok())
                .ok_or_else(|| LedgerError::UnsupportedKey("EC key without a named curve".into()))?;
            if curve == oids::OID_EC_P256 {
                KeyAlg::P256
            } else if curve == oids::OID_NIST_EC_P384 {
                KeyAlg::P384
            } else {
                return Err(LedgerError::UnsupportedKey(format!("curve {curve}")));
            }
        } else if *alg == oids::OID_SIG_ED25519 {
            KeyAlg::Ed25519
        } else if *alg == oids::OID_PKCS1_RSAENCRYPTION {
            KeyAlg::Rsa
        } else {
            return Err(LedgerError::UnsupportedKey(format!("algorithm {alg}")));
        };
        Ok(Self {
            alg: kind,
            key: spki.subject_public_key.data.to_vec(),
        })
    }

    /// Verifies `signature` over `message`: ECDSA signatures are DER (as OpenSSL and WebCrypto
    /// after conversion make them) with SHA-256 (P-256) or SHA-384 (P-384); RSA is PKCS#1 v1.5
    /// with SHA-256.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), LedgerError> {
        use ring::signature as sig;
        let alg: &dyn sig::VerificationAlgorithm = match self.alg {
            KeyAlg::P256 => &sig::ECDSA_P256_SHA256_ASN1,
            KeyAlg::P384 => &sig::ECDSA_P384_SHA384_ASN1,
            KeyAlg::Ed25519 => &sig::ED25519,
            KeyAlg::Rsa => &sig::RSA_PKCS1_2048_8192_SHA256,
        };
        sig::UnparsedPublicKey::new(alg, &self.key)
            .verify(message, signature)
            .map_err(|_| LedgerError::BadSignature)
    }
}

/// What a block holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BlockKind {
    /// One entry: the CA's signed membership statement (JSON envelope) now in force.
    Config,
    /// Signed transactions.
    Transactions,
}

/// A block header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlockHeader {
    /// Config or transactions.
    pub kind: BlockKind,
    /// Height; the genesis block (a config block) is 0.
    pub height: u64,
    /// The previous block's hash (zeros for genesis).
    pub previous: Digest32,
    /// RFC 6962 root over the entries' hashes ([`entry_hashes`]).
    pub entries_root: Digest32,
    /// The membership revision in force for this block's transactions.
    pub membership_revision: u64,
    /// Unix milliseconds, never less than the previous block's.
    pub timestamp_ms: i64,
    /// Number of entries.
    pub entry_count: u32,
}

impl BlockHeader {
    /// The fixed-size encoding.
    pub fn encode(&self) -> [u8; HEADER_BYTES] {
        let mut b = [0u8; HEADER_BYTES];
        b[0] = 1;
        b[1] = match self.kind {
            BlockKind::Config => 0,
            BlockKind::Transactions => 1,
        };
        b[2..10].copy_from_slice(&self.height.to_be_bytes());
        b[10..42].copy_from_slice(&self.previous);
        b[42..74].copy_from_slice(&self.entries_root);
        b[74..82].copy_from_slice(&self.membership_revision.to_be_bytes());
        b[82..90].copy_from_slice(&self.timestamp_ms.to_be_bytes());
        b[90..94].copy_from_slice(&self.entry_count.to_be_bytes());
        b
    }

    /// Decodes a header.
    pub fn decode(b: &[u8]) -> Result<Self, LedgerError> {
        let mut r = Reader(b);
        if r.u8()? != 1 {
            return malformed("unknown block version");
        }
        let kind = match r.u8()? {
            0 => BlockKind::Config,
            1 => BlockKind::Transactions,
            _ => return malformed("unknown block kind"),
        };
        let h = Self {
            kind,
            height: r.u64()?,
            previous: r.digest()?,
            entries_root: r.digest()?,
            membership_revision: r.u64()?,
            timestamp_ms: r.u64()? as i64,
            entry_count: r.u32()?,
        };
        if !r.0.is_empty() {
            return malformed("trailing bytes after the header");
        }
        Ok(h)
    }

    /// The block hash.
    pub fn hash(&self) -> Digest32 {
        let mut m = Vec::with_capacity(BLOCK_CONTEXT.len() + HEADER_BYTES);
        m.extend_from_slice(BLOCK_CONTEXT);
        m.extend_from_slice(&self.encode());
        sha256(&m)
    }
}

/// A block: its header and entries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// The header.
    pub header: BlockHeader,
    /// Signed transactions, or the one statement envelope (JSON) of a config block.
    pub entries: Vec<Vec<u8>>,
}

impl Block {
    /// Builds a block, computing its entries' root.
    pub fn new(
        kind: BlockKind,
        height: u64,
        previous: Digest32,
        membership_revision: u64,
        timestamp_ms: i64,
        entries: Vec<Vec<u8>>,
    ) -> Self {
        let ids = entry_hashes(&entries);
        Self {
            header: BlockHeader {
                kind,
                height,
                previous,
                entries_root: merkle_root(&ids),
                membership_revision,
                timestamp_ms,
                entry_count: entries.len() as u32,
            },
            entries,
        }
    }

    /// Header, then each entry with a u32 length.
    pub fn encode(&self) -> Vec<u8> {
        let mut b = Vec::with_capacity(HEADER_BYTES + self.entries.iter().map(|e| e.len() + 4).sum::<usize>());
        b.extend_from_slice(&self.header.encode());
        for e in &self.entries {
            b.extend_from_slice(&(e.len() as u32).to_be_bytes());
            b.extend_from_slice(e);
        }
        b
    }

    /// Decodes a block and checks that its entries match the header's count and root.
    pub fn decode(b: &[u8]) -> Result<Self, LedgerError> {
        if b.len() < HEADER_BYTES {
            return malformed("shorter than a block header");
        }
        let header = BlockHeader::decode(&b[..HEADER_BYTES])?;
        let mut r = Reader(&b[HEADER_BYTES..]);
        let mut entries = Vec::with_capacity((header.entry_count as usize).min(100_000));
        while !r.0.is_empty() {
            let n = r.u32()? as usize;
            entries.push(r.take(n)?.to_vec());
        }
        if entries.len() != header.entry_count as usize {
            return malformed("entry count does not match the header");
        }
        if merkle_root(&entry_hashes(&entries)) != header.entries_root {
            return malformed("entries do not match the header's root");
        }
        Ok(Self { header, entries })
    }
}

/// The hashes of a block's entries: SHA-256 of each entry's bytes (a whole signed transaction,
/// signature included, so the block hash pins the signatures too; or the statement envelope).
pub fn entry_hashes(entries: &[Vec<u8>]) -> Vec<Digest32> {
    entries.iter().map(|e| sha256(e)).collect()
}

/// The RFC 6962 root over ids (each leaf is the id).
pub fn merkle_root(ids: &[Digest32]) -> Digest32 {
    let mut r = CompactRange::default();
    for id in ids {
        r.push(record_hash(id));
    }
    r.root().0
}

/// The inclusion proof of entry `index` among `ids` (RFC 6962 audit path).
pub fn prove_entry(ids: &[Digest32], index: usize) -> Result<Vec<Digest32>, LedgerError> {
    if index >= ids.len() {
        return malformed("index past the last entry");
    }
    let mut stored = MemoryTree::default();
    for id in ids {
        stored
            .push(record_hash(id))
            .map_err(|e| LedgerError::Malformed(e.to_string()))?;
    }
    let proof = tlog_tiles::prove_record(ids.len() as u64, index as u64, &stored)
        .map_err(|e| LedgerError::Malformed(e.to_string()))?;
    Ok(proof.into_iter().map(|h| h.0).collect())
}

/// Checks that `id` is entry `index` of a block of `count` entries whose root is `root`.
pub fn check_entry(proof: &[Digest32], count: u64, root: Digest32, index: u64, id: &Digest32) -> bool {
    let proof: Vec<Hash> = proof.iter().map(|h| Hash(*h)).collect();
    tlog_tiles::check_record(&proof, count, Hash(root), index, record_hash(id)).is_ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body() -> TxBody {
        TxBody {
            subchain: SubchainId::parse("demo").unwrap(),
            nonce: vec![7; 16],
            creator_cert: vec![0x30, 0x03, 1, 2, 3],
            ops: vec![
                Op::Put {
                    key: "a".into(),
                    value: b"1".to_vec(),
                },
                Op::Delete { key: "b".into() },
            ],
        }
    }

    #[test]
    fn transaction_round_trip_and_id() {
        let b = body().encode().unwrap();
        let signed = assemble(&b, b"sig");
        let tx = SignedTx::parse(signed.clone()).unwrap();
        assert_eq!(tx.body, body());
        assert_eq!(tx.signature(), b"sig");
        assert_eq!(tx.id, sha256(&b));
        assert_eq!(tx_id(&signed).unwrap(), tx.id);
    }

    #[test]
    fn every_truncation_and_extension_is_refused() {
        let signed = assemble(&body().encode().unwrap(), b"sig");
        for n in 0..signed.len() {
            assert!(SignedTx::parse(signed[..n].to_vec()).is_err(), "prefix {n}");
        }
        let mut longer = signed.clone();
        longer.push(0);
        assert!(SignedTx::parse(longer).is_err());
    }

    #[test]
    fn limits_are_enforced_both_ways() {
        let mut b = body();
        b.nonce = vec![1; 4];
        assert!(b.encode().is_err());
        let mut b = body();
        b.ops = vec![];
        assert!(b.encode().is_err());
        let mut b = body();
        b.ops = vec![Op::Put {
            key: "k".into(),
            value: vec![0; MAX_VALUE_BYTES + 1],
        }];
        assert!(matches!(b.encode(), Err(LedgerError::TooLarge(_))));
        let mut b = body();
        b.ops = vec![Op::Delete { key: "a\nb".into() }];
        assert!(b.encode().is_err());
        // A hand-made body with a bad subchain id is refused when decoded.
        let mut raw = body().encode().unwrap();
        raw[2] = b'D';
        assert!(TxBody::decode(&raw).is_err());
    }

    #[test]
    fn block_round_trip_and_tamper() {
        let txs: Vec<Vec<u8>> = (0..5u8)
            .map(|i| {
                let mut b = body();
                b.nonce = vec![i; 8];
                assemble(&b.encode().unwrap(), b"s")
            })
            .collect();
        let block = Block::new(BlockKind::Transactions, 3, [9; 32], 2, 1000, txs);
        let enc = block.encode();
        assert_eq!(Block::decode(&enc).unwrap(), block);
        let mut bad = enc.clone();
        let last = bad.len() - 1;
        bad[last] ^= 1; // a signature byte: the root covers signatures too
        assert!(Block::decode(&bad).is_err());
        let mut bad = enc.clone();
        bad[HEADER_BYTES + 20] ^= 1; // a body byte: the root no longer matches
        assert!(Block::decode(&bad).is_err());
        let h = block.header.hash();
        let mut other = block.header.clone();
        other.timestamp_ms += 1;
        assert_ne!(other.hash(), h);
    }

    #[test]
    fn entry_proofs_verify_for_every_size_and_index() {
        for n in 1..=33usize {
            let ids: Vec<Digest32> = (0..n).map(|i| sha256(&[i as u8])).collect();
            let root = merkle_root(&ids);
            for i in 0..n {
                let p = prove_entry(&ids, i).unwrap();
                assert!(check_entry(&p, n as u64, root, i as u64, &ids[i]), "n={n} i={i}");
                assert!(!check_entry(&p, n as u64, root, i as u64, &sha256(b"other")));
                if n > 1 {
                    assert!(!check_entry(&p, n as u64, root, ((i + 1) % n) as u64, &ids[i]));
                }
            }
        }
    }
}
