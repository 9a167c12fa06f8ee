//! The portal's API without a browser, on SQLite or PostgreSQL (BSN_TEST_DATABASE): registration
//! rules, approval, sign-in, sessions and CSRF, proof of possession for a browser-made key (made
//! here with ring, signed exactly as WebCrypto signs), one-time challenges, own certificates and
//! revocation. The browser tests in web/tests drive the same flow through the pages.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use bsn_tests::{Browser, TestCa, problem_slug as problem, slug};
use ring::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair};
use serde_json::json;

/// A P-256 key and its SPKI, and a WebCrypto-style (P1363) proof over a challenge.
fn browser_key() -> (EcdsaKeyPair, String) {
    let rng = ring::rand::SystemRandom::new();
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
    let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref(), &rng).unwrap();
    let spki = rcgen::PublicKeyData::subject_public_key_info(&rcgen::KeyPair::try_from(pkcs8.as_ref()).unwrap());
    (kp, B64.encode(spki))
}

fn prove(kp: &EcdsaKeyPair, challenge: &str) -> String {
    let msg = [b"bsn enrollment proof v1\n".as_slice(), challenge.as_bytes()].concat();
    B64.encode(kp.sign(&ring::rand::SystemRandom::new(), &msg).unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn portal_registration_sessions_and_browser_enrollment() {
    let mut ca = TestCa::start();
    let admin = ca.admin();
    let admin_api = ca.api(Some(&admin));
    let mut b = Browser::new(&ca);
    let good = json!({ "id": "ann", "name": "Ann", "email": "Ann@Example.org", "password": "correct horse battery" });

    // Bad registrations: each refused, nothing stored.
    for (body, want) in [
        (
            json!({ "id": "a b", "name": "A", "email": "a@example.org", "password": "correct horse battery" }),
            "invalid-field",
        ),
        (
            json!({ "id": "a", "name": "", "email": "a@example.org", "password": "correct horse battery" }),
            "invalid-field",
        ),
        (
            json!({ "id": "a", "name": "A", "email": "nope", "password": "correct horse battery" }),
            "invalid-field",
        ),
        (
            json!({ "id": "a", "name": "A", "email": "a@example.org", "password": "short" }),
            "invalid-field",
        ),
        (
            json!({ "id": "a", "name": "A", "email": "a@example.org", "password": "correct horse battery", "invitation": "bogus" }),
            "invalid-field",
        ),
        (
            json!({ "id": "a", "name": "A", "email": "a@example.org", "password": "correct horse battery", "admin": true }),
            "invalid-request",
        ),
        (
            json!({ "id": "admin", "name": "A", "email": "a@example.org", "password": "correct horse battery" }),
            "conflict",
        ),
    ] {
        let (status, v) = b
            .call("POST", "/api/v1/portal/register", Some(body.clone()), false)
            .await;
        assert_eq!((status / 100, problem(&v)), (4, want), "{body}");
    }
    let (status, v) = b
        .call("POST", "/api/v1/portal/register", Some(good.clone()), false)
        .await;
    assert_eq!((status, v["state"].as_str()), (201, Some("pending")), "{v}");
    let (status, v) = b.call("POST", "/api/v1/portal/register", Some(good), false).await;
    assert_eq!((status, problem(&v)), (409, "conflict"));
    let pending = admin_api.get("/api/v1/accounts", &[]).await.unwrap();
    assert_eq!(pending["items"].as_array().unwrap().len(), 1);
    assert_eq!(pending["items"][0]["email"], "ann@example.org");

    // Sign-in: wrong password, unknown id, then right.
    for (id, pw) in [("ann", "wrong password here"), ("nobody", "correct horse battery")] {
        let (status, v) = b
            .call(
                "POST",
                "/api/v1/portal/login",
                Some(json!({ "id": id, "password": pw })),
                false,
            )
            .await;
        assert_eq!((status, problem(&v)), (401, "bad-login"));
    }
    let (status, v) = b
        .call(
            "POST",
            "/api/v1/portal/login",
            Some(json!({ "id": "ann", "password": "correct horse battery" })),
            false,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    b.csrf = v["csrf_token"].as_str().unwrap().to_string();
    // Pending: no challenge yet.
    let (status, v) = b.call("POST", "/api/v1/portal/challenge", Some(json!({})), true).await;
    assert_eq!((status, problem(&v)), (403, "forbidden"));
    admin_api
        .post("/api/v1/accounts/ann/approve", &json!({}))
        .await
        .unwrap();
    let e = admin_api
        .post("/api/v1/accounts/ann/approve", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "not-found", "decided once");

    // CSRF: without the token, refused.
    let (status, v) = b.call("POST", "/api/v1/portal/challenge", Some(json!({})), false).await;
    assert_eq!((status, problem(&v)), (403, "csrf-rejected"));
    let (_, v) = b.call("POST", "/api/v1/portal/challenge", Some(json!({})), true).await;
    let challenge = v["challenge"].as_str().unwrap().to_string();

    // Proof of possession: another challenge's signature, a garbage key, then right.
    let (kp, spki) = browser_key();
    let before = ca.counts().await;
    for (body, want) in [
        (
            json!({ "challenge": challenge, "spki": spki, "signature": prove(&kp, "another") }),
            "invalid-proof",
        ),
        (
            json!({ "challenge": challenge, "spki": B64.encode(b"not a key"), "signature": prove(&kp, &challenge) }),
            "invalid-csr",
        ),
        (
            json!({ "challenge": challenge, "spki": spki, "signature": "%%%" }),
            "invalid-field",
        ),
    ] {
        let (status, v) = b.call("POST", "/api/v1/portal/enroll", Some(body), true).await;
        assert_eq!((status, problem(&v)), (400, want), "{v}");
    }
    assert_eq!(ca.counts().await, before, "refused enrollments write nothing");
    let body = json!({ "challenge": challenge, "spki": spki, "signature": prove(&kp, &challenge) });
    let (status, issued) = b.call("POST", "/api/v1/portal/enroll", Some(body.clone()), true).await;
    assert_eq!(status, 201, "{issued}");
    assert_eq!(
        issued["spiffe_id"],
        format!("spiffe://{}/participant/ann", "test.example")
    );
    assert!(issued["receipt"]["inclusion_proof"].is_array());
    // The challenge is one-time.
    let (status, v) = b.call("POST", "/api/v1/portal/enroll", Some(body), true).await;
    assert_eq!((status, problem(&v)), (409, "invalid-challenge"));

    // Own certificates, revoke one, and nobody else's.
    let (_, mine) = b.call("GET", "/api/v1/portal/certificates", None, false).await;
    assert_eq!(mine["items"].as_array().unwrap().len(), 1);
    let serial = issued["serial"].as_str().unwrap();
    let admin_serial = admin_api
        .get("/api/v1/certificates", &[("identity", "admin".into())])
        .await
        .unwrap()["items"][0]["serial"]
        .as_str()
        .unwrap()
        .to_string();
    let (status, v) = b
        .call(
            "POST",
            &format!("/api/v1/portal/certificates/{admin_serial}/revoke"),
            Some(json!({})),
            true,
        )
        .await;
    assert_eq!((status, problem(&v)), (404, "not-found"));
    let (status, v) = b
        .call(
            "POST",
            &format!("/api/v1/portal/certificates/{serial}/revoke"),
            Some(json!({ "reason": "keyCompromise" })),
            true,
        )
        .await;
    assert_eq!(status, 200, "{v}");
    let c = admin_api
        .get(&format!("/api/v1/certificates/{serial}"), &[])
        .await
        .unwrap();
    assert_eq!(
        (c["status"].as_str(), c["revocation_reason"].as_str()),
        (Some("revoked"), Some("keyCompromise"))
    );

    // Sign out ends the session.
    let (status, _) = b.call("POST", "/api/v1/portal/logout", Some(json!({})), true).await;
    assert_eq!(status, 204);
    let (_, v) = b.call("GET", "/api/v1/portal/me", None, false).await;
    assert_eq!(v["signed_in"], false);

    // Invitations: one use, approved at once; registrars may issue them, participants not.
    let inv = admin_api
        .post("/api/v1/invitations", &json!({ "uses": 1 }))
        .await
        .unwrap();
    let code = inv["code"].as_str().unwrap();
    let mut c2 = Browser::new(&ca);
    let (status, v) = c2
        .call(
            "POST",
            "/api/v1/portal/register",
            Some(json!({ "id": "ben", "name": "Ben", "email": "ben@example.org", "password": "correct horse battery", "invitation": code })),
            false,
        )
        .await;
    assert_eq!((status, v["state"].as_str()), (201, Some("approved")));
    assert!(admin_api.get("/api/v1/identities/ben", &[]).await.is_ok());
    let (status, v) = c2
        .call(
            "POST",
            "/api/v1/portal/register",
            Some(json!({ "id": "cy", "name": "Cy", "email": "cy@example.org", "password": "correct horse battery", "invitation": code })),
            false,
        )
        .await;
    assert_eq!((status, problem(&v)), (400, "invalid-field"));
    let p = ca.participant("pat").await;
    let e = ca
        .api(Some(&p))
        .post("/api/v1/invitations", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "forbidden");

    // Claiming a registered identity with its one-time secret; then the whole API as that
    // identity through the session (CSRF checked on writes).
    let secret = admin_api
        .post("/api/v1/identities/admin/secret", &json!({}))
        .await
        .unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let mut a = Browser::new(&ca);
    let claim = json!({ "id": "admin", "name": "Admin", "email": "admin@example.org", "password": "correct horse battery", "secret": "wrong" });
    let (status, v) = a
        .call("POST", "/api/v1/portal/register", Some(claim.clone()), false)
        .await;
    assert_eq!((status, problem(&v)), (401, "invalid-credentials"));
    let mut good_claim = claim.clone();
    good_claim["secret"] = json!(secret);
    let (status, v) = a
        .call("POST", "/api/v1/portal/register", Some(good_claim.clone()), false)
        .await;
    assert_eq!((status, v["state"].as_str()), (201, Some("approved")), "{v}");
    let (status, v) = a.call("POST", "/api/v1/portal/register", Some(good_claim), false).await;
    assert_eq!(status / 100, 4, "a secret claims once: {v}");
    let (_, v) = a
        .call(
            "POST",
            "/api/v1/portal/login",
            Some(json!({ "id": "admin", "password": "correct horse battery" })),
            false,
        )
        .await;
    a.csrf = v["csrf_token"].as_str().unwrap().to_string();
    let (status, v) = a.call("GET", "/api/v1/identities", None, false).await;
    assert_eq!(status, 200, "{v}");
    let (status, v) = a.call("POST", "/api/v1/invitations", Some(json!({})), false).await;
    assert_eq!((status, problem(&v)), (403, "csrf-rejected"));
    let (status, _) = a.call("POST", "/api/v1/invitations", Some(json!({})), true).await;
    assert_eq!(status, 201);
    // A participant's session has a participant's rights only.
    let mut ben = Browser::new(&ca);
    let (_, v) = ben
        .call(
            "POST",
            "/api/v1/portal/login",
            Some(json!({ "id": "ben", "password": "correct horse battery" })),
            false,
        )
        .await;
    ben.csrf = v["csrf_token"].as_str().unwrap().to_string();
    let (status, v) = ben.call("GET", "/api/v1/accounts", None, false).await;
    assert_eq!((status, problem(&v)), (403, "forbidden"));
    let (status, _) = ben.call("GET", "/api/v1/memberships", None, false).await;
    assert_eq!(status, 200);
}
