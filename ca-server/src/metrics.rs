//! Prometheus metrics at `/metrics` (text exposition format). Counters are plain atomics; the
//! handful kept here are the ones an operator needs to see issuance health and batching.

use std::sync::atomic::{AtomicU64, Ordering};

/// The service's counters.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Issuance batches committed.
    pub batches: AtomicU64,
    /// Certificates committed by the batch writer.
    pub certificates: AtomicU64,
    /// Jobs refused inside a batch (precondition failed).
    pub refused: AtomicU64,
    /// Batches that failed (database error).
    pub batch_failures: AtomicU64,
    /// Microseconds spent in batch transactions (begin to commit).
    pub batch_micros: AtomicU64,
    /// Revocations committed.
    pub revocations: AtomicU64,
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// The text exposition.
    pub fn render(&self) -> String {
        let g = |c: &AtomicU64| c.load(Ordering::Relaxed);
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: String| {
            out.push_str(&format!("# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}\n"));
        };
        counter(
            "bsn_ca_issuance_batches_total",
            "Issuance batches committed.",
            g(&self.batches).to_string(),
        );
        counter(
            "bsn_ca_certificates_issued_total",
            "Certificates committed.",
            g(&self.certificates).to_string(),
        );
        counter(
            "bsn_ca_issuance_refused_total",
            "Issuance jobs refused in the batch transaction.",
            g(&self.refused).to_string(),
        );
        counter(
            "bsn_ca_issuance_batch_failures_total",
            "Issuance batches that failed.",
            g(&self.batch_failures).to_string(),
        );
        counter(
            "bsn_ca_issuance_batch_seconds_total",
            "Time spent in issuance batch transactions.",
            format!("{:.6}", g(&self.batch_micros) as f64 / 1e6),
        );
        counter(
            "bsn_ca_revocations_total",
            "Revocations committed.",
            g(&self.revocations).to_string(),
        );
        out
    }
}
