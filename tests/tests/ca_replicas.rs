//! Several replicas on one database, concurrent issuance, and restarts.

use std::collections::HashSet;
use std::sync::Arc;

use bsn_tests::TestCa;
use serde_json::json;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_issue_concurrently_without_duplicate_serials() {
    let mut ca = TestCa::start();
    let second = ca.add_replica();
    let holder = ca.participant("load").await;
    let apis = [ca.api(Some(&holder)), ca.api_at(&second, Some(&holder))];
    let n = 400;
    let csrs: Vec<String> = (0..n).map(|_| bsn_tests::new_csr()).collect();
    let sem = Arc::new(tokio::sync::Semaphore::new(64));
    let mut tasks = Vec::new();
    for (i, csr) in csrs.into_iter().enumerate() {
        let api = apis[i % 2].clone();
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _p = sem.acquire().await.unwrap();
            let v = api.post("/api/v1/renew", &json!({ "csr": csr })).await.unwrap();
            let serial = v["serial"].as_str().unwrap().to_string();
            // The serial reported is the certificate's.
            use rustls_pki_types::pem::PemObject;
            let der = rustls_pki_types::CertificateDer::from_pem_slice(v["certificate"].as_str().unwrap().as_bytes())
                .unwrap();
            assert_eq!(identity::profile::check_leaf(&der).unwrap().serial_hex, serial);
            serial
        }));
    }
    let mut serials = HashSet::new();
    for t in tasks {
        assert!(serials.insert(t.await.unwrap()), "duplicate serial");
    }
    assert_eq!(serials.len(), n);
    // Every acknowledged certificate is in the shared database, seen from either replica.
    let admin = ca.admin();
    for url in [ca.url.clone(), second] {
        let api = ca.api_at(&url, Some(&admin));
        let mut stored = HashSet::new();
        let mut q: Vec<(&str, String)> = vec![("identity", "load".into()), ("limit", "1000".into())];
        loop {
            let v = api.get("/api/v1/certificates", &q).await.unwrap();
            for c in v["items"].as_array().unwrap() {
                stored.insert(c["serial"].as_str().unwrap().to_string());
            }
            match v["next_after"].as_str() {
                Some(a) => {
                    q.retain(|(k, _)| *k != "after");
                    q.push(("after", a.into()));
                }
                None => break,
            }
        }
        assert_eq!(stored.len(), n + 1, "the enrollment and {n} renewals");
        assert!(serials.is_subset(&stored));
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn state_survives_a_kill_and_restart() {
    let mut ca = TestCa::start();
    let admin = ca.admin();
    let p = ca.participant("persist").await;
    let serial = {
        let v = ca
            .api(Some(&admin))
            .get("/api/v1/certificates", &[("identity", "persist".into())])
            .await
            .unwrap();
        v["items"][0]["serial"].as_str().unwrap().to_string()
    };
    let r = ca
        .api(Some(&admin))
        .post(
            &format!("/api/v1/certificates/{serial}/revoke"),
            &json!({"reason": "superseded"}),
        )
        .await
        .unwrap();
    assert_eq!(r["crl_number"], 2);
    ca.kill_all();
    ca.restart();
    // The revocation, the CRL number and the admin's certificate all survived SIGKILL.
    let csr = bsn_tests::new_csr();
    let e = ca
        .api(Some(&p))
        .post("/api/v1/renew", &json!({ "csr": csr }))
        .await
        .unwrap_err();
    assert_eq!(bsn_tests::slug(&e), "certificate-revoked");
    let c = ca
        .api(Some(&admin))
        .get(&format!("/api/v1/certificates/{serial}"), &[])
        .await
        .unwrap();
    assert_eq!(c["status"], "revoked");
    assert_eq!(c["revocation_reason"], "superseded");
    let crl = ca.api(None).get_bytes("/api/v1/crl").await.unwrap();
    let (_, parsed) = x509_parser::parse_x509_crl(&crl).unwrap();
    assert_eq!(parsed.crl_number().map(|n| n.to_string()), Some("2".into()));
    assert_eq!(parsed.iter_revoked_certificates().count(), 1);
}

/// Feed order is commit order across replicas: while both replicas change memberships and
/// revoke concurrently, a node streaming from one replica receives every event once, in
/// increasing order, including those committed on the other replica (within the 100 ms watch).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_feed_is_one_ordered_stream_across_replicas() {
    let mut ca = TestCa::start();
    let second = ca.add_replica();
    let admin = ca.admin();
    let secret = ca
        .register("n1", json!({ "type": "node", "dns_names": ["n1.test"] }))
        .await;
    let node = ca.dir.path().join("n1");
    assert!(ca.bsn_enroll("n1", &secret, &node).status.success());
    let mut members = Vec::new();
    for i in 0..8 {
        members.push(ca.participant(&format!("m{i}")).await);
    }
    let a = ca.api(Some(&admin));
    a.post(
        "/api/v1/subchains",
        &json!({ "id": "s", "name": "S", "nodes": ["n1"], "policy": "open" }),
    )
    .await
    .unwrap();
    let mut stream = ca
        .api_at(&second, Some(&node))
        .events("/api/v1/feed/stream", &[])
        .await
        .unwrap();
    // Concurrent: each member joins through one replica, and its certificate is revoked
    // through the other.
    let mut tasks = Vec::new();
    for (i, dir) in members.iter().enumerate() {
        let (join_at, revoke_at) = if i % 2 == 0 {
            (&ca.url, &second)
        } else {
            (&second, &ca.url)
        };
        let joiner = ca.api_at(join_at, Some(dir));
        let revoker = ca.api_at(revoke_at, Some(&admin));
        let id = format!("m{i}");
        tasks.push(tokio::spawn(async move {
            joiner.post("/api/v1/subchains/s/join", &json!({})).await.unwrap();
            let l = revoker
                .get("/api/v1/certificates", &[("identity", id.clone())])
                .await
                .unwrap();
            let serial = l["items"][0]["serial"].as_str().unwrap().to_string();
            revoker
                .post(&format!("/api/v1/certificates/{serial}/revoke"), &json!({}))
                .await
                .unwrap();
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    // 1 creation + 8 joins + 8 revocations, each once, in increasing seq.
    let mut seqs = Vec::new();
    let (mut joins, mut revocations) = (0, 0);
    tokio::time::timeout(std::time::Duration::from_secs(10), async {
        while seqs.len() < 17 {
            let ev = stream.next().await.unwrap().expect("stream open");
            match ev.event.as_str() {
                "membership" => joins += 1,
                "revocation" => revocations += 1,
                _ => continue,
            }
            seqs.push(ev.id.parse::<i64>().unwrap());
        }
    })
    .await
    .expect("every event reaches the node through the other replica");
    assert_eq!((joins, revocations), (9, 8));
    assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
    assert_eq!(seqs, (1..=17).collect::<Vec<i64>>(), "no gaps, no repeats");
}
