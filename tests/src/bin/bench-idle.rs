//! What 1,000 idle subchains cost one city node: resident memory, open file handles, threads and
//! CPU while nothing happens, measured from /proc before and after the CA assigns them.
//!
//! `cargo run --release -p bsn-tests --bin bench-idle -- [--subchains 1000]`

use std::time::{Duration, Instant};

use bsn_tests::{TestCa, TestNode};
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
}

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

fn idle_cpu(pid: u32, secs: u64) -> f64 {
    let a = usage(pid).cpu_ticks;
    std::thread::sleep(Duration::from_secs(secs));
    let b = usage(pid).cpu_ticks;
    (b - a) as f64 / 100.0 / secs as f64 * 100.0
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let mut ca = TestCa::start();
    let node = TestNode::start(&mut ca, "n1").await;
    let admin = ca.admin();
    let pid = node.pid().unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let before = usage(pid);
    let cpu_before = idle_cpu(pid, args.idle_secs.min(5));

    let t = Instant::now();
    let api = ca.api(Some(&admin));
    let mut tasks = Vec::new();
    for w in 0..8 {
        let api = api.clone();
        let n = args.subchains;
        tasks.push(tokio::spawn(async move {
            for i in (w..n).step_by(8) {
                api.post(
                    "/api/v1/subchains",
                    &json!({ "id": format!("quiet-{i:04}"), "name": format!("Quiet {i}"), "nodes": ["n1"] }),
                )
                .await
                .unwrap();
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let created = t.elapsed();
    let node_api = node.api(&ca, &admin);
    let t = Instant::now();
    bsn_tests::eventually("the node to open every subchain", Duration::from_secs(600), || async {
        let v = node_api.get("/api/v1/subchains", &[]).await.ok()?;
        let open = v["subchains"]
            .as_array()?
            .iter()
            .filter(|s| s["height"].is_u64())
            .count();
        (open >= args.subchains).then_some(())
    })
    .await;
    let opened = t.elapsed();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let after = usage(pid);
    let cpu_after = idle_cpu(pid, args.idle_secs);
    let per = |a: u64, b: u64| (a.saturating_sub(b)) as f64 / args.subchains as f64;
    println!(
        "{} subchains created at the CA in {:.1} s; the node had them all open (genesis block written) {:.1} s later",
        args.subchains,
        created.as_secs_f64(),
        opened.as_secs_f64()
    );
    println!(
        "resident memory: {} KiB with none, {} KiB with {} ({:.1} KiB per subchain)",
        before.rss_kib,
        after.rss_kib,
        args.subchains,
        per(after.rss_kib, before.rss_kib)
    );
    println!(
        "open file handles: {} -> {} ({:.2} per subchain); threads: {} -> {}",
        before.fds,
        after.fds,
        per(after.fds as u64, before.fds as u64),
        before.threads,
        after.threads
    );
    println!(
        "idle CPU: {cpu_before:.1}% of one core with none, {cpu_after:.1}% with {}",
        args.subchains
    );
    drop(node);
    ca.kill_all();
}
