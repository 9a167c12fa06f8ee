//! Idle subchains hibernate and wake (issue 19), with real processes: a subchain nobody uses
//! closes its file and stops its ordering; the first request wakes it and is answered; a city
//! node whose copy of a subchain hibernates hears from the orderers' tip feed that another city
//! node wrote to it, and serves the write without being asked to wake. On SQLite or PostgreSQL
//! (BSN_TEST_DATABASE).

use std::time::{Duration, Instant};

use bsn_api::client::Api;
use bsn_tests::{TestCa, TestNode, commit_latency, eventually, put, sign_tx, submit_body};
use serde_json::json;

/// Hibernate after one idle second, so the tests need not wait long.
const QUICK: &str = "idle_close_secs = 1";

async fn state(api: &Api, subchain: &str, key: &str) -> Option<String> {
    let v = api
        .get(&format!("/api/v1/subchains/{subchain}/state/{key}"), &[])
        .await
        .ok()?;
    v["text"].as_str().map(str::to_string)
}

async fn hibernated(ca: &TestCa, node: &TestNode, at_least: f64) {
    eventually(
        &format!("{} to hibernate {at_least} subchains", node.name),
        Duration::from_secs(30),
        || async { (node.metric(ca, "bsn_node_subchains_hibernated_total").await >= at_least).then_some(()) },
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_idle_subchain_closes_its_file_and_the_first_request_wakes_it() {
    let mut ca = TestCa::start();
    let node = TestNode::start_with(&mut ca, "n1", QUICK).await;
    let admin = ca.admin();
    let a = ca.api(Some(&admin));
    let alice = ca.participant("alice").await;
    let files_before = node.open_files();
    for i in 0..20 {
        let id = format!("quiet-{i:02}");
        a.post("/api/v1/subchains", &json!({ "id": id, "name": id, "nodes": ["n1"] }))
            .await
            .unwrap();
        a.put(
            &format!("/api/v1/subchains/{id}/members/alice"),
            &json!({ "role": "writer" }),
        )
        .await
        .unwrap();
    }
    let n = node.api(&ca, &alice);
    let mut written = Vec::new();
    for i in 0..20 {
        let id = format!("quiet-{i:02}");
        eventually("the node to apply the membership", Duration::from_secs(30), || async {
            n.get(&format!("/api/v1/subchains/{id}"), &[])
                .await
                .ok()
                .filter(|v| v["membership_revision"] == 2)
        })
        .await;
        let tx = sign_tx(&alice, &id, vec![put("k", &format!("v{i}"))]);
        let r = n
            .post(&format!("/api/v1/subchains/{id}/transactions"), &submit_body(&[tx]))
            .await
            .unwrap();
        written.push(r["results"][0]["height"].as_u64().expect("a height"));
    }
    // Each subchain's file closed once nobody used it for a second.
    hibernated(&ca, &node, 20.0).await;
    let files_idle = node.open_files();
    assert!(
        files_idle < files_before + 5,
        "20 hibernating subchains hold no file: {files_before} before, {files_idle} now"
    );
    // The list still gives each height without waking anything.
    let woken = node.metric(&ca, "bsn_node_subchains_woken_total").await;
    let list = n.get("/api/v1/subchains", &[]).await.unwrap();
    let heights: Vec<u64> = list["subchains"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["height"].as_u64().expect("a height for each"))
        .collect();
    assert_eq!(heights, written, "each where its write left it: {list}");
    assert_eq!(
        node.metric(&ca, "bsn_node_subchains_woken_total").await,
        woken,
        "listing wakes nothing"
    );

    // A read wakes one subchain and sees what was written before it slept; a write continues
    // its chain.
    assert_eq!(state(&n, "quiet-07", "k").await.as_deref(), Some("v7"));
    let t = Instant::now();
    let tx = sign_tx(&alice, "quiet-03", vec![put("k", "again")]);
    let r = n
        .post("/api/v1/subchains/quiet-03/transactions", &submit_body(&[tx]))
        .await
        .unwrap();
    let cold_ms = t.elapsed().as_secs_f64() * 1000.0;
    assert_eq!(r["results"][0]["height"].as_u64(), Some(written[3] + 1), "{r}");
    assert_eq!(state(&n, "quiet-03", "k").await.as_deref(), Some("again"));
    // The same node, busy: writes in a row to a subchain kept open by them.
    let (busy_p50, _) = commit_latency(&n, &alice, "quiet-05", "busy", 30).await;
    println!(
        "first write to a hibernating subchain: {cold_ms:.1} ms; busy subchain p50 {busy_p50:.1} ms ({:.2}x)",
        cold_ms / busy_p50
    );
    // And it sleeps again.
    hibernated(&ca, &node, 23.0).await;
    // A restart finds every subchain where it was.
    let mut node = node;
    node.kill();
    node.restart();
    let n = node.api(&ca, &alice);
    eventually("quiet-03 after a restart", Duration::from_secs(30), || async {
        state(&n, "quiet-03", "k").await.filter(|v| v == "again")
    })
    .await;
    let v = n.get("/api/v1/subchains/quiet-05", &[]).await.unwrap();
    assert_eq!(v["height"].as_u64(), Some(written[5] + 30), "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hibernating_orderers_and_city_nodes_wake_for_a_write_and_the_tip_feed_tells_the_others() {
    let mut ca = TestCa::start();
    let orderers = TestNode::three_orderers(&mut ca, QUICK).await;
    let mut cities = Vec::new();
    for name in ["n1", "n2"] {
        cities.push(TestNode::start_as(&mut ca, name, "node", "local", QUICK).await);
    }
    let admin = ca.admin();
    let a = ca.api(Some(&admin));
    a.post(
        "/api/v1/subchains",
        &json!({ "id": "demo", "name": "Demo", "nodes": ["n1", "n2"] }),
    )
    .await
    .unwrap();
    let alice = ca.participant("alice").await;
    a.put("/api/v1/subchains/demo/members/alice", &json!({ "role": "writer" }))
        .await
        .unwrap();
    let n: Vec<Api> = cities.iter().map(|c| c.api(&ca, &alice)).collect();
    for api in &n {
        eventually(
            "both city nodes to apply revision 2",
            Duration::from_secs(30),
            || async {
                api.get("/api/v1/subchains/demo", &[])
                    .await
                    .ok()
                    .filter(|v| v["membership_revision"] == 2)
            },
        )
        .await;
    }
    let (busy_p50, _) = commit_latency(&n[0], &alice, "demo", "busy", 30).await;
    for round in 0..2 {
        // Everything sleeps: the three orderers' group and both city nodes' copies.
        let base = round as f64;
        for node in orderers.iter().chain(&cities) {
            hibernated(&ca, node, base + 1.0).await;
        }
        // A write through n2 wakes n2's copy, the orderers' group (the leader restores itself
        // from its log and vote) and commits.
        let key = format!("after-sleep-{round}");
        let woken = cities[0].metric(&ca, "bsn_node_subchains_woken_total").await;
        let tx = sign_tx(&alice, "demo", vec![put(&key, "yes")]);
        let t = Instant::now();
        n[1].post("/api/v1/subchains/demo/transactions", &submit_body(&[tx]))
            .await
            .unwrap_or_else(|e| panic!("write after hibernation: {e}"));
        let cold_ms = t.elapsed().as_secs_f64() * 1000.0;
        println!(
            "round {round}: first write after every node hibernated: {cold_ms:.1} ms; busy p50 {busy_p50:.1} ms ({:.2}x)",
            cold_ms / busy_p50
        );
        // n1's copy still hibernates: the orderers' tip feed tells it to wake and pull, without
        // anyone asking n1 for the subchain first.
        eventually("n1 to wake from the tip feed", Duration::from_secs(15), || async {
            (cities[0].metric(&ca, "bsn_node_subchains_woken_total").await > woken).then_some(())
        })
        .await;
        eventually(
            "n1 to serve the write made through n2",
            Duration::from_secs(15),
            || async { state(&n[0], "demo", &key).await },
        )
        .await;
    }
    // Both copies hold the same chain.
    let one = bsn_tests::chain_hashes(&bsn_tests::chain_of(&n[0], "demo").await);
    let two = bsn_tests::chain_hashes(&bsn_tests::chain_of(&n[1], "demo").await);
    assert_eq!(one, two);
}
