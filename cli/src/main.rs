//! `bsn`: the command line for participants, registrars and administrators.
//!
//! Exit codes: 0 success; 1 local problem (files, arguments); 2 usage; 3 refused by the CA
//! (authentication or permission); 4 invalid request, not found or conflict; 5 CA unreachable
//! or failing; 6 the issuance log failed verification; 7 `audit follow` saw a watched identity.

mod devnet;
mod ledger;
mod output;
mod plans;
mod registrations;
mod subchain;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use bsn_api::ca::{
    Certificate, EnrollRequest, Identity, Issued, NewSecret, Page, RegisterRequest, Registered, RenewRequest,
    RevokeRequest, Revoked, SecretRequest,
};
use bsn_api::client::{Api, ClientError};
use bsn_api::files::{KeyType, csr_pem, generate_key, load_key, write_credentials};
use clap::{Args, Parser, Subcommand};
use serde_json::{Value, json};

/// Key types `bsn` generates.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum KeyArg {
    /// ECDSA P-256 (default).
    P256,
    /// ECDSA P-384.
    P384,
    /// Ed25519.
    Ed25519,
}

impl From<KeyArg> for KeyType {
    fn from(k: KeyArg) -> Self {
        match k {
            KeyArg::P256 => KeyType::P256,
            KeyArg::P384 => KeyType::P384,
            KeyArg::Ed25519 => KeyType::Ed25519,
        }
    }
}

#[derive(Parser)]
#[command(name = "bsn", version, about = "BSN identity and ledger command line")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Clone)]
struct CaArgs {
    /// The CA's URL, such as https://127.0.0.1:8443.
    #[arg(long, env = "BSN_CA", value_name = "URL", value_parser = ledger::https_url)]
    ca: String,
    /// The CA's trust bundle (trust-bundle.pem from the CA operator).
    #[arg(long, env = "BSN_CA_BUNDLE", value_name = "FILE")]
    ca_bundle: PathBuf,
}

#[derive(Args, Clone)]
struct IdentityArgs {
    /// Your certificate (cert.pem written by `bsn enroll`).
    #[arg(long, env = "BSN_CERT", value_name = "FILE")]
    cert: PathBuf,
    /// Your private key (key.pem written by `bsn enroll`).
    #[arg(long, env = "BSN_KEY", value_name = "FILE")]
    key: PathBuf,
}

#[derive(Subcommand)]
enum Command {
    /// Enroll with a one-time secret: make a key here, get a certificate, write key.pem, cert.pem, chain.pem.
    Enroll {
        #[command(flatten)]
        ca: CaArgs,
        /// Your identity id (given by your registrar).
        #[arg(long)]
        id: String,
        /// Your one-time enrollment secret.
        #[arg(long, env = "BSN_SECRET", hide_env_values = true)]
        secret: String,
        /// Directory for key.pem, cert.pem and chain.pem.
        #[arg(long, value_name = "DIR")]
        out: PathBuf,
        /// Key type.
        #[arg(long, value_enum, default_value = "p256")]
        key_type: KeyArg,
        /// Overwrite an existing key.pem in DIR.
        #[arg(long)]
        force: bool,
    },
    /// Renew your certificate over mTLS (same key, or a new one with --rekey).
    Renew {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        me: IdentityArgs,
        /// Generate a new key.
        #[arg(long)]
        rekey: bool,
        /// Key type for --rekey.
        #[arg(long, value_enum, default_value = "p256")]
        key_type: KeyArg,
        /// Where to write the new files (default: the directory of --cert).
        #[arg(long, value_name = "DIR")]
        out: Option<PathBuf>,
        /// Revoke the certificate in --cert once the new one is written (reason superseded, or
        /// keyCompromise with --key-compromised): after a leaked key, the old certificate must
        /// stop working too.
        #[arg(long)]
        revoke_previous: bool,
        /// With --revoke-previous: the previous key may have leaked.
        #[arg(long, requires = "revoke_previous")]
        key_compromised: bool,
    },
    /// Revoke a certificate (your own, or any as an administrator).
    Revoke {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        me: IdentityArgs,
        /// Serial of the certificate to revoke, hex.
        #[arg(long)]
        serial: String,
        /// RFC 5280 reason: unspecified, keyCompromise, cACompromise, affiliationChanged,
        /// superseded, cessationOfOperation, privilegeWithdrawn.
        #[arg(long, default_value = "unspecified")]
        reason: String,
    },
    /// Register an identity (administrators and registrars); prints its one-time secret.
    Register {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        me: IdentityArgs,
        /// The new identity's id ([a-zA-Z0-9._-], up to 128 characters).
        #[arg(long)]
        id: String,
        /// participant, node (a city node) or orderer.
        #[arg(long = "type", default_value = "participant")]
        kind: String,
        /// Roles: admin, registrar, publisher, auditor (repeatable; administrators only).
        #[arg(long = "role")]
        roles: Vec<String>,
        /// Attributes as NAME=VALUE (repeatable).
        #[arg(long = "attr", value_name = "NAME=VALUE")]
        attrs: Vec<String>,
        /// DNS names for a node certificate (repeatable).
        #[arg(long = "dns")]
        dns: Vec<String>,
        /// IP addresses for a node certificate (repeatable).
        #[arg(long = "ip")]
        ips: Vec<String>,
        /// How many times the secret may be used.
        #[arg(long, default_value_t = 1)]
        max_enrollments: i64,
        /// Secret lifetime in seconds.
        #[arg(long, default_value_t = 86_400)]
        secret_ttl: i64,
    },
    /// Issue a new one-time enrollment secret for an identity (the old one stops working).
    ResetSecret {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        me: IdentityArgs,
        /// The identity.
        #[arg(long)]
        id: String,
        /// How many times the secret may be used.
        #[arg(long, default_value_t = 1)]
        max_enrollments: i64,
        /// Secret lifetime in seconds.
        #[arg(long, default_value_t = 86_400)]
        secret_ttl: i64,
    },
    /// Disable an identity (administrators): it can no longer enroll, renew or call the CA.
    Disable {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        me: IdentityArgs,
        /// The identity.
        #[arg(long)]
        id: String,
    },
    /// Enable a disabled identity again (administrators).
    Enable {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        me: IdentityArgs,
        /// The identity.
        #[arg(long)]
        id: String,
    },
    /// Portal registrations waiting for an administrator: list, approve, reject.
    #[command(subcommand)]
    Registrations(registrations::RegistrationsCmd),
    /// Make an invitation code for the portal's Register page (administrators, registrars):
    /// whoever registers with it is approved at once.
    Invite {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        me: IdentityArgs,
        /// Registrations it admits.
        #[arg(long, default_value_t = 1)]
        uses: i64,
        /// How long it stays usable: 7d, 12h, 30m or seconds.
        #[arg(long, default_value = "7d", value_parser = registrations::duration)]
        valid_for: i64,
    },
    /// Audit the issuance log (no account needed).
    #[command(subcommand)]
    Audit(AuditCmd),
    /// The CA's issuing intermediates, and rotating to a new one (administrators): next,
    /// publish, activate, then retire the old one once its last certificate has expired.
    #[command(subcommand)]
    Intermediates(IntermediateCmd),
    /// The CA's roots, and rotating to a new one (administrators): add (published beside the
    /// current one with a cross-certificate), activate, then withdraw the old one once every
    /// intermediate it certified has retired.
    #[command(subcommand)]
    Roots(RootCmd),
    /// The CA's Ed25519 signing keys, and handing one over to its successor (administrators):
    /// begin (both sign), then finish (the new one alone).
    #[command(subcommand)]
    Keys(KeysCmd),
    /// Subchains: the directory, creating and managing them, joining, signed statements.
    #[command(subcommand)]
    Subchain(subchain::SubchainCmd),
    /// Transactions on a city node's ledger: sign with your key, submit, wait for commit.
    #[command(subcommand)]
    Tx(ledger::TxCmd),
    /// Read a subchain's ledger on a city node: info, state, blocks, transactions with proofs.
    #[command(subcommand)]
    Query(ledger::QueryCmd),
    /// Run a whole network on this machine: a development CA, three orderers, three city nodes
    /// in two cities hosting a demo subchain, and a demo participant. Ctrl-C stops it.
    Devnet {
        /// Where the network keeps its data (run again to restart the same network).
        #[arg(long, default_value = "bsn-devnet", value_name = "DIR")]
        dir: PathBuf,
        /// The CA listens on this port, the nodes on the next ones.
        #[arg(long, default_value_t = 8443)]
        base_port: u16,
        /// Number of city nodes.
        #[arg(long, default_value_t = 3)]
        nodes: usize,
        /// Number of orderers in the ordering cluster (0: the city nodes order the demo subchain
        /// themselves, as one Raft group).
        #[arg(long, default_value_t = 3)]
        orderers: usize,
        /// The cities the nodes run in, in turn (comma-separated).
        #[arg(long, value_delimiter = ',', default_value = "beijing,shanghai")]
        cities: Vec<String>,
    },
    /// The node directory: every city node and orderer with its role, city and URL (public;
    /// the CA's signature is checked).
    Nodes {
        #[command(flatten)]
        ca: CaArgs,
        /// Print the directory's entries as JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// The resource plans on offer (public): tenancy, rate, storage, bandwidth, who may choose
    /// each; `bsn plans set|withdraw` for administrators.
    Plans(plans::PlansArgs),
    /// City-node operations for administrators: drain (out of service for placement, its
    /// subchains moved) and undrain.
    #[command(subcommand)]
    Node(plans::NodeCmd),
    /// Your subchains and roles.
    Memberships {
        #[command(flatten)]
        t: subchain::Target,
        /// Print the API's items as JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// Read the change feed as a city node (membership statements of hosted subchains, revocations).
    Feed {
        #[command(flatten)]
        t: subchain::Target,
        /// Start after this position (the last seq you processed).
        #[arg(long, default_value_t = 0)]
        cursor: u64,
        /// Keep following (server-sent events) instead of reading what is there.
        #[arg(long)]
        follow: bool,
    },
    /// List identities (administrators: all; registrars: those they registered).
    Identities {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        me: IdentityArgs,
        /// participant, node or orderer.
        #[arg(long = "type")]
        kind: Option<String>,
        /// Only identities with this role.
        #[arg(long)]
        role: Option<String>,
        /// Print the API's items as JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// List certificates (administrators: any; others: their own).
    Certificates {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        me: IdentityArgs,
        /// Only this identity's.
        #[arg(long)]
        identity: Option<String>,
        /// any, valid, revoked or expired.
        #[arg(long)]
        status: Option<String>,
        /// Only this serial.
        #[arg(long)]
        serial: Option<String>,
        /// Expiring before this RFC 3339 time.
        #[arg(long)]
        expires_before: Option<String>,
        /// Expiring after this RFC 3339 time.
        #[arg(long)]
        expires_after: Option<String>,
        /// Print the API's items as JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
}

#[derive(Subcommand)]
enum KeysCmd {
    /// Every key of PURPOSE (`log` or `membership`) with its state (public).
    List {
        #[command(flatten)]
        ca: CaArgs,
        /// `log` (the issuance log's checkpoint key) or `membership`.
        purpose: String,
        /// Print the API's items as one JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Begin handing PURPOSE's key over: a new key, published; a log key co-signs every
    /// checkpoint beside the old one from now on.
    Begin {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        me: IdentityArgs,
        /// `log` or `membership`.
        purpose: String,
    },
    /// Finish the handover to PURPOSE's key NUMBER: it alone signs from now on; the old one is retired.
    Finish {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        me: IdentityArgs,
        /// `log` or `membership`.
        purpose: String,
        /// The incoming key's number.
        number: u32,
    },
}

#[derive(Subcommand)]
enum IntermediateCmd {
    /// Every intermediate the CA publishes, with its state (public).
    List {
        #[command(flatten)]
        ca: CaArgs,
        /// Print the API's items as one JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Make the next intermediate (signed by the root; not public until published). Under an
    /// offline root, writes the CSR for the root's operator instead.
    Next {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        me: IdentityArgs,
        /// Where to write the CSR when the root is offline.
        #[arg(long, value_name = "FILE", default_value = "intermediate.csr")]
        csr_out: PathBuf,
    },
    /// Give the CA the certificate the offline root signed for intermediate NUMBER.
    Adopt {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        me: IdentityArgs,
        /// The intermediate's number.
        number: u32,
        /// The certificate (PEM) from `ca-server root sign-intermediate`.
        #[arg(long, value_name = "FILE")]
        cert: PathBuf,
    },
    /// Publish intermediate NUMBER: listed, its CRL published, announced to every node.
    Publish {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        me: IdentityArgs,
        /// The intermediate's number.
        number: u32,
    },
    /// Issue with intermediate NUMBER from now on; the active one keeps its CRL until retired.
    /// Refused until every node that reports to the feed has acknowledged its publication.
    Activate {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        me: IdentityArgs,
        /// The intermediate's number.
        number: u32,
        /// Activate even though some nodes have not acknowledged it (they are gone for good).
        #[arg(long)]
        force: bool,
    },
    /// Retire intermediate NUMBER once its last certificate has expired.
    Retire {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        me: IdentityArgs,
        /// The intermediate's number.
        number: u32,
    },
}

#[derive(Subcommand)]
enum RootCmd {
    /// Every root the CA has had, with its state (public).
    List {
        #[command(flatten)]
        ca: CaArgs,
        /// Print the API's items as one JSON array.
        #[arg(long)]
        json: bool,
    },
    /// Publish the next root beside the current one. With no files the CA makes it with the
    /// current root's key; under an offline root, give what `ca-server root rotate` made.
    Add {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        me: IdentityArgs,
        /// The new root's certificate (PEM: NEW/root.pem).
        #[arg(long, value_name = "FILE", requires_all = ["cross", "crl"])]
        certificate: Option<PathBuf>,
        /// Its cross-certificate signed by the current root (PEM: NEW/cross.pem).
        #[arg(long, value_name = "FILE", requires_all = ["certificate", "crl"])]
        cross: Option<PathBuf>,
        /// Its first CRL (DER or PEM: NEW/root-crl.der).
        #[arg(long, value_name = "FILE", requires_all = ["certificate", "cross"])]
        crl: Option<PathBuf>,
    },
    /// Certify the next intermediates with root NUMBER; the active one keeps being trusted.
    Activate {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        me: IdentityArgs,
        /// The root's number.
        number: u32,
    },
    /// Publish root NUMBER's next CRL, signed offline with `ca-server root crl --root-dir DIR`
    /// (a CA that holds the root's key re-signs it itself at half its lifetime).
    InstallCrl {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        me: IdentityArgs,
        /// The root's number.
        number: u32,
        /// The CRL (DER or PEM: DIR/root-crl.der).
        #[arg(long, value_name = "FILE")]
        crl: PathBuf,
    },
    /// Take root NUMBER out of the trust bundle once every intermediate it certified retired.
    Withdraw {
        #[command(flatten)]
        ca: CaArgs,
        #[command(flatten)]
        me: IdentityArgs,
        /// The root's number.
        number: u32,
    },
}

#[derive(Subcommand)]
enum AuditCmd {
    /// Download the whole log, recompute its root, check the signed checkpoint and every entry:
    /// each certificate chains to the trust bundle and matches its entry, serials are unique,
    /// and every revocation refers to a logged issuance. Exit code 6 if anything is wrong.
    Verify {
        #[command(flatten)]
        ca: CaArgs,
        /// The log's verifier key (log.vkey from the CA operator), obtained out of band.
        #[arg(long, value_name = "FILE")]
        log_vkey: PathBuf,
        /// An auditor's or administrator's certificate: also check that every certificate the
        /// CA lists has an issuance entry, and every one it lists as revoked a revocation entry.
        #[arg(long, value_name = "FILE", requires = "key")]
        cert: Option<PathBuf>,
        /// The key of --cert.
        #[arg(long, value_name = "FILE", requires = "cert")]
        key: Option<PathBuf>,
        /// Check the log's structure only: every entry hashed into the tree and decoded, the
        /// checkpoint signature, serials issued once, revocations of issued certificates,
        /// membership revisions in order; certificates are not parsed and their signatures not
        /// checked. Many times faster; a full audit should still run once over every entry.
        #[arg(long)]
        structure_only: bool,
    },
    /// Follow the log: verify each new checkpoint extends the last verified one, check and print
    /// new entries, and exit 7 when an entry names a watched identity (6 on any inconsistency).
    Follow {
        #[command(flatten)]
        ca: CaArgs,
        /// The log's verifier key, obtained out of band.
        #[arg(long, value_name = "FILE")]
        log_vkey: PathBuf,
        /// Where the last verified checkpoint and tree edge are kept (created if missing).
        #[arg(long, value_name = "FILE")]
        state: PathBuf,
        /// Identity ids to watch (repeatable).
        #[arg(long = "watch", value_name = "ID")]
        watch: Vec<String>,
        /// Check once and exit, instead of polling.
        #[arg(long)]
        once: bool,
        /// Seconds between polls.
        #[arg(long, default_value_t = 10)]
        interval: u64,
    },
}

/// An error and the exit code it maps to.
struct Failure {
    code: u8,
    message: String,
    hint: Option<&'static str>,
}

impl From<ClientError> for Failure {
    fn from(e: ClientError) -> Self {
        let (code, hint) = match &e {
            ClientError::Local(_) => (1, None),
            ClientError::Verification(_) => (
                6,
                Some("the node's answer does not verify; keep this output and report it to the node operator"),
            ),
            ClientError::CertificateRefused { .. } => (
                3,
                Some(
                    "this certificate can no longer be used there: renew it (bsn renew), or enroll again if it was revoked",
                ),
            ),
            ClientError::Transport { .. } => (
                5,
                Some(
                    "check --ca or --node (the URL and port) and --ca-bundle (the CA's trust-bundle.pem), that the server is running, and that your certificate is valid and not revoked",
                ),
            ),
            ClientError::Problem { slug, status, .. } => match slug.as_str() {
                "invalid-credentials" => (
                    3,
                    Some("check --id and --secret; secrets are case-sensitive and single-use"),
                ),
                "secret-expired" | "secret-used-up" => {
                    (3, Some("ask your registrar to register you again for a new secret"))
                }
                "certificate-revoked" | "certificate-expired" => (
                    3,
                    Some("this certificate can no longer be used; enroll again with a new secret"),
                ),
                "client-certificate-required" | "certificate-unknown" => {
                    (3, Some("pass --cert and --key with a certificate issued by this CA"))
                }
                "forbidden" => (3, Some("this needs a role or permission you do not have")),
                "invalid-cursor" => (4, Some("resume from the last seq you processed, or from 0")),
                "identity-disabled" => (
                    3,
                    Some("an administrator has disabled this identity; ask one to enable it"),
                ),
                "identity-changed" => (
                    4,
                    Some("the identity changed while the request ran; run the command again"),
                ),
                "invalid-csr" | "csr-signature-invalid" | "unsupported-key" => {
                    (4, Some("use a P-256, P-384, Ed25519 or RSA (2048+) key"))
                }
                "busy" => (5, Some("the CA is busy; try again in a moment")),
                "rotation-refused" => (
                    4,
                    Some(
                        "see where the rotation stands with `bsn intermediates list` (or `bsn keys list log`), then take the step it is at",
                    ),
                ),
                "not-a-member" => (3, Some("ask the subchain's publisher to admit you (bsn subchain join)")),
                "role-required" | "not-a-writer" => (
                    3,
                    Some("ask a subchain admin for a role that allows this (bsn subchain set-role)"),
                ),
                "not-hosted" => (
                    4,
                    Some("this node does not host that subchain; see `bsn subchain show` for its nodes"),
                ),
                "creator-refused" => (3, Some("your certificate is revoked or expired: renew or enroll again")),
                "duplicate-transaction" => (
                    4,
                    Some("that transaction was already submitted; query it with `bsn query tx`"),
                ),
                "membership-stale" | "ordering-unavailable" => {
                    (5, Some("the node cannot write right now; try again shortly"))
                }
                "rate-quota" => (
                    5,
                    Some(
                        "the subchain is over its plan's transaction rate: retry after the pause the node gave, or ask its publisher for a larger plan (`bsn plans`)",
                    ),
                ),
                "unknown-plan" => (4, Some("`bsn plans` lists the plans on offer")),
                "plan-not-open" => (
                    3,
                    Some("an administrator assigns that plan: ask one, or choose an open plan (`bsn plans`)"),
                ),
                "no-placement" => (
                    4,
                    Some(
                        "choose another plan or city, or ask a city-node operator for capacity there (`bsn nodes` shows what each offers)",
                    ),
                ),
                _ if *status >= 500 => (5, None),
                _ => (4, None),
            },
        };
        Failure {
            code,
            message: e.to_string(),
            hint,
        }
    }
}

fn local(message: impl std::fmt::Display) -> Failure {
    Failure {
        code: 1,
        message: message.to_string(),
        hint: None,
    }
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("tokio runtime");
    match rt.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {}", f.message);
            if let Some(h) = f.hint {
                eprintln!("hint: {h}");
            }
            ExitCode::from(f.code)
        }
    }
}

fn api(ca: &CaArgs, me: Option<&IdentityArgs>) -> Result<Api, Failure> {
    Ok(Api::from_files(
        &ca.ca,
        &ca.ca_bundle,
        me.map(|m| (m.cert.as_path(), m.key.as_path())),
    )?)
}

fn print_issued(v: &Issued, dir: &Path) {
    println!("certificate issued for {}", v.spiffe_id);
    println!("serial: {}", v.serial);
    println!("valid until: {}", v.not_after);
    println!(
        "wrote {}, {} and {}",
        dir.join("key.pem").display(),
        dir.join("cert.pem").display(),
        dir.join("chain.pem").display()
    );
}

async fn run(cmd: Command) -> Result<(), Failure> {
    match cmd {
        Command::Enroll {
            ca,
            id,
            secret,
            out,
            key_type,
            force,
        } => enroll(&ca, id, secret, &out, key_type, force).await?,
        Command::Renew {
            ca,
            me,
            rekey,
            key_type,
            out,
            revoke_previous,
            key_compromised,
        } => {
            let previous = revoke_previous.then_some(if key_compromised { "keyCompromise" } else { "superseded" });
            renew(&ca, &me, rekey, key_type, out, previous).await?
        }
        Command::Revoke { ca, me, serial, reason } => revoke(&ca, &me, &serial, Some(reason)).await?,
        Command::Register {
            ca,
            me,
            id,
            kind,
            roles,
            attrs,
            dns,
            ips,
            max_enrollments,
            secret_ttl,
        } => {
            let mut attributes = serde_json::Map::new();
            for a in attrs {
                let (k, v) = a
                    .split_once('=')
                    .ok_or_else(|| local(format!("--attr {a}: expected NAME=VALUE")))?;
                attributes.insert(k.to_string(), Value::String(v.to_string()));
            }
            let body = RegisterRequest {
                id,
                kind,
                roles,
                attributes,
                dns_names: dns,
                ip_addresses: ips,
                max_enrollments,
                secret_ttl_seconds: secret_ttl,
            };
            register(&ca, &me, &body).await?
        }
        Command::ResetSecret {
            ca,
            me,
            id,
            max_enrollments,
            secret_ttl,
        } => {
            let body = SecretRequest {
                max_enrollments,
                secret_ttl_seconds: secret_ttl,
            };
            let v: NewSecret = api(&ca, Some(&me))?
                .post_as(&format!("/api/v1/identities/{id}/secret"), &body)
                .await?;
            print_secret(&v.secret, &v.secret_expires_at, max_enrollments);
        }
        Command::Intermediates(cmd) => intermediates(cmd).await?,
        Command::Roots(cmd) => roots(cmd).await?,
        Command::Keys(cmd) => keys(cmd).await?,
        Command::Disable { ca, me, id } => set_status(&ca, &me, &id, "disable").await?,
        Command::Enable { ca, me, id } => set_status(&ca, &me, &id, "enable").await?,
        Command::Audit(AuditCmd::Verify {
            ca,
            log_vkey,
            cert,
            key,
            structure_only,
        }) => {
            let me = cert.zip(key).map(|(cert, key)| IdentityArgs { cert, key });
            let depth = if structure_only {
                bsn::audit::Depth::Structure
            } else {
                bsn::audit::Depth::Full
            };
            audit_verify(&ca, &log_vkey, me.as_ref(), depth).await?
        }
        Command::Audit(AuditCmd::Follow {
            ca,
            log_vkey,
            state,
            watch,
            once,
            interval,
        }) => audit_follow(&ca, &log_vkey, &state, &watch, once, interval).await?,
        Command::Subchain(cmd) => subchain::run(cmd).await?,
        Command::Registrations(cmd) => registrations::run(cmd).await?,
        Command::Invite {
            ca,
            me,
            uses,
            valid_for,
        } => registrations::invite(&ca, &me, uses, valid_for).await?,
        Command::Memberships { t, json } => subchain::memberships(t, json).await?,
        Command::Nodes { ca, json } => subchain::nodes(&ca, json).await?,
        Command::Plans(a) => plans::plans(a).await?,
        Command::Node(cmd) => plans::node(cmd).await?,
        Command::Tx(cmd) => ledger::tx(cmd).await?,
        Command::Devnet {
            dir,
            base_port,
            nodes,
            orderers,
            cities,
        } => devnet::run(dir, base_port, nodes, orderers, cities).await?,
        Command::Query(cmd) => ledger::query(cmd).await?,
        Command::Feed { t, cursor, follow } => subchain::feed(t, cursor, follow).await?,
        Command::Identities {
            ca,
            me,
            kind,
            role,
            json,
        } => {
            let q: Vec<(&str, String)> = [("type", kind), ("role", role)]
                .into_iter()
                .filter_map(|(k, v)| v.map(|v| (k, v)))
                .collect();
            let items: Vec<Identity> = fetch_all(&api(&ca, Some(&me))?, "/api/v1/identities", q).await?;
            output::print(
                &items,
                json,
                |items| {
                    let mut t = output::Table::new(&["ID", "TYPE", "STATUS", "ROLES", "REGISTERED BY"]);
                    for i in items {
                        t.row(vec![
                            i.id.clone(),
                            i.kind.clone(),
                            i.status.clone(),
                            output::joined(&i.roles),
                            i.registered_by.clone(),
                        ]);
                    }
                    t
                },
                "no identities match",
            )?;
        }
        Command::Certificates {
            ca,
            me,
            identity,
            status,
            serial,
            expires_before,
            expires_after,
            json,
        } => {
            let q: Vec<(&str, String)> = [
                ("identity", identity),
                ("status", status),
                ("serial", serial),
                ("expires_before", expires_before),
                ("expires_after", expires_after),
            ]
            .into_iter()
            .filter_map(|(k, v)| v.map(|v| (k, v)))
            .collect();
            let items: Vec<Certificate> = fetch_all(&api(&ca, Some(&me))?, "/api/v1/certificates", q).await?;
            output::print(
                &items,
                json,
                |items| {
                    let mut t = output::Table::new(&["SERIAL", "IDENTITY", "STATUS", "ISSUED", "EXPIRES", "REASON"]);
                    for c in items {
                        t.row(vec![
                            c.serial.clone(),
                            c.identity.clone(),
                            c.status.clone(),
                            output::time(&c.issued_at),
                            output::time(&c.not_after),
                            c.revocation_reason.clone().unwrap_or_else(|| "-".into()),
                        ]);
                    }
                    t
                },
                "no certificates match",
            )?;
        }
    }
    Ok(())
}

/// `bsn enroll`: a new key and its first certificate, with a one-time secret.
async fn enroll(
    ca: &CaArgs,
    id: String,
    secret: String,
    out: &Path,
    key_type: KeyArg,
    force: bool,
) -> Result<(), Failure> {
    if out.join("key.pem").exists() && !force {
        return Err(local(format!(
            "{} exists; pass --force to replace it, or choose another --out",
            out.join("key.pem").display()
        )));
    }
    let key = generate_key(key_type.into()).map_err(local)?;
    let csr = csr_pem(&key).map_err(local)?;
    let v: Issued = api(ca, None)?
        .post_as("/api/v1/enroll", &EnrollRequest { id, secret, csr })
        .await?;
    write_credentials(out, Some(&key.serialize_pem()), &v.certificate, &v.chain)
        .map_err(|e| local(format!("writing {}: {e}", out.display())))?;
    print_issued(&v, out);
    Ok(())
}

/// `bsn renew`: a new certificate over mTLS with the current one, with the same or a new key.
async fn renew(
    ca: &CaArgs,
    me: &IdentityArgs,
    rekey: bool,
    key_type: KeyArg,
    out: Option<PathBuf>,
    revoke_previous: Option<&str>,
) -> Result<(), Failure> {
    let previous = read_leaf(&me.cert)?;
    let key = if rekey {
        generate_key(key_type.into()).map_err(local)?
    } else {
        let pem = std::fs::read_to_string(&me.key).map_err(|e| local(format!("reading {}: {e}", me.key.display())))?;
        load_key(&pem).map_err(|e| local(format!("{}: {e}", me.key.display())))?
    };
    let csr = csr_pem(&key).map_err(local)?;
    let v: Issued = api(ca, Some(me))?
        .post_as("/api/v1/renew", &RenewRequest { csr })
        .await?;
    let dir = out.unwrap_or_else(|| {
        me.cert
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_else(|| PathBuf::from("."))
    });
    write_credentials(&dir, Some(&key.serialize_pem()), &v.certificate, &v.chain)
        .map_err(|e| local(format!("writing {}: {e}", dir.display())))?;
    print_issued(&v, &dir);
    let old = &previous.serial_hex;
    match revoke_previous {
        Some(reason) => {
            // As the holder, with the certificate just issued.
            let now = IdentityArgs {
                cert: dir.join("cert.pem"),
                key: dir.join("key.pem"),
            };
            let path = format!("/api/v1/certificates/{old}/revoke");
            match api(ca, Some(&now))?
                .post_as::<_, Revoked>(
                    &path,
                    &RevokeRequest {
                        reason: Some(reason.to_string()),
                    },
                )
                .await
            {
                Ok(r) => println!(
                    "revoked the previous certificate {} ({}); CRL number {}",
                    r.serial, r.reason, r.crl_number
                ),
                Err(e) => {
                    let mut f = Failure::from(e);
                    f.message = format!(
                        "renewed, but revoking the previous certificate {old} failed: {}; revoke it with `bsn revoke --serial {old} --reason {reason}`",
                        f.message
                    );
                    return Err(f);
                }
            }
        }
        None => println!(
            "the previous certificate {old} stays valid until {}{}",
            subchain::when(previous.not_after),
            if rekey {
                format!(
                    "; if its key may have leaked, revoke it: bsn revoke --serial {old} --reason keyCompromise (or renew with --revoke-previous)"
                )
            } else {
                String::new()
            }
        ),
    }
    Ok(())
}

/// The BSN profile's reading of the first certificate in `path`.
fn read_leaf(path: &Path) -> Result<identity::profile::Leaf, Failure> {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_file(path)
        .map_err(|e| local(format!("reading {}: {e}", path.display())))?;
    identity::profile::check_leaf(&der).map_err(|e| local(format!("{}: {e}", path.display())))
}

/// `bsn revoke`: the holder or an administrator revokes a certificate.
async fn revoke(ca: &CaArgs, me: &IdentityArgs, serial: &str, reason: Option<String>) -> Result<(), Failure> {
    let path = format!("/api/v1/certificates/{}/revoke", serial.trim());
    let v: Revoked = api(ca, Some(me))?.post_as(&path, &RevokeRequest { reason }).await?;
    println!("revoked {} ({}) at {}", v.serial, v.reason, v.revoked_at);
    println!("CRL number {}", v.crl_number);
    Ok(())
}

/// `bsn register`: registers an identity and prints its one-time secret.
async fn register(ca: &CaArgs, me: &IdentityArgs, body: &RegisterRequest) -> Result<(), Failure> {
    let v: Registered = api(ca, Some(me))?.post_as("/api/v1/identities", body).await?;
    println!("registered {}", v.spiffe_id);
    print_secret(&v.secret, &v.secret_expires_at, body.max_enrollments);
    Ok(())
}

fn print_secret(secret: &str, expires_at: &str, uses: i64) {
    println!("enrollment secret: {secret}");
    println!("(expires {expires_at}, {uses} use(s); it is shown only now)");
}

/// `bsn intermediates`: the listing, or one rotation step.
async fn intermediates(cmd: IntermediateCmd) -> Result<(), Failure> {
    use bsn_api::ca::{Intermediate, Items};
    let show = |i: &Intermediate| {
        println!("intermediate {} is {}", i.number, i.state);
        match i.state.as_str() {
            "requested" => println!(
                "next: sign the CSR on the root's machine with `ca-server root sign-intermediate --root-dir DIR --csr FILE --out intermediate-{n}.pem`, then `bsn intermediates adopt {n} --cert intermediate-{n}.pem`",
                n = i.number
            ),
            "next" => println!(
                "next: `bsn intermediates publish {}` puts it in the bundle and on the feed",
                i.number
            ),
            "published" => println!(
                "next: give nodes and relying parties time to fetch it, then `bsn intermediates activate {}`",
                i.number
            ),
            "active" => println!("certificates are issued by it from now on"),
            _ => {}
        }
    };
    let (path, ca, me) = match cmd {
        IntermediateCmd::List { ca, json } => {
            let list: Items<Intermediate> = api(&ca, None)?.get_as("/api/v1/intermediates", &[]).await?;
            return output::print(
                &list.items,
                json,
                |items| {
                    ca_certificates(items.iter().map(|i| {
                        (
                            i.number,
                            i.state.as_str(),
                            i.not_after,
                            i.sha256.as_str(),
                            i.crl_url.as_deref(),
                        )
                    }))
                },
                "no intermediates",
            );
        }
        IntermediateCmd::Next { ca, me, csr_out } => {
            let i: Intermediate = api(&ca, Some(&me))?
                .post_as("/api/v1/intermediates", &json!({}))
                .await?;
            if let Some(csr) = &i.csr {
                bsn_api::files::write_file(&csr_out, csr.as_bytes(), 0o644)
                    .map_err(|e| local(format!("writing {}: {e}", csr_out.display())))?;
                println!("the root is offline: its CSR is in {}", csr_out.display());
            }
            show(&i);
            return Ok(());
        }
        IntermediateCmd::Adopt { ca, me, number, cert } => {
            let certificate =
                std::fs::read_to_string(&cert).map_err(|e| local(format!("reading {}: {e}", cert.display())))?;
            let i: Intermediate = api(&ca, Some(&me))?
                .post_as(
                    &format!("/api/v1/intermediates/{number}/certificate"),
                    &bsn_api::ca::AdoptIntermediate { certificate },
                )
                .await?;
            show(&i);
            return Ok(());
        }
        IntermediateCmd::Publish { ca, me, number } => (format!("/api/v1/intermediates/{number}/publish"), ca, me),
        IntermediateCmd::Activate { ca, me, number, force } => {
            let i: Intermediate = api(&ca, Some(&me))?
                .post_as(
                    &format!("/api/v1/intermediates/{number}/activate"),
                    &bsn_api::ca::ActivateIntermediate { force },
                )
                .await?;
            show(&i);
            return Ok(());
        }
        IntermediateCmd::Retire { ca, me, number } => (format!("/api/v1/intermediates/{number}/retire"), ca, me),
    };
    let i: Intermediate = api(&ca, Some(&me))?.post_as(&path, &json!({})).await?;
    show(&i);
    Ok(())
}

/// The table of the CA's own certificates (intermediates, roots): number, state, end, the
/// start of the SHA-256 and where the CRL is.
fn ca_certificates<'a>(rows: impl Iterator<Item = (i64, &'a str, i64, &'a str, Option<&'a str>)>) -> output::Table {
    let mut t = output::Table::new(&["NUMBER", "STATE", "EXPIRES", "SHA-256", "CRL"]);
    for (number, state, not_after, sha256, crl_url) in rows {
        let expires = time::OffsetDateTime::from_unix_timestamp(not_after)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_default();
        t.row(vec![
            number.to_string(),
            state.to_string(),
            output::time(&expires),
            sha256.get(..16).unwrap_or(sha256).to_string(),
            crl_url.unwrap_or("-").to_string(),
        ]);
    }
    t
}

/// `bsn roots`: the listing, or one rotation step.
async fn roots(cmd: RootCmd) -> Result<(), Failure> {
    use bsn_api::ca::{Items, Root};
    let show = |r: &Root| {
        println!("root {} is {}", r.number, r.state);
        match r.state.as_str() {
            "published" => println!(
                "next: give nodes and relying parties time to fetch it, then `bsn roots activate {}`",
                r.number
            ),
            "active" => println!(
                "the next intermediate (`bsn intermediates next`) is certified by it; then retire the old root's \
                 intermediates and `bsn roots withdraw` the old root"
            ),
            _ => {}
        }
    };
    let read = |f: &Path| std::fs::read(f).map_err(|e| local(format!("reading {}: {e}", f.display())));
    let (path, ca, me) = match cmd {
        RootCmd::List { ca, json } => {
            let list: Items<Root> = api(&ca, None)?.get_as("/api/v1/roots", &[]).await?;
            return output::print(
                &list.items,
                json,
                |items| {
                    ca_certificates(items.iter().map(|r| {
                        (
                            r.number,
                            r.state.as_str(),
                            r.not_after,
                            r.sha256.as_str(),
                            r.crl_url.as_deref(),
                        )
                    }))
                },
                "no roots",
            );
        }
        RootCmd::Add {
            ca,
            me,
            certificate,
            cross,
            crl,
        } => {
            let body = match (certificate, cross, crl) {
                (Some(certificate), Some(cross), Some(crl)) => bsn_api::ca::AddRoot {
                    certificate: Some(String::from_utf8_lossy(&read(&certificate)?).into_owned()),
                    cross: Some(String::from_utf8_lossy(&read(&cross)?).into_owned()),
                    crl: Some(crl_pem(&read(&crl)?)),
                },
                _ => bsn_api::ca::AddRoot::default(),
            };
            let r: Root = api(&ca, Some(&me))?.post_as("/api/v1/roots", &body).await?;
            show(&r);
            return Ok(());
        }
        RootCmd::InstallCrl { ca, me, number, crl } => {
            let body = bsn_api::ca::InstallRootCrl {
                crl: crl_pem(&read(&crl)?),
            };
            let r: Root = api(&ca, Some(&me))?
                .post_as(&format!("/api/v1/roots/{number}/crl"), &body)
                .await?;
            println!(
                "root {}'s CRL installed; it is at {}",
                r.number,
                r.crl_url.unwrap_or_default()
            );
            return Ok(());
        }
        RootCmd::Activate { ca, me, number } => (format!("/api/v1/roots/{number}/activate"), ca, me),
        RootCmd::Withdraw { ca, me, number } => (format!("/api/v1/roots/{number}/withdraw"), ca, me),
    };
    let r: Root = api(&ca, Some(&me))?.post_as(&path, &json!({})).await?;
    show(&r);
    Ok(())
}

/// A CRL file's contents as PEM (a DER file is armoured).
fn crl_pem(bytes: &[u8]) -> String {
    if bytes.starts_with(b"-----") {
        String::from_utf8_lossy(bytes).into_owned()
    } else {
        pem_block("X509 CRL", bytes)
    }
}

/// PEM armour around DER.
fn pem_block(label: &str, der: &[u8]) -> String {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in b64.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out + &format!("-----END {label}-----\n")
}

/// `bsn keys`: the listing, or one handover step.
async fn keys(cmd: KeysCmd) -> Result<(), Failure> {
    use bsn_api::ca::{Items, SigningKey};
    let show = |k: &SigningKey| {
        println!("{} key {} is {}", k.purpose, k.number, k.state);
        if let Some(vkey) = &k.vkey {
            println!("verifier key: {vkey}");
        }
        match k.state.as_str() {
            "incoming" => println!(
                "next: give auditors time to see it (`bsn audit follow` records it), then `bsn keys finish {} {}`",
                k.purpose, k.number
            ),
            "active" if k.purpose == "log" => println!(
                "checkpoints are signed by it alone from now on; auditors that pinned the old key follow the handover once and pin this one"
            ),
            "active" => println!(
                "statements, the node directory and heartbeats are signed by it from now on; nodes and SDKs that pinned the old key follow the handover (signed by both keys) from the feed or `GET /api/v1/keys/membership`"
            ),
            _ => {}
        }
    };
    match cmd {
        KeysCmd::List { ca, purpose, json } => {
            let list: Items<SigningKey> = api(&ca, None)?.get_as(&format!("/api/v1/keys/{purpose}"), &[]).await?;
            output::print(
                &list.items,
                json,
                |items| {
                    let mut t = output::Table::new(&["NUMBER", "STATE", "PUBLIC KEY", "VERIFIER KEY"]);
                    for k in items {
                        t.row(vec![
                            k.number.to_string(),
                            k.state.clone(),
                            k.public_key.clone(),
                            k.vkey.clone().unwrap_or_else(|| "-".into()),
                        ]);
                    }
                    t
                },
                "no keys",
            )
        }
        KeysCmd::Begin { ca, me, purpose } => {
            let k: SigningKey = api(&ca, Some(&me))?
                .post_as(&format!("/api/v1/keys/{purpose}"), &json!({}))
                .await?;
            show(&k);
            Ok(())
        }
        KeysCmd::Finish {
            ca,
            me,
            purpose,
            number,
        } => {
            let k: SigningKey = api(&ca, Some(&me))?
                .post_as(&format!("/api/v1/keys/{purpose}/{number}/finish"), &json!({}))
                .await?;
            show(&k);
            Ok(())
        }
    }
}

async fn set_status(ca: &CaArgs, me: &IdentityArgs, id: &str, action: &str) -> Result<(), Failure> {
    let v: Identity = api(ca, Some(me))?
        .post_as(&format!("/api/v1/identities/{id}/{action}"), &json!({}))
        .await?;
    println!("{} is now {}", v.id, v.status);
    Ok(())
}

async fn audit_verify(
    ca: &CaArgs,
    vkey_file: &Path,
    me: Option<&IdentityArgs>,
    depth: bsn::audit::Depth,
) -> Result<(), Failure> {
    let vkey = read_vkey(vkey_file)?;
    let bundle_pem =
        std::fs::read(&ca.ca_bundle).map_err(|e| local(format!("reading {}: {e}", ca.ca_bundle.display())))?;
    let bundle = identity::verify::TrustBundle::from_pem(&bundle_pem).map_err(local)?;
    let api = api(ca, None)?;
    let bundle = bsn::audit::follow_roots(&api, &bundle).await.map_err(audit_failure)?;
    let chain = bsn::audit::fetch_intermediates(&api).await.map_err(audit_failure)?;
    let bar = indicatif::ProgressBar::new(0);
    bar.set_style(
        indicatif::ProgressStyle::with_template("{msg} {bar:40} {pos}/{len} entries ({per_sec}, {eta} left)")
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar()),
    );
    // The listing is read before the checkpoint, so the checkpoint covers all it lists.
    let listing = match me.map(|me| self::api(ca, Some(me))).transpose()? {
        Some(as_me) => {
            let spinner = indicatif::ProgressBar::new_spinner();
            let listing = bsn::audit::fetch_listing(&as_me, &mut |n| {
                spinner.set_message(format!("reading the CA's certificate listing: {n}"));
                spinner.tick();
            })
            .await;
            spinner.finish_and_clear();
            Some(listing.map_err(audit_failure)?)
        }
        None => None,
    };
    bar.set_message("verifying");
    let started = std::time::Instant::now();
    let result = bsn::audit::verify(&api, &vkey, &bundle, &chain, depth, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .await;
    bar.finish_and_clear();
    let result = result.and_then(|r| {
        let checked = listing
            .as_deref()
            .map(|l| bsn::audit::check_listing(l, &r))
            .transpose()?;
        Ok((r, checked))
    });
    match result {
        Ok((r, listed)) => {
            let secs = started.elapsed().as_secs_f64();
            println!(
                "log verified: {} entries ({} issuances, {} revocations, {} membership revisions, {} intermediate steps, {} root steps, {} key handover steps)",
                r.size, r.issuances, r.revocations, r.memberships, r.intermediate_steps, r.root_steps, r.key_steps
            );
            println!("root {} matches the signed checkpoint", r.root);
            if let Some(new) = r.handed_over_to.last() {
                println!(
                    "the log's checkpoint key was handed over from the key in {}: the handover verified with it, and the checkpoint is signed by {new}",
                    vkey_file.display()
                );
                println!("pin the new key: save that line as your log.vkey");
            }
            if depth == bsn::audit::Depth::Structure {
                println!("structure only: certificates were not parsed and their signatures not checked");
            }
            if let Some(n) = listed {
                println!("listing checked: all {n} certificates the CA lists are in the log");
            }
            println!("{:.2} s, {:.0} entries/s", secs, r.size as f64 / secs.max(1e-9));
            Ok(())
        }
        Err(e) => Err(audit_failure(e)),
    }
}

/// Reads the log's verifier key from `path` and checks its form, so that a wrong file is a
/// local mistake (exit 2), never a log that "does not verify" (exit 6).
fn read_vkey(path: &Path) -> Result<String, Failure> {
    let vkey = std::fs::read_to_string(path).map_err(|e| local(format!("reading {}: {e}", path.display())))?;
    bsn::audit::check_vkey(&vkey).map_err(|e| Failure {
        code: 2,
        message: format!("{} is not the log's verifier key: {e}", path.display()),
        hint: Some(
            "use the log.vkey the CA operator published (`curl <CA>/log/vkey`, or log.vkey in the CA's data directory)",
        ),
    })?;
    Ok(vkey)
}

fn audit_failure(e: bsn::audit::AuditError) -> Failure {
    match e {
        bsn::audit::AuditError::Client(e) => e.into(),
        e => Failure {
            code: 6,
            message: e.to_string(),
            hint: Some("the log does not verify: keep this output as evidence and alert the CA operator"),
        },
    }
}

async fn audit_follow(
    ca: &CaArgs,
    vkey_file: &Path,
    state_file: &Path,
    watch: &[String],
    once: bool,
    interval: u64,
) -> Result<(), Failure> {
    let vkey = read_vkey(vkey_file)?;
    let bundle_pem =
        std::fs::read(&ca.ca_bundle).map_err(|e| local(format!("reading {}: {e}", ca.ca_bundle.display())))?;
    let bundle = identity::verify::TrustBundle::from_pem(&bundle_pem).map_err(local)?;
    let mut state: bsn::audit::FollowState = match std::fs::read(state_file) {
        Ok(b) => serde_json::from_slice(&b).map_err(|e| local(format!("{}: {e}", state_file.display())))?,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Default::default(),
        Err(e) => return Err(local(format!("reading {}: {e}", state_file.display()))),
    };
    let api = api(ca, None)?;
    let bundle = bsn::audit::follow_roots(&api, &bundle).await.map_err(audit_failure)?;
    let chain = bsn::audit::fetch_intermediates(&api).await.map_err(audit_failure)?;
    loop {
        let mut alerts = Vec::new();
        let pinned_before = state.vkey.clone();
        let result = bsn::audit::follow_once(&api, &vkey, &bundle, &chain, &mut state, &mut |index, leaf| {
            let (kind, identity, serial) = match leaf {
                identity::logleaf::LogLeaf::Issuance { identity, serial, .. } => ("issued", identity, serial.clone()),
                identity::logleaf::LogLeaf::Revocation { identity, serial, .. } => {
                    ("revoked", identity, serial.clone())
                }
                identity::logleaf::LogLeaf::Membership {
                    subchain,
                    revision,
                    authorized_by,
                    ..
                } => {
                    println!("{index}	membership	{subchain}	revision {revision} by {authorized_by}");
                    return;
                }
                identity::logleaf::LogLeaf::Intermediate {
                    step,
                    number,
                    authorized_by,
                    ..
                } => {
                    println!("{index}\tintermediate\t{number} {} by {authorized_by}", step.name());
                    return;
                }
                identity::logleaf::LogLeaf::Root {
                    step,
                    number,
                    authorized_by,
                    ..
                } => {
                    println!("{index}\troot\t{number} {} by {authorized_by}", step.name());
                    return;
                }
                identity::logleaf::LogLeaf::Key {
                    purpose,
                    step,
                    number,
                    authorized_by,
                    ..
                } => {
                    println!(
                        "{index}\tkey\t{} key {number} handover {} by {authorized_by}",
                        purpose.name(),
                        step.name()
                    );
                    return;
                }
            };
            println!("{index}\t{kind}\t{identity}\t{serial}");
            if watch.iter().any(|w| identity.rsplit('/').next() == Some(w.as_str())) {
                alerts.push(format!(
                    "ALERT: entry {index}: {kind} {serial} for watched identity {identity}"
                ));
            }
        })
        .await;
        match result {
            Ok(_) => {
                if state.vkey != pinned_before
                    && let Some(new) = &state.vkey
                {
                    eprintln!(
                        "the log's checkpoint key was handed over (its begun entry and a checkpoint both keys signed verified); pinned from now on: {new}"
                    );
                }
                let json = serde_json::to_vec_pretty(&state).map_err(local)?;
                bsn_api::files::write_file(state_file, &json, 0o644)
                    .map_err(|e| local(format!("writing {}: {e}", state_file.display())))?;
            }
            Err(bsn::audit::AuditError::Client(e)) => return Err(e.into()),
            Err(e) => {
                return Err(Failure {
                    code: 6,
                    message: e.to_string(),
                    hint: Some("the log is inconsistent: keep the state file and this output as evidence"),
                });
            }
        }
        eprintln!("verified up to {} entries", state.size);
        if !alerts.is_empty() {
            for a in &alerts {
                eprintln!("{a}");
            }
            return Err(Failure {
                code: 7,
                message: format!("{} entries for watched identities", alerts.len()),
                hint: None,
            });
        }
        if once {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_secs(interval.max(1))).await;
    }
}

/// Every page of a listing.
async fn fetch_all<T: serde::de::DeserializeOwned>(
    api: &Api,
    path: &str,
    mut q: Vec<(&str, String)>,
) -> Result<Vec<T>, Failure> {
    let mut all = Vec::new();
    loop {
        let page: Page<T> = api.get_as(path, &q).await?;
        all.extend(page.items);
        match page.next_after {
            Some(next) => {
                q.retain(|(k, _)| *k != "after");
                q.push(("after", next));
            }
            None => return Ok(all),
        }
    }
}
