//! `bsn devnet`: a whole network on loopback in one command: a development CA, three city nodes
//! hosting one demo subchain as one Raft group, and a demo participant who may write to it.
//! Everything lives in one directory (run it again to restart the same network); Ctrl-C stops
//! every process cleanly.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bsn_api::client::Api;
use serde_json::{Value, json};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::process::{Child, Command};

use super::{Failure, local};

fn sibling(name: &str) -> Result<PathBuf, Failure> {
    let exe = std::env::current_exe().map_err(local)?;
    let p = exe.with_file_name(name);
    if p.exists() {
        Ok(p)
    } else {
        Err(Failure {
            code: 1,
            message: format!("{} not found next to bsn", p.display()),
            hint: Some("build everything first: cargo build --release --workspace"),
        })
    }
}

/// Starts a child whose stdout and stderr go to `log`; returns it and a receiver of its stdout lines.
async fn spawn(
    cmd: &mut Command,
    log: &Path,
) -> Result<(Child, tokio::sync::mpsc::UnboundedReceiver<String>), Failure> {
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(log.with_extension("err.log")).map_err(local)?)
        .stdin(Stdio::null())
        .spawn()
        .map_err(|e| local(format!("cannot start {cmd:?}: {e}")))?;
    let stdout = child.stdout.take().expect("piped");
    let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
    let mut file = tokio::fs::File::create(log).await.map_err(local)?;
    tokio::spawn(async move {
        let mut lines = BufReader::new(stdout).lines();
        while let Ok(Some(l)) = lines.next_line().await {
            let _ = file.write_all(format!("{l}\n").as_bytes()).await;
            let _ = tx.send(l);
        }
    });
    Ok((child, rx))
}

async fn wait_line(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    what: &str,
    secs: u64,
) -> Result<String, Failure> {
    let found = tokio::time::timeout(Duration::from_secs(secs), async {
        while let Some(l) = rx.recv().await {
            if l.contains(what) {
                return Some(l);
            }
        }
        None
    })
    .await;
    match found {
        Ok(Some(l)) => Ok(l),
        _ => Err(local(format!(
            "gave up waiting for '{what}'; see the logs in the devnet directory"
        ))),
    }
}

fn api(url: &str, bundle: &Path, who: Option<&Path>) -> Result<Api, Failure> {
    let files = who.map(|d| (d.join("cert.pem"), d.join("key.pem")));
    Ok(Api::from_files(
        url,
        bundle,
        files.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
    )?)
}

async fn enroll(ca: &Api, id: &str, secret: &str, out: &Path) -> Result<(), Failure> {
    let key = bsn_api::files::generate_key(bsn_api::files::KeyType::P256).map_err(local)?;
    let csr = bsn_api::files::csr_pem(&key).map_err(local)?;
    let v = ca
        .post("/api/v1/enroll", &json!({ "id": id, "secret": secret, "csr": csr }))
        .await?;
    bsn_api::files::write_credentials(
        out,
        Some(&key.serialize_pem()),
        v["certificate"].as_str().unwrap_or_default(),
        v["chain"].as_str().unwrap_or_default(),
    )
    .map_err(local)
}

fn stop(children: &mut [Child]) {
    for c in children.iter() {
        if let Some(pid) = c.id() {
            let _ = std::process::Command::new("kill")
                .arg("-TERM")
                .arg(pid.to_string())
                .status();
        }
    }
}

/// Ctrl-C (SIGINT) or SIGTERM, whichever comes first: both stop the devnet and its children.
async fn stop_signal(term: &mut tokio::signal::unix::Signal) {
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

/// Registers an identity, or (a start interrupted after registering it) gives it a new secret;
/// either way the answer carries a one-time `secret`.
async fn register(ca: &bsn_api::client::Api, body: &serde_json::Value) -> Result<serde_json::Value, Failure> {
    match ca.post("/api/v1/identities", body).await {
        Err(bsn_api::client::ClientError::Problem { slug, .. }) if slug == "identity-exists" => {
            let id = body["id"].as_str().unwrap_or_default();
            Ok(ca.post(&format!("/api/v1/identities/{id}/secret"), &json!({})).await?)
        }
        other => Ok(other?),
    }
}

/// A new one-time secret for the bootstrap administrator, from `ca-server admin-secret`.
fn recover_admin_secret(ca_bin: &std::path::Path, ca_dir: &std::path::Path) -> Result<String, Failure> {
    let out = std::process::Command::new(ca_bin)
        .args(["admin-secret", "--data-dir"])
        .arg(ca_dir)
        .output()
        .map_err(local)?;
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .find(|l| l.contains("secret:"))
        .and_then(|l| l.split_whitespace().last())
        .map(str::to_string)
        .ok_or_else(|| {
            local(format!(
                "the CA printed no administrator secret and `ca-server admin-secret` gave none: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ))
        })
}

/// Runs the devnet until Ctrl-C or SIGTERM.
pub(crate) async fn run(dir: PathBuf, base_port: u16, nodes: usize) -> Result<(), Failure> {
    if !(1..=7).contains(&nodes) {
        return Err(local("--nodes must be from 1 to 7"));
    }
    // Catch SIGTERM before the first child exists, so no signal can orphan one.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(local)?;
    let ca_bin = sibling("ca-server")?;
    let node_bin = sibling("ledger-node")?;
    std::fs::create_dir_all(&dir).map_err(local)?;
    let dir = dir.canonicalize().map_err(local)?;
    let ca_url = format!("https://127.0.0.1:{base_port}");
    let names: Vec<String> = (1..=nodes).map(|i| format!("node{i}")).collect();
    let node_urls: Vec<String> = (1..=nodes)
        .map(|i| format!("https://127.0.0.1:{}", base_port + i as u16))
        .collect();
    let mut children: Vec<Child> = Vec::new();
    let setup = async {
        // The CA (development passphrase: this network is for trying things, never for real identities).
        let (child, mut out) = spawn(
            Command::new(&ca_bin)
                .args(["dev", "--data-dir"])
                .arg(dir.join("ca"))
                .args([
                    "--listen",
                    &format!("127.0.0.1:{base_port}"),
                    "--trust-domain",
                    "devnet.local",
                ])
                .env("BSN_LOG", "warn"),
            &dir.join("ca.log"),
        )
        .await?;
        children.push(child);
        let mut admin_secret = None;
        loop {
            let l = wait_line(&mut out, "", 60).await?;
            if l.contains("secret:") {
                admin_secret = l.split_whitespace().last().map(str::to_string);
            }
            if l.contains("listening on") {
                break;
            }
        }
        let bundle = dir.join("ca").join("trust-bundle.pem");
        let admin = dir.join("admin");
        if !admin.join("cert.pem").exists() {
            // A start interrupted before the administrator enrolled: ask the CA's database for a
            // new one-time secret, as an operator would.
            let secret = match admin_secret {
                Some(s) => s,
                None => recover_admin_secret(&ca_bin, &dir.join("ca"))?,
            };
            enroll(&api(&ca_url, &bundle, None)?, "admin", &secret, &admin).await?;
        }
        let ca = api(&ca_url, &bundle, Some(&admin))?;

        // The city nodes, each knowing where the others are.
        for (i, name) in names.iter().enumerate() {
            let ndir = dir.join(name);
            if !ndir.join("node.toml").exists() {
                let v = register(
                    &ca,
                    &json!({ "id": name, "type": "node", "dns_names": ["localhost"], "ip_addresses": ["127.0.0.1"] }),
                )
                .await?;
                let out = std::process::Command::new(&node_bin)
                    .args(["init", "--data-dir"])
                    .arg(&ndir)
                    .args(["--ca", &ca_url, "--ca-bundle"])
                    .arg(&bundle)
                    .args(["--name", name, "--secret", v["secret"].as_str().unwrap_or_default()])
                    .args(["--listen", &format!("127.0.0.1:{}", base_port + 1 + i as u16)])
                    .output()
                    .map_err(local)?;
                if !out.status.success() {
                    return Err(local(format!(
                        "ledger-node init {name}: {}",
                        String::from_utf8_lossy(&out.stderr)
                    )));
                }
                // `init` writes an empty [peers] table last: add the others.
                let mut toml = std::fs::read_to_string(ndir.join("node.toml")).map_err(local)?;
                for (j, other) in names.iter().enumerate() {
                    if j != i {
                        toml.push_str(&format!("{other} = \"{}\"\n", node_urls[j]));
                    }
                }
                bsn_api::files::write_file(&ndir.join("node.toml"), toml.as_bytes(), 0o644).map_err(local)?;
            }
            let (child, mut out) = spawn(
                Command::new(&node_bin)
                    .args(["serve", "--data-dir"])
                    .arg(&ndir)
                    .env("BSN_LOG", "warn,openraft=error"),
                &dir.join(format!("{name}.log")),
            )
            .await?;
            children.push(child);
            wait_line(&mut out, "listening on", 60).await?;
        }

        // The demo participant and the demo subchain on every node.
        let user = dir.join("demo-user");
        if !user.join("cert.pem").exists() {
            let v = register(&ca, &json!({ "id": "demo-user" })).await?;
            enroll(
                &api(&ca_url, &bundle, None)?,
                "demo-user",
                v["secret"].as_str().unwrap_or_default(),
                &user,
            )
            .await?;
        }
        if ca.get("/api/v1/subchains/demo", &[]).await.is_err() {
            ca.post(
                "/api/v1/subchains",
                &json!({ "id": "demo", "name": "Demo", "nodes": names, "policy": "open",
                         "description": "the devnet's demo subchain" }),
            )
            .await?;
        }
        // Every start (a start may have been interrupted between creating and admitting).
        let member = ca.get("/api/v1/subchains/demo/members", &[]).await?;
        let admitted = member["items"]
            .as_array()
            .is_some_and(|m| m.iter().any(|m| m["id"] == "demo-user" && m["role"] == "writer"));
        if !admitted {
            ca.put("/api/v1/subchains/demo/members/demo-user", &json!({ "role": "writer" }))
                .await?;
        }
        for url in &node_urls {
            let node = api(url, &bundle, Some(&user))?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                let ok = node
                    .get("/api/v1/subchains/demo", &[])
                    .await
                    .ok()
                    .is_some_and(|v: Value| v["leader"].is_string() && v["height"].is_u64());
                if ok {
                    break;
                }
                if tokio::time::Instant::now() > deadline {
                    return Err(local(format!(
                        "{url} did not start serving the demo subchain; see its log"
                    )));
                }
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
        }
        println!("CA:          {ca_url}  (administrator: {})", admin.display());
        for (name, url) in names.iter().zip(&node_urls) {
            println!("city node:   {url}  ({name})");
        }
        println!("demo key:    {}", user.join("key.pem").display());
        println!("demo cert:   {}", user.join("cert.pem").display());
        println!("trust bundle: {}", bundle.display());
        println!(
            "the network is ready: subchain 'demo' runs on {} nodes; demo-user may write",
            nodes
        );
        println!();
        println!("try next (in another terminal):");
        println!(
            "  export BSN_NODE={} BSN_CA_BUNDLE={} BSN_SUBCHAIN=demo BSN_CERT={} BSN_KEY={}",
            node_urls[nodes.min(2) - 1],
            bundle.display(),
            user.join("cert.pem").display(),
            user.join("key.pem").display()
        );
        println!("  bsn tx submit --put hello=world");
        println!("  bsn query get hello");
        println!("  bsn query blocks --follow");
        println!("  the portal: {ca_url}/ ; Ctrl-C here stops everything");
        Ok(())
    };
    // A signal while starting stops what was started, as it does later.
    let result = tokio::select! {
        r = setup => r,
        _ = stop_signal(&mut term) => Err(local("stopped before the network was ready")),
    };
    if let Err(e) = result {
        stop(&mut children);
        for c in &mut children {
            let _ = c.wait().await;
        }
        return Err(e);
    }
    stop_signal(&mut term).await;
    println!("stopping the devnet...");
    stop(&mut children);
    for c in &mut children {
        let _ = tokio::time::timeout(Duration::from_secs(20), c.wait()).await;
        let _ = c.start_kill();
    }
    println!(
        "stopped (data kept in {}; run bsn devnet again to restart it)",
        dir.display()
    );
    Ok(())
}
