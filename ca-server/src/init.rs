//! `ca-server init`: a new CA in a data directory.
//!
//! Crash story: key and certificate files are written first, then one database transaction
//! records the CA (metadata, bootstrap administrator, the server's own certificate, CRL 1), and
//! `ca.toml` is written last. A crash before the commit leaves no database record, and init can
//! simply run again (it rewrites the files). A crash after the commit but before `ca.toml` leaves
//! a database that init refuses to overwrite; the operator removes it and runs init again,
//! since nothing was issued to anyone yet.

use std::path::Path;

use anyhow::{Context, bail};
use bsn_api::files::write_file;
use identity::{IdentityId, IdentityKind, SpiffeId, TrustDomain};
use rcgen::{KeyPair, PublicKeyData};
use time::{Duration, OffsetDateTime};

use crate::commit::NewCert;
use crate::config::{FileConfig, Paths};
use crate::csr::check_spki_der;
use crate::db::{Db, NewIdentity};
use crate::log::LogSigner;
use crate::pki::{Ca, CaSigner, IssuedCert, LeafSubject, Policy, new_hierarchy, pem};
use crate::{keystore, secrets};

/// The bootstrap administrator's id.
pub const ADMIN_ID: &str = "admin";
/// The identity of the CA server's own TLS certificate.
pub const SERVER_ID: &str = "ca";
/// How long the bootstrap administrator's secret stays valid.
pub const ADMIN_SECRET_TTL: Duration = Duration::days(7);
/// Lifetime of the server's TLS certificate; `serve` renews it when less than a third is left.
pub const SERVER_CERT_VALIDITY: Duration = Duration::days(90);

/// What `init` was asked to do.
#[derive(Debug, Clone)]
pub struct InitOptions<'a> {
    /// Data directory.
    pub dir: &'a Path,
    /// Trust domain.
    pub trust_domain: &'a str,
    /// CA key passphrase.
    pub passphrase: &'a str,
    /// Database URL (default: SQLite in the data directory).
    pub database_url: Option<String>,
    /// Extra DNS names for the server certificate.
    pub dns_names: Vec<String>,
    /// Listen address to record in ca.toml.
    pub listen: Option<String>,
    /// The issuance log's origin (default `<trust domain>/log`).
    pub log_origin: Option<String>,
    /// The CA's public base URL (recorded in ca.toml; default `https://` and the listen address):
    /// the intermediate and every leaf name their CRL under it.
    pub public_url: Option<String>,
    /// Generate the issuing key in this PKCS#11 token instead of sealing it in a file.
    pub pkcs11: Option<Pkcs11Init>,
    /// Start from an intermediate an offline root signed (for the key [`request_intermediate`]
    /// made) instead of making a root here: this CA then keeps no root key.
    pub offline: Option<OfflineHierarchy>,
}

/// What an offline root gave the CA to start from (the files' contents, PEM or DER).
#[derive(Debug, Clone)]
pub struct OfflineHierarchy {
    /// The root certificate.
    pub root: Vec<u8>,
    /// The intermediate the root signed for this CA's issuing key.
    pub intermediate: Vec<u8>,
    /// The root's current CRL.
    pub root_crl: Vec<u8>,
}

/// The token `init` makes the issuing key in.
#[derive(Debug, Clone)]
pub struct Pkcs11Init {
    /// The token vendor's PKCS#11 module.
    pub module: std::path::PathBuf,
    /// The token's label.
    pub token: String,
    /// The user PIN.
    pub pin: String,
}

/// What `init` made that the operator must see.
#[derive(Debug)]
pub struct InitOutcome {
    /// The bootstrap administrator's one-time enrollment secret.
    pub admin_secret: String,
    /// When it expires.
    pub admin_secret_expires_at: OffsetDateTime,
}

/// Creates the CA. Refuses if the directory or database already holds one.
pub async fn init(o: InitOptions<'_>) -> anyhow::Result<InitOutcome> {
    let paths = Paths::new(o.dir);
    if paths.config().exists() {
        bail!(
            "{} already holds a CA ({} exists); refusing to overwrite it. That file is the last \
             thing init writes, so the CA is complete (even if an init was stopped just after \
             writing it): start it with `ca-server serve --data-dir {}`, and if its administrator \
             secret was lost, `ca-server admin-secret --data-dir {}` prints a new one",
            o.dir.display(),
            paths.config().display(),
            o.dir.display(),
            o.dir.display()
        );
    }
    let td = TrustDomain::parse(o.trust_domain).context("--trust-domain")?;
    for d in &o.dns_names {
        if d.is_empty() || d.len() > 253 || !d.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
            bail!("--dns {d}: not a DNS name");
        }
    }
    create_private_dir(o.dir)?;
    let url = o.database_url.clone().unwrap_or_else(|| paths.sqlite_url());
    let db = Db::connect(&url)
        .await
        .with_context(|| format!("opening database {}", redact(&url)))?;
    if db.meta("trust_domain").await?.is_some() {
        bail!(
            "the database at {} already holds a CA; refusing to overwrite it. Since {} has no \
             ca.toml, an earlier init was interrupted after it recorded the CA and before it \
             finished; nothing was issued yet: remove the database and the directory, then run \
             init again",
            redact(&url),
            o.dir.display()
        );
    }

    let public_url = o
        .public_url
        .as_deref()
        .map(crate::config::check_public_url)
        .transpose()
        .context("--public-url")?;
    let base = match &public_url {
        Some(u) => u.clone(),
        None => {
            let listen = o.listen.as_deref().unwrap_or("127.0.0.1:8443");
            crate::config::default_public_url(
                listen
                    .parse()
                    .with_context(|| format!("--listen {listen}: expected IP:PORT"))?,
            )
        }
    };
    let now = OffsetDateTime::now_utc();
    let root_crl_validity = Policy::default().root_crl_validity;
    let log_origin = o.log_origin.clone().unwrap_or_else(|| format!("{td}/log"));
    let (h, signer, root_crl, log, log_key, pkcs11) = match (&o.offline, &o.pkcs11) {
        (Some(offline), p) => adopt_offline(&paths, &o, offline, p.as_ref(), &td, &log_origin, now)?,
        (None, None) => {
            let h = new_hierarchy(td.as_str(), now, Some(&base))?;
            let key = KeyPair::try_from(h.intermediate_key_pkcs8.as_deref().unwrap_or_default())?;
            let root = KeyPair::try_from(h.root_key_pkcs8.as_deref().unwrap_or_default())?;
            let crl = crate::pki::sign_root_crl(&h.root_der, &root, now, root_crl_validity)?;
            let log_key = LogSigner::generate()?;
            let log = LogSigner::new(&log_origin, &log_key).context("--log-origin")?;
            (h, CaSigner::software(key), crl, log, Some(log_key), None)
        }
        (None, Some(p)) => {
            let token = crate::hsm::Token::open(&p.module, &p.token, &p.pin).context("--pkcs11-token")?;
            let (root_label, issuing_label) = (format!("{td} root CA"), issuing_label(&td));
            for label in [&root_label, &issuing_label] {
                token.refuse_taken(label)?;
            }
            let (log, mut settings) = token_ed_keys(&token, p, &td, &log_origin)?;
            let root = token
                .generate_p256(&root_label)
                .context("generating the root key in the token")?;
            let key = token
                .generate_p256(&issuing_label)
                .context("generating the issuing key in the token")?;
            let h = crate::pki::new_hierarchy_for(td.as_str(), now, Some(&base), &root, &key)?;
            let crl = crate::pki::sign_root_crl(&h.root_der, &root, now, root_crl_validity)?;
            settings.root_key = Some(root_label);
            (h, CaSigner::token(key), crl, log, None, Some(settings))
        }
    };
    write_key_material(&paths, o.passphrase, &h, &root_crl, log_key.as_deref(), &log)?;
    let mut ca = Ca::new(
        vec![h.root_der.clone().into()],
        h.intermediate_der.clone().into(),
        signer,
        Policy::default(),
    )?;
    ca.set_public_url(&base);

    let mut dns = vec!["localhost".to_string()];
    dns.extend(o.dns_names.iter().map(|d| d.to_ascii_lowercase()));
    let ips = vec!["127.0.0.1".to_string(), "::1".to_string()];
    let (server_cert, server_key) = issue_server_cert(&ca, &td, &dns, &ips, now)?;
    write_server_tls(&paths, &ca, &server_cert, &server_key)?;

    let admin_secret = secrets::new_secret();
    let admin_hash = secrets::Hasher::new(1)
        .hash(&secrets::Source::Identity("init".into()), true, admin_secret.clone())
        .await?;
    let expires = now + ADMIN_SECRET_TTL;
    let records = Records {
        td: &td,
        intermediate_der: &h.intermediate_der,
        log: &log,
        ca: &ca,
        admin_hash,
        admin_expires: expires,
        server_names: (dns, ips),
        server_cert: &server_cert,
        now,
    };
    record_ca(&db, records).await?;
    db.close().await;

    let file = FileConfig {
        trust_domain: td.to_string(),
        database_url: o.database_url,
        listen: o.listen,
        public_url,
        pkcs11,
        ..Default::default()
    };
    write_file(&paths.config(), toml::to_string_pretty(&file)?.as_bytes(), 0o600)?;
    Ok(InitOutcome {
        admin_secret,
        admin_secret_expires_at: expires,
    })
}

/// The label of the first issuing key in a token.
fn issuing_label(td: &TrustDomain) -> String {
    format!("{td} issuing CA 1")
}

/// Generates the log and membership keys (Ed25519) in the token, refusing taken labels; returns
/// the log's signer and the token settings for ca.toml (without a root key).
fn token_ed_keys(
    token: &crate::hsm::Token,
    p: &Pkcs11Init,
    td: &TrustDomain,
    log_origin: &str,
) -> anyhow::Result<(LogSigner, crate::hsm::Pkcs11Settings)> {
    let (log_label, membership_label) = (format!("{td} log"), format!("{td} membership"));
    for label in [&log_label, &membership_label] {
        token.refuse_taken(label)?;
    }
    let log_key = token
        .generate_ed25519(&log_label)
        .context("generating the log key in the token")?;
    let log = LogSigner::with_key(log_origin, crate::hsm::EdKey::Token(log_key)).context("--log-origin")?;
    token
        .generate_ed25519(&membership_label)
        .context("generating the membership key in the token")?;
    let settings = crate::hsm::Pkcs11Settings {
        module: p.module.clone(),
        token: p.token.clone(),
        issuing_key: issuing_label(td),
        root_key: None,
        log_key: Some(log_label),
        membership_key: Some(membership_label),
    };
    Ok((log, settings))
}

/// `ca-server init --offline-root`, the first of two steps: makes the issuing key (sealed in
/// the data directory, or in the token) and writes its CSR for the offline root to sign. Run
/// again, it reuses the key it made and writes the same request. Returns the CSR's path.
pub fn request_intermediate(o: &InitOptions<'_>) -> anyhow::Result<std::path::PathBuf> {
    let paths = Paths::new(o.dir);
    if paths.config().exists() {
        bail!(
            "{} already holds a CA; refusing to make another issuing key",
            o.dir.display()
        );
    }
    let td = TrustDomain::parse(o.trust_domain).context("--trust-domain")?;
    create_private_dir(o.dir)?;
    let csr = match &o.pkcs11 {
        Some(p) => {
            let token = crate::hsm::Token::open(&p.module, &p.token, &p.pin).context("--pkcs11-token")?;
            let label = issuing_label(&td);
            let key = match token.refuse_taken(&label) {
                Ok(()) => token
                    .generate_p256(&label)
                    .context("generating the issuing key in the token")?,
                Err(crate::hsm::HsmError::KeyExists(_)) => token.key(&label)?,
                Err(e) => return Err(e.into()),
            };
            crate::pki::intermediate_csr(td.as_str(), &key)?
        }
        None => {
            let key = if paths.intermediate_key().exists() {
                open_pending_key(&paths, o.passphrase)?
            } else {
                let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
                write_file(
                    &paths.intermediate_key(),
                    keystore::seal(o.passphrase, "intermediate", &key.serialize_der())?.as_bytes(),
                    0o600,
                )?;
                key
            };
            crate::pki::intermediate_csr(td.as_str(), &key)?
        }
    };
    let out = paths.dir.join("intermediate.csr.pem");
    write_file(&out, csr.as_bytes(), 0o644)?;
    Ok(out)
}

/// The issuing key `request_intermediate` sealed in the data directory.
fn open_pending_key(paths: &Paths, passphrase: &str) -> anyhow::Result<KeyPair> {
    let sealed = std::fs::read_to_string(paths.intermediate_key()).with_context(|| {
        format!(
            "reading {}: no issuing key is waiting for an intermediate here; run `ca-server init \
             --offline-root` first and have the root sign the CSR it writes",
            paths.intermediate_key().display()
        )
    })?;
    Ok(KeyPair::try_from(
        keystore::open(passphrase, "intermediate", &sealed)?.as_slice(),
    )?)
}

type Made = (
    crate::pki::NewHierarchy,
    CaSigner,
    Vec<u8>,
    LogSigner,
    Option<Vec<u8>>,
    Option<crate::hsm::Pkcs11Settings>,
);

/// The second step of an offline-root init: checks what the root gave (the intermediate is for
/// this CA's waiting key, signed by the root, a CA with path length 0, valid; the CRL is the
/// root's and current) before anything is written, then makes the log (and, with a token, the
/// membership) key. No root key is kept.
fn adopt_offline(
    paths: &Paths,
    o: &InitOptions<'_>,
    offline: &OfflineHierarchy,
    pkcs11: Option<&Pkcs11Init>,
    td: &TrustDomain,
    log_origin: &str,
    now: OffsetDateTime,
) -> anyhow::Result<Made> {
    use rustls_pki_types::CertificateDer;
    use rustls_pki_types::pem::PemObject;
    let root = CertificateDer::from_pem_slice(&offline.root).context("--root-cert: expected a PEM certificate")?;
    let intermediate = CertificateDer::from_pem_slice(&offline.intermediate)
        .context("--intermediate-cert: expected a PEM certificate")?;
    let crl = match rustls_pki_types::CertificateRevocationListDer::from_pem_slice(&offline.root_crl) {
        Ok(c) => c.to_vec(),
        Err(_) => offline.root_crl.clone(),
    };
    if let Ok((_, cert)) = x509_parser::parse_x509_certificate(&intermediate)
        && let Some(org) = cert.subject().iter_organization().next().and_then(|a| a.as_str().ok())
        && org != td.as_str()
    {
        bail!("the intermediate was signed for trust domain '{org}', not '{td}'");
    }
    let token = pkcs11
        .map(|p| crate::hsm::Token::open(&p.module, &p.token, &p.pin).context("--pkcs11-token"))
        .transpose()?;
    let (signer, spki) = match &token {
        None => {
            let key = open_pending_key(paths, o.passphrase)?;
            let spki = key.subject_public_key_info();
            (CaSigner::software(key), spki)
        }
        Some(t) => {
            let key = t.key(&issuing_label(td)).with_context(
                || "no issuing key is waiting in the token: run `ca-server init --offline-root` with it first",
            )?;
            let spki = key.subject_public_key_info();
            (CaSigner::token(key), spki)
        }
    };
    crate::pki::check_hierarchy(&root, &intermediate, &spki, &crl, now)?;
    let h = crate::pki::NewHierarchy {
        root_der: root.to_vec(),
        root_key_pkcs8: None,
        intermediate_der: intermediate.to_vec(),
        intermediate_key_pkcs8: None,
    };
    match (&token, pkcs11) {
        (Some(t), Some(p)) => {
            let (log, settings) = token_ed_keys(t, p, td, log_origin)?;
            Ok((h, signer, crl, log, None, Some(settings)))
        }
        _ => {
            let log_key = LogSigner::generate()?;
            let log = LogSigner::new(log_origin, &log_key).context("--log-origin")?;
            Ok((h, signer, crl, log, Some(log_key), None))
        }
    }
}

/// The sealed keys and the public certificates and verifier key, each written durably before
/// the database records the CA (a crash here leaves files that the next init overwrites).
fn write_key_material(
    paths: &Paths,
    passphrase: &str,
    h: &crate::pki::NewHierarchy,
    root_crl: &[u8],
    log_key: Option<&[u8]>,
    log: &LogSigner,
) -> anyhow::Result<()> {
    if let Some(key) = &h.root_key_pkcs8 {
        write_file(
            &paths.root_key(),
            keystore::seal(passphrase, "root", key)?.as_bytes(),
            0o600,
        )?;
    }
    if let Some(key) = &h.intermediate_key_pkcs8 {
        write_file(
            &paths.intermediate_key(),
            keystore::seal(passphrase, "intermediate", key)?.as_bytes(),
            0o600,
        )?;
    }
    write_file(&paths.root_cert(), pem("CERTIFICATE", &h.root_der).as_bytes(), 0o644)?;
    write_file(&paths.root_crl(), root_crl, 0o644)?;
    write_file(&paths.trust_bundle(), pem("CERTIFICATE", &h.root_der).as_bytes(), 0o644)?;
    write_file(
        &paths.intermediate_cert(),
        pem("CERTIFICATE", &h.intermediate_der).as_bytes(),
        0o644,
    )?;
    if let Some(log_key) = log_key {
        write_file(
            &paths.log_key(),
            keystore::seal(passphrase, "log", log_key)?.as_bytes(),
            0o600,
        )?;
    }
    write_file(&paths.log_vkey(), format!("{}\n", log.vkey()).as_bytes(), 0o644)?;
    Ok(())
}

/// What the database records about a new CA.
struct Records<'a> {
    td: &'a TrustDomain,
    intermediate_der: &'a [u8],
    log: &'a LogSigner,
    ca: &'a Ca,
    admin_hash: String,
    admin_expires: OffsetDateTime,
    server_names: (Vec<String>, Vec<String>),
    server_cert: &'a IssuedCert,
    now: OffsetDateTime,
}

/// Records the CA in one transaction: its metadata, the empty log, the administrator (with its
/// one-time secret's hash), the server's identity and certificate (logged), the first CRL.
async fn record_ca(db: &Db, r: Records<'_>) -> anyhow::Result<()> {
    let (now, log, ca) = (r.now, r.log, r.ca);
    let t = now.unix_timestamp();
    let mut tx = db.begin().await?;
    Db::insert_meta(&mut tx, "trust_domain", r.td.as_str()).await?;
    Db::insert_meta(
        &mut tx,
        "intermediate_sha256",
        &crate::pki::sha256_hex(r.intermediate_der),
    )
    .await?;
    Db::insert_meta(&mut tx, "log_vkey", &log.vkey()).await?;
    crate::log::create(&mut tx, log).await?;
    let base = NewIdentity {
        id: ADMIN_ID.into(),
        kind: IdentityKind::Participant,
        roles: vec![identity::CaRole::Admin],
        attributes: Default::default(),
        dns_names: vec![],
        ip_addresses: vec![],
        secret_hash: Some(r.admin_hash),
        secret_expires_at: Some(r.admin_expires.unix_timestamp()),
        enrollments_left: 1,
        registered_by: "init".into(),
        created_at: t,
    };
    Db::insert_identity(&mut tx, &base).await?;
    let server = NewIdentity {
        id: SERVER_ID.into(),
        kind: IdentityKind::Node,
        roles: vec![],
        dns_names: r.server_names.0,
        ip_addresses: r.server_names.1,
        secret_hash: None,
        secret_expires_at: None,
        enrollments_left: 0,
        ..base
    };
    Db::insert_identity(&mut tx, &server).await?;
    let row = NewCert {
        identity: SERVER_ID,
        cert: r.server_cert,
        issued_via: "init",
        authorized_by: "init",
        issued_at: t,
    };
    crate::commit::record_certs(&mut tx, db.backend, log, &[row]).await?;
    Db::insert_first_crl(&mut tx, ca, now).await?;
    tx.commit().await?;
    Ok(())
}

/// Issues the CA server's own TLS certificate (identity `spiffe://<td>/node/ca`) with a new key.
pub fn issue_server_cert(
    ca: &Ca,
    td: &TrustDomain,
    dns: &[String],
    ips: &[String],
    now: OffsetDateTime,
) -> anyhow::Result<(IssuedCert, KeyPair)> {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
    let checked = check_spki_der(&key.subject_public_key_info())?;
    let spiffe_id = SpiffeId {
        trust_domain: td.clone(),
        kind: IdentityKind::Node,
        id: IdentityId::parse(SERVER_ID)?,
    };
    let ips: Vec<std::net::IpAddr> = ips.iter().filter_map(|i| i.parse().ok()).collect();
    let subject = LeafSubject {
        spiffe_id: &spiffe_id,
        dns_names: dns,
        ip_addresses: &ips,
        validity: SERVER_CERT_VALIDITY,
    };
    Ok((ca.issue_leaf(&subject, &checked, now)?, key))
}

/// Writes the server's TLS chain and key (atomically, key 0600).
pub fn write_server_tls(paths: &Paths, ca: &Ca, cert: &IssuedCert, key: &KeyPair) -> anyhow::Result<()> {
    let mut chain = pem("CERTIFICATE", &cert.der);
    for c in ca.chain() {
        chain.push_str(&pem("CERTIFICATE", &c));
    }
    write_file(&paths.tls_key(), key.serialize_pem().as_bytes(), 0o600)?;
    write_file(&paths.tls_cert(), chain.as_bytes(), 0o644)?;
    Ok(())
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .with_context(|| format!("creating {}", dir.display()))
}

/// A database URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            let user = creds.split(':').next().unwrap_or_default();
            format!("{}{}:***{}", &url[..s + 3], user, &url[at..])
        }
        _ => url.to_string(),
    }
}
