//! Metering and bandwidth pacing on a shared city node (issue 14, DESIGN.md section 12).
//!
//! Features:
//! - Counts per subchain and per hour: transactions committed through this node and their
//!   bytes, bytes the subchain takes on disk (the most seen in the hour), bytes of responses
//!   served for it, submissions refused by quota.
//! - Every minute ([`Usage::run`]) the totals of each hour that changed since the CA last took
//!   them go to the CA in reports signed with the node's certificate key (`identity::usage`);
//!   a quiet subchain costs one row an hour (its size on disk in the new hour), not one a
//!   minute. The counts and the report sequence are written to `usage.redb` (fsynced) before a
//!   report leaves, so a restart neither loses what was reported nor reuses a sequence number
//!   (after a restart every total is sent once more: the CA sets totals, so that is harmless).
//!   Hours before the current one are dropped once the CA has taken their final totals.
//! - Bandwidth pacing ([`Usage::pace`]): responses beyond a subchain's plan's bandwidth wait
//!   until its byte bucket (one second of the allowance) has room again: delayed, never dropped.
//!
//! Crash story: counts made after the last report of a minute are lost on a kill -9 (at most a
//! minute's); what the CA holds is never counted twice (reports carry totals, not increments).
//! Non-features: counts of subchains this node no longer takes part in are not reported (the CA
//! would refuse them) and are dropped; reads are paced per response body frame, not per byte.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use identity::usage::{MAX_ROWS, SignedUsage, UsageReport, UsageRow};
use redb::{Database, ReadableDatabase, TableDefinition};

const STATE: TableDefinition<&str, &[u8]> = TableDefinition::new("usage");

/// How often reports go to the CA by default (`usage_report_secs` in `node.toml`).
pub const REPORT_EVERY: Duration = Duration::from_secs(60);

/// One subchain's counts in one hour.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
struct Counts {
    transactions: u64,
    bytes_written: u64,
    bytes_stored: u64,
    bytes_served: u64,
    refused: u64,
}

#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
struct Saved {
    seq: u64,
    /// (subchain, hour) -> counts.
    hours: Vec<(String, i64, Counts)>,
}

/// A subchain's byte bucket for pacing.
struct Pacer {
    rate: u64,
    tokens: f64,
    at: Instant,
}

/// The node's meter.
pub struct Usage {
    db: Database,
    hours: Mutex<BTreeMap<(String, i64), Counts>>,
    /// The totals the CA took last, per (subchain, hour) (in memory: empty after a restart).
    sent: Mutex<HashMap<(String, i64), Counts>>,
    seq: Mutex<u64>,
    pacers: Mutex<HashMap<String, Pacer>>,
}

impl std::fmt::Debug for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Usage").finish_non_exhaustive()
    }
}

fn hour_of(unix_secs: i64) -> i64 {
    unix_secs - unix_secs.rem_euclid(3600)
}

fn now_secs() -> i64 {
    crate::clock::now_ms() / 1000
}

impl Usage {
    /// Opens (or creates) `usage.redb` in the node's data directory and loads what it holds.
    pub fn open(dir: &Path) -> anyhow::Result<Arc<Self>> {
        let db = Database::create(dir.join("usage.redb"))?;
        let w = db.begin_write()?;
        w.open_table(STATE)?;
        w.commit()?;
        let saved: Saved = {
            let r = db.begin_read()?;
            let t = r.open_table(STATE)?;
            match t.get("state")? {
                Some(v) => serde_json::from_slice(v.value())?,
                None => Saved::default(),
            }
        };
        Ok(Arc::new(Self {
            db,
            hours: Mutex::new(saved.hours.into_iter().map(|(s, h, c)| ((s, h), c)).collect()),
            sent: Mutex::new(HashMap::new()),
            seq: Mutex::new(saved.seq),
            pacers: Mutex::new(HashMap::new()),
        }))
    }

    fn count(&self, subchain: &str, f: impl FnOnce(&mut Counts)) {
        let hour = hour_of(now_secs());
        let mut hours = self.hours.lock().unwrap_or_else(|e| e.into_inner());
        f(hours.entry((subchain.to_string(), hour)).or_default());
    }

    /// `txs` transactions of `bytes` bytes committed through this node.
    pub fn committed(&self, subchain: &str, txs: u64, bytes: u64) {
        self.count(subchain, |c| {
            c.transactions += txs;
            c.bytes_written += bytes;
        });
    }

    /// A submission refused by quota.
    pub fn refused(&self, subchain: &str) {
        self.count(subchain, |c| c.refused += 1);
    }

    /// `bytes` of a response served.
    pub fn served(&self, subchain: &str, bytes: u64) {
        self.count(subchain, |c| c.bytes_served += bytes);
    }

    /// The subchain takes `bytes` on disk now.
    pub fn stored(&self, subchain: &str, bytes: u64) {
        self.count(subchain, |c| c.bytes_stored = c.bytes_stored.max(bytes));
    }

    /// Waits until `bytes` more may be served for `subchain` under a plan allowing `bandwidth`
    /// bytes a second (a bucket of one second's allowance; a frame larger than that waits for
    /// its share of the time after it).
    pub async fn pace(&self, subchain: &str, bandwidth: u64, bytes: u64) {
        let wait = {
            let now = Instant::now();
            let mut pacers = self.pacers.lock().unwrap_or_else(|e| e.into_inner());
            let p = pacers.entry(subchain.to_string()).or_insert(Pacer {
                rate: bandwidth.max(1),
                tokens: bandwidth.max(1) as f64,
                at: now,
            });
            p.rate = bandwidth.max(1);
            let elapsed = now.saturating_duration_since(p.at).as_secs_f64();
            p.tokens = (p.tokens + elapsed * p.rate as f64).min(p.rate as f64);
            p.at = now;
            p.tokens -= bytes as f64;
            (p.tokens < 0.0).then(|| Duration::from_secs_f64(-p.tokens / p.rate as f64))
        };
        if let Some(w) = wait {
            tokio::time::sleep(w).await;
        }
    }

    /// The next reports: every (subchain, hour) of the subchains in `hosted` counted since the
    /// CA took its totals last ([`Usage::reported`]), in reports of at most [`MAX_ROWS`] rows,
    /// each with the next sequence number, after saving the counts and the sequence durably.
    /// Counts of other subchains are dropped. Returns the reports (none when nothing changed)
    /// and the current hour (hours before it are final in them).
    pub fn reports(
        &self,
        trust_domain: &str,
        node: &str,
        hosted: &dyn Fn(&str) -> bool,
    ) -> anyhow::Result<(Vec<UsageReport>, i64)> {
        let at = now_secs();
        let rows: Vec<UsageRow> = {
            let mut hours = self.hours.lock().unwrap_or_else(|e| e.into_inner());
            hours.retain(|(s, _), _| hosted(s));
            let sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
            hours
                .iter()
                .filter(|(k, c)| sent.get(*k) != Some(*c))
                .map(|((subchain, hour), c)| UsageRow {
                    subchain: subchain.clone(),
                    hour: *hour,
                    transactions: c.transactions,
                    bytes_written: c.bytes_written,
                    bytes_stored: c.bytes_stored,
                    bytes_served: c.bytes_served,
                    refused: c.refused,
                })
                .collect()
        };
        if rows.is_empty() {
            return Ok((Vec::new(), hour_of(at)));
        }
        let mut seq = self.seq.lock().unwrap_or_else(|e| e.into_inner());
        let mut reports = Vec::new();
        for chunk in rows.chunks(MAX_ROWS) {
            *seq += 1;
            reports.push(UsageReport {
                version: 1,
                trust_domain: trust_domain.to_string(),
                node: node.to_string(),
                seq: *seq,
                at,
                rows: chunk.to_vec(),
            });
        }
        self.save(*seq)?;
        Ok((reports, hour_of(at)))
    }

    /// The CA took `reports` (made by [`Usage::reports`] at `hour`): remembers their totals as
    /// sent, and drops the hours before `hour` (their final totals reached the CA, in these
    /// reports or unchanged since an earlier one).
    pub fn reported(&self, hour: i64, reports: &[UsageReport]) -> anyhow::Result<()> {
        let dropped = {
            let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
            for r in reports.iter().flat_map(|r| &r.rows) {
                let c = Counts {
                    transactions: r.transactions,
                    bytes_written: r.bytes_written,
                    bytes_stored: r.bytes_stored,
                    bytes_served: r.bytes_served,
                    refused: r.refused,
                };
                sent.insert((r.subchain.clone(), r.hour), c);
            }
            sent.retain(|(_, h), _| *h >= hour);
            let mut hours = self.hours.lock().unwrap_or_else(|e| e.into_inner());
            let before = hours.len();
            hours.retain(|(_, h), _| *h >= hour);
            before != hours.len()
        };
        if !dropped {
            return Ok(());
        }
        let seq = *self.seq.lock().unwrap_or_else(|e| e.into_inner());
        self.save(seq)
    }

    fn save(&self, seq: u64) -> anyhow::Result<()> {
        let saved = Saved {
            seq,
            hours: self
                .hours
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .iter()
                .map(|((s, h), c)| (s.clone(), *h, c.clone()))
                .collect(),
        };
        let bytes = serde_json::to_vec(&saved)?;
        let w = self.db.begin_write()?;
        w.open_table(STATE)?.insert("state", bytes.as_slice())?;
        w.commit()?;
        Ok(())
    }

    /// Signs `report` with `key` (the node's certificate key).
    pub fn sign(report: &UsageReport, key: &bsn_api::files::KeyPair) -> anyhow::Result<SignedUsage> {
        let payload = serde_json::to_vec(report)?;
        let signature = bsn_api::files::sign(key, &UsageReport::signed_message(&payload))?;
        Ok(SignedUsage {
            payload: B64.encode(&payload),
            signature: B64.encode(signature),
        })
    }

    /// Every `every` ([`REPORT_EVERY`] unless configured): records each hosted subchain's size
    /// on disk, then sends the reports to the CA (`POST /api/v1/usage`) with this node's
    /// certificate.
    #[allow(clippy::too_many_arguments)]
    pub async fn run(
        self: Arc<Self>,
        ca: bsn_api::client::Api,
        every: Duration,
        key: bsn_api::files::KeyPair,
        trust_domain: String,
        node: String,
        subchains: Arc<crate::subchain::Subchains>,
        directory: Arc<crate::directory::Directory>,
    ) {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            if let Err(e) = self
                .report_once(&ca, &key, &trust_domain, &node, &subchains, &directory)
                .await
            {
                crate::warn_every!("usage", error = %e, "cannot report usage to the CA yet; the counts are kept");
            }
        }
    }

    /// One round of [`Usage::run`].
    pub async fn report_once(
        &self,
        ca: &bsn_api::client::Api,
        key: &bsn_api::files::KeyPair,
        trust_domain: &str,
        node: &str,
        subchains: &crate::subchain::Subchains,
        directory: &crate::directory::Directory,
    ) -> anyhow::Result<()> {
        for (id, bytes) in subchains.disk_usage() {
            self.stored(&id, bytes);
        }
        let involved = |id: &str| {
            directory
                .statement(id)
                .is_some_and(|k| k.statement.involves(&directory.node))
        };
        self.pacers
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| involved(id));
        let (reports, hour) = self.reports(trust_domain, node, &involved)?;
        for r in &reports {
            let signed = Self::sign(r, key)?;
            ca.post("/api/v1/usage", &signed)
                .await
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        }
        self.reported(hour, &reports)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_survive_a_restart_and_reports_carry_totals_with_growing_seqs() {
        let dir = tempfile_dir();
        let u = Usage::open(&dir).unwrap();
        u.committed("a", 3, 300);
        u.refused("a");
        u.served("b", 1000);
        u.stored("b", 50);
        u.stored("b", 40);
        let (r1, hour) = u.reports("t", "n1", &|_| true).unwrap();
        assert_eq!(r1.len(), 1);
        let rows = &r1[0].rows;
        assert_eq!(rows.len(), 2);
        assert_eq!(
            (rows[0].transactions, rows[0].bytes_written, rows[0].refused),
            (3, 300, 1)
        );
        assert_eq!((rows[1].bytes_served, rows[1].bytes_stored), (1000, 50));
        r1[0].check().unwrap();
        drop(u);
        // Reopened: the same totals, the next sequence number.
        let u = Usage::open(&dir).unwrap();
        u.committed("a", 1, 100);
        let (r2, _) = u.reports("t", "n1", &|s| s == "a").unwrap();
        assert_eq!(r2[0].seq, r1[0].seq + 1);
        assert_eq!(r2[0].rows.len(), 1, "b is no longer hosted: dropped");
        assert_eq!(r2[0].rows[0].transactions, 4, "totals, not increments");
        // The current hour stays after it was reported, and is sent again only once it changes.
        u.reported(hour, &r2).unwrap();
        let (r3, _) = u.reports("t", "n1", &|_| true).unwrap();
        assert!(r3.is_empty(), "nothing changed since the CA took the totals: {r3:?}");
        u.stored("a", 10);
        let (r4, _) = u.reports("t", "n1", &|_| true).unwrap();
        assert_eq!(r4[0].rows.len(), 1);
        assert_eq!((r4[0].rows[0].transactions, r4[0].rows[0].bytes_stored), (4, 10));
        assert_eq!(r4[0].seq, r2[0].seq + 1, "no sequence number spent on an empty round");
        // Not taken by the CA (reported not called): sent again with the next round.
        let (r5, _) = u.reports("t", "n1", &|_| true).unwrap();
        assert_eq!(r5[0].rows[0].bytes_stored, 10);
        // After a restart every total goes once more (the CA sets totals).
        u.reported(hour, &r5).unwrap();
        drop(u);
        let u = Usage::open(&dir).unwrap();
        let (r6, _) = u.reports("t", "n1", &|_| true).unwrap();
        assert_eq!(r6[0].rows.len(), 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_signed_report_verifies_with_the_node_key() {
        let key = bsn_api::files::generate_key(bsn_api::files::KeyType::P256).unwrap();
        let u = UsageReport {
            version: 1,
            trust_domain: "t".into(),
            node: "n1".into(),
            seq: 1,
            at: 7_200,
            rows: vec![UsageRow {
                subchain: "a".into(),
                hour: 3_600,
                ..Default::default()
            }],
        };
        let signed = Usage::sign(&u, &key).unwrap();
        let payload = B64.decode(&signed.payload).unwrap();
        let signature = B64.decode(&signed.signature).unwrap();
        let public =
            ring::signature::UnparsedPublicKey::new(&ring::signature::ECDSA_P256_SHA256_ASN1, key.public_key_raw());
        public
            .verify(&UsageReport::signed_message(&payload), &signature)
            .unwrap();
        assert!(
            public.verify(&payload, &signature).is_err(),
            "the context is signed too"
        );
    }

    #[tokio::test]
    async fn pacing_delays_beyond_the_allowance() {
        let u = Usage::open(&tempfile_dir()).unwrap();
        let t = Instant::now();
        u.pace("a", 100_000, 100_000).await; // the first second's allowance: at once
        assert!(t.elapsed() < Duration::from_millis(50));
        u.pace("a", 100_000, 50_000).await; // half a second more
        let waited = t.elapsed();
        assert!(
            waited >= Duration::from_millis(450) && waited < Duration::from_millis(900),
            "{waited:?}"
        );
        let t = Instant::now();
        u.pace("b", 100_000, 1_000).await; // another subchain does not wait
        assert!(t.elapsed() < Duration::from_millis(50));
    }

    fn tempfile_dir() -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!(
            "bsn-usage-{}-{}",
            std::process::id(),
            B64.encode(ring_random()).replace('/', "_")
        ));
        std::fs::create_dir_all(&d).unwrap();
        d
    }

    fn ring_random() -> [u8; 9] {
        let mut b = [0u8; 9];
        ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut b).unwrap();
        b
    }
}
