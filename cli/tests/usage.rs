//! `bsn` usage errors exit with code 2 and name what is missing.
//! (Also makes `cargo test --workspace` build the binary the end-to-end tests run.)

use std::process::Command;

#[test]
fn missing_arguments_are_usage_errors() {
    let out = Command::new(env!("CARGO_BIN_EXE_bsn"))
        .args(["enroll", "--id", "x"])
        .env_remove("BSN_CA")
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--ca") && err.contains("--secret"), "{err}");
}

#[test]
fn unreadable_bundle_is_a_local_error() {
    let out = Command::new(env!("CARGO_BIN_EXE_bsn"))
        .args(["enroll", "--id", "x", "--secret", "s", "--out", "/tmp/bsn-usage-x"])
        .args(["--ca", "https://127.0.0.1:1", "--ca-bundle", "/nonexistent/bundle.pem"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("/nonexistent/bundle.pem"));
}
