//! The subchain registry and the change feed, through the real API with real mTLS identities:
//! every registry action and who may do it, bad input that changes nothing, signed statements
//! checked with the `identity` verifier, and the feed a node follows (pages and server-sent
//! events), on SQLite or PostgreSQL (BSN_TEST_DATABASE).

use std::time::{Duration, Instant};

use bsn_tests::{TestCa, slug};
use identity::membership::{Envelope, MembershipKey, Role};
use serde_json::{Value, json};

fn envelope(v: &Value) -> Envelope {
    serde_json::from_value(v.clone()).unwrap()
}

async fn key(ca: &TestCa) -> MembershipKey {
    let v = ca.api(None).get("/api/v1/membership-key", &[]).await.unwrap();
    let k = MembershipKey::from_base64(v["key"].as_str().unwrap()).unwrap();
    // The same key is in the SPIFFE bundle.
    let b = ca.api(None).get("/api/v1/spiffe-bundle", &[]).await.unwrap();
    assert_eq!(b["bsn_membership_key"]["key"], v["key"]);
    k
}

/// Directory size, and the supply subchain's revision (what bad input must not change).
async fn state(ca: &TestCa, who: &std::path::Path) -> (usize, i64) {
    let api = ca.api(Some(who));
    let dir = api.get("/api/v1/subchains", &[]).await.unwrap();
    let rev = api
        .get("/api/v1/subchains/supply", &[])
        .await
        .map(|v| v["revision"].as_i64().unwrap())
        .unwrap_or(0);
    (dir["items"].as_array().unwrap().len(), rev)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registry_actions_authorisation_statements_and_feed() {
    let mut ca = TestCa::start();
    let admin = ca.admin();
    let publisher = ca.enrolled("pub", json!({ "roles": ["publisher"] })).await;
    let other_pub = ca.enrolled("pub2", json!({ "roles": ["publisher"] })).await;
    let alice = ca.enrolled("alice", json!({})).await;
    let bob = ca.enrolled("bob", json!({})).await;
    let carol = ca.enrolled("carol", json!({})).await;
    let n1 = ca
        .enrolled("n1", json!({ "type": "node", "dns_names": ["n1.test"] }))
        .await;
    let n2 = ca
        .enrolled("n2", json!({ "type": "node", "dns_names": ["n2.test"] }))
        .await;
    let key = key(&ca).await;
    let (p, a, b, c) = (
        ca.api(Some(&publisher)),
        ca.api(Some(&alice)),
        ca.api(Some(&bob)),
        ca.api(Some(&carol)),
    );

    // Create: revision 1, the publisher is its first admin, the statement verifies offline.
    let created = p
        .post(
            "/api/v1/subchains",
            &json!({ "id": "supply", "name": "Supply chain", "nodes": ["n1"], "policy": "approval" }),
        )
        .await
        .unwrap();
    assert_eq!(created["revision"], 1);
    let st = key.verify_statement(&envelope(&created["statement"])).unwrap();
    assert_eq!((st.subchain.as_str(), st.revision), ("supply", 1));
    assert_eq!(st.role_of("pub"), Some(Role::Admin));
    assert!(st.hosted_by("n1") && !st.hosted_by("n2"));

    // Bad creations: each a clear 4xx, nothing changes.
    let before = state(&ca, &publisher).await;
    let bad: Vec<(&bsn_api::client::Api, Value, &str)> = vec![
        (&a, json!({ "id": "x", "name": "X", "nodes": ["n1"] }), "forbidden"),
        (
            &p,
            json!({ "id": "supply", "name": "Again", "nodes": ["n1"] }),
            "conflict",
        ),
        (
            &p,
            json!({ "id": "Bad_Id", "name": "X", "nodes": ["n1"] }),
            "invalid-field",
        ),
        (
            &p,
            json!({ "id": "x", "name": "X", "nodes": ["nowhere"] }),
            "invalid-field",
        ),
        (
            &p,
            json!({ "id": "x", "name": "X", "nodes": ["alice"] }),
            "invalid-field",
        ),
        (&p, json!({ "id": "x", "name": "X", "nodes": [] }), "invalid-field"),
        (
            &p,
            json!({ "id": "x", "name": "X", "nodes": ["n1", "n1"] }),
            "invalid-field",
        ),
        (
            &p,
            json!({ "id": "x", "name": "X", "nodes": ["n1"], "policy": "anyone" }),
            "invalid-field",
        ),
        (&p, json!({ "id": "x", "name": "", "nodes": ["n1"] }), "invalid-field"),
        (
            &p,
            json!({ "id": "x", "name": "X", "nodes": ["n1"], "owner": "me" }),
            "invalid-request",
        ),
    ];
    for (api, body, want) in &bad {
        let e = api.post("/api/v1/subchains", body).await.unwrap_err();
        assert_eq!(slug(&e), *want, "{body}");
    }
    assert_eq!(state(&ca, &publisher).await, before);

    // Join with approval: pending; nobody approves their own request; the publisher approves.
    let j = a
        .post("/api/v1/subchains/supply/join", &json!({ "note": "we ship" }))
        .await
        .unwrap();
    assert_eq!(j["outcome"], "pending");
    let e = a.post("/api/v1/subchains/supply/join", &json!({})).await.unwrap_err();
    assert_eq!(slug(&e), "conflict");
    let e = a
        .post("/api/v1/subchains/supply/requests/alice/approve", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "forbidden", "alice is not a manager");
    let admin_api = ca.api(Some(&admin));
    admin_api
        .post("/api/v1/subchains/supply/join", &json!({ "role": "writer" }))
        .await
        .unwrap();
    let e = admin_api
        .post("/api/v1/subchains/supply/requests/admin/approve", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "forbidden", "{e}");
    assert!(e.to_string().contains("own request"), "{e}");
    let reqs = p.get("/api/v1/subchains/supply/requests", &[]).await.unwrap();
    assert_eq!(reqs["items"].as_array().unwrap().len(), 2);
    let r2 = p
        .post("/api/v1/subchains/supply/requests/alice/approve", &json!({}))
        .await
        .unwrap();
    assert_eq!(r2["revision"], 2);
    p.post("/api/v1/subchains/supply/requests/admin/reject", &json!({}))
        .await
        .unwrap();
    let e = p
        .post("/api/v1/subchains/supply/requests/admin/approve", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "not-found");

    // Roles: add bob as writer, make him admin; a subchain admin manages members too.
    let before = state(&ca, &publisher).await;
    for (body, want) in [
        (json!({ "role": "owner" }), "invalid-field"),
        (json!({ "role": "admin", "extra": 1 }), "invalid-request"),
    ] {
        let e = p.put("/api/v1/subchains/supply/members/bob", &body).await.unwrap_err();
        assert_eq!(slug(&e), want);
    }
    let e = p
        .put("/api/v1/subchains/supply/members/n2", &json!({ "role": "reader" }))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "invalid-field", "a node is not a member");
    let e = p
        .put("/api/v1/subchains/supply/members/ghost", &json!({ "role": "reader" }))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "not-found");
    let e = ca
        .api(Some(&other_pub))
        .put("/api/v1/subchains/supply/members/bob", &json!({ "role": "reader" }))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "forbidden", "a publisher editing someone else's subchain");
    let e = p
        .put("/api/v1/subchains/supply/members/pub", &json!({ "role": "reader" }))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "conflict");
    let e = p
        .put("/api/v1/subchains/nowhere/members/bob", &json!({ "role": "reader" }))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "not-found");
    assert_eq!(state(&ca, &publisher).await, before, "refused changes change nothing");
    p.put("/api/v1/subchains/supply/members/bob", &json!({ "role": "writer" }))
        .await
        .unwrap();
    let e = p
        .put("/api/v1/subchains/supply/members/bob", &json!({ "role": "writer" }))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "conflict");
    let r4 = p
        .put("/api/v1/subchains/supply/members/bob", &json!({ "role": "admin" }))
        .await
        .unwrap();
    assert_eq!(r4["revision"], 4);
    c.post("/api/v1/subchains/supply/join", &json!({})).await.unwrap();
    let r5 = b
        .post(
            "/api/v1/subchains/supply/requests/carol/approve",
            &json!({ "role": "writer" }),
        )
        .await
        .unwrap();
    let st = key.verify_statement(&envelope(&r5["statement"])).unwrap();
    assert_eq!(st.revision, 5);
    assert_eq!(st.role_of("carol"), Some(Role::Writer));
    assert_eq!(st.role_of("bob"), Some(Role::Admin));
    assert_eq!(st.role_of("alice"), Some(Role::Reader));
    let mine = c.get("/api/v1/memberships", &[]).await.unwrap();
    assert_eq!(mine["items"], json!([{ "subchain": "supply", "role": "writer" }]));
    let members = c.get("/api/v1/subchains/supply/members", &[]).await.unwrap();
    assert_eq!(members["items"].as_array().unwrap().len(), 4);
    let e = ca
        .api(Some(&other_pub))
        .get("/api/v1/subchains/supply/members", &[])
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "forbidden");

    // Leaving and removal.
    a.delete("/api/v1/subchains/supply/members/alice").await.unwrap();
    let e = p.delete("/api/v1/subchains/supply/members/alice").await.unwrap_err();
    assert_eq!(slug(&e), "not-found");
    let e = b.delete("/api/v1/subchains/supply/members/pub").await.unwrap_err();
    assert_eq!(slug(&e), "conflict");
    let e = c.delete("/api/v1/subchains/supply/members/bob").await.unwrap_err();
    assert_eq!(slug(&e), "forbidden");
    let latest = envelope(&c.get("/api/v1/subchains/supply/statement", &[]).await.unwrap());
    let st = key.verify_statement(&latest).unwrap();
    assert_eq!((st.revision, st.role_of("alice")), (6, None));
    let old = envelope(&c.get("/api/v1/subchains/supply/statements/2", &[]).await.unwrap());
    assert_eq!(key.verify_statement(&old).unwrap().role_of("alice"), Some(Role::Reader));

    // An open subchain admits at once.
    p.post(
        "/api/v1/subchains",
        &json!({ "id": "market", "name": "Market", "nodes": ["n2"], "policy": "open" }),
    )
    .await
    .unwrap();
    let j = a
        .post("/api/v1/subchains/market/join", &json!({ "role": "writer" }))
        .await
        .unwrap();
    assert_eq!(j["outcome"], "member");
    let j = b
        .post("/api/v1/subchains/market/join", &json!({ "role": "admin" }))
        .await
        .unwrap();
    assert_eq!(j["outcome"], "pending", "admin always needs approval");

    // The feed: n1 sees supply's revisions and revocations, never market's.
    let f1 = ca.api(Some(&n1));
    let page = f1.get("/api/v1/feed", &[("cursor", "0".into())]).await.unwrap();
    let events = page["events"].as_array().unwrap();
    let revisions: Vec<(String, i64)> = events
        .iter()
        .map(|e| {
            (
                e["subchain"].as_str().unwrap().to_string(),
                e["revision"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        revisions,
        (1..=6).map(|r| ("supply".to_string(), r)).collect::<Vec<_>>()
    );
    for e in events {
        let st = key.verify_statement(&envelope(&e["statement"])).unwrap();
        assert_eq!(st.revision as i64, e["revision"].as_i64().unwrap());
    }
    let hb = key.verify_heartbeat(&envelope(&page["heartbeat"])).unwrap();
    assert_eq!((hb.node.as_str(), hb.cursor), ("n1", page["cursor"].as_u64().unwrap()));
    let f2 = ca.api(Some(&n2));
    let page2 = f2.get("/api/v1/feed", &[]).await.unwrap();
    assert!(
        page2["events"]
            .as_array()
            .unwrap()
            .iter()
            .all(|e| e["subchain"] == "market")
    );
    // Resuming from the middle gives only what came after.
    let mid = events[2]["seq"].as_i64().unwrap();
    let rest = f1.get("/api/v1/feed", &[("cursor", mid.to_string())]).await.unwrap();
    assert_eq!(rest["events"].as_array().unwrap().len(), 3);
    // Bad cursors and callers.
    for (api, cursor, want) in [
        (&f1, "999999", "invalid-cursor"),
        (&f1, "-1", "invalid-cursor"),
        (&f1, "abc", "invalid-cursor"),
        (&a, "0", "forbidden"),
    ] {
        let e = api.get("/api/v1/feed", &[("cursor", cursor.into())]).await.unwrap_err();
        assert_eq!(slug(&e), want, "{cursor}");
    }

    // Moving supply from n1 to n2: both see that revision (n1 learns it no longer hosts it).
    let cursor1 = page["cursor"].as_i64().unwrap();
    let moved = p
        .patch("/api/v1/subchains/supply", &json!({ "nodes": ["n2"] }))
        .await
        .unwrap();
    assert_eq!(moved["revision"]["revision"], 7);
    let e1 = f1
        .get("/api/v1/feed", &[("cursor", cursor1.to_string())])
        .await
        .unwrap();
    let st = key.verify_statement(&envelope(&e1["events"][0]["statement"])).unwrap();
    assert!(!st.hosted_by("n1") && st.hosted_by("n2"));
    let cursor1 = e1["cursor"].as_i64().unwrap();

    // A revocation reaches every node, pushed over server-sent events.
    let mut stream = f1
        .events("/api/v1/feed/stream", &[("cursor", cursor1.to_string())])
        .await
        .unwrap();
    let listing = admin_api
        .get("/api/v1/certificates", &[("identity", "carol".into())])
        .await
        .unwrap();
    let serial = listing["items"][0]["serial"].as_str().unwrap().to_string();
    let t = Instant::now();
    admin_api
        .post(
            &format!("/api/v1/certificates/{serial}/revoke"),
            &json!({ "reason": "keyCompromise" }),
        )
        .await
        .unwrap();
    let ev = tokio::time::timeout(Duration::from_secs(5), async {
        loop {
            let ev = stream.next().await.unwrap().expect("stream open");
            if ev.event == "revocation" {
                return ev;
            }
        }
    })
    .await
    .expect("the revocation arrives within 5 s");
    let latency = t.elapsed();
    let v: Value = serde_json::from_str(&ev.data).unwrap();
    assert_eq!(
        (v["serial"].as_str(), v["identity"].as_str()),
        (Some(serial.as_str()), Some("carol"))
    );
    eprintln!("revocation reached the feed stream in {latency:?} (including the revoke call)");
    let e2 = f2.get("/api/v1/feed", &[("cursor", "0".into())]).await.unwrap();
    assert!(
        e2["events"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["serial"] == serial.as_str())
    );
    // With nothing new, the stream sends signed heartbeats.
    let hb = tokio::time::timeout(Duration::from_secs(15), async {
        loop {
            let ev = stream.next().await.unwrap().expect("stream open");
            if ev.event == "heartbeat" {
                return ev;
            }
        }
    })
    .await
    .expect("a heartbeat");
    let hb = key
        .verify_heartbeat(&serde_json::from_str::<Envelope>(&hb.data).unwrap())
        .unwrap();
    assert_eq!(hb.node, "n1");
    assert!(hb.cursor as i64 >= ev.id.parse::<i64>().unwrap());

    // Membership changes are leaves of the issuance log, and the whole log still verifies.
    let entries = ca
        .api(None)
        .get("/api/v1/log/entries", &[("identity", "pub".into())])
        .await
        .unwrap();
    assert!(
        entries["items"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["kind"] == "membership")
    );
    let vkey = ca.data_dir().join("log.vkey");
    let out = ca.bsn(&["audit", "verify", "--log-vkey", vkey.to_str().unwrap()]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
}

fn as_who<'a>(who: &'a std::path::Path, args: &[&'a str]) -> Vec<String> {
    let mut v: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    v.extend([
        "--cert".into(),
        who.join("cert.pem").display().to_string(),
        "--key".into(),
        who.join("key.pem").display().to_string(),
    ]);
    v
}

fn run(ca: &TestCa, who: &std::path::Path, args: &[&str]) -> (i32, String, String) {
    let all = as_who(who, args);
    let refs: Vec<&str> = all.iter().map(String::as_str).collect();
    let out = ca.bsn(&refs);
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).to_string(),
        String::from_utf8_lossy(&out.stderr).to_string(),
    )
}

/// The same registry through `bsn subchain ...`, `bsn memberships` and `bsn feed`, with the exit
/// codes and hints a user sees when something is refused.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bsn_subchain_commands() {
    let mut ca = TestCa::start();
    let publisher = ca.enrolled("pub", json!({ "roles": ["publisher"] })).await;
    let dan = ca.enrolled("dan", json!({})).await;
    let node = ca
        .enrolled("city-1", json!({ "type": "node", "dns_names": ["c1.test"] }))
        .await;

    let (code, out, err) = run(
        &ca,
        &publisher,
        &[
            "subchain",
            "create",
            "trade",
            "--name",
            "Trade finance",
            "--node",
            "city-1",
        ],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("trade is at revision 1"), "{out}");
    let (code, out, _) = run(&ca, &dan, &["subchain", "list"]);
    assert_eq!(code, 0);
    let lines: Vec<&str> = out.lines().collect();
    assert!(lines[0].starts_with("ID ") && lines[0].ends_with("CITY NODES"), "{out}");
    assert!(
        lines[1].starts_with("trade  Trade finance  approval  1  ") && lines[1].ends_with(" UTC  city-1"),
        "{out}"
    );
    let (code, out, _) = run(&ca, &dan, &["subchain", "list", "--json"]);
    assert_eq!(code, 0);
    let listed: Vec<bsn_api::ca::Subchain> = serde_json::from_str(&out).unwrap();
    assert_eq!((listed[0].id.as_str(), listed[0].revision), ("trade", 1));

    // Refusals: exit codes and hints.
    let (code, _, err) = run(
        &ca,
        &dan,
        &["subchain", "create", "x", "--name", "X", "--node", "city-1"],
    );
    assert_eq!(code, 3, "{err}");
    assert!(err.contains("hint:"), "{err}");
    let (code, _, err) = run(&ca, &dan, &["subchain", "join", "nowhere"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("no subchain 'nowhere'"), "{err}");
    let (code, _, err) = run(&ca, &dan, &["subchain", "join", "trade", "--role", "owner"]);
    assert_eq!(code, 2, "{err}");

    let (code, out, err) = run(
        &ca,
        &dan,
        &["subchain", "join", "trade", "--role", "writer", "--note", "hi"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("pending approval"), "{out}");
    let (_, out, _) = run(&ca, &publisher, &["subchain", "requests", "trade"]);
    let rows = table(&out, "IDENTITY  ROLE    ASKED");
    assert_eq!(
        (
            rows[0][0].as_str(),
            rows[0][1].as_str(),
            rows[0].last().unwrap().as_str()
        ),
        ("dan", "writer", "hi"),
        "{out}"
    );
    let (code, out, err) = run(&ca, &publisher, &["subchain", "approve", "trade", "--member", "dan"]);
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("revision 2"), "{out}");
    let (_, out, _) = run(&ca, &dan, &["memberships"]);
    assert_eq!(table(&out, "SUBCHAIN  ROLE"), [["trade", "writer"]]);
    let (_, out, _) = run(&ca, &dan, &["subchain", "members", "trade"]);
    assert_eq!(table(&out, "MEMBER  ROLE"), [["dan", "writer"], ["pub", "admin"]]);
    let (_, out, _) = run(&ca, &dan, &["subchain", "members", "trade", "--json"]);
    let members: Vec<identity::membership::Member> = serde_json::from_str(&out).unwrap();
    assert_eq!(members.len(), 2);

    // The statement, verified with a key obtained out of band.
    let key = ca.api(None).get("/api/v1/membership-key", &[]).await.unwrap();
    let key_file = ca.dir.path().join("membership.key");
    std::fs::write(&key_file, key["key"].as_str().unwrap()).unwrap();
    let (code, out, err) = run(
        &ca,
        &dan,
        &[
            "subchain",
            "statement",
            "trade",
            "--membership-key",
            key_file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 0, "{err}");
    let st: Value = serde_json::from_str(&out).unwrap();
    assert_eq!(st["revision"], 2);
    assert!(err.contains("signature verified"), "{err}");
    // ...and with another key it is refused (exit 6).
    std::fs::write(&key_file, "A".repeat(43) + "=").unwrap();
    let (code, _, err) = run(
        &ca,
        &dan,
        &[
            "subchain",
            "statement",
            "trade",
            "--membership-key",
            key_file.to_str().unwrap(),
        ],
    );
    assert_eq!(code, 6, "{err}");

    let (code, _, err) = run(
        &ca,
        &publisher,
        &["subchain", "set-role", "trade", "--member", "dan", "--role", "reader"],
    );
    assert_eq!(code, 0, "{err}");
    let (code, _, err) = run(&ca, &dan, &["subchain", "leave", "trade"]);
    assert_eq!(code, 0, "{err}");
    let (_, out, _) = run(&ca, &dan, &["memberships"]);
    assert!(out.starts_with("no memberships yet"), "{out}");

    // The node reads the feed; a participant may not.
    let (code, out, err) = run(&ca, &node, &["feed"]);
    assert_eq!(code, 0, "{err}");
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines.len(), 4, "{out}");
    assert!(lines[3].ends_with("membership\ttrade\trevision 4"), "{out}");
    let (code, _, err) = run(&ca, &dan, &["feed"]);
    assert_eq!(code, 3, "{err}");
    let (code, _, err) = run(&ca, &node, &["feed", "--cursor", "1000"]);
    assert_eq!(code, 4, "{err}");
    assert!(err.contains("resume from"), "{err}");
}

/// Regression: when the CA goes away under an open feed stream, the node's error names the CA
/// it was reading from (it said "cannot reach the CA at : ...").
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_broken_feed_stream_names_the_ca() {
    let mut ca = TestCa::start();
    let node = ca.enrolled("city-9", json!({ "type": "node" })).await;
    let url = ca.url.clone();
    let mut stream = ca
        .api(Some(&node))
        .events("/api/v1/feed/stream", &[("cursor", "0".to_string())])
        .await
        .unwrap();
    ca.kill_all();
    let err = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match stream.next().await {
                Ok(Some(_)) => continue,
                Ok(None) => return None,
                Err(e) => return Some(e),
            }
        }
    })
    .await
    .expect("the stream neither ended nor failed after the CA was killed")
    .expect("the stream ended cleanly, though the CA was killed");
    let text = err.to_string();
    assert!(text.contains(&url), "the error does not name the CA: {text}");
}

/// The rows of a `bsn` listing under a header that starts with `header`, split on whitespace.
fn table(out: &str, header: &str) -> Vec<Vec<String>> {
    let mut lines = out.lines();
    let first = lines.next().unwrap_or_default();
    assert!(
        first.starts_with(header),
        "header {first:?}, expected {header:?}:\n{out}"
    );
    lines
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect()
}
