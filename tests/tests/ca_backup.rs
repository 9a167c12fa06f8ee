//! `ca-server backup` and `restore`: a backup taken while clients renew, the CA wiped, restored:
//! every certificate a client received before the backup is there, the log verifies with
//! `bsn audit verify`, serving resumes. Bad input changes nothing: an existing archive, a
//! non-empty target, a backup behind a published checkpoint.

use std::process::Command;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bsn_tests::{TestCa, bin, eventually, new_csr};
use serde_json::json;

fn ca_server(args: &[&str], dirs: &[&std::path::Path]) -> std::process::Output {
    let mut c = Command::new(bin("ca-server"));
    c.args(args);
    for d in dirs {
        c.arg(d);
    }
    c.output().unwrap()
}

fn text(o: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_backup_under_issuance_load_restores_every_certificate_and_the_log() {
    let mut ca = TestCa::start();
    let admin = ca.admin();
    let alice = ca.participant("alice").await;
    let data = ca.data_dir();

    // Issuance load: four clients renewing with new keys, each certificate noted as received.
    let received = Arc::new(Mutex::new(Vec::<String>::new()));
    let stop = Arc::new(AtomicBool::new(false));
    let mut load = Vec::new();
    for _ in 0..4 {
        let (api, received, stop) = (ca.api(Some(&alice)), received.clone(), stop.clone());
        load.push(tokio::spawn(async move {
            while !stop.load(Ordering::Relaxed) {
                if let Ok(v) = api.post("/api/v1/renew", &json!({ "csr": new_csr() })).await {
                    received.lock().unwrap().push(v["serial"].as_str().unwrap().to_string());
                }
            }
        }));
    }
    eventually("some renewals", Duration::from_secs(30), || async {
        (received.lock().unwrap().len() >= 40).then_some(())
    })
    .await;
    let before: Vec<String> = received.lock().unwrap().clone();

    let archive = ca.dir.path().join("ca-backup.tar");
    let out = ca_server(&["backup", "--out", archive.to_str().unwrap(), "--data-dir"], &[&data]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("backup of test.example"), "{}", text(&out));
    let sqlite = bsn_tests::backend() == "sqlite";
    assert_eq!(!sqlite, text(&out).contains("pg_dump"), "{}", text(&out));
    // The load went on while it was taken, and goes on after.
    let during = received.lock().unwrap().len();
    eventually("renewals after the backup", Duration::from_secs(30), || async {
        (received.lock().unwrap().len() >= during + 20).then_some(())
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(std::fs::metadata(&archive).unwrap().permissions().mode() & 0o777, 0o600);

    // An existing archive is never overwritten.
    let size = std::fs::metadata(&archive).unwrap().len();
    let again = ca_server(&["backup", "--out", archive.to_str().unwrap(), "--data-dir"], &[&data]);
    assert!(
        !again.status.success() && text(&again).contains("refusing to overwrite"),
        "{}",
        text(&again)
    );
    assert_eq!(std::fs::metadata(&archive).unwrap().len(), size);

    let published = ca.api(None).get_bytes("/log/checkpoint").await.unwrap();
    let published_file = ca.dir.path().join("published-checkpoint");
    std::fs::write(&published_file, &published).unwrap();

    // The CA is lost.
    ca.kill_all();
    std::fs::remove_dir_all(&data).unwrap();

    // A non-empty target: refused, untouched.
    let occupied = ca.dir.path().join("occupied");
    std::fs::create_dir_all(&occupied).unwrap();
    std::fs::write(occupied.join("ca.toml"), "trust_domain = \"other\"\n").unwrap();
    let o = ca_server(
        &["restore", "--from", archive.to_str().unwrap(), "--data-dir"],
        &[&occupied],
    );
    assert!(!o.status.success() && text(&o).contains("not empty"), "{}", text(&o));
    assert_eq!(std::fs::read_dir(&occupied).unwrap().count(), 1);
    if sqlite {
        // The snapshot's log is behind what was published since: restoring it would fork the log.
        let o = ca_server(
            &[
                "restore",
                "--from",
                archive.to_str().unwrap(),
                "--published-checkpoint",
                published_file.to_str().unwrap(),
                "--data-dir",
            ],
            &[&data],
        );
        assert!(!o.status.success() && text(&o).contains("fork"), "{}", text(&o));
        assert!(!data.exists(), "nothing was written");
    }

    let o = ca_server(
        &["restore", "--from", archive.to_str().unwrap(), "--data-dir"],
        &[&data],
    );
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("next: ca-server serve"), "{}", text(&o));
    ca.restart();

    // Every certificate a client received before the backup is on record.
    let admin_api = ca.api(Some(&admin));
    for serial in &before {
        admin_api
            .get(&format!("/api/v1/certificates/{serial}"), &[])
            .await
            .unwrap_or_else(|e| panic!("certificate {serial} lost in the restore: {e}"));
    }
    // The log verifies from its tiles with the pinned key.
    let audit = bsn_tests::audit(&ca);
    assert!(audit.status.success(), "{}", text(&audit));
    // Serving resumes: a new participant enrolls and renews.
    let carol = ca.participant("carol").await;
    ca.api(Some(&carol))
        .post("/api/v1/renew", &json!({ "csr": new_csr() }))
        .await
        .unwrap();
    println!(
        "{} certificates received before the backup, all restored ({} in all during the load)",
        before.len(),
        received.lock().unwrap().len()
    );
}
