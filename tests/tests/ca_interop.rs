//! Interoperability with real peers: CSRs made by `openssl req`, chains and CRLs checked by
//! `openssl verify -crl_check`, renewal by `curl --cert`.

use std::path::Path;

use bsn_tests::{TestCa, run};
use serde_json::json;

fn openssl(dir: &Path, args: &[&str]) -> String {
    let o = run("openssl", args, dir);
    assert!(
        o.status.success(),
        "openssl {args:?}: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn verify_with_crl(dir: &Path, cert: &str) -> (bool, String) {
    let o = run(
        "openssl",
        &[
            "verify",
            "-crl_check",
            "-CAfile",
            "bundle.pem",
            "-untrusted",
            "chain.pem",
            "-CRLfile",
            "crl.pem",
            cert,
        ],
        dir,
    );
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_csr_crl_check_and_curl_renew() {
    let mut ca = TestCa::start();
    let admin = ca.admin();
    let work = ca.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    std::fs::copy(&ca.bundle, work.join("bundle.pem")).unwrap();
    let anon = ca.api(None);
    std::fs::write(
        work.join("chain.pem"),
        anon.get_bytes("/api/v1/ca-chain").await.unwrap(),
    )
    .unwrap();

    // A CSR that asks for everything it must not get.
    openssl(
        &work,
        &[
            "req",
            "-new",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "bob.key",
            "-subj",
            "/CN=root-of-all/O=Evil",
            "-addext",
            "basicConstraints=critical,CA:TRUE",
            "-addext",
            "keyUsage=keyCertSign,cRLSign",
            "-addext",
            "subjectAltName=DNS:bank.example,URI:spiffe://test.example/participant/admin",
            "-out",
            "bob.csr",
        ],
    );
    let secret = ca.register("bob", json!({})).await;
    let csr = std::fs::read_to_string(work.join("bob.csr")).unwrap();
    let v = anon
        .post("/api/v1/enroll", &json!({ "id": "bob", "secret": secret, "csr": csr }))
        .await
        .unwrap();
    std::fs::write(
        work.join("bob.pem"),
        format!("{}{}", v["certificate"].as_str().unwrap(), v["chain"].as_str().unwrap()),
    )
    .unwrap();
    let text = openssl(&work, &["x509", "-in", "bob.pem", "-noout", "-text"]);
    assert!(text.contains("CA:FALSE") && !text.contains("CA:TRUE"), "{text}");
    assert!(
        !text.contains("Certificate Sign") && !text.contains("bank.example") && !text.contains("Evil"),
        "{text}"
    );
    assert!(
        text.contains("URI:spiffe://test.example/participant/bob") && text.contains("CN = bob"),
        "{text}"
    );
    assert!(!text.contains("participant/admin"), "{text}");
    // The certificate's key is the CSR's key.
    assert_eq!(
        openssl(&work, &["x509", "-in", "bob.pem", "-noout", "-pubkey"]),
        openssl(&work, &["req", "-in", "bob.csr", "-noout", "-pubkey"])
    );

    std::fs::write(work.join("crl.pem"), anon.get_bytes("/api/v1/crl.pem").await.unwrap()).unwrap();
    let (ok, msg) = verify_with_crl(&work, "bob.pem");
    assert!(ok, "a live certificate verifies with the CRL: {msg}");

    // curl renews over mTLS with the enrolled key and certificate.
    openssl(
        &work,
        &[
            "req",
            "-new",
            "-key",
            "bob.key",
            "-subj",
            "/CN=ignored",
            "-out",
            "renew.csr",
        ],
    );
    let body = json!({ "csr": std::fs::read_to_string(work.join("renew.csr")).unwrap() });
    std::fs::write(work.join("renew.json"), body.to_string()).unwrap();
    let url = format!("{}/api/v1/renew", ca.url);
    let o = run(
        "curl",
        &[
            "-sS",
            "--cacert",
            "bundle.pem",
            "--cert",
            "bob.pem",
            "--key",
            "bob.key",
            "-H",
            "content-type: application/json",
            "--data-binary",
            "@renew.json",
            "-o",
            "renewed.json",
            "-w",
            "%{http_code}",
            &url,
        ],
        &work,
    );
    assert_eq!(
        String::from_utf8_lossy(&o.stdout),
        "201",
        "curl renew: {}",
        String::from_utf8_lossy(&o.stderr)
    );
    let renewed: serde_json::Value =
        serde_json::from_slice(&std::fs::read(work.join("renewed.json")).unwrap()).unwrap();
    assert_eq!(renewed["spiffe_id"], "spiffe://test.example/participant/bob");
    assert_ne!(renewed["serial"], v["serial"]);

    // Revoke the first certificate; openssl now rejects it and still accepts the renewed one.
    let admin_api = ca.api(Some(&admin));
    let r = admin_api
        .post(
            &format!("/api/v1/certificates/{}/revoke", v["serial"].as_str().unwrap()),
            &json!({ "reason": "keyCompromise" }),
        )
        .await
        .unwrap();
    assert_eq!(r["crl_number"], 2);
    std::fs::write(work.join("crl.pem"), anon.get_bytes("/api/v1/crl.pem").await.unwrap()).unwrap();
    let (ok, msg) = verify_with_crl(&work, "bob.pem");
    assert!(!ok && msg.contains("certificate revoked"), "{msg}");
    std::fs::write(
        work.join("renewed.pem"),
        format!(
            "{}{}",
            renewed["certificate"].as_str().unwrap(),
            renewed["chain"].as_str().unwrap()
        ),
    )
    .unwrap();
    let (ok, msg) = verify_with_crl(&work, "renewed.pem");
    assert!(ok, "{msg}");
    // The DER CRL is the same list, with its number.
    std::fs::write(work.join("crl.der"), anon.get_bytes("/api/v1/crl").await.unwrap()).unwrap();
    let crl = openssl(&work, &["crl", "-inform", "DER", "-in", "crl.der", "-noout", "-text"]);
    assert!(
        crl.contains("Key Compromise") && crl.contains(&v["serial"].as_str().unwrap().to_uppercase()),
        "{crl}"
    );
    let num = openssl(
        &work,
        &["crl", "-inform", "DER", "-in", "crl.der", "-noout", "-crlnumber"],
    );
    assert_eq!(num.trim(), "crlNumber=0x02");
    // The revoked certificate no longer authenticates to the CA either.
    let o = run(
        "curl",
        &[
            "-sS",
            "--cacert",
            "bundle.pem",
            "--cert",
            "bob.pem",
            "--key",
            "bob.key",
            "-H",
            "content-type: application/json",
            "--data-binary",
            "@renew.json",
            "-w",
            "%{http_code}",
            "-o",
            "/dev/null",
            &url,
        ],
        &work,
    );
    assert_eq!(String::from_utf8_lossy(&o.stdout), "401");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn openssl_rsa_and_p384_keys_keep_their_algorithm() {
    let mut ca = TestCa::start();
    let work = ca.dir.path().join("w");
    std::fs::create_dir_all(&work).unwrap();
    let anon = ca.api(None);
    for (name, args) in [
        ("rsa", vec!["-newkey", "rsa:2048"]),
        // rcgen#448: a P-384 key in a SHA-256-signed CSR must still give a readable P-384 certificate.
        (
            "p384",
            vec!["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-384", "-sha256"],
        ),
    ] {
        let mut a = vec![
            "req", "-new", "-nodes", "-keyout", "k.pem", "-subj", "/CN=x", "-out", "r.csr",
        ];
        a.extend(args);
        openssl(&work, &a);
        let secret = ca.register(name, json!({})).await;
        let csr = std::fs::read_to_string(work.join("r.csr")).unwrap();
        let v = anon
            .post("/api/v1/enroll", &json!({ "id": name, "secret": secret, "csr": csr }))
            .await
            .unwrap();
        std::fs::write(work.join("c.pem"), v["certificate"].as_str().unwrap()).unwrap();
        assert_eq!(
            openssl(&work, &["x509", "-in", "c.pem", "-noout", "-pubkey"]),
            openssl(&work, &["req", "-in", "r.csr", "-noout", "-pubkey"]),
            "{name}"
        );
    }
}

/// The root's CRL: signed at init, published at a stable URL (and in `crls.pem` before the
/// issuing CA's), re-signed by `ca-server root crl` and served by the running CA at once, signed
/// again at start-up when missing; a wrong passphrase changes nothing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_root_crl_is_published_re_signed_and_recovered() {
    let mut ca = TestCa::start();
    let work = ca.dir.path().join("work");
    std::fs::create_dir_all(&work).unwrap();
    let anon = ca.api(None);
    let file = ca.data_dir().join("root-crl.der");
    let first = anon.get_bytes("/api/v1/crl/root").await.unwrap();
    assert_eq!(first, std::fs::read(&file).unwrap(), "served as written at init");
    std::fs::write(work.join("root.crl"), &first).unwrap();
    std::fs::write(work.join("root.pem"), std::fs::read(&ca.bundle).unwrap()).unwrap();
    // Signed by the root, valid for a year, listing nothing.
    let text = openssl(
        &work,
        &[
            "crl", "-inform", "DER", "-in", "root.crl", "-CAfile", "root.pem", "-noout", "-text",
        ],
    );
    assert!(
        text.contains("Root CA") && text.contains("No Revoked Certificates"),
        "{text}"
    );
    let next = openssl(
        &work,
        &["crl", "-inform", "DER", "-in", "root.crl", "-noout", "-nextupdate"],
    );
    let year = (time::OffsetDateTime::now_utc() + time::Duration::days(365)).year();
    assert!(next.contains(&year.to_string()), "{next}");
    // Operators see when it ends.
    let admin = ca.admin();
    let metrics = String::from_utf8(ca.api(Some(&admin)).get_bytes("/metrics").await.unwrap()).unwrap();
    let end: i64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("bsn_ca_root_crl_next_update_seconds "))
        .unwrap_or_else(|| panic!("no root CRL gauge in {metrics}"))
        .parse()
        .unwrap();
    assert!((end - bsn_tests::now_unix() - 365 * 86_400).abs() < 600, "{end}");
    let combined = String::from_utf8(anon.get_bytes("/api/v1/crls.pem").await.unwrap()).unwrap();
    let root_pem = String::from_utf8(anon.get_bytes("/api/v1/crl/root.pem").await.unwrap()).unwrap();
    let issuing_pem = String::from_utf8(anon.get_bytes("/api/v1/crl.pem").await.unwrap()).unwrap();
    assert_eq!(combined, root_pem + &issuing_pem);

    let root_crl = |pass: &str| {
        std::process::Command::new(bsn_tests::bin("ca-server"))
            .args(["root", "crl", "--data-dir"])
            .arg(ca.data_dir())
            .env("BSN_CA_PASSPHRASE", pass)
            .output()
            .unwrap()
    };
    // A wrong passphrase: refused, nothing changed.
    let out = root_crl("not the passphrase of this CA");
    assert!(!out.status.success(), "{out:?}");
    assert_eq!(std::fs::read(&file).unwrap(), first);
    // The right one: a new CRL with a higher number, served by the running CA at once.
    let out = root_crl(bsn_tests::PASSPHRASE);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("root CRL"), "{out:?}");
    let second = anon.get_bytes("/api/v1/crl/root").await.unwrap();
    assert_ne!(second, first);
    let number = |der: &[u8]| {
        let (_, crl) = x509_parser::parse_x509_crl(der).unwrap();
        crl.crl_number().unwrap().clone()
    };
    assert!(number(&second) > number(&first));

    // Lost: the CA says what to do, and signs one again when it starts.
    std::fs::remove_file(&file).unwrap();
    let e = anon.get("/api/v1/crl/root", &[]).await.unwrap_err();
    assert_eq!(bsn_tests::slug(&e), "not-found");
    assert!(e.to_string().contains("ca-server root crl"), "{e}");
    ca.kill_all();
    ca.restart();
    let third = ca.api(None).get_bytes("/api/v1/crl/root").await.unwrap();
    assert!(number(&third) > number(&second));
}
