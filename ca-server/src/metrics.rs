//! Prometheus metrics at `/metrics` (text exposition format, through `bsn_transport::metrics`):
//! the handful an operator needs to see issuance health and batching.

use bsn_transport::metrics::{Metric, render};

/// The service's counters.
#[derive(Debug)]
pub struct Metrics {
    /// Issuance batches committed.
    pub batches: Metric,
    /// Certificates committed by the batch writer.
    pub certificates: Metric,
    /// Jobs refused inside a batch (precondition failed).
    pub refused: Metric,
    /// Batches that failed (database error).
    pub batch_failures: Metric,
    /// Time spent in batch transactions (begin to commit), added in microseconds.
    pub batch_time: Metric,
    /// Revocations committed.
    pub revocations: Metric,
}

impl Default for Metrics {
    fn default() -> Self {
        Self {
            batches: Metric::counter("issuance_batches_total", "Issuance batches committed."),
            certificates: Metric::counter("certificates_issued_total", "Certificates committed."),
            refused: Metric::counter(
                "issuance_refused_total",
                "Issuance jobs refused in the batch transaction.",
            ),
            batch_failures: Metric::counter("issuance_batch_failures_total", "Issuance batches that failed."),
            batch_time: Metric::seconds(
                "issuance_batch_seconds_total",
                "Time spent in issuance batch transactions.",
            ),
            revocations: Metric::counter("revocations_total", "Revocations committed."),
        }
    }
}

impl Metrics {
    /// The text exposition.
    pub fn render(&self) -> String {
        render(
            "bsn_ca_",
            &[
                &self.batches,
                &self.certificates,
                &self.refused,
                &self.batch_failures,
                &self.batch_time,
                &self.revocations,
            ],
        )
    }
}
