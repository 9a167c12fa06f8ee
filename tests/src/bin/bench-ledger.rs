//! Committed transactions per second for one subchain on one node, with signed transactions.
//!
//! Starts a real CA and a real `ledger-node`, makes a writer, signs N transactions (ECDSA P-256,
//! outside the timed part), then submits them over mTLS from several connections in batches and
//! waits for each batch's commit (block durable in redb). A second phase sends one transaction
//! per request to measure commit latency. The baseline, measured in the same run, is the
//! machine's ECDSA P-256 verification rate on all cores: every transaction costs the node at
//! least one such verification, so the ratio says how much of that ceiling the node reaches.
//!
//! With `--nodes 3` the subchain is hosted on three nodes (one Raft group; clients spread over
//! the nodes, followers forward to the leader), and a last phase stops one follower, writes
//! `--catchup-blocks` blocks without it, restarts it and times how long it takes to catch up
//! (by log replication, or by installing a snapshot and fetching blocks when it is far behind).
//!
//! With `--orderers 3` an ordering cluster of three orderers orders the subchain and the
//! `--nodes` city nodes only follow it (not Raft voters; they pull and verify every block);
//! clients submit through the city nodes. Compare the commit latency of `--nodes 3` and
//! `--nodes 9`: adding city nodes must not slow commits. The catch-up phase then stops a city
//! node instead of a follower.
//!
//! `cargo run --release -p bsn-tests --bin bench-ledger -- [--txs 100000] [--batch 500] [--connections 4] [--nodes 3 --catchup-blocks 5000] [--orderers 3]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use bsn_api::tx::TxSigner;
use bsn_tests::{TestCa, TestNode, submit_body};
use clap::Parser;
use identity::ledger::Op;
use ring::signature::{ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair, KeyPair};
use rustls_pki_types::pem::PemObject;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Transactions in the throughput phase.
    #[arg(long, default_value_t = 100_000)]
    txs: usize,
    /// Transactions per request.
    #[arg(long, default_value_t = 500)]
    batch: usize,
    /// Connections (each with one request in flight).
    #[arg(long, default_value_t = 4)]
    connections: usize,
    /// Seconds of the one-transaction-per-request phase.
    #[arg(long, default_value_t = 5)]
    latency_secs: u64,
    /// Clients of the one-transaction-per-request phase, each with one request in flight.
    #[arg(long, default_value_t = 8)]
    latency_clients: usize,
    /// City nodes hosting the subchain.
    #[arg(long, default_value_t = 1)]
    nodes: usize,
    /// Blocks a stopped follower must catch up on (with --nodes > 1; 0 skips it).
    #[arg(long, default_value_t = 5000)]
    catchup_blocks: usize,
    /// Orderers ordering the subchain (0: the city nodes order it themselves).
    #[arg(long, default_value_t = 0)]
    orderers: usize,
}

fn pct(v: &mut [f64], p: f64) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[((v.len() as f64 - 1.0) * p).round() as usize]
}

fn sign_all(signer: &TxSigner, from: usize, n: usize) -> Vec<Vec<u8>> {
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let chunk = n.div_ceil(threads);
    let subchain = identity::membership::SubchainId::parse("bench").unwrap();
    std::thread::scope(|s| {
        let hs: Vec<_> = (0..threads)
            .map(|t| {
                let subchain = &subchain;
                s.spawn(move || {
                    let lo = from + t * chunk;
                    let hi = (lo + chunk).min(from + n);
                    (lo..hi)
                        .map(|i| {
                            let ops = vec![Op::Put {
                                key: format!("key-{i:09}"),
                                value: format!("value {i}").into_bytes(),
                            }];
                            // Numbered nonces: the same run signs the same transactions.
                            signer
                                .sign_with_nonce(subchain, (i as u64).to_be_bytes().to_vec(), ops)
                                .unwrap()
                                .bytes
                        })
                        .collect::<Vec<_>>()
                })
            })
            .collect();
        hs.into_iter().flat_map(|h| h.join().unwrap()).collect()
    })
}

/// ECDSA P-256 verifications per second on all cores.
fn verify_rate(key: &EcdsaKeyPair) -> f64 {
    let rng = ring::rand::SystemRandom::new();
    let msgs: Vec<(Vec<u8>, Vec<u8>)> = (0..256u32)
        .map(|i| {
            let m = i.to_be_bytes().repeat(50);
            let s = key.sign(&rng, &m).unwrap().as_ref().to_vec();
            (m, s)
        })
        .collect();
    let public = key.public_key().as_ref().to_vec();
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let per = 8_000;
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..threads {
            s.spawn(|| {
                let pk = ring::signature::UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, &public);
                for i in 0..per {
                    let (m, sig) = &msgs[i % msgs.len()];
                    pk.verify(m, sig).unwrap();
                }
            });
        }
    });
    (threads * per) as f64 / t.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let mut ca = TestCa::start();
    let names: Vec<String> = (1..=args.nodes.max(1)).map(|i| format!("n{i}")).collect();
    let name_refs: Vec<&str> = names.iter().map(String::as_str).collect();
    let mut orderers = Vec::new();
    for i in 1..=args.orderers {
        orderers.push(TestNode::orderer(&mut ca, &format!("o{i}")).await);
    }
    let orderer_names: Vec<String> = orderers.iter().map(|o| o.name.clone()).collect();
    let mut nodes = if args.nodes > 1 {
        TestNode::cluster(&mut ca, &name_refs).await
    } else {
        vec![TestNode::start(&mut ca, "n1").await]
    };
    let admin = ca.admin();
    let writer = ca.participant("writer").await;
    ca.api(Some(&admin))
        .post(
            "/api/v1/subchains",
            &json!({ "id": "bench", "name": "Bench", "nodes": names, "orderers": orderer_names }),
        )
        .await
        .unwrap();
    // City nodes that follow orderers know no leader; the voters do.
    let voters = args.orderers == 0;
    ca.api(Some(&admin))
        .put("/api/v1/subchains/bench/members/writer", &json!({ "role": "writer" }))
        .await
        .unwrap();
    for n in &nodes {
        let api = n.api(&ca, &writer);
        bsn_tests::eventually("the nodes to admit the writer", Duration::from_secs(30), || async {
            api.get("/api/v1/subchains/bench", &[])
                .await
                .ok()
                .filter(|v| v["membership_revision"].as_u64() >= Some(2) && (!voters || v["leader"].is_string()))
        })
        .await;
    }
    let api = nodes[0].api(&ca, &writer);

    let signer = TxSigner::from_files(&writer.join("cert.pem"), &writer.join("key.pem")).unwrap();
    let pkcs8 = rustls_pki_types::PrivatePkcs8KeyDer::from_pem_file(writer.join("key.pem")).unwrap();
    let key = EcdsaKeyPair::from_pkcs8(
        &ECDSA_P256_SHA256_ASN1_SIGNING,
        pkcs8.secret_pkcs8_der(),
        &ring::rand::SystemRandom::new(),
    )
    .unwrap();
    eprintln!("signing {} transactions...", args.txs);
    let txs = Arc::new(sign_all(&signer, 0, args.txs));
    let baseline = verify_rate(&key);

    // Throughput: batches from several connections, each waiting for its batch's commit.
    let batches: Vec<Vec<Vec<u8>>> = txs.chunks(args.batch).map(|c| c.to_vec()).collect();
    let batches = Arc::new(std::sync::Mutex::new(batches.into_iter()));
    let t = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..args.connections {
        let api = nodes[c % nodes.len()].api(&ca, &writer);
        let batches = batches.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut committed = 0usize;
            loop {
                let Some(b) = batches.lock().unwrap().next() else { break };
                let t = Instant::now();
                let v = api
                    .post("/api/v1/subchains/bench/transactions", &submit_body(&b))
                    .await
                    .expect("batch committed");
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
                committed += v["results"].as_array().unwrap().len();
            }
            (committed, lat)
        }));
    }
    let mut committed = 0;
    let mut lat = Vec::new();
    for t in tasks {
        let (c, l) = t.await.unwrap();
        committed += c;
        lat.extend(l);
    }
    let secs = t.elapsed().as_secs_f64();
    let rate = committed as f64 / secs;
    let info = api.get("/api/v1/subchains/bench", &[]).await.unwrap();
    println!(
        "throughput: {committed} signed transactions committed in {secs:.2} s = {rate:.0} tx/s \
         ({} orderer(s), {} city node(s), {} connections, {} per request; {} blocks on the chain; request latency p50 {:.1} ms, p99 {:.1} ms)",
        orderers.len(),
        nodes.len(),
        args.connections,
        args.batch,
        info["height"].as_u64().unwrap_or(0) + 1,
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99)
    );
    println!(
        "baseline: ECDSA P-256 verification on all cores {baseline:.0}/s; ratio {:.2}",
        rate / baseline
    );

    // Latency: one transaction per request from --latency-clients concurrent clients.
    let single = Arc::new(sign_all(&signer, args.txs, 200_000.min(args.txs.max(20_000))));
    let next = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let until = Instant::now() + Duration::from_secs(args.latency_secs);
    let mut tasks = Vec::new();
    for c in 0..args.latency_clients {
        let api = nodes[c % nodes.len()].api(&ca, &writer);
        let (single, next) = (single.clone(), next.clone());
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            while Instant::now() < until {
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let Some(tx) = single.get(i) else { break };
                let t = Instant::now();
                api.post(
                    "/api/v1/subchains/bench/transactions",
                    &submit_body(std::slice::from_ref(tx)),
                )
                .await
                .expect("committed");
                lat.push(t.elapsed().as_secs_f64() * 1000.0);
            }
            lat
        }));
    }
    let t = Instant::now();
    let mut lat = Vec::new();
    for task in tasks {
        lat.extend(task.await.unwrap());
    }
    let secs = t.elapsed().as_secs_f64();
    println!(
        "one transaction per request, {} clients ({} orderer(s), {} city node(s)): {:.0} tx/s, submit-to-commit latency p50 {:.2} ms, p99 {:.2} ms ({} transactions)",
        args.latency_clients,
        orderers.len(),
        nodes.len(),
        lat.len() as f64 / secs,
        pct(&mut lat, 0.5),
        pct(&mut lat, 0.99),
        lat.len()
    );
    if nodes.len() > 1 && args.catchup_blocks > 0 {
        // A follower stops; blocks are written without it (one transaction per block: a lone
        // sequential writer); it restarts and is timed until its height matches.
        // With orderers, a city node stops and another takes the writes.
        let (fi, li) = if voters {
            let leader = api.get("/api/v1/subchains/bench", &[]).await.unwrap()["leader"]
                .as_str()
                .unwrap()
                .to_string();
            (
                names.iter().position(|n| *n != leader).unwrap(),
                names.iter().position(|n| *n == leader).unwrap(),
            )
        } else {
            (names.len() - 1, 0)
        };
        nodes[fi].kill();
        let lapi = nodes[li].api(&ca, &writer);
        // Eight writers (the node's cap per identity) keep one-transaction requests in flight
        // until the chain has grown by --catchup-blocks blocks (each block holds the few
        // transactions queued when it was cut).
        let height_of = |api: bsn_api::client::Api| async move {
            api.get("/api/v1/subchains/bench", &[]).await.unwrap()["height"]
                .as_u64()
                .unwrap()
        };
        let goal = height_of(lapi.clone()).await + args.catchup_blocks as u64;
        let t = Instant::now();
        let next = Arc::new(std::sync::atomic::AtomicUsize::new(10_000_000));
        let done = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let signer = Arc::new(TxSigner::from_files(&writer.join("cert.pem"), &writer.join("key.pem")).unwrap());
        let mut writers = Vec::new();
        for _ in 0..8 {
            let (lapi, signer, next, done) = (lapi.clone(), signer.clone(), next.clone(), done.clone());
            writers.push(tokio::spawn(async move {
                let subchain = identity::membership::SubchainId::parse("bench").unwrap();
                while !done.load(std::sync::atomic::Ordering::Relaxed) {
                    let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    let ops = vec![Op::Put {
                        key: format!("key-{i:09}"),
                        value: format!("value {i}").into_bytes(),
                    }];
                    let tx = signer.sign(&subchain, ops).unwrap().bytes;
                    lapi.post("/api/v1/subchains/bench/transactions", &submit_body(&[tx]))
                        .await
                        .expect("committed without the stopped node");
                }
            }));
        }
        while height_of(lapi.clone()).await < goal {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        done.store(true, std::sync::atomic::Ordering::Relaxed);
        for w in writers {
            w.await.unwrap();
        }
        let write_secs = t.elapsed().as_secs_f64();
        let written = next.load(std::sync::atomic::Ordering::Relaxed) - 10_000_000;
        let target = height_of(lapi.clone()).await;
        nodes[fi].restart();
        let t = Instant::now();
        let fapi = nodes[fi].api(&ca, &writer);
        bsn_tests::eventually("the follower to catch up", Duration::from_secs(1800), || async {
            fapi.get("/api/v1/subchains/bench", &[])
                .await
                .ok()
                .filter(|v| v["height"].as_u64() >= Some(target))
        })
        .await;
        let secs = t.elapsed().as_secs_f64();
        // /metrics is for operators: read it with the follower's own node certificate.
        let operator = nodes[fi].api(&ca, &nodes[fi].dir);
        let metrics = String::from_utf8(operator.get_bytes("/metrics").await.unwrap()).unwrap();
        let snapshots = metrics
            .lines()
            .find_map(|l| l.strip_prefix("bsn_node_snapshots_installed_total "))
            .unwrap_or("?")
            .to_string();
        let a = lapi
            .get(&format!("/api/v1/subchains/bench/blocks/{target}"), &[])
            .await
            .unwrap();
        let b = fapi
            .get(&format!("/api/v1/subchains/bench/blocks/{target}"), &[])
            .await
            .unwrap();
        assert_eq!(a["hash"], b["hash"], "the follower's chain matches the leader's");
        // Past 6,000 blocks the leader has purged its log behind a snapshot (every 5,000 entries,
        // keeping 1,000): the follower must have caught up by installing it.
        if voters && args.catchup_blocks >= 6000 {
            assert!(
                snapshots.parse::<u64>().is_ok_and(|n| n >= 1),
                "the follower should have installed a snapshot (got {snapshots})"
            );
        }
        println!(
            "catch-up: {} blocks ({written} transactions) written in {write_secs:.1} s while a follower was down; after its restart it reached height {target} in {secs:.2} s ({:.0} blocks/s; snapshots installed: {snapshots})",
            args.catchup_blocks,
            args.catchup_blocks as f64 / secs
        );
    }
    drop(nodes);
    drop(orderers);
    ca.kill_all();
}
