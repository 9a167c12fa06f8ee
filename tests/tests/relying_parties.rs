//! Standard relying parties check revocation with what the CA publishes: nginx with `ssl_crl`
//! (OpenSSL's CRL check on every CA in the chain, root included), `openssl verify
//! -crl_check_all`, and pkilint's CRL linter on the root's and the issuing CA's CRLs. Every
//! certificate names where its issuer's CRL is (CRL distribution point).
//!
//! These need nginx (`nginx-light`) and pkilint (PyPI), which a machine with only the Rust
//! toolchain lacks: they are ignored by the README's test command and run by `.ci/run`
//! (`cargo test --release -p bsn-tests --test relying_parties -- --ignored`).

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use bsn_tests::{TestCa, run};
use serde_json::json;

fn output(dir: &Path, cmd: &str, args: &[&str]) -> (bool, String) {
    let o = run(cmd, args, dir);
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// `openssl verify -crl_check_all`: the leaf, its chain and every CA's CRL from `crls`.
fn openssl_verify(dir: &Path, crls: &str, who: &str) -> (bool, String) {
    output(
        dir,
        "openssl",
        &[
            "verify",
            "-crl_check_all",
            "-CAfile",
            "bundle.pem",
            "-untrusted",
            "chain.pem",
            "-CRLfile",
            crls,
            &format!("{who}/cert.pem"),
        ],
    )
}

struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// nginx requiring a client certificate from the CA (`ssl_verify_client on`) with `crl` as its
/// `ssl_crl`; answers 200 with the client's subject.
fn nginx(dir: &Path, ca: &TestCa, crl: &str) -> (Nginx, u16) {
    let port = bsn_tests::free_port();
    let data = ca.data_dir();
    let conf = format!(
        "worker_processes 1;\ndaemon off;\npid {d}/nginx.pid;\nerror_log {d}/error.log;\n\
         events {{ worker_connections 64; }}\n\
         http {{\n  access_log off;\n  client_body_temp_path {d};\n  proxy_temp_path {d};\n  fastcgi_temp_path {d};\n  uwsgi_temp_path {d};\n  scgi_temp_path {d};\n\
         server {{\n    listen 127.0.0.1:{port} ssl;\n    ssl_certificate {t}/tls.pem;\n    ssl_certificate_key {t}/tls.key;\n\
         ssl_client_certificate {d}/bundle.pem;\n    ssl_verify_client on;\n    ssl_verify_depth 2;\n    ssl_crl {d}/{crl};\n\
         location / {{ return 200 \"$ssl_client_s_dn\"; }}\n  }}\n}}\n",
        d = dir.display(),
        t = data.display(),
    );
    let conf_path = dir.join(format!("nginx-{port}.conf"));
    std::fs::write(&conf_path, conf).unwrap();
    let child = Command::new("nginx")
        .arg("-p")
        .arg(dir)
        .arg("-e")
        .arg(dir.join("error.log"))
        .arg("-c")
        .arg(&conf_path)
        .stdout(Stdio::null())
        .spawn()
        .expect("nginx (apt-get install nginx-light)");
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(std::time::Instant::now() < deadline, "nginx did not listen within 10 s");
        std::thread::sleep(Duration::from_millis(20));
    }
    (Nginx(child), port)
}

/// curl to nginx with `who`'s certificate (leaf then chain) and key: the HTTP status and body.
fn curl(dir: &Path, port: u16, who: &str) -> (String, String) {
    let (_, out) = output(
        dir,
        "curl",
        &[
            "-s",
            "--cacert",
            "bundle.pem",
            "--cert",
            &format!("{who}/cert.pem"),
            "--key",
            &format!("{who}/key.pem"),
            "-w",
            "\n%{http_code}",
            &format!("https://localhost:{port}/"),
        ],
    );
    let (body, code) = out.rsplit_once('\n').unwrap_or(("", &out));
    (code.trim().to_string(), body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "needs nginx and pkilint: run by .ci/run"]
async fn nginx_openssl_and_pkilint_check_every_crl_in_the_chain() {
    let mut ca = TestCa::start();
    let admin = ca.admin();
    ca.participant("alice").await;
    ca.participant("bob").await;
    let work = ca.dir.path().to_path_buf();
    let anon = ca.api(None);
    std::fs::copy(&ca.bundle, work.join("bundle.pem")).unwrap();
    let fetch = |path: &'static str, file: &'static str| {
        let anon = anon.clone();
        let work = work.clone();
        async move { std::fs::write(work.join(file), anon.get_bytes(path).await.unwrap()).unwrap() }
    };
    fetch("/api/v1/ca-chain", "chain.pem").await;
    fetch("/api/v1/crls.pem", "crls.pem").await;
    fetch("/api/v1/crl.pem", "issuing-only.pem").await;
    fetch("/api/v1/crl/root", "root.crl").await;
    fetch("/api/v1/crl", "issuing.crl").await;

    // Where each certificate says its issuer's CRL is.
    let (_, leaf_dp) = output(
        &work,
        "openssl",
        &[
            "x509",
            "-in",
            "alice/cert.pem",
            "-noout",
            "-ext",
            "crlDistributionPoints",
        ],
    );
    assert!(
        leaf_dp.contains(&format!("URI:{}/api/v1/crls/1\n", ca.url)),
        "{leaf_dp}"
    );
    let (_, inter_dp) = output(
        &work,
        "openssl",
        &["x509", "-in", "chain.pem", "-noout", "-ext", "crlDistributionPoints"],
    );
    assert!(inter_dp.contains("/api/v1/crl/root"), "{inter_dp}");
    // The combined file is the root's CRL and then the issuing CA's.
    let (_, issuers) = output(&work, "openssl", &["crl", "-in", "crls.pem", "-noout", "-issuer"]);
    assert!(issuers.contains("Root CA"), "{issuers}");
    assert_eq!(
        std::fs::read_to_string(work.join("crls.pem"))
            .unwrap()
            .matches("BEGIN X509 CRL")
            .count(),
        2
    );

    // pkilint: the root's CRL as an authority revocation list, the issuing CA's as a CRL.
    for (kind, file) in [("ARL", "root.crl"), ("CRL", "issuing.crl")] {
        let (ok, findings) = output(&work, "lint_crl", &["lint", "-t", kind, "-p", "PKIX", file]);
        assert!(ok && findings.trim().is_empty(), "pkilint on {file}: {findings}");
    }

    // OpenSSL checking every CA's CRL: both certificates verify; with only the issuing CA's CRL
    // it cannot (that was all this CA used to publish).
    for who in ["alice", "bob"] {
        let (ok, msg) = openssl_verify(&work, "crls.pem", who);
        assert!(ok, "{who} with every CRL: {msg}");
    }
    let (ok, msg) = openssl_verify(&work, "issuing-only.pem", "alice");
    assert!(!ok && msg.contains("unable to get certificate CRL"), "{msg}");

    // nginx with ssl_crl: the same.
    let (_old, port) = nginx(&work, &ca, "issuing-only.pem");
    assert_eq!(
        curl(&work, port, "alice").0,
        "400",
        "nginx cannot check the root without its CRL"
    );
    let (before, port) = nginx(&work, &ca, "crls.pem");
    let (code, body) = curl(&work, port, "alice");
    assert_eq!(code, "200", "{body}");
    assert!(body.contains("CN=alice"), "{body}");
    assert_eq!(curl(&work, port, "bob").0, "200");
    drop(before);

    // Bob's certificate is revoked; relying parties that fetch the CRLs again refuse it.
    let serial = output(&work, "openssl", &["x509", "-in", "bob/cert.pem", "-noout", "-serial"])
        .1
        .trim()
        .trim_start_matches("serial=")
        .to_ascii_lowercase();
    ca.api(Some(&admin))
        .post(
            &format!("/api/v1/certificates/{serial}/revoke"),
            &json!({ "reason": "keyCompromise" }),
        )
        .await
        .unwrap();
    fetch("/api/v1/crls.pem", "crls.pem").await;
    let (ok, msg) = openssl_verify(&work, "crls.pem", "bob");
    assert!(!ok && msg.contains("certificate revoked"), "{msg}");
    assert!(openssl_verify(&work, "crls.pem", "alice").0);
    let (_after, port) = nginx(&work, &ca, "crls.pem");
    assert_eq!(
        curl(&work, port, "bob").0,
        "400",
        "nginx refuses the revoked certificate"
    );
    assert_eq!(curl(&work, port, "alice").0, "200");
    fetch("/api/v1/crl", "issuing.crl").await;
    let (ok, findings) = output(&work, "lint_crl", &["lint", "-t", "CRL", "-p", "PKIX", "issuing.crl"]);
    assert!(
        ok && findings.trim().is_empty(),
        "pkilint on a CRL listing a revocation: {findings}"
    );

    // The issuing intermediate rotates. The combined file holds the new intermediate's CRL from
    // its publication on, so a relying party that fetched it then accepts the new leaves at
    // once, and the old leaves still, each checked against its own intermediate's CRL.
    for step in [
        "/api/v1/intermediates",
        "/api/v1/intermediates/2/publish",
        "/api/v1/intermediates/2/activate",
    ] {
        ca.api(Some(&admin)).post(step, &json!({})).await.unwrap();
    }
    fetch("/api/v1/crls.pem", "crls.pem").await;
    ca.participant("dave").await;
    let old_chain = std::fs::read_to_string(work.join("chain.pem")).unwrap();
    fetch("/api/v1/ca-chain", "chain.pem").await;
    let new_chain = std::fs::read_to_string(work.join("chain.pem")).unwrap();
    assert_ne!(old_chain, new_chain, "dave's intermediate is the new one");
    std::fs::write(work.join("chain.pem"), format!("{old_chain}{new_chain}")).unwrap();
    assert_eq!(
        std::fs::read_to_string(work.join("crls.pem"))
            .unwrap()
            .matches("BEGIN X509 CRL")
            .count(),
        3,
        "the root's and both intermediates' CRLs"
    );
    for who in ["alice", "dave"] {
        let (ok, msg) = openssl_verify(&work, "crls.pem", who);
        assert!(ok, "{who} after the rotation: {msg}");
    }
    let (ok, msg) = openssl_verify(&work, "crls.pem", "bob");
    assert!(!ok && msg.contains("certificate revoked"), "{msg}");
    let (_rotated, port) = nginx(&work, &ca, "crls.pem");
    assert_eq!(curl(&work, port, "dave").0, "200", "a leaf of the new intermediate");
    assert_eq!(curl(&work, port, "alice").0, "200", "a leaf of the old intermediate");
    assert_eq!(curl(&work, port, "bob").0, "400", "still revoked");
    fetch("/api/v1/crls/2", "issuing-2.crl").await;
    let (ok, findings) = output(&work, "lint_crl", &["lint", "-t", "CRL", "-p", "PKIX", "issuing-2.crl"]);
    assert!(
        ok && findings.trim().is_empty(),
        "pkilint on the new intermediate's CRL: {findings}"
    );
}
