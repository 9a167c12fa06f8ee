//! Rotating the issuing intermediate without an outage (issue 16): next, publish, activate,
//! retire, each refused out of turn; clients renewing and enrolling and a city node admitting
//! clients through the whole rotation see no failed request; old leaves keep working, new ones
//! work at once everywhere; each intermediate has its own CRL; `bsn audit verify` checks the
//! steps in the log.

use std::path::Path;
use std::time::Duration;

use bsn_api::client::Api;
use bsn_tests::{Tally, TestCa, TestNode, eventually, new_csr, put, sign_tx, slug, submit_body};
use serde_json::{Value, json};

/// The first certificate of a PEM file, DER.
fn first_der(pem: &[u8]) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem)
        .next()
        .unwrap()
        .unwrap()
        .to_vec()
}

/// The common name of the certificate's issuer.
fn issuer_cn(pem: &[u8]) -> String {
    let der = first_der(pem);
    let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
    c.issuer()
        .iter_common_name()
        .next()
        .and_then(|cn| cn.as_str().ok())
        .unwrap_or_default()
        .to_string()
}

/// The serials a DER CRL lists.
fn crl_serials(der: &[u8]) -> Vec<String> {
    let (_, crl) = x509_parser::parse_x509_crl(der).unwrap();
    crl.iter_revoked_certificates()
        .map(|r| {
            identity::profile::hex_lower(r.raw_serial())
                .trim_start_matches('0')
                .to_string()
        })
        .collect()
}

/// One write to the demo subchain on `node` as `who`.
async fn write(ca: &TestCa, node: &TestNode, who: &Path, key: &str) -> Result<Value, bsn_api::client::ClientError> {
    let tx = sign_tx(who, "demo", vec![put(key, "v")]);
    node.api(ca, who)
        .post("/api/v1/subchains/demo/transactions", &submit_body(&[tx]))
        .await
}

/// `who` reads the demo subchain on `node` presenting its leaf alone, without its chain.
async fn leaf_alone_is_admitted(
    ca: &TestCa,
    node: &TestNode,
    who: &Path,
) -> Result<Value, bsn_api::client::ClientError> {
    let leaf_only = who.join("leaf-only.pem");
    let leaf = first_der(&std::fs::read(who.join("cert.pem")).unwrap());
    std::fs::write(&leaf_only, ca_server::pki::pem("CERTIFICATE", &leaf)).unwrap();
    Api::from_files(&node.url, &ca.bundle, Some((&leaf_only, &who.join("key.pem"))))
        .unwrap()
        .get("/api/v1/subchains/demo", &[])
        .await
}

fn states(list: &Value) -> Vec<(i64, String)> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["number"].as_i64().unwrap(), i["state"].as_str().unwrap().to_string()))
        .collect()
}

/// Load on the CA and the node until stopped: renewals, enrollments and ledger writes, each
/// failure counted with what it was.
struct Load {
    tally: Tally,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(ca_renewer: Api, ca_anon: Api, secrets: Vec<(String, String)>, node: Api, who: &Path) -> Self {
        let tally = Tally::default();
        let mut tasks = Vec::new();
        for _ in 0..3 {
            let (api, tally) = (ca_renewer.clone(), tally.clone());
            tasks.push(tokio::spawn(async move {
                while tally.running() {
                    tally.record("renew", api.post("/api/v1/renew", &json!({ "csr": new_csr() })).await);
                }
            }));
        }
        {
            let (api, tally) = (ca_anon, tally.clone());
            tasks.push(tokio::spawn(async move {
                for (id, secret) in secrets {
                    if !tally.running() {
                        break;
                    }
                    let body = json!({ "id": id, "secret": secret, "csr": new_csr() });
                    tally.record(&format!("enroll {id}"), api.post("/api/v1/enroll", &body).await);
                }
            }));
        }
        {
            let (tally, who) = (tally.clone(), who.to_path_buf());
            tasks.push(tokio::spawn(async move {
                let mut i = 0;
                while tally.running() {
                    let tx = sign_tx(&who, "demo", vec![put(&format!("load-{i}"), "x")]);
                    let result = node
                        .post("/api/v1/subchains/demo/transactions", &submit_body(&[tx]))
                        .await;
                    tally.record("ledger write", result);
                    i += 1;
                }
            }));
        }
        Self { tally, tasks }
    }

    async fn progress(&self, more: usize) {
        self.tally.progress(more).await
    }

    /// Stops the load and asserts that no request failed; prints how many there were.
    async fn stop_without_failures(self, what: &str) {
        let (ok, failures) = self.tally.stop(self.tasks).await;
        assert!(
            failures.is_empty(),
            "{} of {} requests failed: {:?}",
            failures.len(),
            ok + failures.len(),
            &failures[..failures.len().min(5)]
        );
        println!("{what} under load: {ok} requests, none failed");
    }
}

/// A CA, its administrator, a city node hosting the demo subchain, and three writers on it
/// (alice, bob, carol) whose first write went through.
struct Setup {
    ca: TestCa,
    admin: std::path::PathBuf,
    node: TestNode,
    members: Vec<std::path::PathBuf>,
}

impl Setup {
    async fn start() -> Self {
        let mut ca = TestCa::start();
        let admin = ca.admin();
        let as_admin = ca.api(Some(&admin));
        let node = TestNode::start(&mut ca, "n1").await;
        as_admin
            .post(
                "/api/v1/subchains",
                &json!({ "id": "demo", "name": "Demo", "nodes": [node.name], "policy": "approval" }),
            )
            .await
            .unwrap();
        let mut members = Vec::new();
        for id in ["alice", "bob", "carol"] {
            let d = ca.participant(id).await;
            as_admin
                .put(
                    &format!("/api/v1/subchains/demo/members/{id}"),
                    &json!({ "role": "writer" }),
                )
                .await
                .unwrap();
            members.push(d);
        }
        eventually("alice to be admitted by the node", Duration::from_secs(20), || async {
            write(&ca, &node, &members[0], "hello").await.ok()
        })
        .await;
        Self {
            ca,
            admin,
            node,
            members,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_intermediate_rotates_under_load_and_old_and_new_leaves_work_everywhere() {
    let Setup {
        mut ca,
        admin,
        node,
        members,
    } = Setup::start().await;
    let as_admin = ca.api(Some(&admin));
    let (alice, bob, carol) = (&members[0], &members[1], &members[2]);
    assert_eq!(
        issuer_cn(&std::fs::read(alice.join("cert.pem")).unwrap()),
        "test.example Issuing CA 1"
    );

    let anon = ca.api(None);
    let list: Value = anon.get("/api/v1/intermediates", &[]).await.unwrap();
    assert_eq!(states(&list), [(1, "active".to_string())]);

    let mut secrets = Vec::new();
    for i in 0..400 {
        let id = format!("e{i}");
        secrets.push((id.clone(), ca.register(&id, json!({})).await));
    }
    let load = Load::start(ca.api(Some(carol)), anon.clone(), secrets, node.api(&ca, alice), alice);
    load.progress(20).await;

    // Step 1: the next intermediate, not public yet. A second one at once, or skipping a step,
    // is refused and changes nothing.
    let next: Value = as_admin.post("/api/v1/intermediates", &json!({})).await.unwrap();
    assert_eq!(
        (next["number"].as_i64(), next["state"].as_str()),
        (Some(2), Some("next"))
    );
    let e = as_admin.post("/api/v1/intermediates", &json!({})).await.unwrap_err();
    assert_eq!(slug(&e), "rotation-refused", "{e}");
    let e = as_admin
        .post("/api/v1/intermediates/2/activate", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "rotation-refused", "{e}");
    let e = ca
        .api(Some(alice))
        .post("/api/v1/intermediates/2/publish", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "forbidden", "only administrators rotate");
    let e = as_admin
        .post("/api/v1/intermediates/9/publish", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "not-found");
    let list: Value = anon.get("/api/v1/intermediates", &[]).await.unwrap();
    assert_eq!(
        states(&list),
        [(1, "active".to_string())],
        "a next intermediate is not public"
    );
    load.progress(20).await;

    // Step 2: published: listed, its CRL in the combined file, announced to the nodes.
    let published: Value = as_admin
        .post("/api/v1/intermediates/2/publish", &json!({}))
        .await
        .unwrap();
    assert_eq!(published["state"], "published");
    let list: Value = anon.get("/api/v1/intermediates", &[]).await.unwrap();
    assert_eq!(states(&list), [(1, "active".to_string()), (2, "published".to_string())]);
    let crls = String::from_utf8(anon.get_bytes("/api/v1/crls.pem").await.unwrap()).unwrap();
    assert_eq!(crls.matches("BEGIN X509 CRL").count(), 3, "root, 1 and 2");
    assert!(anon.get_bytes("/api/v1/crls/2").await.is_ok());
    load.progress(20).await;

    // Step 3: issuance switches to 2 while the load runs, once the node has acknowledged the
    // publication (within a moment of it).
    let active: Value = eventually(
        "the node to acknowledge intermediate 2",
        Duration::from_secs(20),
        || async {
            match as_admin.post("/api/v1/intermediates/2/activate", &json!({})).await {
                Ok(v) => Some(v),
                Err(e) => {
                    assert!(
                        e.to_string().contains("n1 (at"),
                        "only the node's acknowledgement is awaited: {e}"
                    );
                    None
                }
            }
        },
    )
    .await;
    assert_eq!(active["state"], "active");
    let list: Value = anon.get("/api/v1/intermediates", &[]).await.unwrap();
    assert_eq!(states(&list), [(1, "retiring".to_string()), (2, "active".to_string())]);
    load.progress(40).await;
    load.stop_without_failures("rotation").await;

    // A leaf of the new intermediate works at once: at the CA, and at the node, which learned
    // the intermediate from the feed (the node's own certificate is still from the old one).
    let out = ca.bsn_renew(bob);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        issuer_cn(&std::fs::read(bob.join("cert.pem")).unwrap()),
        "test.example Issuing CA 2"
    );
    write(&ca, &node, bob, "from-the-new-intermediate")
        .await
        .expect("a new leaf writes at once");
    ca.api(Some(bob))
        .post("/api/v1/renew", &json!({ "csr": new_csr() }))
        .await
        .expect("the CA takes a new leaf over mTLS");
    // A client that sends only its leaf (no chain) is verified with the intermediates the node
    // learned from the CA.
    leaf_alone_is_admitted(&ca, &node, bob)
        .await
        .expect("a leaf of the new intermediate, sent alone, is admitted");
    // The old leaf keeps working.
    write(&ca, &node, alice, "from-the-old-intermediate")
        .await
        .expect("an old leaf keeps working");

    // Each intermediate's revocations are on its own CRL; leaves name their own.
    let bob_cert = first_der(&std::fs::read(bob.join("cert.pem")).unwrap());
    let bob_leaf = identity::profile::check_leaf(&bob_cert).unwrap();
    as_admin
        .post(
            &format!("/api/v1/certificates/{}/revoke", bob_leaf.serial_hex),
            &json!({ "reason": "keyCompromise" }),
        )
        .await
        .unwrap();
    let serial = bob_leaf.serial_hex.trim_start_matches('0').to_string();
    assert!(crl_serials(&anon.get_bytes("/api/v1/crls/2").await.unwrap()).contains(&serial));
    assert!(!crl_serials(&anon.get_bytes("/api/v1/crls/1").await.unwrap()).contains(&serial));
    let (_, parsed) = x509_parser::parse_x509_certificate(&bob_cert).unwrap();
    let dp = format!("{:?}", parsed.extensions());
    assert!(dp.contains("/api/v1/crls/2"), "a leaf names its own intermediate's CRL");

    // Step 4: the old intermediate cannot retire while its certificates are valid.
    let e = as_admin
        .post("/api/v1/intermediates/1/retire", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "rotation-refused");
    assert!(e.to_string().contains("valid certificate"), "{e}");

    // The auditor verifies every certificate under its own intermediate and the steps in order.
    let out = bsn_tests::audit(&ca);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("2 intermediate steps"), "{stdout}");

    // The same from the command line: the listing, and a step out of turn with what to do.
    let out = ca.bsn(&["intermediates", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("retiring") && text.contains("/api/v1/crls/2"),
        "{text}"
    );
    let a = admin.to_str().unwrap();
    let out = ca.bsn(&[
        "intermediates",
        "retire",
        "1",
        "--cert",
        &format!("{a}/cert.pem"),
        "--key",
        &format!("{a}/key.pem"),
    ]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(4), "{err}");
    assert!(
        err.contains("valid certificate") && err.contains("bsn intermediates list"),
        "{err}"
    );

    // A restarted CA issues with the active intermediate, and its own TLS certificate moved to
    // it (so intermediate 1 can retire once its other certificates end).
    ca.restart();
    let tls = std::fs::read(ca.data_dir().join("tls.pem")).unwrap();
    assert_eq!(issuer_cn(&tls), "test.example Issuing CA 2");
    let out = ca.bsn_renew(alice);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(
        issuer_cn(&std::fs::read(alice.join("cert.pem")).unwrap()),
        "test.example Issuing CA 2"
    );

    // A node that starts after the rotation (its own certificate from intermediate 2, the first
    // intermediate never announced on the feed) still admits creators whose certificates come
    // from intermediate 1: it reads the CA's listing at start-up.
    let node2 = TestNode::start(&mut ca, "n2").await;
    let as_admin = ca.api(Some(&admin));
    as_admin
        .post(
            "/api/v1/subchains",
            &json!({ "id": "later", "name": "Later", "nodes": [node2.name], "policy": "approval" }),
        )
        .await
        .unwrap();
    as_admin
        .put("/api/v1/subchains/later/members/carol", &json!({ "role": "writer" }))
        .await
        .unwrap();
    assert_eq!(
        issuer_cn(&std::fs::read(carol.join("cert.pem")).unwrap()),
        "test.example Issuing CA 1"
    );
    eventually(
        "carol (intermediate 1) to write on the new node",
        Duration::from_secs(30),
        || async {
            let tx = sign_tx(carol, "later", vec![put("old-leaf", "v")]);
            node2
                .api(&ca, carol)
                .post("/api/v1/subchains/later/transactions", &submit_body(&[tx]))
                .await
                .ok()
        },
    )
    .await;
}

/// Activation waits for every node that acknowledged the feed recently: a node that is down
/// holds it back (named in the refusal) until the administrator forces it; nodes that never
/// followed the feed, or stopped long ago, are not waited for.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn activation_waits_for_the_nodes_to_acknowledge_the_new_intermediate() {
    use sqlx::Row;
    let mut ca = TestCa::start();
    let admin = ca.admin();
    let as_admin = ca.api(Some(&admin));
    let n1 = TestNode::start(&mut ca, "n1").await;
    let mut n2 = TestNode::start(&mut ca, "n2").await;
    eventually(
        "both nodes to acknowledge the feed",
        Duration::from_secs(20),
        || async {
            let mut c = ca.db_conn().await;
            let rows = sqlx::query("SELECT node_id FROM feed_acks ORDER BY node_id")
                .fetch_all(&mut c)
                .await
                .unwrap();
            let ids: Vec<String> = rows.iter().map(|r| r.get(0)).collect();
            (ids == ["n1", "n2"]).then_some(())
        },
    )
    .await;
    n2.kill();
    as_admin.post("/api/v1/intermediates", &json!({})).await.unwrap();
    as_admin
        .post("/api/v1/intermediates/2/publish", &json!({}))
        .await
        .unwrap();
    // n1 acknowledges within a moment; n2 never does: the refusal names it alone.
    let refusal = eventually("the refusal to name only n2", Duration::from_secs(20), || async {
        let e = as_admin
            .post("/api/v1/intermediates/2/activate", &json!({}))
            .await
            .unwrap_err();
        assert_eq!(slug(&e), "rotation-refused", "{e}");
        let text = e.to_string();
        (text.contains("1 node(s)") && text.contains("n2 (at")).then_some(text)
    })
    .await;
    assert!(refusal.contains("force"), "the refusal says what to do: {refusal}");
    let list: Value = as_admin.get("/api/v1/intermediates", &[]).await.unwrap();
    assert_eq!(states(&list), [(1, "active".to_string()), (2, "published".to_string())]);
    let a = admin.to_str().unwrap();
    let cert = format!("{a}/cert.pem");
    let key = format!("{a}/key.pem");
    let out = ca.bsn(&["intermediates", "activate", "2", "--cert", &cert, "--key", &key]);
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("n2"));
    let out = ca.bsn(&[
        "intermediates",
        "activate",
        "2",
        "--force",
        "--cert",
        &cert,
        "--key",
        &key,
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let list: Value = as_admin.get("/api/v1/intermediates", &[]).await.unwrap();
    assert_eq!(states(&list), [(1, "retiring".to_string()), (2, "active".to_string())]);
    // A node's acknowledgement cannot run ahead of the feed, and only nodes acknowledge.
    let n3 = ca.enrolled("n3", json!({ "type": "node" })).await;
    let e = ca
        .api(Some(&n3))
        .post("/api/v1/feed/ack", &json!({ "cursor": 1_000_000 }))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "invalid-cursor", "{e}");
    drop(n1);
    let e = ca
        .api(Some(&admin))
        .post("/api/v1/feed/ack", &json!({ "cursor": 1 }))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "forbidden", "{e}");
}

/// The certificates of a PEM file, DER, in order.
fn all_der(pem: &[u8]) -> Vec<Vec<u8>> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateDer::pem_slice_iter(pem)
        .map(|c| c.unwrap().to_vec())
        .collect()
}

/// `openssl verify` of `leaf` (its chain after it in the same file) against `roots` alone.
fn openssl_verifies(dir: &Path, name: &str, roots: &[&str], chain_pem: &[u8]) -> Result<(), String> {
    let certs = all_der(chain_pem);
    let ca_file = dir.join(format!("{name}-roots.pem"));
    std::fs::write(&ca_file, roots.concat()).unwrap();
    let leaf = dir.join(format!("{name}-leaf.pem"));
    std::fs::write(&leaf, ca_server::pki::pem("CERTIFICATE", &certs[0])).unwrap();
    let untrusted = dir.join(format!("{name}-untrusted.pem"));
    let rest: String = certs[1..]
        .iter()
        .map(|c| ca_server::pki::pem("CERTIFICATE", c))
        .collect();
    std::fs::write(&untrusted, rest).unwrap();
    let out = std::process::Command::new("openssl")
        .args(["verify", "-purpose", "sslclient", "-CAfile"])
        .arg(&ca_file)
        .arg("-untrusted")
        .arg(&untrusted)
        .arg(&leaf)
        .output()
        .unwrap();
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Rotating the root without an outage: the next root is published beside the current one with
/// a cross-certificate, activated, and certifies the next intermediate, while clients renew and
/// enroll and a node admits writers; a node and a relying party that pinned only the old root
/// admit a leaf of the new hierarchy at once (through the cross-certificate the chain carries),
/// one that pinned only the new root does too; the old root cannot be withdrawn while its
/// intermediate lives; a cross-certificate for another key is refused and changes nothing; the
/// audit checks the root's steps.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_rotates_under_load_and_leaves_of_both_roots_work_everywhere() {
    let Setup {
        mut ca,
        admin,
        node,
        members,
    } = Setup::start().await;
    let as_admin = ca.api(Some(&admin));
    let (alice, bob, carol) = (&members[0], &members[1], &members[2]);
    let anon = ca.api(None);
    let list: Value = anon.get("/api/v1/roots", &[]).await.unwrap();
    assert_eq!(states(&list), [(1, "active".to_string())]);
    let root1 = list["items"][0]["certificate"].as_str().unwrap().to_string();

    // Bad input first: a "new root" whose cross-certificate certifies another key is refused,
    // and nothing changes.
    let stranger = rcgen::KeyPair::generate().unwrap();
    let mut p = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    p.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    let stranger_root = p.self_signed(&stranger).unwrap();
    let crl = rcgen::CertificateRevocationListParams {
        this_update: time::OffsetDateTime::now_utc(),
        next_update: time::OffsetDateTime::now_utc() + time::Duration::days(30),
        crl_number: rcgen::SerialNumber::from(1u64),
        issuing_distribution_point: None,
        revoked_certs: vec![],
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    }
    .signed_by(&rcgen::Issuer::from_params(&p, &stranger))
    .unwrap();
    let intermediate1 = anon.get_bytes("/api/v1/ca-chain").await.unwrap();
    let e = as_admin
        .post(
            "/api/v1/roots",
            &json!({
                "certificate": stranger_root.pem(),
                "cross": String::from_utf8(intermediate1).unwrap(),
                "crl": crl.pem().unwrap(),
            }),
        )
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "rotation-refused", "{e}");
    assert!(e.to_string().contains("another key"), "{e}");
    let e = as_admin
        .post("/api/v1/roots", &json!({ "certificate": stranger_root.pem() }))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "invalid-field", "{e}");
    let e = ca.api(Some(alice)).post("/api/v1/roots", &json!({})).await.unwrap_err();
    assert_eq!(slug(&e), "forbidden", "only administrators rotate");
    let list: Value = anon.get("/api/v1/roots", &[]).await.unwrap();
    assert_eq!(states(&list), [(1, "active".to_string())], "nothing changed");

    let mut secrets = Vec::new();
    for i in 0..400 {
        let id = format!("e{i}");
        secrets.push((id.clone(), ca.register(&id, json!({})).await));
    }
    let load = Load::start(ca.api(Some(carol)), anon.clone(), secrets, node.api(&ca, alice), alice);
    load.progress(20).await;

    // Step 1: root 2 published beside root 1: in both bundles, its CRL in the combined file.
    let added: Value = as_admin.post("/api/v1/roots", &json!({})).await.unwrap();
    assert_eq!(
        (added["number"].as_i64(), added["state"].as_str()),
        (Some(2), Some("published"))
    );
    let root2 = added["certificate"].as_str().unwrap().to_string();
    assert!(added["cross"].as_str().is_some_and(|c| c.contains("BEGIN CERTIFICATE")));
    let e = as_admin.post("/api/v1/roots", &json!({})).await.unwrap_err();
    assert_eq!(slug(&e), "rotation-refused", "one root rotation at a time: {e}");
    let e = as_admin.post("/api/v1/roots/1/withdraw", &json!({})).await.unwrap_err();
    assert_eq!(slug(&e), "rotation-refused", "{e}");
    let e = as_admin.post("/api/v1/roots/9/activate", &json!({})).await.unwrap_err();
    assert_eq!(slug(&e), "not-found", "{e}");
    let bundle = String::from_utf8(anon.get_bytes("/api/v1/trust-bundle").await.unwrap()).unwrap();
    assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2, "{bundle}");
    let spiffe: Value = anon.get("/api/v1/spiffe-bundle", &[]).await.unwrap();
    assert_eq!(spiffe["keys"].as_array().unwrap().len(), 2);
    let crls = String::from_utf8(anon.get_bytes("/api/v1/crls.pem").await.unwrap()).unwrap();
    assert_eq!(
        crls.matches("BEGIN X509 CRL").count(),
        3,
        "roots 1 and 2, intermediate 1"
    );
    assert!(anon.get_bytes("/api/v1/crl/root/2").await.is_ok());
    load.progress(20).await;

    // Step 2: root 2 certifies from now on; root 1 stays trusted.
    let active: Value = as_admin.post("/api/v1/roots/2/activate", &json!({})).await.unwrap();
    assert_eq!(active["state"], "active");
    let list: Value = anon.get("/api/v1/roots", &[]).await.unwrap();
    assert_eq!(states(&list), [(1, "retiring".to_string()), (2, "active".to_string())]);

    // The next intermediate comes from root 2, then issuance switches to it under the load.
    as_admin.post("/api/v1/intermediates", &json!({})).await.unwrap();
    as_admin
        .post("/api/v1/intermediates/2/publish", &json!({}))
        .await
        .unwrap();
    eventually(
        "the node to acknowledge intermediate 2",
        Duration::from_secs(20),
        || async { as_admin.post("/api/v1/intermediates/2/activate", &json!({})).await.ok() },
    )
    .await;
    load.progress(40).await;
    load.stop_without_failures("root rotation").await;

    // A leaf of the new hierarchy: its chain carries the cross-certificate after the
    // intermediate; the CA and the node (which pinned only root 1) admit it at once.
    let out = ca.bsn_renew(bob);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let chain = std::fs::read(bob.join("cert.pem")).unwrap();
    assert_eq!(issuer_cn(&chain), "test.example Issuing CA 2");
    let certs = all_der(&chain);
    assert_eq!(certs.len(), 3, "leaf, intermediate 2, the cross-certificate of root 2");
    let (_, inter) = x509_parser::parse_x509_certificate(&certs[1]).unwrap();
    assert!(inter.issuer().to_string().contains("Root CA 2"), "{}", inter.issuer());
    assert!(format!("{:?}", inter.extensions()).contains("/api/v1/crl/root/2"));
    write(&ca, &node, bob, "from-the-new-root")
        .await
        .expect("a leaf of the new root writes at once on a node that pinned the old root");
    // Sent alone, it is verified with the intermediate and the cross-certificate the node learned
    // from the feed.
    leaf_alone_is_admitted(&ca, &node, bob)
        .await
        .expect("a leaf of the new root, sent alone, is admitted");
    ca.api(Some(bob))
        .post("/api/v1/renew", &json!({ "csr": new_csr() }))
        .await
        .expect("the CA takes it over mTLS");
    write(&ca, &node, alice, "from-the-old-root")
        .await
        .expect("a leaf of the old root keeps working");

    // Relying parties: one that pinned only root 1 and one that pinned only root 2 both verify
    // the new leaf; the old leaf verifies under root 1.
    let tmp = ca.dir.path();
    openssl_verifies(tmp, "old-root", &[&root1], &chain).expect("root 1 alone, through the cross-certificate");
    openssl_verifies(tmp, "new-root", &[&root2], &chain).expect("root 2 alone");
    openssl_verifies(
        tmp,
        "old-leaf",
        &[&root1],
        &std::fs::read(alice.join("cert.pem")).unwrap(),
    )
    .expect("the old leaf under root 1");

    // Root 1 cannot be withdrawn while intermediate 1 (retiring) has valid certificates.
    let e = as_admin.post("/api/v1/roots/1/withdraw", &json!({})).await.unwrap_err();
    assert_eq!(slug(&e), "rotation-refused");
    assert!(e.to_string().contains("1 (retiring)"), "{e}");

    // The auditor, who pinned root 1, follows root 2 through its cross-certificate and checks
    // the steps in order.
    let out = bsn_tests::audit(&ca);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("2 intermediate steps, 2 root steps"), "{stdout}");
    let out = ca.bsn(&["roots", "list"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("retiring") && text.contains("/api/v1/crl/root/2"),
        "{text}"
    );

    // A restarted CA keeps both roots and issues under root 2.
    ca.restart();
    let bundle = String::from_utf8(ca.api(None).get_bytes("/api/v1/trust-bundle").await.unwrap()).unwrap();
    assert_eq!(bundle.matches("BEGIN CERTIFICATE").count(), 2);
    let out = ca.bsn_renew(alice);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(all_der(&std::fs::read(alice.join("cert.pem")).unwrap()).len(), 3);

    // Step 3: once intermediate 1 has retired (its certificates' ends are moved to the past in
    // the database: nobody waits years in a test), root 1 is withdrawn: out of the bundles and
    // the combined CRL file, its key deleted from the data directory.
    // The administrator renews first, as it would have long before its certificate from
    // intermediate 1 really ended.
    let out = ca.bsn_renew(&admin);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let as_admin = ca.api(Some(&admin));
    {
        let mut c = ca.db_conn().await;
        sqlx::query("UPDATE certificates SET not_after = 0 WHERE issuer = 1")
            .execute(&mut c)
            .await
            .unwrap();
    }
    as_admin
        .post("/api/v1/intermediates/1/retire", &json!({}))
        .await
        .unwrap();
    assert!(ca.data_dir().join("root.key.sealed").exists());
    let withdrawn: Value = as_admin.post("/api/v1/roots/1/withdraw", &json!({})).await.unwrap();
    assert_eq!(withdrawn["state"], "withdrawn");
    let e = as_admin.post("/api/v1/roots/1/withdraw", &json!({})).await.unwrap_err();
    assert_eq!(slug(&e), "rotation-refused", "{e}");
    assert!(!ca.data_dir().join("root.key.sealed").exists(), "root 1's key is gone");
    let anon = ca.api(None);
    let bundle = String::from_utf8(anon.get_bytes("/api/v1/trust-bundle").await.unwrap()).unwrap();
    assert_eq!(bundle.trim(), root2.trim(), "only root 2 is in the bundle");
    let crls = String::from_utf8(anon.get_bytes("/api/v1/crls.pem").await.unwrap()).unwrap();
    assert_eq!(crls.matches("BEGIN X509 CRL").count(), 2, "root 2 and intermediate 2");
    assert!(anon.get_bytes("/api/v1/crl/root/1").await.is_err());
    // Leaves of root 2 keep working where root 1 is still pinned (the node's bundle, the CA's
    // own verifier since its start): their chains still carry the cross-certificate.
    let out = ca.bsn_renew(alice);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    write(&ca, &node, alice, "after-the-withdrawal")
        .await
        .expect("a node that pinned root 1 admits a leaf of root 2 after the withdrawal");
    ca.restart();
    let out = ca.bsn_renew(alice);
    assert!(
        out.status.success(),
        "a CA restarted with root 2 alone: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!ca.data_dir().join("root.key.sealed").exists());
    let out = bsn_tests::audit(&ca);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("3 intermediate steps, 3 root steps"), "{stdout}");
}

/// A later root whose key the CA holds has its CRL re-signed once half its lifetime has passed
/// (here 2 minutes, the shortest allowed), so relying parties that check every CRL in the chain
/// never find it expired.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_later_roots_crl_is_re_signed_at_half_its_life() {
    let mut ca = TestCa::start_custom(&[], &[("BSN_CA_ROOT_CRL_VALIDITY", "2m")]);
    let admin = ca.admin();
    let as_admin = ca.api(Some(&admin));
    let added: Value = as_admin.post("/api/v1/roots", &json!({})).await.unwrap();
    let root2 = first_der(added["certificate"].as_str().unwrap().as_bytes());
    let anon = ca.api(None);
    let first = anon.get_bytes("/api/v1/crl/root/2").await.unwrap();
    let times = |der: &[u8]| {
        let (_, crl) = x509_parser::parse_x509_crl(der).unwrap();
        (crl.last_update().timestamp(), crl.next_update().unwrap().timestamp())
    };
    let (this, next) = times(&first);
    assert_eq!(next - this, 120, "the configured lifetime");
    let fresh = eventually("root 2's CRL to be re-signed", Duration::from_secs(150), || async {
        let crl = anon.get_bytes("/api/v1/crl/root/2").await.unwrap();
        (crl != first).then_some(crl)
    })
    .await;
    let (this2, next2) = times(&fresh);
    assert!(
        this2 >= this + 60 && next2 > next,
        "{this}..{next} then {this2}..{next2}"
    );
    let (_, root) = x509_parser::parse_x509_certificate(&root2).unwrap();
    let (_, crl) = x509_parser::parse_x509_crl(&fresh).unwrap();
    assert!(crl.verify_signature(root.public_key()).is_ok(), "signed by root 2");
}
