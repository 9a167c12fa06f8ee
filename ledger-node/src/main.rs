//! `ledger-node`: a BSN city node.
//!
//! Exit codes: 0 success (or a clean shutdown); 1 a local problem (files, configuration);
//! 3 the CA refused (a wrong secret, not a node identity); 5 the CA could not be reached.

use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

use bsn_api::client::{Api, ClientError};
use bsn_api::files::{KeyType, csr_pem, generate_key, write_credentials, write_file};
use clap::{Parser, Subcommand};
use ledger_node::api::{AppState, router};
use ledger_node::directory::Directory;
use ledger_node::subchain::{Creators, Hibernation, Limits, Subchains};
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;
use serde::{Deserialize, Serialize};

#[derive(Parser)]
#[command(name = "ledger-node", version, about = "A BSN city node")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

// Parsed once at start-up: the size of the `init` variant costs nothing.
#[allow(clippy::large_enum_variant)]
#[derive(Subcommand)]
enum Command {
    /// Enroll this node with the CA and write its data directory.
    Init {
        /// Data directory (created).
        #[arg(long, env = "BSN_NODE_DATA_DIR", default_value = "./bsn-node")]
        data_dir: PathBuf,
        /// The CA's URL.
        #[arg(long, env = "BSN_CA", value_name = "URL")]
        ca: String,
        /// The CA's trust bundle (trust-bundle.pem).
        #[arg(long, env = "BSN_CA_BUNDLE", value_name = "FILE")]
        ca_bundle: PathBuf,
        /// The node identity's id, registered at the CA with `bsn register --type node`.
        #[arg(long)]
        name: String,
        /// Its one-time enrollment secret.
        #[arg(long, env = "BSN_SECRET", hide_env_values = true)]
        secret: String,
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9443")]
        listen: String,
        /// The public URL participants and other nodes reach this node at (default: https://
        /// and the listen address), published in the CA's node directory.
        #[arg(long, value_name = "URL")]
        url: Option<String>,
        /// The city this node runs in, published in the CA's node directory.
        #[arg(long, default_value = "local")]
        city: String,
        /// `node` (a city node) or `orderer`; must match how the CA registered the identity
        /// (default: whatever it is).
        #[arg(long, value_parser = ["node", "orderer"])]
        role: Option<String>,
        /// What this city node offers for automatic placement of subchains: `shared` (many
        /// subchains, up to the rate and storage below) or `dedicated` (one subchain). Without
        /// it the node hosts only subchains pinned to it by hand. Published in the CA's node
        /// directory; change it under [capacity] in node.toml and restart.
        #[arg(long, value_parser = ["shared", "dedicated"], requires_all = ["capacity_rate", "capacity_storage"])]
        capacity: Option<String>,
        /// Transactions per second it sustains for the subchains placed on it.
        #[arg(long, requires = "capacity")]
        capacity_rate: Option<u64>,
        /// Bytes of blocks and state it can store for them, such as 500GiB.
        #[arg(long, requires = "capacity", value_parser = identity::plan::parse_size)]
        capacity_storage: Option<u64>,
    },
    /// Run the node.
    Serve {
        /// Data directory written by `init`.
        #[arg(long, env = "BSN_NODE_DATA_DIR", default_value = "./bsn-node")]
        data_dir: PathBuf,
        /// Address to listen on (overrides node.toml).
        #[arg(long, env = "BSN_NODE_LISTEN")]
        listen: Option<String>,
    },
}

/// `node.toml`: written by `init`; every key can be overridden by `BSN_NODE_<KEY>`.
#[derive(Serialize, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
struct NodeConfig {
    name: String,
    ca: String,
    listen: String,
    trust_domain: String,
    #[serde(default = "d_block_max_txs")]
    block_max_txs: usize,
    #[serde(default = "d_inflight")]
    inflight_blocks: usize,
    #[serde(default = "d_stale")]
    stale_after_secs: i64,
    #[serde(default = "d_cache")]
    cache_mib: usize,
    /// The public URL participants and other nodes reach this one at (default: https:// +
    /// listen), published in the CA's node directory at every start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    advertise: Option<String>,
    /// The city it runs in, published in the CA's node directory with the URL.
    #[serde(default = "d_city")]
    city: String,
    /// What a city node offers for automatic placement (absent: only subchains pinned by hand),
    /// published in the CA's node directory at every start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    capacity: Option<identity::plan::Capacity>,
    /// Optional overrides of other nodes' URLs by node name (otherwise the CA's node directory
    /// says where each node is).
    #[serde(default)]
    peers: std::collections::BTreeMap<String, String>,
    /// Seconds a subchain nobody uses stays open before it hibernates (default 30): its ordering
    /// stops and its file closes until a request, a peer or the CA needs it again.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idle_close_secs: Option<u64>,
    /// Subchains open at once at most (default 512); beyond it the least recently used hibernate.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_open_subchains: Option<usize>,
    /// Seconds between usage reports to the CA (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    usage_report_secs: Option<u64>,
    /// Open connections at most (default 16384).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_connections: Option<usize>,
    /// Open connections from one address at most (default 512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    max_connections_per_address: Option<usize>,
    /// Seconds to finish the TLS handshake (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    handshake_timeout_secs: Option<u64>,
    /// Seconds from the handshake to the first request's headers (default 10).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    header_timeout_secs: Option<u64>,
    /// Seconds a connection may sit without a request in flight (default 60).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    idle_timeout_secs: Option<u64>,
    /// Seconds to receive a whole request body (default 30).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    body_timeout_secs: Option<u64>,
    /// Who may read `/metrics`: `operators` (node identities, the default) or `public` (any
    /// client with a certificate of this CA).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    metrics_access: Option<String>,
}

impl NodeConfig {
    /// The connection limits, from the defaults and this file.
    fn connection_limits(&self) -> Result<bsn_transport::Limits, (ExitCode, String)> {
        let d = bsn_transport::Limits::default();
        let secs = |v: Option<u64>, default: Duration, key: &str| match v {
            None => Ok(default),
            Some(n) if (1..=3600).contains(&n) => Ok(Duration::from_secs(n)),
            Some(n) => Err(local(format!("{key} = {n} must be from 1 to 3600"))),
        };
        Ok(bsn_transport::Limits {
            max_connections: self.max_connections.unwrap_or(d.max_connections).clamp(16, 1_000_000),
            max_per_address: self
                .max_connections_per_address
                .unwrap_or(d.max_per_address)
                .clamp(1, 1_000_000),
            handshake_timeout: secs(
                self.handshake_timeout_secs,
                d.handshake_timeout,
                "handshake_timeout_secs",
            )?,
            header_timeout: secs(self.header_timeout_secs, d.header_timeout, "header_timeout_secs")?,
            idle_timeout: secs(self.idle_timeout_secs, d.idle_timeout, "idle_timeout_secs")?,
            body_timeout: secs(self.body_timeout_secs, d.body_timeout, "body_timeout_secs")?,
            ..d
        })
    }

    /// Whether any client may read `/metrics`.
    fn metrics_public(&self) -> Result<bool, (ExitCode, String)> {
        match self.metrics_access.as_deref() {
            None | Some("operators") => Ok(false),
            Some("public") => Ok(true),
            Some(other) => Err(local(format!("metrics_access = '{other}' must be operators or public"))),
        }
    }
}
fn d_block_max_txs() -> usize {
    2000
}
fn d_inflight() -> usize {
    2
}
fn d_stale() -> i64 {
    30
}
fn d_cache() -> usize {
    4
}
fn d_city() -> String {
    "local".into()
}

impl NodeConfig {
    /// The URL published in the node directory.
    fn public_url(&self) -> String {
        self.advertise
            .clone()
            .unwrap_or_else(|| format!("https://{}", self.listen))
    }
}

/// Publishes this node's entry (city and URL) in the CA's node directory with its own
/// certificate. Setting what the directory already says changes nothing there.
async fn publish(
    ca: &Api,
    city: &str,
    url: &str,
    capacity: Option<&identity::plan::Capacity>,
) -> Result<u64, ClientError> {
    let d: bsn_api::ca::Nodes = ca
        .put_as(
            "/api/v1/nodes/self",
            &bsn_api::ca::OwnEntry {
                city: city.to_string(),
                url: url.to_string(),
                capacity: capacity.cloned(),
            },
        )
        .await?;
    Ok(d.revision)
}

fn local(m: impl std::fmt::Display) -> (ExitCode, String) {
    (ExitCode::from(1), m.to_string())
}

fn ca_error(e: ClientError) -> (ExitCode, String) {
    match &e {
        ClientError::Problem { status, .. } if *status < 500 => (ExitCode::from(3), e.to_string()),
        ClientError::Local(_) => (ExitCode::from(1), e.to_string()),
        _ => (ExitCode::from(5), e.to_string()),
    }
}

fn read(p: &Path) -> Result<Vec<u8>, (ExitCode, String)> {
    std::fs::read(p).map_err(|e| local(format!("cannot read {}: {e}", p.display())))
}

#[allow(clippy::too_many_arguments)]
async fn init(
    dir: &Path,
    ca: &str,
    bundle: &Path,
    name: &str,
    secret: &str,
    listen: &str,
    url: Option<String>,
    city: &str,
    role: Option<&str>,
    capacity: Option<identity::plan::Capacity>,
) -> Result<(), (ExitCode, String)> {
    // Checked before anything is spent: the secret is one-time.
    if let Some(u) = &url {
        identity::membership::check_node_url(u).map_err(local)?;
    }
    identity::membership::check_city(city).map_err(local)?;
    if let Some(c) = &capacity {
        c.check().map_err(|e| local(format!("--capacity: {e}")))?;
        if role == Some("orderer") {
            return Err(local(
                "an orderer offers no capacity (it orders subchains, city nodes host them); drop --capacity",
            ));
        }
    }
    if dir.join("node.toml").exists() {
        return Err(local(format!(
            "{} already holds a node; serve it with `ledger-node serve --data-dir {}` or choose another --data-dir",
            dir.display(),
            dir.display()
        )));
    }
    let bundle_pem = read(bundle)?;
    let api = Api::new(ca, bsn_api::client::tls_config(&bundle_pem, None).map_err(ca_error)?).map_err(ca_error)?;
    let key_v = api.get("/api/v1/membership-key", &[]).await.map_err(ca_error)?;
    let mkey = key_v["key"].as_str().unwrap_or_default().to_string();
    identity::membership::MembershipKey::from_base64(&mkey).map_err(local)?;
    let key = generate_key(KeyType::P256).map_err(local)?;
    let csr = csr_pem(&key).map_err(local)?;
    let v = api
        .post(
            "/api/v1/enroll",
            &serde_json::json!({"id": name, "secret": secret, "csr": csr}),
        )
        .await
        .map_err(ca_error)?;
    let cert = v["certificate"].as_str().unwrap_or_default();
    let leaf = CertificateDer::from_pem_slice(cert.as_bytes()).map_err(local)?;
    let parsed = identity::profile::check_leaf(&leaf).map_err(local)?;
    if !parsed.spiffe_id.kind.is_network_node() {
        return Err((
            ExitCode::from(3),
            format!(
                "{name} is a participant identity; register the node with `bsn register --type node --id {name}` (or `--type orderer`)"
            ),
        ));
    }
    let kind = parsed.spiffe_id.kind.as_str();
    if role.is_some_and(|r| r != kind) {
        return Err((
            ExitCode::from(3),
            format!(
                "{name} is registered as {kind}, not {}; run init again with --role {kind} and a new secret (`bsn reset-secret --id {name}`), or register another identity with `bsn register --type {}`",
                role.unwrap_or_default(),
                role.unwrap_or_default()
            ),
        ));
    }
    std::fs::create_dir_all(dir).map_err(local)?;
    write_credentials(
        dir,
        Some(&key.serialize_pem()),
        cert,
        v["chain"].as_str().unwrap_or_default(),
    )
    .map_err(local)?;
    write_file(&dir.join("ca-bundle.pem"), &bundle_pem, 0o644).map_err(local)?;
    write_file(&dir.join("membership.key"), mkey.as_bytes(), 0o644).map_err(local)?;
    let cfg = NodeConfig {
        name: name.to_string(),
        ca: ca.to_string(),
        listen: listen.to_string(),
        trust_domain: parsed.spiffe_id.trust_domain.as_str().to_string(),
        block_max_txs: d_block_max_txs(),
        inflight_blocks: d_inflight(),
        stale_after_secs: d_stale(),
        cache_mib: d_cache(),
        advertise: url,
        city: city.to_string(),
        capacity: if kind == "orderer" {
            if capacity.is_some() {
                eprintln!("warning: {name} is an orderer: it offers no capacity, --capacity is ignored");
            }
            None
        } else {
            capacity
        },
        peers: Default::default(),
        idle_close_secs: None,
        max_open_subchains: None,
        usage_report_secs: None,
        max_connections: None,
        max_connections_per_address: None,
        handshake_timeout_secs: None,
        header_timeout_secs: None,
        idle_timeout_secs: None,
        body_timeout_secs: None,
        metrics_access: None,
    };
    write_file(
        &dir.join("node.toml"),
        toml::to_string(&cfg).map_err(local)?.as_bytes(),
        0o644,
    )
    .map_err(local)?;
    // The node directory: where this node runs, set with its own new certificate.
    let me = Api::from_files(ca, bundle, Some((&dir.join("cert.pem"), &dir.join("key.pem")))).map_err(ca_error)?;
    let revision = publish(&me, &cfg.city, &cfg.public_url(), cfg.capacity.as_ref())
        .await
        .map_err(ca_error)?;
    println!(
        "{kind} {name} is in the CA's node directory (revision {revision}): {} in {}",
        cfg.public_url(),
        cfg.city
    );
    if let Some(c) = &cfg.capacity {
        println!(
            "it offers {} placement: {} tx/s, {} bytes of storage",
            c.tenancy.as_str(),
            c.rate,
            c.storage
        );
    }
    println!(
        "node {name} enrolled (certificate {}, valid until {})",
        parsed.serial_hex,
        v["not_after"].as_str().unwrap_or("?")
    );
    println!("data directory: {}", dir.display());
    println!("next: ledger-node serve --data-dir {}", dir.display());
    if cfg.capacity.is_some() {
        println!(
            "      then publishers place subchains in {}: bsn subchain create ... --city {}",
            cfg.city, cfg.city
        );
    } else {
        println!("      then have a publisher host a subchain on it: bsn subchain create ... --node {name}");
    }
    Ok(())
}

fn load_config(dir: &Path) -> Result<NodeConfig, (ExitCode, String)> {
    let text = std::fs::read_to_string(dir.join("node.toml")).map_err(|e| {
        local(format!(
            "cannot read {}: {e}; run `ledger-node init --data-dir {}` first",
            dir.join("node.toml").display(),
            dir.display()
        ))
    })?;
    let mut v: toml::Table = toml::from_str(&text).map_err(|e| local(format!("node.toml: {e}")))?;
    for (k, val) in std::env::vars() {
        if let Some(key) = k.strip_prefix("BSN_NODE_") {
            let key = key.to_ascii_lowercase();
            if key == "data_dir" || key == "listen" {
                continue;
            }
            let parsed = val
                .parse::<i64>()
                .map(toml::Value::Integer)
                .unwrap_or(toml::Value::String(val));
            v.insert(key, parsed);
        }
    }
    toml::Value::Table(v)
        .try_into()
        .map_err(|e| local(format!("node configuration: {e}")))
}

async fn serve(dir: &Path, listen: Option<String>) -> Result<(), (ExitCode, String)> {
    // One database file per hosted subchain: take the hard open-file limit as the soft one.
    match rlimit::increase_nofile_limit(u64::MAX) {
        Ok(n) => tracing::info!(limit = n, "open-file limit"),
        Err(e) => tracing::warn!(error = %e, "cannot raise the open-file limit"),
    }
    let mut cfg = load_config(dir)?;
    if let Some(l) = listen {
        cfg.listen = l;
    }
    let bundle_pem = read(&dir.join("ca-bundle.pem"))?;
    let bundle = identity::verify::TrustBundle::from_pem(&bundle_pem).map_err(local)?;
    let mkey =
        identity::membership::MembershipKey::from_base64(&String::from_utf8_lossy(&read(&dir.join("membership.key"))?))
            .map_err(local)?;
    let credential = ledger_node::credential::Credential::load(dir).map_err(local)?;
    let directory = Arc::new(Directory::open(&dir.join("node.redb"), &cfg.name, mkey).map_err(local)?);
    let ca = Api::new(&cfg.ca, credential.client_config(&bundle).map_err(local)?).map_err(ca_error)?;
    let peer_tls = ledger_node::peers::peer_tls(&bundle, credential.clone(), directory.clone()).map_err(local)?;
    let peers = ledger_node::peers::Peers::new(cfg.peers.clone().into_iter().collect(), directory.clone(), peer_tls)
        .map_err(local)?;
    // The CRL is a start-up safety net; the feed carries every revocation.
    match ca.get_bytes("/api/v1/crl").await {
        Ok(der) => {
            let serials: Vec<String> = x509_parser::parse_x509_crl(&der)
                .map(|(_, crl)| {
                    crl.iter_revoked_certificates()
                        .map(|r| {
                            let raw = r.raw_serial();
                            let n = raw.iter().take_while(|b| **b == 0).count();
                            identity::profile::hex_lower(&raw[n..])
                        })
                        .collect()
                })
                .unwrap_or_default();
            let _ = write_file(&dir.join("crl.der"), &der, 0o644);
            if let Ok(n) = directory.add_revoked(serials) {
                tracing::info!(new = n, "CRL read");
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot fetch the CA's CRL now; relying on the feed"),
    }
    // The CA's issuing intermediates, for creators whose certificates come from one this node's
    // own chain does not hold (the feed announces every later step).
    match ca
        .get_as::<bsn_api::ca::Items<bsn_api::ca::Intermediate>>("/api/v1/intermediates", &[])
        .await
    {
        Ok(list) => {
            use rustls_pki_types::pem::PemObject;
            let items = list.items.into_iter().filter(|i| i.state != "retired").filter_map(|i| {
                let der = rustls_pki_types::CertificateDer::from_pem_slice(i.certificate.as_bytes()).ok()?;
                Some((u64::try_from(i.number).ok()?, der.to_vec()))
            });
            match directory.learn_intermediates(false, items) {
                Ok(n) => tracing::info!(new = n, "the CA's issuing intermediates read"),
                Err(e) => tracing::warn!(error = %e, "cannot keep the CA's issuing intermediates"),
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the CA's issuing intermediates now; relying on the feed"),
    }
    // ... and its later roots' cross-certificates, for creators under a root this node's bundle
    // does not hold yet.
    match ca
        .get_as::<bsn_api::ca::Items<bsn_api::ca::Root>>("/api/v1/roots", &[])
        .await
    {
        Ok(list) => {
            use rustls_pki_types::pem::PemObject;
            let items = list.items.into_iter().filter_map(|r| {
                let der = rustls_pki_types::CertificateDer::from_pem_slice(r.cross.as_deref()?.as_bytes()).ok()?;
                Some((u64::try_from(r.number).ok()?, der.to_vec()))
            });
            match directory.learn_intermediates(true, items) {
                Ok(n) => tracing::info!(new = n, "the CA's roots read"),
                Err(e) => tracing::warn!(error = %e, "cannot keep the CA's cross-certificates"),
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the CA's roots now; relying on the feed"),
    }
    // ... and its membership key handovers, to follow from the key pinned at init (both ways:
    // statements signed before a handover stay valid).
    match ca
        .get_as::<bsn_api::ca::Items<bsn_api::ca::SigningKey>>("/api/v1/keys/membership", &[])
        .await
    {
        Ok(list) => {
            let handovers: Vec<_> = list.items.into_iter().filter_map(|k| k.handover).collect();
            match directory.learn_handovers(&handovers) {
                Ok(learned) => tracing::info!(handovers = handovers.len(), learned, "the CA's membership keys read"),
                Err(e) => tracing::error!(error = %e, "the CA's membership key handovers do not verify; ignoring them"),
            }
        }
        Err(e) => tracing::warn!(error = %e, "cannot read the CA's membership keys now; relying on the feed"),
    }
    tokio::spawn(credential.clone().keep_fresh(ca.clone()));
    {
        // Where this node runs, in the CA's node directory: published at every start (an
        // operator changes the URL or city in node.toml and restarts), retried until the CA
        // takes it.
        let (ca, city, url, capacity) = (ca.clone(), cfg.city.clone(), cfg.public_url(), cfg.capacity.clone());
        tokio::spawn(async move {
            loop {
                match publish(&ca, &city, &url, capacity.as_ref()).await {
                    Ok(revision) => {
                        tracing::info!(city, url, revision, "in the CA's node directory");
                        return;
                    }
                    Err(e) if matches!(e, ClientError::Problem { status, .. } if status < 500 && status != 429) => {
                        tracing::error!(error = %e, "the CA refused this node's directory entry; fix url, city or capacity in node.toml and restart");
                        return;
                    }
                    Err(e) => {
                        ledger_node::warn_every!("publish", error = %e, "cannot publish this node's directory entry yet; retrying")
                    }
                }
                tokio::time::sleep(Duration::from_secs(5)).await;
            }
        });
    }
    tokio::spawn(directory.clone().follow(ca.clone()));

    {
        // A revoked peer must not keep a pooled connection: reconnect (and re-verify) on each revocation.
        let (peers, mut revocations) = (peers.clone(), directory.revocations());
        tokio::spawn(async move {
            while revocations.changed().await.is_ok() {
                peers.reconnect();
            }
        });
    }
    let limits = Limits {
        block_max_txs: cfg.block_max_txs.clamp(1, 10_000),
        inflight: cfg.inflight_blocks.clamp(1, 16),
        cache_bytes: cfg.cache_mib.max(1) * 1024 * 1024,
    };
    let subchains = Arc::new(Subchains::new(
        directory.clone(),
        Creators::new(
            bundle.clone(),
            credential.chain().into_iter().skip(1).collect(),
            directory.clone(),
        ),
        dir.to_path_buf(),
        &cfg.name,
        cfg.public_url(),
        peers,
        limits,
        Hibernation {
            idle_after: cfg.idle_close_secs.map_or(Hibernation::default().idle_after, |s| {
                Duration::from_secs(s.clamp(1, 86_400))
            }),
            max_open: cfg
                .max_open_subchains
                .map_or(Hibernation::default().max_open, |n| n.clamp(1, 1_000_000)),
        },
    ));
    tokio::spawn(subchains.clone().follow());
    tokio::spawn(subchains.clone().hibernate());
    tokio::spawn(subchains.clone().watch_orderers());

    let tls = ledger_node::server::tls_config(&bundle, credential.clone(), directory.clone(), &cfg.trust_domain)
        .map_err(local)?;
    let listener = tokio::net::TcpListener::bind(&cfg.listen)
        .await
        .map_err(|e| local(format!("cannot listen on {}: {e}", cfg.listen)))?;
    let addr = listener.local_addr().map_err(local)?;
    let connections = Arc::new(bsn_transport::Stats::default());
    // Metering: counts per subchain and hour, reported to the CA every minute, signed with this
    // node's key.
    let usage = ledger_node::usage::Usage::open(dir).map_err(|e| local(format!("usage.redb: {e}")))?;
    let key = bsn_api::files::load_key(&String::from_utf8_lossy(&read(&dir.join("key.pem"))?))
        .map_err(|e| local(format!("key.pem: {e}")))?;
    tokio::spawn(usage.clone().run(
        ca.clone(),
        cfg.usage_report_secs.map_or(ledger_node::usage::REPORT_EVERY, |s| {
            Duration::from_secs(s.clamp(1, 3600))
        }),
        key,
        cfg.trust_domain.clone(),
        cfg.name.clone(),
        subchains.clone(),
        directory.clone(),
    ));
    let state = Arc::new(AppState::new(
        directory.clone(),
        subchains.clone(),
        cfg.stale_after_secs.max(1) * 1000,
        cfg.metrics_public()?,
        connections.clone(),
        usage.clone(),
    ));
    // Quota buckets of subchains this node no longer takes part in are forgotten.
    {
        let (quotas, directory) = (state.quotas.clone(), directory.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(60));
            loop {
                tick.tick().await;
                let hosted = directory.hosted_revisions();
                quotas.retain(&hosted.iter().map(|(id, _)| id.as_str()).collect());
            }
        });
    }
    let app = router(state);
    let (stop, stopped) = tokio::sync::watch::channel(false);
    println!("ledger-node {} listening on https://{addr} (CA {})", cfg.name, cfg.ca);
    let server = tokio::spawn(bsn_transport::serve(
        listener,
        Arc::new(tls),
        app,
        Arc::new(ledger_node::server::Admission { directory }),
        cfg.connection_limits()?,
        connections,
        stopped,
    ));
    shutdown_signal().await;
    println!("shutting down");
    let _ = stop.send(true);
    let _ = server.await;
    subchains.shutdown().await;
    Ok(())
}

async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).expect("signal handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {},
        _ = term.recv() => {},
    }
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("BSN_LOG").unwrap_or_else(|_| "info,openraft=error".into()),
        )
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    let r = rt.block_on(async {
        match cli.command {
            Command::Init {
                data_dir,
                ca,
                ca_bundle,
                name,
                secret,
                listen,
                url,
                city,
                role,
                capacity,
                capacity_rate,
                capacity_storage,
            } => {
                let capacity = match (capacity.as_deref(), capacity_rate, capacity_storage) {
                    (Some(t), Some(rate), Some(storage)) => Some(identity::plan::Capacity {
                        tenancy: if t == "dedicated" {
                            identity::plan::Tenancy::Dedicated
                        } else {
                            identity::plan::Tenancy::Shared
                        },
                        rate,
                        storage,
                    }),
                    _ => None,
                };
                init(
                    &data_dir,
                    &ca,
                    &ca_bundle,
                    &name,
                    &secret,
                    &listen,
                    url,
                    &city,
                    role.as_deref(),
                    capacity,
                )
                .await
            }
            Command::Serve { data_dir, listen } => serve(&data_dir, listen).await,
        }
    });
    match r {
        Ok(()) => ExitCode::SUCCESS,
        Err((code, msg)) => {
            eprintln!("error: {msg}");
            code
        }
    }
}
