//! `bsn audit verify` throughput: a real CA whose log is grown to N issuance entries (real
//! certificates signed with the CA's intermediate key, appended with the log's own key and
//! sequencer), then audited from scratch with the real `bsn` binary over HTTPS. Prints entries/s
//! next to the machine's ECDSA P-256 verification rate on all cores, measured in the same run:
//! each logged certificate needs one such verification, so that rate is the ceiling.
//!
//! `cargo run --release -p bsn-tests --bin bench-audit -- [--entries 200000]`

use std::time::Instant;

use bsn_tests::{PASSPHRASE, TestCa};
use clap::Parser;
use rustls_pki_types::CertificateDer;
use rustls_pki_types::pem::PemObject;

#[derive(Parser)]
struct Args {
    /// Issuance entries to log.
    #[arg(long, default_value_t = 200_000)]
    entries: u64,
    /// Audits of each kind; the median is reported.
    #[arg(long, default_value_t = 3)]
    runs: usize,
}

/// Medians of one kind of audit.
struct Measured {
    size: u64,
    rate: f64,
    /// CPU microseconds per entry of the CA serving the log, and of `bsn` auditing it.
    server_us: f64,
    client_us: f64,
}

/// Runs `bsn audit verify` (with `extra` arguments) `runs` times; returns the log size and the
/// medians of the rate and of each side's CPU per entry (from `/proc`).
fn audit(ca: &TestCa, vkey: &std::path::Path, extra: &[&str], runs: usize) -> Measured {
    let (mut rates, mut server, mut client) = (Vec::new(), Vec::new(), Vec::new());
    let mut size = 0;
    let pid = ca.pid().to_string();
    for _ in 0..runs.max(1) {
        let mut args = vec!["audit", "verify", "--log-vkey", vkey.to_str().unwrap()];
        args.extend(extra);
        let (s0, c0) = (bsn_tests::cpu_secs(&pid, false), bsn_tests::cpu_secs("self", true));
        let t = Instant::now();
        let out = ca.bsn(&args);
        let took = t.elapsed();
        let (s1, c1) = (bsn_tests::cpu_secs(&pid, false), bsn_tests::cpu_secs("self", true));
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
        size = text
            .split("log verified: ")
            .nth(1)
            .and_then(|r| r.split(' ').next())
            .and_then(|n| n.parse().ok())
            .expect("size in the audit output");
        rates.push(size as f64 / took.as_secs_f64());
        server.push((s1 - s0) * 1e6 / size as f64);
        client.push((c1 - c0) * 1e6 / size as f64);
    }
    let median = |mut v: Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    Measured {
        size,
        rate: median(rates),
        server_us: median(server),
        client_us: median(client),
    }
}

/// The ceiling: one ECDSA P-256 verification per certificate, on every core (per second).
fn ecdsa_verify_rate() -> f64 {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 =
        ring::signature::EcdsaKeyPair::generate_pkcs8(&ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING, &rng).unwrap();
    let kp = ring::signature::EcdsaKeyPair::from_pkcs8(
        &ring::signature::ECDSA_P256_SHA256_ASN1_SIGNING,
        pkcs8.as_ref(),
        &rng,
    )
    .unwrap();
    let msg = [7u8; 600];
    let sig = kp.sign(&rng, &msg).unwrap();
    let public = ring::signature::UnparsedPublicKey::new(
        &ring::signature::ECDSA_P256_SHA256_ASN1,
        ring::signature::KeyPair::public_key(&kp).as_ref().to_vec(),
    );
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_core = 10_000;
    let t = Instant::now();
    std::thread::scope(|s| {
        for _ in 0..cores {
            s.spawn(|| {
                for _ in 0..per_core {
                    public.verify(&msg, sig.as_ref()).unwrap();
                }
            });
        }
    });
    (per_core * cores) as f64 / t.elapsed().as_secs_f64()
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let mut ca = TestCa::start();
    ca.kill_all();
    let dir = ca.data_dir();
    let roots: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(dir.join("root.pem"))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    let intermediate = CertificateDer::from_pem_file(dir.join("intermediate.pem")).unwrap();
    let sealed = std::fs::read_to_string(dir.join("intermediate.key.sealed")).unwrap();
    let key = ca_server::keystore::open(PASSPHRASE, "intermediate", &sealed).unwrap();
    let signer = ca_server::pki::CaSigner::software(rcgen::KeyPair::try_from(key.as_slice()).unwrap());
    let issuing = ca_server::pki::Ca::new(roots, intermediate, signer, Default::default()).unwrap();
    let log = ca.log_signer();
    let db = ca.store().await;

    eprintln!("issuing and logging {} certificates...", args.entries);
    let subject_key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let spki = ca_server::csr::check_spki_der(&rcgen::PublicKeyData::subject_public_key_info(&subject_key)).unwrap();
    let id = identity::SpiffeId::parse("spiffe://test.example/participant/bench").unwrap();
    let now = time::OffsetDateTime::now_utc();
    let started = Instant::now();
    let mut added = 0u64;
    while added < args.entries {
        let n = (args.entries - added).min(4096);
        let leaves: Vec<ca_server::log::NewLeaf> = std::thread::scope(|s| {
            let per = (n as usize).div_ceil(2);
            let parts: Vec<_> = (0..2)
                .map(|k| {
                    let (issuing, spki, id) = (&issuing, &spki, &id);
                    s.spawn(move || {
                        (0..per.min(n as usize - (k * per).min(n as usize)))
                            .map(|_| {
                                let subject = ca_server::pki::LeafSubject {
                                    spiffe_id: id,
                                    dns_names: &[],
                                    ip_addresses: &[],
                                    validity: time::Duration::days(90),
                                };
                                let c = issuing.issue_leaf(&subject, spki, now).unwrap();
                                let leaf = identity::logleaf::LogLeaf::Issuance {
                                    time: now.unix_timestamp() as u64,
                                    identity: c.spiffe_id.clone(),
                                    serial: c.serial_hex.clone(),
                                    authorized_by: "bench".into(),
                                    not_before: c.not_before,
                                    not_after: c.not_after,
                                    key_sha256: hex::decode(&c.key_sha256).unwrap().try_into().unwrap(),
                                    certificate: c.der.clone(),
                                };
                                ca_server::log::NewLeaf {
                                    bytes: leaf.encode().unwrap(),
                                    kind: "issuance",
                                    serial: c.serial_hex,
                                    identity: "bench".into(),
                                    at: now.unix_timestamp(),
                                }
                            })
                            .collect::<Vec<_>>()
                    })
                })
                .collect();
            parts.into_iter().flat_map(|h| h.join().unwrap()).collect()
        });
        let mut tx = db.begin().await.unwrap();
        ca_server::log::append(&mut tx, db.backend, &log, &leaves, false)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        added += n;
    }
    let build = started.elapsed();
    db.close().await;
    ca.restart();

    let vkey = dir.join("log.vkey");
    // The ceiling, measured before and after the audits (this machine's speed drifts).
    let verify_rate_before = ecdsa_verify_rate();
    let full = audit(&ca, &vkey, &[], args.runs);
    let structure = audit(&ca, &vkey, &["--structure-only"], args.runs);
    let (size, rate, structure_rate) = (full.size, full.rate, structure.rate);

    let verify_rate = (verify_rate_before + ecdsa_verify_rate()) / 2.0;

    println!("backend: {}", bsn_tests::backend());
    println!(
        "log size: {size} entries, {} real certificates (built in {:.1} s)",
        args.entries,
        build.as_secs_f64()
    );
    let runs = args.runs.max(1);
    println!(
        "bsn audit verify (whole log over HTTPS, every certificate verified): {rate:.0} entries/s (median of {runs})"
    );
    println!(
        "baseline: ECDSA P-256 verify on all cores = {verify_rate:.0}/s; audit rate / baseline = {:.2} (target 0.9)",
        rate / verify_rate
    );
    println!(
        "bsn audit verify --structure-only: {structure_rate:.0} entries/s (median of {runs}; target 300,000), {:.1}x the full audit",
        structure_rate / rate
    );
    println!(
        "CPU per entry, full: CA {:.2} us, bsn {:.2} us; structure only: CA {:.2} us, bsn {:.2} us",
        full.server_us, full.client_us, structure.server_us, structure.client_us
    );
    ca.kill_all();
}
