//! Rotation of the root without an outage: publish the next root beside the current one with
//! a cross-certificate, switch the certification of new intermediates to it, and withdraw the
//! old one once everything it certified has retired.
//!
//! Features:
//! - Every root the CA has had is a row of `roots` with its state: `published` (in the trust
//!   bundle and the SPIFFE bundle beside the active root, with its CRL, announced to every node
//!   on the feed), `active` (it certifies the next intermediates; exactly one), `retiring`
//!   (replaced: still trusted while intermediates it certified live), `withdrawn` (out of the
//!   bundles; its key erased or destroyed in the token). Number 1 is the root of initialisation,
//!   recorded at start-up.
//! - The cross-certificate: the new root's subject and key certified by the root before it.
//!   Every chain the CA hands out under the new root (`Ca::chain`) carries it after the
//!   intermediate, so a relying party or node that pinned only the old root verifies a leaf of
//!   the new hierarchy at once (leaf, intermediate, cross-certificate, old root), and one that
//!   pinned the new root ignores it. Nodes also learn it from the feed for clients that send only
//!   their leaf.
//! - Withdrawing the old root takes it out of the bundles and the combined CRL file and
//!   destroys its key (erased from the row, destroyed in the token, and for root 1 the data
//!   directory's `root.key.sealed` deleted, by each replica when it notices), so nothing can be
//!   certified under it again. The cross-certificates stay in the chains (see [`cross_chain`]).
//! - Where the new root comes from: a CA that holds the current root's key (in its data
//!   directory or its token) makes it (the key sealed in the row, or generated in the token);
//!   under an offline root its operator makes it with `ca-server root rotate` and the CA checks
//!   what it is given (self-signed, a new key, the cross-certificate for exactly that subject and
//!   key and signed by the current root, a current CRL of the new root) before anything changes.
//! - Each step is one transaction under the issuance log's sequencer lock: the state change, the
//!   log leaf (`identity::logleaf::LogLeaf::Root`, which `bsn audit verify` checks), and the feed
//!   event for every node. Crash story: kill -9 at any point leaves the step done or not done; a
//!   key made in the token for a step that did not commit is destroyed, and a sealed one never
//!   reached the database.
//! - One rotation at a time: a root cannot be added while another is `published`; a root is
//!   withdrawn only once every intermediate it certified is retired.
//!
//! - A later root's CRL is re-signed by any replica that holds its key once half its lifetime
//!   has passed ([`refresh_crls`], checked every minute); under an offline root its operator
//!   signs the next one with `ca-server root crl --root-dir` and an administrator installs it
//!   ([`RootRotation::install_crl`]: signed by that root, unexpired, newer than the one stored).
//!
//! Non-features (yet): a node's pinned bundle does not change (it keeps verifying new leaves
//! through the cross-certificate, which ends with the old root, so a node stops trusting a
//! withdrawn root only when its operator replaces `ca-bundle.pem` and restarts it: withdrawal
//! retires a root, it does not answer its compromise), and the CA's own TLS verifier trusts the
//! roots it loaded at start-up.

use rcgen::KeyPair;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::db::roots::{self as store, NewRoot, RootRow};
use crate::db::{Db, NewKey};
use crate::keystore::blocking;
use crate::log::{LogSigner, NewLeaf};
use crate::pki::CaSigner;
use crate::rotation::{Keys, RotationError};
use identity::logleaf::{LogLeaf, RootStep};

/// Records the root of initialisation as number 1 if nothing is recorded yet.
pub async fn record_first(db: &Db, der: &[u8], now: OffsetDateTime) -> Result<(), RotationError> {
    if store::record_first(&mut *db.acquire_writer().await?, der, now.unix_timestamp()).await? {
        tracing::info!("recorded the root as number 1");
    }
    Ok(())
}

fn key_label(number: i64) -> String {
    format!("root-{number}")
}

fn internal(e: impl std::fmt::Display) -> RotationError {
    RotationError::Internal(anyhow::anyhow!("{e}"))
}

/// Root `row`'s signing key, when this CA holds it: root 1's in the token or the data
/// directory, a later one's in the token or sealed in its row. `None` under an offline root.
/// Blocking (opening a sealed key is slow on purpose).
pub fn signer(keys: &Keys, row: &RootRow) -> Result<Option<CaSigner>, RotationError> {
    let token_key = |label: &str| -> Result<Option<CaSigner>, RotationError> {
        let t = keys.token.as_ref().ok_or_else(|| {
            internal(format!(
                "root {}'s key is in a PKCS#11 token, and this CA has none configured",
                row.number
            ))
        })?;
        Ok(Some(CaSigner::token(t.token.key(label).map_err(internal)?)))
    };
    if row.number == 1 {
        if let Some(label) = keys.token.as_ref().and_then(|t| t.root_label.as_deref()) {
            return token_key(label);
        }
        let Ok(sealed) = std::fs::read_to_string(keys.paths.root_key()) else {
            return Ok(None);
        };
        let der = crate::keystore::open(&keys.passphrase, "root", &sealed).map_err(internal)?;
        return Ok(Some(CaSigner::software(
            KeyPair::try_from(der.as_slice()).map_err(internal)?,
        )));
    }
    if let Some(label) = &row.key_label {
        return token_key(label);
    }
    let Some(sealed) = &row.key_sealed else {
        return Ok(None);
    };
    let der = crate::keystore::open(&keys.passphrase, &key_label(row.number), sealed).map_err(internal)?;
    Ok(Some(CaSigner::software(
        KeyPair::try_from(der.as_slice()).map_err(internal)?,
    )))
}

/// Destroys what is left of withdrawn root `row`'s key outside the database: its token key
/// (root 1's is the one `ca.toml` names), and root 1's `root.key.sealed` in this replica's data
/// directory. Run after the step commits, and by every replica when it notices the step.
pub fn forget_withdrawn_key(keys: &Keys, row: &RootRow) {
    let label = match (&row.key_label, row.number) {
        (Some(l), _) => Some(l.clone()),
        (None, 1) => keys.token.as_ref().and_then(|t| t.root_label.clone()),
        _ => None,
    };
    if let (Some(label), Some(t)) = (label, &keys.token) {
        t.destroy(&label);
    }
    if row.number == 1 {
        match std::fs::remove_file(keys.paths.root_key()) {
            Ok(()) => tracing::info!("root 1 is withdrawn: its sealed key in this data directory is deleted"),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => tracing::warn!(error = %e, "root 1 is withdrawn, and its sealed key could not be deleted"),
        }
    }
}

/// The active root.
pub fn active(rows: &[RootRow]) -> Result<&RootRow, RotationError> {
    rows.iter()
        .find(|r| r.state == "active")
        .ok_or_else(|| internal("no active root"))
}

/// The cross-certificates a leaf of an intermediate certified by root `root` is sent with: from
/// that root back to root 1, each certified by the one before. They stay in the chain after
/// the older root is withdrawn (a cross-certificate cannot outlive the root that signed it):
/// anything that still pins the old root, such as a city node's `ca-bundle.pem` or the CA's own
/// TLS verifier until it restarts, keeps verifying new leaves, and a verifier that has the new
/// root ignores them.
pub fn cross_chain(rows: &[RootRow], root: i64) -> Vec<CertificateDer<'static>> {
    let mut out = Vec::new();
    let mut n = root;
    while n > 1 {
        match rows.iter().find(|r| r.number == n).and_then(|r| r.cross.as_ref()) {
            Some(c) => out.push(CertificateDer::from(c.clone())),
            None => break,
        }
        n -= 1;
    }
    out
}

/// thisUpdate and nextUpdate of a DER CRL, Unix seconds.
fn crl_times(der: &[u8]) -> Option<(i64, i64)> {
    let (_, crl) = x509_parser::parse_x509_crl(der).ok()?;
    Some((crl.last_update().timestamp(), crl.next_update()?.timestamp()))
}

/// Re-signs the CRL of every trusted later root whose CRL is past half its lifetime and whose
/// key this CA holds. Returns the roots re-signed. Replicas may both re-sign one: each CRL is
/// valid and numbered by its signing time, and the later write stays.
pub async fn refresh_crls(db: &Db, keys: &Keys, now: OffsetDateTime) -> Result<Vec<i64>, RotationError> {
    let rows = store::all(&mut *db.acquire().await?).await?;
    let t = now.unix_timestamp();
    let mut done = Vec::new();
    for row in rows.iter().filter(|r| r.number > 1 && r.trusted()) {
        let due = row
            .crl
            .as_deref()
            .and_then(crl_times)
            .is_none_or(|(this, next)| t >= this + (next - this) / 2);
        if !due || (row.key_label.is_none() && row.key_sealed.is_none()) {
            continue;
        }
        let crl = blocking(|| -> Result<Option<Vec<u8>>, RotationError> {
            let Some(key) = signer(keys, row)? else { return Ok(None) };
            crate::pki::sign_root_crl(&row.der, key, now, keys.policy.root_crl_validity)
                .map(Some)
                .map_err(internal)
        })?;
        if let Some(crl) = crl {
            store::set_crl(&mut *db.acquire_writer().await?, row.number, &crl).await?;
            done.push(row.number);
        }
    }
    Ok(done)
}

/// What an offline root's operator gives for the next root (`ca-server root rotate`).
#[derive(Debug, Clone)]
pub struct GivenRoot {
    /// The new root, PEM.
    pub certificate: String,
    /// Its cross-certificate signed by the current root, PEM.
    pub cross: String,
    /// Its first CRL, PEM (or DER bytes as text are refused).
    pub crl: String,
}

/// The root rotation service.
pub struct RootRotation<'a> {
    /// The store.
    pub db: &'a Db,
    /// The issuance log's key.
    pub log: &'a LogSigner,
    /// The keys.
    pub keys: &'a Keys,
    /// Woken after each committed step that wrote a feed event.
    pub feed: &'a tokio::sync::watch::Sender<u64>,
}

fn find(rows: &[RootRow], number: i64) -> Result<&RootRow, RotationError> {
    rows.iter()
        .find(|r| r.number == number)
        .ok_or(RotationError::Unknown("root", number))
}

impl RootRotation<'_> {
    /// Publishes the next root: made here with the current root's key when the CA holds it, or
    /// `given` by the offline root's operator and checked. Refused while another root is
    /// `published`, and (given) when the files do not hold together.
    pub async fn add(&self, given: Option<GivenRoot>, by: &str, now: OffsetDateTime) -> Result<RootRow, RotationError> {
        let refuse_busy = |rows: &[RootRow]| match rows.iter().find(|r| r.state == "published") {
            Some(r) => Err(RotationError::Refused(format!(
                "a root rotation is under way: root {} is published; activate it before adding another",
                r.number
            ))),
            None => Ok(rows.iter().map(|r| r.number).max().unwrap_or(0) + 1),
        };
        let rows = store::all(&mut *self.db.acquire().await?).await?;
        let number = refuse_busy(&rows)?;
        let current = active(&rows)?.clone();
        let made = match given {
            Some(g) => Made::given(&g, &current, &self.keys.trust_domain, now)?,
            None => {
                let keys = self.keys;
                blocking(|| Made::here(keys, &current, number, now))?
            }
        };
        let result = async {
            let mut tx = self.db.begin().await?;
            crate::log::lock_sequencer(&mut tx).await?;
            let rows = store::all(&mut tx).await?;
            if refuse_busy(&rows)? != number || active(&rows)?.number != current.number {
                return Err(RotationError::Refused(format!(
                    "another administrator changed the roots meanwhile (root {number} exists or the active root changed); \
                     see `bsn roots list`"
                )));
            }
            let at = now.unix_timestamp();
            store::insert(
                &mut tx,
                &NewRoot {
                    number,
                    der: &made.der,
                    cross: &made.cross,
                    crl: &made.crl,
                    key: made.key.as_ref(),
                },
                at,
            )
            .await?;
            self.log_and_announce(&mut tx, RootStep::Published, number, by, &made.der, &made.cross, at)
                .await?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        if let (Err(_), Some(NewKey::Token(label)), Some(t)) = (&result, &made.key, &self.keys.token) {
            // The key made for a step that did not commit is no one's.
            t.destroy(label);
        }
        result?;
        crate::registry::wake_feed(self.feed);
        tracing::info!(
            root = number,
            by,
            "root {number} published beside root {}",
            current.number
        );
        let rows = store::all(&mut *self.db.acquire().await?).await?;
        Ok(find(&rows, number)?.clone())
    }

    /// Takes `step` for root `number`:
    /// - `Activated` (from `published`): the intermediates made from now on are certified by it;
    ///   the active one becomes `retiring` (still trusted);
    /// - `Withdrawn` (from `retiring`), once every intermediate it certified is retired: it
    ///   leaves the bundles and its key is erased (destroyed in the token).
    ///
    /// Each with its log leaf and feed event, in one transaction.
    pub async fn step(
        &self,
        step: RootStep,
        number: i64,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<RootRow, RotationError> {
        let (from, to) = match step {
            RootStep::Published => {
                return Err(RotationError::Refused(
                    "a root is published by adding it (`bsn roots add`)".into(),
                ));
            }
            RootStep::Activated => ("published", "active"),
            RootStep::Withdrawn => ("retiring", "withdrawn"),
        };
        let at = now.unix_timestamp();
        let mut tx = self.db.begin().await?;
        crate::log::lock_sequencer(&mut tx).await?;
        let rows = store::all(&mut tx).await?;
        let row = find(&rows, number)?.clone();
        if row.state != from {
            let what = match step {
                RootStep::Activated => "only a `published` root can be activated",
                _ => "only a `retiring` root can be withdrawn (activate its successor first)",
            };
            return Err(RotationError::Refused(format!(
                "root {number} is {}: {what}",
                row.state
            )));
        }
        match step {
            RootStep::Activated => {
                let busy = crate::db::intermediates::all(&mut tx)
                    .await?
                    .into_iter()
                    .find(|r| r.state == "requested");
                if let Some(r) = busy {
                    return Err(RotationError::Refused(format!(
                        "intermediate {} waits for the current root's signature (requested): adopt it or \
                         finish that rotation before switching roots",
                        r.number
                    )));
                }
                let old = active(&rows)?;
                store::set_state(&mut tx, old.number, "active", "retiring", at).await?;
            }
            _ => {
                let live = store::live_intermediates(&mut tx, number).await?;
                if !live.is_empty() {
                    let list: Vec<String> = live.iter().map(|(n, s)| format!("{n} ({s})")).collect();
                    return Err(RotationError::Refused(format!(
                        "root {number} still certifies intermediates that are not retired: {}; rotate them to \
                         an intermediate of the new root and retire them first",
                        list.join(", ")
                    )));
                }
                store::drop_key(&mut tx, number).await?;
            }
        }
        if !store::set_state(&mut tx, number, from, to, at).await? {
            return Err(internal(format!("root {number} changed under the lock")));
        }
        let cross = row.cross.clone().unwrap_or_default();
        self.log_and_announce(&mut tx, step, number, by, &row.der, &cross, at)
            .await?;
        tx.commit().await?;
        if step == RootStep::Withdrawn {
            forget_withdrawn_key(self.keys, &row);
        }
        crate::registry::wake_feed(self.feed);
        tracing::info!(root = number, step = step.name(), by, "root {}", step.name());
        let rows = store::all(&mut *self.db.acquire().await?).await?;
        Ok(find(&rows, number)?.clone())
    }

    /// Installs a CRL the offline operator of root `number` (a later root; root 1's is
    /// `ca-server root install-crl`) signed: it must be that root's, unexpired, and newer than
    /// the one published.
    pub async fn install_crl(&self, number: i64, crl_pem: &str, now: OffsetDateTime) -> Result<RootRow, RotationError> {
        use rustls_pki_types::pem::PemObject;
        let refused = |m: String| RotationError::Refused(m);
        let der = rustls_pki_types::CertificateRevocationListDer::from_pem_slice(crl_pem.as_bytes())
            .map_err(|e| refused(format!("crl: not one PEM CRL: {e}")))?;
        let rows = store::all(&mut *self.db.acquire().await?).await?;
        let row = find(&rows, number)?;
        if number == 1 {
            return Err(refused(
                "root 1's CRL is the data directory's file: install it with `ca-server root install-crl`".into(),
            ));
        }
        if !row.trusted() {
            return Err(refused(format!(
                "root {number} is withdrawn: its CRL is no longer published"
            )));
        }
        let (_, root) = x509_parser::parse_x509_certificate(&row.der).map_err(internal)?;
        let (_, crl) = x509_parser::parse_x509_crl(&der).map_err(|e| refused(format!("crl: {e}")))?;
        if crl.issuer() != root.subject() || crl.verify_signature(root.public_key()).is_err() {
            return Err(refused(format!(
                "this CRL was not signed by root {number} ({}): it is another root's, or damaged",
                root.subject()
            )));
        }
        let (this, next) = crl_times(&der).ok_or_else(|| refused("this CRL has no nextUpdate".into()))?;
        if next <= now.unix_timestamp() {
            return Err(refused(
                "this CRL has expired: sign a new one with `ca-server root crl --root-dir DIR`".into(),
            ));
        }
        if let Some((current, _)) = row.crl.as_deref().and_then(crl_times)
            && this <= current
        {
            return Err(refused(
                "this CRL is not newer than the published one; nothing changed".into(),
            ));
        }
        store::set_crl(&mut *self.db.acquire_writer().await?, number, &der).await?;
        tracing::info!(root = number, "root {number}'s CRL installed");
        let rows = store::all(&mut *self.db.acquire().await?).await?;
        Ok(find(&rows, number)?.clone())
    }

    #[allow(clippy::too_many_arguments)]
    async fn log_and_announce(
        &self,
        tx: &mut sqlx::Transaction<'static, sqlx::Any>,
        step: RootStep,
        number: i64,
        by: &str,
        der: &[u8],
        cross: &[u8],
        at: i64,
    ) -> Result<(), RotationError> {
        let leaf = LogLeaf::Root {
            time: at.max(0) as u64,
            step,
            number: number as u64,
            authorized_by: by.to_string(),
            certificate: der.to_vec(),
            cross: cross.to_vec(),
        };
        let new = NewLeaf {
            bytes: leaf.encode().map_err(anyhow::Error::from)?,
            kind: "root",
            serial: String::new(),
            identity: by.to_string(),
            at,
        };
        crate::log::append(tx, self.db.backend, self.log, &[new], true).await?;
        let seq = crate::db::registry::next_seq(tx).await?;
        store::insert_feed_event(tx, seq, number, step.name(), at).await?;
        Ok(())
    }
}

/// A new root ready to be stored.
struct Made {
    der: Vec<u8>,
    cross: Vec<u8>,
    crl: Vec<u8>,
    key: Option<NewKey>,
}

impl Made {
    /// Makes root `number` here, certified by `current`'s key (which the CA must hold).
    fn here(keys: &Keys, current: &RootRow, number: i64, now: OffsetDateTime) -> Result<Self, RotationError> {
        let old_key = signer(keys, current)?.ok_or_else(|| {
            RotationError::Refused(format!(
                "this CA does not hold root {}'s key (the root is offline): make the next root with \
                 `ca-server root rotate --root-dir DIR --new-root-dir NEW` on the root's machine and give its \
                 files to `bsn roots add --certificate NEW/root.pem --cross NEW/cross.pem --crl NEW/root-crl.der`",
                current.number
            ))
        })?;
        let n = u32::try_from(number).map_err(internal)?;
        let validity = keys.policy.root_crl_validity;
        if let Some(t) = &keys.token {
            let label = t.label("root CA", number);
            let key = t.token.generate_p256(&label).map_err(internal)?;
            let made = crate::pki::next_root(&keys.trust_domain, n, now, &key, &current.der, &old_key).and_then(
                |(der, cross)| {
                    let crl = crate::pki::sign_root_crl(&der, &key, now, validity)?;
                    Ok((der, cross, crl))
                },
            );
            return match made {
                Ok((der, cross, crl)) => Ok(Self {
                    der,
                    cross,
                    crl,
                    key: Some(NewKey::Token(label)),
                }),
                Err(e) => {
                    t.destroy(&label);
                    Err(internal(e))
                }
            };
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(internal)?;
        let (der, cross) =
            crate::pki::next_root(&keys.trust_domain, n, now, &key, &current.der, &old_key).map_err(internal)?;
        let crl = crate::pki::sign_root_crl(&der, &key, now, validity).map_err(internal)?;
        let sealed =
            crate::keystore::seal(&keys.passphrase, &key_label(number), &key.serialize_der()).map_err(internal)?;
        Ok(Self {
            der,
            cross,
            crl,
            key: Some(NewKey::Sealed(sealed)),
        })
    }

    /// Checks what the offline root's operator gave.
    fn given(g: &GivenRoot, current: &RootRow, trust_domain: &str, now: OffsetDateTime) -> Result<Self, RotationError> {
        use rustls_pki_types::pem::PemObject;
        let refused = |m: String| RotationError::Refused(m);
        let der = CertificateDer::from_pem_slice(g.certificate.as_bytes())
            .map_err(|e| refused(format!("certificate: not one PEM certificate: {e}")))?;
        let cross = CertificateDer::from_pem_slice(g.cross.as_bytes())
            .map_err(|e| refused(format!("cross: not one PEM certificate: {e}")))?;
        let crl = rustls_pki_types::CertificateRevocationListDer::from_pem_slice(g.crl.as_bytes())
            .map_err(|e| refused(format!("crl: not one PEM CRL: {e}")))?;
        crate::pki::check_next_root(&der, &cross, &crl, &current.der, now)
            .map_err(|e| refused(format!("the new root is refused: {e}")))?;
        if let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der)
            && cert.subject().iter_organization().next().and_then(|a| a.as_str().ok()) != Some(trust_domain)
        {
            return Err(refused(format!(
                "the new root is not for trust domain '{trust_domain}'"
            )));
        }
        Ok(Self {
            der: der.to_vec(),
            cross: cross.to_vec(),
            crl: crl.to_vec(),
            key: None,
        })
    }
}
