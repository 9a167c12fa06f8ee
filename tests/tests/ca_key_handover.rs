//! Handing the issuance log's checkpoint key over to a new key without an outage (issue 16):
//! begin (both keys sign every checkpoint), finish (the new key alone); each step refused out of
//! turn; clients enrolling and renewing on two replicas through the handover see no failed
//! request, and every replica signs with the keys of the step at once; an auditor that pins the
//! old key follows the handover once (`bsn audit verify`, `bsn audit follow`) and refuses a
//! "handover" the log does not hold.

use std::sync::Arc;
use std::time::Duration;

use bsn_api::client::Api;
use bsn_tests::{Tally, TestCa, eventually, new_csr, slug};
use serde_json::{Value, json};

/// Whether `note` carries a valid signature by `vkey`.
fn signed_by(vkey: &str, note: &str) -> bool {
    ca_server::log::open_with(vkey.trim(), note).is_ok()
}

async fn checkpoint(api: &Api) -> String {
    String::from_utf8(api.get_bytes("/log/checkpoint").await.unwrap()).unwrap()
}

fn states(list: &Value) -> Vec<(i64, String)> {
    list["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| (i["number"].as_i64().unwrap(), i["state"].as_str().unwrap().to_string()))
        .collect()
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Renewals and enrollments on both replicas until stopped; every receipt's checkpoint kept.
struct Load {
    tally: Tally,
    receipts: Arc<std::sync::Mutex<Vec<String>>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Load {
    fn start(renewers: Vec<Api>, anon: Api, secrets: Vec<(String, String)>) -> Self {
        let tally = Tally::default();
        let receipts = Arc::new(std::sync::Mutex::new(Vec::new()));
        let mut tasks = Vec::new();
        // Each job renews (no secrets) or enrolls with the secrets it is given.
        type Secrets = Option<Vec<(String, String)>>;
        let mut jobs: Vec<(Api, Secrets)> = renewers.into_iter().map(|a| (a, None)).collect();
        jobs.push((anon, Some(secrets)));
        for (api, secrets) in jobs {
            let (tally, receipts) = (tally.clone(), receipts.clone());
            tasks.push(tokio::spawn(async move {
                let mut secrets = secrets.map(|s| s.into_iter());
                while tally.running() {
                    let result = match &mut secrets {
                        None => api.post("/api/v1/renew", &json!({ "csr": new_csr() })).await,
                        Some(it) => {
                            let Some((id, secret)) = it.next() else { break };
                            api.post(
                                "/api/v1/enroll",
                                &json!({ "id": id, "secret": secret, "csr": new_csr() }),
                            )
                            .await
                        }
                    };
                    if let Some(v) = tally.record("issuance", result) {
                        receipts
                            .lock()
                            .unwrap()
                            .push(v["receipt"]["checkpoint"].as_str().unwrap_or_default().to_string());
                    }
                }
            }));
        }
        Self { tally, receipts, tasks }
    }

    async fn progress(&self, more: usize) {
        self.tally.progress(more).await
    }

    /// The receipts' checkpoints received from now on.
    fn mark(&self) -> usize {
        self.receipts.lock().unwrap().len()
    }

    fn since(&self, mark: usize) -> Vec<String> {
        self.receipts.lock().unwrap()[mark..].to_vec()
    }

    async fn stop(self) -> (usize, Vec<String>) {
        self.tally.stop(self.tasks).await
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_log_key_is_handed_over_under_load_and_an_auditor_pinning_the_old_key_follows_it_once() {
    let mut ca = TestCa::start();
    let admin = ca.admin();
    let as_admin = ca.api(Some(&admin));
    let second = ca.add_replica();
    let alice = ca.participant("alice").await;
    let bob = ca.participant("bob").await;
    let anon = ca.api(None);
    let old_vkey = std::fs::read_to_string(ca.data_dir().join("log.vkey")).unwrap();
    let old_vkey_file = ca.data_dir().join("log.vkey");
    let state = ca.data_dir().join("..").join("follow.json");
    let follow = |ca: &TestCa| {
        ca.bsn(&[
            "audit",
            "follow",
            "--log-vkey",
            old_vkey_file.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
            "--once",
        ])
    };
    let out = follow(&ca);
    assert!(out.status.success(), "{}", text(&out));

    let list: Value = anon.get("/api/v1/keys/log", &[]).await.unwrap();
    assert_eq!(states(&list), [(1, "active".to_string())]);
    assert_eq!(list["items"][0]["vkey"].as_str(), Some(old_vkey.trim()));

    let mut secrets = Vec::new();
    for i in 0..300 {
        let id = format!("e{i}");
        secrets.push((id.clone(), ca.register(&id, json!({})).await));
    }
    let load = Load::start(
        vec![ca.api(Some(&alice)), ca.api_at(&second, Some(&bob))],
        anon.clone(),
        secrets,
    );
    load.progress(20).await;

    // Bad input first: nothing changes.
    let e = ca
        .api(Some(&alice))
        .post("/api/v1/keys/log", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "forbidden", "only administrators hand keys over");
    let e = as_admin.post("/api/v1/keys/bogus", &json!({})).await.unwrap_err();
    assert_eq!(slug(&e), "not-found");
    let e = as_admin
        .post("/api/v1/keys/log/2/finish", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "not-found");
    let e = as_admin
        .post("/api/v1/keys/log/1/finish", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(
        slug(&e),
        "rotation-refused",
        "the active key cannot take over from itself"
    );
    let e = as_admin
        .post("/api/v1/keys/log/two/finish", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "invalid-field");
    let list: Value = anon.get("/api/v1/keys/log", &[]).await.unwrap();
    assert_eq!(
        states(&list),
        [(1, "active".to_string())],
        "refused steps change nothing"
    );

    // Begin: key 2 is published and co-signs from its own leaf on, on both replicas at once.
    let out = ca.bsn(&[
        "keys",
        "begin",
        "log",
        "--cert",
        admin.join("cert.pem").to_str().unwrap(),
        "--key",
        admin.join("key.pem").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("log key 2 is incoming"), "{}", text(&out));
    let mark = load.mark();
    let e = as_admin.post("/api/v1/keys/log", &json!({})).await.unwrap_err();
    assert_eq!(slug(&e), "rotation-refused", "one handover at a time");
    let list: Value = anon.get("/api/v1/keys/log", &[]).await.unwrap();
    assert_eq!(states(&list), [(1, "active".to_string()), (2, "incoming".to_string())]);
    let new_vkey = list["items"][1]["vkey"].as_str().unwrap().to_string();
    assert_ne!(new_vkey, old_vkey.trim());
    let cp = checkpoint(&anon).await;
    assert!(signed_by(&old_vkey, &cp) && signed_by(&new_vkey, &cp), "{cp}");
    let other: Value = ca
        .api_at(&second, Some(&bob))
        .post("/api/v1/renew", &json!({ "csr": new_csr() }))
        .await
        .unwrap();
    let cp = other["receipt"]["checkpoint"].as_str().unwrap();
    assert!(
        signed_by(&old_vkey, cp) && signed_by(&new_vkey, cp),
        "the other replica signs with both keys at once: {cp}"
    );
    load.progress(30).await;
    for cp in load.since(mark) {
        assert!(
            signed_by(&old_vkey, &cp),
            "a client pinning the old key verifies every receipt"
        );
    }
    // An auditor following the log records the handover's begun leaf.
    let out = follow(&ca);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("log key 2 handover begun"), "{}", text(&out));

    // Finish: key 2 alone signs, key 1 is retired.
    let finished: Value = as_admin.post("/api/v1/keys/log/2/finish", &json!({})).await.unwrap();
    assert_eq!(finished["state"], "active");
    let handover_cp = finished["handover_checkpoint"].as_str().unwrap().to_string();
    assert!(signed_by(&old_vkey, &handover_cp) && signed_by(&new_vkey, &handover_cp));
    let e = as_admin
        .post("/api/v1/keys/log/2/finish", &json!({}))
        .await
        .unwrap_err();
    assert_eq!(slug(&e), "rotation-refused", "a step taken is refused when repeated");
    let cp = checkpoint(&anon).await;
    assert!(signed_by(&new_vkey, &cp) && !signed_by(&old_vkey, &cp), "{cp}");
    assert_eq!(
        String::from_utf8(anon.get_bytes("/log/vkey").await.unwrap())
            .unwrap()
            .trim(),
        new_vkey
    );
    eventually(
        "the other replica to name the new key",
        Duration::from_secs(10),
        || async {
            let v = ca.api_at(&second, None).get_bytes("/log/vkey").await.ok()?;
            (String::from_utf8(v).ok()?.trim() == new_vkey).then_some(())
        },
    )
    .await;
    let mark = load.mark();
    load.progress(30).await;
    let after_finish = load.since(mark);
    let (ok, failures) = load.stop().await;
    assert!(
        failures.is_empty(),
        "{} of {} requests failed: {:?}",
        failures.len(),
        ok + failures.len(),
        &failures[..failures.len().min(5)]
    );
    for cp in after_finish {
        assert!(
            signed_by(&new_vkey, &cp),
            "every receipt after the handover is signed by the new key"
        );
    }
    println!("log key handover under load on two replicas: {ok} requests, none failed");

    // Auditors: pinning the old key, the handover is followed and reported; pinning the new one
    // needs nothing more.
    let out = bsn_tests::audit(&ca);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&new_vkey), "{}", text(&out));
    assert!(text(&out).contains("2 key handover steps"), "{}", text(&out));
    let new_vkey_file = ca.data_dir().join("..").join("new.vkey");
    std::fs::write(&new_vkey_file, format!("{new_vkey}\n")).unwrap();
    let out = ca.bsn(&["audit", "verify", "--log-vkey", new_vkey_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(!text(&out).contains("handed over"), "{}", text(&out));
    let out = follow(&ca);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("handed over"), "{}", text(&out));
    let saved: Value = serde_json::from_slice(&std::fs::read(&state).unwrap()).unwrap();
    assert_eq!(
        saved["vkey"].as_str(),
        Some(new_vkey.as_str()),
        "the follower pins the new key"
    );
    let out = follow(&ca);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !text(&out).contains("handed over"),
        "the handover is followed once: {}",
        text(&out)
    );

    // The retired key is not needed any more: its file goes, the CA restarts and signs with key 2.
    std::fs::remove_file(ca.data_dir().join("log.key.sealed")).unwrap();
    ca.kill_all();
    ca.restart();
    let as_admin = ca.api(Some(&admin));
    let carol = ca.participant("carol").await;
    let v: Value = ca
        .api(Some(&carol))
        .post("/api/v1/renew", &json!({ "csr": new_csr() }))
        .await
        .unwrap();
    assert!(signed_by(&new_vkey, v["receipt"]["checkpoint"].as_str().unwrap()));

    // A second handover; an auditor that still pins key 1 follows both, in order.
    let third: Value = as_admin.post("/api/v1/keys/log", &json!({})).await.unwrap();
    assert_eq!(third["number"], 3);
    ca.participant("dave").await;
    let out = ca.bsn(&[
        "keys",
        "finish",
        "log",
        "3",
        "--cert",
        admin.join("cert.pem").to_str().unwrap(),
        "--key",
        admin.join("key.pem").to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", text(&out));
    let third_vkey = as_admin.get("/api/v1/keys/log", &[]).await.unwrap()["items"][2]["vkey"]
        .as_str()
        .unwrap()
        .to_string();
    let out = ca.bsn(&["audit", "verify", "--log-vkey", old_vkey_file.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&third_vkey), "{}", text(&out));
    let out = ca.bsn(&["keys", "list", "log"]);
    assert!(out.status.success(), "{}", text(&out));
    let listed = text(&out);
    assert!(
        listed.contains("retired") && listed.contains("active") && listed.contains(&third_vkey),
        "{listed}"
    );
}

/// A CA (or whoever holds its old key) that publishes a "handover" to a key of its own without
/// logging it: the handover checkpoint is signed by the old key and the new one, but the tree it
/// commits to holds no begun leaf naming them. An auditor pinning the old key refuses it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_auditor_refuses_a_key_the_log_never_handed_over_to() {
    use sqlx::Row;
    let mut ca = TestCa::start();
    ca.participant("alice").await;
    let old = ca.log_signer();
    let rogue_pkcs8 = ca_server::log::LogSigner::generate().unwrap();
    let rogue = ca_server::log::LogSigner::new("test.example/log", &rogue_pkcs8).unwrap();
    let mut c = ca.db_conn().await;
    let row = sqlx::query("SELECT size, root FROM log_state WHERE id = 1")
        .fetch_one(&mut c)
        .await
        .unwrap();
    let (size, root): (i64, Vec<u8>) = (row.get(0), row.get(1));
    let root = tlog_tiles::Hash(root.try_into().unwrap());
    let by_old = old.sign_checkpoint(size as u64, root).unwrap();
    let by_rogue = rogue.sign_checkpoint(size as u64, root).unwrap();
    let both = format!("{}{}", by_old, by_rogue.lines().last().unwrap()) + "\n";
    assert!(signed_by(&old.vkey(), &both) && signed_by(&rogue.vkey(), &both));
    let public = {
        use base64::Engine;
        let raw = base64::engine::general_purpose::STANDARD
            .decode(rogue.vkey().splitn(3, '+').nth(2).unwrap())
            .unwrap();
        base64::engine::general_purpose::STANDARD.encode(&raw[1..])
    };
    sqlx::query(
        "INSERT INTO signing_keys (purpose, number, state, public_key, handover_checkpoint, created_at, changed_at) \
         VALUES ('log', 2, 'retired', $1, $2, 0, 0)",
    )
    .bind(&public)
    .bind(&both)
    .execute(&mut c)
    .await
    .unwrap();
    sqlx::query("UPDATE log_state SET checkpoint = $1 WHERE id = 1")
        .bind(&by_rogue)
        .execute(&mut c)
        .await
        .unwrap();
    let out = bsn_tests::audit(&ca);
    assert_eq!(out.status.code(), Some(6), "{}", text(&out));
    assert!(text(&out).contains("holds no handover"), "{}", text(&out));
}
