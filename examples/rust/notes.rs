//! Shared notes on a subchain: add a note, list them, follow new ones as they commit. The same
//! app as `examples/python/notes.py` and `examples/js/notes.mjs`, on the Rust client
//! (`bsn_api::gateway::Gateway`, what `bsn tx` and `bsn query` use).
//!
//! With `bsn devnet` running, paste the `export ...` line it prints, then:
//!
//! ```text
//! cargo run --release -p bsn-api --example notes -- add "the shipment left the port"
//! cargo run --release -p bsn-api --example notes -- list
//! cargo run --release -p bsn-api --example notes -- follow     # Ctrl-C to stop
//! ```
//!
//! Each note is one signed transaction (key `notes/<time>-<random>`, value JSON with the author
//! and the text); `list` reads the range back from the node; `follow` prints notes from each new
//! block, with the block hash chain verified by the client.

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bsn_api::client::ClientError;
use bsn_api::gateway::Gateway;
use identity::ledger::{BlockKind, Op, SignedTx};
use identity::membership::SubchainId;
use serde_json::{Value, json};

const USAGE: &str = "usage: notes add TEXT | notes list | notes follow
(set BSN_NODE, BSN_CA_BUNDLE, BSN_CERT and BSN_KEY: paste the export line `bsn devnet` prints)";

fn env(name: &str) -> Result<String, String> {
    std::env::var(name).map_err(|_| format!("{name} is not set: paste the export line `bsn devnet` prints"))
}

/// The author's name: the last segment of the SPIFFE id in the certificate's URI SAN.
fn author(cert: &std::path::Path) -> Result<String, String> {
    let pem = std::fs::read(cert).map_err(|e| format!("{}: {e}", cert.display()))?;
    let (_, pem) = x509_parser::pem::parse_x509_pem(&pem).map_err(|e| format!("{}: {e}", cert.display()))?;
    let cert = pem.parse_x509().map_err(|e| format!("{e}"))?;
    let san = cert
        .subject_alternative_name()
        .ok()
        .flatten()
        .ok_or("the certificate names no identity")?;
    san.value
        .general_names
        .iter()
        .find_map(|n| match n {
            x509_parser::extensions::GeneralName::URI(u) => u.rsplit('/').next().map(str::to_string),
            _ => None,
        })
        .ok_or_else(|| "the certificate names no identity".to_string())
}

async fn run(args: &[String]) -> Result<(), String> {
    let (cert, key) = (PathBuf::from(env("BSN_CERT")?), PathBuf::from(env("BSN_KEY")?));
    let gateway = Gateway::from_files(&env("BSN_NODE")?, &PathBuf::from(env("BSN_CA_BUNDLE")?), &cert, &key)
        .map_err(|e| e.to_string())?;
    let subchain = SubchainId::parse(&std::env::var("BSN_SUBCHAIN").unwrap_or_else(|_| "demo".into()))
        .map_err(|e| e.to_string())?;
    let failed = |e: ClientError| format!("error: {e}");
    match args {
        [cmd, text] if cmd == "add" => {
            let mut random = [0u8; 4];
            ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut random)
                .map_err(|_| "no randomness")?;
            let nanos = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos();
            let key = format!("notes/{nanos:020}-{}", hex::encode(random));
            let value = json!({ "author": author(&cert)?, "text": text })
                .to_string()
                .into_bytes();
            let (id, done) = gateway
                .submit(
                    &subchain,
                    vec![Op::Put {
                        key: key.clone(),
                        value,
                    }],
                )
                .await
                .map_err(failed)?;
            println!(
                "added {key} in block {} (transaction {id})",
                done.height.unwrap_or_default()
            );
        }
        [cmd] if cmd == "list" => {
            let mut start = "notes/".to_string();
            loop {
                let page = gateway.range(&subchain, &start, "notes0", 100).await.map_err(failed)?;
                for item in &page.items {
                    let note: Value = serde_json::from_str(item.text.as_deref().unwrap_or("{}")).unwrap_or_default();
                    println!(
                        "{}\t{}\t{}",
                        item.key,
                        note["author"].as_str().unwrap_or("?"),
                        note["text"].as_str().unwrap_or("?")
                    );
                }
                match page.items.last() {
                    Some(last) if page.more => start = format!("{}\0", last.key),
                    _ => break,
                }
            }
        }
        [cmd] if cmd == "follow" => {
            let tip = gateway.info(&subchain).await.map_err(failed)?.height.unwrap_or(0);
            let mut blocks = gateway.follow(&subchain, tip, Duration::from_secs(300));
            loop {
                let b = blocks.next().await.map_err(failed)?;
                if b.block.header.kind != BlockKind::Transactions {
                    continue;
                }
                for entry in &b.block.entries {
                    let tx = SignedTx::parse(entry.clone()).map_err(|e| e.to_string())?;
                    for op in tx.body.ops {
                        if let Op::Put { key, value } = op
                            && key.starts_with("notes/")
                        {
                            let note: Value = serde_json::from_slice(&value).unwrap_or_default();
                            println!(
                                "block {}\t{}\t{}",
                                b.block.header.height,
                                note["author"].as_str().unwrap_or("?"),
                                note["text"].as_str().unwrap_or("?")
                            );
                        }
                    }
                }
            }
        }
        _ => return Err(USAGE.to_string()),
    }
    Ok(())
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args: Vec<String> = std::env::args().skip(1).collect();
    tokio::select! {
        r = run(&args) => match r {
            Ok(()) => ExitCode::SUCCESS,
            Err(e) => {
                eprintln!("{e}");
                ExitCode::FAILURE
            }
        },
        _ = tokio::signal::ctrl_c() => ExitCode::SUCCESS,
    }
}
