//! `bsn tx ...` and `bsn query ...`: the ledger from the command line, against a city node's
//! gateway over mTLS with your one certificate. Transactions are signed here with your key;
//! transaction proofs and the block hash chain are verified here, trusting nothing the node says.

use std::path::PathBuf;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bsn_api::client::Api;
use bsn_api::node::{
    BlockEntry, BlockKind, BlockPage, BlockView, Committed, StatePage, StateValue, SubchainInfo, SubmitRequest, TxOp,
    TxProof,
};
use bsn_api::tx::TxSigner;
use clap::{Args, Subcommand};
use identity::ledger::{Block, BlockHeader, Op, check_entry, sha256};
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
    fn api(&self) -> Result<Api, Failure> {
        Ok(Api::from_files(
            &self.node,
            &self.ca_bundle,
            Some((self.me.cert.as_path(), self.me.key.as_path())),
        )?)
    }

    fn path(&self, rest: &str) -> String {
        format!("/api/v1/subchains/{}{rest}", self.subchain)
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

/// Builds and signs a transaction with the credential files.
fn sign_tx(me: &IdentityArgs, subchain: &str, ops: Vec<Op>) -> Result<(Vec<u8>, String), Failure> {
    let subchain = SubchainId::parse(subchain).map_err(local)?;
    let signed = TxSigner::from_files(&me.cert, &me.key)?.sign(&subchain, ops)?;
    Ok((signed.bytes, signed.id))
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
            let (signed, id) = sign_tx(&t.me, &t.subchain, ops)?;
            let v: Committed = t
                .api()?
                .post_as(
                    &t.path("/transactions"),
                    &SubmitRequest {
                        transactions: vec![B64.encode(signed)],
                    },
                )
                .await?;
            let r = v
                .results
                .first()
                .ok_or_else(|| verify_failed("the node answered with no result"))?;
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

fn decode_block(v: &BlockView) -> Result<Block, Failure> {
    let raw = B64
        .decode(&v.encoded)
        .map_err(|_| verify_failed("the node sent a block that is not base64"))?;
    let b = Block::decode(&raw).map_err(|e| verify_failed(format!("the node sent a bad block: {e}")))?;
    if hex::encode(b.header.hash()) != v.hash {
        return Err(verify_failed("a block's hash does not match its header"));
    }
    Ok(b)
}

fn verify_failed(m: impl Into<String>) -> Failure {
    Failure {
        code: 6,
        message: m.into(),
        hint: Some("the node's answer does not verify; report it to the node operator"),
    }
}

pub(crate) async fn query(cmd: QueryCmd) -> Result<(), Failure> {
    match cmd {
        QueryCmd::Info { t } => {
            let v: SubchainInfo = t.api()?.get_as(&t.path(""), &[]).await?;
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
            let enc: String = state_key.split('/').map(urlencode).collect::<Vec<_>>().join("/");
            let v: StateValue = t.api()?.get_as(&t.path(&format!("/state/{enc}")), &[]).await?;
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
            let v: StatePage = t
                .api()?
                .get_as(
                    &t.path("/state"),
                    &[("start", start), ("end", end), ("limit", limit.to_string())],
                )
                .await?;
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
            let path = match (height, hash) {
                (Some(h), None) => t.path(&format!("/blocks/{h}")),
                (None, Some(h)) => t.path(&format!("/blocks/by-hash/{h}")),
                _ => return Err(local("give a height or --hash, not both")),
            };
            let v: BlockView = t.api()?.get_as(&path, &[]).await?;
            decode_block(&v)?;
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

fn urlencode(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// `bsn query tx`: a transaction, with its inclusion proof checked against its block header.
async fn transaction(t: &NodeTarget, id: &str) -> Result<(), Failure> {
    let v: TxProof = t.api()?.get_as(&t.path(&format!("/transactions/{id}")), &[]).await?;
    let header = BlockHeader::decode(
        &B64.decode(&v.header)
            .map_err(|_| verify_failed("header is not base64"))?,
    )
    .map_err(|e| verify_failed(e.to_string()))?;
    let signed = B64
        .decode(&v.transaction.signed)
        .map_err(|_| verify_failed("transaction is not base64"))?;
    if hex::encode(identity::ledger::tx_id(&signed).map_err(|e| verify_failed(e.to_string()))?) != id {
        return Err(verify_failed("the transaction's id is not the one asked for"));
    }
    let proof = v
        .proof
        .iter()
        .map(|h| {
            hex::decode(h)
                .ok()
                .and_then(|b| b.try_into().ok())
                .ok_or_else(|| verify_failed("bad proof hash"))
        })
        .collect::<Result<Vec<[u8; 32]>, _>>()?;
    let index = u64::from(v.index);
    if !check_entry(
        &proof,
        header.entry_count as u64,
        header.entries_root,
        index,
        &sha256(&signed),
    ) || hex::encode(header.hash()) != v.block_hash
    {
        return Err(verify_failed("the inclusion proof does not verify"));
    }
    println!("transaction {id} by {}", v.transaction.creator);
    println!(
        "in block {} at index {index}, block hash {} (inclusion proof verified)",
        v.height, v.block_hash
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

/// `bsn query blocks`: blocks from a height, each checked to extend the one before it.
async fn blocks(t: &NodeTarget, from: u64, follow: bool) -> Result<(), Failure> {
    let api = t.api()?;
    let mut previous: Option<[u8; 32]> = None;
    let mut check = |v: &BlockView| -> Result<(), Failure> {
        let b = decode_block(v)?;
        if let Some(p) = previous
            && b.header.previous != p
        {
            return Err(verify_failed(format!(
                "block {} does not extend the block before it",
                b.header.height
            )));
        }
        previous = Some(b.header.hash());
        print_block(v);
        Ok(())
    };
    if follow {
        let mut es = api
            .events(&t.path("/blocks/stream"), &[("from", from.to_string())])
            .await?;
        while let Some(ev) = es.next().await? {
            if ev.event == "block" {
                let v: BlockView = serde_json::from_str(&ev.data).map_err(|e| verify_failed(e.to_string()))?;
                check(&v)?;
            }
        }
    } else {
        let mut next = from;
        loop {
            let page: BlockPage = api
                .get_as(
                    &t.path("/blocks"),
                    &[("from", next.to_string()), ("limit", "1000".into())],
                )
                .await?;
            for b in &page.blocks {
                check(b)?;
                next = b.height + 1;
            }
            if page.blocks.len() < 1000 {
                break;
            }
        }
    }
    Ok(())
}
