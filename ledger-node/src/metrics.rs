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

/// The text exposition of every counter, with the connection layer's.
pub fn render(connections: &bsn_transport::Stats) -> String {
    let mut out = connections.render("bsn_node_");
    for c in [&TX_COMMITTED, &TX_REFUSED, &BLOCKS, &SNAPSHOTS_INSTALLED] {
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
        let text = super::render(&Default::default());
        for name in [
            "bsn_node_handshakes_total",
            "bsn_node_handshakes_failed_total",
            "bsn_node_connections_timed_out_total",
            "bsn_node_connections_refused_total",
            "bsn_node_connections_cut_total",
            "bsn_node_transactions_committed_total",
            "bsn_node_transactions_refused_total",
            "bsn_node_blocks_total",
            "bsn_node_snapshots_installed_total",
        ] {
            assert!(text.contains(&format!("\n{name} ")), "{name} missing from /metrics");
            assert_eq!(text.matches(&format!("\n{name} ")).count(), 1, "{name} twice");
        }
    }
}
