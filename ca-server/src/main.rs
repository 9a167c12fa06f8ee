//! The `ca-server` binary.

use std::path::PathBuf;
use std::process::ExitCode;

use ca_server::config::{Config, PassphraseArgs, PinArgs};
use ca_server::init::{InitOptions, init};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "ca-server", version, about = "The BSN CA and identity service")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create a new CA: root, issuing intermediate, server certificate, database, bootstrap admin.
    Init {
        /// Where the CA keeps its files.
        #[arg(long, env = "BSN_CA_DATA_DIR", value_name = "DIR")]
        data_dir: PathBuf,
        /// The SPIFFE trust domain, such as example.org.
        #[arg(long, value_name = "NAME")]
        trust_domain: String,
        /// Extra DNS names for the server certificate (localhost and 127.0.0.1 are always in).
        #[arg(long = "dns", value_name = "NAME")]
        dns: Vec<String>,
        /// Database URL (default: SQLite file in the data directory); recorded in ca.toml.
        #[arg(long, env = "BSN_CA_DATABASE_URL", value_name = "URL")]
        database_url: Option<String>,
        /// Listen address to record in ca.toml.
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// The issuance log's origin and key name (default `<trust domain>/log`): the log's public
        /// URL prefix without the scheme.
        #[arg(long, value_name = "ORIGIN")]
        log_origin: Option<String>,
        /// The CA's public base URL, such as https://ca.example.org (default: https:// and the
        /// listen address); certificates name their CRL under it. Recorded in ca.toml.
        #[arg(long, value_name = "URL")]
        public_url: Option<String>,
        /// Generate the issuing key in a PKCS#11 token, with this vendor module (such as
        /// /usr/lib/softhsm/libsofthsm2.so); the key never leaves the token.
        #[arg(long, value_name = "PATH", requires = "pkcs11_token")]
        pkcs11_module: Option<PathBuf>,
        /// The token's label.
        #[arg(long, value_name = "LABEL", requires = "pkcs11_module")]
        pkcs11_token: Option<String>,
        #[command(flatten)]
        offline: Box<OfflineArgs>,
        #[command(flatten)]
        pin: PinArgs,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// The root CA's own operations.
    Root {
        #[command(subcommand)]
        command: RootCommand,
    },
    /// Copy the CA (its files and, for SQLite, a consistent snapshot of its database) into one
    /// archive while it serves.
    Backup {
        /// The CA's data directory.
        #[arg(long, env = "BSN_CA_DATA_DIR", value_name = "DIR")]
        data_dir: PathBuf,
        /// The archive to write (must not exist; mode 0600: it holds the sealed keys).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Database URL, if not the one in ca.toml.
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
    },
    /// Bring a CA back from a backup into a new, empty data directory.
    Restore {
        /// The archive `ca-server backup` wrote.
        #[arg(long = "from", value_name = "FILE")]
        from: PathBuf,
        /// The new data directory (must not exist or be empty).
        #[arg(long, value_name = "DIR")]
        data_dir: PathBuf,
        /// A checkpoint of this CA's log that was published (a file with the signed note, such
        /// as a saved `GET /log/checkpoint`): an archive whose log is behind it is refused.
        #[arg(long, value_name = "FILE")]
        published_checkpoint: Option<PathBuf>,
    },
    /// Serve the CA over HTTPS.
    Serve {
        /// The CA's data directory.
        #[arg(long, env = "BSN_CA_DATA_DIR", value_name = "DIR")]
        data_dir: PathBuf,
        /// Listen address (IP:PORT; port 0 picks a free one).
        #[arg(long, value_name = "ADDR")]
        listen: Option<String>,
        /// Database URL (sqlite://... or postgres://...).
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
        #[command(flatten)]
        pin: PinArgs,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Operator recovery: issue a new one-time secret for the bootstrap administrator `admin`
    /// (for instance when the one printed by init expired unused). Needs access to the database.
    AdminSecret {
        /// The CA's data directory.
        #[arg(long, env = "BSN_CA_DATA_DIR", value_name = "DIR")]
        data_dir: PathBuf,
        /// Database URL, if not the one in ca.toml.
        #[arg(long, value_name = "URL")]
        database_url: Option<String>,
    },
    /// Development: initialise ./bsn-data with the insecure development passphrase if needed, then serve.
    Dev {
        /// Data directory.
        #[arg(long, default_value = "bsn-data", value_name = "DIR")]
        data_dir: PathBuf,
        /// Listen address.
        #[arg(long, default_value = "127.0.0.1:8443", value_name = "ADDR")]
        listen: String,
        /// Trust domain for a new CA.
        #[arg(long, default_value = "bsn.local", value_name = "NAME")]
        trust_domain: String,
    },
}

/// `init` with an offline root.
#[derive(clap::Args)]
struct OfflineArgs {
    /// The root is kept offline: make the issuing key and write its CSR
    /// (DIR/intermediate.csr.pem) for `ca-server root sign-intermediate`, then stop; run
    /// init again with --root-cert, --intermediate-cert and --root-crl to finish.
    #[arg(long, conflicts_with_all = ["root_cert", "intermediate_cert", "root_crl"])]
    offline_root: bool,
    /// Finish an offline-root init: the root certificate (PEM) ...
    #[arg(long, value_name = "FILE", requires_all = ["intermediate_cert", "root_crl"])]
    root_cert: Option<PathBuf>,
    /// ... the intermediate it signed for the CSR `--offline-root` wrote (PEM) ...
    #[arg(long, value_name = "FILE", requires_all = ["root_cert", "root_crl"])]
    intermediate_cert: Option<PathBuf>,
    /// ... and the root's CRL (DER or PEM). This CA then keeps no root key.
    #[arg(long, value_name = "FILE", requires_all = ["root_cert", "intermediate_cert"])]
    root_crl: Option<PathBuf>,
}

#[derive(Subcommand)]
enum RootCommand {
    /// Offline root: make a root (key sealed with the passphrase, certificate, first CRL) in
    /// a directory of its own, on a machine that needs no server and no network.
    Init {
        /// The offline root's directory (must not hold a root).
        #[arg(long, value_name = "DIR")]
        root_dir: PathBuf,
        /// The SPIFFE trust domain, such as example.org.
        #[arg(long, value_name = "NAME")]
        trust_domain: String,
        /// The online CA's public base URL: intermediates name the root's CRL under it.
        #[arg(long, value_name = "URL")]
        public_url: Option<String>,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Offline root: sign an issuing intermediate for a CSR that `ca-server init
    /// --offline-root` wrote (only its public key is taken).
    SignIntermediate {
        /// The offline root's directory.
        #[arg(long, value_name = "DIR")]
        root_dir: PathBuf,
        /// The CSR (PEM).
        #[arg(long, value_name = "FILE")]
        csr: PathBuf,
        /// Where to write the intermediate (PEM; must not exist).
        #[arg(long, value_name = "FILE")]
        out: PathBuf,
        /// Its lifetime, such as 1825d (default from root.toml; never past the root's end).
        #[arg(long, value_name = "DURATION")]
        validity: Option<String>,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Offline root: make the next root in a new directory (its key sealed with the same
    /// passphrase, its certificate, its first CRL) and its cross-certificate signed by this
    /// root; the CA publishes both with `bsn roots add`.
    Rotate {
        /// The current root's directory.
        #[arg(long, value_name = "DIR")]
        root_dir: PathBuf,
        /// The directory for the next root (must not hold a root).
        #[arg(long, value_name = "DIR")]
        new_root_dir: PathBuf,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Sign a new root CRL now: with --root-dir on the offline root (then install it on the CA
    /// with `root install-crl`), or with --data-dir on a CA that holds its root key (the
    /// server also does when half of the current one's lifetime has passed, at start-up).
    Crl {
        /// The CA's data directory (a CA that keeps its root key).
        #[arg(
            long,
            env = "BSN_CA_DATA_DIR",
            value_name = "DIR",
            required_unless_present = "root_dir",
            conflicts_with = "root_dir"
        )]
        data_dir: Option<PathBuf>,
        /// The offline root's directory.
        #[arg(long, value_name = "DIR")]
        root_dir: Option<PathBuf>,
        #[command(flatten)]
        pin: PinArgs,
        #[command(flatten)]
        passphrase: PassphraseArgs,
    },
    /// Publish a root CRL signed offline: checked to be the CA's root's, unexpired and newer
    /// than the one published; serving replicas publish it at once.
    InstallCrl {
        /// The CA's data directory.
        #[arg(long, env = "BSN_CA_DATA_DIR", value_name = "DIR")]
        data_dir: PathBuf,
        /// The CRL (`root-crl.der` from the root's directory).
        #[arg(long, value_name = "FILE")]
        crl: PathBuf,
    },
}

fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_env("BSN_LOG").unwrap_or_else(|_| "info".into()))
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    let cli = Cli::parse();
    let rt = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match rt.block_on(run(cli.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn print_init(dir: &std::path::Path, trust_domain: &str, o: &ca_server::init::InitOutcome, listen: &str) {
    println!("CA initialised in {} for trust domain {trust_domain}", dir.display());
    println!("trust bundle: {}", dir.join("trust-bundle.pem").display());
    println!("bootstrap administrator id: admin");
    println!("admin enrollment secret: {}", o.admin_secret);
    println!(
        "(one use, expires {}; it is not stored and will not be shown again)",
        o.admin_secret_expires_at
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default()
    );
    println!(
        "next: bsn enroll --ca https://{listen} --ca-bundle {} --id admin --secret <secret> --out admin-identity",
        dir.join("trust-bundle.pem").display()
    );
    println!("  or: open https://{listen}/register and claim the id admin with the secret, for the web portal");
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Init {
            data_dir,
            trust_domain,
            dns,
            database_url,
            listen,
            log_origin,
            public_url,
            pkcs11_module,
            pkcs11_token,
            offline: offline_args,
            pin,
            passphrase,
        } => {
            let pass = passphrase.resolve()?;
            let read = |f: &PathBuf| std::fs::read(f).map_err(|e| anyhow::anyhow!("reading {}: {e}", f.display()));
            let OfflineArgs {
                offline_root,
                root_cert,
                intermediate_cert,
                root_crl,
            } = *offline_args;
            let offline = match (&root_cert, &intermediate_cert, &root_crl) {
                (Some(r), Some(i), Some(c)) => Some(ca_server::init::OfflineHierarchy {
                    root: read(r)?,
                    intermediate: read(i)?,
                    root_crl: read(c)?,
                }),
                _ => None,
            };
            let pkcs11 = match (pkcs11_module, pkcs11_token) {
                (Some(module), Some(token)) => Some(ca_server::init::Pkcs11Init {
                    module,
                    token,
                    pin: pin.resolve()?,
                }),
                _ => None,
            };
            let shown_listen = listen.clone().unwrap_or_else(|| "127.0.0.1:8443".into());
            let options = InitOptions {
                dir: &data_dir,
                trust_domain: &trust_domain,
                passphrase: &pass,
                database_url,
                dns_names: dns,
                listen,
                log_origin,
                public_url,
                pkcs11,
                offline,
            };
            if offline_root {
                let csr = ca_server::init::request_intermediate(&options)?;
                println!("issuing key made; its certificate signing request is {}", csr.display());
                println!(
                    "next, on the root's machine: ca-server root sign-intermediate --root-dir ROOT --csr {} --out intermediate.pem",
                    csr.display()
                );
                println!(
                    "then here: ca-server init --data-dir {} --trust-domain {trust_domain} --root-cert root.pem \\\n  --intermediate-cert intermediate.pem --root-crl root-crl.der (the same other options as now)",
                    data_dir.display()
                );
                return Ok(());
            }
            let o = init(options).await?;
            print_init(&data_dir, &trust_domain, &o, &shown_listen);
            Ok(())
        }
        Command::Serve {
            data_dir,
            listen,
            database_url,
            pin,
            passphrase,
        } => {
            let pass = passphrase.resolve()?;
            let cfg = Config::load(&data_dir, listen, database_url)?;
            let pin = if cfg.pkcs11.is_some() {
                Some(pin.resolve()?)
            } else {
                None
            };
            ca_server::serve::serve(cfg, pass, pin).await
        }
        Command::Root { command } => root(command),
        Command::Backup {
            data_dir,
            out,
            database_url,
        } => {
            let cfg = Config::load(&data_dir, None, database_url)?;
            let m = ca_server::backup::backup(&cfg, &out).await?;
            println!(
                "backup of {} written to {}: {} files, log size {}",
                m.trust_domain,
                out.display(),
                m.files.len(),
                m.log_size
            );
            if m.backend == "postgres" {
                println!(
                    "the PostgreSQL database is not in it: back it up now with `pg_dump --format=custom \
                     --file ca.pgdump <database URL>` (see the README's Backups section)"
                );
            }
            Ok(())
        }
        Command::Restore {
            from,
            data_dir,
            published_checkpoint,
        } => {
            let published = published_checkpoint
                .map(|f| std::fs::read_to_string(&f).map_err(|e| anyhow::anyhow!("reading {}: {e}", f.display())))
                .transpose()?;
            let m = ca_server::backup::restore(&from, &data_dir, published.as_deref())?;
            println!(
                "restored {} (log size {}, taken {}) into {}",
                m.trust_domain,
                m.log_size,
                m.created_at,
                data_dir.display()
            );
            if published.is_none() {
                println!(
                    "warning: no --published-checkpoint was given; if this CA published a larger log than {} \
                     entries, serving this backup forks it and auditors will see that",
                    m.log_size
                );
            }
            if m.backend == "postgres" {
                println!("the database was not in the archive: restore it with pg_restore first");
            }
            println!(
                "next: ca-server serve --data-dir {} (it re-verifies the log before serving)",
                data_dir.display()
            );
            Ok(())
        }
        Command::AdminSecret { data_dir, database_url } => {
            let cfg = Config::load(&data_dir, None, database_url)?;
            let db = ca_server::db::Db::connect(&cfg.database_url).await?;
            let secret = ca_server::secrets::new_secret();
            let hash = ca_server::secrets::Hasher::new(1)
                .hash(
                    &ca_server::secrets::Source::Identity("operator".into()),
                    true,
                    secret.clone(),
                )
                .await?;
            let expires = time::OffsetDateTime::now_utc() + ca_server::init::ADMIN_SECRET_TTL;
            if !db
                .set_secret(ca_server::init::ADMIN_ID, &hash, expires.unix_timestamp(), 1)
                .await?
            {
                anyhow::bail!("this CA has no 'admin' identity");
            }
            db.close().await;
            println!("admin enrollment secret: {secret}");
            println!(
                "(one use, expires {}; the previous admin secret no longer works)",
                expires
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            );
            Ok(())
        }
        Command::Dev {
            data_dir,
            listen,
            trust_domain,
        } => {
            let pass = ca_server::keystore::DEV_PASSPHRASE;
            if !ca_server::config::Paths::new(&data_dir).config().exists() {
                eprintln!("warning: development CA with a publicly known passphrase; never use it for real identities");
                let o = init(InitOptions {
                    dir: &data_dir,
                    trust_domain: &trust_domain,
                    passphrase: pass,
                    database_url: None,
                    dns_names: vec![],
                    listen: None,
                    log_origin: None,
                    public_url: None,
                    pkcs11: None,
                    offline: None,
                })
                .await?;
                print_init(&data_dir, &trust_domain, &o, &listen);
            }
            let cfg = Config::load(&data_dir, Some(listen), None)?;
            ca_server::serve::serve(cfg, pass.to_string(), None).await
        }
    }
}

fn rfc3339(t: time::OffsetDateTime) -> String {
    t.format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default()
}

fn root(command: RootCommand) -> anyhow::Result<()> {
    use ca_server::root::RootDir;
    let now = time::OffsetDateTime::now_utc();
    match command {
        RootCommand::Init {
            root_dir,
            trust_domain,
            public_url,
            passphrase,
        } => {
            let dir = RootDir::new(&root_dir);
            dir.init(&trust_domain, public_url.as_deref(), &passphrase.resolve()?, now)?;
            println!("root for {trust_domain} made in {}", root_dir.display());
            println!("root certificate: {}", dir.cert().display());
            println!("root CRL: {}", dir.crl().display());
            println!(
                "next: on the CA, ca-server init --offline-root ...; then here, ca-server root sign-intermediate --root-dir {} --csr FILE --out FILE",
                root_dir.display()
            );
            Ok(())
        }
        RootCommand::SignIntermediate {
            root_dir,
            csr,
            out,
            validity,
            passphrase,
        } => {
            if out.exists() {
                anyhow::bail!("{} exists; refusing to overwrite it", out.display());
            }
            let validity = validity
                .map(|v| ca_server::config::parse_duration(&v))
                .transpose()
                .map_err(|e| anyhow::anyhow!("--validity: {e:#}"))?;
            let csr_pem =
                std::fs::read_to_string(&csr).map_err(|e| anyhow::anyhow!("reading {}: {e}", csr.display()))?;
            let dir = RootDir::new(&root_dir);
            let signed = dir.sign_intermediate(&passphrase.resolve()?, &csr_pem, validity, now)?;
            bsn_api::files::write_file(&out, ca_server::pki::pem("CERTIFICATE", &signed.der).as_bytes(), 0o644)?;
            println!(
                "issuing CA {} (serial {}) signed, valid until {}: {}",
                signed.number,
                signed.serial_hex,
                rfc3339(signed.not_after),
                out.display()
            );
            println!(
                "next: give the CA {}, {} and {}",
                out.display(),
                dir.cert().display(),
                dir.crl().display()
            );
            Ok(())
        }
        RootCommand::Rotate {
            root_dir,
            new_root_dir,
            passphrase,
        } => {
            let next = RootDir::new(&new_root_dir);
            let number = RootDir::new(&root_dir).rotate(&next, &passphrase.resolve()?, now)?;
            println!("root {number} made in {}", new_root_dir.display());
            println!("root certificate: {}", next.cert().display());
            println!(
                "cross-certificate (signed by the current root): {}",
                next.cross().display()
            );
            println!("root CRL: {}", next.crl().display());
            println!(
                "next: bsn roots add --certificate {} --cross {} --crl {}",
                next.cert().display(),
                next.cross().display(),
                next.crl().display()
            );
            Ok(())
        }
        RootCommand::Crl {
            root_dir: Some(root_dir),
            passphrase,
            ..
        } => {
            let dir = RootDir::new(&root_dir);
            let (_, next) = dir.sign_crl(&passphrase.resolve()?, now)?;
            println!("root CRL {} signed: valid until {}", dir.crl().display(), rfc3339(next));
            println!(
                "next: ca-server root install-crl --data-dir DIR --crl {} on the CA",
                dir.crl().display()
            );
            Ok(())
        }
        RootCommand::Crl {
            data_dir,
            pin,
            passphrase,
            ..
        } => {
            let data_dir = data_dir.ok_or_else(|| anyhow::anyhow!("--data-dir or --root-dir is required"))?;
            let cfg = Config::load(&data_dir, None, None)?;
            let root_label = cfg.pkcs11.as_ref().and_then(|t| t.root_key.clone());
            let crl = match root_label {
                Some(label) => {
                    let token = ca_server::serve::open_token(&cfg, Some(&pin.resolve()?))?
                        .ok_or_else(|| anyhow::anyhow!("ca.toml names no token"))?;
                    let key = ca_server::serve::RootKey::Token(&token, &label);
                    ca_server::serve::sign_root_crl(&cfg, key, now)?
                }
                None => {
                    let pass = passphrase.resolve()?;
                    let key = ca_server::serve::RootKey::Sealed(&pass);
                    ca_server::serve::sign_root_crl(&cfg, key, now)?
                }
            };
            println!(
                "root CRL {} signed: valid until {} (serving replicas publish it at once)",
                cfg.paths.root_crl().display(),
                rfc3339(crl.next_update)
            );
            Ok(())
        }
        RootCommand::InstallCrl { data_dir, crl } => {
            let paths = ca_server::config::Paths::new(&data_dir);
            if !paths.config().exists() {
                anyhow::bail!("{} holds no CA", data_dir.display());
            }
            let der = std::fs::read(&crl).map_err(|e| anyhow::anyhow!("reading {}: {e}", crl.display()))?;
            let next = ca_server::root::install_crl(&paths, &der, now)?;
            println!(
                "root CRL installed in {}: valid until {} (serving replicas publish it at once)",
                paths.root_crl().display(),
                rfc3339(next)
            );
            Ok(())
        }
    }
}
