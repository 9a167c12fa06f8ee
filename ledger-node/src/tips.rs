//! The heights this node's subchains reached, as a feed other nodes follow with one long poll
//! per peer (`GET /raft/v1/tips`) instead of one per subchain.
//!
//! A city node lets an idle subchain hibernate (store closed, no task running; see
//! [`crate::subchain`]), so it no longer long-polls that subchain's orderers for blocks. It
//! follows instead each orderer's tips: every time a subchain's applied height changes on the
//! orderer it gets a sequence number; an answer lists the changes after the caller's last
//! sequence number, each subchain once at its latest height, only for subchains the caller
//! hosts. A caller too far behind (more than [`RECENT`] changes), or one that saw another epoch
//! (the orderer restarted and counts from 0 again), gets every height the node knows. A height
//! above what the city node holds wakes that subchain, which then pulls and verifies the blocks
//! as before: the feed only says where to look, never what a block is.
//!
//! Non-features: heights of subchains the node has not opened since it started are not known
//! (an orderer that has not opened a subchain since it started made no block for it; another
//! orderer of the group that did reports it).

use std::collections::{HashMap, VecDeque};
use std::sync::Mutex;

use bsn_api::node::{SubchainTip, Tips};
use tokio::sync::watch;

/// Changes remembered for callers that are behind.
pub const RECENT: usize = 16_384;

struct Inner {
    seq: u64,
    recent: VecDeque<(u64, String)>,
    heights: HashMap<String, u64>,
}

/// The feed of this node's subchain heights.
pub struct TipFeed {
    epoch: u64,
    inner: Mutex<Inner>,
    changed: watch::Sender<u64>,
}

impl Default for TipFeed {
    fn default() -> Self {
        Self::new()
    }
}

impl TipFeed {
    /// An empty feed with a fresh epoch.
    pub fn new() -> Self {
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as u64);
        Self {
            epoch: now ^ (u64::from(std::process::id()) << 40),
            inner: Mutex::new(Inner {
                seq: 0,
                recent: VecDeque::new(),
                heights: HashMap::new(),
            }),
            changed: watch::channel(0).0,
        }
    }

    /// This run's epoch.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Records that `subchain` reached `height` here (nothing if it was known).
    pub fn note(&self, subchain: &str, height: u64) {
        let seq = {
            let mut g = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
            if g.heights.get(subchain) == Some(&height) {
                return;
            }
            g.seq += 1;
            let seq = g.seq;
            g.heights.insert(subchain.to_string(), height);
            g.recent.push_back((seq, subchain.to_string()));
            if g.recent.len() > RECENT {
                g.recent.pop_front();
            }
            seq
        };
        self.changed.send_replace(seq);
    }

    /// Wakes when something is noted.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// The changes after `after` in `epoch` (or every height, see the module docs), only for
    /// subchains `wanted` says yes to.
    pub fn since(&self, epoch: Option<u64>, after: Option<u64>, wanted: impl Fn(&str) -> bool) -> Tips {
        let g = self.inner.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let tip = |id: &str| SubchainTip {
            subchain: id.to_string(),
            height: g.heights[id],
        };
        let oldest = g.recent.front().map_or(g.seq + 1, |(s, _)| *s);
        let from = match (epoch, after) {
            (Some(e), Some(a)) if e == self.epoch && a <= g.seq && a + 1 >= oldest => Some(a),
            _ => None,
        };
        let tips = match from {
            Some(a) => {
                let mut seen = std::collections::HashSet::new();
                g.recent
                    .iter()
                    .rev()
                    .take_while(|(s, _)| *s > a)
                    .filter(|(_, id)| wanted(id) && seen.insert(id.as_str()))
                    .map(|(_, id)| tip(id))
                    .collect()
            }
            None => {
                let mut v: Vec<SubchainTip> = g.heights.keys().filter(|id| wanted(id)).map(|id| tip(id)).collect();
                v.sort_by(|a, b| a.subchain.cmp(&b.subchain));
                v
            }
        };
        Tips {
            epoch: self.epoch,
            seq: g.seq,
            reset: from.is_none(),
            tips,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(t: &Tips) -> Vec<(String, u64)> {
        let mut v: Vec<_> = t.tips.iter().map(|t| (t.subchain.clone(), t.height)).collect();
        v.sort();
        v
    }

    #[test]
    fn a_caller_gets_each_change_once_at_its_latest_height_and_only_what_it_hosts() {
        let f = TipFeed::new();
        let first = f.since(None, None, |_| true);
        assert!(first.reset && first.tips.is_empty());
        f.note("a", 1);
        f.note("b", 1);
        f.note("a", 2);
        f.note("a", 2);
        let t = f.since(Some(first.epoch), Some(first.seq), |id| id != "b");
        assert!(!t.reset);
        assert_eq!(ids(&t), vec![("a".into(), 2)]);
        assert_eq!(t.seq, 3, "a height noted twice counts once");
        let none = f.since(Some(t.epoch), Some(t.seq), |_| true);
        assert!(!none.reset && none.tips.is_empty());
    }

    #[test]
    fn another_epoch_or_a_caller_too_far_behind_gets_every_height() {
        let f = TipFeed::new();
        for i in 0..(RECENT as u64 + 10) {
            f.note(&format!("s{}", i % 3), i);
        }
        let t = f.since(Some(f.epoch()), Some(1), |_| true);
        assert!(t.reset, "the changes after 1 are forgotten");
        assert_eq!(t.tips.len(), 3);
        let t = f.since(Some(f.epoch() ^ 1), Some(t.seq), |_| true);
        assert!(t.reset, "another epoch: the node restarted");
        let t = f.since(Some(f.epoch()), Some(t.seq + 5), |_| true);
        assert!(t.reset, "a sequence number from the future is from another run");
    }
}
