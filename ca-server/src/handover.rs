//! Handing the CA's Ed25519 keys over to their successors without an outage: the issuance
//! log's checkpoint key and the membership key.
//!
//! Features:
//! - Every key the CA has had is a row of `signing_keys` with its state: `incoming` (made,
//!   sealed with the CA's passphrase in the database so every replica opens it, or made in the
//!   CA's token when the key it succeeds is there; published at `GET /api/v1/keys/{purpose}`),
//!   `active` (signing), `retired` (its sealed key erased). Number 1 is the key of
//!   initialisation, recorded at start-up; its key stays where init put it until retired.
//! - The log key: an incoming key co-signs every checkpoint beside the active key (a C2SP
//!   signed note carries both signatures, and a verifier ignores the one whose key it does not
//!   know). `begin` makes the next key and appends the `begun` leaf
//!   (`identity::logleaf::LogLeaf::Key`), the first leaf whose checkpoint both keys sign.
//!   `finish` keeps the latest checkpoint (both signed it, and its tree holds the `begun` leaf)
//!   as the successor's `handover_checkpoint`, makes the successor active and the predecessor
//!   retired, and appends the `finished` leaf, signed by the successor alone. A verifier that
//!   pins the old key checks the handover checkpoint with it, finds the `begun` leaf naming both
//!   keys in the tree it commits to, and pins the new key from then on (`bsn audit`).
//! - The membership key: `begin` makes and publishes the next key (nothing is signed with it
//!   yet, so nodes can be told of it ahead); `finish` signs the handover
//!   (`identity::membership::KeyHandover`: both keys sign its terms) and keeps it in the
//!   successor's row, makes the successor active (statements, directory revisions and heartbeats
//!   are signed by it from then on), retires and erases the predecessor (number 1's sealed copy
//!   in `ca_meta` too), appends the `finished` leaf and announces the handover on the feed to
//!   every node. A node, an SDK or `bsn` follows it from the key it pinned
//!   (`identity::membership::MembershipKeys`); statements signed before stay valid.
//! - Each step is one transaction under the issuance log's sequencer lock that also bumps
//!   `log_state.key_epoch`; every append (and every statement or directory revision) compares
//!   the epoch with the keys its replica loaded, in the same transaction, so no replica signs
//!   with keys a step changed (crash story: kill -9 at any point leaves the step done or not
//!   done; a key made for a step that did not commit is never used).
//! - One handover at a time per purpose.
//! - A key made in the token is labelled `<trust domain> <purpose> <number> <random>`; a retired
//!   one made there is destroyed.
//!
//! Non-features: recovering from a stolen membership key (a handover is for a key that is still
//! the CA's alone; verifiers keep accepting what the old key signed).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use identity::logleaf::{HandoverStep, KeyPurpose, LogLeaf};
use identity::membership::{HANDOVER_CONTEXT, HandoverTerms, KeyHandover};
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
        &mut *db.acquire_writer().await?,
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

/// `name`'s incoming key `number` and the active key, or why a handover cannot finish.
fn incoming_and_active<'r>(
    rows: &'r [KeyRow],
    name: &'static str,
    number: i64,
) -> Result<(&'r KeyRow, &'r KeyRow), HandoverError> {
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
    Ok((row, active))
}

/// The handover service.
pub struct Handover<'a> {
    /// The store.
    pub db: &'a Db,
    /// The issuance log's signer.
    pub log: &'a LogSigner,
    /// Seals new keys.
    pub passphrase: &'a str,
    /// The CA's PKCS#11 token, when its keys are there: a key in it is succeeded by one made
    /// in it.
    pub token: Option<&'a crate::hsm::InToken>,
    /// The membership signer (opens the keys that sign a membership handover, and follows it).
    pub membership: &'a crate::registry::MembershipSigner,
    /// Woken after a membership handover's feed event.
    pub feed: &'a tokio::sync::watch::Sender<u64>,
}

fn public_of(row: &KeyRow) -> Result<[u8; 32], HandoverError> {
    B64.decode(&row.public_key)
        .ok()
        .and_then(|b| b.try_into().ok())
        .ok_or_else(|| HandoverError::Internal(anyhow::anyhow!("key {} has a malformed public key", row.number)))
}

impl Handover<'_> {
    /// Begins handing `purpose`'s key over: a new key, sealed, `incoming`, and the `begun` leaf
    /// (whose checkpoint the new key co-signs). Refused while another handover is under way.
    pub async fn begin(&self, purpose: KeyPurpose, by: &str, now: OffsetDateTime) -> Result<KeyRow, HandoverError> {
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
        let (public, key) = self.make(purpose, number)?;
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

    /// Finishes the handover to `purpose`'s incoming key `number`: it becomes active and its
    /// predecessor retired. For the log key, the latest checkpoint (both keys signed it) is kept
    /// as its handover checkpoint and the `finished` leaf's checkpoint is the first it signs
    /// alone; for the membership key, the handover both keys signed is kept and announced.
    pub async fn finish(
        &self,
        purpose: KeyPurpose,
        number: i64,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<KeyRow, HandoverError> {
        let name = purpose.name();
        let at = now.unix_timestamp();
        // Signed before the transaction: opening a sealed key is slow on purpose.
        let membership = match purpose {
            KeyPurpose::Membership => Some(self.sign_membership_handover(number, at).await?),
            KeyPurpose::Log => None,
        };
        let result = async {
            let mut tx = self.db.begin().await?;
            crate::log::lock_sequencer(&mut tx).await?;
            let rows = store::all(&mut tx, name).await?;
            let (row, active) = incoming_and_active(&rows, name, number)?;
            let (old, new) = (public_of(active)?, public_of(row)?);
            let proof = match &membership {
                Some((from, handover)) => {
                    if *from != active.number {
                        return Err(HandoverError::Refused(format!(
                            "the active membership key changed meanwhile (now {}); finish again",
                            active.number
                        )));
                    }
                    serde_json::to_string(handover).map_err(anyhow::Error::from)?
                }
                None => {
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
                    checkpoint
                }
            };
            if !store::finish(&mut tx, name, number, Some(&proof), at).await? {
                return Err(HandoverError::Internal(anyhow::anyhow!(
                    "{name} key {number} changed under the lock"
                )));
            }
            if membership.is_some() && active.number == 1 {
                store::erase_first_membership_key(&mut tx).await?;
            }
            store::bump_epoch(&mut tx).await?;
            self.append(&mut tx, purpose, HandoverStep::Finished, number, by, old, new, at)
                .await?;
            if membership.is_some() {
                let seq = crate::db::registry::next_seq(&mut tx).await?;
                store::insert_feed_event(&mut tx, seq, number, at).await?;
            }
            tx.commit().await?;
            Ok(active.key_label.clone())
        }
        .await;
        let retired = self.settle(result).await?;
        if let (Some(label), Some(t)) = (retired, self.token) {
            t.destroy(&label);
        }
        if membership.is_some() {
            crate::registry::wake_feed(self.feed);
        }
        tracing::info!(purpose = name, key = number, by, "{name} key handover finished");
        self.row(name, number).await
    }

    /// The membership handover to incoming key `number`, signed by the active key and by it.
    /// Returns the active key's number with it (checked again under the lock).
    async fn sign_membership_handover(&self, number: i64, at: i64) -> Result<(i64, KeyHandover), HandoverError> {
        let name = KeyPurpose::Membership.name();
        let rows = store::all(&mut *self.db.acquire().await?, name).await?;
        let (row, active) = incoming_and_active(&rows, name, number)?;
        let (old, new) = (self.membership.key_of(active)?, self.membership.key_of(row)?);
        for (key, r) in [(&old, active), (&new, row)] {
            if B64.encode(key.public()) != r.public_key {
                return Err(HandoverError::Internal(anyhow::anyhow!(
                    "membership key {} is not the key recorded for it",
                    r.number
                )));
            }
        }
        let terms = HandoverTerms {
            version: 1,
            trust_domain: self.membership.trust_domain().to_string(),
            from: active.public_key.clone(),
            to: row.public_key.clone(),
            number: number as u64,
            issued_at: at,
        };
        let payload = serde_json::to_vec(&terms).map_err(anyhow::Error::from)?;
        let message = identity::membership::signed_message(HANDOVER_CONTEXT, &payload);
        let sign = |k: &crate::hsm::EdKey| {
            k.sign(&message)
                .map(|s| B64.encode(s))
                .map_err(|e| HandoverError::Internal(anyhow::anyhow!("signing the membership handover: {e}")))
        };
        let handover = KeyHandover {
            payload: B64.encode(&payload),
            from_signature: sign(&old)?,
            to_signature: sign(&new)?,
        };
        handover
            .verify()
            .map_err(|e| HandoverError::Internal(anyhow::anyhow!("the membership handover does not verify: {e}")))?;
        Ok((active.number, handover))
    }

    /// After a step: whether it committed or not, this replica's signers read the stored keys
    /// again (a step that failed after its append may have loaded keys that never committed).
    async fn settle<T>(&self, result: Result<T, HandoverError>) -> Result<T, HandoverError> {
        if result.is_err() {
            self.log.forget();
            self.membership.forget();
        }
        let mut c = self.db.acquire().await?;
        self.log.reload(&mut c).await?;
        self.membership.reload(&mut c).await?;
        result
    }

    /// A new Ed25519 key for `purpose`'s key `number`: in the token when the key it succeeds is
    /// there, else sealed with the passphrase. Returns its public key and where it is kept.
    fn make(&self, purpose: KeyPurpose, number: i64) -> Result<([u8; 32], NewKey), HandoverError> {
        let internal = |e: &dyn std::fmt::Display| HandoverError::Internal(anyhow::anyhow!("{e}"));
        let (in_token, sealed_label) = match purpose {
            KeyPurpose::Log => (
                self.token.is_some_and(|t| t.log_label.is_some()),
                crate::log::key_label(number),
            ),
            KeyPurpose::Membership => (
                self.token.is_some_and(|t| t.membership_label.is_some()),
                crate::registry::key_label(number),
            ),
        };
        if let Some(t) = self.token
            && in_token
        {
            let label = t.label(purpose.name(), number);
            let key = t.token.generate_ed25519(&label).map_err(|e| internal(&e))?;
            return Ok((crate::hsm::EdKey::Token(key).public(), NewKey::Token(label)));
        }
        let pkcs8 = LogSigner::generate()?;
        let key = ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|e| internal(&e))?;
        let public = crate::hsm::EdKey::Software(key).public();
        let sealed = crate::keystore::blocking(|| crate::keystore::seal(self.passphrase, &sealed_label, &pkcs8))
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
