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

#[derive(Subcommand)]
enum RootCommand {
    /// Sign a new root CRL now (the server also does when half of the current one's lifetime
    /// has passed, at start-up): for a CA that runs longer than that without a restart, or
    /// after changing root_crl_validity. Needs the root key's passphrase.
    Crl {
        /// The CA's data directory.
        #[arg(long, env = "BSN_CA_DATA_DIR", value_name = "DIR")]
        data_dir: PathBuf,
        #[command(flatten)]
        pin: PinArgs,
        #[command(flatten)]
        passphrase: PassphraseArgs,
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
            pin,
            passphrase,
        } => {
            let pass = passphrase.resolve()?;
            let pkcs11 = match (pkcs11_module, pkcs11_token) {
                (Some(module), Some(token)) => Some(ca_server::init::Pkcs11Init {
                    module,
                    token,
                    pin: pin.resolve()?,
                }),
                _ => None,
            };
            let shown_listen = listen.clone().unwrap_or_else(|| "127.0.0.1:8443".into());
            let o = init(InitOptions {
                dir: &data_dir,
                trust_domain: &trust_domain,
                passphrase: &pass,
                database_url,
                dns_names: dns,
                listen,
                log_origin,
                public_url,
                pkcs11,
            })
            .await?;
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
        Command::Root {
            command:
                RootCommand::Crl {
                    data_dir,
                    pin,
                    passphrase,
                },
        } => {
            let cfg = Config::load(&data_dir, None, None)?;
            let root_label = cfg.pkcs11.as_ref().and_then(|t| t.root_key.clone());
            let crl = match root_label {
                Some(label) => {
                    let token = ca_server::serve::open_token(&cfg, Some(&pin.resolve()?))?
                        .ok_or_else(|| anyhow::anyhow!("ca.toml names no token"))?;
                    let key = ca_server::serve::RootKey::Token(&token, &label);
                    ca_server::serve::sign_root_crl(&cfg, key, time::OffsetDateTime::now_utc())?
                }
                None => {
                    let pass = passphrase.resolve()?;
                    let key = ca_server::serve::RootKey::Sealed(&pass);
                    ca_server::serve::sign_root_crl(&cfg, key, time::OffsetDateTime::now_utc())?
                }
            };
            println!(
                "root CRL {} signed: valid until {} (serving replicas publish it at once)",
                cfg.paths.root_crl().display(),
                crl.next_update
                    .format(&time::format_description::well_known::Rfc3339)
                    .unwrap_or_default()
            );
            Ok(())
        }
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
                })
                .await?;
                print_init(&data_dir, &trust_domain, &o, &listen);
            }
            let cfg = Config::load(&data_dir, Some(listen), None)?;
            ca_server::serve::serve(cfg, pass.to_string(), None).await
        }
    }
}
