//! The harness for end-to-end tests: it runs the real `ca-server` and `bsn` binaries in
//! throwaway directories, on SQLite or (with `BSN_TEST_DATABASE=postgres`) on a fresh
//! PostgreSQL database per CA, and talks to them like a user does.
//!
//! PostgreSQL runs never fall back to SQLite: if the server cannot be reached the test fails.
#![forbid(unsafe_code)]

pub mod vectors;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use bsn_api::client::Api;
use serde_json::{Value, json};

/// The passphrase test CAs use.
pub const PASSPHRASE: &str = "test-passphrase-not-secret";

/// A built binary of this workspace (same profile as the running test).
pub fn bin(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current exe");
    let mut dir = exe.parent().expect("target dir");
    if dir.ends_with("deps") {
        dir = dir.parent().expect("target dir");
    }
    let p = dir.join(name);
    assert!(
        p.exists(),
        "{} is not built: run the tests with `cargo test --release --workspace`",
        p.display()
    );
    p
}

/// Which database the tests run on.
pub fn backend() -> &'static str {
    match std::env::var("BSN_TEST_DATABASE").as_deref() {
        Ok("postgres") => "postgres",
        Ok("sqlite") | Err(_) => "sqlite",
        Ok(other) => panic!("BSN_TEST_DATABASE={other}: expected sqlite or postgres"),
    }
}

/// A database for one CA: a SQLite file in the CA's directory, or a new PostgreSQL database
/// that is dropped when this value is.
pub struct TestDb {
    /// The URL to give `ca-server`, if not the default SQLite file.
    pub url: Option<String>,
    admin: Option<(String, String)>,
}

static SEQ: AtomicU32 = AtomicU32::new(0);

impl TestDb {
    /// Creates the database.
    pub fn new() -> Self {
        if backend() != "postgres" {
            return Self { url: None, admin: None };
        }
        let base =
            std::env::var("BSN_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into());
        let name = format!("bsn_test_{}_{}", std::process::id(), SEQ.fetch_add(1, Ordering::SeqCst));
        run_pg(&base, &format!("CREATE DATABASE {name}"));
        Self {
            url: Some(format!("{base}/{name}")),
            admin: Some((base, name)),
        }
    }

    /// On PostgreSQL, checks that the CA really keeps its records in this database (the
    /// trust domain row `init` writes), and leaves a marker in `$BSN_TEST_MARKER_DIR` so CI can
    /// prove the PostgreSQL run executed.
    fn confirm_used(&self) {
        let Some((base, name)) = &self.admin else { return };
        let url = format!("{base}/{name}");
        let found = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                use sqlx::Connection;
                let mut c = sqlx::PgConnection::connect(&url).await.unwrap();
                sqlx::query_scalar::<_, String>("SELECT v FROM ca_meta WHERE k = 'trust_domain'")
                    .fetch_one(&mut c)
                    .await
                    .unwrap()
            })
        })
        .join()
        .expect("reading the test database");
        assert_eq!(found, "test.example", "the CA did not write to its PostgreSQL database");
        if let Ok(dir) = std::env::var("BSN_TEST_MARKER_DIR") {
            std::fs::create_dir_all(&dir).unwrap();
            std::fs::write(Path::new(&dir).join(name), b"postgres").unwrap();
        }
    }
}

impl Default for TestDb {
    fn default() -> Self {
        Self::new()
    }
}

fn run_pg(base: &str, sql: &str) {
    let base = base.to_string();
    let sql = sql.to_string();
    // A separate thread with its own runtime, so this works from sync code, async tests and Drop.
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            use sqlx::Connection;
            let mut c = sqlx::PgConnection::connect(&format!("{base}/postgres"))
                .await
                .unwrap_or_else(|e| panic!("PostgreSQL at {base} is required for BSN_TEST_DATABASE=postgres: {e}"));
            sqlx::raw_sql(sqlx::AssertSqlSafe(sql.clone()))
                .execute(&mut c)
                .await
                .unwrap_or_else(|e| panic!("{sql}: {e}"));
        })
    })
    .join()
    .expect("PostgreSQL setup failed");
}

impl Drop for TestDb {
    fn drop(&mut self) {
        if let Some((base, name)) = &self.admin {
            run_pg(base, &format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)"));
        }
    }
}

/// A running test CA.
pub struct TestCa {
    /// Its directory (data dir is `dir/ca`).
    pub dir: tempfile::TempDir,
    /// HTTPS base URL of the first replica.
    pub url: String,
    /// The trust bundle file.
    pub bundle: PathBuf,
    /// The bootstrap admin's secret.
    pub admin_secret: String,
    /// Environment given to every `ca-server serve`.
    pub env: Vec<(String, String)>,
    children: Vec<Child>,
    admin_dir: Option<PathBuf>,
    /// The database (dropped after the processes).
    pub db: TestDb,
}

/// Spawns `ca-server serve` and waits for its "listening" line; returns the child and its URL.
pub fn spawn_serve(data_dir: &Path, db: &TestDb, env: &[(String, String)]) -> (Child, String) {
    let mut cmd = Command::new(bin("ca-server"));
    cmd.args(["serve", "--data-dir"])
        .arg(data_dir)
        .args(["--listen", "127.0.0.1:0"]);
    if let Some(u) = &db.url {
        cmd.args(["--database-url", u]);
    }
    cmd.env("BSN_CA_PASSPHRASE", PASSPHRASE)
        .env("BSN_LOG", "warn")
        .envs(env.iter().map(|(k, v)| (k, v)));
    let mut child = cmd
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn ca-server");
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let Some(u) = line.strip_prefix("ca-server listening on ") {
                let _ = tx.send(u.to_string());
            }
        }
    });
    let url = rx
        .recv_timeout(Duration::from_secs(30))
        .expect("ca-server did not start listening within 30 s");
    (child, url)
}

impl TestCa {
    /// Initialises and starts a CA.
    pub fn start() -> Self {
        Self::start_with(&[])
    }

    /// Initialises and starts a CA with extra `BSN_CA_*` environment for `serve`.
    pub fn start_with(env: &[(&str, &str)]) -> Self {
        Self::start_custom(&[], env)
    }

    /// Initialises a CA with extra `init` arguments and starts it; `env` is given to both
    /// `init` and every `serve`.
    pub fn start_custom(init_args: &[&str], env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("ca");
        let db = TestDb::new();
        let mut cmd = Command::new(bin("ca-server"));
        cmd.args(["init", "--data-dir"])
            .arg(&data)
            .args(["--trust-domain", "test.example"])
            .args(init_args)
            .envs(env.iter().copied());
        if let Some(u) = &db.url {
            cmd.args(["--database-url", u]);
        }
        let out = cmd.env("BSN_CA_PASSPHRASE", PASSPHRASE).output().unwrap();
        assert!(
            out.status.success(),
            "init failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        Self::serve_initialised(dir, db, &String::from_utf8_lossy(&out.stdout), env)
    }

    /// Starts `ca-server serve` on a CA the caller initialised in `dir/ca` with `db`, from what
    /// its `init` printed (the administrator's secret).
    pub fn serve_initialised(dir: tempfile::TempDir, db: TestDb, init_stdout: &str, env: &[(&str, &str)]) -> Self {
        let data = dir.path().join("ca");
        let admin_secret = init_stdout
            .lines()
            .find(|l| l.contains("secret:"))
            .and_then(|l| l.split_whitespace().last())
            .expect("init printed no secret")
            .to_string();
        db.confirm_used();
        let env: Vec<(String, String)> = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        let (child, url) = spawn_serve(&data, &db, &env);
        TestCa {
            bundle: data.join("trust-bundle.pem"),
            url,
            admin_secret,
            env,
            children: vec![child],
            admin_dir: None,
            db,
            dir,
        }
    }

    /// The first replica's process id.
    pub fn pid(&self) -> u32 {
        self.children[0].id()
    }

    /// The data directory.
    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("ca")
    }

    /// Starts another replica on the same data directory and database; returns its URL.
    pub fn add_replica(&mut self) -> String {
        let (child, url) = spawn_serve(&self.data_dir(), &self.db, &self.env);
        self.children.push(child);
        url
    }

    /// Kills every replica with SIGKILL.
    pub fn kill_all(&mut self) {
        for c in &mut self.children {
            let _ = c.kill();
            let _ = c.wait();
        }
        self.children.clear();
    }

    /// Restarts the first replica (after `kill_all`), updating `url`.
    pub fn restart(&mut self) {
        let (child, url) = spawn_serve(&self.data_dir(), &self.db, &self.env);
        self.children.push(child);
        self.url = url;
    }

    /// Runs `bsn` with `--ca` and `--ca-bundle` appended.
    pub fn bsn(&self, args: &[&str]) -> Output {
        let mut all: Vec<String> = args.iter().map(|s| s.to_string()).collect();
        all.extend([
            "--ca".into(),
            self.url.clone(),
            "--ca-bundle".into(),
            self.bundle.display().to_string(),
        ]);
        Command::new(bin("bsn")).args(&all).output().unwrap()
    }

    /// Runs `bsn renew` with the credentials in `dir` (`cert.pem`, `key.pem`), which it
    /// replaces.
    pub fn bsn_renew(&self, dir: &Path) -> Output {
        let d = dir.to_str().expect("UTF-8 path");
        self.bsn(&[
            "renew",
            "--cert",
            &format!("{d}/cert.pem"),
            "--key",
            &format!("{d}/key.pem"),
        ])
    }

    /// Runs `bsn enroll` for `id` with `secret`, writing credentials into `out`.
    pub fn bsn_enroll(&self, id: &str, secret: &str, out: &Path) -> Output {
        self.bsn(&["enroll", "--id", id, "--secret", secret, "--out", out.to_str().unwrap()])
    }

    /// An API client, anonymous or as the identity whose files are in `who`.
    pub fn api(&self, who: Option<&Path>) -> Api {
        self.api_at(&self.url, who)
    }

    /// An API client of a given replica.
    pub fn api_at(&self, url: &str, who: Option<&Path>) -> Api {
        let creds = who.map(|d| (d.join("cert.pem"), d.join("key.pem")));
        Api::from_files(
            url,
            &self.bundle,
            creds.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        )
        .unwrap()
    }

    /// The enrolled bootstrap administrator's directory (enrolled with `bsn` on first use).
    pub fn admin(&mut self) -> PathBuf {
        if let Some(d) = &self.admin_dir {
            return d.clone();
        }
        let d = self.dir.path().join("admin");
        let out = self.bsn_enroll("admin", &self.admin_secret, &d);
        assert!(
            out.status.success(),
            "admin enroll: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        self.admin_dir = Some(d.clone());
        d
    }

    /// Registers an identity as admin with extra fields; returns its secret.
    pub async fn register(&mut self, id: &str, extra: Value) -> String {
        let admin = self.admin();
        let mut body = json!({ "id": id });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            b.extend(e.clone());
        }
        let v = self
            .api(Some(&admin))
            .post("/api/v1/identities", &body)
            .await
            .expect("register");
        v["secret"].as_str().unwrap().to_string()
    }

    /// Registers and enrolls a participant with `bsn`; returns its credentials directory.
    pub async fn participant(&mut self, id: &str) -> PathBuf {
        self.enrolled(id, json!({})).await
    }

    /// Registers an identity with `extra` registration fields (`{"type": "node"}`, roles...)
    /// and enrolls it with `bsn`; returns its credentials directory.
    pub async fn enrolled(&mut self, id: &str, extra: Value) -> PathBuf {
        let secret = self.register(id, extra).await;
        let d = self.dir.path().join(id);
        let out = self.bsn_enroll(id, &secret, &d);
        assert!(
            out.status.success(),
            "enroll {id}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        d
    }

    /// The URL of the CA's own database.
    pub fn db_url(&self) -> String {
        self.db
            .url
            .clone()
            .unwrap_or_else(|| format!("sqlite://{}?mode=rwc", self.data_dir().join("ca.db").display()))
    }

    /// A connection to the CA's own database (to count or alter rows behind its back).
    pub async fn db_conn(&self) -> sqlx::AnyConnection {
        use sqlx::Connection;
        sqlx::any::install_default_drivers();
        sqlx::AnyConnection::connect(&self.db_url()).await.unwrap()
    }

    /// The CA's store, opened as the server opens it (for work done beside or instead of the
    /// server, such as growing the log).
    pub async fn store(&self) -> ca_server::db::Db {
        ca_server::db::Db::connect(&self.db_url()).await.unwrap()
    }

    /// The CA's log signer, from its sealed key and the test passphrase.
    pub fn log_signer(&self) -> ca_server::log::LogSigner {
        let sealed = std::fs::read_to_string(self.data_dir().join("log.key.sealed")).unwrap();
        let key = ca_server::keystore::open(PASSPHRASE, "log", &sealed).unwrap();
        ca_server::log::LogSigner::new("test.example/log", &key).unwrap()
    }

    /// (identities, certificates) counted in the CA's database itself.
    pub async fn db_counts(&self) -> (i64, i64) {
        let mut c = self.db_conn().await;
        let i: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM identities")
            .fetch_one(&mut c)
            .await
            .unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM certificates")
            .fetch_one(&mut c)
            .await
            .unwrap();
        (i, n)
    }

    /// (identities, certificates) as the admin listing API reports them.
    pub async fn counts(&mut self) -> (usize, usize) {
        let admin = self.admin();
        let api = self.api(Some(&admin));
        let count = |path: &'static str| {
            let api = api.clone();
            async move {
                let mut n = 0;
                let mut q: Vec<(&str, String)> = vec![("limit", "1000".into())];
                loop {
                    let v = api.get(path, &q).await.unwrap();
                    n += v["items"].as_array().unwrap().len();
                    match v["next_after"].as_str() {
                        Some(a) => q = vec![("limit", "1000".into()), ("after", a.into())],
                        None => return n,
                    }
                }
            }
        };
        (count("/api/v1/identities").await, count("/api/v1/certificates").await)
    }
}

impl Drop for TestCa {
    fn drop(&mut self) {
        self.kill_all();
    }
}

/// ECDSA P-256 signature + verification pairs per second on one core (ring), timed for 2 s: the
/// cryptographic cost of one issuance, the baseline the issuance benchmarks print beside.
pub fn sign_verify_rate() -> f64 {
    use ring::signature::{self, EcdsaKeyPair, KeyPair as _};
    let rng = ring::rand::SystemRandom::new();
    let alg = &signature::ECDSA_P256_SHA256_ASN1_SIGNING;
    let pkcs8 = EcdsaKeyPair::generate_pkcs8(alg, &rng).unwrap();
    let kp = EcdsaKeyPair::from_pkcs8(alg, pkcs8.as_ref(), &rng).unwrap();
    let public =
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_ASN1, kp.public_key().as_ref().to_vec());
    let msg = [7u8; 256];
    let start = Instant::now();
    let mut n = 0u64;
    while start.elapsed() < Duration::from_secs(2) {
        let sig = kp.sign(&rng, &msg).unwrap();
        public.verify(&msg, sig.as_ref()).unwrap();
        n += 1;
    }
    n as f64 / start.elapsed().as_secs_f64()
}

/// The value of an unlabelled metric in a Prometheus text page (0 if absent); the name must be
/// followed by a space, so a longer name sharing its prefix is not taken for it.
pub fn metric_value(page: &str, name: &str) -> f64 {
    page.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0.0)
}

/// A PEM CSR for a fresh P-256 key (the CA takes only the key from it).
pub fn new_csr() -> String {
    let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    rcgen::CertificateParams::default()
        .serialize_request(&key)
        .unwrap()
        .pem()
        .unwrap()
}

/// Polls `f` until it returns `Some` or the deadline passes.
pub async fn eventually<T, F: std::future::Future<Output = Option<T>>>(
    what: &str,
    timeout: Duration,
    mut f: impl FnMut() -> F,
) -> T {
    let end = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < end, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until the node behind `api` holds at least `n` subchains with a block (their genesis
/// written), listed by its `/api/v1/subchains`.
pub async fn wait_until_holding(api: &Api, n: usize, timeout: Duration) {
    eventually(&format!("the node to hold {n} subchains"), timeout, || async {
        let v = api.get("/api/v1/subchains", &[]).await.ok()?;
        let held = v["subchains"]
            .as_array()?
            .iter()
            .filter(|s| s["height"].is_u64())
            .count();
        (held >= n).then_some(())
    })
    .await;
}

/// How many of the transactions `ids` of `subchain` each node behind `apis` does not have (the
/// same id missing on two nodes counts twice).
pub async fn missing_on(apis: &[&Api], subchain: &str, ids: &[String]) -> usize {
    let mut missing = 0;
    for id in ids {
        for api in apis {
            if api
                .get(&format!("/api/v1/subchains/{subchain}/transactions/{id}"), &[])
                .await
                .is_err()
            {
                missing += 1;
            }
        }
    }
    missing
}

/// What a background load did: the requests that succeeded, each failure with what it was,
/// and the flag its tasks check to stop.
#[derive(Clone, Default)]
pub struct Tally {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ok: std::sync::Arc<std::sync::atomic::AtomicUsize>,
    failures: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Tally {
    /// Whether the load should go on.
    pub fn running(&self) -> bool {
        !self.stop.load(Ordering::Relaxed)
    }

    /// Counts a request's outcome (a failure with `what` it was); returns its value if it succeeded.
    pub fn record<T, E: std::fmt::Display>(&self, what: &str, result: Result<T, E>) -> Option<T> {
        match result {
            Ok(v) => {
                self.ok.fetch_add(1, Ordering::Relaxed);
                Some(v)
            }
            Err(e) => {
                self.failures.lock().unwrap().push(format!("{what}: {e}"));
                None
            }
        }
    }

    /// Waits until `more` further requests succeeded (the load is really running).
    pub async fn progress(&self, more: usize) {
        let target = self.ok.load(Ordering::Relaxed) + more;
        eventually("the load to make progress", Duration::from_secs(60), || async {
            (self.ok.load(Ordering::Relaxed) >= target).then_some(())
        })
        .await;
    }

    /// Stops the load, waits for its `tasks`, and returns (successes, failures).
    pub async fn stop(&self, tasks: Vec<tokio::task::JoinHandle<()>>) -> (usize, Vec<String>) {
        self.stop.store(true, Ordering::Relaxed);
        for t in tasks {
            t.await.unwrap();
        }
        (self.ok.load(Ordering::Relaxed), self.failures.lock().unwrap().clone())
    }
}

/// Runs a command and returns its output, panicking if it cannot start.
pub fn run(cmd: &str, args: &[&str], cwd: &Path) -> Output {
    Command::new(cmd)
        .args(args)
        .current_dir(cwd)
        .output()
        .unwrap_or_else(|e| panic!("{cmd}: {e}"))
}

/// A problem's slug from a client error, for assertions.
pub fn slug(e: &bsn_api::client::ClientError) -> String {
    match e {
        bsn_api::client::ClientError::Problem { slug, .. } => slug.clone(),
        other => format!("not a problem document: {other}"),
    }
}

/// A running `ledger-node` process.
pub struct TestNode {
    /// Its identity id.
    pub name: String,
    /// Its gateway URL (`https://127.0.0.1:PORT`).
    pub url: String,
    /// Its data directory.
    pub dir: PathBuf,
    child: Option<Child>,
}

impl TestNode {
    /// Registers node identity `name` at the CA, runs `ledger-node init` and starts it.
    pub async fn start(ca: &mut TestCa, name: &str) -> Self {
        Self::start_with(ca, name, "").await
    }

    /// [`TestNode::start`] with extra `node.toml` lines.
    pub async fn start_with(ca: &mut TestCa, name: &str, extra_config: &str) -> Self {
        Self::start_as(ca, name, "node", "local", extra_config).await
    }

    /// Registers an orderer identity `name`, runs `ledger-node init --role orderer` and starts it.
    pub async fn orderer(ca: &mut TestCa, name: &str) -> Self {
        Self::start_as(ca, name, "orderer", "local", "").await
    }

    /// Starts an ordering cluster of three orderers, `o1`, `o2` and `o3`, with extra `node.toml`
    /// lines.
    pub async fn three_orderers(ca: &mut TestCa, extra_config: &str) -> Vec<Self> {
        let mut orderers = Vec::new();
        for name in ["o1", "o2", "o3"] {
            orderers.push(Self::start_as(ca, name, "orderer", "local", extra_config).await);
        }
        orderers
    }

    /// Registers identity `name` of `kind` (`node` or `orderer`) in `city`, runs `ledger-node
    /// init` and starts it, with extra `node.toml` lines.
    pub async fn start_as(ca: &mut TestCa, name: &str, kind: &str, city: &str, extra_config: &str) -> Self {
        let secret = ca
            .register(
                name,
                json!({ "type": kind, "dns_names": ["localhost"], "ip_addresses": ["127.0.0.1"] }),
            )
            .await;
        let dir = ca.dir.path().join(format!("node-{name}"));
        let out = Command::new(bin("ledger-node"))
            .args(["init", "--data-dir"])
            .arg(&dir)
            .args(["--ca", &ca.url, "--ca-bundle"])
            .arg(&ca.bundle)
            .args([
                "--name", name, "--secret", &secret, "--role", kind, "--city", city, "--listen",
            ])
            // A fixed port (not :0) so `restart` can bind it again: see [`free_port`].
            .arg(format!("127.0.0.1:{}", free_port()))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "ledger-node init: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        if !extra_config.is_empty() {
            let toml = dir.join("node.toml");
            let text = std::fs::read_to_string(&toml).unwrap();
            // Each extra `key = value` line replaces the key's line `init` wrote; a `[peers]`
            // table in the extra lines replaces the (empty) one `init` wrote last.
            let keys: Vec<&str> = extra_config
                .lines()
                .filter_map(|l| l.split('=').next())
                .map(str::trim)
                .collect();
            let kept: String = text
                .lines()
                .filter(|l| l.trim() != "[peers]")
                .filter(|l| !keys.contains(&l.split('=').next().unwrap_or_default().trim()))
                .map(|l| format!("{l}\n"))
                .collect();
            let peers = if extra_config.contains("[peers]") {
                ""
            } else {
                "[peers]\n"
            };
            std::fs::write(&toml, format!("{kept}{extra_config}\n{peers}")).unwrap();
        }
        let mut node = Self {
            name: name.to_string(),
            url: String::new(),
            dir,
            child: None,
        };
        node.spawn(None);
        node
    }

    /// Starts nodes `names` for subchains hosted on several: they find each other through the
    /// CA's node directory (each published its URL at `init` and again at start), with no
    /// `[peers]` list.
    pub async fn cluster(ca: &mut TestCa, names: &[&str]) -> Vec<TestNode> {
        Self::cluster_with(ca, names, "").await
    }

    /// [`TestNode::cluster`] with extra `node.toml` lines (`key = value`) for every node.
    pub async fn cluster_with(ca: &mut TestCa, names: &[&str], config: &str) -> Vec<TestNode> {
        let ports: Vec<u16> = names.iter().map(|_| free_port()).collect();
        let mut nodes = Vec::new();
        for (i, name) in names.iter().enumerate() {
            let lines = if config.is_empty() {
                String::new()
            } else {
                format!("{config}\n")
            };
            let extra = format!("{lines}listen = \"127.0.0.1:{}\"\n", ports[i]);
            nodes.push(TestNode::start_with(ca, name, &extra).await);
        }
        nodes
    }

    fn spawn(&mut self, listen: Option<&str>) {
        let mut cmd = Command::new(bin("ledger-node"));
        cmd.args(["serve", "--data-dir"]).arg(&self.dir);
        if let Some(l) = listen {
            cmd.args(["--listen", l]);
        }
        let mut child = cmd
            .env(
                "BSN_LOG",
                std::env::var("BSN_TEST_NODE_LOG").unwrap_or_else(|_| "warn,openraft=off".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn ledger-node");
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(rest) = line.split(" listening on ").nth(1) {
                    let _ = tx.send(rest.split_whitespace().next().unwrap_or_default().to_string());
                }
            }
        });
        self.url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("ledger-node did not start listening within 30 s");
        self.child = Some(child);
    }

    /// The node process's id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Freezes the node (SIGSTOP: its sockets stay open, it answers nothing) or thaws it
    /// (SIGCONT).
    pub fn freeze(&self, frozen: bool) {
        let pid = self.pid().expect("the node runs").to_string();
        let sig = if frozen { "-STOP" } else { "-CONT" };
        let ok = Command::new("kill")
            .args([sig, &pid])
            .status()
            .is_ok_and(|s| s.success());
        assert!(ok, "kill {sig} {pid}");
    }

    /// Kills the node with SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// Starts the node again on the same address.
    pub fn restart(&mut self) {
        let addr = self.url.trim_start_matches("https://").to_string();
        self.spawn(Some(&addr));
    }

    /// A client of the gateway as the node itself (its operator: `/metrics`).
    pub fn operator(&self, ca: &TestCa) -> Api {
        self.api(ca, &self.dir)
    }

    /// A counter of the node's `/metrics`, read as its operator.
    pub async fn metric(&self, ca: &TestCa, name: &str) -> f64 {
        let text = self.operator(ca).get_bytes("/metrics").await.expect("/metrics");
        metric_value(&String::from_utf8_lossy(&text), name)
    }

    /// Open file descriptors of the node process (what hibernation gives back).
    pub fn open_files(&self) -> usize {
        std::fs::read_dir(format!("/proc/{}/fd", self.pid().expect("running"))).map_or(0, |d| d.count())
    }

    /// A client of the gateway as the identity whose files are in `who`.
    pub fn api(&self, ca: &TestCa, who: &Path) -> Api {
        Api::from_files(
            &self.url,
            &ca.bundle,
            Some((&who.join("cert.pem"), &who.join("key.pem"))),
        )
        .unwrap()
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Unix seconds now.
pub fn now_unix() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs() as i64)
}

/// A free TCP port on 127.0.0.1 (for servers that must know their address before they start).
///
/// Ports come from 20000..32000, below the kernel's ephemeral range (32768..61000), so an
/// outgoing connection (which takes an ephemeral port) cannot take one between this call and
/// the server's bind: that race made a cluster test fail with "Address already in use". A
/// per-process counter keeps two calls in one test binary apart; the start is spread by the
/// process id so test binaries run one after another do not reuse a port in TIME_WAIT.
pub fn free_port() -> u16 {
    free_ports(1)
}

/// The first of `n` consecutive free ports (see [`free_port`]), none of which another call in
/// this process hands out (as `bsn devnet --base-port` needs: the CA, then each node).
pub fn free_ports(n: u16) -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    const LOW: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(u32::MAX);
    let _ = NEXT.compare_exchange(
        u32::MAX,
        (std::process::id().wrapping_mul(7919)) % SPAN,
        Ordering::SeqCst,
        Ordering::SeqCst,
    );
    let n = u32::from(n.max(1));
    for _ in 0..SPAN {
        let first = NEXT.fetch_add(n, Ordering::SeqCst) % SPAN;
        if first + n > SPAN {
            continue; // a range does not wrap around the end
        }
        let base = LOW + first;
        if (base..base + n).all(|p| std::net::TcpListener::bind(("127.0.0.1", p as u16)).is_ok()) {
            return base as u16;
        }
    }
    panic!("no {n} free consecutive ports in 20000..32000 on 127.0.0.1")
}

/// Signs a transaction for `subchain` with the credentials in `who` (as `bsn tx submit` does).
pub fn sign_tx(who: &Path, subchain: &str, ops: Vec<identity::ledger::Op>) -> Vec<u8> {
    let subchain = identity::membership::SubchainId::parse(subchain).unwrap();
    bsn_api::tx::TxSigner::from_files(&who.join("cert.pem"), &who.join("key.pem"))
        .unwrap()
        .sign(&subchain, ops)
        .unwrap()
        .bytes
}

/// A put operation.
pub fn put(key: &str, value: &str) -> identity::ledger::Op {
    identity::ledger::Op::Put {
        key: key.to_string(),
        value: value.as_bytes().to_vec(),
    }
}

/// The JSON body that submits these signed transactions.
pub fn submit_body(txs: &[Vec<u8>]) -> Value {
    use base64::Engine;
    json!({ "transactions": txs.iter().map(|t| base64::engine::general_purpose::STANDARD.encode(t)).collect::<Vec<_>>() })
}

/// A browser-like client of the portal API: keeps the session cookie and sends the CSRF token on
/// request, optionally from a given local address (any of 127.0.0.0/8 reaches a loopback CA).
pub struct Browser {
    http: reqwest::Client,
    base: String,
    /// The session cookie, once signed in.
    pub cookie: Option<String>,
    /// The session's CSRF token, once signed in.
    pub csrf: String,
}

impl Browser {
    /// A browser of the CA's portal.
    pub fn new(ca: &TestCa) -> Self {
        Self::from_address(ca, None)
    }

    /// A browser whose connections come from `local`.
    pub fn from_address(ca: &TestCa, local: Option<std::net::IpAddr>) -> Self {
        Self {
            http: raw_client(ca, None, local),
            base: ca.url.clone(),
            cookie: None,
            csrf: String::new(),
        }
    }

    /// A call; returns the status and the JSON body (null when not JSON).
    pub async fn call(&mut self, method: &str, path: &str, body: Option<Value>, csrf: bool) -> (u16, Value) {
        let mut req = self
            .http
            .request(method.parse().unwrap(), format!("{}{path}", self.base));
        if let Some(c) = &self.cookie {
            req = req.header("cookie", c);
        }
        if csrf {
            req = req.header("x-csrf-token", &self.csrf);
        }
        if let Some(b) = body {
            req = req.json(&b);
        }
        let resp = req.send().await.unwrap();
        if let Some(set) = resp.headers().get("set-cookie") {
            let set = set.to_str().unwrap();
            for attr in ["HttpOnly", "Secure", "SameSite=Strict"] {
                assert!(set.contains(attr), "{set}");
            }
            self.cookie = Some(set.split(';').next().unwrap().to_string());
        }
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::Null))
    }

    /// Signs in; returns the status and body, keeping the CSRF token.
    pub async fn sign_in(&mut self, id: &str, password: &str) -> (u16, Value) {
        let (status, v) = self
            .call(
                "POST",
                "/api/v1/portal/login",
                Some(json!({ "id": id, "password": password })),
                false,
            )
            .await;
        if let Some(t) = v["csrf_token"].as_str() {
            self.csrf = t.to_string();
        }
        (status, v)
    }
}

/// The slug of a problem document body (`urn:bsn:problem:<slug>`).
pub fn problem_slug(v: &Value) -> &str {
    v["type"]
        .as_str()
        .unwrap_or_default()
        .trim_start_matches("urn:bsn:problem:")
}

/// A TLS client configuration trusting the test CA, as the identity in `who` if given (its
/// `cert.pem` and `key.pem`), offering only HTTP/1.1 if `http1`.
pub fn client_tls(ca: &TestCa, who: Option<&Path>, http1: bool) -> rustls::ClientConfig {
    let bundle = std::fs::read(&ca.bundle).unwrap();
    let creds = who.map(|d| {
        (
            std::fs::read(d.join("cert.pem")).unwrap(),
            std::fs::read(d.join("key.pem")).unwrap(),
        )
    });
    let mut cfg =
        bsn_api::client::tls_config(&bundle, creds.as_ref().map(|(c, k)| (c.as_slice(), k.as_slice()))).unwrap();
    if http1 {
        cfg.alpn_protocols = vec![b"http/1.1".to_vec()];
    }
    cfg
}

/// A plain reqwest client trusting the test CA, as the identity in `who` if given, connecting
/// from `local` if given.
pub fn raw_client(ca: &TestCa, who: Option<&Path>, local: Option<std::net::IpAddr>) -> reqwest::Client {
    reqwest::Client::builder()
        .tls_backend_preconfigured(client_tls(ca, who, false))
        .local_address(local)
        .timeout(Duration::from_secs(60))
        .build()
        .unwrap()
}

/// Resident memory of a process, in KiB (from /proc).
pub fn rss_kib(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.split_whitespace().next())
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Waits until the server closes `stream`; fails if it is still open after `within`.
pub async fn closed_within(stream: &mut (impl tokio::io::AsyncReadExt + Unpin), within: Duration) -> Duration {
    let t = Instant::now();
    let mut buf = [0u8; 4096];
    loop {
        match tokio::time::timeout(within.saturating_sub(t.elapsed()), stream.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return t.elapsed(),
            Ok(Ok(_)) => continue,
            Err(_) => panic!("the connection was still open after {within:?}"),
        }
    }
}

/// A TLS connection to `url` (no client certificate unless `who`; HTTP/1.1 only if `http1`).
pub async fn tls_connect(
    ca: &TestCa,
    url: &str,
    who: Option<&std::path::Path>,
    http1: bool,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let cfg = client_tls(ca, who, http1);
    let addr = url.trim_start_matches("https://");
    let tcp = tokio::net::TcpStream::connect(addr).await.unwrap();
    tokio_rustls::TlsConnector::from(std::sync::Arc::new(cfg))
        .connect(rustls_pki_types::ServerName::try_from("localhost").unwrap(), tcp)
        .await
        .unwrap()
}

/// Verifies a checkpoint note with the vkey and returns (size, root).
pub fn open_checkpoint(vkey: &str, note: &str) -> (u64, tlog_tiles::Hash) {
    let v = signed_note::StandardVerifier::new(vkey.trim()).unwrap();
    let n = signed_note::Note::from_bytes(note.as_bytes()).unwrap();
    n.verify(&signed_note::VerifierList::new(vec![Box::new(v)]))
        .expect("checkpoint signature");
    let cp = tlog_tiles::Checkpoint::from_bytes(n.text()).unwrap();
    assert_eq!(cp.origin(), "test.example/log");
    (cp.size(), *cp.hash())
}

/// The URL path of a tile (level 255: an entry bundle) of `width` entries.
pub fn tile_path(level: u8, n: u64, width: u64) -> String {
    let mut s = format!("{:03}", n % 1000);
    let mut m = n / 1000;
    while m > 0 {
        s = format!("x{:03}/{s}", m % 1000);
        m /= 1000;
    }
    let l = if level == 255 {
        "entries".to_string()
    } else {
        level.to_string()
    };
    if width == 256 {
        format!("/log/tile/{l}/{s}")
    } else {
        format!("/log/tile/{l}/{s}.p/{width}")
    }
}

/// Every leaf of a tree of `size`, from the entry bundles.
pub async fn all_leaves(api: &bsn_api::client::Api, size: u64) -> Vec<Vec<u8>> {
    let mut leaves = Vec::new();
    for n in 0..size.div_ceil(256) {
        let width = (size - n * 256).min(256);
        let bundle = api.get_bytes(&tile_path(255, n, width)).await.unwrap();
        let mut rest = bundle.as_slice();
        while !rest.is_empty() {
            let len = u16::from_be_bytes([rest[0], rest[1]]) as usize;
            leaves.push(rest[2..2 + len].to_vec());
            rest = &rest[2 + len..];
        }
    }
    assert_eq!(leaves.len() as u64, size);
    leaves
}

/// `bsn audit verify` against the CA with its log key.
pub fn audit(ca: &TestCa) -> std::process::Output {
    let vkey = ca.data_dir().join("log.vkey");
    ca.bsn(&["audit", "verify", "--log-vkey", vkey.to_str().unwrap()])
}

/// CPU seconds (user + system) of a process (`self` or a pid), or of its waited-for children,
/// from `/proc/<pid>/stat` (fields 14-17, in clock ticks of 1/100 s on Linux).
pub fn cpu_secs(pid: &str, children: bool) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The name may hold spaces: the fields after it start after the last ')'.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .map(|(_, r)| r.split_whitespace().collect())
        .unwrap_or_default();
    // After the name: state is field 3, so utime (14) is index 11 and cutime (16) index 13.
    let at = if children { 13 } else { 11 };
    let ticks: u64 = fields
        .iter()
        .skip(at)
        .take(2)
        .filter_map(|f| f.parse::<u64>().ok())
        .sum();
    ticks as f64 / 100.0
}

/// Every block of `subchain` on a node, through the gateway (as JSON block views).
pub async fn chain_of(api: &Api, subchain: &str) -> Vec<Value> {
    let mut out = Vec::new();
    loop {
        let v = api
            .get(
                &format!("/api/v1/subchains/{subchain}/blocks"),
                &[("from", out.len().to_string()), ("limit", "1000".into())],
            )
            .await
            .unwrap();
        let page = v["blocks"].as_array().unwrap().clone();
        let n = page.len();
        out.extend(page);
        if n < 1000 {
            return out;
        }
    }
}

/// The hash of each block, after checking that the blocks decode (entries match their root),
/// start at height 0 and link one to the next.
pub fn chain_hashes(blocks: &[Value]) -> Vec<[u8; 32]> {
    use base64::Engine;
    let mut hashes = Vec::new();
    for (i, v) in blocks.iter().enumerate() {
        let raw = base64::engine::general_purpose::STANDARD
            .decode(v["encoded"].as_str().unwrap())
            .unwrap();
        let b = identity::ledger::Block::decode(&raw).unwrap();
        assert_eq!(b.header.height, i as u64);
        assert_eq!(b.header.previous, hashes.last().copied().unwrap_or([0; 32]));
        hashes.push(b.header.hash());
    }
    hashes
}

/// Writers that keep submitting batches of three signed puts to a subchain through a list of
/// nodes in turn until stopped, recording the id of every transaction acknowledged (the load
/// under which the fault tests kill, cut and revoke).
pub struct Writers {
    acked: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Writers {
    /// Starts `count` writers as `who` on `subchain`; writer `w` sends its `i`-th batch through
    /// `apis[(w + i) % apis.len()]`.
    pub fn start(apis: &[Api], who: &Path, subchain: &str, count: usize) -> Self {
        let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let tasks = (0..count)
            .map(|w| {
                let (apis, who, subchain) = (apis.to_vec(), who.to_path_buf(), subchain.to_string());
                let (acked, stop) = (acked.clone(), stop.clone());
                tokio::spawn(async move {
                    let mut i = 0usize;
                    while !stop.load(Ordering::Relaxed) {
                        let api = &apis[(w + i) % apis.len()];
                        let txs: Vec<Vec<u8>> = (0..3)
                            .map(|j| sign_tx(&who, &subchain, vec![put(&format!("w{w}-{i}-{j}"), "x")]))
                            .collect();
                        let path = format!("/api/v1/subchains/{subchain}/transactions");
                        if let Ok(v) = api.post(&path, &submit_body(&txs)).await {
                            let mut g = acked.lock().unwrap();
                            for r in v["results"].as_array().unwrap() {
                                g.push(r["id"].as_str().unwrap().to_string());
                            }
                        }
                        i += 1;
                    }
                })
            })
            .collect();
        Self { acked, stop, tasks }
    }

    /// How many transactions were acknowledged so far.
    pub fn acked(&self) -> usize {
        self.acked.lock().unwrap().len()
    }

    /// Waits until `n` transactions were acknowledged in all; panics after `timeout`.
    pub async fn wait_for(&self, what: &str, n: usize, timeout: Duration) {
        eventually(what, timeout, || async { (self.acked() >= n).then_some(()) }).await;
    }

    /// Stops them and returns every acknowledged transaction id.
    pub async fn stop(self) -> Vec<String> {
        self.stop.store(true, Ordering::Relaxed);
        for t in self.tasks {
            t.await.unwrap();
        }
        self.acked.lock().unwrap().clone()
    }
}

/// A TCP proxy between two nodes: it can drop everything passing through it (to cut a node off
/// the network) and delay each direction by a fixed time (a link between cities).
pub struct Proxy {
    /// The port it listens on (127.0.0.1).
    pub port: u16,
    blocked: tokio::sync::watch::Sender<bool>,
    delay: tokio::sync::watch::Sender<Duration>,
}

impl Proxy {
    /// A proxy to 127.0.0.1:`target`, passing everything at once.
    pub async fn start(target: u16) -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (blocked, rx) = tokio::sync::watch::channel(false);
        let (delay, delay_rx) = tokio::sync::watch::channel(Duration::ZERO);
        tokio::spawn(async move {
            while let Ok((inbound, _)) = listener.accept().await {
                if *rx.borrow() {
                    continue; // dropped: the connection is closed at once
                }
                let (mut cut, delay) = (rx.clone(), delay_rx.clone());
                tokio::spawn(async move {
                    let Ok(outbound) = tokio::net::TcpStream::connect(("127.0.0.1", target)).await else {
                        return;
                    };
                    let _ = outbound.set_nodelay(true);
                    let _ = inbound.set_nodelay(true);
                    let (in_r, in_w) = inbound.into_split();
                    let (out_r, out_w) = outbound.into_split();
                    tokio::select! {
                        _ = async {
                            tokio::join!(delayed_copy(in_r, out_w, delay.clone()), delayed_copy(out_r, in_w, delay))
                        } => {}
                        _ = cut.wait_for(|b| *b) => {}
                    }
                });
            }
        });
        Self { port, blocked, delay }
    }

    /// Drops (true) or passes (false) everything from now on, open connections included.
    pub fn set_blocked(&self, b: bool) {
        self.blocked.send_replace(b);
    }

    /// Delays every byte by `d` in each direction from now on (a round trip gains twice `d`).
    pub fn set_delay(&self, d: Duration) {
        self.delay.send_replace(d);
    }
}

/// Copies `from` to `to`, each chunk written `delay` after it was read (chunks read meanwhile
/// wait in order, so the delay does not limit the throughput).
async fn delayed_copy(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    delay: tokio::sync::watch::Receiver<Duration>,
) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel::<(tokio::time::Instant, Vec<u8>)>();
    let read = async move {
        let mut buf = vec![0u8; 64 * 1024];
        while let Ok(n) = from.read(&mut buf).await {
            if n == 0
                || tx
                    .send((tokio::time::Instant::now() + *delay.borrow(), buf[..n].to_vec()))
                    .is_err()
            {
                break;
            }
        }
    };
    let write = async move {
        while let Some((at, bytes)) = rx.recv().await {
            tokio::time::sleep_until(at).await;
            if to.write_all(&bytes).await.is_err() {
                return;
            }
        }
        let _ = to.shutdown().await;
    };
    tokio::join!(read, write);
}

/// Sequential single-transaction commits as `who` through `api` on `subchain`, keys
/// `TAG-<i>`: (p50, p99) in milliseconds.
pub async fn commit_latency(api: &Api, who: &Path, subchain: &str, tag: &str, n: usize) -> (f64, f64) {
    let mut ms = Vec::with_capacity(n);
    for i in 0..n {
        let tx = sign_tx(who, subchain, vec![put(&format!("{tag}-{i}"), "x")]);
        let t = Instant::now();
        api.post(
            &format!("/api/v1/subchains/{subchain}/transactions"),
            &submit_body(&[tx]),
        )
        .await
        .unwrap_or_else(|e| panic!("{tag}: commit {i}: {e}"));
        ms.push(t.elapsed().as_secs_f64() * 1000.0);
    }
    ms.sort_by(f64::total_cmp);
    let at = |q: f64| ms[((ms.len() as f64 * q).ceil() as usize).clamp(1, ms.len()) - 1];
    (at(0.50), at(0.99))
}

/// The BSN profile's reading of the first certificate in the PEM file `path` (serial, identity,
/// validity).
pub fn leaf_of(path: &Path) -> identity::profile::Leaf {
    use rustls_pki_types::pem::PemObject;
    let der = rustls_pki_types::CertificateDer::from_pem_file(path).unwrap();
    identity::profile::check_leaf(&der).unwrap()
}

/// SoftHSM2 (Debian `softhsm2`) for tests and benchmarks of keys in a PKCS#11 token.
pub mod softhsm {
    use std::path::PathBuf;
    use std::process::Command;

    /// Debian's SoftHSM2 module.
    pub const MODULE: &str = "/usr/lib/softhsm/libsofthsm2.so";
    /// The user PIN of every test token.
    pub const PIN: &str = "1234-user-pin";

    /// A SoftHSM2 configuration with its own token directory, holding one token per label.
    pub struct SoftHsm {
        /// Its `SOFTHSM2_CONF` file.
        pub conf: PathBuf,
        _dir: tempfile::TempDir,
    }

    impl SoftHsm {
        /// Tokens labelled `labels`, each with the user PIN [`PIN`].
        pub fn new(labels: &[&str]) -> Self {
            let dir = tempfile::tempdir().unwrap();
            let tokens = dir.path().join("tokens");
            std::fs::create_dir_all(&tokens).unwrap();
            let conf = dir.path().join("softhsm2.conf");
            std::fs::write(
                &conf,
                format!(
                    "directories.tokendir = {}\nobjectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n",
                    tokens.display()
                ),
            )
            .unwrap();
            let hsm = Self { conf, _dir: dir };
            for label in labels {
                let o = hsm.tool(
                    "softhsm2-util",
                    &[
                        "--init-token",
                        "--free",
                        "--label",
                        label,
                        "--pin",
                        PIN,
                        "--so-pin",
                        "5678-so-pin",
                    ],
                );
                assert!(
                    o.status.success(),
                    "softhsm2-util: {}",
                    String::from_utf8_lossy(&o.stderr)
                );
            }
            hsm
        }

        /// Runs a tool against this configuration.
        pub fn tool(&self, cmd: &str, args: &[&str]) -> std::process::Output {
            Command::new(cmd)
                .args(args)
                .env("SOFTHSM2_CONF", &self.conf)
                .output()
                .unwrap_or_else(|e| panic!("{cmd} (apt-get install softhsm2 opensc): {e}"))
        }

        /// `pkcs11-tool` logged in to the token `token`: its output and error text.
        pub fn pkcs11_tool(&self, token: &str, args: &[&str]) -> String {
            let mut all = vec!["--module", MODULE, "--token-label", token, "--login", "--pin", PIN];
            all.extend_from_slice(args);
            let o = self.tool("pkcs11-tool", &all);
            format!(
                "{}{}",
                String::from_utf8_lossy(&o.stdout),
                String::from_utf8_lossy(&o.stderr)
            )
        }
    }
}
