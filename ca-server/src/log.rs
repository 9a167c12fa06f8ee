//! The issuance log: an RFC 6962 Merkle tree of issuance and revocation events, kept in the CA's
//! database, read as C2SP tlog-tiles, with C2SP tlog-checkpoint signed notes (Ed25519).
//!
//! The tree math (stored hashes, tree hashes, proofs, tile contents) is `tlog_tiles`, the port of
//! Go's sumdb/tlog; notes are `signed_note`. This module stores and fetches hashes, sequences
//! leaves inside the caller's transaction (the same one that stores the certificate), signs
//! checkpoints, and re-verifies the whole log at start-up.
//!
//! Sequencing: [`append`] first updates the single `log_state` row, which locks it (PostgreSQL) or
//! runs under SQLite's one writer; so at most one transaction at a time extends the tree, whichever
//! replica runs it, and every checkpoint signed extends the previous one.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use identity::tree::CompactRange;
use ring::signature::Ed25519KeyPair;
use sqlx::{Any, AnyConnection, Row, Transaction};
use tlog_tiles::{Checkpoint, EMPTY_HASH, Hash, HashReader, Tile, record_hash, stored_hash_index};

use crate::db::{Backend, placeholders};

/// Tile height of C2SP tlog-tiles.
pub const TILE_HEIGHT: u8 = 8;

/// Errors of the log.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// The database failed.
    #[error("database: {0}")]
    Db(#[from] sqlx::Error),
    /// The tree math refused (bad index or size).
    #[error("tree: {0}")]
    Tree(tlog_tiles::Error),
    /// A hash the tree needs is missing from storage.
    #[error("stored hash {0} is missing")]
    MissingHash(u64),
    /// Stored data does not match the signed checkpoint.
    #[error("the stored log does not match its checkpoint: {0}")]
    Corrupt(String),
    /// Signing failed or the key is unusable.
    #[error("log key: {0}")]
    Key(String),
}

/// One Ed25519 key of the log: a signed-note signer whose name is the log's origin.
#[derive(Clone)]
struct NoteKey {
    origin: String,
    number: i64,
    key: Arc<crate::hsm::EdKey>,
    id: u32,
}

impl NoteKey {
    fn new(origin: &str, number: i64, key: Arc<crate::hsm::EdKey>) -> Self {
        let id = signed_note::key_id(origin, &typed_public(&key.public()));
        Self {
            origin: origin.to_string(),
            number,
            key,
            id,
        }
    }

    fn vkey(&self) -> String {
        vkey_of(&self.origin, &self.key.public())
    }
}

impl signed_note::Signer for NoteKey {
    fn name(&self) -> &str {
        &self.origin
    }
    fn key_id(&self) -> u32 {
        self.id
    }
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, signature::Error> {
        self.key.sign(msg).map(|s| s.to_vec()).map_err(|e| {
            tracing::error!(error = %e, key = self.number, "the log key did not sign");
            signature::Error::new()
        })
    }
}

fn typed_public(public: &[u8; 32]) -> Vec<u8> {
    [&[1u8][..], &public[..]].concat()
}

/// The signed-note verifier key of an Ed25519 public key named `origin`:
/// `<name>+<hex key id>+<base64(0x01 || key)>`.
pub fn vkey_of(origin: &str, public: &[u8; 32]) -> String {
    format!(
        "{origin}+{:08x}+{}",
        signed_note::key_id(origin, &typed_public(public)),
        B64.encode(typed_public(public))
    )
}

/// The keys that sign checkpoints now: the active one first, then an incoming one (during a
/// handover both sign), as of `log_state.key_epoch` = `epoch` (0, before any handover: number 1
/// alone).
struct Signing {
    epoch: i64,
    keys: Vec<NoteKey>,
}

/// The log's checkpoint signer: the log's Ed25519 key or, while a key handover is under way
/// (`crate::handover`), the active key and its successor, both named by the log's origin.
///
/// Which keys sign is stored (`signing_keys`); a change bumps `log_state.key_epoch` under the
/// sequencer's lock, and [`append`] compares it with what this replica loaded in the same
/// transaction, so no replica signs a checkpoint with keys a step on another replica changed.
pub struct LogSigner {
    origin: String,
    /// Number 1's key, where init put it (a sealed file or the token).
    first: Option<Arc<crate::hsm::EdKey>>,
    /// Opens the sealed keys of later numbers.
    passphrase: Option<String>,
    /// Holds the keys of later numbers made in the CA's token.
    token: Option<Arc<crate::hsm::Token>>,
    /// Keys of later numbers, each opened once (argon2id makes opening slow on purpose).
    opened: crate::hsm::OpenedEdKeys,
    now: RwLock<Arc<Signing>>,
}

impl LogSigner {
    /// A new random key, PKCS#8 DER.
    pub fn generate() -> Result<Vec<u8>, LogError> {
        Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new())
            .map(|d| d.as_ref().to_vec())
            .map_err(|_| LogError::Key("cannot generate".into()))
    }

    /// The signer for `origin` (a schema-less URL prefix such as `example.org/log`).
    pub fn new(origin: &str, pkcs8: &[u8]) -> Result<Self, LogError> {
        if !signed_note::is_key_name_valid(origin) {
            return Err(LogError::Key(format!("'{origin}' is not a valid key name")));
        }
        let key = Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| LogError::Key(e.to_string()))?;
        Self::with_key(origin, crate::hsm::EdKey::Software(key))
    }

    /// The signer for `origin` with a key held elsewhere (in a token).
    pub fn with_key(origin: &str, key: crate::hsm::EdKey) -> Result<Self, LogError> {
        if !signed_note::is_key_name_valid(origin) {
            return Err(LogError::Key(format!("'{origin}' is not a valid key name")));
        }
        let first = Arc::new(key);
        Ok(Self {
            origin: origin.to_string(),
            now: RwLock::new(Arc::new(Signing {
                epoch: 0,
                keys: vec![NoteKey::new(origin, 1, first.clone())],
            })),
            first: Some(first),
            passphrase: None,
            token: None,
            opened: Default::default(),
        })
    }

    /// The signer of a CA that serves: number 1's key if this replica still holds it, the keys
    /// of later numbers opened from the database with `passphrase` or found in `token` by their
    /// label. It signs nothing before [`LogSigner::reload`] has read which keys sign.
    pub fn stored(
        origin: &str,
        first: Option<crate::hsm::EdKey>,
        passphrase: &str,
        token: Option<Arc<crate::hsm::Token>>,
    ) -> Result<Self, LogError> {
        if !signed_note::is_key_name_valid(origin) {
            return Err(LogError::Key(format!("'{origin}' is not a valid key name")));
        }
        Ok(Self {
            origin: origin.to_string(),
            now: RwLock::new(Arc::new(Signing {
                epoch: -1,
                keys: Vec::new(),
            })),
            first: first.map(Arc::new),
            passphrase: Some(passphrase.to_string()),
            token,
            opened: Default::default(),
        })
    }

    /// The log's origin (every key's name).
    pub fn origin(&self) -> &str {
        &self.origin
    }

    fn signing(&self) -> Arc<Signing> {
        self.now.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// The active key's verifier key in signed-note form.
    pub fn vkey(&self) -> String {
        self.signing().keys.first().map(NoteKey::vkey).unwrap_or_default()
    }

    /// Number 1's raw public key (the key of initialisation), if this replica holds it.
    pub fn first_public(&self) -> Option<[u8; 32]> {
        self.first.as_ref().map(|k| k.public())
    }

    /// Signs the checkpoint of a tree with every key signing now.
    pub fn sign_checkpoint(&self, size: u64, root: Hash) -> Result<String, LogError> {
        let signing = self.signing();
        if signing.keys.is_empty() {
            return Err(LogError::Key("no log key has been loaded".into()));
        }
        let cp = Checkpoint::new(&self.origin, size, root, "").map_err(|_| LogError::Key("bad checkpoint".into()))?;
        let mut note = signed_note::Note::new(&cp.to_bytes(), &[]).map_err(|e| LogError::Key(e.to_string()))?;
        let signers: Vec<&dyn signed_note::Signer> =
            signing.keys.iter().map(|k| k as &dyn signed_note::Signer).collect();
        note.add_sigs(&signers).map_err(|e| LogError::Key(e.to_string()))?;
        String::from_utf8(note.to_bytes()).map_err(|e| LogError::Key(e.to_string()))
    }

    /// Verifies a checkpoint note signed by a key signing now and returns its size and root.
    pub fn open_checkpoint(&self, note: &str) -> Result<(u64, Hash), LogError> {
        let signing = self.signing();
        let verifiers = signing
            .keys
            .iter()
            .map(|k| {
                signed_note::StandardVerifier::new(&k.vkey())
                    .map(|v| Box::new(v) as Box<dyn signed_note::Verifier>)
                    .map_err(|e| LogError::Key(e.to_string()))
            })
            .collect::<Result<Vec<_>, _>>()?;
        let list = signed_note::VerifierList::new(verifiers);
        let n = signed_note::Note::from_bytes(note.as_bytes())
            .map_err(|e| LogError::Corrupt(format!("checkpoint note: {e}")))?;
        n.verify(&list)
            .map_err(|e| LogError::Corrupt(format!("checkpoint signature: {e}")))?;
        let cp = Checkpoint::from_bytes(n.text()).map_err(|_| LogError::Corrupt("checkpoint text".into()))?;
        if cp.origin() != self.origin {
            return Err(LogError::Corrupt(format!(
                "checkpoint origin {} is not {}",
                cp.origin(),
                self.origin
            )));
        }
        Ok((cp.size(), *cp.hash()))
    }

    /// Loads the stored signing keys if `epoch` is not the one loaded (inside the sequencer's
    /// transaction when called from [`append`]).
    pub async fn refresh(&self, conn: &mut AnyConnection, epoch: i64) -> Result<(), LogError> {
        if self.signing().epoch == epoch {
            return Ok(());
        }
        let rows = crate::db::keys::all(conn, "log").await.map_err(LogError::Db)?;
        let mut keys = Vec::new();
        for state in ["active", "incoming"] {
            for row in rows.iter().filter(|r| r.state == state) {
                keys.push(NoteKey::new(&self.origin, row.number, self.key_of(row)?));
            }
        }
        if keys.is_empty() {
            return Err(LogError::Key("no active log key is recorded".into()));
        }
        let numbers: Vec<i64> = keys.iter().map(|k| k.number).collect();
        self.opened.retain(|n| numbers.contains(&n));
        *self.now.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Signing { epoch, keys });
        tracing::info!(epoch, keys = ?numbers, "log checkpoints are signed by key(s) {numbers:?}");
        Ok(())
    }

    /// Makes the next [`LogSigner::refresh`] load the stored keys whatever the epoch.
    pub fn forget(&self) {
        let keys = self.signing().keys.clone();
        *self.now.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(Signing { epoch: -1, keys });
    }

    /// Reads the key epoch and loads the keys if it changed (start-up and followers).
    pub async fn reload(&self, conn: &mut AnyConnection) -> Result<(), LogError> {
        let epoch = crate::db::keys::epoch(&mut *conn).await.map_err(LogError::Db)?;
        self.refresh(conn, epoch).await
    }

    fn key_of(&self, row: &crate::db::keys::KeyRow) -> Result<Arc<crate::hsm::EdKey>, LogError> {
        let key = if row.number == 1 {
            self.first.clone().ok_or_else(|| {
                LogError::Key("log key 1 is still in use but this replica does not hold it (log.key.sealed)".into())
            })?
        } else {
            self.opened
                .open(
                    "log",
                    row,
                    &key_label(row.number),
                    self.token.as_deref(),
                    self.passphrase.as_deref(),
                )
                .map_err(LogError::Key)?
        };
        if B64.encode(key.public()) != row.public_key {
            return Err(LogError::Key(format!(
                "log key {} is not the key recorded for it",
                row.number
            )));
        }
        Ok(key)
    }

    /// Keeps this replica's keys in step with the stored ones between appends, checking every
    /// `every` (so `/log/vkey` names the active key soon after a step on another replica).
    pub async fn follow(self: Arc<Self>, db: crate::db::Db, every: std::time::Duration) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let result = match db.acquire().await {
                Ok(mut c) => self.reload(&mut c).await,
                Err(e) => Err(LogError::Db(e)),
            };
            if let Err(e) = result {
                tracing::warn!(error = %e, "reading the log's signing keys failed; will retry");
            }
        }
    }
}

/// Verifies a checkpoint note with one verifier key; returns its size and root.
pub fn open_with(vkey: &str, note: &str) -> Result<(u64, Hash), LogError> {
    let verifier = signed_note::StandardVerifier::new(vkey).map_err(|e| LogError::Key(e.to_string()))?;
    let n = signed_note::Note::from_bytes(note.as_bytes())
        .map_err(|e| LogError::Corrupt(format!("checkpoint note: {e}")))?;
    n.verify(&signed_note::VerifierList::new(vec![Box::new(verifier)]))
        .map_err(|e| LogError::Corrupt(format!("checkpoint signature: {e}")))?;
    let cp = Checkpoint::from_bytes(n.text()).map_err(|_| LogError::Corrupt("checkpoint text".into()))?;
    Ok((cp.size(), *cp.hash()))
}

/// The label a sealed log key of `number` is sealed under.
pub fn key_label(number: i64) -> String {
    format!("log-{number}")
}

/// A [`HashReader`] over hashes fetched so far; it records the ones it lacks, so the caller can
/// fetch them from the database and run the (synchronous) tree function again.
/// Reads that run inside a transaction that may still roll back use no [`HashCache`].
#[derive(Default)]
struct Hashes<'a> {
    known: Mutex<HashMap<u64, Hash>>,
    missing: Mutex<Vec<u64>>,
    cache: Option<&'a HashCache>,
}

/// Stored hashes of subtrees of at least 2^[`CACHED_LEVEL`] leaves, kept in memory once read
/// from committed data. A stored hash never changes once written; these are a sixteenth of all
/// stored hashes (about 4 MB at 1,000,000 leaves) and most of any proof.
#[derive(Default)]
pub struct HashCache {
    map: std::sync::RwLock<HashMap<u64, Hash>>,
}

/// The lowest stored-hash level [`HashCache`] keeps.
const CACHED_LEVEL: u8 = 4;
/// At most this many hashes are cached (64 MB of hashes, a log of some 16,000,000 leaves).
const CACHE_LIMIT: usize = 2_000_000;

impl HashCache {
    fn get(&self, index: u64) -> Option<Hash> {
        self.map.read().unwrap_or_else(|e| e.into_inner()).get(&index).copied()
    }

    fn keep(&self, found: &[(u64, Hash)]) {
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        for (i, h) in found {
            if map.len() < CACHE_LIMIT && tlog_tiles::split_stored_hash_index(*i).0 >= CACHED_LEVEL {
                map.insert(*i, *h);
            }
        }
    }
}

impl HashReader for Hashes<'_> {
    fn read_hashes(&self, indexes: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
        let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
        let mut missing = self.missing.lock().unwrap_or_else(|e| e.into_inner());
        let mut out = Vec::with_capacity(indexes.len());
        for i in indexes {
            match known.get(i).copied().or_else(|| self.cache.and_then(|c| c.get(*i))) {
                Some(h) => out.push(h),
                None => missing.push(*i),
            }
        }
        if missing.is_empty() {
            Ok(out)
        } else {
            Err(tlog_tiles::Error::IndexesNotInTree)
        }
    }
}

impl<'a> Hashes<'a> {
    fn cached(cache: &'a HashCache) -> Self {
        Self {
            cache: Some(cache),
            ..Default::default()
        }
    }

    fn insert(&self, index: u64, h: Hash) {
        self.known.lock().unwrap_or_else(|e| e.into_inner()).insert(index, h);
    }

    /// Runs `f`, fetching whatever hashes it asks for that are not known yet.
    async fn resolve<T>(
        &self,
        conn: &mut AnyConnection,
        backend: Backend,
        f: impl Fn(&Self) -> Result<T, tlog_tiles::Error>,
    ) -> Result<T, LogError> {
        loop {
            match f(self) {
                Ok(v) => return Ok(v),
                Err(e) => {
                    if !self.fetch_missing(conn, backend).await? {
                        return Err(LogError::Tree(e));
                    }
                }
            }
        }
    }

    /// Runs `f` for every index in `0..n`, fetching the hashes all of them lack together, so a
    /// batch costs a few queries rather than one per item.
    async fn resolve_all<T>(
        &self,
        conn: &mut AnyConnection,
        backend: Backend,
        n: usize,
        f: impl Fn(&Self, usize) -> Result<T, tlog_tiles::Error>,
    ) -> Result<Vec<T>, LogError> {
        let mut out: Vec<Option<T>> = (0..n).map(|_| None).collect();
        loop {
            let mut last_err = None;
            for (i, slot) in out.iter_mut().enumerate().filter(|(_, s)| s.is_none()) {
                match f(self, i) {
                    Ok(v) => *slot = Some(v),
                    Err(e) => last_err = Some(e),
                }
            }
            let Some(e) = last_err else {
                return Ok(out.into_iter().flatten().collect());
            };
            if !self.fetch_missing(conn, backend).await? {
                return Err(LogError::Tree(e));
            }
        }
    }

    /// Fetches the hashes recorded as missing; `false` if none were (the failure was not a miss).
    async fn fetch_missing(&self, conn: &mut AnyConnection, backend: Backend) -> Result<bool, LogError> {
        let mut missing = std::mem::take(&mut *self.missing.lock().unwrap_or_else(|e| e.into_inner()));
        if missing.is_empty() {
            return Ok(false);
        }
        missing.sort_unstable();
        missing.dedup();
        for chunk in missing.chunks(512) {
            let sql = format!(
                "SELECT idx, hash FROM log_hashes WHERE idx IN ({})",
                placeholders(backend, 1, chunk.len())
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for i in chunk {
                q = q.bind(*i as i64);
            }
            let rows = q.fetch_all(&mut *conn).await?;
            let mut found = Vec::with_capacity(rows.len());
            for r in &rows {
                let bytes: Vec<u8> = r.try_get(1)?;
                let h: [u8; 32] = bytes
                    .try_into()
                    .map_err(|_| LogError::Corrupt("stored hash length".into()))?;
                let i = r.try_get::<i64, _>(0)? as u64;
                self.insert(i, Hash(h));
                found.push((i, Hash(h)));
            }
            if let Some(cache) = self.cache {
                cache.keep(&found);
            }
            if rows.len() != chunk.len() {
                let known = self.known.lock().unwrap_or_else(|e| e.into_inner());
                let lost = chunk
                    .iter()
                    .find(|i| !known.contains_key(i))
                    .copied()
                    .unwrap_or_default();
                return Err(LogError::MissingHash(lost));
            }
        }
        Ok(true)
    }
}

/// A leaf to append, with the columns auditors search by.
#[derive(Debug, Clone)]
pub struct NewLeaf {
    /// Canonical encoding ([`identity::logleaf::LogLeaf::encode`]).
    pub bytes: Vec<u8>,
    /// `issuance` or `revocation`.
    pub kind: &'static str,
    /// The serial it is about.
    pub serial: String,
    /// The holder's id.
    pub identity: String,
    /// Unix seconds.
    pub at: i64,
}

/// What an append produced.
#[derive(Debug, Clone)]
pub struct Appended {
    /// Index of the first appended leaf.
    pub first: u64,
    /// The new tree size.
    pub size: u64,
    /// The new root.
    pub root: Hash,
    /// The signed checkpoint of the new tree.
    pub checkpoint: String,
    /// Inclusion proof of each appended leaf in the new tree (when asked for).
    pub proofs: Vec<Vec<Hash>>,
}

/// The receipt a client gets with its certificate or revocation: the API contract's type (it is
/// what the log proves, in the form clients verify).
pub use bsn_api::ca::Receipt;

impl Appended {
    /// The receipt for the `i`-th appended leaf.
    pub fn receipt(&self, i: usize) -> Receipt {
        Receipt {
            leaf_index: self.first + i as u64,
            tree_size: self.size,
            inclusion_proof: self
                .proofs
                .get(i)
                .map(|p| p.iter().map(|h| B64.encode(h.0)).collect())
                .unwrap_or_default(),
            checkpoint: self.checkpoint.clone(),
        }
    }
}

/// Takes the sequencer's lock (the `log_state` row) in `tx` without appending: a feed write
/// that has no log leaf (a node directory revision) still takes its feed position in commit
/// order.
pub async fn lock_sequencer(tx: &mut Transaction<'static, Any>) -> Result<(), LogError> {
    sqlx::query("UPDATE log_state SET size = size WHERE id = 1")
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// Appends leaves inside `tx`, signs the new checkpoint, and returns proofs for the new leaves.
pub async fn append(
    tx: &mut Transaction<'static, Any>,
    backend: Backend,
    signer: &LogSigner,
    leaves: &[NewLeaf],
    with_proofs: bool,
) -> Result<Appended, LogError> {
    let row = sqlx::query("UPDATE log_state SET size = size WHERE id = 1 RETURNING size, key_epoch")
        .fetch_one(&mut **tx)
        .await?;
    let size = row.try_get::<i64, _>(0)? as u64;
    // A key handover (here or on another replica) changes the epoch under this lock.
    signer.refresh(tx, row.try_get::<i64, _>(1)?).await?;
    let hashes = Hashes::default();
    let mut new_hashes = Vec::new();
    for (i, leaf) in leaves.iter().enumerate() {
        let n = size + i as u64;
        let stored = hashes
            .resolve(&mut *tx, backend, |r| tlog_tiles::stored_hashes(n, &leaf.bytes, r))
            .await?;
        let base = stored_hash_index(0, n);
        for (j, h) in stored.into_iter().enumerate() {
            hashes.insert(base + j as u64, h);
            new_hashes.push((base + j as u64, h));
        }
    }
    let new_size = size + leaves.len() as u64;
    let root = hashes
        .resolve(&mut *tx, backend, |r| tlog_tiles::tree_hash(new_size, r))
        .await?;
    let checkpoint = signer.sign_checkpoint(new_size, root)?;
    let proofs = if with_proofs {
        hashes
            .resolve_all(&mut *tx, backend, leaves.len(), |r, i| {
                tlog_tiles::prove_record(new_size, size + i as u64, r)
            })
            .await?
    } else {
        Vec::new()
    };
    for (chunk_no, chunk) in leaves.chunks(256).enumerate() {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| format!("({})", placeholders(backend, i * 7 + 1, 7)))
            .collect();
        let sql = format!(
            "INSERT INTO log_entries (idx, leaf, kind, serial, identity, at, leaf_hash) VALUES {}",
            values.join(", ")
        );
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (i, l) in chunk.iter().enumerate() {
            let idx = size + (chunk_no * 256 + i) as u64;
            q = q
                .bind(idx as i64)
                .bind(&l.bytes)
                .bind(l.kind)
                .bind(&l.serial)
                .bind(&l.identity)
                .bind(l.at)
                .bind(record_hash(&l.bytes).0.to_vec());
        }
        q.execute(&mut **tx).await?;
    }
    store_full_bundles(tx, size, leaves).await?;
    for chunk in new_hashes.chunks(512) {
        let values: Vec<String> = (0..chunk.len())
            .map(|i| format!("({})", placeholders(backend, i * 2 + 1, 2)))
            .collect();
        let sql = format!("INSERT INTO log_hashes (idx, hash) VALUES {}", values.join(", "));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (i, h) in chunk {
            q = q.bind(*i as i64).bind(h.0.to_vec());
        }
        q.execute(&mut **tx).await?;
    }
    sqlx::query("UPDATE log_state SET size = $1, root = $2, checkpoint = $3 WHERE id = 1")
        .bind(new_size as i64)
        .bind(root.0.to_vec())
        .bind(&checkpoint)
        .execute(&mut **tx)
        .await?;
    Ok(Appended {
        first: size,
        size: new_size,
        root,
        checkpoint,
        proofs,
    })
}

/// Entries per entry bundle (C2SP tlog-tiles).
const BUNDLE: u64 = 256;

/// An entry bundle's bytes: each leaf behind its big-endian u16 length.
fn bundle_bytes<'a>(leaves: impl IntoIterator<Item = &'a [u8]>) -> Vec<u8> {
    let mut out = Vec::new();
    for leaf in leaves {
        out.extend_from_slice(&(leaf.len() as u16).to_be_bytes());
        out.extend_from_slice(leaf);
    }
    out
}

/// Writes every entry bundle that `leaves`, appended at `size`, complete: their earlier entries
/// are read back (at most 255, once per 256 entries), the rest are in hand.
async fn store_full_bundles(tx: &mut Transaction<'static, Any>, size: u64, leaves: &[NewLeaf]) -> Result<(), LogError> {
    let end = size + leaves.len() as u64;
    for n in size / BUNDLE..end / BUNDLE {
        let start = n * BUNDLE;
        let mut earlier: Vec<Vec<u8>> = Vec::new();
        if start < size {
            earlier = sqlx::query_scalar("SELECT leaf FROM log_entries WHERE idx >= $1 AND idx < $2 ORDER BY idx")
                .bind(start as i64)
                .bind(size as i64)
                .fetch_all(&mut **tx)
                .await?;
            if earlier.len() as u64 != size - start {
                return Err(LogError::Corrupt(format!("entries of bundle {n} are missing")));
            }
        }
        let from = start.saturating_sub(size) as usize;
        let to = (start + BUNDLE - size) as usize;
        let data = bundle_bytes(
            earlier
                .iter()
                .map(Vec::as_slice)
                .chain(leaves[from..to].iter().map(|l| l.bytes.as_slice())),
        );
        sqlx::query("INSERT INTO log_bundles (n, data) VALUES ($1, $2)")
            .bind(n as i64)
            .bind(data)
            .execute(&mut **tx)
            .await?;
    }
    Ok(())
}

/// Stores full entry bundles a log appended before they were stored lacks (each one already
/// built from the stored leaves), in one transaction.
async fn store_missing_bundles(conn: &mut AnyConnection, missing: Vec<(u64, Vec<u8>)>) -> Result<(), LogError> {
    if missing.is_empty() {
        return Ok(());
    }
    tracing::info!(bundles = missing.len(), "storing entry bundles of the log");
    let mut tx = sqlx::Connection::begin(&mut *conn).await?;
    for (n, data) in missing {
        sqlx::query("INSERT INTO log_bundles (n, data) VALUES ($1, $2) ON CONFLICT (n) DO NOTHING")
            .bind(n as i64)
            .bind(data)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

/// Creates the empty log (size 0, its signed checkpoint) at initialisation.
pub async fn create(tx: &mut Transaction<'static, Any>, signer: &LogSigner) -> Result<(), LogError> {
    let checkpoint = signer.sign_checkpoint(0, EMPTY_HASH)?;
    sqlx::query("INSERT INTO log_state (id, size, root, checkpoint) VALUES (1, 0, $1, $2)")
        .bind(EMPTY_HASH.0.to_vec())
        .bind(checkpoint)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// The latest checkpoint and its size.
pub async fn latest(conn: &mut AnyConnection) -> Result<(u64, String), LogError> {
    let row = sqlx::query("SELECT size, checkpoint FROM log_state WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    Ok((row.try_get::<i64, _>(0)? as u64, row.try_get(1)?))
}

/// The index of the first leaf whose RFC 6962 hash is `leaf_hash`.
pub async fn index_of(conn: &mut AnyConnection, leaf_hash: &[u8]) -> Result<Option<u64>, LogError> {
    let idx: Option<i64> = sqlx::query_scalar("SELECT idx FROM log_entries WHERE leaf_hash = $1 ORDER BY idx LIMIT 1")
        .bind(leaf_hash)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(idx.map(|i| i as u64))
}

/// Which entries to list: each field narrows the search when given.
pub struct EntryFilter<'a> {
    /// The holder's identity id.
    pub identity: Option<&'a str>,
    /// Serial, lowercase hex.
    pub serial: Option<&'a str>,
    /// Unix seconds, inclusive.
    pub since: Option<i64>,
    /// Unix seconds, exclusive.
    pub until: Option<i64>,
    /// Only entries with a larger index (the cursor).
    pub after: Option<u64>,
    /// At most this many.
    pub limit: i64,
}

/// One log entry with its searchable columns.
pub struct EntryRow {
    /// Leaf index.
    pub index: u64,
    /// `issuance`, `revocation` or `membership`.
    pub kind: String,
    /// Serial (issuance, revocation) or subchain (membership).
    pub serial: String,
    /// The holder's identity id, or who changed the membership.
    pub identity: String,
    /// Unix seconds.
    pub at: i64,
    /// The leaf, as hashed into the tree.
    pub leaf: Vec<u8>,
}

/// Entries matching `f`, in log order.
pub async fn entries(conn: &mut AnyConnection, f: &EntryFilter<'_>) -> Result<Vec<EntryRow>, LogError> {
    let rows = sqlx::query(
        "SELECT idx, kind, serial, identity, at, leaf FROM log_entries \
         WHERE (CAST($1 AS TEXT) IS NULL OR identity = $1) AND (CAST($2 AS TEXT) IS NULL OR serial = $2) \
           AND (CAST($3 AS BIGINT) IS NULL OR at >= $3) AND (CAST($4 AS BIGINT) IS NULL OR at < $4) \
           AND idx > $5 ORDER BY idx LIMIT $6",
    )
    .bind(f.identity)
    .bind(f.serial)
    .bind(f.since)
    .bind(f.until)
    .bind(f.after.map(|a| a as i64).unwrap_or(-1))
    .bind(f.limit)
    .fetch_all(&mut *conn)
    .await?;
    rows.iter()
        .map(|r| {
            Ok(EntryRow {
                index: r.try_get::<i64, _>(0)? as u64,
                kind: r.try_get(1)?,
                serial: r.try_get(2)?,
                identity: r.try_get(3)?,
                at: r.try_get(4)?,
                leaf: r.try_get(5)?,
            })
        })
        .collect()
}

/// The contents of a C2SP tile path below `/log/` (`tile/<L>/<N>[.p/<W>]` or
/// `tile/entries/<N>[.p/<W>]`), if the path is well formed and within a tree of `size`.
pub fn parse_tile_path(path: &str, size: u64) -> Option<Tile> {
    let rest = path.strip_prefix("tile/")?;
    let (level_str, rest) = rest.split_once('/')?;
    let (is_data, level) = if level_str == "entries" {
        (true, 0u8)
    } else {
        (
            false,
            level_str
                .parse::<u8>()
                .ok()
                .filter(|l| *l <= 63 && l.to_string() == level_str)?,
        )
    };
    let (n_part, width) = match rest.split_once(".p/") {
        Some((n, w)) => (
            n,
            w.parse::<u32>()
                .ok()
                .filter(|v| (1..256).contains(v) && v.to_string() == w)?,
        ),
        None => (rest, 256),
    };
    let mut n: u64 = 0;
    let parts: Vec<&str> = n_part.split('/').collect();
    for (i, p) in parts.iter().enumerate() {
        let digits = if i + 1 < parts.len() { p.strip_prefix('x')? } else { p };
        if digits.len() != 3 || !digits.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        n = n.checked_mul(1000)?.checked_add(digits.parse::<u64>().ok()?)?;
    }
    // The tile (full, or the partial prefix asked for) must lie within the tree. Tiles are
    // immutable prefixes, so a partial of an older size stays valid.
    let span = 256u64.checked_pow(u32::from(level))?;
    let end = n.checked_mul(256)?.checked_add(u64::from(width))?.checked_mul(span)?;
    if end > size {
        return None;
    }
    Some(Tile::new(TILE_HEIGHT, level, n, width, is_data))
}

/// The bytes of a tile: hashes for a level tile, length-prefixed leaves for an entries tile.
pub async fn read_tile(
    conn: &mut AnyConnection,
    backend: Backend,
    cache: &HashCache,
    tile: Tile,
) -> Result<Vec<u8>, LogError> {
    if tile.is_data() {
        // A full bundle is stored whole; a partial one (the log's right edge) is built from
        // its entries.
        if u64::from(tile.width()) == BUNDLE
            && let Some(data) = sqlx::query_scalar::<_, Vec<u8>>("SELECT data FROM log_bundles WHERE n = $1")
                .bind(tile.level_index() as i64)
                .fetch_optional(&mut *conn)
                .await?
        {
            return Ok(data);
        }
        let start = tile.level_index() * BUNDLE;
        let rows: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT leaf FROM log_entries WHERE idx >= $1 AND idx < $2 ORDER BY idx")
                .bind(start as i64)
                .bind((start + u64::from(tile.width())) as i64)
                .fetch_all(&mut *conn)
                .await?;
        if rows.len() != tile.width() as usize {
            return Err(LogError::Corrupt("entries missing".into()));
        }
        return Ok(bundle_bytes(rows.iter().map(Vec::as_slice)));
    }
    let hashes = Hashes::cached(cache);
    hashes.resolve(conn, backend, |r| tile.read_data(r)).await
}

/// An inclusion proof of leaf `index` in the tree of `size` (both within the stored tree), and
/// that tree's root. Both computations record what they miss before either fails, so the hashes
/// they need come in one query.
pub async fn prove_inclusion(
    conn: &mut AnyConnection,
    backend: Backend,
    cache: &HashCache,
    size: u64,
    index: u64,
) -> Result<(Vec<Hash>, Hash), LogError> {
    Hashes::cached(cache)
        .resolve(conn, backend, |r| {
            let proof = tlog_tiles::prove_record(size, index, r);
            let root = tlog_tiles::tree_hash(size, r);
            Ok((proof?, root?))
        })
        .await
}

/// A consistency proof from the tree of `first` leaves to the tree of `second` leaves.
pub async fn prove_consistency(
    conn: &mut AnyConnection,
    backend: Backend,
    cache: &HashCache,
    first: u64,
    second: u64,
) -> Result<Vec<Hash>, LogError> {
    Hashes::cached(cache)
        .resolve(conn, backend, |r| tlog_tiles::prove_tree(second, first, r))
        .await
}

/// Re-verifies the log from its leaves: recomputes the root of every stored leaf and compares it
/// with the stored root and the signed checkpoint. Returns the size.
pub async fn self_check(conn: &mut AnyConnection, signer: &LogSigner) -> Result<u64, LogError> {
    let row = sqlx::query("SELECT size, root, checkpoint FROM log_state WHERE id = 1")
        .fetch_one(&mut *conn)
        .await?;
    let size = row.try_get::<i64, _>(0)? as u64;
    let stored_root: Vec<u8> = row.try_get(1)?;
    let checkpoint: String = row.try_get(2)?;
    let (cp_size, cp_root) = signer.open_checkpoint(&checkpoint)?;
    if cp_size != size || cp_root.0.as_slice() != stored_root.as_slice() {
        return Err(LogError::Corrupt(
            "the latest checkpoint does not describe the stored tree".into(),
        ));
    }
    let mut range = CompactRange::default();
    let mut next = 0u64;
    let mut bundle: Vec<u8> = Vec::new();
    let mut missing: Vec<(u64, Vec<u8>)> = Vec::new();
    while next < size {
        // Whole bundles per query (40 of them), and the stored copies of those bundles.
        let rows = sqlx::query("SELECT idx, leaf FROM log_entries WHERE idx >= $1 ORDER BY idx LIMIT 10240")
            .bind(next as i64)
            .fetch_all(&mut *conn)
            .await?;
        if rows.is_empty() {
            return Err(LogError::Corrupt(format!("leaves from {next} on are missing")));
        }
        let stored: std::collections::HashMap<i64, Vec<u8>> =
            sqlx::query("SELECT n, data FROM log_bundles WHERE n >= $1 AND n < $2")
                .bind((next / BUNDLE) as i64)
                .bind(((next + 10240) / BUNDLE) as i64)
                .fetch_all(&mut *conn)
                .await?
                .into_iter()
                .map(|r| Ok((r.try_get::<i64, _>(0)?, r.try_get::<Vec<u8>, _>(1)?)))
                .collect::<Result<_, sqlx::Error>>()?;
        for r in rows {
            let idx = r.try_get::<i64, _>(0)? as u64;
            if idx != next {
                return Err(LogError::Corrupt(format!("leaf {next} is missing")));
            }
            if idx >= size {
                return Err(LogError::Corrupt(format!(
                    "leaf {idx} lies beyond the checkpoint's size {size}"
                )));
            }
            let leaf: Vec<u8> = r.try_get(1)?;
            range.push(record_hash(&leaf));
            bundle.extend_from_slice(&(leaf.len() as u16).to_be_bytes());
            bundle.extend_from_slice(&leaf);
            next += 1;
            if next.is_multiple_of(BUNDLE) {
                let n = next / BUNDLE - 1;
                match stored.get(&(n as i64)) {
                    Some(data) if *data == bundle => {}
                    Some(_) => {
                        return Err(LogError::Corrupt(format!(
                            "the stored entry bundle {n} differs from its leaves"
                        )));
                    }
                    None => missing.push((n, bundle.clone())),
                }
                bundle.clear();
            }
        }
        store_missing_bundles(conn, std::mem::take(&mut missing)).await?;
    }
    if range.root() != cp_root {
        return Err(LogError::Corrupt(format!(
            "the root recomputed from {size} leaves differs from the signed checkpoint"
        )));
    }
    Ok(size)
}

#[cfg(test)]
mod tests {
    use super::*;

    struct All(Vec<Hash>);
    impl HashReader for All {
        fn read_hashes(&self, idx: &[u64]) -> Result<Vec<Hash>, tlog_tiles::Error> {
            Ok(idx.iter().map(|i| self.0[*i as usize]).collect())
        }
    }

    #[test]
    fn compact_range_matches_tlog_tiles_for_every_size_to_600() {
        let mut stored = All(vec![]);
        let mut range = CompactRange::default();
        assert_eq!(range.root(), EMPTY_HASH);
        for n in 0..600u64 {
            let leaf = n.to_be_bytes();
            let hs = tlog_tiles::stored_hashes(n, &leaf, &stored).unwrap();
            stored.0.extend(hs);
            range.push(record_hash(&leaf));
            assert_eq!(
                range.root(),
                tlog_tiles::tree_hash(n + 1, &stored).unwrap(),
                "size {}",
                n + 1
            );
        }
    }

    #[test]
    fn checkpoints_verify_and_tampering_is_caught() {
        let key = LogSigner::generate().unwrap();
        let s = LogSigner::new("example.org/log", &key).unwrap();
        let note = s.sign_checkpoint(7, record_hash(b"x")).unwrap();
        assert!(note.starts_with("example.org/log\n7\n"));
        assert_eq!(s.open_checkpoint(&note).unwrap(), (7, record_hash(b"x")));
        let forged = note.replacen("\n7\n", "\n8\n", 1);
        assert!(s.open_checkpoint(&forged).is_err());
        let other = LogSigner::new("example.org/log", &LogSigner::generate().unwrap()).unwrap();
        assert!(other.open_checkpoint(&note).is_err());
        assert!(s.vkey().starts_with("example.org/log+"));
        signed_note::StandardVerifier::new(&s.vkey()).unwrap();
    }

    #[test]
    fn tile_paths_follow_c2sp() {
        let t = parse_tile_path("tile/0/000", 256).unwrap();
        assert_eq!((t.level(), t.level_index(), t.width(), t.is_data()), (0, 0, 256, false));
        let t = parse_tile_path("tile/0/x001/234.p/7", 1234 * 256 + 7).unwrap();
        assert_eq!((t.level_index(), t.width()), (1234, 7));
        let t = parse_tile_path("tile/entries/000.p/5", 5).unwrap();
        assert!(t.is_data());
        // The spec's example: size 70,000.
        assert!(parse_tile_path("tile/0/272", 70_000).is_some());
        assert!(parse_tile_path("tile/0/273.p/112", 70_000).is_some());
        assert!(parse_tile_path("tile/1/000", 70_000).is_some());
        assert!(parse_tile_path("tile/1/001.p/17", 70_000).is_some());
        assert!(parse_tile_path("tile/2/000.p/1", 70_000).is_some());
        for bad in [
            "tile/0/273",
            "tile/0/273.p/113",
            "tile/0/1",
            "tile/0/0001",
            "tile/0/001.p/0",
            "tile/0/001.p/256",
            "tile/64/000",
            "tile/0/x000/x001",
            "tile/0/000.p/05",
            "x/0/000",
            "tile/00/000",
        ] {
            assert!(parse_tile_path(bad, 70_000).is_none(), "{bad}");
        }
    }

    /// The RFC 6962 example leaves and the transparency-dev/merkle reference vectors
    /// (testonly/reference_test.go): proofs as concatenated hex hashes.
    const KAT_LEAVES: [&str; 8] = [
        "",
        "00",
        "10",
        "2021",
        "3031",
        "40414243",
        "5051525354555657",
        "606162636465666768696a6b6c6d6e6f",
    ];
    const KAT_INCLUSION: &[(u64, u64, &str)] = &[
        (1, 0, ""),
        (2, 0, "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc7"),
        (2, 1, "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d"),
        (3, 2, "fac54203e7cc696cf0dfcb42c92a1d9dbaf70ad9e621f4bd8d98662f00e3c125"),
        (
            5,
            1,
            "6e340b9cffb37a989ca544e6bb780a2c78901d3fb33738768511a30617afa01d5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031ebc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
        (
            8,
            0,
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc75f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
        (
            8,
            5,
            "bc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6bca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ];
    const KAT_CONSISTENCY: &[(u64, u64, &str)] = &[
        (1, 1, ""),
        (
            1,
            8,
            "96a296d224f285c67bee93c30f8a309157f0daa35dc5b87e410b78630a09cfc75f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031e6b47aaf29ee3c2af9af889bc1fb9254dabd31177f16232dd6aab035ca39bf6e4",
        ),
        (
            2,
            5,
            "5f083f0a1a33ca076a95279832580db3e0ef4584bdff1f54c8a360f50de3031ebc1a0643b12e4d2d7c77918f44e0f4f79a838b6cf9ec5b5c283e1f4d88599e6b",
        ),
        (
            6,
            8,
            "0ebc5d3437fbe2db158b9f126a1d118e308181031d0a949f8dededebc558ef6aca854ea128ed050b41b35ffc1b87b8eb2bde461e9e3b5596ece6b9d5975a0ae0d37ee418976dd95753c1c73862b9398fa2a2cf9b4ff0fdfe8b30cd95209614b7",
        ),
    ];

    fn tree(leaves: &[Vec<u8>]) -> All {
        let mut stored = All(vec![]);
        for (n, leaf) in leaves.iter().enumerate() {
            let hs = tlog_tiles::stored_hashes(n as u64, leaf, &stored).unwrap();
            stored.0.extend(hs);
        }
        stored
    }

    fn joined(proof: &[Hash]) -> String {
        proof.iter().map(|h| hex::encode(h.0)).collect()
    }

    #[test]
    fn rfc6962_known_answers() {
        let leaves: Vec<Vec<u8>> = KAT_LEAVES.iter().map(|l| hex::decode(l).unwrap()).collect();
        let t = tree(&leaves);
        // The 7-leaf tree of RFC 6962's example.
        assert_eq!(
            hex::encode(tlog_tiles::tree_hash(7, &t).unwrap().0),
            "ddb89be403809e325750d3d263cd78929c2942b7942a34b77e122c9594a74c8c"
        );
        for &(n, i, want) in KAT_INCLUSION {
            let p = tlog_tiles::prove_record(n, i, &t).unwrap();
            assert_eq!(joined(&p), want, "inclusion of {i} in {n}");
            tlog_tiles::check_record(
                &p,
                n,
                tlog_tiles::tree_hash(n, &t).unwrap(),
                i,
                record_hash(&leaves[i as usize]),
            )
            .unwrap();
        }
        for &(m, n, want) in KAT_CONSISTENCY {
            let p = tlog_tiles::prove_tree(n, m, &t).unwrap();
            assert_eq!(joined(&p), want, "consistency {m} -> {n}");
        }
    }

    /// Every inclusion and consistency proof for trees up to 300 leaves, made by tlog_tiles (what
    /// the server serves) and checked by ct-merkle, an independent implementation; and ct-merkle's
    /// proofs checked by tlog_tiles.
    #[test]
    fn proofs_agree_with_ct_merkle_for_every_pair_to_300() {
        use ct_merkle::mem_backed_tree::MemoryBackedTree;
        use ct_merkle::{ConsistencyProof, InclusionProof, RootHash};
        use sha2::Sha256;
        const N: u64 = 300;
        let leaves: Vec<Vec<u8>> = (0..N).map(|i| format!("leaf {i}").into_bytes()).collect();
        let t = tree(&leaves);
        let mut reference: MemoryBackedTree<Sha256, Vec<u8>> = MemoryBackedTree::new();
        let mut roots = vec![EMPTY_HASH];
        let mut checked = 0u64;
        for n in 1..=N {
            reference.push(leaves[n as usize - 1].clone());
            let root = tlog_tiles::tree_hash(n, &t).unwrap();
            assert_eq!(reference.root().as_bytes().as_slice(), root.0.as_slice(), "root of {n}");
            roots.push(root);
            let ct_root = RootHash::<Sha256>::new(root.0.into(), n);
            for i in 0..n {
                let p = tlog_tiles::prove_record(n, i, &t).unwrap();
                let bytes: Vec<u8> = p.iter().flat_map(|h| h.0).collect();
                ct_root
                    .verify_inclusion(&leaves[i as usize], i, &InclusionProof::from_bytes(bytes))
                    .unwrap();
                checked += 1;
            }
            for m in 1..n {
                let p = tlog_tiles::prove_tree(n, m, &t).unwrap();
                let bytes: Vec<u8> = p.iter().flat_map(|h| h.0).collect();
                let old = RootHash::<Sha256>::new(roots[m as usize].0.into(), m);
                ct_root
                    .verify_consistency(&old, &ConsistencyProof::try_from_bytes(bytes).unwrap())
                    .unwrap();
                checked += 1;
            }
            // The other direction, for the last leaf and the previous size.
            let theirs = reference.prove_inclusion(n as usize - 1);
            let hashes: Vec<Hash> = theirs
                .as_bytes()
                .chunks(32)
                .map(|c| Hash(c.try_into().unwrap()))
                .collect();
            tlog_tiles::check_record(&hashes, n, root, n - 1, record_hash(&leaves[n as usize - 1])).unwrap();
            if n > 1 {
                let theirs = reference.prove_consistency(1);
                let hashes: Vec<Hash> = theirs
                    .as_bytes()
                    .chunks(32)
                    .map(|c| Hash(c.try_into().unwrap()))
                    .collect();
                tlog_tiles::check_tree(&hashes, n, root, n - 1, roots[n as usize - 1]).unwrap();
            }
        }
        assert_eq!(checked, N * (N + 1) / 2 + N * (N - 1) / 2);
    }
}
