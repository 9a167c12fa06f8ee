//! The offline root: `ca-server root init|sign-intermediate|crl --root-dir DIR`.
//!
//! These commands need no server, no database and no network, so the root's key can live on a
//! machine that is never connected (or is connected only to sign). The online CA then starts from
//! an intermediate the root signed (`ca-server init --offline-root`, then `ca-server init
//! --root-cert --intermediate-cert --root-crl`) and keeps no root key at all; the root's CRL is
//! signed here and installed on the CA with `ca-server root install-crl`.
//!
//! Files in the root directory (mode 0700):
//! - `root.toml`: the trust domain, the CA's public URL (intermediates name the root's CRL under
//!   it), the root CRL's and intermediates' lifetimes;
//! - `root.pem` and `root.key.sealed` (the key sealed with the passphrase, argon2id and AES-GCM,
//!   like the online CA's keys);
//! - `root-crl.der`: the root's current CRL;
//! - `intermediates/<serial>.pem`: every intermediate this root signed, its own record;
//! - `cross.pem` (a root made by `root rotate`): its subject and key certified by the root
//!   before it, which the CA publishes beside it (`bsn roots add`).
//!
//! Not here: keeping the root key in a PKCS#11 token (the online CA can; the offline root keeps
//! a sealed file), and revoking an intermediate (the root's CRL lists none).
//!
//! `root rotate --root-dir OLD --new-root-dir NEW` makes the next root in `NEW` (number + 1):
//! the CA publishes it with its cross-certificate, activates it (the intermediates it signs
//! from then on come from `NEW`), and withdraws the old one once all it certified has retired.
//!
//! Crash story: `init` writes the key, the certificate and the CRL, each durably, and `root.toml`
//! last, so a directory without `root.toml` is an unfinished init that `init` may redo; with it,
//! init refuses. `sign-intermediate` records the intermediate in `intermediates/` before it
//! writes the output file, so the root's record never misses a certificate that left it.

use std::path::PathBuf;

use anyhow::{Context, bail};
use bsn_api::files::write_file;
use identity::TrustDomain;
use rcgen::KeyPair;
use serde::{Deserialize, Serialize};
use time::{Duration, OffsetDateTime};

use crate::config::parse_duration;
use crate::pki::{IntermediateRequest, pem};

/// `root.toml`.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RootFile {
    /// The trust domain the root certifies.
    pub trust_domain: String,
    /// The online CA's public base URL: intermediates name the root's CRL under it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// How long a root CRL lasts (default 365d): relying parties that check every CRL refuse
    /// all clients once it ends, so sign the next one well before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl_validity: Option<String>,
    /// How long an intermediate lasts (default 1825d, never past the root).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub intermediate_validity: Option<String>,
    /// The root's number at the CA (1 unless `root rotate` made it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub number: Option<u32>,
}

/// An offline root's directory.
#[derive(Debug, Clone)]
pub struct RootDir {
    dir: PathBuf,
}

/// What `sign-intermediate` made.
#[derive(Debug)]
pub struct SignedIntermediate {
    /// The certificate.
    pub der: Vec<u8>,
    /// Its number under this root.
    pub number: u32,
    /// Its serial (hex).
    pub serial_hex: String,
    /// When it ends.
    pub not_after: OffsetDateTime,
}

impl RootDir {
    /// The root directory `dir` (not read yet).
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    fn f(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    /// `root.toml`, written last by init.
    pub fn config(&self) -> PathBuf {
        self.f("root.toml")
    }
    /// The root certificate.
    pub fn cert(&self) -> PathBuf {
        self.f("root.pem")
    }
    /// The sealed root key.
    pub fn key(&self) -> PathBuf {
        self.f("root.key.sealed")
    }
    /// The root's current CRL.
    pub fn crl(&self) -> PathBuf {
        self.f("root-crl.der")
    }
    /// Where the intermediates this root signed are recorded.
    pub fn intermediates(&self) -> PathBuf {
        self.f("intermediates")
    }

    /// Makes a new root: its key (sealed with `passphrase`), its self-signed certificate and
    /// its first CRL. Refuses a directory that already holds a root.
    pub fn init(
        &self,
        trust_domain: &str,
        public_url: Option<&str>,
        passphrase: &str,
        now: OffsetDateTime,
    ) -> anyhow::Result<Vec<u8>> {
        if self.config().exists() {
            bail!(
                "{} already holds a root ({} exists); refusing to overwrite it",
                self.dir.display(),
                self.config().display()
            );
        }
        let td = TrustDomain::parse(trust_domain).context("--trust-domain")?;
        let public_url = public_url
            .map(crate::config::check_public_url)
            .transpose()
            .context("--public-url")?;
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(self.intermediates())
            .with_context(|| format!("creating {}", self.dir.display()))?;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let root = crate::pki::self_signed_root(td.as_str(), now, &key)?;
        let file = RootFile {
            trust_domain: td.to_string(),
            public_url,
            crl_validity: None,
            intermediate_validity: None,
            number: None,
        };
        let crl = crate::pki::sign_root_crl(&root, &key, now, file.crl_validity()?)?;
        write_file(
            &self.key(),
            crate::keystore::seal(passphrase, "root", &key.serialize_der())?.as_bytes(),
            0o600,
        )?;
        write_file(&self.cert(), pem("CERTIFICATE", &root).as_bytes(), 0o644)?;
        write_file(&self.crl(), &crl, 0o644)?;
        write_file(&self.config(), toml::to_string_pretty(&file)?.as_bytes(), 0o600)?;
        Ok(root)
    }

    /// Reads `root.toml` and the root certificate.
    fn load(&self) -> anyhow::Result<(RootFile, Vec<u8>)> {
        let text = std::fs::read_to_string(self.config()).with_context(|| {
            format!(
                "reading {}: {} holds no root (make one with `ca-server root init --root-dir {}`)",
                self.config().display(),
                self.dir.display(),
                self.dir.display()
            )
        })?;
        let file: RootFile = toml::from_str(&text).with_context(|| format!("{}", self.config().display()))?;
        let pem_bytes = std::fs::read(self.cert()).with_context(|| format!("reading {}", self.cert().display()))?;
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::CertificateDer::from_pem_slice(&pem_bytes).context("root.pem")?;
        Ok((file, der.to_vec()))
    }

    /// Opens the sealed root key, checked to be the root certificate's.
    fn open_key(&self, passphrase: &str, root_der: &[u8]) -> anyhow::Result<KeyPair> {
        let sealed =
            std::fs::read_to_string(self.key()).with_context(|| format!("reading {}", self.key().display()))?;
        let key =
            KeyPair::try_from(crate::keystore::open(passphrase, "root", &sealed)?.as_slice()).context("root key")?;
        let (_, cert) = x509_parser::parse_x509_certificate(root_der).context("root.pem")?;
        if rcgen::PublicKeyData::subject_public_key_info(&key) != cert.public_key().raw {
            bail!("{} is not the key of {}", self.key().display(), self.cert().display());
        }
        Ok(key)
    }

    /// Signs an issuing intermediate for the key in `csr_pem` (its self-signature is checked;
    /// only its ECDSA P-256 public key is taken, the subject and extensions are this root's) and
    /// records it.
    pub fn sign_intermediate(
        &self,
        passphrase: &str,
        csr_pem: &str,
        validity: Option<Duration>,
        now: OffsetDateTime,
    ) -> anyhow::Result<SignedIntermediate> {
        let (file, root) = self.load()?;
        let key = crate::csr::check_csr_pem(csr_pem).context("the CSR")?;
        if key.kind != crate::csr::KeyKind::EcdsaP256 {
            bail!(
                "the CSR's key is {:?}; an issuing CA's key must be ECDSA P-256 (what `ca-server init --offline-root` makes)",
                key.kind
            );
        }
        let root_key = self.open_key(passphrase, &root)?;
        let number = u32::try_from(self.signed()?.len() + 1).unwrap_or(u32::MAX);
        let validity = match validity {
            Some(v) => v,
            None => file.intermediate_validity()?,
        };
        if validity <= Duration::ZERO {
            bail!("--validity must be positive");
        }
        let request = IntermediateRequest {
            trust_domain: &file.trust_domain,
            number,
            now,
            validity,
            public_url: file.public_url.as_deref(),
            root: file.number.unwrap_or(1),
        };
        let der = crate::pki::issue_intermediate(&request, &root, &root_key, &key.rcgen_spki)?;
        let (_, cert) = x509_parser::parse_x509_certificate(&der).context("the new intermediate")?;
        let serial_hex = hex::encode(cert.raw_serial());
        let not_after = cert.validity().not_after.to_datetime();
        write_file(
            &self.intermediates().join(format!("{serial_hex}.pem")),
            pem("CERTIFICATE", &der).as_bytes(),
            0o644,
        )?;
        Ok(SignedIntermediate {
            der,
            number,
            serial_hex,
            not_after,
        })
    }

    /// The cross-certificate `rotate` made: this root's subject and key certified by the root
    /// before it.
    pub fn cross(&self) -> PathBuf {
        self.f("cross.pem")
    }

    /// Makes the next root in `next` (a new, empty directory): its key (sealed with
    /// `passphrase`), its self-signed certificate, its first CRL, and `cross.pem`, the same
    /// subject and key certified by this root. The CA publishes them with `bsn roots add`.
    pub fn rotate(&self, next: &RootDir, passphrase: &str, now: OffsetDateTime) -> anyhow::Result<u32> {
        let (file, old) = self.load()?;
        if next.config().exists() {
            bail!(
                "{} already holds a root ({} exists); refusing to overwrite it",
                next.dir.display(),
                next.config().display()
            );
        }
        let old_key = self.open_key(passphrase, &old)?;
        let number = file.number.unwrap_or(1) + 1;
        let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let (root, cross) = crate::pki::next_root(&file.trust_domain, number, now, &key, &old, &old_key)?;
        drop(old_key);
        let new_file = RootFile {
            number: Some(number),
            ..file
        };
        let crl = crate::pki::sign_root_crl(&root, &key, now, new_file.crl_validity()?)?;
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(next.intermediates())
            .with_context(|| format!("creating {}", next.dir.display()))?;
        write_file(
            &next.key(),
            crate::keystore::seal(passphrase, "root", &key.serialize_der())?.as_bytes(),
            0o600,
        )?;
        write_file(&next.cert(), pem("CERTIFICATE", &root).as_bytes(), 0o644)?;
        write_file(&next.cross(), pem("CERTIFICATE", &cross).as_bytes(), 0o644)?;
        write_file(&next.crl(), &crl, 0o644)?;
        write_file(&next.config(), toml::to_string_pretty(&new_file)?.as_bytes(), 0o600)?;
        Ok(number)
    }

    /// The intermediates this root signed, as recorded.
    pub fn signed(&self) -> anyhow::Result<Vec<PathBuf>> {
        let mut out = Vec::new();
        let dir = self.intermediates();
        for e in std::fs::read_dir(&dir).with_context(|| format!("reading {}", dir.display()))? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "pem") {
                out.push(p);
            }
        }
        Ok(out)
    }

    /// Signs a new root CRL into `root-crl.der` and returns it; refuses when the clock is behind
    /// the current one's signing time.
    pub fn sign_crl(&self, passphrase: &str, now: OffsetDateTime) -> anyhow::Result<(Vec<u8>, OffsetDateTime)> {
        let (file, root) = self.load()?;
        if let Ok(old) = std::fs::read(self.crl())
            && let Ok((_, crl)) = x509_parser::parse_x509_crl(&old)
            && crl.last_update().timestamp() >= now.unix_timestamp()
        {
            bail!(
                "the root CRL in {} was signed at {} or later: check the clock",
                self.crl().display(),
                crl.last_update()
            );
        }
        let key = self.open_key(passphrase, &root)?;
        let validity = file.crl_validity()?;
        let der = crate::pki::sign_root_crl(&root, &key, now, validity)?;
        write_file(&self.crl(), &der, 0o644)?;
        Ok((der, now + validity))
    }
}

impl RootFile {
    fn crl_validity(&self) -> anyhow::Result<Duration> {
        match &self.crl_validity {
            Some(v) => parse_duration(v).context("root.toml crl_validity"),
            None => Ok(crate::pki::Policy::default().root_crl_validity),
        }
    }
    fn intermediate_validity(&self) -> anyhow::Result<Duration> {
        match &self.intermediate_validity {
            Some(v) => parse_duration(v).context("root.toml intermediate_validity"),
            None => Ok(crate::pki::INTERMEDIATE_VALIDITY),
        }
    }
}

/// Installs a root CRL signed offline into a CA's data directory (`ca-server root install-crl`):
/// it must be signed by the CA's root, unexpired, and newer than the one published; serving
/// replicas publish it at once. Returns its nextUpdate.
pub fn install_crl(paths: &crate::config::Paths, der: &[u8], now: OffsetDateTime) -> anyhow::Result<OffsetDateTime> {
    use rustls_pki_types::pem::PemObject;
    let root_pem =
        std::fs::read(paths.root_cert()).with_context(|| format!("reading {}", paths.root_cert().display()))?;
    let root_der = rustls_pki_types::CertificateDer::from_pem_slice(&root_pem).context("root.pem")?;
    let (_, root) = x509_parser::parse_x509_certificate(&root_der).context("root.pem")?;
    let (_, crl) = x509_parser::parse_x509_crl(der).map_err(|e| anyhow::anyhow!("not a DER CRL: {e}"))?;
    if crl.issuer() != root.subject() || crl.verify_signature(root.public_key()).is_err() {
        bail!(
            "this CRL was not signed by the CA's root ({}): it is another root's, or damaged",
            root.subject()
        );
    }
    let next = crl
        .next_update()
        .map(|n| n.to_datetime())
        .ok_or_else(|| anyhow::anyhow!("this CRL has no nextUpdate"))?;
    if next <= now {
        bail!("this CRL expired at {next}: sign a new one with `ca-server root crl --root-dir DIR`");
    }
    if let Some(current) = crate::serve::root_crl(paths)
        && crl.last_update().to_datetime() <= current.this_update
    {
        bail!(
            "this CRL (signed {}) is not newer than the published one (signed {}); nothing changed",
            crl.last_update().to_datetime(),
            current.this_update
        );
    }
    write_file(&paths.root_crl(), der, 0o644).with_context(|| format!("writing {}", paths.root_crl().display()))?;
    Ok(next)
}
