//! Trust boundaries between organisations, at the CA: every path into an identity ends with the
//! right party, and only it, able to act; strangers cannot lock owners out or occupy the hasher;
//! statements and metrics have their audience; connections that never finish a request are
//! closed. On SQLite or PostgreSQL (BSN_TEST_DATABASE).

use std::net::IpAddr;
use std::time::{Duration, Instant};

use bsn_tests::{Browser, TestCa, closed_within, new_csr, problem_slug as problem, raw_client, slug, tls_connect};
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

const PASSWORD: &str = "correct horse battery";

fn account(id: &str) -> Value {
    json!({ "id": id, "name": id, "email": format!("{id}@example.org"), "password": PASSWORD })
}

async fn identities(ca: &TestCa) -> i64 {
    use sqlx::Row;
    let mut c = ca.db_conn().await;
    sqlx::query("SELECT COUNT(*) AS n FROM identities")
        .fetch_one(&mut c)
        .await
        .unwrap()
        .get::<i64, _>("n")
}

/// What a session may do, as (status, problem) of: the API as its identity, a challenge, its
/// certificates.
async fn powers(b: &mut Browser) -> [(u16, String); 3] {
    let (s1, v1) = b.call("GET", "/api/v1/memberships", None, false).await;
    let (s2, v2) = b.call("POST", "/api/v1/portal/challenge", Some(json!({})), true).await;
    let (s3, v3) = b.call("GET", "/api/v1/portal/certificates", None, false).await;
    [
        (s1, problem(&v1).to_string()),
        (s2, problem(&v2).to_string()),
        (s3, problem(&v3).to_string()),
    ]
}

fn powerless() -> [(u16, String); 3] {
    [
        (403, "forbidden".to_string()),
        (403, "forbidden".to_string()),
        (403, "forbidden".to_string()),
    ]
}

/// Regression (critical): a pending self-registered account became whatever identity an
/// administrator later registered under its id, roles and all.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_path_into_an_identity_ends_with_the_right_party() {
    let mut ca = TestCa::start();
    let admin = ca.admin();
    let admin_api = ca.api(Some(&admin));

    // 1. Self-registration, pending: it signs in to see its status, and can do nothing else.
    let mut mallory = Browser::new(&ca);
    let (status, v) = mallory
        .call("POST", "/api/v1/portal/register", Some(account("victim")), false)
        .await;
    assert_eq!((status, v["state"].as_str()), (201, Some("pending")), "{v}");
    let (status, v) = mallory.sign_in("victim", PASSWORD).await;
    assert_eq!((status, v["state"].as_str()), (200, Some("pending")), "{v}");
    let (_, me) = mallory.call("GET", "/api/v1/portal/me", None, false).await;
    assert_eq!(
        (me["state"].as_str(), me["roles"].clone()),
        (Some("pending"), json!([]))
    );
    assert_eq!(powers(&mut mallory).await, powerless());

    // 2. An administrator registering the same id (an administrator, a node) is refused: the id
    //    is the account's. Nothing is written.
    let before = identities(&ca).await;
    for body in [
        json!({ "id": "victim", "roles": ["admin"] }),
        json!({ "id": "victim", "type": "node", "dns_names": ["localhost"] }),
        json!({ "id": "victim" }),
    ] {
        let e = admin_api.post("/api/v1/identities", &body).await.unwrap_err();
        assert_eq!(slug(&e), "id-reserved", "{body}");
    }
    let out = ca.bsn(&[
        "register",
        "--cert",
        admin.join("cert.pem").to_str().unwrap(),
        "--key",
        admin.join("key.pem").to_str().unwrap(),
        "--id",
        "victim",
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("portal account holds the id"));
    assert_eq!(identities(&ca).await, before, "no identity was registered");
    assert_eq!(powers(&mut mallory).await, powerless());

    // 3. An identity inserted behind the API's back (as a racing replica could) never binds the
    //    pending account: approval then refuses, and the session stays powerless.
    {
        let mut c = ca.db_conn().await;
        sqlx::query(
            "INSERT INTO identities (id, kind, roles, attributes, dns_names, ip_addresses, status, enrollments_left, \
             registered_by, created_at) VALUES ('victim', 'participant', '[\"admin\"]', '{}', '[]', '[]', 'active', 0, 'admin', 0)",
        )
        .execute(&mut c)
        .await
        .unwrap();
    }
    assert_eq!(powers(&mut mallory).await, powerless());
    let (_, me) = mallory.call("GET", "/api/v1/portal/me", None, false).await;
    assert_eq!(
        me["roles"],
        json!([]),
        "a pending account learns nothing of the identity"
    );
    let e = admin_api
        .post("/api/v1/accounts/victim/approve", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "identity-exists");
    assert_eq!(powers(&mut mallory).await, powerless());
    // Rejected: still powerless, and the id stays reserved.
    admin_api
        .post("/api/v1/accounts/victim/reject", &json!({}))
        .await
        .unwrap();
    assert_eq!(mallory.sign_in("victim", PASSWORD).await.0, 403);
    assert_eq!(powers(&mut mallory).await, powerless(), "the old session too");

    // 4. Self-registration then approval: the identity is created with no roles, and the
    //    account acts as it.
    let mut ann = Browser::new(&ca);
    ann.call("POST", "/api/v1/portal/register", Some(account("ann")), false)
        .await;
    ann.sign_in("ann", PASSWORD).await;
    assert_eq!(powers(&mut ann).await, powerless());
    admin_api
        .post("/api/v1/accounts/ann/approve", &json!({}))
        .await
        .unwrap();
    let p = powers(&mut ann).await;
    assert_eq!((p[0].0, p[1].0, p[2].0), (200, 200, 200), "{p:?}");
    assert_eq!(
        admin_api.get("/api/v1/identities/ann", &[]).await.unwrap()["roles"],
        json!([])
    );
    let (status, v) = ann.call("GET", "/api/v1/accounts", None, false).await;
    assert_eq!((status, problem(&v)), (403, "forbidden"), "no roles");

    // 5. An administrator registers first (with a role): self-registration under that id is
    //    refused; a claim needs the identity's secret, and then acts with its role.
    let secret = admin_api
        .post("/api/v1/identities", &json!({ "id": "pub1", "roles": ["publisher"] }))
        .await
        .unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let mut eve = Browser::new(&ca);
    let (status, v) = eve
        .call("POST", "/api/v1/portal/register", Some(account("pub1")), false)
        .await;
    assert_eq!((status, problem(&v)), (409, "conflict"), "{v}");
    let mut claim = account("pub1");
    claim["secret"] = json!("wrong-secret");
    let (status, v) = eve
        .call("POST", "/api/v1/portal/register", Some(claim.clone()), false)
        .await;
    assert_eq!((status, problem(&v)), (401, "invalid-credentials"));
    let mut owner = Browser::new(&ca);
    claim["secret"] = json!(secret);
    let (status, v) = owner.call("POST", "/api/v1/portal/register", Some(claim), false).await;
    assert_eq!((status, v["state"].as_str()), (201, Some("approved")), "{v}");
    owner.sign_in("pub1", PASSWORD).await;
    let (_, me) = owner.call("GET", "/api/v1/portal/me", None, false).await;
    assert_eq!(
        me["roles"],
        json!(["publisher"]),
        "the claimant acts with the identity's role"
    );
    let p = powers(&mut owner).await;
    assert_eq!(p[0].0, 200, "{p:?}");

    // 6. Node identities are never reachable through the portal: not by registering, not by
    //    claiming with the node's own secret.
    let node_secret = admin_api
        .post(
            "/api/v1/identities",
            &json!({ "id": "n9", "type": "node", "dns_names": ["localhost"] }),
        )
        .await
        .unwrap()["secret"]
        .as_str()
        .unwrap()
        .to_string();
    let mut n = Browser::new(&ca);
    let (status, _) = n
        .call("POST", "/api/v1/portal/register", Some(account("n9")), false)
        .await;
    assert_eq!(status, 409);
    let mut claim = account("n9");
    claim["secret"] = json!(node_secret);
    let (status, v) = n.call("POST", "/api/v1/portal/register", Some(claim), false).await;
    assert_eq!((status, problem(&v)), (403, "forbidden"), "{v}");
    assert_eq!(n.sign_in("n9", PASSWORD).await.0, 401);

    // 7. An invitation code: approved at once as a new participant without roles.
    let code = admin_api.post("/api/v1/invitations", &json!({})).await.unwrap()["code"]
        .as_str()
        .unwrap()
        .to_string();
    let mut ivy = Browser::new(&ca);
    let mut body = account("ivy");
    body["invitation"] = json!(code);
    let (status, v) = ivy.call("POST", "/api/v1/portal/register", Some(body), false).await;
    assert_eq!((status, v["state"].as_str()), (201, Some("approved")));
    ivy.sign_in("ivy", PASSWORD).await;
    let p = powers(&mut ivy).await;
    assert_eq!((p[0].0, p[1].0, p[2].0), (200, 200, 200), "{p:?}");
    let (status, _) = ivy.call("GET", "/api/v1/identities", None, false).await;
    assert_eq!(status, 403, "an invited participant has no roles");
}

/// Registrations are limited per address (each costs argon2id hashes); another address is not.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn public_registration_is_rate_limited_per_address() {
    let ca = TestCa::start();
    let mut from_a = Browser::from_address(&ca, Some("127.0.0.2".parse().unwrap()));
    for i in 0..10 {
        let (status, v) = from_a
            .call(
                "POST",
                "/api/v1/portal/register",
                Some(account(&format!("r{i}"))),
                false,
            )
            .await;
        assert_eq!(status, 201, "{v}");
    }
    let (status, v) = from_a
        .call("POST", "/api/v1/portal/register", Some(account("r10")), false)
        .await;
    assert_eq!((status, problem(&v)), (429, "too-many-attempts"), "{v}");
    let mut from_b = Browser::from_address(&ca, Some("127.0.0.3".parse().unwrap()));
    let (status, _) = from_b
        .call("POST", "/api/v1/portal/register", Some(account("r11")), false)
        .await;
    assert_eq!(status, 201);
    let admin_view: i64 = {
        use sqlx::Row;
        let mut c = ca.db_conn().await;
        sqlx::query("SELECT COUNT(*) AS n FROM accounts WHERE identity_id = 'r10'")
            .fetch_one(&mut c)
            .await
            .unwrap()
            .get("n")
    };
    assert_eq!(admin_view, 0, "the refused registration wrote nothing");
    // A weak password is refused with the reason.
    let mut weak = account("weak");
    weak["password"] = json!("password1234");
    let (status, v) = from_b.call("POST", "/api/v1/portal/register", Some(weak), false).await;
    assert_eq!((status, problem(&v)), (400, "invalid-field"));
    assert!(v["detail"].as_str().unwrap().contains("too easy to guess"), "{v}");
}

/// Regression: five wrong passwords from anywhere refused the owner's right password.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failures_from_other_addresses_do_not_lock_the_owner_out() {
    let mut ca = TestCa::start();
    let admin = ca.admin();
    let code = ca
        .api(Some(&admin))
        .post("/api/v1/invitations", &json!({}))
        .await
        .unwrap()["code"]
        .as_str()
        .unwrap()
        .to_string();
    let owner_ip: IpAddr = "127.0.0.1".parse().unwrap();
    let mut owner = Browser::from_address(&ca, Some(owner_ip));
    let mut body = account("olga");
    body["invitation"] = json!(code);
    owner.call("POST", "/api/v1/portal/register", Some(body), false).await;
    assert_eq!(owner.sign_in("olga", PASSWORD).await.0, 200);
    // An attacker at three other addresses guesses until it is refused at each.
    for a in 2..5u8 {
        let mut attacker = Browser::from_address(&ca, Some(IpAddr::from([127, 0, 1, a])));
        let mut refused = false;
        for _ in 0..8 {
            let (status, v) = attacker.sign_in("olga", "wrong password guess").await;
            if status == 429 {
                assert_eq!(problem(&v), "too-many-attempts");
                refused = true;
            }
        }
        assert!(refused, "the attacker's address is limited");
    }
    let (status, v) = owner.sign_in("olga", PASSWORD).await;
    assert_eq!(status, 200, "the owner still signs in: {v}");
}

/// A wrong-secret flood from one address is cut off before hashing; another address enrolls.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wrong_secret_flood_is_limited_per_address() {
    let mut ca = TestCa::start();
    let secret = ca.register("good", json!({})).await;
    let flood = raw_client(&ca, None, Some("127.0.0.9".parse().unwrap()));
    let mut statuses = Vec::new();
    for _ in 0..14 {
        let r = flood
            .post(format!("{}/api/v1/enroll", ca.url))
            .json(&json!({ "id": "good", "secret": "wrong", "csr": new_csr() }))
            .send()
            .await
            .unwrap();
        statuses.push(r.status().as_u16());
    }
    assert!(statuses.iter().take(10).all(|s| *s == 401), "{statuses:?}");
    assert_eq!(statuses.last(), Some(&429), "{statuses:?}");
    // The limited address is refused even with the right secret until it may try again (the
    // refusal costs no hash), and another address enrolls at once.
    let r = flood
        .post(format!("{}/api/v1/enroll", ca.url))
        .json(&json!({ "id": "good", "secret": secret, "csr": new_csr() }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 429);
    assert!(r.headers().get("retry-after").is_some());
    let other = raw_client(&ca, None, Some("127.0.0.10".parse().unwrap()));
    let r = other
        .post(format!("{}/api/v1/enroll", ca.url))
        .json(&json!({ "id": "good", "secret": secret, "csr": new_csr() }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "{}", r.text().await.unwrap());
}

/// Statements have the member list's audience; metrics are for operators; one CSR block only;
/// HSTS on every response.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn statements_metrics_csr_and_hsts() {
    let mut ca = TestCa::start();
    let admin = ca.admin();
    let admin_api = ca.api(Some(&admin));
    ca.register("sn1", json!({ "type": "node", "dns_names": ["localhost"] }))
        .await;
    admin_api
        .post(
            "/api/v1/subchains",
            &json!({ "id": "secretchain", "name": "S", "nodes": ["sn1"], "policy": "approval" }),
        )
        .await
        .unwrap();
    let member = ca.participant("member").await;
    admin_api
        .put(
            "/api/v1/subchains/secretchain/members/member",
            &json!({ "role": "reader" }),
        )
        .await
        .unwrap();
    let stranger = ca.participant("stranger").await;
    let auditor_secret = ca.register("aud", json!({ "roles": ["auditor"] })).await;
    let aud_dir = ca.dir.path().join("aud");
    assert!(ca.bsn_enroll("aud", &auditor_secret, &aud_dir).status.success());
    for path in [
        "/api/v1/subchains/secretchain/statement",
        "/api/v1/subchains/secretchain/statements/2",
        "/api/v1/subchains/secretchain/members",
    ] {
        let e = ca.api(Some(&stranger)).get(path, &[]).await.unwrap_err();
        assert_eq!(slug(&e), "forbidden", "{path}");
        for who in [&member, &aud_dir, &admin] {
            ca.api(Some(who))
                .get(path, &[])
                .await
                .unwrap_or_else(|e| panic!("{path}: {e}"));
        }
    }

    // Metrics: administrators and auditors only.
    let anon = raw_client(&ca, None, None);
    let r = anon.get(format!("{}/metrics", ca.url)).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let e = ca.api(Some(&stranger)).get_bytes("/metrics").await.unwrap_err();
    assert_eq!(slug(&e), "forbidden");
    for who in [&admin, &aud_dir] {
        let text = String::from_utf8(ca.api(Some(who)).get_bytes("/metrics").await.unwrap()).unwrap();
        assert!(text.contains("bsn_ca_connections_open "), "{text}");
    }

    // Two concatenated CSR blocks are refused.
    let secret = ca.register("twice", json!({})).await;
    let csr = new_csr();
    let e = ca
        .api(None)
        .post(
            "/api/v1/enroll",
            &json!({ "id": "twice", "secret": secret, "csr": format!("{csr}{}", new_csr()) }),
        )
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "invalid-csr");

    // HSTS on the portal's pages and the API.
    for path in ["/", "/signin", "/api/v1/trust-bundle", "/nope"] {
        let r = anon.get(format!("{}{path}", ca.url)).send().await.unwrap();
        assert_eq!(
            r.headers()
                .get("strict-transport-security")
                .map(|v| v.to_str().unwrap()),
            Some("max-age=63072000"),
            "{path}"
        );
    }
}

/// `metrics_access = "public"` opens `/metrics` to anyone (an operator's choice).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn metrics_can_be_made_public() {
    let ca = TestCa::start_with(&[("BSN_CA_METRICS_ACCESS", "public")]);
    let r = raw_client(&ca, None, None)
        .get(format!("{}/metrics", ca.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

/// Regression: silent, half-sent and idle connections stayed open indefinitely, and one address
/// could hold thousands.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_half_sent_and_idle_connections_are_closed() {
    let mut ca = TestCa::start_with(&[
        ("BSN_CA_HANDSHAKE_TIMEOUT", "2s"),
        ("BSN_CA_HEADER_TIMEOUT", "2s"),
        ("BSN_CA_IDLE_TIMEOUT", "3s"),
        ("BSN_CA_BODY_TIMEOUT", "2s"),
        ("BSN_CA_MAX_CONNECTIONS_PER_ADDRESS", "20"),
    ]);
    let admin = ca.admin();
    let addr = ca.url.trim_start_matches("https://").to_string();
    // No handshake at all.
    let mut silent = tokio::net::TcpStream::connect(&addr).await.unwrap();
    let took = closed_within(&mut silent, Duration::from_secs(6)).await;
    assert!(took >= Duration::from_millis(1500), "not before the deadline: {took:?}");
    // Handshake, then half a request's headers.
    let mut half = tls_connect(&ca, &ca.url, None, true).await;
    half.write_all(b"GET /api/v1/trust-bundle HTTP/1.1\r\nHost: localhost\r\n")
        .await
        .unwrap();
    closed_within(&mut half, Duration::from_secs(6)).await;
    // Headers sent, body trickling: refused when the body deadline passes.
    let mut body = tls_connect(&ca, &ca.url, None, true).await;
    body.write_all(
        b"POST /api/v1/enroll HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\nContent-Length: 1000\r\n\r\n{",
    )
    .await
    .unwrap();
    let t = Instant::now();
    let mut resp = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(8), body.read_to_end(&mut resp)).await;
    assert!(t.elapsed() < Duration::from_secs(8), "the slow body was not cut");
    // Authenticated, one request, then idle.
    let mut idle = tls_connect(&ca, &ca.url, Some(&admin), true).await;
    idle.write_all(b"GET /api/v1/identities/admin HTTP/1.1\r\nHost: localhost\r\n\r\n")
        .await
        .unwrap();
    let took = closed_within(&mut idle, Duration::from_secs(8)).await;
    assert!(
        took >= Duration::from_millis(2500),
        "idle deadline, not sooner: {took:?}"
    );

    // Per address: 20 held from 127.0.0.7; the 21st to 25th are closed at once; 127.0.0.1 is
    // still served.
    let mut held = Vec::new();
    for _ in 0..25 {
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind("127.0.0.7:0".parse().unwrap()).unwrap();
        held.push(sock.connect(addr.parse().unwrap()).await.unwrap());
    }
    let mut reads = tokio::task::JoinSet::new();
    for mut s in held.drain(..) {
        reads.spawn(async move {
            let mut b = [0u8; 1];
            let closed = matches!(
                tokio::time::timeout(Duration::from_millis(500), s.read(&mut b)).await,
                Ok(Ok(0)) | Ok(Err(_))
            );
            (closed, s)
        });
    }
    let mut closed_at_once = 0;
    while let Some(r) = reads.join_next().await {
        let (closed, s) = r.unwrap();
        closed_at_once += usize::from(closed);
        held.push(s);
    }
    assert_eq!(
        closed_at_once, 5,
        "connections over the per-address cap are closed at once"
    );
    ca.api(None).get_bytes("/api/v1/trust-bundle").await.unwrap();
    drop(held);
    let text = String::from_utf8(ca.api(Some(&admin)).get_bytes("/metrics").await.unwrap()).unwrap();
    let timed_out: u64 = text
        .lines()
        .find_map(|l| l.strip_prefix("bsn_ca_connections_timed_out_total "))
        .unwrap()
        .parse()
        .unwrap();
    assert!(timed_out >= 3, "{text}");
}

/// One node identity cannot take every feed stream.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn feed_streams_are_capped_per_node_identity() {
    let mut ca = TestCa::start();
    let secret = ca
        .register("fnode", json!({ "type": "node", "dns_names": ["localhost"] }))
        .await;
    let dir = ca.dir.path().join("fnode");
    assert!(ca.bsn_enroll("fnode", &secret, &dir).status.success());
    let api = ca.api(Some(&dir));
    let mut open = Vec::new();
    for _ in 0..4 {
        open.push(api.events("/api/v1/feed/stream", &[]).await.expect("within the cap"));
    }
    let e = api
        .events("/api/v1/feed/stream", &[])
        .await
        .err()
        .expect("over the cap");
    assert_eq!(slug(&e), "too-many-attempts");
    drop(open.pop());
    bsn_tests::eventually("a stream slot to come back", Duration::from_secs(10), || async {
        api.events("/api/v1/feed/stream", &[]).await.ok().map(|_| ())
    })
    .await;
}
