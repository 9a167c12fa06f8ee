//! Quotas on a shared city node (issue 14), with real processes: one node hosts a free-tier
//! subchain (10 tx/s, burst 20) and a business one (500 tx/s). The free one floods at 100 times
//! its rate while the business one writes at a steady pace: the flood gets `rate-quota` problems
//! with `Retry-After` and commits no more than its bucket allows, the steady writer gets no
//! refusal and its commit latency stays close to what it was with the flood idle.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bsn_api::client::{Api, ClientError};
use bsn_tests::{TestCa, TestNode, eventually, put, sign_tx, slug, submit_body};
use serde_json::json;

fn p99(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[(v.len() * 99 / 100).min(v.len() - 1)]
}

/// Writes one transaction at a time to `subchain` at `per_sec` for `secs`; returns each
/// submit-to-commit latency (every write must commit) and the bytes written.
async fn steady(
    api: &Api,
    who: &std::path::Path,
    subchain: &str,
    per_sec: u64,
    secs: u64,
    tag: &str,
) -> (Vec<Duration>, u64) {
    let mut lat = Vec::new();
    let mut bytes = 0;
    let start = Instant::now();
    let every = Duration::from_micros(1_000_000 / per_sec);
    for i in 0..per_sec * secs {
        let due = start + every * i as u32;
        tokio::time::sleep_until(due.into()).await;
        let tx = sign_tx(who, subchain, vec![put(&format!("{tag}-{i}"), "v")]);
        bytes += tx.len() as u64;
        let t = Instant::now();
        api.post(
            &format!("/api/v1/subchains/{subchain}/transactions"),
            &submit_body(&[tx]),
        )
        .await
        .unwrap_or_else(|e| panic!("{subchain} write {i} refused: {e}"));
        lat.push(t.elapsed());
    }
    (lat, bytes)
}

/// Subchains `(id, plan)` pinned to node n1, each with the participant `w` as a writer; returns
/// the node's API as `w` once the node has admitted it on every one.
async fn hosted(
    ca: &TestCa,
    admin: &std::path::Path,
    node: &TestNode,
    w: &std::path::Path,
    subchains: &[(&str, &str)],
) -> Api {
    let ca_admin = ca.api(Some(admin));
    for (id, plan) in subchains {
        ca_admin
            .post(
                "/api/v1/subchains",
                &json!({ "id": id, "name": id, "nodes": ["n1"], "orderers": [], "plan": plan }),
            )
            .await
            .unwrap();
        ca_admin
            .put(
                &format!("/api/v1/subchains/{id}/members/w"),
                &json!({ "role": "writer" }),
            )
            .await
            .unwrap();
    }
    let api = ca.api_at(&node.url, Some(w));
    for (id, _) in subchains {
        eventually("the node to admit the writer", Duration::from_secs(20), || async {
            api.get(&format!("/api/v1/subchains/{id}"), &[])
                .await
                .ok()
                .filter(|v| v["membership_revision"].as_u64() >= Some(2) && v["height"].as_u64().is_some())
        })
        .await;
    }
    api
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_subchain_is_held_to_its_rate_and_its_neighbour_does_not_notice() {
    let mut ca = TestCa::start();
    let node = TestNode::start_with(&mut ca, "n1", "usage_report_secs = 1").await;
    let admin = ca.admin();
    let w = ca.participant("w").await;
    let api = hosted(&ca, &admin, &node, &w, &[("flood", "free"), ("steady", "business")]).await;
    // Warm up both (connections, first blocks).
    let (_, mut steady_bytes) = steady(&api, &w, "steady", 20, 1, "warm").await;
    let (_, mut flood_bytes) = steady(&api, &w, "flood", 5, 1, "warm").await;
    tokio::time::sleep(Duration::from_secs(3)).await; // the free bucket fills again

    // A batch larger than the free plan's burst can never pass: refused as such, not retried.
    let batch: Vec<Vec<u8>> = (0..21)
        .map(|i| sign_tx(&w, "flood", vec![put(&format!("big-{i}"), "v")]))
        .collect();
    let e = api
        .post("/api/v1/subchains/flood/transactions", &submit_body(&batch))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "invalid-request", "{e}");
    assert!(e.to_string().contains("at most 20 transactions"), "{e}");

    // The steady subchain alone.
    let (idle, b) = steady(&api, &w, "steady", 40, 6, "idle").await;
    steady_bytes += b;

    // Now with the flood: 1,000 attempts a second (100 times the free rate) from four clients.
    let stop = Arc::new(AtomicBool::new(false));
    let (ok, limited, written) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let flood_start = Instant::now();
    let mut tasks = Vec::new();
    for t in 0..4 {
        let (api, w, stop, ok, limited, written) = (
            api.clone(),
            w.clone(),
            stop.clone(),
            ok.clone(),
            limited.clone(),
            written.clone(),
        );
        // Transactions are signed ahead, so the flood costs its client nothing while it runs.
        let txs: Vec<Vec<u8>> = (0..2_500)
            .map(|i| sign_tx(&w, "flood", vec![put(&format!("f{t}-{i}"), "v")]))
            .collect();
        tasks.push(tokio::spawn(async move {
            let start = Instant::now();
            for (i, tx) in txs.into_iter().enumerate() {
                if stop.load(Ordering::Relaxed) {
                    break;
                }
                tokio::time::sleep_until((start + Duration::from_millis(4) * i as u32).into()).await;
                let len = tx.len() as u64;
                match api
                    .post("/api/v1/subchains/flood/transactions", &submit_body(&[tx]))
                    .await
                {
                    Ok(_) => {
                        written.fetch_add(len, Ordering::Relaxed);
                        ok.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(ClientError::Problem {
                        status: 429,
                        slug,
                        retry_after,
                        ..
                    }) if slug == "rate-quota" => {
                        assert!(retry_after.is_some_and(|s| s >= 1), "Retry-After on every refusal");
                        limited.fetch_add(1, Ordering::Relaxed)
                    }
                    Err(e) => panic!("the flood got {e}"),
                };
            }
        }));
    }
    let (busy, b) = steady(&api, &w, "steady", 40, 6, "busy").await;
    steady_bytes += b;
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    let flood_secs = flood_start.elapsed().as_secs_f64();
    let (ok, limited) = (ok.load(Ordering::Relaxed), limited.load(Ordering::Relaxed));
    let (idle_p99, busy_p99) = (p99(idle), p99(busy));
    println!(
        "flood: {} attempts in {flood_secs:.1} s ({:.0}/s), {ok} committed, {limited} refused with rate-quota; steady p99 {:.1} ms with the flood idle, {:.1} ms during it ({:.2}x)",
        ok + limited,
        (ok + limited) as f64 / flood_secs,
        idle_p99.as_secs_f64() * 1e3,
        busy_p99.as_secs_f64() * 1e3,
        busy_p99.as_secs_f64() / idle_p99.as_secs_f64()
    );
    assert!(
        (ok + limited) as f64 >= 500.0 * flood_secs,
        "the flood ran at hundreds a second"
    );
    // The bucket: 20 at once, then 10 a second (with a second of slack for the clock).
    assert!(
        ok as f64 <= 20.0 + 10.0 * (flood_secs + 1.0),
        "{ok} flood writes committed in {flood_secs:.1} s"
    );
    assert!(ok >= 40, "the flood still gets its own rate: {ok}");
    assert!(limited > 1_000, "{limited}");
    // The steady subchain had no refusal (steady() panics on one) and its latency held: within
    // 1.5 times, with 3 ms of slack for timer noise on a 2-core machine.
    assert!(
        busy_p99 <= idle_p99.mul_f64(1.5) + Duration::from_millis(3),
        "steady p99 {busy_p99:?} during the flood against {idle_p99:?} without"
    );
    flood_bytes += written.load(Ordering::Relaxed);

    // The node's signed usage reports reach the CA and add up to what the clients counted: every
    // committed transaction and its bytes, every refusal (the batch too large included).
    let ca_admin = ca.api(Some(&admin));
    let usage = |id: &'static str| {
        let api = ca_admin.clone();
        async move {
            api.get_as::<bsn_api::ca::SubchainUsage>(&format!("/api/v1/subchains/{id}/usage"), &[])
                .await
                .unwrap()
        }
    };
    let want = [
        ("flood", 5 + ok, flood_bytes, limited + 1),
        ("steady", 20 + 240 + 240, steady_bytes, 0),
    ];
    for (id, txs, bytes, refused) in want {
        let got = eventually("the usage report to reach the CA", Duration::from_secs(20), || async {
            let u = usage(id).await;
            (u.totals.transactions == txs && u.totals.refused == refused).then_some(u)
        })
        .await;
        assert_eq!(got.totals.bytes_written, bytes, "{id}");
        assert!(
            got.totals.bytes_served > 0 && got.totals.bytes_stored > 0,
            "{id}: {:?}",
            got.totals
        );
        assert!(got.rows.iter().all(|r| r.node == "n1"), "{id}");
        assert_eq!(
            got.plan.map(|p| p.name),
            Some(if id == "flood" { "free" } else { "business" }.to_string())
        );
        println!(
            "usage of {id}: {} transactions, {} bytes written, {} served, {} refused (the clients counted {txs}, {bytes}, -, {refused})",
            got.totals.transactions, got.totals.bytes_written, got.totals.bytes_served, got.totals.refused
        );
    }
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_subchain_at_its_storage_allowance_refuses_writes_and_still_serves_reads() {
    let mut ca = TestCa::start();
    let node = TestNode::start(&mut ca, "n1").await;
    let admin = ca.admin();
    let w = ca.participant("w").await;
    let ca_admin = ca.api(Some(&admin));
    ca_admin
        .post(
            "/api/v1/subchains",
            &json!({ "id": "small", "name": "small", "nodes": ["n1"], "orderers": [], "plan": "free" }),
        )
        .await
        .unwrap();
    ca_admin
        .put("/api/v1/subchains/small/members/w", &json!({ "role": "writer" }))
        .await
        .unwrap();
    let api = ca.api_at(&node.url, Some(&w));
    let info = |rev: u64| {
        let api = api.clone();
        async move {
            eventually("the node to apply the revision", Duration::from_secs(20), || async {
                api.get("/api/v1/subchains/small", &[])
                    .await
                    .ok()
                    .filter(|v| v["membership_revision"].as_u64() >= Some(rev))
            })
            .await
        }
    };
    let v = info(2).await;
    assert_eq!(v["plan"]["name"], "free", "the node shows the plan in force: {v}");
    let write = |i: usize| {
        let txs: Vec<Vec<u8>> = (0..20)
            .map(|j| sign_tx(&w, "small", vec![put(&format!("k{i}-{j}"), &"x".repeat(2000))]))
            .collect();
        let api = api.clone();
        async move {
            api.post("/api/v1/subchains/small/transactions", &submit_body(&txs))
                .await
        }
    };
    write(0).await.unwrap();
    let base = info(2).await["stored_bytes"].as_u64().unwrap();
    assert!(base > 0);

    // An administrator gives it a plan whose allowance is a megabyte more than it takes now.
    let tiny = json!({ "plan": { "name": "tiny", "tenancy": "shared", "rate": 100_000, "burst": 200_000,
                                 "storage": base + (1 << 20), "bandwidth": 1_000_000 }, "open": false });
    ca_admin.put("/api/v1/plans/tiny", &tiny).await.unwrap();
    ca_admin
        .patch("/api/v1/subchains/small", &json!({ "plan": "tiny" }))
        .await
        .unwrap();
    info(3).await;
    let mut refused = None;
    for i in 1..200 {
        match write(i).await {
            Ok(_) => {}
            Err(e) => {
                refused = Some((i, e));
                break;
            }
        }
    }
    let (at, e) = refused.expect("the allowance is reached within 200 batches of 40 KB");
    assert_eq!(slug(&e), "storage-quota", "{e}");
    assert!(matches!(e, ClientError::Problem { status: 507, .. }), "{e}");
    let v = info(3).await;
    let (height, stored) = (v["height"].as_u64(), v["stored_bytes"].as_u64().unwrap());
    assert!(
        stored >= base + (1 << 20),
        "refused at {stored} bytes, the allowance is {}",
        base + (1 << 20)
    );
    println!(
        "storage allowance reached after {at} batches: {stored} bytes stored (allowance {})",
        base + (1 << 20)
    );
    // Writes stay refused and change nothing; reads are served.
    assert_eq!(slug(&write(999).await.unwrap_err()), "storage-quota");
    let got = api.get("/api/v1/subchains/small/state/k0-0", &[]).await.unwrap();
    assert!(got.to_string().contains("k0-0"), "{got}");
    assert_eq!(info(3).await["height"].as_u64(), height, "no block for a refused write");
    // A larger plan lets it write again.
    ca_admin
        .patch("/api/v1/subchains/small", &json!({ "plan": "free" }))
        .await
        .unwrap();
    info(4).await;
    write(1000).await.unwrap();
    drop(node);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_beyond_the_bandwidth_allowance_are_delayed_not_dropped() {
    let mut ca = TestCa::start();
    let node = TestNode::start(&mut ca, "n1").await;
    let admin = ca.admin();
    let w = ca.participant("w").await;
    let ca_admin = ca.api(Some(&admin));
    // A thin plan: 50 kB/s served.
    let thin = json!({ "plan": { "name": "thin", "tenancy": "shared", "rate": 1000, "burst": 2000,
                                 "storage": 1u64 << 30, "bandwidth": 50_000 }, "open": false });
    ca_admin.put("/api/v1/plans/thin", &thin).await.unwrap();
    let api = hosted(&ca, &admin, &node, &w, &[("thin", "thin"), ("wide", "business")]).await;
    for id in ["thin", "wide"] {
        let txs: Vec<Vec<u8>> = (0..30)
            .map(|i| sign_tx(&w, id, vec![put(&format!("k{i:02}"), &"x".repeat(2000))]))
            .collect();
        api.post(&format!("/api/v1/subchains/{id}/transactions"), &submit_body(&txs))
            .await
            .unwrap();
    }
    // Two reads of the whole state (some 140 kB each) from each subchain.
    let read = |id: &'static str| {
        let api = api.clone();
        async move {
            let t = Instant::now();
            let mut bytes = 0;
            for _ in 0..2 {
                let page = api.get(&format!("/api/v1/subchains/{id}/state"), &[]).await.unwrap();
                assert_eq!(page["items"].as_array().map(Vec::len), Some(30), "every value arrives");
                bytes += page.to_string().len();
            }
            (t.elapsed(), bytes)
        }
    };
    let ((thin_took, thin_bytes), (wide_took, _)) = tokio::join!(read("thin"), read("wide"));
    println!(
        "{thin_bytes} bytes read from the thin subchain in {:.2} s (50 kB/s allowed); the same from the wide one in {:.2} s",
        thin_took.as_secs_f64(),
        wide_took.as_secs_f64()
    );
    // The first second's allowance at once, the rest at 50 kB/s.
    let floor = (thin_bytes as f64 - 50_000.0) / 50_000.0 * 0.8;
    assert!(thin_took.as_secs_f64() >= floor, "{thin_took:?} for {thin_bytes} bytes");
    assert!(
        wide_took < Duration::from_secs(1),
        "the other subchain is not slowed: {wide_took:?}"
    );
    drop(node);
}
