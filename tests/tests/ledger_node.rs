//! The ledger node end to end: a real CA and a real `ledger-node` process, driven over mTLS by
//! `bsn`'s client, `curl` and `openssl s_client`. Membership comes from the CA; the node must
//! follow it (admit, demote, remove) and revocations (refuse new connections, cut open ones).

use std::path::Path;
use std::time::{Duration, Instant};

use bsn_api::client::{Api, ClientError};
use bsn_tests::{TestCa, TestNode, eventually, put, sign_tx, slug, submit_body};
use identity::ledger::{Block, check_entry, sha256};
use serde_json::{Value, json};

async fn setup(ca: &mut TestCa, node: &TestNode, members: &[(&str, &str)]) -> Vec<std::path::PathBuf> {
    let admin = ca.admin();
    ca.api(Some(&admin))
        .post(
            "/api/v1/subchains",
            &json!({ "id": "demo", "name": "Demo", "nodes": [node.name], "policy": "approval" }),
        )
        .await
        .expect("create subchain");
    let mut dirs = Vec::new();
    for (id, role) in members {
        let d = ca.participant(id).await;
        if !role.is_empty() {
            ca.api(Some(&admin))
                .put(
                    &format!("/api/v1/subchains/demo/members/{id}"),
                    &json!({ "role": role }),
                )
                .await
                .expect("add member");
        }
        dirs.push(d);
    }
    dirs
}

async fn info(api: &Api) -> Result<Value, ClientError> {
    api.get("/api/v1/subchains/demo", &[]).await
}

/// Waits until the node has applied membership revision `rev`.
async fn wait_revision(api: &Api, rev: u64) -> Value {
    eventually(
        "the node to apply the membership revision",
        Duration::from_secs(10),
        || async {
            info(api)
                .await
                .ok()
                .filter(|v| v["membership_revision"].as_u64() >= Some(rev))
        },
    )
    .await
}

async fn submit(api: &Api, txs: &[Vec<u8>]) -> Result<Value, ClientError> {
    api.post("/api/v1/subchains/demo/transactions", &submit_body(txs)).await
}

async fn refused(api: &Api, body: &Value) -> String {
    let e = api
        .post("/api/v1/subchains/demo/transactions", body)
        .await
        .expect_err("must be refused");
    slug(&e)
}

fn verify_chain(blocks: &[Value]) -> usize {
    let mut prev: Option<[u8; 32]> = None;
    for (i, v) in blocks.iter().enumerate() {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(v["encoded"].as_str().unwrap())
            .unwrap();
        let b = Block::decode(&raw).expect("block decodes and its entries match its root");
        assert_eq!(b.header.height, i as u64, "heights are contiguous from 0");
        assert_eq!(
            b.header.previous,
            prev.unwrap_or([0; 32]),
            "block {i} extends the one before"
        );
        prev = Some(b.header.hash());
    }
    blocks.len()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn members_write_and_read_and_the_ca_decides_who_may() {
    let mut ca = TestCa::start();
    let node = TestNode::start(&mut ca, "n1").await;
    let dirs = setup(&mut ca, &node, &[("alice", "writer"), ("bob", "reader"), ("carol", "")]).await;
    let (alice, bob, carol) = (
        node.api(&ca, &dirs[0]),
        node.api(&ca, &dirs[1]),
        node.api(&ca, &dirs[2]),
    );
    wait_revision(&alice, 3).await;

    // A writer submits and the answer comes after the commit: block height and index.
    let tx = sign_tx(&dirs[0], "demo", vec![put("color", "blue"), put("size", "10")]);
    let id = hex::encode(identity::ledger::tx_id(&tx).unwrap());
    let r = submit(&alice, std::slice::from_ref(&tx)).await.expect("writer submits");
    let height = r["results"][0]["height"].as_u64().unwrap();
    assert_eq!(r["results"][0]["id"], id);
    // A reader reads it back, with a proof of inclusion that checks against the block header.
    let v = bob.get("/api/v1/subchains/demo/state/color", &[]).await.unwrap();
    assert_eq!((v["text"].as_str(), v["height"].as_u64()), (Some("blue"), Some(height)));
    let t = bob
        .get(&format!("/api/v1/subchains/demo/transactions/{id}"), &[])
        .await
        .unwrap();
    use base64::Engine;
    let header = identity::ledger::BlockHeader::decode(
        &base64::engine::general_purpose::STANDARD
            .decode(t["header"].as_str().unwrap())
            .unwrap(),
    )
    .unwrap();
    let proof: Vec<[u8; 32]> = t["proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| hex::decode(h.as_str().unwrap()).unwrap().try_into().unwrap())
        .collect();
    assert!(check_entry(
        &proof,
        header.entry_count as u64,
        header.entries_root,
        t["index"].as_u64().unwrap(),
        &sha256(&tx)
    ));
    assert_eq!(t["transaction"]["creator"], "alice");
    let range = bob
        .get(
            "/api/v1/subchains/demo/state",
            &[("start", "a".into()), ("end", "z".into())],
        )
        .await
        .unwrap();
    assert_eq!(range["items"].as_array().unwrap().len(), 2);

    // Refusals, each at its layer, and nothing written by any of them.
    let before = info(&alice).await.unwrap();
    let e = submit(&bob, &[sign_tx(&dirs[1], "demo", vec![put("k", "v")])])
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "role-required", "a reader may not submit");
    let e = carol.get("/api/v1/subchains/demo/state/color", &[]).await.unwrap_err();
    assert_eq!(slug(&e), "not-a-member");
    assert!(matches!(e, ClientError::Problem { status: 403, .. }));
    let e = alice.get("/api/v1/subchains/nowhere", &[]).await.unwrap_err();
    assert_eq!(slug(&e), "not-hosted");
    let mut bad_sig = sign_tx(&dirs[0], "demo", vec![put("k", "v")]);
    let last = bad_sig.len() - 1;
    bad_sig[last] ^= 0x55;
    let foreign = foreign_signed_tx(&dirs[0]);
    let twice = sign_tx(&dirs[0], "demo", vec![put("twice", "1")]);
    let cases: Vec<(&str, Value, &str)> = vec![
        (
            "replayed id",
            submit_body(std::slice::from_ref(&tx)),
            "duplicate-transaction",
        ),
        (
            "twice in one request",
            submit_body(&[twice.clone(), twice]),
            "duplicate-transaction",
        ),
        ("bad signature", submit_body(&[bad_sig]), "bad-signature"),
        ("random bytes", submit_body(&[vec![7u8; 300]]), "malformed-transaction"),
        ("empty", submit_body(&[vec![]]), "malformed-transaction"),
        (
            "oversized",
            submit_body(&[vec![1u8; 200 * 1024]]),
            "malformed-transaction",
        ),
        (
            "not base64",
            json!({ "transactions": ["***"] }),
            "malformed-transaction",
        ),
        ("no transactions", json!({ "transactions": [] }), "invalid-request"),
        (
            "unknown field",
            json!({ "transactions": [], "x": 1 }),
            "invalid-request",
        ),
        (
            "other subchain",
            submit_body(&[sign_tx(&dirs[0], "other", vec![put("k", "v")])]),
            "wrong-subchain",
        ),
        (
            "creator is a reader",
            submit_body(&[sign_tx(&dirs[1], "demo", vec![put("k", "v")])]),
            "not-a-writer",
        ),
        (
            "creator is not a member",
            submit_body(&[sign_tx(&dirs[2], "demo", vec![put("k", "v")])]),
            "not-a-writer",
        ),
        (
            "creator certificate from another CA",
            submit_body(&[foreign]),
            "creator-refused",
        ),
        (
            "one bad among good",
            submit_body(&[
                sign_tx(&dirs[0], "demo", vec![put("good", "1")]),
                sign_tx(&dirs[1], "demo", vec![put("k", "v")]),
            ]),
            "not-a-writer",
        ),
    ];
    let mut too_many = Vec::new();
    for i in 0..1001 {
        too_many.push(sign_tx(&dirs[0], "demo", vec![put(&format!("k{i}"), "v")]));
    }
    let n = cases.len() + 1;
    for (what, body, want) in cases {
        assert_eq!(refused(&alice, &body).await, want, "{what}");
    }
    assert_eq!(
        refused(&alice, &submit_body(&too_many)).await,
        "invalid-request",
        "1001 transactions"
    );
    let after = info(&alice).await.unwrap();
    assert_eq!(
        (&before["height"], &before["transactions"]),
        (&after["height"], &after["transactions"]),
        "{n} refused requests wrote nothing"
    );
    assert!(bob.get("/api/v1/subchains/demo/state/good", &[]).await.is_err());

    // The CA promotes bob: his next write goes through. The CA removes alice: hers is refused.
    let admin = ca.admin();
    ca.api(Some(&admin))
        .put("/api/v1/subchains/demo/members/bob", &json!({ "role": "writer" }))
        .await
        .unwrap();
    ca.api(Some(&admin))
        .delete("/api/v1/subchains/demo/members/alice")
        .await
        .unwrap();
    let t0 = Instant::now();
    // Poll with a read: a write made while polling could land before the removal arrives (the
    // CA answers the removal before its feed event reaches the node), and then "late" exists.
    eventually("alice's removal to reach the node", Duration::from_secs(5), || async {
        let e = alice.get("/api/v1/subchains/demo", &[]).await.err()?;
        (slug(&e) == "not-a-member").then_some(())
    })
    .await;
    let removal_ms = t0.elapsed().as_millis();
    let e = submit(&alice, &[sign_tx(&dirs[0], "demo", vec![put("late", "1")])])
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "not-a-member");
    submit(&bob, &[sign_tx(&dirs[1], "demo", vec![put("bob", "writes")])])
        .await
        .expect("bob is a writer now");
    assert!(bob.get("/api/v1/subchains/demo/state/late", &[]).await.is_err());
    // Both revisions are on the chain as config blocks, and the chain verifies.
    let v = wait_revision(&bob, 5).await;
    assert_eq!(v["membership_revision"], 5);
    let blocks = bsn_tests::chain_of(&bob, "demo").await;
    // Config blocks carry increasing revisions up to the one in force (two changes that reach the
    // node together may enter as one config block: the newer statement).
    let revisions: Vec<u64> = blocks
        .iter()
        .filter(|b| b["kind"] == "config")
        .map(|b| b["membership_revision"].as_u64().unwrap())
        .collect();
    assert!(
        revisions.windows(2).all(|w| w[0] < w[1]),
        "config revisions increase: {revisions:?}"
    );
    assert_eq!(revisions.last(), Some(&5), "{revisions:?}");
    assert_eq!(blocks[0]["kind"], "config", "the genesis block is a config block");
    // Every transaction block was cut under the revision in force before it.
    let mut in_force = 0;
    for b in &blocks {
        if b["kind"] == "config" {
            in_force = b["membership_revision"].as_u64().unwrap();
        } else {
            assert_eq!(b["membership_revision"].as_u64().unwrap(), in_force);
        }
    }
    // The admin sees the signed statement in force; a writer may not.
    let e = bob.get("/api/v1/subchains/demo/membership", &[]).await.unwrap_err();
    assert_eq!(slug(&e), "role-required");
    let st = node
        .api(&ca, &admin)
        .get("/api/v1/subchains/demo/membership", &[])
        .await
        .unwrap();
    let env: identity::membership::Envelope = serde_json::from_value(st).unwrap();
    let key = identity::membership::MembershipKey::from_base64(
        ca.api(None).get("/api/v1/membership-key", &[]).await.unwrap()["key"]
            .as_str()
            .unwrap(),
    )
    .unwrap();
    let s = key.verify_statement(&env).unwrap();
    assert_eq!((s.revision, s.role_of("alice")), (5, None));
    println!(
        "{} blocks verified; {n} bad requests refused with nothing written; removal reached the node in {removal_ms} ms",
        verify_chain(&blocks)
    );
}

/// A transaction signed by a key whose certificate another CA issued (same SPIFFE name).
fn foreign_signed_tx(like: &Path) -> Vec<u8> {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = foreign_leaf(dir.path());
    std::fs::copy(&cert, dir.path().join("cert.pem")).unwrap();
    std::fs::copy(&key, dir.path().join("key.pem")).unwrap();
    let _ = like;
    sign_tx(dir.path(), "demo", vec![put("k", "v")])
}

/// A self-made CA and a leaf that looks like a BSN participant's; returns (cert.pem, key.pem).
fn foreign_leaf(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    use rcgen::{BasicConstraints, CertificateParams, ExtendedKeyUsagePurpose, IsCa, KeyPair, SanType};
    let ca_key = KeyPair::generate().unwrap();
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca_params.self_signed(&ca_key).unwrap();
    let issuer = rcgen::Issuer::new(ca_params, ca_key);
    let key = KeyPair::generate().unwrap();
    let mut p = CertificateParams::new(Vec::<String>::new()).unwrap();
    p.subject_alt_names = vec![SanType::URI(
        "spiffe://test.example/participant/alice".try_into().unwrap(),
    )];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth, ExtendedKeyUsagePurpose::ServerAuth];
    p.key_usages = vec![rcgen::KeyUsagePurpose::DigitalSignature];
    let leaf = p.signed_by(&key, &issuer).unwrap();
    let c = dir.join("foreign-cert.pem");
    let k = dir.join("foreign-key.pem");
    std::fs::write(&c, format!("{}{}", leaf.pem(), ca_cert.pem())).unwrap();
    std::fs::write(&k, key.serialize_pem()).unwrap();
    (c, k)
}

fn curl(node: &TestNode, ca: &TestCa, cert: Option<(&Path, &Path)>) -> std::process::Output {
    let mut args: Vec<String> = vec![
        "-sS".into(),
        "--max-time".into(),
        "10".into(),
        "--cacert".into(),
        ca.bundle.display().to_string(),
    ];
    if let Some((c, k)) = cert {
        args.extend([
            "--cert".into(),
            c.display().to_string(),
            "--key".into(),
            k.display().to_string(),
        ]);
    }
    args.push(format!("{}/api/v1/subchains/demo", node.url));
    std::process::Command::new("curl").args(&args).output().unwrap()
}

fn s_client(node: &TestNode, ca: &TestCa, cert: &Path, key: &Path, sess: Option<(&str, &Path)>) -> String {
    use std::io::Write;
    let addr = node.url.trim_start_matches("https://");
    let mut child = std::process::Command::new("openssl")
        .args(["s_client", "-connect", addr, "-CAfile"])
        .arg(&ca.bundle)
        .arg("-cert")
        .arg(cert)
        .arg("-key")
        .arg(key)
        .args(
            sess.map(|(flag, file)| [std::ffi::OsString::from(flag), file.as_os_str().to_owned()])
                .into_iter()
                .flatten(),
        )
        .args(["-ign_eof"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(b"GET /api/v1/subchains/demo HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        .unwrap();
    let out = child.wait_with_output().unwrap();
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn revocation_refuses_new_connections_and_cuts_open_ones() {
    let mut ca = TestCa::start();
    let node = TestNode::start(&mut ca, "n1").await;
    let dirs = setup(&mut ca, &node, &[("alice", "writer")]).await;
    let alice_dir = &dirs[0];
    let alice = node.api(&ca, alice_dir);
    wait_revision(&alice, 2).await;
    let (cert, key) = (alice_dir.join("cert.pem"), alice_dir.join("key.pem"));

    // Real peers with alice's certificate get in; with another CA's, or none, at the handshake no.
    let ok = curl(&node, &ca, Some((&cert, &key)));
    assert!(
        ok.status.success(),
        "curl as alice: {}",
        String::from_utf8_lossy(&ok.stderr)
    );
    let scratch = tempfile::tempdir().unwrap();
    let (fc, fk) = foreign_leaf(scratch.path());
    let foreign = curl(&node, &ca, Some((&fc, &fk)));
    assert!(!foreign.status.success(), "a foreign CA's certificate is refused");
    let none = curl(&node, &ca, None);
    assert!(!none.status.success(), "no client certificate is refused");
    let text = s_client(&node, &ca, &fc, &fk, None);
    assert!(
        text.contains("alert") && !text.contains("HTTP/1.1 200"),
        "s_client with a foreign certificate gets a TLS alert and no answer: {text}"
    );
    // A session saved by openssl before the revocation.
    let sess = scratch.path().join("sess.pem");
    let first = s_client(&node, &ca, &cert, &key, Some(("-sess_out", &sess)));
    assert!(first.contains("HTTP/1.1 200"), "s_client as alice: {first}");

    // An open stream (a long-lived HTTP/2 connection) and a client whose TLS config keeps sessions.
    let bundle = std::fs::read(&ca.bundle).unwrap();
    let tls = bsn_api::client::tls_config(
        &bundle,
        Some((&std::fs::read(&cert).unwrap(), &std::fs::read(&key).unwrap())),
    )
    .unwrap();
    let keep = Api::new(&node.url, tls.clone()).unwrap();
    info(&keep).await.unwrap();
    let mut stream = alice
        .events("/api/v1/subchains/demo/blocks/stream", &[("from", "0".into())])
        .await
        .unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap().event, "block");

    // Revoke alice's certificate at the CA.
    let serial = bsn_tests::leaf_of(&cert).serial_hex;
    let admin = ca.admin();
    ca.api(Some(&admin))
        .post(
            &format!("/api/v1/certificates/{serial}/revoke"),
            &json!({ "reason": "keyCompromise" }),
        )
        .await
        .unwrap();
    let t0 = Instant::now();
    // The open stream is cut within a second.
    let cut = tokio::time::timeout(Duration::from_secs(1), async {
        loop {
            match stream.next().await {
                Ok(Some(_)) => continue,
                _ => return,
            }
        }
    })
    .await;
    assert!(
        cut.is_ok(),
        "the open connection of a revoked certificate was not cut within 1 s"
    );
    let cut_ms = t0.elapsed().as_millis();
    // New connections fail at the handshake, including one that could resume a session, and
    // every one says why: over HTTP/2 the alert may arrive before the request is sent, and the
    // client must still name it (it failed as "connection was not ready" once in CI).
    for attempt in 0..20 {
        let e = info(&Api::new(&node.url, tls.clone()).unwrap()).await.unwrap_err();
        assert!(
            matches!(&e, ClientError::CertificateRefused { why, .. } if why.contains("revoked")),
            "attempt {attempt}: refused at the handshake, and said so: {e}"
        );
    }
    // `bsn query` says the certificate was refused as revoked (exit 3), not "cannot reach".
    let out = std::process::Command::new(bsn_tests::bin("bsn"))
        .args(["query", "info", "--node", &node.url, "--subchain", "demo"])
        .arg("--ca-bundle")
        .arg(&ca.bundle)
        .arg("--cert")
        .arg(&cert)
        .arg("--key")
        .arg(&key)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(3),
        "bsn query with a revoked certificate: {err}"
    );
    assert!(
        err.contains("refused your client certificate: it is revoked") && !err.contains("cannot reach"),
        "{err}"
    );
    assert!(!curl(&node, &ca, Some((&cert, &key))).status.success());
    let resumed = s_client(&node, &ca, &cert, &key, Some(("-sess_in", &sess)));
    assert!(
        !resumed.contains("HTTP/1.1 200"),
        "a saved TLS session must not let a revoked certificate in: {resumed}"
    );
    assert!(
        !resumed.contains("Reused, TLS"),
        "the node resumed a session: {resumed}"
    );
    // The connection kept open before the revocation is gone too.
    assert!(info(&keep).await.is_err(), "the kept-alive connection still works");
    println!("open stream cut {cut_ms} ms after the revocation returned");
}

/// Also the test of the ledger's crash story (`ledger-node/src/store.rs`): applying a block
/// commits without an fsync, so a kill may take the chain back behind what was acknowledged;
/// Raft re-applies those entries from its durable log, and each acknowledged transaction must
/// come back at the very height and index it was acknowledged with.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_under_write_load_loses_no_acknowledged_transaction() {
    let mut ca = TestCa::start();
    let mut node = TestNode::start(&mut ca, "n1").await;
    let dirs = setup(&mut ca, &node, &[("alice", "writer")]).await;
    let alice_dir = dirs[0].clone();
    wait_revision(&node.api(&ca, &alice_dir), 2).await;

    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<(String, u64, u64)>::new()));
    let mut writers = Vec::new();
    for w in 0..8 {
        let api = node.api(&ca, &alice_dir);
        let dir = alice_dir.clone();
        let acked = acked.clone();
        writers.push(tokio::spawn(async move {
            for i in 0.. {
                let txs: Vec<Vec<u8>> = (0..5)
                    .map(|j| sign_tx(&dir, "demo", vec![put(&format!("w{w}-{i}-{j}"), "x")]))
                    .collect();
                match submit(&api, &txs).await {
                    Ok(v) => {
                        let mut g = acked.lock().unwrap();
                        for r in v["results"].as_array().unwrap() {
                            g.push((
                                r["id"].as_str().unwrap().to_string(),
                                r["height"].as_u64().unwrap(),
                                r["index"].as_u64().unwrap(),
                            ));
                        }
                    }
                    Err(_) => return,
                }
            }
        }));
    }
    eventually("some acknowledged writes", Duration::from_secs(30), || async {
        (acked.lock().unwrap().len() >= 500).then_some(())
    })
    .await;
    node.kill();
    for w in writers {
        let _ = w.await;
    }
    let acked = acked.lock().unwrap().clone();
    node.restart();
    let api = node.api(&ca, &alice_dir);
    wait_revision(&api, 2).await;
    let mut missing = 0;
    for (id, height, index) in &acked {
        match api.get(&format!("/api/v1/subchains/demo/transactions/{id}"), &[]).await {
            Ok(v) => assert_eq!(
                (v["height"].as_u64(), v["index"].as_u64()),
                (Some(*height), Some(*index)),
                "transaction {id} moved after kill -9"
            ),
            Err(_) => missing += 1,
        }
    }
    assert_eq!(missing, 0, "acknowledged transactions lost after kill -9");
    let blocks = bsn_tests::chain_of(&api, "demo").await;
    let n = verify_chain(&blocks);
    // The node still takes writes after the restart.
    submit(&api, &[sign_tx(&alice_dir, "demo", vec![put("after", "restart")])])
        .await
        .unwrap();
    println!(
        "{} acknowledged transactions all present after kill -9; {n} blocks verified",
        acked.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn writes_fail_closed_when_the_ca_falls_silent() {
    let mut ca = TestCa::start_with(&[("BSN_CA_FEED_HEARTBEAT", "1s")]);
    let node = TestNode::start_with(&mut ca, "n1", "stale_after_secs = 3").await;
    let dirs = setup(&mut ca, &node, &[("alice", "writer")]).await;
    let alice = node.api(&ca, &dirs[0]);
    wait_revision(&alice, 2).await;
    submit(&alice, &[sign_tx(&dirs[0], "demo", vec![put("before", "1")])])
        .await
        .expect("writes while the CA is heard");
    // With the CA heard from every second, writes keep working past the bound.
    tokio::time::sleep(Duration::from_secs(4)).await;
    submit(&alice, &[sign_tx(&dirs[0], "demo", vec![put("still", "1")])])
        .await
        .expect("heartbeats keep the node fresh");
    assert_eq!(alice.get_bytes("/readyz").await.unwrap(), b"ready");
    ca.kill_all();
    let t0 = Instant::now();
    eventually(
        "writes to be refused once the CA is silent",
        Duration::from_secs(10),
        || async {
            let e = submit(&alice, &[sign_tx(&dirs[0], "demo", vec![put("after", "1")])])
                .await
                .err()?;
            (slug(&e) == "membership-stale").then_some(())
        },
    )
    .await;
    assert!(t0.elapsed() >= Duration::from_secs(2), "refused only after the bound");
    // While it refuses writes, /readyz says so (a load balancer sends writers elsewhere).
    let e = alice.get_bytes("/readyz").await.unwrap_err();
    assert_eq!(slug(&e), "membership-stale", "/readyz while writes are refused: {e}");
    // Refused means nothing written; reads go on.
    let refused = sign_tx(&dirs[0], "demo", vec![put("refused", "1")]);
    assert_eq!(slug(&submit(&alice, &[refused]).await.unwrap_err()), "membership-stale");
    assert!(alice.get("/api/v1/subchains/demo/state/refused", &[]).await.is_err());
    let v = alice.get("/api/v1/subchains/demo/state/still", &[]).await.unwrap();
    assert_eq!(v["text"], "1");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_node_renews_its_own_certificate_before_it_expires() {
    // Node certificates live 9 s here: the node must renew (at 6 s) and keep serving and
    // following the CA well past the first certificate's end.
    let mut ca = TestCa::start_with(&[("BSN_CA_NODE_VALIDITY", "9s"), ("BSN_CA_FEED_HEARTBEAT", "1s")]);
    let node = TestNode::start(&mut ca, "n1").await;
    let first = bsn_tests::leaf_of(&node.dir.join("cert.pem"));
    let dirs = setup(&mut ca, &node, &[("alice", "writer")]).await;
    let alice = node.api(&ca, &dirs[0]);
    wait_revision(&alice, 2).await;
    let wait = (first.not_after - bsn_tests::now_unix() + 3).max(0) as u64;
    tokio::time::sleep(Duration::from_secs(wait)).await;
    // The first certificate has expired: a fresh connection only works with a renewed one.
    let fresh = node.api(&ca, &dirs[0]);
    submit(&fresh, &[sign_tx(&dirs[0], "demo", vec![put("later", "1")])])
        .await
        .expect("the node presents a renewed certificate");
    let now = bsn_tests::leaf_of(&node.dir.join("cert.pem"));
    assert_ne!(
        now.serial_hex, first.serial_hex,
        "cert.pem holds the renewed certificate"
    );
    // It still follows the CA (its feed connection uses the renewed certificate too).
    let admin = ca.admin();
    ca.api(Some(&admin))
        .put("/api/v1/subchains/demo/members/alice", &json!({ "role": "reader" }))
        .await
        .unwrap();
    eventually("the demotion to reach the node", Duration::from_secs(10), || async {
        let e = submit(&fresh, &[sign_tx(&dirs[0], "demo", vec![put("no", "1")])])
            .await
            .err()?;
        (slug(&e) == "role-required").then_some(())
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_client_certificate_is_refused_and_its_open_connection_cut() {
    // Participant certificates live 6 s here.
    let mut ca = TestCa::start_with(&[("BSN_CA_PARTICIPANT_VALIDITY", "6s")]);
    let node = TestNode::start(&mut ca, "n1").await;
    let dirs = setup(&mut ca, &node, &[("alice", "writer")]).await;
    let leaf = bsn_tests::leaf_of(&dirs[0].join("cert.pem"));
    let alice = node.api(&ca, &dirs[0]);
    wait_revision(&alice, 2).await;
    let mut stream = alice
        .events("/api/v1/subchains/demo/blocks/stream", &[("from", "0".into())])
        .await
        .unwrap();
    assert_eq!(stream.next().await.unwrap().unwrap().event, "block");
    // The open stream ends when the certificate does.
    let ended = tokio::time::timeout(Duration::from_secs(15), async {
        while let Ok(Some(_)) = stream.next().await {}
    })
    .await;
    assert!(ended.is_ok(), "the open connection outlived its certificate");
    assert!(bsn_tests::now_unix() >= leaf.not_after, "cut at expiry, not before");
    // notAfter is inclusive (RFC 5280): past that second, a new connection with it fails at the
    // handshake.
    while bsn_tests::now_unix() <= leaf.not_after {
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let e = info(&node.api(&ca, &dirs[0])).await.unwrap_err();
    assert!(
        matches!(&e, ClientError::CertificateRefused { why, .. } if why.contains("expired")),
        "refused at the handshake, and said so: {e}"
    );
    let ok = curl(&node, &ca, Some((&dirs[0].join("cert.pem"), &dirs[0].join("key.pem"))));
    assert!(!ok.status.success(), "curl with an expired certificate is refused");
}

/// The Rust client's block stream (`Gateway::follow`, what `bsn` and the Rust example use) goes on
/// across a node restart: every block once, in order, each chained to the one before.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_rust_gateway_follows_blocks_across_a_node_restart() {
    use bsn_api::gateway::Gateway;
    let mut ca = TestCa::start();
    let mut node = TestNode::start(&mut ca, "n1").await;
    let dirs = setup(&mut ca, &node, &[("alice", "writer")]).await;
    let alice = node.api(&ca, &dirs[0]);
    wait_revision(&alice, 2).await;
    let gateway = Gateway::from_files(
        &node.url,
        &ca.bundle,
        &dirs[0].join("cert.pem"),
        &dirs[0].join("key.pem"),
    )
    .unwrap();
    let demo = identity::membership::SubchainId::parse("demo").unwrap();
    let (_, first) = gateway.submit(&demo, vec![put("before", "restart")]).await.unwrap();
    let first = first.height.unwrap();
    let mut blocks = gateway.follow(&demo, first, Duration::from_secs(60));
    let b = tokio::time::timeout(Duration::from_secs(10), blocks.next())
        .await
        .expect("the first block within 10 s")
        .unwrap();
    assert_eq!(b.block.header.height, first);

    node.kill();
    node.restart();
    wait_revision(&alice, 2).await;
    // The restarted node refuses writes (503 membership-stale) until it has heard from the CA
    // again; a client retries.
    let (_, second) = eventually("the restarted node to take writes", Duration::from_secs(30), || async {
        match gateway.submit(&demo, vec![put("after", "restart")]).await {
            Ok(r) => Some(r),
            Err(e) => {
                assert_eq!(bsn_tests::slug(&e), "membership-stale", "{e}");
                None
            }
        }
    })
    .await;
    let b = tokio::time::timeout(Duration::from_secs(30), blocks.next())
        .await
        .expect("the stream resumed within 30 s of the restart")
        .unwrap();
    assert_eq!(b.block.header.height, first + 1, "no block skipped or repeated");
    assert_eq!(Some(b.block.header.height), second.height);
    let keys: Vec<String> = b
        .block
        .entries
        .iter()
        .flat_map(|e| identity::ledger::SignedTx::parse(e.clone()).unwrap().body.ops)
        .map(|op| match op {
            identity::ledger::Op::Put { key, .. } | identity::ledger::Op::Delete { key } => key,
        })
        .collect();
    assert_eq!(keys, ["after"]);
}
