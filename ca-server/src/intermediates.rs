//! Rotation of the issuing intermediate without an outage: make the next one, publish it,
//! switch issuance to it, retire the old one when its last certificate has expired.
//!
//! Features:
//! - Every intermediate the CA has had is a row of `issuing_cas` with its state: `next` (made
//!   and signed by the root, not public), `published` (in `GET /api/v1/intermediates`, on the
//!   feed, its CRL published: relying parties and nodes learn it before anything is issued
//!   under it), `active` (issuing; exactly one), `retiring` (replaced: issues nothing, its CRL
//!   is still re-signed and published for the certificates it issued), `retired` (its last
//!   certificate has expired; its key is destroyed and its CRL withdrawn).
//! - Each step is one transaction under the issuance log's sequencer lock: the state change,
//!   the log leaf (`identity::logleaf::LogLeaf::Intermediate`, which `bsn audit verify` checks),
//!   the feed event for every node, and the new CRL (publish). Before the commit nothing
//!   changed; after it all did (crash story: kill -9 at any point leaves the step done or not
//!   done, never half; a retried step that was done is refused with what state it is in).
//! - Keys of intermediates made by rotation are sealed with the CA's passphrase and kept in the
//!   database, so every replica opens the same key; replicas notice a step within
//!   [`FOLLOW_EVERY`] and switch themselves.
//! - One rotation at a time: a new one cannot start while another intermediate is `next` or
//!   `published`.
//!
//! - Under an offline root the new intermediate starts `requested`: its key is made and sealed
//!   here, its CSR goes to the root's operator (`ca-server root sign-intermediate`), and the
//!   signed certificate is checked and taken (`adopt`) before it is `next`.
//!
//! - A CA whose keys are in a PKCS#11 token rotates inside it: the next intermediate's key is
//!   generated in the token (labelled `<trust domain> issuing CA <number> <random>`), certified by the root
//!   key in the token when it is there, and destroyed in the token when it retires.
//!
//! - Each intermediate records the root that certified it (the active root when it was made;
//!   see `crate::roots` for the root's own rotation), and its chain carries the cross-certificates
//!   back to roots still trusted before its own.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use rcgen::KeyPair;
use rustls_pki_types::CertificateDer;
use time::OffsetDateTime;

use crate::db::Db;
use crate::db::NewKey;
use crate::db::intermediates::{self as store, IntermediateRow, Made};
use crate::db::roots::RootRow;
use crate::keystore::blocking;
use crate::log::{LogSigner, NewLeaf};
use crate::pki::{Ca, CaSigner};
use identity::logleaf::{IntermediateStep, LogLeaf};

/// A node that reported its feed position within this window is waited for before an
/// intermediate is activated; one silent for longer is taken to be down (it learns the CA's
/// intermediates when it starts again).
pub const ACK_WINDOW: std::time::Duration = std::time::Duration::from_secs(300);

/// How often a replica reads the intermediates' states to notice another replica's step.
pub const FOLLOW_EVERY: std::time::Duration = std::time::Duration::from_secs(2);

pub use crate::rotation::{Keys, RotationError};

impl Keys {
    fn signer(&self, row: &IntermediateRow) -> Result<CaSigner, RotationError> {
        if row.number == 1 {
            return Ok(self.first.clone());
        }
        if let Some(s) = self.opened.lock().unwrap_or_else(|e| e.into_inner()).get(&row.number) {
            return Ok(s.clone());
        }
        if let Some(label) = &row.key_label {
            let token = self.token.as_ref().ok_or_else(|| {
                RotationError::Internal(anyhow::anyhow!(
                    "intermediate {}'s key is in a PKCS#11 token, and this CA has none configured",
                    row.number
                ))
            })?;
            let signer = CaSigner::token(token.token.key(label).map_err(|e| RotationError::Internal(e.into()))?);
            self.opened
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(row.number, signer.clone());
            return Ok(signer);
        }
        let sealed = row
            .key_sealed
            .as_deref()
            .ok_or_else(|| RotationError::Internal(anyhow::anyhow!("intermediate {} has no key", row.number)))?;
        let der = blocking(|| crate::keystore::open(&self.passphrase, &key_label(row.number), sealed))
            .map_err(|e| RotationError::Internal(e.into()))?;
        let signer =
            CaSigner::software(KeyPair::try_from(der.as_slice()).map_err(|e| RotationError::Internal(e.into()))?);
        self.opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(row.number, signer.clone());
        Ok(signer)
    }

    fn ca(&self, row: &IntermediateRow, roots: &[RootRow]) -> Result<Ca, RotationError> {
        let signer = self.signer(row)?;
        let mut ca = Ca::new(
            trusted(roots),
            CertificateDer::from(row.der.clone()),
            signer,
            self.policy,
        )
        .map_err(|e| RotationError::Internal(e.into()))?
        .numbered(row.number)
        .with_cross(crate::roots::cross_chain(roots, row.root));
        ca.set_public_url(&self.public_url);
        Ok(ca)
    }
}

fn key_label(number: i64) -> String {
    format!("intermediate-{number}")
}

/// The roots relying parties trust now (every one not withdrawn), by number.
pub fn trusted(roots: &[RootRow]) -> Vec<CertificateDer<'static>> {
    roots
        .iter()
        .filter(|r| r.trusted())
        .map(|r| CertificateDer::from(r.der.clone()))
        .collect()
}

/// The intermediates as this replica knows them.
pub struct Issuers {
    /// The one issuing now.
    pub active: Arc<Ca>,
    /// Every intermediate whose CRL is published (published, active, retiring), by number.
    pub signing: BTreeMap<i64, Arc<Ca>>,
    /// Every intermediate, by number.
    pub rows: Vec<IntermediateRow>,
    /// Every root, by number.
    pub roots: Vec<RootRow>,
}

impl Issuers {
    /// Reads the intermediates and opens the keys of those that sign.
    pub async fn load(db: &Db, keys: &Keys) -> Result<Self, RotationError> {
        let mut c = db.acquire().await?;
        let rows = store::all(&mut c).await?;
        let roots = crate::db::roots::all(&mut c).await?;
        drop(c);
        // Root 1's key file goes from every replica's data directory once it is withdrawn.
        if let Some(first) = roots.iter().find(|r| r.number == 1 && !r.trusted())
            && keys.paths.root_key().exists()
        {
            crate::roots::forget_withdrawn_key(keys, first);
        }
        let mut signing = BTreeMap::new();
        let mut active = None;
        for row in &rows {
            if matches!(row.state.as_str(), "published" | "active" | "retiring") {
                let ca = Arc::new(keys.ca(row, &roots)?);
                if row.state == "active" {
                    active = Some(ca.clone());
                }
                signing.insert(row.number, ca);
            }
        }
        let active = active.ok_or_else(|| RotationError::Internal(anyhow::anyhow!("no active intermediate")))?;
        // A retired intermediate's key leaves memory too, not only the database.
        keys.opened
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|n, _| signing.contains_key(n) || rows.iter().any(|r| r.number == *n && r.state == "next"));
        Ok(Self {
            active,
            signing,
            rows,
            roots,
        })
    }

    /// The roots relying parties trust now.
    pub fn trusted_roots(&self) -> Vec<CertificateDer<'static>> {
        trusted(&self.roots)
    }

    fn states(&self) -> States {
        (
            self.rows.iter().map(|r| (r.number, r.state.clone())).collect(),
            self.roots.iter().map(|r| (r.number, r.state.clone())).collect(),
        )
    }
}

/// What a replica compares to notice another's step: (number, state) of every intermediate and
/// of every root.
type States = (Vec<(i64, String)>, Vec<(i64, String)>);

/// The current [`Issuers`], replaced whole when a step commits (here or on another replica).
pub struct Current(RwLock<Arc<Issuers>>);

impl Current {
    /// Starts with `issuers`.
    pub fn new(issuers: Issuers) -> Self {
        Self(RwLock::new(Arc::new(issuers)))
    }

    /// A snapshot.
    pub fn get(&self) -> Arc<Issuers> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Reloads from the database.
    pub async fn reload(&self, db: &Db, keys: &Keys) -> Result<(), RotationError> {
        let fresh = Issuers::load(db, keys).await?;
        let active = fresh.active.number;
        let changed = self.get().active.number != active;
        *self.0.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(fresh);
        if changed {
            tracing::info!(intermediate = active, "issuing with intermediate {active} from now on");
        }
        Ok(())
    }

    /// Reloads whenever the stored states differ from this replica's, checking every
    /// [`FOLLOW_EVERY`].
    pub async fn follow(self: Arc<Self>, db: Db, keys: Arc<Keys>) {
        let mut tick = tokio::time::interval(FOLLOW_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let stored = match db.acquire().await {
                Ok(mut c) => match store::states(&mut c).await {
                    Ok(i) => crate::db::roots::states(&mut c).await.map(|r| (i, r)),
                    Err(e) => Err(e),
                },
                Err(e) => Err(e),
            };
            match stored {
                Ok(s) if s != self.get().states() => {
                    if let Err(e) = self.reload(&db, &keys).await {
                        tracing::warn!(error = %e, "reloading the issuing intermediates failed; will retry");
                    }
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "reading the issuing intermediates failed"),
            }
        }
    }
}

/// Records the intermediate of initialisation as number 1 if nothing is recorded yet.
pub async fn record_first(db: &Db, der: &[u8], now: OffsetDateTime) -> Result<(), RotationError> {
    if store::record_first(&mut *db.acquire_writer().await?, der, now.unix_timestamp()).await? {
        tracing::info!("recorded the issuing intermediate as number 1");
    }
    Ok(())
}

/// The rotation service.
pub struct Rotation<'a> {
    /// The store.
    pub db: &'a Db,
    /// The issuance log's key.
    pub log: &'a LogSigner,
    /// The keys.
    pub keys: &'a Keys,
    /// Woken after each committed step that wrote a feed event.
    pub feed: &'a tokio::sync::watch::Sender<u64>,
}

fn find(rows: &[IntermediateRow], number: i64) -> Result<&IntermediateRow, RotationError> {
    rows.iter()
        .find(|r| r.number == number)
        .ok_or(RotationError::Unknown("intermediate", number))
}

impl Rotation<'_> {
    /// Makes the next intermediate: a new P-256 key, sealed, and a certificate from the root
    /// (the root key is opened for this and dropped), or, when the root is offline, the key and
    /// a CSR for the root's operator (`requested`; [`Rotation::adopt`] takes the signed
    /// certificate). Refused while another is under way.
    pub async fn next(&self, now: OffsetDateTime) -> Result<IntermediateRow, RotationError> {
        // Checked first without the lock, so a refused step costs no key work; then again
        // under it, where the row is written.
        let refuse_busy = |rows: &[IntermediateRow]| match rows
            .iter()
            .find(|r| matches!(r.state.as_str(), "requested" | "next" | "published"))
        {
            Some(r) => Err(RotationError::Refused(format!(
                "a rotation is under way: intermediate {} is {}; activate it (or wait) before making another",
                r.number, r.state
            ))),
            None => Ok(rows.iter().map(|r| r.number).max().unwrap_or(0) + 1),
        };
        let number = refuse_busy(&store::all(&mut *self.db.acquire().await?).await?)?;
        let roots = crate::db::roots::all(&mut *self.db.acquire().await?).await?;
        let root = crate::roots::active(&roots)?.clone();
        let (made, key) = blocking(|| self.make(number, &root, now))?;
        let result = async {
            let mut tx = self.db.begin().await?;
            crate::log::lock_sequencer(&mut tx).await?;
            if refuse_busy(&store::all(&mut tx).await?)? != number {
                return Err(RotationError::Refused(format!(
                    "another administrator made intermediate {number} meanwhile; see `bsn intermediates list`"
                )));
            }
            if crate::roots::active(&crate::db::roots::all(&mut tx).await?)?.number != root.number {
                return Err(RotationError::Refused(
                    "the active root changed meanwhile; make the next intermediate again".into(),
                ));
            }
            store::insert_new(&mut tx, number, &made, &key, root.number, now.unix_timestamp()).await?;
            tx.commit().await?;
            Ok(())
        }
        .await;
        if let (Err(_), NewKey::Token(label), Some(t)) = (&result, &key, &self.keys.token) {
            // The key made for a step that did not commit is no one's.
            t.destroy(label);
        }
        result?;
        match made {
            Made::Certificate(_) => tracing::info!(intermediate = number, "next issuing intermediate made"),
            Made::Request(_) => tracing::info!(
                intermediate = number,
                "next issuing intermediate's key made; its CSR waits for the offline root"
            ),
        }
        let rows = store::all(&mut *self.db.acquire().await?).await?;
        Ok(find(&rows, number)?.clone())
    }

    /// A new P-256 key for intermediate `number` (in the CA's token when its keys are there,
    /// else sealed with the passphrase) and its certificate from the root, or its CSR when the
    /// root key is not at hand.
    fn make(&self, number: i64, root: &RootRow, now: OffsetDateTime) -> Result<(Made, NewKey), RotationError> {
        let internal = |e: &dyn std::fmt::Display| RotationError::Internal(anyhow::anyhow!("{e}"));
        if let Some(t) = &self.keys.token {
            let label = t.label("issuing CA", number);
            let key = t.token.generate_p256(&label).map_err(|e| internal(&e))?;
            return match self.certify(number, root, now, &key) {
                Ok(made) => Ok((made, NewKey::Token(label))),
                Err(e) => {
                    t.destroy(&label);
                    Err(e)
                }
            };
        }
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| internal(&e))?;
        let sealed = crate::keystore::seal(&self.keys.passphrase, &key_label(number), &key.serialize_der())
            .map_err(|e| internal(&e))?;
        Ok((self.certify(number, root, now, &key)?, NewKey::Sealed(sealed)))
    }

    /// The certificate of intermediate `number` for `key`, signed by the active root's key (in
    /// the token, the data directory or its row); or, when the CA does not hold it (an offline
    /// root), the key's CSR.
    fn certify<K: rcgen::SigningKey>(
        &self,
        number: i64,
        root: &RootRow,
        now: OffsetDateTime,
        key: &K,
    ) -> Result<Made, RotationError> {
        let internal = |e: &dyn std::fmt::Display| RotationError::Internal(anyhow::anyhow!("{e}"));
        let request = crate::pki::IntermediateRequest {
            trust_domain: &self.keys.trust_domain,
            number: u32::try_from(number).map_err(|e| internal(&e))?,
            now,
            validity: crate::pki::INTERMEDIATE_VALIDITY,
            public_url: Some(&self.keys.public_url),
            root: u32::try_from(root.number).map_err(|e| internal(&e))?,
        };
        let Some(root_key) = crate::roots::signer(self.keys, root)? else {
            let csr = crate::pki::intermediate_csr(&self.keys.trust_domain, key).map_err(|e| internal(&e))?;
            return Ok(Made::Request(csr));
        };
        let der = crate::pki::issue_intermediate(&request, &root.der, &root_key, key).map_err(|e| internal(&e))?;
        drop(root_key);
        Ok(Made::Certificate(der))
    }

    /// Takes the certificate the offline root signed for `requested` intermediate `number`
    /// (`ca-server root sign-intermediate`), after checking it as `init` checks an offline
    /// hierarchy: a CA certificate with path length 0 for exactly this intermediate's key, signed
    /// by this CA's root, in date, not on the root's published CRL. It becomes `next`.
    pub async fn adopt(
        &self,
        number: i64,
        certificate_pem: &str,
        now: OffsetDateTime,
    ) -> Result<IntermediateRow, RotationError> {
        use rustls_pki_types::pem::PemObject;
        let refused = |m: String| RotationError::Refused(m);
        let der = CertificateDer::from_pem_slice(certificate_pem.as_bytes())
            .map_err(|e| refused(format!("the certificate is not one PEM certificate: {e}")))?;
        let rows = store::all(&mut *self.db.acquire().await?).await?;
        let row = find(&rows, number)?;
        if row.state != "requested" {
            return Err(refused(format!(
                "intermediate {number} is {}: only a `requested` intermediate takes a certificate from the offline root",
                row.state
            )));
        }
        let spki = match (&row.key_label, &self.keys.token) {
            (Some(label), Some(t)) => rcgen::PublicKeyData::subject_public_key_info(
                &t.token.key(label).map_err(|e| RotationError::Internal(e.into()))?,
            ),
            _ => rcgen::PublicKeyData::subject_public_key_info(
                &KeyPair::try_from(
                    blocking(|| {
                        crate::keystore::open(
                            &self.keys.passphrase,
                            &key_label(number),
                            row.key_sealed.as_deref().unwrap_or_default(),
                        )
                    })
                    .map_err(|e| RotationError::Internal(e.into()))?
                    .as_slice(),
                )
                .map_err(|e| RotationError::Internal(e.into()))?,
            ),
        };
        let roots = crate::db::roots::all(&mut *self.db.acquire().await?).await?;
        let root = roots
            .iter()
            .find(|r| r.number == row.root)
            .ok_or_else(|| RotationError::Internal(anyhow::anyhow!("no root {}", row.root)))?;
        let root_crl = match &root.crl {
            Some(crl) => crl.clone(),
            None => std::fs::read(self.keys.paths.root_crl()).map_err(|e| {
                refused(format!(
                    "no root CRL is installed ({e}): install the root's current CRL with `ca-server root install-crl` first"
                ))
            })?,
        };
        crate::pki::check_hierarchy(&root.der, &der, &spki, &root_crl, now)
            .map_err(|e| refused(format!("the certificate for intermediate {number} is refused: {e}")))?;
        if let Ok((_, cert)) = x509_parser::parse_x509_certificate(&der)
            && let Some(org) = cert.subject().iter_organization().next().and_then(|a| a.as_str().ok())
            && org != self.keys.trust_domain
        {
            return Err(refused(format!(
                "the certificate was signed for trust domain '{org}', not '{}'",
                self.keys.trust_domain
            )));
        }
        let mut tx = self.db.begin().await?;
        crate::log::lock_sequencer(&mut tx).await?;
        if !store::adopt(&mut tx, number, &der, now.unix_timestamp()).await? {
            return Err(refused(format!(
                "intermediate {number} changed meanwhile; see `bsn intermediates list`"
            )));
        }
        tx.commit().await?;
        tracing::info!(
            intermediate = number,
            "the offline root's certificate for the next intermediate taken"
        );
        let rows = store::all(&mut *self.db.acquire().await?).await?;
        Ok(find(&rows, number)?.clone())
    }

    /// Takes `step` for intermediate `number`:
    /// - `Published` (from `next`): its first CRL is signed;
    /// - `Activated` (from `published`): it issues from now on, the active one becomes `retiring`;
    ///   unless `force`, only once every node that reported its feed position within
    ///   [`ACK_WINDOW`] has acknowledged the publication (a node that has not learned the
    ///   intermediate would refuse creators who send only their leaf);
    /// - `Retired` (from `retiring`), once no certificate it issued is valid: its key is destroyed
    ///   and its CRL withdrawn.
    ///
    /// Each with its log leaf and feed event, in one transaction.
    pub async fn step(
        &self,
        step: IntermediateStep,
        number: i64,
        by: &str,
        force: bool,
        now: OffsetDateTime,
    ) -> Result<IntermediateRow, RotationError> {
        let (from, to) = match step {
            IntermediateStep::Published => ("next", "published"),
            IntermediateStep::Activated => ("published", "active"),
            IntermediateStep::Retired => ("retiring", "retired"),
        };
        let at = now.unix_timestamp();
        let mut tx = self.db.begin().await?;
        crate::log::lock_sequencer(&mut tx).await?;
        let rows = store::all(&mut tx).await?;
        let row = find(&rows, number)?.clone();
        if row.state != from {
            let what = match step {
                IntermediateStep::Published => "only a `next` intermediate can be published",
                IntermediateStep::Activated => "only a `published` intermediate can be activated (publish it first)",
                IntermediateStep::Retired => {
                    "only a `retiring` intermediate can be retired (activate its successor first)"
                }
            };
            return Err(RotationError::Refused(format!(
                "intermediate {number} is {}: {what}",
                row.state
            )));
        }
        match step {
            IntermediateStep::Published => {
                let ca = self.keys.ca(&row, &crate::db::roots::all(&mut tx).await?)?;
                Db::insert_first_crl(&mut tx, &ca, now).await?;
            }
            IntermediateStep::Activated => {
                if !force {
                    let published = store::published_at(&mut tx, number).await?.unwrap_or(0);
                    let behind = store::behind(&mut tx, published, at - ACK_WINDOW.as_secs() as i64).await?;
                    if !behind.is_empty() {
                        let who: Vec<String> = behind
                            .iter()
                            .take(5)
                            .map(|(node, seq, when)| format!("{node} (at {seq}, {} s ago)", (at - when).max(0)))
                            .collect();
                        return Err(RotationError::Refused(format!(
                            "intermediate {number} was published at feed position {published}, and {} node(s) \
                             have not acknowledged it yet: {}{}; wait for them (nodes acknowledge within seconds), \
                             or activate with force if they are gone",
                            behind.len(),
                            who.join(", "),
                            if behind.len() > 5 { ", ..." } else { "" }
                        )));
                    }
                }
                if let Some(old) = rows.iter().find(|r| r.state == "active") {
                    store::set_state(&mut tx, old.number, "active", "retiring", at).await?;
                }
            }
            IntermediateStep::Retired => {
                let (count, last) = store::unexpired(&mut tx, number, at).await?;
                if count > 0 {
                    return Err(RotationError::Refused(format!(
                        "intermediate {number} still has {count} valid certificate(s), the last until {}: \
                         retire it after that",
                        OffsetDateTime::from_unix_timestamp(last.unwrap_or(at))
                            .ok()
                            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
                            .unwrap_or_default()
                    )));
                }
                store::drop_key(&mut tx, number).await?;
                store::drop_crl(&mut tx, number).await?;
            }
        }
        if !store::set_state(&mut tx, number, from, to, at).await? {
            return Err(RotationError::Internal(anyhow::anyhow!(
                "intermediate {number} changed under the lock"
            )));
        }
        let leaf = LogLeaf::Intermediate {
            time: at.max(0) as u64,
            step,
            number: number as u64,
            authorized_by: by.to_string(),
            certificate: row.der.clone(),
        };
        let new = NewLeaf {
            bytes: leaf.encode().map_err(anyhow::Error::from)?,
            kind: "intermediate",
            serial: String::new(),
            identity: by.to_string(),
            at,
        };
        crate::log::append(&mut tx, self.db.backend, self.log, &[new], true).await?;
        let seq = crate::db::registry::next_seq(&mut tx).await?;
        store::insert_feed_event(&mut tx, seq, number, step.name(), at).await?;
        tx.commit().await?;
        if let (IntermediateStep::Retired, Some(label), Some(t)) = (step, &row.key_label, &self.keys.token) {
            t.destroy(label);
        }
        crate::registry::wake_feed(self.feed);
        tracing::info!(
            intermediate = number,
            step = step.name(),
            by,
            "issuing intermediate {}",
            step.name()
        );
        let rows = store::all(&mut *self.db.acquire().await?).await?;
        Ok(find(&rows, number)?.clone())
    }
}
