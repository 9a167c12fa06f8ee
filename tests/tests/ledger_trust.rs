//! Trust boundaries at a ledger node: it authorises before it reads a body and bounds what a
//! body may be; node-to-node routes answer with problem documents; block streams are capped
//! per identity; `/metrics` is for operators; `Last-Event-ID` cannot wrap; silent, half-sent
//! and idle connections are closed. A real CA and a real node process.

use std::time::{Duration, Instant};

use bsn_api::client::Api;
use bsn_tests::{
    TestCa, TestNode, closed_within, eventually, put, raw_client, rss_kib, sign_tx, slug, submit_body, tls_connect,
};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn setup(ca: &mut TestCa, node: &TestNode) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let admin = ca.admin();
    ca.api(Some(&admin))
        .post(
            "/api/v1/subchains",
            &json!({ "id": "demo", "name": "Demo", "nodes": [node.name], "policy": "approval" }),
        )
        .await
        .expect("create subchain");
    let writer = ca.participant("writer").await;
    let reader = ca.participant("reader").await;
    let stranger = ca.participant("stranger").await;
    for (id, role) in [("writer", "writer"), ("reader", "reader")] {
        ca.api(Some(&admin))
            .put(
                &format!("/api/v1/subchains/demo/members/{id}"),
                &json!({ "role": role }),
            )
            .await
            .unwrap();
    }
    let api = node.api(ca, &reader);
    eventually("the node to admit the reader", Duration::from_secs(15), || async {
        api.get("/api/v1/subchains/demo", &[])
            .await
            .ok()
            .filter(|v| v["membership_revision"].as_u64() >= Some(3))
    })
    .await;
    (writer, reader, stranger)
}

async fn node_identity(ca: &mut TestCa, id: &str) -> std::path::PathBuf {
    let secret = ca
        .register(
            id,
            json!({ "type": "node", "dns_names": ["localhost"], "ip_addresses": ["127.0.0.1"] }),
        )
        .await;
    let dir = ca.dir.path().join(id);
    assert!(ca.bsn_enroll(id, &secret, &dir).status.success());
    dir
}

/// Regression: ten 60 MiB bodies from an enrolled non-member took a node to 800 MB before it
/// looked at who was asking.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_authorises_before_it_reads_a_body_and_bounds_bodies() {
    let mut ca = TestCa::start();
    let node = TestNode::start(&mut ca, "n1").await;
    let (writer, reader, stranger) = setup(&mut ca, &node).await;
    let pid = node.pid().unwrap();
    let before = rss_kib(pid);

    // Ten concurrent 60 MiB bodies from a non-member: each refused at once, memory flat.
    let big = bytes_of(60 << 20);
    let client = raw_client(&ca, Some(&stranger), None);
    let mut tasks = Vec::new();
    for _ in 0..10 {
        let (client, url, big) = (client.clone(), node.url.clone(), big.clone());
        tasks.push(tokio::spawn(async move {
            let t = Instant::now();
            let r = client
                .post(format!("{url}/api/v1/subchains/demo/transactions"))
                .header("content-type", "application/json")
                .body(big)
                .send()
                .await;
            (r.map(|r| r.status().as_u16()), t.elapsed())
        }));
    }
    let mut peak = before;
    for t in tasks {
        let (status, took) = t.await.unwrap();
        peak = peak.max(rss_kib(pid));
        // The node answers 403 at once; a client still uploading may see the stream reset.
        if let Ok(s) = status {
            assert_eq!(s, 403);
        }
        assert!(took < Duration::from_secs(10), "{took:?}");
    }
    println!("node RSS before {before} KiB, peak under 10 x 60 MiB from a non-member {peak} KiB");
    assert!(
        peak < before + 64 * 1024,
        "node memory grew from {before} to {peak} KiB"
    );
    let e = node
        .api(&ca, &stranger)
        .post("/api/v1/subchains/demo/transactions", &json!({ "transactions": [] }))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "not-a-member");

    // A member's body over the route's limit: 413 before it is read.
    let w = raw_client(&ca, Some(&writer), None);
    let r = w
        .post(format!("{}/api/v1/subchains/demo/transactions", node.url))
        .header("content-type", "application/json")
        .body(bytes_of(9 << 20))
        .send()
        .await;
    if let Ok(r) = r {
        assert_eq!(r.status().as_u16(), 413);
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "application/problem+json"
        );
    }
    // A reader's write is refused by role, not by its body.
    let e = node
        .api(&ca, &reader)
        .post(
            "/api/v1/subchains/demo/transactions",
            &json!("not even the right shape"),
        )
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "role-required");
    // The writer still writes.
    let tx = sign_tx(&writer, "demo", vec![put("k", "v")]);
    node.api(&ca, &writer)
        .post("/api/v1/subchains/demo/transactions", &submit_body(&[tx]))
        .await
        .unwrap();

    // Node-to-node routes: problem documents, authorisation first.
    for (who, want) in [(&writer, "not-a-host")] {
        let r = raw_client(&ca, Some(who), None)
            .post(format!("{}/raft/v1/demo/vote", node.url))
            .header("content-type", "application/json")
            .body("{ not json")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 403);
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "application/problem+json"
        );
        let v: serde_json::Value = r.json().await.unwrap();
        assert_eq!(v["type"], format!("urn:bsn:problem:{want}"));
    }
    let other = node_identity(&mut ca, "n2").await;
    let r = raw_client(&ca, Some(&other), None)
        .post(format!("{}/raft/v1/demo/append", node.url))
        .header("content-type", "application/json")
        .body("{}")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 403, "a node that does not host the subchain");
    let own = node.dir.clone();
    let r = raw_client(&ca, Some(&own), None)
        .post(format!("{}/raft/v1/demo/vote", node.url))
        .header("content-type", "application/json")
        .body("{ not json")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400, "a host's malformed message");
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );
    let r = raw_client(&ca, Some(&own), None)
        .get(format!("{}/raft/v1/demo/vote", node.url))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.headers()["content-type"].to_str().unwrap(),
        "application/problem+json"
    );

    // /metrics: node identities only.
    let e = node.api(&ca, &reader).get_bytes("/metrics").await.unwrap_err();
    assert_eq!(slug(&e), "forbidden");
    let text = String::from_utf8(
        Api::from_files(
            &node.url,
            &ca.bundle,
            Some((&other.join("cert.pem"), &other.join("key.pem"))),
        )
        .unwrap()
        .get_bytes("/metrics")
        .await
        .unwrap(),
    )
    .unwrap();
    assert!(text.contains("bsn_node_connections_open "), "{text}");
}

fn bytes_of(n: usize) -> Vec<u8> {
    vec![b' '; n]
}

/// Regression: `Last-Event-ID: 18446744073709551615` wrapped to 0 and replayed the chain; one
/// identity could open any number of block streams.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn block_streams_resume_safely_and_are_capped_per_identity() {
    let mut ca = TestCa::start();
    let node = TestNode::start(&mut ca, "n1").await;
    let (_writer, reader, _stranger) = setup(&mut ca, &node).await;
    let r = raw_client(&ca, Some(&reader), None)
        .get(format!("{}/api/v1/subchains/demo/blocks/stream", node.url))
        .header("last-event-id", u64::MAX.to_string())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["type"], "urn:bsn:problem:invalid-request");

    let api = node.api(&ca, &reader);
    let mut open = Vec::new();
    for _ in 0..8 {
        open.push(
            api.events("/api/v1/subchains/demo/blocks/stream", &[])
                .await
                .expect("within the cap"),
        );
    }
    let e = api
        .events("/api/v1/subchains/demo/blocks/stream", &[])
        .await
        .err()
        .expect("over the cap");
    assert_eq!(slug(&e), "too-many-requests");
    drop(open.pop());
    eventually("a stream slot to come back", Duration::from_secs(20), || async {
        api.events("/api/v1/subchains/demo/blocks/stream", &[])
            .await
            .ok()
            .map(|_| ())
    })
    .await;
}

/// Regression: an authenticated idle or half-sent request stayed open indefinitely.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_closes_half_sent_and_idle_connections() {
    let mut ca = TestCa::start();
    let node = TestNode::start_with(
        &mut ca,
        "n1",
        "handshake_timeout_secs = 2\nheader_timeout_secs = 2\nidle_timeout_secs = 3\nbody_timeout_secs = 2",
    )
    .await;
    let (writer, reader, _) = setup(&mut ca, &node).await;
    let mut silent = tokio::net::TcpStream::connect(node.url.trim_start_matches("https://"))
        .await
        .unwrap();
    closed_within(&mut silent, Duration::from_secs(6)).await;
    let mut half = tls_connect(&ca, &node.url, Some(&reader), true).await;
    half.write_all(b"GET /api/v1/subchains/demo HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    closed_within(&mut half, Duration::from_secs(6)).await;
    let mut idle = tls_connect(&ca, &node.url, Some(&reader), true).await;
    idle.write_all(b"GET /api/v1/subchains/demo HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let took = closed_within(&mut idle, Duration::from_secs(8)).await;
    assert!(took >= Duration::from_millis(2500), "{took:?}");
    // A body that never arrives whole is cut at its deadline.
    let mut slow = tls_connect(&ca, &node.url, Some(&writer), true).await;
    slow.write_all(
        b"POST /api/v1/subchains/demo/transactions HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 5000\r\n\r\n{",
    )
    .await
    .unwrap();
    let mut resp = Vec::new();
    let t = Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(8), slow.read_to_end(&mut resp)).await;
    assert!(t.elapsed() < Duration::from_secs(8), "the slow body was not cut");
    assert!(
        String::from_utf8_lossy(&resp).contains("400"),
        "{}",
        String::from_utf8_lossy(&resp)
    );
    // A block stream is a request in flight: never idle-closed (it gets keep-alives).
    let mut stream = node
        .api(&ca, &reader)
        .events("/api/v1/subchains/demo/blocks/stream", &[])
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), stream.next()).await;
    assert!(matches!(first, Ok(Ok(Some(_)))), "the genesis block arrives");
    tokio::time::sleep(Duration::from_secs(5)).await;
    let tx = sign_tx(&writer, "demo", vec![put("after", "idle")]);
    node.api(&ca, &writer)
        .post("/api/v1/subchains/demo/transactions", &submit_body(&[tx]))
        .await
        .unwrap();
    let next = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            match stream.next().await {
                Ok(Some(e)) if e.data.contains("after") => return true,
                Ok(Some(_)) => continue,
                _ => return false,
            }
        }
    })
    .await;
    assert_eq!(next, Ok(true), "the stream outlived the idle deadline");
}

/// Node-to-node traffic keeps working while the public gateway is full: node identities use
/// capacity participants cannot take.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn node_traffic_uses_reserved_capacity_when_the_gateway_is_full() {
    let mut ca = TestCa::start();
    // 600 connections, 512 of them reserved for node identities: the public may hold 88.
    let nodes = TestNode::cluster_with(
        &mut ca,
        &["n1", "n2"],
        "max_connections = 600\nheader_timeout_secs = 120\nidle_timeout_secs = 120",
    )
    .await;
    let admin = ca.admin();
    let a = ca.api(Some(&admin));
    a.post(
        "/api/v1/subchains",
        &json!({ "id": "demo", "name": "Demo", "nodes": ["n1"], "policy": "approval" }),
    )
    .await
    .unwrap();
    let writer = ca.participant("writer").await;
    let stranger = ca.participant("stranger").await;
    a.put("/api/v1/subchains/demo/members/writer", &json!({ "role": "writer" }))
        .await
        .unwrap();
    let n1 = nodes[0].api(&ca, &writer);
    let n2 = nodes[1].api(&ca, &writer);
    eventually("n1 to serve", Duration::from_secs(20), || async {
        n1.get("/api/v1/subchains/demo", &[])
            .await
            .ok()
            .filter(|v| v["membership_revision"].as_u64() >= Some(2))
    })
    .await;
    for i in 0..3 {
        let tx = sign_tx(&writer, "demo", vec![put(&format!("before{i}"), "v")]);
        n1.post("/api/v1/subchains/demo/transactions", &submit_body(&[tx]))
            .await
            .unwrap();
    }

    // A stranger fills n1's public capacity with idle authenticated connections.
    let mut held = Vec::new();
    for _ in 0..100 {
        held.push(tls_connect(&ca, &nodes[0].url, Some(&stranger), true).await);
    }
    let e = Api::from_files(
        &nodes[0].url,
        &ca.bundle,
        Some((&stranger.join("cert.pem"), &stranger.join("key.pem"))),
    )
    .unwrap()
    .get("/api/v1/subchains", &[])
    .await
    .unwrap_err();
    assert!(
        matches!(e, bsn_api::client::ClientError::Transport { .. }),
        "a new public connection is refused while the gateway is full: {e}"
    );

    // The CA adds n2 as a host: it joins the group through n1 (new node-to-node connections
    // into the full gateway), catches up, and forwards a write to the leader.
    a.patch("/api/v1/subchains/demo", &json!({ "nodes": ["n1", "n2"] }))
        .await
        .unwrap();
    let target = n1.get("/api/v1/subchains/demo", &[]).await.unwrap()["height"]
        .as_u64()
        .unwrap();
    eventually("n2 to catch up through n1", Duration::from_secs(30), || async {
        n2.get("/api/v1/subchains/demo", &[])
            .await
            .ok()
            .filter(|v| v["height"].as_u64() >= Some(target))
    })
    .await;
    let tx = sign_tx(&writer, "demo", vec![put("through-n2", "v")]);
    n2.post("/api/v1/subchains/demo/transactions", &submit_body(&[tx]))
        .await
        .expect("a write through n2 is ordered by the group");
    let v = n1.get("/api/v1/subchains/demo/state/through-n2", &[]).await.unwrap();
    assert_eq!(v["text"], "v");
    drop(held);
}
