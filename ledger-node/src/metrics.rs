//! Prometheus counters, rendered as text at `/metrics`.

use bsn_transport::metrics::{Metric, render as exposition};

/// Transactions written to this node's chain since it started (by ordering, or fetched when
/// catching up): on every node of a group, not only the leader.
pub static TX_COMMITTED: Metric = Metric::counter("transactions_committed_total", "transactions committed");
/// Transactions refused before ordering.
pub static TX_REFUSED: Metric = Metric::counter("transactions_refused_total", "transactions refused");
/// Snapshots installed (a node far behind catching up by fetching blocks).
pub static SNAPSHOTS_INSTALLED: Metric =
    Metric::counter("snapshots_installed_total", "snapshots installed by fetching blocks");
/// Blocks written to this node's chain since it started, config blocks and genesis included (so
/// a node that started empty has written height + 1 blocks).
pub static BLOCKS: Metric = Metric::counter("blocks_total", "blocks written");
/// Subchains opened (at their first use since the node started, or woken from hibernation).
pub static SUBCHAINS_WOKEN: Metric = Metric::counter("subchains_woken_total", "subchains opened or woken");
/// Subchains closed for being idle (hibernating: no file, task or timer until used again).
pub static SUBCHAINS_HIBERNATED: Metric =
    Metric::counter("subchains_hibernated_total", "subchains closed for being idle");

/// The text exposition of every counter, with the connection layer's.
pub fn render(connections: &bsn_transport::Stats) -> String {
    connections.render("bsn_node_")
        + &exposition(
            "bsn_node_",
            &[
                &TX_COMMITTED,
                &TX_REFUSED,
                &BLOCKS,
                &SNAPSHOTS_INSTALLED,
                &SUBCHAINS_WOKEN,
                &SUBCHAINS_HIBERNATED,
            ],
        )
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
            "bsn_node_subchains_woken_total",
            "bsn_node_subchains_hibernated_total",
        ] {
            assert!(text.contains(&format!("\n{name} ")), "{name} missing from /metrics");
            assert_eq!(text.matches(&format!("\n{name} ")).count(), 1, "{name} twice");
        }
    }
}
