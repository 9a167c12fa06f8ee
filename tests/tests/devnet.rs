//! `bsn devnet`: one command brings up a CA and three city nodes, prints where everything is
//! and a "ready" line; the printed credentials write through one node and read through another;
//! Ctrl-C (SIGINT) stops every process and frees every port.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use bsn_tests::bin;

/// Stops the devnet (SIGINT, as Ctrl-C) if the test fails half-way.
struct Guard(u32);

impl Drop for Guard {
    fn drop(&mut self) {
        let _ = Command::new("kill").args(["-INT", &self.0.to_string()]).status();
        std::thread::sleep(Duration::from_secs(3));
    }
}

#[test]
fn devnet_starts_serves_and_stops_on_ctrl_c() {
    let dir = tempfile::tempdir().unwrap();
    let base = bsn_tests::free_ports(7);
    let mut child = Command::new(bin("bsn"))
        .args(["devnet", "--dir"])
        .arg(dir.path().join("net"))
        .args(["--base-port", &base.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let guard = Guard(child.id());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let t0 = Instant::now();
    let mut lines = Vec::new();
    loop {
        let l = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("bsn devnet did not get ready within 120 s");
        let done = l.contains("Ctrl-C here stops everything");
        lines.push(l);
        if done {
            break;
        }
    }
    let up = t0.elapsed();
    let field = |prefix: &str| -> Vec<String> {
        lines
            .iter()
            .filter_map(|l| l.strip_prefix(prefix))
            .map(|r| r.split_whitespace().next().unwrap().to_string())
            .collect()
    };
    let ca = field("CA:");
    let nodes = field("city node:");
    let orderers = field("orderer:");
    assert_eq!(orderers.len(), 3, "three orderers by default: {lines:#?}");
    let (key, cert) = (field("demo key:"), field("demo cert:"));
    let bundle = field("trust bundle:");
    assert_eq!(
        (ca.len(), nodes.len(), key.len(), cert.len()),
        (1, 3, 1, 1),
        "{lines:#?}"
    );
    assert!(ca[0].starts_with("https://") && nodes.iter().all(|n| n.starts_with("https://")));
    assert!(
        lines.iter().any(|l| l.contains("bsn tx submit")),
        "it says what to try next"
    );
    // It says how the administrator gets into the portal, and that way works: claim the admin
    // account with the printed secret, sign in, and be an administrator there.
    let line = lines
        .iter()
        .find(|l| l.contains("claim id admin with the one-time secret"))
        .unwrap_or_else(|| panic!("no portal sign-in for the administrator: {lines:#?}"));
    let secret = line
        .split("one-time secret ")
        .nth(1)
        .and_then(|r| r.split_whitespace().next())
        .unwrap();
    let jar = dir.path().join("cookies");
    let curl = |path: &str, body: Option<serde_json::Value>| {
        let mut c = Command::new("curl");
        c.args(["-sS", "--cacert", &bundle[0], "-c"])
            .arg(&jar)
            .arg("-b")
            .arg(&jar)
            .args(["-H", "content-type: application/json"]);
        if let Some(b) = body {
            c.args(["--data", &b.to_string()]);
        }
        let out = c.arg(format!("{}{path}", ca[0])).output().unwrap();
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap_or_default()
    };
    let password = "a long devnet passphrase for the admin 42";
    let claimed = curl(
        "/api/v1/portal/register",
        Some(
            serde_json::json!({ "id": "admin", "name": "Admin", "email": "admin@devnet.local",
                                 "password": password, "secret": secret }),
        ),
    );
    assert_eq!(claimed["state"], "approved", "{claimed}");
    let signed_in = curl(
        "/api/v1/portal/login",
        Some(serde_json::json!({ "id": "admin", "password": password })),
    );
    assert!(signed_in["csrf_token"].is_string(), "{signed_in}");
    let me = curl("/api/v1/portal/me", None);
    assert!(
        me["roles"].as_array().is_some_and(|r| r.iter().any(|x| x == "admin")),
        "{me}"
    );

    let bsn = |node: &str, args: &[&str]| {
        let mut all: Vec<&str> = args.to_vec();
        all.extend([
            "--node",
            node,
            "--ca-bundle",
            &bundle[0],
            "--cert",
            &cert[0],
            "--key",
            &key[0],
            "--subchain",
            "demo",
        ]);
        Command::new(bin("bsn")).args(&all).output().unwrap()
    };
    let out = bsn(&nodes[1], &["tx", "submit", "--put", "hello=world"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let submitted = String::from_utf8_lossy(&out.stdout).to_string();
    let txid = submitted
        .lines()
        .find_map(|l| l.strip_prefix("committed "))
        .expect("bsn tx submit names the transaction")
        .trim()
        .to_string();
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let out = bsn(&nodes[2], &["query", "get", "hello"]);
        if String::from_utf8_lossy(&out.stdout).trim() == "world" {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "node 3 never served the write made on node 2"
        );
        std::thread::sleep(Duration::from_millis(100));
    }

    // The typed client end to end: a transaction with its proof checked, the block chain
    // checked link by link, the chain's info, and a membership statement verified.
    let text = |o: std::process::Output| {
        assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
        String::from_utf8_lossy(&o.stdout).to_string()
    };
    let proof = text(bsn(&nodes[0], &["query", "tx", &txid]));
    assert!(proof.contains("inclusion proof verified"), "{proof}");
    assert!(proof.contains("put hello = world"), "{proof}");
    let chain = text(bsn(&nodes[0], &["query", "blocks"]));
    assert!(chain.starts_with("block 0 "), "{chain}");
    assert!(chain.lines().count() >= 2, "genesis and the write: {chain}");
    let range = text(bsn(&nodes[0], &["query", "range", "--start", "h", "--end", "i"]));
    let rows: Vec<Vec<&str>> = range.lines().map(|l| l.split_whitespace().collect()).collect();
    assert_eq!(rows[0], ["KEY", "VALUE", "BLOCK"], "{range}");
    assert_eq!(rows[1][..2], ["hello", "world"], "{range}");
    let json = text(bsn(&nodes[0], &["query", "range", "--json"]));
    let items: Vec<bsn_api::node::StateValue> = serde_json::from_str(&json).unwrap();
    assert_eq!(items.len(), 1, "{json}");
    let info = text(bsn(&nodes[0], &["query", "info"]));
    assert!(info.contains("subchain demo on node node1"), "{info}");
    assert!(info.contains("your role: writer"), "{info}");
    let statement = Command::new(bin("bsn"))
        .args([
            "subchain",
            "statement",
            "demo",
            "--ca",
            &ca[0],
            "--ca-bundle",
            &bundle[0],
        ])
        .args(["--cert", &cert[0], "--key", &key[0]])
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&statement.stderr).contains("signature verified"),
        "{}",
        String::from_utf8_lossy(&statement.stderr)
    );
    assert!(text(statement).contains("\"subchain\": \"demo\""));

    // The printed way to place a subchain by plan and city works as printed (with the
    // exported trust bundle), and the plan shows in its statement.
    let create = lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("bsn subchain create "))
        .unwrap_or_else(|| panic!("no placement example: {lines:#?}"));
    let out = Command::new(bin("bsn"))
        .args(["subchain", "create"])
        .args(create.split_whitespace())
        .env("BSN_CA_BUNDLE", &bundle[0])
        .output()
        .unwrap();
    assert!(text(out).contains("notes is at revision 1"));
    let shown = Command::new(bin("bsn"))
        .args(["subchain", "show", "notes", "--ca", &ca[0], "--ca-bundle", &bundle[0]])
        .args(["--cert", &cert[0], "--key", &key[0]])
        .output()
        .unwrap();
    let shown = text(shown);
    assert!(shown.contains("free: shared, 10 tx/s"), "{shown}");
    assert!(shown.contains("served by") && shown.contains("beijing"), "{shown}");

    // Ctrl-C: everything stops, cleanly, and the ports are free again.
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let status = loop {
        if let Some(s) = child.try_wait().unwrap() {
            break s;
        }
        assert!(
            Instant::now() < deadline,
            "bsn devnet did not stop within 30 s of Ctrl-C"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(status.success(), "devnet exit: {status:?}");
    std::mem::forget(guard);
    assert!(lines.iter().any(|l| l.contains("the network is ready")));
    for p in base..base + 4 {
        assert!(
            std::net::TcpListener::bind(("127.0.0.1", p)).is_ok(),
            "port {p} still in use"
        );
    }
    println!(
        "devnet ready in {} ms; wrote on node 2, read on node 3; stopped on Ctrl-C",
        up.as_millis()
    );
}

/// Starts `bsn devnet --nodes 1 --orderers 1`; returns the child and a receiver of its stdout
/// lines.
fn start_small(dir: &std::path::Path, base: u16) -> (std::process::Child, std::sync::mpsc::Receiver<String>) {
    let mut child = Command::new(bin("bsn"))
        .args(["devnet", "--nodes", "1", "--orderers", "1", "--dir"])
        .arg(dir)
        .args(["--base-port", &base.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    (child, rx)
}

/// Sends SIGTERM and waits for the devnet and every child to be gone (their ports free).
fn terminate(child: &mut std::process::Child, base: u16) {
    Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while child.try_wait().unwrap().is_none() {
        assert!(
            Instant::now() < deadline,
            "bsn devnet did not stop within 30 s of SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    for p in base..base + 3 {
        while std::net::TcpListener::bind(("127.0.0.1", p)).is_err() {
            assert!(
                Instant::now() < deadline,
                "port {p} still in use: a child outlived SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }
}

/// Regression: SIGTERM to `bsn devnet` left the CA and the nodes running.
#[test]
fn devnet_stops_its_children_on_sigterm_while_starting_and_when_ready() {
    let dir = tempfile::tempdir().unwrap();
    let base = bsn_tests::free_ports(4);
    // While starting: once the CA is up, before the network is ready.
    let (mut child, rx) = start_small(&dir.path().join("net"), base);
    let deadline = Instant::now() + Duration::from_secs(60);
    while std::net::TcpStream::connect(("127.0.0.1", base)).is_err() {
        assert!(Instant::now() < deadline, "the CA never listened");
        std::thread::sleep(Duration::from_millis(20));
    }
    terminate(&mut child, base);
    drop(rx);
    // Ready, then SIGTERM, on the same data.
    let (mut child, rx) = start_small(&dir.path().join("net"), base);
    loop {
        let l = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("bsn devnet did not get ready within 120 s");
        if l.contains("the network is ready") {
            break;
        }
    }
    terminate(&mut child, base);
}

#[test]
fn devnet_on_a_taken_port_says_which_and_what_to_do() {
    // Something else holds the second port (the first node's). Free ports are found by binding
    // and letting go, so another process may take one in between: take the next range then.
    let (base, _holder) = (0..20)
        .find_map(|_| {
            let base = bsn_tests::free_ports(3);
            std::net::TcpListener::bind(("127.0.0.1", base + 1))
                .ok()
                .map(|h| (base, h))
        })
        .expect("three free consecutive ports");
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin("bsn"))
        .args(["devnet", "--nodes", "1", "--orderers", "1", "--dir"])
        .arg(dir.path().join("net"))
        .args(["--base-port", &base.to_string()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("port 127.0.0.1:{} is already in use", base + 1)) && err.contains("--base-port"),
        "{err}"
    );
    assert!(
        !dir.path().join("net").join("ca").exists(),
        "nothing was started or written"
    );
}

/// examples/rust/notes.rs runs against a real `bsn devnet`, as its doc says to run it: add, follow
/// (attached before the second note commits), list, and a usage error.
#[test]
fn the_rust_notes_example_against_a_devnet() {
    let dir = tempfile::tempdir().unwrap();
    let base = bsn_tests::free_ports(4);
    let (mut child, rx) = start_small(&dir.path().join("net"), base);
    let _guard = Guard(child.id());
    let mut lines = Vec::new();
    while !lines
        .iter()
        .any(|l: &String| l.contains("Ctrl-C here stops everything"))
    {
        lines.push(
            rx.recv_timeout(Duration::from_secs(120))
                .expect("bsn devnet did not get ready within 120 s"),
        );
    }
    let export = lines
        .iter()
        .find_map(|l| l.trim().strip_prefix("export "))
        .unwrap_or_else(|| panic!("no export line: {lines:?}"))
        .to_string();
    let env: Vec<(String, String)> = export
        .split_whitespace()
        .filter_map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())))
        .collect();
    let notes = || {
        let mut c = Command::new(bin("examples/notes"));
        c.envs(env.iter().map(|(k, v)| (k.as_str(), v.as_str())));
        c
    };
    let out = notes().args(["add", "the shipment left the port"]).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.starts_with("added notes/") && text.contains(" in block "),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );

    let mut follower = notes().arg("follow").stdout(Stdio::piped()).spawn().unwrap();
    let (seen_tx, seen) = std::sync::mpsc::channel();
    let stdout = follower.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = seen_tx.send(line);
        }
    });
    let wait_for = |text: &str| {
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let l = seen
                .recv_timeout(left)
                .unwrap_or_else(|_| panic!("follow never printed {text:?}"));
            if l.contains(text) {
                return l;
            }
        }
    };
    // It starts at the tip, the first note's block: once it printed that, it is attached.
    let first = wait_for("the shipment left the port");
    assert!(
        first.starts_with("block ") && first.contains("\tdemo-user\t"),
        "{first}"
    );
    assert!(notes().args(["add", "it arrived"]).status().unwrap().success());
    wait_for("it arrived");
    Command::new("kill")
        .args(["-INT", &follower.id().to_string()])
        .status()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(10);
    while follower.try_wait().unwrap().is_none() {
        assert!(Instant::now() < deadline, "follow did not stop on Ctrl-C");
        std::thread::sleep(Duration::from_millis(50));
    }

    let listed = notes().arg("list").output().unwrap();
    assert!(listed.status.success());
    let listed = String::from_utf8_lossy(&listed.stdout).to_string();
    let rows: Vec<Vec<&str>> = listed.lines().map(|l| l.split('\t').collect()).collect();
    assert_eq!(
        rows.iter().map(|r| r[2]).collect::<Vec<_>>(),
        ["the shipment left the port", "it arrived"],
        "{listed}"
    );
    assert!(rows.iter().all(|r| r[1] == "demo-user"), "{listed}");
    let bad = notes().arg("add").output().unwrap();
    assert!(!bad.status.success() && String::from_utf8_lossy(&bad.stderr).contains("usage: notes add"));
    terminate(&mut child, base);
}
