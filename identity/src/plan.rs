//! Resource plans of shared city nodes (DESIGN.md section 12): what a subchain may take from the
//! node that hosts it, and what a node declares it can give.
//!
//! A [`Plan`] is `shared` (the subchain shares a node with others) or `dedicated` (a node of its
//! own), with a transaction rate and burst, a storage allowance (bytes of blocks and state) and a
//! bandwidth allowance (bytes per second served). A node declares its [`Capacity`]. Both are
//! parsed once ([`Plan::check`], [`Capacity::check`]): a value that passed is within the bounds
//! below. Non-features here: placement (the CA's `ca-server::placement`), enforcement and
//! metering (the node).

use serde::{Deserialize, Serialize};

/// The most a plan or a node may declare: 1,000,000 tx/s, 1 PiB, 100 GB/s. Larger figures are
/// typing mistakes, not machines.
pub const MAX_RATE: u64 = 1_000_000;
/// See [`MAX_RATE`].
pub const MAX_STORAGE: u64 = 1 << 50;
/// See [`MAX_RATE`].
pub const MAX_BANDWIDTH: u64 = 100_000_000_000;

/// Whether a subchain shares its node, or a node is offered for sharing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(rename_all = "lowercase")]
pub enum Tenancy {
    /// Many subchains on one node.
    Shared,
    /// One subchain on one node.
    Dedicated,
}

impl Tenancy {
    /// `shared` or `dedicated`.
    pub fn as_str(self) -> &'static str {
        match self {
            Tenancy::Shared => "shared",
            Tenancy::Dedicated => "dedicated",
        }
    }
}

/// A resource plan on offer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Its name (`free`, `standard`, ...): lowercase letters, digits and `-`, 1 to 32.
    pub name: String,
    /// Shared or dedicated.
    pub tenancy: Tenancy,
    /// Sustained transactions per second.
    pub rate: u64,
    /// Transactions that may arrive at once above the rate (the token bucket's size).
    pub burst: u64,
    /// Bytes of blocks and state.
    pub storage: u64,
    /// Bytes per second served.
    pub bandwidth: u64,
}

/// What a city node declares it can give to the subchains it hosts.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "schema", derive(schemars::JsonSchema))]
#[serde(deny_unknown_fields)]
pub struct Capacity {
    /// Shared (many subchains) or dedicated (one).
    pub tenancy: Tenancy,
    /// Transactions per second it sustains.
    pub rate: u64,
    /// Bytes of blocks and state it can store.
    pub storage: u64,
}

fn in_range(what: &str, v: u64, max: u64) -> Result<(), String> {
    if v == 0 || v > max {
        return Err(format!("{what} must be from 1 to {max}, not {v}"));
    }
    Ok(())
}

impl Plan {
    /// The rules: a valid name, every figure from 1 to its maximum, a burst at least the rate
    /// and at most 60 seconds of it.
    pub fn check(&self) -> Result<(), String> {
        let ok_name = (1..=32).contains(&self.name.len())
            && self
                .name
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !self.name.starts_with('-');
        if !ok_name {
            return Err(format!(
                "'{}' is not a plan name (lowercase letters, digits and '-', 1 to 32)",
                self.name
            ));
        }
        in_range("the rate (tx/s)", self.rate, MAX_RATE)?;
        in_range("the storage allowance (bytes)", self.storage, MAX_STORAGE)?;
        in_range("the bandwidth allowance (bytes/s)", self.bandwidth, MAX_BANDWIDTH)?;
        if self.burst < self.rate || self.burst > self.rate.saturating_mul(60) {
            return Err(format!(
                "the burst must be from the rate ({}) to 60 s of it ({}), not {}",
                self.rate,
                self.rate.saturating_mul(60),
                self.burst
            ));
        }
        Ok(())
    }

    /// The plans a new CA offers: a free shared tier, two larger shared tiers, and dedicated.
    pub fn defaults() -> Vec<Plan> {
        const GIB: u64 = 1 << 30;
        const MB: u64 = 1_000_000;
        let plan = |name: &str, tenancy, rate, storage, bandwidth| Plan {
            name: name.to_string(),
            tenancy,
            rate,
            burst: rate * 2,
            storage,
            bandwidth,
        };
        vec![
            plan("free", Tenancy::Shared, 10, GIB, MB),
            plan("standard", Tenancy::Shared, 100, 10 * GIB, 10 * MB),
            plan("business", Tenancy::Shared, 500, 100 * GIB, 50 * MB),
            plan("dedicated", Tenancy::Dedicated, 2_000, 1024 * GIB, 200 * MB),
        ]
    }
}

impl Capacity {
    /// The rules: every figure from 1 to its maximum.
    pub fn check(&self) -> Result<(), String> {
        in_range("the rate (tx/s)", self.rate, MAX_RATE)?;
        in_range("the storage (bytes)", self.storage, MAX_STORAGE)
    }
}

/// A byte count as people write it: `1073741824`, `512MB`, `10GiB`, `1.5 TiB` (decimal units
/// kB/MB/GB/TB/PB, binary KiB/MiB/GiB/TiB/PiB, case-insensitive, `B` optional).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (number, unit) = (t[..split].trim(), t[split..].trim().to_ascii_lowercase());
    let scale: u64 = match unit.trim_end_matches('b') {
        "" => 1,
        "k" => 1_000,
        "m" => 1_000_000,
        "g" => 1_000_000_000,
        "t" => 1_000_000_000_000,
        "p" => 1_000_000_000_000_000,
        "ki" => 1 << 10,
        "mi" => 1 << 20,
        "gi" => 1 << 30,
        "ti" => 1 << 40,
        "pi" => 1 << 50,
        _ => return Err(format!("'{s}' is not a size (such as 500MB, 10GiB or 2TiB)")),
    };
    let bad = || format!("'{s}' is not a size (such as 500MB, 10GiB or 2TiB)");
    if number.is_empty() || (unit.len() > 1 && unit.ends_with("bb")) {
        return Err(bad());
    }
    let v = if let Ok(n) = number.parse::<u64>() {
        n.checked_mul(scale).ok_or_else(bad)?
    } else {
        let f: f64 = number.parse().map_err(|_| bad())?;
        let v = f * scale as f64;
        if !v.is_finite() || v < 0.0 || v > u64::MAX as f64 {
            return Err(bad());
        }
        v.round() as u64
    };
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_read_as_people_write_them() {
        assert_eq!(parse_size("1073741824"), Ok(1 << 30));
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("1.5 TiB"), Ok(3 << 39));
        assert_eq!(parse_size("500MB"), Ok(500_000_000));
        assert_eq!(parse_size("2g"), Ok(2_000_000_000));
        assert_eq!(parse_size("7 B"), Ok(7));
        for bad in ["", "GiB", "ten", "5 XB", "-3", "1e3", "20000000PiB", "5 bb"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn the_default_plans_pass_their_own_rules() {
        for p in Plan::defaults() {
            p.check().unwrap_or_else(|e| panic!("{}: {e}", p.name));
        }
    }

    #[test]
    fn absurd_figures_and_names_are_refused() {
        let good = Plan::defaults().remove(0);
        let bad = |f: &dyn Fn(&mut Plan)| {
            let mut p = good.clone();
            f(&mut p);
            p.check().expect_err("refused")
        };
        assert!(bad(&|p| p.rate = 0).contains("rate"));
        assert!(bad(&|p| p.rate = MAX_RATE + 1).contains("rate"));
        assert!(bad(&|p| p.burst = p.rate - 1).contains("burst"));
        assert!(bad(&|p| p.burst = p.rate * 61).contains("burst"));
        assert!(bad(&|p| p.storage = 0).contains("storage"));
        assert!(bad(&|p| p.bandwidth = MAX_BANDWIDTH + 1).contains("bandwidth"));
        for name in ["", "Free", "a b", "-x", &"x".repeat(33)] {
            assert!(bad(&|p| p.name = name.to_string()).contains("plan name"), "{name}");
        }
        let c = Capacity {
            tenancy: Tenancy::Shared,
            rate: 0,
            storage: 1,
        };
        assert!(c.check().is_err());
    }
}
