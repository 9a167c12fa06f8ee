//! Shared city nodes at the CA (issue 14, DESIGN.md section 12), through the real API and `bsn`
//! with real mTLS identities: the plans on offer, nodes declaring capacity in the signed
//! directory, subchains placed by city (dedicated never shared, never over-committed, refusals
//! that say which city and what is missing and change nothing), nodes named by hand held to the
//! same rules, a plan change as a membership revision whose statement carries the plan, and a
//! drain moving subchains one revision at a time. On SQLite or PostgreSQL (BSN_TEST_DATABASE).

use std::path::{Path, PathBuf};

use bsn_api::ca::{Nodes, OwnEntry, PlanOffer, Plans, Revised, Subchain};
use bsn_tests::{TestCa, slug};
use identity::membership::MembershipKey;
use identity::plan::{Capacity, Plan, Tenancy};
use serde_json::json;

const GIB: u64 = 1 << 30;

fn creds(dir: &Path) -> [String; 4] {
    [
        "--cert".into(),
        dir.join("cert.pem").display().to_string(),
        "--key".into(),
        dir.join("key.pem").display().to_string(),
    ]
}

/// Runs `bsn` as the identity in `who`.
fn bsn_as(ca: &TestCa, who: &Path, args: &[&str]) -> std::process::Output {
    let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
    all.extend(creds(who));
    let all: Vec<&str> = all.iter().map(String::as_str).collect();
    ca.bsn(&all)
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// A city node `id` in `city` that declared `capacity` (or none).
async fn node(ca: &mut TestCa, id: &str, city: &str, capacity: Option<Capacity>) -> PathBuf {
    let d = ca.enrolled(id, json!({ "type": "node" })).await;
    let _: Nodes = ca
        .api(Some(&d))
        .put_as(
            "/api/v1/nodes/self",
            &OwnEntry {
                city: city.into(),
                url: format!("https://{id}.test:8444"),
                capacity,
            },
        )
        .await
        .unwrap();
    d
}

fn shared(rate: u64, storage: u64) -> Option<Capacity> {
    Some(Capacity {
        tenancy: Tenancy::Shared,
        rate,
        storage,
    })
}

async fn subchain(ca: &TestCa, who: &Path, id: &str) -> Subchain {
    ca.api(Some(who))
        .get_as(&format!("/api/v1/subchains/{id}"), &[])
        .await
        .unwrap()
}

async fn create(ca: &TestCa, who: &Path, body: serde_json::Value) -> Result<Revised, bsn_api::client::ClientError> {
    ca.api(Some(who)).post_as("/api/v1/subchains", &body).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn plans_capacity_placement_and_drain() {
    let mut ca = TestCa::start();
    let admin = ca.admin();
    let publisher = ca.enrolled("pub", json!({ "roles": ["publisher"] })).await;
    let anon = ca.api(None);

    // The plans on offer are public: the defaults, the dedicated one for administrators only.
    let plans: Plans = anon.get_as("/api/v1/plans", &[]).await.unwrap();
    let offered: Vec<(Plan, bool)> = plans.plans.iter().map(|o| (o.plan.clone(), o.open)).collect();
    let defaults = Plan::defaults();
    assert_eq!(
        offered,
        defaults
            .iter()
            .map(|p| (p.clone(), p.tenancy == Tenancy::Shared))
            .collect::<Vec<_>>(),
        "the database's defaults are identity::plan::Plan::defaults()"
    );
    let out = ca.bsn(&["plans"]);
    assert!(out.status.success(), "{}", text(&out));
    let listed = text(&out);
    for want in [
        "free",
        "standard",
        "business",
        "dedicated",
        "1.0 GiB",
        "administrators",
        "publishers",
    ] {
        assert!(listed.contains(want), "{want} in:\n{listed}");
    }

    // Nodes declare what they offer, in the signed directory; an orderer offers nothing.
    node(&mut ca, "bj-s1", "beijing", shared(1_000, 1024 * GIB)).await;
    node(&mut ca, "bj-s2", "beijing", shared(1_000, 1024 * GIB)).await;
    let dedicated = Some(Capacity {
        tenancy: Tenancy::Dedicated,
        rate: 5_000,
        storage: 2048 * GIB,
    });
    node(&mut ca, "bj-d1", "beijing", dedicated.clone()).await;
    node(&mut ca, "sh-s1", "shanghai", shared(100, 10 * GIB)).await;
    node(&mut ca, "gz-d1", "guangzhou", dedicated.clone()).await;
    let legacy = node(&mut ca, "legacy", "beijing", None).await;
    let o1 = ca.enrolled("o1", json!({ "type": "orderer" })).await;
    let before: Nodes = anon.get_as("/api/v1/nodes", &[]).await.unwrap();
    for (who, capacity) in [
        (&o1, shared(10, GIB)),
        (&legacy, shared(0, GIB)),
        (&legacy, shared(1_000_001, GIB)),
    ] {
        let e = ca
            .api(Some(who))
            .put_as::<_, Nodes>(
                "/api/v1/nodes/self",
                &OwnEntry {
                    city: "beijing".into(),
                    url: "https://x.test".into(),
                    capacity,
                },
            )
            .await
            .unwrap_err();
        assert_eq!(slug(&e), "invalid-field", "{e}");
    }
    let d: Nodes = anon.get_as("/api/v1/nodes", &[]).await.unwrap();
    assert_eq!(d.revision, before.revision, "refused entries changed nothing");
    let key = anon.get("/api/v1/membership-key", &[]).await.unwrap();
    let key = MembershipKey::from_base64(key["key"].as_str().unwrap()).unwrap();
    let signed = key.verify_directory(d.signed.as_ref().unwrap()).unwrap();
    assert_eq!(signed.entry("bj-d1").unwrap().capacity, dedicated);
    assert_eq!(signed.entry("legacy").unwrap().capacity, None);

    // Placed by city with `bsn`: the shared node with the most to spare (ties: the first id).
    let out = bsn_as(
        &ca,
        &publisher,
        &[
            "subchain",
            "create",
            "a",
            "--name",
            "A",
            "--city",
            "beijing",
            "--plan",
            "free",
            "--no-orderers",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let a = subchain(&ca, &publisher, "a").await;
    assert_eq!(a.nodes, ["bj-s1"]);
    assert_eq!(a.plan.as_ref().map(|p| p.name.as_str()), Some("free"));
    // Its statement carries the plan, signed.
    let st: identity::membership::Envelope = ca
        .api(Some(&publisher))
        .get_as("/api/v1/subchains/a/statement", &[])
        .await
        .unwrap();
    assert_eq!(key.verify_statement(&st).unwrap().plan, a.plan);
    let out = bsn_as(&ca, &publisher, &["subchain", "show", "a"]);
    assert!(
        text(&out).contains("free: shared, 10 tx/s (burst 20)"),
        "{}",
        text(&out)
    );
    // No plan named: the cheapest open one.
    let r = create(
        &ca,
        &publisher,
        json!({"id": "b", "name": "B", "cities": ["beijing"], "orderers": []}),
    )
    .await
    .unwrap();
    assert_eq!(r.revision, 1);
    let b = subchain(&ca, &publisher, "b").await;
    assert_eq!(
        (b.nodes.as_slice(), b.plan.unwrap().name.as_str()),
        (&["bj-s2".to_string()][..], "free")
    );

    // Bad input: a 4xx problem with a stable type, and nothing changes.
    let count = |ca: &TestCa| {
        let api = ca.api(Some(&admin));
        async move {
            api.get("/api/v1/subchains", &[]).await.unwrap()["items"]
                .as_array()
                .unwrap()
                .len()
        }
    };
    let n = count(&ca).await;
    for (body, want) in [
        (
            json!({"id": "x", "name": "X", "cities": ["beijing"], "plan": "gold"}),
            "unknown-plan",
        ),
        (
            json!({"id": "x", "name": "X", "cities": ["beijing"], "plan": "dedicated"}),
            "plan-not-open",
        ),
        (
            json!({"id": "x", "name": "X", "cities": ["lhasa"], "plan": "free"}),
            "no-placement",
        ),
        (
            json!({"id": "x", "name": "X", "cities": ["beijing", "beijing"]}),
            "invalid-field",
        ),
        (
            json!({"id": "x", "name": "X", "cities": ["beijing"], "nodes": ["bj-s1"]}),
            "invalid-field",
        ),
        (json!({"id": "x", "name": "X"}), "invalid-field"),
        (json!({"id": "x", "name": "X", "cities": ["a/b"]}), "invalid-field"),
        // Named by hand: the same rules on nodes that offer capacity.
        (
            json!({"id": "x", "name": "X", "nodes": ["bj-d1"], "plan": "free"}),
            "no-placement",
        ),
        (json!({"id": "x", "name": "X", "nodes": ["bj-s1"]}), "invalid-field"),
        (
            json!({"id": "x", "name": "X", "nodes": ["sh-s1"], "plan": "business"}),
            "no-placement",
        ),
    ] {
        let e = create(&ca, &publisher, body.clone()).await.unwrap_err();
        assert_eq!(slug(&e), want, "{body}: {e}");
    }
    assert_eq!(count(&ca).await, n, "refusals created nothing");
    // A refusal says which city and what is missing.
    let e = create(
        &ca,
        &publisher,
        json!({"id": "x", "name": "X", "cities": ["shanghai", "beijing"], "plan": "business"}),
    )
    .await
    .unwrap_err();
    let said = e.to_string();
    assert!(
        said.contains("shanghai") && said.contains("the plan needs 500 tx/s"),
        "{said}"
    );
    // A node that offers nothing takes a subchain named to it by hand, with or without a plan.
    create(
        &ca,
        &publisher,
        json!({"id": "old", "name": "Old", "nodes": ["legacy"], "orderers": []}),
    )
    .await
    .unwrap();

    // Dedicated: administrators assign it; a dedicated node hosts one subchain.
    let out = bsn_as(
        &ca,
        &admin,
        &[
            "subchain",
            "create",
            "d",
            "--name",
            "D",
            "--city",
            "beijing",
            "--plan",
            "dedicated",
            "--no-orderers",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(subchain(&ca, &admin, "d").await.nodes, ["bj-d1"]);
    let e = create(
        &ca,
        &admin,
        json!({"id": "d2", "name": "D2", "cities": ["beijing"], "plan": "dedicated", "orderers": []}),
    )
    .await
    .unwrap_err();
    assert_eq!(slug(&e), "no-placement");
    assert!(e.to_string().contains("dedicated nodes are taken"), "{e}");
    // Two at once for the last free dedicated node: one gets it, never both.
    let body = |id: &str| json!({"id": id, "name": id, "cities": ["guangzhou"], "plan": "dedicated", "orderers": []});
    let (x, y) = tokio::join!(create(&ca, &admin, body("gz-x")), create(&ca, &admin, body("gz-y")));
    assert_eq!(
        [x.is_ok(), y.is_ok()].iter().filter(|ok| **ok).count(),
        1,
        "{x:?} {y:?}"
    );
    let lost = x.err().or(y.err()).unwrap();
    assert_eq!(slug(&lost), "no-placement", "{lost}");

    // A plan change is a membership revision; the statement carries the new plan.
    let before = subchain(&ca, &publisher, "a").await.revision;
    let out = bsn_as(&ca, &publisher, &["subchain", "update", "a", "--plan", "business"]);
    assert!(out.status.success(), "{}", text(&out));
    let a = subchain(&ca, &publisher, "a").await;
    assert_eq!(a.revision, before + 1);
    assert_eq!(a.nodes, ["bj-s1"], "business still fits on bj-s1");
    assert_eq!(a.plan.unwrap().name, "business");
    let e = ca
        .api(Some(&publisher))
        .patch("/api/v1/subchains/a", &json!({"plan": "dedicated"}))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "plan-not-open");
    let e = ca
        .api(Some(&publisher))
        .patch("/api/v1/subchains/a", &json!({"plan": "business"}))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "conflict", "the same plan again is no change: {e}");
    // c takes bj-s2 (the most to spare), leaving 890 tx/s there.
    create(
        &ca,
        &publisher,
        json!({"id": "c", "name": "C", "cities": ["beijing"], "plan": "standard", "orderers": []}),
    )
    .await
    .unwrap();
    assert_eq!(subchain(&ca, &publisher, "c").await.nodes, ["bj-s2"]);

    // Plans, by administrators.
    let out = bsn_as(
        &ca,
        &admin,
        &[
            "plans",
            "set",
            "pro",
            "--rate",
            "200",
            "--storage",
            "20GiB",
            "--bandwidth",
            "20MB",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        text(&out).contains("pro: shared, 200 tx/s (burst 400), 20.0 GiB stored"),
        "{}",
        text(&out)
    );
    let pro: PlanOffer = anon.get_as("/api/v1/plans/pro", &[]).await.unwrap();
    assert!(pro.open && pro.plan.storage == 20 * GIB && pro.plan.bandwidth == 20_000_000);
    let out = bsn_as(
        &ca,
        &publisher,
        &[
            "plans",
            "set",
            "cheap",
            "--rate",
            "1",
            "--storage",
            "1GiB",
            "--bandwidth",
            "1MB",
        ],
    );
    assert!(!out.status.success() && text(&out).contains("403"), "{}", text(&out));
    let out = bsn_as(
        &ca,
        &admin,
        &[
            "plans",
            "set",
            "zero",
            "--rate",
            "0",
            "--storage",
            "1GiB",
            "--bandwidth",
            "1MB",
        ],
    );
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let mut bad = pro.clone();
    bad.plan.burst = 1;
    let e = ca
        .api(Some(&admin))
        .put_as::<_, PlanOffer>("/api/v1/plans/pro", &bad)
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "invalid-field", "{e}");
    let e = ca
        .api(Some(&admin))
        .put_as::<_, PlanOffer>("/api/v1/plans/other", &pro)
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "invalid-field", "the name in the body is the path's: {e}");
    let out = bsn_as(&ca, &admin, &["plans", "withdraw", "pro"]);
    assert!(out.status.success(), "{}", text(&out));
    let e = anon.get("/api/v1/plans/pro", &[]).await.unwrap_err();
    assert_eq!(slug(&e), "unknown-plan");

    // Draining bj-s1 moves a (business, 500 tx/s) to bj-s2, one revision; nothing new lands on
    // a draining node.
    let e = ca
        .api(Some(&publisher))
        .post("/api/v1/nodes/bj-s1/drain", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "forbidden");
    let e = ca
        .api(Some(&admin))
        .post("/api/v1/nodes/nowhere/drain", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "not-found");
    let before = subchain(&ca, &publisher, "a").await.revision;
    let out = bsn_as(&ca, &admin, &["node", "drain", "bj-s1"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("moved a to bj-s2"), "{}", text(&out));
    let a = subchain(&ca, &publisher, "a").await;
    assert_eq!(
        (a.nodes.as_slice(), a.revision),
        (&["bj-s2".to_string()][..], before + 1)
    );
    let d: Nodes = anon.get_as("/api/v1/nodes", &[]).await.unwrap();
    assert!(d.nodes.iter().any(|n| n.id == "bj-s1" && n.draining));
    // bj-s2 holds b (10 tx/s), c (100) and a (500): 390 to spare, not enough for business.
    let e = create(
        &ca,
        &publisher,
        json!({"id": "e", "name": "E", "cities": ["beijing"], "plan": "business", "orderers": []}),
    )
    .await
    .unwrap_err();
    assert_eq!(slug(&e), "no-placement", "bj-s1 is draining, bj-s2 is full: {e}");
    let out = bsn_as(&ca, &admin, &["node", "undrain", "bj-s1"]);
    assert!(out.status.success(), "{}", text(&out));
    create(
        &ca,
        &publisher,
        json!({"id": "e", "name": "E", "cities": ["beijing"], "plan": "business", "orderers": []}),
    )
    .await
    .unwrap();
    assert_eq!(subchain(&ca, &publisher, "e").await.nodes, ["bj-s1"]);

    // A subchain that fits nowhere else stays, and the drain says so (exit 4).
    let out = bsn_as(&ca, &admin, &["node", "drain", "bj-d1"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out));
    assert!(text(&out).contains("stuck d"), "{}", text(&out));
    assert_eq!(subchain(&ca, &admin, "d").await.nodes, ["bj-d1"]);
}

/// A report signed with the key in `signer` (a credentials directory).
fn signed_report(
    signer: &Path,
    node: &str,
    seq: u64,
    at: i64,
    rows: Vec<identity::usage::UsageRow>,
) -> serde_json::Value {
    use base64::Engine;
    let b64 = base64::engine::general_purpose::STANDARD;
    let r = identity::usage::UsageReport {
        version: 1,
        trust_domain: "test.example".into(),
        node: node.into(),
        seq,
        at,
        rows,
    };
    let payload = serde_json::to_vec(&r).unwrap();
    let key = bsn_api::files::load_key(&std::fs::read_to_string(signer.join("key.pem")).unwrap()).unwrap();
    let sig = bsn_api::files::sign(&key, &identity::usage::UsageReport::signed_message(&payload)).unwrap();
    json!({ "payload": b64.encode(payload), "signature": b64.encode(sig) })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn usage_reports_are_checked_kept_and_totalled() {
    let mut ca = TestCa::start();
    let admin = ca.admin();
    let publisher = ca.enrolled("pub", json!({ "roles": ["publisher"] })).await;
    let stranger = ca.participant("stranger").await;
    let n1 = node(&mut ca, "n1", "beijing", shared(1_000, 1024 * GIB)).await;
    let n2 = node(&mut ca, "n2", "shanghai", shared(1_000, 1024 * GIB)).await;
    create(
        &ca,
        &publisher,
        json!({"id": "a", "name": "A", "cities": ["beijing"], "plan": "free", "orderers": []}),
    )
    .await
    .unwrap();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let hour = now - now.rem_euclid(3600);
    let row = |tx: u64| identity::usage::UsageRow {
        subchain: "a".into(),
        hour,
        transactions: tx,
        bytes_written: tx * 100,
        bytes_stored: 4096,
        bytes_served: 1000,
        refused: 2,
    };
    let post = |who: &Path, body: serde_json::Value| {
        let api = ca.api(Some(who));
        async move { api.post("/api/v1/usage", &body).await }
    };
    let totals = || {
        let api = ca.api(Some(&publisher));
        async move {
            api.get_as::<bsn_api::ca::SubchainUsage>("/api/v1/subchains/a/usage", &[])
                .await
                .unwrap()
                .totals
        }
    };
    let v = post(&n1, signed_report(&n1, "n1", 1, now, vec![row(5)])).await.unwrap();
    assert_eq!(v["rows"], 1);
    assert_eq!((totals().await.transactions, totals().await.refused), (5, 2));
    // A later report of the same hour replaces its totals; it does not add to them.
    post(&n1, signed_report(&n1, "n1", 2, now, vec![row(7)])).await.unwrap();
    let t = totals().await;
    assert_eq!(
        (t.transactions, t.bytes_written, t.bytes_served, t.bytes_stored),
        (7, 700, 1000, 4096)
    );

    // Bad reports: a 4xx problem, nothing changed.
    for (who, body, want) in [
        (&n1, signed_report(&n1, "n1", 2, now, vec![row(99)]), "replayed-report"),
        (&n1, signed_report(&n1, "n1", 1, now, vec![row(99)]), "replayed-report"),
        (&n1, signed_report(&n2, "n1", 3, now, vec![row(99)]), "invalid-proof"),
        (&n1, signed_report(&n1, "n2", 3, now, vec![row(99)]), "forbidden"),
        (&n2, signed_report(&n2, "n2", 1, now, vec![row(99)]), "forbidden"),
        (
            &stranger,
            signed_report(&stranger, "stranger", 1, now, vec![row(99)]),
            "forbidden",
        ),
        (
            &n1,
            signed_report(&n1, "n1", 3, now - 3_600, vec![row(99)]),
            "invalid-field",
        ),
        (&n1, json!({ "payload": "%%%", "signature": "" }), "invalid-field"),
    ] {
        let e = post(who, body).await.unwrap_err();
        assert_eq!(slug(&e), want, "{e}");
    }
    let t = totals().await;
    assert_eq!(
        (t.transactions, t.bytes_written),
        (7, 700),
        "refused reports changed nothing"
    );

    // Who sees it: the publisher, CA administrators; not a stranger.
    let e = ca
        .api(Some(&stranger))
        .get("/api/v1/subchains/a/usage", &[])
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "forbidden");
    let out = bsn_as(&ca, &admin, &["subchain", "usage", "a", "--csv"]);
    assert!(out.status.success(), "{}", text(&out));
    let csv = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(
        csv.lines().collect::<Vec<_>>(),
        [
            "hour,node,transactions,bytes_written,bytes_stored,bytes_served,refused".to_string(),
            format!("{hour},n1,7,700,4096,1000,2"),
        ]
    );
    let out = bsn_as(&ca, &publisher, &["subchain", "usage", "a"]);
    assert!(
        text(&out).contains("7 transactions") && text(&out).contains("plan free"),
        "{}",
        text(&out)
    );
}
