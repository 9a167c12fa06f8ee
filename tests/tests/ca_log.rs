//! The issuance log, checked as an auditor would: signed checkpoints, receipts, tiles and
//! entries verified independently of the server's word, and tampering detected.

use std::process::Command;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bsn_tests::{PASSPHRASE, TestCa, all_leaves, audit, bin, open_checkpoint, tile_path};
use identity::logleaf::LogLeaf;
use serde_json::{Value, json};
use tlog_tiles::Hash;

fn csr() -> String {
    bsn_tests::new_csr()
}

fn check_receipt(vkey: &str, receipt: &Value, leaf: &[u8]) {
    let (size, root) = open_checkpoint(vkey, receipt["checkpoint"].as_str().unwrap());
    assert_eq!(size, receipt["tree_size"].as_u64().unwrap());
    let proof: Vec<Hash> = receipt["inclusion_proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| Hash(B64.decode(h.as_str().unwrap()).unwrap().try_into().unwrap()))
        .collect();
    let index = receipt["leaf_index"].as_u64().unwrap();
    tlog_tiles::check_record(&proof, size, root, index, tlog_tiles::record_hash(leaf)).expect("inclusion proof");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receipts_tiles_and_checkpoints_verify_independently() {
    let mut ca = TestCa::start();
    let admin = ca.admin();
    let anon = ca.api(None);
    let vkey = String::from_utf8(anon.get_bytes("/log/vkey").await.unwrap()).unwrap();
    assert_eq!(
        vkey,
        std::fs::read_to_string(ca.data_dir().join("log.vkey")).unwrap(),
        "served vkey is the one init wrote"
    );

    // Issue, renew and revoke; keep every receipt.
    let secret = ca.register("gina", json!({})).await;
    let issued = anon
        .post(
            "/api/v1/enroll",
            &json!({ "id": "gina", "secret": secret, "csr": csr() }),
        )
        .await
        .unwrap();
    let dir = ca.dir.path().join("gina");
    std::fs::create_dir_all(&dir).unwrap();
    let mut receipts = vec![(
        issued["receipt"].clone(),
        issued["serial"].as_str().unwrap().to_string(),
        "issuance",
    )];
    let admin_api = ca.api(Some(&admin));
    for _ in 0..300 {
        let v = ca
            .api(Some(&admin))
            .post("/api/v1/renew", &json!({ "csr": csr() }))
            .await
            .unwrap();
        receipts.push((
            v["receipt"].clone(),
            v["serial"].as_str().unwrap().to_string(),
            "issuance",
        ));
    }
    let r = admin_api
        .post(
            &format!("/api/v1/certificates/{}/revoke", receipts[0].1),
            &json!({ "reason": "keyCompromise" }),
        )
        .await
        .unwrap();
    receipts.push((r["receipt"].clone(), receipts[0].1.clone(), "revocation"));

    // The latest checkpoint covers everything: init's server certificate, admin's, gina's, 300
    // renewals and the revocation.
    let note = String::from_utf8(anon.get_bytes("/log/checkpoint").await.unwrap()).unwrap();
    let (size, root) = open_checkpoint(&vkey, &note);
    assert_eq!(size, 1 + 1 + 1 + 300 + 1);
    let leaves = all_leaves(&anon, size).await;

    // Recompute the tree from the entries alone; the hash tiles must agree with it.
    let mut stored = identity::tree::MemoryTree::default();
    for leaf in &leaves {
        stored.push(tlog_tiles::record_hash(leaf)).unwrap();
    }
    assert_eq!(
        tlog_tiles::tree_hash(size, &stored).unwrap(),
        root,
        "root recomputed from the entries"
    );
    let level0 = anon.get_bytes(&tile_path(0, 0, 256)).await.unwrap();
    let level0b = anon.get_bytes(&tile_path(0, 1, size - 256)).await.unwrap();
    let tile_hashes: Vec<&[u8]> = level0.chunks(32).chain(level0b.chunks(32)).collect();
    for (i, leaf) in leaves.iter().enumerate() {
        assert_eq!(
            tile_hashes[i],
            tlog_tiles::record_hash(leaf).0.as_slice(),
            "tile hash {i}"
        );
    }
    assert!(
        anon.get_bytes(&tile_path(0, 1, 256)).await.is_err(),
        "a tile beyond the tree is not served"
    );

    // Every receipt proves its leaf, and every leaf says what happened.
    for (receipt, serial, kind) in &receipts {
        let leaf = &leaves[receipt["leaf_index"].as_u64().unwrap() as usize];
        check_receipt(&vkey, receipt, leaf);
        match (LogLeaf::decode(leaf).unwrap(), *kind) {
            (
                LogLeaf::Issuance {
                    serial: s,
                    identity,
                    certificate,
                    ..
                },
                "issuance",
            ) => {
                assert_eq!(&s, serial);
                assert!(identity.starts_with("spiffe://test.example/participant/"));
                assert_eq!(identity::profile::check_leaf(&certificate).unwrap().serial_hex, *serial);
            }
            (
                LogLeaf::Revocation {
                    serial: s,
                    reason,
                    authorized_by,
                    ..
                },
                "revocation",
            ) => {
                assert_eq!((&s, reason, authorized_by.as_str()), (serial, 1, "admin"));
            }
            (other, k) => panic!("expected {k}, got {other:?}"),
        }
    }
    // Checkpoints only grow: the first receipt's tree is a prefix of the latest.
    let (first_size, first_root) = open_checkpoint(&vkey, receipts[0].0["checkpoint"].as_str().unwrap());
    assert_eq!(tlog_tiles::tree_hash(first_size, &stored).unwrap(), first_root);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tampered_leaf_stops_the_ca_from_starting() {
    let mut ca = TestCa::start();
    ca.participant("hal").await;
    ca.kill_all();
    // Flip one byte of a stored leaf, as a disk or an intruder might.
    {
        let mut c = ca.db_conn().await;
        let leaf: Vec<u8> = sqlx::query_scalar("SELECT leaf FROM log_entries WHERE idx = 1")
            .fetch_one(&mut c)
            .await
            .unwrap();
        let mut bad = leaf.clone();
        let last = bad.len() - 1;
        bad[last] ^= 0x01;
        sqlx::query("UPDATE log_entries SET leaf = $1 WHERE idx = 1")
            .bind(bad)
            .execute(&mut c)
            .await
            .unwrap();
    }
    let err = serve_refused(&ca);
    assert!(
        err.contains("self-check") && err.contains("differs from the signed checkpoint"),
        "{err}"
    );
}

/// Runs `ca-server serve` on `ca`'s files, expecting it to refuse to start; returns its stderr.
fn serve_refused(ca: &TestCa) -> String {
    let mut cmd = Command::new(bin("ca-server"));
    cmd.args(["serve", "--data-dir"])
        .arg(ca.data_dir())
        .args(["--listen", "127.0.0.1:0"]);
    if let Some(u) = &ca.db.url {
        cmd.args(["--database-url", u]);
    }
    let out = cmd.env("BSN_CA_PASSPHRASE", PASSPHRASE).output().unwrap();
    assert!(!out.status.success(), "the CA must refuse to start");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

/// Full entry bundles are stored whole when their last entry is appended (also when a bundle
/// spans several appends), served as stored, checked against the leaves at start-up, and
/// rebuilt from the leaves for a log that has none stored (one appended before they were).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn full_entry_bundles_are_stored_checked_at_start_up_and_rebuilt() {
    let mut ca = TestCa::start();
    ca.kill_all();
    let log = ca.log_signer();
    let db = ca.store().await;
    // 700 revocation entries in appends of 1, 99 and 300 at a time: bundle 0 ends inside the
    // third append, bundle 1 inside a later one, and 700 - 512 entries stay in a partial bundle.
    let mut appended = 1u64;
    for (k, n) in [1usize, 99, 300, 300].into_iter().enumerate() {
        let leaves: Vec<ca_server::log::NewLeaf> = (0..n)
            .map(|i| {
                let serial = format!("{:x}", 0x1000 + k * 1000 + i);
                let leaf = LogLeaf::Revocation {
                    time: 1,
                    identity: "spiffe://test.example/participant/x".into(),
                    serial: serial.clone(),
                    authorized_by: "test".into(),
                    reason: 0,
                };
                ca_server::log::NewLeaf {
                    bytes: leaf.encode().unwrap(),
                    kind: "revocation",
                    serial,
                    identity: "x".into(),
                    at: 1,
                }
            })
            .collect();
        let mut tx = db.begin().await.unwrap();
        ca_server::log::append(&mut tx, db.backend, &log, &leaves, false)
            .await
            .unwrap();
        tx.commit().await.unwrap();
        appended += n as u64;
    }
    assert_eq!(appended, 701);
    let mut c = ca.db_conn().await;
    let stored: Vec<i64> = sqlx::query_scalar("SELECT n FROM log_bundles ORDER BY n")
        .fetch_all(&mut c)
        .await
        .unwrap();
    assert_eq!(stored, vec![0, 1]);

    // Served as stored: the same bytes as the entries they hold, through the tile API.
    ca.restart();
    let api = ca.api(None);
    let leaves = all_leaves(&api, 701).await;
    assert_eq!(leaves.len(), 701);
    let bundle1 = api.get_bytes("/log/tile/entries/001").await.unwrap();
    let mut expected = Vec::new();
    for l in &leaves[256..512] {
        expected.extend_from_slice(&(l.len() as u16).to_be_bytes());
        expected.extend_from_slice(l);
    }
    assert_eq!(bundle1, expected);

    // A log whose bundles are not stored gets them rebuilt at start-up.
    ca.kill_all();
    sqlx::query("DELETE FROM log_bundles").execute(&mut c).await.unwrap();
    ca.restart();
    let stored: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM log_bundles")
        .fetch_one(&mut c)
        .await
        .unwrap();
    assert_eq!(stored, 2);
    let api = ca.api(None);
    assert_eq!(api.get_bytes("/log/tile/entries/001").await.unwrap(), expected);

    // A stored bundle that differs from the leaves stops the CA before it serves it.
    ca.kill_all();
    let mut bad = expected.clone();
    let last = bad.len() - 1;
    bad[last] ^= 1;
    sqlx::query("UPDATE log_bundles SET data = $1 WHERE n = 1")
        .bind(bad)
        .execute(&mut c)
        .await
        .unwrap();
    let err = serve_refused(&ca);
    assert!(
        err.contains("self-check") && err.contains("entry bundle 1 differs from its leaves"),
        "{err}"
    );
}

async fn tamper_leaf(ca: &TestCa, idx: i64) {
    let mut c = ca.db_conn().await;
    let mut leaf: Vec<u8> = sqlx::query_scalar("SELECT leaf FROM log_entries WHERE idx = $1")
        .bind(idx)
        .fetch_one(&mut c)
        .await
        .unwrap();
    let last = leaf.len() - 1;
    leaf[last] ^= 0x01;
    sqlx::query("UPDATE log_entries SET leaf = $1 WHERE idx = $2")
        .bind(leaf)
        .bind(idx)
        .execute(&mut c)
        .await
        .unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bsn_audit_verify_passes_on_a_good_log_and_catches_tampering() {
    let mut ca = TestCa::start();
    let admin = ca.admin();
    let p = ca.participant("ivy").await;
    let serial = identity::profile::check_leaf(&{
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::pem_file_iter(p.join("cert.pem"))
            .unwrap()
            .next()
            .unwrap()
            .unwrap()
    })
    .unwrap()
    .serial_hex;
    ca.api(Some(&admin))
        .post(&format!("/api/v1/certificates/{serial}/revoke"), &json!({}))
        .await
        .unwrap();
    let out = audit(&ca);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}{}", text, String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains(
            "log verified: 4 entries (3 issuances, 1 revocations, 0 membership revisions, 0 intermediate steps, 0 root steps, 0 key handover steps)"
        ),
        "{text}"
    );

    // The structure-only audit passes too, and says what it did not check.
    let vkey = ca.data_dir().join("log.vkey");
    let structure = [
        "audit",
        "verify",
        "--structure-only",
        "--log-vkey",
        vkey.to_str().unwrap(),
    ];
    let out = ca.bsn(&structure);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}{}", text, String::from_utf8_lossy(&out.stderr));
    assert!(
        text.contains("log verified: 4 entries (3 issuances, 1 revocations")
            && text.contains("structure only: certificates were not parsed"),
        "{text}"
    );

    // The same check with another CA's key fails: the vkey is pinned, not taken from the server.
    let other = TestCa::start();
    let out = ca.bsn(&[
        "audit",
        "verify",
        "--log-vkey",
        other.data_dir().join("log.vkey").to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stderr));

    // A file that is no verifier key at all is the auditor's own mistake: exit 2 with what to
    // do, not "the log does not verify" (exit 6), for verify and for follow.
    let junk = other.data_dir().join("not-a-vkey");
    std::fs::write(&junk, "this is not a key\n").unwrap();
    for sub in [vec!["verify"], vec!["follow", "--once", "--state"]] {
        let mut args = vec!["audit"];
        args.extend(sub.iter().copied());
        let state = other.data_dir().join("follow-state.json");
        if sub[0] == "follow" {
            args.push(state.to_str().unwrap());
        }
        args.extend(["--log-vkey", junk.to_str().unwrap()]);
        let out = ca.bsn(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "audit {}: {err}", sub[0]);
        assert!(
            err.contains("is not the log's verifier key") && err.contains("/log/vkey") && !err.contains("alert"),
            "{err}"
        );
    }

    // A leaf altered under the running CA is caught by the auditor.
    tamper_leaf(&ca, 2).await;
    let out = audit(&ca);
    assert_eq!(out.status.code(), Some(6));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("log verification failed"), "{err}");
    // The structure-only audit catches it as well: every entry is still hashed into the tree.
    let out = ca.bsn(&structure);
    assert_eq!(out.status.code(), Some(6), "{}", String::from_utf8_lossy(&out.stdout));
}

/// kill -9 with 1,000 enrollments in flight: every certificate any client received is in the
/// log, the CA restarts (its self-check passes) and the whole log verifies.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_during_enrollments_loses_no_acknowledged_certificate() {
    let mut ca = TestCa::start();
    let admin = ca.admin();
    let admin_api = ca.api(Some(&admin));
    let n = 1000;
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(32));
    let mut regs = Vec::new();
    for i in 0..n {
        let (api, sem) = (admin_api.clone(), sem.clone());
        regs.push(tokio::spawn(async move {
            let _p = sem.acquire().await.unwrap();
            let v = api
                .post("/api/v1/identities", &json!({ "id": format!("crash{i}") }))
                .await
                .unwrap();
            (format!("crash{i}"), v["secret"].as_str().unwrap().to_string())
        }));
    }
    let mut secrets = Vec::new();
    for r in regs {
        secrets.push(r.await.unwrap());
    }
    let anon = ca.api(None);
    let (done_tx, mut done_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut tasks = Vec::new();
    // 64 in flight at a time: a client racing all 1,000 at once opens hundreds of connections
    // from one address and meets the CA's per-address cap (which is right, and not what this
    // test is about).
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(64));
    for (id, secret) in secrets {
        let (anon, done_tx, sem) = (anon.clone(), done_tx.clone(), sem.clone());
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await.unwrap();
            let r = anon
                .post("/api/v1/enroll", &json!({ "id": id, "secret": secret, "csr": csr() }))
                .await;
            // Only answered enrollments count towards the kill (a failure before it would
            // otherwise leave fewer than 100 answered).
            if r.is_ok() {
                let _ = done_tx.send(());
            }
            r.ok().map(|v| v["serial"].as_str().unwrap().to_string())
        }));
    }
    drop(done_tx);
    // Kill the CA once some enrollments have been answered and the rest are in flight.
    for _ in 0..100 {
        done_rx.recv().await.expect("100 enrollments answered before the kill");
    }
    ca.kill_all();
    let mut received = Vec::new();
    for t in tasks {
        if let Some(serial) = t.await.unwrap() {
            received.push(serial);
        }
    }
    assert!(
        received.len() >= 100 && received.len() < n,
        "{} answered before the kill",
        received.len()
    );

    ca.restart();
    let out = audit(&ca);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let anon = ca.api(None);
    let note = anon.get_bytes("/log/checkpoint").await.unwrap();
    let vkey = std::fs::read_to_string(ca.data_dir().join("log.vkey")).unwrap();
    let (size, _) = open_checkpoint(&vkey, &String::from_utf8(note).unwrap());
    let logged: std::collections::HashSet<String> = all_leaves(&anon, size)
        .await
        .iter()
        .map(|l| LogLeaf::decode(l).unwrap().serial().to_string())
        .collect();
    for s in &received {
        assert!(
            logged.contains(s),
            "certificate {s} was returned to a client but is not in the log"
        );
    }
    eprintln!(
        "{} of {n} enrollments acknowledged before kill -9; all in the log of {size} entries",
        received.len()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn auditor_api_proves_inclusion_and_consistency_and_searches() {
    let mut ca = TestCa::start();
    let admin = ca.admin();
    let anon = ca.api(None);
    let vkey = std::fs::read_to_string(ca.data_dir().join("log.vkey")).unwrap();
    let early = String::from_utf8(anon.get_bytes("/log/checkpoint").await.unwrap()).unwrap();
    let (early_size, early_root) = open_checkpoint(&vkey, &early);
    let jo = ca.participant("jo").await;
    let jo_api = ca.api(Some(&jo));
    let mut serials = Vec::new();
    for _ in 0..5 {
        serials.push(
            jo_api.post("/api/v1/renew", &json!({ "csr": csr() })).await.unwrap()["serial"]
                .as_str()
                .unwrap()
                .to_string(),
        );
    }
    ca.api(Some(&admin))
        .post(&format!("/api/v1/certificates/{}/revoke", serials[0]), &json!({}))
        .await
        .unwrap();
    let (size, root) = open_checkpoint(
        &vkey,
        &String::from_utf8(anon.get_bytes("/log/checkpoint").await.unwrap()).unwrap(),
    );

    // Search: jo's enrollment, 5 renewals and 1 revocation, each with its leaf.
    let v = anon
        .get("/api/v1/log/entries", &[("identity", "jo".into())])
        .await
        .unwrap();
    let items = v["items"].as_array().unwrap();
    assert_eq!(items.len(), 7);
    assert_eq!(items.iter().filter(|i| i["kind"] == "revocation").count(), 1);
    let by_serial = anon
        .get("/api/v1/log/entries", &[("serial", serials[0].to_uppercase())])
        .await
        .unwrap();
    assert_eq!(
        by_serial["items"].as_array().unwrap().len(),
        2,
        "its issuance and its revocation"
    );
    let future = anon
        .get("/api/v1/log/entries", &[("since", "2999-01-01T00:00:00Z".into())])
        .await
        .unwrap();
    assert!(future["items"].as_array().unwrap().is_empty());

    // Inclusion proofs by index and by leaf hash verify against the signed checkpoint.
    for item in items {
        let leaf = B64.decode(item["leaf"].as_str().unwrap()).unwrap();
        let index = item["index"].as_u64().unwrap();
        let by_index = anon
            .get("/api/v1/log/proof/inclusion", &[("index", index.to_string())])
            .await
            .unwrap();
        let leaf_hash = B64.encode(tlog_tiles::record_hash(&leaf).0);
        let by_hash = anon
            .get("/api/v1/log/proof/inclusion", &[("leaf_hash", leaf_hash)])
            .await
            .unwrap();
        assert_eq!(by_hash["leaf_index"], index);
        for p in [by_index, by_hash] {
            let proof: Vec<Hash> = p["inclusion_proof"]
                .as_array()
                .unwrap()
                .iter()
                .map(|h| Hash(B64.decode(h.as_str().unwrap()).unwrap().try_into().unwrap()))
                .collect();
            tlog_tiles::check_record(&proof, size, root, index, tlog_tiles::record_hash(&leaf)).expect("inclusion");
        }
    }
    // The early checkpoint is a prefix of the latest one.
    let c = anon
        .get("/api/v1/log/proof/consistency", &[("first", early_size.to_string())])
        .await
        .unwrap();
    let proof: Vec<Hash> = c["consistency_proof"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| Hash(B64.decode(h.as_str().unwrap()).unwrap().try_into().unwrap()))
        .collect();
    tlog_tiles::check_tree(&proof, size, root, early_size, early_root).expect("consistency");

    // Grown past a few 16-leaf subtrees (whose hashes the server caches once read), every
    // inclusion proof (in the latest tree and in an earlier one) and every consistency proof
    // verifies, asked cold and again from the cache.
    for _ in 0..40 {
        jo_api.post("/api/v1/renew", &json!({ "csr": csr() })).await.unwrap();
    }
    let (size, root) = open_checkpoint(
        &vkey,
        &String::from_utf8(anon.get_bytes("/log/checkpoint").await.unwrap()).unwrap(),
    );
    let leaves = all_leaves(&anon, size).await;
    let mut roots = vec![tlog_tiles::EMPTY_HASH];
    let mut edge = identity::tree::CompactRange::default();
    for leaf in &leaves {
        edge.push(tlog_tiles::record_hash(leaf));
        roots.push(edge.root());
    }
    assert_eq!(roots[size as usize], root);
    let hashes = |v: &Value, field: &str| -> Vec<Hash> {
        v[field]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| Hash(B64.decode(h.as_str().unwrap()).unwrap().try_into().unwrap()))
            .collect()
    };
    for round in 0..2 {
        for index in 0..size {
            for at in [size, 33.max(index + 1)] {
                let p = anon
                    .get(
                        "/api/v1/log/proof/inclusion",
                        &[("index", index.to_string()), ("size", at.to_string())],
                    )
                    .await
                    .unwrap();
                let h = tlog_tiles::record_hash(&leaves[index as usize]);
                tlog_tiles::check_record(&hashes(&p, "inclusion_proof"), at, roots[at as usize], index, h)
                    .unwrap_or_else(|e| panic!("round {round}: inclusion of {index} in {at}: {e:?}"));
            }
            let first = index + 1;
            let c = anon
                .get("/api/v1/log/proof/consistency", &[("first", first.to_string())])
                .await
                .unwrap();
            tlog_tiles::check_tree(
                &hashes(&c, "consistency_proof"),
                size,
                root,
                first,
                roots[first as usize],
            )
            .unwrap_or_else(|e| panic!("round {round}: consistency {first} -> {size}: {e:?}"));
        }
    }

    // Bad queries get problems.
    for (path, q) in [
        ("/api/v1/log/proof/inclusion", vec![("index", size.to_string())]),
        (
            "/api/v1/log/proof/inclusion",
            vec![("index", "0".to_string()), ("leaf_hash", B64.encode([0u8; 32]))],
        ),
        (
            "/api/v1/log/proof/inclusion",
            vec![("leaf_hash", "not base64!".to_string())],
        ),
        ("/api/v1/log/proof/consistency", vec![("first", (size + 1).to_string())]),
        ("/api/v1/log/proof/consistency", vec![("first", "0".to_string())]),
        ("/api/v1/log/entries", vec![("since", "yesterday".to_string())]),
        ("/api/v1/log/entries", vec![("limit", "0".to_string())]),
    ] {
        let e = anon.get(path, &q).await.unwrap_err();
        assert_eq!(bsn_tests::slug(&e), "invalid-field", "{path} {q:?}");
    }
    let e = anon
        .get("/api/v1/log/proof/inclusion", &[("leaf_hash", B64.encode([7u8; 32]))])
        .await
        .unwrap_err();
    assert_eq!(bsn_tests::slug(&e), "not-found");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn audit_follow_checks_growth_alerts_on_watched_identities_and_detects_forks() {
    let mut ca = TestCa::start();
    ca.admin();
    let state = ca.dir.path().join("follow.json");
    let vkey = ca.data_dir().join("log.vkey");
    let follow = |ca: &TestCa, extra: &[&str]| {
        let mut args = vec![
            "audit",
            "follow",
            "--once",
            "--log-vkey",
            vkey.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
        ];
        args.extend_from_slice(extra);
        ca.bsn(&args)
    };
    let out = follow(&ca, &["--watch", "kim"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).lines().count(),
        2,
        "the server's and admin's certificates"
    );

    ca.participant("kim").await;
    let out = follow(&ca, &["--watch", "kim"]);
    assert_eq!(out.status.code(), Some(7), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("\tissued\tspiffe://test.example/participant/kim\t"),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("ALERT"));

    let out = follow(&ca, &["--watch", "kim"]);
    assert!(
        out.status.success(),
        "nothing new: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.stdout.is_empty());

    // A state that the log does not extend (another root for the same size) is a fork.
    let mut s: serde_json::Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    s["root"] = json!(B64.encode([9u8; 32]));
    std::fs::write(&state, s.to_string()).unwrap();
    let out = follow(&ca, &[]);
    assert_eq!(out.status.code(), Some(6));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("forked"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// An auditor (role `auditor`, read-only) checks the CA's certificate listing against the log:
/// a certificate row written behind the log's back, or a revocation the log never saw, fails it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_checks_the_listing_against_the_log() {
    let mut ca = TestCa::start();
    let secret = ca.register("aud", json!({ "roles": ["auditor"] })).await;
    let aud = ca.dir.path().join("aud");
    assert!(ca.bsn_enroll("aud", &secret, &aud).status.success());
    let p = ca.participant("ivy").await;
    let vkey = ca.data_dir().join("log.vkey");
    let with_listing = |ca: &TestCa| {
        ca.bsn(&[
            "audit",
            "verify",
            "--log-vkey",
            vkey.to_str().unwrap(),
            "--cert",
            aud.join("cert.pem").to_str().unwrap(),
            "--key",
            aud.join("key.pem").to_str().unwrap(),
        ])
    };
    let out = with_listing(&ca);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    // The CA's own TLS certificate, admin, aud and ivy.
    assert!(
        text.contains("all 4 certificates the CA lists are in the log"),
        "{text}"
    );

    // The auditor reads every certificate but may not revoke someone else's.
    let listing = ca
        .api(Some(&aud))
        .get("/api/v1/certificates", &[("identity", "ivy".into())])
        .await
        .unwrap();
    let serial = listing["items"][0]["serial"].as_str().unwrap().to_string();
    let e = ca
        .api(Some(&aud))
        .post(&format!("/api/v1/certificates/{serial}/revoke"), &json!({}))
        .await
        .unwrap_err();
    assert_eq!(bsn_tests::slug(&e), "forbidden", "{e}");
    // ...and a participant still sees only its own.
    let e = ca
        .api(Some(&p))
        .get("/api/v1/certificates", &[("identity", "aud".into())])
        .await
        .unwrap_err();
    assert_eq!(bsn_tests::slug(&e), "forbidden", "{e}");

    // A revocation written behind the log's back.
    let mut c = ca.db_conn().await;
    sqlx::query("UPDATE certificates SET revoked_at = 1, revocation_reason = 'keyCompromise' WHERE serial = $1")
        .bind(&serial)
        .execute(&mut c)
        .await
        .unwrap();
    let out = with_listing(&ca);
    assert_eq!(out.status.code(), Some(6));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("lists as revoked have no revocation entry") && err.contains(&serial),
        "{err}"
    );

    // A certificate row with no issuance leaf (a secretly issued certificate).
    sqlx::query("UPDATE certificates SET revoked_at = NULL, revocation_reason = NULL WHERE serial = $1")
        .bind(&serial)
        .execute(&mut c)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO certificates (serial, identity_id, not_before, not_after, der, key_sha256, issued_at, \
         issued_via, authorized_by) SELECT '7e57', identity_id, not_before, not_after, der, key_sha256, issued_at, \
         issued_via, authorized_by FROM certificates WHERE serial = $1",
    )
    .bind(&serial)
    .execute(&mut c)
    .await
    .unwrap();
    let out = with_listing(&ca);
    assert_eq!(out.status.code(), Some(6));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("1 certificate(s) the CA lists have no issuance entry in the log: 7e57"),
        "{err}"
    );
    // The log itself is intact: without the listing the audit passes.
    assert!(audit(&ca).status.success());
}
