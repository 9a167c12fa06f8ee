//! Prometheus counters, rendered as text at `/metrics`.

use std::sync::atomic::{AtomicU64, Ordering};

/// A monotonically increasing counter.
pub struct Counter {
    name: &'static str,
    help: &'static str,
    value: AtomicU64,
}

impl Counter {
    const fn new(name: &'static str, help: &'static str) -> Self {
        Self {
            name,
            help,
            value: AtomicU64::new(0),
        }
    }

    /// Adds one.
    pub fn inc(&self) {
        self.add(1);
    }

    /// Adds `n`.
    pub fn add(&self, n: u64) {
        self.value.fetch_add(n, Ordering::Relaxed);
    }
}

/// Full handshakes completed.
pub static HANDSHAKES: Counter = Counter::new("bsn_node_handshakes_total", "mTLS handshakes completed");
/// Handshakes refused (bad, revoked, foreign or missing client certificate).
pub static HANDSHAKES_REFUSED: Counter = Counter::new("bsn_node_handshakes_refused_total", "mTLS handshakes refused");
/// Open connections closed because their certificate was revoked.
pub static CONNECTIONS_CUT: Counter =
    Counter::new("bsn_node_connections_cut_total", "connections closed on revocation");
/// Transactions committed.
pub static TX_COMMITTED: Counter = Counter::new("bsn_node_transactions_committed_total", "transactions committed");
/// Transactions refused before ordering.
pub static TX_REFUSED: Counter = Counter::new("bsn_node_transactions_refused_total", "transactions refused");
/// Snapshots installed (a node far behind catching up by fetching blocks).
pub static SNAPSHOTS_INSTALLED: Counter = Counter::new(
    "bsn_node_snapshots_installed_total",
    "snapshots installed by fetching blocks",
);
/// Blocks written.
pub static BLOCKS: Counter = Counter::new("bsn_node_blocks_total", "blocks written");

/// The text exposition of every counter.
pub fn render() -> String {
    let mut out = String::new();
    for c in [
        &HANDSHAKES,
        &HANDSHAKES_REFUSED,
        &CONNECTIONS_CUT,
        &TX_COMMITTED,
        &TX_REFUSED,
        &BLOCKS,
        &SNAPSHOTS_INSTALLED,
    ] {
        out.push_str(&format!(
            "# HELP {n} {h}\n# TYPE {n} counter\n{n} {v}\n",
            n = c.name,
            h = c.help,
            v = c.value.load(Ordering::Relaxed)
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_counter_is_rendered() {
        let text = super::render();
        for name in [
            "bsn_node_handshakes_total",
            "bsn_node_handshakes_refused_total",
            "bsn_node_connections_cut_total",
            "bsn_node_transactions_committed_total",
            "bsn_node_transactions_refused_total",
            "bsn_node_blocks_total",
            "bsn_node_snapshots_installed_total",
        ] {
            assert!(text.contains(&format!("\n{name} ")), "{name} missing from /metrics");
        }
    }
}
