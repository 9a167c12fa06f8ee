//! The revocation service: who may revoke what, and the one transaction that records it.
//!
//! A revocation marks the certificate, appends a revocation leaf to the issuance log, writes the
//! feed event for the ledger nodes and re-signs the CRL, all in one database transaction; after
//! the commit it wakes the feed streams. The CRL row is locked first, so concurrent revocations
//! (from any replica) get consecutive CRL numbers and each CRL lists every revocation committed
//! before it. When the certificate was an orderer's last valid one, the same transaction drops
//! that orderer from every subchain it orders ([`crate::registry::Registry::drop_orderer`]: a
//! new membership revision each, with its own log leaf and feed event). Crash story: before the
//! commit nothing changed; after it, all of it did.

use time::OffsetDateTime;

use crate::db::Db;
use crate::intermediates::{Current, Keys};
use crate::log::{LogSigner, NewLeaf, Receipt};
use crate::pki::Ca;
use crate::pki::Reason;
use crate::registry::{MembershipSigner, Registry};

/// Who asks to revoke.
#[derive(Debug, Clone, Copy)]
pub enum Authority<'a> {
    /// The certificate's holder (any of its identity's valid certificates, or its portal session).
    Holder(&'a str),
    /// An administrator, who may revoke any certificate.
    Administrator(&'a str),
}

impl Authority<'_> {
    fn who(&self) -> &str {
        match self {
            Self::Holder(id) | Self::Administrator(id) => id,
        }
    }
}

/// What a revocation can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RevokeError {
    /// No certificate with this serial.
    #[error("no certificate with serial {0}")]
    Unknown(String),
    /// A holder asked to revoke another identity's certificate.
    #[error("you may revoke only your own certificates")]
    NotYours(String),
    /// It was revoked before.
    #[error("the certificate is already revoked")]
    AlreadyRevoked,
    /// Storage or signing failed.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<crate::db::DbError> for RevokeError {
    fn from(e: crate::db::DbError) -> Self {
        Self::Internal(e.into())
    }
}

/// A recorded revocation.
#[derive(Debug)]
pub struct Revoked {
    /// Serial, lowercase hex.
    pub serial: String,
    /// The RFC 5280 reason.
    pub reason: Reason,
    /// Unix seconds.
    pub revoked_at: i64,
    /// The number of the first CRL that lists it.
    pub crl_number: i64,
    /// Its place in the issuance log.
    pub receipt: Receipt,
}

/// The service.
pub struct Revocations<'a> {
    /// The store.
    pub db: &'a Db,
    /// The intermediates (the certificate's issuer signs the CRL).
    pub issuers: &'a Current,
    /// Their keys (to load an intermediate another replica activated moments ago).
    pub keys: &'a Keys,
    /// The issuance log's key.
    pub log: &'a LogSigner,
    /// The membership key (signs the statements of subchains a revoked orderer leaves).
    pub membership: &'a MembershipSigner,
    /// The trust domain (for the leaf's SPIFFE ID).
    pub trust_domain: &'a str,
    /// Woken after each committed revocation (the feed streams wait on it).
    pub feed: &'a tokio::sync::watch::Sender<u64>,
}

impl Revocations<'_> {
    /// Revokes the certificate `serial` (lowercase hex) if `by` may: recorded in the database,
    /// the log, the feed and a new CRL, or nothing changes.
    pub async fn revoke(
        &self,
        serial: &str,
        reason: Reason,
        by: Authority<'_>,
        now: OffsetDateTime,
    ) -> Result<Revoked, RevokeError> {
        let cert = self
            .db
            .certificate(serial)
            .await?
            .ok_or_else(|| RevokeError::Unknown(serial.to_string()))?;
        if let Authority::Holder(id) = by
            && cert.identity_id != id
        {
            return Err(RevokeError::NotYours(serial.to_string()));
        }
        if cert.revoked_at.is_some() {
            return Err(RevokeError::AlreadyRevoked);
        }
        // The issuer's key signs the new CRL. One another replica made moments ago may not be
        // loaded here yet: load it now rather than leave the revocation off its CRL.
        let mut issuer = self.issuers.get().signing.get(&cert.issuer).cloned();
        if issuer.is_none() {
            self.issuers
                .reload(self.db, self.keys)
                .await
                .map_err(|e| RevokeError::Internal(anyhow::anyhow!("loading the intermediates: {e}")))?;
            issuer = self.issuers.get().signing.get(&cert.issuer).cloned();
        }
        let revoked = self.record(serial, issuer.as_deref(), reason, by.who(), now).await?;
        crate::registry::wake_feed(self.feed);
        tracing::info!(
            serial,
            reason = reason.name(),
            by = by.who(),
            crl_number = revoked.crl_number,
            "certificate revoked"
        );
        Ok(revoked)
    }

    /// The one transaction.
    async fn record(
        &self,
        serial: &str,
        ca: Option<&Ca>,
        reason: Reason,
        by: &str,
        now: OffsetDateTime,
    ) -> Result<Revoked, RevokeError> {
        let at = now.unix_timestamp();
        let mut tx = self.db.begin().await?;
        // The issuer's CRL row, locked first. A retired intermediate has none: its certificates
        // have all expired, and a revocation of one is recorded in the log and the feed only.
        let number = match ca {
            Some(ca) => Db::next_crl_number(&mut tx, ca.number).await?,
            None => None,
        };
        if !Db::mark_revoked(&mut tx, serial, at, reason, by).await? {
            // Another request revoked it since we looked.
            tx.rollback().await?;
            return Err(RevokeError::AlreadyRevoked);
        }
        let (holder, kind) = Db::holder(&mut tx, serial).await?;
        let leaf = identity::logleaf::LogLeaf::Revocation {
            time: at.max(0) as u64,
            identity: format!("spiffe://{}/{kind}/{holder}", self.trust_domain),
            serial: serial.to_string(),
            authorized_by: by.to_string(),
            reason: reason.code(),
        };
        let new = NewLeaf {
            bytes: leaf.encode().map_err(anyhow::Error::from)?,
            kind: "revocation",
            serial: serial.to_string(),
            identity: holder.clone(),
            at,
        };
        let appended = crate::log::append(&mut tx, self.db.backend, self.log, &[new], true)
            .await
            .map_err(anyhow::Error::from)?;
        Db::set_revocation_log_index(&mut tx, serial, appended.first).await?;
        crate::registry::feed_revocation(&mut tx, serial, &holder, reason.name(), at)
            .await
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        if let (Some(ca), Some(number)) = (ca, number) {
            Db::resign_crl(&mut tx, ca, number, now).await?;
        }
        if kind == identity::IdentityKind::Orderer.as_str() {
            let registry = Registry {
                db: self.db,
                signer: self.membership,
                log: self.log,
                feed: self.feed,
            };
            let left = registry
                .drop_orderer(&mut tx, &holder, by, at)
                .await
                .map_err(|e| anyhow::anyhow!("dropping the revoked orderer from its subchains: {e}"))?;
            for r in &left {
                tracing::info!(
                    orderer = holder,
                    subchain = r.subchain,
                    revision = r.revision,
                    "a revoked orderer left the subchain"
                );
            }
        }
        tx.commit().await?;
        Ok(Revoked {
            serial: serial.to_string(),
            reason,
            revoked_at: at,
            crl_number: number.unwrap_or(0),
            receipt: appended.receipt(0),
        })
    }
}
