//! The application state shared by every handler, built once at start-up.

use identity::TrustDomain;
use time::OffsetDateTime;

use crate::commit::Committer;
use crate::db::Db;
use crate::pki::Ca;
use crate::secrets::Hasher;

/// Everything handlers need.
pub struct AppState {
    /// The issuing intermediates (the active one issues).
    pub issuers: std::sync::Arc<crate::intermediates::Current>,
    /// What opens and makes intermediates' keys.
    pub keys: std::sync::Arc<crate::intermediates::Keys>,
    /// The store.
    pub db: Db,
    /// The root's CRL file (`root-crl.der`), read on each request: whoever re-signs it (a
    /// replica starting, `ca-server root crl`) publishes it to every replica at once.
    pub root_crl: std::path::PathBuf,
    /// The group-commit writer for issued certificates.
    pub committer: Committer,
    /// argon2id with bounded concurrency.
    pub hasher: Hasher,
    /// The trust domain.
    pub trust_domain: TrustDomain,
    /// Recently read identity records (renewal builds certificates from them; the batch
    /// transaction re-checks what matters).
    pub identities: IdentityCache,
    /// The issuance log's checkpoint signer.
    pub log: std::sync::Arc<crate::log::LogSigner>,
    /// The log's upper stored hashes, read once (they never change).
    pub log_hashes: crate::log::HashCache,
    /// Counters served at `/metrics`.
    pub metrics: std::sync::Arc<crate::metrics::Metrics>,
    /// The membership statement and heartbeat signer.
    pub membership: crate::registry::MembershipSigner,
    /// Bumped whenever the change feed may have grown (by this replica at once, by others
    /// through the feed watcher), waking feed streams.
    pub feed_wakeup: tokio::sync::watch::Sender<u64>,
    /// Bounds the feed streams served at once, per node identity and in all.
    pub feed_streams: std::sync::Arc<bsn_transport::KeyedSlots<String>>,
    /// Heartbeat interval of feed streams.
    pub feed_heartbeat: std::time::Duration,
    /// Portal sign-in and registration limits.
    pub login_limits: crate::limits::PortalLimits,
    /// Failed enrollments per source.
    pub enroll_limits: crate::limits::EnrollLimits,
    /// Sources with recent failures (served after clean ones by the hasher).
    pub demerits: crate::limits::Demerits,
    /// Delays refusals for going over a limit.
    pub tarpit: crate::limits::Tarpit,
    /// Whether anyone may read `/metrics`.
    pub metrics_public: bool,
    /// The connection layer's counters.
    pub connections: std::sync::Arc<bsn_transport::Stats>,
}

impl AppState {
    /// The intermediate issuing now.
    pub fn ca(&self) -> std::sync::Arc<Ca> {
        self.issuers.get().active.clone()
    }

    /// Wakes feed streams after a commit that added feed events.
    pub fn feed_changed(&self) {
        crate::registry::wake_feed(&self.feed_wakeup);
    }
}

/// The current time (one place, so it is easy to find every use of the clock).
pub fn now() -> OffsetDateTime {
    OffsetDateTime::now_utc()
}

/// RFC 3339 text of Unix seconds.
pub fn rfc3339(unix: i64) -> String {
    OffsetDateTime::from_unix_timestamp(unix)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

/// Parses RFC 3339 text to Unix seconds.
pub fn parse_rfc3339(s: &str) -> Option<i64> {
    OffsetDateTime::parse(s, &time::format_description::well_known::Rfc3339)
        .ok()
        .map(|t| t.unix_timestamp())
}

/// A small time-bounded cache of identity records. Only used where the database re-checks the
/// record inside the writing transaction, so a stale entry can cost a retry, never a wrong answer.
pub struct IdentityCache {
    map: std::sync::RwLock<
        std::collections::HashMap<String, (std::sync::Arc<crate::db::IdentityRow>, std::time::Instant)>,
    >,
    ttl: std::time::Duration,
}

impl IdentityCache {
    /// Most entries kept; past this the cache starts over.
    const MAX: usize = 100_000;

    /// An empty cache whose entries live for `ttl`.
    pub fn new(ttl: std::time::Duration) -> Self {
        Self {
            map: Default::default(),
            ttl,
        }
    }

    /// The identity, from the cache or the database.
    pub async fn get(
        &self,
        db: &crate::db::Db,
        id: &str,
    ) -> Result<Option<std::sync::Arc<crate::db::IdentityRow>>, sqlx::Error> {
        if let Some((row, at)) = self.map.read().unwrap_or_else(|e| e.into_inner()).get(id)
            && at.elapsed() < self.ttl
        {
            return Ok(Some(row.clone()));
        }
        let Some(row) = db.identity(id).await? else {
            return Ok(None);
        };
        let row = std::sync::Arc::new(row);
        let mut map = self.map.write().unwrap_or_else(|e| e.into_inner());
        if map.len() >= Self::MAX {
            map.clear();
        }
        map.insert(id.to_string(), (row.clone(), std::time::Instant::now()));
        Ok(Some(row))
    }

    /// Forgets an identity.
    pub fn invalidate(&self, id: &str) {
        self.map.write().unwrap_or_else(|e| e.into_inner()).remove(id);
    }
}
