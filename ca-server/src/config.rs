//! Configuration: defaults, then `DIR/ca.toml`, then `BSN_CA_*` environment variables, then
//! command-line flags (each later layer wins).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use identity::TrustDomain;
use serde::{Deserialize, Serialize};
use time::Duration;

use crate::pki::Policy;

/// The files of a CA data directory.
#[derive(Debug, Clone)]
pub struct Paths {
    /// The directory.
    pub dir: PathBuf,
}

impl Paths {
    /// Paths under `dir`.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self { dir: dir.into() }
    }
    fn f(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
    /// `ca.toml`: written last by init, so its presence means "initialised".
    pub fn config(&self) -> PathBuf {
        self.f("ca.toml")
    }
    /// Root certificate.
    pub fn root_cert(&self) -> PathBuf {
        self.f("root.pem")
    }
    /// The root's current CRL (DER), signed by the root key at init and re-signed when due.
    pub fn root_crl(&self) -> PathBuf {
        self.f("root-crl.der")
    }
    /// Sealed root key (not needed to serve; may be moved offline).
    pub fn root_key(&self) -> PathBuf {
        self.f("root.key.sealed")
    }
    /// Intermediate certificate.
    pub fn intermediate_cert(&self) -> PathBuf {
        self.f("intermediate.pem")
    }
    /// Sealed intermediate key.
    pub fn intermediate_key(&self) -> PathBuf {
        self.f("intermediate.key.sealed")
    }
    /// The server's TLS certificate chain (leaf, intermediate).
    pub fn tls_cert(&self) -> PathBuf {
        self.f("tls.pem")
    }
    /// The server's TLS key (0600).
    pub fn tls_key(&self) -> PathBuf {
        self.f("tls.key")
    }
    /// The sealed issuance-log key.
    pub fn log_key(&self) -> PathBuf {
        self.f("log.key.sealed")
    }
    /// The log's verifier key (signed-note vkey).
    pub fn log_vkey(&self) -> PathBuf {
        self.f("log.vkey")
    }
    /// What clients trust: the root certificates.
    pub fn trust_bundle(&self) -> PathBuf {
        self.f("trust-bundle.pem")
    }
    /// The default SQLite database.
    pub fn sqlite_url(&self) -> String {
        format!("sqlite://{}?mode=rwc", self.f("ca.db").display())
    }
}

/// The settings file, `DIR/ca.toml`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FileConfig {
    /// The SPIFFE trust domain (fixed at init).
    pub trust_domain: String,
    /// Listen address (default 127.0.0.1:8443).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub listen: Option<String>,
    /// Database URL (default: SQLite in the data directory).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub database_url: Option<String>,
    /// Participant certificate lifetime, such as `90d` or `12h` (default 90d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub participant_validity: Option<String>,
    /// Node certificate lifetime (default 30d).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub node_validity: Option<String>,
    /// CRL lifetime (default 24h); the CRL is re-signed when half of it has passed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub crl_validity: Option<String>,
    /// The root CRL's lifetime (default 365d); re-signed when half of it has passed, by a CA
    /// that holds the root key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub root_crl_validity: Option<String>,
    /// The CA's public base URL, such as `https://ca.example.org` (default: `https://` and the
    /// listen address): certificates name their CRL under it (CRL distribution points).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// The issuance log's origin and checkpoint key name (default `<trust_domain>/log`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub log_origin: Option<String>,
    /// argon2id hashes run at once (default: number of CPUs).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hash_parallelism: Option<usize>,
    /// How often the change feed sends a signed heartbeat (default 5s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub feed_heartbeat: Option<String>,
    /// Open connections at most (default 16384).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections: Option<usize>,
    /// Open connections from one address at most (default 512).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_connections_per_address: Option<usize>,
    /// Time to finish the TLS handshake (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub handshake_timeout: Option<String>,
    /// Time from the handshake to the first request's headers (default 10s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub header_timeout: Option<String>,
    /// Time a connection may sit without a request in flight (default 60s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_timeout: Option<String>,
    /// Time to receive a whole request body (default 30s).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub body_timeout: Option<String>,
    /// Who may read `/metrics`: `operators` (administrators and auditors, the default) or
    /// `public`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics_access: Option<String>,
    /// The issuing key in a PKCS#11 token (set by `init --pkcs11-*`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs11: Option<crate::hsm::Pkcs11Settings>,
}

/// The resolved configuration of `serve`.
#[derive(Debug, Clone)]
pub struct Config {
    /// Data directory.
    pub paths: Paths,
    /// Trust domain.
    pub trust_domain: TrustDomain,
    /// Listen address.
    pub listen: SocketAddr,
    /// Database URL.
    pub database_url: String,
    /// Issuance policy.
    pub policy: Policy,
    /// argon2id parallelism.
    pub hash_parallelism: usize,
    /// The issuance log's origin.
    pub log_origin: String,
    /// Change feed heartbeat interval.
    pub feed_heartbeat: std::time::Duration,
    /// What one client may hold open, and for how long.
    pub connections: bsn_transport::Limits,
    /// Whether anyone may read `/metrics` (else administrators and auditors only).
    pub metrics_public: bool,
    /// The public base URL, if configured (else derived from the bound address).
    pub public_url: Option<String>,
    /// The issuing key's token, if it is in one.
    pub pkcs11: Option<crate::hsm::Pkcs11Settings>,
}

/// Checks a public base URL: `https://host[:port]` with an optional path, no query, no trailing
/// slash (certificates append `/api/v1/crl` to it).
pub fn check_public_url(url: &str) -> anyhow::Result<String> {
    let url = url.trim_end_matches('/');
    let rest = url
        .strip_prefix("https://")
        .ok_or_else(|| anyhow::anyhow!("public URL '{url}' must start with https://"))?;
    let host = rest.split('/').next().unwrap_or_default();
    if host.is_empty()
        || url.len() > 200
        || !url
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-._~:/[]".contains(&b))
    {
        bail!("public URL '{url}' must be https://HOST[:PORT][/PATH] without a query or spaces");
    }
    Ok(url.to_string())
}

/// The base URL a CA bound to `addr` is reached at when none is configured.
pub fn default_public_url(addr: SocketAddr) -> String {
    match addr.ip() {
        ip if ip.is_unspecified() => format!("https://localhost:{}", addr.port()),
        std::net::IpAddr::V6(ip) => format!("https://[{ip}]:{}", addr.port()),
        ip => format!("https://{ip}:{}", addr.port()),
    }
}

fn env(key: &str) -> Option<String> {
    std::env::var(format!("BSN_CA_{key}")).ok().filter(|v| !v.is_empty())
}

fn env_num<T: std::str::FromStr>(key: &str, file: Option<T>) -> anyhow::Result<Option<T>> {
    match env(key) {
        Some(v) => Ok(Some(
            v.parse()
                .map_err(|_| anyhow::anyhow!("BSN_CA_{key}={v} is not a number"))?,
        )),
        None => Ok(file),
    }
}

impl Config {
    /// Reads `dir/ca.toml` and applies environment variables and flags.
    pub fn load(dir: &Path, listen: Option<String>, database_url: Option<String>) -> anyhow::Result<Self> {
        let paths = Paths::new(dir);
        let text = std::fs::read_to_string(paths.config()).with_context(|| {
            format!(
                "{} not found: run `ca-server init --data-dir {} --trust-domain NAME` first",
                paths.config().display(),
                dir.display()
            )
        })?;
        let file: FileConfig =
            toml::from_str(&text).with_context(|| format!("reading {}", paths.config().display()))?;
        let trust_domain = TrustDomain::parse(&file.trust_domain).context("trust_domain in ca.toml")?;
        let listen = listen
            .or_else(|| env("LISTEN"))
            .or(file.listen)
            .unwrap_or_else(|| "127.0.0.1:8443".into());
        let listen: SocketAddr = listen
            .parse()
            .with_context(|| format!("listen address '{listen}' (expected IP:PORT)"))?;
        let database_url = database_url
            .or_else(|| env("DATABASE_URL"))
            .or(file.database_url)
            .unwrap_or_else(|| paths.sqlite_url());
        let lifetime = |key: &str,
                        file: Option<String>,
                        default: &str,
                        min: Duration,
                        max: Duration|
         -> anyhow::Result<Duration> {
            let text = env(key).or(file).unwrap_or_else(|| default.into());
            let d = parse_duration(&text).with_context(|| format!("{} = '{text}'", key.to_ascii_lowercase()))?;
            if d < min || d > max {
                bail!("{} = '{text}' must be from {min} to {max}", key.to_ascii_lowercase());
            }
            Ok(d)
        };
        let (second, day) = (Duration::seconds(1), Duration::days(1));
        let policy = Policy {
            participant_validity: lifetime(
                "PARTICIPANT_VALIDITY",
                file.participant_validity,
                "90d",
                second,
                day * 3650,
            )?,
            node_validity: lifetime("NODE_VALIDITY", file.node_validity, "30d", second, day * 3650)?,
            crl_validity: lifetime("CRL_VALIDITY", file.crl_validity, "24h", Duration::minutes(2), day * 30)?,
            root_crl_validity: lifetime(
                "ROOT_CRL_VALIDITY",
                file.root_crl_validity,
                "365d",
                Duration::minutes(2),
                day * 3650,
            )?,
        };
        let public_url = env("PUBLIC_URL")
            .or(file.public_url)
            .map(|u| check_public_url(&u).context("public_url"))
            .transpose()?;
        let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(2);
        let hash_parallelism = env_num("HASH_PARALLELISM", file.hash_parallelism)?
            .unwrap_or(cpus)
            .clamp(1, 64);
        let log_origin = env("LOG_ORIGIN")
            .or(file.log_origin)
            .unwrap_or_else(|| format!("{trust_domain}/log"));
        let feed_heartbeat = lifetime(
            "FEED_HEARTBEAT",
            file.feed_heartbeat,
            "5s",
            second,
            Duration::minutes(5),
        )?
        .unsigned_abs();
        let timeout = |key: &str, file: Option<String>, default: &str| -> anyhow::Result<std::time::Duration> {
            Ok(lifetime(key, file, default, second, Duration::hours(1))?.unsigned_abs())
        };
        let defaults = bsn_transport::Limits::default();
        let connections = bsn_transport::Limits {
            max_connections: env_num("MAX_CONNECTIONS", file.max_connections)?
                .unwrap_or(defaults.max_connections)
                .clamp(16, 1_000_000),
            max_per_address: env_num("MAX_CONNECTIONS_PER_ADDRESS", file.max_connections_per_address)?
                .unwrap_or(defaults.max_per_address)
                .clamp(1, 1_000_000),
            handshake_timeout: timeout("HANDSHAKE_TIMEOUT", file.handshake_timeout, "10s")?,
            header_timeout: timeout("HEADER_TIMEOUT", file.header_timeout, "10s")?,
            idle_timeout: timeout("IDLE_TIMEOUT", file.idle_timeout, "60s")?,
            body_timeout: timeout("BODY_TIMEOUT", file.body_timeout, "30s")?,
            ..defaults
        };
        let metrics_public = match env("METRICS_ACCESS").or(file.metrics_access).as_deref() {
            None | Some("operators") => false,
            Some("public") => true,
            Some(other) => bail!("metrics_access = '{other}' must be operators or public"),
        };
        Ok(Self {
            paths,
            trust_domain,
            listen,
            database_url,
            policy,
            hash_parallelism,
            log_origin,
            feed_heartbeat,
            connections,
            metrics_public,
            public_url,
            pkcs11: file.pkcs11,
        })
    }
}

/// Parses a duration such as `90d`, `12h`, `30m` or `45s`.
pub fn parse_duration(s: &str) -> anyhow::Result<Duration> {
    let s = s.trim();
    let (num, unit) = s.split_at(s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len()));
    let n: i64 = num
        .parse()
        .map_err(|_| anyhow::anyhow!("expected a number followed by s, m, h or d"))?;
    match unit {
        "s" => Ok(Duration::seconds(n)),
        "m" => Ok(Duration::minutes(n)),
        "h" => Ok(Duration::hours(n)),
        "d" => Ok(Duration::days(n)),
        _ => bail!("expected a number followed by s, m, h or d"),
    }
}

/// Where the CA passphrase comes from.
#[derive(Debug, Clone, clap::Args)]
pub struct PassphraseArgs {
    /// Read the CA key passphrase from this file (first line).
    #[arg(long, value_name = "FILE")]
    pub passphrase_file: Option<PathBuf>,
    /// Use the publicly known development passphrase. Never for a real CA.
    #[arg(long)]
    pub insecure_dev_passphrase: bool,
}

impl PassphraseArgs {
    /// The passphrase: `--passphrase-file`, else `BSN_CA_PASSPHRASE`, else the development one if
    /// explicitly asked for.
    pub fn resolve(&self) -> anyhow::Result<String> {
        let p = if let Some(f) = &self.passphrase_file {
            let text =
                std::fs::read_to_string(f).with_context(|| format!("reading passphrase file {}", f.display()))?;
            text.lines().next().unwrap_or_default().to_string()
        } else if let Ok(p) = std::env::var("BSN_CA_PASSPHRASE") {
            p
        } else if self.insecure_dev_passphrase {
            crate::keystore::DEV_PASSPHRASE.to_string()
        } else {
            bail!(
                "no CA passphrase: set BSN_CA_PASSPHRASE, or pass --passphrase-file FILE \
                 (or --insecure-dev-passphrase for a throwaway development CA)"
            );
        };
        if p.chars().count() < crate::keystore::MIN_PASSPHRASE {
            bail!(
                "the CA passphrase must be at least {} characters",
                crate::keystore::MIN_PASSPHRASE
            );
        }
        Ok(p)
    }
}

/// Where the PKCS#11 user PIN comes from.
#[derive(Debug, Clone, Default, clap::Args)]
pub struct PinArgs {
    /// Read the token's user PIN from this file (first line); else `BSN_PKCS11_PIN`.
    #[arg(long, value_name = "FILE")]
    pub pkcs11_pin_file: Option<PathBuf>,
}

impl PinArgs {
    /// The PIN: `--pkcs11-pin-file`, else `BSN_PKCS11_PIN`.
    pub fn resolve(&self) -> anyhow::Result<String> {
        let pin = match &self.pkcs11_pin_file {
            Some(f) => std::fs::read_to_string(f)
                .with_context(|| format!("reading PIN file {}", f.display()))?
                .lines()
                .next()
                .unwrap_or_default()
                .to_string(),
            None => std::env::var("BSN_PKCS11_PIN")
                .map_err(|_| anyhow::anyhow!("the token's PIN: set BSN_PKCS11_PIN or pass --pkcs11-pin-file FILE"))?,
        };
        if pin.is_empty() {
            bail!("the token's PIN is empty");
        }
        Ok(pin)
    }
}
