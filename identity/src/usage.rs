//! Usage reports of shared city nodes (issue 14, DESIGN.md section 12): what each node counted,
//! per subchain and per hour, signed with the node's own certificate key and sent to the CA.
//!
//! A [`UsageReport`] carries, for each (subchain, hour) the node has counts of, the totals so far
//! in that hour: transactions committed through it, bytes of those transactions, bytes the
//! subchain takes on its disk (the most seen in the hour), bytes it served, and submissions it
//! refused by quota. Totals, not increments: a later report for the same hour replaces an
//! earlier one, so a lost or repeated report changes no total. `seq` grows with every report a
//! node makes; the CA refuses one not newer than the last it took (a replay).
//!
//! The signature is the node key's over [`USAGE_CONTEXT`] followed by the payload bytes, as a
//! transaction's is (ECDSA DER with SHA-256 for P-256, SHA-384 for P-384; Ed25519; RSA PKCS#1
//! v1.5 with SHA-256): `identity::ledger::CreatorKey::verify` with the node's certificate.
//! Non-features: the counting itself (the node), storing and totalling (the CA).

use serde::{Deserialize, Serialize};

use crate::membership::SubchainId;

/// What a usage report's signature covers before the payload.
pub const USAGE_CONTEXT: &[u8] = b"bsn usage report v1\n";

/// The most (subchain, hour) rows in one report: a report of this many rows with the longest
/// ids and figures stays under the CA's 64 KiB request body limit once base64-encoded. A node
/// with more sends several reports.
pub const MAX_ROWS: usize = 150;

/// One subchain's counts in one hour on one node.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct UsageRow {
    /// The subchain.
    pub subchain: String,
    /// The hour: Unix seconds at its start (a multiple of 3600).
    pub hour: i64,
    /// Transactions committed through this node.
    pub transactions: u64,
    /// Bytes of those transactions.
    pub bytes_written: u64,
    /// Bytes the subchain takes on this node's disk (the most seen in the hour).
    pub bytes_stored: u64,
    /// Bytes of responses served for it.
    pub bytes_served: u64,
    /// Submissions refused by its plan's quotas.
    pub refused: u64,
}

/// A node's report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct UsageReport {
    /// Always 1.
    pub version: u8,
    /// The CA's trust domain.
    pub trust_domain: String,
    /// The reporting node's identity id.
    pub node: String,
    /// Grows by at least one with each report of this node.
    pub seq: u64,
    /// When it was made, Unix seconds.
    pub at: i64,
    /// The counts, sorted by (subchain, hour), each pair once.
    pub rows: Vec<UsageRow>,
}

impl UsageReport {
    /// The rules: version 1, a valid node id, 1 to [`MAX_ROWS`] rows sorted by (subchain, hour)
    /// without repeats, valid subchain ids, whole hours not after `at`.
    pub fn check(&self) -> Result<(), String> {
        if self.version != 1 {
            return Err("unknown usage report version".into());
        }
        crate::names::IdentityId::parse(&self.node).map_err(|e| e.to_string())?;
        if self.rows.is_empty() || self.rows.len() > MAX_ROWS {
            return Err(format!("a report holds 1 to {MAX_ROWS} rows"));
        }
        if !self
            .rows
            .windows(2)
            .all(|w| (&w[0].subchain, w[0].hour) < (&w[1].subchain, w[1].hour))
        {
            return Err("rows must be sorted by subchain and hour, each pair once".into());
        }
        for r in &self.rows {
            SubchainId::parse(&r.subchain).map_err(|e| e.to_string())?;
            if r.hour < 0 || r.hour % 3600 != 0 || r.hour > self.at {
                return Err(format!(
                    "{}: {} is not a whole hour up to the report's time",
                    r.subchain, r.hour
                ));
            }
        }
        Ok(())
    }

    /// The bytes a signature covers.
    pub fn signed_message(payload: &[u8]) -> Vec<u8> {
        crate::membership::signed_message(USAGE_CONTEXT, payload)
    }
}

/// A report as it travels: its JSON payload and the node key's signature, both base64.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct SignedUsage {
    /// The report's JSON, base64.
    pub payload: String,
    /// The signature over [`USAGE_CONTEXT`] and the payload bytes, base64.
    pub signature: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn report() -> UsageReport {
        UsageReport {
            version: 1,
            trust_domain: "t.example".into(),
            node: "n1".into(),
            seq: 7,
            at: 7_200 + 60,
            rows: vec![
                UsageRow {
                    subchain: "a".into(),
                    hour: 3_600,
                    transactions: 5,
                    ..Default::default()
                },
                UsageRow {
                    subchain: "a".into(),
                    hour: 7_200,
                    ..Default::default()
                },
                UsageRow {
                    subchain: "b".into(),
                    hour: 3_600,
                    ..Default::default()
                },
            ],
        }
    }

    #[test]
    fn the_largest_report_fits_the_cas_body_limit() {
        use base64::Engine;
        let b64 = base64::engine::general_purpose::STANDARD;
        let rows = (0..MAX_ROWS)
            .map(|i| UsageRow {
                subchain: format!("{i:03}{}", "x".repeat(60)),
                hour: 9_999_993_600,
                transactions: u64::MAX,
                bytes_written: u64::MAX,
                bytes_stored: u64::MAX,
                bytes_served: u64::MAX,
                refused: u64::MAX,
            })
            .collect();
        let r = UsageReport {
            node: "n".repeat(128),
            rows,
            at: 9_999_999_999,
            ..report()
        };
        r.check().unwrap();
        let signed = SignedUsage {
            payload: b64.encode(serde_json::to_vec(&r).unwrap()),
            signature: b64.encode([0u8; 512]), // an RSA-4096 signature
        };
        let body = serde_json::to_vec(&signed).unwrap().len();
        assert!(body < 64 * 1024, "{body} bytes");
    }

    #[test]
    fn a_report_keeps_its_rules() {
        report().check().unwrap();
        let bad = |f: &dyn Fn(&mut UsageReport)| {
            let mut r = report();
            f(&mut r);
            r.check().expect_err("refused")
        };
        assert!(bad(&|r| r.rows.swap(0, 2)).contains("sorted"));
        assert!(bad(&|r| r.rows[1].hour = 3_600).contains("sorted"));
        assert!(bad(&|r| r.rows[0].hour = 3_601).contains("whole hour"));
        assert!(bad(&|r| r.rows[1].hour = 10_800).contains("whole hour"));
        assert!(bad(&|r| r.rows.clear()).contains("1 to"));
        bad(&|r| r.rows[2].subchain = "B!".into());
        bad(&|r| r.node = "".into());
        bad(&|r| r.version = 2);
    }
}
