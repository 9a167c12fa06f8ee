//! Bad input gets a clear problem document and changes nothing.

use std::path::Path;
use std::time::Duration;

use bsn_api::client::ClientError;
use bsn_tests::{TestCa, eventually, run, slug};
use rcgen::{CertificateParams, KeyPair, PublicKeyData};
use serde_json::{Value, json};

fn csr_with(key: &KeyPair, cn: &str) -> String {
    let mut p = CertificateParams::default();
    p.distinguished_name.push(rcgen::DnType::CommonName, cn);
    p.serialize_request(key).unwrap().pem().unwrap()
}

fn pem_to_der(pem: &str) -> Vec<u8> {
    use rustls_pki_types::pem::PemObject;
    rustls_pki_types::CertificateSigningRequestDer::from_pem_slice(pem.as_bytes())
        .unwrap()
        .as_ref()
        .to_vec()
}

fn der_to_pem(der: &[u8]) -> String {
    use std::fmt::Write;
    let b64 = {
        let engine = &base64_engine();
        engine(der)
    };
    let mut s = String::from("-----BEGIN CERTIFICATE REQUEST-----\n");
    for chunk in b64.as_bytes().chunks(64) {
        writeln!(s, "{}", std::str::from_utf8(chunk).unwrap()).unwrap();
    }
    s.push_str("-----END CERTIFICATE REQUEST-----\n");
    s
}

fn base64_engine() -> impl Fn(&[u8]) -> String {
    |d| {
        const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
        let mut out = String::new();
        for c in d.chunks(3) {
            let b = [c[0], *c.get(1).unwrap_or(&0), *c.get(2).unwrap_or(&0)];
            let n = ((b[0] as u32) << 16) | ((b[1] as u32) << 8) | b[2] as u32;
            for i in 0..4 {
                if i <= c.len() {
                    out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

fn openssl_csr(dir: &Path, args: &[&str]) -> String {
    let mut a = vec![
        "req", "-new", "-nodes", "-keyout", "k.pem", "-subj", "/CN=x", "-out", "r.csr",
    ];
    a.extend(args);
    let o = run("openssl", &a, dir);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    std::fs::read_to_string(dir.join("r.csr")).unwrap()
}

async fn expect(r: Result<Value, ClientError>, want: &str, case: &str) {
    match r {
        Ok(v) => panic!("{case}: accepted: {v}"),
        Err(e) => assert_eq!(slug(&e), want, "{case}: {e}"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_requests_get_problem_documents_and_write_nothing() {
    let mut ca = TestCa::start();
    let admin = ca.admin();
    let bob = ca.participant("bob").await;
    let carol_secret = ca.register("carol", json!({ "max_enrollments": 1 })).await;
    let work = ca.dir.path().join("w");
    std::fs::create_dir_all(&work).unwrap();
    let anon = ca.api(None);
    let bob_api = ca.api(Some(&bob));
    let admin_api = ca.api(Some(&admin));

    // A revoked certificate for the renew case, and a used-up secret for the enroll case.
    let doomed = ca.participant("doomed").await;
    let doomed_serial = {
        let v = admin_api
            .get("/api/v1/certificates", &[("identity", "doomed".into())])
            .await
            .unwrap();
        v["items"][0]["serial"].as_str().unwrap().to_string()
    };
    admin_api
        .post(&format!("/api/v1/certificates/{doomed_serial}/revoke"), &json!({}))
        .await
        .unwrap();
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let good_csr = csr_with(&key, "aaaa");
    anon.post(
        "/api/v1/enroll",
        &json!({ "id": "carol", "secret": carol_secret, "csr": good_csr }),
    )
    .await
    .unwrap();
    let short_secret = ca.register("dave", json!({ "secret_ttl_seconds": 1 })).await;

    let before = ca.counts().await;
    let crl_before = anon.get_bytes("/api/v1/crl").await.unwrap();
    let enroll = |secret: &str, csr: &str| json!({ "id": "carol", "secret": secret, "csr": csr });

    // CSRs.
    let tampered = {
        let mut der = pem_to_der(&good_csr);
        let at = der.windows(4).position(|w| w == b"aaaa").unwrap();
        der[at] = b'b';
        der_to_pem(&der)
    };
    let off_curve = {
        let mut der = pem_to_der(&good_csr);
        let point = key.der_bytes().to_vec();
        let at = der.windows(point.len()).position(|w| w == point.as_slice()).unwrap();
        der[at + point.len() - 1] ^= 1;
        der_to_pem(&der)
    };
    let rsa1024 = openssl_csr(&work, &["-newkey", "rsa:1024"]);
    let k256 = openssl_csr(&work, &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:secp256k1"]);
    let sha1 = openssl_csr(
        &work,
        &["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:P-256", "-sha1"],
    );
    let cert_pem = std::fs::read_to_string(bob.join("cert.pem")).unwrap();
    let secret = &carol_secret;
    let cases: Vec<(&str, Value, &str)> = vec![
        ("not PEM", enroll(secret, "hello"), "invalid-csr"),
        ("a certificate, not a CSR", enroll(secret, &cert_pem), "invalid-csr"),
        (
            "CSR signature does not verify",
            enroll(secret, &tampered),
            "csr-signature-invalid",
        ),
        ("off-curve point", enroll(secret, &off_curve), "unsupported-key"),
        ("RSA 1024", enroll(secret, &rsa1024), "unsupported-key"),
        ("secp256k1", enroll(secret, &k256), "unsupported-key"),
        ("SHA-1 signature", enroll(secret, &sha1), "unsupported-key"),
        (
            "wrong secret",
            json!({ "id": "bob", "secret": "wrong", "csr": good_csr }),
            "invalid-credentials",
        ),
        (
            "unknown identity",
            json!({ "id": "nobody", "secret": "x", "csr": good_csr }),
            "invalid-credentials",
        ),
        (
            "id syntax",
            json!({ "id": "a b", "secret": "x", "csr": good_csr }),
            "invalid-field",
        ),
        (
            "unknown field",
            json!({ "id": "carol", "secret": secret, "csr": good_csr, "is_ca": true }),
            "invalid-request",
        ),
        (
            "missing field",
            json!({ "id": "carol", "csr": good_csr }),
            "invalid-request",
        ),
        ("used-up secret", enroll(secret, &good_csr), "secret-used-up"),
        (
            "huge body",
            json!({ "id": "carol", "secret": secret, "csr": "A".repeat(100_000) }),
            "payload-too-large",
        ),
    ];
    let n_enroll = cases.len();
    for (case, body, want) in cases {
        expect(anon.post("/api/v1/enroll", &body).await, want, case).await;
    }
    let dave = json!({ "id": "dave", "secret": short_secret, "csr": good_csr });
    let expires_at = admin_api.get("/api/v1/identities/dave", &[]).await.unwrap()["secret_expires_at"]
        .as_str()
        .unwrap()
        .to_string();
    let expires_at = time::OffsetDateTime::parse(&expires_at, &time::format_description::well_known::Rfc3339).unwrap();
    eventually(
        "the clock to pass the 1-second secret's expiry",
        Duration::from_secs(10),
        || async { (time::OffsetDateTime::now_utc() >= expires_at).then_some(()) },
    )
    .await;
    expect(
        anon.post("/api/v1/enroll", &dave).await,
        "secret-expired",
        "expired secret",
    )
    .await;

    // Authentication and authorisation.
    let admin_serial = {
        let v = admin_api
            .get("/api/v1/certificates", &[("identity", "admin".into())])
            .await
            .unwrap();
        v["items"][0]["serial"].as_str().unwrap().to_string()
    };
    let renew = json!({ "csr": good_csr });
    expect(
        anon.post("/api/v1/renew", &renew).await,
        "client-certificate-required",
        "renew without certificate",
    )
    .await;
    expect(
        ca.api(Some(&doomed)).post("/api/v1/renew", &renew).await,
        "certificate-revoked",
        "renew with revoked",
    )
    .await;
    expect(
        bob_api
            .post(&format!("/api/v1/certificates/{admin_serial}/revoke"), &json!({}))
            .await,
        "forbidden",
        "revoke another's",
    )
    .await;
    expect(
        bob_api.post("/api/v1/identities", &json!({ "id": "x" })).await,
        "forbidden",
        "register without role",
    )
    .await;
    expect(
        admin_api.post("/api/v1/identities", &json!({ "id": "bob" })).await,
        "identity-exists",
        "register twice",
    )
    .await;
    // A bad id is explained once, in words a person reads ("id must be ..."), not "id: id must
    // be ..." (the portal's register form showed that).
    for (path, body) in [
        ("/api/v1/identities", json!({ "id": "bad id!" })),
        ("/api/v1/enroll", json!({ "id": "bad id!", "secret": "x", "csr": "x" })),
    ] {
        match admin_api.post(path, &body).await {
            Err(bsn_api::client::ClientError::Problem { slug, detail, .. }) => {
                assert_eq!(slug, "invalid-field", "{path}: {detail}");
                assert!(detail.starts_with("id must be 1-128 characters"), "{path}: {detail}");
            }
            other => panic!("{path}: {other:?}"),
        }
    }
    expect(
        admin_api
            .post("/api/v1/identities", &json!({ "id": "r", "roles": ["root"] }))
            .await,
        "invalid-field",
        "unknown role",
    )
    .await;
    expect(
        admin_api
            .post("/api/v1/identities", &json!({ "id": "r", "type": "robot" }))
            .await,
        "invalid-field",
        "unknown type",
    )
    .await;
    expect(
        admin_api
            .post("/api/v1/identities", &json!({ "id": "r", "dns_names": ["a.example"] }))
            .await,
        "invalid-field",
        "DNS names on a participant",
    )
    .await;
    expect(
        admin_api
            .post("/api/v1/identities", &json!({ "id": "r", "max_enrollments": 0 }))
            .await,
        "invalid-field",
        "zero uses",
    )
    .await;
    expect(
        admin_api.post("/api/v1/certificates/abcdef/revoke", &json!({})).await,
        "not-found",
        "unknown serial",
    )
    .await;
    expect(
        admin_api.post("/api/v1/certificates/zz/revoke", &json!({})).await,
        "invalid-field",
        "serial syntax",
    )
    .await;
    expect(
        admin_api
            .post(
                &format!("/api/v1/certificates/{admin_serial}/revoke"),
                &json!({ "reason": "certificateHold" }),
            )
            .await,
        "invalid-field",
        "hold is not a revocation",
    )
    .await;
    expect(
        admin_api
            .post(&format!("/api/v1/certificates/{doomed_serial}/revoke"), &json!({}))
            .await,
        "already-revoked",
        "twice",
    )
    .await;
    expect(
        admin_api
            .get("/api/v1/certificates", &[("status", "lost".into())])
            .await,
        "invalid-field",
        "bad status",
    )
    .await;
    expect(
        admin_api.get("/api/v1/certificates", &[("limit", "0".into())]).await,
        "invalid-field",
        "bad limit",
    )
    .await;
    expect(
        admin_api.get("/api/v1/nowhere", &[]).await,
        "not-found",
        "unknown endpoint",
    )
    .await;

    // Not JSON at all.
    let raw = reqwest_raw(&ca).await;
    assert_eq!(raw.0, 415, "{}", raw.1);
    assert!(raw.1.contains("urn:bsn:problem:unsupported-media-type"));

    assert_eq!(
        ca.counts().await,
        before,
        "no identity or certificate was written by {} bad requests",
        n_enroll + 20
    );
    assert_eq!(
        anon.get_bytes("/api/v1/crl").await.unwrap(),
        crl_before,
        "the CRL did not change"
    );
}

async fn reqwest_raw(ca: &TestCa) -> (u16, String) {
    let o = run(
        "curl",
        &[
            "-sS",
            "--cacert",
            ca.bundle.to_str().unwrap(),
            "-H",
            "content-type: text/plain",
            "--data",
            "id=carol",
            "-w",
            "\n%{http_code}",
            &format!("{}/api/v1/enroll", ca.url),
        ],
        ca.dir.path(),
    );
    let text = String::from_utf8_lossy(&o.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", "0"));
    (
        code.parse().unwrap_or(0),
        format!("{body}{}", String::from_utf8_lossy(&o.stderr)),
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_certificate_is_refused_with_a_clear_problem() {
    let mut ca = TestCa::start_with(&[("BSN_CA_PARTICIPANT_VALIDITY", "3s")]);
    let eve = ca.participant("eve").await;
    let not_after = {
        use rustls_pki_types::pem::PemObject;
        let pem = std::fs::read(eve.join("cert.pem")).unwrap();
        let der = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
            .next()
            .unwrap()
            .unwrap();
        identity::profile::check_leaf(&der).unwrap().not_after
    };
    let before = ca.db_counts().await;
    eventually("the clock to pass eve's notAfter", Duration::from_secs(20), || async {
        (time::OffsetDateTime::now_utc().unix_timestamp() > not_after).then_some(())
    })
    .await;
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let r = ca
        .api(Some(&eve))
        .post("/api/v1/renew", &json!({ "csr": csr_with(&key, "e") }))
        .await;
    expect(r, "certificate-expired", "renew with an expired certificate").await;
    assert_eq!(ca.db_counts().await, before, "nothing was written");
}

/// Regression: a request refused before its body was read (no client certificate, wrong
/// content type) had its HTTP/2 stream reset, and curl sometimes printed "Stream error in the
/// HTTP/2 framing layer" instead of the problem document.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_refusals_reach_http2_clients_intact() {
    let ca = TestCa::start();
    let body = json!({ "csr": "x".repeat(8000) }).to_string();
    std::fs::write(ca.dir.path().join("body.json"), &body).unwrap();
    let mut failures = Vec::new();
    for i in 0..60 {
        let (ctype, path, want) = if i % 2 == 0 {
            ("application/json", "renew", "401")
        } else {
            ("text/plain", "enroll", "415")
        };
        let o = run(
            "curl",
            &[
                "-sS",
                "--http2",
                "--cacert",
                ca.bundle.to_str().unwrap(),
                "-H",
                &format!("content-type: {ctype}"),
                "--data-binary",
                "@body.json",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("{}/api/v1/{path}", ca.url),
            ],
            ca.dir.path(),
        );
        let code = String::from_utf8_lossy(&o.stdout).into_owned();
        if !o.status.success() || code != want {
            failures.push(format!(
                "{path}: exit {:?}, status {code}: {}",
                o.status.code(),
                String::from_utf8_lossy(&o.stderr)
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of 60 refused requests did not reach curl intact: {failures:?}",
        failures.len()
    );
}
