//! Revocation latency through the change feed: a node follows `/api/v1/feed/stream` (server-sent
//! events over HTTPS/mTLS) while an administrator revokes N certificates one after another; for
//! each, the time from the revoke call returning to the event arriving at the node. Prints
//! p50/p99 next to the revoke call's own latency (a durable transaction) measured in the run.
//!
//! `cargo run --release -p bsn-tests --bin bench-feed -- [--revocations 1000]`

use std::time::{Duration, Instant};

use bsn_tests::TestCa;
use clap::Parser;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Revocations to time.
    #[arg(long, default_value_t = 1000)]
    revocations: usize,
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let mut ca = TestCa::start();
    let admin = ca.admin();
    let p = ca.participant("victim").await;
    let secret = ca
        .register("n1", json!({ "type": "node", "dns_names": ["n1.test"] }))
        .await;
    let node = ca.dir.path().join("n1");
    assert!(ca.bsn_enroll("n1", &secret, &node).status.success());

    eprintln!("issuing {} certificates to revoke...", args.revocations);
    let holder = ca.api(Some(&p));
    let mut serials = Vec::with_capacity(args.revocations);
    for _ in 0..args.revocations {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let v = holder.post("/api/v1/renew", &json!({ "csr": csr })).await.unwrap();
        serials.push(v["serial"].as_str().unwrap().to_string());
    }

    let mut stream = ca.api(Some(&node)).events("/api/v1/feed/stream", &[]).await.unwrap();
    let admin_api = ca.api(Some(&admin));
    let mut feed_lat = Vec::with_capacity(args.revocations);
    let mut call_lat = Vec::with_capacity(args.revocations);
    for serial in &serials {
        let t = Instant::now();
        admin_api
            .post(&format!("/api/v1/certificates/{serial}/revoke"), &json!({}))
            .await
            .unwrap();
        let returned = Instant::now();
        call_lat.push(returned - t);
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("event within 10 s")
                .unwrap()
                .expect("stream open");
            if ev.event == "revocation" && ev.data.contains(serial.as_str()) {
                break;
            }
        }
        feed_lat.push(returned.elapsed());
    }
    feed_lat.sort();
    call_lat.sort();
    let pct = |v: &[Duration], p: f64| v[((v.len() as f64 * p) as usize).min(v.len() - 1)];
    println!("backend: {}", bsn_tests::backend());
    println!(
        "revocation -> node over the feed stream ({} revocations): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        feed_lat.len(),
        ms(pct(&feed_lat, 0.5)),
        ms(pct(&feed_lat, 0.99)),
        ms(*feed_lat.last().unwrap())
    );
    println!(
        "baseline: the revoke call itself (durable transaction, CRL re-signed): p50 {:.2} ms, p99 {:.2} ms",
        ms(pct(&call_lat, 0.5)),
        ms(pct(&call_lat, 0.99))
    );
    ca.kill_all();
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
