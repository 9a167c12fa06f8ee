//! Transactions signed and submitted per second from each SDK against the same node, in one run:
//! the Rust client (`bsn-api`, what `bsn` uses), the Python SDK (`sdk/python`) and the Node.js SDK
//! (`sdk/js`). Each signs its transactions inside the timed part (ECDSA P-256, one put each),
//! sends `--batch` per request with `--concurrency` requests in flight, and counts a transaction
//! when the node answered that it committed. The Rust client is the baseline: at 500 per request
//! the node, not the SDK, should be the limit, so each ratio should be close to 1.
//!
//! Needs `python3` with `pip install ./sdk/python` and `node` (20+).
//!
//! `cargo run --release -p bsn-tests --bin bench-sdk -- [--txs 20000] [--batch 500] [--concurrency 4]`

use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bsn_api::tx::TxSigner;
use bsn_tests::{TestCa, TestNode, submit_body};
use clap::Parser;
use identity::ledger::Op;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Transactions per SDK.
    #[arg(long, default_value_t = 20_000)]
    txs: usize,
    /// Transactions per request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Requests in flight.
    #[arg(long, default_value_t = 4)]
    concurrency: usize,
}

/// The Rust client: the same loop as the SDK benchmarks.
async fn rust(node: &TestNode, ca: &TestCa, writer: &Path, args: &Args) -> f64 {
    let signer = Arc::new(TxSigner::from_files(&writer.join("cert.pem"), &writer.join("key.pem")).unwrap());
    let subchain = identity::membership::SubchainId::parse("bench").unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (api, signer, next, subchain) = (node.api(ca, writer), signer.clone(), next.clone(), subchain.clone());
        let (txs, batch) = (args.txs, args.batch);
        tasks.push(tokio::spawn(async move {
            let mut done = 0;
            loop {
                let from = next.fetch_add(batch, Ordering::SeqCst);
                if from >= txs {
                    return done;
                }
                let signed: Vec<Vec<u8>> = (from..(from + batch).min(txs))
                    .map(|i| {
                        let ops = vec![Op::Put {
                            key: format!("rs-{i:09}"),
                            value: format!("value {i}").into_bytes(),
                        }];
                        signer.sign(&subchain, ops).unwrap().bytes
                    })
                    .collect();
                let v = api
                    .post("/api/v1/subchains/bench/transactions", &submit_body(&signed))
                    .await
                    .expect("batch committed");
                done += v["results"].as_array().unwrap().len();
            }
        }));
    }
    let mut committed = 0;
    for t in tasks {
        committed += t.await.unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    println!("Rust client (bsn-api): {committed} committed in {secs:.2} s");
    committed as f64 / secs
}

/// Runs one SDK's benchmark script and reads its rate.
fn sdk(program: &str, script: &Path, node: &TestNode, ca: &TestCa, writer: &Path, args: &Args) -> f64 {
    let out = Command::new(program)
        .arg(script)
        .args(["--node", &node.url, "--subchain", "bench"])
        .arg("--bundle")
        .arg(&ca.bundle)
        .arg("--cert")
        .arg(writer.join("cert.pem"))
        .arg("--key")
        .arg(writer.join("key.pem"))
        .args(["--txs", &args.txs.to_string(), "--batch", &args.batch.to_string()])
        .args(["--concurrency", &args.concurrency.to_string()])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {program}: {e}"));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{program} {}: {text}{}",
        script.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    print!(
        "{}",
        text.lines()
            .filter(|l| l.starts_with("sdk committed"))
            .map(|l| format!("{program}: {l}\n"))
            .collect::<String>()
    );
    text.lines()
        .find_map(|l| l.strip_prefix("sdk tx/s: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rate from {program}: {text}"))
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut ca = TestCa::start();
    let node = TestNode::start(&mut ca, "n1").await;
    let admin = ca.admin();
    let writer = ca.participant("writer").await;
    let api = ca.api(Some(&admin));
    api.post(
        "/api/v1/subchains",
        &json!({ "id": "bench", "name": "Bench", "nodes": ["n1"] }),
    )
    .await
    .unwrap();
    api.put("/api/v1/subchains/bench/members/writer", &json!({ "role": "writer" }))
        .await
        .unwrap();
    let as_writer = node.api(&ca, &writer);
    bsn_tests::eventually("the node to admit the writer", Duration::from_secs(30), || async {
        as_writer
            .get("/api/v1/subchains/bench", &[])
            .await
            .ok()
            .filter(|v| v["membership_revision"].as_u64() >= Some(2))
    })
    .await;

    let base = rust(&node, &ca, &writer, &args).await;
    let py = sdk("python3", &repo.join("sdk/python/bench.py"), &node, &ca, &writer, &args);
    let js = sdk("node", &repo.join("sdk/js/bench.mjs"), &node, &ca, &writer, &args);
    println!(
        "signed and submitted ({} per request, {} in flight): Rust {base:.0} tx/s; Python SDK {py:.0} tx/s ({:.2} of Rust); Node.js SDK {js:.0} tx/s ({:.2} of Rust)",
        args.batch,
        args.concurrency,
        py / base,
        js / base
    );
}
