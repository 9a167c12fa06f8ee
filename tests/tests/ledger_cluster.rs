//! A subchain hosted on three city nodes: one Raft group across three real `ledger-node`
//! processes talking mTLS with their node certificates. Writes through any node; kill -9 of the
//! leader under load; a restarted node catches up; a minority never commits.

use std::time::{Duration, Instant};

use bsn_api::client::Api;
use bsn_tests::{Proxy, TestCa, TestNode, Writers, eventually, put, sign_tx, slug, submit_body};
use serde_json::{Value, json};

async fn chain(api: &Api) -> Vec<Value> {
    bsn_tests::chain_of(api, "demo").await
}

fn verify(blocks: &[Value]) -> Vec<[u8; 32]> {
    bsn_tests::chain_hashes(blocks)
}

async fn info(api: &Api) -> Option<Value> {
    api.get("/api/v1/subchains/demo", &[]).await.ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_nodes_replicate_survive_the_leader_and_refuse_without_a_majority() {
    let mut ca = TestCa::start();
    let names = ["n1", "n2", "n3"];
    let mut nodes = TestNode::cluster(&mut ca, &names).await;
    let admin = ca.admin();
    ca.api(Some(&admin))
        .post(
            "/api/v1/subchains",
            &json!({ "id": "demo", "name": "Demo", "nodes": names, "policy": "approval" }),
        )
        .await
        .unwrap();
    let alice = ca.participant("alice").await;
    ca.api(Some(&admin))
        .put("/api/v1/subchains/demo/members/alice", &json!({ "role": "writer" }))
        .await
        .unwrap();
    let apis: Vec<Api> = nodes.iter().map(|n| n.api(&ca, &alice)).collect();
    for api in &apis {
        eventually("every node to apply revision 2", Duration::from_secs(20), || async {
            info(api).await.filter(|v| v["membership_revision"].as_u64() == Some(2))
        })
        .await;
    }

    // A write through each node (followers forward to the leader), readable on every node.
    for (i, api) in apis.iter().enumerate() {
        let tx = sign_tx(&alice, "demo", vec![put(&format!("via-n{}", i + 1), "yes")]);
        api.post("/api/v1/subchains/demo/transactions", &submit_body(&[tx]))
            .await
            .unwrap_or_else(|e| panic!("write through n{}: {e}", i + 1));
        let v = api
            .get(&format!("/api/v1/subchains/demo/state/via-n{}", i + 1), &[])
            .await
            .expect("the node that took the write has applied it");
        assert_eq!(v["text"], "yes");
    }

    // Every node's counters agree with its chain, followers' too (they were the leader's alone).
    for (node, api) in nodes.iter().zip(&apis) {
        counters_agree(&ca, node, api, 3).await;
    }

    // Kill -9 the leader while eight writers keep writing through every node.
    let leader = info(&apis[0]).await.unwrap()["leader"].as_str().unwrap().to_string();
    let li = names.iter().position(|n| *n == leader).unwrap();
    let writers = Writers::start(&apis, &alice, "demo", 8);
    writers
        .wait_for("writes before the kill", 300, Duration::from_secs(30))
        .await;
    nodes[li].kill();
    let killed_at = writers.acked();
    let t0 = Instant::now();
    writers
        .wait_for("writes after the leader died", killed_at + 300, Duration::from_secs(30))
        .await;
    let failover = t0.elapsed();
    let acked = writers.stop().await;
    let survivor = &apis[(li + 1) % 3];
    let new_leader = info(survivor).await.unwrap()["leader"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(!new_leader.is_empty() && new_leader != leader, "a new leader took over");

    // The killed node comes back and catches up; all three end with identical chains.
    nodes[li].restart();
    let target = info(survivor).await.unwrap()["height"].as_u64().unwrap();
    let t1 = Instant::now();
    for api in &apis {
        eventually(
            "every node to reach the same height",
            Duration::from_secs(60),
            || async { info(api).await.filter(|v| v["height"].as_u64() >= Some(target)) },
        )
        .await;
    }
    let catch_up = t1.elapsed();
    let chains: Vec<Vec<[u8; 32]>> = {
        let mut v = Vec::new();
        for api in &apis {
            v.push(verify(&chain(api).await));
        }
        v
    };
    let n = chains.iter().map(Vec::len).min().unwrap();
    assert!(n as u64 > target);
    for c in &chains {
        assert_eq!(&c[..n], &chains[0][..n], "identical block hash chains");
    }
    let mut missing = 0;
    for id in &acked {
        if apis[li]
            .get(&format!("/api/v1/subchains/demo/transactions/{id}"), &[])
            .await
            .is_err()
        {
            missing += 1;
        }
    }
    assert_eq!(missing, 0, "acknowledged transactions missing on the restarted node");

    // Two of three down: the last one, the leader, never commits, and writes nothing.
    let leader = eventually("a leader after the restart", Duration::from_secs(30), || async {
        info(&apis[li])
            .await
            .and_then(|v| v["leader"].as_str().map(str::to_string))
    })
    .await;
    let keep = names.iter().position(|n| *n == leader).unwrap();
    for (i, node) in nodes.iter_mut().enumerate() {
        if i != keep {
            node.kill();
        }
    }
    let before = info(&apis[keep]).await.unwrap()["height"].as_u64().unwrap();
    let tx = sign_tx(&alice, "demo", vec![put("minority", "1")]);
    let t0 = std::time::Instant::now();
    let r = apis[keep]
        .post("/api/v1/subchains/demo/transactions", &submit_body(&[tx]))
        .await;
    let refused_in = t0.elapsed();
    let e = r.expect_err("a minority must not commit");
    // Refused by the node within its 15 s ordering deadline, whether the last node is a
    // follower or was the leader (a lone leader used to hold the request until the client's
    // own 60 s timeout).
    assert_eq!(slug(&e), "ordering-unavailable", "{e}");
    assert!(refused_in < Duration::from_secs(20), "refused after {refused_in:?}");
    assert_eq!(info(&apis[keep]).await.unwrap()["height"].as_u64().unwrap(), before);
    assert!(
        apis[keep]
            .get("/api/v1/subchains/demo/state/minority", &[])
            .await
            .is_err()
    );
    println!(
        "{} acknowledged transactions survived the leader's kill -9 (failover and 300 more writes in {} ms); \
         restarted node caught up in {} ms; {n} identical blocks on 3 nodes; a lone leader refused to commit in {} ms",
        acked.len(),
        failover.as_millis(),
        catch_up.as_millis(),
        refused_in.as_millis()
    );
}

/// Waits until `node`'s `/metrics` (read with its own node certificate) say it wrote height + 1
/// blocks (genesis included) holding `txs` transactions.
async fn counters_agree(ca: &TestCa, node: &TestNode, api: &Api, txs: u64) {
    let operator = Api::from_files(
        &node.url,
        &ca.bundle,
        Some((&node.dir.join("cert.pem"), &node.dir.join("key.pem"))),
    )
    .unwrap();
    let mut last = String::new();
    let seen = tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            if let (Some(h), Ok(text)) = (
                info(api).await.and_then(|v| v["height"].as_u64()),
                operator.get_bytes("/metrics").await,
            ) {
                let text = String::from_utf8(text).unwrap();
                let get = |name: &str| {
                    text.lines()
                        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse::<u64>().ok())
                };
                last = format!(
                    "height {h}, blocks_total {:?}, transactions_committed_total {:?}",
                    get("bsn_node_blocks_total"),
                    get("bsn_node_transactions_committed_total")
                );
                if get("bsn_node_blocks_total") == Some(h + 1)
                    && get("bsn_node_transactions_committed_total") == Some(txs)
                {
                    return;
                }
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    })
    .await;
    assert!(
        seen.is_ok(),
        "{}: the counters never agreed with the chain: {last}",
        node.name
    );
}

async fn write_some(api: &Api, who: &std::path::Path, tag: &str, n: usize) {
    for i in 0..n {
        let tx = sign_tx(who, "demo", vec![put(&format!("{tag}-{i}"), "v")]);
        api.post("/api/v1/subchains/demo/transactions", &submit_body(&[tx]))
            .await
            .unwrap_or_else(|e| panic!("write {tag}-{i}: {e}"));
    }
}

async fn voters(api: &Api) -> Vec<String> {
    info(api)
        .await
        .and_then(|v| serde_json::from_value(v["voters"].clone()).ok())
        .unwrap_or_default()
}

async fn height(api: &Api) -> Option<u64> {
    info(api).await.and_then(|v| v["height"].as_u64())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hosts_join_and_leave_the_group_as_the_ca_says_and_a_revoked_node_drops_out() {
    let mut ca = TestCa::start();
    let names = ["n1", "n2", "n3", "n4"];
    let nodes = TestNode::cluster(&mut ca, &names).await;
    let admin = ca.admin();
    let a = ca.api(Some(&admin));
    a.post(
        "/api/v1/subchains",
        &json!({ "id": "demo", "name": "Demo", "nodes": ["n1", "n2", "n3"] }),
    )
    .await
    .unwrap();
    let alice = ca.participant("alice").await;
    a.put("/api/v1/subchains/demo/members/alice", &json!({ "role": "writer" }))
        .await
        .unwrap();
    let apis: Vec<Api> = nodes.iter().map(|n| n.api(&ca, &alice)).collect();
    for api in &apis[..3] {
        eventually("the three hosts to serve", Duration::from_secs(20), || async {
            info(api).await.filter(|v| v["membership_revision"].as_u64() == Some(2))
        })
        .await;
    }
    write_some(&apis[0], &alice, "first", 30).await;
    let e = apis[3].get("/api/v1/subchains/demo", &[]).await.unwrap_err();
    assert_eq!(slug(&e), "not-hosted", "n4 does not host it yet");

    // The CA adds n4 as a host: it joins the group and catches up with the whole chain.
    a.patch("/api/v1/subchains/demo", &json!({ "nodes": ["n1", "n2", "n3", "n4"] }))
        .await
        .unwrap();
    let t0 = Instant::now();
    write_some(&apis[1], &alice, "during", 5).await;
    let target = height(&apis[1]).await.unwrap();
    eventually("n4 to catch up", Duration::from_secs(30), || async {
        height(&apis[3]).await.filter(|h| *h >= target)
    })
    .await;
    let joined = t0.elapsed();
    let c1 = verify(&chain(&apis[0]).await);
    let c4 = verify(&chain(&apis[3]).await);
    assert_eq!(
        &c4[..=target as usize],
        &c1[..=target as usize],
        "n4 has the same chain"
    );
    // And takes writes (forwarded to the leader).
    write_some(&apis[3], &alice, "via-n4", 3).await;
    assert_eq!(
        voters(&apis[3]).await,
        ["n1", "n2", "n3", "n4"],
        "n4 votes in the group"
    );

    // The CA removes n3: it stops serving the subchain; the others go on without it.
    a.patch("/api/v1/subchains/demo", &json!({ "nodes": ["n1", "n2", "n4"] }))
        .await
        .unwrap();
    eventually("n3 to stop serving the subchain", Duration::from_secs(20), || async {
        let e = apis[2].get("/api/v1/subchains/demo", &[]).await.err()?;
        (bsn_tests::slug(&e) == "not-hosted").then_some(())
    })
    .await;
    write_some(&apis[0], &alice, "after-removal", 5).await;
    // The group's leader (a new one, if n3 led it) removes n3 from the voters, so that losing
    // one more host leaves a majority.
    for api in [&apis[0], &apis[1], &apis[3]] {
        eventually("the group to drop n3", Duration::from_secs(20), || async {
            (voters(api).await == ["n1", "n2", "n4"]).then_some(())
        })
        .await;
    }

    // n4's certificate is revoked: its peers refuse it and it cannot reach them, so it falls
    // behind while n1 and n2 (a majority of three) keep committing.
    let serial = bsn_tests::leaf_of(&nodes[3].dir.join("cert.pem")).serial_hex;
    a.post(
        &format!("/api/v1/certificates/{serial}/revoke"),
        &json!({ "reason": "keyCompromise" }),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    let n4_before = height(&apis[3]).await;
    write_some(&apis[0], &alice, "after-revocation", 10).await;
    let h1 = height(&apis[0]).await.unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    let n4_after = height(&apis[3]).await;
    assert!(
        n4_after.is_none_or(|h| h < h1),
        "a revoked node must not receive new blocks (n4 {n4_before:?} -> {n4_after:?}, n1 {h1})"
    );
    println!(
        "n4 joined and caught up in {} ms; n3 removed; revoked n4 stayed at {n4_after:?} while n1 reached {h1}",
        joined.as_millis()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_cut_off_for_30_s_rejoins_and_converges() {
    let mut ca = TestCa::start();
    let names = ["n1", "n2", "n3"];
    let ports: Vec<u16> = names.iter().map(|_| bsn_tests::free_port()).collect();
    // Node i reaches node j through proxy (i, j).
    let mut proxies = std::collections::HashMap::new();
    for i in 0..3 {
        for (j, port) in ports.iter().enumerate() {
            if i != j {
                proxies.insert((i, j), Proxy::start(*port).await);
            }
        }
    }
    let mut nodes = Vec::new();
    for (i, name) in names.iter().enumerate() {
        let mut extra = format!("listen = \"127.0.0.1:{}\"\n[peers]\n", ports[i]);
        for (j, other) in names.iter().enumerate() {
            if i != j {
                extra.push_str(&format!("{other} = \"https://127.0.0.1:{}\"\n", proxies[&(i, j)].port));
            }
        }
        nodes.push(TestNode::start_with(&mut ca, name, &extra).await);
    }
    let admin = ca.admin();
    ca.api(Some(&admin))
        .post(
            "/api/v1/subchains",
            &json!({ "id": "demo", "name": "Demo", "nodes": names }),
        )
        .await
        .unwrap();
    let alice = ca.participant("alice").await;
    ca.api(Some(&admin))
        .put("/api/v1/subchains/demo/members/alice", &json!({ "role": "writer" }))
        .await
        .unwrap();
    let apis: Vec<Api> = nodes.iter().map(|n| n.api(&ca, &alice)).collect();
    for api in &apis {
        eventually("every node to serve", Duration::from_secs(20), || async {
            info(api)
                .await
                .filter(|v| v["membership_revision"].as_u64() == Some(2) && v["leader"].is_string())
        })
        .await;
    }
    write_some(&apis[0], &alice, "before", 10).await;

    // Cut the leader off from both others for 30 s; the other two elect a leader and go on.
    let leader = info(&apis[0]).await.unwrap()["leader"].as_str().unwrap().to_string();
    let x = names.iter().position(|n| *n == leader).unwrap();
    let others: Vec<usize> = (0..3).filter(|i| *i != x).collect();
    for ((i, j), p) in &proxies {
        if *i == x || *j == x {
            p.set_blocked(true);
        }
    }
    let t0 = Instant::now();
    let mut acked = 0;
    let mut i = 0;
    while t0.elapsed() < Duration::from_secs(30) {
        let api = &apis[others[i % 2]];
        let tx = sign_tx(&alice, "demo", vec![put(&format!("during-{i}"), "v")]);
        match api
            .post("/api/v1/subchains/demo/transactions", &submit_body(&[tx]))
            .await
        {
            Ok(_) => acked += 1,
            Err(e) => eprintln!("during the partition, via {}: {e}", names[others[i % 2]]),
        }
        i += 1;
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(
        acked > 50,
        "the majority kept committing while the leader was cut off ({acked})"
    );
    let new_leader = info(&apis[others[0]]).await.unwrap()["leader"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(new_leader, leader, "the majority elected another leader");
    let isolated = height(&apis[x]).await.unwrap();

    // Heal: the cut-off node rejoins and ends with the same chain.
    for p in proxies.values() {
        p.set_blocked(false);
    }
    let t1 = Instant::now();
    write_some(&apis[others[0]], &alice, "after", 3).await;
    let target = height(&apis[others[0]]).await.unwrap();
    eventually("the cut-off node to converge", Duration::from_secs(60), || async {
        height(&apis[x]).await.filter(|h| *h >= target)
    })
    .await;
    let healed = t1.elapsed();
    let a = verify(&chain(&apis[x]).await);
    let b = verify(&chain(&apis[others[0]]).await);
    let n = a.len().min(b.len());
    assert_eq!(&a[..n], &b[..n], "identical block hash chains after the partition");
    let v = apis[x].get("/api/v1/subchains/demo/state/during-0", &[]).await;
    assert!(
        v.is_ok() || acked == 0,
        "writes made during the partition reached the rejoined node"
    );
    println!(
        "{acked} writes committed by the majority during a 30 s partition of the leader (which stayed at height {isolated}); \
         it rejoined and converged {} ms after healing; {n} identical blocks",
        healed.as_millis()
    );
}
