//! Full mTLS handshakes per second: the ledger node next to nginx with the same certificates on
//! the same machine, driven by the same client.
//!
//! Each connection is a full TLS 1.3 handshake with a client certificate (the client keeps no
//! sessions and neither server offers resumption), then one HTTP/1.1 request and close. On the
//! node the request is a subchain's chain info, so every connection pays the revocation check
//! (in the handshake) and the membership check (per request); nginx verifies the client
//! certificate chain against the CA bundle (`ssl_verify_client on`) and checks it against the
//! CA's CRLs (`ssl_crl` with `/api/v1/crls.pem`: OpenSSL wants one from every CA in the chain,
//! root included, and this CA publishes both), then answers 200. Both servers refuse a revoked
//! certificate; nginx still does less per connection (no membership check). Rounds alternate
//! between the two servers; the best round of each is reported, with the server's CPU time per
//! handshake read from `/proc` (the node's process; nginx's master and its workers), next to the
//! cryptographic cost of a full handshake timed in the same run.
//!
//! `cargo run --release -p bsn-tests --bin bench-handshake -- [--secs 5] [--rounds 2] [--clients 16]`

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bsn_tests::{TestCa, TestNode};
use clap::Parser;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

#[derive(Parser)]
struct Args {
    /// Seconds per round.
    #[arg(long, default_value_t = 5)]
    secs: u64,
    /// Rounds per server.
    #[arg(long, default_value_t = 2)]
    rounds: usize,
    /// Concurrent client connections.
    #[arg(long, default_value_t = 16)]
    clients: usize,
}

fn client_config(bundle: &Path, who: &Path) -> Arc<rustls::ClientConfig> {
    let mut roots = rustls::RootCertStore::empty();
    for c in CertificateDer::pem_file_iter(bundle).unwrap() {
        roots.add(c.unwrap()).unwrap();
    }
    let chain: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(who.join("cert.pem"))
        .unwrap()
        .map(Result::unwrap)
        .collect();
    let key = PrivateKeyDer::from_pem_file(who.join("key.pem")).unwrap();
    let mut cfg = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_root_certificates(roots)
        .with_client_auth_cert(chain, key)
        .unwrap();
    cfg.resumption = rustls::client::Resumption::disabled();
    cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    Arc::new(cfg)
}

async fn one(cfg: Arc<rustls::ClientConfig>, addr: &str, path: &str) -> bool {
    let Ok(tcp) = tokio::net::TcpStream::connect(addr).await else {
        return false;
    };
    let _ = tcp.set_nodelay(true);
    let conn = tokio_rustls::TlsConnector::from(cfg);
    let Ok(mut tls) = conn.connect(ServerName::try_from("localhost").unwrap(), tcp).await else {
        return false;
    };
    let req = format!("GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n");
    if tls.write_all(req.as_bytes()).await.is_err() {
        return false;
    }
    let mut buf = Vec::with_capacity(1024);
    let _ = tls.read_to_end(&mut buf).await;
    buf.starts_with(b"HTTP/1.1 200")
}

/// CPU seconds of `pid` and its direct children (nginx's workers).
fn tree_cpu(pid: u32) -> f64 {
    let mut total = bsn_tests::cpu_secs(&pid.to_string(), false);
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let name = entry.file_name();
        let Some(child) = name.to_str().filter(|n| n.bytes().all(|b| b.is_ascii_digit())) else {
            continue;
        };
        let stat = std::fs::read_to_string(entry.path().join("stat")).unwrap_or_default();
        let ppid = stat
            .rsplit_once(')')
            .and_then(|(_, r)| r.split_whitespace().nth(1))
            .and_then(|p| p.parse::<u32>().ok());
        if ppid == Some(pid) {
            total += bsn_tests::cpu_secs(child, false);
        }
    }
    total
}

/// The cryptography of one full TLS 1.3 handshake with client authentication, on the server's
/// side, in microseconds on one core: an ECDHE P-256 key share (generate + agree), the server's
/// CertificateVerify signature, and three ECDSA verifications (the client's CertificateVerify
/// and its two-certificate chain).
fn handshake_crypto_us() -> f64 {
    use ring::{agreement, rand, signature};
    let rng = rand::SystemRandom::new();
    let alg = &signature::ECDSA_P256_SHA256_ASN1_SIGNING;
    let pkcs8 = signature::EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    let kp = signature::EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
    let public = signature::UnparsedPublicKey::new(
        &signature::ECDSA_P256_SHA256_ASN1,
        signature::KeyPair::public_key(&kp).as_ref().to_vec(),
    );
    let peer = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng).unwrap();
    let peer_public = peer.compute_public_key().unwrap();
    let msg = [7u8; 256];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        let mine = agreement::EphemeralPrivateKey::generate(&agreement::ECDH_P256, &rng).unwrap();
        let _ = mine.compute_public_key().unwrap();
        agreement::agree_ephemeral(
            mine,
            &agreement::UnparsedPublicKey::new(&agreement::ECDH_P256, peer_public.as_ref()),
            |_| (),
        )
        .unwrap();
        let sig = kp.sign(&rng, &msg).unwrap();
        for _ in 0..3 {
            public.verify(&msg, sig.as_ref()).unwrap();
        }
        n += 1;
    }
    start.elapsed().as_secs_f64() * 1e6 / n as f64
}

/// One round: handshakes per second, failures, and the server's CPU microseconds per handshake.
async fn round(
    cfg: &Arc<rustls::ClientConfig>,
    addr: &str,
    path: &str,
    secs: u64,
    clients: usize,
    server: u32,
) -> (f64, u64, f64) {
    let ok = Arc::new(AtomicU64::new(0));
    let failed = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let (cfg, ok, failed, stop) = (cfg.clone(), ok.clone(), failed.clone(), stop.clone());
        let (addr, path) = (addr.to_string(), path.to_string());
        tasks.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if one(cfg.clone(), &addr, &path).await {
                    ok.fetch_add(1, Ordering::Relaxed);
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
            }
        }));
    }
    let cpu = tree_cpu(server);
    let t = Instant::now();
    tokio::time::sleep(Duration::from_secs(secs)).await;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        let _ = t.await;
    }
    let done = ok.load(Ordering::Relaxed);
    (
        done as f64 / t.elapsed().as_secs_f64(),
        failed.load(Ordering::Relaxed),
        (tree_cpu(server) - cpu) * 1e6 / done.max(1) as f64,
    )
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let mut ca = TestCa::start();
    let node = TestNode::start(&mut ca, "n1").await;
    let admin = ca.admin();
    let client = ca.participant("client").await;
    // Some revoked certificates, so both servers check against a non-empty revocation set.
    for i in 0..20 {
        let d = ca.participant(&format!("gone{i}")).await;
        let serial = identity::profile::check_leaf(&CertificateDer::from_pem_file(d.join("cert.pem")).unwrap())
            .unwrap()
            .serial_hex;
        ca.api(Some(&admin))
            .post(&format!("/api/v1/certificates/{serial}/revoke"), &json!({}))
            .await
            .unwrap();
    }
    ca.api(Some(&admin))
        .post(
            "/api/v1/subchains",
            &json!({ "id": "bench", "name": "Bench", "nodes": ["n1"] }),
        )
        .await
        .unwrap();
    ca.api(Some(&admin))
        .put("/api/v1/subchains/bench/members/client", &json!({ "role": "reader" }))
        .await
        .unwrap();
    let api = node.api(&ca, &client);
    bsn_tests::eventually("the node to admit the client", Duration::from_secs(10), || async {
        api.get("/api/v1/subchains/bench", &[]).await.ok()
    })
    .await;

    // nginx with the node's certificate and key, the CA bundle and every CRL of the chain.
    let dir = tempfile::tempdir().unwrap();
    std::fs::write(
        dir.path().join("crls.pem"),
        ca.api(None).get_bytes("/api/v1/crls.pem").await.unwrap(),
    )
    .unwrap();
    let port = bsn_tests::free_port();
    let conf = format!(
        "worker_processes auto;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 4096; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n  fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n\
         server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {n}/cert.pem;\n    ssl_certificate_key {n}/key.pem;\n\
         ssl_client_certificate {b};\n    ssl_verify_client on;\n    ssl_verify_depth 3;\n    ssl_crl {d}/crls.pem;\n\
         ssl_session_cache off;\n    ssl_session_tickets off;\n    ssl_protocols TLSv1.2 TLSv1.3;\n\
         location / {{ return 200 \"ok\"; }}\n  }}\n}}\n",
        d = dir.path().display(),
        n = node.dir.display(),
        b = ca.bundle.display(),
    );
    std::fs::write(dir.path().join("nginx.conf"), conf).unwrap();
    let mut nginx = std::process::Command::new("nginx")
        .args(["-p"])
        .arg(dir.path())
        .args(["-e"])
        .arg(dir.path().join("error.log"))
        .args(["-c"])
        .arg(dir.path().join("nginx.conf"))
        .spawn()
        .expect("nginx (apt-get install nginx-light)");
    let nginx_addr = format!("127.0.0.1:{port}");
    let cfg = client_config(&ca.bundle, &client);
    bsn_tests::eventually("nginx to answer", Duration::from_secs(10), || {
        let (cfg, a) = (cfg.clone(), nginx_addr.clone());
        async move { one(cfg, &a, "/").await.then_some(()) }
    })
    .await;
    let node_addr = node.url.trim_start_matches("https://").to_string();
    assert!(one(cfg.clone(), &node_addr, "/api/v1/subchains/bench").await);
    // Both refuse a revoked certificate.
    let gone = client_config(&ca.bundle, &ca.dir.path().join("gone0"));
    assert!(!one(gone.clone(), &node_addr, "/api/v1/subchains/bench").await);
    assert!(
        !one(gone, &nginx_addr, "/").await,
        "nginx with ssl_crl refuses a revoked certificate"
    );

    let crypto = handshake_crypto_us();
    let node_pid = node.pid().expect("the node runs");
    let ((mut best_node, mut node_cpu), (mut best_nginx, mut nginx_cpu)) = ((0f64, 0f64), (0f64, 0f64));
    for r in 0..args.rounds {
        let (n, nf, nc) = round(
            &cfg,
            &node_addr,
            "/api/v1/subchains/bench",
            args.secs,
            args.clients,
            node_pid,
        )
        .await;
        let (g, gf, gc) = round(&cfg, &nginx_addr, "/", args.secs, args.clients, nginx.id()).await;
        println!(
            "round {}: ledger-node {n:.0}/s ({nf} failed, {nc:.0} us CPU each), nginx {g:.0}/s ({gf} failed, {gc:.0} us CPU each)",
            r + 1
        );
        if n > best_node {
            (best_node, node_cpu) = (n, nc);
        }
        if g > best_nginx {
            (best_nginx, nginx_cpu) = (g, gc);
        }
    }
    println!(
        "full mTLS handshakes + one request per connection, {} clients: ledger-node {best_node:.0}/s, nginx {best_nginx:.0}/s; ratio {:.2}",
        args.clients,
        best_node / best_nginx
    );
    println!(
        "server CPU per handshake: ledger-node {node_cpu:.0} us, nginx {nginx_cpu:.0} us (nginx / node {:.2}); \
         the handshake's cryptography costs {crypto:.0} us on one core",
        nginx_cpu / node_cpu.max(1.0)
    );
    // SIGTERM to the master stops its workers too (SIGKILL would leave them running).
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &nginx.id().to_string()])
        .status();
    let _ = nginx.wait();
    drop(node);
    ca.kill_all();
}
