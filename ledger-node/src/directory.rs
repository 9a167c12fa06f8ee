//! What the node knows from the CA: the membership statements of the subchains it hosts (each
//! verified with the CA's membership key), every revoked serial, the signed node directory
//! (where every city node and orderer runs: how this node finds its peers), and when it last
//! heard from the CA. Fed by the CA's change feed (server-sent events over mTLS with the node's certificate),
//! kept in `node.redb` so a restarted node resumes from its cursor and is never more permissive
//! than before it stopped.
//!
//! Revocations take effect in memory the moment their event arrives (new handshakes refuse the
//! serial, open connections are cut by [`Directory::revocations`] watchers); the database write
//! follows in small batches, and a crash before it only means re-reading those events.

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::RwLock;
use std::sync::atomic::{AtomicBool, AtomicI64, Ordering};
use std::time::Duration;

use bsn_api::ca::FeedEvent;
use bsn_api::client::{Api, ServerEvent};

use crate::clock::now_ms;
use identity::membership::{Envelope, KeyHandover, MembershipKey, MembershipKeys, NodeDirectory, Role, Statement};
use redb::{Database, ReadableDatabase, ReadableTable, TableDefinition};
use tokio::sync::watch;

const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const REVOKED: TableDefinition<&str, i64> = TableDefinition::new("revoked");
const STATEMENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("statements");
/// The newest signed node directory (the envelope as JSON), under the key `current`.
const NODE_DIRECTORY: TableDefinition<&str, &[u8]> = TableDefinition::new("node_directory");
/// The CA's issuing intermediates by number (DER), as the feed announced them.
const INTERMEDIATES: TableDefinition<u64, &[u8]> = TableDefinition::new("intermediates");
/// The cross-certificates of the CA's later roots by root number (DER), as the feed announced
/// them: a creator whose chain ends at a new root verifies through one to the pinned bundle.
const CROSSES: TableDefinition<u64, &[u8]> = TableDefinition::new("crosses");
/// The CA's membership key handovers by the new key's number (JSON), as the CA listed them or
/// the feed announced them: with the key pinned at init they make the keys this node trusts.
const HANDOVERS: TableDefinition<u64, &[u8]> = TableDefinition::new("key_handovers");

/// The membership keys this node trusts, shared by everything that verifies what the CA signs:
/// the key pinned at init and those the CA's handovers link to it (`node.redb`). Each reader
/// takes a snapshot; a handover replaces it.
#[derive(Clone)]
pub struct KeyRing(std::sync::Arc<RwLock<std::sync::Arc<MembershipKeys>>>);

impl KeyRing {
    /// A ring of fixed keys.
    pub fn new(keys: MembershipKeys) -> Self {
        Self(std::sync::Arc::new(RwLock::new(std::sync::Arc::new(keys))))
    }

    /// The keys now.
    pub fn get(&self) -> std::sync::Arc<MembershipKeys> {
        self.0.read().unwrap_or_else(|e| e.into_inner()).clone()
    }
}

/// A statement in force, with the envelope it came in.
#[derive(Debug, Clone)]
pub struct Known {
    /// The verified statement.
    pub statement: Statement,
    /// The envelope as JSON bytes (what goes into a config block).
    pub envelope: Vec<u8>,
}

#[derive(Default)]
struct Inner {
    statements: HashMap<String, Known>,
    revoked: HashSet<String>,
    nodes: Option<NodeDirectory>,
    intermediates: std::collections::BTreeMap<u64, Vec<u8>>,
    crosses: std::collections::BTreeMap<u64, Vec<u8>>,
}

/// The node's view of the CA.
pub struct Directory {
    /// This node's identity id.
    pub node: String,
    keys: KeyRing,
    db: Database,
    inner: RwLock<Inner>,
    revoked_gen: watch::Sender<u64>,
    statements_gen: watch::Sender<u64>,
    /// Subchains whose statement changed since [`Directory::take_changed_statements`] last ran.
    changed: std::sync::Mutex<HashSet<String>>,
    nodes_gen: watch::Sender<u64>,
    last_contact_ms: AtomicI64,
    synced: AtomicBool,
}

enum Pending {
    Statement(String, Vec<u8>),
    Revoked(String, i64),
    Nodes(Vec<u8>),
    Intermediate(u64, Option<Vec<u8>>),
    Cross(u64, Option<Vec<u8>>),
}

impl Directory {
    /// Opens the directory kept in `path`; `key` is the membership key pinned at init.
    pub fn open(path: &Path, node: &str, key: MembershipKey) -> anyhow::Result<Self> {
        let db = Database::create(path)?;
        let w = db.begin_write()?;
        {
            w.open_table(META)?;
            w.open_table(REVOKED)?;
            w.open_table(STATEMENTS)?;
            w.open_table(NODE_DIRECTORY)?;
            w.open_table(INTERMEDIATES)?;
            w.open_table(CROSSES)?;
            w.open_table(HANDOVERS)?;
        }
        w.commit()?;
        let mut inner = Inner::default();
        let key = {
            let r = db.begin_read()?;
            let mut handovers = Vec::new();
            for item in r.open_table(HANDOVERS)?.iter()? {
                handovers.push(serde_json::from_slice::<KeyHandover>(item?.1.value())?);
            }
            MembershipKeys::following(key, &handovers)?
        };
        {
            let r = db.begin_read()?;
            for item in r.open_table(REVOKED)?.iter()? {
                inner.revoked.insert(item?.0.value().to_string());
            }
            for item in r.open_table(STATEMENTS)?.iter()? {
                let (k, v) = item?;
                let env: Envelope = serde_json::from_slice(v.value())?;
                let statement = key.verify_statement(&env)?;
                inner.statements.insert(
                    k.value().to_string(),
                    Known {
                        statement,
                        envelope: v.value().to_vec(),
                    },
                );
            }
            for item in r.open_table(INTERMEDIATES)?.iter()? {
                let (k, v) = item?;
                inner.intermediates.insert(k.value(), v.value().to_vec());
            }
            for item in r.open_table(CROSSES)?.iter()? {
                let (k, v) = item?;
                inner.crosses.insert(k.value(), v.value().to_vec());
            }
            if let Some(v) = r.open_table(NODE_DIRECTORY)?.get("current")? {
                let env: Envelope = serde_json::from_slice(v.value())?;
                inner.nodes = Some(key.verify_directory(&env)?);
            }
        }
        if key.keys().len() > 1 {
            tracing::info!(keys = key.keys().len(), "following the CA's membership key handovers");
        }
        Ok(Self {
            node: node.to_string(),
            keys: KeyRing::new(key),
            db,
            inner: RwLock::new(inner),
            revoked_gen: watch::channel(0).0,
            statements_gen: watch::channel(0).0,
            changed: std::sync::Mutex::new(HashSet::new()),
            nodes_gen: watch::channel(0).0,
            last_contact_ms: AtomicI64::new(0),
            synced: AtomicBool::new(false),
        })
    }

    /// The CA's membership keys this node trusts (a shared handle: handovers show in it).
    pub fn keys(&self) -> KeyRing {
        self.keys.clone()
    }

    /// The CA's membership key handovers this node follows (what a config proposal carries, so
    /// that replicas which have not heard of one yet verify alike).
    pub fn handovers(&self) -> Vec<KeyHandover> {
        let read = || -> anyhow::Result<Vec<KeyHandover>> {
            let r = self.db.begin_read()?;
            let mut all = Vec::new();
            for item in r.open_table(HANDOVERS)?.iter()? {
                all.push(serde_json::from_slice(item?.1.value())?);
            }
            Ok(all)
        };
        read().unwrap_or_else(|e| {
            tracing::warn!(error = %e, "cannot read the membership key handovers");
            Vec::new()
        })
    }

    /// Follows the CA's membership key handovers: those that link to the keys trusted here (each
    /// signed by both of its keys) are kept, fsynced, before they are used. Returns whether a
    /// key was learned; a handover that does not verify is an error and changes nothing.
    pub fn learn_handovers(&self, handovers: &[KeyHandover]) -> anyhow::Result<bool> {
        let mut ring = self.keys.0.write().unwrap_or_else(|e| e.into_inner());
        let mut next = (**ring).clone();
        if !next.learn(handovers)? {
            return Ok(false);
        }
        let w = self.db.begin_write()?;
        {
            let mut t = w.open_table(HANDOVERS)?;
            for h in handovers {
                let (terms, from, to) = h.verify()?;
                if next.contains(&from) && next.contains(&to) {
                    t.insert(terms.number, serde_json::to_vec(h)?.as_slice())?;
                }
            }
        }
        w.commit()?;
        tracing::info!(
            key = next.current().to_base64(),
            "the CA's membership key was handed over; following it"
        );
        *ring = std::sync::Arc::new(next);
        Ok(true)
    }

    /// Whether the serial (lowercase hex) is revoked.
    pub fn is_revoked(&self, serial: &str) -> bool {
        self.inner.read().expect("directory").revoked.contains(serial)
    }

    /// Number of revoked serials known.
    pub fn revoked_count(&self) -> usize {
        self.inner.read().expect("directory").revoked.len()
    }

    /// Ticks whenever a serial is revoked.
    pub fn revocations(&self) -> watch::Receiver<u64> {
        self.revoked_gen.subscribe()
    }

    /// Ticks whenever a statement changes.
    pub fn statement_changes(&self) -> watch::Receiver<u64> {
        self.statements_gen.subscribe()
    }

    /// Ticks whenever a newer node directory arrives.
    pub fn node_directory_changes(&self) -> watch::Receiver<u64> {
        self.nodes_gen.subscribe()
    }

    /// The newest signed node directory this node has (verified), if any.
    pub fn node_directory(&self) -> Option<NodeDirectory> {
        self.inner.read().expect("directory").nodes.clone()
    }

    /// The name of the node or orderer whose Raft node id is `id`, if the node directory lists it.
    pub fn name_of(&self, id: u64) -> Option<String> {
        let g = self.inner.read().expect("directory");
        g.nodes
            .as_ref()?
            .nodes
            .iter()
            .find(|e| crate::group::node_id(&e.id) == id)
            .map(|e| e.id.clone())
    }

    /// The URL a node or orderer published in the node directory.
    pub fn url_of(&self, node: &str) -> Option<String> {
        let g = self.inner.read().expect("directory");
        g.nodes.as_ref()?.entry(node).map(|e| e.url.clone())
    }

    /// The resource plan of the statement in force for a subchain (none: no quotas).
    pub fn plan(&self, subchain: &str) -> Option<identity::plan::Plan> {
        self.inner
            .read()
            .expect("directory")
            .statements
            .get(subchain)
            .and_then(|k| k.statement.plan.clone())
    }

    /// The statement in force for a subchain.
    pub fn statement(&self, subchain: &str) -> Option<Known> {
        self.inner.read().expect("directory").statements.get(subchain).cloned()
    }

    /// The subchains whose statement in force lists this node as a host or an orderer.
    pub fn hosted(&self) -> Vec<Known> {
        let g = self.inner.read().expect("directory");
        let mut v: Vec<Known> = g
            .statements
            .values()
            .filter(|k| k.statement.involves(&self.node))
            .cloned()
            .collect();
        v.sort_by(|a, b| a.statement.subchain.cmp(&b.statement.subchain));
        v
    }

    /// Id and revision of each subchain whose statement in force lists this node (what
    /// [`Directory::hosted`] gives, without copying the statements).
    pub fn hosted_revisions(&self) -> Vec<(String, u64)> {
        let g = self.inner.read().expect("directory");
        g.statements
            .values()
            .filter(|k| k.statement.involves(&self.node))
            .map(|k| (k.statement.subchain.to_string(), k.statement.revision))
            .collect()
    }

    /// The subchains whose statement changed since the last call, for the one consumer that
    /// keeps the subchains in line with them ([`crate::subchain::Subchains::sync`]): it looks at
    /// those (and at the open ones) instead of every statement on every round.
    pub fn take_changed_statements(&self) -> HashSet<String> {
        std::mem::take(&mut *self.changed.lock().expect("changed"))
    }

    /// Id and revision of each of `ids` whose statement in force lists this node.
    pub fn revisions_involving<'a>(&self, ids: impl IntoIterator<Item = &'a String>) -> Vec<(String, u64)> {
        let g = self.inner.read().expect("directory");
        ids.into_iter()
            .filter_map(|id| {
                g.statements
                    .get(id)
                    .filter(|k| k.statement.involves(&self.node))
                    .map(|k| (id.clone(), k.statement.revision))
            })
            .collect()
    }

    /// The orderers of the subchains this node hosts as a city node (not ordering them itself).
    pub fn followed_orderers(&self) -> std::collections::BTreeSet<String> {
        let g = self.inner.read().expect("directory");
        g.statements
            .values()
            .filter(|k| k.statement.hosted_by(&self.node) && !k.statement.orders(&self.node))
            .flat_map(|k| k.statement.orderers.iter().cloned())
            .collect()
    }

    /// The identity's role in a subchain this node hosts (`None`: not a member, or not hosted).
    pub fn role_of(&self, subchain: &str, identity: &str) -> Option<Role> {
        let g = self.inner.read().expect("directory");
        let k = g.statements.get(subchain)?;
        if !k.statement.involves(&self.node) {
            return None;
        }
        k.statement.role_of(identity)
    }

    /// Whether the CA has been heard from since this node started.
    pub fn heard(&self) -> bool {
        self.last_contact_ms.load(Ordering::Relaxed) != 0
    }

    /// Milliseconds since the CA was last heard from (a signed heartbeat or an event).
    pub fn silent_for_ms(&self) -> i64 {
        now_ms() - self.last_contact_ms.load(Ordering::Relaxed)
    }

    /// Whether the node has caught up with the feed since it started.
    pub fn synced(&self) -> bool {
        self.synced.load(Ordering::Relaxed)
    }

    fn cursor(&self) -> u64 {
        let r = || -> anyhow::Result<u64> {
            let t = self.db.begin_read()?.open_table(META)?;
            Ok(t.get("cursor")?.map_or(0, |v| v.value()))
        };
        r().unwrap_or(0)
    }

    fn persist(&self, cursor: u64, pending: &mut Vec<Pending>) -> anyhow::Result<()> {
        let w = self.db.begin_write()?;
        {
            let mut meta = w.open_table(META)?;
            let mut revoked = w.open_table(REVOKED)?;
            let mut statements = w.open_table(STATEMENTS)?;
            let mut nodes = w.open_table(NODE_DIRECTORY)?;
            let mut intermediates = w.open_table(INTERMEDIATES)?;
            let mut crosses = w.open_table(CROSSES)?;
            for p in pending.iter() {
                match p {
                    Pending::Cross(n, Some(der)) => {
                        crosses.insert(*n, der.as_slice())?;
                    }
                    Pending::Cross(n, None) => {
                        crosses.remove(*n)?;
                    }
                    Pending::Intermediate(n, Some(der)) => {
                        intermediates.insert(*n, der.as_slice())?;
                    }
                    Pending::Intermediate(n, None) => {
                        intermediates.remove(*n)?;
                    }
                    Pending::Nodes(env) => {
                        nodes.insert("current", env.as_slice())?;
                    }
                    Pending::Statement(s, env) => {
                        statements.insert(s.as_str(), env.as_slice())?;
                    }
                    Pending::Revoked(serial, at) => {
                        revoked.insert(serial.as_str(), *at)?;
                    }
                }
            }
            meta.insert("cursor", cursor)?;
        }
        w.commit()?;
        pending.clear();
        Ok(())
    }

    /// The CA certificates the feed announced: its issuing intermediates (published, active
    /// or retiring) and its later roots' cross-certificates (until the root before is
    /// withdrawn). None is trusted for what it says: a chain through them must still verify to
    /// the pinned bundle.
    pub fn intermediates(&self) -> Vec<rustls_pki_types::CertificateDer<'static>> {
        let g = self.inner.read().expect("directory");
        g.intermediates
            .values()
            .chain(g.crosses.values())
            .map(|d| rustls_pki_types::CertificateDer::from(d.clone()))
            .collect()
    }

    /// Adds the CA's issuing intermediates (`cross` false) or its later roots'
    /// cross-certificates (`cross` true) from its public listings (a start-up safety net: the
    /// first intermediate is never announced on the feed, and a node may start long after a
    /// step). Returns how many were new.
    pub fn learn_intermediates(
        &self,
        cross: bool,
        items: impl IntoIterator<Item = (u64, Vec<u8>)>,
    ) -> anyhow::Result<usize> {
        let mut pending: Vec<Pending> = Vec::new();
        {
            let mut g = self.inner.write().expect("directory");
            let known = if cross { &mut g.crosses } else { &mut g.intermediates };
            for (number, der) in items {
                if known.get(&number) != Some(&der) {
                    known.insert(number, der.clone());
                    pending.push(if cross {
                        Pending::Cross(number, Some(der))
                    } else {
                        Pending::Intermediate(number, Some(der))
                    });
                }
            }
        }
        let n = pending.len();
        if n > 0 {
            self.persist(self.cursor(), &mut pending)?;
        }
        Ok(n)
    }

    /// Adds serials revoked by a CRL (a start-up safety net: the feed carries every revocation).
    pub fn add_revoked(&self, serials: impl IntoIterator<Item = String>) -> anyhow::Result<usize> {
        let mut pending: Vec<Pending> = Vec::new();
        {
            let mut g = self.inner.write().expect("directory");
            for s in serials {
                if g.revoked.insert(s.clone()) {
                    pending.push(Pending::Revoked(s, now_ms() / 1000));
                }
            }
        }
        let n = pending.len();
        if n > 0 {
            self.persist(self.cursor(), &mut pending)?;
            self.revoked_gen.send_modify(|g| *g += 1);
        }
        Ok(n)
    }

    fn handle(&self, ev: &ServerEvent, cursor: &mut u64, pending: &mut Vec<Pending>) -> anyhow::Result<()> {
        self.last_contact_ms.store(now_ms(), Ordering::Relaxed);
        match ev.event.as_str() {
            "heartbeat" => {
                let env: Envelope = serde_json::from_str(&ev.data)?;
                let hb = self.keys.get().verify_heartbeat(&env)?;
                anyhow::ensure!(hb.node == self.node, "heartbeat for another node ({})", hb.node);
                self.synced.store(true, Ordering::Relaxed);
            }
            "membership" | "revocation" | "directory" | "intermediate" | "root" | "key" => {
                match serde_json::from_str::<FeedEvent>(&ev.data)? {
                    FeedEvent::Key {
                        seq, number, handover, ..
                    } => {
                        // Proves itself: both keys signed it, and it must link to a key trusted here.
                        if !self.learn_handovers(std::slice::from_ref(&handover))? && number > 1 {
                            let (_, _, to) = handover.verify()?;
                            anyhow::ensure!(
                                self.keys.get().contains(&to),
                                "membership key handover {number} does not link to the keys this node trusts"
                            );
                        }
                        *cursor = u64::try_from(seq)?;
                    }
                    FeedEvent::Root {
                        seq,
                        number,
                        step,
                        cross,
                        ..
                    } => {
                        // The cross-certificate is not trusted for what it says either: a chain
                        // through it must verify to the pinned bundle.
                        use base64::Engine;
                        let number = u64::try_from(number)?;
                        let keep = match step.as_str() {
                            "published" | "activated" => Some(base64::engine::general_purpose::STANDARD.decode(cross)?),
                            _ => None,
                        };
                        // A withdrawn root takes nothing away here: its successor's
                        // cross-certificate is what a node pinned on it still needs.
                        if let Some(der) = keep {
                            self.inner
                                .write()
                                .expect("directory")
                                .crosses
                                .insert(number, der.clone());
                            pending.push(Pending::Cross(number, Some(der)));
                        }
                        tracing::info!(root = number, step, "the CA's root {step}");
                        *cursor = u64::try_from(seq)?;
                    }
                    FeedEvent::Intermediate {
                        seq,
                        number,
                        step,
                        certificate,
                        ..
                    } => {
                        // Not trusted for what it says: a creator's chain through it must still
                        // verify to the bundle.
                        use base64::Engine;
                        let der = base64::engine::general_purpose::STANDARD.decode(certificate)?;
                        let number = u64::try_from(number)?;
                        let keep = (step != "retired").then_some(der);
                        {
                            let mut g = self.inner.write().expect("directory");
                            match &keep {
                                Some(der) => g.intermediates.insert(number, der.clone()),
                                None => g.intermediates.remove(&number),
                            };
                        }
                        tracing::info!(intermediate = number, step, "the CA's issuing intermediate {step}");
                        pending.push(Pending::Intermediate(number, keep));
                        *cursor = u64::try_from(seq)?;
                    }
                    FeedEvent::Directory { seq, directory, .. } => {
                        let d = self.keys.get().verify_directory(&directory)?;
                        let mut g = self.inner.write().expect("directory");
                        if g.nodes.as_ref().is_none_or(|n| n.revision < d.revision) {
                            tracing::info!(revision = d.revision, nodes = d.nodes.len(), "node directory");
                            g.nodes = Some(d);
                            drop(g);
                            pending.push(Pending::Nodes(serde_json::to_vec(&directory)?));
                            self.nodes_gen.send_modify(|g| *g += 1);
                        }
                        *cursor = u64::try_from(seq)?;
                    }
                    FeedEvent::Membership { seq, statement, .. } => {
                        let s = self.keys.get().verify_statement(&statement)?;
                        let id = s.subchain.as_str().to_string();
                        let env = serde_json::to_vec(&statement)?;
                        let mut g = self.inner.write().expect("directory");
                        let newer = g.statements.get(&id).is_none_or(|k| k.statement.revision < s.revision);
                        if newer {
                            g.statements.insert(
                                id.clone(),
                                Known {
                                    statement: s,
                                    envelope: env.clone(),
                                },
                            );
                            drop(g);
                            self.changed.lock().expect("changed").insert(id.clone());
                            pending.push(Pending::Statement(id, env));
                            self.statements_gen.send_modify(|g| *g += 1);
                        }
                        *cursor = u64::try_from(seq)?;
                    }
                    FeedEvent::Revocation { seq, serial, at, .. } => {
                        let serial = serial.to_ascii_lowercase();
                        if self.inner.write().expect("directory").revoked.insert(serial.clone()) {
                            self.revoked_gen.send_modify(|g| *g += 1);
                            tracing::info!(serial, "certificate revoked: refused from now on");
                        }
                        pending.push(Pending::Revoked(serial, at));
                        *cursor = u64::try_from(seq)?;
                    }
                }
            }
            other => tracing::debug!(event = other, "ignoring unknown feed event"),
        }
        Ok(())
    }

    /// Follows the CA's change feed for ever, reconnecting after a second on any failure, and
    /// acknowledges how far it has saved what it read (see [`ack`]).
    pub async fn follow(self: std::sync::Arc<Self>, api: Api) {
        let mut cursor = self.cursor();
        let mut acked = Acked::default();
        loop {
            match api
                .events("/api/v1/feed/stream", &[("cursor", cursor.to_string())])
                .await
            {
                Ok(mut stream) => {
                    let mut pending = Vec::new();
                    loop {
                        let next = tokio::time::timeout(Duration::from_millis(50), stream.next()).await;
                        let ev = match next {
                            Err(_) => {
                                if !pending.is_empty()
                                    && let Err(e) = self.persist(cursor, &mut pending)
                                {
                                    tracing::error!(error = %e, "cannot save the feed position");
                                }
                                if pending.is_empty() {
                                    ack(&api, cursor, &mut acked);
                                }
                                continue;
                            }
                            Ok(Ok(Some(ev))) => ev,
                            Ok(Ok(None)) => break,
                            Ok(Err(e)) => {
                                crate::warn_every!("ca-feed", error = %e, "CA feed interrupted");
                                break;
                            }
                        };
                        let before = cursor;
                        if let Err(e) = self.handle(&ev, &mut cursor, &mut pending) {
                            // A statement or heartbeat that does not verify is never applied.
                            tracing::error!(error = %e, event = ev.event, "refused a CA feed event");
                            cursor = before;
                        }
                        if pending.len() >= 256
                            && let Err(e) = self.persist(cursor, &mut pending)
                        {
                            tracing::error!(error = %e, "cannot save the feed position");
                        }
                    }
                    if !pending.is_empty() {
                        let _ = self.persist(cursor, &mut pending);
                    }
                }
                Err(e) => crate::warn_every!("ca-feed", error = %e, "cannot reach the CA's change feed"),
            }
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    }
}

/// A node acknowledges its saved feed position when it moved, and at least this often as a sign
/// of life (the CA waits for nodes that acknowledged within its window before it activates a new
/// issuing intermediate).
const ACK_EVERY: Duration = Duration::from_secs(60);

/// The last position acknowledged to the CA, and when.
#[derive(Default)]
struct Acked {
    cursor: u64,
    at: Option<std::time::Instant>,
}

/// Tells the CA (`POST /api/v1/feed/ack`) that the feed is saved up to `saved`, when that moved
/// or [`ACK_EVERY`] passed; in the background, so the feed never waits for it.
fn ack(api: &Api, saved: u64, acked: &mut Acked) {
    if saved == acked.cursor && acked.at.is_some_and(|t| t.elapsed() < ACK_EVERY) {
        return;
    }
    *acked = Acked {
        cursor: saved,
        at: Some(std::time::Instant::now()),
    };
    let api = api.clone();
    tokio::spawn(async move {
        if let Err(e) = api
            .post("/api/v1/feed/ack", &bsn_api::ca::FeedAck { cursor: saved as i64 })
            .await
        {
            crate::warn_every!("ca-feed-ack", error = %e, "cannot acknowledge the feed position to the CA");
        }
    });
}
