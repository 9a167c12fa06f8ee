//! The issuance service: who gets a certificate, for which key, and the durable write before
//! anyone hears of it.
//!
//! Three ways in: enrollment with a one-time secret, renewal over mTLS with a certificate on
//! record, and the portal's enrollment of a browser-made key (proof of possession checked by the
//! caller, one-time challenge consumed here). Each builds the leaf from the identity's record
//! (never from the request: a CSR contributes only its public key), signs it, and hands it to the
//! group-commit writer ([`crate::commit`]) with a precondition that the batch transaction checks
//! again (secret unspent, challenge unused, certificate unrevoked, identity unchanged). The
//! caller is answered only once the batch is durable and logged.

use std::net::IpAddr;

use identity::{IdentityId, IdentityKind, IdentityStatus, SpiffeId, TrustDomain};

use crate::app::{IdentityCache, now};
use crate::commit::{CommitError, Committer, Job, Precondition};
use crate::csr::CheckedKey;
use crate::db::{Db, IdentityRow};
use crate::log::Receipt;
use crate::pki::{Ca, LeafSubject};
use crate::secrets::{Asker, Busy, Hasher};

/// What an issuance can fail with.
#[derive(Debug, thiserror::Error)]
pub enum IssueError {
    /// Unknown identity or wrong secret (deliberately not told apart).
    #[error("unknown identity or wrong enrollment secret")]
    InvalidCredentials,
    /// The identity is disabled.
    #[error("the identity is disabled")]
    IdentityDisabled,
    /// The secret expired.
    #[error("the enrollment secret has expired")]
    SecretExpired,
    /// The secret has no uses left.
    #[error("the enrollment secret has been used up")]
    SecretUsedUp,
    /// The presented certificate names no identity of that kind here.
    #[error("the client certificate is not known to this CA")]
    CertificateUnknown,
    /// The batch transaction refused or failed.
    #[error(transparent)]
    Commit(#[from] CommitError),
    /// Too much hashing queued.
    #[error("busy")]
    Busy,
    /// Storage or signing failed.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<Busy> for IssueError {
    fn from(_: Busy) -> Self {
        Self::Busy
    }
}

impl From<crate::db::DbError> for IssueError {
    fn from(e: crate::db::DbError) -> Self {
        Self::Internal(e.into())
    }
}

/// A certificate issued and durably stored.
#[derive(Debug)]
pub struct Issued {
    /// Serial, lowercase hex.
    pub serial: String,
    /// The holder.
    pub spiffe_id: SpiffeId,
    /// Unix seconds.
    pub not_before: i64,
    /// Unix seconds.
    pub not_after: i64,
    /// The leaf, DER.
    pub der: Vec<u8>,
    /// The intermediate that issued it (what the holder presents after the leaf).
    pub chain: Vec<rustls_pki_types::CertificateDer<'static>>,
    /// Where its issuance is in the issuance log.
    pub receipt: Receipt,
}

/// The service.
pub struct Issuance<'a> {
    /// The issuing CA (the active intermediate when the request came).
    pub ca: std::sync::Arc<Ca>,
    /// The store.
    pub db: &'a Db,
    /// The group-commit writer.
    pub committer: &'a Committer,
    /// argon2id.
    pub hasher: &'a Hasher,
    /// Recently read identity records (renewal).
    pub identities: &'a IdentityCache,
    /// The trust domain.
    pub trust_domain: &'a TrustDomain,
}

impl Issuance<'_> {
    /// Enrollment: the identity's one-time secret must verify, be unexpired and have uses left;
    /// one use is spent in the transaction that stores the certificate.
    pub async fn enroll(
        &self,
        id: &IdentityId,
        secret: String,
        key: &CheckedKey,
        who: Asker<'_>,
    ) -> Result<Issued, IssueError> {
        let ident = self.db.identity(id.as_str()).await?;
        let hash = ident.as_ref().and_then(|i| i.secret_hash.clone());
        if !self.hasher.verify(who.source, who.clean, secret, hash.clone()).await? {
            return Err(IssueError::InvalidCredentials);
        }
        let (Some(ident), Some(hash)) = (ident, hash) else {
            return Err(IssueError::InvalidCredentials);
        };
        let t = now().unix_timestamp();
        if ident.status != IdentityStatus::Active {
            return Err(IssueError::IdentityDisabled);
        }
        if ident.secret_expires_at.is_none_or(|e| e <= t) {
            return Err(IssueError::SecretExpired);
        }
        if ident.enrollments_left <= 0 {
            return Err(IssueError::SecretUsedUp);
        }
        let precondition = Precondition::ConsumeSecret {
            secret_hash: hash,
            now: t,
        };
        let authorized_by = format!("secret:{}", ident.registered_by);
        self.issue(&ident, key, "enroll", authorized_by, precondition).await
    }

    /// Renewal by the holder of `serial`, a certificate of `holder`. The record comes from a
    /// short-lived cache; every check that depends on the database (certificate on record,
    /// unrevoked, unexpired, identity active and unchanged) is left to the batch transaction, and
    /// a record that changed meanwhile is read again once.
    pub async fn renew(&self, holder: &SpiffeId, serial: &str, key: &CheckedKey) -> Result<Issued, IssueError> {
        let id = holder.id.as_str();
        let mut retried = false;
        loop {
            let ident = self
                .identities
                .get(self.db, id)
                .await?
                .ok_or(IssueError::CertificateUnknown)?;
            if ident.kind != holder.kind {
                return Err(IssueError::CertificateUnknown);
            }
            if ident.status != IdentityStatus::Active {
                return Err(IssueError::IdentityDisabled);
            }
            let sans = (crate::db::json(&ident.dns_names), crate::db::json(&ident.ip_addresses));
            let precondition = Precondition::Renewal {
                serial: serial.to_string(),
                now: now().unix_timestamp(),
                sans,
            };
            match self
                .issue(&ident, key, "renew", format!("renew:{serial}"), precondition)
                .await
            {
                Err(IssueError::Commit(CommitError::Stale)) if !retried => {
                    self.identities.invalidate(id);
                    retried = true;
                }
                other => return other,
            }
        }
    }

    /// The portal's enrollment of a key whose possession the caller checked against the
    /// one-time challenge with this hash; the challenge is consumed with the store.
    pub async fn enroll_from_portal(
        &self,
        ident: &IdentityRow,
        key: &CheckedKey,
        challenge_hash: String,
    ) -> Result<Issued, IssueError> {
        let precondition = Precondition::ConsumeChallenge {
            challenge_hash,
            now: now().unix_timestamp(),
        };
        self.issue(ident, key, "portal", format!("portal:{}", ident.id), precondition)
            .await
    }

    /// Signs a leaf for `ident` by the profile and stores it; returns once it is durable.
    async fn issue(
        &self,
        ident: &IdentityRow,
        key: &CheckedKey,
        via: &'static str,
        authorized_by: String,
        precondition: Precondition,
    ) -> Result<Issued, IssueError> {
        let spiffe_id = SpiffeId {
            trust_domain: self.trust_domain.clone(),
            kind: ident.kind,
            id: IdentityId::parse(&ident.id).map_err(|_| anyhow::anyhow!("bad stored id '{}'", ident.id))?,
        };
        let ips: Vec<IpAddr> = ident.ip_addresses.iter().filter_map(|ip| ip.parse().ok()).collect();
        let validity = match ident.kind {
            IdentityKind::Participant => self.ca.policy.participant_validity,
            IdentityKind::Node | IdentityKind::Orderer => self.ca.policy.node_validity,
        };
        let subject = LeafSubject {
            spiffe_id: &spiffe_id,
            dns_names: &ident.dns_names,
            ip_addresses: &ips,
            validity,
        };
        let t = now();
        let cert = self
            .ca
            .issue_leaf(&subject, key, t)
            .map_err(|e| IssueError::Internal(e.into()))?;
        let (serial, der, not_before, not_after) = (
            cert.serial_hex.clone(),
            cert.der.clone(),
            cert.not_before,
            cert.not_after,
        );
        let job = Job {
            identity: ident.id.clone(),
            cert,
            issued_via: via,
            authorized_by,
            issued_at: t.unix_timestamp(),
            precondition,
        };
        let receipt = self.committer.store(job).await?;
        tracing::info!(identity = %spiffe_id, serial = %serial, via, "certificate issued");
        Ok(Issued {
            serial,
            spiffe_id,
            not_before,
            not_after,
            der,
            chain: self.ca.chain(),
            receipt,
        })
    }
}
