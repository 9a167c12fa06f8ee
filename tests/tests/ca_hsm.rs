//! Every CA key in a PKCS#11 token (SoftHSM2, Debian `softhsm2`; `pkcs11-tool` from `opensc`
//! inspects the token): the root's, the issuing CA's, the log's and the membership key. init
//! generates them inside the token; enrollment, renewal, revocation, the root's CRL, checkpoints
//! and membership statements are signed with them; the next intermediate and the next log key
//! are made inside it too (rotation and handover); no copy exists outside, and a wrong PIN, a missing token or a
//! key of the wrong type stop the CA with a clear error before it signs anything.
//!
//! Ignored by the README's test command (a fresh machine has no SoftHSM2); `.ci/run` installs
//! the packages and runs `cargo test --release -p bsn-tests --test ca_hsm -- --ignored`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use bsn_tests::{TestCa, bin, new_csr};
use serde_json::json;

use bsn_tests::softhsm::{MODULE, PIN, SoftHsm};

/// `ca-server serve` on `data` with `env`: its exit status and output, when it stops by itself
/// within 30 s (it should: every case here is refused at start-up).
fn serve_refused(data: &Path, env: &[(&str, &str)]) -> String {
    let mut c = Command::new(bin("ca-server"));
    c.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(data)
        .env("BSN_CA_PASSPHRASE", bsn_tests::PASSPHRASE)
        .envs(env.iter().copied());
    // (The database URL, if not SQLite in the directory, is in ca.toml.)
    let mut child = c
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            panic!("ca-server served where it had to refuse");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    let o = child.wait_with_output().unwrap();
    assert!(!o.status.success());
    String::from_utf8_lossy(&o.stderr).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs softhsm2 and opensc: run by .ci/run"]
async fn every_ca_key_lives_in_the_token_and_the_ca_fails_closed_without_it() {
    let hsm = SoftHsm::new(&["bsn-ca", "other"]);
    let conf = hsm.conf.to_str().unwrap().to_string();
    let env = [("SOFTHSM2_CONF", conf.as_str()), ("BSN_PKCS11_PIN", PIN)];
    let mut ca = TestCa::start_custom(&["--pkcs11-module", MODULE, "--pkcs11-token", "bsn-ca"], &env);
    let data = ca.data_dir();

    // Enrollment, renewal and revocation, all signed in the token.
    let admin = ca.admin();
    let alice = ca.participant("alice").await;
    let renewed = ca
        .api(Some(&alice))
        .post("/api/v1/renew", &json!({ "csr": new_csr() }))
        .await
        .unwrap();
    let serial = renewed["serial"].as_str().unwrap();
    let revoked = ca
        .api(Some(&admin))
        .post(
            &format!("/api/v1/certificates/{serial}/revoke"),
            &json!({ "reason": "superseded" }),
        )
        .await
        .unwrap();
    assert!(revoked["crl_number"].as_i64().unwrap() >= 2, "{revoked}");
    // Rotation stays inside the token: the next intermediate's key is generated there and
    // certified by the root key there; the log key is handed over to one made there.
    let as_admin = ca.api(Some(&admin));
    let next = as_admin.post("/api/v1/intermediates", &json!({})).await.unwrap();
    assert_eq!(next["state"], "next", "{next}");
    for step in ["publish", "activate"] {
        as_admin
            .post(&format!("/api/v1/intermediates/2/{step}"), &json!({}))
            .await
            .unwrap();
    }
    let old_vkey = std::fs::read_to_string(data.join("log.vkey")).unwrap();
    let begun = as_admin.post("/api/v1/keys/log", &json!({})).await.unwrap();
    let new_vkey = begun["vkey"].as_str().unwrap().to_string();
    let dora = ca.participant("dora").await;
    as_admin.post("/api/v1/keys/log/2/finish", &json!({})).await.unwrap();
    let note = String::from_utf8(ca.api(None).get_bytes("/log/checkpoint").await.unwrap()).unwrap();
    assert!(ca_server::log::open_with(&new_vkey, &note).is_ok(), "{note}");
    assert!(ca_server::log::open_with(old_vkey.trim(), &note).is_err(), "{note}");
    let issuer = {
        use rustls_pki_types::pem::PemObject;
        let der = rustls_pki_types::CertificateDer::from_pem_file(dora.join("cert.pem")).unwrap();
        let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
        c.issuer().to_string()
    };
    assert!(
        issuer.contains("Issuing CA 2"),
        "dora's leaf comes from intermediate 2: {issuer}"
    );
    // The leaves chain to the root through the intermediates whose keys are in the token.
    let work = ca.dir.path().to_path_buf();
    let work = work.as_path();
    let listing = ca.api(None).get("/api/v1/intermediates", &[]).await.unwrap();
    let chain: String = listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["certificate"].as_str().unwrap())
        .collect();
    std::fs::write(work.join("chain.pem"), chain).unwrap();
    for leaf in ["alice/cert.pem", "dora/cert.pem"] {
        let o = bsn_tests::run(
            "openssl",
            &[
                "verify",
                "-CAfile",
                ca.bundle.to_str().unwrap(),
                "-untrusted",
                "chain.pem",
                leaf,
            ],
            work,
        );
        assert!(o.status.success(), "{leaf}: {}", String::from_utf8_lossy(&o.stderr));
    }
    // A subchain: its membership statement is signed by the membership key in the token, and
    // verifies with the published key; the log (checkpoints signed in the token) verifies.
    ca.enrolled("n1", json!({ "type": "node" })).await;
    let created = ca
        .api(Some(&admin))
        .post(
            "/api/v1/subchains",
            &json!({ "id": "demo", "name": "Demo", "nodes": ["n1"] }),
        )
        .await
        .unwrap();
    let k = ca.api(None).get("/api/v1/membership-key", &[]).await.unwrap();
    let key = identity::membership::MembershipKey::from_base64(k["key"].as_str().unwrap()).unwrap();
    let st = key
        .verify_statement(&serde_json::from_value(created["statement"].clone()).unwrap())
        .unwrap();
    assert_eq!(st.revision, 1);
    // The membership key handed over: the successor is made in the token and signs from then on.
    as_admin.post("/api/v1/keys/membership", &json!({})).await.unwrap();
    let done = as_admin
        .post("/api/v1/keys/membership/2/finish", &json!({}))
        .await
        .unwrap();
    let next = identity::membership::MembershipKey::from_base64(done["public_key"].as_str().unwrap()).unwrap();
    let handover: identity::membership::KeyHandover = serde_json::from_value(done["handover"].clone()).unwrap();
    assert_eq!(
        handover.verify().unwrap().1,
        key,
        "the token's old key signed the handover"
    );
    ca.enrolled("n2", json!({ "type": "node" })).await;
    let revised = as_admin
        .patch("/api/v1/subchains/demo", &json!({ "nodes": ["n1", "n2"] }))
        .await
        .unwrap();
    let signed: identity::membership::Envelope =
        serde_json::from_value(revised["revision"]["statement"].clone()).unwrap();
    assert!(
        next.verify_statement(&signed).is_ok() && key.verify_statement(&signed).is_err(),
        "{revised}"
    );
    let audit = bsn_tests::audit(&ca);
    assert!(audit.status.success(), "{}", String::from_utf8_lossy(&audit.stderr));
    let ready = ca.api(None).get_bytes("/readyz").await.unwrap();
    assert_eq!(String::from_utf8_lossy(&ready), "ready\n");

    // The key is in the token, sensitive and never extractable; nothing outside holds it.
    let objects = hsm.pkcs11_tool("bsn-ca", &["--list-objects", "--type", "privkey"]);
    assert!(
        objects.contains("label:      test.example issuing CA 1")
            && objects.contains("Access:     sensitive, always sensitive, never extractable, local"),
        "the token says the key was made inside it and can never leave it: {objects}"
    );
    for label in ["test.example root CA", "test.example log", "test.example membership"] {
        assert!(
            objects.contains(&format!("label:      {label}\n")),
            "{label} is in the token: {objects}"
        );
    }
    for label in [
        "test.example issuing CA 2 ",
        "test.example log 2 ",
        "test.example membership 2 ",
    ] {
        assert!(
            objects.contains(&format!("label:      {label}")),
            "the rotated {label}key is in the token: {objects}"
        );
    }
    assert_eq!(
        objects
            .matches("Access:     sensitive, always sensitive, never extractable, local")
            .count(),
        7,
        "{objects}"
    );
    assert!(!data.join("intermediate.key.sealed").exists());
    assert!(!data.join("root.key.sealed").exists());
    assert!(!data.join("log.key.sealed").exists());
    let toml = std::fs::read_to_string(data.join("ca.toml")).unwrap();
    assert!(
        toml.contains("[pkcs11]") && toml.contains("issuing_key = \"test.example issuing CA 1\""),
        "{toml}"
    );
    // The root's CRL, signed again by the root key in the token, verifies with the root.
    let before = ca.api(None).get_bytes("/api/v1/crl/root").await.unwrap();
    let o = Command::new(bin("ca-server"))
        .args(["root", "crl", "--data-dir"])
        .arg(&data)
        .envs(env)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let after = ca.api(None).get_bytes("/api/v1/crl/root").await.unwrap();
    assert_ne!(before, after);
    std::fs::write(work.join("root.crl"), &after).unwrap();
    let o = bsn_tests::run(
        "openssl",
        &[
            "crl",
            "-inform",
            "DER",
            "-in",
            "root.crl",
            "-CAfile",
            ca.bundle.to_str().unwrap(),
            "-noout",
        ],
        work,
    );
    assert!(String::from_utf8_lossy(&o.stderr).contains("verify OK"), "{o:?}");
    // No private key of the CA in any file of the data directory or the SQLite database (and
    // its journal): nothing sealed at all, and no PEM private key but the server's own TLS key.
    for e in std::fs::read_dir(&data).unwrap() {
        let path = e.unwrap().path();
        let bytes = std::fs::read(&path).unwrap();
        let text = String::from_utf8_lossy(&bytes);
        assert!(
            !text.contains("chacha20-poly1305"),
            "{} holds a sealed key",
            path.display()
        );
        if path.file_name().unwrap() != "tls.key" {
            assert!(!text.contains("PRIVATE KEY"), "{} holds a private key", path.display());
        }
    }

    // A wrong PIN: refused before anything is signed, saying so.
    ca.kill_all();
    let err = serve_refused(
        &data,
        &[("SOFTHSM2_CONF", conf.as_str()), ("BSN_PKCS11_PIN", "0000-wrong")],
    );
    assert!(err.contains("refused the PIN"), "{err}");
    // No PIN at all.
    let err = serve_refused(&data, &[("SOFTHSM2_CONF", conf.as_str())]);
    assert!(err.contains("BSN_PKCS11_PIN"), "{err}");
    // The token is missing: an empty token directory.
    let empty = SoftHsm::new(&[]);
    let err = serve_refused(
        &data,
        &[("SOFTHSM2_CONF", empty.conf.to_str().unwrap()), ("BSN_PKCS11_PIN", PIN)],
    );
    assert!(err.contains("no PKCS#11 token labelled 'bsn-ca'"), "{err}");
    // A key of the wrong type under the label in another token.
    let made = hsm.pkcs11_tool(
        "other",
        &[
            "--keypairgen",
            "--key-type",
            "rsa:2048",
            "--label",
            "test.example issuing CA 1",
        ],
    );
    assert!(made.contains("Key pair generated"), "{made}");
    std::fs::write(
        data.join("ca.toml"),
        toml.replace("token = \"bsn-ca\"", "token = \"other\""),
    )
    .unwrap();
    let err = serve_refused(&data, &env);
    assert!(err.contains("not an ECDSA P-256 signing key"), "{err}");
    // An EC P-256 key that is not the intermediate's.
    let made = hsm.pkcs11_tool(
        "other",
        &["--keypairgen", "--key-type", "EC:prime256v1", "--label", "stranger"],
    );
    assert!(made.contains("Key pair generated"), "{made}");
    std::fs::write(
        data.join("ca.toml"),
        toml.replace("token = \"bsn-ca\"", "token = \"other\"").replace(
            "issuing_key = \"test.example issuing CA 1\"",
            "issuing_key = \"stranger\"",
        ),
    )
    .unwrap();
    let err = serve_refused(&data, &env);
    assert!(err.contains("is not the key of"), "{err}");

    // Back to the right token: serving resumes with the same keys, the rotated ones found in
    // the token by their labels.
    std::fs::write(data.join("ca.toml"), &toml).unwrap();
    ca.restart();
    let bob = ca.participant("bob").await;
    assert!(bob.join("cert.pem").exists());
    let leaf = {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::from_pem_file(bob.join("cert.pem")).unwrap()
    };
    let (_, c) = x509_parser::parse_x509_certificate(&leaf).unwrap();
    assert!(c.issuer().to_string().contains("Issuing CA 2"), "{}", c.issuer());
    let note = String::from_utf8(ca.api(None).get_bytes("/log/checkpoint").await.unwrap()).unwrap();
    assert!(ca_server::log::open_with(&new_vkey, &note).is_ok(), "{note}");

    // The root rotates inside the token too: root 2's key is generated there and certified by
    // root 1's key there; intermediate 3 below is certified by root 2.
    let as_admin = ca.api(Some(&admin));
    let added = as_admin.post("/api/v1/roots", &json!({})).await.unwrap();
    assert_eq!(added["state"], "published", "{added}");
    as_admin.post("/api/v1/roots/2/activate", &json!({})).await.unwrap();
    let objects = hsm.pkcs11_tool("bsn-ca", &["--list-objects", "--type", "privkey"]);
    assert!(
        objects.contains("label:      test.example root CA 2 "),
        "root 2's key is in the token: {objects}"
    );

    // Intermediate 2 is replaced by 3 and, once its certificates are over (their expiry is moved
    // to the past in the database: nobody waits a year in a test), retired: its key is destroyed
    // in the token, and 3's is there.
    let as_admin = ca.api(Some(&admin));
    as_admin.post("/api/v1/intermediates", &json!({})).await.unwrap();
    for step in ["publish", "activate"] {
        as_admin
            .post(&format!("/api/v1/intermediates/3/{step}"), &json!({}))
            .await
            .unwrap();
    }
    {
        let mut c = ca.db_conn().await;
        sqlx::query("UPDATE certificates SET not_after = 0 WHERE issuer = 2")
            .execute(&mut c)
            .await
            .unwrap();
    }
    let retired = as_admin
        .post("/api/v1/intermediates/2/retire", &json!({}))
        .await
        .unwrap();
    assert_eq!(retired["state"], "retired");
    let listing = ca.api(None).get("/api/v1/intermediates", &[]).await.unwrap();
    let third = listing["items"]
        .as_array()
        .unwrap()
        .iter()
        .find(|i| i["number"] == 3)
        .unwrap();
    let third = {
        use rustls_pki_types::pem::PemObject;
        rustls_pki_types::CertificateDer::from_pem_slice(third["certificate"].as_str().unwrap().as_bytes()).unwrap()
    };
    let (_, c) = x509_parser::parse_x509_certificate(&third).unwrap();
    assert!(c.issuer().to_string().contains("Root CA 2"), "{}", c.issuer());
    let audit = bsn_tests::audit(&ca);
    assert!(audit.status.success(), "{}", String::from_utf8_lossy(&audit.stderr));
    let objects = hsm.pkcs11_tool("bsn-ca", &["--list-objects", "--type", "privkey"]);
    assert!(
        !objects.contains("label:      test.example issuing CA 2 ")
            && objects.contains("label:      test.example issuing CA 3 "),
        "the retired key is gone from the token, its successor is there: {objects}"
    );

    // init refuses a token whose label is taken, and changes nothing in it.
    let dir = tempfile::tempdir().unwrap();
    let o = Command::new(bin("ca-server"))
        .args([
            "init",
            "--trust-domain",
            "test.example",
            "--pkcs11-module",
            MODULE,
            "--pkcs11-token",
            "bsn-ca",
            "--data-dir",
        ])
        .arg(dir.path().join("ca2"))
        .env("BSN_CA_PASSPHRASE", bsn_tests::PASSPHRASE)
        .envs(env)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(
        !o.status.success() && err.contains("already holds a key labelled"),
        "{err}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs softhsm2 and opensc: run by .ci/run"]
async fn an_offline_root_with_the_ca_keys_in_the_token() {
    let hsm = SoftHsm::new(&["bsn-ca"]);
    let conf = hsm.conf.to_str().unwrap().to_string();
    let env = [("SOFTHSM2_CONF", conf.as_str()), ("BSN_PKCS11_PIN", PIN)];
    let dir = tempfile::tempdir().unwrap();
    let (root, data) = (dir.path().join("root"), dir.path().join("ca"));
    let db = bsn_tests::TestDb::new();
    let run = |args: &[&str]| {
        let o = Command::new(bin("ca-server"))
            .args(args)
            .env("BSN_CA_PASSPHRASE", bsn_tests::PASSPHRASE)
            .envs(env)
            .output()
            .unwrap();
        assert!(o.status.success(), "{args:?}: {}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).into_owned()
    };
    let s = |p: &Path| p.to_str().unwrap().to_string();
    run(&[
        "root",
        "init",
        "--root-dir",
        &s(&root),
        "--trust-domain",
        "test.example",
    ]);
    let mut init = vec![
        "init".to_string(),
        "--data-dir".into(),
        s(&data),
        "--trust-domain".into(),
        "test.example".into(),
    ];
    init.extend(["--pkcs11-module", MODULE, "--pkcs11-token", "bsn-ca"].map(String::from));
    if let Some(u) = &db.url {
        init.extend(["--database-url".to_string(), u.clone()]);
    }
    let args = |extra: &[String]| -> Vec<String> { init.iter().chain(extra).cloned().collect() };
    let first = args(&["--offline-root".into()]);
    run(&first.iter().map(String::as_str).collect::<Vec<_>>());
    // Asked again, the same key in the token: no second one is made.
    run(&first.iter().map(String::as_str).collect::<Vec<_>>());
    let inter = s(&dir.path().join("intermediate.pem"));
    run(&[
        "root",
        "sign-intermediate",
        "--root-dir",
        &s(&root),
        "--csr",
        &s(&data.join("intermediate.csr.pem")),
        "--out",
        &inter,
    ]);
    let finish = args(&[
        "--root-cert".into(),
        s(&root.join("root.pem")),
        "--intermediate-cert".into(),
        inter,
        "--root-crl".into(),
        s(&root.join("root-crl.der")),
    ]);
    let out = run(&finish.iter().map(String::as_str).collect::<Vec<_>>());

    let objects = hsm.pkcs11_tool("bsn-ca", &["--list-objects", "--type", "privkey"]);
    for label in [
        "test.example issuing CA 1",
        "test.example log",
        "test.example membership",
    ] {
        assert_eq!(
            objects.matches(&format!("label:      {label}\n")).count(),
            1,
            "{label}: {objects}"
        );
    }
    assert!(!objects.contains("root CA"), "no root key in the token: {objects}");
    assert!(!data.join("root.key.sealed").exists() && !data.join("intermediate.key.sealed").exists());
    let toml = std::fs::read_to_string(data.join("ca.toml")).unwrap();
    assert!(toml.contains("[pkcs11]") && !toml.contains("root_key"), "{toml}");

    let mut ca = TestCa::serve_initialised(dir, db, &out, &env);
    let alice = ca.participant("alice").await;
    let o = bsn_tests::run(
        "openssl",
        &[
            "verify",
            "-CAfile",
            &s(&root.join("root.pem")),
            "-untrusted",
            &s(&data.join("intermediate.pem")),
            "alice/cert.pem",
        ],
        ca.dir.path(),
    );
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(alice.join("cert.pem").exists());
}
