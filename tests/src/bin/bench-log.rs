//! Issuance-log read path at scale: a real CA whose log is grown to N entries (synthetic leaves
//! appended with the log's own key and sequencer), restarted (timing its start-up self-check over
//! every leaf), then inclusion proofs fetched over HTTPS for random leaves. Prints p50/p99 latency
//! next to the time of one SHA-256 of a 64-byte message measured in the same run.
//!
//! `cargo run --release -p bsn-tests --bin bench-log -- [--entries 1000000] [--proofs 2000]`

use std::time::{Duration, Instant};

use bsn_tests::TestCa;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Log size to build.
    #[arg(long, default_value_t = 1_000_000)]
    entries: u64,
    /// Inclusion proofs to fetch.
    #[arg(long, default_value_t = 2000)]
    proofs: usize,
}

#[tokio::main(flavor = "current_thread")]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let mut ca = TestCa::start();
    ca.kill_all();

    eprintln!("appending {} leaves to the log...", args.entries);
    let signer = ca.log_signer();
    let db = ca.store().await;
    let started = Instant::now();
    let mut added = 0u64;
    while added < args.entries {
        let n = (args.entries - added).min(4096);
        let leaves: Vec<ca_server::log::NewLeaf> = (0..n)
            .map(|i| ca_server::log::NewLeaf {
                bytes: format!("synthetic leaf {}", added + i).into_bytes(),
                kind: "issuance",
                serial: format!("{:032x}", added + i),
                identity: "bench".into(),
                at: 0,
            })
            .collect();
        let mut tx = db.begin().await.unwrap();
        ca_server::log::append(&mut tx, db.backend, &signer, &leaves, false)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        added += n;
    }
    let build = started.elapsed();
    db.close().await;
    let t = Instant::now();
    ca.restart();
    let restart = t.elapsed();

    let api = ca.api(None);
    let note = String::from_utf8(api.get_bytes("/log/checkpoint").await.unwrap()).unwrap();
    let size: u64 = note.lines().nth(1).unwrap().parse().unwrap();
    assert!(size > added);
    let mut lat = Vec::with_capacity(args.proofs);
    let mut x = 0x9e3779b97f4a7c15u64;
    for _ in 0..args.proofs {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let index = x % size;
        let t = Instant::now();
        let v = api
            .get("/api/v1/log/proof/inclusion", &[("index", index.to_string())])
            .await
            .unwrap();
        lat.push(t.elapsed());
        assert_eq!(v["tree_size"].as_u64(), Some(size));
    }
    lat.sort();
    let pct = |p: f64| lat[((lat.len() as f64 * p) as usize).min(lat.len() - 1)];

    // The same proofs computed in this process straight from the database: the server's share.
    let db = ca.store().await;
    let mut conn = db.acquire().await.unwrap();
    let cache = ca_server::log::HashCache::default();
    let mut direct = Vec::with_capacity(args.proofs);
    for _ in 0..args.proofs {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        let index = x % size;
        let t = Instant::now();
        ca_server::log::latest(&mut conn).await.unwrap();
        ca_server::log::prove_inclusion(&mut conn, db.backend, &cache, size, index)
            .await
            .unwrap();
        direct.push(t.elapsed());
    }
    direct.sort();
    let dpct = |p: f64| direct[((direct.len() as f64 * p) as usize).min(direct.len() - 1)];
    drop(conn);
    db.close().await;

    let msg = [7u8; 64];
    let t = Instant::now();
    for _ in 0..1_000_000 {
        std::hint::black_box(ring::digest::digest(&ring::digest::SHA256, std::hint::black_box(&msg)));
    }
    let sha = t.elapsed() / 1_000_000;

    println!("backend: {}", bsn_tests::backend());
    println!("log size: {size} entries (built in {:.1} s)", build.as_secs_f64());
    println!(
        "restart with self-check over every leaf: {:.2} s",
        restart.as_secs_f64()
    );
    println!(
        "inclusion proof over HTTPS (one connection, sequential, {} proofs): p50 {:.2} ms, p99 {:.2} ms",
        args.proofs,
        ms(pct(0.5)),
        ms(pct(0.99))
    );
    println!(
        "  of which reading the database and computing the proof: p50 {:.2} ms, p99 {:.2} ms",
        ms(dpct(0.5)),
        ms(dpct(0.99))
    );
    println!(
        "baseline: one SHA-256 of 64 bytes = {:.3} us; p99 / SHA-256 = {:.0}",
        sha.as_secs_f64() * 1e6,
        pct(0.99).as_secs_f64() / sha.as_secs_f64()
    );
    ca.kill_all();
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
