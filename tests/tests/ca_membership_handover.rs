//! Handing the CA's membership key over to a new key without an outage (issue 16): begin (the
//! next key is published, nothing is signed with it), finish (the handover is signed by both
//! keys, announced on the feed, and from then on statements are signed by the new key). City
//! nodes that pinned the old key follow it from the feed and keep writing throughout; a node
//! initialised after the handover pins the new key and still verifies the blocks the old key's
//! statements made; a restarted node keeps following; `bsn subchain statement` with the old key
//! pinned verifies a new statement; the old key is erased, the audit counts the steps and
//! refuses a published handover the log does not hold.

use std::time::Duration;

use bsn_api::client::Api;
use bsn_tests::{Tally, TestCa, TestNode, eventually, put, sign_tx, slug, submit_body};
use identity::membership::{Envelope, KeyHandover, MembershipKey};
use serde_json::{Value, json};

async fn info(api: &Api) -> Option<Value> {
    api.get("/api/v1/subchains/demo", &[]).await.ok()
}

async fn at_revision(api: &Api, revision: u64) {
    eventually(
        &format!("the node to apply membership revision {revision}"),
        Duration::from_secs(30),
        || async {
            info(api)
                .await
                .filter(|v| v["membership_revision"].as_u64() >= Some(revision))
        },
    )
    .await;
}

fn states(list: &Value) -> Vec<(i64, String)> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["number"].as_i64().unwrap(), i["state"].as_str().unwrap().to_string()))
        .collect()
}

async fn statement(api: &Api, revision: u64) -> Envelope {
    serde_json::from_value(
        api.get(&format!("/api/v1/subchains/demo/statements/{revision}"), &[])
            .await
            .unwrap(),
    )
    .unwrap()
}

async fn write(api: &Api, who: &std::path::Path, key: &str) -> Result<Value, bsn_api::client::ClientError> {
    let tx = sign_tx(who, "demo", vec![put(key, "v")]);
    api.post("/api/v1/subchains/demo/transactions", &submit_body(&[tx]))
        .await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_membership_key_is_handed_over_and_nodes_pinning_either_key_follow_it() {
    let mut ca = TestCa::start();
    let mut nodes = TestNode::cluster(&mut ca, &["n1", "n2"]).await;
    let admin = ca.admin();
    let as_admin = ca.api(Some(&admin));
    as_admin
        .post(
            "/api/v1/subchains",
            &json!({ "id": "demo", "name": "Demo", "nodes": ["n1", "n2"], "policy": "approval" }),
        )
        .await
        .unwrap();
    let alice = ca.participant("alice").await;
    as_admin
        .put("/api/v1/subchains/demo/members/alice", &json!({ "role": "writer" }))
        .await
        .unwrap();
    let apis: Vec<Api> = nodes.iter().map(|n| n.api(&ca, &alice)).collect();
    for api in &apis {
        at_revision(api, 2).await;
    }
    let anon = ca.api(None);
    let old: Value = anon.get("/api/v1/membership-key", &[]).await.unwrap();
    let old = MembershipKey::from_base64(old["key"].as_str().unwrap()).unwrap();
    let old_file = ca.data_dir().join("old-membership.key");
    std::fs::write(&old_file, old.to_base64()).unwrap();
    let list: Value = anon.get("/api/v1/keys/membership", &[]).await.unwrap();
    assert_eq!(states(&list), [(1, "active".to_string())]);
    assert_eq!(list["items"][0]["public_key"].as_str(), Some(old.to_base64().as_str()));

    // Writes through both nodes for the whole handover, every failure counted.
    let tally = Tally::default();
    let writers: Vec<_> = apis
        .iter()
        .enumerate()
        .map(|(n, api)| {
            let (api, tally, alice) = (api.clone(), tally.clone(), alice.clone());
            tokio::spawn(async move {
                let mut i = 0;
                while tally.running() {
                    tally.record("ledger write", write(&api, &alice, &format!("load-{n}-{i}")).await);
                    i += 1;
                }
            })
        })
        .collect();
    tally.progress(20).await;

    // Bad input first: nothing changes.
    let e = ca
        .api(Some(&alice))
        .post("/api/v1/keys/membership", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "forbidden", "only administrators hand keys over");
    let e = as_admin
        .post("/api/v1/keys/membership/2/finish", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "not-found");

    // Begin: the next key is published; nothing is signed with it yet.
    let next: Value = as_admin.post("/api/v1/keys/membership", &json!({})).await.unwrap();
    assert_eq!(
        (next["number"].as_i64(), next["state"].as_str()),
        (Some(2), Some("incoming"))
    );
    assert!(next["handover"].is_null(), "{next}");
    let new = MembershipKey::from_base64(next["public_key"].as_str().unwrap()).unwrap();
    assert_ne!(new, old);
    let e = as_admin.post("/api/v1/keys/membership", &json!({})).await.unwrap_err();
    assert_eq!(slug(&e), "rotation-refused", "one handover at a time: {e}");
    let now: Value = anon.get("/api/v1/membership-key", &[]).await.unwrap();
    assert_eq!(
        now["key"].as_str(),
        Some(old.to_base64().as_str()),
        "the old key signs until the finish"
    );
    tally.progress(20).await;

    // Finish: the handover, signed by both keys; the new key signs from now on.
    let done: Value = as_admin
        .post("/api/v1/keys/membership/2/finish", &json!({}))
        .await
        .unwrap();
    assert_eq!(done["state"].as_str(), Some("active"));
    let handover: KeyHandover = serde_json::from_value(done["handover"].clone()).unwrap();
    let (terms, from, to) = handover.verify().expect("the handover verifies with both keys");
    assert_eq!((from, to.clone(), terms.number), (old.clone(), new.clone(), 2));
    let e = as_admin
        .post("/api/v1/keys/membership/2/finish", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "rotation-refused", "finished once: {e}");
    let list: Value = anon.get("/api/v1/keys/membership", &[]).await.unwrap();
    assert_eq!(states(&list), [(1, "retired".to_string()), (2, "active".to_string())]);
    let now: Value = anon.get("/api/v1/membership-key", &[]).await.unwrap();
    assert_eq!(now["key"].as_str(), Some(new.to_base64().as_str()));
    let bundle: Value = anon.get("/api/v1/spiffe-bundle", &[]).await.unwrap();
    assert_eq!(
        bundle["bsn_membership_key"]["key"].as_str(),
        Some(new.to_base64().as_str()),
        "{bundle}"
    );

    // A membership change after the handover: signed by the new key, applied by both nodes
    // (which pinned the old one), and the new member writes through each.
    let bob = ca.participant("bob").await;
    as_admin
        .put("/api/v1/subchains/demo/members/bob", &json!({ "role": "writer" }))
        .await
        .unwrap();
    let st3 = statement(&as_admin, 3).await;
    assert!(
        new.verify_statement(&st3).is_ok(),
        "revision 3 is signed by the new key"
    );
    assert!(old.verify_statement(&st3).is_err());
    assert!(
        old.verify_statement(&statement(&as_admin, 2).await).is_ok(),
        "revision 2 stays the old key's"
    );
    for (i, node) in nodes.iter().enumerate() {
        let api = node.api(&ca, &bob);
        at_revision(&api, 3).await;
        eventually("bob to be admitted", Duration::from_secs(20), || async {
            write(&api, &bob, &format!("bob-via-n{}", i + 1)).await.ok()
        })
        .await;
    }
    tally.progress(20).await;
    let (ok, failures) = tally.stop(writers).await;
    assert!(failures.is_empty(), "writes failed during the handover: {failures:?}");
    println!("{ok} writes through the handover, none failed");

    // `bsn subchain statement` with the old key pinned follows the handover to verify it.
    let out = ca.bsn(&[
        "subchain",
        "statement",
        "demo",
        "--cert",
        alice.join("cert.pem").to_str().unwrap(),
        "--key",
        alice.join("key.pem").to_str().unwrap(),
        "--membership-key",
        old_file.to_str().unwrap(),
    ]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("following its handovers") && text.contains("\"revision\": 3"),
        "{text}"
    );

    // A node initialised after the handover pins the new key; hosting the subchain, it verifies
    // the config blocks the old key's statements made.
    let n3 = TestNode::start(&mut ca, "n3").await;
    assert_eq!(
        std::fs::read_to_string(n3.dir.join("membership.key")).unwrap().trim(),
        new.to_base64()
    );
    as_admin
        .patch("/api/v1/subchains/demo", &json!({ "nodes": ["n1", "n2", "n3"] }))
        .await
        .unwrap();
    let target = info(&apis[0]).await.unwrap()["height"].as_u64().unwrap();
    let api3 = n3.api(&ca, &alice);
    eventually("n3 to catch up", Duration::from_secs(60), || async {
        info(&api3).await.filter(|v| v["height"].as_u64() >= Some(target))
    })
    .await;
    let c1 = bsn_tests::chain_hashes(&bsn_tests::chain_of(&apis[0], "demo").await);
    let c3 = bsn_tests::chain_hashes(&bsn_tests::chain_of(&api3, "demo").await);
    let n = c1.len().min(c3.len());
    assert!(n as u64 > target);
    assert_eq!(c1[..n], c3[..n], "n3 holds the same chain");

    // A restarted node keeps following (its handovers are in node.redb) and serves.
    nodes[0].kill();
    nodes[0].restart();
    let api1 = nodes[0].api(&ca, &alice);
    eventually(
        "n1 to serve again after its restart",
        Duration::from_secs(30),
        || async { write(&api1, &alice, "after-restart").await.ok() },
    )
    .await;

    // Key 1 is erased from the database; a restarted CA signs with key 2.
    let mut c = ca.db_conn().await;
    let sealed: Option<String> = sqlx::query_scalar("SELECT v FROM ca_meta WHERE k = 'membership_key_sealed'")
        .fetch_optional(&mut c)
        .await
        .unwrap();
    assert!(sealed.is_none(), "the retired key's sealed copy is erased");
    drop(c);
    ca.restart();
    let carol = ca.participant("carol").await;
    let as_admin = ca.api(Some(&admin));
    as_admin
        .put("/api/v1/subchains/demo/members/carol", &json!({ "role": "reader" }))
        .await
        .unwrap();
    let latest: Value = as_admin.get("/api/v1/subchains/demo", &[]).await.unwrap();
    let rev = latest["revision"].as_u64().unwrap();
    assert!(new.verify_statement(&statement(&as_admin, rev).await).is_ok());
    at_revision(&nodes[1].api(&ca, &carol), rev).await;

    // The audit follows both steps.
    let out = bsn_tests::audit(&ca);
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{text}");
    assert!(text.contains("2 key handover steps"), "{text}");

    // A CA that publishes a handover the log does not hold (both signatures valid, but between
    // keys of its own choosing) is caught by the audit.
    let forged = {
        use base64::Engine;
        use ring::signature::KeyPair;
        let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
        let rng = ring::rand::SystemRandom::new();
        let pair = || {
            let pkcs8 = ring::signature::Ed25519KeyPair::generate_pkcs8(&rng).unwrap();
            ring::signature::Ed25519KeyPair::from_pkcs8(pkcs8.as_ref()).unwrap()
        };
        let (a, b) = (pair(), pair());
        let payload = serde_json::to_vec(&json!({
            "version": 1, "trust_domain": "test.example", "from": b64(a.public_key().as_ref()),
            "to": b64(b.public_key().as_ref()), "number": 2, "issued_at": 0,
        }))
        .unwrap();
        let message = identity::membership::signed_message(identity::membership::HANDOVER_CONTEXT, &payload);
        json!({ "payload": b64(&payload), "from_signature": b64(a.sign(&message).as_ref()),
                "to_signature": b64(b.sign(&message).as_ref()) })
        .to_string()
    };
    let mut c = ca.db_conn().await;
    let genuine: String =
        sqlx::query_scalar("SELECT handover_checkpoint FROM signing_keys WHERE purpose = 'membership' AND number = 2")
            .fetch_one(&mut c)
            .await
            .unwrap();
    let set = "UPDATE signing_keys SET handover_checkpoint = $1 WHERE purpose = 'membership' AND number = 2";
    sqlx::query(set).bind(&forged).execute(&mut c).await.unwrap();
    let out = bsn_tests::audit(&ca);
    let text = String::from_utf8_lossy(&out.stdout).to_string() + &String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(6), "{text}");
    assert!(text.contains("that the log does not hold"), "{text}");
    sqlx::query(set).bind(&genuine).execute(&mut c).await.unwrap();
    assert!(bsn_tests::audit(&ca).status.success());
    drop(n3);
}
