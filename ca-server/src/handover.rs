//! Handing the CA's Ed25519 keys over to their successors without an outage: the issuance log's
//! checkpoint key now; the membership key's handover is refused, saying so, until ledger nodes
//! and the SDKs follow it.
//!
//! Features:
//! - Every log key the CA has had is a row of `signing_keys` with its state: `incoming` (made,
//!   sealed with the CA's passphrase in the database so every replica opens it, published at
//!   `GET /api/v1/keys/log`, and co-signing every checkpoint beside the active key: a C2SP signed
//!   note carries both signatures, and a verifier ignores the one whose key it does not know),
//!   `active` (signing), `retired` (its sealed key erased). Number 1 is the key of
//!   initialisation, recorded at start-up; its key stays where init put it.
//! - `begin` makes the next key and appends the `begun` leaf
//!   (`identity::logleaf::LogLeaf::Key`), the first leaf whose checkpoint both keys sign. `finish`
//!   keeps the latest checkpoint (both signed it, and its tree holds the `begun` leaf) as the
//!   successor's `handover_checkpoint`, makes the successor active and the predecessor retired,
//!   and appends the `finished` leaf, signed by the successor alone. A verifier that pins the
//!   old key checks the handover checkpoint with it, finds the `begun` leaf naming both keys in
//!   the tree it commits to, and pins the new key from then on (`bsn audit`).
//! - Each step is one transaction under the issuance log's sequencer lock that also bumps
//!   `log_state.key_epoch`; every append compares the epoch with the keys its replica loaded, in
//!   the same transaction, so no replica signs with keys a step changed (crash story: kill -9 at
//!   any point leaves the step done or not done; a key made for a step that did not commit is
//!   never used).
//! - One handover at a time per purpose.
//!
//! - A CA whose log key is in a PKCS#11 token makes the successor in the token (labelled
//!   `<trust domain> log <number> <random>`) and destroys a retired one made there.
//!
//! Non-features (yet): handing over the membership key.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use identity::logleaf::{HandoverStep, KeyPurpose, LogLeaf};
use time::OffsetDateTime;

use crate::db::keys::{self as store, KeyRow};
use crate::db::{Db, NewKey};
use crate::log::{LogSigner, NewLeaf};

/// Why a handover step was refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum HandoverError {
    /// The step does not fit the current state; the text says what to do.
    #[error("{0}")]
    Refused(String),
    /// No key with this number.
    #[error("no {0} key number {1}")]
    Unknown(&'static str, i64),
    /// Storage, sealing or signing failed.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<crate::db::DbError> for HandoverError {
    fn from(e: crate::db::DbError) -> Self {
        Self::Internal(e.into())
    }
}

impl From<crate::log::LogError> for HandoverError {
    fn from(e: crate::log::LogError) -> Self {
        Self::Internal(e.into())
    }
}

/// Records the key of initialisation as number 1 of `purpose` unless one is recorded.
pub async fn record_first(
    db: &Db,
    purpose: KeyPurpose,
    public: &[u8; 32],
    now: OffsetDateTime,
) -> Result<(), HandoverError> {
    let wrote = store::record_first(
        &mut *db.acquire().await?,
        purpose.name(),
        &B64.encode(public),
        now.unix_timestamp(),
    )
    .await?;
    if wrote {
        tracing::info!(
            purpose = purpose.name(),
            "recorded the {} key as number 1",
            purpose.name()
        );
    }
    Ok(())
}

/// The handover service.
pub struct Handover<'a> {
    /// The store.
    pub db: &'a Db,
    /// The issuance log's signer.
    pub log: &'a LogSigner,
    /// Seals new keys.
    pub passphrase: &'a str,
    /// The CA's PKCS#11 token, when its keys are there: a log key in it is succeeded by one
    /// made in it.
    pub token: Option<&'a crate::hsm::InToken>,
}

fn public_of(row: &KeyRow) -> Result<[u8; 32], HandoverError> {
    B64.decode(&row.public_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| HandoverError::Internal(anyhow::anyhow!("key {} has a malformed public key", row.number)))
}

impl Handover<'_> {
    fn supported(&self, purpose: KeyPurpose) -> Result<(), HandoverError> {
        if purpose == KeyPurpose::Membership {
            return Err(HandoverError::Refused(
                "handing over the membership key is not supported yet: ledger nodes pin it".into(),
            ));
        }
        Ok(())
    }

    /// Begins handing `purpose`'s key over: a new key, sealed, `incoming`, and the `begun` leaf
    /// (whose checkpoint the new key co-signs). Refused while another handover is under way.
    pub async fn begin(&self, purpose: KeyPurpose, by: &str, now: OffsetDateTime) -> Result<KeyRow, HandoverError> {
        self.supported(purpose)?;
        let name = purpose.name();
        let refuse_busy = |rows: &[KeyRow]| match rows.iter().find(|r| r.state == "incoming") {
            Some(r) => Err(HandoverError::Refused(format!(
                "a handover is under way: {name} key {} is incoming; finish it before beginning another",
                r.number
            ))),
            None => Ok(rows.iter().map(|r| r.number).max().unwrap_or(0) + 1),
        };
        // Checked first without the lock, so a refused step costs no key work; then again under it.
        let number = refuse_busy(&store::all(&mut *self.db.acquire().await?, name).await?)?;
        let (public, key) = self.make(number)?;
        let at = now.unix_timestamp();
        let result = async {
            let mut tx = self.db.begin().await?;
            crate::log::lock_sequencer(&mut tx).await?;
            let rows = store::all(&mut tx, name).await?;
            if refuse_busy(&rows)? != number {
                return Err(HandoverError::Refused(format!(
                    "another administrator began handing over the {name} key meanwhile; see `bsn keys list {name}`"
                )));
            }
            let active = rows
                .iter()
                .find(|r| r.state == "active")
                .ok_or_else(|| HandoverError::Internal(anyhow::anyhow!("no active {name} key is recorded")))?;
            store::insert_incoming(&mut tx, name, number, &B64.encode(public), &key, at).await?;
            store::bump_epoch(&mut tx).await?;
            self.append(
                &mut tx,
                purpose,
                HandoverStep::Begun,
                number,
                by,
                public_of(active)?,
                public,
                at,
            )
            .await?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        if let (Err(_), NewKey::Token(label), Some(t)) = (&result, &key, self.token) {
            // The key made for a step that did not commit is no one's.
            t.destroy(label);
        }
        self.settle(result).await?;
        tracing::info!(purpose = name, key = number, by, "{name} key handover begun");
        self.row(name, number).await
    }

    /// Finishes the handover to `purpose`'s incoming key `number`: the latest checkpoint (both
    /// keys signed it) is kept as its handover checkpoint, it becomes active, its predecessor is
    /// retired, and the `finished` leaf's checkpoint is the first it signs alone.
    pub async fn finish(
        &self,
        purpose: KeyPurpose,
        number: i64,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<KeyRow, HandoverError> {
        self.supported(purpose)?;
        let name = purpose.name();
        let at = now.unix_timestamp();
        let result = async {
            let mut tx = self.db.begin().await?;
            crate::log::lock_sequencer(&mut tx).await?;
            let rows = store::all(&mut tx, name).await?;
            let row = rows
                .iter()
                .find(|r| r.number == number)
                .ok_or(HandoverError::Unknown(name, number))?;
            if row.state != "incoming" {
                return Err(HandoverError::Refused(format!(
                    "{name} key {number} is {}: only an incoming key can take over (begin a handover first)",
                    row.state
                )));
            }
            let active = rows
                .iter()
                .find(|r| r.state == "active")
                .ok_or_else(|| HandoverError::Internal(anyhow::anyhow!("no active {name} key is recorded")))?;
            let (old, new) = (public_of(active)?, public_of(row)?);
            let (_, checkpoint) = crate::log::latest(&mut tx).await?;
            // Both keys signed it: the `begun` leaf's append and every one since were signed so.
            for key in [&old, &new] {
                let vkey = crate::log::vkey_of(self.log.origin(), key);
                crate::log::open_with(&vkey, &checkpoint).map_err(|e| {
                    HandoverError::Internal(anyhow::anyhow!(
                        "the latest checkpoint is not signed by both keys ({e}); retry"
                    ))
                })?;
            }
            if !store::finish(&mut tx, name, number, Some(&checkpoint), at).await? {
                return Err(HandoverError::Internal(anyhow::anyhow!(
                    "{name} key {number} changed under the lock"
                )));
            }
            store::bump_epoch(&mut tx).await?;
            self.append(&mut tx, purpose, HandoverStep::Finished, number, by, old, new, at)
                .await?;
            tx.commit().await?;
            Ok(active.key_label.clone())
        }
        .await;
        let retired = self.settle(result).await?;
        if let (Some(label), Some(t)) = (retired, self.token) {
            t.destroy(&label);
        }
        tracing::info!(purpose = name, key = number, by, "{name} key handover finished");
        self.row(name, number).await
    }

    /// After a step: whether it committed or not, this replica's signer reads the stored keys
    /// again (a step that failed after its append may have loaded keys that never committed).
    async fn settle<T>(&self, result: Result<T, HandoverError>) -> Result<T, HandoverError> {
        if result.is_err() {
            self.log.forget();
        }
        self.log.reload(&mut *self.db.acquire().await?).await?;
        result
    }

    /// A new Ed25519 key for log key `number`: in the token when the log key is there, else
    /// sealed with the passphrase. Returns its public key and where it is kept.
    fn make(&self, number: i64) -> Result<([u8; 32], NewKey), HandoverError> {
        let internal = |e: &dyn std::fmt::Display| HandoverError::Internal(anyhow::anyhow!("{e}"));
        if let Some(t) = self.token
            && t.log_label.is_some()
        {
            let label = t.label("log", number);
            let key = t.token.generate_ed25519(&label).map_err(|e| internal(&e))?;
            return Ok((crate::hsm::EdKey::Token(key).public(), NewKey::Token(label)));
        }
        let pkcs8 = LogSigner::generate()?;
        let key = ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| internal(&e))?;
        let public = crate::hsm::EdKey::Software(key).public();
        let sealed = crate::keystore::blocking(|| {
            crate::keystore::seal(self.passphrase, &crate::log::key_label(number), &pkcs8)
        })
        .map_err(|e| internal(&e))?;
        Ok((public, NewKey::Sealed(sealed)))
    }

    #[allow(clippy::too_many_arguments)]
    async fn append(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        purpose: KeyPurpose,
        step: HandoverStep,
        number: i64,
        by: &str,
        old_key: [u8; 32],
        new_key: [u8; 32],
        at: i64,
    ) -> Result<(), HandoverError> {
        let leaf = LogLeaf::Key {
            time: at.max(0) as u64,
            purpose,
            step,
            number: number as u64,
            authorized_by: by.to_string(),
            old_key,
            new_key,
        };
        let new = NewLeaf {
            bytes: leaf.encode().map_err(anyhow::Error::from)?,
            kind: "key",
            serial: String::new(),
            identity: by.to_string(),
            at,
        };
        crate::log::append(tx, self.db.backend, self.log, &[new], false).await?;
        Ok(())
    }

    async fn row(&self, name: &'static str, number: i64) -> Result<KeyRow, HandoverError> {
        store::all(&mut *self.db.acquire().await?, name)
            .await?
            .into_iter()
            .find(|r| r.number == number)
            .ok_or(HandoverError::Unknown(name, number))
    }
}
