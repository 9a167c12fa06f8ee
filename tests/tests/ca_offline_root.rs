//! An offline root (issue 16, item 2): `ca-server root init|sign-intermediate|crl --root-dir`
//! run with no server, the CA started from the intermediate the root signed for its own key
//! (`init --offline-root`, then `init --root-cert --intermediate-cert --root-crl`), keeping no
//! root key, its root CRL signed offline and installed; and the bad input of each step refused
//! with nothing changed.

use std::path::Path;
use std::process::{Command, Output};

use bsn_tests::{PASSPHRASE, TestCa, TestDb, bin, run};

fn ca_server(args: &[&str]) -> Output {
    Command::new(bin("ca-server"))
        .args(args)
        .env("BSN_CA_PASSPHRASE", PASSPHRASE)
        .env("BSN_LOG", "warn")
        .output()
        .unwrap()
}

fn ok(o: Output) -> String {
    assert!(
        o.status.success(),
        "expected success: {}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

/// The command failed, saying `why`.
fn refused(o: Output, why: &str) {
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success(), "expected a refusal ({why})");
    assert!(err.contains(why), "expected '{why}' in: {err}");
}

fn p(path: &Path) -> &str {
    path.to_str().unwrap()
}

/// `init` for the data directory `data` with `db`, plus `args`.
fn init(data: &Path, db: &TestDb, args: &[&str]) -> Output {
    let mut a = vec!["init", "--data-dir", p(data), "--trust-domain", "test.example"];
    if let Some(u) = &db.url {
        a.extend(["--database-url", u.as_str()]);
    }
    a.extend(args);
    ca_server(&a)
}

fn subject_cn(pem_file: &Path) -> String {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_file(pem_file).unwrap();
    let (_, c) = x509_parser::parse_x509_certificate(&der).unwrap();
    c.subject()
        .iter_common_name()
        .next()
        .unwrap()
        .as_str()
        .unwrap()
        .to_string()
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<std::path::PathBuf> {
    let mut out = vec![];
    for e in std::fs::read_dir(dir).unwrap() {
        let path = e.unwrap().path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_ca_started_from_an_offline_root_keeps_no_root_key() {
    let dir = tempfile::tempdir().unwrap();
    let (root, other_root, foreign_root) = (
        dir.path().join("root"),
        dir.path().join("other"),
        dir.path().join("foreign"),
    );
    let data = dir.path().join("ca");
    let db = TestDb::new();
    let rt = |d: &Path, td: &str| {
        ca_server(&[
            "root",
            "init",
            "--root-dir",
            p(d),
            "--trust-domain",
            td,
            "--public-url",
            "https://ca.test.example",
        ])
    };

    // The root, made with no server; a second init on it is refused.
    let text = ok(rt(&root, "test.example"));
    assert!(text.contains("root for test.example made"), "{text}");
    refused(rt(&root, "test.example"), "already holds a root");
    ok(rt(&other_root, "test.example"));
    ok(rt(&foreign_root, "other.example"));
    let first_root_crl = std::fs::read(root.join("root-crl.der")).unwrap();

    // The CA's issuing key and its CSR; asked again, the same key (the CSR may be signed already).
    let text = ok(init(&data, &db, &["--offline-root"]));
    let csr = data.join("intermediate.csr.pem");
    assert!(text.contains("ca-server root sign-intermediate"), "{text}");
    assert!(csr.exists() && !data.join("ca.toml").exists());
    let sealed = std::fs::read(data.join("intermediate.key.sealed")).unwrap();
    ok(init(&data, &db, &["--offline-root"]));
    assert_eq!(std::fs::read(data.join("intermediate.key.sealed")).unwrap(), sealed);
    // Finishing without a signed intermediate is a usage error.
    refused(
        init(&data, &db, &["--root-cert", p(&root.join("root.pem"))]),
        "--intermediate-cert",
    );

    // The root signs it; a damaged CSR and a wrong passphrase are refused and record nothing.
    let sign = |r: &Path, csr: &Path, out: &Path| {
        ca_server(&[
            "root",
            "sign-intermediate",
            "--root-dir",
            p(r),
            "--csr",
            p(csr),
            "--out",
            p(out),
        ])
    };
    let damaged = dir.path().join("damaged.csr.pem");
    let mut text = std::fs::read_to_string(&csr).unwrap();
    let at = text.len() / 2;
    let c = if &text[at..at + 1] == "A" { "B" } else { "A" };
    text.replace_range(at..at + 1, c);
    std::fs::write(&damaged, text).unwrap();
    refused(sign(&root, &damaged, &dir.path().join("x.pem")), "CSR");
    let mut wrong = Command::new(bin("ca-server"));
    wrong.args([
        "root",
        "sign-intermediate",
        "--root-dir",
        p(&root),
        "--csr",
        p(&csr),
        "--out",
        "/dev/null/x",
    ]);
    refused(
        wrong
            .env("BSN_CA_PASSPHRASE", "not the passphrase at all")
            .output()
            .unwrap(),
        "passphrase",
    );
    assert!(std::fs::read_dir(root.join("intermediates")).unwrap().next().is_none());

    let inter = dir.path().join("intermediate.pem");
    let text = ok(sign(&root, &csr, &inter));
    assert!(text.contains("issuing CA 1"), "{text}");
    assert_eq!(subject_cn(&inter), "test.example Issuing CA 1");
    refused(sign(&root, &csr, &inter), "exists");

    // Intermediates the CA must not adopt: another CA's key, another trust domain, another
    // root's certificate; each refused before anything is recorded.
    let data2 = dir.path().join("ca2");
    ok(init(&data2, &TestDb::new(), &["--offline-root"]));
    let inter2 = dir.path().join("intermediate2.pem");
    ok(sign(&root, &data2.join("intermediate.csr.pem"), &inter2));
    assert_eq!(subject_cn(&inter2), "test.example Issuing CA 2");
    let foreign = dir.path().join("foreign.pem");
    ok(sign(&foreign_root, &csr, &foreign));
    let finish = |r: &Path, i: &Path, crl: &Path| {
        init(
            &data,
            &db,
            &[
                "--root-cert",
                p(&r.join("root.pem")),
                "--intermediate-cert",
                p(i),
                "--root-crl",
                p(crl),
            ],
        )
    };
    let crl = root.join("root-crl.der");
    refused(finish(&root, &inter2, &crl), "certifies another key");
    refused(
        finish(&foreign_root, &foreign, &foreign_root.join("root-crl.der")),
        "trust domain 'other.example'",
    );
    refused(
        finish(&other_root, &inter, &other_root.join("root-crl.der")),
        "was not signed by this root",
    );
    refused(
        finish(&root, &inter, &other_root.join("root-crl.der")),
        "root CRL was not signed by this root",
    );
    assert!(!data.join("ca.toml").exists());

    // The CA, from the offline root.
    let text = ok(finish(&root, &inter, &crl));
    assert!(!data.join("root.key.sealed").exists());
    // No copy of the root's private key anywhere in the data directory (or the SQLite
    // database in it): neither its PKCS#8 form nor its scalar.
    let pkcs8 = ca_server::keystore::open(
        PASSPHRASE,
        "root",
        &std::fs::read_to_string(root.join("root.key.sealed")).unwrap(),
    )
    .unwrap();
    let at = pkcs8.windows(2).position(|w| w == [0x04, 0x20]).unwrap();
    let scalar = &pkcs8[at + 2..at + 34];
    for f in files(&data) {
        let bytes = std::fs::read(&f).unwrap();
        assert!(
            !bytes.windows(32).any(|w| w == scalar) && !bytes.windows(pkcs8.len()).any(|w| w == pkcs8.as_slice()),
            "{} holds the root's private key",
            f.display()
        );
    }
    let data_root = std::fs::read(data.join("root.pem")).unwrap();
    assert_eq!(data_root, std::fs::read(root.join("root.pem")).unwrap());

    let mut ca = TestCa::serve_initialised(dir, db, &text, &[]);
    let data = ca.data_dir();
    let root = ca.dir.path().join("root");
    let other_root = ca.dir.path().join("other");

    // Issuance works, and the chain goes to the offline root, with both CRLs, through openssl.
    let alice = ca.participant("alice").await;
    let served_crl = ca.api(None).get_bytes("/api/v1/crl/root").await.unwrap();
    assert_eq!(served_crl, first_root_crl);
    let crls = ca.api(None).get_bytes("/api/v1/crls.pem").await.unwrap();
    let work = ca.dir.path();
    std::fs::write(work.join("crls.pem"), &crls).unwrap();
    let o = run(
        "openssl",
        &[
            "verify",
            "-crl_check_all",
            "-CAfile",
            p(&root.join("root.pem")),
            "-untrusted",
            p(&data.join("intermediate.pem")),
            "-CRLfile",
            "crls.pem",
            p(&alice.join("cert.pem")),
        ],
        work,
    );
    assert!(
        o.status.success(),
        "openssl verify: {}",
        String::from_utf8_lossy(&o.stderr)
    );

    // The root's CRL: the CA cannot sign it; the root does, offline, and the CA installs it.
    refused(
        ca_server(&["root", "crl", "--data-dir", p(&data)]),
        "ca-server root crl --root-dir",
    );
    let install = |crl: &Path| ca_server(&["root", "install-crl", "--data-dir", p(&data), "--crl", p(crl)]);
    let old_crl = work.join("old-root-crl.der");
    std::fs::write(&old_crl, &first_root_crl).unwrap();
    ok(ca_server(&["root", "crl", "--root-dir", p(&root)]));
    refused(install(&other_root.join("root-crl.der")), "not signed by the CA's root");
    refused(install(&old_crl), "not newer than the published one");
    refused(install(&data.join("root.pem")), "not a DER CRL");
    assert_eq!(std::fs::read(data.join("root-crl.der")).unwrap(), first_root_crl);
    ok(install(&root.join("root-crl.der")));
    let new_crl = std::fs::read(root.join("root-crl.der")).unwrap();
    assert_ne!(new_crl, first_root_crl);
    assert_eq!(ca.api(None).get_bytes("/api/v1/crl/root").await.unwrap(), new_crl);

    // A restart with no root key serves on.
    ca.restart();
    let bob = ca.participant("bob").await;
    assert!(bob.join("cert.pem").exists());

    // Rotation under the offline root: the CA makes the next key and its CSR, the root's
    // operator signs it offline, the CA checks the certificate and takes it, then publish and
    // activate as with a root at hand.
    let admin = ca.admin();
    let as_admin = ca.api(Some(&admin));
    let body = serde_json::json!({});
    let requested = as_admin.post("/api/v1/intermediates", &body).await.unwrap();
    assert_eq!(requested["state"], "requested", "{requested}");
    let n = requested["number"].as_i64().unwrap();
    let next_csr = ca.dir.path().join("next.csr");
    std::fs::write(&next_csr, requested["csr"].as_str().unwrap()).unwrap();
    let e = as_admin.post("/api/v1/intermediates", &body).await.unwrap_err();
    assert_eq!(bsn_tests::slug(&e), "rotation-refused", "one rotation at a time");
    let e = as_admin
        .post(&format!("/api/v1/intermediates/{n}/publish"), &body)
        .await
        .unwrap_err();
    assert_eq!(bsn_tests::slug(&e), "rotation-refused", "not before the root signed it");
    let adopt = |pem: String| {
        let api = as_admin.clone();
        async move {
            api.post(
                &format!("/api/v1/intermediates/{n}/certificate"),
                &serde_json::json!({ "certificate": pem }),
            )
            .await
        }
    };
    // Another root's signature, or a certificate for another key, is refused.
    let foreign = ca.dir.path().join("next-other.pem");
    ok(sign(&other_root, &next_csr, &foreign));
    let e = adopt(std::fs::read_to_string(&foreign).unwrap()).await.unwrap_err();
    assert_eq!(bsn_tests::slug(&e), "rotation-refused");
    assert!(e.to_string().contains("not signed by this root"), "{e}");
    let chain_1 = std::fs::read_to_string(alice.join("chain.pem")).unwrap();
    let e = adopt(chain_1.clone()).await.unwrap_err();
    assert!(e.to_string().contains("another key"), "{e}");
    let signed = ca.dir.path().join("next.pem");
    ok(sign(&root, &next_csr, &signed));
    let taken = adopt(std::fs::read_to_string(&signed).unwrap()).await.unwrap();
    assert_eq!(taken["state"], "next");
    for step in ["publish", "activate"] {
        as_admin
            .post(&format!("/api/v1/intermediates/{n}/{step}"), &body)
            .await
            .unwrap();
    }
    let carol = ca.participant("carol").await;
    assert_ne!(
        std::fs::read_to_string(carol.join("chain.pem")).unwrap(),
        chain_1,
        "carol's certificate comes from the new intermediate"
    );
    assert_eq!(
        std::fs::read_to_string(carol.join("chain.pem")).unwrap(),
        std::fs::read_to_string(&signed).unwrap()
    );
    assert!(!data.join("root.key.sealed").exists(), "still no root key here");
    let out = bsn_tests::audit(&ca);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));

    // Rotating the offline root: its operator makes the next root and its cross-certificate
    // offline; the CA checks them and publishes them; the next intermediate is signed by the new
    // root, offline too.
    let root2 = ca.dir.path().join("root2");
    let rotate =
        |from: &Path, to: &Path| ca_server(&["root", "rotate", "--root-dir", p(from), "--new-root-dir", p(to)]);
    let made = ok(rotate(&root, &root2));
    assert!(made.contains("bsn roots add --certificate"), "{made}");
    refused(rotate(&root, &root2), "already holds a root");
    let e = as_admin.post("/api/v1/roots", &body).await.unwrap_err();
    assert_eq!(bsn_tests::slug(&e), "rotation-refused");
    assert!(
        e.to_string().contains("ca-server root rotate"),
        "the CA holds no root key: {e}"
    );
    let other2 = ca.dir.path().join("other2");
    ok(rotate(&other_root, &other2));
    let a = admin.to_str().unwrap();
    let add = |dir: &Path, cross: &Path| {
        ca.bsn(&[
            "roots",
            "add",
            "--certificate",
            p(&dir.join("root.pem")),
            "--cross",
            p(cross),
            "--crl",
            p(&dir.join("root-crl.der")),
            "--cert",
            &format!("{a}/cert.pem"),
            "--key",
            &format!("{a}/key.pem"),
        ])
    };
    // A cross-certificate for another key, or one another root signed, is refused.
    refused(add(&root2, &other2.join("cross.pem")), "another key");
    refused(
        add(&other2, &other2.join("cross.pem")),
        "not signed by the current root",
    );
    let listed = ca.api(None).get("/api/v1/roots", &[]).await.unwrap();
    assert_eq!(listed["items"].as_array().unwrap().len(), 1, "nothing changed");
    let out = ok(add(&root2, &root2.join("cross.pem")));
    assert!(out.contains("root 2 is published"), "{out}");
    as_admin.post("/api/v1/roots/2/activate", &body).await.unwrap();
    let requested = as_admin.post("/api/v1/intermediates", &body).await.unwrap();
    let n = requested["number"].as_i64().unwrap();
    let csr = ca.dir.path().join("under-root2.csr");
    std::fs::write(&csr, requested["csr"].as_str().unwrap()).unwrap();
    let by_old = ca.dir.path().join("under-root1.pem");
    ok(sign(&root, &csr, &by_old));
    let adopt = |pem: String| {
        let api = as_admin.clone();
        async move {
            api.post(
                &format!("/api/v1/intermediates/{n}/certificate"),
                &serde_json::json!({ "certificate": pem }),
            )
            .await
        }
    };
    let e = adopt(std::fs::read_to_string(&by_old).unwrap()).await.unwrap_err();
    assert!(
        e.to_string().contains("not signed by this root"),
        "the active root is 2 now: {e}"
    );
    let by_new = ca.dir.path().join("under-root2.pem");
    ok(sign(&root2, &csr, &by_new));
    adopt(std::fs::read_to_string(&by_new).unwrap()).await.unwrap();
    for step in ["publish", "activate"] {
        as_admin
            .post(&format!("/api/v1/intermediates/{n}/{step}"), &body)
            .await
            .unwrap();
    }
    let dave = ca.participant("dave").await;
    let chain = std::fs::read_to_string(dave.join("chain.pem")).unwrap();
    assert_eq!(
        chain.matches("BEGIN CERTIFICATE").count(),
        2,
        "the intermediate and root 2's cross-certificate"
    );
    assert!(chain.contains(std::fs::read_to_string(root2.join("cross.pem")).unwrap().trim()));
    assert_eq!(subject_cn(&root2.join("root.pem")), "test.example Root CA 2");
    let out = bsn_tests::audit(&ca);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success(), "{stdout}{}", String::from_utf8_lossy(&out.stderr));
    assert!(stdout.contains("2 root steps"), "{stdout}");

    // Root 2's next CRL is signed offline and installed; another root's, an older one, or root
    // 1's through this path are refused and change nothing.
    let first_crl_2 = ca.api(None).get_bytes("/api/v1/crl/root/2").await.unwrap();
    assert_eq!(first_crl_2, std::fs::read(root2.join("root-crl.der")).unwrap());
    ok(ca_server(&["root", "crl", "--root-dir", p(&root2)]));
    let install = |n: &str, crl: &Path| {
        ca.bsn(&[
            "roots",
            "install-crl",
            n,
            "--crl",
            p(crl),
            "--cert",
            &format!("{a}/cert.pem"),
            "--key",
            &format!("{a}/key.pem"),
        ])
    };
    refused(install("2", &other2.join("root-crl.der")), "not signed by root 2");
    refused(install("1", &root.join("root-crl.der")), "ca-server root install-crl");
    let stale = ca.dir.path().join("root2-first-crl.der");
    std::fs::write(&stale, &first_crl_2).unwrap();
    refused(install("2", &stale), "not newer");
    assert_eq!(ca.api(None).get_bytes("/api/v1/crl/root/2").await.unwrap(), first_crl_2);
    let out = ok(install("2", &root2.join("root-crl.der")));
    assert!(out.contains("/api/v1/crl/root/2"), "{out}");
    let served = ca.api(None).get_bytes("/api/v1/crl/root/2").await.unwrap();
    assert_eq!(served, std::fs::read(root2.join("root-crl.der")).unwrap());
    assert_ne!(served, first_crl_2);
}
