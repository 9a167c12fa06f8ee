//! The application state shared by every handler, built once at start-up.

use identity::TrustDomain;
use time::OffsetDateTime;

use crate::commit::Committer;
use crate::db::Db;
use crate::pki::Ca;
use crate::secrets::Hasher;

/// Everything handlers need.
pub struct AppState {
    /// The issuing CA.
    pub ca: Ca,
    /// The store.
    pub db: Db,
    /// The group-commit writer for issued certificates.
    pub committer: Committer,
    /// argon2id with bounded concurrency.
    pub hasher: Hasher,
    /// The trust domain.
    pub trust_domain: TrustDomain,
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
