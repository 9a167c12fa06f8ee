//! The network in containers: `docker/compose.yaml` brought up with docker-compose (PostgreSQL,
//! two CA replicas, three orderers, four city nodes in two cities, each container its own host).
//! A participant enrolls against CA replica 1 and joins the demo subchain through replica 2; a
//! write through a city node in beijing is read back from one in shanghai; the ordering leader
//! is `docker kill`ed under write load (nothing acknowledged is lost, a new leader takes over,
//! all city nodes end with identical block hash chains); one city node is disconnected from the
//! backbone network for 30 s (it serves stale reads to its city, then catches up); one CA
//! replica is stopped (the other keeps issuing and the feed keeps flowing to the nodes).
//!
//! Needs a Docker engine, docker-compose, the `debian:bookworm-slim` base image and the release
//! binaries; it runs only with `BSN_CONTAINER_TESTS=1` (`.ci/run` sets it up and checks that it
//! ran) and otherwise says it was skipped.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use bsn_api::client::Api;
use bsn_tests::{Writers, chain_hashes, chain_of, commit_latency, eventually, put, sign_tx, submit_body};
use serde_json::Value;

const PROJECT: &str = "bsnci";

/// A compose project; `down -v` when dropped (unless BSN_KEEP_CONTAINERS is set).
struct Compose {
    file: PathBuf,
    ports: Vec<(&'static str, u16)>,
}

impl Compose {
    fn command(&self) -> Command {
        let mut c = Command::new("docker-compose");
        c.args(["-p", PROJECT, "-f"]).arg(&self.file);
        c.env("BSN_CA_PASSPHRASE", "container test passphrase, not for real keys");
        c.env("BSN_LOG", "warn,openraft=error");
        for (var, port) in &self.ports {
            c.env(var, port.to_string());
        }
        c
    }

    fn run(&self, args: &[&str]) -> Output {
        self.command().args(args).output().expect("docker-compose")
    }

    /// Runs and insists on success; returns stdout.
    fn ok(&self, args: &[&str]) -> String {
        let out = self.run(args);
        assert!(
            out.status.success(),
            "docker-compose {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// The container id of a service.
    fn id(&self, service: &str) -> String {
        self.ok(&["ps", "-q", service]).trim().to_string()
    }

    /// `bsn ...` in the `cli` container (on every network), as the demo participant.
    fn cli(&self, args: &[&str]) -> Output {
        let mut all = vec!["exec", "-T", "cli", "bsn"];
        all.extend_from_slice(args);
        self.run(&all)
    }

    fn port(&self, var: &str) -> u16 {
        self.ports.iter().find(|(v, _)| *v == var).unwrap().1
    }
}

impl Drop for Compose {
    fn drop(&mut self) {
        if std::env::var_os("BSN_KEEP_CONTAINERS").is_some() {
            return;
        }
        if std::thread::panicking() {
            let logs = self.run(&["logs", "--no-color", "--tail", "40"]);
            eprintln!("{}", String::from_utf8_lossy(&logs.stdout));
        }
        let _ = self.run(&["down", "-v", "--remove-orphans", "-t", "5"]);
    }
}

fn docker(args: &[&str]) -> String {
    let out = Command::new("docker").args(args).output().expect("docker");
    assert!(
        out.status.success(),
        "docker {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

fn bsn(args: &[&str]) -> String {
    let out = Command::new(bsn_tests::bin("bsn")).args(args).output().expect("bsn");
    assert!(
        out.status.success(),
        "bsn {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

async fn info(api: &Api) -> Option<Value> {
    api.get("/api/v1/subchains/demo", &[]).await.ok()
}

async fn height(api: &Api) -> Option<u64> {
    info(api).await.and_then(|v| v["height"].as_u64())
}

/// The container's address on `network` and the name of its interface there, and its PID.
fn attachment(id: &str, network: &str) -> (String, String, String) {
    let ip = docker(&[
        "inspect",
        "-f",
        &format!("{{{{(index .NetworkSettings.Networks \"{network}\").IPAddress}}}}"),
        id,
    ]);
    let pid = docker(&["inspect", "-f", "{{.State.Pid}}", id]);
    let out = Command::new("nsenter")
        .args(["-t", &pid, "-n", "ip", "-o", "-4", "addr", "show"])
        .output()
        .expect("nsenter");
    let text = String::from_utf8_lossy(&out.stdout);
    let dev = text
        .lines()
        .find(|l| l.contains(&format!(" {ip}/")))
        .and_then(|l| l.split_whitespace().nth(1))
        .unwrap_or_else(|| panic!("no interface with {ip} in {id}: {text}"))
        .to_string();
    (ip, dev, pid)
}

/// Runs `iptables ARGS` in the network namespace of the process `pid` (from the host: the
/// container gets no capability).
fn iptables(pid: &str, args: &[String]) {
    let out = Command::new("nsenter")
        .args(["-t", pid, "-n", "iptables"])
        .args(args)
        .output()
        .expect("nsenter iptables");
    assert!(
        out.status.success(),
        "iptables {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Registers `id` as the operator at `ca` and enrolls it there with `bsn`; returns its directory.
fn enroll(ca: &str, bundle: &Path, admin: &Path, id: &str, dir: &Path) -> PathBuf {
    let out = bsn(&[
        "register",
        "--ca",
        ca,
        "--ca-bundle",
        s(bundle),
        "--cert",
        s(&admin.join("cert.pem")),
        "--key",
        s(&admin.join("key.pem")),
        "--id",
        id,
    ]);
    let secret = out
        .lines()
        .find_map(|l| l.strip_prefix("enrollment secret: "))
        .expect("a secret")
        .to_string();
    let who = dir.join(id);
    bsn(&[
        "enroll",
        "--ca",
        ca,
        "--ca-bundle",
        s(bundle),
        "--id",
        id,
        "--secret",
        &secret,
        "--out",
        s(&who),
    ]);
    who
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_network_in_containers_survives_what_a_network_meets() {
    if std::env::var("BSN_CONTAINER_TESTS").as_deref() != Ok("1") {
        println!("skipped: set BSN_CONTAINER_TESTS=1 (needs a Docker engine and docker-compose)");
        return;
    }
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap().to_path_buf();
    let base = bsn_tests::free_ports(9);
    let vars = [
        "BSN_CA1_PORT",
        "BSN_CA2_PORT",
        "BSN_NODE1_PORT",
        "BSN_NODE2_PORT",
        "BSN_NODE3_PORT",
        "BSN_NODE4_PORT",
        "BSN_ORDERER1_PORT",
        "BSN_ORDERER2_PORT",
        "BSN_ORDERER3_PORT",
    ];
    let compose = Compose {
        file: root.join("docker/compose.yaml"),
        ports: vars.iter().enumerate().map(|(i, v)| (*v, base + i as u16)).collect(),
    };
    let _ = compose.run(&["down", "-v", "--remove-orphans", "-t", "1"]);
    let t0 = Instant::now();
    compose.ok(&["up", "-d", "--build"]);

    // The one-shot setup service initialises the CA, registers every node and creates the demo
    // subchain; it exits 0 when the network is ready.
    let setup = compose.id("setup");
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let state = docker(&["inspect", "-f", "{{.State.Status}} {{.State.ExitCode}}", &setup]);
        if state == "exited 0" {
            break;
        }
        if state.starts_with("exited") || Instant::now() > deadline {
            let logs = compose.run(&["logs", "--no-color", "setup"]);
            panic!("setup: {state}\n{}", String::from_utf8_lossy(&logs.stdout));
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    println!("network set up in {:.1} s", t0.elapsed().as_secs_f64());

    // The operator's credentials and the trust bundle, copied out as an operator would.
    let dir = tempfile::tempdir().unwrap();
    let admin = dir.path().join("admin");
    std::fs::create_dir_all(&admin).unwrap();
    for (from, to) in [
        ("/shared/trust-bundle.pem", dir.path().join("bundle.pem")),
        ("/operator/admin/cert.pem", admin.join("cert.pem")),
        ("/operator/admin/key.pem", admin.join("key.pem")),
    ] {
        let out = compose.run(&["exec", "-T", "cli", "cat", from]);
        assert!(out.status.success(), "cat {from}");
        std::fs::write(&to, out.stdout).unwrap();
    }
    let bundle = dir.path().join("bundle.pem");
    let ca1 = format!("https://127.0.0.1:{}", compose.port("BSN_CA1_PORT"));
    let ca2 = format!("https://127.0.0.1:{}", compose.port("BSN_CA2_PORT"));

    // Every node is in the CA's signed directory with its container URL, role and city.
    let nodes = bsn(&["nodes", "--ca", &ca1, "--ca-bundle", s(&bundle)]);
    for (id, role, city) in [
        ("orderer-1", "orderer", "beijing"),
        ("orderer-2", "orderer", "shanghai"),
        ("orderer-3", "orderer", "beijing"),
        ("node-1", "node", "beijing"),
        ("node-2", "node", "beijing"),
        ("node-3", "node", "shanghai"),
        ("node-4", "node", "shanghai"),
    ] {
        let url = format!("https://{id}:9443");
        let row = [id, role, city, url.as_str()];
        assert!(
            nodes.lines().any(|l| l.split_whitespace().take(4).eq(row)),
            "{row:?} not in:\n{nodes}"
        );
    }

    // Enroll against replica 1, join through replica 2.
    let carol = enroll(&ca1, &bundle, &admin, "carol", dir.path());
    let (cc, ck) = (carol.join("cert.pem"), carol.join("key.pem"));
    let me = ["--cert", s(&cc), "--key", s(&ck)];
    let mut join = vec![
        "subchain",
        "join",
        "demo",
        "--role",
        "writer",
        "--ca",
        &ca2,
        "--ca-bundle",
        s(&bundle),
    ];
    join.extend_from_slice(&me);
    bsn(&join);
    let node_api = |var: &str, who: &Path| {
        Api::from_files(
            &format!("https://127.0.0.1:{}", compose.port(var)),
            &bundle,
            Some((&who.join("cert.pem"), &who.join("key.pem"))),
        )
        .unwrap()
    };
    let n: Vec<Api> = ["BSN_NODE1_PORT", "BSN_NODE2_PORT", "BSN_NODE3_PORT", "BSN_NODE4_PORT"]
        .iter()
        .map(|v| node_api(v, &carol))
        .collect();
    let o: Vec<Api> = ["BSN_ORDERER1_PORT", "BSN_ORDERER2_PORT", "BSN_ORDERER3_PORT"]
        .iter()
        .map(|v| node_api(v, &carol))
        .collect();

    // A write through beijing (node-1) is read back in shanghai (node-3). The node may not have
    // the revision that admitted carol yet: retry until it has.
    let tx = sign_tx(&carol, "demo", vec![put("from-beijing", "hello")]);
    let t1 = Instant::now();
    eventually(
        "node-1 to take carol's first write",
        Duration::from_secs(30),
        || async {
            n[0].post(
                "/api/v1/subchains/demo/transactions",
                &submit_body(std::slice::from_ref(&tx)),
            )
            .await
            .ok()
        },
    )
    .await;
    let v = eventually("node-3 in shanghai to serve it", Duration::from_secs(15), || async {
        n[2].get("/api/v1/subchains/demo/state/from-beijing", &[]).await.ok()
    })
    .await;
    assert_eq!(v["text"], "hello");
    println!(
        "written in beijing, read in shanghai {} ms later",
        t1.elapsed().as_millis()
    );

    // docker kill the ordering leader while writers write through both cities.
    let leader = info(&o[0]).await.unwrap()["leader"].as_str().unwrap().to_string();
    let li = ["orderer-1", "orderer-2", "orderer-3"]
        .iter()
        .position(|x| *x == leader)
        .unwrap_or_else(|| panic!("leader {leader} is not an orderer"));
    let writers = Writers::start(&[n[0].clone(), n[2].clone()], &carol, "demo", 4);
    writers
        .wait_for("writes before the kill", 150, Duration::from_secs(30))
        .await;
    compose.ok(&["kill", &leader]);
    let killed_at = writers.acked();
    let t2 = Instant::now();
    writers
        .wait_for(
            "writes after the ordering leader died",
            killed_at + 150,
            Duration::from_secs(30),
        )
        .await;
    let failover = t2.elapsed();
    // A killed container closes nothing: its peers must notice without waiting for timeouts of
    // tens of seconds (it took 28 s before the HTTP/2 pings and the sticky orderer choice).
    assert!(
        failover < Duration::from_secs(10),
        "writes took {failover:?} to resume after the ordering leader was killed"
    );
    let acked_ids = writers.stop().await;
    let survivor = &o[(li + 1) % 3];
    let new_leader = info(survivor).await.unwrap()["leader"].as_str().map(str::to_string);
    assert!(
        new_leader.as_deref().is_some_and(|l| l != leader),
        "a new ordering leader: {new_leader:?}"
    );
    compose.ok(&["start", &leader]);
    let target = height(survivor).await.unwrap();
    for api in n.iter().chain(&o) {
        eventually(
            "every node and orderer to reach the height",
            Duration::from_secs(60),
            || async { height(api).await.filter(|h| *h >= target) },
        )
        .await;
    }
    let chains: Vec<Vec<[u8; 32]>> = {
        let mut v = Vec::new();
        for api in &n {
            v.push(chain_hashes(&chain_of(api, "demo").await));
        }
        v
    };
    let common = chains.iter().map(Vec::len).min().unwrap();
    assert!(common as u64 > target);
    for c in &chains[1..] {
        assert_eq!(
            c[..common],
            chains[0][..common],
            "identical block hash chains on the city nodes"
        );
    }
    let missing = bsn_tests::missing_on(&[&n[1], &n[3]], "demo", &acked_ids).await;
    assert_eq!(missing, 0, "acknowledged transactions missing on a city node");
    println!(
        "leader {leader} killed: {} acknowledged, none lost, writes resumed in {:.1} s, new leader {}",
        acked_ids.len(),
        failover.as_secs_f64(),
        new_leader.unwrap()
    );

    // Disconnect node-4 from the backbone for 30 s: it still answers reads in shanghai (from the
    // `cli` container) with what it had, then catches up once back.
    let network = format!("{PROJECT}_backbone");
    let node4 = compose.id("node-4");
    let before = height(&n[3]).await.unwrap();
    docker(&["network", "disconnect", &network, &node4]);
    let t3 = Instant::now();
    for i in 0..20 {
        let tx = sign_tx(&carol, "demo", vec![put(&format!("while-apart-{i}"), "x")]);
        n[0].post("/api/v1/subchains/demo/transactions", &submit_body(&[tx]))
            .await
            .expect("writes go on without node-4");
    }
    let moved_on = height(&n[0]).await.unwrap();
    assert!(moved_on > before);
    let mut stale_reads = 0;
    while t3.elapsed() < Duration::from_secs(30) {
        let out = compose.cli(&[
            "query",
            "get",
            "from-beijing",
            "--node",
            "https://node-4:9443",
            "--subchain",
            "demo",
        ]);
        assert!(
            out.status.success(),
            "node-4, cut off from the backbone, refused a read: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        stale_reads += 1;
        let out = compose.cli(&["query", "info", "--node", "https://node-4:9443", "--subchain", "demo"]);
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        let h: u64 = text
            .lines()
            .find_map(|l| l.strip_prefix("height "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|h| h.parse().ok())
            .unwrap_or_else(|| panic!("node-4 info: {text}"));
        assert!(
            h < moved_on,
            "node-4 cannot have the blocks ordered while it was cut off"
        );
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
    docker(&["network", "connect", "--alias", "node-4", &network, &node4]);
    let t4 = Instant::now();
    let target = height(&n[0]).await.unwrap();
    let h4 = eventually("node-4 to catch up", Duration::from_secs(15), || async {
        let out = compose.cli(&["query", "info", "--node", "https://node-4:9443", "--subchain", "demo"]);
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .find_map(|l| l.strip_prefix("height "))
            .and_then(|l| l.split_whitespace().next())
            .and_then(|h| h.parse::<u64>().ok())
            .filter(|h| *h >= target)
    })
    .await;
    println!(
        "node-4 apart 30 s: {stale_reads} stale reads served; caught up to {h4} in {:.1} s",
        t4.elapsed().as_secs_f64()
    );

    let node4_chain = chain_hashes(&chain_of(&n[3], "demo").await);
    let node1_chain = chain_hashes(&chain_of(&n[0], "demo").await);
    let common = node4_chain.len().min(node1_chain.len());
    assert_eq!(
        node4_chain[..common],
        node1_chain[..common],
        "node-4's chain after the partition"
    );

    // Between cities: 1% of the packets from a host in one city to a host in the other are
    // dropped (iptables in each container's network namespace, set from the host; the container
    // gets no capability). This machine's kernel has no netem qdisc, so no delay is added.
    // Commit latency through a node in each city, next to the same figures without loss.
    let city = |names: &[&str]| -> Vec<(String, String, String)> {
        names.iter().map(|s| attachment(&compose.id(s), &network)).collect()
    };
    let beijing = city(&["orderer-1", "orderer-3", "node-1", "node-2"]);
    let shanghai = city(&["orderer-2", "node-3", "node-4"]);
    let calm = [
        commit_latency(&n[0], &carol, "demo", "calm-beijing", 60).await,
        commit_latency(&n[2], &carol, "demo", "calm-shanghai", 60).await,
    ];
    let rule = |ip: &str| -> Vec<String> {
        [
            "OUTPUT",
            "-d",
            &format!("{ip}/32"),
            "-m",
            "statistic",
            "--mode",
            "random",
            "--probability",
            "0.01",
            "-j",
            "DROP",
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    for (here, there) in [(&beijing, &shanghai), (&shanghai, &beijing)] {
        for (_, _, pid) in here {
            for (ip, _, _) in there {
                let mut args = vec!["-A".to_string()];
                args.extend(rule(ip));
                iptables(pid, &args);
            }
        }
    }
    let lossy = [
        commit_latency(&n[0], &carol, "demo", "lossy-beijing", 60).await,
        commit_latency(&n[2], &carol, "demo", "lossy-shanghai", 60).await,
    ];
    for (here, there) in [(&beijing, &shanghai), (&shanghai, &beijing)] {
        for (_, _, pid) in here {
            for (ip, _, _) in there {
                let mut args = vec!["-D".to_string()];
                args.extend(rule(ip));
                iptables(pid, &args);
            }
        }
    }
    let leader_now = info(&o[0]).await.unwrap()["leader"]
        .as_str()
        .unwrap_or("none")
        .to_string();
    for (i, name) in ["beijing (node-1)", "shanghai (node-3)"].iter().enumerate() {
        println!(
            "commit latency through {name}, ordering leader {leader_now}: p50 {:.1} ms p99 {:.1} ms; \
             with 1% loss between the cities: p50 {:.1} ms p99 {:.1} ms",
            calm[i].0, calm[i].1, lossy[i].0, lossy[i].1
        );
    }

    // Stop CA replica 1: replica 2 keeps issuing, and the feed keeps flowing to the nodes (a
    // member admitted through replica 2 writes through a city node).
    compose.ok(&["stop", "-t", "5", "ca-1"]);
    let dave = enroll(&ca2, &bundle, &admin, "dave", dir.path());
    let mut set = vec![
        "subchain",
        "set-role",
        "demo",
        "--member",
        "dave",
        "--role",
        "writer",
        "--ca",
        &ca2,
        "--ca-bundle",
        s(&bundle),
        "--cert",
    ];
    let (ac, ak) = (admin.join("cert.pem"), admin.join("key.pem"));
    set.extend_from_slice(&[s(&ac), "--key", s(&ak)]);
    bsn(&set);
    let t5 = Instant::now();
    let dave_n2 = node_api("BSN_NODE2_PORT", &dave);
    let tx = sign_tx(&dave, "demo", vec![put("after-ca-1-stopped", "yes")]);
    eventually(
        "node-2 to learn of dave through replica 2's feed and take his write",
        Duration::from_secs(90),
        || async {
            dave_n2
                .post(
                    "/api/v1/subchains/demo/transactions",
                    &submit_body(std::slice::from_ref(&tx)),
                )
                .await
                .ok()
        },
    )
    .await;
    println!(
        "CA replica 1 stopped: replica 2 issued, and node-2 took the new member's write {:.1} s after the change",
        t5.elapsed().as_secs_f64()
    );
    compose.ok(&["down", "-v", "--remove-orphans", "-t", "5"]);
    println!(
        "the network in containers passed in {:.0} s",
        t0.elapsed().as_secs_f64()
    );
}
