//! Issuance with the issuing key in a PKCS#11 token (SoftHSM2) next to the same with the key
//! sealed in a file, in one run: two CAs, the same prepared CSRs, concurrent mTLS renewals, every
//! certificate durable before its answer. Prints both rates and their ratio. Needs SoftHSM2
//! (`apt-get install softhsm2`).
//!
//! `cargo run --release -p bsn-tests --bin bench-hsm -- [--requests 4000] [--concurrency 64]`

use std::sync::Arc;
use std::time::Instant;

use bsn_tests::TestCa;
use bsn_tests::softhsm::{MODULE, PIN, SoftHsm};
use clap::Parser;

#[derive(Parser)]
struct Args {
    /// Certificates each CA issues in its measured run.
    #[arg(long, default_value_t = 4000)]
    requests: usize,
    /// Requests in flight at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
}

/// Renewals per second against `ca` (after 200 to warm up).
async fn rate(ca: &mut TestCa, args: &Args) -> f64 {
    let holder = ca.participant("bench").await;
    let bundle = std::fs::read(&ca.bundle).unwrap();
    let cert = std::fs::read(holder.join("cert.pem")).unwrap();
    let key = std::fs::read(holder.join("key.pem")).unwrap();
    let clients: Vec<reqwest::Client> = (0..4)
        .map(|_| {
            let tls = bsn_api::client::tls_config(&bundle, Some((&cert, &key))).unwrap();
            reqwest::Client::builder()
                .tls_backend_preconfigured(tls)
                .build()
                .unwrap()
        })
        .collect();
    let url = format!("{}/api/v1/renew", ca.url);
    let body = |_| serde_json::to_vec(&serde_json::json!({ "csr": bsn_tests::new_csr() })).unwrap();
    let mut secs = 0.0;
    for n in [200, args.requests] {
        let queue = Arc::new(std::sync::Mutex::new((0..n).map(body).collect::<Vec<_>>()));
        let start = Instant::now();
        let mut tasks = Vec::new();
        for w in 0..args.concurrency {
            let (client, queue, url) = (clients[w % clients.len()].clone(), queue.clone(), url.clone());
            tasks.push(tokio::spawn(async move {
                loop {
                    let Some(b) = queue.lock().unwrap().pop() else { return };
                    let resp = client
                        .post(&url)
                        .header("content-type", "application/json")
                        .body(b)
                        .send()
                        .await
                        .unwrap();
                    assert_eq!(resp.status(), 201, "{}", resp.text().await.unwrap_or_default());
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
        secs = start.elapsed().as_secs_f64();
    }
    args.requests as f64 / secs
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let hsm = SoftHsm::new(&["bench"]);
    let conf = hsm.conf.to_str().unwrap().to_string();
    let mut file_ca = TestCa::start();
    let mut token_ca = TestCa::start_custom(
        &["--pkcs11-module", MODULE, "--pkcs11-token", "bench"],
        &[("SOFTHSM2_CONF", conf.as_str()), ("BSN_PKCS11_PIN", PIN)],
    );
    let file_a = rate(&mut file_ca, &args).await;
    let token = rate(&mut token_ca, &args).await;
    println!(
        "issuance ({} renewals, {} in flight, {}): key in a file {file_a:.0}/s, key in SoftHSM2 {token:.0}/s; ratio {:.2}",
        args.requests,
        args.concurrency,
        bsn_tests::backend(),
        token / file_a
    );
}
