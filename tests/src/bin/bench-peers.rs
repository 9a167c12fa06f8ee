//! Our servers beside their peers in one run, driven by the same load generator.
//!
//! Issuance: the same prepared P-256 CSRs are sent by closed-loop clients, each on its own
//! HTTP/1.1 keep-alive mTLS connection, to
//! - `ca-server` (renewal over mTLS; every certificate durably committed and logged before it is
//!   answered; SQLite, or PostgreSQL with `BSN_TEST_DATABASE=postgres`),
//! - `cfssl serve` with its SQLite certdb in WAL mode with `synchronous=FULL` (every insert
//!   fsynced, as our commits are; set in the data source, since the SQLite driver cfssl is built
//!   with defaults to `NORMAL`, which does not sync commits in WAL mode), and
//! - `cfssl serve` with no database (nothing stored).
//!
//! cfssl gets the same client certificate and requires it (`-mutual-tls-ca`). For each server
//! the runner reports certificates per second, latency, and the server's CPU time per
//! certificate read from `/proc/PID/stat`, next to the cryptographic cost of the work (one ECDSA
//! P-256 verification of the CSR and one signature, timed on one core in the same run). Each
//! figure is the median of `--runs`; the servers take turns within a run.
//!
//! Handshakes: runs `bench-handshake` (the ledger node beside nginx with `ssl_crl`) and prints
//! its summary.
//!
//! Needs `cfssl` (Debian `golang-cfssl`), `nginx` (`nginx-light`) and `python3`.
//! `cargo run --release -p bsn-tests --bin bench-peers -- [--requests N] [--clients 32,256] [--runs 3]`

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bsn_tests::TestCa;
use clap::Parser;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Certificates each server issues per measured run.
    #[arg(long, default_value_t = 20_000)]
    requests: usize,
    /// Closed-loop clients (one connection each); one measurement per value.
    #[arg(long, value_delimiter = ',', default_value = "32,256")]
    clients: Vec<usize>,
    /// Runs per server and client count (the median is reported).
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Skip the handshake comparison.
    #[arg(long)]
    no_handshakes: bool,
    /// Seconds per handshake round.
    #[arg(long, default_value_t = 5)]
    handshake_secs: u64,
    /// Handshake rounds per server (the best is reported).
    #[arg(long, default_value_t = 2)]
    handshake_rounds: usize,
}

/// One server under test.
struct Target {
    name: &'static str,
    url: String,
    pid: u32,
    /// The request body for one CSR.
    body: fn(&str) -> Vec<u8>,
    /// The status a successful issuance answers with.
    ok: u16,
}

/// What one run against one server measured.
#[derive(Clone, Copy, Default)]
struct Figures {
    rate: f64,
    p50_ms: f64,
    p99_ms: f64,
    cpu_us: f64,
    busy: f64,
    /// Requests answered with anything but success.
    failed: f64,
}

/// CPU seconds of a process's threads whose name starts with `prefix` (from `/proc`).
fn threads_cpu(pid: u32, prefix: &str) -> f64 {
    let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) else {
        return 0.0;
    };
    tasks
        .flatten()
        .filter(|t| std::fs::read_to_string(t.path().join("comm")).is_ok_and(|c| c.starts_with(prefix)))
        .map(|t| bsn_tests::cpu_secs(&format!("{pid}/task/{}", t.file_name().to_string_lossy()), false))
        .sum()
}

/// Total and idle jiffies of the whole machine (`/proc/stat`).
fn machine_jiffies() -> (u64, u64) {
    let stat = std::fs::read_to_string("/proc/stat").unwrap();
    let cpu: Vec<u64> = stat
        .lines()
        .next()
        .unwrap()
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    (cpu.iter().sum(), cpu[3] + cpu.get(4).copied().unwrap_or(0))
}

/// Milliseconds at percentile `p` of `sorted` (NaN if it is empty: every request failed).
fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * p) as usize).min(sorted.len() - 1)].as_secs_f64() * 1e3
}

/// Sends every CSR in `csrs` to `target` from `clients` closed-loop clients.
async fn load(target: &Target, tls: &rustls::ClientConfig, csrs: &[String], clients: usize) -> Figures {
    let queue = Arc::new(Mutex::new((0..csrs.len()).collect::<Vec<_>>()));
    let bodies: Arc<Vec<Vec<u8>>> = Arc::new(csrs.iter().map(|c| (target.body)(c)).collect());
    let cpu_before = bsn_tests::cpu_secs(&target.pid.to_string(), false);
    let jiffies_before = machine_jiffies();
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..clients {
        let client = reqwest::Client::builder()
            .tls_backend_preconfigured(tls.clone())
            .http1_only()
            .pool_max_idle_per_host(1)
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap();
        let (queue, bodies, url, ok) = (queue.clone(), bodies.clone(), target.url.clone(), target.ok);
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut failed = 0u64;
            loop {
                let Some(i) = queue.lock().unwrap().pop() else {
                    return (lat, failed);
                };
                let t = Instant::now();
                let resp = client
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(bodies[i].clone())
                    .send()
                    .await
                    .unwrap();
                let status = resp.status().as_u16();
                let text = resp.bytes().await.unwrap();
                if status == ok {
                    lat.push(t.elapsed());
                } else {
                    if failed == 0 {
                        eprintln!("  a request failed ({status}): {}", String::from_utf8_lossy(&text));
                    }
                    failed += 1;
                }
            }
        }));
    }
    let (mut lat, mut failed) = (Vec::new(), 0);
    for t in tasks {
        let (l, f) = t.await.unwrap();
        lat.extend(l);
        failed += f;
    }
    let elapsed = start.elapsed().as_secs_f64();
    let cpu = bsn_tests::cpu_secs(&target.pid.to_string(), false) - cpu_before;
    let jiffies_after = machine_jiffies();
    let total = (jiffies_after.0 - jiffies_before.0).max(1) as f64;
    let idle = (jiffies_after.1 - jiffies_before.1) as f64;
    lat.sort();
    Figures {
        rate: (csrs.len() as u64 - failed) as f64 / elapsed,
        p50_ms: percentile(&lat, 0.5),
        p99_ms: percentile(&lat, 0.99),
        cpu_us: cpu * 1e6 / (csrs.len() as u64 - failed).max(1) as f64,
        busy: 1.0 - idle / total,
        failed: failed as f64,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

/// A certificate and key signed by `ca` (or self-signed), written as PEM files.
fn write_cert(
    dir: &Path,
    name: &str,
    params: rcgen::CertificateParams,
    issuer: Option<(&rcgen::Certificate, &rcgen::KeyPair)>,
) -> (rcgen::Certificate, rcgen::KeyPair) {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let cert = match issuer {
        Some((c, k)) => params.signed_by(&key, &rcgen::Issuer::from_ca_cert_der(c.der(), k).unwrap()),
        None => params.self_signed(&key),
    }
    .unwrap();
    std::fs::write(dir.join(format!("{name}.pem")), cert.pem()).unwrap();
    std::fs::write(dir.join(format!("{name}-key.pem")), key.serialize_pem()).unwrap();
    (cert, key)
}

/// Starts `cfssl serve` in `dir` (with an SQLite certdb in WAL mode if `db`); returns the process
/// and its sign URL once it answers.
async fn start_cfssl(dir: &Path, client_ca: &Path, db: bool, tls: &rustls::ClientConfig) -> (Child, String) {
    let port = bsn_tests::free_port();
    let mut cmd = Command::new("cfssl");
    cmd.current_dir(dir)
        .args(["serve", "-address", "127.0.0.1", "-port", &port.to_string()])
        .args(["-ca", "ca.pem", "-ca-key", "ca-key.pem", "-config", "config.json"])
        .args([
            "-tls-cert",
            "server.pem",
            "-tls-key",
            "server-key.pem",
            "-loglevel",
            "4",
        ])
        .arg("-mutual-tls-ca")
        .arg(client_ca)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    if db {
        let file = dir.join("certs.db");
        let _ = std::fs::remove_file(&file);
        // cfssl's own SQLite schema (certdb/sqlite/migrations in its source), in WAL mode.
        let out = Command::new("python3")
            .arg("-c")
            .arg(
                "import sqlite3, sys\n\
                 c = sqlite3.connect(sys.argv[1])\n\
                 assert c.execute('PRAGMA journal_mode=WAL').fetchone()[0] == 'wal'\n\
                 c.executescript('''CREATE TABLE certificates (serial_number blob NOT NULL, \
                 authority_key_identifier blob NOT NULL, ca_label blob, status blob NOT NULL, reason int, \
                 expiry timestamp, revoked_at timestamp, pem blob NOT NULL, \
                 PRIMARY KEY(serial_number, authority_key_identifier)); \
                 CREATE TABLE ocsp_responses (serial_number blob NOT NULL, authority_key_identifier blob NOT NULL, \
                 body blob NOT NULL, expiry timestamp, PRIMARY KEY(serial_number, authority_key_identifier), \
                 FOREIGN KEY(serial_number, authority_key_identifier) REFERENCES certificates(serial_number, authority_key_identifier));''')\n\
                 c.commit()\n",
            )
            .arg(&file)
            .output()
            .expect("python3");
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        std::fs::write(
            dir.join("db.json"),
            json!({
                "driver": "sqlite3",
                // Writers queue for up to a minute rather than fail with "database is locked".
                "data_source": format!(
                    "file:{}?_journal_mode=WAL&_synchronous=FULL&_busy_timeout=60000",
                    file.display()
                ),
            })
            .to_string(),
        )
        .unwrap();
        cmd.args(["-db-config", "db.json"]);
    }
    let child = cmd.spawn().expect("cfssl (apt-get install golang-cfssl)");
    let url = format!("https://127.0.0.1:{port}/api/v1/cfssl/sign");
    let client = reqwest::Client::builder()
        .tls_backend_preconfigured(tls.clone())
        .build()
        .unwrap();
    let probe = cfssl_body(&bsn_tests::new_csr());
    bsn_tests::eventually("cfssl to sign", Duration::from_secs(20), || {
        let (client, url, probe) = (client.clone(), url.clone(), probe.clone());
        async move {
            let r = client.post(&url).body(probe).send().await.ok()?;
            (r.status() == 200).then_some(())
        }
    })
    .await;
    (child, url)
}

/// The CA's batch counters: batches, certificates, seconds in batch transactions.
async fn batching(api: &bsn_api::client::Api) -> [f64; 3] {
    let metrics = String::from_utf8(api.get_bytes("/metrics").await.unwrap()).unwrap();
    [
        "bsn_ca_issuance_batches_total",
        "bsn_ca_certificates_issued_total",
        "bsn_ca_issuance_batch_seconds_total",
    ]
    .map(|name| bsn_tests::metric_value(&metrics, name))
}

fn cfssl_body(csr: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({ "certificate_request": csr })).unwrap()
}

fn bsn_body(csr: &str) -> Vec<u8> {
    serde_json::to_vec(&json!({ "csr": csr })).unwrap()
}

/// Counts rows in cfssl's certdb (to show it stored what it signed).
fn cfssl_rows(dir: &Path) -> u64 {
    let out = Command::new("python3")
        .arg("-c")
        .arg("import sqlite3, sys; print(sqlite3.connect(sys.argv[1]).execute('SELECT count(*) FROM certificates').fetchone()[0])")
        .arg(dir.join("certs.db"))
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout).trim().parse().unwrap_or(0)
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    eprintln!("timing the cryptographic cost of one issuance (2 s, one core)...");
    let crypto_us = 1e6 / bsn_tests::sign_verify_rate();

    eprintln!("starting a CA on {}...", bsn_tests::backend());
    let mut ca = TestCa::start();
    let holder = ca.participant("bench").await;
    let our_tls = bsn_tests::client_tls(&ca, Some(&holder), true);
    let admin = ca.admin();
    let ours = ca.api(Some(&admin));

    // cfssl: its own CA, a server certificate for 127.0.0.1, and our participant's
    // certificate as the client's (cfssl trusts our trust bundle for client authentication).
    let peers = tempfile::tempdir().unwrap();
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cfssl bench CA");
    let (cfssl_ca, cfssl_ca_key) = write_cert(peers.path(), "ca", ca_params, None);
    let server_params = rcgen::CertificateParams::new(vec!["127.0.0.1".to_string()]).unwrap();
    write_cert(peers.path(), "server", server_params, Some((&cfssl_ca, &cfssl_ca_key)));
    std::fs::write(
        peers.path().join("config.json"),
        json!({ "signing": { "default": {
            "expiry": "24h",
            "usages": ["digital signature", "key agreement", "client auth", "server auth"]
        } } })
        .to_string(),
    )
    .unwrap();
    let mut cfssl_tls = {
        let mut roots = rustls::RootCertStore::empty();
        roots.add(cfssl_ca.der().clone()).unwrap();
        let chain = rustls_pki_types::pem::PemObject::pem_file_iter(holder.join("cert.pem"))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        let key = rustls_pki_types::pem::PemObject::from_pem_file(holder.join("key.pem")).unwrap();
        rustls::ClientConfig::builder()
            .with_root_certificates(roots)
            .with_client_auth_cert(chain, key)
            .unwrap()
    };
    cfssl_tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    let (mut cfssl_db, cfssl_db_url) = start_cfssl(peers.path(), &ca.bundle, true, &cfssl_tls).await;
    let nodb_dir = tempfile::tempdir().unwrap();
    for f in ["ca.pem", "ca-key.pem", "server.pem", "server-key.pem", "config.json"] {
        std::fs::copy(peers.path().join(f), nodb_dir.path().join(f)).unwrap();
    }
    let (mut cfssl_nodb, cfssl_nodb_url) = start_cfssl(nodb_dir.path(), &ca.bundle, false, &cfssl_tls).await;
    // Without its client certificate cfssl refuses, as our CA does: the comparison is mTLS on both.
    let anonymous = reqwest::Client::builder()
        .tls_backend_preconfigured({
            let mut roots = rustls::RootCertStore::empty();
            roots.add(cfssl_ca.der().clone()).unwrap();
            rustls::ClientConfig::builder()
                .with_root_certificates(roots)
                .with_no_client_auth()
        })
        .build()
        .unwrap();
    let refused = anonymous
        .post(&cfssl_nodb_url)
        .body(cfssl_body(&bsn_tests::new_csr()))
        .send()
        .await;
    assert!(
        refused.map(|r| !r.status().is_success()).unwrap_or(true),
        "cfssl signed for a client without a certificate"
    );

    let targets = [
        (
            Target {
                name: "bsn ca-server",
                url: format!("{}/api/v1/renew", ca.url),
                pid: ca.pid(),
                body: bsn_body,
                ok: 201,
            },
            &our_tls,
        ),
        (
            Target {
                name: "cfssl + SQLite WAL",
                url: cfssl_db_url,
                pid: cfssl_db.id(),
                body: cfssl_body,
                ok: 200,
            },
            &cfssl_tls,
        ),
        (
            Target {
                name: "cfssl, no database",
                url: cfssl_nodb_url,
                pid: cfssl_nodb.id(),
                body: cfssl_body,
                ok: 200,
            },
            &cfssl_tls,
        ),
    ];

    eprintln!("preparing {} CSRs...", args.requests);
    let csrs: Vec<String> = (0..args.requests).map(|_| bsn_tests::new_csr()).collect();
    eprintln!("warming up each server with 1000 requests...");
    for (t, tls) in &targets {
        load(t, tls, &csrs[..1000.min(csrs.len())], 32).await;
    }
    let rows_before = cfssl_rows(peers.path());

    let mut table = Vec::new();
    for &clients in &args.clients {
        let mut runs: Vec<Vec<Figures>> = vec![Vec::new(); targets.len()];
        for run in 0..args.runs {
            for (i, (t, tls)) in targets.iter().enumerate() {
                eprintln!(
                    "run {}/{}: {} with {clients} clients, {} CSRs...",
                    run + 1,
                    args.runs,
                    t.name,
                    csrs.len()
                );
                let before = if i == 0 { batching(&ours).await } else { [0.0; 3] };
                let db_cpu = threads_cpu(t.pid, "sqlx-sqlite");
                let f = load(t, tls, &csrs, clients).await;
                eprintln!("  {:.0}/s, p99 {:.1} ms, {:.0} us CPU/cert", f.rate, f.p99_ms, f.cpu_us);
                if i == 0 {
                    let after = batching(&ours).await;
                    let batches = (after[0] - before[0]).max(1.0);
                    eprintln!(
                        "  {:.1} certificates per batch, {:.2} ms per batch transaction, SQLite threads {:.0} us CPU/cert",
                        (after[1] - before[1]) / batches,
                        (after[2] - before[2]) * 1e3 / batches,
                        (threads_cpu(t.pid, "sqlx-sqlite") - db_cpu) * 1e6 / csrs.len() as f64
                    );
                }
                runs[i].push(f);
            }
        }
        for (i, (t, _)) in targets.iter().enumerate() {
            let m = |f: fn(&Figures) -> f64| median(runs[i].iter().map(f).collect());
            table.push((
                clients,
                t.name,
                Figures {
                    rate: m(|f| f.rate),
                    p50_ms: m(|f| f.p50_ms),
                    p99_ms: m(|f| f.p99_ms),
                    cpu_us: m(|f| f.cpu_us),
                    busy: m(|f| f.busy),
                    failed: runs[i].iter().map(|f| f.failed).sum(),
                },
            ));
        }
    }
    let stored = cfssl_rows(peers.path()) - rows_before;
    let failed_db: f64 = table
        .iter()
        .filter(|(_, n, _)| *n == "cfssl + SQLite WAL")
        .map(|(_, _, f)| f.failed)
        .sum();
    let expected = (args.clients.len() * args.runs * args.requests) as u64 - failed_db as u64;
    assert_eq!(stored, expected, "cfssl's certdb holds every certificate it signed");

    println!(
        "issuance: {} CSRs per run, median of {} runs, HTTP/1.1 keep-alive mTLS, one connection per client; backend {}",
        args.requests,
        args.runs,
        bsn_tests::backend()
    );
    println!(
        "{:<8} {:<22} {:>9} {:>8} {:>8} {:>13} {:>8} {:>8}",
        "clients", "server", "certs/s", "p50 ms", "p99 ms", "CPU us/cert", "busy", "failed"
    );
    for (clients, name, f) in &table {
        println!(
            "{clients:<8} {name:<22} {:>9.0} {:>8.1} {:>8.1} {:>13.0} {:>7.0}% {:>8.0}",
            f.rate,
            f.p50_ms,
            f.p99_ms,
            f.cpu_us,
            f.busy * 100.0,
            f.failed
        );
    }
    for &clients in &args.clients {
        let row = |name: &str| {
            table
                .iter()
                .find(|(c, n, _)| *c == clients && *n == name)
                .map(|(_, _, f)| *f)
                .unwrap()
        };
        let (ours, db, nodb) = (
            row("bsn ca-server"),
            row("cfssl + SQLite WAL"),
            row("cfssl, no database"),
        );
        println!(
            "ratio at {clients} clients: certs/s {:.2}x cfssl + SQLite, {:.2}x cfssl without a database; \
             CPU per certificate {:.2}x cfssl without a database's, {:.1}x the cryptographic cost",
            ours.rate / db.rate,
            ours.rate / nodb.rate,
            ours.cpu_us / nodb.cpu_us,
            ours.cpu_us / crypto_us
        );
    }
    println!("baseline: one ECDSA P-256 verification + one signature: {crypto_us:.0} us on one core (ring)");
    println!("cfssl's certdb stored {stored} certificates in the measured runs");
    let ours_failed: f64 = table
        .iter()
        .filter(|(_, n, _)| *n == "bsn ca-server")
        .map(|(_, _, f)| f.failed)
        .sum();
    assert_eq!(ours_failed, 0.0, "every issuance request to our CA succeeds");

    for c in [&mut cfssl_db, &mut cfssl_nodb] {
        let _ = c.kill();
        let _ = c.wait();
    }
    ca.kill_all();

    if !args.no_handshakes {
        eprintln!("handshakes: running bench-handshake...");
        let out = Command::new(bsn_tests::bin("bench-handshake"))
            .args(["--secs", &args.handshake_secs.to_string()])
            .args(["--rounds", &args.handshake_rounds.to_string()])
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        assert!(out.status.success(), "bench-handshake failed");
        print!("{}", String::from_utf8_lossy(&out.stdout));
    }
}
