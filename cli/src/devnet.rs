//! `bsn devnet`: a whole network on loopback in one command: a development CA, an ordering
//! cluster of three orderers, three city nodes (spread over two cities; everyone finds everyone
//! through the CA's node directory) hosting one demo subchain the orderers order, and a demo
//! participant who may write to it. `--orderers 0` has the city nodes order it themselves.
//! Everything lives in one directory (run it again to restart the same network); Ctrl-C stops
//! every process cleanly.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use bsn_api::ca::{
    Account, CreateSubchain, EnrollRequest, Issued, NewSecret, Page, RegisterRequest, Registered, Revised,
    SecretRequest, SetRole, Subchain,
};
use bsn_api::client::Api;
use bsn_api::node::SubchainInfo;
use identity::membership::{Member, Role};
use serde_json::json;
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

/// Waits for a line of `who`'s output containing `what`; says which process failed, how, and
/// where its log is when it does not come.
async fn wait_line(
    rx: &mut tokio::sync::mpsc::UnboundedReceiver<String>,
    what: &str,
    secs: u64,
    who: &str,
    log: &Path,
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
    let errors = log.with_extension("err.log");
    let last = std::fs::read_to_string(&errors)
        .ok()
        .and_then(|t| t.lines().rev().find(|l| !l.trim().is_empty()).map(str::to_string))
        .unwrap_or_default();
    match found {
        Ok(Some(l)) => Ok(l),
        Ok(None) => Err(local(format!(
            "{who} stopped before it was ready: {last} (log: {})",
            errors.display()
        ))),
        Err(_) => Err(local(format!(
            "{who} was not ready within {secs} s (log: {})",
            errors.display()
        ))),
    }
}

/// Fails with a usage error (exit 2) naming the first of `ports` that something else holds.
fn check_ports_free(ports: impl Iterator<Item = u16>) -> Result<(), Failure> {
    for port in ports {
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            return Err(Failure {
                code: 2,
                message: format!("port 127.0.0.1:{port} is already in use (another devnet, or another program)"),
                hint: Some("stop it, or choose other ports with --base-port"),
            });
        }
    }
    Ok(())
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
    let body = EnrollRequest {
        id: id.to_string(),
        secret: secret.to_string(),
        csr,
    };
    let v: Issued = ca.post_as("/api/v1/enroll", &body).await?;
    bsn_api::files::write_credentials(out, Some(&key.serialize_pem()), &v.certificate, &v.chain).map_err(local)
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
/// either way the answer is its one-time secret.
async fn register(ca: &Api, body: &RegisterRequest) -> Result<String, Failure> {
    match ca.post_as::<_, Registered>("/api/v1/identities", body).await {
        Err(bsn_api::client::ClientError::Problem { slug, .. }) if slug == "identity-exists" => {
            let v: NewSecret = ca
                .post_as(&format!("/api/v1/identities/{}/secret", body.id), &json!({}))
                .await?;
            Ok(v.secret)
        }
        other => Ok(other?.secret),
    }
}

/// A registration with the defaults (one enrollment within a day).
fn registration(id: &str, kind: &str, dns_names: &[&str], ip_addresses: &[&str]) -> RegisterRequest {
    RegisterRequest {
        id: id.to_string(),
        kind: kind.to_string(),
        roles: Vec::new(),
        attributes: serde_json::Map::new(),
        dns_names: dns_names.iter().map(|s| s.to_string()).collect(),
        ip_addresses: ip_addresses.iter().map(|s| s.to_string()).collect(),
        max_enrollments: 1,
        secret_ttl_seconds: 86_400,
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

/// Where the devnet's parts live and listen.
struct Net {
    dir: PathBuf,
    ca_bin: PathBuf,
    node_bin: PathBuf,
    base_port: u16,
    ca_url: String,
    /// Every ledger process: the city nodes first, then the orderers.
    names: Vec<String>,
    node_urls: Vec<String>,
    /// Each one's city (the cities given, in turn).
    node_cities: Vec<String>,
    /// Each one's role: `node` or `orderer`.
    kinds: Vec<&'static str>,
    /// How many of them are city nodes (the rest are orderers).
    city_nodes: usize,
    bundle: PathBuf,
    admin: PathBuf,
    user: PathBuf,
}

/// How the administrator reaches the portal: a one-time secret to claim the `admin` account
/// with, or (claimed on an earlier start) nothing new.
enum PortalAdmin {
    Claim(String),
    Claimed,
}

impl Net {
    fn new(dir: PathBuf, base_port: u16, nodes: usize, orderers: usize, cities: &[String]) -> Result<Self, Failure> {
        let total = nodes + orderers;
        std::fs::create_dir_all(&dir).map_err(local)?;
        let dir = dir.canonicalize().map_err(local)?;
        Ok(Self {
            ca_bin: sibling("ca-server")?,
            node_bin: sibling("ledger-node")?,
            ca_url: format!("https://127.0.0.1:{base_port}"),
            names: (1..=nodes)
                .map(|i| format!("node{i}"))
                .chain((1..=orderers).map(|i| format!("orderer{i}")))
                .collect(),
            node_urls: (1..=total)
                .map(|i| format!("https://127.0.0.1:{}", base_port + i as u16))
                .collect(),
            node_cities: (0..nodes)
                .map(|i| cities[i % cities.len()].clone())
                .chain((0..orderers).map(|i| cities[i % cities.len()].clone()))
                .collect(),
            kinds: (0..total).map(|i| if i < nodes { "node" } else { "orderer" }).collect(),
            city_nodes: nodes,
            bundle: dir.join("ca").join("trust-bundle.pem"),
            admin: dir.join("admin"),
            user: dir.join("demo-user"),
            base_port,
            dir,
        })
    }

    /// Starts the CA (development passphrase: this network is for trying things, never for real
    /// identities) and enrolls the administrator; returns a client as the administrator.
    async fn start_ca(&self, children: &mut Vec<Child>) -> Result<Api, Failure> {
        let (child, mut out) = spawn(
            Command::new(&self.ca_bin)
                .args(["dev", "--data-dir"])
                .arg(self.dir.join("ca"))
                .args([
                    "--listen",
                    &format!("127.0.0.1:{}", self.base_port),
                    "--trust-domain",
                    "devnet.local",
                ])
                .env("BSN_LOG", "warn"),
            &self.dir.join("ca.log"),
        )
        .await?;
        children.push(child);
        let mut admin_secret = None;
        loop {
            let l = wait_line(&mut out, "", 60, "the CA", &self.dir.join("ca.log")).await?;
            if l.contains("secret:") {
                admin_secret = l.split_whitespace().last().map(str::to_string);
            }
            if l.contains("listening on") {
                break;
            }
        }
        if !self.admin.join("cert.pem").exists() {
            // A start interrupted before the administrator enrolled: ask the CA's database for a
            // new one-time secret, as an operator would.
            let secret = match admin_secret {
                Some(s) => s,
                None => recover_admin_secret(&self.ca_bin, &self.dir.join("ca"))?,
            };
            enroll(&api(&self.ca_url, &self.bundle, None)?, "admin", &secret, &self.admin).await?;
        }
        api(&self.ca_url, &self.bundle, Some(&self.admin))
    }

    /// Registers and initialises city node `i` (first start only) and starts it.
    async fn start_node(&self, ca: &Api, i: usize, children: &mut Vec<Child>) -> Result<(), Failure> {
        let name = &self.names[i];
        let ndir = self.dir.join(name);
        if !ndir.join("node.toml").exists() {
            let secret = register(ca, &registration(name, self.kinds[i], &["localhost"], &["127.0.0.1"])).await?;
            let out = std::process::Command::new(&self.node_bin)
                .args(["init", "--data-dir"])
                .arg(&ndir)
                .args(["--ca", &self.ca_url, "--ca-bundle"])
                .arg(&self.bundle)
                .args(["--name", name, "--secret", &secret])
                .args(["--listen", &format!("127.0.0.1:{}", self.base_port + 1 + i as u16)])
                .args([
                    "--url",
                    &self.node_urls[i],
                    "--city",
                    &self.node_cities[i],
                    "--role",
                    self.kinds[i],
                ])
                // City nodes offer shared capacity, so `bsn subchain create --city` places
                // subchains on them.
                .args(if self.kinds[i] == "node" {
                    &[
                        "--capacity",
                        "shared",
                        "--capacity-rate",
                        "2000",
                        "--capacity-storage",
                        "1TiB",
                    ][..]
                } else {
                    &[][..]
                })
                .output()
                .map_err(local)?;
            if !out.status.success() {
                return Err(local(format!(
                    "ledger-node init {name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                )));
            }
            // No [peers] list: `init` published this node's URL and city in the CA's node
            // directory, and every node finds the others there.
        }
        let (child, mut out) = spawn(
            Command::new(&self.node_bin)
                .args(["serve", "--data-dir"])
                .arg(&ndir)
                .env("BSN_LOG", "warn,openraft=error"),
            &self.dir.join(format!("{name}.log")),
        )
        .await?;
        children.push(child);
        wait_line(
            &mut out,
            "listening on",
            60,
            &format!("{} {name}", self.kinds[i]),
            &self.dir.join(format!("{name}.log")),
        )
        .await?;
        Ok(())
    }

    /// The demo participant, and the demo subchain on every node with it as a writer. Each step
    /// is checked on every start (a start may have been interrupted between any two).
    async fn seed_demo(&self, ca: &Api) -> Result<(), Failure> {
        if !self.user.join("cert.pem").exists() {
            let secret = register(ca, &registration("demo-user", "participant", &[], &[])).await?;
            enroll(
                &api(&self.ca_url, &self.bundle, None)?,
                "demo-user",
                &secret,
                &self.user,
            )
            .await?;
        }
        if ca.get_as::<Subchain>("/api/v1/subchains/demo", &[]).await.is_err() {
            let body = CreateSubchain {
                id: "demo".into(),
                name: "Demo".into(),
                description: "the devnet's demo subchain".into(),
                policy: "open".into(),
                nodes: self.names[..self.city_nodes].to_vec(),
                cities: Vec::new(),
                // The nodes offer shared capacity: a subchain on them has a plan.
                plan: Some("business".into()),
                orderers: Some(self.names[self.city_nodes..].to_vec()),
            };
            let _: Revised = ca.post_as("/api/v1/subchains", &body).await?;
        }
        let members: Page<Member> = ca.get_as("/api/v1/subchains/demo/members", &[]).await?;
        let admitted = members
            .items
            .iter()
            .any(|m| m.id == "demo-user" && m.role == Role::Writer);
        if !admitted {
            let _: Revised = ca
                .put_as(
                    "/api/v1/subchains/demo/members/demo-user",
                    &SetRole { role: "writer".into() },
                )
                .await?;
        }
        Ok(())
    }

    /// Waits until every node and orderer serves the demo subchain with a first block (and the
    /// subchain's Raft voters with a leader: its orderers, or its city nodes when there are none).
    async fn wait_serving(&self) -> Result<(), Failure> {
        let no_orderers = self.city_nodes == self.names.len();
        for (url, kind) in self.node_urls.iter().zip(&self.kinds) {
            let voter = *kind == "orderer" || no_orderers;
            let node = api(url, &self.bundle, Some(&self.user))?;
            let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
            loop {
                let ok = node
                    .get_as::<SubchainInfo>("/api/v1/subchains/demo", &[])
                    .await
                    .ok()
                    .is_some_and(|v| (v.leader.is_some() || !voter) && v.height.is_some());
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
        Ok(())
    }

    /// The administrator's way into the portal: if no portal account holds `admin` yet, a fresh
    /// one-time secret (one use, one day) to claim it with on the Register page.
    async fn portal_admin(&self, ca: &Api) -> Result<PortalAdmin, Failure> {
        let approved: Page<Account> = ca.get_as("/api/v1/accounts", &[("state", "approved".into())]).await?;
        if approved.items.iter().any(|a| a.id == "admin") {
            return Ok(PortalAdmin::Claimed);
        }
        let v: NewSecret = ca
            .post_as(
                "/api/v1/identities/admin/secret",
                &SecretRequest {
                    max_enrollments: 1,
                    secret_ttl_seconds: 86_400,
                },
            )
            .await?;
        Ok(PortalAdmin::Claim(v.secret))
    }

    fn print_ready(&self, portal: &PortalAdmin) {
        println!(
            "CA:          {}  (administrator: {})",
            self.ca_url,
            self.admin.display()
        );
        for (((name, url), city), kind) in self
            .names
            .iter()
            .zip(&self.node_urls)
            .zip(&self.node_cities)
            .zip(&self.kinds)
        {
            let role = if *kind == "orderer" {
                "orderer:    "
            } else {
                "city node:  "
            };
            println!("{role} {url}  ({name}, {city})");
        }
        println!(
            "directory:   {}/api/v1/nodes  (bsn nodes: every node's role, city and URL)",
            self.ca_url
        );
        println!("demo key:    {}", self.user.join("key.pem").display());
        println!("demo cert:   {}", self.user.join("cert.pem").display());
        println!("trust bundle: {}", self.bundle.display());
        let orderers = self.names.len() - self.city_nodes;
        if orderers == 0 {
            println!(
                "the network is ready: subchain 'demo' runs on {} city nodes (ordered by their own Raft group); demo-user may write",
                self.city_nodes
            );
        } else {
            println!(
                "the network is ready: subchain 'demo' is ordered by {orderers} orderers and hosted by {} city nodes; demo-user may write",
                self.city_nodes
            );
        }
        println!();
        println!("try next (in another terminal):");
        println!(
            "  export BSN_NODE={} BSN_CA_BUNDLE={} BSN_SUBCHAIN=demo BSN_CERT={} BSN_KEY={}",
            self.node_urls[self.city_nodes.min(2) - 1],
            self.bundle.display(),
            self.user.join("cert.pem").display(),
            self.user.join("key.pem").display()
        );
        // The plans on offer, and a subchain placed by plan and city (as the administrator).
        println!("  bsn plans --ca {}", self.ca_url);
        println!(
            "  bsn subchain create notes --name Notes --plan free --city {} --ca {} --cert {} --key {}",
            self.node_cities[0],
            self.ca_url,
            self.admin.join("cert.pem").display(),
            self.admin.join("key.pem").display()
        );
        println!("  bsn tx submit --put hello=world");
        println!("  bsn query get hello");
        println!("  bsn query blocks --follow");
        match portal {
            PortalAdmin::Claim(secret) => println!(
                "  the portal as administrator: open {}/register, claim id admin with the one-time secret {secret} and choose a password; then sign in at {}/signin",
                self.ca_url, self.ca_url
            ),
            PortalAdmin::Claimed => println!(
                "  the portal as administrator: sign in at {}/signin as admin with the password you chose",
                self.ca_url
            ),
        }
        println!("  the portal: {}/ ; Ctrl-C here stops everything", self.ca_url);
    }
}

/// Runs the devnet until Ctrl-C or SIGTERM.
pub(crate) async fn run(
    dir: PathBuf,
    base_port: u16,
    nodes: usize,
    orderers: usize,
    cities: Vec<String>,
) -> Result<(), Failure> {
    if !(1..=9).contains(&nodes) {
        return Err(local("--nodes must be from 1 to 9"));
    }
    if orderers > 7 {
        return Err(local(
            "--orderers must be from 0 to 7 (0: the city nodes order the subchain themselves)",
        ));
    }
    let cities: Vec<String> = cities.into_iter().map(|c| c.trim().to_string()).collect();
    if cities.is_empty() {
        return Err(local("--cities needs at least one city"));
    }
    for c in &cities {
        identity::membership::check_city(c).map_err(local)?;
    }
    // Catch SIGTERM before the first child exists, so no signal can orphan one.
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()).map_err(local)?;
    let last = u32::from(base_port) + (nodes + orderers) as u32;
    if last > u32::from(u16::MAX) {
        return Err(Failure {
            code: 2,
            message: format!(
                "--base-port {base_port} leaves no room for {} ports",
                nodes + orderers + 1
            ),
            hint: Some("choose a lower --base-port"),
        });
    }
    check_ports_free((0..=(nodes + orderers) as u16).map(|i| base_port + i))?;
    let net = Net::new(dir, base_port, nodes, orderers, &cities)?;
    let mut children: Vec<Child> = Vec::new();
    let setup = async {
        let ca = net.start_ca(&mut children).await?;
        for i in 0..nodes + orderers {
            net.start_node(&ca, i, &mut children).await?;
        }
        net.seed_demo(&ca).await?;
        net.wait_serving().await?;
        let portal = net.portal_admin(&ca).await?;
        net.print_ready(&portal);
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
        net.dir.display()
    );
    Ok(())
}
