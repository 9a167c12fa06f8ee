//! The `ledger-node` binary's own command line (its integration test also makes `cargo test`
//! build the binary that the end-to-end suites in `tests/` run).

use std::process::Command;

#[test]
fn serve_without_init_says_what_to_do() {
    let dir = std::env::temp_dir().join(format!("bsn-node-missing-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_ledger-node"))
        .args(["serve", "--data-dir"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("run `ledger-node init"), "{err}");
}

#[test]
fn init_refuses_a_missing_bundle() {
    let dir = std::env::temp_dir().join(format!("bsn-node-init-{}", std::process::id()));
    let out = Command::new(env!("CARGO_BIN_EXE_ledger-node"))
        .args(["init", "--data-dir"])
        .arg(&dir)
        .args([
            "--ca",
            "https://127.0.0.1:1",
            "--ca-bundle",
            "/nonexistent.pem",
            "--name",
            "n1",
            "--secret",
            "x",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("cannot read /nonexistent.pem"));
    assert!(!dir.exists(), "nothing written");
}
