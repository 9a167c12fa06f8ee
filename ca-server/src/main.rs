//! The `ca-server` binary.

use std::path::PathBuf;
use std::process::ExitCode;

use ca_server::config::{Config, PassphraseArgs};
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
        #[command(flatten)]
        passphrase: PassphraseArgs,
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
            passphrase,
        } => {
            let pass = passphrase.resolve()?;
            let shown_listen = listen.clone().unwrap_or_else(|| "127.0.0.1:8443".into());
            let o = init(InitOptions {
                dir: &data_dir,
                trust_domain: &trust_domain,
                passphrase: &pass,
                database_url,
                dns_names: dns,
                listen,
                log_origin,
            })
            .await?;
            print_init(&data_dir, &trust_domain, &o, &shown_listen);
            Ok(())
        }
        Command::Serve {
            data_dir,
            listen,
            database_url,
            passphrase,
        } => {
            let pass = passphrase.resolve()?;
            let cfg = Config::load(&data_dir, listen, database_url)?;
            ca_server::serve::serve(cfg, pass).await
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
                })
                .await?;
                print_init(&data_dir, &trust_domain, &o, &listen);
            }
            let cfg = Config::load(&data_dir, Some(listen), None)?;
            ca_server::serve::serve(cfg, pass.to_string()).await
        }
    }
}
