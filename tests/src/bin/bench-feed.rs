//! Revocation latency through the change feed: a node follows `/api/v1/feed/stream` (server-sent
//! events over HTTPS/mTLS) while an administrator revokes N certificates one after another; for
//! each, the time from the revoke call returning to the event arriving at the node. Prints
//! p50/p99 next to the revoke call's own latency (a durable transaction) measured in the run.
//! Then it loads the registry (S subchains hosted by that node, M members each, through the
//! API's bulk member call) and measures again, with the latency of a membership change reaching
//! the node and of a reconnecting node's catch-up read: the ratio shows whether the registry's
//! size slows the feed.
//!
//! `cargo run --release -p bsn-tests --bin bench-feed -- [--revocations 1000] [--subchains 1000 --members 10000]`

use std::time::{Duration, Instant};

use bsn_tests::TestCa;
use clap::Parser;
use serde_json::json;

#[derive(Parser)]
struct Args {
    /// Revocations to time (in each phase).
    #[arg(long, default_value_t = 1000)]
    revocations: usize,
    /// Subchains to load before the second phase (0: skip it).
    #[arg(long, default_value_t = 0)]
    subchains: usize,
    /// Members per loaded subchain.
    #[arg(long, default_value_t = 10_000)]
    members: usize,
}

#[tokio::main]
async fn main() {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let args = Args::parse();
    let mut ca = TestCa::start();
    let admin = ca.admin();
    let p = ca.participant("victim").await;
    let secret = ca
        .register("n1", json!({ "type": "node", "dns_names": ["n1.test"] }))
        .await;
    let node = ca.dir.path().join("n1");
    assert!(ca.bsn_enroll("n1", &secret, &node).status.success());

    let admin_api = ca.api(Some(&admin));
    let holder = ca.api(Some(&p));
    let node_api = ca.api(Some(&node));
    let empty = revocations(&holder, &admin_api, &node_api, args.revocations).await;
    println!("backend: {}", bsn_tests::backend());
    report("empty registry", &empty);
    if args.subchains == 0 {
        ca.kill_all();
        return;
    }

    eprintln!("loading {} subchains x {} members...", args.subchains, args.members);
    let t = Instant::now();
    {
        use sqlx::Connection;
        let mut c = ca.db_conn().await;
        let mut tx = c.begin().await.unwrap();
        for chunk in (0..args.members).collect::<Vec<_>>().chunks(500) {
            let mut sql = String::from(
                "INSERT INTO identities (id, kind, roles, attributes, dns_names, ip_addresses, status, \
                 enrollments_left, registered_by, created_at) VALUES ",
            );
            let rows: Vec<String> = chunk
                .iter()
                .map(|i| format!("('m{i:06}', 'participant', '[]', '{{}}', '[]', '[]', 'active', 0, 'bench', 0)"))
                .collect();
            sql.push_str(&rows.join(", "));
            sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await.unwrap();
        }
        tx.commit().await.unwrap();
    }
    let publisher = ca.dir.path().join("admin");
    let pub_api = ca.api(Some(&publisher));
    // Subchains are created through the API; their member rows go in by SQL (10,000,000 rows
    // through the API would take hours), then one API change per subchain makes a real revision
    // whose signed statement lists every member.
    for s in 0..args.subchains {
        let id = format!("app-{s:04}");
        pub_api
            .post("/api/v1/subchains", &json!({ "id": id, "name": id, "nodes": ["n1"] }))
            .await
            .unwrap();
    }
    {
        use sqlx::Connection;
        let mut c = ca.db_conn().await;
        for s in 0..args.subchains {
            let id = format!("app-{s:04}");
            let mut tx = c.begin().await.unwrap();
            for chunk in (1..args.members).collect::<Vec<_>>().chunks(500) {
                let rows: Vec<String> = chunk
                    .iter()
                    .map(|i| {
                        let role = if i % 10 == 0 { "writer" } else { "reader" };
                        format!("('{id}', 'm{i:06}', '{role}', 0, 'bench')")
                    })
                    .collect();
                let sql = format!(
                    "INSERT INTO subchain_members (subchain_id, identity_id, role, since, added_by) VALUES {}",
                    rows.join(", ")
                );
                sqlx::query(sqlx::AssertSqlSafe(sql)).execute(&mut *tx).await.unwrap();
            }
            sqlx::query("UPDATE subchains SET members = members + $1 WHERE id = $2")
                .bind((args.members - 1) as i64)
                .bind(&id)
                .execute(&mut *tx)
                .await
                .unwrap();
            tx.commit().await.unwrap();
        }
    }
    eprintln!("  member rows written ({:.0} s)", t.elapsed().as_secs_f64());
    for s in 0..args.subchains {
        let id = format!("app-{s:04}");
        let r = pub_api
            .put(
                &format!("/api/v1/subchains/{id}/members/m000000"),
                &json!({ "role": "writer" }),
            )
            .await
            .unwrap();
        assert_eq!(r["revision"], 2);
        if s % 100 == 99 {
            eprintln!("  {} statements signed ({:.0} s)", s + 1, t.elapsed().as_secs_f64());
        }
    }
    let load = t.elapsed();
    println!(
        "loaded {} subchains x {} members = {} memberships in {:.0} s",
        args.subchains,
        args.members,
        args.subchains * args.members,
        load.as_secs_f64()
    );
    let loaded = revocations(&holder, &admin_api, &node_api, args.revocations).await;
    report("loaded registry", &loaded);
    println!(
        "loaded / empty: p50 {:.2}, p99 {:.2}",
        pct(&loaded.0, 0.5).as_secs_f64() / pct(&empty.0, 0.5).as_secs_f64(),
        pct(&loaded.0, 0.99).as_secs_f64() / pct(&empty.0, 0.99).as_secs_f64()
    );

    // A membership change in a loaded subchain reaching the node (its statement lists every member).
    let cursor = ca_head(&ca).await;
    let mut stream = node_api
        .events("/api/v1/feed/stream", &[("cursor", cursor.to_string())])
        .await
        .unwrap();
    let mut change = Vec::new();
    for i in 0..20 {
        let role = if i % 2 == 0 { "admin" } else { "reader" };
        let t = Instant::now();
        pub_api
            .put("/api/v1/subchains/app-0000/members/m000001", &json!({ "role": role }))
            .await
            .unwrap();
        let returned = Instant::now();
        loop {
            let ev = stream.next().await.unwrap().expect("stream open");
            if ev.event == "membership" {
                break;
            }
        }
        change.push((returned - t, returned.elapsed()));
    }
    let mut calls: Vec<Duration> = change.iter().map(|c| c.0).collect();
    let mut arrivals: Vec<Duration> = change.iter().map(|c| c.1).collect();
    calls.sort();
    arrivals.sort();
    println!(
        "membership change in a {}-member subchain: call p50 {:.1} ms; call returned -> node has the signed statement p50 {:.1} ms, max {:.1} ms",
        args.members + 1,
        ms(pct(&calls, 0.5)),
        ms(pct(&arrivals, 0.5)),
        ms(*arrivals.last().unwrap())
    );

    // A node reconnecting after missing one event reads only that event.
    let cursor = ca_head(&ca).await - 1;
    let mut reads = Vec::new();
    for _ in 0..200 {
        let t = Instant::now();
        let page = node_api
            .get("/api/v1/feed", &[("cursor", cursor.to_string())])
            .await
            .unwrap();
        reads.push(t.elapsed());
        assert_eq!(page["events"].as_array().unwrap().len(), 1);
    }
    reads.sort();
    println!(
        "catch-up read of the one missed event (a {}-member statement): p50 {:.2} ms, p99 {:.2} ms",
        args.members + 1,
        ms(pct(&reads, 0.5)),
        ms(pct(&reads, 0.99))
    );
    ca.kill_all();
}

async fn ca_head(ca: &TestCa) -> i64 {
    let mut c = ca.db_conn().await;
    sqlx::query_scalar("SELECT COALESCE(MAX(seq), 0) FROM feed")
        .fetch_one(&mut c)
        .await
        .unwrap()
}

fn pct(v: &[Duration], p: f64) -> Duration {
    v[((v.len() as f64 * p) as usize).min(v.len() - 1)]
}

fn report(phase: &str, (feed, call): &(Vec<Duration>, Vec<Duration>)) {
    println!(
        "{phase}: revocation -> node over the feed stream ({} revocations): p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        feed.len(),
        ms(pct(feed, 0.5)),
        ms(pct(feed, 0.99)),
        ms(*feed.last().unwrap())
    );
    println!(
        "{phase}: baseline, the revoke call itself (durable transaction, CRL re-signed): p50 {:.2} ms, p99 {:.2} ms",
        ms(pct(call, 0.5)),
        ms(pct(call, 0.99))
    );
}

/// Issues `n` certificates to the holder, then revokes them one by one while the node follows
/// the feed stream; returns (revoke returned -> event at the node, revoke call), sorted.
async fn revocations(
    holder: &bsn_api::client::Api,
    admin_api: &bsn_api::client::Api,
    node_api: &bsn_api::client::Api,
    n: usize,
) -> (Vec<Duration>, Vec<Duration>) {
    eprintln!("issuing {n} certificates to revoke...");
    let mut serials = Vec::with_capacity(n);
    for _ in 0..n {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let csr = rcgen::CertificateParams::new(Vec::<String>::new())
            .unwrap()
            .serialize_request(&key)
            .unwrap()
            .pem()
            .unwrap();
        let v = holder.post("/api/v1/renew", &json!({ "csr": csr })).await.unwrap();
        serials.push(v["serial"].as_str().unwrap().to_string());
    }
    // Start at the feed's head: a page from 0 tells where it is.
    let mut cursor = 0i64;
    loop {
        let page = node_api
            .get("/api/v1/feed", &[("cursor", cursor.to_string())])
            .await
            .unwrap();
        let next = page["cursor"].as_i64().unwrap();
        if page["more"] != true {
            cursor = next;
            break;
        }
        cursor = next;
    }
    let mut stream = node_api
        .events("/api/v1/feed/stream", &[("cursor", cursor.to_string())])
        .await
        .unwrap();
    let mut feed_lat = Vec::with_capacity(n);
    let mut call_lat = Vec::with_capacity(n);
    for serial in &serials {
        let t = Instant::now();
        admin_api
            .post(&format!("/api/v1/certificates/{serial}/revoke"), &json!({}))
            .await
            .unwrap();
        let returned = Instant::now();
        call_lat.push(returned - t);
        loop {
            let ev = tokio::time::timeout(Duration::from_secs(10), stream.next())
                .await
                .expect("event within 10 s")
                .unwrap()
                .expect("stream open");
            if ev.event == "revocation" && ev.data.contains(serial.as_str()) {
                break;
            }
        }
        feed_lat.push(returned.elapsed());
    }
    feed_lat.sort();
    call_lat.sort();
    (feed_lat, call_lat)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}
