//! The CA driven by the `bsn` command line, as participants, registrars and operators use it.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use bsn_tests::{PASSPHRASE, TestCa, bin};
use serde_json::json;

fn stdout(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}
fn stderr(o: &std::process::Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}
fn field(o: &std::process::Output, prefix: &str) -> String {
    stdout(o)
        .lines()
        .find_map(|l| l.strip_prefix(prefix))
        .unwrap_or_else(|| panic!("no '{prefix}' in {}", stdout(o)))
        .trim()
        .to_string()
}
fn leaf(dir: &std::path::Path) -> identity::profile::Leaf {
    let pem = std::fs::read(dir.join("cert.pem")).unwrap();
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::pem_slice_iter(&pem)
        .next()
        .unwrap()
        .unwrap();
    identity::profile::check_leaf(&der).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn enroll_register_renew_revoke_with_bsn() {
    let mut ca = TestCa::start();
    let admin = ca.admin();
    let mode = std::fs::metadata(admin.join("key.pem")).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "key.pem must be private");
    assert_eq!(
        leaf(&admin).spiffe_id.to_string(),
        "spiffe://test.example/participant/admin"
    );

    let me = |d: &std::path::Path| {
        vec![
            d.join("cert.pem").display().to_string(),
            d.join("key.pem").display().to_string(),
        ]
    };
    let a = me(&admin);
    let reg = ca.bsn(&[
        "register", "--cert", &a[0], "--key", &a[1], "--id", "alice", "--attr", "org=acme",
    ]);
    assert!(reg.status.success(), "{}", stderr(&reg));
    let secret = field(&reg, "enrollment secret:");

    let alice = ca.dir.path().join("alice");
    let out = ca.bsn_enroll("alice", &secret, &alice);
    assert!(out.status.success(), "{}", stderr(&out));
    let first = leaf(&alice);
    assert_eq!(first.spiffe_id.to_string(), "spiffe://test.example/participant/alice");
    assert_eq!(field(&out, "serial:"), first.serial_hex);
    assert_eq!(
        first.not_after - first.not_before,
        90 * 86400 + 60,
        "participants get 90 days (+60 s backdating)"
    );

    // The secret was for one use.
    let again = ca.bsn_enroll("alice", &secret, &ca.dir.path().join("a2"));
    assert_eq!(again.status.code(), Some(3), "{}", stderr(&again));
    assert!(
        stderr(&again).contains("used up") && stderr(&again).contains("hint:"),
        "{}",
        stderr(&again)
    );

    // Renew keeping the key, then with a new key.
    let al = me(&alice);
    let key_before = std::fs::read(alice.join("key.pem")).unwrap();
    let r1 = ca.bsn(&["renew", "--cert", &al[0], "--key", &al[1]]);
    assert!(r1.status.success(), "{}", stderr(&r1));
    let second = leaf(&alice);
    assert_ne!(second.serial_hex, first.serial_hex);
    assert_eq!(second.spiffe_id, first.spiffe_id);
    assert_eq!(
        std::fs::read(alice.join("key.pem")).unwrap(),
        key_before,
        "plain renew keeps the key"
    );
    let r2 = ca.bsn(&[
        "renew",
        "--cert",
        &al[0],
        "--key",
        &al[1],
        "--rekey",
        "--key-type",
        "ed25519",
    ]);
    assert!(r2.status.success(), "{}", stderr(&r2));
    assert_ne!(
        std::fs::read(alice.join("key.pem")).unwrap(),
        key_before,
        "--rekey makes a new key"
    );
    let third = leaf(&alice);

    // Alice sees her own three certificates and nobody else's.
    let list = ca.bsn(&["certificates", "--cert", &al[0], "--key", &al[1]]);
    assert!(list.status.success(), "{}", stderr(&list));
    let lines: Vec<String> = stdout(&list).lines().map(String::from).collect();
    assert_eq!(lines.len(), 4, "a header and three certificates: {lines:?}");
    assert!(lines[0].starts_with("SERIAL "), "{lines:?}");
    assert!(
        lines[1..].iter().all(|l| l.split_whitespace().nth(1) == Some("alice")
            && l.split_whitespace().nth(2) == Some("valid")
            && l.contains(" UTC ")),
        "{lines:?}"
    );
    let json = ca.bsn(&["certificates", "--cert", &al[0], "--key", &al[1], "--json"]);
    let items: Vec<bsn_api::ca::Certificate> = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(items.len(), 3);
    let others = ca.bsn(&["certificates", "--cert", &al[0], "--key", &al[1], "--identity", "admin"]);
    assert_eq!(others.status.code(), Some(3));

    // Alice revokes her current certificate; it can no longer renew.
    let rv = ca.bsn(&[
        "revoke",
        "--cert",
        &al[0],
        "--key",
        &al[1],
        "--serial",
        &third.serial_hex.to_uppercase(),
        "--reason",
        "keyCompromise",
    ]);
    assert!(rv.status.success(), "{}", stderr(&rv));
    assert!(stdout(&rv).contains("keyCompromise"));
    let dead = ca.bsn(&["renew", "--cert", &al[0], "--key", &al[1]]);
    assert_eq!(dead.status.code(), Some(3));
    assert!(stderr(&dead).contains("revoked"), "{}", stderr(&dead));

    let listed = ca.bsn(&[
        "certificates",
        "--cert",
        &a[0],
        "--key",
        &a[1],
        "--identity",
        "alice",
        "--status",
        "revoked",
    ]);
    assert_eq!(stdout(&listed).lines().count(), 2, "{}", stdout(&listed));
    assert!(stdout(&listed).contains(&third.serial_hex));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn cli_errors_say_what_to_do() {
    let mut ca = TestCa::start();
    let admin = ca.admin();
    // Unreachable CA.
    let out = Command::new(bin("bsn"))
        .args(["enroll", "--id", "x", "--secret", "y", "--out"])
        .arg(ca.dir.path().join("x"))
        .args(["--ca", "https://127.0.0.1:1", "--ca-bundle"])
        .arg(&ca.bundle)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5));
    assert!(stderr(&out).contains("hint: check --ca"), "{}", stderr(&out));
    // Wrong secret.
    let out = ca.bsn_enroll("nobody", "wrong", &ca.dir.path().join("n"));
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("wrong enrollment secret"), "{}", stderr(&out));
    // Refusing to overwrite a key.
    let out = ca.bsn_enroll("admin", "x", &admin);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--force"), "{}", stderr(&out));
    // A participant without roles cannot register.
    let p = ca.participant("plain").await;
    let (c, k) = (p.join("cert.pem"), p.join("key.pem"));
    let out = ca.bsn(&[
        "register",
        "--cert",
        c.to_str().unwrap(),
        "--key",
        k.to_str().unwrap(),
        "--id",
        "x2",
    ]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("admin, registrar"), "{}", stderr(&out));
    // Unknown revocation reason.
    let serial = leaf(&p).serial_hex;
    let out = ca.bsn(&[
        "revoke",
        "--cert",
        c.to_str().unwrap(),
        "--key",
        k.to_str().unwrap(),
        "--serial",
        &serial,
        "--reason",
        "certificateHold",
    ]);
    assert_eq!(out.status.code(), Some(4));
    assert!(
        stderr(&out).contains("keyCompromise"),
        "lists the accepted reasons: {}",
        stderr(&out)
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrars_register_participants_only() {
    let mut ca = TestCa::start();
    let admin = ca.admin();
    let secret = ca.register("reg", json!({ "roles": ["registrar"] })).await;
    let reg = ca.dir.path().join("reg");
    let out = ca.bsn_enroll("reg", &secret, &reg);
    assert!(out.status.success(), "{}", stderr(&out));
    let api = ca.api(Some(&reg));
    let v = api.post("/api/v1/identities", &json!({ "id": "p1" })).await.unwrap();
    assert_eq!(v["spiffe_id"], "spiffe://test.example/participant/p1");
    for bad in [
        json!({ "id": "n1", "type": "node" }),
        json!({ "id": "p2", "roles": ["admin"] }),
    ] {
        let e = api.post("/api/v1/identities", &bad).await.unwrap_err();
        assert_eq!(bsn_tests::slug(&e), "forbidden", "{bad}");
    }
    let listed = api.get("/api/v1/identities", &[]).await.unwrap();
    let ids: Vec<&str> = listed["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| i["id"].as_str().unwrap())
        .collect();
    assert_eq!(ids, vec!["p1"], "a registrar sees only whom it registered");
    // Admins may register nodes with host names; their certificates carry them.
    let admin_api = ca.api(Some(&admin));
    let v = admin_api
        .post(
            "/api/v1/identities",
            &json!({ "id": "city1", "type": "node", "dns_names": ["city1.example"], "ip_addresses": ["10.1.2.3"] }),
        )
        .await
        .unwrap();
    let node = ca.dir.path().join("city1");
    let out = ca.bsn(&[
        "enroll",
        "--id",
        "city1",
        "--secret",
        v["secret"].as_str().unwrap(),
        "--out",
        node.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = Command::new("openssl")
        .args(["x509", "-noout", "-text", "-in"])
        .arg(node.join("cert.pem"))
        .output()
        .unwrap();
    let text = stdout(&text);
    assert!(
        text.contains("DNS:city1.example") && text.contains("IP Address:10.1.2.3"),
        "{text}"
    );
    assert!(text.contains("URI:spiffe://test.example/node/city1"), "{text}");
    assert_eq!(
        leaf(&node).not_after - leaf(&node).not_before,
        30 * 86400 + 60,
        "nodes get 30 days"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn init_refuses_to_overwrite_and_serve_needs_the_passphrase() {
    let ca = TestCa::start();
    let again = Command::new(bin("ca-server"))
        .args(["init", "--data-dir"])
        .arg(ca.data_dir())
        .args(["--trust-domain", "other.example"])
        .env("BSN_CA_PASSPHRASE", PASSPHRASE)
        .output()
        .unwrap();
    assert!(!again.status.success());
    assert!(stderr(&again).contains("refusing to overwrite"), "{}", stderr(&again));

    let wrong = Command::new(bin("ca-server"))
        .args(["serve", "--data-dir"])
        .arg(ca.data_dir())
        .args(["--listen", "127.0.0.1:0"])
        .args(ca.db.url.iter().flat_map(|u| ["--database-url".to_string(), u.clone()]))
        .env("BSN_CA_PASSPHRASE", "not-the-passphrase")
        .output()
        .unwrap();
    assert!(!wrong.status.success());
    assert!(stderr(&wrong).contains("wrong passphrase"), "{}", stderr(&wrong));

    let none = Command::new(bin("ca-server"))
        .args(["init", "--data-dir"])
        .arg(ca.dir.path().join("fresh"))
        .args(["--trust-domain", "x.example"])
        .env_remove("BSN_CA_PASSPHRASE")
        .output()
        .unwrap();
    assert!(!none.status.success());
    assert!(stderr(&none).contains("BSN_CA_PASSPHRASE"), "{}", stderr(&none));
    assert!(!ca.dir.path().join("fresh/ca.toml").exists());

    // Keys at rest are sealed, not PEM.
    let sealed = std::fs::read_to_string(ca.data_dir().join("intermediate.key.sealed")).unwrap();
    assert!(sealed.contains("argon2id") && !sealed.contains("PRIVATE KEY"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lost_secrets_disabled_identities_and_admin_recovery() {
    let mut ca = TestCa::start();
    // Operator recovery: a new admin secret replaces the one init printed.
    let mut cmd = Command::new(bin("ca-server"));
    cmd.args(["admin-secret", "--data-dir"]).arg(ca.data_dir());
    if let Some(u) = &ca.db.url {
        cmd.args(["--database-url", u]);
    }
    let out = cmd.output().unwrap();
    assert!(out.status.success(), "{}", stderr(&out));
    let new_admin_secret = field(&out, "admin enrollment secret:");
    let old = ca.bsn_enroll("admin", &ca.admin_secret, &ca.dir.path().join("old"));
    assert_eq!(old.status.code(), Some(3), "the replaced secret no longer works");
    ca.admin_secret = new_admin_secret;
    let admin = ca.admin();
    let a = [
        admin.join("cert.pem").display().to_string(),
        admin.join("key.pem").display().to_string(),
    ];

    // A lost secret is replaced; the old one stops working.
    let lost = ca.register("frank", json!({})).await;
    let reset = ca.bsn(&["reset-secret", "--cert", &a[0], "--key", &a[1], "--id", "frank"]);
    assert!(reset.status.success(), "{}", stderr(&reset));
    let fresh = field(&reset, "enrollment secret:");
    let frank = ca.dir.path().join("frank");
    let out = ca.bsn_enroll("frank", &lost, &frank);
    assert_eq!(out.status.code(), Some(3));
    let out = ca.bsn_enroll("frank", &fresh, &frank);
    assert!(out.status.success(), "{}", stderr(&out));
    let f = [
        frank.join("cert.pem").display().to_string(),
        frank.join("key.pem").display().to_string(),
    ];

    // Disabled: no renewal, no API; enabled again: renewal works.
    let out = ca.bsn(&["disable", "--cert", &a[0], "--key", &a[1], "--id", "frank"]);
    assert!(
        out.status.success() && stdout(&out).contains("frank is now disabled"),
        "{}",
        stderr(&out)
    );
    let out = ca.bsn(&["renew", "--cert", &f[0], "--key", &f[1]]);
    assert_eq!(out.status.code(), Some(3));
    assert!(stderr(&out).contains("disabled"), "{}", stderr(&out));
    let out = ca.bsn(&["certificates", "--cert", &f[0], "--key", &f[1]]);
    assert_eq!(out.status.code(), Some(3));
    let out = ca.bsn(&["enable", "--cert", &a[0], "--key", &a[1], "--id", "frank"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = ca.bsn(&["renew", "--cert", &f[0], "--key", &f[1]]);
    assert!(out.status.success(), "{}", stderr(&out));

    // Bad input: unknown identity, self-disable, a registrar reaching beyond its own.
    let out = ca.bsn(&["disable", "--cert", &a[0], "--key", &a[1], "--id", "nobody"]);
    assert_eq!(out.status.code(), Some(4));
    let out = ca.bsn(&["disable", "--cert", &a[0], "--key", &a[1], "--id", "admin"]);
    assert_eq!(out.status.code(), Some(3));
    let reg_secret = ca.register("reg", json!({ "roles": ["registrar"] })).await;
    let reg = ca.dir.path().join("reg");
    assert!(ca.bsn_enroll("reg", &reg_secret, &reg).status.success());
    let r = [
        reg.join("cert.pem").display().to_string(),
        reg.join("key.pem").display().to_string(),
    ];
    let before = ca.db_counts().await;
    let out = ca.bsn(&["reset-secret", "--cert", &r[0], "--key", &r[1], "--id", "frank"]);
    assert_eq!(
        out.status.code(),
        Some(4),
        "frank was registered by admin, not by reg: {}",
        stderr(&out)
    );
    let out = ca.bsn(&["disable", "--cert", &r[0], "--key", &r[1], "--id", "frank"]);
    assert_eq!(out.status.code(), Some(3), "only administrators disable");
    assert_eq!(ca.db_counts().await, before);
    // Frank's secret was not replaced by the refused call: his identity still shows it used up.
    let v = ca.api(Some(&admin)).get("/api/v1/identities/frank", &[]).await.unwrap();
    assert_eq!(v["enrollments_left"], 0);
    assert_eq!(v["status"], "active");
}

/// Usage mistakes are caught before anything is sent: exit 2 and what to write instead.
#[test]
fn usage_mistakes_exit_2_with_a_hint() {
    let run = |args: &[&str]| {
        let out = std::process::Command::new(bsn_tests::bin("bsn"))
            .args(args)
            .env_remove("BSN_CA")
            .env_remove("BSN_NODE")
            .output()
            .unwrap();
        (out.status.code(), String::from_utf8_lossy(&out.stderr).into_owned())
    };
    let node = [
        "--node",
        "https://127.0.0.1:1",
        "--subchain",
        "demo",
        "--ca-bundle",
        "b.pem",
        "--cert",
        "c.pem",
        "--key",
        "k.pem",
    ];
    let mut put_ab = vec!["tx", "submit", "--put", "ab"];
    put_ab.extend(node);
    let (code, err) = run(&put_ab);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("write KEY=VALUE"), "{err}");
    let mut nothing = vec!["tx", "submit"];
    nothing.extend(node);
    let (code, err) = run(&nothing);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("--put"), "{err}");
    let (code, err) = run(&["nodes", "--ca", "http://127.0.0.1:8443", "--ca-bundle", "b.pem"]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("use https://127.0.0.1:8443"), "{err}");
    let (code, err) = run(&[
        "query",
        "info",
        "--node",
        "http://127.0.0.1:9443",
        "--subchain",
        "demo",
        "--ca-bundle",
        "b.pem",
        "--cert",
        "c.pem",
        "--key",
        "k.pem",
    ]);
    assert_eq!(code, Some(2), "{err}");
    assert!(err.contains("only HTTPS"), "{err}");
}

/// `bsn renew --rekey` says the previous certificate stays valid and how to revoke it; with
/// --revoke-previous it is revoked in the same step, and says so.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn renew_with_a_new_key_says_what_became_of_the_previous_certificate() {
    let mut ca = TestCa::start();
    let admin = ca.admin();
    let bob = ca.participant("bob").await;
    let cert = bob.join("cert.pem").display().to_string();
    let key = bob.join("key.pem").display().to_string();
    let first = leaf(&bob);
    let out = ca.bsn(&["renew", "--rekey", "--cert", &cert, "--key", &key]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(
        text.contains(&format!(
            "the previous certificate {} stays valid until",
            first.serial_hex
        )) && text.contains(&format!(
            "bsn revoke --serial {} --reason keyCompromise",
            first.serial_hex
        )),
        "{text}"
    );
    let second = leaf(&bob);
    let out = ca.bsn(&[
        "renew",
        "--rekey",
        "--revoke-previous",
        "--key-compromised",
        "--cert",
        &cert,
        "--key",
        &key,
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains(&format!(
            "revoked the previous certificate {} (keyCompromise)",
            second.serial_hex
        )),
        "{}",
        stdout(&out)
    );
    let v = ca
        .api(Some(&admin))
        .get(&format!("/api/v1/certificates/{}", second.serial_hex), &[])
        .await
        .unwrap();
    assert_eq!(v["status"], "revoked", "{v}");
    // The new certificate works.
    let v = ca.api(Some(&bob)).get("/api/v1/memberships", &[]).await.unwrap();
    assert!(v["items"].is_array());
}

/// An administrator who works from a terminal decides portal registrations and makes
/// invitation codes without the portal; listings have a header and `--json`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn registrations_and_invitations_from_the_command_line() {
    let mut ca = TestCa::start();
    let admin = ca.admin();
    let carol = ca.participant("carol").await;
    let c = [
        carol.join("cert.pem").display().to_string(),
        carol.join("key.pem").display().to_string(),
    ];
    let a = [
        admin.join("cert.pem").display().to_string(),
        admin.join("key.pem").display().to_string(),
    ];
    let as_admin = |args: &[&str]| {
        let mut v: Vec<&str> = args.to_vec();
        v.extend(["--cert", &a[0], "--key", &a[1]]);
        ca.bsn(&v)
    };
    let mut b = bsn_tests::Browser::new(&ca);
    for id in ["ann", "bob"] {
        let body = json!({ "id": id, "name": id.to_uppercase(), "email": format!("{id}@example.org"),
            "password": "correct horse battery", "organisation": "Acme" });
        let (status, v) = b.call("POST", "/api/v1/portal/register", Some(body), false).await;
        assert_eq!((status, v["state"].as_str()), (201, Some("pending")), "{v}");
    }

    let out = as_admin(&["registrations", "list"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let rows: Vec<Vec<String>> = stdout(&out)
        .lines()
        .map(|l| l.split_whitespace().map(String::from).collect())
        .collect();
    assert_eq!(
        rows[0],
        ["ID", "NAME", "EMAIL", "ORGANISATION", "REGISTERED"],
        "{rows:?}"
    );
    assert_eq!(rows.len(), 3, "{rows:?}");
    assert_eq!(rows[1][..4], ["ann", "ANN", "ann@example.org", "Acme"], "{rows:?}");
    let out = as_admin(&["registrations", "list", "--json"]);
    let items: Vec<bsn_api::ca::Account> = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(items.iter().map(|a| a.id.as_str()).collect::<Vec<_>>(), ["ann", "bob"]);

    let out = as_admin(&["registrations", "approve", "ann"]);
    assert!(
        stdout(&out).contains("ann approved"),
        "{}{}",
        stdout(&out),
        stderr(&out)
    );
    let out = as_admin(&["registrations", "reject", "bob"]);
    assert!(stdout(&out).contains("bob is now rejected"), "{}", stdout(&out));
    let out = as_admin(&["registrations", "list"]);
    assert_eq!(stdout(&out).trim(), "no pending registrations");
    let out = as_admin(&["registrations", "list", "--state", "approved"]);
    assert!(
        stdout(&out).lines().nth(1).unwrap_or_default().starts_with("ann "),
        "{}",
        stdout(&out)
    );
    // Bad input: a decided or unknown registration, an unknown state, a participant.
    let out = as_admin(&["registrations", "approve", "bob"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let out = as_admin(&["registrations", "approve", "nobody"]);
    assert_eq!(out.status.code(), Some(4), "{}", stderr(&out));
    let out = as_admin(&["registrations", "list", "--state", "maybe"]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    let out = ca.bsn(&["registrations", "list", "--cert", &c[0], "--key", &c[1]]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));
    assert!(stderr(&out).contains("hint:"), "{}", stderr(&out));

    // An invitation code admits its registrations at once, and no more.
    let out = as_admin(&["invite", "--uses", "1", "--valid-for", "1d"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let code = field(&out, "invitation code:");
    assert!(
        stdout(&out).contains("/register is approved at once"),
        "{}",
        stdout(&out)
    );
    let body = |id: &str| {
        json!({ "id": id, "name": "D", "email": format!("{id}@example.org"),
            "password": "correct horse battery", "invitation": code })
    };
    let (status, v) = b
        .call("POST", "/api/v1/portal/register", Some(body("dora")), false)
        .await;
    assert_eq!((status, v["state"].as_str()), (201, Some("approved")), "{v}");
    let (status, _) = b
        .call("POST", "/api/v1/portal/register", Some(body("dave")), false)
        .await;
    assert_eq!(status / 100, 4, "a used-up code admits nobody");
    for bad in ["7w", "0d", "soon"] {
        let out = as_admin(&["invite", "--valid-for", bad]);
        assert_eq!(out.status.code(), Some(2), "--valid-for {bad}: {}", stderr(&out));
    }
    let out = ca.bsn(&["invite", "--cert", &c[0], "--key", &c[1]]);
    assert_eq!(out.status.code(), Some(3), "{}", stderr(&out));

    // `bsn identities`: a header, then one row per identity; --json for scripts.
    let out = as_admin(&["identities"]);
    let text = stdout(&out);
    assert!(text.starts_with("ID "), "{text}");
    assert!(
        text.lines()
            .any(|l| l.split_whitespace().collect::<Vec<_>>() == ["carol", "participant", "active", "-", "admin"]),
        "{text}"
    );
    let out = as_admin(&["identities", "--json", "--type", "participant"]);
    let items: Vec<bsn_api::ca::Identity> = serde_json::from_slice(&out.stdout).unwrap();
    assert!(items.iter().any(|i| i.id == "carol") && items.iter().all(|i| i.kind == "participant"));
}
