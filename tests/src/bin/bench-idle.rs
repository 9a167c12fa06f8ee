//! What idle subchains cost: resident memory, open files, threads and CPU of a city node (and
//! with `--orderer`, of an orderer that orders them) while nothing happens, measured from /proc
//! before the CA assigns them and once they hibernate; then the first write to a subchain idle
//! for `--cold-after-secs` (the median of `--cold-samples` such subchains) next to writes to a
//! busy one (issue 19).
//!
//! `cargo run --release -p bsn-tests --bin bench-idle -- [--subchains 10000] [--orderer] [--cold-after-secs 60]`

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bsn_tests::{TestCa, TestNode, commit_latency, put, sign_tx, submit_body};
use clap::Parser;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Subchains hosted on the node.
    #[arg(long, default_value_t = 1000)]
    subchains: usize,
    /// Seconds of idle CPU measurement.
    #[arg(long, default_value_t = 10)]
    idle_secs: u64,
    /// One orderer orders the subchains and the city node follows it (else the city node
    /// orders them itself, a one-node group each).
    #[arg(long)]
    orderer: bool,
    /// The nodes' `idle_close_secs` (how long an unused subchain stays open; 30 by default).
    #[arg(long, default_value_t = 30)]
    idle_close_secs: u64,
    /// Seconds a subchain stays idle before the timed first write.
    #[arg(long, default_value_t = 60)]
    cold_after_secs: u64,
    /// Idle subchains written to once each after `--cold-after-secs` (the median is reported).
    #[arg(long, default_value_t = 9)]
    cold_samples: usize,
}

/// The figures for 1,000 idle subchains on one node before hibernation.
const BEFORE: &str = "before hibernation (issue 19, 1,000 subchains on one node): 163 MiB resident (151 KiB per \
                      subchain), 1 open file per subchain, 4.9% of a core idle";

struct Usage {
    rss_kib: u64,
    fds: usize,
    threads: u64,
    cpu_ticks: u64,
}

fn usage(pid: u32) -> Usage {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let field = |k: &str| -> u64 {
        status
            .lines()
            .find(|l| l.starts_with(k))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap_or(0)
    };
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = &stat[stat.rfind(')').unwrap() + 2..];
    let f: Vec<&str> = after.split_whitespace().collect();
    Usage {
        rss_kib: field("VmRSS:"),
        fds: std::fs::read_dir(format!("/proc/{pid}/fd")).unwrap().count(),
        threads: field("Threads:"),
        cpu_ticks: f[11].parse::<u64>().unwrap() + f[12].parse::<u64>().unwrap(),
    }
}

/// CPU of each process over the same `secs`, % of one core.
fn idle_cpu(pids: &[u32], secs: u64) -> Vec<f64> {
    let a: Vec<u64> = pids.iter().map(|p| usage(*p).cpu_ticks).collect();
    std::thread::sleep(Duration::from_secs(secs));
    pids.iter()
        .zip(a)
        .map(|(p, a)| (usage(*p).cpu_ticks - a) as f64 / 100.0 / secs as f64 * 100.0)
        .collect()
}

/// Subchains open on `node` now (woken minus hibernated).
async fn open_now(ca: &TestCa, node: &TestNode) -> f64 {
    node.metric(ca, "bsn_node_subchains_woken_total").await
        - node.metric(ca, "bsn_node_subchains_hibernated_total").await
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let mut ca = TestCa::start();
    let config = format!("idle_close_secs = {}", args.idle_close_secs);
    let mut nodes = Vec::new();
    if args.orderer {
        nodes.push(TestNode::start_as(&mut ca, "o1", "orderer", "local", &config).await);
    }
    nodes.push(TestNode::start_as(&mut ca, "n1", "node", "local", &config).await);
    let city = nodes.last().unwrap();
    let roles: Vec<&str> = if args.orderer {
        vec!["orderer o1", "city node n1"]
    } else {
        vec!["city node n1"]
    };
    let admin = ca.admin();
    let pids: Vec<u32> = nodes.iter().map(|n| n.pid().unwrap()).collect();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before: Vec<Usage> = pids.iter().map(|p| usage(*p)).collect();
    let cpu_before = idle_cpu(&pids, args.idle_secs.min(5));

    let t = Instant::now();
    let api = ca.api(Some(&admin));
    let busy = Arc::new(AtomicUsize::new(0));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let api = api.clone();
        let busy = busy.clone();
        let n = args.subchains;
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(8) {
                let body = json!({ "id": format!("quiet-{i:05}"), "name": format!("Quiet {i}"), "nodes": ["n1"] });
                // An overloaded CA answers 503 with Retry-After: a client tries again. Any
                // other error fails the run.
                let mut tries = 0;
                while let Err(e) = api.post("/api/v1/subchains", &body).await {
                    match e {
                        bsn_api::client::ClientError::Problem { status: 503, .. } if tries < 5 => {
                            tries += 1;
                            busy.fetch_add(1, Ordering::Relaxed);
                            tokio::time::sleep(Duration::from_secs(1)).await;
                        }
                        e => panic!("creating quiet-{i:05}: {e}"),
                    }
                }
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let created = t.elapsed();
    let node_api = city.api(&ca, &admin);
    let t = Instant::now();
    bsn_tests::wait_until_holding(&node_api, args.subchains, Duration::from_secs(1800)).await;
    let opened = t.elapsed();
    println!(
        "{} subchains created at the CA in {:.1} s ({} answers 503 busy, retried); the city node held them all (genesis block written) {:.1} s later",
        args.subchains,
        created.as_secs_f64(),
        busy.load(Ordering::Relaxed),
        opened.as_secs_f64()
    );
    // Everything goes to sleep once idle.
    let t = Instant::now();
    for node in &nodes {
        bsn_tests::eventually("every subchain to hibernate", Duration::from_secs(600), || async {
            (open_now(&ca, node).await <= 0.0).then_some(())
        })
        .await;
    }
    println!("every subchain hibernated {:.1} s later", t.elapsed().as_secs_f64());
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after: Vec<Usage> = pids.iter().map(|p| usage(*p)).collect();
    let cpu_after = idle_cpu(&pids, args.idle_secs);
    let n = args.subchains as f64;
    println!("{BEFORE}");
    for (i, role) in roles.iter().enumerate() {
        let (b, a) = (&before[i], &after[i]);
        println!(
            "{role}: resident memory {} KiB with none, {} KiB with {} ({:.1} KiB per subchain); open files {} -> {} \
             ({:.3} per subchain); threads {} -> {}; idle CPU {:.2}% of one core with none, {:.2}% with {}",
            b.rss_kib,
            a.rss_kib,
            args.subchains,
            a.rss_kib.saturating_sub(b.rss_kib) as f64 / n,
            b.fds,
            a.fds,
            a.fds.saturating_sub(b.fds) as f64 / n,
            b.threads,
            a.threads,
            cpu_before[i],
            cpu_after[i],
            args.subchains
        );
        let mib = a.rss_kib as f64 / 1024.0;
        println!(
            "{role} against the targets at {}: resident {mib:.0} MiB (target < 500 MB), open files {} (< 1,000), idle CPU {:.2}% (< 2%)",
            args.subchains, a.fds, cpu_after[i]
        );
    }

    // The first write to subchains idle for a while, next to writes to a busy one. The client
    // keeps its connection to the gateway warm meanwhile (a read of the busy subchain every few
    // seconds: the gateway closes a connection idle for 60 s), so a cold write measures waking
    // the subchain, not a new TLS handshake. Several cold subchains, one write each: their median.
    let alice = ca.participant("alice").await;
    let busy = "quiet-00000".to_string();
    let cold_ids: Vec<String> = (1..=args.cold_samples.min(args.subchains - 1))
        .map(|i| format!("quiet-{i:05}"))
        .collect();
    for id in std::iter::once(&busy).chain(&cold_ids) {
        api.put(
            &format!("/api/v1/subchains/{id}/members/alice"),
            &json!({ "role": "writer" }),
        )
        .await
        .unwrap();
    }
    let writer = city.api(&ca, &alice);
    bsn_tests::eventually(
        "alice to be a writer on the chains",
        Duration::from_secs(60),
        || async {
            for id in std::iter::once(&busy).chain(&cold_ids) {
                let v = writer.get(&format!("/api/v1/subchains/{id}"), &[]).await.ok()?;
                v["membership_revision"].as_u64().filter(|r| *r >= 2)?;
            }
            Some(())
        },
    )
    .await;
    let (busy_p50, busy_p99) = commit_latency(&writer, &alice, &busy, "busy", 200).await;
    let woken = open_now(&ca, city).await;
    println!(
        "waiting {} s with {} subchains idle ({woken} subchains open on the city node now)",
        args.cold_after_secs,
        cold_ids.len()
    );
    let until = Instant::now() + Duration::from_secs(args.cold_after_secs);
    while Instant::now() < until {
        writer.get(&format!("/api/v1/subchains/{busy}"), &[]).await.unwrap();
        tokio::time::sleep(Duration::from_secs(5).min(until.saturating_duration_since(Instant::now()))).await;
    }
    let still_open = open_now(&ca, city).await;
    let mut cold = Vec::new();
    for id in &cold_ids {
        let tx = sign_tx(&alice, id, vec![put("first", "after a quiet minute")]);
        let t = Instant::now();
        writer
            .post(&format!("/api/v1/subchains/{id}/transactions"), &submit_body(&[tx]))
            .await
            .unwrap();
        cold.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    cold.sort_by(f64::total_cmp);
    let cold_p50 = cold[cold.len() / 2];
    // The busy subchain again, right after, in the same state of the machine.
    let (after_p50, after_p99) = commit_latency(&writer, &alice, &busy, "busy-after", 200).await;
    let busy = busy_p50.min(after_p50);
    println!(
        "first write to {} subchains idle {} s ({still_open} open before them): median {cold_p50:.1} ms, min {:.1}, max \
         {:.1}; busy subchain p50 {busy_p50:.1} ms (p99 {busy_p99:.1}) before the wait, {after_p50:.1} ms (p99 \
         {after_p99:.1}) after the cold writes; ratio {:.2}x the lower busy p50 (target <= 3x)",
        cold.len(),
        args.cold_after_secs,
        cold[0],
        cold[cold.len() - 1],
        cold_p50 / busy
    );
    drop(nodes);
    ca.kill_all();
}
