//! The README, walked through literally by each kind of user, from the built binaries: the run
//! command's devnet and the commands it says to try next (a participant's first minutes); then
//! every command block of "Using the development CA", "Running a city node" and "Auditing the
//! issuance log", in order, in one directory, as an administrator, a participant, a node
//! operator, a publisher and an auditor would type them.
//!
//! The commands are read from README.md, not copied here, so the README cannot drift from what
//! works. Placeholders such as `<alice's secret>` are filled from what earlier commands printed,
//! as a person would; a trailing comment saying `(exit N)` is the exit code the README promises.
//! Servers (`ca-server dev`, `ledger-node serve`, `bsn devnet`) run in the background until
//! they print that they listen. The README's fixed ports (8443, 9443) must be free.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use bsn_tests::bin;

/// The kinds of user the README speaks to, and which of its commands are theirs.
fn kind_of(cmd: &str) -> &'static str {
    if cmd.contains("bsn audit") {
        "auditor"
    } else if cmd.contains("ledger-node") || cmd.contains("--type node") {
        "node operator"
    } else if cmd.contains("subchain create") {
        "publisher"
    } else if cmd.contains("ca-server") || cmd.contains("admin/cert.pem") || cmd.contains("--id admin") {
        "administrator"
    } else {
        "participant"
    }
}

/// One command of a README block: its text (continuation lines joined) and the exit code the
/// README promises for it.
#[derive(Debug)]
struct Step {
    command: String,
    exit: i32,
}

/// The indented command blocks of a `## ` section, in order.
fn blocks(readme: &str, section: &str) -> Vec<Step> {
    let start = readme
        .find(&format!("\n## {section}\n"))
        .unwrap_or_else(|| panic!("README has no section '{section}'"));
    let body = &readme[start + section.len() + 5..];
    let body = &body[..body.find("\n## ").unwrap_or(body.len())];
    let mut steps = Vec::new();
    let mut pending = String::new();
    for line in body.lines() {
        let Some(code) = line.strip_prefix("    ") else {
            assert!(pending.is_empty(), "a continued line ends the block: {pending}");
            continue;
        };
        let code = code.trim();
        if let Some(part) = code.strip_suffix('\\') {
            pending.push_str(part);
            continue;
        }
        pending.push_str(code);
        let command = std::mem::take(&mut pending);
        let exit = command
            .rsplit_once('#')
            .and_then(|(_, comment)| comment.split("(exit ").nth(1))
            .and_then(|r| r.split(')').next())
            .map(|n| n.parse().expect("(exit N)"))
            .unwrap_or(0);
        steps.push(Step { command, exit });
    }
    assert!(!steps.is_empty(), "section '{section}' has no commands");
    steps
}

/// A server started by a README command, its output lines, and how to stop it.
struct Server {
    child: Child,
    lines: Receiver<String>,
    seen: Vec<String>,
}

impl Server {
    fn start(sh: &Shell, command: &str) -> Self {
        let mut child = sh
            .command(command)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        for out in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn std::io::Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let tx = tx.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(out).lines().map_while(Result::ok) {
                    let _ = tx.send(line);
                }
            });
        }
        Server {
            child,
            lines: rx,
            seen: Vec::new(),
        }
    }

    /// Waits for a line containing `what`, failing with everything printed so far.
    fn wait_for(&mut self, what: &str, within: Duration) {
        let deadline = Instant::now() + within;
        while !self.seen.iter().any(|l| l.contains(what)) {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(l) => self.seen.push(l),
                Err(_) => panic!("no '{what}' within {within:?}; it printed:\n{}", self.seen.join("\n")),
            }
        }
    }

    /// Ctrl-C, as a person stops it; it must be gone within 30 s.
    fn stop(&mut self) {
        let _ = Command::new("kill")
            .args(["-INT", &self.child.id().to_string()])
            .status();
        let deadline = Instant::now() + Duration::from_secs(30);
        while self.child.try_wait().unwrap().is_none() {
            assert!(Instant::now() < deadline, "it did not stop within 30 s of Ctrl-C");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = Command::new("kill")
                .args(["-INT", &self.child.id().to_string()])
                .status();
            std::thread::sleep(Duration::from_secs(2));
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// A person's terminal: a working directory with `target/release` in it (as in a clone),
/// that directory on `PATH`, and the variables the README exports.
struct Shell {
    dir: PathBuf,
    env: BTreeMap<String, String>,
}

impl Shell {
    fn new(dir: &Path) -> Self {
        let bins = bin("bsn").parent().unwrap().to_path_buf();
        std::fs::create_dir_all(dir.join("target")).unwrap();
        std::os::unix::fs::symlink(&bins, dir.join("target/release")).unwrap();
        let path = format!(
            "{}:{}",
            dir.join("target/release").display(),
            std::env::var("PATH").unwrap_or_default()
        );
        Shell {
            dir: dir.to_path_buf(),
            env: BTreeMap::from([("PATH".to_string(), path)]),
        }
    }

    fn command(&self, line: &str) -> Command {
        let mut c = Command::new("bash");
        c.args(["-c", line]).current_dir(&self.dir);
        // Nothing from the test's own environment that the README does not set.
        for (k, _) in std::env::vars() {
            if k.starts_with("BSN_") {
                c.env_remove(k);
            }
        }
        c.envs(&self.env);
        c
    }

    /// `export A=B C=D`, kept for the following commands.
    fn export(&mut self, line: &str) {
        for assignment in line.trim_start_matches("export ").split_whitespace() {
            let (k, v) = assignment.split_once('=').expect("NAME=VALUE");
            self.env.insert(k.to_string(), v.to_string());
        }
    }
}

/// Fills `<...>` placeholders from what earlier commands printed.
fn fill(command: &str, known: &BTreeMap<String, String>) -> String {
    let mut out = command.to_string();
    while let Some(start) = out.find('<') {
        let end = start + out[start..].find('>').expect("unclosed placeholder");
        let name = &out[start..=end];
        let value = known
            .get(name)
            .unwrap_or_else(|| panic!("the README's {name} is not known at this point (known: {known:?})"));
        out.replace_range(start..=end, value);
    }
    out
}

/// What a person would take from a command's output for later steps.
fn learn(command: &str, stdout: &str, known: &mut BTreeMap<String, String>) {
    if let Some(secret) = stdout.lines().find_map(|l| l.strip_prefix("enrollment secret: ")) {
        let id = command
            .split_whitespace()
            .skip_while(|w| *w != "--id")
            .nth(1)
            .expect("a registration names --id");
        known.insert(format!("<{id}'s secret>"), secret.trim().to_string());
    }
}

/// Runs one README command; retries only reads and submissions that may race a server still
/// catching up (a fresh node, a revocation on its way), for at most 30 s.
fn run(sh: &mut Shell, step: &Step, known: &mut BTreeMap<String, String>, log: &mut Vec<String>) -> String {
    let line = fill(&step.command, known);
    if line.starts_with("export ") {
        sh.export(&line);
        return String::new();
    }
    let retry = ["bsn tx ", "bsn query ", "bsn subchain join", "bsn subchain show"]
        .iter()
        .any(|c| line.contains(c));
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let t0 = Instant::now();
        let out = sh.command(&line).output().unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        let code = out.status.code().unwrap_or(-1);
        if code == step.exit {
            log.push(format!(
                "{:<14} exit {code} {:>6} ms  {}",
                kind_of(&line),
                t0.elapsed().as_millis(),
                step.command
            ));
            learn(&line, &stdout, known);
            return stdout + &stderr;
        }
        assert!(
            retry && Instant::now() < deadline,
            "README command `{}` exited {code}, the README says {}:\n{stdout}{stderr}",
            step.command,
            step.exit
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn free(port: u16) {
    assert!(
        std::net::TcpListener::bind(("127.0.0.1", port)).is_ok(),
        "port {port} is taken: the README's commands use it (is a devnet or a dev CA running?)"
    );
}

#[test]
fn the_readme_walked_through_by_each_kind_of_user() {
    let readme = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("../README.md")).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut sh = Shell::new(dir.path());
    let mut known = BTreeMap::new();
    let mut log = Vec::new();
    free(8443);
    free(9443);

    // The first screen: the run command (the build half is done), then what it says to try.
    let run_line = readme
        .lines()
        .find_map(|l| l.strip_prefix("    cargo build --release --workspace && "))
        .expect("README's run command");
    let mut devnet = Server::start(&sh, run_line);
    devnet.wait_for("Ctrl-C here stops everything", Duration::from_secs(120));
    let tries: Vec<String> = devnet
        .seen
        .iter()
        .skip_while(|l| !l.starts_with("try next"))
        .skip(1)
        .map(|l| l.trim().to_string())
        .filter(|l| (l.starts_with("export ") || l.starts_with("bsn ")) && !l.contains("--follow"))
        .collect();
    assert!(tries.len() >= 3, "devnet says what to try: {:#?}", devnet.seen);
    let mut read_back = String::new();
    for t in &tries {
        read_back = run(
            &mut sh,
            &Step {
                command: t.clone(),
                exit: 0,
            },
            &mut known,
            &mut log,
        );
    }
    assert!(
        read_back.contains("world"),
        "the value devnet suggests writing reads back: {read_back}"
    );
    devnet.stop();
    sh.env.retain(|k, _| k == "PATH");

    // Using the development CA: it starts in the background and prints the admin's secret.
    let mut servers = Vec::new();
    let mut outputs: Vec<(String, String)> = Vec::new();
    for section in [
        "Using the development CA",
        "Running a city node",
        "Auditing the issuance log",
    ] {
        for step in blocks(&readme, section) {
            let is_server = step.command.contains("ca-server dev") || step.command.contains("ledger-node serve");
            if is_server {
                let mut s = Server::start(&sh, &step.command);
                let ready = if step.command.contains("ca-server") {
                    "ca-server listening on"
                } else {
                    "listening on https://"
                };
                s.wait_for(ready, Duration::from_secs(60));
                if let Some(secret) = s.seen.iter().find_map(|l| l.strip_prefix("admin enrollment secret: ")) {
                    known.insert("<secret from the dev output>".into(), secret.trim().to_string());
                }
                log.push(format!(
                    "{:<14} started        {}",
                    kind_of(&step.command),
                    step.command
                ));
                servers.push(s);
                continue;
            }
            let out = run(&mut sh, &step, &mut known, &mut log);
            outputs.push((step.command.clone(), out));
        }
    }

    // What each kind of user would notice, beyond the exit codes.
    let said = |needle: &str, what: &str| {
        let hit = outputs.iter().any(|(c, o)| c.contains(needle) && o.contains(what));
        assert!(hit, "no `{needle}` printed '{what}':\n{outputs:#?}");
    };
    said("bsn identities", "alice");
    said("bsn registrations list", "no pending registrations");
    said("bsn invite", "invitation code:");
    said("--rekey --revoke-previous", "revoked the previous certificate");
    said("bsn certificates --cert alice", "SERIAL");
    said("subchain show", "https://127.0.0.1:9443");
    said("bsn query get", "blue");
    said("--serial $(openssl", "keyCompromise");
    said("--watch alice", "ALERT");
    said("bsn audit verify", "log verified");
    let alice_key = std::fs::metadata(dir.path().join("alice/key.pem")).unwrap();
    use std::os::unix::fs::PermissionsExt;
    assert_eq!(alice_key.permissions().mode() & 0o777, 0o600, "alice's key is private");

    for s in servers.iter_mut().rev() {
        s.stop();
    }
    let kinds: std::collections::BTreeSet<&str> = log.iter().map(|l| l[..14].trim()).collect();
    assert_eq!(
        kinds,
        ["administrator", "auditor", "node operator", "participant", "publisher"].into(),
        "{log:#?}"
    );
    println!("README walk-through ({} commands):\n{}", log.len(), log.join("\n"));
}
