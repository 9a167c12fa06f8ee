//! `bsn tx ...` and `bsn query ...`: the ledger from the command line, against a city node's
//! gateway over mTLS with your one certificate. Transactions are signed here with your key;
//! transaction proofs and the block hash chain are verified here, trusting nothing the node says.

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bsn_api::gateway::{BlockAt, Gateway, VerifiedBlock};
use bsn_api::node::{BlockEntry, BlockKind, BlockView, TxOp};
use clap::{Args, Subcommand};
use identity::ledger::Op;
use identity::membership::{Role, SubchainId};

use super::{Failure, IdentityArgs, local};

#[derive(Args, Clone)]
pub(crate) struct NodeTarget {
    /// The city node's gateway URL, such as https://127.0.0.1:9443.
    #[arg(long, env = "BSN_NODE", value_name = "URL", value_parser = https_url)]
    node: String,
    /// The CA's trust bundle (the node's certificate chains to it).
    #[arg(long, env = "BSN_CA_BUNDLE", value_name = "FILE")]
    ca_bundle: PathBuf,
    #[command(flatten)]
    me: IdentityArgs,
    /// The subchain.
    #[arg(long, env = "BSN_SUBCHAIN")]
    subchain: String,
}

impl NodeTarget {
    /// The gateway client and the subchain, both checked before anything is sent.
    fn open(&self) -> Result<(Gateway, SubchainId), Failure> {
        let subchain = SubchainId::parse(&self.subchain).map_err(|e| Failure {
            code: 2,
            message: format!("--subchain: {e}"),
            hint: None,
        })?;
        Ok((
            Gateway::from_files(&self.node, &self.ca_bundle, &self.me.cert, &self.me.key)?,
            subchain,
        ))
    }
}

#[derive(Subcommand)]
pub(crate) enum TxCmd {
    /// Sign a transaction with your key, submit it, and wait until it is committed.
    Submit {
        #[command(flatten)]
        t: NodeTarget,
        /// Set a key: KEY=VALUE (repeatable).
        #[arg(long = "put", value_name = "KEY=VALUE", value_parser = parse_put, required_unless_present = "deletes")]
        puts: Vec<(String, String)>,
        /// Remove a key (repeatable).
        #[arg(long = "delete", value_name = "KEY")]
        deletes: Vec<String>,
    },
}

#[derive(Subcommand)]
pub(crate) enum QueryCmd {
    /// Chain info: height, tip hash, membership revision, your role.
    Info {
        #[command(flatten)]
        t: NodeTarget,
    },
    /// One key of the world state.
    Get {
        #[command(flatten)]
        t: NodeTarget,
        /// The key.
        #[arg(value_name = "KEY")]
        state_key: String,
    },
    /// Keys from --start (inclusive) to --end (exclusive).
    Range {
        #[command(flatten)]
        t: NodeTarget,
        #[arg(long, default_value = "")]
        start: String,
        #[arg(long, default_value = "")]
        end: String,
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// Print the node's items as JSON (for scripts).
        #[arg(long)]
        json: bool,
    },
    /// One block, by height or --hash.
    Block {
        #[command(flatten)]
        t: NodeTarget,
        /// Height.
        height: Option<u64>,
        /// Block hash (hex) instead of a height.
        #[arg(long)]
        hash: Option<String>,
    },
    /// A transaction by id, with its inclusion proof checked against its block's header.
    Tx {
        #[command(flatten)]
        t: NodeTarget,
        /// Transaction id (hex).
        id: String,
    },
    /// Blocks from a height, each checked to extend the previous one; --follow waits for new ones.
    Blocks {
        #[command(flatten)]
        t: NodeTarget,
        #[arg(long, default_value_t = 0)]
        from: u64,
        #[arg(long)]
        follow: bool,
    },
}

/// `--put KEY=VALUE`, checked by clap (a usage error, exit 2).
fn parse_put(s: &str) -> Result<(String, String), String> {
    match s.split_once('=') {
        Some((k, v)) if !k.is_empty() => Ok((k.to_string(), v.to_string())),
        _ => Err("write KEY=VALUE, with '=' between a non-empty key and the value".into()),
    }
}

/// A gateway or CA URL: the CA and the nodes speak only HTTPS (checked by clap, exit 2).
pub(crate) fn https_url(s: &str) -> Result<String, String> {
    match reqwest::Url::parse(s) {
        Ok(u) if u.scheme() == "https" && u.host_str().is_some() => Ok(s.to_string()),
        Ok(u) if u.scheme() == "http" => Err(format!(
            "the CA and the nodes speak only HTTPS: use https://{}",
            s.trim_start_matches("http://")
        )),
        _ => Err("expected a URL such as https://127.0.0.1:8443".into()),
    }
}

pub(crate) async fn tx(cmd: TxCmd) -> Result<(), Failure> {
    match cmd {
        TxCmd::Submit { t, puts, deletes } => {
            let mut ops: Vec<Op> = puts
                .into_iter()
                .map(|(key, value)| Op::Put {
                    key,
                    value: value.into_bytes(),
                })
                .collect();
            ops.extend(deletes.into_iter().map(|key| Op::Delete { key }));
            let (node, subchain) = t.open()?;
            let (id, r) = node.submit(&subchain, ops).await?;
            println!("committed {id}");
            println!(
                "block {} index {}",
                r.height.unwrap_or_default(),
                r.index.unwrap_or_default()
            );
        }
    }
    Ok(())
}

fn print_block(v: &BlockView) {
    let kind = match v.kind {
        BlockKind::Config => "config",
        BlockKind::Transactions => "transactions",
    };
    println!(
        "block {} {} {kind} ({} entries, membership revision {}, previous {})",
        v.height, v.hash, v.entry_count, v.membership_revision, v.previous
    );
}

pub(crate) async fn query(cmd: QueryCmd) -> Result<(), Failure> {
    match cmd {
        QueryCmd::Info { t } => {
            let (node, subchain) = t.open()?;
            let v = node.info(&subchain).await?;
            println!("subchain {} on node {}", v.id, v.node);
            match v.height {
                Some(h) => println!("height {h} tip {}", v.tip.unwrap_or_default()),
                None => println!("no block yet"),
            }
            println!(
                "membership revision {}, {} transactions, your role: {}",
                v.membership_revision.unwrap_or_default(),
                v.transactions,
                v.role.map_or("none", Role::name)
            );
        }
        QueryCmd::Get { t, state_key } => {
            let (node, subchain) = t.open()?;
            let v = node.get(&subchain, &state_key).await?;
            match v.text {
                Some(s) => println!("{s}"),
                None => println!("base64:{}", v.value),
            }
            eprintln!("(written at block {})", v.height);
        }
        QueryCmd::Range {
            t,
            start,
            end,
            limit,
            json,
        } => {
            let (node, subchain) = t.open()?;
            let v = node.range(&subchain, &start, &end, limit).await?;
            crate::output::print(
                &v.items,
                json,
                |items| {
                    let mut t = crate::output::Table::new(&["KEY", "VALUE", "BLOCK"]);
                    for i in items {
                        t.row(vec![
                            i.key.clone(),
                            i.text.clone().unwrap_or_else(|| format!("base64:{}", i.value)),
                            i.height.to_string(),
                        ]);
                    }
                    t
                },
                "no keys in that range",
            )?;
            if v.more {
                eprintln!("(more: continue with a larger --limit or a later --start)");
            }
        }
        QueryCmd::Block { t, height, hash } => {
            let at = match (height, hash.as_deref()) {
                (Some(h), None) => BlockAt::Height(h),
                (None, Some(h)) => BlockAt::Hash(h),
                _ => return Err(local("give a height or --hash, not both")),
            };
            let (node, subchain) = t.open()?;
            let VerifiedBlock { view: v, .. } = node.block(&subchain, at).await?;
            print_block(&v);
            for e in v.entries.iter().flatten() {
                if let BlockEntry::Transaction(tx) = e {
                    println!("  tx {} by {}", tx.id, tx.creator);
                }
            }
        }
        QueryCmd::Tx { t, id } => transaction(&t, &id).await?,
        QueryCmd::Blocks { t, from, follow } => blocks(&t, from, follow).await?,
    }
    Ok(())
}

/// `bsn query tx`: a transaction, with its inclusion proof checked against its block header.
async fn transaction(t: &NodeTarget, id: &str) -> Result<(), Failure> {
    let (node, subchain) = t.open()?;
    let v = node.transaction(&subchain, id).await?;
    let index = v.index;
    let block_hash = hex::encode(v.header.hash());
    println!("transaction {id} by {}", v.transaction.creator);
    println!(
        "in block {} at index {index}, block hash {block_hash} (inclusion proof verified)",
        v.height
    );
    for op in &v.transaction.ops {
        match op {
            TxOp::Put { put, value } => {
                let val = B64.decode(value).unwrap_or_default();
                println!("  put {put} = {}", String::from_utf8_lossy(&val));
            }
            TxOp::Delete { delete } => println!("  delete {delete}"),
        }
    }
    Ok(())
}

/// `bsn query blocks`: blocks from a height, each checked to extend the one before it; with
/// `--follow`, new ones as they commit (resuming across node restarts).
async fn blocks(t: &NodeTarget, from: u64, follow: bool) -> Result<(), Failure> {
    let (node, subchain) = t.open()?;
    if follow {
        let mut stream = node.follow(&subchain, from, std::time::Duration::from_secs(60));
        loop {
            print_block(&stream.next().await?.view);
        }
    }
    let (mut next, mut previous) = (from, None);
    loop {
        let page = node.blocks(&subchain, next, 1000, previous).await?;
        for b in &page {
            print_block(&b.view);
            next = b.block.header.height + 1;
            previous = Some(b.block.header.hash());
        }
        if page.len() < 1000 {
            return Ok(());
        }
    }
}
