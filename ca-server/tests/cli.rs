//! The `ca-server` command refuses bad arguments clearly and creates nothing.
//! (Also makes `cargo test --workspace` build the binary the end-to-end tests run.)

use std::process::Command;

fn ca_server() -> Command {
    Command::new(env!("CARGO_BIN_EXE_ca-server"))
}

#[test]
fn init_refuses_a_bad_trust_domain_and_writes_nothing() {
    let dir = std::env::temp_dir().join(format!("ca-server-cli-{}", std::process::id()));
    let out = ca_server()
        .args(["init", "--data-dir"])
        .arg(&dir)
        .args(["--trust-domain", "Not A Domain"])
        .env("BSN_CA_PASSPHRASE", "long enough passphrase")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("trust domain"), "{err}");
    assert!(!dir.exists(), "nothing is created on bad input");
}

#[test]
fn init_refuses_a_short_passphrase() {
    let dir = std::env::temp_dir().join(format!("ca-server-cli-short-{}", std::process::id()));
    let out = ca_server()
        .args(["init", "--data-dir"])
        .arg(&dir)
        .args(["--trust-domain", "example.org"])
        .env("BSN_CA_PASSPHRASE", "short")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("at least 12"));
    assert!(!dir.exists());
}

#[test]
fn serve_without_init_says_what_to_run() {
    let out = ca_server()
        .args(["serve", "--data-dir", "/nonexistent/bsn"])
        .env("BSN_CA_PASSPHRASE", "long enough passphrase")
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("ca-server init"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
