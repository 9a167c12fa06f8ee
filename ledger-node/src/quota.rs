//! Quotas of shared city nodes (issue 14, DESIGN.md section 12): a subchain's transaction rate
//! is held to its resource plan (the `plan` of the membership statement in force) by a token
//! bucket on the node that receives the work, before any signature is checked.
//!
//! Features: a bucket per subchain holding up to the plan's `burst` transactions and filling at
//! its `rate` per second; a submission of `n` transactions takes `n` tokens or is refused
//! whole, with the seconds until it would pass (the `Retry-After`); a batch larger than the
//! burst is refused as never passing; a plan change in a new statement resizes the bucket (a larger
//! burst is there at once, a smaller one caps the tokens); refusals are counted per subchain. The cost of a check is
//! one lookup in a map of the hosted subchains with a plan and a little arithmetic under one
//! short lock: it does not grow with the number of subchains.
//!
//! Non-features here: storage and bandwidth allowances, usage metering, and a rate shared
//! between the nodes hosting a subchain (each node holds the rate it is given to itself).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Instant;

use identity::plan::Plan;

/// Why a submission was refused by its subchain's rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RateRefusal {
    /// Not enough tokens now: retry after this many seconds (at least 1).
    Wait {
        /// Seconds until the submission would pass.
        secs: u64,
        /// The plan's rate (tx/s).
        rate: u64,
    },
    /// More transactions at once than the plan's burst: it can never pass whole.
    TooBig {
        /// The plan's burst.
        burst: u64,
    },
}

/// One subchain's token bucket.
#[derive(Debug, Clone)]
pub struct Bucket {
    rate: u64,
    burst: u64,
    tokens: f64,
    at: Instant,
    refused: u64,
}

impl Bucket {
    /// A full bucket for `rate` per second holding up to `burst`.
    pub fn new(rate: u64, burst: u64, now: Instant) -> Self {
        Self {
            rate: rate.max(1),
            burst: burst.max(1),
            tokens: burst.max(1) as f64,
            at: now,
            refused: 0,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.tokens = (self.tokens + elapsed * self.rate as f64).min(self.burst as f64);
        self.at = self.at.max(now);
    }

    /// Resizes the bucket for a new plan: a larger burst adds its difference at once (an
    /// upgrade takes effect now), a smaller one caps the tokens.
    pub fn resize(&mut self, rate: u64, burst: u64, now: Instant) {
        self.refill(now);
        let (rate, burst) = (rate.max(1), burst.max(1));
        let extra = burst.saturating_sub(self.burst) as f64;
        self.rate = rate;
        self.burst = burst;
        self.tokens = (self.tokens + extra).min(burst as f64);
    }

    /// Takes `n` tokens, or refuses the whole submission and takes none.
    pub fn take(&mut self, n: u64, now: Instant) -> Result<(), RateRefusal> {
        if n > self.burst {
            self.refused += 1;
            return Err(RateRefusal::TooBig { burst: self.burst });
        }
        self.refill(now);
        if self.tokens + 1e-9 >= n as f64 {
            self.tokens -= n as f64;
            return Ok(());
        }
        self.refused += 1;
        let missing = n as f64 - self.tokens;
        Err(RateRefusal::Wait {
            secs: ((missing / self.rate as f64).ceil() as u64).max(1),
            rate: self.rate,
        })
    }

    /// Submissions refused so far.
    pub fn refused(&self) -> u64 {
        self.refused
    }
}

/// The buckets of the hosted subchains that have a plan.
#[derive(Debug, Default)]
pub struct Quotas {
    buckets: Mutex<HashMap<String, Bucket>>,
}

impl Quotas {
    /// Takes `n` transactions from `subchain`'s rate under `plan` (none: no quota).
    pub fn take(&self, subchain: &str, plan: Option<&Plan>, n: u64) -> Result<(), RateRefusal> {
        let Some(plan) = plan else { return Ok(()) };
        let now = Instant::now();
        let mut buckets = self.buckets.lock().unwrap_or_else(|e| e.into_inner());
        let bucket = match buckets.get_mut(subchain) {
            Some(b) => {
                if (b.rate, b.burst) != (plan.rate, plan.burst) {
                    b.resize(plan.rate, plan.burst, now);
                }
                b
            }
            None => buckets
                .entry(subchain.to_string())
                .or_insert_with(|| Bucket::new(plan.rate, plan.burst, now)),
        };
        bucket.take(n, now)
    }

    /// Submissions refused by `subchain`'s rate since this node started.
    pub fn refused(&self, subchain: &str) -> u64 {
        self.buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(subchain)
            .map_or(0, Bucket::refused)
    }

    /// Forgets the subchains not in `hosted` (closed here).
    pub fn retain(&self, hosted: &std::collections::HashSet<&str>) {
        self.buckets
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .retain(|id, _| hosted.contains(id.as_str()));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn a_bucket_lets_the_burst_through_then_the_rate() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10, 20, t0);
        for _ in 0..20 {
            b.take(1, t0).unwrap();
        }
        assert_eq!(b.take(1, t0), Err(RateRefusal::Wait { secs: 1, rate: 10 }));
        // A tenth of a second later one more passes, not two.
        let t1 = t0 + Duration::from_millis(100);
        b.take(1, t1).unwrap();
        assert!(b.take(1, t1).is_err());
        // Ten seconds idle fill it to the burst, not beyond.
        let t2 = t1 + Duration::from_secs(10);
        b.take(20, t2).unwrap();
        assert!(b.take(1, t2).is_err());
        assert_eq!(b.refused(), 3);
    }

    #[test]
    fn a_refused_submission_takes_nothing_and_says_when_to_come_back() {
        let t0 = Instant::now();
        let mut b = Bucket::new(10, 20, t0);
        b.take(15, t0).unwrap();
        // 5 left: 20 more need 15 tokens, 1.5 s at 10/s: come back in 2 s.
        assert_eq!(b.take(20, t0), Err(RateRefusal::Wait { secs: 2, rate: 10 }));
        b.take(5, t0).unwrap();
        assert_eq!(b.take(21, t0), Err(RateRefusal::TooBig { burst: 20 }));
    }

    #[test]
    fn a_new_plan_resizes_the_bucket() {
        let t0 = Instant::now();
        let mut b = Bucket::new(100, 200, t0);
        b.resize(10, 20, t0);
        b.take(20, t0).unwrap();
        assert!(b.take(1, t0).is_err(), "the smaller burst holds at once");
        // A larger plan takes effect at once: its extra burst is there now.
        b.resize(1000, 2000, t0);
        b.take(1980, t0).unwrap();
        assert!(b.take(1, t0).is_err());
        let t1 = t0 + Duration::from_secs(1);
        b.take(1000, t1).unwrap();
    }

    #[test]
    fn subchains_have_their_own_buckets_and_no_plan_no_quota() {
        let q = Quotas::default();
        let free = Plan::defaults().remove(0);
        for _ in 0..free.burst {
            q.take("a", Some(&free), 1).unwrap();
        }
        assert!(q.take("a", Some(&free), 1).is_err());
        q.take("b", Some(&free), free.burst).unwrap();
        for _ in 0..10_000 {
            q.take("c", None, 100).unwrap();
        }
        assert_eq!((q.refused("a"), q.refused("b"), q.refused("c")), (1, 0, 0));
        q.retain(&["b"].into_iter().collect());
        assert_eq!(q.refused("a"), 0, "forgotten once closed here");
    }

    /// What a quota check costs with 1,000 subchains' buckets on the node, against one bucket:
    /// the map lookup does not grow with them.
    #[test]
    fn a_check_costs_the_same_with_a_thousand_subchains() {
        let plan = Plan {
            rate: 1_000_000,
            burst: 60_000_000,
            ..Plan::defaults().remove(0)
        };
        let time = |subchains: usize| {
            let q = Quotas::default();
            let ids: Vec<String> = (0..subchains).map(|i| format!("s{i:05}")).collect();
            for id in &ids {
                q.take(id, Some(&plan), 1).unwrap();
            }
            let t = Instant::now();
            for i in 0..200_000 {
                q.take(&ids[i % subchains], Some(&plan), 1).unwrap();
            }
            t.elapsed().as_nanos() as f64 / 200_000.0
        };
        let (one, many) = (time(1), time(1_000));
        assert!(
            many < one * 4.0 + 200.0,
            "{one:.0} ns with one subchain, {many:.0} ns with 1,000"
        );
        assert!(many < 5_000.0, "a check costs {many:.0} ns");
    }
}
