//! Issuance throughput over HTTPS: a real `ca-server` (SQLite by default, PostgreSQL with
//! `BSN_TEST_DATABASE=postgres`), concurrent mTLS clients renewing with CSRs prepared beforehand,
//! every certificate durably committed before its response. Prints certificates/second next to
//! the single-core ECDSA P-256 sign+verify rate (ring) measured in the same run.
//!
//! `cargo run --release -p bsn-tests --bin bench-issuance -- [--requests N] [--concurrency N] [--connections N]`

use std::sync::Arc;
use std::time::{Duration, Instant};

use bsn_tests::TestCa;
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Certificates to issue in the measured run.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// TLS connections (HTTP/2) the requests are spread over.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// Also measure enrollment with one-time secrets (argon2id-bound) with this many identities.
    #[arg(long, default_value_t = 200)]
    enrollments: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)]
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    eprintln!("measuring the crypto baseline (2 s, one core)...");
    let baseline = bsn_tests::sign_verify_rate();

    eprintln!("starting a CA on {}...", bsn_tests::backend());
    let mut ca = TestCa::start();
    let holder = ca.participant("bench").await;
    eprintln!("preparing {} CSRs...", args.requests + 1000);
    let bodies: Vec<Vec<u8>> = (0..args.requests + 1000)
        .map(|_| {
            let csr = bsn_tests::new_csr();
            serde_json::to_vec(&serde_json::json!({ "csr": csr })).unwrap()
        })
        .collect();
    let bundle = std::fs::read(&ca.bundle).unwrap();
    let cert = std::fs::read(holder.join("cert.pem")).unwrap();
    let key = std::fs::read(holder.join("key.pem")).unwrap();
    let clients: Vec<reqwest::Client> = (0..args.connections)
        .map(|_| {
            let tls = bsn_api::client::tls_config(&bundle, Some((&cert, &key))).unwrap();
            reqwest::Client::builder()
                .tls_backend_preconfigured(tls)
                .build()
                .unwrap()
        })
        .collect();
    let url = format!("{}/api/v1/renew", ca.url);

    let run = |bodies: Vec<Vec<u8>>| {
        let clients = clients.clone();
        let url = url.clone();
        async move {
            let queue = Arc::new(std::sync::Mutex::new(bodies));
            let start = Instant::now();
            let mut tasks = Vec::new();
            for w in 0..args.concurrency {
                let client = clients[w % clients.len()].clone();
                let (queue, url) = (queue.clone(), url.clone());
                tasks.push(tokio::spawn(async move {
                    let mut lat = Vec::new();
                    loop {
                        let Some(body) = queue.lock().unwrap().pop() else {
                            return lat;
                        };
                        let t = Instant::now();
                        let resp = client
                            .post(&url)
                            .header("content-type", "application/json")
                            .body(body)
                            .send()
                            .await
                            .unwrap();
                        assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap_or_default());
                        resp.bytes().await.unwrap();
                        lat.push(t.elapsed());
                    }
                }));
            }
            let mut all = Vec::new();
            for t in tasks {
                all.extend(t.await.unwrap());
            }
            (start.elapsed(), all)
        }
    };
    let mut bodies = bodies;
    let measured = bodies.split_off(1000);
    eprintln!("warming up with 1000 renewals...");
    run(bodies).await;
    eprintln!(
        "issuing {} certificates with {} in flight over {} connections...",
        args.requests, args.concurrency, args.connections
    );
    let (elapsed, mut lat) = run(measured).await;
    lat.sort();
    let rate = args.requests as f64 / elapsed.as_secs_f64();
    println!("backend: {}", bsn_tests::backend());
    println!(
        "issued: {} certificates in {:.2} s (durable, one transaction per batch)",
        args.requests,
        elapsed.as_secs_f64()
    );
    println!("throughput: {rate:.0} certificates/s");
    println!(
        "latency: p50 {:.1} ms, p99 {:.1} ms",
        percentile(&lat, 0.5).as_secs_f64() * 1e3,
        percentile(&lat, 0.99).as_secs_f64() * 1e3
    );
    println!("baseline: {baseline:.0} ECDSA P-256 sign+verify pairs/s on one core (ring)");
    println!(
        "ratio: {:.2} certificates per single-core sign+verify pair",
        rate / baseline
    );
    // /metrics is for administrators and auditors.
    let admin = ca.admin();
    let metrics = String::from_utf8(ca.api(Some(&admin)).get_bytes("/metrics").await.unwrap()).unwrap();
    let metric = |name: &str| bsn_tests::metric_value(&metrics, name);
    let (batches, certs, secs) = (
        metric("bsn_ca_issuance_batches_total"),
        metric("bsn_ca_certificates_issued_total"),
        metric("bsn_ca_issuance_batch_seconds_total"),
    );
    println!(
        "batching: {batches:.0} batches, {:.1} certificates per batch, {:.2} ms per batch transaction",
        certs / batches.max(1.0),
        secs * 1e3 / batches.max(1.0)
    );
    eprintln!("auditing the whole log with bsn audit verify...");
    let out = std::process::Command::new(bsn_tests::bin("bsn"))
        .args(["audit", "verify", "--log-vkey"])
        .arg(ca.data_dir().join("log.vkey"))
        .args(["--ca", &ca.url, "--ca-bundle"])
        .arg(&ca.bundle)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "audit failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        println!("audit: {line}");
    }
    if args.enrollments > 0 {
        eprintln!("registering {} identities for the enrollment run...", args.enrollments);
        let admin = ca.admin();
        let admin_api = ca.api(Some(&admin));
        let mut secrets = Vec::new();
        for i in 0..args.enrollments {
            let v = admin_api
                .post("/api/v1/identities", &serde_json::json!({ "id": format!("e{i}") }))
                .await
                .unwrap();
            secrets.push((format!("e{i}"), v["secret"].as_str().unwrap().to_string()));
        }
        let anon = ca.api(None);
        let start = Instant::now();
        let tasks: Vec<_> = secrets
            .into_iter()
            .zip(bodies_for_enroll(args.enrollments))
            .map(|((id, secret), csr)| {
                let anon = anon.clone();
                tokio::spawn(async move {
                    anon.post(
                        "/api/v1/enroll",
                        &serde_json::json!({ "id": id, "secret": secret, "csr": csr }),
                    )
                    .await
                    .unwrap();
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let e = start.elapsed().as_secs_f64();
        println!(
            "enrollment with one-time secrets: {} in {e:.2} s, {:.0}/s (bound by argon2id verification, OWASP parameters)",
            args.enrollments,
            args.enrollments as f64 / e
        );
    }
    ca.kill_all();
}

fn bodies_for_enroll(n: usize) -> Vec<String> {
    (0..n).map(|_| bsn_tests::new_csr()).collect()
}
