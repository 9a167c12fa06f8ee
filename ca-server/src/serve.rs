//! `ca-server serve`: load the CA, check it matches its database, and serve HTTPS.

use std::sync::Arc;
use std::time::Duration as StdDuration;

use anyhow::{Context, bail};
use rcgen::KeyPair;
use rustls::server::NoServerSessionStorage;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};

use crate::app::{AppState, now};
use crate::commit::Committer;
use crate::commit::NewCert;
use crate::config::Config;
use crate::db::Db;
use crate::init::{SERVER_CERT_VALIDITY, SERVER_ID, issue_server_cert, redact, write_server_tls};
use crate::log::LogSigner;
use crate::pki::{Ca, CaSigner};
use crate::secrets::Hasher;

/// Loads everything and serves until SIGINT/SIGTERM. Prints `ca-server listening on https://ADDR`
/// on stdout once it accepts connections.
pub async fn serve(cfg: Config, passphrase: String, pin: Option<String>) -> anyhow::Result<()> {
    // Every connection is a file descriptor: take the hard open-file limit as the soft one, so
    // `max_connections` is what bounds connections, not the default limit of 1,024.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::info!(limit = n, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let p = &cfg.paths;
    let read = |path: std::path::PathBuf| std::fs::read(&path).with_context(|| format!("reading {}", path.display()));
    let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(p.trust_bundle())?)
        .collect::<Result<_, _>>()
        .context("trust-bundle.pem")?;
    let intermediate = CertificateDer::from_pem_slice(&read(p.intermediate_cert())?).context("intermediate.pem")?;
    let token = open_token(&cfg, pin.as_deref())?;
    let signer = match (&cfg.pkcs11, &token) {
        (None, _) | (_, None) => {
            let sealed = String::from_utf8(read(p.intermediate_key())?).context("intermediate.key.sealed")?;
            let key_der = crate::keystore::open(&passphrase, "intermediate", &sealed)?;
            CaSigner::software(KeyPair::try_from(key_der.as_slice()).context("intermediate key")?)
        }
        (Some(t), Some(token)) => {
            let key = token.key(&t.issuing_key)?;
            let (_, cert) = x509_parser::parse_x509_certificate(&intermediate).context("intermediate.pem")?;
            if rcgen::PublicKeyData::der_bytes(&key) != cert.public_key().subject_public_key.data.as_ref() {
                bail!(
                    "the key '{}' in the token '{}' is not the key of {}: refusing to sign with it",
                    t.issuing_key,
                    t.token,
                    p.intermediate_cert().display()
                );
            }
            tracing::info!(token = %t.token, key = %t.issuing_key, "the issuing key is in a PKCS#11 token");
            CaSigner::token(key)
        }
    };
    let mut ca = Ca::new(roots, intermediate, signer, cfg.policy)?;
    // Bound before anything is issued: certificates name their CRL under the public URL, which
    // defaults to the bound address.
    let listener = tokio::net::TcpListener::bind(cfg.listen)
        .await
        .with_context(|| format!("listening on {}", cfg.listen))?;
    let addr = listener.local_addr()?;
    let public_url = cfg
        .public_url
        .clone()
        .unwrap_or_else(|| crate::config::default_public_url(addr));
    ca.set_public_url(&public_url);
    let root_key = match (&cfg.pkcs11, &token) {
        (
            Some(crate::hsm::Pkcs11Settings {
                root_key: Some(label), ..
            }),
            Some(token),
        ) => RootKey::Token(token, label),
        _ => RootKey::Sealed(&passphrase),
    };
    keep_root_crl_fresh(&cfg, root_key, now());
    // The Ed25519 keys in the token, if they are there.
    let ed_key = |label: Option<&String>| -> anyhow::Result<Option<crate::hsm::EdKey>> {
        match (label, &token) {
            (Some(l), Some(t)) => Ok(Some(crate::hsm::EdKey::Token(t.ed25519_key(l)?))),
            _ => Ok(None),
        }
    };
    let log_in_token = ed_key(cfg.pkcs11.as_ref().and_then(|t| t.log_key.as_ref()))?;
    let membership_in_token = ed_key(cfg.pkcs11.as_ref().and_then(|t| t.membership_key.as_ref()))?;
    // Kept open: rotation and handover make their keys in it.
    let token = token.map(Arc::new);
    let in_token = match (&cfg.pkcs11, &token) {
        (Some(t), Some(token)) => Some(crate::hsm::InToken {
            token: token.clone(),
            trust_domain: cfg.trust_domain.as_str().to_string(),
            root_label: t.root_key.clone(),
            log_label: t.log_key.clone(),
            membership_label: t.membership_key.clone(),
        }),
        _ => None,
    };

    let db = Db::connect(&cfg.database_url)
        .await
        .with_context(|| format!("opening database {}", redact(&cfg.database_url)))?;
    match db.meta("trust_domain").await? {
        Some(td) if td == cfg.trust_domain.as_str() => {}
        Some(td) => bail!(
            "the database belongs to trust domain '{td}', not '{}'",
            cfg.trust_domain
        ),
        None => bail!(
            "the database {} holds no CA: run `ca-server init` with it first",
            redact(&cfg.database_url)
        ),
    }
    let expected = crate::pki::sha256_hex(&ca.intermediate);
    if db.meta("intermediate_sha256").await?.as_deref() != Some(expected.as_str()) {
        bail!(
            "the database was initialised with a different intermediate CA than {}",
            p.intermediate_cert().display()
        );
    }

    // The log's key of initialisation, unless a handover retired it and its file is gone.
    let first_log_key = match log_in_token {
        Some(key) => Some(key),
        None => match std::fs::read(p.log_key()) {
            Ok(bytes) => {
                let sealed = String::from_utf8(bytes).context("log.key.sealed")?;
                let pkcs8 = crate::keystore::open(&passphrase, "log", &sealed)?;
                Some(crate::hsm::EdKey::Software(
                    ring::signature::Ed25519KeyPair::from_pkcs8(&pkcs8)
                        .map_err(|e| anyhow::anyhow!("log.key.sealed: {e}"))?,
                ))
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
            Err(e) => bail!("reading {}: {e}", p.log_key().display()),
        },
    };
    let log = LogSigner::stored(&cfg.log_origin, first_log_key, &passphrase, token.clone())?;
    if let Some(first) = log.first_public() {
        if db.meta("log_vkey").await?.as_deref() != Some(crate::log::vkey_of(&cfg.log_origin, &first).as_str()) {
            bail!(
                "the database's issuance log was signed with another key or origin than {} and '{}'",
                p.log_key().display(),
                cfg.log_origin
            );
        }
        crate::handover::record_first(&db, identity::logleaf::KeyPurpose::Log, &first, now()).await?;
    }
    log.reload(&mut *db.acquire().await?)
        .await
        .context("loading the log's signing keys")?;
    // The intermediates: number 1 is the one of initialisation; rotation adds the others.
    crate::intermediates::record_first(&db, &ca.intermediate, now()).await?;
    // The roots: number 1 is the one of initialisation; root rotation adds the others.
    let first_root = ca.roots.first().context("root.pem holds no certificate")?;
    crate::roots::record_first(&db, first_root, now()).await?;
    let keys = Arc::new(crate::intermediates::Keys {
        passphrase: passphrase.clone(),
        first: ca.signer(),
        policy: cfg.policy,
        public_url: public_url.clone(),
        trust_domain: cfg.trust_domain.as_str().to_string(),
        paths: cfg.paths.clone(),
        token: in_token,
        opened: Default::default(),
    });
    let issuers = Arc::new(crate::intermediates::Current::new(
        crate::intermediates::Issuers::load(&db, &keys)
            .await
            .context("loading the issuing intermediates")?,
    ));
    drop(ca);
    let ca = issuers.get().active.clone();
    tracing::info!(intermediate = ca.number, "issuing intermediate");

    let size = crate::log::self_check(&mut *db.acquire_writer().await?, &log)
        .await
        .context("the issuance log failed its start-up self-check; refusing to sign anything")?;
    tracing::info!(size, origin = %cfg.log_origin, "issuance log verified");
    let log = Arc::new(log);

    renew_server_cert_if_due(&cfg, &ca, &db, &log).await?;
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&read(p.tls_cert())?)
        .collect::<Result<_, _>>()
        .context("tls.pem")?;
    let key = PrivateKeyDer::from_pem_slice(&read(p.tls_key())?).context("tls.key")?;
    let tls = tls_config(&ca, chain, key)?;

    // The membership key: number 1 is the one of initialisation; a handover adds the others.
    let membership = crate::registry::MembershipSigner::load(
        &db,
        &passphrase,
        cfg.trust_domain.as_str(),
        membership_in_token,
        token.clone(),
    )
    .await
    .context("loading the membership key")?;
    if let Some(first) = membership.first_public() {
        crate::handover::record_first(&db, identity::logleaf::KeyPurpose::Membership, &first, now()).await?;
    }
    membership
        .reload(&mut *db.acquire().await?)
        .await
        .context("loading the active membership key")?;

    let metrics = Arc::new(crate::metrics::Metrics::default());
    let state = Arc::new(AppState {
        committer: Committer::start(db.clone(), log.clone(), metrics.clone()),
        log,
        log_hashes: Default::default(),
        membership,
        feed_wakeup: tokio::sync::watch::channel(0).0,
        feed_streams: bsn_transport::KeyedSlots::new(crate::api::FEED_STREAMS_PER_NODE, crate::api::MAX_FEED_STREAMS),
        feed_heartbeat: cfg.feed_heartbeat,
        login_limits: Default::default(),
        enroll_limits: Default::default(),
        demerits: Default::default(),
        tarpit: Default::default(),
        connections: Default::default(),
        metrics_public: cfg.metrics_public,
        identities: crate::app::IdentityCache::new(StdDuration::from_secs(10)),
        metrics,
        hasher: Hasher::new(cfg.hash_parallelism),
        trust_domain: cfg.trust_domain.clone(),
        db: db.clone(),
        root_crl: cfg.paths.root_crl(),
        issuers: issuers.clone(),
        keys: keys.clone(),
    });
    tokio::spawn(issuers.follow(db.clone(), keys));
    tokio::spawn(state.log.clone().follow(db.clone(), crate::intermediates::FOLLOW_EVERY));
    tokio::spawn(refresh_crl(state.clone()));
    tokio::spawn(watch_feed(state.clone()));
    let connection_stats = state.connections.clone();
    let app = crate::api::router(state);

    let (stop, stopped) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down");
        let _ = stop.send(true);
    });
    println!("ca-server listening on https://{addr}");
    tracing::info!(%addr, %public_url, database = %redact(&cfg.database_url), "serving");
    bsn_transport::serve(
        listener,
        Arc::new(tls),
        app,
        Arc::new(crate::auth::Admission),
        cfg.connections.clone(),
        connection_stats,
        stopped,
    )
    .await;
    db.close().await;
    Ok(())
}

/// The server's TLS configuration: client certificates requested and, when presented, verified
/// against the roots; no session resumption, so every connection is a full handshake.
pub fn tls_config(
    ca: &Ca,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> anyhow::Result<rustls::ServerConfig> {
    let provider = bsn_transport::server_crypto();
    // Client certificates are optional (public routes, the portal); an expired one reaches
    // `crate::auth::Caller`, which answers with a `certificate-expired` problem document that
    // tells the user what to do rather than a bare TLS alert.
    let verifier = bsn_transport::verify::ClientCerts::builder(&ca.roots, provider.clone())
        .optional()
        .expired_to_application()
        .build()?;
    let mut cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(verifier)
        .with_single_cert(chain, key)
        .context("server certificate and key do not match")?;
    cfg.alpn_protocols = vec![b"h2".to_vec(), b"http/1.1".to_vec()];
    cfg.ignore_client_order = true;
    cfg.session_storage = Arc::new(NoServerSessionStorage {});
    cfg.send_tls13_tickets = 0;
    Ok(cfg)
}

/// Re-issues the server's TLS certificate when a third or less of its lifetime is left (or it is
/// missing), recording it like any other certificate.
async fn renew_server_cert_if_due(cfg: &Config, ca: &Ca, db: &Db, log: &LogSigner) -> anyhow::Result<()> {
    let p = &cfg.paths;
    let chain: Vec<CertificateDer<'static>> = std::fs::read(p.tls_cert())
        .ok()
        .map(|pem| CertificateDer::pem_slice_iter(&pem).filter_map(Result::ok).collect())
        .unwrap_or_default();
    let remaining = chain
        .first()
        .and_then(|der| identity::profile::check_leaf(der).ok())
        .map(|leaf| leaf.not_after - now().unix_timestamp());
    // Also when another intermediate issues now: after a rotation the server's certificate moves
    // to the active hierarchy at the next start, so the old intermediate (and, after a root
    // rotation, the old root) can retire, and clients that trust only the new root reach it.
    let current_issuer = chain.get(1) == Some(&ca.intermediate);
    if current_issuer && remaining.is_some_and(|r| r > SERVER_CERT_VALIDITY.whole_seconds() / 3) && p.tls_key().exists()
    {
        return Ok(());
    }
    let server = db
        .identity(SERVER_ID)
        .await?
        .context("the server identity is missing from the database")?;
    let t = now();
    let (cert, key) = issue_server_cert(ca, &cfg.trust_domain, &server.dns_names, &server.ip_addresses, t)?;
    let mut tx = db.begin().await?;
    let row = NewCert {
        identity: SERVER_ID,
        cert: &cert,
        issued_via: "renew",
        authorized_by: "serve",
        issued_at: t.unix_timestamp(),
    };
    crate::commit::record_certs(&mut tx, db.backend, log, &[row]).await?;
    tx.commit().await?;
    write_server_tls(p, ca, &cert, &key)?;
    tracing::info!(serial = %cert.serial_hex, "renewed the server's TLS certificate");
    Ok(())
}

/// The root CRL now published: its thisUpdate and nextUpdate.
#[derive(Debug, Clone, Copy)]
pub struct RootCrl {
    /// When it was signed.
    pub this_update: time::OffsetDateTime,
    /// When it expires: relying parties that check the root's CRL (nginx `ssl_crl`, OpenSSL
    /// `-crl_check_all`) refuse every client after this.
    pub next_update: time::OffsetDateTime,
}

/// When the root CRL in `file` expires (Unix seconds), if there is one that parses.
pub fn root_crl_next_update(file: &std::path::Path) -> Option<i64> {
    let der = std::fs::read(file).ok()?;
    let (_, crl) = x509_parser::parse_x509_crl(&der).ok()?;
    Some(crl.next_update()?.timestamp())
}

/// Reads the published root CRL's dates, if there is one that parses.
pub fn root_crl(paths: &crate::config::Paths) -> Option<RootCrl> {
    let der = std::fs::read(paths.root_crl()).ok()?;
    let (_, crl) = x509_parser::parse_x509_crl(&der).ok()?;
    Some(RootCrl {
        this_update: crl.last_update().to_datetime(),
        next_update: crl.next_update()?.to_datetime(),
    })
}

/// The CA's PKCS#11 token, opened with `pin`, when `ca.toml` names one.
pub fn open_token(cfg: &Config, pin: Option<&str>) -> anyhow::Result<Option<crate::hsm::Token>> {
    let Some(t) = &cfg.pkcs11 else { return Ok(None) };
    let pin = pin.ok_or_else(|| {
        anyhow::anyhow!(
            "the CA's keys are in the token '{}': set BSN_PKCS11_PIN or pass --pkcs11-pin-file FILE",
            t.token
        )
    })?;
    let token = crate::hsm::Token::open(&t.module, &t.token, pin)
        .with_context(|| format!("opening the token '{}' that holds the CA's keys", t.token))?;
    Ok(Some(token))
}

/// Where the root key is, for signing the root's CRL.
pub enum RootKey<'a> {
    /// Sealed in `root.key.sealed`, opened with this passphrase.
    Sealed(&'a str),
    /// In the token, with this label.
    Token(&'a crate::hsm::Token, &'a str),
}

/// Signs a new root CRL with the root key and publishes it (written durably, then renamed over
/// the old one: a crash leaves the old or the new, never half).
pub fn sign_root_crl(cfg: &Config, root_key: RootKey<'_>, now: time::OffsetDateTime) -> anyhow::Result<RootCrl> {
    let p = &cfg.paths;
    let root = std::fs::read(p.root_cert()).with_context(|| format!("reading {}", p.root_cert().display()))?;
    let root = CertificateDer::from_pem_slice(&root).context("root.pem")?;
    if let Some(old) = root_crl(p)
        && old.this_update >= now
    {
        bail!(
            "the published root CRL was signed at {} or later: check the clock",
            old.this_update
        );
    }
    let validity = cfg.policy.root_crl_validity;
    let der = match root_key {
        RootKey::Sealed(passphrase) => {
            let sealed = std::fs::read_to_string(p.root_key()).with_context(|| {
                format!(
                    "reading {}: the root key is not here (the root is offline), so this CA cannot sign \
                     the root's CRL: sign it with `ca-server root crl --root-dir DIR` on the root's \
                     machine and publish it with `ca-server root install-crl`",
                    p.root_key().display()
                )
            })?;
            let key = KeyPair::try_from(crate::keystore::open(passphrase, "root", &sealed)?.as_slice())
                .context("root key")?;
            crate::pki::sign_root_crl(&root, &key, now, validity)?
        }
        RootKey::Token(token, label) => crate::pki::sign_root_crl(&root, &token.key(label)?, now, validity)?,
    };
    bsn_api::files::write_file(&p.root_crl(), &der, 0o644)
        .with_context(|| format!("writing {}", p.root_crl().display()))?;
    Ok(RootCrl {
        this_update: now,
        next_update: now + cfg.policy.root_crl_validity,
    })
}

/// At start-up: signs the root CRL when there is none or half its lifetime has passed (the
/// root key is opened for this and dropped); without the root key, warns as its end nears.
fn keep_root_crl_fresh(cfg: &Config, root_key: RootKey<'_>, now: time::OffsetDateTime) {
    let current = root_crl(&cfg.paths);
    let due = current.is_none_or(|c| now >= c.this_update + (c.next_update - c.this_update) / 2);
    if !due {
        return;
    }
    match sign_root_crl(cfg, root_key, now) {
        Ok(c) => tracing::info!(next_update = %c.next_update, "root CRL signed"),
        Err(e) => match current {
            Some(c) => tracing::warn!(next_update = %c.next_update, error = %format!("{e:#}"),
                "the root CRL is past half its lifetime and could not be re-signed: run `ca-server root crl` before it ends"),
            None => tracing::warn!(error = %format!("{e:#}"),
                "no root CRL is published and none could be signed: relying parties that check every CRL in the chain will refuse clients"),
        },
    }
}

/// Keeps the CRL fresh: re-signs it when half its lifetime has passed.
async fn refresh_crl(state: Arc<AppState>) {
    let mut tick = tokio::time::interval(StdDuration::from_secs(60));
    for minute in 0u64.. {
        tick.tick().await;
        // Hourly: the root's CRL is re-signed only at start-up or by the operator, so say so
        // loudly in its last 30 days.
        if minute % 60 == 0
            && state.issuers.get().roots.iter().any(|r| r.number == 1 && r.trusted())
            && let Some(end) = root_crl_next_update(&state.root_crl)
            && end - now().unix_timestamp() < 30 * 86_400
        {
            tracing::warn!(
                next_update = end,
                "the root CRL expires within 30 days: run `ca-server root crl`"
            );
        }
        // A membership key handover made on another replica: heartbeats follow it within a minute.
        if let Ok(mut c) = state.db.acquire().await
            && let Err(e) = state.membership.reload(&mut c).await
        {
            tracing::warn!(error = %e, "loading the active membership key failed; will retry");
        }
        // Every later root whose key this CA holds.
        match crate::roots::refresh_crls(&state.db, &state.keys, now()).await {
            Ok(done) => {
                for root in done {
                    tracing::info!(root, "root {root}'s CRL re-signed");
                }
            }
            Err(e) => tracing::warn!(error = %e, "re-signing a root's CRL failed; will retry"),
        }
        // Every intermediate whose CRL is published: an old one until it is retired.
        for ca in state.issuers.get().signing.values() {
            match state.db.refresh_crl_if_due(ca, now()).await {
                Ok(Some(n)) => tracing::info!(intermediate = ca.number, crl_number = n, "CRL re-signed"),
                Ok(None) => {}
                Err(e) => tracing::warn!(intermediate = ca.number, error = %e, "CRL refresh failed; will retry"),
            }
        }
    }
}

async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = ctrl_c => {}
        _ = term.recv() => {}
    }
}

/// Wakes this replica's feed streams when another replica (sharing the database) adds feed
/// events. Commits made here wake them at once; this catches the others within 100 ms.
async fn watch_feed(state: Arc<AppState>) {
    let mut seen = crate::registry::feed_head(&state.db).await.unwrap_or(0);
    let mut tick = tokio::time::interval(StdDuration::from_millis(100));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        if state.feed_wakeup.receiver_count() == 0 {
            continue;
        }
        match crate::registry::feed_head(&state.db).await {
            Ok(head) if head != seen => {
                seen = head;
                state.feed_changed();
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "reading the change feed's head failed"),
        }
    }
}
