//! Transactions signed and submitted per second from each SDK against the same node, in one run:
//! the Rust client (`bsn-api`, what `bsn` uses), the Python SDK (`sdk/python`) and the Node.js SDK
//! (`sdk/js`). Each signs its transactions inside the timed part (ECDSA P-256, one put each),
//! sends `--batch` per request with `--concurrency` requests in flight, and counts a transaction
//! when the node answered that it committed. The Rust client is the baseline, run before and
//! after the SDKs (its mean, so that the chain's growth does not favour whoever runs first): at
//! 500 per request the node, not the SDK, should be the limit, so each ratio should be close to 1.
//!
//! On a machine with two or more CPUs the node is pinned to the last CPU and every client to the
//! others (`taskset`), as when apps and nodes run on separate machines: a client that keeps up
//! with the node reaches the node's rate, one that does not falls short however many cores the
//! node leaves idle. `--no-pin` shares every CPU between them. Each client's CPU time per
//! transaction is printed beside its rate.
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
    /// Share every CPU between the node and the clients instead of pinning them apart.
    #[arg(long)]
    no_pin: bool,
}

/// One client's run: its rate, its CPU per transaction, and how busy the node was meanwhile
/// (node CPU seconds per second: 1.0 is one CPU saturated).
struct Run {
    rate: f64,
    client_cpu: f64,
    node_busy: f64,
}

/// Pins every thread of `pid` to `cpus` (a `taskset` list such as `0` or `0-2`).
fn pin(pid: u32, cpus: &str) {
    let ok = Command::new("taskset")
        .args(["-a", "-p", "-c", cpus, &pid.to_string()])
        .stdout(std::process::Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "taskset could not pin process {pid} to CPUs {cpus}");
}

/// The Rust client: the same loop as the SDK benchmarks. Returns tx/s and CPU s per transaction.
async fn rust(node: &TestNode, ca: &TestCa, writer: &Path, args: &Args, run: &str) -> Run {
    let node_pid = node.pid().expect("the node runs").to_string();
    let node_cpu = bsn_tests::cpu_secs(&node_pid, false);
    let signer = Arc::new(TxSigner::from_files(&writer.join("cert.pem"), &writer.join("key.pem")).unwrap());
    let subchain = identity::membership::SubchainId::parse("bench").unwrap();
    let next = Arc::new(AtomicUsize::new(0));
    let cpu = bsn_tests::cpu_secs("self", false);
    let t = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..args.concurrency {
        let (api, signer, next, subchain, run) = (
            node.api(ca, writer),
            signer.clone(),
            next.clone(),
            subchain.clone(),
            run.to_string(),
        );
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
                            key: format!("rs{run}-{i:09}"),
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
    let cpu = (bsn_tests::cpu_secs("self", false) - cpu) / committed as f64;
    let node_busy = (bsn_tests::cpu_secs(&node_pid, false) - node_cpu) / secs;
    println!(
        "Rust client (bsn-api), run {run}: {committed} committed in {secs:.2} s, {:.0} us of client CPU per transaction, node busy {node_busy:.2} CPU",
        cpu * 1e6
    );
    Run {
        rate: committed as f64 / secs,
        client_cpu: cpu,
        node_busy,
    }
}

/// Runs one SDK's benchmark script and reads its rate; returns tx/s and CPU s per transaction.
fn sdk(program: &str, script: &Path, node: &TestNode, ca: &TestCa, writer: &Path, args: &Args) -> Run {
    let node_pid = node.pid().expect("the node runs").to_string();
    let node_cpu = bsn_tests::cpu_secs(&node_pid, false);
    let cpu = bsn_tests::cpu_secs("self", true);
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
    let rate: f64 = text
        .lines()
        .find_map(|l| l.strip_prefix("sdk tx/s: "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or_else(|| panic!("no rate from {program}: {text}"));
    // The child's whole CPU time, start-up included, over its transactions.
    let cpu = (bsn_tests::cpu_secs("self", true) - cpu) / args.txs as f64;
    // The node works only in the SDK's timed part: its CPU over that part's seconds.
    let node_busy = (bsn_tests::cpu_secs(&node_pid, false) - node_cpu) / (args.txs as f64 / rate);
    print!(
        "{}",
        text.lines()
            .filter(|l| l.starts_with("sdk committed"))
            .map(|l| format!(
                "{program}: {l}, {:.0} us of client CPU per transaction (start-up included), node busy {node_busy:.2} CPU\n",
                cpu * 1e6
            ))
            .collect::<String>()
    );
    Run {
        rate,
        client_cpu: cpu,
        node_busy,
    }
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut ca = TestCa::start();
    let node = TestNode::start(&mut ca, "n1").await;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    let pinned = !args.no_pin && cpus >= 2;
    if pinned {
        pin(node.pid().expect("the node runs"), &(cpus - 1).to_string());
        pin(std::process::id(), &format!("0-{}", cpus - 2));
        println!("node pinned to CPU {}, clients to CPUs 0-{}", cpus - 1, cpus - 2);
    }
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

    let before = rust(&node, &ca, &writer, &args, "a").await;
    let py = sdk("python3", &repo.join("sdk/python/bench.py"), &node, &ca, &writer, &args);
    let js = sdk("node", &repo.join("sdk/js/bench.mjs"), &node, &ca, &writer, &args);
    let after = rust(&node, &ca, &writer, &args, "b").await;
    let base = (before.rate + after.rate) / 2.0;
    let show = |name: &str, r: &Run| {
        format!(
            "{name} {:.0} tx/s ({:.2} of Rust; client {:.0} us CPU/tx; node busy {:.2} CPU)",
            r.rate,
            r.rate / base,
            r.client_cpu * 1e6,
            r.node_busy
        )
    };
    println!(
        "signed and submitted ({} per request, {} in flight, {}): Rust {base:.0} tx/s (runs {:.0} and {:.0}; client {:.0} us CPU/tx; node busy {:.2} CPU); {}; {}",
        args.batch,
        args.concurrency,
        if pinned {
            "the node on its own CPU"
        } else {
            "sharing every CPU"
        },
        before.rate,
        after.rate,
        before.client_cpu * 1e6,
        before.node_busy,
        show("Python SDK", &py),
        show("Node.js SDK", &js),
    );
}
