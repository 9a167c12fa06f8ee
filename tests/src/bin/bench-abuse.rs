//! A legitimate client's success rate and latency while strangers attack, next to the same
//! figures without attack, measured in the same run. Loopback only; every attack is bounded in
//! count and time and stops by itself.
//!
//! Servers: a real CA and a real `ledger-node` hosting one subchain, default limits.
//! Legitimate probes, one at a time: at the CA an enrollment with a fresh secret (an argon2id
//! hash, a CSR check, a signed and logged certificate); at the node one signed transaction
//! submitted and committed.
//! Attacks, one at a time, each against the server it targets:
//! - `idle`: `--connections` connections held from 64 loopback addresses (127.0.100.x): half
//!   never start a handshake, half finish it (the node's with a participant certificate) and
//!   send half a request's headers; each one closed by the server is opened again.
//! - `wrong-secret` (CA): `--flood-workers` clients at 16 addresses sending enrollments with
//!   wrong secrets as fast as they are answered.
//! - `big-bodies` (node): `--flood-workers` clients of an enrolled non-member sending 60 MiB
//!   bodies to the submit route as fast as they are answered; the node's peak RSS is reported.
//!
//! `cargo run --release -p bsn-tests --bin bench-abuse -- [--secs 15] [--connections 8000]`

use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bsn_tests::{TestCa, TestNode, client_tls, new_csr, put, raw_client, rss_kib, sign_tx, submit_body};
use clap::Parser;
use serde_json::json;
use tokio::io::AsyncWriteExt;

#[derive(Parser)]
struct Args {
    /// Seconds each phase runs.
    #[arg(long, default_value_t = 15)]
    secs: u64,
    /// Connections the `idle` attack holds against each server.
    #[arg(long, default_value_t = 8000)]
    connections: usize,
    /// Concurrent attackers in the floods.
    #[arg(long, default_value_t = 32)]
    flood_workers: usize,
    /// Exit non-zero unless every probe succeeded and each p99 is at most this many times the
    /// unattacked p99 (0 checks success only).
    #[arg(long, default_value_t = 5.0)]
    max_p99_ratio: f64,
}

#[derive(Default)]
struct Figures {
    ok: usize,
    failed: usize,
    lat_ms: Vec<f64>,
}

impl Figures {
    fn pct(&self, p: f64) -> f64 {
        let mut v = self.lat_ms.clone();
        if v.is_empty() {
            return f64::NAN;
        }
        v.sort_by(|a, b| a.partial_cmp(b).unwrap());
        v[((v.len() as f64 - 1.0) * p).round() as usize]
    }
    fn success(&self) -> f64 {
        100.0 * self.ok as f64 / (self.ok + self.failed).max(1) as f64
    }
}

impl Figures {
    /// Records one probe: its latency if it succeeded, the failure otherwise.
    fn record<T, E: std::fmt::Debug>(
        &mut self,
        started: Instant,
        r: Result<Result<T, E>, tokio::time::error::Elapsed>,
    ) {
        match r {
            Ok(Ok(_)) => {
                self.ok += 1;
                self.lat_ms.push(started.elapsed().as_secs_f64() * 1000.0);
            }
            Ok(Err(e)) => {
                self.failed += 1;
                eprintln!("  probe failed: {e:?}");
            }
            Err(_) => {
                self.failed += 1;
                eprintln!("  probe timed out after 30 s");
            }
        }
    }
}

/// Enrolls fresh identities one after another for `secs`.
async fn probe_ca(ca: &TestCa, secrets: &mut Vec<(String, String)>, secs: u64) -> Figures {
    let api = ca.api(None);
    let mut f = Figures::default();
    let end = Instant::now() + Duration::from_secs(secs);
    while Instant::now() < end {
        let Some((id, secret)) = secrets.pop() else { break };
        let body = json!({ "id": id, "secret": secret, "csr": new_csr() });
        let t = Instant::now();
        f.record(
            t,
            tokio::time::timeout(Duration::from_secs(30), api.post("/api/v1/enroll", &body)).await,
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    f
}

/// Submits one transaction at a time for `secs`.
async fn probe_node(ca: &TestCa, node: &TestNode, writer: &Path, secs: u64) -> Figures {
    let api = node.api(ca, writer);
    let mut f = Figures::default();
    let end = Instant::now() + Duration::from_secs(secs);
    let mut i = 0u64;
    while Instant::now() < end {
        i += 1;
        let body = submit_body(&[sign_tx(writer, "abuse", vec![put(&format!("k{i}"), "v")])]);
        let t = Instant::now();
        let r = api.post("/api/v1/subchains/abuse/transactions", &body);
        f.record(t, tokio::time::timeout(Duration::from_secs(30), r).await);
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    f
}

/// Holds `n` connections to `addr` until `stop`: half bare TCP, half TLS with half a request.
/// Returns the number held at the end and the number of reconnects.
fn hold_connections(
    n: usize,
    addr: SocketAddr,
    tls: Arc<rustls::ClientConfig>,
    stop: Arc<AtomicBool>,
    attackers: &tokio::runtime::Handle,
) -> (Arc<AtomicU64>, Arc<AtomicU64>, tokio::task::JoinSet<()>) {
    let held = Arc::new(AtomicU64::new(0));
    let reconnects = Arc::new(AtomicU64::new(0));
    let mut set = tokio::task::JoinSet::new();
    let handshakes = Arc::new(tokio::sync::Semaphore::new(64));
    for i in 0..n {
        let source = IpAddr::from([127, 0, 100, (i % 64) as u8 + 1]);
        let (held, reconnects, stop, tls, handshakes) = (
            held.clone(),
            reconnects.clone(),
            stop.clone(),
            tls.clone(),
            handshakes.clone(),
        );
        set.spawn_on(
            async move {
                let mut first = true;
                while !stop.load(Ordering::Relaxed) {
                    if !first {
                        reconnects.fetch_add(1, Ordering::Relaxed);
                        tokio::time::sleep(Duration::from_millis(200)).await;
                    }
                    first = false;
                    let Ok(sock) = tokio::net::TcpSocket::new_v4() else {
                        continue;
                    };
                    if sock.bind(SocketAddr::new(source, 0)).is_err() {
                        continue;
                    }
                    let Ok(Ok(mut tcp)) = tokio::time::timeout(Duration::from_secs(5), sock.connect(addr)).await else {
                        continue;
                    };
                    held.fetch_add(1, Ordering::Relaxed);
                    if i % 2 == 0 {
                        // Never start the handshake: wait until the server closes it.
                        let mut b = [0u8; 1];
                        let _ = tokio::select! {
                            r = tokio::io::AsyncReadExt::read(&mut tcp, &mut b) => r.ok(),
                            _ = wait(&stop) => None,
                        };
                    } else {
                        let permit = handshakes.acquire().await;
                        let tls = tokio_rustls::TlsConnector::from(tls.clone())
                            .connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp)
                            .await;
                        drop(permit);
                        if let Ok(mut tls) = tls {
                            let _ = tls
                                .write_all(b"POST /api/v1/enroll HTTP/1.1\r\nHost: localhost\r\nContent-")
                                .await;
                            let mut b = [0u8; 64];
                            let _ = tokio::select! {
                                r = tokio::io::AsyncReadExt::read(&mut tls, &mut b) => r.ok(),
                                _ = wait(&stop) => None,
                            };
                        }
                    }
                    held.fetch_sub(1, Ordering::Relaxed);
                }
            },
            attackers,
        );
    }
    (held, reconnects, set)
}

async fn wait(stop: &AtomicBool) {
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn addr_of(url: &str) -> SocketAddr {
    url.trim_start_matches("https://").parse().unwrap()
}

struct Row {
    server: &'static str,
    attack: &'static str,
    f: Figures,
    note: String,
}

#[tokio::main(flavor = "multi_thread")]
async fn main() {
    let args = Args::parse();
    let _ = rustls::crypto::ring::default_provider().install_default();
    if let Ok(n) = rlimit::increase_nofile_limit(u64::MAX) {
        println!("open-file limit of this load generator: {n}");
    }
    let mut ca = TestCa::start();
    let node = TestNode::start(&mut ca, "abuse-node").await;
    let admin = ca.admin();
    ca.api(Some(&admin))
        .post(
            "/api/v1/subchains",
            &json!({ "id": "abuse", "name": "Abuse", "nodes": [node.name], "policy": "approval" }),
        )
        .await
        .unwrap();
    let writer = ca.participant("writer").await;
    let stranger = ca.participant("stranger").await;
    ca.api(Some(&admin))
        .put("/api/v1/subchains/abuse/members/writer", &json!({ "role": "writer" }))
        .await
        .unwrap();
    let wapi = node.api(&ca, &writer);
    bsn_tests::eventually("the node to admit the writer", Duration::from_secs(20), || async {
        wapi.get("/api/v1/subchains/abuse", &[])
            .await
            .ok()
            .filter(|v| v["membership_revision"].as_u64() >= Some(2))
    })
    .await;
    // Secrets for the CA probes (about 8 a second over 3 phases, with room to spare).
    let need = (args.secs as usize * 8 * 3).max(50);
    let mut secrets = Vec::with_capacity(need);
    for i in 0..need {
        let id = format!("probe{i}");
        let s = ca.register(&id, json!({})).await;
        secrets.push((id, s));
    }
    let node_pid = node.pid().unwrap();
    let ca_pid = ca.pid();
    let mut rows = Vec::new();
    // The attackers run on their own runtime thread, so that the probe's latency is the
    // server's and not the wait for a turn among thousands of attacking tasks in this process.
    // (They still share this machine's two cores with the servers, as a remote attacker would
    // not.)
    let attackers = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .thread_name("attacker")
        .enable_all()
        .build()
        .expect("attacker runtime");

    println!("phase: no attack ({} s each server)", args.secs);
    rows.push(Row {
        server: "ca",
        attack: "none",
        f: probe_ca(&ca, &mut secrets, args.secs).await,
        note: format!("RSS {} MiB", rss_kib(ca_pid) / 1024),
    });
    let base_rss = rss_kib(node_pid);
    rows.push(Row {
        server: "node",
        attack: "none",
        f: probe_node(&ca, &node, &writer, args.secs).await,
        note: format!("RSS {} MiB", base_rss / 1024),
    });

    // Idle and half-sent connections.
    for (server, url, who) in [
        ("ca", ca.url.clone(), None),
        ("node", node.url.clone(), Some(stranger.clone())),
    ] {
        println!(
            "phase: {} idle or half-sent connections against the {server}",
            args.connections
        );
        let stop = Arc::new(AtomicBool::new(false));
        let (held, reconnects, mut set) = hold_connections(
            args.connections,
            addr_of(&url),
            Arc::new(client_tls(&ca, who.as_deref(), true)),
            stop.clone(),
            attackers.handle(),
        );
        // Let the attack build up before probing.
        let t = Instant::now();
        while (held.load(Ordering::Relaxed) as usize) < args.connections * 9 / 10
            && t.elapsed() < Duration::from_secs(20)
        {
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        let held_at_start = held.load(Ordering::Relaxed);
        let pid = if server == "ca" { ca_pid } else { node_pid };
        let sampler = rss_sampler(pid);
        let (server_cpu0, own_cpu0, t0) = (
            bsn_tests::cpu_secs(&pid.to_string(), false),
            bsn_tests::cpu_secs("self", false),
            Instant::now(),
        );
        let f = if server == "ca" {
            probe_ca(&ca, &mut secrets, args.secs).await
        } else {
            probe_node(&ca, &node, &writer, args.secs).await
        };
        let held_at_end = held.load(Ordering::Relaxed);
        let wall = t0.elapsed().as_secs_f64();
        let server_cpu = (bsn_tests::cpu_secs(&pid.to_string(), false) - server_cpu0) / wall * 100.0;
        let own_cpu = (bsn_tests::cpu_secs("self", false) - own_cpu0) / wall * 100.0;
        stop.store(true, Ordering::Relaxed);
        let peak = sampler.finish().await;
        while set.join_next().await.is_some() {}
        rows.push(Row {
            server,
            attack: "idle",
            f,
            note: format!(
                "held {held_at_start} at start, {held_at_end} at end, {} reopened after the server closed them; peak RSS {} MiB; CPU: server {server_cpu:.0}%, attacker and probe {own_cpu:.0}% of one core",
                reconnects.load(Ordering::Relaxed),
                peak / 1024
            ),
        });
        // Let the server reap the last of them.
        tokio::time::sleep(Duration::from_secs(11)).await;
    }

    // Wrong-secret enrollment flood at the CA.
    println!(
        "phase: wrong-secret flood ({} workers at 16 addresses)",
        args.flood_workers
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let mut set = tokio::task::JoinSet::new();
    for w in 0..args.flood_workers {
        let client = raw_client(&ca, None, Some(IpAddr::from([127, 0, 101, (w % 16) as u8 + 1])));
        let (url, stop, sent) = (ca.url.clone(), stop.clone(), sent.clone());
        let csr = new_csr();
        set.spawn_on(
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = client
                        .post(format!("{url}/api/v1/enroll"))
                        .json(&json!({ "id": format!("probe{w}"), "secret": "wrong", "csr": csr }))
                        .send()
                        .await;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            },
            attackers.handle(),
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sampler = rss_sampler(ca_pid);
    let f = probe_ca(&ca, &mut secrets, args.secs).await;
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.finish().await;
    while set.join_next().await.is_some() {}
    rows.push(Row {
        server: "ca",
        attack: "wrong-secret",
        f,
        note: format!(
            "{} wrong enrollments sent; peak RSS {} MiB",
            sent.load(Ordering::Relaxed),
            peak / 1024
        ),
    });

    // 60 MiB bodies from a non-member at the node.
    println!(
        "phase: 60 MiB bodies from a non-member ({} workers)",
        args.flood_workers
    );
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let big = bytes::Bytes::from(vec![b' '; 60 << 20]);
    let mut set = tokio::task::JoinSet::new();
    let client = raw_client(&ca, Some(&stranger), None);
    for _ in 0..args.flood_workers {
        let (client, url, stop, sent, big) = (
            client.clone(),
            node.url.clone(),
            stop.clone(),
            sent.clone(),
            big.clone(),
        );
        set.spawn_on(
            async move {
                while !stop.load(Ordering::Relaxed) {
                    let _ = client
                        .post(format!("{url}/api/v1/subchains/abuse/transactions"))
                        .header("content-type", "application/json")
                        .body(big.clone())
                        .send()
                        .await;
                    sent.fetch_add(1, Ordering::Relaxed);
                }
            },
            attackers.handle(),
        );
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let sampler = rss_sampler(node_pid);
    let f = probe_node(&ca, &node, &writer, args.secs).await;
    stop.store(true, Ordering::Relaxed);
    let peak = sampler.finish().await;
    while set.join_next().await.is_some() {}
    rows.push(Row {
        server: "node",
        attack: "big-bodies",
        f,
        note: format!(
            "{} bodies of 60 MiB sent; node peak RSS {} MiB (unattacked {} MiB)",
            sent.load(Ordering::Relaxed),
            peak / 1024,
            base_rss / 1024
        ),
    });

    // A runtime may not be dropped inside another one's task.
    attackers.shutdown_background();
    println!();
    println!("server  attack        probes  success  p50 ms   p95 ms   p99 ms   max ms  p99/unattacked  notes");
    let mut ok = true;
    let base = |server: &str, rows: &[Row]| {
        rows.iter()
            .find(|r| r.server == server && r.attack == "none")
            .map(|r| r.f.pct(0.99))
            .unwrap_or(f64::NAN)
    };
    for r in &rows {
        let ratio = r.f.pct(0.99) / base(r.server, &rows);
        println!(
            "{:<7} {:<13} {:>6}  {:>6.1}%  {:>7.1}  {:>7.1}  {:>7.1}  {:>7.1}  {:>14.2}  {}",
            r.server,
            r.attack,
            r.f.ok + r.f.failed,
            r.f.success(),
            r.f.pct(0.5),
            r.f.pct(0.95),
            r.f.pct(0.99),
            r.f.pct(1.0),
            ratio,
            r.note
        );
        if r.f.failed > 0 || r.f.ok == 0 {
            ok = false;
        }
        if args.max_p99_ratio > 0.0 && ratio > args.max_p99_ratio {
            ok = false;
        }
    }
    if !ok {
        eprintln!(
            "FAIL: a legitimate probe failed, or a p99 exceeded {}x the unattacked p99",
            args.max_p99_ratio
        );
        // Stop the servers first: exit skips destructors.
        drop(node);
        drop(ca);
        std::process::exit(1);
    }
    if args.max_p99_ratio > 0.0 {
        println!(
            "all probes succeeded; every p99 within {}x of the unattacked p99",
            args.max_p99_ratio
        );
    } else {
        println!("all probes succeeded (p99 ratios printed, not checked)");
    }
}

struct Sampler {
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<u64>,
}

impl Sampler {
    async fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.unwrap_or(0)
    }
}

fn rss_sampler(pid: u32) -> Sampler {
    let stop = Arc::new(AtomicBool::new(false));
    let s = stop.clone();
    let task = tokio::spawn(async move {
        let mut peak = 0;
        while !s.load(Ordering::Relaxed) {
            peak = peak.max(rss_kib(pid));
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        peak
    });
    Sampler { stop, task }
}
