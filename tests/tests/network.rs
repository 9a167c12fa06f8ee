//! The network of cities (DESIGN section 11): orderer identities, and the signed node directory
//! through the real API with real mTLS identities: only a node sets its own entry, bad input
//! changes nothing, the signed form verifies offline, every node hears of each revision on the
//! change feed, a subchain shows where it is served, and `bsn nodes` checks the signature. On
//! SQLite or PostgreSQL (BSN_TEST_DATABASE).

use bsn_api::ca::{FeedEvent, FeedPage, Nodes, OwnEntry};
use bsn_tests::{TestCa, slug};
use identity::IdentityKind;
use identity::membership::MembershipKey;
use serde_json::json;

async fn key(ca: &TestCa) -> MembershipKey {
    let v = ca.api(None).get("/api/v1/membership-key", &[]).await.unwrap();
    MembershipKey::from_base64(v["key"].as_str().unwrap()).unwrap()
}

async fn directory(ca: &TestCa) -> Nodes {
    ca.api(None).get_as("/api/v1/nodes", &[]).await.unwrap()
}

fn entry(city: &str, url: &str) -> OwnEntry {
    OwnEntry {
        city: city.into(),
        url: url.into(),
        capacity: None,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn orderers_and_the_signed_node_directory() {
    let mut ca = TestCa::start();
    let admin = ca.admin();
    let publisher = ca.enrolled("pub", json!({ "roles": ["publisher"] })).await;
    let alice = ca.enrolled("alice", json!({})).await;
    let n1 = ca
        .enrolled("n1", json!({ "type": "node", "dns_names": ["n1.test"] }))
        .await;
    let n2 = ca.enrolled("n2", json!({ "type": "node" })).await;
    // An orderer: its own kind, the node certificate profile, spiffe://<td>/orderer/<name>.
    let out = ca.bsn(&[
        "register",
        "--id",
        "o1",
        "--type",
        "orderer",
        "--cert",
        admin.join("cert.pem").to_str().unwrap(),
        "--key",
        admin.join("key.pem").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let secret = String::from_utf8_lossy(&out.stdout)
        .lines()
        .find_map(|l| l.strip_prefix("enrollment secret: ").map(str::to_string))
        .expect("bsn register prints the secret");
    let o1 = tempfile::tempdir().unwrap();
    let out = ca.bsn_enroll("o1", &secret, o1.path());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    use rustls_pki_types::pem::PemObject;
    let pem = std::fs::read(o1.path().join("cert.pem")).unwrap();
    let leaf = rustls_pki_types::CertificateDer::from_pem_slice(&pem).unwrap();
    let parsed = identity::profile::check_leaf(&leaf).unwrap();
    assert_eq!(parsed.spiffe_id.kind, IdentityKind::Orderer);
    assert!(
        parsed.spiffe_id.to_string().ends_with("/orderer/o1"),
        "{}",
        parsed.spiffe_id
    );
    let listed = ca
        .api(Some(&admin))
        .get("/api/v1/identities", &[("type", "orderer".into())])
        .await
        .unwrap();
    assert_eq!(listed["items"][0]["id"], "o1");

    // Empty at first; public.
    let d = directory(&ca).await;
    assert_eq!((d.revision, d.nodes.len(), d.signed.is_none()), (0, 0, true));

    // A node sets its own entry: revision 1, signed, verifiable offline.
    let key = key(&ca).await;
    let v: Nodes = ca
        .api(Some(&n1))
        .put_as("/api/v1/nodes/self", &entry("Beijing", "https://n1.test:8444"))
        .await
        .unwrap();
    assert_eq!(v.revision, 1);
    let signed = key.verify_directory(v.signed.as_ref().unwrap()).unwrap();
    assert_eq!(signed.nodes, v.nodes);
    assert_eq!(signed.nodes[0].role, IdentityKind::Node);
    assert_eq!(signed.nodes[0].url, "https://n1.test:8444");
    // The same entry again signs nothing new.
    let again: Nodes = ca
        .api(Some(&n1))
        .put_as("/api/v1/nodes/self", &entry("Beijing", "https://n1.test:8444"))
        .await
        .unwrap();
    assert_eq!(again.revision, 1);
    // The orderer's role comes from its identity, not from what it says.
    let o1_api = ca.api(Some(o1.path()));
    let v: Nodes = o1_api
        .put_as("/api/v1/nodes/self", &entry("Shanghai", "https://10.0.0.9:9000"))
        .await
        .unwrap();
    assert_eq!(v.revision, 2);
    assert_eq!(
        v.nodes.iter().map(|n| (n.id.as_str(), n.role)).collect::<Vec<_>>(),
        [("n1", IdentityKind::Node), ("o1", IdentityKind::Orderer)]
    );

    // Nobody else speaks for a node: participants (with a certificate or a portal session),
    // administrators and publishers are refused, and bad fields change nothing.
    for who in [&alice, &admin, &publisher] {
        let e = ca
            .api(Some(who))
            .put_as::<_, Nodes>("/api/v1/nodes/self", &entry("Beijing", "https://evil.test"))
            .await
            .unwrap_err();
        assert_eq!(slug(&e), "forbidden", "{e}");
    }
    let e = ca
        .api(None)
        .put_as::<_, Nodes>("/api/v1/nodes/self", &entry("Beijing", "https://evil.test"))
        .await
        .unwrap_err();
    assert!(
        ["client-certificate-required", "unauthorized"].contains(&slug(&e).as_str()),
        "{e}"
    );
    for (city, url) in [
        ("Beijing", "http://n2.test"),
        ("Beijing", "https://user@n2.test"),
        ("Beijing", "https://n2.test/?x=1"),
        ("", "https://n2.test"),
        ("a/b", "https://n2.test"),
        ("Beijing", &format!("https://{}.test", "x".repeat(300))),
    ] {
        let e = ca
            .api(Some(&n2))
            .put_as::<_, Nodes>("/api/v1/nodes/self", &entry(city, url))
            .await
            .unwrap_err();
        assert_eq!(slug(&e), "invalid-field", "{city:?} {url:?}: {e}");
    }
    let d = directory(&ca).await;
    assert_eq!((d.revision, d.nodes.len()), (2, 2), "refused entries changed nothing");

    // Every node hears of each revision on the change feed (n2 hosts nothing: audience '*').
    let page: FeedPage = ca
        .api(Some(&n2))
        .get_as("/api/v1/feed", &[("cursor", "0".into())])
        .await
        .unwrap();
    let revisions: Vec<u64> = page
        .events
        .iter()
        .filter_map(|e| match e {
            FeedEvent::Directory {
                revision, directory, ..
            } => {
                assert_eq!(key.verify_directory(directory).unwrap().revision, *revision as u64);
                Some(*revision as u64)
            }
            _ => None,
        })
        .collect();
    assert_eq!(revisions, [1, 2]);

    // A node moves: a new revision; the subchain shows each hosting node's URL.
    let v: Nodes = ca
        .api(Some(&n1))
        .put_as("/api/v1/nodes/self", &entry("Beijing", "https://n1.test:9444"))
        .await
        .unwrap();
    assert_eq!(v.revision, 3);
    ca.api(Some(&publisher))
        .post(
            "/api/v1/subchains",
            &json!({ "id": "supply", "name": "Supply", "nodes": ["n1", "n2"] }),
        )
        .await
        .unwrap();
    let s: bsn_api::ca::Subchain = ca
        .api(Some(&alice))
        .get_as("/api/v1/subchains/supply", &[])
        .await
        .unwrap();
    assert_eq!(s.nodes, ["n1", "n2"]);
    assert_eq!(s.endpoints.len(), 1, "n2 has not published an entry");
    assert_eq!(s.endpoints[0].url, "https://n1.test:9444");
    let out = ca.bsn(&[
        "subchain",
        "show",
        "supply",
        "--cert",
        alice.join("cert.pem").to_str().unwrap(),
        "--key",
        alice.join("key.pem").to_str().unwrap(),
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    // For people: one line per hosting node with its city and URL, readable times; --json for
    // scripts.
    assert!(text.starts_with("Supply (supply)\n"), "{text}");
    assert!(
        text.lines().any(|l| l.starts_with("served by")
            && l.contains("n1")
            && l.contains("Beijing")
            && l.contains("https://n1.test:9444")),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.contains("n2") && l.contains("has not published its URL yet")),
        "{text}"
    );
    assert!(text.contains(" UTC"), "times are dates, not Unix seconds: {text}");
    let out = ca.bsn(&[
        "subchain",
        "show",
        "supply",
        "--json",
        "--cert",
        alice.join("cert.pem").to_str().unwrap(),
        "--key",
        alice.join("key.pem").to_str().unwrap(),
    ]);
    let v: bsn_api::ca::Subchain = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v, s);

    // `bsn nodes` (public) prints the directory after checking its signature.
    let out = ca.bsn(&["nodes"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let rows: Vec<Vec<&str>> = text.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["ID", "ROLE", "CITY", "URL", "OFFERS"], "{text}");
    assert!(
        rows.contains(&vec!["n1", "node", "Beijing", "https://n1.test:9444", "-"]),
        "{text}"
    );
    assert!(
        rows.contains(&vec!["o1", "orderer", "Shanghai", "https://10.0.0.9:9000", "-"]),
        "{text}"
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("revision 3 (signature verified)"));
}
