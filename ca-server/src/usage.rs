//! Metering at the CA (issue 14, DESIGN.md section 12): city nodes' signed usage reports, checked
//! and kept, and each subchain's totals per node and hour for its publisher, administrators and
//! auditors.
//!
//! Rules for a report (`identity::usage::SignedUsage`), each refusal changing nothing:
//! - it comes from a city node or orderer over mTLS with its own certificate, and is signed by
//!   that certificate's key over the usage context and the payload (`identity::ledger::CreatorKey`);
//! - it names that node and this trust domain, and was made within [`MAX_SKEW_SECS`] of now;
//! - its sequence number is newer than the last one taken from the node (a replay is refused);
//! - every subchain in it is one the node hosts or orders now.
//!
//! A report is one transaction: the report is stored as received (payload, signature, the
//! certificate's serial), and each (node, subchain, hour) total is set from it unless a newer
//! report set it. Reports no total refers to are deleted, except the node's newest.
//! Non-features: prices and invoices; totals of subchains a node stopped hosting before it
//! reported them.

use base64::Engine;
use base64::engine::general_purpose::STANDARD as B64;
use identity::usage::{SignedUsage, UsageReport, UsageRow};

use crate::db::Db;
use crate::db::usage as store;

/// How far a report's time may be from the CA's clock.
pub const MAX_SKEW_SECS: i64 = 600;

/// Why a report was refused.
#[derive(Debug, thiserror::Error)]
pub enum UsageError {
    /// Not base64, not JSON, or breaking the report's rules.
    #[error("{0}")]
    Invalid(String),
    /// The signature does not verify with the caller's certificate.
    #[error("the report's signature does not verify with your certificate's key")]
    BadSignature,
    /// A node reporting for another, or for a subchain it does not take part in.
    #[error("{0}")]
    Forbidden(String),
    /// Not newer than the last report taken from the node.
    #[error("{0}")]
    Replayed(String),
    /// Storage failed.
    #[error(transparent)]
    Internal(#[from] anyhow::Error),
}

impl From<crate::db::DbError> for UsageError {
    fn from(e: crate::db::DbError) -> Self {
        Self::Internal(e.into())
    }
}

/// The metering service.
pub struct Meter<'a> {
    /// The store.
    pub db: &'a Db,
    /// This CA's trust domain.
    pub trust_domain: &'a str,
}

impl Meter<'_> {
    /// Takes `signed` from `node` (authenticated with the certificate `serial`, `cert_der`).
    /// Returns the number of rows it set.
    pub async fn accept(
        &self,
        node: &str,
        serial: &str,
        cert_der: &[u8],
        signed: &SignedUsage,
        now: i64,
    ) -> Result<usize, UsageError> {
        let payload = B64
            .decode(&signed.payload)
            .map_err(|_| UsageError::Invalid("the payload is not base64".into()))?;
        let signature = B64
            .decode(&signed.signature)
            .map_err(|_| UsageError::Invalid("the signature is not base64".into()))?;
        let (_, cert) = x509_parser::parse_x509_certificate(cert_der)
            .map_err(|e| UsageError::Internal(anyhow::anyhow!("the caller's stored certificate: {e}")))?;
        identity::ledger::CreatorKey::from_certificate(&cert)
            .map_err(|e| UsageError::Invalid(format!("your certificate's key: {e}")))?
            .verify(&UsageReport::signed_message(&payload), &signature)
            .map_err(|_| UsageError::BadSignature)?;
        let report: UsageReport =
            serde_json::from_slice(&payload).map_err(|e| UsageError::Invalid(format!("the report: {e}")))?;
        report.check().map_err(UsageError::Invalid)?;
        if report.node != node {
            return Err(UsageError::Forbidden(format!(
                "{node} reports its own usage, not {}'s",
                report.node
            )));
        }
        if report.trust_domain != self.trust_domain {
            return Err(UsageError::Invalid(format!(
                "the report is for trust domain '{}', this CA's is '{}'",
                report.trust_domain, self.trust_domain
            )));
        }
        if (report.at - now).abs() > MAX_SKEW_SECS {
            return Err(UsageError::Invalid(format!(
                "the report was made at {}, more than {MAX_SKEW_SECS} s from the CA's clock ({now})",
                report.at
            )));
        }
        let seq = i64::try_from(report.seq).map_err(|_| UsageError::Invalid("seq is too large".into()))?;
        let mut tx = self.db.begin().await?;
        let last = store::last_seq(&mut tx, node).await?;
        if seq <= last {
            return Err(UsageError::Replayed(format!(
                "report {seq} of {node} is not newer than the last one taken ({last})"
            )));
        }
        let mut checked: Option<&str> = None;
        for r in &report.rows {
            if checked != Some(r.subchain.as_str()) {
                if !store::takes_part(&mut tx, node, &r.subchain).await? {
                    return Err(UsageError::Forbidden(format!(
                        "{node} does not host or order subchain '{}'",
                        r.subchain
                    )));
                }
                checked = Some(&r.subchain);
            }
        }
        store::insert_report(
            &mut tx,
            &store::Received {
                node,
                seq,
                at: report.at,
                payload: &payload,
                signature: &signature,
                serial,
                received: now,
            },
        )
        .await?;
        for r in &report.rows {
            store::upsert_row(&mut tx, node, r, seq).await?;
        }
        store::prune_reports(&mut tx, node, seq).await?;
        tx.commit().await.map_err(|e| UsageError::Internal(e.into()))?;
        Ok(report.rows.len())
    }

    /// A subchain's totals per node and hour in [from, to).
    pub async fn rows(&self, subchain: &str, from: i64, to: i64) -> Result<Vec<(String, UsageRow)>, UsageError> {
        Ok(store::rows(&mut *self.db.acquire().await?, subchain, from, to).await?)
    }
}
